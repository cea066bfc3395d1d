//! Pure, synchronous image pipeline: sniff → probe → decode → resize → colour
//! manage → orient → encode.
//!
//! Nothing in here does I/O, spawns threads or is async; callers run
//! [`thumbnail`] on a blocking thread pool. Every public entry point is
//! panic-free: C decoders report errors by unwinding and any unexpected panic
//! in pure-Rust code is caught at the boundary and turned into an
//! [`ImageError`]. This relies on the final binary being built with
//! `panic = "unwind"` (the default); with `panic = "abort"` a corrupt JPEG
//! would abort the process.
//!
//! Pipeline order is chosen for speed: shrink as early as possible (JPEG DCT
//! scaling inside the decoder, then a Lanczos3 resize), and do colour
//! management and EXIF orientation on the small result, where they cost
//! almost nothing.

mod color;
mod decode;
mod encode;
mod resize;
mod sniff;
mod webp;

#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use sniff::{probe, sniff};

/// Container format of a source image, recognised from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// JPEG / JFIF / EXIF (`FF D8 FF`).
    Jpeg,
    /// PNG (also APNG, of which only the default image is used).
    Png,
    /// WebP (`RIFF....WEBP`), lossy, lossless or extended.
    Webp,
    /// GIF87a / GIF89a.
    Gif,
    /// AVIF (ISO-BMFF with an `avif`/`avis` brand). Probed, not decoded.
    Avif,
    /// HEIF/HEIC (ISO-BMFF with a HEIF brand). Probed, not decoded.
    Heif,
    /// Windows bitmap (`BM`).
    Bmp,
    /// TIFF, either byte order. Probed, not decoded.
    Tiff,
}

impl SourceFormat {
    /// Lower-case short name, e.g. for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "jpeg",
            SourceFormat::Png => "png",
            SourceFormat::Webp => "webp",
            SourceFormat::Gif => "gif",
            SourceFormat::Avif => "avif",
            SourceFormat::Heif => "heif",
            SourceFormat::Bmp => "bmp",
            SourceFormat::Tiff => "tiff",
        }
    }

    /// MIME type of the source format.
    pub fn mime(&self) -> &'static str {
        match self {
            SourceFormat::Jpeg => "image/jpeg",
            SourceFormat::Png => "image/png",
            SourceFormat::Webp => "image/webp",
            SourceFormat::Gif => "image/gif",
            SourceFormat::Avif => "image/avif",
            SourceFormat::Heif => "image/heif",
            SourceFormat::Bmp => "image/bmp",
            SourceFormat::Tiff => "image/tiff",
        }
    }

    /// Whether [`thumbnail`] can decode this format (the others are only
    /// recognised and probed, and give [`ImageError::Unsupported`]).
    pub fn is_decodable(&self) -> bool {
        matches!(
            self,
            SourceFormat::Jpeg | SourceFormat::Png | SourceFormat::Webp | SourceFormat::Gif | SourceFormat::Bmp
        )
    }
}

/// Encoding of a generated thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// Lossy WebP (libwebp 1.6, method 4); keeps alpha.
    Webp,
    /// Baseline JPEG, 4:2:0; alpha is flattened onto white.
    Jpeg,
    /// PNG, fast deflate; keeps alpha.
    Png,
    /// AVIF (AV1 still image, rav1e at its fastest preset); keeps alpha.
    /// Several times slower to make than WebP, so never chosen by `auto`.
    Avif,
}

impl OutputFormat {
    /// MIME type for the `Content-Type` header.
    pub fn mime(&self) -> &'static str {
        match self {
            OutputFormat::Webp => "image/webp",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Avif => "image/avif",
        }
    }

    /// The format's name, used as the extension of stored variants (`webp`, `jpeg`, `png`).
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Webp => "webp",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Avif => "avif",
        }
    }

    /// Parses a format name as used in URLs: `webp`, `jpeg`, `jpg`, `png`,
    /// `avif` (ASCII case-insensitive). Anything else is `None`.
    pub fn from_name(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("webp") {
            Some(OutputFormat::Webp)
        } else if s.eq_ignore_ascii_case("jpeg") || s.eq_ignore_ascii_case("jpg") {
            Some(OutputFormat::Jpeg)
        } else if s.eq_ignore_ascii_case("png") {
            Some(OutputFormat::Png)
        } else if s.eq_ignore_ascii_case("avif") {
            Some(OutputFormat::Avif)
        } else {
            None
        }
    }
}

/// Resource limits applied before and during decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `width * height` of the stored source image. Checked
    /// from the header before any pixel is decoded.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: 100_000_000 }
    }
}

/// What [`probe`] learns from a header: format and stored pixel dimensions
/// (before any EXIF orientation is applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Sniffed container format.
    pub format: SourceFormat,
    /// Stored width in pixels.
    pub width: u32,
    /// Stored height in pixels.
    pub height: u32,
}

/// What thumbnail to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbSpec {
    /// Target width in pixels of the displayed (EXIF-oriented) image. The
    /// height follows from the aspect ratio. Never upscales: a narrower
    /// source keeps its own size.
    pub width: u32,
    /// Output encoding.
    pub format: OutputFormat,
    /// Encoder quality 0–100 (values above 100 are treated as 100; JPEG
    /// treats 0 as 1). Ignored for PNG.
    pub quality: u8,
}

/// An encoded thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded file, with no metadata (no EXIF, XMP or ICC).
    pub bytes: Vec<u8>,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Encoding of `bytes`.
    pub format: OutputFormat,
}

/// Why an image could not be probed or thumbnailed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image, or a format this module does not decode.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The source has more pixels than [`Limits::max_pixels`] (or a decoder
    /// hit its memory limit).
    #[error("image too large: {width}x{height} exceeds {max_pixels} pixels")]
    TooLarge {
        /// Stored width from the header.
        width: u32,
        /// Stored height from the header.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// A recognised image whose data is corrupt.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The encoder failed (e.g. output dimensions beyond the format's maximum).
    #[error("cannot encode image: {0}")]
    Encode(String),
    /// The [`ThumbSpec`] itself is invalid (e.g. width 0).
    #[error("invalid thumbnail request: {0}")]
    InvalidSpec(String),
}

/// Makes a thumbnail of `bytes`: `spec.width` wide (never wider than the
/// source), EXIF orientation applied, converted to sRGB, encoded as
/// `spec.format` without any metadata.
///
/// The source's header is checked against `limits` before anything is
/// decoded, so oversized images are refused in microseconds.
pub fn thumbnail(bytes: &[u8], spec: &ThumbSpec, limits: &Limits) -> Result<Thumbnail, ImageError> {
    // The C decoders unwind on error (caught closer to them); this outer
    // guard turns any unexpected panic anywhere else into an error as well,
    // so a hostile upload can never take a worker thread down.
    catch_unwind(AssertUnwindSafe(|| thumbnail_inner(bytes, spec, limits)))
        .unwrap_or_else(|payload| Err(ImageError::Decode(panic_message(payload.as_ref()))))
}

fn thumbnail_inner(bytes: &[u8], spec: &ThumbSpec, limits: &Limits) -> Result<Thumbnail, ImageError> {
    if spec.width == 0 {
        return Err(ImageError::InvalidSpec("width must be at least 1".into()));
    }
    let info = probe(bytes)?;
    check_limits(&info, limits)?;
    if !info.format.is_decodable() {
        return Err(ImageError::Unsupported(format!("{} decoding is not supported", info.format.name())));
    }

    let decoded = decode::decode(bytes, &info, spec.width, limits)?;
    let orientation = decoded.orientation;

    // Output size is derived from the header dimensions, not from the
    // (possibly DCT-scaled) decoded bitmap, so the aspect ratio is exact.
    let (out_w, out_h) = target_size(info.width, info.height, orientation, spec.width);
    // Size to resize to in stored (pre-orientation) space.
    let (stored_w, stored_h) = if orientation.swaps_axes() { (out_h, out_w) } else { (out_w, out_h) };

    let mut bitmap = resize::resize(decoded.bitmap, stored_w, stored_h)?;
    if let Some(icc) = decoded.icc.as_deref() {
        color::to_srgb(&mut bitmap, icc);
    }
    let bitmap = resize::orient(bitmap, orientation);
    debug_assert_eq!((bitmap.width, bitmap.height), (out_w, out_h));

    let bytes = encode::encode(&bitmap, spec.format, spec.quality.min(100))?;
    Ok(Thumbnail { bytes, width: bitmap.width, height: bitmap.height, format: spec.format })
}

fn check_limits(info: &ImageInfo, limits: &Limits) -> Result<(), ImageError> {
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooLarge { width: info.width, height: info.height, max_pixels: limits.max_pixels });
    }
    Ok(())
}

/// Output size for a stored `w`x`h` image shown with `orientation` and asked
/// to be `target_w` wide: aspect ratio kept, height rounded and at least 1,
/// never larger than the (oriented) source.
pub(crate) fn target_size(w: u32, h: u32, orientation: Orientation, target_w: u32) -> (u32, u32) {
    let (ow, oh) = if orientation.swaps_axes() { (h, w) } else { (w, h) };
    if target_w >= ow {
        return (ow, oh);
    }
    let th = (u64::from(oh) * u64::from(target_w) + u64::from(ow) / 2) / u64::from(ow);
    (target_w, th.clamp(1, u64::from(oh)) as u32)
}

/// EXIF orientation, 1–8 as in the EXIF spec (1 = as stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orientation(u8);

impl Orientation {
    pub(crate) const NORMAL: Orientation = Orientation(1);

    /// Any value outside 1–8 is treated as "as stored", like browsers do.
    pub(crate) fn from_exif(v: u16) -> Self {
        if (1..=8).contains(&v) { Orientation(v as u8) } else { Orientation::NORMAL }
    }

    pub(crate) fn value(self) -> u8 {
        self.0
    }

    /// Orientations 5–8 transpose the image (width and height swap).
    pub(crate) fn swaps_axes(self) -> bool {
        self.0 >= 5
    }
}

/// An 8-bit RGB or RGBA pixel buffer, rows tightly packed.
#[derive(Debug, Clone)]
pub(crate) struct Bitmap {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// 3 (RGB) or 4 (RGBA, straight alpha).
    pub(crate) channels: u8,
    pub(crate) data: Vec<u8>,
}

impl Bitmap {
    pub(crate) fn has_alpha(&self) -> bool {
        self.channels == 4
    }
}

/// Extracts the message from a panic payload (`&str` or `String`, which is
/// what both `panic!` and mozjpeg's `resume_unwind` carry).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "decoder panicked".to_string()
    }
}
