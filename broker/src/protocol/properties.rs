//! MQTT 5 properties.
//!
//! One struct for every packet's properties: the 5.0 wire form decides which
//! identifiers a packet may carry. Packets hold it as `Option<Box<Properties>>`:
//! `None` (no allocation, one word) is what every 3.1.1 packet carries.

use bytes::Bytes;
use bytestring::ByteString;

/// The MQTT 5 properties a packet can carry. All absent by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01: payload is unspecified bytes (0) or UTF-8 (1).
    pub payload_format_indicator: Option<u8>,
    /// 0x02: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03: MIME type of the payload.
    pub content_type: Option<ByteString>,
    /// 0x08: topic for a response.
    pub response_topic: Option<ByteString>,
    /// 0x09: correlation data for a response.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers (one in SUBSCRIBE, several in PUBLISH).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11: seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12: client id assigned by the server.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13: keepalive imposed by the server.
    pub server_keep_alive: Option<u16>,
    /// 0x15: enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// 0x16: enhanced authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17: whether the client wants problem information.
    pub request_problem_information: Option<u8>,
    /// 0x18: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19: whether the client wants response information.
    pub request_response_information: Option<u8>,
    /// 0x1A: response information.
    pub response_information: Option<ByteString>,
    /// 0x1C: another server to use.
    pub server_reference: Option<ByteString>,
    /// 0x1F: human-readable reason.
    pub reason_string: Option<ByteString>,
    /// 0x21: receive maximum (inflight QoS 1/2 window).
    pub receive_maximum: Option<u16>,
    /// 0x22: topic alias maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: topic alias.
    pub topic_alias: Option<u16>,
    /// 0x24: maximum QoS the server supports.
    pub maximum_qos: Option<u8>,
    /// 0x25: whether retained messages are supported.
    pub retain_available: Option<u8>,
    /// 0x26: user properties, in order, duplicates allowed.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27: maximum packet size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether wildcard subscriptions are supported.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29: whether subscription identifiers are supported.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A: whether shared subscriptions are supported.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
