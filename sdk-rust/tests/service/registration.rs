//! What a plugin declares in `Describe` is exactly what was registered, and what was not
//! registered answers `UNIMPLEMENTED`.

use tandem_plugin::serde_json::json;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::tonic::Code;
use tandem_plugin::{
    Action, AuthRequest, Client, EventKind, EventSubscription, Plugin, Role, TopicRequest,
};

use crate::fixtures::{NoAdmin, Recorder, UserList};

#[tokio::test]
async fn describe_declares_exactly_what_was_registered() {
    let broker = TestBroker::new(
        Plugin::new("everything", "2.0")
            .authenticate(UserList)
            .topic_filter(NoAdmin)
            .events(
                EventSubscription::new([EventKind::MessageReceived])
                    .topics(["b/#", "a/+"])
                    .with_payloads(),
                Recorder::default(),
            )
            .events(
                EventSubscription::new([EventKind::ClientConnected, EventKind::MessageReceived])
                    .topics(["a/+"]),
                Recorder::default(),
            ),
    );
    let d = broker.describe(json!({"users": []})).await.unwrap();
    assert_eq!(d.name, "everything");
    assert_eq!(d.version, "2.0");
    assert_eq!(d.roles, [Role::Authenticate, Role::TopicFilter]);
    assert_eq!(
        d.event_kinds,
        [EventKind::ClientConnected, EventKind::MessageReceived]
    );
    assert_eq!(d.message_topic_filters, ["a/+", "b/#"]);
    assert!(d.want_message_payloads);
    assert!(!d.want_raw_packets);

    let events_only = TestBroker::new(Plugin::new("events", "1").events(
        EventSubscription::new([EventKind::MessageBroadcast]),
        Recorder::default(),
    ));
    let d = events_only.describe(json!({})).await.unwrap();
    assert!(d.roles.is_empty());
    assert!(
        d.message_topic_filters.is_empty(),
        "no topics means every topic"
    );
}

#[tokio::test]
async fn a_topic_only_plugin_answers_unimplemented_to_the_rest() {
    let broker = TestBroker::new(Plugin::new("acl", "1").topic_filter(NoAdmin));
    assert_eq!(
        broker.describe(json!({})).await.unwrap().roles,
        [Role::TopicFilter]
    );

    let status = broker
        .authenticate(AuthRequest::new("c"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = broker.open_events().await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);

    let auth_only = TestBroker::new(Plugin::new("auth", "1").authenticate(UserList));
    let request = TopicRequest::new(Action::Subscribe, "a", Client::new("c"));
    assert_eq!(
        auth_only.topic_filter(request).await.unwrap_err().code(),
        Code::Unimplemented
    );
}
