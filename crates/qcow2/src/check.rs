//! `check`: recompute what every host cluster's refcount should be from the header, the
//! L1/L2 tables (active and snapshots) and the refcount structures themselves, and compare
//! with the refcounts on disk, reporting like `qemu-img check`.
//!
//! Persistent bitmaps count too: their directory, tables and data clusters (qemu-img check
//! counts them, so a healthy image with bitmaps has no leaks). Works on images with the
//! corrupt bit set (that is what it is for).

use crate::edit::Editor;
use crate::header::{
    Header, L1_RESERVED, MAX_L1_BYTES, OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, read_u64_table,
};
use crate::reader::compressed_range;
use crate::snapshot::{ENTRY_FIXED as SNAPSHOT_FIXED, MAX_SNAPSHOTS, RawSnapshot};
use diskcast_block::io::ImageFile;
use diskcast_block::registry::CheckReport;
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Error, Result};
use diskcast_layout::{FromZeros, IntoBytes, high_u32, low_u8, low_u32, u64_from_usize, usize_from_u64};
use std::collections::BTreeMap;

/// Largest file, in clusters, whose refcounts we recompute: 2^27 16-bit counters are
/// 256 MiB, the memory bound the rest of diskcast keeps too. That is an 8 TiB file with
/// the default 64 KiB clusters; a (possibly sparse, possibly hostile) larger file is
/// refused rather than allowed to take gigabytes.
const MAX_CHECK_CLUSTERS: u64 = 1 << 27;
/// Messages kept in the report; counts keep going past it.
const MAX_MESSAGES: usize = 1000;
pub(crate) struct Checker<'f> {
    file: &'f dyn ByteSource,
    h: Header,
    cs: u64,
    file_len: u64,
    refs: Vec<u16>,
    /// The refcount on disk of every cluster (saturating at u16::MAX), read by
    /// [`Self::compare`] for the OFLAG_COPIED pass: qemu requires the flag exactly when
    /// the refcount is 1.
    disk: Vec<u16>,
    /// Refcount block offsets by refcount table index (None: no block, or a bad entry).
    blocks: Vec<Option<u64>>,
    /// A refcount table entry was unusable: only a rebuild of the refcount structures repairs it.
    bad_reftable: bool,
    /// Some table could not be walked (see [`Self::unwalked`]): references may be missing.
    pub(crate) hidden: bool,
    /// Every L2 table referenced by an L1 table, walked once after all L1 tables are read:
    /// host offset -> (references from all L1 tables, references from the active one).
    /// Walking per reference instead lets a hostile image of a million L1 entries that all
    /// name one table cost a million table walks.
    l2_refs: BTreeMap<u64, (u64, u64)>,
    /// Snapshot L1 entries we may still read. In a consistent image L1 tables never
    /// overlap, so together they fit in the file; more means tables are shared, and reading
    /// them all could mean 65536 snapshots times a 32 MiB table.
    snapshot_l1_budget: u64,
    r: CheckReport,
}

impl<'f> Checker<'f> {
    fn corruption(&mut self, msg: String) {
        self.corruptions(msg, 1);
    }

    /// A problem in an L2 table referenced `n` times counts `n` times, as qemu counts it.
    fn corruptions(&mut self, msg: String, n: u64) {
        self.r.corruptions = self.r.corruptions.saturating_add(n);
        self.note(msg);
    }

    /// A corruption that kept the walk from reading a table: the references it holds are
    /// not counted, so nothing may be freed on the strength of this check.
    fn unwalked(&mut self, msg: String) {
        self.hidden = true;
        self.corruption(msg);
    }

    fn note(&mut self, msg: String) {
        if self.r.messages.len() < MAX_MESSAGES {
            self.r.messages.push(msg);
        }
    }

    /// Counts one reference to every cluster overlapping `[start, start + len)`.
    fn inc(&mut self, start: u64, len: u64, what: &str) {
        self.inc_n(start, len, what, 1);
    }

    /// Counts `n` references to every cluster overlapping `[start, start + len)`.
    fn inc_n(&mut self, start: u64, len: u64, what: &str, n: u64) {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        if len == 0 || n == 0 {
            return;
        }
        let Some(last) = start.checked_add(len - 1) else {
            self.corruption(format!("ERROR {what} at {start:#x} has an impossible length"));
            return;
        };
        for c in start / self.cs..=last / self.cs {
            match usize::try_from(c).ok().and_then(|c| self.refs.get_mut(c)) {
                Some(x) => *x = x.saturating_add(n),
                None => {
                    self.corruption(format!("ERROR {what} at {start:#x}: cluster {c} lies past the end of the file"));
                    return;
                }
            }
        }
    }

    /// Walks one L1 table and records its L2 tables for [`Self::walk_l2_tables`]; `active`
    /// counts guest allocation stats.
    fn walk_l1(&mut self, l1_off: u64, l1_size: u64, active: bool) -> Result<()> {
        if l1_size == 0 {
            return Ok(());
        }
        if !l1_off.is_multiple_of(self.cs) || l1_off.checked_add(l1_size * 8).is_none_or(|e| e > self.file_len) {
            self.unwalked(format!("ERROR L1 table at {l1_off:#x} ({l1_size} entries) is misaligned or past EOF"));
            return Ok(());
        }
        self.inc(l1_off, l1_size * 8, "L1 table");
        let l1 = read_u64_table(self.file, l1_off, l1_size, "l1_table_offset")?;
        for (i, e) in l1.into_iter().enumerate() {
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if e & L1_RESERVED != 0 {
                self.corruption(format!("ERROR L1 entry {i} has reserved bits set: {e:#x}"));
            }
            if !off.is_multiple_of(self.cs) {
                self.unwalked(format!("ERROR l2_offset={off:#x}: Table is not cluster aligned; L1 entry corrupted"));
                continue;
            }
            if off.checked_add(self.cs).is_none_or(|end| end > self.file_len) {
                self.unwalked(format!("ERROR l2_offset={off:#x}: L2 table lies past the end of the file"));
                continue;
            }
            self.inc(off, self.cs, "L2 table");
            let refs = self.l2_refs.entry(off).or_default();
            refs.0 += 1;
            refs.1 += u64::from(active);
        }
        Ok(())
    }

    /// Walks every distinct L2 table once, counting its clusters as many times as L1
    /// entries reference the table.
    fn walk_l2_tables(&mut self) -> Result<()> {
        let es = self.h.l2_entry_size();
        let step = usize_from_u64(es / 8, "L2 entry size")?;
        for (off, (n, n_active)) in std::mem::take(&mut self.l2_refs) {
            let l2 = read_u64_table(self.file, off, self.cs / 8, "l2_table")?;
            let mut next = 0;
            for (j, pair) in l2.chunks_exact(step).enumerate() {
                let entry = pair[0];
                let bitmap = pair.get(1).copied().unwrap_or(0);
                self.l2_entry(entry, bitmap, off + u64_from_usize(j) * es, n, n_active, &mut next);
            }
        }
        Ok(())
    }

    /// One L2 entry of a table referenced `n` times, `n_active` of them from the active L1.
    /// `next` is the host offset that would continue the table's previous data cluster
    /// (0 at the table's start): a data cluster elsewhere counts as fragmented, as qemu counts.
    fn l2_entry(&mut self, entry: u64, bitmap: u64, at: u64, n: u64, n_active: u64, next: &mut u64) {
        let cs = self.cs;
        if entry & OFLAG_COMPRESSED != 0 {
            let (host, len) = compressed_range(&self.h, entry);
            let end_sector = self.file_len.div_ceil(512) * 512;
            if host < cs || host + len > end_sector {
                self.corruptions(
                    format!(
                        "ERROR compressed cluster at {host:#x} ({len} bytes, L2 entry at {at:#x}) is outside the file"
                    ),
                    n,
                );
                return;
            }
            if entry & OFLAG_COPIED != 0 {
                self.corruptions(
                    format!("ERROR coffset={host:#x}: copied flag must never be set for compressed clusters"),
                    n,
                );
            }
            self.inc_n(host, len, "compressed cluster", n);
            *self.r.allocated_clusters.get_or_insert(0) += n_active;
            *self.r.compressed_clusters.get_or_insert(0) += n_active;
            // Compressed clusters are fragmented by nature, qemu says.
            *self.r.fragmented_clusters.get_or_insert(0) += n_active;
            return;
        }
        let host = entry & OFFSET_MASK;
        if self.h.extended_l2() {
            let (alloc, zero) = (low_u32(bitmap), high_u32(bitmap));
            if alloc & zero != 0 {
                self.corruptions(format!("ERROR L2 entry at {at:#x}: subclusters both allocated and zero"), n);
            }
            if host == 0 && alloc != 0 {
                self.corruptions(format!("ERROR L2 entry at {at:#x}: allocated subclusters without a host cluster"), n);
            }
        } else if host == 0 && entry & OFLAG_ZERO == 0 && entry & !OFLAG_COPIED != 0 {
            self.corruptions(format!("ERROR L2 entry at {at:#x} has reserved bits set: {entry:#x}"), n);
        }
        if host == 0 {
            return;
        }
        if !host.is_multiple_of(cs) {
            self.corruptions(format!("ERROR offset={host:#x}: Cluster is not properly aligned; L2 entry corrupted"), n);
            return;
        }
        if host < cs || host >= self.file_len {
            self.corruptions(
                format!("ERROR offset={host:#x}: data cluster (L2 entry at {at:#x}) is outside the file"),
                n,
            );
            return;
        }
        self.inc_n(host, cs, "data cluster", n);
        if n_active > 0 {
            *self.r.allocated_clusters.get_or_insert(0) += n_active;
            if *next != 0 && host != *next {
                *self.r.fragmented_clusters.get_or_insert(0) += n_active;
            }
            *next = host + cs;
        }
    }

    /// Counts the persistent bitmaps' directory, tables and data clusters. A directory
    /// or table that lies outside the file is a corruption, as in qemu.
    fn bitmaps(&mut self) -> Result<()> {
        let bitmaps = match crate::bitmap::directory(self.file, &self.h, self.file_len) {
            Ok(b) => b,
            Err(e) if e.kind() == diskcast_block::ErrorKind::Corrupt => {
                self.unwalked(format!("ERROR {}", e.message()));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(ext) = self.h.bitmaps.filter(|_| !bitmaps.is_empty()) {
            self.inc(ext.directory_offset, ext.directory_size, "bitmap directory");
        }
        // Tables together fit in the file in a consistent image; more means overlap.
        let mut budget = self.file_len / 8;
        for b in &bitmaps {
            let Some(left) = budget.checked_sub(u64::from(b.table_size)) else {
                self.unwalked(format!("ERROR bitmap tables add up to more than the file; {:?} is not checked", b.name));
                self.r.check_errors += 1;
                return Ok(());
            };
            budget = left;
            match crate::bitmap::data_clusters(self.file, b, self.file_len) {
                Ok(clusters) => {
                    self.inc(b.table_offset, u64::from(b.table_size) * 8, "bitmap table");
                    for off in clusters {
                        if !off.is_multiple_of(self.cs) {
                            self.unwalked(format!(
                                "ERROR bitmap {:?}: data cluster at {off:#x} is not aligned",
                                b.name
                            ));
                            continue;
                        }
                        self.inc(off, self.cs, "bitmap data cluster");
                    }
                }
                Err(e) if e.kind() == diskcast_block::ErrorKind::Corrupt => {
                    self.unwalked(format!("ERROR {}", e.message()))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Walks the snapshot table, counting it and every snapshot's L1/L2 tables.
    fn snapshots(&mut self) -> Result<()> {
        let n = self.h.nb_snapshots;
        if n == 0 {
            return Ok(());
        }
        let start = self.h.snapshots_offset;
        if n > MAX_SNAPSHOTS || !start.is_multiple_of(self.cs) || start == 0 || start >= self.file_len {
            self.unwalked(format!("ERROR snapshot table at {start:#x} with {n} snapshots is invalid"));
            return Ok(());
        }
        let mut pos = start;
        let mut snaps = Vec::new();
        for _ in 0..n {
            let mut fixed = RawSnapshot::new_zeroed();
            self.file.read_exact_at(fixed.as_mut_bytes(), pos).map_err(|e| e.with_field("snapshots_offset"))?;
            let l1_off = fixed.l1_table_offset.get();
            let l1_size = u64::from(fixed.l1_size.get());
            let var = u64::from(fixed.extra_data_size.get())
                + u64::from(fixed.id_str_size.get())
                + u64::from(fixed.name_size.get());
            // The last entry's padding may lie past the end: qemu writes the table's bytes only.
            let end = pos + SNAPSHOT_FIXED + var;
            pos = end.div_ceil(8) * 8;
            if end > self.file_len {
                self.unwalked("ERROR snapshot table runs past the end of the file".into());
                return Ok(());
            }
            snaps.push((l1_off, l1_size));
        }
        self.inc(start, pos - start, "snapshot table");
        for (off, size) in snaps {
            if size * 8 > MAX_L1_BYTES {
                self.unwalked(format!("ERROR snapshot L1 table at {off:#x} has {size} entries, too many"));
                continue;
            }
            let Some(left) = self.snapshot_l1_budget.checked_sub(size) else {
                self.unwalked(format!(
                    "ERROR snapshot L1 tables add up to more than the {}-byte file: they overlap; \
                     the remaining snapshots are not checked",
                    self.file_len
                ));
                self.r.check_errors += 1;
                return Ok(());
            };
            self.snapshot_l1_budget = left;
            self.walk_l1(off, size, false)?;
        }
        Ok(())
    }
}

/// Reads refcount entry `i` of a refcount block of `1 << order`-bit entries.
pub(crate) fn get_refcount(block: &[u8], order: u32, i: usize) -> u64 {
    let bits = 1usize << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let mask = low_u8((1u64 << bits) - 1);
        block.get(i / per_byte).map_or(0, |b| u64::from((b >> ((i % per_byte) * bits)) & mask))
    } else {
        let bytes = bits / 8;
        block.get(i * bytes..(i + 1) * bytes).map_or(0, |s| s.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
    }
}

/// Which mismatches [`Checker::compare`] repairs, as `qemu-img check -r` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Report only.
    Nothing,
    /// `-r leaks`: refcounts above the references are lowered.
    Leaks,
    /// `-r all`: refcounts below the references are raised too, and OFLAG_COPIED corrected.
    All,
}

impl<'f> Checker<'f> {
    /// Reads the header and every table and counts what each cluster's refcount should be,
    /// without comparing yet.
    pub(crate) fn analyze(file: &'f dyn ByteSource) -> Result<Self> {
        let h = Header::read(file)?;
        h.check_supported()?;
        let cs = h.cluster_size();
        let file_len = file.len()?;
        let nb_clusters = file_len.div_ceil(cs);
        if nb_clusters > MAX_CHECK_CLUSTERS {
            return Err(Error::unsupported(format!(
                "file has {nb_clusters} clusters; checking more than {MAX_CHECK_CLUSTERS} is not supported"
            )));
        }
        let mut c = Checker {
            file,
            cs,
            file_len,
            refs: vec![0; usize_from_u64(nb_clusters, "nb_clusters")?],
            disk: vec![0; usize_from_u64(nb_clusters, "nb_clusters")?],
            blocks: Vec::new(),
            bad_reftable: false,
            hidden: false,
            l2_refs: BTreeMap::new(),
            snapshot_l1_budget: file_len / 8,
            r: CheckReport::default(),
            h,
        };
        c.r.total_clusters = Some(c.h.size.div_ceil(cs));
        c.r.allocated_clusters = Some(0);
        c.r.compressed_clusters = Some(0);
        c.r.fragmented_clusters = Some(0);
        c.inc(0, cs, "header");
        c.walk_l1(c.h.l1_table_offset, u64::from(c.h.l1_size), true)?;
        c.snapshots()?;
        c.walk_l2_tables()?;
        c.bitmaps()?;
        // Refcount structures count themselves.
        let rt_off = c.h.refcount_table_offset;
        let rt_bytes = u64::from(c.h.refcount_table_clusters) * cs;
        c.inc(rt_off, rt_bytes, "refcount table");
        let reftable = read_u64_table(c.file, rt_off, rt_bytes / 8, "refcount_table_offset")?;
        c.blocks = vec![None; reftable.len()];
        for (i, &e) in reftable.iter().enumerate() {
            let off = e & !0x1ff;
            if off == 0 {
                continue;
            }
            if e & 0x1ff != 0 || off % cs != 0 {
                c.bad_reftable = true;
                c.corruption(format!(
                    "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
                ));
                continue;
            }
            if off.checked_add(cs).is_none_or(|end| end > file_len) {
                c.bad_reftable = true;
                c.corruption(format!("ERROR refcount block {i} at {off:#x} is past the end of the file"));
                continue;
            }
            c.inc(off, cs, "refcount block");
            c.blocks[i] = Some(off);
        }
        Ok(c)
    }

    /// Compares the refcounts of the clusters in the file with the references counted,
    /// as qemu does, repairing with `meta` what `fix` allows. Returns whether only a
    /// rebuild of the refcount structures can repair the image (a used cluster with
    /// refcount 0, which may mean its refcount block is missing, or an unusable refcount
    /// table entry), as qemu decides it. Refcount blocks for clusters past the end are
    /// counted by [`Self::analyze`] but not read: a table of a million entries naming
    /// one block would otherwise mean a million block scans.
    pub(crate) fn compare(&mut self, fix: Fix, mut meta: Option<&mut Editor<&ImageFile>>) -> Result<bool> {
        let cs = self.cs;
        let order = self.h.refcount_order;
        let per_block = (cs * 8) >> order;
        let nb_clusters = u64_from_usize(self.refs.len());
        let nb_blocks = nb_clusters.div_ceil(per_block);
        let mut rebuild = self.bad_reftable;
        let mut highest: Option<u64> = None;
        let mut buf = vec![0u8; usize_from_u64(cs, "cluster size")?];
        for b in 0..nb_blocks {
            match self.blocks.get(usize_from_u64(b, "refcount block index")?).copied().flatten() {
                Some(off) => self.file.read_exact_at(&mut buf, off)?,
                None => buf.fill(0),
            }
            for j in 0..per_block.min(nb_clusters - b * per_block) {
                let cl = b * per_block + j;
                let k = usize_from_u64(cl, "cluster index")?;
                let disk = get_refcount(&buf, order, usize_from_u64(j, "refcount index")?);
                let want = u64::from(self.refs.get(k).copied().unwrap_or(0));
                if disk > 0 || want > 0 {
                    highest = Some(cl);
                }
                self.set_disk(k, disk);
                if disk == want {
                    continue;
                }
                rebuild |= disk == 0;
                let fixing = disk != 0 && (disk > want && fix != Fix::Nothing || disk < want && fix == Fix::All);
                let word = match (fixing, disk < want) {
                    (true, _) => "Repairing",
                    (false, true) => "ERROR",
                    (false, false) => "Leaked",
                };
                self.note(format!("{word} cluster {cl} refcount={disk} reference={want}"));
                if let (true, Some(m)) = (fixing, meta.as_deref_mut()) {
                    m.set_refcount(cl * cs, want)?;
                    self.set_disk(k, want);
                    if disk > want {
                        self.r.leaks_fixed += 1;
                    } else {
                        self.r.corruptions_fixed += 1;
                    }
                } else if disk < want {
                    self.r.corruptions += 1;
                } else {
                    self.r.leaks += 1;
                }
            }
        }
        self.r.image_end_offset = Some(highest.map_or(0, |h| (h + 1) * cs));
        Ok(rebuild)
    }

    fn set_disk(&mut self, k: usize, v: u64) {
        if let Some(d) = self.disk.get_mut(k) {
            *d = u16::try_from(v).unwrap_or(u16::MAX);
        }
    }

    fn disk_refcount(&self, host: u64) -> u64 {
        usize::try_from(host / self.cs).ok().and_then(|k| self.disk.get(k)).map_or(0, |&v| u64::from(v))
    }

    /// qemu's OFLAG_COPIED pass over the active L1 table and its L2 tables: the flag must
    /// be set exactly where the refcount (as [`Self::compare`] left it) is 1. With `fix`
    /// the entries are corrected in place (L2 tables first, then the L1 table).
    pub(crate) fn oflag_copied(&mut self, fix: Option<&ImageFile>) -> Result<()> {
        let (cs, file_len) = (self.cs, self.file_len);
        let l1_size = u64::from(self.h.l1_size);
        if l1_size == 0 {
            return Ok(());
        }
        let word = if fix.is_some() { "Repairing" } else { "ERROR" };
        let mut l1 = read_u64_table(self.file, self.h.l1_table_offset, l1_size, "l1_table_offset")?;
        let mut l1_dirty = false;
        let step = usize_from_u64(self.h.l2_entry_size() / 8, "L2 entry size")?;
        let mut seen = std::collections::BTreeSet::new();
        let usable = |off: u64| off.is_multiple_of(cs) && off >= cs && off < file_len;
        for (i, e) in l1.iter_mut().enumerate() {
            let off = *e & OFFSET_MASK;
            // A table must lie wholly inside the file (the walk reported one that does not).
            if off == 0 || !usable(off) || off.checked_add(cs).is_none_or(|end| end > file_len) {
                continue;
            }
            let rc = self.disk_refcount(off);
            if (rc == 1) != (*e & OFLAG_COPIED != 0) {
                let msg = format!("{word} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={e:x} refcount={rc}");
                self.repaired_or_corrupt(msg, fix.is_some());
                *e ^= OFLAG_COPIED;
                l1_dirty = true;
            }
            if !seen.insert(off) {
                continue;
            }
            let mut l2 = read_u64_table(self.file, off, cs / 8, "l2_table")?;
            let mut dirty = false;
            for entry in l2.iter_mut().step_by(step) {
                let host = *entry & OFFSET_MASK;
                if *entry & OFLAG_COMPRESSED != 0 || host == 0 || !usable(host) {
                    continue;
                }
                let rc = self.disk_refcount(host);
                if (rc == 1) != (*entry & OFLAG_COPIED != 0) {
                    let msg = format!("{word} OFLAG_COPIED data cluster: l2_entry={entry:x} refcount={rc}");
                    self.repaired_or_corrupt(msg, fix.is_some());
                    *entry ^= OFLAG_COPIED;
                    dirty = true;
                }
            }
            if let (true, Some(f)) = (dirty, fix) {
                f.write_all_at(&table_bytes(&l2), off)?;
            }
        }
        if let (true, Some(f)) = (l1_dirty, fix) {
            f.write_all_at(&table_bytes(&l1), self.h.l1_table_offset)?;
        }
        Ok(())
    }

    fn repaired_or_corrupt(&mut self, msg: String, fixed: bool) {
        if fixed {
            self.r.corruptions_fixed += 1;
            self.note(msg);
        } else {
            self.corruption(msg);
        }
    }

    /// The header, the refcounts the tables need, and the file's length in clusters.
    pub(crate) fn header(&self) -> &Header {
        &self.h
    }

    /// References counted for every cluster of the file (saturating at u16::MAX).
    pub(crate) fn references(&self) -> &[u16] {
        &self.refs
    }

    /// The report so far.
    pub(crate) fn report(&mut self) -> &mut CheckReport {
        &mut self.r
    }

    pub(crate) fn into_report(self) -> CheckReport {
        self.r
    }
}

/// A table of big-endian u64 entries as stored.
pub(crate) fn table_bytes(t: &[u64]) -> Vec<u8> {
    t.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// Checks the image in `file`.
pub fn check(file: Source) -> Result<CheckReport> {
    let mut c = Checker::analyze(file.as_ref())?;
    c.compare(Fix::Nothing, None)?;
    c.oflag_copied(None)?;
    Ok(c.into_report())
}

#[cfg(test)]
mod tests {
    use super::get_refcount;
    use crate::writer::put_refcount;

    #[test]
    fn refcount_packing_roundtrips_for_every_width() {
        for order in 0..=6u32 {
            let bits = 1u32 << order;
            let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            let mut block = vec![0u8; 512];
            let n = 512 * 8 / bits as usize;
            for i in 0..n {
                put_refcount(&mut block, order, i, (i as u64 * 7) & max);
            }
            for i in 0..n {
                assert_eq!(get_refcount(&block, order, i), (i as u64 * 7) & max, "order {order} entry {i}");
            }
        }
        // qemu's layout for 1-bit refcounts: entry 0 is the lowest bit of byte 0.
        let mut b = [0u8; 1];
        put_refcount(&mut b, 0, 0, 1);
        assert_eq!(b[0], 1);
    }
}
