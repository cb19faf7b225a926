//! Writing guest data into an existing VHD in place (`commit`, `convert -n`, `bench -w`)
//! through [`UnitEditor`]: a fixed disk is written where its bytes are; a dynamic disk's
//! new block goes where the footer at the end of the file was, as qemu places it.
//!
//! Order for a new block: the footer is first written again past the block's end (a
//! copy of the one at offset 0, which stays), so the file always ends in a footer; then
//! the block's sector bitmap (all sectors present, as qemu writes it) and its data over
//! the old footer; the BAT entries naming the new blocks are written last. A crash before
//! the BAT write leaves blocks nothing names between the data and the footer: leaked
//! space, the guest sees the disk as it was.
//!
//! A block diskcast's writer made may have clear bitmap bits (sectors never written,
//! which read as zeros): before the first write into such a block, those sectors are
//! zeroed and then the bitmap set whole, which changes nothing the guest reads and lets
//! writes anywhere in the block show. Differencing disks are refused: a write into part
//! of one of their blocks would need the parent's data for the rest.

use crate::format::{BAT_UNUSED, FOOTER_SIZE, SECTOR, TYPE_DIFFERENCING, TYPE_FIXED};
use crate::reader::VhdReader;
use diskcast_block::io::ImageFile;
use diskcast_block::unit_edit::{DirectMap, UnitEditor, UnitMap, Units, reader_handle, refuse_overlaps, write_entries};
use diskcast_block::{BlockWrite, Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::BTreeSet;

/// The editor for the VHD in `file` (opened for writing and locked as a writer), taking
/// `size` guest bytes.
pub fn editor(file: ImageFile, size: u64, target_is_zero: bool) -> Result<Box<dyn BlockWrite>> {
    let r = VhdReader::open_file(reader_handle(&file)?)?;
    const FORMAT: &str = "vhd (written in place)";
    match r.footer.disk_type {
        TYPE_FIXED => Ok(Box::new(UnitEditor::new(DirectMap::new(file, 0, r.size)?, size, target_is_zero, FORMAT)?)),
        TYPE_DIFFERENCING => Err(Error::unsupported(
            "a differencing VHD reads its unwritten sectors from its parent; diskcast writes into fixed and dynamic \
             VHDs only (commit into the parent, or convert to a new image)",
        )
        .with_field("disk_type")),
        _ => Ok(Box::new(UnitEditor::new(VhdMap::open(file, &r)?, size, target_is_zero, FORMAT)?)),
    }
}

/// A dynamic VHD's BAT, as an edit changes it.
#[derive(Debug)]
pub struct VhdMap {
    units: Units,
    bitmap_size: u64,
    table_offset: u64,
    bat: Vec<u32>,
    /// BAT entries changed since the last flush.
    dirty: BTreeSet<usize>,
    /// Blocks whose bitmap is known to be whole (checked, or made by this edit).
    whole: BTreeSet<usize>,
    /// Where the next new block goes: past every block and the metadata.
    next: u64,
    /// The footer at offset 0, copied to the end of the file as it grows.
    footer: [u8; 512],
}

impl VhdMap {
    /// The dynamic disk read by `r` (its BAT already checked against the file), with its
    /// blocks checked besides: none may overlap another, the header or the BAT.
    fn open(file: ImageFile, r: &VhdReader) -> Result<Self> {
        let s = r.sparse.as_ref().ok_or_else(|| Error::corrupt("dynamic disk without a header"))?;
        let table = s.header.table_offset;
        let meta_end = (table + u64::from(s.header.max_table_entries) * 4)
            .max(r.footer.data_offset + crate::format::DYN_HEADER_SIZE)
            .next_multiple_of(SECTOR);
        let stride = s.bitmap_size + s.block_size;
        let mut places: Vec<(u64, u64)> = vec![(0, meta_end)];
        places.extend(
            s.bat
                .iter()
                .filter(|&&e| e != BAT_UNUSED)
                .map(|&e| (u64::from(e) * SECTOR, u64::from(e) * SECTOR + stride)),
        );
        refuse_overlaps(&mut places, "blocks and metadata (footer copy, header, BAT)", "bat_entry")?;
        let next = places.iter().map(|p| p.1).max().unwrap_or(meta_end);
        let mut footer = [0u8; 512];
        file.read_exact_at(&mut footer, 0)?;
        Ok(VhdMap {
            units: Units { file, size: r.size, unit: s.block_size },
            bitmap_size: s.bitmap_size,
            table_offset: table,
            bat: s.bat.clone(),
            dirty: BTreeSet::new(),
            whole: BTreeSet::new(),
            next,
            footer,
        })
    }

    fn index(&self, block: u64) -> Result<usize> {
        self.units.index(block, self.bat.len()).map_err(|e| e.with_field("bat_entry"))
    }

    /// Zeroes the sectors whose bitmap bits are clear in the block at `start`, then sets
    /// the whole bitmap (see the module documentation).
    fn make_whole(&self, start: u64) -> Result<()> {
        let mut bitmap = vec![0u8; usize_from_u64(self.bitmap_size, "bitmap size")?];
        self.units.file.read_exact_at(&mut bitmap, start)?;
        let sectors = self.units.unit / SECTOR;
        let clear =
            |n: u64| usize::try_from(n / 8).ok().and_then(|i| bitmap.get(i)).is_none_or(|b| b & (0x80 >> (n % 8)) == 0);
        let mut n = 0;
        let mut changed = false;
        while n < sectors {
            if !clear(n) {
                n += 1;
                continue;
            }
            let first = n;
            while n < sectors && clear(n) {
                n += 1;
            }
            self.units.file.write_zeroes(start + self.bitmap_size + first * SECTOR, (n - first) * SECTOR)?;
            changed = true;
        }
        if changed {
            self.units.file.write_all_at(&vec![0xffu8; bitmap.len()], start)?;
        }
        Ok(())
    }
}

impl UnitMap for VhdMap {
    fn units(&self) -> &Units {
        &self.units
    }

    fn host(&mut self, block: u64) -> Result<Option<u64>> {
        let i = self.index(block)?;
        let e = self.bat[i];
        if e == BAT_UNUSED {
            return Ok(None);
        }
        let start = u64::from(e) * SECTOR;
        if self.whole.insert(i) {
            self.make_whole(start)?;
        }
        Ok(Some(start + self.bitmap_size))
    }

    fn allocate(&mut self, block: u64) -> Result<u64> {
        let i = self.index(block)?;
        let start = self.next;
        let sector = u32::try_from(start / SECTOR).ok().filter(|&s| s != BAT_UNUSED).ok_or_else(|| {
            Error::unsupported(format!("a new block at {start:#x} is past what a 32-bit BAT entry can name"))
        })?;
        let data = start + self.bitmap_size;
        let end = data + self.units.unit;
        let old_len = self.units.file.len()?;
        // The footer first, past the block: the file ends in a footer at every moment.
        if end + FOOTER_SIZE > old_len {
            self.units.file.write_all_at(&self.footer, end)?;
        }
        // The old footer, or what an interrupted edit left, must not show in the data.
        if old_len > data {
            self.units.file.write_zeroes(data, (old_len - data).min(self.units.unit))?;
        }
        self.units.file.write_all_at(&vec![0xffu8; usize_from_u64(self.bitmap_size, "bitmap size")?], start)?;
        self.bat[i] = sector;
        self.dirty.insert(i);
        self.whole.insert(i);
        self.next = end;
        Ok(data)
    }

    fn has_data(&self) -> bool {
        self.bat.iter().any(|&e| e != BAT_UNUSED)
    }

    /// The BAT entries naming the new blocks, after their data.
    fn flush(&mut self) -> Result<()> {
        let (bat, base) = (&self.bat, self.table_offset);
        write_entries(&self.units.file, &self.dirty, |i| Ok(base + u64_from_usize(i) * 4), |i| bat[i].to_be_bytes())?;
        self.dirty.clear();
        Ok(())
    }
}
