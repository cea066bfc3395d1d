//! Pure, synchronous image pipeline: sniff → probe → plan → decode (with a box
//! pre-shrink) → resize → colour manage → orient → encode.
//!
//! Nothing in here does I/O, spawns threads or is async; callers run
//! [`thumbnail`] (or [`plan`], then [`render`] with a [`Cancel`] flag) on a
//! blocking thread pool. [`plan`] checks every limit it can from the header
//! and prices the render's peak memory ([`MemoryEstimate`]) before anything
//! is decoded, so a caller can refuse it or reserve that memory first. Every public entry point is
//! panic-free: C decoders report errors by unwinding and any unexpected panic
//! in pure-Rust code is caught at the boundary and turned into an
//! [`ImageError`]. This relies on the final binary being built with
//! `panic = "unwind"` (the default); with `panic = "abort"` a corrupt JPEG
//! would abort the process.
//!
//! Pipeline order is chosen for speed and memory: shrink as early as possible
//! (JPEG DCT scaling inside the decoder, an integer box shrink fed row by row
//! by the decoders, then a Lanczos3 resize), and do colour management, EXIF
//! orientation and the crop of a box on the small result, where they cost
//! almost nothing. Sizes, boxes and gravity are of the displayed
//! (EXIF-oriented) image ([`layout`]); a `smart` crop searches the resized
//! image. Animated GIF and WebP sources made into WebP stay animated: their
//! frames are decoded one at a time and go through the same geometry into
//! libwebp's animation encoder (`anim.rs`).

mod anim;
mod cancel;
mod color;
mod dc_scans;
mod decode;
mod encode;
mod estimate;
mod geometry;
mod master;
mod resize;
mod shrink;
mod sniff;
mod webp;

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use anim::loop_count;
pub use cancel::Cancel;
pub use estimate::{MemoryEstimate, estimate};
pub use geometry::{Fit, Gravity, Layout, Size, SmartStrategy, layout, place, smart_window};
pub use master::{Master, decode_master, master_plan, plan_from_master, render_from_master};
pub use sniff::{probe, sniff};

/// Whether libjpeg-turbo's SIMD code (IDCT, colour conversion, upsampling)
/// is in this binary: mozjpeg-sys leaves it out when `nasm` was missing at
/// build time (see `build.rs`, which refuses such a release build).
pub const JPEG_SIMD: bool = matches!(env!("MEDIAFLOW_JPEG_SIMD").as_bytes(), b"1");

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

    /// Longest side, in pixels, the format can hold: WebP stores 14-bit
    /// sizes; baseline JPEG 16-bit ones; rav1e encodes AVIF up to 65 535,
    /// but libavif and CrabbyAvif (the browsers' decoders) refuse sides over
    /// 32 768 by default, and a file no browser shows is no thumbnail; PNG's
    /// 31-bit sizes are never the limit.
    pub fn max_side(&self) -> u32 {
        match self {
            OutputFormat::Webp => webp::MAX_DIMENSION,
            OutputFormat::Jpeg => 65_535,
            OutputFormat::Avif => 32_768,
            OutputFormat::Png => i32::MAX as u32,
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
    /// Largest accepted `width * height` of the stored source image (of an
    /// animation: of its canvas and of each frame). Checked from the header
    /// before any pixel is decoded.
    pub max_pixels: u64,
    /// Most frames an animation made into an animated WebP may have. The
    /// frames decoded together may also hold at most
    /// [`ANIMATION_PIXEL_FACTOR`] × `max_pixels` canvas pixels.
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: 100_000_000, max_frames: 1000 }
    }
}

/// An animation made into an animated WebP decodes and composites one full
/// canvas per frame, so its work is frames × canvas pixels; this many times
/// [`Limits::max_pixels`] is the most it may be (1 gigapixel by default:
/// 500 frames of 1920 × 1080, a few seconds of decoding). Frames are decoded
/// one at a time, so memory does not grow with it (see `estimate.rs`).
pub const ANIMATION_PIXEL_FACTOR: u64 = 10;

/// Longest side accepted from any source, whatever its pixel count: wider
/// images make every row buffer huge (a 100 000 000 × 1 PNG is one 300 MB
/// row) and no browser or camera makes them.
pub const MAX_SOURCE_SIDE: u32 = 65_535;

/// What [`probe`] learns from a header and the file's block structure:
/// everything a render's memory estimate needs, found without decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Sniffed container format.
    pub format: SourceFormat,
    /// Stored width in pixels (GIF and animated WebP: the canvas).
    pub width: u32,
    /// Stored height in pixels.
    pub height: u32,
    /// Bits per sample as stored: 8 for most sources, 16 for deep PNGs, 12
    /// for 12-bit JPEGs, 1–4 for packed PNG samples.
    pub bit_depth: u8,
    /// Samples per decoded pixel: 1 grey, 2 grey + alpha, 3 colour, 4
    /// colour + alpha (palettes and PNG tRNS expanded), or a JPEG's
    /// component count (4 for CMYK/YCCK).
    pub channels: u8,
    /// Frames of an animation (GIF image blocks, animated WebP ANMF
    /// chunks); 1 for a still image. APNG counts 1: only its default image
    /// is ever decoded.
    pub frames: u32,
    /// The largest single frame's own rectangle, in pixels (GIF and WebP
    /// frames may be larger than the canvas); `width * height` otherwise.
    pub max_frame_pixels: u64,
    /// Whether the decoder must hold the whole image before it can give a
    /// row: progressive or multi-scan JPEG, interlaced PNG, interlaced
    /// first GIF frame.
    pub buffered: bool,
    /// JPEG: 8×8 DCT blocks over all components, rounded to whole MCUs —
    /// what a buffered decode keeps in memory (128 bytes each). 0 otherwise.
    pub coefficient_blocks: u64,
    /// EXIF orientation, 1–8 (1 when there is none).
    pub orientation: u8,
}

/// What thumbnail to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbSpec {
    /// Target size of the displayed (EXIF-oriented) image: a width (the
    /// height follows from the aspect ratio) or a box ([`layout`]). Never
    /// upscales: a smaller source keeps its own size (a cover box then
    /// takes the largest crop of its aspect ratio the source holds).
    pub size: Size,
    /// Output encoding.
    pub format: OutputFormat,
    /// Encoder quality 0–100 (values above 100 are treated as 100; JPEG
    /// treats 0 as 1). Ignored for PNG.
    pub quality: u8,
}

impl ThumbSpec {
    /// A thumbnail `width` pixels wide.
    pub const fn of_width(width: u32, format: OutputFormat, quality: u8) -> Self {
        ThumbSpec { size: Size::Width(width), format, quality }
    }
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
    /// Frames in `bytes`: more than 1 for an animated WebP.
    pub frames: u32,
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
    /// A side of the source is longer than [`MAX_SOURCE_SIDE`].
    #[error("image too large: {width}x{height} has a side over {max_side} pixels")]
    SideTooLong {
        /// Stored width from the header.
        width: u32,
        /// Stored height from the header.
        height: u32,
        /// The limit in force.
        max_side: u32,
    },
    /// The thumbnail would be larger than its format can hold (WebP: 16 383
    /// pixels a side). Found from the header, before decoding.
    #[error("a {width}x{height} {} thumbnail is over the format's limit of {max_side} pixels a side", format.extension())]
    OutputTooLarge {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
        /// The format asked for.
        format: OutputFormat,
        /// That format's limit.
        max_side: u32,
    },
    /// An animation with more frames than [`Limits::max_frames`].
    #[error("the animation has {frames} frames, more than the {max} allowed")]
    TooManyFrames {
        /// Frames found (the header walk's count, or the first one past the cap).
        frames: u32,
        /// The limit in force.
        max: u32,
    },
    /// An animation whose frames together hold more canvas pixels than
    /// [`ANIMATION_PIXEL_FACTOR`] × [`Limits::max_pixels`].
    #[error("the animation has {frames} frames of {width}x{height}: more than {max_pixels} pixels to decode")]
    AnimationTooLarge {
        /// Frames.
        frames: u32,
        /// Canvas width.
        width: u32,
        /// Canvas height.
        height: u32,
        /// The limit in force (frames × canvas pixels).
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
    /// The [`Cancel`] flag was raised; the render stopped where it was.
    #[error("the render was cancelled")]
    Cancelled,
}

impl ImageError {
    /// What the client can do about it, for the errors where there is
    /// something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::OutputTooLarge { width, height, format, .. } => {
                let side = (*width).max(*height);
                let fits: Vec<String> = [OutputFormat::Jpeg, OutputFormat::Avif, OutputFormat::Png, OutputFormat::Webp]
                    .into_iter()
                    .filter(|f| f != format && f.max_side() >= side)
                    .map(|f| match f {
                        OutputFormat::Png => "png".to_owned(),
                        f => format!("{} (up to {} px)", f.extension(), f.max_side()),
                    })
                    .collect();
                let mut hint = format!("{} holds at most {} pixels a side; ", format.extension(), format.max_side());
                if !fits.is_empty() {
                    hint.push_str(&format!("ask for format={}, or ", fits.join(" or format=")));
                }
                hint.push_str("ask for a smaller width");
                Some(hint)
            }
            ImageError::TooLarge { max_pixels, .. } => Some(format!("sources are limited to {max_pixels} pixels")),
            ImageError::SideTooLong { max_side, .. } => {
                Some(format!("sources are limited to {max_side} pixels a side"))
            }
            ImageError::TooManyFrames { max, .. } => Some(format!(
                "animations are limited to {max} frames (MAX_ANIMATION_FRAMES); ask for format=jpeg, png or avif to get the first frame"
            )),
            ImageError::AnimationTooLarge { .. } => {
                Some("ask for format=jpeg, png or avif to get the first frame, or raise MAX_SOURCE_PIXELS".to_owned())
            }
            _ => None,
        }
    }
}

/// Every size a render goes through, decided from the header before any
/// pixel is decoded. [`estimate`] prices it; the decoders follow it, so the
/// estimate and the work cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// JPEG DCT scale numerator (of 8) for the mozjpeg path; 8 elsewhere.
    pub dct_scale: u8,
    /// Size the decoder produces (after DCT scaling), stored orientation.
    pub decoded: (u32, u32),
    /// Integer box pre-shrink factors (x, y); 1 for none.
    pub shrink: (u32, u32),
    /// After the box pre-shrink; equal to `decoded` when there is none.
    pub shrunk: (u32, u32),
    /// After the Lanczos3 resize, stored orientation.
    pub resized: (u32, u32),
    /// The resized image, displayed (EXIF-oriented) orientation: `resized`,
    /// or its transpose.
    pub displayed: (u32, u32),
    /// The thumbnail, displayed orientation: `displayed`, or the window a
    /// cover box crops out of it.
    pub output: (u32, u32),
    /// Frames rendered: 1, or every frame of an animation made into an
    /// animated WebP (its frames are decoded whole, one at a time).
    pub frames: u32,
    /// Channels of the pipeline's bitmaps: 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// Whether the decoder hands rows straight to the pre-shrink (JPEG via
    /// mozjpeg, non-interlaced PNG, GIF) rather than first making the whole
    /// decoded image (WebP, BMP, CMYK JPEG, interlaced PNG).
    pub streamed: bool,
}

/// A render decided from the header: what it makes, how, and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The probed header.
    pub info: ImageInfo,
    /// What to make.
    pub spec: ThumbSpec,
    /// The sizes it goes through.
    pub geometry: Geometry,
    /// Its peak memory.
    pub memory: MemoryEstimate,
}

/// Checks `bytes`' header against `limits` and the output format's own
/// limit, and plans the render (sizes and peak memory) without decoding.
/// Costs microseconds (a GIF or WebP is walked block by block to count its
/// frames).
pub fn plan(bytes: &[u8], spec: &ThumbSpec, limits: &Limits) -> Result<Plan, ImageError> {
    plan_with_margin(bytes, spec, limits, SHRINK_ON_LOAD_MARGIN)
}

/// How much larger than the target (in %, per axis) a JPEG decoded with DCT
/// scaling must stay: the smallest of libjpeg's scales 1/8–8/8 that gives at
/// least this is used, and Lanczos3 does the rest. Chosen by measurement
/// (`bench/shrink-policy.sh`, bench/README.md#shrink-on-load-policy):
/// against 200 % on eleven photographs × 256/512/1024 px, 140 % costs a
/// median 0.01 dB PSNR (two cases lose more than 1 dB, the worst 1.7 dB) and
/// is 18 % faster on a 20 MP baseline JPEG at 512 px (1/8 instead of 1/4);
/// 125 % and 100 % gain 2–3 % more at a median −0.4 and −0.6 dB.
pub const SHRINK_ON_LOAD_MARGIN: u32 = 140;

/// [`plan`] with another shrink-on-load margin than
/// [`SHRINK_ON_LOAD_MARGIN`] (in %, at least 100): `SHRINK_ON_LOAD_MARGIN`
/// in the configuration, and for measuring the policy.
pub fn plan_with_margin(bytes: &[u8], spec: &ThumbSpec, limits: &Limits, margin_pct: u32) -> Result<Plan, ImageError> {
    if spec.size.width() == 0 || spec.size.height() == Some(0) {
        return Err(ImageError::InvalidSpec("width and height must be at least 1".into()));
    }
    let info = probe(bytes)?;
    check_limits(&info, limits)?;
    if !info.format.is_decodable() {
        return Err(ImageError::Unsupported(format!("{} decoding is not supported", info.format.name())));
    }
    let geometry = geometry_with(&info, spec, decode::mozjpeg_decodes(&info), margin_pct);
    if geometry.frames > 1 {
        check_animation(&info, limits)?;
    }
    let (width, height) = geometry.output;
    let max_side = spec.format.max_side();
    if width > max_side || height > max_side {
        return Err(ImageError::OutputTooLarge { width, height, format: spec.format, max_side });
    }
    let memory = estimate(&info, &geometry, spec.format, bytes.len() as u64);
    Ok(Plan { info, spec: *spec, geometry, memory })
}

/// Whether a render of `info` into `format` makes an animation: GIF and
/// animated WebP sources with more than one frame, into WebP. Other outputs
/// take the first frame.
pub fn is_animated_output(info: &ImageInfo, format: OutputFormat) -> bool {
    info.frames > 1 && format == OutputFormat::Webp && matches!(info.format, SourceFormat::Gif | SourceFormat::Webp)
}

/// The sizes a render of `info` for `spec` goes through.
pub fn geometry(info: &ImageInfo, spec: &ThumbSpec) -> Geometry {
    geometry_with(info, spec, decode::mozjpeg_decodes(info), SHRINK_ON_LOAD_MARGIN)
}

/// [`geometry`], with the JPEG path chosen: `dct` for mozjpeg (DCT scaling,
/// rows streamed, the scale chosen by `margin_pct`), else the full-size
/// decode the fallback does.
pub(crate) fn geometry_with(info: &ImageInfo, spec: &ThumbSpec, dct: bool, margin_pct: u32) -> Geometry {
    let orientation = Orientation::from_exif(u16::from(info.orientation));
    let shown = if orientation.swaps_axes() { (info.height, info.width) } else { (info.width, info.height) };
    let layout = layout(shown.0, shown.1, spec.size);
    let (displayed, output) = (layout.resize, layout.output());
    let resized = if orientation.swaps_axes() { (displayed.1, displayed.0) } else { displayed };
    let animated = is_animated_output(info, spec.format);
    let dct = dct && !animated;
    let dct_scale = if dct { decode::jpeg_scale(info.width, info.height, resized.0, resized.1, margin_pct) } else { 8 };
    let scaled = |v: u32| (u64::from(v) * u64::from(dct_scale)).div_ceil(8) as u32;
    let decoded = (scaled(info.width), scaled(info.height));
    let shrink = (shrink::shrink_factor(decoded.0, resized.0), shrink::shrink_factor(decoded.1, resized.1));
    let shrunk = (decoded.0.div_ceil(shrink.0), decoded.1.div_ceil(shrink.1));
    let alpha = animated || info.channels == 2 || (info.channels == 4 && info.format != SourceFormat::Jpeg);
    let streamed = match info.format {
        _ if animated => false,
        SourceFormat::Jpeg => dct,
        SourceFormat::Png => !info.buffered,
        SourceFormat::Gif => true,
        _ => false,
    };
    Geometry {
        dct_scale,
        decoded,
        shrink,
        shrunk,
        resized,
        displayed,
        output,
        frames: if animated { info.frames } else { 1 },
        channels: if alpha { 4 } else { 3 },
        streamed,
    }
}

/// Makes a thumbnail of `bytes`: `spec.size` (never larger than the source),
/// EXIF orientation applied, converted to sRGB, encoded as `spec.format`
/// without any metadata.
///
/// The source's header is checked against `limits` before anything is
/// decoded, so oversized images are refused in microseconds. This is
/// [`plan`] then [`render`], with nothing to cancel it.
pub fn thumbnail(bytes: &[u8], spec: &ThumbSpec, limits: &Limits) -> Result<Thumbnail, ImageError> {
    let plan = plan(bytes, spec, limits)?;
    render(bytes, &plan, &Cancel::new())
}

/// Carries out `plan` on `bytes` (the same bytes it was made from).
///
/// `cancel` is checked between stages and inside them (per band of rows
/// while decoding, per chunk of input in libjpeg, per frame of an
/// animation, by libwebp's progress hook while encoding): once raised, the
/// render stops within a few milliseconds of work and returns
/// [`ImageError::Cancelled`], freeing its buffers.
pub fn render(bytes: &[u8], plan: &Plan, cancel: &Cancel) -> Result<Thumbnail, ImageError> {
    // The C decoders unwind on error (caught closer to them); this outer
    // guard turns any unexpected panic anywhere else into an error as well,
    // so a hostile upload can never take a worker thread down.
    catch_unwind(AssertUnwindSafe(|| {
        if plan.geometry.frames > 1 { anim::render(bytes, plan, cancel) } else { render_still(bytes, plan, cancel) }
    }))
    .unwrap_or_else(|payload| Err(ImageError::Decode(panic_message(payload.as_ref()))))
}

fn render_still(bytes: &[u8], plan: &Plan, cancel: &Cancel) -> Result<Thumbnail, ImageError> {
    cancel.check()?;
    let decoded = decode::decode(bytes, plan, cancel)?;
    resize_and_encode(decoded.bitmap, decoded.icc.as_deref(), plan, cancel)
}

/// A still's steps after decoding (and box-shrinking): Lanczos3 to the
/// planned size, colour, orientation and crop, then the encoder.
pub(crate) fn resize_and_encode(
    shrunk: Bitmap,
    icc: Option<&[u8]>,
    plan: &Plan,
    cancel: &Cancel,
) -> Result<Thumbnail, ImageError> {
    let g = &plan.geometry;
    cancel.check()?;
    let bitmap = resize::resize(shrunk, g.resized.0, g.resized.1)?;
    cancel.check()?;
    let bitmap = finish_frame(bitmap, icc, plan, &mut None);
    debug_assert_eq!((bitmap.width, bitmap.height), g.output);
    cancel.check()?;
    let bytes = encode::encode(&bitmap, plan.spec.format, plan.spec.quality.min(100), cancel)?;
    Ok(Thumbnail { bytes, width: bitmap.width, height: bitmap.height, format: plan.spec.format, frames: 1 })
}

/// The last steps of every frame, on the resized image: colour to sRGB,
/// EXIF orientation, then the crop of a cover box, at `at` or, when it is
/// `None`, where the gravity says (then kept in `at`: an animation crops
/// every frame where its first frame was cropped).
pub(crate) fn finish_frame(mut bitmap: Bitmap, icc: Option<&[u8]>, plan: &Plan, at: &mut Option<(u32, u32)>) -> Bitmap {
    if let Some(icc) = icc {
        color::to_srgb(&mut bitmap, icc);
    }
    let bitmap = resize::orient(bitmap, Orientation::from_exif(u16::from(plan.info.orientation)));
    let g = &plan.geometry;
    if g.output == g.displayed {
        return bitmap;
    }
    let at = *at.get_or_insert_with(|| crop_position(&bitmap, plan));
    geometry::crop(&bitmap, at, g.output)
}

/// Where the crop window of a cover box goes in the resized, oriented image.
pub(crate) fn crop_position(bitmap: &Bitmap, plan: &Plan) -> (u32, u32) {
    let window = plan.geometry.output;
    match plan.spec.size {
        Size::Box { gravity: Gravity::Smart, .. } => geometry::smart_place(bitmap, window),
        Size::Box { gravity, .. } => place(gravity, (bitmap.width, bitmap.height), window),
        Size::Width(_) => place(Gravity::Center, (bitmap.width, bitmap.height), window),
    }
}

/// The source limits: pixel count (of the canvas and of any single frame)
/// and side length.
fn check_limits(info: &ImageInfo, limits: &Limits) -> Result<(), ImageError> {
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > limits.max_pixels || info.max_frame_pixels > limits.max_pixels {
        return Err(ImageError::TooLarge { width: info.width, height: info.height, max_pixels: limits.max_pixels });
    }
    if info.width > MAX_SOURCE_SIDE || info.height > MAX_SOURCE_SIDE {
        return Err(ImageError::SideTooLong { width: info.width, height: info.height, max_side: MAX_SOURCE_SIDE });
    }
    Ok(())
}

/// The limits of an animation made into an animated WebP: the frame count,
/// and the canvas pixels of all frames together (each frame is composited
/// onto a full canvas).
fn check_animation(info: &ImageInfo, limits: &Limits) -> Result<(), ImageError> {
    if info.frames > limits.max_frames {
        return Err(ImageError::TooManyFrames { frames: info.frames, max: limits.max_frames });
    }
    let all = u64::from(info.frames) * u64::from(info.width) * u64::from(info.height);
    let max_pixels = limits.max_pixels.saturating_mul(ANIMATION_PIXEL_FACTOR);
    if all > max_pixels {
        return Err(ImageError::AnimationTooLarge {
            frames: info.frames,
            width: info.width,
            height: info.height,
            max_pixels,
        });
    }
    Ok(())
}

/// Output size for a stored `w`x`h` image shown with `orientation` and asked
/// to be `target_w` wide: aspect ratio kept, height rounded and at least 1,
/// never larger than the (oriented) source.
#[cfg(test)]
pub(crate) fn target_size(w: u32, h: u32, orientation: Orientation, target_w: u32) -> (u32, u32) {
    let (ow, oh) = if orientation.swaps_axes() { (h, w) } else { (w, h) };
    layout(ow, oh, Size::Width(target_w)).output()
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
