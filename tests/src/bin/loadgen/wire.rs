//! MQTT 3.1.1 and 5.0 wire formats, only as much of them as the load generator speaks. The
//! version is chosen once per run ([`speak_v5`]); MQTT 5 packets carry empty property
//! blocks (the broker's v5 path is what is measured, not property handling).
//!
//! This is written apart from the broker's codec on purpose: the load generator is an independent
//! witness, so a bug in the broker's encoder cannot be hidden by the same bug in ours.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use bytes::{BufMut, BytesMut};

/// Whether this run speaks MQTT 5 (set once at start).
static V5: AtomicBool = AtomicBool::new(false);

/// Makes every packet from now on MQTT 5 (`true`) or 3.1.1.
pub(crate) fn speak_v5(on: bool) {
    V5.store(on, Ordering::Relaxed);
}

fn v5() -> bool {
    V5.load(Ordering::Relaxed)
}

/// Packet types (the high nibble of the first byte).
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const PUBACK: u8 = 4;
pub(crate) const PUBREC: u8 = 5;
pub(crate) const PUBREL: u8 = 6;
pub(crate) const PUBCOMP: u8 = 7;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const PINGRESP: u8 = 13;

/// The largest packet we accept: far above anything a benchmark sends, small enough to catch
/// a desynchronised stream instead of buffering garbage.
const MAX_PACKET: usize = 16 * 1024 * 1024;

fn put_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_str(buf: &mut BytesMut, s: &[u8]) {
    buf.put_u16(s.len() as u16);
    buf.put_slice(s);
}

/// The session expiry interval a persistent MQTT 5 session asks for (one hour: longer than any
/// run; brokers may hold it to their own bound).
pub(crate) const SESSION_EXPIRY: u32 = 3600;

/// CONNECT with a client id, no will, no credentials. `clean_session` false asks for a
/// persistent session: MQTT 3.1.1 clean session 0; MQTT 5 clean start 0 and a session expiry
/// interval of [`SESSION_EXPIRY`] (with `clean_session` true, no properties).
pub(crate) fn connect(buf: &mut BytesMut, client_id: &str, keep_alive: u16, clean_session: bool) {
    let v5 = v5();
    // MQTT 5 properties: none, or the session expiry interval (identifier 0x11, four bytes).
    let props = if !v5 {
        0
    } else if clean_session {
        1
    } else {
        1 + 5
    };
    let remaining = 10 + props + 2 + client_id.len();
    buf.put_u8(0x10);
    put_remaining_length(buf, remaining);
    put_str(buf, b"MQTT");
    buf.put_u8(if v5 { 5 } else { 4 });
    buf.put_u8(if clean_session { 0x02 } else { 0x00 });
    buf.put_u16(keep_alive);
    if v5 {
        if clean_session {
            buf.put_u8(0);
        } else {
            buf.put_u8(5);
            buf.put_u8(0x11);
            buf.put_u32(SESSION_EXPIRY);
        }
    }
    put_str(buf, client_id.as_bytes());
}

/// PUBLISH whose payload starts with `prefix` (cut to fit) and is padded to `payload_len` bytes.
pub(crate) fn publish(
    buf: &mut BytesMut,
    topic: &[u8],
    qos: u8,
    packet_id: u16,
    prefix: &[u8],
    payload_len: usize,
) {
    let id_len = if qos > 0 { 2 } else { 0 };
    let v5 = v5();
    buf.put_u8(0x30 | (qos << 1));
    put_remaining_length(
        buf,
        2 + topic.len() + id_len + usize::from(v5) + payload_len,
    );
    put_str(buf, topic);
    if qos > 0 {
        buf.put_u16(packet_id);
    }
    if v5 {
        buf.put_u8(0);
    }
    let head = prefix.len().min(payload_len);
    buf.put_slice(&prefix[..head]);
    buf.put_bytes(b'x', payload_len - head);
}

/// SUBSCRIBE to one filter.
pub(crate) fn subscribe(buf: &mut BytesMut, packet_id: u16, filter: &[u8], qos: u8) {
    let v5 = v5();
    buf.put_u8(0x82);
    put_remaining_length(buf, 2 + usize::from(v5) + 2 + filter.len() + 1);
    buf.put_u16(packet_id);
    if v5 {
        buf.put_u8(0);
    }
    put_str(buf, filter);
    buf.put_u8(qos);
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a type, fixed flags and a packet id.
pub(crate) fn ack(buf: &mut BytesMut, packet_type: u8, packet_id: u16) {
    let flags = if packet_type == PUBREL { 0x02 } else { 0x00 };
    buf.put_u8((packet_type << 4) | flags);
    buf.put_u8(2);
    buf.put_u16(packet_id);
}

/// DISCONNECT.
pub(crate) fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0x00]);
}

/// Where the first complete packet in `buf` ends: `Some((header_len, total_len))`, or `None`
/// while more bytes are needed.
pub(crate) fn check(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            ensure!(
                remaining <= MAX_PACKET,
                "broker sent a packet of {remaining} bytes (type {}); the stream is probably out of step",
                buf[0] >> 4
            );
            let total = header + remaining;
            return Ok((buf.len() >= total).then_some((header, total)));
        }
    }
    bail!("malformed remaining length from broker (more than 4 bytes)")
}

/// The parts of a received PUBLISH that the load generator looks at.
pub(crate) struct Publish<'a> {
    pub(crate) qos: u8,
    pub(crate) packet_id: u16,
    pub(crate) payload: &'a [u8],
}

/// Parses a PUBLISH body (after the fixed header).
pub(crate) fn parse_publish(first: u8, body: &[u8]) -> Result<Publish<'_>> {
    let qos = (first >> 1) & 0x03;
    ensure!(qos < 3, "broker sent PUBLISH with QoS 3");
    let topic_len = usize::from(u16::from_be_bytes(
        body.get(..2)
            .context("PUBLISH too short for its topic length")?
            .try_into()?,
    ));
    let mut at = 2 + topic_len;
    let mut packet_id = 0;
    if qos > 0 {
        packet_id = u16::from_be_bytes(
            body.get(at..at + 2)
                .context("PUBLISH too short for its packet id")?
                .try_into()?,
        );
        at += 2;
    }
    if v5() {
        // The property block: a variable byte integer length, then the properties.
        let mut len = 0usize;
        for i in 0..4 {
            let byte = *body
                .get(at)
                .context("PUBLISH too short for its properties")?;
            at += 1;
            len |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                break;
            }
            ensure!(i < 3, "malformed PUBLISH property length");
        }
        at += len;
    }
    let payload = body
        .get(at..)
        .context("PUBLISH topic runs past the packet")?;
    Ok(Publish {
        qos,
        packet_id,
        payload,
    })
}

/// The packet id of a PUBACK, PUBREC, PUBREL, PUBCOMP or SUBACK body.
pub(crate) fn packet_id(body: &[u8]) -> Result<u16> {
    Ok(u16::from_be_bytes(
        body.get(..2)
            .context("ack too short for a packet id")?
            .try_into()?,
    ))
}

/// What a CONNACK return code means (MQTT 3.1.1, 3.2.2.3).
pub(crate) fn connack_reason(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips() {
        let mut buf = BytesMut::new();
        publish(&mut buf, b"a/b", 1, 7, &42u64.to_le_bytes(), 300);
        let (header, total) = check(&buf).unwrap().unwrap();
        assert_eq!(total, buf.len());
        assert_eq!(header, 3, "300-byte payload needs a two-byte length");
        let p = parse_publish(buf[0], &buf[header..total]).unwrap();
        assert_eq!((p.qos, p.packet_id, p.payload.len()), (1, 7, 300));
        assert_eq!(u64::from_le_bytes(p.payload[..8].try_into().unwrap()), 42);
        assert!(check(&buf[..total - 1]).unwrap().is_none());

        // MQTT 5 (in the same test: the version is process-wide).
        speak_v5(true);
        let mut buf = BytesMut::new();
        connect(&mut buf, "c", 30, true);
        // Level 5, then flags, keepalive, property length 0, client id.
        assert_eq!(&buf[8..15], &[5, 0x02, 0, 30, 0, 0, 1]);
        // A persistent session: clean start 0, session expiry interval 3600.
        let mut buf = BytesMut::new();
        connect(&mut buf, "c", 30, false);
        assert_eq!(buf[1] as usize, buf.len() - 2);
        assert_eq!(
            &buf[8..20],
            &[5, 0x00, 0, 30, 5, 0x11, 0, 0, 0x0e, 0x10, 0, 1]
        );
        let mut p = BytesMut::new();
        publish(&mut p, b"t", 1, 9, b"hi", 2);
        let (header, total) = check(&p).unwrap().unwrap();
        // Topic (3), packet id (2), properties (1), payload (2).
        assert_eq!(total - header, 8);
        let parsed = parse_publish(p[0], &p[header..total]).unwrap();
        assert_eq!((parsed.packet_id, parsed.payload), (9, &b"hi"[..]));
        speak_v5(false);
    }
}
