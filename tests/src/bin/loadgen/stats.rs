//! Counters, clocks and CPU readings shared by the connection tasks and the report.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

/// What each payload starts with: the send time, who sent it and its place in that sender's
/// sequence. With it a subscriber measures latency, notices loss and reordering, and tells
/// the publisher how far delivery has got.
pub(crate) struct Stamp {
    /// Nanoseconds since [`Shared::base`] when the message was encoded.
    pub(crate) sent_ns: u64,
    /// Index of the publisher among all publishers of the run.
    pub(crate) publisher: u32,
    /// 0, 1, 2... per publisher.
    pub(crate) seq: u64,
}

impl Stamp {
    /// Bytes a payload needs to carry a whole stamp.
    pub(crate) const LEN: usize = 20;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.sent_ns.to_le_bytes());
        out[8..12].copy_from_slice(&self.publisher.to_le_bytes());
        out[12..].copy_from_slice(&self.seq.to_le_bytes());
        out
    }

    /// The stamp at the start of `payload`, or `None` if the payload is too short for one.
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let p = payload.get(..Self::LEN)?;
        Some(Self {
            sent_ns: u64::from_le_bytes(p[..8].try_into().ok()?),
            publisher: u32::from_le_bytes(p[8..12].try_into().ok()?),
            seq: u64::from_le_bytes(p[12..].try_into().ok()?),
        })
    }
}

/// State every task reads.
pub(crate) struct Shared {
    /// The zero of the timestamps carried in payloads (publishers and subscribers are in this
    /// process, so one monotonic clock serves both ends).
    pub(crate) base: Instant,
    /// True while the measurement window is open: latency is sampled only then.
    pub(crate) recording: AtomicBool,
    /// Publishers in the run: the row length of `progress`.
    publishers: usize,
    /// `progress[sub * publishers + pub]`: how many of publisher `pub`'s messages subscriber
    /// `sub` has received or seen skipped (the next sequence number it expects). Publishers
    /// keep within `--ahead` of their slowest subscriber, so that a broker cannot hide a
    /// backlog in unbounded queues: what is measured is the rate it sustains.
    progress: Box<[AtomicU64]>,
    /// Woken when a subscriber has made progress.
    pub(crate) progressed: Notify,
}

impl Shared {
    pub(crate) fn new(publishers: usize, subscribers: usize) -> Self {
        Self {
            base: Instant::now(),
            recording: AtomicBool::new(false),
            publishers,
            progress: (0..publishers * subscribers)
                .map(|_| AtomicU64::new(0))
                .collect(),
            progressed: Notify::new(),
        }
    }

    /// Subscriber `sub` has received (or seen skipped) publisher `publisher`'s messages up to,
    /// not including, sequence number `next`.
    pub(crate) fn set_progress(&self, sub: usize, publisher: usize, next: u64) {
        if let Some(slot) = self.progress.get(sub * self.publishers + publisher) {
            slot.store(next, Relaxed);
        }
    }

    /// The least progress of `subs` on `publisher`'s messages.
    pub(crate) fn min_progress(&self, publisher: usize, subs: &[usize]) -> u64 {
        subs.iter()
            .map(|s| self.progress[s * self.publishers + publisher].load(Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Nanoseconds since `base`.
    pub(crate) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Per-connection counts, read by the main task at the edges of the window.
#[derive(Default)]
pub(crate) struct Counters {
    /// PUBLISH packets written.
    pub(crate) sent: AtomicU64,
    /// QoS 1/2 messages acknowledged (PUBACK or PUBCOMP).
    pub(crate) acked: AtomicU64,
    /// PUBLISH packets received, or connects completed in the `connect` scenario.
    pub(crate) received: AtomicU64,
    /// Messages a subscriber saw skipped in a publisher's sequence (lost by the broker).
    pub(crate) skipped: AtomicU64,
    /// Messages that came out of their publisher's order, or twice.
    pub(crate) disordered: AtomicU64,
    /// Times a publisher waited over a second for its subscribers and sent anyway.
    pub(crate) stalls: AtomicU64,
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one), or
/// `None` where /proc cannot tell.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // After the name: state(3) ... utime(14) stime(15), so utime is the 12th field of `rest`.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}
