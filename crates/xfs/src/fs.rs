//! An opened XFS: the checked geometry, inodes, block maps and the blocks they point at.
//!
//! Every value read from the disk is hostile: the superblock's geometry is checked against
//! itself and the disk before use, every AG header's magic, number, length and CRC, every
//! inode's magic, number and CRC, every extent against its AG, every B+tree block's magic,
//! level, owner, address and CRC, and a B+tree block reached twice is a loop.

use crate::layout::*;
use crate::log;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{be16, be32, be64, u64_from_usize, usize_from};
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt::Display;
use std::sync::Arc;

/// Deepest block map B+tree read: a 2^54-block file of single-block extents needs 9
/// levels of 512-byte blocks under the root in the inode, so a deeper tree is corrupt.
pub const MAX_BMBT_DEPTH: u16 = 10;
/// Most extents one fork may map: more than a 16 TiB file of 4 KiB fragments would need
/// is a hostile map, not a file.
pub const MAX_FORK_EXTENTS: usize = 1 << 24;
/// Most AGs read: mkfs.xfs makes at most a few thousand, and each costs two sector reads
/// at open.
pub const MAX_AGS: u32 = 1 << 20;

/// One mapping of a fork: `len` blocks from logical block `off` at filesystem block `fsb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub off: u64,
    pub fsb: u64,
    pub len: u64,
    pub unwritten: bool,
}

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkKind {
    Data,
    Attr,
}

/// A parsed inode: its core and raw record (the forks live in the literal area).
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    pub core: InodeCore,
    pub raw: Vec<u8>,
    /// Where the literal area starts (after the core).
    lit: usize,
}

impl Inode {
    pub fn mode(&self) -> u16 {
        self.core.mode.get()
    }
    pub fn size(&self) -> u64 {
        self.core.size.get()
    }
    fn nrext64(&self) -> bool {
        self.core.version >= 3 && self.core.flags2.get() & DIFLAG2_NREXT64 != 0
    }
    pub fn bigtime(&self) -> bool {
        self.core.version >= 3 && self.core.flags2.get() & DIFLAG2_BIGTIME != 0
    }
    /// The bytes of a fork in the inode's literal area.
    pub fn fork(&self, kind: ForkKind) -> &[u8] {
        let split = self.lit + usize::from(self.core.forkoff) * 8;
        match (kind, self.core.forkoff) {
            (ForkKind::Data, 0) => &self.raw[self.lit..],
            (ForkKind::Data, _) => &self.raw[self.lit..split],
            (ForkKind::Attr, 0) => &[],
            (ForkKind::Attr, _) => &self.raw[split..],
        }
    }
    pub fn format(&self, kind: ForkKind) -> u8 {
        match kind {
            ForkKind::Data => self.core.format,
            ForkKind::Attr => self.core.aformat,
        }
    }
    fn nextents(&self, kind: ForkKind) -> u64 {
        match (kind, self.nrext64()) {
            (ForkKind::Data, true) => self.core.big_nextents.get(),
            (ForkKind::Data, false) => u64::from(self.core.nextents.get()),
            (ForkKind::Attr, true) => u64::from(self.core.nextents.get()),
            (ForkKind::Attr, false) => u64::from(self.core.anextents.get()),
        }
    }
    pub fn has_attr_fork(&self) -> bool {
        self.core.forkoff != 0
    }
}

/// The filesystem.
#[derive(Debug)]
pub struct Fs {
    pub disk: Arc<dyn BlockRead>,
    /// Block size.
    pub bs: u64,
    pub dblocks: u64,
    agblocks: u64,
    agcount: u64,
    agblklog: u32,
    inopblog: u32,
    inodesize: u64,
    /// Version 5 (CRCs, self-describing metadata).
    pub v5: bool,
    /// The UUID metadata blocks carry (`sb_meta_uuid` with the meta_uuid feature).
    uuid: [u8; 16],
    /// Directory entries carry a file type byte.
    pub ftype: bool,
    /// Directory block size in filesystem blocks.
    pub dir_fsbs: u64,
    pub rootino: u64,
    /// Metadata blocks read so far (B+tree blocks of every fork, directory, attribute and
    /// remote symlink blocks): each belongs to one fork, so a count past the filesystem's
    /// blocks means blocks shared between forks (a hostile image), and the work of all
    /// files together stays linear in the image.
    walked: Cell<u64>,
}

/// `v` as an index (sizes already checked against the disk).
pub fn idx(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::out_of_bounds(format!("{v} does not fit in memory on this machine")))
}

fn corrupt(what: impl Display) -> Error {
    Error::corrupt(what.to_string())
}

impl Fs {
    pub fn open(disk: Arc<dyn BlockRead>) -> Result<Fs> {
        let mut head = vec![0u8; 512];
        disk.read_at(&mut head, 0)?;
        let s: SuperBlock = diskcast_layout::read_copy(&head, 0, "XFS superblock")?;
        let bad =
            |field: &'static str, what: String| Error::corrupt(format!("XFS superblock: {what}")).with_field(field);
        if s.magicnum.get() != SB_MAGIC {
            return Err(Error::invalid("no XFS superblock (magic XFSB) at byte 0").with_field("sb_magicnum"));
        }
        let version = s.versionnum.get() & 0xf;
        if version != 4 && version != 5 {
            return Err(Error::unsupported(format!("XFS version {version} (diskcast reads versions 4 and 5)"))
                .with_field("sb_versionnum"));
        }
        let v5 = version == 5;
        let bs = u64::from(s.blocksize.get());
        if !(512..=65536).contains(&bs) || bs != 1u64 << s.blocklog.min(63) {
            return Err(bad("sb_blocksize", format!("block size {bs} with blocklog {}", s.blocklog)));
        }
        let sectsize = u64::from(s.sectsize.get());
        if !(512..=32768).contains(&sectsize) || sectsize != 1u64 << s.sectlog.min(63) || sectsize > bs {
            return Err(bad("sb_sectsize", format!("sector size {sectsize} with sectlog {}", s.sectlog)));
        }
        let inodesize = u64::from(s.inodesize.get());
        let min_inode = if v5 { 512 } else { 256 };
        if !(min_inode..=2048).contains(&inodesize)
            || inodesize != 1u64 << s.inodelog.min(63)
            || inodesize > bs
            || u64::from(s.inopblock.get()) != bs / inodesize
            || u64::from(s.inopblog) + u64::from(s.inodelog) != u64::from(s.blocklog)
        {
            return Err(bad("sb_inodesize", format!("inode size {inodesize} in {bs}-byte blocks")));
        }
        let agblocks = u64::from(s.agblocks.get());
        let agcount = s.agcount.get();
        let agblklog = u32::from(s.agblklog);
        if agblocks < 16
            || agblklog > 31
            || agblocks > 1u64 << agblklog
            || agblocks <= 1u64 << agblklog.saturating_sub(1)
        {
            return Err(bad("sb_agblocks", format!("{agblocks} blocks per AG with agblklog {agblklog}")));
        }
        let dblocks = s.dblocks.get();
        if agcount == 0
            || agcount > MAX_AGS
            || dblocks > u64::from(agcount) * agblocks
            || dblocks <= u64::from(agcount - 1) * agblocks
        {
            return Err(bad("sb_agcount", format!("{agcount} AGs of {agblocks} blocks do not make {dblocks} blocks")));
        }
        if dblocks.checked_mul(bs).is_none_or(|e| e > disk.size()) {
            return Err(Error::out_of_bounds(format!(
                "XFS superblock claims {dblocks} blocks of {bs} bytes, more than the disk's {} bytes",
                disk.size()
            ))
            .with_field("sb_dblocks"));
        }
        let dirblk = bs << s.dirblklog.min(16);
        if dirblk > 65536 {
            return Err(bad("sb_dirblklog", format!("directory blocks of {dirblk} bytes")));
        }
        let incompat_f = if v5 { s.features_incompat.get() } else { 0 };
        if v5 {
            let mut sector = vec![0u8; idx(sectsize)?];
            disk.read_at(&mut sector, 0)?;
            check_crc(&sector, off::SB_CRC, &"XFS superblock")?;
            let known = incompat::FTYPE
                | incompat::SPINODES
                | incompat::META_UUID
                | incompat::BIGTIME
                | incompat::NEEDSREPAIR
                | incompat::NREXT64
                | incompat::EXCHRANGE;
            let unknown = incompat_f & !known;
            if unknown != 0 {
                let names = [(incompat::PARENT, "parent"), (incompat::METADIR, "metadir")];
                let list: Vec<&str> = names.iter().filter(|(f, _)| unknown & f != 0).map(|(_, n)| *n).collect();
                return Err(Error::unsupported(format!(
                    "XFS feature {} (incompat {unknown:#x}) is not supported",
                    if list.is_empty() { "unknown".to_string() } else { list.join(", ") }
                ))
                .with_field("sb_features_incompat"));
            }
            if incompat_f & incompat::NEEDSREPAIR != 0 {
                return Err(Error::refused(
                    "this XFS is marked as needing repair (needsrepair); run xfs_repair on it first",
                )
                .with_field("sb_features_incompat"));
            }
        }
        if s.inprogress != 0 {
            return Err(Error::refused("this XFS was never finished by mkfs.xfs (sb_inprogress is set)")
                .with_field("sb_inprogress"));
        }
        let ftype = if v5 { incompat_f & incompat::FTYPE != 0 } else { s.features2.get() & VERSION2_FTYPE != 0 };
        let uuid = if incompat_f & incompat::META_UUID != 0 { s.meta_uuid } else { s.uuid };
        let mut fs = Fs {
            disk,
            bs,
            dblocks,
            agblocks,
            agcount: u64::from(agcount),
            agblklog,
            inopblog: u32::from(s.inopblog),
            inodesize,
            v5,
            uuid,
            ftype,
            dir_fsbs: dirblk / bs,
            rootino: s.rootino.get(),
            walked: Cell::new(0),
        };
        let logstart = s.logstart.get();
        if logstart == 0 {
            return Err(Error::unsupported(
                "this XFS keeps its log on another device (external log): diskcast cannot tell whether it needs \
                 recovery",
            )
            .with_field("sb_logstart"));
        }
        let log_len = u64::from(s.logblocks.get());
        let (at, _) = fs.extent_bytes(logstart, log_len, &"the log")?;
        if let Some(overlay) = log::recover(&fs, at, log_len * bs)? {
            fs.disk = Arc::new(overlay);
        }
        fs.check_ags(sectsize)?;
        Ok(fs)
    }

    pub fn inodesize(&self) -> u64 {
        self.inodesize
    }
    pub fn agblklog(&self) -> u32 {
        self.agblklog
    }
    pub fn inopblog(&self) -> u32 {
        self.inopblog
    }
    /// The UUID metadata carries.
    pub fn meta_uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// Blocks in AG `ag` (the last one may be short).
    fn ag_len(&self, ag: u64) -> u64 {
        self.agblocks.min(self.dblocks - ag * self.agblocks)
    }

    /// Every AG's free space and inode headers: magic, number, length, UUID and CRC.
    fn check_ags(&self, sectsize: u64) -> Result<()> {
        let mut sect = vec![0u8; idx(sectsize)?];
        for ag in 0..self.agcount {
            let base = ag * self.agblocks * self.bs;
            for (n, magic, crc_at, uuid_at, name) in
                [(1u64, AGF_MAGIC, off::AGF_CRC, 64usize, "AGF"), (2, AGI_MAGIC, off::AGI_CRC, 296, "AGI")]
            {
                let at = base + n * sectsize;
                self.disk.read_at(&mut sect, at)?;
                let what = format!("XFS {name} of AG {ag}");
                let seqno = u64::from(be32(&sect, 8, "XFS AG header")?);
                let len = u64::from(be32(&sect, 12, "XFS AG header")?);
                if be32(&sect, 0, "XFS AG header")? != magic || seqno != ag || len != self.ag_len(ag) {
                    return Err(corrupt(format!(
                        "{what} at byte {at}: bad magic, number {seqno} or length {len} (want {})",
                        self.ag_len(ag)
                    )));
                }
                if self.v5 {
                    check_crc(&sect, crc_at, &what)?;
                    self.check_uuid(&sect, uuid_at, &what)?;
                }
            }
        }
        Ok(())
    }

    fn check_uuid(&self, b: &[u8], at: usize, what: &dyn Display) -> Result<()> {
        if diskcast_layout::bytes(b, at, 16, "XFS metadata UUID")? != self.uuid {
            return Err(corrupt(format!("{what}: belongs to another filesystem (UUID differs)")));
        }
        Ok(())
    }

    /// Byte offset and length on the disk of `len` blocks from filesystem block `fsb`,
    /// which must lie inside one AG.
    pub fn extent_bytes(&self, fsb: u64, len: u64, what: &dyn Display) -> Result<(u64, u64)> {
        let ag = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        if ag >= self.agcount || agbno.checked_add(len).is_none_or(|e| e > self.ag_len(ag)) || len == 0 {
            return Err(corrupt(format!(
                "{what}: {len} blocks at block {agbno} of AG {ag} lie outside the filesystem ({} AGs of {} blocks)",
                self.agcount, self.agblocks
            )));
        }
        Ok(((ag * self.agblocks + agbno) * self.bs, len * self.bs))
    }

    /// Reads `len` filesystem blocks from `fsb`.
    pub fn read_blocks(&self, fsb: u64, len: u64, what: &dyn Display) -> Result<(Vec<u8>, u64)> {
        let (at, bytes) = self.extent_bytes(fsb, len, what)?;
        let mut b = vec![0u8; idx(bytes)?];
        self.disk.read_at(&mut b, at)?;
        Ok((b, at))
    }

    /// Checks a v5 metadata block's self-description: CRC, UUID, owner and address (in
    /// 512-byte units), at the given header offsets.
    pub fn check_self(
        &self,
        b: &[u8],
        at: u64,
        owner: u64,
        (crc_at, uuid_at, owner_at, blkno_at): (usize, usize, usize, usize),
        what: &dyn Display,
    ) -> Result<()> {
        check_crc(b, crc_at, what)?;
        self.check_uuid(b, uuid_at, what)?;
        let o = be64(b, owner_at, "XFS block owner")?;
        let blkno = be64(b, blkno_at, "XFS block address")?;
        if o != owner || blkno != at / 512 {
            return Err(corrupt(format!(
                "{what}: the block says it belongs to inode {o} at sector {blkno}, not inode {owner} at sector {}",
                at / 512
            )));
        }
        Ok(())
    }

    pub fn inode(&self, ino: u64) -> Result<Inode> {
        let agino_bits = self.agblklog + self.inopblog;
        let ag = ino >> agino_bits;
        let agino = ino & ((1u64 << agino_bits) - 1);
        let agbno = agino >> self.inopblog;
        let slot = agino & ((1u64 << self.inopblog) - 1);
        if ag >= self.agcount || agbno >= self.ag_len(ag) || ino == 0 {
            return Err(corrupt(format!("inode {ino} lies outside the filesystem")).with_field("inode"));
        }
        let at = (ag * self.agblocks + agbno) * self.bs + slot * self.inodesize;
        let mut raw = vec![0u8; idx(self.inodesize)?];
        self.disk.read_at(&mut raw, at)?;
        let core: InodeCore = diskcast_layout::read_copy(&raw, 0, "XFS inode")?;
        let what = format!("inode {ino}");
        if core.magic.get() != INODE_MAGIC {
            return Err(corrupt(format!("{what} at byte {at}: bad magic (not an inode)")).with_offset(at));
        }
        let lit = match (core.version, self.v5) {
            (3, true) => {
                check_crc(&raw, off::INODE_CRC, &what)?;
                self.check_uuid(&raw, 160, &what)?;
                if core.ino.get() != ino {
                    return Err(corrupt(format!("{what}: the record says it is inode {}", core.ino.get())));
                }
                hdr::INODE_V3
            }
            (1 | 2, false) => hdr::INODE_V2,
            (v, _) => {
                return Err(corrupt(format!(
                    "{what}: inode version {v} on a v{} filesystem",
                    if self.v5 { 5 } else { 4 }
                )));
            }
        };
        if usize::from(core.forkoff) * 8 >= raw.len() - lit {
            return Err(corrupt(format!("{what}: attribute fork offset {} is past the inode", core.forkoff))
                .with_field("di_forkoff"));
        }
        if core.flags.get() & DIFLAG_REALTIME != 0 {
            return Err(Error::unsupported(format!(
                "{what}: its data is on the realtime device, which diskcast does not read"
            )));
        }
        Ok(Inode { ino, core, raw, lit })
    }

    /// The mappings of an inode's fork (extent list or B+tree), sorted, not overlapping,
    /// each inside one AG.
    pub fn map(&self, inode: &Inode, kind: ForkKind) -> Result<Vec<Mapping>> {
        let ino = inode.ino;
        let what = format!("inode {ino}'s {} fork", if kind == ForkKind::Data { "data" } else { "attribute" });
        let fork = inode.fork(kind);
        let n = inode.nextents(kind);
        let mut out = Vec::new();
        match inode.format(kind) {
            fork::EXTENTS => {
                if n.checked_mul(16).is_none_or(|b| b > u64_from_usize(fork.len())) {
                    return Err(corrupt(format!("{what}: {n} extents do not fit in the inode")));
                }
                self.records(&fork[..idx(n * 16)?], &what, &mut out)?;
            }
            fork::BTREE => {
                let level = be16(fork, 0, "XFS block map root")?;
                let numrecs = usize::from(be16(fork, 2, "XFS block map root")?);
                let maxrecs = fork.len().saturating_sub(4) / 16;
                if level == 0 || level > MAX_BMBT_DEPTH || numrecs == 0 || numrecs > maxrecs {
                    return Err(corrupt(format!("{what}: B+tree root of level {level} with {numrecs} records")));
                }
                let mut seen = HashSet::new();
                for i in 0..numrecs {
                    let ptr = be64(fork, 4 + maxrecs * 8 + i * 8, "XFS block map root")?;
                    self.bmbt_block(ino, ptr, level - 1, &what, &mut seen, &mut out)?;
                }
            }
            f => return Err(corrupt(format!("{what}: format {f} is not a block map"))),
        }
        out.sort_unstable_by_key(|m| m.off);
        for pair in out.windows(2) {
            if let [a, b] = pair
                && a.off + a.len > b.off
            {
                return Err(corrupt(format!("{what}: extents overlap at logical block {}", b.off)));
            }
        }
        Ok(out)
    }

    /// Extent records (16 bytes each) into `out`.
    fn records(&self, recs: &[u8], what: &str, out: &mut Vec<Mapping>) -> Result<()> {
        for r in recs.chunks_exact(16) {
            let l0 = be64(r, 0, "XFS extent")?;
            let l1 = be64(r, 8, "XFS extent")?;
            let m = Mapping {
                unwritten: l0 >> 63 != 0,
                off: (l0 & ((1 << 63) - 1)) >> 9,
                fsb: ((l0 & 0x1ff) << 43) | (l1 >> 21),
                len: l1 & ((1 << 21) - 1),
            };
            self.extent_bytes(m.fsb, m.len, &format_args!("{what}: extent at logical block {}", m.off))?;
            if out.len() >= MAX_FORK_EXTENTS || u64_from_usize(out.len()) >= self.dblocks {
                return Err(corrupt(format!(
                    "{what}: maps more extents than the filesystem's {} blocks or the limit of {MAX_FORK_EXTENTS}",
                    self.dblocks
                )));
            }
            out.push(m);
        }
        Ok(())
    }

    /// One block map B+tree block at `fsb`, which must be at `level`.
    fn bmbt_block(
        &self,
        ino: u64,
        fsb: u64,
        level: u16,
        what: &str,
        seen: &mut HashSet<u64>,
        out: &mut Vec<Mapping>,
    ) -> Result<()> {
        if !seen.insert(fsb) {
            return Err(corrupt(format!("{what}: B+tree block {fsb} is reached twice (a loop)")));
        }
        let walked = self.walked.get() + 1;
        if walked > self.dblocks {
            return Err(corrupt(format!(
                "{what}: the files' B+trees take more blocks than the filesystem's {} (blocks shared between files)",
                self.dblocks
            )));
        }
        self.walked.set(walked);
        let (b, at) = self.read_blocks(fsb, 1, &format_args!("{what}: B+tree block"))?;
        let bwhat = format!("{what}: B+tree block {fsb}");
        let magic = be32(&b, 0, "XFS block map block")?;
        let hdr = if self.v5 {
            if magic != BMAP3_MAGIC {
                return Err(corrupt(format!("{bwhat}: bad magic {magic:#x}")));
            }
            self.check_self(
                &b,
                at,
                ino,
                (off::BMBT3_CRC, off::BMBT3_UUID, off::BMBT3_OWNER, off::BMBT3_BLKNO),
                &bwhat,
            )?;
            hdr::BMBT3
        } else {
            if magic != BMAP_MAGIC {
                return Err(corrupt(format!("{bwhat}: bad magic {magic:#x}")));
            }
            hdr::BMBT
        };
        let got_level = be16(&b, 4, "XFS block map block")?;
        let numrecs = usize::from(be16(&b, 6, "XFS block map block")?);
        let maxrecs = (b.len() - hdr) / 16;
        if got_level != level || numrecs == 0 || numrecs > maxrecs {
            return Err(corrupt(format!(
                "{bwhat}: level {got_level} with {numrecs} records where level {level} belongs"
            )));
        }
        if level == 0 {
            return self.records(&b[hdr..hdr + numrecs * 16], what, out);
        }
        for i in 0..numrecs {
            let ptr = be64(&b, hdr + maxrecs * 8 + i * 8, "XFS block map block")?;
            self.bmbt_block(ino, ptr, level - 1, what, seen, out)?;
        }
        Ok(())
    }

    /// Reads the fork's logical blocks `off..off + len`, every one of which must be
    /// mapped and written, as one buffer; with the disk address of the first.
    ///
    /// Only directory, attribute and symlink blocks are read this way, and each belongs to
    /// one inode: all of them together are at most the filesystem's blocks, so inodes
    /// sharing a hostile fork cannot make the walk quadratic.
    pub fn read_logical(&self, maps: &[Mapping], off: u64, len: u64, what: &dyn Display) -> Result<(Vec<u8>, u64)> {
        let walked = self.walked.get().saturating_add(len);
        if walked > self.dblocks {
            return Err(corrupt(format!(
                "{what}: the directories, attributes and B+trees read take more blocks than the filesystem's {} \
                 (blocks shared between inodes)",
                self.dblocks
            )));
        }
        self.walked.set(walked);
        let mut buf = vec![0u8; idx(len * self.bs)?];
        let mut first = None;
        let mut l = off;
        while l < off + len {
            let i = maps.partition_point(|m| m.off + m.len <= l);
            let m = maps
                .get(i)
                .filter(|m| m.off <= l && !m.unwritten)
                .ok_or_else(|| corrupt(format!("{what}: block {l} is not mapped")))?;
            let n = (m.off + m.len).min(off + len) - l;
            let (at, bytes) = self.extent_bytes(m.fsb + (l - m.off), n, what)?;
            first.get_or_insert(at);
            let start = idx((l - off) * self.bs)?;
            self.disk.read_at(&mut buf[start..start + idx(bytes)?], at)?;
            l += n;
        }
        Ok((buf, first.unwrap_or(0)))
    }

    /// `len` bytes kept in the fork's blocks from `blk` on (a remote symlink target or
    /// attribute value): v4 blocks hold bytes only; v5 blocks each start with a header
    /// (`magic`, which part of the value they hold, CRC, UUID, owner and address).
    pub fn read_remote(
        &self,
        ino: u64,
        maps: &[Mapping],
        blk: u64,
        len: usize,
        magic: u32,
        what: &str,
    ) -> Result<Vec<u8>> {
        let per = if self.v5 { idx(self.bs)? - hdr::RMT } else { idx(self.bs)? };
        let nblocks = u64_from_usize(len.div_ceil(per).max(1));
        if !self.v5 {
            let (b, _) = self.read_logical(maps, blk, nblocks, &what)?;
            return Ok(b[..len].to_vec());
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..nblocks {
            let part = format!("{what}, block {}", blk + i);
            let (b, at) = self.read_logical(maps, blk + i, 1, &part)?;
            if be32(&b, 0, "XFS remote block")? != magic {
                return Err(corrupt(format!("{part}: bad magic")));
            }
            self.check_self(&b, at, ino, (off::RMT_CRC, off::RMT_UUID, off::RMT_OWNER, off::RMT_BLKNO), &part)?;
            let offset = usize_from(be32(&b, 4, "XFS remote block")?);
            let n = usize_from(be32(&b, 8, "XFS remote block")?);
            if offset != out.len() || n > per || offset.saturating_add(n) > len {
                return Err(corrupt(format!("{part}: holds bytes {offset}+{n} of {len}")));
            }
            out.extend_from_slice(&b[hdr::RMT..hdr::RMT + n]);
        }
        if out.len() != len {
            return Err(corrupt(format!("{what}: holds {} of its {len} bytes", out.len())));
        }
        Ok(out)
    }
}
