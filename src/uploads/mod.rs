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
pub mod sniff;
pub mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::profiles::MAX_SINGLE_PUT;
use crate::config::{Profile, Profiles};
use crate::state::AppState;
use crate::storage::keys::{Extension, KeyBase, KeyError};
use crate::storage::{ObjectKey, PartInfo, PresignContext, PresignOp, PresignedRequest, StorageError};
pub use token::{TokenError, TokenSigner, UploadClaims};

/// What went wrong in an upload call. Mapped to HTTP in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Malformed or incomplete request.
    #[error("{0}")]
    BadRequest(String),
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
    /// Declared size over the profile's limit (or S3's single-PUT limit).
    #[error("size {size} exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The token does not belong to this upload.
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown, completed or aborted upload.
    #[error("unknown, completed or aborted upload id")]
    InvalidUploadId,
    /// Part range outside the upload.
    #[error("{0}")]
    InvalidPartRange(String),
    /// Too many part URLs asked for at once.
    #[error("count {count} exceeds max_batch_size {max}")]
    BatchSizeExceeded {
        /// Asked for.
        count: u32,
        /// The profile's limit.
        max: u32,
    },
    /// Another upload's object holds the key (nothing is overwritten); this
    /// upload's parts are discarded.
    #[error("another upload's object is stored at '{0}'; this upload was discarded")]
    Conflict(String),
    /// The completed object failed verification and was deleted.
    #[error("{0}")]
    VerificationFailed(String),
    /// A key rule was broken.
    #[error(transparent)]
    Key(#[from] KeyError),
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

/// `multipart` in a presign request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MultipartMode {
    /// Multipart above the profile's threshold.
    #[default]
    Auto,
    /// Always multipart.
    Force,
    /// Never multipart (up to 5 GiB).
    Off,
}

/// `POST /v1/uploads/presign` body (the seed's shape). Required fields are
/// options so their absence gets a clear `bad_request`, not a parser message.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct PresignRequest {
    /// The client's id.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,200}$", example = "user42")]
    pub key_base: Option<String>,
    /// Extension (derived from `mime` when absent).
    #[schema(pattern = "^[A-Za-z0-9]{1,16}$", example = "jpg")]
    pub ext: Option<String>,
    /// MIME type of the upload.
    #[schema(example = "image/jpeg")]
    pub mime: Option<String>,
    /// Exact size in bytes.
    #[schema(minimum = 1, example = 48213)]
    pub size_bytes: Option<i64>,
    /// `image` or `video`; must match the profile when given.
    #[schema(example = "image")]
    pub kind: Option<String>,
    /// Profile name (default `default`).
    #[schema(example = "photo")]
    pub profile: Option<String>,
    /// `auto` (default), `force` or `off`.
    pub multipart: Option<MultipartMode>,
    /// A custom shard (profiles with sharding only).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub shard: Option<String>,
}

/// A URL to call with its method, headers and expiry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SignedAction {
    /// HTTP method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers to send exactly.
    pub headers: BTreeMap<String, String>,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// One part's URL.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PartUrl {
    /// 1-based part number.
    pub part_number: u32,
    /// HTTP method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers to send exactly (`Content-Length`).
    pub headers: BTreeMap<String, String>,
    /// RFC 3339 expiry.
    pub expires_at: String,
}

/// Where a batch of part URLs stands.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BatchInfo {
    /// Parts in this batch.
    pub parts_in_batch: u32,
    /// The part to ask for next.
    pub next_part_number: u32,
    /// Whether parts remain after this batch.
    pub has_more_parts: bool,
}

/// The multipart half of a presign answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MultipartUpload {
    /// The store's upload id.
    pub upload_id: String,
    /// The signed token later calls present.
    pub upload_token: String,
    /// Bytes per part (the last part carries the remainder).
    pub part_size: u64,
    /// Number of parts.
    pub total_parts: u32,
    /// The first batch of part URLs.
    pub parts: Vec<PartUrl>,
    /// Where the batch stands.
    pub batch_info: BatchInfo,
    /// How to complete.
    pub complete: SignedAction,
    /// How to abort.
    pub abort: SignedAction,
}

/// `upload` in a presign answer: one of the two.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UploadPlan {
    /// One PUT.
    Single(SignedAction),
    /// Parts.
    Multipart(MultipartUpload),
}

/// The presign answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PresignResponse {
    /// Where the object will be stored.
    pub object_key: String,
    /// How to upload it.
    pub upload: UploadPlan,
}

/// `POST /v1/uploads/presign/parts` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct PartsRequest {
    /// Object key (checked against the token when given).
    pub object_key: Option<String>,
    /// Upload id.
    pub upload_id: Option<String>,
    /// The token from the presign answer.
    pub upload_token: Option<String>,
    /// First part wanted (default 1).
    pub start_part: Option<i64>,
    /// How many (default the profile's initial_batch_size).
    pub count: Option<i64>,
}

/// A batch of part URLs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartsResponse {
    /// The part URLs.
    pub parts: Vec<PartUrl>,
    /// Where the batch stands.
    pub batch_info: BatchInfo,
}

/// A stored part, as the resume call lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StoredPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The part's ETag.
    pub etag: String,
    /// Its size.
    pub size: u64,
}

/// A part named in a completion request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct CompleteRequestPart {
    /// 1-based part number.
    pub part_number: u32,
    /// The ETag the store returned.
    pub etag: String,
}

/// `POST …/complete/{upload_id}` body.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct CompleteRequest {
    /// The parts, in order.
    #[serde(default)]
    pub parts: Vec<CompleteRequestPart>,
}

/// How a call on an existing upload was authorised.
#[derive(Debug, Clone)]
pub enum UploadAuth {
    /// The API key (or an open service): the profile comes from the key's prefix.
    ApiKey,
    /// The upload's own token.
    Token(UploadClaims),
}

/// The service's own base URL and the time, for building URLs.
#[derive(Debug, Clone)]
pub struct UrlContext {
    /// `https://media.example.com`.
    pub base_url: String,
}

/// RFC 3339 at second precision (`2024-01-01T12:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = crate::storage::signing::unix(t) as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The usual extension of a MIME type, for keys with `{ext}`.
pub fn extension_for_mime(mime: &str) -> Option<&'static str> {
    crate::media_type::resolve(mime).map(|t| t.extension())
}

fn signed_action(req: PresignedRequest) -> SignedAction {
    SignedAction {
        method: req.method,
        url: req.url,
        headers: req.headers.into_iter().collect(),
        expires_at: rfc3339(req.expires_at),
    }
}

fn part_url(part_number: u32, req: PresignedRequest) -> PartUrl {
    let a = signed_action(req);
    PartUrl { part_number, method: a.method, url: a.url, headers: a.headers, expires_at: a.expires_at }
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
fn check(profiles: &Profiles, req: &PresignRequest) -> Result<Checked> {
    let missing = |f: &str| UploadError::BadRequest(format!("missing required field '{f}'"));
    let key_base = req.key_base.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| missing("key_base"))?;
    let mime = req.mime.as_deref().map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| missing("mime"))?;
    let size = match req.size_bytes {
        Some(s) if s > 0 => s as u64,
        _ => return Err(UploadError::BadRequest("missing required field 'size_bytes' (a positive integer)".into())),
    };
    let profile_name = req.profile.as_deref().filter(|p| !p.is_empty()).unwrap_or("default");
    let profile = profiles
        .get(profile_name)
        .ok_or_else(|| {
            UploadError::BadRequest(format!("unknown profile '{profile_name}' (profiles: {})", profiles.names()))
        })?
        .clone();
    if let Some(kind) = req.kind.as_deref().filter(|k| !k.is_empty())
        && kind != profile.kind.as_str()
    {
        return Err(UploadError::BadRequest(format!(
            "kind '{kind}' does not match profile '{}' (kind '{}')",
            profile.name,
            profile.kind.as_str()
        )));
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
    let mode = req.multipart.unwrap_or_default();
    if mode == MultipartMode::Off && size > MAX_SINGLE_PUT {
        return Err(UploadError::BadRequest(format!(
            "multipart 'off' cannot upload {size} bytes: a single PUT is limited to 5 GiB"
        )));
    }
    let multipart = match mode {
        MultipartMode::Force => true,
        MultipartMode::Off => false,
        MultipartMode::Auto => size > profile.multipart_threshold || size > MAX_SINGLE_PUT,
    };
    let key_base = KeyBase::parse(key_base)?;
    let shard = profile.client_shard(req.shard.as_deref())?;
    let ext = match req.ext.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Extension::parse(e)?,
        None => Extension::parse(media.extension()).expect("table extensions are valid"),
    };
    // The extension becomes part of the key and of every URL of the asset:
    // `kb.html` must not hold a JPEG.
    if profile.storage_path.uses_ext() && !media.has_extension(ext.as_str()) {
        return Err(UploadError::BadRequest(format!(
            "ext '{}' does not match {mime} (expected one of: {})",
            ext.as_str(),
            media.extensions.join(", ")
        )));
    }
    let ext = Some(ext);
    let key = profile.storage_path.original(&key_base, ext.as_ref(), shard.as_ref())?;
    Ok(Checked { profile, key, mime, size, multipart })
}

impl AppState {
    fn token_signer(&self) -> TokenSigner {
        TokenSigner::new(self.config.signing_secret.expose().as_bytes())
    }

    /// `POST /v1/uploads/presign`.
    pub async fn presign(&self, req: &PresignRequest, urls: &UrlContext) -> Result<PresignResponse> {
        let c = check(&self.profiles, req)?;
        let ctx = PresignContext { base_url: urls.base_url.clone(), expires_in: c.profile.token_ttl };
        let mode = if c.multipart { "multipart" } else { "single" };
        metrics::counter!("mediaflow_uploads_presigned_total", "profile" => c.profile.name.clone(), "mode" => mode)
            .increment(1);
        if !c.multipart {
            let op = PresignOp::Put { content_type: c.mime.clone(), content_length: c.size, if_none_match: true };
            let signed = self.store.presign(&c.key, &op, &ctx).await?;
            return Ok(PresignResponse {
                object_key: c.key.to_string(),
                upload: UploadPlan::Single(signed_action(signed)),
            });
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
        let token = self.token_signer().issue(&claims);
        let count = c.profile.initial_batch_size.min(claims.total_parts());
        let (parts, batch_info) = self.part_batch(&c.key, &claims, 1, count, &ctx).await?;
        let action = |method: &str, action: &str, headers: BTreeMap<String, String>| SignedAction {
            method: method.to_owned(),
            url: format!(
                "{}/v1/uploads/{}/{action}/{}?token={}",
                urls.base_url,
                crate::storage::signing::encode_component(c.key.as_str()),
                crate::storage::signing::encode_component(&upload_id),
                token
            ),
            headers,
            expires_at: rfc3339(expires_at),
        };
        let json = BTreeMap::from([("Content-Type".to_owned(), "application/json".to_owned())]);
        Ok(PresignResponse {
            object_key: c.key.to_string(),
            upload: UploadPlan::Multipart(MultipartUpload {
                upload_id: upload_id.clone(),
                upload_token: token.clone(),
                part_size: claims.part_size,
                total_parts: claims.total_parts(),
                parts,
                batch_info,
                complete: action("POST", "complete", json),
                abort: action("DELETE", "abort", BTreeMap::new()),
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
    ) -> Result<(Vec<PartUrl>, BatchInfo)> {
        let total = claims.total_parts();
        let end = start.saturating_add(count).min(total + 1);
        let mut parts = Vec::with_capacity((end - start) as usize);
        for n in start..end {
            let op = PresignOp::UploadPart {
                upload_id: claims.upload_id.clone(),
                part_number: n,
                content_length: claims.part_length(n),
            };
            parts.push(part_url(n, self.store.presign(key, &op, ctx).await?));
        }
        let info = BatchInfo { parts_in_batch: end - start, next_part_number: end, has_more_parts: end <= total };
        Ok((parts, info))
    }

    /// `POST /v1/uploads/presign/parts`: the next batch of part URLs.
    pub async fn presign_parts(
        &self,
        req: &PartsRequest,
        claims: &UploadClaims,
        urls: &UrlContext,
    ) -> Result<PartsResponse> {
        let upload_id =
            req.upload_id.as_deref().ok_or_else(|| UploadError::BadRequest("missing 'upload_id'".into()))?;
        if upload_id != claims.upload_id || req.object_key.as_deref().is_some_and(|k| k != claims.object_key) {
            return Err(UploadError::Unauthorized("the upload token belongs to another upload".into()));
        }
        let profile = self
            .profiles
            .get(&claims.profile)
            .ok_or_else(|| UploadError::BadRequest(format!("profile '{}' no longer exists", claims.profile)))?;
        let total = claims.total_parts();
        let start = req.start_part.unwrap_or(1);
        if start < 1 || start > i64::from(total) {
            return Err(UploadError::InvalidPartRange(format!("start_part {start} is outside 1..={total}")));
        }
        let count = req.count.unwrap_or(i64::from(profile.initial_batch_size));
        if count < 1 {
            return Err(UploadError::BadRequest(format!("count must be at least 1, got {count}")));
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
        let ctx = PresignContext { base_url: urls.base_url.clone(), expires_in: left.max(Duration::from_secs(1)) };
        let (parts, batch_info) = self.part_batch(&key, claims, start as u32, count as u32, &ctx).await?;
        Ok(PartsResponse { parts, batch_info })
    }

    /// `GET /v1/uploads/{key}/parts/{id}`: the parts already stored.
    pub async fn stored_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<StoredPart>> {
        let parts = self.store.list_parts(key, upload_id).await?;
        Ok(parts
            .into_iter()
            .map(|PartInfo { part_number, etag, size }| StoredPart { part_number, etag, size })
            .collect())
    }

    /// `DELETE /v1/uploads/{key}/abort/{id}`.
    pub async fn abort_upload(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
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

    fn req(size: i64) -> PresignRequest {
        PresignRequest {
            key_base: Some("k1".into()),
            mime: Some("image/jpeg".into()),
            size_bytes: Some(size),
            kind: Some("image".into()),
            profile: Some("avatar".into()),
            ..Default::default()
        }
    }

    fn err(r: PresignRequest) -> String {
        match check(&Profiles::example(), &r) {
            Err(e) => format!("{e:?}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        assert!(err(PresignRequest { size_bytes: Some(0), ..req(1) }).starts_with("BadRequest"));
        assert!(err(PresignRequest { key_base: None, ..req(1) }).starts_with("BadRequest"));
        // Unknown profile before kind, mime and size.
        let r = PresignRequest { profile: Some("nope".into()), mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).contains("unknown profile"));
        let r = PresignRequest { kind: Some("video".into()), mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).contains("does not match"));
        let r = PresignRequest { mime: Some("text/html".into()), ..req(1 << 40) };
        assert!(err(r).starts_with("MimeNotAllowed"));
        assert!(err(req(5_242_881)).starts_with("TooLarge"));
        assert_eq!(err(req(5_242_880)), "ok");
    }

    #[test]
    fn multipart_modes() {
        let p = Profiles::example();
        let video = |size: i64, mode| PresignRequest {
            profile: Some("video".into()),
            kind: Some("video".into()),
            mime: Some("video/mp4".into()),
            multipart: Some(mode),
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
        let r = PresignRequest { shard: Some("tenant".into()), ..req(10) };
        assert_eq!(check(&Profiles::example(), &r).unwrap().key.as_str(), "originals/avatars/tenant/k1");
        let r = PresignRequest { shard: Some("BAD".into()), ..req(10) };
        assert!(matches!(check(&Profiles::example(), &r), Err(UploadError::Key(_))));
        let r = PresignRequest { key_base: Some("../x".into()), ..req(10) };
        assert!(matches!(check(&Profiles::example(), &r), Err(UploadError::Key(_))));
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_110_400_500);
        assert_eq!(rfc3339(t), "2024-01-01T12:00:00Z");
    }
}
