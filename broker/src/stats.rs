//! Broker-wide counters, read by `$SYS` and by the admin listener's `/metrics`.
//!
//! Connections add their traffic in batches (once per socket read or write, not per
//! packet), so these shared cache lines are touched far less often than messages flow.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use crate::config::ListenerKind;
use crate::protocol::ProtocolVersion;

/// Counters since start.
#[derive(Debug)]
pub struct Stats {
    /// When the broker started.
    pub started: Instant,
    /// Refusals at the router's bounds (topic levels, subscriptions, retained store).
    pub limits: LimitCounters,
    clients_connected: AtomicUsize,
    clients_maximum: AtomicUsize,
    connections_total: AtomicU64,
    /// `connections_total` by MQTT version: 3.1, 3.1.1, 5.
    connections_by_version: [AtomicU64; 3],
    connections_by_transport: [AtomicU64; 4],
    connections_refused: AtomicU64,
    /// PUBLISH packets by QoS (index 0, 1, 2).
    messages_received: [AtomicU64; 3],
    messages_sent: [AtomicU64; 3],
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    messages_dropped: AtomicU64,
    protocol_errors: AtomicU64,
    auth_denied: AtomicU64,
    topic_denied: AtomicU64,
    /// Deliveries and wills held because their topic check failed with a plugin error.
    messages_held: AtomicU64,
    /// Held deliveries and wills dropped when `topic-check.hold` ran out.
    messages_hold_expired: AtomicU64,
    /// Messages not sent because their MQTT 5 expiry interval ran out first.
    messages_expired: AtomicU64,
    /// Messages not sent to a client because they exceed its MQTT 5 maximum packet size.
    messages_too_large: AtomicU64,
    /// Topic decisions not cached: the session's cache was at a bound.
    topic_cache_full: AtomicU64,
    handshakes_refused: AtomicU64,
    transport_failures: AtomicU64,
    connects_too_large: AtomicU64,
    sessions: SessionCounters,
}

/// What happened to sessions at their bounds and ownership rule.
#[derive(Debug, Default)]
struct SessionCounters {
    takeovers_refused: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    subscriptions_revoked: AtomicU64,
    resend_denied: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            limits: LimitCounters::default(),
            clients_connected: AtomicUsize::new(0),
            clients_maximum: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            connections_by_version: Default::default(),
            connections_by_transport: Default::default(),
            connections_refused: AtomicU64::new(0),
            messages_received: Default::default(),
            messages_sent: Default::default(),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            messages_dropped: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            auth_denied: AtomicU64::new(0),
            topic_denied: AtomicU64::new(0),
            messages_held: AtomicU64::new(0),
            messages_hold_expired: AtomicU64::new(0),
            messages_expired: AtomicU64::new(0),
            messages_too_large: AtomicU64::new(0),
            topic_cache_full: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            transport_failures: AtomicU64::new(0),
            connects_too_large: AtomicU64::new(0),
            sessions: SessionCounters::default(),
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct Snapshot {
    pub uptime_secs: u64,
    pub clients_connected: usize,
    pub clients_maximum: usize,
    pub connections_total: u64,
    /// `connections_total` by MQTT version: 3.1, 3.1.1, 5 (index 0, 1, 2).
    pub connections_by_version: [u64; 3],
    /// Connections that completed CONNECT, by listener transport (`ListenerKind::ALL`'s
    /// order).
    pub connections_by_transport: [u64; 4],
    pub connections_refused: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    /// `messages_received` by QoS (index 0, 1, 2).
    pub messages_received_by_qos: [u64; 3],
    /// `messages_sent` by QoS (index 0, 1, 2).
    pub messages_sent_by_qos: [u64; 3],
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub messages_dropped: u64,
    pub protocol_errors: u64,
    pub auth_denied: u64,
    pub topic_denied: u64,
    pub messages_held: u64,
    pub messages_hold_expired: u64,
    pub messages_expired: u64,
    pub messages_too_large: u64,
    pub topic_cache_full: u64,
    /// New connections closed at once at `mqtt.max_handshakes`.
    pub handshakes_refused: u64,
    /// Connections closed before MQTT: a failed PROXY header, TLS handshake or WebSocket
    /// upgrade.
    pub transport_failures: u64,
    /// Connections closed for a CONNECT over `mqtt.max_connect_packet_size`.
    pub connects_too_large: u64,
    /// CONNECTs refused because another identity owns the client id's session.
    pub takeovers_refused: u64,
    /// Parked sessions discarded at `mqtt.session_expiry`.
    pub sessions_expired: u64,
    /// Parked sessions discarded early at `mqtt.max_parked_sessions`.
    pub sessions_evicted: u64,
    /// Subscriptions removed because a reloaded topic-check chain denies them.
    pub subscriptions_revoked: u64,
    /// Inflight messages of a resumed session dropped because RECEIVE denies them.
    pub resend_denied: u64,
}

impl Stats {
    /// A client speaking `version` over `transport` completed CONNECT.
    pub fn client_connected(&self, version: ProtocolVersion, transport: ListenerKind) {
        let now = self.clients_connected.fetch_add(1, Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
        let v = match version {
            ProtocolVersion::V3_1 => 0,
            ProtocolVersion::V3_1_1 => 1,
            ProtocolVersion::V5 => 2,
        };
        self.connections_by_version[v].fetch_add(1, Relaxed);
        self.connections_by_transport[transport as usize].fetch_add(1, Relaxed);
    }

    /// A connected client went away.
    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Relaxed);
    }

    /// A connection was refused at the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// A connection was closed for a protocol violation or malformed packet.
    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    /// A new connection was closed at once at `mqtt.max_handshakes`.
    pub fn handshake_refused(&self) {
        self.handshakes_refused.fetch_add(1, Relaxed);
    }

    /// A connection closed before MQTT: its PROXY header, TLS handshake or WebSocket
    /// upgrade failed.
    pub fn transport_failed(&self) {
        self.transport_failures.fetch_add(1, Relaxed);
    }

    /// A connection announced a CONNECT over `mqtt.max_connect_packet_size`.
    pub fn connect_too_large(&self) {
        self.connects_too_large.fetch_add(1, Relaxed);
    }

    /// A CONNECT was denied by the auth chain.
    pub fn auth_denied(&self) {
        self.auth_denied.fetch_add(1, Relaxed);
    }

    /// A topic action was denied by the topic-check chain (cache hits not counted).
    pub fn topic_denied(&self) {
        self.topic_denied.fetch_add(1, Relaxed);
    }

    /// A delivery or will was held: its topic check failed with a plugin error.
    pub fn message_held(&self) {
        self.messages_held.fetch_add(1, Relaxed);
    }

    /// A held delivery or will was dropped at the end of `topic-check.hold`.
    pub fn hold_expired(&self) {
        self.messages_hold_expired.fetch_add(1, Relaxed);
    }

    /// A message was not sent: its MQTT 5 expiry interval ran out while it waited.
    pub fn message_expired(&self) {
        self.messages_expired.fetch_add(1, Relaxed);
    }

    /// A message was not sent to a client: larger than its MQTT 5 maximum packet size.
    pub fn message_too_large(&self) {
        self.messages_too_large.fetch_add(1, Relaxed);
    }

    /// A topic decision was not cached: the session's cache was full.
    pub fn topic_cache_full(&self) {
        self.topic_cache_full.fetch_add(1, Relaxed);
    }

    /// A CONNECT was refused: another identity owns the client id's session.
    pub fn takeover_refused(&self) {
        self.sessions.takeovers_refused.fetch_add(1, Relaxed);
    }

    /// A parked session was discarded at `mqtt.session_expiry`.
    pub fn session_expired(&self) {
        self.sessions.expired.fetch_add(1, Relaxed);
    }

    /// A parked session was discarded early at `mqtt.max_parked_sessions`.
    pub fn session_evicted(&self) {
        self.sessions.evicted.fetch_add(1, Relaxed);
    }

    /// A subscription was removed because the topic-check chain now denies it.
    pub fn subscription_revoked(&self) {
        self.sessions.subscriptions_revoked.fetch_add(1, Relaxed);
    }

    /// An inflight message was not resent because RECEIVE now denies it.
    pub fn resend_denied(&self) {
        self.sessions.resend_denied.fetch_add(1, Relaxed);
    }

    /// Inbound traffic: PUBLISH packets by QoS (index 0, 1, 2) in `bytes` bytes.
    pub fn add_received(&self, messages: [u64; 3], bytes: u64) {
        add_by_qos(&self.messages_received, messages);
        self.bytes_received.fetch_add(bytes, Relaxed);
    }

    /// Outbound traffic: PUBLISH packets by QoS (index 0, 1, 2) in `bytes` bytes.
    pub fn add_sent(&self, messages: [u64; 3], bytes: u64) {
        add_by_qos(&self.messages_sent, messages);
        self.bytes_sent.fetch_add(bytes, Relaxed);
    }

    /// Messages dropped for a full session queue.
    pub fn add_dropped(&self, n: u64) {
        self.messages_dropped.fetch_add(n, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let received = self.messages_received.each_ref().map(|c| c.load(Relaxed));
        let sent = self.messages_sent.each_ref().map(|c| c.load(Relaxed));
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            clients_connected: self.clients_connected.load(Relaxed),
            clients_maximum: self.clients_maximum.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            connections_by_version: self
                .connections_by_version
                .each_ref()
                .map(|c| c.load(Relaxed)),
            connections_by_transport: self
                .connections_by_transport
                .each_ref()
                .map(|c| c.load(Relaxed)),
            connections_refused: self.connections_refused.load(Relaxed),
            messages_received: received.iter().sum(),
            messages_sent: sent.iter().sum(),
            messages_received_by_qos: received,
            messages_sent_by_qos: sent,
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            messages_dropped: self.messages_dropped.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            auth_denied: self.auth_denied.load(Relaxed),
            topic_denied: self.topic_denied.load(Relaxed),
            messages_held: self.messages_held.load(Relaxed),
            messages_hold_expired: self.messages_hold_expired.load(Relaxed),
            messages_expired: self.messages_expired.load(Relaxed),
            messages_too_large: self.messages_too_large.load(Relaxed),
            topic_cache_full: self.topic_cache_full.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            transport_failures: self.transport_failures.load(Relaxed),
            connects_too_large: self.connects_too_large.load(Relaxed),
            takeovers_refused: self.sessions.takeovers_refused.load(Relaxed),
            sessions_expired: self.sessions.expired.load(Relaxed),
            sessions_evicted: self.sessions.evicted.load(Relaxed),
            subscriptions_revoked: self.sessions.subscriptions_revoked.load(Relaxed),
            resend_denied: self.sessions.resend_denied.load(Relaxed),
        }
    }
}

/// Adds a batch's per-QoS counts, touching only the counters that changed: most
/// batches carry one QoS, or none at all (acks, pings).
fn add_by_qos(counters: &[AtomicU64; 3], batch: [u64; 3]) {
    for (counter, n) in counters.iter().zip(batch) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// Refusals at the bounds of topics, subscriptions and the retained store, each counted
/// where it happens and read by `/metrics`.
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Topics or filters past `mqtt.max_topic_levels`, by packet: SUBSCRIBE filters
    /// (answered 0x80), PUBLISH topics and will topics (connection closed).
    pub topic_levels: [AtomicU64; 3],
    /// SUBSCRIBE filters answered 0x80 at `mqtt.max_subscriptions_per_client`.
    pub subscriptions: AtomicU64,
    /// Retained messages not stored at `mqtt.max_retained_messages`.
    pub retained_count: AtomicU64,
    /// Retained messages not stored at `mqtt.max_retained_bytes`.
    pub retained_bytes: AtomicU64,
}

/// Which packet carried a topic past `mqtt.max_topic_levels` (index into
/// [`LimitCounters::topic_levels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicIn {
    /// A SUBSCRIBE filter.
    Subscribe = 0,
    /// A PUBLISH topic name.
    Publish = 1,
    /// A CONNECT will topic.
    Will = 2,
}

impl LimitCounters {
    /// Counts one topic past `mqtt.max_topic_levels`.
    pub fn topic_levels(&self, packet: TopicIn) {
        self.topic_levels[packet as usize].fetch_add(1, Relaxed);
    }

    /// Counts `n` filters refused at `mqtt.max_subscriptions_per_client`.
    pub fn subscriptions_refused(&self, n: u64) {
        self.subscriptions.fetch_add(n, Relaxed);
    }

    /// Counts one retained message not stored; returns how many that bound has refused
    /// so far (for logging at a falling rate).
    pub fn retained_refused(&self, bytes: bool) -> u64 {
        let counter = match bytes {
            true => &self.retained_bytes,
            false => &self.retained_count,
        };
        counter.fetch_add(1, Relaxed) + 1
    }
}
