//! Transports: from an accepted TCP socket to the byte stream MQTT is read from, for
//! each listener type.
//!
//! ```text
//! TCP socket ─ PROXY header? ─ TLS handshake? ─ WebSocket upgrade? ─ MQTT (server/)
//! ```
//!
//! Every step runs within `mqtt.connect_timeout` and under the connection's
//! `mqtt.max_handshakes` slot, and a step that fails closes that connection with the
//! reason logged (the caller logs [`OpenError`]). What the steps establish (the real
//! client address, the TLS session and client certificate) is the connection's
//! [`Origin`], which the handshake hands to plugins.
//!
//! # Layout
//! - this file: [`Endpoint`], a listener's transport, and [`Endpoint::open`].
//! - [`origin`]: the [`Origin`] of a connection, in the broker's terms.
//! - [`proxy`]: the PROXY protocol v1/v2 header.
//! - [`tls`]: rustls server configurations, swapped whole on a certificate change.
//! - [`certinfo`]: a client certificate's subject, SANs and fingerprint.
//! - [`watch`]: certificate files read again when they change.
//! - [`ws`]: the WebSocket upgrade and MQTT over binary frames.
//! - [`io`]: stream adapters the transports share.

pub(crate) mod certinfo;
pub(crate) mod io;
pub mod origin;
pub mod proxy;
pub(crate) mod tls;
pub mod watch;
pub(crate) mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::{CertUsername, ListenerConfig, ListenerKind, MqttConfig};
pub use io::PreAuthLimit;
pub use origin::{MappedUsername, Origin, PeerCertificate, PeerTls};
pub use tls::TlsError;
pub use watch::Certificates;

use self::io::WriteThrough;
use self::proxy::{ProxyError, ProxyHeader};
use self::tls::TlsEndpoint;
use self::ws::{UpgradeError, WsSettings};

/// The read half of a connection over TLS or WebSocket.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a connection over TLS or WebSocket.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a connection closed before its first MQTT byte.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// `proxy_protocol: true` and no valid header came first.
    #[error("{0}")]
    Proxy(#[from] ProxyError),
    /// The TLS handshake failed (a client that does not speak TLS, an unknown CA, no
    /// client certificate where one is required, no common ALPN protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP upgrade to WebSocket failed or was refused.
    #[error("WebSocket upgrade failed: {0}")]
    Ws(#[from] UpgradeError),
    /// A step did not finish within `mqtt.connect_timeout`.
    #[error("{0} did not finish within mqtt.connect_timeout")]
    Timeout(&'static str),
}

impl OpenError {
    /// A connection closed before sending anything the step could judge: a TCP health
    /// check of a load balancer, a port scan. Routine: logged at `debug`, not counted.
    pub(crate) fn is_routine(&self) -> bool {
        let eof = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        };
        match self {
            Self::Proxy(ProxyError::Closed) => true,
            Self::Proxy(ProxyError::Io(e)) | Self::Tls(e) => eof(e),
            Self::Ws(UpgradeError::Handshake(e)) => match e {
                tokio_tungstenite::tungstenite::Error::Io(e) => eof(e),
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::Protocol(
                    tokio_tungstenite::tungstenite::error::ProtocolError::HandshakeIncomplete,
                ) => true,
                _ => false,
            },
            _ => false,
        }
    }
}

/// A listener's transport: how its connections become MQTT byte streams.
pub(crate) struct Endpoint {
    /// The listener's name.
    pub(crate) name: Arc<str>,
    /// Its transport.
    pub(crate) kind: ListenerKind,
    proxy_protocol: bool,
    tls: Option<Arc<TlsEndpoint>>,
    ws: Option<WsSettings>,
    username: CertUsername,
    timeout: Duration,
}

impl Endpoint {
    /// The transport of listener `name`; its certificate files are read here (an error
    /// names the listener, the key and the file).
    pub(crate) fn new(
        name: &str,
        config: &ListenerConfig,
        mqtt: &MqttConfig,
    ) -> Result<Self, TlsError> {
        let tls = match &config.tls {
            Some(tls) => Some(Arc::new(TlsEndpoint::load(name, config.kind, tls)?)),
            None => None,
        };
        let ws = config.kind.is_ws().then(|| WsSettings {
            path: config.ws_path().to_owned(),
            origins: config.allowed_origins.clone(),
            // A frame carries one packet as large as allowed, and some small ones
            // behind it (clients that batch).
            max_message: mqtt.max_packet_size.saturating_add(64 * 1024),
            pre_auth: mqtt.connect_size_limit().saturating_add(ws::PRE_AUTH_SLACK),
        });
        Ok(Self {
            name: name.into(),
            kind: config.kind,
            proxy_protocol: config.proxy_protocol,
            tls,
            ws,
            username: config
                .tls
                .as_ref()
                .map_or(CertUsername::None, |t| t.use_identity_as_username),
            timeout: mqtt.connect_timeout,
        })
    }

    /// Plain TCP with nothing before MQTT: served on the socket's own halves.
    pub(crate) fn is_plain(&self) -> bool {
        self.kind == ListenerKind::Tcp && !self.proxy_protocol
    }

    /// The listener's TLS configuration, for reloads.
    pub(crate) fn tls(&self) -> Option<&Arc<TlsEndpoint>> {
        self.tls.as_ref()
    }

    /// Runs the steps before MQTT on an accepted socket: the PROXY header, the TLS
    /// handshake, the WebSocket upgrade, as the listener has them.
    pub(crate) async fn open(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Result<(BoxRead, BoxWrite, Origin), OpenError> {
        let deadline = Instant::now() + self.timeout;
        let mut origin = Origin {
            peer,
            listener: self.name.clone(),
            transport: self.kind,
            tls: None,
            username: MappedUsername::Keep,
            pre_auth: self.ws.is_some().then(PreAuthLimit::default),
        };
        let pre_auth = origin.pre_auth.clone().unwrap_or_default();
        if self.proxy_protocol {
            let header = within(
                deadline,
                "the PROXY header",
                proxy::read_header(&mut stream),
            )
            .await??;
            if let ProxyHeader::Proxied { source, .. } = header {
                origin.peer = source;
            }
        }
        let Some(tls) = &self.tls else {
            if self.ws.is_none() {
                // Plain TCP behind a PROXY header: the socket's own halves.
                let (rd, wr) = stream.into_split();
                return Ok((Box::new(rd), Box::new(wr), origin));
            }
            let (rd, wr) = self.framed(stream, deadline, pre_auth).await?;
            return Ok((rd, wr, origin));
        };
        let stream = within(deadline, "the TLS handshake", tls.acceptor().accept(stream))
            .await?
            .map_err(OpenError::Tls)?;
        let peer_tls = tls::peer_tls(stream.get_ref().1);
        origin.username = self.mapped_username(&peer_tls);
        origin.tls = Some(Arc::new(peer_tls));
        let (rd, wr) = self.framed(stream, deadline, pre_auth).await?;
        Ok((rd, wr, origin))
    }

    /// The halves MQTT is read from and written to over `stream` (TLS, or TCP on a `ws`
    /// listener): through the WebSocket upgrade on `ws`/`wss` listeners, and with every
    /// write flushed through the TLS or WebSocket buffer (see [`WriteThrough`]).
    async fn framed<S>(
        &self,
        stream: S,
        deadline: Instant,
        pre_auth: PreAuthLimit,
    ) -> Result<(BoxRead, BoxWrite), OpenError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(ws) = &self.ws else {
            let (rd, wr) = tokio::io::split(stream);
            return Ok((Box::new(rd), Box::new(WriteThrough::new(wr))));
        };
        let ws = within(
            deadline,
            "the WebSocket upgrade",
            ws::accept(stream, ws, pre_auth),
        )
        .await??;
        let (rd, wr) = tokio::io::split(ws);
        Ok((Box::new(rd), Box::new(WriteThrough::new(wr))))
    }

    /// What `tls.use_identity_as_username` makes of a client with this TLS session.
    /// Without a certificate (`client_auth: optional`) the client is refused, as
    /// Mosquitto does: a username it typed would stand where certificate names stand.
    fn mapped_username(&self, tls: &PeerTls) -> MappedUsername {
        match (self.username, &tls.certificate) {
            (CertUsername::None, _) => MappedUsername::Keep,
            (_, None) => MappedUsername::Refuse("the client presented no certificate"),
            (CertUsername::CommonName, Some(cert)) => cert.common_name.clone().map_or(
                MappedUsername::Refuse("the client certificate has no single common name"),
                MappedUsername::Replace,
            ),
            (CertUsername::Subject, Some(cert)) => MappedUsername::Replace(cert.subject.clone()),
        }
    }
}

/// Loads every TLS listener's certificate files as start-up would (for `tandem
/// check-config`): each listener's name and when its certificate expires, or the first
/// error, naming the listener, the key and the file.
pub fn check_certificates(
    config: &crate::config::Config,
) -> Result<Vec<(String, Option<String>)>, TlsError> {
    let mut checked = Vec::new();
    for (name, listener) in &config.listeners {
        if let Some(tls) = &listener.tls {
            let endpoint = TlsEndpoint::load(name, listener.kind, tls)?;
            checked.push((name.clone(), endpoint.not_after()));
        }
    }
    Ok(checked)
}

async fn within<T>(
    deadline: Instant,
    step: &'static str,
    f: impl Future<Output = T>,
) -> Result<T, OpenError> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| OpenError::Timeout(step))
}
