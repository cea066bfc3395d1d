//! Direct uploads: presigning against a profile's policy, multipart batches,
//! resume, completion with verification ([`complete`]), abort.
//!
//! The store enforces the policy: single PUT URLs bind Content-Type,
//! Content-Length and `If-None-Match: *`; multipart part URLs bind each part's
//! exact length, so the total is bound too. After a multipart completion the
//! object is verified (size, magic bytes and, for images, the header, from a
//! ranged read) and deleted if it fails. Completes racing to one key are
//! serialised by [`claim`]s.

pub mod claim;
pub mod complete;
pub mod token;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::assets::{AssetError, AssetKey};
use crate::config::profiles::MAX_SINGLE_PUT;
use crate::config::{Profile, Profiles};
use crate::shutdown::Lifecycle;
use crate::storage::keys::{Extension, KeyError};
use crate::storage::{DynStore, ObjectKey, PartInfo, PresignContext, PresignOp, PresignedRequest, StorageError};
pub use token::{TokenError, TokenSigner, UploadClaims};

/// What went wrong in an upload call. Mapped to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A required field is missing (or, for sizes, not positive).
    #[error("missing required field '{0}'")]
    MissingField(&'static str),
    /// No profile of that name.
    #[error("unknown profile '{name}' (profiles: {known})")]
    UnknownProfile {
        /// As asked for.
        name: String,
        /// The profiles that exist, comma-separated.
        known: String,
    },
    /// The declared kind is not the profile's.
    #[error("kind '{kind}' does not match profile '{profile}' (kind '{expected}')")]
    KindMismatch {
        /// As declared.
        kind: String,
        /// The profile.
        profile: String,
        /// The profile's kind.
        expected: &'static str,
    },
    /// MIME type not allowed by the profile.
    #[error("mime type '{mime}' is not allowed for profile '{profile}' (allowed: {allowed})")]
    MimeNotAllowed {
        /// The declared type.
        mime: String,
        /// The profile.
        profile: String,
        /// The allowed types, comma-separated.
        allowed: String,
    },
    /// Declared size over the profile's limit.
    #[error("size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// `multipart: off` for more than S3's largest single PUT.
    #[error("multipart 'off' cannot upload {0} bytes: a single PUT is limited to 5 GiB")]
    SinglePutTooLarge(u64),
    /// With `{ext}` in the template, the extension must be the type's.
    #[error("ext '{ext}' does not match {mime} (expected one of: {expected})")]
    ExtensionMismatch {
        /// As sent.
        ext: String,
        /// The type.
        mime: String,
        /// The type's extensions.
        expected: String,
    },
    /// The token names another upload.
    #[error("the upload token belongs to another upload")]
    TokenForAnotherUpload,
    /// The token's profile is no longer configured.
    #[error("profile '{0}' no longer exists")]
    ProfileGone(String),
    /// With the API key alone, no profile stores objects under the key.
    #[error("no profile stores objects at '{0}'")]
    NoProfileForKey(String),
    /// Unknown, completed or aborted upload.
    #[error("unknown, completed or aborted upload id")]
    InvalidUploadId,
    /// Part range outside the upload.
    #[error("start_part {start} is outside 1..={total}")]
    InvalidPartRange {
        /// Asked for.
        start: i64,
        /// Parts in the upload.
        total: u32,
    },
    /// A part count below 1.
    #[error("count must be at least 1, got {0}")]
    BadCount(i64),
    /// Too many part URLs asked for at once.
    #[error("count {count} exceeds max_batch_size {max}")]
    BatchSizeExceeded {
        /// Asked for.
        count: u32,
        /// The profile's limit.
        max: u32,
    },
    /// A complete with no parts.
    #[error("'parts' must list at least one part")]
    NoParts,
    /// The store refused the part list.
    #[error("invalid parts: {0}")]
    InvalidParts(String),
    /// Another upload's object holds the key (nothing is overwritten); this
    /// upload's parts are discarded.
    #[error("another upload's object is stored at '{0}'; this upload was discarded")]
    Conflict(String),
    /// The completed object failed verification and was deleted.
    #[error("{0}")]
    VerificationFailed(complete::Rejection),
    /// A key rule was broken.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The asset's keys cannot be made.
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The store failed.
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for UploadError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NoSuchUpload => Self::InvalidUploadId,
            StorageError::InvalidKey(k) => Self::Key(k),
            other => Self::Storage(other),
        }
    }
}

type Result<T> = std::result::Result<T, UploadError>;

/// Whether an upload is multipart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MultipartMode {
    /// Multipart above the profile's threshold.
    #[default]
    Auto,
    /// Always multipart.
    Force,
    /// Never multipart (up to 5 GiB).
    Off,
}

/// A presign request as the client sent it. Required fields are options so
/// their absence gets a clear `BadRequest` in the order SPEC §3 gives.
#[derive(Debug, Clone, Default)]
pub struct PresignInput {
    /// The client's id.
    pub key_base: Option<String>,
    /// Extension (derived from `mime` when absent).
    pub ext: Option<String>,
    /// MIME type of the upload.
    pub mime: Option<String>,
    /// Exact size in bytes.
    pub size_bytes: Option<i64>,
    /// `image` or `video`; must match the profile when given.
    pub kind: Option<String>,
    /// Profile name (default `default`).
    pub profile: Option<String>,
    /// Single or multipart.
    pub multipart: MultipartMode,
    /// A custom shard (profiles with sharding only).
    pub shard: Option<String>,
}

/// A request for more part URLs.
#[derive(Debug, Clone, Default)]
pub struct PartsInput {
    /// Object key (checked against the token when given).
    pub object_key: Option<String>,
    /// Upload id.
    pub upload_id: Option<String>,
    /// First part wanted (default 1).
    pub start_part: Option<i64>,
    /// How many (default the profile's initial_batch_size).
    pub count: Option<i64>,
}

/// Where a batch of part URLs stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Parts in this batch.
    pub parts_in_batch: u32,
    /// The part to ask for next.
    pub next_part_number: u32,
    /// Whether parts remain after this batch.
    pub has_more_parts: bool,
}

/// Part URLs: each part's number and its presigned PUT.
#[derive(Debug, Clone)]
pub struct PartBatch {
    /// The parts, in order.
    pub parts: Vec<(u32, PresignedRequest)>,
    /// Where the batch stands.
    pub batch: Batch,
}

/// A multipart upload, started.
#[derive(Debug, Clone)]
pub struct MultipartPlan {
    /// The upload id.
    pub upload_id: String,
    /// The signed token later calls present.
    pub token: String,
    /// Bytes per part (the last part carries the remainder).
    pub part_size: u64,
    /// Number of parts.
    pub total_parts: u32,
    /// The first batch of part URLs.
    pub first: PartBatch,
    /// When the token (and the complete and abort URLs) expire.
    pub expires_at: SystemTime,
}

/// How the client uploads.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One PUT.
    Single(PresignedRequest),
    /// Parts, then a complete.
    Multipart(MultipartPlan),
}

/// A presign's answer.
#[derive(Debug, Clone)]
pub struct Presigned {
    /// Where the object will be stored.
    pub object_key: ObjectKey,
    /// How to upload it.
    pub plan: Plan,
}

/// How a call on an existing upload was authorised.
#[derive(Debug, Clone)]
pub enum UploadAuth {
    /// The API key (or an open service): the profile comes from the key's prefix.
    ApiKey,
    /// The upload's own token.
    Token(UploadClaims),
}

/// RFC 3339 at second precision (`2024-01-01T12:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = crate::storage::signing::unix(t) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A validated presign request.
#[derive(Debug)]
struct Checked {
    profile: Arc<Profile>,
    key: ObjectKey,
    mime: String,
    size: u64,
    multipart: bool,
}

/// Applies the checks of SPEC §3 in their order (the API key was checked by
/// the router, the JSON shape by the extractor).
fn check(profiles: &Profiles, req: &PresignInput) -> Result<Checked> {
    let missing = |f: &'static str| UploadError::MissingField(f);
    let key_base = req.key_base.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| missing("key_base"))?;
    let mime = req.mime.as_deref().map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| missing("mime"))?;
    let size = match req.size_bytes {
        Some(s) if s > 0 => s as u64,
        _ => return Err(missing("size_bytes")),
    };
    let profile_name = req.profile.as_deref().filter(|p| !p.is_empty()).unwrap_or("default");
    let profile = profiles
        .get(profile_name)
        .ok_or_else(|| UploadError::UnknownProfile { name: profile_name.to_owned(), known: profiles.names() })?
        .clone();
    if let Some(kind) = req.kind.as_deref().filter(|k| !k.is_empty())
        && kind != profile.kind().as_str()
    {
        return Err(UploadError::KindMismatch {
            kind: kind.to_owned(),
            profile: profile.name.clone(),
            expected: profile.kind().as_str(),
        });
    }
    // Declared aliases (`image/jpg`) resolve to their canonical type, which is
    // what the URL binds: the store then sees one spelling per type.
    let media = crate::media_type::resolve(mime).filter(|_| profile.allows_mime(mime)).ok_or_else(|| {
        UploadError::MimeNotAllowed {
            mime: mime.to_ascii_lowercase(),
            profile: profile.name.clone(),
            allowed: profile.allowed_mimes.join(", "),
        }
    })?;
    let mime = media.mime.to_owned();
    if size > profile.size_max_bytes {
        return Err(UploadError::TooLarge { size, max: profile.size_max_bytes });
    }
    let mode = req.multipart;
    if mode == MultipartMode::Off && size > MAX_SINGLE_PUT {
        return Err(UploadError::SinglePutTooLarge(size));
    }
    let multipart = match mode {
        MultipartMode::Force => true,
        MultipartMode::Off => false,
        MultipartMode::Auto => size > profile.multipart_threshold || size > MAX_SINGLE_PUT,
    };
    let ext = match req.ext.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Extension::parse(e)?,
        None => Extension::parse(media.extension()).expect("table extensions are valid"),
    };
    // The extension becomes part of the key and of every URL of the asset:
    // `kb.html` must not hold a JPEG.
    if profile.storage_path.uses_ext() && !media.has_extension(ext.as_str()) {
        return Err(UploadError::ExtensionMismatch {
            ext: ext.as_str().to_owned(),
            mime,
            expected: media.extensions.join(", "),
        });
    }
    let asset = AssetKey::for_upload(profile.clone(), key_base, ext, req.shard.as_deref())?;
    let key = asset.original_key()?;
    Ok(Checked { profile, key, mime, size, multipart })
}

/// The upload service: presigns against the profiles, hands out part URLs,
/// lists, aborts and completes uploads ([`complete`]).
#[derive(Debug)]
pub struct Uploads {
    store: DynStore,
    profiles: Arc<Profiles>,
    tokens: TokenSigner,
    completions: complete::Completions,
    lifecycle: Lifecycle,
    /// MAX_SOURCE_PIXELS: an image over it fails verification.
    max_pixels: u64,
}

impl Uploads {
    /// The service over `store`: tokens signed with `signing_secret`,
    /// completes tracked by `lifecycle` (shutdown waits for them).
    pub fn new(
        store: DynStore,
        profiles: Arc<Profiles>,
        signing_secret: &[u8],
        lifecycle: Lifecycle,
        max_pixels: u64,
    ) -> Self {
        let completions = complete::Completions::new(store.clone());
        Self { store, profiles, tokens: TokenSigner::new(signing_secret), completions, lifecycle, max_pixels }
    }

    /// Checks an upload token (signature and expiry).
    pub fn verify_token(&self, token: &str) -> std::result::Result<UploadClaims, TokenError> {
        self.tokens.verify(token, SystemTime::now())
    }

    /// `POST /v1/uploads/presign`. `base_url` is the service's own public URL
    /// (the filesystem backend's upload URLs point at it).
    pub async fn presign(&self, req: &PresignInput, base_url: &str) -> Result<Presigned> {
        let c = check(&self.profiles, req)?;
        let ctx = PresignContext { base_url: base_url.to_owned(), expires_in: c.profile.token_ttl };
        let mode = if c.multipart { "multipart" } else { "single" };
        metrics::counter!("mediaflow_uploads_presigned_total", "profile" => c.profile.name.clone(), "mode" => mode)
            .increment(1);
        if !c.multipart {
            let op = PresignOp::Put { content_type: c.mime.clone(), content_length: c.size, if_none_match: true };
            let signed = self.store.presign(&c.key, &op, &ctx).await?;
            return Ok(Presigned { object_key: c.key, plan: Plan::Single(signed) });
        }
        let upload_id = self.store.create_multipart(&c.key, &c.mime).await?;
        let expires_at = SystemTime::now() + c.profile.token_ttl;
        let claims = UploadClaims {
            object_key: c.key.to_string(),
            upload_id: upload_id.clone(),
            profile: c.profile.name.clone(),
            mime: c.mime.clone(),
            size: c.size,
            part_size: c.profile.part_size,
            expires: crate::storage::signing::unix(expires_at),
        };
        let token = self.tokens.issue(&claims);
        let count = c.profile.initial_batch_size.min(claims.total_parts());
        let first = self.part_batch(&c.key, &claims, 1, count, &ctx).await?;
        Ok(Presigned {
            object_key: c.key,
            plan: Plan::Multipart(MultipartPlan {
                upload_id,
                token,
                part_size: claims.part_size,
                total_parts: claims.total_parts(),
                first,
                expires_at,
            }),
        })
    }

    async fn part_batch(
        &self,
        key: &ObjectKey,
        claims: &UploadClaims,
        start: u32,
        count: u32,
        ctx: &PresignContext,
    ) -> Result<PartBatch> {
        let total = claims.total_parts();
        let end = start.saturating_add(count).min(total + 1);
        let mut parts = Vec::with_capacity((end - start) as usize);
        for n in start..end {
            let op = PresignOp::UploadPart {
                upload_id: claims.upload_id.clone(),
                part_number: n,
                content_length: claims.part_length(n),
            };
            parts.push((n, self.store.presign(key, &op, ctx).await?));
        }
        let batch = Batch { parts_in_batch: end - start, next_part_number: end, has_more_parts: end <= total };
        Ok(PartBatch { parts, batch })
    }

    /// `POST /v1/uploads/presign/parts`: the next batch of part URLs.
    pub async fn presign_parts(&self, req: &PartsInput, claims: &UploadClaims, base_url: &str) -> Result<PartBatch> {
        let upload_id = req.upload_id.as_deref().ok_or(UploadError::MissingField("upload_id"))?;
        if upload_id != claims.upload_id || req.object_key.as_deref().is_some_and(|k| k != claims.object_key) {
            return Err(UploadError::TokenForAnotherUpload);
        }
        let profile =
            self.profiles.get(&claims.profile).ok_or_else(|| UploadError::ProfileGone(claims.profile.clone()))?;
        let total = claims.total_parts();
        let start = req.start_part.unwrap_or(1);
        if start < 1 || start > i64::from(total) {
            return Err(UploadError::InvalidPartRange { start, total });
        }
        let count = req.count.unwrap_or(i64::from(profile.initial_batch_size));
        if count < 1 {
            return Err(UploadError::BadCount(count));
        }
        if count > i64::from(profile.max_batch_size) {
            return Err(UploadError::BatchSizeExceeded {
                count: count.min(u32::MAX as i64) as u32,
                max: profile.max_batch_size,
            });
        }
        let key = ObjectKey::parse(claims.object_key.clone())?;
        // The upload must still exist: URLs for an aborted upload would only fail later.
        self.store.list_parts(&key, &claims.upload_id).await?;
        let left = Duration::from_secs(claims.expires.saturating_sub(crate::storage::signing::unix(SystemTime::now())));
        let ctx = PresignContext { base_url: base_url.to_owned(), expires_in: left.max(Duration::from_secs(1)) };
        self.part_batch(&key, claims, start as u32, count as u32, &ctx).await
    }

    /// `GET /v1/uploads/{key}/parts/{id}`: the parts already stored.
    pub async fn stored_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        Ok(self.store.list_parts(key, upload_id).await?)
    }

    /// `DELETE /v1/uploads/{key}/abort/{id}`.
    pub async fn abort(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        // Some stores answer 2xx to aborting an unknown or finished upload; the
        // API promises invalid_upload_id for those.
        self.store.list_parts(key, upload_id).await?;
        self.store.abort_multipart(key, upload_id).await?;
        metrics::counter!("mediaflow_uploads_aborted_total").increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: i64) -> PresignInput {
        PresignInput {
            key_base: Some("k1".into()),
            mime: Some("image/jpeg".into()),
            size_bytes: Some(size),
            kind: Some("image".into()),
            profile: Some("avatar".into()),
            ..Default::default()
        }
    }

    fn err(r: PresignInput) -> String {
        match check(&Profiles::example(), &r) {
            Err(e) => format!("{e:?}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        assert!(err(PresignInput { size_bytes: Some(0), ..req(1) }).starts_with("MissingField"));
        assert!(err(PresignInput { key_base: None, ..req(1) }).starts_with("MissingField"));
        // Unknown profile before kind, mime and size.
        let r = PresignInput { profile: Some("nope".into()), mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).starts_with("UnknownProfile"));
        let r = PresignInput { kind: Some("video".into()), mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).starts_with("KindMismatch"));
        let r = PresignInput { mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).starts_with("MimeNotAllowed"));
        assert!(err(req(5_242_881)).starts_with("TooLarge"));
        assert_eq!(err(req(5_242_880)), "ok");
    }

    #[test]
    fn multipart_modes() {
        let p = Profiles::example();
        let video = |size: i64, mode| PresignInput {
            profile: Some("video".into()),
            kind: Some("video".into()),
            mime: Some("video/mp4".into()),
            multipart: mode,
            ..req(size)
        };
        assert!(!check(&p, &video(1000, MultipartMode::Auto)).unwrap().multipart);
        assert!(check(&p, &video(1000, MultipartMode::Force)).unwrap().multipart);
        assert!(check(&p, &video(65 * 1024 * 1024, MultipartMode::Auto)).unwrap().multipart);
        assert!(!check(&p, &video(65 * 1024 * 1024, MultipartMode::Off)).unwrap().multipart);
        // The profile's own limit is checked before the single-PUT limit.
        let e = check(&p, &video(5 * 1024 * 1024 * 1024 + 1, MultipartMode::Off)).unwrap_err();
        assert!(matches!(e, UploadError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn keys_use_the_profile_template() {
        let c = check(&Profiles::example(), &req(10)).unwrap();
        assert_eq!(c.key.as_str(), "originals/avatars/a2/k1");
        let r = PresignInput { shard: Some("tenant".into()), ..req(10) };
        assert_eq!(check(&Profiles::example(), &r).unwrap().key.as_str(), "originals/avatars/tenant/k1");
        let r = PresignInput { shard: Some("BAD".into()), ..req(10) };
        assert!(matches!(check(&Profiles::example(), &r), Err(UploadError::Asset(AssetError::Key(_)))));
        let r = PresignInput { key_base: Some("../x".into()), ..req(10) };
        assert!(matches!(check(&Profiles::example(), &r), Err(UploadError::Asset(AssetError::Key(_)))));
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_110_400_500);
        assert_eq!(rfc3339(t), "2024-01-01T12:00:00Z");
    }
}
