//! Signed thumbnail URLs (SPEC §3 "Signed URLs").
//!
//! With `THUMB_SIGNING_KEY` set, a thumbnail URL outside a profile's listed
//! sizes (or one that sets `quality`) must carry `sig`: base64url, without
//! padding, of HMAC-SHA256(key, canonical), where canonical is the request
//! path as sent, `?`, and every query parameter but `sig` sorted by name then
//! value, each percent-decoded and re-encoded the one way (uppercase hex for
//! every byte outside `A-Za-z0-9-._~`). The canonical form makes a signature
//! independent of parameter order and of how a client escaped the values, so
//! application code in any language can sign without matching our encoder.
//!
//! Without this, anyone could make the service render and store every width,
//! format and quality of every image (a variant flood).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use sha2::Sha256;

/// Bytes kept as they are in canonical values: `A-Za-z0-9-._~` (RFC 3986 unreserved).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The query parameter carrying the signature.
pub const SIG_PARAM: &str = "sig";

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The URL needs a signature and has none.
    #[error("this thumbnail URL must be signed: add 'sig' (see THUMB_SIGNING_KEY)")]
    Missing,
    /// The signature does not match the URL.
    #[error("the signature does not match this URL")]
    Invalid,
}

/// Signs and verifies thumbnail URLs with `THUMB_SIGNING_KEY`.
#[derive(Clone)]
pub struct UrlSignature {
    key: Vec<u8>,
}

impl std::fmt::Debug for UrlSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSignature(<redacted>)")
    }
}

/// Percent-decodes one query component, `+` being a space (HTML forms).
fn decode(component: &str) -> Vec<u8> {
    let spaced = component.replace('+', " ");
    percent_decode(spaced.as_bytes()).collect()
}

fn encode(bytes: &[u8]) -> String {
    // Bytes, not text: a value that is not UTF-8 is still canonical. Non-ASCII
    // bytes are always escaped, with uppercase hex.
    percent_encode(bytes, ENCODE).to_string()
}

/// The canonical string of a request: `path` as sent, `?`, then the sorted,
/// re-encoded parameters of `query` (without `sig`).
pub fn canonical(path: &str, query: Option<&str>) -> String {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (decode(n), decode(v)),
            None => (decode(p), Vec::new()),
        })
        .filter(|(n, _)| n != SIG_PARAM.as_bytes())
        .collect();
    params.sort();
    let joined: Vec<String> = params.iter().map(|(n, v)| format!("{}={}", encode(n), encode(v))).collect();
    format!("{path}?{}", joined.join("&"))
}

/// The `sig` value of a query, if any (the last one wins, as for other parameters).
fn sig_of(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(n, _)| decode(n) == SIG_PARAM.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(&decode(v)).into_owned())
        .next_back()
}

impl UrlSignature {
    /// A signer with the UTF-8 bytes of `key` (not hex-decoded).
    pub fn new(key: &str) -> Self {
        Self { key: key.as_bytes().to_vec() }
    }

    fn mac(&self, canonical: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        mac
    }

    /// The signature of a request.
    pub fn sign(&self, path: &str, query: Option<&str>) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(&canonical(path, query)).finalize().into_bytes())
    }

    /// Checks the `sig` of a request, in constant time.
    pub fn verify(&self, path: &str, query: Option<&str>) -> Result<(), SignatureError> {
        let sig = sig_of(query).ok_or(SignatureError::Missing)?;
        let bytes = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')).map_err(|_| SignatureError::Invalid)?;
        self.mac(&canonical(path, query)).verify_slice(&bytes).map_err(|_| SignatureError::Invalid)
    }

    /// `path_and_query` with its `sig` appended (an existing `sig` is replaced).
    pub fn sign_url(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let kept: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && decode(p.split_once('=').map_or(p, |(n, _)| n)) != SIG_PARAM.as_bytes())
            .collect();
        let query = kept.join("&");
        let sig = self.sign(path, Some(&query));
        if query.is_empty() { format!("{path}?{SIG_PARAM}={sig}") } else { format!("{path}?{query}&{SIG_PARAM}={sig}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_test_vector() {
        let s = UrlSignature::new("k-test-0123");
        let query = Some("width=300&quality=70&format=webp");
        assert_eq!(canonical("/thumb/photo/abc", query), "/thumb/photo/abc?format=webp&quality=70&width=300");
        assert_eq!(s.sign("/thumb/photo/abc", query), "uuOvpp9D-NER2LBZV9V8Fi0CJBRNc7BDlyfD70GlJJo");
        let signed = s.sign_url("/thumb/photo/abc?width=300&quality=70&format=webp");
        assert!(signed.ends_with("&sig=uuOvpp9D-NER2LBZV9V8Fi0CJBRNc7BDlyfD70GlJJo"), "{signed}");
    }

    #[test]
    fn canonical_form_ignores_order_and_escaping() {
        assert_eq!(canonical("/p", Some("b=2&a=1&sig=x")), "/p?a=1&b=2");
        assert_eq!(canonical("/p", Some("a=x%20y")), canonical("/p", Some("a=x+y")));
        assert_eq!(canonical("/p", Some("a=%7e%2d")), "/p?a=~-");
        assert_eq!(canonical("/p", Some("a=%c3%a9")), "/p?a=%C3%A9");
        assert_eq!(canonical("/p", Some("a=2&a=1")), "/p?a=1&a=2");
        assert_eq!(canonical("/p", Some("flag&&a=")), "/p?a=&flag=");
        assert_eq!(canonical("/p", None), "/p?");
        assert_eq!(canonical("/p", Some("a=%FF")), "/p?a=%FF", "bytes that are not UTF-8 stay canonical");
    }

    #[test]
    fn verification() {
        let s = UrlSignature::new("key");
        let url = s.sign_url("/thumb/photo/abc?width=300");
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(s.verify(path, Some(query)), Ok(()));
        // Order and escaping do not matter; any change of a value does.
        let sig = query.split("sig=").nth(1).unwrap();
        assert_eq!(s.verify(path, Some(&format!("sig={sig}&width=300"))), Ok(()));
        assert_eq!(s.verify(path, Some(&format!("width=301&sig={sig}"))), Err(SignatureError::Invalid));
        assert_eq!(s.verify("/thumb/photo/abd", Some(query)), Err(SignatureError::Invalid));
        assert_eq!(s.verify(path, Some("width=300")), Err(SignatureError::Missing));
        assert_eq!(s.verify(path, Some("width=300&sig=***")), Err(SignatureError::Invalid));
        assert_eq!(UrlSignature::new("other").verify(path, Some(query)), Err(SignatureError::Invalid));
    }
}
