//! SUBACK.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, qos, write_fixed_header};
use crate::protocol::packet::{PacketType, SubAck, SubscribeReason};
use crate::protocol::v4::fields::{expect_flags, read_pkid};

/// Decodes a SUBACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<SubAck, Error> {
    expect_flags(header, PacketType::SubAck, 0)?;
    let mut r = Reader::new(body, PacketType::SubAck);
    let pkid = read_pkid(&mut r)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("return code")?;
        reasons.push(match code {
            0x80 => SubscribeReason::FAILURE,
            q => SubscribeReason::Granted(qos(q)?),
        });
    }
    if reasons.is_empty() {
        return Err(r.malformed("no return code"));
    }
    Ok(SubAck {
        pkid,
        reasons,
        properties: None,
    })
}

/// Encodes a SUBACK; every failure is 0x80 in 3.1.1.
pub fn write(p: &SubAck, buf: &mut BytesMut) {
    write_fixed_header(buf, 0x90, 2 + p.reasons.len());
    buf.put_u16(p.pkid);
    for r in &p.reasons {
        buf.put_u8(match r {
            SubscribeReason::Granted(q) => *q as u8,
            SubscribeReason::Failure(_) => 0x80,
        });
    }
}
