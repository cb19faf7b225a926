//! Packagist's version order, as Composer applies it: both versions normalized as
//! composer/semver's `VersionParser::normalize` does (`v` prefix dropped, four numeric
//! parts, `-dev`, `alpha`/`a`, `beta`/`b`, `RC`, `patch`/`pl`/`p` suffixes spelled out,
//! build metadata dropped, date versions, `1.x-dev` branches), then compared with PHP's
//! `version_compare` (`Comparator`'s order): parts split at `.`, `-`, `_`, `+` and at
//! changes between digits and the rest; numbers as numbers, and
//! `dev < alpha = a < beta = b < RC = rc < (a number) < pl = p`, anything else lowest.
//! A version Composer cannot normalize is compared as it is written.

use std::cmp::Ordering;

/// Longest version read: real Packagist versions are under 64 bytes. A longer one is not
/// normalized, and only its first this many bytes are compared (PHP's comparison recurses
/// once per part after a `#`: this bounds the depth).
pub const MAX_VERSION_BYTES: usize = 256;

/// PHP's `trim` set.
fn php_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\0' | '\x0b')
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn digits(s: &[u8]) -> usize {
    s.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// The stability words of the modifier, in the order Composer's pattern tries them.
const STABILITIES: [&str; 9] = ["stable", "beta", "b", "RC", "alpha", "a", "patch", "pl", "p"];

/// The version modifier (`[._-]?(STABILITY((?:[.-]?\d+)*))?([.-]?dev)?` to the end):
/// (stability word, its numbers, dev) when `rest` is one.
fn modifier(rest: &str) -> Option<(Option<&str>, &str, bool)> {
    /// `([.-]?dev)?` to the end: whether `dev` is there.
    fn dev_tail(s: &str) -> Option<bool> {
        if s.is_empty() {
            return Some(false);
        }
        let s = s.strip_prefix(['.', '-']).unwrap_or(s);
        s.eq_ignore_ascii_case("dev").then_some(true)
    }
    fn after_separator(s: &str) -> Option<(Option<&str>, &str, bool)> {
        for word in STABILITIES {
            if !starts_with_ci(s, word) {
                continue;
            }
            let after = &s[word.len()..];
            // The numbers: repeated [.-]?\d+, as many as there are.
            let b = after.as_bytes();
            let mut end = 0;
            loop {
                let sep = usize::from(matches!(b.get(end), Some(b'.' | b'-')));
                let n = digits(b.get(end + sep..).unwrap_or(&[]));
                if n == 0 {
                    break;
                }
                end += sep + n;
            }
            if let Some(dev) = dev_tail(&after[end..]) {
                return Some((Some(&s[..word.len()]), &after[..end], dev));
            }
        }
        dev_tail(s).map(|dev| (None, "", dev))
    }
    // The separator is taken when it helps (the pattern backtracks).
    match rest.strip_prefix(['.', '_', '-']) {
        Some(r) => after_separator(r).or_else(|| after_separator(rest)),
        None => after_separator(rest),
    }
}

/// `expandStability`.
fn expand(word: &str) -> String {
    match word.to_ascii_lowercase().as_str() {
        "a" => "alpha".into(),
        "b" => "beta".into(),
        "p" | "pl" => "patch".into(),
        "rc" => "RC".into(),
        other => other.to_string(),
    }
}

/// The version with its modifier applied.
fn with_modifier(mut version: String, m: (Option<&str>, &str, bool)) -> String {
    let (word, numbers, dev) = m;
    if let Some(w) = word.filter(|w| !w.is_empty()) {
        if w == "stable" {
            return version;
        }
        version.push('-');
        version.push_str(&expand(w));
        version.push_str(numbers.trim_start_matches(['.', '-']));
    }
    if dev {
        version.push_str("-dev");
    }
    version
}

/// `^v?(\d{4}(?:[.:-]?\d{2}){1,6}(?:[.:-]?\d{1,3})?)`: whether `d` (digits and single
/// separators) splits so.
fn date_like(d: &[u8]) -> bool {
    /// From `at`, after `pairs` two-digit groups: can the rest be matched?
    fn from(d: &[u8], at: usize, pairs: usize) -> bool {
        let rest = d.get(at..).unwrap_or(&[]);
        if rest.is_empty() {
            return pairs >= 1;
        }
        let sep = usize::from(matches!(rest.first(), Some(b'.' | b':' | b'-')));
        let n = digits(rest.get(sep..).unwrap_or(&[]));
        // Another pair.
        if pairs < 6 && n >= 2 && from(d, at + sep + 2, pairs + 1) {
            return true;
        }
        // The last group of one to three digits, ending the date.
        pairs >= 1 && (1..=3).any(|k| n >= k && at + sep + k == d.len())
    }
    d.len() >= 4 && d[..4].iter().all(u8::is_ascii_digit) && from(d, 4, 0)
}

/// `normalizeBranch` of a name that ended in `dev`: `1.2.x` to `1.2.9999999.9999999-dev`;
/// None for a name that is not numeric.
fn numeric_branch(name: &str) -> Option<String> {
    let name = name.trim_matches(php_space);
    let name = name.strip_prefix(['v', 'V']).unwrap_or(name);
    let mut parts = name.split('.');
    let first = parts.next()?;
    if first.is_empty() || !first.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut out = first.to_string();
    let mut n = 1;
    for p in parts {
        n += 1;
        let ok = (!p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())) || matches!(p, "x" | "X" | "*");
        if n > 4 || !ok {
            return None;
        }
        out.push('.');
        out.push_str(if p.bytes().all(|c| c.is_ascii_digit()) { p } else { "9999999" });
    }
    for _ in n..4 {
        out.push_str(".9999999");
    }
    Some(out + "-dev")
}

/// `VersionParser::normalize`; None where Composer throws "Invalid version string".
pub fn normalize(version: &str) -> Option<String> {
    if version.len() > MAX_VERSION_BYTES {
        return None;
    }
    let mut v = version.trim_matches(php_space);
    // An alias (`1.0 as 2.0`): the first version.
    if let Some((a, b)) = v.split_once(" as ") {
        let (a, b) = (a.trim_end_matches(' '), b.trim_start_matches(' '));
        let plain = |s: &str| !s.is_empty() && !s.contains(|c: char| c == ',' || c.is_whitespace());
        if plain(a) && plain(b) {
            v = a;
        }
    }
    // A stability flag (`@beta`).
    if let Some(at) = v.rfind('@')
        && ["stable", "RC", "beta", "alpha", "dev"].iter().any(|s| v[at + 1..].eq_ignore_ascii_case(s))
    {
        v = &v[..at];
    }
    if matches!(v, "master" | "trunk" | "default") {
        return Some(format!("dev-{v}"));
    }
    if starts_with_ci(v, "dev-") {
        return Some(format!("dev-{}", &v[4..]));
    }
    // Build metadata.
    if let Some((a, b)) = v.split_once('+')
        && !a.is_empty()
        && !a.contains(|c: char| c == ',' || c.is_whitespace())
        && !b.is_empty()
        && !b.contains(char::is_whitespace)
    {
        v = a;
    }
    let body = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let b = body.as_bytes();
    // Classical: 1-5 digits, up to three `.N` parts, a modifier.
    let n = digits(b);
    if (1..=5).contains(&n) {
        let mut end = n;
        let mut out = body[..n].to_string();
        let mut parts = 1;
        while parts < 4 && b.get(end) == Some(&b'.') {
            let k = digits(&b[end + 1..]);
            if k == 0 {
                break;
            }
            out.push_str(&body[end..end + 1 + k]);
            end += 1 + k;
            parts += 1;
        }
        for _ in parts..4 {
            out.push_str(".0");
        }
        if let Some(m) = modifier(&body[end..]) {
            return Some(with_modifier(out, m));
        }
    }
    // Date: digits and single `.`, `:`, `-` between them, as long as they go.
    let mut end = n;
    while end < b.len() && matches!(b[end], b'.' | b':' | b'-') && b.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end += 1 + digits(&b[end + 1..]);
    }
    if n >= 4
        && date_like(&b[..end])
        && let Some(m) = modifier(&body[end..])
    {
        let date: String = body[..end].chars().map(|c| if c.is_ascii_digit() { c } else { '.' }).collect();
        return Some(with_modifier(date, m));
    }
    // A numeric branch (`1.x-dev`, `2.1-dev`).
    let lower = v.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix("dev") {
        let name = stem.strip_suffix(['.', '-']).unwrap_or(stem);
        return numeric_branch(&v[..name.len()]);
    }
    None
}

/// PHP's `version_compare` special forms: the rank of a part that is not a number
/// (matched by prefix, as PHP does), -1 when none.
fn special_rank(part: &[u8]) -> i32 {
    const FORMS: [(&[u8], i32); 10] = [
        (b"dev", 0),
        (b"alpha", 1),
        (b"a", 1),
        (b"beta", 2),
        (b"b", 2),
        (b"RC", 3),
        (b"rc", 3),
        (b"#", 4),
        (b"pl", 5),
        (b"p", 5),
    ];
    FORMS.iter().find(|(f, _)| part.starts_with(f)).map_or(-1, |(_, r)| *r)
}

/// PHP's canonical version: `-`, `_`, `+` and other non-alphanumerics become `.` (never
/// two in a row), and a `.` goes between digits and letters.
fn canonicalize(v: &[u8]) -> Vec<u8> {
    let Some((&first, rest)) = v.split_first() else { return Vec::new() };
    let mut q = vec![first];
    let mut lp = first;
    let dig = |c: u8| c.is_ascii_digit();
    let ndig = |c: u8| !c.is_ascii_digit() && c != b'.';
    for &c in rest {
        let dot = |q: &mut Vec<u8>| {
            if q.last() != Some(&b'.') {
                q.push(b'.');
            }
        };
        if matches!(c, b'-' | b'_' | b'+') {
            dot(&mut q);
        } else if (ndig(lp) && dig(c)) || (dig(lp) && ndig(c)) {
            dot(&mut q);
            q.push(c);
        } else if !c.is_ascii_alphanumeric() {
            dot(&mut q);
        } else {
            q.push(c);
        }
        lp = c;
    }
    q
}

/// `strtol` of a digit run: saturating at `i64::MAX`.
fn strtol(s: &[u8]) -> i64 {
    s.iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0i64, |n, c| n.saturating_mul(10).saturating_add(i64::from(c.saturating_sub(b'0'))))
}

/// PHP's `version_compare` (ext/standard/versioning.c's order).
fn php_version_compare(a: &[u8], b: &[u8]) -> Ordering {
    if a.is_empty() || b.is_empty() {
        return (!a.is_empty()).cmp(&!b.is_empty());
    }
    let canon = |v: &[u8]| if v.first() == Some(&b'#') { v.to_vec() } else { canonicalize(v) };
    let (x, y) = (canon(a), canon(b));
    let num = |p: &[u8]| p.first().is_some_and(u8::is_ascii_digit);
    let part = |v: &[u8], at: usize| -> (usize, Option<usize>) {
        // (end of the part, start of the next) from `at`.
        match v[at..].iter().position(|c| *c == b'.') {
            Some(i) => (at + i, Some(at + i + 1)),
            None => (v.len(), None),
        }
    };
    let (mut p1, mut p2) = (0usize, 0usize);
    let (mut n1, mut n2) = (Some(0usize), Some(0usize));
    let mut compare = Ordering::Equal;
    while p1 < x.len() && p2 < y.len() && n1.is_some() && n2.is_some() {
        let (e1, next1) = part(&x, p1);
        let (e2, next2) = part(&y, p2);
        n1 = next1;
        n2 = next2;
        let (s1, s2) = (&x[p1..e1], &y[p2..e2]);
        compare = match (num(s1), num(s2)) {
            (true, true) => strtol(s1).cmp(&strtol(s2)),
            (false, false) => special_rank(s1).cmp(&special_rank(s2)),
            (true, false) => special_rank(b"#N#").cmp(&special_rank(s2)),
            (false, true) => special_rank(s1).cmp(&special_rank(b"#N#")),
        };
        if compare.is_ne() {
            break;
        }
        if let Some(n) = n1 {
            p1 = n;
        }
        if let Some(n) = n2 {
            p2 = n;
        }
    }
    if compare.is_eq() {
        if n1.is_some() {
            let rest = &x[p1..];
            compare = if num(rest) { Ordering::Greater } else { php_version_compare(rest, b"#N#") };
        } else if n2.is_some() {
            let rest = &y[p2..];
            compare = if num(rest) { Ordering::Less } else { php_version_compare(b"#N#", rest) };
        }
    }
    compare
}

/// Compares two Packagist versions: normalized as Composer does (as written when it
/// cannot), then in `version_compare`'s order. Two branches (`dev-main`) are equal only
/// when they are the same branch; else ordered by name, which Composer leaves unordered.
pub fn compare(a: &str, b: &str) -> Ordering {
    let prepared = |v: &str| -> Vec<u8> {
        let n = normalize(v).unwrap_or_else(|| v.trim_matches(php_space).to_string());
        let mut bytes = n.into_bytes();
        bytes.truncate(MAX_VERSION_BYTES);
        bytes
    };
    let (na, nb) = (prepared(a), prepared(b));
    if na.starts_with(b"dev-") && nb.starts_with(b"dev-") {
        return na.cmp(&nb);
    }
    php_version_compare(&na, &nb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composer_normalize_and_order() {
        for (v, n) in [
            ("1.0", "1.0.0.0"),
            ("v2.3.4", "2.3.4.0"),
            ("1.0.0-beta1", "1.0.0.0-beta1"),
            ("1.0.0b2", "1.0.0.0-beta2"),
            ("1.0-RC.1", "1.0.0.0-RC1"),
            ("1.0.0-pl3", "1.0.0.0-patch3"),
            ("1.0-dev", "1.0.0.0-dev"),
            ("1.0.0-alpha1-dev", "1.0.0.0-alpha1-dev"),
            ("1.0.0+build.5", "1.0.0.0"),
            ("1.2.3.4", "1.2.3.4"),
            ("2010-01-02", "2010.01.02"),
            ("20100102", "20100102"),
            ("1.x-dev", "1.9999999.9999999.9999999-dev"),
            ("dev-main", "dev-main"),
            ("1.0.0-stable", "1.0.0.0"),
        ] {
            assert_eq!(normalize(v).as_deref(), Some(n), "{v}");
        }
        assert_eq!(normalize("foo"), None);
        assert_eq!(normalize("1.0.0-gamma"), None);
        let chain = ["1.0-dev", "1.0-alpha", "1.0-alpha2", "1.0-beta", "1.0-RC1", "1.0", "1.0-patch1", "1.0.1", "v1.1"];
        for w in chain.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(compare("v1.0", "1.0.0.0"), Ordering::Equal);
        // A hostile version: bounded recursion, no panic; PHP's own answers (a trailing
        // `.` makes even equal strings compare lower).
        let deep = "#.".repeat(1 << 20);
        assert_eq!(compare(&deep, &deep), Ordering::Less);
        assert_eq!(compare("é", "ü"), Ordering::Less);
    }
}
