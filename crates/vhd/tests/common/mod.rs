//! Test helpers: run qemu-img/qemu-io (tests fail, never skip, when they are missing),
//! open images through a registry and the gate, write images with our writer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Extent, ImageInfo, Result};
use diskcast_raw::RawDriver;
use diskcast_vhd::VhdDriver;
use std::path::Path;
use std::process::Command;

/// Runs a qemu tool and returns its stdout; panics (fails the test) on any failure.
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
pub fn qemu_io_fmt(fmt: &str, path: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args);
}

pub fn qemu_io(path: &Path, cmds: &[&str]) {
    qemu_io_fmt("vpc", path, cmds)
}

/// `qemu-img create -f vpc [-o opts] path size`
pub fn create(path: &Path, size: &str, opts: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "vpc", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "vpc", "-o", opts, p, size]);
    }
}

/// The test pattern: data at odd (unaligned) offsets, explicit zero ranges, untouched
/// holes, data near the end of a disk whose size is not a multiple of 2 MiB.
pub const PATTERN: &[&str] = &[
    "write -P 0x11 0 64k",
    "write -P 0x22 3000 7777",
    "write -z 4M 1M",
    "write -P 0x33 6291969 100000",
    "write -P 0x44 12M 512k",
    "write -P 0x55 13000000 1000",
];

/// A qemu-made VHD of 13 MiB (before CHS rounding) holding [`PATTERN`].
pub fn make_vhd(path: &Path, opts: &str) {
    create(path, "13M", opts);
    qemu_io(path, PATTERN);
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(RawDriver), Box::new(VhdDriver)])
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, Some("vhd"), &ctx)
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

/// Guest bytes as qemu-img sees them (`-f vpc`).
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{}.raw", path.file_name().unwrap().to_str().unwrap()));
    qemu_img(&["convert", "-f", "vpc", "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// `qemu-img info --output=json -f vpc`.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "vpc", path.to_str().unwrap()])).unwrap()
}

pub fn qemu_size(path: &Path) -> u64 {
    qemu_info(path)["virtual-size"].as_u64().unwrap()
}

/// Asserts our reader returns qemu's bytes and size, and that what qemu maps as data
/// (whole allocated blocks, qemu ignores bitmaps) we map as data too.
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    let img = open(path).unwrap();
    assert_eq!(img.size(), qemu_size(path), "{}: virtual size", path.display());
    let ours = read_all(img.as_ref());
    let theirs = qemu_raw(path, dir);
    assert_eq!(ours.len(), theirs.len(), "size");
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("{}: first differing byte at {i:#x}", path.display());
    }
}

/// Our allocation map, merged.
pub fn our_map(img: &dyn BlockRead) -> Vec<Extent> {
    diskcast_block::copy::extents(img, false).map(|e| e.unwrap()).collect()
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

/// Writes `src` into a new VHD at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = VhdDriver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { threads: 4, chunk_size: 256 << 10, ..CopyOptions::default() };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// `qemu-img compare` of a raw file against a VHD must say identical (exit 0).
pub fn assert_qemu_compare(raw: &Path, vhd: &Path) {
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "vpc", raw.to_str().unwrap(), vhd.to_str().unwrap()]);
}

/// Deterministic data, each 4 KiB unit tagged with its own index.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 4096) % 3 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        } else {
            *b = (i / 4096) as u8 ^ (seed as u8);
        }
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

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

/// One's complement byte sum with the checksum field at `at` zeroed.
pub fn vhd_checksum(buf: &[u8], at: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &b) in buf.iter().enumerate() {
        if !(at..at + 4).contains(&i) {
            sum = sum.wrapping_add(b as u32);
        }
    }
    !sum
}

/// Rewrites the checksum of the 512-byte footer at `at` in the file.
pub fn fix_footer_checksum(path: &Path, at: u64) {
    let b = std::fs::read(path).unwrap();
    let f = &b[at as usize..at as usize + 512];
    patch(path, at + 64, &vhd_checksum(f, 64).to_be_bytes());
}

/// Rewrites the checksum of the dynamic header at `at`.
pub fn fix_header_checksum(path: &Path, at: u64) {
    let b = std::fs::read(path).unwrap();
    let h = &b[at as usize..at as usize + 1024];
    patch(path, at + 36, &vhd_checksum(h, 36).to_be_bytes());
}
