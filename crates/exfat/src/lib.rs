//! exFAT: a reader producing a tree and a writer planning an image from a tree.
//!
//! Specification: Microsoft's "exFAT File System Specification" (2019, the public
//! version of revision 1.00). Reading ([`ExfatReader`]) checks the boot region's
//! checksum and geometry against the disk, loads the FAT and the allocation bitmap, and
//! turns every file into extents of the disk (contiguous NoFatChain runs or FAT chains),
//! so content is read only when a sink asks; loops, cross-linked or free clusters and
//! malformed entry sets are errors, never hangs. Writing ([`ExfatBuilder`]): see
//! [`writer`].
#![forbid(unsafe_code)]

mod reader;
mod spec;
mod writer;

pub use reader::Geometry;

use diskcast_block::{BlockRead, Result};
use diskcast_tree::{BuildOptions, BuiltFs, FsBuilder, FsReader, ReadOptions, Tree};
use std::sync::Arc;

/// Reads exFAT filesystems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExfatReader;

impl FsReader for ExfatReader {
    fn name(&self) -> &'static str {
        "exfat"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        if disk.size() < 512 {
            return Ok(false);
        }
        let mut b = vec![0u8; 512];
        disk.read_at(&mut b, 0)?;
        Ok(reader::probe(&b))
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        let label = opts.label.clone();
        reader::read_tree(disk).map(|(t, _)| t).map_err(|e| if label.is_empty() { e } else { e.with_file(&label) })
    }
}

/// Writes exFAT: one FAT, contiguous NoFatChain files (any size, over 4 GiB too), long
/// Unicode names, timestamps in UTC with 10 ms precision. Symlinks, devices, fifos,
/// sockets, names exFAT cannot spell and names that collide ignoring case are skipped,
/// each with a warning; hard links become copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExfatBuilder;

impl FsBuilder for ExfatBuilder {
    fn name(&self) -> &'static str {
        "exfat"
    }

    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
        writer::plan(tree, opts)
    }
}
