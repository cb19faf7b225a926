//! squashfs 4.0, read only: a [`FsReader`] that turns a squashfs image (a file, or a
//! partition of any disk image) into a [`Tree`] whose files decompress block by block
//! when a sink reads them.
//!
//! Layout: the kernel's `Documentation/filesystems/squashfs.rst` and squashfs-tools'
//! `squashfs_fs.h` (superblock, metadata blocks, inode types 1-14, directory headers,
//! fragment, id and xattr tables). docs/squashfs.md says what is read, the caps, and what
//! is refused.
//!
//! Every value read from the image is hostile: the superblock's tables must lie in order
//! inside the image, metadata references must point at a block that was read, every
//! block decompresses into a buffer of its known bound (8 KiB metadata, the block size
//! for data), all metadata together within [`table::METADATA_RATIO`] of the bytes read,
//! all data within [`file::DATA_RATIO`] of the image, directory listings together within
//! the directory table, and a directory reached twice is a loop.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod compress;
mod file;
mod read;
mod table;

pub use compress::Compressor;
pub use file::{DATA_RATIO, DATA_SLACK};
pub use table::{METADATA_RATIO, METADATA_SLACK};

use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{FsReader, ReadOptions, Tree};
use std::sync::Arc;

/// Reads squashfs 4.0 (gzip, lzo, xz, lz4, zstd).
#[derive(Debug, Default, Clone, Copy)]
pub struct SquashfsReader;

impl FsReader for SquashfsReader {
    fn name(&self) -> &'static str {
        "squashfs"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        if disk.size() < 96 {
            return Ok(false);
        }
        let mut m = [0u8; 4];
        disk.read_at(&mut m, 0)?;
        // The big-endian magic too, so an old image is refused by name, not passed over.
        Ok(&m == b"hsqs" || &m == b"sqsh")
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        read::read_tree(disk, &opts.label).map_err(|e| label(e, &opts.label))
    }
}

/// The compressor a squashfs on `disk` uses (for `info`-like descriptions and tests).
pub fn compressor(disk: &dyn BlockRead) -> Result<Compressor> {
    Ok(read::superblock(disk)?.comp)
}

/// Names the medium (and the filesystem) in an error, keeping its field and offset.
pub(crate) fn label(e: Error, medium: &str) -> Error {
    let mut out = Error::new(e.kind(), format!("squashfs: {}", e.message()));
    if !medium.is_empty() {
        out = out.with_file(medium);
    } else if let Some(f) = e.file() {
        out = out.with_file(f);
    }
    if let Some(f) = e.field() {
        out = out.with_field(f);
    }
    if let Some(o) = e.offset() {
        out = out.with_offset(o);
    }
    out
}
