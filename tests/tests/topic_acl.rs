//! `tandem-topic-acl` (aMQTT's topic ACL) started by the broker (`command:`), with
//! `tandem-policy` as the authentication plugin that sets session attributes: SUBACK codes,
//! dropped publishes, skipped deliveries, `anonymous`, `{attr}` substitution, reload of the
//! ACL file while running, and a broker that refuses to start on a bad ACL file.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{QoS, SubscribeReason};
use tandem_tests::{
    DEADLINE, RawClient, Recv, Tandem, binary, connect_as, connect_packet, policy_bin,
};

const GRANTED: SubscribeReason = SubscribeReason::Granted(QoS::AtLeastOnce);
const REFUSED: SubscribeReason = SubscribeReason::FAILURE;

const ACL: &str = r##"
subscribe-acl:
  alice: ["sensors/#", "a/+", "tenants/{tenant}/#"]
  bob: ["#"]
  anonymous: ["public/#"]
publish-acl:
  alice: ["sensors/alice/#", "tenants/{tenant}/#"]
  bob: ["#"]
  anonymous: ["public/#"]
receive-acl:
  alice: ["sensors/#", "a/#", "tenants/{tenant}/#"]
  bob: ["#"]
  anonymous: ["public/#"]
receive-deny:
  bob: ["sensors/secret"]
"##;

/// The broker's YAML: policy authenticates (alice and bob with attributes, anyone else
/// allowed), the ACL plugin checks topics with the ACL file `acl`.
fn config(dir: &Path, acl: &Path, cache_ttl_ms: u64) -> String {
    config_with(dir, acl, cache_ttl_ms, "30s")
}

/// [`config`] with the ACL plugin's `startup_timeout` (how long the broker retries `Describe`
/// before it gives up, with the plugin's last error).
fn config_with(dir: &Path, acl: &Path, cache_ttl_ms: u64, startup_timeout: &str) -> String {
    let policy = policy_bin();
    let topic_acl = binary("tandem-topic-acl");
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  users:
    endpoint: unix://{d}/users.sock
    command: [{policy}, --roles, auth]
    config:
      users:
        alice: {{ password: pa, attributes: {{ tenant: acme }} }}
        bob: {{ password: pb, attributes: {{ tenant: bobco }} }}
      auth_default: allow
  acl:
    endpoint: unix://{d}/acl.sock
    # Its log goes to stderr, which it shares with the broker: the harness reads both.
    command: [{topic_acl}]
    startup_timeout: {startup_timeout}
    config:
      acl_file: {acl}
      cache_ttl_ms: {cache_ttl_ms}
auth:
  plugins: [users]
topic-check:
  enable: true
  plugins: [acl]
"##,
        d = dir.display(),
        policy = policy.display(),
        topic_acl = topic_acl.display(),
        acl = acl.display(),
    )
}

/// Starts the broker with `acl` as the ACL file; returns it with the directory holding the
/// sockets and the file (kept for the broker's life).
fn start(acl: &str, cache_ttl_ms: u64) -> (Tandem, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl.yaml");
    std::fs::write(&file, acl).unwrap();
    let broker = Tandem::start_config(&config(dir.path(), &file, cache_ttl_ms));
    (broker, dir)
}

async fn anonymous(broker: &Tandem, client_id: &str) -> RawClient {
    let (client, ack) =
        RawClient::connect_with(broker.addr, connect_packet(client_id, true, 0)).await;
    assert_eq!(ack.reason, tandem_broker::protocol::ConnectReason::Success);
    client
}

/// Every payload `client` receives up to and including `last`.
async fn received_until(client: &mut RawClient, last: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    loop {
        let p = client.recv_publish().await;
        let done = p.payload[..] == *last;
        got.push((p.topic.to_string(), p.payload.to_vec()));
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn subscribe_publish_and_receive_follow_the_acl() {
    let (broker, _dir) = start(ACL, 30_000);
    let a = broker.addr;
    let mut alice = connect_as(a, "alice", "alice", "pa").await.unwrap();
    let ack = alice
        .subscribe_many(&[
            ("sensors/#", QoS::AtLeastOnce),
            ("a/b", QoS::AtLeastOnce),
            ("a/+", QoS::AtLeastOnce),
            ("a/#", QoS::AtLeastOnce),
            ("public/#", QoS::AtLeastOnce),
            ("#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![GRANTED, GRANTED, GRANTED, REFUSED, REFUSED, REFUSED],
        "a/+ in the ACL grants a/b and a/+ but not a/#; no rule for public/# or #"
    );
    let mut bob = connect_as(a, "bob", "bob", "pb").await.unwrap();
    assert_eq!(
        bob.subscribe("#", QoS::AtLeastOnce).await.reasons,
        vec![GRANTED]
    );

    alice
        .publish("sensors/alice/1", b"1", QoS::AtLeastOnce, false)
        .await;
    // Denied publish: dropped (still acknowledged), nobody gets it.
    alice
        .publish("sensors/bob/1", b"2", QoS::AtLeastOnce, false)
        .await;
    // bob may publish anywhere; alice may receive it, bob's receive-deny skips him.
    bob.publish("sensors/secret", b"3", QoS::AtLeastOnce, false)
        .await;
    // a/x reaches alice through a/+ (her receive-acl has a/#).
    bob.publish("a/x", b"4", QoS::AtLeastOnce, false).await;
    bob.publish("sensors/end", b"end", QoS::AtLeastOnce, false)
        .await;

    let bob_got: Vec<Vec<u8>> = received_until(&mut bob, b"end")
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(bob_got, vec![b"1".to_vec(), b"4".to_vec(), b"end".to_vec()]);
    let alice_got: Vec<Vec<u8>> = received_until(&mut alice, b"end")
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        alice_got,
        vec![b"1".to_vec(), b"3".to_vec(), b"4".to_vec(), b"end".to_vec()]
    );
    assert!(
        broker
            .wait_log_all(&["plugin=acl", "topic check denied"], DEADLINE)
            .is_some(),
        "denials are logged with the plugin's alias"
    );
    // A PUBLISH denial (one per client packet) at info; a RECEIVE denial (one per message
    // a subscriber is not given: a subscriber to `#` could flood the log) at debug.
    let publish = broker
        .wait_log_all(&["topic check denied", "ACTION_PUBLISH"], DEADLINE)
        .expect("the publish denial is logged");
    assert!(publish.contains(" INFO "), "{publish}");
    let receive = broker
        .wait_log_all(&["topic check denied", "ACTION_RECEIVE"], DEADLINE)
        .expect("the receive denial is logged");
    assert!(receive.contains("DEBUG "), "{receive}");
}

#[tokio::test]
async fn anonymous_entry_and_attribute_substitution() {
    let (broker, _dir) = start(ACL, 30_000);
    let a = broker.addr;
    let mut anon = anonymous(&broker, "anon").await;
    let ack = anon
        .subscribe_many(&[
            ("public/#", QoS::AtLeastOnce),
            ("sensors/#", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![GRANTED, REFUSED],
        "no username: the anonymous entry"
    );
    // A named user without an entry may do nothing.
    let mut carol = connect_as(a, "carol", "carol", "x").await.unwrap();
    assert_eq!(
        carol.subscribe("public/#", QoS::AtLeastOnce).await.reasons,
        vec![REFUSED]
    );

    // {tenant} is the session attribute policy set: acme for alice, bobco for bob.
    let mut alice = connect_as(a, "alice", "alice", "pa").await.unwrap();
    let ack = alice
        .subscribe_many(&[
            ("tenants/acme/#", QoS::AtLeastOnce),
            ("tenants/bobco/#", QoS::AtLeastOnce),
            ("tenants/+/x", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(ack.reasons, vec![GRANTED, REFUSED, REFUSED]);
    alice
        .publish("tenants/acme/x", b"own", QoS::AtLeastOnce, false)
        .await;
    alice
        .publish("tenants/bobco/x", b"other", QoS::AtLeastOnce, false)
        .await;
    anon.publish("public/x", b"pub", QoS::AtLeastOnce, false)
        .await;
    alice
        .publish("tenants/acme/end", b"end", QoS::AtLeastOnce, false)
        .await;
    let got = received_until(&mut alice, b"end").await;
    assert_eq!(
        got,
        vec![
            ("tenants/acme/x".to_owned(), b"own".to_vec()),
            ("tenants/acme/end".to_owned(), b"end".to_vec())
        ]
    );
    assert_eq!(anon.recv_publish().await.payload.to_vec(), b"pub".to_vec());
    carol.ping().await;
}

#[tokio::test]
async fn an_edited_acl_file_applies_without_restart() {
    let (broker, dir) = start(ACL, 50);
    let file = dir.path().join("acl.yaml");
    let mut bob = connect_as(broker.addr, "bob", "bob", "pb").await.unwrap();
    assert_eq!(
        bob.subscribe("#", QoS::AtLeastOnce).await.reasons,
        vec![GRANTED]
    );
    let mut anon = anonymous(&broker, "anon").await;
    assert_eq!(
        anon.subscribe("news/#", QoS::AtLeastOnce).await.reasons,
        vec![REFUSED]
    );
    anon.publish("news/1", b"before", QoS::AtLeastOnce, false)
        .await;
    anon.publish("public/end", b"end", QoS::AtLeastOnce, false)
        .await;
    let got: Vec<Vec<u8>> = received_until(&mut bob, b"end")
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        got,
        vec![b"end".to_vec()],
        "news/1 is not in anonymous's publish-acl"
    );

    // Rename-write, as editors and config management do.
    let edited = ACL.replace(
        r#"anonymous: ["public/#"]"#,
        r#"anonymous: ["public/#", "news/#"]"#,
    );
    let tmp = dir.path().join("acl.yaml.tmp");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &file).unwrap();

    // Publish until the new rule lets one through (the decision cache holds 50 ms).
    let deadline = Instant::now() + DEADLINE;
    let mut n = 0u32;
    'outer: loop {
        assert!(Instant::now() < deadline, "the edited ACL never applied");
        n += 1;
        anon.publish(
            "news/1",
            format!("after {n}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
        while let Recv::Packet(p) = bob.recv_within(Duration::from_millis(100)).await {
            if let tandem_broker::protocol::Packet::Publish(p) = p
                && p.topic.starts_with("news/")
            {
                break 'outer;
            }
        }
    }
    assert_eq!(
        anon.subscribe("news/#", QoS::AtLeastOnce).await.reasons,
        vec![GRANTED]
    );

    // A broken edit is refused and the last good ACL stays in force: checked once the
    // plugin has read the broken version and said so (its stderr is the broker's).
    let tmp = dir.path().join("acl.yaml.tmp");
    std::fs::write(&tmp, "subscribe-acl: { anonymous: [\"news/#/x\"] }\n").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    broker
        .wait_log_all(
            &[
                "the ACL file is invalid; keeping the last good ACL",
                "news/#/x",
            ],
            DEADLINE,
        )
        .unwrap_or_else(|| {
            panic!(
                "the plugin never reported the broken file:\n{}",
                broker.logs().join("\n")
            )
        });
    let mut late = anonymous(&broker, "late").await;
    assert_eq!(
        late.subscribe("news/#", QoS::AtLeastOnce).await.reasons,
        vec![GRANTED]
    );
}

#[test]
fn a_malformed_acl_file_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken-acl.yaml");
    std::fs::write(&file, "subscribe-acl:\n  alice: [\"ok/#\", \"a/#/b\"]\n").unwrap();
    let stderr =
        Tandem::expect_startup_failure(&config_with(dir.path(), &file, 1000, "2s"), 3 * DEADLINE);
    assert!(
        stderr.contains("broken-acl.yaml"),
        "the error names the file:\n{stderr}"
    );
    assert!(
        stderr.contains("a/#/b"),
        "the error names the filter:\n{stderr}"
    );
    assert!(
        stderr.contains("(line 2)"),
        "the error names the line:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    eprintln!("{stderr}");

    let missing = dir.path().join("missing-acl.yaml");
    let stderr = Tandem::expect_startup_failure(
        &config_with(dir.path(), &missing, 1000, "2s"),
        3 * DEADLINE,
    );
    assert!(
        stderr.contains("missing-acl.yaml"),
        "the error names the file:\n{stderr}"
    );
}

/// The Paho interoperability suite's topics with `examples/topic-acl/paho.acl.yaml`, for a
/// client without a username: only `test/nosubscribe` is refused.
#[tokio::test]
async fn the_paho_acl_refuses_only_test_nosubscribe() {
    let acl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/topic-acl/paho.acl.yaml"),
    )
    .unwrap();
    let (broker, _dir) = start(&acl, 30_000);
    let mut client = anonymous(&broker, "myclientid").await;
    let filters = [
        "TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA", "TopicA/+", "+/C", "#", "/#", "/+",
        "+/+", "TopicA/#",
    ];
    for filter in filters {
        assert_eq!(
            client.subscribe(filter, QoS::ExactlyOnce).await.reasons,
            vec![SubscribeReason::Granted(QoS::ExactlyOnce)],
            "{filter}"
        );
    }
    assert_eq!(
        client
            .subscribe("test/nosubscribe", QoS::ExactlyOnce)
            .await
            .reasons,
        vec![REFUSED]
    );
    // A shared subscription is checked on its inner filter: what its member receives.
    assert_eq!(
        client
            .subscribe("$share/g/TopicA/#", QoS::ExactlyOnce)
            .await
            .reasons,
        vec![SubscribeReason::Granted(QoS::ExactlyOnce)]
    );
    assert_eq!(
        client
            .subscribe("$share/g/test/nosubscribe", QoS::ExactlyOnce)
            .await
            .reasons,
        vec![REFUSED]
    );
    let mut other = anonymous(&broker, "myclientid2").await;
    assert_eq!(
        other.subscribe("+/+", QoS::AtLeastOnce).await.reasons,
        vec![GRANTED]
    );
    client
        .publish("TopicA/B", b"x", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(other.recv_publish().await.topic.to_string(), "TopicA/B");
}
