//! On-disk structures of the VHD format: the hard disk footer, the dynamic disk header
//! with its parent locators, CHS geometry, and qemu's rule for the virtual size.
//!
//! Every field is big-endian. Both structures carry a checksum: the one's complement of
//! the byte sum of the structure with the checksum field taken as zero.

use diskcast_block::{Error, Result};

/// Bytes of a hard disk footer as written today.
pub const FOOTER_SIZE: u64 = 512;
/// Bytes of the footer written by Virtual PC before 2004 (the last reserved byte missing).
pub const OLD_FOOTER_SIZE: u64 = 511;
/// Bytes of the dynamic disk header.
pub const DYN_HEADER_SIZE: u64 = 1024;
/// The footer's cookie.
pub const FOOTER_COOKIE: &[u8; 8] = b"conectix";
/// The dynamic disk header's cookie.
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";
/// A sector: the unit of the sector bitmaps and of BAT entries.
pub const SECTOR: u64 = 512;
/// BAT value of a block that is not allocated.
pub const BAT_UNUSED: u32 = 0xffff_ffff;

/// Footer disk types.
pub const TYPE_FIXED: u32 = 2;
/// Dynamic (sparse) disk.
pub const TYPE_DYNAMIC: u32 = 3;
/// Differencing disk: a dynamic disk whose clear bitmap bits come from a parent.
pub const TYPE_DIFFERENCING: u32 = 4;

/// Largest CHS geometry the footer can hold as qemu and Hyper-V compute it
/// (65535 cylinders, 16 heads, 255 sectors per track), in sectors. A footer with this
/// geometry means "the geometry cannot describe the size: use current_size".
pub const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;
/// Largest disk qemu accepts (2040 GiB, 0xff000000 sectors); sector offsets in the BAT
/// are 32-bit, so files much past 2 TiB cannot be addressed anyway.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
pub const VHD_EPOCH: u64 = 946_684_800;

/// Creator applications whose images are sized by their CHS geometry: Virtual PC and
/// qemu without force_size. Since qemu 10.0 (block/vpc.c, "Read images exported from
/// Azure correctly") every other creator (`win ` Hyper-V, `qem2`, `d2v `, `CTXS`,
/// `tap\0`, Azure's `wa\0\0`, unknown ones) is sized by `current_size`, and so is any
/// image whose geometry is the maximum one.
pub const CHS_CREATORS: &[&[u8; 4]] = &[b"vpc ", b"qemu"];

/// The hard disk footer (at the end of every VHD, and mirrored at offset 0 of dynamic
/// and differencing disks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Feature bits (2 = reserved, always set).
    pub features: u32,
    /// File format version (0x00010000).
    pub format_version: u32,
    /// Offset of the dynamic disk header, all ones for fixed disks.
    pub data_offset: u64,
    /// Creation time, seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Application that created the image (`vpc `, `win `, `qemu`, ...).
    pub creator_app: [u8; 4],
    /// Version of that application (major in the high 16 bits).
    pub creator_version: u32,
    /// Host OS of that application (`Wi2k`, `Mac `).
    pub creator_os: [u8; 4],
    /// Size of the disk at creation.
    pub original_size: u64,
    /// Current size of the disk.
    pub current_size: u64,
    /// Geometry: cylinders.
    pub cylinders: u16,
    /// Geometry: heads.
    pub heads: u8,
    /// Geometry: sectors per track.
    pub sectors_per_track: u8,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// The stored checksum (recomputed by [`Footer::to_bytes`]).
    pub checksum: u32,
    /// Identifies this disk (differencing children name it as their parent).
    pub unique_id: [u8; 16],
    /// Set when the disk is part of a saved VM state.
    pub saved_state: u8,
}

fn be16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        w.copy_from_slice(s);
    }
    u16::from_be_bytes(w)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_be_bytes(w)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut w = [0u8; N];
    if let Some(s) = b.get(at..at + N) {
        w.copy_from_slice(s);
    }
    w
}

/// One's complement of the byte sum of `buf`, with the four checksum bytes at
/// `checksum_at` counted as zero.
pub fn checksum(buf: &[u8], checksum_at: usize) -> u32 {
    let sum = buf
        .iter()
        .enumerate()
        .filter(|(i, _)| !(checksum_at..checksum_at + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// Byte offset of the checksum in the footer.
pub const FOOTER_CHECKSUM_AT: usize = 64;
/// Byte offset of the checksum in the dynamic disk header.
pub const DYN_CHECKSUM_AT: usize = 36;

impl Footer {
    /// True when `buf` starts with the footer cookie.
    pub fn has_cookie(buf: &[u8]) -> bool {
        buf.starts_with(FOOTER_COOKIE)
    }

    /// Parses a footer (511 or 512 bytes) whose cookie was already seen, verifying its
    /// checksum. `at` is its file offset, for error messages.
    pub fn parse(buf: &[u8], at: u64) -> Result<Footer> {
        if !Self::has_cookie(buf) || buf.len() < OLD_FOOTER_SIZE as usize {
            return Err(Error::invalid("no VHD footer (cookie \"conectix\")").with_field("cookie").with_offset(at));
        }
        let f = Footer {
            features: be32(buf, 8),
            format_version: be32(buf, 12),
            data_offset: be64(buf, 16),
            timestamp: be32(buf, 24),
            creator_app: arr(buf, 28),
            creator_version: be32(buf, 32),
            creator_os: arr(buf, 36),
            original_size: be64(buf, 40),
            current_size: be64(buf, 48),
            cylinders: be16(buf, 56),
            heads: buf.get(58).copied().unwrap_or(0),
            sectors_per_track: buf.get(59).copied().unwrap_or(0),
            disk_type: be32(buf, 60),
            checksum: be32(buf, 64),
            unique_id: arr(buf, 68),
            saved_state: buf.get(84).copied().unwrap_or(0),
        };
        let want = checksum(buf, FOOTER_CHECKSUM_AT);
        if want != f.checksum {
            return Err(Error::corrupt(format!(
                "footer checksum is {:#010x}, but the footer's bytes sum to {want:#010x}",
                f.checksum
            ))
            .with_field("footer.checksum")
            .with_offset(at + FOOTER_CHECKSUM_AT as u64));
        }
        Ok(f)
    }

    /// The 512 bytes of this footer with a fresh checksum.
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..8].copy_from_slice(FOOTER_COOKIE);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_os);
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.cylinders.to_be_bytes());
        b[58] = self.heads;
        b[59] = self.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id);
        b[84] = self.saved_state;
        let sum = checksum(&b, FOOTER_CHECKSUM_AT);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Sectors described by the CHS geometry.
    pub fn geometry_sectors(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// True when qemu takes this image's size from `current_size` rather than from the
    /// geometry (see [`CHS_CREATORS`]).
    pub fn size_from_current_size(&self) -> bool {
        !CHS_CREATORS.contains(&&self.creator_app) || self.geometry_sectors() == MAX_GEOMETRY_SECTORS
    }

    /// The guest-visible size by qemu's rule: the CHS geometry for Virtual PC and plain
    /// qemu images, `current_size` (whole sectors) for every other creator or when the
    /// geometry is the maximum. Larger than 2040 GiB is refused, as qemu does.
    pub fn virtual_size(&self) -> Result<u64> {
        let sectors = if self.size_from_current_size() { self.current_size / SECTOR } else { self.geometry_sectors() };
        if sectors > MAX_SECTORS {
            return Err(Error::unsupported(format!(
                "the footer describes a {}-byte disk, larger than VHD's 2040 GiB limit",
                sectors.saturating_mul(SECTOR)
            ))
            .with_field(if self.size_from_current_size() { "current_size" } else { "disk_geometry" }));
        }
        Ok(sectors * SECTOR)
    }

    /// `"fixed"`, `"dynamic"`, `"differencing"` or the raw number.
    pub fn type_name(&self) -> String {
        match self.disk_type {
            TYPE_FIXED => "fixed".into(),
            TYPE_DYNAMIC => "dynamic".into(),
            TYPE_DIFFERENCING => "differencing".into(),
            t => format!("type {t}"),
        }
    }
}

/// Printable form of a four-character code (`"win "`, `"tap\0"` shows as `"tap"`).
pub fn fourcc(code: &[u8; 4]) -> String {
    code.iter().filter(|&&c| c != 0).map(|&c| if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' }).collect()
}

/// A UUID in its usual text form.
pub fn uuid_text(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// Parent locator platform codes.
pub const PLAT_W2RU: u32 = u32::from_be_bytes(*b"W2ru");
/// Absolute Windows path, UTF-16LE.
pub const PLAT_W2KU: u32 = u32::from_be_bytes(*b"W2ku");
/// Mac OS X file URL, UTF-8.
pub const PLAT_MACX: u32 = u32::from_be_bytes(*b"MacX");

/// One parent locator entry of a differencing disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locator {
    /// Platform code (`W2ru`, `W2ku`, `MacX`, ...).
    pub platform: u32,
    /// Space reserved for the locator (sectors per the spec; some writers put bytes).
    pub data_space: u32,
    /// Bytes of the locator's data.
    pub data_length: u32,
    /// File offset of the data.
    pub data_offset: u64,
}

/// The dynamic disk header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynHeader {
    /// Unused (all ones).
    pub data_offset: u64,
    /// File offset of the BAT.
    pub table_offset: u64,
    /// Header version (0x00010000).
    pub header_version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes of guest data per block.
    pub block_size: u32,
    /// Stored checksum.
    pub checksum: u32,
    /// Differencing disks: the parent's footer unique_id.
    pub parent_unique_id: [u8; 16],
    /// Differencing disks: the parent's modification time.
    pub parent_timestamp: u32,
    /// Differencing disks: the parent's file name (UTF-16 big-endian in the file).
    pub parent_name: String,
    /// The eight parent locator entries.
    pub locators: [Locator; 8],
}

/// Byte offset of the first parent locator entry in the dynamic header.
const LOCATORS_AT: usize = 576;

impl DynHeader {
    /// Parses the 1024-byte header at file offset `at`, verifying cookie and checksum.
    pub fn parse(buf: &[u8], at: u64) -> Result<DynHeader> {
        if !buf.starts_with(DYN_COOKIE) || buf.len() < DYN_HEADER_SIZE as usize {
            return Err(Error::invalid(
                "no dynamic disk header (cookie \"cxsparse\") where the footer's data_offset points",
            )
            .with_field("dyn_header.cookie")
            .with_offset(at));
        }
        let mut locators = [Locator { platform: 0, data_space: 0, data_length: 0, data_offset: 0 }; 8];
        for (i, l) in locators.iter_mut().enumerate() {
            let o = LOCATORS_AT + i * 24;
            *l = Locator {
                platform: be32(buf, o),
                data_space: be32(buf, o + 4),
                data_length: be32(buf, o + 8),
                data_offset: be64(buf, o + 16),
            };
        }
        let name_units: Vec<u16> = (0..256).map(|i| be16(buf, 64 + i * 2)).take_while(|&u| u != 0).collect();
        let h = DynHeader {
            data_offset: be64(buf, 8),
            table_offset: be64(buf, 16),
            header_version: be32(buf, 24),
            max_table_entries: be32(buf, 28),
            block_size: be32(buf, 32),
            checksum: be32(buf, 36),
            parent_unique_id: arr(buf, 40),
            parent_timestamp: be32(buf, 56),
            parent_name: String::from_utf16_lossy(&name_units),
            locators,
        };
        let want = checksum(buf.get(..DYN_HEADER_SIZE as usize).unwrap_or(buf), DYN_CHECKSUM_AT);
        if want != h.checksum {
            return Err(Error::corrupt(format!(
                "dynamic disk header checksum is {:#010x}, but the header's bytes sum to {want:#010x}",
                h.checksum
            ))
            .with_field("dyn_header.checksum")
            .with_offset(at + DYN_CHECKSUM_AT as u64));
        }
        Ok(h)
    }

    /// The 1024 bytes of a header for a new dynamic disk (no parent), with its checksum.
    pub fn new_bytes(table_offset: u64, max_table_entries: u32, block_size: u32) -> [u8; 1024] {
        let mut b = [0u8; 1024];
        b[0..8].copy_from_slice(DYN_COOKIE);
        // The spec says 0xFFFFFFFF; Microsoft's tools write all 64 bits set (as qemu does).
        b[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        b[16..24].copy_from_slice(&table_offset.to_be_bytes());
        b[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        b[28..32].copy_from_slice(&max_table_entries.to_be_bytes());
        b[32..36].copy_from_slice(&block_size.to_be_bytes());
        let sum = checksum(&b, DYN_CHECKSUM_AT);
        b[36..40].copy_from_slice(&sum.to_be_bytes());
        b
    }
}

/// The geometry the VHD specification (appendix "CHS calculation"), Hyper-V and qemu
/// compute for `total_sectors`: (cylinders, heads, sectors per track). It may describe
/// fewer sectors than asked for; sizes past [`MAX_GEOMETRY_SECTORS`] get the maximum.
pub fn geometry_for(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_GEOMETRY_SECTORS);
    let (spt, heads, cth): (u64, u64, u64);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    let cyl = cth / heads;
    // Bounded by the clamp above: cyl <= 65535, heads <= 16, spt <= 255.
    (u16::try_from(cyl).unwrap_or(u16::MAX), u8::try_from(heads).unwrap_or(16), u8::try_from(spt).unwrap_or(255))
}

/// Sectors of a geometry.
pub fn geometry_product((c, h, s): (u16, u8, u8)) -> u64 {
    u64::from(c) * u64::from(h) * u64::from(s)
}

/// qemu-img's rule for a new image without `force_size`: the smallest geometry that
/// holds at least `size` bytes (rounded up to sectors), and the size it describes. Past
/// the largest geometry the size stays exact and the geometry is the maximum one (such
/// images are read by `current_size`).
pub fn rounded_geometry(size: u64) -> ((u16, u8, u8), u64) {
    let sectors = size.div_ceil(SECTOR);
    let wanted = sectors.min(MAX_GEOMETRY_SECTORS);
    let mut geo = (0, 0, 0);
    let mut extra = 0u64;
    // Each step adds one sector; a few thousand steps reach the next geometry at most
    // (one cylinder is at most 16 * 255 sectors).
    while geometry_product(geo) < wanted {
        if extra > 1 << 20 {
            geo = geometry_for(MAX_GEOMETRY_SECTORS);
            break;
        }
        geo = geometry_for(wanted + extra);
        extra += 1;
    }
    if geometry_product(geo) == MAX_GEOMETRY_SECTORS {
        (geo, sectors * SECTOR)
    } else {
        (geo, geometry_product(geo) * SECTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_qemu_for_known_sizes() {
        // qemu-img create -f vpc x 10M: 302/4/17 = 10514432 bytes.
        assert_eq!(rounded_geometry(10 << 20), ((302, 4, 17), 10_514_432));
        assert_eq!(geometry_for(MAX_GEOMETRY_SECTORS + 5), (65535, 16, 255));
        let (g, s) = rounded_geometry(200 << 30);
        assert_eq!(g, (65535, 16, 255));
        assert_eq!(s, 200 << 30);
        assert_eq!(rounded_geometry(0), ((0, 0, 0), 0));
    }

    #[test]
    fn footer_round_trips_and_checks_its_sum() {
        let f = Footer {
            features: 2,
            format_version: 0x10000,
            data_offset: 512,
            timestamp: 7,
            creator_app: *b"qemu",
            creator_version: 0x0005_0003,
            creator_os: *b"Wi2k",
            original_size: 10 << 20,
            current_size: 10 << 20,
            cylinders: 302,
            heads: 4,
            sectors_per_track: 17,
            disk_type: TYPE_DYNAMIC,
            checksum: 0,
            unique_id: [9; 16],
            saved_state: 0,
        };
        let mut b = f.to_bytes();
        let g = Footer::parse(&b, 0).unwrap();
        assert_eq!(g.virtual_size().unwrap(), 10_514_432);
        b[100] = 1;
        let e = Footer::parse(&b, 0).unwrap_err();
        assert_eq!(e.field(), Some("footer.checksum"));
    }
}
