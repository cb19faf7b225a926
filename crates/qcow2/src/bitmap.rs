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

/// Header extension type of the bitmaps extension.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Autoclear bit 0: the bitmaps extension is consistent.
pub const AUTOCLEAR_BITMAPS: u64 = 1;
/// qemu's QCOW2_MAX_BITMAPS.
const MAX_BITMAPS: u32 = 65535;
/// qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024 bytes per bitmap).
const MAX_DIRECTORY_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
/// Fixed part of a directory entry.
const ENTRY_FIXED: usize = 24;
/// Directory entry flag bits.
const FLAG_IN_USE: u32 = 1;
const FLAG_AUTO: u32 = 2;
/// Bits 9..55 of a bitmap table entry: the data cluster's host offset.
const TABLE_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

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
        let field = |at: usize, n: usize| {
            data.get(at..at + n).ok_or_else(|| {
                Error::invalid("bitmaps extension is shorter than 24 bytes").with_field("bitmaps_extension")
            })
        };
        let nb = u32::from_be_bytes(field(0, 4)?.try_into().unwrap_or_default());
        let size = u64::from_be_bytes(field(8, 8)?.try_into().unwrap_or_default());
        let offset = u64::from_be_bytes(field(16, 8)?.try_into().unwrap_or_default());
        Ok(BitmapsExt { nb_bitmaps: nb, directory_size: size, directory_offset: offset })
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
    let mut dir = vec![0u8; ext.directory_size as usize];
    file.read_exact_at(&mut dir, ext.directory_offset)?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    for i in 0..ext.nb_bitmaps {
        let fixed =
            dir.get(pos..pos + ENTRY_FIXED).ok_or_else(|| bad(format!("bitmap {i} lies past the directory's end")))?;
        let be64 = |at: usize| u64::from_be_bytes(fixed[at..at + 8].try_into().unwrap_or_default());
        let be32 = |at: usize| u32::from_be_bytes(fixed[at..at + 4].try_into().unwrap_or_default());
        let name_size = usize::from(u16::from_be_bytes([fixed[18], fixed[19]]));
        let extra = be32(20) as usize;
        let name_at = pos + ENTRY_FIXED + extra;
        let name = dir
            .get(name_at..name_at + name_size)
            .ok_or_else(|| bad(format!("bitmap {i}'s name lies past the directory's end")))?;
        let granularity_bits = u32::from(fixed[17]);
        if granularity_bits > 63 {
            return Err(bad(format!("bitmap {i} has granularity 2^{granularity_bits}")));
        }
        let flags = be32(12);
        out.push(Bitmap {
            name: String::from_utf8_lossy(name).into_owned(),
            granularity: 1 << granularity_bits,
            in_use: flags & FLAG_IN_USE != 0,
            auto: flags & FLAG_AUTO != 0,
            table_offset: be64(0),
            table_size: be32(8),
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
