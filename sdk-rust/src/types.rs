//! Domain types shared by the roles: verdicts, actions, the client, protocol and message details.
//!
//! These mirror the protobuf contract with Rust types (`Option` where the wire uses "empty means
//! absent", [`Duration`] where it uses milliseconds or seconds). The conversions live in
//! `convert/types.rs`; [`Role::from_args`] lives in `args.rs`, with everything else read from the
//! command line.

use std::collections::HashMap;
use std::time::Duration;

/// Session attributes: the string map an allowing [`Authenticator`](crate::Authenticator)
/// attaches to a client's session (aMQTT's `session.attributes`), sent back with every later
/// topic check and event for that client.
pub type Attributes = HashMap<String, String>;

/// MQTT 5 user properties, in order (a key may appear several times). Empty for MQTT 3.1.1.
pub type UserProperties = Vec<(String, String)>;

/// A plugin's answer to a check.
///
/// How several plugins combine: any `Deny` denies; otherwise at least one `Allow` is needed; all
/// `Abstain` denies. There is no "unspecified" verdict: on the wire it is an error, so a handler
/// that cannot decide returns an error (the broker then applies the plugin's `on_error` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Allow the connection or topic action (still overridden by another plugin's `Deny`).
    Allow,
    /// Deny it, whatever the other plugins answer.
    Deny,
    /// No opinion (aMQTT's `None`): the other plugins of the chain decide.
    Abstain,
}

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Publish a message to the topic.
    Publish,
    /// Subscribe to the topic filter (wildcards and `$share/GROUP/` included).
    Subscribe,
    /// Receive a message published to the topic (checked per subscriber).
    Receive,
}

/// A role a plugin serves, as declared in `Describe`. The SDK declares a role exactly when a
/// handler for it was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Answers `Authenticate` (registered with [`Plugin::authenticate`](crate::Plugin::authenticate)).
    Authenticate,
    /// Answers `TopicFilter` (registered with [`Plugin::topic_filter`](crate::Plugin::topic_filter)).
    TopicFilter,
}

/// The MQTT version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProtocolVersion {
    /// Not known or not applicable.
    #[default]
    Unknown,
    /// MQTT 3.1 (protocol level 3).
    V3_1,
    /// MQTT 3.1.1 (protocol level 4).
    V3_1_1,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Who a check or an event is about.
///
/// `username` is the client's **established identity**: the identity the allowing
/// [`Authenticator`](crate::Authenticator)s set with
/// [`AuthDecision::with_identity`](crate::AuthDecision::with_identity) (a JWT's subject, the
/// user whose password verified), or the CONNECT username when none set one. Key per-user rules
/// on it (or on [`identity`](Client::identity)); `connect_username` is what the client typed,
/// for audit only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Client {
    /// The MQTT client identifier.
    pub client_id: String,
    /// The established identity (see above); `None` when there is none (no identity set and
    /// no username in CONNECT). Named `username` on the wire, where the field name is fixed.
    pub username: Option<String>,
    /// The session attributes set by the allowing authentication plugins.
    pub attributes: Attributes,
    /// The username exactly as given in CONNECT; `None` when the client gave none. Differs
    /// from `username` when an authentication plugin established another identity. Never key
    /// authorization on it.
    pub connect_username: Option<String>,
}

impl Client {
    /// A client with this identifier, no username and no attributes.
    pub fn new(client_id: impl Into<String>) -> Self {
        Client {
            client_id: client_id.into(),
            ..Client::default()
        }
    }

    /// Sets the established identity (`username`).
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the username as typed in CONNECT (`connect_username`).
    pub fn with_connect_username(mut self, username: impl Into<String>) -> Self {
        self.connect_username = Some(username.into());
        self
    }

    /// Adds a session attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    /// The established identity: who the auth chain says the client is (the same as
    /// `username`). `None` when there is none.
    pub fn identity(&self) -> Option<&str> {
        self.username.as_deref()
    }
}

/// A will message, as given in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Will {
    /// The will topic.
    pub topic: String,
    /// The will QoS (0, 1 or 2).
    pub qos: u8,
    /// The will retain flag.
    pub retain: bool,
    /// The will payload.
    pub payload: Vec<u8>,
    /// MQTT 5 will delay; zero publishes at once.
    pub delay: Duration,
    /// MQTT 5 will properties; `None` for MQTT 3.1.1.
    pub properties: Option<MessageProperties>,
}

/// MQTT 5 properties of an application message (a will's, or a message event's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    /// The sender declared the payload UTF-8 text.
    pub payload_is_utf8: bool,
    /// Message expiry; `None` when the message does not expire.
    pub message_expiry: Option<Duration>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Vec<u8>>,
    /// User properties.
    pub user_properties: UserProperties,
}

/// What TLS established about a client connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsInfo {
    /// The client's leaf certificate (DER); `None` when it presented none.
    pub peer_certificate_der: Option<Vec<u8>>,
    /// The certificate subject as an RFC 4514 string, for example `CN=device-17,O=Acme`. Only
    /// set for a certificate that chained to the listener's `tls.client_ca`.
    pub peer_subject: Option<String>,
    /// Subject alternative names of the client certificate as `DNS:name`, `IP:addr`, `URI:uri` or
    /// `email:addr`, in certificate order.
    pub peer_sans: Vec<String>,
    /// The SNI server name the client asked for.
    pub server_name: Option<String>,
    /// The negotiated TLS version, for example `TLSv1.3`.
    pub tls_version: Option<String>,
    /// The negotiated cipher suite (IANA name).
    pub cipher_suite: Option<String>,
    /// The agreed ALPN protocol.
    pub alpn_protocol: Option<String>,
    /// SHA-256 of the client certificate's DER bytes, 64 lowercase hex digits.
    pub peer_fingerprint_sha256: Option<String>,
}
