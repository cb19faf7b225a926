//! Test helpers: the shared ones come from `diskcast-testkit` (qemu tools fail the test,
//! never skip, when missing); here the VHDX pattern, structure lookups and log crafting.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::gate::Gate;
use diskcast_block::registry::{CreateOptions, OpenContext, Registry};
use diskcast_block::{BlockRead, Result};
use diskcast_raw::RawDriver;
use diskcast_testkit as tk;
use diskcast_vhdx::VhdxDriver;
use std::path::{Path, PathBuf};

pub use tk::qemu_io as qemu_io_fmt;
pub use tk::{assert_qemu_compare, le32, le64, opts, patch, qemu_img, qemu_raw, read_all, read_bytes, run};

pub fn qemu_io(path: &Path, cmds: &[&str]) -> String {
    qemu_io_fmt("vhdx", path, cmds)
}

pub fn create(path: &Path, size: &str, opts: &str) {
    tk::qemu_create("vhdx", path, size, opts);
}

/// The test pattern: data at odd offsets, explicit zero ranges, holes, on a disk whose
/// size is not a block multiple (callers pick the size).
pub const PATTERN: &[&str] = &[
    "write -P 0x11 0 4k",
    "write -P 0x22 100k 200k",
    "write -z 1M 256k",
    "write -P 0x33 1536k 1M",
    "write -P 0x44 5121k 3k",
    "write -P 0x55 9M 512",
];

/// A qemu-made VHDX with [`PATTERN`] written into it.
pub fn patterned(dir: &Path, name: &str, size: &str, opts: &str) -> PathBuf {
    let p = dir.join(name);
    create(&p, size, opts);
    qemu_io(&p, PATTERN);
    p
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(RawDriver), Box::new(VhdxDriver)])
}

pub fn open_with(path: &Path, replay: bool, follow: bool) -> Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = if follow { OpenContext::new(&reg, &gate) } else { OpenContext::without_backing(&reg, &gate) };
    let ctx = ctx.with_log_replay(replay);
    reg.open(path, Some("vhdx"), &ctx)
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    open_with(path, false, true)
}

pub fn assert_same(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: size");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at {i:#x}: ours {:#x}, theirs {:#x}", ours[i], theirs[i]);
    }
}

/// Our reader of `path` against qemu: content and `qemu-img map` (see
/// [`tk::assert_matches_qemu`]).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    tk::assert_matches_qemu(open(path).unwrap().as_ref(), path, "vhdx", dir);
}

/// Writes `src` into a new VHDX at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    tk::write_with(&VhdxDriver, src, path, opts);
}

/// Opens a raw image.
pub fn open_raw(path: &Path) -> Box<dyn BlockRead> {
    tk::open_with(&registry(), path, Some("raw")).unwrap()
}

/// `qemu-img check` must pass with no errors.
pub fn assert_qemu_check_clean(path: &Path) {
    tk::assert_qemu_check_clean(path, "vhdx");
}

pub fn qemu_info(path: &Path) -> serde_json::Value {
    tk::qemu_info(path, "vhdx")
}

/// Recomputes the CRC-32C of the structure of `len` bytes at `at` (checksum at +4).
pub fn fix_crc(path: &Path, at: u64, len: usize) {
    let mut b = read_bytes(path, at, len);
    b[4..8].fill(0);
    let c = crc32c::crc32c(&b);
    patch(path, at + 4, &c.to_le_bytes());
}

/// The active header's offset (64 KiB or 128 KiB).
pub fn active_header(path: &Path) -> u64 {
    let a = le64(&read_bytes(path, 64 << 10, 16), 8);
    let b = le64(&read_bytes(path, 128 << 10, 16), 8);
    if b > a { 128 << 10 } else { 64 << 10 }
}

/// (file offset, length) of a region by its first GUID bytes, from region table 1.
pub fn region(path: &Path, guid_le: &[u8]) -> (u64, u32) {
    let rt = read_bytes(path, 192 << 10, 64 << 10);
    let n = le32(&rt, 8) as usize;
    for i in 0..n {
        let e = &rt[16 + 32 * i..48 + 32 * i];
        if &e[..guid_le.len()] == guid_le {
            return (le64(e, 16), le32(e, 24));
        }
    }
    panic!("region not found");
}

pub const BAT_GUID_LE: [u8; 4] = [0x66, 0x77, 0xc2, 0x2d];
pub const META_GUID_LE: [u8; 4] = [0x06, 0xa2, 0x7c, 0x8b];

/// One descriptor of a crafted log entry.
pub enum Desc {
    /// 4 KiB of data at a file offset.
    Data(u64, Vec<u8>),
    /// Zeros over a range.
    Zero(u64, u64),
}

/// Builds a valid log entry (CRC-32C, sequence numbers, descriptors, data sectors).
pub fn log_entry(guid: uuid::Uuid, seq: u64, tail: u32, flushed: u64, last: u64, descs: &[Desc]) -> Vec<u8> {
    let n = descs.len();
    let desc_sectors = (n + 2).div_ceil(128);
    let data_n = descs.iter().filter(|d| matches!(d, Desc::Data(..))).count();
    let len = 4096 * (desc_sectors + data_n);
    let mut b = vec![0u8; len];
    b[0..4].copy_from_slice(b"loge");
    b[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    b[12..16].copy_from_slice(&tail.to_le_bytes());
    b[16..24].copy_from_slice(&seq.to_le_bytes());
    b[24..28].copy_from_slice(&(n as u32).to_le_bytes());
    b[32..48].copy_from_slice(&guid.to_bytes_le());
    b[48..56].copy_from_slice(&flushed.to_le_bytes());
    b[56..64].copy_from_slice(&last.to_le_bytes());
    let mut data_sector = desc_sectors;
    for (i, d) in descs.iter().enumerate() {
        let at = 64 + 32 * i;
        match d {
            Desc::Zero(off, zlen) => {
                b[at..at + 4].copy_from_slice(b"zero");
                b[at + 8..at + 16].copy_from_slice(&zlen.to_le_bytes());
                b[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
            }
            Desc::Data(off, data) => {
                assert_eq!(data.len(), 4096);
                b[at..at + 4].copy_from_slice(b"desc");
                b[at + 4..at + 8].copy_from_slice(&data[4092..4096]);
                b[at + 8..at + 16].copy_from_slice(&data[0..8]);
                b[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
                let s = data_sector * 4096;
                b[s..s + 4].copy_from_slice(b"data");
                b[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                b[s + 8..s + 4092].copy_from_slice(&data[8..4092]);
                b[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
                data_sector += 1;
            }
        }
        b[at + 24..at + 32].copy_from_slice(&seq.to_le_bytes());
    }
    let c = crc32c::crc32c(&b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
    b
}

/// Sets the active header's log GUID (and fixes its CRC).
pub fn set_log_guid(path: &Path, guid: uuid::Uuid) {
    let h = active_header(path);
    patch(path, h + 48, &guid.to_bytes_le());
    fix_crc(path, h, 4096);
}

/// Makes `path` (a qemu-made dynamic VHDX with 1 MiB blocks and [`PATTERN`]) carry a
/// pending log that: zeroes the first 4 KiB of block 0, rewrites its third sector with
/// 0xAB, maps block 12 to a new block at the end of the file through a rewritten BAT
/// sector, and fills that block's first and last sectors with 0xCD / 0xCE.
pub fn add_pending_log(path: &Path) {
    let file_len = std::fs::metadata(path).unwrap().len();
    assert_eq!(file_len % (1 << 20), 0);
    let (bat_off, _) = region(path, &BAT_GUID_LE);
    let mut bat_sector = read_bytes(path, bat_off, 4096);
    let block0 = le64(&bat_sector, 0) >> 20 << 20;
    assert_eq!(le64(&bat_sector, 0) & 7, 6, "block 0 must be present");
    bat_sector[12 * 8..13 * 8].copy_from_slice(&(file_len | 6).to_le_bytes());
    let guid = uuid::Uuid::new_v4();
    let entry = log_entry(
        guid,
        5,
        0,
        file_len,
        file_len + (1 << 20),
        &[
            Desc::Zero(block0, 4096),
            Desc::Data(block0 + 8192, vec![0xab; 4096]),
            Desc::Data(bat_off, bat_sector),
            Desc::Data(file_len, vec![0xcd; 4096]),
            Desc::Data(file_len + (1 << 20) - 4096, vec![0xce; 4096]),
        ],
    );
    let h = read_bytes(path, active_header(path), 80);
    let log_off = le64(&h, 72);
    patch(path, log_off, &entry);
    set_log_guid(path, guid);
}
