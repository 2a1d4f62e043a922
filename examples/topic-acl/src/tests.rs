//! The plugin as the broker sees it, through the SDK's in-process test broker: `Describe` with
//! inline rules or a file (fail closed), verdicts with their cache TTL, and reloads.

use std::path::Path;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use tandem_plugin::serde_json::json;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::tonic::Code;
use tandem_plugin::{Action, Client, TopicRequest, Verdict};

use super::plugin;

async fn verdict(broker: &TestBroker, action: Action, topic: &str, client: Client) -> Verdict {
    let decision = broker
        .topic_filter(TopicRequest::new(action, topic, client))
        .await
        .expect("topic_filter answers");
    decision.verdict
}

/// An anonymous SUBSCRIBE's verdict and reason code.
async fn decision_code(broker: &TestBroker, filter: &str) -> (Verdict, Option<u8>) {
    let d = broker
        .topic_filter(TopicRequest::new(
            Action::Subscribe,
            filter,
            Client::new("anon"),
        ))
        .await
        .expect("topic_filter answers");
    (d.verdict, d.reason_code)
}

#[tokio::test]
async fn inline_rules_decide_with_the_configured_ttl() {
    let broker = TestBroker::new(plugin());
    broker
        .describe(json!({
            "subscribe-acl": { "alice": ["sensors/#"], "anonymous": ["public/#"] },
            "publish-acl": { "alice": ["sensors/alice/#"] },
            "cache_ttl_ms": 1234,
        }))
        .await
        .unwrap();
    let alice = Client::new("c1").with_username("alice");
    let decision = broker
        .topic_filter(TopicRequest::new(
            Action::Subscribe,
            "sensors/+/t",
            alice.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(decision.cache_ttl, Duration::from_millis(1234));
    let decision = broker
        .topic_filter(TopicRequest::new(
            Action::Publish,
            "sensors/bob/t",
            alice.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(
        decision.cache_ttl,
        Duration::from_millis(1234),
        "denials are cached too"
    );
    assert!(
        decision.reason.contains("publish-acl"),
        "{}",
        decision.reason
    );
    let decision = broker
        .topic_filter(TopicRequest::new(Action::Receive, "x", alice.clone()))
        .await
        .unwrap();
    assert_eq!(
        decision.verdict,
        Verdict::Abstain,
        "no receive-acl: no opinion"
    );
    assert_eq!(decision.cache_ttl, Duration::from_millis(1234));
    let anon = Client::new("c2");
    assert_eq!(
        verdict(&broker, Action::Subscribe, "public/#", anon.clone()).await,
        Verdict::Allow
    );
    assert_eq!(
        verdict(&broker, Action::Subscribe, "#", anon).await,
        Verdict::Deny
    );

    // No reason code by default (the broker's 0x87); `deny_reason_code` sets one on every
    // denial, and only denials.
    assert_eq!(decision_code(&broker, "#").await, (Verdict::Deny, None));
    broker
        .describe(json!({
            "subscribe-acl": { "anonymous": ["public/#"] },
            "deny_reason_code": 0x80,
        }))
        .await
        .unwrap();
    assert_eq!(
        decision_code(&broker, "#").await,
        (Verdict::Deny, Some(0x80))
    );
    assert_eq!(
        decision_code(&broker, "public/x").await,
        (Verdict::Allow, None)
    );

    // `unconfigured: allow` gives aMQTT's "no restrictions" for a missing section.
    broker
        .describe(json!({ "acl": { "alice": ["a"] }, "unconfigured": "allow" }))
        .await
        .unwrap();
    assert_eq!(
        verdict(&broker, Action::Publish, "x", Client::new("c3")).await,
        Verdict::Allow
    );
}

#[tokio::test]
async fn bad_configurations_fail_describe() {
    let broker = TestBroker::new(plugin());
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let cases = [
        (json!({ "acl_file": missing }), "missing.yaml"),
        (json!({}), "no ACL"),
        (json!({ "acl_file": missing, "acl": {} }), "not both"),
        (
            json!({ "publish-acl": { "bob": ["a/#/b"] } }),
            "publish-acl.bob[0]",
        ),
        (json!({ "publish_acl": {} }), "unknown field `publish_acl`"),
        (json!({ "cache_ttl_ms": "soon", "acl": {} }), "cache_ttl_ms"),
        (
            json!({ "deny_reason_code": 0x10, "acl": { "a": ["x"] } }),
            "not a failure code",
        ),
    ];
    for (config, needle) in cases {
        let status = broker.describe(config.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{config}");
        assert!(
            status.message().contains(needle),
            "{config}: {}",
            status.message()
        );
    }
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "subscribe-acl:\n  alice:\n    - ok/#\n    - a+\n").unwrap();
    let status = broker
        .describe(json!({ "acl_file": bad }))
        .await
        .unwrap_err();
    let message = status.message();
    assert!(
        message.contains("bad.yaml")
            && message.contains("subscribe-acl.alice[1]")
            && message.contains("(line 4)"),
        "{message}"
    );
}

/// Waits (up to 10 s) until `verdict` of publishing `topic` as `alice` is `want`.
async fn eventually_verdict(broker: &TestBroker, topic: &str, want: Verdict) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let alice = Client::new("c1").with_username("alice");
    loop {
        if verdict(broker, Action::Publish, topic, alice.clone()).await == want {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Everything the plugin logs in this test process (the watcher logs from its own thread).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Appends to [`LOGS`].
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the plugin's logs to [`LOGS`] from now on (once per test process).
fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tandem_plugin::tracing::Level::INFO)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Waits (up to 10 s) until one line the plugin logged contains every one of `needles`.
async fn wait_logged(needles: &[&str]) {
    capture_logs();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = String::from_utf8_lossy(&LOGS.lock().unwrap())
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)));
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "never logged: {needles:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn the_file_is_reloaded_and_a_bad_version_keeps_the_last_good_acl() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl.yaml");
    std::fs::write(&file, "publish-acl: { alice: [one] }\n").unwrap();
    capture_logs();
    let broker = TestBroker::new(plugin());
    broker.describe(json!({ "acl_file": file })).await.unwrap();
    eventually_verdict(&broker, "one", Verdict::Allow).await;

    // Written in place.
    std::fs::write(&file, "publish-acl: { alice: [two] }\n").unwrap();
    eventually_verdict(&broker, "two", Verdict::Allow).await;
    assert_eq!(
        verdict(
            &broker,
            Action::Publish,
            "one",
            Client::new("c").with_username("alice")
        )
        .await,
        Verdict::Deny
    );

    // Replaced by rename, as editors do.
    write_atomically(&file, "publish-acl: { alice: [three] }\n");
    eventually_verdict(&broker, "three", Verdict::Allow).await;

    // A broken version is refused (the last good ACL stays: see watch.rs), and a fixed one loads.
    // The verdict is asked once the watcher has read the broken version and said so.
    write_atomically(&file, "publish-acl: { alice: [\"bad/#/x\"] }\n");
    let path = file.display().to_string();
    wait_logged(&[
        "the ACL file is invalid; keeping the last good ACL",
        path.as_str(),
    ])
    .await;
    assert_eq!(
        verdict(
            &broker,
            Action::Publish,
            "three",
            Client::new("c").with_username("alice")
        )
        .await,
        Verdict::Allow
    );
    write_atomically(&file, "publish-acl: { alice: [four] }\n");
    eventually_verdict(&broker, "four", Verdict::Allow).await;
}

/// A Kubernetes ConfigMap volume: `acl.yaml -> ..data/acl.yaml`, `..data -> ..<timestamp>`, and
/// an update swaps `..data` to a new directory by renaming a new symlink over it.
#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2026_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("acl.yaml"), "publish-acl: { alice: [v1] }\n").unwrap();
    symlink("..2026_01", root.join("..data")).unwrap();
    symlink("..data/acl.yaml", root.join("acl.yaml")).unwrap();

    let broker = TestBroker::new(plugin());
    broker
        .describe(json!({ "acl_file": root.join("acl.yaml") }))
        .await
        .unwrap();
    eventually_verdict(&broker, "v1", Verdict::Allow).await;

    let v2 = root.join("..2026_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("acl.yaml"), "publish-acl: { alice: [v2] }\n").unwrap();
    symlink("..2026_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();
    eventually_verdict(&broker, "v2", Verdict::Allow).await;
}
