//! The WIM structures a split reads and writes, declared once for both directions, and
//! the caps that bound what a hostile file can make us read.
//!
//! Layout as in Microsoft's "Windows Imaging File Format (WIM)" document and wimlib's
//! `header.h`/`resource.h`/`blob_table.c`: a 208-byte header, resources anywhere after it,
//! a blob (lookup) table of 50-byte entries and the XML data, each found through a
//! 24-byte resource header.

use diskcast_layout::{FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Le64, Unaligned};

/// The magic of a WIM file.
pub const MAGIC: [u8; 8] = *b"MSWIM\0\0\0";
/// The magic of wimlib's pipable WIMs, a different layout (blob headers inline).
pub const PIPABLE_MAGIC: [u8; 8] = *b"WLPWM\0\0\0";
/// Size of the header, the only size readers accept in its `header_size` field.
pub const HEADER_SIZE: usize = 208;
/// Size of one blob table entry.
pub const ENTRY_SIZE: usize = 50;

/// Header flag: the file is one part of a split set.
pub const HDR_SPANNED: u32 = 0x8;
/// Header flag: the file holds resources only (no metadata, no images).
pub const HDR_RESOURCE_ONLY: u32 = 0x10;
/// Header flag: the file holds metadata only.
pub const HDR_METADATA_ONLY: u32 = 0x20;
/// Header flag: a writer had the file open (or crashed while writing it).
pub const HDR_WRITE_IN_PROGRESS: u32 = 0x40;

/// Resource flag: a free (unused) entry.
pub const RES_FREE: u8 = 0x01;
/// Resource flag: an image's metadata resource (also set on the blob table and XML).
pub const RES_METADATA: u8 = 0x02;
/// Resource flag: stored compressed in chunks.
pub const RES_COMPRESSED: u8 = 0x04;
/// Resource flag: the resource continues in the next part.
pub const RES_SPANNED: u8 = 0x08;
/// Resource flag: a solid resource, or a blob inside one.
pub const RES_SOLID: u8 = 0x10;
/// Every resource flag this crate knows.
pub const RES_KNOWN: u8 = RES_FREE | RES_METADATA | RES_COMPRESSED | RES_SPANNED | RES_SOLID;
/// The uncompressed size that marks a blob table entry as a solid resource itself
/// (rather than a blob inside one).
pub const SOLID_RESOURCE_MAGIC: u64 = 0x1_0000_0000;
/// The largest stored size a resource header holds (56 bits).
pub const MAX_RESOURCE_SIZE: u64 = (1 << 56) - 1;

/// Most bytes of blob table read. A Windows install.wim with several editions has a few
/// hundred thousand blobs (~15 MiB of entries); 128 MiB (2.6 million entries) leaves room
/// for bigger real images while a hostile header cannot make us allocate more.
pub const MAX_BLOB_TABLE_BYTES: u64 = 128 << 20;
/// Most bytes of XML data read. It is copied into every part; Windows images carry a few
/// KiB per image.
pub const MAX_XML_BYTES: u64 = 16 << 20;
/// Most parts a split set can have: the header's part fields are 16-bit.
pub const MAX_PARTS: usize = 0xffff;

/// Where a resource is and how it is stored.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ResHdr {
    /// Stored size in the file, 56-bit little-endian.
    pub size_in_wim: [u8; 7],
    /// `RES_*` flags.
    pub flags: u8,
    /// Where the resource starts in the file (for a blob inside a solid resource: in the
    /// resource's uncompressed data).
    pub offset: Le64,
    /// Size once decompressed ([`SOLID_RESOURCE_MAGIC`] for a solid resource's entry).
    pub uncompressed_size: Le64,
}
const _: () = assert!(size_of::<ResHdr>() == 24);

impl ResHdr {
    /// The stored size.
    pub fn size(&self) -> u64 {
        let mut b = [0u8; 8];
        b[..7].copy_from_slice(&self.size_in_wim);
        u64::from_le_bytes(b)
    }

    /// Sets the stored size; `None` when it does not fit 56 bits.
    pub fn set_size(&mut self, size: u64) -> Option<()> {
        if size > MAX_RESOURCE_SIZE {
            return None;
        }
        self.size_in_wim.copy_from_slice(&size.to_le_bytes()[..7]);
        Some(())
    }
}

/// The WIM header at offset 0.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`HEADER_SIZE`].
    pub header_size: Le32,
    /// Format version (0x10d00; 0xe00 for solid WIMs).
    pub version: Le32,
    /// `HDR_*` flags and the compression type.
    pub flags: Le32,
    /// Chunk size of compressed resources.
    pub chunk_size: Le32,
    /// Identifies the WIM; every part of a split set has the same.
    pub guid: [u8; 16],
    /// This part's number, from 1.
    pub part_number: Le16,
    /// How many parts the set has.
    pub total_parts: Le16,
    /// How many images the WIM holds.
    pub image_count: Le32,
    /// The blob table.
    pub blob_table: ResHdr,
    /// The XML data.
    pub xml: ResHdr,
    /// The bootable image's metadata resource (zero when no image boots).
    pub boot_metadata: ResHdr,
    /// The bootable image, from 1 (0: none).
    pub boot_index: Le32,
    /// The integrity table (SHA-1 of 10 MiB chunks), if any.
    pub integrity: ResHdr,
    /// Unused, zero.
    pub unused: [u8; 60],
}
const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

/// One blob table entry: a resource, or a blob inside a solid resource.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Entry {
    /// Where it is.
    pub res: ResHdr,
    /// The part that holds it.
    pub part_number: Le16,
    /// How many files refer to it.
    pub refcnt: Le32,
    /// SHA-1 of its uncompressed data.
    pub hash: [u8; 20],
}
const _: () = assert!(size_of::<Entry>() == ENTRY_SIZE);
