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
pub const HEADER_END: u64 = PRE_HEADER + HEADER_SIZE_V1_PLUS as u64;
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

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    let mut w = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        w.copy_from_slice(s);
    }
    Uuid::from_bytes_le(w)
}

fn geometry_at(b: &[u8], at: usize) -> Geometry {
    Geometry {
        cylinders: u32_at(b, at),
        heads: u32_at(b, at + 4),
        sectors: u32_at(b, at + 8),
        sector_size: u32_at(b, at + 12),
    }
}

/// Text up to the first NUL (and newline, for the banner), invalid UTF-8 replaced.
fn text_field(b: &[u8], stop_at_newline: bool) -> String {
    let end = b.iter().position(|&c| c == 0 || (stop_at_newline && c == b'\n')).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// True when `head` (the start of a file) carries the VDI signature and a version we
/// know of (0.x or 1.x, so old images are claimed and then refused clearly).
pub fn probe(head: &[u8]) -> bool {
    head.len() >= PRE_HEADER as usize && u32_at(head, 0x40) == SIGNATURE && (u32_at(head, 0x44) >> 16) <= 1
}

impl Header {
    /// Reads the header of `file` and checks signature and version only; call
    /// [`validate`](Self::validate) before trusting any offset or size.
    pub fn read(file: &dyn ByteSource) -> Result<Header> {
        let file_len = file.len()?;
        if file_len < PRE_HEADER {
            return Err(Error::invalid(format!("file too short for a VDI header ({file_len} bytes)")));
        }
        let mut b = vec![0u8; HEADER_END.min(file_len) as usize];
        file.read_exact_at(&mut b, 0)?;
        let signature = u32_at(&b, 0x40);
        if signature != SIGNATURE {
            return Err(Error::invalid(format!(
                "not a VDI image: signature {signature:#010x}, expected {SIGNATURE:#010x}"
            ))
            .with_field("signature")
            .with_offset(0x40));
        }
        let version = u32_at(&b, 0x44);
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
        let header_size = u32_at(&b, 0x48);
        let lchs = (header_size >= HEADER_SIZE_V1_PLUS && b.len() as u64 >= HEADER_END).then(|| geometry_at(&b, 0x1c8));
        Ok(Header {
            text: text_field(b.get(..0x40).unwrap_or_default(), true),
            version,
            header_size,
            image_type: u32_at(&b, 0x4c),
            image_flags: u32_at(&b, 0x50),
            description: text_field(b.get(0x54..0x154).unwrap_or_default(), false),
            offset_bmap: u64::from(u32_at(&b, 0x154)),
            offset_data: u64::from(u32_at(&b, 0x158)),
            legacy: geometry_at(&b, 0x15c),
            disk_size: u64_at(&b, 0x170),
            block_size: u64::from(u32_at(&b, 0x178)),
            block_extra: u32_at(&b, 0x17c),
            blocks_in_image: u32_at(&b, 0x180),
            blocks_allocated: u32_at(&b, 0x184),
            uuid_image: uuid_at(&b, 0x188),
            uuid_last_snap: uuid_at(&b, 0x198),
            uuid_link: uuid_at(&b, 0x1a8),
            uuid_parent: uuid_at(&b, 0x1b8),
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
    pub fn serialize(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        let mut put = |at: usize, bytes: &[u8]| {
            if let Some(dst) = b.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        // The text ends with a newline and at least one NUL, as VirtualBox writes it.
        let text = self.text.as_bytes();
        let n = text.len().min(0x3e);
        put(0, &text[..n]);
        put(n, b"\n");
        put(0x40, &SIGNATURE.to_le_bytes());
        put(0x44, &self.version.to_le_bytes());
        put(0x48, &self.header_size.to_le_bytes());
        put(0x4c, &self.image_type.to_le_bytes());
        put(0x50, &self.image_flags.to_le_bytes());
        let d = self.description.as_bytes();
        put(0x54, &d[..d.len().min(255)]);
        put(0x154, &u32::try_from(self.offset_bmap).unwrap_or(u32::MAX).to_le_bytes());
        put(0x158, &u32::try_from(self.offset_data).unwrap_or(u32::MAX).to_le_bytes());
        for (i, v) in
            [self.legacy.cylinders, self.legacy.heads, self.legacy.sectors, self.legacy.sector_size].iter().enumerate()
        {
            put(0x15c + 4 * i, &v.to_le_bytes());
        }
        put(0x170, &self.disk_size.to_le_bytes());
        put(0x178, &u32::try_from(self.block_size).unwrap_or(0).to_le_bytes());
        put(0x17c, &self.block_extra.to_le_bytes());
        put(0x180, &self.blocks_in_image.to_le_bytes());
        put(0x184, &self.blocks_allocated.to_le_bytes());
        put(0x188, &self.uuid_image.to_bytes_le());
        put(0x198, &self.uuid_last_snap.to_bytes_le());
        put(0x1a8, &self.uuid_link.to_bytes_le());
        put(0x1b8, &self.uuid_parent.to_bytes_le());
        if let Some(g) = self.lchs {
            for (i, v) in [g.cylinders, g.heads, g.sectors, g.sector_size].iter().enumerate() {
                put(0x1c8 + 4 * i, &v.to_le_bytes());
            }
        }
        b
    }
}

/// Reads the block map of `h` (already validated) as host-order entries.
pub fn read_block_map(file: &dyn ByteSource, h: &Header) -> Result<Vec<u32>> {
    let n = usize::try_from(h.blocks_in_image).map_err(|_| Error::unsupported("block map too large"))?;
    let mut raw = vec![0u8; n.checked_mul(4).ok_or_else(|| Error::unsupported("block map too large"))?];
    file.read_exact_at(&mut raw, h.offset_bmap).map_err(|e| e.with_field("offset_bmap"))?;
    Ok(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}
