//! Letting a client in: the auth chain asked about a CONNECT, and the MQTT 5 enhanced
//! authentication exchanges (AUTH packets) that a plugin may lead, on CONNECT and on a
//! live connection (re-authentication, AUTH 0x19).
//!
//! A [`Login`] holds one exchange; the connection does the I/O: it sends the client
//! each [`Challenge`] as AUTH 0x18 and hands the client's AUTH back with
//! [`Login::answer`], until the chain allows ([`Verified`]) or refuses ([`Refusal`]).
//! Every step is one Authenticate call with the plugin's own deadline; the exchange is
//! bounded in steps here and in time by the caller.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use tandem_proto::v1 as pb;
use tracing::warn;

use crate::config::ListenerKind;
use crate::plugins::chain::{AuthOutcome, AuthStep, Exchange};
use crate::plugins::client::ClientPlugins;
use crate::plugins::client_info::ClientIdentity;
use crate::plugins::{PluginHost, PluginSet, wire};
use crate::protocol::{Connect, ConnectReason, Disconnect, Properties, ProtocolVersion};
use crate::stats::Stats;
use crate::transport::{Origin, PeerTls};

/// The most AUTH packets the broker sends in one exchange: SCRAM needs one, Kerberos
/// a few; a plugin that asks for more is refused rather than let loop.
pub const MAX_AUTH_STEPS: u32 = 8;

/// What a refused client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The MQTT 5 reason code: for the CONNACK (3.1.1 clients get the nearest return
    /// code), or for the DISCONNECT that ends a failed re-authentication.
    pub code: ConnectReason,
    /// The Reason String the deciding plugin has for an MQTT 5 client.
    pub reason: Option<ByteString>,
}

impl Refusal {
    fn new(code: ConnectReason) -> Self {
        Self { code, reason: None }
    }

    /// The reason code and string of the DISCONNECT that ends a failed
    /// re-authentication: the plugin's code when DISCONNECT may carry it (0x86 "bad user
    /// name or password" may not: it becomes 0x87).
    pub fn disconnect(&self) -> (u8, String) {
        let code = self.code as u8;
        let code = if Disconnect::server_may_send(code) {
            code
        } else {
            ConnectReason::NotAuthorized as u8
        };
        let reason = self.reason.as_ref().map_or_else(
            || "re-authentication failed".to_owned(),
            ByteString::to_string,
        );
        (code, reason)
    }
}

/// What an allowing chain adds to the CONNACK (or to the AUTH success of a
/// re-authentication). MQTT 5 only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The method of the exchange, echoed to the client (section 3.2.2.3.17).
    pub auth_method: Option<ByteString>,
    /// Authentication Data from the plugin that led the exchange.
    pub auth_data: Option<Bytes>,
    /// User properties from the allowing plugins.
    pub user_properties: Vec<(ByteString, ByteString)>,
}

/// The next AUTH packet (reason 0x18) for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The exchange's method.
    pub method: ByteString,
    /// Authentication Data from the plugin.
    pub data: Bytes,
    /// User properties from the plugin.
    pub user_properties: Vec<(ByteString, ByteString)>,
}

/// The client is who the chain says.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The identity the allowing plugins established; `None`: the CONNECT username.
    pub identity: Option<String>,
    /// Session attributes from the allowing plugins.
    pub attributes: HashMap<String, String>,
    /// For the CONNACK (or AUTH success).
    pub grant: Grant,
}

/// Where a login stands after a step.
#[derive(Debug)]
pub enum Step {
    /// Allowed.
    Allowed(Verified),
    /// Refused (counted).
    Refused(Refusal),
    /// Send the client this AUTH, then [`Login::answer`] with its reply.
    Challenge(Challenge),
}

/// One login: a CONNECT's, or a re-authentication's (see the module docs).
pub struct Login {
    set: Arc<PluginSet>,
    stats: Arc<Stats>,
    request: pb::AuthenticateRequest,
    method: Option<ByteString>,
    exchange: Option<Exchange>,
    /// What TLS established, kept for the client's re-authentications.
    tls: Option<Arc<PeerTls>>,
    /// The listener's transport.
    transport: ListenerKind,
}

fn pairs(props: Vec<(String, String)>) -> Vec<(ByteString, ByteString)> {
    props
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn method_of(props: Option<&Properties>) -> Option<ByteString> {
    props.and_then(|p| p.authentication_method.clone())
}

impl Login {
    /// The login of a CONNECT, by the auth chain in force.
    pub fn connect(
        host: &PluginHost,
        stats: &Arc<Stats>,
        connect: &Connect,
        client_id: &str,
        origin: &Origin,
    ) -> Self {
        Self {
            set: host.current(),
            stats: stats.clone(),
            request: wire::authenticate_request(connect, client_id, origin),
            method: method_of(connect.properties.as_deref()),
            exchange: None,
            tls: origin.tls.clone(),
            transport: origin.transport,
        }
    }

    /// The re-authentication a connected MQTT 5 client starts with AUTH 0x19 (`props`
    /// its properties), by the auth chain in force now.
    pub fn reauthenticate(plugins: &ClientPlugins, props: Option<&Properties>) -> Self {
        let client = plugins.client();
        let first = pb::AuthenticateRequest {
            client_id: client.client_id.clone(),
            username: (!client.connect_username.is_empty())
                .then(|| client.connect_username.clone()),
            remote_addr: client.remote_addr.clone(),
            listener: client.listener.clone(),
            transport: client.transport.as_str().to_owned(),
            tls: client.tls.as_deref().map(wire::tls_info),
            protocol_version: pb::ProtocolVersion::Mqtt5 as i32,
            auth_method: method_of(props).as_deref().unwrap_or_default().to_owned(),
            reauthentication: true,
            attributes: client.attributes.clone(),
            ..Default::default()
        };
        Self {
            set: plugins.host().current(),
            stats: plugins.stats().clone(),
            request: wire::auth_answer(&first, props),
            method: method_of(props),
            exchange: None,
            tls: client.tls.clone(),
            transport: client.transport,
        }
    }

    /// Whether an AUTH packet with these properties belongs to this exchange: a
    /// continue must name the method the exchange started with (MQTT-4.12.0-5).
    pub fn same_method(&self, props: Option<&Properties>) -> bool {
        self.method.is_some() && method_of(props) == self.method
    }

    /// Asks the chain about the first packet (CONNECT, or AUTH 0x19).
    pub async fn start(&mut self) -> Step {
        let set = self.set.clone();
        let Some(chain) = &set.auth else {
            // No chain: everyone is let in, but nobody knows any method.
            return match &self.method {
                Some(_) => self.refused(Refusal::new(ConnectReason::BadAuthenticationMethod)),
                None => Step::Allowed(Verified {
                    identity: None,
                    attributes: HashMap::new(),
                    grant: Grant::default(),
                }),
            };
        };
        let step = chain.authenticate(self.request.clone()).await;
        self.settle(step)
    }

    /// Asks the plugin that leads the exchange about the client's AUTH 0x18 (`props`
    /// its properties). The caller checked [`same_method`](Self::same_method).
    pub async fn answer(&mut self, props: Option<&Properties>) -> Step {
        let set = self.set.clone();
        let (Some(chain), Some(exchange)) = (&set.auth, self.exchange.take()) else {
            return self.refused(Refusal::new(ConnectReason::ProtocolError));
        };
        let request = wire::auth_answer(&self.request, props);
        let step = chain.continue_auth(exchange, request).await;
        self.settle(step)
    }

    fn settle(&mut self, step: AuthStep) -> Step {
        match step {
            AuthStep::Continue(exchange) if exchange.step() > MAX_AUTH_STEPS => {
                warn!(
                    client_id = %self.request.client_id,
                    max = MAX_AUTH_STEPS,
                    "authentication denied: the exchange took more steps than the broker allows"
                );
                self.refused(Refusal::new(ConnectReason::NotAuthorized))
            }
            AuthStep::Continue(mut exchange) => {
                let challenge = Challenge {
                    method: self.method.clone().unwrap_or_default(),
                    data: std::mem::take(&mut exchange.data).into(),
                    user_properties: pairs(std::mem::take(&mut exchange.user_properties)),
                };
                if self.method.is_none() {
                    // A plugin may only continue an exchange the client started.
                    warn!(client_id = %self.request.client_id,
                        "authentication denied: a plugin continued a CONNECT without an authentication method");
                    return self.refused(Refusal::new(ConnectReason::NotAuthorized));
                }
                self.exchange = Some(exchange);
                Step::Challenge(challenge)
            }
            AuthStep::Done(outcome) if outcome.allowed => Step::Allowed(Verified {
                identity: outcome.identity,
                attributes: outcome.attributes,
                grant: Grant {
                    auth_method: self.method.clone(),
                    auth_data: (!outcome.auth_data.is_empty()).then(|| outcome.auth_data.into()),
                    user_properties: pairs(outcome.user_properties),
                },
            }),
            AuthStep::Done(outcome) => {
                let refusal = refusal_of(&outcome, &self.request.client_id);
                self.refused(refusal)
            }
        }
    }

    fn refused(&self, refusal: Refusal) -> Step {
        self.stats.auth_denied();
        Step::Refused(refusal)
    }

    /// The handle of the client this login let in.
    pub fn client(
        &self,
        host: &Arc<PluginHost>,
        verified: Verified,
        username: Option<String>,
        version: ProtocolVersion,
    ) -> ClientPlugins {
        let client = ClientIdentity::new(
            self.request.client_id.clone(),
            verified.identity,
            username,
            verified.attributes,
            self.request.listener.clone(),
            self.request.remote_addr.clone(),
        )
        .over(self.transport, self.tls.clone());
        ClientPlugins::new(host, &self.stats, self.set.clone(), client, version)
    }
}

/// What a denying outcome tells the client: the deciding plugin's reason code when
/// CONNACK can carry it (else 0x87, logged; 0x88 when a plugin failure decided), and
/// its client reason.
fn refusal_of(outcome: &AuthOutcome, client_id: &str) -> Refusal {
    let asked = outcome.reason_code;
    let code = match u8::try_from(asked).ok().filter(|c| *c >= 0x80) {
        // A plugin failure decided (on_error): not a verdict on the credentials, so
        // "server unavailable" (3.1.1: 3), which tells a client to come back later.
        None if asked == 0 && outcome.from_error => ConnectReason::ServerUnavailable,
        None if asked == 0 => ConnectReason::NotAuthorized,
        Some(code) if ConnectReason::from_code(code).is_some() => {
            ConnectReason::from_code(code).unwrap_or(ConnectReason::NotAuthorized)
        }
        _ => {
            let plugin = outcome.denied_by.as_ref().map(|(p, _)| p.as_str());
            warn!(
                plugin,
                client_id,
                code = asked,
                "a plugin asked for a reason code CONNACK cannot carry; sending 0x87"
            );
            ConnectReason::NotAuthorized
        }
    };
    Refusal {
        code,
        reason: (!outcome.client_reason.is_empty())
            .then(|| ByteString::from(outcome.client_reason.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(code: u32, client_reason: &str) -> AuthOutcome {
        AuthOutcome {
            denied_by: Some(("p".into(), "log".into())),
            reason_code: code,
            client_reason: client_reason.into(),
            ..AuthOutcome::default()
        }
    }

    #[test]
    fn a_refusal_carries_the_plugins_code_when_connack_can() {
        let r = refusal_of(&denied(0x86, "no"), "c");
        assert_eq!(r.code, ConnectReason::BadUserNameOrPassword);
        assert_eq!(r.reason.as_deref(), Some("no"));
        assert_eq!(
            refusal_of(&denied(0x8A, ""), "c"),
            Refusal::new(ConnectReason::Banned)
        );
        // A plugin failure with no code: "server unavailable".
        let failed = AuthOutcome {
            from_error: true,
            ..denied(0, "")
        };
        assert_eq!(
            refusal_of(&failed, "c").code,
            ConnectReason::ServerUnavailable
        );
        // The broker's choice, a success code, an AUTH-only code, a byte overflow.
        for code in [0, 0x00, 0x18, 0x8E, 0x1_86] {
            assert_eq!(
                refusal_of(&denied(code, ""), "c").code,
                ConnectReason::NotAuthorized,
                "{code:#x}"
            );
        }
    }
}
