//! A counting global allocator for fuzz test binaries: the bytes live now and the peak
//! since the last [`reset_peak`], so a mutant whose parser asks for far more memory than
//! its input explains fails with its seed instead of taking the machine down.
//!
//! A test binary opts in with
//! `#[global_allocator] static A: diskcast_testkit::alloc::Counting = Counting;`
//! ([`installed`] tells whether it did). Above [`set_ceiling`]'s hard ceiling an
//! allocation fails (the process aborts, as on any allocation failure) after printing
//! the label set by [`set_label`], so even a runaway allocation names its mutant.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// 0: no ceiling.
static CEILING: AtomicUsize = AtomicUsize::new(0);
static LABEL: Mutex<String> = Mutex::new(String::new());
/// Set while the over-ceiling message is written, so it is written once.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// [`System`] with byte counts (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

impl Counting {
    /// Counts `size` more bytes; false (nothing counted) when that passes the ceiling.
    fn take(size: usize) -> bool {
        let now = CURRENT.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        let ceiling = CEILING.load(Ordering::Relaxed);
        if ceiling != 0 && now > ceiling {
            CURRENT.fetch_sub(size, Ordering::Relaxed);
            over_ceiling(size, ceiling);
            return false;
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        true
    }

    fn give(size: usize) {
        CURRENT.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's layout and pointer
// unchanged, so `System`'s guarantees hold; the counters are atomics and never touch the
// memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::take(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size),
        // which is `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            Self::give(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::take(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            Self::give(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator (so by `System`) for `layout`.
        unsafe { System.dealloc(ptr, layout) };
        Self::give(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !Self::take(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` was returned by `System` for `layout` and the caller upholds
        // `realloc`'s contract for `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                Self::give(new_size - old);
            }
        } else if new_size < old {
            Self::give(old - new_size);
        }
        p
    }
}

/// Writes which label was running when an allocation passed the ceiling. Called from
/// inside the allocator, so it formats into a stack buffer and writes to the unbuffered
/// stderr; `try_lock` so an allocation made while the label is being set cannot
/// deadlock.
fn over_ceiling(size: usize, ceiling: usize) {
    if REPORTING.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut buf = [0u8; 160];
    let mut w = &mut buf[..];
    let _ = write!(w, "\nfuzz: an allocation of {size} bytes passes the {ceiling}-byte ceiling while running: ");
    let used = 160 - w.len();
    let mut err = std::io::stderr();
    let _ = err.write_all(&buf[..used]);
    if let Ok(label) = LABEL.try_lock() {
        let _ = err.write_all(label.as_bytes());
    }
    let _ = err.write_all(b"\n");
    REPORTING.store(false, Ordering::Relaxed);
}

/// True when the running binary counts with [`Counting`].
pub fn installed() -> bool {
    let before = CURRENT.load(Ordering::Relaxed);
    let probe = std::hint::black_box(vec![0u8; 4096]);
    let during = CURRENT.load(Ordering::Relaxed);
    drop(probe);
    during != before
}

/// Bytes allocated and not yet freed, by every thread.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak at the bytes live now, and returns them.
pub fn reset_peak() -> usize {
    let now = current();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The most bytes that may be live at once (0: no limit): an allocation beyond it prints
/// the label and fails, which aborts the process.
pub fn set_ceiling(bytes: usize) {
    CEILING.store(bytes, Ordering::Relaxed);
}

/// What is running, for the over-ceiling message.
pub fn set_label(label: &str) {
    let mut l = LABEL.lock().unwrap_or_else(|e| e.into_inner());
    l.clear();
    l.push_str(label);
}
