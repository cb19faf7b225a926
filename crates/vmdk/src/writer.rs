//! Writing monolithicSparse and monolithicFlat images, and the `-o` options they share
//! with streamOptimized (see [`crate::stream`]).
//!
//! monolithicSparse uses qemu-img's layout: header, embedded descriptor (20 sectors),
//! redundant grain directory and tables, grain directory and tables (all tables
//! preallocated, so unwritten ones stay holes), then 64 KiB grains from the first 64 KiB
//! boundary. Grains are handed out under a short lock and written from many threads;
//! `finish` writes the tables, both directories, the descriptor and the header.

use crate::descriptor::{NewDescriptor, cid_from};
use crate::header::{FLAG_NL_DETECT, FLAG_RGD, FLAG_ZERO_GRAIN, GTE_ZEROED, MAX_GTES_PER_GT, SECTOR, SparseHeader};
use diskcast_block::io::ImageFile;
use diskcast_block::output::OutputFiles;
use diskcast_block::provenance::{ContentDigest, Provenance};
use diskcast_block::range_end;
use diskcast_block::registry::CreateOptions;
use diskcast_block::{BlockWrite, Encoded, Error, Result, WriteOrder};
use diskcast_layout::{low_u32, put_le32, u64_from_usize, usize_from, usize_from_u64};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Grain size qemu and VMware write: 128 sectors (64 KiB).
pub const GRAIN_SECTORS: u64 = 128;
/// Grain table entries per table.
pub const GTES_PER_GT: u64 = 512;
/// [`GTES_PER_GT`] as a table length.
pub const GT_LEN: usize = 512;

/// Grain `g`'s entry in its grain table (below [`GT_LEN`]).
pub fn gt_index(g: u64) -> usize {
    usize_from(low_u32(g % GTES_PER_GT))
}
/// Sectors qemu reserves for the embedded descriptor.
pub const DESC_SECTORS: u64 = 20;
/// Largest sparse capacity: grain table entries are 32-bit sector numbers, so the file
/// (data and metadata) must stay below 2^32 sectors; VMware's limit is 2 TiB - 512 B.
pub const MAX_SPARSE_SECTORS: u64 = (1 << 32) - 1 - (1 << 20);

/// The image layouts we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subformat {
    /// One sparse file with an embedded descriptor.
    MonolithicSparse,
    /// One compressed, append-only sparse file (written in guest order).
    StreamOptimized,
    /// A descriptor plus one flat data file.
    MonolithicFlat,
}

impl Subformat {
    /// The `createType` string.
    pub fn create_type(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::StreamOptimized => "streamOptimized",
            Subformat::MonolithicFlat => "monolithicFlat",
        }
    }
}

/// Validated creation parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Guest size in bytes (a multiple of 512).
    pub size: u64,
    /// Layout.
    pub subformat: Subformat,
    /// `ddb.adapterType`.
    pub adapter: &'static str,
    /// `ddb.virtualHWVersion`.
    pub hwversion: String,
    /// Mark zero grains with GTE 1 (and set the header flag).
    pub zeroed_grain: bool,
    /// Where the content ID comes from (derived when `SOURCE_DATE_EPOCH` is set).
    pub provenance: Provenance,
}

impl Params {
    /// Parses `-o subformat/adapter_type/hwversion/zeroed_grain` and `-c`.
    pub fn from_options(size: u64, opts: &CreateOptions) -> Result<Self> {
        let o = &opts.options;
        let subformat = match o.get("subformat").map(String::as_str) {
            None | Some("monolithicSparse") => Subformat::MonolithicSparse,
            Some("streamOptimized") => Subformat::StreamOptimized,
            Some("monolithicFlat") => Subformat::MonolithicFlat,
            Some(v @ ("twoGbMaxExtentSparse" | "twoGbMaxExtentFlat")) => {
                return Err(Error::unsupported(format!(
                    "writing subformat={v} is not supported (reading is); use monolithicSparse, \
                     streamOptimized or monolithicFlat"
                )));
            }
            Some(v) => {
                return Err(Error::argument(format!(
                    "subformat={v}: use monolithicSparse, streamOptimized or monolithicFlat"
                )));
            }
        };
        let adapter = match o.get("adapter_type").map(String::as_str) {
            None | Some("ide") => "ide",
            Some("lsilogic") => "lsilogic",
            Some("buslogic") => "buslogic",
            Some("legacyESX") => "legacyESX",
            Some(v) => {
                return Err(Error::argument(format!("adapter_type={v}: use ide, lsilogic, buslogic or legacyESX")));
            }
        };
        let hwversion = match o.get("hwversion") {
            None => "4".to_string(),
            Some(v) if !v.is_empty() && v.len() <= 4 && v.bytes().all(|b| b.is_ascii_digit()) => v.clone(),
            Some(v) => return Err(Error::argument(format!("hwversion={v}: use a number such as 4, 6 or 21"))),
        };
        let zeroed_grain = match o.get("zeroed_grain").map(String::as_str) {
            None | Some("off" | "false" | "no") => false,
            Some("on" | "true" | "yes") => true,
            Some(v) => return Err(Error::argument(format!("zeroed_grain={v}: use on or off"))),
        };
        if opts.compress && subformat != Subformat::StreamOptimized {
            return Err(Error::argument(
                "VMDK compresses only streamOptimized images: use -o subformat=streamOptimized instead of -c",
            ));
        }
        if opts.backing_file.is_some() || opts.backing_format.is_some() {
            return Err(Error::unsupported("writing VMDK delta disks (a backing file) is not supported"));
        }
        let size = size.checked_next_multiple_of(SECTOR).unwrap_or(u64::MAX);
        if subformat != Subformat::MonolithicFlat && size / SECTOR > MAX_SPARSE_SECTORS {
            return Err(Error::argument(format!(
                "{} images hold at most {} bytes (32-bit grain offsets); use subformat=monolithicFlat",
                subformat.create_type(),
                MAX_SPARSE_SECTORS * SECTOR
            )));
        }
        Ok(Params { size, subformat, adapter, hwversion, zeroed_grain, provenance: opts.provenance })
    }

    /// The descriptor for this image with these extent lines. Its CID derives from
    /// `content` (what was written) when the descriptor is written after the data and the
    /// output must be reproducible; a stream's descriptor precedes its data.
    pub fn descriptor(&self, extents: Vec<String>, content: Option<&ContentDigest>) -> String {
        let shape = format!(
            "vmdk {} {} {} {} {}",
            self.size,
            self.subformat.create_type(),
            self.adapter,
            self.hwversion,
            self.zeroed_grain
        );
        NewDescriptor {
            cid: cid_from(self.provenance.uuid("vmdk.cid", shape.as_bytes(), content).as_bytes()),
            create_type: self.subformat.create_type(),
            extents,
            hwversion: &self.hwversion,
            adapter: self.adapter,
            sectors: self.size / SECTOR,
        }
        .render()
    }
}

/// The file name written in a descriptor for `path`.
pub(crate) fn file_name(path: &Path) -> Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::argument("output path has no UTF-8 file name").with_file(path))?;
    if name.contains('"') || name.contains('\n') {
        return Err(Error::argument("VMDK file names cannot contain quotes or newlines").with_file(path));
    }
    Ok(name.to_string())
}

/// Sector layout of a monolithicSparse file (as qemu lays it out).
#[derive(Debug, Clone, Copy)]
struct Layout {
    gt_count: u64,
    gd_sectors: u64,
    rgd: u64,
    gd: u64,
    overhead: u64,
}

impl Layout {
    fn new(capacity: u64) -> Self {
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gt_count * 4).div_ceil(SECTOR);
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let rgd = 1 + DESC_SECTORS;
        let gd = rgd + gd_sectors + gt_sectors * gt_count;
        let overhead = (gd + gd_sectors + gt_sectors * gt_count).next_multiple_of(GRAIN_SECTORS);
        Layout { gt_count, gd_sectors, rgd, gd, overhead }
    }

    /// Sector of grain table `t` in the directory starting at `dir`.
    fn gt_at(&self, dir: u64, t: u64) -> u64 {
        dir + self.gd_sectors + t * (GTES_PER_GT * 4 / SECTOR)
    }
}

#[derive(Debug)]
struct SparseState {
    /// Next free sector for a grain.
    next: u64,
    /// Grain tables with at least one entry, by table index.
    gts: HashMap<u64, Box<[u32]>>,
}

/// A monolithicSparse image being written.
#[derive(Debug)]
pub struct SparseWriter {
    file: ImageFile,
    name: String,
    p: Params,
    layout: Layout,
    grain: u64,
    state: Mutex<SparseState>,
    /// What was written, for the CID of a reproducible image.
    content: ContentDigest,
}

impl SparseWriter {
    /// Prepares a new image in `file` (an empty temporary named `path` when committed).
    pub fn new(file: ImageFile, path: &Path, p: Params) -> Result<Self> {
        let name = file_name(path)?;
        let layout = Layout::new(p.size / SECTOR);
        let w = SparseWriter {
            file,
            name,
            layout,
            grain: GRAIN_SECTORS * SECTOR,
            state: Mutex::new(SparseState { next: layout.overhead, gts: HashMap::new() }),
            content: p.provenance.content_digest(),
            p,
        };
        // Fail on an oversized descriptor now rather than after the copy.
        w.descriptor_bytes()?;
        Ok(w)
    }

    fn descriptor_bytes(&self) -> Result<Vec<u8>> {
        let line = format!("RW {} SPARSE \"{}\"", self.p.size / SECTOR, self.name);
        let text = self.p.descriptor(vec![line], Some(&self.content));
        if u64_from_usize(text.len()) > DESC_SECTORS * SECTOR {
            return Err(Error::argument("the VMDK descriptor does not fit in 20 sectors (file name too long?)"));
        }
        let mut b = text.into_bytes();
        b.resize(usize_from_u64(DESC_SECTORS * SECTOR, "header size")?, 0);
        Ok(b)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SparseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gte(st: &SparseState, g: u64) -> u32 {
        st.gts.get(&(g / GTES_PER_GT)).map_or(0, |t| t[gt_index(g)])
    }

    fn set_gte(st: &mut SparseState, g: u64, v: u32) {
        let t = st.gts.entry(g / GTES_PER_GT).or_insert_with(|| vec![0u32; GT_LEN].into_boxed_slice());
        t[gt_index(g)] = v;
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<u64> {
        let end = range_end(offset, len, self.p.size)?;
        let at_end = end.div_ceil(self.grain) == self.p.size.div_ceil(self.grain);
        if !offset.is_multiple_of(self.grain) || (!end.is_multiple_of(self.grain) && !at_end) {
            return Err(
                Error::argument(format!("VMDK writes must cover whole {}-byte grains", self.grain)).with_offset(offset)
            );
        }
        Ok(end)
    }

    fn write_plain(&self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = self.check_range(offset, u64_from_usize(data.len()))?;
        self.content.add(offset, data);
        let first = offset / self.grain;
        let last = end.div_ceil(self.grain);
        let mut hosts = Vec::with_capacity(usize_from_u64(last - first, "grain count")?);
        {
            let mut st = self.lock();
            for g in first..last {
                let e = Self::gte(&st, g);
                if e > GTE_ZEROED {
                    hosts.push(u64::from(e));
                    continue;
                }
                let sector = st.next;
                let next = sector + GRAIN_SECTORS;
                let v = u32::try_from(sector)
                    .ok()
                    .filter(|_| next <= u64::from(u32::MAX))
                    .ok_or_else(|| Error::argument("the VMDK file would exceed 2 TiB").with_offset(offset))?;
                st.next = next;
                Self::set_gte(&mut st, g, v);
                hosts.push(sector);
            }
        }
        let gbytes = usize_from_u64(self.grain, "grain size")?;
        let mut i = 0;
        while i < hosts.len() {
            let mut j = i + 1;
            while j < hosts.len() && hosts[j] == hosts[j - 1] + GRAIN_SECTORS {
                j += 1;
            }
            let a = i * gbytes;
            let b = (j * gbytes).min(data.len());
            self.file.write_all_at(&data[a..b], hosts[i] * SECTOR)?;
            i = j;
        }
        Ok(())
    }
}

impl BlockWrite for SparseWriter {
    fn size(&self) -> u64 {
        self.p.size
    }

    fn granularity(&self) -> u64 {
        self.grain
    }

    /// Grains are placed in the order they arrive: in guest order when the output must
    /// be reproducible.
    fn order(&self) -> WriteOrder {
        if self.p.provenance.is_reproducible() { WriteOrder::Sequential } else { WriteOrder::Any }
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        encoded.for_each_plain("monolithicSparse VMDK", |offset, data| self.write_plain(offset, data))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = range_end(offset, len, self.p.size)?;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let gstart = g * self.grain;
            let gend = (gstart + self.grain).min(self.p.size);
            let piece_end = gend.min(end);
            let whole = gstart >= offset && gend <= end;
            let mut st = self.lock();
            let e = Self::gte(&st, g);
            if whole && self.p.zeroed_grain {
                Self::set_gte(&mut st, g, GTE_ZEROED);
            } else if e > GTE_ZEROED {
                drop(st);
                let host = u64::from(e) * SECTOR + (pos - gstart);
                self.file.write_all_at(&vec![0u8; usize_from_u64(piece_end - pos, "zero length")?], host)?;
            }
            pos = piece_end;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let desc = self.descriptor_bytes()?;
        let st = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        let l = self.layout;
        // Both directories list every (preallocated) table, as qemu's do.
        for dir in [l.rgd, l.gd] {
            let mut gd = vec![0u8; usize_from_u64(l.gd_sectors * SECTOR, "grain directory size")?];
            for t in 0..l.gt_count {
                let at = u32::try_from(l.gt_at(dir, t)).map_err(|_| Error::argument("grain directory too large"))?;
                put_le32(&mut gd, usize_from_u64(t, "grain table index")? * 4, at, "grain directory entry")?;
            }
            self.file.write_all_at(&gd, dir * SECTOR)?;
            let mut keys: Vec<_> = st.gts.keys().copied().collect();
            keys.sort_unstable();
            let mut buf = vec![0u8; GT_LEN * 4];
            for t in keys {
                for (i, e) in st.gts[&t].iter().enumerate() {
                    put_le32(&mut buf, i * 4, *e, "grain table entry")?;
                }
                self.file.write_all_at(&buf, l.gt_at(dir, t) * SECTOR)?;
            }
        }
        self.file.write_all_at(&desc, SECTOR)?;
        let header = SparseHeader {
            version: 1,
            flags: FLAG_NL_DETECT | FLAG_RGD | if self.p.zeroed_grain { FLAG_ZERO_GRAIN } else { 0 },
            capacity: self.p.size / SECTOR,
            grain_size: GRAIN_SECTORS,
            desc_offset: 1,
            desc_size: DESC_SECTORS,
            gtes_per_gt: MAX_GTES_PER_GT,
            rgd_offset: l.rgd,
            gd_offset: l.gd,
            overhead: l.overhead,
            unclean_shutdown: 0,
            compress_algorithm: 0,
        };
        self.file.set_len(st.next * SECTOR)?;
        self.file.write_all_at(&header.serialize(), 0)
    }
}

/// A monolithicFlat image: the descriptor at the target path and `<stem>-flat.vmdk`.
#[derive(Debug)]
pub struct FlatWriter {
    data: ImageFile,
    desc: ImageFile,
    /// The descriptor's extent line.
    extent: String,
    size: u64,
    p: Params,
    /// What was written, for the CID of a reproducible image.
    content: ContentDigest,
}

impl FlatWriter {
    /// Creates both files through `out`.
    pub fn new(path: &Path, p: Params, out: &OutputFiles) -> Result<Self> {
        let name = file_name(path)?;
        let stem = name.strip_suffix(".vmdk").unwrap_or(&name);
        let flat_name = format!("{stem}-flat.vmdk");
        let flat_path = path.with_file_name(&flat_name);
        let extent = format!("RW {} FLAT \"{flat_name}\" 0", p.size / SECTOR);
        let desc = out.create(path)?;
        let data = out.create(&flat_path)?;
        data.set_len(p.size)?;
        Ok(FlatWriter { data, desc, extent, size: p.size, content: p.provenance.content_digest(), p })
    }
}

impl BlockWrite for FlatWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        let write = |offset: u64, data: &[u8]| -> Result<()> {
            range_end(offset, u64_from_usize(data.len()), self.size)?;
            self.content.add(offset, data);
            self.data.write_all_at(data, offset)
        };
        encoded.for_each_plain("monolithicFlat VMDK", write)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        range_end(offset, len, self.size)?;
        if self.data.punch_hole(offset, len).is_err() {
            let mut pos = offset;
            while pos < offset + len {
                let n = (offset + len - pos).min(1 << 20);
                self.data.write_all_at(&vec![0u8; usize_from_u64(n, "length")?], pos)?;
                pos += n;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let text = self.p.descriptor(vec![self.extent.clone()], Some(&self.content));
        self.desc.write_all_at(text.as_bytes(), 0)
    }
}
