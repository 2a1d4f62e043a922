//! Packets a client pipelines behind its CONNECT, in the same write (MQTT 3.1.1 section
//! 3.1.4 lets it send them before CONNACK): served in order once the auth chain allows
//! the client, with no auth chain, with an allowing Authenticate plugin, and never when
//! the plugin refuses the client.

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{
    self, ConnectReason, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReason, SubscriptionOptions,
};
use tandem_tests::{RawClient, Tandem, connect_packet, policy_bin};

/// CONNECT (as `user`/`password` when given), then a QoS 1 PUBLISH to `topic` and a
/// SUBSCRIBE to `topic`, encoded back to back for one write.
fn pipelined(client_id: &str, login: Option<(&str, &str)>, topic: &str) -> BytesMut {
    let mut connect = connect_packet(client_id, true, 0);
    if let Some((user, password)) = login {
        connect.username = Some(user.into());
        connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    }
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid: 7,
        payload: Bytes::from_static(b"pipelined"),
        properties: None,
    };
    let subscribe = Subscribe {
        pkid: 8,
        filters: vec![SubscribeFilter {
            filter: topic.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        }],
        properties: None,
    };
    let mut out = BytesMut::new();
    for packet in [
        Packet::Connect(Box::new(connect)),
        Packet::Publish(publish),
        Packet::Subscribe(subscribe),
    ] {
        protocol::encode(&packet, ProtocolVersion::V3_1_1, &mut out);
    }
    out
}

/// Sends the pipelined bytes in one write and checks CONNACK, PUBACK 7 and SUBACK 8
/// come back in that order; `watcher` (subscribed to `topic` beforehand) must receive
/// the pipelined message.
async fn served_in_order(
    broker: &Tandem,
    login: Option<(&str, &str)>,
    watcher: &mut RawClient,
    topic: &str,
) {
    let mut client = RawClient::tcp(broker.addr).await;
    client.send_raw(&pipelined("piper", login, topic)).await;
    match client.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ConnectReason::Success),
        other => panic!("expected CONNACK first, got {other:?}"),
    }
    match client.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.pkid, 7),
        other => panic!("expected PUBACK 7 second, got {other:?}"),
    }
    match client.recv().await {
        Packet::SubAck(ack) => {
            assert_eq!(ack.pkid, 8);
            assert_eq!(
                ack.reasons,
                vec![SubscribeReason::Granted(QoS::AtLeastOnce)]
            );
        }
        other => panic!("expected SUBACK 8 third, got {other:?}"),
    }
    let routed = watcher.recv_publish().await;
    assert_eq!(&routed.topic[..], topic);
    assert_eq!(&routed.payload[..], b"pipelined");
    // The subscription made by the pipelined SUBSCRIBE works too.
    watcher
        .publish(topic, b"after", QoS::AtLeastOnce, false)
        .await;
    let p = client.recv_publish().await;
    assert_eq!(&p.payload[..], b"after");
}

#[tokio::test]
async fn packets_pipelined_behind_connect_are_served_in_order() {
    let broker = Tandem::start("");
    let mut watcher = RawClient::connect(broker.addr, "watcher").await;
    watcher.subscribe("pipe/t", QoS::AtLeastOnce).await;
    served_in_order(&broker, None, &mut watcher, "pipe/t").await;
}

/// The policy plugin as the auth chain, answering after `delay_ms`, so that packets
/// pipelined behind a CONNECT arrive while the client is being authenticated.
fn policy_config(dir: &std::path::Path, delay_ms: u64, mqtt: &str) -> String {
    let bin = policy_bin();
    format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
{mqtt}
plugins:
  users:
    endpoint: unix://{d}/users.sock
    command: [{bin}, --roles, auth]
    timeout: 5s
    config:
      delay_ms: {delay_ms}
      users:
        alice: {{ password: right }}
        watcher: {{ password: w }}
auth:
  plugins: [users]
"##,
        d = dir.display(),
        bin = bin.display(),
    )
}

#[tokio::test]
async fn pipelined_packets_wait_for_an_allowing_auth_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&policy_config(dir.path(), 300, ""));
    let mut watcher = tandem_tests::connect_as(broker.addr, "watcher", "watcher", "w")
        .await
        .expect("watcher allowed");
    watcher.subscribe("pipe/auth", QoS::AtLeastOnce).await;
    served_in_order(&broker, Some(("alice", "right")), &mut watcher, "pipe/auth").await;
}

#[tokio::test]
async fn nothing_pipelined_is_served_when_the_auth_plugin_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&policy_config(dir.path(), 300, ""));
    let mut watcher = tandem_tests::connect_as(broker.addr, "watcher", "watcher", "w")
        .await
        .expect("watcher allowed");
    watcher.subscribe("pipe/denied", QoS::AtLeastOnce).await;

    let mut client = RawClient::tcp(broker.addr).await;
    client
        .send_raw(&pipelined(
            "intruder",
            Some(("alice", "wrong")),
            "pipe/denied",
        ))
        .await;
    match client.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword),
        other => panic!("expected CONNACK first, got {other:?}"),
    }
    // Nothing after the refusing CONNACK: the connection closes, no PUBACK, no SUBACK.
    match client.recv_within(tandem_tests::DEADLINE).await {
        tandem_tests::Recv::Closed => {}
        other => panic!("expected the connection closed after the refusal, got {other:?}"),
    }
    // The refused client's message was not routed: a marker published after it is the
    // first thing the watcher sees.
    watcher
        .publish("pipe/denied", b"marker", QoS::AtLeastOnce, false)
        .await;
    let first = watcher.recv_publish().await;
    assert_eq!(
        &first.payload[..],
        b"marker",
        "the refused client's message was routed"
    );
}

#[tokio::test]
async fn more_than_the_handshake_buffer_pipelined_is_served_not_lost() {
    // The broker buffers at most 1 KiB before the client is authenticated; the client
    // pipelines about 12 KiB of QoS 1 PUBLISHes behind its CONNECT while the plugin takes
    // 300 ms to answer. The rest waits in the socket (backpressure), none is lost.
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&policy_config(
        dir.path(),
        300,
        "mqtt: { max_connect_packet_size: 1024 }",
    ));
    let mut connect = connect_packet("burst", true, 0);
    connect.username = Some("alice".into());
    connect.password = Some(Bytes::from_static(b"right"));
    let mut out = BytesMut::new();
    protocol::encode(
        &Packet::Connect(Box::new(connect)),
        ProtocolVersion::V3_1_1,
        &mut out,
    );
    for pkid in 1..=100u16 {
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "burst/t".into(),
            pkid,
            payload: Bytes::from(vec![b'x'; 100]),
            properties: None,
        };
        protocol::encode(&Packet::Publish(publish), ProtocolVersion::V3_1_1, &mut out);
    }
    protocol::encode(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut out);
    assert!(out.len() > 10 * 1024);
    let mut client = RawClient::tcp(broker.addr).await;
    client.send_raw(&out).await;
    match client.recv().await {
        Packet::ConnAck(ack) => assert_eq!(ack.reason, ConnectReason::Success),
        other => panic!("expected CONNACK first, got {other:?}"),
    }
    for pkid in 1..=100u16 {
        match client.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.pkid, pkid, "PUBACKs out of order"),
            other => panic!("expected PUBACK {pkid}, got {other:?}"),
        }
    }
    assert!(matches!(client.recv().await, Packet::PingResp));
}
