//! PUBACK, PUBREC, PUBREL and PUBCOMP (5.0): a packet identifier, then a reason code
//! and properties, both left out when the reason is success and there are no
//! properties (remaining length 2).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{PacketType, PubAck, PubComp, PubRec, PubRel};
use crate::protocol::properties::Properties;
use crate::protocol::v4::fields;
use crate::protocol::v5::properties::{self, Context};

/// The reason codes each acknowledgement may carry (sections 3.4.2.1 to 3.7.2.1).
fn valid_reason(kind: PacketType, code: u8) -> bool {
    match kind {
        PacketType::PubAck | PacketType::PubRec => {
            matches!(
                code,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            )
        }
        _ => matches!(code, 0x00 | 0x92),
    }
}

type Parts = (u16, u8, Option<Box<Properties>>);

fn read_ack(header: FixedHeader, body: Bytes, kind: PacketType) -> Result<Parts, Error> {
    let flags = if kind == PacketType::PubRel { 0x02 } else { 0 };
    fields::expect_flags(header, kind, flags)?;
    let mut r = Reader::new(body, kind);
    let pkid = fields::read_pkid(&mut r)?;
    let mut reason = 0;
    let mut props = None;
    if r.remaining() > 0 {
        reason = r.u8("reason code")?;
        if !valid_reason(kind, reason) {
            return Err(r.malformed("invalid reason code"));
        }
        if r.remaining() > 0 {
            props = properties::read(&mut r, Context::Ack)?;
        }
    }
    r.finish()?;
    Ok((pkid, reason, props))
}

macro_rules! reader {
    ($(#[$doc:meta])* $fn:ident, $ty:ident) => {
        $(#[$doc])*
        pub fn $fn(header: FixedHeader, body: Bytes) -> Result<$ty, Error> {
            let (pkid, reason, properties) = read_ack(header, body, PacketType::$ty)?;
            Ok($ty { pkid, reason, properties })
        }
    };
}

reader!(
    /// Decodes a PUBACK body.
    read_puback,
    PubAck
);
reader!(
    /// Decodes a PUBREC body.
    read_pubrec,
    PubRec
);
reader!(
    /// Decodes a PUBREL body (its flags must be 0b0010).
    read_pubrel,
    PubRel
);
reader!(
    /// Decodes a PUBCOMP body.
    read_pubcomp,
    PubComp
);

/// Encodes one of the four acknowledgements, in the short form when it can.
pub fn write(
    kind: PacketType,
    pkid: u16,
    reason: u8,
    props: Option<&Properties>,
    buf: &mut BytesMut,
) {
    let flags = if kind == PacketType::PubRel { 0x02 } else { 0 };
    let byte1 = ((kind as u8) << 4) | flags;
    match (reason, props) {
        (0, None) => {
            write_fixed_header(buf, byte1, 2);
            buf.put_u16(pkid);
        }
        (_, None) => {
            write_fixed_header(buf, byte1, 3);
            buf.put_u16(pkid);
            buf.put_u8(reason);
        }
        (_, Some(p)) => {
            write_fixed_header(buf, byte1, 3 + properties::len(Some(p)));
            buf.put_u16(pkid);
            buf.put_u8(reason);
            properties::write(Some(p), buf);
        }
    }
}
