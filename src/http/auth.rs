//! The API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared
//! in constant time. With no API_KEY configured the service is open (a warning
//! is logged at start-up).

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::state::AppState;

/// The keys a request presents: `X-API-Key` and/or `Authorization: Bearer`.
pub fn presented_keys(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let api_key = headers.get_all("x-api-key").iter().filter_map(|v| v.to_str().ok()).map(str::trim);
    let bearer = headers.get_all(axum::http::header::AUTHORIZATION).iter().filter_map(|v| {
        let (scheme, token) = v.to_str().ok()?.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    api_key.chain(bearer)
}

/// Compares two keys in constant time (hashing first hides the length too).
pub fn keys_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// What the API key check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key is configured: everything is open.
    Open,
    /// The right key was presented.
    Valid,
    /// No key was presented.
    Missing,
    /// A wrong key was presented.
    Invalid,
}

impl KeyCheck {
    /// Whether the request may proceed on the key alone.
    pub fn allowed(self) -> bool {
        matches!(self, Self::Open | Self::Valid)
    }

    /// The 401 for a request that may not proceed.
    pub fn error(self) -> ApiError {
        match self {
            Self::Invalid => ApiError::Unauthorized("invalid API key".into()),
            _ => ApiError::Unauthorized("missing API key".into()),
        }
    }
}

/// Checks the request's key against the configured one.
pub fn check_key(state: &AppState, headers: &HeaderMap) -> KeyCheck {
    let Some(expected) = &state.config.api_key else {
        return KeyCheck::Open;
    };
    // One rule (SPEC §5): the request is authorized when either header
    // carries the key, whichever order they come in.
    let mut presented = false;
    for key in presented_keys(headers) {
        if keys_match(key, expected.expose()) {
            return KeyCheck::Valid;
        }
        presented = true;
    }
    if presented { KeyCheck::Invalid } else { KeyCheck::Missing }
}

/// Middleware for routes that need the API key.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let check = check_key(&state, req.headers());
    if !check.allowed() {
        return Err(check.error());
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_are_read_from_either_header() {
        let keys = |h: &HeaderMap| presented_keys(h).map(str::to_owned).collect::<Vec<_>>();
        let mut h = HeaderMap::new();
        assert!(keys(&h).is_empty());
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(keys(&h), ["abc"]);
        h.insert("authorization", HeaderValue::from_static("bearer  abc "));
        assert_eq!(keys(&h), ["abc"]);
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert!(keys(&h).is_empty());
        h.insert("x-api-key", HeaderValue::from_static("xyz"));
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(keys(&h), ["xyz", "abc"]);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(keys_match("secret", "secret"));
        assert!(!keys_match("secret", "secreT"));
        assert!(!keys_match("secre", "secret"));
        assert!(!keys_match("", "secret"));
    }
}
