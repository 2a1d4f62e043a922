//! WebSocket listeners: the HTTP upgrade (path, origin, the `mqtt` subprotocol), then
//! MQTT as a byte stream over binary frames (MQTT 5 section 6, MQTT 3.1.1 section 6):
//! a packet may span frames and a frame may hold several packets, so the frames'
//! payloads are read as one stream and the MQTT decoder never sees frame bounds.
//!
//! A text frame breaks the protocol (MQTT-6.0.0-1): the connection is closed with that
//! reason. Pings are answered by tungstenite while reading; a Close frame is answered
//! and read as the end of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::io::{Capped, PreAuthLimit};

/// Bytes a client may send before it is authenticated beyond its CONNECT (and AUTH)
/// packets: the HTTP upgrade request (a browser's is a kilobyte or two, cookies
/// included), frame headers, pings.
pub(crate) const PRE_AUTH_SLACK: usize = 80 * 1024;

/// Largest frame the broker sends: a larger write goes out as several frames (the
/// MQTT stream does not care where frames end), so that one frame plus a queued pong
/// always fit the write buffer.
const MAX_FRAME_OUT: usize = 64 * 1024;

/// tungstenite's write buffer: one outgoing frame and the pongs queued behind it. At
/// the bound a further pong replaces the one waiting (tungstenite keeps one), so a
/// client that pings without reading cannot grow it.
const MAX_WRITE_BUFFER: usize = 2 * MAX_FRAME_OUT;

/// Read buffer per connection (tungstenite's default is 128 KiB, which ten thousand
/// idle connections would hold for nothing).
const READ_BUFFER: usize = 8 * 1024;

/// What a WebSocket listener accepts.
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    /// The endpoint's path.
    pub(crate) path: String,
    /// Accepted `Origin`s; empty accepts any (and none).
    pub(crate) origins: Vec<String>,
    /// Largest frame and message accepted, in bytes.
    pub(crate) max_message: usize,
    /// Bytes read in all before the client is authenticated.
    pub(crate) pre_auth: usize,
}

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The request was answered with an HTTP error (wrong path, origin or
    /// subprotocol).
    #[error("{0}")]
    Refused(String),
    /// Not a WebSocket upgrade, or the connection failed.
    #[error("{0}")]
    Handshake(#[from] tungstenite::Error),
}

/// Answers the HTTP upgrade on `stream` and returns the WebSocket as a byte stream,
/// which reads at most `settings.pre_auth` bytes until `limit` is lifted.
// The error type of the upgrade callback is tungstenite's, boxed or not.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept<S>(
    stream: S,
    settings: &WsSettings,
    limit: PreAuthLimit,
) -> Result<WsStream<Capped<S>>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message));
    let mut refused = None;
    let callback = |request: &Request, response: Response| {
        check(request, response, settings).inspect_err(|e| {
            refused = Some(format!(
                "{} {}",
                e.status().as_u16(),
                e.body().as_deref().unwrap_or_default()
            ));
        })
    };
    let upgraded = tokio_tungstenite::accept_hdr_async_with_config(
        Capped::new(stream, settings.pre_auth, limit),
        callback,
        Some(config),
    )
    .await;
    match (upgraded, refused) {
        (Ok(ws), _) => Ok(WsStream {
            ws,
            read: Bytes::new(),
        }),
        (Err(_), Some(why)) => Err(UpgradeError::Refused(why)),
        (Err(e), None) => Err(e.into()),
    }
}

/// The upgrade request's path, origin and subprotocol, checked; the response names the
/// subprotocol chosen.
#[allow(clippy::result_large_err)]
fn check(
    request: &Request,
    mut response: Response,
    settings: &WsSettings,
) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_owned()));
        *r.status_mut() = status;
        r
    };
    if request.uri().path() != settings.path {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "no MQTT endpoint at this path",
        ));
    }
    if !settings.origins.is_empty() {
        // Browsers always send an Origin on a WebSocket upgrade, and a client that is
        // not a browser can send any: a request without one is not a page's, and is
        // served (as EMQX's allow_origin_absence). One that is not text is refused.
        let allowed = match request.headers().get("origin") {
            None => true,
            Some(origin) => origin.to_str().is_ok_and(|o| {
                settings
                    .origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            }),
        };
        if !allowed {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "origin not in the listener's allowed_origins",
            ));
        }
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // `mqtt` is the name MQTT 3.1.1 and 5 register; some older clients send `mqttv3.1`.
    // A client that names none is served (it speaks MQTT or nothing here); one that
    // names only others would not understand us.
    let chosen = ["mqtt", "mqttv3.1"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)));
    match chosen {
        Some(p) => {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(p));
        }
        None if !offered.is_empty() => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the mqtt subprotocol was not offered",
            ));
        }
        None => {}
    }
    Ok(response)
}

/// A WebSocket as a byte stream: reads are the binary frames' payloads in order;
/// each write is sent as one binary frame.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the frame being read.
    read: Bytes,
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.read.is_empty() {
                let n = this.read.len().min(buf.remaining());
                buf.put_slice(&this.read[..n]);
                this.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.read = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame: MQTT is carried in binary frames only",
                    )));
                }
                // Answered by tungstenite; nothing for MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Pongs the reads queued go first, so the frame always fits the write buffer.
        ready!(Sink::<Message>::poll_flush(Pin::new(&mut self.ws), cx)).map_err(ws_error)?;
        ready!(Sink::<Message>::poll_ready(Pin::new(&mut self.ws), cx)).map_err(ws_error)?;
        let n = buf.len().min(MAX_FRAME_OUT);
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
            .map_err(ws_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Message>::poll_flush(Pin::new(&mut self.ws), cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Sink::<Message>::poll_close(Pin::new(&mut self.ws), cx)) {
            // Closing what the peer already closed is done.
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {}
            Err(e) => return Poll::Ready(Err(ws_error(e))),
        }
        // Then the stream below: TLS sends its close_notify, TCP its FIN.
        Pin::new(self.ws.get_mut()).poll_shutdown(cx)
    }
}
