//! Semantic Versioning 2.0.0's order, as npm's `semver`, Go modules (with their leading
//! `v`) and crates.io use it: `MAJOR.MINOR.PATCH`, then a pre-release (`-alpha.1`) sorts
//! before its release, its dot-separated identifiers compared numerically when digits,
//! as text otherwise, numbers before words, fewer identifiers first; build metadata
//! (`+...`) is ignored. Missing minor or patch count as 0 (Go's `v1.2`), and a string
//! that is not semver sorts by text after every valid one.

use super::dpkg::cmp_digits;
use std::cmp::Ordering;

#[derive(Debug)]
struct Parsed<'a> {
    core: [&'a str; 3],
    pre: Vec<&'a str>,
}

fn parse(v: &str) -> Option<Parsed<'_>> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = v.split_once('+').map_or(v, |(a, _)| a);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, p.split('.').collect()),
        None => (v, Vec::new()),
    };
    let mut parts = core.split('.');
    let mut out = ["0"; 3];
    for (k, slot) in out.iter_mut().enumerate() {
        match parts.next() {
            Some(p) if !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()) => *slot = p,
            None if k > 0 => {}
            _ => return None,
        }
    }
    if parts.next().is_some() {
        return None;
    }
    let pre: Vec<&str> = pre;
    if pre.iter().any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')) {
        return None;
    }
    Some(Parsed { core: out, pre })
}

fn ident(a: &str, b: &str) -> Ordering {
    let num = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    match (num(a), num(b)) {
        (true, true) => cmp_digits(a.as_bytes(), b.as_bytes()),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Compares two semantic versions (npm `semver.compare`, Go's `semver.Compare`).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (Some(x), Some(y)) = (parse(a), parse(b)) else {
        return match (parse(a).is_some(), parse(b).is_some()) {
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => a.cmp(b),
        };
    };
    for (p, q) in x.core.iter().zip(&y.core) {
        let o = cmp_digits(p.as_bytes(), q.as_bytes());
        if o != Ordering::Equal {
            return o;
        }
    }
    match (x.pre.is_empty(), y.pre.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    for (p, q) in x.pre.iter().zip(&y.pre) {
        let o = ident(p, q);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.pre.len().cmp(&y.pre.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_spec_order() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "v1.0.1",
            "1.10.0",
        ];
        for w in chain.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(compare("1.0.0+build.1", "1.0.0"), Ordering::Equal);
        assert_eq!(compare("v1.2", "1.2.0"), Ordering::Equal);
    }
}
