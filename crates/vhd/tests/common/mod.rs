//! Test helpers: the shared ones come from `diskcast-testkit` (qemu tools fail the test,
//! never skip, when missing); here the VHD pattern, checksums and `-f vpc` wrappers.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::registry::{CreateOptions, Registry};
use diskcast_block::{BlockRead, Extent, Result};
use diskcast_raw::RawDriver;
use diskcast_testkit as tk;
use diskcast_vhd::VhdDriver;
use std::path::Path;

pub use tk::{VecDisk, assert_error, be32, be64, first_error, opts, patch, pattern, qemu_img, read_all, run};

/// `qemu-io -f <fmt> path -c cmd ...`
pub fn qemu_io_fmt(fmt: &str, path: &Path, cmds: &[&str]) {
    tk::qemu_io(fmt, path, cmds);
}

pub fn qemu_io(path: &Path, cmds: &[&str]) {
    qemu_io_fmt("vpc", path, cmds)
}

/// `qemu-img create -f vpc [-o opts] path size`
pub fn create(path: &Path, size: &str, opts: &str) {
    tk::qemu_create("vpc", path, size, opts);
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
    tk::open_with(&registry(), path, Some("vhd"))
}

/// Guest bytes as qemu-img sees them (`-f vpc`).
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    tk::qemu_raw(path, "vpc", dir)
}

/// `qemu-img info --output=json -f vpc`.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    tk::qemu_info(path, "vpc")
}

pub fn qemu_size(path: &Path) -> u64 {
    qemu_info(path)["virtual-size"].as_u64().unwrap()
}

/// Our reader of `path` against qemu: content and `qemu-img map` (see
/// [`tk::assert_matches_qemu`]).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    tk::assert_matches_qemu(open(path).unwrap().as_ref(), path, "vpc", dir);
}

/// Our allocation map, merged.
pub fn our_map(img: &dyn BlockRead) -> Vec<Extent> {
    diskcast_block::copy::extents(img, false).map(|e| e.unwrap()).collect()
}

/// Writes `src` into a new VHD at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    tk::write_with(&VhdDriver, src, path, opts);
}

/// `qemu-img compare` of a raw file against a VHD must say identical (exit 0).
pub fn assert_qemu_compare(raw: &Path, vhd: &Path) {
    tk::assert_qemu_compare(raw, "raw", vhd, "vpc");
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
