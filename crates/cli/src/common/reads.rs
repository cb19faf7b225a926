//! How `convert` and `commit` read their source when qemu-img's flags ask: `-r RATE` paces the reads,
//! `--salvage` turns read errors into zeros with a warning. Both are read filters over the
//! source image, so the copy engine and every output format are unchanged.

use diskcast_block::filter::ReadFilter;
use diskcast_block::{Alloc, BlockRead, ErrorKind, Extent, Result};
use diskcast_layout::u64_from_usize;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The unit `--salvage` retries a failed read in, and zeroes when it still fails: qemu's
/// sector, so as little as possible is lost.
const SALVAGE_UNIT: u64 = 512;

/// `-r RATE`: reads paced so the copy moves at most `rate` bytes per second on average
/// since it started, whatever the number of threads.
#[derive(Debug)]
pub struct RateLimited {
    rate: u64,
    start: Instant,
    done: Mutex<u64>,
}

impl RateLimited {
    pub fn new(rate: u64) -> Self {
        RateLimited { rate: rate.max(1), start: Instant::now(), done: Mutex::new(0) }
    }
}

impl ReadFilter for RateLimited {
    fn read_at(&self, inner: &dyn BlockRead, buf: &mut [u8], offset: u64) -> Result<()> {
        inner.read_at(buf, offset)?;
        let total = {
            let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            *done = done.saturating_add(u64_from_usize(buf.len()));
            *done
        };
        // When the bytes read so far are due at the rate given; sleep until then.
        let nanos = u128::from(total) * 1_000_000_000 / u128::from(self.rate);
        let due = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        if let Some(wait) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(wait);
        }
        Ok(())
    }
}

/// `--salvage`: a read that fails is retried sector by sector; sectors that still fail
/// read as zeros, and each failed range is reported once on stderr. An allocation query
/// that fails makes its sector data to read (and so to salvage).
#[derive(Debug)]
pub struct Salvage {
    name: PathBuf,
}

impl Salvage {
    pub fn new(name: PathBuf) -> Self {
        Salvage { name }
    }

    fn warn(&self, offset: u64, len: u64, e: &diskcast_block::Error) {
        eprintln!(
            "diskcast: warning: {}: cannot read {len} bytes at offset {offset} ({e}); they are written as zeros \
             (--salvage)",
            self.name.display()
        );
    }
}

/// Errors `--salvage` turns into zeros: everything but an interrupted copy or a request
/// outside the disk (the engine's own mistake, not the image's).
fn salvageable(e: &diskcast_block::Error) -> bool {
    !matches!(e.kind(), ErrorKind::Cancelled | ErrorKind::InvalidArgument)
}

impl ReadFilter for Salvage {
    fn read_at(&self, inner: &dyn BlockRead, buf: &mut [u8], offset: u64) -> Result<()> {
        match inner.read_at(buf, offset) {
            Err(e) if salvageable(&e) => {}
            other => return other,
        }
        let mut failed: Option<(u64, u64, diskcast_block::Error)> = None; // a run of failed sectors
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + u64_from_usize(pos);
            let unit = SALVAGE_UNIT - at % SALVAGE_UNIT;
            let end = buf.len().min(pos.saturating_add(usize::try_from(unit).unwrap_or(usize::MAX)));
            let piece = &mut buf[pos..end];
            match inner.read_at(piece, at) {
                Ok(()) => {
                    if let Some((start, len, e)) = failed.take() {
                        self.warn(start, len, &e);
                    }
                }
                Err(e) if salvageable(&e) => {
                    piece.fill(0);
                    let n = u64_from_usize(piece.len());
                    failed = Some(match failed.take() {
                        Some((start, len, first)) => (start, len + n, first),
                        None => (at, n, e),
                    });
                }
                Err(e) => return Err(e),
            }
            pos = end;
        }
        if let Some((start, len, e)) = failed {
            self.warn(start, len, &e);
        }
        Ok(())
    }

    fn extent_at(&self, inner: &dyn BlockRead, offset: u64, max_len: u64) -> Result<Extent> {
        match inner.extent_at(offset, max_len) {
            Err(e) if salvageable(&e) && offset < inner.size() => {
                let len = (SALVAGE_UNIT - offset % SALVAGE_UNIT).min(max_len).min(inner.size() - offset).max(1);
                Ok(Extent { offset, len, alloc: Alloc::Data })
            }
            other => other,
        }
    }
}
