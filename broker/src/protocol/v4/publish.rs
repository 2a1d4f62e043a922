//! PUBLISH.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{
    FixedHeader, Reader, qos, validate_topic_name, write_bytes, write_fixed_header,
};
use crate::protocol::packet::{PacketType, Publish, QoS};
use crate::protocol::v4::fields::read_pkid;

/// Decodes a PUBLISH body; the topic and payload share the frame's memory.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Publish, Error> {
    let flags = header.flags();
    let qos = qos((flags >> 1) & 0x03)?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(Error::InvalidFlags {
            kind: PacketType::Publish,
            flags,
        });
    }
    let mut r = Reader::new(body, PacketType::Publish);
    let topic = r.string("topic name")?;
    validate_topic_name(&topic, "PUBLISH")?;
    let pkid = if qos == QoS::AtMostOnce {
        0
    } else {
        read_pkid(&mut r)?
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        pkid,
        payload: r.rest(),
        properties: None,
    })
}

/// Encodes a PUBLISH.
pub fn write(p: &Publish, buf: &mut BytesMut) {
    write_parts(&p.topic, &p.payload, p.qos, p.pkid, p.dup, p.retain, buf);
}

/// Encodes a PUBLISH from its parts, so the outbound path need not build a [`Publish`].
pub fn write_parts(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    dup: bool,
    retain: bool,
    buf: &mut BytesMut,
) {
    let pkid_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let len = 2 + topic.len() + pkid_len + payload.len();
    let byte1 = 0x30 | ((dup as u8) << 3) | ((qos as u8) << 1) | retain as u8;
    write_fixed_header(buf, byte1, len);
    write_bytes(buf, topic.as_bytes());
    if pkid_len != 0 {
        buf.put_u16(pkid);
    }
    buf.put_slice(payload);
}
