//! Clean and persistent sessions, offline queues and their bound.

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::{RawClient, Tandem, connect_packet};

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_qos1_while_offline() {
    let broker = Tandem::start("");
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet("keep", false, 0)).await;
    assert!(!ack.session_present);
    s.subscribe("off/#", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("off/1", b"q1", QoS::AtLeastOnce, false).await;
    p.publish("off/0", b"q0", QoS::AtMostOnce, false).await;
    p.publish("off/2", b"q2", QoS::ExactlyOnce, false).await;

    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet("keep", false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present);
    let first = s.recv_publish().await;
    let second = s.recv_publish().await;
    assert_eq!(&first.payload[..], b"q1");
    assert_eq!(&second.payload[..], b"q2", "QoS 0 is not queued offline");
    assert_eq!(second.qos, QoS::AtLeastOnce, "granted QoS caps delivery");
    s.ack(&first).await;
    s.ack(&second).await;
    // Subscriptions survived: a live publish arrives too.
    p.publish("off/3", b"live", QoS::AtLeastOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"live");
}

#[tokio::test]
async fn clean_session_discards_the_previous_session() {
    let broker = Tandem::start("");
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("c", false, 0)).await;
    s.subscribe("gone/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet("c", true, 0)).await;
    assert!(!ack.session_present);
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("gone/1", b"x", QoS::AtLeastOnce, false).await;
    // The old subscription is gone: a marker published after gone/1 comes first.
    s.expect_nothing_before_marker(&mut p, "marker/end", true)
        .await;
    s.disconnect().await;
    // And a clean session leaves nothing behind for the next persistent one.
    let (_s, ack) = RawClient::connect_with(broker.addr, connect_packet("c", false, 0)).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn offline_queue_is_bounded_and_overflow_counted() {
    let broker = Tandem::start("mqtt:\n  max_queued_messages: 5\nsys:\n  interval: 1s\n");
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("small", false, 0)).await;
    s.subscribe("bound", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    for i in 0..8u8 {
        p.publish("bound", &[i], QoS::AtLeastOnce, false).await;
    }
    let (mut s, ack) =
        RawClient::connect_with(broker.addr, connect_packet("small", false, 0)).await;
    assert!(ack.session_present);
    for i in 0..5u8 {
        let m = s.recv_publish().await;
        assert_eq!(&m.payload[..], &[i], "the first five are kept in order");
        s.ack(&m).await;
    }
    // The other three were dropped: a live marker on the same topic comes next.
    s.expect_nothing_before_marker(&mut p, "bound", false).await;
    broker
        .wait_log("session queue full", tandem_tests::DEADLINE)
        .expect("overflow logged");
    // Counted in $SYS.
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    sys.subscribe("$SYS/broker/messages/dropped", QoS::AtMostOnce)
        .await;
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    loop {
        let m = sys.recv_publish().await;
        if &m.payload[..] == b"3" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped count never reached 3"
        );
    }
}
