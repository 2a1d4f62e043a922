//! MQTT 5 enhanced authentication end to end: the real broker drives a SCRAM-SHA-256
//! exchange (RFC 5802/7677) that the real `tandem-auth-file` plugin leads, against a
//! SCRAM client written apart from the plugin (`tandem_tests::scram`, on ring). Checked:
//! the right password is let in and the server proves itself in the CONNACK; a wrong
//! one, an unknown user and a user without SCRAM credentials all get the same 0x86;
//! re-authentication on a live connection (AUTH 0x19) works, and a failed one ends
//! the connection with DISCONNECT; a method no plugin knows gets 0x8C; and what a
//! hostile client sends in the middle of an exchange (another method, a PUBLISH, no
//! answer at all) is refused without letting it in.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tandem_broker::protocol::{
    Auth, ConnectReason, Packet, Properties, Publish, QoS, SubscribeReason,
};
use tandem_tests::passwd::argon2id;
use tandem_tests::scram::{METHOD, ScramClient, password_file_line};
use tandem_tests::{DEADLINE, RawClient, Recv, Tandem, binary, connect_as, connect_packet_v5};

fn config(dir: &Path, mqtt: &str) -> String {
    format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
{mqtt}plugins:
  file:
    endpoint: unix://{d}/auth.sock
    command: [{bin}]
    timeout: 5s
    config:
      password_file: {d}/passwd
auth:
  plugins: [file]
"#,
        d = dir.display(),
        bin = binary("tandem-auth-file").display(),
    )
}

/// A password file with `alice` (SCRAM credentials) and `bob` (an ordinary hash: no
/// SCRAM), and a broker using it.
fn start(dir: &Path, mqtt: &str) -> Tandem {
    let argon = argon2_line("bob", "bob-pw");
    let scram = password_file_line("alice", "pencil", b"0123456789abcdef", 4096);
    let carol = password_file_line("carol", "crayon", b"fedcba9876543210", 4096);
    std::fs::write(dir.join("passwd"), format!("{scram}\n{argon}\n{carol}\n")).unwrap();
    Tandem::start_config(&config(dir, mqtt))
}

/// An argon2id line (cheap parameters): a user the file knows, without SCRAM keys.
fn argon2_line(user: &str, password: &str) -> String {
    format!(
        "{user}:{}",
        argon2id(password, b"saltsaltsaltsalt", 1024, 1)
    )
}

fn auth_props(method: &str, data: Vec<u8>) -> Properties {
    Properties {
        authentication_method: Some(method.into()),
        authentication_data: Some(Bytes::from(data)),
        ..Properties::default()
    }
}

fn auth(reason: u8, method: &str, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Some(Box::new(auth_props(method, data))),
    })
}

/// The data of the AUTH 0x18 the broker sends, with its method checked.
async fn challenge(c: &mut RawClient) -> Vec<u8> {
    match c.recv().await {
        Packet::Auth(a) => {
            assert_eq!(a.reason, Auth::CONTINUE);
            let p = a.properties.expect("AUTH properties");
            assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
            p.authentication_data.expect("server-first").to_vec()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// Opens a connection that starts a SCRAM exchange as `user`/`password`, and answers
/// the server's challenge; returns the client and its SCRAM state.
async fn scram_connect(
    broker: &Tandem,
    id: &str,
    user: &str,
    password: &str,
) -> (RawClient, ScramClient) {
    let mut scram = ScramClient::new(user, password);
    let connect = connect_packet_v5(id, true, auth_props(METHOD, scram.client_first()));
    let mut c = RawClient::open(broker.addr, connect).await;
    let server_first = challenge(&mut c).await;
    let client_final = scram
        .client_final(&server_first)
        .expect("a well-formed server-first");
    c.send(&auth(Auth::CONTINUE, METHOD, client_final)).await;
    (c, scram)
}

async fn connack(c: &mut RawClient) -> tandem_broker::protocol::ConnAck {
    match c.recv().await {
        Packet::ConnAck(ack) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_scram_exchange_lets_the_right_password_in_and_the_server_proves_itself() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let (mut c, scram) = scram_connect(&broker, "s1", "alice", "pencil").await;
    let ack = connack(&mut c).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
    scram
        .verify_server_final(&p.authentication_data.expect("server-final"))
        .expect("the server knows alice's keys");
    // Let in as alice: it may work as any client.
    let sub = c.subscribe("s/1", QoS::AtLeastOnce).await;
    assert_eq!(
        sub.reasons,
        vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
    );

    // The same entry verifies a plain CONNECT password (3.1.1 clients).
    assert!(
        connect_as(broker.addr, "plain", "alice", "pencil")
            .await
            .is_ok()
    );
    assert_eq!(
        connect_as(broker.addr, "plain2", "alice", "pen")
            .await
            .err(),
        Some(ConnectReason::BadUserNameOrPassword)
    );
    c.disconnect().await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_no_scram_entry_are_refused_alike() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let mut answers = Vec::new();
    for (id, user, password) in [
        ("w1", "alice", "wrong"),
        ("w2", "nobody", "pencil"),
        ("w3", "bob", "bob-pw"),
    ] {
        let (mut c, _) = scram_connect(&broker, id, user, password).await;
        let ack = connack(&mut c).await;
        assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword, "{user}");
        c.expect_closed().await;
        answers.push(ack.properties);
    }
    // No Reason String tells them apart.
    assert!(answers.iter().all(|p| p == &answers[0]), "{answers:?}");
    // The broker's log says why, per plugin.
    for why in ["wrong password", "unknown user"] {
        assert!(
            broker.wait_log(why, DEADLINE).is_some(),
            "no log line with {why:?}"
        );
    }
}

#[tokio::test]
async fn re_authentication_on_a_live_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "");
    let (mut c, _) = scram_connect(&broker, "r1", "alice", "pencil").await;
    assert_eq!(connack(&mut c).await.reason, ConnectReason::Success);

    // AUTH 0x19 starts a new exchange; the broker answers 0x18, then 0x00.
    let mut again = ScramClient::new("alice", "pencil");
    c.send(&auth(Auth::REAUTHENTICATE, METHOD, again.client_first()))
        .await;
    let server_first = challenge(&mut c).await;
    c.send(&auth(
        Auth::CONTINUE,
        METHOD,
        again.client_final(&server_first).unwrap(),
    ))
    .await;
    match c.recv().await {
        Packet::Auth(a) => {
            assert_eq!(a.reason, Auth::SUCCESS);
            let p = a.properties.expect("AUTH properties");
            again
                .verify_server_final(&p.authentication_data.expect("server-final"))
                .expect("server proves itself again");
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    // Still served.
    c.ping().await;

    // A re-authentication that fails ends the connection with DISCONNECT 0x87 (0x86
    // is no DISCONNECT code).
    let mut wrong = ScramClient::new("alice", "not-pencil");
    c.send(&auth(Auth::REAUTHENTICATE, METHOD, wrong.client_first()))
        .await;
    let server_first = challenge(&mut c).await;
    c.send(&auth(
        Auth::CONTINUE,
        METHOD,
        wrong.client_final(&server_first).unwrap(),
    ))
    .await;
    match c.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x87),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    c.expect_closed().await;
}

#[tokio::test]
async fn an_unknown_method_and_a_broken_exchange_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "mqtt: { connect_timeout: 2s }\n");
    // No plugin knows the method: 0x8C.
    let connect = connect_packet_v5("u1", true, auth_props("KERBEROS", b"x".to_vec()));
    let (_c, ack) = RawClient::connect_with(broker.addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::BadAuthenticationMethod);

    // Another method in the middle of the exchange: protocol error, not let in.
    let scram = ScramClient::new("alice", "pencil");
    let connect = connect_packet_v5("u2", true, auth_props(METHOD, scram.client_first()));
    let mut c = RawClient::open(broker.addr, connect).await;
    challenge(&mut c).await;
    c.send(&auth(Auth::CONTINUE, "PLAIN", b"alice\0pencil".to_vec()))
        .await;
    assert_eq!(connack(&mut c).await.reason, ConnectReason::ProtocolError);
    c.expect_closed().await;

    // A PUBLISH instead of the answer: protocol error, and the message goes nowhere.
    let mut watcher = {
        let (mut w, _) = scram_connect(&broker, "watch", "alice", "pencil").await;
        assert_eq!(connack(&mut w).await.reason, ConnectReason::Success);
        w.subscribe("sneak/#", QoS::AtLeastOnce).await;
        w
    };
    let scram = ScramClient::new("alice", "pencil");
    let connect = connect_packet_v5("u3", true, auth_props(METHOD, scram.client_first()));
    let mut c = RawClient::open(broker.addr, connect).await;
    challenge(&mut c).await;
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sneak/in".into(),
        pkid: 1,
        payload: Bytes::from_static(b"x"),
        properties: None,
    }))
    .await;
    assert_eq!(connack(&mut c).await.reason, ConnectReason::ProtocolError);
    c.expect_closed().await;

    // A client that never answers the challenge is closed at connect_timeout (2 s).
    let scram = ScramClient::new("alice", "pencil");
    let connect = connect_packet_v5("u4", true, auth_props(METHOD, scram.client_first()));
    let mut c = RawClient::open(broker.addr, connect).await;
    challenge(&mut c).await;
    let asked = Instant::now();
    match c.recv_within(Duration::from_secs(10)).await {
        Recv::Closed => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );

    // The marker: the watcher gets it, and nothing from the sneaked PUBLISH before it.
    let mut marker = RawClient::connect_with(
        broker.addr,
        tandem_tests::connect_packet_as("m", true, "alice", "pencil"),
    )
    .await
    .0;
    marker
        .publish("sneak/marker", b"end", QoS::AtLeastOnce, false)
        .await;
    let first = watcher.recv_publish().await;
    assert_eq!(
        &*first.topic, "sneak/marker",
        "nothing sneaked in before the marker"
    );
}

#[tokio::test]
async fn re_authenticating_as_another_user_or_with_a_huge_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), "mqtt: { max_connect_packet_size: 4096 }\n");
    // alice, connected, re-authenticates with carol's valid credentials: the session is
    // alice's, so the connection ends (DISCONNECT 0x87), logged.
    let (mut c, _) = scram_connect(&broker, "x1", "alice", "pencil").await;
    assert_eq!(connack(&mut c).await.reason, ConnectReason::Success);
    let mut carol = ScramClient::new("carol", "crayon");
    c.send(&auth(Auth::REAUTHENTICATE, METHOD, carol.client_first()))
        .await;
    let server_first = challenge(&mut c).await;
    c.send(&auth(
        Auth::CONTINUE,
        METHOD,
        carol.client_final(&server_first).unwrap(),
    ))
    .await;
    match c.recv().await {
        Packet::Disconnect(d) => assert_eq!(d.reason, 0x87),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    c.expect_closed().await;
    broker
        .wait_log("it proved another identity", DEADLINE)
        .expect("the refusal is logged");

    // An AUTH answer larger than mqtt.max_connect_packet_size before CONNACK: refused with
    // 0x95 as soon as its header says so, never buffered.
    let scram = ScramClient::new("alice", "pencil");
    let connect = connect_packet_v5("x2", true, auth_props(METHOD, scram.client_first()));
    let mut c = RawClient::open(broker.addr, connect).await;
    challenge(&mut c).await;
    c.send(&auth(Auth::CONTINUE, METHOD, vec![b'x'; 64 * 1024]))
        .await;
    assert_eq!(connack(&mut c).await.reason, ConnectReason::PacketTooLarge);
    c.expect_closed().await;
}
