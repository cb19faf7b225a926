//! A UDF 1.02 file system (ECMA-167 3rd edition, OSTA UDF 1.02) laid over the disc the
//! ISO 9660 writer plans: a UDF bridge disc. Both trees point at the same file data, so
//! each file's bytes are on the disc once.
//!
//! UDF 1.02 because it is what Windows installation discs carry next to ISO 9660 and
//! every UDF reader in use reads it; 2.01 would add nothing this writer needs (streams,
//! extended file entries) and only change the descriptor version.
//!
//! Layout (2048-byte blocks): the volume recognition sequence right after the ISO
//! terminator, the main and reserve volume descriptor sequences and the integrity
//! descriptor before sector 256, the anchor at 256 and at the end, and one read-only
//! partition from sector 257 to the end anchor holding the file set descriptor, one file
//! entry per node, the directories' identifier streams, and the ISO side's data.

use diskcast_block::{Error, Result};
use diskcast_layout::{fit, low_u8, u64_from_usize, usize_from_u64};
use diskcast_tree::{Kind, NodeId, Timestamp, Tree, display_name};
use std::collections::HashMap;

const BS: u64 = 2048;
/// The block size as a field value and a buffer length.
const BS32: u32 = 2048;
const BS_BYTES: usize = 2048;
/// Largest extent of a short allocation descriptor: under 2^30, a multiple of the block.
const MAX_AD: u64 = 0x3FFF_F800;
/// Descriptor version of NSR02 (UDF 1.02).
const TAG_VERSION: u16 = 2;
const UDF_REV: u16 = 0x0102;
/// Sectors given to each volume descriptor sequence (UDF asks for at least 16).
pub(crate) const VDS_SECTORS: u32 = 16;
/// Sectors before the partition the writer needs: two sequences, integrity + terminator.
pub(crate) const SYSTEM_SECTORS: u32 = 2 * VDS_SECTORS + 2;
/// Where the partition starts (after the anchor at 256).
pub(crate) const PART_START: u32 = 257;
/// Allocation descriptors that fit one file entry.
const MAX_ADS: u64 = (BS - 176) / 8;

/// Nodes and directories of the UDF tree, sized before the disc is laid out.
pub(crate) struct UdfPlan {
    /// File entry order; an entry's block is `2 + index`.
    nodes: Vec<NodeId>,
    index: HashMap<NodeId, u32>,
    /// Each directory: its node and its identifier stream (without locations).
    dirs: Vec<(NodeId, Vec<Fid>)>,
    /// Link counts (identifiers naming each entry).
    links: HashMap<NodeId, u16>,
    /// First block of each directory's stream, relative to the partition.
    dir_at: HashMap<NodeId, (u32, u64)>,
    /// Blocks the metadata takes at the partition's start.
    pub(crate) blocks: u32,
    files: u32,
    dirs_n: u32,
}

struct Fid {
    name: Vec<u8>,
    child: NodeId,
    dir: bool,
    parent: bool,
}

impl Fid {
    fn len(&self) -> u64 {
        (38 + u64_from_usize(self.name.len())).next_multiple_of(4)
    }
}

/// OSTA CS0 d-characters: compression id 8 and Latin-1 when every character fits a
/// byte, else 16 and UTF-16 big-endian.
fn cs0(name: &str) -> Vec<u8> {
    if name.chars().all(|c| u32::from(c) < 256) {
        // Every character is below 256 here.
        std::iter::once(8u8).chain(name.chars().map(|c| low_u8(u64::from(u32::from(c))))).collect()
    } else {
        std::iter::once(16u8).chain(name.encode_utf16().flat_map(|u| u.to_be_bytes())).collect()
    }
}

/// A d-string field of `len` bytes: CS0 characters, zero padding, the used length last.
fn dstring(s: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if s.is_empty() {
        return out;
    }
    let mut c = cs0(s);
    // Cut whole characters until it fits with the length byte.
    while c.len() > len - 1 {
        let w = if c[0] == 16 { 2 } else { 1 };
        c.truncate(c.len() - w);
    }
    out[..c.len()].copy_from_slice(&c);
    // c was cut to len - 1 bytes, and every d-string field is under 256 bytes.
    out[len - 1] = low_u8(u64_from_usize(c.len()));
    out
}

impl UdfPlan {
    pub(crate) fn new(tree: &Tree) -> Result<Self> {
        let mut plan = UdfPlan {
            nodes: Vec::new(),
            index: HashMap::new(),
            dirs: Vec::new(),
            links: HashMap::new(),
            dir_at: HashMap::new(),
            blocks: 0,
            files: 0,
            dirs_n: 0,
        };
        plan.add(NodeId::ROOT);
        let mut queue = vec![NodeId::ROOT];
        let mut i = 0;
        while i < queue.len() {
            let d = queue[i];
            i += 1;
            let mut fids = vec![Fid { name: Vec::new(), child: d, dir: true, parent: true }];
            for (name, child) in tree.dir(d)?.entries() {
                let n = tree.node(child);
                let text = String::from_utf8_lossy(name);
                let id = cs0(&text);
                if id.len() > 255 {
                    return Err(Error::argument(format!(
                        "{}: the name takes {} bytes as a UDF file identifier; UDF allows 255",
                        display_name(name),
                        id.len()
                    )));
                }
                let is_dir = n.as_dir().is_some();
                if plan.add(child) {
                    if is_dir {
                        queue.push(child);
                        plan.dirs_n += 1;
                    } else {
                        plan.files += 1;
                    }
                }
                *plan.links.entry(child).or_insert(0) += 1;
                fids.push(Fid { name: id, child, dir: is_dir, parent: false });
            }
            plan.dirs.push((d, fids));
        }
        // Blocks: file set descriptor, its terminator, the entries, then the streams.
        let mut next = 2 + u64_from_usize(plan.nodes.len());
        for (d, fids) in &plan.dirs {
            let size: u64 = fids.iter().map(Fid::len).sum();
            plan.dir_at.insert(*d, (u32::try_from(next).unwrap_or(u32::MAX), size));
            next += size.div_ceil(BS);
        }
        plan.blocks = u32::try_from(next).map_err(|_| Error::unsupported("too many files for one UDF partition"))?;
        Ok(plan)
    }

    fn add(&mut self, id: NodeId) -> bool {
        if self.index.contains_key(&id) {
            return false;
        }
        // More nodes than u32 numbers is refused when the plan counts its blocks.
        self.index.insert(id, u32::try_from(self.nodes.len()).unwrap_or(u32::MAX));
        self.nodes.push(id);
        true
    }

    fn fe_block(&self, id: NodeId) -> u32 {
        2 + self.index[&id]
    }

    /// The UDF sectors: `(sector, bytes)` to place. `vrs` is the sector after the ISO
    /// terminator, `vds` the first of the [`SYSTEM_SECTORS`], `end_anchor` the last UDF
    /// sector (the partition ends before it); `files` gives each file's data sector.
    pub(crate) fn build(
        &self,
        tree: &Tree,
        files: &HashMap<NodeId, (u32, u64)>,
        label: &str,
        now: i64,
        (vrs, vds, end_anchor): (u32, u32, u32),
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut out = Vec::new();
        for (i, id) in [b"BEA01", b"NSR02", b"TEA01"].iter().enumerate() {
            let mut b = vec![0u8; BS_BYTES];
            b[1..6].copy_from_slice(*id);
            b[6] = 1;
            out.push((vrs + fit::<u32, u64>(u64_from_usize(i), "UDF volume recognition sector")?, b));
        }
        let now_ts = ts(Timestamp { sec: now, nsec: 0 });
        let part_len = end_anchor - PART_START;
        let label32: String = label.chars().take(30).collect();
        // Volume descriptor sequences: main then reserve, same contents.
        let lvid_at = vds + 2 * VDS_SECTORS;
        for start in [vds, vds + VDS_SECTORS] {
            let mut seq = 0u32;
            let mut put = |ty: u16, body: Vec<u8>, out: &mut Vec<(u32, Vec<u8>)>| {
                let at = start + seq;
                let mut b = body;
                b[16..20].copy_from_slice(&seq.to_le_bytes());
                tag(&mut b, ty, at);
                out.push((at, b));
                seq += 1;
            };
            let mut pvd = vec![0u8; 512];
            pvd[20..24].copy_from_slice(&0u32.to_le_bytes());
            pvd[24..56].copy_from_slice(&dstring(&label32, 32));
            pvd[56..58].copy_from_slice(&1u16.to_le_bytes());
            pvd[58..60].copy_from_slice(&1u16.to_le_bytes());
            pvd[60..62].copy_from_slice(&2u16.to_le_bytes());
            pvd[62..64].copy_from_slice(&2u16.to_le_bytes());
            pvd[64..68].copy_from_slice(&1u32.to_le_bytes());
            pvd[68..72].copy_from_slice(&1u32.to_le_bytes());
            // Volume set identifier: UDF wants 16 unique characters first (a hex stamp).
            let set = format!("{:016X}{label32}", now.cast_unsigned().wrapping_mul(0x9E37_79B9_7F4A_7C15));
            pvd[72..200].copy_from_slice(&dstring(&set, 128));
            pvd[200..264].copy_from_slice(&charspec());
            pvd[264..328].copy_from_slice(&charspec());
            pvd[376..388].copy_from_slice(&now_ts);
            pvd[388..420].copy_from_slice(&impl_id());
            put(1, pvd, &mut out);
            let mut iuvd = vec![0u8; 512];
            iuvd[20..52].copy_from_slice(&udf_id(b"*UDF LV Info"));
            iuvd[52..116].copy_from_slice(&charspec());
            iuvd[116..244].copy_from_slice(&dstring(label, 128));
            iuvd[352..384].copy_from_slice(&impl_id());
            put(4, iuvd, &mut out);
            let mut pd = vec![0u8; 512];
            pd[20..22].copy_from_slice(&1u16.to_le_bytes());
            pd[22..24].copy_from_slice(&0u16.to_le_bytes());
            pd[24..56].copy_from_slice(&regid(0, b"+NSR02", [0; 8]));
            pd[184..188].copy_from_slice(&1u32.to_le_bytes());
            pd[188..192].copy_from_slice(&PART_START.to_le_bytes());
            pd[192..196].copy_from_slice(&part_len.to_le_bytes());
            pd[196..228].copy_from_slice(&impl_id());
            put(5, pd, &mut out);
            let mut lvd = vec![0u8; 446];
            lvd[20..84].copy_from_slice(&charspec());
            lvd[84..212].copy_from_slice(&dstring(label, 128));
            lvd[212..216].copy_from_slice(&BS32.to_le_bytes());
            lvd[216..248].copy_from_slice(&domain_id());
            lvd[248..264].copy_from_slice(&long_ad(BS32, 0));
            lvd[264..268].copy_from_slice(&6u32.to_le_bytes());
            lvd[268..272].copy_from_slice(&1u32.to_le_bytes());
            lvd[272..304].copy_from_slice(&impl_id());
            lvd[432..436].copy_from_slice(&(2 * BS32).to_le_bytes());
            lvd[436..440].copy_from_slice(&lvid_at.to_le_bytes());
            lvd[440..446].copy_from_slice(&[1, 6, 1, 0, 0, 0]);
            put(6, lvd, &mut out);
            let usd = vec![0u8; 24];
            put(7, usd, &mut out);
            put(8, vec![0u8; 512], &mut out);
        }
        // Integrity: closed, with the counts and the next unique id.
        let mut lvid = vec![0u8; 80 + 8 + 46];
        lvid[16..28].copy_from_slice(&now_ts);
        lvid[28..32].copy_from_slice(&1u32.to_le_bytes());
        lvid[40..48].copy_from_slice(&(16 + u64_from_usize(self.nodes.len())).to_le_bytes());
        lvid[72..76].copy_from_slice(&1u32.to_le_bytes());
        lvid[76..80].copy_from_slice(&46u32.to_le_bytes());
        lvid[80..84].copy_from_slice(&0u32.to_le_bytes());
        lvid[84..88].copy_from_slice(&part_len.to_le_bytes());
        lvid[88..120].copy_from_slice(&impl_id());
        lvid[120..124].copy_from_slice(&self.files.to_le_bytes());
        lvid[124..128].copy_from_slice(&self.dirs_n.to_le_bytes());
        for (i, v) in [UDF_REV, UDF_REV, UDF_REV].iter().enumerate() {
            lvid[128 + 2 * i..130 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        tag(&mut lvid, 9, lvid_at);
        out.push((lvid_at, lvid));
        let mut td = vec![0u8; 512];
        tag(&mut td, 8, lvid_at + 1);
        out.push((lvid_at + 1, td));
        // Anchors.
        for at in [256, end_anchor] {
            let mut a = vec![0u8; 512];
            a[16..20].copy_from_slice(&(VDS_SECTORS * BS32).to_le_bytes());
            a[20..24].copy_from_slice(&vds.to_le_bytes());
            a[24..28].copy_from_slice(&(VDS_SECTORS * BS32).to_le_bytes());
            a[28..32].copy_from_slice(&(vds + VDS_SECTORS).to_le_bytes());
            tag(&mut a, 2, at);
            out.push((at, a));
        }
        // Partition contents; tag locations are partition-relative.
        let mut fsd = vec![0u8; 512];
        fsd[16..28].copy_from_slice(&now_ts);
        fsd[28..30].copy_from_slice(&3u16.to_le_bytes());
        fsd[30..32].copy_from_slice(&3u16.to_le_bytes());
        fsd[32..36].copy_from_slice(&1u32.to_le_bytes());
        fsd[36..40].copy_from_slice(&1u32.to_le_bytes());
        fsd[48..112].copy_from_slice(&charspec());
        fsd[112..240].copy_from_slice(&dstring(label, 128));
        fsd[240..304].copy_from_slice(&charspec());
        fsd[304..336].copy_from_slice(&dstring(&label32, 32));
        fsd[400..416].copy_from_slice(&long_ad(BS32, self.fe_block(NodeId::ROOT)));
        fsd[416..448].copy_from_slice(&domain_id());
        tag(&mut fsd, 256, 0);
        out.push((PART_START, fsd));
        let mut td = vec![0u8; 512];
        tag(&mut td, 8, 1);
        out.push((PART_START + 1, td));
        for (i, &id) in self.nodes.iter().enumerate() {
            let b = self.file_entry(tree, id, 16 + u64_from_usize(i), files)?;
            out.push((PART_START + 2 + fit::<u32, u64>(u64_from_usize(i), "UDF file entry block")?, b));
        }
        for (d, fids) in &self.dirs {
            let (first, size) = self.dir_at[d];
            let mut s: Vec<u8> = Vec::with_capacity(usize_from_u64(size, "UDF directory")?);
            for f in fids {
                let start = s.len();
                let mut b = vec![0u8; usize_from_u64(f.len(), "UDF file identifier descriptor")?];
                b[16..18].copy_from_slice(&1u16.to_le_bytes());
                b[18] = if f.parent {
                    0x0A
                } else if f.dir {
                    0x02
                } else {
                    0
                };
                b[19] = fit(u64_from_usize(f.name.len()), "UDF file identifier length")?;
                let target = if f.parent { self.parent_of(tree, *d) } else { f.child };
                let uid = 16 + self.index[&target];
                let mut ad = long_ad(BS32, self.fe_block(target));
                // UDF's unique id (low 32 bits) in the address's implementation use.
                ad[12..16].copy_from_slice(&uid.to_le_bytes());
                b[20..36].copy_from_slice(&ad);
                b[38..38 + f.name.len()].copy_from_slice(&f.name);
                let blk = first + fit::<u32, u64>(u64_from_usize(start) / BS, "UDF directory block")?;
                tag(&mut b, 257, blk);
                s.extend_from_slice(&b);
            }
            s.resize(s.len().next_multiple_of(BS_BYTES), 0);
            out.push((PART_START + first, s));
        }
        Ok(out)
    }

    fn parent_of(&self, tree: &Tree, d: NodeId) -> NodeId {
        if d == NodeId::ROOT { d } else { tree.node(d).as_dir().map(|x| x.parent()).unwrap_or(NodeId::ROOT) }
    }

    fn file_entry(&self, tree: &Tree, id: NodeId, unique: u64, files: &HashMap<NodeId, (u32, u64)>) -> Result<Vec<u8>> {
        let n = tree.node(id);
        let m = &n.meta;
        let mut icb_flags: u16 = 0;
        let (ftype, size, ads): (u8, u64, Vec<u8>) = match &n.kind {
            Kind::Dir(_) => {
                let (first, size) = self.dir_at[&id];
                (4, size, short_ads(size, first))
            }
            Kind::File(f) => {
                let (lba, _) = files.get(&id).copied().unwrap_or((PART_START, 0));
                if f.size > 0 && f.size.div_ceil(MAX_AD) > MAX_ADS {
                    return Err(Error::unsupported(format!(
                        "a file of {} bytes needs more UDF allocation descriptors than one file entry holds",
                        f.size
                    )));
                }
                let ads = if f.size == 0 { Vec::new() } else { short_ads(f.size, lba - PART_START) };
                (5, f.size, ads)
            }
            Kind::Symlink(t) => {
                icb_flags = 3;
                let d = path_components(t)?;
                (12, u64_from_usize(d.len()), d)
            }
            Kind::BlockDev { .. } => (6, 0, Vec::new()),
            Kind::CharDev { .. } => (7, 0, Vec::new()),
            Kind::Fifo => (9, 0, Vec::new()),
            Kind::Socket => (10, 0, Vec::new()),
        };
        if ftype != 12 && ads.is_empty() {
            icb_flags = 0;
        }
        for (bit, flag) in [(0o4000, 0x40), (0o2000, 0x80), (0o1000, 0x100)] {
            if m.mode & bit != 0 {
                icb_flags |= flag;
            }
        }
        let mut b = vec![0u8; 176 + ads.len()];
        // ICB tag: strategy 4, one entry, file type, flags.
        b[20..22].copy_from_slice(&4u16.to_le_bytes());
        b[24..26].copy_from_slice(&1u16.to_le_bytes());
        b[27] = ftype;
        b[34..36].copy_from_slice(&icb_flags.to_le_bytes());
        b[36..40].copy_from_slice(&m.uid.to_le_bytes());
        b[40..44].copy_from_slice(&m.gid.to_le_bytes());
        let p = m.mode;
        // Permissions: other, group, owner in 5-bit groups (execute, write, read,
        // change attributes, delete); the last two follow write, as Linux sets them.
        let class = |rwx: u32| (rwx & 7) | if rwx & 2 != 0 { 0x18 } else { 0 };
        let perms = class(p & 7) | class((p >> 3) & 7) << 5 | class((p >> 6) & 7) << 10;
        b[44..48].copy_from_slice(&perms.to_le_bytes());
        let links = if id == NodeId::ROOT { 1 } else { self.links.get(&id).copied().unwrap_or(1) };
        // A directory also counts its subdirectories' parent entries.
        let links = if let Kind::Dir(_) = n.kind {
            let subdirs = self
                .dirs
                .iter()
                .find(|(d, _)| *d == id)
                .map(|(_, f)| f.iter().filter(|f| f.dir && !f.parent).count())
                .unwrap_or(0);
            u16::try_from(usize::from(links) + subdirs).unwrap_or(u16::MAX)
        } else {
            links
        };
        b[48..50].copy_from_slice(&links.to_le_bytes());
        b[56..64].copy_from_slice(&size.to_le_bytes());
        let recorded = if icb_flags & 7 == 3 { 0 } else { size.div_ceil(BS) };
        b[64..72].copy_from_slice(&recorded.to_le_bytes());
        // Access time = modification time, as on the Rock Ridge side: reading the source
        // to build the disc changes its atimes, and the same tree must give the same disc.
        b[72..84].copy_from_slice(&ts(m.mtime));
        b[84..96].copy_from_slice(&ts(m.mtime));
        b[96..108].copy_from_slice(&ts(m.ctime.unwrap_or(m.mtime)));
        b[108..112].copy_from_slice(&1u32.to_le_bytes());
        b[128..160].copy_from_slice(&impl_id());
        b[160..168].copy_from_slice(&unique.to_le_bytes());
        b[172..176].copy_from_slice(
            &fit::<u32, u64>(u64_from_usize(ads.len()), "UDF allocation descriptors length")?.to_le_bytes(),
        );
        b[176..].copy_from_slice(&ads);
        let blk = self.fe_block(id);
        tag(&mut b, 261, blk);
        Ok(b)
    }
}

/// Short allocation descriptors for `size` bytes from partition block `at`, each under
/// 1 GiB.
fn short_ads(size: u64, at: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut left, mut blk) = (size, u64::from(at));
    while left > 0 {
        let part = left.min(MAX_AD);
        // part is under MAX_AD (1 GiB); the partition's blocks were counted in a u32.
        out.extend_from_slice(&diskcast_layout::low_u32(part).to_le_bytes());
        out.extend_from_slice(&diskcast_layout::low_u32(blk).to_le_bytes());
        left -= part;
        blk += part / BS;
    }
    out
}

/// A symlink target as ECMA-167 path components: 2 for the root, 3 for `..`, 4 for `.`,
/// 5 for a name in CS0.
fn path_components(target: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if target.starts_with(b"/") {
        out.extend_from_slice(&[2, 0, 0, 0]);
    }
    for c in target.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        match c {
            b"." => out.extend_from_slice(&[4, 0, 0, 0]),
            b".." => out.extend_from_slice(&[3, 0, 0, 0]),
            _ => {
                let id = cs0(&String::from_utf8_lossy(c));
                if id.len() > 255 {
                    return Err(Error::argument("a symlink target component is longer than UDF allows (255 bytes)"));
                }
                out.extend_from_slice(&[5, fit(u64_from_usize(id.len()), "UDF path component length")?, 0, 0]);
                out.extend_from_slice(&id);
            }
        }
    }
    if out.len() > BS_BYTES - 176 {
        return Err(Error::unsupported("a symlink target too long for a UDF file entry (1872 bytes)"));
    }
    Ok(out)
}

/// A descriptor tag (ECMA-167 3/7.2): CRC-ITU over the body, then the checksum.
fn tag(b: &mut [u8], id: u16, loc: u32) {
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[2..4].copy_from_slice(&TAG_VERSION.to_le_bytes());
    // Descriptors are at most one 2048-byte block.
    let crc_len = u16::try_from(b.len() - 16).unwrap_or(u16::MAX);
    let crc = crc_itu(&b[16..]);
    b[8..10].copy_from_slice(&crc.to_le_bytes());
    b[10..12].copy_from_slice(&crc_len.to_le_bytes());
    b[12..16].copy_from_slice(&loc.to_le_bytes());
    b[4] = 0;
    b[4] = b[..16].iter().fold(0u8, |s, x| s.wrapping_add(*x));
}

/// CRC-ITU-T (x^16 + x^12 + x^5 + 1, initial 0, not reflected), as ECMA-167 7.2.6 gives.
fn crc_itu(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// A 12-byte timestamp in UTC (type 1, offset 0).
fn ts(t: Timestamp) -> [u8; 12] {
    let (y, mo, d) = crate::write::civil(t.sec.div_euclid(86400));
    let s = t.sec.rem_euclid(86400);
    let mut b = [0u8; 12];
    b[0..2].copy_from_slice(&0x1000u16.to_le_bytes());
    // Every field is bounded by the clamp or the calendar, so the byte folds lose nothing.
    b[2..4].copy_from_slice(&u16::try_from(y.clamp(1, 9999)).unwrap_or(9999).to_le_bytes());
    let day = s.cast_unsigned();
    b[4] = low_u8(u64::from(mo));
    b[5] = low_u8(u64::from(d));
    b[6] = low_u8(day / 3600);
    b[7] = low_u8(day / 60 % 60);
    b[8] = low_u8(day % 60);
    let us = u64::from(t.nsec / 1000);
    b[9] = low_u8(us / 10_000);
    b[10] = low_u8(us / 100 % 100);
    b[11] = low_u8(us % 100);
    b
}

fn charspec() -> [u8; 64] {
    let mut c = [0u8; 64];
    c[1..24].copy_from_slice(b"OSTA Compressed Unicode");
    c
}

fn regid(flags: u8, ident: &[u8], suffix: [u8; 8]) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[0] = flags;
    r[1..1 + ident.len()].copy_from_slice(ident);
    r[24..32].copy_from_slice(&suffix);
    r
}

fn impl_id() -> [u8; 32] {
    // Implementation suffix: OS class 4 (UNIX), OS identifier 5 (Linux).
    regid(0, b"*diskcast", [4, 5, 0, 0, 0, 0, 0, 0])
}

fn domain_id() -> [u8; 32] {
    let r = UDF_REV.to_le_bytes();
    // Domain flags 0: the volume and file set are not hard- or soft-write-protected.
    regid(0, b"*OSTA UDF Compliant", [r[0], r[1], 0, 0, 0, 0, 0, 0])
}

fn udf_id(ident: &[u8]) -> [u8; 32] {
    let r = UDF_REV.to_le_bytes();
    regid(0, ident, [r[0], r[1], 4, 5, 0, 0, 0, 0])
}

fn long_ad(len: u32, block: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0..4].copy_from_slice(&len.to_le_bytes());
    a[4..8].copy_from_slice(&block.to_le_bytes());
    a
}
