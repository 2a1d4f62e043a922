//! One MQTT connection of the soak: its socket halves, framed with the harness's shared
//! packet reader ([`tandem_tests::wire`]), and the packets the soak's clients send.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tandem_broker::protocol::{self, Connect, Packet, Publish, QoS};
use tandem_tests::wire;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A connection: reader and writer halves, and the bytes read but not decoded yet.
pub(crate) struct Conn {
    pub(crate) rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    pub(crate) buf: BytesMut,
}

impl Conn {
    /// Connects to `addr` and completes CONNECT/CONNACK (10 s for each).
    pub(crate) async fn open(
        addr: SocketAddr,
        connect: Connect,
    ) -> std::io::Result<(Self, protocol::ConnAck)> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut c = Self {
            rd,
            wr,
            buf: BytesMut::new(),
        };
        c.send(&Packet::Connect(Box::new(connect))).await?;
        match tokio::time::timeout(Duration::from_secs(10), c.next()).await {
            Ok(Ok(Some(Packet::ConnAck(ack)))) => Ok((c, ack)),
            Ok(Ok(other)) => Err(std::io::Error::other(format!(
                "expected CONNACK, got {other:?}"
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("no CONNACK in 10 s")),
        }
    }

    /// Sends one packet.
    pub(crate) async fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        self.wr.write_all(&wire::encode(p)).await
    }

    /// The next packet; `None` when the broker closed the connection.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Packet>> {
        wire::read_packet(&mut self.rd, &mut self.buf).await
    }

    /// The next packet already read whole, if any (for a caller that reads `rd` itself).
    pub(crate) fn decoded(&mut self) -> std::io::Result<Option<Packet>> {
        wire::decode(&mut self.buf)
    }
}

/// A CONNECT as `user`/`pass` with the given clean flag and keepalive.
pub(crate) fn connect_packet(
    client_id: &str,
    user: &str,
    pass: &str,
    clean: bool,
    keep_alive: u16,
) -> Connect {
    Connect {
        keep_alive,
        ..tandem_tests::connect_packet_as(client_id, clean, user, pass)
    }
}

/// A SUBSCRIBE of `filters` with identifier `pkid`.
pub(crate) fn subscribe_packet(pkid: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(wire::subscribe_packet(pkid, filters))
}

pub(crate) fn publish_packet(topic: &str, payload: String, qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        payload: payload.into(),
        properties: None,
    })
}
