//! Reading an exFAT filesystem into a tree: the boot region (checksum, geometry checked
//! against the disk), the FAT, the allocation bitmap, and directories of entry sets
//! (checksums checked), each file's clusters becoming extents of the disk.

use crate::spec::*;
use diskcast_block::{BlockRead, Error, Result, range_end};
use diskcast_tree::{FileData, FileExtent, Kind, Meta, Node, NodeId, Timestamp, Tree, check_name, display_name};
use std::sync::Arc;

/// Largest FAT read into memory: 256 Mi clusters (1 GiB), a 32 TiB volume with 128 KiB
/// clusters; beyond that the FAT alone would need more memory than a tool should take.
const MAX_FAT_BYTES: u64 = 1 << 30;

/// Largest up-case table: every one of the 65536 UTF-16 units mapped, uncompressed.
const MAX_UPCASE_BYTES: u64 = 2 * 65_536;

/// The layout a boot region describes, checked against the disk.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Bytes per sector.
    pub sector: u64,
    /// Bytes per cluster.
    pub cluster: u64,
    /// Byte offset of the first FAT.
    pub fat_offset: u64,
    /// Byte offset of cluster 2.
    pub heap_offset: u64,
    /// Number of clusters (valid clusters are `2..clusters + 2`).
    pub clusters: u32,
    /// First cluster of the root directory.
    pub root_cluster: u32,
    /// Volume serial number.
    pub serial: u32,
}

/// True when sector 0 names exFAT and carries the boot signature.
pub(crate) fn probe(b: &[u8]) -> bool {
    diskcast_layout::read::<BootSector>(b, 0, "exFAT boot sector")
        .is_ok_and(|s| &s.fs_name == FS_NAME && s.signature == [0x55, 0xaa])
}

fn corrupt(msg: String, field: &'static str, offset: u64) -> Error {
    Error::corrupt(msg).with_field(field).with_offset(offset)
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::unsupported(format!("{what} of {v} bytes does not fit in memory")))
}

impl Geometry {
    /// Parses and checks the main boot region of `disk`.
    pub fn read(disk: &dyn BlockRead) -> Result<Self> {
        range_end(0, 512, disk.size())
            .map_err(|_| Error::invalid(format!("{} bytes is too small for exFAT", disk.size())))?;
        let mut b = vec![0u8; 512];
        disk.read_at(&mut b, 0)?;
        if !probe(&b) {
            return Err(Error::invalid("not an exFAT boot sector"));
        }
        let bs: &BootSector = diskcast_layout::read(&b, 0, "exFAT boot sector")?;
        if bs.must_be_zero.iter().any(|&x| x != 0) {
            return Err(corrupt("the boot sector's MustBeZero bytes are not zero".into(), "must_be_zero", 11));
        }
        let shift = bs.bytes_per_sector_shift;
        if !(9..=12).contains(&shift) {
            return Err(corrupt(format!("BytesPerSectorShift is {shift}, not 9-12"), "bytes_per_sector_shift", 108));
        }
        let spc_shift = bs.sectors_per_cluster_shift;
        if u32::from(shift) + u32::from(spc_shift) > 25 {
            return Err(corrupt(
                format!(
                    "clusters of 2^{} bytes are larger than exFAT's 32 MiB",
                    u32::from(shift) + u32::from(spc_shift)
                ),
                "sectors_per_cluster_shift",
                109,
            ));
        }
        let sector = 1u64 << shift;
        let sector_us = to_usize(sector, "a sector")?;
        // The boot checksum covers sectors 0-10; sector 11 repeats it.
        let region_len = sector * BOOT_REGION_SECTORS;
        range_end(0, region_len, disk.size())?;
        let mut region = vec![0u8; to_usize(region_len, "the boot region")?];
        disk.read_at(&mut region, 0)?;
        let sum = boot_checksum(&region, sector_us);
        let stored = diskcast_layout::bytes(&region, 11 * sector_us, sector_us, "exFAT boot checksum sector")?;
        if let Some(bad) = stored.chunks_exact(4).position(|q| q != sum.to_le_bytes()) {
            return Err(corrupt(
                format!("the boot checksum sector does not match the boot region (computed {sum:#010x})"),
                "boot_checksum",
                11 * sector + u64::try_from(bad * 4).unwrap_or(0),
            ));
        }
        let volume = bs.volume_length.get();
        let fat_offset = u64::from(bs.fat_offset.get());
        let fat_len = u64::from(bs.fat_length.get());
        let heap = u64::from(bs.cluster_heap_offset.get());
        let clusters = bs.cluster_count.get();
        let root = bs.first_cluster_of_root.get();
        let fats = bs.number_of_fats;
        let vol_bytes = volume.checked_mul(sector).filter(|&v| v <= disk.size()).ok_or_else(|| {
            Error::out_of_bounds(format!(
                "the exFAT volume claims {volume} sectors of {sector} bytes, the disk holds {} bytes",
                disk.size()
            ))
            .with_field("volume_length")
            .with_offset(72)
        })?;
        let _ = vol_bytes;
        if !matches!(fats, 1 | 2) {
            return Err(corrupt(format!("NumberOfFats is {fats}, not 1 or 2"), "number_of_fats", 110));
        }
        if fat_offset < 24 || fat_len == 0 || fat_offset + fat_len * u64::from(fats) > heap {
            return Err(corrupt(
                format!(
                    "the FAT (sector {fat_offset}, {fat_len} sectors, {fats} copies) overlaps the boot regions or the cluster heap at sector {heap}"
                ),
                "fat_offset",
                80,
            ));
        }
        let spc = 1u64 << spc_shift;
        let room = volume.checked_sub(heap).ok_or_else(|| {
            corrupt(
                format!("the cluster heap offset {heap} is outside the volume of {volume} sectors"),
                "cluster_heap_offset",
                88,
            )
        })? / spc;
        if u64::from(clusters) > room || u64::from(clusters) > MAX_CLUSTERS || clusters == 0 {
            return Err(corrupt(
                format!("ClusterCount {clusters} does not fit the {room} clusters after the heap offset"),
                "cluster_count",
                92,
            ));
        }
        if (u64::from(clusters) + 2) * 4 > fat_len * sector {
            return Err(corrupt(
                format!("a FAT of {} bytes cannot map {clusters} clusters", fat_len * sector),
                "fat_length",
                84,
            ));
        }
        if !(2..u64::from(clusters) + 2).contains(&u64::from(root)) {
            return Err(corrupt(format!("root cluster {root} is out of range"), "first_cluster_of_root", 96));
        }
        Ok(Geometry {
            sector,
            cluster: sector << spc_shift,
            fat_offset: fat_offset * sector,
            heap_offset: heap * sector,
            clusters,
            root_cluster: root,
            serial: bs.volume_serial.get(),
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.heap_offset + u64::from(c - 2) * self.cluster
    }
}

/// The FAT, the allocation bitmap and which clusters a file or directory already holds.
struct Volume {
    geo: Geometry,
    fat: Vec<u8>,
    bitmap: Vec<u8>,
    claimed: Vec<u8>,
}

fn bit(map: &[u8], i: u64) -> bool {
    usize::try_from(i / 8).ok().and_then(|k| map.get(k)).is_some_and(|&b| b & (1 << (i % 8)) != 0)
}

impl Volume {
    /// The FAT entry of cluster `c`; past the FAT's end reads as end of chain (the chain
    /// then ends short of the size and is reported).
    fn entry(&self, c: u32) -> u32 {
        diskcast_layout::le32(&self.fat, diskcast_layout::usize_from(c).saturating_mul(4), "FAT entry")
            .unwrap_or(FAT_EOC)
    }

    fn valid(&self, c: u32) -> bool {
        (2..u64::from(self.geo.clusters) + 2).contains(&u64::from(c))
    }

    /// Claims clusters `first..first + n` for `what`: each must be in range, allocated
    /// in the bitmap (once it is loaded) and held by nothing else.
    fn claim(&mut self, first: u32, n: u64, what: &dyn Fn() -> String) -> Result<()> {
        let end = u64::from(first) + n;
        if !self.valid(first) || end > u64::from(self.geo.clusters) + 2 {
            return Err(Error::corrupt(format!(
                "{}: clusters {first}..{end} are outside the cluster heap (clusters 2..{})",
                what(),
                u64::from(self.geo.clusters) + 2
            ))
            .with_field("first_cluster"));
        }
        for c in u64::from(first)..end {
            let i = c - 2;
            if !self.bitmap.is_empty() && !bit(&self.bitmap, i) {
                return Err(Error::corrupt(format!("{}: cluster {c} is free in the allocation bitmap", what()))
                    .with_field("allocation_bitmap"));
            }
            if bit(&self.claimed, i) {
                return Err(Error::corrupt(format!(
                    "{}: cluster {c} is also used by another file or directory (a loop or a cross-link)",
                    what()
                ))
                .with_field("first_cluster"));
            }
            if let Some(b) = usize::try_from(i / 8).ok().and_then(|k| self.claimed.get_mut(k)) {
                *b |= 1 << (i % 8);
            }
        }
        Ok(())
    }

    /// The runs `(first, count)` of `n` clusters starting at `first`: one run when
    /// contiguous (NoFatChain), else the FAT chain, which must hold exactly `n` clusters
    /// (`n == None`: up to the end of the chain, at most `max` clusters).
    fn runs(
        &mut self,
        first: u32,
        n: Option<u64>,
        max: u64,
        contiguous: bool,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<(u32, u64)>> {
        if contiguous {
            let n = n.unwrap_or(1);
            self.claim(first, n, what)?;
            return Ok(vec![(first, n)]);
        }
        let mut runs: Vec<(u32, u64)> = Vec::new();
        let mut c = first;
        let mut count = 0u64;
        loop {
            if !self.valid(c) {
                return Err(Error::corrupt(format!("{}: cluster chain reaches invalid cluster {c:#x}", what()))
                    .with_field("fat"));
            }
            // Claiming each cluster as it is reached stops a loop at its first repeat.
            self.claim(c, 1, what)?;
            match runs.last_mut() {
                Some((f, k)) if u64::from(*f) + *k == u64::from(c) => *k += 1,
                _ => runs.push((c, 1)),
            }
            count += 1;
            if n == Some(count) {
                break;
            }
            let next = self.entry(c);
            if next == FAT_EOC {
                if let Some(want) = n {
                    return Err(Error::corrupt(format!(
                        "{}: cluster chain ends after {count} clusters, the size needs {want}",
                        what()
                    ))
                    .with_field("data_length"));
                }
                break;
            }
            if n.is_none() && count >= max {
                return Err(Error::corrupt(format!(
                    "{}: cluster chain is longer than {max} clusters ({} bytes, exFAT's cap for a directory)",
                    what(),
                    MAX_DIR_BYTES
                ))
                .with_field("fat"));
            }
            c = next;
        }
        Ok(runs)
    }

    fn read_runs(&self, disk: &dyn BlockRead, runs: &[(u32, u64)], len: u64) -> Result<Vec<u8>> {
        let mut out = vec![0u8; to_usize(len, "a directory")?];
        let mut at = 0u64;
        for &(c, n) in runs {
            if at >= len {
                break;
            }
            let off = self.geo.cluster_offset(c);
            let take = (n * self.geo.cluster).min(len - at);
            range_end(off, take, disk.size())?;
            let (a, e) = (to_usize(at, "a directory")?, to_usize(at + take, "a directory")?);
            disk.read_at(&mut out[a..e], off)?;
            at += take;
        }
        Ok(out)
    }
}

/// One file or directory entry set, resolved.
struct SetInfo {
    name: Vec<u8>,
    attr: u16,
    flags: u8,
    first: u32,
    valid: u64,
    len: u64,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    ctime: Option<(i64, u32)>,
}

/// What the root directory names besides files.
#[derive(Default)]
struct RootInfo {
    bitmap: Option<(u32, u64)>,
    upcase: Option<(u32, u64, u32)>,
}

/// Parses a directory's entries. `root` collects the bitmap and up-case entries.
fn parse_dir(bytes: &[u8], path: &str, mut root: Option<&mut RootInfo>) -> Result<Vec<SetInfo>> {
    let ents: Vec<&[u8]> = bytes.chunks_exact(ENTRY).collect();
    let mut out = Vec::new();
    let mut i = 0usize;
    let at = |i: usize| u64::try_from(i * ENTRY).unwrap_or(u64::MAX);
    while i < ents.len() {
        let e = ents[i];
        let ty = e[0];
        if ty == 0 {
            break;
        }
        if ty & 0x80 == 0 {
            i += 1; // unused or deleted
            continue;
        }
        match ty {
            T_BITMAP => {
                let a: &AllocEntry = diskcast_layout::read(e, 0, "exFAT allocation bitmap entry")?;
                if let Some(r) = root.as_deref_mut()
                    && a.flags & 1 == 0
                {
                    r.bitmap = Some((a.first_cluster.get(), a.data_length.get()));
                }
                i += 1;
            }
            T_UPCASE => {
                let a: &AllocEntry = diskcast_layout::read(e, 0, "exFAT up-case table entry")?;
                if let Some(r) = root.as_deref_mut() {
                    r.upcase = Some((a.first_cluster.get(), a.data_length.get(), a.table_checksum.get()));
                }
                i += 1;
            }
            T_FILE => {
                let f: &FileEntry = diskcast_layout::read(e, 0, "exFAT file entry")?;
                let sc = usize::from(f.secondary_count);
                let room = ents.len() - i - 1;
                if !(2..=18).contains(&sc) || sc > room {
                    return Err(corrupt(
                        format!(
                            "directory {path}: the entry set at byte {} claims {sc} secondary entries (2-18, {room} left in the directory)",
                            at(i)
                        ),
                        "secondary_count",
                        at(i) + 1,
                    ));
                }
                let set = diskcast_layout::bytes(bytes, i * ENTRY, (1 + sc) * ENTRY, "exFAT entry set")?;
                let sum = set_checksum(set);
                if sum != f.set_checksum.get() {
                    return Err(corrupt(
                        format!(
                            "directory {path}: the entry set at byte {} has checksum {:#06x}, its entries sum to {sum:#06x}",
                            at(i),
                            f.set_checksum.get()
                        ),
                        "set_checksum",
                        at(i) + 2,
                    ));
                }
                let s: &StreamEntry = diskcast_layout::read(ents[i + 1], 0, "exFAT stream extension entry")?;
                if s.entry_type != T_STREAM {
                    return Err(corrupt(
                        format!("directory {path}: the entry set at byte {} has no stream extension", at(i)),
                        "entry_type",
                        at(i + 1),
                    ));
                }
                let name_len = usize::from(s.name_length);
                let name_entries = name_len.div_ceil(NAME_UNITS_PER_ENTRY);
                if name_len == 0 || name_entries > sc - 1 {
                    return Err(corrupt(
                        format!(
                            "directory {path}: the entry set at byte {} names {name_len} characters in {} entries",
                            at(i),
                            sc - 1
                        ),
                        "name_length",
                        at(i + 1) + 3,
                    ));
                }
                let mut units = Vec::with_capacity(name_len);
                for k in 0..name_entries {
                    let n: &NameEntry = diskcast_layout::read(ents[i + 2 + k], 0, "exFAT file name entry")?;
                    if n.entry_type != T_NAME {
                        return Err(corrupt(
                            format!("directory {path}: the entry set at byte {} lacks a file name entry", at(i)),
                            "entry_type",
                            at(i + 2 + k),
                        ));
                    }
                    let want = name_len - units.len();
                    units.extend(n.name.iter().take(want).map(|u| u.get()));
                }
                let (valid, len) = (s.valid_data_length.get(), s.data_length.get());
                if valid > len {
                    return Err(corrupt(
                        format!(
                            "directory {path}: entry at byte {} has ValidDataLength {valid} past its DataLength {len}",
                            at(i)
                        ),
                        "valid_data_length",
                        at(i + 1) + 8,
                    ));
                }
                out.push(SetInfo {
                    name: String::from_utf16_lossy(&units).into_bytes(),
                    attr: f.attributes.get(),
                    flags: s.flags,
                    first: s.first_cluster.get(),
                    valid,
                    len,
                    mtime: from_timestamp(f.modify.get(), f.modify_10ms, f.modify_utc),
                    atime: from_timestamp(f.access.get(), 0, f.access_utc),
                    ctime: from_timestamp(f.create.get(), f.create_10ms, f.create_utc),
                });
                i += 1 + sc;
            }
            _ if ty & 0x40 != 0 => {
                return Err(corrupt(
                    format!("directory {path}: secondary entry {ty:#04x} at byte {} outside an entry set", at(i)),
                    "entry_type",
                    at(i),
                ));
            }
            _ if ty & 0x20 == 0 && ty != T_LABEL => {
                return Err(corrupt(
                    format!("directory {path}: unknown critical entry type {ty:#04x} at byte {}", at(i)),
                    "entry_type",
                    at(i),
                ));
            }
            _ => i += 1, // volume label, benign primaries (GUID, padding, ACL)
        }
    }
    Ok(out)
}

fn ts(t: Option<(i64, u32)>) -> Timestamp {
    t.map_or_else(Timestamp::default, |(sec, nsec)| Timestamp { sec, nsec })
}

/// Reads the whole exFAT filesystem on `disk` into a tree; file content stays extents
/// of `disk`.
pub(crate) fn read_tree(disk: Arc<dyn BlockRead>) -> Result<(Tree, Geometry)> {
    let geo = Geometry::read(disk.as_ref())?;
    let fat_need = (u64::from(geo.clusters) + 2) * 4;
    if fat_need > MAX_FAT_BYTES {
        return Err(Error::unsupported(format!(
            "a FAT of {fat_need} bytes is larger than diskcast reads ({MAX_FAT_BYTES} bytes, MAX_FAT_BYTES)"
        )));
    }
    range_end(geo.fat_offset, fat_need, disk.size())?;
    let mut fat = vec![0u8; to_usize(fat_need, "the FAT")?];
    disk.read_at(&mut fat, geo.fat_offset)?;
    let claimed = vec![0u8; to_usize(u64::from(geo.clusters).div_ceil(8), "the cluster map")?];
    let mut vol = Volume { geo: geo.clone(), fat, bitmap: Vec::new(), claimed };
    let cs = geo.cluster;
    let dir_max = MAX_DIR_BYTES.div_ceil(cs);

    // The root: its chain, then the bitmap it names, which every later claim checks.
    let root_runs = vol.runs(geo.root_cluster, None, dir_max, false, &|| "root directory".to_string())?;
    let root_len = root_runs.iter().map(|r| r.1).sum::<u64>() * cs;
    let root_bytes = vol.read_runs(disk.as_ref(), &root_runs, root_len)?;
    let mut info = RootInfo::default();
    let root_sets = parse_dir(&root_bytes, "/", Some(&mut info))?;
    let (bm_first, bm_len) = info
        .bitmap
        .ok_or_else(|| Error::corrupt("the root directory has no allocation bitmap entry").with_field("entry_type"))?;
    let bm_need = u64::from(geo.clusters).div_ceil(8);
    if bm_len < bm_need {
        return Err(Error::corrupt(format!(
            "the allocation bitmap holds {bm_len} bytes, {} clusters need {bm_need}",
            geo.clusters
        ))
        .with_field("allocation_bitmap"));
    }
    let bm_runs = vol.runs(bm_first, Some(bm_need.div_ceil(cs)), 0, false, &|| "allocation bitmap".to_string())?;
    vol.bitmap = vol.read_runs(disk.as_ref(), &bm_runs, bm_need)?;
    // The clusters claimed before the bitmap was loaded must be allocated too.
    if let Some(c) = (0..u64::from(geo.clusters)).find(|&i| bit(&vol.claimed, i) && !bit(&vol.bitmap, i)) {
        return Err(Error::corrupt(format!(
            "cluster {} of the root directory or the bitmap is free in the allocation bitmap",
            c + 2
        ))
        .with_field("allocation_bitmap"));
    }
    if let Some((first, len, sum)) = info.upcase {
        if len == 0 || len > MAX_UPCASE_BYTES {
            return Err(Error::corrupt(format!(
                "the up-case table claims {len} bytes (1 to {MAX_UPCASE_BYTES}, MAX_UPCASE_BYTES)"
            ))
            .with_field("data_length"));
        }
        let runs = vol.runs(first, Some(len.div_ceil(cs)), 0, false, &|| "up-case table".to_string())?;
        let table = vol.read_runs(disk.as_ref(), &runs, len)?;
        let got = table_checksum(&table);
        if got != sum {
            return Err(Error::corrupt(format!(
                "the up-case table's checksum is {got:#010x}, its directory entry says {sum:#010x}"
            ))
            .with_field("table_checksum"));
        }
    }

    let mut tree = Tree::new(Meta::new(0o755, Timestamp::default()));
    let mut todo: Vec<(NodeId, Vec<SetInfo>, String)> = vec![(NodeId::ROOT, root_sets, String::from("/"))];
    while let Some((dir, sets, path)) = todo.pop() {
        for e in sets {
            check_name(&e.name).map_err(|err| {
                Error::corrupt(format!("directory {path} has a bad entry: {}", err.message())).with_field("name")
            })?;
            let child_path = format!("{}{}", path, String::from_utf8_lossy(&e.name));
            let is_dir = e.attr & ATTR_DIRECTORY != 0;
            let base = if is_dir { 0o755 } else { 0o644 };
            let mut meta = Meta::new(if e.attr & ATTR_READ_ONLY != 0 { base & !0o222 } else { base }, ts(e.mtime));
            meta.atime = e.atime.map(|t| ts(Some(t)));
            meta.ctime = e.ctime.map(|t| ts(Some(t)));
            let contiguous = e.flags & NO_FAT_CHAIN != 0;
            let what = || format!("{} {child_path}", if is_dir { "directory" } else { "file" });
            if tree.lookup(dir, &e.name).is_some() {
                return Err(Error::corrupt(format!("directory {path} names {} twice", display_name(&e.name)))
                    .with_field("name"));
            }
            if is_dir {
                if e.len > MAX_DIR_BYTES || e.len == 0 {
                    return Err(Error::corrupt(format!(
                        "directory {child_path} claims {} bytes (1 to {MAX_DIR_BYTES})",
                        e.len
                    ))
                    .with_field("data_length"));
                }
                let n = e.len.div_ceil(cs);
                let runs = vol.runs(e.first, Some(n), dir_max, contiguous, &what)?;
                let bytes = vol.read_runs(disk.as_ref(), &runs, e.valid.min(e.len))?;
                let sets = parse_dir(&bytes, &format!("{child_path}/"), None)?;
                let id = tree.insert(dir, &e.name, Node::new(meta, Kind::empty_dir()))?;
                todo.push((id, sets, format!("{child_path}/")));
                continue;
            }
            let data = if e.len == 0 {
                FileData::inline(Vec::new())
            } else {
                let n = e.len.div_ceil(cs);
                if n > u64::from(geo.clusters) {
                    return Err(Error::corrupt(format!(
                        "file {child_path} claims {} bytes, more than the {} clusters of the volume",
                        e.len, geo.clusters
                    ))
                    .with_field("data_length"));
                }
                let runs = vol.runs(e.first, Some(n), 0, contiguous, &what)?;
                let mut extents = Vec::with_capacity(runs.len());
                let mut fo = 0u64;
                for (c, k) in runs {
                    if fo >= e.valid {
                        break;
                    }
                    // Past ValidDataLength a file reads as zeros (a hole here).
                    let len = (k * cs).min(e.valid - fo);
                    extents.push(FileExtent { file_offset: fo, source_offset: geo.cluster_offset(c), len });
                    fo += len;
                }
                FileData::blocks(e.len, disk.clone(), extents)?
            };
            tree.insert(dir, &e.name, Node::new(meta, Kind::File(data)))?;
        }
    }
    Ok((tree, geo))
}
