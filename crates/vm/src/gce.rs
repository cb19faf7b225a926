//! Compute Engine's image import format: a gzip'd tar holding one file, `disk.raw`, the
//! raw disk, whose size is a whole number of GiB. Google's "Manually import boot disks"
//! guide makes it with `tar --format=oldgnu -Sczf image.tar.gz disk.raw`: an old GNU tar
//! (type `S` sparse members), so the holes of the disk take no room in the archive.
//!
//! Written in one pass from any [`BlockRead`]: the allocation map gives the sparse map
//! (which the header needs before the data), then the data runs are read in order and
//! gzipped on every core ([`diskcast_oci::pargz`]). No raw intermediate file.

use diskcast_block::progress::Progress;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::u64_from_usize;
use diskcast_tar::{MAX_SPARSE_RUNS, MemberWriter, SparseRun};
use diskcast_tree::{Meta, Timestamp};
use std::io::{Read, Write};

/// The one member's name, as Compute Engine requires it.
pub const DISK_NAME: &str = "disk.raw";

/// Longest extent asked of the image at once when mapping it.
const MAP_STEP: u64 = 1 << 30;

/// Tar's block: GNU tar stores each sparse run as whole blocks.
const BLOCK: u64 = 512;

/// gzip level: GNU gzip's default, which `tar -z` uses.
const GZIP_LEVEL: u32 = 6;

/// What [`write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GceReport {
    /// `disk.raw`'s size: the image's, rounded up to a GiB.
    pub disk_size: u64,
    /// Bytes stored (the data runs).
    pub stored: u64,
    /// Data runs in the sparse map.
    pub runs: usize,
}

/// The data runs of `image` (everything that does not read as zeros without looking),
/// adjacent runs merged. More than [`MAX_SPARSE_RUNS`] (the most a tar reader here
/// accepts) is an error: convert the image to raw first and retry.
pub fn data_runs(image: &dyn BlockRead) -> Result<Vec<SparseRun>> {
    let size = image.size();
    let mut runs: Vec<SparseRun> = Vec::new();
    let mut at = 0u64;
    while at < size {
        let e = image.extent_at(at, MAP_STEP.min(size - at))?;
        if e.len == 0 || e.offset != at {
            return Err(Error::invalid(format!("the image's map does not advance at offset {at}")));
        }
        if !e.alloc.reads_zero() {
            // GNU tar reads each run's bytes as whole 512-byte blocks: runs are widened
            // to block boundaries (the extra bytes are zeros or data, read as they are).
            let start = e.offset / BLOCK * BLOCK;
            let end = e.end().next_multiple_of(BLOCK).min(size);
            match runs.last_mut() {
                Some(last) if last.offset + last.len >= start => last.len = end - last.offset,
                _ => {
                    if runs.len() == MAX_SPARSE_RUNS {
                        return Err(Error::unsupported(format!(
                            "the disk has more than {MAX_SPARSE_RUNS} data runs (MAX_SPARSE_RUNS)"
                        )));
                    }
                    runs.push(SparseRun { offset: start, len: end - start });
                }
            }
        }
        at = e.end();
    }
    Ok(runs)
}

/// Reads the runs' bytes from the image one after another.
struct RunsReader<'a> {
    image: &'a dyn BlockRead,
    runs: &'a [SparseRun],
    run: usize,
    done: u64,
}

impl Read for RunsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(r) = self.runs.get(self.run) {
            if self.done < r.len {
                let n = diskcast_layout::within(r.len - self.done, buf.len());
                self.image.read_at(&mut buf[..n], r.offset + self.done).map_err(std::io::Error::other)?;
                self.done += u64_from_usize(n);
                return Ok(n);
            }
            self.run += 1;
            self.done = 0;
        }
        Ok(0)
    }
}

/// Writes `image` as Compute Engine's `disk.raw` tar.gz into `out`: the size rounded up
/// to a whole GiB (the tail reads as zeros: a hole), member mode 0644, owned by root,
/// dated `mtime`, gzipped on `threads` cores. `progress` counts the data bytes.
pub fn write(
    out: &mut dyn Write,
    image: &dyn BlockRead,
    mtime: u64,
    threads: usize,
    progress: &dyn Progress,
) -> Result<GceReport> {
    let disk_size = image.size().next_multiple_of(crate::profile::GIB).max(crate::profile::GIB);
    let runs = data_runs(image)?;
    let stored: u64 = runs.iter().map(|r| r.len).sum();
    progress.start(stored);
    let meta = Meta::new(0o644, Timestamp::from_secs(i64::try_from(mtime).unwrap_or(i64::MAX)));
    let mut gz = diskcast_oci::pargz::ParGzWriter::new(out, GZIP_LEVEL, threads);
    let mut data = RunsReader { image, runs: &runs, run: 0, done: 0 };
    let mut w = MemberWriter::new(&mut gz, progress);
    w.gnu_sparse(DISK_NAME.as_bytes(), &meta, disk_size, &runs, &mut data)?;
    w.finish()?;
    gz.finish().map_err(|e| Error::io("cannot write the gzip stream", e))?;
    progress.finish();
    Ok(GceReport { disk_size, stored, runs: runs.len() })
}
