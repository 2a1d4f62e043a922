//! The event hub: which plugins want which events, and the one place events are
//! built and queued for each of them, with only the bulk bytes each asked for.

use std::sync::Arc;
use std::time::Duration;

use tandem_proto::v1 as pb;

use super::codec::{EncodedClient, Queued};
use super::queue::EventQueue;

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

/// Events built and encoded for the plugins that want them, not yet queued: see
/// [`EventHub::build`] and [`EventHub::push`].
#[derive(Default)]
pub struct Pending {
    /// (the plugin's index among the hub's subscribers, its entry), in emission order.
    entries: Vec<(usize, Queued)>,
}

impl Pending {
    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every plugin that asked for events.
#[derive(Default)]
pub struct EventHub {
    subscribers: Vec<Subscriber>,
    /// Union of every subscriber's kinds: one test tells a producer nobody listens.
    any: u32,
}

pub(super) fn bit(kind: pb::EventKind) -> u32 {
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
        client: Option<&EncodedClient>,
        topic: Option<&str>,
        build: impl Fn(bool) -> pb::event::Kind,
    ) {
        let mut pending = Pending::default();
        self.build(kind, client, topic, build, &mut pending);
        self.push(pending).await;
    }

    /// [`emit`](Self::emit)'s first half: the event is built and encoded for every
    /// plugin that wants it, into `pending`, to be queued by [`push`](Self::push) with
    /// others (a connection queues the events of one read together).
    pub fn build(
        &self,
        kind: pb::EventKind,
        client: Option<&EncodedClient>,
        topic: Option<&str>,
        build: impl Fn(bool) -> pb::event::Kind,
        pending: &mut Pending,
    ) {
        if !self.wants(kind) {
            return;
        }
        let timestamp = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
        for (i, s) in self.subscribers.iter().enumerate() {
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
            pending
                .entries
                .push((i, Queued::new(&event, client.cloned())));
        }
    }

    /// Queues what [`build`](Self::build) put in `pending`, in order: per plugin, under
    /// one lock and with one wake-up of its stream.
    pub async fn push(&self, mut pending: Pending) {
        // Nearly always one plugin wants events: its entries go as they are.
        while !pending.entries.is_empty() {
            let i = pending.entries[0].0;
            let mine: Vec<Queued> = if pending.entries.iter().all(|(j, _)| *j == i) {
                std::mem::take(&mut pending.entries)
                    .into_iter()
                    .map(|(_, q)| q)
                    .collect()
            } else {
                let (mine, rest) = std::mem::take(&mut pending.entries)
                    .into_iter()
                    .partition::<Vec<_>, _>(|(j, _)| *j == i);
                pending.entries = rest;
                mine.into_iter().map(|(_, q)| q).collect()
            };
            let Some(s) = self.subscribers.get(i) else {
                continue;
            };
            let (_, drops) = s.queue.push_many(mine).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::config::Overflow;

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
        let client = EncodedClient::new(&pb::ClientRef {
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
}
