//! MQTT 5 enhanced authentication with a client nobody here wrote: MQTT.js (npm `mqtt`,
//! Node.js) runs a full SCRAM-SHA-256 exchange, with a third SCRAM implementation (Node's
//! crypto), against the real broker and `tandem-auth-file`: the right password is let in and
//! the server's final message verified, a re-authentication on the live connection succeeds
//! and is verified too, and a wrong password gets CONNACK 0x86 (`tests/node/scram_mqttjs.js`
//! holds the client and its assertions).
//!
//! MQTT.js is installed once per machine into `<target>/mqttjs` (pinned in
//! `tests/node/package.json`), under a file lock shared by parallel test processes. Node.js
//! and npm must be installed (`.ci/run` installs Debian's).

use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_tests::scram::password_file_line;
use tandem_tests::tooling::mqttjs_modules;
use tandem_tests::{Tandem, binary};

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Runs the MQTT.js client as `user`/`password` in `mode` and asserts it passed.
fn scram(mode: &str, password: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let line = password_file_line("alice", "pencil", b"saltsaltsaltsalt", 4096);
    std::fs::write(d.join("passwd"), format!("{line}\n")).unwrap();
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\nplugins:\n  file:\n    endpoint: unix://{d}/auth.sock\n    command: [{bin}]\n    timeout: 5s\n    config:\n      password_file: {d}/passwd\nauth:\n  plugins: [file]\n",
        d = d.display(),
        bin = binary("tandem-auth-file").display(),
    ));
    let out = Command::new("node")
        .arg(node_dir().join("scram_mqttjs.js"))
        .arg(broker.addr.ip().to_string())
        .arg(broker.addr.port().to_string())
        .args(["alice", password, mode])
        .env("NODE_PATH", mqttjs_modules())
        .output()
        .expect("run node (Debian: apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("ok {mode}")),
        "MQTT.js SCRAM {mode} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqttjs_logs_in_with_scram_and_re_authenticates() {
    scram("right", "pencil");
}

#[test]
fn mqttjs_with_a_wrong_scram_password_gets_0x86() {
    scram("wrong", "pen");
}
