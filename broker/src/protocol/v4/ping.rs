//! PINGREQ and PINGRESP: a fixed header and nothing else.

use bytes::{BufMut, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::FixedHeader;
use crate::protocol::packet::PacketType;
use crate::protocol::v4::fields::expect_flags;

/// Checks a PINGREQ or PINGRESP header: no flags, no body.
pub fn read(header: FixedHeader, kind: PacketType) -> Result<(), Error> {
    expect_flags(header, kind, 0)?;
    if header.remaining_len != 0 {
        return Err(Error::Malformed {
            packet: kind,
            reason: "non-zero remaining length",
        });
    }
    Ok(())
}

/// Encodes a PINGREQ or PINGRESP.
pub fn write(kind: PacketType, buf: &mut BytesMut) {
    buf.put_u8((kind as u8) << 4);
    buf.put_u8(0);
}
