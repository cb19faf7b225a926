//! Fuzzing the qcow2 reader, checker and measure with mutated qemu-made images, and the
//! regression tests for what the fuzzer found.
//!
//! The fuzzer is `#[ignore]`d; run it with
//! `cargo test --release -p diskcast-qcow2 --test fuzz_regressions -- --ignored --nocapture`
//! (`FUZZ_MUTANTS=n` sets the count, `FUZZ_SEED=n` the seed; add
//! `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true` to catch arithmetic overflow too). Each
//! mutant runs under `catch_unwind`, a watchdog that aborts after 5 s, and a counting
//! allocator that flags any single allocation over 256 MiB or a peak over 512 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]
mod common;
use common::*;
use diskcast_block::copy::extents;
use diskcast_block::gate::Gate;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext};
use diskcast_block::{Alloc, BlockRead, ErrorKind, Extent};
use diskcast_qcow2::Qcow2Driver;
use diskcast_testkit::hostile::within;

/// Seconds each regression test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Allocation accounting (the whole test binary).

/// Counts live and peak heap bytes and the largest single allocation.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are plain atomics and never touch the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        note_alloc(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resets the peak and largest-allocation counters.
fn reset_alloc_stats() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Exercising one image the way the CLI would.

/// Kinds a hostile image may produce; anything else (Io, InvalidArgument) is suspicious.
fn acceptable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidFormat
            | ErrorKind::Unsupported
            | ErrorKind::Corrupt
            | ErrorKind::OutOfBounds
            | ErrorKind::Refused
    )
}

/// Opens `path` through a registry and gate, walks every extent, reads data (capped at
/// `read_budget` bytes), reads a few odd offsets, asks for info, measures and checks.
/// Returns the error kinds seen, for statistics and for spotting unclear errors.
fn exercise(path: &Path, read_budget: u64) -> Vec<(ErrorKind, String)> {
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    let mut errs = Vec::new();
    match Qcow2Driver.open(diskcast_block::source::open_file(path).unwrap(), &ctx) {
        Err(e) => errs.push((e.kind(), e.to_string())),
        Ok(img) => {
            let size = img.size();
            let _ = img.info();
            let mut budget = read_budget;
            let mut exts: Vec<Extent> = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            for (n, e) in extents(img.as_ref(), false).enumerate() {
                match e {
                    Ok(e) => {
                        assert!(e.len > 0 && e.end() <= size, "bad extent {e:?} of a {size}-byte disk");
                        let mut off = e.offset;
                        while off < e.end() && budget > 0 {
                            let n = (e.end() - off).min(buf.len() as u64).min(budget);
                            if let Err(err) = img.read_at(&mut buf[..n as usize], off) {
                                errs.push((err.kind(), err.to_string()));
                                break;
                            }
                            budget -= n;
                            off += n;
                        }
                        if exts.len() < 100_000 {
                            exts.push(e);
                        }
                    }
                    Err(err) => {
                        errs.push((err.kind(), err.to_string()));
                        break;
                    }
                }
                if n > 200_000 {
                    break;
                }
            }
            // Resolved through the backing chain, only the first few.
            for e in extents(img.as_ref(), true).take(64) {
                if let Err(err) = e {
                    errs.push((err.kind(), err.to_string()));
                    break;
                }
            }
            // Odd offsets and lengths, including ones past the end.
            for (off, len) in [
                (0, 3),
                (size.saturating_sub(1), 1),
                (size / 2 + 7, 70_001),
                (size.saturating_sub(513), 1025),
                (size, 1),
                (u64::MAX - 4, 8),
            ] {
                let mut b = vec![0u8; len];
                let r = img.read_at(&mut b, off);
                if off.checked_add(len as u64).is_none_or(|e| e > size) {
                    let err = r.expect_err("read past the end succeeded");
                    assert_eq!(err.kind(), ErrorKind::OutOfBounds, "{err}");
                } else if let Err(err) = r {
                    errs.push((err.kind(), err.to_string()));
                }
            }
            for (off, len) in [(size.saturating_sub(1), u64::MAX), (size / 3, 1), (size, 1), (u64::MAX, u64::MAX)] {
                match img.extent_at(off, len) {
                    Ok(e) => assert!(off < size && e.offset == off && e.len >= 1 && e.end() <= size, "{e:?}"),
                    Err(err) if off >= size => assert_eq!(err.kind(), ErrorKind::OutOfBounds, "{err}"),
                    Err(err) => errs.push((err.kind(), err.to_string())),
                }
            }
            if let Err(err) = Qcow2Driver.measure(size, &exts, &CreateOptions::default()) {
                errs.push((err.kind(), err.to_string()));
            }
        }
    }
    if let Err(e) = Qcow2Driver.check(diskcast_block::source::open_file(path).unwrap(), &ctx) {
        errs.push((e.kind(), e.to_string()));
    }
    errs
}

// ---------------------------------------------------------------------------------------
// Seeds.

/// qemu-made seed images in `dir` (with a backing file there too).
fn make_seeds(dir: &Path) -> Vec<PathBuf> {
    let mut seeds = Vec::new();
    let mk = |name: &str, size: &str, opts: &str, writes: &[&str]| -> PathBuf {
        let p = dir.join(name);
        create(&p, size, opts);
        if !writes.is_empty() {
            qemu_io(&p, writes);
        }
        p
    };
    let w = ["write -P 0x11 0 64k", "write -P 0x22 1M 4k", "write -z 2M 128k", "write -P 0x33 3M 1k"];
    seeds.push(mk("c512.qcow2", "4M", "cluster_size=512", &w));
    seeds.push(mk("c64k.qcow2", "8M", "", &w));
    seeds.push(mk("c2m.qcow2", "16M", "cluster_size=2M", &["write -P 0x44 0 3M", "write -z 6M 2M"]));
    seeds.push(mk("v2.qcow2", "4M", "compat=0.10", &["write -P 0x55 0 8k", "write -P 0x66 2M 64k"]));
    seeds.push(mk("v2c4k.qcow2", "2M", "compat=0.10,cluster_size=4k", &["write -P 0x56 4k 8k"]));
    seeds.push(mk(
        "ext.qcow2",
        "8M",
        "extended_l2=on",
        &["write -P 0x77 0 4k", "write -P 0x78 64k 70k", "write -z 1M 8k"],
    ));
    seeds.push(mk("ext32k.qcow2", "4M", "extended_l2=on,cluster_size=32k", &["write -P 0x79 1k 2k"]));
    seeds.push(mk("rc1.qcow2", "4M", "refcount_bits=1,cluster_size=4k", &["write -P 0x7a 0 12k"]));
    seeds.push(mk("rc64.qcow2", "4M", "refcount_bits=64", &["write -P 0x7b 0 12k"]));
    // Compressed, zlib and zstd, from a source with compressible and incompressible data.
    let src = mk("src.qcow2", "4M", "", &["write -P 0x5a 0 192k", "write -P 0x12 1M 64k"]);
    for (name, opts) in [
        ("zlib.qcow2", "cluster_size=4k"),
        ("zlib64k.qcow2", ""),
        ("zstd.qcow2", "compression_type=zstd"),
        ("zstd2m.qcow2", "compression_type=zstd,cluster_size=2M"),
        ("zlibv2.qcow2", "compat=0.10"),
    ] {
        let p = dir.join(name);
        let mut args = vec!["convert", "-c", "-O", "qcow2"];
        if !opts.is_empty() {
            args.extend_from_slice(&["-o", opts]);
        }
        args.extend_from_slice(&[src.to_str().unwrap(), p.to_str().unwrap()]);
        qemu_img(&args);
        seeds.push(p);
    }
    // Backing chain in the same directory.
    let base = mk("base.qcow2", "4M", "", &["write -P 0x01 0 1M"]);
    let top = dir.join("top.qcow2");
    create(&top, "6M", "backing_file=base.qcow2,backing_fmt=qcow2");
    qemu_io(&top, &["write -P 0x02 64k 64k"]);
    seeds.push(top);
    let _ = base;
    // An internal snapshot, for check's snapshot walk.
    let snap = mk("snap.qcow2", "4M", "", &["write -P 0x03 0 128k"]);
    qemu_img(&["snapshot", "-c", "s1", snap.to_str().unwrap()]);
    qemu_io(&snap, &["write -P 0x04 0 64k"]);
    seeds.push(snap);
    seeds
}

// ---------------------------------------------------------------------------------------
// Mutations.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

/// Metadata locations of a seed, from its header and tables.
#[derive(Debug, Default)]
struct Layout2 {
    cs: u64,
    regions: Vec<(u64, u64)>,
    /// Host offsets worth pointing things at.
    offsets: Vec<u64>,
}

fn layout(b: &[u8]) -> Layout2 {
    let cs = 1u64 << be32(b, 20).clamp(9, 21);
    let mut l = Layout2 { cs, ..Default::default() };
    l.regions.push((0, cs.min(512)));
    let l1 = be64(b, 40);
    let l1_size = u64::from(be32(b, 36));
    l.regions.push((l1, l1_size * 8));
    l.offsets.push(l1);
    let ext = b.len() > 80 && be32(b, 4) == 3 && be64(b, 72) & 16 != 0;
    for i in 0..l1_size.min(64) {
        let e = be64_opt(b, l1 + i * 8) & 0x00ff_ffff_ffff_fe00;
        if e != 0 {
            l.regions.push((e, cs));
            l.offsets.push(e);
            // A few data clusters from this L2 table.
            for j in 0..(cs / if ext { 16 } else { 8 }).min(64) {
                let d = be64_opt(b, e + j * if ext { 16 } else { 8 });
                if d != 0 {
                    let host = if d & (1 << 62) != 0 {
                        d & ((1u64 << (62 - (cs.trailing_zeros() - 8))) - 1)
                    } else {
                        d & 0x00ff_ffff_ffff_fe00
                    };
                    if host != 0 {
                        l.offsets.push(host);
                        if d & (1 << 62) != 0 {
                            l.regions.push((host, 64));
                        }
                    }
                }
            }
        }
    }
    let rt = be64(b, 48);
    let rtc = u64::from(be32(b, 56));
    l.regions.push((rt, (rtc * cs).min(4096)));
    l.offsets.push(rt);
    for i in 0..(rtc * cs / 8).min(16) {
        let e = be64_opt(b, rt + i * 8);
        if e != 0 {
            l.regions.push((e, cs.min(4096)));
            l.offsets.push(e);
        }
    }
    let snaps = be64(b, 64);
    if be32(b, 60) != 0 {
        l.regions.push((snaps, 256));
        l.offsets.push(snaps);
        l.offsets.push(be64_opt(b, snaps));
    }
    l.regions.retain(|&(o, n)| n > 0 && o < b.len() as u64);
    l
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap()))
}

fn be64_opt(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    b.get(at..at.saturating_add(8))
        .map_or(0, |s| if s.len() == 8 { u64::from_be_bytes(s.try_into().unwrap()) } else { 0 })
}

/// Header fields: (offset, width in bytes).
const HEADER_FIELDS: &[(u64, u8)] = &[
    (4, 4),
    (8, 8),
    (16, 4),
    (20, 4),
    (24, 8),
    (32, 4),
    (36, 4),
    (40, 8),
    (48, 8),
    (56, 4),
    (60, 4),
    (64, 8),
    (72, 8),
    (80, 8),
    (88, 8),
    (96, 4),
    (100, 4),
    (104, 1),
    (112, 4),
    (116, 4),
];

fn interesting(r: &mut Rng, file_len: u64, l: &Layout2) -> u64 {
    let cs = l.cs;
    match r.below(6) {
        0 => r.pick(&[
            0,
            1,
            2,
            3,
            4,
            7,
            8,
            9,
            16,
            21,
            22,
            63,
            64,
            104,
            105,
            112,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x1ff,
            0x200,
            1023,
            1024,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
            1 << 32,
            1 << 40,
            1 << 56,
            1 << 61,
            (1 << 61) + 1,
            1 << 62,
            1 << 63,
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 511,
            u64::MAX / 2,
        ]),
        1 => {
            let d = r.pick(&[0i64, 1, -1, 8, -8, 512, -512]);
            let base = r.pick(&[file_len, cs, 2 * cs, file_len - file_len % cs, file_len.div_ceil(cs) * cs]);
            base.wrapping_add_signed(d)
        }
        2 => 1u64 << r.below(64),
        3 => (1u64 << r.below(64)).wrapping_sub(1),
        4 => {
            // A valid-looking pointer, maybe with flags.
            let o = if l.offsets.is_empty() { cs } else { l.offsets[r.below(l.offsets.len() as u64) as usize] };
            let o = o.wrapping_add(r.pick(&[0, 0, 0, cs, 512, 8]));
            o | r.pick(&[0, 1 << 63, 1 << 62, (1 << 62) | (0xff << 54), 1, (1 << 63) | 1, 3 << 62])
        }
        _ => r.next(),
    }
}

/// Applies one to three random mutations; returns a description.
fn mutate(r: &mut Rng, m: &mut Vec<u8>, l: &Layout2, allow_resize: bool) -> (String, Option<u64>) {
    let mut desc = Vec::new();
    let mut set_len = None;
    for _ in 0..1 + r.below(3) {
        let len = m.len() as u64;
        let at = if r.below(4) == 0 {
            r.below(len)
        } else {
            let (o, n) = l.regions[r.below(l.regions.len() as u64) as usize];
            o + r.below(n)
        };
        match r.below(10) {
            0 | 1 => {
                let bit = r.below(8);
                if let Some(b) = m.get_mut(at as usize) {
                    *b ^= 1 << bit;
                }
                desc.push(format!("flip bit {bit} at {at:#x}"));
            }
            2 => {
                let v = r.next() as u8;
                if let Some(b) = m.get_mut(at as usize) {
                    *b = v;
                }
                desc.push(format!("byte {v:#x} at {at:#x}"));
            }
            3 | 4 => {
                let (off, w) = r.pick(HEADER_FIELDS);
                let v = interesting(r, len, l);
                put(m, off, w, v);
                desc.push(format!("header field {off} (u{}) = {v:#x}", w as u32 * 8));
            }
            5..=7 => {
                let w = r.pick(&[2u8, 4, 8, 8, 8]);
                let at = at - at % u64::from(w);
                let v = interesting(r, len, l);
                put(m, at, w, v);
                desc.push(format!("u{} at {at:#x} = {v:#x}", w as u32 * 8));
            }
            8 if allow_resize => {
                let new = match r.below(4) {
                    0 => r.below(len),
                    1 => len.saturating_sub(1 + r.below(4096)),
                    2 => len + 1 + r.below(4096),
                    _ => len + r.pick(&[l.cs, 1 << 20, 1 << 30, 1 << 34]),
                };
                if new <= 64 << 20 {
                    m.resize(new as usize, 0);
                } else {
                    set_len = Some(new);
                }
                desc.push(format!("resize to {new}"));
            }
            _ => {
                // Copy one 8-byte entry over another region (e.g. an L2 pointer into L1).
                let (o, n) = l.regions[r.below(l.regions.len() as u64) as usize];
                let src = (o + r.below(n)) & !7;
                let v = be64_opt(m, src);
                let at = at & !7;
                put(m, at, 8, v);
                desc.push(format!("copy u64 {src:#x} -> {at:#x} ({v:#x})"));
            }
        }
    }
    (desc.join("; "), set_len)
}

fn put(m: &mut [u8], at: u64, w: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let src = &bytes[8 - w as usize..];
    let at = at as usize;
    if let Some(dst) = m.get_mut(at..at.saturating_add(w as usize))
        && dst.len() == src.len()
    {
        dst.copy_from_slice(src);
    }
}

// ---------------------------------------------------------------------------------------
// The fuzz loop.

static CURRENT: AtomicU64 = AtomicU64::new(u64::MAX);
static STARTED_MS: AtomicU64 = AtomicU64::new(0);

#[test]
#[ignore]
fn fuzz_qcow2() {
    let total: u64 = std::env::var("FUZZ_MUTANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(30_000);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let keep = PathBuf::from(std::env::var("FUZZ_OUT").unwrap_or_else(|_| "/tmp/qcow2-fuzz-findings".into()));
    std::fs::create_dir_all(&keep).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seeds = make_seeds(dir.path());
    let seed_bytes: Vec<(String, Vec<u8>, Layout2)> = seeds
        .iter()
        .map(|p| {
            let b = std::fs::read(p).unwrap();
            let l = layout(&b);
            (p.file_name().unwrap().to_str().unwrap().to_string(), b, l)
        })
        .collect();
    // Seeds themselves must be clean.
    for p in &seeds {
        let errs = exercise(p, 64 << 20);
        assert!(errs.is_empty(), "{}: {errs:?}", p.display());
    }
    let t0 = Instant::now();
    let mutant_path = dir.path().join("m.qcow2");
    let desc_path = keep.join("current.txt");
    // Watchdog: abort if one mutant runs longer than 5 s, keeping it for replay.
    {
        let mutant_path = mutant_path.clone();
        let keep = keep.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let cur = CURRENT.load(Ordering::SeqCst);
                if cur == u64::MAX {
                    continue;
                }
                let now = t0.elapsed().as_millis() as u64;
                if now.saturating_sub(STARTED_MS.load(Ordering::SeqCst)) > 5000 && CURRENT.load(Ordering::SeqCst) == cur
                {
                    let saved = keep.join(format!("hang-{cur}.qcow2"));
                    let _ = std::fs::copy(&mutant_path, &saved);
                    let d = std::fs::read_to_string(keep.join("current.txt")).unwrap_or_default();
                    eprintln!("HANG: mutant {cur} ran over 5 s: {d}; saved to {}", saved.display());
                    std::process::abort();
                }
            }
        });
    }
    std::panic::set_hook(Box::new(|info| {
        let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = format!("{msg} at {loc}"));
    }));
    let mut rng = Rng(seed | 1);
    let mut panics = Vec::new();
    let mut mem = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    let mut odd = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut per_seed = std::collections::BTreeMap::<String, Duration>::new();
    for i in 0..total {
        let (name, orig, l) = &seed_bytes[rng.below(seed_bytes.len() as u64) as usize];
        let mut m = orig.clone();
        let (desc, set_len) = mutate(&mut rng, &mut m, l, true);
        let desc = format!("{name}: {desc}");
        std::fs::write(&mutant_path, &m).unwrap();
        if let Some(n) = set_len {
            std::fs::OpenOptions::new().write(true).open(&mutant_path).unwrap().set_len(n).unwrap();
        }
        std::fs::write(&desc_path, &desc).unwrap();
        reset_alloc_stats();
        STARTED_MS.store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
        CURRENT.store(i, Ordering::SeqCst);
        let start = Instant::now();
        let r = std::panic::catch_unwind(|| exercise(&mutant_path, 32 << 20));
        let took = start.elapsed();
        CURRENT.store(u64::MAX, Ordering::SeqCst);
        *per_seed.entry(name.clone()).or_default() += took;
        if took > slowest.0 {
            slowest = (took, desc.clone());
        }
        match r {
            Ok(errs) => {
                for (k, msg) in errs {
                    *kinds.entry(format!("{k:?}")).or_default() += 1;
                    if !acceptable(k) && odd.len() < 50 {
                        odd.push(format!("{desc} => {k:?}: {msg}"));
                    }
                }
            }
            Err(_) => {
                let p = LAST_PANIC.with(|p| p.borrow().clone());
                let saved = keep.join(format!("panic-{i}.qcow2"));
                let _ = std::fs::copy(&mutant_path, &saved);
                eprintln!("PANIC mutant {i}: {desc}: {p}");
                panics.push(format!("{desc}: {p}"));
            }
        }
        let peak = PEAK.load(Ordering::Relaxed);
        let largest = LARGEST.load(Ordering::Relaxed);
        let rss = vm_rss_kib();
        if largest > 256 << 20 || peak > 512 << 20 || rss > 512 << 10 {
            eprintln!("MEMORY mutant {i}: {desc}: largest {largest} peak {peak} rss {rss} KiB");
            if set_len.is_none() {
                let _ = std::fs::copy(&mutant_path, keep.join(format!("mem-{i}.qcow2")));
            }
            mem.push(desc.clone());
        }
        if i % 5000 == 4999 {
            eprintln!("{} mutants in {:?}, {} panics, kinds {kinds:?}", i + 1, t0.elapsed(), panics.len());
        }
    }
    eprintln!("done: {total} mutants in {:?}; error kinds {kinds:?}", t0.elapsed());
    eprintln!("time per seed: {per_seed:?}");
    eprintln!("slowest mutant {:?}: {}", slowest.0, slowest.1);
    for o in &odd {
        eprintln!("unexpected kind: {o}");
    }
    assert!(panics.is_empty(), "{} panics: {panics:#?}", panics.len());
    assert!(mem.is_empty(), "memory: {mem:#?}");
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

// ---------------------------------------------------------------------------------------
// Regression tests (fast, not ignored).

fn open_in(path: &Path) -> diskcast_block::Result<Box<dyn BlockRead>> {
    let reg = registry();
    let gate = Gate::new();
    Qcow2Driver.open(diskcast_block::source::open_file(path).unwrap(), &OpenContext::new(&reg, &gate))
}

fn check_of(path: &Path) -> diskcast_block::Result<diskcast_block::registry::CheckReport> {
    let reg = registry();
    let gate = Gate::new();
    Qcow2Driver.check(diskcast_block::source::open_file(path).unwrap(), &OpenContext::new(&reg, &gate))
}

fn expect_err(r: diskcast_block::Result<impl std::fmt::Debug>, kind: ErrorKind, field: &str) {
    let e = r.expect_err("hostile image accepted");
    assert_eq!(e.kind(), kind, "{e}");
    assert_eq!(e.field(), Some(field), "{e}");
}

/// A 64 KiB-cluster image of `size` with data at 0 and 1 MiB.
fn base64k(dir: &Path, name: &str, size: &str, opts: &str) -> PathBuf {
    let p = dir.join(name);
    create(&p, size, opts);
    qemu_io(&p, &["write -P 0x42 0 128k", "write -P 0x43 1M 64k"]);
    p
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn set_file_len(p: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len).unwrap();
}

/// Appends a table of `n` copies of `entry` at the next cluster boundary; returns its offset.
fn append_table(p: &Path, cs: u64, n: u64, entry: u64) -> u64 {
    let at = file_len(p).div_ceil(cs) * cs;
    let one = entry.to_be_bytes();
    let bytes: Vec<u8> = (0..n).flat_map(|_| one).collect();
    patch(p, at, &bytes);
    set_file_len(p, (at + n * 8).div_ceil(cs) * cs);
    at
}

/// Every guest byte read in 1 MiB pieces, every extent walked.
fn read_everything(img: &dyn BlockRead) -> diskcast_block::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for e in extents(img, false) {
        let e = e?;
        let mut off = e.offset;
        while off < e.end() {
            let n = (e.end() - off).min(1 << 20);
            img.read_at(&mut buf[..n as usize], off)?;
            off += n;
        }
        out.push(e);
    }
    Ok(out)
}

#[test]
fn refcount_table_entry_near_u64_max_is_a_corruption() {
    within(LIMIT_SECS, "refcount_table_entry_near_u64_max_is_a_corruption", || {
        // check() added the cluster size to a refcount block offset of 0xffff_ffff_ffff_fe00
        // (an aligned 512-byte cluster) without checking, which overflows.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rt.qcow2");
        create(&p, "1M", "cluster_size=512");
        qemu_io(&p, &["write -P 1 0 4k"]);
        let rt = be64(&std::fs::read(&p).unwrap(), 48);
        patch(&p, rt + 8, &0xffff_ffff_ffff_fe00u64.to_be_bytes());
        let r = check_of(&p).unwrap();
        assert!(r.corruptions >= 1, "{:?}", r.messages);
        assert!(r.messages.iter().any(|m| m.contains("refcount block 1")), "{:?}", r.messages);
    });
}

#[test]
fn refcount_table_of_one_block_repeated_checks_fast() {
    within(LIMIT_SECS, "refcount_table_of_one_block_repeated_checks_fast", || {
        // An 8 MiB refcount table whose million entries all name the same refcount block:
        // check compared a whole block per entry (a million times 32768 refcounts).
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "rt.qcow2", "8M", "");
        let b = std::fs::read(&p).unwrap();
        let rb = be64(&b, be64(&b, 48) as usize);
        let rt = append_table(&p, 65536, 1 << 20, rb);
        patch(&p, 48, &rt.to_be_bytes());
        patch(&p, 56, &128u32.to_be_bytes());
        let r = within(5, "check", move || check_of(&p)).unwrap();
        assert!(r.corruptions >= 1, "the refcount block is referenced 2^20 times: {:?}", r.messages);
    });
}

#[test]
fn l1_entries_sharing_one_l2_table_check_fast() {
    within(LIMIT_SECS, "l1_entries_sharing_one_l2_table_check_fast", || {
        // A million L1 entries (beyond the virtual size) all pointing at one L2 table: check
        // read and walked that table a million times.
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "l1.qcow2", "8M", "");
        let b = std::fs::read(&p).unwrap();
        let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
        let l1 = append_table(&p, 65536, 1 << 20, l2);
        patch(&p, 40, &l1.to_be_bytes());
        patch(&p, 36, &(1u32 << 20).to_be_bytes());
        let q = p.clone();
        let r = within(5, "check", move || check_of(&q)).unwrap();
        assert!(r.corruptions >= 1, "{:?}", r.messages);
        // Reading is correct: only the first L1 entry is inside the 8 MiB disk.
        let img = open_in(&p).unwrap();
        let ext = read_everything(img.as_ref()).unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 8 << 20);
        let mut buf = vec![0u8; 64 << 10];
        img.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&x| x == 0x43));
    });
}

#[test]
fn terabyte_disk_of_one_shared_l2_table_maps_fast() {
    within(LIMIT_SECS, "terabyte_disk_of_one_shared_l2_table_maps_fast", || {
        // 1 TiB whose 2048 L1 entries all point at one L2 table full of data entries (every
        // one naming the same host cluster): mapping and extent_at must take seconds at most,
        // and a single extent_at call over 2 PiB must return promptly.
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "tb.qcow2", "8M", "");
        let b = std::fs::read(&p).unwrap();
        let l1_at = be64(&b, 40);
        let l2 = be64(&b, l1_at as usize) & 0x00ff_ffff_ffff_fe00;
        let data = be64(&b, l2 as usize) & 0x00ff_ffff_ffff_fe00;
        let full: Vec<u8> = (0..8192).flat_map(|_| (data | (1 << 63)).to_be_bytes()).collect();
        patch(&p, l2, &full);
        let l1 = append_table(&p, 65536, 1 << 22, l2);
        patch(&p, 40, &l1.to_be_bytes());
        patch(&p, 36, &(1u32 << 22).to_be_bytes());
        patch(&p, 24, &(1u64 << 40).to_be_bytes());
        let q = p.clone();
        within(10, "mapping 1 TiB", move || {
            let img = open_in(&q).unwrap();
            let n: u64 = extents(img.as_ref(), false).map(|e| e.unwrap().len).sum();
            assert_eq!(n, 1 << 40);
            let e = img.extent_at((1 << 40) - 65536 - 7, u64::MAX).unwrap();
            assert_eq!((e.alloc, e.end()), (Alloc::Data, 1 << 40));
        });
        // 2 PiB: the whole L1 table.
        patch(&p, 24, &(1u64 << 51).to_be_bytes());
        let q = p.clone();
        within(5, "one extent_at over 2 PiB", move || {
            let img = open_in(&q).unwrap();
            let e = img.extent_at(0, u64::MAX).unwrap();
            assert_eq!((e.offset, e.alloc), (0, Alloc::Data));
            let mut buf = vec![0u8; 4096];
            img.read_at(&mut buf, (1 << 51) - 4096).unwrap();
            assert!(buf.iter().all(|&x| x == 0x42));
        });
        let q = p.clone();
        let r = within(10, "check", move || check_of(&q)).unwrap();
        assert!(r.corruptions >= 1, "{:?}", r.messages);
    });
}

#[test]
fn many_snapshots_sharing_one_big_l1_table_check_fast() {
    within(LIMIT_SECS, "many_snapshots_sharing_one_big_l1_table_check_fast", || {
        // 65536 snapshots, each naming the same 1M-entry L1 table: check read 8 MiB and
        // walked a million entries per snapshot.
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "sn.qcow2", "8M", "");
        let b = std::fs::read(&p).unwrap();
        let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
        let l1 = append_table(&p, 65536, 1 << 20, l2);
        let snaps = file_len(&p);
        let mut e = [0u8; 40];
        e[0..8].copy_from_slice(&l1.to_be_bytes());
        e[8..12].copy_from_slice(&(1u32 << 20).to_be_bytes());
        let table: Vec<u8> = (0..65536).flat_map(|_| e).collect();
        patch(&p, snaps, &table);
        patch(&p, 60, &65536u32.to_be_bytes());
        patch(&p, 64, &snaps.to_be_bytes());
        let r = within(5, "check", move || check_of(&p)).unwrap();
        assert!(r.corruptions >= 1, "{:?}", r.messages);
    });
}

#[test]
fn zstd_frame_asking_for_a_huge_window_is_corrupt() {
    within(LIMIT_SECS, "zstd_frame_asking_for_a_huge_window_is_corrupt", || {
        // A zstd frame may declare a window of up to 128 MiB, which the decoder allocates.
        // qemu writes one frame per cluster with a window no larger than the cluster, so the
        // window is capped at 2 MiB: a 128 MiB one is Corrupt, a 2 MiB one still reads.
        let dir = tempfile::tempdir().unwrap();
        let src = base64k(dir.path(), "s.qcow2", "4M", "");
        for (window_desc, ok) in [(0x88u8, false), (0x58u8, true)] {
            let p = dir.path().join(format!("z{window_desc:x}.qcow2"));
            qemu_img(&[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zstd",
                src.to_str().unwrap(),
                p.to_str().unwrap(),
            ]);
            let b = std::fs::read(&p).unwrap();
            let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
            assert!(be64(&b, l2 as usize) & (1 << 62) != 0, "qemu did not compress");
            // Frame: magic, descriptor (no content size, not single segment), window
            // descriptor, then one last raw block of the whole 64 KiB cluster.
            let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, window_desc];
            frame.extend_from_slice(&(1u32 | (65536 << 3)).to_le_bytes()[..3]);
            frame.extend(std::iter::repeat_n(0x5au8, 65536));
            let host = file_len(&p).div_ceil(512) * 512;
            patch(&p, host, &frame);
            let sectors = (frame.len() as u64).div_ceil(512);
            patch(&p, l2, &((1u64 << 62) | ((sectors - 1) << 54) | host).to_be_bytes());
            let img = open_in(&p).unwrap();
            let mut buf = vec![0u8; 65536];
            let r = img.read_at(&mut buf, 0);
            if ok {
                r.unwrap();
                assert!(buf.iter().all(|&x| x == 0x5a));
            } else {
                let e = r.expect_err("128 MiB zstd window accepted");
                assert_eq!((e.kind(), e.field()), (ErrorKind::Corrupt, Some("compressed_cluster")), "{e}");
            }
        }
    });
}

#[test]
fn unknown_backing_format_name_is_unsupported() {
    within(LIMIT_SECS, "unknown_backing_format_name_is_unsupported", || {
        // The backing format comes from the image, so a garbled name is a property of the
        // file (Unsupported, naming backing_format), not a bad user argument.
        let dir = tempfile::tempdir().unwrap();
        let base = base64k(dir.path(), "base.qcow2", "4M", "");
        let top = dir.path().join("top.qcow2");
        create(&top, "4M", "backing_file=base.qcow2,backing_fmt=qcow2");
        let _ = base;
        let b = std::fs::read(&top).unwrap();
        let at = b.windows(5).position(|w| w == b"qcow2").unwrap();
        patch(&top, at as u64 + 3, b"g");
        expect_err(open_in(&top), ErrorKind::Unsupported, "backing_format");
    });
}

#[test]
fn virtual_size_near_u64_max_is_invalid() {
    within(LIMIT_SECS, "virtual_size_near_u64_max_is_invalid", || {
        let dir = tempfile::tempdir().unwrap();
        for size in [u64::MAX, u64::MAX - 511, (1u64 << 61) + 512, 1 << 63] {
            let p = base64k(dir.path(), "big.qcow2", "4M", "");
            patch(&p, 24, &size.to_be_bytes());
            expect_err(open_in(&p), ErrorKind::InvalidFormat, "size");
            expect_err(check_of(&p), ErrorKind::InvalidFormat, "size");
        }
        // 2^61 itself is allowed by the size check but needs a 32 MiB+ L1 table.
        let p = base64k(dir.path(), "big.qcow2", "4M", "");
        patch(&p, 24, &(1u64 << 61).to_be_bytes());
        expect_err(open_in(&p), ErrorKind::Corrupt, "l1_size");
    });
}

#[test]
fn l2_table_shared_by_two_l1_entries_reads_and_checks() {
    within(LIMIT_SECS, "l2_table_shared_by_two_l1_entries_reads_and_checks", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "sh.qcow2", "1G", "");
        let b = std::fs::read(&p).unwrap();
        let l1 = be64(&b, 40);
        patch(&p, l1 + 8, &be64(&b, l1 as usize).to_be_bytes());
        let img = open_in(&p).unwrap();
        let mut lo = vec![0u8; 2 << 20];
        let mut hi = vec![0u8; 2 << 20];
        img.read_at(&mut lo, 0).unwrap();
        img.read_at(&mut hi, 512 << 20).unwrap();
        assert!(lo == hi && lo[0] == 0x42 && lo[1 << 20] == 0x43);
        let e = img.extent_at(512 << 20, u64::MAX).unwrap();
        assert_eq!((e.alloc, e.len), (Alloc::Data, 128 << 10));
        let r = check_of(&p).unwrap();
        // The L2 table and its three data clusters are referenced twice but counted once.
        assert_eq!(r.corruptions, 4, "{:?}", r.messages);
        assert_eq!(r.allocated_clusters, Some(6));
    });
}

#[test]
fn refcount_order_7_is_invalid() {
    within(LIMIT_SECS, "refcount_order_7_is_invalid", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base64k(dir.path(), "ro.qcow2", "4M", "");
        patch(&p, 96, &7u32.to_be_bytes());
        expect_err(open_in(&p), ErrorKind::InvalidFormat, "refcount_order");
        expect_err(check_of(&p), ErrorKind::InvalidFormat, "refcount_order");
    });
}

#[test]
fn header_length_out_of_range_is_invalid() {
    within(LIMIT_SECS, "header_length_out_of_range_is_invalid", || {
        let dir = tempfile::tempdir().unwrap();
        for (opts, len) in
            [("", 0u32), ("", 72), ("", 100), ("", 65536 + 8), ("", u32::MAX - 7), ("cluster_size=512", 520)]
        {
            let p = base64k(dir.path(), "hl.qcow2", "4M", opts);
            patch(&p, 100, &len.to_be_bytes());
            expect_err(open_in(&p), ErrorKind::InvalidFormat, "header_length");
            expect_err(check_of(&p), ErrorKind::InvalidFormat, "header_length");
        }
        // 104 (no compression type byte) is valid for a zlib image.
        let p = base64k(dir.path(), "hl.qcow2", "4M", "");
        patch(&p, 100, &104u32.to_be_bytes());
        read_everything(open_in(&p).unwrap().as_ref()).unwrap();
    });
}

#[test]
fn backing_file_size_over_1023_is_invalid() {
    within(LIMIT_SECS, "backing_file_size_over_1023_is_invalid", || {
        let dir = tempfile::tempdir().unwrap();
        base64k(dir.path(), "base.qcow2", "4M", "");
        let top = dir.path().join("top.qcow2");
        for (size, field) in
            [(1024u32, "backing_file_size"), (u32::MAX, "backing_file_size"), (1023, "backing_file_offset")]
        {
            create(&top, "4M", "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512");
            patch(&top, 16, &size.to_be_bytes());
            // 1023 bytes from the name's offset runs past the 512-byte header cluster.
            expect_err(open_in(&top), ErrorKind::InvalidFormat, field);
            expect_err(check_of(&top), ErrorKind::InvalidFormat, field);
        }
    });
}

#[test]
fn two_mib_clusters_with_512_mib_of_l2_tables_map_fast() {
    within(LIMIT_SECS, "two_mib_clusters_with_512_mib_of_l2_tables_map_fast", || {
        // 256 distinct 2 MiB L2 tables (512 MiB, 16 times the L2 cache) behind a 128 TiB
        // disk: mapping loads each table once, without thrashing, and stays fast.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big2m.qcow2");
        create(&p, "1G", "cluster_size=2M");
        qemu_io(&p, &["write -P 0x61 0 2M"]);
        let b = std::fs::read(&p).unwrap();
        let cs = 2u64 << 20;
        let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
        let data = be64(&b, l2 as usize) & 0x00ff_ffff_ffff_fe00;
        let base = file_len(&p).div_ceil(cs) * cs;
        // Table i maps one data cluster at entry i (the same host cluster everywhere).
        let mut l1 = Vec::new();
        for i in 0..256u64 {
            let t = base + i * cs;
            patch(&p, t + i * 8, &(data | (1 << 63)).to_be_bytes());
            l1.extend_from_slice(&(t | (1 << 63)).to_be_bytes());
        }
        set_file_len(&p, base + 256 * cs);
        let l1_at = append_table(&p, cs, 256, 0);
        patch(&p, l1_at, &l1);
        patch(&p, 40, &l1_at.to_be_bytes());
        patch(&p, 36, &256u32.to_be_bytes());
        patch(&p, 24, &(256u64 << 39).to_be_bytes());
        within(20, "mapping 128 TiB over 256 L2 tables", move || {
            let img = open_in(&p).unwrap();
            let ext: Vec<Extent> = extents(img.as_ref(), false).map(|e| e.unwrap()).collect();
            let data: Vec<u64> = ext.iter().filter(|e| e.alloc == Alloc::Data).map(|e| e.offset).collect();
            assert_eq!(data, (0..256u64).map(|i| (i << 39) + i * cs).collect::<Vec<_>>());
            let mut buf = vec![0u8; 4096];
            img.read_at(&mut buf, (255u64 << 39) + 255 * cs).unwrap();
            assert!(buf.iter().all(|&x| x == 0x61));
        });
    });
}
