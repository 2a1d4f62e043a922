//! The `session` target: whole client sessions through the broker's real connection
//! handler (`tandem_broker::server::serve_client`), against a real in-process broker
//! (router, session registry, no plugins), over an in-memory duplex stream.
//!
//! Input: `data[0]` holds flags, the rest is what the client sends.
//! - bit 0: put a valid 3.1.1 CONNECT (client id `fuzz`, clean) in front of the bytes,
//!   so the fuzzer spends its time on what follows a CONNECT; otherwise the bytes must
//!   bring their own.
//! - bit 1: that CONNECT asks for keepalive 1 s (else 0).
//! - bits 2..8: seed of the chunking: the stream is written in pieces of 1 to 64 bytes,
//!   or whole, pipelined without waiting for any answer, the task yielding between
//!   pieces so the broker sees packets split at arbitrary boundaries.
//!
//! Checked, besides "nothing panics and the handler ends" (a session that does not end
//! within an hour of virtual time is a hang, and fails):
//! - everything the broker writes decodes as packets of the negotiated version;
//! - a refusing CONNACK is the only thing written, and the first packet is a CONNACK;
//! - the answers (every packet but PUBLISH) are, in order, the answers the client's
//!   packets call for (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK with one code per
//!   filter, UNSUBACK, PINGRESP, with their packet ids), up to the first packet that
//!   ends the connection. When the client's bytes are whole packets, the harness
//!   appends a PINGREQ marker: if its PINGRESP comes, every answer before it must have
//!   come too (nothing pipelined or split was lost); if it does not (the broker closed
//!   first, for whatever reason it may have), what came must be a prefix.
//! - MQTT 5 (a CONNECT the input brings with level 5): the same, with the v5 answers (0x87
//!   for a `$SYS/` publish, UNSUBACK codes not predicted), an empty client id accepted with
//!   any clean start, an authentication method refused (no plugin knows one), and a
//!   connection the broker ends closed by a DISCONNECT with an error code after every
//!   answer owed, only when a protocol error was counted (or keepalive, 0x8D).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tandem_broker::broker::Broker;
use tandem_broker::config::Config;
use tandem_broker::plugins::PluginHost;
use tandem_broker::protocol::{self, ConnectReason, Packet, ProtocolVersion};
use tandem_broker::server::serve_client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The broker's configuration for every session: small windows and queues, so their
/// bounds are reached by short inputs.
const CONFIG: &str = "\
listeners:
  default: { type: tcp, bind: 127.0.0.1:0 }
mqtt:
  max_packet_size: 65536
  max_connect_packet_size: 4096
  max_inflight: 3
  max_queued_messages: 8
  connect_timeout: 10s
sys: { enable: false }
";

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Virtual time: timers (keepalive, connect timeout) fire as soon as every task
        // waits, so a run never sleeps and always ends the same way.
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    static CONFIG_PARSED: Config =
        Config::from_yaml(CONFIG, Path::new("<fuzz>")).expect("fuzz config is valid");
}

/// Small xorshift generator for the chunk sizes.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// What the broker must answer to each of the client's packets, and whether the stream
/// was whole packets (so a marker can follow). `None` when the CONNECT is not accepted.
struct Expected {
    version: ProtocolVersion,
    /// The CONNECT asked for a keepalive.
    keep_alive: bool,
    answers: Vec<Packet>,
    whole: bool,
}

fn expected(stream: &[u8], config: &Config) -> Option<Expected> {
    let mut buf = BytesMut::from(stream);
    let connect = match protocol::decode_connect(&mut buf, config.mqtt.connect_size_limit()) {
        Ok(Some(c)) => c,
        _ => return None,
    };
    let version = connect.protocol;
    // 3.1.1 assigns an id to a clean session only, 3.1 never; MQTT 5 always.
    if connect.client_id.is_empty()
        && ((!connect.clean_start && !version.is_v5()) || version == ProtocolVersion::V3_1)
    {
        return None;
    }
    // No plugin here knows an MQTT 5 authentication method: CONNACK 0x8C.
    if connect
        .properties
        .as_ref()
        .is_some_and(|p| p.authentication_method.is_some())
    {
        return None;
    }
    let mut answers = Vec::new();
    let whole = loop {
        match protocol::decode(&mut buf, version, config.mqtt.max_packet_size) {
            Ok(Some(packet)) => {
                use protocol::{PubAck, PubComp, PubRec, PubRel, QoS};
                match packet {
                    Packet::Publish(p) => {
                        // An MQTT 5 publisher is told that `$SYS/` is the broker's (0x87).
                        let reason = if version.is_v5() && p.topic.starts_with("$SYS/") {
                            0x87
                        } else {
                            0
                        };
                        match p.qos {
                            QoS::AtMostOnce => {}
                            QoS::AtLeastOnce => answers.push(Packet::PubAck(PubAck {
                                reason,
                                ..PubAck::new(p.pkid)
                            })),
                            QoS::ExactlyOnce => answers.push(Packet::PubRec(PubRec {
                                reason,
                                ..PubRec::new(p.pkid)
                            })),
                        }
                    }
                    Packet::PubAck(_) | Packet::PubComp(_) => {}
                    Packet::PubRec(a) => answers.push(Packet::PubRel(PubRel::new(a.pkid))),
                    Packet::PubRel(a) => answers.push(Packet::PubComp(PubComp::new(a.pkid))),
                    Packet::Subscribe(s) => answers.push(Packet::SubAck(protocol::SubAck {
                        pkid: s.pkid,
                        // Codes are not predicted, only their number.
                        reasons: vec![protocol::SubscribeReason::FILTER_INVALID; s.filters.len()],
                        properties: None,
                    })),
                    Packet::Unsubscribe(u) => answers.push(Packet::UnsubAck(protocol::UnsubAck {
                        pkid: u.pkid,
                        reasons: Vec::new(),
                        properties: None,
                    })),
                    Packet::PingReq => answers.push(Packet::PingResp),
                    // DISCONNECT ends the session; so does a packet only a server sends,
                    // or a second CONNECT.
                    _ => break false,
                }
            }
            Ok(None) => break buf.is_empty(),
            Err(_) => break false,
        }
    };
    Some(Expected {
        version,
        keep_alive: connect.keep_alive > 0,
        answers,
        whole,
    })
}

/// Whether `got` answers as `want` does (SUBACK: same id and number of codes).
fn same_answer(got: &Packet, want: &Packet) -> bool {
    match (got, want) {
        (Packet::SubAck(g), Packet::SubAck(w)) => {
            g.pkid == w.pkid && g.reasons.len() == w.reasons.len()
        }
        // MQTT 5 says per filter whether it was held; not predicted.
        (Packet::UnsubAck(g), Packet::UnsubAck(w)) => g.pkid == w.pkid,
        _ => got == want,
    }
}

/// The `session` target.
pub fn session(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let config = CONFIG_PARSED.with(Clone::clone);
    let mut stream = BytesMut::new();
    if flags & 1 == 1 {
        let keep_alive = u16::from(flags & 2 == 2);
        let connect = protocol::Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive,
            client_id: "fuzz".into(),
            username: None,
            password: None,
            will: None,
            properties: None,
        };
        protocol::encode(
            &Packet::Connect(Box::new(connect)),
            ProtocolVersion::V3_1_1,
            &mut stream,
        );
    }
    stream.extend_from_slice(rest);
    let expect = expected(&stream, &config);
    let marker = expect.as_ref().is_some_and(|e| e.whole);
    if marker {
        protocol::encode(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut stream);
    }
    let mut chunks = Chunks(u32::from(flags >> 2) | 0x9E37_0000);
    let whole_write = flags >> 2 == 0;

    let (output, protocol_errors) = RUNTIME.with(|rt| {
        rt.block_on(async {
            let shutdown = CancellationToken::new();
            let plugins = PluginHost::start(&config.plugin_sections(), shutdown.child_token())
                .await
                .expect("a plugin host without plugins starts");
            let broker = Arc::new(Broker::new(config.clone(), plugins, None));
            let stats = broker.stats.clone();
            let (client, server) = tokio::io::duplex(4096);
            let (srd, swr) = tokio::io::split(server);
            let (mut crd, mut cwr) = tokio::io::split(client);
            let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
            let serve = serve_client(broker, srd, swr, peer, "fuzz".into(), shutdown);
            let write = async {
                let mut at = 0;
                while at < stream.len() {
                    let n = if whole_write {
                        stream.len() - at
                    } else {
                        (chunks.next() % 64 + 1) as usize
                    };
                    let end = (at + n).min(stream.len());
                    if cwr.write_all(&stream[at..end]).await.is_err() {
                        // The broker closed: what is left is not read.
                        return;
                    }
                    at = end;
                    tokio::task::yield_now().await;
                }
                // Half-close only once the broker is idle (virtual time moves only
                // when every task waits): whatever it would answer, it has answered.
                tokio::time::sleep(Duration::from_secs(600)).await;
                let _ = cwr.shutdown().await;
            };
            let read = async {
                let mut out = Vec::new();
                let _ = crd.read_to_end(&mut out).await;
                out
            };
            let all = async { tokio::join!(serve, write, read).2 };
            let output = tokio::time::timeout(Duration::from_secs(3600), all)
                .await
                .expect("the session did not end within an hour of virtual time");
            (output, stats.snapshot().protocol_errors)
        })
    });

    // Everything written decodes.
    let version = expect
        .as_ref()
        .map_or(ProtocolVersion::V3_1_1, |e| e.version);
    let mut buf = BytesMut::from(&output[..]);
    let mut packets = Vec::new();
    loop {
        match protocol::decode(&mut buf, version, usize::MAX) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => break,
            Err(e) => panic!("the broker wrote a malformed packet ({e}): {output:02x?}"),
        }
    }
    let Some(first) = packets.first() else {
        return;
    };
    let Packet::ConnAck(connack) = first else {
        panic!("the first packet written is not a CONNACK: {first:?}");
    };
    if connack.reason != ConnectReason::Success {
        assert_eq!(
            packets.len(),
            1,
            "packets after a refusing CONNACK: {packets:?}"
        );
        assert!(expect.is_none(), "a valid CONNECT was refused: {connack:?}");
        return;
    }
    let expect = expect.expect("CONNACK success for a CONNECT the codec refuses");
    assert!(!connack.session_present, "a fresh broker has no session");
    let mut answers: Vec<&Packet> = packets[1..]
        .iter()
        .filter(|p| !matches!(p, Packet::Publish(_)))
        .collect();
    let keep_alive = expect.keep_alive;
    // MQTT 5: a connection the broker ends (a protocol error, keepalive) ends with a
    // DISCONNECT saying why, after every answer owed; never in the middle, never under
    // 3.1.1, never with a success code.
    if let Some(Packet::Disconnect(d)) = answers.last() {
        assert!(version.is_v5(), "DISCONNECT sent to a 3.1.1 client: {d:?}");
        assert!(
            d.reason >= 0x80,
            "a server DISCONNECT without an error: {d:?}"
        );
        assert!(
            protocol_errors > 0 || (keep_alive && d.reason == 0x8D),
            "DISCONNECT {d:?} with no protocol error counted"
        );
        answers.pop();
    }
    assert!(
        !answers.iter().any(|p| matches!(p, Packet::Disconnect(_))),
        "a DISCONNECT before the last packet: {answers:?}"
    );
    let mut want = expect.answers;
    if marker {
        want.push(Packet::PingResp);
    }
    assert!(
        answers.len() <= want.len(),
        "more answers than packets to answer: got {answers:?}, want {want:?}"
    );
    for (i, (got, want)) in answers.iter().zip(&want).enumerate() {
        assert!(
            same_answer(got, want),
            "answer {i} is {got:?}, the client's packets call for {want:?}"
        );
    }
    // A client without keepalive whose packets break no rule is never closed by the
    // broker: it answers every packet, the marker last. (With keepalive, the broker
    // closes it when it falls silent; then a prefix is all that can be asked.)
    if marker && !keep_alive && protocol_errors == 0 {
        assert_eq!(
            answers.len(),
            want.len(),
            "answers lost: got {answers:?}, want {want:?}"
        );
    }
}
