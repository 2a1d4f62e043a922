//! The MQTT 5.0 wire form (protocol level 5). One file per packet as in [`v4`]
//! (super::v4); DISCONNECT and AUTH, which share their layout, share
//! [`disconnect`]; PINGREQ and PINGRESP are the 3.1.1 ones; [`properties`] reads and
//! writes the property blocks every other packet carries.

pub mod ack;
pub mod connack;
pub mod connect;
pub mod disconnect;
pub mod properties;
pub mod publish;
pub mod suback;
pub mod subscribe;
pub mod unsuback;
pub mod unsubscribe;

use bytes::{Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::FixedHeader;
use crate::protocol::packet::{Packet, PacketType};
use crate::protocol::v4::ping;

/// Decodes one packet body whose fixed header has been checked.
pub fn decode(header: FixedHeader, body: Bytes) -> Result<Packet, Error> {
    let kind = header.packet_type()?;
    Ok(match kind {
        PacketType::Connect => Packet::Connect(Box::new(connect::read(header, body)?)),
        PacketType::ConnAck => Packet::ConnAck(connack::read(header, body)?),
        PacketType::Publish => Packet::Publish(publish::read(header, body)?),
        PacketType::PubAck => Packet::PubAck(ack::read_puback(header, body)?),
        PacketType::PubRec => Packet::PubRec(ack::read_pubrec(header, body)?),
        PacketType::PubRel => Packet::PubRel(ack::read_pubrel(header, body)?),
        PacketType::PubComp => Packet::PubComp(ack::read_pubcomp(header, body)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe::read(header, body)?),
        PacketType::SubAck => Packet::SubAck(suback::read(header, body)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe::read(header, body)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback::read(header, body)?),
        PacketType::PingReq => {
            ping::read(header, PacketType::PingReq)?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            ping::read(header, PacketType::PingResp)?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(disconnect::read(header, body)?),
        PacketType::Auth => Packet::Auth(disconnect::read_auth(header, body)?),
    })
}

/// Appends the wire form of `packet` to `buf`.
pub fn encode(packet: &Packet, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(p) => connect::write(p, buf),
        Packet::ConnAck(p) => connack::write(p, buf),
        Packet::Publish(p) => publish::write(p, buf),
        Packet::PubAck(p) => ack::write(
            PacketType::PubAck,
            p.pkid,
            p.reason,
            p.properties.as_deref(),
            buf,
        ),
        Packet::PubRec(p) => ack::write(
            PacketType::PubRec,
            p.pkid,
            p.reason,
            p.properties.as_deref(),
            buf,
        ),
        Packet::PubRel(p) => ack::write(
            PacketType::PubRel,
            p.pkid,
            p.reason,
            p.properties.as_deref(),
            buf,
        ),
        Packet::PubComp(p) => ack::write(
            PacketType::PubComp,
            p.pkid,
            p.reason,
            p.properties.as_deref(),
            buf,
        ),
        Packet::Subscribe(p) => subscribe::write(p, buf),
        Packet::SubAck(p) => suback::write(p, buf),
        Packet::Unsubscribe(p) => unsubscribe::write(p, buf),
        Packet::UnsubAck(p) => unsuback::write(p, buf),
        Packet::PingReq => ping::write(PacketType::PingReq, buf),
        Packet::PingResp => ping::write(PacketType::PingResp, buf),
        Packet::Disconnect(p) => disconnect::write(p, buf),
        Packet::Auth(p) => disconnect::write_auth(p, buf),
    }
}

#[cfg(test)]
mod tests;
