//! The will: published when a connection ends without DISCONNECT, if the topic-check
//! chain in force allows it then (checked like a PUBLISH, on the real clock). A will to
//! `$SYS/` is dropped. One whose check fails with a plugin error is held in a task of its
//! own and asked again with backoff until a verdict or `topic-check.hold` runs out, so the
//! connection's slot and the client id are free meanwhile.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
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
        .map(|secs| tokio::time::Instant::now() + std::time::Duration::from_secs(secs.into()));
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
    /// Publishes the will if allowed now; returns whether it was published. One whose
    /// check failed with a plugin error is handed to [`hold_will`] (not published now).
    pub(super) async fn publish_will(
        &mut self,
        will: LastWill,
        shutdown: &CancellationToken,
    ) -> bool {
        // The set in force, not the one an idle connection last looked at.
        self.plugins.follow_reload();
        if reserved_for_broker(&will.topic) {
            info!(topic = ?will.topic, "dropping the will: $SYS/ topics belong to the broker");
            return false;
        }
        match self
            .plugins
            .check(CachedAction::Publish, &will.topic, will.qos, will.retain)
            .await
        {
            Checked::Allowed => {
                debug!(topic = ?will.topic, "publishing will");
                route(&self.broker, &self.plugins, message(will, self.state.id)).await;
                true
            }
            Checked::Denied => {
                debug!(topic = ?will.topic, "will denied by the topic-check chain");
                false
            }
            Checked::Failed => {
                self.broker.stats.message_held();
                info!(topic = ?will.topic, hold = ?self.plugins.hold(),
                    "will check failed (plugin error); holding the will and asking again");
                let task = hold_will(
                    self.broker.clone(),
                    self.plugins.detached(),
                    will,
                    self.state.id,
                    shutdown.child_token(),
                );
                tokio::spawn(task.instrument(tracing::Span::current()));
                false
            }
        }
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
                route(&broker, &plugins, message(will, from)).await;
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
