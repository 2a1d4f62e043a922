//! MQTT 5 end to end: the real broker, raw MQTT 5 clients over real sockets (the
//! broker's own codec, so each byte and reason code is checked), and Debian's
//! `mosquitto_pub`/`mosquitto_sub -V 5`, a client nobody here wrote. Every MQTT 5
//! behaviour the broker serves is tried here, including what a hostile or broken
//! client sends (aliases out of range, malformed properties, an unknown AUTH).

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tandem_broker::protocol::{
    ConnectReason, Disconnect, LastWill, Packet, Properties, PubAck, PubRel, Publish, QoS,
    Subscribe, SubscribeFilter, SubscribeReason, SubscriptionOptions, Unsubscribe,
};
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, connect_packet_v5, eventually, probe};

fn props(f: impl FnOnce(&mut Properties)) -> Properties {
    let mut p = Properties::default();
    f(&mut p);
    p
}

/// Connects an MQTT 5 client and asserts it was let in; returns it and its CONNACK
/// properties.
async fn connect5(
    broker: &Tandem,
    id: &str,
    clean: bool,
    p: Properties,
) -> (RawClient, Properties, bool) {
    let (c, ack) = RawClient::connect_with(broker.addr, connect_packet_v5(id, clean, p)).await;
    assert_eq!(ack.reason, ConnectReason::Success, "{id} let in");
    (
        c,
        ack.properties.map(|p| *p).unwrap_or_default(),
        ack.session_present,
    )
}

fn publish(topic: &str, payload: &str, qos: QoS, pkid: u16, p: Option<Properties>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: p.map(Box::new),
    })
}

fn subscribe(pkid: u16, filter: &str, options: SubscriptionOptions) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options,
        }],
        properties: None,
    })
}

fn qos(q: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: q,
        ..Default::default()
    }
}

async fn suback(c: &mut RawClient) -> Vec<SubscribeReason> {
    match c.recv().await {
        Packet::SubAck(a) => a.reasons,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// The DISCONNECT the broker sends before closing, and the close itself.
async fn expect_disconnect(c: &mut RawClient) -> Disconnect {
    let d = match c.recv().await {
        Packet::Disconnect(d) => d,
        other => panic!("expected DISCONNECT, got {other:?}"),
    };
    c.expect_closed().await;
    d
}

#[tokio::test]
async fn connack_announces_the_limits_and_assigns_an_id() {
    let broker = Tandem::start("");
    let (c, ack) = RawClient::connect_with(
        broker.addr,
        connect_packet_v5("", false, Properties::default()),
    )
    .await;
    assert_eq!(
        ack.reason,
        ConnectReason::Success,
        "MQTT 5 lets the server assign an id even without clean start"
    );
    let p = ack.properties.expect("CONNACK properties");
    let id = p
        .assigned_client_identifier
        .clone()
        .expect("assigned client id");
    assert!(id.starts_with("tandem-"), "{id}");
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.maximum_packet_size, Some(1024 * 1024));
    assert_eq!(
        p.subscription_identifier_available, None,
        "available (the default)"
    );
    assert_eq!(
        p.shared_subscription_available, None,
        "available (the default)"
    );
    assert_eq!(p.server_keep_alive, None, "no keepalive imposed by default");
    c.disconnect().await;
    // A session expiry longer than mqtt.session_expiry (2 h) is held to it, and said so.
    let (c, p, _) = connect5(
        &broker,
        "long",
        true,
        props(|p| p.session_expiry_interval = Some(u32::MAX)),
    )
    .await;
    assert_eq!(p.session_expiry_interval, Some(7200));
    assert_eq!(p.assigned_client_identifier, None);
    c.disconnect().await;
}

#[tokio::test]
async fn publish_subscribe_pass_properties_through_and_say_why_on_refusal() {
    let broker = Tandem::start("");
    let (mut sub, _, _) = connect5(&broker, "sub5", true, Properties::default()).await;
    sub.send(&subscribe(1, "p/#", qos(QoS::AtLeastOnce))).await;
    assert_eq!(
        suback(&mut sub).await,
        vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
    );
    // A 3.1.1 subscriber gets the same messages, without properties.
    let mut old = RawClient::connect(broker.addr, "sub4").await;
    old.subscribe("p/#", QoS::AtLeastOnce).await;

    let (mut publisher, _, _) = connect5(&broker, "pub5", true, Properties::default()).await;
    let sent = props(|p| {
        p.payload_format_indicator = Some(1);
        p.content_type = Some("text/plain".into());
        p.response_topic = Some("reply/to".into());
        p.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
        p.user_properties = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
    });
    publisher
        .send(&publish(
            "p/1",
            "hi",
            QoS::AtLeastOnce,
            1,
            Some(sent.clone()),
        ))
        .await;
    match publisher.recv().await {
        Packet::PubAck(a) => assert_eq!((a.pkid, a.reason), (1, 0x00)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let got = sub.recv_publish().await;
    assert_eq!((&got.topic[..], &got.payload[..]), ("p/1", &b"hi"[..]));
    assert_eq!(
        got.properties.as_deref(),
        Some(&sent),
        "properties passed through unchanged"
    );
    sub.send(&Packet::PubAck(PubAck::new(got.pkid))).await;
    let got = old.recv_publish().await;
    assert_eq!(&got.payload[..], b"hi");
    assert_eq!(got.properties, None);

    // $SYS belongs to the broker: an MQTT 5 publisher is told so (0x87).
    publisher
        .send(&publish("$SYS/x", "no", QoS::AtLeastOnce, 2, None))
        .await;
    match publisher.recv().await {
        Packet::PubAck(a) => assert_eq!((a.pkid, a.reason), (2, 0x87)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // A filter that is not valid: 0x8F, not 3.1.1's bare 0x80.
    publisher
        .send(&subscribe(3, "a/#/b", qos(QoS::AtMostOnce)))
        .await;
    assert_eq!(
        suback(&mut publisher).await,
        vec![SubscribeReason::Failure(0x8F)]
    );
    // UNSUBACK says which filters were held.
    sub.send(&Packet::Unsubscribe(Unsubscribe {
        pkid: 4,
        filters: vec!["p/#".into(), "never/held".into()],
        properties: None,
    }))
    .await;
    match sub.recv().await {
        Packet::UnsubAck(a) => assert_eq!(a.reasons, vec![0x00, 0x11]),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn topic_aliases_are_resolved_and_bounded() {
    let broker = Tandem::start("mqtt:\n  topic_alias_maximum: 2\n");
    let (mut sub, _, _) = connect5(&broker, "alias-sub", true, Properties::default()).await;
    sub.send(&subscribe(1, "alias/#", qos(QoS::AtMostOnce)))
        .await;
    suback(&mut sub).await;
    let (mut c, p, _) = connect5(&broker, "alias-pub", true, Properties::default()).await;
    assert_eq!(p.topic_alias_maximum, Some(2));
    let alias = |a| Some(props(|p| p.topic_alias = Some(a)));
    c.send(&publish(
        "alias/long/topic",
        "1",
        QoS::AtMostOnce,
        0,
        alias(2),
    ))
    .await;
    c.send(&publish("", "2", QoS::AtMostOnce, 0, alias(2)))
        .await;
    for payload in ["1", "2"] {
        let got = sub.recv_publish().await;
        assert_eq!(
            (&got.topic[..], &got.payload[..]),
            ("alias/long/topic", payload.as_bytes())
        );
        assert_eq!(
            got.properties, None,
            "the publisher's alias is not passed on"
        );
    }
    // An alias used before it was set is a protocol error (0x82)...
    let (mut unset, _, _) = connect5(&broker, "alias-unset", true, Properties::default()).await;
    unset
        .send(&publish("", "x", QoS::AtMostOnce, 0, alias(1)))
        .await;
    assert_eq!(expect_disconnect(&mut unset).await.reason, 0x82);
    // ... and one above the maximum is "topic alias invalid" (0x94), with the reason.
    c.send(&publish("alias/t", "x", QoS::AtMostOnce, 0, alias(3)))
        .await;
    let d = expect_disconnect(&mut c).await;
    assert_eq!(d.reason, 0x94);
    let why = d
        .properties
        .and_then(|p| p.reason_string)
        .expect("reason string");
    assert!(why.contains("topic alias"), "{why}");
    broker
        .wait_log_all(&["alias-pub", "invalid topic alias 3"], DEADLINE)
        .expect("the reason is logged");
    // Nobody else was disturbed.
    sub.ping().await;
}

#[tokio::test]
async fn malformed_properties_close_that_connection_with_0x81() {
    let broker = Tandem::start("");
    let (mut bystander, _, _) = connect5(&broker, "bystander", true, Properties::default()).await;
    let cases: [(&str, &[u8]); 3] = [
        // PUBLISH QoS 0 "t" with content type twice.
        (
            "duplicate",
            &[0x30, 12, 0, 1, b't', 8, 0x03, 0, 1, b'a', 0x03, 0, 1, b'b'],
        ),
        // PUBLISH with property 0x7F.
        ("unknown", &[0x30, 6, 0, 1, b't', 2, 0x7F, 0]),
        // PUBLISH carrying a session expiry interval (a CONNECT property).
        ("wrong packet", &[0x30, 9, 0, 1, b't', 5, 0x11, 0, 0, 0, 1]),
    ];
    for (what, bytes) in cases {
        let (mut c, _, _) = connect5(&broker, what, true, Properties::default()).await;
        c.send_raw(bytes).await;
        let d = expect_disconnect(&mut c).await;
        assert_eq!(d.reason, 0x81, "{what}");
    }
    eventually("each one logged with its reason", || {
        broker.count_log("protocol error") >= 3
    })
    .await;
    broker
        .wait_log("property 0x03 appears more than once", DEADLINE)
        .expect("the duplicate is named in the log");
    bystander.ping().await;
}

#[tokio::test]
async fn sessions_follow_the_session_expiry_interval() {
    let broker = Tandem::start("");
    let expiry = |secs| props(|p| p.session_expiry_interval = Some(secs));
    // Expiry 0 (the default): the session ends with the connection.
    let (mut c, _, present) = connect5(&broker, "exp0", true, Properties::default()).await;
    assert!(!present);
    c.send(&subscribe(1, "exp/0", qos(QoS::AtLeastOnce))).await;
    suback(&mut c).await;
    c.disconnect().await;
    let (c, _, present) = connect5(&broker, "exp0", false, Properties::default()).await;
    assert!(
        !present,
        "nothing kept with session expiry 0, whatever clean start says"
    );
    c.disconnect().await;

    // Expiry 60 s: kept across a reconnect, messages queued meanwhile delivered.
    let (mut c, _, _) = connect5(&broker, "exp60", true, expiry(60)).await;
    c.send(&subscribe(1, "exp/60", qos(QoS::AtLeastOnce))).await;
    suback(&mut c).await;
    c.disconnect().await;
    let (mut p, _, _) = connect5(&broker, "exp-pub", true, Properties::default()).await;
    p.send(&publish("exp/60", "while away", QoS::AtLeastOnce, 1, None))
        .await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));
    let (mut c, _, present) = connect5(&broker, "exp60", false, expiry(60)).await;
    assert!(present, "the session was kept");
    assert_eq!(&c.recv_publish().await.payload[..], b"while away");

    // A DISCONNECT may shorten it to 1 s: the session is then gone once that passed.
    c.send(&Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Some(Box::new(expiry(1))),
    }))
    .await;
    c.expect_closed().await;
    broker
        .wait_log_all(&["exp60", "persistent session expired"], 3 * DEADLINE)
        .expect("expired after its own 1 s, not mqtt.session_expiry's 2 h");
    let (c, _, present) = connect5(&broker, "exp60", false, expiry(60)).await;
    assert!(!present);
    c.disconnect().await;

    // Setting an expiry on DISCONNECT after 0 on CONNECT is a protocol error.
    let (mut c, _, _) = connect5(&broker, "exp-bad", true, Properties::default()).await;
    c.send(&Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Some(Box::new(expiry(10))),
    }))
    .await;
    assert_eq!(expect_disconnect(&mut c).await.reason, 0x82);
}

#[tokio::test]
async fn queued_messages_expire_and_carry_the_time_left() {
    let broker = Tandem::start(probe::ADMIN);
    let keep = props(|p| p.session_expiry_interval = Some(60));
    let (mut c, _, _) = connect5(&broker, "mexp", true, keep.clone()).await;
    c.send(&subscribe(1, "mexp/#", qos(QoS::AtLeastOnce))).await;
    suback(&mut c).await;
    c.disconnect().await;
    let (mut p, _, _) = connect5(&broker, "mexp-pub", true, Properties::default()).await;
    let expiring = |secs| Some(props(|p| p.message_expiry_interval = Some(secs)));
    p.send(&publish(
        "mexp/short",
        "gone",
        QoS::AtLeastOnce,
        1,
        expiring(1),
    ))
    .await;
    p.send(&publish(
        "mexp/long",
        "kept",
        QoS::AtLeastOnce,
        2,
        expiring(600),
    ))
    .await;
    for _ in 0..2 {
        assert!(matches!(p.recv().await, Packet::PubAck(_)));
    }
    // Wait out the short one's second, on the broker's clock (it counts from receipt).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut c, _, present) = connect5(&broker, "mexp", false, keep).await;
    assert!(present);
    let got = c.recv_publish().await;
    assert_eq!(
        &got.payload[..],
        b"kept",
        "the expired message was not delivered"
    );
    let left = got
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("time left");
    assert!(
        (598..=600).contains(&left),
        "time left sent, not the original: {left}"
    );
    c.expect_nothing(Duration::from_millis(300)).await;
    let expired = r#"tandem_messages_dropped_total{reason="expired"}"#;
    probe::wait_series(broker.admin_addr(), expired, |n| n == 1.0).await;
}

#[tokio::test]
async fn subscription_options_no_local_retain_as_published_and_retain_handling() {
    let broker = Tandem::start("");
    let (mut c, _, _) = connect5(&broker, "opts", true, Properties::default()).await;
    let (mut other, _, _) = connect5(&broker, "opts-other", true, Properties::default()).await;
    let no_local = SubscriptionOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        ..Default::default()
    };
    c.send(&subscribe(1, "nl/#", no_local)).await;
    suback(&mut c).await;
    c.send(&publish("nl/own", "mine", QoS::AtMostOnce, 0, None))
        .await;
    other
        .send(&publish("nl/theirs", "theirs", QoS::AtMostOnce, 0, None))
        .await;
    let got = c.recv_publish().await;
    assert_eq!(
        &got.topic[..],
        "nl/theirs",
        "its own message was not sent back"
    );
    c.expect_nothing(Duration::from_millis(300)).await;

    // A retained message: handling 2 sends nothing on subscribe, 1 only for a new
    // subscription, 0 every time; retain as published keeps the flag on live messages.
    let mut retained = Publish {
        retain: true,
        ..match publish("rh/t", "kept", QoS::AtMostOnce, 0, None) {
            Packet::Publish(p) => p,
            _ => unreachable!(),
        }
    };
    other.send(&Packet::Publish(retained.clone())).await;
    other.ping().await;
    let handling = |q, rh, rap| SubscriptionOptions {
        qos: q,
        retain_handling: rh,
        retain_as_published: rap,
        ..Default::default()
    };
    let (mut s, _, _) = connect5(&broker, "rh", true, Properties::default()).await;
    s.send(&subscribe(1, "rh/#", handling(QoS::AtMostOnce, 2, false)))
        .await;
    suback(&mut s).await;
    s.expect_nothing(Duration::from_millis(300)).await;
    // rh/+ at QoS 1: of the two overlapping subscriptions, the one a message is
    // delivered through (the highest QoS), so its retain-as-published decides.
    s.send(&subscribe(2, "rh/+", handling(QoS::AtLeastOnce, 1, true)))
        .await;
    suback(&mut s).await;
    assert!(
        s.recv_publish().await.retain,
        "new subscription with handling 1: sent, flagged"
    );
    s.send(&subscribe(3, "rh/+", handling(QoS::AtLeastOnce, 1, true)))
        .await;
    suback(&mut s).await;
    s.expect_nothing(Duration::from_millis(300)).await;
    // Live: through rh/+ (retain as published) the flag stays.
    retained.payload = Bytes::from_static(b"live");
    other.send(&Packet::Publish(retained)).await;
    let live = s.recv_publish().await;
    assert_eq!((&live.payload[..], live.retain), (&b"live"[..], true));
}

#[tokio::test]
async fn the_client_limits_are_honoured() {
    let broker = Tandem::start(probe::ADMIN);
    let limits = props(|p| {
        p.receive_maximum = Some(2);
        p.maximum_packet_size = Some(64);
    });
    let (mut c, _, _) = connect5(&broker, "limited", true, limits).await;
    c.send(&subscribe(1, "lim/#", qos(QoS::AtLeastOnce))).await;
    suback(&mut c).await;
    let (mut p, _, _) = connect5(&broker, "lim-pub", true, Properties::default()).await;
    let big = "x".repeat(100);
    p.send(&publish("lim/big", &big, QoS::AtLeastOnce, 1, None))
        .await;
    for i in 0..4u16 {
        p.send(&publish(
            "lim/small",
            &i.to_string(),
            QoS::AtLeastOnce,
            2 + i,
            None,
        ))
        .await;
    }
    // The big one is dropped for this client; of the small ones, two at a time.
    let first = c.recv_publish().await;
    let second = c.recv_publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"0"[..], &b"1"[..])
    );
    c.expect_nothing(Duration::from_millis(300)).await;
    c.send(&Packet::PubAck(PubAck::new(first.pkid))).await;
    assert_eq!(&c.recv_publish().await.payload[..], b"2");
    let dropped = r#"tandem_messages_dropped_total{reason="too_large"}"#;
    probe::wait_series(broker.admin_addr(), dropped, |n| n == 1.0).await;
}

#[tokio::test]
async fn disconnect_with_will_unknown_auth_and_server_disconnects() {
    let broker = Tandem::start("");
    let (mut watcher, _, _) = connect5(&broker, "watcher", true, Properties::default()).await;
    watcher
        .send(&subscribe(1, "will/#", qos(QoS::AtMostOnce)))
        .await;
    suback(&mut watcher).await;
    let mut connect = connect_packet_v5("leaver", true, Properties::default());
    connect.will = Some(LastWill {
        topic: "will/leaver".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Some(Box::new(props(|p| {
            p.content_type = Some("text/plain".into())
        }))),
    });
    let (mut leaver, _) = RawClient::connect_with(broker.addr, connect).await;
    leaver
        .send(&Packet::Disconnect(Disconnect {
            reason: 0x04,
            properties: None,
        }))
        .await;
    leaver.expect_closed().await;
    let will = watcher.recv_publish().await;
    assert_eq!(
        &will.payload[..],
        b"bye",
        "DISCONNECT 0x04 publishes the will"
    );
    assert_eq!(
        will.properties.and_then(|p| p.content_type).as_deref(),
        Some("text/plain")
    );

    // Enhanced authentication with a method no plugin knows: 0x8C.
    let (_, ack) = RawClient::connect_with(
        broker.addr,
        connect_packet_v5(
            "scram",
            true,
            props(|p| p.authentication_method = Some("SCRAM-SHA-256".into())),
        ),
    )
    .await;
    assert_eq!(ack.reason, ConnectReason::BadAuthenticationMethod);

    // Takeover: the old connection is told (0x8E).
    let (mut first, _, _) = connect5(&broker, "twice", true, Properties::default()).await;
    let (second, _, _) = connect5(&broker, "twice", true, Properties::default()).await;
    assert_eq!(expect_disconnect(&mut first).await.reason, 0x8E);
    second.disconnect().await;

    // An AUTH outside any exchange is a protocol error.
    let (mut stray, _, _) = connect5(&broker, "stray", true, Properties::default()).await;
    stray.send(&Packet::Auth(Default::default())).await;
    assert_eq!(expect_disconnect(&mut stray).await.reason, 0x82);

    // Keepalive: 1 s, then silence: 0x8D after 1.5 s.
    let mut connect = connect_packet_v5("sleepy", true, Properties::default());
    connect.keep_alive = 1;
    let (mut sleepy, _) = RawClient::connect_with(broker.addr, connect).await;
    match sleepy.recv_within(DEADLINE).await {
        Recv::Packet(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x8D),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
}

#[test]
fn mosquitto_v5_clients_exchange_messages_with_properties() {
    let broker = Tandem::start("");
    let port = broker.addr.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "v5/#",
            "-q",
            "1",
        ])
        .args(["-C", "1", "-W", "10", "-i", "msub5"])
        .args(["-F", "%t|%p|%C|%R|%P"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)");
    broker
        .wait_log_all(&["client_id=msub5", "subscribed"], DEADLINE)
        .expect("mosquitto_sub subscribed");
    let status = Command::new("mosquitto_pub")
        .args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "v5/x",
            "-q",
            "1",
            "-m",
            "hello five",
        ])
        .args(["-D", "publish", "content-type", "text/plain"])
        .args(["-D", "publish", "response-topic", "v5/reply"])
        .args(["-D", "publish", "user-property", "team", "tandem"])
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success());
    let output = sub.wait_with_output().expect("sub output");
    assert!(output.status.success(), "mosquitto_sub -V 5 failed");
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.trim(),
        "v5/x|hello five|text/plain|v5/reply|team:tandem"
    );
}

#[tokio::test]
async fn subscription_identifiers_and_server_topic_aliases_reach_the_subscriber() {
    let broker = Tandem::start("");
    let (mut c, _, _) = connect5(
        &broker,
        "ids",
        true,
        props(|p| p.topic_alias_maximum = Some(1)),
    )
    .await;
    for (pkid, filter, id) in [(1, "ids/+", 7), (2, "ids/#", 300_000)] {
        c.send(&Packet::Subscribe(Subscribe {
            pkid,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: qos(QoS::AtMostOnce),
            }],
            properties: Some(Box::new(props(|p| p.subscription_identifiers = vec![id]))),
        }))
        .await;
        suback(&mut c).await;
    }
    let (mut p, _, _) = connect5(&broker, "ids-pub", true, Properties::default()).await;
    for (topic, payload) in [("ids/a", "1"), ("ids/a", "2"), ("ids/b/c", "3")] {
        p.send(&publish(topic, payload, QoS::AtMostOnce, 0, None))
            .await;
    }
    // Both overlapping subscriptions matched ids/a: one delivery, both identifiers; the
    // first sets alias 1, the second uses it alone.
    let first = c.recv_publish().await;
    let fp = first.properties.clone().expect("properties");
    assert_eq!((&first.topic[..], fp.topic_alias), ("ids/a", Some(1)));
    assert_eq!(fp.subscription_identifiers, vec![7, 300_000]);
    let second = c.recv_publish().await;
    let sp = second.properties.clone().expect("properties");
    assert_eq!(
        (&second.topic[..], sp.topic_alias, &second.payload[..]),
        ("", Some(1), &b"2"[..])
    );
    // Past the client's maximum of one alias, topics go out in full.
    let third = c.recv_publish().await;
    let tp = third.properties.clone().expect("properties");
    assert_eq!((&third.topic[..], tp.topic_alias), ("ids/b/c", None));
    assert_eq!(tp.subscription_identifiers, vec![300_000]);
}

#[tokio::test]
async fn a_delayed_will_waits_and_a_resumed_session_cancels_it() {
    let broker = Tandem::start("mqtt:\n  max_keep_alive: 60\n");
    let (mut watcher, _, _) = connect5(&broker, "dw-watch", true, Properties::default()).await;
    watcher
        .send(&subscribe(1, "dw/#", qos(QoS::AtMostOnce)))
        .await;
    suback(&mut watcher).await;
    let with_will = |id: &str, delay| {
        let mut c = connect_packet_v5(id, false, props(|p| p.session_expiry_interval = Some(60)));
        c.keep_alive = 120;
        c.will = Some(LastWill {
            topic: format!("dw/{id}").into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Some(Box::new(props(|p| p.will_delay_interval = Some(delay)))),
        });
        c
    };
    // The server keep alive holds a 120 s keepalive to mqtt.max_keep_alive.
    let (lost, ack) = RawClient::connect_with(broker.addr, with_will("dw-a", 1)).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(60));
    // Dropped without DISCONNECT: the will comes after its 1 s delay, not at once.
    let dropped_at = std::time::Instant::now();
    drop(lost);
    let will = watcher.recv_publish().await;
    assert_eq!(&will.topic[..], "dw/dw-a");
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(900),
        "after the delay: {:?}",
        dropped_at.elapsed()
    );
    // A client back within the delay resumes its session and its will is never sent.
    let (lost, _) = RawClient::connect_with(broker.addr, with_will("dw-b", 2)).await;
    drop(lost);
    broker
        .wait_log_all(&["dw-b", "will delayed"], DEADLINE)
        .expect("will delayed");
    let (back, _) = RawClient::connect_with(broker.addr, with_will("dw-b", 2)).await;
    broker
        .wait_log_all(&["dw-b", "delayed will dropped"], DEADLINE)
        .expect("the resumed session dropped it");
    watcher.expect_nothing(Duration::from_millis(2500)).await;
    back.disconnect().await;
}

#[tokio::test]
async fn shared_subscriptions_share_messages_among_members_of_both_versions() {
    let broker = Tandem::start("");
    let share = "$share/workers/jobs/#";
    let mut members: Vec<RawClient> = Vec::new();
    for id in ["w1", "w2"] {
        let (mut c, _, _) = connect5(&broker, id, true, Properties::default()).await;
        c.send(&subscribe(1, share, qos(QoS::AtLeastOnce))).await;
        assert_eq!(
            suback(&mut c).await,
            vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
        );
        members.push(c);
    }
    // A 3.1.1 client joins the same group.
    let mut w3 = RawClient::connect(broker.addr, "w3").await;
    assert_eq!(
        w3.subscribe(share, QoS::AtLeastOnce).await.reasons,
        vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
    );
    members.push(w3);
    // An ordinary subscriber to the same filter gets every message.
    let (mut all, _, _) = connect5(&broker, "all", true, Properties::default()).await;
    all.send(&subscribe(1, "jobs/#", qos(QoS::AtMostOnce)))
        .await;
    suback(&mut all).await;

    let (mut p, _, _) = connect5(&broker, "boss", true, Properties::default()).await;
    let mut send = async |from: u16, to: u16| {
        for i in from..to {
            p.send(&publish(
                "jobs/x",
                &i.to_string(),
                QoS::AtLeastOnce,
                i,
                None,
            ))
            .await;
            assert!(matches!(p.recv().await, Packet::PubAck(_)));
        }
    };
    send(1, 31).await;
    // Round robin among three online members: ten each, each message once.
    let mut seen = Vec::new();
    for c in members.iter_mut() {
        for _ in 0..10 {
            let m = c.recv_publish().await;
            c.ack(&m).await;
            seen.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
        c.expect_nothing(Duration::from_millis(200)).await;
    }
    for _ in 0..30 {
        all.recv_publish().await;
    }
    // One member leaves mid-stream; the others take all that follows, nothing lost.
    let leaver = members.remove(0);
    leaver.disconnect().await;
    send(31, 41).await;
    for c in members.iter_mut() {
        for _ in 0..5 {
            let m = c.recv_publish().await;
            c.ack(&m).await;
            seen.push(String::from_utf8(m.payload.to_vec()).unwrap());
        }
    }
    seen.sort_by_key(|s| s.parse::<u32>().unwrap());
    let expected: Vec<String> = (1..41).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "every message to exactly one member");
    for _ in 31..41 {
        all.recv_publish().await;
    }

    // Malformed share names are invalid filters.
    for (pkid, bad) in [
        (5, "$share//a"),
        (6, "$share/g+/a"),
        (7, "$share/g"),
        (8, "$share/g/a/#/b"),
    ] {
        all.send(&subscribe(pkid, bad, qos(QoS::AtMostOnce))).await;
        assert_eq!(
            suback(&mut all).await,
            vec![SubscribeReason::Failure(0x8F)],
            "{bad}"
        );
    }
}

/// rumqttc's MQTT 5 client (a Rust client crate nobody here wrote): its session outlives
/// a reconnect, messages queued meanwhile arrive with their user properties.
#[tokio::test]
async fn rumqttc_v5_client_resumes_its_session_and_reads_properties() {
    use rumqttc::v5::mqttbytes::QoS as RQoS;
    use rumqttc::v5::mqttbytes::v5::Packet as RPacket;
    use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

    let broker = Tandem::start("");
    let options = || {
        let mut o = MqttOptions::new("rc5", "127.0.0.1", broker.addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(60));
        o.set_keep_alive(Duration::from_secs(5));
        o
    };
    // The next incoming packet `pick` accepts, within the deadline.
    async fn next<T>(events: &mut EventLoop, mut pick: impl FnMut(RPacket) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("in time")
                .expect("event loop ok");
            if let Event::Incoming(p) = event
                && let Some(t) = pick(p)
            {
                return t;
            }
        }
    }

    let (client, mut events) = AsyncClient::new(options(), 16);
    let present = next(&mut events, |p| match p {
        RPacket::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(!present);
    client.subscribe("rc5/#", RQoS::AtLeastOnce).await.unwrap();
    next(&mut events, |p| {
        matches!(p, RPacket::SubAck(_)).then_some(())
    })
    .await;
    client.disconnect().await.unwrap();
    // The event loop ends once the DISCONNECT is written.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::timeout_at(deadline, events.poll())
        .await
        .expect("disconnect in time")
        .is_ok()
    {}

    let (mut p, _, _) = connect5(&broker, "rc5-pub", true, Properties::default()).await;
    let sent = props(|p| p.user_properties = vec![("trace".into(), "abc".into())]);
    p.send(&publish(
        "rc5/x",
        "while away",
        QoS::AtLeastOnce,
        1,
        Some(sent),
    ))
    .await;
    assert!(matches!(p.recv().await, Packet::PubAck(_)));

    let (_client, mut events) = AsyncClient::new(options(), 16);
    let present = next(&mut events, |p| match p {
        RPacket::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present, "the session was kept");
    let got = next(&mut events, |p| match p {
        RPacket::Publish(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        (&b"rc5/x"[..], &b"while away"[..])
    );
    let user = got
        .properties
        .map(|p| p.user_properties)
        .unwrap_or_default();
    assert_eq!(user, vec![("trace".to_string(), "abc".to_string())]);
}

#[tokio::test]
async fn the_receive_maximum_is_announced_and_exceeding_it_disconnects_with_0x93() {
    let broker = Tandem::start("mqtt: { receive_maximum: 3 }\n");
    let (mut c, p, _) = connect5(&broker, "rm", true, Properties::default()).await;
    assert_eq!(p.receive_maximum, Some(3), "announced");
    for pkid in 1..=3 {
        c.send(&publish("rm/t", "x", QoS::ExactlyOnce, pkid, None))
            .await;
        match c.recv().await {
            Packet::PubRec(r) => assert_eq!((r.pkid, r.reason), (pkid, 0)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    // A duplicate of an unreleased one is not a new one: PUBREC again.
    c.send(&publish("rm/t", "x", QoS::ExactlyOnce, 2, None))
        .await;
    assert!(matches!(c.recv().await, Packet::PubRec(r) if r.pkid == 2));
    // Releasing one makes room for one more.
    c.send(&Packet::PubRel(PubRel::new(1))).await;
    assert!(matches!(c.recv().await, Packet::PubComp(r) if r.pkid == 1));
    c.send(&publish("rm/t", "x", QoS::ExactlyOnce, 4, None))
        .await;
    assert!(matches!(c.recv().await, Packet::PubRec(r) if r.pkid == 4));
    // A fourth unreleased one: DISCONNECT 0x93 "receive maximum exceeded".
    c.send(&publish("rm/t", "x", QoS::ExactlyOnce, 5, None))
        .await;
    assert_eq!(expect_disconnect(&mut c).await.reason, 0x93);
    // MQTT 3.1.1 has no receive maximum: the same traffic is served.
    let mut old = RawClient::connect(broker.addr, "rm-311").await;
    for pkid in 1..=5 {
        old.send(&publish("rm/t", "x", QoS::ExactlyOnce, pkid, None))
            .await;
        assert!(matches!(old.recv().await, Packet::PubRec(r) if r.pkid == pkid));
    }
    old.disconnect().await;
}

#[tokio::test]
async fn a_shared_member_leaving_with_unacknowledged_messages_loses_none() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    let broker = Tandem::start("");
    let share = "$share/pool/work/#";
    let got: Arc<Mutex<BTreeSet<u16>>> = Arc::default();
    // Two members that acknowledge everything, in tasks of their own.
    let mut workers = Vec::new();
    for id in ["ok1", "ok2"] {
        let (mut c, _, _) = connect5(&broker, id, true, Properties::default()).await;
        c.send(&subscribe(1, share, qos(QoS::AtLeastOnce))).await;
        assert_eq!(
            suback(&mut c).await,
            vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
        );
        let got = got.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let m = c.recv_publish().await;
                c.ack(&m).await;
                let n: u16 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
                got.lock().unwrap().insert(n);
            }
        }));
    }
    // A third that never acknowledges, and drops its connection after five messages.
    let (mut taker, _, _) = connect5(&broker, "taker", true, Properties::default()).await;
    taker
        .send(&subscribe(1, share, qos(QoS::AtLeastOnce)))
        .await;
    suback(&mut taker).await;
    let taken = tokio::spawn(async move {
        let mut unacked = Vec::new();
        while unacked.len() < 5 {
            let m = taker.recv_publish().await;
            unacked.push(
                std::str::from_utf8(&m.payload)
                    .unwrap()
                    .parse::<u16>()
                    .unwrap(),
            );
        }
        drop(taker); // the socket closes without DISCONNECT, nothing acknowledged
        unacked
    });

    let (mut p, _, _) = connect5(&broker, "pub", true, Properties::default()).await;
    const N: u16 = 300;
    for i in 1..=N {
        p.send(&publish(
            "work/item",
            &i.to_string(),
            QoS::AtLeastOnce,
            i,
            None,
        ))
        .await;
        assert!(matches!(p.recv().await, Packet::PubAck(a) if a.reason == 0));
    }
    let unacked = tokio::time::timeout(DEADLINE, taken)
        .await
        .expect("the taker got five messages")
        .unwrap();
    // Everything published reaches a member that acknowledges it: the taker's five
    // unacknowledged messages too.
    eventually("every message at an acknowledging member", || {
        got.lock().unwrap().len() == usize::from(N)
    })
    .await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got, (1..=N).collect::<BTreeSet<u16>>());
    for n in &unacked {
        assert!(
            got.contains(n),
            "{n}, left unacknowledged by the taker, was handed over"
        );
    }
    broker
        .wait_log(
            "handed unacknowledged shared-subscription messages",
            DEADLINE,
        )
        .expect("the hand-over is logged");
    for w in workers {
        w.abort();
    }
}

#[tokio::test]
async fn topic_aliases_cannot_pin_more_than_64_kib_of_topics() {
    let broker = Tandem::start("");
    let (mut c, p, _) = connect5(&broker, "hoarder", true, Properties::default()).await;
    assert_eq!(p.topic_alias_maximum, Some(64));
    let alias = |n: u16| Some(props(|p| p.topic_alias = Some(n)));
    let big = |c: char| c.to_string().repeat(30 * 1024);
    // Two 30 KiB topics on aliases fit; a third would make 90 KiB: DISCONNECT 0x97.
    c.send(&publish(&big('a'), "1", QoS::AtLeastOnce, 1, alias(1)))
        .await;
    assert!(matches!(c.recv().await, Packet::PubAck(a) if a.reason == 0));
    c.send(&publish(&big('b'), "2", QoS::AtLeastOnce, 2, alias(2)))
        .await;
    assert!(matches!(c.recv().await, Packet::PubAck(a) if a.reason == 0));
    c.send(&publish(&big('c'), "3", QoS::AtLeastOnce, 3, alias(3)))
        .await;
    let d = expect_disconnect(&mut c).await;
    assert_eq!(d.reason, 0x97, "quota exceeded");
    broker
        .wait_log("topic aliases would hold", DEADLINE)
        .expect("the reason is logged");
}
