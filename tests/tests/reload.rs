//! Reload (`tandem reload`, i.e. SIGHUP): a topic-check plugin added under load, its
//! pushed `config:` changed, and bad configurations refused while the one in force
//! keeps serving. Connections are never dropped by a reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tandem_broker::protocol::QoS;
use tandem_tests::{DEADLINE, RawClient, Tandem, policy_bin};

fn base(dir: &std::path::Path) -> String {
    format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\n# {}\n",
        dir.display()
    )
}

/// The broker config with the policy plugin in the topic-check chain, denying
/// publishes to `deny`.
fn with_policy(dir: &std::path::Path, deny: &str, extra: &str) -> String {
    format!(
        "{base}plugins:\n  policy:\n    endpoint: unix://{d}/policy.sock\n    command: [{bin}, --roles, topic]\n{extra}    config:\n      rules:\n        - {{ action: publish, filter: \"{deny}\", verdict: deny, reason: reload-test }}\n      topic_default: allow\n      cache_ttl_ms: 60000\ntopic-check:\n  plugins: [policy]\n",
        base = base(dir),
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

/// Publishes `t/secret`, `t/ok`, then `t/end` (never denied) with payload `tag`, and
/// returns the topics the observer got before `t/end`: per-publisher ordering makes
/// `t/end` the last, so what is missing was denied.
async fn delivered(publisher: &mut RawClient, observer: &mut RawClient, tag: &str) -> Vec<String> {
    for topic in ["t/secret", "t/ok", "t/end"] {
        publisher
            .publish(topic, tag.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    let mut topics = Vec::new();
    loop {
        let m = observer.recv_publish().await;
        observer.ack(&m).await;
        assert_eq!(&m.payload[..], tag.as_bytes(), "a stale message");
        if &m.topic[..] == "t/end" {
            return topics;
        }
        topics.push(m.topic.to_string());
    }
}

#[tokio::test]
async fn plugins_are_added_reconfigured_and_bad_configs_refused_without_dropping_clients() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&base(dir.path()));
    let mut observer = RawClient::connect(broker.addr, "observer").await;
    observer.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(broker.addr, "publisher").await;

    // Load on another connection for the whole test: it must never be dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut load = RawClient::connect(broker.addr, "load").await;
    let load_task = tokio::spawn({
        let (stop, acked) = (stop.clone(), acked.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                load.publish("load/x", b"l", QoS::AtLeastOnce, false).await;
                acked.fetch_add(1, Ordering::Relaxed);
            }
            load.ping().await;
        }
    });

    // No topic check: everything is delivered.
    assert_eq!(
        delivered(&mut publisher, &mut observer, "0").await,
        ["t/secret", "t/ok"]
    );

    // 1. Add a topic-check plugin: the connected publisher is checked at once.
    broker.reload(&with_policy(dir.path(), "t/secret", ""));
    broker
        .wait_log("configuration reloaded generation=2", 3 * DEADLINE)
        .expect("reload 1 applied");
    assert_eq!(
        delivered(&mut publisher, &mut observer, "1").await,
        ["t/ok"]
    );

    // 2. Change only its pushed config: pushed with Describe, same process; the
    //    session's cached decisions (60 s TTL) are dropped with the old generation.
    broker.reload(&with_policy(dir.path(), "t/ok", ""));
    let line = broker
        .wait_log("configuration reloaded generation=3", 3 * DEADLINE)
        .expect("reload 2 applied");
    assert!(line.contains("reconfigured=[\"policy\"]"), "{line}");
    assert!(line.contains("added=[]"), "{line}");
    assert_eq!(
        delivered(&mut publisher, &mut observer, "2").await,
        ["t/secret"]
    );

    // 3. A file that does not parse is refused; the configuration in force serves on.
    let said = broker.reload_refused(&format!(
        "{}bogus_section: 1\n",
        with_policy(dir.path(), "t/secret", "")
    ));
    assert!(
        said.contains("reload refused") && said.contains("bogus_section"),
        "{said}"
    );
    let refused = broker
        .wait_log("reload refused", DEADLINE)
        .expect("bad file refused");
    assert!(refused.contains("bogus_section"), "{refused}");
    assert_eq!(
        delivered(&mut publisher, &mut observer, "3").await,
        ["t/secret"]
    );

    // 4. A plugin that never answers is refused too (after its startup_timeout).
    // (Put under `plugins:`, before `topic-check:`: a refusal for a misplaced key would
    // not be this one.)
    let ghost = with_policy(dir.path(), "t/secret", "")
        .replace(
            "topic-check:\n",
            &format!(
                "  ghost:\n    endpoint: unix://{}/ghost.sock\n    startup_timeout: 1s\ntopic-check:\n",
                dir.path().display()
            ),
        )
        .replace(
        "topic-check:\n  plugins: [policy]",
        "topic-check:\n  plugins: [policy, ghost]",
    );
    let said = broker.reload_refused(&ghost);
    assert!(
        said.contains("plugin `ghost`") && said.contains("did not answer Describe within 1s"),
        "{said}"
    );
    assert!(
        broker
            .wait_log_all(&["reload refused", "ghost"], 3 * DEADLINE)
            .is_some(),
        "ghost plugin refused"
    );
    assert_eq!(broker.count_log("reload refused"), 2);
    assert_eq!(
        delivered(&mut publisher, &mut observer, "4").await,
        ["t/secret"]
    );

    // Nobody was dropped: the load publisher kept going and every client answers.
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(DEADLINE, load_task)
        .await
        .expect("load task ends")
        .expect("load connection survived every reload");
    assert!(acked.load(Ordering::Relaxed) > 0);
    publisher.ping().await;
    observer.ping().await;
    assert_eq!(
        broker.count_log("closing connection"),
        0,
        "{:#?}",
        broker.logs()
    );
}
