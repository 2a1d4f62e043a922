//! What each kind of event carries: the connection, subscription, message and packet details,
//! one struct per payload, so that handlers match on `EventData` variants and read plain fields.

use std::net::SocketAddr;
use std::time::Duration;

use crate::types::{MessageProperties, ProtocolVersion};

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
    /// The listener's transport: `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
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
    /// ([`EventSubscription::with_payloads`](crate::EventSubscription::with_payloads)).
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
    /// The raw packet, when asked for
    /// ([`EventSubscription::with_raw_packets`](crate::EventSubscription::with_raw_packets)).
    pub raw: Option<Vec<u8>>,
}
