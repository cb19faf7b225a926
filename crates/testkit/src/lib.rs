//! Test helpers shared by the format crates (dev-only, never published).
//!
//! qemu-img and qemu-io serve as oracles: a missing tool FAILS the test with a message
//! saying to install qemu-utils, it never skips. Images are read whole through our
//! readers, written with our writers through the copy engine, and patched in place to
//! build broken images from good ones. [`assert_matches_qemu`] is the one comparison of
//! a reader with qemu (content and `qemu-img map`) for every format; [`hostile`] runs
//! drivers on mutated bytes from memory under time limits (and, with [`alloc`]'s counting
//! allocator, memory bounds). Each crate's
//! `tests/common/mod.rs` keeps only what is specific to its format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod alloc;
pub mod hostile;
pub mod manifest;

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::io::is_zero;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Error, ErrorKind, Extent, ImageInfo, Result};
use diskcast_layout::{low_u8, u64_from_usize, usize_from_u64};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// Runs a tool and returns its stdout; panics (fails the test) on any failure,
/// including the tool being missing.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for this test and could not run: {e} (install qemu-utils)"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs an oracle tool with `TZ=UTC` (mtools shows and stores local time) and
/// `MTOOLS_SKIP_CHECK=1`, returning its stdout decoded lossily (mtools may print names in
/// a legacy code page); panics (fails the test) on any failure, including the tool being
/// missing.
pub fn run_utc(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img args...`, returning its stdout.
pub fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

/// `qemu-io -f fmt -c cmd ... path`, returning its stdout.
pub fn qemu_io(fmt: &str, path: &Path, cmds: &[&str]) -> String {
    let mut args = vec!["-f", fmt];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    run("qemu-io", &args)
}

/// `qemu-img create -q -f fmt [-o opts] path size` (no `-o` when `opts` is empty).
pub fn qemu_create(fmt: &str, path: &Path, size: &str, opts: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", fmt, p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", fmt, "-o", opts, p, size]);
    }
}

/// Guest bytes as qemu-img sees them (`qemu-img convert -f fmt -O raw`, via a scratch
/// file in `dir` that is removed afterwards).
pub fn qemu_raw(path: &Path, fmt: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{}.qemu.raw", path.file_name().unwrap().to_str().unwrap()));
    qemu_img(&["convert", "-f", fmt, "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(out).unwrap();
    v
}

/// `qemu-img info --output=json -f fmt` as JSON.
pub fn qemu_info(path: &Path, fmt: &str) -> serde_json::Value {
    serde_json::from_str(&qemu_img(&["info", "--output=json", "-f", fmt, path.to_str().unwrap()])).unwrap()
}

/// `qemu-img check -f fmt` must exit 0 and report no leaks, corruptions or errors.
pub fn assert_qemu_check_clean(path: &Path, fmt: &str) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", fmt, path.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("qemu-img is required for this test and could not run: {e} (install qemu-utils)"));
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

/// `qemu-img compare -f fa -F fb a b` must say identical (exit 0).
pub fn assert_qemu_compare(a: &Path, fa: &str, b: &Path, fb: &str) {
    qemu_img(&["compare", "-q", "-f", fa, "-F", fb, a.to_str().unwrap(), b.to_str().unwrap()]);
}

/// One entry of `qemu-img map --output=json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuMapEntry {
    /// Guest offset.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// 0: this image; 1 and more: a backing file.
    pub depth: u64,
    /// qemu says the range holds data (it must be read).
    pub data: bool,
    /// qemu says the range reads as zeros.
    pub zero: bool,
}

/// `qemu-img map --output=json -f fmt path`.
pub fn qemu_map(path: &Path, fmt: &str) -> Vec<QemuMapEntry> {
    let v: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", fmt, path.to_str().unwrap()])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| QemuMapEntry {
            start: e["start"].as_u64().unwrap(),
            length: e["length"].as_u64().unwrap(),
            depth: e["depth"].as_u64().unwrap(),
            data: e["data"].as_bool().unwrap(),
            zero: e["zero"].as_bool().unwrap(),
        })
        .collect()
}

/// Asserts that `img`, our reader of the image at `path` (opened from that file or from
/// any other source holding the same bytes), agrees with qemu about it:
/// - content: the same size and every guest byte equal to `qemu-img convert -O raw`'s;
/// - allocation, against `qemu-img map --output=json` range by range: where qemu reads
///   the backing file (depth > 0) we say [`Alloc::Backing`]; where qemu says no data we
///   say the range reads zero; where qemu says data that is not zero we say
///   [`Alloc::Data`]; where qemu says allocated zeros we say data or zero, never backing;
/// - and every range we call zero is zero in qemu's bytes.
///
/// Two formats where qemu knows less than we do:
/// - VHD (`vpc`): qemu maps a whole allocated block as data and ignores its sector
///   bitmap, while our reader honours the bitmap, so inside a block qemu calls data we
///   may say a range is unallocated;
/// - VHDX: qemu's driver reports no allocation at all (one data entry for the whole
///   disk), so where it says data we may say anything.
///
/// Either way, a range we call zero is still checked to be zero in qemu's bytes.
pub fn assert_matches_qemu(img: &dyn BlockRead, path: &Path, qemu_fmt: &str, dir: &Path) {
    let what = path.display();
    let ours = read_all(img);
    let theirs = qemu_raw(path, qemu_fmt, dir);
    assert_eq!(ours.len(), theirs.len(), "{what}: virtual size, ours against qemu's");
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at {i:#x}: ours {:#x}, qemu's {:#x}", ours[i], theirs[i]);
    }
    let map = qemu_map(path, qemu_fmt);
    let data_may_read_zero = qemu_fmt == "vpc";
    let data_means_nothing = qemu_fmt == "vhdx";
    let mut covered = 0;
    for e in &map {
        assert_eq!(e.start, covered, "{what}: qemu map has a gap or overlap at {covered:#x}");
        let end = e.start + e.length;
        covered = end;
        let mut off = e.start;
        while off < end {
            let ext = img.extent_at(off, end - off).unwrap();
            assert_eq!(ext.offset, off, "{what}: extent asked at {off:#x}");
            assert!(ext.len > 0 && ext.end() <= end, "{what}: {ext:?} leaves qemu's entry {e:?}");
            let ok = match (e.depth > 0, e.data, e.zero) {
                (true, _, _) => ext.alloc == Alloc::Backing,
                (false, false, _) => ext.alloc.reads_zero(),
                (false, true, _) if data_means_nothing => true,
                (false, true, false) => ext.alloc == Alloc::Data || (data_may_read_zero && ext.alloc.reads_zero()),
                (false, true, true) => ext.alloc != Alloc::Backing,
            };
            assert!(ok, "{what}: our {ext:?} against qemu's map entry {e:?}");
            if ext.alloc.reads_zero() {
                let r = usize_from_u64(ext.offset, "offset").unwrap()..usize_from_u64(ext.end(), "end").unwrap();
                assert!(is_zero(&theirs[r]), "{what}: we call {ext:?} zero but qemu reads data there");
            }
            off = ext.end();
        }
    }
    assert_eq!(covered, img.size(), "{what}: qemu's map ends at {covered:#x}");
}

/// Opens `path` as `format` (`None`: probe) through `registry` and a fresh gate.
pub fn open_with(registry: &Registry, path: &Path, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
    let gate = Gate::new();
    let ctx = OpenContext::new(registry, &gate);
    registry.open(path, format, &ctx)
}

/// Every guest byte through our reader, read in odd-sized pieces to exercise unaligned
/// reads.
pub fn read_all(img: &dyn BlockRead) -> Vec<u8> {
    let mut buf = vec![0u8; usize_from_u64(img.size(), "size").unwrap()];
    let step = 3 * 65536 + 4096 + 17;
    let mut off = 0;
    while off < buf.len() {
        let end = (off + step).min(buf.len());
        img.read_at(&mut buf[off..end], u64_from_usize(off)).unwrap();
        off = end;
    }
    buf
}

/// Writes `src` into a new image at `path` with `driver`'s writer, through the copy
/// engine, and commits the output files.
pub fn write_with(driver: &dyn Driver, src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = driver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { chunk_size: 256 << 10, ..CopyOptions::new(4) };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// A disk held in memory, for feeding our writers.
#[derive(Debug)]
pub struct VecDisk(pub Vec<u8>);

impl BlockRead for VecDisk {
    fn size(&self) -> u64 {
        u64_from_usize(self.0.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        buf.copy_from_slice(&self.0[usize_from_u64(offset, "offset")?..usize_from_u64(offset, "offset")? + buf.len()]);
        Ok(())
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent { offset, len: max_len.min(self.size() - offset), alloc: Alloc::Data })
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}

/// Deterministic, partly compressible, partly random test data: every third 4 KiB unit
/// is pseudo-random, the others repeat a byte derived from the unit index and `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 4096) % 3 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = low_u8(x);
        } else {
            *b = low_u8(u64_from_usize(i / 4096)) ^ low_u8(seed);
        }
    }
    v
}

/// Create options from `key=value` pairs.
pub fn opts(pairs: &[(&str, &str)]) -> CreateOptions {
    let mut o = CreateOptions::default();
    for (k, v) in pairs {
        o.options.insert(k.to_string(), v.to_string());
    }
    o
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}

/// `len` bytes of a file at `at`.
pub fn read_bytes(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact_at(&mut b, at).unwrap();
    b
}

/// Little-endian u32 at `at` (through diskcast-layout: past the end fails the test naming
/// the offset).
pub fn le32(b: &[u8], at: usize) -> u32 {
    field(diskcast_layout::le32(b, at, "test buffer"))
}

/// Little-endian u64 at `at`.
pub fn le64(b: &[u8], at: usize) -> u64 {
    field(diskcast_layout::le64(b, at, "test buffer"))
}

/// Big-endian u32 at `at`.
pub fn be32(b: &[u8], at: usize) -> u32 {
    field(diskcast_layout::be32(b, at, "test buffer"))
}

/// Big-endian u64 at `at`.
pub fn be64(b: &[u8], at: usize) -> u64 {
    field(diskcast_layout::be64(b, at, "test buffer"))
}

fn field<T>(r: diskcast_layout::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The first error from opening an image (the result of `opened`), mapping every extent
/// and reading every byte: what a hostile-input test expects to get. Fails the test when
/// the broken image reads without error.
pub fn first_error(opened: Result<Box<dyn BlockRead>>) -> Error {
    let img = match opened {
        Err(e) => return e,
        Ok(img) => img,
    };
    let mut buf = vec![0u8; usize_from_u64(img.size(), "size").unwrap()];
    let r = img.extent_at(0, img.size()).map(|_| ()).and_then(|_| img.read_at(&mut buf, 0));
    let r = r.and_then(|_| {
        let mut off = 0;
        while off < img.size() {
            off = img.extent_at(off, img.size() - off)?.end();
        }
        Ok(())
    });
    r.expect_err("reading a broken image succeeded")
}

/// Asserts that `e` is of `kind`, mentions `needle` and names the file it is about.
pub fn assert_error(e: &Error, kind: ErrorKind, needle: &str) {
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(needle), "{e:?} should mention {needle:?}");
    assert!(e.file().is_some(), "{e} names no file");
}

/// The one time limit for tests: see [`hostile::within`].
pub use hostile::within;

/// The thread count perf tests compare against their reference tool with: every core, as
/// the CLI's default `-j` gives (libraries never pick it themselves).
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// An in-place edit interrupted before its tables are written (the writer dropped
/// without `finish`, as a crash leaves it), judged by qemu: an 8 MiB image made in `dir`
/// by `qemu-img create -f fmt -o opts` (qemu's format name), 1 MiB of data written at 0
/// by qemu-io, reads exactly as before, and `qemu-img check` (where `checkable`) finds
/// nothing wrong; the same edit finished afterwards reads as written, clean too.
pub fn assert_interrupted_edit_leaks_at_worst(
    driver: &dyn diskcast_block::registry::Driver,
    dir: &Path,
    fmt: &str,
    opts: &str,
    checkable: bool,
) {
    use diskcast_block::{BlockWrite, Encoded, io::ImageFile, registry::CreateOptions};
    let path = &dir.join(format!("edited.{fmt}"));
    qemu_create(fmt, path, "8M", opts);
    qemu_io(fmt, path, &["write -P 0x11 0 1M"]);
    let before = qemu_raw(path, fmt, dir);
    let size = u64::try_from(before.len()).unwrap();
    let edit = |finish: bool| {
        let w = driver.write_into(ImageFile::open_rw(path).unwrap(), size, &CreateOptions::default()).unwrap();
        w.write_encoded(Encoded::Plain { offset: 3 << 20, data: vec![0x77; 100_000] }).unwrap();
        w.write_zeroes(5 << 20, 1 << 20).unwrap();
        if finish {
            BlockWrite::finish(w).unwrap();
        }
    };
    edit(false);
    assert!(
        qemu_raw(path, fmt, dir) == before,
        "{fmt}: an edit cut short before its tables changed what the guest reads"
    );
    if checkable {
        assert_qemu_check_clean(path, fmt);
    }
    edit(true);
    qemu_io(fmt, path, &["read -P 0x77 3M 100000", "read -P 0 5M 1M"]);
    let after = qemu_raw(path, fmt, dir);
    let (a, b) = (3 << 20, (3 << 20) + 100_000);
    assert!(after[..a] == before[..a] && after[b..] == before[b..], "{fmt}: the edit changed more than it wrote");
    if checkable {
        assert_qemu_check_clean(path, fmt);
    }
}
