//! Replaying a dirty log in memory: the committed transactions between the log's tail and
//! head are applied, in order, to an [`Overlay`] of 512-byte sectors that the reader
//! consults before the disk. The image is never written.
//!
//! What is applied (as the kernel recovers at mount, "XFS Algorithms & Data Structures",
//! log items):
//! - buffer items: their regions by the dirty bitmap (128-byte chunks), cancelled buffers
//!   skipped (a cancel record frees the buffer: earlier items for it are not replayed);
//!   v5 metadata CRCs recomputed afterwards, as the kernel's write verifiers do;
//! - inode items: the logged core (host byte order in the log, converted to the disk's),
//!   the data and attribute forks (local data, extents, B+tree root, device number);
//! - icreate items: new inode chunks, initialised as mkfs/the kernel initialise them.
//!
//! Skipped, because a read-only view does not need them: free-extent, reverse-map and
//! refcount intents and their done items (EFI/EFD, RUI/RUD, CUI/CUD: they change free
//! space and the rmap/refcount B+trees only, which the reader never reads), quota items
//! (the reader does not read quota files), inode buffers logged for the unlinked list
//! (`di_next_unlinked` only: unlinked inodes are not in the tree).
//! Refused by name: a block-mapping, attribute or exchange intent (BUI, ATTRI, XMI)
//! without its done item, which the kernel would finish at mount and which changes
//! files; any item type not listed here.

use crate::fs::Fs;
use crate::layout::*;
use crate::log::{bad, needs_recovery};
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result};
use diskcast_layout::{u64_from_usize, usize_from};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Regions one log item may have: its format and one per run of dirty 128-byte chunks of
/// a buffer of at most 64 KiB (512 chunks, at most 256 runs); inode items have 4.
pub const MAX_ITEM_REGIONS: usize = 1 + 512;
/// Largest buffer replayed: XFS's largest metadata block (a 64 KiB directory block).
pub const MAX_BUF_BYTES: u64 = 64 * 1024;
/// Bytes of buffers replayed in all (each costs a read and a copy): a real log's
/// checkpoints change at most a few times the log's size; this bounds the time a hostile
/// log of many tiny items over large buffers can take.
pub const MAX_REPLAY_WORK: u64 = 8 << 30;
/// Replayed sectors kept in memory: the overlay is the changed metadata only.
pub const MAX_OVERLAY_BYTES: u64 = 1 << 30;
/// Inodes one icreate item may initialise: the largest inode chunk (64 inodes).
const MAX_ICREATE_INODES: u32 = 64;

/// Log item types (`xfs_log_item.h`).
mod li {
    pub const EFI: u16 = 0x1236;
    pub const EFD: u16 = 0x1237;
    pub const INODE: u16 = 0x123b;
    pub const BUF: u16 = 0x123c;
    pub const DQUOT: u16 = 0x123d;
    pub const QUOTAOFF: u16 = 0x123e;
    pub const ICREATE: u16 = 0x123f;
    pub const RUI: u16 = 0x1240;
    pub const RUD: u16 = 0x1241;
    pub const CUI: u16 = 0x1242;
    pub const CUD: u16 = 0x1243;
    pub const BUI: u16 = 0x1244;
    pub const BUD: u16 = 0x1245;
    pub const ATTRI: u16 = 0x1246;
    pub const ATTRD: u16 = 0x1247;
    pub const XMI: u16 = 0x1248;
    pub const XMD: u16 = 0x1249;
}

/// Buffer log format flags.
const BLF_INODE_BUF: u16 = 0x1;
const BLF_CANCEL: u16 = 0x2;
const BLF_DQUOT_BUFS: u16 = 0x4 | 0x8 | 0x10;
/// Bytes per bit of a buffer's dirty bitmap.
const BLF_CHUNK: u64 = 128;

/// Inode log format field bits.
mod ilog {
    pub const DDATA: u32 = 0x2;
    pub const DEXT: u32 = 0x4;
    pub const DBROOT: u32 = 0x8;
    pub const DEV: u32 = 0x10;
    pub const ADATA: u32 = 0x40;
    pub const AEXT: u32 = 0x80;
    pub const ABROOT: u32 = 0x100;
    /// The fork's B+tree blocks change owner (an extent swap): the kernel rewrites their
    /// owner fields at replay; refused.
    pub const OWNER: u32 = 0x200 | 0x400;
    pub const DFORK: u32 = DDATA | DEXT | DBROOT;
    pub const AFORK: u32 = ADATA | AEXT | ABROOT;
}

/// The disk with replayed sectors over it.
#[derive(Debug)]
pub struct Overlay {
    disk: Arc<dyn BlockRead>,
    sectors: BTreeMap<u64, Box<[u8; 512]>>,
}

impl Overlay {
    pub fn new(disk: Arc<dyn BlockRead>) -> Overlay {
        Overlay { disk, sectors: BTreeMap::new() }
    }

    /// Stores `buf` (whole sectors) at sector `at`.
    fn store(&mut self, sector: u64, buf: &[u8]) -> Result<()> {
        for (i, s) in buf.chunks_exact(512).enumerate() {
            let mut b = Box::new([0u8; 512]);
            b.copy_from_slice(s);
            self.sectors.insert(sector + u64_from_usize(i), b);
        }
        if u64_from_usize(self.sectors.len()) * 512 > MAX_OVERLAY_BYTES {
            return Err(Error::out_of_bounds(format!(
                "XFS log replay changes more than {MAX_OVERLAY_BYTES} bytes of metadata (MAX_OVERLAY_BYTES)"
            ))
            .with_field("log"));
        }
        Ok(())
    }

    fn read_sectors(&self, sector: u64, count: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; usize::try_from(count * 512).map_err(|_| Error::out_of_bounds("buffer size"))?];
        self.read_at(&mut b, sector * 512)?;
        Ok(b)
    }
}

impl BlockRead for Overlay {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.disk.read_at(buf, offset)?;
        let end = offset + u64_from_usize(buf.len());
        for (&s, data) in self.sectors.range(offset / 512..end.div_ceil(512)) {
            let (from, to) = ((s * 512).max(offset), (s * 512 + 512).min(end));
            let src = &data[usize::try_from(from - s * 512).unwrap_or(0)..usize::try_from(to - s * 512).unwrap_or(0)];
            let dst = usize::try_from(from - offset).unwrap_or(0);
            buf[dst..dst + src.len()].copy_from_slice(src);
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let e = self.disk.extent_at(offset, max_len)?;
        if e.alloc == Alloc::Data {
            return Ok(e);
        }
        match self.sectors.range(offset / 512..(offset + e.len).div_ceil(512)).next() {
            None => Ok(e),
            Some((&s, _)) if s * 512 <= offset => {
                Ok(Extent { offset, len: (s * 512 + 512 - offset).min(e.len), alloc: Alloc::Data })
            }
            Some((&s, _)) => Ok(Extent { offset, len: s * 512 - offset, alloc: e.alloc }),
        }
    }

    fn info(&self) -> ImageInfo {
        self.disk.info()
    }
}

/// One log item: its regions, the first being its format.
#[derive(Debug, Default)]
pub struct Item {
    pub regions: Vec<Vec<u8>>,
}

impl Item {
    fn kind(&self) -> u16 {
        self.regions.first().map_or(0, |r| le16(r, 0))
    }
    /// Regions the item says it has (0 until its format's first 4 bytes are in).
    pub fn want(&self) -> usize {
        self.regions.first().filter(|r| r.len() >= 4).map_or(0, |r| usize::from(le16(r, 2)))
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}
fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Applies the committed transactions (each a list of items, in commit order) over the
/// filesystem's disk.
pub fn apply(fs: &Fs, transactions: &[Vec<Item>]) -> Result<Overlay> {
    let mut ov = Overlay::new(fs.disk.clone());
    // Pass 1: cancelled buffers, counted (a buffer may be cancelled more than once).
    let mut cancels: HashMap<(u64, u64), u32> = HashMap::new();
    let mut open_intents: HashMap<u64, &'static str> = HashMap::new();
    for t in transactions {
        for it in t {
            let f = &it.regions[0];
            match it.kind() {
                li::BUF if le16(f, 4) & BLF_CANCEL != 0 => {
                    *cancels.entry((le64(f, 8), u64::from(le16(f, 6)))).or_default() += 1;
                }
                k @ (li::BUI | li::ATTRI | li::XMI) => {
                    let name = match k {
                        li::BUI => "block-mapping intent (BUI)",
                        li::ATTRI => "attribute intent (ATTRI)",
                        _ => "file exchange intent (XMI)",
                    };
                    open_intents.insert(le64(f, 8), name);
                }
                li::BUD | li::ATTRD | li::XMD => {
                    open_intents.remove(&le64(f, 8));
                }
                _ => {}
            }
        }
    }
    if let Some(name) = open_intents.values().next() {
        return Err(needs_recovery(&format!(
            "it holds an unfinished {name}, which the kernel completes at mount and diskcast does not replay"
        )));
    }
    let mut work = 0u64;
    for t in transactions {
        // Buffers and new inode chunks first, inodes after (as the kernel orders a
        // transaction's items: an inode item may land in a chunk its transaction made).
        for pass in 0..2 {
            for it in t {
                match (pass, it.kind()) {
                    (0, li::BUF) => buffer(fs, &mut ov, it, &mut cancels, &mut work)?,
                    (0, li::ICREATE) => icreate(fs, &mut ov, it, &cancels)?,
                    (1, li::INODE) => inode(fs, &mut ov, it, &cancels)?,
                    (
                        _,
                        li::BUF
                        | li::ICREATE
                        | li::INODE
                        | li::EFI
                        | li::EFD
                        | li::RUI
                        | li::RUD
                        | li::CUI
                        | li::CUD
                        | li::BUI
                        | li::BUD
                        | li::ATTRI
                        | li::ATTRD
                        | li::XMI
                        | li::XMD
                        | li::DQUOT
                        | li::QUOTAOFF,
                    ) => {}
                    (_, k) => {
                        return Err(needs_recovery(&format!(
                            "it holds a log item of type {k:#06x}, which diskcast does not replay"
                        )));
                    }
                }
            }
        }
    }
    Ok(ov)
}

/// Whether the buffer `(blkno, len)` is cancelled; a cancel item itself uses one up.
fn cancelled(cancels: &mut HashMap<(u64, u64), u32>, key: (u64, u64), is_cancel: bool) -> bool {
    let Some(n) = cancels.get_mut(&key) else { return false };
    if is_cancel {
        *n -= 1;
        if *n == 0 {
            cancels.remove(&key);
        }
    }
    true
}

/// Sector range of the data device, checked.
fn sectors(fs: &Fs, blkno: u64, count: u64, what: &str) -> Result<()> {
    if count == 0 || blkno.checked_add(count).is_none_or(|e| e > fs.dblocks * (fs.bs / 512)) {
        return Err(bad(format!("{what}: {count} sectors at sector {blkno} lie outside the filesystem")));
    }
    Ok(())
}

fn buffer(fs: &Fs, ov: &mut Overlay, it: &Item, cancels: &mut HashMap<(u64, u64), u32>, work: &mut u64) -> Result<()> {
    let f = &it.regions[0];
    let (flags, len, blkno) = (le16(f, 4), u64::from(le16(f, 6)), le64(f, 8));
    if f.len() < 20 {
        return Err(bad(format!("a buffer item's format of {} bytes", f.len())));
    }
    if cancelled(cancels, (blkno, len), flags & BLF_CANCEL != 0) {
        return Ok(());
    }
    // Inode buffers carry only the unlinked list pointers; quota buffers, quotas.
    if flags & (BLF_INODE_BUF | BLF_DQUOT_BUFS) != 0 {
        return Ok(());
    }
    let what = format!("buffer item for sector {blkno}");
    if len * 512 > MAX_BUF_BYTES {
        return Err(bad(format!("{what}: {len} sectors, more than MAX_BUF_BYTES ({MAX_BUF_BYTES})")));
    }
    sectors(fs, blkno, len, &what)?;
    *work += len * 512;
    if *work > MAX_REPLAY_WORK {
        return Err(bad(format!("replays more than MAX_REPLAY_WORK ({MAX_REPLAY_WORK}) bytes of buffers")));
    }
    let map_words = usize_from(le32(f, 16));
    let map_end = map_words.checked_mul(4).and_then(|n| n.checked_add(20)).unwrap_or(usize::MAX);
    if map_end > f.len() || map_words > 16 {
        return Err(bad(format!("{what}: a dirty bitmap of {map_words} words")));
    }
    let bit = |i: u64| le32(f, 20 + usize::try_from(i / 32).unwrap_or(0) * 4) >> (i % 32) & 1 != 0;
    let nbits = u64_from_usize(map_words) * 32;
    let mut buf = ov.read_sectors(blkno, len)?;
    let mut region = 1;
    let mut i = 0;
    while i < nbits && region < it.regions.len() {
        if !bit(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < nbits && bit(i) {
            i += 1;
        }
        let (from, run) = (start * BLF_CHUNK, (i - start) * BLF_CHUNK);
        if from + run > u64_from_usize(buf.len()) {
            return Err(bad(format!("{what}: dirty bytes {from}+{run} lie past its {} bytes", buf.len())));
        }
        let r = &it.regions[region];
        let n = r.len().min(usize::try_from(run).unwrap_or(0));
        let at = usize::try_from(from).unwrap_or(0);
        buf[at..at + n].copy_from_slice(&r[..n]);
        region += 1;
    }
    fix_crc(fs, &mut buf)?;
    ov.store(blkno, &buf)
}

/// Recomputes the CRC of a v5 metadata block the reader checks, found by its magic.
fn fix_crc(fs: &Fs, buf: &mut [u8]) -> Result<()> {
    if !fs.v5 || buf.len() < 64 {
        return Ok(());
    }
    let m32 = be32(buf, 0);
    let m16 = u16::from_be_bytes([buf[8], buf[9]]);
    let at = match m32 {
        SB_MAGIC => Some((off::SB_CRC, 512)),
        AGF_MAGIC => Some((off::AGF_CRC, 512)),
        AGI_MAGIC => Some((off::AGI_CRC, 512)),
        BMAP3_MAGIC => Some((off::BMBT3_CRC, buf.len())),
        DIR3_BLOCK_MAGIC | DIR3_DATA_MAGIC | DIR3_FREE_MAGIC => Some((off::DIR3_CRC, buf.len())),
        SYMLINK_MAGIC | ATTR_RMT_MAGIC => Some((off::RMT_CRC, buf.len())),
        _ if matches!(m16, ATTR3_LEAF_MAGIC | DA3_NODE_MAGIC | DIR3_LEAF1_MAGIC | DIR3_LEAFN_MAGIC) => {
            Some((off::DA3_CRC, buf.len()))
        }
        _ => None,
    };
    if let Some((at, len)) = at {
        let len = len.min(buf.len());
        let c = crc(&buf[..len], at)?;
        buf[at..at + 4].copy_from_slice(&c.to_le_bytes());
    }
    Ok(())
}

/// (offset, width) of the inode core's integers, converted from the log's host (little-
/// endian) order to the disk's; timestamps are handled apart.
const CORE_INTS: &[(usize, usize)] = &[
    (0, 2),
    (2, 2),
    (6, 2),
    (8, 4),
    (12, 4),
    (16, 4),
    (20, 2),
    (22, 2),
    (56, 8),
    (64, 8),
    (72, 4),
    (76, 4),
    (80, 2),
    (84, 4),
    (88, 2),
    (90, 2),
    (92, 4),
];
const CORE3_INTS: &[(usize, usize)] = &[(104, 8), (112, 8), (120, 8), (128, 4), (152, 8)];
/// Bytes copied as they are: version, format, fork offset, attribute format; v3 padding
/// and UUID.
const CORE_BYTES: &[(usize, usize)] = &[(4, 2), (82, 2)];
const CORE3_BYTES: &[(usize, usize)] = &[(132, 12), (160, 16)];

fn swap_into(dst: &mut [u8], src: &[u8], at: usize, w: usize) {
    for i in 0..w {
        dst[at + i] = src[at + w - 1 - i];
    }
}

fn inode(fs: &Fs, ov: &mut Overlay, it: &Item, cancels: &HashMap<(u64, u64), u32>) -> Result<()> {
    let f = &it.regions[0];
    // The 64-bit layout (56 bytes) or the packed 32-bit one (52 bytes).
    let (ino, blkno, len, boffset) = match f.len() {
        56 => (le64(f, 16), le64(f, 40), le32(f, 48), le32(f, 52)),
        52 => (le64(f, 12), le64(f, 36), le32(f, 44), le32(f, 48)),
        n => return Err(bad(format!("an inode item's format of {n} bytes"))),
    };
    let (fields, asize, dsize) = (le32(f, 4), usize::from(le16(f, 8)), usize::from(le16(f, 10)));
    let rdev = le32(f, if f.len() == 56 { 24 } else { 20 });
    let what = format!("inode item for inode {ino}");
    if cancels.contains_key(&(blkno, u64::from(len))) {
        return Ok(());
    }
    if fields & ilog::OWNER != 0 {
        return Err(needs_recovery(&format!(
            "{what} changes the owner of its B+tree blocks (an extent swap), which diskcast does not replay"
        )));
    }
    sectors(fs, blkno, u64::from(len), &what)?;
    let isize = fs.inodesize();
    if u64::from(boffset) + isize > u64::from(len) * 512 {
        return Err(bad(format!("{what}: inode at byte {boffset} of a {len}-sector cluster")));
    }
    let at = blkno * 512 + u64::from(boffset);
    let mut raw = vec![0u8; usize::try_from(isize).map_err(|_| bad("inode size"))?];
    ov.read_at(&mut raw, at)?;
    let log = it.regions.get(1).ok_or_else(|| bad(format!("{what}: no inode core")))?;
    let (core, lit) = if fs.v5 { (hdr::INODE_V3, hdr::INODE_V3) } else { (96, hdr::INODE_V2) };
    if log.len() < core || le16(log, 0) != INODE_MAGIC {
        return Err(bad(format!("{what}: a logged core of {} bytes without the inode magic", log.len())));
    }
    let v3 = log[4] == 3;
    if v3 != fs.v5 {
        return Err(bad(format!("{what}: a version {} inode on a v{} filesystem", log[4], if fs.v5 { 5 } else { 4 })));
    }
    let flags2 = if v3 { le64(log, 120) } else { 0 };
    for &(o, w) in CORE_INTS.iter().chain(if v3 { CORE3_INTS } else { &[] }) {
        swap_into(&mut raw, log, o, w);
    }
    for &(o, w) in CORE_BYTES.iter().chain(if v3 { CORE3_BYTES } else { &[] }) {
        raw[o..o + w].copy_from_slice(&log[o..o + w]);
    }
    // Extent counters: 64-bit data count at 24 with nrext64, else padding and the flush
    // iteration counter.
    if flags2 & DIFLAG2_NREXT64 != 0 {
        swap_into(&mut raw, log, 24, 8);
    } else {
        raw[24..30].copy_from_slice(&log[24..30]);
        swap_into(&mut raw, log, 30, 2);
    }
    let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
    let stamps: &[usize] = if v3 { &[32, 40, 48, 144] } else { &[32, 40, 48] };
    for &t in stamps {
        if bigtime {
            swap_into(&mut raw, log, t, 8);
        } else {
            swap_into(&mut raw, log, t, 4);
            swap_into(&mut raw, log, t + 4, 4);
        }
    }
    // The forks, in the regions after the core.
    let forkoff = usize::from(raw[82]) * 8;
    let dsize_max = if forkoff == 0 { raw.len() - lit } else { forkoff };
    if lit + dsize_max > raw.len() {
        return Err(bad(format!("{what}: attribute fork offset {forkoff} past the inode")));
    }
    let mut next = 2;
    let mut fork_region = |mask: u32, size: usize, start: usize, room: usize, raw: &mut [u8]| -> Result<()> {
        if fields & mask == 0 {
            return Ok(());
        }
        let r = it.regions.get(next).ok_or_else(|| bad(format!("{what}: a logged fork is missing")))?;
        next += 1;
        let fork = &mut raw[start..start + room];
        if fields & mask & (ilog::DBROOT | ilog::ABROOT) != 0 {
            return broot(fs, r, fork, &what);
        }
        let n = size.min(r.len());
        if n > room {
            return Err(bad(format!("{what}: a logged fork of {n} bytes in {room}")));
        }
        fork[..n].copy_from_slice(&r[..n]);
        Ok(())
    };
    fork_region(ilog::DFORK, dsize, lit, dsize_max, &mut raw)?;
    if forkoff != 0 {
        fork_region(ilog::AFORK, asize, lit + forkoff, raw.len() - lit - forkoff, &mut raw)?;
    }
    if fields & ilog::DEV != 0 {
        raw[lit..lit + 4].copy_from_slice(&rdev.to_be_bytes());
    }
    if v3 {
        let c = crc(&raw, off::INODE_CRC)?;
        raw[off::INODE_CRC..off::INODE_CRC + 4].copy_from_slice(&c.to_le_bytes());
    }
    // The inode lies inside one 512-byte-aligned run: read the sectors around it.
    let first = at / 512;
    let count = (at + isize).div_ceil(512) - first;
    let mut whole = ov.read_sectors(first, count)?;
    let o = usize::try_from(at - first * 512).map_err(|_| bad("offset"))?;
    whole[o..o + raw.len()].copy_from_slice(&raw);
    ov.store(first, &whole)
}

/// A B+tree root as the kernel logs it (a long-form B+tree block: header, keys, pointers
/// for as many records as the logged size holds) into the fork's root form (level,
/// count, keys and pointers for as many records as the fork holds).
fn broot(fs: &Fs, r: &[u8], fork: &mut [u8], what: &str) -> Result<()> {
    let h = if fs.v5 { hdr::BMBT3 } else { hdr::BMBT };
    if r.len() < h || fork.len() < 4 {
        return Err(bad(format!("{what}: a logged B+tree root of {} bytes", r.len())));
    }
    let numrecs = usize::from(u16::from_be_bytes([r[6], r[7]]));
    let (maxin, maxout) = ((r.len() - h) / 16, (fork.len() - 4) / 16);
    if numrecs > maxin || numrecs > maxout {
        return Err(bad(format!("{what}: a logged B+tree root of {numrecs} records")));
    }
    fork.fill(0);
    fork[..4].copy_from_slice(&r[4..8]);
    for i in 0..numrecs {
        fork[4 + i * 8..12 + i * 8].copy_from_slice(&r[h + i * 8..h + 8 + i * 8]);
        let p = h + maxin * 8 + i * 8;
        fork[4 + maxout * 8 + i * 8..12 + maxout * 8 + i * 8].copy_from_slice(&r[p..p + 8]);
    }
    Ok(())
}

fn icreate(fs: &Fs, ov: &mut Overlay, it: &Item, cancels: &HashMap<(u64, u64), u32>) -> Result<()> {
    let f = &it.regions[0];
    if f.len() < 28 {
        return Err(bad(format!("an icreate item of {} bytes", f.len())));
    }
    let [ag, agbno, count, isize, length, generation] = [4, 8, 12, 16, 20, 24].map(|o| be32(f, o));
    let what = format!("icreate item for block {agbno} of AG {ag}");
    if u64::from(isize) != fs.inodesize()
        || count == 0
        || count > MAX_ICREATE_INODES
        || u64::from(count) * u64::from(isize) != u64::from(length) * fs.bs
    {
        return Err(bad(format!("{what}: {count} inodes of {isize} bytes in {length} blocks")));
    }
    let fsb = (u64::from(ag) << fs.agblklog()) | u64::from(agbno);
    let (at, bytes) = fs.extent_bytes(fsb, u64::from(length), &what)?;
    let (s0, s1) = (at / 512, (at + bytes) / 512);
    if cancels.keys().any(|&(b, l)| b < s1 && b + l > s0) {
        return Ok(());
    }
    let mut chunk = vec![0u8; usize::try_from(bytes).map_err(|_| bad("chunk"))?];
    let first_ino = (u64::from(ag) << (fs.agblklog() + fs.inopblog())) | (u64::from(agbno) << fs.inopblog());
    for (i, raw) in chunk.chunks_exact_mut(usize_from(isize)).enumerate() {
        raw[0..2].copy_from_slice(&INODE_MAGIC.to_be_bytes());
        raw[4] = if fs.v5 { 3 } else { 2 };
        raw[92..96].copy_from_slice(&generation.to_be_bytes());
        raw[96..100].copy_from_slice(&u32::MAX.to_be_bytes());
        if fs.v5 {
            raw[152..160].copy_from_slice(&(first_ino + u64_from_usize(i)).to_be_bytes());
            raw[160..176].copy_from_slice(&fs.meta_uuid());
            let c = crc(raw, off::INODE_CRC)?;
            raw[off::INODE_CRC..off::INODE_CRC + 4].copy_from_slice(&c.to_le_bytes());
        }
    }
    ov.store(s0, &chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_testkit::VecDisk;

    /// Replayed sectors win over the disk in reads that start and end inside sectors,
    /// and the rest reads through.
    #[test]
    fn overlay_reads_replayed_sectors_over_the_disk() {
        let disk: Vec<u8> = (0..4096u32).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut ov = Overlay::new(Arc::new(VecDisk(disk.clone())));
        ov.store(2, &[0xaa; 1024]).unwrap();
        let mut want = disk;
        want[1024..2048].fill(0xaa);
        for (at, len) in [(0usize, 4096usize), (1000, 100), (1500, 1000), (2047, 2), (3000, 1000)] {
            let mut b = vec![0u8; len];
            ov.read_at(&mut b, u64_from_usize(at)).unwrap();
            assert_eq!(b, want[at..at + len], "{len} bytes at {at}");
        }
    }
}
