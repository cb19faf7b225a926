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
use diskcast_layout::IntoBytes;
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
fn entry_set(e: &Ent, first: u32, len: u64, contiguous: bool) -> Result<Vec<u8>> {
    let names = e.name.len().div_ceil(NAME_UNITS_PER_ENTRY);
    let (modify, modify_10ms, modify_utc) = timestamp(e.meta.mtime.sec, e.meta.mtime.nsec);
    let c = e.meta.ctime.unwrap_or(e.meta.mtime);
    let (create, create_10ms, create_utc) = timestamp(c.sec, c.nsec);
    let a = e.meta.atime.unwrap_or(e.meta.mtime);
    let (access, _, access_utc) = timestamp(a.sec, a.nsec);
    let file = FileEntry {
        entry_type: T_FILE,
        secondary_count: diskcast_layout::fit(diskcast_layout::u64_from_usize(1 + names), "exFAT SecondaryCount")?,
        attributes: e.attr.into(),
        create: create.into(),
        modify: modify.into(),
        access: access.into(),
        create_10ms,
        modify_10ms,
        create_utc,
        modify_utc,
        access_utc,
        ..Default::default()
    };
    let up: Vec<u16> = e.name.iter().map(|&u| upcase(u)).collect();
    let stream = StreamEntry {
        entry_type: T_STREAM,
        flags: if len > 0 && contiguous { ALLOCATION_POSSIBLE | NO_FAT_CHAIN } else { ALLOCATION_POSSIBLE },
        name_length: diskcast_layout::fit(diskcast_layout::u64_from_usize(e.name.len()), "exFAT NameLength")?,
        name_hash: name_hash(&up).into(),
        valid_data_length: len.into(),
        first_cluster: (if len > 0 { first } else { 0 }).into(),
        data_length: len.into(),
        ..Default::default()
    };
    let mut set = Vec::with_capacity((2 + names) * ENTRY);
    set.extend_from_slice(file.as_bytes());
    set.extend_from_slice(stream.as_bytes());
    for chunk in e.name.chunks(NAME_UNITS_PER_ENTRY) {
        let mut n = NameEntry { entry_type: T_NAME, ..Default::default() };
        for (slot, &u) in n.name.iter_mut().zip(chunk) {
            *slot = u.into();
        }
        set.extend_from_slice(n.as_bytes());
    }
    let sum = set_checksum(&set);
    diskcast_layout::put_le16(&mut set, 2, sum, "exFAT SetChecksum")?;
    Ok(set)
}

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
    let mut put = |c: u64, v: u32| -> Result<()> {
        let at = diskcast_layout::usize_from_u64(c * 4, "exFAT FAT entry")?;
        Ok(diskcast_layout::put_le32(&mut fat, at, v, "exFAT FAT entry")?)
    };
    put(0, FAT_MEDIA)?;
    put(1, FAT_EOC)?;
    for (first, n) in [
        (u64::from(bitmap_first), bitmap_clusters),
        (u64::from(upcase_first), upcase_clusters),
        (u64::from(dirs[0].first), root_clusters),
    ] {
        for c in first..first + n {
            let v = if c + 1 == first + n { FAT_EOC } else { u32_of(c + 1, "cluster")? };
            put(c, v)?;
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
            let mut l = LabelEntry { entry_type: T_LABEL, ..Default::default() };
            if let Some(units) = &label {
                l.character_count =
                    diskcast_layout::fit(diskcast_layout::u64_from_usize(units.len()), "exFAT label CharacterCount")?;
                for (slot, &u) in l.label.iter_mut().zip(units) {
                    *slot = u.into();
                }
            }
            out.extend_from_slice(l.as_bytes());
            let b = AllocEntry {
                entry_type: T_BITMAP,
                first_cluster: bitmap_first.into(),
                data_length: lay.bitmap_bytes().into(),
                ..Default::default()
            };
            out.extend_from_slice(b.as_bytes());
            let u = AllocEntry {
                entry_type: T_UPCASE,
                table_checksum: table_checksum(upcase).into(),
                first_cluster: upcase_first.into(),
                data_length: upcase_len.into(),
                ..Default::default()
            };
            out.extend_from_slice(u.as_bytes());
        }
        for (k, e) in d.entries.iter().enumerate() {
            match e.what {
                Target::Dir(sub) => {
                    let len = u64::from(dirs[sub].clusters) * cs;
                    out.extend_from_slice(&entry_set(e, dirs[sub].first, len, true)?);
                }
                Target::File(id, size) => {
                    let first = file_first[di][k];
                    out.extend_from_slice(&entry_set(e, first, size, true)?);
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
    let mut boot_code = [0u8; 390];
    // Boot code: "int 18h" (BIOS: try the next boot device), then halt forever.
    boot_code[..5].copy_from_slice(&[0xcd, 0x18, 0xf4, 0xeb, 0xfd]);
    let bs = BootSector {
        jump: [0xeb, 0x76, 0x90],
        fs_name: *FS_NAME,
        must_be_zero: [0; 53],
        partition_offset: partition_offset.into(),
        volume_length: l.total.into(),
        fat_offset: u32_of(l.fat_offset, "FAT offset")?.into(),
        fat_length: u32_of(l.fat_len, "FAT length")?.into(),
        cluster_heap_offset: u32_of(l.heap, "cluster heap offset")?.into(),
        cluster_count: u32_of(l.clusters, "cluster count")?.into(),
        first_cluster_of_root: root.into(),
        volume_serial: serial.into(),
        fs_revision: 0x0100.into(),
        volume_flags: 0.into(),
        bytes_per_sector_shift: SECTOR_SHIFT,
        sectors_per_cluster_shift: l.spc_shift,
        number_of_fats: 1,
        drive_select: 0x80,
        percent_in_use: percent,
        reserved: [0; 7],
        boot_code,
        signature: [0x55, 0xaa],
    };
    let mut r = vec![0u8; sector * 12];
    diskcast_layout::put(&mut r, 0, &bs, "exFAT boot sector")?;
    for s in 1..9 {
        diskcast_layout::put(&mut r, s * sector + sector - 2, &[0x55u8, 0xaa], "extended boot signature")?;
    }
    let sum = boot_checksum(&r, sector).to_le_bytes();
    for q in r[11 * sector..].chunks_exact_mut(4) {
        q.copy_from_slice(&sum);
    }
    debug_assert_eq!(u64::try_from(r.len()).ok(), Some(BOOT_REGION_SECTORS * SECTOR));
    Ok(r)
}
