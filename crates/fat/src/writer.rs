//! Planning a FAT16 or FAT32 filesystem holding a tree.
//!
//! Everything is laid out up front: each directory and file gets one contiguous run of
//! clusters (root first, then depth-first, a directory before its files), so the FAT is
//! a set of straight chains and the image is a [`PlannedImage`]: boot sectors, FSInfo,
//! both FATs (only up to the last used cluster; the rest is zero) and directories as
//! bytes, file data as references into the tree. Nothing is copied until the copy engine
//! reads it.

use crate::names::{exact_short, lfn_checksum, long_name_problem, short_basis, to_dos, with_tail};
use crate::reader::FatType;
use diskcast_block::{Error, Result};
use diskcast_tree::{BuildOptions, BuiltFs, Kind, Meta, NodeId, Piece, PlannedImage, Schedule, Tree, display_name};
use std::collections::HashSet;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Largest file FAT12, FAT16 and FAT32 hold: a directory entry's size field is 32 bits.
const MAX_FILE_SIZE: u64 = 0xFFFF_FFFF;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// FAT32, or FAT16 when the size is too small for FAT32.
    Fat32,
    /// FAT16.
    Fat16,
}

/// One directory entry to write.
#[derive(Debug)]
struct Ent {
    long: Option<Vec<u16>>,
    short: [u8; 11],
    attr: u8,
    meta: Meta,
    what: Target,
}

#[derive(Debug)]
enum Target {
    /// Index into the directory list.
    Dir(usize),
    /// A file node and its size.
    File(NodeId, u64),
}

#[derive(Debug)]
struct WDir {
    meta: Meta,
    parent: usize,
    entries: Vec<Ent>,
    /// First cluster and cluster count, once allocated (root of FAT16: none).
    first: u32,
}

impl Ent {
    fn slots(&self) -> u64 {
        1 + self.long.as_ref().map_or(0, |l| l.len().div_ceil(13) as u64)
    }
}

/// Gathers the tree into directories of entries, with short names made unique per
/// directory, and a warning for every entry FAT cannot hold; a file too large for FAT is
/// an error.
fn collect(tree: &Tree, warnings: &mut Vec<String>) -> Result<Vec<WDir>> {
    let root_meta = tree.node(NodeId::ROOT).meta.clone();
    let mut dirs = vec![WDir { meta: root_meta, parent: 0, entries: Vec::new(), first: 0 }];
    let mut todo = vec![(0usize, NodeId::ROOT, String::new())];
    while let Some((di, id, path)) = todo.pop() {
        let mut shorts: HashSet<[u8; 11]> = HashSet::new();
        let mut folded: HashSet<String> = HashSet::new();
        let mut entries = Vec::new();
        for (name, child) in tree.dir(id)?.entries() {
            let shown = format!("{path}/{}", String::from_utf8_lossy(name));
            let node = tree.node(child);
            let what = match &node.kind {
                Kind::Dir(_) | Kind::File(_) => None,
                other => Some(other.name()),
            };
            if let Some(kind) = what {
                warnings.push(format!("{shown}: skipped, FAT cannot hold a {kind}"));
                continue;
            }
            let Ok(text) = std::str::from_utf8(name) else {
                warnings.push(format!("{}: skipped, the name is not UTF-8", display_name(name)));
                continue;
            };
            if let Some(why) = long_name_problem(text) {
                warnings.push(format!("{shown}: skipped, the name {why}"));
                continue;
            }
            if !folded.insert(text.to_uppercase()) {
                warnings.push(format!("{shown}: skipped, FAT names ignore case and another entry has this name"));
                continue;
            }
            if let Kind::File(f) = &node.kind
                && f.size > MAX_FILE_SIZE
            {
                // Dropping it would lose data silently: refuse before anything is written.
                return Err(Error::unsupported(format!(
                    "{shown}: {} bytes is larger than a FAT file can be ({MAX_FILE_SIZE} bytes, 4 GiB - 1: \
                     the directory entry's size field is 32 bits)",
                    f.size
                )));
            }
            let (short, long) = match exact_short(text) {
                Some(s) if !shorts.contains(&s) => (s, None),
                _ => {
                    let (b, bl, e, _, lossy) = short_basis(text);
                    let mut plain = [b' '; 11];
                    plain[..8].copy_from_slice(&b);
                    plain[8..].copy_from_slice(&e);
                    let s = if !lossy && bl > 0 && !shorts.contains(&plain) {
                        plain
                    } else {
                        let mut n = 1;
                        loop {
                            let s = with_tail(&b, bl, &e, n);
                            if !shorts.contains(&s) {
                                break s;
                            }
                            n += 1;
                        }
                    };
                    (s, Some(text.encode_utf16().collect::<Vec<u16>>()))
                }
            };
            shorts.insert(short);
            let readonly = if node.meta.mode & 0o222 == 0 { 0x01 } else { 0 };
            let (attr, target) = match &node.kind {
                Kind::Dir(_) => {
                    let idx = dirs.len();
                    dirs.push(WDir { meta: node.meta.clone(), parent: di, entries: Vec::new(), first: 0 });
                    todo.push((idx, child, shown.clone()));
                    (0x10 | readonly, Target::Dir(idx))
                }
                Kind::File(f) => (0x20 | readonly, Target::File(child, f.size)),
                _ => continue,
            };
            entries.push(Ent { long, short, attr, meta: node.meta.clone(), what: target });
        }
        dirs[di].entries = entries;
    }
    Ok(dirs)
}

/// The volume's layout for a size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    fat_type: FatType,
    spc: u64,
    reserved: u64,
    fat_sectors: u64,
    root_entries: u64,
    total: u64,
    clusters: u64,
}

impl Layout {
    fn cluster(&self) -> u64 {
        self.spc * SECTOR
    }
    fn data_start(&self) -> u64 {
        self.reserved + 2 * self.fat_sectors + (self.root_entries * 32).div_ceil(SECTOR)
    }
    fn offset(&self, c: u32) -> u64 {
        (self.data_start() + u64::from(c - 2) * self.spc) * SECTOR
    }
}

/// Sizes the FATs for `total` sectors with `spc` sectors per cluster.
fn layout(fat_type: FatType, total: u64, spc: u64, root_entries: u64) -> Layout {
    let (reserved, bytes_per) = match fat_type {
        FatType::Fat32 => (32, 4),
        _ => (1, 2),
    };
    let root = (root_entries * 32).div_ceil(SECTOR);
    let mut fat_sectors = 1;
    loop {
        let data = total.saturating_sub(reserved + 2 * fat_sectors + root);
        let clusters = data / spc;
        let need = ((clusters + 2) * bytes_per).div_ceil(SECTOR);
        if need <= fat_sectors {
            return Layout { fat_type, spc, reserved, fat_sectors, root_entries, total, clusters };
        }
        fat_sectors = need;
    }
}

/// The layout for `total` sectors: FAT32 when asked and it yields at least 65525
/// clusters (Microsoft's cluster sizes by volume size), else FAT16 with the smallest
/// cluster that keeps the count under 65525.
fn choose(want: Want, total: u64) -> Result<Layout> {
    if want == Want::Fat32 {
        let bytes = total * SECTOR;
        let spc = match bytes {
            b if b <= 260 * MIB => 1,
            b if b <= 8 << 30 => 8,
            b if b <= 16 << 30 => 16,
            b if b <= 32 << 30 => 32,
            _ => 64,
        };
        let l = layout(FatType::Fat32, total, spc, 0);
        if l.clusters >= 65_525 && l.clusters <= 0x0fff_fff5 {
            return Ok(l);
        }
    }
    for spc in [1u64, 2, 4, 8, 16, 32, 64] {
        let l = layout(FatType::Fat16, total, spc, 512);
        if l.clusters < 4085 {
            break;
        }
        if l.clusters < 65_525 {
            return Ok(l);
        }
    }
    Err(Error::argument(format!(
        "{} bytes is outside the sizes diskcast writes as FAT16 (about 2.1 MiB to 2 GiB) or FAT32 (from 33 MiB)",
        total * SECTOR
    )))
}

/// Clusters the tree takes with `cluster`-byte clusters (FAT16's root excluded).
fn clusters_needed(dirs: &[WDir], cluster: u64, fat32: bool, label: bool) -> u64 {
    let mut n = 0u64;
    for (i, d) in dirs.iter().enumerate() {
        for e in &d.entries {
            if let Target::File(_, size) = e.what {
                n += size.div_ceil(cluster);
            }
        }
        if i > 0 || fat32 {
            n += dir_bytes(d, i == 0, label).div_ceil(cluster).max(1);
        }
    }
    n
}

fn dir_bytes(d: &WDir, root: bool, label: bool) -> u64 {
    let dots = if root { u64::from(label) } else { 2 };
    (dots + d.entries.iter().map(Ent::slots).sum::<u64>()) * 32
}

/// A 32-byte short entry.
fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, meta: &Meta) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    let (date, time, tenths) = to_dos(meta.mtime.sec, meta.mtime.nsec);
    let atime = meta.atime.unwrap_or(meta.mtime);
    let (adate, _, _) = to_dos(atime.sec, 0);
    e[13] = tenths;
    e[14..16].copy_from_slice(&time.to_le_bytes());
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&adate.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes());
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

/// The long-name slots for `long` (last slot first, as they are stored).
fn long_entries(long: &[u16], short: &[u8; 11], out: &mut Vec<u8>) {
    let sum = lfn_checksum(short);
    let n = long.len().div_ceil(13);
    for ord in (1..=n).rev() {
        let mut e = [0u8; 32];
        e[0] = ord as u8 | if ord == n { 0x40 } else { 0 };
        e[11] = 0x0f;
        e[13] = sum;
        let units = (1..11).step_by(2).chain((14..26).step_by(2)).chain((28..32).step_by(2));
        for (k, p) in units.enumerate() {
            let i = (ord - 1) * 13 + k;
            let u = match i.cmp(&long.len()) {
                std::cmp::Ordering::Less => long[i],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xffff,
            };
            e[p..p + 2].copy_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&e);
    }
}

/// Checks and pads a volume label to 11 bytes (uppercase short-name characters and
/// spaces).
fn label_bytes(label: &str) -> Result<[u8; 11]> {
    let up = label.to_ascii_uppercase();
    if up.is_empty() || up.len() > 11 || !up.bytes().all(|c| c == b' ' || crate::names::short_char(c)) {
        return Err(Error::argument(format!(
            "FAT label {label:?} must be 1-11 letters, digits, spaces or !#$%&'()-@^_`{{}}~"
        )));
    }
    let mut b = [b' '; 11];
    b[..up.len()].copy_from_slice(up.as_bytes());
    Ok(b)
}

/// Plans the filesystem.
pub(crate) fn plan(tree: &Tree, opts: &BuildOptions, want: Want) -> Result<BuiltFs> {
    let mut warnings = Vec::new();
    let mut dirs = collect(tree, &mut warnings)?;
    let label = opts.label.as_deref().map(label_bytes).transpose()?;
    let content: u64 = dirs
        .iter()
        .flat_map(|d| &d.entries)
        .map(|e| match e.what {
            Target::File(_, s) => s,
            Target::Dir(_) => 0,
        })
        .sum();
    let lay = match opts.size {
        Some(size) => {
            let l = choose(want, size / SECTOR)?;
            let need = clusters_needed(&dirs, l.cluster(), l.fat_type == FatType::Fat32, label.is_some());
            if need > l.clusters {
                return Err(Error::argument(format!(
                    "the tree needs {need} clusters of {} bytes, a {size}-byte {} holds {}",
                    l.cluster(),
                    l.fat_type.name(),
                    l.clusters
                )));
            }
            l
        }
        None => {
            // Content plus a tenth and 2 MiB, at least 34 MiB for FAT32 (8 MiB for
            // FAT16), growing by an eighth until it fits.
            let min = if want == Want::Fat32 { 34 * MIB } else { 8 * MIB };
            let mut size = (content + content / 10 + 2 * MIB).max(min).div_ceil(MIB) * MIB;
            loop {
                let l = choose(want, size / SECTOR)?;
                let need = clusters_needed(&dirs, l.cluster(), l.fat_type == FatType::Fat32, label.is_some());
                if need + need / 20 + 16 <= l.clusters {
                    break l;
                }
                size = (size + size / 8).div_ceil(MIB) * MIB;
            }
        }
    };
    if want == Want::Fat32 && lay.fat_type == FatType::Fat16 {
        warnings.push(format!(
            "{} bytes is too small for FAT32 (fewer than 65525 clusters); wrote FAT16",
            lay.total * SECTOR
        ));
    }
    let fat32 = lay.fat_type == FatType::Fat32;
    let cs = lay.cluster();

    // Allocate: directories first (root, then depth-first), then file data. Files held
    // in a front-to-back stream (a tar, a layer) go in stream order, so the copy engine
    // reads each stream once; the others keep tree order.
    let mut next: u32 = 2;
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut file_first: Vec<Vec<u32>> = dirs.iter().map(|d| vec![0; d.entries.len()]).collect();
    let mut files = Schedule::new();
    let mut order = vec![0usize];
    while let Some(di) = order.pop() {
        if di > 0 || fat32 {
            let n = dir_bytes(&dirs[di], di == 0, label.is_some()).div_ceil(cs).max(1) as u32;
            dirs[di].first = next;
            runs.push((next, n));
            next += n;
        }
        for (k, e) in dirs[di].entries.iter().enumerate() {
            if let Target::File(id, size) = e.what
                && size > 0
                && let Some(f) = tree.node(id).as_file()
            {
                files.push(f, (di, k));
            }
        }
        for e in dirs[di].entries.iter().rev() {
            if let Target::Dir(sub) = e.what {
                order.push(sub);
            }
        }
    }
    for (di, k) in files.into_order() {
        if let Target::File(_, size) = dirs[di].entries[k].what {
            let n = size.div_ceil(cs) as u32;
            file_first[di][k] = next;
            runs.push((next, n));
            next += n;
        }
    }
    let used = u64::from(next - 2);

    // The FAT: entries 0 and 1, then each run as a straight chain.
    let width = if fat32 { 4 } else { 2 };
    let fat_len = ((u64::from(next) * width).div_ceil(SECTOR) * SECTOR) as usize;
    let mut fat = vec![0u8; fat_len];
    let put = |fat: &mut Vec<u8>, c: u32, v: u32| {
        let at = c as usize * width as usize;
        if fat32 {
            fat[at..at + 4].copy_from_slice(&v.to_le_bytes());
        } else {
            fat[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
        }
    };
    let eoc = if fat32 { 0x0fff_ffff } else { 0xffff };
    put(&mut fat, 0, if fat32 { 0x0fff_fff8 } else { 0xfff8 });
    put(&mut fat, 1, eoc);
    for &(first, n) in &runs {
        for c in first..first + n - 1 {
            put(&mut fat, c, c + 1);
        }
        put(&mut fat, first + n - 1, eoc);
    }

    let mut img = PlannedImage::new(lay.total * SECTOR, lay.fat_type.name().to_ascii_lowercase());
    let volume_id = u32::from_le_bytes([opts.id[0], opts.id[1], opts.id[2], opts.id[3]]);
    let label11 = label.unwrap_or(*b"NO NAME    ");
    let boot = boot_sector(&lay, opts.disk_offset / SECTOR, volume_id, &label11);
    let mut reserved = vec![0u8; (lay.reserved * SECTOR) as usize];
    reserved[..512].copy_from_slice(&boot);
    if fat32 {
        let free = lay.clusters - used;
        let fsinfo = fsinfo(free as u32, if free > 0 { next } else { 0xffff_ffff });
        reserved[512..1024].copy_from_slice(&fsinfo);
        reserved[6 * 512..7 * 512].copy_from_slice(&boot);
        reserved[7 * 512..8 * 512].copy_from_slice(&fsinfo);
    }
    img.place_bytes(0, reserved)?;
    let fat: std::sync::Arc<[u8]> = fat.into();
    for copy in 0..2 {
        let at = (lay.reserved + copy * lay.fat_sectors) * SECTOR;
        img.place(at, fat.len() as u64, Piece::Bytes(fat.clone()))?;
    }

    // Directories and file data.
    for (di, d) in dirs.iter().enumerate() {
        let mut out = Vec::new();
        if di == 0 {
            if let Some(l) = &label {
                out.extend_from_slice(&short_entry(l, 0x08, 0, 0, &d.meta));
            }
        } else {
            // ".." of a directory in the root names cluster 0, on FAT32 too.
            let parent = if d.parent == 0 { 0 } else { dirs[d.parent].first };
            out.extend_from_slice(&short_entry(b".          ", 0x10, d.first, 0, &d.meta));
            out.extend_from_slice(&short_entry(b"..         ", 0x10, parent, 0, &dirs[d.parent].meta));
        }
        for (k, e) in d.entries.iter().enumerate() {
            if let Some(long) = &e.long {
                long_entries(long, &e.short, &mut out);
            }
            let (cluster, size) = match e.what {
                Target::Dir(sub) => (dirs[sub].first, 0),
                Target::File(_, size) => (file_first[di][k], size as u32),
            };
            out.extend_from_slice(&short_entry(&e.short, e.attr, cluster, size, &e.meta));
            if let Target::File(id, size) = e.what
                && size > 0
            {
                let data = tree.node(id).as_file().cloned().ok_or_else(|| Error::invalid("file node lost"))?;
                img.place(lay.offset(cluster), size, Piece::File { data, offset: 0 })?;
            }
        }
        let at = if di == 0 && !fat32 {
            let root_bytes = lay.root_entries * 32;
            if out.len() as u64 > root_bytes {
                return Err(Error::argument(format!(
                    "the root directory needs {} entries, FAT16 holds {}",
                    out.len() / 32,
                    lay.root_entries
                )));
            }
            (lay.reserved + 2 * lay.fat_sectors) * SECTOR
        } else {
            lay.offset(d.first)
        };
        img.place_bytes(at, out)?;
    }
    let description = format!(
        "{}, {} bytes, {}-byte clusters, {} of {} clusters used",
        lay.fat_type.name(),
        lay.total * SECTOR,
        cs,
        used,
        lay.clusters
    );
    Ok(BuiltFs { image: img.seal()?, warnings, description })
}

fn boot_sector(l: &Layout, hidden: u64, volume_id: u32, label: &[u8; 11]) -> [u8; 512] {
    let fat32 = l.fat_type == FatType::Fat32;
    let mut b = [0u8; 512];
    let code_at: usize = if fat32 { 90 } else { 62 };
    b[0] = 0xeb;
    b[1] = (code_at - 2) as u8;
    b[2] = 0x90;
    b[3..11].copy_from_slice(b"MSWIN4.1");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = l.spc as u8;
    b[14..16].copy_from_slice(&(l.reserved as u16).to_le_bytes());
    b[16] = 2;
    b[17..19].copy_from_slice(&(l.root_entries as u16).to_le_bytes());
    if !fat32 && l.total < 65_536 {
        b[19..21].copy_from_slice(&(l.total as u16).to_le_bytes());
    } else {
        b[32..36].copy_from_slice(&(l.total as u32).to_le_bytes());
    }
    b[21] = 0xf8;
    if !fat32 {
        b[22..24].copy_from_slice(&(l.fat_sectors as u16).to_le_bytes());
    }
    b[24..26].copy_from_slice(&63u16.to_le_bytes());
    b[26..28].copy_from_slice(&255u16.to_le_bytes());
    b[28..32].copy_from_slice(&(hidden.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    let ext = if fat32 {
        b[36..40].copy_from_slice(&(l.fat_sectors as u32).to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[48..50].copy_from_slice(&1u16.to_le_bytes());
        b[50..52].copy_from_slice(&6u16.to_le_bytes());
        64
    } else {
        36
    };
    b[ext] = 0x80;
    b[ext + 2] = 0x29;
    b[ext + 3..ext + 7].copy_from_slice(&volume_id.to_le_bytes());
    b[ext + 7..ext + 18].copy_from_slice(label);
    b[ext + 18..ext + 26].copy_from_slice(if fat32 { b"FAT32   " } else { b"FAT16   " });
    // Boot code: "int 18h" (BIOS: try the next boot device), then halt forever.
    b[code_at..code_at + 5].copy_from_slice(&[0xcd, 0x18, 0xf4, 0xeb, 0xfd]);
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

fn fsinfo(free: u32, next_free: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    b[488..492].copy_from_slice(&free.to_le_bytes());
    b[492..496].copy_from_slice(&next_free.to_le_bytes());
    b[508..512].copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    b
}
