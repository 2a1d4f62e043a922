//! A will is checked like a PUBLISH made when it is published: against the plugin set
//! in force then (after any reload), with the real clock for cached decisions (not the
//! time the client last sent something), and under the `$SYS/` rule.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{Connect, LastWill, QoS};
use tandem_tests::{DEADLINE, RawClient, Tandem, binary, connect_packet, policy_bin};

fn with_will(id: &str, topic: &str, retain: bool) -> Connect {
    let mut c = connect_packet(id, true, 0);
    c.will = Some(LastWill {
        topic: topic.into(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain,
        properties: None,
    });
    c
}

/// Waits for the broker's handling of `client_id`'s will: the will published, dropped,
/// or denied by the chain (whichever this build does). Returns the line.
fn will_handled(broker: &Tandem, client_id: &str) -> String {
    let id = format!("client_id={client_id}");
    broker
        .wait_log_where(
            |l| {
                l.contains(&id)
                    && (l.contains("publishing will")
                        || l.contains("dropping the will")
                        || l.contains("topic check denied"))
            },
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("the will of {client_id} was never handled"))
}

/// Every (topic, payload) `watcher` receives (acknowledged) before the PUBLISH on
/// `marker`, which `marker_client` sends now.
async fn received_before_marker(
    watcher: &mut RawClient,
    marker_client: &mut RawClient,
) -> Vec<(String, String)> {
    marker_client
        .publish("marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let mut got = Vec::new();
    loop {
        let p = watcher.recv_publish().await;
        watcher.ack(&p).await;
        if &p.topic[..] == "marker" {
            return got;
        }
        got.push((
            p.topic.to_string(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
}

/// What the idle-client tests start from: the broker on `yaml`, a watcher of `wills/#`
/// and `marker`, and the idle client with a will on `wills/idle`, which has published
/// there once (allowed, the decision cached) and will send nothing more.
struct IdleWill {
    broker: Tandem,
    watcher: RawClient,
    idle: RawClient,
    /// When the idle client's one PUBLISH was acknowledged (its decision cached).
    cached_at: Instant,
}

async fn setup(yaml: &str) -> IdleWill {
    let broker = Tandem::start_config(yaml);
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    watcher.subscribe("marker", QoS::AtLeastOnce).await;

    let (mut idle, _) =
        RawClient::connect_with(broker.addr, with_will("idle", "wills/idle", false)).await;
    idle.publish("wills/idle", b"alive", QoS::AtLeastOnce, false)
        .await;
    let cached_at = Instant::now();
    let p = watcher.recv_publish().await;
    assert_eq!(&p.payload[..], b"alive");
    watcher.ack(&p).await;
    IdleWill {
        broker,
        watcher,
        idle,
        cached_at,
    }
}

#[tokio::test]
async fn a_retained_will_to_sys_never_appears() {
    let broker = Tandem::start("sys: { enable: true, interval: 1s }\n");
    let (forger, _) =
        RawClient::connect_with(broker.addr, with_will("forger", "$SYS/x", true)).await;
    drop(forger);
    will_handled(&broker, "forger");
    // The first statistics round has run (the broker's retained `$SYS` messages exist):
    // a client fast enough to subscribe before it would see that round live.
    let mut first = RawClient::connect(broker.addr, "first-round").await;
    first.subscribe("$SYS/broker/uptime", QoS::AtMostOnce).await;
    first.recv_publish().await;

    // Every retained `$SYS` message comes right after the SUBACK; the first live one
    // (retain flag clear, from the next statistics round) marks the end of them.
    let mut reader = RawClient::connect(broker.addr, "reader").await;
    reader.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let mut retained = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let p = reader.recv_publish().await;
        if !p.retain {
            break;
        }
        retained.push(p.topic.to_string());
        assert!(Instant::now() < deadline, "no live $SYS message");
    }
    assert!(
        retained.iter().any(|t| t.starts_with("$SYS/broker/")),
        "the broker's own retained statistics are there: {retained:?}"
    );
    assert!(
        !retained.iter().any(|t| t == "$SYS/x"),
        "a client's will wrote $SYS/x: {retained:?}"
    );
    broker
        .wait_log("dropping the will", DEADLINE)
        .expect("the dropped will is logged");
}

/// `tandem-topic-acl` started by the broker on the ACL file `acl`, decisions cached for
/// `cache_ttl_ms`.
fn acl_config(dir: &Path, acl: &Path, cache_ttl_ms: u64) -> String {
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}]
    config:
      acl_file: {acl}
      cache_ttl_ms: {cache_ttl_ms}
topic-check:
  plugins: [acl]
"##,
        d = dir.display(),
        bin = binary("tandem-topic-acl").display(),
        acl = acl.display(),
    )
}

const OPEN_ACL: &str = r##"
subscribe-acl: { anonymous: ["#"] }
publish-acl: { anonymous: ["wills/#", "marker"] }
receive-acl: { anonymous: ["#"] }
"##;

#[tokio::test]
async fn an_idle_clients_cached_allow_expires_before_its_will_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(&acl, OPEN_ACL).unwrap();
    let ttl = Duration::from_millis(500);
    // The client publishes to its will topic once (allowed, cached for the TTL), then
    // sends nothing more.
    let IdleWill {
        broker,
        mut watcher,
        idle,
        cached_at,
    } = setup(&acl_config(dir.path(), &acl, ttl.as_millis() as u64)).await;

    // The policy changes in the plugin alone (no broker reload): wills/ is no longer
    // publishable. A fresh connection (no cached decisions) probes until the plugin
    // denies it.
    let tmp = dir.path().join("acl.yaml.tmp");
    std::fs::write(&tmp, OPEN_ACL.replace(r#""wills/#", "#, "")).unwrap();
    std::fs::rename(&tmp, &acl).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut probe = RawClient::connect(broker.addr, "probe").await;
        probe
            .publish("wills/probe", b"probe", QoS::AtLeastOnce, false)
            .await;
        let through = received_before_marker(&mut watcher, &mut probe).await;
        probe.disconnect().await;
        if through.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the edited ACL never applied");
    }
    // The cached ALLOW is past its TTL (twice over) when the will is checked.
    if let Some(left) = (2 * ttl).checked_sub(cached_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    drop(idle);
    will_handled(&broker, "idle");

    let mut marker = RawClient::connect(broker.addr, "marker-client").await;
    let got = received_before_marker(&mut watcher, &mut marker).await;
    assert_eq!(
        got,
        Vec::<(String, String)>::new(),
        "the will was published on a decision past its TTL"
    );
}

/// `tandem-policy` started by the broker, allowing PUBLISH on `wills/#` unless `deny`,
/// decisions cached for a minute.
fn policy_config(dir: &Path, deny: bool) -> String {
    let verdict = if deny { "deny" } else { "allow" };
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}, --roles, topic]
    config:
      rules:
        - {{ action: publish, filter: "wills/#", verdict: {verdict} }}
      topic_default: allow
      cache_ttl_ms: 60000
topic-check:
  plugins: [acl]
"##,
        d = dir.display(),
        bin = policy_bin().display(),
    )
}

#[tokio::test]
async fn a_reload_that_denies_the_will_topic_stops_the_will_of_an_idle_client() {
    let dir = tempfile::tempdir().unwrap();
    let IdleWill {
        broker,
        mut watcher,
        idle,
        ..
    } = setup(&policy_config(dir.path(), false)).await;

    broker.reload(&policy_config(dir.path(), true));
    broker
        .wait_log("configuration reloaded", DEADLINE)
        .expect("the reload is applied");
    // The idle client sent nothing since: its connection never looked at the new set.
    drop(idle);
    will_handled(&broker, "idle");

    let mut marker = RawClient::connect(broker.addr, "marker-client").await;
    let got = received_before_marker(&mut watcher, &mut marker).await;
    assert_eq!(
        got,
        Vec::<(String, String)>::new(),
        "the will was published under the policy the reload replaced"
    );
}
