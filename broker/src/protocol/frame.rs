//! Framing and the primitives every wire form shares: the fixed header, the two-phase
//! "check then split" of a buffered packet, remaining lengths, strings and binary data.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::error::Error;
use crate::protocol::packet::{PacketType, QoS};

/// Largest remaining length MQTT can express (four length bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The fixed header of a packet whose bytes are all buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type in the high nibble, flags in the low one.
    pub byte1: u8,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
    /// The remaining length: bytes after the fixed header.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// Total size of the packet on the wire.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// The packet type, if the high nibble names one.
    pub fn packet_type(&self) -> Result<PacketType, Error> {
        let nibble = self.byte1 >> 4;
        PacketType::from_nibble(nibble).ok_or(Error::InvalidPacketType(nibble))
    }

    /// The four flag bits.
    pub fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }
}

/// Checks whether `buf` starts with a whole packet.
///
/// Returns `Ok(None)` when more bytes are needed, the fixed header when the packet is
/// complete, and an error as soon as the header is invalid or announces a packet larger
/// than `max_packet_size`, whether or not the body has arrived.
pub fn check(buf: &[u8], max_packet_size: usize) -> Result<Option<FixedHeader>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let byte1 = buf[0];
    let mut remaining_len: usize = 0;
    let mut shift = 0;
    let mut header_len = 1;
    loop {
        let Some(&b) = buf.get(header_len) else {
            return Ok(None);
        };
        header_len += 1;
        remaining_len |= ((b & 0x7F) as usize) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if header_len == 5 {
            // A fourth length byte with its continuation bit set would need a fifth.
            return Err(Error::MalformedRemainingLength);
        }
    }
    let size = header_len + remaining_len;
    if size > max_packet_size {
        return Err(Error::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    Ok(Some(FixedHeader {
        byte1,
        header_len,
        remaining_len,
    }))
}

/// Splits the next whole packet off `buf`, if there is one.
///
/// The returned `Bytes` holds the packet body (after the fixed header); it shares the
/// buffer's memory, so slices of it (payloads, topics) are free.
pub fn next_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<(FixedHeader, Bytes)>, Error> {
    let Some(header) = check(buf, max_packet_size)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(header.frame_len());
    frame.advance(header.header_len);
    Ok(Some((header, frame.freeze())))
}

/// Number of bytes the remaining length `len` takes on the wire.
pub(crate) fn remaining_len_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes the fixed header: first byte, then the remaining length.
pub(crate) fn write_fixed_header(buf: &mut BytesMut, byte1: u8, len: usize) {
    debug_assert!(len <= MAX_REMAINING_LENGTH);
    buf.reserve(1 + remaining_len_size(len) + len);
    buf.put_u8(byte1);
    write_varint(buf, len);
}

/// Writes a variable byte integer (a remaining length, an MQTT 5 property length or
/// subscription identifier): seven bits a byte, low first.
pub(crate) fn write_varint(buf: &mut BytesMut, mut value: usize) {
    loop {
        let mut b = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if value == 0 {
            break;
        }
    }
}

/// Writes a length-prefixed string or binary field.
pub(crate) fn write_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

/// A cursor over one packet body that turns short reads into [`Error::Malformed`].
pub(crate) struct Reader {
    body: Bytes,
    packet: PacketType,
}

impl Reader {
    pub(crate) fn new(body: Bytes, packet: PacketType) -> Self {
        Self { body, packet }
    }

    pub(crate) fn malformed(&self, reason: &'static str) -> Error {
        Error::Malformed {
            packet: self.packet,
            reason,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.body.len()
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        if self.body.is_empty() {
            return Err(self.malformed(what));
        }
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        if self.body.len() < 2 {
            return Err(self.malformed(what));
        }
        Ok(self.body.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        if self.body.len() < 4 {
            return Err(self.malformed(what));
        }
        Ok(self.body.get_u32())
    }

    /// A variable byte integer: at most four bytes, so at most [`MAX_REMAINING_LENGTH`].
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<usize, Error> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8(what)?;
            value |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed(what))
    }

    /// The next `len` bytes as a reader of their own (an MQTT 5 property block).
    pub(crate) fn take(&mut self, len: usize, what: &'static str) -> Result<Reader, Error> {
        if self.body.len() < len {
            return Err(self.malformed(what));
        }
        Ok(Reader {
            body: self.body.split_to(len),
            packet: self.packet,
        })
    }

    /// The packet type being read.
    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    /// A two-byte length followed by that many bytes, shared with the frame.
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, Error> {
        let len = self.u16(what)? as usize;
        if self.body.len() < len {
            return Err(self.malformed(what));
        }
        Ok(self.body.split_to(len))
    }

    /// A UTF-8 string as MQTT defines it: well-formed, and without U+0000.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<ByteString, Error> {
        let raw = self.binary(what)?;
        utf8(raw, what)
    }

    /// Everything left in the packet.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// Fails if bytes remain after the last field.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(self.malformed("unexpected bytes after the last field"))
        }
    }
}

/// Validates an MQTT UTF-8 string without copying it.
pub(crate) fn utf8(raw: Bytes, what: &'static str) -> Result<ByteString, Error> {
    if raw.contains(&0) {
        return Err(Error::InvalidUtf8(what));
    }
    ByteString::try_from(raw).map_err(|_| Error::InvalidUtf8(what))
}

/// Checks a topic name (PUBLISH, will): non-empty and without wildcards.
pub fn validate_topic_name(topic: &str, what: &'static str) -> Result<(), Error> {
    if topic.is_empty() {
        return Err(Error::EmptyTopic(what));
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(Error::WildcardInTopic);
    }
    Ok(())
}

/// The QoS two bits stand for, or the error that closes the connection.
pub(crate) fn qos(bits: u8) -> Result<QoS, Error> {
    QoS::from_bits(bits).ok_or(Error::InvalidQoS(bits))
}
