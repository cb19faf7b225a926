//! The VDI 1.1 header: on-disk layout, parsing, validation against the file, and
//! serialization for the writer.
//!
//! Layout (all integers little-endian), as VirtualBox's `VDIPREHEADER` + `VDIHEADER1PLUS`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 64 | text for people (`<<< Oracle VM VirtualBox Disk Image >>>\n`, qemu writes its own) |
//! | 0x040 | 4 | signature `0xbeda107f` |
//! | 0x044 | 4 | version, major << 16 \| minor (`0x00010001`) |
//! | 0x048 | 4 | header_size: bytes from 0x48 (0x180 without, 0x190 with LCHS geometry) |
//! | 0x04c | 4 | image_type: 1 dynamic ("normal"), 2 static ("fixed"), 3 undo, 4 diff |
//! | 0x050 | 4 | image_flags |
//! | 0x054 | 256 | description (UTF-8, NUL-terminated) |
//! | 0x154 | 4 | offset_bmap: file offset of the block map |
//! | 0x158 | 4 | offset_data: file offset of block 0's data |
//! | 0x15c | 16 | legacy geometry: cylinders, heads, sectors, sector_size (must be 512) |
//! | 0x16c | 4 | unused |
//! | 0x170 | 8 | disk_size in bytes |
//! | 0x178 | 4 | block_size |
//! | 0x17c | 4 | block_extra: bytes stored before each block's data |
//! | 0x180 | 4 | blocks_in_image: block map entries |
//! | 0x184 | 4 | blocks_allocated: data blocks stored in the file |
//! | 0x188 | 16 × 4 | UUIDs: image, last modification, link (parent), parent modification |
//! | 0x1c8 | 16 | LCHS geometry (only when header_size >= 0x190) |
//!
//! UUIDs are stored as VirtualBox's `RTUUID` in memory: the first three fields
//! little-endian (what [`Uuid::from_bytes_le`] reads).

use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result};
use diskcast_layout::{
    FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Le32, Le64, Unaligned, fit, le32, u64_from_usize,
    usize_from_u64,
};
use uuid::Uuid;

/// `u32` at 0x40.
pub const SIGNATURE: u32 = 0xbeda_107f;
/// Version 1.1, the only one qemu and current VirtualBox write.
pub const VERSION_1_1: u32 = 0x0001_0001;
/// The text VirtualBox writes at offset 0, before its newline (only for people; readers
/// ignore it).
pub const TEXT: &str = "<<< Oracle VM VirtualBox Disk Image >>>";
/// Image type of a dynamically growing image.
pub const TYPE_DYNAMIC: u32 = 1;
/// Image type of a preallocated image.
pub const TYPE_STATIC: u32 = 2;
/// Image type of an undo image (changes to discard or commit).
pub const TYPE_UNDO: u32 = 3;
/// Image type of a differencing image (child of another VDI).
pub const TYPE_DIFF: u32 = 4;
/// Block map entry of a block never written: reads as zeros in a base image.
pub const BLOCK_FREE: u32 = 0xffff_ffff;
/// Block map entry of a block that reads as zeros (discarded).
pub const BLOCK_ZERO: u32 = 0xffff_fffe;
/// The only sector size the format has.
pub const SECTOR: u64 = 512;
/// Bytes of the pre-header (text, signature, version); `header_size` counts from here.
pub const PRE_HEADER: u64 = 0x48;
/// `header_size` of VirtualBox's `VDIHEADER1` (no LCHS geometry); what qemu writes.
pub const HEADER_SIZE_V1: u32 = 0x180;
/// `header_size` of `VDIHEADER1PLUS`, which adds the LCHS geometry; what VirtualBox writes.
pub const HEADER_SIZE_V1_PLUS: u32 = 0x190;
/// Bytes a parser looks at: every field up to and including the LCHS geometry.
pub const HEADER_END: u64 = PRE_HEADER + 0x190;
/// Bytes the writer writes for the header (qemu's `sizeof(VdiHeader)`).
pub const HEADER_BYTES: usize = 512;
/// Smallest block we accept: one sector.
pub const MIN_BLOCK_SIZE: u64 = SECTOR;
/// Largest block we accept. VirtualBox and qemu use 1 MiB; larger power-of-two blocks
/// cost a reader nothing (no per-block buffer), and 256 MiB keeps `entry * block_size`
/// far below 2^64 for every 32-bit entry.
pub const MAX_BLOCK_SIZE: u64 = 256 << 20;
/// Largest block map we load: 2^26 entries are 256 MiB of memory (the bound the rest of
/// diskcast keeps) and map 64 TiB with 1 MiB blocks. qemu's own limit (0x3fffffff) would
/// let a hostile header ask for 4 GiB.
pub const MAX_BLOCKS: u64 = 1 << 26;

/// A CHS geometry as VDI stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u32,
    /// Heads.
    pub heads: u32,
    /// Sectors per track.
    pub sectors: u32,
    /// Bytes per sector.
    pub sector_size: u32,
}

/// A parsed VDI 1.1 header.
#[derive(Debug, Clone)]
pub struct Header {
    /// The text at offset 0, up to its first NUL or newline.
    pub text: String,
    /// major << 16 | minor.
    pub version: u32,
    /// Bytes of header after the pre-header.
    pub header_size: u32,
    /// 1 dynamic, 2 static (3 undo and 4 diff are refused).
    pub image_type: u32,
    /// Image flags (shown, otherwise ignored).
    pub image_flags: u32,
    /// The description field, up to its first NUL.
    pub description: String,
    /// File offset of the block map.
    pub offset_bmap: u64,
    /// File offset of the data of block index 0.
    pub offset_data: u64,
    /// Legacy geometry; its sector size must be 512.
    pub legacy: Geometry,
    /// Disk size as stored (may not be a multiple of 512).
    pub disk_size: u64,
    /// Bytes per block.
    pub block_size: u64,
    /// Bytes before each block's data (must be 0).
    pub block_extra: u32,
    /// Entries in the block map.
    pub blocks_in_image: u32,
    /// Data blocks stored in the file.
    pub blocks_allocated: u32,
    /// UUID of the image.
    pub uuid_image: Uuid,
    /// UUID of the image's last modification.
    pub uuid_last_snap: Uuid,
    /// UUID of the parent image (differencing images).
    pub uuid_link: Uuid,
    /// UUID of the parent's last modification (differencing images).
    pub uuid_parent: Uuid,
    /// LCHS geometry, present when `header_size >= 0x190`.
    pub lchs: Option<Geometry>,
}

/// A geometry as stored.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawGeometry {
    pub cylinders: Le32,
    pub heads: Le32,
    pub sectors: Le32,
    pub sector_size: Le32,
}

impl RawGeometry {
    fn get(&self) -> Geometry {
        Geometry {
            cylinders: self.cylinders.get(),
            heads: self.heads.get(),
            sectors: self.sectors.get(),
            sector_size: self.sector_size.get(),
        }
    }
    fn new(g: Geometry) -> Self {
        RawGeometry {
            cylinders: g.cylinders.into(),
            heads: g.heads.into(),
            sectors: g.sectors.into(),
            sector_size: g.sector_size.into(),
        }
    }
}

/// The header as stored (the table above), padded to the 512 bytes qemu writes; read by
/// [`Header::read`] and written by [`Header::serialize`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct RawHeader {
    pub text: [u8; 64],
    pub signature: Le32,
    pub version: Le32,
    pub header_size: Le32,
    pub image_type: Le32,
    pub image_flags: Le32,
    pub description: [u8; 256],
    pub offset_bmap: Le32,
    pub offset_data: Le32,
    pub legacy: RawGeometry,
    pub unused: Le32,
    pub disk_size: Le64,
    pub block_size: Le32,
    pub block_extra: Le32,
    pub blocks_in_image: Le32,
    pub blocks_allocated: Le32,
    pub uuid_image: [u8; 16],
    pub uuid_last_snap: [u8; 16],
    pub uuid_link: [u8; 16],
    pub uuid_parent: [u8; 16],
    pub lchs: RawGeometry,
    pub padding: [u8; 40],
}
const _: () = assert!(size_of::<RawHeader>() == HEADER_BYTES);

/// Text up to the first NUL (and newline, for the banner), invalid UTF-8 replaced.
fn text_field(b: &[u8], stop_at_newline: bool) -> String {
    let end = b.iter().position(|&c| c == 0 || (stop_at_newline && c == b'\n')).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// True when `head` (the start of a file) carries the VDI signature and a version we
/// know of (0.x or 1.x, so old images are claimed and then refused clearly).
pub fn probe(head: &[u8]) -> bool {
    le32(head, 0x40, "VDI signature").is_ok_and(|s| s == SIGNATURE)
        && le32(head, 0x44, "VDI version").is_ok_and(|v| (v >> 16) <= 1)
}

impl Header {
    /// Reads the header of `file` and checks signature and version only; call
    /// [`validate`](Self::validate) before trusting any offset or size.
    pub fn read(file: &dyn ByteSource) -> Result<Header> {
        let file_len = file.len()?;
        if file_len < PRE_HEADER {
            return Err(Error::invalid(format!("file too short for a VDI header ({file_len} bytes)")));
        }
        // Zero-padded past a short file's end: the length checks below say what is missing.
        let mut r = RawHeader::new_zeroed();
        let want = usize_from_u64(HEADER_END.min(file_len), "VDI header")?;
        file.read_exact_at(&mut r.as_mut_bytes()[..want], 0)?;
        let signature = r.signature.get();
        if signature != SIGNATURE {
            return Err(Error::invalid(format!(
                "not a VDI image: signature {signature:#010x}, expected {SIGNATURE:#010x}"
            ))
            .with_field("signature")
            .with_offset(0x40));
        }
        let version = r.version.get();
        if version != VERSION_1_1 {
            return Err(Error::unsupported(format!(
                "VDI header version {}.{} is not supported (only 1.1)",
                version >> 16,
                version & 0xffff
            ))
            .with_field("version")
            .with_offset(0x44));
        }
        if file_len < PRE_HEADER + u64::from(HEADER_SIZE_V1) {
            return Err(Error::invalid(format!("file too short for a VDI 1.1 header ({file_len} bytes)")));
        }
        let header_size = r.header_size.get();
        if header_size >= HEADER_SIZE_V1_PLUS && u64_from_usize(want) < HEADER_END {
            return Err(Error::invalid(format!(
                "truncated VDI header: header_size {header_size:#x} has an LCHS geometry, but the file ends at \
                 {file_len} bytes, before offset {HEADER_END:#x}"
            ))
            .with_field("header_size")
            .with_offset(0x48));
        }
        let lchs = (header_size >= HEADER_SIZE_V1_PLUS).then(|| r.lchs.get());
        Ok(Header {
            text: text_field(&r.text, true),
            version,
            header_size,
            image_type: r.image_type.get(),
            image_flags: r.image_flags.get(),
            description: text_field(&r.description, false),
            offset_bmap: u64::from(r.offset_bmap.get()),
            offset_data: u64::from(r.offset_data.get()),
            legacy: r.legacy.get(),
            disk_size: r.disk_size.get(),
            block_size: u64::from(r.block_size.get()),
            block_extra: r.block_extra.get(),
            blocks_in_image: r.blocks_in_image.get(),
            blocks_allocated: r.blocks_allocated.get(),
            uuid_image: Uuid::from_bytes_le(r.uuid_image),
            uuid_last_snap: Uuid::from_bytes_le(r.uuid_last_snap),
            uuid_link: Uuid::from_bytes_le(r.uuid_link),
            uuid_parent: Uuid::from_bytes_le(r.uuid_parent),
            lchs,
        })
    }

    /// Checks everything a reader relies on against the file's length: the image type,
    /// the block size, the block map's place and size, and that the map covers the disk.
    /// Block map entries and `blocks_allocated` are checked where they are used.
    pub fn validate(&self, file_len: u64) -> Result<()> {
        match self.image_type {
            TYPE_DYNAMIC | TYPE_STATIC => {}
            TYPE_UNDO | TYPE_DIFF => {
                let what = if self.image_type == TYPE_UNDO { "undo" } else { "differencing" };
                return Err(Error::unsupported(format!(
                    "VDI {what} images (image type {}) are not supported; convert the base image instead",
                    self.image_type
                ))
                .with_field("image_type")
                .with_offset(0x4c));
            }
            t => {
                return Err(Error::invalid(format!("unknown VDI image type {t} (1 dynamic and 2 static exist)"))
                    .with_field("image_type")
                    .with_offset(0x4c));
            }
        }
        if self.header_size < HEADER_SIZE_V1 {
            return Err(Error::invalid(format!(
                "header_size {:#x} is smaller than the {HEADER_SIZE_V1:#x} bytes of a VDI 1.1 header",
                self.header_size
            ))
            .with_field("header_size")
            .with_offset(0x48));
        }
        if PRE_HEADER + u64::from(self.header_size) > self.offset_bmap {
            return Err(Error::invalid(format!(
                "the {:#x}-byte header overlaps the block map at {:#x}",
                self.header_size, self.offset_bmap
            ))
            .with_field("offset_bmap")
            .with_offset(0x154));
        }
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
            return Err(Error::invalid(format!(
                "block_size {bs} is not a power of two from {MIN_BLOCK_SIZE} to {} MiB",
                MAX_BLOCK_SIZE >> 20
            ))
            .with_field("block_size")
            .with_offset(0x178));
        }
        if self.block_extra != 0 {
            return Err(Error::unsupported(format!(
                "blocks with {} bytes of extra data before them are not supported",
                self.block_extra
            ))
            .with_field("block_extra")
            .with_offset(0x17c));
        }
        if u64::from(self.legacy.sector_size) != SECTOR {
            return Err(Error::unsupported(format!(
                "sector size {} is not supported (only 512)",
                self.legacy.sector_size
            ))
            .with_field("sector_size")
            .with_offset(0x168));
        }
        if !self.uuid_link.is_nil() || !self.uuid_parent.is_nil() {
            return Err(Error::unsupported(
                "the image names a parent image (non-null link or parent UUID), which VDI base images never do",
            )
            .with_field("uuid_link")
            .with_offset(0x1a8));
        }
        let blocks = u64::from(self.blocks_in_image);
        let map_end = self.offset_bmap + blocks * 4;
        if map_end > file_len {
            return Err(Error::out_of_bounds(format!(
                "the block map of {blocks} entries at {:#x} ends at {map_end:#x}, past the end of the {file_len}-byte file",
                self.offset_bmap
            ))
            .with_field("blocks_in_image")
            .with_offset(0x180));
        }
        if blocks > MAX_BLOCKS {
            return Err(Error::unsupported(format!(
                "{blocks} blocks is more than the {MAX_BLOCKS} diskcast maps ({} TiB of 1 MiB blocks)",
                MAX_BLOCKS >> 20
            ))
            .with_field("blocks_in_image")
            .with_offset(0x180));
        }
        if self.offset_data < map_end {
            return Err(Error::invalid(format!(
                "the data area at {:#x} overlaps the block map, which ends at {map_end:#x}",
                self.offset_data
            ))
            .with_field("offset_data")
            .with_offset(0x158));
        }
        let covered = blocks * bs;
        if self.size() > covered {
            return Err(Error::invalid(format!(
                "disk_size {} is larger than the {covered} bytes its {blocks} blocks of {bs} bytes cover",
                self.disk_size
            ))
            .with_field("disk_size")
            .with_offset(0x170));
        }
        Ok(())
    }

    /// The guest size: `disk_size` rounded up to whole sectors, as qemu reads it
    /// (`VBoxManage convertfromraw` can store sizes that are not).
    pub fn size(&self) -> u64 {
        self.disk_size.checked_next_multiple_of(SECTOR).unwrap_or(u64::MAX - (SECTOR - 1))
    }

    /// "dynamic" or "static" (the names qemu's `static=on|off` uses).
    pub fn type_name(&self) -> &'static str {
        match self.image_type {
            TYPE_DYNAMIC => "dynamic",
            TYPE_STATIC => "static",
            TYPE_UNDO => "undo",
            TYPE_DIFF => "differencing",
            _ => "unknown",
        }
    }

    /// The 512 bytes qemu writes for a header (fields past `header_size` zero).
    /// Offsets and the block size that do not fit their 32-bit fields are an error.
    pub fn serialize(&self) -> Result<[u8; HEADER_BYTES]> {
        let mut r = RawHeader::new_zeroed();
        // The text ends with a newline and at least one NUL, as VirtualBox writes it.
        let text = self.text.as_bytes();
        let n = text.len().min(0x3e);
        r.text[..n].copy_from_slice(&text[..n]);
        r.text[n] = b'\n';
        r.signature = SIGNATURE.into();
        r.version = self.version.into();
        r.header_size = self.header_size.into();
        r.image_type = self.image_type.into();
        r.image_flags = self.image_flags.into();
        let d = self.description.as_bytes();
        let n = d.len().min(255);
        r.description[..n].copy_from_slice(&d[..n]);
        r.offset_bmap = fit::<u32, u64>(self.offset_bmap, "offset_bmap")?.into();
        r.offset_data = fit::<u32, u64>(self.offset_data, "offset_data")?.into();
        r.legacy = RawGeometry::new(self.legacy);
        r.disk_size = self.disk_size.into();
        r.block_size = fit::<u32, u64>(self.block_size, "block_size")?.into();
        r.block_extra = self.block_extra.into();
        r.blocks_in_image = self.blocks_in_image.into();
        r.blocks_allocated = self.blocks_allocated.into();
        r.uuid_image = self.uuid_image.to_bytes_le();
        r.uuid_last_snap = self.uuid_last_snap.to_bytes_le();
        r.uuid_link = self.uuid_link.to_bytes_le();
        r.uuid_parent = self.uuid_parent.to_bytes_le();
        if let Some(g) = self.lchs {
            r.lchs = RawGeometry::new(g);
        }
        let mut b = [0u8; HEADER_BYTES];
        b.copy_from_slice(r.as_bytes());
        Ok(b)
    }
}

/// Reads the block map of `h` (already validated) as host-order entries.
pub fn read_block_map(file: &dyn ByteSource, h: &Header) -> Result<Vec<u32>> {
    let n = usize::try_from(h.blocks_in_image).map_err(|_| Error::unsupported("block map too large"))?;
    let mut raw = vec![0u8; n.checked_mul(4).ok_or_else(|| Error::unsupported("block map too large"))?];
    file.read_exact_at(&mut raw, h.offset_bmap).map_err(|e| e.with_field("offset_bmap"))?;
    Ok(<[Le32]>::ref_from_bytes(&raw)
        .map_err(|_| Error::unsupported("block map too large"))?
        .iter()
        .map(|e| e.get())
        .collect())
}
