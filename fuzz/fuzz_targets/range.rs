//! The Range header parser and its resolution against an object size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mediaflow::http::media::parse_range;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    if let Some(range) = parse_range(header) {
        if let Some((start, end)) = range.resolve(size) {
            assert!(start <= end && end < size, "{header:?} on {size}: {start}-{end}");
        }
    }
});
