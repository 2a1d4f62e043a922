//! Properties checked by the fuzz targets in `fuzz_targets/`, kept here so that both
//! targets share them and a crash input can be replayed from a plain test too.

mod session;

pub use session::session;

use bytes::BytesMut;
use tandem_broker::protocol::{
    self, Connect, Error, MAX_REMAINING_LENGTH, Packet, ProtocolVersion,
};

/// The broker's default `mqtt.max_packet_size`.
pub const DEFAULT_MAX: usize = 1 << 20;

/// Large enough that re-decoding an encoded packet never trips the size limit.
const UNLIMITED: usize = MAX_REMAINING_LENGTH + 5;

/// The version a packet is encoded in: a CONNECT carries its own, everything else uses
/// the one negotiated by the connection.
fn version_of(packet: &Packet, session: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(c) => c.protocol,
        _ => session,
    }
}

/// Encodes `packet`, decodes the result and asserts it is the same packet, that the
/// encoding is consumed exactly, and that encoding is canonical (re-encoding the
/// decoded packet gives the same bytes).
pub fn assert_round_trip(packet: &Packet, session: ProtocolVersion) {
    let version = version_of(packet, session);
    let mut wire = BytesMut::new();
    protocol::encode(packet, version, &mut wire);
    let encoded = wire.clone().freeze();

    let mut buf = wire;
    let again = match protocol::decode(&mut buf, version, UNLIMITED) {
        Ok(Some(p)) => p,
        Ok(None) => panic!("encoding of {packet:?} is incomplete: {encoded:02x?}"),
        Err(e) => panic!("encoding of {packet:?} does not decode ({e}): {encoded:02x?}"),
    };
    assert_eq!(
        &again, packet,
        "round trip changed the packet; wire {encoded:02x?}"
    );
    assert!(
        buf.is_empty(),
        "encoding of {packet:?} has {} trailing bytes: {encoded:02x?}",
        buf.len()
    );

    let mut twice = BytesMut::new();
    protocol::encode(&again, version, &mut twice);
    assert_eq!(
        &twice[..],
        &encoded[..],
        "encoding is not canonical for {packet:?}"
    );
}

/// Same as [`assert_round_trip`] for the first packet, through `decode_connect`.
pub fn assert_connect_round_trip(connect: &Connect) {
    let mut wire = BytesMut::new();
    protocol::encode(
        &Packet::Connect(Box::new(connect.clone())),
        connect.protocol,
        &mut wire,
    );
    let encoded = wire.clone().freeze();
    match protocol::decode_connect(&mut wire, UNLIMITED) {
        Ok(Some(c)) => assert_eq!(&c, connect, "CONNECT round trip; wire {encoded:02x?}"),
        other => panic!("encoding of {connect:?} gives {other:?}: {encoded:02x?}"),
    }
    assert!(
        wire.is_empty(),
        "CONNECT encoding has trailing bytes: {encoded:02x?}"
    );
}

/// Decodes packets from `buf` until more bytes are needed or an error, round-tripping
/// each one. Returns the error, if any.
fn decode_loop(buf: &mut BytesMut, version: ProtocolVersion, max: usize) -> Option<Error> {
    loop {
        let before = buf.len();
        match protocol::decode(buf, version, max) {
            Ok(Some(p)) => {
                assert!(buf.len() < before, "a decoded packet consumed no bytes");
                assert_round_trip(&p, version);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return None;
            }
            Err(e) => {
                let _ = e.to_string();
                return Some(e);
            }
        }
    }
}

/// The `decode` target: `decode_connect` on the input, then `decode` in a loop on what
/// follows, with the version the CONNECT negotiated; every packet must round-trip.
///
/// If the input does not start with a valid CONNECT, the loop runs on the whole input
/// instead, as MQTT 5 when the first byte is odd and 3.1.1 otherwise, so the fuzzer
/// reaches every packet decoder of both versions (properties included) without first
/// having to synthesise a CONNECT.
pub fn decode_round_trip(data: &[u8]) {
    let fallback = match data.first() {
        Some(b) if b & 1 == 1 => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    };
    let mut buf = BytesMut::from(data);
    let version = match protocol::decode_connect(&mut buf, DEFAULT_MAX) {
        Ok(Some(c)) => {
            assert_connect_round_trip(&c);
            c.protocol
        }
        Ok(None) => {
            assert_eq!(buf.len(), data.len(), "Ok(None) consumed bytes");
            buf = BytesMut::from(data);
            fallback
        }
        Err(e) => {
            let _ = e.to_string();
            buf = BytesMut::from(data);
            fallback
        }
    };
    decode_loop(&mut buf, version, DEFAULT_MAX);
}

/// What a connection's reader makes of a byte stream: the CONNECT, the packets after
/// it, and the error that would close the connection.
#[derive(Debug, Default, PartialEq)]
struct Session {
    version: Option<ProtocolVersion>,
    connect: Option<Connect>,
    packets: Vec<Packet>,
    error: Option<Error>,
}

impl Session {
    /// Consumes what it can of `buf`, as the connection task does after each read.
    fn feed(&mut self, buf: &mut BytesMut, max: usize) {
        if self.error.is_some() {
            return;
        }
        let version = match self.version {
            Some(v) => v,
            None => match protocol::decode_connect(buf, max) {
                Ok(Some(c)) => {
                    let v = c.protocol;
                    self.connect = Some(c);
                    self.version = Some(v);
                    v
                }
                Ok(None) => return,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            },
        };
        loop {
            match protocol::decode(buf, version, max) {
                Ok(Some(p)) => self.packets.push(p),
                Ok(None) => return,
                Err(e) => {
                    self.error = Some(e);
                    return;
                }
            }
        }
    }
}

/// The `frame_split` target. `data[0]` picks the split point, `data[1]` the maximum
/// packet size (the default, or a small one so the size check fires mid-stream), and
/// the rest is the stream. Fed whole or in two chunks, it must give the same CONNECT,
/// packets and error, and leave the same number of bytes unconsumed.
pub fn frame_split(data: &[u8]) {
    let [split, max, stream @ ..] = data else {
        return;
    };
    let max = if *max < 128 {
        DEFAULT_MAX
    } else {
        2 + (*max as usize - 128) * 4
    };
    let at = *split as usize % (stream.len() + 1);

    let mut whole = Session::default();
    let mut whole_buf = BytesMut::from(stream);
    whole.feed(&mut whole_buf, max);

    let mut parts = Session::default();
    let mut parts_buf = BytesMut::from(&stream[..at]);
    parts.feed(&mut parts_buf, max);
    parts_buf.extend_from_slice(&stream[at..]);
    parts.feed(&mut parts_buf, max);

    assert_eq!(whole, parts, "split at {at} changed the outcome");
    if whole.error.is_none() {
        assert_eq!(
            whole_buf.len(),
            parts_buf.len(),
            "split at {at}: leftover differs"
        );
    }
}
