//! A reload that tightens the topic rules revokes what they now deny: every
//! subscription of connected and parked sessions is checked again with SUBSCRIBE by
//! the new topic-check chain, and one it denies is removed before anything more is
//! delivered through it (counted, logged per client). RECEIVE is allowed throughout,
//! so only the revocation can stop the deliveries.

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::probe::metric;
use tandem_tests::{DEADLINE, RawClient, Tandem, connect_packet, log_event, policy_bin};

/// The broker config with the policy plugin as the topic check; `deny_subscribe`
/// filters may no longer be subscribed, everything else is allowed.
fn config(dir: &std::path::Path, deny_subscribe: &[&str]) -> String {
    let rules: String = deny_subscribe
        .iter()
        .map(|f| format!("        - {{ action: subscribe, filter: \"{f}\", verdict: deny, reason: revoked }}\n"))
        .collect();
    format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}
admin: {{ bind: 127.0.0.1:0 }}
plugins:
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
{rules}        - {{ action: any, filter: \"#\", verdict: allow }}
      topic_default: allow
      cache_ttl_ms: 60000
topic-check:
  plugins: [policy]
",
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

/// Publishes each of `topics` and then `marker` (QoS 1), and returns the topics
/// `subscriber` received before the marker.
async fn received_before_marker(
    publisher: &mut RawClient,
    subscriber: &mut RawClient,
    topics: &[&str],
    marker: &str,
) -> Vec<String> {
    for t in topics.iter().chain([&marker]) {
        publisher.publish(t, b"m", QoS::AtLeastOnce, false).await;
    }
    let mut before = Vec::new();
    loop {
        let m = subscriber.recv_publish().await;
        subscriber.ack(&m).await;
        if m.topic[..] == *marker {
            return before;
        }
        before.push(m.topic.to_string());
    }
}

#[tokio::test]
async fn a_reload_revokes_subscriptions_the_new_rules_deny() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&config(dir.path(), &[]));
    let admin = broker.admin_addr();
    let (mut live, _) = RawClient::connect_with(broker.addr, connect_packet("live", true, 0)).await;
    let ack = live
        .subscribe_many(&[("a/#", QoS::AtLeastOnce), ("b/#", QoS::AtLeastOnce)])
        .await;
    assert_eq!(ack.reasons.len(), 2);
    // A parked persistent session with the same subscriptions.
    let (mut parked, _) =
        RawClient::connect_with(broker.addr, connect_packet("parked", false, 0)).await;
    parked
        .subscribe_many(&[("a/#", QoS::AtLeastOnce), ("b/#", QoS::AtLeastOnce)])
        .await;
    parked.disconnect().await;
    let mut publisher = RawClient::connect(broker.addr, "pub").await;
    assert_eq!(
        received_before_marker(&mut publisher, &mut live, &["a/x"], "b/end").await,
        ["a/x"],
        "before the reload a/# delivers"
    );

    broker.reload(&config(dir.path(), &["a/#"]));
    broker
        .wait_log_where(|l| log_event(l, "configuration reloaded", None), DEADLINE)
        .expect("the reload is applied");

    assert_eq!(
        received_before_marker(&mut publisher, &mut live, &["a/x"], "b/end").await,
        Vec::<String>::new(),
        "a/x published after the reload must not be delivered"
    );
    broker
        .wait_log_all(&["subscription revoked", "a/#", "client_id=live"], DEADLINE)
        .expect("the revocation is logged for the client");
    // The parked session is checked when it comes back, before anything is delivered.
    let (mut parked, ack) =
        RawClient::connect_with(broker.addr, connect_packet("parked", false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    assert!(ack.session_present);
    assert_eq!(
        received_before_marker(&mut publisher, &mut parked, &["a/y"], "b/end").await,
        Vec::<String>::new(),
    );
    assert_eq!(
        metric(admin, "tandem_subscriptions_revoked_total").await,
        Some(2.0)
    );
    // Subscribing again is denied by the new rules; what they still allow is kept.
    let ack = live.subscribe("a/#", QoS::AtLeastOnce).await;
    assert_eq!(ack.reasons.len(), 1);
    assert!(
        !matches!(
            ack.reasons[0],
            tandem_broker::protocol::SubscribeReason::Granted(_)
        ),
        "{:?}",
        ack.reasons
    );
}
