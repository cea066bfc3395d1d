//! Placeholder until the image pipeline lands: only the output format enum.

/// An output format for thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Lossy WebP.
    Webp,
    /// Baseline JPEG, 4:2:0.
    Jpeg,
    /// PNG.
    Png,
}

impl OutputFormat {
    /// The MIME type.
    pub fn mime(&self) -> &'static str {
        match self {
            Self::Webp => "image/webp",
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }

    /// The canonical file extension.
    pub fn extension(&self) -> &'static str {
        match self {
            Self::Webp => "webp",
            Self::Jpeg => "jpeg",
            Self::Png => "png",
        }
    }

    /// Parses `webp`, `jpeg`, `jpg` or `png`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "webp" => Some(Self::Webp),
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            _ => None,
        }
    }
}
