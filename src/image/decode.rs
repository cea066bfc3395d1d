//! Decoding to an 8-bit RGB/RGBA [`Bitmap`] plus the metadata the rest of the
//! pipeline needs (EXIF orientation, ICC profile).
//!
//! JPEG goes through mozjpeg (libjpeg-turbo SIMD) with DCT-domain scaling,
//! which is what makes large photographs cheap: a 1/4 scale decode skips most
//! of the IDCT and colour-conversion work. Everything else — and the JPEGs
//! mozjpeg cannot turn into RGB (CMYK/YCCK) or refuses — goes through the
//! pure-Rust decoders of the `image` crate (zune-jpeg, png, image-webp, gif).

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::{Bitmap, ImageError, ImageInfo, Limits, Orientation, SourceFormat, panic_message, target_size};

/// A decoded source, possibly already shrunk by the decoder.
pub(crate) struct Decoded {
    pub(crate) bitmap: Bitmap,
    pub(crate) orientation: Orientation,
    /// Embedded ICC profile, if any (not yet checked for being sRGB).
    pub(crate) icc: Option<Vec<u8>>,
}

/// Decodes `bytes` (already probed as `info` and checked against `limits`).
/// `target_w` is the requested output width; the JPEG path uses it to pick a
/// DCT scale.
pub(crate) fn decode(bytes: &[u8], info: &ImageInfo, target_w: u32, limits: &Limits) -> Result<Decoded, ImageError> {
    match info.format {
        // Decoders would pad a truncated JPEG with grey, as browsers do; a
        // thumbnail of half an upload is stored and cached for good, so refuse.
        SourceFormat::Jpeg if !jpeg_has_end(bytes) => {
            Err(ImageError::Decode("truncated JPEG: no end-of-image marker".into()))
        }
        SourceFormat::Jpeg => match decode_jpeg_mozjpeg(bytes, info, target_w) {
            Ok(Some(d)) => Ok(d),
            // CMYK/YCCK: mozjpeg can't convert to RGB; zune-jpeg can.
            Ok(None) => decode_with_image(bytes, info, limits),
            // mozjpeg refused the file: give the more lenient zune-jpeg a go,
            // but report mozjpeg's reason if that fails too.
            Err(moz_err) => decode_with_image(bytes, info, limits).map_err(|e| match e {
                ImageError::Decode(zune) => ImageError::Decode(format!("{moz_err}; {zune}")),
                other => other,
            }),
        },
        _ => decode_with_image(bytes, info, limits),
    }
}

/// Whether a JPEG's end-of-image marker (`FF D9`) is among its last bytes.
/// Inside entropy-coded data `FF` is always followed by `00` or a restart
/// marker, so `FF D9` there is the real end; some writers pad after it.
pub(crate) fn jpeg_has_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xff, 0xd9])
}

/// Smallest DCT scale numerator `n` (of 8) whose output is still at least
/// twice the target in both dimensions. Decoding at >= 2x and letting
/// Lanczos3 do the last step keeps quality (measured: at 1x the DCT box
/// filter loses 0.8–2.4 dB PSNR), while 1/2–1/8 decodes save most of the
/// decode time on big photographs.
pub(crate) fn jpeg_scale(w: u32, h: u32, target_w: u32, target_h: u32) -> u8 {
    let scaled = |v: u32, n: u32| (u64::from(v) * u64::from(n)).div_ceil(8);
    (1..8u8)
        .find(|&n| {
            scaled(w, u32::from(n)) >= 2 * u64::from(target_w) && scaled(h, u32::from(n)) >= 2 * u64::from(target_h)
        })
        .unwrap_or(8)
}

/// mozjpeg path. `Ok(None)` means "not for mozjpeg" (CMYK/YCCK or unknown
/// colour space), `Err` that libjpeg raised an error.
fn decode_jpeg_mozjpeg(bytes: &[u8], info: &ImageInfo, target_w: u32) -> Result<Option<Decoded>, String> {
    // libjpeg reports fatal errors through `error_exit`, which the mozjpeg
    // crate implements as a Rust unwind (`resume_unwind`, so no panic hook
    // output). Catch it here and drop the decompressor (jpeg_destroy runs in
    // Drop during the unwind).
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Decoded>, String> {
        use mozjpeg::{ColorSpace, Decompress, Marker};

        let mut dec = Decompress::builder()
            .with_markers(&[Marker::APP(1), Marker::APP(2)])
            .from_mem(bytes)
            .map_err(|e| format!("mozjpeg: {e}"))?;
        if !matches!(dec.color_space(), ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB | ColorSpace::JCS_GRAYSCALE) {
            return Ok(None);
        }

        let mut orientation = Orientation::NORMAL;
        let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
        for m in dec.markers() {
            match m.marker {
                Marker::APP(1) => {
                    if let Some(tiff) = m.data.strip_prefix(b"Exif\0\0") {
                        orientation = exif_orientation(tiff);
                    }
                }
                Marker::APP(2) => {
                    // "ICC_PROFILE\0", sequence number (1-based), count, data.
                    match m.data.strip_prefix(b"ICC_PROFILE\0") {
                        Some(rest) if rest.len() > 2 => icc_chunks.push((rest[0], &rest[2..])),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let icc = assemble_icc(icc_chunks);

        let (tw, th) = target_size(info.width, info.height, orientation, target_w);
        let (tw, th) = if orientation.swaps_axes() { (th, tw) } else { (tw, th) };
        let n = jpeg_scale(info.width, info.height, tw, th);
        if n < 8 {
            dec.scale(n);
        }

        let mut started = dec.rgb().map_err(|e| format!("mozjpeg: {e}"))?;
        let width = started.width() as u32;
        let height = started.height() as u32;
        // A truncated file is padded by mozjpeg's source manager with a fake
        // EOI, so this yields a partial (grey-filled) image rather than an
        // error — the same behaviour as browsers.
        let data: Vec<u8> = started.read_scanlines().map_err(|e| format!("mozjpeg: {e}"))?;
        if data.len() != width as usize * height as usize * 3 {
            return Err("mozjpeg: short read".into());
        }
        // Dropping without jpeg_finish_decompress is allowed and skips
        // reading whatever trails the image data.
        drop(started);
        Ok(Some(Decoded { bitmap: Bitmap { width, height, channels: 3, data }, orientation, icc }))
    }));
    match result {
        Ok(r) => r,
        Err(payload) => Err(panic_message(payload.as_ref())),
    }
}

/// Reassembles a multi-segment JPEG ICC profile (ICC.1 Annex B.4): chunks
/// ordered by sequence number; incomplete or inconsistent sets are dropped.
fn assemble_icc(mut chunks: Vec<(u8, &[u8])>) -> Option<Vec<u8>> {
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|c| c.0);
    if chunks.iter().enumerate().any(|(i, c)| usize::from(c.0) != i + 1) {
        return None;
    }
    Some(chunks.iter().flat_map(|c| c.1.iter().copied()).collect())
}

/// Orientation from a TIFF-structured EXIF block (after "Exif\0\0").
fn exif_orientation(tiff: &[u8]) -> Orientation {
    image::metadata::Orientation::from_exif_chunk(tiff)
        .map(|o| Orientation::from_exif(u16::from(o.to_exif())))
        .unwrap_or(Orientation::NORMAL)
}

/// Generic path through the `image` crate's pure-Rust decoders.
fn decode_with_image(bytes: &[u8], info: &ImageInfo, limits: &Limits) -> Result<Decoded, ImageError> {
    let format = match info.format {
        SourceFormat::Jpeg => ImageFormat::Jpeg,
        SourceFormat::Png => ImageFormat::Png,
        SourceFormat::Webp => ImageFormat::WebP,
        SourceFormat::Gif => ImageFormat::Gif,
        SourceFormat::Bmp => ImageFormat::Bmp,
        other => {
            return Err(ImageError::Unsupported(format!("{} decoding is not supported", other.name())));
        }
    };
    let map_err = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        image::ImageError::Limits(_) => {
            ImageError::TooLarge { width: info.width, height: info.height, max_pixels: limits.max_pixels }
        }
        other => ImageError::Decode(other.to_string()),
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(info, limits));
    let mut decoder = reader.into_decoder().map_err(map_err)?;

    // The decoder's own dimensions must agree with our header parse, or the
    // pixel-limit check above was checking the wrong thing.
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ImageError::TooLarge { width: w, height: h, max_pixels: limits.max_pixels });
    }

    // Metadata is best-effort: a broken EXIF or ICC block must not make an
    // otherwise fine image undecodable.
    let orientation =
        decoder.orientation().map(|o| Orientation::from_exif(u16::from(o.to_exif()))).unwrap_or(Orientation::NORMAL);
    let icc = decoder.icc_profile().ok().flatten();
    let has_alpha = decoder.color_type().has_alpha();

    let img = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    let bitmap = if has_alpha {
        let buf = img.into_rgba8();
        Bitmap { width: buf.width(), height: buf.height(), channels: 4, data: buf.into_raw() }
    } else {
        let buf = img.into_rgb8();
        Bitmap { width: buf.width(), height: buf.height(), channels: 3, data: buf.into_raw() }
    };
    Ok(Decoded { bitmap, orientation, icc })
}

/// Allocation limits for the `image` decoders: width/height no larger than
/// what our header parse said, and a byte budget that fits the largest legitimate
/// decode (16-bit RGBA at `max_pixels`) plus slack for small images.
fn decoder_limits(info: &ImageInfo, limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // GIF frames may legitimately (if rarely) differ from the logical screen
    // size the header gives, so only the byte budget applies there.
    if info.format != SourceFormat::Gif {
        l.max_image_width = Some(info.width.max(1));
        l.max_image_height = Some(info.height.max(1));
    }
    let pixels = (u64::from(info.width) * u64::from(info.height)).min(limits.max_pixels);
    l.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}
