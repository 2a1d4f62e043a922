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
    /// Why; logged by the broker (never sent to the client).
    pub reason: String,
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
}

impl AuthDecision {
    fn new(verdict: Verdict, reason: String) -> Self {
        AuthDecision {
            verdict,
            reason,
            reason_code: None,
            attributes: Attributes::new(),
            user_properties: UserProperties::new(),
            identity: None,
        }
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
