//! The store the broker holds: a FIFO of [`Op`]s into one writer thread, group commit,
//! periodic sync, and what happens when the disk fails.
//!
//! # Group commit
//! The writer takes every op waiting (up to [`MAX_BATCH`]) and commits them as one
//! transaction. While one commit syncs, the next batch gathers, so a thousand
//! publishers waiting on `sync: always` share a few fsyncs instead of queueing for one
//! each. A [`barrier`](Store::barrier) resolves once every op handed over before it is
//! committed: durably with `sync: always`, written with `periodic` (whose durable
//! commit comes every `storage.interval`, or at once when the broker stops).
//!
//! # Holds
//! A batch never ends inside a [`hold`](Store::hold): ops that must land together (a
//! QoS 2 message's inbound packet id and the copies routed to its subscribers) are
//! handed over while one is held, and the writer keeps gathering until it is let go.
//! Were they split, a kill between two commits could keep the packet id without the
//! copies (the publisher's resend is taken for a duplicate: the message is lost) or the
//! copies without the id (the resend is routed again: delivered twice). A hold is
//! synchronous code only, microseconds long: never held across an `.await`.
//!
//! # Bound
//! Ops wait in the FIFO until committed. With `sync: always` every acknowledgement
//! waits for its barrier, so what waits is bounded by the connections and their
//! windows. With `periodic`, a connection also waits on a barrier once more than
//! [`BACKLOG`] ops are waiting: a disk slower than the publishers slows them down
//! instead of growing memory.
//!
//! # Failure
//! A commit that fails (a full disk, an I/O error) answers its batch's barriers with an
//! error, so nothing waiting on them is acknowledged: those connections close and their
//! clients send again. The engine is recovered and the batch retried with backoff until
//! it commits, so the store stays consistent; `/readyz` reports the failure meanwhile.
//!
//! # Shutdown
//! [`close`](Store::close) commits what is waiting durably and stops the writer. Ops
//! handed over after it are ignored: what a stopping broker drops (its parked sessions'
//! queues going out of memory) must not be removed from the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::ops::{Op, Storage, StorageError};
use super::record::{Sent, StoredDelivery};
use crate::session::message::{Delivery, DeliveryRecord};

/// Ops committed in one transaction at most.
pub const MAX_BATCH: usize = 8192;
/// Ops waiting past which a `periodic` store makes publishers wait for the writer.
pub const BACKLOG: usize = 65_536;
/// The longest wait between retries of a failed commit.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts at the final commit of a store that keeps failing before it gives up.
const CLOSE_ATTEMPTS: u32 = 3;

/// When what was written is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every commit is durable before its barrier resolves.
    Always,
    /// Commits are written at once and made durable every interval.
    Periodic(Duration),
}

/// The store's writer failed: what was waiting on it was not stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage write failed: {0}")]
pub struct StoreFailed(pub Arc<str>);

enum Cmd {
    Op(Op),
    Barrier(oneshot::Sender<Result<(), StoreFailed>>),
    Close(oneshot::Sender<()>),
    /// A [`Hold`] began: no commit until it ends.
    Hold,
    /// A [`Hold`] ended.
    Release,
}

/// Counters the writer keeps, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Of those, durable ones (synced).
    pub syncs: AtomicU64,
    /// Ops committed.
    pub ops: AtomicU64,
    /// Commits that failed.
    pub errors: AtomicU64,
    /// Ops handed over and not yet committed.
    pub pending: AtomicUsize,
    /// Whether the last commit failed.
    pub failing: AtomicBool,
}

/// The store: hand it ops, wait on barriers, close it once.
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    seq: AtomicU64,
    closed: AtomicBool,
    sync: SyncMode,
    stats: Arc<StoreStats>,
    last_error: Arc<Mutex<Option<Arc<str>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Starts the writer thread over `engine`, numbering new records from `next_seq`.
    pub fn start(
        engine: Box<dyn Storage>,
        sync: SyncMode,
        next_seq: u64,
    ) -> Result<Arc<Self>, StorageError> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(StoreStats::default());
        let last_error = Arc::new(Mutex::new(None));
        let writer = Writer {
            engine,
            rx,
            sync,
            stats: stats.clone(),
            last_error: last_error.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("tandem-store".into())
            .spawn(move || writer.run())
            .map_err(|source| StorageError::Io {
                path: "writer thread".into(),
                source,
            })?;
        Ok(Arc::new(Self {
            tx,
            seq: AtomicU64::new(next_seq.max(1)),
            closed: AtomicBool::new(false),
            sync,
            stats,
            last_error,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Hands an op to the writer (ignored once the store is closed).
    pub fn submit(&self, op: Op) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Cmd::Op(op)).is_err() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A sequence number no record in the store has.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether an acknowledgement that depends on ops just handed over must wait for
    /// a barrier: always with `sync: always`, and with `periodic` when the writer is
    /// behind by more than [`BACKLOG`] ops.
    pub fn must_wait(&self) -> bool {
        self.sync == SyncMode::Always || self.stats.pending.load(Ordering::Relaxed) > BACKLOG
    }

    /// Holds the writer's batch open until the returned guard is dropped: every op
    /// handed over meanwhile, by any thread, is committed in one transaction with
    /// the others. Only for synchronous code (the guard must not live across an
    /// `.await`: every commit waits for it).
    pub fn hold(self: &Arc<Self>) -> Hold {
        let held = !self.closed.load(Ordering::Acquire) && self.tx.send(Cmd::Hold).is_ok();
        Hold {
            store: self.clone(),
            held,
        }
    }

    /// Resolves once every op handed over before it is committed (durably with
    /// `sync: always`); an error if their commit failed or the store is closed.
    pub async fn barrier(&self) -> Result<(), StoreFailed> {
        let (tx, rx) = oneshot::channel();
        if self.closed.load(Ordering::Acquire) || self.tx.send(Cmd::Barrier(tx)).is_err() {
            return Err(StoreFailed("the store is closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(StoreFailed("the store's writer stopped".into())))
    }

    /// Queues `delivery` for `client_id`'s session in the store: the returned handle
    /// removes it again when the last copy of the delivery goes.
    pub fn queued(self: &Arc<Self>, client_id: &ByteString, delivery: &Delivery) -> Arc<Stored> {
        let seq = self.next_seq();
        self.submit(Op::Queued {
            client_id: client_id.clone(),
            seq,
            delivery: StoredDelivery {
                message: delivery.message.clone(),
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery
                    .subscription_ids
                    .as_deref()
                    .cloned()
                    .unwrap_or_default(),
                share: delivery.share.as_ref().map(|g| g.name().clone()),
            },
        });
        Arc::new(Stored {
            store: self.clone(),
            client_id: client_id.clone(),
            seq,
        })
    }

    /// A handle for a delivery restored from the store under `seq`.
    pub fn restored(self: &Arc<Self>, client_id: &ByteString, seq: u64) -> Arc<Stored> {
        Arc::new(Stored {
            store: self.clone(),
            client_id: client_id.clone(),
            seq,
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Why the last commit failed, while the store is failing.
    pub fn failing(&self) -> Option<Arc<str>> {
        if self.stats.failing.load(Ordering::Relaxed) {
            self.last_error.lock().clone()
        } else {
            None
        }
    }

    /// Commits what is waiting, durably, and stops the writer; later ops are ignored.
    /// Waits for the writer thread (it retries a failing commit a few times first).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.closed.swap(true, Ordering::AcqRel) || self.tx.send(Cmd::Close(tx)).is_err() {
            return;
        }
        let _ = rx.await;
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Keeps the ops handed over while it lives in one commit; see [`Store::hold`].
#[must_use = "the hold ends when the guard is dropped"]
pub struct Hold {
    store: Arc<Store>,
    held: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.held {
            let _ = self.store.tx.send(Cmd::Release);
        }
    }
}

/// A delivery's record in the store. Shared by every copy of the delivery (queued,
/// in flight, held); when the last one goes (acknowledged, skipped, dropped or handed
/// to another session) the record is removed.
#[derive(Debug)]
pub struct Stored {
    store: Arc<Store>,
    client_id: ByteString,
    seq: u64,
}

impl DeliveryRecord for Stored {
    fn sent(&self, pkid: u16, released: bool) {
        self.store.submit(Op::Sent {
            client_id: self.client_id.clone(),
            seq: self.seq,
            sent: Sent { pkid, released },
        });
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        self.store.submit(Op::Done {
            client_id: self.client_id.clone(),
            seq: self.seq,
        });
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("sync", &self.sync).finish()
    }
}

/// The writer thread's state.
struct Writer {
    engine: Box<dyn Storage>,
    rx: mpsc::Receiver<Cmd>,
    sync: SyncMode,
    stats: Arc<StoreStats>,
    last_error: Arc<Mutex<Option<Arc<str>>>>,
}

impl Writer {
    fn run(mut self) {
        let mut ops: Vec<Op> = Vec::new();
        let mut barriers: Vec<oneshot::Sender<Result<(), StoreFailed>>> = Vec::new();
        let mut close: Option<oneshot::Sender<()>> = None;
        // Since when commits were written but not synced (`periodic`).
        let mut unsynced: Option<Instant> = None;
        let mut backoff = Duration::ZERO;
        // After a failed commit: not again before this, however many ops arrive.
        let mut retry_at: Option<Instant> = None;
        let mut close_attempts = 0;
        // Holds begun and not yet released: the batch may not end while one is open.
        let mut holds = 0usize;
        loop {
            if close.is_none() {
                // Wait for work: a retry's backoff, the periodic sync, or the next op.
                let wait = if !ops.is_empty() {
                    Some(retry_at.map_or(Duration::ZERO, |at| {
                        at.saturating_duration_since(Instant::now())
                    }))
                } else {
                    match (self.sync, unsynced) {
                        (SyncMode::Periodic(every), Some(since)) => {
                            Some(every.saturating_sub(since.elapsed()))
                        }
                        _ => None,
                    }
                };
                let mut disconnected = false;
                let first = match wait {
                    Some(wait) => match self.rx.recv_timeout(wait) {
                        Ok(cmd) => Some(cmd),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            disconnected = true;
                            None
                        }
                    },
                    None => match self.rx.recv() {
                        Ok(cmd) => Some(cmd),
                        Err(_) => {
                            disconnected = true;
                            None
                        }
                    },
                };
                let mut next = first;
                while let Some(cmd) = next.take() {
                    match cmd {
                        Cmd::Op(op) => ops.push(op),
                        Cmd::Barrier(b) => barriers.push(b),
                        Cmd::Close(c) => close = Some(c),
                        Cmd::Hold => holds += 1,
                        Cmd::Release => holds = holds.saturating_sub(1),
                    }
                    if holds > 0 {
                        // Its ops are still coming: wait for them, whatever the size.
                        next = self.rx.recv().ok();
                        disconnected |= next.is_none();
                    } else if ops.len() < MAX_BATCH && close.is_none() {
                        next = self.rx.try_recv().ok();
                    }
                }
                if disconnected {
                    // Every handle is gone without a close: commit what is left.
                    let (tx, _rx) = oneshot::channel();
                    close = Some(tx);
                }
            }
            if close.is_some() {
                // Everything handed over before the close, then nothing more.
                while let Ok(cmd) = self.rx.try_recv() {
                    match cmd {
                        Cmd::Op(op) => ops.push(op),
                        Cmd::Barrier(b) => barriers.push(b),
                        Cmd::Close(_) | Cmd::Hold | Cmd::Release => {}
                    }
                }
            }
            if close.is_none() && retry_at.is_some_and(|at| Instant::now() < at) {
                // Still backing off: what arrived waits for the retry.
                continue;
            }
            let sync_due = match (self.sync, unsynced) {
                (SyncMode::Always, _) => true,
                (SyncMode::Periodic(every), Some(since)) => since.elapsed() >= every,
                (SyncMode::Periodic(_), None) => false,
            };
            let durable = sync_due || close.is_some();
            if ops.is_empty() && !(durable && unsynced.is_some()) {
                for b in barriers.drain(..) {
                    let _ = b.send(Ok(()));
                }
                if let Some(c) = close.take() {
                    let _ = c.send(());
                    return;
                }
                continue;
            }
            match self.engine.commit(&ops, durable) {
                Ok(()) => {
                    self.committed(ops.len(), durable);
                    ops.clear();
                    unsynced = if durable {
                        None
                    } else {
                        unsynced.or(Some(Instant::now()))
                    };
                    backoff = Duration::ZERO;
                    retry_at = None;
                    for b in barriers.drain(..) {
                        let _ = b.send(Ok(()));
                    }
                }
                Err(e) => {
                    let why: Arc<str> = e.to_string().into();
                    self.failed(&why, ops.len());
                    for b in barriers.drain(..) {
                        let _ = b.send(Err(StoreFailed(why.clone())));
                    }
                    if let Err(e) = self.engine.recover() {
                        warn!(cause = %e, "storage: could not reopen the store; retrying");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                    retry_at = Some(Instant::now() + backoff);
                    if close.is_some() {
                        close_attempts += 1;
                        if close_attempts >= CLOSE_ATTEMPTS {
                            error!(lost = ops.len(), cause = %why,
                                "storage: the last changes could not be stored before the broker stopped");
                            self.stats.pending.fetch_sub(ops.len(), Ordering::Relaxed);
                            if let Some(c) = close.take() {
                                let _ = c.send(());
                            }
                            return;
                        }
                        std::thread::sleep(backoff);
                    }
                }
            }
        }
    }

    fn committed(&self, n: usize, durable: bool) {
        self.stats.pending.fetch_sub(n, Ordering::Relaxed);
        self.stats.ops.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        if durable {
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        if self.stats.failing.swap(false, Ordering::Relaxed) {
            info!("storage: writing again after failures");
            *self.last_error.lock() = None;
        }
    }

    fn failed(&self, why: &Arc<str>, n: usize) {
        let errors = self.stats.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let first = !self.stats.failing.swap(true, Ordering::Relaxed);
        *self.last_error.lock() = Some(why.clone());
        if first || errors.is_power_of_two() {
            error!(cause = %why, waiting = n, errors,
                "storage: commit failed; QoS 1/2 publishes that need it are not acknowledged until it succeeds");
        }
    }
}
