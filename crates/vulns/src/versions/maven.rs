//! Maven's version order (`ComparableVersion` of maven-artifact 3.x): the version is cut
//! at `.`, `-` and digit/letter changes into numbers and qualifiers; a `-` or a change
//! between digits and letters opens a sub-list. Known qualifiers sort `alpha < beta <
//! milestone < rc = cr < snapshot < "" = ga = final = release < sp`, unknown ones after
//! them by text; `a1`, `b1`, `m1` mean alpha, beta, milestone. Trailing zeros and empty
//! qualifiers are dropped (`1.0.0 == 1`, `1-ga == 1`), and a number sorts after any
//! qualifier.

use super::dpkg::cmp_digits;
use std::cmp::Ordering;

#[derive(Debug, Clone)]
enum Item {
    /// Digits, leading zeros removed.
    Int(String),
    /// A qualifier, aliases resolved.
    Str(String),
    List(Vec<Item>),
}

const QUALIFIERS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];
/// Where the release (no qualifier) sorts among [`QUALIFIERS`].
const RELEASE: usize = 5;

/// The rank of a qualifier: a known one's index, unknown ones after all of them by text.
fn rank(q: &str) -> (usize, &str) {
    match QUALIFIERS.iter().position(|k| *k == q) {
        Some(i) => (i, ""),
        None => (QUALIFIERS.len(), q),
    }
}

fn string_item(s: &str, followed_by_digit: bool) -> Item {
    let s = match (s, followed_by_digit) {
        ("a", true) => "alpha",
        ("b", true) => "beta",
        ("m", true) => "milestone",
        ("ga" | "final" | "release", _) => "",
        ("cr", _) => "rc",
        (s, _) => s,
    };
    Item::Str(s.to_string())
}

fn parse_item(digits: bool, s: &str) -> Item {
    if digits { Item::Int(s.trim_start_matches('0').to_string()) } else { string_item(s, false) }
}

fn is_null(i: &Item) -> bool {
    match i {
        Item::Int(d) => d.is_empty(),
        Item::Str(s) => s.is_empty(),
        Item::List(l) => l.is_empty(),
    }
}

/// Drops null items from the end, looking past non-null sub-lists.
fn normalize(list: &mut Vec<Item>) {
    let mut i = list.len();
    while i > 0 {
        i -= 1;
        if is_null(&list[i]) {
            list.remove(i);
        } else if !matches!(list[i], Item::List(_)) {
            break;
        }
    }
}

fn parse(v: &str) -> Vec<Item> {
    let v = v.trim().to_lowercase();
    let b = v.as_bytes();
    // The open lists; each later one is the last item of the one before.
    let mut stack: Vec<Vec<Item>> = vec![Vec::new()];
    let mut digit = false;
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let Some(list) = stack.last_mut() else { break };
        if c == b'.' || c == b'-' {
            list.push(if i == start { Item::Int(String::new()) } else { parse_item(digit, &v[start..i]) });
            start = i + 1;
            if c == b'-' {
                stack.push(Vec::new());
            }
        } else if c.is_ascii_digit() {
            if !digit && i > start {
                // A qualifier after a `.` counts as after a `-` (maven-artifact 3.8:
                // `1.0.0.X1 < 1.0.0-X2`).
                if !list.is_empty() {
                    stack.push(Vec::new());
                }
                let Some(list) = stack.last_mut() else { break };
                list.push(string_item(&v[start..i], true));
                start = i;
                stack.push(Vec::new());
            }
            digit = true;
        } else {
            if digit && i > start {
                list.push(parse_item(true, &v[start..i]));
                start = i;
                stack.push(Vec::new());
            }
            digit = false;
        }
    }
    if v.len() > start {
        // A qualifier at the end after a `.` counts as after a `-` (maven-artifact 3.8:
        // `1.0.0.X1 < 1.0.0-X2`).
        if !digit && stack.last().is_some_and(|l| !l.is_empty()) {
            stack.push(Vec::new());
        }
        if let Some(list) = stack.last_mut() {
            list.push(parse_item(digit, &v[start..]));
        }
    }
    while let Some(mut list) = stack.pop() {
        normalize(&mut list);
        match stack.last_mut() {
            Some(parent) => parent.push(Item::List(list)),
            None => return list,
        }
    }
    Vec::new()
}

/// `a.compareTo(b)`, `b` None for Java's null.
fn cmp(a: &Item, b: Option<&Item>) -> Ordering {
    match (a, b) {
        (Item::Int(x), None) => {
            if x.is_empty() {
                Ordering::Equal
            } else {
                Ordering::Greater
            }
        }
        (Item::Int(x), Some(Item::Int(y))) => cmp_digits(x.as_bytes(), y.as_bytes()),
        (Item::Int(_), Some(_)) => Ordering::Greater,
        (Item::Str(x), None) => rank(x).cmp(&(RELEASE, "")),
        (Item::Str(_), Some(Item::Int(_) | Item::List(_))) => Ordering::Less,
        (Item::Str(x), Some(Item::Str(y))) => rank(x).cmp(&rank(y)),
        // The whole list against null, not only its first item (maven-artifact 3.8, MNG-6964).
        (Item::List(l), None) => l.iter().map(|f| cmp(f, None)).find(|o| o.is_ne()).unwrap_or(Ordering::Equal),
        (Item::List(_), Some(Item::Int(_))) => Ordering::Less,
        (Item::List(_), Some(Item::Str(_))) => Ordering::Greater,
        (Item::List(l), Some(Item::List(r))) => cmp_lists(l, r),
    }
}

fn cmp_lists(l: &[Item], r: &[Item]) -> Ordering {
    for k in 0..l.len().max(r.len()) {
        let o = match (l.get(k), r.get(k)) {
            (None, None) => Ordering::Equal,
            (None, Some(y)) => cmp(y, None).reverse(),
            (Some(x), y) => cmp(x, y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Compares two Maven versions as `ComparableVersion.compareTo` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    cmp_lists(&parse(a), &parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparable_version_order() {
        let chain = ["1-alpha", "1-alpha2", "1-beta", "1-m1", "1-rc", "1-snapshot", "1", "1-sp", "1-abc", "1-1", "1.1"];
        for w in chain.windows(2) {
            assert_eq!(compare(w[0], w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        for (a, b) in [("1.0.0", "1"), ("1-ga", "1"), ("1.0-final", "1"), ("1cr1", "1rc1"), ("1a1", "1-alpha-1")] {
            assert_eq!(compare(a, b), Ordering::Equal, "{a} == {b}");
        }
    }
}
