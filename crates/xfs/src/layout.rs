//! The XFS on-disk format as the reader needs it: the superblock and inode core declared
//! once as zerocopy structs, the magics, feature bits and header sizes, and the CRC-32C
//! every v5 metadata block carries. Facts from "XFS Algorithms & Data Structures"
//! (kernel.org xfs-documentation); all fields big-endian except the CRCs.

use diskcast_block::{Error, Result};
use diskcast_layout::{Be16, Be32, Be64, FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Superblock magic `XFSB`.
pub const SB_MAGIC: u32 = 0x5846_5342;
/// AG free space header magic `XAGF`.
pub const AGF_MAGIC: u32 = 0x5841_4746;
/// AG inode header magic `XAGI`.
pub const AGI_MAGIC: u32 = 0x5841_4749;
/// Inode core magic `IN`.
pub const INODE_MAGIC: u16 = 0x494e;
/// Block map B+tree blocks: v4 `BMAP`, v5 `BMA3`.
pub const BMAP_MAGIC: u32 = 0x424d_4150;
pub const BMAP3_MAGIC: u32 = 0x424d_4133;
/// Directory data blocks: single-block form (`XD2B`, `XDB3`) and multi-block (`XD2D`, `XDD3`).
pub const DIR_BLOCK_MAGIC: u32 = 0x5844_3242;
pub const DIR3_BLOCK_MAGIC: u32 = 0x5844_4233;
pub const DIR_DATA_MAGIC: u32 = 0x5844_3244;
pub const DIR3_DATA_MAGIC: u32 = 0x5844_4433;
/// Directory free-space index block (v5) `XDF3`, and v5 leaf blocks (16-bit magics in the
/// block info); the reader does not read them, log replay recomputes their CRCs.
pub const DIR3_FREE_MAGIC: u32 = 0x5844_4633;
pub const DIR3_LEAF1_MAGIC: u16 = 0x3df1;
pub const DIR3_LEAFN_MAGIC: u16 = 0x3dff;
/// Remote symlink block (v5 only) `XSLM`.
pub const SYMLINK_MAGIC: u32 = 0x5853_4c4d;
/// Attribute leaf blocks (16-bit magic in the block info): v4 and v5.
pub const ATTR_LEAF_MAGIC: u16 = 0xfbee;
pub const ATTR3_LEAF_MAGIC: u16 = 0x3bee;
/// Directory/attribute B+tree node blocks: v4 and v5.
pub const DA_NODE_MAGIC: u16 = 0xfebe;
pub const DA3_NODE_MAGIC: u16 = 0x3ebe;
/// Remote attribute value block (v5 only) `XARM`.
pub const ATTR_RMT_MAGIC: u32 = 0x5841_524d;
/// Log record header magic.
pub const LOG_MAGIC: u32 = 0xfeed_babe;

/// The inode number of a v5 directory or attribute block header's owner and its CRC
/// offsets: the header shapes are fixed by the format.
pub mod off {
    /// Superblock, AGF, AGI: where each keeps its CRC.
    pub const SB_CRC: usize = 224;
    pub const AGF_CRC: usize = 216;
    pub const AGI_CRC: usize = 312;
    /// Inode core (v3).
    pub const INODE_CRC: usize = 100;
    /// Long-form B+tree block (v5): `blkno` at 24, uuid at 40, owner at 56, crc at 64.
    pub const BMBT3_BLKNO: usize = 24;
    pub const BMBT3_UUID: usize = 40;
    pub const BMBT3_OWNER: usize = 56;
    pub const BMBT3_CRC: usize = 64;
    /// Directory data block (v5): crc at 4, blkno at 8, uuid at 24, owner at 40.
    pub const DIR3_CRC: usize = 4;
    pub const DIR3_BLKNO: usize = 8;
    pub const DIR3_UUID: usize = 24;
    pub const DIR3_OWNER: usize = 40;
    /// Directory/attribute B+tree block info (v5): crc at 12, blkno 16, uuid 32, owner 48.
    pub const DA3_CRC: usize = 12;
    pub const DA3_BLKNO: usize = 16;
    pub const DA3_UUID: usize = 32;
    pub const DA3_OWNER: usize = 48;
    /// Remote symlink / attribute value block (v5): crc at 12, uuid 16, owner 32, blkno 40.
    pub const RMT_CRC: usize = 12;
    pub const RMT_UUID: usize = 16;
    pub const RMT_OWNER: usize = 32;
    pub const RMT_BLKNO: usize = 40;
}

/// Header sizes (bytes).
pub mod hdr {
    /// Inode core: v1/v2 and v3.
    pub const INODE_V2: usize = 100;
    pub const INODE_V3: usize = 176;
    /// Long-form B+tree block: v4 and v5.
    pub const BMBT: usize = 24;
    pub const BMBT3: usize = 72;
    /// Directory data block: v4 and v5.
    pub const DIR_DATA: usize = 16;
    pub const DIR3_DATA: usize = 64;
    /// Attribute leaf block: v4 and v5.
    pub const ATTR_LEAF: usize = 32;
    pub const ATTR3_LEAF: usize = 80;
    /// Directory/attribute block info (sibling links, magic; v5: self-description).
    pub const DA_INFO: usize = 12;
    pub const DA3_INFO: usize = 56;
    /// Directory/attribute node block: v4 and v5.
    pub const DA_NODE: usize = 16;
    pub const DA3_NODE: usize = 64;
    /// Remote symlink / attribute value block (v5).
    pub const RMT: usize = 56;
    /// Log record header (one basic block) and log operation header.
    pub const LOG_OP: usize = 12;
}

/// `sb_features_incompat` bits.
pub mod incompat {
    pub const FTYPE: u32 = 1 << 0;
    pub const SPINODES: u32 = 1 << 1;
    pub const META_UUID: u32 = 1 << 2;
    pub const BIGTIME: u32 = 1 << 3;
    pub const NEEDSREPAIR: u32 = 1 << 4;
    pub const NREXT64: u32 = 1 << 5;
    pub const EXCHRANGE: u32 = 1 << 6;
    pub const PARENT: u32 = 1 << 7;
    pub const METADIR: u32 = 1 << 8;
}

/// `sb_features2` bit for the directory entry file type on v4.
pub const VERSION2_FTYPE: u32 = 0x200;
/// Inode `di_flags`: file data on the realtime device.
pub const DIFLAG_REALTIME: u16 = 0x1;
/// Inode `di_flags2`: large timestamps; 64-bit extent counters.
pub const DIFLAG2_BIGTIME: u64 = 1 << 3;
pub const DIFLAG2_NREXT64: u64 = 1 << 4;

/// Fork formats (`di_format`, `di_aformat`).
pub mod fork {
    pub const DEV: u8 = 0;
    pub const LOCAL: u8 = 1;
    pub const EXTENTS: u8 = 2;
    pub const BTREE: u8 = 3;
}

/// Attribute entry flags (`XFS_ATTR_*`): the namespace and the value's place.
pub mod attr_flag {
    pub const LOCAL: u8 = 1 << 0;
    pub const ROOT: u8 = 1 << 1;
    pub const SECURE: u8 = 1 << 2;
    pub const PARENT: u8 = 1 << 3;
    pub const INCOMPLETE: u8 = 1 << 7;
}

/// Log operation header flag of an unmount record.
pub const LOG_UNMOUNT_TRANS: u8 = 0x20;

/// The superblock (the fields up to `sb_meta_uuid`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SuperBlock {
    pub magicnum: Be32,
    pub blocksize: Be32,
    pub dblocks: Be64,
    pub rblocks: Be64,
    pub rextents: Be64,
    pub uuid: [u8; 16],
    pub logstart: Be64,
    pub rootino: Be64,
    pub rbmino: Be64,
    pub rsumino: Be64,
    pub rextsize: Be32,
    pub agblocks: Be32,
    pub agcount: Be32,
    pub rbmblocks: Be32,
    pub logblocks: Be32,
    pub versionnum: Be16,
    pub sectsize: Be16,
    pub inodesize: Be16,
    pub inopblock: Be16,
    pub fname: [u8; 12],
    pub blocklog: u8,
    pub sectlog: u8,
    pub inodelog: u8,
    pub inopblog: u8,
    pub agblklog: u8,
    pub rextslog: u8,
    pub inprogress: u8,
    pub imax_pct: u8,
    pub icount: Be64,
    pub ifree: Be64,
    pub fdblocks: Be64,
    pub frextents: Be64,
    pub uquotino: Be64,
    pub gquotino: Be64,
    pub qflags: Be16,
    pub flags: u8,
    pub shared_vn: u8,
    pub inoalignmt: Be32,
    pub unit: Be32,
    pub width: Be32,
    pub dirblklog: u8,
    pub logsectlog: u8,
    pub logsectsize: Be16,
    pub logsunit: Be32,
    pub features2: Be32,
    pub bad_features2: Be32,
    pub features_compat: Be32,
    pub features_ro_compat: Be32,
    pub features_incompat: Be32,
    pub features_log_incompat: Be32,
    pub crc: [u8; 4],
    pub spino_align: Be32,
    pub pquotino: Be64,
    pub lsn: Be64,
    pub meta_uuid: [u8; 16],
}

/// An on-disk timestamp: seconds and nanoseconds, or with bigtime one count of
/// nanoseconds from 1901-12-13.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DiskTime {
    pub hi: Be32,
    pub lo: Be32,
}

/// The inode core (v3 fields included; v1/v2 inodes end at `next_unlinked`).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InodeCore {
    pub magic: Be16,
    pub mode: Be16,
    pub version: u8,
    pub format: u8,
    pub onlink: Be16,
    pub uid: Be32,
    pub gid: Be32,
    pub nlink: Be32,
    pub projid_lo: Be16,
    pub projid_hi: Be16,
    /// `di_big_nextents` with nrext64; padding and the flush counter otherwise.
    pub big_nextents: Be64,
    pub atime: DiskTime,
    pub mtime: DiskTime,
    pub ctime: DiskTime,
    pub size: Be64,
    pub nblocks: Be64,
    pub extsize: Be32,
    /// `di_nextents`, or `di_big_anextents` with nrext64.
    pub nextents: Be32,
    /// `di_anextents` (unused with nrext64).
    pub anextents: Be16,
    pub forkoff: u8,
    pub aformat: u8,
    pub dmevmask: Be32,
    pub dmstate: Be16,
    pub flags: Be16,
    pub generation: Be32,
    pub next_unlinked: Be32,
    pub crc: [u8; 4],
    pub changecount: Be64,
    pub lsn: Be64,
    pub flags2: Be64,
    pub cowextsize: Be32,
    pub pad2: [u8; 12],
    pub crtime: DiskTime,
    pub ino: Be64,
    pub uuid: [u8; 16],
}

/// Seconds between the bigtime origin (the smallest 32-bit time, 1901-12-13) and the Unix
/// epoch.
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

/// `(seconds, nanoseconds)` since the Unix epoch of an on-disk time.
pub fn decode_time(t: DiskTime, bigtime: bool) -> (i64, u32) {
    if bigtime {
        let ns = (u64::from(t.hi.get()) << 32) | u64::from(t.lo.get());
        let sec = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX) - BIGTIME_EPOCH_OFFSET;
        let nsec = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
        (sec, nsec)
    } else {
        // The seconds are a signed 32-bit count.
        let sec = i64::from(i32::from_be_bytes(t.hi.get().to_be_bytes()));
        (sec, t.lo.get().min(999_999_999))
    }
}

/// CRC-32C of `block` with its 4-byte CRC field at `at` taken as zero, as XFS computes it.
pub fn crc(block: &[u8], at: usize) -> Result<u32> {
    let end = at
        .checked_add(4)
        .filter(|&e| e <= block.len())
        .ok_or_else(|| Error::corrupt(format!("a {}-byte block has no CRC field at byte {at}", block.len())))?;
    let c = crc32c::crc32c(&block[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    Ok(crc32c::crc32c_append(c, &block[end..]))
}

/// Checks the CRC-32C stored (little-endian) at `at` of `block`, naming `what` on a
/// mismatch.
pub fn check_crc(block: &[u8], at: usize, what: &dyn std::fmt::Display) -> Result<()> {
    let want = crc(block, at)?;
    let have = u32::from_le_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]]);
    if want != have {
        return Err(Error::corrupt(format!(
            "{what}: CRC mismatch (stored {have:#010x}, computed {want:#010x}); the filesystem is damaged \
             (xfs_repair -n says where)"
        ))
        .with_field("crc"));
    }
    Ok(())
}

/// An ACL as XFS stores it (`SGI_ACL_FILE`/`SGI_ACL_DEFAULT`: a big-endian count and
/// 12-byte entries `tag, id, perm, pad`) in Linux's `system.posix_acl_*` encoding
/// (version 2, then little-endian `tag u16, perm u16, id u32`), or `None` when malformed.
pub fn acl_to_linux(value: &[u8]) -> Option<Vec<u8>> {
    // The count must match the value's length, which bounds it.
    let count = usize::try_from(u32::from_be_bytes(value.get(..4)?.try_into().ok()?)).ok()?;
    let body = value.get(4..)?;
    if body.len() != count.checked_mul(12)? {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    for e in body.chunks_exact(12) {
        let tag = u32::from_be_bytes(e[0..4].try_into().ok()?);
        let id = u32::from_be_bytes(e[4..8].try_into().ok()?);
        let perm = u16::from_be_bytes(e[8..10].try_into().ok()?);
        out.extend_from_slice(&u16::try_from(tag).ok()?.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        // ACL_USER and ACL_GROUP carry an id; the rest are "undefined" in Linux's form.
        let id = if tag == 2 || tag == 8 { id } else { u32::MAX };
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_have_the_documented_sizes() {
        assert_eq!(size_of::<SuperBlock>(), 264);
        assert_eq!(size_of::<InodeCore>(), hdr::INODE_V3);
        assert_eq!(std::mem::offset_of!(SuperBlock, crc), off::SB_CRC);
        assert_eq!(std::mem::offset_of!(InodeCore, crc), off::INODE_CRC);
        assert_eq!(std::mem::offset_of!(InodeCore, next_unlinked) + 4, hdr::INODE_V2);
    }

    #[test]
    fn times_decode_both_forms() {
        let t = |hi: u32, lo: u32| DiskTime { hi: Be32::new(hi), lo: Be32::new(lo) };
        assert_eq!(decode_time(t(0xffff_ffff, 5), false), (-1, 5));
        // bigtime 0 is 1901-12-13T20:45:52Z.
        assert_eq!(decode_time(t(0, 0), true), (-(1 << 31), 0));
        let ns = ((4_102_444_800u64 + (1 << 31)) * 1_000_000_000) + 7;
        assert_eq!(decode_time(t((ns >> 32) as u32, ns as u32), true), (4_102_444_800, 7));
    }

    #[test]
    fn acls_convert_and_malformed_ones_are_refused() {
        let mut x = 3u32.to_be_bytes().to_vec();
        for (tag, id, perm) in [(1u32, 0u32, 6u16), (2, 1000, 4), (0x20, 0, 0)] {
            x.extend_from_slice(&tag.to_be_bytes());
            x.extend_from_slice(&id.to_be_bytes());
            x.extend_from_slice(&perm.to_be_bytes());
            x.extend_from_slice(&[0, 0]);
        }
        let l = acl_to_linux(&x).unwrap();
        assert_eq!(&l[..4], &2u32.to_le_bytes());
        assert_eq!(&l[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&l[12..20], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert!(acl_to_linux(&x[..20]).is_none());
        assert!(acl_to_linux(&u32::MAX.to_be_bytes()).is_none());
    }
}
