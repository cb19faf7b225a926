//! The jbd2 journal of an ext3/ext4 filesystem that was not cleanly unmounted
//! (`needs_recovery`), replayed in memory: the result is an overlay ([`Replayed`]) that
//! reads each block the committed transactions wrote from its copy in the journal, and
//! every other block from the device. The image is never written.
//!
//! Recovery follows jbd2's three passes over the log, from the superblock's `s_start`
//! and `s_sequence`: the scan pass finds the end of the log (the first block that is not
//! a journal block of the expected transaction, or a descriptor whose commit never came);
//! the revoke pass gathers every revoked block with the newest transaction revoking it;
//! the replay pass maps each tagged block of each committed transaction to its journal
//! copy unless a transaction at least as new revoked it. The log wraps from `s_maxlen`
//! back to `s_first`. With `csum_v2`/`csum_v3` the superblock, descriptor, revoke and
//! commit blocks and each data block are checked (crc32c seeded by the journal's UUID),
//! and a mismatch is an error naming the block, as the kernel refuses to mount it.
//!
//! Bounds: each pass reads at most the journal's own blocks (a log that loops is an
//! error), tags per descriptor are bounded by the block, revoke records by `r_count`
//! within the block; the overlay holds one entry per filesystem block (at most the
//! journal's blocks), pointing at the copy rather than holding it.

use crate::layout::{
    JBD2_MAGIC, JBD2_SUPERBLOCK_V1 as SUPERBLOCK_V1, JBD2_SUPERBLOCK_V2 as SUPERBLOCK_V2, JournalSuperblock, csum,
};
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result, range_end};
use diskcast_layout::{be16, be32, read as read_at, u64_from_usize, usize_from_u64};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const REVOKE: u32 = 5;

mod feature {
    pub const REVOKE: u32 = 0x1;
    pub const BIT64: u32 = 0x2;
    pub const ASYNC_COMMIT: u32 = 0x4;
    pub const CSUM_V2: u32 = 0x8;
    pub const CSUM_V3: u32 = 0x10;
    pub const FAST_COMMIT: u32 = 0x20;
}
const KNOWN_INCOMPAT: u32 =
    feature::REVOKE | feature::BIT64 | feature::ASYNC_COMMIT | feature::CSUM_V2 | feature::CSUM_V3;

mod tag {
    pub const ESCAPE: u32 = 1;
    pub const SAME_UUID: u32 = 2;
    pub const LAST_TAG: u32 = 8;
}

/// The journal inode's data: runs of (journal block, filesystem block, count).
pub(crate) type Runs = [(u64, u64, u64)];

/// Where the log is and how its blocks are laid out.
struct Log<'a> {
    disk: Arc<dyn BlockRead>,
    runs: &'a Runs,
    bs: u64,
    fs_blocks: u64,
    first: u64,
    last: u64,
    start: u64,
    sequence: u32,
    is64: bool,
    /// crc32c seed (the journal UUID's crc32c) with csum v2 or v3; v3 stores 32-bit data
    /// checksums in 16-byte tags, v2 16-bit ones.
    csum: Option<(u32, bool)>,
    tag_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

/// A replayed filesystem: blocks the log rewrote read from their journal copies.
#[derive(Debug)]
pub(crate) struct Replayed {
    disk: Arc<dyn BlockRead>,
    bs: u64,
    /// Filesystem block -> (filesystem block holding its copy, escaped: its first four
    /// bytes were the jbd2 magic and are restored on read).
    map: BTreeMap<u64, (u64, bool)>,
}

/// Replays the journal whose data `runs` map, on a filesystem of `fs_blocks` blocks of
/// `bs` bytes. `None` when the journal is empty (`s_start` 0).
pub(crate) fn replay(disk: Arc<dyn BlockRead>, bs: u64, fs_blocks: u64, runs: &Runs) -> Result<Option<Replayed>> {
    let jblocks = runs.iter().map(|r| r.0 + r.2).max().unwrap_or(0);
    let mut log = Log {
        disk: disk.clone(),
        runs,
        bs,
        fs_blocks,
        first: 0,
        last: 0,
        start: 0,
        sequence: 0,
        is64: false,
        csum: None,
        tag_bytes: 8,
    };
    let sb = log.block(0)?;
    let s: &JournalSuperblock = read_at(&sb, 0, "jbd2 superblock")?;
    let bad = |what: String, field: &'static str| Error::corrupt(format!("ext4 journal: {what}")).with_field(field);
    if s.magic.get() != JBD2_MAGIC {
        return Err(bad("its first block has no jbd2 magic".into(), "h_magic"));
    }
    let version = s.blocktype.get();
    if version != SUPERBLOCK_V1 && version != SUPERBLOCK_V2 {
        return Err(bad(format!("superblock type {version}, not 3 or 4"), "h_blocktype"));
    }
    if u64::from(s.blocksize.get()) != bs {
        return Err(bad(format!("block size {} differs from the filesystem's {bs}", s.blocksize.get()), "s_blocksize"));
    }
    let (maxlen, first, start) = (u64::from(s.maxlen.get()), u64::from(s.first.get()), u64::from(s.start.get()));
    if maxlen > jblocks || first == 0 || first >= maxlen {
        return Err(bad(format!("the log is blocks {first}..{maxlen} of a journal of {jblocks} blocks"), "s_maxlen"));
    }
    if start == 0 {
        return Ok(None);
    }
    if start < first || start >= maxlen {
        return Err(bad(format!("the log starts at block {start}, outside {first}..{maxlen}"), "s_start"));
    }
    let incompat = if version == SUPERBLOCK_V2 { s.feature_incompat.get() } else { 0 };
    if incompat & feature::FAST_COMMIT != 0 {
        return Err(Error::unsupported(
            "ext4 journal: fast commits (jbd2 feature fast_commit) are not replayed by diskcast; \
             run e2fsck -fy on a copy first",
        )
        .with_field("s_feature_incompat"));
    }
    if incompat & !KNOWN_INCOMPAT != 0 {
        return Err(Error::unsupported(format!(
            "ext4 journal: unknown jbd2 incompat features {:#x}",
            incompat & !KNOWN_INCOMPAT
        ))
        .with_field("s_feature_incompat"));
    }
    let v3 = incompat & feature::CSUM_V3 != 0;
    let v2 = incompat & feature::CSUM_V2 != 0;
    if v2 || v3 {
        if s.checksum_type != 4 {
            return Err(bad(format!("checksum type {}, not crc32c (4)", s.checksum_type), "s_checksum_type"));
        }
        let mut copy = sb[..1024.min(sb.len())].to_vec();
        copy[0xFC..0x100].fill(0);
        let want = csum(!0, &copy);
        if want != s.checksum.get() {
            return Err(bad(
                format!("superblock checksum {:#010x}, computed {want:#010x}", s.checksum.get()),
                "s_checksum",
            ));
        }
        log.csum = Some((csum(!0, &s.uuid), v3));
    }
    log.is64 = incompat & feature::BIT64 != 0;
    log.tag_bytes = if v3 { 16 } else { 12 + if v2 { 2 } else { 0 } - if log.is64 { 0 } else { 4 } };
    log.first = first;
    log.last = maxlen;
    log.start = start;
    log.sequence = s.sequence.get();

    let mut revoked = HashMap::new();
    let mut map = BTreeMap::new();
    let end = log.pass(Pass::Scan, None, &mut revoked, &mut map)?;
    if incompat & feature::REVOKE != 0 {
        log.pass(Pass::Revoke, Some(end), &mut revoked, &mut map)?;
    }
    log.pass(Pass::Replay, Some(end), &mut revoked, &mut map)?;
    Ok(Some(Replayed { disk, bs, map }))
}

/// jbd2's transaction id order, which wraps: `a` is `b` or after it.
fn newer_or_same(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 0x8000_0000
}

impl Log<'_> {
    /// The filesystem block holding journal block `j`.
    fn phys(&self, j: u64) -> Result<u64> {
        let i = self.runs.partition_point(|r| r.0 + r.2 <= j);
        match self.runs.get(i) {
            Some(&(l, p, _)) if l <= j => Ok(p + (j - l)),
            _ => Err(Error::corrupt(format!("ext4 journal: block {j} of the journal is a hole in its inode"))
                .with_field("s_journal_inum")),
        }
    }

    fn block(&self, j: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; usize_from_u64(self.bs, "journal block")?];
        self.disk.read_at(&mut b, self.phys(j)? * self.bs)?;
        Ok(b)
    }

    /// The log block after `j`, wrapping from the end of the log to its first block.
    fn next(&self, j: u64) -> u64 {
        if j + 1 >= self.last { self.first } else { j + 1 }
    }

    /// crc32c of `b` with the 4 bytes at `at` taken as zero, from `seed`.
    fn sum_without(seed: u32, b: &[u8], at: usize) -> u32 {
        let c = csum(seed, &b[..at]);
        let c = csum(c, &[0; 4]);
        csum(c, &b[at + 4..])
    }

    /// Checks the tail checksum of a descriptor or revoke block.
    fn check_tail(&self, b: &[u8], j: u64, what: &str) -> Result<()> {
        let Some((seed, _)) = self.csum else { return Ok(()) };
        let at = b.len() - 4;
        let want = Self::sum_without(seed, b, at);
        let have = be32(b, at, "jbd2 block tail")?;
        if want != have {
            return Err(Error::corrupt(format!(
                "ext4 journal: the {what} block at journal block {j} has checksum {have:#010x}, computed {want:#010x}"
            ))
            .with_field("jbd2 block tail checksum"));
        }
        Ok(())
    }

    /// One pass over the log from its start; returns the first transaction not
    /// committed (the end of the log). With `end`, stops there.
    fn pass(
        &self,
        pass: Pass,
        end: Option<u32>,
        revoked: &mut HashMap<u64, u32>,
        map: &mut BTreeMap<u64, (u64, bool)>,
    ) -> Result<u32> {
        let mut j = self.start;
        let mut seq = self.sequence;
        // Each pass reads each block of the log at most once; more is a log that loops.
        let budget = self.last - self.first;
        let mut steps = 0u64;
        let step = |steps: &mut u64| {
            *steps += 1;
            if *steps > budget {
                return Err(Error::corrupt(format!(
                    "ext4 journal: the log runs past the journal's {budget} blocks without ending (a looping log)"
                ))
                .with_field("h_sequence"));
            }
            Ok(())
        };
        let tail = if self.csum.is_some() { 4 } else { 0 };
        loop {
            if end == Some(seq) {
                return Ok(seq);
            }
            step(&mut steps)?;
            let b = self.block(j)?;
            if be32(&b, 0, "jbd2 header")? != JBD2_MAGIC || be32(&b, 8, "jbd2 header")? != seq {
                return Ok(seq);
            }
            match be32(&b, 4, "jbd2 header")? {
                DESCRIPTOR => {
                    self.check_tail(&b, j, "descriptor")?;
                    let limit = b.len() - tail;
                    let mut at = 12usize;
                    loop {
                        if at + self.tag_bytes > limit {
                            return Err(Error::corrupt(format!(
                                "ext4 journal: the descriptor at journal block {j} has no last tag"
                            ))
                            .with_field("t_flags"));
                        }
                        let t = &b[at..at + self.tag_bytes];
                        let (lo, flags, hi, sum) = if self.tag_bytes == 16 {
                            (be32(t, 0, "tag")?, be32(t, 4, "tag")?, be32(t, 8, "tag")?, be32(t, 12, "tag")?)
                        } else {
                            let hi = if self.is64 { be32(t, 8, "tag")? } else { 0 };
                            (be32(t, 0, "tag")?, u32::from(be16(t, 6, "tag")?), hi, u32::from(be16(t, 4, "tag")?))
                        };
                        at += self.tag_bytes;
                        if flags & tag::SAME_UUID == 0 {
                            at += 16;
                        }
                        j = self.next(j);
                        step(&mut steps)?;
                        if pass == Pass::Replay {
                            let target = (u64::from(hi) << 32) | u64::from(lo);
                            self.tagged(j, target, flags, sum, seq, revoked, map)?;
                        }
                        if flags & tag::LAST_TAG != 0 {
                            break;
                        }
                    }
                }
                COMMIT => {
                    if let Some((seed, _)) = self.csum {
                        let want = Self::sum_without(seed, &b, 16);
                        let have = be32(&b, 16, "commit header")?;
                        if want != have {
                            return Err(Error::corrupt(format!(
                                "ext4 journal: the commit block of transaction {seq} (journal block {j}) has checksum \
                                 {have:#010x}, computed {want:#010x}; the kernel refuses this journal too"
                            ))
                            .with_field("h_chksum"));
                        }
                    }
                    seq = seq.wrapping_add(1);
                }
                REVOKE => {
                    self.check_tail(&b, j, "revoke")?;
                    if pass == Pass::Revoke {
                        let count = usize_from_u64(u64::from(be32(&b, 12, "revoke header")?), "r_count")?;
                        if count < 16 || count > b.len() - tail {
                            return Err(Error::corrupt(format!(
                                "ext4 journal: the revoke block at journal block {j} claims {count} bytes"
                            ))
                            .with_field("r_count"));
                        }
                        let rec = if self.is64 { 8 } else { 4 };
                        for r in b[16..count].chunks_exact(rec) {
                            let blk = if self.is64 {
                                diskcast_layout::be64(r, 0, "revoke record")?
                            } else {
                                u64::from(be32(r, 0, "revoke record")?)
                            };
                            let e = revoked.entry(blk).or_insert(seq);
                            if newer_or_same(seq, *e) {
                                *e = seq;
                            }
                        }
                    }
                }
                _ => return Ok(seq),
            }
            j = self.next(j);
        }
    }

    /// The replay of one tagged block: journal block `j` holds the new contents of
    /// filesystem block `target`.
    #[allow(clippy::too_many_arguments)]
    fn tagged(
        &self,
        j: u64,
        target: u64,
        flags: u32,
        sum: u32,
        seq: u32,
        revoked: &HashMap<u64, u32>,
        map: &mut BTreeMap<u64, (u64, bool)>,
    ) -> Result<()> {
        if target >= self.fs_blocks {
            return Err(Error::corrupt(format!(
                "ext4 journal: transaction {seq} writes block {target}, past the filesystem's {} blocks",
                self.fs_blocks
            ))
            .with_field("t_blocknr"));
        }
        // Revoked by this transaction or a newer one (tid order wraps).
        if revoked.get(&target).is_some_and(|&r| newer_or_same(r, seq)) {
            return Ok(());
        }
        if let Some((seed, v3)) = self.csum {
            let data = self.block(j)?;
            let c = csum(csum(seed, &seq.to_be_bytes()), &data);
            let ok = if v3 { c == sum } else { c & 0xffff == sum };
            if !ok {
                return Err(Error::corrupt(format!(
                    "ext4 journal: the copy of block {target} in transaction {seq} (journal block {j}) fails its \
                     checksum"
                ))
                .with_field("t_checksum"));
            }
        }
        map.insert(target, (self.phys(j)?, flags & tag::ESCAPE != 0));
        Ok(())
    }
}

impl BlockRead for Replayed {
    fn size(&self) -> u64 {
        self.disk.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = u64_from_usize(buf.len());
        range_end(offset, len, self.size())?;
        self.disk.read_at(buf, offset)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (first, last) = (offset / self.bs, (offset + len - 1) / self.bs);
        let mut block = vec![0u8; usize_from_u64(self.bs, "block")?];
        for (&blk, &(copy, escaped)) in self.map.range(first..=last) {
            self.disk.read_at(&mut block, copy * self.bs)?;
            if escaped {
                block[..4].copy_from_slice(&JBD2_MAGIC.to_be_bytes());
            }
            // The overlap of this block with the request.
            let b_start = blk * self.bs;
            let from = offset.max(b_start);
            let to = (offset + len).min(b_start + self.bs);
            let src = usize_from_u64(from - b_start, "block")?..usize_from_u64(to - b_start, "block")?;
            let dst = usize_from_u64(from - offset, "block")?..usize_from_u64(to - offset, "block")?;
            buf[dst].copy_from_slice(&block[src]);
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let blk = offset / self.bs;
        if self.map.contains_key(&blk) {
            let len = ((blk + 1) * self.bs - offset).min(max_len).max(1);
            return Ok(Extent { offset, len, alloc: Alloc::Data });
        }
        let e = self.disk.extent_at(offset, max_len)?;
        // Stop before the next replayed block: it reads from the journal.
        let next = self.map.range(blk + 1..).next().map(|(&b, _)| b * self.bs);
        let len = next.map_or(e.len, |n| e.len.min(n - offset)).max(1);
        Ok(Extent { len, ..e })
    }

    fn backing(&self) -> Option<&dyn BlockRead> {
        self.disk.backing()
    }

    fn info(&self) -> ImageInfo {
        self.disk.info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_compare_across_the_wrap() {
        assert!(newer_or_same(5, 5));
        assert!(newer_or_same(6, 5));
        assert!(!newer_or_same(5, 6));
        // 0x0000_0002 follows 0xffff_fff0 once the 32-bit id wraps.
        assert!(newer_or_same(2, 0xffff_fff0));
        assert!(!newer_or_same(0xffff_fff0, 2));
    }
}
