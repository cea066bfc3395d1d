//! `PUT /_upload/{key}`: the filesystem backend's own presigned URLs (SPEC §4).
//!
//! Behaves as S3 does for a presigned PUT, so a client written for S3 works
//! unchanged: the signature binds the length, type and `If-None-Match`; a
//! request that differs is refused with 403 before a byte is stored; an
//! existing object with `If-None-Match: *` is 412; the body is streamed to a
//! temp file and renamed into place; the answer carries the ETag (quoted MD5).

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::{drain, with_idle_timeout};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::storage::signing::{SignedQuery, UploadGrant};
use crate::storage::{ObjectKey, PutBody, PutOptions, StorageError};

/// Receives a PUT to a signed upload URL.
#[utoipa::path(put, path = "/_upload/{key}", tag = "uploads",
    params(
        ("key" = String, Path, description = "The object key (its segments percent-encoded)"),
        ("X-Mf-Expires" = u64, Query, description = "Unix expiry"),
        ("X-Mf-Length" = u64, Query, description = "The exact body length"),
        ("X-Mf-Type" = Option<String>, Query, description = "The exact Content-Type (single PUTs)"),
        ("X-Mf-If-None-Match" = Option<String>, Query, description = "`1`: If-None-Match: * is required"),
        ("X-Mf-Signature" = String, Query, description = "HMAC-SHA256, hex"),
        ("partNumber" = Option<u32>, Query, description = "Multipart part number"),
        ("uploadId" = Option<String>, Query, description = "Multipart upload id"),
    ),
    request_body(content = super::openapi::Binary, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored; the ETag header is the quoted MD5"),
        (status = 400, description = "Malformed key, or the body ended early or stalled", body = ErrorBody),
        (status = 403, description = "Bad or expired signature, or a header differs from the signed one", body = ErrorBody),
        (status = 404, description = "Not the filesystem backend, or an unknown upload", body = ErrorBody),
        (status = 412, description = "If-None-Match: * and the object exists", body = ErrorBody),
        (status = 502, description = "The store failed", body = ErrorBody),
    ))]
pub async fn receive(
    State(state): State<AppState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<SignedQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let (key, grant) = match admit(&state, key, &query, &headers) {
        Ok(admitted) => admitted,
        Err(e) => {
            drain(with_idle_timeout(body, state.config.http.client_idle_timeout)).await;
            return Err(e);
        }
    };
    let body = PutBody::stream(with_idle_timeout(body, state.config.http.client_idle_timeout), grant.content_length);
    let etag = match &grant.part {
        None => {
            let opts = PutOptions { content_type: grant.content_type.clone(), if_none_match: grant.if_none_match };
            match state.store.put(&key, body, opts).await {
                Ok(meta) => {
                    state.videos.stored(&key).await;
                    meta.etag
                }
                Err(StorageError::AlreadyExists) => {
                    return Err(ApiError::PreconditionFailed("an object already exists at this key".into()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some((upload_id, part_number)) => state.store.upload_part(&key, upload_id, *part_number, body).await?,
    };
    let mut response = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// Checks the signature and that every signed header is sent exactly, as S3 does.
fn admit(
    state: &AppState,
    key: String,
    query: &SignedQuery,
    headers: &HeaderMap,
) -> ApiResult<(ObjectKey, UploadGrant)> {
    let Some(signer) = &state.fs_signer else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let key = ObjectKey::parse(key)?;
    let grant = signer.verify(key.clone(), query, SystemTime::now()).map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let length = header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if length != Some(grant.content_length) {
        return Err(ApiError::Forbidden(format!("Content-Length must be exactly {} as signed", grant.content_length)));
    }
    if let Some(ct) = &grant.content_type
        && header(header::CONTENT_TYPE) != Some(ct.as_str())
    {
        return Err(ApiError::Forbidden(format!("Content-Type must be '{ct}' as signed")));
    }
    if grant.if_none_match && header(header::IF_NONE_MATCH) != Some("*") {
        return Err(ApiError::Forbidden("If-None-Match: * must be sent as signed".into()));
    }
    Ok((key, grant))
}
