//! CONNECT handling: client ids, protocol levels, takeover, connection limit, timeouts.

use std::time::Duration;

use tandem_broker::protocol::{ConnectReason, Packet, ProtocolVersion, QoS};
use tandem_tests::{RawClient, Recv, Tandem, connect_packet};

#[tokio::test]
async fn empty_client_id_with_clean_session_gets_one_assigned() {
    let broker = Tandem::start("");
    let (mut c, ack) = RawClient::connect_with(broker.addr, connect_packet("", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(!ack.session_present);
    // The session works: it can subscribe and receive its own publish.
    c.subscribe("ids/x", QoS::AtMostOnce).await;
    c.publish("ids/x", b"hi", QoS::AtMostOnce, false).await;
    assert_eq!(&c.recv_publish().await.payload[..], b"hi");
    let line = broker
        .wait_log("client connected", tandem_tests::DEADLINE)
        .expect("connect logged");
    assert!(line.contains("client_id=tandem-"), "{line}");
}

#[tokio::test]
async fn empty_client_id_with_persistent_session_is_refused_with_0x02() {
    let broker = Tandem::start("");
    let mut c = RawClient::tcp(broker.addr).await;
    c.send(&Packet::Connect(Box::new(connect_packet("", false, 0))))
        .await;
    match c.recv().await {
        Packet::ConnAck(ack) => {
            assert_eq!(ack.reason, ConnectReason::ClientIdentifierNotValid);
            assert_eq!(ack.reason.v4_code(), 0x02);
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.expect_closed().await;
}

#[tokio::test]
async fn mqtt_3_1_mqisdp_is_accepted() {
    let broker = Tandem::start("");
    let mut connect = connect_packet("old-client", true, 0);
    connect.protocol = ProtocolVersion::V3_1;
    let mut c = RawClient::tcp(broker.addr).await;
    let mut raw = bytes::BytesMut::new();
    tandem_broker::protocol::encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V3_1,
        &mut raw,
    );
    assert_eq!(&raw[4..10], b"MQIsdp");
    c.send_raw(&raw).await;
    match c.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ConnectReason::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.ping().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    let broker = Tandem::start("");
    let mut c = RawClient::tcp(broker.addr).await;
    // CONNECT "MQTT" level 6, clean session, keepalive 60, client id "c".
    c.send_raw(&[
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 1, b'c',
    ])
    .await;
    match c.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason.v4_code(), 0x01),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.expect_closed().await;
}

#[tokio::test]
async fn session_takeover_closes_the_old_connection() {
    let broker = Tandem::start("");
    let mut first = RawClient::connect(broker.addr, "same-id").await;
    let mut second = RawClient::connect(broker.addr, "same-id").await;
    first.expect_closed().await;
    second.ping().await;
    broker
        .wait_log("client id taken over", tandem_tests::DEADLINE)
        .expect("takeover logged");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once() {
    let broker = Tandem::start("mqtt:\n  max_connections: 2\n");
    let _a = RawClient::connect(broker.addr, "a").await;
    let _b = RawClient::connect(broker.addr, "b").await;
    let started = std::time::Instant::now();
    let (mut c, ack) = RawClient::connect_with(broker.addr, connect_packet("c", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::ServerUnavailable);
    assert_eq!(ack.reason.v4_code(), 0x03);
    c.expect_closed().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused promptly"
    );
    // Freeing a slot lets the next client in.
    drop(_a);
    let mut accepted = false;
    for _ in 0..50 {
        let (mut d, ack) = RawClient::connect_with(broker.addr, connect_packet("d", true, 0)).await;
        if ack.reason == ConnectReason::Success {
            d.ping().await;
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "a client is accepted once a slot is free");
}

#[tokio::test]
async fn a_connection_that_never_sends_connect_is_closed() {
    let broker = Tandem::start("mqtt:\n  connect_timeout: 300ms\n");
    let mut c = RawClient::tcp(broker.addr).await;
    let started = std::time::Instant::now();
    match c.recv_within(Duration::from_secs(5)).await {
        Recv::Closed => {}
        other => panic!("expected close, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_second_connect_is_a_protocol_violation() {
    let broker = Tandem::start("");
    let mut c = RawClient::connect(broker.addr, "twice").await;
    c.send(&Packet::Connect(Box::new(connect_packet("twice", true, 0))))
        .await;
    c.expect_closed().await;
    broker
        .wait_log("unexpected CONNECT packet", tandem_tests::DEADLINE)
        .expect("reason logged");
}
