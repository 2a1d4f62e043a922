//! Events: handled in order, each handler seeing only its subscription, acked even when a
//! handler fails or the kind is unknown, and carrying the broker's trace context.

use tandem_plugin::proto::v1 as pb;
use tandem_plugin::serde_json::json;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::{
    Client, ClientConnected, Event, EventData, EventKind, EventSubscription, Plugin,
};

use crate::fixtures::{Recorder, message};

#[tokio::test]
async fn events_are_handled_in_order_filtered_and_acked() {
    let connections = Recorder::default();
    let sensors = Recorder::default();
    let broker = TestBroker::new(
        Plugin::new("audit", "1")
            .events(
                EventSubscription::new([EventKind::ClientConnected, EventKind::ClientDisconnected]),
                connections.clone(),
            )
            .events(
                EventSubscription::new([EventKind::MessageReceived]).topics(["sensors/#"]),
                sensors.clone(),
            ),
    );
    broker.describe(json!({})).await.unwrap();
    let mut stream = broker.open_events().await.unwrap();

    let client = Client::new("c1");
    let batch = vec![
        Event::new(0, EventData::ClientConnected(ClientConnected::default()))
            .with_client(client.clone()),
        Event::new(0, message("sensors/1/temp")).with_client(client.clone()),
        Event::new(0, message("other/topic")).with_client(client.clone()),
        Event::new(0, message("sensors/2/temp")).with_client(client.clone()),
    ];
    assert_eq!(stream.send(batch).await.unwrap(), 4);
    assert_eq!(connections.seen(), [(1, EventKind::ClientConnected)]);
    assert_eq!(
        sensors.seen(),
        [
            (2, EventKind::MessageReceived),
            (4, EventKind::MessageReceived)
        ]
    );

    // A failing handler does not stall the stream: the event is acked anyway.
    let ack = stream
        .send_one(
            Some(Client::new("poison")),
            EventData::ClientConnected(ClientConnected::default()),
        )
        .await
        .unwrap();
    assert_eq!(ack, 5);

    // After a reconnect the broker resends unacked events with their sequence: the handler
    // sees it, so it can drop what it already handled.
    let resent = Event::new(4, message("sensors/2/temp"));
    let mut again = broker.open_events().await.unwrap();
    assert_eq!(again.send(vec![resent]).await.unwrap(), 4);
    assert_eq!(
        sensors.seen().last(),
        Some(&(4, EventKind::MessageReceived))
    );
}

#[tokio::test]
async fn unknown_event_kinds_are_acked_and_traces_continue() {
    let recorder = Recorder::default();
    let broker = TestBroker::new(
        Plugin::new("audit", "1").events(EventSubscription::new(EventKind::ALL), recorder.clone()),
    );
    let mut stream = broker.open_events().await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut known = pb::Event::from(Event::new(7, EventData::BrokerPostShutdown));
    known.traceparent = traceparent.into();
    let unknown = pb::Event {
        sequence: 8,
        kind: None,
        ..Default::default()
    };
    let ack = stream
        .send_raw(pb::EventBatch {
            events: vec![known, unknown],
            dropped_events: 3,
        })
        .await
        .unwrap();
    assert_eq!(ack, 8);
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            7,
            EventKind::BrokerPostShutdown,
            Some(traceparent.to_owned())
        )]
    );
}

#[tokio::test]
async fn send_events_numbers_from_one() {
    let recorder = Recorder::default();
    let broker = TestBroker::new(Plugin::new("audit", "1").events(
        EventSubscription::new([EventKind::BrokerPreStart]),
        recorder.clone(),
    ));
    let events = vec![
        Event::new(
            0,
            EventData::BrokerPreStart {
                broker_version: "1".into(),
            },
        ),
        Event::new(0, EventData::BrokerPostShutdown), // not subscribed: acked, not handled
    ];
    assert_eq!(broker.send_events(events).await.unwrap(), 2);
    assert_eq!(recorder.seen(), [(1, EventKind::BrokerPreStart)]);
}
