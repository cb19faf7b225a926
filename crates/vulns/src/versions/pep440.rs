//! Python's version order (PEP 440, as `packaging.version.Version` sorts): epoch,
//! release (trailing zeros ignored), pre-release (`a` < `b` < `rc`), post-release,
//! development release, local label. Alternative spellings are normalized as PEP 440
//! says (`alpha`, `c`, `pre`, `preview`, `rev`, `r`, `-N` for post, `.`/`-`/`_`
//! separators, a leading `v`). A string that is not a PEP 440 version sorts by text,
//! after every valid one.

use std::cmp::Ordering;

/// One local label segment: numbers sort after words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Local {
    Word(String),
    Num(u128),
}

/// The sort key of one version (`packaging`'s `_cmpkey`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    epoch: u128,
    release: Vec<u128>,
    /// (-1, 0) for a dev-only release (before any pre-release), (3, 0) for none.
    pre: (i8, u128),
    /// -1 for none.
    post: (i8, u128),
    /// (1, 0) for none: a dev release sorts before the release it leads to.
    dev: (i8, u128),
    /// None sorts before any local label.
    local: Option<Vec<Local>>,
}

/// Reads a run of digits at `s[*i..]` (none: None).
fn number(s: &[u8], i: &mut usize) -> Option<u128> {
    let st = *i;
    while *i < s.len() && s[*i].is_ascii_digit() {
        *i += 1;
    }
    if st == *i {
        return None;
    }
    std::str::from_utf8(&s[st..*i]).ok()?.parse().ok()
}

fn skip_sep(s: &[u8], i: &mut usize) {
    if matches!(s.get(*i), Some(b'.' | b'-' | b'_')) {
        *i += 1;
    }
}

/// Matches one of `words` at `s[*i..]`, longest first.
fn word<'w>(s: &[u8], i: &mut usize, words: &[&'w str]) -> Option<&'w str> {
    let mut best: Option<&str> = None;
    for w in words {
        if s[*i..].starts_with(w.as_bytes()) && best.is_none_or(|b| w.len() > b.len()) {
            best = Some(w);
        }
    }
    if let Some(w) = best {
        *i += w.len();
    }
    best
}

fn parse(v: &str) -> Option<Key> {
    let lower = v.trim().to_ascii_lowercase();
    let s = lower.strip_prefix('v').unwrap_or(&lower).as_bytes();
    let mut i = 0;
    let mut epoch = 0;
    let first = number(s, &mut i)?;
    let mut release = vec![first];
    if s.get(i) == Some(&b'!') {
        epoch = first;
        i += 1;
        release = vec![number(s, &mut i)?];
    }
    while s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        release.push(number(s, &mut i)?);
    }
    let mut key = Key { epoch, release, pre: (3, 0), post: (-1, 0), dev: (1, 0), local: None };
    // Pre-release.
    let save = i;
    skip_sep(s, &mut i);
    match word(s, &mut i, &["a", "alpha", "b", "beta", "c", "rc", "pre", "preview"]) {
        Some(w) => {
            let kind = match w {
                "a" | "alpha" => 0,
                "b" | "beta" => 1,
                _ => 2,
            };
            skip_sep(s, &mut i);
            key.pre = (kind, number(s, &mut i).unwrap_or(0));
        }
        None => i = save,
    }
    // Post-release: `.postN`, `-N`.
    let save = i;
    if s.get(i) == Some(&b'-') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        key.post = (0, number(s, &mut i)?);
    } else {
        skip_sep(s, &mut i);
        if word(s, &mut i, &["post", "rev", "r"]).is_some() {
            skip_sep(s, &mut i);
            key.post = (0, number(s, &mut i).unwrap_or(0));
        } else {
            i = save;
        }
    }
    // Development release.
    let save = i;
    skip_sep(s, &mut i);
    if word(s, &mut i, &["dev"]).is_some() {
        skip_sep(s, &mut i);
        key.dev = (0, number(s, &mut i).unwrap_or(0));
    } else {
        i = save;
    }
    // Local label.
    if s.get(i) == Some(&b'+') {
        let label = std::str::from_utf8(&s[i + 1..]).ok()?;
        let mut segs = Vec::new();
        for seg in label.split(['.', '-', '_']) {
            if seg.is_empty() || !seg.bytes().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            segs.push(match seg.parse() {
                Ok(n) => Local::Num(n),
                Err(_) => Local::Word(seg.to_string()),
            });
        }
        key.local = Some(segs);
        i = s.len();
    }
    if i != s.len() {
        return None;
    }
    while key.release.len() > 1 && key.release.last() == Some(&0) {
        key.release.pop();
    }
    if key.pre.0 == 3 && key.post.0 == -1 && key.dev.0 == 0 {
        key.pre = (-1, 0);
    }
    Some(key)
}

/// True when `v` is a PEP 440 version.
pub fn is_valid(v: &str) -> bool {
    parse(v).is_some()
}

/// Compares two Python versions as `packaging.version.Version` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep440_order() {
        let chain = [
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
            "1!0.1",
        ];
        for w in chain.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(compare("1.0", "1.0.0"), Ordering::Equal);
        assert_eq!(compare("1.0-1", "1.0.post1"), Ordering::Equal);
        assert_eq!(compare("v1.0c1", "1.0rc1"), Ordering::Equal);
        assert!(!is_valid("1.0 junk"));
    }
}
