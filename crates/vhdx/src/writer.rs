//! Writing new VHDX images (dynamic or fixed).
//!
//! Layout, as qemu lays it out: the 1 MiB header area (file type identifier, two headers,
//! two region tables), an empty log at 1 MiB, the BAT, the metadata region, then payload
//! blocks in allocation order, each 1 MiB aligned. Data blocks are handed out under a short
//! lock and written outside it; `finish` writes the BAT, the metadata, the region tables
//! and the headers last, so an interrupted write never looks like a valid image.

use crate::format::{
    self, BAT_GUID, FILE_PARAMETERS, FILE_SIGNATURE, Geometry, HEADER_OFFSETS, Header, KIB64, LOGICAL_SECTOR_SIZE,
    MAX_BAT_BYTES, MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, METADATA_GUID, MIB, MIN_BLOCK_SIZE, PAGE83_DATA,
    PAYLOAD_FULLY_PRESENT, PAYLOAD_NOT_PRESENT, PAYLOAD_ZERO, PHYSICAL_SECTOR_SIZE, REGION_TABLE_OFFSETS,
    RawFileIdentifier, RawFileParameters, Region, VIRTUAL_DISK_SIZE,
};
use diskcast_block::io::ImageFile;
use diskcast_block::provenance::{ContentDigest, Provenance};
use diskcast_block::range_end;
use diskcast_block::registry::units_touched;
use diskcast_block::registry::{CreateOptions, Measure};
use diskcast_block::size::parse_size;
use diskcast_block::{BlockWrite, Encoded, Error, Extent, Result, WriteOrder};
use diskcast_layout::{FromZeros, IntoBytes, fit, put, put_le32, put_le64, u64_from_usize, usize_from_u64};
use std::sync::Mutex;
use uuid::Uuid;

/// qemu's default log size.
const DEFAULT_LOG_SIZE: u64 = MIB;
/// Largest log we create (the header's log length is 32 bits).
const MAX_LOG_SIZE: u64 = 1 << 31;

/// Validated creation parameters (shared with `measure`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Guest size, rounded up to the logical sector.
    pub size: u64,
    /// Payload block size.
    pub block_size: u64,
    /// Log size.
    pub log_size: u64,
    /// Every block allocated up front.
    pub fixed: bool,
    /// Dynamic images: blocks without data are marked ZERO instead of NOT_PRESENT.
    pub block_state_zero: bool,
    /// 512 or 4096.
    pub logical_sector: u64,
    /// Where the GUIDs come from (derived when `SOURCE_DATE_EPOCH` is set).
    pub provenance: Provenance,
}

/// qemu's choice of block size for a disk of `size` bytes.
fn default_block_size(size: u64) -> u64 {
    if size > 32 << 40 {
        64 * MIB
    } else if size > 100 << 30 {
        32 * MIB
    } else if size > 1 << 30 {
        16 * MIB
    } else {
        8 * MIB
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(Error::argument(format!("{key}={v}: use on or off"))),
    }
}

impl Params {
    /// Parses and validates `-o` options.
    pub fn from_options(size: u64, opts: &CreateOptions) -> Result<Params> {
        if opts.backing_file.is_some() {
            return Err(Error::unsupported("creating differencing VHDX images is not supported"));
        }
        if opts.compress {
            return Err(Error::unsupported("VHDX has no compression"));
        }
        let o = &opts.options;
        let fixed = match o.get("subformat").map(String::as_str) {
            None | Some("dynamic") => false,
            Some("fixed") => true,
            Some(v) => return Err(Error::argument(format!("subformat={v}: use dynamic or fixed"))),
        };
        let logical_sector = match o.get("logical_sector_size").map(String::as_str) {
            None | Some("512") => 512,
            Some("4096") | Some("4K") | Some("4k") => 4096,
            Some(v) => return Err(Error::argument(format!("logical_sector_size={v}: use 512 or 4096"))),
        };
        let size = size.div_ceil(logical_sector).saturating_mul(logical_sector);
        if size > MAX_VIRTUAL_SIZE {
            return Err(Error::argument(format!("size {size} is over the VHDX limit of 64 TiB")));
        }
        let block_size = match o.get("block_size") {
            None => default_block_size(size),
            Some(v) => match parse_size(v)? {
                0 => default_block_size(size),
                bs if bs.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) => bs,
                _ => return Err(Error::argument(format!("block_size={v}: must be a power of two from 1M to 256M"))),
            },
        };
        let log_size = match o.get("log_size") {
            None => DEFAULT_LOG_SIZE,
            Some(v) => {
                let l = parse_size(v)?;
                if l < MIB || l % MIB != 0 || l > MAX_LOG_SIZE {
                    return Err(Error::argument(format!("log_size={v}: must be a multiple of 1M from 1M to 2G")));
                }
                l
            }
        };
        let block_state_zero = match o.get("block_state_zero") {
            None => false,
            Some(v) => parse_bool("block_state_zero", v)?,
        };
        let geo = Geometry::new(size, block_size, logical_sector, false)?;
        if geo.bat_entries.saturating_mul(8) > MAX_BAT_BYTES {
            return Err(Error::argument(format!(
                "a {size}-byte disk with {block_size}-byte blocks needs a BAT over {MAX_BAT_BYTES} bytes; \
                 use a larger block_size"
            )));
        }
        Ok(Params { size, block_size, log_size, fixed, block_state_zero, logical_sector, provenance: opts.provenance })
    }

    fn geometry(&self) -> Result<Geometry> {
        Geometry::new(self.size, self.block_size, self.logical_sector, false)
    }

    /// Offsets: (log, BAT, BAT length, metadata, first payload block).
    fn offsets(&self) -> Result<(u64, u64, u64, u64, u64)> {
        let geo = self.geometry()?;
        let log = MIB;
        let bat = log + self.log_size;
        let bat_len = (geo.bat_entries * 8).div_ceil(MIB).max(1) * MIB;
        let meta = bat + bat_len;
        Ok((log, bat, bat_len, meta, meta + MIB))
    }
}

/// `measure`: metadata plus the blocks the data touches (every block when fixed).
pub fn measure(p: &Params, data: &[Extent]) -> Result<Measure> {
    let geo = p.geometry()?;
    let (_, _, _, _, data_start) = p.offsets()?;
    let blocks = units_touched(data, p.size, p.block_size);
    let full = data_start + geo.data_blocks * p.block_size;
    let required = if p.fixed { full } else { data_start + blocks * p.block_size };
    Ok(Measure { required, fully_allocated: full })
}

/// Block table and allocation cursor, behind one short lock.
#[derive(Debug)]
struct Alloc {
    /// File offset of each payload block (0: not allocated).
    blocks: Vec<u64>,
    /// Next free 1 MiB-aligned file offset.
    next: u64,
}

/// A VHDX being written.
#[derive(Debug)]
pub struct VhdxWriter {
    file: ImageFile,
    params: Params,
    geo: Geometry,
    alloc: Mutex<Alloc>,
    /// What was written, for the GUIDs of a reproducible image.
    content: ContentDigest,
}

impl VhdxWriter {
    /// Prepares a new image in `file` (already created empty by the output set).
    pub fn new(file: ImageFile, params: Params) -> Result<VhdxWriter> {
        let geo = params.geometry()?;
        let (_, _, _, _, data_start) = params.offsets()?;
        let n = usize::try_from(geo.data_blocks).map_err(|_| Error::argument("too many blocks"))?;
        let mut blocks = vec![0u64; n];
        let mut next = data_start;
        if params.fixed {
            for b in blocks.iter_mut() {
                *b = next;
                next += params.block_size;
            }
        }
        Ok(VhdxWriter {
            file,
            content: params.provenance.content_digest(),
            params,
            geo,
            alloc: Mutex::new(Alloc { blocks, next }),
        })
    }

    /// File offset of payload block `block`, allocating it if needed.
    fn block_offset(&self, block: u64) -> Result<u64> {
        let mut a = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        let next = a.next;
        let slot = a
            .blocks
            .get_mut(usize_from_u64(block, "block index")?)
            .ok_or_else(|| Error::out_of_bounds(format!("write to block {block} past the disk's end")))?;
        if *slot != 0 {
            return Ok(*slot);
        }
        *slot = next;
        a.next = next + self.params.block_size;
        Ok(next)
    }

    fn write_data(&self, data: &[u8], offset: u64) -> Result<()> {
        let len = u64_from_usize(data.len());
        range_end(offset, len, self.params.size)?;
        self.content.add(offset, data);
        let bs = self.params.block_size;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + u64_from_usize(done);
            let in_block = pos % bs;
            let n = usize::try_from(bs - in_block).unwrap_or(usize::MAX).min(data.len() - done);
            let piece = &data[done..done + n];
            // Never allocate a block just to store zeros (fixed blocks are holes until written).
            if !diskcast_block::io::is_zero(piece) {
                let off = self.block_offset(pos / bs)?;
                self.file.write_all_at(piece, off + in_block)?;
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockWrite for VhdxWriter {
    fn size(&self) -> u64 {
        self.params.size
    }

    /// Dynamic blocks are placed in the order they arrive: in guest order when the
    /// output must be reproducible.
    fn order(&self) -> WriteOrder {
        if !self.params.fixed && self.params.provenance.is_reproducible() {
            WriteOrder::Sequential
        } else {
            WriteOrder::Any
        }
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        encoded.for_each_plain("VHDX", |offset, data| self.write_data(data, offset))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        // A new image reads zero everywhere: blocks not allocated are NOT_PRESENT (or ZERO),
        // allocated ones are sparse holes until data lands in them. Nothing to write.
        range_end(offset, len, self.params.size).map(|_| ())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let p = &self.params;
        let geo = &self.geo;
        let (log_off, bat_off, bat_len, meta_off, data_start) = p.offsets()?;
        let alloc = self.alloc.into_inner().unwrap_or_else(|e| e.into_inner());

        // BAT.
        let mut bat = vec![0u8; usize::try_from(geo.bat_entries * 8).map_err(|_| Error::argument("BAT too large"))?];
        for (block, &off) in alloc.blocks.iter().enumerate() {
            let idx = usize_from_u64(geo.payload_index(u64_from_usize(block)), "BAT index")?;
            let entry = if off != 0 {
                off | PAYLOAD_FULLY_PRESENT
            } else if p.block_state_zero {
                PAYLOAD_ZERO
            } else {
                PAYLOAD_NOT_PRESENT
            };
            put_le64(&mut bat, idx * 8, entry, "VHDX BAT entry")?;
        }
        self.file.write_all_at(&bat, bat_off)?;

        // Metadata region: the table, then the items at 64 KiB.
        let shape = format!(
            "vhdx {} {} {} {} {} {}",
            p.size, p.block_size, p.log_size, p.fixed, p.block_state_zero, p.logical_sector
        );
        let id = |purpose| p.provenance.uuid(purpose, shape.as_bytes(), Some(&self.content));
        let page83 = id("vhdx.page83");
        let leave_allocated = u32::from(p.fixed);
        let items: [(Uuid, u32, u32); 5] = [
            (FILE_PARAMETERS, 8, 4),
            (VIRTUAL_DISK_SIZE, 8, 6),
            (PAGE83_DATA, 16, 6),
            (LOGICAL_SECTOR_SIZE, 4, 6),
            (PHYSICAL_SECTOR_SIZE, 4, 6),
        ];
        // The items follow the table at 64 KiB, one after the other.
        let item_start = usize_from_u64(KIB64, "metadata item offset")?;
        let mut entries = Vec::with_capacity(items.len());
        let mut item_off = fit::<u32, u64>(KIB64, "metadata item offset")?;
        for &(id, len, flags) in &items {
            entries.push((id, item_off, len, flags));
            item_off += len;
        }
        let mut meta = format::metadata_table_bytes(&entries, item_start + 64)?;
        let logical = fit::<u32, u64>(p.logical_sector, "logical_sector_size")?;
        let params = RawFileParameters {
            block_size: fit::<u32, u64>(p.block_size, "block_size")?.into(),
            flags: leave_allocated.into(),
        };
        put(&mut meta, item_start, &params, "file parameters")?;
        put_le64(&mut meta, item_start + 8, p.size, "virtual disk size")?;
        put(&mut meta, item_start + 16, &page83.to_bytes_le(), "page 83 data")?;
        put_le32(&mut meta, item_start + 32, logical, "logical sector size")?;
        put_le32(&mut meta, item_start + 36, logical, "physical sector size")?;
        self.file.write_all_at(&meta, meta_off)?;

        // Region tables.
        let regions = [
            Region { guid: BAT_GUID, offset: bat_off, length: fit::<u32, u64>(bat_len, "bat_len")?, required: true },
            Region {
                guid: METADATA_GUID,
                offset: meta_off,
                length: fit::<u32, u64>(MIB, "metadata region length")?,
                required: true,
            },
        ];
        let rt = format::region_table_bytes(&regions)?;
        for off in REGION_TABLE_OFFSETS {
            self.file.write_all_at(&rt, off)?;
        }

        // The file ends after the last block (holes inside), at least after the metadata.
        let end = alloc.next.max(data_start);
        self.file.set_len(end)?;

        // File type identifier, then both headers.
        let mut ident = RawFileIdentifier::new_zeroed();
        ident.signature = *FILE_SIGNATURE;
        // At most 255 units: the string keeps its terminating NUL.
        for (dst, u) in
            ident.creator.iter_mut().zip(concat!("diskcast ", env!("CARGO_PKG_VERSION")).encode_utf16().take(255))
        {
            *dst = u.into();
        }
        self.file.write_all_at(ident.as_bytes(), 0)?;
        let mut h = Header {
            sequence_number: 1,
            file_write_guid: id("vhdx.file_write_guid"),
            data_write_guid: id("vhdx.data_write_guid"),
            log_guid: Uuid::nil(),
            log_version: 0,
            version: 1,
            log_length: fit::<u32, u64>(p.log_size, "log_size")?,
            log_offset: log_off,
        };
        for off in HEADER_OFFSETS {
            self.file.write_all_at(&h.to_bytes()?, off)?;
            h.sequence_number += 1;
        }
        Ok(())
    }
}
