//! Every conversion from the broker's types to the plugin contract's messages
//! (`tandem_proto`) that a client's connection needs: the requests of the two decision
//! RPCs and the bodies of the client events. One place to read what a plugin is told,
//! MQTT 5's fields (reason codes, properties, enhanced authentication) included.

use tandem_proto::v1 as pb;

use crate::plugins::cache::CachedAction;
use crate::plugins::client_info::{ClientIdentity, ConnectedInfo, DisconnectedInfo, EndReason};
use crate::protocol::{Connect, PacketSummary, Properties, ProtocolVersion, QoS, SubscribeReason};
use crate::transport::{Origin, PeerTls};

/// The protocol version as plugins see it.
pub(crate) fn version(v: ProtocolVersion) -> pb::ProtocolVersion {
    match v {
        ProtocolVersion::V3_1 => pb::ProtocolVersion::Mqtt31,
        ProtocolVersion::V3_1_1 => pb::ProtocolVersion::Mqtt311,
        ProtocolVersion::V5 => pb::ProtocolVersion::Mqtt5,
    }
}

/// The action a TopicFilter request asks about.
pub(crate) fn action(action: CachedAction) -> pb::Action {
    match action {
        CachedAction::Publish => pb::Action::Publish,
        CachedAction::Subscribe => pb::Action::Subscribe,
        CachedAction::Receive => pb::Action::Receive,
    }
}

/// MQTT 5 user properties as plugins see them, in order.
pub(crate) fn user_properties(props: Option<&Properties>) -> Vec<pb::UserProperty> {
    props.map_or_else(Vec::new, |p| {
        p.user_properties
            .iter()
            .map(|(k, v)| pb::UserProperty {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect()
    })
}

/// A message's MQTT 5 properties as plugins see them; `None` when it has none (always
/// for MQTT 3.1.1).
pub(crate) fn message_properties(props: Option<&Properties>) -> Option<pb::MessageProperties> {
    let p = props?;
    Some(pb::MessageProperties {
        payload_is_utf8: p.payload_format_indicator == Some(1),
        message_expiry_interval_secs: p.message_expiry_interval.unwrap_or(0),
        content_type: p.content_type.as_deref().unwrap_or_default().to_owned(),
        response_topic: p.response_topic.as_deref().unwrap_or_default().to_owned(),
        correlation_data: p.correlation_data.as_deref().unwrap_or_default().to_vec(),
        user_properties: user_properties(Some(p)),
    })
}

/// What TLS established, as the contract's `TlsInfo`.
pub(crate) fn tls_info(tls: &PeerTls) -> pb::TlsInfo {
    let cert = tls.certificate.as_ref();
    pb::TlsInfo {
        peer_certificate_der: cert.map(|c| c.der.clone()).unwrap_or_default(),
        peer_subject: cert.map(|c| c.subject.clone()).unwrap_or_default(),
        peer_sans: cert.map(|c| c.sans.clone()).unwrap_or_default(),
        server_name: tls.server_name.clone().unwrap_or_default(),
        tls_version: tls.version.clone(),
        cipher_suite: tls.cipher_suite.clone(),
        alpn_protocol: tls.alpn.clone().unwrap_or_default(),
        peer_fingerprint_sha256: cert
            .map(|c| c.fingerprint_sha256.clone())
            .unwrap_or_default(),
    }
}

/// The Authenticate request for a CONNECT: everything the client sent, its MQTT 5
/// properties (authentication method and data, user properties, session expiry, the
/// will's delay and properties) included.
pub(crate) fn authenticate_request(
    connect: &Connect,
    client_id: &str,
    origin: &Origin,
) -> pb::AuthenticateRequest {
    let props = connect.properties.as_deref();
    pb::AuthenticateRequest {
        client_id: client_id.to_owned(),
        username: connect.username.as_ref().map(|u| u.to_string()),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        remote_addr: origin.peer.to_string(),
        listener: origin.listener.to_string(),
        transport: origin.transport.as_str().to_owned(),
        tls: origin.tls.as_deref().map(tls_info),
        protocol_version: version(connect.protocol) as i32,
        clean_start: connect.clean_start,
        keepalive_secs: u32::from(connect.keep_alive),
        will: connect.will.as_ref().map(|w| pb::Will {
            topic: w.topic.to_string(),
            qos: w.qos as u32,
            retain: w.retain,
            payload: w.payload.to_vec(),
            delay_interval_secs: w
                .properties
                .as_ref()
                .and_then(|p| p.will_delay_interval)
                .unwrap_or(0),
            properties: message_properties(w.properties.as_deref()),
        }),
        auth_method: props
            .and_then(|p| p.authentication_method.as_deref())
            .unwrap_or_default()
            .to_owned(),
        auth_data: props
            .and_then(|p| p.authentication_data.as_deref())
            .unwrap_or_default()
            .to_vec(),
        user_properties: user_properties(props),
        session_expiry_interval_secs: props.and_then(|p| p.session_expiry_interval).unwrap_or(0),
        ..Default::default()
    }
}

/// The Authenticate request for a client's AUTH packet: `first` the request the
/// exchange started with (the CONNECT's, or a re-authentication's), with this packet's
/// data and user properties.
pub(crate) fn auth_answer(
    first: &pb::AuthenticateRequest,
    props: Option<&Properties>,
) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        auth_data: props
            .and_then(|p| p.authentication_data.as_deref())
            .unwrap_or_default()
            .to_vec(),
        user_properties: user_properties(props),
        ..first.clone()
    }
}

/// The TopicFilter request for `client` doing `action` on `topic`, with the user
/// properties of the packet that asks (an MQTT 5 PUBLISH or SUBSCRIBE).
pub(crate) fn topic_request(
    client: &ClientIdentity,
    protocol: ProtocolVersion,
    action: CachedAction,
    topic: &str,
    qos: QoS,
    retain: bool,
    props: Option<&Properties>,
) -> pb::TopicFilterRequest {
    pb::TopicFilterRequest {
        topic: topic.to_owned(),
        action: self::action(action) as i32,
        client_id: client.client_id.clone(),
        username: client.identity.clone(),
        connect_username: client.connect_username.clone(),
        attributes: client.attributes.clone(),
        qos: qos as u32,
        retain,
        protocol_version: version(protocol) as i32,
        user_properties: user_properties(props),
        listener: client.listener.clone(),
        remote_addr: client.remote_addr.clone(),
    }
}

/// The client as events name it.
pub(crate) fn client_ref(client: &ClientIdentity) -> pb::ClientRef {
    pb::ClientRef {
        client_id: client.client_id.clone(),
        username: client.identity.clone(),
        attributes: client.attributes.clone(),
        connect_username: client.connect_username.clone(),
    }
}

/// A message as events carry it; the payload only when the plugin asked for it.
pub(crate) fn message(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    properties: Option<&Properties>,
    with_payload: bool,
) -> pb::Message {
    pb::Message {
        topic: topic.to_owned(),
        qos: qos as u32,
        retain,
        payload: if with_payload {
            payload.to_vec()
        } else {
            Vec::new()
        },
        payload_size: payload.len() as u32,
        properties: message_properties(properties),
    }
}

/// A packet event's body; the raw bytes only for plugins that asked for them.
pub(crate) fn packet(summary: &PacketSummary, raw: bool) -> pb::MqttPacket {
    pb::MqttPacket {
        packet_type: summary.packet_type as i32,
        flags: u32::from(summary.flags),
        size: summary.size() as u32,
        packet_id: u32::from(summary.packet_id),
        topic: summary.topic.to_string(),
        qos: summary.qos as u32,
        retain: summary.retain,
        dup: summary.dup,
        reason_code: u32::from(summary.reason_code),
        raw: if raw {
            summary.frame.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// The body of `client_connected`.
pub(crate) fn connected(client: &ClientIdentity, info: &ConnectedInfo) -> pb::ClientConnected {
    pb::ClientConnected {
        remote_addr: client.remote_addr.clone(),
        listener: client.listener.clone(),
        transport: client.transport.as_str().to_owned(),
        protocol_version: version(info.version) as i32,
        clean_start: info.clean_start,
        keepalive_secs: u32::from(info.keep_alive),
        session_present: info.session_present,
        session_expiry_interval_secs: 0,
    }
}

/// The body of `client_disconnected`.
pub(crate) fn disconnected(info: &DisconnectedInfo) -> pb::ClientDisconnected {
    let reason = match info.reason {
        EndReason::Clean => pb::DisconnectReason::Clean,
        EndReason::ConnectionLost => pb::DisconnectReason::ConnectionLost,
        EndReason::ProtocolError => pb::DisconnectReason::ProtocolError,
        EndReason::KeepaliveTimeout => pb::DisconnectReason::KeepaliveTimeout,
        EndReason::Takeover => pb::DisconnectReason::Takeover,
        EndReason::Shutdown => pb::DisconnectReason::Shutdown,
        EndReason::NotAuthorized => pb::DisconnectReason::NotAuthorized,
    };
    pb::ClientDisconnected {
        reason: reason as i32,
        reason_code: 0,
        detail: info.detail.clone(),
        will_published: info.will_published,
        session_kept: info.session_kept,
    }
}

/// The subscriptions of one SUBSCRIBE with what each was answered.
pub(crate) fn subscriptions(
    requested: &[(bytestring::ByteString, QoS)],
    reasons: &[SubscribeReason],
) -> Vec<pb::Subscription> {
    requested
        .iter()
        .zip(reasons)
        .map(|((filter, qos), reason)| pb::Subscription {
            topic_filter: filter.to_string(),
            requested_qos: *qos as u32,
            reason_code: match reason {
                SubscribeReason::Granted(q) => *q as u32,
                SubscribeReason::Failure(code) => u32::from(*code),
            },
            ..Default::default()
        })
        .collect()
}
