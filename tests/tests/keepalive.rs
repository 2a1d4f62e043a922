//! Keepalive (MQTT 3.1.1 section 3.1.2.10): any control packet from the client resets
//! it, and only 1.5 times the keepalive of silence closes the connection. A busy
//! publisher is never closed, nor a slow reader that keeps pinging while the broker's
//! writes to it block, nor a subscriber whose deliveries wait on slow RECEIVE checks; a
//! silent client is closed after 1.5 times its keepalive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{self, Packet, ProtocolVersion, Publish, QoS};
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn encode(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    protocol::encode(packet, ProtocolVersion::V3_1_1, &mut out);
    out
}

/// Connects a raw socket with `keep_alive` seconds and returns it after CONNACK.
async fn connect_raw(addr: std::net::SocketAddr, id: &str, keep_alive: u16) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&encode(&Packet::Connect(Box::new(connect_packet(
            id, true, keep_alive,
        )))))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = protocol::decode(&mut buf, ProtocolVersion::V3_1_1, usize::MAX).unwrap() {
            assert!(
                matches!(p, Packet::ConnAck(_)),
                "expected CONNACK, got {p:?}"
            );
            assert!(buf.is_empty());
            return stream;
        }
        let n = tokio::time::timeout(DEADLINE, stream.read_buf(&mut buf))
            .await
            .expect("CONNACK in time")
            .unwrap();
        assert!(n > 0, "closed before CONNACK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_clients_are_never_closed_for_keepalive() {
    const RUN: Duration = Duration::from_secs(8);
    let broker = Tandem::start("mqtt: { max_queued_messages: 100000 }\n");
    let addr = broker.addr;

    // A subscriber with keepalive 2 s that reads slowly (so the broker's writes to it
    // block now and then) and pings every second, as its keepalive asks.
    let mut sub = connect_raw(addr, "slow-sub", 2).await;
    let sub_packet = Packet::Subscribe(tandem_broker::protocol::Subscribe {
        pkid: 1,
        filters: vec![tandem_broker::protocol::SubscribeFilter {
            filter: "busy/#".into(),
            options: tandem_broker::protocol::SubscriptionOptions {
                qos: QoS::AtMostOnce,
                ..Default::default()
            },
        }],
        properties: None,
    });
    sub.write_all(&encode(&sub_packet)).await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sub_bytes = Arc::new(AtomicU64::new(0));
    let sub_task = {
        let done = done.clone();
        let sub_bytes = sub_bytes.clone();
        tokio::spawn(async move {
            let (mut rd, mut wr) = sub.into_split();
            let pinger = tokio::spawn(async move {
                let ping = encode(&Packet::PingReq);
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if wr.write_all(&ping).await.is_err() {
                        return;
                    }
                }
            });
            let mut chunk = vec![0u8; 2048];
            let result = loop {
                if done.load(Ordering::Relaxed) {
                    break Ok(());
                }
                // 2 KiB every 10 ms: about 200 KB/s, below what the publisher sends.
                match tokio::time::timeout(Duration::from_millis(500), rd.read(&mut chunk)).await {
                    Ok(Ok(0)) => break Err("the broker closed the slow subscriber"),
                    Ok(Err(_)) => break Err("the slow subscriber's socket failed"),
                    Ok(Ok(n)) => {
                        sub_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            pinger.abort();
            result
        })
    };

    // A QoS 1 publisher with keepalive 2 s sending about 600 messages a second, without
    // waiting for each PUBACK (as real clients pipeline), reading PUBACKs as they come.
    let publisher = connect_raw(addr, "busy-pub", 2).await;
    let (mut prd, mut pwr) = publisher.into_split();
    let acks = Arc::new(AtomicU64::new(0));
    let ack_reader = {
        let acks = acks.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            loop {
                while let Some(p) =
                    protocol::decode(&mut buf, ProtocolVersion::V3_1_1, usize::MAX).unwrap()
                {
                    match p {
                        Packet::PubAck(_) => {
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("publisher got {other:?}"),
                    }
                }
                match tokio::time::timeout(Duration::from_millis(200), prd.read_buf(&mut buf)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        return Err("the broker closed the busy publisher");
                    }
                    Ok(Ok(_)) => {}
                    Err(_) if done.load(Ordering::Relaxed) => return Ok(()),
                    Err(_) => {}
                }
            }
        })
    };
    let payload = Bytes::from(vec![b'p'; 1024]);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_micros(1666));
    while started.elapsed() < RUN {
        tick.tick().await;
        sent += 1;
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "busy/t".into(),
            pkid: (sent % 60_000 + 1) as u16,
            payload: payload.clone(),
            properties: None,
        };
        if pwr
            .write_all(&encode(&Packet::Publish(publish)))
            .await
            .is_err()
        {
            break;
        }
        if ack_reader.is_finished() || sub_task.is_finished() {
            break;
        }
    }
    // Every PUBACK comes back, and only then do the readers stop.
    let deadline = Instant::now() + DEADLINE;
    while acks.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
        && !ack_reader.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    let pub_result = ack_reader.await.unwrap();
    let sub_result = sub_task.await.unwrap();
    let closed_for_keepalive = broker.count_log("keepalive expired");
    assert_eq!(
        pub_result,
        Ok(()),
        "after {sent} publishes, {} acks",
        acks.load(Ordering::Relaxed)
    );
    assert_eq!(sub_result, Ok(()));
    assert_eq!(
        closed_for_keepalive, 0,
        "a busy client was closed for keepalive"
    );
    assert!(
        sent > 3000,
        "the publisher sent only {sent} messages in {RUN:?}"
    );
    assert_eq!(acks.load(Ordering::Relaxed), sent);
    assert!(sub_bytes.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keepalives() {
    let broker = Tandem::start("");
    let (mut client, _) =
        RawClient::connect_with(broker.addr, connect_packet("silent", true, 1)).await;
    let connected = Instant::now();
    match client.recv_within(DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the silent client closed, got {other:?}"),
    }
    let after = connected.elapsed();
    assert!(
        after >= Duration::from_millis(1400),
        "closed after {after:?}, before 1.5 x keepalive"
    );
    assert!(
        after < Duration::from_millis(3000),
        "closed only after {after:?}"
    );
    assert!(broker.wait_log("keepalive expired", DEADLINE).is_some());
}

#[tokio::test]
async fn a_pinging_client_outlives_many_keepalives() {
    // Pings every 800 ms with keepalive 1 s: alive after 5 s, well past the first
    // deadline (1.5 s), which must have been pushed back by the pings.
    let broker = Tandem::start("");
    let (mut client, _) =
        RawClient::connect_with(broker.addr, connect_packet("pinger", true, 1)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(800)).await;
        client.ping().await;
    }
    assert_eq!(broker.count_log("keepalive expired"), 0);
}

/// A subscriber whose queued messages each wait for a slow RECEIVE check is still read
/// while they do: its PINGREQs are answered and its keepalive never runs out. (The broker
/// used to move a whole window of deliveries into the outbox, one check after another,
/// reading nothing meanwhile: a healthy client was closed for an expired keepalive.)
#[tokio::test]
async fn a_subscriber_waiting_on_slow_receive_checks_is_still_read() {
    const QUEUED: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n\
         plugins:\n  slow:\n    endpoint: unix://{}/slow.sock\n    command: [{}, --roles, topic]\n    \
         timeout: 5s\n    config: {{ delay_ms: 100, topic_default: allow }}\n\
         topic-check: {{ plugins: [slow] }}\n",
        dir.path().display(),
        tandem_tests::policy_bin().display(),
    ));
    // A persistent subscription, its client away while 30 messages (one topic each:
    // no decision can be reused) are queued for it.
    let mut sub = RawClient::open(broker.addr, connect_packet("patient", false, 1)).await;
    assert!(matches!(sub.recv().await, Packet::ConnAck(_)));
    sub.subscribe("slow/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = RawClient::connect(broker.addr, "hurried").await;
    for i in 0..QUEUED {
        publisher
            .publish(&format!("slow/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    // Back with keepalive 1 s (closed after 1.5 s unheard): 30 checks of 100 ms each
    // are 3 s of deliveries. It pings every 400 ms and acknowledges what comes.
    let mut sub = RawClient::open(broker.addr, connect_packet("patient", false, 1)).await;
    assert!(matches!(sub.recv().await, Packet::ConnAck(_)));
    let (mut received, mut pongs) = (0, 0);
    let mut next_ping = Instant::now();
    let deadline = Instant::now() + DEADLINE * 2;
    while received < QUEUED {
        assert!(
            Instant::now() < deadline,
            "{received} of {QUEUED} delivered in time"
        );
        if Instant::now() >= next_ping {
            sub.send(&Packet::PingReq).await;
            next_ping += Duration::from_millis(400);
        }
        match sub.recv_within(Duration::from_millis(50)).await {
            Recv::Packet(Packet::Publish(p)) => {
                sub.ack(&p).await;
                received += 1;
            }
            Recv::Packet(Packet::PingResp) => pongs += 1,
            Recv::Packet(other) => panic!("unexpected {other:?}"),
            Recv::Closed => panic!(
                "closed after {received} deliveries and {pongs} PINGRESPs; broker log: keepalive expired x{}",
                broker.count_log("keepalive expired")
            ),
            Recv::Nothing => {}
        }
    }
    assert!(
        pongs >= 3,
        "its pings were answered while the deliveries waited ({pongs} PINGRESPs)"
    );
    assert_eq!(broker.count_log("keepalive expired"), 0);
}
