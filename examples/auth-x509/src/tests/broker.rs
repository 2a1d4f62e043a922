//! The plugin as the broker sees it: `Describe` (fail closed), `Authenticate` with real client
//! certificates in the TLS details, `TopicFilter` on the identity it established, and reloads.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_plugin::serde_json::json;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::tonic::Code;
use tandem_plugin::{
    Action, AuthDecision, AuthRequest, Client, Role, TlsInfo, TopicRequest, Verdict,
};

use super::certs::{Alt, der, tls};
use crate::plugin;

const RULES: &str = r##"
clients:
  - match: { common_name: "device-*" }
    identity: "{cn}"
    attributes: { tenant: acme }
  - match: { san: "dns:sensor-*.example.com" }
    identity: "{san_dns}"
acl:
  - identity: "device-*"
    publish: ["devices/{identity}/telemetry/#"]
    subscribe: ["devices/{identity}/commands/#"]
cache_ttl: 10s
"##;

/// A test broker described with the rules file `text` (written under `dir`).
async fn broker_with(dir: &Path, text: &str) -> TestBroker {
    let file = dir.join("x509.yaml");
    std::fs::write(&file, text).unwrap();
    let broker = TestBroker::new(plugin(&[Role::Authenticate, Role::TopicFilter]));
    let description = broker
        .describe(json!({ "rules_file": file }))
        .await
        .unwrap();
    assert_eq!(description.roles.len(), 2, "both roles from one process");
    broker
}

fn connect_with(tls: Option<TlsInfo>) -> AuthRequest {
    AuthRequest {
        tls,
        transport: "tls".into(),
        ..AuthRequest::new("c1")
    }
}

async fn auth(broker: &TestBroker, tls: Option<TlsInfo>) -> AuthDecision {
    broker.authenticate(connect_with(tls)).await.unwrap()
}

async fn topic(broker: &TestBroker, action: Action, topic: &str, client: &Client) -> Verdict {
    let decision = broker
        .topic_filter(TopicRequest::new(action, topic, client.clone()))
        .await
        .unwrap();
    decision.verdict
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn a_certificate_becomes_an_identity_with_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), RULES).await;

    let d17 = tls(der(&["device-17"], &[]), "CN=device-17,O=Acme");
    let allowed = auth(&broker, Some(d17.clone())).await;
    assert_eq!(allowed.verdict, Verdict::Allow, "{}", allowed.reason);
    assert_eq!(allowed.identity.as_deref(), Some("device-17"));
    assert_eq!(
        allowed.attributes.get("tenant").map(String::as_str),
        Some("acme")
    );

    // An MQTT 5 re-authentication carries the same TLS details: the same answer.
    let again = broker
        .authenticate(AuthRequest {
            reauthentication: true,
            ..connect_with(Some(d17))
        })
        .await
        .unwrap();
    assert_eq!(
        (again.verdict, again.identity.as_deref()),
        (Verdict::Allow, Some("device-17"))
    );

    // SANs are read from the certificate with their types, whatever text the broker sent.
    let sensor = TlsInfo {
        peer_sans: vec!["DNS:sensor-3.example.com".into()],
        ..tls(der(&[], &[Alt::Dns("sensor-3.example.com")]), "O=Acme")
    };
    let allowed = auth(&broker, Some(sensor)).await;
    assert_eq!(allowed.identity.as_deref(), Some("sensor-3.example.com"));
    let lookalike = tls(
        der(&["sensor"], &[Alt::Email("sensor-3.example.com")]),
        "CN=sensor,O=Acme",
    );
    let denied = auth(&broker, Some(lookalike)).await;
    assert_eq!(denied.verdict, Verdict::Deny);
    assert!(
        denied.reason.contains("no clients entry"),
        "{}",
        denied.reason
    );
    assert_eq!(
        denied.client_reason.as_deref(),
        Some("the client certificate is not authorized"),
        "the client learns nothing of the rules"
    );

    // Topic checks are keyed on the identity the broker sends back, and cached.
    let me = Client::new("c1").with_username("device-17");
    let decision = broker
        .topic_filter(TopicRequest::new(
            Action::Publish,
            "devices/device-17/telemetry/temp",
            me.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(decision.cache_ttl, Duration::from_secs(10));
    let sub = |f: &'static str| topic(&broker, Action::Subscribe, f, &me);
    assert_eq!(sub("devices/device-17/commands/#").await, Verdict::Allow);
    assert_eq!(sub("devices/+/commands/#").await, Verdict::Deny);
    assert_eq!(sub("#").await, Verdict::Deny);
    assert_eq!(
        topic(
            &broker,
            Action::Receive,
            "devices/device-17/commands/reboot",
            &me
        )
        .await,
        Verdict::Allow
    );
    let other = Client::new("c2").with_username("device-18");
    assert_eq!(
        topic(
            &broker,
            Action::Publish,
            "devices/device-17/telemetry/t",
            &other
        )
        .await,
        Verdict::Deny
    );
    // The sensor has no acl entry: denied by default.
    let sensor = Client::new("c3").with_username("sensor-3.example.com");
    assert_eq!(
        topic(&broker, Action::Publish, "x", &sensor).await,
        Verdict::Deny
    );
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn without_a_certificate_deny_or_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with(dir.path(), RULES).await;
    let no_cert = TlsInfo {
        tls_version: Some("TLSv1.3".into()),
        ..TlsInfo::default()
    };
    for tls in [None, Some(no_cert.clone())] {
        let denied = auth(&broker, tls).await;
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(
            denied.client_reason.as_deref(),
            Some("a client certificate is required")
        );
    }
    // A broker that sends the text fields without the certificate: there is none to trust.
    let text_only = TlsInfo {
        peer_subject: Some("CN=device-1".into()),
        peer_sans: vec!["DNS:sensor-1.example.com".into()],
        ..no_cert.clone()
    };
    assert_eq!(auth(&broker, Some(text_only)).await.verdict, Verdict::Deny);

    let broker = broker_with(
        dir.path(),
        &format!("no_certificate: ignore\nunmatched_identity: ignore\n{RULES}"),
    )
    .await;
    for tls in [None, Some(no_cert)] {
        let ignored = auth(&broker, tls).await;
        assert_eq!(ignored.verdict, Verdict::Abstain, "a later plugin decides");
    }
    // A certificate the rules do not know is still denied (`unmatched_certificate: deny`).
    let unknown = tls(der(&["stranger"], &[]), "CN=stranger");
    assert_eq!(auth(&broker, Some(unknown)).await.verdict, Verdict::Deny);
    // An identity established by another plugin (a password user): no opinion.
    let alice = Client::new("c").with_username("alice");
    assert_eq!(
        topic(&broker, Action::Publish, "x", &alice).await,
        Verdict::Abstain
    );
    // An unreadable certificate is denied whatever `no_certificate` says.
    let garbage = tls(b"garbage".to_vec(), "CN=device-1");
    assert_eq!(auth(&broker, Some(garbage)).await.verdict, Verdict::Deny);
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn bad_configurations_fail_describe() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::new(plugin(&[Role::Authenticate, Role::TopicFilter]));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "clients: [ { match: { san: nope } } ]\n").unwrap();
    let cases = [
        (json!({}), "no rules file"),
        (
            json!({ "rules_file": dir.path().join("missing.yaml") }),
            "missing.yaml",
        ),
        (json!({ "rules_file": bad }), "clients[0].match"),
        (json!({ "rules": "x" }), "unknown field `rules`"),
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
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn the_rules_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x509.yaml");
    let broker = broker_with(dir.path(), RULES).await;
    let d1 = || Some(tls(der(&["device-1"], &[]), "CN=device-1"));
    assert_eq!(auth(&broker, d1()).await.verdict, Verdict::Allow);

    // Replaced by rename, as editors do: device-* no longer listed.
    let replace = |text: &str| {
        let tmp = dir.path().join("x509.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    replace("clients: [ { match: { common_name: \"gw-*\" } } ]\n");
    eventually(|| async { auth(&broker, d1()).await.verdict == Verdict::Deny }).await;

    // Written in place (a broken version keeping the last good rules is in `rules.rs`).
    std::fs::write(
        &file,
        "clients: [ { match: { common_name: \"device-*\" } } ]\n",
    )
    .unwrap();
    eventually(|| async { auth(&broker, d1()).await.verdict == Verdict::Allow }).await;
}

/// Waits (up to 10 s) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out");
        tandem_plugin::tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
