//! On-disk constants and the checksums of the exFAT specification: the boot checksum
//! (section 3.4), the entry set checksum (6.3.3), the name hash (7.6.4), the up-case
//! table checksum (7.2.2) and the up-case table itself (7.2.5, compressed form), and the
//! layouts of the boot sector and the directory entries, read and written from the same
//! structs.

use diskcast_layout::{FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Le64, Unaligned};

/// `FileSystemName` of the main boot sector.
pub(crate) const FS_NAME: &[u8; 8] = b"EXFAT   ";
/// Sectors of one boot region: main boot sector, 8 extended boot sectors, OEM
/// parameters, a reserved sector and the checksum sector.
pub(crate) const BOOT_REGION_SECTORS: u64 = 12;
/// Highest valid cluster count (the FAT's values from 0xFFFFFFF7 up are markers).
pub(crate) const MAX_CLUSTERS: u64 = 0xffff_fff5;
/// A directory holds at most 256 MiB of entries (specification 6.2).
pub(crate) const MAX_DIR_BYTES: u64 = 256 << 20;
/// Directory entry size.
pub(crate) const ENTRY: usize = 32;
/// A file name holds at most 255 UTF-16 units (17 name entries of 15).
pub(crate) const MAX_NAME_UNITS: usize = 255;
/// UTF-16 units per file name entry.
pub(crate) const NAME_UNITS_PER_ENTRY: usize = 15;

/// The main (and backup) boot sector (specification 3.1).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct BootSector {
    pub jump: [u8; 3],
    pub fs_name: [u8; 8],
    pub must_be_zero: [u8; 53],
    pub partition_offset: Le64,
    pub volume_length: Le64,
    pub fat_offset: Le32,
    pub fat_length: Le32,
    pub cluster_heap_offset: Le32,
    pub cluster_count: Le32,
    pub first_cluster_of_root: Le32,
    pub volume_serial: Le32,
    pub fs_revision: Le16,
    pub volume_flags: Le16,
    pub bytes_per_sector_shift: u8,
    pub sectors_per_cluster_shift: u8,
    pub number_of_fats: u8,
    pub drive_select: u8,
    pub percent_in_use: u8,
    pub reserved: [u8; 7],
    pub boot_code: [u8; 390],
    pub signature: [u8; 2],
}

/// A file directory entry, the primary of a file's entry set (7.4).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct FileEntry {
    pub entry_type: u8,
    pub secondary_count: u8,
    pub set_checksum: Le16,
    pub attributes: Le16,
    pub reserved1: [u8; 2],
    pub create: Le32,
    pub modify: Le32,
    pub access: Le32,
    pub create_10ms: u8,
    pub modify_10ms: u8,
    pub create_utc: u8,
    pub modify_utc: u8,
    pub access_utc: u8,
    pub reserved2: [u8; 7],
}

/// The stream extension entry: where a file's data is and how long it is (7.6).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct StreamEntry {
    pub entry_type: u8,
    pub flags: u8,
    pub reserved1: u8,
    pub name_length: u8,
    pub name_hash: Le16,
    pub reserved2: [u8; 2],
    pub valid_data_length: Le64,
    pub reserved3: [u8; 4],
    pub first_cluster: Le32,
    pub data_length: Le64,
}

/// A file name entry: 15 UTF-16 units of the name (7.7).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct NameEntry {
    pub entry_type: u8,
    pub flags: u8,
    pub name: [Le16; NAME_UNITS_PER_ENTRY],
}

/// The allocation bitmap (7.1) and up-case table (7.2) entries share this shape; `flags`
/// is the bitmap's BitmapFlags, `table_checksum` the up-case table's (reserved in the
/// bitmap entry).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct AllocEntry {
    pub entry_type: u8,
    pub flags: u8,
    pub reserved1: [u8; 2],
    pub table_checksum: Le32,
    pub reserved2: [u8; 12],
    pub first_cluster: Le32,
    pub data_length: Le64,
}

/// The volume label entry (7.3).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct LabelEntry {
    pub entry_type: u8,
    pub character_count: u8,
    pub label: [Le16; 11],
    pub reserved: [u8; 8],
}

const _: () = assert!(size_of::<BootSector>() == 512);
const _: () = assert!(size_of::<FileEntry>() == ENTRY && size_of::<StreamEntry>() == ENTRY);
const _: () = assert!(size_of::<NameEntry>() == ENTRY && size_of::<AllocEntry>() == ENTRY);
const _: () = assert!(size_of::<LabelEntry>() == ENTRY);

/// Entry types.
pub(crate) const T_BITMAP: u8 = 0x81;
pub(crate) const T_UPCASE: u8 = 0x82;
pub(crate) const T_LABEL: u8 = 0x83;
pub(crate) const T_FILE: u8 = 0x85;
pub(crate) const T_STREAM: u8 = 0xc0;
pub(crate) const T_NAME: u8 = 0xc1;

/// File attributes.
pub(crate) const ATTR_READ_ONLY: u16 = 0x01;
pub(crate) const ATTR_DIRECTORY: u16 = 0x10;
pub(crate) const ATTR_ARCHIVE: u16 = 0x20;

/// Stream extension flags.
pub(crate) const ALLOCATION_POSSIBLE: u8 = 0x01;
pub(crate) const NO_FAT_CHAIN: u8 = 0x02;

/// FAT values.
pub(crate) const FAT_EOC: u32 = 0xffff_ffff;
pub(crate) const FAT_MEDIA: u32 = 0xffff_fff8;

/// `BootChecksum` over sectors 0..11 of a boot region, skipping `VolumeFlags` (bytes
/// 106-107) and `PercentInUse` (112), which change without the checksum being rewritten.
pub(crate) fn boot_checksum(region: &[u8], sector: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &b) in region.iter().take(sector * 11).enumerate() {
        if matches!(i, 106 | 107 | 112) {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(b));
    }
    sum
}

/// `SetChecksum` of an entry set, skipping its own field (bytes 2-3 of the first entry).
pub(crate) fn set_checksum(set: &[u8]) -> u16 {
    let mut sum = 0u16;
    for (i, &b) in set.iter().enumerate() {
        if i == 2 || i == 3 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u16::from(b));
    }
    sum
}

/// `NameHash` of a name already up-cased.
pub(crate) fn name_hash(upcased: &[u16]) -> u16 {
    let mut sum = 0u16;
    for &u in upcased {
        for b in u.to_le_bytes() {
            sum = sum.rotate_right(1).wrapping_add(u16::from(b));
        }
    }
    sum
}

/// `TableChecksum` of an up-case table (the same sum as the boot checksum, all bytes).
pub(crate) fn table_checksum(table: &[u8]) -> u32 {
    table.iter().fold(0u32, |sum, &b| sum.rotate_right(1).wrapping_add(u32::from(b)))
}

/// The specification's recommended up-case table in its compressed form (section
/// 7.2.5.1: 5836 bytes, TableChecksum 0xE619D30D), as Windows and mkfs.exfat write it.
/// The bytes were taken from an image made by mkfs.exfat (exfatprogs 1.2.0). Names are
/// hashed and compared through this same table, so lookups by every driver agree.
pub(crate) const UPCASE_TABLE: &[u8] = include_bytes!("upcase.bin");

/// The up-case mapping of one UTF-16 unit, through [`UPCASE_TABLE`].
pub(crate) fn upcase(u: u16) -> u16 {
    static MAP: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| expand_upcase(UPCASE_TABLE)).get(usize::from(u)).copied().unwrap_or(u)
}

/// Expands a compressed up-case table (`0xFFFF, n`: the next `n` units map to
/// themselves) into 65536 mappings; units past its end map to themselves.
pub(crate) fn expand_upcase(table: &[u8]) -> Vec<u16> {
    let mut map: Vec<u16> = (0..=u16::MAX).collect();
    let units: Vec<u16> = table.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut at = 0usize;
    let mut k = 0usize;
    while k < units.len() && at < map.len() {
        if units[k] == 0xffff && k + 1 < units.len() {
            at = at.saturating_add(usize::from(units[k + 1]));
            k += 2;
        } else {
            map[at] = units[k];
            at += 1;
            k += 1;
        }
    }
    map
}

/// An exFAT timestamp (DOS date and time, 10 ms increment, UTC offset 0 marked valid)
/// for Unix time `sec`.`nsec`.
pub(crate) fn timestamp(sec: i64, nsec: u32) -> (u32, u8, u8) {
    let (date, time, ms10) = diskcast_fat::to_dos(sec, nsec);
    ((u32::from(date) << 16) | u32::from(time), ms10, 0x80)
}

/// Unix seconds and nanoseconds of an exFAT timestamp; `None` for a zero or impossible
/// date.
pub(crate) fn from_timestamp(ts: u32, ms10: u8, utc: u8) -> Option<(i64, u32)> {
    let date = u16::try_from(ts >> 16).ok()?;
    let time = u16::try_from(ts & 0xffff).ok()?;
    let mut sec = diskcast_fat::from_dos(date, time)?;
    let ms10 = ms10.min(199);
    sec += i64::from(ms10 / 100);
    let nsec = u32::from(ms10 % 100) * 10_000_000;
    if utc & 0x80 != 0 {
        // 7-bit two's complement count of 15-minute intervals east of UTC.
        let raw = i64::from(utc & 0x7f);
        let quarters = if raw >= 64 { raw - 128 } else { raw };
        sec -= quarters * 15 * 60;
    }
    Some((sec, nsec))
}

/// Why a name cannot be an exFAT file name, if it cannot (section 7.7.3: 1-255 UTF-16
/// units, no control characters and none of `" * / : < > ? \ |`).
pub(crate) fn name_problem(units: &[u16]) -> Option<&'static str> {
    if units.is_empty() {
        return Some("is empty");
    }
    if units.len() > MAX_NAME_UNITS {
        return Some("is longer than 255 UTF-16 units");
    }
    if units.iter().any(|&u| u < 0x20 || b"\"*/:<>?\\|".iter().any(|&c| u16::from(c) == u)) {
        return Some("holds a character exFAT forbids (control, \" * / : < > ? \\ |)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upcase_table_is_the_recommended_one() {
        assert_eq!(UPCASE_TABLE.len(), 5836);
        assert_eq!(table_checksum(UPCASE_TABLE), 0xe619_d30d);
        assert_eq!(upcase(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(upcase(0xe9), 0xc9);
        assert_eq!(upcase(0x3b1), 0x391);
        assert_eq!(upcase(u16::from(b'Z')), u16::from(b'Z'));
        assert_eq!(upcase(0xd800), 0xd800);
    }

    #[test]
    fn checksums_rotate_right() {
        assert_eq!(set_checksum(&[1, 0, 9, 9]), 0x8000u16.wrapping_add(0));
        assert_eq!(table_checksum(&[1, 1]), 0x8000_0001);
        assert_eq!(name_hash(&[u16::from(b'A')]), 0x0041u16.rotate_right(1));
    }
}
