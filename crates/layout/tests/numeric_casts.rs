//! The parser crates deny `clippy::as_conversions`, but the test command runs no clippy:
//! this test keeps the rule without it. It reads each parser crate's sources (comments,
//! literals and `#[cfg(test)]` modules removed) and fails on any numeric `as`, naming the
//! file and line, so a truncating cast cannot slip into code that reads strangers' files.

use std::path::{Path, PathBuf};

/// Crates that read or write on-disk layouts from untrusted bytes.
const PARSER_CRATES: &[&str] = &[
    "layout",
    "block",
    "raw",
    "qcow2",
    "vmdk",
    "vhd",
    "vhdx",
    "vdi",
    "part",
    "formats",
    "iso9660",
    "ext4",
    "fat",
    "exfat",
    "squashfs",
    "xfs",
    "tar",
    "sqlite",
    "tree",
    "inspect",
    "wim",
    "ova",
    "vulns",
    "bootloader",
];

const NUMERIC: &[&str] =
    &["u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32", "f64"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments, string and char literals blanked (newlines kept, so line
/// numbers stay right).
fn code_only(src: &str) -> Vec<u8> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric() && b[i - 1] != b'_')
        {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let start = i + 2 + hashes;
            let end = b[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| start + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let lit = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&c| c == b'\'').map(|p| i + 2 + p + 1)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 3)
            } else {
                None
            };
            match lit {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Blanks `from..to`, keeping newlines so line numbers stay right.
fn blank(code: &mut [u8], from: usize, to: usize) {
    for c in &mut code[from..to] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// Attributes whose item the scan passes over: test code, and the reviewed exceptions
/// (`#[expect(clippy::as_conversions, reason = ..)]` on a float conversion, say), which
/// clippy also accepts.
const SKIPPED_ITEMS: &[&[u8]] =
    &[b"#[cfg(test)]", b"#[expect(clippy::as_conversions", b"#[allow(clippy::as_conversions"];

/// Blanks each item carrying one of [`SKIPPED_ITEMS`] up to its closing brace.
fn drop_skipped_items(code: &mut [u8]) {
    for attr in SKIPPED_ITEMS {
        drop_items(code, attr);
    }
}

fn drop_items(code: &mut [u8], attr: &[u8]) {
    let mut from = 0;
    while let Some(p) = code[from..].windows(attr.len()).position(|w| w == attr) {
        let start = from + p;
        let Some(open) = code[start..].iter().position(|&c| c == b'{' || c == b';').map(|q| start + q) else { break };
        let mut end = open + 1;
        if code[open] == b'{' {
            let mut depth = 1;
            while end < code.len() && depth > 0 {
                match code[end] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                end += 1;
            }
        }
        blank(code, start, end);
        from = end;
    }
}

fn numeric_casts(code: &[u8]) -> Vec<(usize, String)> {
    let text = String::from_utf8_lossy(code);
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> =
            line.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
        for w in words.windows(2) {
            if w[0] == "as" && NUMERIC.contains(&w[1]) {
                found.push((n + 1, line.trim().to_string()));
            }
        }
    }
    found
}

#[test]
fn parser_crates_make_no_numeric_as_casts() {
    let mut bad = Vec::new();
    for krate in PARSER_CRATES {
        let src = crates_dir().join(krate).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
        assert!(
            lib.contains("deny(clippy::as_conversions)"),
            "crates/{krate}/src/lib.rs must deny clippy::as_conversions (use diskcast-layout's conversions)"
        );
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            let mut code = code_only(&text);
            drop_skipped_items(&mut code);
            for (line, what) in numeric_casts(&code) {
                bad.push(format!("{}:{line}: {what}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "numeric `as` casts in parser crates:\n{}", bad.join("\n"));
}

#[test]
fn the_scanner_sees_casts_only_in_code() {
    let src = "let a = b as u32; // x as u64\nlet s = \"y as u8\"; let c = 'a';\n#[cfg(test)]\nmod tests { fn f() { 1 as u8; } }\nlet z: &'static str = r#\"q as i64\"#;\n";
    let mut code = code_only(src);
    drop_skipped_items(&mut code);
    let found = numeric_casts(&code);
    assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), vec![1], "{found:?}");
}
