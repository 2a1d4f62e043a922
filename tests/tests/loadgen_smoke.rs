//! The load generator's own check, run briefly against the real broker: a run counts as
//! exact only when every QoS 1 message arrived once, in its publisher's order, and one
//! that is not exact exits non-zero. No timing is asserted here: figures belong to
//! `tests/bench/`.

use std::process::Command;

use tandem_tests::{Tandem, binary};

/// Runs a short fan-in at QoS 1 against `broker`; returns the exit code and the JSON line.
fn fan_in(broker: &Tandem, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(binary("tandem-loadgen"))
        .args(["fan-in", "--qos", "1", "--clients", "4"])
        .args([
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--drain",
            "3",
            "--threads",
            "1",
        ])
        .args(["--port", &broker.addr.port().to_string()])
        .args(extra)
        .output()
        .expect("run tandem-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON line; stderr:\n{stderr}"));
    let json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (out.status.code(), json, stderr)
}

#[test]
fn an_exact_run_exits_zero_and_says_so() {
    let broker = Tandem::start("mqtt: { max_queued_messages: 100000 }\n");
    let (code, json, stderr) = fan_in(&broker, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(json["exact"], true, "{json}");
    let expected = json["expected"].as_u64().unwrap();
    assert!(expected > 0, "{json}");
    assert_eq!(json["received"].as_u64(), Some(expected), "{json}");
    assert_eq!(
        (json["skipped"].as_u64(), json["disordered"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn a_run_that_loses_messages_exits_non_zero() {
    // A one-message queue behind a one-message inflight window drops QoS 1 messages
    // for a subscriber that cannot keep up (queue_full: drop_new), as a broker that
    // loses them would.
    let broker =
        Tandem::start("mqtt: { max_queued_messages: 1, max_inflight: 1, queue_full: drop_new }\n");
    let (code, json, stderr) = fan_in(&broker, &["--ahead", "0"]);
    assert_eq!(json["exact"], false, "{json}");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("NOT EXACT"), "{stderr}");
    let (expected, received) = (
        json["expected"].as_u64().unwrap(),
        json["received"].as_u64().unwrap(),
    );
    assert!(received < expected, "{json}");
}
