//! UNSUBACK.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{PacketType, UnsubAck};
use crate::protocol::v4::fields::{expect_flags, read_pkid};

/// Decodes an UNSUBACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<UnsubAck, Error> {
    expect_flags(header, PacketType::UnsubAck, 0)?;
    let mut r = Reader::new(body, PacketType::UnsubAck);
    let pkid = read_pkid(&mut r)?;
    r.finish()?;
    Ok(UnsubAck {
        pkid,
        reasons: Vec::new(),
        properties: None,
    })
}

/// Encodes an UNSUBACK (3.1.1 has no per-filter reason codes).
pub fn write(p: &UnsubAck, buf: &mut BytesMut) {
    write_fixed_header(buf, 0xB0, 2);
    buf.put_u16(p.pkid);
}
