//! Codec tests: round trips of every packet type, every split point of partial input,
//! each malformed case, and a property test over generated packets.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::frame::{remaining_len_size, write_fixed_header};
use super::*;

const MAX: usize = 1024 * 1024;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

fn samples() -> Vec<Packet> {
    vec![
        Packet::Connect(Box::new(Connect {
            protocol: V4,
            clean_start: true,
            keep_alive: 30,
            client_id: "client-1".into(),
            username: Some("user".into()),
            password: Some(Bytes::from_static(b"\x00secret\xff")),
            will: Some(LastWill {
                topic: "will/topic".into(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
            }),
            properties: None,
        })),
        Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V3_1,
            clean_start: false,
            keep_alive: 0,
            client_id: "old".into(),
            username: None,
            password: None,
            will: None,
            properties: None,
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ConnectReason::Success,
            properties: None,
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ConnectReason::NotAuthorized,
            properties: None,
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 0,
            payload: Bytes::from_static(b"hello"),
            properties: None,
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "ünïcode/topic".into(),
            pkid: 65535,
            payload: Bytes::from(vec![7u8; 300]),
            properties: None,
        }),
        Packet::PubAck(PubAck::new(1)),
        Packet::PubRec(PubRec::new(2)),
        Packet::PubRel(PubRel::new(3)),
        Packet::PubComp(PubComp::new(4)),
        Packet::Subscribe(Subscribe {
            pkid: 10,
            filters: vec![
                SubscribeFilter {
                    filter: "a/+/c".into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        ..Default::default()
                    },
                },
                SubscribeFilter {
                    filter: "#".into(),
                    options: SubscriptionOptions::default(),
                },
            ],
            properties: None,
        }),
        Packet::SubAck(SubAck {
            pkid: 10,
            reasons: vec![
                SubscribeReason::Granted(QoS::AtLeastOnce),
                SubscribeReason::FAILURE,
            ],
            properties: None,
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 11,
            filters: vec!["a/b".into(), "c/#".into()],
            properties: None,
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 11,
            reasons: vec![],
            properties: None,
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
    ]
}

fn encoded(p: &Packet) -> BytesMut {
    let version = match p {
        Packet::Connect(c) => c.protocol,
        _ => V4,
    };
    let mut buf = BytesMut::new();
    encode(p, version, &mut buf);
    buf
}

fn decode_all(buf: &mut BytesMut) -> Result<Vec<Packet>, Error> {
    let mut out = Vec::new();
    while let Some(p) = decode(buf, V4, MAX)? {
        out.push(p);
    }
    Ok(out)
}

#[test]
fn every_packet_type_round_trips() {
    let packets = samples();
    let types: std::collections::HashSet<_> = packets.iter().map(Packet::packet_type).collect();
    assert_eq!(types.len(), 14, "all 14 packet types of 3.1.1 are covered");
    for p in packets {
        let mut buf = encoded(&p);
        let back = decode(&mut buf, V4, MAX).unwrap().unwrap();
        assert_eq!(back, p);
        assert!(buf.is_empty(), "{:?} left bytes behind", p.packet_type());
    }
}

#[test]
fn connect_is_read_first_without_a_version() {
    for p in samples() {
        let Packet::Connect(c) = &p else { continue };
        let mut buf = encoded(&p);
        assert_eq!(decode_connect(&mut buf, MAX).unwrap().as_ref(), Some(&**c));
    }
    let mut buf = encoded(&Packet::PingReq);
    assert_eq!(
        decode_connect(&mut buf, MAX),
        Err(Error::Unexpected(PacketType::PingReq))
    );
}

#[test]
fn every_split_point_of_a_stream_decodes_the_same() {
    let packets: Vec<Packet> = samples()
        .into_iter()
        .filter(|p| !matches!(p, Packet::Connect(c) if c.protocol != V4))
        .collect();
    let mut whole = BytesMut::new();
    for p in &packets {
        whole.extend_from_slice(&encoded(p));
    }
    for split in 0..=whole.len() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&whole[..split]);
        let mut got = decode_all(&mut buf).unwrap();
        buf.extend_from_slice(&whole[split..]);
        got.extend(decode_all(&mut buf).unwrap());
        assert_eq!(got, packets, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn byte_at_a_time_input_decodes() {
    let p = &samples()[5];
    let bytes = encoded(p);
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        assert_eq!(decode(&mut buf, V4, MAX).unwrap(), None, "early at {i}");
        buf.put_u8(*b);
    }
    assert_eq!(decode(&mut buf, V4, MAX).unwrap().as_ref(), Some(p));
}

#[test]
fn remaining_length_boundaries() {
    for len in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        let mut buf = BytesMut::new();
        write_fixed_header(&mut buf, 0x30, len);
        assert_eq!(buf.len(), 1 + remaining_len_size(len));
        buf.resize(buf.len() + len, 0);
        let h = check(&buf, usize::MAX).unwrap().unwrap();
        assert_eq!(h.remaining_len, len);
        assert_eq!(h.frame_len(), buf.len());
    }
}

fn decode_bytes(bytes: &[u8]) -> Result<Option<Packet>, Error> {
    decode(&mut BytesMut::from(bytes), V4, MAX)
}

fn connect_bytes(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    body.extend_from_slice(payload);
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

fn malformed(packet: PacketType) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Malformed { packet: p, .. } if *p == packet)
}

#[test]
fn malformed_inputs_are_errors() {
    type Check = Box<dyn Fn(&Error) -> bool>;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "five-byte remaining length",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Box::new(|e| *e == Error::MalformedRemainingLength),
        ),
        (
            "oversized packet refused from its header alone",
            vec![0x30, 0xFF, 0xFF, 0x7F],
            Box::new(|e| matches!(e, Error::PacketTooLarge { .. })),
        ),
        (
            "packet type 0",
            vec![0x00, 0x00],
            Box::new(|e| *e == Error::InvalidPacketType(0)),
        ),
        (
            "AUTH under 3.1.1",
            vec![0xF0, 0x00],
            Box::new(|e| *e == Error::InvalidPacketType(15)),
        ),
        (
            "PUBREL without its 0b0010 flags",
            vec![0x60, 0x02, 0x00, 0x01],
            Box::new(|e| matches!(e, Error::InvalidFlags { .. })),
        ),
        (
            "SUBSCRIBE without its 0b0010 flags",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            Box::new(|e| matches!(e, Error::InvalidFlags { .. })),
        ),
        (
            "PINGREQ with flags",
            vec![0xC1, 0x00],
            Box::new(|e| matches!(e, Error::InvalidFlags { .. })),
        ),
        (
            "PINGREQ with a body",
            vec![0xC0, 0x01, 0x00],
            Box::new(malformed(PacketType::PingReq)),
        ),
        (
            "DISCONNECT with a body",
            vec![0xE0, 0x01, 0x00],
            Box::new(malformed(PacketType::Disconnect)),
        ),
        (
            "PUBLISH QoS 3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            Box::new(|e| *e == Error::InvalidQoS(3)),
        ),
        (
            "PUBLISH QoS 0 with DUP",
            vec![0x38, 0x03, 0x00, 0x01, b'a'],
            Box::new(|e| matches!(e, Error::InvalidFlags { .. })),
        ),
        (
            "wildcard + in PUBLISH topic",
            vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
            Box::new(|e| *e == Error::WildcardInTopic),
        ),
        (
            "wildcard # in PUBLISH topic",
            vec![0x30, 0x03, 0x00, 0x01, b'#'],
            Box::new(|e| *e == Error::WildcardInTopic),
        ),
        (
            "empty PUBLISH topic",
            vec![0x30, 0x02, 0x00, 0x00],
            Box::new(|e| matches!(e, Error::EmptyTopic(_))),
        ),
        (
            "invalid UTF-8 in PUBLISH topic",
            vec![0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            Box::new(|e| matches!(e, Error::InvalidUtf8(_))),
        ),
        (
            "U+0000 in PUBLISH topic",
            vec![0x30, 0x04, 0x00, 0x02, b'a', 0x00],
            Box::new(|e| matches!(e, Error::InvalidUtf8(_))),
        ),
        (
            "PUBLISH QoS 1 with packet id 0",
            vec![0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
            Box::new(malformed(PacketType::Publish)),
        ),
        (
            "PUBLISH topic length past the packet",
            vec![0x30, 0x03, 0x00, 0x09, b'a'],
            Box::new(malformed(PacketType::Publish)),
        ),
        (
            "PUBACK truncated",
            vec![0x40, 0x01, 0x00],
            Box::new(malformed(PacketType::PubAck)),
        ),
        (
            "PUBACK with trailing bytes",
            vec![0x40, 0x03, 0x00, 0x01, 0x00],
            Box::new(malformed(PacketType::PubAck)),
        ),
        (
            "SUBSCRIBE without filters",
            vec![0x82, 0x02, 0x00, 0x01],
            Box::new(malformed(PacketType::Subscribe)),
        ),
        (
            "SUBSCRIBE reserved option bits",
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
            Box::new(malformed(PacketType::Subscribe)),
        ),
        (
            "SUBSCRIBE QoS 3",
            vec![0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
            Box::new(|e| *e == Error::InvalidQoS(3)),
        ),
        (
            "SUBSCRIBE missing its QoS byte",
            vec![0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            Box::new(malformed(PacketType::Subscribe)),
        ),
        (
            "UNSUBSCRIBE without filters",
            vec![0xA2, 0x02, 0x00, 0x01],
            Box::new(malformed(PacketType::Unsubscribe)),
        ),
        (
            "wrong protocol name",
            connect_bytes(b"MQTX", 4, 0x02, &[0, 1, b'c']),
            Box::new(|e| *e == Error::InvalidProtocolName),
        ),
        (
            "wrong protocol level",
            connect_bytes(b"MQTT", 9, 0x02, &[0, 1, b'c']),
            Box::new(|e| *e == Error::UnsupportedProtocolLevel(9)),
        ),
        (
            "CONNECT reserved flag",
            connect_bytes(b"MQTT", 4, 0x03, &[0, 1, b'c']),
            Box::new(malformed(PacketType::Connect)),
        ),
        (
            "CONNECT password without user name",
            connect_bytes(b"MQTT", 4, 0x42, &[0, 1, b'c', 0, 1, b'p']),
            Box::new(malformed(PacketType::Connect)),
        ),
        (
            "CONNECT will QoS without will",
            connect_bytes(b"MQTT", 4, 0x0A, &[0, 1, b'c']),
            Box::new(malformed(PacketType::Connect)),
        ),
        (
            "CONNECT will QoS 3",
            connect_bytes(b"MQTT", 4, 0x1E, &[0, 1, b'c', 0, 1, b'w', 0, 0]),
            Box::new(|e| *e == Error::InvalidQoS(3)),
        ),
        (
            "CONNECT will topic with wildcard",
            connect_bytes(b"MQTT", 4, 0x06, &[0, 1, b'c', 0, 1, b'#', 0, 0]),
            Box::new(|e| *e == Error::WildcardInTopic),
        ),
        (
            "CONNECT client id past the packet",
            connect_bytes(b"MQTT", 4, 0x02, &[0, 5, b'c']),
            Box::new(malformed(PacketType::Connect)),
        ),
        (
            "CONNECT trailing bytes",
            connect_bytes(b"MQTT", 4, 0x02, &[0, 1, b'c', 9]),
            Box::new(malformed(PacketType::Connect)),
        ),
    ];
    for (name, bytes, check) in cases {
        match decode_bytes(&bytes) {
            Err(e) => assert!(check(&e), "{name}: unexpected error {e:?}"),
            Ok(p) => panic!("{name}: decoded {p:?}"),
        }
    }
}

#[test]
fn size_limit_applies_before_the_body_arrives() {
    // Header announces 100 bytes; limit 50; only the header is buffered.
    let mut buf = BytesMut::from(&[0x30u8, 100][..]);
    assert_eq!(
        decode(&mut buf, V4, 50),
        Err(Error::PacketTooLarge { size: 102, max: 50 })
    );
}

#[test]
fn payload_shares_the_frame() {
    let p = &samples()[5];
    let mut buf = encoded(p);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Some(Packet::Publish(back)) = decode(&mut buf, V4, MAX).unwrap() else {
        panic!("not a publish")
    };
    let at = back.payload.as_ptr() as usize;
    assert!(
        at >= start && at < end,
        "payload points into the received buffer"
    );
}

fn arb_string() -> impl Strategy<Value = bytestring::ByteString> {
    "[a-z0-9/_é]{1,20}".prop_map(bytestring::ByteString::from)
}

fn arb_topic() -> impl Strategy<Value = bytestring::ByteString> {
    "[a-z0-9_é][a-z0-9/_é]{0,20}".prop_map(bytestring::ByteString::from)
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn arb_packet() -> impl Strategy<Value = Packet> {
    let connect = (
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(arb_string()),
        proptest::option::of((arb_string(), proptest::option::of(arb_bytes()))),
        proptest::option::of((arb_topic(), arb_bytes(), arb_qos(), any::<bool>())),
    )
        .prop_map(|(clean, ka, id, creds, will)| {
            let (username, password) = match creds {
                Some((u, p)) => (Some(u), p),
                None => (None, None),
            };
            Packet::Connect(Box::new(Connect {
                protocol: V4,
                clean_start: clean,
                keep_alive: ka,
                client_id: id.unwrap_or_default(),
                username,
                password,
                will: will.map(|(topic, payload, qos, retain)| LastWill {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties: None,
                }),
                properties: None,
            }))
        });
    let publish = (
        arb_topic(),
        arb_bytes(),
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        1..=u16::MAX,
    )
        .prop_map(|(topic, payload, qos, retain, dup, pkid)| {
            let zero = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !zero,
                qos,
                retain,
                topic,
                pkid: if zero { 0 } else { pkid },
                payload,
                properties: None,
            })
        });
    let subscribe = (
        1..=u16::MAX,
        proptest::collection::vec((arb_string(), arb_qos()), 1..5),
    )
        .prop_map(|(pkid, fs)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters: fs
                    .into_iter()
                    .map(|(filter, qos)| SubscribeFilter {
                        filter,
                        options: SubscriptionOptions {
                            qos,
                            ..Default::default()
                        },
                    })
                    .collect(),
                properties: None,
            })
        });
    let unsubscribe = (1..=u16::MAX, proptest::collection::vec(arb_string(), 1..5)).prop_map(
        |(pkid, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties: None,
            })
        },
    );
    let acks = (0..4u8, 1..=u16::MAX).prop_map(|(k, id)| match k {
        0 => Packet::PubAck(PubAck::new(id)),
        1 => Packet::PubRec(PubRec::new(id)),
        2 => Packet::PubRel(PubRel::new(id)),
        _ => Packet::PubComp(PubComp::new(id)),
    });
    prop_oneof![
        connect,
        publish,
        subscribe,
        unsubscribe,
        acks,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect(Disconnect::default())),
    ]
}

proptest! {
    #[test]
    fn generated_packets_round_trip(packets in proptest::collection::vec(arb_packet(), 1..8), split in any::<prop::sample::Index>()) {
        let mut whole = BytesMut::new();
        for p in &packets {
            encode(p, V4, &mut whole);
        }
        let at = split.index(whole.len() + 1);
        let mut buf = BytesMut::from(&whole[..at]);
        let mut got = decode_all(&mut buf).unwrap();
        buf.extend_from_slice(&whole[at..]);
        got.extend(decode_all(&mut buf).unwrap());
        prop_assert_eq!(got, packets);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_connect(&mut buf, 1024);
        while let Ok(Some(_)) = decode(&mut buf, V4, 1024) {}
    }
}

#[test]
fn redacted_connect_frames_zero_the_password_only() {
    for password in [&b"\x00secret\xff"[..], b"", b"p"] {
        let Packet::Connect(mut connect) = samples().remove(0) else {
            unreachable!()
        };
        connect.password = Some(Bytes::copy_from_slice(password));
        let mut wire = BytesMut::new();
        encode(&Packet::Connect(connect), V4, &mut wire);
        let frame = wire.clone().freeze();
        let decoded = decode_connect(&mut wire, MAX).unwrap().unwrap();
        let redacted = redacted_connect_frame(&decoded, &frame);
        assert_eq!(redacted.len(), frame.len(), "same length");
        let n = password.len();
        let split = frame.len() - n;
        assert_eq!(
            redacted[..split],
            frame[..split],
            "everything else unchanged"
        );
        assert!(redacted[split..].iter().all(|b| *b == 0), "password zeroed");
        let again = decode_connect(&mut BytesMut::from(&redacted[..]), MAX)
            .unwrap()
            .unwrap();
        assert_eq!(again.username, decoded.username);
        assert_eq!(again.password.as_deref(), Some(&vec![0u8; n][..]));
    }
    // Without a password, nothing changes.
    let Packet::Connect(connect) = samples().remove(1) else {
        unreachable!()
    };
    let mut wire = BytesMut::new();
    encode(
        &Packet::Connect(connect.clone()),
        ProtocolVersion::V3_1,
        &mut wire,
    );
    assert_eq!(redacted_connect_frame(&connect, &wire), wire.freeze());
}

/// What the outbox reports of a packet it wrote is what decoding the written bytes
/// reports: packet events describe the wire, whichever door wrote it, without the
/// bytes being decoded again on the hot path.
#[test]
fn outbox_summaries_match_the_packets_decoded_back() {
    let wire = Wire::new(V4, MAX);
    let mut out = Outbox::new(V4, 64);
    out.summarize(true);
    for p in samples() {
        out.packet(&p);
    }
    out.ack(PacketType::PubAck, 7);
    out.ack(PacketType::PubRel, 8);
    let topic: bytestring::ByteString = "t/x".into();
    let publish = |qos, pkid, flag| PublishRef {
        topic: &topic,
        payload: if flag { b"payload" } else { b"" },
        qos,
        pkid,
        dup: flag,
        retain: flag,
        properties: None,
    };
    out.publish(&publish(QoS::AtLeastOnce, 9, true));
    out.publish(&publish(QoS::AtMostOnce, 0, false));
    let mut bytes = BytesMut::from(out.bytes());
    let summaries = out.written();
    assert!(out.is_empty());
    assert_eq!(summaries.len(), samples().len() + 4);
    for summary in summaries {
        let (packet, frame) = match summary.packet_type {
            // CONNECT only decodes as the first packet of a connection.
            PacketType::Connect => {
                let (c, frame) = decode_connect_frame(&mut bytes, MAX).unwrap().unwrap();
                (Packet::Connect(Box::new(c)), frame)
            }
            _ => wire.decode(&mut bytes, true).unwrap().unwrap(),
        };
        assert_eq!(PacketSummary::of(&packet, V4, frame), summary, "{packet:?}");
    }
    assert!(bytes.is_empty());
}

#[test]
fn outbox_keeps_no_summaries_unless_asked() {
    let mut out = Outbox::new(V4, 64);
    out.ack(PacketType::PubAck, 1);
    out.summarize(true);
    out.ack(PacketType::PubAck, 2);
    out.summarize(false);
    out.ack(PacketType::PubAck, 3);
    assert_eq!(out.len(), 12);
    assert!(out.written().is_empty());
    out.summarize(true);
    out.packet(&Packet::PingResp);
    let sent = out.written();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].packet_type, PacketType::PingResp);
    assert_eq!(sent[0].size(), 2);
}

/// The frame `Wire::decode` hands back is the packet's whole wire form, so a packet
/// event's raw bytes and size are the client's own.
#[test]
fn wire_decode_returns_each_packet_with_its_frame() {
    let wire = Wire::new(V4, MAX);
    let mut all = BytesMut::new();
    let mut frames = Vec::new();
    for p in samples().into_iter().skip(2) {
        let one = encoded(&p);
        frames.push(one.clone().freeze());
        all.extend_from_slice(&one);
    }
    for expected in frames {
        let (_, frame) = wire.decode(&mut all, true).unwrap().unwrap();
        assert_eq!(frame, expected);
    }
    assert_eq!(wire.decode(&mut all, true).unwrap(), None);
}
