//! Test helpers: run qemu-img/qemu-io (tests fail, never skip, when they are missing),
//! open images through a registry, write images with our writer through the copy engine.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CheckReport, CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Extent, ImageInfo, Result};
use diskcast_raw::RawDriver;
use diskcast_vdi::VdiDriver;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// `qemu-io -f <fmt> path -c cmd ...`
pub fn qemu_io(fmt: &str, path: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

/// `qemu-img create -f vdi` (with `-o static=on` when asked).
pub fn create(path: &Path, size: &str, is_static: bool) {
    let p = path.to_str().unwrap();
    if is_static {
        qemu_img(&["create", "-q", "-f", "vdi", "-o", "static=on", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "vdi", p, size]);
    }
}

/// The pattern every test image gets: data at odd offsets, a zero range, data across a
/// block boundary, a block written only at its end, and blocks never written (holes).
/// qemu's vdi driver has no zero write, so `write -z` stores zeros in an allocated block.
pub const PATTERN: &[&str] = &[
    "write -P 0x11 0 4k",
    "write -P 0x22 100k 200k",
    "write -z 1M 256k",
    "write -P 0x33 2047k 1M",
    "write -P 0x44 4777k 3k",
];

/// A qemu-made VDI of `size` with [`PATTERN`] written into it.
pub fn patterned(dir: &Path, name: &str, size: &str, is_static: bool) -> PathBuf {
    let p = dir.join(name);
    create(&p, size, is_static);
    qemu_io("vdi", &p, PATTERN);
    p
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(RawDriver), Box::new(VdiDriver)])
}

/// Opens `path` as `format` (`None`: probe).
pub fn open_as(path: &Path, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, format, &ctx)
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    open_as(path, Some("vdi"))
}

/// Our `check` of a VDI.
pub fn check(path: &Path) -> Result<CheckReport> {
    let reg = registry();
    let gate = Gate::new();
    VdiDriver.check(path, &OpenContext::new(&reg, &gate))
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
pub fn qemu_raw(path: &Path, fmt: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{}.qemu.raw", path.file_name().unwrap().to_str().unwrap()));
    qemu_img(&["convert", "-f", fmt, "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// `qemu-img map --output=json` as (start, length, data, zero) tuples.
pub fn qemu_map(path: &Path) -> Vec<(u64, u64, bool, bool)> {
    let v: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", "vdi", path.to_str().unwrap()])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["data"].as_bool().unwrap(),
                e["zero"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Asserts our reader returns qemu's bytes, and that our map says Data exactly where
/// `qemu-img map` says data (qemu reports free and zero blocks alike as zero).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    let img = open(path).unwrap();
    let ours = read_all(img.as_ref());
    let theirs = qemu_raw(path, "vdi", dir);
    assert_eq!(ours.len(), theirs.len(), "{}: size", path.display());
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("{}: first differing byte at {i:#x}", path.display());
    }
    for (start, len, data, zero) in qemu_map(path) {
        let mut off = start;
        while off < start + len {
            let ext = img.extent_at(off, start + len - off).unwrap();
            assert_eq!(ext.offset, off);
            assert!(ext.len > 0 && ext.end() <= img.size());
            if data {
                assert_eq!(ext.alloc, Alloc::Data, "{}: extent at {off:#x}", path.display());
            } else {
                assert!(zero && ext.alloc.reads_zero(), "{}: extent at {off:#x} is {:?}", path.display(), ext.alloc);
            }
            off += ext.len;
        }
    }
}

/// A disk held in memory, for feeding our writer.
#[derive(Debug)]
pub struct VecDisk(pub Vec<u8>);

impl BlockRead for VecDisk {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent { offset, len: max_len.min(self.size() - offset), alloc: Alloc::Data })
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}

/// Writes `src` into a new VDI at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = VdiDriver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { threads: 4, chunk_size: 256 << 10, ..CopyOptions::default() };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// `qemu-img check -f vdi` must exit 0 and report nothing.
pub fn assert_qemu_check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "vdi", path.to_str().unwrap()])
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

/// `qemu-img compare` of a raw file against a VDI must say identical (exit 0).
pub fn assert_qemu_compare(raw: &Path, vdi: &Path) {
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "vdi", raw.to_str().unwrap(), vdi.to_str().unwrap()]);
}

/// `qemu-img info --output=json`.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "vdi", path.to_str().unwrap()])).unwrap()
}

/// Deterministic test data: each 4 KiB piece starts with its own index (so a misplaced
/// piece shows where it went), then pseudo-random or repeated bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(4096).enumerate() {
        for (j, b) in chunk.iter_mut().enumerate() {
            if i % 3 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            } else {
                *b = (i as u8) ^ (seed as u8) ^ (j as u8 & 1);
            }
        }
        let tag = (i as u64).to_le_bytes();
        let n = tag.len().min(chunk.len());
        chunk[..n].copy_from_slice(&tag[..n]);
    }
    v
}

pub fn opts(pairs: &[(&str, &str)]) -> CreateOptions {
    let mut o = CreateOptions::default();
    for (k, v) in pairs {
        o.options.insert(k.to_string(), v.to_string());
    }
    o
}

/// Little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}
