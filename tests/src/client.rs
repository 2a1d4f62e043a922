//! [`RawClient`]: an MQTT 3.1.1 or 5 client over a raw TCP socket, for tests that need
//! byte-level control (DUP flags, malformed packets, exact packet order), the CONNECT
//! packets the tests log in with, and [`wait_sys`], which waits as a subscriber.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{
    ConnAck, Connect, ConnectReason, Packet, Properties, ProtocolVersion, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, SubAck,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::wait::DEADLINE;
use crate::wire;

/// A CONNECT for 3.1.1 with the given client id, clean flag and keepalive.
pub fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: clean,
        keep_alive,
        client_id: client_id.into(),
        username: None,
        password: None,
        will: None,
        properties: None,
    }
}

/// An MQTT 5 CONNECT with the given client id, clean start flag, keepalive 0 and
/// `properties` (none when empty).
pub fn connect_packet_v5(client_id: &str, clean: bool, properties: Properties) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        properties: (!properties.is_empty()).then(|| Box::new(properties)),
        ..connect_packet(client_id, clean, 0)
    }
}

/// A CONNECT as `username`/`password` with the given clean flag and keepalive 0.
pub fn connect_packet_as(client_id: &str, clean: bool, username: &str, password: &str) -> Connect {
    let mut connect = connect_packet(client_id, clean, 0);
    connect.username = Some(username.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    connect
}

/// Connects with a username and password; returns the client if accepted, or the
/// CONNACK reason if refused.
pub async fn connect_as(
    addr: SocketAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<RawClient, ConnectReason> {
    let connect = connect_packet_as(client_id, true, username, password);
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    accepted(client, ack)
}

/// Connects `client_id` as `username`/`password` with the given clean flag; returns
/// the client and its CONNACK, whatever it says.
pub async fn connect_user(
    addr: SocketAddr,
    client_id: &str,
    clean: bool,
    username: &str,
    password: &str,
) -> (RawClient, ConnAck) {
    RawClient::connect_with(
        addr,
        connect_packet_as(client_id, clean, username, password),
    )
    .await
}

/// The client if `ack` accepted it, else the reason it was refused.
pub(crate) fn accepted(client: RawClient, ack: ConnAck) -> Result<RawClient, ConnectReason> {
    if ack.reason == ConnectReason::Success {
        Ok(client)
    } else {
        Err(ack.reason)
    }
}

/// What [`RawClient::recv_within`] saw.
#[derive(Debug)]
pub enum Recv {
    /// A packet.
    Packet(Packet),
    /// The broker closed the connection.
    Closed,
    /// Nothing within the time.
    Nothing,
}

/// An MQTT client over a raw TCP socket: 3.1.1, or the version its CONNECT names.
pub struct RawClient {
    stream: TcpStream,
    /// The wire form spoken: 3.1.1 until a CONNECT names another.
    version: ProtocolVersion,
    /// Bytes read but not decoded yet.
    buf: BytesMut,
    next_pkid: u16,
    /// PUBLISH packets that arrived while an acknowledgement was awaited.
    stashed: VecDeque<Packet>,
}

impl RawClient {
    /// A client over an already connected `stream`, with nothing sent yet.
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            version: ProtocolVersion::V3_1_1,
            buf: BytesMut::new(),
            next_pkid: 0,
            stashed: VecDeque::new(),
        }
    }

    /// Opens a TCP connection without sending anything.
    pub async fn tcp(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        Self::from_stream(stream)
    }

    /// Connects and completes CONNECT/CONNACK with `connect`; returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        Self::tcp(addr).await.handshake(connect).await
    }

    /// Connects and sends `connect` without waiting for an answer (an MQTT 5 client
    /// whose CONNECT starts an enhanced authentication exchange reads AUTH first).
    pub async fn open(addr: SocketAddr, connect: Connect) -> Self {
        let mut c = Self::tcp(addr).await;
        c.version = connect.protocol;
        c.send(&Packet::Connect(Box::new(connect))).await;
        c
    }

    /// Sends `connect` on this fresh connection and returns the CONNACK.
    pub(crate) async fn handshake(mut self, connect: Connect) -> (Self, ConnAck) {
        self.version = connect.protocol;
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(ack) => (self, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects a clean session with keepalive 0 and asserts it was accepted.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        let (c, ack) = Self::connect_with(addr, connect_packet(client_id, true, 0)).await;
        assert_eq!(ack.reason, ConnectReason::Success);
        c
    }

    /// Sends a packet.
    pub async fn send(&mut self, packet: &Packet) {
        self.send_raw(&wire::encode_as(packet, self.version)).await;
    }

    /// Sends raw bytes. A write error is ignored: the broker may have closed already,
    /// which the next read will show.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Half-closes the connection: no more bytes from this client (the broker reads
    /// EOF), while what the broker does next can still be read.
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Waits up to `within` for the next packet, the connection closing, or nothing.
    pub async fn recv_within(&mut self, within: Duration) -> Recv {
        if let Some(p) = self.stashed.pop_front() {
            return Recv::Packet(p);
        }
        let read = wire::read_packet_as(&mut self.stream, &mut self.buf, self.version);
        match tokio::time::timeout(within, read).await {
            Err(_) => Recv::Nothing,
            Ok(Ok(Some(p))) => Recv::Packet(p),
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => panic!("{e}"),
            Ok(Ok(None)) | Ok(Err(_)) => Recv::Closed,
        }
    }

    /// The next packet; panics if none comes within [`DEADLINE`].
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(DEADLINE).await {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet that is not a PUBLISH; PUBLISH packets before it are kept for
    /// later [`recv`](Self::recv) calls, in order.
    async fn recv_control(&mut self) -> Packet {
        let mut held = Vec::new();
        let packet = loop {
            match self.recv().await {
                p @ Packet::Publish(_) => held.push(p),
                other => break other,
            }
        };
        for p in held.into_iter().rev() {
            self.stashed.push_front(p);
        }
        packet
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts the broker closes the connection within [`DEADLINE`], ignoring packets
    /// it sends first.
    pub async fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Closed => return,
                Recv::Packet(_) => continue,
                Recv::Nothing => panic!("connection still open after {DEADLINE:?}"),
            }
        }
    }

    /// Asserts no packet arrives (and the connection stays open) for `within`.
    pub async fn expect_nothing(&mut self, within: Duration) {
        match self.recv_within(within).await {
            Recv::Nothing => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// A fresh packet identifier.
    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// Subscribes to one filter and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_many(&[(filter, qos)]).await
    }

    /// Subscribes to several filters in one SUBSCRIBE and returns the SUBACK.
    pub async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> SubAck {
        let pkid = self.pkid();
        self.send(&Packet::Subscribe(wire::subscribe_packet(pkid, filters)))
            .await;
        match self.recv_control().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid);
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS handshake as a publisher.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            self.pkid()
        };
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid,
            payload: Bytes::copy_from_slice(payload),
            properties: None,
        }))
        .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv_control().await {
                Packet::PubAck(a) if a.pkid == pkid => {}
                other => panic!("expected PUBACK {pkid}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv_control().await {
                    Packet::PubRec(a) if a.pkid == pkid => {}
                    other => panic!("expected PUBREC {pkid}, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubRel::new(pkid))).await;
                match self.recv_control().await {
                    Packet::PubComp(a) if a.pkid == pkid => {}
                    other => panic!("expected PUBCOMP {pkid}, got {other:?}"),
                }
            }
        }
    }

    /// Acknowledges a received PUBLISH as a subscriber (PUBACK, or PUBREC then
    /// PUBREL/PUBCOMP for QoS 2).
    pub async fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubAck::new(p.pkid))).await,
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubRec::new(p.pkid))).await;
                match self.recv_control().await {
                    Packet::PubRel(r) if r.pkid == p.pkid => {}
                    other => panic!("expected PUBREL {}, got {other:?}", p.pkid),
                }
                self.send(&Packet::PubComp(PubComp::new(p.pkid))).await;
            }
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the socket.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default())).await;
        self.expect_closed().await;
    }

    /// Round trip: PINGREQ, then waits for PINGRESP (skipping nothing else: any other
    /// packet first is a failure).
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

/// Subscribes `client` to the `$SYS` topic and waits until its value satisfies `ok`;
/// returns the value.
pub async fn wait_sys(client: &mut RawClient, topic: &str, ok: impl Fn(&str) -> bool) -> String {
    client.subscribe(topic, QoS::AtMostOnce).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let p = client.recv_publish().await;
        if &p.topic[..] == topic {
            let value = String::from_utf8_lossy(&p.payload).into_owned();
            if ok(&value) {
                return value;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never satisfied the condition"
        );
    }
}
