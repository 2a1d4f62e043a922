//! Wills and keepalive: a will is published on abnormal disconnect only; a silent
//! client is disconnected at 1.5 x its keepalive.

use std::time::{Duration, Instant};

use tandem_broker::protocol::{LastWill, Packet, QoS};
use tandem_tests::{RawClient, Recv, Tandem, connect_packet};

fn with_will(id: &str, keep_alive: u16, retain: bool) -> tandem_broker::protocol::Connect {
    let mut c = connect_packet(id, true, keep_alive);
    c.will = Some(LastWill {
        topic: format!("wills/{id}").into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain,
        properties: None,
    });
    c
}

#[tokio::test]
async fn will_is_published_when_the_socket_drops() {
    let broker = Tandem::start("");
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let (c, _) = RawClient::connect_with(broker.addr, with_will("dropper", 0, false)).await;
    drop(c);
    let will = watcher.recv_publish().await;
    assert_eq!(
        (&will.topic[..], &will.payload[..]),
        ("wills/dropper", &b"gone"[..])
    );
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_is_discarded_on_disconnect() {
    let broker = Tandem::start("");
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let (c, _) = RawClient::connect_with(broker.addr, with_will("polite", 0, false)).await;
    c.disconnect().await;
    // The will would be routed before the broker closes the socket: a marker published
    // after the close comes first.
    watcher
        .expect_nothing_before_own_marker("wills/marker")
        .await;
}

#[tokio::test]
async fn retained_will_is_kept_for_later_subscribers() {
    let broker = Tandem::start("");
    let (c, _) = RawClient::connect_with(broker.addr, with_will("keeper", 0, true)).await;
    drop(c);
    let mut late = RawClient::connect(broker.addr, "late").await;
    // The will may be published just after we subscribe; either way it arrives.
    late.subscribe("wills/keeper", QoS::AtMostOnce).await;
    let will = late.recv_publish().await;
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn silent_client_is_disconnected_at_one_and_a_half_keepalive_and_its_will_published() {
    let broker = Tandem::start("");
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let started = Instant::now();
    let (mut silent, _) = RawClient::connect_with(broker.addr, with_will("silent", 1, false)).await;
    match silent.recv_within(Duration::from_secs(5)).await {
        Recv::Closed => {}
        other => panic!("expected the broker to close, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_millis(2500),
        "closed after {waited:?}, expected about 1.5 s"
    );
    let will = watcher.recv_publish().await;
    assert_eq!(&will.topic[..], "wills/silent");
    broker
        .wait_log("keepalive expired", tandem_tests::DEADLINE)
        .expect("reason logged");
}

#[tokio::test]
async fn pings_keep_a_client_alive() {
    let broker = Tandem::start("");
    let (mut c, _) = RawClient::connect_with(broker.addr, connect_packet("pinger", true, 1)).await;
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.send(&Packet::PingReq).await;
        match c.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}
