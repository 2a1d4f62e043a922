//! One task per MQTT connection: the handshake, the publisher, the subscriber and the
//! connect-CONNACK-disconnect loop.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::time::{sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::stats::{Counters, Shared, Stamp, new_histogram};
use crate::transport::{Dialer, Transport};
use crate::wire;

/// How long the broker has to accept a connection (TCP, TLS handshake, WebSocket upgrade),
/// answer CONNECT or SUBSCRIBE.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffers grow by this much when they run low.
const READ_CHUNK: usize = 64 * 1024;
/// How long a publisher waits for its subscribers before it sends a batch anyway (so that a
/// broker dropping messages slows the run down instead of stopping it).
const STALL: Duration = Duration::from_secs(1);

/// Opens a connection (with its TLS handshake and WebSocket upgrade, if any) and completes
/// CONNECT/CONNACK, with a clean session or (`clean` false) a persistent one. Leftover bytes
/// (messages a persistent session had queued) stay in `rbuf`.
pub(crate) async fn open<S: Transport>(
    dialer: &Dialer,
    client_id: &str,
    keep_alive: u16,
    clean: bool,
    rbuf: &mut BytesMut,
) -> Result<S> {
    let addr = dialer.addr;
    let mut stream = timeout(HANDSHAKE_TIMEOUT, S::dial(dialer))
        .await
        .with_context(|| {
            format!(
                "broker at {addr} did not accept a {} connection within 5s",
                dialer.kind.name()
            )
        })??;
    let mut wbuf = BytesMut::with_capacity(64);
    wire::connect(&mut wbuf, client_id, keep_alive, clean);
    stream.send(&wbuf).await?;
    let (first, body) = read_packet(&mut stream, rbuf, "CONNACK").await?;
    ensure!(
        first >> 4 == wire::CONNACK && body.len() >= 2,
        "broker at {addr} answered CONNECT with packet type {} instead of CONNACK",
        first >> 4
    );
    ensure!(
        body[1] == 0,
        "broker at {addr} refused the connection of {client_id}: return code {} ({})",
        body[1],
        wire::connack_reason(body[1])
    );
    Ok(stream)
}

/// Subscribes to `filter` and waits for its SUBACK.
pub(crate) async fn subscribe<S: Transport>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    filter: &str,
    qos: u8,
) -> Result<()> {
    let mut wbuf = BytesMut::with_capacity(64);
    wire::subscribe(&mut wbuf, 1, filter.as_bytes(), qos);
    stream.send(&wbuf).await?;
    let (first, body) = read_packet(stream, rbuf, "SUBACK").await?;
    ensure!(
        first >> 4 == wire::SUBACK && body.len() >= 3,
        "broker answered SUBSCRIBE with packet type {} instead of SUBACK",
        first >> 4
    );
    // The one reason code is last (MQTT 5 puts a property block before it).
    let body = &body[body.len() - 3..];
    ensure!(
        body[2] != 0x80,
        "broker refused the subscription to {filter} (SUBACK 0x80)"
    );
    ensure!(
        body[2] == qos,
        "broker granted QoS {} for {filter} where QoS {qos} was asked",
        body[2]
    );
    Ok(())
}

/// Reads one whole packet during a handshake, with a deadline.
async fn read_packet<S: Transport>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    what: &str,
) -> Result<(u8, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        if let Some((header, total)) = wire::check(rbuf)? {
            let first = rbuf[0];
            let body = rbuf[header..total].to_vec();
            rbuf.advance(total);
            return Ok((first, body));
        }
        rbuf.reserve(1024);
        let n = tokio::time::timeout_at(deadline, stream.read_buf(rbuf))
            .await
            .with_context(|| format!("broker did not send {what} within 5s"))??;
        if n == 0 {
            bail!("broker closed the connection instead of sending {what}");
        }
    }
}

/// How a publisher sends.
#[derive(Clone)]
pub(crate) struct PublisherConfig {
    /// Index among all publishers of the run, carried in every payload.
    pub(crate) index: usize,
    /// Indexes of the subscribers that receive this publisher's topic.
    pub(crate) subscribers: Vec<usize>,
    /// Most messages this publisher may be ahead of its slowest subscriber; 0 for no limit.
    pub(crate) ahead: u64,
    /// Topic published to.
    pub(crate) topic: String,
    pub(crate) qos: u8,
    pub(crate) payload: usize,
    /// Most PUBLISH packets encoded into one write.
    pub(crate) batch: usize,
    /// Most QoS 1/2 messages sent and not yet acknowledged.
    pub(crate) inflight: usize,
    /// Messages per second for this publisher; 0 means as fast as the broker takes them.
    pub(crate) rate: f64,
}

/// Publishes until `stop`, then waits for its outstanding acknowledgements and disconnects.
pub(crate) async fn publisher<S: Transport>(
    mut stream: S,
    mut rbuf: BytesMut,
    cfg: PublisherConfig,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<()> {
    let topic = cfg.topic.as_bytes();
    let mut wbuf = BytesMut::with_capacity(cfg.batch * (cfg.payload + topic.len() + 8));
    let mut pending_rel: Vec<u16> = Vec::new();
    let mut inflight = 0usize;
    let mut next_id: u16 = 1;
    let mut sent: u64 = 0;
    let start = tokio::time::Instant::now();
    let gated = cfg.ahead > 0 && cfg.payload >= Stamp::LEN && !cfg.subscribers.is_empty();
    // Since when the subscribers have held this publisher back; after `STALL` one batch goes
    // out whatever they have seen.
    let mut held_since: Option<tokio::time::Instant> = None;
    loop {
        let stopping = stop.is_cancelled();
        // Take in whatever acknowledgements have arrived, without waiting (`rbuf` may hold
        // some already: a TLS or WebSocket stream reads while it waits).
        loop {
            rbuf.reserve(READ_CHUNK.saturating_sub(rbuf.capacity() - rbuf.len()));
            match stream.read_now(&mut rbuf).await {
                Ok(0) => bail!("broker closed the connection of a publisher"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading from broker"),
            }
        }
        let acked = take_acks(&mut rbuf, &mut pending_rel, &mut inflight)?;
        if acked > 0 {
            counters.acked.fetch_add(acked, Relaxed);
        }
        if stopping && inflight == 0 && pending_rel.is_empty() {
            break;
        }
        for id in pending_rel.drain(..) {
            wire::ack(&mut wbuf, wire::PUBREL, id);
        }
        let mut n = if stopping { 0 } else { cfg.batch };
        if cfg.qos > 0 {
            n = n.min(cfg.inflight - inflight);
        }
        // Stay within `ahead` of the slowest subscriber. The waiter is registered before the
        // check, so that progress made in between still wakes it.
        let mut progressed = None;
        let overriding = held_since.is_some_and(|t| t.elapsed() >= STALL);
        if overriding {
            counters.stalls.fetch_add(1, Relaxed);
            held_since = None;
        }
        if gated && n > 0 && !overriding {
            let room = |shared: &Shared| {
                (shared.min_progress(cfg.index, &cfg.subscribers) + cfg.ahead).saturating_sub(sent)
            };
            if room(&shared) == 0 {
                let mut notified = Box::pin(shared.progressed.notified());
                notified.as_mut().enable();
                if room(&shared) == 0 {
                    progressed = Some(notified);
                    n = 0;
                }
            }
            n = n.min(room(&shared) as usize);
            if n > 0 {
                held_since = None;
            } else if held_since.is_none() {
                held_since = Some(tokio::time::Instant::now());
            }
        }
        let mut next_due = None;
        if cfg.rate > 0.0 && n > 0 {
            let due = (start.elapsed().as_secs_f64() * cfg.rate) as u64 + 1;
            n = n.min(due.saturating_sub(sent) as usize);
            if n == 0 {
                next_due = Some(start + Duration::from_secs_f64(sent as f64 / cfg.rate));
            }
        }
        if n > 0 {
            let sent_ns = shared.now_ns();
            for i in 0..n as u64 {
                let stamp = Stamp {
                    sent_ns,
                    publisher: cfg.index as u32,
                    seq: sent + i,
                };
                wire::publish(
                    &mut wbuf,
                    topic,
                    cfg.qos,
                    next_id,
                    &stamp.encode(),
                    cfg.payload,
                );
                next_id = next_id.checked_add(1).unwrap_or(1);
            }
        }
        if !wbuf.is_empty() {
            stream.send(&wbuf).await.context("writing to broker")?;
            wbuf.clear();
            if n > 0 {
                sent += n as u64;
                counters.sent.fetch_add(n as u64, Relaxed);
                if cfg.qos > 0 {
                    inflight += n;
                }
            }
            continue;
        }
        // Nothing to send: wait for an acknowledgement, the subscribers, the pacer or the stop.
        let stall_at = held_since.map(|t| t + STALL);
        let progressed = async {
            match progressed {
                Some(p) => p.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = stream.wait_readable(&mut rbuf) => r.context("reading from broker")?,
            _ = progressed => {}
            _ = sleep_until(stall_at.unwrap_or(start)), if stall_at.is_some() => {}
            _ = sleep_until(next_due.unwrap_or(start)), if next_due.is_some() => {}
            _ = stop.cancelled(), if !stopping => {}
        }
    }
    let mut wbuf = BytesMut::with_capacity(2);
    wire::disconnect(&mut wbuf);
    // Best effort: the counts are already taken.
    let _ = stream.send(&wbuf).await;
    stream.finish().await;
    Ok(())
}

/// Consumes PUBACK/PUBREC/PUBCOMP packets; returns how many messages completed.
pub(crate) fn take_acks(
    rbuf: &mut BytesMut,
    pending_rel: &mut Vec<u16>,
    inflight: &mut usize,
) -> Result<u64> {
    let mut done = 0;
    while let Some((header, total)) = wire::check(rbuf)? {
        let kind = rbuf[0] >> 4;
        match kind {
            wire::PUBACK | wire::PUBCOMP => {
                ensure!(
                    *inflight > 0,
                    "broker acknowledged a message that was not in flight"
                );
                *inflight -= 1;
                done += 1;
            }
            wire::PUBREC => pending_rel.push(wire::packet_id(&rbuf[header..total])?),
            wire::PINGRESP => {}
            other => bail!("publisher got unexpected packet type {other} from broker"),
        }
        rbuf.advance(total);
    }
    Ok(done)
}

/// Counts messages until `stop`, acknowledging QoS 1/2 and sampling latency while the
/// measurement window is open.
pub(crate) async fn subscriber<S: Transport>(
    mut stream: S,
    mut rbuf: BytesMut,
    index: usize,
    publishers: usize,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram();
    let mut wbuf = BytesMut::with_capacity(4096);
    // The next sequence number expected from each publisher, and which moved in this batch.
    let mut next = vec![0u64; publishers];
    let mut moved = vec![false; publishers];
    let mut dirty = Vec::with_capacity(publishers);
    loop {
        // One clock read per read() call: messages that arrive together arrived at once.
        let now = shared.now_ns();
        let recording = shared.recording.load(Relaxed);
        let mut count = 0;
        while let Some((header, total)) = wire::check(&rbuf)? {
            let first = rbuf[0];
            let body = &rbuf[header..total];
            match first >> 4 {
                wire::PUBLISH => {
                    let p = wire::parse_publish(first, body)?;
                    count += 1;
                    if let Some(stamp) = Stamp::decode(p.payload) {
                        let from = stamp.publisher as usize;
                        ensure!(
                            from < publishers,
                            "subscriber got a message from publisher {from} of {publishers}: another run's traffic?"
                        );
                        let expected = next[from];
                        if stamp.seq >= expected {
                            if stamp.seq > expected {
                                counters.skipped.fetch_add(stamp.seq - expected, Relaxed);
                            }
                            next[from] = stamp.seq + 1;
                            if !moved[from] {
                                moved[from] = true;
                                dirty.push(from);
                            }
                        } else {
                            counters.disordered.fetch_add(1, Relaxed);
                        }
                        if recording {
                            hist.saturating_record(now.saturating_sub(stamp.sent_ns).max(1));
                        }
                    }
                    match p.qos {
                        1 => wire::ack(&mut wbuf, wire::PUBACK, p.packet_id),
                        2 => wire::ack(&mut wbuf, wire::PUBREC, p.packet_id),
                        _ => {}
                    }
                }
                wire::PUBREL => wire::ack(&mut wbuf, wire::PUBCOMP, wire::packet_id(body)?),
                wire::PINGRESP => {}
                other => bail!("subscriber got unexpected packet type {other} from broker"),
            }
            rbuf.advance(total);
        }
        if count > 0 {
            counters.received.fetch_add(count, Relaxed);
        }
        if !dirty.is_empty() {
            for from in dirty.drain(..) {
                moved[from] = false;
                shared.set_progress(index, from, next[from]);
            }
            shared.progressed.notify_waiters();
        }
        if !wbuf.is_empty() {
            stream.send(&wbuf).await.context("writing to broker")?;
            wbuf.clear();
        }
        rbuf.reserve(READ_CHUNK.saturating_sub(rbuf.capacity() - rbuf.len()));
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = stream.read_buf(&mut rbuf) => {
                if r.context("reading from broker")? == 0 {
                    bail!("broker closed the connection of a subscriber");
                }
            }
        }
    }
    let mut wbuf = BytesMut::with_capacity(2);
    wire::disconnect(&mut wbuf);
    let _ = stream.send(&wbuf).await;
    stream.finish().await;
    Ok(hist)
}

/// Connects, waits for CONNACK and disconnects, over and over until `stop`; records
/// connect-to-CONNACK time (TCP connect, TLS handshake and WebSocket upgrade included) while
/// the window is open.
pub(crate) async fn connect_loop<S: Transport>(
    dialer: Arc<Dialer>,
    loop_id: usize,
    run_id: &str,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram();
    let mut rbuf = BytesMut::with_capacity(64);
    let mut bye = BytesMut::with_capacity(2);
    wire::disconnect(&mut bye);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let t0 = Instant::now();
        let client_id = format!("{run_id}-c{loop_id}-{n}");
        rbuf.clear();
        let mut stream: S = open(&dialer, &client_id, 60, true, &mut rbuf).await?;
        let took = t0.elapsed();
        if shared.recording.load(Relaxed) {
            hist.saturating_record((took.as_nanos() as u64).max(1));
        }
        stream.send(&bye).await.context("sending DISCONNECT")?;
        stream.finish().await;
        counters.received.fetch_add(1, Relaxed);
        n += 1;
    }
    Ok(hist)
}
