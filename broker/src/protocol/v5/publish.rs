//! PUBLISH (5.0): the topic, the packet identifier, properties, then the payload.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{
    FixedHeader, Reader, validate_topic_name, write_bytes, write_fixed_header,
};
use crate::protocol::packet::{PacketType, Publish, PublishRef, QoS};
use crate::protocol::v4::fields::{publish_flags, read_pkid};
use crate::protocol::v5::properties::{self, Context};

/// Decodes a PUBLISH body. The topic may be empty when a topic alias names it (the
/// connection resolves the alias); the topic and payload share the frame's memory.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Publish, Error> {
    let (qos, dup, retain) = publish_flags(header)?;
    let mut r = Reader::new(body, PacketType::Publish);
    let topic = r.string("topic name")?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        read_pkid(&mut r)?
    };
    let properties = properties::read(&mut r, Context::Publish)?;
    let aliased = properties.as_ref().is_some_and(|p| p.topic_alias.is_some());
    if !(topic.is_empty() && aliased) {
        validate_topic_name(&topic, "PUBLISH")?;
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        pkid,
        payload: r.rest(),
        properties,
    })
}

/// Encodes a PUBLISH.
pub fn write(p: &Publish, buf: &mut BytesMut) {
    write_parts(&PublishRef::of(p), buf);
}

/// Encodes a PUBLISH from its parts, so the outbound path need not build a [`Publish`].
pub fn write_parts(p: &PublishRef<'_>, buf: &mut BytesMut) {
    let pkid_len = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let len = 2 + p.topic.len() + pkid_len + properties::len(p.properties) + p.payload.len();
    let byte1 = 0x30 | ((p.dup as u8) << 3) | ((p.qos as u8) << 1) | p.retain as u8;
    write_fixed_header(buf, byte1, len);
    write_bytes(buf, p.topic.as_bytes());
    if pkid_len != 0 {
        buf.put_u16(p.pkid);
    }
    properties::write(p.properties, buf);
    buf.put_slice(p.payload);
}
