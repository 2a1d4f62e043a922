//! CONNACK.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{ConnAck, ConnectReason, PacketType};
use crate::protocol::v4::fields::expect_flags;

/// Decodes a CONNACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<ConnAck, Error> {
    expect_flags(header, PacketType::ConnAck, 0)?;
    let mut r = Reader::new(body, PacketType::ConnAck);
    let flags = r.u8("acknowledge flags")?;
    if flags & 0xFE != 0 {
        return Err(r.malformed("reserved acknowledge flags set"));
    }
    let code = r.u8("return code")?;
    let reason = ConnectReason::from_v4_code(code).ok_or(r.malformed("unknown return code"))?;
    r.finish()?;
    Ok(ConnAck {
        session_present: flags & 1 != 0,
        reason,
        properties: None,
    })
}

/// Encodes a CONNACK with the 3.1.1 return code for its reason.
pub fn write(p: &ConnAck, buf: &mut BytesMut) {
    write_fixed_header(buf, 0x20, 2);
    buf.put_u8(p.session_present as u8);
    buf.put_u8(p.reason.v4_code());
}
