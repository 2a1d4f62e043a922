//! Why bytes are not an acceptable MQTT packet.

use crate::protocol::packet::PacketType;

/// Why a byte sequence is not an acceptable MQTT packet.
///
/// Every variant closes the connection that sent it; the text is what the broker logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The variable-length "remaining length" used a fifth byte or was otherwise invalid.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet announced more bytes than the configured maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Size the fixed header announced, header included.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Packet type 0, or 15 (AUTH) under a protocol version that has no AUTH.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires.
    #[error("reserved flag bits {flags:#06b} are invalid for {kind}")]
    InvalidFlags {
        /// The packet type.
        kind: PacketType,
        /// The four low bits of the first byte.
        flags: u8,
    },
    /// The CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("unsupported protocol name")]
    InvalidProtocolName,
    /// The CONNECT protocol level is not one this broker speaks.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// A QoS of 3, or QoS bits where none are allowed.
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// A string field is not well-formed UTF-8 or contains U+0000.
    #[error("invalid UTF-8 string in {0}")]
    InvalidUtf8(&'static str),
    /// A topic name in a PUBLISH or will contains `+` or `#`.
    #[error("wildcard in topic name")]
    WildcardInTopic,
    /// A topic name or filter of zero length.
    #[error("empty topic in {0}")]
    EmptyTopic(&'static str),
    /// A packet ended before a field it must carry, or carried bytes after its last field.
    #[error("malformed {packet}: {reason}")]
    Malformed {
        /// The packet type being decoded.
        packet: PacketType,
        /// What was wrong.
        reason: &'static str,
    },
    /// An MQTT 5 property that is unknown, not allowed in its packet, repeated or out of
    /// its range.
    #[error("malformed {packet}: property {id:#04x} {reason}")]
    Property {
        /// The packet type being decoded.
        packet: PacketType,
        /// The property identifier.
        id: u8,
        /// What was wrong.
        reason: &'static str,
    },
    /// A packet that breaks an MQTT 5 rule the codec cannot see alone (an alias used
    /// before it was set, a subscription identifier in a client's PUBLISH, ...).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// An MQTT 5 topic alias of 0, above the maximum announced, or not yet set.
    #[error("invalid topic alias {0}")]
    TopicAliasInvalid(u16),
    /// An MQTT 5 client's topic aliases would hold more bytes of topics than the broker
    /// keeps per connection.
    #[error("topic aliases would hold {bytes} bytes of topics (at most {max})")]
    AliasQuota {
        /// Bytes the aliases would hold.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// An MQTT 5 client sent more unreleased QoS 2 publishes than the receive maximum
    /// the broker announced.
    #[error("more than {0} unacknowledged QoS 2 publishes (receive maximum)")]
    ReceiveMaximumExceeded(u16),
    /// A packet that only CONNECT may start with, received later, or the reverse.
    #[error("unexpected {0} packet")]
    Unexpected(PacketType),
    /// A topic name with more levels than `mqtt.max_topic_levels` allows.
    #[error("{what} has {levels} topic levels, more than mqtt.max_topic_levels ({max})")]
    TooManyTopicLevels {
        /// Where the topic was (`PUBLISH topic`, `will topic`).
        what: &'static str,
        /// Levels it has.
        levels: usize,
        /// The configured limit.
        max: usize,
    },
}

impl Error {
    /// The MQTT 5 reason code of the DISCONNECT that closes a connection for this error
    /// (section 4.13): what could not be parsed is a malformed packet (0x81), what
    /// parsed but broke a rule is a protocol error (0x82), and a few have their own code.
    pub fn disconnect_code(&self) -> u8 {
        match self {
            Error::PacketTooLarge { .. } => 0x95,
            Error::TopicAliasInvalid(_) => 0x94,
            Error::ReceiveMaximumExceeded(_) => 0x93,
            Error::AliasQuota { .. } => 0x97,
            // Well formed, but more levels than this broker accepts.
            Error::TooManyTopicLevels { .. } => 0x90,
            Error::Unexpected(_) | Error::Protocol(_) | Error::EmptyTopic(_) => 0x82,
            Error::MalformedRemainingLength
            | Error::InvalidPacketType(_)
            | Error::InvalidFlags { .. }
            | Error::InvalidProtocolName
            | Error::UnsupportedProtocolLevel(_)
            | Error::InvalidQoS(_)
            | Error::InvalidUtf8(_)
            | Error::WildcardInTopic
            | Error::Malformed { .. }
            | Error::Property { .. } => 0x81,
        }
    }
}
