//! The pieces events are made of, to and from the wire: kinds, disconnect reasons, retained
//! actions, packet types, timestamps, messages, packets and subscriptions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_proto::v1 as pb;

use super::scalars::{byte, non_empty, non_empty_bytes, packet_id};
use crate::error::Error;
use crate::events::{
    DisconnectReason, EventKind, Message, MqttPacket, PacketType, RetainedAction, Subscription,
};

impl From<EventKind> for pb::EventKind {
    fn from(k: EventKind) -> Self {
        // The domain discriminants are the protobuf values (see `EventKind`'s `repr(u8)`).
        pb::EventKind::try_from(i32::from(k as u8)).unwrap_or(pb::EventKind::Unspecified)
    }
}

impl TryFrom<pb::EventKind> for EventKind {
    type Error = Error;
    fn try_from(k: pb::EventKind) -> Result<Self, Error> {
        EventKind::ALL
            .into_iter()
            .find(|kind| *kind as i32 == k as i32)
            .ok_or(Error::InvalidRequest {
                field: "event_kinds",
                reason: "EVENT_KIND_UNSPECIFIED".into(),
            })
    }
}

pub(super) fn disconnect_reason_from(raw: i32) -> DisconnectReason {
    use pb::DisconnectReason as P;
    match P::try_from(raw) {
        Ok(P::Clean) => DisconnectReason::Clean,
        Ok(P::ConnectionLost) => DisconnectReason::ConnectionLost,
        Ok(P::KeepaliveTimeout) => DisconnectReason::KeepaliveTimeout,
        Ok(P::ProtocolError) => DisconnectReason::ProtocolError,
        Ok(P::Takeover) => DisconnectReason::Takeover,
        Ok(P::Shutdown) => DisconnectReason::Shutdown,
        Ok(P::NotAuthorized) => DisconnectReason::NotAuthorized,
        Ok(P::Administrative) => DisconnectReason::Administrative,
        Ok(P::Other) => DisconnectReason::Other,
        Ok(P::Unspecified) | Err(_) => DisconnectReason::Unknown,
    }
}

impl From<DisconnectReason> for pb::DisconnectReason {
    fn from(r: DisconnectReason) -> Self {
        use pb::DisconnectReason as P;
        match r {
            DisconnectReason::Unknown => P::Unspecified,
            DisconnectReason::Clean => P::Clean,
            DisconnectReason::ConnectionLost => P::ConnectionLost,
            DisconnectReason::KeepaliveTimeout => P::KeepaliveTimeout,
            DisconnectReason::ProtocolError => P::ProtocolError,
            DisconnectReason::Takeover => P::Takeover,
            DisconnectReason::Shutdown => P::Shutdown,
            DisconnectReason::NotAuthorized => P::NotAuthorized,
            DisconnectReason::Administrative => P::Administrative,
            DisconnectReason::Other => P::Other,
        }
    }
}

pub(super) fn retained_action_from(raw: i32) -> RetainedAction {
    match pb::RetainedAction::try_from(raw) {
        Ok(pb::RetainedAction::Stored) => RetainedAction::Stored,
        Ok(pb::RetainedAction::Cleared) => RetainedAction::Cleared,
        Ok(pb::RetainedAction::Queued) => RetainedAction::Queued,
        Ok(pb::RetainedAction::Unspecified) | Err(_) => RetainedAction::Unknown,
    }
}

impl From<RetainedAction> for pb::RetainedAction {
    fn from(a: RetainedAction) -> Self {
        match a {
            RetainedAction::Unknown => pb::RetainedAction::Unspecified,
            RetainedAction::Stored => pb::RetainedAction::Stored,
            RetainedAction::Cleared => pb::RetainedAction::Cleared,
            RetainedAction::Queued => pb::RetainedAction::Queued,
        }
    }
}

const PACKET_TYPES: [PacketType; 16] = [
    PacketType::Unknown,
    PacketType::Connect,
    PacketType::Connack,
    PacketType::Publish,
    PacketType::Puback,
    PacketType::Pubrec,
    PacketType::Pubrel,
    PacketType::Pubcomp,
    PacketType::Subscribe,
    PacketType::Suback,
    PacketType::Unsubscribe,
    PacketType::Unsuback,
    PacketType::Pingreq,
    PacketType::Pingresp,
    PacketType::Disconnect,
    PacketType::Auth,
];

pub(super) fn packet_type_from(raw: i32) -> PacketType {
    // The protobuf values are the fixed header's packet type numbers, 1 to 15.
    usize::try_from(raw)
        .ok()
        .and_then(|i| PACKET_TYPES.get(i).copied())
        .unwrap_or(PacketType::Unknown)
}

pub(super) fn packet_type_to(t: PacketType) -> i32 {
    PACKET_TYPES
        .iter()
        .position(|p| *p == t)
        .and_then(|i| i32::try_from(i).ok())
        .unwrap_or(0)
}

pub(super) fn system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
    let Some(ts) = ts else { return UNIX_EPOCH };
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

pub(super) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

pub(super) fn message_from(m: Option<pb::Message>) -> Message {
    let m = m.unwrap_or_default();
    Message {
        topic: m.topic,
        qos: byte(m.qos),
        retain: m.retain,
        payload: non_empty_bytes(m.payload),
        payload_size: m.payload_size,
        properties: m.properties.map(Into::into),
    }
}

pub(super) fn message_to(m: Message) -> Option<pb::Message> {
    Some(pb::Message {
        topic: m.topic,
        qos: u32::from(m.qos),
        retain: m.retain,
        payload: m.payload.unwrap_or_default(),
        payload_size: m.payload_size,
        properties: m.properties.map(Into::into),
    })
}

pub(super) fn packet_from(p: Option<pb::MqttPacket>) -> MqttPacket {
    let p = p.unwrap_or_default();
    MqttPacket {
        packet_type: packet_type_from(p.packet_type),
        flags: byte(p.flags),
        size: p.size,
        packet_id: packet_id(p.packet_id),
        topic: non_empty(p.topic),
        qos: byte(p.qos),
        retain: p.retain,
        dup: p.dup,
        reason_code: byte(p.reason_code),
        raw: non_empty_bytes(p.raw),
    }
}

pub(super) fn packet_to(p: MqttPacket) -> Option<pb::MqttPacket> {
    Some(pb::MqttPacket {
        packet_type: packet_type_to(p.packet_type),
        flags: u32::from(p.flags),
        size: p.size,
        packet_id: p.packet_id.map(u32::from).unwrap_or(0),
        topic: p.topic.unwrap_or_default(),
        qos: u32::from(p.qos),
        retain: p.retain,
        dup: p.dup,
        reason_code: u32::from(p.reason_code),
        raw: p.raw.unwrap_or_default(),
    })
}

pub(super) fn subscription_from(s: pb::Subscription) -> Subscription {
    Subscription {
        topic_filter: s.topic_filter,
        requested_qos: byte(s.requested_qos),
        reason_code: byte(s.reason_code),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: byte(s.retain_handling),
        subscription_identifier: (s.subscription_identifier != 0)
            .then_some(s.subscription_identifier),
    }
}

pub(super) fn subscription_to(s: Subscription) -> pb::Subscription {
    pb::Subscription {
        topic_filter: s.topic_filter,
        requested_qos: u32::from(s.requested_qos),
        reason_code: u32::from(s.reason_code),
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        retain_handling: u32::from(s.retain_handling),
        subscription_identifier: s.subscription_identifier.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_match_the_proto_values() {
        for kind in EventKind::ALL {
            let wire = pb::EventKind::from(kind);
            assert_ne!(wire, pb::EventKind::Unspecified);
            assert_eq!(EventKind::try_from(wire).unwrap(), kind);
            // Kind N travels in oneof field 10 + N: check the names line up too.
            let name = wire
                .as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .replace('_', "");
            assert_eq!(name, format!("{kind:?}").to_uppercase());
        }
    }
}
