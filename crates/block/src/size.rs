//! Sizes as users type them: `512`, `64K`, `10G`, `1.5T`, `4096b`.

use crate::{Error, Result};

/// Parses a size with an optional binary suffix (K, M, G, T, P, E in either case, or
/// KiB..EiB; `b`/`B` for bytes), as `qemu-img` accepts them. A plain number is bytes.
#[expect(clippy::as_conversions, reason = "fractional sizes (1.5G) go through f64; the range is checked first")]
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let bad = || Error::argument(format!("{text:?} is not a size (examples: 4096, 64K, 10G, 1.5T)"));
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        "e" | "eib" => 60,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let bytes = f * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 || bytes.fract() != 0.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Formats bytes for people: `1.5 GiB`, `512 B`.
#[expect(clippy::as_conversions, reason = "a display approximation: no u64 -> f64 conversion is lossless")]
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.3} {}", UNITS[unit]).replace(".000 ", " ") }
}

/// A count with its noun in the right number, for people: `1 layer`, `2 layers`, `0 files`.
pub fn count<N: Copy + std::fmt::Display + TryInto<u8>>(n: N, one: &str, many: &str) -> String {
    let noun = if n.try_into().is_ok_and(|n: u8| n == 1) { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_the_right_number() {
        assert_eq!(count(1usize, "layer", "layers"), "1 layer");
        assert_eq!(count(2u64, "layer", "layers"), "2 layers");
        assert_eq!(count(0u32, "entry", "entries"), "0 entries");
        assert_eq!(count(257u64, "entry", "entries"), "257 entries");
    }

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("2m").unwrap(), 2 << 20);
        for bad in ["", "G", "1Q", "-1", "1.3b", "99999999999999999999", "20E"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}: {e}");
            assert!(e.to_string().contains("is not a size"), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(3 << 29), "1.500 GiB");
    }
}
