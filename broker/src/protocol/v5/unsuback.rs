//! UNSUBACK (5.0): properties, then one reason code per filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{PacketType, UnsubAck};
use crate::protocol::v4::fields::{expect_flags, read_pkid};
use crate::protocol::v5::properties::{self, Context};

/// Decodes an UNSUBACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<UnsubAck, Error> {
    expect_flags(header, PacketType::UnsubAck, 0)?;
    let mut r = Reader::new(body, PacketType::UnsubAck);
    let pkid = read_pkid(&mut r)?;
    let properties = properties::read(&mut r, Context::UnsubAck)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("reason code")?;
        if !matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91) {
            return Err(r.malformed("invalid reason code"));
        }
        reasons.push(code);
    }
    if reasons.is_empty() {
        return Err(r.malformed("no reason code"));
    }
    Ok(UnsubAck {
        pkid,
        reasons,
        properties,
    })
}

/// Encodes an UNSUBACK.
pub fn write(p: &UnsubAck, buf: &mut BytesMut) {
    let props = p.properties.as_deref();
    write_fixed_header(buf, 0xB0, 2 + properties::len(props) + p.reasons.len());
    buf.put_u16(p.pkid);
    properties::write(props, buf);
    buf.put_slice(&p.reasons);
}
