//! The client as plugins see it, and the facts of its connection that events report,
//! in the broker's own terms. [`wire`](super::wire) turns them into the plugin
//! contract's messages; nothing outside `plugins/` needs to.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ListenerKind;
use crate::protocol::ProtocolVersion;
use crate::transport::PeerTls;

/// Who the client is: fixed for the connection once the auth chain has allowed it.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub(crate) client_id: String,
    /// The established identity: what the allowing Authenticate plugins set, else the
    /// CONNECT username (empty when neither). Sent as `username` to plugins.
    pub(crate) identity: String,
    /// The username as typed in CONNECT (empty when none): for audit only.
    pub(crate) connect_username: String,
    /// Session attributes from the allowing Authenticate plugins.
    pub(crate) attributes: HashMap<String, String>,
    pub(crate) listener: String,
    pub(crate) remote_addr: String,
    /// The listener's transport.
    pub(crate) transport: ListenerKind,
    /// What TLS established (re-authentications carry it again).
    pub(crate) tls: Option<Arc<PeerTls>>,
}

impl ClientIdentity {
    /// `identity` is what the auth chain established, `None` when it set none (or there
    /// is no chain): the CONNECT `username` then stands.
    pub fn new(
        client_id: String,
        identity: Option<String>,
        username: Option<String>,
        attributes: HashMap<String, String>,
        listener: String,
        remote_addr: String,
    ) -> Self {
        let connect_username = username.unwrap_or_default();
        Self {
            client_id,
            identity: identity.unwrap_or_else(|| connect_username.clone()),
            connect_username,
            attributes,
            listener,
            remote_addr,
            transport: ListenerKind::Tcp,
            tls: None,
        }
    }

    /// The same client, connected over `transport` with `tls`.
    pub fn over(mut self, transport: ListenerKind, tls: Option<Arc<PeerTls>>) -> Self {
        self.transport = transport;
        self.tls = tls;
        self
    }

    /// The listener's transport.
    pub fn transport(&self) -> ListenerKind {
        self.transport
    }

    /// The established identity: who the auth chain says the client is (the CONNECT
    /// username only when no allowing plugin set one; empty when there is neither).
    /// Everything that acts per user (topic checks, events, session ownership) reads
    /// this, never the CONNECT username.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The username as the client typed it in CONNECT (empty when none): for audit.
    pub fn connect_username(&self) -> &str {
        &self.connect_username
    }
}

/// What `client_connected` reports of a connection that was let in.
#[derive(Debug, Clone)]
pub struct ConnectedInfo {
    /// The protocol version spoken.
    pub version: ProtocolVersion,
    /// CONNECT's clean session / clean start flag.
    pub clean_start: bool,
    /// CONNECT's keepalive, in seconds.
    pub keep_alive: u16,
    /// Whether a stored session was resumed.
    pub session_present: bool,
}

/// Why a connection ended, as `client_disconnected` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent DISCONNECT.
    Clean,
    /// The socket closed or failed without DISCONNECT.
    ConnectionLost,
    /// The client broke the protocol.
    ProtocolError,
    /// Nothing arrived within 1.5 times the keepalive.
    KeepaliveTimeout,
    /// Another connection took the client id over.
    Takeover,
    /// The broker shut down.
    Shutdown,
    /// A re-authentication (MQTT 5) failed.
    NotAuthorized,
}

/// What `client_disconnected` reports.
#[derive(Debug, Clone)]
pub struct DisconnectedInfo {
    /// Why the connection ended.
    pub reason: EndReason,
    /// More about why, for logs (an I/O or protocol error's text); may be empty.
    pub detail: String,
    /// Whether the will was published.
    pub will_published: bool,
    /// Whether the session outlives the connection.
    pub session_kept: bool,
}
