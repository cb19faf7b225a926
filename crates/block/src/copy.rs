//! The parallel, sparse-aware copy engine behind `convert`.
//!
//! The source's allocation map (backing files resolved) is cut into work items aligned to
//! the target's granularity. Ranges that read as zero are never read, and never written
//! when the target already reads zero there. Data items are read, scanned for all-zero
//! blocks (`-S`), encoded (compressed) and written by `threads` workers at once. For
//! targets that need sequential order, encoding still runs in parallel and only the
//! final write waits its turn. At most `threads` items are in flight, so memory stays
//! near `threads × chunk_size` whatever the image size.

use crate::progress::Progress;
use crate::{BlockRead, BlockWrite, Encoded, Error, Extent, Result, WriteOrder, resolved_extent};
use diskcast_layout::u64_from_usize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Default work item size: large enough for efficient I/O and compression batches,
/// small enough that `threads` of them in flight cost little memory.
pub const DEFAULT_CHUNK: u64 = 2 << 20;
/// Default `-S`: like qemu-img, a 4 KiB run of zeros becomes a hole.
pub const DEFAULT_MIN_SPARSE: u64 = 4096;
/// Largest work item: caps memory per worker whatever a target's granularity says.
const MAX_CHUNK: u64 = 64 << 20;

/// How to copy. No `Default`: the thread count is the caller's (the CLI's `-j`), so
/// [`CopyOptions::new`] takes it.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Worker threads (at least 1).
    pub threads: usize,
    /// `Some(n)`: zero runs of `n` bytes (rounded up to the target's granularity) are not
    /// written. `None` (`-S 0`): every byte is written, the output is fully allocated.
    pub min_sparse: Option<u64>,
    /// Work item size in bytes (rounded up to the target's granularity).
    pub chunk_size: u64,
    /// Set by a signal handler to stop the copy with [`crate::ErrorKind::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// Leave alone what the source leaves to its backing file: ranges it reports as
    /// [`Alloc::Backing`](crate::Alloc::Backing) are neither read nor written, because the
    /// target already reads that way there (a [`crate::delta::Delta`]: `commit`, `rebase`,
    /// `convert -B`). Off, backing chains are flattened into the target.
    pub skip_backing: bool,
    /// Copy offloading (`convert -C`): data ranges the source stores as they are in a
    /// local file are copied by the kernel ([`BlockWrite::copy_range`]) as a whole, zero
    /// blocks inside them included (as qemu-img, which skips its zero detection there).
    /// The first range that cannot be offloaded turns it off for the rest of the copy.
    pub offload: bool,
}

impl CopyOptions {
    /// `threads` workers, `-S 4K`, 2 MiB items, no cancel flag.
    pub fn new(threads: usize) -> Self {
        CopyOptions {
            threads,
            min_sparse: Some(DEFAULT_MIN_SPARSE),
            chunk_size: DEFAULT_CHUNK,
            cancel: None,
            skip_backing: false,
            offload: false,
        }
    }
}

/// Starts a worker named `name` in scope `s`. The name shows in `top -H` and in
/// `/proc/PID/task/*/comm`, where the tests count the workers `-j` allows; naming is
/// best effort (without /proc the worker runs unnamed).
pub fn spawn_worker<'scope, F>(s: &'scope std::thread::Scope<'scope, '_>, name: &'static str, f: F)
where
    F: FnOnce() + Send + 'scope,
{
    s.spawn(move || {
        let _ = std::fs::write("/proc/thread-self/comm", name);
        f()
    });
}

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct CopyStats {
    /// Bytes read from the source.
    pub read: u64,
    /// Data bytes handed to the target.
    pub written: u64,
    /// Zero bytes written explicitly (only for targets that do not start zeroed, or `-S 0`).
    pub zeroed: u64,
    /// Bytes neither read nor written because they read as zero.
    pub skipped: u64,
}

/// One unit of work, aligned to the target's granularity (except at the disk's end).
#[derive(Debug, Clone, Copy)]
struct Item {
    offset: u64,
    len: u64,
    /// Data to read and write, or a zero range to write as zeros.
    data: bool,
    /// Position in write order (sequential targets).
    seq: u64,
}

/// Walks the source's allocation map and hands out items in offset order.
struct Planner<'a> {
    src: &'a dyn BlockRead,
    size: u64,
    granule: u64,
    chunk: u64,
    allocate_all: bool,
    zero_initialized: bool,
    /// [`CopyOptions::skip_backing`].
    skip_backing: bool,
    pos: u64,
    seq: u64,
    /// Last extent looked up, reused while the cursor is still inside it.
    cached: Option<Extent>,
    skipped: u64,
}

impl Planner<'_> {
    fn extent(&mut self, offset: u64) -> Result<Extent> {
        if let Some(e) = self.cached
            && e.offset <= offset
            && offset < e.end()
        {
            return Ok(Extent { offset, len: e.end() - offset, alloc: e.alloc });
        }
        let e = if self.skip_backing {
            self.src.extent_at(offset, self.size - offset)?
        } else {
            resolved_extent(self.src, offset, self.size - offset)?
        };
        if e.len == 0 || e.offset != offset {
            return Err(Error::corrupt("driver returned an empty or misplaced extent").with_offset(offset));
        }
        self.cached = Some(e);
        Ok(e)
    }

    /// A range the target already holds ([`CopyOptions::skip_backing`]).
    fn skips(&self, e: &Extent) -> bool {
        self.skip_backing && e.alloc == crate::Alloc::Backing
    }

    fn align_down(&self, v: u64) -> u64 {
        v - v % self.granule
    }

    fn align_up(&self, v: u64) -> u64 {
        v.div_ceil(self.granule).saturating_mul(self.granule).min(self.size)
    }

    /// The next item, or `None` at the end. Returns zero runs it skipped in `self.skipped`.
    fn next(&mut self) -> Result<Option<Item>> {
        while self.pos < self.size {
            let pos = self.pos;
            let cap = pos.saturating_add(self.chunk).min(self.size);
            if self.allocate_all {
                self.pos = cap;
                return Ok(Some(self.item(pos, cap - pos, true)));
            }
            let ext = self.extent(pos)?;
            if self.skips(&ext) {
                // Whole granules the target already holds: left alone.
                let keep_end = if ext.end() >= self.size { self.size } else { self.align_down(ext.end()) };
                if keep_end > pos {
                    self.pos = keep_end;
                    self.skipped += keep_end - pos;
                    continue;
                }
            }
            if ext.alloc.reads_zero() {
                // Whole granules that read as zero need no reading.
                let zero_end = if ext.end() >= self.size { self.size } else { self.align_down(ext.end()) };
                if zero_end > pos {
                    self.pos = zero_end;
                    if self.zero_initialized {
                        self.skipped += zero_end - pos;
                        continue;
                    }
                    return Ok(Some(self.item(pos, zero_end - pos, false)));
                }
            }
            // A data item: extend over data and over zero runs shorter than a granule.
            let mut end = self.align_up(pos + 1).min(cap);
            while end < cap {
                let e = self.extent(end)?;
                let whole_granule = e.end() >= self.size || self.align_down(e.end()) > end;
                if whole_granule && (e.alloc.reads_zero() || self.skips(&e)) {
                    break;
                }
                end = self.align_up(e.end()).min(cap).max(end + 1);
            }
            self.pos = end;
            return Ok(Some(self.item(pos, end - pos, true)));
        }
        Ok(None)
    }

    fn item(&mut self, offset: u64, len: u64, data: bool) -> Item {
        let seq = self.seq;
        self.seq += 1;
        Item { offset, len, data, seq }
    }
}

/// Whose turn it is to write, for sequential targets.
#[derive(Default)]
struct Turn {
    next: u64,
    failed: bool,
}

/// Copies every guest byte of `src` into `dst` (backing chains flattened).
pub fn copy(
    src: &dyn BlockRead,
    dst: &dyn BlockWrite,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyStats> {
    let size = src.size();
    if dst.size() < size {
        return Err(Error::argument(format!("target is {} bytes, smaller than the {size}-byte source", dst.size())));
    }
    let granule = dst.granularity().max(1);
    let chunk = opts.chunk_size.max(granule).div_ceil(granule).saturating_mul(granule).min(MAX_CHUNK.max(granule));
    let sparse_block = opts.min_sparse.map(|s| s.max(1).div_ceil(granule).saturating_mul(granule));
    let sequential = dst.order() == WriteOrder::Sequential;
    let planner = Mutex::new(Planner {
        src,
        size,
        granule,
        chunk,
        allocate_all: opts.min_sparse.is_none(),
        zero_initialized: dst.zero_initialized(),
        skip_backing: opts.skip_backing,
        pos: 0,
        seq: 0,
        cached: None,
        skipped: 0,
    });
    let turn = (Mutex::new(Turn::default()), Condvar::new());
    let offload = AtomicBool::new(opts.offload && !sequential);
    let stats = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]; // read, written, zeroed
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let cancelled = || opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    progress.start(size);

    let worker = || -> Result<()> {
        loop {
            if cancelled() {
                return Err(Error::cancelled());
            }
            if lock(&turn.0).failed {
                return Ok(());
            }
            let item = {
                let mut p = lock(&planner);
                let before = p.skipped;
                let item = p.next()?;
                progress.advance(p.skipped - before);
                item
            };
            let Some(item) = item else { return Ok(()) };
            if item.data && offload.load(Ordering::Relaxed) {
                if offloaded(src, dst, item)? {
                    stats[1].fetch_add(item.len, Ordering::Relaxed);
                    progress.advance(item.len);
                    continue;
                }
                offload.store(false, Ordering::Relaxed);
            }
            let writes = prepare(src, dst, item, sparse_block, &stats)?;
            if sequential {
                let (m, cv) = &turn;
                let mut t =
                    cv.wait_while(lock(m), |t| t.next != item.seq && !t.failed).unwrap_or_else(|p| p.into_inner());
                if t.failed {
                    return Ok(());
                }
                let result = apply(dst, writes, &stats);
                t.next += 1;
                drop(t);
                cv.notify_all();
                result?;
            } else {
                apply(dst, writes, &stats)?;
            }
            progress.advance(item.len);
        }
    };

    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            spawn_worker(s, "dc-copy", || {
                if let Err(e) = worker() {
                    let mut first = lock(&first_error);
                    if first.is_none() {
                        *first = Some(e);
                    }
                    lock(&turn.0).failed = true;
                    turn.1.notify_all();
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    let p = lock(&planner);
    Ok(CopyStats {
        read: stats[0].load(Ordering::Relaxed),
        written: stats[1].load(Ordering::Relaxed),
        zeroed: stats[2].load(Ordering::Relaxed),
        skipped: p.skipped,
    })
}

/// A write prepared by a worker, applied in order for sequential targets.
enum Write {
    Data(Encoded),
    Zeroes(u64, u64),
}

/// Copy offloading: true when the kernel copied the data item from the source's file
/// into the target; false when either cannot (the item is then read and written).
fn offloaded(src: &dyn BlockRead, dst: &dyn BlockWrite, item: Item) -> Result<bool> {
    match src.host_range(item.offset, item.len) {
        Some((file, host)) => dst.copy_range(file, host, item.offset, item.len),
        None => Ok(false),
    }
}

/// Reads an item, drops all-zero blocks, and encodes the data runs (the parallel part).
fn prepare(
    src: &dyn BlockRead,
    dst: &dyn BlockWrite,
    item: Item,
    sparse_block: Option<u64>,
    stats: &[AtomicU64; 3],
) -> Result<Vec<Write>> {
    if !item.data {
        return Ok(vec![Write::Zeroes(item.offset, item.len)]);
    }
    let len = usize::try_from(item.len).map_err(|_| Error::argument("work item too large"))?;
    let mut buf = vec![0u8; len];
    src.read_at(&mut buf, item.offset)?;
    stats[0].fetch_add(item.len, Ordering::Relaxed);
    let Some(block) = sparse_block else {
        return Ok(vec![Write::Data(dst.encode(item.offset, buf)?)]);
    };
    // Runs of [start, end) that hold data, in buffer coordinates; blocks are aligned to
    // absolute offsets so the result does not depend on how items were cut.
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0usize;
    while pos < len {
        let abs = item.offset + u64_from_usize(pos);
        let next = usize::try_from((abs / block + 1) * block - item.offset).unwrap_or(len).min(len);
        let zero = crate::io::is_zero(&buf[pos..next]);
        match runs.last_mut() {
            Some(last) if last.2 != zero => last.1 = next,
            _ => runs.push((pos, next, !zero)),
        }
        pos = next;
    }
    if let [(0, end, true)] = runs.as_slice()
        && *end == len
    {
        return Ok(vec![Write::Data(dst.encode(item.offset, buf)?)]);
    }
    let mut writes = Vec::new();
    for (start, end, data) in runs {
        let off = item.offset + u64_from_usize(start);
        if data {
            writes.push(Write::Data(dst.encode(off, buf[start..end].to_vec())?));
        } else if !dst.zero_initialized() {
            writes.push(Write::Zeroes(off, u64_from_usize(end - start)));
        }
    }
    Ok(writes)
}

fn apply(dst: &dyn BlockWrite, writes: Vec<Write>, stats: &[AtomicU64; 3]) -> Result<()> {
    for w in writes {
        match w {
            Write::Data(e) => {
                stats[1].fetch_add(encoded_len(&e), Ordering::Relaxed);
                dst.write_encoded(e)?;
            }
            Write::Zeroes(off, len) => {
                stats[2].fetch_add(len, Ordering::Relaxed);
                dst.write_zeroes(off, len)?;
            }
        }
    }
    Ok(())
}

fn encoded_len(e: &Encoded) -> u64 {
    match e {
        Encoded::Plain { data, .. } => u64_from_usize(data.len()),
        Encoded::Units(units) => units.iter().map(|u| u.len).sum(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Iterates the allocation map of `image` as maximal extents (adjacent extents of the same
/// kind merged), with backing files resolved when `resolve_backing` is set.
pub fn extents(image: &dyn BlockRead, resolve_backing: bool) -> impl Iterator<Item = Result<Extent>> + '_ {
    let size = image.size();
    let mut pos = 0u64;
    let mut pending: Option<Extent> = None;
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if done {
                return None;
            }
            if pos >= size {
                done = true;
                return pending.take().map(Ok);
            }
            let e = if resolve_backing {
                resolved_extent(image, pos, size - pos)
            } else {
                image.extent_at(pos, size - pos)
            };
            let e = match e {
                Ok(e) if e.len > 0 && e.offset == pos => e,
                Ok(_) => {
                    done = true;
                    return Some(Err(Error::corrupt("driver returned an empty or misplaced extent").with_offset(pos)));
                }
                Err(err) => {
                    done = true;
                    return Some(Err(err));
                }
            };
            pos = e.end();
            match &mut pending {
                Some(p) if p.alloc == e.alloc => p.len += e.len,
                _ => {
                    if let Some(prev) = pending.replace(e) {
                        return Some(Ok(prev));
                    }
                }
            }
        }
    })
}

/// Where two images first differ, comparing guest content only (allocation ignored).
/// Past the end of the smaller image, the larger must read as zeros. Once `cancel` is set
/// (Ctrl-C) each worker stops before its next chunk with [`Error::cancelled`].
pub fn first_difference(
    a: &dyn BlockRead,
    b: &dyn BlockRead,
    threads: usize,
    progress: &dyn Progress,
    cancel: Option<&AtomicBool>,
) -> Result<Option<u64>> {
    let common = a.size().min(b.size());
    let total = a.size().max(b.size());
    progress.start(total);
    let chunk = DEFAULT_CHUNK;
    let next = AtomicU64::new(0);
    let found = AtomicU64::new(u64::MAX);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    // Each returns the first difference in the range it looked at, and that range's length.
    let region = |off: u64, len: u64| -> Result<(Option<u64>, u64)> {
        let (ea, eb) = (resolved_extent(a, off, len)?, resolved_extent(b, off, len)?);
        let n = ea.len.min(eb.len);
        if ea.alloc.reads_zero() && eb.alloc.reads_zero() {
            return Ok((None, n));
        }
        let mut ba = vec![0u8; usize::try_from(n).unwrap_or(0)];
        let mut bb = vec![0u8; ba.len()];
        if !ea.alloc.reads_zero() {
            a.read_at(&mut ba, off)?;
        }
        if !eb.alloc.reads_zero() {
            b.read_at(&mut bb, off)?;
        }
        // Slice equality is a memcmp (many bytes a cycle); the byte loop runs only to find
        // where a difference is.
        let first = if ba == bb { None } else { ba.iter().zip(&bb).position(|(x, y)| x != y) };
        Ok((first.map(|i| off + u64_from_usize(i)), n))
    };
    let tail = |img: &dyn BlockRead, off: u64, len: u64| -> Result<(Option<u64>, u64)> {
        let e = resolved_extent(img, off, len)?;
        if e.alloc.reads_zero() {
            return Ok((None, e.len));
        }
        let mut buf = vec![0u8; usize::try_from(e.len).unwrap_or(0)];
        img.read_at(&mut buf, off)?;
        let first = if crate::io::is_zero(&buf) { None } else { buf.iter().position(|&x| x != 0) };
        Ok((first.map(|i| off + u64_from_usize(i)), e.len))
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            spawn_worker(s, "dc-compare", || {
                loop {
                    let start = next.fetch_add(chunk, Ordering::Relaxed);
                    if start >= total || start >= found.load(Ordering::Relaxed) {
                        return;
                    }
                    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                        lock(&first_error).get_or_insert_with(Error::cancelled);
                        found.store(0, Ordering::Relaxed);
                        return;
                    }
                    let end = (start + chunk).min(total);
                    let mut off = start;
                    while off < end {
                        let r = if off < common {
                            region(off, end.min(common) - off)
                        } else {
                            tail(if a.size() > b.size() { a } else { b }, off, end - off)
                        };
                        match r {
                            Ok((Some(d), _)) => {
                                found.fetch_min(d, Ordering::Relaxed);
                                return;
                            }
                            Ok((None, step)) => off += step.max(1),
                            Err(e) => {
                                lock(&first_error).get_or_insert(e);
                                found.store(0, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                    progress.advance(end - start);
                }
            });
        }
    });
    progress.finish();
    if let Some(e) = lock(&first_error).take() {
        return Err(e);
    }
    let f = found.load(Ordering::Relaxed);
    Ok((f != u64::MAX).then_some(f))
}
