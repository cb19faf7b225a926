//! The El Torito boot catalog (El Torito 1.0 §2): a validation entry, the initial/default
//! entry (BIOS, usually), then sections of further entries (UEFI is platform 0xEF).

use crate::spec::{BootCatalogEntry, SectionHeader, ValidationEntry};
use crate::volume::read_volumes;
use crate::{SECTOR, read_bytes};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{IntoBytes, le32};
use diskcast_tree::Content;
use serde::Serialize;
use std::sync::Arc;

/// Most catalog sectors read: 64 entries each, far more than any disc uses.
const MAX_CATALOG_SECTORS: u64 = 16;

/// One bootable (or not) image named by the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    /// Platform: 0 x86 BIOS, 1 PowerPC, 2 Mac, 0xEF UEFI.
    pub platform: u8,
    /// Boot indicator 0x88.
    pub bootable: bool,
    /// Emulation: `none`, `floppy-1.2M`, `floppy-1.44M`, `floppy-2.88M`, `hard-disk`.
    pub emulation: &'static str,
    /// Real-mode load segment (0 means the default 0x7C0).
    pub load_segment: u16,
    /// Partition type byte of an emulated hard disk (system type).
    pub system_type: u8,
    /// Sectors of 512 bytes the BIOS loads.
    pub sector_count: u16,
    /// Sector (2048 bytes) of the image.
    pub lba: u32,
    /// Size of the image in bytes: the emulated medium's size, or for no emulation the
    /// size of the file that starts at `lba` when the primary tree has one, else the
    /// sectors loaded.
    pub size: u64,
    /// Path of the image in the primary tree, when a file starts at `lba`.
    pub path: Option<String>,
    /// The section's identifier string (or the validation entry's for the default).
    pub id: String,
}

impl BootEntry {
    /// Platform as a word: `bios`, `uefi`, `ppc`, `mac`, or the number.
    pub fn platform_name(&self) -> String {
        match self.platform {
            0 => "bios".into(),
            1 => "ppc".into(),
            2 => "mac".into(),
            0xef => "uefi".into(),
            p => format!("0x{p:02x}"),
        }
    }

    /// The image's bytes on the disc: (offset, length).
    pub fn range(&self) -> (u64, u64) {
        (u64::from(self.lba) * SECTOR, self.size)
    }
}

/// The boot catalog: where it is and its entries, default first. `None` when the disc
/// has no El Torito boot record.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    /// Sector of the catalog.
    pub lba: u32,
    /// Entries, the initial/default entry first.
    pub entries: Vec<BootEntry>,
}

/// Reads the boot catalog of `disk`, if it has one. Every entry is checked to lie inside
/// the disc.
pub fn read_catalog(disk: &Arc<dyn BlockRead>) -> Result<Option<Catalog>> {
    let files = boot_files(disk);
    let disk = disk.as_ref();
    let vols = read_volumes(disk)?;
    let Some(lba) = vols.boot_catalog else { return Ok(None) };
    let at = u64::from(lba) * SECTOR;
    let avail = disk.size().saturating_sub(at) / SECTOR;
    if avail == 0 {
        return Err(Error::out_of_bounds("El Torito boot catalog lies past the end of the disc")
            .with_field("boot_catalog")
            .with_offset(at));
    }
    let cat = read_bytes(disk, at, avail.min(MAX_CATALOG_SECTORS) * SECTOR, "El Torito boot catalog")?;
    let bad = |what: &str, off: usize| {
        Error::corrupt(format!("El Torito {what}")).with_offset(at + diskcast_layout::u64_from_usize(off))
    };
    let v: &ValidationEntry = diskcast_layout::read(&cat, 0, "El Torito validation entry")?;
    let sum = v.as_bytes().chunks_exact(2).fold(0u16, |s, w| s.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
    if v.header_id != 1 || v.key != [0x55, 0xAA] || sum != 0 {
        return Err(bad("validation entry is broken (header, key bytes or checksum)", 0).with_field("validation_entry"));
    }
    let mut entries = vec![entry(disk, &cat[32..64], v.platform, id_string(&v.id), &files, at + 32)?];
    let mut pos = 64;
    let mut last_section = false;
    while !last_section && pos + 32 <= cat.len() {
        let h: &SectionHeader = diskcast_layout::read(&cat, pos, "El Torito section header")?;
        match h.indicator {
            0x90 | 0x91 => last_section = h.indicator == 0x91,
            _ => break,
        }
        let (platform, count, id) = (h.platform, h.count.get(), id_string(&h.id));
        pos += 32;
        let mut taken = 0;
        while taken < count {
            let Some(e) = cat.get(pos..pos + 32) else {
                return Err(bad("section runs past the catalog", pos));
            };
            pos += 32;
            if e[0] == 0x44 {
                // An extension record belongs to the entry before it.
                continue;
            }
            entries.push(entry(disk, e, platform, id.clone(), &files, at + diskcast_layout::u64_from_usize(pos) - 32)?);
            taken += 1;
        }
    }
    Ok(Some(Catalog { lba, entries }))
}

fn id_string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches(['\0', ' ']).to_string()
}

fn entry(
    disk: &dyn BlockRead,
    e: &[u8],
    platform: u8,
    id: String,
    files: &[(u32, u64, String)],
    at: u64,
) -> Result<BootEntry> {
    let e: &BootCatalogEntry = diskcast_layout::read(e, 0, "El Torito boot entry")?;
    let emulation = match e.media & 0x0f {
        0 => "none",
        1 => "floppy-1.2M",
        2 => "floppy-1.44M",
        3 => "floppy-2.88M",
        4 => "hard-disk",
        _ => {
            return Err(Error::corrupt("El Torito entry has an unknown media type")
                .with_field("boot_media_type")
                .with_offset(at));
        }
    };
    let lba = e.lba.get();
    let sector_count = e.sector_count.get();
    let file = files.iter().find(|f| f.0 == lba && lba != 0);
    let size = match emulation {
        "floppy-1.2M" => 1_228_800,
        "floppy-1.44M" => 1_474_560,
        "floppy-2.88M" => 2_949_120,
        "hard-disk" => hard_disk_size(disk, lba, at)?,
        _ => file.map(|f| f.1).unwrap_or(u64::from(sector_count) * 512),
    };
    let start = u64::from(lba) * SECTOR;
    diskcast_block::range_end(start, size, disk.size()).map_err(|_| {
        Error::out_of_bounds(format!(
            "El Torito boot image at sector {lba} ({size} bytes) runs past the end of the disc"
        ))
        .with_field("load_rba")
        .with_offset(at)
    })?;
    Ok(BootEntry {
        platform,
        bootable: e.indicator == 0x88,
        emulation,
        load_segment: e.load_segment.get(),
        system_type: e.system_type,
        sector_count,
        lba,
        size,
        path: file.map(|f| f.2.clone()),
        id,
    })
}

/// An emulated hard disk's size: the end of its one MBR partition.
fn hard_disk_size(disk: &dyn BlockRead, lba: u32, at: u64) -> Result<u64> {
    let mbr = read_bytes(disk, u64::from(lba) * SECTOR, 512, "El Torito hard-disk image")?;
    let mut end = None;
    for i in 0..4 {
        let p = diskcast_layout::bytes(&mbr, 446 + 16 * i, 16, "MBR partition entry")?;
        if p[4] != 0 {
            let e =
                (u64::from(le32(p, 8, "MBR partition entry")?) + u64::from(le32(p, 12, "MBR partition entry")?)) * 512;
            end = end.max(Some(e));
        }
    }
    end.ok_or_else(|| Error::corrupt("El Torito hard-disk image has no partition").with_offset(at))
}

/// (first sector, size, path) of every file in the disc's best ISO 9660 tree, to name and
/// size boot images. Only a help: a disc whose tree does not read still shows its
/// catalog.
fn boot_files(disk: &Arc<dyn BlockRead>) -> Vec<(u32, u64, String)> {
    let Ok(tree) = crate::read::read_iso_tree(disk) else { return Vec::new() };
    let mut out = Vec::new();
    for (path, id) in tree.walk(tree.root()) {
        if let Some(Content::Blocks { extents, .. }) = tree.node(id).as_file().map(|f| &f.content)
            && let Some(first) = extents.first()
            && first.file_offset == 0
            && let Ok(lba) = u32::try_from(first.source_offset / SECTOR)
        {
            let size = tree.node(id).as_file().map(|f| f.size).unwrap_or(0);
            out.push((lba, size, format!("/{}", String::from_utf8_lossy(&path))));
        }
    }
    out
}

/// The boot information table isolinux wants patched into its image at byte 8 (56
/// bytes): the primary descriptor's sector, the image's sector and length, and the
/// 32-bit sum of the image's little-endian words from byte 64 on.
pub fn boot_info_table(image: &[u8], pvd_lba: u32, image_lba: u32) -> [u8; 56] {
    let mut sum = 0u32;
    for w in image.get(64..).unwrap_or(&[]).chunks(4) {
        let mut a = [0u8; 4];
        a[..w.len()].copy_from_slice(w);
        sum = sum.wrapping_add(u32::from_le_bytes(a));
    }
    let mut t = [0u8; 56];
    t[0..4].copy_from_slice(&pvd_lba.to_le_bytes());
    t[4..8].copy_from_slice(&image_lba.to_le_bytes());
    // Callers patch images of at most MAX_PATCHED_IMAGE bytes; a longer one is recorded as u32::MAX.
    t[8..12].copy_from_slice(&u32::try_from(image.len()).unwrap_or(u32::MAX).to_le_bytes());
    t[12..16].copy_from_slice(&sum.to_le_bytes());
    t
}
