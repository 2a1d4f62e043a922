//! A PUBLISH from the client: acknowledged, checked (PUBLISH) and routed.
//!
//! The acknowledgement is encoded first: 3.1.1 has no way to tell a publisher that its
//! message was denied, so a denied (or `$SYS/`) message is acknowledged and dropped.

use std::sync::Arc;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::broker::Broker;
use crate::plugins::cache::CachedAction;
use crate::plugins::client::ClientPlugins;
use crate::protocol::{self, PacketType, Publish, QoS};
use crate::router::topic;
use crate::server::connection::{Connection, Exit};
use crate::session::Message;
use crate::stats::TopicIn;

/// `$SYS/` belongs to the broker: no client publish, and no will, may write there.
pub(super) fn reserved_for_broker(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

/// Routes a message that passed its checks, on behalf of the client `plugins` speaks
/// for, and tells the plugins that want to hear of it. No extra reference to the
/// message is kept when no plugin wants events.
pub(super) async fn route(broker: &Broker, plugins: &ClientPlugins, message: Arc<Message>) {
    if !plugins.wants_events() {
        broker.router.publish(message);
        return;
    }
    let mut offline: Vec<ByteString> = Vec::new();
    let matched = if plugins.wants_queued() {
        broker
            .router
            .publish_noting_offline(message.clone(), |id| offline.push(id.clone()))
    } else {
        broker.router.publish(message.clone())
    };
    plugins.routed(&message, matched, &offline).await;
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Applies a PUBLISH: a topic deeper than `mqtt.max_topic_levels` closes the
    /// connection; otherwise it is acknowledged, then routed if allowed.
    pub(super) async fn on_publish(&mut self, p: Publish) -> Result<(), Exit> {
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
        let fresh = match p.qos {
            QoS::AtMostOnce => true,
            QoS::AtLeastOnce => {
                self.out.ack(PacketType::PubAck, p.pkid);
                true
            }
            QoS::ExactlyOnce => {
                self.out.ack(PacketType::PubRec, p.pkid);
                // A redelivered PUBLISH whose PUBREL has not come is not routed again.
                self.state.incoming_qos2.insert(p.pkid)
            }
        };
        if !fresh {
            return Ok(());
        }
        if reserved_for_broker(&p.topic) {
            debug!(topic = %p.topic, "dropping a client publish to $SYS");
            return Ok(());
        }
        if self
            .plugins
            .allowed(CachedAction::Publish, &p.topic, p.qos, p.retain)
            .await
        {
            let message = Arc::new(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
            });
            route(&self.broker, &self.plugins, message).await;
        }
        Ok(())
    }
}
