//! Writing guest data into an existing VMDK of one extent in place (`commit`,
//! `convert -n`, `bench -w`) through [`UnitEditor`]: a hosted sparse extent's new grains
//! go at the end of its file (monolithicSparse, or the one file of a twoGbMaxExtentSparse
//! disk up to 2 GiB), a flat extent is written where its bytes are (monolithicFlat,
//! twoGbMaxExtentFlat up to 2 GiB).
//!
//! Order for a new grain: its data is written past the end of the file; the grain table
//! entries naming the new grains are written last, the primary table's then the
//! redundant one's (as qemu updates them). A crash before the table writes leaves grains
//! nothing names at the end of the file: leaked space, the guest sees the disk as it was.
//! Pending entries are written out every [`MAX_PENDING`] grains, so memory stays bounded
//! on any disk.
//!
//! Refused, each naming why: streamOptimized files (compressed grains cannot be written
//! over; qemu refuses that too: "Could not write to allocated cluster for
//! streamOptimized"), grain tables the file lacks (qemu-img makes them all at create),
//! disks of several extents, ZERO extents, and delta disks (refused by the reader).

use crate::header::{GTE_ZEROED, SECTOR, sector_table};
use crate::reader::{Backing, VmdkReader};
use crate::sparse::SparseExtent;
use diskcast_block::gate::Gate;
use diskcast_block::io::ImageFile;
use diskcast_block::registry::{OpenContext, Registry};
use diskcast_block::unit_edit::{DirectMap, UnitEditor, UnitMap, Units, reader_handle, refuse_overlaps, write_entries};
use diskcast_block::{BlockWrite, Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::{BTreeMap, BTreeSet};

/// New grains whose table entries wait in memory before they are written out (16 MiB of
/// entries' bookkeeping at most; with 64 KiB grains, one write-out per 16 GiB of data).
const MAX_PENDING: usize = 1 << 18;

const FORMAT: &str = "vmdk (written in place)";

/// The editor for the VMDK in `file` (opened for writing and locked as a writer), taking
/// `size` guest bytes.
pub fn editor(file: ImageFile, size: u64, target_is_zero: bool) -> Result<Box<dyn BlockWrite>> {
    // Only the extent file of a flat descriptor is opened here, beneath the descriptor's
    // directory as the reader opens it; no backing file is followed.
    let (registry, gate) = (Registry::new(Vec::new()), Gate::new());
    let r = VmdkReader::open(reader_handle(&file)?, &OpenContext::without_backing(&registry, &gate))?;
    let [extent] = r.extents.as_slice() else {
        return Err(Error::unsupported(format!(
            "a VMDK of {} extents (split twoGbMaxExtent files over 2 GiB); diskcast writes into VMDKs of one \
             extent only (monolithicSparse, monolithicFlat, and twoGbMaxExtent ones up to 2 GiB)",
            r.extents.len()
        )));
    };
    match &extent.backing {
        Backing::Sparse(sp) if sp.header.compressed() => Err(Error::unsupported(
            "a streamOptimized VMDK holds compressed grains, which cannot be written over in place (qemu refuses \
             it too: \"Could not write to allocated cluster for streamOptimized\"); convert to a new image instead",
        )),
        Backing::Sparse(_) if r.embedded => {
            Ok(Box::new(UnitEditor::new(SparseMap::open(file)?, size, target_is_zero, FORMAT)?))
        }
        Backing::Sparse(_) => {
            let data = open_extent(&file, &gate, extent)?;
            Ok(Box::new(UnitEditor::new(SparseMap::open(data)?, size, target_is_zero, FORMAT)?))
        }
        Backing::Flat { base, .. } => {
            let data = open_extent(&file, &gate, extent)?;
            Ok(Box::new(UnitEditor::new(DirectMap::new(data, *base, extent.len)?, size, target_is_zero, FORMAT)?))
        }
        Backing::Zero => Err(Error::unsupported(
            "the VMDK's one extent is a ZERO extent, which stores nothing and cannot be written",
        )
        .with_field("extent")),
    }
}

/// The extent file the descriptor in `desc` names, opened for writing beneath the
/// descriptor's directory as the reader opens it (the gate's rule), the last component
/// not followed if it is a symlink.
fn open_extent(desc: &ImageFile, gate: &Gate, extent: &crate::reader::DiskExtent) -> Result<ImageFile> {
    let name = extent.line.file.as_deref().unwrap_or_default();
    ImageFile::open_rw_nofollow(&gate.resolve_extent(desc.path(), name, "extent")?)
}

/// A monolithicSparse file's grain tables, as an edit changes them.
#[derive(Debug)]
pub struct SparseMap {
    units: Units,
    /// The extent as it is on disk (reopened after pending entries are written).
    sp: SparseExtent,
    /// Redundant grain directory (empty when the file has none).
    rgd: Vec<u32>,
    /// Grains given a place in this edit and not yet written to the tables: sector of
    /// each, by grain index.
    pending: BTreeMap<u64, u32>,
    /// Where the next new grain goes, in sectors.
    next: u64,
    /// The tables named a grain when the edit began.
    has_grains: bool,
}

impl SparseMap {
    /// Opens the file for editing, every table checked first: grain tables inside the
    /// file, every grain inside the file past the metadata, no two grains or tables
    /// overlapping, and the redundant directory naming a table wherever the primary one
    /// does. Time and memory linear in the file: tables are distinct and inside it.
    fn open(file: ImageFile) -> Result<Self> {
        let (sp, _) = SparseExtent::open(reader_handle(&file)?)?;
        let h = sp.header;
        let rgd = Self::read_rgd(&sp)?;
        // Every grain and table, as byte ranges: none may overlap another (tables named
        // twice, a grain over a table), every grain past the metadata and inside the file.
        let table_bytes = sp.per_gt * 4;
        let mut places: Vec<(u64, u64)> = sp
            .gd
            .iter()
            .chain(&rgd)
            .filter(|&&t| t != 0)
            .map(|&t| (u64::from(t) * SECTOR, u64::from(t) * SECTOR + table_bytes))
            .collect();
        let mut end = h.overhead * SECTOR;
        let mut has_grains = false;
        for t in 0..u64_from_usize(sp.gd.len()) {
            let Some(tab) = sp.gt(t)? else { continue };
            for (i, &gte) in tab.iter().enumerate() {
                let g = t * sp.per_gt + u64_from_usize(i);
                if gte == 0 || (gte == GTE_ZEROED && h.zero_grain()) || g * sp.grain >= sp.capacity {
                    continue;
                }
                sp.classify(gte, g)?;
                let at = u64::from(gte) * SECTOR;
                if at < h.overhead * SECTOR || at + sp.grain > sp.file_len.next_multiple_of(SECTOR) {
                    return Err(Error::corrupt(format!(
                        "grain {g} at byte {at:#x} lies inside the metadata (before sector {}) or past the end of \
                         the {}-byte file; writing it would change the tables",
                        h.overhead, sp.file_len
                    ))
                    .with_field("grain_table_entry"));
                }
                places.push((at, at + sp.grain));
                end = end.max(at + sp.grain);
                has_grains = true;
            }
        }
        refuse_overlaps(&mut places, "grains and grain tables", "grain_table_entry")?;
        let end = end.div_ceil(SECTOR).max(sp.file_len.div_ceil(SECTOR));
        let units = Units { file, size: sp.capacity, unit: sp.grain };
        Ok(SparseMap { next: end, units, sp, rgd, pending: BTreeMap::new(), has_grains })
    }

    fn read_rgd(sp: &SparseExtent) -> Result<Vec<u32>> {
        let h = &sp.header;
        if h.rgd_offset == 0 || h.flags & crate::header::FLAG_RGD == 0 {
            return Ok(Vec::new());
        }
        let at = h.rgd_offset * SECTOR;
        let len = u64_from_usize(sp.gd.len()) * 4;
        if at.checked_add(len).is_none_or(|e| e > sp.file_len) {
            return Err(Error::out_of_bounds(format!(
                "the redundant grain directory at byte {at:#x} runs past the end of the {}-byte file",
                sp.file_len
            ))
            .with_field("rgdOffset"));
        }
        let mut raw = vec![0u8; usize_from_u64(len, "grain directory size")?];
        sp.file.read_exact_at(&mut raw, at)?;
        let rgd: Vec<u32> = sector_table(&raw).collect();
        let table_bytes = sp.per_gt * 4;
        for (t, (&p, &r)) in sp.gd.iter().zip(&rgd).enumerate() {
            let r_at = u64::from(r) * SECTOR;
            if (p == 0) != (r == 0) || r_at.saturating_add(table_bytes) > sp.file_len {
                return Err(Error::corrupt(format!(
                    "redundant grain directory entry {t} ({r}) does not match the primary one ({p}) or lies past \
                     the end of the file; run qemu-img check"
                ))
                .with_field("rgdOffset"));
            }
        }
        Ok(rgd)
    }

    /// Where entry `g` of the tables the directory `dir` names lies in the file.
    fn entry_at(&self, dir: &[u32], g: u64) -> Result<u64> {
        let t = usize_from_u64(g / self.sp.per_gt, "grain table index")?;
        let table = dir.get(t).copied().unwrap_or(0);
        if table == 0 {
            return Err(Error::corrupt(format!("grain table {t} vanished")));
        }
        Ok(u64::from(table) * SECTOR + (g % self.sp.per_gt) * 4)
    }

    /// Writes the pending entries (primary tables, then redundant ones) and rereads the
    /// extent, whose cached tables and file length they change.
    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut grains = BTreeSet::new();
        for &g in self.pending.keys() {
            grains.insert(usize_from_u64(g, "grain index")?);
        }
        let sector = |i: usize| self.pending.get(&u64_from_usize(i)).copied().unwrap_or(0).to_le_bytes();
        write_entries(&self.units.file, &grains, |i| self.entry_at(&self.sp.gd, u64_from_usize(i)), sector)?;
        if !self.rgd.is_empty() {
            write_entries(&self.units.file, &grains, |i| self.entry_at(&self.rgd, u64_from_usize(i)), sector)?;
        }
        self.pending.clear();
        self.sp = SparseExtent::open(reader_handle(&self.units.file)?)?.0;
        Ok(())
    }
}

impl UnitMap for SparseMap {
    fn units(&self) -> &Units {
        &self.units
    }

    fn host(&mut self, g: u64) -> Result<Option<u64>> {
        if let Some(&s) = self.pending.get(&g) {
            return Ok(Some(u64::from(s) * SECTOR));
        }
        Ok(match self.sp.lookup(g)? {
            crate::sparse::GrainMap::Data(at) => Some(at),
            _ => None,
        })
    }

    /// The end of the file, the file grown to hold the grain whole.
    fn allocate(&mut self, g: u64) -> Result<u64> {
        if self.pending.len() >= MAX_PENDING {
            self.write_pending()?;
        }
        if self.sp.gt(g / self.sp.per_gt)?.is_none() {
            return Err(Error::unsupported(format!(
                "grain {g} has no grain table (its directory entry is 0); diskcast does not add grain tables \
                 (qemu-img create makes them all)"
            ))
            .with_field("grain_directory_entry"));
        }
        let sector = self.next;
        let stored = u32::try_from(sector).map_err(|_| {
            Error::unsupported(format!("a new grain at sector {sector} is past what a grain table entry can name"))
        })?;
        let at = sector * SECTOR;
        self.units.file.set_len(at + self.sp.grain)?;
        self.next = sector + self.sp.header.grain_size;
        self.pending.insert(g, stored);
        Ok(at)
    }

    fn has_data(&self) -> bool {
        self.has_grains || !self.pending.is_empty()
    }

    fn flush(&mut self) -> Result<()> {
        self.write_pending()
    }
}
