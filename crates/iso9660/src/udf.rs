//! UDF (ECMA-167 3rd edition with the OSTA UDF profile, revisions 1.02 to 2.60), as on
//! DVDs, Windows installation discs (UDF bridge: the ISO 9660 side often holds only a
//! README) and `mkudffs` images.
//!
//! Path: anchor (sector 256) → volume descriptor sequence (partition descriptors, the
//! logical volume descriptor with its partition maps) → file set descriptor → root
//! directory ICB → file entries and file identifier descriptors. Type 1 (physical) and
//! metadata (UDF 2.50+) partition maps are read; virtual (VAT, CD-R) and sparable
//! (CD-RW/DVD-RW) maps are refused as unsupported.

use crate::read::path_in;
use crate::{MAX_SYMLINK_TARGET, Regions, read_bytes};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{le16, le32, le64};
use diskcast_tree::{Content, FileData, FileExtent, Kind, Meta, Node, NodeId, Timestamp, Tree, check_name};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Block sizes tried when looking for the anchor (optical media use 2048; `mkudffs` on a
/// hard-disk image uses the device's, often 512; 4096 for 4Kn disks).
const BLOCK_SIZES: [u64; 3] = [2048, 512, 4096];
/// Most descriptors in a volume descriptor sequence.
const MAX_VDS: u64 = 256;
/// Largest directory read.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Most allocation extents (continuations) followed for one file.
const MAX_AD_EXTENTS: usize = 4096;
/// Deepest directory nesting.
const MAX_DEPTH: usize = 1024;

const TAG_AVDP: u16 = 2;
const TAG_PD: u16 = 5;
const TAG_LVD: u16 = 6;
const TAG_TD: u16 = 8;
const TAG_FSD: u16 = 256;
const TAG_FID: u16 = 257;
const TAG_AED: u16 = 258;
const TAG_FE: u16 = 261;
const TAG_EFE: u16 = 266;

/// True when the disc has a UDF volume recognition sequence (NSR02/NSR03) and an anchor.
pub fn probe(disk: &dyn BlockRead) -> Result<bool> {
    if !has_nsr(disk)? {
        return Ok(false);
    }
    Ok(find_anchor(disk)?.is_some())
}

/// The volume recognition sequence starts at byte 32768; each descriptor takes 2048
/// bytes, or a whole block when blocks are larger.
fn has_nsr(disk: &dyn BlockRead) -> Result<bool> {
    for step in [2048u64, 4096] {
        for i in 0..64u64 {
            let at = 32768 + i * step;
            if at + 2048 > disk.size() {
                break;
            }
            let mut d = [0u8; 6];
            disk.read_at(&mut d, at)?;
            match &d[1..6] {
                b"NSR02" | b"NSR03" => return Ok(true),
                b"BEA01" | b"CD001" | b"CDW02" | b"BOOT2" => {}
                _ => break,
            }
        }
    }
    Ok(false)
}

/// (block size, main VDS location, length) from the first anchor found.
fn find_anchor(disk: &dyn BlockRead) -> Result<Option<(u64, u32, u32)>> {
    for bs in BLOCK_SIZES {
        let at = 256 * bs;
        if at + 512 > disk.size() {
            continue;
        }
        let d = read_bytes(disk, at, 512, "UDF anchor")?;
        if tag_ok(&d, TAG_AVDP, 256) {
            return Ok(Some((bs, le32(&d, 20, "UDF descriptor")?, le32(&d, 16, "UDF descriptor")?)));
        }
    }
    Ok(None)
}

/// A descriptor tag (ECMA-167 3/7.2) with this id, a good checksum and, when `loc` is
/// given, recorded at that location.
fn tag_ok(d: &[u8], id: u16, loc: u32) -> bool {
    if d.len() < 16 || le16(d, 0, "UDF descriptor").ok() != Some(id) {
        return false;
    }
    let sum = d[..16].iter().enumerate().filter(|(i, _)| *i != 4).fold(0u8, |s, (_, b)| s.wrapping_add(*b));
    sum == d[4] && (loc == u32::MAX || le32(d, 12, "UDF descriptor").ok() == Some(loc))
}

/// How a logical block of one partition reference maps to the disc.
#[derive(Debug, Clone)]
enum Part {
    /// Physical: the partition's first sector and length in blocks.
    Physical { start: u64, len: u64 },
    /// Metadata (UDF 2.50+): blocks are offsets into the metadata file, whose extents
    /// live in the physical partition.
    Metadata { extents: Vec<(u64, u64, u64)> },
}

struct Udf {
    disk: Arc<dyn BlockRead>,
    bs: u64,
    parts: Vec<Part>,
}

impl Udf {
    /// Byte offset on the disc of block `lb` of partition reference `part`, with `len`
    /// bytes from there staying inside that partition.
    fn locate(&self, part: u16, lb: u32, len: u64) -> Result<u64> {
        let p = self.parts.get(usize::from(part)).ok_or_else(|| {
            Error::corrupt(format!("UDF partition reference {part} is out of range ({} maps)", self.parts.len()))
                .with_field("partition_reference")
        })?;
        let bad = || {
            Error::out_of_bounds(format!("UDF block {lb} of partition {part} lies outside it")).with_field("lb_addr")
        };
        match p {
            Part::Physical { start, len: plen } => {
                let blocks = len.div_ceil(self.bs);
                if u64::from(lb) + blocks > *plen {
                    return Err(bad());
                }
                Ok((start + u64::from(lb)) * self.bs)
            }
            Part::Metadata { extents } => {
                // Sorted by file offset (they are laid end to end): a binary search, as a
                // metadata file may have hundreds of thousands of extents.
                let off = u64::from(lb) * self.bs;
                let i = extents.partition_point(|&(foff, _, elen)| foff + elen <= off);
                match extents.get(i) {
                    Some(&(foff, disk_off, elen)) if off >= foff && off + len <= foff + elen => {
                        Ok(disk_off + (off - foff))
                    }
                    _ => Err(bad()),
                }
            }
        }
    }

    fn read(&self, part: u16, lb: u32, len: u64, what: &str) -> Result<Vec<u8>> {
        let at = self.locate(part, lb, len)?;
        read_bytes(self.disk.as_ref(), at, len, what)
    }
}

/// Reads the UDF tree.
pub fn read_tree(disk: Arc<dyn BlockRead>) -> Result<Tree> {
    let (bs, vds_loc, vds_len) =
        find_anchor(disk.as_ref())?.ok_or_else(|| Error::invalid("no UDF anchor volume descriptor pointer"))?;
    let mut pds: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut lvd: Option<Vec<u8>> = None;
    let count = (u64::from(vds_len) / bs).min(MAX_VDS);
    for i in 0..count {
        let loc = u64::from(vds_loc) + i;
        let d = read_bytes(disk.as_ref(), loc * bs, bs, "UDF volume descriptor")?;
        let id = le16(&d, 0, "UDF descriptor")?;
        if !tag_ok(&d, id, u32::MAX) {
            continue;
        }
        match id {
            TAG_PD => {
                pds.insert(
                    le16(&d, 22, "UDF descriptor")?,
                    (u64::from(le32(&d, 188, "UDF descriptor")?), u64::from(le32(&d, 192, "UDF descriptor")?)),
                );
            }
            TAG_LVD => lvd = Some(d),
            TAG_TD => break,
            _ => {}
        }
    }
    let lvd = lvd.ok_or_else(|| Error::corrupt("UDF volume has no logical volume descriptor"))?;
    if u64::from(le32(&lvd, 212, "UDF descriptor")?) != bs {
        return Err(Error::unsupported(format!(
            "UDF logical block size {} differs from the sector size {bs}",
            le32(&lvd, 212, "UDF descriptor")?
        ))
        .with_field("logical_block_size"));
    }
    let mut udf = Udf { disk: disk.clone(), bs, parts: Vec::new() };
    let nmaps = le32(&lvd, 268, "UDF descriptor")?.min(64);
    let maps_len = diskcast_layout::usize_from(le32(&lvd, 264, "UDF descriptor")?);
    let maps =
        lvd.get(440..440 + maps_len).ok_or_else(|| Error::corrupt("UDF partition maps run past the descriptor"))?;
    let mut pos = 0;
    let mut metadata: Vec<(usize, u32)> = Vec::new();
    for _ in 0..nmaps {
        let (Some(&ty), Some(&len)) = (maps.get(pos), maps.get(pos + 1)) else {
            return Err(Error::corrupt("UDF partition map runs past the table").with_field("partition_maps"));
        };
        let m = maps
            .get(pos..pos + usize::from(len))
            .filter(|_| len >= 6)
            .ok_or_else(|| Error::corrupt("UDF partition map runs past the table").with_field("partition_maps"))?;
        let physical = |num: u16| -> Result<Part> {
            let (start, len) = pds.get(&num).copied().ok_or_else(|| {
                Error::corrupt(format!("UDF partition map names partition {num}, which has no descriptor"))
                    .with_field("partition_number")
            })?;
            Ok(Part::Physical { start, len })
        };
        match ty {
            1 => udf.parts.push(physical(le16(m, 4, "UDF descriptor")?)?),
            2 if m.len() >= 64 && m[5..].starts_with(b"*UDF Metadata Partition") => {
                let num = le16(m, 38, "UDF descriptor")?;
                metadata.push((udf.parts.len(), le32(m, 40, "UDF descriptor")?));
                udf.parts.push(physical(num)?);
            }
            2 => {
                let name = String::from_utf8_lossy(&m[5..28]).trim_end_matches('\0').to_string();
                return Err(Error::unsupported(format!("UDF partition map {name:?} (virtual or sparable media)"))
                    .with_field("partition_maps"));
            }
            t => return Err(Error::corrupt(format!("UDF partition map type {t}")).with_field("partition_maps")),
        }
        pos += usize::from(len);
    }
    // A metadata partition's blocks live in its metadata file, itself a file entry in the
    // physical partition that holds it.
    // Until replaced, the metadata map's slot holds a physical view of its partition, so
    // the metadata file's own addresses resolve there.
    for (index, file_lb) in metadata {
        let phys = u16::try_from(index).map_err(|_| Error::corrupt("too many UDF partition maps"))?;
        let fe = read_entry(&udf, phys, file_lb, &mut Regions::default())?;
        let mut extents = Vec::new();
        let mut foff = 0u64;
        for (lb, len, part) in fe.extents {
            let at = udf.locate(part, lb, len)?;
            extents.push((foff, at, len));
            foff += len;
        }
        udf.parts[index] = Part::Metadata { extents };
    }
    // File set descriptor: the logical volume contents use is its long_ad.
    let (fsd_len, fsd_lb, fsd_part) = (
        le32(&lvd, 248, "UDF descriptor")? & 0x3fff_ffff,
        le32(&lvd, 252, "UDF descriptor")?,
        le16(&lvd, 256, "UDF descriptor")?,
    );
    let fsd = udf.read(fsd_part, fsd_lb, u64::from(fsd_len).clamp(512, bs), "UDF file set descriptor")?;
    if !tag_ok(&fsd, TAG_FSD, u32::MAX) {
        return Err(Error::corrupt("UDF file set descriptor has a bad tag").with_field("file_set_descriptor"));
    }
    let (root_lb, root_part) = (le32(&fsd, 404, "UDF descriptor")?, le16(&fsd, 408, "UDF descriptor")?);
    Walker {
        udf,
        tree: Tree::new(Meta::default()),
        seen_dirs: HashSet::new(),
        files: HashMap::new(),
        regions: Regions::default(),
    }
    .walk(root_part, root_lb)
}

/// A file entry, decoded.
struct Entry {
    file_type: u8,
    meta: Meta,
    size: u64,
    /// (block, length in bytes, partition) of each recorded extent; unrecorded and
    /// unallocated extents appear as gaps.
    extents: Vec<(u32, u64, u16)>,
    /// File offsets of the extents above.
    offsets: Vec<u64>,
    /// Data embedded in the entry itself.
    inline: Option<Vec<u8>>,
}

fn udf_time(b: &[u8]) -> Result<Timestamp> {
    let b = diskcast_layout::bytes(b, 0, 12, "UDF timestamp")?;
    let tz = le16(b, 0, "UDF timestamp")?;
    let year = i64::from(le16(b, 2, "UDF timestamp")?.cast_signed());
    if year == 0 {
        return Ok(Timestamp::default());
    }
    let (mon, day) = (u32::from(b[4]).clamp(1, 12), u32::from(b[5]).clamp(1, 31));
    let mut secs = crate::days_from_civil(year, mon, day) * 86400
        + i64::from(b[6]) * 3600
        + i64::from(b[7]) * 60
        + i64::from(b[8]);
    // Type 1 is local time with an offset in minutes (12-bit signed; -2047: none).
    let off = i64::from(((tz & 0x0fff) << 4).cast_signed() >> 4);
    if tz >> 12 == 1 && off != -2047 {
        secs -= off * 60;
    }
    let nsec = u32::from(b[9]) * 10_000_000 + u32::from(b[10]) * 100_000 + u32::from(b[11]) * 1000;
    Ok(Timestamp { sec: secs, nsec: nsec.min(999_999_999) })
}

/// Reads the file entry at block `lb` of `part`; its allocation extent descriptors are
/// claimed in `regions` (each belongs to one entry).
fn read_entry(udf: &Udf, part: u16, lb: u32, regions: &mut Regions) -> Result<Entry> {
    let d = udf.read(part, lb, udf.bs, "UDF file entry")?;
    let id = le16(&d, 0, "UDF descriptor")?;
    if !(tag_ok(&d, TAG_FE, u32::MAX) || tag_ok(&d, TAG_EFE, u32::MAX)) {
        return Err(Error::corrupt(format!("UDF file entry at block {lb} has a bad tag")).with_field("file_entry"));
    }
    let efe = id == TAG_EFE;
    let icb_flags = le16(&d, 34, "UDF descriptor")?;
    let file_type = d[27];
    let perms = le32(&d, 44, "UDF descriptor")?;
    let mut mode = (perms & 7) | ((perms >> 5) & 7) << 3 | ((perms >> 10) & 7) << 6;
    if icb_flags & 0x40 != 0 {
        mode |= 0o4000;
    }
    if icb_flags & 0x80 != 0 {
        mode |= 0o2000;
    }
    if icb_flags & 0x100 != 0 {
        mode |= 0o1000;
    }
    let (uid, gid) = (le32(&d, 36, "UDF descriptor")?, le32(&d, 40, "UDF descriptor")?);
    let size = le64(&d, 56, "UDF descriptor")?;
    let (atime_at, mtime_at, ctime_at, ea_len_at) = if efe { (80, 92, 116, 208) } else { (72, 84, 96, 168) };
    let mut meta = Meta::new(mode, udf_time(&d[mtime_at..mtime_at + 12])?);
    // 0xFFFFFFFF means "no id recorded".
    meta.uid = if uid == u32::MAX { 0 } else { uid };
    meta.gid = if gid == u32::MAX { 0 } else { gid };
    meta.atime = Some(udf_time(&d[atime_at..atime_at + 12])?);
    meta.ctime = Some(udf_time(&d[ctime_at..ctime_at + 12])?);
    let ea_len = diskcast_layout::usize_from(le32(&d, ea_len_at, "UDF descriptor")?);
    let ad_len = diskcast_layout::usize_from(le32(&d, ea_len_at + 4, "UDF descriptor")?);
    let ad_start = ea_len_at + 8 + ea_len;
    let ads = d.get(ad_start..ad_start.saturating_add(ad_len)).ok_or_else(|| {
        Error::corrupt(format!("UDF file entry at block {lb}: allocation descriptors run past the block"))
            .with_field("allocation_descriptors")
    })?;
    let mut e = Entry { file_type, meta, size, extents: Vec::new(), offsets: Vec::new(), inline: None };
    match icb_flags & 7 {
        3 => {
            if diskcast_layout::u64_from_usize(ads.len()) < size {
                return Err(
                    Error::corrupt("UDF embedded file is larger than its entry").with_field("information_length")
                );
            }
            e.inline = Some(ads[..diskcast_layout::usize_from_u64(size, "UDF embedded file")?].to_vec());
        }
        t @ (0 | 1) => collect_ads(udf, ads, t, part, &mut e, regions)?,
        t => return Err(Error::unsupported(format!("UDF allocation descriptor type {t}")).with_field("icb_flags")),
    }
    Ok(e)
}

/// Walks short (type 0) or long (type 1) allocation descriptors, following
/// continuation extents.
fn collect_ads(udf: &Udf, first: &[u8], ty: u16, part: u16, e: &mut Entry, regions: &mut Regions) -> Result<()> {
    let step = if ty == 0 { 8 } else { 16 };
    let mut buf = first.to_vec();
    let mut foff = 0u64;
    let mut hops = 0;
    'outer: loop {
        let mut next = None;
        for ad in buf.chunks_exact(step) {
            let raw = le32(ad, 0, "UDF descriptor")?;
            let (kind, len) = (raw >> 30, u64::from(raw & 0x3fff_ffff));
            if len == 0 {
                break 'outer;
            }
            let lb = le32(ad, 4, "UDF descriptor")?;
            let p = if ty == 0 { part } else { le16(ad, 8, "UDF descriptor")? };
            match kind {
                0 => {
                    udf.locate(p, lb, len)?;
                    e.extents.push((lb, len, p));
                    e.offsets.push(foff);
                    foff += len;
                }
                1 | 2 => foff += len,
                _ => {
                    next = Some((p, lb, len));
                    break;
                }
            }
        }
        let Some((p, lb, len)) = next else { break };
        hops += 1;
        if hops > MAX_AD_EXTENTS {
            return Err(
                Error::corrupt("UDF allocation extents chain too long or loop").with_field("allocation_descriptors")
            );
        }
        let aed_len = len.clamp(24, udf.bs);
        let at = udf.locate(p, lb, aed_len)?;
        regions
            .claim(at, aed_len, "UDF allocation extent descriptor", at)
            .map_err(|e| e.with_field("allocation_descriptors"))?;
        let d = read_bytes(udf.disk.as_ref(), at, aed_len, "UDF allocation extent")?;
        if !tag_ok(&d, TAG_AED, u32::MAX) {
            return Err(
                Error::corrupt("UDF allocation extent descriptor has a bad tag").with_field("allocation_descriptors")
            );
        }
        let n = diskcast_layout::usize_from(le32(&d, 20, "UDF descriptor")?).min(d.len() - 24);
        buf = d[24..24 + n].to_vec();
    }
    Ok(())
}

/// An OSTA compressed unicode string (UDF 2.1.1): compression id 8 (one byte per
/// character, Latin-1) or 16 (UCS-2 big-endian), converted to UTF-8.
fn cs0(b: &[u8]) -> Vec<u8> {
    match b.split_first() {
        Some((8 | 254, rest)) => rest.iter().map(|&c| char::from(c)).collect::<String>().into_bytes(),
        Some((16 | 255, rest)) => crate::read::ucs2_name(rest),
        _ => Vec::new(),
    }
}

struct Walker {
    udf: Udf,
    tree: Tree,
    /// Directory entries walked, by their byte offset on the disc: two partition
    /// references (or metadata extents) naming one block are one entry.
    seen_dirs: HashSet<u64>,
    /// Files by their entry's byte offset: several names for one entry are hard links.
    files: HashMap<u64, NodeId>,
    /// Directory contents and allocation extent descriptors read so far.
    regions: Regions,
}

impl Walker {
    fn walk(mut self, root_part: u16, root_lb: u32) -> Result<Tree> {
        let root_at = self.udf.locate(root_part, root_lb, self.udf.bs)?;
        let root = read_entry(&self.udf, root_part, root_lb, &mut self.regions)?;
        let mut stack = vec![(root, root_at, NodeId::ROOT, 0usize)];
        while let Some((entry, at, id, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(Error::corrupt("UDF directories nest too deep"));
            }
            if !self.seen_dirs.insert(at) {
                return Err(Error::corrupt(format!(
                    "UDF directory cycle: the directory at byte {at} is reached twice"
                )));
            }
            if entry.file_type != 4 {
                return Err(Error::corrupt("UDF directory entry is not a directory").with_field("file_type"));
            }
            if id == NodeId::ROOT {
                self.tree.node_mut(id).meta = entry.meta.clone();
            }
            self.claim_dir(&entry, at)?;
            let data = self.content(&entry)?;
            let mut pos = 0usize;
            while pos + 38 <= data.len() {
                let f = &data[pos..];
                if !tag_ok(f, TAG_FID, u32::MAX) {
                    return Err(Error::corrupt("UDF file identifier descriptor has a bad tag").with_field("fid"));
                }
                let (chars, l_fi, l_iu) = (f[18], usize::from(f[19]), usize::from(le16(f, 36, "UDF descriptor")?));
                let total = (38 + l_iu + l_fi).next_multiple_of(4);
                let name_raw = f
                    .get(38 + l_iu..38 + l_iu + l_fi)
                    .ok_or_else(|| Error::corrupt("UDF file identifier runs past its directory").with_field("fid"))?;
                let (c_lb, c_part) = (le32(f, 24, "UDF descriptor")?, le16(f, 28, "UDF descriptor")?);
                pos += total;
                // Deleted (4) and parent (8) entries are not names.
                if chars & 0x0c != 0 {
                    continue;
                }
                let name = cs0(name_raw);
                check_name(&name)?;
                let c_at = self.udf.locate(c_part, c_lb, self.udf.bs)?;
                if let Some(&existing) = self.files.get(&c_at) {
                    self.tree.link(id, &name, existing)?;
                    continue;
                }
                let child = read_entry(&self.udf, c_part, c_lb, &mut self.regions)?;
                let meta = child.meta.clone();
                let kind = match child.file_type {
                    4 => {
                        let cid = self.tree.insert(id, &name, Node::new(meta, Kind::empty_dir()))?;
                        stack.push((child, c_at, cid, depth + 1));
                        continue;
                    }
                    12 => Kind::Symlink(self.symlink(&child, id, &name)?),
                    9 => Kind::Fifo,
                    10 => Kind::Socket,
                    6 | 7 => {
                        // Device numbers live in an extended attribute we do not read.
                        if child.file_type == 7 {
                            Kind::CharDev { major: 0, minor: 0 }
                        } else {
                            Kind::BlockDev { major: 0, minor: 0 }
                        }
                    }
                    _ => Kind::File(self.file_data(&child)?),
                };
                let cid = self.tree.insert(id, &name, Node::new(meta, kind))?;
                if child.file_type != 4 {
                    self.files.insert(c_at, cid);
                }
            }
        }
        Ok(self.tree)
    }

    /// Takes the bytes a directory's identifiers are stored in (the entry itself when
    /// embedded): a directory whose content overlaps another's would list its entries
    /// again, and nested so, O(N²) of them.
    fn claim_dir(&mut self, e: &Entry, at: u64) -> Result<()> {
        let claim = |r: &mut Regions, start, len| {
            r.claim(start, len, "UDF directory", at).map_err(|e| e.with_field("allocation_descriptors"))
        };
        match self.file_data(e)?.content {
            Content::Inline(_) => claim(&mut self.regions, at, self.udf.bs),
            Content::Blocks { extents, .. } => {
                extents.iter().try_for_each(|x| claim(&mut self.regions, x.source_offset, x.len))
            }
            _ => Ok(()),
        }
    }

    /// A directory's whole content in memory.
    fn content(&self, e: &Entry) -> Result<Vec<u8>> {
        if e.size > MAX_DIR_BYTES {
            return Err(Error::out_of_bounds(format!("UDF directory of {} bytes is too large", e.size)));
        }
        // Identifiers are never holes: a directory longer than what its entry records
        // would be allocated (up to the cap) for zeros that end it at its first tag.
        let recorded = match &e.inline {
            Some(b) => u64::try_from(b.len()).unwrap_or(u64::MAX),
            None => e.extents.iter().map(|x| x.1).fold(0u64, u64::saturating_add),
        };
        if e.size > recorded {
            return Err(Error::corrupt(format!(
                "UDF directory of {} bytes has only {recorded} bytes recorded",
                e.size
            ))
            .with_field("information_length"));
        }
        self.read_whole(e)
    }

    fn read_whole(&self, e: &Entry) -> Result<Vec<u8>> {
        let f = self.file_data(e)?;
        let n = usize::try_from(f.size).map_err(|_| Error::out_of_bounds("UDF entry too large for memory"))?;
        let mut buf = vec![0u8; n];
        f.read_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// The target of symlink `name` in directory `dir`. Its path components may fill one
    /// logical block, as Linux's `udf_symlink_filler` allows (it refuses longer ones with
    /// ENAMETOOLONG), and the joined target [`MAX_SYMLINK_TARGET`] bytes: each link costs
    /// at most a block read and 4 KiB kept, whatever its entry claims.
    fn symlink(&self, e: &Entry, dir: NodeId, name: &[u8]) -> Result<Vec<u8>> {
        let refuse = |why: String| {
            Error::out_of_bounds(format!("UDF symlink {}: {why}", path_in(&self.tree, dir, name)))
                .with_field("information_length")
        };
        if e.size > self.udf.bs {
            return Err(refuse(format!(
                "{} bytes of path components, more than one {}-byte block (Linux refuses it too)",
                e.size, self.udf.bs
            )));
        }
        symlink_target(&self.read_whole(e)?).ok_or_else(|| {
            refuse(format!("target longer than {MAX_SYMLINK_TARGET} bytes (Linux's PATH_MAX without its NUL)"))
        })
    }

    fn file_data(&self, e: &Entry) -> Result<FileData> {
        if let Some(b) = &e.inline {
            return Ok(FileData { size: e.size, content: Content::Inline(b.clone().into()) });
        }
        let mut extents = Vec::new();
        for (&(lb, len, part), &foff) in e.extents.iter().zip(&e.offsets) {
            if foff >= e.size {
                break;
            }
            let len = len.min(e.size - foff);
            let at = self.udf.locate(part, lb, len)?;
            extents.push(FileExtent { file_offset: foff, source_offset: at, len });
        }
        if extents.is_empty() {
            return Ok(FileData { size: e.size, content: Content::Zero });
        }
        FileData::blocks(e.size, self.udf.disk.clone(), extents)
    }
}

/// A symlink's path components (ECMA-167 4/14.16.1) joined with `/`, as Linux's
/// `udf_pc_to_char` joins them: a root component (type 2, or 1 without an identifier)
/// restarts the path at `/`, type 1 with an identifier (a place agreed on outside the
/// medium) is skipped. `None` when the target exceeds [`MAX_SYMLINK_TARGET`].
fn symlink_target(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos + 4 <= b.len() {
        let (ty, len) = (b[pos], usize::from(b[pos + 1]));
        let Some(id) = b.get(pos + 4..pos + 4 + len) else { break };
        pos += 4 + len;
        let part: Vec<u8> = match ty {
            1 if len > 0 => continue,
            1 | 2 => {
                out.clear();
                out.push(b'/');
                first = true;
                continue;
            }
            3 => b"..".to_vec(),
            4 => b".".to_vec(),
            _ => cs0(id),
        };
        if !first {
            out.push(b'/');
        }
        out.extend_from_slice(&part);
        first = false;
        if out.len() > MAX_SYMLINK_TARGET {
            return None;
        }
    }
    Some(out)
}
