//! The event role: [`EventHandler`], what it subscribes to ([`EventSubscription`]) and the events.
//!
//! The SDK reads the broker's `Events` stream, calls the handlers whose subscription matches each
//! event, one event at a time in sequence order, and acks the highest sequence once the handlers
//! have returned for a whole batch. Delivery is at least once: after a reconnect the broker resends
//! what was not acked, so a handler with side effects skips sequences it has already handled (see
//! [`Event::sequence`]). A handler error is logged and the event still counts as handled: a
//! poisonous event must not stall the stream forever.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::{Client, Context, HandlerError, ProtocolVersion, UserProperties};

/// Receives broker events (aMQTT's `on_broker_*` methods, in one place).
///
/// ```
/// use tandem_plugin::{Context, Event, EventData, EventHandler, HandlerError};
///
/// struct Audit;
///
/// impl EventHandler for Audit {
///     async fn on_event(&self, _ctx: &Context, event: Event) -> Result<(), HandlerError> {
///         if let EventData::ClientConnected(connected) = &event.data {
///             let id = event.client.as_ref().map(|c| c.client_id.as_str()).unwrap_or("?");
///             println!("#{} {id} connected from {:?}", event.sequence, connected.remote_addr);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. The event is acked once this returns (`Ok` or `Err`).
    fn on_event(
        &self,
        ctx: &Context,
        event: Event,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Which events an [`EventHandler`] wants. The plugin's `Describe` answer is the union of its
/// handlers' subscriptions, and each handler only sees events matching its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSubscription {
    pub(crate) kinds: Vec<EventKind>,
    pub(crate) topics: Vec<String>,
    pub(crate) payloads: bool,
    pub(crate) raw_packets: bool,
}

impl EventSubscription {
    /// Subscribes to these kinds of event.
    pub fn new(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| *k as u8);
        kinds.dedup();
        EventSubscription {
            kinds,
            ..EventSubscription::default()
        }
    }

    /// Restricts message events (received, broadcast, retained) to topics matching these MQTT
    /// topic filters (`+` and `#` wildcards allowed). Without it, message events of every topic.
    pub fn topics<S: Into<String>>(mut self, filters: impl IntoIterator<Item = S>) -> Self {
        self.topics.extend(filters.into_iter().map(Into::into));
        self
    }

    /// Asks for message payloads in message events (otherwise only their size is sent).
    pub fn with_payloads(mut self) -> Self {
        self.payloads = true;
        self
    }

    /// Asks for the raw bytes of packets in packet events (otherwise only decoded header fields).
    pub fn with_raw_packets(mut self) -> Self {
        self.raw_packets = true;
        self
    }

    /// The kinds subscribed to.
    pub fn kinds(&self) -> &[EventKind] {
        &self.kinds
    }

    /// Whether this subscription wants this event.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        if !self.kinds.contains(&event.kind()) {
            return false;
        }
        match event.message() {
            Some(message) if !self.topics.is_empty() => self
                .topics
                .iter()
                .any(|filter| crate::filter::topic_matches(filter, &message.topic)),
            _ => true,
        }
    }
}

/// The kinds of broker event (aMQTT's broker events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// The broker is about to open its listeners (delivered and acked before any client is served).
    BrokerPreStart = 1,
    /// The broker's listeners are open.
    BrokerPostStart = 2,
    /// The broker is about to stop.
    BrokerPreShutdown = 3,
    /// The broker has stopped serving (delivered and acked before the process exits).
    BrokerPostShutdown = 4,
    /// A client connected.
    ClientConnected = 5,
    /// A client's connection ended.
    ClientDisconnected = 6,
    /// A client's SUBSCRIBE was answered.
    ClientSubscribed = 7,
    /// A client's UNSUBSCRIBE was answered.
    ClientUnsubscribed = 8,
    /// A PUBLISH arrived, before any check.
    MessageReceived = 9,
    /// A PUBLISH passed the checks and is routed.
    MessageBroadcast = 10,
    /// A retained message was stored, cleared or queued for an offline session.
    RetainedMessage = 11,
    /// An MQTT packet was read (high volume).
    MqttPacketReceived = 12,
    /// An MQTT packet was written (high volume).
    MqttPacketSent = 13,
}

impl EventKind {
    /// Every kind, packet events included (they are high volume: ask for them only if needed).
    pub const ALL: [EventKind; 13] = [
        EventKind::BrokerPreStart,
        EventKind::BrokerPostStart,
        EventKind::BrokerPreShutdown,
        EventKind::BrokerPostShutdown,
        EventKind::ClientConnected,
        EventKind::ClientDisconnected,
        EventKind::ClientSubscribed,
        EventKind::ClientUnsubscribed,
        EventKind::MessageReceived,
        EventKind::MessageBroadcast,
        EventKind::RetainedMessage,
        EventKind::MqttPacketReceived,
        EventKind::MqttPacketSent,
    ];
}

impl EventKind {
    /// The kind's snake-case name, as aMQTT and the broker's docs write it
    /// (`client_connected`); [`FromStr`](std::str::FromStr) parses it back.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::BrokerPreStart => "broker_pre_start",
            EventKind::BrokerPostStart => "broker_post_start",
            EventKind::BrokerPreShutdown => "broker_pre_shutdown",
            EventKind::BrokerPostShutdown => "broker_post_shutdown",
            EventKind::ClientConnected => "client_connected",
            EventKind::ClientDisconnected => "client_disconnected",
            EventKind::ClientSubscribed => "client_subscribed",
            EventKind::ClientUnsubscribed => "client_unsubscribed",
            EventKind::MessageReceived => "message_received",
            EventKind::MessageBroadcast => "message_broadcast",
            EventKind::RetainedMessage => "retained_message",
            EventKind::MqttPacketReceived => "mqtt_packet_received",
            EventKind::MqttPacketSent => "mqtt_packet_sent",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?} (expected one of: {known})", known = EventKind::ALL.map(EventKind::name).join(", "))]
pub struct UnknownEventKind(pub String);

impl std::str::FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// One broker event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in this plugin alias's stream for the current broker process: starts at 1 and
    /// strictly increases; a resent event keeps its sequence, so skip any sequence already handled
    /// (and reset when [`Context::broker_instance_id`] changes). Gaps mean dropped events.
    pub sequence: u64,
    /// When the broker observed the event.
    pub timestamp: SystemTime,
    /// The client the event is about; `None` for broker lifecycle events.
    pub client: Option<Client>,
    /// What happened.
    pub data: EventData,
}

impl Event {
    /// An event with this sequence and data, stamped now, without a client.
    pub fn new(sequence: u64, data: EventData) -> Self {
        Event {
            sequence,
            timestamp: SystemTime::now(),
            client: None,
            data,
        }
    }

    /// Sets the client the event is about.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The application message, for message events.
    pub fn message(&self) -> Option<&Message> {
        match &self.data {
            EventData::MessageReceived(e) => Some(&e.message),
            EventData::MessageBroadcast(e) => Some(&e.message),
            EventData::RetainedMessage(e) => Some(&e.message),
            _ => None,
        }
    }
}

/// What happened, one variant per [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// The broker is about to open its listeners.
    BrokerPreStart {
        /// The broker's version.
        broker_version: String,
    },
    /// The broker's listeners are open.
    BrokerPostStart {
        /// The open listeners.
        listeners: Vec<ListenerInfo>,
    },
    /// The broker is about to stop.
    BrokerPreShutdown {
        /// Why (for example `SIGTERM`); empty when unknown.
        reason: String,
    },
    /// The broker has stopped serving clients.
    BrokerPostShutdown,
    /// A client connected.
    ClientConnected(ClientConnected),
    /// A client's connection ended.
    ClientDisconnected(ClientDisconnected),
    /// A client's SUBSCRIBE was answered.
    ClientSubscribed {
        /// Every filter of the packet with its outcome.
        subscriptions: Vec<Subscription>,
        /// MQTT 5 user properties of the packet.
        user_properties: UserProperties,
    },
    /// A client's UNSUBSCRIBE was answered.
    ClientUnsubscribed {
        /// The filters of the packet.
        topic_filters: Vec<String>,
        /// MQTT 5 user properties of the packet.
        user_properties: UserProperties,
    },
    /// A PUBLISH arrived, before any check.
    MessageReceived(MessageReceived),
    /// A PUBLISH passed the checks and is routed.
    MessageBroadcast(MessageBroadcast),
    /// A retained message was stored, cleared or queued.
    RetainedMessage(RetainedMessage),
    /// An MQTT packet was read from the client.
    MqttPacketReceived(MqttPacket),
    /// An MQTT packet was written to the client.
    MqttPacketSent(MqttPacket),
}

impl EventData {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::BrokerPreStart { .. } => EventKind::BrokerPreStart,
            EventData::BrokerPostStart { .. } => EventKind::BrokerPostStart,
            EventData::BrokerPreShutdown { .. } => EventKind::BrokerPreShutdown,
            EventData::BrokerPostShutdown => EventKind::BrokerPostShutdown,
            EventData::ClientConnected(_) => EventKind::ClientConnected,
            EventData::ClientDisconnected(_) => EventKind::ClientDisconnected,
            EventData::ClientSubscribed { .. } => EventKind::ClientSubscribed,
            EventData::ClientUnsubscribed { .. } => EventKind::ClientUnsubscribed,
            EventData::MessageReceived(_) => EventKind::MessageReceived,
            EventData::MessageBroadcast(_) => EventKind::MessageBroadcast,
            EventData::RetainedMessage(_) => EventKind::RetainedMessage,
            EventData::MqttPacketReceived(_) => EventKind::MqttPacketReceived,
            EventData::MqttPacketSent(_) => EventKind::MqttPacketSent,
        }
    }
}

/// A broker listener, as reported at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenerInfo {
    /// The listener's name in the broker's configuration.
    pub name: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
    /// The bound address, `ip:port`.
    pub bind_addr: String,
}

/// A client connected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientConnected {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The listener's name.
    pub listener: String,
    /// The MQTT version spoken.
    pub protocol_version: ProtocolVersion,
    /// Clean start / clean session flag.
    pub clean_start: bool,
    /// Keepalive in effect; zero means off.
    pub keepalive: Duration,
    /// Whether an existing session was resumed.
    pub session_present: bool,
    /// Session expiry in effect; zero ends the session with the connection.
    pub session_expiry: Duration,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DisconnectReason {
    /// Unknown (for example a reason added in a newer broker).
    #[default]
    Unknown,
    /// The client sent DISCONNECT.
    Clean,
    /// The connection dropped without DISCONNECT.
    ConnectionLost,
    /// Nothing arrived within 1.5 times the keepalive.
    KeepaliveTimeout,
    /// The client broke the protocol.
    ProtocolError,
    /// Another connection took the session over.
    Takeover,
    /// The broker is shutting down.
    Shutdown,
    /// The client is no longer authorized.
    NotAuthorized,
    /// An operator or plugin disconnected the client.
    Administrative,
    /// Another cause (see [`ClientDisconnected::detail`]).
    Other,
}

/// A client's connection ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientDisconnected {
    /// Why.
    pub reason: DisconnectReason,
    /// MQTT 5 DISCONNECT reason code exchanged (0 when none).
    pub reason_code: u8,
    /// Human-readable detail; empty when nothing to add.
    pub detail: String,
    /// Whether the will is published because of this disconnection.
    pub will_published: bool,
    /// Whether the session outlives the connection.
    pub session_kept: bool,
}

/// One filter of a SUBSCRIBE and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The filter as sent.
    pub topic_filter: String,
    /// The maximum QoS requested.
    pub requested_qos: u8,
    /// The SUBACK reason code: 0..=2 is the granted QoS, `0x80` and above a refusal.
    pub reason_code: u8,
    /// MQTT 5 No Local option.
    pub no_local: bool,
    /// MQTT 5 Retain As Published option.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling option (0, 1 or 2).
    pub retain_handling: u8,
    /// MQTT 5 subscription identifier.
    pub subscription_identifier: Option<u32>,
}

impl Subscription {
    /// The granted QoS, or `None` when the subscription was refused.
    pub fn granted_qos(&self) -> Option<u8> {
        (self.reason_code <= 2).then_some(self.reason_code)
    }
}

/// MQTT 5 properties of an application message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// The sender declared the payload UTF-8 text.
    pub payload_is_utf8: bool,
    /// Message expiry; `None` when the message does not expire.
    pub message_expiry: Option<Duration>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Vec<u8>>,
    /// User properties.
    pub user_properties: UserProperties,
}

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The QoS.
    pub qos: u8,
    /// The retain flag.
    pub retain: bool,
    /// The payload: `None` unless the subscription asked for payloads
    /// ([`EventSubscription::with_payloads`]).
    pub payload: Option<Vec<u8>>,
    /// The payload size in bytes (always set).
    pub payload_size: u32,
    /// MQTT 5 properties.
    pub properties: Option<MessageProperties>,
}

/// A PUBLISH arrived, before any check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageReceived {
    /// The message.
    pub message: Message,
    /// The packet identifier (QoS 1 and 2).
    pub packet_id: Option<u16>,
    /// The DUP flag.
    pub dup: bool,
}

/// A PUBLISH passed the checks and is routed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageBroadcast {
    /// The message.
    pub message: Message,
    /// How many subscriptions matched.
    pub matched_subscriptions: u32,
}

/// What happened to a retained message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainedAction {
    /// Unknown.
    #[default]
    Unknown,
    /// Stored for its topic.
    Stored,
    /// Cleared (empty retained payload).
    Cleared,
    /// Queued for an offline persistent session.
    Queued,
}

/// A retained message was stored, cleared or queued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetainedMessage {
    /// What happened.
    pub action: RetainedAction,
    /// The message.
    pub message: Message,
    /// For [`RetainedAction::Queued`], the offline session's client id.
    pub session_client_id: Option<String>,
}

/// The MQTT control packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(missing_docs)] // the variants are the MQTT packet names
pub enum PacketType {
    /// Unknown or reserved.
    #[default]
    Unknown,
    Connect,
    Connack,
    Publish,
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
    Subscribe,
    Suback,
    Unsubscribe,
    Unsuback,
    Pingreq,
    Pingresp,
    Disconnect,
    Auth,
}

/// Decoded header fields of an MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MqttPacket {
    /// The packet type.
    pub packet_type: PacketType,
    /// The fixed header's four flag bits.
    pub flags: u8,
    /// Total size on the wire, in bytes.
    pub size: u32,
    /// The packet identifier, for packets that carry one.
    pub packet_id: Option<u16>,
    /// The topic, for PUBLISH.
    pub topic: Option<String>,
    /// The QoS, for PUBLISH.
    pub qos: u8,
    /// The retain flag, for PUBLISH.
    pub retain: bool,
    /// The DUP flag, for PUBLISH.
    pub dup: bool,
    /// The reason (or 3.1.1 return) code, for packets that carry one.
    pub reason_code: u8,
    /// The raw packet, when asked for ([`EventSubscription::with_raw_packets`]).
    pub raw: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::topic_matches;

    #[test]
    fn event_kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.name().parse::<EventKind>(), Ok(kind));
        }
        assert_eq!(EventKind::MqttPacketSent.to_string(), "mqtt_packet_sent");
        let err = "client_connect".parse::<EventKind>().unwrap_err();
        assert!(err.to_string().contains("client_connected"), "{err}");
    }

    #[test]
    fn topic_filters_follow_mqtt_rules() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
        assert!(topic_matches("a/+/c", "a/x/c"));
        assert!(topic_matches("a/+", "a/"));
        assert!(!topic_matches("a/+", "a"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "anything/at/all"));
        assert!(!topic_matches("#", "$SYS/uptime"));
        assert!(!topic_matches("+/uptime", "$SYS/uptime"));
        assert!(topic_matches("$SYS/#", "$SYS/uptime"));
    }

    #[test]
    fn subscriptions_filter_message_events_by_topic_only() {
        let sub = EventSubscription::new([EventKind::MessageReceived, EventKind::ClientConnected])
            .topics(["sensors/#"]);
        let message = |topic: &str| {
            Event::new(
                1,
                EventData::MessageReceived(MessageReceived {
                    message: Message {
                        topic: topic.into(),
                        ..Message::default()
                    },
                    ..MessageReceived::default()
                }),
            )
        };
        assert!(sub.matches(&message("sensors/1/temp")));
        assert!(!sub.matches(&message("actuators/1")));
        assert!(sub.matches(&Event::new(
            2,
            EventData::ClientConnected(ClientConnected::default())
        )));
        assert!(!sub.matches(&Event::new(3, EventData::BrokerPostShutdown)));
    }

    #[test]
    fn subscription_kinds_are_deduplicated() {
        let sub = EventSubscription::new([
            EventKind::ClientDisconnected,
            EventKind::ClientConnected,
            EventKind::ClientDisconnected,
        ]);
        assert_eq!(
            sub.kinds(),
            [EventKind::ClientConnected, EventKind::ClientDisconnected]
        );
    }
}
