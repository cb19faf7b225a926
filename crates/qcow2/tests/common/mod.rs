//! Test helpers: run qemu-img/qemu-io (tests fail, never skip, when they are missing),
//! open images through a registry and the gate, write images with our writer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::gate::Gate;
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext, Registry};
use diskcast_block::{Alloc, BlockRead, Extent, ImageInfo, Result};
use diskcast_qcow2::Qcow2Driver;
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

/// `qemu-io -f qcow2 path -c cmd ...`
pub fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    let p = path.to_str().unwrap();
    args.push(p);
    run("qemu-io", &args);
}

pub fn create(path: &Path, size: &str, opts: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "qcow2", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p, size]);
    }
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(Qcow2Driver)])
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    reg.open(path, Some("qcow2"), &ctx)
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
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!("{}.raw", path.file_name().unwrap().to_str().unwrap()));
    qemu_img(&["convert", "-O", "raw", path.to_str().unwrap(), out.to_str().unwrap()]);
    std::fs::read(out).unwrap()
}

/// Asserts our reader returns qemu's bytes and an allocation map matching `qemu-img map`.
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    let img = open(path).unwrap();
    let ours = read_all(img.as_ref());
    let theirs = qemu_raw(path, dir);
    assert_eq!(ours.len(), theirs.len(), "size");
    if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
        panic!("{}: first differing byte at {i:#x}", path.display());
    }
    let map: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", "qcow2", path.to_str().unwrap()])).unwrap();
    for e in map.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        let depth = e["depth"].as_u64().unwrap();
        let data = e["data"].as_bool().unwrap();
        let zero = e["zero"].as_bool().unwrap();
        let present = e["present"].as_bool().unwrap();
        let want = if depth > 0 {
            Alloc::Backing
        } else if data {
            Alloc::Data
        } else if zero && present {
            Alloc::Zero
        } else {
            Alloc::Unallocated
        };
        let mut off = start;
        while off < start + len {
            let ext = img.extent_at(off, start + len - off).unwrap();
            assert_eq!(ext.offset, off);
            assert_eq!(ext.alloc, want, "{}: extent at {off:#x} (qemu map entry {e})", path.display());
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

/// Writes `src` into a new qcow2 at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    let out = OutputFiles::new();
    let w = Qcow2Driver.create(path, src.size(), opts, &out).unwrap();
    let copy_opts = CopyOptions { threads: 4, chunk_size: 256 << 10, ..CopyOptions::default() };
    copy(src, w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
}

/// `qemu-img check` must pass with no errors and no leaks.
pub fn assert_qemu_check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "qcow2", path.to_str().unwrap()])
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
    assert_eq!(v.get("leaks").and_then(|x| x.as_u64()).unwrap_or(0), 0, "{stdout}");
    assert_eq!(v.get("corruptions").and_then(|x| x.as_u64()).unwrap_or(0), 0, "{stdout}");
    assert_eq!(v.get("check-errors").and_then(|x| x.as_u64()).unwrap_or(0), 0, "{stdout}");
}

/// `qemu-img compare` of a raw file against our qcow2 must succeed.
pub fn assert_qemu_compare(raw: &Path, qcow2: &Path) {
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "qcow2", raw.to_str().unwrap(), qcow2.to_str().unwrap()]);
}

/// Deterministic, partly compressible, partly random test data.
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

/// Big-endian u64 at `at` (qcow2 headers and tables are big-endian).
pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Overwrites bytes of a file in place, to build broken images from good ones.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, at).unwrap();
}
