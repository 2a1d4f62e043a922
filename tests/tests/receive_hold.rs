//! A topic plugin that is down does not cost acknowledged messages: a QoS 1/2 delivery
//! whose RECEIVE check fails with a plugin error (not a DENY) is held, in order, and
//! checked again until the plugin answers or `topic-check.hold` runs out; a persistent
//! session resuming meanwhile gets its backlog once the plugin is back. Nothing is ever
//! delivered unchecked.
//!
//! The plugin (`tandem-policy`, topic role) is started by the test, so the test decides
//! when it is down and when it is back. Its decisions are cached for a minute: the
//! publisher's PUBLISH checks, made once before the kill, stay allowed from its cache,
//! while the subscriber's RECEIVE checks (never made before) reach the dead plugin.

use std::path::{Path, PathBuf};

use tandem_broker::protocol::QoS;
use tandem_tests::probe::wait_series;
use tandem_tests::{
    DEADLINE, PluginProcess, RawClient, Tandem, connect_packet, eventually, policy_bin,
};

const TOPICS: [&str; 5] = ["t/1", "t/2", "t/3", "t/4", "t/5"];

/// The broker's YAML: one topic plugin at `socket`, not started by the broker, found
/// again quickly once it is back (`max_backoff`), and `hold` as the hold time.
fn config(socket: &Path, hold: &str) -> String {
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
admin: {{ bind: 127.0.0.1:0 }}
plugins:
  acl:
    endpoint: unix://{socket}
    timeout: 200ms
    max_backoff: 200ms
    startup_timeout: 10s
    config:
      rules:
        - {{ action: any, filter: "t/#", verdict: allow }}
        - {{ action: any, filter: "marker", verdict: allow }}
      topic_default: deny
      cache_ttl_ms: 60000
topic-check:
  plugins: [acl]
  hold: {hold}
"##,
        socket = socket.display()
    )
}

fn start_plugin(socket: &Path) -> PluginProcess {
    PluginProcess::start(
        &policy_bin(),
        &["--roles", "topic"],
        &format!("unix://{}", socket.display()),
    )
}

/// What every test starts from: the plugin up, the broker using it with `hold`, and the
/// publisher, its PUBLISH decisions for every topic (and the marker) cached while the
/// plugin is up. Fields drop in this order: the client, the broker, then the plugin.
struct Setup {
    publisher: RawClient,
    broker: Tandem,
    plugin: PluginProcess,
    /// The plugin's socket, to start it again at the same place.
    socket: PathBuf,
    /// Holds the plugin's socket.
    _dir: tempfile::TempDir,
}

async fn setup(hold: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("acl.sock");
    let plugin = start_plugin(&socket);
    let broker = Tandem::start_config(&config(&socket, hold));
    let mut publisher = RawClient::connect(broker.addr, "publisher").await;
    for t in TOPICS.iter().chain(&["marker"]) {
        publisher
            .publish(t, b"warm-up", QoS::AtLeastOnce, false)
            .await;
    }
    Setup {
        publisher,
        broker,
        plugin,
        socket,
        _dir: dir,
    }
}

/// Subscribes `sub` to every test topic and to the marker, at QoS 1.
async fn subscribe(sub: &mut RawClient) {
    sub.subscribe("t/#", QoS::AtLeastOnce).await;
    sub.subscribe("marker", QoS::AtLeastOnce).await;
}

/// Acknowledges and collects every PUBLISH up to and including the one on `marker`;
/// returns (topic, payload) pairs in arrival order.
async fn collect_until_marker(sub: &mut RawClient) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        sub.ack(&p).await;
        if &p.topic[..] == "marker" {
            return got;
        }
        got.push((
            p.topic.to_string(),
            String::from_utf8_lossy(&p.payload).into_owned(),
        ));
    }
}

fn expected(tag: &str) -> Vec<(String, String)> {
    TOPICS
        .iter()
        .map(|t| (t.to_string(), format!("{tag} {t}")))
        .collect()
}

#[tokio::test]
async fn acknowledged_messages_wait_for_a_restarted_receive_plugin_and_arrive_once_in_order() {
    let mut s = setup("30s").await;
    let admin = s.broker.admin_addr();
    let mut sub = RawClient::connect(s.broker.addr, "sub").await;
    subscribe(&mut sub).await;

    s.plugin.kill();
    // QoS 1 and 2, each acknowledged by the broker (PUBACK / PUBCOMP) while the plugin
    // is down.
    for (i, t) in TOPICS.iter().enumerate() {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        s.publisher
            .publish(t, format!("down {t}").as_bytes(), qos, false)
            .await;
    }
    s.broker
        .wait_log("holding the delivery", DEADLINE)
        .expect("the first delivery is held, not dropped");
    wait_series(admin, "tandem_messages_held_total", |v| v >= 1.0).await;
    // Held is not stuck: the connection still reads and answers.
    sub.ping().await;

    let _plugin = start_plugin(&s.socket);
    s.publisher
        .publish("marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let got = collect_until_marker(&mut sub).await;
    assert_eq!(got, expected("down"), "every message once, in order");
}

#[tokio::test]
async fn a_persistent_session_resuming_while_the_plugin_is_down_gets_its_backlog_once_it_is_back() {
    let mut s = setup("30s").await;

    let (mut sub, _) =
        RawClient::connect_with(s.broker.addr, connect_packet("sub", false, 0)).await;
    subscribe(&mut sub).await;
    sub.disconnect().await;
    for t in TOPICS {
        s.publisher
            .publish(
                t,
                format!("offline {t}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }

    s.plugin.kill();
    let (mut sub, ack) =
        RawClient::connect_with(s.broker.addr, connect_packet("sub", false, 0)).await;
    assert!(ack.session_present);
    s.broker
        .wait_log("holding the delivery", DEADLINE)
        .expect("the backlog is held, not dropped");

    let _plugin = start_plugin(&s.socket);
    s.publisher
        .publish("marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let got = collect_until_marker(&mut sub).await;
    assert_eq!(
        got,
        expected("offline"),
        "the whole backlog, once, in order"
    );
}

#[tokio::test]
async fn a_held_delivery_is_dropped_and_counted_when_the_hold_runs_out_never_delivered_unchecked() {
    let mut s = setup("1s").await;
    let admin = s.broker.admin_addr();
    let mut sub = RawClient::connect(s.broker.addr, "sub").await;
    subscribe(&mut sub).await;

    s.plugin.kill();
    s.publisher
        .publish("t/1", b"lost", QoS::AtLeastOnce, false)
        .await;
    wait_series(
        admin,
        "tandem_messages_dropped_total{reason=\"hold_expired\"}",
        |v| v >= 1.0,
    )
    .await;
    s.broker
        .wait_log("kept failing for topic-check.hold", DEADLINE)
        .expect("the drop is logged");
    // Still down: a QoS 0 delivery follows on_error (deny) at once; nothing arrives.
    s.publisher
        .publish("t/2", b"qos0", QoS::AtMostOnce, false)
        .await;

    let _plugin = start_plugin(&s.socket);
    eventually("the s.broker found the plugin again", || {
        s.broker.count_log("replica up") >= 2
    })
    .await;
    // Once the plugin answers again, deliveries flow: the next message arrives, and it
    // is the first thing the subscriber sees (neither the expired one nor the QoS 0).
    s.publisher
        .publish("t/3", b"after", QoS::AtLeastOnce, false)
        .await;
    s.publisher
        .publish("marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let got = collect_until_marker(&mut sub).await;
    assert_eq!(got, vec![("t/3".to_string(), "after".to_string())]);
}
