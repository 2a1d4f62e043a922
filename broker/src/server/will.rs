//! The will: published when a connection ends without DISCONNECT (or with MQTT 5's
//! DISCONNECT 0x04), if the topic-check chain in force allows it then (checked like a
//! PUBLISH, on the real clock); an MQTT 5 will with a delay interval waits it out first,
//! and a client that resumes its session meanwhile cancels it. A will to `$SYS/` is
//! dropped. One whose check fails with a plugin error is held in a task of its
//! own and asked again with backoff until a verdict or `topic-check.hold` runs out, so the
//! connection's slot and the client id are free meanwhile.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytestring::ByteString;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::broker::Broker;
use crate::config::ListenerKind;
use crate::plugins::cache::CachedAction;
use crate::plugins::client::{Backoff, Checked, ClientPlugins};
use crate::plugins::client_info::ClientIdentity;
use crate::protocol::{LastWill, ProtocolVersion};
use crate::server::connection::Connection;
use crate::server::publish::{reserved_for_broker, route};
use crate::session::{Message, SessionId};
use crate::storage::{Op, Store, WillRecord};

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
            let delay = Duration::from_secs(delay.into());
            // Stored with its session, so a restart meanwhile neither loses nor repeats it.
            let stored = self.state.store().map(|store| {
                store.submit(Op::Will {
                    client_id: self.state.client_id.clone(),
                    record: Box::new(will_record(&will, self.plugins.client(), delay)),
                });
                (store.clone(), self.state.client_id.clone())
            });
            let task = delayed_will(
                self.broker.clone(),
                self.plugins.detached(),
                will,
                self.state.id,
                delay,
                rx,
                shutdown.child_token(),
                stored,
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
            route(broker, plugins, message(will, from), false, None).await;
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

/// The stored form of a will delayed by `delay` from now, sent by `client`.
fn will_record(will: &LastWill, client: &ClientIdentity, delay: Duration) -> WillRecord {
    let mut attributes: Vec<(String, String)> = client
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.sort_unstable();
    // Stored as a PUBLISH, which cannot carry the delay (`due` says when).
    let mut properties = will.properties.clone();
    if let Some(p) = &mut properties {
        p.will_delay_interval = None;
    }
    WillRecord {
        will: Message {
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: properties.filter(|p| !p.is_empty()),
            expires_at: None,
            from: None,
        },
        due: SystemTime::now() + delay,
        identity: client.identity.clone(),
        username: client.connect_username.clone(),
        attributes,
        listener: client.listener.clone(),
        transport: client.transport().as_str().to_owned(),
        remote_addr: client.remote_addr.clone(),
    }
}

/// Starts the delayed wills a store held at start-up: each waits out what is left of
/// its delay beside its restored session (a client that comes back cancels it), or is
/// published at once if its delay ran out, or its session expired, while the broker was
/// down. Its PUBLISH check names the client as it was (without its TLS details).
pub(crate) fn restore_wills(
    broker: &Arc<Broker>,
    wills: Vec<(ByteString, WillRecord)>,
    shutdown: &CancellationToken,
) {
    let Some(store) = broker.store.clone() else {
        return;
    };
    if !wills.is_empty() {
        info!(wills = wills.len(), "storage: restored delayed wills");
    }
    for (client_id, w) in wills {
        let transport = ListenerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == w.transport)
            .unwrap_or(ListenerKind::Tcp);
        let client = ClientIdentity::new(
            client_id.to_string(),
            Some(w.identity),
            Some(w.username),
            w.attributes.into_iter().collect(),
            w.listener,
            w.remote_addr,
        )
        .over(transport, None);
        let plugins = ClientPlugins::new(
            &broker.plugins,
            &broker.stats,
            broker.plugins.current(),
            client,
            ProtocolVersion::V5,
        );
        let (tx, rx) = oneshot::channel();
        // No parked session (it expired): the sender is dropped, the will goes at once.
        let from = broker
            .registry
            .attach_will(&client_id, tx)
            .unwrap_or_else(SessionId::next);
        let left = w.due.duration_since(SystemTime::now()).unwrap_or_default();
        let will = LastWill {
            topic: w.will.topic,
            payload: w.will.payload,
            qos: w.will.qos,
            retain: w.will.retain,
            properties: w.will.properties,
        };
        let task = delayed_will(
            broker.clone(),
            plugins,
            will,
            from,
            left,
            rx,
            shutdown.child_token(),
            Some((store.clone(), client_id)),
        );
        tokio::spawn(task);
    }
}

/// An MQTT 5 will waiting out its delay interval after its connection ended
/// (section 3.1.3.2.2): published once `delay` has passed, or at once when its session
/// ends first (the registry discards it: expiry, or a clean start under its client id
/// drops `decided`'s sender); dropped when a connection resumes the session
/// (`decided` says `false`). A shutdown leaves it waiting in the store (`stored`), if
/// any, for the next start.
#[allow(clippy::too_many_arguments)]
async fn delayed_will(
    broker: Arc<Broker>,
    mut plugins: ClientPlugins,
    will: LastWill,
    from: SessionId,
    delay: Duration,
    decided: oneshot::Receiver<bool>,
    shutdown: CancellationToken,
    stored: Option<(Arc<Store>, ByteString)>,
) {
    let publish = tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        answer = decided => answer.unwrap_or(true),
        _ = shutdown.cancelled() => return,
    };
    if let Some((store, client_id)) = stored {
        store.submit(Op::WillGone { client_id });
    }
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
                route(&broker, &plugins, message(will, from), false, None).await;
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
