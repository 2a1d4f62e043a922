//! The topic check role: [`TopicFilter`], its request and its decision.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::context::Context;
use crate::error::HandlerError;
use crate::types::{Action, Client, ProtocolVersion, UserProperties, Verdict};

/// Decides whether a client may publish, subscribe or receive on a topic (aMQTT's
/// `BaseTopicPlugin.topic_filtering`).
///
/// Register it with [`Plugin::topic_filter`](crate::Plugin::topic_filter); the plugin then declares
/// the topic filter role in `Describe`. This sits on the message path: answer with a cache TTL
/// ([`TopicDecision::cache_for`]) whenever the answer depends only on the client, action and
/// topic, so the broker does not ask again for every message.
///
/// ```
/// use std::time::Duration;
/// use tandem_plugin::{Action, Context, HandlerError, TopicDecision, TopicFilter, TopicRequest};
///
/// struct ReadOnlySys;
///
/// impl TopicFilter for ReadOnlySys {
///     async fn topic_filter(&self, _ctx: &Context, req: TopicRequest) -> Result<TopicDecision, HandlerError> {
///         let decision = if req.topic.starts_with("$SYS/") && req.action == Action::Publish {
///             TopicDecision::deny("$SYS is read-only")
///         } else {
///             TopicDecision::abstain()
///         };
///         Ok(decision.cache_for(Duration::from_secs(60)))
///     }
/// }
/// ```
pub trait TopicFilter: Send + Sync + 'static {
    /// Decides on one action on one topic.
    fn topic_filter(
        &self,
        ctx: &Context,
        request: TopicRequest,
    ) -> impl Future<Output = Result<TopicDecision, HandlerError>> + Send;
}

/// May this client perform this action on this topic?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRequest {
    /// What the client wants to do.
    pub action: Action,
    /// The topic (publish, receive) or topic filter (subscribe), as on the wire.
    pub topic: String,
    /// Who asks.
    pub client: Client,
    /// Publish: the message QoS. Subscribe: the maximum QoS requested. Receive: the delivery QoS.
    pub qos: u8,
    /// Publish: the retain flag. Receive: delivered as a retained message. Subscribe: false.
    pub retain: bool,
    /// The MQTT version the client speaks.
    pub protocol_version: ProtocolVersion,
    /// MQTT 5 user properties of the packet (answers depending on them must not be cached).
    pub user_properties: UserProperties,
    /// The name of the listener the client is connected to.
    pub listener: String,
    /// The client's address, when known.
    pub remote_addr: Option<SocketAddr>,
}

impl TopicRequest {
    /// A request for this action on this topic by this client; other fields at their defaults.
    pub fn new(action: Action, topic: impl Into<String>, client: Client) -> Self {
        TopicRequest {
            action,
            topic: topic.into(),
            client,
            qos: 0,
            retain: false,
            protocol_version: ProtocolVersion::Unknown,
            user_properties: UserProperties::new(),
            listener: String::new(),
            remote_addr: None,
        }
    }
}

/// A plugin's decision on a topic action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDecision {
    /// The verdict.
    pub verdict: Verdict,
    /// Why; logged by the broker (never sent to the client: see
    /// [`client_reason`](Self::client_reason)).
    pub reason: String,
    /// How long the broker may reuse this answer for the same session, action and topic (denials
    /// included). Zero (the default) means do not cache. Sent in milliseconds; the broker caps it
    /// at its `topic-check.cache.max_ttl`.
    pub cache_ttl: Duration,
    /// The MQTT 5 reason code for a deny (SUBACK entry, PUBACK/PUBREC); `None` lets the broker
    /// choose (`0x87`, not authorized).
    pub reason_code: Option<u8>,
    /// The MQTT 5 Reason String sent to the client with a deny (the SUBACK or PUBACK/PUBREC);
    /// `None` sends none. Unlike [`reason`](Self::reason), the client reads it.
    pub client_reason: Option<String>,
}

impl TopicDecision {
    fn new(verdict: Verdict, reason: String) -> Self {
        TopicDecision {
            verdict,
            reason,
            cache_ttl: Duration::ZERO,
            reason_code: None,
            client_reason: None,
        }
    }

    /// Allow the action.
    pub fn allow() -> Self {
        Self::new(Verdict::Allow, String::new())
    }

    /// Deny the action, saying why (for the broker's log).
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Deny, reason.into())
    }

    /// No opinion: let the other plugins of the chain decide.
    pub fn abstain() -> Self {
        Self::new(Verdict::Abstain, String::new())
    }

    /// Lets the broker cache this answer for `ttl` (millisecond precision).
    pub fn cache_for(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Sets the reason logged by the broker.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the MQTT 5 reason code used when this deny decides.
    pub fn with_reason_code(mut self, code: u8) -> Self {
        self.reason_code = Some(code);
        self
    }

    /// Sets the MQTT 5 Reason String the client is sent when this deny decides.
    pub fn with_client_reason(mut self, reason: impl Into<String>) -> Self {
        self.client_reason = Some(reason.into());
        self
    }
}
