//! The store under SIGKILL: persistent QoS 1 and QoS 2 publishers and subscribers
//! under load, the broker killed at random moments and restarted on the same store.
//!
//! With `sync: always`, every message the broker acknowledged to its publisher must
//! reach its subscriber after any number of kills; QoS 1 may arrive twice (counted and
//! printed), QoS 2 never. With `periodic`, a kill may lose what was written since the
//! last sync: the loss is measured and printed per kill, and what must survive anyway
//! (sessions and subscriptions that were synced) is asserted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem_broker::protocol::QoS;
use tandem_tests::crash::{self, Ledger};
use tandem_tests::{Tandem, free_port};
use tokio::task::JoinHandle;

/// A small deterministic generator for kill times; the seed is printed so a failing
/// run can be repeated.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("TANDEM_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("kill-time seed: {seed} (TANDEM_CRASH_SEED repeats it)");
        Self(seed | 1)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

/// One QoS's publisher and subscriber, and what they saw.
struct Flow {
    qos: QoS,
    ledger: Arc<Ledger>,
    publisher: JoinHandle<()>,
    subscriber: JoinHandle<()>,
}

fn config(port: u16, store: &std::path::Path, sync: &str) -> String {
    format!(
        "listeners:\n  default: {{ type: tcp, bind: '127.0.0.1:{port}' }}\n\
         admin:\n  bind: 127.0.0.1:0\n\
         mqtt:\n  max_queued_messages: 1000000\n\
         storage:\n  path: '{}'\n  sync: {sync}\n  interval: 200ms\n",
        store.display()
    )
}

/// Starts a flow per QoS: subscribers first (their subscriptions must exist before
/// anything is published, or early messages would have no one to go to).
async fn start_flows(
    addr: std::net::SocketAddr,
    stop_pub: &Arc<AtomicBool>,
    stop_sub: &Arc<AtomicBool>,
) -> Vec<Flow> {
    let mut flows = Vec::new();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let n = qos as u8;
        let ledger = Arc::new(Ledger::default());
        let subscriber = tokio::spawn(crash::subscriber(
            addr,
            format!("crash-sub-{n}"),
            format!("crash/{n}/#"),
            qos,
            ledger.clone(),
            stop_sub.clone(),
        ));
        tandem_tests::eventually("the subscriber holds its subscription", || {
            ledger.subscribed.load(Ordering::Relaxed)
        })
        .await;
        let publisher = tokio::spawn(crash::publisher(
            addr,
            format!("crash-pub-{n}"),
            format!("crash/{n}/t"),
            qos,
            20,
            ledger.clone(),
            stop_pub.clone(),
        ));
        flows.push(Flow {
            qos,
            ledger,
            publisher,
            subscriber,
        });
    }
    flows
}

/// Stops the publishers (they finish what is in flight), waits until every
/// acknowledged message is delivered or `within` passes, and stops the subscribers.
async fn drain(
    flows: Vec<Flow>,
    stop_pub: &AtomicBool,
    stop_sub: &AtomicBool,
    within: Duration,
) -> Vec<(QoS, Arc<Ledger>)> {
    stop_pub.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + within;
    for f in &flows {
        while !f.publisher.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while Instant::now() < deadline && flows.iter().any(|f| !f.ledger.missing().is_empty()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more for a late duplicate to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_sub.store(true, Ordering::Relaxed);
    let mut out = Vec::new();
    for f in flows {
        assert!(
            f.publisher.is_finished(),
            "QoS {:?} publisher still has messages in flight",
            f.qos
        );
        f.publisher.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), f.subscriber).await;
        out.push((f.qos, f.ledger));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_always_nothing_acknowledged_is_lost_across_sigkills() {
    const KILLS: usize = 22;
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, store.path(), "always");
    let mut broker = Tandem::start_config(&yaml);
    let (stop_pub, stop_sub) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let flows = start_flows(broker.addr, &stop_pub, &stop_sub).await;
    let mut rng = Rng::new();
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(100, 450))).await;
        broker.kill();
        let acked: Vec<usize> = flows.iter().map(|f| f.ledger.acked_count()).collect();
        println!("kill {kill}: acknowledged so far (QoS 1, QoS 2): {acked:?}");
        broker = Tandem::start_config(&yaml);
        assert!(
            broker
                .wait_log("storage: restored", Duration::from_secs(1))
                .is_some(),
            "the restart restored the store"
        );
    }
    let flows = drain(flows, &stop_pub, &stop_sub, Duration::from_secs(60)).await;
    for (qos, ledger) in &flows {
        let acked = ledger.acked_count();
        let missing = ledger.missing();
        let dups = ledger.duplicates();
        println!(
            "QoS {qos:?}: {acked} acknowledged, {} delivered, {} missing, {dups} duplicates, {} connections, {KILLS} kills",
            ledger.delivered.lock().unwrap().len(),
            missing.len(),
            ledger.connections.load(Ordering::Relaxed),
        );
        assert!(
            acked > 100,
            "QoS {qos:?}: too little traffic to mean anything ({acked})"
        );
        assert!(
            missing.is_empty(),
            "QoS {qos:?}: acknowledged but never delivered: {missing:?}"
        );
        assert_eq!(
            ledger.sessions_lost.load(Ordering::Relaxed),
            0,
            "a restart lost the subscriber's session"
        );
        if *qos == QoS::ExactlyOnce {
            assert_eq!(dups, 0, "QoS 2 delivered a message twice");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_periodic_a_kill_loses_at_most_the_unsynced_and_sessions_survive() {
    const KILLS: usize = 6;
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config(port, store.path(), "periodic");
    let mut broker = Tandem::start_config(&yaml);
    let (stop_pub, stop_sub) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let flows = start_flows(broker.addr, &stop_pub, &stop_sub).await;
    // Sessions and subscriptions are on disk once a sync has begun after they were
    // handed to the store: two more syncs from now.
    let admin = broker.admin_addr();
    let syncs = tandem_tests::probe::metric(admin, "tandem_storage_syncs_total")
        .await
        .unwrap_or(0.0);
    tandem_tests::probe::wait_series(admin, "tandem_storage_syncs_total", |v| v >= syncs + 2.0)
        .await;
    let mut rng = Rng::new();
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(rng.between(300, 700))).await;
        broker.kill();
        println!(
            "kill {kill}: acknowledged so far (QoS 1, QoS 2): {:?}",
            flows
                .iter()
                .map(|f| f.ledger.acked_count())
                .collect::<Vec<_>>()
        );
        broker = Tandem::start_config(&yaml);
    }
    let flows = drain(flows, &stop_pub, &stop_sub, Duration::from_secs(30)).await;
    for (qos, ledger) in &flows {
        let acked = ledger.acked_count();
        let missing = ledger.missing();
        println!(
            "QoS {qos:?} with sync: periodic (200ms): {acked} acknowledged, {} lost over {KILLS} kills ({:.1} per kill), {} duplicates",
            missing.len(),
            missing.len() as f64 / KILLS as f64,
            ledger.duplicates(),
        );
        assert!(
            acked > 100,
            "QoS {qos:?}: too little traffic to mean anything ({acked})"
        );
        assert_eq!(
            ledger.sessions_lost.load(Ordering::Relaxed),
            0,
            "a kill lost a synced session"
        );
        // What is lost is what was acknowledged within the last interval before a
        // kill: far from everything.
        assert!(
            missing.len() < acked / 2,
            "QoS {qos:?}: lost {} of {acked}: more than the unsynced tail of each kill",
            missing.len()
        );
    }
}
