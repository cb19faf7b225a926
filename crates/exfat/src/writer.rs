//! Planning an exFAT filesystem holding a tree.
//!
//! Everything is laid out up front, as the FAT writer does: the allocation bitmap, the
//! up-case table and the root directory first (the only runs the FAT chains, since their
//! entries carry no NoFatChain flag), then every other directory depth-first, then file
//! data, each one contiguous run marked NoFatChain, so a file of any size needs no FAT
//! entry. The result is a [`PlannedImage`]: boot regions, FAT, bitmap, up-case table and
//! directories as bytes, file data as references into the tree.

use crate::spec::*;
use diskcast_block::{Error, Result};
use diskcast_tree::{BuildOptions, BuiltFs, Kind, Meta, NodeId, Piece, PlannedImage, Schedule, Tree, display_name};
use std::collections::HashSet;

const SECTOR: u64 = 512;
const SECTOR_SHIFT: u8 = 9;
const MIB: u64 = 1 << 20;
/// The smallest volume the specification allows (2^20 / sector size sectors).
const MIN_VOLUME: u64 = MIB;

/// One file or directory entry to write.
#[derive(Debug)]
struct Ent {
    name: Vec<u16>,
    attr: u16,
    meta: Meta,
    what: Target,
}

#[derive(Debug)]
enum Target {
    Dir(usize),
    File(NodeId, u64),
}

#[derive(Debug)]
struct WDir {
    entries: Vec<Ent>,
    first: u32,
    clusters: u32,
}

impl Ent {
    fn entries(&self) -> u64 {
        2 + u64::try_from(self.name.len().div_ceil(NAME_UNITS_PER_ENTRY)).unwrap_or(u64::MAX)
    }
}

fn collect(tree: &Tree, warnings: &mut Vec<String>) -> Result<Vec<WDir>> {
    let mut dirs = vec![WDir { entries: Vec::new(), first: 0, clusters: 0 }];
    let mut todo = vec![(0usize, NodeId::ROOT, String::new())];
    while let Some((di, id, path)) = todo.pop() {
        let mut folded: HashSet<Vec<u16>> = HashSet::new();
        let mut entries = Vec::new();
        for (name, child) in tree.dir(id)?.entries() {
            let shown = format!("{path}/{}", String::from_utf8_lossy(name));
            let node = tree.node(child);
            if !matches!(node.kind, Kind::Dir(_) | Kind::File(_)) {
                warnings.push(format!("{shown}: skipped, exFAT cannot hold a {}", node.kind.name()));
                continue;
            }
            let Ok(text) = std::str::from_utf8(name) else {
                warnings.push(format!("{}: skipped, the name is not UTF-8", display_name(name)));
                continue;
            };
            let units: Vec<u16> = text.encode_utf16().collect();
            if let Some(why) = name_problem(&units) {
                warnings.push(format!("{shown}: skipped, the name {why}"));
                continue;
            }
            if !folded.insert(units.iter().map(|&u| upcase(u)).collect()) {
                warnings.push(format!("{shown}: skipped, exFAT names ignore case and another entry has this name"));
                continue;
            }
            let readonly = if node.meta.mode & 0o222 == 0 { ATTR_READ_ONLY } else { 0 };
            let (attr, what) = match &node.kind {
                Kind::Dir(_) => {
                    let idx = dirs.len();
                    dirs.push(WDir { entries: Vec::new(), first: 0, clusters: 0 });
                    todo.push((idx, child, shown.clone()));
                    (ATTR_DIRECTORY | readonly, Target::Dir(idx))
                }
                Kind::File(f) => (ATTR_ARCHIVE | readonly, Target::File(child, f.size)),
                _ => continue,
            };
            entries.push(Ent { name: units, attr, meta: node.meta.clone(), what });
        }
        dirs[di].entries = entries;
    }
    Ok(dirs)
}

/// The volume's layout for a size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// log2 of sectors per cluster.
    spc_shift: u8,
    total: u64,
    fat_offset: u64,
    fat_len: u64,
    heap: u64,
    clusters: u64,
}

impl Layout {
    fn cluster(&self) -> u64 {
        SECTOR << self.spc_shift
    }
    fn offset(&self, c: u32) -> u64 {
        self.heap * SECTOR + u64::from(c - 2) * self.cluster()
    }
    fn bitmap_bytes(&self) -> u64 {
        self.clusters.div_ceil(8)
    }
}

/// Cluster size by volume size, as Microsoft's format and mkfs.exfat choose: 4 KiB up
/// to 256 MiB, 32 KiB up to 32 GiB, 128 KiB above.
fn layout(total: u64) -> Result<Layout> {
    let bytes = total * SECTOR;
    if bytes < MIN_VOLUME {
        return Err(Error::argument(format!("{bytes} bytes is smaller than the smallest exFAT volume (1 MiB)")));
    }
    let spc_shift: u8 = match bytes {
        b if b <= 256 * MIB => 3,
        b if b <= 32 << 30 => 6,
        _ => 8,
    };
    let spc = 1u64 << spc_shift;
    // The FAT starts after both boot regions, at 64 KiB on small volumes and 1 MiB on the
    // others so the cluster heap is aligned for flash media.
    let fat_offset = if bytes < 64 * MIB { 128 } else { 2048 };
    let mut fat_len = 1u64;
    loop {
        let heap = (fat_offset + fat_len).div_ceil(spc) * spc;
        let clusters = (total.saturating_sub(heap) / spc).min(MAX_CLUSTERS);
        let need = ((clusters + 2) * 4).div_ceil(SECTOR);
        if need <= fat_len {
            if clusters == 0 {
                return Err(Error::argument(format!("{bytes} bytes leaves no room for exFAT's cluster heap")));
            }
            return Ok(Layout { spc_shift, total, fat_offset, fat_len, heap, clusters });
        }
        fat_len = need;
    }
}

fn dir_clusters(d: &WDir, root: bool, cs: u64) -> Result<u64> {
    let entries = u64::from(root) * 3 + d.entries.iter().map(Ent::entries).sum::<u64>();
    let bytes = entries * 32;
    if bytes > MAX_DIR_BYTES {
        return Err(Error::argument(format!(
            "a directory needs {bytes} bytes of entries, more than exFAT's 256 MiB per directory"
        )));
    }
    Ok(bytes.div_ceil(cs).max(1))
}

fn clusters_needed(dirs: &[WDir], lay: &Layout, upcase_len: u64) -> Result<u64> {
    let cs = lay.cluster();
    let mut n = lay.bitmap_bytes().div_ceil(cs) + upcase_len.div_ceil(cs);
    for (i, d) in dirs.iter().enumerate() {
        n += dir_clusters(d, i == 0, cs)?;
        for e in &d.entries {
            if let Target::File(_, size) = e.what {
                n += size.div_ceil(cs);
            }
        }
    }
    Ok(n)
}

fn label_units(label: &str) -> Result<Vec<u16>> {
    let units: Vec<u16> = label.encode_utf16().collect();
    if units.is_empty() || units.len() > 11 || name_problem(&units).is_some() {
        return Err(Error::argument(format!(
            "exFAT label {label:?} must be 1-11 UTF-16 units without control characters or \" * / : < > ? \\ |"
        )));
    }
    Ok(units)
}

fn u32_of(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::argument(format!("{what} {v} does not fit exFAT's 32-bit field")))
}

/// The entry set (file, stream extension, names) of one entry.
fn entry_set(e: &Ent, first: u32, len: u64, contiguous: bool) -> Vec<u8> {
    let names = e.name.len().div_ceil(NAME_UNITS_PER_ENTRY);
    let mut set = vec![0u8; (2 + names) * ENTRY];
    let f = &mut set[..ENTRY];
    f[0] = T_FILE;
    f[1] = u8::try_from(1 + names).unwrap_or(18);
    f[4..6].copy_from_slice(&e.attr.to_le_bytes());
    let (mts, m10, mutc) = timestamp(e.meta.mtime.sec, e.meta.mtime.nsec);
    let c = e.meta.ctime.unwrap_or(e.meta.mtime);
    let (cts, c10, cutc) = timestamp(c.sec, c.nsec);
    let a = e.meta.atime.unwrap_or(e.meta.mtime);
    let (ats, _, autc) = timestamp(a.sec, a.nsec);
    f[8..12].copy_from_slice(&cts.to_le_bytes());
    f[12..16].copy_from_slice(&mts.to_le_bytes());
    f[16..20].copy_from_slice(&ats.to_le_bytes());
    f[20] = c10;
    f[21] = m10;
    f[22] = cutc;
    f[23] = mutc;
    f[24] = autc;
    let s = &mut set[ENTRY..2 * ENTRY];
    s[0] = T_STREAM;
    s[1] = if len > 0 { ALLOCATION_POSSIBLE | if contiguous { NO_FAT_CHAIN } else { 0 } } else { ALLOCATION_POSSIBLE };
    s[3] = u8::try_from(e.name.len()).unwrap_or(u8::MAX);
    let up: Vec<u16> = e.name.iter().map(|&u| upcase(u)).collect();
    s[4..6].copy_from_slice(&name_hash(&up).to_le_bytes());
    s[8..16].copy_from_slice(&len.to_le_bytes());
    s[20..24].copy_from_slice(&(if len > 0 { first } else { 0 }).to_le_bytes());
    s[24..32].copy_from_slice(&len.to_le_bytes());
    for (k, chunk) in e.name.chunks(NAME_UNITS_PER_ENTRY).enumerate() {
        let n = &mut set[(2 + k) * ENTRY..(3 + k) * ENTRY];
        n[0] = T_NAME;
        for (j, u) in chunk.iter().enumerate() {
            n[2 + 2 * j..4 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let sum = set_checksum(&set);
    set[2..4].copy_from_slice(&sum.to_le_bytes());
    set
}

/// Plans the filesystem.
pub(crate) fn plan(tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
    let mut warnings = Vec::new();
    let mut dirs = collect(tree, &mut warnings)?;
    let label = opts.label.as_deref().map(label_units).transpose()?;
    let upcase = UPCASE_TABLE;
    let upcase_len = u64::try_from(upcase.len()).unwrap_or(u64::MAX);
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
            let l = layout(size / SECTOR)?;
            let need = clusters_needed(&dirs, &l, upcase_len)?;
            if need > l.clusters {
                return Err(Error::argument(format!(
                    "the tree needs {need} clusters of {} bytes, a {size}-byte exFAT holds {}",
                    l.cluster(),
                    l.clusters
                )));
            }
            l
        }
        None => {
            // Content plus a tenth and 2 MiB, at least 4 MiB, growing by an eighth until
            // it fits with a twentieth to spare.
            let mut size = (content + content / 10 + 2 * MIB).max(4 * MIB).div_ceil(MIB) * MIB;
            loop {
                let l = layout(size / SECTOR)?;
                let need = clusters_needed(&dirs, &l, upcase_len)?;
                if need + need / 20 + 16 <= l.clusters {
                    break l;
                }
                size = (size + size / 8).div_ceil(MIB) * MIB;
            }
        }
    };
    let cs = lay.cluster();

    // Allocate: bitmap, up-case table, root, the other directories depth-first, then
    // file data (files of one front-to-back stream in stream order, as the FAT writer).
    let mut next: u64 = 2;
    let mut take = |n: u64| -> Result<u32> {
        let at = u32_of(next, "cluster")?;
        next += n;
        Ok(at)
    };
    let bitmap_clusters = lay.bitmap_bytes().div_ceil(cs);
    let bitmap_first = take(bitmap_clusters)?;
    let upcase_clusters = upcase_len.div_ceil(cs);
    let upcase_first = take(upcase_clusters)?;
    let mut file_first: Vec<Vec<u32>> = dirs.iter().map(|d| vec![0; d.entries.len()]).collect();
    let mut files = Schedule::new();
    let mut order = vec![0usize];
    while let Some(di) = order.pop() {
        let n = dir_clusters(&dirs[di], di == 0, cs)?;
        dirs[di].first = take(n)?;
        dirs[di].clusters = u32_of(n, "directory cluster count")?;
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
            file_first[di][k] = take(size.div_ceil(cs))?;
        }
    }
    let end = next;
    let used = end - 2;

    // The FAT: entries 0 and 1, and chains for the bitmap, the up-case table and the
    // root; everything else is contiguous and marked NoFatChain.
    let root_clusters = u64::from(dirs[0].clusters);
    let fat_entries = u64::from(dirs[0].first) + root_clusters;
    let mut fat = vec![
        0u8;
        usize::try_from((fat_entries * 4).div_ceil(SECTOR) * SECTOR)
            .map_err(|_| Error::argument("FAT too large"))?
    ];
    let mut put = |c: u64, v: u32| {
        if let Ok(at) = usize::try_from(c * 4) {
            fat[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    };
    put(0, FAT_MEDIA);
    put(1, FAT_EOC);
    for (first, n) in [
        (u64::from(bitmap_first), bitmap_clusters),
        (u64::from(upcase_first), upcase_clusters),
        (u64::from(dirs[0].first), root_clusters),
    ] {
        for c in first..first + n {
            let v = if c + 1 == first + n { FAT_EOC } else { u32_of(c + 1, "cluster")? };
            put(c, v);
        }
    }

    // The allocation bitmap: clusters 2..end are in use.
    let bitmap_used = usize::try_from(used.div_ceil(8)).map_err(|_| Error::argument("bitmap too large"))?;
    let mut bitmap = vec![0xffu8; bitmap_used];
    if !used.is_multiple_of(8)
        && let Some(last) = bitmap.last_mut()
    {
        *last = (1u8 << (used % 8)) - 1;
    }

    let mut img = PlannedImage::new(lay.total * SECTOR, "exfat");
    let serial = u32::from_le_bytes([opts.id[0], opts.id[1], opts.id[2], opts.id[3]]);
    let percent = u8::try_from(used * 100 / lay.clusters).unwrap_or(100);
    let region =
        boot_region(&lay, opts.disk_offset / SECTOR, serial, u32_of(u64::from(dirs[0].first), "root")?, percent)?;
    let mut both = region.clone();
    both.extend_from_slice(&region);
    img.place_bytes(0, both)?;
    img.place_bytes(lay.fat_offset * SECTOR, fat)?;
    img.place_bytes(lay.offset(bitmap_first), bitmap)?;
    img.place_bytes(lay.offset(upcase_first), upcase)?;

    for (di, d) in dirs.iter().enumerate() {
        let mut out = Vec::new();
        if di == 0 {
            let mut l = [0u8; ENTRY];
            l[0] = T_LABEL;
            if let Some(units) = &label {
                l[1] = u8::try_from(units.len()).unwrap_or(11);
                for (j, u) in units.iter().enumerate() {
                    l[2 + 2 * j..4 + 2 * j].copy_from_slice(&u.to_le_bytes());
                }
            }
            out.extend_from_slice(&l);
            let mut b = [0u8; ENTRY];
            b[0] = T_BITMAP;
            b[20..24].copy_from_slice(&bitmap_first.to_le_bytes());
            b[24..32].copy_from_slice(&lay.bitmap_bytes().to_le_bytes());
            out.extend_from_slice(&b);
            let mut u = [0u8; ENTRY];
            u[0] = T_UPCASE;
            u[4..8].copy_from_slice(&table_checksum(upcase).to_le_bytes());
            u[20..24].copy_from_slice(&upcase_first.to_le_bytes());
            u[24..32].copy_from_slice(&upcase_len.to_le_bytes());
            out.extend_from_slice(&u);
        }
        for (k, e) in d.entries.iter().enumerate() {
            match e.what {
                Target::Dir(sub) => {
                    let len = u64::from(dirs[sub].clusters) * cs;
                    out.extend_from_slice(&entry_set(e, dirs[sub].first, len, true));
                }
                Target::File(id, size) => {
                    let first = file_first[di][k];
                    out.extend_from_slice(&entry_set(e, first, size, true));
                    if size > 0 {
                        let data = tree.node(id).as_file().cloned().ok_or_else(|| Error::invalid("file node lost"))?;
                        img.place(lay.offset(first), size, Piece::File { data, offset: 0 })?;
                    }
                }
            }
        }
        if !out.is_empty() {
            img.place_bytes(lay.offset(d.first), out)?;
        }
    }
    let description =
        format!("exFAT, {} bytes, {cs}-byte clusters, {used} of {} clusters used", lay.total * SECTOR, lay.clusters);
    Ok(BuiltFs { image: img.seal()?, warnings, description })
}

/// One boot region (12 sectors): boot sector, extended boot sectors, OEM parameters,
/// reserved sector and the checksum sector.
fn boot_region(l: &Layout, partition_offset: u64, serial: u32, root: u32, percent: u8) -> Result<Vec<u8>> {
    let sector = usize::try_from(SECTOR).unwrap_or(512);
    let mut r = vec![0u8; sector * 12];
    let b = &mut r[..sector];
    b[0..3].copy_from_slice(&[0xeb, 0x76, 0x90]);
    b[3..11].copy_from_slice(FS_NAME);
    b[64..72].copy_from_slice(&partition_offset.to_le_bytes());
    b[72..80].copy_from_slice(&l.total.to_le_bytes());
    b[80..84].copy_from_slice(&u32_of(l.fat_offset, "FAT offset")?.to_le_bytes());
    b[84..88].copy_from_slice(&u32_of(l.fat_len, "FAT length")?.to_le_bytes());
    b[88..92].copy_from_slice(&u32_of(l.heap, "cluster heap offset")?.to_le_bytes());
    b[92..96].copy_from_slice(&u32_of(l.clusters, "cluster count")?.to_le_bytes());
    b[96..100].copy_from_slice(&root.to_le_bytes());
    b[100..104].copy_from_slice(&serial.to_le_bytes());
    b[104..106].copy_from_slice(&0x0100u16.to_le_bytes());
    b[108] = SECTOR_SHIFT;
    b[109] = l.spc_shift;
    b[110] = 1;
    b[111] = 0x80;
    b[112] = percent;
    // Boot code: "int 18h" (BIOS: try the next boot device), then halt forever.
    b[120..125].copy_from_slice(&[0xcd, 0x18, 0xf4, 0xeb, 0xfd]);
    b[510] = 0x55;
    b[511] = 0xaa;
    for s in 1..9 {
        r[s * sector + sector - 2] = 0x55;
        r[s * sector + sector - 1] = 0xaa;
    }
    let sum = boot_checksum(&r, sector).to_le_bytes();
    for q in r[11 * sector..].chunks_exact_mut(4) {
        q.copy_from_slice(&sum);
    }
    debug_assert_eq!(u64::try_from(r.len()).ok(), Some(BOOT_REGION_SECTORS * SECTOR));
    Ok(r)
}
