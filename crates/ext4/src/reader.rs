//! The ext2/3/4 reader: a [`FsReader`] that turns a filesystem on any [`BlockRead`] into a
//! [`Tree`] whose files are extents of that disk ([`Content::Blocks`]), read only when a
//! sink needs them.
//!
//! Every value read from the disk is hostile: the superblock's geometry is checked before
//! use, inode numbers against the groups, extent trees by depth (each level exactly one
//! less than its parent), every block number against the filesystem's size, directory
//! records against their block, and a directory reached twice is a loop. Work and memory
//! stay linear in the image: group descriptors are read as needed, a tree block reached
//! twice while mapping one file is corruption, and all files together read no more tree
//! blocks than the filesystem has. Checksums are not verified: a reader takes what the kernel would
//! mount, and e2fsck is the tool for judging a damaged filesystem.

use crate::layout::*;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{IntoBytes, Le32, join_u32, le16, le32, u64_from_usize, usize_from, usize_from_u64};
use diskcast_tree::{
    FileData, FileExtent, FsReader, Kind, Meta, Node, NodeId, ReadOptions, Timestamp, Tree, Xattr, check_name,
    display_name,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
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
        disk.read_at(&mut b, 1024 + u64_from_usize(SB_MAGIC))?;
        Ok(u16::from_le_bytes(b) == MAGIC)
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        let fs = Fs::open(disk, false).map_err(|e| label(e, opts))?;
        // A filesystem that was not cleanly unmounted: its committed transactions are
        // replayed in memory, and the filesystem is read through them.
        let fs = match fs.replay_journal().map_err(|e| label(e, opts))? {
            Some(replayed) => Fs::open(Arc::new(replayed), true).map_err(|e| label(e, opts))?,
            None => fs,
        };
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

/// An opened filesystem: checked geometry, and where the group descriptors are.
///
/// Descriptors are read as inodes need them rather than all at once, so a hostile group
/// count costs nothing until an inode of a bad group is used.
#[derive(Debug)]
struct Fs {
    disk: Arc<dyn BlockRead>,
    bs: u64,
    blocks: u64,
    ipg: u64,
    inodes: u64,
    inode_size: u64,
    /// Byte offset of the group descriptor table and the size of one descriptor.
    gdt: u64,
    desc_size: u64,
    /// Blocks of one group's inode table.
    itb: u64,
    /// Inode table of each group looked up so far.
    tables: RefCell<HashMap<u64, u64>>,
    /// Extent tree and indirect blocks read so far, over all files. Each belongs to one
    /// file, so a count past the filesystem's blocks means blocks shared between files:
    /// this keeps the work of all files together linear in the image.
    walked: Cell<u64>,
    has_extra: bool,
    /// `needs_recovery` is set and the journal not yet replayed.
    recover: bool,
    /// `s_journal_inum`, `s_journal_dev`, and whether `s_journal_uuid` is set (an
    /// external journal).
    journal: (u32, u32, bool),
}

/// A parsed inode: what the tree needs.
#[derive(Debug)]
struct Inode {
    /// The whole record: in-inode xattrs follow the extra fields.
    raw: Vec<u8>,
    base: InodeBase,
    /// The extended fields, for records larger than 128 bytes.
    extra: Option<InodeExtra>,
    mode: u16,
    size: u64,
    flags: u32,
    file_acl: u64,
}

/// One file's walk through its block map.
#[derive(Debug)]
struct Walk {
    /// The inode, for messages.
    n: u64,
    /// Logical blocks of the file: runs past them are dropped.
    max_blocks: u64,
    /// Tree blocks read for this file: one reached twice is a loop or a shared subtree.
    seen: HashSet<u64>,
    /// Data runs found.
    out: Runs,
}

/// A size or offset already checked against the disk, as an index.
fn idx(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::out_of_bounds(format!("{v} does not fit in memory on this machine")))
}

impl Fs {
    /// Opens the filesystem on `disk`; `replayed` when `disk` is already the journal's
    /// replay (whose superblock still says `needs_recovery`).
    fn open(disk: Arc<dyn BlockRead>, replayed: bool) -> Result<Fs> {
        let mut raw = vec![0u8; SB_SIZE];
        disk.read_at(&mut raw, 1024)?;
        let s: &SuperBlock = diskcast_layout::read(&raw, 0, "ext4 superblock")?;
        let bad = |field: &'static str, what: String| Error::corrupt(what).with_field(field);
        if s.magic.get() != MAGIC {
            return Err(Error::invalid("no ext2/3/4 superblock (magic 0xEF53) at byte 1024").with_field("s_magic"));
        }
        let log = s.log_block_size.get();
        if log > 6 {
            return Err(bad("s_log_block_size", format!("block size 2^{} KiB is impossible", log)));
        }
        let bs = 1024u64 << log;
        let incompat_f = s.feature_incompat.get();
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
        // bigalloc counts groups in clusters: the geometry below would look corrupt.
        if s.feature_ro_compat.get() & ro_compat::BIGALLOC != 0 {
            return Err(Error::unsupported(format!(
                "ext4 feature bigalloc (ro_compat {:#x}) is not supported",
                ro_compat::BIGALLOC
            ))
            .with_field("s_feature_ro_compat"));
        }
        if s.log_cluster_size.get() != log {
            return Err(bad(
                "s_log_cluster_size",
                format!("cluster size 2^{} KiB differs from the block size without bigalloc", s.log_cluster_size.get()),
            ));
        }
        let is64 = incompat_f & incompat::BIT64 != 0;
        let blocks_hi = if is64 { s.blocks_count_hi.get() } else { 0 };
        let blocks = join_u32(blocks_hi, s.blocks_count_lo.get());
        let first = u64::from(s.first_data_block.get());
        let bpg = u64::from(s.blocks_per_group.get());
        let ipg = u64::from(s.inodes_per_group.get());
        let inodes = u64::from(s.inodes_count.get());
        let inode_size =
            if s.rev_level.get() == 0 { u64_from_usize(INODE_BASE) } else { u64::from(s.inode_size.get()) };
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
        // The counts must agree as the kernel and e2fsprogs require: every group holds
        // exactly `ipg` inodes.
        let groups = (blocks - first).div_ceil(bpg);
        if groups.checked_mul(ipg) != Some(inodes) || inodes < u64::from(FIRST_INO) {
            return Err(bad("s_inodes_count", format!("{inodes} inodes do not match {groups} groups of {ipg} inodes")));
        }
        let desc_size = if is64 { u64::from(s.desc_size.get()) } else { 32 };
        if is64 && (!(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(bad("s_desc_size", format!("group descriptor size {desc_size}")));
        }
        let gdt = (first + 1) * bs;
        if groups.checked_mul(desc_size).and_then(|l| l.checked_add(gdt)).is_none_or(|end| end > blocks * bs) {
            return Err(bad(
                "s_blocks_per_group",
                format!("the descriptors of {groups} groups do not fit in the filesystem"),
            ));
        }
        let itb = (ipg * inode_size).div_ceil(bs);
        let has_extra = inode_size > u64_from_usize(INODE_BASE);
        let recover = incompat_f & incompat::RECOVER != 0 && !replayed;
        if recover && s.feature_compat.get() & compat::HAS_JOURNAL == 0 {
            return Err(bad("s_feature_incompat", "needs_recovery is set on a filesystem without a journal".into()));
        }
        // s_journal_uuid: 0xD0 in the superblock, 0x48 into the block starting at 0x88.
        let external = s.mount_and_prealloc[0x48..0x58].iter().any(|&b| b != 0);
        let journal = (s.journal_inum.get(), s.journal_dev.get(), external);
        Ok(Fs {
            disk,
            bs,
            blocks,
            ipg,
            inodes,
            inode_size,
            gdt,
            desc_size,
            itb,
            tables: RefCell::new(HashMap::new()),
            walked: Cell::new(0),
            has_extra,
            recover,
            journal,
        })
    }

    /// The journal replayed in memory when the filesystem needs recovery (see
    /// `journal.rs`); `None` when it does not, or the journal is empty.
    fn replay_journal(&self) -> Result<Option<crate::journal::Replayed>> {
        if !self.recover {
            return Ok(None);
        }
        let (inum, dev, external) = self.journal;
        if inum == 0 || dev != 0 || external {
            return Err(Error::unsupported(format!(
                "the filesystem needs recovery and its journal is on an external device (s_journal_dev {dev:#x}, \
                 s_journal_uuid set: {external}); diskcast replays only a journal inside the filesystem. Run \
                 e2fsck -fy with the journal device (-j) on a copy"
            ))
            .with_field("s_journal_inum"));
        }
        let n = u64::from(inum);
        let inode = self.inode(n)?;
        if inode.size > self.blocks * self.bs {
            return Err(Error::corrupt(format!("the journal inode {n} claims {} bytes", inode.size))
                .with_field("s_journal_inum"));
        }
        let runs = self.map(n, &inode, inode.size.div_ceil(self.bs))?;
        crate::journal::replay(self.disk.clone(), self.bs, self.blocks, &runs)
    }

    /// The first block of group `g`'s inode table, from its descriptor.
    fn inode_table(&self, g: u64) -> Result<u64> {
        if let Some(&t) = self.tables.borrow().get(&g) {
            return Ok(t);
        }
        // A 32-byte descriptor leaves the `_hi` halves zero.
        let mut d = GroupDesc::default();
        let have = idx(self.desc_size.min(u64_from_usize(DESC_SIZE)))?;
        self.disk.read_at(&mut d.as_mut_bytes()[..have], self.gdt + g * self.desc_size)?;
        let t = join_u32(d.inode_table_hi.get(), d.inode_table_lo.get());
        if t == 0 || t.checked_add(self.itb).is_none_or(|e| e > self.blocks) {
            return Err(Error::corrupt(format!("group {g}'s inode table at block {t} is outside the filesystem"))
                .with_field("bg_inode_table"));
        }
        self.tables.borrow_mut().insert(g, t);
        Ok(t)
    }

    fn inode(&self, n: u64) -> Result<Inode> {
        if n == 0 || n > self.inodes {
            return Err(Error::corrupt(format!("inode {n} is beyond the filesystem's {} inodes", self.inodes))
                .with_field("inode"));
        }
        let table = self.inode_table((n - 1) / self.ipg)?;
        let at = (n - 1) % self.ipg;
        let mut raw = vec![0u8; idx(self.inode_size)?];
        self.disk.read_at(&mut raw, table * self.bs + at * self.inode_size)?;
        let base: InodeBase = diskcast_layout::read_copy(&raw, 0, "ext4 inode")?;
        let extra: Option<InodeExtra> =
            self.has_extra.then(|| diskcast_layout::read_copy(&raw, INODE_BASE, "ext4 inode")).transpose()?;
        let size = join_u32(base.size_high.get(), base.size_lo.get());
        let file_acl = join_u32(u32::from(base.file_acl_high.get()), base.file_acl_lo.get());
        if base.flags.get() & iflag::INLINE_DATA != 0 {
            return Err(Error::unsupported(format!("inode {n} keeps its data inline (inline_data)")));
        }
        Ok(Inode { raw, mode: base.mode.get(), size, flags: base.flags.get(), file_acl, base, extra })
    }

    fn read_block(&self, blk: u64, what: &str) -> Result<Vec<u8>> {
        if blk == 0 || blk >= self.blocks {
            return Err(Error::corrupt(format!("{what} points at block {blk}, outside the filesystem"))
                .with_offset(blk.saturating_mul(self.bs)));
        }
        let mut b = vec![0u8; idx(self.bs)?];
        self.disk.read_at(&mut b, blk * self.bs)?;
        Ok(b)
    }

    /// Reads a block of `w`'s file's extent tree or indirect map (`what` names which),
    /// refusing one this file reached before and counting it against the filesystem's
    /// blocks.
    fn tree_block(&self, w: &mut Walk, blk: u64, what: &str) -> Result<Vec<u8>> {
        let n = w.n;
        if !w.seen.insert(blk) {
            return Err(Error::corrupt(format!("inode {n}: {what} block {blk} is reached twice"))
                .with_offset(blk.saturating_mul(self.bs)));
        }
        let walked = self.walked.get() + 1;
        if walked > self.blocks {
            return Err(Error::corrupt(format!(
                "inode {n}: the files' extent trees and indirect blocks take more blocks than the filesystem's {} \
                 (blocks shared between files)",
                self.blocks
            )));
        }
        self.walked.set(walked);
        self.read_block(blk, &format!("inode {n}'s {what}"))
    }

    /// The inode's data as runs `(logical block, physical block, blocks)`, holes and
    /// unwritten extents left out, limited to `max_blocks` logical blocks.
    fn map(&self, n: u64, inode: &Inode, max_blocks: u64) -> Result<Runs> {
        let mut w = Walk { n, max_blocks, seen: HashSet::new(), out: Vec::new() };
        if inode.flags & iflag::EXTENTS != 0 {
            self.extent_node(&mut w, &inode.base.block, None)?;
        } else {
            self.block_map(&mut w, inode)?;
        }
        let mut out = w.out;
        out.sort_unstable();
        for pair in out.windows(2) {
            if let [(l, _, c), (next, _, _)] = pair
                && l + c > *next
            {
                return Err(Error::corrupt(format!("inode {n}: extents overlap at logical block {next}")));
            }
        }
        Ok(out)
    }

    fn extent_node(&self, w: &mut Walk, node: &[u8], want_depth: Option<u16>) -> Result<()> {
        let n = w.n;
        let corrupt = |what: String| Error::corrupt(format!("inode {n}: extent tree {what}")).with_field("i_block");
        let h: &ExtentHeader = diskcast_layout::read(node, 0, "ext4 extent header")?;
        if h.magic.get() != EXTENT_MAGIC {
            return Err(corrupt("has a bad magic".into()));
        }
        let entries = usize::from(h.entries.get());
        let max = usize::from(h.max.get());
        let depth = h.depth.get();
        if entries > max || 12 + 12 * max > node.len() {
            return Err(corrupt(format!("claims {entries} of {max} entries in a {}-byte node", node.len())));
        }
        if depth > MAX_EXTENT_DEPTH || want_depth.is_some_and(|d| d != depth) {
            return Err(corrupt(format!("has a node of depth {depth} where {want_depth:?} belongs")));
        }
        for e in node[12..12 + 12 * entries].chunks_exact(12) {
            if depth == 0 {
                let x: &Extent = diskcast_layout::read(e, 0, "ext4 extent")?;
                let logical = u64::from(x.block.get());
                let raw_len = u64::from(x.len.get());
                let (len, unwritten) =
                    if raw_len > MAX_EXTENT_LEN { (raw_len - MAX_EXTENT_LEN, true) } else { (raw_len, false) };
                let phys = u64::from(x.start_lo.get()) | (u64::from(x.start_hi.get()) << 32);
                if phys.checked_add(len).is_none_or(|end| end > self.blocks) || (phys == 0 && len > 0) {
                    return Err(corrupt(format!("maps blocks {phys}+{len}, outside the filesystem")));
                }
                if unwritten || len == 0 || logical >= w.max_blocks {
                    continue;
                }
                self.room_for_run(w)?;
                w.out.push((logical, phys, len.min(w.max_blocks - logical)));
            } else {
                let x: &ExtentIndex = diskcast_layout::read(e, 0, "ext4 extent index")?;
                let child = u64::from(x.leaf_lo.get()) | (u64::from(x.leaf_hi.get()) << 32);
                let b = self.tree_block(w, child, "extent tree")?;
                self.extent_node(w, &b, Some(depth - 1))?;
            }
        }
        Ok(())
    }

    /// Refuses a run past the most `w`'s file can have: runs kept never overlap and each
    /// maps its own blocks, so a file has at most one per block of its size and of the
    /// filesystem (and [`MAX_FILE_EXTENTS`]).
    fn room_for_run(&self, w: &Walk) -> Result<()> {
        let have = u64::try_from(w.out.len()).unwrap_or(u64::MAX);
        if w.out.len() >= MAX_FILE_EXTENTS || have >= w.max_blocks || have >= self.blocks {
            return Err(Error::corrupt(format!(
                "inode {}: maps more extents than its {} blocks, the filesystem's {} or the limit of \
                 {MAX_FILE_EXTENTS}",
                w.n, w.max_blocks, self.blocks
            ))
            .with_field("i_block"));
        }
        Ok(())
    }

    /// Adds logical block `logical` at physical block `phys` (0: a hole) to `w`'s runs.
    fn push_block(&self, w: &mut Walk, logical: u64, phys: u64) -> Result<()> {
        if phys == 0 || logical >= w.max_blocks {
            return Ok(());
        }
        if phys >= self.blocks {
            return Err(Error::corrupt(format!("inode {}: block {phys} is outside the filesystem", w.n)));
        }
        match w.out.last_mut() {
            Some((l, p, c)) if *l + *c == logical && *p + *c == phys => *c += 1,
            _ => {
                self.room_for_run(w)?;
                w.out.push((logical, phys, 1));
            }
        }
        Ok(())
    }

    /// ext2/ext3 block maps: 12 direct pointers, then single, double and triple indirect.
    fn block_map(&self, w: &mut Walk, inode: &Inode) -> Result<()> {
        let ptr = |i: usize| le32(&inode.base.block, 4 * i, "ext4 block map").map(u64::from);
        for i in 0..12u64 {
            self.push_block(w, i, ptr(idx(i)?)?)?;
        }
        let per = self.bs / 4;
        let mut base = 12u64;
        for level in 1..=3u32 {
            let top = ptr(11 + idx(u64::from(level))?)?;
            if top != 0 && base < w.max_blocks {
                self.indirect(w, top, level, base)?;
            }
            base += per.pow(level);
        }
        Ok(())
    }

    /// One indirect block of `level` (1: it points at data) mapping from logical `base`.
    fn indirect(&self, w: &mut Walk, blk: u64, level: u32, base: u64) -> Result<()> {
        let b = self.tree_block(w, blk, "indirect")?;
        let span = (self.bs / 4).pow(level - 1);
        for (logical, p) in (0u64..).map(|i| base + i * span).zip(b.chunks_exact(4)) {
            if logical >= w.max_blocks {
                break;
            }
            let p = u64::from(le32(p, 0, "ext4 indirect block")?);
            if level == 1 {
                self.push_block(w, logical, p)?;
            } else if p != 0 {
                self.indirect(w, p, level - 1, logical)?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes of an inode's data (directories, slow symlinks).
    fn read_data(&self, n: u64, inode: &Inode, len: u64) -> Result<Vec<u8>> {
        // Data lives in the filesystem's blocks: more is not a file, and not allocated.
        if len > self.blocks * self.bs {
            return Err(Error::corrupt(format!("inode {n} claims {len} bytes, more than the filesystem holds")));
        }
        let nblocks = len.div_ceil(self.bs);
        let mut buf = vec![0u8; idx(len)?];
        for (logical, phys, count) in self.map(n, inode, nblocks)? {
            let start = idx(logical * self.bs)?;
            let end = idx(((logical + count) * self.bs).min(len))?;
            self.disk.read_at(&mut buf[start..end], phys * self.bs)?;
        }
        Ok(buf)
    }

    fn meta(&self, inode: &Inode) -> Result<Meta> {
        use std::mem::offset_of;
        let i = &inode.base;
        let uid = u32::from(i.uid.get()) | (u32::from(i.uid_high.get()) << 16);
        let gid = u32::from(i.gid.get()) | (u32::from(i.gid_high.get()) << 16);
        // An `_extra` field counts only when `i_extra_isize` covers it.
        let covers = |at: usize| inode.extra.is_some_and(|e| usize::from(e.extra_isize.get()) >= at + 4);
        let x = inode.extra.unwrap_or_default();
        let time = |lo: Le32, extra: Le32, at: usize| {
            let (sec, nsec) = decode_time(lo.get(), covers(at).then(|| extra.get()));
            Timestamp { sec, nsec }
        };
        Ok(Meta {
            mode: u32::from(inode.mode & 0o7777),
            uid,
            gid,
            mtime: time(i.mtime, x.mtime_extra, offset_of!(InodeExtra, mtime_extra)),
            atime: Some(time(i.atime, x.atime_extra, offset_of!(InodeExtra, atime_extra))),
            ctime: Some(time(i.ctime, x.ctime_extra, offset_of!(InodeExtra, ctime_extra))),
        })
    }

    /// Extended attributes in the inode and in its xattr block.
    fn xattrs(&self, n: u64, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        let r = &inode.raw;
        if let Some(x) = &inode.extra {
            let at = INODE_BASE + usize::from(x.extra_isize.get());
            if at + 4 <= r.len() && le32(r, at, "ext4 xattr area")? == XATTR_MAGIC {
                parse_xattrs(n, r, at + 4, at + 4, r.len(), &mut out)?;
            }
        }
        if inode.file_acl != 0 {
            let b = self.read_block(inode.file_acl, &format!("inode {n}'s xattr block"))?;
            if le32(&b, 0, "ext4 xattr area")? != XATTR_MAGIC {
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
        let mut tree = Tree::new(self.meta(&root)?);
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
                let meta = self.meta(&inode)?;
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
                        let (major, minor) = device(&inode.base.block)?;
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
        if inode.size < u64_from_usize(IBLOCK_LEN) {
            let len = usize_from_u64(inode.size, "ext4 fast symlink")?;
            return Ok(inode.base.block[..len].to_vec());
        }
        self.read_data(n, inode, inode.size)
    }
}

/// Device numbers: the old 8:8 encoding in `i_block[0]`, else the new one in `i_block[1]`.
fn device(iblock: &[u8]) -> Result<(u32, u32)> {
    let old = le32(iblock, 0, "ext4 inode")?;
    if old != 0 {
        return Ok(((old >> 8) & 0xff, old & 0xff));
    }
    let new = le32(iblock, 4, "ext4 inode")?;
    Ok(((new & 0xfff00) >> 8, (new & 0xff) | ((new >> 12) & 0xfff00)))
}

/// The `(name, inode)` records of a linear directory (htree directories read the same:
/// their index blocks look like empty records).
fn dir_entries(n: u64, data: &[u8], bs: u64) -> Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for (bi, block) in data.chunks(usize_from_u64(bs, "ext4 block size")?).enumerate() {
        let mut pos = 0usize;
        while pos + 8 <= block.len() {
            let d: &DirEntryHead = diskcast_layout::read(block, pos, "ext4 directory entry")?;
            let child = u64::from(d.inode.get());
            let rec = usize::from(d.rec_len.get());
            let name_len = usize::from(d.name_len);
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
    while at + 4 <= end && le32(b, at, "ext4 xattr entry")? != 0 {
        if at + 16 > end {
            return Err(corrupt("entry runs past its area"));
        }
        let name_len = usize::from(b[at]);
        let index = b[at + 1];
        let voff = usize::from(le16(b, at + 2, "ext4 xattr entry")?);
        let vinum = le32(b, at + 4, "ext4 xattr entry")?;
        let vsize = usize_from(le32(b, at + 8, "ext4 xattr entry")?);
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
