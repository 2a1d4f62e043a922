//! `tandem-loadgen`: a raw MQTT 3.1.1 and 5.0 load generator, the independent witness for Tandem's
//! benchmarks (see `tests/bench/README.md`).
//!
//! It speaks the wire format with its own small encoder and decoder, never the broker's codec,
//! so the same bug cannot hide on both sides. Publishers and subscribers live in this one
//! process and share one monotonic clock, so a send timestamp in the payload gives the
//! end-to-end latency directly.
//!
//! It connects over plain TCP, TLS (`--tls-ca`), WebSocket (`--ws`) or both (WebSocket over
//! TLS); the connection tasks are generic over the transport, so plain TCP pays nothing for
//! the others.
//!
//! Each run prints one JSON line on stdout (for scripts) and one human line on stderr, and stops
//! by itself: a watchdog ends the process if the broker stops answering.
//!
//! # Layout
//! - `loadgen.rs`: the command line, the scenarios and the report.
//! - `loadgen/wire.rs`: the MQTT 3.1.1 packets it sends and reads.
//! - `loadgen/client.rs`: one task per connection (publisher, subscriber, connect loop).
//! - `loadgen/persist.rs`: stored sessions for restart benchmarks (fill, drain, ready).
//! - `loadgen/transport.rs`: TCP, TLS and WebSocket streams behind one trait.
//! - `loadgen/stats.rs`: counters, the payload clock, latency histograms and CPU readings.
//!
//! # Quick start
//! ```text
//! tandem-loadgen --port 1883 --qos 1 --clients 8 fan-out
//! tandem-loadgen --port 1883 latency            # QoS 1 at 2000 msg/s, p50/p99
//! tandem-loadgen --port 8883 --tls-ca ca.pem connect        # TLS handshake in every connect
//! tandem-loadgen --port 8080 --ws /mqtt --qos 1 fan-in      # MQTT over WebSocket
//! tandem-loadgen --port 1883 --qos 1 --persistent fan-in    # subscriber with a stored session
//! tandem-loadgen --port 1883 --qos 1 --clients 10000 --messages 10 fill   # then restart it,
//! tandem-loadgen --port 1883 ready; tandem-loadgen --port 1883 --clients 10000 drain
//! ```

// A crate root looks for modules beside itself: point at the loadgen/ directory.
#[path = "loadgen/client.rs"]
mod client;
#[path = "loadgen/persist.rs"]
mod persist;
#[path = "loadgen/stats.rs"]
mod stats;
#[path = "loadgen/transport.rs"]
mod transport;
#[path = "loadgen/wire.rs"]
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::client::PublisherConfig;
use crate::stats::{Counters, Shared, cpu_seconds, new_histogram};
use crate::transport::{Dialer, Kind, Transport, Ws};

/// Raw MQTT 3.1.1/5.0 load generator over TCP, TLS or WebSocket: messages/s delivered,
/// end-to-end latency, connects/s.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Opts,
}

/// What to measure.
#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// N publishers on one topic, one subscriber (default N = 8).
    FanIn,
    /// One publisher, N subscribers on its topic (default N = 8).
    FanOut,
    /// N publisher/subscriber pairs, each pair on its own topic (default N = 4).
    Pairs,
    /// N concurrent loops of connect, CONNACK, disconnect; counts connects/s (default N = 16).
    Connect,
    /// One pair at a fixed rate (default QoS 1, 2000 msg/s): p50/p99 publish-to-receive.
    Latency,
    /// N persistent sessions (default 10 000, ids <session-prefix>-<i>), each subscribed to its
    /// own topic, disconnected; then --messages messages (QoS --qos, at least 1) published to
    /// each while they are offline, every one acknowledged. For restart benchmarks.
    Fill,
    /// Reconnects the N persistent sessions of `fill` (same --session-prefix) and counts the
    /// messages each receives: --messages each expected, none twice.
    Drain,
    /// Polls (connect, CONNECT, CONNACK) until the broker answers, at most --timeout; prints
    /// the wall-clock time of the first CONNACK (Unix ns), for timing a restart.
    Ready,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::FanIn => "fan-in",
            Self::FanOut => "fan-out",
            Self::Pairs => "pairs",
            Self::Connect => "connect",
            Self::Latency => "latency",
            Self::Fill => "fill",
            Self::Drain => "drain",
            Self::Ready => "ready",
        }
    }
}

#[derive(clap::Args)]
struct Opts {
    /// Broker host.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, global = true, default_value_t = 1883)]
    port: u16,
    /// QoS of publishes and subscriptions [default: 0; 1 for latency].
    #[arg(long, global = true, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: Option<u8>,
    /// Publishers (fan-in), subscribers (fan-out), pairs, or connect loops [default: 8, 8, 4, 16; latency 1].
    #[arg(long, global = true)]
    clients: Option<usize>,
    /// Payload size in bytes (8 or more carries a timestamp for latency).
    #[arg(long, global = true, default_value_t = 64)]
    payload: usize,
    /// Measurement window in seconds.
    #[arg(long, global = true, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up in seconds before the window opens (load runs, nothing is counted).
    #[arg(long, global = true, default_value_t = 1.0)]
    warmup: f64,
    /// QoS 1/2: most messages each publisher has in flight (sent, not yet acknowledged).
    #[arg(long, global = true, default_value_t = 100)]
    inflight: usize,
    /// Most PUBLISH packets encoded into one write.
    #[arg(long, global = true, default_value_t = 64)]
    batch: usize,
    /// Most messages a publisher may be ahead of its slowest subscriber (0 = no limit). Without
    /// it, a broker that takes messages faster than it delivers them hides a backlog in its
    /// queues and the window measures the backlog, not the broker.
    #[arg(long, global = true, default_value_t = 10_000)]
    ahead: u64,
    /// Messages per second per publisher, 0 = as fast as the broker takes them [default: 0; latency 2000].
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Runtime threads; 1 runs everything on one thread [default: the number of CPUs; latency 1].
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Most seconds to wait, after publishers stop, for messages still on their way.
    #[arg(long, global = true, default_value_t = 5.0)]
    drain: f64,
    /// MQTT version spoken: 4 (3.1.1) or 5.
    #[arg(long, global = true, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    mqtt: u8,
    /// Connect over TLS (1.3 or 1.2), trusting the CA certificate(s) in this PEM file.
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must carry (a DNS name or an IP address).
    #[arg(long, global = true, default_value = "localhost")]
    tls_server_name: String,
    /// Let TLS connections resume sessions (tickets); by default every connect is a full
    /// handshake.
    #[arg(long, global = true)]
    tls_resume: bool,
    /// Speak MQTT over WebSocket (subprotocol mqtt), requesting this path, e.g. /mqtt; over
    /// TLS too with --tls-ca.
    #[arg(long, global = true, value_name = "PATH")]
    ws: Option<String>,
    /// Subscribers keep persistent sessions (MQTT 3.1.1 clean session 0; MQTT 5 clean start 0
    /// and a session expiry interval of an hour), so that a broker with a store stores what
    /// is queued and in flight for them. Publishers keep clean sessions.
    #[arg(long, global = true)]
    persistent: bool,
    /// fill: messages published to each session; drain: messages each session expects.
    #[arg(long, global = true, default_value_t = 10)]
    messages: u64,
    /// fill, drain: client ids are <prefix>-<i>, topics <prefix>/<i>.
    #[arg(long, global = true, default_value = "tandem-bench-persist")]
    session_prefix: String,
    /// fill, drain: sessions connecting at once.
    #[arg(long, global = true, default_value_t = 64)]
    concurrency: usize,
    /// fill: publishing connections (clean sessions), sharing the sessions' topics.
    #[arg(long, global = true, default_value_t = 8)]
    publishers: usize,
    /// drain: seconds a session waits for its next message before it gives up on the rest.
    #[arg(long, global = true, default_value_t = 2.0)]
    idle: f64,
    /// fill, drain, ready: most seconds the whole run may take.
    #[arg(long, global = true, default_value_t = 600.0)]
    timeout: f64,
    /// Name of the broker in the report.
    #[arg(long, global = true, default_value = "broker")]
    label: String,
    /// PID of the broker, to report its CPU use over the window.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
}

/// The resolved settings of one run.
struct Run {
    scenario: Scenario,
    /// How to reach the broker: address and transport.
    dialer: Arc<Dialer>,
    qos: u8,
    clients: usize,
    rate: f64,
    warmup: Duration,
    window: Duration,
    drain: Duration,
    /// Prefix of client ids and topics, unique per run so that runs never see each other.
    run_id: String,
    /// Keep-alive long enough that silent subscribers outlive the run without pinging.
    keep_alive: u16,
}

/// What a run measured.
struct Report {
    /// Delivered messages (or connects) per second over the window.
    rate: f64,
    /// Publishes written per second over the window.
    sent_rate: f64,
    /// Whole-run totals, after draining: publishes written, messages received, expected.
    sent: u64,
    received: u64,
    expected: u64,
    /// Messages seen missing from a publisher's sequence, seen out of order, and publisher
    /// stalls (waits of a second for subscribers that never caught up).
    skipped: u64,
    disordered: u64,
    stalls: u64,
    window: f64,
    hist: Histogram<u64>,
    /// CPU cores used over the window by this process and by the broker.
    loadgen_cpu: Option<f64>,
    broker_cpu: Option<f64>,
}

/// Set when a run that must deliver exactly did not: the process then exits with
/// [`INEXACT_EXIT`] after printing its JSON line, so a script cannot fold a lossy or
/// duplicating run into its figures unnoticed.
static INEXACT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit status of a run that completed but was not exact (1 is an error, 3 a run
/// that did not finish).
const INEXACT_EXIT: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    wire::speak_v5(cli.opts.mqtt == 5);
    // One thread for `latency`: with several, a wake-up that crosses threads now and then
    // costs milliseconds (p99 of 2 ms against Mosquitto where one thread gives 0.27 ms).
    let threads = cli.opts.threads.unwrap_or_else(|| {
        if cli.scenario == Scenario::Latency {
            1
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    });
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Every run stops by itself, whatever the broker does.
    let limit = match cli.scenario {
        Scenario::Fill | Scenario::Drain | Scenario::Ready => cli.opts.timeout + 30.0,
        _ => cli.opts.warmup + cli.opts.duration + cli.opts.drain + 30.0,
    };
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(limit));
        eprintln!(
            "tandem-loadgen: error: the run did not finish within {limit:.0}s: the broker stopped answering"
        );
        std::process::exit(3);
    });
    let result = runtime.block_on(run(&cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) if INEXACT.load(std::sync::atomic::Ordering::Relaxed) => {
            ExitCode::from(INEXACT_EXIT)
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "tandem-loadgen: error: {} on {}:{}: {e:#}",
                cli.scenario.name(),
                cli.opts.host,
                cli.opts.port
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    let o = &cli.opts;
    let scenario = cli.scenario;
    let latency = scenario == Scenario::Latency;
    ensure!(o.duration > 0.0, "--duration must be positive");
    ensure!(
        o.warmup >= 0.0 && o.drain >= 0.0,
        "--warmup and --drain must not be negative"
    );
    ensure!(
        o.batch > 0 && o.inflight > 0,
        "--batch and --inflight must be at least 1"
    );
    if o.payload < stats::Stamp::LEN && scenario != Scenario::Connect {
        eprintln!(
            "tandem-loadgen: note: payloads under {} bytes carry no stamp: no latency, loss or order checks, no --ahead",
            stats::Stamp::LEN
        );
    }
    let addr = tokio::net::lookup_host((o.host.as_str(), o.port))
        .await
        .with_context(|| format!("cannot resolve {}", o.host))?
        .next()
        .with_context(|| format!("{} has no address", o.host))?;
    let total = o.warmup + o.duration + o.drain + 60.0;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    let dialer = Dialer::new(
        addr,
        &o.host,
        o.tls_ca.as_deref(),
        &o.tls_server_name,
        o.tls_resume,
        o.ws.as_deref(),
    )?;
    let run = Run {
        scenario,
        dialer: Arc::new(dialer),
        qos: o.qos.unwrap_or(if latency { 1 } else { 0 }),
        clients: o.clients.unwrap_or(match scenario {
            Scenario::FanIn | Scenario::FanOut => 8,
            Scenario::Pairs => 4,
            Scenario::Connect => 16,
            Scenario::Latency | Scenario::Ready => 1,
            Scenario::Fill | Scenario::Drain => 10_000,
        }),
        rate: o.rate.unwrap_or(if latency { 2000.0 } else { 0.0 }),
        warmup: Duration::from_secs_f64(o.warmup),
        window: Duration::from_secs_f64(o.duration),
        drain: Duration::from_secs_f64(o.drain),
        run_id: format!("lg{}-{stamp}", std::process::id()),
        keep_alive: (total * 2.0).clamp(60.0, 65535.0) as u16,
    };
    ensure!(run.clients > 0, "--clients must be at least 1");
    if matches!(scenario, Scenario::Fill | Scenario::Drain | Scenario::Ready) {
        return persist::run(&run, o).await;
    }
    // One monomorphic run per transport: plain TCP runs exactly the code it always ran.
    let report = match (run.dialer.kind, scenario == Scenario::Connect) {
        (Kind::Tcp, true) => connects::<TcpStream>(&run, o).await?,
        (Kind::Tcp, false) => messages::<TcpStream>(&run, o).await?,
        (Kind::Tls, true) => connects::<TlsStream<TcpStream>>(&run, o).await?,
        (Kind::Tls, false) => messages::<TlsStream<TcpStream>>(&run, o).await?,
        (Kind::Ws, true) => connects::<Ws<TcpStream>>(&run, o).await?,
        (Kind::Ws, false) => messages::<Ws<TcpStream>>(&run, o).await?,
        (Kind::Wss, true) => connects::<Ws<TlsStream<TcpStream>>>(&run, o).await?,
        (Kind::Wss, false) => messages::<Ws<TlsStream<TcpStream>>>(&run, o).await?,
    };
    print_report(&run, o, &report);
    Ok(())
}

/// Topics, publishers per topic and subscribers per topic of a message scenario.
fn layout(run: &Run) -> (Vec<String>, usize, usize) {
    let prefix = format!("tandem-bench/{}", run.run_id);
    match run.scenario {
        Scenario::FanIn => (vec![format!("{prefix}/fan-in")], run.clients, 1),
        Scenario::FanOut => (vec![format!("{prefix}/fan-out")], 1, run.clients),
        _ => (
            (0..run.clients)
                .map(|i| format!("{prefix}/pair/{i}"))
                .collect(),
            1,
            1,
        ),
    }
}

fn sum(counters: &[Arc<Counters>], f: impl Fn(&Counters) -> u64) -> u64 {
    counters.iter().map(|c| f(c)).sum()
}

/// CPU readings at one edge of the window.
struct Cpu {
    at: Instant,
    me: Option<f64>,
    broker: Option<f64>,
}

impl Cpu {
    fn read(broker_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            me: cpu_seconds("self"),
            broker: broker_pid.and_then(|p| cpu_seconds(&p.to_string())),
        }
    }

    /// Cores used between `self` and `later`.
    fn cores(&self, later: &Self) -> (Option<f64>, Option<f64>) {
        let secs = later.at.duration_since(self.at).as_secs_f64();
        let per = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / secs);
        (per(self.me, later.me), per(self.broker, later.broker))
    }
}

/// Waits `d`, or fails at once if a connection task reports an error.
async fn hold(d: Duration, errors: &mut mpsc::UnboundedReceiver<anyhow::Error>) -> Result<()> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        Some(e) = errors.recv() => Err(e),
    }
}

/// Runs a task, copying its error to `errors` so that the main task hears of it at once.
fn spawn_reporting<T: Send + 'static>(
    set: &mut JoinSet<Result<T>>,
    errors: &mpsc::UnboundedSender<anyhow::Error>,
    task: impl Future<Output = Result<T>> + Send + 'static,
) {
    let errors = errors.clone();
    set.spawn(async move {
        let result = task.await;
        if let Err(e) = &result {
            let _ = errors.send(anyhow::anyhow!("{e:#}"));
        }
        result
    });
}

/// Joins every task of `set` within `limit`; the first error wins.
async fn join_all<T: 'static>(
    set: &mut JoinSet<Result<T>>,
    limit: Duration,
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(None) => return Ok(out),
            Ok(Some(joined)) => out.push(joined.context("connection task panicked")??),
            Err(_) => bail!(
                "{} {what} did not finish within {:.1}s of the stop (the broker stopped answering)",
                set.len(),
                limit.as_secs_f64()
            ),
        }
    }
}

async fn messages<S: Transport>(run: &Run, o: &Opts) -> Result<Report> {
    let (topics, pubs_per_topic, subs_per_topic) = layout(run);
    let publishers = topics.len() * pubs_per_topic;
    let shared = Arc::new(Shared::new(publishers, topics.len() * subs_per_topic));
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();

    // Subscribers first, all subscribed before anyone publishes.
    let mut handshakes = JoinSet::new();
    for (t, topic) in topics.iter().enumerate() {
        for s in 0..subs_per_topic {
            let (dialer, topic, qos, ka, clean) = (
                run.dialer.clone(),
                topic.clone(),
                run.qos,
                run.keep_alive,
                !o.persistent,
            );
            let index = t * subs_per_topic + s;
            let id = format!("{}-s{index}", run.run_id);
            handshakes.spawn(async move {
                let mut rbuf = BytesMut::with_capacity(64 * 1024);
                let mut stream: S = client::open(&dialer, &id, ka, clean, &mut rbuf).await?;
                client::subscribe(&mut stream, &mut rbuf, &topic, qos).await?;
                anyhow::Ok((index, stream, rbuf))
            });
        }
    }
    let subs = join_all(
        &mut handshakes,
        Duration::from_secs(15),
        "subscriber handshakes",
    )
    .await?;
    let mut handshakes = JoinSet::new();
    for (t, topic) in topics.iter().enumerate() {
        for p in 0..pubs_per_topic {
            let (dialer, ka) = (run.dialer.clone(), run.keep_alive);
            let index = t * pubs_per_topic + p;
            let id = format!("{}-p{index}", run.run_id);
            let cfg = PublisherConfig {
                index,
                subscribers: (t * subs_per_topic..(t + 1) * subs_per_topic).collect(),
                ahead: o.ahead,
                topic: topic.clone(),
                qos: run.qos,
                payload: o.payload,
                batch: o.batch,
                inflight: o.inflight,
                rate: run.rate,
            };
            handshakes.spawn(async move {
                let mut rbuf = BytesMut::with_capacity(64 * 1024);
                let stream: S = client::open(&dialer, &id, ka, true, &mut rbuf).await?;
                anyhow::Ok((stream, rbuf, cfg))
            });
        }
    }
    let pubs = join_all(
        &mut handshakes,
        Duration::from_secs(15),
        "publisher handshakes",
    )
    .await?;

    let sub_stop = CancellationToken::new();
    let pub_stop = CancellationToken::new();
    let mut sub_tasks = JoinSet::new();
    let mut sub_counters = Vec::new();
    for (index, stream, rbuf) in subs {
        let c = Arc::new(Counters::default());
        sub_counters.push(c.clone());
        let (shared, stop) = (shared.clone(), sub_stop.clone());
        let task = client::subscriber(stream, rbuf, index, publishers, c, shared, stop);
        spawn_reporting(&mut sub_tasks, &err_tx, task);
    }
    let mut pub_tasks = JoinSet::new();
    let mut pub_counters = Vec::new();
    for (stream, rbuf, cfg) in pubs {
        let c = Arc::new(Counters::default());
        pub_counters.push(c.clone());
        let task = client::publisher(stream, rbuf, cfg, c, shared.clone(), pub_stop.clone());
        spawn_reporting(&mut pub_tasks, &err_tx, task);
    }

    hold(run.warmup, &mut err_rx).await?;
    let (recv0, sent0) = (
        sum(&sub_counters, |c| c.received.load(Relaxed)),
        sum(&pub_counters, |c| c.sent.load(Relaxed)),
    );
    let cpu0 = Cpu::read(o.broker_pid);
    shared.recording.store(true, Relaxed);
    hold(run.window, &mut err_rx).await?;
    shared.recording.store(false, Relaxed);
    let cpu1 = Cpu::read(o.broker_pid);
    let (recv1, sent1) = (
        sum(&sub_counters, |c| c.received.load(Relaxed)),
        sum(&pub_counters, |c| c.sent.load(Relaxed)),
    );
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();

    // Stop publishing (QoS 1/2 publishers wait for their acknowledgements), then let the
    // subscribers take in what is still on its way, so that the totals can be checked.
    pub_stop.cancel();
    join_all(
        &mut pub_tasks,
        run.drain + Duration::from_secs(5),
        "publishers",
    )
    .await?;
    let sent = sum(&pub_counters, |c| c.sent.load(Relaxed));
    let acked = sum(&pub_counters, |c| c.acked.load(Relaxed));
    ensure!(
        run.qos == 0 || acked == sent,
        "publishers sent {sent} messages but the broker acknowledged {acked}"
    );
    let expected = sent * subs_per_topic as u64;
    let deadline = Instant::now() + run.drain;
    let mut last = (
        sum(&sub_counters, |c| c.received.load(Relaxed)),
        Instant::now(),
    );
    while last.0 < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sum(&sub_counters, |c| c.received.load(Relaxed));
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    sub_stop.cancel();
    let hists = join_all(&mut sub_tasks, Duration::from_secs(5), "subscribers").await?;
    let mut hist = new_histogram();
    for h in &hists {
        hist.add(h).context("merging latency histograms")?;
    }
    let (loadgen_cpu, broker_cpu) = cpu0.cores(&cpu1);
    Ok(Report {
        rate: (recv1 - recv0) as f64 / window,
        sent_rate: (sent1 - sent0) as f64 / window,
        sent,
        received: sum(&sub_counters, |c| c.received.load(Relaxed)),
        expected,
        skipped: sum(&sub_counters, |c| c.skipped.load(Relaxed)),
        disordered: sum(&sub_counters, |c| c.disordered.load(Relaxed)),
        stalls: sum(&pub_counters, |c| c.stalls.load(Relaxed)),
        window,
        hist,
        loadgen_cpu,
        broker_cpu,
    })
}

async fn connects<S: Transport>(run: &Run, o: &Opts) -> Result<Report> {
    let shared = Arc::new(Shared::new(0, 0));
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut counters = Vec::new();
    for i in 0..run.clients {
        let c = Arc::new(Counters::default());
        counters.push(c.clone());
        let (dialer, run_id, shared, stop) = (
            run.dialer.clone(),
            run.run_id.clone(),
            shared.clone(),
            stop.clone(),
        );
        let task =
            async move { client::connect_loop::<S>(dialer, i, &run_id, c, shared, stop).await };
        spawn_reporting(&mut tasks, &err_tx, task);
    }
    hold(run.warmup, &mut err_rx).await?;
    let n0 = sum(&counters, |c| c.received.load(Relaxed));
    let cpu0 = Cpu::read(o.broker_pid);
    shared.recording.store(true, Relaxed);
    hold(run.window, &mut err_rx).await?;
    shared.recording.store(false, Relaxed);
    let cpu1 = Cpu::read(o.broker_pid);
    let n1 = sum(&counters, |c| c.received.load(Relaxed));
    stop.cancel();
    let hists = join_all(&mut tasks, Duration::from_secs(10), "connect loops").await?;
    let mut hist = new_histogram();
    for h in &hists {
        hist.add(h).context("merging latency histograms")?;
    }
    let window = cpu1.at.duration_since(cpu0.at).as_secs_f64();
    let (loadgen_cpu, broker_cpu) = cpu0.cores(&cpu1);
    let total = sum(&counters, |c| c.received.load(Relaxed));
    Ok(Report {
        rate: (n1 - n0) as f64 / window,
        sent_rate: (n1 - n0) as f64 / window,
        sent: total,
        received: total,
        expected: total,
        skipped: 0,
        disordered: 0,
        stalls: 0,
        window,
        hist,
        loadgen_cpu,
        broker_cpu,
    })
}

/// 1234567.0 -> "1.23M", 45678.0 -> "45.7k".
fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn print_report(run: &Run, o: &Opts, r: &Report) {
    let us = |q: f64| r.hist.value_at_quantile(q) as f64 / 1000.0;
    let samples = r.hist.len();
    let (p50, p99, max) = if samples > 0 {
        (
            Some(us(0.5)),
            Some(us(0.99)),
            Some(r.hist.max() as f64 / 1000.0),
        )
    } else {
        (None, None, None)
    };
    let connect = run.scenario == Scenario::Connect;
    // QoS 1/2 must deliver every message exactly once here (no reconnects), in each
    // publisher's order: the count alone could hide a loss behind a duplicate. QoS 0 may
    // drop.
    let exact = (!connect && run.qos > 0)
        .then_some(r.received == r.expected && r.skipped == 0 && r.disordered == 0);
    if exact == Some(false) {
        INEXACT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let json = serde_json::json!({
        "scenario": run.scenario.name(),
        "label": o.label,
        "mqtt": o.mqtt,
        "transport": run.dialer.kind.name(),
        "tls": transport::negotiated(),
        "qos": run.qos,
        "clients": run.clients,
        "payload": o.payload,
        "rate_limit": run.rate,
        "window_s": r.window,
        "unit": if connect { "connects/s" } else { "msg/s" },
        "rate": r.rate,
        "sent_rate": r.sent_rate,
        "sent": r.sent,
        "received": r.received,
        "expected": r.expected,
        "exact": exact,
        "skipped": r.skipped,
        "disordered": r.disordered,
        "stalls": r.stalls,
        "ahead": o.ahead,
        "p50_us": p50,
        "p99_us": p99,
        "max_us": max,
        "samples": samples,
        "loadgen_cpu": r.loadgen_cpu,
        "broker_cpu": r.broker_cpu,
    });
    println!("{json}");
    let lat = match (p50, p99) {
        (Some(a), Some(b)) => format!("p50 {:.3} ms, p99 {:.3} ms", a / 1000.0, b / 1000.0),
        _ => "no latency samples".to_owned(),
    };
    let cpu = |c: Option<f64>| c.map_or("?".to_owned(), |c| format!("{:.0}%", c * 100.0));
    // Plain TCP keeps the line it always had.
    let over = match (run.dialer.kind, transport::negotiated()) {
        (Kind::Tcp, _) => String::new(),
        (kind, Some(tls)) => format!(" over {} ({tls})", kind.name()),
        (kind, None) => format!(" over {}", kind.name()),
    };
    let head = format!(
        "[{}] {}{over} qos{} clients={} payload={}B",
        o.label,
        run.scenario.name(),
        run.qos,
        run.clients,
        o.payload
    );
    let body = if connect {
        format!("{} connects/s, connect-to-CONNACK {lat}", human(r.rate))
    } else {
        let check = match exact {
            Some(true) => "exact".to_owned(),
            Some(false) => format!(
                "NOT EXACT: {} of {} expected, {} missing from a sequence, {} twice or out of order",
                r.received, r.expected, r.skipped, r.disordered
            ),
            None if r.expected == 0 => "nothing sent".to_owned(),
            None => format!(
                "{:.2}% lost",
                100.0 * r.expected.saturating_sub(r.received) as f64 / r.expected as f64
            ),
        };
        format!(
            "{} msg/s delivered ({} msg/s published; totals {}/{} {check}), {lat}",
            human(r.rate),
            human(r.sent_rate),
            r.received,
            r.expected
        )
    };
    eprintln!(
        "{head}: {body}; cpu loadgen {} broker {}",
        cpu(r.loadgen_cpu),
        cpu(r.broker_cpu)
    );
    if r.disordered > 0 {
        eprintln!(
            "tandem-loadgen: warning: {} messages arrived out of their publisher's order or twice",
            r.disordered
        );
    }
    if r.stalls > 0 {
        eprintln!(
            "tandem-loadgen: note: publishers waited a second for their subscribers {} times (messages lost?)",
            r.stalls
        );
    }
    if exact == Some(false) {
        eprintln!(
            "tandem-loadgen: error: QoS {} delivered {} messages where {} were expected exactly once, in order (exit status {INEXACT_EXIT})",
            run.qos, r.received, r.expected
        );
    }
}
