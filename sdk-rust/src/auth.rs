//! The authentication role: [`Authenticator`], its request and its decision.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::context::Context;
use crate::error::HandlerError;
use crate::types::{Attributes, ProtocolVersion, TlsInfo, UserProperties, Verdict, Will};

/// Decides whether clients may connect (aMQTT's `BaseAuthPlugin.authenticate`).
///
/// Register it with [`Plugin::authenticate`](crate::Plugin::authenticate); the plugin then
/// declares the authenticate role in `Describe`. Called concurrently, once per CONNECT, within the
/// broker's deadline for this plugin: keep it fast, and return an error rather than guess when a
/// backend is unreachable (the broker applies the plugin's `on_error` policy).
///
/// ```
/// use tandem_plugin::{AuthDecision, AuthRequest, Authenticator, Context, HandlerError};
///
/// struct OnlyAlice;
///
/// impl Authenticator for OnlyAlice {
///     async fn authenticate(&self, _ctx: &Context, req: AuthRequest) -> Result<AuthDecision, HandlerError> {
///         Ok(match req.username.as_deref() {
///             Some("alice") => AuthDecision::allow()
///                 .with_identity("alice")
///                 .with_attribute("role", "admin"),
///             Some(_) => AuthDecision::deny("unknown user"),
///             None => AuthDecision::abstain(),
///         })
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync + 'static {
    /// Decides on one connection attempt.
    fn authenticate(
        &self,
        ctx: &Context,
        request: AuthRequest,
    ) -> impl Future<Output = Result<AuthDecision, HandlerError>> + Send;
}

/// A client asks to connect. Fields the client did not send are `None`, empty or zero.
///
/// Build one for tests with `AuthRequest { client_id: "c1".into(), ..Default::default() }` or
/// [`AuthRequest::new`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthRequest {
    /// The client identifier from CONNECT (may be empty when the broker assigns one).
    pub client_id: String,
    /// The username; `None` when the client sent no username flag.
    pub username: Option<String>,
    /// The password bytes; `None` when the client sent no password flag.
    pub password: Option<Vec<u8>>,
    /// The client's address; `None` when the transport has none.
    pub remote_addr: Option<SocketAddr>,
    /// The name of the broker listener the client connected to.
    pub listener: String,
    /// The listener's transport: `tcp`, `tls`, `ws` or `wss`.
    pub transport: String,
    /// The MQTT version the client speaks.
    pub protocol_version: ProtocolVersion,
    /// The clean start (5.0) / clean session (3.1.1) flag.
    pub clean_start: bool,
    /// The requested keepalive; zero means off.
    pub keepalive: Duration,
    /// MQTT 5 session expiry interval; zero ends the session with the connection.
    pub session_expiry: Duration,
    /// The will message, if any.
    pub will: Option<Will>,
    /// TLS details on TLS listeners.
    pub tls: Option<TlsInfo>,
    /// MQTT 5 authentication method.
    pub auth_method: Option<String>,
    /// MQTT 5 authentication data.
    pub auth_data: Option<Vec<u8>>,
    /// MQTT 5 user properties of the CONNECT packet.
    pub user_properties: UserProperties,
    /// Position in an MQTT 5 enhanced authentication exchange (0 for CONNECT).
    pub auth_step: u32,
    /// Opaque state echoed back from the previous enhanced authentication step.
    pub auth_context: Vec<u8>,
    /// True when an already connected MQTT 5 client re-authenticates.
    pub reauthentication: bool,
    /// On re-authentication, the client's current session attributes.
    pub attributes: Attributes,
}

impl AuthRequest {
    /// A request from this client id with no credentials (add them with the `with_` methods).
    pub fn new(client_id: impl Into<String>) -> Self {
        AuthRequest {
            client_id: client_id.into(),
            ..AuthRequest::default()
        }
    }

    /// Sets the username.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the password.
    pub fn with_password(mut self, password: impl Into<Vec<u8>>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The password as UTF-8 text; `None` when absent or not valid UTF-8.
    pub fn password_str(&self) -> Option<&str> {
        self.password
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
    }
}

/// A plugin's decision on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthDecision {
    /// The verdict.
    pub verdict: Verdict,
    /// Why; logged by the broker (never sent to the client: see
    /// [`client_reason`](Self::client_reason)).
    pub reason: String,
    /// The MQTT 5 Reason String sent to the client with a deny (in the CONNACK, or the
    /// DISCONNECT ending a failed re-authentication); `None` sends none. Unlike
    /// [`reason`](Self::reason), the client reads it: say nothing an attacker should not learn
    /// (such as whether the user exists).
    pub client_reason: Option<String>,
    /// The MQTT 5 CONNACK reason code for a deny (for example `0x86`, bad user name or password);
    /// `None` lets the broker choose (`0x87`, not authorized).
    pub reason_code: Option<u8>,
    /// Session attributes to keep with the session (read on `Allow` only).
    pub attributes: Attributes,
    /// MQTT 5 user properties to add to the CONNACK.
    pub user_properties: UserProperties,
    /// The identity the credentials proved (read on `Allow` only): sent to topic checks and
    /// events as the client's `username` instead of what the client typed. `None` leaves the
    /// CONNECT username (unless another allowing plugin sets one; two allowing plugins that set
    /// different identities deny the connection).
    pub identity: Option<String>,
    /// MQTT 5 enhanced authentication: continue the exchange instead of deciding now. When set,
    /// `verdict` is not read; the broker sends the client an AUTH packet (0x18) with the data and
    /// calls this plugin again with the client's answer (`auth_step + 1`, `auth_context` echoed).
    pub auth_continue: Option<AuthContinue>,
    /// MQTT 5 Authentication Data for the client with the final CONNACK (or the AUTH success of a
    /// re-authentication), for methods where the server proves itself last (SCRAM's
    /// server-final message). Read on `Allow`.
    pub auth_data: Option<Vec<u8>>,
}

/// The next step of an MQTT 5 enhanced authentication exchange (see
/// [`AuthDecision::continue_with`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthContinue {
    /// Authentication Data sent to the client in the AUTH packet.
    pub auth_data: Vec<u8>,
    /// Opaque state the broker echoes back in [`AuthRequest::auth_context`] at the next step, so
    /// a plugin running as several replicas needs no shared memory. The broker keeps it (it never
    /// reaches the client) for the exchange only.
    pub context: Vec<u8>,
    /// MQTT 5 user properties added to the AUTH packet.
    pub user_properties: UserProperties,
}

impl AuthDecision {
    fn new(verdict: Verdict, reason: String) -> Self {
        AuthDecision {
            verdict,
            reason,
            client_reason: None,
            reason_code: None,
            attributes: Attributes::new(),
            user_properties: UserProperties::new(),
            identity: None,
            auth_continue: None,
            auth_data: None,
        }
    }

    /// Continue an MQTT 5 enhanced authentication exchange: send the client `auth_data` in an
    /// AUTH packet and ask this plugin again with its answer; `context` comes back in
    /// [`AuthRequest::auth_context`]. A plugin should only continue a method it knows
    /// ([`AuthRequest::auth_method`]); for any other it abstains.
    pub fn continue_with(auth_data: impl Into<Vec<u8>>, context: impl Into<Vec<u8>>) -> Self {
        let mut d = Self::new(Verdict::Abstain, String::new());
        d.auth_continue = Some(AuthContinue {
            auth_data: auth_data.into(),
            context: context.into(),
            user_properties: UserProperties::new(),
        });
        d
    }

    /// Sets the Authentication Data sent with the final CONNACK (or re-authentication success).
    pub fn with_auth_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.auth_data = Some(data.into());
        self
    }

    /// Adds an MQTT 5 user property to the CONNACK (or, on a continue, to the AUTH packet).
    pub fn with_user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        match &mut self.auth_continue {
            Some(c) => c.user_properties.push((key.into(), value.into())),
            None => self.user_properties.push((key.into(), value.into())),
        }
        self
    }

    /// Allow the connection.
    pub fn allow() -> Self {
        Self::new(Verdict::Allow, String::new())
    }

    /// Deny the connection, saying why (for the broker's log).
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::new(Verdict::Deny, reason.into())
    }

    /// No opinion: let the other plugins of the chain decide.
    pub fn abstain() -> Self {
        Self::new(Verdict::Abstain, String::new())
    }

    /// Sets the reason logged by the broker.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the MQTT 5 CONNACK reason code used when this deny decides.
    pub fn with_reason_code(mut self, code: u8) -> Self {
        self.reason_code = Some(code);
        self
    }

    /// Sets the MQTT 5 Reason String the client is sent when this deny decides.
    pub fn with_client_reason(mut self, reason: impl Into<String>) -> Self {
        self.client_reason = Some(reason.into());
        self
    }

    /// Adds a session attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// Sets the identity the credentials proved (a token's subject, the user whose password
    /// verified): topic checks and events then name the client by it, whatever username it
    /// typed. An empty string sets none.
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        let identity = identity.into();
        self.identity = (!identity.is_empty()).then_some(identity);
        self
    }
}
