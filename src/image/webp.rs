//! Minimal safe wrapper over libwebp's advanced encoding API and its
//! incremental decoder (libwebp-sys 0.14, vendored libwebp 1.6.0).
//!
//! The `webp` crate is deliberately not used: its 0.3 line pulls libwebp
//! 1.3.1, which is vulnerable to CVE-2023-4863. Still WebP sources are
//! decoded here (2-3.5x faster than image-webp, shrunk while decoded);
//! animated ones go through the pure-Rust image-webp, frame by frame.
//!
//! Ownership: the `WebPPicture` (and the pixel planes libwebp allocates for
//! it on import) is freed by [`PictureGuard`], the output buffer by
//! [`WriterGuard`], on every path including errors.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libwebp_sys as sys;

use super::{Cancel, ImageError};

/// Largest width/height a WebP image may have.
pub(crate) const MAX_DIMENSION: u32 = 16383;

/// Encodes tightly packed 8-bit RGB (`channels == 3`) or straight-alpha RGBA
/// (`channels == 4`) as lossy WebP at `quality` (0–100), method 4 (libwebp's
/// default speed/size trade-off), single-threaded. The output is a bare
/// `VP8 `/`VP8X+ALPH` file: no EXIF, XMP or ICC chunk is ever written. An
/// alpha channel that is fully opaque is dropped by libwebp itself.
#[cfg(test)]
pub(crate) fn encode_lossy(
    data: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    quality: u8,
) -> Result<Vec<u8>, ImageError> {
    encode_lossy_cancellable(data, width, height, channels, quality, &Cancel::new())
}

/// [`encode_lossy`], stopped by libwebp itself (its progress hook, called
/// between the encoder's passes over the picture) once `cancel` is raised.
pub(crate) fn encode_lossy_cancellable(
    data: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    quality: u8,
    cancel: &Cancel,
) -> Result<Vec<u8>, ImageError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(ImageError::Encode(format!("webp: {width}x{height} is outside 1..={MAX_DIMENSION}")));
    }
    if !(channels == 3 || channels == 4) || data.len() != width as usize * height as usize * usize::from(channels) {
        return Err(ImageError::Encode("webp: pixel buffer size mismatch".into()));
    }
    let config = lossy_config(quality)?;

    let mut picture = PictureGuard::new()?;
    let pic = &mut picture.0;
    pic.use_argb = 0; // lossy: import straight into YUV(A)
    pic.width = width as c_int;
    pic.height = height as c_int;
    let stride = (width * u32::from(channels)) as c_int;
    // SAFETY: `data` holds exactly height rows of `stride` bytes (checked
    // above); libwebp copies the pixels into planes it owns, freed by
    // WebPPictureFree in PictureGuard::drop.
    let imported = unsafe {
        if channels == 4 {
            sys::WebPPictureImportRGBA(pic, data.as_ptr(), stride)
        } else {
            sys::WebPPictureImportRGB(pic, data.as_ptr(), stride)
        }
    };
    if imported == 0 {
        return Err(ImageError::Encode(format!("webp: import failed ({:?})", pic.error_code)));
    }

    let mut writer = WriterGuard::new();
    pic.writer = Some(sys::WebPMemoryWrite);
    pic.custom_ptr = (&mut writer.0 as *mut sys::WebPMemoryWriter).cast();
    pic.progress_hook = Some(progress);
    pic.user_data = (cancel as *const Cancel).cast_mut().cast();
    // SAFETY: config and picture are initialised; custom_ptr points at a
    // WebPMemoryWriter and user_data at a Cancel, both of which outlive the
    // call and are not moved during it.
    let ok = unsafe { sys::WebPEncode(&config, pic) };
    if ok == 0 {
        if cancel.is_cancelled() {
            return Err(ImageError::Cancelled);
        }
        return Err(ImageError::Encode(format!("webp: encoding failed ({:?})", pic.error_code)));
    }
    let w = &writer.0;
    if w.mem.is_null() || w.size == 0 {
        return Err(ImageError::Encode("webp: empty output".into()));
    }
    // SAFETY: the memory writer owns `size` initialised bytes at `mem`.
    Ok(unsafe { std::slice::from_raw_parts(w.mem, w.size) }.to_vec())
}

/// libwebp's lossy configuration at `quality` (0–100): method 4 (its default
/// speed/size trade-off), single-threaded (renders run on their own pool).
pub(crate) fn lossy_config(quality: u8) -> Result<sys::WebPConfig, ImageError> {
    let abi = sys::WEBP_ENCODER_ABI_VERSION as c_int;

    // SAFETY: WebPConfigInitInternal fully initialises the struct when it
    // returns non-zero (it only fails on an ABI mismatch).
    let mut config = unsafe {
        let mut c = MaybeUninit::<sys::WebPConfig>::uninit();
        if sys::WebPConfigInitInternal(
            c.as_mut_ptr(),
            sys::WebPPreset::WEBP_PRESET_DEFAULT,
            f32::from(quality.min(100)),
            abi,
        ) == 0
        {
            return Err(ImageError::Encode("webp: config init failed".into()));
        }
        c.assume_init()
    };
    config.method = 4;
    config.thread_level = 0;
    // SAFETY: config is initialised.
    if unsafe { sys::WebPValidateConfig(&config) } == 0 {
        return Err(ImageError::Encode("webp: invalid config".into()));
    }
    Ok(config)
}

/// libwebp's progress hook: returning 0 aborts the encode
/// (`VP8_ENC_ERROR_USER_ABORT`).
unsafe extern "C" fn progress(_percent: c_int, picture: *const sys::WebPPicture) -> c_int {
    // SAFETY: libwebp passes the picture being encoded, whose user_data was
    // set above to a Cancel that outlives WebPEncode.
    let cancel = unsafe { &*((*picture).user_data as *const Cancel) };
    c_int::from(!cancel.is_cancelled())
}

/// Owns an initialised `WebPPicture`; frees its pixel buffers on drop.
pub(crate) struct PictureGuard(pub(crate) sys::WebPPicture);

impl PictureGuard {
    pub(crate) fn new() -> Result<Self, ImageError> {
        // SAFETY: WebPPictureInitInternal zero-fills and initialises the
        // struct when it returns non-zero.
        unsafe {
            let mut p = MaybeUninit::<sys::WebPPicture>::uninit();
            if sys::WebPPictureInitInternal(p.as_mut_ptr(), sys::WEBP_ENCODER_ABI_VERSION as c_int) == 0 {
                return Err(ImageError::Encode("webp: picture init failed".into()));
            }
            Ok(PictureGuard(p.assume_init()))
        }
    }
}

impl Drop for PictureGuard {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised; freeing an unallocated one is
        // a no-op.
        unsafe { sys::WebPPictureFree(&mut self.0) }
    }
}

/// Owns a `WebPMemoryWriter`; frees the encoded buffer on drop.
struct WriterGuard(sys::WebPMemoryWriter);

impl WriterGuard {
    fn new() -> Self {
        // SAFETY: WebPMemoryWriterInit initialises every field.
        unsafe {
            let mut w = MaybeUninit::<sys::WebPMemoryWriter>::uninit();
            sys::WebPMemoryWriterInit(w.as_mut_ptr());
            WriterGuard(w.assume_init())
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        // SAFETY: initialised by WebPMemoryWriterInit; Clear frees `mem`
        // (WebPFree) and resets the writer.
        unsafe { sys::WebPMemoryWriterClear(&mut self.0) }
    }
}

/// Decodes a still WebP with libwebp, straight to `out` pixels (`(width,
/// height)`, which may be smaller than the image: libwebp's rescaler
/// area-averages while it decodes, so the full-size image is never held),
/// as RGB (`channels == 3`) or straight-alpha RGBA (`channels == 4`).
///
/// The input is fed in 64 KiB steps to the incremental decoder, with
/// `cancel` checked between them. libwebp is the decoder browsers use
/// (this is 1.6, after the CVE-2023-4863 fix); it is 2x faster than
/// image-webp here and is what lets a large WebP be shrunk on load.
pub(crate) fn decode_still(data: &[u8], out: (u32, u32), channels: u8, cancel: &Cancel) -> Result<Vec<u8>, ImageError> {
    const STEP: usize = 64 << 10;
    let (w, h) = out;
    if w == 0 || h == 0 || w > MAX_DIMENSION || h > MAX_DIMENSION || !(channels == 3 || channels == 4) {
        return Err(ImageError::Decode(format!("webp: cannot decode to {w}x{h}x{channels}")));
    }
    let stride = w as usize * usize::from(channels);
    let mut pixels = vec![0u8; stride * h as usize];
    // SAFETY: WebPInitDecoderConfig initialises every field when it returns
    // true (false only on an ABI mismatch).
    let mut config = unsafe {
        let mut c = MaybeUninit::<sys::WebPDecoderConfig>::zeroed();
        if !sys::WebPInitDecoderConfig(c.as_mut_ptr()) {
            return Err(ImageError::Decode("webp: decoder config init failed".into()));
        }
        c.assume_init()
    };
    config.options.use_threads = 0;
    config.options.use_scaling = 1;
    config.options.scaled_width = w as c_int;
    config.options.scaled_height = h as c_int;
    config.output.colorspace = if channels == 4 { sys::WEBP_CSP_MODE::MODE_RGBA } else { sys::WEBP_CSP_MODE::MODE_RGB };
    config.output.is_external_memory = 1;
    config.output.u.RGBA =
        sys::WebPRGBABuffer { rgba: pixels.as_mut_ptr(), stride: stride as c_int, size: pixels.len() };
    // SAFETY: the config is initialised and its output points at `pixels`,
    // which holds `h` rows of `stride` bytes and outlives the decoder (the
    // guard deletes it before `pixels` can move or drop).
    let decoder = unsafe { sys::WebPIDecode(std::ptr::null(), 0, &mut config) };
    if decoder.is_null() {
        return Err(ImageError::Decode("webp: could not start the decoder".into()));
    }
    struct Guard(*mut sys::WebPIDecoder);
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: made by WebPIDecode above and deleted once, here.
            unsafe { sys::WebPIDelete(self.0) }
        }
    }
    let guard = Guard(decoder);
    let mut fed = 0;
    loop {
        cancel.check()?;
        fed = (fed + STEP).min(data.len());
        // SAFETY: `data[..fed]` is valid for the call; WebPIUpdate copies
        // nothing it keeps beyond the next call, which passes a prefix of
        // the same buffer (as its contract asks).
        match unsafe { sys::WebPIUpdate(guard.0, data.as_ptr(), fed) } {
            sys::VP8StatusCode::VP8_STATUS_OK => break,
            sys::VP8StatusCode::VP8_STATUS_SUSPENDED if fed < data.len() => {}
            sys::VP8StatusCode::VP8_STATUS_SUSPENDED => {
                return Err(ImageError::Decode("truncated WebP: the image data ends early".into()));
            }
            sys::VP8StatusCode::VP8_STATUS_UNSUPPORTED_FEATURE => {
                return Err(ImageError::Unsupported("webp: a feature libwebp cannot decode".into()));
            }
            other => return Err(ImageError::Decode(format!("webp: {other:?}"))),
        }
    }
    drop(guard);
    Ok(pixels)
}

/// The ICC profile of an extended WebP (its `ICCP` chunk), if any.
pub(crate) fn icc_profile(data: &[u8]) -> Option<Vec<u8>> {
    if data.get(0..4)? != b"RIFF" || data.get(8..12)? != b"WEBP" || data.get(12..16)? != b"VP8X" {
        return None;
    }
    let mut at = 12;
    while let Some(header) = data.get(at..at + 8) {
        let size = u32::from_le_bytes(header[4..8].try_into().ok()?) as usize;
        let payload = data.get(at + 8..(at + 8).checked_add(size)?)?;
        if &header[..4] == b"ICCP" {
            return Some(payload.to_vec());
        }
        at = at + 8 + size + (size & 1);
    }
    None
}
