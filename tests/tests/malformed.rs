//! Malformed and hostile input: each case closes only its own connection, with a
//! logged reason, while another client carries on undisturbed.

use tandem_broker::protocol::QoS;
use tandem_tests::{RawClient, Recv, Tandem};

/// CONNECT "MQTT" 4, clean session, keepalive 60, client id "m".
const CONNECT: &[u8] = &[
    0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'm',
];

struct Case {
    name: &'static str,
    /// Sent right after TCP connect (no CONNECT) if `before_connect`, else after a
    /// successful CONNECT.
    before_connect: bool,
    bytes: Vec<u8>,
    /// Text the broker's log must contain for this case.
    logged: &'static str,
}

fn cases() -> Vec<Case> {
    let connect_with = |name: &[u8], level: u8| {
        let mut v = vec![0x10, (10 + name.len() + 3 - 4) as u8 + 2];
        v.extend_from_slice(&(name.len() as u16).to_be_bytes());
        v.extend_from_slice(name);
        v.extend_from_slice(&[level, 0x02, 0, 60, 0, 1, b'm']);
        v[1] = (v.len() - 2) as u8;
        v
    };
    vec![
        Case {
            name: "bad remaining length (five bytes)",
            before_connect: false,
            bytes: vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            logged: "malformed remaining length",
        },
        Case {
            name: "reserved flag bits",
            before_connect: false,
            bytes: vec![0x60, 0x02, 0x00, 0x01],
            logged: "reserved flag bits",
        },
        Case {
            name: "wrong protocol name",
            before_connect: true,
            bytes: connect_with(b"MQXX", 4),
            logged: "unsupported protocol name",
        },
        Case {
            name: "wildcard in PUBLISH topic",
            before_connect: false,
            bytes: vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
            logged: "wildcard in topic name",
        },
        Case {
            name: "invalid UTF-8 topic",
            before_connect: false,
            bytes: vec![0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x'],
            logged: "invalid UTF-8",
        },
        Case {
            name: "oversized packet",
            before_connect: false,
            bytes: vec![0x30, 0xFF, 0xFF, 0x7F],
            logged: "exceeds the maximum packet size",
        },
        Case {
            name: "truncated packet fields",
            before_connect: false,
            bytes: vec![0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            logged: "malformed SUBSCRIBE",
        },
        Case {
            name: "packet before CONNECT",
            before_connect: true,
            bytes: vec![0x30, 0x03, 0x00, 0x01, b'a'],
            logged: "unexpected PUBLISH packet",
        },
        Case {
            name: "second CONNECT",
            before_connect: false,
            bytes: CONNECT.to_vec(),
            logged: "unexpected CONNECT packet",
        },
        Case {
            name: "packet type 0",
            before_connect: false,
            bytes: vec![0x00, 0x00],
            logged: "invalid packet type 0",
        },
        Case {
            name: "server-to-client packet from a client",
            before_connect: false,
            bytes: vec![0x90, 0x03, 0x00, 0x01, 0x00],
            logged: "unexpected SUBACK packet",
        },
    ]
}

#[tokio::test]
async fn each_malformed_input_closes_only_its_own_connection() {
    let broker = Tandem::start("mqtt:\n  max_packet_size: 65536\nsys:\n  interval: 1s\n");
    let mut bystander = RawClient::connect(broker.addr, "bystander").await;
    bystander.subscribe("still/here", QoS::AtLeastOnce).await;
    let mut publisher = RawClient::connect(broker.addr, "publisher").await;

    for (i, case) in cases().into_iter().enumerate() {
        let mut c = RawClient::tcp(broker.addr).await;
        if !case.before_connect {
            c.send_raw(CONNECT).await;
            match c.recv().await {
                tandem_broker::protocol::Packet::ConnAck(a) => {
                    assert_eq!(a.reason.v4_code(), 0, "{}", case.name)
                }
                other => panic!("{}: expected CONNACK, got {other:?}", case.name),
            }
        }
        c.send_raw(&case.bytes).await;
        c.expect_closed().await;
        assert!(
            broker
                .wait_log(case.logged, tandem_tests::DEADLINE)
                .is_some(),
            "{}: no log line containing {:?}",
            case.name,
            case.logged
        );
        // Everyone else carries on.
        let payload = format!("after case {i}");
        publisher
            .publish("still/here", payload.as_bytes(), QoS::AtLeastOnce, false)
            .await;
        let m = bystander.recv_publish().await;
        assert_eq!(m.payload, payload.as_bytes(), "{}", case.name);
        bystander.ack(&m).await;
    }
    // Each case was counted.
    let cases = cases().len();
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    let counted =
        tandem_tests::wait_sys(&mut sys, "$SYS/broker/connections/protocol_errors", |v| {
            v.parse::<usize>().is_ok_and(|n| n >= cases)
        })
        .await;
    assert_eq!(counted.parse::<usize>().unwrap(), cases);
}

#[tokio::test]
async fn a_truncated_packet_then_eof_just_closes() {
    let broker = Tandem::start("");
    let mut c = RawClient::tcp(broker.addr).await;
    c.send_raw(CONNECT).await;
    match c.recv().await {
        tandem_broker::protocol::Packet::ConnAck(a) => assert_eq!(a.reason.v4_code(), 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Announce 10 bytes, send 3, hang up (our side only: we still read what comes).
    c.send_raw(&[0x30, 0x0A, 0x00, 0x01, b'a']).await;
    c.shutdown_write().await;
    // The broker closes its side too, without sending anything first; a broker that
    // kept waiting for the other 7 bytes fails here after the deadline.
    match c.recv_within(tandem_tests::DEADLINE).await {
        Recv::Closed => {}
        other => panic!("expected the broker to close the connection, got {other:?}"),
    }
    // The session ended and the broker serves everyone else; the truncated PUBLISH
    // was not routed (a subscriber to its topic gets only a later marker).
    let mut other = RawClient::connect(broker.addr, "m").await;
    other.subscribe("a", QoS::AtMostOnce).await;
    other.ping().await;
    let mut p = RawClient::connect(broker.addr, "p").await;
    other.expect_nothing_before_marker(&mut p, "a", false).await;
}
