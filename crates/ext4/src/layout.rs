//! The ext4 on-disk format: constants, the structures (superblock, group descriptor,
//! inode, extent and directory-entry heads, declared once and used by the reader and the
//! writer alike) and checksums. Layouts follow the kernel's "ext4 Data Structures and
//! Algorithms" (Documentation/filesystems/ext4) and e2fsprogs' `ext2_fs.h`.

use diskcast_layout::{
    Be32, FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Unaligned, high_u32, low_u16, low_u32,
};

/// Block size the writer uses (the reader takes 1 KiB to 64 KiB).
pub const BLOCK: u64 = 4096;
/// Inode record size the writer uses (mke2fs's default).
pub const INODE_SIZE: usize = 256;
/// `i_extra_isize`: the extended fields up to `i_projid` (mke2fs's default).
pub const EXTRA_ISIZE: u16 = 32;
/// Descriptor size with the 64bit feature.
pub const DESC_SIZE: usize = 64;
/// First non-reserved inode.
pub const FIRST_INO: u32 = 11;
/// The root directory's inode.
pub const ROOT_INO: u32 = 2;
/// The journal's inode.
pub const JOURNAL_INO: u32 = 8;
/// lost+found's inode as mke2fs makes it.
pub const LOST_FOUND_INO: u32 = 11;
/// The orphan file's inode as mke2fs makes it (the first after lost+found).
pub const ORPHAN_INO: u32 = 12;
/// Magic in the tail of each orphan file block.
pub const ORPHAN_MAGIC: u32 = 0x0B10_CA04;
/// Superblock magic.
pub const MAGIC: u16 = 0xEF53;
/// Groups per flex group (`s_log_groups_per_flex` 4, mke2fs's default).
pub const LOG_GROUPS_PER_FLEX: u32 = 4;
/// Longest name a directory entry holds.
pub const MAX_NAME_LEN: usize = 255;
/// Longest initialized extent in blocks (longer lengths mean "unwritten").
pub const MAX_EXTENT_LEN: u64 = 32768;
/// Extent header magic.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Extended attribute header magic (block and in-inode).
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
/// jbd2 journal magic (big-endian on disk).
pub const JBD2_MAGIC: u32 = 0xC03B_3998;
/// jbd2 superblock block types (`h_blocktype`): version 1 and version 2.
pub const JBD2_SUPERBLOCK_V1: u32 = 3;
pub const JBD2_SUPERBLOCK_V2: u32 = 4;

/// The jbd2 journal superblock (big-endian), the first 0x100 bytes of the journal's
/// first block; `s_users` follows. Written by the writer (an empty journal) and read by
/// the journal replay (`journal.rs`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct JournalSuperblock {
    pub magic: Be32,
    pub blocktype: Be32,
    pub header_sequence: Be32,
    pub blocksize: Be32,
    /// Blocks in the journal.
    pub maxlen: Be32,
    /// First block of the log.
    pub first: Be32,
    /// First transaction expected in the log.
    pub sequence: Be32,
    /// Block where the log starts; 0: the journal is empty.
    pub start: Be32,
    pub errno: Be32,
    pub feature_compat: Be32,
    pub feature_incompat: Be32,
    pub feature_ro_compat: Be32,
    pub uuid: [u8; 16],
    pub nr_users: Be32,
    pub dynsuper: Be32,
    pub max_transaction: Be32,
    pub max_trans_data: Be32,
    /// 4: crc32c.
    pub checksum_type: u8,
    pub padding: [u8; 3],
    pub num_fc_blks: Be32,
    pub head: Be32,
    pub padding2: [u8; 160],
    /// crc32c of the 1024-byte superblock with this field zero (csum v2/v3).
    pub checksum: Be32,
}
const _: () = assert!(size_of::<JournalSuperblock>() == 0x100);

/// Compat features.
pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const EXT_ATTR: u32 = 0x8;
    pub const RESIZE_INODE: u32 = 0x10;
    pub const DIR_INDEX: u32 = 0x20;
    pub const SPARSE_SUPER2: u32 = 0x200;
    pub const ORPHAN_FILE: u32 = 0x1000;
}
/// Incompat features: a reader must understand each one it finds.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}
/// Read-only compat features.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const DIR_NLINK: u32 = 0x20;
    pub const EXTRA_ISIZE: u32 = 0x40;
    /// Allocation in clusters of 2^n blocks: the group geometry counts clusters.
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
}

/// Inode flags.
pub mod iflag {
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
}

/// Group descriptor flags.
pub mod bgflag {
    pub const INODE_UNINIT: u16 = 0x1;
    pub const BLOCK_UNINIT: u16 = 0x2;
    pub const ITABLE_ZEROED: u16 = 0x4;
}

/// The superblock (1024 bytes at byte 1024 of the disk; backups at the start of some
/// groups), as the kernel's `struct ext4_super_block`. Fields neither side uses are
/// kept as byte runs named for what they hold.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct SuperBlock {
    pub inodes_count: Le32,
    pub blocks_count_lo: Le32,
    pub r_blocks_count_lo: Le32,
    pub free_blocks_count_lo: Le32,
    pub free_inodes_count: Le32,
    pub first_data_block: Le32,
    pub log_block_size: Le32,
    pub log_cluster_size: Le32,
    pub blocks_per_group: Le32,
    pub clusters_per_group: Le32,
    pub inodes_per_group: Le32,
    pub mtime: Le32,
    pub wtime: Le32,
    pub mnt_count: Le16,
    pub max_mnt_count: Le16,
    pub magic: Le16,
    pub state: Le16,
    pub errors: Le16,
    pub minor_rev_level: Le16,
    pub lastcheck: Le32,
    pub checkinterval: Le32,
    pub creator_os: Le32,
    pub rev_level: Le32,
    pub def_resuid: Le16,
    pub def_resgid: Le16,
    pub first_ino: Le32,
    pub inode_size: Le16,
    pub block_group_nr: Le16,
    pub feature_compat: Le32,
    pub feature_incompat: Le32,
    pub feature_ro_compat: Le32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    /// `s_last_mounted` .. `s_journal_uuid` (0x88..0xE0).
    pub mount_and_prealloc: [u8; 88],
    pub journal_inum: Le32,
    pub journal_dev: Le32,
    pub last_orphan: Le32,
    pub hash_seed: [Le32; 4],
    pub def_hash_version: u8,
    pub jnl_backup_type: u8,
    pub desc_size: Le16,
    pub default_mount_opts: Le32,
    pub first_meta_bg: Le32,
    pub mkfs_time: Le32,
    /// The journal inode's `i_block`, then its size (`s_jnl_blocks[15..17]`: high, low).
    pub jnl_blocks: [u8; 60],
    pub jnl_size_hi: Le32,
    pub jnl_size_lo: Le32,
    pub blocks_count_hi: Le32,
    pub r_blocks_count_hi: Le32,
    pub free_blocks_count_hi: Le32,
    pub min_extra_isize: Le16,
    pub want_extra_isize: Le16,
    pub flags: Le32,
    /// `s_raid_stride` .. `s_mmp_block`, `s_raid_stripe_width` (0x164..0x174).
    pub raid_mmp: [u8; 16],
    pub log_groups_per_flex: u8,
    pub checksum_type: u8,
    /// `s_encryption_level` .. `s_lpf_ino`, `s_prj_quota_inum` (0x176..0x270): error
    /// records, snapshots, quotas, encryption.
    pub unused_0x176: [u8; 250],
    pub checksum_seed: Le32,
    /// The `_hi` bytes of the times, error codes, `s_encoding` and its flags (0x274..0x280).
    pub unused_0x274: [u8; 12],
    pub orphan_file_inum: Le32,
    /// `s_reserved` (0x284..0x3FC).
    pub reserved: [u8; 376],
    pub checksum: Le32,
}

/// A group descriptor: 64 bytes with the 64bit feature, else only the first 32 (the
/// `_hi` halves read as zero).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub struct GroupDesc {
    pub block_bitmap_lo: Le32,
    pub inode_bitmap_lo: Le32,
    pub inode_table_lo: Le32,
    pub free_blocks_count_lo: Le16,
    pub free_inodes_count_lo: Le16,
    pub used_dirs_count_lo: Le16,
    pub flags: Le16,
    pub exclude_bitmap_lo: Le32,
    pub block_bitmap_csum_lo: Le16,
    pub inode_bitmap_csum_lo: Le16,
    pub itable_unused_lo: Le16,
    pub checksum: Le16,
    pub block_bitmap_hi: Le32,
    pub inode_bitmap_hi: Le32,
    pub inode_table_hi: Le32,
    pub free_blocks_count_hi: Le16,
    pub free_inodes_count_hi: Le16,
    pub used_dirs_count_hi: Le16,
    pub itable_unused_hi: Le16,
    pub exclude_bitmap_hi: Le32,
    pub block_bitmap_csum_hi: Le16,
    pub inode_bitmap_csum_hi: Le16,
    pub reserved: Le32,
}

/// The 128 bytes every inode record starts with (ext2's whole inode).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct InodeBase {
    pub mode: Le16,
    pub uid: Le16,
    pub size_lo: Le32,
    pub atime: Le32,
    pub ctime: Le32,
    pub mtime: Le32,
    pub dtime: Le32,
    pub gid: Le16,
    pub links_count: Le16,
    pub blocks_lo: Le32,
    pub flags: Le32,
    pub version: Le32,
    /// `i_block`: the extent tree root, the block map, a fast symlink or device numbers.
    pub block: [u8; 60],
    pub generation: Le32,
    pub file_acl_lo: Le32,
    pub size_high: Le32,
    pub obso_faddr: Le32,
    pub blocks_high: Le16,
    pub file_acl_high: Le16,
    pub uid_high: Le16,
    pub gid_high: Le16,
    pub checksum_lo: Le16,
    pub reserved: Le16,
}

/// The extended fields after [`InodeBase`] (inodes larger than 128 bytes); only the
/// first `extra_isize` bytes of it are meaningful.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct InodeExtra {
    pub extra_isize: Le16,
    pub checksum_hi: Le16,
    pub ctime_extra: Le32,
    pub mtime_extra: Le32,
    pub atime_extra: Le32,
    pub crtime: Le32,
    pub crtime_extra: Le32,
    pub version_hi: Le32,
    pub projid: Le32,
}

/// Size of the superblock record.
pub const SB_SIZE: usize = size_of::<SuperBlock>();
/// Where [`InodeExtra`] starts in an inode record.
pub const INODE_BASE: usize = size_of::<InodeBase>();
/// Size of the `i_block` area.
pub const IBLOCK_LEN: usize = 60;
const _: () = assert!(SB_SIZE == 1024 && size_of::<GroupDesc>() == DESC_SIZE);
const _: () = assert!(INODE_BASE == 128 && size_of::<InodeExtra>() == 32);
const _: () = assert!(std::mem::offset_of!(SuperBlock, checksum_seed) == 0x270);
const _: () = assert!(std::mem::offset_of!(SuperBlock, log_groups_per_flex) == 0x174);
const _: () = assert!(std::mem::offset_of!(SuperBlock, jnl_blocks) == 0x10C);

/// Byte offset of `magic` in the superblock, for probing without reading the rest.
pub const SB_MAGIC: usize = std::mem::offset_of!(SuperBlock, magic);

/// The 12-byte header of an extent node (in `i_block` or a tree block).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub struct ExtentHeader {
    pub magic: Le16,
    pub entries: Le16,
    pub max: Le16,
    pub depth: Le16,
    pub generation: Le32,
}

/// A leaf entry: `len` blocks from logical `block` at physical `start_hi:start_lo`
/// (lengths over 32768 mark unwritten extents).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub struct Extent {
    pub block: Le32,
    pub len: Le16,
    pub start_hi: Le16,
    pub start_lo: Le32,
}

/// An index entry: the node for logical blocks from `block` is at `leaf_hi:leaf_lo`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub struct ExtentIndex {
    pub block: Le32,
    pub leaf_lo: Le32,
    pub leaf_hi: Le16,
    pub unused: Le16,
}

/// The fixed 8 bytes of a directory entry; the name follows.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default)]
#[repr(C)]
pub struct DirEntryHead {
    pub inode: Le32,
    pub rec_len: Le16,
    pub name_len: u8,
    pub file_type: u8,
}

const _: () = assert!(size_of::<ExtentHeader>() == 12 && size_of::<Extent>() == 12);
const _: () = assert!(size_of::<ExtentIndex>() == 12 && size_of::<DirEntryHead>() == 8);

/// Directory entry file types.
pub mod ftype {
    pub const REG: u8 = 1;
    pub const DIR: u8 = 2;
    pub const CHR: u8 = 3;
    pub const BLK: u8 = 4;
    pub const FIFO: u8 = 5;
    pub const SOCK: u8 = 6;
    pub const SYMLINK: u8 = 7;
}

/// The `file_type` byte of the 12-byte checksum tail at the end of each directory block.
pub const DIR_TAIL_FT: u8 = 0xDE;
/// Size of that tail.
pub const DIR_TAIL_LEN: usize = 12;

/// Writes into the writer's own fixed-size records at the offsets above (never input).
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
/// ext4's crc32c: the raw CRC register, no final inversion (`ext4_chksum`). The `crc32c`
/// crate computes the standard (inverted in and out) form, hence the inversions here.
pub fn csum(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The seed of every metadata checksum: crc32c of the filesystem UUID.
pub fn fs_csum_seed(uuid: &[u8; 16]) -> u32 {
    csum(!0, uuid)
}

/// The seed of an inode's own checksums (inode, extent blocks, directory blocks).
pub fn inode_csum_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    csum(csum(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes())
}

/// Checksum of an inode record with its two checksum fields taken as zero.
pub fn inode_csum(fs_seed: u32, ino: u32, raw: &[u8; INODE_SIZE]) -> u32 {
    use std::mem::offset_of;
    let lo = offset_of!(InodeBase, checksum_lo);
    let hi = INODE_BASE + offset_of!(InodeExtra, checksum_hi);
    let generation = diskcast_layout::read::<InodeBase>(raw, 0, "ext4 inode").map_or(0, |i| i.generation.get());
    let mut c = csum(inode_csum_seed(fs_seed, ino, generation), &raw[..lo]);
    c = csum(c, &[0, 0]);
    c = csum(c, &raw[lo + 2..hi]);
    c = csum(c, &[0, 0]);
    csum(c, &raw[hi + 2..])
}

/// Checksum of a group descriptor (low 16 bits stored), its checksum field taken as zero.
pub fn desc_csum(fs_seed: u32, group: u32, desc: &GroupDesc) -> u16 {
    let zeroed = GroupDesc { checksum: Le16::ZERO, ..*desc };
    low_u16(u64::from(csum(csum(fs_seed, &group.to_le_bytes()), zeroed.as_bytes())))
}

/// Checksum of an xattr block (its `h_checksum` at 0x10 taken as zero).
pub fn xattr_block_csum(fs_seed: u32, block_nr: u64, block: &[u8]) -> u32 {
    let mut c = csum(fs_seed, &block_nr.to_le_bytes());
    c = csum(c, &block[..0x10]);
    c = csum(c, &[0; 4]);
    csum(c, &block[0x14..])
}

/// Splits a time into ext4's 32-bit seconds and the `_extra` field (2 epoch bits, 30
/// nanosecond bits). Times outside 1901..2446 are clamped.
pub fn encode_time(sec: i64, nsec: u32) -> (u32, u32) {
    let sec = sec.clamp(-(1i64 << 31), (1i64 << 34) - (1i64 << 31) - 1);
    // The low 32 bits as a signed count; the epoch bits say how many 2^32 to add.
    let lo = low_u32(sec.cast_unsigned()).cast_signed();
    let epoch = high_u32((sec - i64::from(lo)).cast_unsigned()) & 3;
    (lo.cast_unsigned(), epoch | (nsec.min(999_999_999) << 2))
}

/// The inverse of [`encode_time`].
pub fn decode_time(lo: u32, extra: Option<u32>) -> (i64, u32) {
    let base = i64::from(lo.cast_signed());
    match extra {
        Some(x) => (base + (i64::from(x & 3) << 32), (x >> 2).min(999_999_999)),
        None => (base, 0),
    }
}

/// xattr name prefixes by `e_name_index`.
pub const XATTR_PREFIXES: &[(u8, &[u8])] = &[
    (2, b"system.posix_acl_access"),
    (3, b"system.posix_acl_default"),
    (1, b"user."),
    (4, b"trusted."),
    (6, b"security."),
    (7, b"system."),
];

/// Splits a full xattr name into ext4's name index and the stored suffix.
pub fn xattr_split(name: &[u8]) -> Option<(u8, &[u8])> {
    for (idx, prefix) in XATTR_PREFIXES {
        if (*idx == 2 || *idx == 3) && name == *prefix {
            return Some((*idx, &[]));
        }
        if *idx != 2 && *idx != 3 && name.len() > prefix.len() && name.starts_with(prefix) {
            return Some((*idx, &name[prefix.len()..]));
        }
    }
    None
}

/// The full name of an xattr stored as `index` + `suffix`.
pub fn xattr_join(index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let (_, prefix) = XATTR_PREFIXES.iter().find(|(i, _)| *i == index)?;
    let mut v = prefix.to_vec();
    if index != 2 && index != 3 {
        v.extend_from_slice(suffix);
    }
    Some(v)
}

/// The hash of an xattr entry (`ext2fs_ext_attr_hash_entry`): the name, then the value
/// as little-endian 32-bit words (zero-padded).
pub fn xattr_entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ u32::from(c);
    }
    for chunk in value.chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h << 16) ^ (h >> 16) ^ u32::from_le_bytes(w);
    }
    h
}

/// ACL tags (Linux and ext4 use the same numbers).
mod acl_tag {
    pub const USER: u16 = 2;
    pub const GROUP: u16 = 8;
}

/// Linux's xattr form of a POSIX ACL (version 2, 8-byte entries) to ext4's on-disk form
/// (version 1, 4-byte entries for owner/group/mask/other, 8-byte for named users and
/// groups). `None` when the value is not a well-formed ACL.
pub fn acl_to_disk(value: &[u8]) -> Option<Vec<u8>> {
    if diskcast_layout::le32(value, 0, "ACL").ok()? != 2 || !(value.len() - 4).is_multiple_of(8) {
        return None;
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in value[4..].chunks(8) {
        let tag = diskcast_layout::le16(e, 0, "ACL entry").ok()?;
        out.extend_from_slice(&e[..4]);
        if tag == acl_tag::USER || tag == acl_tag::GROUP {
            out.extend_from_slice(&e[4..8]);
        }
    }
    Some(out)
}

/// ext4's on-disk ACL back to Linux's xattr form; `None` when malformed.
pub fn acl_from_disk(value: &[u8]) -> Option<Vec<u8>> {
    if diskcast_layout::le32(value, 0, "ACL").ok()? != 1 {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut at = 4;
    while at < value.len() {
        let e = value.get(at..at + 4)?;
        let tag = diskcast_layout::le16(e, 0, "ACL entry").ok()?;
        out.extend_from_slice(e);
        if tag == acl_tag::USER || tag == acl_tag::GROUP {
            out.extend_from_slice(value.get(at + 4..at + 8)?);
            at += 8;
        } else {
            out.extend_from_slice(&u32::MAX.to_le_bytes());
            at += 4;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_past_2038_and_before_1970() {
        for (s, n) in [(0i64, 0u32), (-1, 5), (1 << 31, 7), (4_000_000_000, 999_999_999), (-(1 << 31), 0)] {
            let (lo, x) = encode_time(s, n);
            assert_eq!(decode_time(lo, Some(x)), (s, n));
        }
    }

    #[test]
    fn acl_forms_convert_both_ways() {
        let mut linux = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in
            [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
        {
            linux.extend_from_slice(&tag.to_le_bytes());
            linux.extend_from_slice(&perm.to_le_bytes());
            linux.extend_from_slice(&id.to_le_bytes());
        }
        let disk = acl_to_disk(&linux).unwrap();
        assert_eq!(disk.len(), 4 + 4 * 4 + 8);
        assert_eq!(acl_from_disk(&disk).unwrap(), linux);
    }

    #[test]
    fn crc_matches_ext4s_raw_register() {
        // crc32c("123456789") is 0xE3069283 in its standard (inverted) form.
        assert_eq!(!csum(!0, b"123456789"), 0xE306_9283);
    }
}
