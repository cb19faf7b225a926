//! The hosted sparse extent header ("KDMV"), stream markers and the limits we enforce.
//!
//! Layout from VMware's Virtual Disk Format 5.0 specification, section "Hosted Sparse
//! Extent Header": a 512-byte little-endian structure at offset 0 of every sparse extent
//! (and, for streamOptimized images, again in the footer near the end of the file).

use diskcast_block::{Error, Result};

/// "KDMV" as stored at offset 0.
pub const MAGIC: [u8; 4] = *b"KDMV";
/// `gdOffset` value meaning "the grain directory is found through the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// Sector size every VMDK offset and size counts in.
pub const SECTOR: u64 = 512;

/// Flag bit 0: the newline-detection characters are valid.
pub const FLAG_NL_DETECT: u32 = 1;
/// Flag bit 1: a redundant grain directory is present.
pub const FLAG_RGD: u32 = 1 << 1;
/// Flag bit 2: grain table entry 1 means "this grain reads as zeros".
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: grains and metadata are preceded by markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `compressAlgorithm` value for deflate (zlib streams).
pub const COMPRESSION_DEFLATE: u16 = 1;

/// Metadata marker types.
pub const MARKER_EOS: u32 = 0;
/// Grain table marker.
pub const MARKER_GT: u32 = 1;
/// Grain directory marker.
pub const MARKER_GD: u32 = 2;
/// Footer marker.
pub const MARKER_FOOTER: u32 = 3;

/// Grain table entry value meaning "zero grain" when [`FLAG_ZERO_GRAIN`] is set.
pub const GTE_ZEROED: u32 = 1;

/// Largest grain we accept: 16 MiB (32768 sectors). VMware uses 64 KiB; qemu accepts up
/// to 1 GiB, but each read of a compressed grain allocates twice the grain, so a hostile
/// header must not be able to ask for gigabytes per reading thread.
pub const MAX_GRAIN_SECTORS: u64 = 32768;
/// Most grain table entries per table, as qemu enforces (VMware always writes 512).
pub const MAX_GTES_PER_GT: u32 = 512;
/// Largest grain directory we load: 64 MiB of entries maps far beyond the 2 TiB hosted
/// sparse limit with 64 KiB grains; the directory must also lie inside the file.
pub const MAX_GD_BYTES: u64 = 64 << 20;
/// Largest capacity we accept, in sectors (2^40 sectors = 512 TiB): keeps every byte
/// offset computed from it far from overflow.
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 40;
/// Largest embedded or standalone descriptor we read (qemu refuses more than 1 MiB too).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// The hosted sparse extent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SparseHeader {
    /// 1, 2 or 3.
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Extent size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_size: u64,
    /// Embedded descriptor offset in sectors (0: none).
    pub desc_offset: u64,
    /// Embedded descriptor size in sectors.
    pub desc_size: u64,
    /// Grain table entries per grain table.
    pub gtes_per_gt: u32,
    /// Redundant grain directory offset in sectors.
    pub rgd_offset: u64,
    /// Grain directory offset in sectors, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Set while the extent is open for writing.
    pub unclean_shutdown: u8,
    /// 0 (none) or [`COMPRESSION_DEFLATE`].
    pub compress_algorithm: u16,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Little-endian u32 at `at` (0 when out of range; callers pass fixed-size buffers).
pub fn get_u32(b: &[u8], at: usize) -> u32 {
    le32(b, at)
}

/// Little-endian u64 at `at` (0 when out of range).
pub fn get_u64(b: &[u8], at: usize) -> u64 {
    le64(b, at)
}

impl SparseHeader {
    /// Parses a 512-byte header (magic included).
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 512 {
            return Err(Error::invalid("file is too short for a VMDK sparse extent header"));
        }
        if b[..4] != MAGIC {
            return Err(Error::invalid("not a VMDK sparse extent (no KDMV magic)").with_field("magicNumber"));
        }
        Ok(SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            grain_size: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean_shutdown: b[72],
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        })
    }

    /// The 512-byte on-disk form, with the newline-detection characters.
    pub fn serialize(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.desc_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.desc_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = self.unclean_shutdown;
        b[73..77].copy_from_slice(b"\n \r\n");
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Checks the fields every reader relies on; returns the number of grain directory
    /// entries.
    pub fn validate(&self) -> Result<u64> {
        if !(1..=3).contains(&self.version) {
            return Err(Error::unsupported(format!(
                "VMDK sparse extent version {} (only 1 to 3 are known)",
                self.version
            ))
            .with_field("version")
            .with_offset(4));
        }
        if !(1..=MAX_GRAIN_SECTORS).contains(&self.grain_size) {
            return Err(Error::invalid(format!(
                "grain size of {} sectors is outside 1..={MAX_GRAIN_SECTORS}",
                self.grain_size
            ))
            .with_field("grainSize")
            .with_offset(20));
        }
        if !(1..=MAX_GTES_PER_GT).contains(&self.gtes_per_gt) {
            return Err(Error::invalid(format!(
                "{} grain table entries per table is outside 1..={MAX_GTES_PER_GT}",
                self.gtes_per_gt
            ))
            .with_field("numGTEsPerGT")
            .with_offset(44));
        }
        if self.capacity > MAX_CAPACITY_SECTORS {
            return Err(Error::invalid(format!("capacity of {} sectors is too large", self.capacity))
                .with_field("capacity")
                .with_offset(12));
        }
        if self.compress_algorithm > COMPRESSION_DEFLATE {
            return Err(Error::unsupported(format!("compression algorithm {}", self.compress_algorithm))
                .with_field("compressAlgorithm")
                .with_offset(77));
        }
        let per_gt = self.grain_size * u64::from(self.gtes_per_gt);
        Ok(self.capacity.div_ceil(per_gt))
    }

    /// True when grains are deflate-compressed (qemu goes by the algorithm field).
    pub fn compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// True when grains carry markers.
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// True when GTE 1 means a zero grain.
    pub fn zero_grain(&self) -> bool {
        self.flags & FLAG_ZERO_GRAIN != 0
    }
}

/// A 512-byte metadata marker sector: `{val: u64, size: u32 = 0, type: u32}` + padding.
pub fn metadata_marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..8].copy_from_slice(&sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}
