//! Media types: the one list of types MediaFlow knows, their canonical names
//! and extensions, one sniffer, and the one rule that decides whether a
//! profile allows a type — used by profile loading, presign, verification at
//! complete, POST /thumb and originals serving alike.
//!
//! One rule matters because two drifted before: a profile listing
//! `image/jpg` refused every JPEG presign while POST /thumb accepted the same
//! JPEG. Now profiles must list canonical names (an alias is refused at load
//! with the canonical one as a hint), and a type a client declares is
//! resolved through the same table before it is compared.

use std::fmt;

/// Whether a type is a still image or a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaClass {
    /// Still (or animated) images.
    Image,
    /// Videos.
    Video,
}

/// A media type MediaFlow knows.
#[derive(Debug, PartialEq, Eq)]
pub struct MediaType {
    /// The canonical name, e.g. `image/jpeg`.
    pub mime: &'static str,
    /// Image or video.
    pub class: MediaClass,
    /// Extensions, the usual one first (`jpg`, `jpeg`, …).
    pub extensions: &'static [&'static str],
    /// Other spellings seen in the wild (`image/jpg`), accepted from clients
    /// and refused in profiles.
    pub aliases: &'static [&'static str],
}

impl MediaType {
    /// The usual extension (for keys with `{ext}` when the client sends none).
    pub fn extension(&self) -> &'static str {
        self.extensions[0]
    }

    /// Whether `ext` (any case, without the dot) is one of this type's.
    pub fn has_extension(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mime)
    }
}

/// Every type MediaFlow knows.
pub static KNOWN: &[MediaType] = &[
    MediaType {
        mime: "image/jpeg",
        class: MediaClass::Image,
        extensions: &["jpg", "jpeg", "jpe", "jfif"],
        aliases: &["image/jpg", "image/pjpeg", "image/jpe"],
    },
    MediaType { mime: "image/png", class: MediaClass::Image, extensions: &["png"], aliases: &["image/x-png"] },
    MediaType { mime: "image/webp", class: MediaClass::Image, extensions: &["webp"], aliases: &["image/x-webp"] },
    MediaType { mime: "image/gif", class: MediaClass::Image, extensions: &["gif"], aliases: &[] },
    MediaType { mime: "image/avif", class: MediaClass::Image, extensions: &["avif"], aliases: &[] },
    MediaType {
        mime: "image/bmp",
        class: MediaClass::Image,
        extensions: &["bmp", "dib"],
        aliases: &["image/x-bmp", "image/x-ms-bmp"],
    },
    MediaType { mime: "image/heic", class: MediaClass::Image, extensions: &["heic"], aliases: &[] },
    MediaType { mime: "image/heif", class: MediaClass::Image, extensions: &["heif"], aliases: &[] },
    MediaType { mime: "image/tiff", class: MediaClass::Image, extensions: &["tif", "tiff"], aliases: &[] },
    MediaType {
        mime: "video/mp4",
        class: MediaClass::Video,
        extensions: &["mp4", "m4v"],
        aliases: &["video/x-m4v", "video/m4v"],
    },
    MediaType {
        mime: "video/quicktime",
        class: MediaClass::Video,
        extensions: &["mov", "qt"],
        aliases: &["video/mov"],
    },
    MediaType { mime: "video/webm", class: MediaClass::Video, extensions: &["webm"], aliases: &[] },
    MediaType {
        mime: "video/x-matroska",
        class: MediaClass::Video,
        extensions: &["mkv"],
        aliases: &["video/mkv", "video/matroska"],
    },
];

/// Why a type named in a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    /// Another spelling of a known type.
    #[error("'{given}' is another spelling of '{canonical}': write '{canonical}'")]
    Alias {
        /// As written.
        given: String,
        /// The canonical name.
        canonical: &'static str,
    },
    /// Not a type MediaFlow knows.
    #[error("'{0}' is not a media type MediaFlow knows (known: {known})", known = known_list())]
    Unknown(String),
}

/// The known canonical names, comma-separated.
pub fn known_list() -> String {
    KNOWN.iter().map(|t| t.mime).collect::<Vec<_>>().join(", ")
}

/// How many leading bytes identify every type here (verification reads no
/// more of a video).
pub const SNIFF_LEN: u64 = 512;

/// The essence of a type as sent: lowercase, without parameters (`; charset=…`).
fn essence(mime: &str) -> String {
    mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A type as a profile must write it: canonical names only.
pub fn canonical(mime: &str) -> Result<&'static MediaType, MimeError> {
    let m = essence(mime);
    if let Some(t) = KNOWN.iter().find(|t| t.mime == m) {
        return Ok(t);
    }
    match KNOWN.iter().find(|t| t.aliases.contains(&m.as_str())) {
        Some(t) => Err(MimeError::Alias { given: mime.to_owned(), canonical: t.mime }),
        None => Err(MimeError::Unknown(mime.to_owned())),
    }
}

/// A type as a client declares it: canonical names and aliases alike.
pub fn resolve(mime: &str) -> Option<&'static MediaType> {
    let m = essence(mime);
    KNOWN.iter().find(|t| t.mime == m || t.aliases.contains(&m.as_str()))
}

/// What the bytes are, from their magic numbers (the first few hundred bytes
/// are enough): the image formats by the image module's own sniffer (the one
/// the pipeline decodes by), videos by `infer`'s container signatures.
pub fn sniff(head: &[u8]) -> Option<&'static MediaType> {
    use crate::image::SourceFormat;
    if let Some(format) = crate::image::sniff(head) {
        let mime = match format {
            SourceFormat::Heif if heic_brand(head) => "image/heic",
            other => other.mime(),
        };
        return resolve(mime);
    }
    infer::get(head).and_then(|t| resolve(t.mime_type())).filter(|t| t.class == MediaClass::Video)
}

/// HEIF files whose brands say HEVC-coded (`heic`, `heix`): `image/heic`.
fn heic_brand(head: &[u8]) -> bool {
    head.get(8..12).is_some_and(|b| matches!(b, b"heic" | b"heix" | b"hevc" | b"hevx"))
}

/// The one rule: whether `allowed` (a profile's canonical list) covers `mime`
/// (as a client declared it, or as sniffed).
pub fn allows(allowed: &[String], mime: &str) -> bool {
    resolve(mime).is_some_and(|t| allowed.iter().any(|a| a == t.mime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_write_canonical_names() {
        assert_eq!(canonical("image/jpeg").unwrap().mime, "image/jpeg");
        assert_eq!(canonical("Image/WebP").unwrap().mime, "image/webp");
        assert_eq!(canonical("video/webm").unwrap().mime, "video/webm");
        let e = canonical("image/jpg").unwrap_err();
        assert_eq!(e, MimeError::Alias { given: "image/jpg".into(), canonical: "image/jpeg" });
        assert!(e.to_string().contains("write 'image/jpeg'"), "{e}");
        let e = canonical("application/x-evil").unwrap_err();
        assert!(e.to_string().contains("image/jpeg, image/png"), "the list of known types: {e}");
        for required in [
            "image/jpeg",
            "image/png",
            "image/webp",
            "image/gif",
            "image/avif",
            "image/bmp",
            "video/mp4",
            "video/quicktime",
            "video/webm",
        ] {
            assert!(canonical(required).is_ok(), "{required}");
        }
    }

    #[test]
    fn one_rule_for_declared_and_sniffed_types() {
        let allowed = vec!["image/jpeg".to_owned(), "image/png".to_owned()];
        assert!(allows(&allowed, "image/jpeg"));
        assert!(allows(&allowed, "image/jpg"), "an alias a client sends");
        assert!(allows(&allowed, "IMAGE/JPEG; charset=binary"));
        assert!(!allows(&allowed, "image/webp"));
        assert!(!allows(&allowed, "text/html"));
    }

    #[test]
    fn sniffing() {
        let jpeg = [0xff, 0xd8, 0xff, 0xe0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
        assert_eq!(sniff(&jpeg).map(|t| t.mime), Some("image/jpeg"));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").map(|t| t.mime), Some("image/png"));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0").map(|t| t.mime), Some("image/gif"));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom").map(|t| t.mime), Some("video/mp4"));
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  \0\0\0\0qt  ").map(|t| t.mime), Some("video/quicktime"));
        let webm =
            b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm";
        assert_eq!(sniff(webm).map(|t| t.mime), Some("video/webm"));
        assert_eq!(sniff(b"<html><script>alert(1)</script>"), None);
        assert_eq!(sniff(b"%PDF-1.7"), None, "not a media type");
    }

    #[test]
    fn extensions() {
        let jpeg = canonical("image/jpeg").unwrap();
        assert_eq!(jpeg.extension(), "jpg");
        assert!(jpeg.has_extension("JPEG") && jpeg.has_extension("jpg"));
        assert!(!jpeg.has_extension("html"));
    }
}
