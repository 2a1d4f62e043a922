//! How the load generator reaches the broker: plain TCP, TLS, MQTT over WebSocket, or
//! WebSocket over TLS.
//!
//! The connection tasks are generic over [`Transport`] and each run picks one type, so plain
//! TCP runs the very code it ran before the other transports existed: no boxing, no dispatch
//! per read or write, `try_read_buf`/`readable` on the socket, no flush (`BUFFERED` is a
//! constant, so the branch compiles away). TLS and WebSocket streams buffer what is written,
//! so they are flushed after every write, and they have no readiness without reading: their
//! [`Transport::wait_readable`] reads.
//!
//! TLS is rustls with the ring provider, TLS 1.3 or 1.2 (the broker picks), the server checked
//! against one CA (`--tls-ca`). Every connection makes a full handshake unless `--tls-resume`:
//! the `connect` scenario measures what a fleet reconnecting with no session tickets costs.
//! WebSocket is tokio-tungstenite: subprotocol `mqtt` (a broker that does not agree fails the
//! handshake), each write one binary message.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, ready};

use anyhow::{Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The transport of a run, from `--tls-ca` and `--ws`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        }
    }
}

/// Everything needed to open one connection of the run's transport; shared by all tasks.
pub(crate) struct Dialer {
    pub(crate) addr: SocketAddr,
    pub(crate) kind: Kind,
    /// The client side of TLS and the name the server's certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `ws://host:port/path` (or `wss://`), the WebSocket request's URL.
    url: String,
}

impl Dialer {
    /// `tls_ca`: connect over TLS, trusting the CA certificates in this PEM file. `ws`: speak
    /// MQTT over WebSocket, requesting this path.
    pub(crate) fn new(
        addr: SocketAddr,
        host: &str,
        tls_ca: Option<&std::path::Path>,
        server_name: &str,
        resume: bool,
        ws: Option<&str>,
    ) -> Result<Self> {
        let tls = tls_ca
            .map(|ca| tls_connector(ca, resume))
            .transpose()?
            .map(|c| {
                let name = ServerName::try_from(server_name.to_owned()).with_context(|| {
                    format!(
                        "--tls-server-name {server_name:?} is neither a DNS name nor an IP address"
                    )
                })?;
                anyhow::Ok((c, name))
            })
            .transpose()?;
        let kind = match (tls.is_some(), ws.is_some()) {
            (false, false) => Kind::Tcp,
            (true, false) => Kind::Tls,
            (false, true) => Kind::Ws,
            (true, true) => Kind::Wss,
        };
        let path = ws.unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        // The Host header names what the certificate names (the broker may check neither).
        let host = if tls.is_some() { server_name } else { host };
        let url = format!("{scheme}://{host}:{}{path}", addr.port());
        Ok(Self {
            addr,
            kind,
            tls,
            url,
        })
    }
}

fn tls_connector(ca: &std::path::Path, resume: bool) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
    for cert in certs {
        let cert =
            cert.with_context(|| format!("--tls-ca {}: not a PEM certificate", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--tls-ca {}: a certificate rustls refuses", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "--tls-ca {} holds no certificate",
        ca.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("rustls refuses TLS 1.3/1.2 with ring")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What the first TLS handshake of the run agreed on ("TLSv1_3 TLS13_AES_256_GCM_SHA384"),
/// for the report.
static NEGOTIATED: OnceLock<String> = OnceLock::new();

/// The TLS version and cipher suite of the run, if it uses TLS.
pub(crate) fn negotiated() -> Option<&'static str> {
    NEGOTIATED.get().map(String::as_str)
}

/// A byte stream to the broker.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Whether writes are buffered and must be flushed (TLS records, WebSocket frames).
    const BUFFERED: bool = true;

    /// Connects: TCP, then the TLS handshake and the WebSocket upgrade where there are.
    fn dial(d: &Dialer) -> impl Future<Output = Result<Self>> + Send;

    /// Reads what has already arrived into `buf`, without waiting: `WouldBlock` if nothing has.
    fn read_now(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            let mut read = std::pin::pin!(self.read_buf(buf));
            // `read_buf` is cancel safe: dropped while pending, it has read nothing.
            std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Pending => Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
                Poll::Ready(r) => Poll::Ready(r),
            })
            .await
        }
    }

    /// Waits until the broker has sent something. It may read it into `buf` (an end of stream
    /// shows in the next [`Transport::read_now`]).
    fn wait_readable(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<()>> + Send {
        async move { self.read_buf(buf).await.map(drop) }
    }

    /// Writes `bytes` and flushes them if this transport buffers.
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            self.write_all(bytes).await?;
            if Self::BUFFERED {
                self.flush().await?;
            }
            Ok(())
        }
    }

    /// Ends the connection after DISCONNECT: TLS sends close_notify, WebSocket a Close frame.
    fn finish(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.shutdown().await;
        }
    }
}

impl Transport for TcpStream {
    const BUFFERED: bool = false;

    async fn dial(d: &Dialer) -> Result<Self> {
        let stream = TcpStream::connect(d.addr)
            .await
            .with_context(|| format!("could not connect to broker at {}", d.addr))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn read_now(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send {
        std::future::ready(self.try_read_buf(buf))
    }

    async fn wait_readable(&mut self, _buf: &mut BytesMut) -> io::Result<()> {
        self.readable().await
    }

    /// Dropped, as before TLS existed: the DISCONNECT already said goodbye.
    async fn finish(self) {}
}

impl Transport for TlsStream<TcpStream> {
    async fn dial(d: &Dialer) -> Result<Self> {
        let tcp = TcpStream::dial(d).await?;
        let (connector, name) = d.tls.as_ref().context("no TLS settings (--tls-ca)")?;
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with the broker at {} failed", d.addr))?;
        if NEGOTIATED.get().is_none() {
            let conn = stream.get_ref().1;
            let version = conn.protocol_version().map(|v| format!("{v:?}"));
            let suite = conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()));
            let _ = NEGOTIATED.set(format!(
                "{} {}",
                version.as_deref().unwrap_or("?"),
                suite.as_deref().unwrap_or("?")
            ));
        }
        Ok(stream)
    }
}

/// MQTT over WebSocket as a byte stream: every write is one binary message, and reads hand
/// out the bytes of binary messages in order (MQTT packets may span messages).
pub(crate) struct Ws<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
}

impl<S: Transport> Transport for Ws<S> {
    async fn dial(d: &Dialer) -> Result<Self> {
        let inner = S::dial(d).await?;
        let mut request = d.url.as_str().into_client_request()?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let (ws, _) = tokio_tungstenite::client_async(request, inner)
            .await
            .with_context(|| format!("WebSocket handshake for {} failed", d.url))?;
        Ok(Self {
            ws,
            pending: Bytes::new(),
        })
    }
}

fn ws_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Ws<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // A closed WebSocket reads as the end of the stream.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(bytes))) => this.pending = bytes,
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the broker sent a text WebSocket message (MQTT needs binary)",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Ws<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut ws = Pin::new(&mut self.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(ws_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_error)
    }
}
