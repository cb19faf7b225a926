//! Hybrid discs: an MBR and/or a GPT in the ISO's 32 KiB system area (as xorriso's
//! isohybrid writes them), so the same image boots from a USB stick.

use crate::eltorito::Catalog;
use crate::read_bytes;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{le32, le64};
use diskcast_tree::Content;
use serde::Serialize;
use std::sync::Arc;

/// One partition of the system area's MBR or GPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HybridPartition {
    /// `mbr` or `gpt`.
    pub table: &'static str,
    /// 1-based slot.
    pub number: u32,
    /// MBR type byte (`0xef`) or GPT type GUID.
    pub kind: String,
    /// First byte and length in bytes.
    pub start: u64,
    pub size: u64,
    /// MBR active flag.
    pub bootable: bool,
    /// GPT partition name.
    pub name: String,
}

/// What the system area holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hybrid {
    /// An MBR boot signature at byte 510.
    pub mbr: bool,
    /// A GPT header ("EFI PART") at byte 512.
    pub gpt: bool,
    /// The partitions both tables list.
    pub partitions: Vec<HybridPartition>,
}

/// Reads the partition tables in the system area (the first 32 KiB). Never an error for
/// a broken table: it is shown as far as it reads.
pub fn read_hybrid(disk: &dyn BlockRead) -> Result<Hybrid> {
    let mut h = Hybrid::default();
    if disk.size() < 32 * 1024 {
        return Ok(h);
    }
    let sa = read_bytes(disk, 0, 32 * 1024, "system area")?;
    h.mbr = sa[510] == 0x55 && sa[511] == 0xAA;
    if h.mbr {
        for i in 0..4 {
            let p = &sa[446 + 16 * i..462 + 16 * i];
            if p.iter().all(|&b| b == 0) {
                continue;
            }
            h.partitions.push(HybridPartition {
                table: "mbr",
                number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                kind: format!("0x{:02x}", p[4]),
                start: u64::from(le32(p, 8, "system area")?) * 512,
                size: u64::from(le32(p, 12, "system area")?) * 512,
                bootable: p[0] == 0x80,
                name: String::new(),
            });
        }
    }
    h.gpt = &sa[512..520] == b"EFI PART";
    if h.gpt {
        let entries_lba = le64(&sa, 512 + 72, "system area")?;
        let count = le32(&sa, 512 + 80, "system area")?.min(256);
        let esize = u64::from(le32(&sa, 512 + 84, "system area")?);
        if (128..=4096).contains(&esize) {
            for i in 0..u64::from(count) {
                let Some(at) = entries_lba.checked_mul(512).and_then(|b| b.checked_add(i * esize)) else { break };
                let Ok(e) = read_bytes(disk, at, esize, "GPT entry") else { break };
                if e[..16].iter().all(|&b| b == 0) {
                    continue;
                }
                let (first, last) = (le64(&e, 32, "system area")?, le64(&e, 40, "system area")?);
                let name: Vec<u16> = e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                let name = String::from_utf16_lossy(&name).trim_end_matches('\0').to_string();
                h.partitions.push(HybridPartition {
                    table: "gpt",
                    number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    kind: guid(&e[..16])?,
                    start: first.saturating_mul(512),
                    size: last.saturating_sub(first).saturating_add(1).saturating_mul(512),
                    bootable: false,
                    name,
                });
            }
        }
    }
    Ok(h)
}

/// A GPT GUID in its usual text form (mixed-endian fields).
pub(crate) fn guid(b: &[u8]) -> Result<String> {
    let tail = diskcast_layout::bytes(b, 8, 8, "GPT GUID")?;
    Ok(format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0, "GPT GUID")?,
        diskcast_layout::le16(b, 4, "GPT GUID")?,
        diskcast_layout::le16(b, 6, "GPT GUID")?,
        tail[0],
        tail[1],
        tail[2..].iter().map(|x| format!("{x:02X}")).collect::<String>()
    ))
}

/// Bytes of the ISO 9660 system area (16 sectors of 2048): MBR, GPT, boot code.
pub const SYSTEM_AREA: u64 = 32 * 1024;
/// isohybrid's cylinder (64 heads × 32 sectors × 512 bytes): discs padded to a whole
/// number of them stay so when remastered.
const CYLINDER: u64 = 64 * 32 * 512;
/// Most GPT entries read; xorriso writes 248, gdisk 128.
const MAX_GPT_ENTRIES: u32 = 1024;
/// Most bytes between the backup GPT's entries and its header beyond the entries
/// themselves (tools leave none; a hostile header must not make us allocate the disc).
const MAX_BACKUP_GPT_GAP: usize = 1 << 20;
/// Most boot catalog entries kept: what fits the one catalog sector the writer writes
/// (64 records of 32 bytes, less the validation entry and one section header per entry).
pub const MAX_BOOT_ENTRIES: usize = 31;

/// Where a byte position of the input disc goes on the remastered one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// In the system area: stays.
    Fixed(u64),
    /// The first byte of this file of the disc (a boot image): follows the file.
    FileStart(String),
    /// The end of this file, rounded up to 512 bytes.
    FileEnd(String),
    /// This many bytes after the start (for a partition end only).
    Len(u64),
    /// This many bytes past the end of the ISO 9660 data: appended partitions and the
    /// gaps between them move with that end.
    Tail(u64),
    /// This many bytes before the end of the disc (backup GPT, padding).
    FromEnd(u64),
}

/// One El Torito entry of the input kept on the output.
#[derive(Debug, Clone)]
pub struct KeptBoot {
    pub platform: u8,
    pub bootable: bool,
    /// The media type byte (0 no emulation, 1-3 floppies, 4 hard disk).
    pub media: u8,
    pub load_segment: u16,
    pub system_type: u8,
    /// 512-byte sectors loaded, as the input had it.
    pub sector_count: u16,
    /// The input's count was the whole image: follow the image's new size.
    pub whole_image: bool,
    /// A file of the disc (`FileStart`), or an image inside an appended partition (`Tail`).
    pub image: Anchor,
    /// The input's image holds a boot info table (mkisofs -boot-info-table).
    pub boot_info_table: bool,
    /// The input's image holds GRUB 2's boot info (xorriso --grub2-boot-info).
    pub grub2_boot_info: bool,
}

/// A partition entry kept: its slot and where its first byte and its end go.
#[derive(Debug, Clone)]
struct KeptPart {
    slot: usize,
    start: Anchor,
    end: Anchor,
    /// The input's values, to leave an entry that does not move untouched.
    old: (u64, u64),
}

#[derive(Debug, Clone)]
struct KeptGpt {
    parts: Vec<KeptPart>,
    /// (last usable LBA + 1) as a byte position.
    usable_end: Anchor,
    backup_header: Anchor,
    backup_entries: Anchor,
    entries_at: usize,
    entries_len: usize,
    entry_size: usize,
}

/// What `iso remaster` keeps of the input's system area and what follows its ISO 9660
/// data, classified (and refused with the reason) before anything is written.
#[derive(Clone)]
pub struct Kept {
    /// The input's first 32 KiB.
    area: Vec<u8>,
    mbr: Vec<KeptPart>,
    gpt: Option<KeptGpt>,
    /// isohybrid/GRUB MBR code's pointer at byte 432: the BIOS image's 512-byte LBA + k.
    pointer: Option<(String, u64)>,
    /// The end of the primary volume space.
    volume_end: Anchor,
    /// Appended partitions: (input offset, length), copied along.
    copies: Vec<(u64, u64)>,
    /// End of the ISO 9660 data, of the appended partitions, of the disc; bytes the end
    /// of the disc must keep (backup GPT); pad to a whole cylinder.
    body_end: u64,
    tail_end: u64,
    disk_end: u64,
    end_reserve: u64,
    cylinder: bool,
    disk: Arc<dyn BlockRead>,
    /// The El Torito entries, default first.
    pub entries: Vec<KeptBoot>,
    /// The file that held the input's boot catalog (xorriso's `-c`): it names the new one.
    pub catalog_path: Option<String>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("mbr", &self.mbr)
            .field("gpt", &self.gpt)
            .field("pointer", &self.pointer)
            .field("copies", &self.copies)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// The system area and tail of the output, every position resolved.
#[derive(Debug)]
pub(crate) struct KeptLayout {
    pub disk_size: u64,
    pub volume_end: u64,
    pub area: Vec<u8>,
    /// (output offset, bytes): the backup GPT.
    pub backup: Option<(u64, Vec<u8>)>,
    /// (output offset, input offset, length): appended partitions.
    pub copies: Vec<(u64, u64, u64)>,
    /// Sector of each entry's image that lives in an appended partition.
    pub tail_lba: Vec<Option<u32>>,
}

fn media_byte(emulation: &str) -> u8 {
    match emulation {
        "floppy-1.2M" => 1,
        "floppy-1.44M" => 2,
        "floppy-2.88M" => 3,
        "hard-disk" => 4,
        _ => 0,
    }
}

impl Kept {
    /// Reads and classifies what a remaster must keep: the system area (MBR boot code,
    /// MBR and GPT entries), the El Torito entries, and partitions appended after the ISO
    /// 9660 data. Anything whose new place cannot be told is refused, naming it.
    pub fn read(disk: &Arc<dyn BlockRead>, catalog: Option<&Catalog>) -> Result<Kept> {
        let d = disk.as_ref();
        let disk_end = d.size();
        let vols = crate::volume::read_volumes(d)?;
        let area = read_bytes(d, 0, SYSTEM_AREA, "system area")?;
        let volume_end = u64::from(vols.blocks) * crate::SECTOR;
        // Files of the primary tree: (start, size, path); their end is where the ISO 9660
        // data ends and appended partitions may begin.
        let mut files: Vec<(u64, u64, String)> = Vec::new();
        let mut body_end = 17 * crate::SECTOR;
        if let Some(c) = catalog {
            body_end = body_end.max((u64::from(c.lba) + 1) * crate::SECTOR);
        }
        let tree = crate::read::read_iso_tree(disk)?;
        for (path, id) in tree.walk(tree.root()) {
            let Some(f) = tree.node(id).as_file() else { continue };
            if let Content::Blocks { extents, .. } = &f.content {
                for e in extents.iter() {
                    let end = e.source_offset.saturating_add(e.len).next_multiple_of(crate::SECTOR);
                    body_end = body_end.max(end);
                    if e.file_offset == 0 {
                        files.push((e.source_offset, f.size, format!("/{}", String::from_utf8_lossy(&path))));
                    }
                }
            }
        }
        if body_end > disk_end {
            return Err(Error::corrupt("files of the disc run past its end").with_offset(body_end));
        }
        // Partitions: (table, slot, start, end) in bytes.
        let mut parts: Vec<(&'static str, usize, u64, u64)> = Vec::new();
        let mbr_sig = area[510] == 0x55 && area[511] == 0xAA;
        if mbr_sig {
            for slot in 0..4 {
                let p = &area[446 + 16 * slot..462 + 16 * slot];
                if p.iter().all(|&b| b == 0) {
                    continue;
                }
                if matches!(p[4], 0x05 | 0x0f | 0x85) {
                    return Err(Error::unsupported(format!(
                        "MBR partition {} is an extended partition: remaster does not rewrite logical partitions",
                        slot + 1
                    )));
                }
                let start = u64::from(le32(p, 8, "system area")?) * 512;
                let size = u64::from(le32(p, 12, "system area")?) * 512;
                // A protective entry of a disc over 2 TiB says "to the end" this way.
                let end = if p[4] == 0xee && le32(p, 12, "system area")? == u32::MAX { disk_end } else { start + size };
                parts.push(("MBR", slot, start, end.min(disk_end.max(start))));
                if end > disk_end {
                    return Err(Error::unsupported(format!(
                        "MBR partition {} ends at byte {end}, past the end of the disc ({disk_end} bytes)",
                        slot + 1
                    )));
                }
            }
        }
        let gpt_hdr = &area[512..1024];
        let has_gpt = &gpt_hdr[..8] == b"EFI PART";
        let mut gpt_geo = None;
        if has_gpt {
            let entries_lba = le64(gpt_hdr, 72, "system area")?;
            let count = le32(gpt_hdr, 80, "system area")?;
            let esize = le32(gpt_hdr, 84, "system area")?;
            if !(128..=4096).contains(&esize) || !esize.is_multiple_of(8) || count > MAX_GPT_ENTRIES {
                return Err(Error::unsupported(format!(
                    "GPT with {count} entries of {esize} bytes: remaster keeps at most {MAX_GPT_ENTRIES} entries of 128 to 4096 bytes"
                )));
            }
            let at = entries_lba.saturating_mul(512);
            let len = u64::from(count) * u64::from(esize);
            if at < 1024 || at.saturating_add(len) > SYSTEM_AREA {
                return Err(Error::unsupported(format!(
                    "the GPT entries lie at byte {at}, outside the 32 KiB system area: remaster cannot keep them"
                )));
            }
            let (at, len) = (usize::try_from(at).unwrap_or(0), usize::try_from(len).unwrap_or(0));
            for i in 0..usize::try_from(count).unwrap_or(0) {
                let e = &area[at + i * usize::try_from(esize).unwrap_or(128)..][..128];
                if e[..16].iter().all(|&b| b == 0) {
                    continue;
                }
                let (first, last) = (le64(e, 32, "system area")?, le64(e, 40, "system area")?);
                let end = last.checked_add(1).and_then(|l| l.checked_mul(512)).unwrap_or(u64::MAX);
                if first > last || end > disk_end {
                    return Err(Error::unsupported(format!(
                        "GPT partition {} (sectors {first} to {last}) runs past the end of the disc",
                        i + 1
                    )));
                }
                parts.push(("GPT", i, first * 512, end));
            }
            gpt_geo = Some((at, len, usize::try_from(esize).unwrap_or(128)));
        }
        // xorriso -partition_offset: a second volume descriptor set (and tree) for a
        // partition starting at 32 KiB. Remaster writes one tree only.
        if parts.iter().any(|p| p.2 == SYSTEM_AREA) && disk_end >= SYSTEM_AREA + 17 * crate::SECTOR {
            let sb = read_bytes(d, SYSTEM_AREA + 16 * crate::SECTOR, 8, "second superblock")?;
            if &sb[1..6] == b"CD001" {
                return Err(Error::unsupported(
                    "a partition starting at 32 KiB holds a second ISO 9660 superblock and tree (xorriso -partition_offset): remaster writes one tree and cannot keep it",
                ));
            }
        }
        // Appended partitions start at or after the ISO 9660 data; the tail ends with the
        // last of them.
        let tail_end =
            parts.iter().filter(|p| p.2 >= body_end && p.2 > SYSTEM_AREA).map(|p| p.3).fold(body_end, u64::max);
        let mut copies: Vec<(u64, u64)> = parts
            .iter()
            .filter(|p| p.2 >= body_end && p.2 > SYSTEM_AREA && p.3 > p.2)
            .map(|p| (p.2, p.3 - p.2))
            .collect();
        copies.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, l) in copies {
            match merged.last_mut() {
                Some(m) if s <= m.0 + m.1 => m.1 = m.1.max(s + l - m.0),
                _ => merged.push((s, l)),
            }
        }
        let starts: std::collections::HashMap<u64, &str> = files.iter().map(|f| (f.0, f.2.as_str())).collect();
        let ends: std::collections::HashMap<u64, &str> =
            files.iter().map(|f| (f.0.saturating_add(f.1.next_multiple_of(512)), f.2.as_str())).collect();
        let anchor = |p: u64, is_end: bool| -> Option<Anchor> {
            if p <= SYSTEM_AREA {
                return Some(Anchor::Fixed(p));
            }
            if p == body_end {
                return Some(Anchor::Tail(0));
            }
            if p > body_end && p < tail_end {
                return Some(Anchor::Tail(p - body_end));
            }
            if p >= tail_end && p <= disk_end && p > body_end {
                return Some(Anchor::FromEnd(disk_end - p));
            }
            if is_end {
                ends.get(&p).map(|f| Anchor::FileEnd(f.to_string()))
            } else {
                starts.get(&p).map(|f| Anchor::FileStart(f.to_string()))
            }
        };
        let classify = |table: &str, slot: usize, start: u64, end: u64| -> Result<KeptPart> {
            let s = anchor(start, false).ok_or_else(|| {
                Error::unsupported(format!(
                    "{table} partition {} starts at byte {start}, inside the ISO 9660 data but at no file: remaster cannot tell where it goes",
                    slot + 1
                ))
            })?;
            let e = match anchor(end, true) {
                Some(e) => e,
                None if matches!(s, Anchor::FileStart(_)) => Anchor::Len(end - start),
                None => {
                    return Err(Error::unsupported(format!(
                        "{table} partition {} ends at byte {end}, inside the ISO 9660 data: remaster cannot tell where its end goes",
                        slot + 1
                    )));
                }
            };
            Ok(KeptPart { slot, start: s, end: e, old: (start, end) })
        };
        let mut mbr = Vec::new();
        let mut gparts = Vec::new();
        for &(table, slot, start, end) in &parts {
            let k = classify(table, slot, start, end)?;
            if table == "MBR" { mbr.push(k) } else { gparts.push(k) }
        }
        let mut end_reserve = 0;
        let gpt = match gpt_geo {
            None => None,
            Some((entries_at, entries_len, entry_size)) => {
                let alt =
                    le64(gpt_hdr, 32, "system area")?.checked_mul(512).filter(|&a| a < disk_end).ok_or_else(|| {
                        Error::unsupported(
                            "the GPT's backup header lies past the end of the disc: remaster cannot place it",
                        )
                    })?;
                let sectors = u64::try_from(entries_len).unwrap_or(0).div_ceil(512);
                let backup_entries = match read_bytes(d, alt, 512, "backup GPT header") {
                    Ok(h) if &h[..8] == b"EFI PART" => le64(&h, 72, "system area")?.saturating_mul(512),
                    _ => alt.saturating_sub(sectors * 512),
                };
                let usable_end = le64(gpt_hdr, 48, "system area")?.saturating_add(1).saturating_mul(512);
                let place = |p: u64, what: &str| -> Result<Anchor> {
                    match anchor(p, true) {
                        Some(a @ (Anchor::FromEnd(_) | Anchor::Tail(_))) => Ok(a),
                        _ => Err(Error::unsupported(format!(
                            "the GPT's {what} lies at byte {p}, inside the ISO 9660 data: remaster cannot place it"
                        ))),
                    }
                };
                let backup_header = place(alt, "backup header")?;
                let backup_entries_a = place(backup_entries, "backup entries")?;
                if let Anchor::FromEnd(n) = backup_entries_a {
                    end_reserve = n;
                }
                Some(KeptGpt {
                    parts: gparts,
                    usable_end: place(usable_end, "last usable sector")?,
                    backup_header,
                    backup_entries: backup_entries_a,
                    entries_at,
                    entries_len,
                    entry_size,
                })
            }
        };
        if !mbr_sig && !has_gpt && area.iter().any(|&b| b != 0) {
            return Err(Error::unsupported(
                "the system area holds data that is neither an MBR nor a GPT: remaster cannot tell what it points at",
            ));
        }
        // The boot entries.
        let mut entries = Vec::new();
        let in_copy = |s: u64, l: u64| merged.iter().any(|m| s >= m.0 && s + l <= m.0 + m.1);
        for e in catalog.iter().flat_map(|c| &c.entries) {
            if entries.len() == MAX_BOOT_ENTRIES {
                return Err(Error::unsupported(format!(
                    "the boot catalog has more than {MAX_BOOT_ENTRIES} entries: remaster keeps at most that many"
                )));
            }
            let start = u64::from(e.lba) * crate::SECTOR;
            let (image, bit, grub2) = match &e.path {
                Some(p) => {
                    let head = read_bytes(d, start, e.size.min(2556), "boot image")?;
                    // mkisofs -boot-info-table: the PVD's sector, the image's and its length.
                    let bit = e.emulation == "none"
                        && head.len() >= 20
                        && le32(&head, 8, "system area")? == 16
                        && le32(&head, 12, "system area")? == e.lba
                        && u64::from(le32(&head, 16, "system area")?) == e.size;
                    let grub2 = head.len() >= 2556 && le64(&head, 2548, "system area")? == u64::from(e.lba) * 4 + 5;
                    (Anchor::FileStart(p.clone()), bit, grub2)
                }
                None if start >= body_end && in_copy(start, e.size) => (Anchor::Tail(start - body_end), false, false),
                None => {
                    return Err(Error::unsupported(format!(
                        "the {} boot image at sector {} is neither a file of the disc nor inside a partition appended after it; remaster cannot keep it",
                        e.platform_name(),
                        e.lba
                    )));
                }
            };
            entries.push(KeptBoot {
                platform: e.platform,
                bootable: e.bootable,
                media: media_byte(e.emulation),
                load_segment: e.load_segment,
                system_type: e.system_type,
                sector_count: e.sector_count,
                whole_image: e.emulation == "none" && u64::from(e.sector_count) == e.size.div_ceil(512) && e.size > 0,
                image,
                boot_info_table: bit,
                grub2_boot_info: grub2,
            });
        }
        // MBR boot code that finds the BIOS image through byte 432 (isohybrid: its 512-byte
        // LBA; GRUB's boot_hybrid.img: that + 4).
        let pointer = if mbr_sig {
            let v = le64(&area, 432, "system area")?;
            catalog.iter().flat_map(|c| &c.entries).filter(|e| e.platform == 0).find_map(|e| {
                let base = u64::from(e.lba) * 4;
                let path = e.path.clone()?;
                (v >= base && v - base <= 4 && e.lba > 0).then_some((path, v - base))
            })
        } else {
            None
        };
        let vol_anchor = match anchor(volume_end.max(body_end), true) {
            Some(a @ (Anchor::Tail(_) | Anchor::FromEnd(_))) => a,
            _ => Anchor::Tail(0),
        };
        let end_len = disk_end - tail_end;
        let catalog_path = catalog.and_then(|c| starts.get(&(u64::from(c.lba) * crate::SECTOR))).map(|p| p.to_string());
        Ok(Kept {
            area,
            mbr,
            gpt,
            pointer,
            volume_end: vol_anchor,
            copies: merged,
            body_end,
            tail_end,
            disk_end,
            end_reserve: end_reserve.min(end_len),
            cylinder: disk_end % CYLINDER == 0 && end_len > end_reserve,
            disk: disk.clone(),
            entries,
            catalog_path,
        })
    }

    /// Lays out the output: the ISO 9660 data ends at `body_end`; `file(path)` gives a
    /// file's new (start, size) in bytes.
    pub(crate) fn layout(&self, body_end: u64, file: &dyn Fn(&str) -> Option<(u64, u64)>) -> Result<KeptLayout> {
        let overflow = || Error::unsupported("the remastered disc would be too large");
        let tail_end = body_end.checked_add(self.tail_end - self.body_end).ok_or_else(overflow)?;
        let end_len = self.disk_end - self.tail_end;
        let disk_size = if self.cylinder {
            tail_end.checked_add(self.end_reserve).ok_or_else(overflow)?.next_multiple_of(CYLINDER)
        } else {
            tail_end.checked_add(end_len).ok_or_else(overflow)?
        };
        let gone = |p: &str| {
            Error::argument(format!("{p} is a boot image or holds a partition of the input disc; it cannot be removed"))
        };
        let pos = |a: &Anchor, start: u64| -> Result<u64> {
            Ok(match a {
                Anchor::Fixed(p) => *p,
                Anchor::FileStart(p) => file(p).ok_or_else(|| gone(p))?.0,
                Anchor::FileEnd(p) => {
                    let (s, l) = file(p).ok_or_else(|| gone(p))?;
                    s + l.next_multiple_of(512)
                }
                Anchor::Len(n) => start + n,
                Anchor::Tail(n) => body_end + n,
                Anchor::FromEnd(n) => disk_size.saturating_sub(*n).max(tail_end),
            })
        };
        let shrunk = |table: &str, slot: usize| {
            Error::unsupported(format!(
                "{table} partition {} would end before it starts on the remastered disc (its end is kept at a fixed distance from the disc's end)",
                slot + 1
            ))
        };
        let mut area = self.area.clone();
        for k in &self.mbr {
            let s = pos(&k.start, 0)?;
            let e = pos(&k.end, s)?;
            if (s, e) == k.old {
                continue;
            }
            let at = 446 + 16 * k.slot;
            let kind = area[at + 4];
            let sectors = e.checked_sub(s).ok_or_else(|| shrunk("MBR", k.slot))? / 512;
            let sectors = match u32::try_from(sectors) {
                Ok(n) => n,
                Err(_) if kind == 0xee => u32::MAX,
                Err(_) => {
                    return Err(Error::unsupported(format!(
                        "MBR partition {} would end past 2 TiB; an MBR cannot describe it",
                        k.slot + 1
                    )));
                }
            };
            let first = u32::try_from(s / 512).map_err(|_| overflow())?;
            let entry = crate::write::mbr_entry(area[at], kind, u64::from(first), u64::from(sectors));
            area[at..at + 16].copy_from_slice(&entry);
        }
        if let Some((path, k)) = &self.pointer {
            let (s, _) = file(path).ok_or_else(|| gone(path))?;
            area[432..440].copy_from_slice(&(s / 512 + k).to_le_bytes());
        }
        let mut backup = None;
        if let Some(g) = &self.gpt {
            let entries_at = g.entries_at;
            for k in &g.parts {
                let s = pos(&k.start, 0)?;
                let e = pos(&k.end, s)?;
                if e <= s {
                    return Err(shrunk("GPT", k.slot));
                }
                let at = entries_at + k.slot * g.entry_size;
                area[at + 32..at + 40].copy_from_slice(&(s / 512).to_le_bytes());
                area[at + 40..at + 48].copy_from_slice(&(e / 512).saturating_sub(1).to_le_bytes());
            }
            let entries = area[entries_at..entries_at + g.entries_len].to_vec();
            let ecrc = crc32(&entries);
            let alt = pos(&g.backup_header, 0)? / 512;
            let bentries = pos(&g.backup_entries, 0)? / 512;
            let usable_end = pos(&g.usable_end, 0)? / 512;
            let mut h = area[512..1024].to_vec();
            let hsize = usize::try_from(le32(&h, 12, "system area")?).unwrap_or(92).clamp(92, 512);
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[48..56].copy_from_slice(&usable_end.saturating_sub(1).to_le_bytes());
            h[88..92].copy_from_slice(&ecrc.to_le_bytes());
            h[16..20].fill(0);
            let c = crc32(&h[..hsize]);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            area[512..1024].copy_from_slice(&h);
            // The backup: the same entries, then a header that names itself.
            let mut b = h.clone();
            b[24..32].copy_from_slice(&alt.to_le_bytes());
            b[32..40].copy_from_slice(&le64(&h, 24, "system area")?.to_le_bytes());
            b[72..80].copy_from_slice(&bentries.to_le_bytes());
            b[16..20].fill(0);
            let c = crc32(&b[..hsize]);
            b[16..20].copy_from_slice(&c.to_le_bytes());
            let gap = alt.checked_sub(bentries).map(|g| g * 512).ok_or_else(overflow)?;
            let gap = usize::try_from(gap).map_err(|_| overflow())?;
            if gap < entries.len() || gap - entries.len() > MAX_BACKUP_GPT_GAP {
                return Err(Error::unsupported(format!(
                    "the backup GPT header lies {gap} bytes after its {} bytes of entries; remaster keeps at most {MAX_BACKUP_GPT_GAP} bytes between them",
                    entries.len()
                )));
            }
            let mut bytes = entries;
            bytes.resize(gap, 0);
            bytes.extend_from_slice(&b);
            backup = Some((bentries * 512, bytes));
        }
        let copies = self.copies.iter().map(|&(s, l)| (body_end + (s - self.body_end), s, l)).collect();
        let tail_lba = self
            .entries
            .iter()
            .map(|e| match e.image {
                Anchor::Tail(n) => u32::try_from((body_end + n) / crate::SECTOR).ok(),
                _ => None,
            })
            .collect();
        Ok(KeptLayout {
            disk_size,
            volume_end: pos(&self.volume_end, 0)?.max(body_end),
            area,
            backup,
            copies,
            tail_lba,
        })
    }

    /// The input disc, for the appended partitions' bytes.
    pub(crate) fn source(&self) -> &Arc<dyn BlockRead> {
        &self.disk
    }
}

/// GPT's CRC-32 (IEEE), the one implementation the workspace uses (docs/crates.md).
fn crc32(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}
