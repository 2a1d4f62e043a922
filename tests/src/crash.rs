//! A workload that outlives its broker: persistent publishers and subscribers that
//! reconnect whenever the broker comes back and keep their MQTT state across
//! connections, as a correct client does, and the ledger of what the broker
//! acknowledged and what it delivered. The storage crash tests kill the broker under
//! it and compare the two.
//!
//! The clients are written here, over the broker's own codec, rather than taken from a
//! crate: the test must know exactly when a PUBACK or PUBREC arrived (that is the
//! broker's promise) and must receive QoS 2 the way MQTT says (a PUBLISH whose packet id
//! was received and not yet released is a duplicate, not a new message), which is what
//! a broker that resends after a restart relies on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{
    ConnectReason, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS, Subscribe,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::connect_packet;
use crate::wire;

/// What the broker acknowledged to a flow's publisher and delivered to its subscriber.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Sequence numbers the broker acknowledged (PUBACK for QoS 1, PUBREC for QoS 2):
    /// from then on the message is the broker's to deliver.
    pub acked: Mutex<BTreeSet<u64>>,
    /// Sequence numbers delivered to the subscriber, and how often.
    pub delivered: Mutex<BTreeMap<u64, u32>>,
    /// Reconnects of the subscriber that found no session (its subscription lost).
    pub sessions_lost: AtomicU64,
    /// Whether the subscriber holds its subscription (set after its first SUBACK).
    pub subscribed: AtomicBool,
    /// Connections the clients made.
    pub connections: AtomicU64,
}

impl Ledger {
    /// Acknowledged messages never delivered.
    pub fn missing(&self) -> Vec<u64> {
        let delivered = self.delivered.lock().unwrap();
        let acked = self.acked.lock().unwrap();
        acked
            .iter()
            .filter(|s| !delivered.contains_key(s))
            .copied()
            .collect()
    }

    /// Deliveries past the first of a message.
    pub fn duplicates(&self) -> u64 {
        self.delivered
            .lock()
            .unwrap()
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    /// Messages acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// One connection attempt: TCP, CONNECT with a persistent session, CONNACK. `None`
/// while the broker is down or dies during the handshake.
async fn open(addr: SocketAddr, client_id: &str) -> Option<(TcpStream, BytesMut, bool)> {
    let mut stream = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let connect = connect_packet(client_id, false, 30);
    stream
        .write_all(&wire::encode(&Packet::Connect(Box::new(connect))))
        .await
        .ok()?;
    let mut buf = BytesMut::new();
    let read = wire::read_packet(&mut stream, &mut buf);
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(Some(Packet::ConnAck(ack)))) if ack.reason == ConnectReason::Success => {
            Some((stream, buf, ack.session_present))
        }
        _ => None,
    }
}

/// Publishes sequence numbers `0, 1, 2, ...` as `topic` at `qos` (1 or 2) with up to
/// `window` unacknowledged, until `stop`; then finishes what is in flight and returns.
/// Reconnects with its persistent session whenever the connection drops, resending
/// what is in flight (PUBLISH with DUP before the PUBREC, PUBREL after).
pub async fn publisher(
    addr: SocketAddr,
    client_id: String,
    topic: String,
    qos: QoS,
    window: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Stage {
        Published,
        Released,
    }
    let mut inflight: BTreeMap<u16, (u64, Stage)> = BTreeMap::new();
    let mut next_seq = 0u64;
    let mut next_pkid = 0u16;
    let publish = |pkid: u16, seq: u64, dup: bool| {
        Packet::Publish(Publish {
            dup,
            qos,
            retain: false,
            topic: topic.as_str().into(),
            pkid,
            payload: Bytes::from(seq.to_string()),
            properties: None,
        })
    };
    loop {
        if stop.load(Ordering::Relaxed) && inflight.is_empty() {
            return;
        }
        let Some((mut stream, mut buf, _)) = open(addr, &client_id).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        ledger.connections.fetch_add(1, Ordering::Relaxed);
        let mut out = BytesMut::new();
        for (&pkid, &(seq, stage)) in &inflight {
            let packet = match stage {
                Stage::Published => publish(pkid, seq, true),
                Stage::Released => Packet::PubRel(PubRel::new(pkid)),
            };
            out.extend_from_slice(&wire::encode(&packet));
        }
        loop {
            while !stop.load(Ordering::Relaxed) && inflight.len() < window {
                next_pkid = next_pkid % u16::MAX + 1;
                if inflight.contains_key(&next_pkid) {
                    continue;
                }
                out.extend_from_slice(&wire::encode(&publish(next_pkid, next_seq, false)));
                inflight.insert(next_pkid, (next_seq, Stage::Published));
                next_seq += 1;
            }
            if !out.is_empty() && stream.write_all(&out.split()).await.is_err() {
                break;
            }
            if stop.load(Ordering::Relaxed) && inflight.is_empty() {
                let _ = stream
                    .write_all(&wire::encode(&Packet::Disconnect(Default::default())))
                    .await;
                return;
            }
            let read = wire::read_packet(&mut stream, &mut buf);
            let packet = match tokio::time::timeout(Duration::from_millis(200), read).await {
                Err(_) => continue,
                Ok(Ok(Some(p))) => p,
                Ok(_) => break,
            };
            match packet {
                Packet::PubAck(a) => {
                    if let Some((seq, _)) = inflight.remove(&a.pkid) {
                        ledger.acked.lock().unwrap().insert(seq);
                    }
                }
                Packet::PubRec(a) => {
                    if let Some((seq, stage)) = inflight.get_mut(&a.pkid) {
                        ledger.acked.lock().unwrap().insert(*seq);
                        *stage = Stage::Released;
                        out.extend_from_slice(&wire::encode(&Packet::PubRel(PubRel::new(a.pkid))));
                    }
                }
                Packet::PubComp(a) => {
                    inflight.remove(&a.pkid);
                }
                _ => {}
            }
        }
    }
}

/// Subscribes `filter` at `qos` once, with a persistent session, and records every
/// message delivered until `stop`, acknowledging as MQTT says; reconnects whenever the
/// connection drops. A QoS 2 PUBLISH under a packet id received and not yet released
/// (PUBREL) is a resend of the same message: answered, not delivered again.
pub async fn subscriber(
    addr: SocketAddr,
    client_id: String,
    filter: String,
    qos: QoS,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) {
    let mut unreleased: HashSet<u16> = HashSet::new();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let Some((mut stream, mut buf, present)) = open(addr, &client_id).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        ledger.connections.fetch_add(1, Ordering::Relaxed);
        if !first && !present {
            ledger.sessions_lost.fetch_add(1, Ordering::Relaxed);
        }
        if first || !present {
            let subscribe = Subscribe {
                pkid: 1,
                filters: wire::subscribe_packet(1, &[(&filter, qos)]).filters,
                properties: None,
            };
            if stream
                .write_all(&wire::encode(&Packet::Subscribe(subscribe)))
                .await
                .is_err()
            {
                continue;
            }
        }
        while !stop.load(Ordering::Relaxed) {
            let read = wire::read_packet(&mut stream, &mut buf);
            let packet = match tokio::time::timeout(Duration::from_millis(200), read).await {
                Err(_) => continue,
                Ok(Ok(Some(p))) => p,
                Ok(_) => break,
            };
            let answer = match packet {
                Packet::SubAck(_) => {
                    first = false;
                    ledger.subscribed.store(true, Ordering::Relaxed);
                    None
                }
                Packet::Publish(p) => {
                    let seq: u64 = std::str::from_utf8(&p.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("payloads are sequence numbers");
                    let resend = p.qos == QoS::ExactlyOnce && unreleased.contains(&p.pkid);
                    if !resend {
                        *ledger.delivered.lock().unwrap().entry(seq).or_default() += 1;
                    }
                    match p.qos {
                        QoS::AtMostOnce => None,
                        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                        QoS::ExactlyOnce => {
                            unreleased.insert(p.pkid);
                            Some(Packet::PubRec(PubRec::new(p.pkid)))
                        }
                    }
                }
                Packet::PubRel(r) => {
                    unreleased.remove(&r.pkid);
                    Some(Packet::PubComp(PubComp::new(r.pkid)))
                }
                _ => None,
            };
            if let Some(answer) = answer
                && stream.write_all(&wire::encode(&answer)).await.is_err()
            {
                break;
            }
        }
        let _ = stream
            .write_all(&wire::encode(&Packet::Disconnect(Default::default())))
            .await;
    }
}
