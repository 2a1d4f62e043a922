//! The wire versions behind one interface: a connection decodes and encodes through
//! the [`Wire`] it negotiated and never names a version's module. MQTT 5 adds its module
//! here and nothing above `protocol/` changes.

use bytes::{Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, check, next_frame};
use crate::protocol::packet::{Connect, ConnectReason, Packet, PacketType, ProtocolVersion, QoS};
use crate::protocol::v4;

/// The wire form one connection speaks, fixed by its CONNECT, and the largest packet it
/// accepts. Copied freely: two words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wire {
    version: ProtocolVersion,
    max_packet_size: usize,
}

impl Wire {
    /// The codec for `version`, refusing packets over `max_packet_size` bytes.
    pub fn new(version: ProtocolVersion, max_packet_size: usize) -> Self {
        Self {
            version,
            max_packet_size,
        }
    }

    /// The protocol version negotiated.
    pub fn version(self) -> ProtocolVersion {
        self.version
    }

    /// The largest packet accepted, fixed header included.
    pub fn max_packet_size(self) -> usize {
        self.max_packet_size
    }

    /// Splits the next whole packet off `buf` and decodes it; `Ok(None)` when more bytes
    /// are needed (nothing is consumed then). With `keep_frame`, the packet comes with its
    /// whole wire form (a reference into the same buffer, not a copy) for packet events;
    /// otherwise the bytes are empty and no reference is taken.
    pub fn decode(
        self,
        buf: &mut BytesMut,
        keep_frame: bool,
    ) -> Result<Option<(Packet, Bytes)>, Error> {
        let (header, frame, body) = if keep_frame {
            match split_frame(buf, self.max_packet_size)? {
                Some(split) => split,
                None => return Ok(None),
            }
        } else {
            match next_frame(buf, self.max_packet_size)? {
                Some((header, body)) => (header, Bytes::new(), body),
                None => return Ok(None),
            }
        };
        let packet = match self.version {
            ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::decode(header, body)?,
        };
        Ok(Some((packet, frame)))
    }

    /// The return or reason code a CONNACK carries for `reason` in this version.
    pub fn connect_code(self, reason: ConnectReason) -> u8 {
        match self.version {
            ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => reason.v4_code(),
        }
    }
}

/// Like [`next_frame`], keeping the whole frame beside the body (both share `buf`'s
/// memory).
fn split_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<(FixedHeader, Bytes, Bytes)>, Error> {
    let Some(header) = check(buf, max_packet_size)? else {
        return Ok(None);
    };
    let frame = buf.split_to(header.frame_len()).freeze();
    let body = frame.slice(header.header_len..);
    Ok(Some((header, frame, body)))
}

/// Appends a PUBLISH built from its parts in `version`'s wire form: the delivery path
/// writes from a stored message without building a [`Publish`](crate::protocol::Publish).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_publish(
    version: ProtocolVersion,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    pkid: u16,
    dup: bool,
    retain: bool,
    buf: &mut BytesMut,
) {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => {
            v4::publish::write_parts(topic, payload, qos, pkid, dup, retain, buf)
        }
    }
}

/// Appends PUBACK, PUBREC, PUBREL or PUBCOMP in `version`'s wire form.
pub(crate) fn encode_ack(
    version: ProtocolVersion,
    kind: PacketType,
    pkid: u16,
    buf: &mut BytesMut,
) {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::ack::write(kind, pkid, buf),
    }
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
    read_connect(header, body).map(Some)
}

/// [`decode_connect`], with the CONNECT's whole wire form (sharing `buf`'s memory) for
/// packet events; see [`redacted_connect_frame`] before it leaves the broker.
pub fn decode_connect_frame(
    buf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<Option<(Connect, Bytes)>, Error> {
    let Some((header, frame, body)) = split_frame(buf, max_packet_size)? else {
        return Ok(None);
    };
    Ok(Some((read_connect(header, body)?, frame)))
}

fn read_connect(header: FixedHeader, body: Bytes) -> Result<Connect, Error> {
    match header.packet_type()? {
        // Levels 3 and 4 share one layout; the CONNECT names its level, which picks the
        // connection's wire form from here on.
        PacketType::Connect => v4::connect::read(header, body),
        other => Err(Error::Unexpected(other)),
    }
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
