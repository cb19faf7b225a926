//! Names and times as FAT stores them: 8.3 short names, VFAT long-name slots and their
//! checksum, DOS dates and times.

/// Characters allowed in a short name besides `A-Z` and `0-9`.
const SHORT_EXTRA: &[u8] = b"!#$%&'()-@^_`{}~";

/// True when `c` may appear in a short name as is.
pub(crate) fn short_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_EXTRA.contains(&c)
}

/// The checksum of an 11-byte short name that every long-name slot of the entry carries.
pub(crate) fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short.iter().fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// `name` as an exact short name (`README.TXT`), when it is one: uppercase, at most 8
/// characters and a 3-character extension, only short-name characters.
pub(crate) fn exact_short(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = match name.rfind('.') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (name, ""),
    };
    if base.is_empty() || base.len() > 8 || ext.len() > 3 || (name.ends_with('.')) {
        return None;
    }
    if !base.bytes().chain(ext.bytes()).all(short_char) {
        return None;
    }
    let mut s = [b' '; 11];
    s[..base.len()].copy_from_slice(base.as_bytes());
    s[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(s)
}

/// The basis of a generated short name for `name` (Microsoft's algorithm, simplified):
/// uppercase, characters that cannot appear replaced by `_`, spaces and leading dots
/// dropped; base cut to 8, extension (after the last dot) to 3. Also says whether the
/// conversion lost anything, in which case a numeric tail is required.
pub(crate) fn short_basis(name: &str) -> ([u8; 8], usize, [u8; 3], usize, bool) {
    let trimmed = name.trim_start_matches('.');
    let (base, ext) = match trimmed.rfind('.') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (trimmed, ""),
    };
    let mut lossy = trimmed.len() != name.len();
    let mut conv = |s: &str, max: usize| {
        let mut out = Vec::new();
        for ch in s.chars() {
            if ch == ' ' || ch == '.' {
                lossy = true;
                continue;
            }
            let up = ch.to_ascii_uppercase();
            let b = match u8::try_from(up) {
                Ok(c) if up.is_ascii() && short_char(c) => c,
                _ => {
                    lossy = true;
                    b'_'
                }
            };
            if out.len() == max {
                lossy = true;
                break;
            }
            out.push(b);
        }
        out
    };
    let b = conv(base, 8);
    let e = conv(ext, 3);
    let mut base8 = [b' '; 8];
    base8[..b.len()].copy_from_slice(&b);
    let mut ext3 = [b' '; 3];
    ext3[..e.len()].copy_from_slice(&e);
    (base8, b.len(), ext3, e.len(), lossy)
}

/// The short name with numeric tail `~n` on a basis.
pub(crate) fn with_tail(base: &[u8; 8], base_len: usize, ext: &[u8; 3], n: u32) -> [u8; 11] {
    let tail = format!("~{n}");
    let keep = base_len.min(8 - tail.len()).max(if base_len == 0 { 0 } else { 1 });
    let mut s = [b' '; 11];
    let mut name: Vec<u8> = base[..keep].to_vec();
    if name.is_empty() {
        name.push(b'_');
    }
    name.truncate(8 - tail.len());
    name.extend_from_slice(tail.as_bytes());
    s[..name.len()].copy_from_slice(&name);
    s[8..].copy_from_slice(ext);
    s
}

/// Why `name` cannot be a FAT long name, if it cannot.
pub(crate) fn long_name_problem(name: &str) -> Option<&'static str> {
    if name.chars().any(|c| u32::from(c) < 0x20 || "\"*/:<>?\\|".contains(c)) {
        return Some("contains a character FAT names cannot hold");
    }
    if name.ends_with(' ') || name.ends_with('.') {
        return Some("ends in a space or a dot, which FAT drops");
    }
    if name.encode_utf16().count() > 255 {
        return Some("is longer than 255 UTF-16 units");
    }
    None
}

use diskcast_tree::{civil_from_days as civil, days_from_civil};

/// First and last second FAT can record (1980-01-01 and 2107-12-31 23:59:58, UTC).
const DOS_MIN: i64 = 315_532_800;
const DOS_MAX: i64 = 4_354_819_198;

/// Unix seconds to DOS (date, time, hundredths beyond the 2-second unit), in UTC,
/// clamped to what FAT can record.
pub fn to_dos(secs: i64, nsec: u32) -> (u16, u16, u8) {
    // After the clamp every field is within its bit width (year - 1980 <= 127, hour < 24,
    // ...), so the conversions below cannot fail; 0 is never reached.
    let field = |v: i64| u16::try_from(v).unwrap_or(0);
    let t = secs.clamp(DOS_MIN, DOS_MAX);
    let (days, rem) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    let date = (field(y - 1980) << 9) | (field(i64::from(m)) << 5) | field(i64::from(d));
    let (h, mi, s) = (rem / 3600, (rem / 60) % 60, rem % 60);
    let time = (field(h) << 11) | (field(mi) << 5) | field(s / 2);
    let tenths = if t == secs { u8::try_from((s % 2) * 100 + i64::from(nsec / 10_000_000)).unwrap_or(0) } else { 0 };
    (date, time, tenths)
}

/// DOS date and time (UTC) to Unix seconds; `None` for a zero or impossible date.
pub fn from_dos(date: u16, time: u16) -> Option<i64> {
    let (y, m, d) = (1980 + i64::from(date >> 9), u32::from((date >> 5) & 15), u32::from(date & 31));
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let (h, mi, s) = (i64::from(time >> 11), i64::from((time >> 5) & 63), i64::from(time & 31) * 2);
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_times_round_trip() {
        for t in [DOS_MIN, 1_700_000_000, 951_782_400 /* 2000-02-29 */, DOS_MAX] {
            let (d, tm, _) = to_dos(t, 0);
            assert_eq!(from_dos(d, tm), Some(t - t % 2), "{t}");
        }
        assert_eq!(to_dos(0, 0), to_dos(DOS_MIN, 0));
        assert_eq!(from_dos(0, 0), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(&exact_short("README.TXT").unwrap(), b"README  TXT");
        assert!(exact_short("readme.txt").is_none());
        assert!(exact_short("TOOLONGNAME").is_none());
        let (b, bl, e, _, lossy) = short_basis("My Document.html");
        assert!(lossy);
        assert_eq!(&with_tail(&b, bl, &e, 1), b"MYDOCU~1HTM");
        let (b, bl, e, _, lossy) = short_basis("été");
        assert!(lossy);
        assert_eq!(&with_tail(&b, bl, &e, 12), b"_T_~12     ");
        // The checksum of "FOO     BAR" as Microsoft's algorithm gives it.
        let mut sum = 0u8;
        for &c in b"FOO     BAR" {
            sum = (if sum & 1 != 0 { 0x80 } else { 0 }) + (sum >> 1);
            sum = sum.wrapping_add(c);
        }
        assert_eq!(lfn_checksum(b"FOO     BAR"), sum);
    }
}
