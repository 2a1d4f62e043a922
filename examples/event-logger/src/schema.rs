//! The JSON line written for each event: one stable schema, built from the SDK's typed events.
//!
//! Every line has the common fields `ts`, `seq`, `broker_instance_id`, `kind`, `client_id`,
//! `username` (the established identity), `connect_username` (as typed) and `attributes`, then
//! the fields of its kind (see the README for the table).
//! A field is always present for its kind: what the event does not carry is `null` (or empty
//! for lists), never missing, so a log pipeline can rely on the shape.

use std::time::Duration;

use base64::Engine as _;
use tandem_plugin::serde_json::{Map, Value, json};
use tandem_plugin::{
    ClientConnected, ClientDisconnected, DisconnectReason, Event, EventData, ListenerInfo, Message,
    MessageProperties, MqttPacket, PacketType, ProtocolVersion, RetainedAction, Subscription,
    UserProperties,
};

/// How message payloads (and correlation data) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadMode {
    /// Not asked for, not written: `payload` is `null` (only `payload_size` is known).
    None,
    /// As text when it is valid UTF-8, else as base64 (`payload_encoding` says which).
    Utf8,
    /// Always base64 (standard alphabet, padded).
    Base64,
}

/// The JSON object for one event.
pub(crate) fn line(event: &Event, broker_instance_id: &str, payloads: PayloadMode) -> Value {
    let mut out = Map::new();
    out.insert(
        "ts".into(),
        humantime::format_rfc3339_micros(event.timestamp)
            .to_string()
            .into(),
    );
    out.insert("seq".into(), event.sequence.into());
    out.insert("broker_instance_id".into(), broker_instance_id.into());
    out.insert("kind".into(), event.kind().name().into());
    let client = event.client.as_ref();
    out.insert("client_id".into(), json!(client.map(|c| &c.client_id)));
    out.insert(
        "username".into(),
        json!(client.and_then(|c| c.username.as_ref())),
    );
    out.insert(
        "connect_username".into(),
        json!(client.and_then(|c| c.connect_username.as_ref())),
    );
    // Sorted, so that equal attributes always print the same.
    let attributes: std::collections::BTreeMap<_, _> = client
        .map(|c| c.attributes.iter().collect())
        .unwrap_or_default();
    out.insert("attributes".into(), json!(attributes));
    kind_fields(&event.data, payloads, &mut out);
    Value::Object(out)
}

fn kind_fields(data: &EventData, payloads: PayloadMode, out: &mut Map<String, Value>) {
    let mut put = |key: &str, value: Value| {
        out.insert(key.to_owned(), value);
    };
    match data {
        EventData::BrokerPreStart { broker_version } => {
            put("broker_version", json!(broker_version))
        }
        EventData::BrokerPostStart { listeners } => {
            put("listeners", listeners.iter().map(listener).collect());
        }
        EventData::BrokerPreShutdown { reason } => put("reason", json!(reason)),
        EventData::BrokerPostShutdown => {}
        EventData::ClientConnected(c) => connected(c, put),
        EventData::ClientDisconnected(d) => disconnected(d, put),
        EventData::ClientSubscribed {
            subscriptions,
            user_properties,
        } => {
            put(
                "subscriptions",
                subscriptions.iter().map(subscription).collect(),
            );
            put("user_properties", properties_list(user_properties));
        }
        EventData::ClientUnsubscribed {
            topic_filters,
            user_properties,
        } => {
            put("filters", json!(topic_filters));
            put("user_properties", properties_list(user_properties));
        }
        EventData::MessageReceived(m) => {
            message(&m.message, payloads, &mut put);
            put("packet_id", json!(m.packet_id));
            put("dup", json!(m.dup));
        }
        EventData::MessageBroadcast(m) => {
            message(&m.message, payloads, &mut put);
            put("matched_subscriptions", json!(m.matched_subscriptions));
        }
        EventData::RetainedMessage(r) => {
            put("action", json!(retained_action(r.action)));
            message(&r.message, payloads, &mut put);
            put("session_client_id", json!(r.session_client_id));
        }
        EventData::MqttPacketReceived(p) | EventData::MqttPacketSent(p) => packet(p, put),
    }
}

fn listener(l: &ListenerInfo) -> Value {
    json!({ "name": l.name, "transport": l.transport, "bind_addr": l.bind_addr })
}

fn connected(c: &ClientConnected, mut put: impl FnMut(&str, Value)) {
    put("remote_addr", json!(c.remote_addr.map(|a| a.to_string())));
    put("listener", json!(c.listener));
    put("transport", json!(c.transport));
    put("protocol_version", json!(protocol(c.protocol_version)));
    put("clean_start", json!(c.clean_start));
    put("keepalive_secs", json!(c.keepalive.as_secs()));
    put("session_present", json!(c.session_present));
    put("session_expiry_secs", json!(c.session_expiry.as_secs()));
}

fn disconnected(d: &ClientDisconnected, mut put: impl FnMut(&str, Value)) {
    put("reason", json!(disconnect_reason(d.reason)));
    put("reason_code", json!(d.reason_code));
    put("detail", json!(d.detail));
    put("will_published", json!(d.will_published));
    put("session_kept", json!(d.session_kept));
}

fn subscription(s: &Subscription) -> Value {
    json!({
        "filter": s.topic_filter,
        "requested_qos": s.requested_qos,
        "reason_code": s.reason_code,
        "granted_qos": s.granted_qos(),
        "no_local": s.no_local,
        "retain_as_published": s.retain_as_published,
        "retain_handling": s.retain_handling,
        "subscription_identifier": s.subscription_identifier,
    })
}

/// The fields of an application message, flattened into the line.
fn message(m: &Message, payloads: PayloadMode, put: &mut impl FnMut(&str, Value)) {
    put("topic", json!(m.topic));
    put("qos", json!(m.qos));
    put("retain", json!(m.retain));
    put("payload_size", json!(m.payload_size));
    let (payload, encoding) = match (&m.payload, payloads) {
        (Some(bytes), PayloadMode::Utf8) => match std::str::from_utf8(bytes) {
            Ok(text) => (json!(text), json!("utf8")),
            Err(_) => (json!(base64(bytes)), json!("base64")),
        },
        (Some(bytes), PayloadMode::Base64) => (json!(base64(bytes)), json!("base64")),
        (_, _) => (Value::Null, Value::Null),
    };
    put("payload", payload);
    put("payload_encoding", encoding);
    put(
        "properties",
        json!(m.properties.as_ref().map(message_properties)),
    );
}

fn message_properties(p: &MessageProperties) -> Value {
    json!({
        "payload_is_utf8": p.payload_is_utf8,
        "message_expiry_secs": p.message_expiry.map(|d: Duration| d.as_secs()),
        "content_type": p.content_type,
        "response_topic": p.response_topic,
        "correlation_data": p.correlation_data.as_deref().map(base64),
        "user_properties": properties_list(&p.user_properties),
    })
}

fn packet(p: &MqttPacket, mut put: impl FnMut(&str, Value)) {
    put("packet_type", json!(packet_type(p.packet_type)));
    put("flags", json!(p.flags));
    put("size", json!(p.size));
    put("packet_id", json!(p.packet_id));
    put("topic", json!(p.topic));
    put("qos", json!(p.qos));
    put("retain", json!(p.retain));
    put("dup", json!(p.dup));
    put("reason_code", json!(p.reason_code));
    put("raw", json!(p.raw.as_deref().map(base64)));
}

/// In order, duplicates kept (MQTT 5 allows both).
fn properties_list(props: &UserProperties) -> Value {
    props
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn protocol(v: ProtocolVersion) -> Option<&'static str> {
    match v {
        ProtocolVersion::Unknown => None,
        ProtocolVersion::V3_1 => Some("3.1"),
        ProtocolVersion::V3_1_1 => Some("3.1.1"),
        ProtocolVersion::V5 => Some("5"),
    }
}

fn disconnect_reason(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::Unknown => "unknown",
        DisconnectReason::Clean => "clean",
        DisconnectReason::ConnectionLost => "connection_lost",
        DisconnectReason::KeepaliveTimeout => "keepalive_timeout",
        DisconnectReason::ProtocolError => "protocol_error",
        DisconnectReason::Takeover => "takeover",
        DisconnectReason::Shutdown => "shutdown",
        DisconnectReason::NotAuthorized => "not_authorized",
        DisconnectReason::Administrative => "administrative",
        DisconnectReason::Other => "other",
    }
}

fn retained_action(a: RetainedAction) -> &'static str {
    match a {
        RetainedAction::Unknown => "unknown",
        RetainedAction::Stored => "stored",
        RetainedAction::Cleared => "cleared",
        RetainedAction::Queued => "queued",
    }
}

fn packet_type(t: PacketType) -> &'static str {
    match t {
        PacketType::Unknown => "unknown",
        PacketType::Connect => "connect",
        PacketType::Connack => "connack",
        PacketType::Publish => "publish",
        PacketType::Puback => "puback",
        PacketType::Pubrec => "pubrec",
        PacketType::Pubrel => "pubrel",
        PacketType::Pubcomp => "pubcomp",
        PacketType::Subscribe => "subscribe",
        PacketType::Suback => "suback",
        PacketType::Unsubscribe => "unsubscribe",
        PacketType::Unsuback => "unsuback",
        PacketType::Pingreq => "pingreq",
        PacketType::Pingresp => "pingresp",
        PacketType::Disconnect => "disconnect",
        PacketType::Auth => "auth",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;
    use tandem_plugin::{Client, MessageReceived};

    fn received(payload: &[u8]) -> Event {
        let mut e = Event::new(
            7,
            EventData::MessageReceived(MessageReceived {
                message: Message {
                    topic: "a/b".into(),
                    qos: 1,
                    retain: false,
                    payload: Some(payload.to_vec()),
                    payload_size: payload.len() as u32,
                    properties: None,
                },
                packet_id: Some(3),
                dup: false,
            }),
        )
        .with_client(
            Client::new("c1")
                .with_username("alice")
                .with_connect_username("al")
                .with_attribute("tenant", "acme"),
        );
        e.timestamp = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        e
    }

    #[test]
    fn common_and_message_fields() {
        let v = line(&received(b"hello"), "inst", PayloadMode::Utf8);
        assert_eq!(
            v,
            json!({
                "ts": "2023-11-14T22:13:20.123456Z",
                "seq": 7,
                "broker_instance_id": "inst",
                "kind": "message_received",
                "client_id": "c1",
                "username": "alice",
                "connect_username": "al",
                "attributes": { "tenant": "acme" },
                "topic": "a/b",
                "qos": 1,
                "retain": false,
                "payload_size": 5,
                "payload": "hello",
                "payload_encoding": "utf8",
                "properties": null,
                "packet_id": 3,
                "dup": false,
            })
        );
    }

    #[test]
    fn payload_modes() {
        let bin = [0xff, 0x00, 0x41];
        let v = line(&received(&bin), "i", PayloadMode::Utf8);
        assert_eq!(
            (&v["payload"], &v["payload_encoding"]),
            (&json!("/wBB"), &json!("base64"))
        );
        let v = line(&received(b"hi"), "i", PayloadMode::Base64);
        assert_eq!(
            (&v["payload"], &v["payload_encoding"]),
            (&json!("aGk="), &json!("base64"))
        );
        let v = line(&received(b"hi"), "i", PayloadMode::None);
        assert_eq!(
            (&v["payload"], &v["payload_encoding"]),
            (&Value::Null, &Value::Null)
        );
    }

    #[test]
    fn broker_events_have_no_client() {
        let v = line(
            &Event::new(1, EventData::BrokerPostShutdown),
            "i",
            PayloadMode::None,
        );
        assert_eq!(v["client_id"], Value::Null);
        assert_eq!(v["username"], Value::Null);
        assert_eq!(v["connect_username"], Value::Null);
        assert_eq!(v["attributes"], json!({}));
        assert_eq!(v["kind"], "broker_post_shutdown");
    }
}
