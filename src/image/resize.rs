//! Lanczos3 downscaling with fast_image_resize (SIMD, runtime CPU detection)
//! and EXIF orientation.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, RgbImage, RgbaImage};

use super::{Bitmap, ImageError, Orientation};

/// Resizes `src` to exactly `width`x`height` with a Lanczos3 convolution.
/// Returns `src` untouched when it already has that size.
///
/// RGBA is premultiplied before filtering and un-premultiplied after
/// (fast_image_resize's `MulDiv`, enabled by `use_alpha(true)`), so fully
/// transparent pixels cannot bleed their (arbitrary) colour into visible
/// neighbours.
pub(crate) fn resize(src: Bitmap, width: u32, height: u32) -> Result<Bitmap, ImageError> {
    if src.width == width && src.height == height {
        return Ok(src);
    }
    let pixel_type = if src.has_alpha() { PixelType::U8x4 } else { PixelType::U8x3 };
    let channels = src.channels;
    let src_img = Image::from_vec_u8(src.width, src.height, src.data, pixel_type)
        .map_err(|e| ImageError::Decode(format!("resize source: {e}")))?;
    let mut dst_img = Image::new(width, height, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(true);
    Resizer::new().resize(&src_img, &mut dst_img, &options).map_err(|e| ImageError::Decode(format!("resize: {e}")))?;
    Ok(Bitmap { width, height, channels, data: dst_img.into_vec() })
}

/// Applies an EXIF orientation (1–8) so the result is upright. Done after
/// resizing, where the image is small and the copy is cheap.
pub(crate) fn orient(bitmap: Bitmap, orientation: Orientation) -> Bitmap {
    let Some(o) = image::metadata::Orientation::from_exif(orientation.value()) else {
        return bitmap;
    };
    if o == image::metadata::Orientation::NoTransforms {
        return bitmap;
    }
    let Bitmap { width, height, channels, data } = bitmap;
    // from_raw only fails on a buffer/size mismatch, an internal bug; the
    // panic guard in `thumbnail` turns that into an error.
    let mut img = if channels == 4 {
        match RgbaImage::from_raw(width, height, data) {
            Some(b) => DynamicImage::ImageRgba8(b),
            None => unreachable_bitmap(),
        }
    } else {
        match RgbImage::from_raw(width, height, data) {
            Some(b) => DynamicImage::ImageRgb8(b),
            None => unreachable_bitmap(),
        }
    };
    img.apply_orientation(o);
    let (width, height) = (img.width(), img.height());
    let data = match img {
        DynamicImage::ImageRgba8(b) => b.into_raw(),
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        other if channels == 4 => other.into_rgba8().into_raw(),
        other => other.into_rgb8().into_raw(),
    };
    Bitmap { width, height, channels, data }
}

#[cold]
fn unreachable_bitmap() -> DynamicImage {
    panic!("internal error: bitmap buffer does not match its dimensions")
}
