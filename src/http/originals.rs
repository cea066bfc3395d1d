//! `GET|HEAD /originals/{type}/{image_id}`: the stored original, streamed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery, ShardQuery};
use super::media::{Condition, MediaHeaders, choose_content_type, evaluate, is_specific_media_type, parse_range};
use crate::assets::AssetKey;
use crate::state::AppState;
use crate::storage::{ByteRange, ObjectKey, ObjectMeta};

/// Serves an original, with ranges and conditional requests.
#[utoipa::path(get, path = "/originals/{profile}/{image_id}", tag = "media",
    params(
        ("profile" = String, Path, description = "Profile name", example = "photo"),
        ("image_id" = String, Path, description = "key_base, optionally with an extension (`photo.jpg`)", example = "sample"),
        ShardQuery,
    ),
    responses(
        (status = 200, description = "The original, streamed", content(
            (super::openapi::Binary = "application/octet-stream"), (super::openapi::Binary = "image/*"), (super::openapi::Binary = "video/*"), (super::openapi::Binary = "audio/*"))),
        (status = 206, description = "A byte range of it", content(
            (super::openapi::Binary = "application/octet-stream"), (super::openapi::Binary = "image/*"), (super::openapi::Binary = "video/*"), (super::openapi::Binary = "audio/*"))),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Bad id or shard", body = ErrorBody),
        (status = 404, description = "Unknown profile or missing original", body = ErrorBody),
        (status = 416, description = "Range not satisfiable", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ))]
pub async fn get_original(
    State(state): State<AppState>,
    method: Method,
    ApiPath((profile, image_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ShardQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let asset = AssetKey::resolve(&state.profiles, &profile, &image_id, query.shard.as_deref())?;
    let store = &state.store;
    let key = asset.locate_original(&**store).await?;
    let range = headers.get(axum::http::header::RANGE).and_then(|v| v.to_str().ok()).and_then(parse_range);
    let conditional =
        [axum::http::header::IF_NONE_MATCH, axum::http::header::IF_MODIFIED_SINCE, axum::http::header::IF_RANGE]
            .iter()
            .any(|h| headers.contains_key(h));

    // HEAD and conditional requests look before they fetch, so a 304 or a HEAD
    // never opens the object's body.
    let mut honour_range = true;
    if method == Method::HEAD || conditional {
        let meta = store.head(&key).await.map_err(not_found_as("original"))?;
        let media = media_headers(&state, &asset, &key, &meta).await?;
        match evaluate(&headers, &meta.etag, meta.last_modified) {
            Condition::NotModified => return Ok(media.not_modified()),
            Condition::Proceed { honour_range: h } => honour_range = h,
        }
        if method == Method::HEAD {
            return Ok(media.respond(meta.size, None, None));
        }
    }
    let range = range.filter(|_| honour_range);
    let object = store.get(&key, range).await.map_err(not_found_as("original"))?;
    let media = media_headers(&state, &asset, &key, &object.meta).await?;
    Ok(media.respond(object.meta.size, object.range, Some(Body::from_stream(object.body))))
}

/// The headers of an original, sniffing the type when the stored one is unsafe.
async fn media_headers(
    state: &AppState,
    asset: &AssetKey,
    key: &ObjectKey,
    meta: &ObjectMeta,
) -> ApiResult<MediaHeaders> {
    let stored = meta.content_type.as_deref();
    let content_type = if stored.is_some_and(is_specific_media_type) || meta.size == 0 {
        choose_content_type(stored, None)
    } else {
        // No usable stored type (a file copied in by hand, a bad upload): look
        // at the first bytes instead of trusting or guessing.
        let head = state.store.get(key, Some(ByteRange::Bounded { start: 0, end: 63 })).await?.collect(64).await?;
        choose_content_type(stored, Some(&head))
    };
    let ext = match asset.ext() {
        Some(ext) => Some(ext.as_str().to_owned()),
        None => crate::media_type::resolve(&content_type).map(|t| t.extension().to_owned()),
    };
    let filename = Some(match ext {
        Some(ext) => format!("{}.{ext}", asset.key_base()),
        None => asset.key_base().to_string(),
    });
    Ok(MediaHeaders {
        filename,
        content_type,
        etag: meta.etag.clone(),
        last_modified: Some(meta.last_modified),
        max_age: asset.max_age(state.config.cache.max_age),
        ranges: true,
        vary: None,
    })
}

/// Maps a missing object to a 404 naming what was missing.
pub fn not_found_as(what: &'static str) -> impl Fn(crate::storage::StorageError) -> ApiError {
    move |e| match e {
        crate::storage::StorageError::NotFound => ApiError::NotFound(format!("{what} not found")),
        other => other.into(),
    }
}
