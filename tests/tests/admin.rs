//! The admin listener: `/metrics` counts what happened (connections, traffic by QoS,
//! verdicts, plugin timeouts, dropped events), `/healthz` answers while the process
//! runs, `/readyz` follows the plugins a chain needs; and JSON logs carry the client id.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::probe::{ADMIN, http_get, series, wait_scrape};
use tandem_tests::{
    DEADLINE, PluginProcess, RawClient, Tandem, connect_as, connect_packet, event_logger_bin,
    policy_bin, tandem_bin,
};
use tokio::net::TcpStream;

/// Asks `/readyz` until its status is `want`; returns the body.
async fn wait_ready(admin: SocketAddr, want: u16) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = http_get(admin, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status} (want {want}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_connections_verdicts_and_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start(&format!(
        "{ADMIN}plugins:\n  policy:\n    endpoint: unix://{}/p.sock\n    command: [{}, --roles, auth]\n    config: {{ users: {{ alice: {{ password: secret }} }}, auth_default: deny }}\nauth: {{ plugins: [policy] }}\n",
        dir.path().display(),
        policy_bin().display()
    ));
    let admin = broker.admin_addr();
    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    assert_eq!(http_get(admin, "/nope").await.0, 404);

    let mut alice = connect_as(broker.addr, "alice-1", "alice", "secret")
        .await
        .expect("alice may connect");
    let denied = connect_as(broker.addr, "mallory", "alice", "wrong").await;
    // The plugin's 0x86, as 3.1.1's nearest return code (4).
    assert_eq!(denied.err(), Some(ConnectReason::BadUserNameOrPassword));
    alice.publish("t/1", b"one", QoS::AtLeastOnce, false).await;
    alice.publish("t/2", b"two", QoS::ExactlyOnce, false).await;

    let m = wait_scrape(admin, r#"tandem_messages_received_total{qos="2"}"#, |v| {
        v == 1.0
    })
    .await;
    let v = |name: &str| series(&m, name).unwrap_or_else(|| panic!("no {name} in:\n{m}"));
    assert_eq!(v("tandem_connections_total"), 1.0);
    assert_eq!(
        v(r#"tandem_connections_by_version_total{mqtt="3.1.1"}"#),
        1.0
    );
    assert_eq!(v(r#"tandem_connections_by_version_total{mqtt="5"}"#), 0.0);
    assert_eq!(v("tandem_clients_connected"), 1.0);
    assert_eq!(v("tandem_clients_denied_total"), 1.0);
    assert_eq!(v(r#"tandem_messages_received_total{qos="0"}"#), 0.0);
    assert_eq!(v(r#"tandem_messages_received_total{qos="1"}"#), 1.0);
    assert!(v("tandem_bytes_received_total") > 0.0);
    let auth = r#"plugin="policy",rpc="authenticate""#;
    assert_eq!(v(&format!("tandem_plugin_calls_total{{{auth}}}")), 2.0);
    assert_eq!(
        v(&format!(
            r#"tandem_plugin_verdicts_total{{{auth},verdict="allow"}}"#
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            r#"tandem_plugin_verdicts_total{{{auth},verdict="deny"}}"#
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            r#"tandem_plugin_errors_total{{{auth},kind="deadline"}}"#
        )),
        0.0
    );
    assert_eq!(
        v(&format!(
            "tandem_plugin_call_duration_seconds_count{{{auth}}}"
        )),
        2.0
    );
    assert_eq!(
        v(&format!(
            r#"tandem_plugin_call_duration_seconds_bucket{{le="+Inf",{auth}}}"#
        )),
        2.0,
        "{m}"
    );
    assert_eq!(v(r#"tandem_plugin_replicas_up{plugin="policy"}"#), 1.0);
    assert_eq!(v(r#"tandem_plugin_circuit_open{plugin="policy"}"#), 0.0);
    assert!(m.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[tokio::test]
async fn queued_messages_are_counted_while_a_session_is_offline() {
    let broker = Tandem::start(ADMIN);
    let admin = broker.admin_addr();
    let (mut s, _) = RawClient::connect_with(broker.addr, connect_packet("q", false, 0)).await;
    s.subscribe("q/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    let mut p = RawClient::connect(broker.addr, "p").await;
    for i in 0..3u8 {
        p.publish("q/x", &[i], QoS::AtLeastOnce, false).await;
    }
    wait_scrape(admin, "tandem_messages_queued", |v| v == 3.0).await;
    // Back online: the queue drains into the inflight window.
    let (mut s, ack) = RawClient::connect_with(broker.addr, connect_packet("q", false, 0)).await;
    assert!(ack.session_present);
    for _ in 0..3 {
        let m = s.recv_publish().await;
        s.ack(&m).await;
    }
    wait_scrape(admin, "tandem_messages_queued", |v| v == 0.0).await;
}

#[tokio::test]
async fn a_plugin_timeout_is_counted_as_a_deadline_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start(&format!(
        "{ADMIN}plugins:\n  slow:\n    endpoint: unix://{}/s.sock\n    command: [{}, --roles, auth]\n    timeout: 200ms\n    config: {{ delay_ms: 3000, auth_default: allow }}\nauth: {{ plugins: [slow] }}\n",
        dir.path().display(),
        policy_bin().display()
    ));
    let admin = broker.admin_addr();
    let refused = connect_as(broker.addr, "c1", "u", "p").await.err();
    // The deadline decided, not a verdict: "server unavailable".
    assert_eq!(refused, Some(ConnectReason::ServerUnavailable));
    let auth = r#"plugin="slow",rpc="authenticate""#;
    let m = wait_scrape(
        admin,
        &format!(r#"tandem_plugin_errors_total{{{auth},kind="deadline"}}"#),
        |v| v == 1.0,
    )
    .await;
    let deny = format!(r#"tandem_plugin_verdicts_total{{{auth},verdict="deny"}}"#);
    assert_eq!(series(&m, &deny), Some(1.0), "on_error: deny");
    // The call took its whole 200ms deadline: it is in no bucket below 0.1s.
    let fast = format!(r#"tandem_plugin_call_duration_seconds_bucket{{le="0.1",{auth}}}"#);
    assert_eq!(series(&m, &fast), Some(0.0), "{m}");
}

#[tokio::test]
async fn dropped_events_are_counted_for_their_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let out = dir.path().join("events.jsonl").display().to_string();
    let mut logger = PluginProcess::start(
        &event_logger_bin(),
        &["--kinds", "message_received", "--output", &out],
        &sock,
    );
    let broker = Tandem::start(&format!(
        "{ADMIN}plugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 10 }}\n"
    ));
    let admin = broker.admin_addr();
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("q/x", b"before", QoS::AtLeastOnce, false).await;
    wait_scrape(
        admin,
        r#"tandem_plugin_events_acked_total{plugin="log"}"#,
        |v| v == 1.0,
    )
    .await;

    logger.kill();
    for i in 0..30 {
        p.publish("q/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    let m = wait_scrape(
        admin,
        r#"tandem_plugin_events_dropped_total{plugin="log"}"#,
        |v| v == 20.0,
    )
    .await;
    assert_eq!(
        series(&m, r#"tandem_plugin_events_queued_total{plugin="log"}"#),
        Some(31.0)
    );
    assert_eq!(
        series(&m, r#"tandem_plugin_events_queue_depth{plugin="log"}"#),
        Some(10.0)
    );
    // A plugin streaming events is required: with it gone the broker is not ready.
    let why = wait_ready(admin, 503).await;
    assert!(why.contains("plugin log"), "{why}");
}

#[tokio::test]
async fn readyz_follows_a_required_plugin_going_away_and_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/auth.sock", dir.path().display());
    let mut plugin = PluginProcess::start(&policy_bin(), &["--roles", "auth"], &listen);
    let broker = Tandem::start(&format!(
        "{ADMIN}plugins:\n  gate:\n    endpoint: {listen}\n    config: {{ auth_default: allow }}\nauth: {{ plugins: [gate] }}\n"
    ));
    let admin = broker.admin_addr();
    assert!(wait_ready(admin, 200).await.starts_with("ready\n"));

    // No client calls the plugin meanwhile: /readyz itself finds it gone.
    plugin.kill();
    let why = wait_ready(admin, 503).await;
    assert!(why.contains("plugin gate"), "{why}");
    // The alias, not where the plugin listens: /readyz may be reachable by strangers.
    assert!(
        !why.contains(dir.path().to_str().unwrap()) && !why.contains("unix://"),
        "{why}"
    );
    assert_eq!(
        http_get(admin, "/healthz").await.0,
        200,
        "alive while not ready"
    );

    let _plugin = PluginProcess::start(&policy_bin(), &["--roles", "auth"], &listen);
    assert!(wait_ready(admin, 200).await.starts_with("ready\n"));
    connect_as(broker.addr, "back", "u", "p")
        .await
        .expect("allowed again");
}

#[tokio::test]
async fn readyz_answers_503_while_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let out = dir.path().join("events.jsonl").display().to_string();
    let logger = PluginProcess::start(
        &event_logger_bin(),
        &["--kinds", "broker_post_shutdown", "--output", &out],
        &sock,
    );
    let mut broker = Tandem::start(&format!(
        "{ADMIN}plugins:\n  log:\n    endpoint: {sock}\n    events: {{ lifecycle_timeout: 5s }}\n"
    ));
    let admin = broker.admin_addr();
    assert!(wait_ready(admin, 200).await.starts_with("ready\n"));
    // A stalled event plugin holds the end of the shutdown for its lifecycle_timeout
    // (broker_post_shutdown is never acked): a window to ask /readyz in.
    signal(logger.pid(), "-STOP");
    signal(broker.pid(), "-TERM");
    // Until the broker has seen SIGTERM, /readyz may already answer 503 for the stopped
    // plugin (its health check times out): wait for the shutdown's own answer.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let why = wait_ready(admin, 503).await;
        if why == "shutting down\n" {
            break;
        }
        assert!(Instant::now() < deadline, "never said shutting down: {why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http_get(admin, "/healthz").await.0,
        200,
        "alive while draining"
    );
    assert!(broker.terminate(DEADLINE).is_some(), "broker exits");
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "the admin listener closed with the broker"
    );
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn json_logs_carry_the_client_id() {
    let broker = Tandem::start("log: { format: json }\n");
    let c = RawClient::connect(broker.addr, "json-test").await;
    c.disconnect().await;
    let line = broker
        .wait_log_where(
            |l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                    v["spans"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["client_id"] == "json-test"))
                })
            },
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("no JSON line with the client id:\n{:?}", broker.logs()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(
        v["level"].is_string() && v["fields"]["message"].is_string(),
        "{line}"
    );
    assert!(
        broker.logs().iter().all(|l| l.starts_with('{')),
        "every line is JSON"
    );
}

#[test]
fn check_config_accepts_admin_and_log_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "admin:\n  bind: 127.0.0.1:9090\n  max_connections: 4\nlog:\n  format: json\n  level: warn,tandem_broker=debug\n",
    )
    .unwrap();
    let out = std::process::Command::new(tandem_bin())
        .args(["check-config", "--offline"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "log:\n  format: xml\n").unwrap();
    let out = std::process::Command::new(tandem_bin())
        .args(["check-config", "--offline"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: line 2") && err.contains("log.format"),
        "{err}"
    );
}
