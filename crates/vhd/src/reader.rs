//! Reading fixed, dynamic and differencing VHDs.
//!
//! Fixed disks are the guest's bytes followed by the footer. Dynamic and differencing
//! disks map guest blocks through the BAT (read whole at open, after validation); each
//! allocated block starts with a sector bitmap. A clear bit reads as zeros in a dynamic
//! disk and comes from the parent in a differencing disk. Bitmaps are cached in a
//! bounded cache shared by all readers.

use crate::format::{
    BAT_UNUSED, DYN_HEADER_SIZE, DynHeader, FOOTER_SIZE, Footer, Locator, OLD_FOOTER_SIZE, PLAT_MACX, PLAT_W2KU,
    PLAT_W2RU, SECTOR, TYPE_DIFFERENCING, TYPE_DYNAMIC, TYPE_FIXED, fourcc, uuid_text,
};
use diskcast_block::GrowExtent;
use diskcast_block::range_end;
use diskcast_block::read_backing;
use diskcast_block::registry::OpenContext;
use diskcast_block::runs::{ReadRun, ReadRuns};
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Alloc, BlockRead, Error, ErrorKind, Extent, FormatRead, ImageInfo, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Smallest block size: one sector (qemu's lower bound).
pub const MIN_BLOCK_SIZE: u64 = 512;
/// Largest block size we accept. The spec's default is 2 MiB and Hyper-V uses 512 KiB or
/// 2 MiB; 256 MiB keeps one block's bitmap at 64 KiB.
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;
/// Most BAT entries loaded into memory (256 MiB of table): 2040 GiB in 32 KiB blocks.
pub const MAX_BAT_ENTRIES: u64 = 1 << 26;
/// Bytes of sector bitmaps kept in memory.
const BITMAP_CACHE_BYTES: usize = 16 << 20;
/// Largest parent locator we read: a path of 32 Ki UTF-16 units.
const MAX_LOCATOR_BYTES: u32 = 64 << 10;
/// Blocks one `extent_at` call looks at before returning the run found so far; a 1 TiB
/// run of 2 MiB blocks is 512 Ki blocks, so an empty 2 TiB disk maps in a few calls.
const MAX_EXTENT_BLOCKS: u64 = 1 << 20;

/// The sparse part of a dynamic or differencing disk.
#[derive(Debug)]
pub(crate) struct Sparse {
    pub(crate) header: DynHeader,
    /// BAT entries covering the virtual size (sector offsets of block bitmaps).
    pub(crate) bat: Vec<u32>,
    pub(crate) block_size: u64,
    /// Bytes of each block's bitmap, a whole number of sectors.
    pub(crate) bitmap_size: u64,
    cache: Mutex<BitmapCache>,
}

/// Bounded cache of block bitmaps by block index, evicted oldest first.
#[derive(Debug, Default)]
struct BitmapCache {
    maps: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
    bytes: usize,
}

/// What a piece of guest data maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    /// Stored at this file offset.
    Data(u64),
    /// Not stored here: zeros, or the parent's data.
    Absent,
}

/// An open VHD.
#[derive(Debug)]
pub struct VhdReader {
    pub(crate) file: Source,
    pub(crate) footer: Footer,
    /// File offset of the footer that was used.
    pub(crate) footer_at: u64,
    /// The footer is the old 511-byte form.
    pub(crate) old_footer: bool,
    pub(crate) size: u64,
    pub(crate) sparse: Option<Sparse>,
    /// Differencing disks: the parent name that was followed (or would be).
    pub(crate) parent: Option<String>,
    /// Differencing disks: parent names from the locators, most preferred first.
    pub(crate) parent_candidates: Vec<String>,
    pub(crate) backing: Option<Box<dyn BlockRead>>,
}

impl VhdReader {
    /// Opens `path`; a differencing disk's parent goes through `ctx`'s gate. Parent
    /// names are tried in locator preference order; a name whose file does not exist
    /// (an I/O error) falls through to the next one, any other refusal stops.
    pub fn open(file: Source, ctx: &OpenContext<'_>) -> Result<Self> {
        let mut r = Self::open_file(file)?;
        let src = r.file.clone();
        let path = src.name();
        let names = r.parent_candidates.clone();
        let Some(first) = names.first() else { return Ok(r) };
        r.parent = Some(first.clone());
        let mut last_err = None;
        for name in &names {
            match ctx.open_backing(src.as_ref(), name, Some("vhd")) {
                Ok(parent) => {
                    r.check_parent(path, name, parent.as_deref())?;
                    r.parent = Some(name.clone());
                    r.backing = parent;
                    return Ok(r);
                }
                Err(e) if e.kind() == ErrorKind::Io => last_err = Some(e),
                Err(e) if e.kind() == ErrorKind::InvalidFormat => {
                    return Err(Error::corrupt(format!(
                        "parent {name:?} named by the parent locator is not a VHD: {}",
                        e.message()
                    ))
                    .with_field("parent_locator")
                    .with_file(path));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::corrupt("no parent").with_file(path)))
    }

    /// The parent's unique id must be the one this disk was made against.
    fn check_parent(&self, path: &Path, name: &str, parent: Option<&dyn BlockRead>) -> Result<()> {
        let (Some(p), Some(s)) = (parent, &self.sparse) else { return Ok(()) };
        let want = s.header.parent_unique_id;
        let got = p.unique_id();
        if got != Some(want) {
            return Err(Error::corrupt(format!(
                "parent {name:?} has unique id {}, but this disk expects {}",
                got.map_or_else(|| "none".into(), |g| uuid_text(&g)),
                uuid_text(&want)
            ))
            .with_field("parent_unique_id")
            .with_offset(self.footer.data_offset + 40)
            .with_file(path));
        }
        Ok(())
    }

    /// Parses footer, header and BAT (no parent is opened).
    pub(crate) fn open_file(file: Source) -> Result<Self> {
        let path = file.name().to_path_buf();
        Self::parse(file).map_err(|e| e.with_file(path))
    }

    fn parse(file: Source) -> Result<Self> {
        let file_len = file.len()?;
        if file_len < OLD_FOOTER_SIZE {
            return Err(Error::invalid(format!("a {file_len}-byte file is too small for a VHD footer")));
        }
        let mut head = [0u8; 512];
        let head_len = usize_from_u64(file_len.min(FOOTER_SIZE), "footer length")?;
        file.read_exact_at(&mut head[..head_len], 0)?;
        // Dynamic and differencing disks mirror their footer at offset 0. A fixed disk's
        // guest data may start with anything, even a footer (a VHD stored in a VHD): when
        // the head is not a sound dynamic footer, a sound fixed footer at the end wins,
        // and otherwise the head's own error is the one to report.
        let head_footer = (Footer::has_cookie(&head) && head_len == 512).then(|| Footer::parse(&head, 0));
        let (footer, footer_at) = match head_footer {
            Some(Ok(f)) if matches!(f.disk_type, TYPE_DYNAMIC | TYPE_DIFFERENCING) => (f, 0),
            Some(Err(e)) => match Self::tail_footer(file.as_ref(), file_len) {
                Ok(found) => found,
                Err(_) => return Err(e),
            },
            _ => Self::tail_footer(file.as_ref(), file_len)?,
        };
        let size = footer.virtual_size()?;
        let old_footer = footer_at != 0 && file_len - footer_at == OLD_FOOTER_SIZE;
        let mut r = VhdReader {
            file,
            footer,
            footer_at,
            old_footer,
            size,
            sparse: None,
            parent: None,
            parent_candidates: Vec::new(),
            backing: None,
        };
        match r.footer.disk_type {
            TYPE_FIXED => {
                if size > footer_at {
                    return Err(Error::corrupt(format!(
                        "fixed disk of {size} bytes, but the file holds only {footer_at} bytes of data before its footer"
                    ))
                    .with_field("current_size")
                    .with_offset(footer_at + 48));
                }
            }
            TYPE_DYNAMIC | TYPE_DIFFERENCING => {
                r.sparse = Some(r.read_sparse(file_len)?);
                if r.footer.disk_type == TYPE_DIFFERENCING {
                    r.parent_candidates = r.parent_names()?;
                    r.parent = r.parent_candidates.first().cloned();
                }
            }
            t => {
                return Err(Error::unsupported(format!("disk type {t} (known: 2 fixed, 3 dynamic, 4 differencing)"))
                    .with_field("disk_type")
                    .with_offset(footer_at + 60));
            }
        }
        Ok(r)
    }

    /// The footer at the end of the file (512 bytes, or the old 511-byte form).
    fn tail_footer(file: &dyn ByteSource, file_len: u64) -> Result<(Footer, u64)> {
        let mut tail = [0u8; 512];
        let n = file_len.min(512);
        file.read_exact_at(&mut tail[..usize_from_u64(n, "length")?], file_len - n)?;
        let (buf, at): (&[u8], u64) = if n == 512 && Footer::has_cookie(&tail) {
            (&tail, file_len - 512)
        } else if Footer::has_cookie(&tail[1..]) {
            (&tail[1..], file_len - OLD_FOOTER_SIZE)
        } else {
            return Err(Error::invalid("not a VHD: no footer cookie \"conectix\" at the start or end of the file")
                .with_field("cookie"));
        };
        let f = Footer::parse(buf, at)?;
        if f.disk_type != TYPE_FIXED {
            return Err(Error::corrupt(format!(
                "the footer at the end of the file says {} disk, but a {} disk must also have it at offset 0",
                f.type_name(),
                f.type_name()
            ))
            .with_field("disk_type")
            .with_offset(at + 60));
        }
        Ok((f, at))
    }

    fn read_sparse(&self, file_len: u64) -> Result<Sparse> {
        let at = self.footer.data_offset;
        if at.checked_add(DYN_HEADER_SIZE).is_none_or(|end| end > file_len) {
            return Err(Error::out_of_bounds(format!(
                "dynamic disk header at {at:#x} is past the end of the {file_len}-byte file"
            ))
            .with_field("data_offset")
            .with_offset(self.footer_at + 16));
        }
        let mut buf = vec![0u8; size_of::<crate::format::RawDynHeader>()];
        self.file.read_exact_at(&mut buf, at)?;
        let header = DynHeader::parse(&buf, at)?;
        let bs = u64::from(header.block_size);
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(Error::corrupt(format!(
                "block size {bs} is not a power of two from {MIN_BLOCK_SIZE} to {} MiB",
                MAX_BLOCK_SIZE >> 20
            ))
            .with_field("block_size")
            .with_offset(at + 32));
        }
        let bitmap_size = (bs / SECTOR).div_ceil(8).next_multiple_of(SECTOR);
        let entries = u64::from(header.max_table_entries);
        let needed = self.size.div_ceil(bs);
        if entries < needed {
            return Err(Error::corrupt(format!(
                "BAT has {entries} entries of {bs} bytes, too few for the {}-byte disk",
                self.size
            ))
            .with_field("max_table_entries")
            .with_offset(at + 28));
        }
        let table = header.table_offset;
        if table.checked_add(entries * 4).is_none_or(|end| end > file_len) {
            return Err(Error::out_of_bounds(format!(
                "BAT of {entries} entries at {table:#x} runs past the end of the {file_len}-byte file"
            ))
            .with_field("max_table_entries")
            .with_offset(at + 28));
        }
        if entries > MAX_BAT_ENTRIES {
            return Err(Error::unsupported(format!(
                "BAT of {entries} entries is larger than the {MAX_BAT_ENTRIES} we accept"
            ))
            .with_field("max_table_entries")
            .with_offset(at + 28));
        }
        let mut raw = vec![0u8; usize_from_u64(needed * 4, "BAT entries")?];
        self.file.read_exact_at(&mut raw, table)?;
        let bat: Vec<u32> = crate::format::bat_entries(&raw).collect();
        for (i, &e) in bat.iter().enumerate() {
            if e == BAT_UNUSED {
                continue;
            }
            let start = u64::from(e) * SECTOR;
            let end = start + bitmap_size + bs;
            if start == 0 || end > file_len {
                return Err(Error::out_of_bounds(format!(
                    "BAT entry {i} puts block {i} at {start:#x}..{end:#x}, {}",
                    if start == 0 {
                        "over the footer at offset 0".to_string()
                    } else {
                        format!("past the end of the {file_len}-byte file")
                    }
                ))
                .with_field("bat_entry")
                .with_offset(table + u64_from_usize(i) * 4));
            }
        }
        Ok(Sparse { header, bat, block_size: bs, bitmap_size, cache: Mutex::new(BitmapCache::default()) })
    }

    /// Parent file names from the locators, most preferred first: relative Windows path,
    /// absolute Windows path, Mac OS X file URL; the header's parent name (a bare file
    /// name) only when no locator gives one.
    fn parent_names(&self) -> Result<Vec<String>> {
        let Some(s) = &self.sparse else { return Err(Error::corrupt("differencing disk without header")) };
        let mut found: Vec<(usize, usize, String)> = Vec::new();
        for (i, l) in s.header.locators.iter().enumerate() {
            let rank = match l.platform {
                PLAT_W2RU => 0,
                PLAT_W2KU => 1,
                PLAT_MACX => 2,
                _ => continue,
            };
            if l.data_length == 0 {
                continue;
            }
            let name = self.read_locator(l, i)?;
            if !name.is_empty() && !found.iter().any(|(_, _, n)| *n == name) {
                found.push((rank, i, name));
            }
        }
        found.sort();
        let mut names: Vec<String> = found.into_iter().map(|(_, _, n)| n).collect();
        if names.is_empty() && !s.header.parent_name.is_empty() {
            names.push(s.header.parent_name.clone());
        }
        if names.is_empty() {
            return Err(Error::corrupt(
                "differencing disk names no parent (no usable parent locator and no parent name)",
            )
            .with_field("parent_locator")
            .with_offset(self.footer.data_offset + 576));
        }
        Ok(names)
    }

    fn read_locator(&self, l: &Locator, i: usize) -> Result<String> {
        let entry_at = self.footer.data_offset + 576 + u64_from_usize(i) * 24;
        if l.data_length > MAX_LOCATOR_BYTES {
            return Err(Error::corrupt(format!("parent locator {i} is {} bytes long", l.data_length))
                .with_field("parent_locator.data_length")
                .with_offset(entry_at + 8));
        }
        let len = u64::from(l.data_length);
        let file_len = self.file.len()?;
        if l.data_offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(Error::out_of_bounds(format!(
                "parent locator {i} at {:#x} runs past the end of the {file_len}-byte file",
                l.data_offset
            ))
            .with_field("parent_locator.data_offset")
            .with_offset(entry_at + 16));
        }
        let mut buf = vec![0u8; usize_from_u64(len, "length")?];
        self.file.read_exact_at(&mut buf, l.data_offset)?;
        let bad = || {
            Error::corrupt(format!("parent locator {i} is not valid text"))
                .with_field("parent_locator")
                .with_offset(l.data_offset)
        };
        let text = if l.platform == PLAT_MACX {
            let s = String::from_utf8(buf).map_err(|_| bad())?;
            let s = s.trim_end_matches('\0');
            let path = s.strip_prefix("file://").unwrap_or(s);
            let path = path.strip_prefix("localhost").unwrap_or(path);
            path.to_string()
        } else {
            let units: Vec<u16> = buf.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            let s = String::from_utf16(&units).map_err(|_| bad())?;
            s.trim_end_matches('\0').replace('\\', "/")
        };
        Ok(text)
    }

    /// The parsed footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    fn bitmap(&self, s: &Sparse, block: u64, entry: u32) -> Result<Arc<[u8]>> {
        if let Some(b) = lock(&s.cache).maps.get(&block) {
            return Ok(b.clone());
        }
        let mut buf = vec![0u8; usize_from_u64(s.bitmap_size, "sector bitmap size")?];
        self.file.read_exact_at(&mut buf, u64::from(entry) * SECTOR)?;
        let map: Arc<[u8]> = buf.into();
        let mut c = lock(&s.cache);
        if !c.maps.contains_key(&block) {
            while c.bytes + map.len() > BITMAP_CACHE_BYTES {
                let Some(old) = c.order.pop_front() else { break };
                if let Some(m) = c.maps.remove(&old) {
                    c.bytes -= m.len();
                }
            }
            c.bytes += map.len();
            c.maps.insert(block, map.clone());
            c.order.push_back(block);
        }
        Ok(map)
    }

    /// Calls `f(guest_offset, len, map)` for consecutive pieces covering `[off, end)` of a
    /// sparse disk, until `f` returns false. Unallocated blocks come one per call; inside
    /// allocated blocks, pieces follow the bitmap's runs.
    fn walk(&self, s: &Sparse, off: u64, end: u64, mut f: impl FnMut(u64, u64, Map) -> Result<bool>) -> Result<()> {
        let bs = s.block_size;
        let mut pos = off;
        while pos < end {
            let block = pos / bs;
            let block_start = block * bs;
            let block_end = (block_start + bs).min(end);
            let entry = usize::try_from(block).ok().and_then(|i| s.bat.get(i)).copied().unwrap_or(BAT_UNUSED);
            if entry == BAT_UNUSED {
                if !f(pos, block_end - pos, Map::Absent)? {
                    return Ok(());
                }
                pos = block_end;
                continue;
            }
            let data_start = u64::from(entry) * SECTOR + s.bitmap_size;
            let bitmap = self.bitmap(s, block, entry)?;
            while pos < block_end {
                let sector = (pos - block_start) / SECTOR;
                let set = bit(&bitmap, sector);
                let last_sector = (block_end - block_start).div_ceil(SECTOR);
                let mut n = sector + 1;
                while n < last_sector {
                    // Whole bytes of equal bits at once.
                    if n.is_multiple_of(8) && n + 8 <= last_sector {
                        let byte = bitmap.get(usize_from_u64(n / 8, "length")?).copied().unwrap_or(0);
                        if byte == if set { 0xff } else { 0 } {
                            n += 8;
                            continue;
                        }
                    }
                    if bit(&bitmap, n) != set {
                        break;
                    }
                    n += 1;
                }
                let piece_end = (block_start + n * SECTOR).min(block_end);
                let map = if set { Map::Data(data_start + (pos - block_start)) } else { Map::Absent };
                if !f(pos, piece_end - pos, map)? {
                    return Ok(());
                }
                pos = piece_end;
            }
        }
        Ok(())
    }
}

impl FormatRead for VhdReader {
    fn file_name(&self) -> &Path {
        self.file.name()
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn backing_image(&self) -> Option<&dyn BlockRead> {
        self.backing.as_deref()
    }

    fn image_id(&self) -> Option<[u8; 16]> {
        Some(self.footer.unique_id)
    }

    fn read_inner(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = range_end(offset, u64_from_usize(buf.len()), self.size)?;
        let Some(s) = &self.sparse else {
            return self.file.read_exact_at(buf, offset);
        };
        let flush = |ReadRun { offset: g, len, map }: ReadRun<Map>, buf: &mut [u8]| -> Result<()> {
            let at = usize_from_u64(g - offset, "buffer offset")?;
            let dst = &mut buf[at..at + usize_from_u64(len, "length")?];
            match map {
                Map::Data(host) => self.file.read_exact_at(dst, host),
                Map::Absent => read_backing(self.backing.as_deref(), dst, g),
            }
        };
        let joins = |run: &ReadRun<Map>, map: Map| match (run.map, map) {
            (Map::Data(h0), Map::Data(h)) => h0 + run.len == h,
            (Map::Absent, Map::Absent) => true,
            _ => false,
        };
        ReadRuns::serve(|piece| self.walk(s, offset, end, piece), joins, |run| flush(run, buf))
    }

    fn extent_inner(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.size;
        if offset >= size {
            return Err(Error::out_of_bounds(format!("extent query past the {size}-byte disk")).with_offset(offset));
        }
        let end = offset.saturating_add(max_len.max(1)).min(size);
        let Some(s) = &self.sparse else {
            // Fixed: holes in the file read as zeros.
            let (alloc, stop) = match self.file.next_data(offset)? {
                Some(d) if d <= offset => (Alloc::Data, self.file.next_hole(offset)?),
                Some(d) => (Alloc::Unallocated, d),
                None => (Alloc::Unallocated, end),
            };
            let stop = stop.clamp(offset + 1, end);
            return Ok(Extent { offset, len: stop - offset, alloc });
        };
        let absent = if self.backing.is_some() { Alloc::Backing } else { Alloc::Unallocated };
        let mut ext = GrowExtent::new(offset);
        let mut blocks_seen = 0u64;
        let mut last_block = u64::MAX;
        self.walk(s, offset, end, |g, len, map| {
            let block = g / s.block_size;
            if block != last_block {
                last_block = block;
                blocks_seen += 1;
                if blocks_seen > MAX_EXTENT_BLOCKS {
                    return Ok(false);
                }
            }
            Ok(ext.push(len, if let Map::Data(_) = map { Alloc::Data } else { absent }))
        })?;
        ext.finish(self.backing.as_deref())
    }

    fn info_inner(&self) -> ImageInfo {
        let f = &self.footer;
        let mut m = serde_json::Map::new();
        m.insert("subformat".into(), f.type_name().into());
        m.insert("geometry".into(), format!("{}/{}/{}", f.cylinders, f.heads, f.sectors_per_track).into());
        m.insert("cylinders".into(), f.cylinders.into());
        m.insert("heads".into(), f.heads.into());
        m.insert("sectors-per-track".into(), f.sectors_per_track.into());
        m.insert("size-from".into(), (if f.size_from_current_size() { "current_size" } else { "geometry" }).into());
        m.insert("current-size".into(), f.current_size.into());
        m.insert("original-size".into(), f.original_size.into());
        m.insert("creator-app".into(), fourcc(&f.creator_app).into());
        m.insert(
            "creator-version".into(),
            format!("{}.{}", f.creator_version >> 16, f.creator_version & 0xffff).into(),
        );
        m.insert("creator-os".into(), fourcc(&f.creator_os).into());
        m.insert("uuid".into(), uuid_text(&f.unique_id).into());
        m.insert("saved-state".into(), (f.saved_state != 0).into());
        if self.old_footer {
            m.insert("old-511-byte-footer".into(), true.into());
        }
        let mut cluster_size = None;
        if let Some(s) = &self.sparse {
            cluster_size = Some(s.block_size);
            m.insert("block-size".into(), s.block_size.into());
            m.insert("max-table-entries".into(), s.header.max_table_entries.into());
            let allocated = s.bat.iter().filter(|&&e| e != BAT_UNUSED).count();
            m.insert("allocated-blocks".into(), allocated.into());
            if f.disk_type == TYPE_DIFFERENCING {
                m.insert("parent-uuid".into(), uuid_text(&s.header.parent_unique_id).into());
                m.insert("parent-name".into(), s.header.parent_name.clone().into());
            }
        }
        ImageInfo {
            format: "vhd".into(),
            virtual_size: self.size,
            cluster_size,
            compression: None,
            backing_file: self.parent.clone(),
            backing_format: self.parent.as_ref().map(|_| "vhd".into()),
            specific: m,
            ..ImageInfo::default()
        }
    }
}

/// Bit `n` of a VHD sector bitmap (most significant bit first).
fn bit(bitmap: &[u8], n: u64) -> bool {
    usize::try_from(n / 8).ok().and_then(|i| bitmap.get(i)).is_some_and(|b| b & (0x80 >> (n % 8)) != 0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
