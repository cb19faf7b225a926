//! Writing new fixed and dynamic VHDs.
//!
//! Dynamic layout: footer copy (offset 0), dynamic header (512), BAT (1536), then blocks
//! in allocation order, each a sector bitmap followed by its data, the data aligned to
//! 4 KiB so that blocks never share a page. The footer follows the last block. Blocks
//! are handed out under a short lock while many threads write data outside it; the
//! bitmaps (a bit per sector actually written), the BAT, the header and both footers are
//! written by `finish`.
//!
//! Fixed layout: the guest's bytes (never-written ranges stay holes) and the footer.

use crate::format::{
    BAT_UNUSED, DYN_HEADER_SIZE, DynHeader, FOOTER_SIZE, Footer, MAX_GEOMETRY_SECTORS, MAX_SECTORS, SECTOR,
    TYPE_DYNAMIC, TYPE_FIXED, VHD_EPOCH, geometry_product, rounded_geometry,
};
use diskcast_block::io::ImageFile;
use diskcast_block::provenance::{ContentDigest, Provenance};
use diskcast_block::range_end;
use diskcast_block::registry::CreateOptions;
use diskcast_block::size::parse_size;
use diskcast_block::{BlockWrite, Encoded, Error, Result, WriteOrder};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::sync::Mutex;

/// Block size of the dynamic disks we write: the spec's and qemu's default.
pub const BLOCK_SIZE: u64 = 2 << 20;
/// Where the dynamic header goes.
pub const DYN_HEADER_AT: u64 = 512;
/// Where the BAT goes.
pub const BAT_AT: u64 = DYN_HEADER_AT + DYN_HEADER_SIZE;
/// Block data starts on this alignment (the bitmap sits just before it).
pub const DATA_ALIGN: u64 = 4096;

/// Fixed or dynamic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subformat {
    /// Data in place, footer at the end.
    Fixed,
    /// Sparse blocks through a BAT.
    Dynamic,
}

/// Validated creation parameters (shared with `measure`).
#[derive(Debug, Clone)]
pub struct Params {
    /// Guest size written to the footer and seen by readers.
    pub size: u64,
    /// Fixed or dynamic.
    pub subformat: Subformat,
    /// `force_size=on`: keep the size exactly, current_size is authoritative.
    pub force_size: bool,
    /// CHS geometry written to the footer.
    pub geometry: (u16, u8, u8),
    /// The clock and unique-id source for the footer.
    pub provenance: Provenance,
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(Error::argument(format!("{key}={v}: use on or off"))),
    }
}

impl Params {
    /// Parses `-o subformat=, force_size=, round_size=` for a disk of `size` bytes.
    ///
    /// The size is rounded up to whole sectors, then to `round_size`. Without
    /// `force_size` it is rounded up again to what a CHS geometry describes, as qemu-img
    /// does (past 127 GiB the geometry is the maximum and the size stays exact).
    pub fn from_options(size: u64, opts: &CreateOptions) -> Result<Params> {
        let o = &opts.options;
        if opts.compress {
            return Err(Error::argument("VHD images cannot be compressed (-c)"));
        }
        if opts.backing_file.is_some() || opts.backing_format.is_some() {
            return Err(Error::unsupported(
                "creating differencing VHDs (-b) is not supported (qemu-img cannot either)",
            ));
        }
        let subformat = match o.get("subformat").map(String::as_str) {
            None | Some("dynamic") => Subformat::Dynamic,
            Some("fixed") => Subformat::Fixed,
            Some(v) => return Err(Error::argument(format!("subformat={v}: use dynamic or fixed"))),
        };
        let force_size = match o.get("force_size") {
            None => false,
            Some(v) => parse_bool("force_size", v)?,
        };
        let round = match o.get("round_size") {
            None => SECTOR,
            Some(v) => {
                let r = parse_size(v)?;
                if r == 0 || !r.is_multiple_of(SECTOR) {
                    return Err(Error::argument(format!(
                        "round_size={v}: must be a positive multiple of 512 bytes (e.g. 1M)"
                    )));
                }
                r
            }
        };
        let too_big = || {
            Error::argument(format!(
                "a {size}-byte disk is larger than VHD allows: the largest is 2040 GiB ({} bytes)",
                MAX_SECTORS * SECTOR
            ))
        };
        let round_up = |v: u64| v.checked_next_multiple_of(round).filter(|&v| v <= MAX_SECTORS * SECTOR);
        let mut want = round_up(size.checked_next_multiple_of(SECTOR).ok_or_else(too_big)?).ok_or_else(too_big)?;
        let (geometry, size) = if force_size {
            // As qemu does: the maximum geometry tells every reader to use current_size.
            ((65535, 16, 255), want)
        } else {
            // The smallest CHS-exact size that is also a multiple of `round`; each step
            // grows the size, and past the largest geometry sizes are exact.
            let mut steps = 0;
            loop {
                let (geo, got) = rounded_geometry(want);
                if got.is_multiple_of(round) || geometry_product(geo) == MAX_GEOMETRY_SECTORS {
                    break (geo, got);
                }
                want = round_up(got).ok_or_else(too_big)?;
                steps += 1;
                if steps > 100_000 {
                    return Err(Error::argument(format!(
                        "no CHS geometry near {size} bytes is a multiple of round_size; add force_size=on"
                    )));
                }
            }
        };
        if size > MAX_SECTORS * SECTOR {
            return Err(too_big());
        }
        Ok(Params { size, subformat, force_size, geometry, provenance: opts.provenance })
    }

    /// BAT entries of a dynamic disk.
    pub fn bat_entries(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE)
    }

    /// First byte after the BAT (sector aligned).
    pub fn bat_end(&self) -> u64 {
        BAT_AT + (self.bat_entries() * 4).next_multiple_of(SECTOR)
    }

    /// Bytes of each block's sector bitmap.
    pub fn bitmap_size() -> u64 {
        (BLOCK_SIZE / SECTOR).div_ceil(8).next_multiple_of(SECTOR)
    }

    /// File offset of the first block's data.
    pub fn first_data(&self) -> u64 {
        (self.bat_end() + Self::bitmap_size()).next_multiple_of(DATA_ALIGN)
    }

    /// Distance between the data of consecutive blocks.
    pub fn stride() -> u64 {
        BLOCK_SIZE + Self::bitmap_size().next_multiple_of(DATA_ALIGN)
    }

    /// Length of a dynamic file holding `blocks` allocated blocks.
    pub fn dynamic_file_len(&self, blocks: u64) -> u64 {
        if blocks == 0 {
            self.bat_end() + FOOTER_SIZE
        } else {
            self.first_data() + (blocks - 1) * Self::stride() + BLOCK_SIZE + FOOTER_SIZE
        }
    }

    /// The footer of the new image; its unique id derives from `content` when the output
    /// must be reproducible.
    pub fn footer(&self, content: &ContentDigest) -> Footer {
        let now = self.provenance.now();
        let shape = format!("vhd {:?} {} {}", self.subformat, self.size, self.force_size);
        Footer {
            features: 2,
            format_version: 0x0001_0000,
            data_offset: match self.subformat {
                Subformat::Fixed => u64::MAX,
                Subformat::Dynamic => DYN_HEADER_AT,
            },
            timestamp: u32::try_from(now.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX),
            // The codes qemu-img writes, so that every reader that knows qemu's images
            // sizes ours the same way: "qem2" says current_size is authoritative.
            creator_app: if self.force_size { *b"qem2" } else { *b"qemu" },
            creator_version: 0x0005_0003,
            creator_os: *b"Wi2k",
            original_size: self.size,
            current_size: self.size,
            cylinders: self.geometry.0,
            heads: self.geometry.1,
            sectors_per_track: self.geometry.2,
            disk_type: match self.subformat {
                Subformat::Fixed => TYPE_FIXED,
                Subformat::Dynamic => TYPE_DYNAMIC,
            },
            checksum: 0,
            unique_id: *self.provenance.uuid("vhd.unique_id", shape.as_bytes(), Some(content)).as_bytes(),
            saved_state: 0,
        }
    }
}

/// Allocation state of a dynamic disk, under one short lock.
#[derive(Debug)]
struct State {
    /// Data offset of each block (0: not allocated).
    data_at: Vec<u64>,
    /// Sector bitmap of each allocated block.
    bitmaps: Vec<Option<Box<[u8]>>>,
    /// Data offset of the next block to allocate.
    next_data: u64,
    /// Blocks allocated so far.
    blocks: u64,
}

/// A VHD being written.
#[derive(Debug)]
pub struct VhdWriter {
    file: ImageFile,
    p: Params,
    state: Mutex<State>,
    /// What was written, for the unique id of a reproducible image.
    content: ContentDigest,
}

impl VhdWriter {
    /// Prepares a new image in `file` (an empty temporary from `OutputFiles`).
    pub fn new(file: ImageFile, p: Params) -> Result<Self> {
        let blocks = usize::try_from(p.bat_entries()).map_err(|_| Error::argument("disk too large"))?;
        let state = match p.subformat {
            Subformat::Fixed => {
                file.set_len(p.size + FOOTER_SIZE)?;
                State { data_at: Vec::new(), bitmaps: Vec::new(), next_data: 0, blocks: 0 }
            }
            Subformat::Dynamic => {
                State { data_at: vec![0; blocks], bitmaps: vec![None; blocks], next_data: p.first_data(), blocks: 0 }
            }
        };
        Ok(VhdWriter { file, content: p.provenance.content_digest(), p, state: Mutex::new(state) })
    }

    /// Host offsets for `[offset, offset+len)`: allocates blocks and marks (or, for
    /// zeroes, clears) the sectors in their bitmaps. Returns (guest, host, len) pieces;
    /// with `alloc` false, unallocated blocks are skipped.
    fn map(&self, offset: u64, len: u64, alloc: bool) -> Result<Vec<(u64, u64, u64)>> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let mut pieces = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let block = pos / BLOCK_SIZE;
            let block_start = block * BLOCK_SIZE;
            let piece_end = (block_start + BLOCK_SIZE).min(end);
            let b = usize::try_from(block).map_err(|_| Error::argument("offset too large"))?;
            if st.data_at.get(b).copied().unwrap_or(0) == 0 {
                if !alloc {
                    pos = piece_end;
                    continue;
                }
                let data = st.next_data;
                let bitmap_sector = (data - Params::bitmap_size()) / SECTOR;
                if u32::try_from(bitmap_sector).is_err() || bitmap_sector == u64::from(BAT_UNUSED) {
                    return Err(Error::argument("image file would grow past the 2 TiB a VHD BAT can address"));
                }
                st.next_data += Params::stride();
                st.blocks += 1;
                if let (Some(d), Some(m)) = (st.data_at.get_mut(b), st.bitmaps.get_mut(b)) {
                    *d = data;
                    *m = Some(
                        vec![0u8; usize_from_u64(Params::bitmap_size(), "sector bitmap size")?].into_boxed_slice(),
                    );
                }
            }
            let host = st.data_at.get(b).copied().unwrap_or(0) + (pos - block_start);
            let (first, last) = if alloc {
                ((pos - block_start) / SECTOR, (piece_end - block_start).div_ceil(SECTOR))
            } else {
                // Only whole sectors become zero in the bitmap; partial ones stay set.
                ((pos - block_start).div_ceil(SECTOR), (piece_end - block_start) / SECTOR)
            };
            if let Some(Some(m)) = st.bitmaps.get_mut(b) {
                for s in first..last {
                    let byte = usize_from_u64(s / 8, "sector bitmap byte")?;
                    let mask = 0x80u8 >> (s % 8);
                    if let Some(x) = m.get_mut(byte) {
                        if alloc { *x |= mask } else { *x &= !mask }
                    }
                }
            }
            pieces.push((pos, host, piece_end - pos));
            pos = piece_end;
        }
        Ok(pieces)
    }

    fn write_data(&self, offset: u64, data: &[u8]) -> Result<()> {
        range_end(offset, u64_from_usize(data.len()), self.p.size)?;
        if data.is_empty() {
            return Ok(());
        }
        self.content.add(offset, data);
        if self.p.subformat == Subformat::Fixed {
            return self.file.write_all_at(data, offset);
        }
        for (g, host, len) in self.map(offset, u64_from_usize(data.len()), true)? {
            let at = usize_from_u64(g - offset, "buffer offset")?;
            self.file.write_all_at(&data[at..at + usize_from_u64(len, "length")?], host)?;
        }
        Ok(())
    }

    fn zero_file(&self, host: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; usize_from_u64(len.min(1 << 20), "length")?];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(u64_from_usize(zeros.len()));
            self.file.write_all_at(&zeros[..usize_from_u64(n, "length")?], host + done)?;
            done += n;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlockWrite for VhdWriter {
    fn size(&self) -> u64 {
        self.p.size
    }

    /// Dynamic blocks are placed in the order they arrive: in guest order when the
    /// output must be reproducible.
    fn order(&self) -> WriteOrder {
        if self.p.subformat == Subformat::Dynamic && self.p.provenance.is_reproducible() {
            WriteOrder::Sequential
        } else {
            WriteOrder::Any
        }
    }

    fn granularity(&self) -> u64 {
        // Sector bitmaps let a block hold data in some 4 KiB units only.
        4096
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        encoded.for_each_plain("VHD", |offset, data| self.write_data(offset, data))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        range_end(offset, len, self.p.size)?;
        if self.p.subformat == Subformat::Fixed {
            return self.zero_file(offset, len);
        }
        // Unallocated blocks already read as zeros; in allocated ones the bitmap bits are
        // cleared and the bytes zeroed too (qemu reads allocated blocks without the bitmap).
        for (_, host, n) in self.map(offset, len, false)? {
            self.zero_file(host, n)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let footer = self.p.footer(&self.content).to_bytes();
        if self.p.subformat == Subformat::Fixed {
            return self.file.write_all_at(&footer, self.p.size);
        }
        let st = lock(&self.state);
        let bat_len = self.p.bat_end() - BAT_AT;
        let mut bat = vec![0xffu8; usize_from_u64(bat_len, "BAT size")?];
        let bitmap_size = Params::bitmap_size();
        let mut end = self.p.bat_end();
        for (i, (&data, map)) in st.data_at.iter().zip(&st.bitmaps).enumerate() {
            if data == 0 {
                continue;
            }
            let bitmap_at = data - bitmap_size;
            let sector = u32::try_from(bitmap_at / SECTOR)
                .map_err(|_| Error::argument("image file grew past the 2 TiB a VHD BAT can address"))?;
            diskcast_layout::put_be32(&mut bat, i * 4, sector, "VHD BAT entry")?;
            if let Some(m) = map {
                self.file.write_all_at(m, bitmap_at)?;
            }
            end = end.max(data + BLOCK_SIZE);
        }
        let entries = u32::try_from(self.p.bat_entries()).map_err(|_| Error::argument("disk too large"))?;
        self.file.write_all_at(&bat, BAT_AT)?;
        let block_size = u32::try_from(BLOCK_SIZE).unwrap_or(u32::MAX);
        self.file.write_all_at(&DynHeader::new_bytes(BAT_AT, entries, block_size), DYN_HEADER_AT)?;
        self.file.write_all_at(&footer, 0)?;
        self.file.write_all_at(&footer, end)?;
        self.file.set_len(end + FOOTER_SIZE)
    }
}
