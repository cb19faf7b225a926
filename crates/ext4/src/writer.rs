//! The ext4 writer: plans a whole filesystem from a [`Tree`] and hands it out as a
//! [`PlannedImage`], so the copy engine writes it into any block format in parallel.
//!
//! Planning lays out everything before a byte is written: inode numbers in tree walk
//! order, directory blocks, xattr blocks, the journal, file data (in walk order, files of
//! a stream grouped in stream order) and extent trees, then synthesizes the superblocks,
//! group descriptors, bitmaps and inode tables with their checksums. File data stays a
//! reference to the tree's content; free space and holes are gaps that read as zeros.
//! See docs/ext4.md for the layout.

use crate::layout::*;
use diskcast_block::{Error, Result};
use diskcast_layout::{
    Be32, FromZeros, IntoBytes, Le16, Le32, fit, high_u32, low_u8, low_u16, low_u32, u64_from_usize, usize_from,
};
use diskcast_tree::{
    BuildOptions, BuiltFs, FileData, FsBuilder, Kind, Meta, NodeId, Piece, PlannedImage, Schedule, Timestamp, Tree,
    display_name,
};
use std::collections::{BTreeMap, HashMap};
use std::mem::offset_of;

/// A count or index the geometry bounds (groups, blocks of a group, inode numbers) as a
/// usize: lossless on 64-bit targets, where every one fits; planning never reaches
/// usize::MAX on others (the memory it indexes would not exist).
fn ix(v: u64) -> usize {
    diskcast_layout::usize_from_u64(v, "ext4 index").unwrap_or(usize::MAX)
}

/// Blocks per group: one bitmap block's worth.
const BPG: u64 = BLOCK * 8;
/// `inode_ratio` of mke2fs.conf: one inode per 16 KiB of filesystem.
const INODE_RATIO: u64 = 16384;
/// Smallest filesystem: room for the smallest journal mke2fs makes (1024 blocks).
const MIN_BLOCKS: u64 = 2048;
/// Inodes per inode-table block.
const INODES_PER_BLOCK: u32 = 16;
/// A block as a buffer length.
const BLOCK_BYTES: usize = 4096;
/// A block as a 32-bit field value.
const BLOCK_U32: u32 = 4096;
const _: () = assert!(BLOCK == 4096 && BLOCK_BYTES / INODE_SIZE == 16 && EXTRA_ISIZE == 32);
/// Longest symlink target (a block minus the terminating NUL Linux leaves room for).
const MAX_SYMLINK: usize = BLOCK_BYTES - 1;
/// Extent entries in an inode's `i_block`.
const ROOT_EXTENTS: usize = 4;
/// Extent entries in a tree block: (4096 - 12 header - 4 checksum tail) / 12.
const BLOCK_EXTENTS: usize = (BLOCK_BYTES - 12) / 12;
/// Largest logical block of a file (32-bit logical block numbers): 16 TiB files.
const MAX_FILE_BLOCKS: u64 = 1 << 32;
/// Largest filesystem the writer plans (the allocator keeps ranges, not bitmaps, so this
/// is about the time to write the bitmaps): 64 TiB.
const MAX_BLOCKS: u64 = 1 << 34;
/// Byte offset of in-inode xattrs: after the 128-byte base and the 32 extra bytes.
const IN_INODE_XATTR: usize = INODE_BASE + size_of::<InodeExtra>();
/// Byte offset where the first in-inode xattr entry starts (after the magic).
const IN_INODE_FIRST: usize = IN_INODE_XATTR + 4;
/// Links a directory may count before dir_nlink makes it 1 ("many").
const MAX_LINKS: u32 = 65000;

/// Builds ext4 filesystems (`diskcast mkfs ext4`, `mkdisk` root partitions).
#[derive(Debug, Default, Clone, Copy)]
pub struct Ext4Builder;

impl FsBuilder for Ext4Builder {
    fn name(&self) -> &'static str {
        "ext4"
    }

    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
        plan(tree, opts)
    }
}

/// One extended attribute as ext4 stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Attr {
    index: u8,
    suffix: Vec<u8>,
    value: Vec<u8>,
}

impl Attr {
    fn entry_len(&self) -> usize {
        (16 + self.suffix.len()).next_multiple_of(4)
    }
    fn value_len(&self) -> usize {
        self.value.len().next_multiple_of(4)
    }
}

/// What an inode's data blocks hold.
#[derive(Debug)]
enum Body {
    /// Nothing (devices, fifos, sockets, fast symlinks, empty files).
    None,
    /// Directory blocks, already built (checksum tails included).
    Dir(Vec<u8>),
    /// A slow symlink's one block.
    Symlink(Vec<u8>),
    /// A regular file: logical block runs `(first, count)` that hold data.
    File { data: FileData, runs: Vec<(u64, u64)> },
    /// The journal: its first block is the jbd2 superblock, the rest zeros.
    Journal(u64),
    /// The orphan file: empty orphan blocks, each with its magic and checksum tail.
    Orphan(u64),
}

/// A planned inode.
#[derive(Debug)]
struct Ino {
    mode: u16,
    meta: Meta,
    links: u32,
    size: u64,
    iblock: [u8; 60],
    body: Body,
    attrs: Vec<Attr>,
    /// The xattr block, when the attributes do not fit in the inode.
    xattr_block: Option<Vec<u8>>,
    /// Data extents `(logical, physical, len)`, filled in by allocation.
    extents: Vec<(u64, u64, u64)>,
    /// Blocks allocated to it (data, tree, xattr), for `i_blocks`.
    blocks: u64,
    xattr_blk: u64,
    /// The root of the extent tree (header plus up to 4 entries) when it has extents.
    root: Option<[u8; 60]>,
}

impl Ino {
    fn new(mode: u16, meta: Meta, body: Body) -> Self {
        Ino {
            mode,
            meta,
            links: 1,
            size: 0,
            iblock: [0; 60],
            body,
            attrs: Vec::new(),
            xattr_block: None,
            extents: Vec::new(),
            blocks: 0,
            xattr_blk: 0,
            root: None,
        }
    }
    fn is_dir(&self) -> bool {
        self.mode & 0xF000 == 0x4000
    }
    /// Blocks its body needs (before extent tree blocks).
    fn body_blocks(&self) -> u64 {
        match &self.body {
            Body::None => 0,
            Body::Dir(b) | Body::Symlink(b) => u64_from_usize(b.len()) / BLOCK,
            Body::File { runs, .. } => runs.iter().map(|r| r.1).sum(),
            Body::Journal(n) | Body::Orphan(n) => *n,
        }
    }
}

/// Filesystem geometry for a block count.
#[derive(Debug, Clone, Copy)]
struct Geo {
    blocks: u64,
    groups: u64,
    ipg: u32,
    gdt: u64,
}

impl Geo {
    fn new(blocks: u64, min_inodes: u64) -> Result<Geo> {
        let mut blocks = blocks.min(MAX_BLOCKS);
        if blocks < MIN_BLOCKS {
            return Err(Error::argument(format!(
                "an ext4 filesystem needs at least {} KiB",
                MIN_BLOCKS * BLOCK / 1024
            )));
        }
        let mut groups = blocks.div_ceil(BPG);
        // A last group too small to be worth its metadata is left out, as mke2fs does.
        if groups > 1 && blocks - (groups - 1) * BPG < 256 {
            groups -= 1;
            blocks = groups * BPG;
        }
        let by_ratio = blocks * BLOCK / INODE_RATIO;
        let want = by_ratio.max(min_inodes + 16);
        // s_inodes_count is 32 bits: at most u32::MAX inodes, as mke2fs caps them (the
        // default ratio gives the largest filesystem exactly 2^32).
        let per_block = u64::from(INODES_PER_BLOCK);
        let max_ipg = u64::from(u32::MAX) / groups / per_block * per_block;
        let ipg = want.div_ceil(groups).next_multiple_of(per_block).max(16).min(max_ipg);
        if ipg > BPG || ipg * groups < min_inodes + 16 {
            return Err(Error::argument(format!(
                "{min_inodes} inodes do not fit in an ext4 filesystem of {} MiB",
                (blocks * BLOCK) >> 20
            )));
        }
        let gdt = (groups * u64_from_usize(DESC_SIZE)).div_ceil(BLOCK);
        Ok(Geo { blocks, groups, ipg: fit(ipg, "ext4 inodes per group")?, gdt })
    }

    fn group_start(&self, g: u64) -> u64 {
        g * BPG
    }

    fn group_len(&self, g: u64) -> u64 {
        (self.blocks - g * BPG).min(BPG)
    }

    fn itable_blocks(&self) -> u64 {
        u64::from(self.ipg / INODES_PER_BLOCK)
    }

    fn inodes(&self) -> u64 {
        u64::from(self.ipg) * self.groups
    }

    /// Blocks all fixed metadata takes (superblocks, descriptors, bitmaps, inode tables).
    fn overhead(&self) -> u64 {
        let backups = u64_from_usize((0..self.groups).filter(|&g| has_super(g)).count());
        backups * (1 + self.gdt) + self.groups * (2 + self.itable_blocks())
    }
}

/// sparse_super: groups 0, 1 and powers of 3, 5 and 7 hold superblock backups.
fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut p = b;
        while p < g {
            p *= b;
        }
        p == g
    })
}

/// mke2fs's default journal size for a filesystem of `blocks` blocks.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        0..32768 => 1024,
        32768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16384,
        4_194_304..8_388_608 => 32768,
        8_388_608..16_777_216 => 65536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    }
}

/// Largest orphan file mke2fs makes, in blocks.
const MAX_ORPHAN_BLOCKS: u64 = 512;

/// mke2fs's orphan file size for a filesystem of `blocks` blocks.
fn orphan_blocks(blocks: u64) -> u64 {
    match blocks {
        0..131_072 => 32,
        131_072..2_097_152 => blocks / 4096,
        _ => MAX_ORPHAN_BLOCKS,
    }
}

/// Hands out blocks front to back, skipping fixed metadata.
#[derive(Debug)]
struct Alloc {
    /// Fixed metadata ranges `(start, len)`, sorted.
    fixed: Vec<(u64, u64)>,
    next_fixed: usize,
    cursor: u64,
    end: u64,
}

impl Alloc {
    /// `n` blocks as runs `(start, len)`, or `None` when the filesystem is full.
    fn take(&mut self, mut n: u64) -> Option<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        while n > 0 {
            while let Some(&(s, l)) = self.fixed.get(self.next_fixed) {
                if self.cursor >= s + l {
                    self.next_fixed += 1;
                } else if self.cursor >= s {
                    self.cursor = s + l;
                    self.next_fixed += 1;
                } else {
                    break;
                }
            }
            let limit = self.fixed.get(self.next_fixed).map_or(self.end, |f| f.0).min(self.end);
            if self.cursor >= limit {
                return None;
            }
            let k = n.min(limit - self.cursor);
            match out.last_mut() {
                Some((s, l)) if *s + *l == self.cursor => *l += k,
                _ => out.push((self.cursor, k)),
            }
            self.cursor += k;
            n -= k;
        }
        Some(out)
    }
}

/// Block ranges `(start, len)`.
type Ranges = Vec<(u64, u64)>;

/// Where each group's bitmaps and inode table are.
#[derive(Debug, Clone, Copy, Default)]
struct GroupMeta {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
}

/// Places superblock backups, descriptors, bitmaps and inode tables; flex_bg packs the
/// bitmaps and inode tables of 16 groups together at the start of the first one.
fn place_fixed(geo: &Geo) -> Result<(Ranges, Vec<GroupMeta>)> {
    let mut fixed: Vec<(u64, u64)> =
        (0..geo.groups).filter(|&g| has_super(g)).map(|g| (geo.group_start(g), 1 + geo.gdt)).collect();
    let mut metas = vec![GroupMeta::default(); ix(geo.groups)];
    let flex = 1u64 << LOG_GROUPS_PER_FLEX;
    let itb = geo.itable_blocks();
    for f0 in (0..geo.groups).step_by(ix(flex)) {
        let n = flex.min(geo.groups - f0);
        let mut at = geo.group_start(f0);
        let mut place = |fixed: &mut Vec<(u64, u64)>, len: u64| -> Result<u64> {
            let s = find_run(fixed, at, len, geo.blocks)
                .ok_or_else(|| Error::argument("the filesystem is too small for its own metadata"))?;
            fixed.push((s, len));
            fixed.sort_unstable();
            at = s + len;
            Ok(s)
        };
        let bb = place(&mut fixed, n)?;
        let ib = place(&mut fixed, n)?;
        let it = place(&mut fixed, n * itb)?;
        for i in 0..n {
            metas[ix(f0 + i)] = GroupMeta { block_bitmap: bb + i, inode_bitmap: ib + i, inode_table: it + i * itb };
        }
    }
    Ok((fixed, metas))
}

/// The first `len` free blocks at or after `from` that miss every range in `fixed`.
fn find_run(fixed: &[(u64, u64)], from: u64, len: u64, end: u64) -> Option<u64> {
    let mut at = from;
    loop {
        let hit = fixed.iter().find(|&&(s, l)| s < at + len && at < s + l);
        match hit {
            Some(&(s, l)) => at = s + l,
            None => return (at + len <= end).then_some(at),
        }
    }
}

/// The planner's state.
struct Planner<'a> {
    tree: &'a Tree,
    now: Timestamp,
    inos: Vec<Option<Ino>>,
    /// Node index -> inode number (0 = not yet).
    node_ino: Vec<u32>,
    warnings: Vec<String>,
    /// Regular files in data placement order (inode numbers).
    data_order: Vec<u32>,
    /// Each directory's parent and entries, until its blocks are built.
    dirs: BTreeMap<u32, (u32, DirEntries)>,
}

fn plan(tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
    let now = Timestamp::from_secs(opts.now);
    let mut p = Planner {
        tree,
        now,
        inos: (0..FIRST_INO).map(|_| None).collect(),
        node_ino: vec![0; tree.node_count()],
        warnings: Vec::new(),
        data_order: Vec::new(),
        dirs: BTreeMap::new(),
    };
    p.collect()?;
    let uuid = if opts.id == [0; 16] { fingerprint(tree, opts) } else { opts.id };
    let label = opts.label.clone().unwrap_or_default();
    if label.len() > 16 {
        return Err(Error::argument(format!("ext4 labels hold at most 16 bytes, {label:?} has {}", label.len())));
    }
    let fs_seed = fs_csum_seed(&uuid);
    p.build_dirs(fs_seed)?;

    // How many blocks the content needs, to size the filesystem.
    let content: u64 = p.inos.iter().flatten().map(|i| i.body_blocks() + tree_estimate(i) + 1).sum();
    let n_inodes = u64_from_usize(p.inos.len());
    let (geo, image_size) = match opts.size {
        Some(size) => (Geo::new(size / BLOCK, n_inodes)?, size),
        None => {
            let want = content + content / 5 + (16 << 20) / BLOCK;
            let mut blocks = want.max(MIN_BLOCKS);
            for _ in 0..8 {
                let geo = Geo::new(blocks, n_inodes + n_inodes / 5)?;
                let need = want + geo.overhead() + journal_blocks(geo.blocks);
                if need <= blocks {
                    break;
                }
                blocks = need.next_multiple_of(256);
            }
            let blocks = blocks.next_multiple_of(256);
            (Geo::new(blocks, n_inodes + n_inodes / 5)?, blocks * BLOCK)
        }
    };
    let fs = layout(&mut p, geo, fs_seed).map_err(|e| {
        if opts.size.is_some() {
            Error::new(e.kind(), format!("{} (try a larger --size or leave it out)", e.message()))
        } else {
            e
        }
    })?;
    let image = fs.image(&p, geo, image_size, &uuid, &label, fs_seed, opts.now)?;
    let description = format!(
        "ext4, {} MiB, {} inodes used of {}, 4096-byte blocks",
        (geo.blocks * BLOCK) >> 20,
        p.inos.len() - 1,
        geo.inodes()
    );
    Ok(BuiltFs { image, warnings: p.warnings, description })
}

/// A UUID derived from the tree's shape and the options, for callers that pass no id.
fn fingerprint(tree: &Tree, opts: &BuildOptions) -> [u8; 16] {
    let mut c = [0x1234_5678u32, 0x9abc_def0, 0x0fed_cba9, 0x8765_4321];
    let mut feed = |b: &[u8]| {
        for (i, x) in c.iter_mut().enumerate() {
            *x = csum(*x ^ low_u32(u64_from_usize(i)), b);
        }
    };
    feed(&opts.now.to_le_bytes());
    feed(&opts.size.unwrap_or(0).to_le_bytes());
    feed(opts.label.as_deref().unwrap_or("").as_bytes());
    for (path, id) in tree.walk(NodeId::ROOT) {
        let n = tree.node(id);
        feed(&path);
        feed(&n.st_mode().to_le_bytes());
        feed(&n.meta.mtime.sec.to_le_bytes());
        if let Some(f) = n.as_file() {
            feed(&f.size.to_le_bytes());
        }
    }
    let mut out = [0u8; 16];
    for (i, x) in c.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x80; // RFC 9562 version 8: derived, not random
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// Extent tree blocks an inode will need, at most (for sizing).
fn tree_estimate(i: &Ino) -> u64 {
    let runs = match &i.body {
        Body::File { runs, .. } => runs.iter().map(|r| r.1.div_ceil(MAX_EXTENT_LEN) + 2).sum::<u64>(),
        _ => 4,
    };
    if runs <= u64_from_usize(ROOT_EXTENTS) { 0 } else { (runs / u64_from_usize(BLOCK_EXTENTS) + 2) * 2 }
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Dir(_) => ftype::DIR,
        Kind::File(_) => ftype::REG,
        Kind::Symlink(_) => ftype::SYMLINK,
        Kind::CharDev { .. } => ftype::CHR,
        Kind::BlockDev { .. } => ftype::BLK,
        Kind::Fifo => ftype::FIFO,
        Kind::Socket => ftype::SOCK,
    }
}

/// Directory entries `(name, inode, type)` of every directory inode, collected while
/// walking.
type DirEntries = Vec<(Vec<u8>, u32, u8)>;

impl Planner<'_> {
    fn push(&mut self, ino: Ino) -> u32 {
        self.inos.push(Some(ino));
        // Inode numbers past u32 are refused by Geo::new (the count must fit s_inodes_count).
        low_u32(u64_from_usize(self.inos.len() - 1))
    }

    fn ino(&mut self, n: u32) -> &mut Ino {
        self.inos[usize_from(n)].as_mut().unwrap_or_else(|| unreachable!("inode {n} is planned"))
    }

    /// Walks the tree depth first in name order, giving each node an inode number.
    fn collect(&mut self) -> Result<()> {
        let tree = self.tree;
        let counts = tree.link_counts();
        // inode 1 (bad blocks) .. 10 are reserved; the root is 2, lost+found 11.
        let root = tree.node(NodeId::ROOT);
        let mut root_ino =
            Ino::new(0x4000 | low_u16(u64::from(root.meta.mode & 0o7777)), root.meta.clone(), Body::None);
        root_ino.attrs = self.attrs(NodeId::ROOT, b"/")?;
        self.inos[usize_from(ROOT_INO)] = Some(root_ino);
        self.node_ino[0] = ROOT_INO;
        let lf = tree.lookup(NodeId::ROOT, b"lost+found").filter(|&id| tree.node(id).as_dir().is_some());
        let lf_node = match lf {
            Some(id) => tree.node(id).clone(),
            None => diskcast_tree::Node::new(
                Meta { mode: 0o700, atime: Some(self.now), ctime: Some(self.now), ..Meta::new(0o700, self.now) },
                Kind::empty_dir(),
            ),
        };
        let lf_ino = self.push(Ino::new(
            0x4000 | low_u16(u64::from(lf_node.meta.mode & 0o7777)),
            lf_node.meta.clone(),
            Body::None,
        ));
        debug_assert_eq!(lf_ino, LOST_FOUND_INO);
        // The orphan file right after it, as mke2fs makes it (sized in `layout`).
        let ometa = Meta { atime: Some(self.now), ctime: Some(self.now), ..Meta::new(0o600, self.now) };
        let orphan = self.push(Ino::new(0o100600, ometa, Body::Orphan(MAX_ORPHAN_BLOCKS)));
        debug_assert_eq!(orphan, ORPHAN_INO);
        if let Some(id) = lf {
            self.node_ino[id.index()] = LOST_FOUND_INO;
            let attrs = self.attrs(id, b"lost+found")?;
            self.ino(LOST_FOUND_INO).attrs = attrs;
        }

        let mut dirs: BTreeMap<u32, (u32, DirEntries)> = BTreeMap::new();
        let mut data = Schedule::new();
        let mut stack: Vec<(NodeId, u32, u32, Vec<u8>)> = vec![(NodeId::ROOT, ROOT_INO, ROOT_INO, Vec::new())];
        while let Some((dir_id, dir_ino, parent_ino, dir_path)) = stack.pop() {
            let mut ents: DirEntries = Vec::new();
            let mut subdirs = Vec::new();
            for (name, child) in tree.dir(dir_id)?.entries() {
                let mut path = dir_path.clone();
                path.push(b'/');
                path.extend_from_slice(name);
                if name.len() > MAX_NAME_LEN {
                    self.warnings.push(format!("{}: name longer than 255 bytes, left out", display_name(&path)));
                    continue;
                }
                let node = tree.node(child);
                if dir_ino == ROOT_INO && name == b"lost+found" && lf.is_none() {
                    self.warnings.push("/lost+found is not a directory in the source, left out".into());
                    continue;
                }
                let known = self.node_ino[child.index()];
                let n = if known != 0 {
                    known
                } else {
                    let n = self.new_inode(child, &path, counts[child.index()])?;
                    self.node_ino[child.index()] = n;
                    if let Kind::File(f) = &node.kind
                        && f.size > 0
                    {
                        data.push(f, n);
                    }
                    n
                };
                if node.as_dir().is_some() {
                    subdirs.push((child, n, path));
                }
                ents.push((name.to_vec(), n, file_type(&node.kind)));
            }
            if dir_ino == ROOT_INO && lf.is_none() {
                ents.push((b"lost+found".to_vec(), LOST_FOUND_INO, ftype::DIR));
                ents.sort();
                dirs.insert(LOST_FOUND_INO, (ROOT_INO, Vec::new()));
            }
            dirs.insert(dir_ino, (parent_ino, ents));
            // Reversed so the first subdirectory is walked next (depth first, name order).
            for (child, n, path) in subdirs.into_iter().rev() {
                stack.push((child, n, dir_ino, path));
            }
        }
        self.data_order.extend(data.into_order());
        // Directory link counts: 2 + subdirectories (lost+found counts in the root).
        for (&d, (_, ents)) in &dirs {
            let sub = u32::try_from(ents.iter().filter(|e| e.2 == ftype::DIR).count()).unwrap_or(u32::MAX);
            let links = 2u32.saturating_add(sub);
            self.ino(d).links = if links >= MAX_LINKS { 1 } else { links };
        }
        self.dirs = dirs;
        Ok(())
    }

    fn new_inode(&mut self, id: NodeId, path: &[u8], links: u32) -> Result<u32> {
        let node = self.tree.node(id);
        // i_mode is 16 bits: the type and permission bits, all of st_mode Linux keeps.
        let mode = low_u16(u64::from(node.st_mode()));
        let mut ino = Ino::new(mode, node.meta.clone(), Body::None);
        ino.links = links.clamp(1, MAX_LINKS - 1);
        match &node.kind {
            Kind::Dir(_) => {}
            Kind::File(f) => {
                ino.size = f.size;
                let nblocks = f.size.div_ceil(BLOCK);
                if nblocks > MAX_FILE_BLOCKS {
                    return Err(Error::unsupported(format!(
                        "{}: {} bytes is larger than an ext4 file can be (16 TiB)",
                        display_name(path),
                        f.size
                    )));
                }
                let mut runs: Vec<(u64, u64)> = Vec::new();
                for (off, len) in f.data_ranges()? {
                    if len == 0 || off >= f.size {
                        continue;
                    }
                    let first = off / BLOCK;
                    let end = (off.saturating_add(len)).min(f.size).div_ceil(BLOCK);
                    match runs.last_mut() {
                        Some((s, l)) if *s + *l >= first => *l = (*l).max(end - *s),
                        _ => runs.push((first, end - first)),
                    }
                }
                ino.body = Body::File { data: f.clone(), runs };
            }
            Kind::Symlink(target) => {
                ino.size = u64_from_usize(target.len());
                if target.is_empty() || target.len() > MAX_SYMLINK {
                    self.warnings.push(format!(
                        "{}: symbolic link target of {} bytes cannot be stored, left empty",
                        display_name(path),
                        target.len()
                    ));
                    ino.size = 0;
                } else if target.len() < IBLOCK_LEN {
                    ino.iblock[..target.len()].copy_from_slice(target);
                } else {
                    let mut b = target.clone();
                    b.resize(BLOCK_BYTES, 0);
                    ino.body = Body::Symlink(b);
                }
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                if *major < 256 && *minor < 256 {
                    put32(&mut ino.iblock, 0, (major << 8) | minor);
                } else {
                    put32(&mut ino.iblock, 4, (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12));
                }
            }
            Kind::Fifo | Kind::Socket => {}
        }
        ino.attrs = self.attrs(id, path)?;
        Ok(self.push(ino))
    }

    /// The node's xattrs in ext4's form (ACLs converted), sorted as the kernel looks them
    /// up; names ext4 has no prefix for are left out with a warning.
    fn attrs(&mut self, id: NodeId, path: &[u8]) -> Result<Vec<Attr>> {
        let mut out = Vec::new();
        for x in &self.tree.node(id).xattrs {
            let Some((index, suffix)) = xattr_split(&x.name) else {
                self.warnings.push(format!(
                    "{}: extended attribute {} has no ext4 namespace, left out",
                    display_name(path),
                    display_name(&x.name)
                ));
                continue;
            };
            let value = if index == 2 || index == 3 {
                match acl_to_disk(&x.value) {
                    Some(v) => v,
                    None => {
                        self.warnings.push(format!(
                            "{}: {} is not a valid POSIX ACL, left out",
                            display_name(path),
                            display_name(&x.name)
                        ));
                        continue;
                    }
                }
            } else {
                x.value.clone()
            };
            out.push(Attr { index, suffix: suffix.to_vec(), value });
        }
        out.sort_by(|a, b| (a.index, a.suffix.len(), &a.suffix).cmp(&(b.index, b.suffix.len(), &b.suffix)));
        out.dedup_by(|a, b| a.index == b.index && a.suffix == b.suffix);
        let in_inode: usize = out.iter().map(|a| a.entry_len() + a.value_len()).sum::<usize>() + 4;
        if !out.is_empty() && in_inode > INODE_SIZE - IN_INODE_FIRST {
            let need = 32 + out.iter().map(|a| a.entry_len() + a.value_len()).sum::<usize>() + 4;
            if need > BLOCK_BYTES {
                return Err(Error::unsupported(format!(
                    "{}: extended attributes of {need} bytes do not fit in one ext4 xattr block",
                    display_name(path)
                )));
            }
        }
        Ok(out)
    }
}

impl Planner<'_> {
    /// Builds every directory's blocks (with their checksum tails).
    fn build_dirs(&mut self, fs_seed: u32) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (d, (parent, ents)) in dirs {
            // lost+found gets 4 blocks, as mke2fs makes it, so e2fsck can reconnect files
            // without allocating.
            let min_blocks = if d == LOST_FOUND_INO { 4 } else { 1 };
            let blocks = dir_blocks(fs_seed, d, parent, &ents, min_blocks);
            let ino = self.ino(d);
            ino.size = u64_from_usize(blocks.len());
            ino.body = Body::Dir(blocks);
        }
        Ok(())
    }
}

/// The blocks of a linear directory: `.`, `..`, then the entries, each block ending in
/// the 12-byte checksum tail.
fn dir_blocks(fs_seed: u32, ino: u32, parent: u32, ents: &DirEntries, min_blocks: usize) -> Vec<u8> {
    const SPACE: usize = BLOCK_BYTES - DIR_TAIL_LEN;
    let seed = inode_csum_seed(fs_seed, ino, 0);
    let mut out: Vec<u8> = Vec::new();
    let mut cur = vec![0u8; BLOCK_BYTES];
    let mut pos = 0usize;
    let mut last = 0usize;
    let finish = |cur: &mut Vec<u8>, last: usize, out: &mut Vec<u8>| {
        put16(cur, last + 4, low_u16(u64_from_usize(SPACE - last)));
        put16(cur, SPACE + 4, low_u16(u64_from_usize(DIR_TAIL_LEN)));
        cur[SPACE + 7] = DIR_TAIL_FT;
        let c = csum(seed, &cur[..SPACE]);
        put32(cur, SPACE + 8, c);
        out.extend_from_slice(cur);
        cur.fill(0);
    };
    let dots: [(&[u8], u32, u8); 2] = [(b".", ino, ftype::DIR), (b"..", parent, ftype::DIR)];
    let all = dots.iter().map(|&(n, i, t)| (n, i, t)).chain(ents.iter().map(|(n, i, t)| (n.as_slice(), *i, *t)));
    for (name, n, t) in all {
        let rec = (8 + name.len()).next_multiple_of(4);
        if pos + rec > SPACE {
            finish(&mut cur, last, &mut out);
            pos = 0;
        }
        // rec is at most 8 + 255 rounded up, name lengths at most MAX_NAME_LEN.
        let head = DirEntryHead {
            inode: n.into(),
            rec_len: low_u16(u64_from_usize(rec)).into(),
            name_len: low_u8(u64_from_usize(name.len())),
            file_type: t,
        };
        cur[pos..pos + 8].copy_from_slice(head.as_bytes());
        cur[pos + 8..pos + 8 + name.len()].copy_from_slice(name);
        last = pos;
        pos += rec;
    }
    finish(&mut cur, last, &mut out);
    while out.len() < min_blocks * BLOCK_BYTES {
        // An empty block: one unused entry spanning it.
        finish(&mut cur, 0, &mut out);
    }
    out
}

/// A planned filesystem: where everything went.
#[derive(Debug, Default)]
struct Fs {
    metas: Vec<GroupMeta>,
    /// Every used block range (fixed metadata and allocations).
    used: Vec<(u64, u64)>,
    /// Synthesized blocks by block number.
    blocks: BTreeMap<u64, Vec<u8>>,
    /// File data: `(first block, blocks, file, byte offset in the file)`.
    files: Vec<(u64, u64, FileData, u64)>,
}

/// Allocates every block and builds extent trees and xattr blocks.
fn layout(p: &mut Planner, geo: Geo, fs_seed: u32) -> Result<Fs> {
    let (fixed, metas) = place_fixed(&geo)?;
    let mut fs = Fs { metas, used: fixed.clone(), ..Fs::default() };
    let mut alloc = Alloc { fixed, next_fixed: 0, cursor: 0, end: geo.blocks };
    let full = || Error::argument(format!("the content does not fit in {} MiB", (geo.blocks * BLOCK) >> 20));

    // The journal: inode 8, zeros but for its superblock.
    let jblocks = journal_blocks(geo.blocks);
    let jmeta = Meta { atime: Some(p.now), ctime: Some(p.now), ..Meta::new(0o600, p.now) };
    let mut journal = Ino::new(0o100600, jmeta, Body::Journal(jblocks));
    journal.size = jblocks * BLOCK;
    p.inos[usize_from(JOURNAL_INO)] = Some(journal);
    let oblocks = orphan_blocks(geo.blocks);
    let orphan = p.ino(ORPHAN_INO);
    orphan.body = Body::Orphan(oblocks);
    orphan.size = oblocks * BLOCK;

    // Metadata-like bodies first (journal, directories, slow symlinks), then file data in
    // placement order, then xattr blocks and extent tree blocks.
    let mut order: Vec<u32> = vec![JOURNAL_INO];
    order.extend((FIRST_INO..low_u32(u64_from_usize(p.inos.len()))).filter(|&n| {
        p.inos[usize_from(n)]
            .as_ref()
            .is_some_and(|i| matches!(i.body, Body::Dir(_) | Body::Symlink(_) | Body::Orphan(_)))
    }));
    order.insert(1, ROOT_INO);
    order.extend(p.data_order.iter().copied());
    for n in order {
        let ino = p.ino(n);
        let runs: Vec<(u64, u64)> = match &ino.body {
            Body::File { runs, .. } => runs.clone(),
            Body::None => Vec::new(),
            _ => vec![(0, ino.body_blocks())],
        };
        for (first, count) in runs {
            let got = alloc.take(count).ok_or_else(full)?;
            let mut logical = first;
            for (phys, len) in got {
                fs.used.push((phys, len));
                if let Body::File { data, .. } = &ino.body {
                    fs.files.push((phys, len, data.clone(), logical * BLOCK));
                }
                let mut done = 0;
                while done < len {
                    let k = (len - done).min(MAX_EXTENT_LEN);
                    ino.extents.push((logical + done, phys + done, k));
                    done += k;
                }
                logical += len;
            }
            ino.blocks += count;
        }
        match &ino.body {
            Body::Dir(b) | Body::Symlink(b) => {
                let mut at = 0usize;
                for &(_, phys, len) in &ino.extents {
                    for k in 0..len {
                        fs.blocks.insert(phys + k, b[at..at + BLOCK_BYTES].to_vec());
                        at += BLOCK_BYTES;
                    }
                }
            }
            Body::Journal(n) => {
                let first = ino.extents.first().map_or(0, |e| e.1);
                fs.blocks.insert(first, journal_superblock(*n, &[0; 16]));
            }
            Body::Orphan(_) => {
                // Empty orphan blocks: the magic, and crc32c (seeded by the inode) of the
                // block number and the entries.
                let seed = inode_csum_seed(fs_seed, ORPHAN_INO, 0);
                for &(_, phys, len) in &ino.extents {
                    for blk in phys..phys + len {
                        let mut b = vec![0u8; BLOCK_BYTES];
                        put32(&mut b, BLOCK_BYTES - 8, ORPHAN_MAGIC);
                        let c = csum(csum(seed, &blk.to_le_bytes()), &b[..BLOCK_BYTES - 8]);
                        put32(&mut b, BLOCK_BYTES - 4, c);
                        fs.blocks.insert(blk, b);
                    }
                }
            }
            _ => {}
        }
    }

    // Xattr blocks, shared between inodes with the same attributes.
    let mut shared: HashMap<Vec<u8>, (u64, u32)> = HashMap::new();
    let mut owners: Vec<(u32, Vec<u8>)> = Vec::new();
    for n in 1..low_u32(u64_from_usize(p.inos.len())) {
        let Some(ino) = p.inos[usize_from(n)].as_mut() else { continue };
        let in_inode = ino.attrs.iter().map(|a| a.entry_len() + a.value_len()).sum::<usize>() + 4;
        if ino.attrs.is_empty() || in_inode <= INODE_SIZE - IN_INODE_FIRST {
            continue;
        }
        let block = xattr_block(&ino.attrs);
        ino.xattr_block = Some(block.clone());
        owners.push((n, block));
    }
    for (n, block) in owners {
        let blk = match shared.get_mut(&block) {
            Some((blk, refs)) => {
                *refs += 1;
                *blk
            }
            None => {
                let got = alloc.take(1).ok_or_else(full)?;
                let blk = got[0].0;
                fs.used.push((blk, 1));
                shared.insert(block.clone(), (blk, 1));
                blk
            }
        };
        let ino = p.ino(n);
        ino.xattr_blk = blk;
        ino.blocks += 1;
    }
    for (mut block, (blk, refs)) in shared {
        put32(&mut block, 4, refs);
        let c = xattr_block_csum(fs_seed, blk, &block);
        put32(&mut block, 0x10, c);
        fs.blocks.insert(blk, block);
    }

    // Extent trees.
    for n in 1..low_u32(u64_from_usize(p.inos.len())) {
        let Some(ino) = p.inos[usize_from(n)].as_mut() else { continue };
        if matches!(ino.body, Body::None) && !matches!(ino.mode & 0xF000, 0x8000 | 0x4000) {
            continue;
        }
        if ino.mode & 0xF000 == 0xA000 && matches!(ino.body, Body::None) {
            continue; // fast symlink
        }
        let seed = inode_csum_seed(fs_seed, n, 0);
        let (root, tree_blocks) = extent_tree(&ino.extents, seed, &mut alloc, &mut fs).ok_or_else(full)?;
        ino.root = Some(root);
        ino.blocks += tree_blocks;
    }
    Ok(fs)
}

/// Builds the extent tree over `extents`: the inode's root, and the blocks below it
/// (leaves of 340 extents, index levels above them) allocated from `alloc`.
fn extent_tree(extents: &[(u64, u64, u64)], seed: u32, alloc: &mut Alloc, fs: &mut Fs) -> Option<([u8; 60], u64)> {
    // Entry counts are at most a block's 340, lengths at most MAX_EXTENT_LEN, logical
    // blocks below MAX_FILE_BLOCKS (2^32), physical blocks 48 bits: the splits lose nothing.
    let header = |b: &mut [u8], entries: usize, max: usize, depth: u16| -> Option<()> {
        let h = ExtentHeader {
            magic: EXTENT_MAGIC.into(),
            entries: low_u16(u64_from_usize(entries)).into(),
            max: low_u16(u64_from_usize(max)).into(),
            depth: depth.into(),
            generation: 0.into(),
        };
        diskcast_layout::put(b, 0, &h, "ext4 extent header").ok()
    };
    let leaf = |b: &mut [u8], at: usize, (logical, phys, len): (u64, u64, u64)| -> Option<()> {
        let x = Extent {
            block: low_u32(logical).into(),
            len: low_u16(len).into(),
            start_hi: low_u16(phys >> 32).into(),
            start_lo: low_u32(phys).into(),
        };
        diskcast_layout::put(b, at, &x, "ext4 extent").ok()
    };
    let index = |b: &mut [u8], at: usize, (logical, child): (u64, u64)| -> Option<()> {
        let x = ExtentIndex {
            block: low_u32(logical).into(),
            leaf_lo: low_u32(child).into(),
            leaf_hi: low_u16(child >> 32).into(),
            unused: 0.into(),
        };
        diskcast_layout::put(b, at, &x, "ext4 extent index").ok()
    };
    let mut root = [0u8; 60];
    if extents.len() <= ROOT_EXTENTS {
        header(&mut root, extents.len(), ROOT_EXTENTS, 0)?;
        for (i, &e) in extents.iter().enumerate() {
            leaf(&mut root, 12 + 12 * i, e)?;
        }
        return Some((root, 0));
    }
    let mut tree_blocks = 0;
    let mut take = |fs: &mut Fs| -> Option<u64> {
        let b = alloc.take(1)?[0].0;
        fs.used.push((b, 1));
        tree_blocks += 1;
        Some(b)
    };
    let seal = |b: &mut Vec<u8>| {
        let tail = 12 + 12 * BLOCK_EXTENTS;
        let c = csum(seed, &b[..tail]);
        put32(b, tail, c);
    };
    let mut level: Vec<(u64, u64)> = Vec::new();
    for chunk in extents.chunks(BLOCK_EXTENTS) {
        let blk = take(fs)?;
        let mut b = vec![0u8; BLOCK_BYTES];
        header(&mut b, chunk.len(), BLOCK_EXTENTS, 0)?;
        for (i, &e) in chunk.iter().enumerate() {
            leaf(&mut b, 12 + 12 * i, e)?;
        }
        seal(&mut b);
        fs.blocks.insert(blk, b);
        level.push((chunk[0].0, blk));
    }
    let mut depth = 1u16;
    while level.len() > ROOT_EXTENTS {
        let mut up = Vec::new();
        for chunk in level.chunks(BLOCK_EXTENTS) {
            let blk = take(fs)?;
            let mut b = vec![0u8; BLOCK_BYTES];
            header(&mut b, chunk.len(), BLOCK_EXTENTS, depth)?;
            for (i, &e) in chunk.iter().enumerate() {
                index(&mut b, 12 + 12 * i, e)?;
            }
            seal(&mut b);
            fs.blocks.insert(blk, b);
            up.push((chunk[0].0, blk));
        }
        level = up;
        depth += 1;
    }
    header(&mut root, level.len(), ROOT_EXTENTS, depth)?;
    for (i, &e) in level.iter().enumerate() {
        index(&mut root, 12 + 12 * i, e)?;
    }
    Some((root, tree_blocks))
}

/// Writes xattr entries (sorted) from `at`, their values packed downward from `end`;
/// value offsets count from `base`. Returns false when they do not fit.
fn put_xattrs(buf: &mut [u8], attrs: &[Attr], at: usize, base: usize, end: usize) -> bool {
    let mut pos = at;
    let mut vend = end;
    for a in attrs {
        let vlen = a.value_len();
        if pos + a.entry_len() + 4 > vend.saturating_sub(vlen) {
            return false;
        }
        vend -= vlen;
        buf[vend..vend + a.value.len()].copy_from_slice(&a.value);
        buf[pos] = low_u8(u64_from_usize(a.suffix.len()));
        buf[pos + 1] = a.index;
        put16(buf, pos + 2, if a.value.is_empty() { 0 } else { low_u16(u64_from_usize(vend - base)) });
        put32(buf, pos + 8, low_u32(u64_from_usize(a.value.len())));
        put32(buf, pos + 12, xattr_entry_hash(&a.suffix, &a.value));
        buf[pos + 16..pos + 16 + a.suffix.len()].copy_from_slice(&a.suffix);
        pos += a.entry_len();
    }
    true
}

/// An xattr block (refcount and checksum filled in once its place is known).
fn xattr_block(attrs: &[Attr]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_BYTES];
    put32(&mut b, 0, XATTR_MAGIC);
    put32(&mut b, 8, 1); // h_blocks
    let fits = put_xattrs(&mut b, attrs, 32, 0, BLOCK_BYTES);
    debug_assert!(fits, "sizes were checked when the attributes were collected");
    // h_hash: the entry hashes folded together (ext2fs_ext_attr_block_rehash).
    let mut h: u32 = 0;
    for a in attrs {
        h = (h << 16) ^ (h >> 16) ^ xattr_entry_hash(&a.suffix, &a.value);
    }
    put32(&mut b, 0xC, h);
    b
}

/// The jbd2 superblock of an empty journal of `blocks` blocks (big-endian, version 2),
/// laid out by [`JournalSuperblock`], the struct the journal replay reads.
fn journal_superblock(blocks: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut sb = JournalSuperblock::new_zeroed();
    sb.magic = Be32::new(JBD2_MAGIC);
    sb.blocktype = Be32::new(JBD2_SUPERBLOCK_V2);
    sb.blocksize = Be32::new(BLOCK_U32);
    sb.maxlen = Be32::new(low_u32(blocks));
    sb.first = Be32::new(1);
    sb.sequence = Be32::new(1);
    sb.uuid = *uuid;
    sb.nr_users = Be32::new(1);
    let mut b = vec![0u8; BLOCK_BYTES];
    b[..size_of::<JournalSuperblock>()].copy_from_slice(sb.as_bytes());
    b
}

impl Fs {
    /// Synthesizes inode tables, bitmaps, descriptors and superblocks and places it all.
    #[allow(clippy::too_many_arguments)]
    fn image(
        mut self,
        p: &Planner,
        geo: Geo,
        image_size: u64,
        uuid: &[u8; 16],
        label: &str,
        fs_seed: u32,
        now: i64,
    ) -> Result<PlannedImage> {
        let ipg = u64::from(geo.ipg);
        // Inode tables (only the blocks holding used inodes).
        let mut used_inodes = vec![Vec::<u64>::new(); ix(geo.groups)];
        let mut dirs_in = vec![0u64; ix(geo.groups)];
        let mut journal_root = [0u8; 60];
        for (n, slot) in p.inos.iter().enumerate() {
            let Some(ino) = slot else { continue };
            let n = u64_from_usize(n);
            let g = ix((n - 1) / ipg);
            let idx = (n - 1) % ipg;
            used_inodes[g].push(idx);
            if ino.is_dir() {
                dirs_in[g] += 1;
            }
            let raw = inode_bytes(low_u32(n), ino, fs_seed, p.now);
            if n == u64::from(JOURNAL_INO) {
                journal_root.copy_from_slice(&raw[offset_of!(InodeBase, block)..][..IBLOCK_LEN]);
            }
            let blk = self.metas[g].inode_table + idx / u64::from(INODES_PER_BLOCK);
            let at = ix(idx % u64::from(INODES_PER_BLOCK)) * INODE_SIZE;
            let b = self.blocks.entry(blk).or_insert_with(|| vec![0u8; BLOCK_BYTES]);
            b[at..at + INODE_SIZE].copy_from_slice(&raw);
        }
        // The reserved inodes 1..10 are in use even when empty.
        for idx in 0..u64::from(FIRST_INO - 1) {
            if !used_inodes[0].contains(&idx) {
                used_inodes[0].push(idx);
            }
        }

        // Block usage per group.
        self.used.sort_unstable();
        let mut used_per_group = vec![0u64; ix(geo.groups)];
        let mut bitmaps: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for &(s, l) in &self.used {
            let mut b = s;
            while b < s + l {
                let g = b / BPG;
                let end = (s + l).min((g + 1) * BPG);
                used_per_group[ix(g)] += end - b;
                let bm = bitmaps.entry(g).or_insert_with(|| vec![0u8; BLOCK_BYTES]);
                set_bits(bm, ix(b - g * BPG), ix(end - b));
                b = end;
            }
        }
        let last = geo.groups - 1;
        let tail = geo.group_len(last);
        if tail < BPG {
            let bm = bitmaps.entry(last).or_insert_with(|| vec![0u8; BLOCK_BYTES]);
            set_bits(bm, ix(tail), ix(BPG - tail));
        }

        // Descriptors and bitmaps.
        let empty_ibm = {
            let mut b = vec![0u8; BLOCK_BYTES];
            set_bits(&mut b, ix(ipg), ix(BPG - ipg));
            b
        };
        let zero_block = vec![0u8; BLOCK_BYTES];
        let mut gdt = vec![0u8; ix(geo.gdt * BLOCK)];
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        for g in 0..geo.groups {
            let gi = ix(g);
            let m = self.metas[gi];
            let bbm = bitmaps.remove(&g);
            let mut ibm = empty_ibm.clone();
            for &i in &used_inodes[gi] {
                set_bits(&mut ibm, ix(i), 1);
            }
            let bcs = csum(fs_seed, bbm.as_deref().unwrap_or(&zero_block));
            let ics = csum(fs_seed, &ibm[..ix(ipg / 8)]);
            let fb = geo.group_len(g) - used_per_group[gi];
            let fi = ipg - u64_from_usize(used_inodes[gi].len());
            free_blocks += fb;
            free_inodes += fi;
            let top = used_inodes[gi].iter().max().map_or(0, |&i| i + 1);
            // Per-group counts are at most BPG (2^15): the 16-bit halves lose nothing.
            let (fb, fi, dirs, unused) = (low_u32(fb), low_u32(fi), low_u32(dirs_in[gi]), low_u32(ipg - top));
            let mut d = GroupDesc {
                block_bitmap_lo: lo32(m.block_bitmap),
                block_bitmap_hi: hi32(m.block_bitmap),
                inode_bitmap_lo: lo32(m.inode_bitmap),
                inode_bitmap_hi: hi32(m.inode_bitmap),
                inode_table_lo: lo32(m.inode_table),
                inode_table_hi: hi32(m.inode_table),
                free_blocks_count_lo: lo16(fb),
                free_blocks_count_hi: hi16(fb),
                free_inodes_count_lo: lo16(fi),
                free_inodes_count_hi: hi16(fi),
                used_dirs_count_lo: lo16(dirs),
                used_dirs_count_hi: hi16(dirs),
                flags: Le16::new(bgflag::ITABLE_ZEROED),
                block_bitmap_csum_lo: lo16(bcs),
                block_bitmap_csum_hi: hi16(bcs),
                inode_bitmap_csum_lo: lo16(ics),
                inode_bitmap_csum_hi: hi16(ics),
                itable_unused_lo: lo16(unused),
                itable_unused_hi: hi16(unused),
                ..GroupDesc::default()
            };
            d.checksum = Le16::new(desc_csum(fs_seed, fit(g, "ext4 group number")?, &d));
            gdt[gi * DESC_SIZE..(gi + 1) * DESC_SIZE].copy_from_slice(d.as_bytes());
            if let Some(b) = bbm {
                self.blocks.insert(m.block_bitmap, b);
            }
            self.blocks.insert(m.inode_bitmap, ibm);
        }

        // Superblocks and descriptor copies.
        let sbi = SuperInfo { geo, uuid, label, fs_seed, now, free_blocks, free_inodes, journal_root };
        for g in (0..geo.groups).filter(|&g| has_super(g)) {
            let start = geo.group_start(g);
            // s_block_group_nr is 16 bits; mke2fs stores the low half too.
            let sb = superblock(&sbi, low_u16(g))?;
            let mut b0 = vec![0u8; BLOCK_BYTES];
            let at = if g == 0 { 1024 } else { 0 };
            b0[at..at + SB_SIZE].copy_from_slice(sb.as_bytes());
            self.blocks.insert(start, b0);
            for k in 0..geo.gdt {
                let s = ix(k * BLOCK);
                self.blocks.insert(start + 1 + k, gdt[s..s + BLOCK_BYTES].to_vec());
            }
        }

        // Place: runs of synthesized blocks, then file data.
        let mut img = PlannedImage::new(image_size, "ext4");
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (blk, bytes) in std::mem::take(&mut self.blocks) {
            match &mut run {
                Some((s, v)) if *s + u64_from_usize(v.len()) / BLOCK == blk => v.extend_from_slice(&bytes),
                _ => {
                    if let Some((s, v)) = run.take() {
                        img.place_bytes(s * BLOCK, v)?;
                    }
                    run = Some((blk, bytes));
                }
            }
        }
        if let Some((s, v)) = run {
            img.place_bytes(s * BLOCK, v)?;
        }
        for (phys, len, data, offset) in self.files {
            img.place(phys * BLOCK, len * BLOCK, Piece::File { data, offset })?;
        }
        img.seal()
    }
}

fn set_bits(bm: &mut [u8], first: usize, count: usize) {
    for i in first..first + count {
        bm[i / 8] |= 1 << (i % 8);
    }
}

/// What every superblock copy says.
struct SuperInfo<'a> {
    geo: Geo,
    uuid: &'a [u8; 16],
    label: &'a str,
    fs_seed: u32,
    now: i64,
    free_blocks: u64,
    free_inodes: u64,
    journal_root: [u8; 60],
}

fn superblock(s: &SuperInfo, group: u16) -> Result<SuperBlock> {
    let geo = s.geo;
    let now = Le32::new(u32::try_from(s.now.clamp(0, u32::MAX.into())).unwrap_or(u32::MAX));
    let bpg = Le32::new(fit(BPG, "ext4 blocks per group")?);
    let jsize = journal_blocks(geo.blocks) * BLOCK;
    let mut label = [0u8; 16];
    label[..s.label.len()].copy_from_slice(s.label.as_bytes());
    // The htree hash seed: derived from the UUID so the same id gives the same bytes.
    let hash_seed = [0u32, 1, 2, 3].map(|i| Le32::new(csum(0x6861_7368 ^ i, s.uuid)));
    let mut b = SuperBlock {
        inodes_count: Le32::new(fit(geo.inodes(), "ext4 s_inodes_count")?),
        blocks_count_lo: lo32(geo.blocks),
        blocks_count_hi: hi32(geo.blocks),
        r_blocks_count_lo: lo32(geo.blocks / 20),
        r_blocks_count_hi: hi32(geo.blocks / 20),
        free_blocks_count_lo: lo32(s.free_blocks),
        free_blocks_count_hi: hi32(s.free_blocks),
        free_inodes_count: Le32::new(fit(s.free_inodes, "ext4 s_free_inodes_count")?),
        first_data_block: Le32::ZERO,
        log_block_size: Le32::new(2),
        log_cluster_size: Le32::new(2),
        blocks_per_group: bpg,
        clusters_per_group: bpg,
        inodes_per_group: Le32::new(geo.ipg),
        wtime: now,
        max_mnt_count: Le16::new(0xFFFF),
        magic: Le16::new(MAGIC),
        state: Le16::new(1),
        errors: Le16::new(1),
        lastcheck: now,
        creator_os: Le32::ZERO,
        rev_level: Le32::new(1),
        first_ino: Le32::new(FIRST_INO),
        inode_size: Le16::new(fit(u64_from_usize(INODE_SIZE), "ext4 inode size")?),
        block_group_nr: Le16::new(group),
        feature_compat: Le32::new(compat::HAS_JOURNAL | compat::EXT_ATTR | compat::DIR_INDEX | compat::ORPHAN_FILE),
        orphan_file_inum: Le32::new(ORPHAN_INO),
        feature_incompat: Le32::new(
            incompat::FILETYPE | incompat::EXTENTS | incompat::BIT64 | incompat::FLEX_BG | incompat::CSUM_SEED,
        ),
        feature_ro_compat: Le32::new(
            ro_compat::SPARSE_SUPER
                | ro_compat::LARGE_FILE
                | ro_compat::HUGE_FILE
                | ro_compat::DIR_NLINK
                | ro_compat::EXTRA_ISIZE
                | ro_compat::METADATA_CSUM,
        ),
        uuid: *s.uuid,
        volume_name: label,
        journal_inum: Le32::new(JOURNAL_INO),
        hash_seed,
        def_hash_version: 1, // half_md4
        jnl_backup_type: 1,  // s_jnl_blocks holds a copy of the journal's i_block
        desc_size: Le16::new(fit(u64_from_usize(DESC_SIZE), "ext4 descriptor size")?),
        default_mount_opts: Le32::new(0x4 | 0x8), // user_xattr, acl
        mkfs_time: now,
        jnl_blocks: s.journal_root,
        jnl_size_hi: Le32::new(high_u32(jsize)),
        jnl_size_lo: Le32::new(low_u32(jsize)),
        min_extra_isize: Le16::new(EXTRA_ISIZE),
        want_extra_isize: Le16::new(EXTRA_ISIZE),
        flags: Le32::new(1), // signed directory hash, as x86 mke2fs
        log_groups_per_flex: fit(LOG_GROUPS_PER_FLEX, "ext4 s_log_groups_per_flex")?,
        checksum_type: 1, // crc32c
        checksum_seed: Le32::new(s.fs_seed),
        ..SuperBlock::new_zeroed()
    };
    b.checksum = Le32::new(csum(!0, &b.as_bytes()[..offset_of!(SuperBlock, checksum)]));
    Ok(b)
}

/// The halves of a value that ext4 splits into `_lo`/`_hi` fields.
fn lo32(v: u64) -> Le32 {
    Le32::new(low_u32(v))
}
fn hi32(v: u64) -> Le32 {
    Le32::new(high_u32(v))
}
fn lo16(v: u32) -> Le16 {
    Le16::new(low_u16(u64::from(v)))
}
fn hi16(v: u32) -> Le16 {
    Le16::new(low_u16(u64::from(v >> 16)))
}

/// An inode record with its checksum.
fn inode_bytes(n: u32, ino: &Ino, fs_seed: u32, now: Timestamp) -> [u8; INODE_SIZE] {
    let m = &ino.meta;
    let time = |t: Timestamp| {
        let (s, x) = encode_time(t.sec, t.nsec);
        (Le32::new(s), Le32::new(x))
    };
    let (atime, atime_extra) = time(m.atime.unwrap_or(m.mtime));
    let (ctime, ctime_extra) = time(m.ctime.unwrap_or(m.mtime));
    let (mtime, mtime_extra) = time(m.mtime);
    let (crtime, crtime_extra) = time(now);
    // i_blocks is 48 bits: a 16 TiB file has 2^35 sectors.
    let sectors = ino.blocks * (BLOCK / 512);
    let (flags, block) = match &ino.root {
        Some(root) => (iflag::EXTENTS, *root),
        None => (0, ino.iblock),
    };
    let base = InodeBase {
        mode: Le16::new(ino.mode),
        uid: lo16(m.uid),
        uid_high: hi16(m.uid),
        gid: lo16(m.gid),
        gid_high: hi16(m.gid),
        size_lo: lo32(ino.size),
        size_high: hi32(ino.size),
        atime,
        ctime,
        mtime,
        // Links are clamped below MAX_LINKS (65000) when planned.
        links_count: Le16::new(low_u16(u64::from(ino.links))),
        blocks_lo: lo32(sectors),
        blocks_high: Le16::new(low_u16(sectors >> 32)),
        flags: Le32::new(flags),
        block,
        file_acl_lo: lo32(ino.xattr_blk),
        file_acl_high: Le16::new(low_u16(ino.xattr_blk >> 32)),
        ..InodeBase::new_zeroed()
    };
    let extra = InodeExtra {
        extra_isize: Le16::new(EXTRA_ISIZE),
        ctime_extra,
        mtime_extra,
        atime_extra,
        crtime,
        crtime_extra,
        ..InodeExtra::default()
    };
    let mut b = [0u8; INODE_SIZE];
    b[..INODE_BASE].copy_from_slice(base.as_bytes());
    b[INODE_BASE..IN_INODE_XATTR].copy_from_slice(extra.as_bytes());
    if ino.xattr_block.is_none() && !ino.attrs.is_empty() {
        put32(&mut b, IN_INODE_XATTR, XATTR_MAGIC);
        let fits = put_xattrs(&mut b, &ino.attrs, IN_INODE_FIRST, IN_INODE_FIRST, INODE_SIZE);
        debug_assert!(fits);
    }
    let c = inode_csum(fs_seed, n, &b);
    b[offset_of!(InodeBase, checksum_lo)..][..2].copy_from_slice(lo16(c).as_bytes());
    b[INODE_BASE + offset_of!(InodeExtra, checksum_hi)..][..2].copy_from_slice(hi16(c).as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_filesystem_keeps_its_inode_count_below_2_to_the_32() {
        // 64 TiB at one inode per 16 KiB would be 2^32 inodes, one more than
        // s_inodes_count holds (it used to be written as 0).
        let g = Geo::new(MAX_BLOCKS, 0).unwrap();
        assert_eq!(g.groups, 1 << 19);
        assert!(g.inodes() <= u64::from(u32::MAX) && g.inodes() > 4_000_000_000, "{}", g.inodes());
        let e = Geo::new(MAX_BLOCKS, u64::from(u32::MAX)).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument);
        assert_eq!(e.to_string(), "4294967295 inodes do not fit in an ext4 filesystem of 67108864 MiB");
    }
}
