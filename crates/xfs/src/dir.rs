//! Directories: short form in the inode, else the data blocks of the directory's first
//! 32 GiB (its data space), which block, leaf, node and B+tree directories all keep their
//! entries in; the leaf and free-space blocks beyond are hash indexes a reader can skip.

use crate::fs::{ForkKind, Fs, Inode, idx};
use crate::layout::*;
use diskcast_block::{Error, Result};
use diskcast_layout::{be16, be32, be64, byte, bytes, usize_from};

/// Where the leaf blocks of a directory start (bytes): everything before is entries.
const LEAF_OFFSET: u64 = 32 << 30;
/// Most directory data read per directory: real directories are far below (a million
/// entries is ~50 MiB); hostile sizes end here.
pub const MAX_DIR_BYTES: u64 = 1 << 30;

/// The `(name, inode)` entries of directory `inode` ("." and ".." left out).
pub fn entries(fs: &Fs, inode: &Inode) -> Result<Vec<(Vec<u8>, u64)>> {
    let ino = inode.ino;
    match inode.format(ForkKind::Data) {
        fork::LOCAL => short_form(fs, inode),
        fork::EXTENTS | fork::BTREE => {
            let maps = fs.map(inode, ForkKind::Data)?;
            let mut out = Vec::new();
            let mut read = 0u64;
            let per = fs.dir_fsbs;
            // Each directory block starts at a multiple of its size in blocks.
            let mut starts: Vec<u64> = Vec::new();
            for m in maps.iter().filter(|m| !m.unwritten && m.off.saturating_mul(fs.bs) < LEAF_OFFSET) {
                let first = m.off.next_multiple_of(per);
                let end = (m.off + m.len).min(LEAF_OFFSET / fs.bs);
                let mut b = first;
                while b < end {
                    read += per * fs.bs;
                    if read > MAX_DIR_BYTES {
                        return Err(Error::corrupt(format!(
                            "directory inode {ino} holds more than {MAX_DIR_BYTES} bytes of entries"
                        )));
                    }
                    starts.push(b);
                    b += per;
                }
            }
            for b in starts {
                let what = format!("directory inode {ino}'s block {b}");
                let (blk, at) = fs.read_logical(&maps, b, per, &what)?;
                data_block(fs, ino, &blk, at, &what, &mut out)?;
            }
            Ok(out)
        }
        f => Err(Error::corrupt(format!("directory inode {ino} has data fork format {f}"))),
    }
}

/// A short-form directory: a count, the parent, then `namelen, offset, name, [ftype], ino`.
fn short_form(fs: &Fs, inode: &Inode) -> Result<Vec<(Vec<u8>, u64)>> {
    let ino = inode.ino;
    let fork = inode.fork(ForkKind::Data);
    let size = idx(inode.size())?;
    if size > fork.len() {
        return Err(Error::corrupt(format!("short-form directory inode {ino} claims {size} bytes")));
    }
    let b = &fork[..size];
    let what = "XFS short-form directory";
    let count = usize::from(byte(b, 0, what)?);
    let i8count = usize::from(byte(b, 1, what)?);
    let ino_len = if i8count > 0 { 8 } else { 4 };
    let mut at = 2 + ino_len;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let namelen = usize::from(byte(b, at, what)?);
        let name = bytes(b, at + 3, namelen, what)?.to_vec();
        at += 3 + namelen + usize::from(fs.ftype);
        let child = if ino_len == 8 { be64(b, at, what)? } else { u64::from(be32(b, at, what)?) };
        at += ino_len;
        if namelen == 0 {
            return Err(Error::corrupt(format!("short-form directory inode {ino} has an empty name")));
        }
        out.push((name, child));
    }
    Ok(out)
}

/// The entries of one directory data block (single-block form or data block).
fn data_block(fs: &Fs, ino: u64, b: &[u8], at: u64, what: &str, out: &mut Vec<(Vec<u8>, u64)>) -> Result<()> {
    let magic = be32(b, 0, "XFS directory block")?;
    let (is_block, head) = match (magic, fs.v5) {
        (DIR3_BLOCK_MAGIC, true) => (true, hdr::DIR3_DATA),
        (DIR3_DATA_MAGIC, true) => (false, hdr::DIR3_DATA),
        (DIR_BLOCK_MAGIC, false) => (true, hdr::DIR_DATA),
        (DIR_DATA_MAGIC, false) => (false, hdr::DIR_DATA),
        _ => return Err(Error::corrupt(format!("{what}: bad magic {magic:#x}"))),
    };
    if fs.v5 {
        fs.check_self(b, at, ino, (off::DIR3_CRC, off::DIR3_UUID, off::DIR3_OWNER, off::DIR3_BLKNO), &what)?;
    }
    let mut end = b.len();
    if is_block {
        // The single-block form ends with its leaf entries and an 8-byte tail.
        let count = usize_from(be32(b, b.len() - 8, "XFS directory block tail")?);
        end = count
            .checked_mul(8)
            .and_then(|l| b.len().checked_sub(8 + l))
            .filter(|&e| e >= head)
            .ok_or_else(|| Error::corrupt(format!("{what}: {count} leaf entries do not fit in the block")))?;
    }
    let mut pos = head;
    while pos < end {
        let tag = be16(b, pos, "XFS directory entry")?;
        if tag == 0xffff {
            let len = usize::from(be16(b, pos + 2, "XFS directory entry")?);
            if len < 8 || len % 8 != 0 || pos + len > end {
                return Err(Error::corrupt(format!("{what}: free space at byte {pos} has length {len}")));
            }
            pos += len;
            continue;
        }
        let child = be64(b, pos, "XFS directory entry")?;
        let namelen = usize::from(byte(b, pos + 8, "XFS directory entry")?);
        let len = (8 + 1 + namelen + usize::from(fs.ftype) + 2).next_multiple_of(8);
        if namelen == 0 || pos + len > end {
            return Err(Error::corrupt(format!("{what}: entry at byte {pos} runs past the entries")));
        }
        let name = &b[pos + 9..pos + 9 + namelen];
        if name != b"." && name != b".." {
            out.push((name.to_vec(), child));
        }
        pos += len;
    }
    Ok(())
}
