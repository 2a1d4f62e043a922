//! SUBACK.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    Error, FixedHeader, PacketType, QoS, Reader, SubAck, SubscribeReason, write_fixed_header,
};

/// Decodes a SUBACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<SubAck, Error> {
    super::expect_flags(header, PacketType::SubAck, 0)?;
    let mut r = Reader::new(body, PacketType::SubAck);
    let pkid = super::read_pkid(&mut r)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("return code")?;
        reasons.push(match code {
            0x80 => SubscribeReason::FAILURE,
            q => SubscribeReason::Granted(QoS::from_u8(q)?),
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
