//! What every media answer (originals, thumbnails) shares: the Range header,
//! conditional requests (If-None-Match, If-Modified-Since, If-Range), and the
//! caching and safety headers.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::storage::ByteRange;

/// Parses a `Range` header into one byte range.
///
/// Returns `None` (serve the whole object, as RFC 9110 allows) for anything
/// but a single well-formed `bytes=` range: other units, several ranges,
/// garbage, or `last < first`.
pub fn parse_range(value: &str) -> Option<ByteRange> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    // A last-byte-pos too large for u64 is still valid: it clamps to the
    // object's end (RFC 9110 §14.1.2), so it saturates instead of failing.
    let last_number =
        |s: &str| number(s).or_else(|| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(u64::MAX));
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(ByteRange::Suffix(number(last)?)),
        (false, true) => Some(ByteRange::From(number(first)?)),
        (false, false) => {
            let (start, end) = (number(first)?, last_number(last)?);
            (start <= end).then_some(ByteRange::Bounded { start, end })
        }
        (true, true) => None,
    }
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, as the
/// RFC requires for this header).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    let ours = bare(etag);
    if_none_match.split(',').any(|t| t.trim() == "*" || bare(t) == ours)
}

/// What the conditional headers ask for, given the object's validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Answer 304.
    NotModified,
    /// Answer normally; `honour_range` is false when If-Range does not match.
    Proceed {
        /// Whether a Range header may be applied.
        honour_range: bool,
    },
}

/// Evaluates If-None-Match / If-Modified-Since / If-Range.
pub fn evaluate(headers: &HeaderMap, etag: &str, last_modified: SystemTime) -> Condition {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(inm) = get(header::IF_NONE_MATCH) {
        if etag_matches(inm, etag) {
            return Condition::NotModified;
        }
    } else if let Some(ims) = get(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok()) {
        // HTTP dates have second precision.
        if truncate_to_secs(last_modified) <= ims {
            return Condition::NotModified;
        }
    }
    let honour_range = match get(header::IF_RANGE) {
        None => true,
        Some(v) if v.trim().starts_with('"') => v.trim() == etag,
        Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| truncate_to_secs(last_modified) <= d),
    };
    Condition::Proceed { honour_range }
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

/// Whether a stored Content-Type may be served as is: media types only, never
/// anything a browser would render as a document or run as script.
pub fn is_safe_media_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    if sub.is_empty() || sub.contains(['/', ' ']) {
        return false;
    }
    match top {
        "image" => !sub.contains("svg") && !sub.contains("xml"),
        "video" | "audio" => true,
        "application" => sub == "octet-stream",
        _ => false,
    }
}

/// Whether a stored type is safe and says what the bytes are (stores default
/// to `application/octet-stream` or `binary/octet-stream` when none was given).
pub fn is_specific_media_type(ct: &str) -> bool {
    is_safe_media_type(ct) && !ct.to_ascii_lowercase().contains("octet-stream")
}

/// The Content-Type to serve: the stored one if safe and specific, else what
/// the first bytes sniff as (if safe), else `application/octet-stream`.
pub fn choose_content_type(stored: Option<&str>, head: Option<&[u8]>) -> String {
    if let Some(ct) = stored.filter(|ct| is_specific_media_type(ct)) {
        return ct.to_owned();
    }
    head.and_then(crate::media_type::sniff)
        .map(|t| t.mime)
        .filter(|ct| is_safe_media_type(ct))
        .unwrap_or("application/octet-stream")
        .to_owned()
}

/// The validators and headers of one media answer.
#[derive(Debug, Clone)]
pub struct MediaHeaders {
    /// Content-Type.
    pub content_type: String,
    /// Strong ETag, quoted.
    pub etag: String,
    /// Last-Modified.
    pub last_modified: Option<SystemTime>,
    /// Cache-Control max-age, seconds.
    pub max_age: u64,
    /// Whether ranges are offered (`Accept-Ranges: bytes`).
    pub ranges: bool,
    /// The file name a browser or `curl -OJ` saves it as (`Content-Disposition: inline`).
    pub filename: Option<String>,
    /// Extra `Vary` value (e.g. `Accept` for format=auto).
    pub vary: Option<&'static str>,
}

impl MediaHeaders {
    fn apply(&self, headers: &mut HeaderMap) {
        let mut set = |name: header::HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        set(header::ETAG, &self.etag);
        if let Some(name) = &self.filename {
            // Names are built from key bases and extensions: [A-Za-z0-9_.-] only.
            set(header::CONTENT_DISPOSITION, &format!("inline; filename=\"{name}\""));
        }
        set(header::CACHE_CONTROL, &format!("public, max-age={}", self.max_age));
        if let Some(t) = self.last_modified {
            set(header::LAST_MODIFIED, &httpdate::fmt_http_date(t));
        }
        if let Some(vary) = self.vary {
            set(header::VARY, vary);
        }
        set(header::ACCEPT_RANGES, if self.ranges { "bytes" } else { "none" });
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    }

    /// 304 Not Modified with the validators.
    pub fn not_modified(&self) -> Response {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        self.apply(r.headers_mut());
        r
    }

    /// A full (200) or partial (206) answer. `range` is the inclusive range
    /// served out of `total` bytes; `body` is `None` for HEAD.
    pub fn respond(&self, total: u64, range: Option<(u64, u64)>, body: Option<Body>) -> Response {
        let (status, length) = match range {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, end - start + 1),
            None => (StatusCode::OK, total),
        };
        let mut r = Response::new(body.unwrap_or_else(Body::empty));
        *r.status_mut() = status;
        let headers = r.headers_mut();
        self.apply(headers);
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Some((start, end)) = range
            && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}"))
        {
            headers.insert(header::CONTENT_RANGE, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=0-9"), Some(ByteRange::Bounded { start: 0, end: 9 }));
        assert_eq!(parse_range(" bytes= 5 - "), Some(ByteRange::From(5)));
        assert_eq!(parse_range("bytes=-20"), Some(ByteRange::Suffix(20)));
        assert_eq!(parse_range("bytes=0-18446744073709551615"), Some(ByteRange::Bounded { start: 0, end: u64::MAX }));
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999"),
            Some(ByteRange::Bounded { start: 0, end: u64::MAX })
        );
        for ignored in [
            "bytes=9-0",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "",
            "bytes=+1-2",
            "bytes=18446744073709551616-",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn etags_match_weakly() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn conditions() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(evaluate(&h, "\"e\"", t), Condition::Proceed { honour_range: true });
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"e\""));
        assert_eq!(evaluate(&h, "\"e\"", t), Condition::NotModified);
        let mut h = HeaderMap::new();
        h.insert(header::IF_MODIFIED_SINCE, HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap());
        assert_eq!(evaluate(&h, "\"e\"", t), Condition::NotModified);
        let mut h = HeaderMap::new();
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(evaluate(&h, "\"e\"", t), Condition::Proceed { honour_range: false });
    }

    #[test]
    fn content_types_are_never_documents() {
        assert_eq!(choose_content_type(Some("image/jpeg"), None), "image/jpeg");
        assert_eq!(choose_content_type(Some("text/html"), None), "application/octet-stream");
        assert_eq!(choose_content_type(Some("image/svg+xml"), None), "application/octet-stream");
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, b'I', b'H', b'D', b'R'];
        assert_eq!(choose_content_type(Some("text/html"), Some(&png)), "image/png");
        assert_eq!(choose_content_type(None, Some(b"<html><script>")), "application/octet-stream");
    }
}
