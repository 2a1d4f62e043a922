//! Session ownership (`mqtt.session_takeover`): a client id's session belongs to the
//! identity that made it. With `same_identity` (the default) another identity is
//! refused with CONNACK "identifier rejected" and the owner keeps its connection and
//! session; with `any` the newcomer takes the session over, as in Mosquitto, but what
//! it inherits is checked for it: subscriptions with SUBSCRIBE, messages resent from
//! the inflight window with RECEIVE.
//!
//! The identities are established by the real `tandem-policy` plugin (auth and topic
//! roles) over a unix socket.

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::probe::metric;
use tandem_tests::{DEADLINE, RawClient, Tandem, connect_user, policy_bin};

/// alice, mallory and a publisher; alice alone may use `alice/#`, anyone `public/#`.
/// `takeover` sets `mqtt.session_takeover`; `None` leaves the default.
fn config(dir: &std::path::Path, takeover: Option<&str>) -> String {
    let mqtt = takeover
        .map(|t| format!("mqtt: {{ session_takeover: {t} }}\n"))
        .unwrap_or_default();
    format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}
admin: {{ bind: 127.0.0.1:0 }}
{mqtt}plugins:
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{bin}]
    config:
      users:
        alice: {{ password: a }}
        mallory: {{ password: m }}
        pub: {{ password: p }}
      auth_default: deny
      rules:
        - {{ action: any, filter: \"alice/#\", verdict: allow, users: [alice] }}
        - {{ action: publish, filter: \"#\", verdict: allow, users: [pub] }}
        - {{ action: any, filter: \"public/#\", verdict: allow }}
      topic_default: deny
auth:
  plugins: [policy]
topic-check:
  plugins: [policy]
",
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

#[tokio::test]
async fn another_identity_cannot_take_a_live_or_parked_session() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path(), None));
    let admin = broker.admin_addr();
    let (mut alice, ack) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    alice.subscribe("alice/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect_user(broker.addr, "pub", true, "pub", "p").await;

    // Live session: refused whatever the clean flag (clean 1 would discard alice's).
    for clean in [false, true] {
        let (mut mallory, ack) =
            connect_user(broker.addr, "alice-dev", clean, "mallory", "m").await;
        assert_eq!(
            ack.reason,
            ConnectReason::ClientIdentifierNotValid,
            "clean={clean}: identifier rejected (0x02)"
        );
        assert!(!ack.session_present);
        mallory.expect_closed().await;
    }
    broker
        .wait_log(
            "refusing CONNECT: the client id's session belongs to another identity",
            DEADLINE,
        )
        .expect("the refusal is logged");
    // alice kept her connection and her subscription.
    publisher
        .publish("alice/1", b"live", QoS::AtLeastOnce, false)
        .await;
    let m = alice.recv_publish().await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("alice/1", &b"live"[..]));
    alice.ack(&m).await;
    alice.ping().await;

    // Parked session: refused too, and left as it was (its queue included).
    alice.disconnect().await;
    publisher
        .publish("alice/2", b"queued", QoS::AtLeastOnce, false)
        .await;
    let (mut mallory, ack) = connect_user(broker.addr, "alice-dev", false, "mallory", "m").await;
    assert_eq!(ack.reason, ConnectReason::ClientIdentifierNotValid);
    mallory.expect_closed().await;
    let (mut alice, ack) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present, "alice's session survived the attempts");
    let m = alice.recv_publish().await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("alice/2", &b"queued"[..]));
    alice.ack(&m).await;

    assert_eq!(
        metric(admin, "tandem_session_takeovers_refused_total").await,
        Some(3.0)
    );
}

#[tokio::test]
async fn with_any_the_newcomer_takes_over_but_inherits_only_what_its_checks_allow() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path(), Some("any")));
    let admin = broker.admin_addr();
    let (mut alice, _) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    alice.subscribe("alice/#", QoS::AtLeastOnce).await;
    alice.subscribe("public/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = connect_user(broker.addr, "pub", true, "pub", "p").await;
    // alice receives a message and does not acknowledge it: it stays in flight.
    publisher
        .publish("alice/secret", b"for alice", QoS::AtLeastOnce, false)
        .await;
    let m = alice.recv_publish().await;
    assert_eq!(&m.topic[..], "alice/secret");

    // Mosquitto's behaviour: mallory takes the session over and alice is closed.
    let (mut mallory, ack) = connect_user(broker.addr, "alice-dev", false, "mallory", "m").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present);
    alice.expect_closed().await;

    // What mallory gets first is the marker: neither the unacknowledged message
    // (RECEIVE denies it to mallory) nor a new one on alice's topics (the inherited
    // `alice/#` was checked again for mallory and revoked).
    publisher
        .publish("alice/new", b"for alice", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("public/marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let m = mallory.recv_publish().await;
    assert_eq!(
        (&m.topic[..], &m.payload[..]),
        ("public/marker", &b"end"[..]),
        "mallory must not receive alice's messages"
    );
    mallory.ack(&m).await;
    mallory.ping().await;
    assert_eq!(
        metric(admin, "tandem_inflight_resend_denied_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric(admin, "tandem_subscriptions_revoked_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_owner_may_take_its_own_session_over() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path(), None));
    let (mut first, _) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    first.subscribe("alice/#", QoS::AtLeastOnce).await;
    let (mut second, ack) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present);
    first.expect_closed().await;
    let (mut publisher, _) = connect_user(broker.addr, "pub", true, "pub", "p").await;
    publisher
        .publish("alice/3", b"x", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&second.recv_publish().await.topic[..], "alice/3");
    // Anonymous clients share the empty identity: takeover among them works as before.
    let anon = Tandem::start("");
    let _a = RawClient::connect(anon.addr, "same").await;
    let _b = RawClient::connect(anon.addr, "same").await;
}

#[tokio::test]
async fn ownership_survives_a_restart_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let port = tandem_tests::free_port();
    let yaml = config(dir.path(), None).replace(
        "bind: 127.0.0.1:0 } }",
        &format!(
            "bind: '127.0.0.1:{port}' }} }}\nstorage: {{ path: '{}' }}",
            store.path().display()
        ),
    );
    let mut broker = Tandem::start_config(&yaml);
    let (mut alice, ack) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    alice.subscribe("alice/#", QoS::AtLeastOnce).await;
    alice.disconnect().await;
    assert!(broker.terminate(DEADLINE).is_some());
    let broker = Tandem::start_config(&yaml);
    // Another identity still cannot take alice's restored session, clean or not.
    for clean in [false, true] {
        let (mut mallory, ack) =
            connect_user(broker.addr, "alice-dev", clean, "mallory", "m").await;
        assert_eq!(
            ack.reason,
            ConnectReason::ClientIdentifierNotValid,
            "clean={clean}"
        );
        mallory.expect_closed().await;
    }
    let (_alice, ack) = connect_user(broker.addr, "alice-dev", false, "alice", "a").await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present, "alice's session, kept for alice");
}
