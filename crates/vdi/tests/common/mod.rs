//! Test helpers: the shared ones come from `diskcast-testkit` (qemu tools fail the test,
//! never skip, when missing); here the VDI pattern, map and vdi-specific wrappers.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::gate::Gate;
use diskcast_block::registry::{CheckReport, CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Result};
use diskcast_raw::RawDriver;
use diskcast_testkit as tk;
use diskcast_vdi::VdiDriver;
use std::path::{Path, PathBuf};

pub use tk::{VecDisk, assert_error, first_error, le32, opts, patch, qemu_img, qemu_raw, read_all, run};

/// `qemu-io -f <fmt> path -c cmd ...`
pub fn qemu_io(fmt: &str, path: &Path, cmds: &[&str]) {
    tk::qemu_io(fmt, path, cmds);
}

/// `qemu-img create -f vdi` (with `-o static=on` when asked).
pub fn create(path: &Path, size: &str, is_static: bool) {
    tk::qemu_create("vdi", path, size, if is_static { "static=on" } else { "" });
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
    tk::open_with(&registry(), path, format)
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    open_as(path, Some("vdi"))
}

/// Our `check` of a VDI.
pub fn check(path: &Path) -> Result<CheckReport> {
    let reg = registry();
    let gate = Gate::new();
    VdiDriver.check(diskcast_block::source::open_file(path).unwrap(), &OpenContext::new(&reg, &gate))
}

/// Our reader of `path` against qemu: content and `qemu-img map` (see
/// [`tk::assert_matches_qemu`]).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    tk::assert_matches_qemu(open(path).unwrap().as_ref(), path, "vdi", dir);
}

/// Writes `src` into a new VDI at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    tk::write_with(&VdiDriver, src, path, opts);
}

/// `qemu-img check -f vdi` must exit 0 and report nothing.
pub fn assert_qemu_check_clean(path: &Path) {
    tk::assert_qemu_check_clean(path, "vdi");
}

/// `qemu-img compare` of a raw file against a VDI must say identical (exit 0).
pub fn assert_qemu_compare(raw: &Path, vdi: &Path) {
    tk::assert_qemu_compare(raw, "raw", vdi, "vdi");
}

/// `qemu-img info --output=json`.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    tk::qemu_info(path, "vdi")
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
