//! Stored sessions for restart benchmarks (`tests/bench/restart.sh`): `fill` creates persistent
//! sessions and queues messages for them while they are offline, `ready` times how soon a
//! restarted broker answers CONNECT, and `drain` reconnects the sessions and counts what the
//! broker kept for them.
//!
//! Session `i` has the client id `<prefix>-<i>` and subscribes to the topic `<prefix>/<i>`.
//! Each message carries a [`Stamp`] whose publisher field is the session it was meant for and
//! whose sequence number is its place among that session's messages, so `drain` can tell
//! which arrived, which are missing and which came twice.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;

use crate::client::{self, open, subscribe};
use crate::stats::Stamp;
use crate::transport::{Kind, Transport, Ws};
use crate::{Opts, Run, Scenario, wire};

/// Runs `fill`, `drain` or `ready` and prints its JSON line (stdout) and human line (stderr).
pub(crate) async fn run(run: &Run, o: &Opts) -> Result<()> {
    macro_rules! over {
        ($s:ty) => {
            match run.scenario {
                Scenario::Fill => fill::<$s>(run, o).await,
                Scenario::Drain => drain::<$s>(run, o).await,
                _ => ready::<$s>(run, o).await,
            }
        };
    }
    let deadline = Duration::from_secs_f64(o.timeout);
    let line = tokio::time::timeout(deadline, async {
        match run.dialer.kind {
            Kind::Tcp => over!(TcpStream),
            Kind::Tls => over!(TlsStream<TcpStream>),
            Kind::Ws => over!(Ws<TcpStream>),
            Kind::Wss => over!(Ws<TlsStream<TcpStream>>),
        }
    })
    .await
    .with_context(|| {
        format!(
            "{} did not finish within {:.0}s",
            run.scenario.name(),
            o.timeout
        )
    })??;
    let (json, human) = line;
    println!("{json}");
    eprintln!("[{}] {}: {human}", o.label, run.scenario.name());
    Ok(())
}

fn client_id(o: &Opts, i: usize) -> String {
    format!("{}-{i}", o.session_prefix)
}

fn topic(o: &Opts, i: usize) -> String {
    format!("{}/{i}", o.session_prefix)
}

/// Sends DISCONNECT and waits (at most 5 s) for the broker to close the connection: once it
/// has, the broker has taken the DISCONNECT in and parked the session.
async fn disconnect<S: Transport>(mut stream: S, rbuf: &mut BytesMut) -> Result<()> {
    let mut wbuf = BytesMut::with_capacity(2);
    wire::disconnect(&mut wbuf);
    stream.send(&wbuf).await.context("sending DISCONNECT")?;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            rbuf.clear();
            rbuf.reserve(4096);
            match tokio::io::AsyncReadExt::read_buf(&mut stream, rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ensure!(
        closed.is_ok(),
        "broker kept the connection open 5s after DISCONNECT"
    );
    stream.finish().await;
    Ok(())
}

/// Runs `task(i)` for every session index, at most `--concurrency` at once; the first error
/// wins.
async fn each_session<T, F, Fut>(o: &Opts, sessions: usize, task: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(o.concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let permit = permits.clone().acquire_owned().await?;
        let fut = task(i);
        set.spawn(async move {
            let r = fut.await;
            drop(permit);
            r.with_context(|| format!("session {i}"))
        });
        // Collect as we go, so that an error stops the run early.
        while let Some(done) = set.try_join_next() {
            out.push(done.context("session task panicked")??);
        }
    }
    while let Some(done) = set.join_next().await {
        out.push(done.context("session task panicked")??);
    }
    Ok(out)
}

async fn fill<S: Transport>(run: &Run, o: &Opts) -> Result<(serde_json::Value, String)> {
    ensure!(
        run.qos > 0,
        "fill needs --qos 1 or 2: QoS 0 is not queued for offline sessions"
    );
    ensure!(o.publishers > 0, "--publishers must be at least 1");
    let sessions = run.clients;
    let t0 = Instant::now();
    each_session(o, sessions, |i| {
        let (dialer, id, topic, qos, ka) = (
            run.dialer.clone(),
            client_id(o, i),
            topic(o, i),
            run.qos,
            run.keep_alive,
        );
        async move {
            let mut rbuf = BytesMut::with_capacity(256);
            let mut stream: S = open(&dialer, &id, ka, false, &mut rbuf).await?;
            subscribe(&mut stream, &mut rbuf, &topic, qos).await?;
            disconnect(stream, &mut rbuf).await
        }
    })
    .await?;
    let sessions_s = t0.elapsed().as_secs_f64();

    // Publishers share the sessions round-robin; each sends message 0 to all its sessions,
    // then message 1, and so on.
    let t1 = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for p in 0..o.publishers.min(sessions) {
        let mine: Vec<usize> = (p..sessions).step_by(o.publishers).collect();
        let topics: Vec<String> = mine.iter().map(|&i| topic(o, i)).collect();
        let (dialer, ka, acked) = (run.dialer.clone(), run.keep_alive, acked.clone());
        let id = format!("{}-fill-p{p}", run.run_id);
        let (qos, messages, payload, batch, inflight) =
            (run.qos, o.messages, o.payload, o.batch, o.inflight);
        set.spawn(async move {
            let mut rbuf = BytesMut::with_capacity(64 * 1024);
            let stream: S = open(&dialer, &id, ka, true, &mut rbuf).await?;
            let work = Work {
                sessions: mine,
                topics,
                messages,
                qos,
                payload,
                batch,
                inflight,
            };
            publish_all(stream, rbuf, work, &acked).await
        });
    }
    while let Some(done) = set.join_next().await {
        done.context("publisher task panicked")??;
    }
    let publish_s = t1.elapsed().as_secs_f64();
    let published = acked.load(Relaxed);
    let json = serde_json::json!({
        "scenario": "fill",
        "label": o.label,
        "mqtt": o.mqtt,
        "qos": run.qos,
        "sessions": sessions,
        "messages_per_session": o.messages,
        "published": published,
        "payload": o.payload,
        "sessions_s": sessions_s,
        "publish_s": publish_s,
        "publish_rate": published as f64 / publish_s,
    });
    let human = format!(
        "{sessions} persistent sessions made in {sessions_s:.2}s; {published} QoS {} messages \
         published to them offline and acknowledged in {publish_s:.2}s ({:.0} msg/s)",
        run.qos,
        published as f64 / publish_s
    );
    Ok((json, human))
}

/// What one `fill` publisher sends.
struct Work {
    sessions: Vec<usize>,
    topics: Vec<String>,
    messages: u64,
    qos: u8,
    payload: usize,
    batch: usize,
    inflight: usize,
}

/// Publishes `work.messages` messages to each of its topics, keeping at most `work.inflight`
/// unacknowledged, and waits for every acknowledgement.
async fn publish_all<S: Transport>(
    mut stream: S,
    mut rbuf: BytesMut,
    work: Work,
    acked: &AtomicU64,
) -> Result<()> {
    let total = work.sessions.len() as u64 * work.messages;
    let mut wbuf = BytesMut::with_capacity(work.batch * (work.payload + 64));
    let mut pending_rel = Vec::new();
    let (mut sent, mut done, mut inflight) = (0u64, 0u64, 0usize);
    let mut next_id: u16 = 1;
    let base = Instant::now();
    while done < total {
        let n = work
            .batch
            .min(work.inflight - inflight)
            .min((total - sent) as usize);
        for _ in 0..n {
            let k = (sent % work.sessions.len() as u64) as usize;
            let stamp = Stamp {
                sent_ns: base.elapsed().as_nanos() as u64,
                publisher: work.sessions[k] as u32,
                seq: sent / work.sessions.len() as u64,
            };
            wire::publish(
                &mut wbuf,
                work.topics[k].as_bytes(),
                work.qos,
                next_id,
                &stamp.encode(),
                work.payload,
            );
            next_id = next_id.checked_add(1).unwrap_or(1);
            sent += 1;
        }
        inflight += n;
        for id in pending_rel.drain(..) {
            wire::ack(&mut wbuf, wire::PUBREL, id);
        }
        if !wbuf.is_empty() {
            stream.send(&wbuf).await.context("writing to broker")?;
            wbuf.clear();
        }
        if n > 0 && inflight < work.inflight && sent < total {
            continue;
        }
        // The window is full (or all is sent): wait for acknowledgements.
        rbuf.reserve(64 * 1024);
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read_buf(&mut stream, &mut rbuf),
        )
        .await
        .context("broker sent no acknowledgement for 30s")?
        .context("reading from broker")?;
        if read == 0 {
            bail!("broker closed the connection of a fill publisher");
        }
        let k = client::take_acks(&mut rbuf, &mut pending_rel, &mut inflight)?;
        done += k;
        acked.fetch_add(k, Relaxed);
    }
    let mut wbuf = BytesMut::with_capacity(2);
    wire::disconnect(&mut wbuf);
    let _ = stream.send(&wbuf).await;
    stream.finish().await;
    Ok(())
}

/// What one session received in `drain`.
#[derive(Default)]
struct Drained {
    /// Messages received, duplicates included.
    received: u64,
    /// Distinct messages of this session's sequence.
    distinct: u64,
    /// Messages seen twice (a redelivery flagged DUP counts too).
    duplicates: u64,
    /// Messages meant for another session, or with a sequence number out of range.
    foreign: u64,
}

async fn drain<S: Transport>(run: &Run, o: &Opts) -> Result<(serde_json::Value, String)> {
    let sessions = run.clients;
    let idle = Duration::from_secs_f64(o.idle);
    let t0 = Instant::now();
    let results = each_session(o, sessions, |i| {
        let (dialer, id, ka, messages) = (
            run.dialer.clone(),
            client_id(o, i),
            run.keep_alive,
            o.messages,
        );
        async move {
            let mut rbuf = BytesMut::with_capacity(64 * 1024);
            let mut stream: S = open(&dialer, &id, ka, false, &mut rbuf).await?;
            let mut seen = vec![false; messages as usize];
            let mut d = Drained::default();
            let mut wbuf = BytesMut::with_capacity(1024);
            loop {
                while let Some((header, total)) = wire::check(&rbuf)? {
                    let first = rbuf[0];
                    let body = &rbuf[header..total];
                    match first >> 4 {
                        wire::PUBLISH => {
                            let p = wire::parse_publish(first, body)?;
                            d.received += 1;
                            match Stamp::decode(p.payload) {
                                Some(s) if s.publisher as usize == i && s.seq < messages => {
                                    let slot = &mut seen[s.seq as usize];
                                    if *slot {
                                        d.duplicates += 1;
                                    } else {
                                        *slot = true;
                                        d.distinct += 1;
                                    }
                                }
                                _ => d.foreign += 1,
                            }
                            match p.qos {
                                1 => wire::ack(&mut wbuf, wire::PUBACK, p.packet_id),
                                2 => wire::ack(&mut wbuf, wire::PUBREC, p.packet_id),
                                _ => {}
                            }
                        }
                        wire::PUBREL => {
                            wire::ack(&mut wbuf, wire::PUBCOMP, wire::packet_id(body)?);
                        }
                        wire::PINGRESP => {}
                        other => bail!("drain got unexpected packet type {other} from broker"),
                    }
                    rbuf.advance(total);
                }
                if !wbuf.is_empty() {
                    stream.send(&wbuf).await.context("writing to broker")?;
                    wbuf.clear();
                }
                if d.distinct == messages {
                    break;
                }
                rbuf.reserve(64 * 1024);
                match tokio::time::timeout(
                    idle,
                    tokio::io::AsyncReadExt::read_buf(&mut stream, &mut rbuf),
                )
                .await
                {
                    Err(_) => break,
                    Ok(r) => {
                        if r.context("reading from broker")? == 0 {
                            bail!("broker closed the connection while draining");
                        }
                    }
                }
            }
            disconnect(stream, &mut rbuf).await?;
            anyhow::Ok(d)
        }
    })
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let sum = |f: fn(&Drained) -> u64| results.iter().map(f).sum::<u64>();
    let (received, distinct, duplicates, foreign) = (
        sum(|d| d.received),
        sum(|d| d.distinct),
        sum(|d| d.duplicates),
        sum(|d| d.foreign),
    );
    let short = results.iter().filter(|d| d.distinct < o.messages).count();
    let expected = sessions as u64 * o.messages;
    let exact = distinct == expected && duplicates == 0 && foreign == 0;
    let json = serde_json::json!({
        "scenario": "drain",
        "label": o.label,
        "sessions": sessions,
        "expected": expected,
        "received": received,
        "distinct": distinct,
        "duplicates": duplicates,
        "foreign": foreign,
        "sessions_short": short,
        "exact": exact,
        "seconds": secs,
    });
    let check = if exact {
        "exact".to_owned()
    } else {
        format!("MISMATCH: {short} sessions short, {duplicates} duplicates, {foreign} foreign")
    };
    let human = format!(
        "{sessions} sessions reconnected and took {distinct} of {expected} stored messages \
         ({received} received, {check}) in {secs:.2}s"
    );
    Ok((json, human))
}

async fn ready<S: Transport>(run: &Run, o: &Opts) -> Result<(serde_json::Value, String)> {
    let t0 = Instant::now();
    let id = format!("{}-ready", run.run_id);
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let mut rbuf = BytesMut::with_capacity(256);
        let error = match open::<S>(&run.dialer, &id, run.keep_alive, true, &mut rbuf).await {
            Ok(mut stream) => {
                let at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                let waited = t0.elapsed().as_secs_f64();
                let mut wbuf = BytesMut::with_capacity(2);
                wire::disconnect(&mut wbuf);
                let _ = stream.send(&wbuf).await;
                stream.finish().await;
                let json = serde_json::json!({
                    "scenario": "ready",
                    "label": o.label,
                    "ready_unix_ns": at,
                    "waited_s": waited,
                    "attempts": attempts,
                });
                let human = format!("CONNACK after {waited:.3}s of polling ({attempts} attempts)");
                return Ok((json, human));
            }
            Err(e) => e,
        };
        if t0.elapsed().as_secs_f64() > o.timeout {
            bail!("no CONNACK within {:.0}s: {error:#}", o.timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
