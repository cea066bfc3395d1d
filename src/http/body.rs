//! Request bodies: idle timeouts, size limits, and draining a refused body.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

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
