//! Real test images, generated: decoded pixels are checked, so each image has
//! something recognisable (a red top-left corner, a transparent half).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A `w`×`h` gradient whose top-left quarter is pure red.
pub fn marked(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 4 && y < h / 4 {
            Rgb([255, 0, 0])
        } else {
            Rgb([(x * 200 / w) as u8 + 20, (y * 200 / h) as u8 + 20, 160])
        }
    })
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A JPEG of [`marked`].
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(marked(w, h)), ImageFormat::Jpeg)
}

/// A PNG of [`marked`].
pub fn png(w: u32, h: u32) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(marked(w, h)), ImageFormat::Png)
}

/// An RGBA PNG: left half fully transparent, right half opaque blue.
pub fn png_rgba(w: u32, h: u32) -> Vec<u8> {
    let img = RgbaImage::from_fn(w, h, |x, _| if x < w / 2 { Rgba([0, 255, 0, 0]) } else { Rgba([0, 0, 255, 255]) });
    encode(&DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

/// Inserts an EXIF APP1 segment (Orientation, plus a GPS IFD with a latitude)
/// right after the JPEG's SOI marker.
pub fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    // Big-endian TIFF: IFD0 with Orientation and a GPS IFD pointer, then the GPS IFD.
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend([0, 2]); // two entries
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0]);
    tiff.extend([0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38]); // GPS IFD at offset 38
    tiff.extend([0, 0, 0, 0]); // no next IFD
    tiff.extend([0, 1]); // GPS IFD: one entry, GPSLatitudeRef = 'N'
    tiff.extend([0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
    tiff.extend([0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let len = (app1.len() + 2) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend([0xff, 0xe1]);
    out.extend(len.to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

/// A PNG whose header claims `w`×`h` pixels, with almost no data behind it.
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc.to_be_bytes());
    out.extend(b"\0\0\0\x04IDAT\x78\x9c\0\0\0\0\0\0");
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Decodes an answer's bytes.
pub fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("the answer decodes")
}

/// Whether a pixel is close to a colour.
pub fn near(p: [u8; 4], want: [u8; 3], tolerance: u8) -> bool {
    (0..3).all(|i| p[i].abs_diff(want[i]) <= tolerance)
}
