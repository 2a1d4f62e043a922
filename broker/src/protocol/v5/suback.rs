//! SUBACK (5.0): properties, then one reason code per filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{PacketType, QoS, SubAck, SubscribeReason};
use crate::protocol::v4::fields::{expect_flags, read_pkid};
use crate::protocol::v5::properties::{self, Context};

/// Decodes a SUBACK body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<SubAck, Error> {
    expect_flags(header, PacketType::SubAck, 0)?;
    let mut r = Reader::new(body, PacketType::SubAck);
    let pkid = read_pkid(&mut r)?;
    let properties = properties::read(&mut r, Context::SubAck)?;
    let mut reasons = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("reason code")?;
        reasons.push(match code {
            0 => SubscribeReason::Granted(QoS::AtMostOnce),
            1 => SubscribeReason::Granted(QoS::AtLeastOnce),
            2 => SubscribeReason::Granted(QoS::ExactlyOnce),
            0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2 => {
                SubscribeReason::Failure(code)
            }
            _ => return Err(r.malformed("invalid reason code")),
        });
    }
    if reasons.is_empty() {
        return Err(r.malformed("no reason code"));
    }
    Ok(SubAck {
        pkid,
        reasons,
        properties,
    })
}

/// Encodes a SUBACK with each failure's own reason code.
pub fn write(p: &SubAck, buf: &mut BytesMut) {
    let props = p.properties.as_deref();
    write_fixed_header(buf, 0x90, 2 + properties::len(props) + p.reasons.len());
    buf.put_u16(p.pkid);
    properties::write(props, buf);
    for r in &p.reasons {
        buf.put_u8(match r {
            SubscribeReason::Granted(q) => *q as u8,
            SubscribeReason::Failure(code) => *code,
        });
    }
}
