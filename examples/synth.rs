//! Makes the benchmark images that are not committed.
//!
//! ```text
//! synth set OUTDIR            # the synthetic fallback set (see below)
//! synth extend SRC W H OUT    # SRC mirror-extended to W×H, saved as a baseline JPEG q92
//! ```
//!
//! `set` writes photograph-like synthetic images (benches/support/synth.rs):
//! - `S1_synth_6000x4000.jpg` — 24 MP baseline JPEG q90
//! - `S2_synth_5600x3700_prog.jpg` — 20.7 MP progressive JPEG q90
//! - `S3_synth_4000x3000_prog.jpg` — 12 MP progressive JPEG q90
//! - `S4_synth_2560x1600.png` — 4 MP PNG (RGB)
//! - `S5_synth_4000x3000.webp` — 12 MP lossy WebP q85
//!
//! `extend` makes a 24 MP source out of a real 20 MP photograph (mirroring
//! its edge rows and columns keeps the detail density of a photograph,
//! which upscaling would smooth away).

#[path = "../benches/support/synth.rs"]
mod synth;

use std::path::Path;

use anyhow::{Context, bail};
use mediaflow::image::{Limits, OutputFormat, ThumbSpec};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("{}\t{} bytes", path.display(), bytes.len());
    Ok(())
}

fn set(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let (w, h) = (6000, 4000);
    let rgb = synth::photo_like(w, h, 1);
    write(dir, "S1_synth_6000x4000.jpg", &synth::jpeg(&rgb, w, h, 90, false))?;

    let (w, h) = (5600, 3700);
    let rgb = synth::photo_like(w, h, 2);
    write(dir, "S2_synth_5600x3700_prog.jpg", &synth::jpeg(&rgb, w, h, 90, true))?;

    let (w, h) = (4000, 3000);
    let rgb = synth::photo_like(w, h, 3);
    let jpeg = synth::jpeg(&rgb, w, h, 90, true);
    write(dir, "S3_synth_4000x3000_prog.jpg", &jpeg)?;
    // The same picture as a WebP, made by the pipeline at full size.
    let webp = mediaflow::image::thumbnail(
        &synth::jpeg(&rgb, w, h, 95, false),
        &ThumbSpec::of_width(w, OutputFormat::Webp, 85),
        &Limits::default(),
    )?;
    write(dir, "S5_synth_4000x3000.webp", &webp.bytes)?;

    let (w, h) = (2560, 1600);
    let rgb = synth::photo_like(w, h, 4);
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    write(dir, "S4_synth_2560x1600.png", &png)?;
    Ok(())
}

fn extend(src: &Path, w: u32, h: u32, out: &Path) -> anyhow::Result<()> {
    let img = image::open(src).with_context(|| format!("decoding {}", src.display()))?.into_rgb8();
    let (sw, sh) = img.dimensions();
    if w > 2 * sw || h > 2 * sh {
        bail!("can extend by at most the source's own size");
    }
    let mirror = |v: u32, n: u32| if v < n { v } else { 2 * n - 1 - v };
    let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&img.get_pixel(mirror(x, sw), mirror(y, sh)).0);
        }
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let name = out.file_name().context("output file name")?.to_string_lossy().into_owned();
    write(dir, &name, &synth::jpeg(&rgb, w, h, 92, false))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["set", dir] => set(Path::new(dir)),
        ["extend", src, w, h, out] => extend(Path::new(src), w.parse()?, h.parse()?, Path::new(out)),
        _ => bail!("usage: synth set OUTDIR | synth extend SRC W H OUT"),
    }
}
