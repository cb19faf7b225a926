//! The ISO 9660 and El Torito on-disk layouts, read and written from the same structs:
//! directory records (ECMA-119 9.1), volume descriptors (8.1, 8.4, 8.5, El Torito 2.0),
//! path table records (9.4) and boot catalog entries (El Torito 2.1-2.4).

use diskcast_layout::{
    Be16, Be32, Both16, Both32, FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Unaligned,
};

/// The fixed 33 bytes of a directory record; the identifier, a pad byte when its length
/// is even, and the system use area follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct DirRecordHead {
    pub len: u8,
    pub ext_attr_len: u8,
    pub extent: Both32,
    pub size: Both32,
    pub date: [u8; 7],
    pub flags: u8,
    pub file_unit_size: u8,
    pub interleave_gap: u8,
    pub volume_seq: Both16,
    pub name_len: u8,
}

/// The first 7 bytes of every volume descriptor.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct DescriptorHead {
    pub ty: u8,
    pub id: [u8; 5],
    pub version: u8,
}

/// Standard identifier of every volume descriptor.
pub(crate) const CD001: [u8; 5] = *b"CD001";

/// The primary (type 1) and supplementary (type 2, Joliet) volume descriptor.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct VolumeDescriptor {
    pub head: DescriptorHead,
    pub flags: u8,
    pub system_id: [u8; 32],
    pub volume_id: [u8; 32],
    pub unused1: [u8; 8],
    pub space_size: Both32,
    /// Joliet's UCS-2 escape sequence (`%/@`, `%/C`, `%/E`) in a supplementary one.
    pub escapes: [u8; 32],
    pub set_size: Both16,
    pub sequence: Both16,
    pub block_size: Both16,
    pub path_table_size: Both32,
    pub l_path_table: Le32,
    pub l_path_table_opt: Le32,
    pub m_path_table: Be32,
    pub m_path_table_opt: Be32,
    pub root: [u8; 34],
    pub volume_set_id: [u8; 128],
    pub publisher_id: [u8; 128],
    pub preparer_id: [u8; 128],
    pub application_id: [u8; 128],
    pub copyright_file: [u8; 37],
    pub abstract_file: [u8; 37],
    pub bibliographic_file: [u8; 37],
    pub created: [u8; 17],
    pub modified: [u8; 17],
    pub expires: [u8; 17],
    pub effective: [u8; 17],
    pub structure_version: u8,
    pub unused2: u8,
    pub application_use: [u8; 512],
    pub reserved: [u8; 653],
}

/// The El Torito boot record (type 0).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct BootRecord {
    pub head: DescriptorHead,
    pub boot_system_id: [u8; 32],
    pub boot_id: [u8; 32],
    pub catalog: Le32,
    pub unused: [u8; 1973],
}

/// `boot_system_id` of an El Torito boot record (the rest of the field is zero).
pub(crate) const EL_TORITO: &[u8; 23] = b"EL TORITO SPECIFICATION";

/// A path table record with the little-endian (L) and big-endian (M) tables' field types.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct PathRecord<U32, U16> {
    pub name_len: u8,
    pub ext_attr_len: u8,
    pub extent: U32,
    pub parent: U16,
}
pub(crate) type PathRecordL = PathRecord<Le32, Le16>;
pub(crate) type PathRecordM = PathRecord<Be32, Be16>;

/// The boot catalog's validation entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct ValidationEntry {
    pub header_id: u8,
    pub platform: u8,
    pub reserved: [u8; 2],
    pub id: [u8; 24],
    pub checksum: Le16,
    pub key: [u8; 2],
}

/// The initial/default entry and every section entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct BootCatalogEntry {
    /// 0x88 bootable, 0 not.
    pub indicator: u8,
    pub media: u8,
    pub load_segment: Le16,
    pub system_type: u8,
    pub unused: u8,
    pub sector_count: Le16,
    pub lba: Le32,
    pub selection: [u8; 20],
}

/// A section header: 0x90, or 0x91 for the last section.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct SectionHeader {
    pub indicator: u8,
    pub platform: u8,
    pub count: Le16,
    pub id: [u8; 28],
}

const _: () = assert!(size_of::<DirRecordHead>() == 33);
const _: () = assert!(size_of::<VolumeDescriptor>() == 2048 && size_of::<BootRecord>() == 2048);
const _: () = assert!(size_of::<PathRecordL>() == 8 && size_of::<PathRecordM>() == 8);
const _: () = assert!(size_of::<ValidationEntry>() == 32 && size_of::<BootCatalogEntry>() == 32);
const _: () = assert!(size_of::<SectionHeader>() == 32);
