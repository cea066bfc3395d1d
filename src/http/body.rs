//! Request bodies: idle timeouts, size limits, draining a refused body, and
//! closing connections whose request body was not read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;

use crate::storage::ByteStream;

/// Most bytes of a refused body read (and dropped) before answering, so that
/// an HTTP client still sending it gets the answer instead of a connection
/// reset (nginx's lingering close, bounded).
pub const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// The body as a stream that fails with `TimedOut` when the client sends
/// nothing for `idle`.
pub fn with_idle_timeout(body: Body, idle: Duration) -> ByteStream {
    let stream = tokio_stream::StreamExt::timeout(body.into_data_stream(), idle).map(|item| match item {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client sent nothing for too long")),
    });
    Box::pin(stream)
}

/// Reads and drops up to [`DRAIN_LIMIT`] more bytes of `stream`.
pub async fn drain<S, E>(mut stream: S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            break;
        }
    }
}

/// Why [`read_limited`] stopped.
#[derive(Debug)]
pub enum ReadError<E> {
    /// More than the limit arrived (the rest was drained, up to [`DRAIN_LIMIT`]).
    TooLarge,
    /// The stream failed.
    Stream(E),
}

/// Reads at most `limit` bytes; on more, drains a bounded amount and stops.
pub async fn read_limited<S, E>(mut stream: S, limit: u64) -> Result<Bytes, ReadError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Stream)?;
        if (buf.len() + chunk.len()) as u64 > limit {
            drop(buf);
            drain(stream).await;
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A request body that records whether it was read to its end.
struct Tracked {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: an answer to a request whose body was not read to its end (a
/// refusal before the upload was read: 401, 413, 403…) says `Connection:
/// close`, so that the client knows the connection ends with the answer
/// instead of finding out from a reset. The close itself lingers
/// ([`super::linger`]) so the answer is not lost.
pub async fn close_unread(req: Request, next: Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let tracked = done.clone();
    let req = req.map(|inner| Body::new(Tracked { inner, done: tracked }));
    let mut response = next.run(req).await;
    if !done.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
