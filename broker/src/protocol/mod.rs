//! The MQTT codec: one packet model, wire forms per protocol version.
//!
//! # Layout
//! - [`packet`]: the packet model. It is a superset shaped after MQTT 5 (reason codes,
//!   properties) so that the 3.1.1 wire form and the 5.0 one decode into the same types
//!   and the rest of the broker never branches on the wire version to read a packet.
//! - [`properties`]: MQTT 5 properties as a plain struct. The 3.1.1 wire form ignores
//!   them on encode and leaves them empty on decode.
//! - [`v4`]: the 3.1.1 wire form (protocol level 4, and level 3 "MQIsdp", which has the
//!   same layout), one file per packet.
//! - this file: fixed-header framing, the error type and the small shared primitives
//!   (remaining length, strings, binary data).
//!
//! # Framing
//! Decoding is two-phase ("check then parse"): [`check`] looks at the bytes buffered so
//! far and answers whether a whole packet is there, without allocating. The announced
//! size is compared with the maximum packet size *before* waiting for the body, so a
//! hostile length never makes the broker buffer more than it allows. Only then is the
//! frame split off the `BytesMut` as a frozen `Bytes`, and payloads and topics are slices
//! of it: a PUBLISH payload is never copied between the socket and its subscribers.

pub mod packet;
pub mod properties;
pub mod v4;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

pub use packet::*;
pub use properties::Properties;

/// Largest remaining length MQTT can express (four length bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why a byte sequence is not an acceptable MQTT packet.
///
/// Every variant closes the connection that sent it; the text is what the broker logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The variable-length "remaining length" used a fifth byte or was otherwise invalid.
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet announced more bytes than the configured maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Size the fixed header announced, header included.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Packet type 0, or 15 (AUTH) under a protocol version that has no AUTH.
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires.
    #[error("reserved flag bits {flags:#06b} are invalid for {kind}")]
    InvalidFlags {
        /// The packet type.
        kind: PacketType,
        /// The four low bits of the first byte.
        flags: u8,
    },
    /// The CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("unsupported protocol name")]
    InvalidProtocolName,
    /// The CONNECT protocol level is not one this broker speaks.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// A QoS of 3, or QoS bits where none are allowed.
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    /// A string field is not well-formed UTF-8 or contains U+0000.
    #[error("invalid UTF-8 string in {0}")]
    InvalidUtf8(&'static str),
    /// A topic name in a PUBLISH or will contains `+` or `#`.
    #[error("wildcard in topic name")]
    WildcardInTopic,
    /// A topic name or filter of zero length.
    #[error("empty topic in {0}")]
    EmptyTopic(&'static str),
    /// A packet ended before a field it must carry, or carried bytes after its last field.
    #[error("malformed {packet}: {reason}")]
    Malformed {
        /// The packet type being decoded.
        packet: PacketType,
        /// What was wrong.
        reason: &'static str,
    },
    /// A packet that only CONNECT may start with, received later, or the reverse.
    #[error("unexpected {0} packet")]
    Unexpected(PacketType),
    /// A topic name with more levels than `mqtt.max_topic_levels` allows.
    #[error("{what} has {levels} topic levels, more than mqtt.max_topic_levels ({max})")]
    TooManyTopicLevels {
        /// Where the topic was (`PUBLISH topic`, `will topic`).
        what: &'static str,
        /// Levels it has.
        levels: usize,
        /// The configured limit.
        max: usize,
    },
}

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
        PacketType::from_nibble(self.byte1 >> 4)
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

/// Decodes one packet of an already negotiated protocol version from `buf`.
///
/// `Ok(None)` means more bytes are needed; nothing is consumed in that case.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, Error> {
    let Some((header, body)) = next_frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::decode(header, body).map(Some),
    }
}

/// Decodes the first packet of a connection, which must be a CONNECT.
///
/// The protocol version is learnt from the CONNECT itself, so this is the one decode
/// call that does not take a version.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<Connect>, Error> {
    let Some((header, body)) = next_frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    match header.packet_type()? {
        PacketType::Connect => v4::connect::read(header, body),
        other => Err(Error::Unexpected(other)),
    }
    .map(Some)
}

/// `frame`, the wire form of `connect` as decoded by [`decode_connect`], with the
/// password's bytes zeroed and everything else, lengths included, unchanged: what
/// packet events may carry of a CONNECT.
///
/// In MQTT 3.1 and 3.1.1 the password is the CONNECT's last field and the decoder
/// refuses trailing bytes, so it is exactly the frame's last `password.len()` bytes.
/// (MQTT 5 authentication data, in CONNECT properties and AUTH, would be zeroed the same
/// way; this broker speaks neither.) A frame that does not end as `connect` says is
/// zeroed whole after its fixed header rather than risk leaking the secret.
pub fn redacted_connect_frame(connect: &Connect, frame: &[u8]) -> Bytes {
    let mut out = BytesMut::from(frame);
    if let Some(password) = &connect.password {
        let n = password.len();
        let end = out.len();
        if n + 2 <= end && out[end - n - 2..end - n] == (n as u16).to_be_bytes() {
            out[end - n..].fill(0);
        } else {
            let body = 1
                + frame
                    .get(1..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|b| *b & 0x80 != 0)
                    .count()
                + 1;
            out[body.min(end)..].fill(0);
        }
    }
    out.freeze()
}

/// Encodes `packet` in the wire form of `version`, appending it to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::encode(packet, version, buf),
    }
}

// ---- primitives shared by the wire forms ----

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
pub(crate) fn write_fixed_header(buf: &mut BytesMut, byte1: u8, mut len: usize) {
    debug_assert!(len <= MAX_REMAINING_LENGTH);
    buf.reserve(1 + remaining_len_size(len) + len);
    buf.put_u8(byte1);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if len == 0 {
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

#[cfg(test)]
mod tests;
