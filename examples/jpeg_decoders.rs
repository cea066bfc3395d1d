//! JPEG decoders side by side, per image: libjpeg-turbo (mozjpeg crate) at
//! full size and at the DCT scale MediaFlow uses for a 512 px thumbnail,
//! against zune-jpeg (pure Rust, through the `image` crate) at full size —
//! zune-jpeg has no DCT scaling. Also says whether the file has restart
//! markers (DRI), which is what parallel entropy decoding would need.
//!
//! ```text
//! cargo run --release --example jpeg_decoders -- [--runs 5] JPEG...
//! ```
//!
//! One tab-separated line per file (median ms of interleaved runs):
//! `file  WxH  progressive  restart_interval  moz_full  zune_full  moz_scaled  scale`.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use image::ImageDecoder;

/// (progressive, restart interval of the first DRI before the first scan).
fn markers(d: &[u8]) -> (bool, u16) {
    let (mut i, mut progressive, mut dri) = (2, false, 0);
    while i + 4 <= d.len() && d[i] == 0xFF {
        let (m, n) = (d[i + 1], usize::from(u16::from_be_bytes([d[i + 2], d[i + 3]])));
        match m {
            0xC2 => progressive = true,
            0xDD if i + 6 <= d.len() => dri = u16::from_be_bytes([d[i + 4], d[i + 5]]),
            0xDA => break,
            _ => {}
        }
        i += 2 + n;
    }
    (progressive, dri)
}

fn moz(bytes: &[u8], scale: u8) -> anyhow::Result<usize> {
    let mut dec = mozjpeg::Decompress::new_mem(bytes)?;
    if scale < 8 {
        dec.scale(scale);
    }
    let mut started = dec.rgb()?;
    let pixels: Vec<[u8; 3]> = started.read_scanlines()?;
    Ok(pixels.len())
}

fn zune(bytes: &[u8]) -> anyhow::Result<usize> {
    let dec = image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes))?;
    let mut buf = vec![0; usize::try_from(dec.total_bytes())?];
    dec.read_image(&mut buf)?;
    Ok(buf.len())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let mut runs = 5;
    let mut files = Vec::new();
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().context("--runs needs a value")?.parse()?;
        } else {
            files.push(PathBuf::from(a));
        }
    }
    for f in files {
        let bytes = std::fs::read(&f)?;
        let info = mediaflow::image::probe(&bytes)?;
        let spec = mediaflow::image::ThumbSpec::of_width(512, mediaflow::image::OutputFormat::Webp, 90);
        let scale = mediaflow::image::geometry(&info, &spec).dct_scale;
        let (progressive, dri) = markers(&bytes);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=runs {
            let t = Instant::now();
            moz(&bytes, 8)?;
            let ta = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            zune(&bytes)?;
            let tb = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            moz(&bytes, scale)?;
            let tc = t.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                a.push(ta);
                b.push(tb);
                c.push(tc);
            }
        }
        println!(
            "{}\t{}x{}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{}/8",
            f.file_name().unwrap_or_default().to_string_lossy(),
            info.width,
            info.height,
            progressive,
            dri,
            median(a),
            median(b),
            median(c),
            scale
        );
    }
    Ok(())
}
