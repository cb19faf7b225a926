//! Running drivers on hostile bytes: every outcome is fine except a panic, a hang, or an
//! error that does not say what is wrong with the input.
//!
//! [`exercise`] opens an in-memory image the way the CLI would use it (open, map every
//! extent, read the data, info, check) on its own thread under a time limit, and asserts
//! that every error it gets is one a damaged image may give (never `Io`,
//! `InvalidArgument` or `Cancelled`: nothing here does I/O or takes arguments) and
//! names the image. [`Mutator`] makes reproducible mutants of a seed image.
//! [`bounded`] runs anything (a tree parser walking a whole tree) under a time limit and
//! a memory bound counted by [`crate::alloc::Counting`], returning what went wrong
//! instead of panicking, so a campaign records every finding and goes on.

use diskcast_block::gate::Gate;
use diskcast_block::registry::{OpenContext, Registry};
use diskcast_block::source::{MemSource, Source};
use diskcast_block::{BlockRead, Error, ErrorKind};
use diskcast_layout::{low_u8, u64_from_usize, usize_from_u64};
use std::sync::Arc;
use std::time::Duration;

/// Runs `f` on its own thread and returns its result; fails the test when it takes more
/// than `secs` seconds or panics. `what` names the case in the failure message.
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match try_within(secs, what, f) {
        Ok(v) => v,
        Err(Stop::Timeout) => panic!("{what}: took more than {secs} s"),
        Err(Stop::Panic(m)) => panic!("{what}: panicked: {m}"),
    }
}

/// Why [`try_within`] returned no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The time limit passed; the thread is left running.
    Timeout,
    /// The closure panicked, with this message.
    Panic(String),
}

/// Runs `f` on its own thread under a time limit of `secs` seconds, catching a panic
/// (the panic hook still prints it and its backtrace): a fuzz campaign records the
/// failure and goes on. After a timeout the thread keeps running: stop using the
/// parser it was in.
pub fn try_within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Stop> {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new().name(what.chars().take(60).collect()).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".into())
        });
        let _ = tx.send(r);
    });
    if let Err(e) = worker {
        panic!("{what}: cannot start a thread: {e}");
    }
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(m)) => Err(Stop::Panic(m)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Stop::Timeout),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Stop::Panic("the thread died".into())),
    }
}

/// Memory any one mutant may use, whatever its size: enough for a parser's buffers
/// (1 MiB reads, a few directory blocks, a JSON document) with room to spare.
pub const MEM_FLOOR: usize = 64 << 20;
/// Memory a mutant may use per byte of input: parsers must stay linear in what they
/// read, and 64 is far above any honest constant factor.
pub const MEM_PER_INPUT_BYTE: usize = 64;
/// Above this much (past the bound) an allocation aborts the process, naming the mutant:
/// a parser asking for gigabytes must not take the shared machine down.
pub const MEM_HARD: usize = 1 << 30;

/// The memory bound of a mutant of `input_len` bytes: max([`MEM_FLOOR`],
/// [`MEM_PER_INPUT_BYTE`] x its size).
pub fn memory_bound(input_len: usize) -> usize {
    MEM_FLOOR.max(input_len.saturating_mul(MEM_PER_INPUT_BYTE))
}

/// One run's failure: what ran and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// It took more than the time limit (the thread is left running).
    Timeout(u64),
    /// It panicked, with this message.
    Panic(String),
    /// Its peak memory (bytes) passed the bound.
    Memory {
        /// The most bytes live at once.
        peak: usize,
        /// The bound.
        bound: usize,
    },
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Timeout(s) => write!(f, "took more than {s} s"),
            Bad::Panic(m) => write!(f, "panicked: {m}"),
            Bad::Memory { peak, bound } => write!(f, "peak memory {peak} bytes passes the {bound}-byte bound"),
        }
    }
}

/// One run at a time, so that the allocator's peak belongs to it.
static BOUNDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` under a time limit of `secs` and a memory bound of `mem` bytes (peak live
/// bytes of the whole process above what was live at the start, as counted by
/// [`crate::alloc::Counting`], which the test binary must install), one run at a time.
/// Returns the value and the peak, or what went wrong.
pub fn bounded<T: Send + 'static>(
    secs: u64,
    mem: usize,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, usize), Bad> {
    let _one = BOUNDED.lock().unwrap_or_else(|e| e.into_inner());
    assert!(crate::alloc::installed(), "{what}: the test binary does not count memory (install alloc::Counting)");
    crate::alloc::set_label(what);
    let base = crate::alloc::reset_peak();
    crate::alloc::set_ceiling(base.saturating_add(mem.max(MEM_HARD)));
    let r = try_within(secs, what, f);
    let peak = crate::alloc::peak().saturating_sub(base);
    crate::alloc::set_ceiling(0);
    match r {
        Err(Stop::Timeout) => Err(Bad::Timeout(secs)),
        Err(Stop::Panic(m)) => Err(Bad::Panic(m)),
        Ok(_) if peak > mem => Err(Bad::Memory { peak, bound: mem }),
        Ok(v) => Ok((v, peak)),
    }
}

/// Why `e`, from reading the hostile input `name`, is not a clear error about the input
/// (an I/O, argument or cancel error, or one naming no input, in its file or its
/// message), or `None` when it is one.
/// [`assert_input_error`] asserts the same.
pub fn input_error_problem(e: &Error, name: &str) -> Option<String> {
    if matches!(e.kind(), ErrorKind::Io | ErrorKind::InvalidArgument | ErrorKind::Cancelled) {
        return Some(format!("{e} is a {} error, not an error about the input", e.kind().as_str()));
    }
    let file = e.file().map(|f| f.display().to_string()).unwrap_or_default();
    if !file.contains(name) && !e.message().contains(name) {
        return Some(format!("{e} does not name the input {name:?}"));
    }
    None
}

/// Asserts that `e`, from reading the hostile image `name`, is an error about the input:
/// not an I/O, argument or cancel error, and naming the image.
pub fn assert_input_error(e: &Error, name: &str, what: &str) {
    if let Some(problem) = input_error_problem(e, name) {
        panic!("{what}: {problem}");
    }
}

/// What [`exercise`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The image opened.
    pub opened: bool,
    /// Errors from open, map, read, info and check together.
    pub errors: usize,
    /// Guest bytes read.
    pub bytes_read: u64,
}

/// Most extents walked and guest bytes read per image: a mutant may claim a huge disk.
const MAX_EXTENTS: usize = 20_000;
const READ_BUDGET: u64 = 32 << 20;

/// Opens `bytes` as `format` from memory (named `name`) with the drivers `registry()`
/// makes, maps every extent, reads up to 32 MiB of data, asks for info, runs the
/// driver's check; each under `secs` seconds, and asserting every error with
/// [`assert_input_error`]. `what` names the case in failures (say, the mutation).
pub fn exercise(
    registry: fn() -> Registry,
    format: &str,
    name: &str,
    bytes: Arc<[u8]>,
    secs: u64,
    what: &str,
) -> Outcome {
    let (format, name, label) = (format.to_string(), name.to_string(), what.to_string());
    within(secs, what, move || run(registry(), &format, &name, bytes, &label))
}

fn run(reg: Registry, format: &str, name: &str, bytes: Arc<[u8]>, what: &str) -> Outcome {
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    let src: Source = Arc::new(MemSource::new(name, bytes));
    let (mut opened, mut bytes_read, mut errors) = (false, 0, 0);
    let mut seen = |e: Error| {
        assert_input_error(&e, name, what);
        errors += 1;
    };
    match reg.open_source(src.clone(), Some(format), &ctx) {
        Err(e) => seen(e),
        Ok(img) => {
            opened = true;
            let _ = img.info();
            if let Err(e) = walk(img.as_ref(), &mut bytes_read, what) {
                seen(e);
            }
            // Past the end is always out of bounds.
            let e = img.read_at(&mut [0u8; 1], img.size()).expect_err("a read past the end succeeded");
            assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{what}: {e}");
        }
    }
    match reg.get(format).map(|d| d.check(src, &ctx)) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == ErrorKind::NotApplicable => {}
        Ok(Err(e)) => seen(e),
        Err(e) => panic!("{what}: unknown format: {e}"),
    }
    Outcome { opened, errors, bytes_read }
}

/// Maps every extent (at most [`MAX_EXTENTS`]) and reads the data ones, checking that
/// extents tile the disk; stops at the first error.
fn walk(img: &dyn BlockRead, bytes_read: &mut u64, what: &str) -> diskcast_block::Result<()> {
    let size = img.size();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    for _ in 0..MAX_EXTENTS {
        if off >= size {
            break;
        }
        let e = img.extent_at(off, size - off)?;
        assert!(e.offset == off && e.len > 0 && e.end() <= size, "{what}: extent {e:?} at {off:#x} of {size:#x}");
        let mut at = e.offset;
        while at < e.end() && *bytes_read < READ_BUDGET {
            let n = (e.end() - at).min(u64_from_usize(buf.len())).min(READ_BUDGET - *bytes_read);
            img.read_at(&mut buf[..usize_from_u64(n, "n")?], at)?;
            *bytes_read += n;
            at += n;
        }
        off = e.end();
    }
    Ok(())
}

/// A reproducible xorshift generator for mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// An index in `0..n` (0 when `n` is 0).
    pub fn index(&mut self, n: usize) -> usize {
        // Below `n`, so it fits in usize.
        usize::try_from(self.below(u64_from_usize(n))).unwrap_or(0)
    }
}

/// Values that break parsers: sizes and offsets at the edges.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x1ff,
    0x200,
    0x1000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

/// Mutations of one seed image, aimed at its metadata: `hot` lists byte ranges that
/// hold metadata (headers, tables); most mutations land there, a few anywhere.
#[derive(Debug)]
pub struct Mutator {
    seed: Vec<u8>,
    hot: Vec<(usize, usize)>,
    splice: bool,
}

impl Mutator {
    /// Mutates `seed`, mostly inside the `hot` ranges (clipped to the seed).
    pub fn new(seed: Vec<u8>, hot: &[(usize, usize)]) -> Self {
        let len = seed.len();
        let mut hot: Vec<(usize, usize)> =
            hot.iter().map(|&(a, n)| (a.min(len), a.saturating_add(n).min(len))).filter(|(a, b)| a < b).collect();
        if hot.is_empty() {
            hot.push((0, len.min(4096)));
        }
        Mutator { seed, hot, splice: false }
    }

    /// Also copies spans of the seed over other places (a directory record, an extent
    /// or a cluster number lands where another was) and whole aligned metadata blocks
    /// over others, as tree formats need: their interesting damage is often a valid
    /// structure in the wrong place. Off by default,
    /// so the block fuzzers' seeds keep making the same mutants.
    pub fn splicing(mut self) -> Self {
        self.splice = true;
        self
    }

    /// The seed with one to three mutations from `rng`, and what they were.
    pub fn mutant(&self, rng: &mut Rng) -> (Vec<u8>, String) {
        let mut m = self.seed.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            if m.is_empty() {
                break;
            }
            let at = if rng.below(8) == 0 {
                rng.index(m.len())
            } else {
                let (a, b) = self.hot[rng.index(self.hot.len())];
                a + rng.index(b - a)
            };
            // An earlier truncation may have cut the hot range off.
            let at = at % m.len();
            if self.splice && rng.below(5) == 0 {
                if rng.below(3) == 0 {
                    // A whole metadata block over another (an extent index, a directory, a
                    // FAT sector): shared and cross-linked structures.
                    let bs = 512usize << rng.below(4);
                    let (a, b) = self.hot[rng.index(self.hot.len())];
                    let from = (a + rng.index(b - a)) / bs * bs;
                    let to = at / bs * bs;
                    if from + bs <= m.len() && to + bs <= m.len() {
                        m.copy_within(from..from + bs, to);
                        what.push(format!("copy block of {bs} bytes from {from:#x} to {to:#x}"));
                        continue;
                    }
                }
                let len = (4usize << rng.below(5)).min(m.len() - at);
                let from = rng.index(m.len() - len + 1);
                m.copy_within(from..from + len, at);
                what.push(format!("copy {len} bytes from {from:#x} to {at:#x}"));
                continue;
            }
            match rng.below(6) {
                0 | 1 => {
                    let bit = 1u8 << rng.below(8);
                    m[at] ^= bit;
                    what.push(format!("flip {bit:#x} at {at:#x}"));
                }
                2 => {
                    let v = low_u8(rng.next_u64());
                    m[at] = v;
                    what.push(format!("byte {v:#x} at {at:#x}"));
                }
                3 | 4 => {
                    let width = [2usize, 4, 8][rng.index(3)];
                    let at = at - at % width;
                    let v = INTERESTING[rng.index(INTERESTING.len())];
                    let big = rng.below(2) == 0;
                    let bytes = if big { v.to_be_bytes() } else { v.to_le_bytes() };
                    let bytes = if big { &bytes[8 - width..] } else { &bytes[..width] };
                    let end = (at + width).min(m.len());
                    m[at..end].copy_from_slice(&bytes[..end - at]);
                    what.push(format!("{}{} {v:#x} at {at:#x}", if big { "be" } else { "le" }, width * 8));
                }
                _ => {
                    let len = rng.index(m.len());
                    m.truncate(len);
                    what.push(format!("truncate to {len}"));
                }
            }
        }
        (m, what.join(", "))
    }
}
