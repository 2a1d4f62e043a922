//! CONNECT.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::error::Error;
use crate::protocol::frame::{
    FixedHeader, Reader, qos, validate_topic_name, write_bytes, write_fixed_header,
};
use crate::protocol::packet::{Connect, LastWill, PacketType, ProtocolVersion};
use crate::protocol::properties::Properties;
use crate::protocol::v4::fields::expect_flags;

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

/// A CONNECT's flags byte, laid out alike in every version, and the fields it
/// governs (the will, user name and password), read alike too. MQTT 5 differs only
/// in the will's properties and in allowing a password without a user name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectFlags(u8);

impl ConnectFlags {
    /// Reads the flags byte: the reserved bit must be clear, and will QoS and retain
    /// need the will flag.
    pub(crate) fn read(r: &mut Reader) -> Result<Self, Error> {
        let flags = r.u8("connect flags")?;
        if flags & FLAG_RESERVED != 0 {
            return Err(r.malformed("reserved connect flag set"));
        }
        if flags & FLAG_WILL == 0 && flags & (0x18 | FLAG_WILL_RETAIN) != 0 {
            return Err(r.malformed("will QoS or retain set without a will"));
        }
        Ok(Self(flags))
    }

    /// The flags `p` is written with.
    pub(crate) fn of(p: &Connect) -> Self {
        let mut flags = 0u8;
        if p.clean_start {
            flags |= FLAG_CLEAN;
        }
        if let Some(w) = &p.will {
            flags |= FLAG_WILL | ((w.qos as u8) << 3);
            if w.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if p.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if p.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        Self(flags)
    }

    /// The byte on the wire.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    pub(crate) fn clean(self) -> bool {
        self.0 & FLAG_CLEAN != 0
    }

    pub(crate) fn will(self) -> bool {
        self.0 & FLAG_WILL != 0
    }

    pub(crate) fn username(self) -> bool {
        self.0 & FLAG_USERNAME != 0
    }

    pub(crate) fn password(self) -> bool {
        self.0 & FLAG_PASSWORD != 0
    }

    /// The will's topic and message (after its MQTT 5 `properties`, read by the
    /// caller), with the QoS and retain the flags give.
    pub(crate) fn read_will(
        self,
        r: &mut Reader,
        properties: Option<Box<Properties>>,
    ) -> Result<LastWill, Error> {
        let topic = r.string("will topic")?;
        validate_topic_name(&topic, "will topic")?;
        let payload = r.binary("will message")?;
        Ok(LastWill {
            topic,
            payload,
            qos: qos((self.0 >> 3) & 0x03)?,
            retain: self.0 & FLAG_WILL_RETAIN != 0,
            properties,
        })
    }

    /// The user name and password the flags announce.
    pub(crate) fn read_login(
        self,
        r: &mut Reader,
    ) -> Result<(Option<ByteString>, Option<Bytes>), Error> {
        let username = match self.username() {
            true => Some(r.string("user name")?),
            false => None,
        };
        let password = match self.password() {
            true => Some(r.binary("password")?),
            false => None,
        };
        Ok((username, password))
    }
}

/// Decodes a CONNECT body. The protocol name and level decide the version.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Connect, Error> {
    expect_flags(header, PacketType::Connect, 0)?;
    let mut r = Reader::new(body, PacketType::Connect);
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", other) | (b"MQIsdp", other) => {
            return Err(Error::UnsupportedProtocolLevel(other));
        }
        _ => return Err(Error::InvalidProtocolName),
    };
    let flags = ConnectFlags::read(&mut r)?;
    if flags.password() && !flags.username() {
        return Err(r.malformed("password flag set without user name flag"));
    }
    let keep_alive = r.u16("keep alive")?;
    let client_id = r.string("client identifier")?;
    let will = match flags.will() {
        true => Some(flags.read_will(&mut r, None)?),
        false => None,
    };
    let (username, password) = flags.read_login(&mut r)?;
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start: flags.clean(),
        keep_alive,
        client_id,
        username,
        password,
        will,
        properties: None,
    })
}

/// Encodes a CONNECT (used by tests and tools; the broker only reads it).
pub fn write(p: &Connect, version: ProtocolVersion, buf: &mut BytesMut) {
    let name: &[u8] = match version {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    };
    let mut len = 2 + name.len() + 1 + 1 + 2 + 2 + p.client_id.len();
    let flags = ConnectFlags::of(p);
    if let Some(w) = &p.will {
        len += 2 + w.topic.len() + 2 + w.payload.len();
    }
    if let Some(u) = &p.username {
        len += 2 + u.len();
    }
    if let Some(pw) = &p.password {
        len += 2 + pw.len();
    }
    write_fixed_header(buf, 0x10, len);
    write_bytes(buf, name);
    buf.put_u8(version.level());
    buf.put_u8(flags.bits());
    buf.put_u16(p.keep_alive);
    write_bytes(buf, p.client_id.as_bytes());
    if let Some(w) = &p.will {
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
