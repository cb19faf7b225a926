//! Loading and validating everything an open VHDX needs: the headers, the region table,
//! the metadata items and the BAT. Shared by the reader and `check`.

use crate::format::{
    self, BAT_GUID, FILE_PARAMETERS, FILE_SIGNATURE, Geometry, HEADER_OFFSETS, HEADER_SIZE, Header, KIB64,
    LOGICAL_SECTOR_SIZE, LocatorEntry, MAX_BAT_BYTES, MAX_BLOCK_SIZE, MAX_METADATA_ITEM, MAX_VIRTUAL_SIZE,
    METADATA_GUID, MIB, MIN_BLOCK_SIZE, PAGE83_DATA, PARENT_LOCATOR, PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT,
    PAYLOAD_PARTIALLY_PRESENT, PAYLOAD_UNDEFINED, PAYLOAD_UNMAPPED, PAYLOAD_ZERO, PHYSICAL_SECTOR_SIZE,
    REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, Region, SB_PRESENT, STATE_MASK, VIRTUAL_DISK_SIZE, bat_offset,
};
use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result};
use diskcast_layout::{read, u64_from_usize, usize_from, usize_from_u64};
use uuid::Uuid;

/// The smallest file that can hold the fixed 1 MiB header area.
const MIN_FILE_LEN: u64 = MIB;

/// The active header and which slot (0 or 1) it came from.
#[derive(Debug, Clone, Copy)]
pub struct ActiveHeader {
    /// The header with the highest sequence number among the valid ones.
    pub header: Header,
    /// 0 for the header at 64 KiB, 1 for the one at 128 KiB.
    pub slot: usize,
    /// Whether the other header is valid too.
    pub other_valid: bool,
}

/// Checks the file type identifier and picks the active header.
pub fn read_headers(file: &dyn ByteSource) -> Result<ActiveHeader> {
    let file_len = file.len()?;
    let mut sig = [0u8; 8];
    if file_len < 8 {
        return Err(Error::invalid("file is too short to be a VHDX image"));
    }
    file.read_exact_at(&mut sig, 0)?;
    if &sig != FILE_SIGNATURE {
        return Err(Error::invalid("no \"vhdxfile\" signature at offset 0: not a VHDX image").with_field("signature"));
    }
    if file_len < MIN_FILE_LEN {
        return Err(Error::corrupt(format!(
            "file is {file_len} bytes, shorter than the 1 MiB header area every VHDX starts with"
        )));
    }
    let mut found = [None, None];
    for (slot, &off) in HEADER_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; HEADER_SIZE];
        file.read_exact_at(&mut b, off)?;
        found[slot] = Header::parse(&b);
    }
    let (header, slot) = match found {
        [Some(a), Some(b)] if b.sequence_number > a.sequence_number => (b, 1),
        [Some(a), _] => (a, 0),
        [None, Some(b)] => (b, 1),
        [None, None] => {
            return Err(Error::corrupt(
                "both VHDX headers (at 64 KiB and 128 KiB) are invalid: bad signature or CRC-32C",
            )
            .with_field("header")
            .with_offset(HEADER_OFFSETS[0]));
        }
    };
    let hoff = HEADER_OFFSETS.get(slot).copied().unwrap_or(0);
    if header.version != 1 {
        return Err(Error::unsupported(format!("VHDX header version {} (only 1 is defined)", header.version))
            .with_field("version")
            .with_offset(hoff));
    }
    if header.log_version != 0 {
        return Err(Error::unsupported(format!("VHDX log version {} (only 0 is defined)", header.log_version))
            .with_field("log_version")
            .with_offset(hoff));
    }
    Ok(ActiveHeader { header, slot, other_valid: found[1 - slot].is_some() })
}

/// The log region of a header, validated against the file: `None` when it has none.
pub fn log_region(h: &ActiveHeader, file_len: u64) -> Result<Option<(u64, u64)>> {
    let hdr = &h.header;
    if hdr.log_length == 0 {
        return Ok(None);
    }
    let len = u64::from(hdr.log_length);
    let hoff = HEADER_OFFSETS.get(h.slot).copied().unwrap_or(0);
    if len % MIB != 0 {
        return Err(Error::corrupt(format!("log length {len} is not a multiple of 1 MiB"))
            .with_field("log_length")
            .with_offset(hoff));
    }
    if hdr.log_offset < MIB || !hdr.log_offset.is_multiple_of(MIB) {
        return Err(Error::corrupt(format!(
            "log offset {:#x} is not a multiple of 1 MiB past the header area",
            hdr.log_offset
        ))
        .with_field("log_offset")
        .with_offset(hoff));
    }
    if hdr.log_offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::out_of_bounds(format!(
            "log at {:#x} ({len} bytes) runs past the end of the {file_len}-byte file",
            hdr.log_offset
        ))
        .with_field("log_offset")
        .with_offset(hoff));
    }
    Ok(Some((hdr.log_offset, len)))
}

/// Everything read from the metadata region.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Payload block size.
    pub block_size: u64,
    /// Keep blocks allocated (a fixed disk).
    pub leave_blocks_allocated: bool,
    /// A differencing disk.
    pub has_parent: bool,
    /// Guest bytes.
    pub virtual_size: u64,
    /// 512 or 4096.
    pub logical_sector: u64,
    /// 512 or 4096.
    pub physical_sector: u64,
    /// SCSI page 83 identifier.
    pub page83: Option<Uuid>,
    /// The parent locator's key/value pairs.
    pub parent_locator: Option<Vec<LocatorEntry>>,
}

/// A validated image layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Length of the file when loaded.
    pub file_len: u64,
    /// The active header.
    pub active: ActiveHeader,
    /// The region table entries.
    pub regions: Vec<Region>,
    /// The BAT region.
    pub bat_region: Region,
    /// The metadata region.
    pub metadata_region: Region,
    /// The log region, if any.
    pub log: Option<(u64, u64)>,
    /// Metadata items.
    pub meta: Metadata,
    /// Derived geometry.
    pub geo: Geometry,
    /// The BAT.
    pub bat: Vec<u64>,
}

/// How a payload block reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockMap {
    /// Fully stored at this file offset.
    Data(u64),
    /// Reads as zeros, stored in this image.
    Zero,
    /// Not stored, no parent: zeros.
    Unallocated,
    /// Not stored: comes from the parent.
    Backing,
    /// Stored at this file offset for the sectors whose bitmap bit is set; the others
    /// come from the parent. The second value is the sector bitmap block's file offset.
    Partial(u64, u64),
}

impl Layout {
    /// BAT entry `idx`; past the table (never for a validated geometry) reads as not present.
    pub fn bat_entry(&self, idx: u64) -> u64 {
        usize::try_from(idx).ok().and_then(|i| self.bat.get(i)).copied().unwrap_or(PAYLOAD_NOT_PRESENT)
    }

    /// Loads the region table, metadata and BAT after the header (and log) are settled.
    pub fn load(file: &dyn ByteSource, active: ActiveHeader) -> Result<Layout> {
        let file_len = file.len()?;
        let log = log_region(&active, file_len)?;
        let (regions, table_off) = read_region_table(file)?;
        let mut bat_region = None;
        let mut metadata_region = None;
        // Spans that must not overlap: the header area, the log and every region.
        let mut spans: Vec<(u64, u64, String)> = vec![(0, MIB, "header area".into())];
        if let Some((off, len)) = log {
            spans.push((off, off + len, "log".into()));
        }
        for (i, r) in regions.iter().enumerate() {
            let at = table_off + 16 + 32 * u64_from_usize(i);
            let len = u64::from(r.length);
            if r.offset % MIB != 0 || len % MIB != 0 || len == 0 {
                return Err(Error::corrupt(format!(
                    "region {} at {:#x} ({len} bytes) is not aligned to 1 MiB",
                    r.guid, r.offset
                ))
                .with_field("region_entry")
                .with_offset(at));
            }
            let end = r.offset.checked_add(len).filter(|&e| e <= file_len).ok_or_else(|| {
                Error::out_of_bounds(format!(
                    "region {} at {:#x} ({len} bytes) runs past the end of the {file_len}-byte file",
                    r.guid, r.offset
                ))
                .with_field("region_entry")
                .with_offset(at)
            })?;
            if let Some((_, _, name)) = spans.iter().find(|(s, e, _)| r.offset < *e && *s < end) {
                return Err(Error::corrupt(format!(
                    "region {} at {:#x} ({len} bytes) overlaps the {name}",
                    r.guid, r.offset
                ))
                .with_field("region_entry")
                .with_offset(at));
            }
            let slot = if r.guid == BAT_GUID {
                Some((&mut bat_region, "BAT"))
            } else if r.guid == METADATA_GUID {
                Some((&mut metadata_region, "metadata"))
            } else {
                None
            };
            match slot {
                Some((slot, name)) => {
                    if slot.is_some() {
                        return Err(Error::corrupt(format!("region table lists the {name} region twice"))
                            .with_field("region_entry")
                            .with_offset(at));
                    }
                    *slot = Some(*r);
                    spans.push((r.offset, end, format!("{name} region")));
                }
                None if r.required => {
                    return Err(Error::unsupported(format!("unknown required region {}", r.guid))
                        .with_field("region_entry")
                        .with_offset(at));
                }
                None => spans.push((r.offset, end, format!("region {}", r.guid))),
            }
        }
        let bat_region =
            bat_region.ok_or_else(|| Error::corrupt("region table has no BAT region").with_field("region_table"))?;
        let metadata_region = metadata_region
            .ok_or_else(|| Error::corrupt("region table has no metadata region").with_field("region_table"))?;
        let meta = read_metadata(file, &metadata_region)?;
        let geo = Geometry::new(meta.virtual_size, meta.block_size, meta.logical_sector, meta.has_parent)?;
        let bat_bytes = geo.bat_entries.saturating_mul(8);
        if bat_bytes > MAX_BAT_BYTES {
            return Err(Error::unsupported(format!(
                "the BAT would need {bat_bytes} bytes, more than the {MAX_BAT_BYTES} we hold in memory"
            ))
            .with_field("block_size"));
        }
        if bat_bytes > u64::from(bat_region.length) {
            return Err(Error::corrupt(format!(
                "the BAT needs {} entries ({bat_bytes} bytes) but its region holds {} bytes",
                geo.bat_entries, bat_region.length
            ))
            .with_field("bat_region")
            .with_offset(bat_region.offset));
        }
        let mut raw = vec![0u8; usize::try_from(bat_bytes).map_err(|_| Error::unsupported("BAT too large"))?];
        file.read_exact_at(&mut raw, bat_region.offset)?;
        let bat = format::bat_entries(&raw);
        Ok(Layout { file_len, active, regions, bat_region, metadata_region, log, meta, geo, bat })
    }

    /// BAT entries that contradict the file, as (file offset of the entry, message): the
    /// first `limit` of them, and how many there are in all (counting stops at the first
    /// when `limit` is 1, so opening stays cheap).
    pub fn bat_problems(&self, limit: usize) -> (Vec<(u64, String)>, u64) {
        let mut out = Vec::new();
        let mut total = 0u64;
        let g = &self.geo;
        for block in 0..g.data_blocks {
            if limit <= 1 && total >= 1 {
                break;
            }
            let before = out.len();
            let idx = g.payload_index(block);
            let entry = self.bat_entry(idx);
            let at = self.bat_region.offset + idx * 8;
            let state = entry & STATE_MASK;
            match state {
                PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED | PAYLOAD_ZERO | PAYLOAD_UNMAPPED => {}
                PAYLOAD_FULLY_PRESENT | PAYLOAD_PARTIALLY_PRESENT => {
                    let off = bat_offset(entry);
                    let covered = self.block_len(block);
                    if state == PAYLOAD_PARTIALLY_PRESENT && !self.meta.has_parent {
                        out.push((at, format!("block {block} is partially present in an image without a parent")));
                    } else if off < MIB {
                        out.push((at, format!("block {block} points into the header area ({off:#x})")));
                    } else if off.checked_add(covered).is_none_or(|e| e > self.file_len) {
                        out.push((
                            at,
                            format!(
                                "block {block} at {off:#x} ({covered} bytes) lies past the end of the {}-byte file",
                                self.file_len
                            ),
                        ));
                    } else if state == PAYLOAD_PARTIALLY_PRESENT {
                        let sb = self.bat_entry(g.bitmap_index(block));
                        let sb_off = bat_offset(sb);
                        if sb & STATE_MASK != SB_PRESENT {
                            out.push((at, format!("block {block} is partially present but has no sector bitmap")));
                        } else if sb_off < MIB || sb_off.checked_add(MIB).is_none_or(|e| e > self.file_len) {
                            out.push((
                                at,
                                format!("sector bitmap of block {block} at {sb_off:#x} lies outside the file"),
                            ));
                        }
                    }
                }
                s => out.push((at, format!("block {block} has undefined state {s}"))),
            }
            if out.len() > before {
                total += 1;
                if out.len() > limit {
                    out.pop();
                }
            }
        }
        (out, total)
    }

    /// Guest bytes block `block` covers (the last block may be short).
    pub fn block_len(&self, block: u64) -> u64 {
        let start = block.saturating_mul(self.geo.block_size);
        self.geo.virtual_size.saturating_sub(start).min(self.geo.block_size)
    }

    /// How block `block` reads (entries were validated by [`bat_problems`](Self::bat_problems)).
    pub fn block_map(&self, block: u64) -> BlockMap {
        let entry = self.bat_entry(self.geo.payload_index(block));
        let parent = self.meta.has_parent;
        match entry & STATE_MASK {
            PAYLOAD_FULLY_PRESENT => BlockMap::Data(bat_offset(entry)),
            PAYLOAD_PARTIALLY_PRESENT => {
                let sb = self.bat_entry(self.geo.bitmap_index(block));
                BlockMap::Partial(bat_offset(entry), bat_offset(sb))
            }
            PAYLOAD_NOT_PRESENT if parent => BlockMap::Backing,
            PAYLOAD_NOT_PRESENT => BlockMap::Unallocated,
            // ZERO; UNDEFINED and UNMAPPED blocks have no defined content: zeros.
            _ => BlockMap::Zero,
        }
    }

    /// The subformat qemu and Hyper-V would call it.
    pub fn subformat(&self) -> &'static str {
        if self.meta.has_parent {
            "differencing"
        } else if self.meta.leave_blocks_allocated {
            "fixed"
        } else {
            "dynamic"
        }
    }

    /// A parent locator value by key.
    pub fn locator(&self, key: &str) -> Option<&str> {
        self.meta.parent_locator.as_ref()?.iter().find(|e| e.key == key).map(|e| e.value.as_str())
    }
}

/// Reads the first valid region table (the second is the fallback) and its offset.
fn read_region_table(file: &dyn ByteSource) -> Result<(Vec<Region>, u64)> {
    let mut last_err = None;
    for &off in &REGION_TABLE_OFFSETS {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        file.read_exact_at(&mut b, off)?;
        match format::parse_region_table(&b) {
            Ok(Some(r)) => return Ok((r, off)),
            Ok(None) => {}
            Err(e) => last_err = Some(e.with_offset(off)),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        Error::corrupt("both region tables (at 192 KiB and 256 KiB) are invalid: bad signature or CRC-32C")
            .with_field("region_table")
            .with_offset(REGION_TABLE_OFFSETS[0])
    }))
}

fn read_metadata(file: &dyn ByteSource, region: &Region) -> Result<Metadata> {
    let base = region.offset;
    let rlen = u64::from(region.length);
    let mut table = vec![0u8; usize_from_u64(KIB64, "metadata table size")?];
    file.read_exact_at(&mut table, base)?;
    let entries = format::parse_metadata_table(&table).map_err(|e| e.with_offset(base))?;
    let mut items: Vec<(Uuid, Vec<u8>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = base + 32 + 32 * u64_from_usize(i);
        let bad = |m: String| Error::corrupt(m).with_field("metadata_entry").with_offset(at);
        let known = !e.is_user
            && [
                FILE_PARAMETERS,
                VIRTUAL_DISK_SIZE,
                PAGE83_DATA,
                LOGICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR_SIZE,
                PARENT_LOCATOR,
            ]
            .contains(&e.item);
        if !known {
            if e.is_required {
                return Err(Error::unsupported(format!("unknown required metadata item {}", e.item))
                    .with_field("metadata_entry")
                    .with_offset(at));
            }
            continue;
        }
        if items.iter().any(|(g, _)| *g == e.item) {
            return Err(bad(format!("metadata item {} is listed twice", e.item)));
        }
        if e.length > MAX_METADATA_ITEM {
            return Err(bad(format!("metadata item {} is {} bytes, over the 1 MiB limit", e.item, e.length)));
        }
        let off = u64::from(e.offset);
        let len = u64::from(e.length);
        if len == 0 {
            continue;
        }
        if off < KIB64 || off + len > rlen {
            return Err(bad(format!(
                "metadata item {} at {off:#x} ({len} bytes) lies outside the metadata region's data area",
                e.item
            )));
        }
        let mut data = vec![0u8; usize_from(e.length)];
        file.read_exact_at(&mut data, base + off)?;
        items.push((e.item, data));
    }
    let item = |g: Uuid, name: &'static str, min: usize| -> Result<&[u8]> {
        let data = items.iter().find(|(id, _)| *id == g).map(|(_, d)| d.as_slice()).ok_or_else(|| {
            Error::corrupt(format!("required metadata item {name} is missing")).with_field(name).with_offset(base)
        })?;
        if data.len() < min {
            return Err(Error::corrupt(format!("metadata item {name} is {} bytes, expected {min}", data.len()))
                .with_field(name)
                .with_offset(base));
        }
        Ok(data)
    };
    let fp = item(FILE_PARAMETERS, "file_parameters", 8)?;
    let fp = read::<format::RawFileParameters>(fp, 0, "file parameters")?;
    let block_size = u64::from(fp.block_size.get());
    let flags = fp.flags.get();
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::corrupt(format!("block size {block_size} is not a power of two from 1 MiB to 256 MiB"))
            .with_field("block_size")
            .with_offset(base));
    }
    let logical_sector = u64::from(diskcast_layout::le32(
        item(LOGICAL_SECTOR_SIZE, "logical_sector_size", 4)?,
        0,
        "logical sector size",
    )?);
    if logical_sector != 512 && logical_sector != 4096 {
        return Err(Error::corrupt(format!("logical sector size {logical_sector} is neither 512 nor 4096"))
            .with_field("logical_sector_size")
            .with_offset(base));
    }
    let physical_sector = u64::from(diskcast_layout::le32(
        item(PHYSICAL_SECTOR_SIZE, "physical_sector_size", 4)?,
        0,
        "physical sector size",
    )?);
    if physical_sector != 512 && physical_sector != 4096 {
        return Err(Error::corrupt(format!("physical sector size {physical_sector} is neither 512 nor 4096"))
            .with_field("physical_sector_size")
            .with_offset(base));
    }
    let virtual_size = diskcast_layout::le64(item(VIRTUAL_DISK_SIZE, "virtual_disk_size", 8)?, 0, "virtual disk size")?;
    if virtual_size > MAX_VIRTUAL_SIZE || !virtual_size.is_multiple_of(logical_sector) {
        return Err(Error::corrupt(format!(
            "virtual disk size {virtual_size} is over 64 TiB or not a multiple of the {logical_sector}-byte sector"
        ))
        .with_field("virtual_disk_size")
        .with_offset(base));
    }
    let page83 = items
        .iter()
        .find(|(g, _)| *g == PAGE83_DATA)
        .and_then(|(_, d)| d.get(..16)?.try_into().ok())
        .map(uuid::Uuid::from_bytes_le);
    let has_parent = flags & 2 != 0;
    let parent_locator = if has_parent {
        Some(
            format::parse_parent_locator(item(PARENT_LOCATOR, "parent_locator", 20)?)
                .map_err(|e| e.with_offset(base))?,
        )
    } else {
        None
    };
    Ok(Metadata {
        block_size,
        leave_blocks_allocated: flags & 1 != 0,
        has_parent,
        virtual_size,
        logical_sector,
        physical_sector,
        page83,
        parent_locator,
    })
}
