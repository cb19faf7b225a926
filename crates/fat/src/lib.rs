//! FAT filesystems: a FAT12/16/32 reader producing a tree, and a FAT16/FAT32 writer
//! planning an image from a tree.
//!
//! Reading ([`FatReader`]): the boot sector's geometry is checked against the disk, the
//! first FAT is read once, directories are parsed with VFAT long names (sequence and
//! checksum checked, else the 8.3 name with its case bits), and each file's cluster chain
//! becomes extents of the disk (adjacent clusters merged), so content is read only when
//! a sink asks. Loops, chains through free or out-of-range clusters, clusters in two
//! chains (cross-links: so all chains together walk at most the volume's clusters), and
//! directories that contain their ancestors are errors, never hangs.
//!
//! Writing ([`FatBuilder`]): see [`writer`]. Specification: Microsoft's "FAT32 File
//! System Specification" (FAT: General Overview of On-Disk Format, 1.03, 2000).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod names;
mod reader;
mod spec;
mod writer;

pub use names::{from_dos, to_dos};
pub use reader::{FatType, Geometry};

use diskcast_block::{BlockRead, Result};
use diskcast_tree::{BuildOptions, BuiltFs, FsBuilder, FsReader, ReadOptions, Tree};
use std::sync::Arc;

/// Reads FAT12, FAT16 and FAT32 filesystems.
#[derive(Debug, Clone, Copy, Default)]
pub struct FatReader;

impl FsReader for FatReader {
    fn name(&self) -> &'static str {
        "fat"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        Ok(diskcast_tree::read_head(disk, 512)?.is_some_and(|b| reader::probe(&b)))
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        reader::read_tree(disk).map(|(t, _)| t).map_err(|e| opts.name_error(e))
    }
}

/// Writes FAT32 (or FAT16 when the volume is too small for FAT32) or FAT16 on request:
/// long names, timestamps, FSInfo with the true free count. Symlinks, devices, fifos,
/// sockets, names FAT cannot spell and names that collide ignoring case are skipped,
/// each with a warning; hard links become copies; a file over 4 GiB - 1 is an error.
#[derive(Debug, Clone, Copy)]
pub struct FatBuilder {
    /// `fat32` or `fat16`.
    pub name: &'static str,
}

impl FatBuilder {
    /// FAT32, falling back to FAT16 below about 33 MiB.
    pub const FAT32: FatBuilder = FatBuilder { name: "fat32" };
    /// FAT16.
    pub const FAT16: FatBuilder = FatBuilder { name: "fat16" };
}

impl FsBuilder for FatBuilder {
    fn name(&self) -> &'static str {
        self.name
    }

    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
        let want = if self.name == "fat16" || opts.variant.as_deref() == Some("fat16") {
            writer::Want::Fat16
        } else {
            writer::Want::Fat32
        };
        writer::plan(tree, opts, want)
    }
}
