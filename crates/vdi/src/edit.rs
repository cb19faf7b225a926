//! Writing guest data into an existing VDI image in place (`commit`, `convert -n`,
//! `bench -w`) through [`UnitEditor`]: a dynamic image's new blocks go at the end of the
//! data area (data block `blocks_allocated`, as qemu and VirtualBox number them); a
//! static image's blocks are all there already.
//!
//! Order: the block's data is written first; at the end the header's `blocks_allocated`
//! is raised, then the block map entries naming the new blocks are written. A crash
//! before the header write leaves blocks past `blocks_allocated` that nothing names
//! (the next edit reuses their place); a crash between the two leaves blocks counted but
//! not named (`qemu-img check` reports the count, the data is intact). Writing the map
//! first would let a crash leave entries at or past `blocks_allocated`, which the next
//! allocation would hand out a second time.

use crate::header::{BLOCK_FREE, BLOCK_ZERO, RawHeader, TYPE_STATIC};
use crate::reader::{Map, VdiReader};
use diskcast_block::io::ImageFile;
use diskcast_block::unit_edit::{UnitMap, Units, reader_handle, refuse_overlaps, write_entries};
use diskcast_block::{Error, Result};
use diskcast_layout::u64_from_usize;
use std::collections::BTreeSet;

/// Byte offset of `blocks_allocated` in the header, from its declared layout.
const BLOCKS_ALLOCATED_AT: usize = std::mem::offset_of!(RawHeader, blocks_allocated);

/// An existing VDI image's block map, as an edit changes it.
#[derive(Debug)]
pub struct VdiMap {
    units: Units,
    offset_bmap: u64,
    offset_data: u64,
    bmap: Vec<u32>,
    blocks_in_image: u32,
    /// Data blocks stored, as the header will say after the flush.
    allocated: u32,
    /// `allocated` as the header says now.
    allocated_on_disk: u32,
    /// Block map entries changed since the last flush.
    dirty: BTreeSet<usize>,
}

impl VdiMap {
    /// Opens the image in `file` (opened for writing and locked as a writer) for
    /// editing: its header and block map are checked as the reader checks them, and
    /// every entry besides: each must name a stored block inside the file, and no two
    /// the same one (a write to one guest block would change another).
    pub fn open(file: ImageFile) -> Result<Self> {
        let r = VdiReader::open(reader_handle(&file)?)?;
        let h = r.header();
        let mut places = Vec::new();
        for block in 0..u64_from_usize(r.bmap.len()) {
            // Entries past the disk's end are never read or written.
            if block * h.block_size >= h.size() {
                break;
            }
            if let Map::Data(at) = r.map(block)? {
                places.push((at, at + h.block_size));
            }
        }
        refuse_overlaps(&mut places, "data blocks", "block_map")?;
        let map = VdiMap {
            units: Units { file, size: h.size(), unit: h.block_size },
            offset_bmap: h.offset_bmap,
            offset_data: h.offset_data,
            blocks_in_image: h.blocks_in_image,
            allocated: h.blocks_allocated,
            allocated_on_disk: h.blocks_allocated,
            bmap: r.bmap.clone(),
            dirty: BTreeSet::new(),
        };
        if h.image_type == TYPE_STATIC { map.check_static() } else { Ok(map) }
    }

    /// A static image stores every block: one not stored cannot be added to it.
    fn check_static(self) -> Result<Self> {
        match self.bmap.iter().position(|&e| e == BLOCK_FREE || e == BLOCK_ZERO) {
            Some(i) => Err(Error::unsupported(format!(
                "static image whose block map entry {i} names no block; diskcast does not add blocks to a static \
                 VDI"
            ))
            .with_field("block_map")
            .with_offset(self.offset_bmap + u64_from_usize(i) * 4)),
            None => Ok(self),
        }
    }

    fn entry(&self, block: u64) -> Result<usize> {
        self.units.index(block, self.bmap.len()).map_err(|e| e.with_field("block_map"))
    }
}

impl UnitMap for VdiMap {
    fn units(&self) -> &Units {
        &self.units
    }

    fn host(&mut self, block: u64) -> Result<Option<u64>> {
        let e = self.bmap[self.entry(block)?];
        Ok((e != BLOCK_FREE && e != BLOCK_ZERO).then(|| self.offset_data + u64::from(e) * self.units.unit))
    }

    /// Data block `allocated`, zeroed where the file already reaches (space an
    /// interrupted edit left), the file grown to hold it whole.
    fn allocate(&mut self, block: u64) -> Result<u64> {
        let i = self.entry(block)?;
        if self.allocated >= self.blocks_in_image {
            return Err(Error::corrupt(format!(
                "blocks_allocated {} already counts every one of the {} blocks, yet guest block {block} is not \
                 stored; run qemu-img check",
                self.allocated, self.blocks_in_image
            ))
            .with_field("blocks_allocated"));
        }
        let host = self.offset_data + u64::from(self.allocated) * self.units.unit;
        let len = self.units.file.len()?;
        if len > host {
            self.units.file.write_zeroes(host, (len - host).min(self.units.unit))?;
        }
        if len < host + self.units.unit {
            self.units.file.set_len(host + self.units.unit)?;
        }
        self.bmap[i] = self.allocated;
        self.allocated += 1;
        self.dirty.insert(i);
        Ok(host)
    }

    fn has_data(&self) -> bool {
        self.bmap.iter().any(|&e| e != BLOCK_FREE && e != BLOCK_ZERO)
    }

    /// The count first, then the map (see the module documentation).
    fn flush(&mut self) -> Result<()> {
        if self.allocated != self.allocated_on_disk {
            self.units.file.write_all_at(&self.allocated.to_le_bytes(), u64_from_usize(BLOCKS_ALLOCATED_AT))?;
            self.allocated_on_disk = self.allocated;
        }
        let (bmap, base) = (&self.bmap, self.offset_bmap);
        write_entries(&self.units.file, &self.dirty, |i| Ok(base + u64_from_usize(i) * 4), |i| bmap[i].to_le_bytes())?;
        self.dirty.clear();
        Ok(())
    }
}
