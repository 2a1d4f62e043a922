//! What a connection is about to write, in the wire form it negotiated.
//!
//! Every packet goes through one of three doors ([`Outbox::packet`], [`Outbox::ack`],
//! [`Outbox::publish`]), so the connection never names a wire version. While a plugin
//! wants packet events, each door also keeps a [`PacketSummary`] of what it wrote, taken
//! from the packet itself; after the write, [`Outbox::written`] hands them over. Nothing
//! written is decoded again to be reported.
//!
//! Whether summaries are kept is decided when a packet is encoded: a plugin that starts
//! wanting packet events (a reload) sees the packets encoded after its set is in force.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::codec::{encode, encode_ack, encode_publish};
use crate::protocol::packet::{
    Packet, PacketType, ProtocolVersion, PublishRef, QoS, SubAck, SubscribeReason,
};
use crate::protocol::properties::Properties;

/// The header fields of one packet, for packet events (received or sent), with its
/// whole wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSummary {
    /// The packet type.
    pub packet_type: PacketType,
    /// The fixed header's four flag bits.
    pub flags: u8,
    /// The packet identifier, 0 when the packet has none.
    pub packet_id: u16,
    /// A PUBLISH's topic; empty otherwise.
    pub topic: ByteString,
    /// A PUBLISH's QoS.
    pub qos: QoS,
    /// A PUBLISH's retain flag.
    pub retain: bool,
    /// A PUBLISH's DUP flag.
    pub dup: bool,
    /// The reason or return code of a CONNACK (in the version it was written in), and
    /// the MQTT 5 reason code of an acknowledgement, DISCONNECT or AUTH; 0 otherwise.
    pub reason_code: u8,
    /// The whole packet as on the wire (a CONNECT's with its password zeroed).
    pub frame: Bytes,
}

impl PacketSummary {
    /// The summary of `packet`, whose wire form in `version` is `frame`.
    pub fn of(packet: &Packet, version: ProtocolVersion, frame: Bytes) -> Self {
        let mut s = Self::bare(packet.packet_type(), frame);
        match packet {
            Packet::Publish(p) => {
                s.packet_id = p.pkid;
                s.topic = p.topic.clone();
                s.qos = p.qos;
                s.retain = p.retain;
                s.dup = p.dup;
            }
            Packet::ConnAck(c) => {
                s.reason_code = match version {
                    ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => c.reason.v4_code(),
                    ProtocolVersion::V5 => c.reason as u8,
                }
            }
            Packet::PubAck(a) => (s.packet_id, s.reason_code) = (a.pkid, a.reason),
            Packet::PubRec(a) => (s.packet_id, s.reason_code) = (a.pkid, a.reason),
            Packet::PubRel(a) => (s.packet_id, s.reason_code) = (a.pkid, a.reason),
            Packet::PubComp(a) => (s.packet_id, s.reason_code) = (a.pkid, a.reason),
            Packet::Disconnect(d) => s.reason_code = d.reason,
            Packet::Auth(a) => s.reason_code = a.reason,
            Packet::Subscribe(p) => s.packet_id = p.pkid,
            Packet::SubAck(p) => s.packet_id = p.pkid,
            Packet::Unsubscribe(p) => s.packet_id = p.pkid,
            Packet::UnsubAck(p) => s.packet_id = p.pkid,
            Packet::Connect(_) | Packet::PingReq | Packet::PingResp => {}
        }
        s
    }

    /// A summary of a packet of `kind` with no header fields but its flags yet.
    fn bare(kind: PacketType, frame: Bytes) -> Self {
        Self {
            packet_type: kind,
            flags: frame.first().copied().unwrap_or(0) & 0x0F,
            packet_id: 0,
            topic: ByteString::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            dup: false,
            reason_code: 0,
            frame,
        }
    }

    /// The packet's size on the wire.
    pub fn size(&self) -> usize {
        self.frame.len()
    }
}

/// The most buffer capacity an outbox (or a connection's read buffer) keeps between
/// bursts: enough for a steady flow of small messages to reuse it, small beside what a
/// burst of large ones may grow it to.
pub const KEEP_CAPACITY: usize = 64 * 1024;

/// Bytes encoded for one client and not yet written, with the summaries of the packets
/// they hold while summaries are wanted.
#[derive(Debug)]
pub struct Outbox {
    buf: BytesMut,
    version: ProtocolVersion,
    /// `Some` while summaries are kept.
    summaries: Option<Vec<PacketSummary>>,
}

impl Outbox {
    /// An empty outbox for a connection speaking `version`.
    pub fn new(version: ProtocolVersion, capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            version,
            summaries: None,
        }
    }

    /// The protocol version the outbox writes.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether packets encoded from now on are summarized (a plugin wants
    /// `MQTT_PACKET_SENT`). Cheap to call every turn.
    pub fn summarize(&mut self, on: bool) {
        match (on, self.summaries.is_some()) {
            (true, false) => self.summaries = Some(Vec::new()),
            (false, true) => self.summaries = None,
            _ => {}
        }
    }

    /// Appends any packet.
    pub fn packet(&mut self, packet: &Packet) {
        let start = self.buf.len();
        encode(packet, self.version, &mut self.buf);
        if self.summaries.is_some() {
            let summary = PacketSummary::of(packet, self.version, self.frame_from(start));
            self.keep(summary);
        }
    }

    /// Appends PUBACK, PUBREC, PUBREL or PUBCOMP, successful.
    pub fn ack(&mut self, kind: PacketType, pkid: u16) {
        self.ack_reason(kind, pkid, 0, None);
    }

    /// Appends PUBACK, PUBREC, PUBREL or PUBCOMP with an MQTT 5 reason code and
    /// properties (a 3.1.1 acknowledgement carries neither).
    pub fn ack_reason(
        &mut self,
        kind: PacketType,
        pkid: u16,
        reason: u8,
        properties: Option<&Properties>,
    ) {
        let start = self.buf.len();
        encode_ack(self.version, kind, pkid, reason, properties, &mut self.buf);
        if self.summaries.is_some() {
            let summary = PacketSummary {
                packet_id: pkid,
                reason_code: if self.version.is_v5() { reason } else { 0 },
                ..PacketSummary::bare(kind, self.frame_from(start))
            };
            self.keep(summary);
        }
    }

    /// Appends a PUBLISH from its parts (the delivery path holds a stored message, not a
    /// [`Publish`](crate::protocol::Publish)).
    pub fn publish(&mut self, p: &PublishRef<'_>) {
        let start = self.buf.len();
        encode_publish(self.version, p, &mut self.buf);
        if self.summaries.is_some() {
            let summary = PacketSummary {
                packet_id: p.pkid,
                topic: p.topic.clone(),
                qos: p.qos,
                retain: p.retain,
                dup: p.dup,
                ..PacketSummary::bare(PacketType::Publish, self.frame_from(start))
            };
            self.keep(summary);
        }
    }

    /// Appends a SUBACK (with MQTT 5 properties: a Reason String).
    pub fn suback(
        &mut self,
        pkid: u16,
        reasons: Vec<SubscribeReason>,
        properties: Option<Box<Properties>>,
    ) {
        self.packet(&Packet::SubAck(SubAck {
            pkid,
            reasons,
            properties: properties.filter(|_| self.version.is_v5()),
        }));
    }

    /// The bytes not yet written.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// After the bytes were written: empties the outbox and returns the summaries of
    /// what was written (none when summaries are not kept). A buffer grown past
    /// [`KEEP_CAPACITY`] by a burst is given back rather than held by a connection that
    /// may now stay idle for hours; below it, the buffer is reused.
    pub fn written(&mut self) -> Vec<PacketSummary> {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = BytesMut::new();
        } else {
            self.buf.clear();
        }
        match &mut self.summaries {
            Some(s) => std::mem::take(s),
            None => Vec::new(),
        }
    }

    fn frame_from(&self, start: usize) -> Bytes {
        Bytes::copy_from_slice(&self.buf[start..])
    }

    fn keep(&mut self, summary: PacketSummary) {
        if let Some(s) = &mut self.summaries {
            s.push(summary);
        }
    }
}
