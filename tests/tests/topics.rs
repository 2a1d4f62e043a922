//! Topic rules: wildcards, `$` topics, overlapping subscriptions, invalid filters.

use std::time::Duration;

use tandem_broker::protocol::{QoS, SubscribeReason};
use tandem_tests::{RawClient, Tandem};

#[tokio::test]
async fn wildcards_match_by_level() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    s.subscribe("sport/+/player1", QoS::AtMostOnce).await;
    s.subscribe("finance/#", QoS::AtMostOnce).await;
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
    s.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let broker = Tandem::start("");
    let mut all = RawClient::connect(broker.addr, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    all.subscribe("+/x", QoS::AtMostOnce).await;
    let mut dollar = RawClient::connect(broker.addr, "dollar").await;
    dollar.subscribe("$app/#", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(broker.addr, "p").await;
    p.publish("$app/x", b"d", QoS::AtMostOnce, false).await;
    p.publish("plain/x", b"p", QoS::AtMostOnce, false).await;
    assert_eq!(&dollar.recv_publish().await.topic[..], "$app/x");
    assert_eq!(&all.recv_publish().await.topic[..], "plain/x");
    all.expect_nothing(Duration::from_millis(200)).await;
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
    assert_eq!(ack.reasons.len(), 3);
    let mut p = RawClient::connect(broker.addr, "p").await;
    p.publish("over/x", b"m", QoS::ExactlyOnce, false).await;
    let m = s.recv_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    s.ack(&m).await;
    s.expect_nothing(Duration::from_millis(300)).await;
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
    assert!(matches!(ack.reasons[0], SubscribeReason::Failure(_)));
    assert_eq!(ack.reasons[1], SubscribeReason::Granted(QoS::AtLeastOnce));
    assert!(matches!(ack.reasons[2], SubscribeReason::Failure(_)));
    // Encoded as 0x80 on the wire (checked by decoding: the harness decodes 0x80 as FAILURE).
    assert_eq!(ack.reasons[0], SubscribeReason::FAILURE);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = Tandem::start("");
    let mut s = RawClient::connect(broker.addr, "s").await;
    s.subscribe("u/1", QoS::AtMostOnce).await;
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
    s.expect_nothing(Duration::from_millis(300)).await;
}
