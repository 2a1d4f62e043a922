//! Byte-stream adapters the transports share.
//!
//! - [`WriteThrough`]: a write is done when its bytes have left for the socket. The
//!   connection loop never calls `flush` (a TCP socket needs none); TLS and WebSocket
//!   buffer what they encrypt or frame, and bytes left in such a buffer while the
//!   socket was full would wait there until the next write, which may never come.
//! - [`Capped`]: at most so many bytes read until the client is authenticated: bounds
//!   what a WebSocket peer can make us buffer below the MQTT layer (the HTTP upgrade
//!   request, frames tungstenite holds whole, pings) before the MQTT layer's own
//!   limits apply.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Makes every write a write and a flush.
///
/// `poll_write` returns `Ready(Ok(n))` only once the `n` bytes it took are flushed.
/// When the flush is pending it returns `Pending` and remembers `n`: the next
/// `poll_write` finishes that flush and reports those `n` bytes, so the caller must
/// retry with a buffer that starts with the same bytes (the connection loop does: it
/// writes `out[written..]` until `written` reaches the end).
pub(crate) struct WriteThrough<W> {
    inner: W,
    /// Bytes taken by the inner writer whose flush has not finished.
    taken: Option<usize>,
}

impl<W> WriteThrough<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, taken: None }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteThrough<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = match this.taken {
            Some(n) => n,
            None => {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
                this.taken = Some(n);
                n
            }
        };
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.taken = None;
        Poll::Ready(Ok(n))
    }

    // `taken` stays: bytes taken by a write that returned `Pending` are reported by the
    // write that retries them, flushed in between or not.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Lifts a [`Capped`] stream's cap, from wherever the connection is served: once the
/// client is authenticated, the MQTT layer's own limits bound what it may send.
#[derive(Debug, Clone, Default)]
pub struct PreAuthLimit(Arc<AtomicBool>);

impl PreAuthLimit {
    /// No cap any more.
    pub fn lift(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn lifted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reads at most `cap` bytes in all, then fails, until its [`PreAuthLimit`] is lifted.
pub(crate) struct Capped<S> {
    inner: S,
    left: usize,
    limit: PreAuthLimit,
}

impl<S> Capped<S> {
    pub(crate) fn new(inner: S, cap: usize, limit: PreAuthLimit) -> Self {
        Self {
            inner,
            left: cap,
            limit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.limit.lifted() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more bytes before authentication than the listener allows",
            )));
        }
        // Only until the client is authenticated: zeroing the part read into is the
        // price of doing this without unsafe code.
        let room = buf.remaining().min(this.left);
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.advance(n);
        this.left -= n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
