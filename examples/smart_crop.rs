//! What `gravity=smart` costs, and how the two strategies that were weighed
//! for it place their window, next to libvips' attention crop.
//!
//! ```text
//! cargo run --release --example smart_crop -- [--vips] [--box WxH] IMAGE...
//! ```
//!
//! Per image, one tab-separated line:
//! `file  resized  center_ms  smart_ms  attention_us  entropy_us  attention_at  entropy_at  vips_at`
//! - `center_ms`, `smart_ms`: the whole render (`image::thumbnail`, cover
//!   box, WebP), best of 5;
//! - `attention_us`, `entropy_us`: the window search alone on the image
//!   already resized to cover the box (`resized`), best of 20;
//! - `*_at`: the offset each picks along the axis that overflows; `vips_at`
//!   (with `--vips`): where `vipsthumbnail --smartcrop attention` cropped,
//!   found as the offset of our resized image that matches its output best.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mediaflow::image::{
    Fit, Gravity, Limits, OutputFormat, Size, SmartStrategy, ThumbSpec, layout, probe, smart_window, thumbnail,
};

fn best_of(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap_or_default()
}

struct Rgb {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

fn decode(bytes: &[u8]) -> anyhow::Result<Rgb> {
    let img = image::load_from_memory(bytes)?.into_rgb8();
    Ok(Rgb { width: img.width(), height: img.height(), data: img.into_raw() })
}

/// The offset along the sliding axis at which `crop` matches `whole` best
/// (mean squared difference on every 4th pixel).
fn offset_of(whole: &Rgb, crop: &Rgb) -> Option<u32> {
    let horizontal = whole.width - crop.width.min(whole.width) >= whole.height - crop.height.min(whole.height);
    let positions =
        if horizontal { whole.width.checked_sub(crop.width)? } else { whole.height.checked_sub(crop.height)? };
    fn px(img: &Rgb, x: u32, y: u32) -> &[u8] {
        let i = (y as usize * img.width as usize + x as usize) * 3;
        &img.data[i..i + 3]
    }
    (0..=positions)
        .map(|p| {
            let (ox, oy) =
                if horizontal { (p, (whole.height - crop.height) / 2) } else { ((whole.width - crop.width) / 2, p) };
            let mut sum = 0u64;
            for y in (0..crop.height).step_by(4) {
                for x in (0..crop.width).step_by(4) {
                    let (a, b) = (px(whole, ox + x, oy + y), px(crop, x, y));
                    sum += a.iter().zip(b).map(|(a, b)| u64::from(a.abs_diff(*b)).pow(2)).sum::<u64>();
                }
            }
            (sum, p)
        })
        .min()
        .map(|(_, p)| p)
}

fn vips_offset(path: &Path, resized: &Rgb, window: (u32, u32)) -> anyhow::Result<Option<u32>> {
    let out = std::env::temp_dir().join(format!("smart_crop_vips_{}.png", std::process::id()));
    let status = Command::new("vipsthumbnail")
        .arg(path)
        .args(["-s", &format!("{}x{}", window.0, window.1), "--smartcrop", "attention", "-o"])
        .arg(&out)
        .status()
        .context("running vipsthumbnail (apt package libvips-tools)")?;
    if !status.success() {
        bail!("vipsthumbnail failed on {}", path.display());
    }
    let crop = decode(&std::fs::read(&out)?)?;
    std::fs::remove_file(&out).ok();
    Ok(offset_of(resized, &crop))
}

fn main() -> anyhow::Result<()> {
    let mut vips = false;
    let mut window = (256, 256);
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--vips" => vips = true,
            "--box" => {
                let b = args.next().context("--box WxH")?;
                let (w, h) = b.split_once('x').context("--box WxH")?;
                window = (w.parse()?, h.parse()?);
            }
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        bail!("usage: smart_crop [--vips] [--box WxH] IMAGE...");
    }
    let limits = Limits::default();
    println!("file\tresized\tcenter_ms\tsmart_ms\tattention_us\tentropy_us\tattention_at\tentropy_at\tvips_at");
    for file in files {
        let path = Path::new(&file);
        let bytes = std::fs::read(path).with_context(|| file.clone())?;
        let info = probe(&bytes)?;
        let shown = if info.orientation >= 5 { (info.height, info.width) } else { (info.width, info.height) };
        let cover = |gravity| ThumbSpec {
            size: Size::boxed(window.0, window.1, Fit::Cover, gravity),
            format: OutputFormat::Webp,
            quality: 80,
        };
        let render = |spec: ThumbSpec| {
            best_of(5, || {
                let t = Instant::now();
                thumbnail(&bytes, &spec, &limits).expect("renders");
                t.elapsed()
            })
        };
        let (center, smart) = (render(cover(Gravity::Center)), render(cover(Gravity::Smart)));

        // The image the window is searched in: resized to cover the box.
        let l = layout(shown.0, shown.1, Size::boxed(window.0, window.1, Fit::Cover, Gravity::Center));
        let png = thumbnail(&bytes, &ThumbSpec::of_width(l.resize.0, OutputFormat::Png, 100), &limits)?;
        let resized = decode(&png.bytes)?;
        let win = l.window.unwrap_or(l.resize);
        let search = |strategy| {
            let mut at = None;
            let time = best_of(20, || {
                let pixels = resized.data.clone();
                let t = Instant::now();
                at = smart_window(strategy, (resized.width, resized.height), 3, pixels, win);
                t.elapsed()
            });
            (time, at.expect("the buffer matches"))
        };
        let (attention_t, attention_at) = search(SmartStrategy::Attention);
        let (entropy_t, entropy_at) = search(SmartStrategy::Entropy);
        let along = |(x, y): (u32, u32)| if resized.width > win.0 { x } else { y };
        let vips_at =
            if vips { vips_offset(path, &resized, win)?.map_or("-".into(), |o| o.to_string()) } else { "-".into() };
        let name = path.file_name().map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "{name}\t{}x{}\t{:.1}\t{:.1}\t{}\t{}\t{}\t{}\t{vips_at}",
            resized.width,
            resized.height,
            center.as_secs_f64() * 1e3,
            smart.as_secs_f64() * 1e3,
            attention_t.as_micros(),
            entropy_t.as_micros(),
            along(attention_at),
            along(entropy_at),
        );
    }
    Ok(())
}
