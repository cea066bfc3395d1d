//! Lingering close, as nginx does it: when the server closes a connection,
//! it first shuts down its write side and then reads and discards what the
//! client is still sending, for a short while, before closing the socket.
//!
//! Why: a request refused before its body was read (401, 413, 403 on a
//! signed upload URL) leaves the client's bytes in flight. Closing a socket
//! whose receive buffer holds unread data makes the kernel send a reset, and
//! a reset can destroy the answer before the client has read it (seen in 1 of
//! 15 refused uploads). Shutting down writing sends the answer and a FIN;
//! draining until the client goes quiet lets both arrive.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Longest a close lingers.
const LINGER_TOTAL: Duration = Duration::from_secs(2);
/// A client that sends nothing for this long is done.
const LINGER_IDLE: Duration = Duration::from_millis(250);

/// A TCP connection whose shutdown lingers (see the module doc).
#[derive(Debug)]
pub struct LingeringStream {
    inner: TcpStream,
    linger: Option<Linger>,
}

#[derive(Debug)]
struct Linger {
    until: Instant,
    idle: Pin<Box<Sleep>>,
}

impl LingeringStream {
    /// Wraps an accepted connection.
    pub fn new(inner: TcpStream) -> Self {
        Self { inner, linger: None }
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            let now = Instant::now();
            this.linger = Some(Linger { until: now + LINGER_TOTAL, idle: Box::pin(tokio::time::sleep(LINGER_IDLE)) });
        }
        let linger = this.linger.as_mut().expect("set above");
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if Instant::now() >= linger.until || linger.idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // End of stream or an error: the client is done either way.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let next = (Instant::now() + LINGER_IDLE).min(linger.until);
                    linger.idle.as_mut().reset(next);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
