//! PINGREQ and PINGRESP: a fixed header and nothing else.

use bytes::{BufMut, BytesMut};

use crate::protocol::{Error, FixedHeader, PacketType};

/// Checks a PINGREQ or PINGRESP header: no flags, no body.
pub fn read(header: FixedHeader, kind: PacketType) -> Result<(), Error> {
    super::expect_flags(header, kind, 0)?;
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
