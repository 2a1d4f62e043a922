//! The auth and topic-check chains with several real plugin processes started by the
//! broker (`command:`): allow, deny, abstain and all-abstain, and session attributes
//! set at authentication seen by the topic checks.

use tandem_broker::protocol::{ConnectReason, QoS, SubscribeReason};
use tandem_tests::{RawClient, Tandem, connect_as, policy_bin};

fn config(dir: &std::path::Path) -> String {
    let bin = policy_bin();
    let bin = bin.display();
    let d = dir.display();
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
sys: {{ interval: 1s }}
plugins:
  users-a:
    endpoint: unix://{d}/a.sock
    command: [{bin}, --roles, auth]
    config:
      users:
        alice: {{ password: pa, attributes: {{ tenant: acme }} }}
        eve: {{ password: x }}
        ops: {{ password: po }}
  users-b:
    endpoint: unix://{d}/b.sock
    command: [{bin}, --roles, auth]
    config:
      users:
        bob: {{ password: pb, attributes: {{ tenant: bobco }} }}
        eve: {{ password: y }}
  tenants:
    endpoint: unix://{d}/t1.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
        - {{ action: any, filter: "#", verdict: allow, users: [ops] }}
        - {{ action: any, filter: "tenants/{{tenant}}/#", verdict: allow }}
        - {{ action: publish, filter: "shared/#", verdict: allow }}
      cache_ttl_ms: 60000
  guard:
    endpoint: unix://{d}/t2.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
        - {{ action: publish, filter: "shared/secret", verdict: deny, reason: "secret" }}
        - {{ action: receive, filter: "tenants/+/private", verdict: deny, reason: "private" }}
auth:
  plugins: [users-a, users-b]
topic-check:
  enable: true
  plugins: [tenants, guard]
"##
    )
}

fn start() -> Tandem {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(dir.path());
    let broker = Tandem::start_config(&yaml);
    // Keep the socket directory alive as long as the broker.
    std::mem::forget(dir);
    broker
}

#[tokio::test]
async fn auth_chain_allow_deny_abstain() {
    let broker = start();
    let a = broker.addr;
    // A allows, B abstains: allowed.
    assert!(connect_as(a, "c1", "alice", "pa").await.is_ok());
    // A abstains, B allows: allowed.
    assert!(connect_as(a, "c2", "bob", "pb").await.is_ok());
    // A denies (bad password, 0x86), B abstains: denied, 3.1.1 code 4.
    assert_eq!(
        connect_as(a, "c3", "alice", "wrong").await.err(),
        Some(ConnectReason::BadUserNameOrPassword)
    );
    // A allows, B denies (an unknown user, answered as a bad password: 0x86): any deny
    // denies.
    assert_eq!(
        connect_as(a, "c4", "eve", "x").await.err(),
        Some(ConnectReason::BadUserNameOrPassword)
    );
    // Both abstain: denied.
    assert_eq!(
        connect_as(a, "c5", "carol", "c").await.err(),
        Some(ConnectReason::NotAuthorized)
    );
    // No username at all: both abstain: denied.
    let (_, ack) = RawClient::connect_with(a, tandem_tests::connect_packet("c6", true, 0)).await;
    assert_eq!(ack.reason, ConnectReason::NotAuthorized);
    assert!(
        broker
            .wait_log("authentication denied", tandem_tests::DEADLINE)
            .is_some()
    );
    assert!(
        broker
            .wait_log_all(&["plugin=users-a", "bad password"], tandem_tests::DEADLINE)
            .is_some(),
        "denials are logged with plugin and reason"
    );
}

#[tokio::test]
async fn topic_chain_uses_attributes_and_combines_verdicts() {
    let broker = start();
    let a = broker.addr;
    let mut ops = connect_as(a, "ops", "ops", "po").await.unwrap();
    let ack = ops.subscribe("#", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, vec![SubscribeReason::Granted(QoS::AtMostOnce)]);

    let mut alice = connect_as(a, "alice", "alice", "pa").await.unwrap();
    // Attributes from users-a (tenant=acme) reach the tenants plugin's rule.
    let ack = alice
        .subscribe_many(&[
            ("tenants/acme/#", QoS::AtMostOnce),
            ("tenants/bobco/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![
            SubscribeReason::Granted(QoS::AtMostOnce),
            SubscribeReason::FAILURE
        ],
        "own tenant granted; other tenant refused with 0x80"
    );

    // Allowed by tenants, guard abstains: routed to ops and to alice.
    alice
        .publish("tenants/acme/x", b"1", QoS::AtLeastOnce, false)
        .await;
    // All abstain: dropped (still acknowledged).
    alice
        .publish("tenants/bobco/x", b"2", QoS::AtLeastOnce, false)
        .await;
    // tenants allows shared/#, guard denies shared/secret: dropped.
    alice
        .publish("shared/secret", b"3", QoS::AtLeastOnce, false)
        .await;
    alice
        .publish("shared/ok", b"4", QoS::AtLeastOnce, false)
        .await;
    // Allowed to publish, but guard denies RECEIVE of tenants/+/private: alice is
    // skipped; ops is allowed by its own rule.
    alice
        .publish("tenants/acme/private", b"5", QoS::AtLeastOnce, false)
        .await;
    alice
        .publish("tenants/acme/end", b"6", QoS::AtLeastOnce, false)
        .await;

    let mut ops_got = Vec::new();
    while ops_got.last().map(Vec::as_slice) != Some(&b"6"[..]) {
        ops_got.push(ops.recv_publish().await.payload.to_vec());
    }
    // ops is denied receive of tenants/acme/private too (guard's rule applies to all).
    assert_eq!(ops_got, vec![b"1".to_vec(), b"4".to_vec(), b"6".to_vec()]);

    let mut alice_got = Vec::new();
    while alice_got.last().map(Vec::as_slice) != Some(&b"6"[..]) {
        let m = alice.recv_publish().await;
        alice_got.push(m.payload.to_vec());
    }
    assert_eq!(alice_got, vec![b"1".to_vec(), b"6".to_vec()]);
    // And nothing after 6: the next is a marker alice publishes to her own tenant.
    alice
        .expect_nothing_before_own_marker("tenants/acme/marker")
        .await;
    assert!(
        broker
            .wait_log_all(
                &["plugin=guard", "secret", "topic check denied"],
                tandem_tests::DEADLINE
            )
            .is_some()
    );
}
