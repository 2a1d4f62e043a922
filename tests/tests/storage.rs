//! `storage:` end to end: what a restart keeps, and what a bad store, a read-only
//! directory and a full disk do. The crash tests (SIGKILL under load) are in
//! `storage_crash.rs`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tandem_broker::protocol::{
    ConnectReason, Packet, Properties, PubRec, PubRel, Publish, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tandem_tests::probe::{http_get, metric, wait_series};
use tandem_tests::{
    DEADLINE, RawClient, Recv, Tandem, connect_packet, connect_packet_v5, free_port,
};

fn config(port: u16, store: &Path, sync: &str, extra: &str) -> String {
    format!(
        "listeners:\n  default: {{ type: tcp, bind: '127.0.0.1:{port}' }}\n\
         admin:\n  bind: 127.0.0.1:0\n\
         storage:\n  path: '{}'\n  sync: {sync}\n  interval: 5s\n{extra}",
        store.display()
    )
}

fn publish(topic: &str, payload: &str, qos: QoS, pkid: u16, dup: bool, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: topic.into(),
        pkid,
        payload: Bytes::from(payload.to_owned()),
        properties: None,
    })
}

/// An MQTT 5 CONNECT of a session kept `expiry` seconds after its connection ends.
fn keeping(id: &str, expiry: u32) -> tandem_broker::protocol::Connect {
    connect_packet_v5(
        id,
        false,
        Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        },
    )
}

async fn persistent(broker: &Tandem, id: &str) -> (RawClient, bool) {
    let (c, ack) = RawClient::connect_with(broker.addr, connect_packet(id, false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    (c, ack.session_present)
}

/// What a graceful stop (SIGTERM) must keep, in either sync mode: a persistent
/// session's subscriptions and offline queue, a QoS 2 delivery in each of its states,
/// an inbound QoS 2 id awaiting PUBREL, a retained message, MQTT 5 subscription
/// options; and a session whose expiry ran out while the broker was down is gone.
async fn a_graceful_restart_keeps_everything(sync: &str) {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, store.path(), sync, "");
    let mut broker = Tandem::start_config(&yaml);

    // An offline QoS 1 queue.
    let (mut q, present) = persistent(&broker, "queue").await;
    assert!(!present);
    q.subscribe("q/#", QoS::AtLeastOnce).await;
    q.disconnect().await;
    // A QoS 2 subscriber that received one message (no PUBREC yet) and PUBREC'd another.
    let (mut q2, _) = persistent(&broker, "qos2").await;
    q2.subscribe("x/#", QoS::ExactlyOnce).await;
    // An MQTT 5 session with a subscription identifier, and one that expires in 1 s.
    let (mut v5, ack) = RawClient::connect_with(broker.addr, keeping("v5", 3600)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    v5.send(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: "v/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        properties: Some(Box::new(Properties {
            subscription_identifiers: vec![42],
            ..Properties::default()
        })),
    }))
    .await;
    assert!(matches!(v5.recv().await, Packet::SubAck(_)));
    v5.send(&Packet::Disconnect(Default::default())).await;
    let (short, ack) = RawClient::connect_with(broker.addr, keeping("short", 1)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    short.disconnect().await;

    let mut p = RawClient::connect(broker.addr, "pub").await;
    for i in 0..3 {
        p.publish(
            "q/a",
            format!("queued-{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    p.publish("v/a", b"for-v5", QoS::AtLeastOnce, false).await;
    p.publish("r/a", b"kept", QoS::AtLeastOnce, true).await;
    p.publish("x/1", b"unreceived", QoS::ExactlyOnce, false)
        .await;
    p.publish("x/2", b"released", QoS::ExactlyOnce, false).await;
    let first = q2.recv_publish().await;
    let second = q2.recv_publish().await;
    assert_eq!(&first.payload[..], b"unreceived");
    q2.send(&Packet::PubRec(PubRec::new(second.pkid))).await;
    assert!(matches!(q2.recv().await, Packet::PubRel(r) if r.pkid == second.pkid));
    // An inbound QoS 2 message whose PUBREL the broker has not seen.
    let (mut in2, _) = persistent(&broker, "in2").await;
    in2.send(&publish("x/3", "once", QoS::ExactlyOnce, 77, false, false))
        .await;
    assert!(matches!(in2.recv().await, Packet::PubRec(r) if r.pkid == 77));
    let third = q2.recv_publish().await;
    assert_eq!(&third.payload[..], b"once");
    q2.ack(&third).await;
    // A round trip after the PUBCOMP: the broker has handled it before it is stopped
    // (else, correctly, the PUBREL would come again after the restart).
    q2.ping().await;

    assert!(broker.terminate(DEADLINE).is_some_and(|s| s.success()));
    assert!(
        broker
            .wait_log("storage: flushed and closed", DEADLINE)
            .is_some(),
        "the store was flushed on the way out"
    );
    // Downtime counts toward the session expiry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let broker = Tandem::start_config(&yaml);
    let restored = broker.wait_log("storage: restored", DEADLINE).unwrap();
    assert!(restored.contains("expired=1"), "{restored}");
    let scrape = tandem_tests::probe::metrics(broker.admin_addr()).await;
    assert_eq!(
        tandem_tests::probe::series(&scrape, "tandem_storage_restored{kind=\"sessions\"}"),
        Some(4.0),
        "{scrape}"
    );

    // The publisher of the inbound QoS 2 message resends it: not routed again.
    let (mut in2, present) = persistent(&broker, "in2").await;
    assert!(present);
    in2.send(&publish("x/3", "once", QoS::ExactlyOnce, 77, true, false))
        .await;
    assert!(matches!(in2.recv().await, Packet::PubRec(r) if r.pkid == 77));
    in2.send(&Packet::PubRel(PubRel::new(77))).await;
    assert!(matches!(in2.recv().await, Packet::PubComp(c) if c.pkid == 77));

    // The QoS 2 subscriber: the unreceived one again under its id, PUBREL for the other.
    let (mut q2, present) = persistent(&broker, "qos2").await;
    assert!(present, "session present after the restart");
    let mut seen_publish = false;
    let mut seen_pubrel = false;
    while !(seen_publish && seen_pubrel) {
        match q2.recv().await {
            Packet::Publish(p) => {
                assert_eq!(
                    &p.payload[..],
                    b"unreceived",
                    "only the unreceived one is resent"
                );
                assert_eq!(p.pkid, first.pkid, "under the id it was first sent with");
                assert!(p.dup);
                seen_publish = true;
            }
            Packet::PubRel(r) => {
                assert_eq!(r.pkid, second.pkid);
                seen_pubrel = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The queue, in order, and the subscriptions still route.
    let (mut q, present) = persistent(&broker, "queue").await;
    assert!(present);
    for i in 0..3 {
        let m = q.recv_publish().await;
        assert_eq!(m.payload, format!("queued-{i}"));
        q.ack(&m).await;
    }
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("q/b", b"live", QoS::AtLeastOnce, false).await;
    assert_eq!(&q.recv_publish().await.payload[..], b"live");
    // The retained message.
    let mut r = RawClient::connect(broker.addr, "reader").await;
    r.subscribe("r/#", QoS::AtLeastOnce).await;
    let kept = r.recv_publish().await;
    assert!(kept.retain);
    assert_eq!(&kept.payload[..], b"kept");
    // The MQTT 5 session: its queued message carries the subscription identifier.
    let (mut v5, ack) = RawClient::connect_with(broker.addr, keeping("v5", 3600)).await;
    assert!(ack.session_present);
    let m = v5.recv_publish().await;
    assert_eq!(&m.payload[..], b"for-v5");
    assert_eq!(
        m.properties.map(|p| p.subscription_identifiers),
        Some(vec![42])
    );
    // The session that expired while the broker was down starts afresh.
    let (_short, ack) = RawClient::connect_with(broker.addr, keeping("short", 1)).await;
    assert!(!ack.session_present);
    // Nothing more for the QoS 2 subscriber: "once" was not routed twice.
    match q2.recv_within(Duration::from_millis(300)).await {
        Recv::Nothing => {}
        other => panic!("nothing more expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_graceful_restart_keeps_everything_with_sync_always() {
    a_graceful_restart_keeps_everything("always").await;
}

#[tokio::test]
async fn a_graceful_restart_keeps_everything_with_sync_periodic() {
    a_graceful_restart_keeps_everything("periodic").await;
}

#[tokio::test]
async fn without_a_path_nothing_survives_a_restart() {
    let port = free_port();
    let yaml = format!("listeners:\n  default: {{ type: tcp, bind: '127.0.0.1:{port}' }}\n");
    let mut broker = Tandem::start_config(&yaml);
    let (mut s, _) = persistent(&broker, "s").await;
    s.subscribe("t", QoS::AtLeastOnce).await;
    s.disconnect().await;
    assert!(broker.terminate(DEADLINE).is_some());
    let broker = Tandem::start_config(&yaml);
    let (_s, present) = persistent(&broker, "s").await;
    assert!(!present, "memory only: the session went with the process");
}

#[tokio::test]
async fn a_damaged_store_refuses_the_start_and_names_the_file() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, store.path(), "always", "");
    {
        let broker = Tandem::start_config(&yaml);
        let mut p = RawClient::connect(broker.addr, "p").await;
        for i in 0..50 {
            p.publish(&format!("r/{i}"), &[b'x'; 2000], QoS::AtLeastOnce, true)
                .await;
        }
    }
    let file = store.path().join("tandem.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 3..len / 3 + 8192] {
        *b ^= 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();
    let err = Tandem::expect_startup_failure(&yaml, DEADLINE);
    assert!(
        err.contains(&*file.to_string_lossy()),
        "names the file:\n{err}"
    );
    assert!(err.contains("damaged"), "says what is wrong:\n{err}");
    assert!(!err.contains("panicked"), "no panic:\n{err}");
    // Cut short: refused the same way.
    std::fs::write(&file, &bytes[..len / 4]).unwrap();
    let err = Tandem::expect_startup_failure(&yaml, DEADLINE);
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
}

/// A tmpfs of `size` mounted at `dir` with `options`, unmounted on drop; `None` where
/// this process may not mount (not root).
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_store_directory_that_cannot_be_written_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    // Read-only to everyone, root included, where a read-only mount can be made; else
    // (not root) a directory without write permission.
    let _mount = Mount::tmpfs(&store, "ro,size=1m");
    if _mount.is_none() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let yaml = config(free_port(), &store, "always", "");
    let err = Tandem::expect_startup_failure(&yaml, DEADLINE);
    assert!(
        err.contains(&*store.to_string_lossy()),
        "names the path:\n{err}"
    );
    assert!(!err.contains("panicked"), "no panic:\n{err}");
}

#[tokio::test]
async fn a_full_disk_stops_acknowledgements_and_the_broker_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let Some(_mount) = Mount::tmpfs(&store, "size=4m") else {
        println!(
            "SKIPPED: cannot mount a tmpfs here (not root); the writer's side of a failing disk is covered by storage::tests in the broker"
        );
        return;
    };
    let yaml = config(
        free_port(),
        &store,
        "always",
        "mqtt:\n  max_queued_messages: 1000000\n  max_packet_size: 2000000\n",
    );
    let broker = Tandem::start_config(&yaml);
    let (mut s, _) = persistent(&broker, "slow").await;
    s.subscribe("big/#", QoS::AtLeastOnce).await;
    s.disconnect().await;
    // Fill the disk around the store, leaving room for little.
    let filler = store.join("filler");
    let free = nix_free_bytes(&store);
    std::fs::write(&filler, vec![0u8; free.saturating_sub(600 * 1024) as usize]).unwrap();

    // Publish QoS 1 until the broker stops acknowledging: it closes the connection
    // instead of a PUBACK it cannot keep.
    let mut acked = 0;
    let payload = vec![b'p'; 64 * 1024];
    let refused = 'fill: loop {
        let (mut p, _) =
            RawClient::connect_with(broker.addr, connect_packet("filler-pub", true, 0)).await;
        for _ in 0..100 {
            p.send(&publish(
                "big/x",
                std::str::from_utf8(&payload).unwrap(),
                QoS::AtLeastOnce,
                1,
                false,
                false,
            ))
            .await;
            match p.recv_within(DEADLINE).await {
                Recv::Packet(Packet::PubAck(_)) => acked += 1,
                Recv::Closed => break 'fill true,
                other => panic!("expected PUBACK or a close, got {other:?}"),
            }
        }
        if acked > 200 {
            break false;
        }
    };
    assert!(
        refused,
        "the broker kept acknowledging on a full disk ({acked} acked)"
    );
    assert!(
        broker
            .wait_log(
                "closing connection: what it acknowledges could not be stored",
                DEADLINE
            )
            .is_some()
    );
    assert!(
        broker
            .wait_log("No space left on device", DEADLINE)
            .is_some()
    );
    let (code, body) = http_get(broker.admin_addr(), "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("storage failing"), "{body}");
    assert!(
        metric(broker.admin_addr(), "tandem_storage_errors_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    // The broker still serves: a clean client's QoS 0 traffic goes through.
    let mut a = RawClient::connect(broker.addr, "a").await;
    a.subscribe("live", QoS::AtMostOnce).await;
    a.publish("live", b"up", QoS::AtMostOnce, false).await;
    assert_eq!(&a.recv_publish().await.payload[..], b"up");

    // Space comes back: the retried commit lands and acknowledgements resume.
    std::fs::remove_file(&filler).unwrap();
    wait_series(broker.admin_addr(), "tandem_storage_failing", |v| v == 0.0).await;
    let mut p = RawClient::connect(broker.addr, "after").await;
    p.publish("big/y", b"small", QoS::AtLeastOnce, false).await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (code, body) = http_get(broker.admin_addr(), "/readyz").await;
        if code == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What was acknowledged before the disk filled is all there.
    let (mut s, present) = persistent(&broker, "slow").await;
    assert!(present);
    let mut got = 0;
    while let Recv::Packet(Packet::Publish(m)) = s.recv_within(Duration::from_secs(2)).await {
        s.ack(&m).await;
        got += 1;
    }
    assert!(
        got > acked,
        "{got} delivered, {acked} acknowledged before the disk filled"
    );
}

/// Free bytes on the filesystem holding `path`.
fn nix_free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the free bytes")
}

/// An MQTT 5 client that went away without DISCONNECT, with a will delay.
async fn gone_with_delayed_will(broker: &Tandem, id: &str, delay: u32) {
    let mut connect = keeping(id, 3600);
    connect.will = Some(tandem_broker::protocol::LastWill {
        topic: format!("will/{id}").into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Some(Box::new(Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        })),
    });
    let (c, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    drop(c);
    assert!(
        broker
            .wait_log_where(|l| l.contains("will delayed") && l.contains(id), DEADLINE)
            .is_some()
    );
}

#[tokio::test]
async fn a_delayed_will_outlives_a_restart_and_its_client_can_still_cancel_it() {
    let store = tempfile::tempdir().unwrap();
    let yaml = config(free_port(), store.path(), "always", "");
    let mut broker = Tandem::start_config(&yaml);
    gone_with_delayed_will(&broker, "late", 3).await;
    gone_with_delayed_will(&broker, "back", 3).await;
    assert!(broker.terminate(DEADLINE).is_some_and(|s| s.success()));
    let started = std::time::Instant::now();
    let broker = Tandem::start_config(&yaml);
    assert!(
        broker
            .wait_log("restored delayed wills wills=2", DEADLINE)
            .is_some()
    );
    let mut w = RawClient::connect(broker.addr, "watcher").await;
    w.subscribe("will/#", QoS::AtLeastOnce).await;
    // "back" returns before its delay runs out: its will is not sent.
    let (_back, ack) = RawClient::connect_with(broker.addr, keeping("back", 3600)).await;
    assert!(ack.session_present);
    // "late" does not: its will comes when what was left of the delay ran out, once.
    let m = w.recv_publish().await;
    assert_eq!(&m.topic[..], "will/late");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before its delay"
    );
    w.ack(&m).await;
    match w.recv_within(Duration::from_secs(2)).await {
        Recv::Nothing => {}
        other => panic!("only one will expected, got {other:?}"),
    }
    // Sent and cancelled wills are gone from the store: nothing on the next start.
    drop(w);
    let mut broker = broker;
    assert!(broker.terminate(DEADLINE).is_some());
    let broker = Tandem::start_config(&yaml);
    assert!(broker.wait_log("storage: restored", DEADLINE).is_some());
    assert_eq!(broker.count_log("restored delayed wills"), 0);
}

#[tokio::test]
async fn retained_messages_and_subscriptions_survive_sigkill() {
    let store = tempfile::tempdir().unwrap();
    let yaml = config(free_port(), store.path(), "always", "");
    let mut broker = Tandem::start_config(&yaml);
    let (mut s, _) = persistent(&broker, "keeper").await;
    s.subscribe("k/#", QoS::ExactlyOnce).await;
    s.disconnect().await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("k/retained", b"stays", QoS::AtLeastOnce, true)
        .await;
    p.publish("k/cleared", b"goes", QoS::AtLeastOnce, true)
        .await;
    // Cleared by an empty retained message: it must not come back either.
    p.publish("k/cleared", b"", QoS::AtLeastOnce, true).await;
    drop(p);
    broker.kill();
    let broker = Tandem::start_config(&yaml);
    // The session and its subscription: the queued messages, then a live one.
    let (mut s, present) = persistent(&broker, "keeper").await;
    assert!(present, "the session survived SIGKILL");
    let mut queued = Vec::new();
    for _ in 0..3 {
        let m = s.recv_publish().await;
        queued.push(String::from_utf8_lossy(&m.payload).into_owned());
        s.ack(&m).await;
    }
    assert_eq!(queued, ["stays", "goes", ""]);
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("k/live", b"live", QoS::AtLeastOnce, false).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"live");
    // The retained store: one message, the one that was not cleared.
    let mut r = RawClient::connect(broker.addr, "reader").await;
    r.subscribe("k/#", QoS::AtLeastOnce).await;
    let m = r.recv_publish().await;
    assert_eq!(
        (&m.topic[..], &m.payload[..]),
        ("k/retained", &b"stays"[..])
    );
    r.expect_nothing_before_marker(&mut p, "k/marker", false)
        .await;
}

#[tokio::test]
async fn a_restored_shared_subscription_message_still_goes_to_another_member() {
    let store = tempfile::tempdir().unwrap();
    let yaml = config(free_port(), store.path(), "always", "");
    let mut broker = Tandem::start_config(&yaml);
    let (mut a, _) = persistent(&broker, "member-a").await;
    a.subscribe("$share/g/s/#", QoS::AtLeastOnce).await;
    a.disconnect().await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    // Queued for the only member, offline.
    p.publish("s/1", b"shared", QoS::AtLeastOnce, false).await;
    let (mut b, _) = persistent(&broker, "member-b").await;
    b.subscribe("$share/g/s/#", QoS::AtLeastOnce).await;
    b.disconnect().await;
    drop(p);
    assert!(broker.terminate(DEADLINE).is_some());
    let broker = Tandem::start_config(&yaml);
    let (mut b, present) = persistent(&broker, "member-b").await;
    assert!(present);
    // A comes back, takes the message and leaves without acknowledging it: it goes to B.
    let (mut a, present) = persistent(&broker, "member-a").await;
    assert!(present);
    let m = a.recv_publish().await;
    assert_eq!(&m.payload[..], b"shared");
    drop(a);
    let m = b.recv_publish().await;
    assert_eq!(&m.payload[..], b"shared", "handed to the other member");
}

#[tokio::test]
async fn bad_storage_and_queue_settings_refuse_the_start_naming_the_key() {
    for (yaml, key) in [
        (
            "storage:\n  path: /tmp/x\n  sync: sometimes\n",
            "storage.sync",
        ),
        (
            "storage:\n  path: /tmp/x\n  sync: periodic\n  interval: 1ms\n",
            "storage.interval",
        ),
        ("storage:\n  path: ''\n", "storage.path"),
        ("mqtt:\n  queue_full: drop_everything\n", "mqtt.queue_full"),
        (
            "mqtt:\n  backpressure_timeout: 0s\n",
            "mqtt.backpressure_timeout",
        ),
    ] {
        let config = format!("listeners:\n  default: {{ type: tcp, bind: '127.0.0.1:0' }}\n{yaml}");
        let err = Tandem::expect_startup_failure(&config, DEADLINE);
        assert!(
            err.contains("tandem.yaml") && err.contains(key),
            "{key}:\n{err}"
        );
    }
}
