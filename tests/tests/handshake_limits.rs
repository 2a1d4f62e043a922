//! What a connection may cost before it is authenticated: `mqtt.max_connect_packet_size`
//! (a larger CONNECT is closed as soon as its fixed header is read, not after its body
//! has been buffered for `connect_timeout`) and `mqtt.max_handshakes` (a new connection
//! over the cap is closed at once and counted).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{self, ConnectReason, Packet, ProtocolVersion};
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, connect_packet, wait_sys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The broker's resident set size, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A fixed header announcing a CONNECT of `size` bytes in all (header included).
fn connect_header(size: usize) -> Vec<u8> {
    let mut remaining = size - 4; // a 3-byte remaining length for sizes in this file
    let mut out = vec![0x10];
    for _ in 0..3 {
        let mut b = (remaining % 128) as u8;
        remaining /= 128;
        if out.len() < 3 {
            b |= 0x80;
        }
        out.push(b);
    }
    assert_eq!(remaining, 0);
    out
}

/// Waits up to `within` for the peer to close `stream` (EOF or reset); anything it
/// sends first is skipped. Returns how long it took, or `None` if still open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_connects_are_closed_before_their_body_is_read() {
    const ATTACKERS: usize = 200;
    let broker = Tandem::start("sys: { interval: 1s }\n");
    let addr = broker.addr;
    let mut bystander = RawClient::connect(addr, "bystander").await;
    let rss_before = rss_kib(broker.pid());

    // Each attacker announces a CONNECT just under max_packet_size (1 MiB), sends 256 KiB
    // of it at once, then trickles a byte every 100 ms.
    let header = connect_header(1024 * 1024 - 16);
    let mut attackers = Vec::new();
    for _ in 0..ATTACKERS {
        let header = header.clone();
        attackers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&header).await;
            let body = vec![0u8; 256 * 1024];
            // The broker may close (and reset) mid-write: that is the point.
            let sent = tokio::time::timeout(Duration::from_secs(2), s.write_all(&body)).await;
            let started = Instant::now();
            let mut closed = None;
            while closed.is_none() && started.elapsed() < Duration::from_secs(5) {
                if matches!(sent, Ok(Ok(()))) {
                    let _ = s.write_all(b"x").await;
                }
                closed = closed_within(&mut s, Duration::from_millis(100)).await;
            }
            closed.map(|_| started.elapsed())
        }));
    }
    // Meanwhile the broker keeps serving others.
    bystander.ping().await;
    let mut peak = rss_before;
    let mut slowest = Duration::ZERO;
    for a in attackers {
        let closed = a.await.unwrap();
        peak = peak.max(rss_kib(broker.pid()));
        match closed {
            Some(after) => slowest = slowest.max(after),
            None => panic!("an attacker's 1 MiB CONNECT was still open after 5 s"),
        }
    }
    bystander.ping().await;
    let fresh = RawClient::connect(addr, "fresh").await;
    drop(fresh);
    eprintln!(
        "RSS before {rss_before} KiB, peak while attacked {peak} KiB (+{} KiB for {ATTACKERS} sockets), slowest close {slowest:?}",
        peak.saturating_sub(rss_before)
    );
    assert!(
        slowest < Duration::from_secs(3),
        "closing took {slowest:?}, not at once"
    );
    // 200 x 256 KiB would be 50 MiB buffered; closed at the header, next to nothing is.
    assert!(
        peak.saturating_sub(rss_before) < 24 * 1024,
        "RSS grew from {rss_before} to {peak} KiB"
    );
    assert!(
        broker.count_log("CONNECT larger than mqtt.max_connect_packet_size") >= ATTACKERS,
        "each refusal is logged"
    );
    let counted = wait_sys(
        &mut bystander,
        "$SYS/broker/connections/connects_too_large",
        |v| v.parse::<usize>().is_ok_and(|n| n >= ATTACKERS),
    )
    .await;
    assert_eq!(counted, ATTACKERS.to_string());
}

#[tokio::test]
async fn a_connect_over_max_connect_packet_size_is_refused_and_one_under_accepted() {
    let broker = Tandem::start("mqtt: { max_connect_packet_size: 8192 }\n");
    let with_password = |len: usize| {
        let mut c = connect_packet("big", true, 0);
        c.username = Some("u".into());
        c.password = Some(Bytes::from(vec![b'p'; len]));
        c
    };
    // Just under: accepted.
    let (_c, ack) = RawClient::connect_with(broker.addr, with_password(8000)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    // Just over: closed without CONNACK, logged.
    let mut client = RawClient::tcp(broker.addr).await;
    let mut out = BytesMut::new();
    protocol::encode(
        &Packet::Connect(Box::new(with_password(8200))),
        ProtocolVersion::V3_1_1,
        &mut out,
    );
    assert!(out.len() > 8192);
    client.send_raw(&out).await;
    match client.recv_within(DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the oversized CONNECT closed, got {other:?}"),
    }
    let line = broker
        .wait_log("CONNECT larger than mqtt.max_connect_packet_size", DEADLINE)
        .expect("logged");
    assert!(line.contains("max=8192"), "{line}");
}

#[tokio::test]
async fn connections_over_max_handshakes_are_closed_at_once() {
    let broker = Tandem::start("sys: { interval: 1s }\nmqtt: { max_handshakes: 4 }\n");
    let addr = broker.addr;
    // Authenticated clients hold no handshake slot: more than the cap connect.
    let mut connected = Vec::new();
    for i in 0..6 {
        connected.push(RawClient::connect(addr, &format!("ok-{i}")).await);
    }
    // Four sockets that never send CONNECT fill the handshake slots.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A fifth is closed at once, without a CONNACK, even with a valid CONNECT (the
    // broker accepts in order, so the four idle ones hold their slots by now).
    let mut over = RawClient::tcp(addr).await;
    over.send(&Packet::Connect(Box::new(connect_packet("over", true, 0))))
        .await;
    let started = Instant::now();
    match over.recv_within(DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the connection over the cap closed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        broker
            .wait_log(
                "mqtt.max_handshakes connections are in the handshake",
                DEADLINE
            )
            .is_some()
    );
    // Connected clients are served meanwhile.
    connected[0].ping().await;
    // One idle socket goes: its slot is free again, and a client gets in.
    drop(idle.pop());
    let deadline = Instant::now() + DEADLINE;
    let mut client = loop {
        let mut c = RawClient::tcp(addr).await;
        c.send(&Packet::Connect(Box::new(connect_packet("after", true, 0))))
            .await;
        match c.recv_within(Duration::from_secs(2)).await {
            Recv::Packet(Packet::ConnAck(ack)) if ack.reason == ConnectReason::Success => break c,
            _ => {
                assert!(Instant::now() < deadline, "no handshake slot came free");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let refused = wait_sys(
        &mut client,
        "$SYS/broker/connections/handshakes_refused",
        |v| v.parse::<u64>().is_ok_and(|n| n >= 1),
    )
    .await;
    assert!(refused.parse::<u64>().unwrap() >= 1);
}
