//! Editing an existing qcow2 image in place: the one cluster allocator (refcounts,
//! refcount blocks and table, grown as qemu grows them), L2 tables allocated or copied
//! when shared, guest writes with copy-on-write, zero clusters, and the write order that
//! leaves an interrupted edit with at worst leaked clusters.
//!
//! Order (qcow2.txt leaves it to the writer; qemu keeps the same one): a new cluster's
//! refcount is raised in memory when it is handed out and reaches the disk before any
//! table that names it ([`Editor::flush`] writes refcounts, then L2 tables, then the L1
//! table and header); data is written straight into clusters nothing names yet; a
//! cluster that loses a reference is only counted down after the tables no longer name
//! it. On disk every refcount is therefore at least the number of references at every
//! moment: a crash leaks clusters (`qemu-img check -r leaks` repairs that) but never lets
//! one cluster be used twice.
//!
//! Refused, each naming the reason: images marked corrupt or dirty (their refcounts
//! cannot be trusted), encrypted images and external data files (through
//! [`Header::check_supported`]), extended L2 entries (subcluster writes are not
//! implemented), and images with persistent dirty bitmaps, which record the clusters the
//! guest changed and which diskcast does not update.

use crate::check::get_refcount;
use crate::header::{
    Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, L1_RESERVED, MAX_L1_BYTES, MAX_REFTABLE_BYTES, OFFSET_MASK,
    OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, at, read_u64_table,
};
use crate::reader::{compressed_range, decompress};
use crate::writer::put_refcount;
use diskcast_block::io::ImageFile;
use diskcast_block::{BlockRead, Error, Result, range_end, read_backing};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::borrow::Borrow;
use std::collections::BTreeMap;

/// Bytes of L2 tables and refcount blocks kept in memory while editing: past it the
/// editor writes everything out (in the safe order) and forgets the clean tables, so an
/// edit of any size stays within this bound (32 MiB maps 256 GiB with 64 KiB clusters,
/// the reader's L2 cache bound).
const MAX_CACHED_BYTES: u64 = 32 << 20;

/// What one dropped reference waiting for a flush costs in memory (a B-tree entry of
/// two u64s with its share of the nodes), counted against [`MAX_CACHED_BYTES`].
const PENDING_FREE_BYTES: u64 = 64;

/// An L2 table of the active image held in memory.
#[derive(Debug)]
struct L2 {
    /// Its host offset.
    host: u64,
    entries: Vec<u64>,
    dirty: bool,
}

/// A refcount block held in memory.
#[derive(Debug)]
struct Block {
    bytes: Vec<u8>,
    dirty: bool,
}

/// An existing qcow2 image open for editing. `F` is the image file, owned or borrowed
/// (opened read-write and locked as a writer by the caller).
#[derive(Debug)]
pub struct Editor<F: Borrow<ImageFile>> {
    file: F,
    h: Header,
    cs: u64,
    /// The active L1 table as it will be written.
    l1: Vec<u64>,
    l1_dirty: bool,
    /// Active L2 tables read or made so far, by L1 index.
    l2: BTreeMap<usize, L2>,
    /// The refcount table, as loaded and as changed.
    rt: Vec<u64>,
    rt_dirty: bool,
    /// Refcount blocks read so far, by table index.
    blocks: BTreeMap<usize, Block>,
    /// First cluster-aligned offset past everything allocated.
    end: u64,
    /// Clusters below this index were found in use by the free-cluster scan.
    free_hint: u64,
    /// References dropped but not yet counted down, by cluster index (applied by
    /// [`Editor::flush`] after the tables that dropped them are on disk).
    pending_frees: BTreeMap<u64, u64>,
    /// Persistent bitmaps are in use (opened with [`Editor::open_keeping_bitmaps`]):
    /// guest writes are refused.
    has_bitmaps: bool,
    /// The next free byte inside the host cluster that compressed clusters written in this
    /// edit are packed into (0: none yet).
    compressed_pos: u64,
}

impl<F: Borrow<ImageFile>> Editor<F> {
    /// Opens the image in `file` for editing, refusing what the editor cannot keep
    /// consistent (see the module documentation).
    pub fn open(file: F) -> Result<Self> {
        let ed = Self::open_keeping_bitmaps(file)?;
        if ed.has_bitmaps {
            return Err(Error::unsupported(
                "the image has persistent dirty bitmaps, which record every cluster the guest changes; diskcast \
                 does not update them, so editing would make them lie; remove them (qemu-img bitmap --remove) \
                 or use qemu-img",
            )
            .with_field("bitmaps"));
        }
        Ok(ed)
    }

    /// The same, also for an image with persistent bitmaps, for changes to metadata only
    /// (the bitmaps themselves): clusters can be allocated and freed (the bitmaps'
    /// clusters are counted like any other), but guest writes are refused.
    pub fn open_keeping_bitmaps(file: F) -> Result<Self> {
        let e = Self::open_unchecked(file)?;
        let h = &e.h;
        if h.incompatible & (INCOMPAT_CORRUPT | INCOMPAT_DIRTY) != 0 {
            return Err(Error::refused(
                "the image is marked corrupt or was not closed cleanly (dirty), so its refcounts cannot be \
                 trusted for allocating clusters; run `qemu-img check -r all` first",
            )
            .with_field("incompatible_features"));
        }
        if h.extended_l2() {
            return Err(Error::unsupported(
                "the image has extended L2 entries (subclusters); diskcast does not write into those; \
                 use qemu-img or convert to a new image",
            )
            .with_field("incompatible_features"));
        }
        Ok(e)
    }

    /// [`open`](Self::open) without its refusals, for `check -r`, which repairs the very
    /// images they refuse (dirty, corrupt), `amend` and `bitmap`, which change bitmaps
    /// themselves: refcounts and clusters for metadata only; guest writes are still
    /// refused where bitmaps are in use.
    pub(crate) fn open_unchecked(file: F) -> Result<Self> {
        let f: &ImageFile = file.borrow();
        let h = Header::read(f)?;
        h.check_supported()?;
        let has_bitmaps =
            h.bitmaps.is_some_and(|b| b.nb_bitmaps > 0) && h.autoclear & crate::bitmap::AUTOCLEAR_BITMAPS != 0;
        let cs = h.cluster_size();
        let rt_entries = u64::from(h.refcount_table_clusters) * cs / 8;
        let rt = read_u64_table(f, h.refcount_table_offset, rt_entries, "refcount_table_offset")?;
        let l1 = read_u64_table(f, h.l1_table_offset, u64::from(h.l1_size), "l1_table_offset")?;
        let end = f.len()?.div_ceil(cs) * cs;
        Ok(Editor {
            file,
            h,
            cs,
            l1,
            l1_dirty: false,
            l2: BTreeMap::new(),
            rt,
            rt_dirty: false,
            blocks: BTreeMap::new(),
            end,
            free_hint: 1,
            pending_frees: BTreeMap::new(),
            has_bitmaps,
            compressed_pos: 0,
        })
    }

    /// The image file.
    pub fn file(&self) -> &ImageFile {
        self.file.borrow()
    }

    /// The header as it is now (sizes and table offsets follow the edits).
    pub fn header(&self) -> &Header {
        &self.h
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.cs
    }

    /// The active L1 table as it will be written.
    pub fn l1(&self) -> &[u64] {
        &self.l1
    }

    /// Whether the active image maps any cluster at all (an L1 entry is set).
    pub fn has_data(&self) -> bool {
        self.l1.iter().any(|&e| e & OFFSET_MASK != 0)
    }

    fn cs_bytes(&self) -> Result<usize> {
        Ok(usize_from_u64(self.cs, "cluster size")?)
    }

    // ---- refcounts -------------------------------------------------------------------

    /// Refcount entries per refcount block.
    fn per_block(&self) -> u64 {
        (self.cs * 8) >> self.h.refcount_order
    }

    /// Largest refcount the image's width holds.
    fn max_refcount(&self) -> u64 {
        let bits = self.h.refcount_bits();
        if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
    }

    /// The refcount block index and entry of host offset `host`.
    fn slot(&self, host: u64) -> Result<(usize, usize)> {
        let cluster = host / self.cs;
        let idx = usize_from_u64(cluster / self.per_block(), "refcount table index")?;
        let entry = usize_from_u64(cluster % self.per_block(), "refcount entry")?;
        Ok((idx, entry))
    }

    /// The block at table index `idx`, read once; `None` when the table has no block there.
    fn block(&mut self, idx: usize) -> Result<Option<&mut Block>> {
        let off = self.rt.get(idx).copied().unwrap_or(0) & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !self.blocks.contains_key(&idx) {
            if !off.is_multiple_of(self.cs) || off.checked_add(self.cs).is_none_or(|e| e > self.end) {
                return Err(Error::corrupt(format!(
                    "refcount block {idx} at {off:#x} is misaligned or past the end of the file; run qemu-img check"
                ))
                .with_field("refcount_table"));
            }
            let mut bytes = vec![0u8; self.cs_bytes()?];
            self.file().read_exact_at(&mut bytes, off)?;
            self.blocks.insert(idx, Block { bytes, dirty: false });
        }
        Ok(self.blocks.get_mut(&idx))
    }

    /// The refcount of the cluster holding host offset `host` (in memory: references
    /// dropped in this edit still count until [`flush`](Self::flush)).
    pub fn refcount(&mut self, host: u64) -> Result<u64> {
        let (idx, i) = self.slot(host)?;
        let order = self.h.refcount_order;
        Ok(self.block(idx)?.map_or(0, |b| get_refcount(&b.bytes, order, i)))
    }

    /// Sets the refcount of the cluster at `host`, adding a refcount block at the end of
    /// the file where the table has none (the new block counts itself) and growing the
    /// refcount table when it has no entry for it.
    pub(crate) fn set_refcount(&mut self, host: u64, value: u64) -> Result<()> {
        let max = self.max_refcount();
        if value > max {
            return Err(Error::unsupported(format!(
                "the refcount of cluster {host:#x} would exceed {max}, the most refcount_bits={} holds; \
                 raise it with qemu-img amend -o refcount_bits=16",
                self.h.refcount_bits()
            )));
        }
        let (idx, i) = self.slot(host)?;
        if self.block(idx)?.is_none() {
            if value == 0 {
                return Ok(());
            }
            if idx >= self.rt.len() {
                self.grow_reftable(idx)?;
            }
            // The table may have gained the block while growing (it covers itself).
            if self.block(idx)?.is_none() {
                let at = self.take_clusters(1)?;
                self.rt[idx] = at;
                self.rt_dirty = true;
                self.blocks.insert(idx, Block { bytes: vec![0u8; self.cs_bytes()?], dirty: true });
                self.set_refcount(at, 1)?;
            }
        }
        let order = self.h.refcount_order;
        if let Some(b) = self.block(idx)? {
            put_refcount(&mut b.bytes, order, i, value);
            b.dirty = true;
        }
        Ok(())
    }

    /// Raises the refcount of the cluster at `host` by one (a new reference to it).
    pub fn incref(&mut self, host: u64) -> Result<()> {
        let r = self.refcount(host)?;
        self.set_refcount(host, r + 1)
    }

    /// Drops one reference to every cluster of `[host, host + len)`: counted down by the
    /// next [`flush`](Self::flush), after the tables that named them are written. A
    /// cluster whose refcount is already used up is corruption, refused here before
    /// anything is written.
    pub fn free(&mut self, host: u64, len: u64) -> Result<()> {
        let first = host / self.cs;
        let last = host.saturating_add(len.max(1) - 1) / self.cs;
        for c in first..=last {
            let pending = self.pending_frees.get(&c).copied().unwrap_or(0);
            if self.refcount(c * self.cs)? <= pending {
                return Err(Error::corrupt(format!(
                    "cluster {:#x} is in use but has refcount 0 (the metadata contradicts itself); run qemu-img check -r all",
                    c * self.cs
                )));
            }
            self.pending_frees.insert(c, pending + 1);
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

    /// `n` contiguous new clusters with refcount 1: a single cluster is the first free
    /// one by refcount, as qemu allocates; several (tables) go to the end of the file.
    pub fn allocate(&mut self, n: u64) -> Result<u64> {
        let at = if n == 1 { self.first_free()? } else { None };
        let at = match at {
            Some(at) => at,
            None => self.take_clusters(n)?,
        };
        for c in 0..n {
            let host = at + c * self.cs;
            if self.refcount(host)? != 0 {
                return Err(Error::corrupt(format!(
                    "cluster {host:#x} past the end of the file already has a refcount; run qemu-img check -r all"
                )));
            }
            self.set_refcount(host, 1)?;
        }
        Ok(at)
    }

    /// The first cluster inside the file whose refcount is 0. The scan only moves
    /// forward (clusters freed by a flush move it back), so an edit costs one pass over
    /// the refcounts at most.
    fn first_free(&mut self) -> Result<Option<u64>> {
        while self.free_hint * self.cs < self.end {
            let host = self.free_hint * self.cs;
            if self.refcount(host)? == 0 && !self.pending_frees.contains_key(&self.free_hint) {
                return Ok(Some(host));
            }
            self.free_hint += 1;
        }
        Ok(None)
    }

    /// Moves the refcount table to a larger one at the end of the file covering table
    /// index `need`, as qemu does when it runs out: 1.5 times the old size at least,
    /// refcount blocks for the new clusters made there too, the header switched after
    /// both are written, the old table freed last.
    fn grow_reftable(&mut self, need: usize) -> Result<()> {
        let per_cluster = self.cs / 8;
        let old_len = u64_from_usize(self.rt.len());
        let need = u64_from_usize(need) + 1;
        let mut entries = need.max(old_len + old_len / 2).max(1);
        // Enough entries to cover the file, the new table and a block per entry (an
        // upper bound): the table never needs to grow again for its own clusters.
        loop {
            entries = entries.div_ceil(per_cluster) * per_cluster;
            let clusters = self.end / self.cs + entries * 8 / self.cs + entries;
            let cover = clusters.div_ceil(self.per_block());
            if cover <= entries {
                break;
            }
            entries = cover;
        }
        let bytes = entries * 8;
        if bytes > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(format!(
                "the refcount table would need {bytes} bytes, more than qemu's limit of {MAX_REFTABLE_BYTES}"
            )));
        }
        let table_clusters = bytes / self.cs;
        let old = (self.h.refcount_table_offset, u64::from(self.h.refcount_table_clusters) * self.cs);
        let at = self.take_clusters(table_clusters)?;
        self.rt.resize(usize_from_u64(entries, "refcount table entries")?, 0);
        for c in 0..table_clusters {
            self.set_refcount(at + c * self.cs, 1)?;
        }
        self.h.refcount_table_offset = at;
        self.h.refcount_table_clusters =
            u32::try_from(table_clusters).map_err(|_| Error::unsupported("refcount table too large"))?;
        self.write_refcounts()?;
        self.file().sync()?;
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&at.to_be_bytes());
        b[8..].copy_from_slice(&self.h.refcount_table_clusters.to_be_bytes());
        self.file().write_all_at(&b, u64_from_usize(at::REFCOUNT_TABLE_OFFSET))?;
        self.file().sync()?;
        self.free(old.0, old.1)
    }

    /// Writes the changed refcount blocks, then the refcount table.
    fn write_refcounts(&mut self) -> Result<()> {
        for (idx, b) in &mut self.blocks {
            if b.dirty {
                let off = self.rt.get(*idx).copied().unwrap_or(0) & OFFSET_MASK;
                self.file.borrow().write_all_at(&b.bytes, off)?;
                b.dirty = false;
            }
        }
        if self.rt_dirty {
            let bytes: Vec<u8> = self.rt.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file.borrow().write_all_at(&bytes, self.h.refcount_table_offset)?;
            self.rt_dirty = false;
        }
        Ok(())
    }

    // ---- tables ----------------------------------------------------------------------

    /// Entries per L2 table.
    fn l2_entries(&self) -> u64 {
        self.cs / 8
    }

    /// L1 entry `idx` (`e`, allocated) must name a cluster-aligned L2 table inside the
    /// file, with its reserved bits clear.
    fn check_l1_entry(&self, idx: usize, e: u64) -> Result<()> {
        let host = e & OFFSET_MASK;
        if e & L1_RESERVED != 0
            || !host.is_multiple_of(self.cs)
            || host.checked_add(self.cs).is_none_or(|x| x > self.end)
        {
            return Err(Error::corrupt(format!(
                "L1 entry {idx} ({e:#x}) is not a cluster-aligned L2 table inside the file; run qemu-img check"
            ))
            .with_field("l1_entry"));
        }
        Ok(())
    }

    /// The L2 table at L1 index `idx` as it is now (`None`: unallocated).
    fn l2_table(&mut self, idx: usize) -> Result<Option<&mut L2>> {
        let e = self.l1.get(idx).copied().unwrap_or(0);
        let host = e & OFFSET_MASK;
        if host == 0 {
            return Ok(None);
        }
        if !self.l2.contains_key(&idx) {
            self.check_l1_entry(idx, e)?;
            let entries = read_u64_table(self.file(), host, self.l2_entries(), "l2_table")?;
            self.l2.insert(idx, L2 { host, entries, dirty: false });
        }
        Ok(self.l2.get_mut(&idx))
    }

    /// The L2 table at L1 index `idx`, ready to be changed: allocated if `create` (else
    /// `None` when unallocated), copied to a new cluster when another L1 table (a
    /// snapshot) shares it.
    fn l2_writable(&mut self, idx: usize, create: bool) -> Result<Option<&mut L2>> {
        let e = self.l1.get(idx).copied().ok_or_else(|| {
            Error::out_of_bounds(format!("L1 index {idx} is past the {}-entry L1 table", self.l1.len()))
        })?;
        let host = e & OFFSET_MASK;
        if host == 0 {
            if !create {
                return Ok(None);
            }
            let at = self.allocate(1)?;
            self.l2
                .insert(idx, L2 { host: at, entries: vec![0; usize_from_u64(self.l2_entries(), "L2")?], dirty: true });
            self.l1[idx] = at | OFLAG_COPIED;
            self.l1_dirty = true;
            return Ok(self.l2.get_mut(&idx));
        }
        self.l2_table(idx)?;
        if self.refcount(host)? > 1 {
            // Shared with a snapshot: the active image gets its own copy. The data
            // clusters it names keep their refcounts (each L1 table counts once).
            let mut entries = self.l2.remove(&idx).map(|t| t.entries).unwrap_or_default();
            for entry in &mut entries {
                *entry = self.with_copied(*entry)?;
            }
            let at = self.allocate(1)?;
            self.free(host, self.cs)?;
            self.l2.insert(idx, L2 { host: at, entries, dirty: true });
            self.l1[idx] = at | OFLAG_COPIED;
            self.l1_dirty = true;
        } else if e & OFLAG_COPIED == 0 {
            self.l1[idx] = e | OFLAG_COPIED;
            self.l1_dirty = true;
        }
        Ok(self.l2.get_mut(&idx))
    }

    /// `entry` with OFLAG_COPIED set exactly when its cluster's refcount is 1, as qemu
    /// requires of the active tables (never on compressed or unallocated entries).
    fn with_copied(&mut self, entry: u64) -> Result<u64> {
        let host = entry & OFFSET_MASK;
        if entry & OFLAG_COMPRESSED != 0 || host == 0 {
            return Ok(entry & !OFLAG_COPIED);
        }
        Ok(if self.refcount(host)? == 1 { entry | OFLAG_COPIED } else { entry & !OFLAG_COPIED })
    }

    /// Sets OFLAG_COPIED in every active L1 and L2 entry from the refcounts, as qemu
    /// does after a snapshot is made, applied or deleted. Call after [`flush`](Self::flush)
    /// so dropped references are counted.
    pub fn recompute_copied(&mut self) -> Result<()> {
        for idx in 0..self.l1.len() {
            let e = self.l1[idx];
            if e & OFFSET_MASK == 0 {
                continue;
            }
            let fixed = self.with_copied(e)?;
            if fixed != e {
                self.l1[idx] = fixed;
                self.l1_dirty = true;
            }
            let Some(t) = self.l2_table(idx)? else { continue };
            let mut entries = std::mem::take(&mut t.entries);
            let mut changed = false;
            for entry in &mut entries {
                let fixed = self.with_copied(*entry)?;
                changed |= fixed != *entry;
                *entry = fixed;
            }
            if let Some(t) = self.l2.get_mut(&idx) {
                t.entries = entries;
                t.dirty |= changed;
            }
            self.trim_cache()?;
        }
        Ok(())
    }

    /// Replaces the active L1 table's entries (snapshot revert), growing the table
    /// (a new one at the end of the file) when `entries` has more than its clusters hold.
    pub fn replace_l1(&mut self, entries: Vec<u64>) -> Result<()> {
        self.flush()?;
        self.l2.clear();
        let old_bytes = u64::from(self.h.l1_size) * 8;
        let capacity = old_bytes.div_ceil(self.cs) * self.cs / 8;
        let need = u64_from_usize(entries.len()).max(u64::from(self.h.l1_size));
        let mut l1 = entries;
        l1.resize(usize_from_u64(need, "L1 entries")?, 0);
        if need > capacity || self.h.l1_table_offset == 0 {
            self.move_l1(l1)?;
        } else {
            self.l1 = l1;
            self.h.l1_size = u32::try_from(need).map_err(|_| Error::corrupt("L1 table too large"))?;
            self.l1_dirty = true;
        }
        Ok(())
    }

    /// Puts `l1` into new clusters at the end of the file and frees the old table (after
    /// the header names the new one).
    fn move_l1(&mut self, l1: Vec<u64>) -> Result<()> {
        let bytes = u64_from_usize(l1.len()) * 8;
        if bytes > MAX_L1_BYTES {
            return Err(Error::unsupported(format!("an L1 table of {bytes} bytes is more than qemu accepts")));
        }
        let clusters = bytes.div_ceil(self.cs).max(1);
        let at = self.allocate(clusters)?;
        let mut padded: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        padded.resize(usize_from_u64(clusters * self.cs, "L1 table")?, 0);
        self.file().write_all_at(&padded, at)?;
        let old = (self.h.l1_table_offset, u64::from(self.h.l1_size) * 8);
        self.h.l1_table_offset = at;
        self.h.l1_size = u32::try_from(l1.len()).map_err(|_| Error::corrupt("L1 table too large"))?;
        self.l1 = l1;
        self.l1_dirty = false;
        self.write_refcounts()?;
        self.write_size_and_l1()?;
        if old.0 != 0 && old.1 > 0 {
            self.free(old.0, old.1)?;
        }
        Ok(())
    }

    /// Sets the virtual size (written with the L1 fields by the next flush or at once
    /// by [`write_size_and_l1`](Self::write_size_and_l1)); the L1 table must cover it.
    pub fn set_size(&mut self, size: u64) -> Result<()> {
        if Header::l1_entries_for(size, self.h.cluster_bits, 8) > u64::from(self.h.l1_size) {
            return Err(Error::corrupt(format!("the L1 table of {} entries cannot map {size} bytes", self.h.l1_size)));
        }
        self.h.size = size;
        Ok(())
    }

    /// Grows the active L1 table to `entries` (a new table at the end of the file when
    /// its clusters cannot hold them), as `resize` needs.
    pub fn grow_l1(&mut self, entries: u64) -> Result<()> {
        let old_bytes = u64::from(self.h.l1_size) * 8;
        let capacity = old_bytes.div_ceil(self.cs) * self.cs / 8;
        if entries <= u64::from(self.h.l1_size) {
            return Ok(());
        }
        let mut l1 = self.l1.clone();
        l1.resize(usize_from_u64(entries, "L1 entries")?, 0);
        if self.h.l1_table_offset != 0 && entries <= capacity {
            self.l1 = l1;
            self.h.l1_size = u32::try_from(entries).map_err(|_| Error::argument("L1 table too large"))?;
            self.l1_dirty = true;
            return Ok(());
        }
        self.move_l1(l1)
    }

    /// Writes size, L1 size and L1 offset into the header at once, between syncs.
    pub fn write_size_and_l1(&self) -> Result<()> {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.h.size.to_be_bytes());
        b[8..12].copy_from_slice(&self.h.crypt_method.to_be_bytes());
        b[12..16].copy_from_slice(&self.h.l1_size.to_be_bytes());
        b[16..24].copy_from_slice(&self.h.l1_table_offset.to_be_bytes());
        self.file().sync()?;
        self.file().write_all_at(&b, u64_from_usize(at::SIZE))?;
        self.file().sync()
    }

    /// Points the header at a snapshot table of `count` entries at `offset`, between
    /// syncs (the table must already be written and counted).
    pub fn write_snapshot_fields(&mut self, count: u32, offset: u64) -> Result<()> {
        self.h.nb_snapshots = count;
        self.h.snapshots_offset = offset;
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&count.to_be_bytes());
        b[4..].copy_from_slice(&offset.to_be_bytes());
        self.file().sync()?;
        self.file().write_all_at(&b, u64_from_usize(at::NB_SNAPSHOTS))?;
        self.file().sync()
    }

    /// Writes everything changed in the safe order: refcount increments, then L2
    /// tables, then the L1 table and header fields, then the dropped references are
    /// counted down and written. Each step is synced before the next.
    pub fn flush(&mut self) -> Result<()> {
        self.write_refcounts()?;
        self.file().sync()?;
        let mut l2_written = false;
        for t in self.l2.values_mut() {
            if t.dirty {
                let bytes: Vec<u8> = t.entries.iter().flat_map(|e| e.to_be_bytes()).collect();
                self.file.borrow().write_all_at(&bytes, t.host)?;
                t.dirty = false;
                l2_written = true;
            }
        }
        if l2_written {
            self.file().sync()?;
        }
        if self.l1_dirty {
            let bytes: Vec<u8> = self.l1.iter().flat_map(|e| e.to_be_bytes()).collect();
            self.file().write_all_at(&bytes, self.h.l1_table_offset)?;
            self.l1_dirty = false;
        }
        self.write_size_and_l1()?;
        for (c, n) in std::mem::take(&mut self.pending_frees) {
            let host = c * self.cs;
            let r = self.refcount(host)?;
            self.set_refcount(host, r.saturating_sub(n))?;
            self.free_hint = self.free_hint.min(c);
        }
        self.write_refcounts()?;
        self.file().sync()
    }

    /// Keeps the tables and the dropped references in memory under
    /// [`MAX_CACHED_BYTES`]: past it, flushes and forgets the clean tables.
    fn trim_cache(&mut self) -> Result<()> {
        let held = u64_from_usize(self.l2.len() + self.blocks.len()) * self.cs
            + u64_from_usize(self.pending_frees.len()) * PENDING_FREE_BYTES;
        if held > MAX_CACHED_BYTES {
            self.flush()?;
            self.l2.clear();
            self.blocks.clear();
        }
        Ok(())
    }

    /// Adds (`add`) or drops one reference per path from the L1 table `l1` (a snapshot's,
    /// or the active one before it is replaced) to every L2 table and cluster it reaches,
    /// as qemu counts them: a data cluster once per L1 entry that reaches its table. Each
    /// distinct L2 table is read once, so a hostile table naming one L2 table millions of
    /// times costs one read. Drops are applied by the next [`flush`](Self::flush). Call
    /// after a flush: L2 tables are read from the file.
    pub fn adjust_tree(&mut self, l1: &[u64], add: bool) -> Result<()> {
        let mut tables: BTreeMap<u64, u64> = BTreeMap::new();
        for (i, &e) in l1.iter().enumerate() {
            let host = e & OFFSET_MASK;
            if host == 0 {
                continue;
            }
            self.check_l1_entry(i, e)?;
            *tables.entry(host).or_default() += 1;
        }
        let file_len = self.file().len()?;
        for (table, n) in tables {
            self.adjust(table, self.cs, n, add)?;
            for entry in read_u64_table(self.file(), table, self.l2_entries(), "l2_table")? {
                let (host, len) = if entry & OFLAG_COMPRESSED != 0 {
                    compressed_range(&self.h, entry)
                } else {
                    (entry & OFFSET_MASK, self.cs)
                };
                if host == 0 {
                    continue;
                }
                if host < self.cs || host.checked_add(len).is_none_or(|x| x > file_len.next_multiple_of(self.cs)) {
                    return Err(Error::corrupt(format!(
                        "L2 table {table:#x} names a cluster at {host:#x} outside the file; run qemu-img check"
                    ))
                    .with_field("l2_entry"));
                }
                self.adjust(host, len, n, add)?;
            }
            self.trim_cache()?;
        }
        Ok(())
    }

    /// `n` more or fewer references to every cluster of `[host, host + len)`.
    fn adjust(&mut self, host: u64, len: u64, n: u64, add: bool) -> Result<()> {
        let first = host / self.cs;
        let last = host.saturating_add(len.max(1) - 1) / self.cs;
        for c in first..=last {
            if add {
                let r = self.refcount(c * self.cs)?;
                let v = r.checked_add(n).ok_or_else(|| Error::corrupt("refcount overflow"))?;
                self.set_refcount(c * self.cs, v)?;
            } else {
                for _ in 0..n {
                    self.free(c * self.cs, 1)?;
                }
            }
        }
        Ok(())
    }

    /// Unmaps every guest cluster at or past `size` (for a shrink): their references are
    /// dropped and an L2 table left with nothing is freed. Metadata that contradicts
    /// itself (a cluster in use with refcount 0) is refused here, before anything is
    /// written.
    pub fn discard_past(&mut self, size: u64) -> Result<()> {
        let keep = size.div_ceil(self.cs);
        let per = self.l2_entries();
        for idx in 0..self.l1.len() {
            let first = u64_from_usize(idx) * per;
            let host = self.l1[idx] & OFFSET_MASK;
            if host == 0 || first + per <= keep {
                continue;
            }
            let from = usize_from_u64(keep.saturating_sub(first), "L2 index")?;
            let Some(t) = self.l2_writable(idx, false)? else { continue };
            let entries: Vec<u64> = t.entries.get(from..).unwrap_or_default().to_vec();
            for (j, e) in entries.into_iter().enumerate() {
                self.release_entry(e)?;
                self.set_entry(idx, from + j, 0)?;
            }
            if from == 0 {
                let t = self.l2.remove(&idx).ok_or_else(|| Error::corrupt("L2 table vanished from the cache"))?;
                self.free(t.host, self.cs)?;
                self.l1[idx] = 0;
                self.l1_dirty = true;
            }
        }
        Ok(())
    }

    /// Cuts the file after its last cluster with a non-zero refcount (as qemu does after
    /// a shrink). Call after [`flush`](Self::flush). Linear in the refcount blocks.
    pub fn truncate_after_last_used(&mut self) -> Result<()> {
        let order = self.h.refcount_order;
        let per_block = self.per_block();
        for idx in (0..self.rt.len()).rev() {
            let Some(b) = self.block(idx)? else { continue };
            let Some(last) = (0..usize_from_u64(per_block, "refcount entries")?)
                .rev()
                .find(|&i| get_refcount(&b.bytes, order, i) != 0)
            else {
                continue;
            };
            let end = (u64_from_usize(idx) * per_block + u64_from_usize(last) + 1) * self.cs;
            if end < self.file().len()? {
                self.file().set_len(end)?;
                self.end = end;
            }
            return Ok(());
        }
        Ok(())
    }

    // ---- guest data ------------------------------------------------------------------

    /// The L1 index and L2 slot of guest offset `guest`.
    fn guest_slot(&self, guest: u64) -> Result<(usize, usize)> {
        let c = guest / self.cs;
        Ok((usize_from_u64(c / self.l2_entries(), "L1 index")?, usize_from_u64(c % self.l2_entries(), "L2 index")?))
    }

    /// The L2 entry of guest offset `guest` (0 when its table is unallocated).
    pub fn entry(&mut self, guest: u64) -> Result<u64> {
        let (idx, slot) = self.guest_slot(guest)?;
        Ok(self.l2_table(idx)?.and_then(|t| t.entries.get(slot).copied()).unwrap_or(0))
    }

    /// The current guest bytes of the cluster mapped by `entry`, for copy-on-write:
    /// decompressed, read from its (shared) host cluster, zeros, or the image below.
    fn cluster_contents(&self, entry: u64, cluster: u64, below: Option<&dyn BlockRead>) -> Result<Vec<u8>> {
        let cs = self.cs_bytes()?;
        if entry & OFLAG_COMPRESSED != 0 {
            let (host, len) = compressed_range(&self.h, entry);
            let len = len.min(self.file().len()?.saturating_sub(host));
            let mut input = vec![0u8; usize_from_u64(len, "compressed cluster")?];
            self.file().read_exact_at(&mut input, host)?;
            return decompress(self.h.compression, &input, cs).map_err(|e| e.with_offset(host));
        }
        let mut buf = vec![0u8; cs];
        let host = entry & OFFSET_MASK;
        if entry & OFLAG_ZERO != 0 {
            return Ok(buf);
        }
        if host != 0 {
            let file_len = self.file().len()?;
            let n = usize_from_u64(file_len.saturating_sub(host).min(self.cs), "cluster")?;
            self.file().read_exact_at(&mut buf[..n], host)?;
            return Ok(buf);
        }
        if self.h.backing_file.is_some() && below.is_none() {
            return Err(Error::unsupported(format!(
                "a partial write into unallocated cluster {cluster:#x} needs the backing file's data, \
                 which this edit was not given"
            )));
        }
        read_backing(below, &mut buf, cluster)?;
        Ok(buf)
    }

    /// Writes `data` at guest offset `guest` (inside the disk). Clusters the active image
    /// owns alone are written in place; others (unallocated, zero, compressed, or shared
    /// with a snapshot) get a new cluster, filled from the old contents where `data`
    /// covers only part of it (the image below, `below`, for unallocated ones).
    pub fn write(&mut self, guest: u64, data: &[u8], below: Option<&dyn BlockRead>) -> Result<()> {
        range_end(guest, u64_from_usize(data.len()), self.h.size)?;
        let mut done = 0usize;
        while done < data.len() {
            let pos = guest + u64_from_usize(done);
            let within = pos % self.cs;
            let n = usize_from_u64((self.cs - within).min(u64_from_usize(data.len() - done)), "write")?;
            self.write_cluster(pos - within, within, &data[done..done + n], below)?;
            done += n;
        }
        Ok(())
    }

    fn write_cluster(&mut self, cluster: u64, within: u64, data: &[u8], below: Option<&dyn BlockRead>) -> Result<()> {
        self.refuse_guest_writes()?;
        self.trim_cache()?;
        let (idx, slot) = self.guest_slot(cluster)?;
        let entry = self.l2_writable(idx, true)?.and_then(|t| t.entries.get(slot).copied()).unwrap_or(0);
        let host = entry & OFFSET_MASK;
        let whole = within == 0 && u64_from_usize(data.len()) == self.cs;
        // The tail of the last cluster past the disk's end is never read.
        let to_end = within == 0 && cluster + u64_from_usize(data.len()) >= self.h.size;
        if entry & OFLAG_COMPRESSED == 0 && host != 0 && self.refcount(host)? == 1 {
            if entry & OFLAG_ZERO != 0 && !(whole || to_end) {
                // An allocated zero cluster: its old bytes are not its contents.
                let mut buf = vec![0u8; self.cs_bytes()?];
                let at = usize_from_u64(within, "offset")?;
                buf[at..at + data.len()].copy_from_slice(data);
                self.file().write_all_at(&buf, host)?;
            } else {
                self.file().write_all_at(data, host + within)?;
            }
            return self.set_entry(idx, slot, host | OFLAG_COPIED);
        }
        let buf = if whole || to_end {
            None
        } else {
            let mut buf = self.cluster_contents(entry, cluster, below)?;
            let at = usize_from_u64(within, "offset")?;
            buf[at..at + data.len()].copy_from_slice(data);
            Some(buf)
        };
        let at = self.allocate(1)?;
        self.file().write_all_at(buf.as_deref().unwrap_or(data), at)?;
        self.set_entry(idx, slot, at | OFLAG_COPIED)?;
        self.release_entry(entry)
    }

    /// Stores guest cluster `cluster` as the compressed bytes `stored` (see
    /// [`crate::writer::compress_cluster`]), packed after the previous compressed cluster
    /// of this edit while they fit in its host cluster (each host cluster counts one
    /// reference per compressed cluster in it, as qemu counts them), else at the start of
    /// a newly allocated one. The references of the cluster's old entry are dropped.
    pub fn write_compressed(&mut self, cluster: u64, stored: &[u8]) -> Result<()> {
        self.refuse_guest_writes()?;
        let len = u64_from_usize(stored.len());
        if !cluster.is_multiple_of(self.cs) || len == 0 || len >= self.cs {
            return Err(
                Error::argument("a compressed cluster is one whole cluster stored in fewer bytes").with_offset(cluster)
            );
        }
        range_end(cluster, 1, self.h.size)?;
        self.trim_cache()?;
        let (idx, slot) = self.guest_slot(cluster)?;
        let entry = self.l2_writable(idx, true)?.and_then(|t| t.entries.get(slot).copied()).unwrap_or(0);
        if entry & (OFFSET_MASK | OFLAG_COMPRESSED) != 0 {
            // qemu stores compressed clusters only where none is allocated and fails the
            // write otherwise (qemu-img convert -n -c into an image with data: EIO).
            return Err(Error::unsupported(
                "a compressed cluster can only be written where the image has none allocated, as in qemu; \
                 convert without -n, or without -c",
            )
            .with_offset(cluster));
        }
        let pos = self.compressed_pos;
        let fits =
            !pos.is_multiple_of(self.cs) && pos % self.cs + len <= self.cs && self.refcount(pos)? < self.max_refcount();
        let start = if fits {
            self.incref(pos)?;
            pos
        } else {
            self.allocate(1)?
        };
        self.compressed_pos = start + len;
        self.file().write_all_at(stored, start)?;
        self.set_entry(idx, slot, crate::writer::compressed_entry(start, start + len, self.h.cluster_bits))?;
        self.release_entry(entry)
    }

    /// Guest data cannot change under persistent bitmaps that would not record it.
    fn refuse_guest_writes(&self) -> Result<()> {
        if self.has_bitmaps {
            return Err(Error::unsupported(
                "guest writes into an image with persistent dirty bitmaps would not be recorded in them; \
                 remove the bitmaps (qemu-img bitmap --remove) or use qemu-img",
            )
            .with_field("bitmaps"));
        }
        Ok(())
    }

    fn set_entry(&mut self, idx: usize, slot: usize, value: u64) -> Result<()> {
        let t = self.l2.get_mut(&idx).ok_or_else(|| Error::corrupt("L2 table vanished from the cache"))?;
        if let Some(e) = t.entries.get_mut(slot)
            && *e != value
        {
            *e = value;
            t.dirty = true;
        }
        Ok(())
    }

    /// Drops the references an overwritten L2 entry held.
    fn release_entry(&mut self, entry: u64) -> Result<()> {
        if entry & OFLAG_COMPRESSED != 0 {
            let (host, len) = compressed_range(&self.h, entry);
            return self.free(host, len);
        }
        let host = entry & OFFSET_MASK;
        if host != 0 { self.free(host, self.cs) } else { Ok(()) }
    }

    /// Makes `[guest, guest + len)` read as zeros. Whole clusters become zero clusters
    /// (v3), or unallocated ones (v2 without a backing file; their old clusters are
    /// freed); v2 with a backing file, and parts of clusters, get zeros written.
    pub fn write_zeroes(&mut self, guest: u64, len: u64, below: Option<&dyn BlockRead>) -> Result<()> {
        self.refuse_guest_writes()?;
        let end = range_end(guest, len, self.h.size)?;
        let backed = self.h.backing_file.is_some();
        let mut pos = guest;
        while pos < end {
            let cluster = pos - pos % self.cs;
            let stop = (cluster + self.cs).min(end);
            let whole = pos == cluster && (stop == cluster + self.cs || stop >= self.h.size);
            let entry = self.entry(cluster)?;
            let reads_zero = (entry & OFLAG_ZERO != 0 && entry & OFFSET_MASK == 0 && entry & OFLAG_COMPRESSED == 0)
                || (entry == 0 && !backed);
            if reads_zero {
                pos = stop;
                continue;
            }
            if !whole || (backed && self.h.version < 3) {
                let zeros = vec![0u8; usize_from_u64(stop - pos, "zero range")?];
                self.write_cluster(cluster, pos - cluster, &zeros, below)?;
                pos = stop;
                continue;
            }
            self.trim_cache()?;
            let (idx, slot) = self.guest_slot(cluster)?;
            if self.l2_writable(idx, backed)?.is_none() {
                pos = stop;
                continue;
            }
            let value = if self.h.version >= 3 { OFLAG_ZERO } else { 0 };
            self.set_entry(idx, slot, value)?;
            self.release_entry(entry)?;
            pos = stop;
        }
        Ok(())
    }
}

impl<F: Borrow<ImageFile>> Editor<F> {
    /// Makes every zero cluster of the active image an ordinary one, as qemu does before
    /// it writes a version 2 header (which has no zero flag): one with a host cluster gets
    /// zeros written there and keeps it; one without becomes a new cluster of zeros when
    /// a backing file would show through, else unallocated (which reads as zeros). Through
    /// [`write`](Self::write), so the one allocator places every new cluster. Then flushed.
    pub fn expand_zero_clusters(&mut self) -> Result<()> {
        let backed = self.h.backing_file.is_some();
        let per_table = self.l2_entries();
        let zeros = vec![0u8; self.cs_bytes()?];
        for idx in 0..self.l1.len() {
            // A copy of the entries: the writes below may evict the cached table.
            let Some(entries) = self.l2_table(idx)?.map(|t| t.entries.clone()) else { continue };
            let first =
                u64_from_usize(idx).checked_mul(per_table).ok_or_else(|| Error::corrupt("L1 index overflow"))?;
            for (slot, &e) in entries.iter().enumerate() {
                if e & OFLAG_ZERO == 0 || e & OFLAG_COMPRESSED != 0 {
                    continue;
                }
                let cluster = (first + u64_from_usize(slot)).checked_mul(self.cs).filter(|&c| c < self.h.size);
                match cluster {
                    Some(c) if e & OFFSET_MASK != 0 || backed => {
                        let len = usize_from_u64((self.h.size - c).min(self.cs), "cluster")?;
                        self.write(c, &zeros[..len], None)?;
                    }
                    // Unallocated reads as zeros; past the disk's end nothing reads it.
                    _ => {
                        self.trim_cache()?;
                        if self.l2_writable(idx, false)?.is_some() {
                            self.set_entry(idx, slot, 0)?;
                            self.release_entry(e)?;
                        }
                    }
                }
            }
        }
        self.flush()
    }
}

/// `convert -n SRC existing.qcow2`: guest data written into an existing image through an
/// [`Editor`], from the copy engine's threads (one at a time, under a lock).
#[derive(Debug)]
pub struct EditWriter {
    ed: std::sync::Mutex<Editor<ImageFile>>,
    size: u64,
    cs: u64,
    zero_initialized: bool,
    /// Clusters are written compressed (`rebase -c`) in the image's compression type.
    compress: Option<crate::header::Compression>,
}

impl EditWriter {
    /// Opens the image in `file` to take `size` guest bytes (at most its virtual size, as
    /// qemu-img requires). `target_is_zero`: the caller says the image reads as zeros.
    pub fn new(file: ImageFile, size: u64, target_is_zero: bool) -> Result<Self> {
        let ed = Editor::open(file)?;
        let have = ed.header().size;
        if have < size {
            return Err(Error::argument(format!(
                "output file is smaller than input file: its virtual size is {have} bytes, the source's {size}; \
                 grow it first (diskcast resize FILE {size})"
            )));
        }
        // Ranges never written read as zeros only in an image with nothing mapped and
        // nothing below it.
        let zero_initialized = target_is_zero || (!ed.has_data() && ed.header().backing_file.is_none());
        Ok(EditWriter { cs: ed.cluster_size(), ed: std::sync::Mutex::new(ed), size, zero_initialized, compress: None })
    }

    /// Writes whole clusters compressed (as `qemu-img rebase -c`), each one that gets
    /// smaller; the rest as they are.
    pub fn compressed(mut self) -> Self {
        let kind = self.lock().header().compression;
        self.compress = Some(kind);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Editor<ImageFile>> {
        self.ed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl diskcast_block::BlockWrite for EditWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn granularity(&self) -> u64 {
        self.cs
    }

    fn zero_initialized(&self) -> bool {
        self.zero_initialized
    }

    /// With [`compressed`](EditWriter::compressed): each cluster compressed, here on the
    /// copy engine's threads.
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<diskcast_block::Encoded> {
        let Some(kind) = self.compress else { return Ok(diskcast_block::Encoded::Plain { offset, data }) };
        range_end(offset, u64_from_usize(data.len()), self.size)?;
        let cs = usize_from_u64(self.cs, "cluster size")?;
        let units = (0u64..)
            .zip(data.chunks(cs))
            .map(|(i, chunk)| {
                let (stored, compressed) = match crate::writer::compress_cluster(kind, chunk, cs) {
                    Some(c) => (c, true),
                    None => (chunk.to_vec(), false),
                };
                diskcast_block::EncodedUnit {
                    offset: offset + i * self.cs,
                    len: u64_from_usize(chunk.len()),
                    stored,
                    compressed,
                }
            })
            .collect();
        Ok(diskcast_block::Encoded::Units(units))
    }

    fn write_encoded(&self, encoded: diskcast_block::Encoded) -> Result<()> {
        if let diskcast_block::Encoded::Units(units) = &encoded
            && units.iter().any(|u| u.compressed)
        {
            let mut ed = self.lock();
            for u in units {
                range_end(u.offset, u.len, self.size)?;
                if u.compressed {
                    ed.write_compressed(u.offset, &u.stored)?;
                } else {
                    ed.write(u.offset, &u.stored, None)?;
                }
            }
            return Ok(());
        }
        encoded.for_each_plain("qcow2 (written in place)", |offset, data| {
            range_end(offset, u64_from_usize(data.len()), self.size)?;
            self.lock().write(offset, data, None)
        })
    }

    /// Zero clusters; in compressed mode whole clusters of zeros are stored compressed
    /// instead, as qemu-img compresses every cluster it writes then.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = range_end(offset, len, self.size)?;
        let Some(kind) = self.compress else { return self.lock().write_zeroes(offset, len, None) };
        let cs = usize_from_u64(self.cs, "cluster size")?;
        let stored = crate::writer::compress_cluster(kind, &vec![0u8; cs], cs)
            .ok_or_else(|| Error::argument("a cluster of zeros did not compress"))?;
        let mut ed = self.lock();
        let mut pos = offset;
        while pos < end {
            let next = (pos / self.cs + 1) * self.cs;
            let stop = next.min(end);
            if pos.is_multiple_of(self.cs) && (stop == next || stop == self.size) {
                ed.write_compressed(pos, &stored)?;
            } else {
                ed.write_zeroes(pos, stop - pos, None)?;
            }
            pos = stop;
        }
        Ok(())
    }

    /// Writes the tables in the safe order and syncs (nothing else syncs an image
    /// written in place).
    fn finish(self: Box<Self>) -> Result<()> {
        let mut ed = self.ed.into_inner().unwrap_or_else(|p| p.into_inner());
        ed.flush()
    }
}
