//! Criterion benchmark of the image pipeline, decode → resize → encode
//! (`mediaflow::image::thumbnail`), on large photographs, for WebP, JPEG and
//! PNG output at 256, 512 and 1024 px wide.
//!
//! ```text
//! cargo bench --bench pipeline                                   # synthetic images made in memory
//! MEDIAFLOW_BENCH_IMAGES=../shared/fixtures cargo bench --bench pipeline   # real photographs
//! cargo bench --bench pipeline -- 'L1.*/webp'                    # a subset (criterion filter)
//! ```
//!
//! Sources, when `MEDIAFLOW_BENCH_IMAGES` names a folder: the first file in
//! it whose name starts with each of `L1_` (20 MP baseline JPEG), `L3_`
//! (16 MP progressive), `L4_` (13 MP progressive), `L2_` (8 MP progressive at
//! 8 bpp), `D3_` (PNG) and `D5_` (12 MP WebP); missing ones are skipped.
//! Without it (or when none is found), photograph-like synthetic images are
//! generated in memory (benches/support/synth.rs): 24 MP baseline and 20 MP
//! progressive JPEGs, a 4 MP PNG and a 12 MP WebP. Nothing else is read.
//!
//! Benchmark ids are `SOURCE/FORMAT/WIDTH` (WebP q90, JPEG q85, PNG).
//! Criterion's reports land in target/criterion/.

#[path = "support/synth.rs"]
mod synth;

use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mediaflow::image::{Limits, OutputFormat, ThumbSpec, probe, thumbnail};

const WIDTHS: [u32; 3] = [256, 512, 1024];
const FORMATS: [(OutputFormat, &str, u8); 3] =
    [(OutputFormat::Webp, "webp", 90), (OutputFormat::Jpeg, "jpeg", 85), (OutputFormat::Png, "png", 0)];

/// `(label, bytes)` of every source.
fn sources() -> Vec<(String, Vec<u8>)> {
    if let Some(dir) = std::env::var_os("MEDIAFLOW_BENCH_IMAGES") {
        let dir = Path::new(&dir);
        let names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        let found: Vec<(String, Vec<u8>)> = ["L1_", "L3_", "L4_", "L2_", "D3_", "D5_"]
            .iter()
            .filter_map(|prefix| {
                let mut matching: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
                matching.sort();
                let name = matching.first()?;
                let bytes = std::fs::read(dir.join(name)).ok()?;
                Some((label(name, &bytes), bytes))
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
        eprintln!("MEDIAFLOW_BENCH_IMAGES={}: no L1_/L3_/L4_/L2_/D3_/D5_ image; using synthetic ones", dir.display());
    }
    synthetic()
}

fn label(name: &str, bytes: &[u8]) -> String {
    let stem = name.split('.').next().unwrap_or(name);
    let short: String = stem.split('_').take(2).collect::<Vec<_>>().join("_");
    match probe(bytes) {
        Ok(info) => {
            let mp = f64::from(info.width) * f64::from(info.height) / 1e6;
            let prog = if name.contains("prog") { "prog_" } else { "" };
            format!("{short}_{prog}{}_{mp:.0}MP", info.format.name())
        }
        Err(_) => short,
    }
}

fn synthetic() -> Vec<(String, Vec<u8>)> {
    let (w, h) = (6000, 4000);
    let s1 = synth::jpeg(&synth::photo_like(w, h, 1), w, h, 90, false);
    let (w, h) = (5600, 3700);
    let s2 = synth::jpeg(&synth::photo_like(w, h, 2), w, h, 90, true);
    let (w, h) = (2560, 1600);
    let rgb = synth::photo_like(w, h, 4);
    let mut s4 = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut s4),
        &rgb,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .expect("png");
    let (w, h) = (4000, 3000);
    let base = synth::jpeg(&synth::photo_like(w, h, 3), w, h, 95, false);
    let s5 = thumbnail(&base, &ThumbSpec::of_width(w, OutputFormat::Webp, 85), &Limits::default()).expect("webp").bytes;
    vec![
        ("S1_synth_jpeg_24MP".into(), s1),
        ("S2_synth_prog_jpeg_21MP".into(), s2),
        ("S4_synth_png_4MP".into(), s4),
        ("S5_synth_webp_12MP".into(), s5),
    ]
}

fn pipeline(c: &mut Criterion) {
    let limits = Limits::default();
    for (label, bytes) in sources() {
        let mut group = c.benchmark_group(&label);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for (format, name, quality) in FORMATS {
            for width in WIDTHS {
                let spec = ThumbSpec::of_width(width, format, quality);
                group.bench_with_input(BenchmarkId::new(name, width), &spec, |b, spec| {
                    b.iter(|| thumbnail(std::hint::black_box(&bytes), spec, &limits).expect("thumbnail"))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
