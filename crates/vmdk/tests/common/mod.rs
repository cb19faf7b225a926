//! Test helpers: run qemu-img/qemu-io (tests fail, never skip, when they are missing),
//! build the source pattern, open images through a registry and the gate, write images
//! with our writers through the copy engine.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Result};
use diskcast_raw::RawDriver;
use diskcast_vmdk::VmdkDriver;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Virtual size of the pattern disk: 40 MiB + 7 sectors (not a multiple of a grain).
pub const SIZE: u64 = 40 * 1024 * 1024 + 7 * 512;

/// Runs a tool and returns its stdout; panics (fails the test) on any failure.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for this test and could not run: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

/// `qemu-io -f fmt path -c cmd ...`
pub fn qemu_io(path: &Path, fmt: &str, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

/// The qemu-io commands of the test pattern: data at odd offsets, zero ranges over data,
/// holes, data in the last partial grain.
pub const PATTERN: &[&str] = &[
    "write -P 0x11 12345 70000",
    "write -P 0x22 1048575 300000",
    "write -z 1100000 65536",
    "write -P 0x33 3M 4M",
    "write -z 4M 1M",
    "write -P 0x44 20971000 1000",
    "write -P 0x55 41943040 3584",
];

/// A raw file holding the pattern, made by qemu-img and qemu-io.
pub fn pattern_raw(dir: &Path) -> PathBuf {
    let p = dir.join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", p.to_str().unwrap(), &SIZE.to_string()]);
    qemu_io(&p, "raw", PATTERN);
    // Some random-looking data too (incompressible grains).
    qemu_io(&p, "raw", &["write -P 0x66 9M 64k"]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&noise, 10 * 1024 * 1024 + 512).unwrap();
    p
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(RawDriver), Box::new(VmdkDriver)])
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, Some("vmdk"), &ctx)
}

pub fn open_raw(path: &Path) -> Box<dyn BlockRead> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, Some("raw"), &ctx).unwrap()
}

/// Every guest byte through our reader, in odd-sized pieces.
pub fn read_all(img: &dyn BlockRead) -> Vec<u8> {
    let mut buf = vec![0u8; img.size() as usize];
    let step = 3 * 65536 + 4096 + 17;
    let mut off = 0;
    while off < buf.len() {
        let end = (off + step).min(buf.len());
        img.read_at(&mut buf[off..end], off as u64).unwrap();
        off = end;
    }
    buf
}

/// Guest bytes as qemu-img sees them.
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{}.qemu.raw", path.file_name().unwrap().to_str().unwrap()));
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// Asserts our reader returns qemu's bytes, and that our allocation map agrees with
/// `qemu-img map`: where qemu says no data we say zero; where qemu says data that is not
/// zero we say data; and every range we call zero is zero in qemu's bytes.
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    let img = open(path).unwrap();
    let ours = read_all(img.as_ref());
    let theirs = qemu_raw(path, dir);
    assert_eq!(ours.len(), theirs.len(), "{}: size", path.display());
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("{}: first differing byte at {i:#x}", path.display());
    }
    let map: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", "vmdk", path.to_str().unwrap()])).unwrap();
    for e in map.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        let data = e["data"].as_bool().unwrap();
        let zero = e["zero"].as_bool().unwrap();
        let mut off = start;
        while off < start + len {
            let ext = img.extent_at(off, start + len - off).unwrap();
            assert_eq!(ext.offset, off);
            assert!(ext.len > 0 && ext.end() <= start + len);
            if !data {
                assert!(ext.alloc.reads_zero(), "{}: {ext:?} but qemu says {e}", path.display());
            } else if !zero {
                assert_eq!(ext.alloc, Alloc::Data, "{}: qemu map entry {e}", path.display());
            }
            off += ext.len;
        }
    }
    let mut off = 0;
    while off < img.size() {
        let ext = img.extent_at(off, img.size() - off).unwrap();
        if ext.alloc.reads_zero() {
            assert!(theirs[off as usize..ext.end() as usize].iter().all(|&b| b == 0), "{ext:?} is not zero");
        }
        off = ext.end();
    }
}

/// Writes `src` into a new vmdk at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = VmdkDriver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { threads: 4, chunk_size: 256 << 10, ..CopyOptions::default() };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// `qemu-img check` must pass with no errors.
pub fn assert_qemu_check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "vmdk", path.to_str().unwrap()])
        .output()
        .expect("qemu-img is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "qemu-img check failed on {}: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for k in ["leaks", "corruptions", "check-errors"] {
        assert_eq!(v.get(k).and_then(|x| x.as_u64()).unwrap_or(0), 0, "{k}: {stdout}");
    }
}

/// `qemu-img compare` of a raw file against our vmdk must succeed (exit 0).
pub fn assert_qemu_compare(raw: &Path, vmdk: &Path) {
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "vmdk", raw.to_str().unwrap(), vmdk.to_str().unwrap()]);
}

/// `qemu-img info --output=json` as JSON.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "vmdk", path.to_str().unwrap()])).unwrap()
}

pub fn opts(pairs: &[(&str, &str)]) -> CreateOptions {
    let mut o = CreateOptions::default();
    for (k, v) in pairs {
        o.options.insert(k.to_string(), v.to_string());
    }
    o
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
