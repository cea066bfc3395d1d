//! Measures one render's real peak memory against its estimate.
//!
//! ```text
//! render_memory bombs OUTDIR            # writes the bomb images (tests/api/common/bombs.rs)
//! render_memory FILE WIDTH [FORMAT]     # one render: estimate vs measured peak RSS
//! ```
//!
//! Run each render in a fresh process (as `scripts/render-memory.sh` does):
//! the peak is read from `/proc/self/status` (VmHWM) after resetting it
//! (`/proc/self/clear_refs`), so memory an earlier render left in the
//! allocator would hide part of the next one's. Prints one tab-separated
//! line: file, width, format, estimated peak MiB (without the file), the
//! measured growth of the peak MiB, the ratio, and the time.

#[path = "../tests/api/common/bombs.rs"]
mod bombs;

use std::path::Path;

use anyhow::{Context, bail};
use mediaflow::image::{Cancel, Limits, OutputFormat, ThumbSpec, plan, render};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn write_bombs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    type Make = fn() -> Vec<u8>;
    let files: [(&str, Make); 7] = [
        ("png_100m_by_1.png", bombs::png_100m_by_1),
        ("png_rgba16_10k.png", bombs::png_rgba16_10k),
        ("png_widest.png", bombs::png_widest),
        ("png_slow.png", bombs::png_slow),
        ("gif_canvas_10k.gif", || bombs::gif_canvas(10_000, 10_000)),
        ("jpeg_10k_progressive.jpg", || bombs::jpeg(10_000, 10_000, true)),
        ("png_tall_300x20000.png", || bombs::png_zeros(300, 20_000, png::ColorType::Rgb, png::BitDepth::Eight, false)),
    ];
    // WebP sources for the decoder's working memory: lossless RGBA (image
    // crate), lossy with alpha (our own encoder, through the pipeline).
    let rgba = image::RgbaImage::from_fn(3000, 2000, |x, y| {
        image::Rgba([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8, if x < 1500 { 255 } else { 128 }])
    });
    let mut lossless = Vec::new();
    image::DynamicImage::ImageRgba8(rgba.clone())
        .write_to(&mut std::io::Cursor::new(&mut lossless), image::ImageFormat::WebP)?;
    std::fs::write(dir.join("webp_lossless_rgba_3000x2000.webp"), &lossless)?;
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba8(rgba).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let spec = ThumbSpec::of_width(3000, OutputFormat::Webp, 85);
    let lossy = mediaflow::image::thumbnail(&png, &spec, &Limits::default())?;
    std::fs::write(dir.join("webp_lossy_alpha_3000x2000.webp"), &lossy.bytes)?;
    // CMYK (YCCK) JPEG: decoded whole by zune-jpeg.
    let cmyk: Vec<u8> = (0..3000u32 * 2000).flat_map(|i| [(i % 200) as u8, 40, (i % 97) as u8, 10]).collect();
    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 85).encode(&cmyk, 3000, 2000, jpeg_encoder::ColorType::CmykAsYcck)?;
    std::fs::write(dir.join("jpeg_ycck_3000x2000.jpg"), &jpeg)?;
    for (name, make) in files {
        let bytes = make();
        let path = dir.join(name);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("{}\t{} bytes", path.display(), bytes.len());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "bombs" => write_bombs(Path::new(dir)),
        [file, width, rest @ ..] if rest.len() <= 1 => {
            let source = std::fs::read(file).with_context(|| format!("reading {file}"))?;
            let format = rest.first().map_or(Some(OutputFormat::Webp), |f| OutputFormat::from_name(f));
            let Some(format) = format else { bail!("unknown format") };
            let spec = ThumbSpec::of_width(width.parse()?, format, 85);
            let plan = plan(&source, &spec, &Limits::default())?;
            // The file is read before the measurement starts.
            let estimate = plan.memory.peak() - source.len() as u64;
            let before = status_kib("VmRSS:");
            // Reset the peak to the current RSS (Linux 4.0+).
            std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM")?;
            let started = std::time::Instant::now();
            let made = render(&source, &plan, &Cancel::new())?;
            let elapsed = started.elapsed();
            let grown = status_kib("VmHWM:").saturating_sub(before) * 1024;
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            println!(
                "{file}\t{width}\t{}\t{}x{}\testimate {:.1} MiB\tmeasured {:.1} MiB\tratio {:.2}\t{:.2} s\t{:?}",
                format.extension(),
                made.width,
                made.height,
                mib(estimate),
                mib(grown),
                estimate as f64 / grown.max(1) as f64,
                elapsed.as_secs_f64(),
                plan.memory,
            );
            Ok(())
        }
        _ => bail!("usage: render_memory bombs OUTDIR | render_memory FILE WIDTH [FORMAT]"),
    }
}
