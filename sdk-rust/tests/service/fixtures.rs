//! The plugins the tests serve: an authenticator configured with a user list, a topic filter
//! that fails on demand, and an event handler that records what it saw.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_plugin::tonic::Status;
use tandem_plugin::{
    Action, AuthDecision, AuthRequest, Authenticator, Context, Event, EventData, EventHandler,
    EventKind, HandlerError, Message, MessageReceived, TopicDecision, TopicFilter, TopicRequest,
};

#[derive(tandem_plugin::serde::Deserialize)]
#[serde(crate = "tandem_plugin::serde")]
pub(crate) struct Users {
    users: Vec<String>,
}

pub(crate) struct UserList;

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

pub(crate) struct NoAdmin;

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
pub(crate) struct Recorder(pub(crate) Arc<Mutex<Vec<Seen>>>);

/// Sequence, kind and traceparent of a handled event.
pub(crate) type Seen = (u64, EventKind, Option<String>);

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
    pub(crate) fn seen(&self) -> Vec<(u64, EventKind)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(s, k, _)| (*s, *k))
            .collect()
    }
}

pub(crate) fn message(topic: &str) -> EventData {
    EventData::MessageReceived(MessageReceived {
        message: Message {
            topic: topic.into(),
            ..Message::default()
        },
        ..MessageReceived::default()
    })
}
