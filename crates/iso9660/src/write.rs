//! Writing ISO 9660 discs from a [`Tree`]: the primary tree with Rock Ridge (RRIP 1.10
//! entries as genisoimage and xorriso write them: NM, PX, TF, SL, PN, with CE areas for
//! what does not fit a record), a Joliet tree, El Torito BIOS (no emulation, boot info
//! table) and UEFI entries, and a GPT in the system area for UEFI booting from a USB
//! stick. [`IsoBuilder`] is the writer as an [`FsBuilder`] like FAT's and ext4's: the
//! result is a [`BuiltFs`] whose [`PlannedImage`] holds metadata synthesized in memory and
//! file data read through from the tree, so the copy engine writes it to any block format.

use crate::eltorito::boot_info_table;
use crate::spec::{
    BootCatalogEntry, BootRecord, CD001, DescriptorHead, DirRecordHead, EL_TORITO, PathRecordL, PathRecordM,
    SectionHeader, ValidationEntry, VolumeDescriptor,
};
use diskcast_block::{Error, Result};
use diskcast_layout::{Both16, Both32, IntoBytes, fit, high_u32, le32, low_u8, low_u32, u64_from_usize, usize_from};
use diskcast_tree::{
    BuildOptions, BuiltFs, FileData, FsBuilder, Kind, Meta, NodeId, Piece, PlannedImage, Timestamp, Tree, display_name,
};
use std::collections::{HashMap, HashSet};

const SECTOR: u64 = 2048;
/// Largest extent one directory record describes; bigger files get several records.
const MAX_EXTENT: u64 = 0xFFFF_F800;
/// ER entry of RRIP 1.10 (the identifier, description and source strings the RRIP
/// standard gives for "RRIP_1991A").
const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DES: &[u8] = b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SRC: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// Volume identifier when [`BuildOptions::label`] gives none (genisoimage's default).
pub const DEFAULT_LABEL: &str = "CDROM";

/// What only discs have, beside the [`BuildOptions`] every filesystem takes (the label,
/// upper-cased into d-characters for the primary descriptor, and the time recorded in the
/// volume descriptors).
#[derive(Debug, Clone)]
pub struct IsoOptions {
    /// Rock Ridge entries in the primary tree (Unix names, modes, owners, links, times).
    pub rock_ridge: bool,
    /// A Joliet tree (UCS-2 names for Windows).
    pub joliet: bool,
    /// Path in the tree of a no-emulation BIOS boot image (isolinux.bin).
    pub boot_bios: Option<String>,
    /// Patch a boot info table into the BIOS image (mkisofs `-boot-info-table`).
    pub boot_info_table: bool,
    /// 512-byte sectors of the BIOS image the firmware loads (mkisofs `-boot-load-size`).
    pub boot_load_size: u16,
    /// Path in the tree of a FAT image holding `EFI/BOOT/BOOTX64.EFI`: the UEFI entry.
    pub boot_uefi: Option<String>,
    /// Put a protective MBR and a GPT naming the UEFI image as EFI System Partition in
    /// the system area, so the image written raw to a USB stick boots on UEFI.
    pub hybrid: bool,
    /// With `hybrid`: MBR boot code (isolinux's isohdpfx.bin, at most 432 bytes) that
    /// starts the BIOS image from a USB stick, patched as isohybrid does.
    pub hybrid_mbr: Option<Vec<u8>>,
    /// A UDF 1.02 file system over the same file data (a UDF bridge disc, as Windows
    /// installation discs are).
    pub udf: bool,
    /// What a remastered disc keeps of its input: the system area, the El Torito entries
    /// and appended partitions. It replaces `boot_bios`, `boot_uefi` and `hybrid`.
    pub keep: Option<crate::hybrid::Kept>,
}

/// Largest boot image a boot info table is patched into (read whole into memory).
const MAX_PATCHED_IMAGE: u64 = 64 << 20;
/// Where xorriso's `--grub2-boot-info` puts the image's 512-byte LBA + 5 (GRUB's
/// diskboot.img block list inside eltorito.img).
const GRUB2_BOOT_INFO: usize = 2548;

/// Bytes of MBR boot code isohybrid's MBR holds: the boot image's 512-byte LBA follows
/// at 432 (8 bytes), then the disk signature at 440.
pub const HYBRID_MBR_CODE: usize = 432;
/// isolinux.bin carries this little-endian word at byte 0x40 when it has the entry point
/// the isohybrid MBR code jumps to (isolinux 3.72 and later).
pub const ISOLINUX_HYBRID_MAGIC: u32 = 0x7078_c0fb;

/// True when `image` (the start of a BIOS boot image) is an isolinux.bin the isohybrid MBR
/// code can start.
pub fn is_isohybrid_capable(image: &[u8]) -> bool {
    image.get(0x40..0x44).is_some_and(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]) == ISOLINUX_HYBRID_MAGIC)
}

impl Default for IsoOptions {
    fn default() -> Self {
        IsoOptions {
            rock_ridge: true,
            joliet: true,
            boot_bios: None,
            boot_info_table: true,
            boot_load_size: 4,
            boot_uefi: None,
            hybrid: false,
            hybrid_mbr: None,
            udf: false,
            keep: None,
        }
    }
}

/// Writes ISO 9660 discs: Rock Ridge and Joliet by default (`mkfs iso9660`), with boot
/// entries, a hybrid system area or a UDF bridge as its [`IsoOptions`] ask (`iso create`,
/// `iso remaster`). A disc is as large as its content: [`BuildOptions::size`] is refused.
#[derive(Debug, Clone, Default)]
pub struct IsoBuilder {
    /// What to write beside the common options.
    pub disc: IsoOptions,
}

impl IsoBuilder {
    /// A builder writing `disc`.
    pub fn new(disc: IsoOptions) -> Self {
        IsoBuilder { disc }
    }
}

impl FsBuilder for IsoBuilder {
    fn name(&self) -> &'static str {
        "iso9660"
    }

    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
        if opts.size.is_some() {
            return Err(Error::argument("an ISO 9660 disc is as large as its content: a size does not apply"));
        }
        let label = opts.label.clone().unwrap_or_else(|| DEFAULT_LABEL.to_string());
        plan_iso(tree, &self.disc, label, opts.now)
    }
}

/// One entry of a directory in the written trees.
struct Entry {
    node: NodeId,
    /// Index into `dirs` when a directory.
    dir: Option<usize>,
    iso_name: Vec<u8>,
    joliet_name: Vec<u8>,
    /// Rock Ridge system use bytes (NM, PX, TF, SL, PN).
    rr: Vec<u8>,
}

struct Dir {
    node: NodeId,
    parent: usize,
    entries: Vec<Entry>,
    /// Sizes and locations, filled in by the layout.
    size: u64,
    lba: u32,
    jsize: u64,
    jlba: u32,
}

/// Plans an ISO of `tree` labelled `label`, recording `now` (seconds since 1970).
fn plan_iso(tree: &Tree, opts: &IsoOptions, label: String, now: i64) -> Result<BuiltFs> {
    let mut warnings = Vec::new();
    let mut dirs: Vec<Dir> =
        vec![Dir { node: NodeId::ROOT, parent: 0, entries: Vec::new(), size: 0, lba: 0, jsize: 0, jlba: 0 }];
    // Breadth first, so directory numbers are in path table order.
    let mut i = 0;
    let links = tree.link_counts();
    while i < dirs.len() {
        let node = dirs[i].node;
        let mut entries = Vec::new();
        let mut kept: Vec<(Vec<u8>, bool)> = Vec::new();
        for (name, child) in tree.dir(node)?.entries() {
            let n = tree.node(child);
            let is_dir = n.as_dir().is_some();
            if !opts.rock_ridge && !matches!(n.kind, Kind::Dir(_) | Kind::File(_)) {
                warnings.push(format!("{}: a {} needs Rock Ridge; skipped", display_name(name), n.kind.name()));
                continue;
            }
            let dir = if is_dir {
                dirs.push(Dir { node: child, parent: i, entries: Vec::new(), size: 0, lba: 0, jsize: 0, jlba: 0 });
                Some(dirs.len() - 1)
            } else {
                None
            };
            let rr =
                if opts.rock_ridge { rr_entries(name, &n.meta, &n.kind, links[child.index()])? } else { Vec::new() };
            entries.push(Entry { node: child, dir, iso_name: Vec::new(), joliet_name: Vec::new(), rr });
            kept.push((name.to_vec(), is_dir));
        }
        let iso = unique(kept.iter().map(|(n, d)| iso_name(n, *d)).collect());
        let jol = unique(kept.iter().map(|(n, d)| joliet_name(n, *d)).collect());
        for ((e, a), b) in entries.iter_mut().zip(iso).zip(jol) {
            e.iso_name = a;
            e.joliet_name = b;
        }
        dirs[i].entries = entries;
        i += 1;
    }
    Layout::new(tree, opts, label, now, dirs, warnings)?.build()
}

/// The d-character name of the primary tree: upper case, `[A-Z0-9_]`, one dot, `;1` for
/// files.
fn iso_name(name: &[u8], dir: bool) -> Vec<u8> {
    let s = String::from_utf8_lossy(name);
    let clean = |t: &str, max: usize| -> String {
        t.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).take(max).collect()
    };
    if dir {
        return clean(&s, 31).into_bytes();
    }
    let (base, ext) = match s.rfind('.') {
        Some(i) if i > 0 => (&s[..i], &s[i + 1..]),
        _ => (&s[..], ""),
    };
    let ext = clean(ext, 8);
    let base = clean(base, 30 - ext.len().min(8));
    format!("{base}.{ext}").into_bytes()
}

/// The Joliet name in UCS-2 big-endian: at most 64 characters, the characters Joliet
/// forbids replaced by `_`.
fn joliet_name(name: &[u8], _dir: bool) -> Vec<u8> {
    let s = String::from_utf8_lossy(name);
    let units: Vec<u16> = s
        .chars()
        .map(|c| if matches!(c, '*' | '/' | ':' | ';' | '?' | '\\') { '_' } else { c })
        .collect::<String>()
        .encode_utf16()
        .take(64)
        .collect();
    // Never end in the middle of a surrogate pair.
    let units =
        if units.last().is_some_and(|u| (0xD800..0xDC00).contains(u)) { &units[..units.len() - 1] } else { &units[..] };
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// Makes names unique within a directory (ISO names are case-folded and truncated, so
/// different tree names can collide) by replacing their tail with a counter.
fn unique(names: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let mut cand = n.clone();
        let mut k = 1u32;
        while !seen.insert(cand.clone()) {
            let suffix = format!("{k:03}");
            let mut c = n.clone();
            let joliet = n.len() % 2 == 0 && n.chunks(2).all(|p| p[0] == 0);
            if joliet {
                let sfx: Vec<u8> = suffix.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
                c.truncate(c.len().saturating_sub(sfx.len()) & !1);
                c.extend_from_slice(&sfx);
            } else {
                let dot = c.iter().rposition(|&b| b == b'.').unwrap_or(c.len());
                let keep = dot.saturating_sub(suffix.len());
                c.splice(keep..dot, suffix.bytes());
            }
            cand = c;
            k += 1;
        }
        out.push(cand);
    }
    out
}

/// A both-byte-order field's bytes, for Rock Ridge entries built byte by byte.
fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(Both32::new(v).as_bytes());
    b
}

/// A value already bounded (a month, an hour, a clamped year) as a date byte.
fn date_byte(v: i64) -> u8 {
    u8::try_from(v.clamp(0, 255)).unwrap_or(u8::MAX)
}

/// The sector size as a buffer length.
const SECTOR_BYTES: usize = 2048;

/// What a disc past sector 2^32 gets.
const TOO_LARGE: &str = "the disc would be larger than 8 TiB (ISO 9660 numbers its 2048-byte sectors with 32 bits)";

/// The sector `bytes` (whole sectors) after `lba`; past sector 2^32 ISO 9660 cannot number
/// it, so the plan stops before anything is written.
fn sectors_after(lba: u32, bytes: u64) -> Result<u32> {
    u32::try_from(bytes / SECTOR).ok().and_then(|n| lba.checked_add(n)).ok_or_else(|| Error::unsupported(TOO_LARGE))
}

/// A 7-byte directory record date in UTC.
fn short_date(t: Timestamp) -> [u8; 7] {
    let days = t.sec.div_euclid(86400);
    let secs = t.sec.rem_euclid(86400);
    let (y, m, d) = civil(days);
    let year = date_byte(y - 1900);
    let (m, d) = (date_byte(i64::from(m)), date_byte(i64::from(d)));
    [year, m, d, date_byte(secs / 3600), date_byte(secs / 60 % 60), date_byte(secs % 60), 0]
}

/// A 17-byte volume descriptor date in UTC.
fn long_date(t: i64) -> [u8; 17] {
    let (y, m, d) = civil(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    let text = format!("{:04}{:02}{:02}{:02}{:02}{:02}00", y.clamp(0, 9999), m, d, s / 3600, s / 60 % 60, s % 60);
    let mut b = [0u8; 17];
    b[..16].copy_from_slice(text.as_bytes());
    b
}

pub(crate) use diskcast_tree::civil_from_days as civil;

/// Rock Ridge entries for one node: NM (split into pieces of 250 bytes), PX, TF, and SL
/// or PN by kind.
fn rr_entries(name: &[u8], meta: &Meta, kind: &Kind, nlink: u32) -> Result<Vec<u8>> {
    // PX and TF first, so they stay in the record when a long name moves to a
    // continuation area.
    let mut out = px(meta, kind.type_bits() | (meta.mode & 0o7777), nlink);
    out.extend_from_slice(&tf(meta));
    let mut rest = name;
    while !rest.is_empty() {
        let n = rest.len().min(250);
        let cont = u8::from(n < rest.len());
        out.extend_from_slice(&[b'N', b'M', fit(u64_from_usize(5 + n), "Rock Ridge NM length")?, 1, cont]);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    match kind {
        Kind::Symlink(target) => out.extend_from_slice(&sl(target)?),
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            // Linux's dev_t encoding, split in two 32-bit halves.
            let (ma, mi) = (u64::from(*major), u64::from(*minor));
            let dev = (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12) | ((ma & !0xfff) << 32);
            out.extend_from_slice(&[b'P', b'N', 20, 1]);
            out.extend_from_slice(&both32(high_u32(dev)));
            out.extend_from_slice(&both32(low_u32(dev)));
        }
        _ => {}
    }
    Ok(out)
}

fn px(meta: &Meta, mode: u32, nlink: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both32(mode));
    e.extend_from_slice(&both32(nlink.max(1)));
    e.extend_from_slice(&both32(meta.uid));
    e.extend_from_slice(&both32(meta.gid));
    e
}

fn tf(meta: &Meta) -> Vec<u8> {
    // Modify, access, attributes, in short form. The access time is written as the
    // modification time: reading the source changes it, and two builds of one tree must
    // be identical.
    let mut e = vec![b'T', b'F', 26, 1, 0x0E];
    e.extend_from_slice(&short_date(meta.mtime));
    e.extend_from_slice(&short_date(meta.mtime));
    e.extend_from_slice(&short_date(meta.ctime.unwrap_or(meta.mtime)));
    e
}

/// SL entries for a link target, components split at `/`, each entry at most 255 bytes.
fn sl(target: &[u8]) -> Result<Vec<u8>> {
    let mut comps: Vec<Vec<u8>> = Vec::new();
    if target.starts_with(b"/") {
        comps.push(vec![8, 0]);
    }
    for c in target.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let mut rest = c;
        loop {
            match rest {
                b"." => comps.push(vec![2, 0]),
                b".." => comps.push(vec![4, 0]),
                _ => {
                    let n = rest.len().min(248);
                    let mut r =
                        vec![u8::from(n < rest.len()), fit(u64_from_usize(n), "Rock Ridge SL component length")?];
                    r.extend_from_slice(&rest[..n]);
                    comps.push(r);
                    rest = &rest[n..];
                    if !rest.is_empty() {
                        continue;
                    }
                }
            }
            break;
        }
    }
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let flush = |cur: &mut Vec<u8>, out: &mut Vec<u8>, more: bool| -> Result<()> {
        out.extend_from_slice(&[
            b'S',
            b'L',
            fit(u64_from_usize(5 + cur.len()), "Rock Ridge SL length")?,
            1,
            u8::from(more),
        ]);
        out.append(cur);
        Ok(())
    };
    for c in comps {
        if 5 + cur.len() + c.len() > 255 {
            flush(&mut cur, &mut out, true)?;
        }
        cur.extend_from_slice(&c);
    }
    flush(&mut cur, &mut out, false)?;
    Ok(out)
}

struct Layout<'t> {
    tree: &'t Tree,
    opts: &'t IsoOptions,
    label: String,
    now: i64,
    dirs: Vec<Dir>,
    warnings: Vec<String>,
    /// Continuation areas: (record key, bytes); placed in CE sectors.
    ce: Vec<Vec<u8>>,
    ce_pos: Vec<(u32, u32)>,
    ce_sizes: Vec<u32>,
    /// File data: node → (lba, size).
    files: HashMap<NodeId, (u32, u64)>,
    /// Boot image overrides (the BIOS image with its boot info table).
    patched: HashMap<NodeId, Vec<u8>>,
}

/// A record before layout: identifier, flags, data location/size key, system use.
struct Rec {
    ident: Vec<u8>,
    flags: u8,
    lba: u32,
    len: u32,
    time: Timestamp,
    su: Vec<u8>,
}

impl<'t> Layout<'t> {
    fn new(
        tree: &'t Tree,
        opts: &'t IsoOptions,
        label: String,
        now: i64,
        dirs: Vec<Dir>,
        warnings: Vec<String>,
    ) -> Result<Self> {
        Ok(Layout {
            tree,
            opts,
            label,
            now,
            dirs,
            warnings,
            ce: Vec::new(),
            ce_pos: Vec::new(),
            ce_sizes: Vec::new(),
            files: HashMap::new(),
            patched: HashMap::new(),
        })
    }

    /// Splits system use bytes into what fits in a record (with `base` bytes before it)
    /// and a continuation area, returning the in-record bytes with a CE placeholder.
    fn split_su(&mut self, su: Vec<u8>, base: usize) -> Result<Vec<u8>> {
        let room = 255 - base;
        if su.len() <= room {
            return Ok(su);
        }
        // Keep whole entries that fit with 28 bytes left for the CE entry.
        let mut pos = 0;
        while pos + 4 <= su.len() {
            let len = usize::from(su[pos + 2]);
            if pos + len + 28 > room {
                break;
            }
            pos += len;
        }
        let mut inline = su[..pos].to_vec();
        let idx: u32 = fit(u64_from_usize(self.ce.len()), "continuation area count")?;
        self.ce.push(su[pos..].to_vec());
        // CE with the area's index for now; patched once areas are placed.
        inline.extend_from_slice(&[b'C', b'E', 28, 1]);
        inline.extend_from_slice(&both32(idx));
        inline.extend_from_slice(&both32(0));
        inline.extend_from_slice(&both32(0));
        Ok(inline)
    }

    fn records(&mut self, d: usize, joliet: bool) -> Result<Vec<Rec>> {
        let rr = self.opts.rock_ridge && !joliet;
        let node = self.dirs[d].node;
        let parent = self.dirs[d].parent;
        let meta = &self.tree.node(node).meta;
        let mut dot_su = Vec::new();
        if rr {
            if d == 0 {
                dot_su.extend_from_slice(&[b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
            }
            dot_su.extend_from_slice(&px(meta, 0o040000 | meta.mode & 0o7777, 2));
            dot_su.extend_from_slice(&tf(meta));
            if d == 0 {
                let len = |n: usize| fit::<u8, u64>(u64_from_usize(n), "Rock Ridge ER length");
                let mut er = vec![b'E', b'R', len(8 + ER_ID.len() + ER_DES.len() + ER_SRC.len())?, 1];
                er.extend_from_slice(&[len(ER_ID.len())?, len(ER_DES.len())?, len(ER_SRC.len())?, 1]);
                er.extend_from_slice(ER_ID);
                er.extend_from_slice(ER_DES);
                er.extend_from_slice(ER_SRC);
                dot_su.extend_from_slice(&er);
            }
        }
        let dot_su = if rr { self.split_su(dot_su, 34)? } else { dot_su };
        let (lba, size, plba, psize) = if joliet {
            (self.dirs[d].jlba, self.dirs[d].jsize, self.dirs[parent].jlba, self.dirs[parent].jsize)
        } else {
            (self.dirs[d].lba, self.dirs[d].size, self.dirs[parent].lba, self.dirs[parent].size)
        };
        let pmeta = &self.tree.node(self.dirs[parent].node).meta;
        let mut out = vec![
            Rec {
                ident: vec![0],
                flags: 2,
                lba,
                len: fit(size, "directory extent length")?,
                time: meta.mtime,
                su: dot_su,
            },
            Rec {
                ident: vec![1],
                flags: 2,
                lba: plba,
                len: fit(psize, "directory extent length")?,
                time: pmeta.mtime,
                su: if rr { px(pmeta, 0o040000 | pmeta.mode & 0o7777, 2) } else { Vec::new() },
            },
        ];
        let mut entries: Vec<(Vec<u8>, usize)> = (0..self.dirs[d].entries.len())
            .map(|i| {
                let e = &self.dirs[d].entries[i];
                let mut id = if joliet { e.joliet_name.clone() } else { e.iso_name.clone() };
                // Plain names carry the ;1 version; Joliet names go without, as
                // xorriso and genisoimage write them.
                if e.dir.is_none() && !joliet {
                    id.extend_from_slice(b";1");
                }
                (id, i)
            })
            .collect();
        entries.sort();
        for (ident, i) in entries {
            let (node, dir, su) = {
                let e = &self.dirs[d].entries[i];
                (e.node, e.dir, if rr { e.rr.clone() } else { Vec::new() })
            };
            let n = self.tree.node(node);
            let base = 33 + ident.len() + (1 - ident.len() % 2);
            let su = if rr { self.split_su(su, base)? } else { su };
            let time = n.meta.mtime;
            if let Some(cd) = dir {
                let (l, s) = if joliet {
                    (self.dirs[cd].jlba, self.dirs[cd].jsize)
                } else {
                    (self.dirs[cd].lba, self.dirs[cd].size)
                };
                out.push(Rec { ident, flags: 2, lba: l, len: fit(s, "directory extent length")?, time, su });
                continue;
            }
            // The size from the tree, so the dry run makes as many records as the real one.
            let size = n.as_file().map(|f| f.size).unwrap_or(0);
            let lba = self.files.get(&node).map(|f| f.0).unwrap_or(0);
            // Files over 4 GiB: one record per extent, all but the last flagged.
            let mut left = size;
            let mut at = lba;
            loop {
                let part = left.min(MAX_EXTENT);
                left -= part;
                out.push(Rec {
                    ident: ident.clone(),
                    flags: if left > 0 { 0x80 } else { 0 },
                    lba: at,
                    len: fit(part, "file extent length")?,
                    time,
                    su: su.clone(),
                });
                if left == 0 {
                    break;
                }
                at = sectors_after(at, part)?;
            }
        }
        Ok(out)
    }

    /// Serializes records into sectors; records never cross a sector boundary.
    fn dir_bytes(recs: &[Rec]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for r in recs {
            let pad = 1 - r.ident.len() % 2;
            let len = size_of::<DirRecordHead>() + r.ident.len() + pad + r.su.len();
            let used = out.len() % SECTOR_BYTES;
            if used + len > SECTOR_BYTES {
                out.resize(out.len() + SECTOR_BYTES - used, 0);
            }
            let head = DirRecordHead {
                len: fit(u64_from_usize(len), "directory record length")?,
                ext_attr_len: 0,
                extent: Both32::new(r.lba),
                size: Both32::new(r.len),
                date: short_date(r.time),
                flags: r.flags,
                file_unit_size: 0,
                interleave_gap: 0,
                volume_seq: Both16::new(1),
                name_len: fit(u64_from_usize(r.ident.len()), "file identifier length")?,
            };
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(&r.ident);
            out.resize(out.len() + pad, 0);
            out.extend_from_slice(&r.su);
        }
        let n = out.len().next_multiple_of(SECTOR_BYTES);
        out.resize(n, 0);
        Ok(out)
    }

    fn find(&self, path: &str, what: &str) -> Result<(NodeId, FileData)> {
        let id = self
            .tree
            .resolve(path.as_bytes(), true)
            .map_err(|e| Error::argument(format!("{what} {path}: {}", e.message())))?;
        let f = self
            .tree
            .node(id)
            .as_file()
            .ok_or_else(|| Error::argument(format!("{what} {path} is not a regular file")))?;
        Ok((id, f.clone()))
    }

    fn build(mut self) -> Result<BuiltFs> {
        let opts = self.opts;
        let bios = opts.boot_bios.as_deref().map(|p| self.find(p, "--boot-bios")).transpose()?;
        let uefi = opts.boot_uefi.as_deref().map(|p| self.find(p, "--boot-uefi")).transpose()?;
        if let Some(code) = &opts.hybrid_mbr {
            if !opts.hybrid || bios.is_none() {
                return Err(Error::argument(
                    "an isohybrid MBR needs --hybrid and --boot-bios (it starts the BIOS image)",
                ));
            }
            if code.len() > HYBRID_MBR_CODE {
                return Err(Error::argument(format!(
                    "the hybrid MBR code is {} bytes; an isohybrid MBR holds {HYBRID_MBR_CODE}",
                    code.len()
                )));
            }
        }
        if opts.hybrid && uefi.is_none() && opts.hybrid_mbr.is_none() {
            return Err(Error::argument(
                "--hybrid needs --boot-uefi (the GPT names the UEFI image) or a BIOS image with isolinux's hybrid MBR",
            ));
        }
        if opts.keep.is_some() && (bios.is_some() || uefi.is_some() || opts.hybrid) {
            return Err(Error::argument("a kept system area replaces --boot-bios, --boot-uefi and --hybrid"));
        }
        if bios.is_some() && opts.boot_load_size == 0 {
            return Err(Error::argument("--boot-load-size must be 1 to 65535 sectors"));
        }
        // The kept entries' images that are files of the tree.
        let kept_files: Vec<Option<(NodeId, FileData)>> = match &opts.keep {
            Some(k) => k
                .entries
                .iter()
                .map(|e| match &e.image {
                    crate::hybrid::Anchor::FileStart(p) => self.find(p, "the boot image").map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let booting = bios.is_some() || uefi.is_some() || opts.keep.as_ref().is_some_and(|k| !k.entries.is_empty());
        // Sizes first (records have fixed sizes whatever the locations): a dry run, which
        // also makes each directory's continuation areas.
        let n = self.dirs.len();
        if n > usize::from(u16::MAX) {
            return Err(Error::unsupported(format!("{n} directories: an ISO 9660 path table numbers at most 65535")));
        }
        let mut ce_of_dir: Vec<std::ops::Range<usize>> = Vec::with_capacity(n);
        for d in 0..n {
            let first = self.ce.len();
            let recs = self.records(d, false)?;
            self.dirs[d].size = u64_from_usize(Self::dir_bytes(&recs)?.len());
            ce_of_dir.push(first..self.ce.len());
            if opts.joliet {
                let recs = self.records(d, true)?;
                self.dirs[d].jsize = u64_from_usize(Self::dir_bytes(&recs)?.len());
            }
        }
        let ce_areas = std::mem::take(&mut self.ce);
        self.ce_pos = vec![(0, 0); ce_areas.len()];
        self.ce_sizes = ce_areas
            .iter()
            .map(|a| fit(u64_from_usize(a.len()), "continuation area length"))
            .collect::<Result<_, _>>()?;
        // Volume descriptors: PVD, boot record, SVD, terminator.
        let mut lba: u32 = 16;
        let pvd = lba;
        lba += 1;
        let boot_record = booting.then(|| {
            lba += 1;
            lba - 1
        });
        let svd = opts.joliet.then(|| {
            lba += 1;
            lba - 1
        });
        let term = lba;
        lba += 1;
        // UDF: recognition sequence after the terminator, then (after the catalog) the
        // volume descriptor sequences; the partition starts after the anchor at 256.
        let udf = if opts.udf { Some(crate::udf_write::UdfPlan::new(self.tree)?) } else { None };
        let vrs = lba;
        if udf.is_some() {
            lba += 3;
        }
        let catalog = booting.then(|| {
            lba += 1;
            lba - 1
        });
        let udf_vds = lba;
        if let Some(u) = &udf {
            lba += crate::udf_write::SYSTEM_SECTORS;
            if lba > 256 {
                return Err(Error::unsupported("UDF descriptors would pass sector 256"));
            }
            lba = crate::udf_write::PART_START + u.blocks;
        }
        // Path tables.
        let pt = self.path_table(false, true)?;
        let pt_sectors: u32 = fit(u64_from_usize(pt.len()).div_ceil(SECTOR), "path table sectors")?;
        let (l_pt, m_pt) = (lba, lba + pt_sectors);
        lba = sectors_after(lba, 2 * u64::from(pt_sectors) * SECTOR)?;
        let (jl_pt, jm_pt) = if opts.joliet {
            let jpt = self.path_table(true, true)?;
            let s: u32 = fit(u64_from_usize(jpt.len()).div_ceil(SECTOR), "path table sectors")?;
            let r = (lba, lba + s);
            lba = sectors_after(lba, 2 * u64::from(s) * SECTOR)?;
            r
        } else {
            (0, 0)
        };
        // Each directory, then its continuation areas right after it: readers that go
        // through the disc front to back (libarchive) read them there.
        let mut ce_blobs: Vec<(u32, Vec<u8>)> = Vec::new();
        for (d, areas) in ce_of_dir.iter().enumerate() {
            self.dirs[d].lba = lba;
            lba = sectors_after(lba, self.dirs[d].size)?;
            let mut bytes: Vec<u8> = Vec::new();
            for i in areas.clone() {
                let a = &ce_areas[i];
                if a.len() > SECTOR_BYTES {
                    return Err(Error::unsupported(
                        "the Rock Ridge entries of one file (name, link target) exceed 2048 bytes",
                    ));
                }
                let used = bytes.len() % SECTOR_BYTES;
                if used + a.len() > SECTOR_BYTES {
                    bytes.resize(bytes.len() + SECTOR_BYTES - used, 0);
                }
                let at = u64_from_usize(bytes.len());
                self.ce_pos[i] = (sectors_after(lba, at)?, fit(at % SECTOR, "continuation area offset")?);
                bytes.extend_from_slice(a);
            }
            if !bytes.is_empty() {
                bytes.resize(bytes.len().next_multiple_of(SECTOR_BYTES), 0);
                let start = lba;
                lba = sectors_after(lba, u64_from_usize(bytes.len()))?;
                ce_blobs.push((start, bytes));
            }
        }
        if opts.joliet {
            for d in 0..n {
                self.dirs[d].jlba = lba;
                lba = sectors_after(lba, self.dirs[d].jsize)?;
            }
        }
        // File data, in tree order, each hard-linked file once; the BIOS image gets its
        // boot info table.
        let mut data: Vec<(u32, NodeId, FileData)> = Vec::new();
        // The input's catalog file (xorriso's -c boot.cat) names the new catalog, so the
        // disc does not carry the old catalog's bytes as a stale file.
        if let (Some(cat), Some(path)) = (catalog, opts.keep.as_ref().and_then(|k| k.catalog_path.as_deref()))
            && let Ok(id) = self.tree.resolve(path.as_bytes(), true)
            && let Some(f) = self.tree.node(id).as_file()
            && f.size <= SECTOR
        {
            self.files.insert(id, (cat, f.size));
        }
        let mut empty_lba = None;
        for (_, id) in self.tree.walk(NodeId::ROOT) {
            let Some(f) = self.tree.node(id).as_file() else { continue };
            if self.files.contains_key(&id) {
                continue;
            }
            if f.size == 0 {
                let e = *empty_lba.get_or_insert(term);
                self.files.insert(id, (e, 0));
                continue;
            }
            let sectors = u32::try_from(f.size.div_ceil(SECTOR))
                .ok()
                .and_then(|s| lba.checked_add(s))
                .ok_or_else(|| Error::unsupported(TOO_LARGE))?;
            self.files.insert(id, (lba, f.size));
            data.push((lba, id, f.clone()));
            lba = sectors;
        }
        // Boot images patched on the disc: (node, boot info table, GRUB 2 boot info).
        let mut patches: Vec<(NodeId, &FileData, bool, bool)> = Vec::new();
        if let Some((id, f)) = &bios {
            patches.push((*id, f, opts.boot_info_table, false));
        }
        for (e, kf) in opts.keep.iter().flat_map(|k| &k.entries).zip(&kept_files) {
            if let Some((id, f)) = kf
                && (e.boot_info_table || e.grub2_boot_info)
            {
                patches.push((*id, f, e.boot_info_table, e.grub2_boot_info));
            }
        }
        for (id, f, table, grub2) in patches {
            if !table && !grub2 {
                continue;
            }
            if f.size > MAX_PATCHED_IMAGE {
                return Err(Error::argument(format!(
                    "the BIOS boot image is {} bytes; a boot info table is patched into images of at most {MAX_PATCHED_IMAGE} bytes (--no-boot-info-table leaves it as is)",
                    f.size
                )));
            }
            let mut b = vec![0u8; usize::try_from(f.size).unwrap_or(0)];
            f.read_at(&mut b, 0)?;
            let lba = self.files[&id].0;
            // GRUB 2 first: the boot info table's checksum covers its bytes (as xorriso does).
            if grub2 && b.len() >= GRUB2_BOOT_INFO + 8 {
                b[GRUB2_BOOT_INFO..GRUB2_BOOT_INFO + 8].copy_from_slice(&(u64::from(lba) * 4 + 5).to_le_bytes());
            }
            if table && b.len() >= 64 {
                let t = boot_info_table(&b, pvd, lba);
                b[8..64].copy_from_slice(&t);
            }
            self.patched.insert(id, b);
        }
        if let Some((_, f)) = &bios
            && opts.hybrid_mbr.is_some()
        {
            let mut head = [0u8; 0x44];
            if f.size >= 0x44 {
                f.read_at(&mut head, 0)?;
            }
            if !is_isohybrid_capable(&head) {
                self.warnings.push(format!(
                    "--boot-bios {}: no isolinux hybrid signature at byte 0x40; the MBR code may not start it from a USB stick",
                    opts.boot_bios.as_deref().unwrap_or_default()
                ));
            }
        }
        // A backup GPT needs 33 sectors of 512 bytes at the end.
        let gpt_tail: u32 = if opts.hybrid { 9 } else { 0 };
        // UDF's second anchor: the last sector before the backup GPT.
        let mut end_anchor = lba;
        if udf.is_some() {
            lba = sectors_after(lba, SECTOR)?;
        }
        let mut total = sectors_after(lba, u64::from(gpt_tail) * SECTOR)?;
        let mut disk_size = u64::from(total) * SECTOR;
        // A remaster: the input's system area, re-pointed, and its appended partitions.
        let kept = match &opts.keep {
            Some(k) => {
                let files = |p: &str| -> Option<(u64, u64)> {
                    let id = self.tree.resolve(p.as_bytes(), true).ok()?;
                    self.files.get(&id).map(|&(l, s)| (u64::from(l) * SECTOR, s))
                };
                let l = k.layout(u64::from(lba) * SECTOR, &files)?;
                total = u32::try_from(l.volume_end.div_ceil(SECTOR)).map_err(|_| Error::unsupported(TOO_LARGE))?;
                disk_size = l.disk_size.max(u64::from(total) * SECTOR);
                // UDF readers (pycdlib) look for the second anchor in the volume's last
                // sector: there, when the kept tail leaves it free.
                if udf.is_some()
                    && let Some(last) = total.checked_sub(1).filter(|&s| s > end_anchor)
                {
                    let (a, b) = (u64::from(last) * SECTOR, u64::from(last) * SECTOR + SECTOR);
                    let free = l.copies.iter().all(|&(to, _, len)| to + len <= a || to >= b)
                        && l.backup
                            .as_ref()
                            .is_none_or(|(at, x)| at + u64::try_from(x.len()).unwrap_or(u64::MAX) <= a || *at >= b);
                    if free {
                        end_anchor = last;
                    }
                }
                Some(l)
            }
            None => None,
        };
        // Second pass with every location known; CE placeholders patched.
        let mut img = PlannedImage::new(disk_size, "iso9660");
        let mut dir_bytes = Vec::new();
        for joliet in [false, true] {
            if joliet && !opts.joliet {
                continue;
            }
            for d in 0..n {
                let recs = self.records(d, joliet)?;
                let mut b = Self::dir_bytes(&recs)?;
                self.patch_ce(&mut b)?;
                let at = if joliet { self.dirs[d].jlba } else { self.dirs[d].lba };
                dir_bytes.push((at, b));
            }
        }
        self.ce.clear();
        for (at, b) in dir_bytes {
            img.place_bytes(u64::from(at) * SECTOR, b)?;
        }
        for (at, b) in ce_blobs {
            img.place_bytes(u64::from(at) * SECTOR, b)?;
        }
        let root = |s: &Self, joliet: bool| -> Result<[u8; 34]> {
            let d = &s.dirs[0];
            let (l, z) = if joliet { (d.jlba, d.jsize) } else { (d.lba, d.size) };
            let r = Rec {
                ident: vec![0],
                flags: 2,
                lba: l,
                len: fit(z, "directory extent length")?,
                time: s.tree.node(NodeId::ROOT).meta.mtime,
                su: Vec::new(),
            };
            let mut b = [0u8; 34];
            b.copy_from_slice(diskcast_layout::bytes(&Self::dir_bytes(&[r])?, 0, 34, "root directory record")?);
            Ok(b)
        };
        // The primary descriptor (type 1) and, with Joliet, the supplementary one (type 2):
        // each with its own L and M path tables.
        let mut volumes = vec![(false, 1u8, pvd, l_pt, m_pt)];
        if let Some(s) = svd {
            volumes.push((true, 2, s, jl_pt, jm_pt));
        }
        for (joliet, kind, at, l, m) in volumes {
            let pt_l = self.path_table(joliet, true)?;
            let pt_m = self.path_table(joliet, false)?;
            let size = fit(u64_from_usize(pt_l.len()), "path table size")?;
            img.place_bytes(u64::from(l) * SECTOR, pad(pt_l))?;
            img.place_bytes(u64::from(m) * SECTOR, pad(pt_m))?;
            img.place_bytes(u64::from(at) * SECTOR, self.descriptor(kind, total, size, l, m, root(&self, joliet)?)?)?;
        }
        let mut t = vec![0u8; SECTOR_BYTES];
        diskcast_layout::put(
            &mut t,
            0,
            &DescriptorHead { ty: 255, id: CD001, version: 1 },
            "volume descriptor set terminator",
        )?;
        img.place_bytes(u64::from(term) * SECTOR, t)?;
        if let (Some(br), Some(cat)) = (boot_record, catalog) {
            let mut boot_system_id = [0u8; 32];
            boot_system_id[..EL_TORITO.len()].copy_from_slice(EL_TORITO);
            let b = BootRecord {
                head: DescriptorHead { ty: 0, id: CD001, version: 1 },
                boot_system_id,
                boot_id: [0; 32],
                catalog: cat.into(),
                unused: [0; 1973],
            };
            img.place_bytes(u64::from(br) * SECTOR, b.as_bytes().to_vec())?;
            let mut entries = Vec::new();
            if let Some((id, _)) = &bios {
                entries.push(CatEntry::no_emulation(0, self.files[id].0, opts.boot_load_size));
            }
            if let Some((id, f)) = &uefi {
                // UEFI gets the whole image when its size fits the field.
                let count = u16::try_from(f.size.div_ceil(512)).unwrap_or(0);
                entries.push(CatEntry::no_emulation(0xEF, self.files[id].0, count));
            }
            if let (Some(k), Some(l)) = (&opts.keep, &kept) {
                for ((e, kf), tail) in k.entries.iter().zip(&kept_files).zip(&l.tail_lba) {
                    let (lba, count) = match (kf, tail) {
                        (Some((id, f)), _) if e.whole_image => {
                            (self.files[id].0, u16::try_from(f.size.div_ceil(512)).unwrap_or(0))
                        }
                        (Some((id, _)), _) => (self.files[id].0, e.sector_count),
                        (None, Some(t)) => (*t, e.sector_count),
                        (None, None) => return Err(Error::unsupported("a kept boot image has no place on the disc")),
                    };
                    entries.push(CatEntry {
                        platform: e.platform,
                        bootable: e.bootable,
                        media: e.media,
                        load_segment: e.load_segment,
                        system_type: e.system_type,
                        count,
                        lba,
                    });
                }
            }
            img.place_bytes(u64::from(cat) * SECTOR, catalog_bytes(&entries)?)?;
        }
        for (at, id, f) in data {
            let start = u64::from(at) * SECTOR;
            match self.patched.remove(&id) {
                Some(b) => img.place_bytes(start, b)?,
                None => img.place(start, f.size, Piece::File { data: f, offset: 0 })?,
            }
        }
        if let Some(u) = &udf {
            for (at, b) in u.build(self.tree, &self.files, &self.label, self.now, (vrs, udf_vds, end_anchor))? {
                img.place_bytes(u64::from(at) * SECTOR, b)?;
            }
        }
        if let (Some(k), Some(l)) = (&opts.keep, kept) {
            img.place_bytes(0, l.area)?;
            if let Some((at, b)) = l.backup {
                img.place_bytes(at, b)?;
            }
            for (to, from, len) in l.copies {
                img.place(to, len, Piece::Disk { disk: k.source().clone(), offset: from })?;
            }
        }
        let mbr_code = opts.hybrid_mbr.as_deref().zip(bios.as_ref().map(|(id, _)| self.files[id].0));
        if opts.hybrid
            && let Some((id, f)) = &uefi
        {
            let esp = (u64::from(self.files[id].0) * 4, f.size.div_ceil(512));
            let (mut head, tail) = gpt(u64::from(total) * 4, esp, self.now);
            if let Some((code, bios_lba)) = mbr_code {
                isohybrid_mbr(&mut head[..512], code, bios_lba, self.now);
            }
            img.place_bytes(0, head)?;
            img.place_bytes(u64::from(total) * SECTOR - u64_from_usize(tail.len()), tail)?;
        } else if let Some((code, bios_lba)) = mbr_code {
            // BIOS only: an MBR whose one active partition spans the disc, as isohybrid
            // writes it.
            let mut mbr = vec![0u8; 512];
            isohybrid_mbr(&mut mbr, code, bios_lba, self.now);
            let sectors = u64::from(total) * 4;
            mbr[446..462].copy_from_slice(&mbr_entry(0x80, 0x17, 0, sectors));
            mbr[510] = 0x55;
            mbr[511] = 0xAA;
            img.place_bytes(0, mbr)?;
        }
        let mut parts = vec!["ISO 9660"];
        parts.extend(opts.rock_ridge.then_some("Rock Ridge"));
        parts.extend(opts.joliet.then_some("Joliet"));
        parts.extend(opts.udf.then_some("UDF 1.02"));
        let description = format!("{}, {} sectors of 2048 bytes", parts.join(" + "), total);
        Ok(BuiltFs { image: img.seal()?, warnings: self.warnings, description })
    }

    /// Replaces CE placeholders (area index in the block field) with real locations.
    fn patch_ce(&self, b: &mut [u8]) -> Result<()> {
        let mut pos = 0;
        while pos < b.len() {
            let len = usize::from(b[pos]);
            if len == 0 {
                pos = (pos / SECTOR_BYTES + 1) * SECTOR_BYTES;
                continue;
            }
            let rec = diskcast_layout::bytes_mut(b, pos, len, "directory record")?;
            let head: DirRecordHead = diskcast_layout::read_copy(rec, 0, "directory record")?;
            let id_len = usize::from(head.name_len);
            let mut s = size_of::<DirRecordHead>() + id_len + (1 - id_len % 2);
            while s + 4 <= rec.len() {
                let l = usize::from(rec[s + 2]);
                if l < 4 {
                    break;
                }
                if &rec[s..s + 2] == b"CE" && l == 28 {
                    let idx = usize_from(le32(rec, s + 4, "CE entry")?);
                    let (blk, off) = self.ce_pos[idx];
                    diskcast_layout::put(rec, s + 4, &Both32::new(blk), "CE entry")?;
                    diskcast_layout::put(rec, s + 12, &Both32::new(off), "CE entry")?;
                    diskcast_layout::put(rec, s + 20, &Both32::new(self.ce_len(idx)), "CE entry")?;
                }
                s += l;
            }
            pos += len;
        }
        Ok(())
    }

    fn ce_len(&self, idx: usize) -> u32 {
        self.ce_sizes.get(idx).copied().unwrap_or(0)
    }

    /// The path table (L: little-endian, M: big-endian).
    fn path_table(&self, joliet: bool, little: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (i, d) in self.dirs.iter().enumerate() {
            let ident: Vec<u8> = if i == 0 {
                vec![0]
            } else {
                let p = &self.dirs[d.parent];
                let e = p.entries.iter().find(|e| e.dir == Some(i));
                e.map(|e| if joliet { e.joliet_name.clone() } else { e.iso_name.clone() }).unwrap_or_default()
            };
            let lba = if joliet { d.jlba } else { d.lba };
            let name_len = fit(u64_from_usize(ident.len()), "path table directory identifier length")?;
            // build() refused more than 65535 directories, the largest parent number.
            let parent: u16 = fit(u64_from_usize(d.parent + 1), "path table parent directory number")?;
            if little {
                let r = PathRecordL { name_len, ext_attr_len: 0, extent: lba.into(), parent: parent.into() };
                out.extend_from_slice(r.as_bytes());
            } else {
                let r = PathRecordM { name_len, ext_attr_len: 0, extent: lba.into(), parent: parent.into() };
                out.extend_from_slice(r.as_bytes());
            }
            out.extend_from_slice(&ident);
            if ident.len() % 2 == 1 {
                out.push(0);
            }
        }
        Ok(out)
    }

    /// A primary (1) or Joliet supplementary (2) volume descriptor.
    fn descriptor(&self, ty: u8, total: u32, pt_size: u32, l_pt: u32, m_pt: u32, root: [u8; 34]) -> Result<Vec<u8>> {
        // Text fields: a-characters padded with spaces, or UCS-2 big-endian for Joliet.
        fn text<const N: usize>(ty: u8, s: &str) -> [u8; N] {
            let mut f = [0u8; N];
            if ty == 2 {
                let units =
                    s.encode_utf16().flat_map(|u| u.to_be_bytes()).chain(std::iter::repeat([0u8, 0x20]).flatten());
                for (b, u) in f.iter_mut().zip(units) {
                    *b = u;
                }
            } else {
                for (b, c) in f.iter_mut().zip(s.bytes().chain(std::iter::repeat(b' '))) {
                    *b = c;
                }
            }
            f
        }
        let label: String = if ty == 1 {
            self.label
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
                .take(32)
                .collect()
        } else {
            self.label.chars().take(16).collect()
        };
        let mut escapes = [0u8; 32];
        if ty == 2 {
            escapes[..3].copy_from_slice(b"%/E");
        }
        let now = long_date(self.now);
        let mut unset = [0u8; 17];
        unset[..16].copy_from_slice(b"0000000000000000");
        let vd = VolumeDescriptor {
            head: DescriptorHead { ty, id: CD001, version: 1 },
            flags: 0,
            system_id: text(ty, "LINUX"),
            volume_id: text(ty, &label),
            unused1: [0; 8],
            space_size: Both32::new(total),
            escapes,
            set_size: Both16::new(1),
            sequence: Both16::new(1),
            block_size: Both16::new(2048),
            path_table_size: Both32::new(pt_size),
            l_path_table: l_pt.into(),
            l_path_table_opt: 0.into(),
            m_path_table: m_pt.into(),
            m_path_table_opt: 0.into(),
            root,
            volume_set_id: text(ty, ""),
            publisher_id: text(ty, ""),
            preparer_id: text(ty, ""),
            application_id: text(ty, "DISKCAST"),
            copyright_file: text(ty, ""),
            abstract_file: text(ty, ""),
            bibliographic_file: text(ty, ""),
            created: now,
            modified: now,
            expires: unset,
            effective: unset,
            structure_version: 1,
            unused2: 0,
            application_use: [0; 512],
            reserved: [0; 653],
        };
        Ok(vd.as_bytes().to_vec())
    }
}

fn pad(mut b: Vec<u8>) -> Vec<u8> {
    b.resize(b.len().next_multiple_of(SECTOR_BYTES).max(SECTOR_BYTES), 0);
    b
}

/// 32-byte records in the one catalog sector written.
const CATALOG_RECORDS: usize = 2048 / 32;

/// One boot catalog entry as written.
struct CatEntry {
    platform: u8,
    bootable: bool,
    media: u8,
    load_segment: u16,
    system_type: u8,
    count: u16,
    lba: u32,
}

impl CatEntry {
    fn no_emulation(platform: u8, lba: u32, count: u16) -> Self {
        CatEntry { platform, bootable: true, media: 0, load_segment: 0, system_type: 0, count, lba }
    }
}

/// The boot catalog: validation entry, the default entry (the first), then one section
/// per run of entries of one platform.
fn catalog_bytes(entries: &[CatEntry]) -> Result<Vec<u8>> {
    let mut c = vec![0u8; SECTOR_BYTES];
    let Some(first) = entries.first() else { return Ok(c) };
    let mut v = ValidationEntry { header_id: 1, platform: first.platform, key: [0x55, 0xAA], ..Default::default() };
    let sum = v.as_bytes().chunks_exact(2).fold(0u16, |s, w| s.wrapping_add(u16::from_le_bytes([w[0], w[1]])));
    v.checksum = 0u16.wrapping_sub(sum).into();
    diskcast_layout::put(&mut c, 0, &v, "El Torito validation entry")?;
    let entry = |x: &CatEntry| BootCatalogEntry {
        indicator: if x.bootable { 0x88 } else { 0 },
        media: x.media,
        load_segment: x.load_segment.into(),
        system_type: x.system_type,
        sector_count: x.count.into(),
        lba: x.lba.into(),
        ..Default::default()
    };
    diskcast_layout::put(&mut c, 32, &entry(first), "El Torito default entry")?;
    let rest = &entries[1..];
    let mut sections: Vec<&[CatEntry]> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let n = rest[i..].iter().take_while(|e| e.platform == rest[i].platform).count();
        sections.push(&rest[i..i + n]);
        i += n;
    }
    if 2 + sections.len() + rest.len() > CATALOG_RECORDS {
        return Err(Error::unsupported(format!("{} boot entries do not fit one catalog sector", entries.len())));
    }
    let mut pos = 64;
    for (k, sec) in sections.iter().enumerate() {
        let h = SectionHeader {
            indicator: if k + 1 == sections.len() { 0x91 } else { 0x90 },
            platform: sec[0].platform,
            count: fit::<u16, u64>(u64_from_usize(sec.len()), "El Torito section entry count")?.into(),
            id: [0; 28],
        };
        diskcast_layout::put(&mut c, pos, &h, "El Torito section header")?;
        pos += 32;
        for e in sec.iter() {
            diskcast_layout::put(&mut c, pos, &entry(e), "El Torito section entry")?;
            pos += 32;
        }
    }
    Ok(c)
}

/// Puts isohybrid's MBR code into `mbr` (sector 0): the code, the BIOS image's LBA in
/// 512-byte sectors at 432 (where the code looks for it), and a disk signature derived
/// from the build time at 440. The partition entries and 55 AA are the caller's.
fn isohybrid_mbr(mbr: &mut [u8], code: &[u8], bios_lba: u32, now: i64) {
    mbr[..HYBRID_MBR_CODE].fill(0);
    mbr[..code.len()].copy_from_slice(code);
    mbr[432..440].copy_from_slice(&(u64::from(bios_lba) * 4).to_le_bytes());
    let sig = high_u32(now.cast_unsigned().wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    mbr[440..444].copy_from_slice(&sig.to_le_bytes());
    mbr[444..446].fill(0);
}

/// A 16-byte MBR entry with CHS values for isohybrid's geometry (64 heads, 32 sectors),
/// clamped past 1024 cylinders.
pub(crate) fn mbr_entry(status: u8, kind: u8, lba: u64, sectors: u64) -> [u8; 16] {
    let chs = |l: u64| -> [u8; 3] {
        let (c, h, s) = (l / (64 * 32), (l / 32) % 64, l % 32 + 1);
        if c > 1023 {
            return [0xfe, 0xff, 0xff];
        }
        [low_u8(h), low_u8(s) | low_u8((c >> 2) & 0xc0), low_u8(c)]
    };
    let mut e = [0u8; 16];
    e[0] = status;
    e[1..4].copy_from_slice(&chs(lba));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs(lba + sectors.saturating_sub(1)));
    e[8..12].copy_from_slice(&u32::try_from(lba).unwrap_or(u32::MAX).to_le_bytes());
    e[12..16].copy_from_slice(&u32::try_from(sectors).unwrap_or(u32::MAX).to_le_bytes());
    e
}

/// A protective MBR plus primary GPT (for the first 32 KiB) and the backup GPT (for the
/// end), in 512-byte sectors: one EFI System Partition over the UEFI image.
fn gpt(disk_sectors: u64, (esp_start, esp_len): (u64, u64), now: i64) -> (Vec<u8>, Vec<u8>) {
    let crc = |b: &[u8]| {
        let mut c = flate2::Crc::new();
        c.update(b);
        c.sum()
    };
    let last = disk_sectors - 1;
    let first_usable = 34u64;
    let last_usable = disk_sectors - 34;
    // GUIDs derived from the build time, so SOURCE_DATE_EPOCH builds are identical.
    let seed = now.cast_unsigned().to_le_bytes();
    let guid = |k: u8| -> [u8; 16] {
        let mut g = [0u8; 16];
        for (i, b) in g.iter_mut().enumerate() {
            *b = seed[i % 8]
                .wrapping_mul(31)
                .wrapping_add(k.wrapping_mul(17))
                .wrapping_add(low_u8(u64_from_usize(i)).wrapping_mul(7));
        }
        g[7] = (g[7] & 0x0f) | 0x40;
        g[8] = (g[8] & 0x3f) | 0x80;
        g
    };
    let esp_type: [u8; 16] =
        [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B];
    let mut entries = vec![0u8; 128 * 128];
    entries[..16].copy_from_slice(&esp_type);
    entries[16..32].copy_from_slice(&guid(1));
    entries[32..40].copy_from_slice(&esp_start.to_le_bytes());
    entries[40..48].copy_from_slice(&(esp_start + esp_len - 1).to_le_bytes());
    for (i, u) in "EFI System".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    let ecrc = crc(&entries);
    let header = |current: u64, backup: u64, entries_at: u64| -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&guid(0));
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&ecrc.to_le_bytes());
        let c = crc(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        h
    };
    let mut head = vec![0u8; 34 * 512];
    // Protective MBR: one 0xEE partition over the disk.
    let p = &mut head[446..462];
    p[1..4].copy_from_slice(&[0, 2, 0]);
    p[4] = 0xEE;
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[12..16].copy_from_slice(&u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX).to_le_bytes());
    head[510] = 0x55;
    head[511] = 0xAA;
    head[512..1024].copy_from_slice(&header(1, last, 2));
    head[1024..1024 + entries.len()].copy_from_slice(&entries);
    let mut tail = entries.clone();
    tail.extend_from_slice(&header(last, 1, last - 32));
    (head, tail)
}
