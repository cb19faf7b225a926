//! On-disk structures of VHDX ([MS-VHDX] v1.0): the file type identifier, the two headers,
//! the two region tables, the metadata table and its known items, the BAT entry layout,
//! and the parent locator. Parsing validates every field against the file; building
//! produces the same structures for the writer, with their CRC-32C.

use diskcast_block::{Error, Result};
use diskcast_layout::{
    FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Le16, Le32, Le64, Unaligned, fit, put, put_le32, read,
    u64_from_usize, usize_from,
};
use uuid::Uuid;

/// 1 MiB: the alignment of regions, the log and payload blocks.
pub const MIB: u64 = 1 << 20;
/// 64 KiB: size of the file type identifier, a region table and the metadata table.
pub const KIB64: u64 = 64 << 10;
/// Signature at offset 0.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 << 10, 128 << 10];
/// Offsets of the two region tables.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 << 10, 256 << 10];
/// A header is 4 KiB on disk (it occupies a 64 KiB slot).
pub const HEADER_SIZE: usize = 4096;
/// A region table is 64 KiB, checksummed as a whole.
pub const REGION_TABLE_SIZE: usize = 64 << 10;
/// The spec's limit on region table entries.
pub const MAX_REGION_ENTRIES: u32 = 2047;
/// The spec's limit on metadata table entries.
pub const MAX_METADATA_ENTRIES: u16 = 2047;
/// Block sizes the spec allows: powers of two from 1 MiB to 256 MiB.
pub const MIN_BLOCK_SIZE: u64 = MIB;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u64 = 256 * MIB;
/// The spec's largest virtual disk: 64 TiB.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
/// Metadata items are at most 1 MiB each (spec).
pub const MAX_METADATA_ITEM: u32 = 1 << 20;
/// Largest BAT we hold in memory. 64 TiB at 1 MiB blocks needs 512 MiB of BAT; we stop
/// at 256 MiB (32 TiB at 1 MiB blocks, every size at larger blocks) so a hostile image
/// cannot make us allocate more.
pub const MAX_BAT_BYTES: u64 = 256 * MIB;

/// Region GUIDs.
pub const BAT_GUID: Uuid = Uuid::from_u128(0x2DC27766_F623_4200_9D64_115E9BFD4A08);
/// See [`BAT_GUID`].
pub const METADATA_GUID: Uuid = Uuid::from_u128(0x8B7CA206_4790_4B9A_B8FE_575F050F886E);
/// Metadata item GUIDs.
pub const FILE_PARAMETERS: Uuid = Uuid::from_u128(0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B);
/// See [`FILE_PARAMETERS`].
pub const VIRTUAL_DISK_SIZE: Uuid = Uuid::from_u128(0x2FA54224_CD1B_4876_B211_5DBED83BF4B8);
/// See [`FILE_PARAMETERS`].
pub const PAGE83_DATA: Uuid = Uuid::from_u128(0xBECA12AB_B2E6_4523_93EF_C309E000C746);
/// See [`FILE_PARAMETERS`].
pub const LOGICAL_SECTOR_SIZE: Uuid = Uuid::from_u128(0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F);
/// See [`FILE_PARAMETERS`].
pub const PHYSICAL_SECTOR_SIZE: Uuid = Uuid::from_u128(0xCDA348C7_445D_4471_9CC9_E9885251C556);
/// See [`FILE_PARAMETERS`].
pub const PARENT_LOCATOR: Uuid = Uuid::from_u128(0xA8D35F2D_B30B_454D_ABF7_D3D84834AB0C);
/// The locator type of a VHDX parent.
pub const VHDX_PARENT_LOCATOR_TYPE: Uuid = Uuid::from_u128(0xB04AEFB7_D19E_4A81_B789_25B8E9445913);

/// Payload block states (BAT entry bits 0..3).
pub const PAYLOAD_NOT_PRESENT: u64 = 0;
/// See [`PAYLOAD_NOT_PRESENT`].
pub const PAYLOAD_UNDEFINED: u64 = 1;
/// See [`PAYLOAD_NOT_PRESENT`].
pub const PAYLOAD_ZERO: u64 = 2;
/// See [`PAYLOAD_NOT_PRESENT`].
pub const PAYLOAD_UNMAPPED: u64 = 3;
/// See [`PAYLOAD_NOT_PRESENT`].
pub const PAYLOAD_FULLY_PRESENT: u64 = 6;
/// See [`PAYLOAD_NOT_PRESENT`].
pub const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
/// Sector bitmap block present.
pub const SB_PRESENT: u64 = 6;
/// Mask of the state bits.
pub const STATE_MASK: u64 = 7;

/// The file offset a BAT entry names (bits 20..64, in MiB).
pub fn bat_offset(entry: u64) -> u64 {
    (entry >> 20) << 20
}

/// CRC-32C of `buf` with the 4-byte checksum field at `at` taken as zero.
pub fn crc_with_hole(buf: &[u8], at: usize) -> u32 {
    let (a, rest) = buf.split_at(at.min(buf.len()));
    let b = rest.get(4..).unwrap_or(&[]);
    let c = crc32c::crc32c_append(crc32c::crc32c(a), &[0; 4]);
    crc32c::crc32c_append(c, b)
}

/// A GUID as [MS-VHDX] stores it (the first three fields little-endian).
pub type RawGuid = [u8; 16];

/// The file type identifier at offset 0 (the creator string is for people only).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawFileIdentifier {
    pub signature: [u8; 8],
    pub creator: [Le16; 256],
}

/// A header as stored (2.2.2), padded to its 4 KiB; read by [`Header::parse`] and written by
/// [`Header::to_bytes`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawHeader {
    pub signature: [u8; 4],
    pub checksum: Le32,
    pub sequence_number: Le64,
    pub file_write_guid: RawGuid,
    pub data_write_guid: RawGuid,
    pub log_guid: RawGuid,
    pub log_version: Le16,
    pub version: Le16,
    pub log_length: Le32,
    pub log_offset: Le64,
    pub reserved: [u8; 4016],
}
const _: () = assert!(size_of::<RawHeader>() == HEADER_SIZE);

/// The region table header (2.2.3); `entry_count` [`RawRegionEntry`]s follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawRegionTableHeader {
    pub signature: [u8; 4],
    pub checksum: Le32,
    pub entry_count: Le32,
    pub reserved: Le32,
}

/// One region table entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawRegionEntry {
    pub guid: RawGuid,
    pub file_offset: Le64,
    pub length: Le32,
    pub required: Le32,
}

/// The metadata table header (2.6.1); `entry_count` [`RawMetadataEntry`]s follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawMetadataTableHeader {
    pub signature: [u8; 8],
    pub reserved: Le16,
    pub entry_count: Le16,
    pub reserved2: [u8; 20],
}

/// One metadata table entry.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawMetadataEntry {
    pub item_id: RawGuid,
    pub offset: Le32,
    pub length: Le32,
    pub flags: Le32,
    pub reserved: Le32,
}

/// The file parameters metadata item.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawFileParameters {
    pub block_size: Le32,
    pub flags: Le32,
}

/// The parent locator header (2.6.2.6); `key_value_count` [`RawLocatorEntry`]s follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawLocatorHeader {
    pub locator_type: RawGuid,
    pub reserved: Le16,
    pub key_value_count: Le16,
}

/// One parent locator key/value entry (offsets from the start of the item).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawLocatorEntry {
    pub key_offset: Le32,
    pub value_offset: Le32,
    pub key_length: Le16,
    pub value_length: Le16,
}

/// A BAT as stored: little-endian 64-bit entries (a trailing partial entry is ignored).
pub fn bat_entries(raw: &[u8]) -> Vec<u64> {
    let whole = raw.len() / 8 * 8;
    <[Le64]>::ref_from_bytes(&raw[..whole]).unwrap_or_default().iter().map(|e| e.get()).collect()
}

/// Writes the structure `v` at `at` of `buf`, then its CRC-32C at `crc_at` over all of `buf`.
fn with_crc<T: IntoBytes + Immutable>(buf: &mut [u8], v: &T, crc_at: usize, what: &'static str) -> Result<()> {
    put(buf, 0, v, what)?;
    let c = crc_with_hole(buf, crc_at);
    Ok(put_le32(buf, crc_at, c, what)?)
}

/// One of the two headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Higher wins.
    pub sequence_number: u64,
    /// Changes whenever the file is opened for writing.
    pub file_write_guid: Uuid,
    /// Changes whenever guest data changes; children record it as `parent_linkage`.
    pub data_write_guid: Uuid,
    /// Non-zero: the log may hold entries to replay.
    pub log_guid: Uuid,
    /// Must be 0.
    pub log_version: u16,
    /// Must be 1.
    pub version: u16,
    /// Bytes, a multiple of 1 MiB.
    pub log_length: u32,
    /// File offset, a multiple of 1 MiB.
    pub log_offset: u64,
}

impl Header {
    /// Parses a 4 KiB header; `None` when its signature or CRC-32C is wrong.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let r = read::<RawHeader>(b, 0, "VHDX header").ok()?;
        if &r.signature != b"head" || crc_with_hole(r.as_bytes(), 4) != r.checksum.get() {
            return None;
        }
        Some(Header {
            sequence_number: r.sequence_number.get(),
            file_write_guid: Uuid::from_bytes_le(r.file_write_guid),
            data_write_guid: Uuid::from_bytes_le(r.data_write_guid),
            log_guid: Uuid::from_bytes_le(r.log_guid),
            log_version: r.log_version.get(),
            version: r.version.get(),
            log_length: r.log_length.get(),
            log_offset: r.log_offset.get(),
        })
    }

    /// The 4 KiB on-disk form with its checksum.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut r = RawHeader::new_zeroed();
        r.signature = *b"head";
        r.sequence_number = self.sequence_number.into();
        r.file_write_guid = self.file_write_guid.to_bytes_le();
        r.data_write_guid = self.data_write_guid.to_bytes_le();
        r.log_guid = self.log_guid.to_bytes_le();
        r.log_version = self.log_version.into();
        r.version = self.version.into();
        r.log_length = self.log_length.into();
        r.log_offset = self.log_offset.into();
        let mut b = vec![0u8; HEADER_SIZE];
        with_crc(&mut b, &r, 4, "VHDX header")?;
        Ok(b)
    }
}

/// One region table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Which region.
    pub guid: Uuid,
    /// File offset, a multiple of 1 MiB.
    pub offset: u64,
    /// Bytes, a multiple of 1 MiB.
    pub length: u32,
    /// The reader must understand this region.
    pub required: bool,
}

/// Parses a 64 KiB region table; `Ok(None)` when its signature or CRC is wrong,
/// an error when the entry count is impossible.
pub fn parse_region_table(b: &[u8]) -> Result<Option<Vec<Region>>> {
    let Some(b) = b.get(..REGION_TABLE_SIZE) else { return Ok(None) };
    let h = read::<RawRegionTableHeader>(b, 0, "VHDX region table")?;
    if &h.signature != b"regi" || crc_with_hole(b, 4) != h.checksum.get() {
        return Ok(None);
    }
    let count = h.entry_count.get();
    if count > MAX_REGION_ENTRIES {
        return Err(Error::corrupt(format!("region table has {count} entries; at most {MAX_REGION_ENTRIES} fit"))
            .with_field("entry_count"));
    }
    let mut out = Vec::new();
    for i in 0..usize_from(count) {
        let at = size_of::<RawRegionTableHeader>() + size_of::<RawRegionEntry>() * i;
        let e = read::<RawRegionEntry>(b, at, "VHDX region table entry")?;
        out.push(Region {
            guid: Uuid::from_bytes_le(e.guid),
            offset: e.file_offset.get(),
            length: e.length.get(),
            required: e.required.get() & 1 != 0,
        });
    }
    Ok(Some(out))
}

/// The 64 KiB on-disk region table with its checksum.
pub fn region_table_bytes(regions: &[Region]) -> Result<Vec<u8>> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    for (i, r) in regions.iter().enumerate() {
        let e = RawRegionEntry {
            guid: r.guid.to_bytes_le(),
            file_offset: r.offset.into(),
            length: r.length.into(),
            required: u32::from(r.required).into(),
        };
        put(
            &mut b,
            size_of::<RawRegionTableHeader>() + size_of::<RawRegionEntry>() * i,
            &e,
            "VHDX region table entry",
        )?;
    }
    let h = RawRegionTableHeader {
        signature: *b"regi",
        checksum: 0.into(),
        entry_count: fit::<u32, u64>(u64_from_usize(regions.len()), "region table entry_count")?.into(),
        reserved: 0.into(),
    };
    with_crc(&mut b, &h, 4, "VHDX region table")?;
    Ok(b)
}

/// One metadata table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataEntry {
    /// Which item.
    pub item: Uuid,
    /// Offset from the start of the metadata region.
    pub offset: u32,
    /// Bytes.
    pub length: u32,
    /// A user item (not a system item).
    pub is_user: bool,
    /// The reader must understand this item.
    pub is_required: bool,
}

/// Parses the metadata table (the first 64 KiB of the metadata region).
pub fn parse_metadata_table(b: &[u8]) -> Result<Vec<MetadataEntry>> {
    let h = read::<RawMetadataTableHeader>(b, 0, "VHDX metadata table")?;
    if &h.signature != b"metadata" {
        return Err(Error::corrupt("metadata table signature is not \"metadata\"").with_field("metadata_signature"));
    }
    let count = h.entry_count.get();
    if count > MAX_METADATA_ENTRIES {
        return Err(Error::corrupt(format!("metadata table has {count} entries; at most {MAX_METADATA_ENTRIES} fit"))
            .with_field("metadata_entry_count"));
    }
    let mut out = Vec::new();
    for i in 0..usize::from(count) {
        let at = size_of::<RawMetadataTableHeader>() + size_of::<RawMetadataEntry>() * i;
        let e = read::<RawMetadataEntry>(b, at, "VHDX metadata table entry")?;
        let flags = e.flags.get();
        out.push(MetadataEntry {
            item: Uuid::from_bytes_le(e.item_id),
            offset: e.offset.get(),
            length: e.length.get(),
            is_user: flags & 1 != 0,
            is_required: flags & 4 != 0,
        });
    }
    Ok(out)
}

/// The metadata table for `entries` (flags: bit 0 user, bit 1 virtual disk, bit 2 required),
/// at the start of a buffer of `len` bytes that the items then fill.
pub fn metadata_table_bytes(entries: &[(Uuid, u32, u32, u32)], len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    let h = RawMetadataTableHeader {
        signature: *b"metadata",
        reserved: 0.into(),
        entry_count: fit::<u16, u64>(u64_from_usize(entries.len()), "metadata entry_count")?.into(),
        reserved2: [0; 20],
    };
    put(&mut b, 0, &h, "VHDX metadata table")?;
    for (i, &(id, offset, length, flags)) in entries.iter().enumerate() {
        let e = RawMetadataEntry {
            item_id: id.to_bytes_le(),
            offset: offset.into(),
            length: length.into(),
            flags: flags.into(),
            reserved: 0.into(),
        };
        let at = size_of::<RawMetadataTableHeader>() + size_of::<RawMetadataEntry>() * i;
        put(&mut b, at, &e, "VHDX metadata table entry")?;
    }
    Ok(b)
}

/// One key/value pair of a parent locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatorEntry {
    /// Key, e.g. `relative_path`.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Parses a parent locator item.
pub fn parse_parent_locator(b: &[u8]) -> Result<Vec<LocatorEntry>> {
    let bad = |m: String| Error::corrupt(m).with_field("parent_locator");
    let Ok(h) = read::<RawLocatorHeader>(b, 0, "VHDX parent locator") else {
        return Err(bad(format!("parent locator is {} bytes, shorter than its 20-byte header", b.len())));
    };
    let ty = Uuid::from_bytes_le(h.locator_type);
    if ty != VHDX_PARENT_LOCATOR_TYPE {
        return Err(Error::unsupported(format!("parent locator type {ty} is not the VHDX locator type"))
            .with_field("locator_type"));
    }
    let count = usize::from(h.key_value_count.get());
    // Each entry takes 12 bytes after the header: the count is bounded by the item size.
    if 20 + 12 * count > b.len() {
        return Err(bad(format!("parent locator claims {count} entries, more than its {} bytes hold", b.len())));
    }
    let text = |off: u32, len: u16| -> Result<String> {
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::from(len));
        let raw = b.get(start..end).ok_or_else(|| bad(format!("parent locator string at {off} runs past the item")))?;
        if !len.is_multiple_of(2) || len == 0 {
            return Err(bad(format!("parent locator string at {off} has odd or zero length {len}")));
        }
        let units: Vec<u16> = <[Le16]>::ref_from_bytes(raw).unwrap_or_default().iter().map(|u| u.get()).collect();
        String::from_utf16(&units).map_err(|_| bad(format!("parent locator string at {off} is not valid UTF-16")))
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = read::<RawLocatorEntry>(b, head_len(i), "VHDX parent locator entry")?;
        let key = text(e.key_offset.get(), e.key_length.get())?;
        let value = text(e.value_offset.get(), e.value_length.get())?;
        out.push(LocatorEntry { key, value });
    }
    Ok(out)
}

/// Builds a parent locator item (for tests and tools).
pub fn parent_locator_bytes(entries: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut head = vec![0u8; head_len(entries.len())];
    let h = RawLocatorHeader {
        locator_type: VHDX_PARENT_LOCATOR_TYPE.to_bytes_le(),
        reserved: 0.into(),
        key_value_count: fit::<u16, u64>(u64_from_usize(entries.len()), "parent locator key_value_count")?.into(),
    };
    put(&mut head, 0, &h, "VHDX parent locator")?;
    let mut strings: Vec<u8> = Vec::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        let mut enc = |s: &str| -> Result<(u32, u16)> {
            let off = head_len(entries.len()) + strings.len();
            let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
            strings.extend_from_slice(&bytes);
            Ok((
                fit::<u32, u64>(u64_from_usize(off), "parent locator offset")?,
                fit::<u16, u64>(u64_from_usize(bytes.len()), "parent locator string length")?,
            ))
        };
        let (ko, kl) = enc(k)?;
        let (vo, vl) = enc(v)?;
        let e = RawLocatorEntry {
            key_offset: ko.into(),
            value_offset: vo.into(),
            key_length: kl.into(),
            value_length: vl.into(),
        };
        put(&mut head, head_len(i), &e, "VHDX parent locator entry")?;
    }
    head.extend_from_slice(&strings);
    Ok(head)
}

/// Bytes of a parent locator's header and `n` entries (the strings follow).
fn head_len(n: usize) -> usize {
    size_of::<RawLocatorHeader>() + size_of::<RawLocatorEntry>() * n
}

/// Geometry derived from the file parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Guest bytes.
    pub virtual_size: u64,
    /// Payload block size.
    pub block_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector: u64,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// Payload blocks covering the disk.
    pub data_blocks: u64,
    /// Entries in the BAT.
    pub bat_entries: u64,
}

impl Geometry {
    /// Derives the BAT layout; all inputs must already be validated.
    pub fn new(virtual_size: u64, block_size: u64, logical_sector: u64, has_parent: bool) -> Result<Geometry> {
        let chunk_ratio = ((1u64 << 23) * logical_sector) / block_size.max(1);
        if chunk_ratio == 0 {
            return Err(Error::corrupt("chunk ratio is zero").with_field("block_size"));
        }
        let data_blocks = virtual_size.div_ceil(block_size.max(1));
        let bat_entries = if has_parent {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            data_blocks + data_blocks.saturating_sub(1) / chunk_ratio
        };
        Ok(Geometry { virtual_size, block_size, logical_sector, chunk_ratio, data_blocks, bat_entries })
    }

    /// Index in the BAT of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + block / self.chunk_ratio
    }

    /// Index in the BAT of the sector bitmap covering payload block `block`.
    pub fn bitmap_index(&self, block: u64) -> u64 {
        (block / self.chunk_ratio) * (self.chunk_ratio + 1) + self.chunk_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_crc() {
        let h = Header {
            sequence_number: 7,
            file_write_guid: Uuid::from_u128(1),
            data_write_guid: Uuid::from_u128(2),
            log_guid: Uuid::nil(),
            log_version: 0,
            version: 1,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        };
        let mut b = h.to_bytes().unwrap();
        assert_eq!(Header::parse(&b), Some(h));
        b[100] ^= 1;
        assert_eq!(Header::parse(&b), None);
    }

    #[test]
    fn locator_round_trips() {
        let b = parent_locator_bytes(&[("parent_linkage", "{x}"), ("relative_path", ".\\base.vhdx")]).unwrap();
        let e = parse_parent_locator(&b).unwrap();
        assert_eq!(e[1].key, "relative_path");
        assert_eq!(e[1].value, ".\\base.vhdx");
    }

    #[test]
    fn geometry_matches_the_spec() {
        let g = Geometry::new(64 << 30, 32 << 20, 512, false).unwrap();
        assert_eq!(g.chunk_ratio, 128);
        assert_eq!(g.data_blocks, 2048);
        assert_eq!(g.bat_entries, 2048 + 15);
        assert_eq!(g.payload_index(128), 129);
        assert_eq!(g.bitmap_index(0), 128);
    }
}
