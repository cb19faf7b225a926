//! Reading static and dynamic VDI images: the whole block map is loaded at open (it is
//! at most [`MAX_BLOCKS`](crate::header::MAX_BLOCKS) entries and must lie inside the
//! file), so reads and extent queries need no lock and no I/O but the data itself.

use crate::header::{BLOCK_FREE, BLOCK_ZERO, Header, read_block_map};
use diskcast_block::range_end;
use diskcast_block::runs::{ReadRun, ReadRuns};
use diskcast_block::source::Source;
use diskcast_block::{Alloc, Error, Extent, FormatRead, ImageInfo, MapExtent, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use serde_json::json;
use std::path::Path;

/// What one guest block maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Map {
    /// Never written (`0xffffffff`): reads as zeros, nothing stored.
    Free,
    /// Marked zero (`0xfffffffe`, discarded): reads as zeros.
    Zero,
    /// Stored at this file offset (of the block's first byte).
    Data(u64),
}

/// An open VDI image.
#[derive(Debug)]
pub struct VdiReader {
    file: Source,
    file_len: u64,
    header: Header,
    size: u64,
    pub(crate) bmap: Vec<u32>,
}

impl VdiReader {
    /// Opens the image in `file` for reading.
    pub fn open(file: Source) -> Result<Self> {
        let file_len = file.len()?;
        let header = Header::read(file.as_ref())?;
        header.validate(file_len)?;
        if header.blocks_allocated > header.blocks_in_image {
            return Err(Error::corrupt(format!(
                "blocks_allocated {} is more than the {} blocks in the image",
                header.blocks_allocated, header.blocks_in_image
            ))
            .with_field("blocks_allocated")
            .with_offset(0x184));
        }
        let bmap = read_block_map(file.as_ref(), &header)?;
        let size = header.size();
        Ok(VdiReader { file, file_len, header, size, bmap })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// What guest block `block` maps to, with the entry checked against
    /// `blocks_allocated` and the file's length.
    pub(crate) fn map(&self, block: u64) -> Result<Map> {
        let bs = self.header.block_size;
        let entry_pos = self.header.offset_bmap + block * 4;
        let entry = usize::try_from(block).ok().and_then(|i| self.bmap.get(i)).copied().ok_or_else(|| {
            Error::out_of_bounds(format!("guest block {block} is outside the block map")).with_offset(entry_pos)
        })?;
        match entry {
            BLOCK_FREE => Ok(Map::Free),
            BLOCK_ZERO => Ok(Map::Zero),
            e if e >= self.header.blocks_allocated => Err(Error::corrupt(format!(
                "block map entry {block} names data block {e}, but the image has only {} allocated blocks",
                self.header.blocks_allocated
            ))
            .with_field("block_map")
            .with_offset(entry_pos)),
            e => {
                let host = self.header.offset_data + u64::from(e) * bs;
                // The guest-visible part of the block must be in the file.
                let visible = bs.min(self.size - block * bs);
                if host + visible > self.file_len {
                    return Err(Error::out_of_bounds(format!(
                        "block map entry {block} puts its data at {host:#x}..{:#x}, past the end of the {}-byte file",
                        host + visible,
                        self.file_len
                    ))
                    .with_field("block_map")
                    .with_offset(entry_pos));
                }
                Ok(Map::Data(host))
            }
        }
    }

    /// The extent at `offset` inside allocated blocks: holes in the file there read as
    /// zeros (qemu and our writer leave never-written parts of a block as holes). A run
    /// goes on into the next blocks while they are allocated and the kind stays the same.
    fn data_extent(&self, offset: u64, end: u64) -> Result<Extent> {
        let bs = self.header.block_size;
        let mut pos = offset;
        let mut kind = None;
        while pos < end {
            let block = pos / bs;
            let Map::Data(host) = self.map(block)? else { break };
            let at = host + pos % bs;
            let block_end = ((block + 1) * bs).min(end);
            let (alloc, host_stop) = match self.file.next_data(at)? {
                Some(d) if d <= at => (Alloc::Data, self.file.next_hole(at)?),
                Some(d) => (Alloc::Zero, d),
                None => (Alloc::Zero, u64::MAX),
            };
            if kind.is_some_and(|k| k != alloc) {
                break;
            }
            kind = Some(alloc);
            let stop = pos.saturating_add(host_stop.saturating_sub(at)).clamp(pos + 1, block_end);
            pos = stop;
            if stop < block_end {
                break;
            }
        }
        Ok(Extent { offset, len: pos - offset, alloc: kind.unwrap_or(Alloc::Data) })
    }
}

impl FormatRead for VdiReader {
    fn file_name(&self) -> &Path {
        self.file.name()
    }

    fn virtual_size(&self) -> u64 {
        self.size
    }

    fn read_inner(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = range_end(offset, u64_from_usize(buf.len()), self.size)?;
        let bs = self.header.block_size;
        // Pieces with their data's host offset (`None`: reads as zeros).
        let flush = |ReadRun { offset: g, len, map }: ReadRun<Option<u64>>, buf: &mut [u8]| -> Result<()> {
            let at = usize_from_u64(g - offset, "buffer offset")?;
            let dst = buf
                .get_mut(at..at + usize_from_u64(len, "length")?)
                .ok_or_else(|| Error::corrupt("read run outside buffer"))?;
            match map {
                Some(host) => self.file.read_exact_at(dst, host),
                None => {
                    dst.fill(0);
                    Ok(())
                }
            }
        };
        let joins = |run: &ReadRun<Option<u64>>, map: Option<u64>| match (run.map, map) {
            (Some(h0), Some(h)) => h0 + run.len == h,
            (None, None) => true,
            _ => false,
        };
        // One piece per block: the block map says where each one is.
        let walk = |piece: &mut dyn FnMut(u64, u64, Option<u64>) -> Result<bool>| {
            let mut pos = offset;
            while pos < end {
                let block = pos / bs;
                let piece_end = ((block + 1) * bs).min(end);
                let host = match self.map(block)? {
                    Map::Data(host) => Some(host + pos % bs),
                    Map::Free | Map::Zero => None,
                };
                piece(pos, piece_end - pos, host)?;
                pos = piece_end;
            }
            Ok(())
        };
        ReadRuns::serve(walk, joins, |run| flush(run, buf))
    }

    fn extent_inner(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.size {
            return Err(
                Error::out_of_bounds(format!("extent query past the {}-byte disk", self.size)).with_offset(offset)
            );
        }
        let end = offset.saturating_add(max_len.max(1)).min(self.size);
        let bs = self.header.block_size;
        let class = |m: Map| match m {
            Map::Data(_) => Alloc::Data,
            Map::Zero => Alloc::Zero,
            Map::Free => Alloc::Unallocated,
        };
        let first = offset / bs;
        let m = self.map(first)?;
        if let Map::Data(_) = m {
            return self.data_extent(offset, end);
        }
        let alloc = class(m);
        let mut stop = ((first + 1) * bs).min(end);
        // At most one pass over the block map (bounded by MAX_BLOCKS) per call.
        while stop < end {
            if class(self.map(stop / bs)?) != alloc {
                break;
            }
            stop = (stop + bs).min(end);
        }
        Ok(Extent { offset, len: stop - offset, alloc })
    }

    /// Data at the block's place in the file plus the offset inside it; a run stops
    /// at the end of its block (the next block may lie anywhere).
    fn map_inner(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let bs = self.header.block_size;
        let mut extent = self.extent_inner(offset, max_len)?;
        let host = match (extent.alloc, self.map(offset / bs)) {
            (Alloc::Data, Ok(Map::Data(h))) => {
                extent.len = extent.len.min(bs - offset % bs);
                Some(h + offset % bs)
            }
            _ => None,
        };
        Ok(MapExtent { extent, host, compressed: false })
    }

    fn info_inner(&self) -> ImageInfo {
        let h = &self.header;
        let mut s = serde_json::Map::new();
        s.insert("image-type".into(), h.type_name().into());
        s.insert("version".into(), format!("{}.{}", h.version >> 16, h.version & 0xffff).into());
        s.insert("header-size".into(), h.header_size.into());
        s.insert("block-size".into(), h.block_size.into());
        s.insert("blocks-in-image".into(), h.blocks_in_image.into());
        s.insert("blocks-allocated".into(), h.blocks_allocated.into());
        s.insert("block-map-offset".into(), h.offset_bmap.into());
        s.insert("data-offset".into(), h.offset_data.into());
        s.insert("sector-size".into(), h.legacy.sector_size.into());
        s.insert("uuid".into(), h.uuid_image.to_string().into());
        s.insert("modification-uuid".into(), h.uuid_last_snap.to_string().into());
        let geo = |g: &crate::header::Geometry| json!({ "cylinders": g.cylinders, "heads": g.heads, "sectors": g.sectors, "sector-size": g.sector_size });
        s.insert("legacy-geometry".into(), geo(&h.legacy));
        if let Some(g) = &h.lchs {
            s.insert("lchs-geometry".into(), geo(g));
        }
        s.insert("image-flags".into(), h.image_flags.into());
        if !h.description.is_empty() {
            s.insert("description".into(), h.description.clone().into());
        }
        s.insert("creator-text".into(), h.text.clone().into());
        ImageInfo {
            format: "vdi".into(),
            virtual_size: self.size,
            cluster_size: Some(h.block_size),
            specific: s,
            ..ImageInfo::default()
        }
    }
}
