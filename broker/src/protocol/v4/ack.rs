//! PUBACK, PUBREC, PUBREL and PUBCOMP: a packet identifier and nothing else in 3.1.1.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_fixed_header};
use crate::protocol::packet::{PacketType, PubAck, PubComp, PubRec, PubRel};
use crate::protocol::v4::fields;

fn read_ack(header: FixedHeader, body: Bytes, kind: PacketType) -> Result<u16, Error> {
    let flags = if kind == PacketType::PubRel { 0x02 } else { 0 };
    fields::expect_flags(header, kind, flags)?;
    let mut r = Reader::new(body, kind);
    let pkid = fields::read_pkid(&mut r)?;
    r.finish()?;
    Ok(pkid)
}

/// Decodes a PUBACK body.
pub fn read_puback(header: FixedHeader, body: Bytes) -> Result<PubAck, Error> {
    read_ack(header, body, PacketType::PubAck).map(PubAck::new)
}

/// Decodes a PUBREC body.
pub fn read_pubrec(header: FixedHeader, body: Bytes) -> Result<PubRec, Error> {
    read_ack(header, body, PacketType::PubRec).map(PubRec::new)
}

/// Decodes a PUBREL body (its flags must be 0b0010).
pub fn read_pubrel(header: FixedHeader, body: Bytes) -> Result<PubRel, Error> {
    read_ack(header, body, PacketType::PubRel).map(PubRel::new)
}

/// Decodes a PUBCOMP body.
pub fn read_pubcomp(header: FixedHeader, body: Bytes) -> Result<PubComp, Error> {
    read_ack(header, body, PacketType::PubComp).map(PubComp::new)
}

/// Encodes one of the four acknowledgements.
pub fn write(kind: PacketType, pkid: u16, buf: &mut BytesMut) {
    let flags = if kind == PacketType::PubRel { 0x02 } else { 0 };
    write_fixed_header(buf, ((kind as u8) << 4) | flags, 2);
    buf.put_u16(pkid);
}
