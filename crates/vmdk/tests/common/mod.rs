//! Test helpers: the shared ones come from `diskcast-testkit` (qemu tools fail the test,
//! never skip, when missing); here the vmdk source pattern and vmdk-specific wrappers.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::registry::{CreateOptions, Registry};
use diskcast_block::{Alloc, BlockRead, Result};
use diskcast_raw::RawDriver;
use diskcast_testkit as tk;
use diskcast_vmdk::VmdkDriver;
use std::path::{Path, PathBuf};

pub use tk::{assert_error, first_error, le32, le64, opts, patch, qemu_img, read_all, run};

/// Virtual size of the pattern disk: 40 MiB + 7 sectors (not a multiple of a grain).
pub const SIZE: u64 = 40 * 1024 * 1024 + 7 * 512;

/// `qemu-io -f fmt path -c cmd ...`
pub fn qemu_io(path: &Path, fmt: &str, cmds: &[&str]) {
    tk::qemu_io(fmt, path, cmds);
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
    patch(&p, 10 * 1024 * 1024 + 512, &noise);
    p
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(RawDriver), Box::new(VmdkDriver)])
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    tk::open_with(&registry(), path, Some("vmdk"))
}

pub fn open_raw(path: &Path) -> Box<dyn BlockRead> {
    tk::open_with(&registry(), path, Some("raw")).unwrap()
}

/// Guest bytes as qemu-img sees them.
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    tk::qemu_raw(path, "vmdk", dir)
}

/// Our reader of `path` against qemu: content and `qemu-img map` (see
/// [`tk::assert_matches_qemu`]).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    tk::assert_matches_qemu(open(path).unwrap().as_ref(), path, "vmdk", dir);
}

/// Writes `src` into a new vmdk at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    tk::write_with(&VmdkDriver, src, path, opts);
}

/// `qemu-img check` must pass with no errors.
pub fn assert_qemu_check_clean(path: &Path) {
    tk::assert_qemu_check_clean(path, "vmdk");
}

/// `qemu-img compare` of a raw file against our vmdk must succeed (exit 0).
pub fn assert_qemu_compare(raw: &Path, vmdk: &Path) {
    tk::assert_qemu_compare(raw, "raw", vmdk, "vmdk");
}

/// `qemu-img info --output=json` as JSON.
pub fn qemu_info(path: &Path) -> serde_json::Value {
    tk::qemu_info(path, "vmdk")
}
