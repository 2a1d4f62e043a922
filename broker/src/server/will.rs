//! The will: published when a connection ends without DISCONNECT (or with MQTT 5's
//! DISCONNECT 0x04), if the topic-check chain in force allows it then (checked like a
//! PUBLISH, on the real clock); an MQTT 5 will with a delay interval waits it out first,
//! and a client that resumes its session meanwhile cancels it. A will to `$SYS/` is
//! dropped. One whose check fails with a plugin error is held in a task of its
//! own and asked again with backoff until a verdict or `topic-check.hold` runs out, so the
//! connection's slot and the client id are free meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::broker::Broker;
use crate::plugins::cache::CachedAction;
use crate::plugins::client::{Backoff, Checked, ClientPlugins};
use crate::protocol::LastWill;
use crate::server::connection::Connection;
use crate::server::publish::{reserved_for_broker, route};
use crate::session::{Message, SessionId};

/// The message a will makes: published on behalf of `from`, with the MQTT 5 will
/// properties that travel with a message (the will delay is the broker's alone).
fn message(will: LastWill, from: SessionId) -> Arc<Message> {
    let mut properties = will.properties;
    if let Some(props) = &mut properties {
        props.will_delay_interval = None;
    }
    let expires_at = properties
        .as_ref()
        .and_then(|props| props.message_expiry_interval)
        .map(|secs| Instant::now() + Duration::from_secs(secs.into()));
    Arc::new(Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: properties.filter(|props| !props.is_empty()),
        expires_at,
        from: Some(from),
    })
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Publishes the will if allowed now; returns whether it was published. An MQTT 5
    /// will with a delay interval, of a session that outlives the connection, waits
    /// it out in a task of its own (see [`delayed_will`]) and is not published now.
    pub(super) async fn publish_will(
        &mut self,
        will: LastWill,
        shutdown: &CancellationToken,
    ) -> bool {
        let delay = will
            .properties
            .as_ref()
            .and_then(|p| p.will_delay_interval)
            .unwrap_or(0);
        if delay > 0 && self.state.persistent && !shutdown.is_cancelled() {
            let (tx, rx) = oneshot::channel();
            self.state.pending_will = Some(tx);
            debug!(topic = ?will.topic, delay, "will delayed");
            let task = delayed_will(
                self.broker.clone(),
                self.plugins.detached(),
                will,
                self.state.id,
                Duration::from_secs(delay.into()),
                rx,
                shutdown.child_token(),
            );
            tokio::spawn(task.instrument(tracing::Span::current()));
            return false;
        }
        publish_will_now(
            &self.broker,
            &mut self.plugins,
            will,
            self.state.id,
            shutdown,
        )
        .await
    }
}

/// Publishes a will if the topic-check chain in force allows it now; returns whether
/// it was published. One whose check failed with a plugin error is handed to
/// [`hold_will`] (not published now).
async fn publish_will_now(
    broker: &Arc<Broker>,
    plugins: &mut ClientPlugins,
    will: LastWill,
    from: SessionId,
    shutdown: &CancellationToken,
) -> bool {
    // The set in force, not the one an idle connection last looked at.
    plugins.follow_reload();
    if reserved_for_broker(&will.topic) {
        info!(topic = ?will.topic, "dropping the will: $SYS/ topics belong to the broker");
        return false;
    }
    match plugins
        .check(CachedAction::Publish, &will.topic, will.qos, will.retain)
        .await
    {
        Checked::Allowed => {
            debug!(topic = ?will.topic, "publishing will");
            route(broker, plugins, message(will, from), false).await;
            true
        }
        Checked::Denied => {
            debug!(topic = ?will.topic, "will denied by the topic-check chain");
            false
        }
        Checked::Failed => {
            broker.stats.message_held();
            info!(topic = ?will.topic, hold = ?plugins.hold(),
                "will check failed (plugin error); holding the will and asking again");
            let task = hold_will(
                broker.clone(),
                plugins.detached(),
                will,
                from,
                shutdown.child_token(),
            );
            tokio::spawn(task.instrument(tracing::Span::current()));
            false
        }
    }
}

/// An MQTT 5 will waiting out its delay interval after its connection ended
/// (section 3.1.3.2.2): published once `delay` has passed, or at once when its session
/// ends first (the registry discards it: expiry, or a clean start under its client id
/// drops `decided`'s sender); dropped when a connection resumes the session
/// (`decided` says `false`) or the broker shuts down.
async fn delayed_will(
    broker: Arc<Broker>,
    mut plugins: ClientPlugins,
    will: LastWill,
    from: SessionId,
    delay: Duration,
    decided: oneshot::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let publish = tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        answer = decided => answer.unwrap_or(true),
        _ = shutdown.cancelled() => false,
    };
    if publish {
        publish_will_now(&broker, &mut plugins, will, from, &shutdown).await;
    } else {
        debug!(topic = ?will.topic, "delayed will dropped: the session was resumed");
    }
}

/// A will whose PUBLISH check failed with a plugin error, after its connection ended:
/// asks the topic-check chain in force (followed again before every attempt, so a
/// reload applies) with backoff until a verdict comes or `topic-check.hold` runs out,
/// and publishes it if allowed. A broker shutdown drops it.
async fn hold_will(
    broker: Arc<Broker>,
    mut plugins: ClientPlugins,
    will: LastWill,
    from: SessionId,
    shutdown: CancellationToken,
) {
    let since = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                info!(topic = ?will.topic, "dropping a held will: the broker is shutting down");
                return;
            }
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
        plugins.follow_reload();
        match plugins
            .check(CachedAction::Publish, &will.topic, will.qos, will.retain)
            .await
        {
            Checked::Allowed => {
                info!(topic = ?will.topic, held = ?since.elapsed(), "publishing a held will");
                route(&broker, &plugins, message(will, from), false).await;
                return;
            }
            Checked::Denied => {
                debug!(topic = ?will.topic, "held will denied");
                return;
            }
            Checked::Failed if since.elapsed() >= plugins.hold() => {
                broker.stats.hold_expired();
                warn!(topic = ?will.topic, hold = ?plugins.hold(),
                    "dropping a will: its PUBLISH check kept failing for topic-check.hold");
                return;
            }
            Checked::Failed => {}
        }
    }
}
