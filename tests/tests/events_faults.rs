//! Event delivery when the plugin goes away or stalls: at-least-once while events fit in
//! the queue, drops counted exactly when they do not, and `backpressure` slowing
//! publishers instead of losing events, with the broker still answering everyone else.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_broker::protocol::QoS;
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
    let mut killed = false;
    for i in 0..total {
        p.publish("load/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
            .await;
        if i == total / 3 {
            kill_pid(broker.plugin_pid("log").expect("pid logged"));
            killed = true;
        }
    }
    assert!(killed);
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
        "plugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 5, overflow: backpressure }}\n"
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("bp/x", b"warm", QoS::AtLeastOnce, false).await;
    wait_count(&out, "message_received", 1).await;

    // Stall the plugin: its stream stays open but nothing is acked.
    Command::new("kill")
        .args(["-STOP", &logger.pid().to_string()])
        .status()
        .unwrap();
    for i in 0..20u8 {
        p.send(&tandem_broker::protocol::Packet::Publish(
            tandem_broker::protocol::Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "bp/x".into(),
                pkid: u16::from(i) + 100,
                payload: vec![i].into(),
                properties: None,
            },
        ))
        .await;
    }
    // The queue holds 5: the publisher's later publishes wait, so not every PUBACK comes.
    let mut acks = 0;
    while let Recv::Packet(tandem_broker::protocol::Packet::PubAck(_)) =
        p.recv_within(Duration::from_millis(500)).await
    {
        acks += 1;
    }
    assert!(
        acks < 20,
        "publisher slowed: {acks} of 20 acknowledged while stalled"
    );
    // The broker still serves everyone else.
    let mut other = RawClient::connect(broker.addr, "other").await;
    other.ping().await;

    // The plugin resumes: every PUBACK arrives and every event is delivered.
    Command::new("kill")
        .args(["-CONT", &logger.pid().to_string()])
        .status()
        .unwrap();
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
    let mut broker = Tandem::start(&format!(
        "shutdown_timeout: 2s\nplugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 1, overflow: backpressure, lifecycle_timeout: 1s }}\n"
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    Command::new("kill")
        .args(["-STOP", &logger.pid().to_string()])
        .status()
        .unwrap();
    for _ in 0..3 {
        p.send(&tandem_broker::protocol::Packet::Publish(
            tandem_broker::protocol::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "stuck/x".into(),
                pkid: 0,
                payload: "x".into(),
                properties: None,
            },
        ))
        .await;
    }
    p.send(&tandem_broker::protocol::Packet::PingReq).await;
    // The publisher's connection is waiting for room in the queue: no PINGRESP.
    assert!(matches!(
        p.recv_within(Duration::from_millis(500)).await,
        Recv::Nothing
    ));
    let started = Instant::now();
    let status = broker
        .terminate(Duration::from_secs(15))
        .expect("the broker exits");
    eprintln!(
        "shutdown with a stalled backpressure plugin took {:?}",
        started.elapsed()
    );
    assert!(status.success());
    Command::new("kill")
        .args(["-CONT", &logger.pid().to_string()])
        .status()
        .unwrap();
}
