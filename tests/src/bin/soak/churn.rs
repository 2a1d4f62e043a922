//! Churn: short-lived connections at a fixed rate, each one of five kinds (wills in and
//! out of the ACL, a persistent session coming back, a wrong password, a publish outside
//! the ACL).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tandem_broker::protocol::{ConnectReason, LastWill, Packet, PubAck, QoS};

use crate::conn::{Conn, connect_packet, publish_packet, subscribe_packet};
use crate::state::{Shared, check_delivery, password, team};

/// One short-lived connection of kind `n % 5`.
pub(crate) async fn churn_one(
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

/// Starts a churn connection every `1/rate` s until publishing stops; at most 500 at once
/// (one more is skipped and counted).
pub(crate) async fn churn(rate: f64, clients: usize, sh: Arc<Shared>) {
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
