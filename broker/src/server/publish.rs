//! A PUBLISH from the client: checked (PUBLISH), routed and acknowledged.
//!
//! 3.1.1 has no way to tell a publisher that its message was denied, so a denied (or
//! `$SYS/`) message is acknowledged as any other and dropped; an MQTT 5 publisher's
//! PUBACK or PUBREC carries the deciding plugin's reason code (0x87 "not authorized"
//! when it named none, or one a PUBACK cannot carry) and its Reason String (unless the
//! client asked for no problem information).

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::debug;

use crate::broker::Broker;
use crate::plugins::cache::CachedAction;
use crate::plugins::client::{ClientPlugins, Decision};
use crate::protocol::{self, PacketType, Properties, Publish, QoS};
use crate::router::topic;
use crate::server::connection::Connection;
use crate::server::exit::Exit;
use crate::session::Message;
use crate::stats::TopicIn;
use crate::storage::Hold;

/// `$SYS/` belongs to the broker: no client publish, and no will, may write there.
pub(super) fn reserved_for_broker(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

/// What routing a message did, as far as its acknowledgement is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RouteOutcome {
    /// It changed the store: the acknowledgement waits for the store.
    pub(super) stored: bool,
    /// A full queue stayed full past `mqtt.backpressure_timeout`: not acknowledged.
    pub(super) gave_up: bool,
}

/// Routes a message that passed its checks, on behalf of the client `plugins` speaks
/// for, and tells the plugins that want to hear of it. With `wait` (a client's PUBLISH, not a
/// will), QoS 1/2 deliveries to full queues under `mqtt.queue_full: backpressure` are
/// waited for, one after another, within one `mqtt.backpressure_timeout`. `hold` (see
/// [`Store::hold`](crate::storage::Store::hold)) ends when the copies routed at once
/// are handed to the store, so they land in the commit of whatever the caller handed
/// over before it. (Copies that wait for room under `backpressure` come later, outside
/// the hold.)
pub(super) async fn route(
    broker: &Broker,
    plugins: &ClientPlugins,
    message: Arc<Message>,
    wait: bool,
    hold: Option<Hold>,
) -> RouteOutcome {
    let wants_queued = plugins.wants_events() && plugins.wants_queued();
    let mut offline: Vec<ByteString> = Vec::new();
    let note = |id: &ByteString| {
        if wants_queued {
            offline.push(id.clone());
        }
    };
    // No extra reference to the message unless a plugin is to hear of it.
    let qos = message.qos;
    let kept = plugins.wants_events().then(|| message.clone());
    let routed = if wait {
        broker.router.publish_waiting(message, note)
    } else {
        broker.router.publish_noting_offline(message, note)
    };
    drop(hold);
    let mut outcome = RouteOutcome {
        stored: routed.stored,
        gave_up: false,
    };
    let mut matched = routed.matched;
    if !routed.blocked.is_empty() {
        let deadline = Instant::now() + broker.config.mqtt.backpressure_timeout;
        for (mailbox, delivery) in routed.blocked {
            let within = deadline.saturating_duration_since(Instant::now());
            let offered = mailbox.offer_waiting(delivery, within).await;
            if offered.queued() {
                matched += 1;
                outcome.stored |= mailbox.stores(qos);
                if offered.offline() && wants_queued {
                    offline.push(mailbox.client_id().clone());
                }
            } else if offered.dropped() {
                broker.stats.add_dropped(1);
                outcome.gave_up = true;
            }
        }
    }
    if let Some(message) = kept {
        plugins.routed(&message, matched, &offline).await;
    }
    outcome
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Applies a PUBLISH: its MQTT 5 topic alias resolved, a topic deeper than
    /// `mqtt.max_topic_levels` closes the connection; otherwise it is checked (PUBLISH),
    /// routed if allowed, and acknowledged with what was decided (an MQTT 5 publisher
    /// learns of a denial from the reason code; 3.1.1 has no way to say it).
    pub(super) async fn on_publish(&mut self, mut p: Publish) -> Result<(), Exit> {
        if p.properties.is_some() {
            self.aliases.resolve(&mut p).map_err(Exit::Protocol)?;
            if p.properties
                .as_ref()
                .is_some_and(|props| !props.subscription_identifiers.is_empty())
            {
                return Err(Exit::Protocol(protocol::Error::Protocol(
                    "subscription identifier in a client's PUBLISH",
                )));
            }
        }
        let max_levels = self.broker.config.mqtt.max_topic_levels;
        if let Err(levels) = topic::check_levels(&p.topic, max_levels) {
            self.broker.stats.limits.topic_levels(TopicIn::Publish);
            return Err(Exit::Protocol(protocol::Error::TooManyTopicLevels {
                what: "PUBLISH topic",
                levels,
                max: max_levels,
            }));
        }
        self.traffic.messages_in[p.qos as usize] += 1;
        self.plugins.message_received(&p).await;
        if p.qos == QoS::ExactlyOnce {
            if self.state.incoming_qos2.contains(&p.pkid) {
                // Redelivered before its PUBREL came: acknowledged again, not routed again.
                self.out.ack(PacketType::PubRec, p.pkid);
                return Ok(());
            }
            let max = self.broker.config.mqtt.receive_maximum;
            if self.out.version().is_v5() && self.state.incoming_qos2.len() >= usize::from(max) {
                return Err(Exit::Protocol(protocol::Error::ReceiveMaximumExceeded(max)));
            }
        }
        let (reason, why) = if reserved_for_broker(&p.topic) {
            debug!(topic = %p.topic, "dropping a client publish to $SYS");
            (NOT_AUTHORIZED, None)
        } else {
            match self
                .plugins
                .decide(
                    CachedAction::Publish,
                    &p.topic,
                    p.qos,
                    p.retain,
                    p.properties.as_deref(),
                )
                .await
            {
                Decision::Allowed => (SUCCESS, None),
                Decision::Denied(denial) if protocol::puback_failure_code(denial.code) => {
                    (denial.code, denial.reason)
                }
                Decision::Denied(denial) => (NOT_AUTHORIZED, denial.reason),
                Decision::Failed => (NOT_AUTHORIZED, None),
            }
        };
        let properties = why
            .filter(|_| self.problem_information)
            .map(|why| Properties {
                reason_string: Some(why),
                ..Properties::default()
            });
        let properties = properties.as_ref();
        let (qos, pkid) = (p.qos, p.pkid);
        if reason == SUCCESS {
            let mut hold = None;
            if qos == QoS::ExactlyOnce {
                // The packet id and the copies routed land in one commit: a kill between
                // two would lose the message (the resend taken for a duplicate) or
                // deliver it twice (the resend routed again).
                hold = self.broker.store.as_ref().map(|s| s.hold());
                // Kept before routing: a redelivery from now on is not routed again.
                self.incoming_qos2(pkid);
            }
            let message = Arc::new(self.message_of(p));
            let outcome = route(&self.broker, &self.plugins, message, true, hold).await;
            if outcome.stored {
                self.after_store();
            }
            if outcome.gave_up && qos != QoS::AtMostOnce {
                // Not acknowledged: the publisher sends it again on its next connection.
                return Err(Exit::QueueFull(pkid));
            }
        }
        // Acknowledged with what was decided, after routing (a refused QoS 2 message ends
        // with its PUBREC: an MQTT 5 client sends no PUBREL after an error code, so
        // nothing is remembered).
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self
                .out
                .ack_reason(PacketType::PubAck, pkid, reason, properties),
            QoS::ExactlyOnce => self
                .out
                .ack_reason(PacketType::PubRec, pkid, reason, properties),
        }
        Ok(())
    }

    /// The message a client's PUBLISH makes: its MQTT 5 properties travel with it, its
    /// expiry interval counts from now.
    fn message_of(&self, p: Publish) -> Message {
        let expires_at = p
            .properties
            .as_ref()
            .and_then(|props| props.message_expiry_interval)
            .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
        Message::of_publish(p, expires_at, Some(self.state.id))
    }
}

/// MQTT 5 PUBACK and PUBREC reason codes (3.1.1 sends neither).
const SUCCESS: u8 = 0x00;
const NOT_AUTHORIZED: u8 = 0x87;
