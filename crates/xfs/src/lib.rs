//! Read-only XFS: a [`FsReader`] that turns an XFS (v5, and v4) on any [`BlockRead`] into
//! a [`Tree`] whose files are extents of that disk ([`diskcast_tree::Content::Blocks`]),
//! read only when a sink needs them.
//!
//! The tree is walked from the root directory (no inode B+tree is needed); every CRC read
//! is checked (superblock, AGF, AGI, inodes, block map, directory and attribute blocks,
//! remote values and symlinks, with their owner, address and UUID), every count, offset
//! and depth is bounded by the image or a named cap, and a block or directory reached
//! twice is a loop. A log that needs recovery is replayed in memory (see `log.rs` and
//! `replay.rs`), what replay does not support refused by name: the image is never written. The format: "XFS Algorithms & Data Structures" (kernel.org
//! xfs-documentation); docs/xfs.md says what is read and what is refused.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod attr;
mod dir;
mod fs;
#[allow(dead_code)] // format constants kept beside the ones read, as the documentation lists them
mod layout;
mod log;
mod replay;

use crate::fs::{ForkKind, Fs, Inode, idx};
use crate::layout::{SYMLINK_MAGIC, decode_time, fork};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::be32;
use diskcast_tree::{
    FileData, FileExtent, FsReader, Kind, Meta, Node, NodeId, ReadOptions, Timestamp, Tree, check_name, display_name,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub use fs::{MAX_AGS, MAX_BMBT_DEPTH, MAX_FORK_EXTENTS};

/// Longest symlink target XFS stores (`XFS_SYMLINK_MAXLEN`).
const MAX_SYMLINK: u64 = 1024;

/// Reads XFS filesystems.
#[derive(Debug, Default, Clone, Copy)]
pub struct XfsReader;

impl FsReader for XfsReader {
    fn name(&self) -> &'static str {
        "xfs"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        if disk.size() < 4096 {
            return Ok(false);
        }
        let mut b = [0u8; 4];
        disk.read_at(&mut b, 0)?;
        Ok(u32::from_be_bytes(b) == layout::SB_MAGIC)
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        let label = |e: Error| opts.name_error(prefix(e));
        let fs = Fs::open(disk).map_err(label)?;
        tree(&fs).map_err(label)
    }
}

/// Names the filesystem in a message, keeping its kind, field and offset.
fn prefix(e: Error) -> Error {
    if e.file().is_some() || e.message().starts_with("XFS") {
        return e;
    }
    let mut out = Error::new(e.kind(), format!("xfs: {}", e.message()));
    if let Some(f) = e.field() {
        out = out.with_field(f);
    }
    if let Some(o) = e.offset() {
        out = out.with_offset(o);
    }
    out
}

fn meta(inode: &Inode) -> Meta {
    let c = &inode.core;
    let big = inode.bigtime();
    let t = |d| {
        let (sec, nsec) = decode_time(d, big);
        Timestamp { sec, nsec }
    };
    Meta {
        mode: u32::from(inode.mode() & 0o7777),
        uid: c.uid.get(),
        gid: c.gid.get(),
        mtime: t(c.mtime),
        atime: Some(t(c.atime)),
        ctime: Some(t(c.ctime)),
    }
}

/// Walks the directory tree from the root.
fn tree(fs: &Fs) -> Result<Tree> {
    let root = fs.inode(fs.rootino)?;
    if root.mode() & 0xF000 != 0x4000 {
        return Err(Error::corrupt("the root inode is not a directory"));
    }
    let mut tree = Tree::new(meta(&root));
    tree.node_mut(NodeId::ROOT).xattrs = attr::read(fs, &root)?;
    let mut dirs: HashSet<u64> = HashSet::from([fs.rootino]);
    let mut files: HashMap<u64, NodeId> = HashMap::new();
    let mut stack = vec![(root, NodeId::ROOT)];
    while let Some((dinode, did)) = stack.pop() {
        let dn = dinode.ino;
        for (name, child) in dir::entries(fs, &dinode)? {
            check_name(&name).map_err(|e| Error::corrupt(format!("directory inode {dn}: {}", e.message())))?;
            if let Some(&id) = files.get(&child) {
                tree.link(did, &name, id)?;
                continue;
            }
            let inode = fs.inode(child).map_err(|e| {
                Error::new(e.kind(), format!("{} (entry {} of directory inode {dn})", e.message(), display_name(&name)))
            })?;
            let kind = match inode.mode() & 0xF000 {
                0x4000 => {
                    if !dirs.insert(child) {
                        return Err(Error::corrupt(format!(
                            "directory loop: inode {child} ({}) is reached twice",
                            display_name(&name)
                        )));
                    }
                    Kind::empty_dir()
                }
                0x8000 => Kind::File(file(fs, &inode)?),
                0xA000 => Kind::Symlink(symlink(fs, &inode)?),
                t @ (0x2000 | 0x6000) => {
                    let dev = be32(inode.fork(ForkKind::Data), 0, "XFS device inode")?;
                    let (major, minor) = ((dev >> 18) & 0x3fff, dev & 0x3ffff);
                    if t == 0x2000 { Kind::CharDev { major, minor } } else { Kind::BlockDev { major, minor } }
                }
                0x1000 => Kind::Fifo,
                0xC000 => Kind::Socket,
                other => return Err(Error::corrupt(format!("inode {child} has an unknown file type {other:#o}"))),
            };
            let is_dir = matches!(kind, Kind::Dir(_));
            let mut node = Node::new(meta(&inode), kind);
            node.xattrs = attr::read(fs, &inode)?;
            let id = tree.insert(did, &name, node)?;
            if is_dir {
                stack.push((inode, id));
            } else {
                files.insert(child, id);
            }
        }
    }
    Ok(tree)
}

/// A regular file: its written extents (unwritten ones read as zeros, as holes do), cut
/// at its size.
fn file(fs: &Fs, inode: &Inode) -> Result<FileData> {
    let size = inode.size();
    let ino = inode.ino;
    if inode.format(ForkKind::Data) == fork::LOCAL {
        return Err(Error::corrupt(format!("regular file inode {ino} has data in the inode")));
    }
    let mut extents = Vec::new();
    for m in fs.map(inode, ForkKind::Data)? {
        let file_offset = m.off.saturating_mul(fs.bs);
        if m.unwritten || file_offset >= size {
            continue;
        }
        let (at, len) = fs.extent_bytes(m.fsb, m.len, &format_args!("inode {ino}"))?;
        extents.push(FileExtent { file_offset, source_offset: at, len: len.min(size - file_offset) });
    }
    FileData::blocks(size, fs.disk.clone(), extents)
        .map_err(|e| Error::new(e.kind(), format!("inode {ino}: {}", e.message())))
}

/// A symlink's target: in the inode, or in remote blocks (v5: each with a header).
fn symlink(fs: &Fs, inode: &Inode) -> Result<Vec<u8>> {
    let ino = inode.ino;
    let size = inode.size();
    if size == 0 || size > MAX_SYMLINK {
        return Err(Error::corrupt(format!("symlink inode {ino} claims {size} bytes")));
    }
    let len = idx(size)?;
    if inode.format(ForkKind::Data) == fork::LOCAL {
        let f = inode.fork(ForkKind::Data);
        return f
            .get(..len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::corrupt(format!("symlink inode {ino}: {size} bytes do not fit in the inode")));
    }
    let maps = fs.map(inode, ForkKind::Data)?;
    fs.read_remote(ino, &maps, 0, len, SYMLINK_MAGIC, &format!("symlink inode {ino}"))
}
