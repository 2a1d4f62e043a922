//! CONNECT (protocol level 5): the 3.1.1 layout with property blocks after the keep
//! alive and before the will topic, and a password allowed without a user name.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{
    FixedHeader, Reader, qos, validate_topic_name, write_bytes, write_fixed_header,
};
use crate::protocol::packet::{Connect, LastWill, PacketType, ProtocolVersion};
use crate::protocol::v4::fields::expect_flags;
use crate::protocol::v5::properties::{self, Context};

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

/// Decodes a level 5 CONNECT body (the caller has seen the level).
pub fn read(header: FixedHeader, body: Bytes) -> Result<Connect, Error> {
    expect_flags(header, PacketType::Connect, 0)?;
    let mut r = Reader::new(body, PacketType::Connect);
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    if &name[..] != b"MQTT" {
        return Err(Error::InvalidProtocolName);
    }
    if level != 5 {
        return Err(Error::UnsupportedProtocolLevel(level));
    }
    let flags = r.u8("connect flags")?;
    if flags & FLAG_RESERVED != 0 {
        return Err(r.malformed("reserved connect flag set"));
    }
    let will_qos = (flags >> 3) & 0x03;
    if flags & FLAG_WILL == 0 && (will_qos != 0 || flags & FLAG_WILL_RETAIN != 0) {
        return Err(r.malformed("will QoS or retain set without a will"));
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = properties::read(&mut r, Context::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = if flags & FLAG_WILL != 0 {
        let will_properties = properties::read(&mut r, Context::Will)?;
        let topic = r.string("will topic")?;
        validate_topic_name(&topic, "will topic")?;
        let payload = r.binary("will message")?;
        Some(LastWill {
            topic,
            payload,
            qos: qos(will_qos)?,
            retain: flags & FLAG_WILL_RETAIN != 0,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if flags & FLAG_USERNAME != 0 {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if flags & FLAG_PASSWORD != 0 {
        Some(r.binary("password")?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: flags & FLAG_CLEAN != 0,
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties,
    })
}

/// Encodes a level 5 CONNECT (for tests and tools; the broker only reads it).
pub fn write(p: &Connect, buf: &mut BytesMut) {
    let mut len =
        2 + 4 + 1 + 1 + 2 + properties::len(p.properties.as_deref()) + 2 + p.client_id.len();
    let mut flags = 0u8;
    if p.clean_start {
        flags |= FLAG_CLEAN;
    }
    if let Some(w) = &p.will {
        flags |= FLAG_WILL | ((w.qos as u8) << 3);
        if w.retain {
            flags |= FLAG_WILL_RETAIN;
        }
        len += properties::len(w.properties.as_deref()) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &p.username {
        flags |= FLAG_USERNAME;
        len += 2 + u.len();
    }
    if let Some(pw) = &p.password {
        flags |= FLAG_PASSWORD;
        len += 2 + pw.len();
    }
    write_fixed_header(buf, 0x10, len);
    write_bytes(buf, b"MQTT");
    buf.put_u8(5);
    buf.put_u8(flags);
    buf.put_u16(p.keep_alive);
    properties::write(p.properties.as_deref(), buf);
    write_bytes(buf, p.client_id.as_bytes());
    if let Some(w) = &p.will {
        properties::write(w.properties.as_deref(), buf);
        write_bytes(buf, w.topic.as_bytes());
        write_bytes(buf, &w.payload);
    }
    if let Some(u) = &p.username {
        write_bytes(buf, u.as_bytes());
    }
    if let Some(pw) = &p.password {
        write_bytes(buf, pw);
    }
}
