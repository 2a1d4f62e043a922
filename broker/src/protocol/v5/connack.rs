//! CONNACK (5.0): acknowledge flags, a reason code and properties.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{ConnAck, ConnectReason, PacketType};
use crate::protocol::v4::fields::expect_flags;
use crate::protocol::v5::properties::{self, Context};

/// Decodes a CONNACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<ConnAck, Error> {
    expect_flags(header, PacketType::ConnAck, 0)?;
    let mut r = Reader::new(body, PacketType::ConnAck);
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(r.malformed("reserved acknowledge flags set"));
    }
    let code = r.u8("reason code")?;
    let reason = ConnectReason::from_code(code).ok_or(r.malformed("unknown reason code"))?;
    let properties = properties::read(&mut r, Context::ConnAck)?;
    r.finish()?;
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        reason,
        properties,
    })
}

/// Encodes a CONNACK.
pub fn write(p: &ConnAck, buf: &mut BytesMut) {
    let props = p.properties.as_deref();
    write_fixed_header(buf, 0x20, 2 + properties::len(props));
    buf.put_u8(p.session_present as u8);
    buf.put_u8(p.reason as u8);
    properties::write(props, buf);
}
