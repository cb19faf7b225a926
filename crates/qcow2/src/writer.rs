//! Writing new qcow2 images.
//!
//! Layout: cluster 0 holds the header, the L1 table follows (its size is known up front),
//! then data clusters in allocation order. `finish` appends the L2 tables, then the
//! refcount blocks and refcount table sized so they also count themselves, then writes
//! L1 and the header last, so a crash before `finish` never leaves a valid-looking image.
//!
//! Uncompressed images take writes from many threads: host clusters are handed out under
//! a short lock (contiguous for one multi-cluster write) and the data is written outside
//! it. Every such cluster has refcount 1. Compressed images are written in guest order:
//! compressed clusters are packed at 512-byte granularity and may share host clusters, so
//! their refcounts are tracked per host cluster.

use crate::header::{
    Compression, Header, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_REFTABLE_BYTES, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS,
    OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO,
};
use crate::measure::refcount_metadata_clusters;
use diskcast_block::io::ImageFile;
use diskcast_block::range_end;
use diskcast_block::registry::{CreateOptions, Preallocation};
use diskcast_block::size::parse_size;
use diskcast_block::{BlockWrite, Encoded, EncodedUnit, Error, Result, WriteOrder};
use diskcast_layout::{low_u8, low_u16, low_u32, u64_from_usize, usize_from, usize_from_u64};
use std::collections::HashMap;
use std::sync::Mutex;

/// qemu's default cluster size.
const DEFAULT_CLUSTER_BITS: u32 = 16;
/// qemu's default zstd level (ZSTD_CLEVEL_DEFAULT).
const ZSTD_LEVEL: i32 = 3;
/// qemu inflates compressed clusters with a 4 KiB window (-12), so we deflate with one.
const ZLIB_WINDOW_BITS: u8 = 12;
/// The unit compressed-cluster descriptors count in (the data itself is packed byte by
/// byte), and the granularity of the virtual size.
const SECTOR: u64 = 512;

/// Validated creation parameters (shared with `measure`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Guest size.
    pub size: u64,
    /// log2 cluster size.
    pub cluster_bits: u32,
    /// 2 or 3.
    pub version: u32,
    /// Compression for compressed clusters.
    pub compression: Compression,
    /// Write compressed clusters (`-c`).
    pub compress: bool,
    /// log2 of refcount width.
    pub refcount_order: u32,
    /// 16-byte L2 entries (measure only; writing them is not implemented).
    pub extended_l2: bool,
    /// Backing file name to record.
    pub backing_file: Option<String>,
    /// Backing format to record.
    pub backing_format: Option<String>,
    /// `-o preallocation=`: off, or every guest cluster allocated in qemu's layout
    /// (metadata), also reserved (falloc) or written with zeros (full).
    pub preallocation: Preallocation,
    /// `SOURCE_DATE_EPOCH` is set: clusters are allocated in guest order, not in the
    /// order the copy engine's workers happen to deliver them, so the file is the same
    /// every time. (qcow2 records no time or identifier.)
    pub reproducible: bool,
}

impl Params {
    /// Parses and validates `-o` options, `-c`, `-b` and `-F`.
    pub fn from_options(size: u64, opts: &CreateOptions) -> Result<Params> {
        let o = &opts.options;
        let version = match o.get("compat").map(String::as_str) {
            None | Some("1.1") | Some("v3") => 3,
            Some("0.10") | Some("v2") => 2,
            Some(v) => return Err(Error::argument(format!("compat={v}: use 1.1 (v3) or 0.10 (v2)"))),
        };
        let cluster_bits = match o.get("cluster_size") {
            None => DEFAULT_CLUSTER_BITS,
            Some(v) => {
                let cs = parse_size(v)?;
                if !cs.is_power_of_two() || !(1u64 << MIN_CLUSTER_BITS..=1u64 << MAX_CLUSTER_BITS).contains(&cs) {
                    return Err(Error::argument(format!("cluster_size={v}: must be a power of two from 512 to 2M")));
                }
                cs.trailing_zeros()
            }
        };
        let compression = match o.get("compression_type").map(String::as_str) {
            None | Some("zlib") => Compression::Zlib,
            Some("zstd") if version == 2 => {
                return Err(Error::argument(
                    "compression_type=zstd needs compat=1.1 (qcow2 v2 has no compression type field)",
                ));
            }
            Some("zstd") => Compression::Zstd,
            Some(v) => return Err(Error::argument(format!("compression_type={v}: use zlib or zstd"))),
        };
        let refcount_order = match o.get("refcount_bits") {
            None => 4,
            Some(v) => {
                let bits: u32 = v.parse().map_err(|_| Error::argument(format!("refcount_bits={v} is not a number")))?;
                if !bits.is_power_of_two() || bits > 64 {
                    return Err(Error::argument(format!("refcount_bits={v}: must be 1, 2, 4, 8, 16, 32 or 64")));
                }
                if version == 2 && bits != 16 {
                    return Err(Error::argument("compat=0.10 images have 16-bit refcounts only"));
                }
                bits.trailing_zeros()
            }
        };
        let extended_l2 = match o.get("extended_l2").map(String::as_str) {
            None | Some("off") => false,
            Some("on") => {
                if version == 2 {
                    return Err(Error::argument("extended_l2=on needs compat=1.1"));
                }
                if cluster_bits < 14 {
                    return Err(Error::argument("extended_l2=on needs a cluster size of at least 16K"));
                }
                true
            }
            Some(v) => return Err(Error::argument(format!("extended_l2={v}: use on or off"))),
        };
        let backing_file = opts.backing_file.clone().or_else(|| o.get("backing_file").cloned());
        let backing_format = opts.backing_format.clone().or_else(|| o.get("backing_fmt").cloned());
        if backing_format.is_some() && backing_file.is_none() {
            return Err(Error::argument("a backing format was given without a backing file"));
        }
        // qemu-img's refusals, in its words.
        if opts.preallocation != Preallocation::Off {
            if opts.compress {
                return Err(Error::argument("Compression and preallocation not supported at the same time"));
            }
            if backing_file.is_some() {
                return Err(Error::argument(
                    "Backing file and preallocation can only be used at the same time if extended_l2 is on \
                     (diskcast does not write extended L2 entries: drop -o preallocation or the backing file)",
                ));
            }
        }
        // qemu cannot represent sizes that are not whole 512-byte sectors (it drops the
        // tail); like qemu-img, round up.
        let size = size.checked_next_multiple_of(SECTOR).unwrap_or(u64::MAX);
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::argument(format!("size {size} is larger than qcow2 allows")));
        }
        let l2_es = if extended_l2 { 16 } else { 8 };
        if Header::l1_entries_for(size, cluster_bits, l2_es) * 8 > MAX_L1_BYTES {
            return Err(Error::argument(format!(
                "a {size}-byte image needs an L1 table larger than {} MiB with {}-byte clusters; \
                 use a larger cluster_size",
                MAX_L1_BYTES >> 20,
                1u64 << cluster_bits
            )));
        }
        Ok(Params {
            size,
            cluster_bits,
            version,
            compression,
            compress: opts.compress,
            refcount_order,
            extended_l2,
            backing_file,
            backing_format,
            preallocation: opts.preallocation,
            reproducible: opts.provenance.is_reproducible(),
        })
    }
}

/// Allocation state, under one short lock.
#[derive(Debug)]
struct State {
    /// Next free host cluster index.
    next_cluster: u64,
    /// L2 tables that have at least one entry, by L1 index.
    l2: HashMap<u64, Box<[u64]>>,
    /// Compressed mode: next free byte for packing compressed data (byte-granular).
    byte_pos: u64,
    /// Compressed mode: refcount of every host cluster below `next_cluster`.
    refs: Option<Vec<u16>>,
}

/// A qcow2 image being written.
#[derive(Debug)]
pub struct Qcow2Writer {
    file: ImageFile,
    p: Params,
    cs: u64,
    /// The cluster size as a buffer length (at most 2 MiB).
    cs_bytes: usize,
    l1_entries: u64,
    /// Largest refcount the chosen width holds (capped at u16 for our own tracking).
    max_ref: u16,
    /// With `-o preallocation=`: where every table and guest cluster lives.
    layout: Option<Layout>,
    state: Mutex<State>,
}

/// Where qemu puts everything in an image created with `-o preallocation=` (as its
/// create and preallocate steps leave it): the header, the refcount table, the first
/// refcount block, the L1 table, then each L2 table followed by the data clusters it
/// maps. Another refcount block goes to the first free cluster after the run of clusters
/// that first needs it. Every cluster below `total` is used exactly once. (When one
/// refcount table cluster cannot list every block, qemu grows the table later; we size
/// it up front, which moves everything after it.)
#[derive(Debug)]
struct Layout {
    /// First cluster of the refcount table, and its length in clusters.
    reftable: u64,
    reftable_clusters: u64,
    /// First cluster of the L1 table.
    l1: u64,
    /// Cluster of each refcount block, by table index.
    blocks: Vec<u64>,
    /// Cluster of each L2 table, by L1 index.
    l2: Vec<u64>,
    /// First data cluster mapped by each L2 table (its data clusters follow each other).
    data: Vec<u64>,
    /// Clusters in the file.
    total: u64,
    /// Guest clusters (entries past them stay unallocated).
    guest_clusters: u64,
}

impl Layout {
    fn new(cs: u64, order: u32, l1_entries: u64, guest_clusters: u64) -> Result<Layout> {
        let per_l2 = cs / 8;
        let per_block = (cs * 8) >> order;
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let n_l2 = guest_clusters.div_ceil(per_l2);
        let (_, table) = refcount_metadata_clusters(1 + l1_clusters + n_l2 + guest_clusters, cs, order);
        let reftable_clusters = table.max(1);
        if reftable_clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Error::unsupported(format!(
                "preallocating this image needs a refcount table of {} bytes, more than the {MAX_REFTABLE_BYTES} \
                 qemu accepts; use a larger cluster_size",
                reftable_clusters * cs
            )));
        }
        let mut next = 1 + reftable_clusters;
        let mut blocks: Vec<u64> = Vec::new();
        // Takes `n` clusters, then the refcount blocks they (and those blocks) need.
        let mut reserve = |n: u64| {
            let start = next;
            next += n;
            let mut k = start / per_block;
            while k <= (next - 1) / per_block {
                if k >= u64_from_usize(blocks.len()) {
                    blocks.push(next);
                    next += 1;
                }
                k += 1;
            }
            start
        };
        reserve(0); // the first refcount block, right after the table
        let l1 = reserve(l1_clusters);
        let (mut l2, mut data) = (Vec::new(), Vec::new());
        for i in 0..n_l2 {
            l2.push(reserve(1));
            data.push(reserve(per_l2.min(guest_clusters - i * per_l2)));
        }
        if u64_from_usize(blocks.len()) > reftable_clusters * cs / 8 {
            return Err(Error::unsupported("the preallocated image needs more refcount blocks than its table lists"));
        }
        Ok(Layout { reftable: 1, reftable_clusters, l1, blocks, l2, data, total: next, guest_clusters })
    }

    /// The L2 entry of guest cluster `c` (mapped to its preallocated cluster).
    fn entry(&self, cs: u64, c: u64) -> u64 {
        let per_l2 = cs / 8;
        let first = usize::try_from(c / per_l2).ok().and_then(|i| self.data.get(i)).copied();
        match first {
            Some(d) if c < self.guest_clusters => ((d + c % per_l2) * cs) | OFLAG_COPIED,
            _ => 0,
        }
    }

    /// An L2 table as the layout fills it.
    fn table(&self, cs: u64, index: u64) -> Box<[u64]> {
        let per_l2 = cs / 8;
        (0..per_l2).map(|j| self.entry(cs, index * per_l2 + j)).collect()
    }
}

impl Qcow2Writer {
    /// Prepares a new image in `file` (an empty temporary from `OutputFiles`).
    pub fn new(file: ImageFile, p: Params) -> Result<Self> {
        if p.extended_l2 {
            return Err(Error::unsupported("writing extended L2 entries (extended_l2=on) is not implemented"));
        }
        let cs = 1u64 << p.cluster_bits;
        let l1_entries = Header::l1_entries_for(p.size, p.cluster_bits, 8);
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        // Check the header fits before any data is written.
        let _ = header_for(&p, l1_entries, cs, 0, 0)?.serialize()?;
        let layout = match p.preallocation {
            Preallocation::Off => None,
            _ => Some(Layout::new(cs, p.refcount_order, l1_entries, p.size.div_ceil(cs))?),
        };
        let first_data = layout.as_ref().map_or(1 + l1_clusters, |l| l.total);
        let refs = match p.compress {
            true => Some(vec![1u16; usize_from_u64(first_data, "header clusters")?]),
            false => None,
        };
        let max_ref = if p.refcount_order >= 4 { u16::MAX } else { low_u16((1u64 << (1u32 << p.refcount_order)) - 1) };
        Ok(Qcow2Writer {
            file,
            cs,
            cs_bytes: usize_from_u64(cs, "cluster size")?,
            l1_entries,
            max_ref,
            layout,
            state: Mutex::new(State { next_cluster: first_data, l2: HashMap::new(), byte_pos: first_data * cs, refs }),
            p,
        })
    }

    fn entries_per_l2(&self) -> u64 {
        self.cs / 8
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The L2 entry slot for guest cluster `c`, creating its table.
    fn slot<'a>(&self, st: &'a mut State, c: u64) -> &'a mut u64 {
        let per = self.entries_per_l2();
        let t = st.l2.entry(c / per).or_insert_with(|| match &self.layout {
            Some(l) => l.table(self.cs, c / per),
            None => vec![0u64; self.cs_bytes / 8].into_boxed_slice(),
        });
        // Below the entries per table (at most 2^18): fits in 32 bits.
        &mut t[usize_from(low_u32(c % per))]
    }

    fn entry(&self, st: &State, c: u64) -> u64 {
        let per = self.entries_per_l2();
        match (st.l2.get(&(c / per)), &self.layout) {
            (Some(t), _) => t[usize_from(low_u32(c % per))],
            (None, Some(l)) => l.entry(self.cs, c),
            (None, None) => 0,
        }
    }

    /// Checks a guest range: cluster aligned, inside the disk, ending on a cluster
    /// boundary or at the disk's end.
    fn check_range(&self, offset: u64, len: u64) -> Result<u64> {
        let end = range_end(offset, len, self.p.size)?;
        // The source may be smaller than the 512-rounded size: a write may end anywhere
        // inside the last cluster (the rest of a new cluster reads as zeros).
        let in_last_cluster = end.div_ceil(self.cs) == self.p.size.div_ceil(self.cs);
        if !offset.is_multiple_of(self.cs) || (end % self.cs != 0 && !in_last_cluster) {
            return Err(
                Error::argument(format!("qcow2 writes must cover whole {}-byte clusters", self.cs)).with_offset(offset)
            );
        }
        Ok(end)
    }

    /// Stores uncompressed data covering whole clusters.
    fn write_plain(&self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.check_range(offset, u64_from_usize(data.len()))?;
        let first = offset / self.cs;
        let last = end.div_ceil(self.cs);
        // Host offset per guest cluster, decided under the lock.
        let mut hosts = Vec::with_capacity(usize_from_u64(last - first, "cluster count")?);
        {
            let mut st = self.lock();
            for c in first..last {
                let e = self.entry(&st, c);
                if e & OFLAG_COMPRESSED != 0 {
                    return Err(Error::unsupported("overwriting a compressed cluster").with_offset(c * self.cs));
                }
                let host = e & OFFSET_MASK;
                if host != 0 {
                    *self.slot(&mut st, c) = host | OFLAG_COPIED;
                    hosts.push(host);
                    continue;
                }
                let h = st.next_cluster * self.cs;
                st.next_cluster += 1;
                if let Some(r) = st.refs.as_mut() {
                    r.push(1);
                }
                *self.slot(&mut st, c) = h | OFLAG_COPIED;
                hosts.push(h);
            }
        }
        // One pwrite per run of host-contiguous clusters.
        let mut i = 0;
        while i < hosts.len() {
            let mut j = i + 1;
            while j < hosts.len() && hosts[j] == hosts[j - 1] + self.cs {
                j += 1;
            }
            let a = i * self.cs_bytes;
            let b = (j * self.cs_bytes).min(data.len());
            self.file.write_all_at(&data[a..b], hosts[i])?;
            i = j;
        }
        Ok(())
    }

    /// Appends one compressed cluster (sequential mode only).
    fn write_compressed(&self, unit: &EncodedUnit) -> Result<()> {
        self.check_range(unit.offset, unit.len)?;
        let c = unit.offset / self.cs;
        let len = u64_from_usize(unit.stored.len());
        if len == 0 || len >= self.cs {
            return Err(Error::argument("compressed cluster must be smaller than a cluster").with_offset(unit.offset));
        }
        let start;
        {
            let mut st = self.lock();
            let old = self.entry(&st, c);
            if old & (OFLAG_COMPRESSED | OFFSET_MASK) != 0 {
                return Err(Error::unsupported("writing a compressed cluster twice").with_offset(unit.offset));
            }
            let cs = self.cs;
            // Packed byte by byte, as qemu does: the descriptor counts the 512-byte
            // sectors the bytes touch, so no padding is stored between clusters.
            let mut s = st.byte_pos;
            // Start in a fresh cluster if the current one's refcount is at its maximum.
            if !s.is_multiple_of(cs) {
                let cur = usize_from_u64(s / cs, "cluster index")?;
                if st.refs.as_ref().is_some_and(|r| r.get(cur).copied().unwrap_or(0) >= self.max_ref) {
                    s = st.next_cluster * cs;
                }
            }
            if s.is_multiple_of(cs) && s < st.next_cluster * cs {
                s = st.next_cluster * cs;
            }
            let mut e = s + len;
            // Never run into a following cluster already given to uncompressed data.
            if (e - 1) / cs > s / cs && s / cs + 1 < st.next_cluster {
                s = st.next_cluster * cs;
                e = s + len;
            }
            let last = (e - 1) / cs;
            while st.next_cluster <= last {
                st.next_cluster += 1;
                if let Some(r) = st.refs.as_mut() {
                    r.push(0);
                }
            }
            if let Some(r) = st.refs.as_mut() {
                for h in s / cs..=last {
                    r[usize_from_u64(h, "host cluster")?] = r[usize_from_u64(h, "host cluster")?].saturating_add(1);
                }
            }
            st.byte_pos = e;
            *self.slot(&mut st, c) = compressed_entry(s, e, self.p.cluster_bits);
            start = s;
        }
        self.file.write_all_at(&unit.stored, start)
    }

    /// Makes guest cluster `c` read as zeros when the whole cluster is being zeroed.
    fn zero_cluster(&self, st: &mut State, c: u64) -> Result<()> {
        let e = self.entry(st, c);
        let v3 = self.p.version >= 3;
        let backing = self.p.backing_file.is_some();
        if e & OFLAG_COMPRESSED != 0 {
            // Drop the compressed cluster's references.
            let (s, l) = crate::reader::compressed_range(&header_for(&self.p, self.l1_entries, self.cs, 0, 0)?, e);
            if let Some(r) = st.refs.as_mut() {
                for h in s / self.cs..=(s + l - 1) / self.cs {
                    if let Some(x) = r.get_mut(usize_from_u64(h, "host cluster")?) {
                        *x = x.saturating_sub(1);
                    }
                }
            }
            *self.slot(st, c) = 0;
            return self.zero_cluster(st, c);
        }
        let host = e & OFFSET_MASK;
        if host != 0 {
            if v3 {
                *self.slot(st, c) = e | OFLAG_ZERO;
            } else {
                self.file.write_all_at(&vec![0u8; self.cs_bytes], host)?;
            }
        } else if backing {
            if v3 {
                *self.slot(st, c) = OFLAG_ZERO;
            } else {
                let h = st.next_cluster * self.cs;
                st.next_cluster += 1;
                if let Some(r) = st.refs.as_mut() {
                    r.push(1);
                }
                *self.slot(st, c) = h | OFLAG_COPIED;
                self.file.write_all_at(&vec![0u8; self.cs_bytes], h)?;
            }
        }
        Ok(())
    }
}

/// The header of an image with these parameters and metadata locations.
fn header_for(
    p: &Params,
    l1_entries: u64,
    l1_offset: u64,
    reftable_offset: u64,
    reftable_clusters: u32,
) -> Result<Header> {
    let mut incompatible = 0;
    if p.compression == Compression::Zstd {
        incompatible |= crate::header::INCOMPAT_COMPRESSION;
    }
    Ok(Header {
        version: p.version,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: p.cluster_bits,
        size: p.size,
        crypt_method: 0,
        l1_size: u32::try_from(l1_entries).map_err(|_| Error::argument("L1 table too large"))?,
        l1_table_offset: l1_offset,
        refcount_table_offset: reftable_offset,
        refcount_table_clusters: reftable_clusters,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible,
        compatible: 0,
        autoclear: 0,
        refcount_order: p.refcount_order,
        header_length: if p.version >= 3 { crate::header::V3_HEADER_LEN } else { crate::header::V2_HEADER_LEN },
        compression: p.compression,
        backing_file: p.backing_file.clone(),
        backing_format: p.backing_format.clone(),
        bitmaps: None,
    })
}

/// Compresses one guest cluster of a `cs`-byte-cluster image (the last cluster of an
/// unaligned disk is zero-padded) as qemu does; `None` when it does not get smaller, so
/// it is stored as it is. The one compressor of the image writer and the in-place editor.
pub(crate) fn compress_cluster(kind: Compression, data: &[u8], cs: usize) -> Option<Vec<u8>> {
    if diskcast_block::compress::looks_incompressible(data) {
        return None;
    }
    let mut input = data.to_vec();
    input.resize(cs, 0);
    let mut out = vec![0u8; cs - 1];
    let n = match kind {
        Compression::Zlib => {
            let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::default(), false, ZLIB_WINDOW_BITS);
            match c.compress(&input, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => usize::try_from(c.total_out()).ok()?,
                _ => return None,
            }
        }
        Compression::Zstd => zstd::bulk::compress_to_buffer(&input, &mut out, ZSTD_LEVEL).ok()?,
    };
    out.truncate(n);
    Some(out)
}

/// The L2 entry of a compressed cluster whose bytes are `[start, end)` in the file: the
/// descriptor counts the 512-byte sectors they touch past the first (qcow2.txt).
pub(crate) fn compressed_entry(start: u64, end: u64, cluster_bits: u32) -> u64 {
    let extra_sectors = (end - 1) / SECTOR - start / SECTOR;
    OFLAG_COMPRESSED | (extra_sectors << (62 - (cluster_bits - 8))) | start
}

/// Writes refcount blocks and then a refcount table from host cluster `start` on (the end
/// of the used part of the file), sized by qemu's arithmetic so they also count
/// themselves: clusters below `start` get `refcount(cluster)`, the new ones 1. Returns the
/// table's offset and clusters and the clusters the file then holds. The header is left
/// to the caller, to be switched to the new table once it is written.
pub(crate) fn write_refcount_structures(
    file: &ImageFile,
    cs: u64,
    order: u32,
    start: u64,
    refcount: impl Fn(u64) -> Result<u64>,
) -> Result<(u64, u32, u64)> {
    let (blocks, table) = refcount_metadata_clusters(start, cs, order);
    if table * cs > MAX_REFTABLE_BYTES {
        return Err(Error::unsupported(format!(
            "the image needs a refcount table of {} bytes, larger than the {MAX_REFTABLE_BYTES} qemu accepts",
            table * cs
        )));
    }
    let max = if order >= 6 { u64::MAX } else { (1u64 << (1u32 << order)) - 1 };
    let rt_start = start + blocks;
    let total = rt_start + table;
    let per_block = (cs * 8) >> order;
    let mut block = vec![0u8; usize_from_u64(cs, "cluster size")?];
    let mut reftable = vec![0u64; usize_from_u64(table * cs / 8, "refcount table entries")?];
    for (b, slot) in (0..blocks).zip(reftable.iter_mut()) {
        block.fill(0);
        let first = b * per_block;
        for i in first..(first + per_block).min(total) {
            let v = if i < start { refcount(i)? } else { 1 };
            if v > max {
                return Err(Error::unsupported(format!(
                    "cluster {i} needs refcount {v}, more than {}-bit refcounts hold",
                    1u32 << order
                )));
            }
            put_refcount(&mut block, order, usize_from_u64(i - first, "refcount index")?, v);
        }
        *slot = (start + b) * cs;
        file.write_all_at(&block, *slot)?;
    }
    file.write_all_at(&crate::check::table_bytes(&reftable), rt_start * cs)?;
    let clusters = u32::try_from(table).map_err(|_| Error::unsupported("refcount table too large"))?;
    Ok((rt_start * cs, clusters, total))
}

/// Stores `value` as refcount entry `i` of a refcount block of `1 << order`-bit entries.
pub(crate) fn put_refcount(block: &mut [u8], order: u32, i: usize, value: u64) {
    let bits = 1usize << order;
    if bits < 8 {
        let per_byte = 8 / bits;
        let shift = (i % per_byte) * bits;
        let mask = low_u8((1u64 << bits) - 1);
        if let Some(b) = block.get_mut(i / per_byte) {
            *b = (*b & !(mask << shift)) | ((low_u8(value) & mask) << shift);
        }
    } else {
        let bytes = bits / 8;
        let be = value.to_be_bytes();
        if let Some(dst) = block.get_mut(i * bytes..(i + 1) * bytes) {
            dst.copy_from_slice(&be[8 - bytes..]);
        }
    }
}

impl BlockWrite for Qcow2Writer {
    fn size(&self) -> u64 {
        self.p.size
    }

    fn order(&self) -> WriteOrder {
        if self.p.compress || self.p.reproducible { WriteOrder::Sequential } else { WriteOrder::Any }
    }

    fn granularity(&self) -> u64 {
        self.cs
    }

    fn zero_initialized(&self) -> bool {
        self.p.backing_file.is_none()
    }

    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<Encoded> {
        if !self.p.compress {
            return Ok(Encoded::Plain { offset, data });
        }
        let end = self.check_range(offset, u64_from_usize(data.len()))?;
        let _ = end;
        let mut units = Vec::with_capacity(data.len().div_ceil(self.cs_bytes));
        for (i, chunk) in data.chunks(self.cs_bytes).enumerate() {
            let off = offset + u64_from_usize(i) * self.cs;
            let unit = match compress_cluster(self.p.compression, chunk, self.cs_bytes) {
                Some(stored) => EncodedUnit { offset: off, len: u64_from_usize(chunk.len()), stored, compressed: true },
                None => EncodedUnit {
                    offset: off,
                    len: u64_from_usize(chunk.len()),
                    stored: chunk.to_vec(),
                    compressed: false,
                },
            };
            units.push(unit);
        }
        Ok(Encoded::Units(units))
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        match encoded {
            Encoded::Plain { offset, data } => self.write_plain(offset, &data),
            Encoded::Units(units) => {
                for u in units {
                    if u.compressed {
                        self.write_compressed(&u)?;
                    } else {
                        if u64_from_usize(u.stored.len()) != u.len {
                            return Err(Error::argument("uncompressed unit length mismatch").with_offset(u.offset));
                        }
                        self.write_plain(u.offset, &u.stored)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = range_end(offset, len, self.p.size)?;
        let mut st = self.lock();
        let mut pos = offset;
        while pos < end {
            let c = pos / self.cs;
            let cstart = c * self.cs;
            let cend = (cstart + self.cs).min(self.p.size);
            let piece_end = cend.min(end);
            if cstart >= offset && cend <= end {
                self.zero_cluster(&mut st, c)?;
            } else {
                let e = self.entry(&st, c);
                let host = e & OFFSET_MASK;
                if e & OFLAG_COMPRESSED != 0 || (host == 0 && e & OFLAG_ZERO == 0 && self.p.backing_file.is_some()) {
                    return Err(Error::unsupported(
                        "zeroing part of a cluster that is compressed or comes from the backing file",
                    )
                    .with_offset(pos));
                }
                if host != 0 && e & OFLAG_ZERO == 0 {
                    self.file.write_all_at(
                        &vec![0u8; usize_from_u64(piece_end - pos, "piece_end  pos")?],
                        host + (pos - cstart),
                    )?;
                }
            }
            pos = piece_end;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let cs = self.cs;
        let order = self.p.refcount_order;
        let st = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(layout) = &self.layout {
            return finish_preallocated(&self.file, &self.p, self.l1_entries, layout, &st.l2);
        }
        let data_end = st.next_cluster;
        let mut l1_idx: Vec<u64> = st.l2.keys().copied().collect();
        l1_idx.sort_unstable();
        // L2 tables right after the data.
        let mut l1 = vec![0u8; usize_from_u64(self.l1_entries * 8, "l_entries")?];
        let mut l2_buf = vec![0u8; usize_from_u64(cs, "cluster size")?];
        for (k, idx) in l1_idx.iter().enumerate() {
            let at = (data_end + u64_from_usize(k)) * cs;
            let table = &st.l2[idx];
            for (i, e) in table.iter().enumerate() {
                l2_buf[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
            self.file.write_all_at(&l2_buf, at)?;
            let i = usize_from_u64(*idx, "idx")? * 8;
            l1[i..i + 8].copy_from_slice(&(at | OFLAG_COPIED).to_be_bytes());
        }
        let used = data_end + u64_from_usize(l1_idx.len());
        let refs = st.refs.as_deref();
        let (rt_offset, rt_clusters, total) = write_refcount_structures(&self.file, cs, order, used, |i| {
            Ok(match refs {
                Some(r) if i < data_end => u64::from(r.get(usize_from_u64(i, "cluster index")?).copied().unwrap_or(0)),
                _ => 1,
            })
        })?;
        if !l1_idx.is_empty() {
            self.file.write_all_at(&l1, cs)?;
        }
        let header = header_for(&self.p, self.l1_entries, cs, rt_offset, rt_clusters)?;
        self.file.set_len(total * cs)?;
        // The output layer syncs the file once before renaming it into place.
        self.file.write_all_at(&header.serialize()?, 0)
    }
}

/// `finish` for a preallocated image: every table at its place in `layout` (L2 tables the
/// writes did not touch as the layout fills them), refcount 1 for every cluster, the
/// header last; then, for `falloc` and `full`, the file's holes reserved or zeroed.
fn finish_preallocated(
    file: &ImageFile,
    p: &Params,
    l1_entries: u64,
    layout: &Layout,
    written: &HashMap<u64, Box<[u64]>>,
) -> Result<()> {
    let cs = 1u64 << p.cluster_bits;
    let mut l1 = vec![0u64; usize_from_u64(l1_entries, "L1 entries")?];
    for ((i, &at), slot) in (0u64..).zip(&layout.l2).zip(l1.iter_mut()) {
        let table = match written.get(&i) {
            Some(t) => crate::check::table_bytes(t),
            None => crate::check::table_bytes(&layout.table(cs, i)),
        };
        file.write_all_at(&table, at * cs)?;
        *slot = (at * cs) | OFLAG_COPIED;
    }
    file.write_all_at(&crate::check::table_bytes(&l1), layout.l1 * cs)?;
    let order = p.refcount_order;
    let per_block = (cs * 8) >> order;
    let mut block = vec![0u8; usize_from_u64(cs, "cluster size")?];
    let mut reftable = vec![0u64; usize_from_u64(layout.reftable_clusters * cs / 8, "refcount table")?];
    for ((k, &at), slot) in (0u64..).zip(&layout.blocks).zip(reftable.iter_mut()) {
        block.fill(0);
        let first = k * per_block;
        for i in first..(first + per_block).min(layout.total) {
            put_refcount(&mut block, order, usize_from_u64(i - first, "refcount index")?, 1);
        }
        file.write_all_at(&block, at * cs)?;
        *slot = at * cs;
    }
    file.write_all_at(&crate::check::table_bytes(&reftable), layout.reftable * cs)?;
    let end = layout.total * cs;
    file.set_len(end)?;
    match p.preallocation {
        Preallocation::Falloc => file.preallocate(0, end, false)?,
        Preallocation::Full => {
            // Zeros into the holes only: the data written is kept.
            let mut pos = 0;
            while pos < end {
                let hole = file.next_hole(pos)?;
                if hole >= end {
                    break;
                }
                let data = file.next_data(hole)?.unwrap_or(end).min(end);
                file.preallocate(hole, data - hole, true)?;
                pos = data;
            }
        }
        Preallocation::Off | Preallocation::Metadata => {}
    }
    let reftable_clusters =
        u32::try_from(layout.reftable_clusters).map_err(|_| Error::unsupported("refcount table too large"))?;
    let header = header_for(p, l1_entries, layout.l1 * cs, layout.reftable * cs, reftable_clusters)?;
    file.write_all_at(&header.serialize()?, 0)
}
