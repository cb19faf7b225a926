//! Reading one hosted sparse extent (monolithicSparse, streamOptimized, or one file of a
//! split twoGbMaxExtentSparse disk): grain directory, grain tables, grains.

use crate::header::{
    GD_AT_END, GRAIN_MARKER_LEN, GTE_ZEROED, MARKER_EOS, MARKER_FOOTER, MAX_DESCRIPTOR_BYTES, MAX_GD_BYTES, RawMarker,
    SECTOR, SparseHeader, sector_table,
};
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Alloc, Error, Result};
use diskcast_layout::{read, u64_from_usize, usize_from_u64};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bytes of grain tables one image keeps in memory (32 MiB maps 1 TiB with 64 KiB
/// grains), shared out between the sparse extents of a split image.
pub const GT_CACHE_BYTES: u64 = 32 << 20;
/// Smallest cache share of one extent: a few tables, so a descriptor listing thousands
/// of extents cannot multiply the budget beyond 4096 x 64 KiB = 256 MiB.
const MIN_CACHE_SHARE: u64 = 64 << 10;
/// Grains one `extent` call looks at before returning the run found so far, so a call
/// stays fast whatever the metadata says (1 TiB of 64 KiB grains takes 16 calls).
const MAX_EXTENT_GRAINS: u64 = 1 << 24;

/// Where one grain's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainMap {
    /// Not allocated: reads as zeros.
    Unallocated,
    /// Zero grain (GTE 1 with the zeroed-grain flag).
    Zero,
    /// Uncompressed data at this byte offset.
    Data(u64),
    /// Compressed grain (its marker, if any) at this byte offset.
    Compressed(u64),
}

/// An open sparse extent.
#[derive(Debug)]
pub struct SparseExtent {
    pub(crate) file: Source,
    pub(crate) file_len: u64,
    /// The header in effect (the footer's, for streamOptimized with GD_AT_END).
    pub(crate) header: SparseHeader,
    /// True when the header said GD_AT_END and the footer was used.
    pub(crate) footer_used: bool,
    /// Grain size in bytes.
    pub(crate) grain: u64,
    /// Entries per grain table.
    pub(crate) per_gt: u64,
    /// Grain directory: sector offsets of grain tables (0: none).
    pub(crate) gd: Vec<u32>,
    /// Capacity in bytes.
    pub(crate) capacity: u64,
    cache: Mutex<HashMap<u64, Arc<[u32]>>>,
    cache_limit: u64,
}

impl SparseExtent {
    /// Opens the sparse extent in `file`; also returns its embedded descriptor text.
    pub fn open(file: Source) -> Result<(Self, Option<String>)> {
        let file_len = file.len()?;
        let mut hb = [0u8; 512];
        if file_len < 512 {
            return Err(Error::invalid("file is too short for a VMDK sparse extent header").with_file(file.name()));
        }
        file.read_exact_at(&mut hb, 0)?;
        let first = SparseHeader::parse(&hb).map_err(|e| e.with_file(file.name()))?;
        let mut header = first;
        let mut footer_used = false;
        if first.gd_offset == GD_AT_END {
            header = read_footer(file.as_ref(), file_len)?;
            footer_used = true;
        }
        let gd_entries = header.validate().map_err(|e| e.with_file(file.name()))?;
        let gd_bytes = gd_entries.saturating_mul(4);
        let gd_at = header.gd_offset.checked_mul(SECTOR).filter(|&o| o < u64::MAX / 2).ok_or_else(|| {
            Error::out_of_bounds(format!("grain directory offset {} is impossible", header.gd_offset))
                .with_field("gdOffset")
                .with_file(file.name())
        })?;
        if gd_bytes > MAX_GD_BYTES || gd_at.saturating_add(gd_bytes) > file_len {
            return Err(Error::out_of_bounds(format!(
                "the grain directory ({gd_entries} entries at byte {gd_at:#x}, from a capacity of {} sectors) \
                 does not fit in the {file_len}-byte file",
                header.capacity
            ))
            .with_field("gdOffset")
            .with_offset(56)
            .with_file(file.name()));
        }
        let mut raw = vec![0u8; usize_from_u64(gd_bytes, "grain directory size")?];
        file.read_exact_at(&mut raw, gd_at)?;
        let gd: Vec<u32> = sector_table(&raw).collect();
        let desc = read_embedded_descriptor(file.as_ref(), file_len, &first)?;
        let grain = header.grain_size * SECTOR;
        let ext = SparseExtent {
            file_len,
            footer_used,
            grain,
            per_gt: u64::from(header.gtes_per_gt),
            gd,
            capacity: header.capacity * SECTOR,
            header,
            file,
            cache: Mutex::new(HashMap::new()),
            cache_limit: GT_CACHE_BYTES,
        };
        Ok((ext, desc))
    }

    /// Gives this extent a `1/share` part of the image's grain table cache.
    pub(crate) fn share_cache(&mut self, share: u64) {
        self.cache_limit = (GT_CACHE_BYTES / share.max(1)).max(MIN_CACHE_SHARE);
    }

    /// The grain table `t` (`None` when its directory entry is 0).
    pub(crate) fn gt(&self, t: u64) -> Result<Option<Arc<[u32]>>> {
        let Some(&entry) = usize::try_from(t).ok().and_then(|i| self.gd.get(i)) else {
            return Err(
                Error::corrupt(format!("grain table {t} is beyond the grain directory")).with_file(self.file.name())
            );
        };
        if entry == 0 {
            return Ok(None);
        }
        if let Some(tab) = lock(&self.cache).get(&t) {
            return Ok(Some(tab.clone()));
        }
        let at = u64::from(entry) * SECTOR;
        let len = self.per_gt * 4;
        if at.saturating_add(len) > self.file_len {
            return Err(Error::out_of_bounds(format!(
                "grain table {t} at byte {at:#x} runs past the end of the {}-byte file",
                self.file_len
            ))
            .with_field("grain_directory_entry")
            .with_offset(self.header.gd_offset * SECTOR + t * 4)
            .with_file(self.file.name()));
        }
        let mut raw = vec![0u8; usize_from_u64(len, "length")?];
        self.file.read_exact_at(&mut raw, at)?;
        let tab: Arc<[u32]> = sector_table(&raw).collect();
        let mut cache = lock(&self.cache);
        if (u64_from_usize(cache.len()) + 1) * len > self.cache_limit {
            cache.clear();
        }
        cache.insert(t, tab.clone());
        Ok(Some(tab))
    }

    /// What grain `g` maps to.
    pub(crate) fn lookup(&self, g: u64) -> Result<GrainMap> {
        let Some(tab) = self.gt(g / self.per_gt)? else {
            return Ok(GrainMap::Unallocated);
        };
        let i = usize_from_u64(g % self.per_gt, "grain table index")?;
        let gte = tab.get(i).copied().unwrap_or(0);
        self.classify(gte, g)
    }

    /// Interprets a grain table entry; checks data lies inside the file.
    pub(crate) fn classify(&self, gte: u32, g: u64) -> Result<GrainMap> {
        if gte == 0 {
            return Ok(GrainMap::Unallocated);
        }
        if gte == GTE_ZEROED && self.header.zero_grain() {
            return Ok(GrainMap::Zero);
        }
        let at = u64::from(gte) * SECTOR;
        if at >= self.file_len {
            return Err(Error::out_of_bounds(format!(
                "grain {g} at byte {at:#x} lies past the end of the {}-byte file",
                self.file_len
            ))
            .with_field("grain_table_entry")
            .with_file(self.file.name()));
        }
        Ok(if self.header.compressed() { GrainMap::Compressed(at) } else { GrainMap::Data(at) })
    }

    /// The allocation status of the run starting at extent-relative byte `off`, at most
    /// `max_len` long: `(len, alloc)`.
    pub(crate) fn extent(&self, off: u64, max_len: u64) -> Result<(u64, Alloc)> {
        let end = off.saturating_add(max_len).min(self.capacity);
        let mut g = off / self.grain;
        let first = self.kind_of(g)?;
        let last = end.div_ceil(self.grain);
        let stop = last.min(g.saturating_add(MAX_EXTENT_GRAINS));
        g += 1;
        // One table at a time: fetch it once, scan its entries.
        'scan: while g < stop {
            let t = g / self.per_gt;
            let t_end = (t + 1).saturating_mul(self.per_gt).min(stop);
            match self.gt(t)? {
                None if first == Alloc::Unallocated => g = t_end,
                None => break,
                Some(tab) => {
                    while g < t_end {
                        let gte = tab.get(usize_from_u64(g % self.per_gt, "grain table index")?).copied().unwrap_or(0);
                        if alloc_of(self.classify(gte, g)?) != first {
                            break 'scan;
                        }
                        g += 1;
                    }
                }
            }
        }
        let run_end = g.min(stop).saturating_mul(self.grain).min(end).max(off + 1);
        Ok((run_end - off, first))
    }

    fn kind_of(&self, g: u64) -> Result<Alloc> {
        Ok(alloc_of(self.lookup(g)?))
    }

    /// Reads extent-relative bytes `[off, off + buf.len())`, inside the capacity.
    pub(crate) fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + u64_from_usize(done);
            let g = pos / self.grain;
            let in_grain = pos % self.grain;
            let n = usize::try_from(self.grain - in_grain).unwrap_or(usize::MAX).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.lookup(g)? {
                GrainMap::Unallocated | GrainMap::Zero => out.fill(0),
                GrainMap::Data(host) => {
                    // Coalesce host-contiguous grains into one read.
                    let mut len = n;
                    let mut next = g + 1;
                    while done + len < buf.len() {
                        match self.lookup(next)? {
                            GrainMap::Data(h) if h == host + (next - g) * self.grain => {
                                len = (len + usize_from_u64(self.grain, "grain size")?).min(buf.len() - done);
                                next += 1;
                            }
                            _ => break,
                        }
                    }
                    self.read_plain(&mut buf[done..done + len], host + in_grain)?;
                    done += len;
                    continue;
                }
                GrainMap::Compressed(host) => {
                    let data = self.read_compressed(host, g)?;
                    let s = usize_from_u64(in_grain, "in_grain")?;
                    out.copy_from_slice(&data[s..s + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Reads uncompressed bytes; bytes past the end of the file read as zeros (qemu does
    /// the same for a last grain the file does not fully hold).
    fn read_plain(&self, buf: &mut [u8], at: u64) -> Result<()> {
        let avail = usize_from_u64(self.file_len.saturating_sub(at).min(u64_from_usize(buf.len())), "length")?;
        self.file.read_exact_at(&mut buf[..avail], at)?;
        buf[avail..].fill(0);
        Ok(())
    }

    /// Reads and inflates the compressed grain `g` stored at `at`: a whole grain.
    pub(crate) fn read_compressed(&self, at: u64, g: u64) -> Result<Vec<u8>> {
        let (data_at, len) = self.compressed_location(at, g)?;
        let mut input = vec![0u8; usize_from_u64(len, "length")?];
        self.file.read_exact_at(&mut input, data_at)?;
        let mut out = vec![0u8; usize_from_u64(self.grain, "grain size")?];
        let mut z = flate2::Decompress::new(true);
        let status = z.decompress(&input, &mut out, flate2::FlushDecompress::Finish);
        let bad = |why: String| {
            Error::corrupt(format!("compressed grain {g} at byte {at:#x} cannot be inflated: {why}"))
                .with_field("grain")
                .with_offset(at)
                .with_file(self.file.name())
        };
        match status {
            Ok(flate2::Status::StreamEnd) => {}
            Ok(_) if self.header.markers() => {
                return Err(bad("the zlib stream is truncated or inflates to more than a grain".into()));
            }
            // Without markers the stored length is unknown: we read up to two grains, so
            // an unfinished stream that filled the grain is fine.
            Ok(_) if z.total_out() == self.grain => {}
            Ok(_) => return Err(bad("the zlib stream is truncated".into())),
            Err(e) => return Err(bad(e.to_string())),
        }
        // A short stream (last grain of a disk) leaves zeros behind it.
        Ok(out)
    }

    /// Where the compressed bytes of grain `g` are: `(offset, length)`, checked against
    /// the file.
    pub(crate) fn compressed_location(&self, at: u64, g: u64) -> Result<(u64, u64)> {
        let max = self.grain * 2;
        if !self.header.markers() {
            return Ok((at, self.file_len.saturating_sub(at).min(max)));
        }
        let mut m = [0u8; GRAIN_MARKER_LEN];
        self.file.read_exact_at(&mut m, at)?;
        let size = u64::from(diskcast_layout::le32(&m, 8, "grain marker")?);
        let data_at = at + u64_from_usize(GRAIN_MARKER_LEN);
        let err = |e: Error| e.with_field("grain_marker.size").with_offset(at).with_file(self.file.name());
        if size == 0 || size > max {
            return Err(err(Error::corrupt(format!(
                "grain {g}: marker size {size} is not a valid compressed grain size (1..={max})"
            ))));
        }
        if data_at + size > self.file_len {
            return Err(err(Error::out_of_bounds(format!(
                "grain {g}: {size} compressed bytes run past the end of the {}-byte file",
                self.file_len
            ))));
        }
        Ok((data_at, size))
    }
}

/// Reads the streamOptimized footer: footer marker, header copy, end-of-stream marker in
/// the last three sectors, as qemu and VMware place them.
fn read_footer(file: &dyn ByteSource, file_len: u64) -> Result<SparseHeader> {
    let end = file_len / SECTOR * SECTOR;
    let bad = |why: &str| {
        Error::invalid(format!("the header says the grain directory is at the end, but {why}"))
            .with_field("footer")
            .with_file(file.name())
    };
    if end < 4 * SECTOR {
        return Err(bad("the file is too short for a footer"));
    }
    let at = end - 3 * SECTOR;
    let mut b = vec![0u8; 3 * 512];
    file.read_exact_at(&mut b, at)?;
    let marker = read::<RawMarker>(&b, 0, "footer marker")?;
    let eos = read::<RawMarker>(&b, 1024, "end-of-stream marker")?;
    let marker_ok = marker.size.get() == 0 && marker.kind.get() == MARKER_FOOTER;
    let eos_ok = eos.val.get() == 0 && eos.size.get() == 0 && eos.kind.get() == MARKER_EOS;
    if !marker_ok || !eos_ok {
        return Err(bad("no footer marker and end-of-stream marker end the file").with_offset(at));
    }
    let h = SparseHeader::parse(&b[512..1024]).map_err(|e| e.with_offset(at + 512).with_file(file.name()))?;
    if h.gd_offset == GD_AT_END {
        return Err(bad("the footer does not say where it is either").with_offset(at + 512 + 56));
    }
    Ok(h)
}

fn read_embedded_descriptor(file: &dyn ByteSource, file_len: u64, h: &SparseHeader) -> Result<Option<String>> {
    if h.desc_offset == 0 || h.desc_size == 0 {
        return Ok(None);
    }
    let at = h.desc_offset.checked_mul(SECTOR);
    let len = h.desc_size.checked_mul(SECTOR).filter(|&l| l <= MAX_DESCRIPTOR_BYTES);
    let (Some(at), Some(len)) = (at, len) else {
        return Err(Error::invalid(format!(
            "embedded descriptor of {} sectors at sector {} is out of range",
            h.desc_size, h.desc_offset
        ))
        .with_field("descriptorSize")
        .with_file(file.name()));
    };
    if at.saturating_add(len) > file_len {
        return Err(Error::out_of_bounds("the embedded descriptor runs past the end of the file")
            .with_field("descriptorOffset")
            .with_offset(28)
            .with_file(file.name()));
    }
    let mut b = vec![0u8; usize_from_u64(len, "length")?];
    file.read_exact_at(&mut b, at)?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    Ok(Some(String::from_utf8_lossy(&b[..end]).into_owned()))
}

fn alloc_of(m: GrainMap) -> Alloc {
    match m {
        GrainMap::Unallocated => Alloc::Unallocated,
        GrainMap::Zero => Alloc::Zero,
        GrainMap::Data(_) | GrainMap::Compressed(_) => Alloc::Data,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
