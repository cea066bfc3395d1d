//! Time of JPEG thumbnails at each shrink-on-load margin: how much larger
//! than the target the DCT-scaled decode must stay (100 % = the smallest
//! libjpeg scale that still covers the target; 200 % = twice it).
//!
//! ```text
//! cargo run --release --example shrink_policy -- --out DIR [--widths 256,512,1024]
//!     [--margins 100,125,150,200] [--runs 5] [--quality 90] JPEG...
//! ```
//!
//! For every source × width, the margins are rendered in turn (interleaved,
//! `--runs` rounds after one warm-up, in this one thread) and each
//! thumbnail (WebP) is written to `DIR/<stem>_<width>_<margin>.webp` for
//! `examples/quality.rs` to score; `bench/shrink-policy.sh` runs both and
//! prints the table. One tab-separated line per case on stdout:
//! `source  width  margin  dct_scale  decoded_wxh  median_ms  min_ms  output`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use mediaflow::image::{Cancel, Limits, OutputFormat, ThumbSpec, plan_with_margin, render};

fn list(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',').map(|v| v.trim().parse().with_context(|| format!("not a number: {v}"))).collect()
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut widths, mut margins, mut runs, mut quality) = (vec![256, 512, 1024], vec![100, 125, 150, 200], 5, 90u8);
    let (mut out, mut sources) = (None::<PathBuf>, Vec::new());
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--widths" => widths = list(&value()?)?,
            "--margins" => margins = list(&value()?)?,
            "--runs" => runs = value()?.parse()?,
            "--quality" => quality = value()?.parse()?,
            "--out" => out = Some(PathBuf::from(value()?)),
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => sources.push(PathBuf::from(a)),
        }
    }
    let out = out.context("--out DIR is required")?;
    std::fs::create_dir_all(&out)?;
    let limits = Limits::default();
    for source in &sources {
        let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let stem = source.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        for &width in &widths {
            let spec = ThumbSpec::of_width(width, OutputFormat::Webp, quality);
            let plans = margins
                .iter()
                .map(|&m| plan_with_margin(&bytes, &spec, &limits, m))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("planning {}", source.display()))?;
            let mut times = vec![Vec::new(); plans.len()];
            let mut outputs = vec![Vec::new(); plans.len()];
            for round in 0..=runs {
                for (i, plan) in plans.iter().enumerate() {
                    let started = Instant::now();
                    let thumb = render(&bytes, plan, &Cancel::new())?;
                    if round > 0 {
                        times[i].push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    outputs[i] = thumb.bytes;
                }
            }
            for (i, plan) in plans.iter().enumerate() {
                let path = out.join(format!("{stem}_{width}_{}.webp", margins[i]));
                std::fs::write(&path, &outputs[i])?;
                let t = &mut times[i];
                t.sort_by(f64::total_cmp);
                let g = &plan.geometry;
                println!(
                    "{}\t{width}\t{}\t{}/8\t{}x{}\t{:.1}\t{:.1}\t{}",
                    source.display(),
                    margins[i],
                    g.dct_scale,
                    g.decoded.0,
                    g.decoded.1,
                    t.get(t.len() / 2).copied().unwrap_or(f64::NAN),
                    t.first().copied().unwrap_or(f64::NAN),
                    path.display()
                );
            }
        }
    }
    Ok(())
}
