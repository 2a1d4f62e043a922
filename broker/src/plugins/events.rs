//! Event streams to plugins: one bounded queue per plugin, filled by the broker without
//! ever waiting for the plugin (unless the plugin's overflow policy is `backpressure`),
//! drained in batches on the plugin's `Events` stream, freed by its acks.
//!
//! Every event gets the next sequence number of its plugin's stream. The queue keeps
//! events until they are acked; after a reconnect the unacked ones are sent again with
//! their sequence (at-least-once while they fit in the queue). At the bound,
//! `drop_oldest` drops the oldest event and counts it (the plugin sees a gap and
//! `EventBatch.dropped_events`); `backpressure` makes the producer wait for room.
//! The queue is bounded twice: by events (`queue`) and by their encoded bytes
//! (`max_bytes`), so a few large payloads cannot hold more memory than many small ones;
//! whichever bound is reached first applies the overflow policy. One event larger than
//! `max_bytes` on its own is queued only into an otherwise empty queue (so neither policy
//! can wait or drop forever), and the bound is then exceeded by that event alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BufMut;
use parking_lot::Mutex;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tandem_proto::v1 as pb;
use tokio::sync::Notify;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// What happens when a plugin's event queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest queued event, count it (the default).
    #[default]
    DropOldest,
    /// Make the producer wait for room: nothing is lost, publishers slow down.
    Backpressure,
}

/// `plugins.<alias>.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events kept for the plugin (sent and unacked, or waiting to be sent).
    pub queue: usize,
    /// Encoded bytes of the events kept (payloads and raw packets included); at this
    /// bound the overflow policy applies as at `queue`.
    pub max_bytes: usize,
    /// Behaviour at the bound.
    pub overflow: Overflow,
    /// How long start-up waits for `broker_pre_start` to be acked, and shutdown for
    /// `broker_post_shutdown`.
    #[serde(with = "humantime_serde")]
    pub lifecycle_timeout: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            max_bytes: 64 * 1024 * 1024,
            overflow: Overflow::DropOldest,
            lifecycle_timeout: Duration::from_secs(5),
        }
    }
}

/// An event as queued: its client is shared with every other event of the connection
/// and is never copied: the event is encoded straight from the queue entry with its
/// client appended (see [`EventsCodec`]), so neither sending nor resending copies it.
pub(crate) struct Queued {
    /// The event, with `client` unset.
    event: pb::Event,
    client: Option<Arc<pb::ClientRef>>,
    /// What the entry costs the queue's byte bound: its encoded size.
    bytes: usize,
}

impl Queued {
    /// The entry's encoded size (the event and its client), as counted by `max_bytes`.
    fn cost(event: &pb::Event, client: Option<&pb::ClientRef>) -> usize {
        event.encoded_len() + client.map_or(0, |c| c.encoded_len() + 8)
    }

    /// The event as one protobuf message (tests and diagnostics; the stream encodes
    /// without it).
    fn to_pb(&self) -> pb::Event {
        let mut event = self.event.clone();
        event.client = self.client.as_deref().cloned();
        event
    }

    /// Encodes this entry as one `EventBatch.events` element. Protobuf lets fields come
    /// in any order, so the shared client is written after the event's other fields as
    /// field 3 (`Event.client`): the bytes decode to exactly [`to_pb`](Self::to_pb).
    fn encode_as_batch_element(&self, buf: &mut impl BufMut) {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
        let client_len = self.client.as_deref().map_or(0, |c| {
            let len = c.encoded_len();
            key_len(EVENT_CLIENT_FIELD) + encoded_len_varint(len as u64) + len
        });
        encode_key(BATCH_EVENTS_FIELD, WireType::LengthDelimited, buf);
        encode_varint((self.event.encoded_len() + client_len) as u64, buf);
        self.event.encode_raw(buf);
        if let Some(client) = self.client.as_deref() {
            prost::encoding::message::encode(EVENT_CLIENT_FIELD, client, buf);
        }
    }
}

/// `EventBatch.events` and `Event.client` in `plugin.proto`; a test checks them against
/// the generated code.
const BATCH_EVENTS_FIELD: u32 = 1;
const EVENT_CLIENT_FIELD: u32 = 3;

/// A batch as the stream sends it: reference-counted queue entries, encoded by
/// [`EventsCodec`] without building a `pb::EventBatch`.
pub struct OutBatch {
    events: Vec<Arc<Queued>>,
    dropped_events: u64,
}

impl OutBatch {
    /// Sequences in the batch, in order.
    pub fn sequences(&self) -> Vec<u64> {
        self.events.iter().map(|e| e.event.sequence).collect()
    }

    /// Drops reported by this batch.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    /// Writes the batch as an `EventBatch` message.
    fn encode(&self, buf: &mut impl BufMut) {
        for q in &self.events {
            q.encode_as_batch_element(buf);
        }
        if self.dropped_events != 0 {
            prost::encoding::uint64::encode(2, &self.dropped_events, buf);
        }
    }

    /// The batch as the generated protobuf type.
    pub fn to_pb(&self) -> pb::EventBatch {
        pb::EventBatch {
            events: self.events.iter().map(|q| q.to_pb()).collect(),
            dropped_events: self.dropped_events,
        }
    }
}

/// The `Events` call's codec: batches out as [`OutBatch`], acks in with prost.
#[derive(Default)]
struct EventsCodec;

struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = OutBatch;
    type Error = tonic::Status;

    fn encode(&mut self, batch: OutBatch, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        batch.encode(dst);
        Ok(())
    }
}

impl Codec for EventsCodec {
    type Encode = OutBatch;
    type Decode = pb::EventAck;
    type Encoder = BatchEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::EventAck>;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(BufferSettings::default())
    }
}

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

    /// Queues an event, giving it the next sequence; returns that sequence. With
    /// `backpressure` and a full queue this waits for acks to make room.
    pub async fn push(&self, event: pb::Event) -> u64 {
        self.push_for(event, None).await
    }

    /// [`push`](Self::push) for an event about `client`.
    pub async fn push_for(&self, event: pb::Event, client: Option<Arc<pb::ClientRef>>) -> u64 {
        self.push_logged(event, client).await.0
    }

    /// [`push_for`](Self::push_for), also returning the drops to log now, at most once a
    /// second: (events dropped since the last log, of which for the byte bound, total).
    async fn push_logged(
        &self,
        mut event: pb::Event,
        client: Option<Arc<pb::ClientRef>>,
    ) -> (u64, Option<(u64, u64)>) {
        let mut client = client;
        let cost = Queued::cost(&event, client.as_deref());
        loop {
            let notified = self.acked.notified();
            // The lock is taken and released in this block, never across the await.
            let queued = {
                let mut s = self.state.lock();
                let full = |s: &State| {
                    !s.events.is_empty()
                        && (s.events.len() >= self.capacity
                            || s.bytes.saturating_add(cost) > self.max_bytes)
                };
                if full(&s) && self.overflow == Overflow::Backpressure {
                    None
                } else {
                    while full(&s) {
                        let by_bytes = s.events.len() < self.capacity;
                        if let Some(old) = s.events.pop_front() {
                            s.bytes -= old.bytes;
                        }
                        s.dropped_unreported += 1;
                        s.dropped_total += 1;
                        if by_bytes {
                            s.dropped_bytes_total += 1;
                        }
                    }
                    let seq = s.next_seq;
                    s.next_seq += 1;
                    event.sequence = seq;
                    s.queued_total += 1;
                    s.bytes += cost;
                    s.events.push_back(Arc::new(Queued {
                        event: std::mem::take(&mut event),
                        client: client.take(),
                        bytes: cost,
                    }));
                    let (logged, at) = s.drops_logged;
                    let now = std::time::Instant::now();
                    let log = (s.dropped_total > logged
                        && at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)))
                    .then(|| {
                        s.drops_logged = (s.dropped_total, Some(now));
                        (s.dropped_total - logged, s.dropped_bytes_total)
                    });
                    Some((seq, log))
                }
            };
            match queued {
                Some(done) => {
                    self.ready.notify_one();
                    return done;
                }
                None => notified.await,
            }
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
                let start = s.events.partition_point(|e| e.event.sequence <= sent);
                if start < s.events.len() {
                    // Only reference counts under the lock; nothing is copied at all.
                    let queued: Vec<Arc<Queued>> = s
                        .events
                        .iter()
                        .skip(start)
                        .take(max.max(1))
                        .cloned()
                        .collect();
                    s.sent = queued.last().map_or(sent, |e| e.event.sequence);
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
        s.events.len() - s.events.partition_point(|e| e.event.sequence <= sent)
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
        while s
            .events
            .front()
            .is_some_and(|e| e.event.sequence <= sequence)
        {
            if let Some(old) = s.events.pop_front() {
                s.bytes -= old.bytes;
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
        s.resent_total += s.events.partition_point(|e| e.event.sequence <= sent) as u64;
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

/// A plugin's declared interest and its queue.
#[derive(Clone)]
pub struct Subscriber {
    /// The plugin's alias.
    pub alias: String,
    /// Bit `k` set when the plugin wants event kind `k`.
    pub kinds: u32,
    /// Topic filters restricting message events; empty means all.
    pub topic_filters: Vec<String>,
    /// Whether message events carry payloads.
    pub payloads: bool,
    /// Whether packet events carry the packet's raw bytes.
    pub raw_packets: bool,
    /// The queue.
    pub queue: Arc<EventQueue>,
    /// Lifecycle wait bound.
    pub lifecycle_timeout: Duration,
}

/// Every plugin that asked for events.
#[derive(Default)]
pub struct EventHub {
    subscribers: Vec<Subscriber>,
    /// Union of every subscriber's kinds: one test tells a producer nobody listens.
    any: u32,
}

fn bit(kind: pb::EventKind) -> u32 {
    1u32 << (kind as u32)
}

fn is_packet_kind(kind: pb::EventKind) -> bool {
    matches!(
        kind,
        pb::EventKind::MqttPacketReceived | pb::EventKind::MqttPacketSent
    )
}

fn is_message_kind(kind: pb::EventKind) -> bool {
    matches!(
        kind,
        pb::EventKind::MessageReceived
            | pb::EventKind::MessageBroadcast
            | pb::EventKind::RetainedMessage
    )
}

impl EventHub {
    /// A hub over `subscribers`.
    pub fn new(subscribers: Vec<Subscriber>) -> Self {
        let any = subscribers.iter().fold(0, |acc, s| acc | s.kinds);
        Self { subscribers, any }
    }

    /// The subscribers.
    pub fn subscribers(&self) -> &[Subscriber] {
        &self.subscribers
    }

    /// Whether any plugin wants any event.
    pub fn any(&self) -> bool {
        self.any != 0
    }

    /// Whether any plugin wants `kind`: producers check this before building anything.
    pub fn wants(&self, kind: pb::EventKind) -> bool {
        self.any & bit(kind) != 0
    }

    /// Queues an event of `kind` for every plugin that wants it (and, for message
    /// events, whose topic filters match `topic`). `build(bytes)` makes the event's
    /// body, with the bulk bytes the plugin asked for (`bytes` is its
    /// `want_message_payloads` for message events, `want_raw_packets` for packet
    /// events).
    pub async fn emit(
        &self,
        kind: pb::EventKind,
        client: Option<&Arc<pb::ClientRef>>,
        topic: Option<&str>,
        build: impl Fn(bool) -> pb::event::Kind,
    ) {
        if !self.wants(kind) {
            return;
        }
        let timestamp = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
        for s in &self.subscribers {
            if s.kinds & bit(kind) == 0 {
                continue;
            }
            if is_message_kind(kind)
                && !s.topic_filters.is_empty()
                && !topic.is_some_and(|t| {
                    s.topic_filters
                        .iter()
                        .any(|f| crate::router::topic::matches(f, t))
                })
            {
                continue;
            }
            let event = pb::Event {
                sequence: 0,
                timestamp,
                client: None,
                traceparent: String::new(),
                kind: Some(build(if is_packet_kind(kind) {
                    s.raw_packets
                } else {
                    s.payloads
                })),
            };
            let (_, drops) = s.queue.push_logged(event, client.cloned()).await;
            if let Some((dropped, for_bytes)) = drops {
                tracing::warn!(
                    plugin = %s.alias,
                    dropped,
                    dropped_for_bytes_total = for_bytes,
                    queued_bytes = s.queue.bytes(),
                    "event queue full (events.queue or events.max_bytes); oldest events dropped"
                );
            }
        }
    }

    /// Emits a lifecycle event and waits (bounded per plugin) until each plugin that
    /// wanted it has acked it.
    pub async fn emit_and_wait(
        &self,
        kind: pb::EventKind,
        build: impl Fn(bool) -> pb::event::Kind,
    ) {
        if !self.wants(kind) {
            return;
        }
        for s in &self.subscribers {
            if s.kinds & bit(kind) == 0 {
                continue;
            }
            let event = pb::Event {
                sequence: 0,
                timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
                client: None,
                traceparent: String::new(),
                kind: Some(build(s.payloads)),
            };
            // Bounded even with `backpressure` and a stalled plugin: lifecycle events
            // never hold the broker's start or exit hostage.
            let Ok(seq) = tokio::time::timeout(s.lifecycle_timeout, s.queue.push(event)).await
            else {
                tracing::warn!(plugin = %s.alias, ?kind, "event queue full; lifecycle event not queued");
                continue;
            };
            if !s.queue.wait_acked(seq, s.lifecycle_timeout).await {
                tracing::warn!(plugin = %s.alias, ?kind, timeout = ?s.lifecycle_timeout, "lifecycle event not acked in time; going on");
            }
        }
    }
}

/// How long a stream waits for a batch to fill once an event is ready (see
/// [`EventQueue::next_batch_lingering`]).
const BATCH_LINGER: Duration = Duration::from_millis(1);

/// Opens the `Events` call on `channel`, sending the batches from `rx` with
/// [`EventsCodec`] (what the generated client does, with our codec).
async fn open_stream(
    channel: super::plugin::Chan,
    rx: tokio::sync::mpsc::Receiver<OutBatch>,
) -> Result<tonic::Response<tonic::Streaming<pb::EventAck>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("plugin not ready: {e}")))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/tandem.plugin.v1.Plugin/Events");
    let request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    grpc.streaming(request, path, EventsCodec).await
}

/// Keeps a plugin's `Events` stream open on an up replica, sending batches from its
/// queue and applying its acks; after any stream failure it reconnects (with backoff)
/// and sends everything unacked again.
pub async fn drive(
    plugin: Arc<super::Plugin>,
    queue: Arc<EventQueue>,
    max_batch: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Some((replica, channel)) = plugin.up_replica() else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<OutBatch>(4);
        queue.rewind();
        // Batches go out while the call waits for the plugin's response headers: a
        // server may send its headers only with its first ack (grpcio, grpc-go), and
        // it acks only what it received, so waiting for them first would deadlock.
        let mut opening = std::pin::pin!(open_stream(channel, rx));
        let opened = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = &mut opening => break r,
                batch = queue.next_batch_lingering(max_batch, BATCH_LINGER) => {
                    if tx.send(batch).await.is_err() {
                        // The call ended; its outcome says why.
                        break opening.await;
                    }
                }
            }
        };
        let mut acks = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                tracing::warn!(plugin = %plugin.alias, code = ?status.code(), "cannot open the Events stream; retrying");
                plugin.stream_lost(&replica);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::debug!(plugin = %plugin.alias, "Events stream open");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = queue.next_batch_lingering(max_batch, BATCH_LINGER) => {
                    if tx.send(batch).await.is_err() {
                        break;
                    }
                }
                ack = acks.message() => match ack {
                    Ok(Some(a)) => queue.ack(a.acked_sequence),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        tracing::info!(plugin = %plugin.alias, unacked = queue.depth(), "Events stream closed; reconnecting");
        plugin.stream_lost(&replica);
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

    #[tokio::test]
    async fn batches_encode_exactly_as_the_generated_message() {
        let q = EventQueue::new(2, Overflow::DropOldest);
        let client = Arc::new(pb::ClientRef {
            client_id: "c1".into(),
            username: "alice".into(),
            attributes: [("tenant".to_owned(), "acme".to_owned())].into(),
            connect_username: "al".into(),
        });
        for topic in ["a/1", "a/2", "a/3"] {
            let event = pb::Event {
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                kind: Some(pb::event::Kind::MessageReceived(pb::MessageReceived {
                    message: Some(pb::Message {
                        topic: topic.into(),
                        payload: b"xyz".to_vec(),
                        payload_size: 3,
                        ..Default::default()
                    }),
                    packet_id: 7,
                    dup: false,
                })),
                ..Default::default()
            };
            q.push_for(event, Some(client.clone())).await;
        }
        q.push(ev()).await; // no client: nothing appended
        let batch = q.next_batch(10).await;
        assert_eq!(batch.dropped_events(), 2);
        let mut wire = bytes::BytesMut::new();
        batch.encode(&mut wire);
        let decoded = pb::EventBatch::decode(wire.freeze()).unwrap();
        assert_eq!(decoded, batch.to_pb());
        assert_eq!(
            decoded.events[0]
                .client
                .as_ref()
                .map(|c| c.username.as_str()),
            Some("alice")
        );
        assert!(decoded.events[1].client.is_none());
    }

    #[tokio::test]
    async fn hub_sends_only_wanted_kinds_and_matching_topics() {
        let queue = Arc::new(EventQueue::new(10, Overflow::DropOldest));
        let hub = EventHub::new(vec![Subscriber {
            alias: "p".into(),
            kinds: bit(pb::EventKind::MessageReceived),
            topic_filters: vec!["a/#".into()],
            payloads: false,
            raw_packets: false,
            queue: queue.clone(),
            lifecycle_timeout: Duration::from_secs(1),
        }]);
        assert!(hub.any() && hub.wants(pb::EventKind::MessageReceived));
        assert!(!hub.wants(pb::EventKind::ClientConnected));
        let body = |payloads: bool| {
            assert!(!payloads, "the plugin did not ask for payloads");
            pb::event::Kind::MessageReceived(pb::MessageReceived::default())
        };
        hub.emit(pb::EventKind::ClientConnected, None, None, body)
            .await;
        hub.emit(pb::EventKind::MessageReceived, None, Some("b/x"), body)
            .await;
        assert_eq!(
            queue.depth(),
            0,
            "unwanted kind and unmatched topic are not queued"
        );
        let client = Arc::new(pb::ClientRef {
            client_id: "c".into(),
            ..Default::default()
        });
        hub.emit(
            pb::EventKind::MessageReceived,
            Some(&client),
            Some("a/x"),
            body,
        )
        .await;
        let batch = queue.next_batch(10).await.to_pb();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].client.as_ref().unwrap().client_id, "c");
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
        let one = Queued::cost(&sized(1000), None);
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
        let one = Queued::cost(&sized(1000), None);
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
