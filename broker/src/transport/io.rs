//! Byte-stream adapters the transports share.
//!
//! - [`WriteThrough`]: a write is done when its bytes have left for the socket. The
//!   connection loop never calls `flush` (a TCP socket needs none); TLS and WebSocket
//!   buffer what they encrypt or frame, and bytes left in such a buffer while the
//!   socket was full would wait there until the next write, which may never come.
//! - [`Capped`]: at most so many bytes read, until disarmed: bounds what a peer can make
//!   us buffer before the MQTT layer's own limits apply (an HTTP upgrade request).

use std::io;
use std::pin::Pin;
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.taken = None;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads at most `left` bytes, then fails, until [`disarm`](Self::disarm)ed.
pub(crate) struct Capped<S> {
    inner: S,
    left: Option<usize>,
}

impl<S> Capped<S> {
    pub(crate) fn new(inner: S, cap: usize) -> Self {
        Self {
            inner,
            left: Some(cap),
        }
    }

    /// Lifts the cap.
    pub(crate) fn disarm(&mut self) {
        self.left = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(left) = this.left else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request larger than the limit",
            )));
        }
        // Only while the cap is armed (the handshake): zeroing the part read into is
        // the price of doing this without unsafe code.
        let room = buf.remaining().min(left);
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.advance(n);
        this.left = Some(left - n);
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
