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
