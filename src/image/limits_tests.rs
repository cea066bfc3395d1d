//! The render budget's image side: the header facts the estimate needs, the
//! refusals made before decoding, the estimator itself, cancellation, and the
//! streaming decoders that keep the full-size image out of memory. Images
//! are generated here; assertions are on decoded pixels, sizes and errors.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{DynamicImage, GenericImageView, RgbImage, Rgba, RgbaImage};

use super::*;

#[path = "../../tests/api/common/bombs.rs"]
#[allow(dead_code)] // generators the HTTP tests use, not these
mod bombs;

/// Just a PNG signature and IHDR: enough to plan (not to render).
fn png_header(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    out.extend(w.to_be_bytes());
    out.extend(h.to_be_bytes());
    out.extend([depth, color, 0, 0, 0, 0, 0, 0, 0]);
    out
}

const WEBP_256: ThumbSpec = ThumbSpec::of_width(256, OutputFormat::Webp, 80);

fn spec(width: u32, format: OutputFormat) -> ThumbSpec {
    ThumbSpec::of_width(width, format, 80)
}

fn encode(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 100]))
}

/// A JPEG from jpeg-encoder with explicit sampling and coding.
fn jpeg(img: &RgbImage, sampling: jpeg_encoder::SamplingFactor, progressive: bool, optimized: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
    enc.set_sampling_factor(sampling);
    enc.set_progressive(progressive);
    enc.set_optimized_huffman_tables(optimized);
    enc.encode(img.as_raw(), img.width() as u16, img.height() as u16, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

/// Inserts an EXIF APP1 with just an Orientation after SOI.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    out
}

/// Rewrites the size in a JPEG's SOF0 (the probe reads no further).
fn with_sof_size(mut jpeg: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).expect("SOF0");
    jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpeg
}

// ---------------------------------------------------------------- probe facts

#[test]
fn probe_reads_jpeg_coding_sampling_and_orientation() {
    let img = gradient(123, 45);
    let baseline = jpeg(&img, jpeg_encoder::SamplingFactor::R_4_2_0, false, false);
    let info = probe(&baseline).unwrap();
    assert_eq!((info.channels, info.bit_depth, info.buffered), (3, 8, false));
    // 4:2:0 at 123x45: Y 16x6 blocks (rounded to whole 2x2 MCUs), Cb and Cr 8x3 each.
    assert_eq!(info.coefficient_blocks, 16 * 6 + 2 * 8 * 3);
    let full = jpeg(&img, jpeg_encoder::SamplingFactor::R_4_4_4, false, false);
    assert_eq!(probe(&full).unwrap().coefficient_blocks, 3 * 16 * 6);

    let progressive = jpeg(&img, jpeg_encoder::SamplingFactor::R_4_2_0, true, false);
    assert!(probe(&progressive).unwrap().buffered, "progressive: libjpeg buffers every coefficient");
    // Optimised Huffman tables make jpeg-encoder write one scan per
    // component: sequential, but libjpeg buffers it too.
    let multi_scan = jpeg(&img, jpeg_encoder::SamplingFactor::R_4_2_0, false, true);
    assert!(probe(&multi_scan).unwrap().buffered, "first scan holds fewer components than the frame");

    let rotated = with_orientation(&baseline, 6);
    assert_eq!(probe(&rotated).unwrap().orientation, 6);
    assert_eq!(probe(&rotated[..200]).unwrap().orientation, 6, "read from a prefix too");
}

#[test]
fn probe_reads_png_depth_channels_and_interlacing() {
    let rgba16 = bombs::png_zeros(10, 4, png::ColorType::Rgba, png::BitDepth::Sixteen, false);
    let info = probe(&rgba16).unwrap();
    assert_eq!((info.bit_depth, info.channels, info.frames, info.buffered), (16, 4, 1, false));
    let grey = bombs::png_zeros(10, 4, png::ColorType::Grayscale, png::BitDepth::Four, false);
    assert_eq!((probe(&grey).unwrap().bit_depth, probe(&grey).unwrap().channels), (4, 1));

    // A palette with a tRNS chunk is expanded to RGBA.
    let mut pal = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut pal, 4, 4);
        enc.set_color(png::ColorType::Indexed);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc.set_trns(vec![255, 0]);
        enc.write_header().unwrap().write_image_data(&[0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0]).unwrap();
    }
    assert_eq!(probe(&pal).unwrap().channels, 4);
    assert!(probe(&interlaced_png(&gradient(9, 7))).unwrap().buffered);
}

#[test]
fn probe_counts_gif_frames_and_their_rectangles() {
    let bomb = bombs::gif_canvas(10_000, 10_000);
    assert!(bomb.len() < 40, "{} bytes", bomb.len());
    let info = probe(&bomb).unwrap();
    assert_eq!((info.width, info.height, info.frames, info.max_frame_pixels), (10_000, 10_000, 1, 1));

    let frames = vec![
        image::Frame::new(RgbaImage::from_pixel(30, 20, Rgba([255, 0, 0, 255]))),
        image::Frame::new(RgbaImage::from_pixel(30, 20, Rgba([0, 0, 255, 255]))),
        image::Frame::new(RgbaImage::from_pixel(30, 20, Rgba([0, 255, 0, 255]))),
    ];
    let mut gif = Vec::new();
    image::codecs::gif::GifEncoder::new(&mut gif).encode_frames(frames).unwrap();
    let info = probe(&gif).unwrap();
    assert_eq!((info.frames, info.max_frame_pixels, info.channels), (3, 600, 4));
    // A prefix shows the frames it holds, at least one.
    assert!(probe(&gif[..40]).unwrap().frames >= 1);
}

#[test]
fn probe_counts_animated_webp_frames() {
    // VP8X (animation flag) + ANIM + two ANMF frames of 40x30 and 60x10 on
    // a 64x64 canvas: the probe walks chunk headers only.
    fn chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = kind.to_vec();
        c.extend((body.len() as u32).to_le_bytes());
        c.extend(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }
    fn anmf(w: u32, h: u32) -> Vec<u8> {
        let mut b = vec![0; 6]; // x, y
        b.extend(&(w - 1).to_le_bytes()[..3]);
        b.extend(&(h - 1).to_le_bytes()[..3]);
        b.extend([0; 4]); // duration, flags
        chunk(b"ANMF", &b)
    }
    let mut vp8x = vec![0x02, 0, 0, 0];
    vp8x.extend(&63u32.to_le_bytes()[..3]);
    vp8x.extend(&63u32.to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ANIM", &[0; 6]));
    body.extend(anmf(40, 30));
    body.extend(anmf(60, 10));
    let mut file = b"RIFF".to_vec();
    file.extend((body.len() as u32).to_le_bytes());
    file.extend(body);
    let info = probe(&file).unwrap();
    assert_eq!((info.width, info.height, info.frames, info.max_frame_pixels, info.channels), (64, 64, 2, 1200, 4));
}

// ---------------------------------------------------------------- refusals before decoding

#[test]
fn sides_and_frames_over_the_limits_are_refused_from_the_header() {
    let wide = bombs::png_100m_by_1();
    let started = Instant::now();
    let err = plan(&wide, &WEBP_256, &Limits::default()).unwrap_err();
    assert_eq!(err, ImageError::SideTooLong { width: 100_000_000, height: 1, max_side: MAX_SOURCE_SIDE });
    assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    assert!(err.hint().unwrap().contains("65535"));
    // The widest and tallest images the limits allow are planned.
    assert!(
        plan(
            &bombs::png_zeros(65_535, 2, png::ColorType::Rgb, png::BitDepth::Eight, false),
            &WEBP_256,
            &Limits::default()
        )
        .is_ok()
    );

    // A GIF whose canvas is small but whose frame is over the pixel limit.
    let mut gif = bombs::gif_canvas(10, 10);
    gif[19 + 5..19 + 9].copy_from_slice(&[0x20, 0x4E, 0x20, 0x4E]); // frame 20000x20000
    assert!(matches!(plan(&gif, &WEBP_256, &Limits::default()), Err(ImageError::TooLarge { .. })));
    // And one whose canvas is.
    let gif = bombs::gif_canvas(20_000, 20_000);
    assert!(matches!(plan(&gif, &WEBP_256, &Limits::default()), Err(ImageError::TooLarge { .. })));
}

#[test]
fn an_output_over_the_formats_limit_is_refused_before_decoding_with_a_hint() {
    // 300x20000 at 256 wide is 256x17067: too tall for WebP, fine for the others.
    let tall = bombs::png_zeros(300, 20_000, png::ColorType::Rgb, png::BitDepth::Eight, false);
    let err = plan(&tall, &WEBP_256, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        ImageError::OutputTooLarge { width: 256, height: 17_067, format: OutputFormat::Webp, max_side: 16_383 }
    );
    let hint = err.hint().unwrap();
    assert_eq!(
        hint,
        "webp holds at most 16383 pixels a side; ask for format=jpeg (up to 65535 px) or format=avif (up to 32768 px) \
         or format=png, or ask for a smaller width"
    );
    assert!(err.to_string().contains("256x17067"), "{err}");
    for format in [OutputFormat::Jpeg, OutputFormat::Png] {
        let t = thumbnail(&tall, &spec(256, format), &Limits::default()).unwrap();
        assert_eq!((t.width, t.height), (256, 17_067), "{format:?}");
        assert_eq!(image::load_from_memory(&t.bytes).unwrap().dimensions(), (256, 17_067));
    }
    // A narrower thumbnail fits WebP.
    assert!(plan(&tall, &spec(200, OutputFormat::Webp), &Limits::default()).is_ok());

    // Orientation counts: stored 20000x300, shown 300x20000.
    let small = jpeg(&gradient(64, 8), jpeg_encoder::SamplingFactor::R_4_2_0, false, false);
    let rotated = with_sof_size(with_orientation(&small, 6), 20_000, 300);
    let err = plan(&rotated, &WEBP_256, &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::OutputTooLarge { width: 256, height: 17_067, .. }), "{err:?}");
    let upright = with_sof_size(small, 20_000, 300);
    assert!(plan(&upright, &WEBP_256, &Limits::default()).is_ok());

    // AVIF's limit is the browsers' decoders' (32 768), JPEG's its 16-bit sizes.
    let taller = png_header(300, 40_000, 8, 2);
    let err = plan(&taller, &spec(256, OutputFormat::Avif), &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        ImageError::OutputTooLarge { width: 256, height: 34_133, format: OutputFormat::Avif, max_side: 32_768 }
    );
    assert_eq!(
        err.hint().unwrap(),
        "avif holds at most 32768 pixels a side; ask for format=jpeg (up to 65535 px) or format=png, or ask for a smaller width"
    );
    assert!(plan(&taller, &spec(256, OutputFormat::Jpeg), &Limits::default()).is_ok());

    // Every format's own limit.
    assert_eq!(OutputFormat::Webp.max_side(), 16_383);
    assert_eq!(OutputFormat::Jpeg.max_side(), 65_535);
    assert_eq!(OutputFormat::Avif.max_side(), 32_768);
    assert!(OutputFormat::Png.max_side() > MAX_SOURCE_SIDE);
}

// ---------------------------------------------------------------- the estimate

fn plan_for(bytes: &[u8], width: u32, format: OutputFormat) -> Plan {
    plan(bytes, &spec(width, format), &Limits::default()).unwrap()
}

fn mib(b: u64) -> u64 {
    b >> 20
}

#[test]
fn estimate_streams_png_and_gif_bombs_and_counts_what_is_held_whole() {
    // 16-bit RGBA 10000x10000 to 256: rows stream into the box shrink.
    let p = plan_for(&png_header(10_000, 10_000, 16, 6), 256, OutputFormat::Webp);
    assert_eq!((p.info.bit_depth, p.info.channels), (16, 4));
    assert!(p.geometry.streamed);
    assert_eq!(p.geometry.shrink, (19, 19));
    assert_eq!(p.geometry.shrunk, (527, 527));
    assert!(mib(p.memory.peak()) < 16, "{:?}", p.memory);

    // The same pixels interlaced are assembled whole first (8 bits a sample).
    let info = ImageInfo { buffered: true, ..p.info };
    let g = geometry(&info, &p.spec);
    assert!(!g.streamed);
    assert!(estimate(&info, &g, OutputFormat::Webp, 0).decode >= 10_000 * 10_000 * 4);

    // The 35-byte GIF with a 10000x10000 canvas.
    let gif = bombs::gif_canvas(10_000, 10_000);
    assert!(mib(plan_for(&gif, 256, OutputFormat::Webp).memory.peak()) < 16);
    // Its largest thumbnail holds a 5000x5000 RGBA shrink and its premultiplied copy.
    let big = plan_for(&gif, 2048, OutputFormat::Png);
    assert!(big.memory.resize >= 2 * 5000 * 5000 * 4, "{:?}", big.memory);
}

#[test]
fn estimate_counts_jpeg_coefficients_decode_scale_and_encoders() {
    let info = |w: u32, h: u32, buffered: bool| ImageInfo {
        format: SourceFormat::Jpeg,
        width: w,
        height: h,
        bit_depth: 8,
        channels: 3,
        frames: 1,
        max_frame_pixels: u64::from(w) * u64::from(h),
        buffered,
        // 4:2:0: 1.5 blocks of 64 samples per 64 pixels.
        coefficient_blocks: u64::from(w) * u64::from(h) * 3 / 128,
        orientation: 1,
    };
    let spec256 = spec(256, OutputFormat::Webp);
    // 24 MP baseline to 256: DCT 1/8, a few MB.
    let baseline = info(6000, 4000, false);
    let g = geometry(&baseline, &spec256);
    assert_eq!((g.dct_scale, g.decoded), (1, (750, 500)));
    let small = estimate(&baseline, &g, OutputFormat::Webp, 6 << 20);
    assert!(mib(small.peak()) < 24, "{small:?}");
    // Progressive: every coefficient (2 bytes a sample), whatever the scale.
    let progressive = info(6000, 4000, true);
    let coefficients = progressive.coefficient_blocks * 128;
    let e = estimate(&progressive, &geometry(&progressive, &spec256), OutputFormat::Webp, 6 << 20);
    assert!(e.decode >= coefficients && e.decode < coefficients + (16 << 20), "{e:?}");
    assert_eq!(e.peak(), e.source + e.decode.max(e.resize).max(e.encode));
    assert!(e.source >= 6 << 20, "the source is held throughout");

    // Bigger thumbnails cost more; AVIF's encoder is the heaviest.
    let at = |w: u32, format| estimate(&baseline, &geometry(&baseline, &spec(w, format)), format, 0).peak();
    assert!(at(512, OutputFormat::Webp) < at(2048, OutputFormat::Webp));
    assert!(at(2048, OutputFormat::Webp) < at(2048, OutputFormat::Avif));
    assert!(at(2048, OutputFormat::Jpeg) <= at(2048, OutputFormat::Webp));

    // CMYK goes to zune-jpeg at full size: the whole image is counted.
    let cmyk = ImageInfo { channels: 4, ..baseline };
    let g = geometry(&cmyk, &spec256);
    assert!(!g.streamed && g.dct_scale == 8 && g.channels == 3);
    assert!(estimate(&cmyk, &g, OutputFormat::Webp, 0).decode >= 6000 * 4000 * 3);
    // A JPEG never animates, whatever its frame count says.
    assert_eq!(geometry(&ImageInfo { frames: 40, ..cmyk }, &spec256).frames, 1);
}

// ---------------------------------------------------------------- cancellation

#[test]
fn a_cancelled_render_stops_and_says_so() {
    let cancelled = Cancel::new();
    cancelled.cancel();
    let sources = [
        jpeg(&gradient(300, 200), jpeg_encoder::SamplingFactor::R_4_2_0, false, false),
        jpeg(&gradient(300, 200), jpeg_encoder::SamplingFactor::R_4_2_0, true, false),
        encode(&DynamicImage::ImageRgb8(gradient(300, 200)), image::ImageFormat::Png),
        bombs::gif_canvas(300, 200),
        webp::encode_lossy(gradient(300, 200).as_raw(), 300, 200, 3, 80).unwrap(),
    ];
    for src in &sources {
        let p = plan_for(src, 100, OutputFormat::Webp);
        assert_eq!(render(src, &p, &cancelled), Err(ImageError::Cancelled));
        // Inside the decoders too (the JPEG one through libjpeg's reader).
        assert!(matches!(decode::decode(src, &p, &cancelled), Err(ImageError::Cancelled)), "{:?}", p.info.format);
        assert!(render(src, &p, &Cancel::new()).is_ok());
    }
    // libwebp stops itself through its progress hook.
    let rgb = gradient(300, 200);
    assert_eq!(webp::encode_lossy_cancellable(rgb.as_raw(), 300, 200, 3, 80, &cancelled), Err(ImageError::Cancelled));
}

#[test]
fn cancelling_a_long_decode_stops_it_within_moments() {
    // Seconds of PNG decoding (16-bit, every row Paeth-filtered).
    let slow = bombs::png_zeros(5000, 5000, png::ColorType::Rgba, png::BitDepth::Sixteen, true);
    let p = plan_for(&slow, 256, OutputFormat::Webp);
    let cancel = Cancel::new();
    let flag = cancel.clone();
    let started = Instant::now();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.cancel();
    });
    assert_eq!(render(&slow, &p, &cancel), Err(ImageError::Cancelled));
    canceller.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "stopped after {:?}", started.elapsed());
}

// ---------------------------------------------------------------- streamed decoders

/// An Adam7-interlaced 8-bit RGB PNG with unfiltered rows in stored
/// (uncompressed) deflate blocks: no encoder here writes interlaced files.
fn interlaced_png(img: &RgbImage) -> Vec<u8> {
    const PASSES: [(u32, u32, u32, u32); 7] =
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];
    let (w, h) = img.dimensions();
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= w || y0 >= h {
            continue;
        }
        for y in (y0..h).step_by(dy as usize) {
            raw.push(0);
            for x in (x0..w).step_by(dx as usize) {
                raw.extend(img.get_pixel(x, y).0);
            }
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        zlib.extend((block.len() as u16).to_le_bytes());
        zlib.extend((!(block.len() as u16)).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 1]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", zlib), (b"IEND", Vec::new())] {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc_input = kind.to_vec();
        crc_input.extend(&data);
        out.extend(&crc_input);
        out.extend(crc32(&crc_input).to_be_bytes());
    }
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

#[test]
fn box_preshrink_matches_a_direct_resize() {
    // A 1200x800 gradient PNG to 200 wide: shrunk by 3 while streaming,
    // then Lanczos3; compared with the image crate's own Lanczos3 of the
    // whole image.
    let src = gradient(1200, 800);
    let png = encode(&DynamicImage::ImageRgb8(src.clone()), image::ImageFormat::Png);
    let p = plan_for(&png, 200, OutputFormat::Png);
    assert_eq!((p.geometry.shrink, p.geometry.shrunk), ((3, 3), (400, 267)));
    let ours = image::load_from_memory(&render(&png, &p, &Cancel::new()).unwrap().bytes).unwrap().to_rgb8();
    let reference = image::imageops::resize(&src, 200, 133, image::imageops::FilterType::Lanczos3);
    assert_eq!(ours.dimensions(), (200, 133));
    let diff: u64 = ours.as_raw().iter().zip(reference.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum::<u64>();
    let mean = diff as f64 / ours.as_raw().len() as f64;
    assert!(mean < 1.5, "mean difference {mean}");

    // Interlaced: same picture as the plain file.
    let small = gradient(90, 70);
    let interlaced = interlaced_png(&small);
    let t = thumbnail(&interlaced, &spec(90, OutputFormat::Png), &Limits::default()).unwrap();
    assert_eq!(image::load_from_memory(&t.bytes).unwrap().to_rgb8(), small);
}

#[test]
fn gif_first_frame_is_placed_on_its_canvas() {
    // A 20x20 canvas with a 10x10 red frame at (15, 15): its lower right
    // part falls off the canvas and is clipped; the rest is transparent.
    let mut gif = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut gif, 20, 20, &[0, 0, 0, 255, 0, 0]).unwrap();
        let frame =
            gif::Frame { left: 15, top: 15, width: 10, height: 10, buffer: vec![1; 100].into(), ..Default::default() };
        enc.write_frame(&frame).unwrap();
    }
    let t = thumbnail(&gif, &spec(20, OutputFormat::Png), &Limits::default()).unwrap();
    let out = image::load_from_memory(&t.bytes).unwrap().to_rgba8();
    assert_eq!(out.dimensions(), (20, 20));
    assert_eq!(out.get_pixel(17, 17).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(19, 15).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(5, 5).0[3], 0);
    assert_eq!(out.get_pixel(14, 17).0[3], 0);

    // The 35-byte bomb: a 10000x10000 canvas thumbnailed in well under a
    // second of work, almost entirely transparent.
    let bomb = bombs::gif_canvas(10_000, 10_000);
    let started = Instant::now();
    let t = thumbnail(&bomb, &WEBP_256, &Limits::default()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!((t.width, t.height), (256, 256));
    let out = image::load_from_memory(&t.bytes).unwrap().to_rgba8();
    assert!(out.pixels().all(|p| p.0[3] <= 2), "transparent");
}

#[test]
fn sixteen_bit_png_is_thumbnailed_from_rows_at_eight_bits() {
    // Left half opaque red at 16 bits (high byte kept), right half transparent.
    let img = image::ImageBuffer::<Rgba<u16>, _>::from_fn(1200, 800, |x, _| {
        if x < 600 { Rgba([65535, 0, 0, 65535]) } else { Rgba([0, 65535, 0, 0]) }
    });
    let png = encode(&DynamicImage::ImageRgba16(img), image::ImageFormat::Png);
    let p = plan_for(&png, 150, OutputFormat::Png);
    assert!(p.geometry.streamed && p.geometry.shrink == (4, 4));
    let out = image::load_from_memory(&render(&png, &p, &Cancel::new()).unwrap().bytes).unwrap().to_rgba8();
    assert_eq!(out.dimensions(), (150, 100));
    assert_eq!(out.get_pixel(20, 50).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(130, 50).0[3], 0);
}

#[test]
fn a_tiny_lossless_webp_that_decodes_large_is_priced_whole_and_decodes_small() {
    // 3000x3000 of one colour, lossless: a few hundred bytes that libwebp
    // decodes into a full-size ARGB buffer (4 bytes a pixel) before its
    // rescaler shrinks it; the plan must price at least that, so the render
    // budget refuses it where it cannot afford it.
    let img = RgbaImage::from_pixel(3000, 3000, Rgba([30, 140, 200, 255]));
    let mut bomb = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut bomb)
        .encode(img.as_raw(), 3000, 3000, image::ExtendedColorType::Rgba8)
        .unwrap();
    assert!(bomb.len() < 16 << 10, "{} bytes", bomb.len());
    let p = plan_for(&bomb, 256, OutputFormat::Png);
    assert!(p.memory.decode >= 3000 * 3000 * 4, "{:?}", p.memory);
    let out = thumbnail(&bomb, &spec(256, OutputFormat::Png), &Limits::default()).unwrap();
    assert_eq!((out.width, out.height), (256, 256));
    let px = image::load_from_memory(&out.bytes).unwrap().to_rgba8();
    assert!(px.pixels().all(|p| p.0[0].abs_diff(30) <= 2 && p.0[2].abs_diff(200) <= 2));
}
