//! The router's bounds, tried as a hostile client would: topic depth
//! (`mqtt.max_topic_levels`, and tree walks that survive any depth), one SUBSCRIBE that
//! repeats `#` 20,000 times over 2,000 retained messages, the retained store's count and
//! bytes bounds, and subscriptions per client (with `tandem-topic-acl` deciding).

use std::collections::HashMap;

use tandem_broker::protocol::{
    LastWill, Packet, PubAck, Publish, QoS, SubscribeReason, UnsubAck, Unsubscribe,
};
use tandem_tests::probe::{ADMIN, metrics, series, wait_series};
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, binary, connect_packet, log_event};

const G0: SubscribeReason = SubscribeReason::Granted(QoS::AtMostOnce);
const G1: SubscribeReason = SubscribeReason::Granted(QoS::AtLeastOnce);
const REFUSED: SubscribeReason = SubscribeReason::FAILURE;

/// `levels` levels: `x/x/.../x`.
fn topic_of(levels: usize) -> String {
    vec!["x"; levels].join("/")
}

async fn unsubscribe(c: &mut RawClient, filter: &str) {
    let pkid = c.pkid();
    c.send(&Packet::Unsubscribe(Unsubscribe {
        pkid,
        filters: vec![filter.into()],
        properties: None,
    }))
    .await;
    // Messages still routed to the filter may come first.
    loop {
        match c.recv().await {
            Packet::UnsubAck(UnsubAck { pkid: got, .. }) => return assert_eq!(got, pkid),
            Packet::Publish(_) => continue,
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }
}

/// The broker still routes: a fresh subscriber gets a fresh publisher's message.
async fn still_serving(broker: &mut Tandem) {
    assert!(
        broker.is_running(),
        "broker exited; logs:\n{}",
        broker.logs().join("\n")
    );
    let mut s = RawClient::connect(broker.addr, "alive-sub").await;
    assert_eq!(s.subscribe("alive", QoS::AtMostOnce).await.reasons, [G0]);
    let mut p = RawClient::connect(broker.addr, "alive-pub").await;
    p.publish("alive", b"yes", QoS::AtLeastOnce, false).await;
    let got = s.recv_publish().await;
    assert_eq!((&got.topic[..], &got.payload[..]), ("alive", &b"yes"[..]));
}

/// Receives PUBLISH packets (acknowledging QoS 1) until one on `marker`; returns those before it.
async fn until_marker(c: &mut RawClient, marker: &str) -> Vec<Publish> {
    let mut before = Vec::new();
    loop {
        let p = c.recv_publish().await;
        c.ack(&p).await;
        if p.topic == marker {
            return before;
        }
        before.push(p);
    }
}

/// Finding 2: a filter of ~10,000 levels, subscribed then removed by UNSUBSCRIBE and by a
/// clean disconnect, overflowed the stack and aborted the broker. Now the filter is
/// refused (0x80) at `mqtt.max_topic_levels` (default 128), counted and logged with its
/// depth, and the broker keeps serving.
#[tokio::test]
async fn a_10000_level_filter_does_not_crash_the_broker() {
    let mut broker = Tandem::start(ADMIN);
    let deep = format!("a/{}", "/".repeat(10_000));
    let mut c = RawClient::connect(broker.addr, "deep").await;
    let first = c.subscribe(&deep, QoS::AtMostOnce).await;
    unsubscribe(&mut c, &deep).await;
    let second = c.subscribe(&deep, QoS::AtLeastOnce).await;
    c.disconnect().await;
    still_serving(&mut broker).await;
    // Only now the codes: on a broker that aborts, the lines above are what fails.
    assert_eq!(first.reasons, [REFUSED]);
    assert_eq!(second.reasons, [REFUSED]);
    // Exactly at the bound is fine.
    let mut c = RawClient::connect(broker.addr, "at-bound").await;
    let ack = c.subscribe(&topic_of(128), QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, [G0]);
    assert!(
        broker
            .wait_log_where(
                |l| log_event(
                    l,
                    "refusing a topic filter deeper than mqtt.max_topic_levels",
                    Some(("levels", "10002"))
                ),
                DEADLINE
            )
            .is_some(),
        "the refusal is logged with the depth"
    );
    wait_series(
        broker.admin_addr(),
        r#"tandem_topic_levels_refused_total{packet="subscribe"}"#,
        |v| v == 2.0,
    )
    .await;
}

/// Finding 2, the tree walks themselves: with the bound raised far past any stack's
/// reach, a 10,000-level filter and topic are subscribed, matched (exactly, by `#` and by
/// a deep `.../#`), retained, cleared, unsubscribed and removed on disconnect.
#[tokio::test]
async fn tree_walks_survive_any_depth() {
    let mut broker = Tandem::start("mqtt: { max_topic_levels: 20000 }\nsys: { enable: false }\n");
    let deep = format!("a/{}", "/".repeat(10_000));
    let deep_hash = format!("{deep}/#");
    let mut s = RawClient::connect(broker.addr, "deep-sub").await;
    let ack = s
        .subscribe_many(&[(&deep, QoS::AtMostOnce), (&deep_hash, QoS::AtMostOnce)])
        .await;
    assert_eq!(ack.reasons, [G0, G0]);
    let mut p = RawClient::connect(broker.addr, "deep-pub").await;
    p.publish(&deep, b"retained deep", QoS::AtLeastOnce, true)
        .await;
    let got = s.recv_publish().await;
    assert_eq!(&got.topic[..], deep);
    // Overlapping filters deliver once: the next message is the marker.
    s.subscribe("marker", QoS::AtMostOnce).await;
    p.publish("marker", b"m", QoS::AtLeastOnce, false).await;
    assert_eq!(&s.recv_publish().await.topic[..], "marker");

    let mut late = RawClient::connect(broker.addr, "late").await;
    late.subscribe("#", QoS::AtMostOnce).await;
    let got = late.recv_publish().await;
    assert!(
        got.retain && got.topic == deep,
        "the deep retained message, by #"
    );
    p.publish(&deep, b"", QoS::AtLeastOnce, true).await; // clears it
    unsubscribe(&mut s, &deep).await;
    unsubscribe(&mut s, &deep_hash).await;
    s.subscribe(&deep, QoS::AtMostOnce).await;
    s.disconnect().await;
    late.disconnect().await;
    let mut again = RawClient::connect(broker.addr, "again").await;
    again.subscribe("a/#", QoS::AtMostOnce).await;
    p.publish("a/b", b"after", QoS::AtLeastOnce, false).await;
    let got = again.recv_publish().await;
    assert_eq!(&got.topic[..], "a/b", "the cleared deep message is gone");
    still_serving(&mut broker).await;
}

/// Finding 2: a PUBLISH deeper than the bound closes its connection with a logged
/// reason and is not routed; one at the bound is routed.
#[tokio::test]
async fn a_too_deep_publish_closes_the_connection() {
    let mut broker = Tandem::start(ADMIN);
    let mut s = RawClient::connect(broker.addr, "watcher").await;
    s.subscribe("#", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(broker.addr, "deep-pub").await;
    p.publish(&topic_of(129), b"too deep", QoS::AtMostOnce, false)
        .await;
    p.expect_closed().await;
    assert!(
        broker
            .wait_log_where(
                |l| l.contains("closing connection: protocol error")
                    && l.contains("PUBLISH topic has 129 topic levels"),
                DEADLINE
            )
            .is_some(),
        "logged with its reason"
    );
    let mut q = RawClient::connect(broker.addr, "ok-pub").await;
    q.publish(&topic_of(128), b"at the bound", QoS::AtLeastOnce, false)
        .await;
    let got = s.recv_publish().await;
    assert_eq!(
        &got.payload[..],
        b"at the bound",
        "the deep one was not routed"
    );
    let m = metrics(broker.admin_addr()).await;
    assert_eq!(
        series(&m, r#"tandem_topic_levels_refused_total{packet="publish"}"#),
        Some(1.0)
    );
    assert_eq!(
        series(&m, "tandem_connections_protocol_errors_total"),
        Some(1.0)
    );
    still_serving(&mut broker).await;
}

/// Finding 2: a CONNECT whose will topic is deeper than the bound is refused: closed
/// without CONNACK, logged, counted.
#[tokio::test]
async fn a_too_deep_will_topic_is_refused() {
    let mut broker = Tandem::start(ADMIN);
    let with_will = |id: &str, levels: usize| {
        let mut c = connect_packet(id, true, 0);
        c.will = Some(LastWill {
            topic: topic_of(levels).into(),
            payload: "gone".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        });
        c
    };
    let mut c = RawClient::tcp(broker.addr).await;
    c.send(&Packet::Connect(Box::new(with_will("deep-will", 129))))
        .await;
    match c.recv_within(DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the connection closed without CONNACK, got {other:?}"),
    }
    assert!(
        broker
            .wait_log_where(
                |l| l.contains("will topic deeper than mqtt.max_topic_levels")
                    && l.contains("levels=129"),
                DEADLINE
            )
            .is_some()
    );
    let (ok, ack) = RawClient::connect_with(broker.addr, with_will("ok-will", 128)).await;
    assert_eq!(ack.reason, tandem_broker::protocol::ConnectReason::Success);
    ok.disconnect().await;
    wait_series(
        broker.admin_addr(),
        r#"tandem_topic_levels_refused_total{packet="will"}"#,
        |v| v == 1.0,
    )
    .await;
    still_serving(&mut broker).await;
}

/// Finding 13: 20,000 copies of `#` in one SUBSCRIBE over 2,000 retained messages. The
/// copies collapse into one subscription (the last QoS wins; every copy gets its own
/// SUBACK code) and the retained messages are sent once each: 2,000, not 40,000 offers
/// that overflow the session queue (today the queue fills with duplicates, the rest are
/// dropped, and in a debug build the SUBACK alone takes longer than the harness waits).
#[tokio::test]
async fn twenty_thousand_hashes_cost_one_subscription() {
    let broker = Tandem::start(&format!(
        "mqtt: {{ max_queued_messages: 5000 }}\nsys: {{ enable: false }}\n{ADMIN}"
    ));
    let mut p = RawClient::connect(broker.addr, "filler").await;
    for i in 0..1999 {
        p.publish(
            &format!("r/{i}"),
            format!("{i}").as_bytes(),
            QoS::AtMostOnce,
            true,
        )
        .await;
    }
    // A QoS 1 publish last: its PUBACK means every earlier one was routed.
    p.publish("r/1999", b"1999", QoS::AtLeastOnce, true).await;

    let mut s = RawClient::connect(broker.addr, "greedy").await;
    let mut filters = vec![("#", QoS::AtMostOnce); 19_999];
    filters.push(("#", QoS::AtLeastOnce));
    let ack = s.subscribe_many(&filters).await;
    assert_eq!(ack.reasons.len(), 20_000, "one code per filter");
    assert!(ack.reasons[..19_999].iter().all(|r| *r == G0), "in order");
    assert_eq!(ack.reasons[19_999], G1);

    p.publish("marker", b"m", QoS::AtLeastOnce, false).await;
    let retained = until_marker(&mut s, "marker").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in &retained {
        assert!(m.retain, "{} carries the retain flag", m.topic);
        *seen.entry(m.topic.to_string()).or_default() += 1;
    }
    let duplicated = seen.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated, 0, "no retained message sent twice");
    assert_eq!(retained.len(), 2000, "each retained message once");

    let m = metrics(broker.admin_addr()).await;
    assert_eq!(
        series(&m, "tandem_subscriptions"),
        Some(1.0),
        "one subscription"
    );
    assert_eq!(
        series(&m, r#"tandem_messages_dropped_total{reason="queue_full"}"#),
        Some(0.0)
    );
    // The subscription holds the last copy's QoS: a QoS 1 publish arrives at QoS 1.
    p.publish("live", b"q1", QoS::AtLeastOnce, false).await;
    let live = s.recv_publish().await;
    assert_eq!((&live.topic[..], live.qos), ("live", QoS::AtLeastOnce));
    s.send(&Packet::PubAck(PubAck::new(live.pkid))).await;
}

/// Finding 15: the retained store is bounded by count and bytes. At the count bound a new
/// topic is not stored but still routed; replacing and clearing work; a replacement
/// past the bytes bound is not stored and the stale value goes. Counted and logged.
#[tokio::test]
async fn the_retained_store_is_bounded() {
    let broker = Tandem::start(&format!(
        "mqtt: {{ max_retained_messages: 3, max_retained_bytes: 600 }}\nsys: {{ enable: false }}\n{ADMIN}"
    ));
    let mut live = RawClient::connect(broker.addr, "live").await;
    live.subscribe("t/#", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    let a = [b'a'; 100];
    for t in ["t/1", "t/2", "t/3"] {
        p.publish(t, &a, QoS::AtLeastOnce, true).await; // 103 bytes each
    }
    p.publish("t/4", b"d", QoS::AtLeastOnce, true).await; // over the count
    let mut got: Vec<String> = Vec::new();
    for _ in 0..4 {
        got.push(live.recv_publish().await.topic.to_string());
    }
    assert_eq!(got, ["t/1", "t/2", "t/3", "t/4"], "refused, yet routed");
    assert!(
        broker
            .wait_log_where(
                |l| l.contains("retained store full") && l.contains("mqtt.max_retained_messages"),
                DEADLINE
            )
            .is_some()
    );
    p.publish("t/1", &[b'A'; 100], QoS::AtLeastOnce, true).await; // replace at the bound
    p.publish("t/2", b"", QoS::AtLeastOnce, true).await; // clear
    p.publish("t/4", b"d", QoS::AtLeastOnce, true).await; // now fits: 103+103+4
    p.publish("t/3", &[b'c'; 500], QoS::AtLeastOnce, true).await; // 610 > 600

    let mut fresh = RawClient::connect(broker.addr, "fresh").await;
    fresh.subscribe("t/#", QoS::AtMostOnce).await;
    p.publish("t/marker", b"m", QoS::AtLeastOnce, false).await;
    let mut stored: Vec<(String, Vec<u8>)> = until_marker(&mut fresh, "t/marker")
        .await
        .into_iter()
        .map(|m| (m.topic.to_string(), m.payload.to_vec()))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            ("t/1".to_owned(), vec![b'A'; 100]),
            ("t/4".to_owned(), b"d".to_vec())
        ],
        "the replaced t/1, the late t/4; t/3 went with its refused replacement"
    );
    let m = metrics(broker.admin_addr()).await;
    let v = |name: &str| series(&m, name);
    assert_eq!(
        v(r#"tandem_retained_refused_total{bound="max_retained_messages"}"#),
        Some(1.0)
    );
    assert_eq!(
        v(r#"tandem_retained_refused_total{bound="max_retained_bytes"}"#),
        Some(1.0)
    );
    assert_eq!(v("tandem_retained_messages"), Some(2.0));
    assert_eq!(v("tandem_retained_bytes"), Some(107.0));
}

/// Finding 15: subscriptions per client are bounded. With `tandem-topic-acl` deciding, a
/// denied filter does not use the quota, a duplicate counts once, re-subscribing to a
/// held filter works at the bound, and a filter past it gets 0x80 (counted) until one is
/// unsubscribed.
#[tokio::test]
async fn subscriptions_per_client_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(
        &acl,
        "subscribe-acl: { anonymous: [\"ok/#\"] }\npublish-acl: { anonymous: [\"#\"] }\nreceive-acl: { anonymous: [\"#\"] }\n",
    )
    .unwrap();
    let broker = Tandem::start_config(&format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
mqtt: {{ max_subscriptions_per_client: 3 }}
sys: {{ enable: false }}
{ADMIN}plugins:
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}]
    config: {{ acl_file: {acl} }}
topic-check:
  enable: true
  plugins: [acl]
"#,
        d = dir.path().display(),
        bin = binary("tandem-topic-acl").display(),
        acl = acl.display(),
    ));
    let mut c = RawClient::connect(broker.addr, "many").await;
    let ack = c
        .subscribe_many(&[
            ("ok/1", QoS::AtMostOnce),
            ("no/1", QoS::AtMostOnce),
            ("ok/2", QoS::AtMostOnce),
            ("ok/3", QoS::AtMostOnce),
            ("ok/4", QoS::AtMostOnce),
            ("ok/1", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(ack.reasons, [G0, REFUSED, G0, G0, REFUSED, G1]);
    assert_eq!(c.subscribe("ok/3", QoS::AtLeastOnce).await.reasons, [G1]);
    assert_eq!(
        c.subscribe("ok/5", QoS::AtMostOnce).await.reasons,
        [REFUSED]
    );
    unsubscribe(&mut c, "ok/2").await;
    assert_eq!(c.subscribe("ok/4", QoS::AtMostOnce).await.reasons, [G0]);
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("ok/5", b"not subscribed", QoS::AtMostOnce, false)
        .await;
    p.publish("ok/4", b"subscribed", QoS::AtLeastOnce, false)
        .await;
    let got = c.recv_publish().await;
    assert_eq!(&got.payload[..], b"subscribed");
    let m = metrics(broker.admin_addr()).await;
    assert_eq!(series(&m, "tandem_subscriptions_refused_total"), Some(2.0));
    assert_eq!(series(&m, "tandem_subscriptions"), Some(3.0));
    assert!(
        broker
            .wait_log_where(
                |l| l.contains("refusing subscriptions past mqtt.max_subscriptions_per_client"),
                DEADLINE
            )
            .is_some()
    );
}
