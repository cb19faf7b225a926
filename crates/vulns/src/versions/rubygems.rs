//! RubyGems' version order (`Gem::Version#<=>`): the version (`-` read as `.pre.`) is cut
//! into runs of digits and runs of letters; the numbers before the first letter run and
//! the segments from it on each lose their trailing zeros, and the two are compared
//! segment by segment, a missing one counting as 0: numbers as numbers of any length,
//! letters byte by byte, and letters (a prerelease) before any number.

use super::dpkg::cmp_digits;
use std::cmp::Ordering;

/// One segment: digits (leading zeros removed) or letters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg<'a> {
    Num(&'a [u8]),
    Str(&'a [u8]),
}

/// Ruby's `\s`.
fn ruby_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

fn trim(v: &str) -> &[u8] {
    let b = v.as_bytes();
    let start = b.iter().position(|c| !ruby_space(*c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ruby_space(*c)).map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or(&[])
}

/// Whether `Gem::Version.correct?` takes `v`: blank, or digits, then `.`-separated
/// alphanumeric runs, then optionally `-` and `.`-separated runs of alphanumerics and `-`.
pub fn is_valid(v: &str) -> bool {
    let b = trim(v);
    if b.is_empty() {
        return true;
    }
    let (release, pre) = match b.iter().position(|c| *c == b'-') {
        Some(i) => (&b[..i], Some(&b[i + 1..])),
        None => (b, None),
    };
    let mut parts = release.split(|c| *c == b'.');
    let first_ok = parts.next().is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    let release_ok = first_ok && parts.all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_alphanumeric));
    let pre_ok = pre.is_none_or(|p| {
        p.split(|c| *c == b'.').all(|s| !s.is_empty() && s.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-'))
    });
    release_ok && pre_ok
}

/// The canonical segments: digit and letter runs (separators dropped), trailing zeros
/// removed from the numeric part and from the rest separately.
fn canonical(v: &str) -> Vec<Seg<'_>> {
    let b = trim(v);
    let mut segs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let run = |f: fn(&u8) -> bool| b[i..].iter().take_while(|c| f(c)).count();
        if c.is_ascii_digit() {
            let n = run(u8::is_ascii_digit);
            let digits = &b[i..i + n];
            let zeros = digits.iter().take_while(|c| **c == b'0').count();
            segs.push(Seg::Num(&digits[zeros..]));
            i += n;
        } else if c.is_ascii_alphabetic() {
            let n = run(u8::is_ascii_alphabetic);
            segs.push(Seg::Str(&b[i..i + n]));
            i += n;
        } else {
            // `-` is `.pre.`: a `pre` segment between the runs around it.
            if c == b'-' {
                segs.push(Seg::Str(b"pre"));
            }
            i += 1;
        }
    }
    let string_start = segs.iter().position(|s| matches!(s, Seg::Str(_))).unwrap_or(segs.len());
    let mut rest = segs.split_off(string_start);
    let zero = |s: &Seg<'_>| *s == Seg::Num(b"");
    while segs.last().is_some_and(zero) {
        segs.pop();
    }
    while rest.last().is_some_and(zero) {
        rest.pop();
    }
    segs.extend(rest);
    segs
}

/// Compares two RubyGems versions as `Gem::Version#<=>` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (l, r) = (canonical(a), canonical(b));
    let zero = Seg::Num(b"");
    for k in 0..l.len().max(r.len()) {
        let x = l.get(k).unwrap_or(&zero);
        let y = r.get(k).unwrap_or(&zero);
        let o = match (x, y) {
            (Seg::Num(p), Seg::Num(q)) => cmp_digits(p, q),
            (Seg::Str(p), Seg::Str(q)) => p.cmp(q),
            (Seg::Str(_), Seg::Num(_)) => Ordering::Less,
            (Seg::Num(_), Seg::Str(_)) => Ordering::Greater,
        };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gem_version_order() {
        let chain = ["0.9", "1.0.a", "1.0.a.1", "1.0.b", "1.0.pre", "1.0.rc1", "1.0", "1.0.1", "1.1", "2"];
        for w in chain.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        for (a, b) in [("1.0.0", "1"), ("1-1", "1.pre.1"), ("1.a.0", "1.a"), ("01", "1"), ("", "0")] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} == {b}");
        }
        assert!(is_valid(" 1.0.a-x-1.2 ") && is_valid(""));
        assert!(!is_valid("a1") && !is_valid("1..2") && !is_valid("1.0-") && !is_valid("1_0"));
    }
}
