//! The hosted sparse extent header ("KDMV"), stream markers and the limits we enforce.
//!
//! Layout from VMware's Virtual Disk Format 5.0 specification, section "Hosted Sparse
//! Extent Header": a 512-byte little-endian structure at offset 0 of every sparse extent
//! (and, for streamOptimized images, again in the footer near the end of the file).

use diskcast_block::{Error, Result};
use diskcast_layout::{FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Le64, Unaligned, read};

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

/// The hosted sparse extent header as stored, read by [`SparseHeader::parse`] and written by
/// [`SparseHeader::serialize`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawSparseHeader {
    pub magic: [u8; 4],
    pub version: Le32,
    pub flags: Le32,
    pub capacity: Le64,
    pub grain_size: Le64,
    pub desc_offset: Le64,
    pub desc_size: Le64,
    pub num_gtes_per_gt: Le32,
    pub rgd_offset: Le64,
    pub gd_offset: Le64,
    pub overhead: Le64,
    pub unclean_shutdown: u8,
    pub newline_detection: [u8; 4],
    pub compress_algorithm: Le16,
    pub pad: [u8; 433],
}
const _: () = assert!(size_of::<RawSparseHeader>() == 512);

/// A streamOptimized marker: a metadata marker (`size` 0, a sector of its own) or, with
/// `size` compressed bytes following, a grain marker whose `val` is the grain's first sector.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawMarker {
    pub val: Le64,
    pub size: Le32,
    pub kind: Le32,
}

/// Bytes a grain marker takes before its compressed data (`val` and `size`).
pub const GRAIN_MARKER_LEN: usize = 12;

/// The grain directory and grain tables: little-endian sector numbers (a trailing partial
/// entry is ignored).
pub fn sector_table(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let whole = raw.len() / 4 * 4;
    <[Le32]>::ref_from_bytes(&raw[..whole]).unwrap_or_default().iter().map(|e| e.get())
}

impl SparseHeader {
    /// Parses a 512-byte header (magic included).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let Ok(r) = read::<RawSparseHeader>(b, 0, "VMDK sparse extent header") else {
            return Err(Error::invalid("file is too short for a VMDK sparse extent header"));
        };
        if r.magic != MAGIC {
            return Err(Error::invalid("not a VMDK sparse extent (no KDMV magic)").with_field("magicNumber"));
        }
        Ok(SparseHeader {
            version: r.version.get(),
            flags: r.flags.get(),
            capacity: r.capacity.get(),
            grain_size: r.grain_size.get(),
            desc_offset: r.desc_offset.get(),
            desc_size: r.desc_size.get(),
            gtes_per_gt: r.num_gtes_per_gt.get(),
            rgd_offset: r.rgd_offset.get(),
            gd_offset: r.gd_offset.get(),
            overhead: r.overhead.get(),
            unclean_shutdown: r.unclean_shutdown,
            compress_algorithm: r.compress_algorithm.get(),
        })
    }

    /// The 512-byte on-disk form, with the newline-detection characters.
    pub fn serialize(&self) -> [u8; 512] {
        let r = RawSparseHeader {
            magic: MAGIC,
            version: self.version.into(),
            flags: self.flags.into(),
            capacity: self.capacity.into(),
            grain_size: self.grain_size.into(),
            desc_offset: self.desc_offset.into(),
            desc_size: self.desc_size.into(),
            num_gtes_per_gt: self.gtes_per_gt.into(),
            rgd_offset: self.rgd_offset.into(),
            gd_offset: self.gd_offset.into(),
            overhead: self.overhead.into(),
            unclean_shutdown: self.unclean_shutdown,
            newline_detection: *b"\n \r\n",
            compress_algorithm: self.compress_algorithm.into(),
            pad: [0; 433],
        };
        let mut b = [0u8; 512];
        b.copy_from_slice(r.as_bytes());
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
    let m = RawMarker { val: sectors.into(), size: 0.into(), kind: kind.into() };
    b[..size_of::<RawMarker>()].copy_from_slice(m.as_bytes());
    b
}
