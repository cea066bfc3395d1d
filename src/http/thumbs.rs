//! `GET|HEAD /thumb/{profile}/{image_id}` (on demand) and
//! `POST /thumb/{profile}/{image_id}` (upload an original and make every size).

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::body::{ReadError, read_limited};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use super::media::{Condition, MediaHeaders, evaluate};
use crate::assets::AssetKey;
use crate::state::AppState;
use crate::thumbs::{FormatChoice, ThumbParams, Variant, VariantRequest, resolve_variant};

/// Query of thumbnail URLs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThumbQuery {
    /// Width in pixels (default: the profile's `default_size`, a width or a box).
    pub width: Option<String>,
    /// Height in pixels: with it, `width`×`height` is a box, which must be one
    /// of the profile's `sizes` (`"256x256"`) unless `allow_any_width` (then up
    /// to `max_width` × `max_height`). Never upscaled.
    pub height: Option<String>,
    /// How a box is filled: `cover` (the default: fills it exactly, cropping
    /// the overflow) or `inside` (the whole image within it).
    pub fit: Option<String>,
    /// What a `cover` crop keeps: `center` (the default), `north`, `south`,
    /// `east`, `west`, or `smart` (the most salient region: edges, saturated
    /// colours, skin tones).
    pub gravity: Option<String>,
    /// `webp`, `jpeg`, `png`, `avif` or `auto` (default: the profile's `convert_to`).
    pub format: Option<String>,
    /// 1..=100 (default: the profile's `quality`).
    pub quality: Option<String>,
    /// A custom shard the original was stored under.
    pub shard: Option<String>,
    /// The URL's signature (needed with THUMB_SIGNING_KEY outside the listed sizes).
    pub sig: Option<String>,
}

/// Serves a thumbnail, making and storing it if it does not exist yet.
#[utoipa::path(get, path = "/thumb/{profile}/{image_id}", tag = "media",
    params(
        ("profile" = String, Path, description = "Profile name", example = "photo"),
        ("image_id" = String, Path, description = "key_base, optionally with an extension", example = "sample"),
        ThumbQuery,
    ),
    responses(
        (status = 200, description = "The thumbnail: an animated WebP for an animated GIF or WebP source asked for as WebP", content(
            (super::openapi::Binary = "image/webp"), (super::openapi::Binary = "image/jpeg"), (super::openapi::Binary = "image/png"), (super::openapi::Binary = "image/avif"))),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Width, box (height, fit, gravity), format or quality not allowed", body = ErrorBody),
        (status = 403, description = "A signature is needed and missing or wrong", body = ErrorBody),
        (status = 404, description = "Unknown profile or missing original", body = ErrorBody),
        (status = 415, description = "The original cannot be decoded", body = ErrorBody),
        (status = 422, description = "Over a limit: the source's pixels or side, an animation's frames (MAX_ANIMATION_FRAMES), the format's own size (WebP: 16383 px), or the render memory budget", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
        (status = 503, description = "Too many renders waiting, or the render took longer than TRANSFORM_TIMEOUT (with Retry-After)", body = ErrorBody),
    ))]
pub async fn get_thumb(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    ApiPath((profile, image_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ThumbQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ask = ThumbAsk::new(&profile, &image_id, &q, &uri, &headers);
    let (asset, req) = ask.resolve(&state)?;
    let variant = state.thumbs.get(&asset, &req).await?;
    Ok(answer(&state, &asset, &req, &variant, method == Method::HEAD, &headers))
}

/// What a thumbnail URL asks for, borrowed from the request: the handler
/// fills it from axum's extractors, the hit path (`super::hits`) from the
/// raw URL.
#[derive(Debug)]
pub(super) struct ThumbAsk<'a> {
    /// `{profile}`.
    pub profile: &'a str,
    /// `{image_id}`.
    pub image_id: &'a str,
    /// `?shard=`.
    pub shard: Option<&'a str>,
    /// The size, format and quality parameters, and `Accept`.
    pub params: ThumbParams<'a>,
    /// The URL's path and query as sent (a signature covers them).
    pub path: &'a str,
    /// See `path`.
    pub query: Option<&'a str>,
}

impl<'a> ThumbAsk<'a> {
    /// What `profile`/`image_id` with query `q` asks for, with `uri` and
    /// `headers` the request's.
    pub(super) fn new(
        profile: &'a str,
        image_id: &'a str,
        q: &'a ThumbQuery,
        uri: &'a Uri,
        headers: &'a HeaderMap,
    ) -> Self {
        Self {
            profile,
            image_id,
            shard: q.shard.as_deref(),
            params: ThumbParams {
                width: q.width.as_deref(),
                height: q.height.as_deref(),
                fit: q.fit.as_deref(),
                gravity: q.gravity.as_deref(),
                format: q.format.as_deref(),
                quality: q.quality.as_deref(),
                accept: headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
            },
            path: uri.path(),
            query: uri.query(),
        }
    }

    /// The asset and variant asked for, checked against the profile and,
    /// where one is needed, the URL's signature.
    pub(super) fn resolve(&self, state: &AppState) -> ApiResult<(AssetKey, VariantRequest)> {
        let asset = AssetKey::resolve(&state.profiles, self.profile, self.image_id, self.shard)?;
        let req = resolve_variant(asset.profile(), &self.params).map_err(ApiError::bad_request)?;
        let quality_given = self.params.quality.is_some_and(|v| !v.trim().is_empty());
        state
            .thumbs
            .check_signature(&req, asset.profile(), quality_given, self.path, self.query)
            .map_err(|e| ApiError::Forbidden(e.to_string()))?;
        Ok((asset, req))
    }
}

/// The headers of a variant's 200, kept with it ([`Variant::prepared`]).
struct Prepared {
    /// The Cache-Control max-age they were made with (profiles sharing a
    /// thumbnail folder may differ in it).
    max_age: u64,
    headers: HeaderMap,
}

/// The answer with `variant`: 304 when the request's validators match,
/// else 200 (without the body for HEAD). The 200's headers are rendered
/// once per variant and kept with it ([`Prepared`]).
pub(super) fn answer(
    state: &AppState,
    asset: &AssetKey,
    req: &VariantRequest,
    variant: &Variant,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let max_age = asset.max_age(state.config.cache.max_age);
    let vary = (req.choice == FormatChoice::Auto).then_some("Accept");
    let media = || MediaHeaders {
        filename: Some(format!("{}_{}.{}", asset.key_base(), req.size.name(), req.format.extension())),
        content_type: variant.content_type.to_owned(),
        etag: variant.etag.clone(),
        last_modified: Some(variant.last_modified),
        max_age,
        ranges: false,
        vary,
    };
    if evaluate(headers, &variant.etag, variant.last_modified) == Condition::NotModified {
        return media().not_modified();
    }
    let body = if head { Body::empty() } else { Body::from(variant.bytes.clone()) };
    let render = || {
        let mut media = media();
        media.vary = None;
        media.respond(variant.bytes.len() as u64, None, None).into_parts().0.headers
    };
    let kept = variant.prepared.get_or_init(|| Box::new(Prepared { max_age, headers: render() }));
    let mut response = Response::new(body);
    *response.headers_mut() = match kept.downcast_ref::<Prepared>() {
        Some(prepared) if prepared.max_age == max_age => prepared.headers.clone(),
        _ => render(),
    };
    if let Some(vary) = vary {
        response.headers_mut().insert(header::VARY, HeaderValue::from_static(vary));
    }
    response
}

/// Reads the image, mapping a limit overflow to 413.
async fn read_capped<S, E>(stream: S, limit: u64) -> ApiResult<Bytes>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    read_limited(stream, limit).await.map_err(|e| match e {
        ReadError::TooLarge => too_large(limit),
        ReadError::Stream(e) => ApiError::bad_request(format!("could not read the body: {e}")),
    })
}

/// Most bytes a multipart form adds around its file (boundaries, part headers,
/// small extra fields); a declared length beyond limit + this cannot fit.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

fn too_large(limit: u64) -> ApiError {
    ApiError::SizeTooLarge { message: format!("the image exceeds the profile's limit of {limit} bytes"), body: true }
}

/// The image of a POST: multipart field `file`, or the raw body.
async fn read_image(state: &AppState, req: Request, limit: u64) -> ApiResult<Bytes> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let multipart = content_type.starts_with("multipart/form-data");
    // Refuse a declared oversize body at once, before reading any of it (a
    // client declaring a terabyte and sending nothing must not hold the
    // request open). The answer closes the connection, lingering so that a
    // client still sending reads it (`http::body::close_unread`). A form
    // carries its boundaries and part headers on top of the file.
    let envelope = if multipart { MULTIPART_OVERHEAD } else { 0 };
    if declared.is_some_and(|n| n > limit.saturating_add(envelope)) {
        return Err(too_large(limit));
    }
    if multipart {
        let mut form = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())))?;
        while let Some(field) = form.next_field().await.map_err(|e| ApiError::bad_request(e.body_text()))? {
            if field.name() == Some("file") {
                return read_capped(field.map(|c| c.map_err(|e| e.body_text())).boxed(), limit).await;
            }
        }
        return Err(ApiError::bad_request_hint("no 'file' field in the form", "send the image as form field 'file'"));
    }
    if !(content_type.starts_with("image/") || content_type.starts_with("application/octet-stream")) {
        return Err(ApiError::bad_request_hint(
            format!("unexpected Content-Type '{content_type}'"),
            "send multipart/form-data with a 'file' field, or the raw image with an image/* Content-Type",
        ));
    }
    read_capped(req.into_body().into_data_stream(), limit).await
}

/// `POST /thumb` answer: the original's key and each size's variant key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ThumbsCreated {
    /// The original's key.
    pub object_key: String,
    /// Size (`"256"`, `"256x256"`) → variant key.
    pub thumbnails: BTreeMap<String, String>,
}

/// A multipart form with the image as `file`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ImageForm {
    /// The image.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

/// Stores an uploaded original (replacing an earlier one and its variants)
/// and makes every size of the profile.
#[utoipa::path(post, path = "/thumb/{profile}/{image_id}", tag = "media",
    params(
        ("profile" = String, Path, description = "Profile name", example = "photo"),
        ("image_id" = String, Path, description = "key_base", example = "sample2"),
        ThumbQuery,
    ),
    request_body(content(
        (ImageForm = "multipart/form-data"),
        (super::openapi::Binary = "image/*"),
        (super::openapi::Binary = "application/octet-stream"),
    )),
    responses(
        (status = 201, description = "Stored, every size made", body = ThumbsCreated),
        (status = 400, description = "Not an allowed image type, or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown profile", body = ErrorBody),
        (status = 413, description = "Over the profile's size limit", body = ErrorBody),
        (status = 415, description = "The image cannot be decoded", body = ErrorBody),
        (status = 422, description = "Over a limit: the image's pixels or side, a size's format limit, or the render memory budget", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
        (status = 503, description = "Too many renders waiting", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn post_thumb(
    State(state): State<AppState>,
    ApiPath((profile, image_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ThumbQuery>,
    req: Request,
) -> ApiResult<Response> {
    let asset = AssetKey::resolve(&state.profiles, &profile, &image_id, q.shard.as_deref())?;
    let image = read_image(&state, req, asset.profile().size_max_bytes).await?;
    let made = state.library.replace_original(&asset, image).await?;
    let thumbnails = made.thumbnails.into_iter().map(|(w, k)| (w.to_string(), k.to_string())).collect();
    let body = ThumbsCreated { object_key: made.object_key.to_string(), thumbnails };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
