//! `GET|HEAD /proxy/{type}/{image_id}?format=mp4|webm`: a web-playable copy
//! of a video, served as originals are when it is ready; until then (or after
//! its job failed) a 307 to the original, so a `<video src>` plays at once.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::originals::serve_object;
use crate::assets::AssetKey;
use crate::config::ProxyFormat;
use crate::state::AppState;
use crate::video::ProxyState;

/// Query of proxy URLs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProxyQuery {
    /// `mp4` or `webm` (default: the profile's first format).
    pub format: Option<String>,
    /// A custom shard the original was stored under.
    pub shard: Option<String>,
}

/// Serves a video's proxy, or redirects to the original while it is made.
#[utoipa::path(get, path = "/proxy/{profile}/{image_id}", tag = "media",
    params(
        ("profile" = String, Path, description = "A video profile with proxy_folder and formats", example = "video"),
        ("image_id" = String, Path, description = "key_base", example = "clip7"),
        ProxyQuery,
    ),
    responses(
        (status = 200, description = "The proxy, streamed", content((super::openapi::Binary = "video/mp4"), (super::openapi::Binary = "video/webm"))),
        (status = 206, description = "A byte range of it"),
        (status = 304, description = "Not modified"),
        (status = 307, description = "Not ready (X-Proxy-Status: pending) or failed (X-Proxy-Status: failed): the original"),
        (status = 400, description = "A format the profile does not make", body = ErrorBody),
        (status = 404, description = "Unknown profile, no proxies in this profile, or missing original", body = ErrorBody),
        (status = 501, description = "ffmpeg is not installed", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ))]
pub async fn get_proxy(
    State(state): State<AppState>,
    method: Method,
    ApiPath((profile, image_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ProxyQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let asset = AssetKey::resolve(&state.profiles, &profile, &image_id, q.shard.as_deref())?;
    let formats = asset.profile().video().map(|v| v.proxy_formats.clone()).unwrap_or_default();
    if formats.is_empty() {
        return Err(ApiError::NotFound(format!("profile '{profile}' makes no proxies")));
    }
    let format = match q.format.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        None => formats[0],
        Some(f) => ProxyFormat::from_name(f).filter(|f| formats.contains(f)).ok_or_else(|| {
            let made: Vec<&str> = formats.iter().map(|f| f.name()).collect();
            ApiError::bad_request(format!(
                "format '{f}' is not made for profile '{profile}' (made: {})",
                made.join(", ")
            ))
        })?,
    };
    match state.videos.proxy_state(&asset, format).await? {
        ProxyState::Ready(key) => {
            let name = format!("{}.{}", asset.key_base(), format.name());
            serve_object(&state, &asset, &key, &method, &headers, Some(name)).await
        }
        ProxyState::Pending => Ok(to_original(&profile, &asset, q.shard.as_deref(), "pending")),
        ProxyState::Failed => Ok(to_original(&profile, &asset, q.shard.as_deref(), "failed")),
    }
}

/// The 307 to the original, never cached: the proxy may be ready next time.
fn to_original(profile: &str, asset: &AssetKey, shard: Option<&str>, status: &'static str) -> Response {
    use crate::storage::signing::encode_component;
    let id = match asset.ext() {
        Some(ext) => format!("{}.{}", asset.key_base(), ext.as_str()),
        None => asset.key_base().to_string(),
    };
    let mut location = super::paths::ORIGINAL
        .replace("{profile}", &encode_component(profile))
        .replace("{image_id}", &encode_component(&id));
    if let Some(shard) = shard.filter(|s| !s.is_empty()) {
        location.push_str(&format!("?shard={}", encode_component(shard)));
    }
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-proxy-status", HeaderValue::from_static(status));
    response
}
