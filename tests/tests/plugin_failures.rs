//! Deadlines and `on_error`: a plugin that answers after its deadline is an error, and
//! the error becomes its `on_error` verdict: deny (default), abstain or allow.

use std::time::{Duration, Instant};

use tandem_broker::protocol::{ConnectReason, QoS, SubscribeReason};
use tandem_tests::{RawClient, Tandem, connect_as, policy_bin, wait_sys};

/// A policy plugin named `alias` on a unix socket in `dir`, started by the broker.
fn plugin(alias: &str, dir: &std::path::Path, roles: &str, extra: &str, config: &str) -> String {
    format!(
        "  {alias}:\n    endpoint: unix://{}/{alias}.sock\n    command: [{}, --roles, {roles}]\n    timeout: 200ms\n{extra}    config: {config}\n",
        dir.display(),
        policy_bin().display()
    )
}

fn start(plugins: &[String], chains: &str) -> (Tandem, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\nsys: {{ interval: 1s }}\nplugins:\n{}{chains}",
        plugins.concat()
    );
    (Tandem::start_config(&yaml), dir)
}

const SLOW: &str = "{ delay_ms: 3000, auth_default: allow, topic_default: allow }";
const ALLOW: &str = "{ auth_default: allow, topic_default: allow }";

#[tokio::test]
async fn a_slow_auth_plugin_is_denied_within_its_deadline_then_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _d) = start(
        &[plugin("slow", dir.path(), "auth", "", SLOW)],
        "auth: { plugins: [slow] }\n",
    );
    let mut took = Vec::new();
    for i in 0..14 {
        let started = Instant::now();
        let refused = connect_as(broker.addr, &format!("c{i}"), "u", "p")
            .await
            .err();
        took.push(started.elapsed());
        // A plugin failure, not a verdict: "server unavailable" (3.1.1: 3).
        assert_eq!(
            refused,
            Some(ConnectReason::ServerUnavailable),
            "attempt {i}"
        );
    }
    eprintln!("CONNECT denial times with a 200ms deadline: {took:?}");
    // The plugin would answer after 3 s: every denial came from the deadline.
    assert!(took[0] >= Duration::from_millis(190), "{took:?}");
    assert!(took[0] < Duration::from_millis(1500), "{took:?}");
    // After failure_threshold (5) timeouts the replica is down: answered at once.
    assert!(
        broker
            .wait_log("replica marked down", tandem_tests::DEADLINE)
            .is_some()
    );
    let fast = took[5..]
        .iter()
        .filter(|t| **t < Duration::from_millis(100))
        .count();
    assert!(
        fast >= 3,
        "calls while the circuit is open answer at once: {took:?}"
    );
}

#[tokio::test]
async fn slow_topic_plugin_denies_subscribe_and_publish_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _d) = start(
        &[plugin("slow", dir.path(), "topic", "", SLOW)],
        "topic-check: { plugins: [slow] }\n",
    );
    let mut c = RawClient::connect(broker.addr, "sub").await;
    let started = Instant::now();
    let ack = c.subscribe("t/#", QoS::AtMostOnce).await;
    let took = started.elapsed();
    eprintln!("SUBSCRIBE denial with a 200ms deadline took {took:?}");
    assert_eq!(ack.reasons, vec![SubscribeReason::FAILURE]);
    assert!(took >= Duration::from_millis(190) && took < Duration::from_millis(1500));
    let started = Instant::now();
    c.publish("t/x", b"dropped", QoS::AtLeastOnce, false).await;
    eprintln!(
        "PUBLISH (denied, acknowledged) took {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(
        broker
            .wait_log_all(&["plugin=slow", "deadline"], tandem_tests::DEADLINE)
            .is_some()
    );
}

#[tokio::test]
async fn on_error_abstain_lets_the_other_plugins_decide() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _d) = start(
        &[
            plugin("slow", dir.path(), "auth", "    on_error: abstain\n", SLOW),
            plugin(
                "users",
                dir.path(),
                "auth",
                "",
                "{ users: { alice: { password: pa } } }",
            ),
        ],
        "auth: { plugins: [slow, users] }\n",
    );
    assert!(connect_as(broker.addr, "a", "alice", "pa").await.is_ok());
    assert_eq!(
        connect_as(broker.addr, "b", "alice", "bad").await.err(),
        Some(ConnectReason::BadUserNameOrPassword)
    );
    assert_eq!(
        connect_as(broker.addr, "c", "nobody", "x").await.err(),
        Some(ConnectReason::ServerUnavailable),
        "slow abstains (error), users abstains: all abstain denies, as a failure"
    );
}

#[tokio::test]
async fn on_error_allow_fails_open_loudly_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _d) = start(
        &[plugin(
            "slow",
            dir.path(),
            "auth",
            "    on_error: allow\n",
            SLOW,
        )],
        "auth: { plugins: [slow] }\n",
    );
    assert!(
        broker
            .wait_log("FAILS OPEN", tandem_tests::DEADLINE)
            .is_some()
    );
    let mut c = connect_as(broker.addr, "in", "anyone", "x")
        .await
        .expect("fail-open lets the client in");
    assert!(
        broker
            .wait_log_all(&["plugin=slow", "FAIL-OPEN"], tandem_tests::DEADLINE)
            .is_some()
    );
    let errors = wait_sys(
        &mut c,
        "$SYS/broker/plugins/slow/authenticate/errors/deadline",
        |v| v == "1",
    )
    .await;
    assert_eq!(errors, "1");
    let allows = wait_sys(&mut c, "$SYS/broker/plugins/slow/authenticate/allow", |v| {
        v == "1"
    })
    .await;
    assert_eq!(allows, "1");
}

#[tokio::test]
async fn plugin_call_counters_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, _d) = start(
        &[
            plugin("slow", dir.path(), "auth", "", SLOW),
            plugin("ok", dir.path(), "auth", "", ALLOW),
        ],
        "auth: { plugins: [ok] }\n",
    );
    // `slow` is defined but in no chain: it is started and described, never called.
    let mut c = connect_as(broker.addr, "watch", "u", "p").await.unwrap();
    let calls = wait_sys(&mut c, "$SYS/broker/plugins/ok/authenticate/calls", |v| {
        v == "1"
    })
    .await;
    assert_eq!(calls, "1");
    let idle = wait_sys(
        &mut c,
        "$SYS/broker/plugins/slow/authenticate/calls",
        |_| true,
    )
    .await;
    assert_eq!(idle, "0");
}
