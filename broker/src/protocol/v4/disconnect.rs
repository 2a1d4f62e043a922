//! DISCONNECT.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::FixedHeader;
use crate::protocol::packet::{Disconnect, PacketType};
use crate::protocol::v4::fields::expect_flags;

/// Decodes a DISCONNECT: no flags, no body in 3.1.1.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Disconnect, Error> {
    expect_flags(header, PacketType::Disconnect, 0)?;
    if !body.is_empty() {
        return Err(Error::Malformed {
            packet: PacketType::Disconnect,
            reason: "non-zero remaining length",
        });
    }
    Ok(Disconnect::default())
}

/// Encodes a DISCONNECT.
pub fn write(buf: &mut BytesMut) {
    buf.put_u8(0xE0);
    buf.put_u8(0);
}
