//! The identity rule (issue #10, finding 5): topic checks and events name a client by the
//! identity its auth chain established, not by the username it typed. Real `tandem`, the JWT
//! plugin (the token's subject is the identity), `tandem-policy` (the verified username is the
//! identity), `tandem-topic-acl` keyed on usernames, and the event logger.

use std::path::Path;

use serde_json::{Value, json};
use tandem_broker::protocol::{ConnectReason, QoS, SubscribeReason};
use tandem_tests::jwt::{hs256, now};
use tandem_tests::{
    DEADLINE, Tandem, binary, connect_as, event_logger_bin, eventually, policy_bin,
};

const SECRET: &[u8] = b"identity test secret";

/// admin may do anything; device-17 only its own subtree.
const ACL: &str = r##"
subscribe-acl:
  admin: ["#"]
  device-17: ["devices/device-17/#"]
publish-acl:
  admin: ["#"]
  device-17: ["devices/device-17/#"]
receive-acl:
  admin: ["#"]
  device-17: ["devices/device-17/#"]
"##;

fn token(sub: &str) -> String {
    hs256(SECRET, &json!({"sub": sub, "exp": now() + 600}))
}

/// `conflicted`'s password: one token for device-99, made once. (Made twice, the two
/// differed whenever a second boundary fell between them, since `exp` counts seconds, and
/// the password no longer matched: the test then met a bad-password denial.)
fn conflicted_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| token("device-99"))
}

/// The auth chain is [jwt, users]: the JWT plugin allows a valid token and sets its subject
/// as the identity; `users` (tandem-policy) knows one user, `conflicted`, whose password is a
/// token for `device-99`, and abstains for everyone else. Topics are checked by topic-acl.
fn start(dir: &Path) -> Tandem {
    std::fs::write(dir.join("jwt.key"), SECRET).unwrap();
    std::fs::write(dir.join("acl.yaml"), ACL).unwrap();
    let yaml = format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  jwt:
    endpoint: unix://{d}/jwt.sock
    command: [{jwt}, --roles, auth]
    config:
      algorithms: [HS256]
      secret_file: {d}/jwt.key
  users:
    endpoint: unix://{d}/users.sock
    command: [{policy}, --roles, auth]
    config:
      users:
        conflicted: {{ password: "{conflicted}" }}
      auth_default: abstain
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{acl}]
    config:
      acl_file: {d}/acl.yaml
      cache_ttl_ms: 0
  log:
    endpoint: unix://{d}/log.sock
    command: [{log}, --kinds, client_connected, --output, {d}/events.jsonl]
auth:
  plugins: [jwt, users]
topic-check:
  enable: true
  plugins: [acl]
"##,
        d = dir.display(),
        jwt = binary("tandem-auth-jwt").display(),
        policy = policy_bin().display(),
        acl = binary("tandem-topic-acl").display(),
        log = event_logger_bin().display(),
        conflicted = conflicted_token(),
    );
    Tandem::start_config(&yaml)
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_token_for_device_17_with_username_admin_gets_device_17s_rights() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let a = broker.addr;

    // The real admin watches everything.
    let mut admin = connect_as(a, "admin-watch", "admin", &token("admin"))
        .await
        .expect("admin connects");
    let ack = admin.subscribe("#", QoS::AtLeastOnce).await;
    assert_eq!(
        ack.reasons,
        vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
    );

    // A valid token for device-17, with the username `admin` typed in CONNECT.
    let mut dev = connect_as(a, "dev17", "admin", &token("device-17"))
        .await
        .expect("a valid token connects, whatever the username");
    let ack = dev
        .subscribe_many(&[
            ("#", QoS::AtLeastOnce),
            ("admin/#", QoS::AtLeastOnce),
            ("devices/device-17/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![
            SubscribeReason::FAILURE,
            SubscribeReason::FAILURE,
            SubscribeReason::Granted(QoS::AtLeastOnce)
        ],
        "the typed username `admin` must not grant admin's subscriptions"
    );

    // Publishing outside device-17's rights is dropped; the marker after it is delivered, so
    // the watcher's first message tells whether the forbidden one got through.
    dev.publish("admin/reboot", b"forged", QoS::AtLeastOnce, false)
        .await;
    dev.publish("devices/device-17/marker", b"ok", QoS::AtLeastOnce, false)
        .await;
    let first = admin.recv_publish().await;
    assert_eq!(
        &*first.topic, "devices/device-17/marker",
        "admin/reboot from device-17 must have been refused"
    );
    admin.ack(&first).await;
    assert!(
        broker
            .wait_log_all(&["topic check denied", "admin/reboot"], DEADLINE)
            .is_some()
    );

    // Events carry the established identity, and what was typed for audit.
    eventually("the client_connected event of dev17 is logged", || {
        events(dir.path()).iter().any(|e| e["client_id"] == "dev17")
    })
    .await;
    let ev = events(dir.path())
        .into_iter()
        .find(|e| e["client_id"] == "dev17")
        .unwrap();
    assert_eq!(ev["username"], "device-17", "{ev}");
    assert_eq!(ev["connect_username"], "admin", "{ev}");
    drop(dev);
    drop(admin);
}

#[tokio::test]
async fn allowing_plugins_that_disagree_on_the_identity_deny() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let a = broker.addr;
    // `users` verifies the password of `conflicted` (identity `conflicted`); the same password
    // is a valid token whose subject is device-99 (identity `device-99`): both allow, and they
    // disagree about who the client is.
    let refused = connect_as(a, "both", "conflicted", conflicted_token())
        .await
        .err();
    assert_eq!(refused, Some(ConnectReason::NotAuthorized));
    assert!(
        broker
            .wait_log_all(
                &[
                    "allowing plugins established different identities",
                    "device-99",
                    "conflicted"
                ],
                DEADLINE
            )
            .is_some()
    );
    // A token alone (policy abstains for an unknown user) still connects.
    let ok = connect_as(a, "alone", "someone", &token("device-99")).await;
    assert!(ok.is_ok(), "one identity, no conflict");
}
