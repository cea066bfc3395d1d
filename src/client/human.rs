//! Sizes and durations as a person reads them: `60 MiB`, `1.5 GiB`,
//! `540 ms`, `1.5 s`, `2 min 5 s`. Every message of the client uses these,
//! so a size or a duration reads the same in a progress line and an error.

use std::time::Duration;

const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `500 bytes`, `12.1 KiB`, `60 MiB`, `1.5 GiB`: binary units, one decimal,
/// none when the value is whole in its unit.
pub fn size(bytes: u64) -> String {
    if bytes < 1024 {
        return if bytes == 1 { "1 byte".into() } else { format!("{bytes} bytes") };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // Rounded to one decimal first, so 1023.96 KiB is not printed as "1024.0 KiB".
    let rounded = (value * 10.0).round() / 10.0;
    if rounded >= 1024.0 && unit + 1 < UNITS.len() {
        return format!("1 {}", UNITS[unit + 1]);
    }
    if rounded.fract() == 0.0 {
        format!("{rounded:.0} {}", UNITS[unit])
    } else {
        format!("{rounded:.1} {}", UNITS[unit])
    }
}

/// `540 ms` under a second, `1.5 s` under a minute, `2 min 5 s` under an
/// hour, `1 h 2 min` beyond.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    // Tenths of a second, rounded: 59.96 s is "1 min 0 s", not "60.0 s".
    let tenths = (d.as_secs_f64() * 10.0).round() as u64;
    if tenths < 600 {
        return format!("{}.{} s", tenths / 10, tenths % 10);
    }
    let secs = (tenths + 5) / 10;
    if secs < 3600 {
        return format!("{} min {} s", secs / 60, secs % 60);
    }
    let mins = (secs + 30) / 60;
    format!("{} h {} min", mins / 60, mins % 60)
}

/// A server's message with the human form of the byte counts it names:
/// `size 62914560 exceeds the limit of 52428800 bytes` gains
/// ` (60 MiB > 50 MiB)` for `size_too_large`; elsewhere every `N bytes` of
/// at least 1 KiB gains its size (`6442450944 bytes (6 GiB)`). The exact
/// numbers stay: they are what the server said.
pub fn annotate_sizes(code: &str, message: &str) -> String {
    let numbers: Vec<u64> =
        message.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    if code == "size_too_large" {
        return match numbers[..] {
            [actual, limit] => format!("{message} ({} > {})", size(actual), size(limit)),
            [limit] => format!("{message} ({})", size(limit)),
            _ => message.to_owned(),
        };
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" bytes") {
        let (before, after) = rest.split_at(at + " bytes".len());
        out.push_str(before);
        let digits: String =
            before[..at].chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
        if let Ok(n) = digits.parse::<u64>()
            && n >= 1024
            && !after.starts_with(" (")
        {
            out.push_str(&format!(" ({})", size(n)));
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1024), "1 KiB");
        assert_eq!(size(12_345), "12.1 KiB");
        assert_eq!(size(62_914_560), "60 MiB");
        assert_eq!(size(52_428_800), "50 MiB");
        assert_eq!(size(12_000_000), "11.4 MiB");
        assert_eq!(size(1024 * 1024 - 1), "1 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(size(5 * 1024 * 1024 * 1024), "5 GiB");
        assert_eq!(size(u64::MAX), "16 EiB");
    }

    #[test]
    fn durations_read_with_their_precision() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(0)), "0 ms");
        assert_eq!(duration(ms(540)), "540 ms");
        assert_eq!(duration(ms(999)), "999 ms");
        assert_eq!(duration(ms(1000)), "1.0 s");
        assert_eq!(duration(ms(1540)), "1.5 s");
        assert_eq!(duration(ms(59_940)), "59.9 s");
        assert_eq!(duration(ms(59_960)), "1 min 0 s");
        assert_eq!(duration(ms(125_000)), "2 min 5 s");
        assert_eq!(duration(ms(3_599_000)), "59 min 59 s");
        assert_eq!(duration(ms(3_600_000)), "1 h 0 min");
        assert_eq!(duration(ms(3_725_000)), "1 h 2 min");
        assert_eq!(duration(Duration::from_secs(50 * 3600)), "50 h 0 min");
    }

    #[test]
    fn server_messages_gain_human_sizes() {
        assert_eq!(
            annotate_sizes("size_too_large", "size 62914560 exceeds the limit of 52428800 bytes"),
            "size 62914560 exceeds the limit of 52428800 bytes (60 MiB > 50 MiB)"
        );
        assert_eq!(
            annotate_sizes("size_too_large", "the image exceeds the profile's limit of 5242880 bytes"),
            "the image exceeds the profile's limit of 5242880 bytes (5 MiB)"
        );
        assert_eq!(
            annotate_sizes(
                "bad_request",
                "multipart 'off' cannot upload 6442450944 bytes: a single PUT is limited to 5 GiB"
            ),
            "multipart 'off' cannot upload 6442450944 bytes (6 GiB): a single PUT is limited to 5 GiB"
        );
        assert_eq!(
            annotate_sizes("bad_request", "body length 10 differs from the declared 2048 bytes"),
            "body length 10 differs from the declared 2048 bytes (2 KiB)"
        );
        assert_eq!(annotate_sizes("bad_request", "only 12 bytes"), "only 12 bytes");
        assert_eq!(annotate_sizes("mime_not_allowed", "no numbers here"), "no numbers here");
    }
}
