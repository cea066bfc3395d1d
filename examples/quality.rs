//! Quality of thumbnails against a common reference, so that speed is never
//! bought with quality unnoticed.
//!
//! ```text
//! cargo run --release --example quality -- SOURCE CANDIDATE...
//! ```
//!
//! The reference for each candidate size is the source decoded at full
//! resolution by the `image` crate (no DCT scaling, no shortcuts), turned
//! upright by its EXIF orientation, and resized to the candidate's exact
//! size with a Lanczos3 convolution in 32-bit float (fast_image_resize
//! `F32x3`), in the source's own (gamma-encoded) values, as both MediaFlow
//! and vipsthumbnail resize by default. It is computed once per size and
//! kept in memory for the other candidates.
//!
//! Per candidate it prints one tab-separated line:
//! `file  width  height  bytes  psnr_db  ssim`
//! - PSNR over R, G and B against the unrounded float reference;
//! - SSIM on luma (BT.601 weights), 8×8 windows every 4 pixels, the
//!   constants of Wang et al. 2004 (K1 = 0.01, K2 = 0.03, L = 255).
//!
//! Alpha is ignored (the benchmark images are opaque). A source with an ICC
//! profile is compared in its own values (the fixtures are sRGB or untagged).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, bail};
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageReader};

/// A float RGB image, values 0–255.
struct Rgbf {
    width: u32,
    height: u32,
    data: Vec<f32>,
}

fn decode(path: &Path) -> anyhow::Result<DynamicImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    reader.no_limits();
    let mut decoder = reader.into_decoder().with_context(|| format!("decoding {}", path.display()))?;
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder).with_context(|| format!("decoding {}", path.display()))?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn to_f32(img: &DynamicImage) -> Rgbf {
    let rgb = img.to_rgb8();
    Rgbf { width: rgb.width(), height: rgb.height(), data: rgb.as_raw().iter().map(|&v| f32::from(v)).collect() }
}

fn reference(source: &Rgbf, width: u32, height: u32) -> anyhow::Result<Rgbf> {
    let bytes: Vec<u8> = source.data.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let src = Image::from_vec_u8(source.width, source.height, bytes, PixelType::F32x3)?;
    let mut dst = Image::new(width, height, PixelType::F32x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new().resize(&src, &mut dst, &options)?;
    let data = dst.into_vec().chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Rgbf { width, height, data })
}

fn psnr(reference: &Rgbf, candidate: &Rgbf) -> f64 {
    let mse = reference
        .data
        .iter()
        .zip(&candidate.data)
        .map(|(&r, &c)| {
            let d = f64::from(r.clamp(0.0, 255.0)) - f64::from(c);
            d * d
        })
        .sum::<f64>()
        / reference.data.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

fn luma(img: &Rgbf) -> Vec<f64> {
    img.data
        .chunks_exact(3)
        .map(|p| {
            0.299 * f64::from(p[0].clamp(0.0, 255.0))
                + 0.587 * f64::from(p[1].clamp(0.0, 255.0))
                + 0.114 * f64::from(p[2].clamp(0.0, 255.0))
        })
        .collect()
}

fn ssim(reference: &Rgbf, candidate: &Rgbf) -> f64 {
    const WIN: usize = 8;
    const STEP: usize = 4;
    let (w, h) = (reference.width as usize, reference.height as usize);
    if w < WIN || h < WIN {
        return f64::NAN;
    }
    let (a, b) = (luma(reference), luma(candidate));
    let c1 = (0.01 * 255.0f64).powi(2);
    let c2 = (0.03 * 255.0f64).powi(2);
    let n = (WIN * WIN) as f64;
    let (mut total, mut count) = (0.0, 0usize);
    for y in (0..=h - WIN).step_by(STEP) {
        for x in (0..=w - WIN).step_by(STEP) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for yy in y..y + WIN {
                for xx in x..x + WIN {
                    let (va, vb) = (a[yy * w + xx], b[yy * w + xx]);
                    sa += va;
                    sb += vb;
                    saa += va * va;
                    sbb += vb * vb;
                    sab += va * vb;
                }
            }
            let (ma, mb) = (sa / n, sb / n);
            let var_a = saa / n - ma * ma;
            let var_b = sbb / n - mb * mb;
            let cov = sab / n - ma * mb;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (var_a + var_b + c2));
            count += 1;
        }
    }
    total / count as f64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: quality SOURCE CANDIDATE...");
    }
    let source = to_f32(&decode(Path::new(&args[0]))?);
    let mut references: HashMap<(u32, u32), Rgbf> = HashMap::new();
    for cand_path in &args[1..] {
        let path = Path::new(cand_path);
        let candidate = to_f32(&decode(path)?);
        let key = (candidate.width, candidate.height);
        let reference = match references.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(reference(&source, key.0, key.1)?),
        };
        let bytes = std::fs::metadata(path)?.len();
        println!(
            "{}\t{}\t{}\t{}\t{:.2}\t{:.4}",
            cand_path,
            candidate.width,
            candidate.height,
            bytes,
            psnr(reference, &candidate),
            ssim(reference, &candidate)
        );
    }
    Ok(())
}
