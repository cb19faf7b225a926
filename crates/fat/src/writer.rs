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
use crate::spec::*;
use diskcast_block::{Error, Result};
use diskcast_layout::{IntoBytes, fit, u64_from_usize, usize_from, usize_from_u64};
use diskcast_tree::{BuildOptions, BuiltFs, Kind, Meta, NodeId, Piece, PlannedImage, Schedule, Tree, display_name};
use std::collections::HashSet;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Largest file FAT12, FAT16 and FAT32 hold: a directory entry's size field is 32 bits.
const MAX_FILE_SIZE: u64 = 0xFFFF_FFFF;
/// Most 32-byte entries one directory holds: the specification's limit (entry indexes are
/// 16-bit), which the Linux driver and our reader enforce too.
const MAX_DIR_ENTRIES: u64 = 65_536;

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
        1 + self.long.as_ref().map_or(0, |l| u64_from_usize(l.len().div_ceil(LFN_UNITS)))
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
        // "." and ".." (or the label in the root) take two slots at most.
        let slots = 2 + entries.iter().map(Ent::slots).sum::<u64>();
        if slots > MAX_DIR_ENTRIES {
            return Err(Error::unsupported(format!(
                "directory {}/ needs {slots} directory entries (long names take several each), more than \
                 FAT's {MAX_DIR_ENTRIES} per directory (MAX_DIR_ENTRIES)",
                path
            )));
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
fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32, meta: &Meta) -> DirEntry {
    let (date, time, tenths) = to_dos(meta.mtime.sec, meta.mtime.nsec);
    let atime = meta.atime.unwrap_or(meta.mtime);
    let (adate, _, _) = to_dos(atime.sec, 0);
    DirEntry {
        name: *name,
        attr,
        nt_case: 0,
        create_tenths: tenths,
        create_time: time.into(),
        create_date: date.into(),
        access_date: adate.into(),
        // FAT32 splits the cluster number into two 16-bit halves.
        cluster_hi: diskcast_layout::low_u16(u64::from(cluster >> 16)).into(),
        write_time: time.into(),
        write_date: date.into(),
        cluster_lo: diskcast_layout::low_u16(u64::from(cluster)).into(),
        size: size.into(),
    }
}

/// The long-name slots for `long` (last slot first, as they are stored).
fn long_entries(long: &[u16], short: &[u8; 11], out: &mut Vec<u8>) -> Result<()> {
    let checksum = lfn_checksum(short);
    let n = long.len().div_ceil(LFN_UNITS);
    for ord in (1..=n).rev() {
        let seq: u8 = diskcast_layout::fit(diskcast_layout::u64_from_usize(ord), "FAT long-name sequence number")?;
        let mut e = LfnEntry { ord: seq | if ord == n { 0x40 } else { 0 }, attr: 0x0f, checksum, ..Default::default() };
        for (k, slot) in e.units_mut().enumerate() {
            let i = (ord - 1) * LFN_UNITS + k;
            let u = match i.cmp(&long.len()) {
                std::cmp::Ordering::Less => long[i],
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 0xffff,
            };
            *slot = u.into();
        }
        out.extend_from_slice(e.as_bytes());
    }
    Ok(())
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
            let n: u32 = fit(dir_bytes(&dirs[di], di == 0, label.is_some()).div_ceil(cs).max(1), "FAT cluster count")?;
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
            let n: u32 = fit(size.div_ceil(cs), "FAT cluster count")?;
            file_first[di][k] = next;
            runs.push((next, n));
            next += n;
        }
    }
    let used = u64::from(next - 2);

    // The FAT: entries 0 and 1, then each run as a straight chain.
    let width = if fat32 { 4 } else { 2 };
    let fat_len = usize_from_u64((u64::from(next) * width).div_ceil(SECTOR) * SECTOR, "FAT")?;
    let mut fat = vec![0u8; fat_len];
    let put = |fat: &mut Vec<u8>, c: u32, v: u32| -> Result<()> {
        if fat32 {
            diskcast_layout::put_le32(fat, usize_from(c) * 4, v, "FAT32 entry")?;
        } else {
            diskcast_layout::put_le16(fat, usize_from(c) * 2, fit(v, "FAT16 entry")?, "FAT16 entry")?;
        }
        Ok(())
    };
    let eoc = if fat32 { 0x0fff_ffff } else { 0xffff };
    put(&mut fat, 0, if fat32 { 0x0fff_fff8 } else { 0xfff8 })?;
    put(&mut fat, 1, eoc)?;
    for &(first, n) in &runs {
        for c in first..first + n - 1 {
            put(&mut fat, c, c + 1)?;
        }
        put(&mut fat, first + n - 1, eoc)?;
    }

    let mut img = PlannedImage::new(lay.total * SECTOR, lay.fat_type.name().to_ascii_lowercase());
    let volume_id = u32::from_le_bytes([opts.id[0], opts.id[1], opts.id[2], opts.id[3]]);
    let label11 = label.unwrap_or(*b"NO NAME    ");
    let boot = boot_sector(&lay, opts.disk_offset / SECTOR, volume_id, &label11)?;
    let mut reserved = vec![0u8; usize_from_u64(lay.reserved * SECTOR, "FAT reserved sectors")?];
    reserved[..512].copy_from_slice(&boot);
    if fat32 {
        let free = lay.clusters - used;
        let fsinfo = fsinfo(fit(free, "FSInfo free cluster count")?, if free > 0 { next } else { 0xffff_ffff });
        diskcast_layout::put(&mut reserved, 512, &fsinfo, "FSInfo sector")?;
        reserved[6 * 512..7 * 512].copy_from_slice(&boot);
        diskcast_layout::put(&mut reserved, 7 * 512, &fsinfo, "backup FSInfo sector")?;
    }
    img.place_bytes(0, reserved)?;
    let fat: std::sync::Arc<[u8]> = fat.into();
    for copy in 0..2 {
        let at = (lay.reserved + copy * lay.fat_sectors) * SECTOR;
        img.place(at, u64_from_usize(fat.len()), Piece::Bytes(fat.clone()))?;
    }

    // Directories and file data.
    for (di, d) in dirs.iter().enumerate() {
        let mut out = Vec::new();
        if di == 0 {
            if let Some(l) = &label {
                out.extend_from_slice(short_entry(l, 0x08, 0, 0, &d.meta).as_bytes());
            }
        } else {
            // ".." of a directory in the root names cluster 0, on FAT32 too.
            let parent = if d.parent == 0 { 0 } else { dirs[d.parent].first };
            out.extend_from_slice(short_entry(b".          ", 0x10, d.first, 0, &d.meta).as_bytes());
            out.extend_from_slice(short_entry(b"..         ", 0x10, parent, 0, &dirs[d.parent].meta).as_bytes());
        }
        for (k, e) in d.entries.iter().enumerate() {
            if let Some(long) = &e.long {
                long_entries(long, &e.short, &mut out)?;
            }
            let (cluster, size) = match e.what {
                Target::Dir(sub) => (dirs[sub].first, 0),
                // collect() refused files over MAX_FILE_SIZE, so this fits.
                Target::File(_, size) => (file_first[di][k], fit(size, "FAT file size")?),
            };
            out.extend_from_slice(short_entry(&e.short, e.attr, cluster, size, &e.meta).as_bytes());
            if let Target::File(id, size) = e.what
                && size > 0
            {
                let data = tree.node(id).as_file().cloned().ok_or_else(|| Error::invalid("file node lost"))?;
                img.place(lay.offset(cluster), size, Piece::File { data, offset: 0 })?;
            }
        }
        let at = if di == 0 && !fat32 {
            let root_bytes = lay.root_entries * 32;
            if u64_from_usize(out.len()) > root_bytes {
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

fn boot_sector(l: &Layout, hidden: u64, volume_id: u32, label: &[u8; 11]) -> Result<[u8; 512]> {
    let fat32 = l.fat_type == FatType::Fat32;
    let mut b = [0u8; 512];
    let ext_at = if fat32 { EXT_BPB_32 } else { EXT_BPB_16 };
    let code_at = ext_at + size_of::<ExtBpb>();
    let small = !fat32 && l.total < 65_536;
    let bpb = Bpb {
        jump: [0xeb, fit(u64_from_usize(code_at - 2), "FAT boot jump")?, 0x90],
        oem_name: *b"MSWIN4.1",
        bytes_per_sector: fit::<u16, u64>(SECTOR, "FAT bytes per sector")?.into(),
        sectors_per_cluster: fit(l.spc, "FAT sectors per cluster")?,
        reserved_sectors: fit::<u16, u64>(l.reserved, "FAT reserved sectors")?.into(),
        num_fats: 2,
        root_entries: fit::<u16, u64>(l.root_entries, "FAT root entries")?.into(),
        total_sectors16: (if small { fit::<u16, u64>(l.total, "FAT total sectors")? } else { 0 }).into(),
        media: 0xf8,
        fat_size16: (if fat32 { 0 } else { fit::<u16, u64>(l.fat_sectors, "FAT16 sectors per FAT")? }).into(),
        sectors_per_track: 63.into(),
        heads: 255.into(),
        // Hidden sectors past 2^32 cannot be recorded; the field is advisory (BIOS boot).
        hidden_sectors: fit::<u32, u64>(hidden.min(u64::from(u32::MAX)), "FAT hidden sectors")?.into(),
        total_sectors32: (if small { 0 } else { fit::<u32, u64>(l.total, "FAT total sectors")? }).into(),
    };
    diskcast_layout::put(&mut b, 0, &bpb, "FAT boot sector")?;
    if fat32 {
        let f = Fat32Bpb {
            fat_size32: fit::<u32, u64>(l.fat_sectors, "FAT32 sectors per FAT")?.into(),
            root_cluster: 2.into(),
            fs_info: 1.into(),
            backup_boot: 6.into(),
            ..Default::default()
        };
        diskcast_layout::put(&mut b, size_of::<Bpb>(), &f, "FAT32 BPB")?;
    }
    let ext = ExtBpb {
        drive_number: 0x80,
        reserved: 0,
        boot_signature: 0x29,
        volume_id: volume_id.into(),
        label: *label,
        fs_type: if fat32 { *b"FAT32   " } else { *b"FAT16   " },
    };
    diskcast_layout::put(&mut b, ext_at, &ext, "FAT extended BPB")?;
    // Boot code: "int 18h" (BIOS: try the next boot device), then halt forever.
    diskcast_layout::put(&mut b, code_at, &[0xcdu8, 0x18, 0xf4, 0xeb, 0xfd], "FAT boot code")?;
    b[510] = 0x55;
    b[511] = 0xaa;
    Ok(b)
}

fn fsinfo(free: u32, next_free: u32) -> FsInfo {
    FsInfo {
        lead_sig: FSINFO_LEAD_SIG.into(),
        reserved1: [0; 480],
        struc_sig: FSINFO_STRUC_SIG.into(),
        free_count: free.into(),
        next_free: next_free.into(),
        reserved2: [0; 12],
        trail_sig: FSINFO_TRAIL_SIG.into(),
    }
}
