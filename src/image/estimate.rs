//! The memory a render needs, priced from the header before decoding.
//!
//! A render is a sequence of stages; each stage's buffers are made, used and
//! freed before the next stage's biggest ones exist, so the peak is the
//! source plus the costliest stage, where each stage counts every buffer
//! alive while it runs:
//!
//! - decode: the decoder's own working memory (libjpeg's coefficient buffer
//!   for progressive JPEGs, png's row buffers, the `image` crate decoders'
//!   planes) plus what it has produced so far: the whole decoded image for
//!   the non-streaming decoders, otherwise the box-shrink's running sums and
//!   the shrunk image;
//! - resize: the shrunk image, its premultiplied copy (RGBA), the Lanczos3
//!   intermediate and the resized image;
//! - encode: the resized image, one copy (colour conversion, orientation,
//!   alpha flattening), the saliency map of a smart crop (8 bytes a pixel of
//!   the resized image), the cropped window and the encoder's buffers and
//!   output.
//!
//! Sizes are those the [`Geometry`] decides, which the decoders follow, so
//! the estimate describes the work that will be done. The constants were
//! measured (peak RSS of single renders, `examples/render_memory.rs`, see
//! docs/limits.md) and rounded up: the estimate is meant to be above the
//! real peak, never below.
//!
//! An animation made into an animated WebP ([`Geometry::frames`] > 1) is
//! decoded one frame at a time, each frame going through all the stages
//! before the next is decoded, so the stages are those of one frame (with
//! the animation decoder's own canvases: every frame is composited onto a
//! full RGBA canvas) plus what the whole animation holds from its first
//! frame to its end ([`MemoryEstimate::animation`]): libwebp's animation
//! encoder (a few canvases of the output size and its candidate encodings)
//! and the compressed frames, which the file is assembled from at the end,
//! beside them. A cover box's crop is cut after the resize, so the stages
//! price the image resized to cover the box, then the window.

use super::{Geometry, ImageInfo, OutputFormat, SourceFormat, decode};

/// Peak memory of one render, in bytes, by stage. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryEstimate {
    /// The source file, held for the whole render, and the render's fixed
    /// overhead.
    pub source: u64,
    /// Decoding, up to and including the box pre-shrink.
    pub decode: u64,
    /// The Lanczos3 resize.
    pub resize: u64,
    /// Colour conversion, orientation, the crop and encoding.
    pub encode: u64,
    /// An animation only: what is held from the first frame to the end
    /// (the animation encoder and the compressed frames). 0 for one frame.
    pub animation: u64,
}

impl MemoryEstimate {
    /// The most the render holds at once: the source (and an animation's
    /// encoder) plus its costliest stage.
    pub fn peak(&self) -> u64 {
        self.source + self.animation + self.decode.max(self.resize).max(self.encode)
    }
}

/// Fixed overhead of any decoder (tables, small buffers, the allocator's
/// rounding): 1 MiB.
const DECODER_FIXED: u64 = 1 << 20;

/// Fixed overhead of a render (measured 2–4 MiB on small renders: codec
/// code paged in, allocator arenas): 4 MiB, counted once.
const RENDER_FIXED: u64 = 4 << 20;

/// libjpeg keeps a few rows of 8×8 blocks at full width for each component
/// (the MCU row being decoded, and the context rows fancy upsampling needs),
/// in bytes per column per component.
const LIBJPEG_ROW_BYTES: u64 = 48;

/// Rows of scanlines read from libjpeg at once (see decode.rs): at most 64,
/// at most 256 KiB.
const JPEG_CHUNK_BYTES: u64 = 256 << 10;

/// image-webp beyond its output, per pixel: lossy keeps YUV planes (1.6
/// measured), lossless without alpha an ARGB buffer (4), lossy with alpha
/// also decodes the alpha plane through a lossless ARGB buffer (6.5).
fn webp_work_per_pixel(alpha: bool) -> u64 {
    if alpha { 7 } else { 4 }
}

/// Encoder working memory per output pixel, beyond the image given to it
/// and its output: libwebp's YUVA picture and analysis buffers; rav1e's
/// 10-bit planes, reference and reconstruction frames; jpeg-encoder's
/// component blocks; png's filter rows (per row, so nearly nothing).
/// Measured at 2560×1600 RGB: libwebp 4.1, jpeg-encoder under 1, png 4
/// (with its output), rav1e 40.
fn encoder_work_per_pixel(format: OutputFormat) -> u64 {
    match format {
        OutputFormat::Webp => 5,
        OutputFormat::Jpeg => 2,
        OutputFormat::Png => 2,
        OutputFormat::Avif => 44,
    }
}

/// Largest output the encoders write per pixel (incompressible noise at
/// quality 100 comes close to the raw size; AVIF and WebP stay below it).
fn output_per_pixel(format: OutputFormat, channels: u64) -> u64 {
    match format {
        OutputFormat::Png => channels + 1,
        _ => channels,
    }
}

/// libwebp's animation encoder per output pixel, beyond the compressed
/// frames: three ARGB canvases (the frame being added, the previous one and
/// its copy), the ARGB picture of each of its two candidate encodings (key
/// frame, sub-frame) with the lossy encoder's working memory for each.
const ANIM_ENCODER_PER_PIXEL: u64 = 3 * 4 + 2 * (4 + 5);

/// Most bytes a lossy animation frame compresses to, per pixel: noise at
/// quality 100 comes close to it, real frames stay far below.
const ANIM_OUTPUT_PER_PIXEL: u64 = 4;

/// The bytes of `(w, h)` pixels at `c` bytes each.
fn px((w, h): (u32, u32)) -> u64 {
    u64::from(w) * u64::from(h)
}

/// The peak memory of rendering `info` through `g` into `format`, from a
/// source of `source_len` bytes.
pub fn estimate(info: &ImageInfo, g: &Geometry, format: OutputFormat, source_len: u64) -> MemoryEstimate {
    let c = u64::from(g.channels);
    let animated = g.frames > 1;
    let shrunk = px(g.shrunk) * c;
    let shrinking = g.shrink != (1, 1);
    // The band's running sums (u64 per output column and channel).
    let band = if shrinking { u64::from(g.shrunk.0) * c * 8 } else { 0 };
    // An animation's decoder keeps its canvas between frames, and adds the
    // frame it decodes and the composited canvas it hands over.
    let (keeps, making) = if animated { animation_decoder(info) } else { (0, decoder_work(info, g)) };
    let whole = if g.streamed { 0 } else { px(g.decoded) * c };
    let decode = keeps + making + whole + band + shrunk;

    let resize = keeps + resize_cost(g);

    let out_px = px(g.output);
    // The smart crop's luma and score per pixel of the resized image.
    let smart = if g.output != g.displayed { px(g.displayed) * 8 } else { 0 };
    let encode = keeps
        + px(g.resized) * c * 2
        + smart
        + out_px * (c + encoder_work_per_pixel(format) + output_per_pixel(format, c))
        + DECODER_FIXED;

    // The compressed frames are held until the file is assembled from
    // them, beside them.
    let animation = if animated {
        out_px * ANIM_ENCODER_PER_PIXEL + 2 * u64::from(g.frames) * out_px * ANIM_OUTPUT_PER_PIXEL + DECODER_FIXED
    } else {
        0
    };
    MemoryEstimate { source: source_len + RENDER_FIXED, decode, resize, encode, animation }
}

/// The Lanczos3 stage: source, premultiplied copy (alpha only), the
/// intermediate of the first pass (whichever way round), the result, and
/// the tables.
fn resize_cost(g: &Geometry) -> u64 {
    let c = u64::from(g.channels);
    let shrunk = px(g.shrunk) * c;
    if g.shrunk == g.resized {
        return shrunk;
    }
    let premultiplied = if c == 4 { shrunk } else { 0 };
    let intermediate = px((g.resized.0, g.shrunk.1)).max(px((g.shrunk.0, g.resized.1))) * c;
    let tables = (u64::from(g.resized.0) + u64::from(g.resized.1)) * 320;
    shrunk + premultiplied + intermediate + px(g.resized) * c + tables + DECODER_FIXED
}

/// The `image` crate's animation decoders: what they keep between frames,
/// and what decoding one adds (before the canvas it hands over is shrunk).
fn animation_decoder(info: &ImageInfo) -> (u64, u64) {
    let canvas = u64::from(info.width) * u64::from(info.height) * 4;
    let frame = info.max_frame_pixels;
    match info.format {
        // The canvas left by the frames so far; the frame's own RGBA pixels,
        // and the composited canvas (LZW tables and a read buffer besides).
        SourceFormat::Gif => (canvas, frame * 4 + canvas + (64 << 10) + DECODER_FIXED),
        // image-webp's canvas; the frame's planes and RGBA pixels, the
        // canvas copied out, and the `image` crate's RGBA conversion of an
        // RGB one.
        _ => (canvas, frame * (webp_work_per_pixel(true) + 4) + 2 * canvas + DECODER_FIXED),
    }
}

/// What a decoder holds beyond the image it produces.
fn decoder_work(info: &ImageInfo, g: &Geometry) -> u64 {
    let (w, h) = (u64::from(info.width), u64::from(info.height));
    let pixels = w * h;
    let c = u64::from(g.channels);
    DECODER_FIXED
        + match info.format {
            SourceFormat::Jpeg if decode::mozjpeg_decodes(info) && g.streamed => {
                let coefficients = if info.buffered { info.coefficient_blocks * 128 } else { 0 };
                let rows = w * u64::from(info.channels) * LIBJPEG_ROW_BYTES;
                let chunk = (u64::from(g.decoded.0) * 3 * 64).min(JPEG_CHUNK_BYTES.max(u64::from(g.decoded.0) * 3));
                coefficients + rows + chunk
            }
            // zune-jpeg at full size (CMYK/YCCK, 12-bit, or a mozjpeg
            // refusal): a few rows of planes (measured under 1 byte a pixel
            // for a baseline YCCK file), and for progressive files every
            // coefficient (2 bytes per sample).
            SourceFormat::Jpeg => {
                let coefficients = if info.buffered { 2 * u64::from(info.channels.max(1)) } else { 0 };
                pixels * (2 + coefficients)
            }
            SourceFormat::Png => {
                // The png crate keeps the previous and the current raw row and
                // the inflated data not yet consumed (up to 128 KiB, or rows);
                // then its transformed row and our converted one.
                let bytes_per_sample = u64::from(info.bit_depth).div_ceil(8).max(1);
                let raw_row = w * u64::from(info.channels) * bytes_per_sample + 1;
                let rows = 4 * raw_row + (256 << 10) + w * 4 + w * c;
                // Interlaced: the whole 8-bit image is assembled first.
                let whole = if info.buffered { pixels * u64::from(info.channels) } else { 0 };
                rows + whole
            }
            SourceFormat::Gif => {
                // A canvas row, a frame row (or the whole first frame when
                // interlaced: the largest frame, to be safe), LZW tables.
                let frame = if info.buffered { info.max_frame_pixels * 4 } else { 65_535 * 4 };
                w * 4 + frame + (64 << 10)
            }
            SourceFormat::Webp => {
                let per_pixel = webp_work_per_pixel(g.channels == 4);
                // An animation's first frame is decoded beside the canvas.
                let frame = if info.frames > 1 { info.max_frame_pixels * (per_pixel + 4) } else { 0 };
                pixels * per_pixel + frame
            }
            // The decoder's output in its own layout, converted next to it.
            _ => pixels * 4,
        }
}
