//! Object storage: one trait, [`ObjectStore`], and its two backends.
//!
//! - [`fs::FsStore`]: the embedded default, files under `DATA_DIR`.
//! - [`s3::S3Store`]: AWS S3 and S3-compatible stores (SeaweedFS, MinIO, R2).
//!
//! The backend is chosen once at start-up ([`crate::config::StorageConfig`]) and
//! the rest of the service only sees `Arc<dyn ObjectStore>`. Keys are built by
//! [`keys`], never formatted by callers.

pub mod fs;
pub mod instrumented;
pub mod keys;
pub mod s3;
pub mod signing;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use keys::{InternalFolder, InternalKey, KeyPrefix, ObjectKey};

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The store shared by the whole service.
pub type DynStore = Arc<dyn ObjectStore>;

/// What went wrong in a storage operation. Callers match variants, never text.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object (or bucket) does not exist.
    #[error("object not found")]
    NotFound,
    /// A conditional write found the object already there (`If-None-Match: *`).
    #[error("object already exists")]
    AlreadyExists,
    /// The multipart upload id is unknown, completed or aborted.
    #[error("no such multipart upload")]
    NoSuchUpload,
    /// A part listed for completion is missing, has another ETag, or is too small.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// The requested byte range lies outside the object.
    #[error("range not satisfiable (object size {size})")]
    RangeNotSatisfiable {
        /// The object's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The body did not have the declared length.
    #[error("body length mismatch: expected {expected}, got {actual}")]
    LengthMismatch {
        /// Declared length.
        expected: u64,
        /// Bytes actually received (so far).
        actual: u64,
    },
    /// The key was refused by the key rules.
    #[error(transparent)]
    InvalidKey(#[from] keys::KeyError),
    /// The body stream failed (client went away, read error).
    #[error("body stream failed: {0}")]
    Body(#[source] std::io::Error),
    /// The store failed or could not be reached.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StorageError {
    /// A backend error from any displayable cause.
    pub fn backend(e: impl fmt::Display) -> Self {
        Self::Backend(e.to_string())
    }
}

/// Shorthand for storage results.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What the store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// The store's entity tag, quoted (`"…"`), content-based.
    pub etag: String,
    /// Last modification time.
    pub last_modified: SystemTime,
    /// The content type stored with the object, if any.
    pub content_type: Option<String>,
    /// The [`upload_tag`] of the multipart upload that completed the object,
    /// when it was completed from one (filled by `head` and `get`, not `list`).
    pub upload_tag: Option<String>,
}

impl ObjectMeta {
    /// Whether the multipart upload `upload_id` completed this object.
    pub fn completed_by(&self, upload_id: &str) -> bool {
        self.upload_tag.as_deref() == Some(upload_tag(upload_id))
    }
}

/// The part of a multipart upload id that the store records with the object
/// it completes. An S3 store assigns its upload id only after the upload's
/// metadata is fixed, so the S3 backend makes its ids `<tag>.<S3 upload id>`
/// with a tag of its own (32 hex digits) recorded as user metadata; the
/// filesystem backend's ids are their own tag.
pub fn upload_tag(upload_id: &str) -> &str {
    split_upload_id(upload_id).0.unwrap_or(upload_id)
}

/// Splits `<tag>.<store id>` (see [`upload_tag`]); an id of another shape is
/// the store's own, with no tag.
pub(crate) fn split_upload_id(upload_id: &str) -> (Option<&str>, &str) {
    match upload_id.split_at_checked(UPLOAD_TAG_LEN) {
        Some((tag, rest))
            if rest.len() > 1
                && rest.starts_with('.')
                && tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            (Some(tag), &rest[1..])
        }
        _ => (None, upload_id),
    }
}

/// Hex digits in an upload tag.
pub(crate) const UPLOAD_TAG_LEN: usize = 32;

/// A byte range as the client asked for it, resolved against the object size
/// by the store (which knows the size without an extra round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` (inclusive).
    Bounded {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// `bytes=start-`.
    From(u64),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Resolves against an object of `size` bytes into an inclusive range, or
    /// `None` when it is not satisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            Self::Bounded { start, end } if start < size && start <= end => Some((start, end.min(size - 1))),
            Self::From(start) if start < size => Some((start, size - 1)),
            Self::Suffix(n) if n > 0 && size > 0 => Some((size.saturating_sub(n), size - 1)),
            _ => None,
        }
    }

    /// The HTTP form, `bytes=…`. A last byte beyond any object's size is sent
    /// open-ended: RFC 9110 clamps it anyway, but some stores answer 416 to
    /// numbers they cannot parse (SeaweedFS to `bytes=0-18446744073709551615`).
    pub fn to_header(self) -> String {
        const BEYOND_ANY_OBJECT: u64 = 1 << 50;
        match self {
            Self::Bounded { start, end } if end >= BEYOND_ANY_OBJECT => format!("bytes={start}-"),
            Self::Bounded { start, end } => format!("bytes={start}-{end}"),
            Self::From(start) => format!("bytes={start}-"),
            Self::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// The answer to a GET: metadata, the part served, and the streamed body.
pub struct GetObject {
    /// The whole object's metadata (size is the full size).
    pub meta: ObjectMeta,
    /// The inclusive byte range of `body` when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// The bytes, streamed.
    pub body: ByteStream,
}

impl fmt::Debug for GetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetObject").field("meta", &self.meta).field("range", &self.range).finish_non_exhaustive()
    }
}

impl GetObject {
    /// Reads the whole body into memory, refusing more than `limit` bytes.
    pub async fn collect(self, limit: u64) -> Result<Bytes> {
        use futures::TryStreamExt;
        let len = self.range.map_or(self.meta.size, |(s, e)| e - s + 1);
        if len > limit {
            return Err(StorageError::LengthMismatch { expected: limit, actual: len });
        }
        let mut buf = Vec::with_capacity(len as usize);
        let mut body = self.body;
        while let Some(chunk) = body.try_next().await.map_err(StorageError::Body)? {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(StorageError::LengthMismatch { expected: limit, actual: (buf.len() + chunk.len()) as u64 });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }
}

/// A body to store: a stream of exactly `length` bytes.
pub struct PutBody {
    /// The bytes.
    pub stream: ByteStream,
    /// The exact number of bytes the stream yields; a mismatch fails the put.
    pub length: u64,
}

impl PutBody {
    /// A streamed body of a known length.
    pub fn stream(stream: ByteStream, length: u64) -> Self {
        Self { stream, length }
    }
}

impl From<Bytes> for PutBody {
    fn from(bytes: Bytes) -> Self {
        let length = bytes.len() as u64;
        Self { stream: Box::pin(futures::stream::once(async move { Ok(bytes) })), length }
    }
}

impl From<Vec<u8>> for PutBody {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

/// Options for a put.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Content type stored with the object.
    pub content_type: Option<String>,
    /// Fail with [`StorageError::AlreadyExists`] instead of overwriting.
    pub if_none_match: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects in key order.
    pub objects: Vec<ObjectMeta>,
    /// Pass back to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A part the store holds for a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1-based part number.
    pub part_number: u32,
    /// The part's ETag, quoted.
    pub etag: String,
    /// The part's size in bytes.
    pub size: u64,
}

/// A part named in a completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The ETag the store returned for the part.
    pub etag: String,
}

/// What a presigned request must carry.
#[derive(Debug, Clone)]
pub enum PresignOp {
    /// A single PUT of the whole object.
    Put {
        /// Bound Content-Type.
        content_type: String,
        /// Bound Content-Length.
        content_length: u64,
        /// Bound `If-None-Match: *`.
        if_none_match: bool,
    },
    /// One part of a multipart upload.
    UploadPart {
        /// The upload id from [`ObjectStore::create_multipart`].
        upload_id: String,
        /// 1-based part number.
        part_number: u32,
        /// Bound Content-Length.
        content_length: u64,
    },
}

/// A URL a client can use without credentials, and the headers it must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    /// HTTP method (always PUT here).
    pub method: String,
    /// The signed URL.
    pub url: String,
    /// Headers the client must send exactly (they are part of the signature).
    pub headers: Vec<(String, String)>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

/// Context a presign needs from the request: the service's own public base URL
/// (the filesystem backend's URLs point back at the service).
#[derive(Debug, Clone)]
pub struct PresignContext {
    /// `https://media.example.com`, without a trailing slash.
    pub base_url: String,
    /// How long the URL stays valid.
    pub expires_in: Duration,
}

/// Where a reader outside the process (ffmpeg) can read an object: the file
/// itself on the filesystem backend, a short-lived presigned GET on S3. Never
/// the service's credentials.
#[derive(Clone)]
pub enum ReadSource {
    /// A local file.
    File(std::path::PathBuf),
    /// A presigned GET URL (a credential until it expires: never logged).
    Url(String),
}

impl fmt::Debug for ReadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Url(_) => f.write_str("Url(<presigned>)"),
        }
    }
}

/// The storage contract every backend fulfils.
///
/// Every operation is implemented by both backends; a conformance suite in
/// `tests/api/storage.rs` runs against each.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and metrics (`fs`, `s3`).
    fn name(&self) -> &'static str;

    /// Streams an object, or the given byte range of it.
    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> Result<GetObject>;

    /// The object's metadata.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta>;

    /// Stores an object atomically: readers see the old object or the new one.
    async fn put(&self, key: &ObjectKey, body: PutBody, opts: PutOptions) -> Result<ObjectMeta>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// One page of the objects whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &KeyPrefix, cursor: Option<String>, max: usize) -> Result<ListPage>;

    /// Starts a multipart upload and returns its id. The object it completes
    /// records the id's [`upload_tag`] ([`ObjectMeta::completed_by`]).
    async fn create_multipart(&self, key: &ObjectKey, content_type: &str) -> Result<String>;

    /// Stores one part of a multipart upload and returns its ETag (quoted).
    async fn upload_part(&self, key: &ObjectKey, upload_id: &str, part_number: u32, body: PutBody) -> Result<String>;

    /// The parts stored so far, in part number order, each number once (the
    /// latest upload of a part wins, as it does at completion).
    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>>;

    /// Assembles the parts into the object. Never replaces an object already
    /// stored at `key`: that is [`StorageError::AlreadyExists`], and the
    /// upload is left for the caller to abort. Whether two completes racing
    /// to one key are serialised depends on the store (see
    /// `docs/uploads-integrity.md`); the service guards them itself.
    async fn complete_multipart(&self, key: &ObjectKey, upload_id: &str, parts: &[CompletedPart]) -> Result<()>;

    /// Abandons a multipart upload; its parts are gone afterwards.
    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()>;

    /// A URL that lets a client perform `op` on `key` without credentials.
    async fn presign(&self, key: &ObjectKey, op: &PresignOp, ctx: &PresignContext) -> Result<PresignedRequest>;

    /// Checks that the store answers (for `/ready`).
    async fn check(&self) -> Result<()>;

    /// How a process on this machine reads `key` for the next `valid_for`.
    async fn read_source(&self, key: &ObjectKey, valid_for: Duration) -> Result<ReadSource>;
}

/// Lists every object under `prefix`, following pages.
pub async fn list_all(store: &dyn ObjectStore, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list(prefix, cursor, 1000).await?;
        out.extend(page.objects);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        assert_eq!(ByteRange::Bounded { start: 0, end: 9 }.resolve(100), Some((0, 9)));
        assert_eq!(ByteRange::Bounded { start: 90, end: 200 }.resolve(100), Some((90, 99)));
        assert_eq!(ByteRange::Bounded { start: 100, end: 200 }.resolve(100), None);
        assert_eq!(ByteRange::From(99).resolve(100), Some((99, 99)));
        assert_eq!(ByteRange::From(100).resolve(100), None);
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some((90, 99)));
        assert_eq!(ByteRange::Suffix(1000).resolve(100), Some((0, 99)));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
        assert_eq!(ByteRange::Suffix(5).resolve(0), None);
        assert_eq!(ByteRange::Bounded { start: 0, end: u64::MAX }.resolve(100), Some((0, 99)));
        assert_eq!(ByteRange::Bounded { start: 5, end: u64::MAX }.to_header(), "bytes=5-");
        assert_eq!(ByteRange::Bounded { start: 5, end: 9 }.to_header(), "bytes=5-9");
    }

    #[test]
    fn upload_tags() {
        let tag = "0123456789abcdef0123456789abcdef";
        assert_eq!(split_upload_id(&format!("{tag}.store_id.x")), (Some(tag), "store_id.x"));
        assert_eq!(upload_tag(&format!("{tag}.u")), tag);
        // The filesystem backend's ids, and ids of another shape, are their own tag.
        assert_eq!(split_upload_id(tag), (None, tag));
        assert_eq!(split_upload_id(&format!("{tag}.")), (None, &*format!("{tag}.")));
        assert_eq!(upload_tag("0123456789ABCDEF0123456789ABCDEF.u"), "0123456789ABCDEF0123456789ABCDEF.u");
        assert_eq!(upload_tag("short.u"), "short.u");
        assert_eq!(upload_tag("é"), "é");
    }
}
