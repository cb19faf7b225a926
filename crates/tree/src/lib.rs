//! The tree half's one model: a tree of files with metadata whose content stays a
//! reference into its source.
//!
//! Every tree source (a host directory, a tar, an OCI image, an ISO 9660/UDF disc, an
//! ext4 or FAT filesystem read out of any disk image) produces a [`Tree`], and every tree
//! sink (safe extraction, tar, ext4, FAT, ISO, OCI layers) consumes one. N sources and M
//! sinks meet here instead of N × M code paths.
//!
//! - [`Tree`] is an arena of [`Node`]s; node 0 is the root directory. A directory maps
//!   byte-string names to node ids; two names for one file node are a hard link.
//!   Directories have exactly one parent, so the tree never has cycles, whatever a hostile
//!   source claims.
//! - File content is a [`Content`] *reference*: bytes of a `BlockRead` (an ISO, an ext4
//!   partition of a qcow2), a file of a host directory, an offset in a stream that reads
//!   front to back only (a decompressed layer), inline bytes, or any positional reader.
//!   Nothing is copied until a sink reads it.
//! - Names are bytes, not `String`: Linux names need not be UTF-8. Each sink says what it
//!   cannot represent instead of dropping it silently.
//! - [`FsReader`] is how a filesystem on a `BlockRead` is recognised and read, so the
//!   generic `ls`/`cat`/`extract` commands work on any disk, partition or disc.
//! - [`Tree`] reads like `std::fs` (`read`, `exists`, `metadata`, `read_link`) and takes
//!   the edits jobs make (`put_file`, `create_dir_all`, `graft`, `remove`), with typed
//!   [`TreeError`]s naming the path.
//! - [`Schedule`] is the one order in which sinks read many files, so a stream (a tar, a
//!   layer) is read once front to back; [`StreamCursor`] the one reader of a stream.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod content;
mod fs;
pub mod image;
mod model;
mod path;
mod schedule;
mod time;

pub use content::{Content, ContentRead, FileData, FileExtent, HostFile, StreamSource, host_data_ranges};
pub use fs::{FileType, Metadata, TreeError, TreeErrorKind};
pub use image::{BuildOptions, BuiltFs, FsBuilder, Piece, PlannedImage};
pub use model::{Dir, Kind, Meta, Node, NodeId, Tree, TreeStats, Xattr};
pub use path::{MAX_NAME, MAX_SYMLINK_HOPS, check_name, display_name, split_path};
pub use schedule::{CursorPool, Schedule, StreamCursor, StreamRun, stream_id};
pub use time::{Civil, Timestamp, civil_from_days, days_from_civil};

use diskcast_block::{BlockRead, Error, Result};
use std::sync::Arc;

/// Most nodes one tree may hold. A hostile source (a tar of billions of empty entries, a
/// directory table that claims millions of records) hits this before memory runs out;
/// real trees (a Debian root filesystem is ~30 000 nodes, 100k-file test trees) are far
/// below it.
pub const MAX_NODES: usize = 20_000_000;

/// How a tree source was asked to read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Which of several trees on one medium to read (`--tree`: ISO discs carry `udf`,
    /// `rockridge`, `joliet` and `iso9660` trees). `None`: the source's best one.
    pub tree: Option<String>,
    /// The name to use in error messages for the medium (the user's path, plus
    /// "partition 2" and the like).
    pub label: String,
}

impl ReadOptions {
    /// `e` naming the medium by [`label`](Self::label), unless it names a file already
    /// or there is no label: what every reader's errors say.
    pub fn name_error(&self, e: Error) -> Error {
        name_error(e, &self.label)
    }
}

/// `e` naming `label`, unless it names a file already or `label` is empty (also for
/// errors that surface later, when file content is read).
pub fn name_error(e: Error, label: &str) -> Error {
    if label.is_empty() { e } else { e.with_file(label) }
}

/// The first `len` bytes of `disk`, or `None` when the disk is shorter: what a probe
/// by a boot-sector magic looks at.
pub fn read_head(disk: &dyn BlockRead, len: usize) -> Result<Option<Vec<u8>>> {
    if disk.size() < u64::try_from(len).unwrap_or(u64::MAX) {
        return Ok(None);
    }
    let mut b = vec![0u8; len];
    disk.read_at(&mut b, 0)?;
    Ok(Some(b))
}

/// A filesystem format that can be read out of any virtual disk (ISO 9660/UDF, ext4,
/// FAT). Registered in one list, so `ls`/`cat`/`extract` try each on a disk or partition.
pub trait FsReader: Send + Sync + std::fmt::Debug {
    /// Short name (`iso9660`, `ext4`, `fat`).
    fn name(&self) -> &'static str;

    /// True when `disk` holds this filesystem (by its magic). Reads only a few blocks.
    fn probe(&self, disk: &dyn BlockRead) -> Result<bool>;

    /// Reads the whole tree (metadata only; content stays references into `disk`).
    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree>;
}

/// A buffer's length as u64 (lossless on every target diskcast builds for).
pub(crate) fn u64_len(b: &[u8]) -> u64 {
    diskcast_layout::u64_from_usize(b.len())
}

pub(crate) use diskcast_layout::within;
