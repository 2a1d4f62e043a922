//! Event streams: a real `tandem-event-logger` process started by the broker receives
//! exactly the events of a client session, in order, with the right fields, and only the
//! kinds it asked for.

use std::time::{Duration, Instant};

use tandem_broker::protocol::QoS;
use tandem_tests::{RawClient, Tandem, connect_packet, event_logger_bin, wait_sys};

fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line being written as we read is incomplete: skip what does not parse yet.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until a line satisfies `done`; returns every line.
async fn wait_lines(
    path: &std::path::Path,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + tandem_tests::DEADLINE;
    loop {
        let lines = read_lines(path);
        if lines.iter().any(&done) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "events never arrived: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds_of(lines: &[serde_json::Value], client: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["client_id"] == client)
        .map(|l| l["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_session_produces_exactly_its_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.jsonl");
    let connects = dir.path().join("connects.jsonl");
    let bin = event_logger_bin();
    let yaml = format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nsys: {{ interval: 1s }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --output, {all}]\n  connects:\n    endpoint: unix://{d}/c.sock\n    command: [{b}, --kinds, client_connected, --output, {c}]\n",
        d = dir.path().display(),
        b = bin.display(),
        all = all.display(),
        c = connects.display()
    );
    let mut broker = Tandem::start_config(&yaml);
    // broker_pre_start was delivered and acked before the listener opened.
    let lines = read_lines(&all);
    assert_eq!(lines[0]["kind"], "broker_pre_start", "{lines:#?}");
    assert_eq!(lines[0]["sequence"], 1);

    let mut c = RawClient::connect(broker.addr, "ev").await;
    c.subscribe("ev/#", QoS::AtLeastOnce).await;
    c.publish("ev/a", b"zero", QoS::AtMostOnce, false).await;
    c.publish("ev/b", b"one", QoS::AtLeastOnce, true).await;
    c.publish("ev/c", b"two", QoS::ExactlyOnce, false).await;
    for _ in 0..3 {
        let m = c.recv_publish().await;
        c.ack(&m).await;
    }
    let pkid = c.pkid();
    c.send(&tandem_broker::protocol::Packet::Unsubscribe(
        tandem_broker::protocol::Unsubscribe {
            pkid,
            filters: vec!["ev/#".into()],
            properties: None,
        },
    ))
    .await;
    let _ = c.recv().await;
    c.disconnect().await;

    // A client that goes silent: keepalive timeout.
    let (_silent, _) = RawClient::connect_with(broker.addr, connect_packet("ka", true, 1)).await;

    let lines = wait_lines(&all, |l| {
        l["client_id"] == "ka" && l["kind"] == "client_disconnected"
    })
    .await;
    assert_eq!(
        kinds_of(&lines, "ev"),
        [
            "client_connected",
            "client_subscribed",
            "message_received",
            "message_broadcast",
            "message_received",
            "message_broadcast",
            "retained_message",
            "message_received",
            "message_broadcast",
            "client_unsubscribed",
            "client_disconnected",
        ]
    );
    let ev: Vec<&serde_json::Value> = lines.iter().filter(|l| l["client_id"] == "ev").collect();
    let detail = |i: usize| ev[i]["detail"].as_str().unwrap().to_owned();
    assert!(detail(1).contains("ev/#"), "{}", detail(1));
    assert!(
        detail(2).contains("ev/a") && detail(2).contains("qos: 0"),
        "{}",
        detail(2)
    );
    assert!(
        detail(4).contains("ev/b") && detail(4).contains("retain: true"),
        "{}",
        detail(4)
    );
    assert!(detail(6).contains("Stored"), "{}", detail(6));
    assert!(detail(7).contains("qos: 2"), "{}", detail(7));
    assert!(
        detail(8).contains("matched_subscriptions: 1"),
        "{}",
        detail(8)
    );
    assert!(detail(10).contains("Clean"), "{}", detail(10));
    let ka: Vec<&serde_json::Value> = lines.iter().filter(|l| l["client_id"] == "ka").collect();
    assert_eq!(ka.len(), 2);
    assert!(
        ka[1]["detail"]
            .as_str()
            .unwrap()
            .contains("KeepaliveTimeout")
    );
    // Sequences strictly increase by one: nothing lost, nothing repeated.
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // The plugin that asked only for client_connected got only those, on the wire:
    // the broker queued and sent exactly two events to it (ev and ka).
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    let queued = wait_sys(
        &mut sys,
        "$SYS/broker/plugins/connects/events/queued",
        |v| v == "3",
    )
    .await;
    assert_eq!(queued, "3", "ev, ka and sys connected");
    let only = read_lines(&connects);
    assert!(
        only.iter().all(|l| l["kind"] == "client_connected"),
        "{only:#?}"
    );

    // Shutdown: broker_pre_shutdown, then broker_post_shutdown acked before exit.
    drop(sys);
    drop(_silent);
    let status = broker.terminate(Duration::from_secs(15)).expect("exits");
    assert!(status.success());
    let lines = read_lines(&all);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"broker_post_shutdown"), "{kinds:?}");
    assert!(kinds.contains(&"broker_pre_shutdown"));
}
