//! Requests, broker to plugin: `Authenticate` and `TopicFilter`. Read leniently (the contract
//! says what each zero value means); written back for the testing harness, which calls the
//! plugin through the real gRPC codec as the broker does.

use tandem_proto::v1 as pb;

use super::scalars::{
    addr, addr_string, byte, non_empty, non_empty_bytes, props_from, props_to, secs, to_secs,
};
use super::types::protocol_from;
use crate::auth::AuthRequest;
use crate::error::Error;
use crate::topic::TopicRequest;
use crate::types::Client;

impl From<pb::AuthenticateRequest> for AuthRequest {
    fn from(r: pb::AuthenticateRequest) -> Self {
        AuthRequest {
            protocol_version: protocol_from(r.protocol_version),
            client_id: r.client_id,
            username: r.username,
            password: r.password,
            remote_addr: addr(&r.remote_addr),
            listener: r.listener,
            transport: r.transport,
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
            transport: r.transport,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::{Action, ProtocolVersion};

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
}
