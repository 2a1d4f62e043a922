//! DISCONNECT and AUTH (5.0): a reason code and properties, both left out when the
//! reason is 0 and there are no properties (remaining length 0).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{Auth, Disconnect, PacketType};
use crate::protocol::properties::Properties;
use crate::protocol::v4::fields::expect_flags;
use crate::protocol::v5::properties::{self, Context};

/// The DISCONNECT reason codes of section 3.14.2.1.
fn valid_disconnect(code: u8) -> bool {
    matches!(code, 0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D | 0x8E..=0xA2)
        && code != 0x91
        && code != 0x92
}

/// Reads the optional reason code and properties.
fn read_reason(
    header: FixedHeader,
    body: Bytes,
    kind: PacketType,
    context: Context,
    valid: fn(u8) -> bool,
) -> Result<(u8, Option<Box<Properties>>), Error> {
    expect_flags(header, kind, 0)?;
    let mut r = Reader::new(body, kind);
    let mut reason = 0;
    let mut props = None;
    if r.remaining() > 0 {
        reason = r.u8("reason code")?;
        if !valid(reason) {
            return Err(r.malformed("invalid reason code"));
        }
        if r.remaining() > 0 {
            props = properties::read(&mut r, context)?;
        }
    }
    r.finish()?;
    Ok((reason, props))
}

fn write_reason(byte1: u8, reason: u8, props: Option<&Properties>, buf: &mut BytesMut) {
    match (reason, props) {
        (0, None) => write_fixed_header(buf, byte1, 0),
        (_, None) => {
            write_fixed_header(buf, byte1, 1);
            buf.put_u8(reason);
        }
        (_, Some(p)) => {
            write_fixed_header(buf, byte1, 1 + properties::len(Some(p)));
            buf.put_u8(reason);
            properties::write(Some(p), buf);
        }
    }
}

/// Decodes a DISCONNECT body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Disconnect, Error> {
    let (reason, properties) = read_reason(
        header,
        body,
        PacketType::Disconnect,
        Context::Disconnect,
        valid_disconnect,
    )?;
    Ok(Disconnect { reason, properties })
}

/// Encodes a DISCONNECT.
pub fn write(p: &Disconnect, buf: &mut BytesMut) {
    write_reason(0xE0, p.reason, p.properties.as_deref(), buf);
}

/// Decodes an AUTH body: success (0x00), continue authentication (0x18) or
/// re-authenticate (0x19).
pub fn read_auth(header: FixedHeader, body: Bytes) -> Result<Auth, Error> {
    let (reason, properties) = read_reason(header, body, PacketType::Auth, Context::Auth, |c| {
        matches!(c, 0x00 | 0x18 | 0x19)
    })?;
    Ok(Auth { reason, properties })
}

/// Encodes an AUTH.
pub fn write_auth(p: &Auth, buf: &mut BytesMut) {
    write_reason(0xF0, p.reason, p.properties.as_deref(), buf);
}
