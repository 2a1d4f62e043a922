//! The MQTT 3.1.1 framing every raw client here shares: [`RawClient`](crate::RawClient) in
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
    let mut out = BytesMut::new();
    protocol::encode(packet, ProtocolVersion::V3_1_1, &mut out);
    out
}

/// The first whole packet in `buf` (taken out of it), or `None` if it holds only part of
/// one. A malformed packet is an [`io::ErrorKind::InvalidData`] error.
pub fn decode(buf: &mut BytesMut) -> io::Result<Option<Packet>> {
    protocol::decode(buf, ProtocolVersion::V3_1_1, usize::MAX).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed packet from the broker: {e}"),
        )
    })
}

/// The next packet from `rd`, reading into `buf` until one is whole; `None` when the peer
/// closed the connection. Cancel-safe: bytes read stay in `buf` for the next call.
pub async fn read_packet<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> io::Result<Option<Packet>> {
    loop {
        if let Some(p) = decode(buf)? {
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
