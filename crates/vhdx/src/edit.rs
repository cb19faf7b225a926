//! Writing guest data into an existing VHDX in place (`commit`, `convert -n`, `bench -w`)
//! through [`UnitEditor`], with the BAT changed only through the log, as the
//! specification requires for every metadata write.
//!
//! A payload block not stored gets a new place at the end of the file (1 MiB aligned,
//! as every VHDX structure is) and its data is written there; nothing names it yet. At
//! the end (and every [`MAX_LOG_SECTORS`] changed BAT sectors) the data is synced, a
//! header with a fresh log GUID (and new file and data write GUIDs, as qemu sets them on
//! the first write) goes into the inactive header slot, one log entry holding the changed
//! BAT sectors is written at the start of the log and synced, and then the entry is
//! applied as a replay applies it: the BAT sectors written in place, synced, and both
//! headers rewritten with no log GUID. A crash before the log entry is complete leaves
//! unnamed blocks (leaked space); after it, the next open replays the entry (qemu does
//! at once; diskcast with `--replay-log`), which writes the same BAT sectors.
//!
//! Refused, each naming why: a pending log (replay it first), differencing images (a
//! partial block would need the parent), images without a log region.

use crate::format::{Header, MIB, PAYLOAD_FULLY_PRESENT, STATE_MASK, bat_offset};
use crate::layout::{ActiveHeader, BlockMap, Layout, read_headers};
use crate::log::{self, Entry, Op, SECTOR};
use diskcast_block::io::ImageFile;
use diskcast_block::unit_edit::{UnitEditor, UnitMap, Units, reader_handle, refuse_overlaps};
use diskcast_block::{BlockWrite, Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::BTreeSet;
use uuid::Uuid;

/// BAT sectors one log entry carries at most: with its descriptor sector, 64 sectors are
/// 260 KiB, inside the 1 MiB log qemu and Hyper-V make (the smallest log is 1 MiB).
const MAX_LOG_SECTORS: usize = 63;

/// The editor for the VHDX in `file` (opened for writing and locked as a writer), taking
/// `size` guest bytes.
pub fn editor(file: ImageFile, size: u64, target_is_zero: bool) -> Result<Box<dyn BlockWrite>> {
    Ok(Box::new(UnitEditor::new(VhdxMap::open(file)?, size, target_is_zero, "vhdx (written in place)")?))
}

/// A VHDX's BAT, as an edit changes it.
#[derive(Debug)]
pub struct VhdxMap {
    units: Units,
    layout: Layout,
    /// The log region: file offset and length.
    log: (u64, u64),
    /// BAT entries changed since the last flush.
    dirty: BTreeSet<usize>,
    /// Where the next new block goes.
    next: u64,
}

impl VhdxMap {
    fn open(file: ImageFile) -> Result<Self> {
        let src = reader_handle(&file)?;
        let active = read_headers(src.as_ref())?;
        if log::active_sequence(src.as_ref(), &active)?.is_some() {
            return Err(Error::refused(
                "the image has a pending log (it was not closed cleanly); replay it first (diskcast info \
                 --replay-log, or qemu-img check -r all), then write into it",
            )
            .with_field("log_guid"));
        }
        let layout = Layout::load(src.as_ref(), active)?;
        if let Some((at, msg)) = layout.bat_problems(1).0.into_iter().next() {
            return Err(Error::corrupt(msg).with_field("bat_entry").with_offset(at));
        }
        if layout.meta.has_parent {
            return Err(Error::unsupported(
                "a differencing VHDX reads its unwritten sectors from its parent; diskcast writes into fixed and \
                 dynamic VHDX images only (commit into the parent, or convert to a new image)",
            )
            .with_field("has_parent"));
        }
        // Payload blocks, the header area, the regions and the log: a guest write into a
        // block that overlaps any other would change it.
        let mut places: Vec<(u64, u64)> = vec![(0, MIB)];
        places.extend(layout.regions.iter().map(|r| (r.offset, r.offset + u64::from(r.length))));
        places.extend(layout.log.map(|(at, len)| (at, at + len)));
        for block in 0..layout.geo.data_blocks {
            if let BlockMap::Data(at) = layout.block_map(block) {
                places.push((at, at + layout.geo.block_size));
            }
        }
        refuse_overlaps(&mut places, "blocks and metadata regions", "bat_entry")?;
        let log = layout.log.ok_or_else(|| {
            Error::unsupported("the image has no log region, through which every BAT change must go")
                .with_field("log_offset")
        })?;
        let next = layout.file_len.next_multiple_of(MIB);
        let units = Units { file, size: layout.geo.virtual_size, unit: layout.geo.block_size };
        Ok(VhdxMap { units, layout, log, dirty: BTreeSet::new(), next })
    }

    /// The BAT index of payload block `block`, checked against the table.
    fn index(&self, block: u64) -> Result<usize> {
        let g = self.layout.geo;
        if block >= g.data_blocks {
            return Err(Error::out_of_bounds(format!("payload block {block} is past the disk's end")));
        }
        self.units.index(g.payload_index(block), self.layout.bat.len())
    }

    /// One log cycle for the BAT sectors `sectors` (file offsets): see the module
    /// documentation.
    fn log_and_apply(&mut self, sectors: &[u64]) -> Result<()> {
        let file = &self.units.file;
        let bat_at = self.layout.bat_region.offset;
        let mut ops = Vec::with_capacity(sectors.len());
        for &at in sectors {
            let mut data = vec![0u8; usize_from_u64(SECTOR, "log sector")?];
            file.read_exact_at(&mut data, at)?;
            let first = (at - bat_at) / 8;
            for (j, slot) in data.chunks_exact_mut(8).enumerate() {
                let i = usize_from_u64(first + u64_from_usize(j), "BAT index")?;
                if let Some(e) = self.layout.bat.get(i) {
                    slot.copy_from_slice(&e.to_le_bytes());
                }
            }
            ops.push(Op::Data { file_offset: at, data });
        }
        // The data the new entries name, on disk before anything names it.
        file.sync()?;
        let old = self.layout.active;
        let guid = Uuid::new_v4();
        let header = Header {
            sequence_number: old.header.sequence_number.checked_add(1).ok_or_else(|| {
                Error::corrupt("header sequence number cannot be incremented").with_field("sequence_number")
            })?,
            file_write_guid: Uuid::new_v4(),
            data_write_guid: Uuid::new_v4(),
            log_guid: guid,
            ..old.header
        };
        let slot = 1 - old.slot;
        file.write_all_at(&header.to_bytes()?, crate::format::HEADER_OFFSETS[slot])?;
        file.sync()?;
        let active = ActiveHeader { header, slot, other_valid: true };
        let len = file.len()?;
        let bytes = log::encode_entry(guid, 1, 0, len, len, &ops)?;
        if u64_from_usize(bytes.len()) > self.log.1 {
            return Err(Error::unsupported(format!(
                "a log entry of {} bytes does not fit the {}-byte log",
                bytes.len(),
                self.log.1
            )));
        }
        file.write_all_at(&bytes, self.log.0)?;
        file.sync()?;
        let entry = Entry {
            pos: 0,
            len: u64_from_usize(bytes.len()),
            seq: 1,
            tail: 0,
            flushed_file_offset: len,
            last_file_offset: len,
            ops,
        };
        log::replay(file, &active, &[entry])?;
        self.layout.active = read_headers(file)?;
        Ok(())
    }
}

impl UnitMap for VhdxMap {
    fn units(&self) -> &Units {
        &self.units
    }

    fn host(&mut self, block: u64) -> Result<Option<u64>> {
        self.index(block)?;
        Ok(match self.layout.block_map(block) {
            BlockMap::Data(at) => Some(at),
            _ => None,
        })
    }

    /// The end of the file, 1 MiB aligned, grown to hold the block whole.
    fn allocate(&mut self, block: u64) -> Result<u64> {
        let i = self.index(block)?;
        let at = self.next;
        let end = at.checked_add(self.units.unit).ok_or_else(|| Error::out_of_bounds("the file would pass 2^64"))?;
        self.units.file.set_len(end)?;
        self.next = end;
        self.layout.bat[i] = at | PAYLOAD_FULLY_PRESENT;
        self.dirty.insert(i);
        Ok(at)
    }

    fn has_data(&self) -> bool {
        self.layout.bat.iter().any(|&e| e & STATE_MASK == PAYLOAD_FULLY_PRESENT && bat_offset(e) != 0)
    }

    /// The changed BAT sectors through the log, at most [`MAX_LOG_SECTORS`] per entry.
    fn flush(&mut self) -> Result<()> {
        let bat_at = self.layout.bat_region.offset;
        let sectors: BTreeSet<u64> =
            self.dirty.iter().map(|&i| bat_at + (u64_from_usize(i) * 8) / SECTOR * SECTOR).collect();
        let sectors: Vec<u64> = sectors.into_iter().collect();
        for chunk in sectors.chunks(MAX_LOG_SECTORS) {
            self.log_and_apply(chunk)?;
        }
        self.dirty.clear();
        Ok(())
    }
}
