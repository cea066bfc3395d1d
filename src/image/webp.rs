//! Minimal safe wrapper over libwebp's advanced encoding API (libwebp-sys
//! 0.14, vendored libwebp 1.6.0).
//!
//! The `webp` crate is deliberately not used: its 0.3 line pulls libwebp
//! 1.3.1, which is vulnerable to CVE-2023-4863. Only encoding goes through C;
//! WebP *decoding* uses the pure-Rust image-webp.
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
