//! Wire types of the upload API: request and response bodies exactly as the
//! Go service sent them, with their OpenAPI schemas, and the conversions
//! from and to the domain's types ([`crate::uploads`]). URLs that point at
//! this service are built here, from the route paths in [`super::paths`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::paths;
use crate::storage::{PartInfo, PresignedRequest};
use crate::uploads::{Batch, MultipartMode, PartBatch, PartsInput, Plan, PresignInput, Presigned, rfc3339};

/// `multipart` in a presign request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WireMultipart {
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
    pub multipart: Option<WireMultipart>,
    /// A custom shard (profiles with sharding only).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub shard: Option<String>,
}

impl From<PresignRequest> for PresignInput {
    fn from(r: PresignRequest) -> Self {
        Self {
            key_base: r.key_base,
            ext: r.ext,
            mime: r.mime,
            size_bytes: r.size_bytes,
            kind: r.kind,
            profile: r.profile,
            multipart: match r.multipart.unwrap_or_default() {
                WireMultipart::Auto => MultipartMode::Auto,
                WireMultipart::Force => MultipartMode::Force,
                WireMultipart::Off => MultipartMode::Off,
            },
            shard: r.shard,
        }
    }
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

impl From<PresignedRequest> for SignedAction {
    fn from(req: PresignedRequest) -> Self {
        Self {
            method: req.method,
            url: req.url,
            headers: req.headers.into_iter().collect(),
            expires_at: rfc3339(req.expires_at),
        }
    }
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

impl PartUrl {
    fn new(part_number: u32, req: PresignedRequest) -> Self {
        let a = SignedAction::from(req);
        Self { part_number, method: a.method, url: a.url, headers: a.headers, expires_at: a.expires_at }
    }
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

impl From<Batch> for BatchInfo {
    fn from(b: Batch) -> Self {
        Self {
            parts_in_batch: b.parts_in_batch,
            next_part_number: b.next_part_number,
            has_more_parts: b.has_more_parts,
        }
    }
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

impl PresignResponse {
    /// The answer for a presign, its service URLs based at `base_url`.
    pub fn new(presigned: Presigned, base_url: &str) -> Self {
        let object_key = presigned.object_key.to_string();
        let upload = match presigned.plan {
            Plan::Single(put) => UploadPlan::Single(put.into()),
            Plan::Multipart(m) => {
                let action = |method: &str, action: &str, headers: BTreeMap<String, String>| SignedAction {
                    method: method.to_owned(),
                    url: paths::upload_action_url(base_url, &object_key, action, &m.upload_id, &m.token),
                    headers,
                    expires_at: rfc3339(m.expires_at),
                };
                let json = BTreeMap::from([("Content-Type".to_owned(), "application/json".to_owned())]);
                let first = PartsResponse::from(m.first.clone());
                UploadPlan::Multipart(MultipartUpload {
                    complete: action("POST", paths::COMPLETE, json),
                    abort: action("DELETE", paths::ABORT, BTreeMap::new()),
                    upload_id: m.upload_id,
                    upload_token: m.token,
                    part_size: m.part_size,
                    total_parts: m.total_parts,
                    parts: first.parts,
                    batch_info: first.batch_info,
                })
            }
        };
        Self { object_key, upload }
    }
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

impl From<&PartsRequest> for PartsInput {
    fn from(r: &PartsRequest) -> Self {
        Self {
            object_key: r.object_key.clone(),
            upload_id: r.upload_id.clone(),
            start_part: r.start_part,
            count: r.count,
        }
    }
}

/// A batch of part URLs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartsResponse {
    /// The part URLs.
    pub parts: Vec<PartUrl>,
    /// Where the batch stands.
    pub batch_info: BatchInfo,
}

impl From<PartBatch> for PartsResponse {
    fn from(b: PartBatch) -> Self {
        Self { parts: b.parts.into_iter().map(|(n, req)| PartUrl::new(n, req)).collect(), batch_info: b.batch.into() }
    }
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

impl From<PartInfo> for StoredPart {
    fn from(PartInfo { part_number, etag, size }: PartInfo) -> Self {
        Self { part_number, etag, size }
    }
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

impl CompleteRequest {
    /// The parts as the store takes them.
    pub fn into_parts(self) -> Vec<crate::storage::CompletedPart> {
        self.parts
            .into_iter()
            .map(|p| crate::storage::CompletedPart { part_number: p.part_number, etag: p.etag })
            .collect()
    }
}
