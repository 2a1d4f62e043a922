//! QoS 0, 1 and 2 in both directions, downgrade, inflight window and redelivery.

use std::time::Duration;

use tandem_broker::protocol::{ConnectReason, Packet, PubAck, QoS, SubscribeReason};
use tandem_tests::{RawClient, Tandem, connect_packet};

#[tokio::test]
async fn every_qos_pair_delivers_at_the_minimum() {
    let broker = Tandem::start("");
    let all = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for sub_qos in all {
        let mut sub = RawClient::connect(broker.addr, "sub").await;
        let ack = sub.subscribe("q/t", sub_qos).await;
        assert_eq!(ack.reasons, vec![SubscribeReason::Granted(sub_qos)]);
        let mut publisher = RawClient::connect(broker.addr, "pub").await;
        for pub_qos in all {
            let payload = format!("{pub_qos:?}->{sub_qos:?}");
            publisher
                .publish("q/t", payload.as_bytes(), pub_qos, false)
                .await;
            let got = sub.recv_publish().await;
            assert_eq!(got.payload, payload.as_bytes());
            assert_eq!(got.qos, pub_qos.min(sub_qos), "{payload}");
            assert!(!got.retain && !got.dup);
            if got.qos != QoS::AtMostOnce {
                assert_ne!(got.pkid, 0);
            }
            sub.ack(&got).await;
        }
        sub.disconnect().await;
        publisher.disconnect().await;
    }
}

#[tokio::test]
async fn a_redelivered_qos2_publish_is_routed_once() {
    let broker = Tandem::start("");
    let mut sub = RawClient::connect(broker.addr, "sub").await;
    sub.subscribe("q2/#", QoS::AtMostOnce).await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    let publish = tandem_broker::protocol::Publish {
        dup: false,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "q2/x".into(),
        pkid: 7,
        payload: "once".into(),
        properties: None,
    };
    p.send(&Packet::Publish(publish.clone())).await;
    assert!(matches!(p.recv().await, Packet::PubRec(r) if r.pkid == 7));
    // The client did not see PUBREC (as far as it knows) and sends again with DUP.
    p.send(&Packet::Publish(tandem_broker::protocol::Publish {
        dup: true,
        ..publish
    }))
    .await;
    assert!(matches!(p.recv().await, Packet::PubRec(r) if r.pkid == 7));
    p.send(&Packet::PubRel(tandem_broker::protocol::PubRel::new(7)))
        .await;
    assert!(matches!(p.recv().await, Packet::PubComp(r) if r.pkid == 7));
    assert_eq!(&sub.recv_publish().await.payload[..], b"once");
    // Not twice: the next is a marker published after the DUP and the PUBREL.
    sub.expect_nothing_before_marker(&mut p, "q2/marker", false)
        .await;
}

#[tokio::test]
async fn the_inflight_window_holds_messages_until_acked() {
    let broker = Tandem::start("mqtt:\n  max_inflight: 2\n");
    let mut sub = RawClient::connect(broker.addr, "sub").await;
    sub.subscribe("w", QoS::AtLeastOnce).await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    for i in 0..4u8 {
        p.publish("w", &[i], QoS::AtLeastOnce, false).await;
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&[0u8][..], &[1u8][..])
    );
    // Window of 2 is full: nothing more until an ack. All four were queued for sub
    // before it read anything (their PUBACKs came first), so without the window 2 and
    // 3 would be written right behind 1: the PINGRESP coming first shows they were held.
    sub.ping().await;
    sub.send(&Packet::PubAck(PubAck::new(first.pkid))).await;
    assert_eq!(&sub.recv_publish().await.payload[..], &[2u8]);
    sub.ping().await;
    sub.send(&Packet::PubAck(PubAck::new(second.pkid))).await;
    assert_eq!(&sub.recv_publish().await.payload[..], &[3u8]);
}

#[tokio::test]
async fn unacked_messages_are_resent_with_dup_on_reconnect() {
    let broker = Tandem::start("");
    let (mut sub, ack) =
        RawClient::connect_with(broker.addr, connect_packet("durable", false, 0)).await;
    assert_eq!(ack.reason, ConnectReason::Success);
    sub.subscribe("r/1", QoS::ExactlyOnce).await;
    sub.subscribe("r/2", QoS::ExactlyOnce).await;
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("r/1", b"one", QoS::AtLeastOnce, false).await;
    p.publish("r/2", b"two", QoS::ExactlyOnce, false).await;
    let one = sub.recv_publish().await;
    let two = sub.recv_publish().await;
    assert!(!one.dup && !two.dup);
    // Acknowledge the QoS 2 message half way (PUBREC), then drop the connection.
    sub.send(&Packet::PubRec(tandem_broker::protocol::PubRec::new(
        two.pkid,
    )))
    .await;
    assert!(matches!(sub.recv().await, Packet::PubRel(r) if r.pkid == two.pkid));
    drop(sub);

    let (mut again, ack) =
        RawClient::connect_with(broker.addr, connect_packet("durable", false, 0)).await;
    assert!(ack.session_present);
    let resent = again.recv_publish().await;
    assert!(resent.dup, "resent with DUP");
    assert_eq!((resent.pkid, &resent.payload[..]), (one.pkid, &b"one"[..]));
    match again.recv().await {
        Packet::PubRel(r) => assert_eq!(r.pkid, two.pkid),
        other => panic!("expected PUBREL resent, got {other:?}"),
    }
}

#[tokio::test]
async fn rumqttc_client_round_trips_all_qos() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as RPacket};
    let broker = Tandem::start("");
    let mut opts = MqttOptions::new("rumqttc", "127.0.0.1", broker.addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe("crate/#", rumqttc::QoS::ExactlyOnce)
        .await
        .unwrap();
    for (i, qos) in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        client
            .publish(format!("crate/{i}"), qos, false, vec![i as u8])
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + tandem_tests::DEADLINE;
    while got.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("messages in time")
            .expect("event loop ok");
        if let Event::Incoming(RPacket::Publish(p)) = ev {
            got.push((p.topic.clone(), p.qos as u8, p.payload.to_vec()));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("crate/0".into(), 0, vec![0]),
            ("crate/1".into(), 1, vec![1]),
            ("crate/2".into(), 2, vec![2]),
        ]
    );
}
