//! The filesystem backend's presigned URLs (SPEC §4).
//!
//! S3 signs URLs with the account's secret; the filesystem backend signs its own
//! with `SIGNING_SECRET` so that `cargo run` alone supports the whole upload
//! flow. The signature is HMAC-SHA256 over method, key, upload id and part
//! number, expiry, length, type and the `If-None-Match` flag, so a client cannot
//! change any of them. Instances sharing `SIGNING_SECRET` accept each other's URLs.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use sha2::Sha256;

use super::ObjectKey;

/// Path under which the service accepts uploads to its own signed URLs.
pub const UPLOAD_ROUTE_PREFIX: &str = "/_upload";

/// Characters left as they are in an encoded key segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a key for a URL path, keeping its `/` separators.
pub fn encode_key_path(key: &ObjectKey) -> String {
    key.segments().map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// Percent-encodes a string as a single path segment or query value.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// What a signed upload URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    /// The object the URL writes.
    pub key: ObjectKey,
    /// `Some((upload_id, part_number))` for a multipart part.
    pub part: Option<(String, u32)>,
    /// Unix time after which the URL is refused.
    pub expires: u64,
    /// The exact body length required.
    pub content_length: u64,
    /// The exact Content-Type required (single PUTs).
    pub content_type: Option<String>,
    /// Whether `If-None-Match: *` is required.
    pub if_none_match: bool,
}

/// The query string of a signed upload URL, as the route receives it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SignedQuery {
    /// Multipart upload id (S3's own parameter name).
    #[serde(rename = "uploadId")]
    pub upload_id: Option<String>,
    /// Multipart part number (S3's own parameter name).
    #[serde(rename = "partNumber")]
    pub part_number: Option<String>,
    /// Unix expiry.
    #[serde(rename = "X-Mf-Expires")]
    pub expires: Option<String>,
    /// Bound length.
    #[serde(rename = "X-Mf-Length")]
    pub length: Option<String>,
    /// Bound content type.
    #[serde(rename = "X-Mf-Type")]
    pub content_type: Option<String>,
    /// `1` when `If-None-Match: *` is bound.
    #[serde(rename = "X-Mf-If-None-Match")]
    pub if_none_match: Option<String>,
    /// Hex HMAC-SHA256.
    #[serde(rename = "X-Mf-Signature")]
    pub signature: Option<String>,
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A signing parameter is missing or malformed.
    #[error("the URL is missing or has a malformed signing parameter: {0}")]
    Malformed(&'static str),
    /// The signature does not match.
    #[error("the request signature does not match")]
    Mismatch,
    /// The URL has expired.
    #[error("the URL has expired")]
    Expired,
}

/// Signs and verifies the filesystem backend's upload URLs.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UrlSigner { key: <redacted> }")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl UrlSigner {
    /// A signer keyed by the service's `SIGNING_SECRET`.
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.to_vec() }
    }

    fn mac(&self, grant: &UploadGrant) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        let (upload_id, part) = match &grant.part {
            Some((id, n)) => (id.as_str(), n.to_string()),
            None => ("", String::new()),
        };
        // Domain-separated from upload tokens, which share the secret; fields are
        // newline-separated and none of them can contain a newline.
        let canonical = format!(
            "mediaflow-fs-url-v1\nPUT\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            grant.key,
            upload_id,
            part,
            grant.expires,
            grant.content_length,
            grant.content_type.as_deref().unwrap_or(""),
            u8::from(grant.if_none_match),
        );
        mac.update(canonical.as_bytes());
        mac
    }

    /// The full URL for `grant`, under `base_url` (the service's public base).
    pub fn url(&self, base_url: &str, grant: &UploadGrant) -> String {
        let signature = hex::encode(self.mac(grant).finalize().into_bytes());
        let mut url =
            format!("{}{}/{}?", base_url.trim_end_matches('/'), UPLOAD_ROUTE_PREFIX, encode_key_path(&grant.key));
        if let Some((id, n)) = &grant.part {
            url.push_str(&format!("partNumber={n}&uploadId={}&", encode_component(id)));
        }
        url.push_str(&format!("X-Mf-Expires={}&X-Mf-Length={}", grant.expires, grant.content_length));
        if let Some(ct) = &grant.content_type {
            url.push_str(&format!("&X-Mf-Type={}", encode_component(ct)));
        }
        if grant.if_none_match {
            url.push_str("&X-Mf-If-None-Match=1");
        }
        url.push_str(&format!("&X-Mf-Signature={signature}"));
        url
    }

    /// Checks a received URL for `key` and returns what it allows.
    pub fn verify(&self, key: ObjectKey, q: &SignedQuery, now: SystemTime) -> Result<UploadGrant, SignatureError> {
        let number = |v: &Option<String>, name| {
            v.as_deref().and_then(|s| s.parse::<u64>().ok()).ok_or(SignatureError::Malformed(name))
        };
        let part = match (&q.upload_id, &q.part_number) {
            (Some(id), Some(n)) => {
                let n = n.parse::<u32>().map_err(|_| SignatureError::Malformed("partNumber"))?;
                Some((id.clone(), n))
            }
            (None, None) => None,
            _ => return Err(SignatureError::Malformed("uploadId/partNumber")),
        };
        let grant = UploadGrant {
            key,
            part,
            expires: number(&q.expires, "X-Mf-Expires")?,
            content_length: number(&q.length, "X-Mf-Length")?,
            content_type: q.content_type.clone(),
            if_none_match: match q.if_none_match.as_deref() {
                None => false,
                Some("1") => true,
                Some(_) => return Err(SignatureError::Malformed("X-Mf-If-None-Match")),
            },
        };
        let signature = q
            .signature
            .as_deref()
            .and_then(|s| hex::decode(s).ok())
            .ok_or(SignatureError::Malformed("X-Mf-Signature"))?;
        // verify_slice compares in constant time.
        self.mac(&grant).verify_slice(&signature).map_err(|_| SignatureError::Mismatch)?;
        if unix(now) > grant.expires {
            return Err(SignatureError::Expired);
        }
        Ok(grant)
    }
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> UploadGrant {
        UploadGrant {
            key: ObjectKey::parse("originals/a b/k1").unwrap(),
            part: None,
            expires: 2_000_000_000,
            content_length: 1024,
            content_type: Some("image/jpeg".into()),
            if_none_match: true,
        }
    }

    fn query_of(url: &str) -> SignedQuery {
        let q = url.split_once('?').unwrap().1;
        serde_urlencoded::from_str(q).unwrap()
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    }

    #[test]
    fn url_round_trips() {
        let signer = UrlSigner::new(b"secret");
        let url = signer.url("http://h:1/", &grant());
        assert!(url.starts_with("http://h:1/_upload/originals/a%20b/k1?"), "{url}");
        let got = signer.verify(grant().key, &query_of(&url), now()).unwrap();
        assert_eq!(got, grant());
    }

    #[test]
    fn part_urls_round_trip() {
        let signer = UrlSigner::new(b"secret");
        let g = UploadGrant { part: Some(("u1".into(), 3)), content_type: None, if_none_match: false, ..grant() };
        let url = signer.url("http://h", &g);
        assert_eq!(signer.verify(g.key.clone(), &query_of(&url), now()).unwrap(), g);
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let signer = UrlSigner::new(b"secret");
        let url = signer.url("http://h", &grant());
        let q = query_of(&url);
        let other_key = ObjectKey::parse("originals/a b/k2").unwrap();
        assert_eq!(signer.verify(other_key, &q, now()), Err(SignatureError::Mismatch));
        for tamper in [
            SignedQuery { length: Some("1025".into()), ..q.clone() },
            SignedQuery { content_type: Some("text/html".into()), ..q.clone() },
            SignedQuery { if_none_match: None, ..q.clone() },
            SignedQuery { expires: Some("2000000001".into()), ..q.clone() },
        ] {
            assert_eq!(signer.verify(grant().key, &tamper, now()), Err(SignatureError::Mismatch));
        }
        let other = UrlSigner::new(b"other");
        assert_eq!(other.verify(grant().key, &q, now()), Err(SignatureError::Mismatch));
    }

    #[test]
    fn expired_and_malformed_urls_are_refused() {
        let signer = UrlSigner::new(b"secret");
        let q = query_of(&signer.url("http://h", &grant()));
        let later = UNIX_EPOCH + Duration::from_secs(2_000_000_001);
        assert_eq!(signer.verify(grant().key, &q, later), Err(SignatureError::Expired));
        let bad = SignedQuery { signature: Some("zz".into()), ..q.clone() };
        assert!(matches!(signer.verify(grant().key, &bad, now()), Err(SignatureError::Malformed(_))));
        let bad = SignedQuery { part_number: Some("1".into()), ..q };
        assert!(matches!(signer.verify(grant().key, &bad, now()), Err(SignatureError::Malformed(_))));
    }
}
