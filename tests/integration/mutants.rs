//! Damaged images of every format, at the command line: truncated files and files with
//! bytes overwritten in their metadata. Whatever the damage, diskcast must answer with a
//! result or a clear error (exit 0 or 1; `check` may also say 2/3 for corruption/leaks),
//! never panic, hang or die on a signal, and never leave an output file behind after an
//! error. The targeted hostile cases of each format are tests in its own crate.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SIZE: u64 = 6 * MIB + 512;

/// (name, qemu format, qemu -o, diskcast format)
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("qcow2", "qcow2", "", "qcow2"),
    ("vmdk-sparse", "vmdk", "", "vmdk"),
    ("vmdk-stream", "vmdk", "subformat=streamOptimized", "vmdk"),
    ("vmdk-flat", "vmdk", "subformat=monolithicFlat", "vmdk"),
    ("vhd-fixed", "vpc", "subformat=fixed,force_size=on", "vhd"),
    ("vhd-dynamic", "vpc", "force_size=on", "vhd"),
    ("vhdx", "vhdx", "block_size=1M", "vhdx"),
    ("vdi", "vdi", "", "vdi"),
];

/// A qemu-made image with some data, converted from a raw pattern so every format
/// (streamOptimized too) gets the same content.
fn make(dir: &Path, name: &str, fmt: &str, opts: &str) -> PathBuf {
    let raw = dir.join("pattern.raw");
    if !raw.exists() {
        qemu_img(&["create", "-q", "-f", "raw", &s(&raw), &SIZE.to_string()]);
        qemu_io("raw", &raw, &["write -P 0x5a 4096 100000", "write -P 0xa5 3M 1M", "write -P 7 6M 512"]);
    }
    let p = dir.join(format!("{name}.vmdk"));
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    let (rs, ps) = (s(&raw), s(&p));
    args.extend([rs.as_str(), ps.as_str()]);
    qemu_img(&args);
    p
}

/// Deterministic xorshift so a failing mutant can be rebuilt from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Mutants of `orig`: truncations at telling lengths, then overwrites in the places
/// metadata lives (the first 2 MiB and the last 4 KiB).
fn mutants(orig: &[u8], seed: u64) -> Vec<(String, Vec<u8>)> {
    let len = orig.len() as u64;
    let mut out = Vec::new();
    for cut in [0, 511, 512, 4096, 65535, 196608, len / 2, len.saturating_sub(512), len.saturating_sub(1)] {
        if cut < len {
            out.push((format!("truncated to {cut}"), orig[..cut as usize].to_vec()));
        }
    }
    let mut rng = Rng(seed | 1);
    for i in 0..28 {
        let mut m = orig.to_vec();
        let region = len.min(2 * MIB);
        let pos = if i % 4 == 3 { len - 1 - rng.below(len.min(4096)) } else { rng.below(region) };
        let word: &[u8] = match rng.below(5) {
            0 => &[0xff; 4],
            1 => &[0x7f, 0xff, 0xff, 0xff],
            2 => &[0; 8],
            3 => &[0xff; 8],
            _ => &[0x01],
        };
        let end = (pos as usize + word.len()).min(m.len());
        let n = end - pos as usize;
        m[pos as usize..end].copy_from_slice(&word[..n]);
        out.push((format!("{} bytes {:02x?} at {pos}", n, &word[..n]), m));
    }
    out
}

/// Runs diskcast under a time limit; returns (exit code, stderr).
fn run_limited(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("timeout")
        .args(["-k", "2", "30", diskcast_bin()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run diskcast under timeout");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn damaged_images_get_errors_not_panics() {
    let d = tmp();
    let mut failures = Vec::new();
    for (k, (name, qfmt, qopts, dfmt)) in KINDS.iter().enumerate() {
        let orig_path = make(d.path(), name, qfmt, qopts);
        let orig = read(&orig_path);
        for (j, (what, bytes)) in mutants(&orig, 0x9e37_79b9 + k as u64).into_iter().enumerate() {
            // Same directory as the original, so a flat VMDK's extent is still found.
            let m = d.path().join(format!("mutant-{name}-{j}.vmdk"));
            write_file(&m, &bytes);
            let out = d.path().join("out.raw");
            let (code, err) = run_limited(&["convert", "-f", dfmt, "-O", "raw", &s(&m), &s(&out)]);
            let bad = err.contains("panicked")
                || !matches!(code, Some(0 | 1))
                || (code == Some(1) && (out.exists() || !err.contains("diskcast: ")));
            if bad {
                failures.push(format!("{name} mutant {j} ({what}): convert exit {code:?}\n{err}"));
            }
            let _ = std::fs::remove_file(&out);
            let (code, err) = run_limited(&["check", "-f", dfmt, &s(&m)]);
            if err.contains("panicked") || !matches!(code, Some(0 | 1 | 2 | 3 | 63)) {
                failures.push(format!("{name} mutant {j} ({what}): check exit {code:?}\n{err}"));
            }
            let _ = std::fs::remove_file(&m);
        }
    }
    let stray = stray_temps(d.path());
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
    assert!(failures.is_empty(), "{} mutants mishandled:\n\n{}", failures.len(), failures.join("\n\n"));
}
