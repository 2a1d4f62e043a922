//! CONNECT (protocol level 5): the 3.1.1 layout with property blocks after the keep
//! alive and before the will topic, and a password allowed without a user name.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_bytes, write_fixed_header};
use crate::protocol::packet::{Connect, PacketType, ProtocolVersion};
use crate::protocol::v4::connect::ConnectFlags;
use crate::protocol::v4::fields::expect_flags;
use crate::protocol::v5::properties::{self, Context};

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
    let flags = ConnectFlags::read(&mut r)?;
    let keep_alive = r.u16("keep alive")?;
    let properties = properties::read(&mut r, Context::Connect)?;
    let client_id = r.string("client identifier")?;
    let will = match flags.will() {
        true => {
            let will_properties = properties::read(&mut r, Context::Will)?;
            Some(flags.read_will(&mut r, will_properties)?)
        }
        false => None,
    };
    // Unlike 3.1.1, MQTT 5 allows a password without a user name.
    let (username, password) = flags.read_login(&mut r)?;
    r.finish()?;
    Ok(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: flags.clean(),
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
    let flags = ConnectFlags::of(p);
    if let Some(w) = &p.will {
        len += properties::len(w.properties.as_deref()) + 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &p.username {
        len += 2 + u.len();
    }
    if let Some(pw) = &p.password {
        len += 2 + pw.len();
    }
    write_fixed_header(buf, 0x10, len);
    write_bytes(buf, b"MQTT");
    buf.put_u8(5);
    buf.put_u8(flags.bits());
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
