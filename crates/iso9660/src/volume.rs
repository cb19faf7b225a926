//! The volume descriptor set (ECMA-119 §8): from sector 16 until the terminator, the
//! primary descriptor, Joliet's supplementary one and El Torito's boot record.

use crate::dir::{DirRecord, parse_record};
use crate::spec::{BootRecord, CD001, DescriptorHead, EL_TORITO, VolumeDescriptor};
use crate::{SECTOR, read_bytes};
use diskcast_block::{BlockRead, Error, Result};
use serde::Serialize;

/// Most descriptors read before giving up on finding the terminator.
const MAX_DESCRIPTORS: u64 = 64;

/// What the volume descriptor set holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Volumes {
    /// The primary volume descriptor's volume identifier.
    pub volume_id: String,
    /// Volume space size in sectors.
    pub blocks: u32,
    /// The primary tree's root directory.
    #[serde(skip)]
    pub(crate) root: Option<DirRecord>,
    /// The Joliet tree's root directory and its UCS-2 level (1 to 3).
    #[serde(skip)]
    pub(crate) joliet: Option<(DirRecord, u8)>,
    /// The El Torito boot catalog's sector.
    pub boot_catalog: Option<u32>,
}

/// True when sector 16 holds an ISO 9660 volume descriptor.
pub fn has_iso_magic(disk: &dyn BlockRead) -> Result<bool> {
    if disk.size() < 17 * SECTOR {
        return Ok(false);
    }
    let mut b = [0u8; 6];
    disk.read_at(&mut b, 16 * SECTOR)?;
    Ok(&b[1..6] == b"CD001")
}

/// Reads the volume descriptor set.
pub fn read_volumes(disk: &dyn BlockRead) -> Result<Volumes> {
    let mut v = Volumes::default();
    let mut seen_primary = false;
    for i in 0..MAX_DESCRIPTORS {
        let at = (16 + i) * SECTOR;
        if at + SECTOR > disk.size() {
            break;
        }
        let d = read_bytes(disk, at, SECTOR, "volume descriptor")?;
        let head: &DescriptorHead = diskcast_layout::read(&d, 0, "volume descriptor")?;
        if head.id != CD001 {
            break;
        }
        let boot: &BootRecord = diskcast_layout::read(&d, 0, "boot record")?;
        let vd: &VolumeDescriptor = diskcast_layout::read(&d, 0, "volume descriptor")?;
        match head.ty {
            0 if boot.boot_system_id.starts_with(EL_TORITO) => v.boot_catalog = Some(boot.catalog.get()),
            1 if !seen_primary => {
                seen_primary = true;
                if vd.block_size.get() != 2048 {
                    return Err(Error::unsupported(format!(
                        "logical block size {} (only 2048 is in use)",
                        vd.block_size.get()
                    ))
                    .with_field("logical_block_size")
                    .with_offset(at + 128));
                }
                v.volume_id = String::from_utf8_lossy(&vd.volume_id).trim_end().to_string();
                v.blocks = vd.space_size.get();
                v.root = Some(root_record(vd, at)?);
            }
            2 if vd.escapes[..2] == *b"%/" && matches!(vd.escapes[2], 0x40 | 0x43 | 0x45) => {
                let level = match vd.escapes[2] {
                    0x40 => 1,
                    0x43 => 2,
                    _ => 3,
                };
                if v.joliet.is_none() {
                    v.joliet = Some((root_record(vd, at)?, level));
                }
            }
            255 => break,
            _ => {}
        }
    }
    if v.root.is_none() {
        return Err(Error::invalid("no primary volume descriptor").with_offset(16 * SECTOR));
    }
    Ok(v)
}

/// The root directory record of a volume descriptor. ECMA-119 §8.4.18 makes it 34 bytes
/// with no system use, but NetBSD makefs writes the length of the root's own `.` record
/// (68) into its length byte, with the volume set identifier following as usual. Linux,
/// isoinfo, xorriso and 7-Zip read the 34 bytes and ignore the length; so does this. A
/// length under 34 cannot hold the record.
fn root_record(d: &VolumeDescriptor, at: u64) -> Result<DirRecord> {
    let at = at + 156;
    let mut rec = d.root;
    let bad = |what: String| Error::corrupt(what).with_field("root_directory_record").with_offset(at);
    if rec[0] < 34 {
        return Err(bad(format!(
            "root directory record of the volume descriptor has length {} (at least 34 expected)",
            rec[0]
        )));
    }
    rec[0] = 34;
    let r = parse_record(&rec, at)?.ok_or_else(|| bad("root directory record is empty".into()))?;
    if !r.is_dir() {
        return Err(bad("root directory record is not a directory".into()));
    }
    Ok(r)
}
