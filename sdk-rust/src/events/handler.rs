//! The handler side of events: [`EventHandler`], and the [`EventSubscription`] that says which
//! events it sees (the plugin's `Describe` answer is the union of these).

use std::future::Future;

use super::event::Event;
use super::kind::EventKind;
use crate::context::Context;
use crate::error::HandlerError;
use crate::filter::topic_matches;

/// Receives broker events (aMQTT's `on_broker_*` methods, in one place).
///
/// ```
/// use tandem_plugin::{Context, Event, EventData, EventHandler, HandlerError};
///
/// struct Audit;
///
/// impl EventHandler for Audit {
///     async fn on_event(&self, _ctx: &Context, event: Event) -> Result<(), HandlerError> {
///         if let EventData::ClientConnected(connected) = &event.data {
///             let id = event.client.as_ref().map(|c| c.client_id.as_str()).unwrap_or("?");
///             println!("#{} {id} connected from {:?}", event.sequence, connected.remote_addr);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. The event is acked once this returns (`Ok` or `Err`).
    fn on_event(
        &self,
        ctx: &Context,
        event: Event,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Which events an [`EventHandler`] wants. The plugin's `Describe` answer is the union of its
/// handlers' subscriptions, and each handler only sees events matching its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSubscription {
    pub(crate) kinds: Vec<EventKind>,
    pub(crate) topics: Vec<String>,
    pub(crate) payloads: bool,
    pub(crate) raw_packets: bool,
}

impl EventSubscription {
    /// Subscribes to these kinds of event.
    pub fn new(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| *k as u8);
        kinds.dedup();
        EventSubscription {
            kinds,
            ..EventSubscription::default()
        }
    }

    /// Restricts message events (received, broadcast, retained) to topics matching these MQTT
    /// topic filters (`+` and `#` wildcards allowed). Without it, message events of every topic.
    pub fn topics<S: Into<String>>(mut self, filters: impl IntoIterator<Item = S>) -> Self {
        self.topics.extend(filters.into_iter().map(Into::into));
        self
    }

    /// Asks for message payloads in message events (otherwise only their size is sent).
    pub fn with_payloads(mut self) -> Self {
        self.payloads = true;
        self
    }

    /// Asks for the raw bytes of packets in packet events (otherwise only decoded header fields).
    pub fn with_raw_packets(mut self) -> Self {
        self.raw_packets = true;
        self
    }

    /// The kinds subscribed to.
    pub fn kinds(&self) -> &[EventKind] {
        &self.kinds
    }

    /// Whether this subscription wants this event.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        if !self.kinds.contains(&event.kind()) {
            return false;
        }
        match event.message() {
            Some(message) if !self.topics.is_empty() => self
                .topics
                .iter()
                .any(|filter| topic_matches(filter, &message.topic)),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::data::{ClientConnected, Message, MessageReceived};
    use crate::events::event::EventData;

    #[test]
    fn subscriptions_filter_message_events_by_topic_only() {
        let sub = EventSubscription::new([EventKind::MessageReceived, EventKind::ClientConnected])
            .topics(["sensors/#"]);
        let message = |topic: &str| {
            Event::new(
                1,
                EventData::MessageReceived(MessageReceived {
                    message: Message {
                        topic: topic.into(),
                        ..Message::default()
                    },
                    ..MessageReceived::default()
                }),
            )
        };
        assert!(sub.matches(&message("sensors/1/temp")));
        assert!(!sub.matches(&message("actuators/1")));
        assert!(sub.matches(&Event::new(
            2,
            EventData::ClientConnected(ClientConnected::default())
        )));
        assert!(!sub.matches(&Event::new(3, EventData::BrokerPostShutdown)));
    }

    #[test]
    fn subscription_kinds_are_deduplicated() {
        let sub = EventSubscription::new([
            EventKind::ClientDisconnected,
            EventKind::ClientConnected,
            EventKind::ClientDisconnected,
        ]);
        assert_eq!(
            sub.kinds(),
            [EventKind::ClientConnected, EventKind::ClientDisconnected]
        );
    }
}
