//! `POST …/complete/{upload_id}`: completing a multipart upload and verifying
//! the object (SPEC §3).
//!
//! What a complete guarantees, and how:
//! - It runs to its end once started: it is spawned on the lifecycle's task
//!   tracker and the request only awaits it, so a client that goes away (or a
//!   request timeout) does not drop it half-way, and shutdown waits for it.
//! - Completes of one upload run one at a time in a process
//!   ([`Completions`]); a retried complete sees the first one's result.
//! - Of several uploads racing to one key exactly one is stored: the key is
//!   claimed first ([`super::claim`]), an object already there is never
//!   replaced (the store's conditional complete), and a losing upload is
//!   aborted and answered 409 `conflict`.
//! - A retried complete of an upload the store no longer knows is judged by
//!   the object: the store records the upload with the object it completes,
//!   so "mine" is verified (again: the first attempt may have failed between
//!   completing and verifying) and answered 200, anything else is 409.
//! - Verification: the declared size, the profile's limit, the content's
//!   magic bytes; for images also the header (it must parse, and the pixel
//!   count must be within MAX_SOURCE_PIXELS). A failing object is deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::claim::Claims;
use super::{Result, UploadAuth, UploadError, Uploads};
use crate::config::{MediaKind, Profile};
use crate::image::ImageError;
use crate::storage::{ByteRange, CompletedPart, DynStore, ObjectKey, ObjectMeta, StorageError};

/// Why a completed object failed verification (and was deleted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Another size than the presign declared.
    #[error("the object has {actual} bytes, {declared} were declared")]
    SizeMismatch {
        /// Stored.
        actual: u64,
        /// Declared.
        declared: u64,
    },
    /// Over the profile's limit.
    #[error("the object has {actual} bytes, the profile allows {max}")]
    OverLimit {
        /// Stored.
        actual: u64,
        /// The profile's `size_max_bytes`.
        max: u64,
    },
    /// Nothing was stored.
    #[error("the object is empty")]
    Empty,
    /// A type the profile does not allow.
    #[error("the content is {found}, which profile '{profile}' does not allow")]
    TypeNotAllowed {
        /// What it sniffs as.
        found: &'static str,
        /// The profile.
        profile: String,
    },
    /// Not any type MediaFlow knows.
    #[error("the content is not any type profile '{profile}' allows ({allowed})")]
    Unrecognised {
        /// The profile.
        profile: String,
        /// Its types.
        allowed: String,
    },
    /// An image whose header does not parse.
    #[error("the content is {found}, but its header does not parse: {reason}")]
    UnreadableHeader {
        /// What it sniffs as.
        found: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// An image over the pixel limit.
    #[error("the image is {width}x{height} pixels, over the limit of {max} (MAX_SOURCE_PIXELS)")]
    TooManyPixels {
        /// Stored width.
        width: u32,
        /// Stored height.
        height: u32,
        /// The limit.
        max: u64,
    },
}

/// Bytes read to probe an image's header: its dimensions come before the
/// pixel data in every supported format, usually within the first kilobytes.
pub const PROBE_LEN: u64 = 256 * 1024;
/// Largest image read whole when its header lies beyond [`PROBE_LEN`] (large
/// EXIF or ICC segments before a JPEG's frame header, a TIFF whose directory
/// is at the end); a bigger one whose header is not in the window fails.
pub const FULL_PROBE_LIMIT: u64 = 32 * 1024 * 1024;

/// The completes running in this process, and the claims that serialise
/// completes across processes.
#[derive(Debug)]
pub struct Completions {
    claims: Claims,
    /// One lock per upload id being completed.
    running: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Completions {
    /// Completions over `store`.
    pub fn new(store: DynStore) -> Self {
        Self { claims: Claims::new(store), running: Mutex::default() }
    }

    /// Waits for other completes of `upload_id` in this process to finish.
    async fn serialise(&self, upload_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut running = self.running.lock().expect("not poisoned");
            running.retain(|_, lock| lock.strong_count() > 0);
            match running.get(upload_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    running.insert(upload_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// What a complete needs once the request is checked.
#[derive(Debug, Clone)]
struct Job {
    key: ObjectKey,
    upload_id: String,
    parts: Vec<CompletedPart>,
    profile: Arc<Profile>,
    /// The size the token declared (none with the API key alone).
    expected_size: Option<u64>,
}

impl Uploads {
    /// `POST /v1/uploads/{key}/complete/{id}`: completes, then verifies. The
    /// work runs detached from the caller, who only awaits its outcome.
    pub async fn complete(
        self: &Arc<Self>,
        key: &ObjectKey,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        auth: &UploadAuth,
    ) -> Result<()> {
        if parts.is_empty() {
            return Err(UploadError::NoParts);
        }
        let (profile, expected_size) = match auth {
            UploadAuth::Token(claims) => (self.profiles.get(&claims.profile).cloned(), Some(claims.size)),
            UploadAuth::ApiKey => (self.profiles.for_object_key(key.as_str()).cloned(), None),
        };
        let profile = profile.ok_or_else(|| UploadError::NoProfileForKey(key.to_string()))?;
        let job = Job { key: key.clone(), upload_id: upload_id.to_owned(), parts, profile, expected_size };
        let this = Arc::clone(self);
        match self.lifecycle.spawn(async move { this.run_complete(job).await }).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(UploadError::Storage(StorageError::Backend("the complete was cancelled".into()))),
        }
    }

    async fn run_complete(&self, job: Job) -> Result<()> {
        let _one_at_a_time = self.completions.serialise(&job.upload_id).await;
        match self.store.list_parts(&job.key, &job.upload_id).await {
            Ok(_) => {}
            Err(StorageError::NoSuchUpload) => return self.completed_before(&job).await,
            Err(e) => return Err(e.into()),
        }
        let claim = self.completions.claims.acquire(&job.key, &job.upload_id).await?;
        let outcome = self.complete_claimed(&job).await;
        self.completions.claims.release(claim).await;
        outcome
    }

    /// Completes `job` while holding the key's claim.
    async fn complete_claimed(&self, job: &Job) -> Result<()> {
        let (key, upload_id) = (&job.key, job.upload_id.as_str());
        match self.store.head(key).await {
            // Completed by an earlier attempt that stopped before cleaning up.
            Ok(meta) if meta.completed_by(upload_id) => {
                self.discard(key, upload_id).await;
                return self.verify_completed(job).await;
            }
            Ok(_) => return Err(self.lost(key, upload_id).await),
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        match self.store.complete_multipart(key, upload_id, &job.parts).await {
            Ok(()) => self.verify_completed(job).await,
            Err(StorageError::AlreadyExists) => Err(self.lost(key, upload_id).await),
            Err(StorageError::InvalidPart(m)) => Err(UploadError::InvalidParts(m)),
            // Completed meanwhile by a complete that did not wait for the claim.
            Err(StorageError::NoSuchUpload) => self.completed_before(job).await,
            // The store may or may not have completed it: a retry finds out
            // and verifies what it finds.
            Err(e) => Err(e.into()),
        }
    }

    /// A complete of an upload the store no longer knows: completed (by an
    /// earlier attempt whose answer was lost), aborted, or never there.
    async fn completed_before(&self, job: &Job) -> Result<()> {
        self.completions.claims.wait_for_upload(&job.key, &job.upload_id).await?;
        match self.store.head(&job.key).await {
            Ok(meta) if meta.completed_by(&job.upload_id) => self.verify_completed(job).await,
            Ok(_) => Err(UploadError::Conflict(job.key.to_string())),
            Err(StorageError::NotFound) => Err(UploadError::InvalidUploadId),
            Err(e) => Err(e.into()),
        }
    }

    /// The upload lost the key to another: its parts are discarded.
    async fn lost(&self, key: &ObjectKey, upload_id: &str) -> UploadError {
        self.discard(key, upload_id).await;
        metrics::counter!("mediaflow_uploads_conflicts_total").increment(1);
        UploadError::Conflict(key.to_string())
    }

    async fn discard(&self, key: &ObjectKey, upload_id: &str) {
        match self.store.abort_multipart(key, upload_id).await {
            Ok(()) | Err(StorageError::NoSuchUpload) => {}
            // The store's own expiry (or the fs sweeper) removes it later.
            Err(e) => tracing::warn!(key = %key, error = %e, "could not discard the parts of a losing upload"),
        }
    }

    /// Verifies the object `job` completed; deletes it when it fails.
    async fn verify_completed(&self, job: &Job) -> Result<()> {
        let key = &job.key;
        let meta = match self.store.head(key).await {
            Ok(meta) => meta,
            Err(StorageError::NotFound) => return Err(UploadError::InvalidUploadId),
            Err(e) => return Err(e.into()),
        };
        // A direct PUT racing the complete on a store whose conditional
        // writes are not atomic can end up holding the key: never say it won.
        if !meta.completed_by(&job.upload_id) {
            return Err(UploadError::Conflict(key.to_string()));
        }
        if let Some(reason) = self.verify(&meta, &job.profile, job.expected_size).await? {
            self.store.delete(key).await?;
            metrics::counter!("mediaflow_uploads_verification_failed_total", "profile" => job.profile.name.clone())
                .increment(1);
            tracing::warn!(key = %key, reason = %reason, "upload failed verification and was deleted");
            return Err(UploadError::VerificationFailed(reason));
        }
        metrics::counter!("mediaflow_uploads_completed_total", "profile" => job.profile.name.clone()).increment(1);
        Ok(())
    }

    /// Checks a completed object: `Some(reason)` when it must be deleted.
    async fn verify(&self, meta: &ObjectMeta, profile: &Profile, expected: Option<u64>) -> Result<Option<Rejection>> {
        if let Some(declared) = expected
            && meta.size != declared
        {
            return Ok(Some(Rejection::SizeMismatch { actual: meta.size, declared }));
        }
        if meta.size > profile.size_max_bytes {
            return Ok(Some(Rejection::OverLimit { actual: meta.size, max: profile.size_max_bytes }));
        }
        if meta.size == 0 {
            return Ok(Some(Rejection::Empty));
        }
        let window = if profile.kind() == MediaKind::Image { PROBE_LEN } else { crate::media_type::SNIFF_LEN };
        let head = self.read_head(&meta.key, window.min(meta.size)).await?;
        let found = match crate::media_type::sniff(&head) {
            Some(found) if profile.allows_mime(found.mime) => found.mime,
            Some(found) => {
                return Ok(Some(Rejection::TypeNotAllowed { found: found.mime, profile: profile.name.clone() }));
            }
            None => {
                return Ok(Some(Rejection::Unrecognised {
                    profile: profile.name.clone(),
                    allowed: profile.allowed_mimes.join(", "),
                }));
            }
        };
        if profile.kind() == MediaKind::Image && crate::image::sniff(&head).is_some() {
            return self.probe_image(meta, head, found).await;
        }
        Ok(None)
    }

    /// An image's header must parse and its pixel count be within the limit,
    /// or no thumbnail could ever be made of it.
    async fn probe_image(
        &self,
        meta: &ObjectMeta,
        head: bytes::Bytes,
        found: &'static str,
    ) -> Result<Option<Rejection>> {
        let mut probed = crate::image::probe(&head);
        if matches!(probed, Err(ImageError::Decode(_)))
            && meta.size > head.len() as u64
            && meta.size <= FULL_PROBE_LIMIT
        {
            let whole = self.read_head(&meta.key, meta.size).await?;
            probed = crate::image::probe(&whole);
        }
        let max = self.max_pixels;
        Ok(match probed {
            Ok(info) if u64::from(info.width) * u64::from(info.height) > max => {
                Some(Rejection::TooManyPixels { width: info.width, height: info.height, max })
            }
            Ok(_) => None,
            Err(e) => Some(Rejection::UnreadableHeader { found, reason: e.to_string() }),
        })
    }

    /// The first `len` bytes of an object (a ranged read, never more).
    async fn read_head(&self, key: &ObjectKey, len: u64) -> Result<bytes::Bytes> {
        let range = ByteRange::Bounded { start: 0, end: len - 1 };
        Ok(self.store.get(key, Some(range)).await?.collect(len).await?)
    }
}
