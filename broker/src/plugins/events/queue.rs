//! One plugin's event queue: sequences, the two bounds (events and encoded bytes) and
//! the overflow policy at them, batches handed to the stream, acks, and the resend of
//! everything unacked after a reconnect.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tandem_proto::v1 as pb;
use tokio::sync::Notify;

use super::codec::{OutBatch, Queued};
use crate::plugins::config::Overflow;

#[derive(Default)]
struct State {
    /// Unacked events, oldest first; sequences increase by one.
    events: VecDeque<Arc<Queued>>,
    /// Sequence of the next event pushed.
    next_seq: u64,
    /// Highest sequence acked.
    acked: u64,
    /// Highest sequence handed to the current stream.
    sent: u64,
    /// Drops not yet reported in a batch.
    dropped_unreported: u64,
    /// Drops since start.
    dropped_total: u64,
    /// Events handed to a stream since start (resends included).
    sent_total: u64,
    /// Events queued since start.
    queued_total: u64,
    /// Encoded bytes of `events`.
    bytes: usize,
    /// Drops since start because of the byte bound (included in `dropped_total`).
    dropped_bytes_total: u64,
    /// Events handed to a stream again after a reconnect, since start.
    resent_total: u64,
    /// `dropped_total` when drops were last logged, and when.
    drops_logged: (u64, Option<std::time::Instant>),
}

impl State {
    /// Drops to log now, at most once a second: (events dropped since the last log, of
    /// which for the byte bound, total). The clock is read only when there are some.
    fn drops_to_log(&mut self) -> Option<(u64, u64)> {
        let (logged, at) = self.drops_logged;
        if self.dropped_total == logged {
            return None;
        }
        let now = std::time::Instant::now();
        if at.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return None;
        }
        self.drops_logged = (self.dropped_total, Some(now));
        Some((self.dropped_total - logged, self.dropped_bytes_total))
    }
}

/// One plugin's event queue.
pub struct EventQueue {
    state: Mutex<State>,
    capacity: usize,
    max_bytes: usize,
    overflow: Overflow,
    /// Wakes the stream when events arrive.
    ready: Notify,
    /// Wakes waiting producers (backpressure) and lifecycle waits when acks arrive.
    acked: Notify,
}

impl EventQueue {
    /// An empty queue, bounded by events only.
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self::with_bytes(capacity, usize::MAX, overflow)
    }

    /// An empty queue bounded by `capacity` events and `max_bytes` encoded bytes.
    pub fn with_bytes(capacity: usize, max_bytes: usize, overflow: Overflow) -> Self {
        Self {
            state: Mutex::new(State {
                next_seq: 1,
                ..State::default()
            }),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            overflow,
            ready: Notify::new(),
            acked: Notify::new(),
        }
    }

    /// Queues an event (no client: a broker lifecycle event), giving it the next
    /// sequence; returns that sequence. With `backpressure` and a full queue this waits
    /// for acks to make room. Client events go through [`EventHub`](super::EventHub).
    pub async fn push(&self, event: pb::Event) -> u64 {
        self.push_many(vec![Queued::new(&event, None)]).await.0
    }

    /// Queues `entries` in order, each with the next sequence, under one lock and with
    /// one wake-up of the stream (or one per wait for room, with `backpressure`).
    /// Returns the last sequence given and the drops to log now, at most once a second:
    /// (events dropped since the last log, of which for the byte bound, total).
    pub(super) async fn push_many(&self, entries: Vec<Queued>) -> (u64, Option<(u64, u64)>) {
        let mut entries = entries.into_iter().peekable();
        let mut last = 0;
        let mut log = None;
        loop {
            let notified = self.acked.notified();
            // The lock is taken and released in this block, never across the await.
            {
                let mut s = self.state.lock();
                while let Some(entry) = entries.peek() {
                    let cost = entry.bytes();
                    let full = |s: &State| {
                        !s.events.is_empty()
                            && (s.events.len() >= self.capacity
                                || s.bytes.saturating_add(cost) > self.max_bytes)
                    };
                    if full(&s) && self.overflow == Overflow::Backpressure {
                        break;
                    }
                    while full(&s) {
                        let by_bytes = s.events.len() < self.capacity;
                        if let Some(old) = s.events.pop_front() {
                            s.bytes -= old.bytes();
                        }
                        s.dropped_unreported += 1;
                        s.dropped_total += 1;
                        if by_bytes {
                            s.dropped_bytes_total += 1;
                        }
                    }
                    let seq = s.next_seq;
                    s.next_seq += 1;
                    s.queued_total += 1;
                    s.bytes += cost;
                    if let Some(mut queued) = entries.next() {
                        queued.sequence = seq;
                        s.events.push_back(Arc::new(queued));
                    }
                    last = seq;
                }
                log = s.drops_to_log().or(log);
            }
            if last != 0 {
                self.ready.notify_one();
            }
            if entries.peek().is_none() {
                return (last, log);
            }
            // Backpressure: what did not fit waits for acks to make room.
            notified.await;
        }
    }

    /// The next batch of at most `max` events not yet sent on this stream; waits for
    /// one if there is none.
    pub async fn next_batch(&self, max: usize) -> OutBatch {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state.lock();
                let sent = s.sent;
                let start = s.events.partition_point(|e| e.sequence <= sent);
                if start < s.events.len() {
                    // Only reference counts under the lock; nothing is copied at all.
                    let queued: Vec<Arc<Queued>> = s
                        .events
                        .iter()
                        .skip(start)
                        .take(max.max(1))
                        .cloned()
                        .collect();
                    s.sent = queued.last().map_or(sent, |e| e.sequence);
                    s.sent_total += queued.len() as u64;
                    let dropped_events = std::mem::take(&mut s.dropped_unreported);
                    return OutBatch {
                        events: queued,
                        dropped_events,
                    };
                }
            }
            notified.await;
        }
    }

    /// Events queued and not yet handed to the current stream.
    fn unsent(&self) -> usize {
        let s = self.state.lock();
        let sent = s.sent;
        s.events.len() - s.events.partition_point(|e| e.sequence <= sent)
    }

    /// [`next_batch`](Self::next_batch), but once an event is there and the batch is
    /// not full, waits `linger` for more first. Without it a stream that keeps up with
    /// its producers sends one event per batch, and pays a frame, a wake-up and an ack
    /// for each; with it, a busy stream sends full batches and a quiet one adds at most
    /// `linger` of latency. Cancel-safe: nothing is taken before the last await.
    pub async fn next_batch_lingering(&self, max: usize, linger: Duration) -> OutBatch {
        loop {
            let notified = self.ready.notified();
            if self.unsent() > 0 {
                break;
            }
            notified.await;
        }
        if !linger.is_zero() && self.unsent() < max {
            tokio::time::sleep(linger).await;
        }
        self.next_batch(max).await
    }

    /// Frees every event up to `sequence`.
    pub fn ack(&self, sequence: u64) {
        let mut s = self.state.lock();
        if sequence <= s.acked {
            return;
        }
        s.acked = sequence;
        while s.events.front().is_some_and(|e| e.sequence <= sequence) {
            if let Some(old) = s.events.pop_front() {
                s.bytes -= old.bytes();
            }
        }
        drop(s);
        self.acked.notify_waiters();
    }

    /// A new stream starts: everything unacked is sent again.
    pub fn rewind(&self) {
        let mut s = self.state.lock();
        let sent = s.sent;
        // Everything queued is unacked; what was handed to the old stream goes again.
        s.resent_total += s.events.partition_point(|e| e.sequence <= sent) as u64;
        s.sent = s.acked;
    }

    /// Events handed to a stream again after a reconnect, since start.
    pub fn resent(&self) -> u64 {
        self.state.lock().resent_total
    }

    /// Waits until `sequence` is acked, up to `timeout`. Returns whether it was.
    pub async fn wait_acked(&self, sequence: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.acked.notified();
            if self.state.lock().acked >= sequence {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.state.lock().acked >= sequence;
            }
        }
    }

    /// Events queued (unacked).
    pub fn depth(&self) -> usize {
        self.state.lock().events.len()
    }

    /// Encoded bytes queued (unacked).
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Events dropped since start because of the byte bound (a part of
    /// [`dropped`](Self::dropped)).
    pub fn dropped_for_bytes(&self) -> u64 {
        self.state.lock().dropped_bytes_total
    }

    /// Events dropped since start.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped_total
    }

    /// Counters since start: (queued, sent including resends, acked sequence, dropped).
    pub fn counters(&self) -> (u64, u64, u64, u64) {
        let s = self.state.lock();
        (s.queued_total, s.sent_total, s.acked, s.dropped_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> pb::Event {
        pb::Event::default()
    }

    #[tokio::test]
    async fn sequences_batches_acks_and_resend() {
        let q = EventQueue::new(10, Overflow::DropOldest);
        for _ in 0..5 {
            q.push(ev()).await;
        }
        let b = q.next_batch(3).await.to_pb();
        assert_eq!(
            b.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let b = q.next_batch(10).await.to_pb();
        assert_eq!(
            b.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [4, 5]
        );
        q.ack(2);
        assert_eq!(q.depth(), 3);
        // A new stream: 3, 4, 5 are sent again with their sequences.
        q.rewind();
        let b = q.next_batch(10).await.to_pb();
        assert_eq!(
            b.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        q.ack(5);
        assert_eq!(q.depth(), 0);
        q.ack(1);
        assert_eq!(q.depth(), 0, "an older ack is ignored");
    }

    /// Events told apart by their traceparent.
    fn named(name: &str) -> Queued {
        Queued::new(
            &pb::Event {
                traceparent: name.into(),
                ..Default::default()
            },
            None,
        )
    }

    #[tokio::test]
    async fn a_batch_is_queued_in_order_and_waits_for_room_under_backpressure() {
        let q = Arc::new(EventQueue::new(3, Overflow::Backpressure));
        let pushing = {
            let q = q.clone();
            tokio::spawn(async move {
                q.push_many(["a", "b", "c", "d", "e"].map(named).into())
                    .await
                    .0
            })
        };
        let first = q.next_batch(10).await.to_pb();
        assert_eq!(
            first
                .events
                .iter()
                .map(|e| e.traceparent.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"],
            "what fits is queued at once"
        );
        assert!(!pushing.is_finished(), "the rest waits for room");
        q.ack(2);
        let rest = q.next_batch(10).await.to_pb();
        assert_eq!(
            rest.events
                .iter()
                .map(|e| (e.sequence, e.traceparent.as_str()))
                .collect::<Vec<_>>(),
            [(4, "d"), (5, "e")]
        );
        assert_eq!(pushing.await.unwrap(), 5, "the last sequence given");
        assert_eq!(q.dropped(), 0);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_queue_keeps_its_newest_under_drop_oldest() {
        let q = EventQueue::new(3, Overflow::DropOldest);
        q.push_many(["a", "b", "c", "d", "e"].map(named).into())
            .await;
        let b = q.next_batch(10).await.to_pb();
        assert_eq!(
            b.events
                .iter()
                .map(|e| e.traceparent.as_str())
                .collect::<Vec<_>>(),
            ["c", "d", "e"]
        );
        assert_eq!((b.dropped_events, q.dropped()), (2, 2));
    }

    #[tokio::test]
    async fn drop_oldest_counts_and_reports_drops() {
        let q = EventQueue::new(3, Overflow::DropOldest);
        for _ in 0..5 {
            q.push(ev()).await;
        }
        assert_eq!(q.dropped(), 2);
        let b = q.next_batch(10).await.to_pb();
        assert_eq!(b.dropped_events, 2);
        assert_eq!(
            b.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        // Sent but unacked events still count: a sixth event drops the oldest, 3.
        q.push(ev()).await;
        let b = q.next_batch(10).await.to_pb();
        assert_eq!(b.dropped_events, 1);
        assert_eq!(b.events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [6]);
        q.ack(6);
        q.push(ev()).await;
        assert_eq!(q.next_batch(10).await.to_pb().dropped_events, 0);
    }

    #[tokio::test]
    async fn backpressure_waits_for_acks() {
        let q = Arc::new(EventQueue::new(2, Overflow::Backpressure));
        q.push(ev()).await;
        q.push(ev()).await;
        let mut producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(ev()).await })
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut producer)
                .await
                .is_err(),
            "a full queue makes the producer wait"
        );
        q.ack(1);
        assert_eq!(producer.await.unwrap(), 3);
        assert_eq!(q.dropped(), 0);
    }

    #[tokio::test]
    async fn lingering_fills_the_batch_before_sending() {
        let q = Arc::new(EventQueue::new(100, Overflow::DropOldest));
        q.push(ev()).await;
        let taker = tokio::spawn({
            let q = q.clone();
            async move { q.next_batch_lingering(10, Duration::from_millis(300)).await }
        });
        // Events arriving while the stream lingers join the batch.
        tokio::task::yield_now().await;
        q.push(ev()).await;
        q.push(ev()).await;
        let batch = taker.await.unwrap();
        assert_eq!(batch.sequences(), [1, 2, 3]);
        // A full batch does not wait.
        for _ in 0..10 {
            q.push(ev()).await;
        }
        let full = tokio::time::timeout(
            Duration::from_secs(10),
            q.next_batch_lingering(10, Duration::from_secs(3600)),
        )
        .await
        .expect("a full batch is sent without lingering");
        assert_eq!(full.sequences().len(), 10);
    }

    fn sized(n: usize) -> pb::Event {
        pb::Event {
            kind: Some(pb::event::Kind::MessageReceived(pb::MessageReceived {
                message: Some(pb::Message {
                    payload: vec![7; n],
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_byte_bound_drops_the_oldest_and_counts_it() {
        let one = Queued::new(&sized(1000), None).bytes();
        // Room for three 1000-byte events, not four; the count bound is far away.
        let q = EventQueue::with_bytes(1000, 3 * one + one / 2, Overflow::DropOldest);
        for _ in 0..5 {
            q.push(sized(1000)).await;
        }
        assert_eq!(q.depth(), 3);
        assert_eq!(q.bytes(), 3 * one);
        assert_eq!((q.dropped(), q.dropped_for_bytes()), (2, 2));
        let b = q.next_batch(10).await;
        assert_eq!(b.sequences(), [3, 4, 5]);
        assert_eq!(b.dropped_events(), 2);
        q.ack(5);
        assert_eq!((q.depth(), q.bytes()), (0, 0), "acks free the bytes");
        // One event bigger than the whole bound goes only into an empty queue.
        q.push(sized(100)).await;
        q.push(sized(10 * 1000)).await;
        assert_eq!(q.depth(), 1, "the small one was dropped to make room");
        assert_eq!(q.dropped_for_bytes(), 3);
    }

    #[tokio::test]
    async fn the_byte_bound_applies_backpressure() {
        let one = Queued::new(&sized(1000), None).bytes();
        let q = Arc::new(EventQueue::with_bytes(
            1000,
            2 * one,
            Overflow::Backpressure,
        ));
        q.push(sized(1000)).await;
        q.push(sized(1000)).await;
        let mut producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(sized(1000)).await })
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut producer)
                .await
                .is_err(),
            "no room in bytes: the producer waits"
        );
        q.ack(1);
        assert_eq!(producer.await.unwrap(), 3);
        assert_eq!(q.dropped(), 0);
    }

    #[tokio::test]
    async fn wait_acked_is_bounded() {
        let q = EventQueue::new(2, Overflow::DropOldest);
        let seq = q.push(ev()).await;
        assert!(!q.wait_acked(seq, Duration::from_millis(20)).await);
        q.ack(seq);
        assert!(q.wait_acked(seq, Duration::from_millis(20)).await);
    }
}
