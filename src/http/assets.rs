//! `GET /v1/assets/{profile}/{key_base}`: what a page needs to lay out an
//! asset before loading it (size as displayed, a ThumbHash placeholder, a
//! video's duration and codecs, its proxies' state). Public, like the media
//! it describes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery, ShardQuery};
use crate::assets::AssetKey;
use crate::library::Description;
use crate::state::AppState;

/// The answer of `GET /v1/assets/…`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssetInfo {
    /// The profile.
    #[schema(example = "photo")]
    pub profile: String,
    /// The asset's id.
    #[schema(example = "sample3")]
    pub key_base: String,
    /// The original's key in the store.
    #[schema(example = "originals/photos/3c/sample3.jpg")]
    pub object_key: String,
    /// The original's type (stored, or sniffed from its first bytes).
    #[schema(example = "image/jpeg")]
    pub mime: String,
    /// The original's size.
    pub size_bytes: u64,
    /// The original's ETag (quoted).
    pub etag: String,
    /// When the original was stored (RFC 3339).
    pub last_modified: String,
    /// Width as displayed (EXIF orientation or video rotation applied);
    /// absent for a video when ffmpeg is not available.
    pub width: Option<u32>,
    /// Height as displayed.
    pub height: Option<u32>,
    /// ThumbHash of the image or the video's poster, base64.
    #[schema(example = "1QcSHQRnh493V4dIh4eXh1h4kJUI")]
    pub placeholder: Option<String>,
    /// Seconds (videos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// `h264`, `vp9`… (videos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_codec: Option<String>,
    /// `aac`, `opus`… (videos with sound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
    /// Frames per second (videos).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// Each proxy format's state, read live: `ready`, `pending` or `failed`
    /// (video profiles with proxies).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!({"mp4": "ready"}))]
    pub proxies: Option<BTreeMap<String, String>>,
}

impl AssetInfo {
    fn of(asset: &AssetKey, d: Description) -> Self {
        let video = d.facts.video.clone();
        let is_video = asset.profile().video().is_some();
        Self {
            profile: asset.profile().name.clone(),
            key_base: asset.key_base().to_string(),
            object_key: d.original.key.as_str().to_owned(),
            mime: d.mime,
            size_bytes: d.original.size,
            etag: d.original.etag,
            last_modified: crate::uploads::rfc3339(d.original.last_modified),
            width: d.facts.width,
            height: d.facts.height,
            placeholder: d.facts.placeholder,
            duration_s: video.as_ref().and_then(|v| v.duration_s),
            video_codec: video.as_ref().and_then(|v| v.video_codec.clone()),
            audio_codec: video.as_ref().and_then(|v| v.audio_codec.clone()),
            frame_rate: video.as_ref().and_then(|v| v.frame_rate),
            proxies: is_video
                .then(|| d.proxies.into_iter().map(|(f, state)| (f.name().to_owned(), state.to_owned())).collect()),
        }
    }
}

/// `GET /v1/assets/{profile}/{key_base}`: the asset's description.
#[utoipa::path(get, path = "/v1/assets/{profile}/{key_base}", tag = "media",
    params(
        ("profile" = String, Path, description = "Profile name", example = "photo"),
        ("key_base" = String, Path, description = "The asset's id", example = "sample3"),
        ShardQuery,
    ),
    responses(
        (status = 200, description = "The asset's description", body = AssetInfo),
        (status = 400, description = "Malformed id or shard", body = ErrorBody),
        (status = 404, description = "Unknown profile or no original", body = ErrorBody),
        (status = 415, description = "The original is not an image the service can read", body = ErrorBody),
        (status = 422, description = "The image is over a limit", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
        (status = 503, description = "Busy or timed out", body = ErrorBody),
    ))]
pub async fn get_asset(
    State(state): State<AppState>,
    ApiPath((profile, key_base)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ShardQuery>,
) -> ApiResult<Response> {
    let asset = AssetKey::resolve(&state.profiles, &profile, &key_base, q.shard.as_deref())?;
    let description = state.library.describe(&asset).await?;
    let mut response = Json(AssetInfo::of(&asset, description)).into_response();
    // `proxies` changes as jobs finish: a cache must ask again.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
