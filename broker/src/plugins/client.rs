//! One client's handle on the plugin host: everything a connection asks of its plugins,
//! in the broker's own types.
//!
//! A [`ClientPlugins`] is made by [`ClientPlugins::authenticate`] when the auth chain lets
//! a CONNECT in, and lives as long as the connection. It owns the plugin set the
//! connection uses (following reloads when told to), the session's decision cache, the
//! client's identity as plugins see it, and the `client_connected` event held until the
//! CONNACK is written. The connection asks it whether an action is allowed and tells it
//! what happened (a message received, routed, a subscription, packets read and written,
//! the end); it turns that into TopicFilter requests and events through
//! [`wire`](super::wire), and nothing outside `plugins/` sees a protobuf type.
//!
//! A check that failed with a plugin error can be asked again later, off the connection's
//! task ([`ClientPlugins::check_later`]), with [`Backoff`] between attempts: held
//! deliveries and held wills retry the same way.

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tandem_proto::v1 as pb;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info};

use crate::plugins::cache::{Cached, CachedAction, DecisionCache, Put};
use crate::plugins::client_info::{ClientIdentity, ConnectedInfo, DisconnectedInfo};
pub use crate::plugins::decision::{Backoff, Checked, Decision, Denial};
use crate::plugins::events::{EncodedClient, Pending};
use crate::plugins::wire;
use crate::plugins::{PluginHost, PluginSet, TopicOutcome};
use crate::protocol::{PacketSummary, Properties, ProtocolVersion, Publish, QoS, SubscribeReason};
use crate::session::Message;
use crate::stats::Stats;

/// The answer of a check asked off the connection's task (see
/// [`ClientPlugins::check_later`]), to be settled with [`ClientPlugins::settle`].
pub struct LaterAnswer {
    generation: u64,
    outcome: TopicOutcome,
    asked_at: Instant,
}

/// A check running in a task of its own; dropping it aborts the task.
pub type PendingCheck = AbortOnDropHandle<LaterAnswer>;

/// Whether a plugin in force wants packet events: the CONNECT's wire bytes are then
/// kept while it is read (before there is a [`ClientPlugins`]).
pub fn wants_packet_events(host: &PluginHost) -> bool {
    host.current()
        .events
        .wants(pb::EventKind::MqttPacketReceived)
}

/// One client's handle on the plugins (see the module docs).
pub struct ClientPlugins {
    host: Arc<PluginHost>,
    /// The set this connection uses; replaced by [`follow_reload`](Self::follow_reload).
    set: Arc<PluginSet>,
    client: ClientIdentity,
    /// The client as events name it, encoded once.
    event_client: EncodedClient,
    version: ProtocolVersion,
    /// TopicFilter decisions of this session, for the set in force.
    cache: DecisionCache,
    /// Whether "cache full" was logged for this connection (it is counted every time).
    cache_full_logged: bool,
    /// Set by [`give_up`](Self::give_up) when a held check ran out of
    /// `topic-check.hold`; cleared by the next verdict.
    gave_up: bool,
    /// `client_connected`, held until the CONNACK has been written.
    pending_connected: Option<pb::ClientConnected>,
    /// While a read's packets are handled, their events (and the set that built them):
    /// queued together by [`flush_events`](Self::flush_events), one lock and one
    /// wake-up per plugin per read rather than per event.
    batch: parking_lot::Mutex<Option<(Arc<PluginSet>, Pending)>>,
    stats: Arc<Stats>,
}

impl ClientPlugins {
    /// The handle of a client the auth chain (of `set`) let in as `client`.
    pub(crate) fn new(
        host: &Arc<PluginHost>,
        stats: &Arc<Stats>,
        set: Arc<PluginSet>,
        client: ClientIdentity,
        version: ProtocolVersion,
    ) -> Self {
        if client.identity() != client.connect_username() {
            debug!(identity = ?client.identity(), username = ?client.connect_username(),
                "identity established by the auth chain");
        }
        Self {
            host: host.clone(),
            event_client: EncodedClient::new(&wire::client_ref(&client)),
            client,
            version,
            cache: DecisionCache::new(&set.cache),
            cache_full_logged: false,
            gave_up: false,
            pending_connected: None,
            batch: parking_lot::Mutex::new(None),
            stats: stats.clone(),
            set,
        }
    }

    /// The host the handle's sets come from.
    pub(crate) fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// The broker's counters.
    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A handle for the same client with an empty cache, for work that outlives the
    /// connection (a held will).
    pub fn detached(&self) -> Self {
        Self {
            host: self.host.clone(),
            set: self.set.clone(),
            client: self.client.clone(),
            event_client: self.event_client.clone(),
            version: self.version,
            cache: DecisionCache::new(&self.set.cache),
            cache_full_logged: false,
            gave_up: false,
            pending_connected: None,
            batch: parking_lot::Mutex::new(None),
            stats: self.stats.clone(),
        }
    }

    /// Who the client is.
    pub fn client(&self) -> &ClientIdentity {
        &self.client
    }

    /// The generation of the set this connection uses.
    pub fn generation(&self) -> u64 {
        self.set.generation
    }

    /// `topic-check.hold` of the set in use.
    pub fn hold(&self) -> Duration {
        self.set.hold
    }

    /// Whether a topic-check chain is configured at all.
    pub fn checks_topics(&self) -> bool {
        self.set.topic_check.is_some()
    }

    /// If a reload put a new plugin set in force, uses it from now on; returns whether
    /// it did. Cached decisions were made by the old chains, so they go. One atomic
    /// load when nothing changed.
    pub fn follow_reload(&mut self) -> bool {
        if self.host.generation() == self.set.generation {
            return false;
        }
        self.set = self.host.current();
        self.cache = DecisionCache::new(&self.set.cache);
        debug!(generation = self.set.generation, "plugin set reloaded");
        true
    }

    // ---- topic checks ----

    /// Whether the client may do `action` on `topic`: the cache first, then the
    /// topic-check chain (always allowed without one). Tells a verdict from a plugin
    /// failure. Reads the clock itself: a decision made after idle time (a will, a
    /// delivery to a client that sends nothing) must not see an entry past its TTL.
    pub async fn check(
        &mut self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Checked {
        Checked::of(&self.decide(action, topic, qos, retain, None).await)
    }

    /// [`check`](Self::check), with the deciding plugin's reason code and Reason String
    /// on a denial (for a SUBACK or PUBACK). `props` are the MQTT 5 properties of the
    /// packet that asks, whose user properties go to the plugins (a decision is cached
    /// per topic all the same: a plugin that decides on them answers `cache_ttl_ms` 0).
    pub async fn decide(
        &mut self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
        props: Option<&Properties>,
    ) -> Decision {
        if self.set.topic_check.is_none() {
            return Decision::Allowed;
        }
        match self.cache.get(action, topic, Instant::now()) {
            Some(Cached::Allowed) => return Decision::Allowed,
            Some(Cached::Denied(code)) => {
                debug!(topic = ?topic, ?action, "topic check denied (cached)");
                return Decision::Denied(Denial { code, reason: None });
            }
            None => {}
        }
        // The set, not `self`, lends the chain: the answer is settled into `self`.
        let set = self.set.clone();
        let Some(chain) = &set.topic_check else {
            return Decision::Allowed;
        };
        let request = wire::topic_request(
            &self.client,
            self.version,
            action,
            topic,
            qos,
            retain,
            props,
        );
        let asked_at = Instant::now();
        // Boxed: a gRPC call's future is kilobytes, and inline it would sit in every
        // connection's task for its whole life; a cache miss already pays a round trip.
        let outcome = Box::pin(chain.topic_filter(request)).await;
        self.settle_decision(action, topic, outcome, asked_at)
    }

    /// Asks the chain in force now about `action` on `topic`, `after` from now, in a task
    /// of its own, so the connection keeps serving meanwhile. Settle the answer with
    /// [`settle`](Self::settle).
    pub fn check_later(
        &self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
        after: Duration,
    ) -> PendingCheck {
        let request =
            wire::topic_request(&self.client, self.version, action, topic, qos, retain, None);
        let set = self.set.clone();
        let at = Instant::now() + after;
        let call = async move {
            tokio::time::sleep_until(at).await;
            let asked_at = Instant::now();
            let outcome = match &set.topic_check {
                Some(chain) => chain.topic_filter(request).await,
                None => TopicOutcome {
                    allowed: true,
                    ..Default::default()
                },
            };
            LaterAnswer {
                generation: set.generation,
                outcome,
                asked_at,
            }
        }
        .instrument(tracing::Span::current());
        AbortOnDropHandle::new(tokio::spawn(call))
    }

    /// What a [`check_later`](Self::check_later) answer means now: `None` when a reload
    /// replaced the set that was asked (ask again), else the decision, counted and
    /// cached as a direct check would be. `answer` is `None` when the task did not
    /// finish: no verdict, as for a plugin failure.
    pub fn settle(
        &mut self,
        action: CachedAction,
        topic: &str,
        answer: Option<LaterAnswer>,
    ) -> Option<Checked> {
        self.follow_reload();
        match answer {
            Some(a) if a.generation == self.set.generation => Some(Checked::of(
                &self.settle_decision(action, topic, a.outcome, a.asked_at),
            )),
            Some(_) => None,
            None => Some(Checked::Failed),
        }
    }

    /// Records that a held check ran out of `topic-check.hold` without a verdict:
    /// until the chain answers again, [`gave_up`](Self::gave_up) says so, and failed
    /// checks are not held again (one hold per outage, not one per message).
    pub fn give_up(&mut self) {
        self.gave_up = true;
    }

    /// Whether a hold ran out and no verdict has come since.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Counts a chain's outcome, caches it as the plugins allow, and says what it was.
    fn settle_decision(
        &mut self,
        action: CachedAction,
        topic: &str,
        outcome: TopicOutcome,
        asked_at: Instant,
    ) -> Decision {
        let code = u8::try_from(outcome.reason_code).unwrap_or(0);
        if !outcome.allowed {
            self.stats.topic_denied();
        }
        if !outcome.from_error {
            // A verdict: the chain answers again.
            self.gave_up = false;
        }
        if let Some(ttl) = outcome.cache_ttl
            && self.cache.put(
                action,
                topic,
                if outcome.allowed {
                    Cached::Allowed
                } else {
                    Cached::Denied(code)
                },
                ttl,
                asked_at,
            ) == Put::Full
        {
            self.stats.topic_cache_full();
            if !self.cache_full_logged {
                self.cache_full_logged = true;
                info!(
                    entries = self.cache.len(),
                    bytes = self.cache.bytes(),
                    max_entries = self.set.cache.max_entries,
                    max_bytes = self.set.cache.max_bytes,
                    "topic decision cache full; further decisions are not cached until entries expire"
                );
            }
        }
        match (outcome.allowed, outcome.from_error) {
            (true, _) => Decision::Allowed,
            (false, false) => Decision::Denied(Denial {
                code,
                reason: (!outcome.client_reason.is_empty())
                    .then(|| ByteString::from(outcome.client_reason)),
            }),
            (false, true) => Decision::Failed,
        }
    }

    // ---- events ----

    /// Queues an event for the plugins that want `kind` (nothing is built otherwise),
    /// or, between [`batch_events`](Self::batch_events) and
    /// [`flush_events`](Self::flush_events), keeps it for the flush.
    async fn emit(
        &self,
        kind: pb::EventKind,
        topic: Option<&str>,
        build: impl Fn(bool) -> pb::event::Kind,
    ) {
        if !self.set.events.wants(kind) {
            return;
        }
        if let Some((set, pending)) = self.batch.lock().as_mut() {
            set.events
                .build(kind, Some(&self.event_client), topic, build, pending);
            return;
        }
        self.set
            .events
            .emit(kind, Some(&self.event_client), topic, build)
            .await;
    }

    /// From now until [`flush_events`](Self::flush_events), events are built as they
    /// happen and queued together at the flush (a connection does this around the
    /// packets of one read). Nothing is kept when no plugin wants events.
    pub fn batch_events(&self) {
        if self.set.events.any() {
            *self.batch.lock() = Some((self.set.clone(), Pending::default()));
        }
    }

    /// Queues the events kept since [`batch_events`](Self::batch_events), in order,
    /// and ends the batch.
    pub async fn flush_events(&self) {
        let batch = self.batch.lock().take();
        if let Some((set, pending)) = batch
            && !pending.is_empty()
        {
            set.events.push(pending).await;
        }
    }

    /// Whether any plugin wants any event: when none does, routing keeps no extra
    /// reference to a message for them.
    pub fn wants_events(&self) -> bool {
        self.set.events.any()
    }

    /// Whether a plugin wants to hear of messages queued for offline sessions (the
    /// router then notes which sessions it queued for).
    pub fn wants_queued(&self) -> bool {
        self.set.events.wants(pb::EventKind::RetainedMessage)
    }

    /// Whether packets read are reported (their frames are then kept).
    pub fn wants_packets_received(&self) -> bool {
        self.set.events.wants(pb::EventKind::MqttPacketReceived)
    }

    /// Whether packets written are reported (the outbox then keeps summaries).
    pub fn wants_packets_sent(&self) -> bool {
        self.set.events.wants(pb::EventKind::MqttPacketSent)
    }

    /// `mqtt_packet_received` for one packet read.
    pub async fn packet_received(&self, packet: &PacketSummary) {
        self.emit(pb::EventKind::MqttPacketReceived, None, |raw| {
            pb::event::Kind::MqttPacketReceived(pb::MqttPacketReceived {
                packet: Some(wire::packet(packet, raw)),
            })
        })
        .await;
    }

    /// `mqtt_packet_sent` for each packet written.
    pub async fn packets_sent(&self, packets: Vec<PacketSummary>) {
        for packet in &packets {
            self.emit(pb::EventKind::MqttPacketSent, None, |raw| {
                pb::event::Kind::MqttPacketSent(pb::MqttPacketSent {
                    packet: Some(wire::packet(packet, raw)),
                })
            })
            .await;
        }
    }

    /// `message_received` for a PUBLISH read (before its checks).
    pub async fn message_received(&self, p: &Publish) {
        self.emit(pb::EventKind::MessageReceived, Some(&p.topic), |payloads| {
            pb::event::Kind::MessageReceived(pb::MessageReceived {
                message: Some(wire::message(
                    &p.topic,
                    &p.payload,
                    p.qos,
                    p.retain,
                    p.properties.as_deref(),
                    payloads,
                )),
                packet_id: u32::from(p.pkid),
                dup: p.dup,
            })
        })
        .await;
    }

    /// The events of a message routed on this client's behalf: broadcast (with how
    /// many subscriptions matched), retained store or clear, and one QUEUED per offline
    /// session (`offline`) it was queued for.
    pub async fn routed(&self, m: &Message, matched: usize, offline: &[ByteString]) {
        let message = |payloads| {
            wire::message(
                &m.topic,
                &m.payload,
                m.qos,
                m.retain,
                m.properties.as_deref(),
                payloads,
            )
        };
        self.emit(
            pb::EventKind::MessageBroadcast,
            Some(&m.topic),
            |payloads| {
                pb::event::Kind::MessageBroadcast(pb::MessageBroadcast {
                    message: Some(message(payloads)),
                    matched_subscriptions: matched as u32,
                })
            },
        )
        .await;
        let retained = |action: pb::RetainedAction, session: String| {
            move |payloads| {
                pb::event::Kind::RetainedMessage(pb::RetainedMessage {
                    action: action as i32,
                    message: Some(message(payloads)),
                    session_client_id: session.clone(),
                })
            }
        };
        if m.retain {
            let action = if m.payload.is_empty() {
                pb::RetainedAction::Cleared
            } else {
                pb::RetainedAction::Stored
            };
            self.emit(
                pb::EventKind::RetainedMessage,
                Some(&m.topic),
                retained(action, String::new()),
            )
            .await;
        }
        for session in offline {
            self.emit(
                pb::EventKind::RetainedMessage,
                Some(&m.topic),
                retained(pb::RetainedAction::Queued, session.to_string()),
            )
            .await;
        }
    }

    /// `client_subscribed`: every filter requested, with what it was answered.
    pub async fn subscribed(
        &self,
        requested: &[(ByteString, QoS)],
        reasons: &[SubscribeReason],
        props: Option<&Properties>,
    ) {
        self.emit(pb::EventKind::ClientSubscribed, None, |_| {
            pb::event::Kind::ClientSubscribed(pb::ClientSubscribed {
                subscriptions: wire::subscriptions(requested, reasons),
                user_properties: wire::user_properties(props),
            })
        })
        .await;
    }

    /// `client_unsubscribed`: filters the client removed, or the broker revoked.
    pub async fn unsubscribed(&self, filters: &[ByteString], props: Option<&Properties>) {
        self.emit(pb::EventKind::ClientUnsubscribed, None, |_| {
            pb::event::Kind::ClientUnsubscribed(pb::ClientUnsubscribed {
                topic_filters: filters.iter().map(|f| f.to_string()).collect(),
                user_properties: wire::user_properties(props),
            })
        })
        .await;
    }

    /// Holds `client_connected` until [`connected_written`](Self::connected_written):
    /// plugins hear of a connection once its CONNACK is on the wire.
    pub fn connected(&mut self, info: &ConnectedInfo) {
        if self.set.events.wants(pb::EventKind::ClientConnected) {
            self.pending_connected = Some(wire::connected(&self.client, info));
        }
    }

    /// Emits `client_connected` if it is still held: after the first write (which
    /// carries the CONNACK), or at the end of a connection whose CONNACK could not be
    /// written, so that every `client_disconnected` follows a `client_connected`.
    pub async fn connected_written(&mut self) {
        if let Some(connected) = self.pending_connected.take() {
            self.emit(pb::EventKind::ClientConnected, None, |_| {
                pb::event::Kind::ClientConnected(connected.clone())
            })
            .await;
        }
    }

    /// `client_disconnected` (after a `client_connected` still held, if any).
    pub async fn disconnected(&mut self, info: &DisconnectedInfo) {
        self.connected_written().await;
        self.emit(pb::EventKind::ClientDisconnected, None, |_| {
            pb::event::Kind::ClientDisconnected(wire::disconnected(info))
        })
        .await;
    }
}
