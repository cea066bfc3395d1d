//! `GET /v1/profiles`: each profile's public policy, so a client (Uppy's
//! `restrictions`, the CLI) can check a file before presigning and send the
//! right `kind`. Nothing secret and nothing about the storage layout.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::config::Profile;
use crate::state::AppState;

/// One profile's policy as a client sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfileInfo {
    /// `image` or `video`.
    #[schema(example = "image")]
    pub kind: &'static str,
    /// MIME types an upload may have (canonical names).
    pub allowed_mimes: Vec<String>,
    /// File extensions of those types, for file pickers (`accept=`).
    pub extensions: Vec<&'static str>,
    /// Largest upload, bytes.
    pub size_max_bytes: u64,
    /// Uploads larger than this are multipart (with `multipart: auto`), bytes.
    pub multipart_threshold_bytes: u64,
    /// Bytes per part of a multipart upload (the last part carries the rest).
    pub part_size_bytes: u64,
    /// Part URLs in a presign answer.
    pub initial_batch_size: u32,
    /// Most part URLs per `presign/parts` call.
    pub max_batch_size: u32,
    /// Seconds presigned URLs and upload tokens stay valid.
    pub token_ttl_seconds: u64,
    /// Whether a client may send its own `shard`.
    pub custom_shards: bool,
    /// Thumbnail sizes anyone may ask for: widths (`"256"`, `?width=256`)
    /// and boxes (`"256x256"`, `?width=256&height=256`).
    #[schema(example = json!(["128", "256", "256x256"]))]
    pub sizes: Vec<String>,
    /// The size of a thumbnail URL without `width`: a width or a box.
    pub default_size: Option<String>,
    /// Whether other widths up to `max_width` (and boxes up to `max_width` ×
    /// `max_height`) are allowed (signed, with THUMB_SIGNING_KEY).
    pub allow_any_width: bool,
    /// Widest thumbnail.
    pub max_width: u32,
    /// Tallest box, with `allow_any_width`.
    pub max_height: u32,
    /// The thumbnails' default format.
    #[schema(example = "webp")]
    pub format: String,
    /// The thumbnails' default quality.
    pub quality: u8,
    /// Web-playable proxy formats of videos (`/proxy`).
    pub proxy_formats: Vec<String>,
}

impl ProfileInfo {
    fn of(p: &Profile) -> Self {
        let extensions = p
            .allowed_mimes
            .iter()
            .filter_map(|m| crate::media_type::resolve(m))
            .flat_map(|t| t.extensions.iter().copied())
            .collect();
        Self {
            kind: p.kind().as_str(),
            allowed_mimes: p.allowed_mimes.clone(),
            extensions,
            size_max_bytes: p.size_max_bytes,
            multipart_threshold_bytes: p.multipart_threshold,
            part_size_bytes: p.part_size,
            initial_batch_size: p.initial_batch_size,
            max_batch_size: p.max_batch_size,
            token_ttl_seconds: p.token_ttl.as_secs(),
            custom_shards: p.enable_sharding && p.storage_path.uses_shard(),
            sizes: p.sizes.iter().map(ToString::to_string).collect(),
            default_size: p.default_size.map(|s| s.to_string()),
            allow_any_width: p.allow_any_width,
            max_width: p.max_width,
            max_height: p.max_height,
            format: p.convert_to.format.extension().to_owned(),
            quality: p.quality,
            proxy_formats: p
                .video()
                .map(|v| v.proxy_formats.iter().map(|f| f.name().to_owned()).collect())
                .unwrap_or_default(),
        }
    }
}

/// `GET /v1/profiles` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProfilesList {
    /// Profiles by name.
    pub profiles: BTreeMap<String, ProfileInfo>,
}

/// Every profile's public policy.
#[utoipa::path(get, path = "/v1/profiles", tag = "uploads",
    responses((status = 200, description = "Every profile's public policy", body = ProfilesList)))]
pub async fn list_profiles(State(state): State<AppState>) -> Json<ProfilesList> {
    let profiles = state.profiles.iter().map(|p| (p.name.clone(), ProfileInfo::of(p))).collect();
    Json(ProfilesList { profiles })
}
