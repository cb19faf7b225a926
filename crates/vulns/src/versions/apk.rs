//! Alpine's version order (apk-tools, after Gentoo's): `N[.N]...[LETTER][_SUFFIX[N]]...[-rN]`.
//! Numbers compare as numbers, except that a later component with a leading zero
//! compares as a decimal fraction (`1.01 < 1.1`, `1.1 == 1.1`); more components are
//! newer; then the letter; then the suffixes, where `_alpha < _beta < _pre < _rc`
//! (before the release) `< _cvs < _svn < _git < _hg < _p` (after it); then `-rN`.
//! No apk tool runs on Debian: the order is tested on the examples of Alpine's and
//! Gentoo's specifications and orders derived from them by hand.

use super::dpkg::cmp_digits;
use std::cmp::Ordering;

/// The suffixes in order; the release itself sits between `rc` and `cvs`.
const SUFFIXES: [&str; 9] = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"];
/// Where "no suffix" ranks: after `rc` (3), before `cvs` (ranked 5 and up).
const RELEASE: usize = 4;

#[derive(Debug, Default)]
struct Parsed<'a> {
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    suffixes: Vec<(usize, &'a str)>,
    revision: &'a str,
    /// What is left when the string does not follow the grammar (compared as text).
    rest: &'a str,
}

fn parse(v: &str) -> Parsed<'_> {
    let mut p = Parsed::default();
    let (body, rev) = match v.rsplit_once("-r") {
        Some((b, r)) if !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()) => (b, r),
        _ => (v, ""),
    };
    p.revision = rev;
    let b = body.as_bytes();
    let mut i = 0;
    loop {
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if s == i {
            break;
        }
        p.numbers.push(&body[s..i]);
        if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
        } else {
            break;
        }
    }
    if let Some(&c) = b.get(i).filter(|c| c.is_ascii_lowercase()) {
        p.letter = Some(c);
        i += 1;
    }
    while b.get(i) == Some(&b'_') {
        let s = i + 1;
        let mut e = s;
        while e < b.len() && b[e].is_ascii_lowercase() {
            e += 1;
        }
        let Some(k) = SUFFIXES.iter().position(|x| *x == &body[s..e]) else { break };
        // Ranks past the release make room for it.
        let k = if k >= RELEASE { k + 1 } else { k };
        let ns = e;
        while e < b.len() && b[e].is_ascii_digit() {
            e += 1;
        }
        p.suffixes.push((k, &body[ns..e]));
        i = e;
    }
    p.rest = &body[i..];
    p
}

/// One later version component: a leading zero makes it a decimal fraction.
fn cmp_component(a: &str, b: &str) -> Ordering {
    if a.starts_with('0') || b.starts_with('0') {
        a.trim_end_matches('0').cmp(b.trim_end_matches('0'))
    } else {
        cmp_digits(a.as_bytes(), b.as_bytes())
    }
}

/// Compares two Alpine package versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (parse(a.trim()), parse(b.trim()));
    for (k, (x, y)) in pa.numbers.iter().zip(&pb.numbers).enumerate() {
        let o = if k == 0 { cmp_digits(x.as_bytes(), y.as_bytes()) } else { cmp_component(x, y) };
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = pa.numbers.len().cmp(&pb.numbers.len()).then_with(|| pa.letter.cmp(&pb.letter));
    if o != Ordering::Equal {
        return o;
    }
    let n = pa.suffixes.len().max(pb.suffixes.len());
    for k in 0..n {
        let x = pa.suffixes.get(k).copied().unwrap_or((RELEASE, ""));
        let y = pb.suffixes.get(k).copied().unwrap_or((RELEASE, ""));
        // A missing suffix is the release itself; `_p` beyond it counts as `_p0`.
        let o = x.0.cmp(&y.0).then_with(|| cmp_digits(x.1.as_bytes(), y.1.as_bytes()));
        if o != Ordering::Equal {
            return o;
        }
    }
    cmp_digits(pa.revision.as_bytes(), pb.revision.as_bytes()).then_with(|| pa.rest.cmp(pb.rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each list ascends strictly; from Alpine's APKBUILD reference (pkgver) and
    /// Gentoo's version specification, which apk follows.
    #[test]
    fn spec_orders() {
        let chains: &[&[&str]] = &[
            &[
                "1.0_alpha",
                "1.0_alpha2",
                "1.0_beta",
                "1.0_beta3",
                "1.0_pre1",
                "1.0_rc1",
                "1.0",
                "1.0_cvs",
                "1.0_svn",
                "1.0_git20240101",
                "1.0_hg",
                "1.0_p1",
                "1.0_p2",
            ],
            &["1.0", "1.0-r1", "1.0-r2", "1.0-r10", "1.0a", "1.0b-r1", "1.0.1", "1.1"],
            &["1.01", "1.02", "1.1"],
            &["1.2.3_rc1-r9", "1.2.3-r0", "1.2.3_p0", "1.2.3_p1-r1"],
            &["0.9.9", "0.10", "2", "10"],
            &["1.0_alpha_p1", "1.0_alpha1", "1.0_beta_alpha", "1.0_beta"],
        ];
        for c in chains {
            for w in c.windows(2) {
                assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
                assert_eq!(compare(w[1], w[0]), Ordering::Greater, "{} > {}", w[1], w[0]);
            }
        }
        assert_eq!(compare("1.0-r0", "1.0"), Ordering::Equal);
        assert_eq!(compare("1.10", "1.010"), Ordering::Greater);
        assert_eq!(compare("1.1", "1.10"), Ordering::Less);
    }
}
