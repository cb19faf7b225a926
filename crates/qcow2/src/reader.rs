//! Reading qcow2 images: L1/L2 lookup with a shared bounded L2 cache, coalesced reads
//! of contiguous host clusters, compressed clusters, subclusters and backing files.

use crate::header::{
    Compression, Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, OFFSET_MASK, OFLAG_COMPRESSED, OFLAG_ZERO, SUBCLUSTERS,
    read_u64_table,
};
use diskcast_block::range_end;
use diskcast_block::read_backing;
use diskcast_block::registry::OpenContext;
use diskcast_block::runs::{ReadRun, ReadRuns};
use diskcast_block::source::Source;
use diskcast_block::{Alloc, BlockRead, Error, Extent, FormatRead, ImageInfo, MapExtent, PersistentBitmap, Result};
use diskcast_block::{GrowExtent, clip_to_backing};
use diskcast_layout::{fit, u64_from_usize, usize_from_u64};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Bytes of L2 tables kept in memory: 32 MiB maps 256 GiB of guest data with 64 KiB
/// clusters, like qemu's default cache for large images, and bounds memory for any file.
const L2_CACHE_BYTES: u64 = 32 << 20;
/// (Sub)cluster pieces one `extent_at` call looks at before returning the run found so
/// far (callers continue from its end). Hostile metadata can map petabytes as one run,
/// e.g. every L1 entry naming one L2 table full of data entries; this keeps each call to
/// milliseconds while a 1 TiB run of 64 KiB clusters still takes only 16 calls.
const MAX_EXTENT_PIECES: u64 = 1 << 20;
/// Largest zstd window we accept: a cluster is at most 2 MiB (qemu compresses each one as
/// a single frame whose window is at most the cluster), so a frame asking for more is
/// corrupt and would only make the decoder allocate up to 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = crate::header::MAX_CLUSTER_BITS;

/// What one (sub)cluster of guest data maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Map {
    /// Not allocated here (backing file or zeros).
    Unallocated,
    /// Reads as zeros.
    Zero,
    /// Stored uncompressed at this host offset (of the piece's first byte).
    Data(u64),
    /// Stored compressed: `host` is the descriptor's offset, `len` the bytes to read.
    /// `skip` is where the piece starts inside the decompressed cluster.
    Compressed { host: u64, len: u64, skip: u64 },
}

/// Bounded cache of L2 tables keyed by host offset, evicted oldest first.
#[derive(Debug, Default)]
struct L2Cache {
    tables: HashMap<u64, Arc<[u64]>>,
    order: VecDeque<u64>,
    bytes: u64,
}

/// An open qcow2 image.
#[derive(Debug)]
pub struct Qcow2Reader {
    file: Source,
    file_len: u64,
    header: Header,
    l1: Vec<u64>,
    cache: Mutex<L2Cache>,
    backing: Option<Box<dyn BlockRead>>,
}

impl Qcow2Reader {
    /// Opens the image in `file` for reading; backing files go through `ctx`'s gate.
    pub fn open(file: Source, ctx: &OpenContext<'_>) -> Result<Self> {
        let header = Header::read(file.as_ref())?;
        header.check_supported()?;
        if header.incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(Error::corrupt(
                "image is marked corrupt (incompatible feature bit 1); run `diskcast check` to see what is wrong",
            )
            .with_field("incompatible_features")
            .with_offset(72));
        }
        let reader = Self::from_parts(file, header)?;
        let backing = match &reader.header.backing_file {
            Some(name) => {
                let format = reader.header.backing_format.as_deref();
                ctx.open_backing(reader.file.as_ref(), name, format).map_err(|e| {
                    // An unknown format name comes from the image, not from the user.
                    if e.kind() == diskcast_block::ErrorKind::InvalidArgument && format.is_some() {
                        Error::unsupported(format!("backing file format recorded in the image: {}", e.message()))
                            .with_field("backing_format")
                            .with_file(reader.file.name())
                    } else {
                        e
                    }
                })?
            }
            None => None,
        };
        Ok(Qcow2Reader { backing, ..reader })
    }

    /// A reader over an already parsed header, without backing file (also used by check).
    pub(crate) fn from_parts(file: Source, header: Header) -> Result<Self> {
        let file_len = file.len()?;
        let l1 = read_u64_table(file.as_ref(), header.l1_table_offset, u64::from(header.l1_size), "l1_table_offset")?;
        Ok(Qcow2Reader { file, file_len, header, l1, cache: Mutex::new(L2Cache::default()), backing: None })
    }

    /// The same image as its internal snapshot `which` holds it (`convert -l`): that
    /// snapshot's L1 table and disk size in place of the active ones.
    pub fn at_snapshot(mut self, which: &diskcast_block::registry::SnapshotRef) -> Result<Self> {
        let snaps = crate::snapshot::read_table(self.file.as_ref(), &self.header)?;
        let Some(snap) = crate::snapshot::find(&snaps, which) else {
            return Err(Error::argument(format!(
                "Failed to load snapshot: Can't find snapshot {which} (`diskcast snapshot -l` lists them)"
            ))
            .with_field("snapshot"));
        };
        let l1 = crate::snapshot::read_l1(self.file.as_ref(), snap)?;
        let size = snap.disk_size().unwrap_or(self.header.size);
        if u64_from_usize(l1.len())
            < Header::l1_entries_for(size, self.header.cluster_bits, self.header.l2_entry_size())
        {
            return Err(Error::corrupt(format!(
                "snapshot {which}: its L1 table of {} entries cannot map its disk size of {size} bytes",
                l1.len()
            ))
            .with_field("snapshot_l1_table"));
        }
        self.header.size = size;
        self.header.l1_table_offset = snap.l1_offset();
        self.header.l1_size = snap.l1_size();
        self.l1 = l1;
        self.cache = Mutex::new(L2Cache::default());
        Ok(self)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The L2 table at L1 index `idx`, or `None` when unallocated.
    fn l2_table(&self, idx: u64) -> Result<Option<Arc<[u64]>>> {
        let entry = usize::try_from(idx).ok().and_then(|i| self.l1.get(i)).copied().unwrap_or(0);
        let offset = entry & OFFSET_MASK;
        if offset == 0 {
            return Ok(None);
        }
        let cs = self.header.cluster_size();
        let l1_pos = self.header.l1_table_offset + idx * 8;
        if !offset.is_multiple_of(cs) {
            return Err(Error::corrupt(format!("L1 entry {idx} points to unaligned L2 table offset {offset:#x}"))
                .with_field("l1_entry")
                .with_offset(l1_pos));
        }
        if offset < cs {
            return Err(Error::corrupt(format!("L1 entry {idx} points into the header cluster"))
                .with_field("l1_entry")
                .with_offset(l1_pos));
        }
        if offset.checked_add(cs).is_none_or(|end| end > self.file_len) {
            return Err(Error::out_of_bounds(format!(
                "L1 entry {idx} points to an L2 table at {offset:#x}, past the end of the {}-byte file",
                self.file_len
            ))
            .with_field("l1_entry")
            .with_offset(l1_pos));
        }
        if let Some(t) = lock(&self.cache).tables.get(&offset) {
            return Ok(Some(t.clone()));
        }
        let words = cs / 8;
        let table: Arc<[u64]> = read_u64_table(self.file.as_ref(), offset, words, "l2_table")?.into();
        let mut cache = lock(&self.cache);
        if !cache.tables.contains_key(&offset) {
            while cache.bytes + cs > L2_CACHE_BYTES {
                let Some(old) = cache.order.pop_front() else { break };
                if cache.tables.remove(&old).is_some() {
                    cache.bytes -= cs;
                }
            }
            cache.tables.insert(offset, table.clone());
            cache.order.push_back(offset);
            cache.bytes += cs;
        }
        Ok(Some(table))
    }

    /// Calls `f(guest_offset, len, map)` for consecutive pieces covering `[off, end)`,
    /// each a (sub)cluster or a whole unallocated L2 range, until `f` returns false.
    pub(crate) fn walk(&self, off: u64, end: u64, mut f: impl FnMut(u64, u64, Map) -> Result<bool>) -> Result<()> {
        let h = &self.header;
        let cs = h.cluster_size();
        let span = h.l2_span();
        let ext = h.extended_l2();
        let mut pos = off;
        while pos < end {
            let l1_idx = pos / span;
            let Some(table) = self.l2_table(l1_idx)? else {
                let stop = ((l1_idx + 1) * span).min(end);
                if !f(pos, stop - pos, Map::Unallocated)? {
                    return Ok(());
                }
                pos = stop;
                continue;
            };
            let table_end = ((l1_idx + 1) * span).min(end);
            while pos < table_end {
                let cluster_start = pos - pos % cs;
                let idx = usize_from_u64((pos % span) / cs, "L2 index")?;
                let (entry, bitmap) = if ext {
                    (table.get(idx * 2).copied().unwrap_or(0), table.get(idx * 2 + 1).copied().unwrap_or(0))
                } else {
                    (table.get(idx).copied().unwrap_or(0), 0)
                };
                let l2_pos = (self.l1[usize_from_u64(l1_idx, "L1 index")?] & OFFSET_MASK)
                    + u64_from_usize(idx) * h.l2_entry_size();
                let cluster_end = (cluster_start + cs).min(table_end);
                let (piece_end, map) = if entry & OFLAG_COMPRESSED != 0 {
                    let (host, len) = self.compressed_location(entry, l2_pos)?;
                    (cluster_end, Map::Compressed { host, len, skip: pos - cluster_start })
                } else if ext {
                    let sc = cs / u64::from(SUBCLUSTERS);
                    let sub = fit::<u32, u64>((pos - cluster_start) / sc, "subcluster")?;
                    let alloc = (bitmap >> sub) & 1 != 0;
                    let zero = (bitmap >> (32 + sub)) & 1 != 0;
                    let host = entry & OFFSET_MASK;
                    let piece_end = (cluster_start + u64::from(sub + 1) * sc).min(table_end);
                    let map = match (alloc, zero) {
                        (true, true) => {
                            return Err(Error::corrupt(format!("subcluster {sub} is marked both allocated and zero"))
                                .with_field("l2_bitmap")
                                .with_offset(l2_pos + 8));
                        }
                        (true, false) => {
                            if host == 0 {
                                return Err(Error::corrupt("subcluster allocated in a cluster without host offset")
                                    .with_field("l2_bitmap")
                                    .with_offset(l2_pos + 8));
                            }
                            self.check_data(host, l2_pos)?;
                            Map::Data(host + (pos - cluster_start))
                        }
                        (false, true) => Map::Zero,
                        (false, false) => Map::Unallocated,
                    };
                    (piece_end, map)
                } else if entry & OFLAG_ZERO != 0 {
                    (cluster_end, Map::Zero)
                } else if entry & OFFSET_MASK == 0 {
                    (cluster_end, Map::Unallocated)
                } else {
                    let host = entry & OFFSET_MASK;
                    self.check_data(host, l2_pos)?;
                    (cluster_end, Map::Data(host + (pos - cluster_start)))
                };
                if !f(pos, piece_end - pos, map)? {
                    return Ok(());
                }
                pos = piece_end;
            }
        }
        Ok(())
    }

    /// A data cluster must be aligned, after the header, and start inside the file.
    fn check_data(&self, host: u64, l2_pos: u64) -> Result<()> {
        let cs = self.header.cluster_size();
        if !host.is_multiple_of(cs) {
            return Err(Error::corrupt(format!("L2 entry points to unaligned data cluster {host:#x}"))
                .with_field("l2_entry")
                .with_offset(l2_pos));
        }
        if host < cs {
            return Err(Error::corrupt("L2 entry points into the header cluster")
                .with_field("l2_entry")
                .with_offset(l2_pos));
        }
        if host >= self.file_len {
            return Err(Error::out_of_bounds(format!(
                "L2 entry points to data cluster {host:#x}, past the end of the {}-byte file",
                self.file_len
            ))
            .with_field("l2_entry")
            .with_offset(l2_pos));
        }
        Ok(())
    }

    /// Host offset and byte count of a compressed cluster, validated against the file.
    fn compressed_location(&self, entry: u64, l2_pos: u64) -> Result<(u64, u64)> {
        let (host, len) = compressed_range(&self.header, entry);
        if host < self.header.cluster_size() {
            return Err(Error::corrupt("compressed cluster descriptor points into the header cluster")
                .with_field("l2_entry")
                .with_offset(l2_pos));
        }
        // The last sector may legitimately stop short at EOF (qemu writes only the
        // compressed bytes), but no more than that.
        let file_end_sector = self.file_len.div_ceil(512) * 512;
        if host >= self.file_len || host + len > file_end_sector {
            return Err(Error::out_of_bounds(format!(
                "compressed cluster at {host:#x} of {len} bytes runs past the end of the {}-byte file",
                self.file_len
            ))
            .with_field("l2_entry")
            .with_offset(l2_pos));
        }
        Ok((host, len.min(self.file_len - host)))
    }

    /// Reads and decompresses one compressed cluster.
    fn read_compressed(&self, host: u64, len: u64) -> Result<Vec<u8>> {
        let mut input = vec![0u8; usize_from_u64(len, "len")?];
        self.file.read_exact_at(&mut input, host)?;
        let cs = usize_from_u64(self.header.cluster_size(), "cluster_size")?;
        decompress(self.header.compression, &input, cs)
            .map_err(|e| e.with_field("compressed_cluster").with_offset(host))
    }
}

/// Host offset and length (to the end of its last 512-byte sector) of a compressed
/// cluster descriptor, as qemu and `check` count it.
pub(crate) fn compressed_range(h: &Header, entry: u64) -> (u64, u64) {
    let shift = h.csize_shift();
    let host = entry & ((1u64 << shift) - 1);
    let sectors = ((entry >> shift) & ((1u64 << (h.cluster_bits - 8)) - 1)) + 1;
    (host, sectors * 512 - (host & 511))
}

/// Decompresses one cluster of `out_len` bytes; trailing bytes after the stream (sector
/// padding) are ignored, as qemu does.
pub(crate) fn decompress(kind: Compression, input: &[u8], out_len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; out_len];
    match kind {
        Compression::Zlib => {
            let mut d = flate2::Decompress::new(false);
            let r = d.decompress(input, &mut out, flate2::FlushDecompress::Finish);
            let written = usize_from_u64(d.total_out(), "decompressed length")?;
            match r {
                Ok(_) if written == out_len => Ok(out),
                Ok(_) => Err(Error::corrupt(format!("compressed cluster inflates to {written} bytes, not {out_len}"))),
                Err(e) => Err(Error::corrupt(format!("compressed cluster does not inflate: {e}"))),
            }
        }
        Compression::Zstd => {
            use zstd::stream::raw::Operation;
            let mut d = zstd::stream::raw::Decoder::new().map_err(|e| Error::io("cannot create a zstd decoder", e))?;
            d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                .map_err(|e| Error::io("cannot limit the zstd window", e))?;
            let (mut read, mut written) = (0usize, 0usize);
            while written < out_len {
                let st = d
                    .run_on_buffers(&input[read..], &mut out[written..])
                    .map_err(|e| Error::corrupt(format!("zstd cluster does not decode: {e}")))?;
                read += st.bytes_read;
                written += st.bytes_written;
                if st.bytes_read == 0 && st.bytes_written == 0 {
                    return Err(Error::corrupt(format!("zstd cluster decodes to {written} bytes, not {out_len}")));
                }
            }
            Ok(out)
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FormatRead for Qcow2Reader {
    fn file_name(&self) -> &Path {
        self.file.name()
    }

    fn virtual_size(&self) -> u64 {
        self.header.size
    }

    fn backing_image(&self) -> Option<&dyn BlockRead> {
        self.backing.as_deref()
    }

    fn read_inner(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = range_end(offset, u64_from_usize(buf.len()), self.header.size)?;
        let flush = |run: ReadRun<Map>, buf: &mut [u8]| -> Result<()> {
            let ReadRun { offset: g, len, map } = run;
            let at = usize_from_u64(g - offset, "buffer offset")?;
            let dst = &mut buf[at..at + usize_from_u64(len, "len")?];
            match map {
                Map::Zero => dst.fill(0),
                Map::Unallocated => read_backing(self.backing.as_deref(), dst, g)?,
                Map::Data(host) => {
                    let in_file = usize_from_u64(self.file_len.saturating_sub(host).min(len), "length")?;
                    self.file.read_exact_at(&mut dst[..in_file], host)?;
                    dst[in_file..].fill(0);
                }
                Map::Compressed { host, len: clen, skip } => {
                    let data = self.read_compressed(host, clen)?;
                    let s = usize_from_u64(skip, "offset")?;
                    dst.copy_from_slice(&data[s..s + dst.len()]);
                }
            }
            Ok(())
        };
        // Host-contiguous data and like unallocated/zero pieces are served together.
        let joins = |run: &ReadRun<Map>, map: Map| match (run.map, map) {
            (Map::Data(h0), Map::Data(h)) => h0 + run.len == h,
            (Map::Zero, Map::Zero) | (Map::Unallocated, Map::Unallocated) => true,
            _ => false,
        };
        ReadRuns::serve(|piece| self.walk(offset, end, piece), joins, |run| flush(run, buf))
    }

    /// Like [`Self::extent_inner`], but a run also stays in one host-contiguous piece and
    /// says where (qemu-img map's `offset`) or that it is compressed.
    fn map_inner(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let size = self.header.size;
        if offset >= size {
            return Err(Error::out_of_bounds(format!("extent query past the {size}-byte disk")).with_offset(offset));
        }
        let end = offset.saturating_add(max_len.max(1)).min(size);
        let mut out: Option<MapExtent> = None;
        let mut pieces = 0u64;
        self.walk(offset, end, |_, len, map| {
            pieces += 1;
            if pieces > MAX_EXTENT_PIECES {
                return Ok(false);
            }
            let (alloc, host, compressed) = match map {
                Map::Data(h) => (Alloc::Data, Some(h), false),
                Map::Compressed { .. } => (Alloc::Data, None, true),
                Map::Zero => (Alloc::Zero, None, false),
                Map::Unallocated if self.backing.is_some() => (Alloc::Backing, None, false),
                Map::Unallocated => (Alloc::Unallocated, None, false),
            };
            match &mut out {
                None => out = Some(MapExtent { extent: Extent { offset, len, alloc }, host, compressed }),
                Some(m)
                    if m.extent.alloc == alloc
                        && m.compressed == compressed
                        && match (m.host, host) {
                            (None, None) => true,
                            (Some(a), Some(b)) => a + m.extent.len == b,
                            _ => false,
                        } =>
                {
                    m.extent.len += len
                }
                Some(_) => return Ok(false),
            }
            Ok(true)
        })?;
        let mut m = out.ok_or_else(|| Error::corrupt("empty extent").with_offset(offset))?;
        m.extent = clip_to_backing(m.extent, self.backing.as_deref());
        Ok(m)
    }

    fn extent_inner(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.header.size;
        if offset >= size {
            return Err(Error::out_of_bounds(format!("extent query past the {size}-byte disk")).with_offset(offset));
        }
        let end = offset.saturating_add(max_len.max(1)).min(size);
        let to_alloc = |m: Map| match m {
            Map::Data(_) | Map::Compressed { .. } => Alloc::Data,
            Map::Zero => Alloc::Zero,
            Map::Unallocated if self.backing.is_some() => Alloc::Backing,
            Map::Unallocated => Alloc::Unallocated,
        };
        let mut ext = GrowExtent::new(offset);
        let mut pieces = 0u64;
        self.walk(offset, end, |_, len, map| {
            pieces += 1;
            Ok(pieces <= MAX_EXTENT_PIECES && ext.push(len, to_alloc(map)))
        })?;
        ext.finish(self.backing.as_deref())
    }

    fn info_inner(&self) -> ImageInfo {
        let h = &self.header;
        let mut specific = serde_json::Map::new();
        let mut persistent = None;
        // qemu-img info's keys; v2 images have no feature bits, so qemu shows only the
        // first three for them.
        specific.insert("compat".into(), (if h.version == 2 { "0.10" } else { "1.1" }).into());
        specific.insert("compression-type".into(), h.compression.name().into());
        specific.insert("refcount-bits".into(), h.refcount_bits().into());
        if h.version >= 3 {
            specific.insert("lazy-refcounts".into(), (h.compatible & crate::header::COMPAT_LAZY_REFCOUNTS != 0).into());
            specific.insert("corrupt".into(), (h.incompatible & INCOMPAT_CORRUPT != 0).into());
            specific.insert("extended-l2".into(), h.extended_l2().into());
            // Bitmaps whose directory cannot be read are left out; `check` reports why.
            let bitmaps = crate::bitmap::directory(self.file.as_ref(), h, self.file_len).unwrap_or_default();
            persistent = Some(
                bitmaps.iter().map(|b| PersistentBitmap { name: b.name.clone(), granularity: b.granularity }).collect(),
            );
            if !bitmaps.is_empty() {
                let list = bitmaps
                    .iter()
                    .map(|b| serde_json::json!({"flags": b.flags(), "name": b.name, "granularity": b.granularity}));
                specific.insert("bitmaps".into(), list.collect::<Vec<_>>().into());
            }
        }
        ImageInfo {
            format: "qcow2".into(),
            virtual_size: h.size,
            cluster_size: Some(h.cluster_size()),
            compression: Some(h.compression.name().into()),
            backing_file: h.backing_file.clone(),
            backing_format: h.backing_format.clone(),
            specific,
            dirty: h.incompatible & INCOMPAT_DIRTY != 0,
            extent_files: Vec::new(),
            persistent_bitmaps: persistent,
            // A table that cannot be read is left out; `check` reports why.
            snapshots: crate::snapshot::read_table(self.file.as_ref(), h)
                .map(|t| t.iter().map(crate::snapshot::Snapshot::info).collect())
                .unwrap_or_default(),
        }
    }
}
