//! [`Event`]: one broker event as a handler receives it, and [`EventData`], what happened.

use std::time::SystemTime;

use super::data::{
    ClientConnected, ClientDisconnected, ListenerInfo, Message, MessageBroadcast, MessageReceived,
    MqttPacket, RetainedMessage, Subscription,
};
use super::kind::EventKind;
use crate::types::{Client, UserProperties};

/// One broker event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in this plugin alias's stream for the current broker process: starts at 1 and
    /// strictly increases; a resent event keeps its sequence, so skip any sequence already handled
    /// (and reset when [`Context::broker_instance_id`](crate::Context::broker_instance_id)
    /// changes). Gaps mean dropped events.
    pub sequence: u64,
    /// When the broker observed the event.
    pub timestamp: SystemTime,
    /// The client the event is about; `None` for broker lifecycle events.
    pub client: Option<Client>,
    /// What happened.
    pub data: EventData,
}

impl Event {
    /// An event with this sequence and data, stamped now, without a client.
    pub fn new(sequence: u64, data: EventData) -> Self {
        Event {
            sequence,
            timestamp: SystemTime::now(),
            client: None,
            data,
        }
    }

    /// Sets the client the event is about.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The application message, for message events.
    pub fn message(&self) -> Option<&Message> {
        match &self.data {
            EventData::MessageReceived(e) => Some(&e.message),
            EventData::MessageBroadcast(e) => Some(&e.message),
            EventData::RetainedMessage(e) => Some(&e.message),
            _ => None,
        }
    }
}

/// What happened, one variant per [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    /// The broker is about to open its listeners.
    BrokerPreStart {
        /// The broker's version.
        broker_version: String,
    },
    /// The broker's listeners are open.
    BrokerPostStart {
        /// The open listeners.
        listeners: Vec<ListenerInfo>,
    },
    /// The broker is about to stop.
    BrokerPreShutdown {
        /// Why (for example `SIGTERM`); empty when unknown.
        reason: String,
    },
    /// The broker has stopped serving clients.
    BrokerPostShutdown,
    /// A client connected.
    ClientConnected(ClientConnected),
    /// A client's connection ended.
    ClientDisconnected(ClientDisconnected),
    /// A client's SUBSCRIBE was answered.
    ClientSubscribed {
        /// Every filter of the packet with its outcome.
        subscriptions: Vec<Subscription>,
        /// MQTT 5 user properties of the packet.
        user_properties: UserProperties,
    },
    /// A client's UNSUBSCRIBE was answered.
    ClientUnsubscribed {
        /// The filters of the packet.
        topic_filters: Vec<String>,
        /// MQTT 5 user properties of the packet.
        user_properties: UserProperties,
    },
    /// A PUBLISH arrived, before any check.
    MessageReceived(MessageReceived),
    /// A PUBLISH passed the checks and is routed.
    MessageBroadcast(MessageBroadcast),
    /// A retained message was stored, cleared or queued.
    RetainedMessage(RetainedMessage),
    /// An MQTT packet was read from the client.
    MqttPacketReceived(MqttPacket),
    /// An MQTT packet was written to the client.
    MqttPacketSent(MqttPacket),
}

impl EventData {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::BrokerPreStart { .. } => EventKind::BrokerPreStart,
            EventData::BrokerPostStart { .. } => EventKind::BrokerPostStart,
            EventData::BrokerPreShutdown { .. } => EventKind::BrokerPreShutdown,
            EventData::BrokerPostShutdown => EventKind::BrokerPostShutdown,
            EventData::ClientConnected(_) => EventKind::ClientConnected,
            EventData::ClientDisconnected(_) => EventKind::ClientDisconnected,
            EventData::ClientSubscribed { .. } => EventKind::ClientSubscribed,
            EventData::ClientUnsubscribed { .. } => EventKind::ClientUnsubscribed,
            EventData::MessageReceived(_) => EventKind::MessageReceived,
            EventData::MessageBroadcast(_) => EventKind::MessageBroadcast,
            EventData::RetainedMessage(_) => EventKind::RetainedMessage,
            EventData::MqttPacketReceived(_) => EventKind::MqttPacketReceived,
            EventData::MqttPacketSent(_) => EventKind::MqttPacketSent,
        }
    }
}
