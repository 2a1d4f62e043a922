//! Events, broker to plugin: one wire event to an [`Event`], skipping kinds this SDK does not
//! know; and back, for the testing harness.

use tandem_proto::v1 as pb;

use super::event_parts::{
    disconnect_reason_from, message_from, message_to, packet_from, packet_to, retained_action_from,
    subscription_from, subscription_to, system_time, timestamp,
};
use super::scalars::{
    addr, addr_string, byte, non_empty, packet_id, props_from, props_to, secs, to_secs,
};
use super::types::protocol_from;
use crate::events::{
    ClientConnected, ClientDisconnected, Event, EventData, ListenerInfo, MessageBroadcast,
    MessageReceived, RetainedMessage,
};

/// Converts one event; `None` for an event whose kind this SDK does not know (from a newer
/// broker): the contract says to skip it and still ack it.
pub(crate) fn event_from(e: pb::Event) -> Option<Event> {
    use pb::event::Kind as K;
    let data = match e.kind? {
        K::BrokerPreStart(x) => EventData::BrokerPreStart {
            broker_version: x.broker_version,
        },
        K::BrokerPostStart(x) => EventData::BrokerPostStart {
            listeners: x
                .listeners
                .into_iter()
                .map(|l| ListenerInfo {
                    name: l.name,
                    transport: l.transport,
                    bind_addr: l.bind_addr,
                })
                .collect(),
        },
        K::BrokerPreShutdown(x) => EventData::BrokerPreShutdown { reason: x.reason },
        K::BrokerPostShutdown(_) => EventData::BrokerPostShutdown,
        K::ClientConnected(x) => EventData::ClientConnected(ClientConnected {
            remote_addr: addr(&x.remote_addr),
            listener: x.listener,
            transport: x.transport,
            protocol_version: protocol_from(x.protocol_version),
            clean_start: x.clean_start,
            keepalive: secs(x.keepalive_secs),
            session_present: x.session_present,
            session_expiry: secs(x.session_expiry_interval_secs),
        }),
        K::ClientDisconnected(x) => EventData::ClientDisconnected(ClientDisconnected {
            reason: disconnect_reason_from(x.reason),
            reason_code: byte(x.reason_code),
            detail: x.detail,
            will_published: x.will_published,
            session_kept: x.session_kept,
        }),
        K::ClientSubscribed(x) => EventData::ClientSubscribed {
            subscriptions: x.subscriptions.into_iter().map(subscription_from).collect(),
            user_properties: props_from(x.user_properties),
        },
        K::ClientUnsubscribed(x) => EventData::ClientUnsubscribed {
            topic_filters: x.topic_filters,
            user_properties: props_from(x.user_properties),
        },
        K::MessageReceived(x) => EventData::MessageReceived(MessageReceived {
            message: message_from(x.message),
            packet_id: packet_id(x.packet_id),
            dup: x.dup,
        }),
        K::MessageBroadcast(x) => EventData::MessageBroadcast(MessageBroadcast {
            message: message_from(x.message),
            matched_subscriptions: x.matched_subscriptions,
        }),
        K::RetainedMessage(x) => EventData::RetainedMessage(RetainedMessage {
            action: retained_action_from(x.action),
            message: message_from(x.message),
            session_client_id: non_empty(x.session_client_id),
        }),
        K::MqttPacketReceived(x) => EventData::MqttPacketReceived(packet_from(x.packet)),
        K::MqttPacketSent(x) => EventData::MqttPacketSent(packet_from(x.packet)),
    };
    Some(Event {
        sequence: e.sequence,
        timestamp: system_time(e.timestamp),
        client: e.client.map(Into::into),
        data,
    })
}

impl From<Event> for pb::Event {
    fn from(e: Event) -> Self {
        use pb::event::Kind as K;
        let kind = match e.data {
            EventData::BrokerPreStart { broker_version } => {
                K::BrokerPreStart(pb::BrokerPreStart { broker_version })
            }
            EventData::BrokerPostStart { listeners } => K::BrokerPostStart(pb::BrokerPostStart {
                listeners: listeners
                    .into_iter()
                    .map(|l| pb::ListenerInfo {
                        name: l.name,
                        transport: l.transport,
                        bind_addr: l.bind_addr,
                    })
                    .collect(),
            }),
            EventData::BrokerPreShutdown { reason } => {
                K::BrokerPreShutdown(pb::BrokerPreShutdown { reason })
            }
            EventData::BrokerPostShutdown => K::BrokerPostShutdown(pb::BrokerPostShutdown {}),
            EventData::ClientConnected(x) => K::ClientConnected(pb::ClientConnected {
                remote_addr: addr_string(x.remote_addr),
                listener: x.listener,
                transport: x.transport,
                protocol_version: pb::ProtocolVersion::from(x.protocol_version).into(),
                clean_start: x.clean_start,
                keepalive_secs: to_secs(x.keepalive),
                session_present: x.session_present,
                session_expiry_interval_secs: to_secs(x.session_expiry),
            }),
            EventData::ClientDisconnected(x) => K::ClientDisconnected(pb::ClientDisconnected {
                reason: pb::DisconnectReason::from(x.reason).into(),
                reason_code: u32::from(x.reason_code),
                detail: x.detail,
                will_published: x.will_published,
                session_kept: x.session_kept,
            }),
            EventData::ClientSubscribed {
                subscriptions,
                user_properties,
            } => K::ClientSubscribed(pb::ClientSubscribed {
                subscriptions: subscriptions.into_iter().map(subscription_to).collect(),
                user_properties: props_to(user_properties),
            }),
            EventData::ClientUnsubscribed {
                topic_filters,
                user_properties,
            } => K::ClientUnsubscribed(pb::ClientUnsubscribed {
                topic_filters,
                user_properties: props_to(user_properties),
            }),
            EventData::MessageReceived(x) => K::MessageReceived(pb::MessageReceived {
                message: message_to(x.message),
                packet_id: x.packet_id.map(u32::from).unwrap_or(0),
                dup: x.dup,
            }),
            EventData::MessageBroadcast(x) => K::MessageBroadcast(pb::MessageBroadcast {
                message: message_to(x.message),
                matched_subscriptions: x.matched_subscriptions,
            }),
            EventData::RetainedMessage(x) => K::RetainedMessage(pb::RetainedMessage {
                action: pb::RetainedAction::from(x.action).into(),
                message: message_to(x.message),
                session_client_id: x.session_client_id.unwrap_or_default(),
            }),
            EventData::MqttPacketReceived(p) => K::MqttPacketReceived(pb::MqttPacketReceived {
                packet: packet_to(p),
            }),
            EventData::MqttPacketSent(p) => K::MqttPacketSent(pb::MqttPacketSent {
                packet: packet_to(p),
            }),
        };
        pb::Event {
            sequence: e.sequence,
            timestamp: Some(timestamp(e.timestamp)),
            client: e.client.map(Into::into),
            traceparent: String::new(),
            kind: Some(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::events::{
        DisconnectReason, Message, MqttPacket, PacketType, RetainedAction, Subscription,
    };
    use crate::types::{Client, ProtocolVersion};

    #[test]
    fn events_round_trip_through_the_wire_form() {
        let events = [
            EventData::BrokerPreStart {
                broker_version: "1.0".into(),
            },
            EventData::ClientConnected(ClientConnected {
                remote_addr: Some("127.0.0.1:1".parse().unwrap()),
                keepalive: Duration::from_secs(60),
                protocol_version: ProtocolVersion::V3_1_1,
                ..Default::default()
            }),
            EventData::ClientDisconnected(ClientDisconnected {
                reason: DisconnectReason::KeepaliveTimeout,
                ..Default::default()
            }),
            EventData::ClientSubscribed {
                subscriptions: vec![Subscription {
                    topic_filter: "a/#".into(),
                    requested_qos: 2,
                    reason_code: 0x80,
                    subscription_identifier: Some(7),
                    ..Default::default()
                }],
                user_properties: vec![("k".into(), "v".into())],
            },
            EventData::RetainedMessage(RetainedMessage {
                action: RetainedAction::Queued,
                message: Message {
                    topic: "t".into(),
                    payload: Some(b"hi".to_vec()),
                    payload_size: 2,
                    ..Default::default()
                },
                session_client_id: Some("offline".into()),
            }),
            EventData::MqttPacketSent(MqttPacket {
                packet_type: PacketType::Auth,
                packet_id: Some(12),
                ..Default::default()
            }),
        ];
        for (i, data) in events.into_iter().enumerate() {
            let event = Event {
                sequence: i as u64 + 1,
                timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                client: Some(Client::new("c").with_attribute("a", "b")),
                data,
            };
            let back = event_from(pb::Event::from(event.clone())).expect("known kind");
            assert_eq!(back, event);
        }
        let refused = Subscription {
            reason_code: 0x87,
            ..Default::default()
        };
        assert_eq!(refused.granted_qos(), None);
    }

    #[test]
    fn unknown_event_kinds_are_skipped() {
        let wire = pb::Event {
            sequence: 9,
            kind: None,
            ..Default::default()
        };
        assert!(event_from(wire).is_none());
    }
}
