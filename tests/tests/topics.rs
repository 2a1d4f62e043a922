//! Topic rules: wildcards, `$` topics, overlapping subscriptions, invalid filters.

use tandem_broker::protocol::{QoS, SubscribeReason};
use tandem_tests::{RawClient, Tandem};

#[tokio::test]
async fn wildcards_match_by_level() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    for f in ["sport/+/player1", "finance/#"] {
        let ack = s.subscribe(f, QoS::AtMostOnce).await;
        assert_eq!(
            ack.reasons,
            [SubscribeReason::Granted(QoS::AtMostOnce)],
            "{f}"
        );
    }
    let mut p = RawClient::connect(broker.addr, "p").await;
    for t in [
        "sport/tennis/player1",
        "sport/tennis/player2",
        "sport/player1",
        "finance",
        "finance/stock/ibm",
        "other",
    ] {
        p.publish(t, t.as_bytes(), QoS::AtMostOnce, false).await;
    }
    p.ping().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(s.recv_publish().await.topic.to_string());
    }
    assert_eq!(
        got,
        ["sport/tennis/player1", "finance", "finance/stock/ibm"]
    );
    // Nothing else was routed to s before a marker published after the six.
    s.expect_nothing_before_marker(&mut p, "finance/marker", false)
        .await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = Tandem::start("");
    let mut all = RawClient::connect(broker.addr, "all").await;
    for f in ["#", "+/x"] {
        let ack = all.subscribe(f, QoS::AtMostOnce).await;
        assert_eq!(
            ack.reasons,
            [SubscribeReason::Granted(QoS::AtMostOnce)],
            "{f}"
        );
    }
    let mut dollar = RawClient::connect(broker.addr, "dollar").await;
    let ack = dollar.subscribe("$app/#", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, [SubscribeReason::Granted(QoS::AtMostOnce)]);
    let mut p = RawClient::connect(broker.addr, "p").await;
    p.publish("$app/x", b"d", QoS::AtMostOnce, false).await;
    p.publish("plain/x", b"p", QoS::AtMostOnce, false).await;
    assert_eq!(&dollar.recv_publish().await.topic[..], "$app/x");
    // plain/x matches both `#` and `+/x`: delivered once.
    assert_eq!(&all.recv_publish().await.topic[..], "plain/x");
    // $app/x was published before plain/x, so `all` would have had it first; and
    // nothing else comes before a marker (matched by `#`) published after both.
    all.expect_nothing_before_marker(&mut p, "marker/end", false)
        .await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    let ack = s
        .subscribe_many(&[
            ("over/#", QoS::AtMostOnce),
            ("over/+", QoS::ExactlyOnce),
            ("over/x", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        [
            SubscribeReason::Granted(QoS::AtMostOnce),
            SubscribeReason::Granted(QoS::ExactlyOnce),
            SubscribeReason::Granted(QoS::AtLeastOnce),
        ]
    );
    let mut p = RawClient::connect(broker.addr, "p").await;
    p.publish("over/x", b"m", QoS::ExactlyOnce, false).await;
    let m = s.recv_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    s.ack(&m).await;
    // Once only: the next packet is a marker published after it (matched by `over/#`).
    s.expect_nothing_before_marker(&mut p, "over/marker/end", false)
        .await;
}

#[tokio::test]
async fn invalid_filters_get_a_failure_code_and_the_rest_are_granted() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    let ack = s
        .subscribe_many(&[
            ("a/#/b", QoS::AtMostOnce),
            ("ok/+", QoS::AtLeastOnce),
            ("a+", QoS::AtMostOnce),
        ])
        .await;
    // 3.1.1 has one failure code, 0x80 (the harness decodes 0x80 as FAILURE).
    assert_eq!(
        ack.reasons,
        [
            SubscribeReason::FAILURE,
            SubscribeReason::Granted(QoS::AtLeastOnce),
            SubscribeReason::FAILURE,
        ]
    );
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    let ack = s.subscribe("u/1", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, [SubscribeReason::Granted(QoS::AtMostOnce)]);
    s.subscribe("u/marker", QoS::AtMostOnce).await;
    let pkid = s.pkid();
    s.send(&tandem_broker::protocol::Packet::Unsubscribe(
        tandem_broker::protocol::Unsubscribe {
            pkid,
            filters: vec!["u/1".into()],
            properties: None,
        },
    ))
    .await;
    match s.recv().await {
        tandem_broker::protocol::Packet::UnsubAck(a) => assert_eq!(a.pkid, pkid),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let mut p = RawClient::connect(broker.addr, "p").await;
    p.publish("u/1", b"x", QoS::AtMostOnce, false).await;
    s.expect_nothing_before_marker(&mut p, "u/marker", false)
        .await;
}
