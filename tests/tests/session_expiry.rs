//! Parked persistent sessions expire (`mqtt.session_expiry`) and are bounded
//! (`mqtt.max_parked_sessions`): a discarded session's subscriptions and queued
//! messages go, and its client id starts afresh (session present = 0).

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::probe::{metric, wait_series};
use tandem_tests::{DEADLINE, RawClient, Tandem, connect_packet};

/// Subscribes a persistent session `id` to `filter` at QoS 1 and disconnects it.
async fn park(broker: &Tandem, id: &str, filter: &str) {
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet(id, false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    s.subscribe(filter, QoS::AtLeastOnce).await;
    s.disconnect().await;
}

/// Reconnects `id` (clean 0), subscribes it to `marker`, publishes the marker, and
/// returns whether a session was present and the topics received before the marker.
async fn resume(broker: &Tandem, publisher: &mut RawClient, id: &str) -> (bool, Vec<String>) {
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet(id, false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    let marker = format!("marker/{id}");
    s.subscribe(&marker, QoS::AtLeastOnce).await;
    publisher
        .publish(&marker, b"end", QoS::AtLeastOnce, false)
        .await;
    let mut before = Vec::new();
    loop {
        let m = s.recv_publish().await;
        s.ack(&m).await;
        if m.topic[..] == marker[..] {
            return (ack.session_present, before);
        }
        before.push(m.topic.to_string());
    }
}

#[tokio::test]
async fn an_expired_session_is_discarded_with_its_queue() {
    let broker = Tandem::start("admin: { bind: 127.0.0.1:0 }\nmqtt:\n  session_expiry: 1s\n");
    let admin = broker.admin_addr();
    park(&broker, "gone", "exp/#").await;
    let mut publisher = RawClient::connect(broker.addr, "pub").await;
    publisher
        .publish("exp/1", b"queued", QoS::AtLeastOnce, false)
        .await;
    broker
        .wait_log_all(&["persistent session expired", "gone"], 3 * DEADLINE)
        .expect("the parked session expires and it is logged");
    let (present, before) = resume(&broker, &mut publisher, "gone").await;
    assert!(!present, "session present = 0 after expiry");
    assert!(
        before.is_empty(),
        "the queued message went with it: {before:?}"
    );
    assert_eq!(
        metric(
            admin,
            r#"tandem_sessions_discarded_total{reason="expired"}"#
        )
        .await,
        Some(1.0)
    );
    // Its subscription left the router too: only the resumed marker subscription remains.
    assert_eq!(metric(admin, "tandem_subscriptions").await, Some(1.0));
}

#[tokio::test]
async fn a_session_within_its_expiry_is_resumed() {
    let broker = Tandem::start("mqtt:\n  session_expiry: 1h\n");
    park(&broker, "kept", "exp/#").await;
    let mut publisher = RawClient::connect(broker.addr, "pub").await;
    publisher
        .publish("exp/1", b"queued", QoS::AtLeastOnce, false)
        .await;
    let (present, before) = resume(&broker, &mut publisher, "kept").await;
    assert!(present);
    assert_eq!(before, ["exp/1"]);
}

#[tokio::test]
async fn parking_past_the_bound_discards_the_oldest_session() {
    let broker = Tandem::start("admin: { bind: 127.0.0.1:0 }\nmqtt:\n  max_parked_sessions: 2\n");
    let admin = broker.admin_addr();
    // Each parked before the next connects: the client sees its socket close before the
    // broker parks the session, so without the wait two could park in either order.
    for (id, parked) in [("one", 1.0), ("two", 2.0)] {
        park(&broker, id, &format!("{id}/#")).await;
        wait_series(admin, "tandem_sessions_parked", |n| n == parked).await;
    }
    park(&broker, "three", "three/#").await;
    broker
        .wait_log_all(&["mqtt.max_parked_sessions reached", "one"], DEADLINE)
        .expect("the eviction is logged");
    let mut publisher = RawClient::connect(broker.addr, "pub").await;
    for id in ["one", "two", "three"] {
        publisher
            .publish(&format!("{id}/x"), b"q", QoS::AtLeastOnce, false)
            .await;
    }
    assert_eq!(
        metric(
            admin,
            r#"tandem_sessions_discarded_total{reason="evicted"}"#
        )
        .await,
        Some(1.0)
    );
    assert_eq!(metric(admin, "tandem_sessions_parked").await, Some(2.0));
    let (present, before) = resume(&broker, &mut publisher, "three").await;
    assert!(present);
    assert_eq!(before, ["three/x"]);
    let (present, before) = resume(&broker, &mut publisher, "one").await;
    assert!(!present, "the oldest parked session was discarded");
    assert!(before.is_empty(), "{before:?}");
}
