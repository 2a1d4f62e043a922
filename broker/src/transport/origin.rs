//! Where a connection comes from, as the handshake, the logs and plugins see it: the
//! client's address, the listener and its transport, and what TLS established.

use std::net::SocketAddr;
use std::sync::Arc;

use super::io::PreAuthLimit;
use crate::config::ListenerKind;

/// The facts of a connection that are known before its CONNECT.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The client's address: the socket's peer, or the PROXY protocol header's source.
    pub peer: SocketAddr,
    /// The listener's name (its key under `listeners:`).
    pub listener: Arc<str>,
    /// The listener's transport.
    pub transport: ListenerKind,
    /// What TLS established, on `tls` and `wss` listeners.
    pub tls: Option<Arc<PeerTls>>,
    /// What `tls.use_identity_as_username` makes of the CONNECT username.
    pub username: MappedUsername,
    /// On WebSocket listeners, the cap on what the client may send before it is
    /// authenticated; the handshake lifts it once the auth chain lets the client in.
    pub pre_auth: Option<PreAuthLimit>,
}

impl Origin {
    /// A plain TCP connection from `peer` on `listener`.
    pub fn tcp(peer: SocketAddr, listener: Arc<str>) -> Self {
        Self {
            peer,
            listener,
            transport: ListenerKind::Tcp,
            tls: None,
            username: MappedUsername::Keep,
            pre_auth: None,
        }
    }
}

/// What the listener makes of the CONNECT username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappedUsername {
    /// The client's own username stands (no mapping, or no client certificate).
    Keep,
    /// Replaced by this, taken from the verified client certificate.
    Replace(String),
    /// The mapping is on but there is no certificate, or it lacks the part the mapping
    /// takes (exactly one common name): the CONNECT is refused (not authorized), for
    /// this reason.
    Refuse(&'static str),
}

/// What a TLS handshake established about the client.
#[derive(Debug, Clone, Default)]
pub struct PeerTls {
    /// The client's certificate, verified against the listener's `tls.client_ca`.
    pub certificate: Option<PeerCertificate>,
    /// The SNI server name the client asked for.
    pub server_name: Option<String>,
    /// The negotiated version, `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The negotiated cipher suite, IANA name.
    pub cipher_suite: String,
    /// The ALPN protocol agreed on.
    pub alpn: Option<String>,
}

/// A verified client certificate, as plugins see it.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate {
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
    /// The subject, RFC 4514 (`CN=device-17,O=Acme`).
    pub subject: String,
    /// The subject's common name, when it has exactly one.
    pub common_name: Option<String>,
    /// Subject alternative names as `DNS:name`, `IP:addr`, `URI:uri`, `email:addr`, in
    /// certificate order.
    pub sans: Vec<String>,
    /// SHA-256 of `der`, 64 lowercase hexadecimal digits.
    pub fingerprint_sha256: String,
}
