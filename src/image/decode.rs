//! Decoding to an 8-bit RGB/RGBA [`Bitmap`], already box-shrunk as the
//! [`Plan`] says, plus the embedded ICC profile. (EXIF orientation comes from
//! the plan: the probe read it from the same block the decoders would.)
//!
//! JPEG goes through mozjpeg (libjpeg-turbo SIMD) with DCT-domain scaling,
//! which is what makes large photographs cheap: a 1/4 scale decode skips most
//! of the IDCT and colour-conversion work. PNG (png crate, 16-bit sources
//! stripped to 8 bits) and GIF (gif crate, first frame placed on its canvas)
//! are decoded row by row into the pre-shrink, so their full-size image is
//! never held. A still WebP goes through libwebp, whose rescaler makes the
//! pre-shrink while it decodes. Animated WebP's first frame, BMP and the
//! JPEGs mozjpeg cannot turn into RGB (CMYK/YCCK, 12-bit) go through the
//! `image` crate's decoders whole and are shrunk after.
//!
//! Every path checks the [`Cancel`] flag as it goes: per chunk of rows, and
//! for libjpeg per 64 KiB of input it reads (progressive files are decoded
//! entirely inside `jpeg_start_decompress`, where no row loop exists).

use std::io::{BufRead, Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::shrink::{Shrinker, shrink_bitmap};
use super::{
    Bitmap, Cancel, Geometry, ImageError, ImageInfo, Plan, SHRINK_ON_LOAD_MARGIN, SourceFormat, estimate,
    geometry_with, panic_message,
};

/// A decoded source, shrunk by the plan's box factors.
pub(crate) struct Decoded {
    pub(crate) bitmap: Bitmap,
    /// Embedded ICC profile, if any (not yet checked for being sRGB).
    pub(crate) icc: Option<Vec<u8>>,
}

/// Whether a JPEG goes through mozjpeg (8-bit, not CMYK/YCCK), and so gets
/// DCT scaling and a streamed decode. Odd component counts go there too:
/// libjpeg is the stricter judge of a corrupt header.
pub(crate) fn mozjpeg_decodes(info: &ImageInfo) -> bool {
    info.format == SourceFormat::Jpeg && info.channels != 4 && info.bit_depth == 8
}

/// Decodes `bytes` as `plan` says.
pub(crate) fn decode(bytes: &[u8], plan: &Plan, cancel: &Cancel) -> Result<Decoded, ImageError> {
    let info = &plan.info;
    match info.format {
        // Decoders would pad a truncated JPEG with grey, as browsers do; a
        // thumbnail of half an upload is stored and cached for good, so refuse.
        SourceFormat::Jpeg if !jpeg_has_end(bytes) => {
            Err(ImageError::Decode("truncated JPEG: no end-of-image marker".into()))
        }
        SourceFormat::Jpeg if plan.geometry.streamed => match decode_jpeg_mozjpeg(bytes, plan, cancel) {
            Ok(Some(d)) => Ok(d),
            Err(MozError::Image(e)) => Err(e),
            // The reader failed on the flag before libjpeg could unwind.
            Err(MozError::Refused(_)) if cancel.is_cancelled() => Err(ImageError::Cancelled),
            // mozjpeg refused the file (or found a colour space it cannot
            // convert): give the more lenient zune-jpeg a go, at full size,
            // if that fits in the memory the plan was priced at; report
            // mozjpeg's reason if it does not, or fails too.
            Ok(None) => decode_jpeg_fallback(bytes, plan, cancel, "mozjpeg: unsupported colour space".into()),
            Err(MozError::Refused(moz_err)) => decode_jpeg_fallback(bytes, plan, cancel, moz_err),
        },
        SourceFormat::Png => decode_png(bytes, info, &plan.geometry, cancel),
        SourceFormat::Gif => decode_gif(bytes, info, &plan.geometry, cancel),
        SourceFormat::Webp if info.frames <= 1 => decode_webp(bytes, &plan.geometry, cancel),
        _ => decode_with_image(bytes, info, &plan.geometry, cancel),
    }
}

/// A still WebP through libwebp, shrunk by its rescaler as it decodes to
/// the size the plan's box shrink gives (see [`super::webp::decode_still`]).
fn decode_webp(bytes: &[u8], g: &Geometry, cancel: &Cancel) -> Result<Decoded, ImageError> {
    let (width, height) = g.shrunk;
    let data = super::webp::decode_still(bytes, (width, height), g.channels, cancel)?;
    let bitmap = Bitmap { width, height, channels: g.channels, data };
    Ok(Decoded { bitmap, icc: super::webp::icc_profile(bytes) })
}

/// Whether a JPEG's end-of-image marker (`FF D9`) is among its last bytes.
/// Inside entropy-coded data `FF` is always followed by `00` or a restart
/// marker, so `FF D9` there is the real end; some writers pad after it.
pub(crate) fn jpeg_has_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xff, 0xd9])
}

/// Smallest DCT scale numerator `n` (of 8) whose output is still at least
/// `margin_pct` % of the target in both dimensions, so Lanczos3 does the
/// last step from an image at least that much larger; 1/2–1/8 decodes save
/// the IDCT, colour and resize work of big photographs (the Huffman decode
/// reads every bit whatever the scale). The margin in force is
/// [`super::SHRINK_ON_LOAD_MARGIN`], chosen by measurement
/// (`bench/shrink-policy.sh`).
pub(crate) fn jpeg_scale(w: u32, h: u32, target_w: u32, target_h: u32, margin_pct: u32) -> u8 {
    let scaled = |v: u32, n: u32| (u64::from(v) * u64::from(n)).div_ceil(8) * 100;
    let need = |t: u32| u64::from(t) * u64::from(margin_pct.max(100));
    (1..8u8)
        .find(|&n| scaled(w, u32::from(n)) >= need(target_w) && scaled(h, u32::from(n)) >= need(target_h))
        .unwrap_or(8)
}

/// Why the mozjpeg path gave up.
enum MozError {
    /// libjpeg raised an error: another decoder may do better.
    Refused(String),
    /// Cancelled, or a limit of ours: final.
    Image(ImageError),
}

/// Feeds libjpeg 64 KiB at a time and fails the read once the render is
/// cancelled, which makes libjpeg raise an error (an unwind) wherever it is,
/// including inside `jpeg_start_decompress`. The file is read from `parts`
/// one after the other: the whole file, or the parts of it a 1/8 scale
/// decode needs ([`super::dc_scans`]).
struct CancelReader<'a> {
    parts: Vec<&'a [u8]>,
    /// The part being read, and the position in it.
    part: usize,
    pos: usize,
    cancel: &'a Cancel,
}

impl<'a> CancelReader<'a> {
    fn new(parts: Vec<&'a [u8]>, cancel: &'a Cancel) -> Self {
        Self { parts, part: 0, pos: 0, cancel }
    }
}

impl Read for CancelReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.read(out)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for CancelReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.cancel.is_cancelled() {
            return Err(std::io::Error::other("cancelled"));
        }
        while self.parts.get(self.part).is_some_and(|p| self.pos == p.len()) {
            self.part += 1;
            self.pos = 0;
        }
        let Some(data) = self.parts.get(self.part) else { return Ok(&[]) };
        let end = (self.pos + (64 << 10)).min(data.len());
        Ok(&data[self.pos..end])
    }

    fn consume(&mut self, n: usize) {
        if let Some(data) = self.parts.get(self.part) {
            self.pos = (self.pos + n).min(data.len());
        }
    }
}

/// mozjpeg path: DCT-scaled, rows read in chunks straight into the
/// pre-shrink. `Ok(None)` means "not for mozjpeg" (a colour space it cannot
/// turn into RGB).
fn decode_jpeg_mozjpeg(bytes: &[u8], plan: &Plan, cancel: &Cancel) -> Result<Option<Decoded>, MozError> {
    // libjpeg reports fatal errors through `error_exit`, which the mozjpeg
    // crate implements as a Rust unwind (`resume_unwind`, so no panic hook
    // output). Catch it here and drop the decompressor (jpeg_destroy runs in
    // Drop during the unwind).
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Option<Decoded>, MozError> {
        use mozjpeg::{ColorSpace, Decompress, Marker};
        let refused = |e: std::io::Error| MozError::Refused(format!("mozjpeg: {e}"));

        let g = &plan.geometry;
        // At 1/8 scale only the DC coefficients are used: a progressive
        // file's AC scans need not be decoded at all.
        let dc_only = if g.dct_scale == 1 { super::dc_scans::dc_only(bytes) } else { None };
        let dc_only_read = dc_only.is_some();
        let reader = CancelReader::new(dc_only.unwrap_or_else(|| vec![bytes]), cancel);
        let mut dec = Decompress::builder().with_markers(&[Marker::APP(2)]).from_reader(reader).map_err(refused)?;
        if !matches!(dec.color_space(), ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB | ColorSpace::JCS_GRAYSCALE) {
            return Ok(None);
        }
        let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
        for m in dec.markers() {
            // "ICC_PROFILE\0", sequence number (1-based), count, data.
            match m.data.strip_prefix(b"ICC_PROFILE\0") {
                Some(rest) if rest.len() > 2 => icc_chunks.push((rest[0], &rest[2..])),
                _ => {}
            }
        }
        let icc = assemble_icc(icc_chunks);
        if g.dct_scale < 8 {
            dec.scale(g.dct_scale);
        }
        if dc_only_read {
            // It would estimate the missing AC coefficients, which the 1/8
            // inverse DCT then ignores.
            dec.do_block_smoothing(false);
        }
        // Progressive files are decoded here, entirely (the reader above
        // is what can interrupt it).
        let mut started = dec.rgb().map_err(refused)?;
        let (width, height) = (started.width() as u32, started.height() as u32);
        if (width, height) != g.decoded {
            return Err(MozError::Refused(format!("mozjpeg: decodes to {width}x{height}, not {:?}", g.decoded)));
        }
        let mut shrinker = Shrinker::new(width, height, 3, g.shrink).map_err(MozError::Image)?;
        let row_len = shrinker.row_len();
        let rows_per_chunk = ((256 << 10) / row_len.max(1)).clamp(1, 64);
        let mut chunk = vec![0u8; rows_per_chunk * row_len];
        let mut y = 0;
        while y < height as usize {
            cancel.check().map_err(MozError::Image)?;
            let n = rows_per_chunk.min(height as usize - y);
            // A truncated file is padded by mozjpeg's source manager with a
            // fake EOI, so this yields a partial (grey-filled) image rather
            // than an error — the same behaviour as browsers.
            let rows = started.read_scanlines_into(&mut chunk[..n * row_len]).map_err(refused)?;
            for row in rows.chunks_exact(row_len) {
                shrinker.push_row(row).map_err(MozError::Image)?;
            }
            y += n;
        }
        // Dropping without jpeg_finish_decompress is allowed and skips
        // reading whatever trails the image data.
        drop(started);
        Ok(Some(Decoded { bitmap: shrinker.finish().map_err(MozError::Image)?, icc }))
    }));
    match result {
        Ok(r) => r,
        // The reader failed because of the flag, not the file.
        Err(_) if cancel.is_cancelled() => Err(MozError::Image(ImageError::Cancelled)),
        Err(payload) => Err(MozError::Refused(panic_message(payload.as_ref()))),
    }
}

/// zune-jpeg at full size, when mozjpeg could not decode a JPEG it was
/// planned for — only if that costs no more than the plan's estimate.
fn decode_jpeg_fallback(bytes: &[u8], plan: &Plan, cancel: &Cancel, moz_err: String) -> Result<Decoded, ImageError> {
    let full = geometry_with(&plan.info, &plan.spec, false, SHRINK_ON_LOAD_MARGIN);
    let cost = estimate(&plan.info, &full, plan.spec.format, bytes.len() as u64);
    if cost.peak() > plan.memory.peak() {
        return Err(ImageError::Decode(moz_err));
    }
    decode_with_image(bytes, &plan.info, &full, cancel).map_err(|e| match e {
        ImageError::Decode(zune) => ImageError::Decode(format!("{moz_err}; {zune}")),
        other => other,
    })
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

fn png_error(e: png::DecodingError) -> ImageError {
    match e {
        png::DecodingError::LimitsExceeded => ImageError::Decode("png: a chunk is over the decoder's limits".into()),
        other => ImageError::Decode(format!("png: {other}")),
    }
}

/// PNG through the png crate, 8 bits per sample whatever the source
/// (`STRIP_16`: a 16-bit source would otherwise cost double), palettes and
/// tRNS expanded, rows streamed into the pre-shrink. Interlaced (Adam7)
/// files are assembled whole first: their first rows come last.
fn decode_png(bytes: &[u8], info: &ImageInfo, g: &Geometry, cancel: &Cancel) -> Result<Decoded, ImageError> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let (w, h) = (reader.info().width, reader.info().height);
    if (w, h) != (info.width, info.height) {
        return Err(ImageError::Decode("png: the decoder disagrees with the header about the size".into()));
    }
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let src_channels = reader.output_color_type().0.samples();
    let mut shrinker = Shrinker::new(w, h, g.channels, g.shrink)?;
    if !info.buffered {
        let mut y = 0u32;
        while let Some(row) = reader.next_row().map_err(png_error)? {
            if y.is_multiple_of(32) {
                cancel.check()?;
            }
            shrinker.push_row_from(row.data(), src_channels)?;
            y += 1;
        }
    } else {
        let stride = w as usize * src_channels;
        let mut whole = vec![0u8; stride * h as usize];
        let mut n = 0u32;
        while let Some(row) = reader.next_interlaced_row().map_err(png_error)? {
            if n.is_multiple_of(32) {
                cancel.check()?;
            }
            n += 1;
            match row.interlace() {
                png::InterlaceInfo::Adam7(pass) => {
                    png::expand_interlaced_row(&mut whole, stride, row.data(), pass, (src_channels * 8) as u8);
                }
                png::InterlaceInfo::Null(_) => {
                    return Err(ImageError::Decode("png: an interlaced image gave a plain row".into()));
                }
            }
        }
        for (y, row) in whole.chunks_exact(stride).enumerate() {
            if y.is_multiple_of(64) {
                cancel.check()?;
            }
            shrinker.push_row_from(row, src_channels)?;
        }
    }
    Ok(Decoded { bitmap: shrinker.finish()?, icc })
}

fn gif_error(e: gif::DecodingError) -> ImageError {
    ImageError::Decode(format!("gif: {e}"))
}

/// GIF's first frame, placed on its canvas (transparent around it, as
/// browsers show it; the parts of the frame outside the canvas are
/// clipped), one canvas row at a time into the pre-shrink: a 37-byte GIF
/// declaring a 10 000 × 10 000 canvas costs a row, not 400 MB.
fn decode_gif(bytes: &[u8], info: &ImageInfo, g: &Geometry, cancel: &Cancel) -> Result<Decoded, ImageError> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(gif_error)?;
    let (cw, ch) = (u32::from(decoder.width()), u32::from(decoder.height()));
    if (cw, ch) != (info.width, info.height) {
        return Err(ImageError::Decode("gif: the decoder disagrees with the header about the size".into()));
    }
    let icc = decoder.icc_profile().map(Vec::from);
    let frame =
        decoder.next_frame_info().map_err(gif_error)?.ok_or_else(|| ImageError::Decode("gif: no image".into()))?;
    let (left, top) = (u32::from(frame.left), u32::from(frame.top));
    let (fw, fh, interlaced) = (u32::from(frame.width), u32::from(frame.height), frame.interlaced);
    // The part of the frame that lands on the canvas, in frame columns.
    let visible = left.min(cw)..(left + fw).min(cw);
    let (from, to) = (((visible.start - left) * 4) as usize, ((visible.end - left) * 4) as usize);
    let canvas_x = visible.start as usize * 4;
    let frame_row_len = fw as usize * 4;

    // Interlaced frames come in four passes: read the whole frame first.
    let whole = if interlaced {
        let mut buf = vec![0u8; decoder.buffer_size()];
        decoder.read_into_buffer(&mut buf).map_err(gif_error)?;
        Some(buf)
    } else {
        None
    };
    let mut shrinker = Shrinker::new(cw, ch, 4, g.shrink)?;
    let mut canvas_row = vec![0u8; shrinker.row_len()];
    let mut frame_row = vec![0u8; if whole.is_some() { 0 } else { frame_row_len }];
    let mut frame_data_left = true;
    for y in 0..ch {
        if y.is_multiple_of(32) {
            cancel.check()?;
        }
        if !(top..top + fh).contains(&y) || from >= to {
            shrinker.push_blank_row()?;
            continue;
        }
        canvas_row.fill(0);
        {
            let fy = (y - top) as usize;
            let src: Option<&[u8]> = match &whole {
                Some(buf) => buf.get(fy * frame_row_len..(fy + 1) * frame_row_len),
                // A frame whose data ends early leaves the rest transparent.
                None if frame_data_left => {
                    frame_data_left = decoder.fill_buffer(&mut frame_row).map_err(gif_error)?;
                    frame_data_left.then_some(&frame_row[..])
                }
                None => None,
            };
            if let Some(src) = src {
                canvas_row[canvas_x..canvas_x + (to - from)].copy_from_slice(&src[from..to]);
            }
        }
        shrinker.push_row(&canvas_row)?;
    }
    Ok(Decoded { bitmap: shrinker.finish()?, icc })
}

/// Generic path through the `image` crate's pure-Rust decoders (WebP, BMP,
/// zune-jpeg): the whole image, then the pre-shrink.
fn decode_with_image(bytes: &[u8], info: &ImageInfo, g: &Geometry, cancel: &Cancel) -> Result<Decoded, ImageError> {
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
    let too_large = || ImageError::Decode("the decoder wanted more memory than the image's size allows".into());
    let map_err = |e: image::ImageError| match e {
        image::ImageError::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        image::ImageError::Limits(_) => too_large(),
        other => ImageError::Decode(other.to_string()),
    };

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(info));
    let mut decoder = reader.into_decoder().map_err(map_err)?;
    // The decoder's own dimensions must agree with our header parse, or the
    // limit checks and the estimate were about something else.
    if decoder.dimensions() != (info.width, info.height) {
        return Err(ImageError::Decode("the decoder disagrees with the header about the size".into()));
    }
    // Metadata is best-effort: a broken ICC block must not make an
    // otherwise fine image undecodable.
    let icc = decoder.icc_profile().ok().flatten();
    let img = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    cancel.check()?;
    let bitmap = if g.channels == 4 {
        let buf = img.into_rgba8();
        Bitmap { width: buf.width(), height: buf.height(), channels: 4, data: buf.into_raw() }
    } else {
        let buf = img.into_rgb8();
        Bitmap { width: buf.width(), height: buf.height(), channels: 3, data: buf.into_raw() }
    };
    let bitmap = shrink_bitmap(bitmap, g.shrink, cancel)?;
    Ok(Decoded { bitmap, icc })
}

/// Allocation limits for the `image` decoders: width/height no larger than
/// what our header parse said, and a byte budget that fits the largest
/// legitimate decode of this size (16-bit RGBA) plus slack for small images.
fn decoder_limits(info: &ImageInfo) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(info.width.max(1));
    l.max_image_height = Some(info.height.max(1));
    let pixels = u64::from(info.width) * u64::from(info.height);
    l.max_alloc = Some(pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}
