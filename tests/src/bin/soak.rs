//! `tandem-soak`: a long run of the release `tandem` with real example plugins, under the
//! traffic and the faults that found issue #10's liveness and delivery bugs. Not part of
//! `cargo test`: run it with `tests/soak/run.sh` (see `tests/soak/README.md`).
//!
//! It starts the broker itself (with `tandem-policy` for Authenticate and `tandem-topic-acl`
//! for topic checks, RECEIVE included), then runs, all on 127.0.0.1:
//! - long-lived clients `u<i>` in teams of two (persistent sessions), each publishing QoS
//!   0/1/2 in turn to its team's topic with a sequence number in the payload, subscribed to
//!   its team (and one in ten also to every team's topic, which RECEIVE must filter);
//! - slow readers allowed to read every team, reading a packet every 20 ms;
//! - churn at a fixed rate: wills (some outside the ACL), persistent sessions coming back,
//!   wrong passwords, publishes outside the ACL;
//! - a plugin process killed (SIGKILL) every `--kill-every`, alternately auth and topic;
//! - a reload (`tandem reload --pid`, with a changed plugin config) every `--reload-every`;
//! - the broker's RSS sampled every 5 s.
//!
//! Then publishing stops, deliveries drain, and it reports (one JSON line on stdout, a
//! summary on stderr): spurious disconnects of long-lived clients, acknowledged QoS 1/2
//! messages their team mates never received, cross-user deliveries, and the RSS slope after
//! warm-up. It exits 1 if any of the first three (or a wrong password let in) is not 0.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use tandem_broker::protocol::{
    self, Connect, ConnectReason, LastWill, Packet, ProtocolVersion, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Soak test for Tandem: long-lived clients, churn, plugin kills, reloads")]
struct Args {
    /// Directory holding `tandem`, `tandem-policy` and `tandem-topic-acl` (release).
    #[arg(long)]
    bin_dir: PathBuf,
    /// How long clients publish (then deliveries drain for `--drain`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Long-lived clients (an even number: teams of two).
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Publishes per second of each long-lived client.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Churn connections per second.
    #[arg(long, default_value_t = 50.0)]
    churn: f64,
    /// Slow readers.
    #[arg(long, default_value_t = 10)]
    slow: usize,
    /// A plugin process is killed this often.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    kill_every: Duration,
    /// The broker reloads its configuration this often.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    reload_every: Duration,
    /// RSS samples before this are warm-up (not in the slope).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// How long deliveries may drain after publishing stops.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Work directory (config, ACL, broker log); a temporary one if not given.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Counters shared by every task.
#[derive(Default)]
struct Counters {
    spurious_disconnects: AtomicU64,
    reconnects: AtomicU64,
    reconnect_failures: AtomicU64,
    sessions_not_resumed: AtomicU64,
    cross_user: AtomicU64,
    wrong_password_accepted: AtomicU64,
    published: [AtomicU64; 3],
    churn_started: AtomicU64,
    churn_skipped: AtomicU64,
    churn_failed: AtomicU64,
    slow_disconnects: AtomicU64,
    kills: AtomicU64,
    reloads: AtomicU64,
}

struct Shared {
    addr: SocketAddr,
    counters: Counters,
    /// Publishing stops.
    stop_publishing: CancellationToken,
    /// Everything stops.
    end: CancellationToken,
    /// The first few violations, for the report.
    notes: Mutex<Vec<String>>,
    slow_readers: usize,
}

impl Shared {
    fn note(&self, what: String) {
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 20 {
            eprintln!("soak: {what}");
            notes.push(what);
        }
    }
}

/// Team of long-lived client `i`.
fn team(i: usize) -> usize {
    i / 2
}

fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// A connection: reader and writer halves, and the bytes read but not decoded yet.
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Conn {
    async fn open(
        addr: SocketAddr,
        connect: Connect,
    ) -> std::io::Result<(Self, protocol::ConnAck)> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut c = Self {
            rd,
            wr,
            buf: BytesMut::new(),
        };
        c.send(&Packet::Connect(connect)).await?;
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Ok(Some(Packet::ConnAck(ack)))) => Ok((c, ack)),
            Ok(Ok(other)) => Err(std::io::Error::other(format!(
                "expected CONNACK, got {other:?}"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("no CONNACK in 10 s")),
        }
    }

    async fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        protocol::encode(p, ProtocolVersion::V3_1_1, &mut out);
        self.wr.write_all(&out).await
    }

    /// The next packet; `None` when the broker closed the connection.
    async fn next(&mut self) -> std::io::Result<Option<Packet>> {
        loop {
            if let Some(p) = self.decoded()? {
                return Ok(Some(p));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    fn decoded(&mut self) -> std::io::Result<Option<Packet>> {
        protocol::decode(&mut self.buf, ProtocolVersion::V3_1_1, usize::MAX)
            .map_err(|e| std::io::Error::other(format!("malformed packet from the broker: {e}")))
    }
}

fn connect_packet(
    client_id: &str,
    user: &str,
    pass: &str,
    clean: bool,
    keep_alive: u16,
) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: clean,
        keep_alive,
        client_id: client_id.into(),
        username: Some(user.into()),
        password: Some(Bytes::copy_from_slice(pass.as_bytes())),
        will: None,
        properties: None,
    }
}

fn subscribe_packet(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|(f, qos)| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions {
                    qos: *qos,
                    ..Default::default()
                },
            })
            .collect(),
        properties: None,
    })
}

fn publish_packet(topic: &str, payload: String, qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        properties: None,
    })
}

/// Checks a delivery to `receiver_team` (None: allowed to read every team) against the ACL:
/// the topic's team must be the publisher's (publish-acl) and, for a team member, its own
/// (receive-acl). Returns the long-lived publisher index and sequence for `m` messages.
fn check_delivery(
    sh: &Shared,
    receiver: &str,
    receiver_team: Option<usize>,
    p: &Publish,
) -> Option<(usize, u64)> {
    let topic_team: Option<usize> = p.topic.split('/').nth(1).and_then(|t| t.parse().ok());
    let text = String::from_utf8_lossy(&p.payload);
    let mut words = text.split(' ');
    let kind = words.next().unwrap_or("");
    let publisher: Option<usize> = words.next().and_then(|u| u.strip_prefix('u')?.parse().ok());
    let seq: Option<u64> = words.next().and_then(|s| s.parse().ok());
    let (Some(topic_team), Some(publisher)) = (topic_team, publisher) else {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} got an unexpected message {:?} {text:?}",
            p.topic
        ));
        return None;
    };
    if team(publisher) != topic_team {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} got {:?} {text:?}: u{publisher} may not publish there",
            p.topic
        ));
        return None;
    }
    if let Some(own) = receiver_team
        && own != topic_team
    {
        sh.counters.cross_user.fetch_add(1, Ordering::Relaxed);
        sh.note(format!(
            "{receiver} (team {own}) got {:?} {text:?}: not its team",
            p.topic
        ));
        return None;
    }
    (kind == "m").then_some(())?;
    Some((publisher, seq?))
}

/// What a long-lived client saw: the QoS 1/2 sequences acknowledged to it as publisher, and
/// the sequences it received per publisher.
#[derive(Default)]
struct Outcome {
    /// Sequence -> when it was sent.
    acked: HashMap<u64, Instant>,
    received: HashMap<usize, HashSet<u64>>,
    /// When the team subscription was first granted.
    subscribed: Option<Instant>,
}

async fn long_lived(i: usize, sh: Arc<Shared>, rate: f64) -> Outcome {
    let user = format!("u{i}");
    let pass = password(&user);
    let client_id = format!("ll-{i}");
    let t = team(i);
    let own_filter = format!("teams/{t}/#");
    let topic_base = format!("teams/{t}/msg");
    let keep_alive: u16 = [3, 10, 30][i % 3];
    let sniffer = i.is_multiple_of(10);
    let mut out = Outcome::default();
    let mut seq = 0u64;
    let mut pkid = 0u16;
    let mut connected_once = false;
    let period = Duration::from_secs_f64(1.0 / rate);
    // Spread the start over one period.
    tokio::time::sleep(period.mul_f64((i % 97) as f64 / 97.0)).await;
    'session: while !sh.end.is_cancelled() {
        let opened = Conn::open(
            sh.addr,
            connect_packet(&client_id, &user, &pass, false, keep_alive),
        )
        .await;
        let mut c = match opened {
            Ok((c, ack)) if ack.reason == ConnectReason::Success => {
                if connected_once {
                    sh.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    if !ack.session_present {
                        sh.counters
                            .sessions_not_resumed
                            .fetch_add(1, Ordering::Relaxed);
                        sh.note(format!("{client_id}: persistent session not resumed"));
                    }
                }
                connected_once = true;
                c
            }
            other => {
                if connected_once {
                    sh.counters
                        .reconnect_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                if let Ok((_, ack)) = other {
                    eprintln!("soak: {client_id} refused: {:?}", ack.reason);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let mut filters = vec![(own_filter.as_str(), QoS::ExactlyOnce)];
        if sniffer {
            filters.push(("teams/+/msg/#", QoS::AtLeastOnce));
        }
        pkid = pkid % 60000 + 1;
        if c.send(&subscribe_packet(pkid, &filters)).await.is_err() {
            continue;
        }
        let mut inflight: HashMap<u16, (u64, QoS, Instant)> = HashMap::new();
        let mut resubscribe = false;
        let mut publish_tick = tokio::time::interval(period);
        publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent = Instant::now();
        let mut ping_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let result: std::io::Result<bool> = tokio::select! {
                _ = sh.end.cancelled() => {
                    let _ = c.send(&Packet::Disconnect(Default::default())).await;
                    break 'session;
                }
                read = c.rd.read_buf(&mut c.buf) => match read {
                    Ok(0) => Ok(false),
                    Err(e) => Err(e),
                    Ok(_) => {
                        let mut ok = Ok(true);
                        loop {
                            let packet = match c.decoded() {
                                Ok(Some(p)) => p,
                                Ok(None) => break,
                                Err(e) => { ok = Err(e); break; }
                            };
                            let reply = match packet {
                                Packet::Publish(p) => {
                                    if let Some((from, s)) = check_delivery(&sh, &client_id, Some(t), &p) {
                                        out.received.entry(from).or_default().insert(s);
                                    }
                                    match p.qos {
                                        QoS::AtMostOnce => None,
                                        QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                                        QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                                    }
                                }
                                Packet::PubRel(r) => Some(Packet::PubComp(PubComp::new(r.pkid))),
                                Packet::PubAck(a) => {
                                    if let Some((s, QoS::AtLeastOnce, at)) = inflight.remove(&a.pkid) {
                                        out.acked.insert(s, at);
                                    }
                                    None
                                }
                                Packet::SubAck(a) => {
                                    // A refused filter (the plugin down) is asked again.
                                    if a.reasons.iter().any(|r| matches!(r, protocol::SubscribeReason::Failure(_))) {
                                        resubscribe = true;
                                    } else if out.subscribed.is_none() {
                                        out.subscribed = Some(Instant::now());
                                    }
                                    None
                                }
                                Packet::PubRec(r) => Some(Packet::PubRel(PubRel::new(r.pkid))),
                                Packet::PubComp(r) => {
                                    if let Some((s, QoS::ExactlyOnce, at)) = inflight.remove(&r.pkid) {
                                        out.acked.insert(s, at);
                                    }
                                    None
                                }
                                _ => None,
                            };
                            if let Some(reply) = reply {
                                if let Err(e) = c.send(&reply).await {
                                    ok = Err(e);
                                    break;
                                }
                                last_sent = Instant::now();
                            }
                        }
                        ok
                    }
                },
                _ = publish_tick.tick(), if !sh.stop_publishing.is_cancelled() => {
                    seq += 1;
                    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][(seq % 3) as usize];
                    let id = if qos == QoS::AtMostOnce { 0 } else {
                        loop {
                            pkid = pkid % 60000 + 1;
                            if !inflight.contains_key(&pkid) { break pkid; }
                        }
                    };
                    if qos != QoS::AtMostOnce {
                        inflight.insert(id, (seq, qos, Instant::now()));
                    }
                    sh.counters.published[qos as usize].fetch_add(1, Ordering::Relaxed);
                    last_sent = Instant::now();
                    // One topic per message, so the broker's log of a refused publish names it.
                    c.send(&publish_packet(&format!("{topic_base}/{seq}"), format!("m u{i} {seq}"), qos, id)).await.map(|()| true)
                }
                _ = ping_tick.tick() => {
                    if resubscribe {
                        resubscribe = false;
                        pkid = pkid % 60000 + 1;
                        c.send(&subscribe_packet(pkid, &filters)).await.map(|()| true)
                    } else if last_sent.elapsed() >= Duration::from_secs(u64::from(keep_alive)) / 2 {
                        last_sent = Instant::now();
                        c.send(&Packet::PingReq).await.map(|()| true)
                    } else {
                        Ok(true)
                    }
                }
            };
            match result {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    if sh.end.is_cancelled() {
                        break 'session;
                    }
                    sh.counters
                        .spurious_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    sh.note(format!(
                        "{client_id} (keepalive {keep_alive}s) disconnected by the broker: {}",
                        match result {
                            Err(e) => e.to_string(),
                            _ => "closed".into(),
                        }
                    ));
                    continue 'session;
                }
            }
        }
    }
    out
}

async fn slow_reader(k: usize, sh: Arc<Shared>) {
    let user = format!("slow{k}");
    let client_id = format!("slow-{k}");
    while !sh.end.is_cancelled() {
        let Ok((mut c, ack)) = Conn::open(
            sh.addr,
            connect_packet(&client_id, &user, &password(&user), true, 30),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if ack.reason != ConnectReason::Success {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if c.send(&subscribe_packet(1, &[("teams/+/msg/#", QoS::AtLeastOnce)]))
            .await
            .is_err()
        {
            continue;
        }
        let mut last_ping = Instant::now();
        loop {
            let next = tokio::select! {
                _ = sh.end.cancelled() => return,
                next = c.next() => next,
            };
            match next {
                Ok(Some(Packet::Publish(p))) => {
                    check_delivery(&sh, &client_id, None, &p);
                    if p.qos == QoS::AtLeastOnce
                        && c.send(&Packet::PubAck(PubAck::new(p.pkid))).await.is_err()
                    {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
            if last_ping.elapsed() > Duration::from_secs(10) {
                last_ping = Instant::now();
                if c.send(&Packet::PingReq).await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !sh.end.is_cancelled() {
            sh.counters.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One short-lived connection of kind `n % 5`.
async fn churn_one(
    n: u64,
    clients: usize,
    sh: Arc<Shared>,
    persistent: Arc<Vec<tokio::sync::Mutex<()>>>,
) -> std::io::Result<()> {
    let i = (n as usize * 7919) % clients;
    let user = format!("u{i}");
    let pass = password(&user);
    let t = team(i);
    let other = (t + 1 + (n as usize % (clients / 2 - 1).max(1))) % (clients / 2);
    match n % 5 {
        // A will, in or out of the ACL, published when the TCP connection just drops.
        0 | 4 => {
            let target = if n.is_multiple_of(5) { t } else { other };
            let mut connect = connect_packet(&format!("will-{n}"), &user, &pass, true, 30);
            connect.will = Some(LastWill {
                topic: format!("teams/{target}/will").into(),
                payload: format!("w u{i} {n}").into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: None,
            });
            let (c, _) = Conn::open(sh.addr, connect).await?;
            drop(c);
        }
        // A persistent session that comes back.
        1 => {
            let k = n as usize % persistent.len();
            let Ok(_held) = persistent[k].try_lock() else {
                return Ok(());
            };
            let u = format!("u{}", (k * 2) % clients);
            let (mut c, ack) = Conn::open(
                sh.addr,
                connect_packet(&format!("pc-{k}"), &u, &password(&u), false, 30),
            )
            .await?;
            if ack.reason == ConnectReason::Success {
                c.send(&subscribe_packet(
                    1,
                    &[(
                        &format!("teams/{}/#", team((k * 2) % clients)),
                        QoS::AtLeastOnce,
                    )],
                ))
                .await?;
                // Read what was queued for a moment, acknowledging it.
                let until = Instant::now() + Duration::from_millis(200);
                while let Ok(Ok(Some(p))) = tokio::time::timeout_at(until.into(), c.next()).await {
                    if let Packet::Publish(p) = p {
                        check_delivery(&sh, &format!("pc-{k}"), Some(team((k * 2) % clients)), &p);
                        if p.qos == QoS::AtLeastOnce {
                            c.send(&Packet::PubAck(PubAck::new(p.pkid))).await?;
                        }
                    }
                }
                c.send(&Packet::Disconnect(Default::default())).await?;
            }
        }
        // A wrong password.
        2 => {
            let (_, ack) = Conn::open(
                sh.addr,
                connect_packet(&format!("bad-{n}"), &user, "wrong", true, 30),
            )
            .await?;
            if ack.reason == ConnectReason::Success {
                sh.counters
                    .wrong_password_accepted
                    .fetch_add(1, Ordering::Relaxed);
                sh.note(format!("a wrong password for {user} was accepted"));
            }
        }
        // A publish outside the ACL (acknowledged, never delivered).
        _ => {
            let (mut c, ack) = Conn::open(
                sh.addr,
                connect_packet(&format!("oob-{n}"), &user, &pass, true, 30),
            )
            .await?;
            if ack.reason == ConnectReason::Success {
                c.send(&publish_packet(
                    &format!("teams/{other}/msg/o{n}"),
                    format!("o u{i} {n}"),
                    QoS::AtLeastOnce,
                    1,
                ))
                .await?;
                let _ = tokio::time::timeout(Duration::from_secs(5), c.next()).await;
                c.send(&Packet::Disconnect(Default::default())).await?;
            }
        }
    }
    Ok(())
}

async fn churn(rate: f64, clients: usize, sh: Arc<Shared>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(500));
    let persistent = Arc::new(
        (0..50)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect::<Vec<_>>(),
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = sh.stop_publishing.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            sh.counters.churn_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        sh.counters.churn_started.fetch_add(1, Ordering::Relaxed);
        let (sh, persistent) = (sh.clone(), persistent.clone());
        tokio::spawn(async move {
            let done = tokio::time::timeout(
                Duration::from_secs(20),
                churn_one(n, clients, sh.clone(), persistent),
            )
            .await;
            if !matches!(done, Ok(Ok(()))) {
                sh.counters.churn_failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
}

/// Writes the ACL file: team members publish, subscribe and receive their team; they may
/// subscribe to every team's `msg` (RECEIVE filters it); slow readers may read every team.
fn write_acl(path: &Path, clients: usize, slow: usize) -> Result<()> {
    let mut sub = String::from("subscribe-acl:\n");
    let mut publ = String::from("publish-acl:\n");
    let mut recv = String::from("receive-acl:\n");
    for i in 0..clients {
        let t = team(i);
        sub += &format!("  u{i}: [\"teams/{t}/#\", \"teams/+/msg/#\"]\n");
        publ += &format!("  u{i}: [\"teams/{t}/#\"]\n");
        recv += &format!("  u{i}: [\"teams/{t}/#\"]\n");
    }
    for k in 0..slow {
        sub += &format!("  slow{k}: [\"teams/+/msg/#\"]\n");
        recv += &format!("  slow{k}: [\"teams/+/msg/#\"]\n");
    }
    std::fs::write(path, format!("{sub}{publ}{recv}"))?;
    Ok(())
}

fn write_config(
    dir: &Path,
    bin: &Path,
    clients: usize,
    slow: usize,
    generation: u64,
) -> Result<PathBuf> {
    let mut users = String::new();
    for u in (0..clients)
        .map(|i| format!("u{i}"))
        .chain((0..slow).map(|k| format!("slow{k}")))
    {
        users += &format!("        {u}: {{ password: {} }}\n", password(&u));
    }
    let yaml = format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
mqtt:
  max_connections: 5000
plugins:
  users:
    endpoint: unix://{d}/users.sock
    command: [{bin}/tandem-policy, --roles, auth]
    config:
      # Changed by each reload, so Describe is pushed again: {generation}
      auth_default: deny
      users:
{users}  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}/tandem-topic-acl]
    config:
      acl_file: {d}/acl.yaml
      cache_ttl_ms: {ttl}
auth:
  plugins: [users]
topic-check:
  enable: true
  plugins: [acl]
"#,
        d = dir.display(),
        bin = bin.display(),
        ttl = 1000 + generation % 2,
    );
    let path = dir.join("tandem.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Plugin processes the broker started: children of `broker` whose command line names `bin`.
fn plugin_pid(broker: u32, bin: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(broker) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(bin) {
            return Some(pid);
        }
    }
    None
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Least-squares slope of `samples` (seconds, KiB), in KiB per minute.
fn slope(samples: &[(f64, u64)]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    (sxx > 0.0).then(|| sxy / sxx * 60.0)
}

struct Broker {
    child: Child,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(bin: &Path, config: &Path, dir: &Path) -> Result<(Broker, SocketAddr)> {
    let log = dir.join("tandem.log");
    let child = Command::new(bin.join("tandem"))
        .arg("--config")
        .arg(config)
        .env("TANDEM_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("plugins.log"))?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("start tandem")?;
    let mut broker = Broker { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter(|l| l.contains("listening listener=default"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        {
            return Ok((broker, addr.parse()?));
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            bail!("tandem exited at start ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("tandem did not listen within 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients < 2 || args.clients % 2 != 0 {
        bail!("--clients must be even and at least 2");
    }
    let tmp = tempfile::tempdir()?;
    let dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    write_acl(&dir.join("acl.yaml"), args.clients, args.slow)?;
    let config = write_config(&dir, &args.bin_dir, args.clients, args.slow, 0)?;
    let (broker, addr) = start_broker(&args.bin_dir, &config, &dir)?;
    let broker_pid = broker.child.id();
    eprintln!(
        "soak: tandem pid {broker_pid} on {addr}; {} long-lived clients at {}/s, churn {}/s, {} slow readers, for {:?}; work dir {}",
        args.clients,
        args.rate,
        args.churn,
        args.slow,
        args.duration,
        dir.display()
    );
    let sh = Arc::new(Shared {
        addr,
        counters: Counters::default(),
        stop_publishing: CancellationToken::new(),
        end: CancellationToken::new(),
        notes: Mutex::new(Vec::new()),
        slow_readers: args.slow,
    });
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| tokio::spawn(long_lived(i, sh.clone(), args.rate)))
        .collect();
    let slow: Vec<_> = (0..sh.slow_readers)
        .map(|k| tokio::spawn(slow_reader(k, sh.clone())))
        .collect();
    let churn = tokio::spawn(churn(args.churn, args.clients, sh.clone()));

    // Faults, RSS samples and progress, until publishing stops.
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let mut next_kill = started + args.kill_every;
    let mut next_reload = started + args.reload_every;
    let mut next_sample = started;
    let mut kill_topic = true;
    let mut generation = 0u64;
    let stop_at = started + args.duration;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = Instant::now();
        if now >= next_sample {
            next_sample += Duration::from_secs(5);
            if let Some(kib) = rss_kib(broker_pid) {
                samples
                    .lock()
                    .unwrap()
                    .push((started.elapsed().as_secs_f64(), kib));
            } else {
                sh.note("the broker process is gone".into());
                break;
            }
            let c = &sh.counters;
            if samples.lock().unwrap().len() % 6 == 1 {
                eprintln!(
                    "soak: {:>4.0}s rss {} KiB, published {}, spurious disconnects {}, cross-user {}, churn {} (failed {}), kills {}, reloads {}",
                    started.elapsed().as_secs_f64(),
                    samples.lock().unwrap().last().map_or(0, |s| s.1),
                    c.published
                        .iter()
                        .map(|p| p.load(Ordering::Relaxed))
                        .sum::<u64>(),
                    c.spurious_disconnects.load(Ordering::Relaxed),
                    c.cross_user.load(Ordering::Relaxed),
                    c.churn_started.load(Ordering::Relaxed),
                    c.churn_failed.load(Ordering::Relaxed),
                    c.kills.load(Ordering::Relaxed),
                    c.reloads.load(Ordering::Relaxed),
                );
            }
        }
        if now >= next_kill {
            next_kill += args.kill_every;
            let bin = if kill_topic {
                "tandem-topic-acl"
            } else {
                "tandem-policy"
            };
            kill_topic = !kill_topic;
            match plugin_pid(broker_pid, bin) {
                Some(pid) => {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    sh.counters.kills.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: killed {bin} (pid {pid})");
                }
                None => sh.note(format!("no {bin} process to kill")),
            }
        }
        if now >= next_reload {
            next_reload += args.reload_every;
            generation += 1;
            write_config(&dir, &args.bin_dir, args.clients, args.slow, generation)?;
            let status = Command::new(args.bin_dir.join("tandem"))
                .args(["reload", "--pid", &broker_pid.to_string()])
                .stdout(Stdio::null())
                .status()?;
            sh.counters.reloads.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: reload {generation}: {status}");
        }
    }
    sh.stop_publishing.cancel();
    let _ = churn.await;
    eprintln!("soak: publishing stopped; draining for {:?}", args.drain);
    tokio::time::sleep(args.drain).await;
    sh.end.cancel();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.push(c.await?);
    }
    for s in slow {
        let _ = s.await;
    }

    // Publishes the broker refused (a publish check that erred or denied: failing closed,
    // acknowledged all the same, as 3.1.1 cannot say no), read from its log by topic.
    let log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    let refused: HashSet<(usize, u64)> = log
        .lines()
        .filter(|l| l.contains("topic check denied") && l.contains("ACTION_PUBLISH"))
        .filter_map(|l| {
            let topic = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("topic=teams/"))?;
            let mut parts = topic.split('/');
            let t: usize = parts.next()?.parse().ok()?;
            let seq: u64 = parts.nth(1)?.trim_end_matches(['}', ':']).parse().ok()?;
            let cid = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("client_id=ll-"))?;
            let p: usize = cid.trim_end_matches(['}', ':']).parse().ok()?;
            (team(p) == t).then_some((p, seq))
        })
        .collect();
    // Acknowledged QoS 1/2 messages, published once the receiver's subscription was granted
    // and not refused at publish, that a team member (the publisher included: it is
    // subscribed to its own team) never received.
    let mut lost = 0u64;
    let mut acked_total = 0u64;
    let mut refused_acked = 0u64;
    for (p, out) in outcomes.iter().enumerate() {
        acked_total += out.acked.len() as u64;
        refused_acked += out
            .acked
            .keys()
            .filter(|s| refused.contains(&(p, **s)))
            .count() as u64;
        let mates = [team(p) * 2, team(p) * 2 + 1];
        for r in mates {
            let got = outcomes[r].received.get(&p);
            let Some(since) = outcomes[r].subscribed else {
                sh.note(format!("u{r} was never subscribed"));
                continue;
            };
            let mut missing: Vec<u64> = out
                .acked
                .iter()
                .filter(|(s, at)| **at >= since && !refused.contains(&(p, **s)))
                .map(|(s, _)| *s)
                .filter(|s| !got.is_some_and(|g| g.contains(s)))
                .collect();
            missing.sort_unstable();
            if !missing.is_empty() {
                lost += missing.len() as u64;
                sh.note(format!(
                    "u{r} never received {} acknowledged messages of u{p} (seq {:?})",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
        }
    }
    let keepalive_closes = log
        .lines()
        .filter(|l| l.contains("keepalive expired"))
        .count();
    let reload_refused = log.lines().filter(|l| l.contains("reload refused")).count();
    let samples = samples.lock().unwrap().clone();
    let warm: Vec<_> = samples
        .iter()
        .copied()
        .filter(|s| s.0 >= args.warmup.as_secs_f64())
        .collect();
    let slope_kib = slope(&warm);
    let c = &sh.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "duration_s": args.duration.as_secs(),
        "clients": args.clients,
        "published": { "qos0": get(&c.published[0]), "qos1": get(&c.published[1]), "qos2": get(&c.published[2]) },
        "acked_qos12": acked_total,
        "acked_but_refused_at_publish": refused_acked,
        "lost_acked_qos12": lost,
        "spurious_disconnects": get(&c.spurious_disconnects),
        "reconnects": get(&c.reconnects),
        "reconnect_failures": get(&c.reconnect_failures),
        "sessions_not_resumed": get(&c.sessions_not_resumed),
        "cross_user_deliveries": get(&c.cross_user),
        "wrong_passwords_accepted": get(&c.wrong_password_accepted),
        "churn": { "started": get(&c.churn_started), "failed": get(&c.churn_failed), "skipped": get(&c.churn_skipped) },
        "slow_reader_disconnects": get(&c.slow_disconnects),
        "plugin_kills": get(&c.kills),
        "reloads": get(&c.reloads),
        "reloads_refused": reload_refused,
        "broker_keepalive_closes_logged": keepalive_closes,
        "rss_kib": { "first": samples.first().map(|s| s.1), "last": samples.last().map(|s| s.1),
                     "max": samples.iter().map(|s| s.1).max(), "samples": samples.len(),
                     "slope_after_warmup_kib_per_min": slope_kib, "warmup_s": args.warmup.as_secs() },
        "notes": *sh.notes.lock().unwrap(),
    });
    println!("{report}");
    let failed = get(&c.spurious_disconnects) > 0
        || lost > 0
        || get(&c.cross_user) > 0
        || get(&c.wrong_password_accepted) > 0;
    eprintln!(
        "soak: {} — spurious disconnects {}, acknowledged QoS 1/2 lost {} of {acked_total}, cross-user deliveries {}, wrong passwords let in {}; RSS {:?} -> {:?} KiB, slope after warm-up {} KiB/min; broker log {}",
        if failed { "FAILED" } else { "ok" },
        get(&c.spurious_disconnects),
        lost,
        get(&c.cross_user),
        get(&c.wrong_password_accepted),
        samples.first().map(|s| s.1),
        samples.last().map(|s| s.1),
        slope_kib.map_or("n/a".into(), |s| format!("{s:.0}")),
        broker.log.display(),
    );
    drop(broker);
    if args.work_dir.is_none() {
        // Keep the broker's log of a failed run.
        if failed {
            let kept = std::env::temp_dir().join(format!("tandem-soak-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            let _ = std::fs::copy(dir.join("tandem.log"), kept.join("tandem.log"));
            eprintln!("soak: broker log kept in {}", kept.display());
        }
    }
    std::process::exit(i32::from(failed));
}
