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
//! - the broker's RSS sampled every 5 s, and once more when every client has gone and the
//!   broker has idled for `--settle`: what it keeps, against its RSS at start-up.
//!
//! Then publishing stops, deliveries drain, and it reports (one JSON line on stdout, a
//! summary on stderr): spurious disconnects of long-lived clients, acknowledged QoS 1/2
//! messages their team mates never received, cross-user deliveries, and the RSS slope after
//! warm-up. It exits 1 if any of the first three (or a wrong password let in) is not 0.
//!
//! # Layout
//! - `soak.rs`: the command line, the run (clients, churn, faults, RSS samples) and its end.
//! - `soak/state.rs`: what the tasks share: counters, notes, stop signals, the ACL rules a
//!   delivery is checked against.
//! - `soak/conn.rs`: one MQTT connection, framed with the harness's shared packet reader.
//! - `soak/clients.rs`: the long-lived team members and the slow readers.
//! - `soak/churn.rs`: the short-lived connections.
//! - `soak/broker.rs`: the broker's config, ACL and process, and its plugin processes.
//! - `soak/report.rs`: losses, the RSS slope and the report.

// A crate root looks for modules beside itself: point at the soak/ directory.
#[path = "soak/broker.rs"]
mod broker;
#[path = "soak/churn.rs"]
mod churn;
#[path = "soak/clients.rs"]
mod clients;
#[path = "soak/conn.rs"]
mod conn;
#[path = "soak/report.rs"]
mod report;
#[path = "soak/state.rs"]
mod state;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use tandem_tests::kill_pid;
use tandem_tests::probe::try_rss_kib;
use tokio_util::sync::CancellationToken;

use crate::broker::{plugin_pid, start_broker, write_acl, write_config};
use crate::churn::churn;
use crate::clients::{long_lived, slow_reader};
use crate::state::{Counters, Shared};

#[derive(Parser, Debug)]
#[command(about = "Soak test for Tandem: long-lived clients, churn, plugin kills, reloads")]
pub(crate) struct Args {
    /// Directory holding `tandem`, `tandem-policy` and `tandem-topic-acl` (release).
    #[arg(long)]
    pub(crate) bin_dir: PathBuf,
    /// How long clients publish (then deliveries drain for `--drain`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Long-lived clients (an even number: teams of two).
    #[arg(long, default_value_t = 200)]
    pub(crate) clients: usize,
    /// Publishes per second of each long-lived client.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) rate: f64,
    /// Churn connections per second.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) churn: f64,
    /// Slow readers.
    #[arg(long, default_value_t = 10)]
    pub(crate) slow: usize,
    /// A plugin process is killed this often.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) kill_every: Duration,
    /// The broker reloads its configuration this often.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub(crate) reload_every: Duration,
    /// RSS samples before this are warm-up (not in the slope).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    /// How long deliveries may drain after publishing stops.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,
    /// After every client has gone, how long the idle broker is given before its RSS is
    /// read again: what it kept, against its RSS at start-up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,
    /// Work directory (config, ACL, broker log); a temporary one if not given.
    #[arg(long)]
    pub(crate) work_dir: Option<PathBuf>,
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
    let startup_rss = try_rss_kib(broker_pid);
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
            if let Some(kib) = try_rss_kib(broker_pid) {
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
                    kill_pid(pid);
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
    eprintln!(
        "soak: every client has gone; the broker idles for {:?}",
        args.settle
    );
    tokio::time::sleep(args.settle).await;
    let rss = report::Rss {
        startup: startup_rss,
        idle: try_rss_kib(broker_pid),
        samples: samples.lock().unwrap().clone(),
    };
    let failed = report::report(&args, &sh, &outcomes, &rss, &broker.log);
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
