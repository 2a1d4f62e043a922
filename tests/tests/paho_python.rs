//! MQTT 5 with Eclipse Paho's Python client (paho-mqtt 2, `protocol=MQTTv5`), a client
//! nobody here wrote, against the real broker and the real `tandem-policy` plugin: session
//! expiry across reconnects, message expiry (and the time left), topic aliases, will
//! delay, a plugin's reason codes and client reasons reaching the client, and a shared
//! subscription of three members one of which leaves with messages unacknowledged
//! (`tests/python/paho_v5.py` holds the scenarios and their assertions).
//!
//! The virtualenv (pinned `tests/python/requirements.txt`) is made once per machine in the
//! target directory, under a file lock shared by parallel test processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_tests::tooling::paho_python;
use tandem_tests::{Tandem, policy_bin};

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn broker(dir: &Path) -> Tandem {
    Tandem::start_config(&format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{bin}]
    timeout: 5s
    config:
      users:
        alice: {{ password: right }}
      auth_default: deny
      auth_client_reason: "bad credentials"
      rules:
        - {{ action: subscribe, filter: "secret/#", verdict: deny, reason: "log: secret",
             client_reason: "no secrets here" }}
        - {{ action: publish, filter: "ro/#", verdict: deny, reason: "log: read-only",
             reason_code: 0x97, client_reason: "read-only here" }}
        - {{ action: any, filter: "#", verdict: allow }}
auth:
  plugins: [policy]
topic-check:
  plugins: [policy]
"##,
        d = dir.display(),
        bin = policy_bin().display(),
    ))
}

/// Runs one scenario of `paho_v5.py` and asserts it passed.
fn scenario(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let out = Command::new(paho_python())
        .arg(python_dir().join("paho_v5.py"))
        .arg(broker.addr.ip().to_string())
        .arg(broker.addr.port().to_string())
        .arg(name)
        .output()
        .expect("run paho_v5.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {name}")),
        "paho scenario {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn paho_session_expiry_across_reconnects() {
    scenario("session_expiry");
}

#[test]
fn paho_message_expiry_drops_the_expired_and_sends_the_time_left() {
    scenario("message_expiry");
}

#[test]
fn paho_topic_aliases_reach_subscribers_as_topics() {
    scenario("topic_alias");
}

#[test]
fn paho_will_waits_out_its_delay() {
    scenario("will_delay");
}

#[test]
fn paho_sees_the_plugins_reason_codes_and_client_reasons() {
    scenario("deny_reasons");
}

#[test]
fn paho_shared_subscription_member_leaving_loses_no_qos1_message() {
    scenario("shared_member_leaves");
}
