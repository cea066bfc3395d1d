//! What an uploaded object really is, from its first bytes (magic numbers).

/// How many leading bytes verification reads (a ranged read, never the object).
pub const SNIFF_LEN: usize = 512;

/// The MIME type the bytes' magic numbers identify, if any (see
/// [`crate::media_type::sniff`]).
pub fn sniff_mime(head: &[u8]) -> Option<&'static str> {
    crate::media_type::sniff(head).map(|t| t.mime)
}

/// Whether an allowed type (as written in a profile) covers a sniffed one.
pub fn same_type(allowed: &str, sniffed: &str) -> bool {
    crate::media_type::allows(&[allowed.to_owned()], sniffed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(sniff_mime(&[0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F', 0]), Some("image/jpeg"));
        assert_eq!(sniff_mime(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some("image/png"));
        assert_eq!(sniff_mime(b"RIFF\x24\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_mime(b"GIF89a\x01\0\x01\0"), Some("image/gif"));
        assert_eq!(sniff_mime(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom"), Some("video/mp4"));
        assert_eq!(sniff_mime(b"\0\0\0\x14ftypqt  \0\0\0\0qt  "), Some("video/quicktime"));
        assert_eq!(
            sniff_mime(
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm"
            ),
            Some("video/webm")
        );
        assert_eq!(sniff_mime(b"random bytes that are nothing"), None);
    }

    #[test]
    fn spellings() {
        assert!(same_type("image/jpeg", "image/jpg"));
        assert!(!same_type("image/png", "image/jpeg"));
    }
}
