//! Decompression bombs and other costly images, generated (nothing is read
//! from disk): each is small on the wire and large, or slow, once decoded.
//! Used by tests/api/process.rs and examples/render_memory.rs.

use std::io::Write;

/// A PNG of `width`×`height` zero samples (`color`, `depth` as given): the
/// zlib stream of zeros is about a thousandth of the decoded size. With
/// `paeth`, every row is marked with the Paeth filter, the slowest to undo.
/// Rows are streamed into the encoder, so even a 100 000 000 × 1 image costs
/// one row here.
pub fn png_zeros(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, paeth: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.set_compression(png::Compression::High);
        enc.set_filter(if paeth { png::Filter::Paeth } else { png::Filter::NoFilter });
        let mut writer = enc.write_header().unwrap();
        let samples = match color {
            png::ColorType::Grayscale | png::ColorType::Indexed => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
        };
        let bits = samples * depth as usize;
        let row = vec![0u8; (width as usize * bits).div_ceil(8)];
        let mut stream = writer.stream_writer().unwrap();
        for _ in 0..height {
            stream.write_all(&row).unwrap();
        }
        stream.finish().unwrap();
    }
    out
}

/// The first bomb: a 97 KB greyscale PNG of 100 000 000 × 1 pixels.
pub fn png_100m_by_1() -> Vec<u8> {
    png_zeros(100_000_000, 1, png::ColorType::Grayscale, png::BitDepth::Eight, false)
}

/// The second bomb: a 16-bit RGBA 10 000 × 10 000 PNG (778 KB).
pub fn png_rgba16_10k() -> Vec<u8> {
    png_zeros(10_000, 10_000, png::ColorType::Rgba, png::BitDepth::Sixteen, false)
}

/// The widest PNG under every limit: 65 535 × 1 525 grey (99.9 MP).
pub fn png_widest() -> Vec<u8> {
    png_zeros(65_535, 1_525, png::ColorType::Grayscale, png::BitDepth::Eight, false)
}

/// A slow one: 16-bit RGBA 10 000 × 10 000 with every row Paeth-filtered,
/// several seconds of decoding for under a megabyte.
pub fn png_slow() -> Vec<u8> {
    png_zeros(10_000, 10_000, png::ColorType::Rgba, png::BitDepth::Sixteen, true)
}

/// The third bomb: a GIF of a few dozen bytes whose logical screen
/// is `width`×`height`, with one 1×1 red frame in its corner.
pub fn gif_canvas(width: u16, height: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend(width.to_le_bytes());
    g.extend(height.to_le_bytes());
    // Global colour table of 2 entries, background 0, no aspect ratio.
    g.extend([0x80, 0, 0]);
    g.extend([255, 0, 0, 0, 0, 0]);
    // Image descriptor: at 0,0, 1×1, no local table, not interlaced.
    g.push(0x2C);
    g.extend([0, 0, 0, 0, 1, 0, 1, 0, 0]);
    // LZW minimum code size 2: clear (4), index 0, end (5), in 3 bits each.
    g.extend([2, 2, 0x44, 0x01, 0]);
    g.push(0x3B);
    g
}

/// A real (gradient) JPEG of `width`×`height`, baseline or progressive.
pub fn jpeg(width: u16, height: u16, progressive: bool) -> Vec<u8> {
    let (w, h) = (usize::from(width), usize::from(height));
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) % 256) as u8]);
        }
    }
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
    enc.set_progressive(progressive);
    enc.encode(&rgb, width, height, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}
