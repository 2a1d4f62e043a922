//! Plugins speak MQTT 5: a DENY's reason code and client reason reach the client in the
//! CONNACK, SUBACK and PUBACK/PUBREC (3.1.1 clients get the nearest 3.1.1 code), a
//! code the packet cannot carry becomes 0x87, the log-only `reason` never reaches the
//! client, a client that asked for no problem information gets no Reason String on
//! acknowledgements, and an allowing plugin's user properties reach the CONNACK. The
//! real broker, the real `tandem-policy` plugin, raw clients over real sockets.

use bytes::Bytes;
use tandem_broker::protocol::{
    ConnectReason, Packet, Properties, Publish, QoS, Subscribe, SubscribeFilter, SubscribeReason,
    SubscriptionOptions,
};
use tandem_tests::{DEADLINE, RawClient, Tandem, connect_packet_as, policy_bin};

fn config(dir: &std::path::Path) -> String {
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{bin}]
    timeout: 5s
    config:
      users:
        alice: {{ password: right, connack_properties: [[plan, gold], [region, eu]] }}
      auth_default: deny
      auth_client_reason: "bad credentials"
      rules:
        - {{ action: subscribe, filter: "quota/#", verdict: deny, reason: "log: quota rule",
             reason_code: 0x97, client_reason: "over quota" }}
        - {{ action: subscribe, filter: "odd/#", verdict: deny, reason: "log: odd rule",
             reason_code: 0x8E, client_reason: "odd code" }}
        - {{ action: subscribe, filter: "plain/#", verdict: deny, reason: "log: plain rule" }}
        - {{ action: publish, filter: "ro/#", verdict: deny, reason: "log: read-only rule",
             reason_code: 0x97, client_reason: "read-only here" }}
        - {{ action: any, filter: "#", verdict: allow }}
auth:
  plugins: [policy]
topic-check:
  plugins: [policy]
"##,
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

fn v5(mut c: tandem_broker::protocol::Connect, p: Properties) -> tandem_broker::protocol::Connect {
    c.protocol = tandem_broker::protocol::ProtocolVersion::V5;
    c.properties = (!p.is_empty()).then(|| Box::new(p));
    c
}

fn subscribe(pkid: u16, filters: &[&str]) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            })
            .collect(),
        properties: None,
    })
}

fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: Bytes::from_static(b"x"),
        properties: None,
    })
}

fn reason_string(p: &Option<Box<Properties>>) -> Option<String> {
    p.as_ref()?.reason_string.as_ref().map(|s| s.to_string())
}

#[tokio::test]
async fn a_refused_connect_carries_the_plugins_code_and_client_reason_never_its_log_reason() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path()));
    // MQTT 5, wrong password: 0x86 and the client reason.
    let (_c, ack) = RawClient::connect_with(
        broker.addr,
        v5(
            connect_packet_as("m1", true, "alice", "wrong"),
            Properties::default(),
        ),
    )
    .await;
    assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword);
    assert_eq!(
        reason_string(&ack.properties).as_deref(),
        Some("bad credentials")
    );
    // An unknown user gets exactly the same answer: the log reason ("unknown user"
    // against "bad password") stays in the broker's log.
    let (_c, unknown) = RawClient::connect_with(
        broker.addr,
        v5(
            connect_packet_as("m2", true, "mallory", "x"),
            Properties::default(),
        ),
    )
    .await;
    assert_eq!(unknown.reason, ack.reason);
    assert_eq!(unknown.properties, ack.properties);
    broker
        .wait_log("unknown user", DEADLINE)
        .expect("the log reason is logged");
    // A client whose maximum packet size leaves no room for the Reason String gets the
    // code alone.
    let small = Properties {
        maximum_packet_size: Some(20),
        ..Properties::default()
    };
    let (_c, tight) = RawClient::connect_with(
        broker.addr,
        v5(connect_packet_as("m4", true, "alice", "x"), small),
    )
    .await;
    assert_eq!(tight.reason, ConnectReason::BadUserNameOrPassword);
    assert_eq!(reason_string(&tight.properties), None);
    // MQTT 3.1.1: the nearest return code, 4 (bad user name or password).
    let (_c, v4) =
        RawClient::connect_with(broker.addr, connect_packet_as("m3", true, "alice", "wrong")).await;
    assert_eq!(v4.reason, ConnectReason::BadUserNameOrPassword);
    assert_eq!(v4.properties, None);
    // The right password: the plugin's user properties ride on the CONNACK.
    let (c, ok) = RawClient::connect_with(
        broker.addr,
        v5(
            connect_packet_as("a1", true, "alice", "right"),
            Properties::default(),
        ),
    )
    .await;
    assert_eq!(ok.reason, ConnectReason::Success);
    let props = ok.properties.expect("CONNACK properties");
    assert_eq!(
        props
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
        vec![
            ("plan".to_owned(), "gold".to_owned()),
            ("region".to_owned(), "eu".to_owned())
        ]
    );
    c.disconnect().await;
}

#[tokio::test]
async fn suback_and_puback_carry_the_plugins_codes_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path()));
    let (mut c, ack) = RawClient::connect_with(
        broker.addr,
        v5(
            connect_packet_as("s1", true, "alice", "right"),
            Properties::default(),
        ),
    )
    .await;
    assert_eq!(ack.reason, ConnectReason::Success);
    c.send(&subscribe(1, &["ok/a", "quota/a", "odd/a", "plain/a"]))
        .await;
    let Packet::SubAck(suback) = c.recv().await else {
        panic!("expected SUBACK")
    };
    assert_eq!(
        suback.reasons,
        vec![
            SubscribeReason::Granted(QoS::AtLeastOnce),
            SubscribeReason::Failure(0x97),
            // 0x8E ("session taken over") is no SUBACK code: the broker's 0x87.
            SubscribeReason::Failure(0x87),
            SubscribeReason::Failure(0x87),
        ]
    );
    assert_eq!(
        reason_string(&suback.properties).as_deref(),
        Some("over quota"),
        "the first denying plugin's client reason"
    );
    // PUBLISH QoS 1 and 2 to a denied topic: the code and reason on PUBACK / PUBREC.
    c.send(&publish("ro/x", QoS::AtLeastOnce, 2)).await;
    let Packet::PubAck(puback) = c.recv().await else {
        panic!("expected PUBACK")
    };
    assert_eq!((puback.pkid, puback.reason), (2, 0x97));
    assert_eq!(
        reason_string(&puback.properties).as_deref(),
        Some("read-only here")
    );
    c.send(&publish("ro/y", QoS::ExactlyOnce, 3)).await;
    let Packet::PubRec(pubrec) = c.recv().await else {
        panic!("expected PUBREC")
    };
    assert_eq!((pubrec.pkid, pubrec.reason), (3, 0x97));
    assert_eq!(
        reason_string(&pubrec.properties).as_deref(),
        Some("read-only here")
    );
    // An allowed one is plain success.
    c.send(&publish("ok/x", QoS::AtLeastOnce, 4)).await;
    let Packet::PubAck(ok) = c.recv().await else {
        panic!("expected PUBACK")
    };
    assert_eq!((ok.pkid, ok.reason, ok.properties), (4, 0, None));
    c.disconnect().await;

    // Request Problem Information 0: codes still, Reason Strings no more.
    let quiet = Properties {
        request_problem_information: Some(0),
        ..Properties::default()
    };
    let (mut q, _) = RawClient::connect_with(
        broker.addr,
        v5(connect_packet_as("s2", true, "alice", "right"), quiet),
    )
    .await;
    q.send(&subscribe(1, &["quota/b"])).await;
    let Packet::SubAck(suback) = q.recv().await else {
        panic!("expected SUBACK")
    };
    assert_eq!(suback.reasons, vec![SubscribeReason::Failure(0x97)]);
    assert_eq!(suback.properties, None);
    q.send(&publish("ro/z", QoS::AtLeastOnce, 2)).await;
    let Packet::PubAck(puback) = q.recv().await else {
        panic!("expected PUBACK")
    };
    assert_eq!((puback.reason, puback.properties), (0x97, None));
    q.disconnect().await;

    // MQTT 3.1.1: SUBACK failure is 0x80 whatever the plugin said.
    let (mut old, _) =
        RawClient::connect_with(broker.addr, connect_packet_as("s3", true, "alice", "right")).await;
    let sub = old.subscribe_many(&[("quota/c", QoS::AtLeastOnce)]).await;
    assert_eq!(sub.reasons, vec![SubscribeReason::Failure(0x80)]);
    old.disconnect().await;
}

#[tokio::test]
async fn topic_checks_see_the_packets_user_properties() {
    let dir = tempfile::tempdir().unwrap();
    // A rule that only matches a PUBLISH carrying `tier: free`, before the catch-all.
    let config = config(dir.path()).replace(
        "        - { action: any, filter: \"#\", verdict: allow }",
        "        - { action: publish, filter: \"paid/#\", verdict: deny, reason: \"log: tier\",\n             reason_code: 0x97, user_property: [tier, free] }\n        - { action: any, filter: \"#\", verdict: allow }",
    );
    assert!(config.contains("user_property"), "{config}");
    let broker = Tandem::start_config(&config);
    let (mut c, _) = RawClient::connect_with(
        broker.addr,
        v5(
            connect_packet_as("u1", true, "alice", "right"),
            Properties::default(),
        ),
    )
    .await;
    let with = |tier: &str| Properties {
        user_properties: vec![("tier".into(), tier.into())],
        ..Properties::default()
    };
    let mut send = async |pkid: u16, p: Option<Properties>| {
        c.send(&Packet::Publish(Publish {
            properties: p.map(Box::new),
            ..match publish("paid/x", QoS::AtLeastOnce, pkid) {
                Packet::Publish(p) => p,
                _ => unreachable!(),
            }
        }))
        .await;
        match c.recv().await {
            Packet::PubAck(a) => a.reason,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    };
    // Same topic three times: the plugin sees each packet's properties (no cached answer
    // hides them).
    assert_eq!(send(1, Some(with("free"))).await, 0x97);
    assert_eq!(send(2, Some(with("gold"))).await, 0x00);
    assert_eq!(send(3, None).await, 0x00);
    assert_eq!(send(4, Some(with("free"))).await, 0x97);
}
