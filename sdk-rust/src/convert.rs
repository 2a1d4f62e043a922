//! Every conversion between the protobuf types of `tandem-proto` and the SDK's domain types.
//!
//! Broker to plugin (requests, events): lenient, as the contract says what each zero value means.
//! Plugin to broker (decisions): exact. The reverse directions exist for the testing harness,
//! which talks to the plugin through the real gRPC codec as the broker does.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::value::Kind;
use tandem_proto::v1 as pb;

use crate::events::{
    ClientConnected, ClientDisconnected, DisconnectReason, Event, EventData, EventKind,
    ListenerInfo, Message, MessageBroadcast, MessageProperties, MessageReceived, MqttPacket,
    PacketType, RetainedAction, RetainedMessage, Subscription,
};
use crate::{
    Action, AuthDecision, AuthRequest, Client, Error, ProtocolVersion, Role, TlsInfo,
    TopicDecision, TopicRequest, UserProperties, Verdict, Will,
};

// ---- small helpers ------------------------------------------------------------------------

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn non_empty_bytes(b: Vec<u8>) -> Option<Vec<u8>> {
    (!b.is_empty()).then_some(b)
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

fn to_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Values that do not fit (a broken peer) saturate rather than wrap.
fn byte(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn packet_id(n: u32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&id| id != 0)
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

fn addr_string(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

fn props_from(pb: Vec<pb::UserProperty>) -> UserProperties {
    pb.into_iter().map(|p| (p.key, p.value)).collect()
}

fn props_to(props: UserProperties) -> Vec<pb::UserProperty> {
    props
        .into_iter()
        .map(|(key, value)| pb::UserProperty { key, value })
        .collect()
}

// ---- enums --------------------------------------------------------------------------------

impl From<Verdict> for pb::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => pb::Verdict::Allow,
            Verdict::Deny => pb::Verdict::Deny,
            Verdict::Abstain => pb::Verdict::Abstain,
        }
    }
}

fn verdict_from(raw: i32) -> Result<Verdict, Error> {
    match pb::Verdict::try_from(raw) {
        Ok(pb::Verdict::Allow) => Ok(Verdict::Allow),
        Ok(pb::Verdict::Deny) => Ok(Verdict::Deny),
        Ok(pb::Verdict::Abstain) => Ok(Verdict::Abstain),
        Ok(pb::Verdict::Unspecified) | Err(_) => Err(Error::InvalidResponse {
            field: "verdict",
            reason: format!(
                "{raw} is not ALLOW, DENY or ABSTAIN (the broker treats it as an error)"
            ),
        }),
    }
}

impl From<Action> for pb::Action {
    fn from(a: Action) -> Self {
        match a {
            Action::Publish => pb::Action::Publish,
            Action::Subscribe => pb::Action::Subscribe,
            Action::Receive => pb::Action::Receive,
        }
    }
}

impl TryFrom<pb::Action> for Action {
    type Error = Error;
    fn try_from(a: pb::Action) -> Result<Self, Error> {
        match a {
            pb::Action::Publish => Ok(Action::Publish),
            pb::Action::Subscribe => Ok(Action::Subscribe),
            pb::Action::Receive => Ok(Action::Receive),
            pb::Action::Unspecified => Err(Error::InvalidRequest {
                field: "action",
                reason: "ACTION_UNSPECIFIED".into(),
            }),
        }
    }
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Authenticate => pb::Role::Authenticate,
            Role::TopicFilter => pb::Role::TopicFilter,
        }
    }
}

fn protocol_from(raw: i32) -> ProtocolVersion {
    match pb::ProtocolVersion::try_from(raw) {
        Ok(pb::ProtocolVersion::Mqtt31) => ProtocolVersion::V3_1,
        Ok(pb::ProtocolVersion::Mqtt311) => ProtocolVersion::V3_1_1,
        Ok(pb::ProtocolVersion::Mqtt5) => ProtocolVersion::V5,
        Ok(pb::ProtocolVersion::Unspecified) | Err(_) => ProtocolVersion::Unknown,
    }
}

impl From<ProtocolVersion> for pb::ProtocolVersion {
    fn from(p: ProtocolVersion) -> Self {
        match p {
            ProtocolVersion::Unknown => pb::ProtocolVersion::Unspecified,
            ProtocolVersion::V3_1 => pb::ProtocolVersion::Mqtt31,
            ProtocolVersion::V3_1_1 => pb::ProtocolVersion::Mqtt311,
            ProtocolVersion::V5 => pb::ProtocolVersion::Mqtt5,
        }
    }
}

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

fn disconnect_reason_from(raw: i32) -> DisconnectReason {
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

fn retained_action_from(raw: i32) -> RetainedAction {
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

fn packet_type_from(raw: i32) -> PacketType {
    // The protobuf values are the fixed header's packet type numbers, 1 to 15.
    usize::try_from(raw)
        .ok()
        .and_then(|i| PACKET_TYPES.get(i).copied())
        .unwrap_or(PacketType::Unknown)
}

fn packet_type_to(t: PacketType) -> i32 {
    PACKET_TYPES
        .iter()
        .position(|p| *p == t)
        .and_then(|i| i32::try_from(i).ok())
        .unwrap_or(0)
}

// ---- shared messages ----------------------------------------------------------------------

impl From<pb::ClientRef> for Client {
    fn from(c: pb::ClientRef) -> Self {
        Client {
            client_id: c.client_id,
            username: non_empty(c.username),
            attributes: c.attributes,
            connect_username: non_empty(c.connect_username),
        }
    }
}

impl From<Client> for pb::ClientRef {
    fn from(c: Client) -> Self {
        pb::ClientRef {
            client_id: c.client_id,
            username: c.username.unwrap_or_default(),
            attributes: c.attributes,
            connect_username: c.connect_username.unwrap_or_default(),
        }
    }
}

impl From<pb::MessageProperties> for MessageProperties {
    fn from(p: pb::MessageProperties) -> Self {
        MessageProperties {
            payload_is_utf8: p.payload_is_utf8,
            message_expiry: (p.message_expiry_interval_secs != 0)
                .then(|| secs(p.message_expiry_interval_secs)),
            content_type: non_empty(p.content_type),
            response_topic: non_empty(p.response_topic),
            correlation_data: non_empty_bytes(p.correlation_data),
            user_properties: props_from(p.user_properties),
        }
    }
}

impl From<MessageProperties> for pb::MessageProperties {
    fn from(p: MessageProperties) -> Self {
        pb::MessageProperties {
            payload_is_utf8: p.payload_is_utf8,
            message_expiry_interval_secs: p.message_expiry.map(to_secs).unwrap_or(0),
            content_type: p.content_type.unwrap_or_default(),
            response_topic: p.response_topic.unwrap_or_default(),
            correlation_data: p.correlation_data.unwrap_or_default(),
            user_properties: props_to(p.user_properties),
        }
    }
}

impl From<pb::Will> for Will {
    fn from(w: pb::Will) -> Self {
        Will {
            topic: w.topic,
            qos: byte(w.qos),
            retain: w.retain,
            payload: w.payload,
            delay: secs(w.delay_interval_secs),
            properties: w.properties.map(Into::into),
        }
    }
}

impl From<Will> for pb::Will {
    fn from(w: Will) -> Self {
        pb::Will {
            topic: w.topic,
            qos: u32::from(w.qos),
            retain: w.retain,
            payload: w.payload,
            delay_interval_secs: to_secs(w.delay),
            properties: w.properties.map(Into::into),
        }
    }
}

impl From<pb::TlsInfo> for TlsInfo {
    fn from(t: pb::TlsInfo) -> Self {
        TlsInfo {
            peer_certificate_der: non_empty_bytes(t.peer_certificate_der),
            peer_subject: non_empty(t.peer_subject),
            peer_sans: t.peer_sans,
            server_name: non_empty(t.server_name),
            tls_version: non_empty(t.tls_version),
            cipher_suite: non_empty(t.cipher_suite),
            alpn_protocol: non_empty(t.alpn_protocol),
        }
    }
}

impl From<TlsInfo> for pb::TlsInfo {
    fn from(t: TlsInfo) -> Self {
        pb::TlsInfo {
            peer_certificate_der: t.peer_certificate_der.unwrap_or_default(),
            peer_subject: t.peer_subject.unwrap_or_default(),
            peer_sans: t.peer_sans,
            server_name: t.server_name.unwrap_or_default(),
            tls_version: t.tls_version.unwrap_or_default(),
            cipher_suite: t.cipher_suite.unwrap_or_default(),
            alpn_protocol: t.alpn_protocol.unwrap_or_default(),
        }
    }
}

// ---- Authenticate -------------------------------------------------------------------------

impl From<pb::AuthenticateRequest> for AuthRequest {
    fn from(r: pb::AuthenticateRequest) -> Self {
        AuthRequest {
            protocol_version: protocol_from(r.protocol_version),
            client_id: r.client_id,
            username: r.username,
            password: r.password,
            remote_addr: addr(&r.remote_addr),
            listener: r.listener,
            clean_start: r.clean_start,
            keepalive: secs(r.keepalive_secs),
            session_expiry: secs(r.session_expiry_interval_secs),
            will: r.will.map(Into::into),
            tls: r.tls.map(Into::into),
            auth_method: non_empty(r.auth_method),
            auth_data: non_empty_bytes(r.auth_data),
            user_properties: props_from(r.user_properties),
            auth_step: r.auth_step,
            auth_context: r.auth_context,
            reauthentication: r.reauthentication,
            attributes: r.attributes,
        }
    }
}

impl From<AuthRequest> for pb::AuthenticateRequest {
    fn from(r: AuthRequest) -> Self {
        pb::AuthenticateRequest {
            client_id: r.client_id,
            username: r.username,
            password: r.password,
            remote_addr: addr_string(r.remote_addr),
            listener: r.listener,
            protocol_version: pb::ProtocolVersion::from(r.protocol_version).into(),
            clean_start: r.clean_start,
            keepalive_secs: to_secs(r.keepalive),
            will: r.will.map(Into::into),
            tls: r.tls.map(Into::into),
            auth_method: r.auth_method.unwrap_or_default(),
            auth_data: r.auth_data.unwrap_or_default(),
            user_properties: props_to(r.user_properties),
            session_expiry_interval_secs: to_secs(r.session_expiry),
            auth_step: r.auth_step,
            auth_context: r.auth_context,
            reauthentication: r.reauthentication,
            attributes: r.attributes,
        }
    }
}

impl From<AuthDecision> for pb::AuthenticateResponse {
    fn from(d: AuthDecision) -> Self {
        pb::AuthenticateResponse {
            verdict: pb::Verdict::from(d.verdict).into(),
            reason: d.reason,
            reason_code: d.reason_code.map(u32::from).unwrap_or(0),
            attributes: d.attributes,
            auth_continue: None,
            auth_data: Vec::new(),
            user_properties: props_to(d.user_properties),
            identity: d.identity.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::AuthenticateResponse> for AuthDecision {
    type Error = Error;
    fn try_from(r: pb::AuthenticateResponse) -> Result<Self, Error> {
        Ok(AuthDecision {
            verdict: verdict_from(r.verdict)?,
            reason: r.reason,
            reason_code: (r.reason_code != 0).then(|| byte(r.reason_code)),
            attributes: r.attributes,
            user_properties: props_from(r.user_properties),
            identity: non_empty(r.identity),
        })
    }
}

// ---- TopicFilter --------------------------------------------------------------------------

impl TryFrom<pb::TopicFilterRequest> for TopicRequest {
    type Error = Error;
    fn try_from(r: pb::TopicFilterRequest) -> Result<Self, Error> {
        let action = pb::Action::try_from(r.action).map_err(|_| Error::InvalidRequest {
            field: "action",
            reason: format!("unknown value {}", r.action),
        })?;
        Ok(TopicRequest {
            action: action.try_into()?,
            protocol_version: protocol_from(r.protocol_version),
            remote_addr: addr(&r.remote_addr),
            topic: r.topic,
            client: Client {
                client_id: r.client_id,
                username: non_empty(r.username),
                attributes: r.attributes,
                connect_username: non_empty(r.connect_username),
            },
            qos: byte(r.qos),
            retain: r.retain,
            user_properties: props_from(r.user_properties),
            listener: r.listener,
        })
    }
}

impl From<TopicRequest> for pb::TopicFilterRequest {
    fn from(r: TopicRequest) -> Self {
        pb::TopicFilterRequest {
            topic: r.topic,
            action: pb::Action::from(r.action).into(),
            client_id: r.client.client_id,
            username: r.client.username.unwrap_or_default(),
            connect_username: r.client.connect_username.unwrap_or_default(),
            attributes: r.client.attributes,
            qos: u32::from(r.qos),
            retain: r.retain,
            protocol_version: pb::ProtocolVersion::from(r.protocol_version).into(),
            user_properties: props_to(r.user_properties),
            listener: r.listener,
            remote_addr: addr_string(r.remote_addr),
        }
    }
}

impl From<TopicDecision> for pb::TopicFilterResponse {
    fn from(d: TopicDecision) -> Self {
        pb::TopicFilterResponse {
            verdict: pb::Verdict::from(d.verdict).into(),
            reason: d.reason,
            // Sub-millisecond TTLs round down to "do not cache"; huge ones saturate.
            cache_ttl_ms: u32::try_from(d.cache_ttl.as_millis()).unwrap_or(u32::MAX),
            reason_code: d.reason_code.map(u32::from).unwrap_or(0),
        }
    }
}

impl TryFrom<pb::TopicFilterResponse> for TopicDecision {
    type Error = Error;
    fn try_from(r: pb::TopicFilterResponse) -> Result<Self, Error> {
        Ok(TopicDecision {
            verdict: verdict_from(r.verdict)?,
            reason: r.reason,
            cache_ttl: Duration::from_millis(u64::from(r.cache_ttl_ms)),
            reason_code: (r.reason_code != 0).then(|| byte(r.reason_code)),
        })
    }
}

// ---- Events -------------------------------------------------------------------------------

pub(crate) fn system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
    let Some(ts) = ts else { return UNIX_EPOCH };
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

fn message_from(m: Option<pb::Message>) -> Message {
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

fn message_to(m: Message) -> Option<pb::Message> {
    Some(pb::Message {
        topic: m.topic,
        qos: u32::from(m.qos),
        retain: m.retain,
        payload: m.payload.unwrap_or_default(),
        payload_size: m.payload_size,
        properties: m.properties.map(Into::into),
    })
}

fn packet_from(p: Option<pb::MqttPacket>) -> MqttPacket {
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

fn packet_to(p: MqttPacket) -> Option<pb::MqttPacket> {
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

fn subscription_from(s: pb::Subscription) -> Subscription {
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

fn subscription_to(s: Subscription) -> pb::Subscription {
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

// ---- config: google.protobuf.Struct <-> serde_json ----------------------------------------

/// The broker's `config:` section as JSON. Integral numbers become JSON integers, so that they
/// deserialize into integer fields (protobuf's `Struct` only knows doubles).
pub(crate) fn struct_to_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn number_to_json(n: f64) -> serde_json::Value {
    // 2^53: beyond it doubles are not exact integers anyway.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // In range and integral, so the cast is exact.
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// JSON to a protobuf `Struct` (the testing harness's way of pushing a config). A non-object
/// becomes an empty struct.
pub(crate) fn json_to_struct(v: serde_json::Value) -> prost_types::Struct {
    match json_to_value(v).kind {
        Some(Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn verdicts_round_trip_and_unspecified_is_an_error() {
        for v in [Verdict::Allow, Verdict::Deny, Verdict::Abstain] {
            assert_eq!(verdict_from(pb::Verdict::from(v) as i32).unwrap(), v);
        }
        assert!(matches!(
            verdict_from(0),
            Err(Error::InvalidResponse {
                field: "verdict",
                ..
            })
        ));
        assert!(verdict_from(42).is_err());
    }

    #[test]
    fn topic_request_from_wire() {
        let wire = pb::TopicFilterRequest {
            topic: "a/b".into(),
            action: pb::Action::Subscribe.into(),
            client_id: "c1".into(),
            username: String::new(),
            qos: 1,
            remote_addr: "10.0.0.1:5000".into(),
            protocol_version: 5,
            ..Default::default()
        };
        let req = TopicRequest::try_from(wire).unwrap();
        assert_eq!(req.action, Action::Subscribe);
        assert_eq!(req.client.username, None, "empty username means none");
        assert_eq!(req.client.connect_username, None);
        assert_eq!(req.client.identity(), None);
        assert_eq!(req.qos, 1);
        assert_eq!(req.protocol_version, ProtocolVersion::V5);
        assert_eq!(req.remote_addr, Some("10.0.0.1:5000".parse().unwrap()));

        let unspecified = pb::TopicFilterRequest::default();
        assert!(matches!(
            TopicRequest::try_from(unspecified),
            Err(Error::InvalidRequest {
                field: "action",
                ..
            })
        ));
        let unknown = pb::TopicFilterRequest {
            action: 99,
            ..Default::default()
        };
        assert!(TopicRequest::try_from(unknown).is_err());
    }

    #[test]
    fn topic_decision_to_wire() {
        let wire: pb::TopicFilterResponse = TopicDecision::deny("no")
            .cache_for(Duration::from_millis(1500))
            .with_reason_code(0x97)
            .into();
        assert_eq!(wire.verdict(), pb::Verdict::Deny);
        assert_eq!(wire.cache_ttl_ms, 1500);
        assert_eq!(wire.reason_code, 0x97);
        assert_eq!(wire.reason, "no");

        let huge: pb::TopicFilterResponse = TopicDecision::allow()
            .cache_for(Duration::from_secs(u64::MAX))
            .into();
        assert_eq!(huge.cache_ttl_ms, u32::MAX);
        let default: pb::TopicFilterResponse = TopicDecision::abstain().into();
        assert_eq!((default.cache_ttl_ms, default.reason_code), (0, 0));
    }

    #[test]
    fn auth_request_keeps_credential_presence() {
        let wire = pb::AuthenticateRequest {
            client_id: "c1".into(),
            username: Some(String::new()),
            password: None,
            keepalive_secs: 30,
            will: Some(pb::Will {
                topic: "bye".into(),
                qos: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = AuthRequest::from(wire.clone());
        assert_eq!(req.username.as_deref(), Some(""));
        assert_eq!(req.password, None);
        assert_eq!(req.keepalive, Duration::from_secs(30));
        assert_eq!(req.will.as_ref().map(|w| w.qos), Some(1));
        assert_eq!(req.remote_addr, None);
        assert_eq!(pb::AuthenticateRequest::from(req), wire);
    }

    #[test]
    fn auth_decision_round_trips() {
        let decision = AuthDecision::allow()
            .with_attribute("tenant", "acme")
            .with_reason("known device")
            .with_identity("device-17");
        let wire = pb::AuthenticateResponse::from(decision.clone());
        assert_eq!(wire.verdict(), pb::Verdict::Allow);
        assert_eq!(wire.attributes["tenant"], "acme");
        assert_eq!(wire.reason_code, 0);
        assert_eq!(wire.identity, "device-17");
        assert_eq!(AuthDecision::try_from(wire).unwrap(), decision);
        // No identity set: the field stays empty, and empty reads back as none.
        let plain = pb::AuthenticateResponse::from(AuthDecision::allow());
        assert_eq!(plain.identity, "");
        assert_eq!(AuthDecision::try_from(plain).unwrap().identity, None);
    }

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

    #[test]
    fn config_numbers_become_integers_when_integral() {
        let config = json!({"port": 8080, "ratio": 0.5, "users": [{"name": "a"}], "off": null});
        let back = struct_to_json(json_to_struct(config.clone()));
        assert_eq!(back, config);
        assert!(back["port"].is_u64());
        assert_eq!(
            json_to_struct(json!([1, 2])),
            prost_types::Struct::default()
        );
    }
}
