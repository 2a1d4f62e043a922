//! The requests and events the checks send: shaped as the broker's own, about a client
//! named `tandem-plugin-check` on topics under `tandem/check/`.

use std::collections::HashMap;

use tandem_proto::v1 as pb;

use super::unknown::append_unknown_fields;

/// The client every sample is about.
pub(super) const CLIENT_ID: &str = "tandem-plugin-check";

/// A CONNECT from `username` with `password` (none when `None`), MQTT 3.1.1 over TCP.
pub(super) fn authenticate(
    username: Option<&str>,
    password: Option<&str>,
) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        client_id: CLIENT_ID.into(),
        username: username.map(str::to_owned),
        password: password.map(|p| p.as_bytes().to_vec()),
        remote_addr: "127.0.0.1:50000".into(),
        listener: "default".into(),
        protocol_version: pb::ProtocolVersion::Mqtt311 as i32,
        clean_start: true,
        keepalive_secs: 60,
        transport: "tcp".into(),
        ..Default::default()
    }
}

/// A topic check of `action` on `topic` by `username`.
pub(super) fn topic_filter(
    action: pb::Action,
    topic: &str,
    username: &str,
) -> pb::TopicFilterRequest {
    pb::TopicFilterRequest {
        topic: topic.into(),
        action: action as i32,
        client_id: CLIENT_ID.into(),
        username: username.into(),
        connect_username: username.into(),
        attributes: HashMap::new(),
        qos: 1,
        protocol_version: pb::ProtocolVersion::Mqtt311 as i32,
        listener: "default".into(),
        remote_addr: "127.0.0.1:50000".into(),
        ..Default::default()
    }
}

/// The three actions a topic check asks about, with a topic (or filter) for each.
pub(super) const TOPIC_CHECKS: [(pb::Action, &str, &str); 3] = [
    (pb::Action::Publish, "publish", "tandem/check/topic"),
    (pb::Action::Subscribe, "subscribe", "tandem/check/#"),
    (pb::Action::Receive, "receive", "tandem/check/topic"),
];

/// A topic that the plugin's `message_topic_filters` match (the broker sends message
/// events on those topics only): the first filter with its wildcards filled in.
pub(super) fn message_topic(filters: &[String]) -> String {
    match filters.first() {
        None => "tandem/check/topic".into(),
        Some(f) => f
            .split('/')
            .map(|level| {
                if level == "+" || level == "#" {
                    "check"
                } else {
                    level
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// An event of `kind` with sequence `sequence`, as the broker would send it.
pub(super) fn event(kind: pb::EventKind, sequence: u64, topic: &str) -> pb::Event {
    use pb::event::Kind;
    let message = || pb::Message {
        topic: topic.into(),
        qos: 1,
        payload_size: 5,
        ..Default::default()
    };
    let packet = || pb::MqttPacket {
        packet_type: pb::PacketType::Pingreq as i32,
        size: 2,
        ..Default::default()
    };
    let body = match kind {
        // Not a kind a plugin can ask for; a lifecycle event stands in.
        pb::EventKind::Unspecified | pb::EventKind::BrokerPreStart => {
            Kind::BrokerPreStart(pb::BrokerPreStart {
                broker_version: env!("CARGO_PKG_VERSION").into(),
            })
        }
        pb::EventKind::BrokerPostStart => Kind::BrokerPostStart(pb::BrokerPostStart::default()),
        pb::EventKind::BrokerPreShutdown => Kind::BrokerPreShutdown(pb::BrokerPreShutdown {
            reason: "tandem plugin check".into(),
        }),
        pb::EventKind::BrokerPostShutdown => Kind::BrokerPostShutdown(pb::BrokerPostShutdown {}),
        pb::EventKind::ClientConnected => {
            // The client of the samples' CONNECT, let in.
            let connect = authenticate(None, None);
            Kind::ClientConnected(pb::ClientConnected {
                remote_addr: connect.remote_addr,
                listener: connect.listener,
                protocol_version: connect.protocol_version,
                clean_start: connect.clean_start,
                keepalive_secs: connect.keepalive_secs,
                transport: connect.transport,
                ..Default::default()
            })
        }
        pb::EventKind::ClientDisconnected => Kind::ClientDisconnected(pb::ClientDisconnected {
            reason: pb::DisconnectReason::Clean as i32,
            ..Default::default()
        }),
        pb::EventKind::ClientSubscribed => Kind::ClientSubscribed(pb::ClientSubscribed {
            subscriptions: vec![pb::Subscription {
                topic_filter: "tandem/check/#".into(),
                requested_qos: 1,
                reason_code: 1,
                ..Default::default()
            }],
            user_properties: Vec::new(),
        }),
        pb::EventKind::ClientUnsubscribed => Kind::ClientUnsubscribed(pb::ClientUnsubscribed {
            topic_filters: vec!["tandem/check/#".into()],
            user_properties: Vec::new(),
        }),
        pb::EventKind::MessageReceived => Kind::MessageReceived(pb::MessageReceived {
            message: Some(message()),
            packet_id: 1,
            dup: false,
        }),
        pb::EventKind::MessageBroadcast => Kind::MessageBroadcast(pb::MessageBroadcast {
            message: Some(message()),
            matched_subscriptions: 1,
        }),
        pb::EventKind::RetainedMessage => Kind::RetainedMessage(pb::RetainedMessage {
            action: pb::RetainedAction::Stored as i32,
            message: Some(message()),
            session_client_id: String::new(),
        }),
        pb::EventKind::MqttPacketReceived => Kind::MqttPacketReceived(pb::MqttPacketReceived {
            packet: Some(packet()),
        }),
        pb::EventKind::MqttPacketSent => Kind::MqttPacketSent(pb::MqttPacketSent {
            packet: Some(packet()),
        }),
    };
    let lifecycle = matches!(
        kind,
        pb::EventKind::Unspecified
            | pb::EventKind::BrokerPreStart
            | pb::EventKind::BrokerPostStart
            | pb::EventKind::BrokerPreShutdown
            | pb::EventKind::BrokerPostShutdown
    );
    pb::Event {
        sequence,
        timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        client: (!lifecycle).then(|| pb::ClientRef {
            client_id: CLIENT_ID.into(),
            username: "tandem-check".into(),
            attributes: HashMap::new(),
            connect_username: "tandem-check".into(),
        }),
        traceparent: String::new(),
        kind: Some(body),
    }
}

/// `Event.kind` field numbers are 10 + the kind's value; this one is far past the last.
const UNKNOWN_KIND_FIELD: u32 = 10 + 99;

/// An event of a kind the contract does not define (from a newer broker), with unknown
/// fields of its own: its encoding as one `EventBatch.events` element.
pub(super) fn unknown_kind_event(sequence: u64, buf: &mut Vec<u8>) {
    use prost::Message as _;
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut event = pb::Event {
        sequence,
        timestamp: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        ..Default::default()
    }
    .encode_to_vec();
    // The new kind's message: one field, itself unknown to every message here.
    let mut body = Vec::new();
    append_unknown_fields(&mut body);
    encode_key(UNKNOWN_KIND_FIELD, WireType::LengthDelimited, &mut event);
    encode_varint(body.len() as u64, &mut event);
    event.extend_from_slice(&body);
    append_unknown_fields(&mut event);
    // EventBatch.events is field 1.
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(event.len() as u64, buf);
    buf.extend_from_slice(&event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn an_unknown_kind_decodes_as_an_event_without_a_kind() {
        let mut buf = Vec::new();
        unknown_kind_event(7, &mut buf);
        pb::EventBatch {
            events: vec![event(pb::EventKind::ClientConnected, 8, "t")],
            dropped_events: 0,
        }
        .encode(&mut buf)
        .unwrap();
        let batch = pb::EventBatch::decode(&buf[..]).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert_eq!(
            (batch.events[0].sequence, &batch.events[0].kind),
            (7, &None)
        );
        assert_eq!(batch.events[1].sequence, 8);
    }

    #[test]
    fn message_topics_match_the_plugins_filters() {
        assert_eq!(message_topic(&[]), "tandem/check/topic");
        assert_eq!(
            message_topic(&["sensors/+/t/#".into()]),
            "sensors/check/t/check"
        );
    }
}
