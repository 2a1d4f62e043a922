//! The packet model: one set of types for every protocol version.
//!
//! Reason codes are MQTT 5's (a superset of 3.1.1's return codes) and every packet that
//! can carry properties has a [`Properties`] field, empty under 3.1.1.

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::properties::Properties;

/// The protocol versions this codec speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3. Same wire form as 3.1.1.
    V3_1,
    /// MQTT 3.1.1, protocol name "MQTT", level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// Whether this is MQTT 5 (reason codes and properties on the wire).
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-step handshake, exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS two bits stand for; `None` for 3.
    pub fn from_bits(v: u8) -> Option<Self> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The sixteen values of a fixed header's high nibble, less the reserved 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// Maps a fixed header's high nibble to its type.
    pub fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        };
        f.write_str(name)
    }
}

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    /// Boxed: a CONNECT is read once per connection, and every packet moved through
    /// the decoder and the connection's handlers would otherwise be as large as it.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: the first packet of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested by the client.
    pub protocol: ProtocolVersion,
    /// 3.1.1 "clean session", 5.0 "clean start".
    pub clean_start: bool,
    /// Keepalive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the broker may assign one).
    pub client_id: ByteString,
    /// User name, if the flag was set.
    pub username: Option<ByteString>,
    /// Password bytes, if the flag was set.
    pub password: Option<Bytes>,
    /// The will message, if the flag was set.
    pub will: Option<LastWill>,
    /// MQTT 5 CONNECT properties.
    pub properties: Option<Box<Properties>>,
}

/// A will message, published by the broker if the client goes away without DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic to publish on.
    pub topic: ByteString,
    /// Payload to publish.
    pub payload: Bytes,
    /// QoS of the will publish.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// MQTT 5 will properties (will delay interval among them).
    pub properties: Option<Box<Properties>>,
}

/// CONNECT outcome, as an MQTT 5 reason code (section 3.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectReason {
    /// Accepted.
    Success = 0x00,
    /// 5.0 "unspecified error".
    UnspecifiedError = 0x80,
    /// 5.0 "malformed packet".
    MalformedPacket = 0x81,
    /// 5.0 "protocol error".
    ProtocolError = 0x82,
    /// 5.0 "implementation specific error".
    ImplementationSpecificError = 0x83,
    /// 3.1.1 code 1.
    UnsupportedProtocolVersion = 0x84,
    /// 3.1.1 code 2.
    ClientIdentifierNotValid = 0x85,
    /// 3.1.1 code 4.
    BadUserNameOrPassword = 0x86,
    /// 3.1.1 code 5.
    NotAuthorized = 0x87,
    /// 3.1.1 code 3.
    ServerUnavailable = 0x88,
    /// 5.0 "server busy" (3.1.1 code 3).
    ServerBusy = 0x89,
    /// 5.0 "banned" (3.1.1 code 5).
    Banned = 0x8A,
    /// 5.0 "bad authentication method" (3.1.1 code 4).
    BadAuthenticationMethod = 0x8C,
    /// 5.0 "topic name invalid" (a will topic).
    TopicNameInvalid = 0x90,
    /// 5.0 "packet too large".
    PacketTooLarge = 0x95,
    /// 5.0 "quota exceeded" (3.1.1 code 3).
    QuotaExceeded = 0x97,
    /// 5.0 "payload format invalid" (a will payload).
    PayloadFormatInvalid = 0x99,
    /// 5.0 "retain not supported".
    RetainNotSupported = 0x9A,
    /// 5.0 "QoS not supported".
    QoSNotSupported = 0x9B,
    /// 5.0 "use another server".
    UseAnotherServer = 0x9C,
    /// 5.0 "server moved".
    ServerMoved = 0x9D,
    /// 5.0 "connection rate exceeded" (3.1.1 code 3).
    ConnectionRateExceeded = 0x9F,
}

impl ConnectReason {
    /// The 3.1.1 CONNACK return code nearest to this reason.
    pub fn v4_code(self) -> u8 {
        match self {
            ConnectReason::Success => 0,
            ConnectReason::UnsupportedProtocolVersion => 1,
            ConnectReason::ClientIdentifierNotValid => 2,
            ConnectReason::BadUserNameOrPassword | ConnectReason::BadAuthenticationMethod => 4,
            ConnectReason::NotAuthorized | ConnectReason::Banned => 5,
            _ => 3,
        }
    }

    /// The reason for a 3.1.1 CONNACK return code.
    pub fn from_v4_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ConnectReason::Success,
            1 => ConnectReason::UnsupportedProtocolVersion,
            2 => ConnectReason::ClientIdentifierNotValid,
            3 => ConnectReason::ServerUnavailable,
            4 => ConnectReason::BadUserNameOrPassword,
            5 => ConnectReason::NotAuthorized,
            _ => return None,
        })
    }

    /// The reason an MQTT 5 CONNACK reason code stands for; `None` for a code CONNACK
    /// may not carry.
    pub fn from_code(code: u8) -> Option<Self> {
        use ConnectReason::*;
        Some(match code {
            0x00 => Success,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8C => BadAuthenticationMethod,
            0x90 => TopicNameInvalid,
            0x95 => PacketTooLarge,
            0x97 => QuotaExceeded,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9F => ConnectionRateExceeded,
            _ => return None,
        })
    }
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the broker resumed a stored session.
    pub session_present: bool,
    /// Outcome.
    pub reason: ConnectReason,
    /// MQTT 5 CONNACK properties.
    pub properties: Option<Box<Properties>>,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// QoS of this transmission.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name, shared with the received frame.
    pub topic: ByteString,
    /// Packet identifier; 0 for QoS 0.
    pub pkid: u16,
    /// Application payload, shared with the received frame.
    pub payload: Bytes,
    /// MQTT 5 PUBLISH properties.
    pub properties: Option<Box<Properties>>,
}

/// A PUBLISH to encode, borrowed from wherever its parts live (a stored message on the
/// delivery path, a [`Publish`] elsewhere).
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// Topic name (empty when a topic alias stands for it).
    pub topic: &'a ByteString,
    /// Application payload.
    pub payload: &'a [u8],
    /// QoS of this transmission.
    pub qos: QoS,
    /// Packet identifier; 0 for QoS 0.
    pub pkid: u16,
    /// Redelivery flag.
    pub dup: bool,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties (ignored by the 3.1.1 wire form).
    pub properties: Option<&'a Properties>,
}

impl<'a> PublishRef<'a> {
    /// The parts of `p`.
    pub fn of(p: &'a Publish) -> Self {
        Self {
            topic: &p.topic,
            payload: &p.payload,
            qos: p.qos,
            pkid: p.pkid,
            dup: p.dup,
            retain: p.retain,
            properties: p.properties.as_deref(),
        }
    }
}

macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Packet identifier being acknowledged.
            pub pkid: u16,
            /// MQTT 5 reason code; 0 (success) under 3.1.1.
            pub reason: u8,
            /// MQTT 5 properties.
            pub properties: Option<Box<Properties>>,
        }

        impl $name {
            /// A successful acknowledgement of `pkid`.
            pub fn new(pkid: u16) -> Self {
                Self { pkid, reason: 0, properties: None }
            }
        }
    };
}

ack_packet!(
    /// PUBACK: QoS 1 acknowledgement.
    PubAck
);
ack_packet!(
    /// PUBREC: first QoS 2 acknowledgement.
    PubRec
);
ack_packet!(
    /// PUBREL: QoS 2 release.
    PubRel
);
ack_packet!(
    /// PUBCOMP: QoS 2 completion.
    PubComp
);

/// Subscription options of one filter. Only `qos` exists under 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted to messages on this subscription.
    pub qos: QoS,
    /// 5.0: do not send the client its own publishes.
    pub no_local: bool,
    /// 5.0: keep the retain flag as published.
    pub retain_as_published: bool,
    /// 5.0: 0 send retained, 1 only on new subscription, 2 never.
    pub retain_handling: u8,
}

/// One filter in a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter as sent (validated by the broker, not the codec).
    pub filter: ByteString,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
}

/// Outcome of one filter in a SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeReason {
    /// Granted at this QoS.
    Granted(QoS),
    /// Refused; 0x80 under 3.1.1, the MQTT 5 reason code otherwise.
    Failure(u8),
}

impl SubscribeReason {
    /// "Unspecified error" / 3.1.1 failure.
    pub const FAILURE: SubscribeReason = SubscribeReason::Failure(0x80);
    /// 5.0 "not authorized".
    pub const NOT_AUTHORIZED: SubscribeReason = SubscribeReason::Failure(0x87);
    /// 5.0 "topic filter invalid".
    pub const FILTER_INVALID: SubscribeReason = SubscribeReason::Failure(0x8F);
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub pkid: u16,
    /// One outcome per filter, in order.
    pub reasons: Vec<SubscribeReason>,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<ByteString>,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub pkid: u16,
    /// 5.0: one reason code per filter. Empty and not sent under 3.1.1.
    pub reasons: Vec<u8>,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code; 0 (normal disconnection) under 3.1.1.
    pub reason: u8,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
}

impl Disconnect {
    /// Whether an MQTT 5 DISCONNECT sent by the server may carry `code` (section
    /// 3.14.2.1).
    pub fn server_may_send(code: u8) -> bool {
        matches!(code, 0x00 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2)
    }
}

/// Whether a refused SUBSCRIBE's SUBACK entry may carry the MQTT 5 reason code `code`
/// (section 3.9.3).
pub fn suback_failure_code(code: u8) -> bool {
    matches!(
        code,
        0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
    )
}

/// Whether a refused PUBLISH's PUBACK or PUBREC may carry the MQTT 5 reason code `code`
/// (sections 3.4.2.1, 3.5.2.1).
pub fn puback_failure_code(code: u8) -> bool {
    matches!(code, 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99)
}

/// AUTH (5.0 only): a step of enhanced authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: u8,
    /// The method and data of this step, a reason string, user properties.
    pub properties: Option<Box<Properties>>,
}

impl Auth {
    /// "Success": the exchange is over.
    pub const SUCCESS: u8 = 0x00;
    /// "Continue authentication": another step follows.
    pub const CONTINUE: u8 = 0x18;
    /// "Re-authenticate": the client starts a new exchange on a live connection.
    pub const REAUTHENTICATE: u8 = 0x19;
}
