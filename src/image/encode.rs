//! Output encoders. None of them is ever given metadata: the thumbnails carry
//! no EXIF (so no GPS), no XMP and no ICC profile — pixels are already sRGB,
//! which is what untagged images are assumed to be.

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

use super::{Bitmap, Cancel, ImageError, OutputFormat, webp};

/// Encodes `bitmap` as `format`. `quality` is 0–100 (unused for PNG).
/// Only the WebP encoder can be interrupted (by `cancel`); the others run
/// to their end, which for the sizes the limits allow is bounded.
pub(crate) fn encode(
    bitmap: &Bitmap,
    format: OutputFormat,
    quality: u8,
    cancel: &Cancel,
) -> Result<Vec<u8>, ImageError> {
    if bitmap.width > format.max_side() || bitmap.height > format.max_side() {
        return Err(ImageError::OutputTooLarge {
            width: bitmap.width,
            height: bitmap.height,
            format,
            max_side: format.max_side(),
        });
    }
    match format {
        OutputFormat::Webp => {
            webp::encode_lossy_cancellable(&bitmap.data, bitmap.width, bitmap.height, bitmap.channels, quality, cancel)
        }
        OutputFormat::Jpeg => encode_jpeg(bitmap, quality),
        OutputFormat::Png => encode_png(bitmap),
        OutputFormat::Avif => encode_avif(bitmap, quality),
    }
}

/// AVIF at rav1e's fastest preset (speed 10): at 512 px that is still
/// several times WebP's time, which is why only an explicit request gets it.
/// 8-bit, alpha kept.
fn encode_avif(bitmap: &Bitmap, quality: u8) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (bitmap.width as usize, bitmap.height as usize);
    let encoder = ravif::Encoder::new()
        .with_quality(f32::from(quality.clamp(1, 100)))
        .with_alpha_quality(f32::from(quality.clamp(1, 100)))
        .with_speed(10)
        .with_num_threads(Some(1));
    let encoded = if bitmap.has_alpha() {
        let px: Vec<ravif::RGBA8> =
            bitmap.data.chunks_exact(4).map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3])).collect();
        encoder.encode_rgba(ravif::Img::new(&px[..], w, h))
    } else {
        let px: Vec<ravif::RGB8> = bitmap.data.chunks_exact(3).map(|p| ravif::RGB8::new(p[0], p[1], p[2])).collect();
        encoder.encode_rgb(ravif::Img::new(&px[..], w, h))
    };
    encoded.map(|e| e.avif_file).map_err(|e| ImageError::Encode(format!("avif: {e}")))
}

/// Baseline JPEG, 4:2:0 chroma subsampling, standard Huffman tables,
/// interleaved scan. (jpeg-encoder's optimised-Huffman mode switches to one
/// scan per component, which zune-jpeg 0.5 — the `image` crate's decoder —
/// misdecodes for 4:2:0 images; interleaved output decodes everywhere.)
/// JPEG has no alpha, so
/// transparent areas are composited onto white — what a browser would show
/// on a default page background.
fn encode_jpeg(bitmap: &Bitmap, quality: u8) -> Result<Vec<u8>, ImageError> {
    let (w, h) = match (u16::try_from(bitmap.width), u16::try_from(bitmap.height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(ImageError::Encode(format!("jpeg: {}x{} is outside 1..=65535", bitmap.width, bitmap.height)));
        }
    };
    let flattened;
    let rgb: &[u8] = if bitmap.has_alpha() {
        flattened = flatten_on_white(&bitmap.data);
        &flattened
    } else {
        &bitmap.data
    };
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::R_4_2_0);
    enc.set_optimized_huffman_tables(false);
    enc.encode(rgb, w, h, ColorType::Rgb).map_err(|e| ImageError::Encode(format!("jpeg: {e}")))?;
    Ok(out)
}

/// RGBA (straight alpha) composited over opaque white, as RGB.
fn flatten_on_white(rgba: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        let inv = 255 - a;
        for &c in &px[..3] {
            // c*a/255 + 255*(255-a)/255, rounded.
            let v = u32::from(c) * a + 255 * inv;
            out.push(((v + 127) / 255) as u8);
        }
    }
    out
}

/// PNG with fast deflate and adaptive filtering: thumbnails are small, so
/// spending 5x the time on `Best` compression for a few percent is not worth
/// it. An alpha channel that is entirely opaque is dropped (smaller file,
/// same picture).
fn encode_png(bitmap: &Bitmap) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
    let opaque_rgb;
    let (data, color): (&[u8], image::ExtendedColorType) =
        if bitmap.has_alpha() && bitmap.data.chunks_exact(4).any(|p| p[3] != 255) {
            (&bitmap.data, image::ExtendedColorType::Rgba8)
        } else if bitmap.has_alpha() {
            opaque_rgb = bitmap.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect::<Vec<u8>>();
            (&opaque_rgb, image::ExtendedColorType::Rgb8)
        } else {
            (&bitmap.data, image::ExtendedColorType::Rgb8)
        };
    enc.write_image(data, bitmap.width, bitmap.height, color).map_err(|e| ImageError::Encode(format!("png: {e}")))?;
    Ok(out)
}
