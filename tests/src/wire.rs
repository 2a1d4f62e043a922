//! The MQTT framing (3.1.1 unless a version is named) every raw client here shares: [`RawClient`](crate::RawClient) in
//! the tests and the soak binary's connections. Both frame with the broker's own codec
//! (the byte-exact cases are written out as bytes by the tests themselves), so reading a
//! packet is one loop, written once: decode what is buffered, else read more.

use std::io;

use bytes::BytesMut;
use tandem_broker::protocol::{
    self, Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `packet` encoded for 3.1.1.
pub fn encode(packet: &Packet) -> BytesMut {
    encode_as(packet, ProtocolVersion::V3_1_1)
}

/// `packet` encoded for `version`.
pub fn encode_as(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    protocol::encode(packet, version, &mut out);
    out
}

/// The first whole 3.1.1 packet in `buf` (see [`decode_as`]).
pub fn decode(buf: &mut BytesMut) -> io::Result<Option<Packet>> {
    decode_as(buf, ProtocolVersion::V3_1_1)
}

/// The first whole packet in `buf` (taken out of it), or `None` if it holds only part of
/// one, in `version`'s wire form. A malformed packet is an
/// [`io::ErrorKind::InvalidData`] error.
pub fn decode_as(buf: &mut BytesMut, version: ProtocolVersion) -> io::Result<Option<Packet>> {
    protocol::decode(buf, version, usize::MAX).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed packet from the broker: {e}"),
        )
    })
}

/// The next 3.1.1 packet from `rd` (see [`read_packet_as`]).
pub async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> io::Result<Option<Packet>> {
    read_packet_as(rd, buf, ProtocolVersion::V3_1_1).await
}

/// The next packet from `rd` in `version`'s wire form, reading into `buf` until one is
/// whole; `None` when the peer closed the connection. Cancel-safe: bytes read stay in
/// `buf` for the next call.
pub async fn read_packet_as<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> io::Result<Option<Packet>> {
    loop {
        if let Some(p) = decode_as(buf, version)? {
            return Ok(Some(p));
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// A SUBSCRIBE of `filters`, each at its maximum QoS, with identifier `pkid`.
pub fn subscribe_packet(pkid: u16, filters: &[(&str, QoS)]) -> Subscribe {
    Subscribe {
        pkid,
        filters: filters
            .iter()
            .map(|(f, qos)| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions {
                    qos: *qos,
                    ..Default::default()
                },
            })
            .collect(),
        properties: None,
    }
}
