//! Upload endpoints: presign, part batches, resume, complete, abort, and
//! asset deletion. Handlers only extract, authorise and call the service.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use super::auth::{KeyCheck, check_key};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiPath, ApiQuery, ShardQuery};
use super::paths;
use super::wire::{CompleteRequest, PartsRequest, PartsResponse, PresignRequest, PresignResponse, StoredPart};
use crate::assets::AssetKey;
use crate::state::AppState;
use crate::storage::ObjectKey;
use crate::uploads::{UploadAuth, UploadError};

/// The service's public base URL: `PUBLIC_BASE_URL`, else the request's
/// `Host` (and, only with TRUST_FORWARDED_HEADERS, `X-Forwarded-Host` and
/// `X-Forwarded-Proto`). The URLs built on it carry upload tokens, so a host
/// is accepted only in the plain `name[:port]` / `[v6]:port` form: a value such
/// as `evil.example?` or `a@b` cannot smuggle a token to another origin.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(base) = &state.config.public_base_url {
            return Ok(Self(base.clone()));
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let trusted = |name: &str| if state.config.trust_forwarded_headers { header(name) } else { None };
        let host = trusted("x-forwarded-host")
            .map(|h| h.split(',').next().unwrap_or("").trim())
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .ok_or_else(|| ApiError::bad_request_hint("no Host header", "send Host or set PUBLIC_BASE_URL"))?;
        if !valid_host(host) {
            return Err(ApiError::bad_request_hint(
                format!("invalid Host header '{}'", host.escape_default()),
                "send a plain host[:port], or set PUBLIC_BASE_URL",
            ));
        }
        let scheme = match trusted("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        Ok(Self(format!("{scheme}://{host}")))
    }
}

/// A `Host` value: a DNS name or IPv4 address, or a bracketed IPv6 address,
/// with an optional numeric port. Nothing else (no userinfo, path, query).
pub fn valid_host(host: &str) -> bool {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else { return false };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = host.rsplit_once(':').map_or((host, None), |(n, p)| (n, Some(p)));
    let label_ok =
        |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    name.len() <= 253 && name.split('.').all(label_ok) && port.is_none_or(port_ok)
}

/// `?token=` on upload URLs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The upload token.
    pub token: Option<String>,
}

/// The object key and upload id of `/v1/uploads/{object_key}/{action}/{upload_id}`,
/// where the key is either one percent-encoded segment or raw with slashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPath {
    /// The object key.
    pub key: ObjectKey,
    /// `parts`, `complete` or `abort`.
    pub action: String,
    /// The upload id.
    pub upload_id: String,
}

impl UploadPath {
    /// Parses the (already percent-decoded) tail after `/v1/uploads/`.
    pub fn parse(tail: &str) -> Result<Self, ApiError> {
        let mut it = tail.rsplitn(3, '/');
        let (Some(upload_id), Some(action), Some(key)) = (it.next(), it.next(), it.next()) else {
            return Err(ApiError::NotFound("no such route".into()));
        };
        if ![paths::PARTS, paths::COMPLETE, paths::ABORT].contains(&action) {
            return Err(ApiError::NotFound("no such route".into()));
        }
        if upload_id.is_empty() {
            return Err(ApiError::bad_request("empty upload id"));
        }
        Ok(Self { key: ObjectKey::parse(key)?, action: action.to_owned(), upload_id: upload_id.to_owned() })
    }

    /// Parses the tail for a handler of one action: another action under
    /// this method is a 405, as on any other route.
    fn for_action(tail: &str, action: &str) -> Result<Self, ApiError> {
        let path = Self::parse(tail)?;
        if path.action != action {
            let allow = match path.action.as_str() {
                paths::PARTS => "GET",
                paths::COMPLETE => "POST",
                _ => "DELETE",
            };
            return Err(ApiError::MethodNotAllowed(Some(allow)));
        }
        Ok(path)
    }
}

/// Authorises a call on an existing upload: its token (query, header or body)
/// or the API key. A token must name this very upload.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
    key: &ObjectKey,
    upload_id: &str,
) -> Result<UploadAuth, ApiError> {
    let token = token.or_else(|| headers.get("x-upload-token").and_then(|v| v.to_str().ok())).filter(|t| !t.is_empty());
    match token {
        Some(token) => {
            match state.uploads.verify_token(token) {
                Ok(claims) if claims.object_key == key.as_str() && claims.upload_id == upload_id => {
                    Ok(UploadAuth::Token(claims))
                }
                Ok(_) => Err(UploadError::TokenForAnotherUpload.into()),
                // An expired (or otherwise unusable) token does not cancel a
                // valid API key sent with it: a client resuming a long upload
                // can still list, complete or abort it.
                Err(_) if check_key(state, headers) == KeyCheck::Valid => Ok(UploadAuth::ApiKey),
                Err(e) => Err(ApiError::Unauthorized(e.to_string())),
            }
        }
        None => {
            let check = check_key(state, headers);
            if check.allowed() { Ok(UploadAuth::ApiKey) } else { Err(check.error()) }
        }
    }
}

/// `POST /v1/uploads/presign` (API key).
#[utoipa::path(post, path = "/v1/uploads/presign", tag = "uploads",
    request_body = PresignRequest,
    responses(
        (status = 200, description = "A single PUT, or a multipart upload with its first part URLs", body = PresignResponse),
        (status = 400, description = "bad_request, mime_not_allowed or size_too_large", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn presign(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    ApiJson(req): ApiJson<PresignRequest>,
) -> ApiResult<Json<PresignResponse>> {
    let presigned = state.uploads.presign(&req.into(), &base_url).await?;
    Ok(Json(PresignResponse::new(presigned, &base_url)))
}

/// `POST /v1/uploads/presign/parts` (the upload's token; the API key alone is not enough).
#[utoipa::path(post, path = "/v1/uploads/presign/parts", tag = "uploads",
    params(TokenQuery),
    request_body = PartsRequest,
    responses(
        (status = 200, description = "The next batch of part URLs", body = PartsResponse),
        (status = 400, description = "bad_request, invalid_part_range or batch_size_exceeded", body = ErrorBody),
        (status = 401, description = "No valid token for this upload", body = ErrorBody),
        (status = 404, description = "invalid_upload_id: unknown, completed or aborted upload", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ))]
pub async fn presign_parts(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    ApiQuery(q): ApiQuery<TokenQuery>,
    headers: HeaderMap,
    body: Result<ApiJson<PartsRequest>, ApiError>,
) -> ApiResult<Json<PartsResponse>> {
    let req = match body {
        Ok(ApiJson(req)) => req,
        // The token may travel in the body, so the body is read first; but a
        // caller with no credentials anywhere hears 401, as on every route.
        Err(e) => {
            let header_token = q.token.is_some() || headers.contains_key("x-upload-token");
            let check = check_key(&state, &headers);
            return Err(if header_token || check.allowed() { e } else { check.error() });
        }
    };
    let token = req
        .upload_token
        .as_deref()
        .or(q.token.as_deref())
        .or_else(|| headers.get("x-upload-token").and_then(|v| v.to_str().ok()))
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        let check = check_key(&state, &headers);
        if !check.allowed() {
            return Err(check.error());
        }
        return Err(ApiError::bad_request_hint(
            "missing 'upload_token'",
            "send the upload_token from the presign answer: it carries the part sizes",
        ));
    };
    let claims = state.uploads.verify_token(token).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    Ok(Json(state.uploads.presign_parts(&(&req).into(), &claims, &base_url).await?.into()))
}

/// The answer to a resume call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PartsList {
    /// Parts the store holds.
    pub parts: Vec<StoredPart>,
}

/// `GET /v1/uploads/{object_key}/parts/{upload_id}` (API key or token).
#[utoipa::path(get, path = "/v1/uploads/{object_key}/parts/{upload_id}", tag = "uploads",
    params(
        ("object_key" = String, Path, description = "The object key, percent-encoded as one segment"),
        ("upload_id" = String, Path, description = "The multipart upload id"),
        TokenQuery,
    ),
    responses(
        (status = 200, description = "The parts the store holds", body = PartsList),
        (status = 400, description = "Malformed key", body = ErrorBody),
        (status = 401, description = "No valid token or API key", body = ErrorBody),
        (status = 404, description = "invalid_upload_id", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []), ("upload_token" = [])))]
pub async fn list_parts(
    State(state): State<AppState>,
    ApiPath(tail): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<PartsList>> {
    let path = UploadPath::for_action(&tail, paths::PARTS)?;
    authorize(&state, &headers, q.token.as_deref(), &path.key, &path.upload_id)?;
    let parts = state.uploads.stored_parts(&path.key, &path.upload_id).await?;
    Ok(Json(PartsList { parts: parts.into_iter().map(StoredPart::from).collect() }))
}

/// `completed` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Completed {
    /// Always `completed`.
    pub status: &'static str,
    /// The verified object.
    pub object_key: String,
}

/// `aborted` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Aborted {
    /// Always `aborted`.
    pub status: &'static str,
    /// The aborted upload.
    pub upload_id: String,
}

/// `deleted` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    /// Always `deleted`.
    pub status: &'static str,
    /// The profile.
    pub profile: String,
    /// The asset's id.
    pub key_base: String,
    /// Objects deleted: the original and every variant.
    pub objects_deleted: usize,
}

/// `POST /v1/uploads/{object_key}/complete/{upload_id}` (API key or token).
#[utoipa::path(post, path = "/v1/uploads/{object_key}/complete/{upload_id}", tag = "uploads",
    params(
        ("object_key" = String, Path, description = "The object key, percent-encoded as one segment"),
        ("upload_id" = String, Path, description = "The multipart upload id"),
        TokenQuery,
    ),
    request_body = CompleteRequest,
    responses(
        (status = 200, description = "Completed and verified; also a retry after success, when the stored object carries this upload id", body = Completed),
        (status = 400, description = "No parts, bad JSON, or parts the store refuses", body = ErrorBody),
        (status = 401, description = "No valid token or API key", body = ErrorBody),
        (status = 404, description = "invalid_upload_id", body = ErrorBody),
        (status = 409, description = "Another upload's object holds the key; this upload's parts are discarded", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody),
        (status = 422, description = "upload_verification_failed (size, type, or an image header that does not parse or is over the pixel limit): the object was deleted", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []), ("upload_token" = [])))]
pub async fn complete(
    State(state): State<AppState>,
    ApiPath(tail): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Completed>> {
    let path = UploadPath::for_action(&tail, paths::COMPLETE)?;
    // Authorisation comes before the body is even parsed.
    let auth = authorize(&state, &headers, q.token.as_deref(), &path.key, &path.upload_id)?;
    let req: CompleteRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    state.uploads.complete(&path.key, &path.upload_id, req.into_parts(), &auth).await?;
    Ok(Json(Completed { status: "completed", object_key: path.key.to_string() }))
}

/// `DELETE /v1/uploads/{object_key}/abort/{upload_id}` (API key or token).
#[utoipa::path(delete, path = "/v1/uploads/{object_key}/abort/{upload_id}", tag = "uploads",
    params(
        ("object_key" = String, Path, description = "The object key, percent-encoded as one segment"),
        ("upload_id" = String, Path, description = "The multipart upload id"),
        TokenQuery,
    ),
    responses(
        (status = 200, description = "Aborted; the parts are gone", body = Aborted),
        (status = 400, description = "Malformed key", body = ErrorBody),
        (status = 401, description = "No valid token or API key", body = ErrorBody),
        (status = 404, description = "invalid_upload_id", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []), ("upload_token" = [])))]
pub async fn abort(
    State(state): State<AppState>,
    ApiPath(tail): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Json<Aborted>> {
    let path = UploadPath::for_action(&tail, paths::ABORT)?;
    authorize(&state, &headers, q.token.as_deref(), &path.key, &path.upload_id)?;
    state.uploads.abort(&path.key, &path.upload_id).await?;
    Ok(Json(Aborted { status: "aborted", upload_id: path.upload_id }))
}

/// `DELETE /v1/assets/{profile}/{key_base}` (API key): the original and every variant.
#[utoipa::path(delete, path = "/v1/assets/{profile}/{key_base}", tag = "uploads",
    params(
        ("profile" = String, Path, description = "Profile name", example = "photo"),
        ("key_base" = String, Path, description = "The asset's id", example = "sample3"),
        ShardQuery,
    ),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 400, description = "Malformed id or shard", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown profile or nothing stored", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_asset(
    State(state): State<AppState>,
    ApiPath((profile, key_base)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ShardQuery>,
) -> ApiResult<Json<Deleted>> {
    let asset = AssetKey::resolve(&state.profiles, &profile, &key_base, q.shard.as_deref())?;
    let deleted = state.library.delete(&asset).await?;
    Ok(Json(Deleted { status: "deleted", profile, key_base: asset.key_base().to_string(), objects_deleted: deleted }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_are_plain_authorities() {
        for ok in ["localhost", "localhost:8080", "media.example.com", "127.0.0.1:80", "[::1]:8080", "[::1]", "a-b.c"] {
            assert!(super::valid_host(ok), "{ok}");
        }
        for bad in ["", "evil.example?", "a@b", "a/b", "a:b", "a:", "[::1", "[zz]:1", "a..b", "a b", "a:123456", "x#y"]
        {
            assert!(!super::valid_host(bad), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn upload_paths_take_both_key_forms() {
        let p = UploadPath::parse("originals/avatars/ab/k1/complete/u-1").unwrap();
        assert_eq!(
            (p.key.as_str(), p.action.as_str(), p.upload_id.as_str()),
            ("originals/avatars/ab/k1", "complete", "u-1")
        );
        let p = UploadPath::parse("k1/parts/xyz").unwrap();
        assert_eq!((p.key.as_str(), p.action.as_str()), ("k1", "parts"));
        assert!(UploadPath::parse("k1/other/xyz").is_err());
        assert!(UploadPath::parse("complete/xyz").is_err());
        assert!(UploadPath::parse("../etc/complete/xyz").is_err());
        assert!(UploadPath::parse("a//b/complete/xyz").is_err());
    }
}
