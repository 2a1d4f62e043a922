//! The MQTT 5 wire form: every packet with properties round-trips, short forms are
//! used and read, and every kind of bad property block is refused as malformed.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use crate::protocol::frame::write_fixed_header;
use crate::protocol::*;

const MAX: usize = 1024 * 1024;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn props(f: impl FnOnce(&mut Properties)) -> Option<Box<Properties>> {
    let mut p = Properties::default();
    f(&mut p);
    Some(Box::new(p))
}

fn user(p: &mut Properties) {
    p.user_properties = vec![("k".into(), "v".into()), ("k".into(), "second".into())];
}

fn samples() -> Vec<Packet> {
    vec![
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: false,
            keep_alive: 60,
            client_id: "c5".into(),
            username: None,
            // MQTT 5 allows a password without a user name.
            password: Some(Bytes::from_static(b"pw")),
            will: Some(LastWill {
                topic: "will/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: props(|p| {
                    p.will_delay_interval = Some(30);
                    p.payload_format_indicator = Some(1);
                    p.content_type = Some("text/plain".into());
                    p.response_topic = Some("reply/here".into());
                    p.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
                    p.message_expiry_interval = Some(120);
                    user(p);
                }),
            }),
            properties: props(|p| {
                p.session_expiry_interval = Some(3600);
                p.receive_maximum = Some(20);
                p.maximum_packet_size = Some(4096);
                p.topic_alias_maximum = Some(10);
                p.request_response_information = Some(1);
                p.request_problem_information = Some(0);
                p.authentication_method = Some("SCRAM-SHA-256".into());
                p.authentication_data = Some(Bytes::from_static(b"n,,n=user"));
                user(p);
            }),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ConnectReason::Success,
            properties: props(|p| {
                p.assigned_client_identifier = Some("auto-1".into());
                p.server_keep_alive = Some(30);
                p.topic_alias_maximum = Some(64);
                p.maximum_qos = Some(1);
                p.retain_available = Some(1);
                p.wildcard_subscription_available = Some(1);
                p.subscription_identifier_available = Some(0);
                p.shared_subscription_available = Some(0);
                p.reason_string = Some("welcome".into());
                p.response_information = Some("resp/".into());
                p.server_reference = Some("other:1883".into());
            }),
        }),
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ConnectReason::BadAuthenticationMethod,
            properties: None,
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            pkid: 7,
            payload: Bytes::from_static(b"hello"),
            properties: props(|p| {
                p.topic_alias = Some(3);
                p.subscription_identifiers = vec![1, 268_435_455];
                p.message_expiry_interval = Some(5);
                user(p);
            }),
        }),
        // An empty topic with an alias is the alias in use.
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "".into(),
            pkid: 0,
            payload: Bytes::new(),
            properties: props(|p| p.topic_alias = Some(3)),
        }),
        Packet::PubAck(PubAck::new(1)),
        Packet::PubAck(PubAck {
            pkid: 2,
            reason: 0x87,
            properties: None,
        }),
        Packet::PubRec(PubRec {
            pkid: 3,
            reason: 0x10,
            properties: props(|p| p.reason_string = Some("no one listens".into())),
        }),
        Packet::PubRel(PubRel {
            pkid: 4,
            reason: 0x92,
            properties: None,
        }),
        Packet::PubComp(PubComp::new(5)),
        Packet::Subscribe(Subscribe {
            pkid: 8,
            filters: vec![
                SubscribeFilter {
                    filter: "a/+".into(),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: 2,
                    },
                },
                SubscribeFilter {
                    filter: "b/#".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        retain_handling: 1,
                        ..Default::default()
                    },
                },
            ],
            properties: props(|p| {
                p.subscription_identifiers = vec![42];
                user(p);
            }),
        }),
        Packet::SubAck(SubAck {
            pkid: 8,
            reasons: vec![
                SubscribeReason::Granted(QoS::AtLeastOnce),
                SubscribeReason::NOT_AUTHORIZED,
                SubscribeReason::Failure(0x9E),
            ],
            properties: props(|p| p.reason_string = Some("partly".into())),
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 9,
            filters: vec!["a/+".into()],
            properties: props(user),
        }),
        Packet::UnsubAck(UnsubAck {
            pkid: 9,
            reasons: vec![0x00, 0x11],
            properties: None,
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect::default()),
        Packet::Disconnect(Disconnect {
            reason: 0x04,
            properties: props(|p| p.session_expiry_interval = Some(0)),
        }),
        Packet::Disconnect(Disconnect {
            reason: 0x8E,
            properties: None,
        }),
        Packet::Auth(Auth {
            reason: Auth::CONTINUE,
            properties: props(|p| {
                p.authentication_method = Some("SCRAM-SHA-256".into());
                p.authentication_data = Some(Bytes::from_static(b"r=abc"));
            }),
        }),
        Packet::Auth(Auth::default()),
    ]
}

fn encoded(p: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(p, V5, &mut buf);
    buf
}

fn decoded(buf: &mut BytesMut) -> Result<Packet, Error> {
    match buf.first().map(|b| b >> 4) {
        Some(1) => decode_connect(buf, MAX).map(|c| Packet::Connect(Box::new(c.unwrap()))),
        _ => decode(buf, V5, MAX).map(|p| p.unwrap()),
    }
}

#[test]
fn every_packet_type_round_trips_with_its_properties() {
    let packets = samples();
    let types: std::collections::HashSet<_> = packets.iter().map(Packet::packet_type).collect();
    assert_eq!(types.len(), 15, "all 15 packet types of MQTT 5 are covered");
    for p in packets {
        let mut buf = encoded(&p);
        let back = decoded(&mut buf).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(back, p);
        assert!(buf.is_empty(), "{:?} left bytes behind", p.packet_type());
    }
}

#[test]
fn short_forms_are_written_and_read() {
    // Success without properties: the 3.1.1 length.
    assert_eq!(
        &encoded(&Packet::PubAck(PubAck::new(1)))[..],
        &[0x40, 2, 0, 1]
    );
    // A reason code without properties: no property length.
    let refused = Packet::PubAck(PubAck {
        pkid: 1,
        reason: 0x87,
        properties: None,
    });
    assert_eq!(&encoded(&refused)[..], &[0x40, 3, 0, 1, 0x87]);
    assert_eq!(
        &encoded(&Packet::Disconnect(Disconnect::default()))[..],
        &[0xE0, 0]
    );
    // Each is read back, as is a reason code followed by an empty property block.
    let mut buf = BytesMut::from(&[0x40, 4, 0, 1, 0x87, 0][..]);
    assert_eq!(decode(&mut buf, V5, MAX).unwrap(), Some(refused));
}

#[test]
fn a_connect_names_its_level_and_version_five_is_read_as_such() {
    let Packet::Connect(c) = &samples()[0] else {
        unreachable!()
    };
    let mut buf = encoded(&samples()[0]);
    let read = decode_connect(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(read.protocol, V5);
    assert_eq!(&read, &**c);
}

#[test]
fn redacted_v5_connect_frames_zero_the_password_and_the_authentication_data() {
    let mut wire = encoded(&samples()[0]);
    let frame = wire.clone().freeze();
    let connect = decode_connect(&mut wire, MAX).unwrap().unwrap();
    let redacted = redacted_connect_frame(&connect, &frame);
    assert_eq!(redacted.len(), frame.len());
    let again = decode_connect(&mut BytesMut::from(&redacted[..]), MAX)
        .unwrap()
        .unwrap();
    let data = again
        .properties
        .as_ref()
        .unwrap()
        .authentication_data
        .clone();
    assert_eq!(data.as_deref(), Some(&[0u8; 9][..]));
    assert_eq!(again.password.as_deref(), Some(&[0u8; 2][..]));
    assert_eq!(again.client_id, connect.client_id);
    let secret = b"n,,n=user";
    assert!(
        !redacted.windows(secret.len()).any(|w| w == secret),
        "no trace of the authentication data"
    );
}

/// A PINGREQ-free packet: SUBSCRIBE pkid 1, a property block, filter "a" QoS 0.
fn subscribe_with(block: &[u8]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u16(1);
    body.put_slice(block);
    body.put_slice(&[0, 1, b'a', 0]);
    let mut buf = BytesMut::new();
    write_fixed_header(&mut buf, 0x82, body.len());
    buf.put_slice(&body);
    buf
}

#[test]
fn bad_property_blocks_are_malformed_packets() {
    let cases: &[(&str, &[u8])] = &[
        ("duplicate", &[6, 0x0B, 1, 0x0B, 2, 0x26, 0]),
        ("unknown identifier", &[2, 0x7F, 0]),
        ("not allowed in SUBSCRIBE", &[3, 0x23, 0, 1]),
        ("identifier past one byte", &[3, 0x80, 0x01, 0]),
        ("subscription identifier 0", &[2, 0x0B, 0]),
        ("length past the packet", &[9, 0x0B, 1]),
        ("value cut short", &[2, 0x26, 0]),
        (
            "non UTF-8 user property",
            &[7, 0x26, 0, 1, 0xFF, 0, 1, b'v'],
        ),
    ];
    for (what, block) in cases {
        let mut buf = subscribe_with(block);
        let err = decode(&mut buf, V5, MAX).expect_err(what);
        assert_eq!(err.disconnect_code(), 0x81, "{what}: {err}");
    }
    // A well-formed block passes.
    let mut ok = subscribe_with(&[2, 0x0B, 7]);
    assert!(decode(&mut ok, V5, MAX).unwrap().is_some());
}

#[test]
fn values_out_of_range_are_refused() {
    let connect = |block: &[u8]| {
        let mut body = BytesMut::new();
        body.put_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0]);
        body.put_slice(block);
        body.put_slice(&[0, 0]);
        let mut buf = BytesMut::new();
        write_fixed_header(&mut buf, 0x10, body.len());
        buf.put_slice(&body);
        decode_connect(&mut buf, MAX)
    };
    assert!(connect(&[0]).unwrap().is_some());
    for block in [
        &[3, 0x21, 0, 0][..],       // receive maximum 0
        &[5, 0x27, 0, 0, 0, 0][..], // maximum packet size 0
        &[2, 0x17, 2][..],          // request problem information 2
        &[2, 0x01, 1][..],          // payload format: not a CONNECT property
    ] {
        let err = connect(block).expect_err("refused");
        assert!(matches!(err, Error::Property { .. }), "{block:?}: {err}");
    }
}

#[test]
fn a_publish_without_topic_needs_an_alias_and_invalid_reason_codes_are_refused() {
    let mut buf = BytesMut::from(&[0x30, 3, 0, 0, 0][..]);
    assert_eq!(decode(&mut buf, V5, MAX), Err(Error::EmptyTopic("PUBLISH")));
    let mut buf = BytesMut::from(&[0x40, 3, 0, 1, 0x05][..]);
    assert!(matches!(
        decode(&mut buf, V5, MAX),
        Err(Error::Malformed { .. })
    ));
    let mut buf = BytesMut::from(&[0xE0, 1, 0x05][..]);
    assert!(matches!(
        decode(&mut buf, V5, MAX),
        Err(Error::Malformed { .. })
    ));
    // Subscription options with retain handling 3 or reserved bits.
    for options in [0x30u8, 0x40] {
        let mut buf = BytesMut::from(&[0x82, 7, 0, 1, 0, 0, 1, b'a', options][..]);
        assert!(decode(&mut buf, V5, MAX).is_err(), "options {options:#x}");
    }
}

fn arb_string() -> impl Strategy<Value = bytestring::ByteString> {
    "[a-z/]{0,12}".prop_map(Into::into)
}

fn arb_properties() -> impl Strategy<Value = Option<Box<Properties>>> {
    proptest::option::of(
        (
            proptest::option::of(0u8..=1),
            proptest::option::of(any::<u32>()),
            proptest::option::of(arb_string()),
            proptest::option::of("[a-z]{1,8}".prop_map(bytestring::ByteString::from)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(1u32..=268_435_455, 0..3),
            proptest::collection::vec((arb_string(), arb_string()), 0..3),
        )
            .prop_map(|(pfi, expiry, ct, rt, cd, ids, user)| {
                Box::new(Properties {
                    payload_format_indicator: pfi,
                    message_expiry_interval: expiry,
                    content_type: ct,
                    response_topic: rt,
                    correlation_data: cd.map(Bytes::from),
                    subscription_identifiers: ids,
                    user_properties: user,
                    ..Default::default()
                })
            }),
    )
}

proptest! {
    #[test]
    fn any_publish_round_trips(
        topic in "[a-z]{1,8}(/[a-z]{1,8}){0,3}",
        qos in 0u8..=2,
        retain in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        properties in arb_properties(),
    ) {
        let qos = QoS::from_bits(qos).unwrap();
        // An empty property block is no block: it decodes as `None`.
        let properties = properties.filter(|p| !p.is_empty());
        let p = Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid: if qos == QoS::AtMostOnce { 0 } else { 77 },
            payload: payload.into(),
            properties,
        });
        let mut buf = encoded(&p);
        let Packet::Publish(publish) = &p else { unreachable!() };
        prop_assert_eq!(buf.len(), publish_len(V5, &PublishRef::of(publish)));
        prop_assert_eq!(decode(&mut buf, V5, MAX).unwrap(), Some(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_v5_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, V5, 1024);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_connect(&mut buf, 1024);
    }
}
