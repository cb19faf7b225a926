//! The classic MBR: four primary entries at byte 446, an extended partition's chain of
//! EBRs holding one logical partition each.

use crate::{Partition, Table, TableKind, read_vec};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{
    FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Le32, Unaligned, fit, low_u8, read as read_at,
    u64_from_usize,
};
use std::collections::HashSet;

/// A partition entry as stored (16 bytes at 446 + 16 * i), read by [`entries`] and written
/// by [`entry`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawEntry {
    status: u8,
    chs_first: [u8; 3],
    kind: u8,
    chs_last: [u8; 3],
    lba: Le32,
    sectors: Le32,
}

/// Sector 0 (or an EBR) as stored, read by [`read`] and written by [`sector`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawSector {
    boot_code: [u8; 440],
    disk_signature: Le32,
    reserved: [u8; 2],
    entries: [RawEntry; 4],
    boot_signature: [u8; 2],
}
const _: () = assert!(size_of::<RawSector>() == 512);

/// Most logical partitions followed in an EBR chain (Linux stops at 256 minors too).
const MAX_LOGICAL: usize = 256;

/// A raw 16-byte entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    status: u8,
    kind: u8,
    lba: u64,
    sectors: u64,
}

fn entries(sector: &[u8]) -> Result<[Entry; 4]> {
    let s = read_at::<RawSector>(sector, 0, "MBR")?;
    Ok(s.entries.map(|e| Entry {
        status: e.status,
        kind: e.kind,
        lba: u64::from(e.lba.get()),
        sectors: u64::from(e.sectors.get()),
    }))
}

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

/// The MBR of `disk`, or `None` when sector 0 is no MBR (no `55 AA`, or status bytes
/// other than 0x00/0x80, as in a FAT boot sector). A protective MBR (type 0xEE) without
/// a readable GPT is an error: the GPT was damaged beyond repair.
pub(crate) fn read(disk: &dyn BlockRead) -> Result<Option<Table>> {
    if disk.size() < 512 {
        return Ok(None);
    }
    let s = read_vec(disk, 0, 512)?;
    if read_at::<RawSector>(&s, 0, "MBR")?.boot_signature != [0x55, 0xaa] {
        return Ok(None);
    }
    let prim = entries(&s)?;
    if prim.iter().any(|e| e.status != 0 && e.status != 0x80) || prim.iter().all(|e| e.kind == 0) {
        return Ok(None);
    }
    if prim.iter().any(|e| e.kind == 0xee) {
        return Err(Error::corrupt("protective MBR (type 0xee) but neither GPT header is present")
            .with_field("partition_type")
            .with_offset(446));
    }
    let sectors = disk.size() / 512;
    let check = |n: u32, e: &Entry, base: u64, at: u64| -> Result<(u64, u64)> {
        let start = base.checked_add(e.lba).ok_or_else(|| Error::out_of_bounds("MBR start overflows"))?;
        let end = start.checked_add(e.sectors).filter(|&x| x <= sectors);
        if e.sectors == 0 || end.is_none() {
            return Err(Error::out_of_bounds(format!(
                "MBR partition {n} spans {} sectors at LBA {start}, past the disk's {sectors} sectors",
                e.sectors
            ))
            .with_field("sectors")
            .with_offset(at));
        }
        Ok((start * 512, e.sectors * 512))
    };
    let mut parts = Vec::new();
    let mut extended = None;
    for (i, e) in prim.iter().enumerate() {
        if e.kind == 0 {
            continue;
        }
        let n = fit::<u32, u64>(u64_from_usize(i), "MBR partition number")? + 1;
        let (start, len) = check(n, e, 0, 446 + 16 * u64_from_usize(i))?;
        if is_extended(e.kind) {
            extended = Some(e.lba);
            continue;
        }
        parts.push(Partition {
            number: n,
            start,
            len,
            type_guid: None,
            mbr_type: Some(e.kind),
            uuid: None,
            name: String::new(),
            attributes: 0,
            bootable: e.status == 0x80,
        });
    }
    let mut warnings = Vec::new();
    if let Some(ext) = extended {
        // Each EBR: entry 0 is a logical partition relative to this EBR, entry 1 the next
        // EBR relative to the extended partition's start.
        let mut seen = HashSet::new();
        let mut ebr = ext;
        let mut number = 5;
        loop {
            if !seen.insert(ebr) || seen.len() > MAX_LOGICAL {
                return Err(Error::corrupt("the chain of extended boot records loops or is too long")
                    .with_offset(ebr.saturating_mul(512)));
            }
            if ebr >= sectors {
                return Err(Error::out_of_bounds(format!("extended boot record at LBA {ebr} is past the disk's end"))
                    .with_offset(ebr.saturating_mul(512)));
            }
            let b = read_vec(disk, ebr * 512, 512)?;
            if b[510] != 0x55 || b[511] != 0xaa {
                warnings.push(format!("extended boot record at LBA {ebr} has no 55 AA signature; chain ends"));
                break;
            }
            let [logical, next, ..] = entries(&b)?;
            if logical.kind != 0 && logical.sectors != 0 {
                let (start, len) = check(number, &logical, ebr, ebr * 512 + 446)?;
                parts.push(Partition {
                    number,
                    start,
                    len,
                    type_guid: None,
                    mbr_type: Some(logical.kind),
                    uuid: None,
                    name: String::new(),
                    attributes: 0,
                    bootable: logical.status == 0x80,
                });
                number += 1;
            }
            if next.kind == 0 || next.sectors == 0 {
                break;
            }
            ebr = ext.checked_add(next.lba).ok_or_else(|| Error::out_of_bounds("EBR link overflows"))?;
        }
    }
    Ok(Some(Table { kind: TableKind::Mbr, sector_size: 512, disk_guid: None, partitions: parts, warnings }))
}

/// CHS address of `lba` for 255 heads and 63 sectors per track, clamped to the
/// largest CHS value as tools do for disks past 8 GiB.
fn chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (255 * 63);
    if cyl > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    // Below 256, 64 and 1024 by the arithmetic above; the cylinder's top two bits go into
    // the sector byte.
    [low_u8(head), low_u8(sector) | low_u8((cyl >> 2) & 0xc0), low_u8(cyl)]
}

/// A 16-byte MBR entry.
pub(crate) fn entry(status: u8, kind: u8, lba: u32, sectors: u32) -> [u8; 16] {
    let last = u64::from(lba) + u64::from(sectors).saturating_sub(1);
    let r = RawEntry {
        status,
        chs_first: chs(u64::from(lba)),
        kind,
        chs_last: chs(last),
        lba: lba.into(),
        sectors: sectors.into(),
    };
    let mut e = [0u8; 16];
    e.copy_from_slice(r.as_bytes());
    e
}

/// Sector 0 with up to four entries and a disk signature.
pub(crate) fn sector(signature: u32, entries: &[[u8; 16]]) -> Vec<u8> {
    let mut r = RawSector {
        boot_code: [0; 440],
        disk_signature: signature.into(),
        reserved: [0; 2],
        entries: [RawEntry::new_zeroed(); 4],
        boot_signature: [0x55, 0xaa],
    };
    for (dst, e) in r.entries.iter_mut().zip(entries) {
        dst.as_mut_bytes().copy_from_slice(e);
    }
    r.as_bytes().to_vec()
}
