//! The upload token parser: any string is refused or verified, never a panic;
//! a token survives only if its signature is right.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use mediaflow::uploads::{TokenSigner, UploadClaims};

fuzz_target!(|data: &[u8]| {
    let signer = TokenSigner::new(b"fuzzing-secret-0123456789");
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(claims) = signer.verify(text, now) {
            // Only a token this signer issued verifies: re-issuing gives a valid token too.
            assert!(signer.verify(&signer.issue(&claims), now).is_ok());
        }
    }
    // Claims built from the input round-trip.
    let claims = UploadClaims {
        // Keys are at most 1024 bytes (ObjectKey); the token must carry any such key.
        object_key: String::from_utf8_lossy(&data[..data.len().min(1024)]).chars().take(1024).collect(),
        upload_id: "u".into(),
        profile: "p".into(),
        mime: "image/png".into(),
        size: data.len() as u64 + 1,
        part_size: 5 << 20,
        expires: 2_000_000,
    };
    let token = signer.issue(&claims);
    assert_eq!(signer.verify(&token, now).unwrap(), claims);
});
