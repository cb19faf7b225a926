//! `resize` in place, as qemu's `qcow2_co_truncate` does it: growing writes the new size
//! and, when the L1 table's clusters cannot map it, moves the L1 table to new clusters at
//! the end of the file; shrinking (`--shrink`) frees every cluster past the new end and
//! truncates the file after its last used cluster. Tables are written before the header
//! and refcounts are dropped last, so an interrupted resize leaves at worst leaked
//! clusters (`qemu-img check -r leaks`), never a cluster used twice.

use crate::header::{
    Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, OFFSET_MASK, OFLAG_COMPRESSED,
    read_u64_table,
};
use crate::reader::compressed_range;
use crate::{check::get_refcount, writer::put_refcount};
use diskcast_block::io::ImageFile;
use diskcast_block::registry::Preallocation;
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::BTreeMap;

/// Where the size, L1 size and L1 offset sit in the header: one write updates all three.
const SIZE_FIELD: u64 = 24;
/// Bytes from `SIZE_FIELD` through `l1_table_offset` (size, crypt_method, l1_size, l1 offset).
const SIZE_TO_L1: usize = 24;

/// Resizes the qcow2 image in `file` to `size` guest bytes.
pub fn resize(file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
    let name = file.path().to_path_buf();
    resize_inner(file, size, prealloc).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn resize_inner(file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
    let h = Header::read(file)?;
    h.check_supported()?;
    if h.incompatible & (INCOMPAT_CORRUPT | INCOMPAT_DIRTY) != 0 {
        return Err(Error::refused(
            "the image is marked corrupt or was not closed cleanly (dirty); run `qemu-img check -r all` first",
        ));
    }
    if h.bitmaps.is_some() && h.autoclear & 1 != 0 {
        return Err(Error::unsupported(
            "the image has persistent dirty bitmaps, whose tables diskcast does not resize; \
             remove them (qemu-img bitmap --remove) or use qemu-img resize",
        ));
    }
    if !size.is_multiple_of(512) {
        return Err(Error::argument("The new size must be a multiple of 512"));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::argument(format!("{size} bytes is more than qcow2's limit of {MAX_VIRTUAL_SIZE}")));
    }
    if prealloc != Preallocation::Off {
        return Err(Error::unsupported(format!(
            "preallocation={} is not implemented for qcow2 resize (off is)",
            prealloc.name()
        )));
    }
    let mut m = Meta::load(file, &h)?;
    if size >= h.size { m.grow(size) } else { m.shrink(size) }
}

/// The image's tables and refcounts while they change (also `check -r`'s refcount writer).
pub(crate) struct Meta<'a> {
    file: &'a ImageFile,
    h: &'a Header,
    cs: u64,
    /// The refcount table, as loaded and as changed.
    rt: Vec<u64>,
    rt_dirty: bool,
    /// Refcount blocks read so far, by table index, and whether each changed.
    blocks: BTreeMap<usize, (Vec<u8>, bool)>,
    /// First free host offset at the end of the file (cluster aligned).
    end: u64,
}

impl<'a> Meta<'a> {
    pub(crate) fn load(file: &'a ImageFile, h: &'a Header) -> Result<Self> {
        let cs = h.cluster_size();
        let rt_entries = u64::from(h.refcount_table_clusters) * cs / 8;
        let rt = read_u64_table(file, h.refcount_table_offset, rt_entries, "refcount_table_offset")?;
        let end = file.len()?.div_ceil(cs) * cs;
        Ok(Meta { file, h, cs, rt, rt_dirty: false, blocks: BTreeMap::new(), end })
    }

    /// Refcount entries per refcount block.
    fn per_block(&self) -> u64 {
        (self.cs * 8) >> self.h.refcount_order
    }

    /// The refcount block index and entry of host offset `host`.
    fn slot(&self, host: u64) -> Result<(usize, usize)> {
        let cluster = host / self.cs;
        let idx = usize_from_u64(cluster / self.per_block(), "refcount table index")?;
        let entry = usize_from_u64(cluster % self.per_block(), "refcount entry")?;
        Ok((idx, entry))
    }

    /// The block at table index `idx`, read once; `None` when the table has no block there.
    fn block(&mut self, idx: usize) -> Result<Option<&mut (Vec<u8>, bool)>> {
        let off = self.rt.get(idx).copied().unwrap_or(0) & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !self.blocks.contains_key(&idx) {
            let mut b = vec![0u8; usize_from_u64(self.cs, "cluster size")?];
            self.file.read_exact_at(&mut b, off)?;
            self.blocks.insert(idx, (b, false));
        }
        Ok(self.blocks.get_mut(&idx))
    }

    fn refcount(&mut self, host: u64) -> Result<u64> {
        let (idx, i) = self.slot(host)?;
        let order = self.h.refcount_order;
        Ok(self.block(idx)?.map_or(0, |(b, _)| get_refcount(b, order, i)))
    }

    /// Sets the refcount of the cluster at `host`, adding a refcount block at the end of
    /// the file where the table has none (the new block counts itself).
    pub(crate) fn set_refcount(&mut self, host: u64, value: u64) -> Result<()> {
        let (idx, i) = self.slot(host)?;
        if self.block(idx)?.is_none() {
            if value == 0 {
                return Ok(());
            }
            if idx >= self.rt.len() {
                return Err(Error::unsupported(format!(
                    "the refcount table ({} entries) has no room for the clusters this resize needs, \
                     and diskcast does not move refcount tables; qemu-img resize can",
                    self.rt.len()
                )));
            }
            let at = self.take_clusters(1)?;
            self.rt[idx] = at;
            self.rt_dirty = true;
            self.blocks.insert(idx, (vec![0u8; usize_from_u64(self.cs, "cluster size")?], true));
            // The new block lies at the end: in its own range or in one that exists.
            self.set_refcount(at, 1)?;
        }
        let order = self.h.refcount_order;
        let max = if order >= 6 { u64::MAX } else { (1u64 << (1u32 << order)) - 1 };
        if value > max {
            return Err(Error::corrupt(format!("refcount of cluster {host:#x} would exceed {max}")));
        }
        if let Some((b, dirty)) = self.block(idx)? {
            put_refcount(b, order, i, value);
            *dirty = true;
        }
        Ok(())
    }

    /// Host offset of `n` new clusters at the end of the file (refcounts not yet set).
    fn take_clusters(&mut self, n: u64) -> Result<u64> {
        let at = self.end;
        self.end = n
            .checked_mul(self.cs)
            .and_then(|b| at.checked_add(b))
            .ok_or_else(|| Error::out_of_bounds("the image file would grow past 2^64 bytes"))?;
        Ok(at)
    }

    /// Lowers the refcount of every cluster of `[host, host+len)` by one.
    fn release(&mut self, host: u64, len: u64) -> Result<()> {
        let first = host / self.cs;
        let last = (host + len.max(1) - 1) / self.cs;
        for c in first..=last {
            let at = c * self.cs;
            let r = self.refcount(at)?;
            if r == 0 {
                return Err(Error::corrupt(format!(
                    "cluster {at:#x} is in use but has refcount 0; run qemu-img check"
                )));
            }
            self.set_refcount(at, r - 1)?;
        }
        Ok(())
    }

    /// Writes the changed refcount blocks and table.
    pub(crate) fn flush_refcounts(&mut self) -> Result<()> {
        for (idx, (b, dirty)) in &mut self.blocks {
            if *dirty {
                let off = self.rt.get(*idx).copied().unwrap_or(0) & OFFSET_MASK;
                self.file.write_all_at(b, off)?;
                *dirty = false;
            }
        }
        if self.rt_dirty {
            let bytes: Vec<u8> = self.rt.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.write_all_at(&bytes, self.h.refcount_table_offset)?;
            self.rt_dirty = false;
        }
        Ok(())
    }

    /// Writes size, L1 size and L1 offset into the header at once, then syncs.
    fn write_header(&self, size: u64, l1_size: u32, l1_offset: u64) -> Result<()> {
        let mut b = [0u8; SIZE_TO_L1];
        b[..8].copy_from_slice(&size.to_be_bytes());
        b[8..12].copy_from_slice(&self.h.crypt_method.to_be_bytes());
        b[12..16].copy_from_slice(&l1_size.to_be_bytes());
        b[16..24].copy_from_slice(&l1_offset.to_be_bytes());
        self.file.sync()?;
        self.file.write_all_at(&b, SIZE_FIELD)?;
        self.file.sync()
    }

    fn l1_entries(&self, size: u64) -> Result<u32> {
        let n = Header::l1_entries_for(size, self.h.cluster_bits, self.h.l2_entry_size());
        if n * 8 > MAX_L1_BYTES {
            return Err(Error::argument(format!(
                "{size} bytes needs an L1 table of {} bytes, more than the {MAX_L1_BYTES} qemu accepts; \
                 use a larger cluster_size",
                n * 8
            )));
        }
        u32::try_from(n).map_err(|_| Error::argument("L1 table too large"))
    }

    fn grow(&mut self, size: u64) -> Result<()> {
        let h = self.h;
        let need = self.l1_entries(size)?;
        let old_bytes = u64::from(h.l1_size) * 8;
        let capacity = old_bytes.div_ceil(self.cs) * self.cs / 8; // entries the L1 clusters hold
        if need <= h.l1_size {
            return self.write_header(size, h.l1_size, h.l1_table_offset);
        }
        let mut l1 = read_u64_table(self.file, h.l1_table_offset, u64::from(h.l1_size), "l1_table_offset")?;
        l1.resize(usize_from_u64(u64::from(need), "L1 entries")?, 0);
        let bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        if h.l1_table_offset != 0 && u64::from(need) <= capacity {
            // The L1 clusters have room: the new entries (zeros) go after the old ones.
            self.file.write_all_at(&bytes, h.l1_table_offset)?;
            return self.write_header(size, need, h.l1_table_offset);
        }
        // A new L1 table at the end of the file, then the header, then the old one freed.
        let clusters = u64_from_usize(bytes.len()).div_ceil(self.cs);
        let at = self.take_clusters(clusters)?;
        for c in 0..clusters {
            self.set_refcount(at + c * self.cs, 1)?;
        }
        let mut padded = bytes;
        padded.resize(usize_from_u64(clusters * self.cs, "L1 table")?, 0);
        self.file.write_all_at(&padded, at)?;
        self.flush_refcounts()?;
        self.write_header(size, need, at)?;
        if h.l1_table_offset != 0 && old_bytes > 0 {
            self.release(h.l1_table_offset, old_bytes)?;
            self.flush_refcounts()?;
            self.file.sync()?;
        }
        Ok(())
    }

    fn shrink(&mut self, size: u64) -> Result<()> {
        let h = self.h;
        if h.nb_snapshots > 0 {
            return Err(Error::unsupported(
                "shrinking an image with internal snapshots is not implemented in diskcast (their tables may \
                 share the clusters being freed); qemu-img resize --shrink can",
            ));
        }
        let span = h.l2_span();
        let esize = h.l2_entry_size();
        let keep = size.div_ceil(self.cs); // guest clusters that stay
        let mut l1 = read_u64_table(self.file, h.l1_table_offset, u64::from(h.l1_size), "l1_table_offset")?;
        let mut freed: Vec<(u64, u64)> = Vec::new(); // host ranges to release
        let mut tables: Vec<(u64, Vec<u8>)> = Vec::new(); // L2 tables to write back
        let mut seen = std::collections::BTreeSet::new();
        for (i, e) in l1.iter_mut().enumerate() {
            let l2_off = *e & OFFSET_MASK;
            if l2_off != 0 && !seen.insert(l2_off) {
                return Err(Error::corrupt(format!(
                    "L2 table {l2_off:#x} is used twice by the L1 table; run qemu-img check -r all first"
                )));
            }
            let first_guest_cluster = u64_from_usize(i) * (span / self.cs);
            let l2_entries = h.l2_entries();
            if l2_off == 0 || first_guest_cluster + l2_entries <= keep {
                continue;
            }
            let mut table = vec![0u8; usize_from_u64(self.cs, "cluster size")?];
            self.file.read_exact_at(&mut table, l2_off)?;
            let from = keep.saturating_sub(first_guest_cluster);
            for j in from..l2_entries {
                let at = usize_from_u64(j * esize, "L2 entry")?;
                let Some(raw) = table.get(at..at + 8) else { continue };
                let entry = u64::from_be_bytes(raw.try_into().unwrap_or_default());
                if entry & OFLAG_COMPRESSED != 0 {
                    freed.push(compressed_range(h, entry));
                } else if entry & OFFSET_MASK != 0 {
                    freed.push((entry & OFFSET_MASK, self.cs));
                }
                if let Some(slot) = table.get_mut(at..at + usize_from_u64(esize, "L2 entry")?) {
                    slot.fill(0);
                }
            }
            if from == 0 {
                // Nothing of this table stays: drop it from the L1 table and free it.
                freed.push((l2_off, self.cs));
                *e = 0;
            } else {
                tables.push((l2_off, table));
            }
        }
        // Refcounts dropped in memory first: a cluster the image says is free (metadata
        // that contradicts itself) stops the resize before anything is written.
        for (host, len) in freed {
            self.release(host, len)?;
        }
        for (at, table) in &tables {
            self.file.write_all_at(table, *at)?;
        }
        let bytes: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        if !bytes.is_empty() {
            self.file.write_all_at(&bytes, h.l1_table_offset)?;
        }
        self.write_header(size, h.l1_size, h.l1_table_offset)?;
        self.flush_refcounts()?;
        self.truncate_after_last_used()?;
        self.file.sync()
    }

    /// Cuts the file after its last cluster with a non-zero refcount (as qemu does after
    /// a shrink). Linear in the refcount blocks.
    fn truncate_after_last_used(&mut self) -> Result<()> {
        let order = self.h.refcount_order;
        let per_block = self.per_block();
        for idx in (0..self.rt.len()).rev() {
            let Some((b, _)) = self.block(idx)? else { continue };
            let Some(last) =
                (0..usize_from_u64(per_block, "refcount entries")?).rev().find(|&i| get_refcount(b, order, i) != 0)
            else {
                continue;
            };
            let end = (u64_from_usize(idx) * per_block + u64_from_usize(last) + 1) * self.cs;
            if end < self.file.len()? {
                self.file.set_len(end)?;
            }
            return Ok(());
        }
        Ok(())
    }
}
