//! Animated sources (GIF, animated WebP) to animated WebP.
//!
//! Frames are decoded one at a time by the `image` crate's animation
//! decoders, which composite each onto the full canvas (disposal and
//! blending applied), so what this module sees is the sequence of pictures a
//! viewer shows. Each is shrunk, resized, oriented and cropped with the one
//! geometry of the plan as soon as it is decoded, and handed to libwebp's
//! animation encoder, which keeps only its compressed form (and stores only
//! what changes between frames): no more than one decoded canvas is alive
//! at a time, whatever the frame count. [`super::estimate`] prices exactly
//! that.
//!
//! Timing follows what browsers play: a GIF frame delay of 10 ms or less
//! (0 and 1 in GIF's units) is shown for 100 ms by Chrome, Firefox and
//! Safari, and becomes 100 ms here, as libwebp's own `gif2webp` does; a GIF's
//! NETSCAPE loop count `n` means "repeat n times" (n + 1 plays) while WebP's
//! means "play n times", so it becomes n + 1 (0, forever, stays 0), and a GIF
//! without one plays once. Animated WebP sources keep their durations and
//! loop count as they are.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libwebp_sys as sys;

use super::shrink::shrink_bitmap;
use super::webp::{PictureGuard, lossy_config};
use super::{Bitmap, Cancel, ImageError, Plan, SourceFormat, Thumbnail, finish_frame, resize};

/// How many times an animation plays, in WebP's terms (0: forever), from
/// the source's own blocks: GIF's NETSCAPE2.0 application extension (as
/// browsers read it, see the module doc), WebP's `ANIM` chunk.
pub fn loop_count(bytes: &[u8], format: SourceFormat) -> u16 {
    match format {
        SourceFormat::Gif => match gif_repeats(bytes) {
            None => 1,
            Some(0) => 0,
            Some(n) => n.saturating_add(1),
        },
        SourceFormat::Webp => {
            webp_chunk(bytes, b"ANIM").and_then(|p| p.get(4..6)).map_or(0, |l| u16::from_le_bytes([l[0], l[1]]))
        }
        _ => 1,
    }
}

/// The NETSCAPE2.0 (or ANIMEXTS1.0) repeat count of a GIF, found by walking
/// its blocks up to the first image (where browsers look for it).
fn gif_repeats(b: &[u8]) -> Option<u16> {
    let table = |flags: u8| if flags & 0x80 != 0 { 3usize << ((flags & 7) + 1) } else { 0 };
    let mut i = 13 + table(*b.get(10)?);
    loop {
        match *b.get(i)? {
            0x21 => {
                let label = *b.get(i + 1)?;
                let first = b.get(i + 2..)?;
                if label == 0xFF && first.first() == Some(&11) {
                    let id = first.get(1..12)?;
                    let data = first.get(12..)?;
                    if (id == b"NETSCAPE2.0" || id == b"ANIMEXTS1.0")
                        && data.first() == Some(&3)
                        && data.get(1) == Some(&1)
                    {
                        return Some(u16::from_le_bytes([*data.get(2)?, *data.get(3)?]));
                    }
                }
                // Skip the extension's sub-blocks.
                i += 2;
                loop {
                    let n = usize::from(*b.get(i)?);
                    i += 1 + n;
                    if n == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

fn webp_chunk<'a>(b: &'a [u8], want: &[u8; 4]) -> Option<&'a [u8]> {
    let mut i = 12;
    while let Some(fourcc) = b.get(i..i + 4) {
        let size = u32::from_le_bytes(b.get(i + 4..i + 8)?.try_into().ok()?) as usize;
        if fourcc == want {
            return b.get(i + 8..i + 8 + size);
        }
        i = i.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// The delay a viewer shows a frame for (see the module doc).
fn shown_delay(format: SourceFormat, delay_ms: u32) -> u32 {
    if format == SourceFormat::Gif && delay_ms <= 10 { 100 } else { delay_ms }
}

/// Renders an animation as `plan` says: every frame through the one
/// geometry (a smart crop is placed on the first frame and kept), into an
/// animated WebP.
pub(crate) fn render(bytes: &[u8], plan: &Plan, cancel: &Cancel) -> Result<Thumbnail, ImageError> {
    let g = &plan.geometry;
    let format = plan.info.format;
    let (w, h) = g.output;
    let mut encoder = AnimEncoder::new(w, h, loop_count(bytes, format), plan.spec.quality.min(100))?;
    let mut at = None;
    let decoded = decode_frames(bytes, format, g.frames, cancel, |canvas, delay_ms, icc| {
        if (canvas.width, canvas.height) != g.decoded {
            return Err(ImageError::Decode("a frame disagrees with the header about the canvas".into()));
        }
        let shrunk = shrink_bitmap(canvas, g.shrink, cancel)?;
        let resized = resize::resize(shrunk, g.resized.0, g.resized.1)?;
        let frame = finish_frame(resized, icc, plan, &mut at);
        cancel.check()?;
        encoder.add(&frame, delay_ms)
    });
    match decoded {
        // The header walk counted fewer frames than the decoder found.
        Err(ImageError::TooManyFrames { .. }) => {
            return Err(ImageError::Decode("the animation has more frames than its blocks show".into()));
        }
        other => other?,
    }
    let frames = encoder.frames;
    let bytes = encoder.finish()?;
    Ok(Thumbnail { bytes, width: w, height: h, format: plan.spec.format, frames })
}

/// Decodes every frame of an animated GIF or WebP in order, calling `each`
/// with the composited canvas (RGBA), how long it shows and the source's
/// ICC profile; stops with
/// [`ImageError::TooManyFrames`] past `max_frames` (the header walk refused
/// such files already; this holds whatever the walk missed), and with
/// [`ImageError::Cancelled`] between frames once `cancel` is raised.
pub(crate) fn decode_frames(
    bytes: &[u8],
    format: SourceFormat,
    max_frames: u32,
    cancel: &Cancel,
    mut each: impl FnMut(Bitmap, u32, Option<&[u8]>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    use image::{AnimationDecoder, ImageDecoder};
    let cursor = std::io::Cursor::new(bytes);
    let decode_error = |e: image::ImageError| ImageError::Decode(e.to_string());
    // Metadata is best-effort, as for still images.
    let (icc, frames) = match format {
        SourceFormat::Gif => {
            let mut d = image::codecs::gif::GifDecoder::new(cursor).map_err(decode_error)?;
            (d.icc_profile().ok().flatten(), d.into_frames())
        }
        SourceFormat::Webp => {
            let mut d = image::codecs::webp::WebPDecoder::new(cursor).map_err(decode_error)?;
            (d.icc_profile().ok().flatten(), d.into_frames())
        }
        other => return Err(ImageError::Unsupported(format!("{} is not animated", other.name()))),
    };
    for (n, frame) in frames.enumerate() {
        cancel.check()?;
        if n as u64 >= u64::from(max_frames) {
            return Err(ImageError::TooManyFrames { frames: n as u32 + 1, max: max_frames });
        }
        let frame = frame.map_err(|e| ImageError::Decode(e.to_string()))?;
        let (num, den) = frame.delay().numer_denom_ms();
        let delay_ms = num.checked_div(den).unwrap_or(0);
        let buf = frame.into_buffer();
        let bitmap = Bitmap { width: buf.width(), height: buf.height(), channels: 4, data: buf.into_raw() };
        each(bitmap, shown_delay(format, delay_ms), icc.as_deref())?;
    }
    Ok(())
}

/// Owns a `WebPAnimEncoder`.
struct AnimGuard(*mut sys::WebPAnimEncoder);

impl Drop for AnimGuard {
    fn drop(&mut self) {
        // SAFETY: created by WebPAnimEncoderNewInternal, deleted once here.
        unsafe { sys::WebPAnimEncoderDelete(self.0) }
    }
}

/// Owns the bytes `WebPAnimEncoderAssemble` returns.
struct DataGuard(sys::WebPData);

impl Drop for DataGuard {
    fn drop(&mut self) {
        // SAFETY: the bytes were allocated by libwebp (WebPMalloc) or are null.
        unsafe { sys::WebPFree(self.0.bytes as *mut std::ffi::c_void) }
    }
}

/// An animated lossy WebP being written, frame by frame: libwebp keeps the
/// compressed frames (and a few canvases of the output size), never the
/// decoded ones. No metadata chunk is written.
pub(crate) struct AnimEncoder {
    encoder: AnimGuard,
    config: sys::WebPConfig,
    size: (u32, u32),
    /// Start of the next frame, milliseconds.
    timestamp: c_int,
    frames: u32,
}

impl AnimEncoder {
    /// An animation of `width`×`height` frames that plays `loop_count`
    /// times (0: forever), at `quality`.
    pub(crate) fn new(width: u32, height: u32, loop_count: u16, quality: u8) -> Result<Self, ImageError> {
        let max = super::webp::MAX_DIMENSION;
        if width == 0 || height == 0 || width > max || height > max {
            return Err(ImageError::Encode(format!("webp: {width}x{height} is outside 1..={max}")));
        }
        let config = lossy_config(quality)?;
        let abi = sys::WEBP_MUX_ABI_VERSION as c_int;
        // SAFETY: OptionsInit fills every field when it returns non-zero.
        let mut options = unsafe {
            let mut o = MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
            if sys::WebPAnimEncoderOptionsInitInternal(o.as_mut_ptr(), abi) == 0 {
                return Err(ImageError::Encode("webp: animation options init failed".into()));
            }
            o.assume_init()
        };
        options.anim_params.loop_count = c_int::from(loop_count);
        // Transparent background: what a composited frame's disposed areas are.
        options.anim_params.bgcolor = 0;
        // SAFETY: options are initialised; the encoder is freed by AnimGuard.
        let encoder =
            AnimGuard(unsafe { sys::WebPAnimEncoderNewInternal(width as c_int, height as c_int, &options, abi) });
        if encoder.0.is_null() {
            return Err(ImageError::Encode("webp: animation encoder init failed".into()));
        }
        Ok(Self { encoder, config, size: (width, height), timestamp: 0, frames: 0 })
    }

    /// Adds the next frame (RGB or RGBA, the animation's size), shown for
    /// `delay_ms`.
    pub(crate) fn add(&mut self, frame: &Bitmap, delay_ms: u32) -> Result<(), ImageError> {
        let (w, h) = self.size;
        let c = usize::from(frame.channels);
        if (frame.width, frame.height) != (w, h)
            || !(c == 3 || c == 4)
            || frame.data.len() != w as usize * h as usize * c
        {
            return Err(ImageError::Encode("webp: an animation frame has the wrong size".into()));
        }
        let mut picture = PictureGuard::new()?;
        let pic = &mut picture.0;
        pic.use_argb = 1; // the animation encoder compares frames in ARGB
        pic.width = w as c_int;
        pic.height = h as c_int;
        let stride = (w as usize * c) as c_int;
        // SAFETY: `data` holds h rows of `stride` bytes (checked above);
        // libwebp copies them into planes PictureGuard frees.
        let imported = unsafe {
            if c == 4 {
                sys::WebPPictureImportRGBA(pic, frame.data.as_ptr(), stride)
            } else {
                sys::WebPPictureImportRGB(pic, frame.data.as_ptr(), stride)
            }
        };
        if imported == 0 {
            return Err(ImageError::Encode("webp: frame import failed".into()));
        }
        // SAFETY: encoder, picture and config are initialised; libwebp
        // copies what it keeps of the picture.
        if unsafe { sys::WebPAnimEncoderAdd(self.encoder.0, pic, self.timestamp, &self.config) } == 0 {
            return Err(ImageError::Encode("webp: adding a frame failed".into()));
        }
        self.timestamp = self.timestamp.saturating_add(delay_ms.min(i32::MAX as u32) as c_int);
        self.frames += 1;
        Ok(())
    }

    /// Ends the animation (the last frame lasts until its delay is over) and
    /// returns the file.
    pub(crate) fn finish(self) -> Result<Vec<u8>, ImageError> {
        if self.frames == 0 {
            return Err(ImageError::Encode("webp: an animation needs a frame".into()));
        }
        // SAFETY: a null picture is how the API flushes; its timestamp is
        // the end of the last frame.
        if unsafe { sys::WebPAnimEncoderAdd(self.encoder.0, std::ptr::null_mut(), self.timestamp, std::ptr::null()) }
            == 0
        {
            return Err(ImageError::Encode("webp: finishing the animation failed".into()));
        }
        let mut data = DataGuard(sys::WebPData { bytes: std::ptr::null(), size: 0 });
        // SAFETY: the encoder is initialised; `data` receives a buffer DataGuard frees.
        if unsafe { sys::WebPAnimEncoderAssemble(self.encoder.0, &mut data.0) } == 0 || data.0.bytes.is_null() {
            return Err(ImageError::Encode("webp: assembling the animation failed".into()));
        }
        // The compressed frames go before the copy is made.
        drop(self.encoder);
        // SAFETY: libwebp wrote `size` initialised bytes at `bytes`.
        Ok(unsafe { std::slice::from_raw_parts(data.0.bytes, data.0.size) }.to_vec())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame as ImageFrame, Rgba, RgbaImage};

    /// A GIF of `colors`, each frame shown for `delays_ms`.
    pub(crate) fn gif(w: u32, h: u32, colors: &[[u8; 4]], delays_ms: &[u32], repeat: Option<Repeat>) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut out);
            if let Some(repeat) = repeat {
                enc.set_repeat(repeat).unwrap();
            }
            for (c, d) in colors.iter().zip(delays_ms) {
                let img = RgbaImage::from_pixel(w, h, Rgba(*c));
                enc.encode_frame(ImageFrame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(*d, 1))).unwrap();
            }
        }
        out
    }

    /// The ANMF chunks of a WebP: (duration ms, x, y, w, h).
    pub(crate) fn anmf(webp: &[u8]) -> Vec<(u32, u32, u32, u32, u32)> {
        let le24 = |b: &[u8]| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
        let mut out = Vec::new();
        let mut i = 12;
        while i + 8 <= webp.len() {
            let size = u32::from_le_bytes(webp[i + 4..i + 8].try_into().unwrap()) as usize;
            if &webp[i..i + 4] == b"ANMF" {
                let p = &webp[i + 8..];
                out.push((le24(&p[12..]), le24(&p[0..]) * 2, le24(&p[3..]) * 2, le24(&p[6..]) + 1, le24(&p[9..]) + 1));
            }
            i += 8 + size + (size & 1);
        }
        out
    }

    #[test]
    fn loop_counts_as_browsers_play_them() {
        let colors = [[255, 0, 0, 255], [0, 255, 0, 255]];
        let g = gif(20, 10, &colors, &[100, 200], Some(Repeat::Infinite));
        assert_eq!(loop_count(&g, SourceFormat::Gif), 0, "forever");
        let g = gif(20, 10, &colors, &[100, 200], Some(Repeat::Finite(3)));
        assert_eq!(loop_count(&g, SourceFormat::Gif), 4, "3 repeats: 4 plays");
        let g = gif(20, 10, &colors, &[100, 200], None);
        assert_eq!(loop_count(&g, SourceFormat::Gif), 1, "no NETSCAPE block: once");
        assert_eq!(loop_count(b"GIF89a", SourceFormat::Gif), 1);
    }

    fn decode_all(bytes: &[u8], format: SourceFormat) -> Vec<(Bitmap, u32)> {
        let mut frames = Vec::new();
        decode_frames(bytes, format, 100, &Cancel::new(), |b, d, _| {
            frames.push((b, d));
            Ok(())
        })
        .unwrap();
        frames
    }

    #[test]
    fn gif_to_animated_webp_keeps_frames_timing_and_loop() {
        let colors = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
        let g = gif(40, 20, &colors, &[100, 200, 0], Some(Repeat::Finite(2)));
        let frames = decode_all(&g, SourceFormat::Gif);
        assert_eq!(frames.iter().map(|f| f.1).collect::<Vec<_>>(), [100, 200, 100], "0 ms is shown for 100");
        let mut enc = AnimEncoder::new(40, 20, loop_count(&g, SourceFormat::Gif), 90).unwrap();
        for (b, d) in &frames {
            enc.add(b, *d).unwrap();
        }
        let webp = enc.finish().unwrap();
        assert_eq!(loop_count(&webp, SourceFormat::Webp), 3);
        assert_eq!(anmf(&webp).iter().map(|f| f.0).collect::<Vec<_>>(), [100, 200, 100]);
        // Decoded back: the colours and durations of the source.
        let back = decode_all(&webp, SourceFormat::Webp);
        assert_eq!(back.len(), 3);
        for ((bitmap, delay), (want, want_delay)) in back.iter().zip(colors.iter().zip([100, 200, 100])) {
            let px = &bitmap.data[..3];
            assert!(px.iter().zip(want).all(|(a, b)| a.abs_diff(*b) < 40), "{px:?} vs {want:?}");
            assert_eq!(*delay, want_delay);
        }
    }

    #[test]
    fn the_frame_cap_and_cancel_hold() {
        let colors = [[255, 0, 0, 255]; 5];
        let g = gif(8, 8, &colors, &[50; 5], None);
        let r = decode_frames(&g, SourceFormat::Gif, 4, &Cancel::new(), |_, _, _| Ok(()));
        assert_eq!(r.unwrap_err(), ImageError::TooManyFrames { frames: 5, max: 4 });
        let cancel = Cancel::new();
        cancel.cancel();
        let r = decode_frames(&g, SourceFormat::Gif, 10, &cancel, |_, _, _| Ok(()));
        assert_eq!(r.unwrap_err(), ImageError::Cancelled);
        assert!(AnimEncoder::new(8, 8, 0, 80).unwrap().finish().is_err(), "no frames");
        assert!(AnimEncoder::new(0, 8, 0, 80).is_err());
    }
}
