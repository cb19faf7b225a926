//! Writing new static and dynamic VDI images.
//!
//! Layout as qemu writes it: the 512-byte header, the block map at 0x200 (padded to whole
//! sectors), then the data blocks of 1 MiB. Dynamic images take blocks in the order
//! writes first touch them: a block index is handed out under a short lock and the data
//! is written outside it, so many threads write at once. Static images map guest block
//! `i` to data block `i` from the start. Parts of a block never written stay holes in the
//! file (they read as zeros), so no zeros are written. `finish` sets the file length,
//! then writes the block map and the header last.

use crate::header::{
    BLOCK_FREE, Geometry, HEADER_SIZE_V1, Header, MAX_BLOCKS, SECTOR, TEXT, TYPE_DYNAMIC, TYPE_STATIC, VERSION_1_1,
};
use diskcast_block::io::ImageFile;
use diskcast_block::provenance::{ContentDigest, Provenance};
use diskcast_block::range_end;
use diskcast_block::registry::CreateOptions;
use diskcast_block::{BlockWrite, Encoded, Error, Result, WriteOrder};
use diskcast_layout::{fit, u64_from_usize, usize_from, usize_from_u64};
use std::sync::Mutex;
use uuid::Uuid;

/// The block size qemu and VirtualBox write (and the only one qemu reads).
pub const BLOCK_SIZE: u64 = 1 << 20;
/// Where the block map starts: right after the 512-byte header, as qemu puts it.
const BMAP_OFFSET: u64 = 0x200;
/// Unit of the copy engine's work: data runs are 4 KiB aligned, so zero 4 KiB pieces
/// inside a block are never written and stay holes in the file.
const GRANULARITY: u64 = 4096;
/// Largest buffer of zeros written at once by `write_zeroes`.
const ZERO_CHUNK: u64 = 1 << 20;

/// Validated creation parameters (shared with `measure`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Guest size, rounded up to whole sectors as qemu does.
    pub size: u64,
    /// `static=on`: every block allocated up front.
    pub is_static: bool,
    /// Where the UUIDs come from (derived when `SOURCE_DATE_EPOCH` is set).
    pub provenance: Provenance,
}

impl Params {
    /// Parses `-o static=on|off` and refuses what VDI cannot hold.
    pub fn from_options(size: u64, opts: &CreateOptions) -> Result<Params> {
        if opts.compress {
            return Err(Error::argument("vdi images cannot be compressed (-c)"));
        }
        if opts.backing_file.is_some() || opts.backing_format.is_some() {
            return Err(Error::argument("vdi images cannot have a backing file (-b)"));
        }
        let is_static = match opts.options.get("static").map(String::as_str) {
            None => false,
            Some("on" | "true" | "yes") => true,
            Some("off" | "false" | "no") => false,
            Some(v) => return Err(Error::argument(format!("static={v}: use on or off"))),
        };
        let size = size
            .checked_next_multiple_of(SECTOR)
            .ok_or_else(|| Error::argument(format!("size {size} is too large for vdi")))?;
        let blocks = size.div_ceil(BLOCK_SIZE);
        if blocks > MAX_BLOCKS {
            return Err(Error::argument(format!(
                "size {size} needs {blocks} blocks of 1 MiB; diskcast writes at most {MAX_BLOCKS} ({} TiB)",
                MAX_BLOCKS >> 20
            )));
        }
        Ok(Params { size, is_static, provenance: opts.provenance })
    }

    /// Guest blocks of the image.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }

    /// File offset of data block 0: after the block map, padded to whole sectors.
    pub fn offset_data(&self) -> u64 {
        BMAP_OFFSET + (self.blocks() * 4).next_multiple_of(SECTOR)
    }
}

/// Allocation state of a dynamic image, under one short lock.
#[derive(Debug)]
struct State {
    /// Block map: data block index per guest block, or [`BLOCK_FREE`].
    bmap: Vec<u32>,
    /// Data blocks handed out so far.
    allocated: u32,
}

/// A VDI image being written.
#[derive(Debug)]
pub struct VdiWriter {
    file: ImageFile,
    p: Params,
    offset_data: u64,
    state: Mutex<State>,
    /// What was written, for the UUIDs of a reproducible image.
    content: ContentDigest,
}

impl VdiWriter {
    /// Prepares a new image in `file` (an empty temporary from `OutputFiles`).
    pub fn new(file: ImageFile, p: Params) -> Result<Self> {
        let blocks = u32::try_from(p.blocks()).map_err(|_| Error::argument("too many blocks"))?;
        let (bmap, allocated) =
            if p.is_static { ((0..blocks).collect(), blocks) } else { (vec![BLOCK_FREE; usize_from(blocks)], 0) };
        Ok(VdiWriter {
            file,
            offset_data: p.offset_data(),
            content: p.provenance.content_digest(),
            p,
            state: Mutex::new(State { bmap, allocated }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// File offsets of the data blocks behind guest blocks `first..last`, allocating
    /// those not yet allocated (in one short critical section).
    fn hosts(&self, first: u64, last: u64) -> Result<Vec<u64>> {
        let mut st = self.lock();
        let mut hosts = Vec::with_capacity(usize_from_u64(last - first, "last  first")?);
        for b in first..last {
            let slot = st
                .bmap
                .get(usize_from_u64(b, "b")?)
                .copied()
                .ok_or_else(|| Error::out_of_bounds("write past the block map").with_offset(b * BLOCK_SIZE))?;
            let idx = if slot == BLOCK_FREE {
                let idx = st.allocated;
                st.allocated += 1;
                if let Some(s) = st.bmap.get_mut(usize_from_u64(b, "b")?) {
                    *s = idx;
                }
                idx
            } else {
                slot
            };
            hosts.push(self.offset_data + u64::from(idx) * BLOCK_SIZE);
        }
        Ok(hosts)
    }

    /// Writes `data` at guest `offset`: one pwrite per run of host-contiguous blocks.
    fn write_plain(&self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.content.add(offset, data);
        let end = range_end(offset, u64_from_usize(data.len()), self.p.size)?;
        let first = offset / BLOCK_SIZE;
        let last = end.div_ceil(BLOCK_SIZE);
        let hosts = self.hosts(first, last)?;
        let mut i = 0;
        while i < hosts.len() {
            let mut j = i + 1;
            while j < hosts.len() && hosts[j] == hosts[j - 1] + BLOCK_SIZE {
                j += 1;
            }
            // Guest range of blocks first+i .. first+j, clipped to the write.
            let g0 = ((first + u64_from_usize(i)) * BLOCK_SIZE).max(offset);
            let g1 = ((first + u64_from_usize(j)) * BLOCK_SIZE).min(end);
            let a = usize_from_u64(g0 - offset, "buffer offset")?;
            let b = usize_from_u64(g1 - offset, "buffer offset")?;
            self.file.write_all_at(&data[a..b], hosts[i] + g0 % BLOCK_SIZE)?;
            i = j;
        }
        Ok(())
    }

    /// The header for the current state.
    fn header(&self, blocks_allocated: u32) -> Result<Header> {
        let too_big = || Error::argument("image too large for a VDI header");
        let shape = format!("vdi {} {}", self.p.size, self.p.is_static);
        let id = |purpose| self.p.provenance.uuid(purpose, shape.as_bytes(), Some(&self.content));
        Ok(Header {
            text: TEXT.to_string(),
            version: VERSION_1_1,
            header_size: HEADER_SIZE_V1,
            image_type: if self.p.is_static { TYPE_STATIC } else { TYPE_DYNAMIC },
            image_flags: 0,
            description: String::new(),
            offset_bmap: BMAP_OFFSET,
            offset_data: self.offset_data,
            legacy: Geometry { cylinders: 0, heads: 0, sectors: 0, sector_size: fit::<u32, u64>(SECTOR, "value")? },
            disk_size: self.p.size,
            block_size: BLOCK_SIZE,
            block_extra: 0,
            blocks_in_image: u32::try_from(self.p.blocks()).map_err(|_| too_big())?,
            blocks_allocated,
            uuid_image: id("vdi.uuid_image"),
            uuid_last_snap: id("vdi.uuid_last_snap"),
            uuid_link: Uuid::nil(),
            uuid_parent: Uuid::nil(),
            lchs: None,
        })
    }
}

impl BlockWrite for VdiWriter {
    fn size(&self) -> u64 {
        self.p.size
    }

    fn granularity(&self) -> u64 {
        GRANULARITY
    }

    /// Dynamic blocks are numbered in the order they arrive: in guest order when the
    /// output must be reproducible.
    fn order(&self) -> WriteOrder {
        if !self.p.is_static && self.p.provenance.is_reproducible() { WriteOrder::Sequential } else { WriteOrder::Any }
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        encoded.for_each_plain("vdi", |offset, data| self.write_plain(offset, data))
    }

    /// Unallocated blocks already read as zeros; allocated ones get zeros written.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = range_end(offset, len, self.p.size)?;
        let mut pos = offset;
        let zeros = vec![0u8; usize_from_u64(ZERO_CHUNK.min(len), "minlen")?];
        while pos < end {
            let block = pos / BLOCK_SIZE;
            let piece_end = ((block + 1) * BLOCK_SIZE).min(end);
            let entry = self.lock().bmap.get(usize_from_u64(block, "block")?).copied().unwrap_or(BLOCK_FREE);
            if entry != BLOCK_FREE {
                let host = self.offset_data + u64::from(entry) * BLOCK_SIZE + pos % BLOCK_SIZE;
                let n = usize_from_u64(piece_end - pos, "piece_end  pos")?;
                self.file.write_all_at(&zeros[..n.min(zeros.len())], host)?;
            }
            pos = piece_end;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let header = self.header(st.allocated)?;
        // Blocks partly written end in holes: the file must still hold every block whole.
        self.file.set_len(self.offset_data + u64::from(st.allocated) * BLOCK_SIZE)?;
        let mut map = vec![0u8; usize_from_u64(self.offset_data - BMAP_OFFSET, "offset_data  _")?];
        for (dst, e) in map.chunks_exact_mut(4).zip(&st.bmap) {
            dst.copy_from_slice(&e.to_le_bytes());
        }
        if !map.is_empty() {
            self.file.write_all_at(&map, BMAP_OFFSET)?;
        }
        // The output layer syncs the file once before renaming it into place.
        self.file.write_all_at(&header.serialize()?, 0)
    }
}
