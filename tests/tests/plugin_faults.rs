//! Plugin processes killed under load: nothing is let in that should not be, the broker
//! keeps serving, and service comes back by itself once the broker has restarted the
//! plugin (`command:`) and described it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_broker::protocol::QoS;
use tandem_tests::{Tandem, connect_as, kill_pid, policy_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_plugins_under_load_lets_nothing_through_and_service_returns() {
    let dir = tempfile::tempdir().unwrap();
    let bin = policy_bin();
    let yaml = format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  users:
    endpoint: unix://{d}/users.sock
    command: [{bin}, --roles, auth]
    config:
      users:
        alice: {{ password: pa, attributes: {{ tenant: acme }} }}
        ops: {{ password: po }}
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
        - {{ action: subscribe, filter: "#", verdict: allow, users: [ops] }}
        - {{ action: receive, filter: "#", verdict: allow }}
        - {{ action: publish, filter: "tenants/{{tenant}}/#", verdict: allow }}
      topic_default: deny
      cache_ttl_ms: 0
auth: {{ plugins: [users] }}
topic-check: {{ plugins: [acl] }}
"##,
        d = dir.path().display(),
        bin = bin.display()
    );
    let broker = Tandem::start_config(&yaml);
    let addr = broker.addr;

    // The observer sees every message that got through the publish check.
    let mut ops = connect_as(addr, "ops", "ops", "po").await.unwrap();
    ops.subscribe("#", QoS::AtMostOnce).await;

    let stop = Arc::new(AtomicBool::new(false));
    let intruders_in = Arc::new(AtomicU64::new(0));
    let intruder_attempts = Arc::new(AtomicU64::new(0));
    let good_in = Arc::new(AtomicU64::new(0));
    let good_refused = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        // Bad credentials, over and over: must never get in.
        let (halt, n_in, n) = (
            stop.clone(),
            intruders_in.clone(),
            intruder_attempts.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                n.fetch_add(1, Ordering::Relaxed);
                if connect_as(addr, &format!("mallory{i}"), "mallory", "guess")
                    .await
                    .is_ok()
                {
                    n_in.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        // Good credentials: each accepted client publishes to its own tenant (allowed)
        // and to another one (never allowed).
        let (halt, ok, refused) = (stop.clone(), good_in.clone(), good_refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !halt.load(Ordering::Relaxed) {
                n += 1;
                match connect_as(addr, &format!("alice{i}"), "alice", "pa").await {
                    Ok(mut c) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        c.publish(
                            "tenants/acme/ok",
                            format!("{i}-{n}").as_bytes(),
                            QoS::AtLeastOnce,
                            false,
                        )
                        .await;
                        c.publish(
                            "tenants/other/leak",
                            b"must not pass",
                            QoS::AtLeastOnce,
                            false,
                        )
                        .await;
                        c.disconnect().await;
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Load for a second, then kill both plugin processes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = good_in.load(Ordering::Relaxed);
    assert!(before_kill > 0, "good clients get in while plugins are up");
    let users_pid = broker.plugin_pid("users").expect("users pid logged");
    let acl_pid = broker.plugin_pid("acl").expect("acl pid logged");
    let killed_at = Instant::now();
    kill_pid(users_pid);
    kill_pid(acl_pid);

    // Service returns by itself: once the broker has restarted the plugin, good clients
    // get in again.
    let deadline = killed_at + Duration::from_secs(20);
    while broker.plugin_pid("users") == Some(users_pid) {
        assert!(
            Instant::now() < deadline,
            "plugin not restarted within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = killed_at.elapsed();
    let count_at_restart = good_in.load(Ordering::Relaxed);
    while good_in.load(Ordering::Relaxed) <= count_at_restart + 4 {
        assert!(
            Instant::now() < deadline,
            "service did not come back within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered = killed_at.elapsed();
    // Keep the load on a little longer after recovery, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Drain what the observer got, up to a marker published after every load task
    // ended: nothing on another tenant's topic.
    let mut marker = connect_as(addr, "marker", "alice", "pa").await.unwrap();
    let payload = tandem_tests::marker::marker_payload();
    marker
        .publish(
            "tenants/acme/marker",
            payload.as_bytes(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    let got = ops
        .publishes_before_marker("tenants/acme/marker", payload.as_bytes())
        .await;
    let delivered = got.len();
    let leaks = got
        .iter()
        .filter(|(topic, _)| topic.starts_with("tenants/other"))
        .count();
    eprintln!(
        "plugin kill under load: intruder attempts {} (let in: {}), good connects {} (refused during outage: {}), \
         messages delivered {delivered} (leaked: {leaks}); plugin restarted {restarted:?} and service back {recovered:?} after the kill",
        intruder_attempts.load(Ordering::Relaxed),
        intruders_in.load(Ordering::Relaxed),
        good_in.load(Ordering::Relaxed),
        good_refused.load(Ordering::Relaxed),
    );
    assert_eq!(
        intruders_in.load(Ordering::Relaxed),
        0,
        "no intruder got in"
    );
    assert_eq!(leaks, 0, "no message passed a denied publish check");
    assert!(delivered > 0);
    assert!(
        broker
            .wait_log("plugin process restarted", Duration::from_secs(1))
            .is_some()
    );
    // The broker itself is still serving.
    let mut late = connect_as(addr, "late", "alice", "pa").await.unwrap();
    late.ping().await;
}
