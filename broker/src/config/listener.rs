//! `listeners:`: where and how clients reach the broker. Each listener is one transport
//! (plain TCP, TLS, WebSocket, WebSocket over TLS) on one address; every listener serves
//! the same MQTT versions, plugins, limits and events.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The WebSocket path served when a `ws`/`wss` listener names none.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Transport.
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// Address and port to bind; port 0 picks a free one (tests use it).
    pub bind: SocketAddr,
    /// Certificates, for `tls` and `wss` (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as HAProxy and the
    /// AWS NLB send it): the address in it is the client's, in logs and to plugins. A
    /// connection without a valid header is closed. Only for listeners behind such a
    /// proxy: anyone who can reach the port can claim any address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// `ws`/`wss`: the HTTP path of the WebSocket endpoint (default `/mqtt`); another path
    /// is answered 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `ws`/`wss`: the `Origin` headers accepted (`https://app.example.com`, exactly as
    /// browsers send them); an upgrade with another origin is answered 403. Empty (the
    /// default): any origin. Requests without an Origin are served either way: browsers
    /// always send one, so the list stops other web pages from connecting through a
    /// visitor's browser; it is no authentication (any other client can send any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

impl ListenerConfig {
    /// A plain TCP listener on `bind`.
    pub fn tcp(bind: SocketAddr) -> Self {
        Self {
            kind: ListenerKind::Tcp,
            bind,
            tls: None,
            proxy_protocol: false,
            path: None,
            allowed_origins: Vec::new(),
        }
    }

    /// The WebSocket path (`ws`/`wss`).
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_WS_PATH)
    }

    /// Checks what serde cannot: which keys each transport takes, and how the TLS keys
    /// go together. `Err((key under this listener, what to do))`.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        let kind = self.kind.as_str();
        match (self.kind.is_tls(), &self.tls) {
            (true, None) => {
                return Err((
                    "tls",
                    format!("a `{kind}` listener needs `tls: {{ cert, key }}`"),
                ));
            }
            (false, Some(_)) => {
                return Err((
                    "tls",
                    format!("a `{kind}` listener takes no `tls` (use type tls or wss)"),
                ));
            }
            (true, Some(tls)) => tls.check()?,
            (false, None) => {}
        }
        if !self.kind.is_ws() {
            if self.path.is_some() {
                return Err((
                    "path",
                    format!("only ws and wss listeners take a path, not `{kind}`"),
                ));
            }
            if !self.allowed_origins.is_empty() {
                return Err((
                    "allowed_origins",
                    format!("only ws and wss listeners check origins, not `{kind}`"),
                ));
            }
        }
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.contains(['?', '#', ' ']))
        {
            return Err((
                "path",
                format!("`{path}` is not a URL path: it starts with `/` and has no query"),
            ));
        }
        Ok(())
    }
}

/// Listener transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS (1.2 or 1.3).
    Tls,
    /// MQTT over WebSocket (the `mqtt` subprotocol, binary frames).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// Every transport, in the order metrics list them.
    pub const ALL: [Self; 4] = [Self::Tcp, Self::Tls, Self::Ws, Self::Wss];

    /// The name in the config, logs and the plugin contract.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }

    /// Whether the transport runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// Whether the transport is WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

/// A TLS listener's certificates and client authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain, leaf first. Re-read when it changes.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1). Re-read when it
    /// changes.
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Whether clients present a certificate. Default: `required` with a `client_ca`,
    /// else `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// Take the username plugins see from the client certificate (as Mosquitto's
    /// `use_identity_as_username` and `use_subject_as_username`): the CONNECT username is
    /// replaced. A client without a certificate (`client_auth: optional`) is refused at
    /// CONNECT, as Mosquitto does: there is no name to take, and one it typed would
    /// stand where certificate names stand.
    #[serde(default, skip_serializing_if = "CertUsername::is_none")]
    pub use_identity_as_username: CertUsername,
    /// ALPN protocols offered, in preference order. Default: `[mqtt]` on `tls`,
    /// `[http/1.1]` on `wss`. A client that offers ALPN but none of these is refused
    /// (RFC 7301); one that offers none is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
}

impl TlsConfig {
    /// The client authentication in force: the configured one, else `required` when a
    /// client CA is given, else `none`.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth.unwrap_or(if self.client_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::None
        })
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.client_auth() != ClientAuth::None && self.client_ca.is_none() {
            return Err((
                "tls.client_ca",
                "client_auth optional or required needs the CA client certificates chain to"
                    .to_owned(),
            ));
        }
        if !self.use_identity_as_username.is_none() && self.client_auth() == ClientAuth::None {
            return Err((
                "tls.use_identity_as_username",
                "needs client certificates: set client_ca (and client_auth)".to_owned(),
            ));
        }
        if let Some(alpn) = &self.alpn
            && alpn.iter().any(|p| p.is_empty() || p.len() > 255)
        {
            return Err(("tls.alpn", "each protocol is 1 to 255 bytes".to_owned()));
        }
        Ok(())
    }
}

/// Whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// Asked for; a client without one is served (plugins see no certificate), a client
    /// with one that does not chain to `client_ca` is refused.
    Optional,
    /// A certificate chaining to `client_ca` is required to connect.
    Required,
}

/// Which part of a client certificate becomes the username.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertUsername {
    /// The CONNECT username stands.
    #[default]
    None,
    /// The subject's common name (CN): Mosquitto's `use_identity_as_username`. A
    /// certificate without one, or with several, is refused at CONNECT (not authorized).
    CommonName,
    /// The whole subject, RFC 4514 (`CN=device-17,O=Acme`): Mosquitto's
    /// `use_subject_as_username`.
    Subject,
}

impl CertUsername {
    /// Whether the CONNECT username stands.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn invalid(yaml: &str) -> (String, String) {
        match Config::from_yaml(yaml, Path::new("t.yaml")) {
            Err(ConfigError::Invalid { path, message, .. }) => (path, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn each_transport_takes_its_own_keys() {
        let (path, _) = invalid("listeners: { s: { type: tls, bind: 127.0.0.1:1 } }");
        assert_eq!(path, "listeners.s.tls");
        let (path, _) =
            invalid("listeners: { p: { type: tcp, bind: 127.0.0.1:1, tls: { cert: c, key: k } } }");
        assert_eq!(path, "listeners.p.tls");
        let (path, _) = invalid(
            "listeners: { p: { type: tls, bind: 127.0.0.1:1, path: /mqtt, tls: { cert: c, key: k } } }",
        );
        assert_eq!(path, "listeners.p.path");
        let (path, _) =
            invalid("listeners: { p: { type: tcp, bind: 127.0.0.1:1, allowed_origins: [x] } }");
        assert_eq!(path, "listeners.p.allowed_origins");
        let (path, _) = invalid("listeners: { w: { type: ws, bind: 127.0.0.1:1, path: mqtt } }");
        assert_eq!(path, "listeners.w.path");
    }

    #[test]
    fn tls_keys_go_together() {
        let (path, _) = invalid(
            "listeners: { s: { type: tls, bind: 127.0.0.1:1, tls: { cert: c, key: k, client_auth: required } } }",
        );
        assert_eq!(path, "listeners.s.tls.client_ca");
        let (path, _) = invalid(
            "listeners: { s: { type: tls, bind: 127.0.0.1:1, tls: { cert: c, key: k, use_identity_as_username: common_name } } }",
        );
        assert_eq!(path, "listeners.s.tls.use_identity_as_username");
        let (path, _) = invalid(
            "listeners: { s: { type: wss, bind: 127.0.0.1:1, tls: { cert: c, key: k, alpn: [\"\"] } } }",
        );
        assert_eq!(path, "listeners.s.tls.alpn");
        // A client CA alone asks for certificates (required).
        let c = Config::from_yaml(
            "listeners: { s: { type: tls, bind: 127.0.0.1:1, proxy_protocol: true, tls: { cert: c, key: k, client_ca: ca } } }",
            Path::new("t.yaml"),
        )
        .unwrap();
        let tls = c.listeners["s"].tls.as_ref().unwrap();
        assert_eq!(tls.client_auth(), super::ClientAuth::Required);
        assert!(c.listeners["s"].proxy_protocol);
        let w = Config::from_yaml(
            "listeners: { w: { type: ws, bind: 127.0.0.1:1 } }",
            Path::new("t.yaml"),
        )
        .unwrap();
        assert_eq!(w.listeners["w"].ws_path(), "/mqtt");
    }
}
