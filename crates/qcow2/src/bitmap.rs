//! Persistent dirty bitmaps (qcow2 v3, header extension 0x23852875): the directory, each
//! bitmap's table and the data clusters the tables name. Nothing here reads guest data;
//! `check` counts these clusters as references (qemu-img check does, so a healthy image
//! with bitmaps has no leaks) and `info` lists the bitmaps as qemu-img info does.
//!
//! qemu honours the extension only while autoclear bit 0 is set: an older writer that
//! did not know bitmaps clears the bit, and the bitmaps are stale (their clusters then are
//! leaks). We follow the same rule.

use crate::header::Header;
use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result, range_end};
use diskcast_layout::{Be16, Be32, Be64, FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned, read, usize_from};

/// Header extension type of the bitmaps extension.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Autoclear bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1;
/// qemu's QCOW2_MAX_BITMAPS.
pub(crate) const MAX_BITMAPS: u32 = 65535;
/// qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024 bytes per bitmap).
const MAX_DIRECTORY_SIZE: u64 = 1024 * 65535;
/// Directory entry flag bits.
pub(crate) const FLAG_IN_USE: u32 = 1;
pub(crate) const FLAG_AUTO: u32 = 2;
/// Bits 9..55 of a bitmap table entry: the data cluster's host offset.
pub(crate) const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The bitmaps extension's body as stored.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawBitmapsExt {
    pub nb_bitmaps: Be32,
    pub reserved: Be32,
    pub directory_size: Be64,
    pub directory_offset: Be64,
}

/// The fixed part of a bitmap directory entry; the extra data and the name follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawBitmapEntry {
    pub table_offset: Be64,
    pub table_size: Be32,
    pub flags: Be32,
    pub typ: u8,
    pub granularity_bits: u8,
    pub name_size: Be16,
    pub extra_data_size: Be32,
}

/// The bitmaps extension's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExt {
    /// Bitmaps in the directory.
    pub nb_bitmaps: u32,
    /// Bytes of the directory.
    pub directory_size: u64,
    /// Host offset of the directory.
    pub directory_offset: u64,
}

impl BitmapsExt {
    /// Parses the 24-byte extension body.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let raw = read::<RawBitmapsExt>(data, 0, "bitmaps extension")
            .map_err(|e| Error::from(e).with_field("bitmaps_extension"))?;
        Ok(BitmapsExt {
            nb_bitmaps: raw.nb_bitmaps.get(),
            directory_size: raw.directory_size.get(),
            directory_offset: raw.directory_offset.get(),
        })
    }
}

/// One bitmap's directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Its name (UTF-8 as qemu writes it; other bytes replaced).
    pub name: String,
    /// Bytes of guest data per bit.
    pub granularity: u64,
    /// The bitmap was not saved cleanly (still in use).
    pub in_use: bool,
    /// qemu updates it on every write.
    pub auto: bool,
    /// Host offset of its table.
    pub table_offset: u64,
    /// Entries in its table.
    pub table_size: u32,
}

impl Bitmap {
    /// qemu-img info's flags list.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.in_use {
            f.push("in-use");
        }
        if self.auto {
            f.push("auto");
        }
        f
    }
}

/// The bitmaps the image carries, or none when the extension is absent or stale
/// (autoclear bit clear). The directory must lie inside the file.
pub fn directory(file: &dyn ByteSource, h: &Header, file_len: u64) -> Result<Vec<Bitmap>> {
    let Some(ext) = h.bitmaps.filter(|_| h.autoclear & AUTOCLEAR_BITMAPS != 0) else { return Ok(Vec::new()) };
    let bad = |msg: String| Error::corrupt(msg).with_field("bitmap_directory_offset");
    if ext.nb_bitmaps > MAX_BITMAPS || ext.directory_size > MAX_DIRECTORY_SIZE {
        return Err(bad(format!(
            "{} bitmaps in a {}-byte directory: more than qemu allows",
            ext.nb_bitmaps, ext.directory_size
        )));
    }
    range_end(ext.directory_offset, ext.directory_size, file_len)
        .map_err(|_| bad(format!("bitmap directory at {:#x} runs past the end of the file", ext.directory_offset)))?;
    let mut dir = vec![0u8; diskcast_layout::usize_from_u64(ext.directory_size, "bitmap directory")?];
    file.read_exact_at(&mut dir, ext.directory_offset)?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    for i in 0..ext.nb_bitmaps {
        let e = read::<RawBitmapEntry>(&dir, pos, "bitmap directory entry")
            .map_err(|_| bad(format!("bitmap {i} lies past the directory's end")))?;
        let name_size = usize::from(e.name_size.get());
        let name_at = pos + size_of::<RawBitmapEntry>() + usize_from(e.extra_data_size.get());
        let name = diskcast_layout::bytes(&dir, name_at, name_size, "bitmap name")
            .map_err(|_| bad(format!("bitmap {i}'s name lies past the directory's end")))?;
        let granularity_bits = u32::from(e.granularity_bits);
        if granularity_bits > 63 {
            return Err(bad(format!("bitmap {i} has granularity 2^{granularity_bits}")));
        }
        let flags = e.flags.get();
        out.push(Bitmap {
            name: String::from_utf8_lossy(name).into_owned(),
            granularity: 1 << granularity_bits,
            in_use: flags & FLAG_IN_USE != 0,
            auto: flags & FLAG_AUTO != 0,
            table_offset: e.table_offset.get(),
            table_size: e.table_size.get(),
        });
        pos = (name_at + name_size).next_multiple_of(8);
    }
    Ok(out)
}

/// Host offsets of the data clusters bitmap `b`'s table names (entries with no cluster,
/// all zeros or all ones, are skipped). The table must lie inside the file.
pub fn data_clusters(file: &dyn ByteSource, b: &Bitmap, file_len: u64) -> Result<Vec<u64>> {
    let bytes = u64::from(b.table_size) * 8;
    range_end(b.table_offset, bytes, file_len).map_err(|_| {
        Error::corrupt(format!("bitmap {:?}: table at {:#x} runs past the end of the file", b.name, b.table_offset))
            .with_field("bitmap_table_offset")
    })?;
    let table = crate::header::read_u64_table(file, b.table_offset, u64::from(b.table_size), "bitmap_table_offset")?;
    Ok(table.into_iter().map(|e| e & TABLE_OFFSET_MASK).filter(|&o| o != 0).collect())
}
