//! Optical discs read out of any virtual disk: ISO 9660 (ECMA-119) with Joliet and Rock
//! Ridge (SUSP/RRIP 1.12, zisofs), the El Torito boot catalog, hybrid MBR/GPT system
//! areas, and UDF (ECMA-167, UDF 1.02 to 2.60). Writes ISO 9660 discs with Rock Ridge,
//! Joliet, El Torito and, optionally, a UDF 1.02 bridge over the same file data.
//!
//! The reader sits on [`BlockRead`], so an ISO inside a qcow2 or a VMDK reads the same as a
//! plain `.iso` file. File content stays a reference into the disc: plain files are
//! [`diskcast_tree::Content::Blocks`] extents, zisofs files a positional decompressing
//! reader. Every field read from the disc is bounds-checked; a hostile disc gets an error
//! naming the field, never a panic or a loop.
//!
//! The `iso9660` crate on crates.io is read-only and has no Joliet, Rock Ridge or El
//! Torito, so this crate is our own (docs/crates.md).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod dir;
pub mod eltorito;
pub mod hybrid;
mod read;
mod spec;
mod susp;
mod udf;
mod udf_write;
mod volume;
pub mod write;
mod zisofs;

pub use read::{TreeKind, available_trees};
pub use volume::{Volumes, read_volumes};

use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{FsReader, ReadOptions, Tree};
use std::sync::Arc;

/// The sector size of every ISO 9660 disc this crate reads (ECMA-119 allows others in
/// theory; no disc in use has them).
pub const SECTOR: u64 = 2048;

/// Longest symlink target read, in bytes: Linux's PATH_MAX (4096) less its NUL. Linux
/// fails `readlink` on longer Rock Ridge (a page less one byte) and UDF targets, so no disc
/// holds a longer one that works; the cap keeps hostile continuation areas and file
/// entries from becoming targets of megabytes each.
pub(crate) const MAX_SYMLINK_TARGET: usize = 4095;

/// Reads ISO 9660 discs (and UDF bridge discs) as trees.
#[derive(Debug, Default, Clone, Copy)]
pub struct Iso9660Reader;

impl FsReader for Iso9660Reader {
    fn name(&self) -> &'static str {
        "iso9660"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        Ok(volume::has_iso_magic(disk)? || udf::probe(disk)?)
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        read::read_tree(disk, opts).map_err(|e| opts.name_error(e))
    }
}

/// Reads `len` bytes at `offset` of `disk`, refusing ranges past its end with an error
/// that says what was being read.
pub(crate) fn read_bytes(disk: &dyn BlockRead, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    diskcast_block::range_end(offset, len, disk.size())
        .map_err(|_| Error::out_of_bounds(format!("{what} runs past the end of the disc")).with_offset(offset))?;
    let n = usize::try_from(len).map_err(|_| Error::out_of_bounds(format!("{what} is too large")))?;
    let mut buf = vec![0u8; n];
    disk.read_at(&mut buf, offset)?;
    Ok(buf)
}

/// Byte ranges of the disc that belong to one owner each while a tree is read: directory
/// extents, Rock Ridge continuation areas, UDF allocation extent descriptors. A hostile
/// disc that points many owners at the same bytes (a directory inside another's extent,
/// one continuation area for every record) would otherwise make work and memory grow with
/// the square of what it stores; real discs never share these.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    /// Start -> (end, what).
    taken: std::collections::BTreeMap<u64, (u64, &'static str)>,
}

impl Regions {
    /// Takes `len` bytes at `start` for `what` (named by the structure at `at`), or says
    /// which earlier region they overlap.
    pub(crate) fn claim(&mut self, start: u64, len: u64, what: &'static str, at: u64) -> Result<()> {
        let end = start.saturating_add(len);
        if len == 0 {
            return Ok(());
        }
        let before = self.taken.range(..end).next_back();
        if let Some((&s, &(e, other))) = before
            && e > start
        {
            return Err(Error::corrupt(format!(
                "{what} at byte {start} ({len} bytes) overlaps the {other} at byte {s}: a disc never shares them"
            ))
            .with_offset(at));
        }
        self.taken.insert(start, (end, what));
        Ok(())
    }
}

pub(crate) use diskcast_tree::days_from_civil;
