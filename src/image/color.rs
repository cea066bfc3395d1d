//! Conversion of embedded ICC profiles to sRGB with moxcms (pure Rust).
//!
//! Applied to the already-resized bitmap: converting a 512 px thumbnail costs
//! well under a millisecond, converting the 20 MP source would cost tens. The
//! resize happens in the source's encoded space either way (as it does for
//! sRGB sources), so the result differs from convert-then-resize only by
//! rounding.

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformExecutor, TransformOptions};

use super::Bitmap;

/// Converts `bitmap` from the colour space described by `icc` to sRGB, in
/// place. Does nothing when the profile is unparsable, is not an RGB
/// profile (CMYK/grey profiles do not describe our RGB pixels), or turns
/// out to be sRGB already.
pub(crate) fn to_srgb(bitmap: &mut Bitmap, icc: &[u8]) {
    let Ok(src) = ColorProfile::new_from_slice(icc) else {
        return;
    };
    if src.color_space != DataColorSpace::Rgb {
        return;
    }
    let layout = if bitmap.has_alpha() { Layout::Rgba } else { Layout::Rgb };
    let dst = ColorProfile::new_srgb();
    let Ok(transform) = src.create_transform_8bit(layout, &dst, layout, TransformOptions::default()) else {
        return;
    };
    if is_identity(transform.as_ref(), bitmap.channels) {
        return;
    }
    let mut out = vec![0u8; bitmap.data.len()];
    if transform.transform(&bitmap.data, &mut out).is_ok() {
        bitmap.data = out;
    }
}

/// Whether `t` maps a grid of test colours to themselves (±1), i.e. the
/// profile is sRGB or indistinguishable from it at 8 bits. This recognises
/// sRGB profiles by behaviour rather than by name (there are many variants:
/// IEC61966-2.1, "sRGB built-in", Facebook's compact "c2", …) and costs a
/// few microseconds.
fn is_identity(t: &(dyn TransformExecutor<u8> + Send + Sync), channels: u8) -> bool {
    const LEVELS: [u8; 6] = [0, 51, 102, 153, 204, 255];
    let ch = usize::from(channels);
    let mut src = Vec::with_capacity(LEVELS.len().pow(3) * ch);
    for r in LEVELS {
        for g in LEVELS {
            for b in LEVELS {
                src.extend_from_slice(&[r, g, b, 255][..ch]);
            }
        }
    }
    let mut dst = vec![0u8; src.len()];
    if t.transform(&src, &mut dst).is_err() {
        return false;
    }
    src.iter().zip(&dst).all(|(a, b)| a.abs_diff(*b) <= 1)
}
