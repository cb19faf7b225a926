//! The superblock, the lookup tables and the walk of the directory table into a tree.

use crate::compress::Compressor;
use crate::file::{Data, File, UNCOMPRESSED};
use crate::table::{Cursor, MetaReader, Table};
use diskcast_block::{BlockRead, Error, Result, range_end};
use diskcast_layout::{le16, le32, le64};
use diskcast_tree::{Content, FileData, Kind, Meta, Node, NodeId, Timestamp, Tree, Xattr, display_name};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Size of the superblock.
const SUPERBLOCK: usize = 96;
/// A table pointer that says "no such table".
const NOT_SET: u64 = u64::MAX;
/// Fragment index of a file without a tail in a fragment.
const NO_FRAGMENT: u32 = u32::MAX;
/// xattr index of an inode without xattrs.
const NO_XATTR: u32 = u32::MAX;
/// Smallest and largest data block size (`mksquashfs -b` accepts 4K to 1M).
const MIN_BLOCK_LOG: u16 = 12;
const MAX_BLOCK_LOG: u16 = 20;
/// Entries one directory header may describe (`SQUASHFS_DIR_COUNT`).
const DIR_HEADER_ENTRIES: u32 = 256;
/// Longest name a directory entry holds (`SQUASHFS_NAME_LEN`).
const MAX_NAME_LEN: usize = 256;
/// Longest symlink target read: Linux's PATH_MAX is 4096; a longer one is hostile.
const MAX_SYMLINK: u32 = 65536;
/// Longest xattr value (Linux's XATTR_SIZE_MAX: nothing can set a longer one).
const MAX_XATTR_VALUE: u32 = 65536;
/// Most xattr bytes all nodes of one tree may hold together: many inodes may share one
/// xattr set, and each node keeps its own copy.
const MAX_XATTR_BYTES: u64 = 256 << 20;

/// The checked superblock.
#[derive(Debug, Clone)]
pub struct Super {
    pub block_size: u32,
    pub frag_count: u32,
    pub comp: Compressor,
    pub id_count: u16,
    pub root: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub dir_table: u64,
    pub frag_table: u64,
    pub export_table: u64,
}

/// Reads and checks the superblock of the squashfs at the start of `disk`.
pub fn superblock(disk: &dyn BlockRead) -> Result<Super> {
    if disk.size() < u64::try_from(SUPERBLOCK).unwrap_or(u64::MAX) {
        return Err(Error::invalid("too small for a squashfs superblock"));
    }
    let mut s = [0u8; SUPERBLOCK];
    disk.read_at(&mut s, 0)?;
    let u16_at = |at: usize| le16(&s, at, "squashfs superblock");
    let u32_at = |at: usize| le32(&s, at, "squashfs superblock");
    let u64_at = |at: usize| le64(&s, at, "squashfs superblock");
    match &s[..4] {
        b"hsqs" => {}
        b"sqsh" => {
            return Err(Error::unsupported(
                "big-endian squashfs (version 3 or older, written before 2009) is not supported; only squashfs 4.0",
            )
            .with_field("s_magic"));
        }
        _ => return Err(Error::invalid("no squashfs magic (hsqs) at byte 0").with_field("s_magic")),
    }
    let (major, minor) = (u16_at(28)?, u16_at(30)?);
    if (major, minor) != (4, 0) {
        return Err(Error::unsupported(format!("squashfs version {major}.{minor} is not supported; only 4.0"))
            .with_field("s_major"));
    }
    let block_size = u32_at(12)?;
    let block_log = u16_at(22)?;
    if !(MIN_BLOCK_LOG..=MAX_BLOCK_LOG).contains(&block_log) || block_size != 1u32 << block_log {
        return Err(Error::corrupt(format!(
            "block size {block_size} (log {block_log}) is not a power of two from 4 KiB to 1 MiB that matches block_log"
        ))
        .with_field("block_size"));
    }
    let sb = Super {
        block_size,
        frag_count: u32_at(16)?,
        comp: Compressor::from_id(u16_at(20)?)?,
        id_count: u16_at(26)?,
        root: u64_at(32)?,
        bytes_used: u64_at(40)?,
        id_table: u64_at(48)?,
        xattr_table: u64_at(56)?,
        inode_table: u64_at(64)?,
        dir_table: u64_at(72)?,
        frag_table: u64_at(80)?,
        export_table: u64_at(88)?,
    };
    let size = disk.size();
    if sb.bytes_used > size || sb.bytes_used < 96 {
        return Err(Error::out_of_bounds(format!("squashfs claims {} bytes, the disk holds {size}", sb.bytes_used))
            .with_field("bytes_used"));
    }
    let start = u64::try_from(SUPERBLOCK).unwrap_or(96);
    if !(start <= sb.inode_table && sb.inode_table < sb.dir_table && sb.dir_table < sb.bytes_used) {
        return Err(Error::corrupt(format!(
            "inode table at {:#x} and directory table at {:#x} are out of order or past the end ({:#x})",
            sb.inode_table, sb.dir_table, sb.bytes_used
        ))
        .with_field("inode_table_start"));
    }
    for (name, at) in [
        ("id_table_start", sb.id_table),
        ("fragment_table_start", sb.frag_table),
        ("xattr_id_table_start", sb.xattr_table),
    ] {
        if at != NOT_SET && (at < sb.dir_table || at >= sb.bytes_used) {
            return Err(Error::corrupt(format!("{name} {at:#x} is outside the tables' area")).with_field(name));
        }
    }
    if sb.id_count == 0 || sb.id_table == NOT_SET {
        return Err(Error::corrupt("squashfs has no id table").with_field("id_count"));
    }
    Ok(sb)
}

/// An open filesystem: the superblock and every table the tree needs.
struct Fs {
    sb: Super,
    ids: Vec<u32>,
    inodes: Table,
    dirs: Table,
    xattr_ids: Vec<u8>,
    xattr_kv: Table,
    data: Arc<Data>,
}

/// Reads the filesystem on `disk` into a tree.
pub fn read_tree(disk: Arc<dyn BlockRead>, label: &str) -> Result<Tree> {
    let sb = superblock(disk.as_ref())?;
    let mut meta = MetaReader::new(disk.as_ref(), sb.comp, sb.bytes_used);
    // Every table's first metadata block: the directory table ends at the lowest.
    let mut firsts = vec![sb.bytes_used, sb.id_table];
    let (raw_ids, ptrs) = meta.lookup("id table", sb.id_table, u64::from(sb.id_count), 4)?;
    firsts.extend(ptrs);
    let ids: Vec<u32> = raw_ids.chunks_exact(4).map(|e| le32(e, 0, "id table")).collect::<Result<_, _>>()?;
    let mut fragments = Vec::new();
    if sb.frag_table != NOT_SET && sb.frag_count > 0 {
        let (raw, ptrs) = meta.lookup("fragment table", sb.frag_table, u64::from(sb.frag_count), 16)?;
        firsts.push(sb.frag_table);
        firsts.extend(ptrs);
        for (i, e) in raw.chunks_exact(16).enumerate() {
            let (start, word) = (le64(e, 0, "fragment entry")?, le32(e, 8, "fragment entry")?);
            check_block(&sb, start, word).map_err(|e| e.with_field("fragment entry"))?;
            if word & (UNCOMPRESSED - 1) == 0 {
                return Err(Error::corrupt(format!("fragment block {i} has size 0")).with_field("fragment entry"));
            }
            fragments.push((start, word));
        }
    }
    if sb.export_table != NOT_SET {
        firsts.push(sb.export_table);
    }
    let (mut xattr_ids, mut kv_range) = (Vec::new(), None);
    if sb.xattr_table != NOT_SET {
        let head = meta.raw(sb.xattr_table, 16, sb.bytes_used, "xattr id table")?;
        let (kv_start, count) = (le64(&head, 0, "xattr id table")?, le32(&head, 8, "xattr id table")?);
        firsts.push(sb.xattr_table);
        if count > 0 {
            let (raw, ptrs) = meta.lookup("xattr id table", sb.xattr_table + 16, u64::from(count), 16)?;
            let kv_end = ptrs.iter().copied().min().unwrap_or(sb.xattr_table);
            if kv_start < sb.dir_table || kv_start > kv_end {
                return Err(Error::corrupt(format!("xattr table at {kv_start:#x} is outside the tables' area"))
                    .with_field("xattr_table_start"));
            }
            firsts.push(kv_start);
            xattr_ids = raw;
            kv_range = Some((kv_start, kv_end));
        }
    }
    let dir_end = firsts.iter().copied().filter(|&p| p > sb.dir_table).min().unwrap_or(sb.bytes_used);
    let inodes = meta.table("inode table", sb.inode_table, sb.dir_table)?;
    let dirs = meta.table("directory table", sb.dir_table, dir_end)?;
    let xattr_kv = match kv_range {
        Some((a, b)) => meta.table("xattr table", a, b)?,
        None => Table::default(),
    };
    let data = Arc::new(Data::new(disk.clone(), sb.comp, sb.block_size, fragments, sb.bytes_used, label));
    let fs = Fs { sb, ids, inodes, dirs, xattr_ids, xattr_kv, data };
    fs.tree()
}

/// A data or fragment block must lie inside the data area (before the inode table) and
/// be no larger than a block.
fn check_block(sb: &Super, start: u64, word: u32) -> Result<()> {
    if word & !(UNCOMPRESSED | (UNCOMPRESSED - 1)) != 0 {
        return Err(Error::corrupt(format!("block size word {word:#x} has unknown bits set")).with_offset(start));
    }
    let stored = word & (UNCOMPRESSED - 1);
    if stored > sb.block_size {
        return Err(Error::corrupt(format!("block of {stored} bytes is larger than the block size {}", sb.block_size))
            .with_offset(start));
    }
    range_end(start, u64::from(stored), sb.inode_table).map_err(|_| {
        Error::out_of_bounds(format!("block of {stored} bytes at {start:#x} runs past the data area"))
            .with_offset(start)
    })?;
    Ok(())
}

/// An inode as the tree needs it.
struct Inode {
    meta: Meta,
    xattr: u32,
    what: What,
}

enum What {
    /// Listing at (block, offset) of the directory table, and its size in bytes.
    Dir {
        block: u32,
        offset: u16,
        size: u64,
    },
    File(FileData),
    Other(Kind),
}

impl Fs {
    fn tree(&self) -> Result<Tree> {
        let root = self.inode(self.sb.root)?;
        let What::Dir { block, offset, size } = root.what else {
            return Err(Error::corrupt("the root inode is not a directory").with_field("root_inode"));
        };
        let mut tree = Tree::new(root.meta);
        let mut xattr_bytes = 0u64;
        tree.node_mut(NodeId::ROOT).xattrs = self.xattrs(root.xattr, &mut xattr_bytes)?;
        let mut seen_dirs: HashSet<u64> = HashSet::from([self.sb.root]);
        let mut files: HashMap<u64, NodeId> = HashMap::new();
        // Listings together may not be longer than the directory table: two directories
        // sharing (or overlapping) one listing would otherwise make the walk quadratic.
        let mut listing_budget = u64::try_from(self.dirs.data.len()).unwrap_or(u64::MAX);
        let mut stack = vec![(NodeId::ROOT, block, offset, size)];
        while let Some((dir, block, offset, size)) = stack.pop() {
            if size == 0 {
                continue;
            }
            listing_budget = listing_budget.checked_sub(size).ok_or_else(|| {
                Error::corrupt("directory listings add up to more than the directory table (listings overlap)")
                    .with_field("file_size")
            })?;
            for (name, r) in self.listing(block, offset, size)? {
                if tree.lookup(dir, &name).is_some() {
                    return Err(Error::corrupt(format!("directory lists {} twice", display_name(&name))));
                }
                if let Some(&id) = files.get(&r) {
                    tree.link(dir, &name, id)?;
                    continue;
                }
                let ino = self.inode(r).map_err(|e| {
                    Error::new(e.kind(), format!("{} (inode of {})", e.message(), display_name(&name)))
                        .with_field(e.field().unwrap_or("inode"))
                })?;
                let (kind, listing) = match ino.what {
                    What::Dir { block, offset, size } => (Kind::empty_dir(), Some((block, offset, size))),
                    What::File(f) => (Kind::File(f), None),
                    What::Other(k) => (k, None),
                };
                let mut node = Node::new(ino.meta, kind);
                node.xattrs = self.xattrs(ino.xattr, &mut xattr_bytes)?;
                let id = tree.add(dir, &name, node)?;
                match listing {
                    Some((block, offset, size)) => {
                        if !seen_dirs.insert(r) {
                            return Err(Error::corrupt(format!(
                                "directory {} is listed twice (a loop in the directory table)",
                                display_name(&name)
                            ))
                            .with_field("directory entry"));
                        }
                        stack.push((id, block, offset, size));
                    }
                    None => {
                        files.insert(r, id);
                    }
                }
            }
        }
        Ok(tree)
    }

    /// The entries of the listing of `size` bytes at (`block`, `offset`): names and inode
    /// references.
    fn listing(&self, block: u32, offset: u16, size: u64) -> Result<Vec<(Vec<u8>, u64)>> {
        let r = (u64::from(block) << 16) | u64::from(offset);
        let start = self.dirs.at(r, "directory listing")?;
        let len = usize::try_from(size).map_err(|_| Error::corrupt("directory size"))?;
        if start.checked_add(len).is_none_or(|e| e > self.dirs.data.len()) {
            return Err(Error::corrupt(format!("directory listing of {size} bytes runs past the directory table"))
                .with_field("file_size"));
        }
        let mut c = self.dirs.cursor(start)?;
        let end = start + len;
        let mut out = Vec::new();
        while c.position() < end {
            let count = c.le32()?.checked_add(1).filter(|&n| n <= DIR_HEADER_ENTRIES).ok_or_else(|| {
                Error::corrupt(format!("directory header counts more than {DIR_HEADER_ENTRIES} entries"))
                    .with_field("directory header")
            })?;
            let inode_block = c.le32()?;
            let base = c.le32()?;
            let _ = base;
            for _ in 0..count {
                let off = c.le16()?;
                let _delta = c.le16()?;
                let _type = c.le16()?;
                let name_len = usize::from(c.le16()?) + 1;
                if name_len > MAX_NAME_LEN {
                    return Err(Error::corrupt(format!("directory entry name of {name_len} bytes (at most 256)")));
                }
                let name = c.take(name_len)?.to_vec();
                out.push((name, (u64::from(inode_block) << 16) | u64::from(off)));
            }
            if c.position() > end {
                return Err(Error::corrupt("directory entries run past the directory's size").with_field("file_size"));
            }
        }
        Ok(out)
    }

    /// The inode at reference `r` of the inode table.
    fn inode(&self, r: u64) -> Result<Inode> {
        if r >> 48 != 0 {
            return Err(Error::corrupt(format!("inode reference {r:#x} is not a metadata reference")));
        }
        let mut c = self.inodes.cursor(self.inodes.at(r, "inode")?)?;
        let kind = c.le16()?;
        let mode = c.le16()?;
        let (uid, gid) = (self.id(c.le16()?)?, self.id(c.le16()?)?);
        let mtime = c.le32()?;
        let _number = c.le32()?;
        let meta = Meta {
            mode: u32::from(mode) & 0o7777,
            uid,
            gid,
            mtime: Timestamp::from_secs(i64::from(mtime)),
            atime: None,
            ctime: None,
        };
        let mut xattr = NO_XATTR;
        let what = match kind {
            1 => {
                let block = c.le32()?;
                let _nlink = c.le32()?;
                let size = c.le16()?;
                let offset = c.le16()?;
                What::Dir { block, offset, size: dir_size(u32::from(size)) }
            }
            8 => {
                let _nlink = c.le32()?;
                let size = c.le32()?;
                let block = c.le32()?;
                let _parent = c.le32()?;
                let _index_count = c.le16()?;
                let offset = c.le16()?;
                xattr = c.le32()?;
                What::Dir { block, offset, size: dir_size(size) }
            }
            2 => {
                let start = u64::from(c.le32()?);
                let frag = c.le32()?;
                let frag_off = c.le32()?;
                let size = u64::from(c.le32()?);
                What::File(self.file(&mut c, start, size, frag, frag_off)?)
            }
            9 => {
                let start = c.le64()?;
                let size = c.le64()?;
                let _sparse = c.le64()?;
                let _nlink = c.le32()?;
                let frag = c.le32()?;
                let frag_off = c.le32()?;
                xattr = c.le32()?;
                What::File(self.file(&mut c, start, size, frag, frag_off)?)
            }
            3 | 10 => {
                let _nlink = c.le32()?;
                let len = c.le32()?;
                if len > MAX_SYMLINK {
                    return Err(Error::corrupt(format!("symlink target of {len} bytes (at most {MAX_SYMLINK})")));
                }
                let target = c.take(usize::try_from(len).unwrap_or(usize::MAX))?.to_vec();
                if kind == 10 {
                    xattr = c.le32()?;
                }
                What::Other(Kind::Symlink(target))
            }
            4 | 5 | 11 | 12 => {
                let _nlink = c.le32()?;
                let dev = c.le32()?;
                if kind > 10 {
                    xattr = c.le32()?;
                }
                let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
                What::Other(if kind == 4 || kind == 11 {
                    Kind::BlockDev { major, minor }
                } else {
                    Kind::CharDev { major, minor }
                })
            }
            6 | 7 | 13 | 14 => {
                let _nlink = c.le32()?;
                if kind > 7 {
                    xattr = c.le32()?;
                }
                What::Other(if kind == 6 || kind == 13 { Kind::Fifo } else { Kind::Socket })
            }
            n => return Err(Error::corrupt(format!("inode type {n} is unknown")).with_field("inode_type")),
        };
        Ok(Inode { meta, xattr, what })
    }

    fn id(&self, index: u16) -> Result<u32> {
        self.ids.get(usize::from(index)).copied().ok_or_else(|| {
            Error::corrupt(format!("id index {index} is past the id table ({} ids)", self.ids.len()))
                .with_field("uid/gid")
        })
    }

    /// A regular file: its block list (read from the cursor) and fragment checked.
    fn file(&self, c: &mut Cursor<'_>, start: u64, size: u64, frag: u32, frag_off: u32) -> Result<FileData> {
        let bs = u64::from(self.sb.block_size);
        let count = if frag == NO_FRAGMENT { size.div_ceil(bs) } else { size / bs };
        // The list is in the inode table: a count it cannot hold is refused before any
        // allocation.
        if count.saturating_mul(4) > u64::try_from(c.remaining()).unwrap_or(u64::MAX) {
            return Err(Error::corrupt(format!("file of {size} bytes lists {count} blocks, past the inode table"))
                .with_field("file_size"));
        }
        let mut blocks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut at = start;
        for _ in 0..count {
            let word = c.le32()?;
            if word & (UNCOMPRESSED - 1) != 0 {
                check_block(&self.sb, at, word).map_err(|e| e.with_field("block size"))?;
            }
            blocks.push((at, word));
            at += u64::from(word & (UNCOMPRESSED - 1));
        }
        let tail = if frag == NO_FRAGMENT {
            None
        } else {
            if frag >= self.sb.frag_count || usize::try_from(frag).map_or(true, |f| f >= self.data.fragments.len()) {
                return Err(Error::corrupt(format!(
                    "fragment index {frag} is past the fragment table ({} entries)",
                    self.data.fragments.len()
                ))
                .with_field("fragment"));
            }
            if u64::from(frag_off) + size % bs > bs {
                return Err(Error::corrupt(format!("file tail at offset {frag_off} runs past its fragment block"))
                    .with_field("fragment offset"));
            }
            Some((frag, frag_off))
        };
        if size == 0 || (tail.is_none() && blocks.iter().all(|&(_, w)| w == 0)) {
            return Ok(FileData { size, content: Content::Zero });
        }
        let file = File { data: self.data.clone(), size, blocks: blocks.into(), tail };
        Ok(FileData { size, content: Content::Reader(Arc::new(file)) })
    }

    /// The xattrs of xattr id `index`; `total` counts the bytes handed out.
    fn xattrs(&self, index: u32, total: &mut u64) -> Result<Vec<Xattr>> {
        if index == NO_XATTR {
            return Ok(Vec::new());
        }
        let at = usize::try_from(index).ok().and_then(|i| i.checked_mul(16));
        let entry = at.and_then(|a| self.xattr_ids.get(a..a + 16)).ok_or_else(|| {
            Error::corrupt(format!("xattr index {index} is past the xattr id table")).with_field("xattr")
        })?;
        let (r, count) = (le64(entry, 0, "xattr id entry")?, le32(entry, 8, "xattr id entry")?);
        let mut c = self.xattr_kv.cursor(self.xattr_kv.at(r, "xattr")?)?;
        let mut out = Vec::new();
        for _ in 0..count {
            let kind = c.le16()?;
            let name_len = usize::from(c.le16()?);
            let prefix: &[u8] = match kind & 0xff {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                n => return Err(Error::corrupt(format!("xattr prefix type {n} is unknown")).with_field("xattr")),
            };
            let mut name = prefix.to_vec();
            name.extend_from_slice(c.take(name_len)?);
            let mut vlen = c.le32()?;
            let mut vc = c.clone();
            if kind & 0x100 != 0 {
                if vlen != 8 {
                    return Err(Error::corrupt("out-of-line xattr value reference is not 8 bytes").with_field("xattr"));
                }
                let vr = c.le64()?;
                vc = self.xattr_kv.cursor(self.xattr_kv.at(vr, "xattr value")?)?;
                vlen = vc.le32()?;
            }
            if vlen > MAX_XATTR_VALUE {
                return Err(Error::corrupt(format!("xattr value of {vlen} bytes (at most {MAX_XATTR_VALUE})"))
                    .with_field("xattr"));
            }
            let value = vc.take(usize::try_from(vlen).unwrap_or(usize::MAX))?.to_vec();
            if kind & 0x100 == 0 {
                c = vc;
            }
            *total = total.saturating_add(u64::try_from(name.len() + value.len()).unwrap_or(u64::MAX));
            if *total > MAX_XATTR_BYTES {
                return Err(Error::out_of_bounds(format!(
                    "xattrs of all inodes add up to more than {MAX_XATTR_BYTES} bytes (MAX_XATTR_BYTES)"
                )));
            }
            out.push(Xattr { name, value });
        }
        Ok(out)
    }
}

/// A directory's listing size: the inode's `file_size` counts 3 bytes for `.` and `..`.
fn dir_size(file_size: u32) -> u64 {
    u64::from(file_size.saturating_sub(3))
}
