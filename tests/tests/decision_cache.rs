//! The per-session decision cache is bounded in memory: its keys are copies of the
//! topics, not slices of the packets they came in (which pinned each denied 1 MB
//! PUBLISH for the entry's TTL), and it holds at most `topic-check.cache.max_bytes` of
//! topics; past that a decision is not cached, counted and logged once.

use std::path::Path;

use tandem_broker::protocol::QoS;
use tandem_tests::probe::{rss_kib, wait_series};
use tandem_tests::{DEADLINE, RawClient, Tandem, policy_bin};

/// `tandem-policy` denying PUBLISH on `big/#`, every decision cached for a minute.
fn config(dir: &Path, cache: &str) -> String {
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
admin: {{ bind: 127.0.0.1:0 }}
plugins:
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
        - {{ action: publish, filter: "big/#", verdict: deny }}
      topic_default: allow
      cache_ttl_ms: 60000
topic-check:
  plugins: [acl]
  cache: {cache}
"##,
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

#[tokio::test]
async fn denied_large_publishes_on_distinct_topics_do_not_pin_their_buffers() {
    const MESSAGES: usize = 300;
    const PAYLOAD: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path(), "{}"));
    let payload = vec![b'x'; PAYLOAD];
    let mut c = RawClient::connect(broker.addr, "big").await;
    // Warm-up: the connection's buffers and the allocator reach their working size.
    for i in 0..10 {
        c.publish(&format!("warm/{i}"), &payload, QoS::AtLeastOnce, false)
            .await;
    }
    let before = rss_kib(broker.pid());
    // Each PUBACK comes after the whole read batch it was in was handled, checks
    // included, so the last one means every decision is cached.
    for i in 0..MESSAGES {
        c.publish(&format!("big/{i}"), &payload, QoS::AtLeastOnce, false)
            .await;
    }
    let after = rss_kib(broker.pid());
    let grew_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "broker RSS {} MiB -> {} MiB after {MESSAGES} denied {PAYLOAD}-byte publishes",
        before / 1024,
        after / 1024
    );
    // Pinned buffers would be at least MESSAGES x PAYLOAD (~286 MiB).
    assert!(
        grew_mib < 64,
        "RSS grew {grew_mib} MiB: cached decisions keep the packets alive"
    );
    // The decisions were cached (and still deny): the chain was asked once per topic.
    let admin = broker.admin_addr();
    wait_series(admin, "tandem_topics_denied_total", |v| {
        v == MESSAGES as f64
    })
    .await;
    c.publish("big/0", b"again", QoS::AtLeastOnce, false).await;
    c.publish("marker", b"m", QoS::AtLeastOnce, false).await;
    wait_series(admin, "tandem_topics_denied_total", |v| {
        v == MESSAGES as f64
    })
    .await;
}

#[tokio::test]
async fn the_cache_is_bounded_in_bytes_counted_and_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    // Room for about 16 topics of 1 KiB.
    let broker = Tandem::start_config(&config(dir.path(), "{ max_bytes: 16384 }"));
    let admin = broker.admin_addr();
    let mut c = RawClient::connect(broker.addr, "long-topics").await;
    let long = "y".repeat(1024);
    for i in 0..40 {
        c.publish(&format!("big/{i:03}/{long}"), b"p", QoS::AtLeastOnce, false)
            .await;
    }
    // 40 - 15 or so were not cached.
    let full = wait_series(admin, "tandem_topic_cache_full_total", |v| v >= 20.0).await;
    assert!(full <= 30.0, "only what did not fit is counted: {full}");
    broker
        .wait_log("topic decision cache full", DEADLINE)
        .expect("logged");
    assert_eq!(broker.count_log("topic decision cache full"), 1, "once");
    // A decision that was not cached is asked again: denied again, counted again.
    c.publish(&format!("big/039/{long}"), b"p", QoS::AtLeastOnce, false)
        .await;
    wait_series(admin, "tandem_topics_denied_total", |v| v == 41.0).await;
}
