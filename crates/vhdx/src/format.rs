//! On-disk structures of VHDX ([MS-VHDX] v1.0): the file type identifier, the two headers,
//! the two region tables, the metadata table and its known items, the BAT entry layout,
//! and the parent locator. Parsing validates every field against the file; building
//! produces the same structures for the writer, with their CRC-32C.

use diskcast_block::{Error, Result};
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

/// Stores the CRC-32C of `buf` into its checksum field at `at`.
pub fn put_crc(buf: &mut [u8], at: usize) {
    let c = crc_with_hole(buf, at);
    put32(buf, at, c);
}

/// Little-endian readers over a slice; out-of-range reads give 0 (callers size their
/// buffers first, so this never happens on validated data).
pub fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map(u16::from_le_bytes).unwrap_or(0)
}
/// See [`le16`].
pub fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes).unwrap_or(0)
}
/// See [`le16`].
pub fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}
/// A GUID stored in Microsoft's mixed-endian layout.
pub fn guid(b: &[u8], at: usize) -> Uuid {
    b.get(at..at + 16).and_then(|s| s.try_into().ok()).map(Uuid::from_bytes_le).unwrap_or(Uuid::nil())
}
/// Little-endian writers; out-of-range writes are dropped (buffers are sized by callers).
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
/// See [`put16`].
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
/// See [`put16`].
pub fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}
/// See [`put16`].
pub fn put_guid(b: &mut [u8], at: usize, g: Uuid) {
    if let Some(s) = b.get_mut(at..at + 16) {
        s.copy_from_slice(&g.to_bytes_le());
    }
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
        if b.len() < HEADER_SIZE || b.get(0..4) != Some(b"head") {
            return None;
        }
        let b = b.get(..HEADER_SIZE)?;
        if crc_with_hole(b, 4) != le32(b, 4) {
            return None;
        }
        Some(Header {
            sequence_number: le64(b, 8),
            file_write_guid: guid(b, 16),
            data_write_guid: guid(b, 32),
            log_guid: guid(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        })
    }

    /// The 4 KiB on-disk form with its checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(b"head");
        put64(&mut b, 8, self.sequence_number);
        put_guid(&mut b, 16, self.file_write_guid);
        put_guid(&mut b, 32, self.data_write_guid);
        put_guid(&mut b, 48, self.log_guid);
        put16(&mut b, 64, self.log_version);
        put16(&mut b, 66, self.version);
        put32(&mut b, 68, self.log_length);
        put64(&mut b, 72, self.log_offset);
        put_crc(&mut b, 4);
        b
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
    if b.len() < REGION_TABLE_SIZE || b.get(0..4) != Some(b"regi") {
        return Ok(None);
    }
    let b = &b[..REGION_TABLE_SIZE];
    if crc_with_hole(b, 4) != le32(b, 4) {
        return Ok(None);
    }
    let count = le32(b, 8);
    if count > MAX_REGION_ENTRIES {
        return Err(Error::corrupt(format!("region table has {count} entries; at most {MAX_REGION_ENTRIES} fit"))
            .with_field("entry_count"));
    }
    let mut out = Vec::new();
    for i in 0..count as usize {
        let at = 16 + 32 * i;
        out.push(Region {
            guid: guid(b, at),
            offset: le64(b, at + 16),
            length: le32(b, at + 24),
            required: le32(b, at + 28) & 1 != 0,
        });
    }
    Ok(Some(out))
}

/// The 64 KiB on-disk region table with its checksum.
pub fn region_table_bytes(regions: &[Region]) -> Vec<u8> {
    let mut b = vec![0u8; REGION_TABLE_SIZE];
    b[0..4].copy_from_slice(b"regi");
    put32(&mut b, 8, u32::try_from(regions.len()).unwrap_or(0));
    for (i, r) in regions.iter().enumerate() {
        let at = 16 + 32 * i;
        put_guid(&mut b, at, r.guid);
        put64(&mut b, at + 16, r.offset);
        put32(&mut b, at + 24, r.length);
        put32(&mut b, at + 28, u32::from(r.required));
    }
    put_crc(&mut b, 4);
    b
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
    if b.len() < KIB64 as usize || b.get(0..8) != Some(b"metadata") {
        return Err(Error::corrupt("metadata table signature is not \"metadata\"").with_field("metadata_signature"));
    }
    let count = le16(b, 10);
    if count > MAX_METADATA_ENTRIES {
        return Err(Error::corrupt(format!("metadata table has {count} entries; at most {MAX_METADATA_ENTRIES} fit"))
            .with_field("metadata_entry_count"));
    }
    let mut out = Vec::new();
    for i in 0..usize::from(count) {
        let at = 32 + 32 * i;
        let flags = le32(b, at + 24);
        out.push(MetadataEntry {
            item: guid(b, at),
            offset: le32(b, at + 16),
            length: le32(b, at + 20),
            is_user: flags & 1 != 0,
            is_required: flags & 4 != 0,
        });
    }
    Ok(out)
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
    if b.len() < 20 {
        return Err(bad(format!("parent locator is {} bytes, shorter than its 20-byte header", b.len())));
    }
    let ty = guid(b, 0);
    if ty != VHDX_PARENT_LOCATOR_TYPE {
        return Err(Error::unsupported(format!("parent locator type {ty} is not the VHDX locator type"))
            .with_field("locator_type"));
    }
    let count = usize::from(le16(b, 18));
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
        let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16(&units).map_err(|_| bad(format!("parent locator string at {off} is not valid UTF-16")))
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = 20 + 12 * i;
        let key = text(le32(b, at), le16(b, at + 8))?;
        let value = text(le32(b, at + 4), le16(b, at + 10))?;
        out.push(LocatorEntry { key, value });
    }
    Ok(out)
}

/// Builds a parent locator item (for tests and tools).
pub fn parent_locator_bytes(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut head = vec![0u8; 20 + 12 * entries.len()];
    put_guid(&mut head, 0, VHDX_PARENT_LOCATOR_TYPE);
    put16(&mut head, 18, u16::try_from(entries.len()).unwrap_or(0));
    let mut strings: Vec<u8> = Vec::new();
    for (i, (k, v)) in entries.iter().enumerate() {
        let mut enc = |s: &str| {
            let off = head_len(entries.len()) + strings.len();
            let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
            strings.extend_from_slice(&bytes);
            (u32::try_from(off).unwrap_or(0), u16::try_from(bytes.len()).unwrap_or(0))
        };
        let (ko, kl) = enc(k);
        let (vo, vl) = enc(v);
        let at = 20 + 12 * i;
        put32(&mut head, at, ko);
        put32(&mut head, at + 4, vo);
        put16(&mut head, at + 8, kl);
        put16(&mut head, at + 10, vl);
    }
    head.extend_from_slice(&strings);
    head
}

fn head_len(n: usize) -> usize {
    20 + 12 * n
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
        let mut b = h.to_bytes();
        assert_eq!(Header::parse(&b), Some(h));
        b[100] ^= 1;
        assert_eq!(Header::parse(&b), None);
    }

    #[test]
    fn locator_round_trips() {
        let b = parent_locator_bytes(&[("parent_linkage", "{x}"), ("relative_path", ".\\base.vhdx")]);
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
