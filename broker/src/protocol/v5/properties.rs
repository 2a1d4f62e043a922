//! MQTT 5 properties on the wire (section 2.2.2): a variable byte integer length, then
//! identifier and value pairs.
//!
//! Every packet (and the will) admits its own set of identifiers; one that is unknown,
//! not admitted where it stands, repeated where it may appear once, or out of its range
//! is refused with [`Error::Property`], which closes the connection with DISCONNECT
//! 0x81 (malformed packet). Strings are checked as every MQTT string is; binary values
//! and strings are slices of the received frame, never copied.

use bytes::{BufMut, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{
    MAX_REMAINING_LENGTH, Reader, remaining_len_size as varint_len, write_bytes, write_varint,
};
use crate::protocol::properties::Properties;

/// Where a property block stands: each admits its own identifiers (the table of
/// section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A set of identifiers as bits (every identifier is below 64).
const fn ids(list: &[u8]) -> u64 {
    let mut set = 0u64;
    let mut i = 0;
    while i < list.len() {
        set |= 1 << list[i];
        i += 1;
    }
    set
}

impl Context {
    /// The identifiers admitted here.
    fn admits(self, id: u8) -> bool {
        const CONNECT: u64 = ids(&[
            SESSION_EXPIRY_INTERVAL,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REQUEST_PROBLEM_INFORMATION,
            REQUEST_RESPONSE_INFORMATION,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
        ]);
        const WILL: u64 = ids(&[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            WILL_DELAY_INTERVAL,
            USER_PROPERTY,
        ]);
        const CONNACK: u64 = ids(&[
            SESSION_EXPIRY_INTERVAL,
            ASSIGNED_CLIENT_IDENTIFIER,
            SERVER_KEEP_ALIVE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            REASON_STRING,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
        ]);
        const PUBLISH: u64 = ids(&[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            SUBSCRIPTION_IDENTIFIER,
            TOPIC_ALIAS,
            USER_PROPERTY,
        ]);
        const REASON_ONLY: u64 = ids(&[REASON_STRING, USER_PROPERTY]);
        const SUBSCRIBE: u64 = ids(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
        const UNSUBSCRIBE: u64 = ids(&[USER_PROPERTY]);
        const DISCONNECT: u64 = ids(&[
            SESSION_EXPIRY_INTERVAL,
            SERVER_REFERENCE,
            REASON_STRING,
            USER_PROPERTY,
        ]);
        const AUTH: u64 = ids(&[
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REASON_STRING,
            USER_PROPERTY,
        ]);
        let set = match self {
            Context::Connect => CONNECT,
            Context::Will => WILL,
            Context::ConnAck => CONNACK,
            Context::Publish => PUBLISH,
            Context::Ack | Context::SubAck | Context::UnsubAck => REASON_ONLY,
            Context::Subscribe => SUBSCRIBE,
            Context::Unsubscribe => UNSUBSCRIBE,
            Context::Disconnect => DISCONNECT,
            Context::Auth => AUTH,
        };
        id < 64 && set & (1 << id) != 0
    }
}

/// Reads a property block: its length, then every property in it. `None` when the block
/// is empty (the common case costs no allocation).
pub(crate) fn read(r: &mut Reader, context: Context) -> Result<Option<Box<Properties>>, Error> {
    let len = r.varint("property length")?;
    if len == 0 {
        return Ok(None);
    }
    let mut block = r.take(len, "properties")?;
    let packet = block.packet();
    let fail = |id: u8, reason: &'static str| Error::Property { packet, id, reason };
    let mut p = Properties::default();
    let mut seen = 0u64;
    while block.remaining() > 0 {
        // An identifier is a variable byte integer; every defined one fits in one byte.
        let raw = block.varint("property identifier")?;
        let id = u8::try_from(raw).unwrap_or(u8::MAX);
        if !context.admits(id) {
            return Err(fail(id, "is unknown or not allowed in this packet"));
        }
        let repeatable =
            id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && context == Context::Publish);
        if !repeatable && seen & (1 << id) != 0 {
            return Err(fail(id, "appears more than once"));
        }
        seen |= 1 << id;
        let flag = |v: u8| -> Result<u8, Error> {
            if v > 1 {
                Err(fail(id, "must be 0 or 1"))
            } else {
                Ok(v)
            }
        };
        let non_zero_u16 = |v: u16| -> Result<u16, Error> {
            if v == 0 {
                Err(fail(id, "must not be 0"))
            } else {
                Ok(v)
            }
        };
        match id {
            PAYLOAD_FORMAT_INDICATOR => {
                p.payload_format_indicator = Some(flag(block.u8("payload format")?)?)
            }
            MESSAGE_EXPIRY_INTERVAL => {
                p.message_expiry_interval = Some(block.u32("message expiry")?)
            }
            CONTENT_TYPE => p.content_type = Some(block.string("content type")?),
            RESPONSE_TOPIC => {
                let topic = block.string("response topic")?;
                if topic.is_empty() || topic.bytes().any(|b| b == b'+' || b == b'#') {
                    return Err(fail(id, "is not a valid topic name"));
                }
                p.response_topic = Some(topic)
            }
            CORRELATION_DATA => p.correlation_data = Some(block.binary("correlation data")?),
            SUBSCRIPTION_IDENTIFIER => {
                let v = block.varint("subscription identifier")?;
                if v == 0 {
                    return Err(fail(id, "must not be 0"));
                }
                p.subscription_identifiers.push(v as u32);
            }
            SESSION_EXPIRY_INTERVAL => {
                p.session_expiry_interval = Some(block.u32("session expiry")?)
            }
            ASSIGNED_CLIENT_IDENTIFIER => {
                p.assigned_client_identifier = Some(block.string("assigned client id")?)
            }
            SERVER_KEEP_ALIVE => p.server_keep_alive = Some(block.u16("server keep alive")?),
            AUTHENTICATION_METHOD => {
                p.authentication_method = Some(block.string("authentication method")?)
            }
            AUTHENTICATION_DATA => {
                p.authentication_data = Some(block.binary("authentication data")?)
            }
            REQUEST_PROBLEM_INFORMATION => {
                p.request_problem_information = Some(flag(block.u8("request problem")?)?)
            }
            WILL_DELAY_INTERVAL => p.will_delay_interval = Some(block.u32("will delay")?),
            REQUEST_RESPONSE_INFORMATION => {
                p.request_response_information = Some(flag(block.u8("request response")?)?)
            }
            RESPONSE_INFORMATION => {
                p.response_information = Some(block.string("response information")?)
            }
            SERVER_REFERENCE => p.server_reference = Some(block.string("server reference")?),
            REASON_STRING => p.reason_string = Some(block.string("reason string")?),
            RECEIVE_MAXIMUM => {
                p.receive_maximum = Some(non_zero_u16(block.u16("receive maximum")?)?)
            }
            TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(block.u16("topic alias maximum")?),
            TOPIC_ALIAS => p.topic_alias = Some(non_zero_u16(block.u16("topic alias")?)?),
            MAXIMUM_QOS => p.maximum_qos = Some(flag(block.u8("maximum QoS")?)?),
            RETAIN_AVAILABLE => p.retain_available = Some(flag(block.u8("retain available")?)?),
            USER_PROPERTY => {
                let key = block.string("user property")?;
                let value = block.string("user property")?;
                p.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => {
                let v = block.u32("maximum packet size")?;
                if v == 0 {
                    return Err(fail(id, "must not be 0"));
                }
                p.maximum_packet_size = Some(v)
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                p.wildcard_subscription_available = Some(flag(block.u8("wildcard available")?)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                p.subscription_identifier_available =
                    Some(flag(block.u8("subscription id available")?)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                p.shared_subscription_available = Some(flag(block.u8("shared available")?)?)
            }
            _ => unreachable!("admits() lets only defined identifiers through"),
        }
    }
    Ok(Some(Box::new(p)))
}

/// Bytes the properties take after their length.
fn body_len(p: &Properties) -> usize {
    let s = |v: &Option<bytestring::ByteString>| v.as_ref().map_or(0, |v| 3 + v.len());
    let b = |v: &Option<bytes::Bytes>| v.as_ref().map_or(0, |v| 3 + v.len());
    let n = |v: bool, size: usize| if v { 1 + size } else { 0 };
    n(p.payload_format_indicator.is_some(), 1)
        + n(p.message_expiry_interval.is_some(), 4)
        + s(&p.content_type)
        + s(&p.response_topic)
        + b(&p.correlation_data)
        + p.subscription_identifiers
            .iter()
            .map(|v| 1 + varint_len(*v as usize))
            .sum::<usize>()
        + n(p.session_expiry_interval.is_some(), 4)
        + s(&p.assigned_client_identifier)
        + n(p.server_keep_alive.is_some(), 2)
        + s(&p.authentication_method)
        + b(&p.authentication_data)
        + n(p.request_problem_information.is_some(), 1)
        + n(p.will_delay_interval.is_some(), 4)
        + n(p.request_response_information.is_some(), 1)
        + s(&p.response_information)
        + s(&p.server_reference)
        + s(&p.reason_string)
        + n(p.receive_maximum.is_some(), 2)
        + n(p.topic_alias_maximum.is_some(), 2)
        + n(p.topic_alias.is_some(), 2)
        + n(p.maximum_qos.is_some(), 1)
        + n(p.retain_available.is_some(), 1)
        + p.user_properties
            .iter()
            .map(|(k, v)| 1 + 2 + k.len() + 2 + v.len())
            .sum::<usize>()
        + n(p.maximum_packet_size.is_some(), 4)
        + n(p.wildcard_subscription_available.is_some(), 1)
        + n(p.subscription_identifier_available.is_some(), 1)
        + n(p.shared_subscription_available.is_some(), 1)
}

/// Bytes a property block takes on the wire, its length included.
pub(crate) fn len(p: Option<&Properties>) -> usize {
    let body = p.map_or(0, body_len);
    varint_len(body) + body
}

/// Appends a property block (its length, then the properties that are set).
pub(crate) fn write(p: Option<&Properties>, buf: &mut BytesMut) {
    let Some(p) = p else {
        buf.put_u8(0);
        return;
    };
    let body = body_len(p);
    debug_assert!(body <= MAX_REMAINING_LENGTH);
    write_varint(buf, body);
    let byte = |buf: &mut BytesMut, id: u8, v: Option<u8>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    };
    let two = |buf: &mut BytesMut, id: u8, v: Option<u16>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    };
    let four = |buf: &mut BytesMut, id: u8, v: Option<u32>| {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    };
    let data = |buf: &mut BytesMut, id: u8, v: Option<&[u8]>| {
        if let Some(v) = v {
            buf.put_u8(id);
            write_bytes(buf, v);
        }
    };
    byte(buf, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    four(buf, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    data(buf, CONTENT_TYPE, text(&p.content_type));
    data(buf, RESPONSE_TOPIC, text(&p.response_topic));
    data(buf, CORRELATION_DATA, p.correlation_data.as_deref());
    for id in &p.subscription_identifiers {
        buf.put_u8(SUBSCRIPTION_IDENTIFIER);
        write_varint(buf, *id as usize);
    }
    four(buf, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    data(
        buf,
        ASSIGNED_CLIENT_IDENTIFIER,
        text(&p.assigned_client_identifier),
    );
    two(buf, SERVER_KEEP_ALIVE, p.server_keep_alive);
    data(buf, AUTHENTICATION_METHOD, text(&p.authentication_method));
    data(buf, AUTHENTICATION_DATA, p.authentication_data.as_deref());
    byte(
        buf,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    four(buf, WILL_DELAY_INTERVAL, p.will_delay_interval);
    byte(
        buf,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    data(buf, RESPONSE_INFORMATION, text(&p.response_information));
    data(buf, SERVER_REFERENCE, text(&p.server_reference));
    data(buf, REASON_STRING, text(&p.reason_string));
    two(buf, RECEIVE_MAXIMUM, p.receive_maximum);
    two(buf, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    two(buf, TOPIC_ALIAS, p.topic_alias);
    byte(buf, MAXIMUM_QOS, p.maximum_qos);
    byte(buf, RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        buf.put_u8(USER_PROPERTY);
        write_bytes(buf, k.as_bytes());
        write_bytes(buf, v.as_bytes());
    }
    four(buf, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    byte(
        buf,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    byte(
        buf,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    byte(
        buf,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
}

/// A string property's bytes.
fn text(v: &Option<bytestring::ByteString>) -> Option<&[u8]> {
    v.as_deref().map(str::as_bytes)
}
