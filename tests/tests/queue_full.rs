//! `mqtt.queue_full`: what a full session queue does with one more message. `drop_new`
//! (the default) is covered in `sessions.rs`; here `drop_oldest` and `backpressure`,
//! with a publisher that would flood a slow subscriber.

use std::time::Duration;

use bytes::Bytes;
use tandem_broker::protocol::{ConnectReason, Packet, Properties, Publish, QoS};
use tandem_tests::probe::wait_series;
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, connect_packet, connect_packet_v5};

fn publish(payload: u8, qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "slow/t".into(),
        pkid,
        payload: Bytes::copy_from_slice(&[payload]),
        properties: None,
    })
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_messages() {
    let broker = Tandem::start(
        "mqtt:\n  max_queued_messages: 5\n  queue_full: drop_oldest\nadmin:\n  bind: 127.0.0.1:0\n",
    );
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("slow", false, 0)).await;
    s.subscribe("slow/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    for i in 0..8u8 {
        p.publish("slow/t", &[i], QoS::AtLeastOnce, false).await;
    }
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet("slow", false, 0)).await;
    assert!(ack.session_present);
    for i in 3..8u8 {
        let m = s.recv_publish().await;
        assert_eq!(&m.payload[..], &[i], "the newest five, in order");
        s.ack(&m).await;
    }
    s.expect_nothing_before_marker(&mut p, "slow/t", false)
        .await;
    wait_series(
        broker.admin_addr(),
        "tandem_messages_dropped_total{reason=\"queue_full\"}",
        |v| v == 3.0,
    )
    .await;
    assert!(broker.wait_log("policy=DropOldest", DEADLINE).is_some());
}

#[tokio::test]
async fn backpressure_holds_the_acknowledgement_until_there_is_room() {
    let broker = Tandem::start(
        "mqtt:\n  max_queued_messages: 3\n  max_inflight: 1\n  queue_full: backpressure\n  backpressure_timeout: 30s\n",
    );
    // A subscriber that reads but does not acknowledge yet: one message in flight,
    // three queued, then the queue is full.
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("slow", true, 0)).await;
    s.subscribe("slow/#", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    for i in 0..4u8 {
        p.publish("slow/t", &[i], QoS::AtLeastOnce, false).await;
    }
    let first = s.recv_publish().await;
    // The fifth waits for room: no PUBACK while the subscriber sits on its window.
    p.send(&publish(4, QoS::AtLeastOnce, 900)).await;
    match p.recv_within(Duration::from_millis(500)).await {
        Recv::Nothing => {}
        other => panic!("acknowledged with the queue full: {other:?}"),
    }
    // QoS 0 does not wait: it is dropped for the full session, and the connection
    // goes on (its PUBACK still pending).
    p.send(&publish(99, QoS::AtMostOnce, 0)).await;
    // The subscriber acknowledges one: a slot frees, the fifth is queued, then acked.
    s.ack(&first).await;
    match p.recv_within(DEADLINE).await {
        Recv::Packet(Packet::PubAck(a)) => assert_eq!(a.pkid, 900),
        other => panic!("expected the PUBACK once there was room, got {other:?}"),
    }
    // Everything acknowledged arrives, in order; the QoS 0 one did not.
    for i in 1..5u8 {
        let m = s.recv_publish().await;
        assert_eq!(&m.payload[..], &[i]);
        s.ack(&m).await;
    }
    s.expect_nothing_before_marker(&mut p, "slow/t", false)
        .await;
}

#[tokio::test]
async fn backpressure_past_its_timeout_disconnects_the_publisher_unacknowledged() {
    let broker = Tandem::start(
        "mqtt:\n  max_queued_messages: 2\n  max_inflight: 1\n  queue_full: backpressure\n  backpressure_timeout: 1s\n",
    );
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("stuck", false, 0)).await;
    s.subscribe("slow/#", QoS::AtLeastOnce).await;
    let (mut p, ack) = RawClient::connect_with(
        broker.addr,
        connect_packet_v5("pub5", true, Properties::default()),
    )
    .await;
    assert_eq!(ack.reason, ConnectReason::Success);
    let started = std::time::Instant::now();
    let mut acked = 0;
    let mut pkid = 0;
    let disconnect = loop {
        pkid += 1;
        p.send(&publish(pkid as u8, QoS::AtLeastOnce, pkid)).await;
        match p.recv_within(DEADLINE).await {
            Recv::Packet(Packet::PubAck(a)) if a.pkid == pkid => acked += 1,
            Recv::Packet(Packet::Disconnect(d)) => break d,
            other => panic!("expected PUBACK or DISCONNECT, got {other:?}"),
        }
    };
    assert_eq!(disconnect.reason, 0x97, "quota exceeded");
    assert_eq!(
        acked, 3,
        "one in flight and two queued were acknowledged, no more"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for room first"
    );
    p.expect_closed().await;
    assert!(
        broker
            .wait_log(
                "closing connection without acknowledging a PUBLISH",
                DEADLINE
            )
            .is_some()
    );
    // The stuck subscriber has exactly what was acknowledged.
    for i in 1..=3u8 {
        let m = s.recv_publish().await;
        assert_eq!(&m.payload[..], &[i]);
        s.ack(&m).await;
    }
}
