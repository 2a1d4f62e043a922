//! `mqtt:`: the protocol's limits and timers, and who may take over a session. Each
//! bound has its behaviour at the bound written beside it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::session::mailbox::QueueBound;
pub use crate::session::mailbox::QueueFull;

/// MQTT limits. Each bound has a decided behaviour at the bound, written beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Connections served at once; one more is answered CONNACK "server unavailable"
    /// and closed at once.
    pub max_connections: usize,
    /// Largest packet accepted, fixed header included; a larger one closes the
    /// connection before its body is buffered.
    pub max_packet_size: usize,
    /// Outbound QoS 1/2 messages awaiting acknowledgement per client; further messages
    /// wait in the client's queue.
    pub max_inflight: u16,
    /// Messages queued per session (online behind the inflight window, or offline for
    /// a persistent session); `queue_full` says what one more does.
    pub max_queued_messages: usize,
    /// What a full session queue does with one more message: `drop_new` (drop it for
    /// that session), `drop_oldest` (drop the oldest queued one instead) or
    /// `backpressure` (a QoS 1/2 publisher waits for room, up to
    /// `backpressure_timeout`, before its PUBACK/PUBREC). Every drop is counted.
    pub queue_full: QueueFull,
    /// How long a publisher waits for room under `queue_full: backpressure`; past it,
    /// the message is dropped for the full session and the publisher's connection is
    /// closed without its acknowledgement (MQTT 5: DISCONNECT 0x97), so it sends again.
    #[serde(with = "humantime_serde")]
    pub backpressure_timeout: Duration,
    /// Levels (`/`-separated parts) a topic name or filter may have. A deeper SUBSCRIBE
    /// filter is answered 0x80; a deeper PUBLISH topic or will topic closes the
    /// connection. Counted and logged.
    pub max_topic_levels: usize,
    /// Subscriptions one session may hold. A SUBSCRIBE filter that would add one more
    /// is answered 0x80 (re-subscribing to a held filter still works); counted. This
    /// also bounds what one SUBSCRIBE can cost: duplicate filters in it are collapsed
    /// (the last QoS wins), and only this many distinct filters can be granted.
    pub max_subscriptions_per_client: usize,
    /// Retained topics stored at most. At the bound, a retained message on a new topic
    /// is not stored (it is still routed); replacing or clearing a stored topic works.
    /// Counted and logged at a falling rate. `$SYS/` topics are exempt.
    pub max_retained_messages: usize,
    /// Bytes (topic plus payload) the retained store holds at most. A retained message
    /// that does not fit is not stored, and a stored one it would replace is removed.
    pub max_retained_bytes: usize,
    /// How long a new connection may take to send CONNECT before it is closed.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest CONNECT accepted, fixed header included (capped by `max_packet_size`); a
    /// larger one closes the connection before its body is read. Also the most a
    /// connection buffers before it is authenticated: the CONNECT plus any packets
    /// pipelined behind it, which are served once the auth chain allows the client.
    pub max_connect_packet_size: usize,
    /// Connections that have not finished CONNECT and authentication, at once; a new
    /// connection over it is closed at once and counted.
    pub max_handshakes: usize,
    /// Who may take over or resume a client id's session (live or parked).
    pub session_takeover: SessionTakeover,
    /// How long a persistent session (clean session 0) is kept after its client went
    /// away (Mosquitto's `persistent_client_expiration`); then it is discarded: its
    /// subscriptions and queued messages go. `None` (`null`) keeps it until the broker
    /// stops.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Option<Duration>,
    /// Persistent sessions kept while their clients are offline; parking one more
    /// discards the one parked longest ago first.
    pub max_parked_sessions: usize,
    /// MQTT 5 topic aliases a client may set on its PUBLISH packets (announced in the
    /// CONNACK; 0 announces none). Each holds one topic for the life of the
    /// connection; an alias above it closes the connection with DISCONNECT 0x94.
    pub topic_alias_maximum: u16,
    /// The longest keepalive (seconds) an MQTT 5 client may ask for: one that asks for
    /// more, or for none (0), is given this one in the CONNACK's server keep alive and
    /// held to it. 65535 (the default) imposes nothing. 3.1.1 clients, who cannot be
    /// told, keep the keepalive they asked for.
    pub max_keep_alive: u16,
    /// MQTT 5 receive maximum: how many QoS 2 publishes an MQTT 5 client may have
    /// unreleased (PUBREC sent, PUBREL not yet received) at once. Announced in the
    /// CONNACK when below 65535 (the spec's default); one more closes the connection
    /// with DISCONNECT 0x93. QoS 1 publishes are acknowledged at once and never count.
    pub receive_maximum: u16,
}

/// Who may claim a client id whose session (live or parked) another identity owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionTakeover {
    /// Only the identity that owns the session: another one is refused with CONNACK
    /// "identifier rejected", and the owner's session is left as it is.
    SameIdentity,
    /// Anyone: the new connection takes the session over (Mosquitto's behaviour).
    Any,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_packet_size: 1024 * 1024,
            max_inflight: 100,
            max_queued_messages: 1000,
            queue_full: QueueFull::DropNew,
            backpressure_timeout: Duration::from_secs(10),
            max_topic_levels: 128,
            max_subscriptions_per_client: 1000,
            max_retained_messages: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_connect_packet_size: 64 * 1024,
            max_handshakes: 1024,
            session_takeover: SessionTakeover::SameIdentity,
            session_expiry: Some(Duration::from_secs(2 * 3600)),
            topic_alias_maximum: 64,
            max_keep_alive: u16::MAX,
            receive_maximum: u16::MAX,
            max_parked_sessions: 10_000,
        }
    }
}

impl MqttConfig {
    /// The keepalive a client is held to, and whether it differs from the one its
    /// CONNECT asked for (an MQTT 5 CONNACK then says so); see `max_keep_alive`.
    pub fn keep_alive_for(&self, asked: u16, v5: bool) -> (u16, bool) {
        let cap = self.max_keep_alive;
        if v5 && cap < u16::MAX && (asked == 0 || asked > cap) {
            (cap, true)
        } else {
            (asked, false)
        }
    }

    /// A session queue's bound and its behaviour at it.
    pub fn queue_bound(&self) -> QueueBound {
        QueueBound {
            capacity: self.max_queued_messages,
            full: self.queue_full,
        }
    }

    /// The CONNECT size limit in force: `max_connect_packet_size`, capped by
    /// `max_packet_size`.
    pub fn connect_size_limit(&self) -> usize {
        self.max_connect_packet_size.min(self.max_packet_size)
    }
}
