//! Retained messages: stored, sent on subscribe with the retain flag, cleared by an
//! empty payload.

use tandem_broker::protocol::QoS;
use tandem_tests::{RawClient, Tandem};

#[tokio::test]
async fn retained_message_is_sent_on_subscribe_and_cleared_by_empty_payload() {
    let broker = Tandem::start("");
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("ret/a", b"first", QoS::AtLeastOnce, true).await;
    p.publish("ret/a", b"second", QoS::AtLeastOnce, true).await;
    p.publish("ret/b", b"other", QoS::AtMostOnce, true).await;
    p.publish("ret/c", b"not retained", QoS::AtMostOnce, false)
        .await;

    let mut s = RawClient::connect(broker.addr, "sub").await;
    s.subscribe("ret/a", QoS::AtLeastOnce).await;
    let got = s.recv_publish().await;
    assert_eq!(
        &got.payload[..],
        b"second",
        "only the last retained message"
    );
    assert!(
        got.retain,
        "retained messages carry the retain flag on subscribe"
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
    s.ack(&got).await;

    // A live publish to an existing subscriber has the retain flag cleared.
    p.publish("ret/a", b"live", QoS::AtMostOnce, true).await;
    let live = s.recv_publish().await;
    assert_eq!(&live.payload[..], b"live");
    assert!(!live.retain);

    // Wildcard subscription gets every retained topic that matches.
    let mut w = RawClient::connect(broker.addr, "wild").await;
    w.subscribe("ret/+", QoS::AtMostOnce).await;
    let mut topics = vec![
        w.recv_publish().await.topic.to_string(),
        w.recv_publish().await.topic.to_string(),
    ];
    topics.sort();
    assert_eq!(topics, ["ret/a", "ret/b"]);
    // ret/c was not retained: the next is a live marker published after the SUBACK.
    w.expect_nothing_before_marker(&mut p, "ret/marker", false)
        .await;

    // An empty retained payload clears the topic. At QoS 1, so the clear is routed before
    // its PUBACK comes back, hence before `late` subscribes (a QoS 0 clear raced the
    // subscription on another connection, and the retained "live" could win).
    p.publish("ret/a", b"", QoS::AtLeastOnce, true).await;
    let mut late = RawClient::connect(broker.addr, "late").await;
    late.subscribe("ret/a", QoS::AtMostOnce).await;
    // A retained message would be sent on subscribe, before a live one published after.
    late.expect_nothing_before_marker(&mut p, "ret/a", false)
        .await;
}
