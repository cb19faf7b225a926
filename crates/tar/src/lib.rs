//! Tar streams read into a [`diskcast_tree::Tree`] and written from one.
//!
//! Formats: POSIX ustar, PAX extended headers (POSIX.1-2001 `pax` interchange format:
//! `path`, `linkpath`, `size`, times with fractions, ids, `SCHILY.xattr.*`,
//! `LIBARCHIVE.xattr.*`), GNU long names and links (`L`/`K`), GNU sparse files (old
//! `S` headers and PAX sparse 0.0, 0.1 and 1.0), hard links, symlinks, devices, fifos.
//! Streams may be plain, gzip or zstd, recognised by their magic, and decompress to at
//! most [`Limits::layer_cap`] of their compressed size (the rule OCI layers obey too).
//!
//! Reading never copies file content: a member of a plain tar file is a range of that
//! file ([`diskcast_tree::Content::Blocks`], read at any offset, so sinks spread members
//! over threads), one of a compressed tar a [`diskcast_tree::Content::Stream`] offset
//! into the decompressed stream; a sink reads the bytes when it needs them.
//!
//! - [`TarReader`] yields one [`Member`] at a time (header, metadata, data offset).
//! - [`MemberTree`] adds members to a tree under a [`MemberPolicy`] (path checks,
//!   parents, symlinks on the way, replacements, hard links): the one rule of `tar`
//!   sources and OCI layers, which apply their whiteouts first.
//! - [`read_tar`] does both for a whole archive file.
//! - [`write_tar`] writes a tree as a PAX tar in tree walk order (reproducible).
//! - [`MemberWriter`] writes members in the caller's order (an OVA), also as old GNU
//!   sparse members (GCE's `disk.raw`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod build;
mod compress;
mod header;
mod reader;
mod sparse;
mod writer;

pub use build::{
    MemberPolicy, MemberTree, OverDirectory, ParentSymlink, TarTree, is_tar_header, member_components, normalize_path,
    read_tar, read_tar_file, read_tar_stream, read_tar_with, skipped,
};
pub use compress::{Compression, FileStream, Limits, MAX_DECOMPRESSED, MAX_RATIO, RATIO_SLACK, capped, from_io};
pub use reader::{Member, MemberKind, SparseRun, TarReader};
pub use sparse::SparseContent;
pub use writer::{MemberWriter, WriteReport, write_tar};

/// Largest PAX extended header (`x`/`g`) accepted. Real ones hold a path and a few
/// xattrs; ACL- and capability-heavy files stay far below this.
pub const MAX_PAX_HEADER: u64 = 16 << 20;

/// Most bytes of extended attributes (names plus values) all members of one archive
/// may carry together. Each member's come from a PAX header of at most
/// [`MAX_PAX_HEADER`], but the tree keeps them all in memory: 40 members of 16 MiB
/// would hold 640 MiB. A distribution with an SELinux label and an ACL on every file
/// carries a few tens of MiB.
pub const MAX_XATTR_TOTAL: u64 = 256 << 20;

/// Largest GNU long name or link (`L`/`K`) accepted (Linux's PATH_MAX is 4096).
pub const MAX_LONG_NAME: u64 = 64 << 10;

/// Most sparse runs one member may declare (each costs 16 bytes of memory).
pub const MAX_SPARSE_RUNS: usize = 1 << 20;
