//! Reading a FAT12/16/32 filesystem into a tree: the boot sector's geometry, the first
//! FAT, directories (long names, 8.3 names with their case bits), and each file's
//! cluster chain as extents of the disk.

use crate::names::{from_dos, lfn_checksum};
use crate::spec::*;
use diskcast_block::{BlockRead, Error, Result, range_end};
use diskcast_tree::{FileData, FileExtent, Kind, Meta, Node, NodeId, Timestamp, Tree, check_name, display_name};
use std::collections::HashSet;
use std::sync::Arc;

/// Which FAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatType {
    /// 12-bit entries (floppies, tiny volumes).
    Fat12,
    /// 16-bit entries.
    Fat16,
    /// 28-bit entries, root directory in a cluster chain.
    Fat32,
}

impl FatType {
    /// `FAT12`, `FAT16`, `FAT32`.
    pub fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }
    fn eoc(self) -> u32 {
        match self {
            FatType::Fat12 => 0xff8,
            FatType::Fat16 => 0xfff8,
            FatType::Fat32 => 0x0fff_fff8,
        }
    }
}

/// Largest FAT read into memory (a 2 TiB FAT32 with 4 KiB clusters has a 2 GiB FAT).
const MAX_FAT_BYTES: u64 = 1 << 30;
/// A FAT directory holds at most 65536 entries (the spec's limit): 2 MiB.
const MAX_DIR_BYTES: u64 = 65_536 * 32;

/// The layout a boot sector describes, checked against the disk.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// FAT12, FAT16 or FAT32.
    pub fat_type: FatType,
    /// Bytes per sector.
    pub sector: u64,
    /// Bytes per cluster.
    pub cluster: u64,
    /// Byte offset of the first FAT.
    pub fat_offset: u64,
    /// Bytes of one FAT.
    pub fat_bytes: u64,
    /// FAT12/16: byte offset and length of the fixed root directory.
    pub root_region: (u64, u64),
    /// FAT32: first cluster of the root directory.
    pub root_cluster: u32,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    /// Number of data clusters (valid clusters are `2..clusters + 2`).
    pub clusters: u32,
    /// Label from the boot sector (`NO NAME` when unset).
    pub label: String,
}

/// True when sector 0 looks like a FAT boot sector: a jump, the `55 AA` signature, a
/// sane sector size and either a FAT type string or a plausible BPB. Geometry is checked
/// fully by [`Geometry::read`], so a damaged FAT is reported rather than skipped.
pub(crate) fn probe(b: &[u8]) -> bool {
    let (Ok(bpb), Ok(e16), Ok(e32)) = (
        diskcast_layout::read::<Bpb>(b, 0, "FAT boot sector"),
        diskcast_layout::read::<ExtBpb>(b, EXT_BPB_16, "FAT12/16 extended BPB"),
        diskcast_layout::read::<ExtBpb>(b, EXT_BPB_32, "FAT32 extended BPB"),
    ) else {
        return false;
    };
    if b.get(510..512) != Some(&[0x55, 0xaa]) || !matches!(bpb.jump[0], 0xeb | 0xe9) {
        return false;
    }
    if &bpb.oem_name == b"NTFS    " || &bpb.oem_name == b"EXFAT   " {
        return false;
    }
    if !matches!(bpb.bytes_per_sector.get(), 512 | 1024 | 2048 | 4096) {
        return false;
    }
    let named = e16.fs_type.starts_with(b"FAT") || e32.fs_type.starts_with(b"FAT32");
    let plausible = bpb.sectors_per_cluster.is_power_of_two()
        && bpb.reserved_sectors.get() >= 1
        && matches!(bpb.num_fats, 1 | 2)
        && bpb.media >= 0xf0;
    named || plausible
}

fn corrupt(msg: String, field: &'static str, offset: u64) -> Error {
    Error::corrupt(msg).with_field(field).with_offset(offset)
}

impl Geometry {
    /// Parses and checks the boot sector of `disk`.
    pub fn read(disk: &dyn BlockRead) -> Result<Self> {
        let mut b = vec![0u8; 512];
        range_end(0, 512, disk.size())?;
        disk.read_at(&mut b, 0)?;
        if !probe(&b) {
            return Err(Error::invalid("not a FAT boot sector"));
        }
        let bpb: &Bpb = diskcast_layout::read(&b, 0, "FAT boot sector")?;
        let f32b: &Fat32Bpb = diskcast_layout::read(&b, size_of::<Bpb>(), "FAT32 BPB")?;
        let sector = u64::from(bpb.bytes_per_sector.get());
        let spc = u64::from(bpb.sectors_per_cluster);
        if spc == 0 || !spc.is_power_of_two() {
            return Err(corrupt(
                format!("sectors per cluster is {spc}, not a power of two"),
                "sectors_per_cluster",
                13,
            ));
        }
        let reserved = u64::from(bpb.reserved_sectors.get());
        let fats = u64::from(bpb.num_fats);
        if reserved == 0 || fats == 0 {
            return Err(corrupt(
                format!("{reserved} reserved sectors and {fats} FATs"),
                if reserved == 0 { "reserved_sectors" } else { "num_fats" },
                14,
            ));
        }
        let root_entries = u64::from(bpb.root_entries.get());
        let total = match bpb.total_sectors16.get() {
            0 => u64::from(bpb.total_sectors32.get()),
            n => u64::from(n),
        };
        let fat16_size = u64::from(bpb.fat_size16.get());
        let fat32 = fat16_size == 0;
        let fat_sectors = if fat32 { u64::from(f32b.fat_size32.get()) } else { fat16_size };
        if fat_sectors == 0 {
            return Err(corrupt("FAT size is 0".into(), "fat_size", 22));
        }
        let root_sectors = (root_entries * 32).div_ceil(sector);
        let data_start = reserved + fats * fat_sectors + root_sectors;
        let data_sectors = total.checked_sub(data_start).filter(|&n| n > 0).ok_or_else(|| {
            corrupt(format!("{total} sectors leave no room for data after {data_start}"), "total_sectors", 32)
        })?;
        if total * sector > disk.size() {
            return Err(Error::out_of_bounds(format!(
                "the FAT filesystem claims {} bytes, the disk holds {}",
                total * sector,
                disk.size()
            ))
            .with_field("total_sectors")
            .with_offset(32));
        }
        let clusters = data_sectors / spc;
        let fat_type = if fat32 {
            if root_entries != 0 {
                return Err(corrupt("FAT32 with a fixed root directory".into(), "root_entries", 17));
            }
            FatType::Fat32
        } else if clusters < 4085 {
            FatType::Fat12
        } else {
            FatType::Fat16
        };
        let max = match fat_type {
            FatType::Fat12 => 4084,
            FatType::Fat16 => 65_524,
            FatType::Fat32 => 0x0fff_fff5,
        };
        let clusters: u32 = diskcast_layout::fit(clusters.min(max), "FAT cluster count")?;
        let fat_bytes = fat_sectors * sector;
        let bits = match fat_type {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if (u64::from(clusters) + 2) * bits > fat_bytes * 8 {
            return Err(corrupt(
                format!("a FAT of {fat_bytes} bytes cannot map {clusters} clusters"),
                "fat_size",
                if fat32 { 36 } else { 22 },
            ));
        }
        let (root_cluster, ext_at) =
            if fat32 { (f32b.root_cluster.get() & 0x0fff_ffff, EXT_BPB_32) } else { (0, EXT_BPB_16) };
        if fat32 && !(2..u64::from(clusters) + 2).contains(&u64::from(root_cluster)) {
            return Err(corrupt(format!("root cluster {root_cluster} is out of range"), "root_cluster", 44));
        }
        let ext: &ExtBpb = diskcast_layout::read(&b, ext_at, "FAT extended BPB")?;
        let label = if ext.boot_signature == 0x29 {
            String::from_utf8_lossy(&ext.label).trim_end().to_string()
        } else {
            String::new()
        };
        Ok(Geometry {
            fat_type,
            sector,
            cluster: spc * sector,
            fat_offset: reserved * sector,
            fat_bytes,
            root_region: ((reserved + fats * fat_sectors) * sector, root_sectors * sector),
            root_cluster,
            data_offset: data_start * sector,
            clusters,
            label,
        })
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c - 2) * self.cluster
    }
}

/// The first FAT, in memory.
struct Fat {
    geo: Geometry,
    bytes: Vec<u8>,
}

impl Fat {
    fn load(disk: &dyn BlockRead, geo: Geometry) -> Result<Self> {
        let need = match geo.fat_type {
            FatType::Fat12 => (u64::from(geo.clusters) + 2) * 3 / 2 + 1,
            FatType::Fat16 => (u64::from(geo.clusters) + 2) * 2,
            FatType::Fat32 => (u64::from(geo.clusters) + 2) * 4,
        }
        .min(geo.fat_bytes);
        if need > MAX_FAT_BYTES {
            return Err(Error::unsupported(format!("a FAT of {need} bytes is larger than diskcast reads")));
        }
        range_end(geo.fat_offset, need, disk.size())?;
        let mut bytes = vec![0u8; diskcast_layout::usize_from_u64(need, "FAT")?];
        disk.read_at(&mut bytes, geo.fat_offset)?;
        Ok(Fat { geo, bytes })
    }

    fn entry(&self, c: u32) -> u32 {
        let i = diskcast_layout::usize_from(c);
        let b = &self.bytes;
        let get = |at: usize, n: usize| -> u32 {
            let mut v = 0u32;
            for k in 0..n {
                v |= u32::from(b.get(at + k).copied().unwrap_or(0)) << (8 * k);
            }
            v
        };
        match self.geo.fat_type {
            FatType::Fat12 => {
                let v = get(i + i / 2, 2);
                if i % 2 == 1 { v >> 4 } else { v & 0xfff }
            }
            FatType::Fat16 => get(2 * i, 2),
            FatType::Fat32 => get(4 * i, 4) & 0x0fff_ffff,
        }
    }

    fn valid(&self, c: u32) -> bool {
        (2..self.geo.clusters.saturating_add(2)).contains(&c)
    }

    /// The chain from `start` as runs `(first cluster, count)`, at most `limit` clusters
    /// (`exact`: exactly `limit`, the file's size), each claimed in `claimed`. Loops,
    /// clusters another chain claimed before (cross-links), and chains that end early or
    /// run through free, bad or out-of-range clusters are errors naming `what`.
    fn chain(
        &self,
        start: u32,
        limit: u64,
        exact: bool,
        claimed: &mut Claimed,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<(u32, u32)>> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut c = start;
        let mut n = 0u64;
        loop {
            if !self.valid(c) {
                return Err(Error::corrupt(format!("{}: cluster chain reaches invalid cluster {c:#x}", what()))
                    .with_field("cluster"));
            }
            if !claimed.claim(c) {
                let own = runs.iter().any(|&(f, k)| (f..f.saturating_add(k)).contains(&c));
                let msg = if own {
                    format!("{}: cluster chain loops back on itself at cluster {c:#x}", what())
                } else {
                    format!("{}: cluster {c:#x} is also in another file's or directory's chain (cross-linked)", what())
                };
                return Err(Error::corrupt(msg).with_field("cluster"));
            }
            match runs.last_mut() {
                Some((f, k)) if f.checked_add(*k) == Some(c) => *k += 1,
                _ => runs.push((c, 1)),
            }
            n += 1;
            let next = self.entry(c);
            if exact && n == limit {
                // A chain longer than the file is harmless: only what the file uses is claimed.
                break;
            }
            if next >= self.geo.fat_type.eoc() {
                if exact {
                    return Err(Error::corrupt(format!(
                        "{}: cluster chain ends after {n} clusters, the size needs {limit}",
                        what()
                    ))
                    .with_field("file_size"));
                }
                break;
            }
            if n >= limit {
                return Err(Error::corrupt(format!(
                    "{}: cluster chain is longer than {limit} clusters (a loop?)",
                    what()
                ))
                .with_field("cluster"));
            }
            c = next;
        }
        Ok(runs)
    }
}

/// Clusters already in some file's or directory's chain, one bit each (an eighth of the
/// FAT held in memory). No two chains may share a cluster, so all chains together walk
/// at most the volume's clusters: cross-linked files cannot multiply the work.
struct Claimed(Vec<u8>);

impl Claimed {
    fn new(clusters: u32) -> Self {
        Claimed(vec![0; bit_index(clusters.saturating_add(2)).0 + 1])
    }

    /// Marks cluster `c`; false when it was marked before.
    fn claim(&mut self, c: u32) -> bool {
        let (byte, bit) = bit_index(c);
        match self.0.get_mut(byte) {
            Some(b) if *b & bit == 0 => {
                *b |= bit;
                true
            }
            _ => false,
        }
    }
}

/// Byte and mask of cluster `c`'s bit.
fn bit_index(c: u32) -> (usize, u8) {
    let byte = usize::try_from(c / 8).unwrap_or(usize::MAX);
    (byte, 1u8 << (c % 8))
}

/// One directory entry with its name resolved.
struct Entry {
    name: Vec<u8>,
    attr: u8,
    cluster: u32,
    size: u32,
    mtime: Option<i64>,
    atime: Option<i64>,
}

/// Parses a directory's bytes into entries, joining long-name slots whose sequence and
/// checksum match their short entry; anything else falls back to the 8.3 name.
fn parse_dir(bytes: &[u8], fat32: bool) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut lfn: Vec<u16> = Vec::new();
    let mut expect = 0u8;
    let mut sum = 0u8;
    for e in bytes.chunks_exact(32) {
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xe5 {
            expect = 0;
            continue;
        }
        let d: &DirEntry = diskcast_layout::read(e, 0, "FAT directory entry")?;
        let attr = d.attr;
        if attr & 0x3f == 0x0f {
            let l: &LfnEntry = diskcast_layout::read(e, 0, "FAT long-name entry")?;
            let ord = l.ord & 0x1f;
            if l.ord & 0x40 != 0 && (1..=20).contains(&ord) {
                lfn = vec![0xffff; usize::from(ord) * LFN_UNITS];
                sum = l.checksum;
            } else if ord == 0 || ord + 1 != expect || l.checksum != sum {
                expect = 0;
                continue;
            }
            let at = (usize::from(ord) - 1) * LFN_UNITS;
            for (slot, u) in lfn.iter_mut().skip(at).zip(l.units()) {
                *slot = u;
            }
            expect = ord;
            continue;
        }
        let short = d.name;
        let long_ok = expect == 1 && lfn_checksum(&short) == sum;
        expect = 0;
        if attr & 0x08 != 0 {
            continue; // volume label
        }
        let name = if long_ok {
            let end = lfn.iter().position(|&u| u == 0 || u == 0xffff).unwrap_or(lfn.len());
            String::from_utf16_lossy(&lfn[..end]).into_bytes()
        } else {
            short_name(&short, d.nt_case)
        };
        if name == b"." || name == b".." {
            continue;
        }
        let hi = if fat32 { u32::from(d.cluster_hi.get()) << 16 } else { 0 };
        out.push(Entry {
            name,
            attr,
            cluster: hi | u32::from(d.cluster_lo.get()),
            size: d.size.get(),
            mtime: from_dos(d.write_date.get(), d.write_time.get()),
            atime: from_dos(d.access_date.get(), 0),
        });
    }
    Ok(out)
}

/// Code page 437 (Linux's default `codepage=`) from 0x80: how bytes past ASCII in short
/// names are read.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// An 8.3 name as UTF-8: bytes past ASCII through code page 437, lowercased where
/// Windows NT's case bits say (0x08 base, 0x10 extension), as Linux and mtools show it.
fn short_name(s: &[u8; 11], case: u8) -> Vec<u8> {
    let mut raw = *s;
    if raw[0] == 0x05 {
        raw[0] = 0xe5;
    }
    let decode =
        |part: &[u8], lower: bool| -> String {
            let end = part.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
            part[..end]
                .iter()
                .map(|&b| {
                    if b < 0x80 { char::from(b) } else { CP437_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('_') }
                })
                .flat_map(|c| if lower { c.to_lowercase().collect::<Vec<_>>() } else { vec![c] })
                .collect()
        };
    let mut name = decode(&raw[..8], case & 0x08 != 0);
    let ext = decode(&raw[8..], case & 0x10 != 0);
    if !ext.is_empty() {
        name.push('.');
        name.push_str(&ext);
    }
    name.into_bytes()
}

/// Reads the whole FAT filesystem on `disk` into a tree; file content stays extents of
/// `disk`.
pub(crate) fn read_tree(disk: Arc<dyn BlockRead>) -> Result<(Tree, Geometry)> {
    let geo = Geometry::read(disk.as_ref())?;
    let fat = Fat::load(disk.as_ref(), geo.clone())?;
    let mode = |dir: bool, attr: u8| {
        let m = if dir { 0o755 } else { 0o644 };
        if attr & 0x01 != 0 { m & !0o222 } else { m }
    };
    let mut tree = Tree::new(Meta::new(0o755, Timestamp::default()));
    let dir_limit = MAX_DIR_BYTES.div_ceil(geo.cluster);
    // (directory node, first cluster; 0 = the FAT12/16 root region, path for messages)
    let mut todo: Vec<(NodeId, u32, String)> = vec![(NodeId::ROOT, geo.root_cluster, String::from("/"))];
    let mut seen: HashSet<u32> = HashSet::new();
    let mut claimed = Claimed::new(geo.clusters);
    while let Some((dir, first, path)) = todo.pop() {
        let bytes = if first == 0 {
            let (off, len) = geo.root_region;
            range_end(off, len, disk.size())?;
            let mut b = vec![0u8; diskcast_layout::usize_from_u64(len, "FAT root directory")?];
            disk.read_at(&mut b, off)?;
            b
        } else {
            if !seen.insert(first) {
                return Err(Error::corrupt(format!("directory {path} is also an ancestor or another directory"))
                    .with_field("cluster"));
            }
            let runs = fat.chain(first, dir_limit, false, &mut claimed, &|| format!("directory {path}"))?;
            let mut b = Vec::new();
            for (c, n) in runs {
                let off = geo.cluster_offset(c);
                let len = u64::from(n) * geo.cluster;
                range_end(off, len, disk.size())?;
                let at = b.len();
                b.resize(at + diskcast_layout::usize_from_u64(len, "FAT directory")?, 0);
                disk.read_at(&mut b[at..], off)?;
            }
            b
        };
        for e in parse_dir(&bytes, geo.fat_type == FatType::Fat32)? {
            check_name(&e.name).map_err(|err| {
                Error::corrupt(format!("directory {path} has a bad entry: {}", err.message())).with_field("name")
            })?;
            let child_path = format!("{}{}", path, String::from_utf8_lossy(&e.name));
            let mut meta = Meta::new(mode(e.attr & 0x10 != 0, e.attr), Timestamp::from_secs(e.mtime.unwrap_or(0)));
            meta.atime = e.atime.map(Timestamp::from_secs);
            let node = if e.attr & 0x10 != 0 {
                if e.cluster == 0 {
                    return Err(Error::corrupt(format!("directory {child_path} has no cluster")).with_field("cluster"));
                }
                Node::new(meta, Kind::empty_dir())
            } else {
                let size = u64::from(e.size);
                let data = if size == 0 {
                    FileData::inline(Vec::new())
                } else {
                    if e.cluster == 0 {
                        return Err(Error::corrupt(format!("file {child_path} has {size} bytes but no cluster"))
                            .with_field("cluster"));
                    }
                    let need = size.div_ceil(geo.cluster);
                    let runs = fat.chain(e.cluster, need, true, &mut claimed, &|| format!("file {child_path}"))?;
                    let mut extents = Vec::with_capacity(runs.len());
                    let mut fo = 0u64;
                    for (c, n) in runs {
                        let len = (u64::from(n) * geo.cluster).min(size - fo);
                        extents.push(FileExtent { file_offset: fo, source_offset: geo.cluster_offset(c), len });
                        fo += len;
                    }
                    FileData::blocks(size, disk.clone(), extents)?
                };
                Node::new(meta, Kind::File(data))
            };
            if tree.lookup(dir, &e.name).is_some() {
                return Err(Error::corrupt(format!("directory {path} names {} twice", display_name(&e.name)))
                    .with_field("name"));
            }
            let is_dir = e.attr & 0x10 != 0;
            let id = tree.insert(dir, &e.name, node)?;
            if is_dir {
                todo.push((id, e.cluster, format!("{child_path}/")));
            }
        }
    }
    Ok((tree, geo))
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn short_names_decode_code_page_437_and_case_bits() {
        assert_eq!(short_name(b"CAF\x82    TXT", 0x18), "café.txt".as_bytes());
        assert_eq!(short_name(b"\x05BC     D  ", 0), "σBC.D".as_bytes());
        assert_eq!(short_name(b"README     ", 0x08), b"readme");
    }
}
