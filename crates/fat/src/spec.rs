//! The FAT on-disk layouts, read and written from the same structs: the BIOS parameter
//! block (Microsoft's "FAT: General Overview of On-Disk Format", section 3), FAT32's
//! FSInfo sector (section 5), the 32-byte directory entry (section 6) and the VFAT
//! long-name slot.

use diskcast_layout::{FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Unaligned};

/// The BPB fields every FAT type shares (bytes 0-35 of the boot sector).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Bpb {
    pub jump: [u8; 3],
    pub oem_name: [u8; 8],
    pub bytes_per_sector: Le16,
    pub sectors_per_cluster: u8,
    pub reserved_sectors: Le16,
    pub num_fats: u8,
    pub root_entries: Le16,
    pub total_sectors16: Le16,
    pub media: u8,
    pub fat_size16: Le16,
    pub sectors_per_track: Le16,
    pub heads: Le16,
    pub hidden_sectors: Le32,
    pub total_sectors32: Le32,
}

/// FAT32's extra BPB fields (bytes 36-63), before its extended BPB.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Fat32Bpb {
    pub fat_size32: Le32,
    pub ext_flags: Le16,
    pub fs_version: Le16,
    pub root_cluster: Le32,
    pub fs_info: Le16,
    pub backup_boot: Le16,
    pub reserved: [u8; 12],
}

/// The extended BPB: at byte 36 on FAT12/16, at byte 64 on FAT32.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct ExtBpb {
    pub drive_number: u8,
    pub reserved: u8,
    /// 0x29 when the three fields after it are present.
    pub boot_signature: u8,
    pub volume_id: Le32,
    pub label: [u8; 11],
    pub fs_type: [u8; 8],
}

/// Where the extended BPB starts on FAT12/16 and on FAT32.
pub(crate) const EXT_BPB_16: usize = size_of::<Bpb>();
pub(crate) const EXT_BPB_32: usize = size_of::<Bpb>() + size_of::<Fat32Bpb>();

/// FAT32's FSInfo sector.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct FsInfo {
    pub lead_sig: Le32,
    pub reserved1: [u8; 480],
    pub struc_sig: Le32,
    pub free_count: Le32,
    pub next_free: Le32,
    pub reserved2: [u8; 12],
    pub trail_sig: Le32,
}

pub(crate) const FSINFO_LEAD_SIG: u32 = 0x4161_5252;
pub(crate) const FSINFO_STRUC_SIG: u32 = 0x6141_7272;
pub(crate) const FSINFO_TRAIL_SIG: u32 = 0xaa55_0000;

/// A short (8.3) directory entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct DirEntry {
    pub name: [u8; 11],
    pub attr: u8,
    /// Windows NT's case bits: 0x08 lowercase base, 0x10 lowercase extension.
    pub nt_case: u8,
    pub create_tenths: u8,
    pub create_time: Le16,
    pub create_date: Le16,
    pub access_date: Le16,
    pub cluster_hi: Le16,
    pub write_time: Le16,
    pub write_date: Le16,
    pub cluster_lo: Le16,
    pub size: Le32,
}

/// A VFAT long-name slot: 13 UTF-16 units of the name in three pieces.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct LfnEntry {
    /// Sequence number (1-20), 0x40 on the last (first stored) slot.
    pub ord: u8,
    pub name1: [Le16; 5],
    /// Always 0x0f.
    pub attr: u8,
    pub kind: u8,
    pub checksum: u8,
    pub name2: [Le16; 6],
    pub cluster: Le16,
    pub name3: [Le16; 2],
}

/// UTF-16 units in one long-name slot.
pub(crate) const LFN_UNITS: usize = 13;

impl LfnEntry {
    /// The slot's 13 units, in name order.
    pub(crate) fn units(&self) -> impl Iterator<Item = u16> + '_ {
        self.name1.iter().chain(&self.name2).chain(&self.name3).map(|u| u.get())
    }
    /// The slot's 13 unit fields, in name order, for writing.
    pub(crate) fn units_mut(&mut self) -> impl Iterator<Item = &mut Le16> {
        self.name1.iter_mut().chain(&mut self.name2).chain(&mut self.name3)
    }
}

const _: () = assert!(size_of::<Bpb>() == 36 && size_of::<Fat32Bpb>() == 28 && size_of::<ExtBpb>() == 26);
const _: () = assert!(size_of::<FsInfo>() == 512);
const _: () = assert!(size_of::<DirEntry>() == 32 && size_of::<LfnEntry>() == 32);
