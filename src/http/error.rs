//! The one error type of the HTTP API and its mapping to `{code, message, hint}`.
//!
//! Handlers return [`ApiError`]; axum's own rejections (bad JSON, bad query,
//! bad path) are converted here too, and the fallback/405 handlers use it, so
//! every error a client sees has the same JSON shape. Internal details are
//! logged once, here, and never sent to the client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::assets::AssetError;
use crate::library::LibraryError;
use crate::storage::StorageError;
use crate::storage::keys::KeyError;
use crate::thumbs::ThumbError;
use crate::uploads::UploadError;
use crate::video::VideoError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401: missing or wrong API key or upload token.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: malformed request.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// 400: MIME type not allowed by the profile.
    #[error("{0}")]
    MimeNotAllowed(String),
    /// 400 (declared size) or 413 (body over the limit).
    #[error("{message}")]
    SizeTooLarge {
        /// What is wrong.
        message: String,
        /// 413 when a body was cut off, 400 when a declared size was refused.
        body: bool,
    },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405, with the `Allow` header when the handler knows it (axum adds its
    /// own on routes it routes by method).
    #[error("method not allowed")]
    MethodNotAllowed(Option<&'static str>),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 404: unknown, completed or aborted multipart upload.
    #[error("{0}")]
    InvalidUploadId(String),
    /// 400: part range outside the upload.
    #[error("{0}")]
    InvalidPartRange(String),
    /// 400: too many parts asked for at once.
    #[error("{0}")]
    BatchSizeExceeded(String),
    /// 422: the uploaded object failed verification and was deleted.
    #[error("{0}")]
    UploadVerificationFailed(String),
    /// 415: the source cannot be decoded.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// 422: the source image is over a limit (pixels, side, the output
    /// format's size, the render memory budget).
    #[error("{message}")]
    ImageTooLarge {
        /// What is over which limit.
        message: String,
        /// What the client can do about it.
        hint: Option<String>,
    },
    /// 503 with Retry-After: the transform queue is full, or the service is draining.
    #[error("{message}")]
    Overloaded {
        /// What is wrong.
        message: String,
        /// Seconds for Retry-After.
        retry_after: u64,
    },
    /// 502: the store failed.
    #[error("{0}")]
    Storage(String),
    /// 403: a presigned URL refused (filesystem backend, S3-style).
    #[error("{0}")]
    Forbidden(String),
    /// 412: `If-None-Match: *` and the object exists (filesystem backend).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 416 with the object size for Content-Range.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The object size.
        size: u64,
    },
    /// 501: a feature this server cannot offer (no ffmpeg installed).
    #[error("{0}")]
    NotImplemented(String),
    /// 500: a bug. The detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    #[schema(value_type = String, example = "bad_request")]
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// How to fix it, when there is something to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    /// A 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), hint: None }
    }

    /// A 400 with a message and a hint.
    pub fn bad_request_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self::BadRequest { message: message.into(), hint: Some(hint.into()) }
    }

    /// The status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::MimeNotAllowed(_) => (StatusCode::BAD_REQUEST, "mime_not_allowed"),
            Self::SizeTooLarge { body: true, .. } => (StatusCode::PAYLOAD_TOO_LARGE, "size_too_large"),
            Self::SizeTooLarge { body: false, .. } => (StatusCode::BAD_REQUEST, "size_too_large"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::InvalidUploadId(_) => (StatusCode::NOT_FOUND, "invalid_upload_id"),
            Self::InvalidPartRange(_) => (StatusCode::BAD_REQUEST, "invalid_part_range"),
            Self::BatchSizeExceeded(_) => (StatusCode::BAD_REQUEST, "batch_size_exceeded"),
            Self::UploadVerificationFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "upload_verification_failed"),
            Self::UnsupportedMedia(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media"),
            Self::ImageTooLarge { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Storage(_) => (StatusCode::BAD_GATEWAY, "storage_error"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            Self::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            Self::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            Self::BadRequest { hint, .. } | Self::ImageTooLarge { hint, .. } => hint.clone(),
            Self::Unauthorized(_) => Some("send 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>'".into()),
            Self::Overloaded { .. } => Some("retry after the number of seconds in Retry-After".into()),
            Self::Storage(_) => Some("the object store did not answer as expected; retry later".into()),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error".to_owned()
            }
            Self::Storage(detail) => {
                tracing::warn!(detail = %detail, "storage error");
                "storage backend error".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody { code, message, hint: self.hint() };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Overloaded { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::MethodNotAllowed(Some(allow)) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => Self::NotFound("not found".into()),
            StorageError::AlreadyExists => Self::PreconditionFailed("the object already exists".into()),
            StorageError::NoSuchUpload => Self::InvalidUploadId("unknown, completed or aborted upload id".into()),
            StorageError::InvalidPart(m) => Self::bad_request(format!("invalid parts: {m}")),
            StorageError::RangeNotSatisfiable { size } => Self::RangeNotSatisfiable { size },
            StorageError::LengthMismatch { expected, actual } => {
                Self::bad_request(format!("body length {actual} differs from the declared {expected}"))
            }
            StorageError::InvalidKey(e) => Self::bad_request(e.to_string()),
            StorageError::Body(e) => Self::bad_request(format!("could not read the request body: {e}")),
            StorageError::Backend(m) => Self::Storage(m),
        }
    }
}

impl From<AssetError> for ApiError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::UnknownProfile { .. } => Self::NotFound(e.to_string()),
            AssetError::Key(k) => k.into(),
            AssetError::ExtensionRequired(_) => Self::bad_request(e.to_string()),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let message = e.to_string();
        match e {
            UploadError::MissingField(_)
            | UploadError::UnknownProfile { .. }
            | UploadError::KindMismatch { .. }
            | UploadError::SinglePutTooLarge(_)
            | UploadError::ExtensionMismatch { .. }
            | UploadError::ProfileGone(_)
            | UploadError::NoProfileForKey(_)
            | UploadError::BadCount(_)
            | UploadError::NoParts
            | UploadError::InvalidParts(_) => Self::bad_request(message),
            UploadError::MimeNotAllowed { .. } => Self::MimeNotAllowed(message),
            UploadError::TooLarge { .. } => Self::SizeTooLarge { message, body: false },
            UploadError::TokenForAnotherUpload => Self::Unauthorized(message),
            UploadError::InvalidUploadId => Self::InvalidUploadId(message),
            UploadError::InvalidPartRange { .. } => Self::InvalidPartRange(message),
            UploadError::BatchSizeExceeded { .. } => Self::BatchSizeExceeded(message),
            UploadError::Conflict(_) => Self::Conflict(message),
            UploadError::VerificationFailed(_) => Self::UploadVerificationFailed(message),
            UploadError::Key(k) => k.into(),
            UploadError::Asset(a) => a.into(),
            UploadError::Storage(s) => s.into(),
        }
    }
}

impl From<LibraryError> for ApiError {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::NothingStored { .. } => Self::NotFound(e.to_string()),
            LibraryError::TypeNotAllowed { .. } => Self::MimeNotAllowed(e.to_string()),
            LibraryError::VideoProfile(_) => Self::UnsupportedMedia(e.to_string()),
            LibraryError::Asset(e) => e.into(),
            LibraryError::Thumb(e) => e.into(),
            LibraryError::Storage(e) => e.into(),
        }
    }
}

impl From<VideoError> for ApiError {
    fn from(e: VideoError) -> Self {
        let message = e.to_string();
        match e {
            VideoError::NotInstalled => Self::NotImplemented(message),
            VideoError::NotAVideo(_) | VideoError::Failed(_) => Self::UnsupportedMedia(message),
            VideoError::TooLarge { .. } => Self::ImageTooLarge {
                message,
                hint: Some("raise MAX_SOURCE_PIXELS to make posters of larger videos".into()),
            },
            VideoError::TimedOut(_) => Self::Overloaded { message, retry_after: 2 },
            VideoError::Store(_) => Self::Storage(message),
            VideoError::NoProxies(_) | VideoError::NoOriginal => Self::NotFound(message),
        }
    }
}

impl From<ThumbError> for ApiError {
    fn from(e: ThumbError) -> Self {
        let message = e.to_string();
        match e {
            ThumbError::OriginalNotFound => Self::NotFound(message),
            ThumbError::Unsupported(_) => Self::UnsupportedMedia(message),
            ThumbError::TooLarge { hint, .. } => Self::ImageTooLarge { message, hint },
            ThumbError::Overloaded | ThumbError::TimedOut => Self::Overloaded { message, retry_after: 1 },
            ThumbError::Storage(_) => Self::Storage(message),
            ThumbError::NotImplemented(_) => Self::NotImplemented(message),
            ThumbError::Internal(_) => Self::Internal(message),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                Self::bad_request_hint("expected a JSON body", "send 'Content-Type: application/json'")
            }
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::SizeTooLarge { message: "request body too large".into(), body: true }
            }
            other => Self::bad_request(format!("invalid JSON body: {}", other.body_text())),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", r.body_text()))
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

/// Fallback for unknown routes: the JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Gives the JSON error shape to the plain-text errors that layers below the
/// handlers produce (a body over the limit, a timeout, a caught panic, a bare
/// 405), keeping their other headers (CORS, Allow).
pub fn json_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let replacement = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(None),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::SizeTooLarge { message: "request body too large".into(), body: true }
        }
        StatusCode::REQUEST_TIMEOUT => ApiError::bad_request("request timed out"),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Overloaded { message: "the request took too long".into(), retry_after: 1 }
        }
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::Internal("handler panicked".into()),
        _ => return response,
    };
    let mut fixed = replacement.into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !fixed.headers().contains_key(name) {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_spec_maps_to_its_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::bad_request("x"), 400, "bad_request"),
            (ApiError::MimeNotAllowed("x".into()), 400, "mime_not_allowed"),
            (ApiError::SizeTooLarge { message: "x".into(), body: false }, 400, "size_too_large"),
            (ApiError::SizeTooLarge { message: "x".into(), body: true }, 413, "size_too_large"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::MethodNotAllowed(None), 405, "method_not_allowed"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::InvalidUploadId("x".into()), 404, "invalid_upload_id"),
            (ApiError::InvalidPartRange("x".into()), 400, "invalid_part_range"),
            (ApiError::BatchSizeExceeded("x".into()), 400, "batch_size_exceeded"),
            (ApiError::UploadVerificationFailed("x".into()), 422, "upload_verification_failed"),
            (ApiError::UnsupportedMedia("x".into()), 415, "unsupported_media"),
            (ApiError::ImageTooLarge { message: "x".into(), hint: None }, 422, "image_too_large"),
            (ApiError::Overloaded { message: "x".into(), retry_after: 1 }, 503, "overloaded"),
            (ApiError::Storage("x".into()), 502, "storage_error"),
            (ApiError::NotImplemented("x".into()), 501, "not_implemented"),
            (ApiError::Internal("x".into()), 500, "internal"),
        ];
        for (err, status, code) in cases {
            let (s, c) = err.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn storage_details_are_not_sent() {
        let r = ApiError::from(StorageError::Backend("secret endpoint http://10.0.0.1".into())).into_response();
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    }
}
