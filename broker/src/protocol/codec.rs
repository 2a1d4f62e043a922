//! The wire versions behind one interface: a connection decodes and encodes through
//! the [`Wire`] it negotiated and never names a version's module. MQTT 5 adds its module
//! here and nothing above `protocol/` changes.

use bytes::{Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, check, next_frame, remaining_len_size};
use crate::protocol::packet::{
    Connect, ConnectReason, Packet, PacketType, ProtocolVersion, PublishRef, QoS,
};
use crate::protocol::properties::Properties;
use crate::protocol::{v4, v5};

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
            ProtocolVersion::V5 => v5::decode(header, body)?,
        };
        Ok(Some((packet, frame)))
    }

    /// The return or reason code a CONNACK carries for `reason` in this version.
    pub fn connect_code(self, reason: ConnectReason) -> u8 {
        match self.version {
            ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => reason.v4_code(),
            ProtocolVersion::V5 => reason as u8,
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
/// Properties are MQTT 5's: 3.1.1 has no room for them.
pub(crate) fn encode_publish(version: ProtocolVersion, p: &PublishRef<'_>, buf: &mut BytesMut) {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::publish::write_parts(p, buf),
        ProtocolVersion::V5 => v5::publish::write_parts(p, buf),
    }
}

/// Bytes the PUBLISH `p` takes in `version`'s wire form, fixed header included: what
/// is compared with a client's MQTT 5 maximum packet size before it is written.
pub fn publish_len(version: ProtocolVersion, p: &PublishRef<'_>) -> usize {
    let pkid = if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    let properties = match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => 0,
        ProtocolVersion::V5 => v5::properties::len(p.properties),
    };
    let remaining = 2 + p.topic.len() + pkid + properties + p.payload.len();
    1 + remaining_len_size(remaining) + remaining
}

/// Appends PUBACK, PUBREC, PUBREL or PUBCOMP in `version`'s wire form. The reason code
/// and properties are MQTT 5's; 3.1.1 acknowledgements carry the identifier alone.
pub(crate) fn encode_ack(
    version: ProtocolVersion,
    kind: PacketType,
    pkid: u16,
    reason: u8,
    properties: Option<&Properties>,
    buf: &mut BytesMut,
) {
    match version {
        ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::ack::write(kind, pkid, buf),
        ProtocolVersion::V5 => v5::ack::write(kind, pkid, reason, properties, buf),
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
        ProtocolVersion::V5 => v5::decode(header, body).map(Some),
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
        // The CONNECT names its level, which picks the connection's wire form from here
        // on: levels 3 and 4 share one layout, level 5 has its own.
        PacketType::Connect if connect_level(&body) == Some(5) => v5::connect::read(header, body),
        PacketType::Connect => v4::connect::read(header, body),
        other => Err(Error::Unexpected(other)),
    }
}

/// The protocol level byte of a CONNECT body, found behind the protocol name (`None`
/// if the body is too short to hold it; the decoder then says what is missing).
fn connect_level(body: &[u8]) -> Option<u8> {
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// `frame`, the wire form of `connect` as decoded by [`decode_connect`], with the
/// password's bytes zeroed and everything else, lengths included, unchanged: what
/// packet events may carry of a CONNECT.
///
/// The password is the CONNECT's last field in every version and the decoder refuses
/// trailing bytes, so it is exactly the frame's last `password.len()` bytes. A frame
/// that does not end as `connect` says is zeroed whole after its fixed header rather
/// than risk leaking the secret. An MQTT 5 CONNECT that carries authentication data
/// (a secret too) is encoded again from `connect` with both secrets zeroed: lengths are
/// kept, the order of its properties may differ from the client's.
pub fn redacted_connect_frame(connect: &Connect, frame: &[u8]) -> Bytes {
    if let Some(props) = &connect.properties
        && let Some(data) = &props.authentication_data
    {
        let zeroed = |n: usize| Bytes::from(vec![0u8; n]);
        let mut props = props.clone();
        props.authentication_data = Some(zeroed(data.len()));
        let redacted = Connect {
            password: connect.password.as_ref().map(|p| zeroed(p.len())),
            properties: Some(props),
            ..connect.clone()
        };
        let mut out = BytesMut::with_capacity(frame.len());
        v5::connect::write(&redacted, &mut out);
        return out.freeze();
    }
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
        ProtocolVersion::V5 => v5::encode(packet, buf),
    }
}
