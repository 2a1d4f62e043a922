//! [`Plugin`]: the builder where handlers are registered (and so capabilities declared), and
//! [`PluginService`], the gRPC service built from it.

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tandem_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument as _, debug, warn};

use crate::auth::{AuthDecision, AuthRequest, Authenticator};
use crate::context::{Context, Pushed, Shared, deserialize_config};
use crate::convert::{event_from, struct_to_json};
use crate::error::{Error, HandlerError, handler_status};
use crate::events::{Event, EventHandler, EventKind, EventSubscription};
use crate::topic::{TopicDecision, TopicFilter, TopicRequest};
use crate::types::Role;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// Object-safe forms of the handler traits, so the service can hold them behind `Arc<dyn _>`.

trait DynAuthenticator: Send + Sync {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        req: AuthRequest,
    ) -> BoxFuture<'a, Result<AuthDecision, HandlerError>>;
}

impl<T: Authenticator> DynAuthenticator for T {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        req: AuthRequest,
    ) -> BoxFuture<'a, Result<AuthDecision, HandlerError>> {
        Box::pin(self.authenticate(ctx, req))
    }
}

trait DynTopicFilter: Send + Sync {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        req: TopicRequest,
    ) -> BoxFuture<'a, Result<TopicDecision, HandlerError>>;
}

impl<T: TopicFilter> DynTopicFilter for T {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        req: TopicRequest,
    ) -> BoxFuture<'a, Result<TopicDecision, HandlerError>> {
        Box::pin(self.topic_filter(ctx, req))
    }
}

trait DynEventHandler: Send + Sync {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        event: Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

impl<T: EventHandler> DynEventHandler for T {
    fn call<'a>(
        &'a self,
        ctx: &'a Context,
        event: Event,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(self.on_event(ctx, event))
    }
}

/// Checks a pushed configuration against the type declared with [`Plugin::config`].
type ConfigCheck = fn(&serde_json::Value) -> Result<Arc<dyn std::any::Any + Send + Sync>, Error>;

/// A plugin: its name and version, and the handlers it was given.
///
/// What the plugin declares to the broker in `Describe` follows from the handlers registered
/// here and nowhere else: [`authenticate`](Self::authenticate) declares the authenticate role,
/// [`topic_filter`](Self::topic_filter) the topic filter role, [`events`](Self::events) the event
/// kinds. An RPC without a handler answers `UNIMPLEMENTED`.
///
/// Serve it with [`serve`](Self::serve) (async) or [`run`](Self::run) (blocking), or test it with
/// [`testing::TestBroker`](crate::testing::TestBroker).
#[must_use = "a plugin does nothing until served"]
pub struct Plugin {
    name: String,
    version: String,
    auth: Option<Arc<dyn DynAuthenticator>>,
    topic: Option<Arc<dyn DynTopicFilter>>,
    events: Vec<(EventSubscription, Arc<dyn DynEventHandler>)>,
    config_check: Option<(TypeId, ConfigCheck)>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("roles", &self.roles())
            .field(
                "events",
                &self.events.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// A plugin with this name and version (reported in `Describe`, for the broker's logs and
    /// metrics; `env!("CARGO_PKG_NAME")` and `env!("CARGO_PKG_VERSION")` are good values).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Plugin {
            name: name.into(),
            version: version.into(),
            auth: None,
            topic: None,
            events: Vec::new(),
            config_check: None,
        }
    }

    /// Serves `Authenticate` with this handler (replacing any earlier one).
    pub fn authenticate(mut self, handler: impl Authenticator) -> Self {
        self.auth = Some(Arc::new(handler));
        self
    }

    /// Serves `TopicFilter` with this handler (replacing any earlier one).
    pub fn topic_filter(mut self, handler: impl TopicFilter) -> Self {
        self.topic = Some(Arc::new(handler));
        self
    }

    /// Sends the events matching `subscription` to this handler. May be called several times:
    /// the plugin asks the broker for the union, and each handler sees only its own events.
    pub fn events(mut self, subscription: EventSubscription, handler: impl EventHandler) -> Self {
        self.events.push((subscription, Arc::new(handler)));
        self
    }

    /// Declares the type of the plugin's configuration. Every `Describe` then deserializes the
    /// pushed configuration into `T` and, when it does not fit, answers `INVALID_ARGUMENT` with
    /// the path and the problem (the broker refuses to start and logs it) and keeps the previous
    /// configuration. Handlers read it with [`Context::config`].
    pub fn config<T>(mut self) -> Self
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        fn check<T: DeserializeOwned + Send + Sync + 'static>(
            value: &serde_json::Value,
        ) -> Result<Arc<dyn std::any::Any + Send + Sync>, Error> {
            Ok(Arc::new(deserialize_config::<T>(value)?))
        }
        self.config_check = Some((TypeId::of::<T>(), check::<T>));
        self
    }

    /// The plugin's name, as reported in `Describe`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version, as reported in `Describe`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The roles this plugin declares: one per registered role handler.
    pub fn roles(&self) -> Vec<Role> {
        let mut roles = Vec::new();
        if self.auth.is_some() {
            roles.push(Role::Authenticate);
        }
        if self.topic.is_some() {
            roles.push(Role::TopicFilter);
        }
        roles
    }

    /// The gRPC service for this plugin, to add to a `tonic` server of your own (with
    /// [`tandem_proto::v1::plugin_server::PluginServer::new`]). [`serve`](Self::serve) does this
    /// for you.
    pub fn into_service(self) -> PluginService {
        let mut subscription = EventSubscription::default();
        let mut all_topics = false;
        for (sub, _) in &self.events {
            subscription.kinds.extend(&sub.kinds);
            subscription.payloads |= sub.payloads;
            subscription.raw_packets |= sub.raw_packets;
            let wants_messages = sub.kinds.iter().any(|k| {
                matches!(
                    k,
                    EventKind::MessageReceived
                        | EventKind::MessageBroadcast
                        | EventKind::RetainedMessage
                )
            });
            if wants_messages && sub.topics.is_empty() {
                all_topics = true;
            }
            subscription.topics.extend(sub.topics.iter().cloned());
        }
        subscription.kinds.sort();
        subscription.kinds.dedup();
        subscription.topics.sort();
        subscription.topics.dedup();
        if all_topics {
            // One handler wants every topic: the broker must send them all.
            subscription.topics.clear();
        }
        let description = pb::DescribeResponse {
            name: self.name.clone(),
            version: self.version.clone(),
            roles: self
                .roles()
                .into_iter()
                .map(|r| pb::Role::from(r).into())
                .collect(),
            event_kinds: subscription
                .kinds
                .iter()
                .map(|k| pb::EventKind::from(*k).into())
                .collect(),
            message_topic_filters: subscription.topics,
            want_message_payloads: subscription.payloads,
            want_raw_packets: subscription.raw_packets,
            max_events_per_batch: 0,
        };
        PluginService {
            inner: Arc::new(Inner {
                description,
                auth: self.auth,
                topic: self.topic,
                events: self.events,
                config_check: self.config_check,
                shared: Arc::new(Shared::default()),
                closing: watch::Sender::new(false),
            }),
        }
    }
}

struct Inner {
    /// The `Describe` answer, computed once from the registered handlers.
    description: pb::DescribeResponse,
    auth: Option<Arc<dyn DynAuthenticator>>,
    topic: Option<Arc<dyn DynTopicFilter>>,
    events: Vec<(EventSubscription, Arc<dyn DynEventHandler>)>,
    config_check: Option<(TypeId, ConfigCheck)>,
    shared: Arc<Shared>,
    /// Set when the server shuts down: `Events` streams never end on their own, so they are ended
    /// here to let the server drain.
    closing: watch::Sender<bool>,
}

/// The `tandem.plugin.v1.Plugin` gRPC service of a [`Plugin`]. Cheap to clone.
#[derive(Clone)]
pub struct PluginService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginService")
            .field("name", &self.inner.description.name)
            .finish_non_exhaustive()
    }
}

impl PluginService {
    /// Ends the open `Events` streams (after the batch being handled) and refuses new ones, so a
    /// graceful shutdown is not held up by streams that only the broker would close.
    pub fn close_event_streams(&self) {
        self.inner.closing.send_replace(true);
    }
}

/// The W3C trace context the broker put in the call's metadata.
fn traceparent<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The span a handler runs in: with feature `otel`, a child of the broker's span.
fn rpc_span(rpc: &'static str, ctx: &Context) -> tracing::Span {
    let span = tracing::info_span!(
        "plugin_rpc",
        rpc,
        plugin = %ctx.plugin_alias(),
        trace_id = ctx.trace_id().unwrap_or(""),
    );
    #[cfg(feature = "otel")]
    crate::telemetry::continue_trace(&span, ctx.traceparent());
    span
}

#[tonic::async_trait]
impl pb::plugin_server::Plugin for PluginService {
    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let req = request.into_inner();
        let config = struct_to_json(req.config.unwrap_or_default());
        let mut typed = std::collections::HashMap::new();
        if let Some((type_id, check)) = self.inner.config_check {
            let value = check(&config).map_err(|err| {
                warn!(plugin = %req.plugin_alias, cause = %err, "rejected the configuration pushed by the broker");
                err.to_status()
            })?;
            typed.insert(type_id, value);
        }
        debug!(plugin = %req.plugin_alias, broker = %req.broker_version, generation = req.config_generation, "described");
        self.inner.shared.replace(Pushed {
            config: Arc::new(config),
            typed,
            plugin_alias: req.plugin_alias,
            broker_version: req.broker_version,
            broker_instance_id: req.broker_instance_id,
            generation: req.config_generation,
        });
        Ok(Response::new(self.inner.description.clone()))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let Some(handler) = &self.inner.auth else {
            return Err(Status::unimplemented(
                "this plugin does not serve Authenticate (no authenticate handler registered)",
            ));
        };
        let ctx = Context::new(Arc::clone(&self.inner.shared), traceparent(&request));
        let span = rpc_span("authenticate", &ctx);
        let req = AuthRequest::from(request.into_inner());
        let decision = handler
            .call(&ctx, req)
            .instrument(span)
            .await
            .map_err(handler_status)?;
        Ok(Response::new(decision.into()))
    }

    async fn topic_filter(
        &self,
        request: Request<pb::TopicFilterRequest>,
    ) -> Result<Response<pb::TopicFilterResponse>, Status> {
        let Some(handler) = &self.inner.topic else {
            return Err(Status::unimplemented(
                "this plugin does not serve TopicFilter (no topic_filter handler registered)",
            ));
        };
        let ctx = Context::new(Arc::clone(&self.inner.shared), traceparent(&request));
        let span = rpc_span("topic_filter", &ctx);
        let req = TopicRequest::try_from(request.into_inner())?;
        let decision = handler
            .call(&ctx, req)
            .instrument(span)
            .await
            .map_err(handler_status)?;
        Ok(Response::new(decision.into()))
    }

    type EventsStream = ReceiverStream<Result<pb::EventAck, Status>>;

    async fn events(
        &self,
        request: Request<Streaming<pb::EventBatch>>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        if self.inner.events.is_empty() {
            return Err(Status::unimplemented(
                "this plugin does not receive events (no event handler registered)",
            ));
        }
        if *self.inner.closing.borrow() {
            return Err(Status::unavailable("the plugin is shutting down"));
        }
        let mut batches = request.into_inner();
        // Acks are small and cumulative; a few in flight is plenty.
        let (acks, ack_stream) = mpsc::channel(8);
        let inner = Arc::clone(&self.inner);
        let mut closing = self.inner.closing.subscribe();
        tokio::spawn(async move {
            let mut dropped_unlogged = 0u64;
            let mut last_drop_log = None;
            loop {
                // Between batches only: a batch being handled is finished and acked first.
                let next = tokio::select! {
                    next = batches.message() => next,
                    _ = closing.wait_for(|closing| *closing) => {
                        debug!("server shutting down; ending the event stream (the broker resends unacked events elsewhere)");
                        break;
                    }
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(cause = %status, "event stream ended");
                        break;
                    }
                };
                // Drops come in bursts (every batch during an overflow): said at most
                // once a second, with the total since the last time.
                dropped_unlogged += batch.dropped_events;
                if dropped_unlogged > 0
                    && last_drop_log.is_none_or(|t: std::time::Instant| t.elapsed().as_secs() >= 1)
                {
                    warn!(
                        dropped = dropped_unlogged,
                        "the broker dropped events for this plugin (queue overflow)"
                    );
                    dropped_unlogged = 0;
                    last_drop_log = Some(std::time::Instant::now());
                }
                let Some(highest) = inner.handle_batch(batch).await else {
                    continue;
                };
                let ack = pb::EventAck {
                    acked_sequence: highest,
                };
                if acks.send(Ok(ack)).await.is_err() {
                    break; // the broker went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(ack_stream)))
    }
}

impl Inner {
    /// Runs the handlers for each event of a batch in order; returns the highest sequence seen.
    ///
    /// Events are many and small: per event this allocates only what the handler's future
    /// needs. Events without a traceparent share one context per batch (the pushed
    /// configuration is read once per batch), and the matching handlers are found without
    /// collecting them.
    async fn handle_batch(&self, batch: pb::EventBatch) -> Option<u64> {
        let mut highest = None;
        let untraced = Context::new(Arc::clone(&self.shared), None);
        for mut wire in batch.events {
            let sequence = wire.sequence;
            let traceparent = std::mem::take(&mut wire.traceparent);
            highest = highest.max(Some(sequence));
            let Some(event) = event_from(wire) else {
                debug!(
                    sequence,
                    "skipping an event of a kind this SDK does not know"
                );
                continue;
            };
            let traced;
            let ctx = if traceparent.is_empty() {
                &untraced
            } else {
                traced = Context::new(Arc::clone(&self.shared), Some(traceparent));
                &traced
            };
            let kind = event.kind();
            let mut left = self
                .events
                .iter()
                .filter(|(sub, _)| sub.matches(&event))
                .count();
            let mut event = Some(event);
            for (sub, handler) in &self.events {
                let Some(current) = event.as_ref() else { break };
                if !sub.matches(current) {
                    continue;
                }
                left -= 1;
                // Cloned for all but the last matching handler, which takes the event.
                let this = if left > 0 {
                    current.clone()
                } else if let Some(last) = event.take() {
                    last
                } else {
                    break;
                };
                // Events are high volume: their span is at debug level, so that with the
                // usual `info` filter it costs a disabled-callsite check, not a formatted
                // span per event (which was most of a consumer's CPU).
                let span = tracing::debug_span!(
                    "plugin_event",
                    sequence,
                    plugin = %ctx.plugin_alias(),
                    trace_id = ctx.trace_id().unwrap_or(""),
                );
                if let Err(err) = handler.call(ctx, this).instrument(span).await {
                    warn!(sequence, ?kind, cause = %err, "event handler failed; the event is acked anyway");
                }
            }
        }
        highest
    }
}
