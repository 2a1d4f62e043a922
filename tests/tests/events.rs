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
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["broker_version"], env!("CARGO_PKG_VERSION"));

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
    // The documented schema (examples/event-logger/README.md), field by field.
    assert_eq!(ev[0]["protocol_version"], "3.1.1");
    assert_eq!(ev[0]["listener"], "default");
    assert_eq!(ev[0]["clean_start"], true);
    assert!(
        ev[0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(ev[0]["attributes"], serde_json::json!({}));
    assert_eq!(ev[0]["username"], serde_json::Value::Null);
    assert_eq!(ev[1]["subscriptions"][0]["filter"], "ev/#");
    assert_eq!(ev[1]["subscriptions"][0]["granted_qos"], 1);
    assert_eq!(
        (&ev[2]["topic"], &ev[2]["qos"]),
        (&"ev/a".into(), &0.into())
    );
    assert_eq!(ev[2]["payload_size"], 4);
    // No --payload: the size only, the payload itself is null.
    assert_eq!(ev[2]["payload"], serde_json::Value::Null);
    assert_eq!(ev[2]["packet_id"], serde_json::Value::Null);
    assert_eq!(
        (&ev[4]["topic"], &ev[4]["retain"]),
        (&"ev/b".into(), &true.into())
    );
    assert!(ev[4]["packet_id"].as_u64().is_some());
    assert_eq!(
        (&ev[6]["action"], &ev[6]["topic"]),
        (&"stored".into(), &"ev/b".into())
    );
    assert_eq!(ev[7]["qos"], 2);
    assert_eq!(ev[8]["matched_subscriptions"], 1);
    assert_eq!(ev[9]["filters"], serde_json::json!(["ev/#"]));
    assert_eq!(ev[10]["reason"], "clean");
    let ka: Vec<&serde_json::Value> = lines.iter().filter(|l| l["client_id"] == "ka").collect();
    assert_eq!(ka.len(), 2);
    assert_eq!(ka[1]["reason"], "keepalive_timeout");
    // One broker instance, RFC 3339 UTC timestamps.
    let instance = &lines[0]["broker_instance_id"];
    assert!(instance.as_str().is_some_and(|s| !s.is_empty()));
    assert!(lines.iter().all(|l| &l["broker_instance_id"] == instance));
    assert!(
        lines.iter().all(|l| l["ts"]
            .as_str()
            .is_some_and(|t| t.len() == 27 && t.ends_with('Z'))),
        "{lines:#?}"
    );
    // Sequences strictly increase by one: nothing lost, nothing repeated.
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
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

/// `--output` with a small `--max-size`: the file rotates between lines, so every line of every
/// file parses, no file passes the limit (a line is far smaller), and the files read oldest
/// first hold every sequence exactly once, in order. Payloads are written as asked.
#[tokio::test]
async fn output_rotates_by_size_without_losing_or_splitting_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let max_size = 2048;
    let yaml = format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --kinds, message_received, --payload, utf8, --output, {o}, --max-size, 2KiB, --max-files, 100]\n",
        d = dir.path().display(),
        b = event_logger_bin().display(),
        o = out.display(),
    );
    let broker = Tandem::start_config(&yaml);
    let mut c = RawClient::connect(broker.addr, "rot").await;
    let count = 60;
    for i in 0..count {
        let payload = format!("message {i:03} {}", "x".repeat(100));
        c.publish("rot/t", payload.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    c.publish("rot/t", &[0xff, 0xfe], QoS::AtLeastOnce, false)
        .await;
    c.publish("rot/t", b"end", QoS::AtLeastOnce, false).await;
    // The live file holds the newest line; everything before it is in the rotated files.
    wait_lines(&out, |l| l["payload"] == "end").await;

    let mut files = vec![out.clone()];
    for n in 1.. {
        let rotated = dir.path().join(format!("events.jsonl.{n}"));
        if !rotated.exists() {
            break;
        }
        files.push(rotated);
    }
    files.reverse(); // oldest first
    assert!(files.len() > 5, "rotated into {} files", files.len());
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.len() <= max_size,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        assert!(text.ends_with('\n'), "{} ends mid-line", file.display());
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("split or bad line in {}: {e}: {line}", file.display()));
            lines.push(value);
        }
    }
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=count + 2).collect::<Vec<u64>>(),
        "every event once, in order"
    );
    for (i, line) in lines.iter().take(count as usize).enumerate() {
        let payload = line["payload"].as_str().unwrap();
        assert!(
            payload.starts_with(&format!("message {i:03} ")),
            "{payload}"
        );
        assert_eq!(line["payload_encoding"], "utf8");
    }
    let binary = &lines[count as usize];
    assert_eq!(
        (&binary["payload"], &binary["payload_encoding"]),
        (&"//4=".into(), &"base64".into())
    );
}

/// Packet events (both directions, decoded headers and raw bytes on request) and
/// `retained_message` QUEUED for an offline persistent session.
#[tokio::test]
async fn packets_are_reported_both_ways_and_offline_queueing_names_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packets.jsonl");
    let yaml = format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nsys: {{ enable: false }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --kinds, \"mqtt_packet_received,mqtt_packet_sent,client_connected,retained_message\", --raw-packets, --output, {o}]\n",
        d = dir.path().display(),
        b = event_logger_bin().display(),
        o = out.display()
    );
    let broker = Tandem::start_config(&yaml);

    // A persistent session goes offline with a QoS 1 subscription.
    let (mut off, _) = RawClient::connect_with(broker.addr, connect_packet("off", false, 0)).await;
    off.subscribe("q/#", QoS::AtLeastOnce).await;
    off.disconnect().await;

    let mut c = RawClient::connect(broker.addr, "pk").await;
    c.subscribe("pk/#", QoS::AtLeastOnce).await;
    c.ping().await;
    c.publish("pk/a", b"x", QoS::AtLeastOnce, false).await;
    let m = c.recv_publish().await;
    c.ack(&m).await;
    c.publish("q/1", b"for-off", QoS::AtLeastOnce, false).await;
    c.disconnect().await;

    let lines = wait_lines(&out, |l| {
        l["client_id"] == "pk"
            && l["kind"] == "mqtt_packet_received"
            && l["packet_type"] == "disconnect"
    })
    .await;
    let pk: Vec<&serde_json::Value> = lines.iter().filter(|l| l["client_id"] == "pk").collect();
    let seen: Vec<(String, String)> = pk
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["packet_type"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("mqtt_packet_received", "connect"),
        ("mqtt_packet_sent", "connack"),
        ("client_connected", "-"),
        ("mqtt_packet_received", "subscribe"),
        ("mqtt_packet_sent", "suback"),
        ("mqtt_packet_received", "pingreq"),
        ("mqtt_packet_sent", "pingresp"),
        ("mqtt_packet_received", "publish"),
        ("mqtt_packet_sent", "puback"),
        ("mqtt_packet_sent", "publish"),
        ("mqtt_packet_received", "puback"),
        ("mqtt_packet_received", "publish"),
        ("retained_message", "-"),
        ("mqtt_packet_sent", "puback"),
        ("mqtt_packet_received", "disconnect"),
    ]
    .iter()
    .map(|(k, t)| (k.to_string(), t.to_string()))
    .collect();
    assert_eq!(seen, expected, "{pk:#?}");

    // Raw bytes are the wire form, and size and fields agree with them.
    let raw = |l: &serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(l["raw"].as_str().expect("raw requested"))
            .unwrap()
    };
    for l in &pk {
        if l["kind"] != "client_connected" && l["kind"] != "retained_message" {
            assert_eq!(raw(l).len() as u64, l["size"].as_u64().unwrap(), "{l}");
        }
    }
    assert_eq!(raw(pk[0])[0] >> 4, 1, "CONNECT");
    assert_eq!(raw(pk[1]), [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    assert_eq!(pk[1]["reason_code"], 0);
    assert_eq!(raw(pk[6]), [0xD0, 0x00], "PINGRESP");
    let delivered = pk[9];
    assert_eq!(delivered["topic"], "pk/a");
    assert_eq!(delivered["qos"], 1);
    assert_eq!(delivered["packet_id"], u64::from(m.pkid));
    assert_eq!(delivered["flags"], 0b0010, "QoS 1, no DUP, no RETAIN");

    // The message for the offline session: QUEUED, naming it, sent by the publisher.
    let queued = pk[12];
    assert_eq!(queued["action"], "queued", "{queued}");
    assert_eq!(queued["session_client_id"], "off");
    assert_eq!(queued["topic"], "q/1");
}
