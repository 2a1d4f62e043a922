//! Event delivery when the plugin goes away or stalls: at-least-once while events fit in
//! the queue, drops counted exactly when they do not, and `backpressure` slowing
//! publishers instead of losing events, with the broker still answering everyone else.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{Packet, ProtocolVersion, Publish, QoS};
use tandem_tests::{PluginProcess, RawClient, Recv, Tandem, event_logger_bin, kill_pid, wait_sys};

fn sequences(path: &std::path::Path, kind: &str) -> Vec<u64> {
    // A line being written as we read is incomplete: skip what does not parse yet.
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["kind"] == kind)
        .map(|l| l["seq"].as_u64().unwrap())
        .collect()
}

async fn wait_count(path: &std::path::Path, kind: &str, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sequences(path, kind);
        if s.iter().collect::<BTreeSet<_>>().len() >= n {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} {kind} events: {s:?}",
            s.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killed_and_restarted_plugin_misses_nothing_with_a_large_queue() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let yaml = format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --kinds, message_received, --output, {o}]\n    events: {{ queue: 100000 }}\n",
        d = dir.path().display(),
        b = event_logger_bin().display(),
        o = out.display()
    );
    let broker = Tandem::start_config(&yaml);
    let mut p = RawClient::connect(broker.addr, "pub").await;
    let total = 600;
    let first_pid = broker.plugin_pid("log").expect("pid logged");
    for i in 0..total {
        p.publish("load/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
            .await;
        if i == total / 3 {
            kill_pid(first_pid);
            // The broker saw its plugin die (the kill happened, and to this plugin).
            broker
                .wait_log_all(
                    &["plugin=log", "plugin process exited; restarting"],
                    tandem_tests::DEADLINE,
                )
                .expect("the broker notices the killed plugin");
        }
        if i == 2 * total / 3 {
            // ... and started a new one before the last third.
            broker
                .wait_log_all(
                    &["plugin=log", "plugin process restarted"],
                    tandem_tests::DEADLINE,
                )
                .expect("the broker restarts the plugin");
            let second_pid = broker.plugin_pid("log").expect("new pid logged");
            assert_ne!(second_pid, first_pid, "a new process");
        }
    }
    let seqs = wait_count(&out, "message_received", total).await;
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), total, "0 missing");
    assert_eq!(distinct.first(), Some(&1));
    assert_eq!(distinct.last(), Some(&(total as u64)));
    eprintln!(
        "kill/restart: {total} events, {} lines written ({} duplicates after the reconnect)",
        seqs.len(),
        seqs.len() - total
    );
}

#[tokio::test]
async fn a_small_queue_drops_exactly_what_overflows_and_publishers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let first = dir.path().join("first.jsonl");
    let out_arg = first.display().to_string();
    let mut logger = PluginProcess::start(
        &event_logger_bin(),
        &["--kinds", "message_received", "--output", &out_arg],
        &sock,
    );
    let broker = Tandem::start(&format!(
        "sys: {{ interval: 1s }}\nplugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 10 }}\n"
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("q/x", b"before", QoS::AtLeastOnce, false).await;
    wait_count(&first, "message_received", 1).await;

    // The plugin goes away; 30 more publishes, each acknowledged as usual.
    logger.kill();
    let started = Instant::now();
    for i in 0..30 {
        p.publish("q/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    eprintln!(
        "30 QoS 1 publishes with the event plugin gone took {:?}",
        started.elapsed()
    );
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    let dropped = wait_sys(&mut sys, "$SYS/broker/plugins/log/events/dropped", |v| {
        v == "20"
    })
    .await;
    assert_eq!(dropped, "20", "31 queued, 1 acked, 10 kept: 20 dropped");

    // It comes back: it gets exactly the 10 newest, sequences 22 to 31.
    let second = dir.path().join("second.jsonl");
    let out_arg = second.display().to_string();
    let _logger = PluginProcess::start(
        &event_logger_bin(),
        &["--kinds", "message_received", "--output", &out_arg],
        &sock,
    );
    let got = wait_count(&second, "message_received", 10).await;
    assert_eq!(got, (22..=31).collect::<Vec<u64>>());
}

#[tokio::test]
async fn backpressure_slows_publishers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let out_arg = out.display().to_string();
    let logger = PluginProcess::start(
        &event_logger_bin(),
        &["--kinds", "message_received", "--output", &out_arg],
        &sock,
    );
    let broker = Tandem::start(&format!(
        "sys: {{ interval: 1s }}\nplugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 5, overflow: backpressure }}\n"
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("bp/x", b"warm", QoS::AtLeastOnce, false).await;
    wait_count(&out, "message_received", 1).await;

    // Stall the plugin: its stream stays open but nothing is acked.
    Command::new("kill")
        .args(["-STOP", &logger.pid().to_string()])
        .status()
        .unwrap();
    // Twenty publishes in one write: a broker without backpressure handles them all in
    // one go (21 events queued at once); with it, the sixth event waits for room.
    let mut bytes = bytes::BytesMut::new();
    for i in 0..20u8 {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "bp/x".into(),
            pkid: u16::from(i) + 100,
            payload: vec![i].into(),
            properties: None,
        });
        tandem_broker::protocol::encode(&publish, ProtocolVersion::V3_1_1, &mut bytes);
    }
    p.send_raw(&bytes).await;
    // The queue (5) fills and the publisher is held there: the first count of queued
    // events to reach 6 (the warm-up one and 5) is exactly 6, never 21.
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    let queued = wait_sys(&mut sys, "$SYS/broker/plugins/log/events/queued", |v| {
        v.parse::<u64>().is_ok_and(|n| n >= 6)
    })
    .await;
    assert_eq!(queued, "6", "publisher held at the full queue");
    // The broker still serves everyone else.
    let mut other = RawClient::connect(broker.addr, "other").await;
    other.ping().await;

    // The plugin resumes: every PUBACK arrives and every event is delivered.
    Command::new("kill")
        .args(["-CONT", &logger.pid().to_string()])
        .status()
        .unwrap();
    let mut acks = 0;
    while acks < 20 {
        match p.recv().await {
            tandem_broker::protocol::Packet::PubAck(_) => acks += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let seqs = wait_count(&out, "message_received", 21).await;
    assert_eq!(
        seqs.iter().collect::<BTreeSet<_>>().len(),
        21,
        "nothing lost"
    );
}

#[tokio::test]
async fn a_stalled_backpressure_plugin_does_not_hold_shutdown_hostage() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let logger = PluginProcess::start(
        &event_logger_bin(),
        &[
            "--kinds",
            "message_received,broker_pre_shutdown,broker_post_shutdown",
            "--output",
            "/dev/null",
        ],
        &sock,
    );
    let shutdown_timeout = Duration::from_secs(2);
    let lifecycle_timeout = Duration::from_secs(1);
    let mut broker = Tandem::start(&format!(
        "shutdown_timeout: {}s\nsys: {{ interval: 1s }}\nplugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 1, overflow: backpressure, lifecycle_timeout: {}s }}\n",
        shutdown_timeout.as_secs(),
        lifecycle_timeout.as_secs(),
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    Command::new("kill")
        .args(["-STOP", &logger.pid().to_string()])
        .status()
        .unwrap();
    // Three publishes and a PINGREQ in one write, so the broker reads them together: the
    // first event fills the queue of 1 (sent, never acked), the second publish waits for
    // room, and the PINGREQ behind it is never answered.
    let mut bytes = bytes::BytesMut::new();
    for _ in 0..3 {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "stuck/x".into(),
            pkid: 0,
            payload: "x".into(),
            properties: None,
        });
        tandem_broker::protocol::encode(&publish, ProtocolVersion::V3_1_1, &mut bytes);
    }
    tandem_broker::protocol::encode(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut bytes);
    p.send_raw(&bytes).await;
    // The first event was queued: the connection has gone on to the second publish.
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    wait_sys(&mut sys, "$SYS/broker/plugins/log/events/queued", |v| {
        v == "1"
    })
    .await;

    let started = Instant::now();
    let status = broker
        .terminate(3 * (shutdown_timeout + lifecycle_timeout))
        .expect("the broker exits");
    let took = started.elapsed();
    eprintln!("shutdown with a stalled backpressure plugin took {took:?}");
    assert!(status.success());
    // The publisher really was held through the drain: the broker gave up on it at the
    // deadline, and it never got its PINGRESP (the next thing on its socket is the close).
    broker
        .wait_log(
            "connections still open after the shutdown timeout",
            Duration::from_secs(1),
        )
        .expect("the held connection outlived the drain");
    match p.recv_within(tandem_tests::DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the held connection to be closed, got {other:?}"),
    }
    // Bounded by what docs/deploy.md tells operators to budget for the grace period:
    // the drain (`shutdown_timeout`), then `broker_post_shutdown` (`lifecycle_timeout`),
    // plus a second for the process itself.
    let budget = shutdown_timeout + lifecycle_timeout + Duration::from_secs(1);
    assert!(
        took <= budget,
        "shutdown took {took:?}, more than the {budget:?} budgeted"
    );
    Command::new("kill")
        .args(["-CONT", &logger.pid().to_string()])
        .status()
        .unwrap();
}
