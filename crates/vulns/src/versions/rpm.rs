//! rpm's version order: `rpmvercmp` over each of `[EPOCH:]VERSION[-RELEASE]`, as
//! `rpm.vercmp()` compares two EVR strings (rpm 4.16+): epochs (missing = 0), then
//! versions, then releases (a missing one as empty). Within a part: alphanumeric runs, digits
//! newer than letters, `~` older than anything (even the end), `^` newer than the end but
//! older than any further segment.

use super::dpkg::cmp_digits;
use std::cmp::Ordering;

/// Splits `[epoch:]version[-release]` as rpm's `rpmverParse` does.
fn split(v: &str) -> (&str, &str, Option<&str>) {
    let v = v.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (epoch, rest) = match v.as_bytes().get(digits) {
        Some(b':') => (&v[..digits], &v[digits + 1..]),
        _ => ("", v),
    };
    match rest.rsplit_once('-') {
        Some((ver, rel)) => (epoch, ver, Some(rel)),
        None => (epoch, rest, None),
    }
}

/// rpm's `rpmvercmp` over one part.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            match (ca, cb) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(x), _) if x != b'^' => return Ordering::Greater,
                (_, Some(y)) if y != b'^' => return Ordering::Less,
                _ => {}
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(ca), Some(_)) = (ca, cb) else { break };
        let num = ca.is_ascii_digit();
        let class = |c: &u8| if num { c.is_ascii_digit() } else { c.is_ascii_alphabetic() };
        let si = i;
        while i < a.len() && class(&a[i]) {
            i += 1;
        }
        let sj = j;
        while j < b.len() && class(&b[j]) {
            j += 1;
        }
        // A numeric segment is newer than an alphabetic one.
        if sj == j {
            return if num { Ordering::Greater } else { Ordering::Less };
        }
        let o = if num { cmp_digits(&a[si..i], &b[sj..j]) } else { a[si..i].cmp(&b[sj..j]) };
        if o != Ordering::Equal {
            return o;
        }
    }
    // Whichever has something left is newer.
    match (i < a.len(), j < b.len()) {
        (false, false) => Ordering::Equal,
        (true, _) => Ordering::Greater,
        _ => Ordering::Less,
    }
}

/// Compares two `[EPOCH:]VERSION[-RELEASE]` strings as `rpm.vercmp()` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split(a);
    let (eb, vb, rb) = split(b);
    let e = |s: &str| if s.is_empty() { "0" } else { s }.to_string();
    // A missing release compares as an empty one (rpm 4.18's rpmverCmp): `1.0 < 1.0-0`.
    vercmp(&e(ea), &e(eb)).then_with(|| vercmp(va, vb)).then_with(|| vercmp(ra.unwrap_or(""), rb.unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpmvercmp_examples() {
        assert_eq!(vercmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(vercmp("1.0^git1", "1.0"), Ordering::Greater);
        assert_eq!(vercmp("1.0^git1", "1.0.1"), Ordering::Less);
        assert_eq!(vercmp("1.0a", "1.0.1"), Ordering::Less);
        assert_eq!(vercmp("2_0", "2.0"), Ordering::Equal);
        assert_eq!(compare("1:1.0-1", "2.0-1"), Ordering::Greater);
        assert_eq!(compare("1.0", "1.0-5"), Ordering::Less);
    }
}
