//! Extended attributes: short form in the inode, else leaf blocks of the attribute fork
//! (found from its root, a leaf or a B+tree node, then along the leaves' sibling links),
//! values local to a leaf or in remote blocks. Namespaces as Linux names them; ACLs
//! (`SGI_ACL_FILE`, `SGI_ACL_DEFAULT` in the root namespace) as `system.posix_acl_*` in
//! Linux's encoding, which is how the tree models them.

use crate::fs::{ForkKind, Fs, Inode, Mapping};
use crate::layout::*;
use diskcast_block::{Error, Result};
use diskcast_layout::{be16, be32, byte, bytes, usize_from};
use diskcast_tree::Xattr;
use std::collections::HashSet;

/// Largest attribute value Linux allows (`XATTR_SIZE_MAX`).
const MAX_VALUE: usize = 65536;
/// Deepest attribute B+tree (the format's `XFS_DA_NODE_MAXDEPTH`).
const MAX_DA_DEPTH: u32 = 5;

/// The inode's extended attributes.
pub fn read(fs: &Fs, inode: &Inode) -> Result<Vec<Xattr>> {
    if !inode.has_attr_fork() {
        return Ok(Vec::new());
    }
    let ino = inode.ino;
    let mut out = Vec::new();
    match inode.format(ForkKind::Attr) {
        fork::LOCAL => {
            let f = inode.fork(ForkKind::Attr);
            let what = "XFS short-form attributes";
            let total = usize::from(be16(f, 0, what)?);
            let count = usize::from(byte(f, 2, what)?);
            let f = bytes(f, 0, total, what)?;
            let mut at = 4;
            for _ in 0..count {
                let namelen = usize::from(byte(f, at, what)?);
                let valuelen = usize::from(byte(f, at + 1, what)?);
                let flags = byte(f, at + 2, what)?;
                let name = bytes(f, at + 3, namelen, what)?;
                let value = bytes(f, at + 3 + namelen, valuelen, what)?;
                push(ino, flags, name, value.to_vec(), &mut out)?;
                at += 3 + namelen + valuelen;
            }
        }
        fork::EXTENTS | fork::BTREE => {
            let maps = fs.map(inode, ForkKind::Attr)?;
            if !maps.is_empty() {
                leaves(fs, ino, &maps, &mut out)?;
            }
        }
        f => return Err(Error::corrupt(format!("inode {ino}: attribute fork format {f}"))),
    }
    Ok(out)
}

/// Reads attribute fork block `blk` and checks its block info (magic among `magics`, and
/// on v5 its self-description); returns the block and its magic.
fn da_block(fs: &Fs, ino: u64, maps: &[Mapping], blk: u64) -> Result<(Vec<u8>, u16)> {
    let what = format!("inode {ino}'s attribute block {blk}");
    let (b, at) = fs.read_logical(maps, blk, 1, &what)?;
    let magic = be16(&b, 8, "XFS attribute block")?;
    let ok = if fs.v5 { [ATTR3_LEAF_MAGIC, DA3_NODE_MAGIC] } else { [ATTR_LEAF_MAGIC, DA_NODE_MAGIC] };
    if !ok.contains(&magic) {
        return Err(Error::corrupt(format!("{what}: bad magic {magic:#x}")));
    }
    if fs.v5 {
        fs.check_self(&b, at, ino, (off::DA3_CRC, off::DA3_UUID, off::DA3_OWNER, off::DA3_BLKNO), &what)?;
    }
    Ok((b, magic))
}

/// Every leaf: down the first entries of the nodes to the leftmost leaf, then along the
/// forward links. Each block is read once: one reached twice is a loop.
fn leaves(fs: &Fs, ino: u64, maps: &[Mapping], out: &mut Vec<Xattr>) -> Result<()> {
    let (node_magic, node_hdr, leaf_hdr) = if fs.v5 {
        (DA3_NODE_MAGIC, hdr::DA3_NODE, hdr::ATTR3_LEAF)
    } else {
        (DA_NODE_MAGIC, hdr::DA_NODE, hdr::ATTR_LEAF)
    };
    // The count sits right after the block info in nodes and leaves alike.
    let count_at = if fs.v5 { hdr::DA3_INFO } else { hdr::DA_INFO };
    let mut blk = 0u64;
    let mut seen = HashSet::new();
    let (mut b, mut magic) = da_block(fs, ino, maps, blk)?;
    let mut depth = 0;
    while magic == node_magic {
        depth += 1;
        if depth > MAX_DA_DEPTH || usize::from(be16(&b, count_at, "XFS attribute node")?) == 0 {
            return Err(Error::corrupt(format!("inode {ino}: attribute B+tree deeper than {MAX_DA_DEPTH} or empty")));
        }
        seen.insert(blk);
        blk = u64::from(be32(&b, node_hdr + 4, "XFS attribute node")?);
        if !seen.insert(blk) {
            return Err(Error::corrupt(format!("inode {ino}: attribute block {blk} is reached twice")));
        }
        (b, magic) = da_block(fs, ino, maps, blk)?;
    }
    loop {
        let what = format!("inode {ino}'s attribute leaf {blk}");
        if magic == node_magic {
            return Err(Error::corrupt(format!("{what}: a node among the leaves")));
        }
        let count = usize::from(be16(&b, count_at, "XFS attribute leaf")?);
        if count.checked_mul(8).is_none_or(|l| leaf_hdr + l > b.len()) {
            return Err(Error::corrupt(format!("{what}: {count} entries do not fit")));
        }
        for e in b[leaf_hdr..leaf_hdr + count * 8].chunks_exact(8) {
            let nameidx = usize::from(be16(e, 4, "XFS attribute entry")?);
            let flags = e[6];
            if flags & attr_flag::INCOMPLETE != 0 {
                continue;
            }
            let w = "XFS attribute leaf entry";
            if flags & attr_flag::LOCAL != 0 {
                let valuelen = usize::from(be16(&b, nameidx, w)?);
                let namelen = usize::from(byte(&b, nameidx + 2, w)?);
                let name = bytes(&b, nameidx + 3, namelen, w)?;
                let value = bytes(&b, nameidx + 3 + namelen, valuelen, w)?;
                push(ino, flags, name, value.to_vec(), out)?;
            } else {
                let valueblk = u64::from(be32(&b, nameidx, w)?);
                let valuelen = usize_from(be32(&b, nameidx + 4, w)?);
                let namelen = usize::from(byte(&b, nameidx + 8, w)?);
                let name = bytes(&b, nameidx + 9, namelen, w)?;
                let value = remote(fs, ino, maps, valueblk, valuelen)?;
                push(ino, flags, name, value, out)?;
            }
        }
        let next = u64::from(be32(&b, 0, "XFS attribute leaf")?);
        if next == 0 {
            return Ok(());
        }
        if !seen.insert(next) {
            return Err(Error::corrupt(format!("inode {ino}: attribute leaf {next} is reached twice (a loop)")));
        }
        blk = next;
        (b, magic) = da_block(fs, ino, maps, blk)?;
    }
}

/// A value kept in its own blocks from attribute fork block `blk`.
fn remote(fs: &Fs, ino: u64, maps: &[Mapping], blk: u64, len: usize) -> Result<Vec<u8>> {
    if len > MAX_VALUE {
        return Err(Error::corrupt(format!(
            "inode {ino}: an attribute value of {len} bytes (Linux allows {MAX_VALUE})"
        )));
    }
    fs.read_remote(ino, maps, blk, len, ATTR_RMT_MAGIC, &format!("inode {ino}'s attribute value"))
}

/// One attribute into `out`, named as Linux names it (parent pointers, internal to the
/// filesystem, left out).
fn push(ino: u64, flags: u8, name: &[u8], value: Vec<u8>, out: &mut Vec<Xattr>) -> Result<()> {
    if flags & attr_flag::PARENT != 0 {
        return Ok(());
    }
    let full = if flags & attr_flag::ROOT != 0 {
        match name {
            b"SGI_ACL_FILE" | b"SGI_ACL_DEFAULT" => {
                let linux =
                    acl_to_linux(&value).ok_or_else(|| Error::corrupt(format!("inode {ino}: a malformed ACL")))?;
                let n: &[u8] =
                    if name == b"SGI_ACL_FILE" { b"system.posix_acl_access" } else { b"system.posix_acl_default" };
                out.push(Xattr { name: n.to_vec(), value: linux });
                return Ok(());
            }
            _ => [b"trusted.".as_slice(), name].concat(),
        }
    } else if flags & attr_flag::SECURE != 0 {
        [b"security.".as_slice(), name].concat()
    } else {
        [b"user.".as_slice(), name].concat()
    };
    out.push(Xattr { name: full, value });
    Ok(())
}
