//! The soak's steady clients: long-lived team members publishing QoS 0/1/2 in turn and
//! recording what they were acknowledged and what they received, and slow readers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{self, ConnectReason, Packet, PubAck, PubComp, PubRec, PubRel, QoS};
use tokio::io::AsyncReadExt;

use crate::conn::{Conn, connect_packet, publish_packet, subscribe_packet};
use crate::state::{Outcome, Shared, check_delivery, password, team};

/// Long-lived client `i`: reconnects (persistent session) whenever the broker drops it,
/// which counts as a spurious disconnect unless the run is ending.
pub(crate) async fn long_lived(i: usize, sh: Arc<Shared>, rate: f64) -> Outcome {
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

/// Slow reader `k`: allowed to read every team, it reads a packet every 20 ms.
pub(crate) async fn slow_reader(k: usize, sh: Arc<Shared>) {
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
