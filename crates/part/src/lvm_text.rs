//! LVM2's metadata text format, as the metadata area of a physical volume holds it:
//! `name = value` pairs and `name { ... }` sections, values being quoted strings,
//! integers or `[ ... ]` lists of them, `#` starting a comment to the end of the line.
//!
//! The text comes from the disk, so the parser is bounded: the text's length is capped
//! by the caller, and here the nesting depth, the items of a list and the total number of
//! nodes are, each with a named cap. It runs in one pass over the bytes (linear time),
//! never recursing deeper than [`MAX_DEPTH`].

use diskcast_block::{Error, Result};

/// Deepest nesting of sections and lists. A VG's metadata nests four sections deep
/// (`vg { logical_volumes { lv { segment1 { ... } } } }`); a little room for new
/// section kinds, and a hard stop for hostile text made of `{{{{...`.
pub const MAX_DEPTH: usize = 16;
/// Most values in one list. Segment `stripes` lists hold two per stripe and LVM caps
/// stripes at 128; status and tag lists are short.
pub const MAX_LIST: usize = 4096;
/// Most sections and values in one metadata text: a VG with thousands of LVs has a few
/// hundred thousand; the cap bounds the memory a hostile text can make us allocate.
pub const MAX_NODES: usize = 1_000_000;

/// A value: a quoted string, an integer, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `"..."` with `\"` and `\\` unescaped.
    Str(String),
    /// An integer (`-1`, `8192`).
    Num(i64),
    /// `[a, b, ...]`.
    List(Vec<Value>),
}

/// One entry of a section: a value or a nested section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `key = value`.
    Value(Value),
    /// `key { ... }`.
    Section(Section),
}

/// A section's entries in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// `(key, entry)` pairs.
    pub entries: Vec<(String, Entry)>,
}

impl Section {
    /// The value of `key`, if it is a value.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find_map(|(k, e)| match e {
            Entry::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    /// The sub-section `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.entries.iter().find_map(|(k, e)| match e {
            Entry::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    /// Every sub-section with its name, in file order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.entries.iter().filter_map(|(k, e)| match e {
            Entry::Section(s) => Some((k.as_str(), s)),
            Entry::Value(_) => None,
        })
    }

    /// The string `key`, or an error naming `what` and the key.
    pub fn str(&self, key: &str, what: &str) -> Result<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Ok(s),
            _ => Err(missing(what, key, "a string")),
        }
    }

    /// The integer `key` as a `u64`, or an error naming `what` and the key.
    pub fn u64(&self, key: &str, what: &str) -> Result<u64> {
        match self.value(key) {
            Some(Value::Num(n)) => u64::try_from(*n).map_err(|_| missing(what, key, "a number of at least 0")),
            _ => Err(missing(what, key, "a number")),
        }
    }

    /// The strings of the list `key` (no list: empty).
    pub fn strings(&self, key: &str) -> Vec<&str> {
        match self.value(key) {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn missing(what: &str, key: &str, kind: &str) -> Error {
    Error::corrupt(format!("LVM metadata: {what} has no {key} (expected {kind})")).with_field("lvm metadata")
}

/// Parses a whole metadata text into its top-level section.
pub fn parse(text: &[u8]) -> Result<Section> {
    let mut p = Parser { b: text, at: 0, nodes: 0 };
    // Explicit stack instead of recursion: each open section or list is one frame.
    let mut stack: Vec<Frame> = vec![Frame::Section(String::new(), Section::default())];
    loop {
        p.skip_blank();
        let top_is_list = matches!(stack.last(), Some(Frame::List(..)));
        if top_is_list {
            match p.peek() {
                Some(b']') => {
                    p.at += 1;
                    let Some(Frame::List(key, items)) = stack.pop() else { unreachable_frame()? };
                    p.place(&mut stack, key, Entry::Value(Value::List(items)))?;
                }
                Some(b',') => p.at += 1,
                Some(b'[') => {
                    p.at += 1;
                    p.open(&mut stack, Frame::List(String::new(), Vec::new()))?;
                }
                Some(_) => {
                    let v = p.scalar()?;
                    p.count()?;
                    if let Some(Frame::List(_, items)) = stack.last_mut() {
                        if items.len() >= MAX_LIST {
                            return Err(p.err(&format!("a list holds more than {MAX_LIST} values (MAX_LIST)")));
                        }
                        items.push(v);
                    }
                }
                None => return Err(p.err("the text ends inside a list")),
            }
            continue;
        }
        match p.peek() {
            None => {
                if stack.len() != 1 {
                    return Err(p.err("the text ends inside a section"));
                }
                let Some(Frame::Section(_, s)) = stack.pop() else { unreachable_frame()? };
                return Ok(s);
            }
            Some(0) => {
                // The metadata area pads the text with NULs.
                if p.b[p.at..].iter().all(|&c| c == 0) {
                    p.at = p.b.len();
                    continue;
                }
                return Err(p.err("a NUL byte inside the text"));
            }
            Some(b'}') => {
                if stack.len() == 1 {
                    return Err(p.err("a '}' closes no section"));
                }
                p.at += 1;
                let Some(Frame::Section(key, s)) = stack.pop() else { unreachable_frame()? };
                p.place(&mut stack, key, Entry::Section(s))?;
            }
            Some(_) => {
                let key = p.ident()?;
                p.skip_blank();
                match p.peek() {
                    Some(b'{') => {
                        p.at += 1;
                        p.open(&mut stack, Frame::Section(key, Section::default()))?;
                    }
                    Some(b'=') => {
                        p.at += 1;
                        p.skip_blank();
                        if p.peek() == Some(b'[') {
                            p.at += 1;
                            p.open(&mut stack, Frame::List(key, Vec::new()))?;
                        } else {
                            let v = p.scalar()?;
                            p.place(&mut stack, key, Entry::Value(v))?;
                        }
                    }
                    _ => return Err(p.err(&format!("expected '=' or '{{' after {key:?}"))),
                }
            }
        }
    }
}

fn unreachable_frame<T>() -> Result<T> {
    Err(Error::corrupt("LVM metadata parser: mismatched frame"))
}

enum Frame {
    Section(String, Section),
    List(String, Vec<Value>),
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
    nodes: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn err(&self, what: &str) -> Error {
        let line = self.b[..self.at.min(self.b.len())].iter().filter(|&&c| c == b'\n').count() + 1;
        Error::corrupt(format!("LVM metadata text, line {line}: {what}")).with_field("lvm metadata")
    }

    fn count(&mut self) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err(&format!("more than {MAX_NODES} values and sections (MAX_NODES)")));
        }
        Ok(())
    }

    fn open(&mut self, stack: &mut Vec<Frame>, f: Frame) -> Result<()> {
        if stack.len() > MAX_DEPTH {
            return Err(self.err(&format!("sections and lists nest deeper than {MAX_DEPTH} (MAX_DEPTH)")));
        }
        self.count()?;
        stack.push(f);
        Ok(())
    }

    fn place(&mut self, stack: &mut [Frame], key: String, e: Entry) -> Result<()> {
        self.count()?;
        match stack.last_mut() {
            Some(Frame::Section(_, s)) => s.entries.push((key, e)),
            Some(Frame::List(_, items)) => match e {
                Entry::Value(v) if items.len() < MAX_LIST => items.push(v),
                Entry::Value(_) => {
                    return Err(self.err(&format!("a list holds more than {MAX_LIST} values (MAX_LIST)")));
                }
                Entry::Section(_) => return Err(self.err("a section inside a list")),
            },
            None => return unreachable_frame(),
        }
        Ok(())
    }

    /// Spaces, newlines and `#` comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.at += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    /// A key: letters, digits and `_ . + -` (LVM's name characters).
    fn ident(&mut self) -> Result<String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || b"_.+-".contains(&c)) {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.err(&format!("unexpected byte {:#04x} where a name was expected", self.b[self.at])));
        }
        Ok(String::from_utf8_lossy(&self.b[start..self.at]).into_owned())
    }

    fn scalar(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("a string is not closed")),
                        Some(b'"') => {
                            self.at += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let Some(&c) = self.b.get(self.at + 1) else {
                                return Err(self.err("a string is not closed"));
                            };
                            s.push(c);
                            self.at += 2;
                        }
                        Some(c) => {
                            s.push(c);
                            self.at += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.at;
                self.at += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.at += 1;
                }
                let t = std::str::from_utf8(&self.b[start..self.at]).unwrap_or("");
                t.parse::<i64>()
                    .map(Value::Num)
                    .map_err(|_| self.err(&format!("{t:?} is not a number that fits in 64 bits")))
            }
            Some(c) => Err(self.err(&format!("unexpected byte {c:#04x} where a value was expected"))),
            None => Err(self.err("the text ends where a value was expected")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_values_lists_and_comments() {
        let t = b"vg {\nid = \"a\\\"b\" # c\nseqno = 4\nstatus = [\"READ\", \"WRITE\"]\nstripes = [\n\"pv0\", 0\n]\nsub { x = -1 }\n}\n# tail\nversion = 1\n\0\0";
        let s = parse(t).unwrap();
        let vg = s.section("vg").unwrap();
        assert_eq!(vg.str("id", "vg").unwrap(), "a\"b");
        assert_eq!(vg.u64("seqno", "vg").unwrap(), 4);
        assert_eq!(vg.strings("status"), ["READ", "WRITE"]);
        assert_eq!(vg.value("stripes"), Some(&Value::List(vec![Value::Str("pv0".into()), Value::Num(0)])));
        assert_eq!(vg.section("sub").unwrap().value("x"), Some(&Value::Num(-1)));
        let e = vg.section("sub").unwrap().u64("x", "sub").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("expected a number of at least 0"), "{e}");
        assert_eq!(s.value("version"), Some(&Value::Num(1)));
    }

    #[test]
    fn hostile_text_is_refused_by_cap() {
        let deep = "a {".repeat(MAX_DEPTH + 2);
        let e = parse(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("MAX_DEPTH"), "{e}");
        let deep_list = format!("a = {}", "[".repeat(100_000));
        assert!(parse(deep_list.as_bytes()).unwrap_err().to_string().contains("MAX_DEPTH"));
        let long = format!("a = [{}]", "1,".repeat(MAX_LIST + 1));
        assert!(parse(long.as_bytes()).unwrap_err().to_string().contains("MAX_LIST"));
        for bad in ["a = \"open", "a {", "}", "a = 99999999999999999999", "a b", "a = [1", "= 1", "a = 1\0x"] {
            let e = parse(bad.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{bad}: {e}");
            assert!(e.to_string().contains("LVM metadata text"), "{bad}: {e}");
        }
    }

    /// Every single-byte change and every truncation of a real metadata text parses or
    /// fails with an error, never a panic.
    #[test]
    fn mutated_text_never_panics() {
        let t = b"vgt {\nid = \"x\"\nseqno = 4\nstatus = [\"READ\"]\nlogical_volumes {\nroot {\nsegment1 {\nstart_extent = 0\nstripes = [\n\"pv0\", 0\n]\n}\n}\n}\n}\n# c\nversion = 1\n";
        for i in 0..t.len() {
            let _ = parse(&t[..i]);
            for c in [0u8, b'{', b'}', b'[', b']', b'"', b'\\', b'=', b'#', b'-', b'9', 0xff] {
                let mut m = t.to_vec();
                m[i] = c;
                let _ = parse(&m);
            }
        }
    }
}
