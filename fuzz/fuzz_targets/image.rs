//! Image sniffing, header probing and the whole pipeline on hostile bytes:
//! an error or a thumbnail of the promised size, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mediaflow::image::{Limits, OutputFormat, ThumbSpec, probe, sniff, thumbnail};

fuzz_target!(|data: &[u8]| {
    let _ = sniff(data);
    let limits = Limits { max_pixels: 4_000_000, ..Limits::default() };
    if let Ok(info) = probe(data) {
        if u64::from(info.width) * u64::from(info.height) > limits.max_pixels {
            return;
        }
    }
    let spec = ThumbSpec::of_width(64, OutputFormat::Png, 80);
    if let Ok(t) = thumbnail(data, &spec, &limits) {
        assert!(t.width >= 1 && t.width <= 64 && t.height >= 1);
        assert!(t.bytes.starts_with(b"\x89PNG"));
    }
});
