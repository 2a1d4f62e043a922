//! [`EventKind`]: the kinds of broker event, numbered as on the wire, and their snake-case names
//! (what configuration files and logs write).

/// The kinds of broker event (aMQTT's broker events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    /// The broker is about to open its listeners (delivered and acked before any client is served).
    BrokerPreStart = 1,
    /// The broker's listeners are open.
    BrokerPostStart = 2,
    /// The broker is about to stop.
    BrokerPreShutdown = 3,
    /// The broker has stopped serving (delivered and acked before the process exits).
    BrokerPostShutdown = 4,
    /// A client connected.
    ClientConnected = 5,
    /// A client's connection ended.
    ClientDisconnected = 6,
    /// A client's SUBSCRIBE was answered.
    ClientSubscribed = 7,
    /// A client's UNSUBSCRIBE was answered.
    ClientUnsubscribed = 8,
    /// A PUBLISH arrived, before any check.
    MessageReceived = 9,
    /// A PUBLISH passed the checks and is routed.
    MessageBroadcast = 10,
    /// A retained message was stored, cleared or queued for an offline session.
    RetainedMessage = 11,
    /// An MQTT packet was read (high volume).
    MqttPacketReceived = 12,
    /// An MQTT packet was written (high volume).
    MqttPacketSent = 13,
}

impl EventKind {
    /// Every kind, packet events included (they are high volume: ask for them only if needed).
    pub const ALL: [EventKind; 13] = [
        EventKind::BrokerPreStart,
        EventKind::BrokerPostStart,
        EventKind::BrokerPreShutdown,
        EventKind::BrokerPostShutdown,
        EventKind::ClientConnected,
        EventKind::ClientDisconnected,
        EventKind::ClientSubscribed,
        EventKind::ClientUnsubscribed,
        EventKind::MessageReceived,
        EventKind::MessageBroadcast,
        EventKind::RetainedMessage,
        EventKind::MqttPacketReceived,
        EventKind::MqttPacketSent,
    ];
}

impl EventKind {
    /// The kind's snake-case name, as aMQTT and the broker's docs write it
    /// (`client_connected`); [`FromStr`](std::str::FromStr) parses it back.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::BrokerPreStart => "broker_pre_start",
            EventKind::BrokerPostStart => "broker_post_start",
            EventKind::BrokerPreShutdown => "broker_pre_shutdown",
            EventKind::BrokerPostShutdown => "broker_post_shutdown",
            EventKind::ClientConnected => "client_connected",
            EventKind::ClientDisconnected => "client_disconnected",
            EventKind::ClientSubscribed => "client_subscribed",
            EventKind::ClientUnsubscribed => "client_unsubscribed",
            EventKind::MessageReceived => "message_received",
            EventKind::MessageBroadcast => "message_broadcast",
            EventKind::RetainedMessage => "retained_message",
            EventKind::MqttPacketReceived => "mqtt_packet_received",
            EventKind::MqttPacketSent => "mqtt_packet_sent",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?} (expected one of: {known})", known = EventKind::ALL.map(EventKind::name).join(", "))]
pub struct UnknownEventKind(pub String);

impl std::str::FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(kind.name().parse::<EventKind>(), Ok(kind));
        }
        assert_eq!(EventKind::MqttPacketSent.to_string(), "mqtt_packet_sent");
        let err = "client_connect".parse::<EventKind>().unwrap_err();
        assert!(err.to_string().contains("client_connected"), "{err}");
    }
}
