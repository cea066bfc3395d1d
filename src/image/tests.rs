//! Tests on synthetic images generated here (no files are read): every
//! assertion is about decoded output pixels, dimensions or bytes.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{DynamicImage, GenericImageView, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};

use super::decode::jpeg_scale;
use super::*;

// ---------------------------------------------------------------- helpers

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];

/// A smooth grey-blue gradient with a red block in the top-left and a green
/// block in the top-right corner, so every orientation is distinguishable.
fn marked_rgb(w: u32, h: u32) -> RgbImage {
    let bw = (w / 4).max(2);
    let bh = (h / 4).max(2);
    RgbImage::from_fn(w, h, |x, y| {
        if x < bw && y < bh {
            Rgb(RED)
        } else if x >= w - bw && y < bh {
            Rgb(GREEN)
        } else {
            let v = (60 + (x * 100 / w) + (y * 60 / h)) as u8;
            Rgb([v, v, v.saturating_add(40)])
        }
    })
}

/// Pseudo-random but deterministic noise, for size comparisons (and for
/// `dc_scans`' tests, which need AC coefficients to leave out).
pub(super) fn noisy_rgb(w: u32, h: u32) -> RgbImage {
    let mut s: u32 = 0x1234_5678;
    RgbImage::from_fn(w, h, |x, y| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let n = (s & 0x3f) as u8;
        Rgb([(x * 255 / w) as u8 / 2 + n, (y * 255 / h) as u8 / 2 + n, 128 + n / 2])
    })
}

/// A big-endian TIFF/EXIF block with a single IFD0 entry: Orientation.
fn exif_orientation_block(orientation: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(b"MM\0\x2a");
    t.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_be_bytes()); // count
    t.extend_from_slice(&orientation.to_be_bytes());
    t.extend_from_slice(&[0, 0]); // value padding
    t.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    t
}

#[derive(Default)]
struct JpegMeta {
    orientation: Option<u16>,
    icc: Option<Vec<u8>>,
    xmp: bool,
}

fn jpeg_from_rgb(img: &RgbImage, quality: u8, meta: &JpegMeta) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, quality);
    if let Some(o) = meta.orientation {
        enc.add_exif_metadata(&exif_orientation_block(o)).unwrap();
    }
    if let Some(icc) = &meta.icc {
        enc.add_icc_profile(icc).unwrap();
    }
    if meta.xmp {
        let mut xmp = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
        xmp.extend_from_slice(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>GPS 52.1N</x:xmpmeta>");
        enc.add_app_segment(1, xmp).unwrap();
    }
    enc.encode(img.as_raw(), img.width() as u16, img.height() as u16, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

fn png_from(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn thumb(bytes: &[u8], width: u32, format: OutputFormat) -> Thumbnail {
    thumbnail(bytes, &ThumbSpec::of_width(width, format, 90), &Limits::default())
        .unwrap_or_else(|e| panic!("thumbnail failed: {e}"))
}

/// Decodes an output with the `image` crate and checks it agrees with the
/// reported dimensions.
fn decode_output(t: &Thumbnail) -> DynamicImage {
    let img = image::load_from_memory(&t.bytes).expect("output decodes");
    assert_eq!((img.width(), img.height()), (t.width, t.height));
    img
}

fn rgb_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tol)
}

/// Which corner of `img` holds (approximately) `colour`.
fn corner_of(img: &DynamicImage, colour: [u8; 3]) -> &'static str {
    let (w, h) = (img.width(), img.height());
    let (dx, dy) = ((w / 16).max(1), (h / 16).max(1));
    let corners = [("TL", dx, dy), ("TR", w - 1 - dx, dy), ("BL", dx, h - 1 - dy), ("BR", w - 1 - dx, h - 1 - dy)];
    let hits: Vec<_> = corners.iter().filter(|(_, x, y)| close(rgb_at(img, *x, *y), colour, 60)).map(|c| c.0).collect();
    assert_eq!(hits.len(), 1, "colour {colour:?} in corners {hits:?}");
    hits[0]
}

/// Metadata chunk/segment names present in an encoded output.
fn metadata_in(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    match sniff(bytes) {
        Some(SourceFormat::Jpeg) => {
            // Walk segments until SOS; APP1 (EXIF/XMP), APP2 (ICC), APP13
            // (IPTC) and COM are metadata. APP0 (JFIF) is not.
            let mut i = 2;
            while i + 4 <= bytes.len() && bytes[i] == 0xFF {
                let m = bytes[i + 1];
                if m == 0xDA {
                    break;
                }
                let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
                if matches!(m, 0xE1..=0xEF | 0xFE) {
                    found.push(format!("marker {m:02X}"));
                }
                i += 2 + len;
            }
        }
        Some(SourceFormat::Png) => {
            let mut i = 8;
            while i + 8 <= bytes.len() {
                let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
                let kind = String::from_utf8_lossy(&bytes[i + 4..i + 8]).to_string();
                if matches!(kind.as_str(), "eXIf" | "iCCP" | "iTXt" | "tEXt" | "zTXt" | "sRGB" | "gAMA" | "cHRM") {
                    found.push(kind);
                }
                i += 12 + len;
            }
        }
        Some(SourceFormat::Webp) => {
            let mut i = 12;
            while i + 8 <= bytes.len() {
                let kind = String::from_utf8_lossy(&bytes[i..i + 4]).to_string();
                let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().unwrap()) as usize;
                if matches!(kind.as_str(), "EXIF" | "XMP " | "ICCP") {
                    found.push(kind);
                }
                i += 8 + len + (len & 1);
            }
        }
        other => panic!("unexpected output format {other:?}"),
    }
    found
}

// ---------------------------------------------------------------- sniff / probe

#[test]
fn sniff_recognises_magic_bytes() {
    let cases: [(&[u8], Option<SourceFormat>); 10] = [
        (b"\xFF\xD8\xFF\xE0rest", Some(SourceFormat::Jpeg)),
        (b"\x89PNG\r\n\x1a\nrest", Some(SourceFormat::Png)),
        (b"RIFF\0\0\0\0WEBPVP8 ", Some(SourceFormat::Webp)),
        (b"GIF89a....", Some(SourceFormat::Gif)),
        (b"II*\0\x08\0\0\0", Some(SourceFormat::Tiff)),
        (b"MM\0*\0\0\0\x08", Some(SourceFormat::Tiff)),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", Some(SourceFormat::Avif)),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", Some(SourceFormat::Heif)),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"hello world", None),
    ];
    for (bytes, want) in cases {
        assert_eq!(sniff(bytes), want, "{bytes:?}");
    }
    assert_eq!(sniff(b""), None);
    assert_eq!(sniff(b"BM plain text that starts with BM"), None);
}

#[test]
fn probe_reads_header_dimensions() {
    let img = marked_rgb(123, 45);
    let jpeg = jpeg_from_rgb(&img, 90, &JpegMeta::default());
    let info = probe(&jpeg).unwrap();
    assert_eq!((info.format, info.width, info.height), (SourceFormat::Jpeg, 123, 45));
    assert_eq!((info.channels, info.bit_depth, info.frames, info.buffered, info.orientation), (3, 8, 1, false, 1));
    let dynimg = DynamicImage::ImageRgb8(img.clone());
    let png = png_from(&dynimg);
    assert_eq!(probe(&png).unwrap().width, 123);
    assert_eq!(probe(&png).unwrap().height, 45);

    let mut gif = Vec::new();
    dynimg.write_to(&mut Cursor::new(&mut gif), image::ImageFormat::Gif).unwrap();
    assert_eq!(probe(&gif).unwrap().format, SourceFormat::Gif);
    assert_eq!((probe(&gif).unwrap().width, probe(&gif).unwrap().height), (123, 45));

    let mut bmp = Vec::new();
    dynimg.write_to(&mut Cursor::new(&mut bmp), image::ImageFormat::Bmp).unwrap();
    let info = probe(&bmp).unwrap();
    assert_eq!((info.format, info.width, info.height), (SourceFormat::Bmp, 123, 45));

    // Lossy (VP8) from libwebp, lossless (VP8L) from image-webp.
    let lossy = webp::encode_lossy(img.as_raw(), 123, 45, 3, 80).unwrap();
    let info = probe(&lossy).unwrap();
    assert_eq!((info.format, info.width, info.height), (SourceFormat::Webp, 123, 45));
    let mut lossless = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut lossless)
        .write_image(img.as_raw(), 123, 45, image::ExtendedColorType::Rgb8)
        .unwrap();
    let info = probe(&lossless).unwrap();
    assert_eq!((info.width, info.height), (123, 45));
    // Lossy with alpha is VP8X + ALPH + VP8.
    let rgba = DynamicImage::ImageRgb8(img).into_rgba8();
    let mut rgba_raw = rgba.into_raw();
    rgba_raw[3] = 0;
    let extended = webp::encode_lossy(&rgba_raw, 123, 45, 4, 80).unwrap();
    assert_eq!(&extended[12..16], b"VP8X");
    let info = probe(&extended).unwrap();
    assert_eq!((info.width, info.height), (123, 45));
}

#[test]
fn probe_reads_isobmff_and_tiff_but_thumbnail_refuses_them() {
    // Minimal HEIF-style box tree: ftyp, meta{hdlr, iprp{ipco{ispe, ispe}}}.
    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }
    let ispe = |w: u32, h: u32| {
        let mut b = vec![0u8; 4];
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        bx(b"ispe", &b)
    };
    let ipco = bx(b"ipco", &[ispe(160, 120), ispe(4032, 3024)].concat());
    let iprp = bx(b"iprp", &ipco);
    let meta = bx(b"meta", &[vec![0u8; 4], bx(b"hdlr", &[0u8; 24]), iprp].concat());
    let file = [bx(b"ftyp", b"avif\0\0\0\0avifmif1"), meta].concat();
    let info = probe(&file).unwrap();
    assert_eq!((info.format, info.width, info.height), (SourceFormat::Avif, 4032, 3024));
    let err = thumbnail(&file, &ThumbSpec::of_width(100, OutputFormat::Webp, 80), &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Unsupported(_)), "{err:?}");

    // Little-endian TIFF with ImageWidth (SHORT) and ImageLength (LONG).
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&2u16.to_le_bytes());
    for (tag, typ, val) in [(256u16, 3u16, 640u32), (257, 4, 480)] {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&typ.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&val.to_le_bytes());
    }
    let info = probe(&tiff).unwrap();
    assert_eq!((info.format, info.width, info.height), (SourceFormat::Tiff, 640, 480));
}

#[test]
fn probe_errors() {
    assert!(matches!(probe(b"not an image"), Err(ImageError::Unsupported(_))));
    // JPEG magic but no frame header.
    assert!(matches!(probe(b"\xFF\xD8\xFF\xE0\x00\x10JFIF"), Err(ImageError::Decode(_))));
    // PNG claiming 0x0.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&[0; 8]);
    assert!(matches!(probe(&png), Err(ImageError::Decode(_))));
}

// ---------------------------------------------------------------- sizes

#[test]
fn output_dimensions_for_several_widths() {
    let jpeg = jpeg_from_rgb(&marked_rgb(400, 300), 90, &JpegMeta::default());
    for (w, want_h) in [(1, 1), (100, 75), (200, 150), (333, 250), (399, 299), (400, 300)] {
        for format in [OutputFormat::Webp, OutputFormat::Jpeg, OutputFormat::Png] {
            let t = thumb(&jpeg, w, format);
            assert_eq!((t.width, t.height), (w, want_h), "{format:?} width {w}");
            assert_eq!(t.format, format);
            decode_output(&t);
        }
    }
}

#[test]
fn never_upscales() {
    let png = png_from(&DynamicImage::ImageRgb8(marked_rgb(64, 40)));
    for w in [64, 65, 1000, u32::MAX] {
        let t = thumb(&png, w, OutputFormat::Png);
        assert_eq!((t.width, t.height), (64, 40));
        let out = decode_output(&t);
        assert_eq!(corner_of(&out, RED), "TL");
    }
}

#[test]
fn height_never_rounds_to_zero() {
    let png = png_from(&DynamicImage::ImageRgb8(marked_rgb(1000, 4)));
    let t = thumb(&png, 10, OutputFormat::Png);
    assert_eq!((t.width, t.height), (10, 1));
}

#[test]
fn target_size_and_dct_scale_choice() {
    let normal = Orientation::NORMAL;
    assert_eq!(target_size(6028, 3391, normal, 512), (512, 288));
    assert_eq!(target_size(6028, 3391, Orientation(6), 512), (512, 910));
    assert_eq!(target_size(100, 50, normal, 200), (100, 50));
    // 6028 px to 512: 1/4 gives 1507 >= 1024, 1/8 would give 754 < 1024.
    assert_eq!(jpeg_scale(6028, 3391, 512, 288, 200), 2);
    assert_eq!(jpeg_scale(6028, 3391, 256, 144, 200), 1);
    assert_eq!(jpeg_scale(6028, 3391, 1024, 576, 200), 3);
    assert_eq!(jpeg_scale(1000, 1000, 600, 600, 200), 8);
    assert_eq!(jpeg_scale(1000, 1000, 2000, 2000, 200), 8);
}

#[test]
fn large_jpeg_uses_dct_scaling_and_keeps_geometry() {
    // 2000x1200 -> 200 wide decodes at 1/2 (1000 >= 400 but 1/4 = 500 >= 400 too:
    // 1/8 = 250 < 400) = scale 2/8; whatever the scale, the result must be
    // exactly 200x120 and the corners must stay put.
    let jpeg = jpeg_from_rgb(&marked_rgb(2000, 1200), 92, &JpegMeta::default());
    assert_eq!(jpeg_scale(2000, 1200, 200, 120, 200), 2);
    let t = thumb(&jpeg, 200, OutputFormat::Png);
    assert_eq!((t.width, t.height), (200, 120));
    let out = decode_output(&t);
    assert_eq!(corner_of(&out, RED), "TL");
    assert_eq!(corner_of(&out, GREEN), "TR");
    // Gradient survives: mid-image pixel close to the source's.
    let src = marked_rgb(2000, 1200);
    let want = src.get_pixel(1000, 600).0;
    assert!(close(rgb_at(&out, 100, 60), want, 8), "{:?} vs {want:?}", rgb_at(&out, 100, 60));
}

#[test]
fn progressive_jpeg_at_an_eighth_skips_luma_ac_and_looks_the_same() {
    // 2400 px to 150: 1/8 gives 300 >= 1.4 × 150, so luma's AC scans are
    // left out of the decode (src/image/dc_scans.rs). The thumbnail must
    // match the one made from a baseline encoding of the same picture.
    assert_eq!(jpeg_scale(2400, 1600, 150, 100, 140), 1);
    let src = marked_rgb(2400, 1600);
    let mut progressive = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut progressive, 92);
    enc.set_progressive(true);
    enc.encode(src.as_raw(), 2400, 1600, jpeg_encoder::ColorType::Rgb).unwrap();
    let baseline = jpeg_from_rgb(&src, 92, &JpegMeta::default());
    let (p, b) = (thumb(&progressive, 150, OutputFormat::Png), thumb(&baseline, 150, OutputFormat::Png));
    assert_eq!((p.width, p.height), (150, 100));
    let (p, b) = (decode_output(&p), decode_output(&b));
    assert_eq!(corner_of(&p, RED), "TL");
    assert_eq!(corner_of(&p, GREEN), "TR");
    let worst = (0..100)
        .flat_map(|y| (0..150).map(move |x| (x, y)))
        .map(|(x, y)| rgb_at(&p, x, y).iter().zip(rgb_at(&b, x, y)).map(|(a, b)| a.abs_diff(b)).max().unwrap());
    let worst = worst.max().unwrap();
    assert!(worst <= 6, "largest channel difference against the baseline file's thumbnail: {worst}");
}

// ---------------------------------------------------------------- orientation

#[test]
fn exif_orientation_all_eight_values() {
    // (orientation, corner of red, corner of green) in the displayed image,
    // for a stored image with red top-left and green top-right.
    let expected = [
        (1, "TL", "TR"),
        (2, "TR", "TL"),
        (3, "BR", "BL"),
        (4, "BL", "BR"),
        (5, "TL", "BL"),
        (6, "TR", "BR"),
        (7, "BR", "TR"),
        (8, "BL", "TL"),
    ];
    let stored = marked_rgb(96, 64);
    for (o, red, green) in expected {
        let jpeg = jpeg_from_rgb(&stored, 95, &JpegMeta { orientation: Some(o), ..Default::default() });
        // Stored dimensions from probe, oriented ones from thumbnail.
        assert_eq!((probe(&jpeg).unwrap().width, probe(&jpeg).unwrap().height), (96, 64));
        let transposed = o >= 5;
        let (full_w, full_h) = if transposed { (64, 96) } else { (96, 64) };
        // Both without resizing and with a resize in between.
        for (w, want) in [(1000, (full_w, full_h)), (full_w / 2, (full_w / 2, full_h / 2))] {
            let t = thumb(&jpeg, w, OutputFormat::Png);
            assert_eq!((t.width, t.height), want, "orientation {o}, width {w}");
            let out = decode_output(&t);
            assert_eq!(corner_of(&out, RED), red, "orientation {o} red, width {w}");
            assert_eq!(corner_of(&out, GREEN), green, "orientation {o} green, width {w}");
        }
    }
}

#[test]
fn orientation_6_target_width_applies_to_displayed_image() {
    // Stored 200x100 landscape, displayed as 100x200 portrait.
    let jpeg = jpeg_from_rgb(&marked_rgb(200, 100), 90, &JpegMeta { orientation: Some(6), ..Default::default() });
    let t = thumb(&jpeg, 50, OutputFormat::Webp);
    assert_eq!((t.width, t.height), (50, 100));
    let out = decode_output(&t);
    assert_eq!(corner_of(&out, RED), "TR");
}

// ---------------------------------------------------------------- alpha

fn half_transparent_png() -> Vec<u8> {
    // Left half fully transparent (with garbage colour that must not bleed),
    // right half opaque blue.
    let img = RgbaImage::from_fn(64, 48, |x, _| if x < 32 { Rgba([255, 0, 255, 0]) } else { Rgba([0, 0, 255, 255]) });
    png_from(&DynamicImage::ImageRgba8(img))
}

#[test]
fn alpha_kept_in_webp_and_png() {
    let src = half_transparent_png();
    for format in [OutputFormat::Webp, OutputFormat::Png] {
        let t = thumb(&src, 32, format);
        assert_eq!((t.width, t.height), (32, 24));
        let out = decode_output(&t).into_rgba8();
        assert_eq!(out.get_pixel(2, 12).0[3], 0, "{format:?} transparent side");
        let opaque = out.get_pixel(29, 12).0;
        assert_eq!(opaque[3], 255, "{format:?} opaque side");
        // Premultiplied resize: no magenta fringe next to the edge.
        let edge = out.get_pixel(17, 12).0;
        assert!(edge[0] < 40 && edge[2] > 200, "{format:?} edge pixel {edge:?}");
    }
}

#[test]
fn alpha_flattened_onto_white_in_jpeg() {
    let t = thumb(&half_transparent_png(), 32, OutputFormat::Jpeg);
    let out = decode_output(&t);
    assert!(close(rgb_at(&out, 2, 12), [255, 255, 255], 6), "{:?}", rgb_at(&out, 2, 12));
    assert!(close(rgb_at(&out, 29, 12), [0, 0, 255], 12), "{:?}", rgb_at(&out, 29, 12));
}

// ---------------------------------------------------------------- outputs

#[test]
fn output_magic_bytes_and_mime() {
    let png = png_from(&DynamicImage::ImageRgb8(marked_rgb(50, 50)));
    let t = thumb(&png, 20, OutputFormat::Webp);
    assert!(t.bytes.starts_with(b"RIFF") && &t.bytes[8..12] == b"WEBP");
    let t = thumb(&png, 20, OutputFormat::Jpeg);
    assert!(t.bytes.starts_with(&[0xFF, 0xD8, 0xFF]));
    assert!(t.bytes.ends_with(&[0xFF, 0xD9]));
    let t = thumb(&png, 20, OutputFormat::Png);
    assert!(t.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));

    assert_eq!(OutputFormat::from_name("webp"), Some(OutputFormat::Webp));
    assert_eq!(OutputFormat::from_name("JPG"), Some(OutputFormat::Jpeg));
    assert_eq!(OutputFormat::from_name("jpeg"), Some(OutputFormat::Jpeg));
    assert_eq!(OutputFormat::from_name("png"), Some(OutputFormat::Png));
    assert_eq!(OutputFormat::from_name("gif"), None);
    assert_eq!(OutputFormat::Webp.mime(), "image/webp");
    assert_eq!(OutputFormat::Jpeg.mime(), "image/jpeg");
    assert_eq!(OutputFormat::Png.mime(), "image/png");
    assert_eq!(OutputFormat::Jpeg.extension(), "jpeg");
}

#[test]
fn outputs_carry_no_metadata() {
    let icc = moxcms::ColorProfile::new_srgb().encode().unwrap();
    let jpeg = jpeg_from_rgb(&marked_rgb(120, 80), 90, &JpegMeta { orientation: Some(1), icc: Some(icc), xmp: true });
    // Sanity: the checker does see the source's metadata.
    assert_eq!(metadata_in(&jpeg).len(), 3, "{:?}", metadata_in(&jpeg));
    for format in [OutputFormat::Webp, OutputFormat::Jpeg, OutputFormat::Png] {
        for w in [60, 120] {
            let t = thumb(&jpeg, w, format);
            assert_eq!(metadata_in(&t.bytes), Vec::<String>::new(), "{format:?}");
            let text = String::from_utf8_lossy(&t.bytes);
            assert!(!text.contains("Exif") && !text.contains("xmpmeta"));
        }
    }
    // RGBA WebP goes through VP8X: still no metadata chunks.
    let t = thumb(&half_transparent_png(), 32, OutputFormat::Webp);
    assert_eq!(&t.bytes[12..16], b"VP8X");
    assert_eq!(metadata_in(&t.bytes), Vec::<String>::new());
}

#[test]
fn quality_affects_size() {
    let jpeg = jpeg_from_rgb(&noisy_rgb(300, 200), 95, &JpegMeta::default());
    for format in [OutputFormat::Webp, OutputFormat::Jpeg] {
        let size = |quality| {
            thumbnail(&jpeg, &ThumbSpec::of_width(200, format, quality), &Limits::default()).unwrap().bytes.len()
        };
        let (low, high) = (size(30), size(95));
        assert!(low * 3 / 2 < high, "{format:?}: q30 {low} B vs q95 {high} B");
    }
}

// ---------------------------------------------------------------- colour

/// What a colour in `profile` should become in sRGB, by the colour engine directly.
fn to_srgb(profile: &moxcms::ColorProfile, colour: [u8; 3]) -> [u8; 3] {
    let t = profile
        .create_transform_8bit(
            moxcms::Layout::Rgb,
            &moxcms::ColorProfile::new_srgb(),
            moxcms::Layout::Rgb,
            Default::default(),
        )
        .unwrap();
    let mut out = [0u8; 3];
    t.transform(&colour, &mut out).unwrap();
    out
}

#[test]
fn display_p3_profile_converted_to_srgb() {
    let p3 = moxcms::ColorProfile::new_display_p3();
    let colour = [40u8, 180, 90];
    let img = RgbImage::from_pixel(64, 64, Rgb(colour));
    let jpeg = jpeg_from_rgb(&img, 100, &JpegMeta { icc: Some(p3.encode().unwrap()), ..Default::default() });
    // Reference: the same conversion done directly.
    let want = to_srgb(&p3, colour);
    assert!(!close(want, colour, 10), "test colour must move: {want:?}");

    let out = decode_output(&thumb(&jpeg, 32, OutputFormat::Png));
    assert!(close(rgb_at(&out, 16, 16), want, 4), "{:?} vs {want:?}", rgb_at(&out, 16, 16));

    // An sRGB profile (and no profile) leaves colours alone.
    let srgb_jpeg = jpeg_from_rgb(
        &img,
        100,
        &JpegMeta { icc: Some(moxcms::ColorProfile::new_srgb().encode().unwrap()), ..Default::default() },
    );
    for src in [srgb_jpeg, jpeg_from_rgb(&img, 100, &JpegMeta::default())] {
        let out = decode_output(&thumb(&src, 32, OutputFormat::Png));
        assert!(close(rgb_at(&out, 16, 16), colour, 3), "{:?}", rgb_at(&out, 16, 16));
    }
}

#[test]
fn adobe_rgb_png_with_alpha_converted() {
    let adobe = moxcms::ColorProfile::new_adobe_rgb();
    let colour = [60u8, 160, 200];
    let img = RgbaImage::from_pixel(40, 40, Rgba([colour[0], colour[1], colour[2], 200]));
    let mut png = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(&mut png);
    enc.set_icc_profile(adobe.encode().unwrap()).unwrap();
    enc.write_image(img.as_raw(), 40, 40, image::ExtendedColorType::Rgba8).unwrap();
    let want = to_srgb(&adobe, colour);
    let out = decode_output(&thumb(&png, 20, OutputFormat::Png)).into_rgba8();
    let p = out.get_pixel(10, 10).0;
    assert!(close([p[0], p[1], p[2]], want, 2), "{p:?} vs {want:?}");
    assert_eq!(p[3], 200);
}

// ---------------------------------------------------------------- decoders

fn cmyk_jpeg(color: jpeg_encoder::ColorType, cmyk: [u8; 4]) -> Vec<u8> {
    let data: Vec<u8> = std::iter::repeat_n(cmyk, 48 * 32).flatten().collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 95).encode(&data, 48, 32, color).unwrap();
    out
}

#[test]
fn cmyk_and_ycck_jpeg_decode_with_plausible_colours() {
    // (C, M, Y, K) -> roughly expected sRGB.
    let cases = [
        ([0u8, 255, 255, 0], [255u8, 0, 0]), // red
        ([255, 0, 255, 0], [0, 255, 0]),     // green
        ([0, 0, 0, 0], [255, 255, 255]),     // white
        ([0, 0, 0, 255], [0, 0, 0]),         // black
    ];
    for color in [jpeg_encoder::ColorType::Cmyk, jpeg_encoder::ColorType::CmykAsYcck] {
        for (cmyk, want) in cases {
            let jpeg = cmyk_jpeg(color, cmyk);
            let t = thumb(&jpeg, 24, OutputFormat::Png);
            assert_eq!((t.width, t.height), (24, 16));
            let got = rgb_at(&decode_output(&t), 12, 8);
            assert!(close(got, want, 40), "{color:?} {cmyk:?}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn png_16bit_palette_and_grey() {
    // 16-bit RGB.
    let img16 = image::ImageBuffer::<Rgb<u16>, _>::from_fn(80, 40, |x, _| {
        if x < 40 { Rgb([65535, 0, 0]) } else { Rgb([0, 0, 32768]) }
    });
    let png = png_from(&DynamicImage::ImageRgb16(img16));
    assert_eq!(png[24], 16, "bit depth in IHDR");
    let out = decode_output(&thumb(&png, 40, OutputFormat::Png));
    assert!(close(rgb_at(&out, 5, 10), [255, 0, 0], 2));
    assert!(close(rgb_at(&out, 35, 10), [0, 0, 128], 2));

    // 16-bit grey + alpha.
    let la16 = image::ImageBuffer::<image::LumaA<u16>, _>::from_pixel(10, 10, image::LumaA([30000, 65535]));
    let out = decode_output(&thumb(&png_from(&DynamicImage::ImageLumaA16(la16)), 5, OutputFormat::Png));
    assert!(close(rgb_at(&out, 2, 2), [117, 117, 117], 2), "{:?}", rgb_at(&out, 2, 2));

    // 8-bit palette with a transparent entry, written with the png crate.
    let mut pal_png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut pal_png, 16, 16);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 0]);
        enc.set_trns(vec![255, 255, 0]);
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..256)
            .map(|i| {
                if i % 16 < 8 {
                    0
                } else if i < 128 {
                    1
                } else {
                    2
                }
            })
            .collect();
        w.write_image_data(&data).unwrap();
    }
    let out = decode_output(&thumb(&pal_png, 16, OutputFormat::Png)).into_rgba8();
    assert_eq!(out.get_pixel(2, 2).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(12, 2).0, [0, 255, 0, 255]);
    assert_eq!(out.get_pixel(12, 12).0[3], 0);

    // Grey.
    let grey = image::GrayImage::from_fn(30, 30, |x, _| image::Luma([(x * 8) as u8]));
    let out = decode_output(&thumb(&png_from(&DynamicImage::ImageLuma8(grey)), 30, OutputFormat::Jpeg));
    let p = rgb_at(&out, 15, 15);
    assert!(p[0].abs_diff(120) < 6 && p[0].abs_diff(p[1]) < 4 && p[1].abs_diff(p[2]) < 4, "{p:?}");
}

#[test]
fn gif_first_frame() {
    let frame = |c: [u8; 4]| image::Frame::new(RgbaImage::from_pixel(30, 20, Rgba(c)));
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        enc.encode_frames(vec![frame([255, 0, 0, 255]), frame([0, 0, 255, 255])]).unwrap();
    }
    let t = thumb(&gif, 15, OutputFormat::Png);
    assert_eq!((t.width, t.height), (15, 10));
    assert!(close(rgb_at(&decode_output(&t), 7, 5), [255, 0, 0], 4));
}

#[test]
fn webp_sources_decode() {
    let img = marked_rgb(90, 60);
    let lossy = webp::encode_lossy(img.as_raw(), 90, 60, 3, 90).unwrap();
    let out = decode_output(&thumb(&lossy, 45, OutputFormat::Png));
    assert_eq!(corner_of(&out, RED), "TL");

    // Lossless with alpha.
    let rgba = RgbaImage::from_fn(20, 20, |x, _| if x < 10 { Rgba([0, 0, 0, 0]) } else { Rgba([0, 200, 0, 255]) });
    let mut lossless = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut lossless)
        .write_image(rgba.as_raw(), 20, 20, image::ExtendedColorType::Rgba8)
        .unwrap();
    let out = decode_output(&thumb(&lossless, 20, OutputFormat::Png)).into_rgba8();
    assert_eq!(out.get_pixel(2, 2).0[3], 0);
    assert_eq!(out.get_pixel(15, 2).0, [0, 200, 0, 255]);
}

/// A lossy WebP of `img` in an extended (VP8X) container carrying `icc`.
fn webp_with_icc(img: &RgbImage, icc: &[u8]) -> Vec<u8> {
    let simple = webp::encode_lossy(img.as_raw(), img.width(), img.height(), 3, 95).unwrap();
    assert_eq!(&simple[12..16], b"VP8 ");
    let vp8 = &simple[12..];
    let mut vp8x = vec![0x20, 0, 0, 0]; // the ICC flag
    vp8x.extend_from_slice(&(img.width() - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(img.height() - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    for (kind, payload) in [(b"VP8X", vp8x.as_slice()), (b"ICCP", icc)] {
        body.extend_from_slice(kind);
        body.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        body.extend_from_slice(payload);
        if payload.len() % 2 == 1 {
            body.push(0);
        }
    }
    body.extend_from_slice(vp8);
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend_from_slice(&body);
    file
}

#[test]
fn large_webp_is_shrunk_by_libwebp_as_it_decodes() {
    // 1600x1200 into 100 px: the plan box-shrinks by 8 before Lanczos, which
    // libwebp's rescaler now does while decoding; the result must match
    // image-webp's full decode shrunk and resized by the same pipeline.
    let img = marked_rgb(1600, 1200);
    let src = webp::encode_lossy(img.as_raw(), 1600, 1200, 3, 90).unwrap();
    let plan = plan(&src, &ThumbSpec::of_width(100, OutputFormat::Png, 90), &Limits::default()).unwrap();
    assert!(plan.geometry.shrink.0 > 1, "{:?}", plan.geometry);
    let out = decode_output(&thumb(&src, 100, OutputFormat::Png));
    assert_eq!(out.dimensions(), (100, 75));
    assert_eq!(corner_of(&out, RED), "TL");
    let reference = image::load_from_memory_with_format(&src, image::ImageFormat::WebP).unwrap().into_rgb8();
    let reference = DynamicImage::ImageRgb8(reference).resize_exact(100, 75, image::imageops::FilterType::Lanczos3);
    let (a, b) = (out.to_rgb8(), reference.to_rgb8());
    let diff: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    let mean = diff as f64 / a.as_raw().len() as f64;
    assert!(mean < 3.0, "mean difference {mean:.2} levels against a full decode");
}

#[test]
fn webp_icc_profile_is_applied() {
    let p3 = moxcms::ColorProfile::new_display_p3();
    let colour = [40u8, 180, 90];
    let img = RgbImage::from_pixel(64, 64, Rgb(colour));
    let icc = p3.encode().unwrap();
    let src = webp_with_icc(&img, &icc);
    assert_eq!(webp::icc_profile(&src).as_deref(), Some(icc.as_slice()));
    let want = to_srgb(&p3, colour);
    let out = decode_output(&thumb(&src, 32, OutputFormat::Png));
    assert!(close(rgb_at(&out, 16, 16), want, 5), "{:?} vs {want:?}", rgb_at(&out, 16, 16));
    // A simple (VP8) file has no profile; a chunk running past the end is none.
    assert_eq!(webp::icc_profile(&webp::encode_lossy(img.as_raw(), 64, 64, 3, 90).unwrap()), None);
    let cut = &src[..40];
    assert_eq!(webp::icc_profile(cut), None);
}

#[test]
fn webp_decode_stops_when_cancelled() {
    let img = noisy_rgb(600, 400);
    let src = webp::encode_lossy(img.as_raw(), 600, 400, 3, 90).unwrap();
    let cancel = Cancel::new();
    assert_eq!(webp::decode_still(&src, (600, 400), 3, &cancel).unwrap().len(), 600 * 400 * 3);
    cancel.cancel();
    assert!(matches!(webp::decode_still(&src, (600, 400), 3, &cancel), Err(ImageError::Cancelled)));
    // Nonsense sizes are refused, not passed to libwebp.
    assert!(webp::decode_still(&src, (0, 400), 3, &Cancel::new()).is_err());
    assert!(webp::decode_still(&src, (600, 400), 2, &Cancel::new()).is_err());
}

#[test]
fn bmp_source_decodes() {
    let mut bmp = Vec::new();
    DynamicImage::ImageRgb8(marked_rgb(40, 30)).write_to(&mut Cursor::new(&mut bmp), image::ImageFormat::Bmp).unwrap();
    let out = decode_output(&thumb(&bmp, 20, OutputFormat::Png));
    assert_eq!((out.width(), out.height()), (20, 15));
    assert_eq!(corner_of(&out, GREEN), "TR");
}

// ---------------------------------------------------------------- limits & hostile input

fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    v.extend_from_slice(&[0; 4]); // CRC (not checked by the probe)
    v.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
    v
}

#[test]
fn huge_png_header_refused_before_decoding() {
    let bomb = png_header_only(40_000, 40_000);
    let spec = ThumbSpec::of_width(256, OutputFormat::Webp, 80);
    let start = Instant::now();
    let err = thumbnail(&bomb, &spec, &Limits::default()).unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err, ImageError::TooLarge { width: 40_000, height: 40_000, max_pixels: 100_000_000 });
    // Microseconds in practice; generous bound for a loaded debug build.
    assert!(elapsed < Duration::from_millis(20), "took {elapsed:?}");

    // Same for a JPEG frame header and a tight custom limit.
    let jpeg = jpeg_from_rgb(&marked_rgb(200, 100), 80, &JpegMeta::default());
    let err = thumbnail(&jpeg, &spec, &Limits { max_pixels: 19_999, ..Limits::default() }).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { width: 200, height: 100, .. }));
    assert!(thumbnail(&jpeg, &spec, &Limits { max_pixels: 20_000, ..Limits::default() }).is_ok());
}

#[test]
fn truncated_inputs_error_or_partial_never_panic() {
    let img = marked_rgb(120, 90);
    let dynimg = DynamicImage::ImageRgb8(img.clone());
    let mut gif = Vec::new();
    dynimg.write_to(&mut Cursor::new(&mut gif), image::ImageFormat::Gif).unwrap();
    let mut progressive = Vec::new();
    {
        let mut enc = jpeg_encoder::Encoder::new(&mut progressive, 80);
        enc.set_progressive(true);
        enc.encode(img.as_raw(), 120, 90, jpeg_encoder::ColorType::Rgb).unwrap();
    }
    let sources = [
        jpeg_from_rgb(&img, 85, &JpegMeta { orientation: Some(6), ..Default::default() }),
        progressive,
        cmyk_jpeg(jpeg_encoder::ColorType::CmykAsYcck, [10, 20, 30, 40]),
        png_from(&dynimg),
        webp::encode_lossy(img.as_raw(), 120, 90, 3, 80).unwrap(),
        gif,
    ];
    let spec = ThumbSpec::of_width(60, OutputFormat::Webp, 75);
    for src in &sources {
        let step = (src.len() / 40).max(1);
        for len in (0..src.len()).step_by(step).chain([src.len() - 1, src.len() - 2]) {
            match thumbnail(&src[..len], &spec, &Limits::default()) {
                // A partial image must still have the right geometry.
                Ok(t) => assert!(t.width <= 60 && t.height >= 1),
                Err(ImageError::Unsupported(_) | ImageError::Decode(_) | ImageError::TooLarge { .. }) => {}
                Err(e) => panic!("unexpected error kind for truncated input: {e:?}"),
            }
        }
    }
    // Truncated mid-scan baseline JPEG: refused (a half image must not be
    // stored as a thumbnail); the complete file decodes.
    let jpeg = jpeg_from_rgb(&img, 85, &JpegMeta::default());
    let r = thumbnail(&jpeg[..jpeg.len() / 2], &spec, &Limits::default());
    assert!(matches!(r, Err(ImageError::Decode(ref m)) if m.contains("truncated")), "{r:?}");
    let t = thumbnail(&jpeg, &spec, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height), (60, 45));
}

#[test]
fn random_and_corrupted_bytes_never_panic() {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        s ^= s << 7;
        s ^= s >> 9;
        s
    };
    let spec = ThumbSpec::of_width(32, OutputFormat::Jpeg, 70);
    let prefixes: [&[u8]; 6] = [b"", b"\xFF\xD8\xFF", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBPVP8 ", b"GIF89a", b"BM"];
    for prefix in prefixes {
        for len in [0usize, 1, 10, 100, 1000] {
            let mut data = prefix.to_vec();
            data.extend((0..len).map(|_| next() as u8));
            let r = thumbnail(&data, &spec, &Limits::default());
            assert!(r.is_err() || r.as_ref().unwrap().width <= 32);
        }
    }
    assert!(matches!(
        thumbnail(b"definitely not an image", &spec, &Limits::default()),
        Err(ImageError::Unsupported(_))
    ));

    // Bit flips in the entropy-coded data and headers of a real JPEG and PNG.
    let img = marked_rgb(64, 48);
    let sources = [jpeg_from_rgb(&img, 85, &JpegMeta::default()), png_from(&DynamicImage::ImageRgb8(img))];
    for src in &sources {
        for _ in 0..150 {
            let mut data = src.clone();
            for _ in 0..4 {
                let i = (next() as usize) % data.len();
                data[i] ^= 1 << (next() % 8);
            }
            let _ = thumbnail(&data, &spec, &Limits::default());
        }
    }
}

#[test]
fn invalid_spec() {
    let png = png_from(&DynamicImage::ImageRgb8(marked_rgb(10, 10)));
    let spec = ThumbSpec::of_width(0, OutputFormat::Png, 80);
    assert!(matches!(thumbnail(&png, &spec, &Limits::default()), Err(ImageError::InvalidSpec(_))));
    // Quality above 100 is clamped, 0 is accepted.
    for quality in [0, 101, 255] {
        for format in [OutputFormat::Webp, OutputFormat::Jpeg] {
            let spec = ThumbSpec::of_width(5, format, quality);
            assert!(thumbnail(&png, &spec, &Limits::default()).is_ok());
        }
    }
}

#[test]
fn libjpeg_fatal_error_is_caught_and_reported() {
    // Corrupt the SOF0 component count: libjpeg raises a fatal error (an
    // unwind through C), zune-jpeg refuses too; the caller gets Decode.
    let mut jpeg = jpeg_from_rgb(&marked_rgb(32, 32), 80, &JpegMeta::default());
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    jpeg[sof + 9] = 0; // Nf
    let spec = ThumbSpec::of_width(16, OutputFormat::Webp, 80);
    match thumbnail(&jpeg, &spec, &Limits::default()) {
        Err(ImageError::Decode(msg)) => assert!(msg.contains("libjpeg"), "{msg}"),
        other => panic!("expected Decode, got {other:?}"),
    }
}

// ---------------------------------------------------------------- boxes and animations

fn boxed(w: u32, h: u32, fit: Fit, gravity: Gravity, format: OutputFormat) -> ThumbSpec {
    ThumbSpec { size: Size::boxed(w, h, fit, gravity), format, quality: 90 }
}

/// Three vertical bands: red, green, blue.
fn bands(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| Rgb([[255, 0, 0], [0, 255, 0], [0, 0, 255]][(x * 3 / w) as usize]))
}

fn near3(p: [u8; 4], want: [u8; 3]) -> bool {
    (0..3).all(|i| p[i].abs_diff(want[i]) <= 30)
}

#[test]
fn cover_boxes_crop_at_the_gravity_on_every_path() {
    // PNG (streamed), JPEG (mozjpeg, DCT-scaled), WebP (whole decode).
    let img = DynamicImage::ImageRgb8(bands(1200, 800));
    let jpeg = jpeg_from_rgb(&bands(1200, 800), 95, &JpegMeta::default());
    let mut webp = Vec::new();
    img.write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
    for source in [png_from(&img), jpeg, webp] {
        for (gravity, left, right) in [
            (Gravity::West, [255, 0, 0], [0, 255, 0]),
            (Gravity::East, [0, 255, 0], [0, 0, 255]),
            (Gravity::Center, [255, 0, 0], [0, 0, 255]),
        ] {
            let spec = boxed(256, 256, Fit::Cover, gravity, OutputFormat::Png);
            let t = thumbnail(&source, &spec, &Limits::default()).unwrap();
            let out = decode_output(&t);
            assert_eq!(out.dimensions(), (256, 256));
            assert!(near3(out.get_pixel(3, 128).0, left), "{gravity:?}: {:?}", out.get_pixel(3, 128));
            assert!(near3(out.get_pixel(252, 128).0, right), "{gravity:?}: {:?}", out.get_pixel(252, 128));
        }
    }
}

#[test]
fn boxes_are_in_displayed_space() {
    // Stored 1200x800, orientation 6: displayed 800x1200, red at the top.
    let jpeg = jpeg_from_rgb(&bands(1200, 800), 95, &JpegMeta { orientation: Some(6), ..Default::default() });
    let plan =
        plan(&jpeg, &boxed(256, 256, Fit::Cover, Gravity::North, OutputFormat::Png), &Limits::default()).unwrap();
    assert_eq!(plan.geometry.displayed, (256, 384));
    assert_eq!(plan.geometry.resized, (384, 256), "stored orientation");
    assert_eq!(plan.geometry.output, (256, 256));
    let out = decode_output(&render(&jpeg, &plan, &Cancel::new()).unwrap());
    assert!(near3(out.get_pixel(128, 3).0, [255, 0, 0]), "{:?}", out.get_pixel(128, 3));
    assert!(near3(out.get_pixel(128, 252).0, [0, 255, 0]), "{:?}", out.get_pixel(128, 252));
}

#[test]
fn smart_crops_find_detail_in_the_pipeline() {
    // Flat grey with a busy block at the right: centre misses it, smart keeps it.
    let img = RgbImage::from_fn(1200, 800, |x, y| {
        if (1030..1180).contains(&x) && (200..600).contains(&y) {
            if (x / 5 + y / 5) % 2 == 0 { Rgb([240, 220, 30]) } else { Rgb([10, 20, 140]) }
        } else {
            Rgb([128, 128, 128])
        }
    });
    let png = png_from(&DynamicImage::ImageRgb8(img));
    let busy_in = |spec: ThumbSpec| {
        let out = decode_output(&thumbnail(&png, &spec, &Limits::default()).unwrap()).to_rgb8();
        out.pixels().filter(|p| p.0.iter().any(|&c| c.abs_diff(128) > 40)).count()
    };
    let busy = |g| busy_in(boxed(256, 256, Fit::Cover, g, OutputFormat::Png));
    // The whole image resized as the cover box resizes it (384x256): all
    // of the patch that survives the downscale.
    let whole = busy_in(ThumbSpec::of_width(384, OutputFormat::Png, 90));
    assert!(whole > 3000, "the patch is there: {whole}");
    assert_eq!(busy(Gravity::Center), 0);
    assert_eq!(busy(Gravity::Smart), whole, "smart keeps all of the patch");
}

/// An animated GIF of solid frames.
fn gif_frames(w: u32, h: u32, colors: &[[u8; 3]], delay_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        for c in colors {
            let img = RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255]));
            let frame = image::Frame::from_parts(img, 0, 0, image::Delay::from_numer_denom_ms(delay_ms, 1));
            enc.encode_frame(frame).unwrap();
        }
    }
    out
}

#[test]
fn animations_become_animated_webp_through_the_geometry() {
    use image::AnimationDecoder;
    let gif = gif_frames(320, 200, &[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], 70);
    let spec = boxed(100, 100, Fit::Cover, Gravity::Center, OutputFormat::Webp);
    let t = thumbnail(&gif, &spec, &Limits::default()).unwrap();
    assert_eq!((t.width, t.height, t.frames), (100, 100, 4));
    let frames = image::codecs::webp::WebPDecoder::new(Cursor::new(&t.bytes)).unwrap().into_frames();
    let frames = frames.collect_frames().unwrap();
    assert_eq!(frames.len(), 4);
    for (f, want) in frames.iter().zip([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]) {
        assert_eq!(f.buffer().dimensions(), (100, 100));
        assert_eq!(f.delay().numer_denom_ms(), (70, 1));
        assert!(near3(f.buffer().get_pixel(50, 50).0, want), "{:?}", f.buffer().get_pixel(50, 50));
    }
    // Animated WebP in, animated WebP out (width only, never upscaled).
    let again = thumbnail(&t.bytes, &ThumbSpec::of_width(60, OutputFormat::Webp, 80), &Limits::default()).unwrap();
    assert_eq!((again.width, again.height, again.frames), (60, 60, 4));
    // Still formats take the first frame.
    let first = thumbnail(&gif, &ThumbSpec::of_width(160, OutputFormat::Png, 80), &Limits::default()).unwrap();
    assert_eq!((first.frames, first.height), (1, 100));
    assert!(near3(decode_output(&first).get_pixel(80, 50).0, [255, 0, 0]));
}

#[test]
fn animation_limits_are_checked_before_decoding() {
    let gif = gif_frames(50, 40, &[[1, 2, 3]; 5], 50);
    let limits = Limits { max_frames: 4, ..Limits::default() };
    let webp = ThumbSpec::of_width(20, OutputFormat::Webp, 80);
    assert_eq!(plan(&gif, &webp, &limits).unwrap_err(), ImageError::TooManyFrames { frames: 5, max: 4 });
    assert!(plan(&gif, &ThumbSpec::of_width(20, OutputFormat::Jpeg, 80), &limits).is_ok(), "one frame to make");
    // Frames x canvas: 5 x 2000 pixels against 10 x 2000.
    let limits = Limits { max_pixels: 2000, max_frames: 100 };
    assert!(plan(&gif, &webp, &limits).is_ok());
    let limits = Limits { max_pixels: 999, max_frames: 100 };
    assert!(matches!(plan(&gif, &webp, &limits).unwrap_err(), ImageError::TooLarge { .. }), "the canvas itself");
    let limits = Limits { max_pixels: 2000, max_frames: 100 };
    let gif = gif_frames(50, 40, &[[1, 2, 3]; 21], 50);
    let err = plan(&gif, &webp, &limits).unwrap_err();
    assert_eq!(err, ImageError::AnimationTooLarge { frames: 21, width: 50, height: 40, max_pixels: 20_000 });
    assert!(err.hint().unwrap().contains("first frame"));
}

#[test]
fn an_animation_is_priced_per_frame_plus_its_compressed_frames() {
    let at = |frames: usize| {
        let gif = gif_frames(400, 300, &vec![[9, 9, 9]; frames], 50);
        plan(&gif, &ThumbSpec::of_width(200, OutputFormat::Webp, 80), &Limits::default()).unwrap().memory
    };
    let (two, forty) = (at(2), at(40));
    // The per-frame stages do not grow with the frame count ...
    assert_eq!((two.decode, two.resize, two.encode), (forty.decode, forty.resize, forty.encode));
    // ... the compressed frames do, and the decoders' canvases are counted.
    assert!(forty.animation > two.animation + 38 * 200 * 150 * 4, "{forty:?}");
    assert!(two.decode >= 3 * 400 * 300 * 4, "canvas, composited frame, frame: {two:?}");
    assert_eq!(at(1).animation, 0, "one frame is a still image");
}

// ---------------------------------------------------------------- decode once

#[test]
fn a_master_makes_the_sizes_it_covers_like_a_decode_would() {
    let jpeg = jpeg_from_rgb(&marked_rgb(2000, 1200), 92, &JpegMeta::default());
    let limits = Limits::default();
    let big = plan(&jpeg, &ThumbSpec::of_width(500, OutputFormat::Png, 90), &limits).unwrap();
    let master_plan = master_plan(&big).unwrap();
    assert_eq!(master_plan.geometry.dct_scale, 3, "750 px: the smallest scale >= 1.4x the target");
    assert_eq!(master_plan.geometry.shrink, (1, 1));
    let master = decode_master(&jpeg, &master_plan, &Cancel::new()).unwrap();
    assert_eq!(master.size(), (750, 450));
    assert_eq!(master.bytes(), 750 * 450 * 3);
    for width in [500u32, 250, 90] {
        let direct = plan(&jpeg, &ThumbSpec::of_width(width, OutputFormat::Png, 90), &limits).unwrap();
        let from = plan_from_master(&master, &direct).expect("covered");
        let made = decode_output(&render_from_master(&master, &from, &Cancel::new()).unwrap());
        let alone = decode_output(&render(&jpeg, &direct, &Cancel::new()).unwrap());
        assert_eq!(made.dimensions(), alone.dimensions(), "width {width}");
        assert_eq!(corner_of(&made, RED), "TL");
        assert_eq!(corner_of(&made, GREEN), "TR");
        // Same pixels but for the resampling path: mean difference under 2 levels.
        let (a, b) = (made.to_rgb8(), alone.to_rgb8());
        let diff: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        assert!(
            diff / (a.as_raw().len() as u64) < 2,
            "width {width}: mean difference {}",
            diff / a.as_raw().len() as u64
        );
    }
    // 900 px needs 1260 px (1.4x): not covered.
    let larger = plan(&jpeg, &ThumbSpec::of_width(900, OutputFormat::Png, 90), &limits).unwrap();
    assert!(plan_from_master(&master, &larger).is_none());
    // Another image of the same size is not covered either.
    let other = jpeg_from_rgb(&marked_rgb(2000, 1201), 92, &JpegMeta::default());
    let other_plan = plan(&other, &ThumbSpec::of_width(250, OutputFormat::Png, 90), &limits).unwrap();
    assert!(plan_from_master(&master, &other_plan).is_none());
}

#[test]
fn masters_keep_alpha_and_animations_have_none() {
    let mut rgba = RgbaImage::new(400, 200);
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        *p = if x < 200 { Rgba([0, 0, 255, 0]) } else { Rgba([0, 0, 255, 255]) };
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgba, 400, 200, image::ExtendedColorType::Rgba8)
        .unwrap();
    let p = plan(&png, &ThumbSpec::of_width(100, OutputFormat::Png, 90), &Limits::default()).unwrap();
    let master = decode_master(&png, &master_plan(&p).unwrap(), &Cancel::new()).unwrap();
    assert_eq!(master.size(), (400, 200), "full size: PNG has no DCT scaling");
    let from = plan_from_master(&master, &p).unwrap();
    let out = decode_output(&render_from_master(&master, &from, &Cancel::new()).unwrap()).to_rgba8();
    assert_eq!(out.dimensions(), (100, 50));
    assert_eq!(out.get_pixel(5, 25).0[3], 0, "transparent half");
    assert_eq!(out.get_pixel(95, 25).0, [0, 0, 255, 255], "opaque half");

    let gif = gif_frames(64, 64, &[[255, 0, 0], [0, 0, 255]], 100);
    let anim = plan(&gif, &ThumbSpec::of_width(32, OutputFormat::Webp, 80), &Limits::default()).unwrap();
    assert!(master_plan(&anim).is_none(), "animations are decoded frame by frame");
}
