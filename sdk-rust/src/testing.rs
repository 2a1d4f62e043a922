//! Drive a plugin in-process exactly as the broker does, without sockets.
//!
//! [`TestBroker`] holds the plugin's real gRPC service and calls it through a `tonic` client over
//! an in-memory transport: requests and answers go through the same protobuf encoding, status
//! codes and streaming as with the real broker. Use it in unit tests:
//!
//! ```
//! use tandem_plugin::testing::TestBroker;
//! use tandem_plugin::{AuthRequest, AuthDecision, Authenticator, Context, HandlerError, Plugin, Verdict};
//!
//! struct Tokens;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { token: String }
//!
//! impl Authenticator for Tokens {
//!     async fn authenticate(&self, ctx: &Context, req: AuthRequest) -> Result<AuthDecision, HandlerError> {
//!         let config = ctx.config::<Config>()?;
//!         Ok(if req.password_str() == Some(config.token.as_str()) {
//!             AuthDecision::allow()
//!         } else {
//!             AuthDecision::deny("bad token")
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let broker = TestBroker::new(Plugin::new("tokens", "1.0").authenticate(Tokens).config::<Config>());
//! broker.describe(serde_json::json!({"token": "s3cret"})).await.unwrap();
//!
//! let ok = broker.authenticate(AuthRequest::new("c1").with_password("s3cret")).await.unwrap();
//! assert_eq!(ok.verdict, Verdict::Allow);
//! let ko = broker.authenticate(AuthRequest::new("c1").with_password("guess")).await.unwrap();
//! assert_eq!(ko.verdict, Verdict::Deny);
//! # });
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use tandem_proto::v1 as pb;
use tandem_proto::v1::plugin_client::PluginClient;
use tandem_proto::v1::plugin_server::PluginServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::convert::json_to_struct;
use crate::{
    AuthDecision, AuthRequest, Client, Error, Event, EventData, EventKind, Plugin, PluginService,
    Role, TopicDecision, TopicRequest,
};

/// The broker version the harness reports in `Describe`.
pub const TEST_BROKER_VERSION: &str = "0.0.0-test";

type Channel = PluginServer<PluginService>;

/// What a plugin answered to `Describe`, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The roles it declared.
    pub roles: Vec<Role>,
    /// The event kinds it asked for.
    pub event_kinds: Vec<EventKind>,
    /// Topic filters restricting message events (empty: every topic).
    pub message_topic_filters: Vec<String>,
    /// Whether it wants message payloads.
    pub want_message_payloads: bool,
    /// Whether it wants raw packet bytes.
    pub want_raw_packets: bool,
}

impl TryFrom<pb::DescribeResponse> for Description {
    type Error = Error;
    fn try_from(r: pb::DescribeResponse) -> Result<Self, Error> {
        let roles = r
            .roles()
            .map(|role| match role {
                pb::Role::Authenticate => Ok(Role::Authenticate),
                pb::Role::TopicFilter => Ok(Role::TopicFilter),
                pb::Role::Unspecified => Err(Error::InvalidResponse {
                    field: "roles",
                    reason: "ROLE_UNSPECIFIED".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        let event_kinds = r
            .event_kinds()
            .map(|kind| {
                EventKind::try_from(kind).map_err(|_| Error::InvalidResponse {
                    field: "event_kinds",
                    reason: "EVENT_KIND_UNSPECIFIED".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Description {
            name: r.name,
            version: r.version,
            roles,
            event_kinds,
            message_topic_filters: r.message_topic_filters,
            want_message_payloads: r.want_message_payloads,
            want_raw_packets: r.want_raw_packets,
        })
    }
}

fn invalid(err: Error) -> Status {
    Status::internal(format!("the plugin broke the contract: {err}"))
}

/// A stand-in broker for tests: calls one plugin's gRPC service in-process.
#[derive(Debug)]
pub struct TestBroker {
    client: PluginClient<Channel>,
    generation: AtomicU64,
    alias: String,
}

impl TestBroker {
    /// A test broker in front of this plugin (not yet described: call [`describe`](Self::describe)
    /// first, as the broker does, when the plugin reads its configuration).
    pub fn new(plugin: Plugin) -> Self {
        TestBroker {
            client: PluginClient::new(PluginServer::new(plugin.into_service())),
            generation: AtomicU64::new(0),
            alias: "test".to_owned(),
        }
    }

    /// Sets the plugin alias sent in `Describe` (default `test`).
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = alias.into();
        self
    }

    /// Sends `Describe` with this configuration (the plugin's `config:` section, as JSON; use
    /// `serde_json::json!({})` for none). Call it again to simulate a configuration reload.
    pub async fn describe(&self, config: serde_json::Value) -> Result<Description, Status> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let request = pb::DescribeRequest {
            broker_version: TEST_BROKER_VERSION.to_owned(),
            plugin_alias: self.alias.clone(),
            config: Some(json_to_struct(config)),
            broker_instance_id: "test-broker".to_owned(),
            config_generation: generation,
        };
        let response = self.client.clone().describe(request).await?.into_inner();
        Description::try_from(response).map_err(invalid)
    }

    /// Calls `Authenticate`. A status error is what the broker would see as a plugin error (and
    /// map to the plugin's `on_error` verdict); `UNIMPLEMENTED` when the plugin has no
    /// authenticate handler.
    pub async fn authenticate(&self, request: AuthRequest) -> Result<AuthDecision, Status> {
        let response = self
            .client
            .clone()
            .authenticate(pb::AuthenticateRequest::from(request))
            .await?;
        AuthDecision::try_from(response.into_inner()).map_err(invalid)
    }

    /// Calls `TopicFilter`.
    pub async fn topic_filter(&self, request: TopicRequest) -> Result<TopicDecision, Status> {
        let response = self
            .client
            .clone()
            .topic_filter(pb::TopicFilterRequest::from(request))
            .await?;
        TopicDecision::try_from(response.into_inner()).map_err(invalid)
    }

    /// Opens an `Events` stream, as the broker does once per plugin connection.
    pub async fn open_events(&self) -> Result<EventStream, Status> {
        let (batches, rx) = mpsc::channel(16);
        let acks = self
            .client
            .clone()
            .events(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(EventStream {
            batches,
            acks,
            next_sequence: 1,
        })
    }

    /// Sends these events in one batch on a new stream (numbering them from 1 when their
    /// sequence is 0) and returns the ack.
    pub async fn send_events(&self, events: Vec<Event>) -> Result<u64, Status> {
        let mut stream = self.open_events().await?;
        stream.send(events).await
    }
}

/// An open `Events` stream to the plugin.
#[derive(Debug)]
pub struct EventStream {
    batches: mpsc::Sender<pb::EventBatch>,
    acks: Streaming<pb::EventAck>,
    next_sequence: u64,
}

impl EventStream {
    /// Sends one batch and waits for the plugin's ack, returning the acked sequence. Events with
    /// sequence 0 are numbered after the last one sent; others keep theirs (to test duplicates).
    pub async fn send(&mut self, events: Vec<Event>) -> Result<u64, Status> {
        let events = events
            .into_iter()
            .map(|mut event| {
                if event.sequence == 0 {
                    event.sequence = self.next_sequence;
                }
                self.next_sequence = self.next_sequence.max(event.sequence + 1);
                pb::Event::from(event)
            })
            .collect();
        let batch = pb::EventBatch {
            events,
            dropped_events: 0,
        };
        self.send_raw(batch).await
    }

    /// Sends one event about this client (or none) with the next sequence; returns the ack.
    pub async fn send_one(
        &mut self,
        client: Option<Client>,
        data: EventData,
    ) -> Result<u64, Status> {
        let mut event = Event::new(0, data);
        event.client = client;
        self.send(vec![event]).await
    }

    /// Sends a batch in wire form (for events this SDK's types cannot express, such as a kind
    /// from a newer broker) and waits for the ack.
    pub async fn send_raw(&mut self, batch: pb::EventBatch) -> Result<u64, Status> {
        self.batches
            .send(batch)
            .await
            .map_err(|_| Status::unavailable("the plugin closed the event stream"))?;
        match self.acks.message().await? {
            Some(ack) => Ok(ack.acked_sequence),
            None => Err(Status::unavailable("the plugin ended the event stream")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;
    use tonic::Code;

    use super::*;
    use crate::{
        Action, AuthDecision, Authenticator, ClientConnected, Context, EventHandler,
        EventSubscription, HandlerError, Message, MessageReceived, TopicFilter, Verdict,
    };

    #[derive(serde::Deserialize)]
    struct Users {
        users: Vec<String>,
    }

    struct UserList;

    impl Authenticator for UserList {
        async fn authenticate(
            &self,
            ctx: &Context,
            req: AuthRequest,
        ) -> Result<AuthDecision, HandlerError> {
            let config = ctx.config::<Users>()?;
            Ok(match req.username {
                Some(user) if config.users.contains(&user) => AuthDecision::allow()
                    .with_attribute("user", user)
                    .with_attribute("generation", ctx.config_generation().to_string()),
                Some(_) => AuthDecision::deny("unknown user").with_reason_code(0x86),
                None => AuthDecision::abstain(),
            })
        }
    }

    struct NoAdmin;

    impl TopicFilter for NoAdmin {
        async fn topic_filter(
            &self,
            _ctx: &Context,
            req: TopicRequest,
        ) -> Result<TopicDecision, HandlerError> {
            if req.topic == "broken" {
                return Err(Status::unavailable("backend down").into());
            }
            if req.topic == "io" {
                return Err(std::io::Error::other("disk").into());
            }
            Ok(match (req.action, req.topic.starts_with("admin/")) {
                (Action::Publish, true) => {
                    TopicDecision::deny("admin only").cache_for(Duration::from_secs(5))
                }
                _ => TopicDecision::allow(),
            })
        }
    }

    /// Records every event it sees; fails on client id "poison".
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Seen>>>);

    /// Sequence, kind and traceparent of a handled event.
    type Seen = (u64, EventKind, Option<String>);

    impl EventHandler for Recorder {
        async fn on_event(&self, ctx: &Context, event: Event) -> Result<(), HandlerError> {
            let poison = event
                .client
                .as_ref()
                .is_some_and(|c| c.client_id == "poison");
            self.0.lock().unwrap().push((
                event.sequence,
                event.kind(),
                ctx.traceparent().map(str::to_owned),
            ));
            if poison {
                return Err("cannot handle this one".into());
            }
            Ok(())
        }
    }

    impl Recorder {
        fn seen(&self) -> Vec<(u64, EventKind)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|(s, k, _)| (*s, *k))
                .collect()
        }
    }

    fn message(topic: &str) -> EventData {
        EventData::MessageReceived(MessageReceived {
            message: Message {
                topic: topic.into(),
                ..Message::default()
            },
            ..MessageReceived::default()
        })
    }

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
                    EventSubscription::new([
                        EventKind::ClientConnected,
                        EventKind::MessageReceived,
                    ])
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

    #[tokio::test]
    async fn authenticate_uses_the_pushed_config_and_a_repush_replaces_it() {
        let broker = TestBroker::new(
            Plugin::new("users", "1")
                .authenticate(UserList)
                .config::<Users>(),
        );
        broker.describe(json!({"users": ["alice"]})).await.unwrap();

        let alice = broker
            .authenticate(AuthRequest::new("c1").with_username("alice"))
            .await
            .unwrap();
        assert_eq!(alice.verdict, Verdict::Allow);
        assert_eq!(alice.attributes["user"], "alice");
        assert_eq!(alice.attributes["generation"], "1");

        let bob = broker
            .authenticate(AuthRequest::new("c2").with_username("bob"))
            .await
            .unwrap();
        assert_eq!(bob.verdict, Verdict::Deny);
        assert_eq!(bob.reason, "unknown user");
        assert_eq!(bob.reason_code, Some(0x86));

        let anonymous = broker.authenticate(AuthRequest::new("c3")).await.unwrap();
        assert_eq!(anonymous.verdict, Verdict::Abstain);

        // Reload: bob is in, alice is out, and the generation moved on.
        broker.describe(json!({"users": ["bob"]})).await.unwrap();
        let bob = broker
            .authenticate(AuthRequest::new("c2").with_username("bob"))
            .await
            .unwrap();
        assert_eq!(bob.verdict, Verdict::Allow);
        assert_eq!(bob.attributes["generation"], "2");
        let alice = broker
            .authenticate(AuthRequest::new("c1").with_username("alice"))
            .await
            .unwrap();
        assert_eq!(alice.verdict, Verdict::Deny);
    }

    #[tokio::test]
    async fn a_config_that_does_not_fit_is_refused_and_the_previous_one_kept() {
        let broker = TestBroker::new(
            Plugin::new("users", "1")
                .authenticate(UserList)
                .config::<Users>(),
        );
        broker.describe(json!({"users": ["alice"]})).await.unwrap();

        let status = broker
            .describe(json!({"users": "alice"}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("`users`"), "{}", status.message());

        let alice = broker
            .authenticate(AuthRequest::new("c1").with_username("alice"))
            .await
            .unwrap();
        assert_eq!(
            alice.verdict,
            Verdict::Allow,
            "the previous configuration still applies"
        );
    }

    #[tokio::test]
    async fn without_a_declared_type_a_bad_config_fails_the_call_not_describe() {
        let broker = TestBroker::new(Plugin::new("users", "1").authenticate(UserList));
        broker.describe(json!({"wrong": 1})).await.unwrap();
        let status = broker
            .authenticate(AuthRequest::new("c").with_username("a"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("missing field `users`"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn topic_decisions_and_handler_errors_reach_the_broker() {
        let broker = TestBroker::new(Plugin::new("acl", "1").topic_filter(NoAdmin));
        let client = Client::new("c")
            .with_username("u")
            .with_attribute("tenant", "t1");

        let denied = broker
            .topic_filter(TopicRequest::new(
                Action::Publish,
                "admin/x",
                client.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.cache_ttl, Duration::from_secs(5));
        assert_eq!(denied.reason, "admin only");

        let allowed = broker
            .topic_filter(TopicRequest::new(
                Action::Subscribe,
                "admin/x",
                client.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(allowed.verdict, Verdict::Allow);
        assert_eq!(allowed.cache_ttl, Duration::ZERO);

        let status = broker
            .topic_filter(TopicRequest::new(Action::Publish, "broken", client.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "backend down")
        );
        let status = broker
            .topic_filter(TopicRequest::new(Action::Publish, "io", client))
            .await
            .unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Internal, "disk"));
    }

    #[tokio::test]
    async fn events_are_handled_in_order_filtered_and_acked() {
        let connections = Recorder::default();
        let sensors = Recorder::default();
        let broker = TestBroker::new(
            Plugin::new("audit", "1")
                .events(
                    EventSubscription::new([
                        EventKind::ClientConnected,
                        EventKind::ClientDisconnected,
                    ]),
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
            Plugin::new("audit", "1")
                .events(EventSubscription::new(EventKind::ALL), recorder.clone()),
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
}
