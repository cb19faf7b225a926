//! Test helpers: run qemu-img/qemu-io (tests fail, never skip, when they are missing),
//! open images through a registry and the gate, write images with our writer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{BlockRead, Result};
use diskcast_raw::RawDriver;
use diskcast_vhdx::VhdxDriver;
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

/// `qemu-io -f fmt path -c cmd ...`
pub fn qemu_io_fmt(fmt: &str, path: &Path, cmds: &[&str]) -> String {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args)
}

pub fn qemu_io(path: &Path, cmds: &[&str]) -> String {
    qemu_io_fmt("vhdx", path, cmds)
}

pub fn create(path: &Path, size: &str, opts: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "vhdx", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "vhdx", "-o", opts, p, size]);
    }
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

/// Every guest byte through our reader.
pub fn read_all(img: &dyn BlockRead) -> Vec<u8> {
    let mut buf = vec![0u8; img.size() as usize];
    // Read in odd-sized pieces to exercise unaligned reads.
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
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(out).unwrap();
    v
}

pub fn assert_same(ours: &[u8], theirs: &[u8], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: size");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at {i:#x}: ours {:#x}, theirs {:#x}", ours[i], theirs[i]);
    }
}

/// Asserts our reader returns qemu's bytes, and that extents agree with the bytes.
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    let img = open(path).unwrap();
    let ours = read_all(img.as_ref());
    let theirs = qemu_raw(path, "vhdx", dir);
    assert_same(&ours, &theirs, &path.display().to_string());
    // Every range the map calls zero must read as zero.
    let mut off = 0;
    while off < img.size() {
        let e = img.extent_at(off, img.size() - off).unwrap();
        assert_eq!(e.offset, off);
        assert!(e.len > 0);
        if e.alloc.reads_zero() {
            assert!(ours[off as usize..e.end() as usize].iter().all(|&b| b == 0), "zero extent {e:?} holds data");
        }
        off = e.end();
    }
}

/// Writes `src` into a new VHDX at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = VhdxDriver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { threads: 4, chunk_size: 256 << 10, ..CopyOptions::default() };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// Opens any image (raw, qcow2 by qemu convert to raw first is not needed: raw only).
pub fn open_raw(path: &Path) -> Box<dyn BlockRead> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, Some("raw"), &ctx).unwrap()
}

/// `qemu-img check` must pass with no errors.
pub fn assert_qemu_check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "vhdx", path.to_str().unwrap()])
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

/// `qemu-img compare` (exit 0 = identical).
pub fn assert_qemu_compare(a: &Path, afmt: &str, b: &Path, bfmt: &str) {
    qemu_img(&["compare", "-q", "-f", afmt, "-F", bfmt, a.to_str().unwrap(), b.to_str().unwrap()]);
}

pub fn qemu_info(path: &Path) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", "vhdx", path.to_str().unwrap()])).unwrap()
}

pub fn opts(pairs: &[(&str, &str)]) -> CreateOptions {
    let mut o = CreateOptions::default();
    for (k, v) in pairs {
        o.options.insert(k.to_string(), v.to_string());
    }
    o
}

pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

pub fn read_bytes(path: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, at).unwrap();
    b
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
