//! The ext2/3/4 reader: a [`FsReader`] that turns a filesystem on any [`BlockRead`] into a
//! [`Tree`] whose files are extents of that disk ([`Content::Blocks`]), read only when a
//! sink needs them.
//!
//! Every value read from the disk is hostile: the superblock's geometry is checked before
//! use, inode numbers against the groups, extent trees by depth (each level exactly one
//! less than its parent, so a block pointing at itself ends), every block number against
//! the filesystem's size, directory records against their block, and a directory reached
//! twice is a loop. Checksums are not verified: a reader takes what the kernel would
//! mount, and e2fsck is the tool for judging a damaged filesystem.

use crate::layout::*;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{
    FileData, FileExtent, FsReader, Kind, Meta, Node, NodeId, ReadOptions, Timestamp, Tree, Xattr, check_name,
    display_name,
};
use std::collections::HashMap;
use std::sync::Arc;

/// Deepest extent tree ext4 builds (the kernel's `EXT4_MAX_EXTENT_DEPTH`).
const MAX_EXTENT_DEPTH: u16 = 5;
/// Most extents one file may claim: more than a 16 TiB file of 4 KiB fragments would
/// need is a hostile tree, not a file.
const MAX_FILE_EXTENTS: usize = 1 << 24;
/// Largest directory read (bytes): hostile sizes end here, real directories are far
/// below (a million entries is ~40 MiB).
const MAX_DIR_BYTES: u64 = 1 << 30;
/// Longest symlink target read.
const MAX_SYMLINK: u64 = 65536;
/// Incompat features we can read; anything else is refused by name.
const KNOWN_INCOMPAT: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::CASEFOLD
    | incompat::EA_INODE;

/// Data runs `(logical block, physical block, blocks)`.
type Runs = Vec<(u64, u64, u64)>;

/// Reads ext2, ext3 and ext4 filesystems.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ext4Reader;

impl FsReader for Ext4Reader {
    fn name(&self) -> &'static str {
        "ext4"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        if disk.size() < 2048 {
            return Ok(false);
        }
        let mut b = [0u8; 2];
        disk.read_at(&mut b, 1024 + sb::MAGIC as u64)?;
        Ok(u16::from_le_bytes(b) == MAGIC)
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        let fs = Fs::open(disk).map_err(|e| label(e, opts))?;
        fs.tree().map_err(|e| label(e, opts))
    }
}

/// Names the medium (and the filesystem) in an error, keeping its field and offset.
fn label(e: Error, opts: &ReadOptions) -> Error {
    if opts.label.is_empty() || e.file().is_some() {
        return e;
    }
    let mut out = Error::new(e.kind(), format!("ext4: {}", e.message())).with_file(&opts.label);
    if let Some(f) = e.field() {
        out = out.with_field(f);
    }
    if let Some(o) = e.offset() {
        out = out.with_offset(o);
    }
    out
}

/// An opened filesystem: checked geometry and where each group's inode table is.
#[derive(Debug)]
struct Fs {
    disk: Arc<dyn BlockRead>,
    bs: u64,
    blocks: u64,
    ipg: u64,
    inodes: u64,
    inode_size: u64,
    inode_tables: Vec<u64>,
    has_extra: bool,
}

/// A parsed inode: what the tree needs.
#[derive(Debug)]
struct Inode {
    raw: Vec<u8>,
    mode: u16,
    size: u64,
    flags: u32,
    file_acl: u64,
}

impl Fs {
    fn open(disk: Arc<dyn BlockRead>) -> Result<Fs> {
        let mut s = vec![0u8; sb::SIZE];
        disk.read_at(&mut s, 1024)?;
        let bad = |field: &'static str, what: String| Error::corrupt(what).with_field(field);
        if get16(&s, sb::MAGIC) != MAGIC {
            return Err(Error::invalid("no ext2/3/4 superblock (magic 0xEF53) at byte 1024").with_field("s_magic"));
        }
        let log = get32(&s, sb::LOG_BLOCK_SIZE);
        if log > 6 {
            return Err(bad("s_log_block_size", format!("block size 2^{} KiB is impossible", log)));
        }
        let bs = 1024u64 << log;
        let incompat_f = get32(&s, sb::FEATURE_INCOMPAT);
        let unknown = incompat_f & !KNOWN_INCOMPAT;
        if unknown != 0 {
            let names = [
                (incompat::COMPRESSION, "compression"),
                (incompat::JOURNAL_DEV, "journal_dev"),
                (incompat::META_BG, "meta_bg"),
                (incompat::DIRDATA, "dirdata"),
                (incompat::INLINE_DATA, "inline_data"),
                (incompat::ENCRYPT, "encrypt"),
            ];
            let list: Vec<&str> = names.iter().filter(|(f, _)| unknown & f != 0).map(|(_, n)| *n).collect();
            return Err(Error::unsupported(format!(
                "ext4 feature {} (incompat {unknown:#x}) is not supported",
                if list.is_empty() { "unknown".to_string() } else { list.join(", ") }
            ))
            .with_field("s_feature_incompat"));
        }
        let is64 = incompat_f & incompat::BIT64 != 0;
        let blocks_lo = u64::from(get32(&s, sb::BLOCKS_COUNT_LO));
        let blocks = if is64 { blocks_lo | (u64::from(get32(&s, sb::BLOCKS_COUNT_HI)) << 32) } else { blocks_lo };
        let first = u64::from(get32(&s, sb::FIRST_DATA_BLOCK));
        let bpg = u64::from(get32(&s, sb::BLOCKS_PER_GROUP));
        let ipg = u64::from(get32(&s, sb::INODES_PER_GROUP));
        let inodes = u64::from(get32(&s, sb::INODES_COUNT));
        let rev = get32(&s, sb::REV_LEVEL);
        let inode_size = if rev == 0 { 128 } else { u64::from(get16(&s, sb::INODE_SIZE)) };
        if bpg == 0 || bpg > bs * 8 {
            return Err(bad("s_blocks_per_group", format!("{bpg} blocks per group with {bs}-byte blocks")));
        }
        if ipg == 0 || ipg > bs * 8 {
            return Err(bad("s_inodes_per_group", format!("{ipg} inodes per group with {bs}-byte blocks")));
        }
        if !(128..=bs).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(bad("s_inode_size", format!("inode size {inode_size}")));
        }
        if first > 1 || first >= blocks {
            return Err(bad("s_first_data_block", format!("first data block {first} of {blocks}")));
        }
        if blocks.checked_mul(bs).is_none_or(|e| e > disk.size()) {
            return Err(Error::out_of_bounds(format!(
                "the filesystem claims {blocks} blocks of {bs} bytes, more than the disk's {} bytes",
                disk.size()
            ))
            .with_field("s_blocks_count"));
        }
        let groups = (blocks - first).div_ceil(bpg);
        if inodes > groups * ipg || inodes < ipg.min(11) {
            return Err(bad("s_inodes_count", format!("{inodes} inodes do not match {groups} groups of {ipg} inodes")));
        }
        let desc_size = if is64 { u64::from(get16(&s, sb::DESC_SIZE)) } else { 32 };
        if is64 && (!(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(bad("s_desc_size", format!("group descriptor size {desc_size}")));
        }
        let gdt_len = groups * desc_size;
        if gdt_len > blocks * bs / 2 {
            return Err(bad("s_blocks_per_group", format!("{groups} groups cannot have their descriptors stored")));
        }
        let mut gdt = vec![0u8; usize::try_from(gdt_len).map_err(|_| bad("s_blocks_count", "too many groups".into()))?];
        disk.read_at(&mut gdt, (first + 1) * bs)?;
        let mut inode_tables = Vec::with_capacity(groups as usize);
        let itb = (ipg * inode_size).div_ceil(bs);
        for g in 0..groups as usize {
            let d = &gdt[g * desc_size as usize..(g + 1) * desc_size as usize];
            let mut t = u64::from(get32(d, gd::INODE_TABLE_LO));
            if desc_size >= 64 {
                t |= u64::from(get32(d, gd::INODE_TABLE_HI)) << 32;
            }
            if t == 0 || t.checked_add(itb).is_none_or(|e| e > blocks) {
                return Err(bad(
                    "bg_inode_table",
                    format!("group {g}'s inode table at block {t} is outside the filesystem"),
                ));
            }
            inode_tables.push(t);
        }
        let has_extra = inode_size > 128;
        Ok(Fs { disk, bs, blocks, ipg, inodes, inode_size, inode_tables, has_extra })
    }

    fn inode(&self, n: u64) -> Result<Inode> {
        if n == 0 || n > self.inodes {
            return Err(Error::corrupt(format!("inode {n} is beyond the filesystem's {} inodes", self.inodes))
                .with_field("inode"));
        }
        let g = ((n - 1) / self.ipg) as usize;
        let idx = (n - 1) % self.ipg;
        let table = *self.inode_tables.get(g).ok_or_else(|| Error::corrupt(format!("inode {n} is in no group")))?;
        let mut raw = vec![0u8; self.inode_size as usize];
        self.disk.read_at(&mut raw, table * self.bs + idx * self.inode_size)?;
        let mode = get16(&raw, ino::MODE);
        let size = u64::from(get32(&raw, ino::SIZE_LO)) | (u64::from(get32(&raw, ino::SIZE_HIGH)) << 32);
        let flags = get32(&raw, ino::FLAGS);
        let file_acl = u64::from(get32(&raw, ino::FILE_ACL_LO)) | (u64::from(get16(&raw, ino::FILE_ACL_HIGH)) << 32);
        if flags & iflag::INLINE_DATA != 0 {
            return Err(Error::unsupported(format!("inode {n} keeps its data inline (inline_data)")));
        }
        Ok(Inode { raw, mode, size, flags, file_acl })
    }

    fn read_block(&self, blk: u64, what: &str) -> Result<Vec<u8>> {
        if blk == 0 || blk >= self.blocks {
            return Err(Error::corrupt(format!("{what} points at block {blk}, outside the filesystem"))
                .with_offset(blk.saturating_mul(self.bs)));
        }
        let mut b = vec![0u8; self.bs as usize];
        self.disk.read_at(&mut b, blk * self.bs)?;
        Ok(b)
    }

    /// The inode's data as runs `(logical block, physical block, blocks)`, holes and
    /// unwritten extents left out, limited to `max_blocks` logical blocks.
    fn map(&self, n: u64, inode: &Inode, max_blocks: u64) -> Result<Vec<(u64, u64, u64)>> {
        let mut out = Vec::new();
        if inode.flags & iflag::EXTENTS != 0 {
            let root = &inode.raw[ino::BLOCK..ino::BLOCK + ino::BLOCK_LEN];
            self.extent_node(n, root, None, max_blocks, &mut out)?;
        } else {
            self.block_map(n, inode, max_blocks, &mut out)?;
        }
        out.sort_unstable();
        for w in out.windows(2) {
            if w[0].0 + w[0].2 > w[1].0 {
                return Err(Error::corrupt(format!("inode {n}: extents overlap at logical block {}", w[1].0)));
            }
        }
        Ok(out)
    }

    fn extent_node(
        &self,
        n: u64,
        node: &[u8],
        want_depth: Option<u16>,
        max_blocks: u64,
        out: &mut Vec<(u64, u64, u64)>,
    ) -> Result<()> {
        let corrupt = |what: String| Error::corrupt(format!("inode {n}: extent tree {what}")).with_field("i_block");
        if get16(node, 0) != EXTENT_MAGIC {
            return Err(corrupt("has a bad magic".into()));
        }
        let entries = usize::from(get16(node, 2));
        let max = usize::from(get16(node, 4));
        let depth = get16(node, 6);
        if entries > max || 12 + 12 * max > node.len() {
            return Err(corrupt(format!("claims {entries} of {max} entries in a {}-byte node", node.len())));
        }
        if depth > MAX_EXTENT_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(corrupt(format!("has a node of depth {depth} where {want_depth:?} belongs")));
        }
        for i in 0..entries {
            let e = &node[12 + 12 * i..24 + 12 * i];
            let logical = u64::from(get32(e, 0));
            if depth == 0 {
                let raw_len = u64::from(get16(e, 4));
                let (len, unwritten) =
                    if raw_len > MAX_EXTENT_LEN { (raw_len - MAX_EXTENT_LEN, true) } else { (raw_len, false) };
                let phys = u64::from(get32(e, 8)) | (u64::from(get16(e, 6)) << 32);
                if phys.checked_add(len).is_none_or(|end| end > self.blocks) || (phys == 0 && len > 0) {
                    return Err(corrupt(format!("maps blocks {phys}+{len}, outside the filesystem")));
                }
                if unwritten || len == 0 || logical >= max_blocks {
                    continue;
                }
                if out.len() >= MAX_FILE_EXTENTS {
                    return Err(corrupt(format!("has more than {MAX_FILE_EXTENTS} extents")));
                }
                out.push((logical, phys, len.min(max_blocks - logical)));
            } else {
                let child = u64::from(get32(e, 4)) | (u64::from(get16(e, 8)) << 32);
                let b = self.read_block(child, &format!("inode {n}'s extent index"))?;
                self.extent_node(n, &b, Some(depth - 1), max_blocks, out)?;
            }
        }
        Ok(())
    }

    /// ext2/ext3 block maps: 12 direct pointers, then single, double and triple indirect.
    fn block_map(&self, n: u64, inode: &Inode, max_blocks: u64, out: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        let per = self.bs / 4;
        let mut push = |logical: u64, phys: u64, out: &mut Vec<(u64, u64, u64)>| -> Result<()> {
            if phys == 0 || logical >= max_blocks {
                return Ok(());
            }
            if phys >= self.blocks {
                return Err(Error::corrupt(format!("inode {n}: block {phys} is outside the filesystem")));
            }
            match out.last_mut() {
                Some((l, p, c)) if *l + *c == logical && *p + *c == phys => *c += 1,
                _ => out.push((logical, phys, 1)),
            }
            Ok(())
        };
        for i in 0..12u64 {
            push(i, u64::from(get32(&inode.raw, ino::BLOCK + 4 * i as usize)), out)?;
        }
        let mut base = 12u64;
        for level in 1..=3u32 {
            let top = u64::from(get32(&inode.raw, ino::BLOCK + 4 * (11 + level as usize)));
            let span = per.pow(level);
            if top != 0 && base < max_blocks {
                self.indirect(n, top, level, base, max_blocks, &mut push, out)?;
            }
            base += span;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn indirect(
        &self,
        n: u64,
        blk: u64,
        level: u32,
        base: u64,
        max_blocks: u64,
        push: &mut dyn FnMut(u64, u64, &mut Runs) -> Result<()>,
        out: &mut Runs,
    ) -> Result<()> {
        let b = self.read_block(blk, &format!("inode {n}'s indirect block"))?;
        let per = self.bs / 4;
        let span = per.pow(level - 1);
        for i in 0..per {
            let p = u64::from(get32(&b, 4 * i as usize));
            let logical = base + i * span;
            if logical >= max_blocks {
                break;
            }
            if level == 1 {
                push(logical, p, out)?;
            } else if p != 0 {
                self.indirect(n, p, level - 1, logical, max_blocks, push, out)?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes of an inode's data (directories, slow symlinks).
    fn read_data(&self, n: u64, inode: &Inode, len: u64) -> Result<Vec<u8>> {
        let nblocks = len.div_ceil(self.bs);
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Error::corrupt("inode too large"))?];
        for (logical, phys, count) in self.map(n, inode, nblocks)? {
            let start = logical * self.bs;
            let end = ((logical + count) * self.bs).min(len);
            self.disk.read_at(&mut buf[start as usize..end as usize], phys * self.bs)?;
        }
        Ok(buf)
    }

    fn meta(&self, inode: &Inode) -> Meta {
        let r = &inode.raw;
        let uid = u32::from(get16(r, ino::UID)) | (u32::from(get16(r, ino::UID_HIGH)) << 16);
        let gid = u32::from(get16(r, ino::GID)) | (u32::from(get16(r, ino::GID_HIGH)) << 16);
        let extra_isize = if self.has_extra { usize::from(get16(r, ino::EXTRA_ISIZE)) } else { 0 };
        let time = |lo: usize, extra: usize| {
            let x = (128 + extra_isize >= extra + 4).then(|| get32(r, extra));
            let (sec, nsec) = decode_time(get32(r, lo), x);
            Timestamp { sec, nsec }
        };
        Meta {
            mode: u32::from(inode.mode & 0o7777),
            uid,
            gid,
            mtime: time(ino::MTIME, ino::MTIME_EXTRA),
            atime: Some(time(ino::ATIME, ino::ATIME_EXTRA)),
            ctime: Some(time(ino::CTIME, ino::CTIME_EXTRA)),
        }
    }

    /// Extended attributes in the inode and in its xattr block.
    fn xattrs(&self, n: u64, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        let r = &inode.raw;
        if self.has_extra {
            let extra = usize::from(get16(r, ino::EXTRA_ISIZE));
            let at = 128 + extra;
            if at + 4 <= r.len() && get32(r, at) == XATTR_MAGIC {
                parse_xattrs(n, r, at + 4, at + 4, r.len(), &mut out)?;
            }
        }
        if inode.file_acl != 0 {
            let b = self.read_block(inode.file_acl, &format!("inode {n}'s xattr block"))?;
            if get32(&b, 0) != XATTR_MAGIC {
                return Err(Error::corrupt(format!("inode {n}: xattr block {} has a bad magic", inode.file_acl)));
            }
            parse_xattrs(n, &b, 32, 0, b.len(), &mut out)?;
        }
        Ok(out)
    }

    /// Walks the directory tree from the root.
    fn tree(&self) -> Result<Tree> {
        let root = self.inode(u64::from(ROOT_INO))?;
        if root.mode & 0xF000 != 0x4000 {
            return Err(Error::corrupt("the root inode is not a directory"));
        }
        let mut tree = Tree::new(self.meta(&root));
        tree.node_mut(NodeId::ROOT).xattrs = self.xattrs(u64::from(ROOT_INO), &root)?;
        let mut seen_dirs: HashMap<u64, ()> = HashMap::from([(u64::from(ROOT_INO), ())]);
        let mut files: HashMap<u64, NodeId> = HashMap::new();
        let mut stack = vec![(u64::from(ROOT_INO), root, NodeId::ROOT)];
        while let Some((dn, dinode, did)) = stack.pop() {
            if dinode.size > MAX_DIR_BYTES {
                return Err(Error::corrupt(format!("directory inode {dn} claims {} bytes", dinode.size)));
            }
            let data = self.read_data(dn, &dinode, dinode.size)?;
            for (name, child) in dir_entries(dn, &data, self.bs)? {
                if name == b"." || name == b".." {
                    continue;
                }
                check_name(&name).map_err(|e| Error::corrupt(format!("directory inode {dn}: {}", e.message())))?;
                if child != u64::from(ROOT_INO) && child < u64::from(FIRST_INO) || child > self.inodes {
                    return Err(Error::corrupt(format!(
                        "directory inode {dn}: entry {} names inode {child}, which no file can have",
                        display_name(&name)
                    )));
                }
                if let Some(&id) = files.get(&child) {
                    tree.link(did, &name, id)?;
                    continue;
                }
                let inode = self.inode(child)?;
                let meta = self.meta(&inode);
                let xattrs = self.xattrs(child, &inode)?;
                let kind = match inode.mode & 0xF000 {
                    0x4000 => {
                        if seen_dirs.insert(child, ()).is_some() {
                            return Err(Error::corrupt(format!(
                                "directory loop: inode {child} ({}) is reached twice",
                                display_name(&name)
                            )));
                        }
                        Kind::empty_dir()
                    }
                    0x8000 => Kind::File(self.file(child, &inode)?),
                    0xA000 => Kind::Symlink(self.symlink(child, &inode)?),
                    0x2000 | 0x6000 => {
                        let (major, minor) = device(&inode.raw);
                        if inode.mode & 0xF000 == 0x2000 {
                            Kind::CharDev { major, minor }
                        } else {
                            Kind::BlockDev { major, minor }
                        }
                    }
                    0x1000 => Kind::Fifo,
                    0xC000 => Kind::Socket,
                    other => {
                        return Err(Error::corrupt(format!("inode {child} has an unknown file type {other:#o}")));
                    }
                };
                let is_dir = matches!(kind, Kind::Dir(_));
                let mut node = Node::new(meta, kind);
                node.xattrs = xattrs;
                let id = tree.insert(did, &name, node)?;
                if is_dir {
                    stack.push((child, inode, id));
                } else {
                    files.insert(child, id);
                }
            }
        }
        Ok(tree)
    }

    fn file(&self, n: u64, inode: &Inode) -> Result<FileData> {
        let nblocks = inode.size.div_ceil(self.bs);
        let extents = self
            .map(n, inode, nblocks)?
            .into_iter()
            .map(|(logical, phys, count)| {
                let file_offset = logical * self.bs;
                FileExtent {
                    file_offset,
                    source_offset: phys * self.bs,
                    len: (count * self.bs).min(inode.size - file_offset),
                }
            })
            .collect();
        FileData::blocks(inode.size, self.disk.clone(), extents)
    }

    fn symlink(&self, n: u64, inode: &Inode) -> Result<Vec<u8>> {
        if inode.size > MAX_SYMLINK {
            return Err(Error::corrupt(format!("symlink inode {n} claims {} bytes", inode.size)));
        }
        // Fast symlinks keep the target in i_block: decided by size, as e2fsprogs does.
        if (inode.size as usize) < ino::BLOCK_LEN {
            return Ok(inode.raw[ino::BLOCK..ino::BLOCK + inode.size as usize].to_vec());
        }
        self.read_data(n, inode, inode.size)
    }
}

/// Device numbers: the old 8:8 encoding in `i_block[0]`, else the new one in `i_block[1]`.
fn device(raw: &[u8]) -> (u32, u32) {
    let old = get32(raw, ino::BLOCK);
    if old != 0 {
        return ((old >> 8) & 0xff, old & 0xff);
    }
    let new = get32(raw, ino::BLOCK + 4);
    ((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00))
}

/// The `(name, inode)` records of a linear directory (htree directories read the same:
/// their index blocks look like empty records).
fn dir_entries(n: u64, data: &[u8], bs: u64) -> Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for (bi, block) in data.chunks(bs as usize).enumerate() {
        let mut pos = 0usize;
        while pos + 8 <= block.len() {
            let child = u64::from(get32(block, pos));
            let rec = usize::from(get16(block, pos + 4));
            let name_len = usize::from(block[pos + 6]);
            if rec < 8 || rec % 4 != 0 || pos + rec > block.len() || name_len + 8 > rec {
                return Err(Error::corrupt(format!(
                    "directory inode {n}: record at byte {pos} of block {bi} has length {rec}"
                ))
                .with_field("rec_len"));
            }
            if child != 0 {
                out.push((block[pos + 8..pos + 8 + name_len].to_vec(), child));
            }
            pos += rec;
        }
    }
    Ok(out)
}

/// xattr entries from `at` (values at `base + e_value_offs`, all inside `..end`).
fn parse_xattrs(n: u64, b: &[u8], mut at: usize, base: usize, end: usize, out: &mut Vec<Xattr>) -> Result<()> {
    let corrupt = |what: &str| Error::corrupt(format!("inode {n}: extended attribute {what}"));
    while at + 4 <= end && get32(b, at) != 0 {
        if at + 16 > end {
            return Err(corrupt("entry runs past its area"));
        }
        let name_len = usize::from(b[at]);
        let index = b[at + 1];
        let voff = usize::from(get16(b, at + 2));
        let vinum = get32(b, at + 4);
        let vsize = get32(b, at + 8) as usize;
        let next = at + (16 + name_len).next_multiple_of(4);
        if next > end {
            return Err(corrupt("name runs past its area"));
        }
        let suffix = &b[at + 16..at + 16 + name_len];
        at = next;
        if vinum != 0 {
            // Values in their own inode (ea_inode): not read.
            continue;
        }
        let vstart = base + voff;
        if vstart.checked_add(vsize).is_none_or(|e| e > end) {
            return Err(corrupt("value runs past its area"));
        }
        let Some(name) = xattr_join(index, suffix) else { continue };
        let mut value = b[vstart..vstart + vsize].to_vec();
        if index == 2 || index == 3 {
            value = acl_from_disk(&value).ok_or_else(|| corrupt("holds a malformed ACL"))?;
        }
        out.push(Xattr { name, value });
    }
    Ok(())
}
