//! The upload token: how a stateless service remembers a multipart upload.
//!
//! An opaque string `base64url(json claims) "." base64url(HMAC-SHA256)`, keyed
//! by `SIGNING_SECRET` and domain-separated from the filesystem backend's URL
//! signatures, which share the secret. It carries what later calls must check
//! (object key, upload id, profile, MIME type, total size, part size, expiry),
//! so any instance with the same secret can continue an upload.

use std::fmt;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::storage::signing::unix;

const DOMAIN: &[u8] = b"mediaflow-upload-token-v1.";
/// Tokens longer than this are refused before any decoding. Generous: a
/// 1024-byte key of characters JSON escapes, plus a long S3 upload id, must
/// still fit (a fuzzed 553-byte key of control characters did not fit 4 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What an upload token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadClaims {
    /// Object key.
    #[serde(rename = "k")]
    pub object_key: String,
    /// Multipart upload id.
    #[serde(rename = "u")]
    pub upload_id: String,
    /// Profile name.
    #[serde(rename = "p")]
    pub profile: String,
    /// Declared MIME type.
    #[serde(rename = "m")]
    pub mime: String,
    /// Declared total size, bytes.
    #[serde(rename = "s")]
    pub size: u64,
    /// Part size, bytes.
    #[serde(rename = "ps")]
    pub part_size: u64,
    /// Unix expiry.
    #[serde(rename = "e")]
    pub expires: u64,
}

impl UploadClaims {
    /// Number of parts.
    pub fn total_parts(&self) -> u32 {
        self.size.div_ceil(self.part_size.max(1)).max(1) as u32
    }

    /// The exact length of part `n` (1-based): `part_size`, the last the remainder.
    pub fn part_length(&self, n: u32) -> u64 {
        let total = self.total_parts();
        if n < total { self.part_size } else { self.size - self.part_size * u64::from(total - 1) }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token at all.
    #[error("malformed upload token")]
    Malformed,
    /// Signed with another secret, or altered.
    #[error("invalid upload token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("upload token expired")]
    Expired,
}

/// Issues and checks upload tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSigner { key: <redacted> }")
    }
}

impl TokenSigner {
    /// A signer keyed by `SIGNING_SECRET`.
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.to_vec() }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac
    }

    /// Signs `claims` into a token.
    pub fn issue(&self, claims: &UploadClaims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<UploadClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, sig) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        // Constant-time comparison, and before the payload is even parsed.
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
        let claims: UploadClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if unix(now) > claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn claims() -> UploadClaims {
        UploadClaims {
            object_key: "originals/videos/ab/v1".into(),
            upload_id: "abc".into(),
            profile: "video".into(),
            mime: "video/mp4".into(),
            size: 12_000_000,
            part_size: 5 * 1024 * 1024,
            expires: 2_000_000_000,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn tokens_round_trip_between_signers_with_one_secret() {
        let a = TokenSigner::new(b"shared-secret-123456");
        let b = TokenSigner::new(b"shared-secret-123456");
        let token = a.issue(&claims());
        assert_eq!(b.verify(&token, at(1_900_000_000)).unwrap(), claims());
    }

    #[test]
    fn forged_expired_and_garbage_tokens_are_refused() {
        let signer = TokenSigner::new(b"shared-secret-123456");
        let token = signer.issue(&claims());
        let other = TokenSigner::new(b"another-secret-12345");
        assert_eq!(other.verify(&token, at(0)), Err(TokenError::BadSignature));
        assert_eq!(signer.verify(&token, at(2_000_000_001)), Err(TokenError::Expired));
        // Changing the claims (a bigger size) breaks the signature.
        let (_, sig) = token.split_once('.').unwrap();
        let forged_claims = UploadClaims { size: 1 << 40, ..claims() };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        assert_eq!(signer.verify(&format!("{payload}.{sig}"), at(0)), Err(TokenError::BadSignature));
        for garbage in ["", ".", "abc", "a.b", "!!!.???", &"x".repeat(5000)] {
            assert!(signer.verify(garbage, at(0)).is_err(), "{garbage}");
        }
    }

    #[test]
    fn tokens_for_the_longest_keys_verify() {
        let signer = TokenSigner::new(b"shared-secret-123456");
        for key in ["\"".repeat(1024), "é".repeat(512), "\u{1}".repeat(1024)] {
            let c = UploadClaims { object_key: key, upload_id: "u".repeat(300), ..claims() };
            assert_eq!(signer.verify(&signer.issue(&c), at(0)).unwrap(), c);
        }
    }

    #[test]
    fn part_lengths_cover_the_size_exactly() {
        let c = claims();
        assert_eq!(c.total_parts(), 3);
        assert_eq!(c.part_length(1), 5 * 1024 * 1024);
        assert_eq!(c.part_length(3), 12_000_000 - 2 * 5 * 1024 * 1024);
        let sum: u64 = (1..=c.total_parts()).map(|n| c.part_length(n)).sum();
        assert_eq!(sum, c.size);
        let one = UploadClaims { size: 10, ..claims() };
        assert_eq!((one.total_parts(), one.part_length(1)), (1, 10));
    }
}
