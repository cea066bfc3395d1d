//! PUTting a region of the input file to a presigned URL, streamed from disk:
//! memory holds one read buffer per request in flight, whatever the file's size.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::api::{Action, ServerError};
use super::progress::Progress;
use super::{ClientError, Step};

/// Bytes read from disk at a time.
const CHUNK: usize = 64 * 1024;

/// A byte range of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Region {
    /// Part `n` (1-based) of a file of `size` bytes cut into `part_size` parts.
    pub fn part(n: u32, part_size: u64, size: u64) -> Self {
        let offset = u64::from(n.saturating_sub(1)).saturating_mul(part_size).min(size);
        Self { offset, len: part_size.min(size - offset) }
    }
}

/// Why a PUT failed, sorted by what the caller should do next.
#[derive(Debug)]
pub enum PutFailure {
    /// Worth another attempt after a pause (connection, timeout, 5xx, 429).
    Retry(ClientError),
    /// 403: the URL expired or was refused; a fresh one may work.
    Forbidden(ClientError),
    /// Anything else: give up.
    Fatal(ClientError),
}

impl PutFailure {
    /// The error inside.
    pub fn into_error(self) -> ClientError {
        match self {
            Self::Retry(e) | Self::Forbidden(e) | Self::Fatal(e) => e,
        }
    }
}

/// How long one PUT may take: a minute, plus the time to send its bytes at a
/// slow 64 KiB/s. It exists to unstick a dead connection, not to police speed.
fn put_timeout(len: u64) -> Duration {
    Duration::from_secs(60 + len / (64 * 1024))
}

/// The region as a streamed body; every chunk read is counted into `progress`
/// and into `attempt` (so a failed attempt can take its bytes back).
async fn region_body(
    path: &Path,
    region: Region,
    progress: Progress,
    attempt: Arc<AtomicU64>,
) -> std::io::Result<reqwest::Body> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(region.offset)).await?;
    let stream = ReaderStream::with_capacity(file.take(region.len), CHUNK).inspect_ok(move |chunk| {
        progress.add(chunk.len() as u64);
        attempt.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// PUTs `region` of `path` to `action` with exactly its headers and returns
/// the answer's ETag (empty when the store sent none). The action's
/// Content-Length must be the region's: it is signed into the URL, and hyper
/// sends a streamed body with it rather than chunked.
pub async fn put_region(
    http: &reqwest::Client,
    action: &Action,
    path: &Path,
    region: Region,
    progress: &Progress,
    step: Step,
) -> Result<String, PutFailure> {
    let declared = action.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if declared.and_then(|(_, v)| v.parse::<u64>().ok()) != Some(region.len) {
        let detail = format!(
            "the URL is signed for Content-Length {:?} but the part has {} bytes",
            declared.map(|(_, v)| v),
            region.len
        );
        return Err(PutFailure::Fatal(ClientError::Unexpected { step, detail }));
    }
    let counted = Arc::new(AtomicU64::new(0));
    let body = region_body(path, region, progress.clone(), counted.clone())
        .await
        .map_err(|source| PutFailure::Fatal(ClientError::Io { path: path.to_owned(), source }))?;
    let method = reqwest::Method::from_bytes(action.method.as_bytes()).unwrap_or(reqwest::Method::PUT);
    let mut req = http.request(method, &action.url).timeout(put_timeout(region.len)).body(body);
    for (name, value) in &action.headers {
        req = req.header(name, value);
    }
    let result = answer(req.send().await, step).await;
    if result.is_err() {
        progress.undo(counted.load(Ordering::Relaxed));
    }
    result
}

/// Sorts the store's answer into an ETag or a [`PutFailure`].
async fn answer(sent: reqwest::Result<reqwest::Response>, step: Step) -> Result<String, PutFailure> {
    let resp = match sent {
        Ok(resp) => resp,
        // Connection refused or reset, timeouts, a body cut short: all worth retrying.
        Err(source) => return Err(PutFailure::Retry(ClientError::Network { step, source })),
    };
    let status = resp.status();
    if status.is_success() {
        let etag = resp.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).unwrap_or("");
        return Ok(etag.to_owned());
    }
    let error = ClientError::Store { step, error: ServerError::from_response(resp).await };
    Err(match status.as_u16() {
        403 => PutFailure::Forbidden(error),
        408 | 429 | 500..=599 => PutFailure::Retry(error),
        _ => PutFailure::Fatal(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_file() {
        let size = 12 * 1024 * 1024 + 5;
        let ps = 5 * 1024 * 1024;
        assert_eq!(Region::part(1, ps, size), Region { offset: 0, len: ps });
        assert_eq!(Region::part(2, ps, size), Region { offset: ps, len: ps });
        assert_eq!(Region::part(3, ps, size), Region { offset: 2 * ps, len: 2 * 1024 * 1024 + 5 });
        assert_eq!(Region::part(4, ps, size).len, 0);
        assert_eq!(put_timeout(64 * 1024 * 100), Duration::from_secs(160));
    }
}
