//! The soak's verdict: acknowledged messages a team mate never received (less those the
//! broker refused at publish, read from its log), the RSS slope after warm-up, and the
//! report, one JSON line on stdout and a summary on stderr.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Args;
use crate::state::{Outcome, Shared, team};

/// Publishes the broker refused (a publish check that erred or denied: failing closed,
/// acknowledged all the same, as 3.1.1 cannot say no), read from its log by topic: the
/// (long-lived publisher, sequence) of each.
fn refused_publishes(log: &str) -> HashSet<(usize, u64)> {
    log.lines()
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
        .collect()
}

/// What became of the acknowledged QoS 1/2 messages.
struct Losses {
    /// Acknowledged to their publishers.
    acked: u64,
    /// Of those, refused at publish (never meant to be delivered).
    refused: u64,
    /// Deliveries a team member never received.
    lost: u64,
}

/// Acknowledged QoS 1/2 messages, published once the receiver's subscription was granted
/// and not refused at publish, that a team member (the publisher included: it is
/// subscribed to its own team) never received.
fn losses(sh: &Shared, outcomes: &[Outcome], refused: &HashSet<(usize, u64)>) -> Losses {
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
    Losses {
        acked: acked_total,
        refused: refused_acked,
        lost,
    }
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

/// The broker's RSS over the run, KiB.
pub(crate) struct Rss {
    /// Before any client connected.
    pub(crate) startup: Option<u64>,
    /// When every client had gone and the broker had idled for `--settle`.
    pub(crate) idle: Option<u64>,
    /// (seconds since the clients started, KiB) every 5 s while they ran.
    pub(crate) samples: Vec<(f64, u64)>,
}

/// Prints the report of the run (the broker's log at `log_path`, RSS `samples`); returns
/// whether it failed: a spurious disconnect, a lost acknowledged message, a cross-user
/// delivery or a wrong password let in.
pub(crate) fn report(
    args: &Args,
    sh: &Shared,
    outcomes: &[Outcome],
    rss: &Rss,
    log_path: &Path,
) -> bool {
    let samples = &rss.samples;
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    let refused = refused_publishes(&log);
    let Losses {
        acked: acked_total,
        refused: refused_acked,
        lost,
    } = losses(sh, outcomes, &refused);
    let keepalive_closes = log
        .lines()
        .filter(|l| l.contains("keepalive expired"))
        .count();
    let reload_refused = log.lines().filter(|l| l.contains("reload refused")).count();
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
        "rss_kib": { "startup": rss.startup, "idle_after_settle": rss.idle, "settle_s": args.settle.as_secs(),
                     "first": samples.first().map(|s| s.1), "last": samples.last().map(|s| s.1),
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
        "soak: {} — spurious disconnects {}, acknowledged QoS 1/2 lost {} of {acked_total}, cross-user deliveries {}, wrong passwords let in {}; RSS {:?} -> {:?} KiB, slope after warm-up {} KiB/min; RSS {:?} KiB at start-up, {:?} KiB with no client left ({}); broker log {}",
        if failed { "FAILED" } else { "ok" },
        get(&c.spurious_disconnects),
        lost,
        get(&c.cross_user),
        get(&c.wrong_password_accepted),
        samples.first().map(|s| s.1),
        samples.last().map(|s| s.1),
        slope_kib.map_or("n/a".into(), |s| format!("{s:.0}")),
        rss.startup,
        rss.idle,
        match (rss.startup, rss.idle) {
            (Some(a), Some(b)) if a > 0 => format!("{:.2}x", b as f64 / a as f64),
            _ => "n/a".into(),
        },
        log_path.display(),
    );
    failed
}
