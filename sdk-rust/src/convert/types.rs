//! The shared domain types of `types.rs` to and from the wire: verdicts, actions, protocol
//! versions, the client, message properties, wills and TLS details.

use tandem_proto::v1 as pb;

use super::scalars::{byte, non_empty, non_empty_bytes, props_from, props_to, secs, to_secs};
use crate::error::Error;
use crate::types::{Action, Client, MessageProperties, ProtocolVersion, TlsInfo, Verdict, Will};

impl From<Verdict> for pb::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => pb::Verdict::Allow,
            Verdict::Deny => pb::Verdict::Deny,
            Verdict::Abstain => pb::Verdict::Abstain,
        }
    }
}

pub(super) fn verdict_from(raw: i32) -> Result<Verdict, Error> {
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

pub(super) fn protocol_from(raw: i32) -> ProtocolVersion {
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
            peer_fingerprint_sha256: non_empty(t.peer_fingerprint_sha256),
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
            peer_fingerprint_sha256: t.peer_fingerprint_sha256.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
