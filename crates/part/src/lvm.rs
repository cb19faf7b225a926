//! LVM2 physical volumes, read-only: the label, the PV header, the newest committed
//! metadata text of the metadata area (checksum checked), and the volume group's
//! logical volumes as [`BlockRead`] views onto the disk.
//!
//! On-disk format (LVM2's `format_text`): a 512-byte label in one of the first four
//! sectors (`LABELONE`, its own sector number, a CRC over the rest of the sector, the PV
//! header's offset, `LVM2 001`); the PV header (the PV's 32-character id, its size, the
//! data areas and the metadata areas, each list ending with a zero entry); each metadata
//! area starts with a 512-byte `mda_header` (CRC, magic ` LVM2 x[5A%r0N*>`, version 1,
//! its own start and size, then `raw_locn` slots whose first is the committed text's
//! offset, size and CRC). The text is a ring buffer after the header: a text that runs
//! past the area's end continues right after the header. Every CRC is LVM's: the
//! CRC-32 polynomial with the initial value `0xf597a6cf` and no final inversion.
//!
//! Only linear and striped segments are mapped; thin volumes and pools, RAID, mirrors,
//! snapshots, caches, VDO and a VG whose PVs are not all on this disk are named and
//! refused when such an LV is opened.

use crate::lvm_text::{self, Section, Value};
use crate::{Table, read_vec};
use diskcast_block::{BlockRead, Error, Extent, ImageInfo, Result, range_end, resolved_extent};
use diskcast_layout::{
    FromBytes, Immutable, IntoBytes, KnownLayout, Le32, Le64, Unaligned, read as read_at, u64_from_usize,
    usize_from_u64,
};
use std::sync::Arc;

const SECTOR: u64 = 512;
/// The label is in one of the first four sectors (LVM's `LABEL_SCAN_SECTORS`).
const LABEL_SCAN_SECTORS: u64 = 4;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// LVM's CRC seed (`INITIAL_CRC`).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// `raw_locn.flags` bit: this metadata area is ignored (`pvchange --metadataignore`).
const RAW_LOCN_IGNORED: u32 = 1;
/// Largest metadata text read. lvm2's default metadata area is 1 MiB and a VG's text
/// must fit in half of it; 64 MiB allows areas made with a huge `--metadatasize` while
/// keeping a hostile `raw_locn.size` from making us allocate gigabytes.
pub const MAX_METADATA_TEXT: u64 = 64 << 20;
/// Most logical volumes of one VG taken from the metadata (lvm2 itself has no hard cap;
/// real VGs have tens).
pub const MAX_LVS: usize = 65_536;
/// Most segments of one LV (each `lvextend` onto a non-adjacent range adds one).
pub const MAX_SEGMENTS: usize = 65_536;
/// Most stripes of one segment (lvm2's `MAX_STRIPES`).
pub const MAX_STRIPES: u64 = 128;

/// The label header as stored at the start of its sector.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
struct RawLabel {
    id: [u8; 8],
    sector: Le64,
    crc: Le32,
    offset: Le32,
    kind: [u8; 8],
}

/// A `disk_locn`: one data or metadata area of the PV header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
struct RawLocn {
    offset: Le64,
    size: Le64,
}

/// The fixed start of an `mda_header`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
struct RawMdaHeader {
    checksum: Le32,
    magic: [u8; 16],
    version: Le32,
    start: Le64,
    size: Le64,
}

/// A `raw_locn` slot of an `mda_header`: where a metadata text is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
struct RawTextLocn {
    offset: Le64,
    size: Le64,
    checksum: Le32,
    flags: Le32,
}

/// LVM's CRC: CRC-32 (reflected 0xEDB88320) from `seed`, without the final inversion.
/// crc32fast computes `!raw(!init, data)`, so both ends are inverted around it.
fn lvm_crc(seed: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!seed);
    h.update(data);
    !h.finalize()
}

/// A physical volume found on the disk.
#[derive(Debug, Clone)]
struct FoundPv {
    /// The 32-character PV id, without dashes.
    id: String,
    /// Where the PV starts on the disk and how long it is.
    start: u64,
    len: u64,
    /// `partition 2`, `the whole disk`.
    place: String,
    /// The committed metadata's VG section name, sequence number and text.
    vg: Option<(u64, Section)>,
}

/// The LVM volume groups found on a disk.
#[derive(Debug, Clone, Default)]
pub struct Lvm {
    /// Volume groups, in the order their first PV was found.
    pub vgs: Vec<VolumeGroup>,
}

/// One volume group as its newest metadata describes it.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// VG name.
    pub name: String,
    /// Metadata sequence number.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// Physical volumes the metadata names.
    pub pvs: Vec<PhysicalVolume>,
    /// Visible logical volumes, in metadata order.
    pub lvs: Vec<LogicalVolume>,
}

/// A PV as the VG's metadata names it, and where it is on this disk, if it is.
#[derive(Debug, Clone)]
pub struct PhysicalVolume {
    /// The metadata's key (`pv0`).
    pub key: String,
    /// The PV id (with dashes, as LVM prints it).
    pub id: String,
    /// Where its first extent is, in bytes from the PV's start.
    pub pe_start: u64,
    /// Extents it holds.
    pub pe_count: u64,
    /// Start and length on this disk, and where (`partition 2`); `None` when this disk
    /// does not hold it.
    pub found: Option<(u64, u64, String)>,
}

/// One logical volume.
#[derive(Debug, Clone)]
pub struct LogicalVolume {
    /// VG name.
    pub vg: String,
    /// LV name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Segments in LV order.
    pub segments: Vec<Segment>,
    /// Why diskcast cannot read it (a thin volume, a snapshot...), if so.
    pub refusal: Option<String>,
}

/// One segment of an LV.
#[derive(Debug, Clone)]
pub struct Segment {
    /// First byte in the LV.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// `striped` (linear is striped with one stripe), `thin`, `raid1`...
    pub kind: String,
    /// Stripe (chunk) size in bytes; 0 for one stripe.
    pub stripe_size: u64,
    /// Each stripe: PV key and first extent on it.
    pub stripes: Vec<(String, u64)>,
}

impl Lvm {
    /// Every visible LV.
    pub fn lvs(&self) -> impl Iterator<Item = &LogicalVolume> {
        self.vgs.iter().flat_map(|vg| vg.lvs.iter())
    }

    /// The LV `selector` names: `vg/lv`, or `lv` when one VG has it.
    pub fn select(&self, selector: &str) -> Result<&LogicalVolume> {
        let hits: Vec<&LogicalVolume> = match selector.split_once('/') {
            Some((vg, lv)) => self.lvs().filter(|l| l.vg == vg && l.name == lv).collect(),
            None => self.lvs().filter(|l| l.name == selector).collect(),
        };
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::argument(format!("no logical volume {selector:?}; LVM holds: {}", self.listing()))),
            _ => Err(Error::argument(format!(
                "{selector:?} names LVs in several VGs; name one as VG/LV: {}",
                self.listing()
            ))),
        }
    }

    /// One entry per LV: `vg/lv (12 MiB, 2 segments)`.
    pub fn listing(&self) -> String {
        let l: Vec<String> = self.lvs().map(LogicalVolume::describe).collect();
        if l.is_empty() { "no logical volumes".into() } else { l.join("; ") }
    }

    /// The VG holding `lv`.
    pub fn vg_of(&self, lv: &LogicalVolume) -> Option<&VolumeGroup> {
        self.vgs.iter().find(|v| v.name == lv.vg)
    }

    /// `lv` as a disk of its own (its segments mapped onto the PVs of this disk), or the
    /// reason it cannot be read.
    pub fn open(&self, disk: Arc<dyn BlockRead>, lv: &LogicalVolume) -> Result<LvView> {
        if let Some(why) = &lv.refusal {
            return Err(Error::unsupported(format!(
                "LV {}/{} is {why}; diskcast reads linear and striped LVs",
                lv.vg, lv.name
            )));
        }
        let vg = self.vg_of(lv).ok_or_else(|| Error::corrupt(format!("LV {}/{} has no VG", lv.vg, lv.name)))?;
        let mut pieces = Vec::with_capacity(lv.segments.len());
        for s in &lv.segments {
            let n = u64_from_usize(s.stripes.len());
            let per_stripe = s.len / n;
            let mut starts = Vec::with_capacity(s.stripes.len());
            for (key, first) in &s.stripes {
                let pv = vg.pvs.iter().find(|p| &p.key == key).ok_or_else(|| {
                    Error::corrupt(format!(
                        "LV {}/{}: a segment names PV {key:?}, which the VG does not list",
                        lv.vg, lv.name
                    ))
                    .with_field("stripes")
                })?;
                let Some((pv_start, pv_len, _)) = &pv.found else {
                    return Err(Error::unsupported(format!(
                        "LV {}/{} has extents on PV {} ({}), which is not on this disk; the VG spans disks \
                         that are not all here",
                        lv.vg, lv.name, pv.key, pv.id
                    )));
                };
                let extents = per_stripe / vg.extent_size;
                let past = first.checked_add(extents).filter(|&e| e <= pv.pe_count);
                let off = first.checked_mul(vg.extent_size).and_then(|o| o.checked_add(pv.pe_start));
                let end = off.and_then(|o| o.checked_add(per_stripe));
                match (past, off, end) {
                    (Some(_), Some(off), Some(end)) if end <= *pv_len => starts.push(pv_start + off),
                    _ => {
                        return Err(Error::corrupt(format!(
                            "LV {}/{}: a segment takes extents {first}..{} of PV {}, past its end ({} extents of \
                             {} bytes from byte {} of a {pv_len}-byte PV)",
                            lv.vg,
                            lv.name,
                            first.saturating_add(extents),
                            pv.key,
                            pv.pe_count,
                            vg.extent_size,
                            pv.pe_start
                        ))
                        .with_field("stripes"));
                    }
                }
            }
            pieces.push(Piece { start: s.start, len: s.len, chunk: s.stripe_size, starts });
        }
        for p in &pieces {
            for &st in &p.starts {
                range_end(st, p.len / u64_from_usize(p.starts.len()), disk.size())?;
            }
        }
        Ok(LvView { disk, pieces, size: lv.size, label: format!("LV {}/{}", lv.vg, lv.name) })
    }
}

impl LogicalVolume {
    /// `vg/lv (12 MiB, 2 segments)`, with what it is when diskcast cannot read it.
    pub fn describe(&self) -> String {
        let n = self.segments.len();
        let why = self.refusal.as_deref().map(|w| format!(", {w}")).unwrap_or_default();
        format!(
            "{}/{} ({}, {n} segment{}{why})",
            self.vg,
            self.name,
            diskcast_block::size::human(self.size),
            if n == 1 { "" } else { "s" }
        )
    }
}

/// The volume groups on `disk`: a PV on the whole disk when it has no partition table,
/// else on any of its partitions (whatever their type: installers mark them 8e00, but a
/// PV on a 8300 partition is read the same). `None` when there is no PV.
pub fn scan(disk: &dyn BlockRead, table: Option<&Table>) -> Result<Option<Lvm>> {
    let places: Vec<(u64, u64, String)> = match table {
        None => vec![(0, disk.size(), "the whole disk".to_string())],
        Some(t) => t.partitions.iter().map(|p| (p.start, p.len, format!("partition {}", p.number))).collect(),
    };
    let mut found = Vec::new();
    for (start, len, place) in places {
        if let Some(pv) = read_pv(disk, start, len, &place)? {
            found.push(pv);
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    // One VG per id; its newest metadata (highest seqno) among its PVs wins.
    let mut newest: Vec<(String, u64, Section)> = Vec::new();
    for pv in &found {
        let Some((seq, top)) = &pv.vg else { continue };
        let (_, vg) = vg_section(top)?;
        let id = vg.str("id", "the VG")?.to_string();
        match newest.iter_mut().find(|(i, ..)| *i == id) {
            Some(slot) if slot.1 < *seq => *slot = (id, *seq, top.clone()),
            Some(_) => {}
            None => newest.push((id, *seq, top.clone())),
        }
    }
    let mut lvm = Lvm::default();
    for (_, seq, top) in &newest {
        lvm.vgs.push(build_vg(top, *seq, &found)?);
    }
    Ok(Some(lvm))
}

/// The one VG section of a metadata text.
fn vg_section(top: &Section) -> Result<(&str, &Section)> {
    let mut secs = top.sections();
    match (secs.next(), secs.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(Error::corrupt("LVM metadata text does not hold exactly one volume group section")
            .with_field("lvm metadata")),
    }
}

/// The PV whose label is in the first sectors of `[start, start + len)`, with its
/// committed metadata.
fn read_pv(disk: &dyn BlockRead, start: u64, len: u64, place: &str) -> Result<Option<FoundPv>> {
    let scan_len = LABEL_SCAN_SECTORS * SECTOR;
    if len < scan_len {
        return Ok(None);
    }
    let head = read_vec(disk, start, 2048)?;
    let ctx = |e: Error| Error::corrupt(format!("LVM PV on {place}: {e}"));
    for i in 0..LABEL_SCAN_SECTORS {
        let at = usize_from_u64(i * SECTOR, "label")?;
        let sector = &head[at..at + 512];
        let label = read_at::<RawLabel>(sector, 0, "LVM label")?;
        if &label.id != LABEL_ID {
            continue;
        }
        if label.sector.get() != i {
            continue;
        }
        let crc = lvm_crc(INITIAL_CRC, &sector[20..]);
        if crc != label.crc.get() {
            return Err(ctx(Error::corrupt(format!(
                "the label's CRC is {:#010x}, its sector sums to {crc:#010x}",
                label.crc.get()
            )))
            .with_field("label_header.crc_xl"));
        }
        if &label.kind != LABEL_TYPE {
            return Err(Error::unsupported(format!(
                "LVM label on {place} is of type {:?}; diskcast reads LVM2 001",
                String::from_utf8_lossy(&label.kind)
            )));
        }
        let hdr = usize_from_u64(u64::from(label.offset.get()), "pv_header")?;
        if !(32..=512 - 48).contains(&hdr) {
            return Err(ctx(Error::corrupt(format!("the PV header offset {hdr} is outside the label sector")))
                .with_field("label_header.offset_xl"));
        }
        return pv_header(disk, start, len, place, &sector[hdr..]);
    }
    Ok(None)
}

/// The PV header (`pv_header`) at the start of `b`, and its metadata.
fn pv_header(disk: &dyn BlockRead, start: u64, len: u64, place: &str, b: &[u8]) -> Result<Option<FoundPv>> {
    let id: String = String::from_utf8_lossy(&b[..32]).into_owned();
    if !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'!' || c == b'#') {
        return Err(
            Error::corrupt(format!("LVM PV on {place}: the PV id {id:?} is not an LVM id")).with_field("pv_uuid")
        );
    }
    let mut at = 40usize;
    let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    // Data areas, then metadata areas, each ending with a zero entry; the sector bounds both.
    for list in &mut lists {
        loop {
            let Ok(l) = read_at::<RawLocn>(b, at, "disk_locn") else {
                return Err(Error::corrupt(format!(
                    "LVM PV on {place}: the PV header's area lists run past the label sector"
                ))
                .with_field("pv_header.disk_areas"));
            };
            at += 16;
            if l.offset.get() == 0 {
                break;
            }
            list.push((l.offset.get(), l.size.get()));
        }
    }
    let mut vg = None;
    let mut errors = Vec::new();
    for &(off, size) in &lists[1] {
        match read_mda(disk, start, len, off, size) {
            Ok(Some(m)) => {
                vg = Some(m);
                break;
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("metadata area at {off}: {e}")),
        }
    }
    if vg.is_none() && !errors.is_empty() {
        return Err(Error::corrupt(format!("LVM PV on {place}: no readable metadata ({})", errors.join("; "))));
    }
    Ok(Some(FoundPv { id, start, len, place: place.to_string(), vg }))
}

/// The committed metadata of the metadata area at `off` (bytes from the PV's start),
/// parsed; `None` when the area holds none (an orphan PV) or is ignored.
fn read_mda(disk: &dyn BlockRead, pv: u64, pv_len: u64, off: u64, size: u64) -> Result<Option<(u64, Section)>> {
    if off.checked_add(size).is_none_or(|e| e > pv_len) || size <= MDA_HEADER_SIZE {
        return Err(Error::corrupt(format!("the area of {size} bytes at {off} is not inside the PV ({pv_len} bytes)"))
            .with_field("pv_header.metadata_areas"));
    }
    let h = read_vec(disk, pv + off, 512)?;
    let head = read_at::<RawMdaHeader>(&h, 0, "mda_header")?;
    if &head.magic != MDA_MAGIC {
        return Err(Error::corrupt("the metadata area header has no LVM2 magic").with_field("mda_header.magic"));
    }
    let crc = lvm_crc(INITIAL_CRC, &h[4..]);
    if crc != head.checksum.get() {
        return Err(Error::corrupt(format!(
            "the metadata area header's CRC is {:#010x}, it sums to {crc:#010x}",
            head.checksum.get()
        ))
        .with_field("mda_header.checksum_xl"));
    }
    if head.version.get() != 1 || head.start.get() != off || head.size.get() != size {
        return Err(Error::corrupt(format!(
            "the metadata area header says version {}, start {}, size {}; the PV header says start {off}, size {size}",
            head.version.get(),
            head.start.get(),
            head.size.get()
        ))
        .with_field("mda_header.start"));
    }
    let slot = read_at::<RawTextLocn>(&h, 40, "raw_locn")?;
    let (t_off, t_size) = (slot.offset.get(), slot.size.get());
    if t_off == 0 || slot.flags.get() & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    let ring = size - MDA_HEADER_SIZE;
    if t_off < MDA_HEADER_SIZE || t_off >= size || t_size == 0 || t_size > ring || t_size > MAX_METADATA_TEXT {
        return Err(Error::corrupt(format!(
            "the committed metadata is {t_size} bytes at {t_off} of a {size}-byte area (the text must fit the area \
             after its 512-byte header, and at most {MAX_METADATA_TEXT} bytes: MAX_METADATA_TEXT)"
        ))
        .with_field("raw_locn.size"));
    }
    let first = t_size.min(size - t_off);
    let mut text = read_vec(disk, pv + off + t_off, usize_from_u64(first, "metadata")?)?;
    if first < t_size {
        text.extend(read_vec(disk, pv + off + MDA_HEADER_SIZE, usize_from_u64(t_size - first, "metadata")?)?);
    }
    let crc = lvm_crc(INITIAL_CRC, &text);
    if crc != slot.checksum.get() {
        return Err(Error::corrupt(format!(
            "the committed metadata text's CRC is {:#010x}, it sums to {crc:#010x}",
            slot.checksum.get()
        ))
        .with_field("raw_locn.checksum"));
    }
    let top = lvm_text::parse(&text)?;
    let (_, vg) = vg_section(&top)?;
    let seq = vg.u64("seqno", "the VG")?;
    Ok(Some((seq, top)))
}

/// The sector count `key` of `s` in bytes.
fn sectors(s: &Section, key: &str, what: &str) -> Result<u64> {
    s.u64(key, what)?
        .checked_mul(SECTOR)
        .ok_or_else(|| Error::corrupt(format!("LVM metadata: {what}'s {key} overflows")).with_field("lvm metadata"))
}

fn build_vg(top: &Section, seqno: u64, found: &[FoundPv]) -> Result<VolumeGroup> {
    let (name, vg) = vg_section(top)?;
    let extent_size = sectors(vg, "extent_size", "the VG")?;
    if extent_size == 0 {
        return Err(Error::corrupt(format!("LVM VG {name}: extent_size is 0")).with_field("extent_size"));
    }
    let mut pvs = Vec::new();
    for (key, p) in vg.section("physical_volumes").map(|s| s.sections().collect::<Vec<_>>()).unwrap_or_default() {
        let id = p.str("id", &format!("PV {key}"))?.to_string();
        let bare: String = id.chars().filter(|&c| c != '-').collect();
        let here = found.iter().find(|f| f.id == bare).map(|f| (f.start, f.len, f.place.clone()));
        pvs.push(PhysicalVolume {
            key: key.to_string(),
            id,
            pe_start: sectors(p, "pe_start", &format!("PV {key}"))?,
            pe_count: p.u64("pe_count", &format!("PV {key}"))?,
            found: here,
        });
    }
    let lv_secs: Vec<(&str, &Section)> =
        vg.section("logical_volumes").map(|s| s.sections().collect()).unwrap_or_default();
    if lv_secs.len() > MAX_LVS {
        return Err(Error::corrupt(format!("LVM VG {name} has {} LVs, more than {MAX_LVS} (MAX_LVS)", lv_secs.len()))
            .with_field("logical_volumes"));
    }
    // LVs that are the copy-on-write store of an old-style snapshot: their own
    // segments hold the exceptions, not the snapshot's view.
    let cow: Vec<&str> = lv_secs
        .iter()
        .flat_map(|(_, l)| l.sections())
        .filter(|(_, s)| s.str("type", "").is_ok_and(|t| t == "snapshot"))
        .filter_map(|(_, s)| s.str("cow_store", "").ok())
        .collect();
    let mut lvs = Vec::new();
    for (lv_name, l) in &lv_secs {
        if !l.strings("status").contains(&"VISIBLE") {
            continue;
        }
        lvs.push(build_lv(name, lv_name, l, extent_size, cow.contains(lv_name))?);
    }
    Ok(VolumeGroup { name: name.to_string(), seqno, extent_size, pvs, lvs })
}

fn build_lv(vg: &str, name: &str, l: &Section, extent_size: u64, is_cow: bool) -> Result<LogicalVolume> {
    let what = format!("LV {vg}/{name}");
    let segs: Vec<(&str, &Section)> = l.sections().filter(|(k, _)| k.starts_with("segment")).collect();
    if segs.len() > MAX_SEGMENTS {
        return Err(Error::corrupt(format!("{what} has more than {MAX_SEGMENTS} segments (MAX_SEGMENTS)"))
            .with_field("segment_count"));
    }
    let mut segments = Vec::with_capacity(segs.len());
    let mut refusal = is_cow.then(|| "a snapshot (its copy-on-write store)".to_string());
    let mut next = 0u64;
    for (key, s) in segs {
        let swhat = format!("{what} {key}");
        let start_extent = s.u64("start_extent", &swhat)?;
        let count = s.u64("extent_count", &swhat)?;
        if start_extent != next || count == 0 {
            return Err(Error::corrupt(format!(
                "{swhat} starts at extent {start_extent} with {count} extents; the LV's segments must follow each \
                 other from extent 0 (next is {next})"
            ))
            .with_field("start_extent"));
        }
        next = start_extent.checked_add(count).ok_or_else(|| Error::corrupt(format!("{swhat}: extents overflow")))?;
        let kind = s.str("type", &swhat)?.to_string();
        let (start, len) = match (start_extent.checked_mul(extent_size), count.checked_mul(extent_size)) {
            (Some(a), Some(b)) if a.checked_add(b).is_some() => (a, b),
            _ => return Err(Error::corrupt(format!("{swhat}: its byte range overflows")).with_field("extent_count")),
        };
        let mut seg = Segment { start, len, kind: kind.clone(), stripe_size: 0, stripes: Vec::new() };
        if kind == "striped" {
            let n = s.u64("stripe_count", &swhat)?;
            if n == 0 || n > MAX_STRIPES || count % n != 0 {
                return Err(Error::corrupt(format!(
                    "{swhat} has {n} stripes over {count} extents (1..={MAX_STRIPES} stripes, dividing the extents)"
                ))
                .with_field("stripe_count"));
            }
            if n > 1 {
                seg.stripe_size = sectors(s, "stripe_size", &swhat)?;
                let per = (count / n).checked_mul(extent_size).unwrap_or(0);
                if seg.stripe_size == 0 || per % seg.stripe_size != 0 {
                    return Err(Error::corrupt(format!(
                        "{swhat}: a stripe size of {} bytes does not divide each stripe's {per} bytes",
                        seg.stripe_size
                    ))
                    .with_field("stripe_size"));
                }
            }
            let Some(Value::List(items)) = s.value("stripes") else {
                return Err(Error::corrupt(format!("{swhat} has no stripes list")).with_field("stripes"));
            };
            for pair in items.chunks(2) {
                match pair {
                    [Value::Str(pv), Value::Num(e)] => {
                        let e = u64::try_from(*e)
                            .map_err(|_| Error::corrupt(format!("{swhat}: a negative extent")).with_field("stripes"))?;
                        seg.stripes.push((pv.clone(), e));
                    }
                    _ => {
                        return Err(Error::corrupt(format!("{swhat}: stripes must be \"pvN\", extent pairs"))
                            .with_field("stripes"));
                    }
                }
            }
            if u64_from_usize(seg.stripes.len()) != n {
                return Err(Error::corrupt(format!("{swhat} lists {} stripes, not {n}", seg.stripes.len()))
                    .with_field("stripes"));
            }
        } else if refusal.is_none() {
            refusal = Some(refusal_for(&kind));
        }
        segments.push(seg);
    }
    let size = next.checked_mul(extent_size).ok_or_else(|| Error::corrupt(format!("{what}: its size overflows")))?;
    Ok(LogicalVolume { vg: vg.to_string(), name: name.to_string(), size, segments, refusal })
}

/// What an LV with a segment of `kind` is, for the refusal.
fn refusal_for(kind: &str) -> String {
    let what = match kind {
        "thin" => "a thin volume",
        "thin-pool" => "a thin pool",
        "snapshot" => "a snapshot",
        "mirror" => "a mirror",
        "cache" | "cache-pool" | "writecache" => "a cached volume",
        "vdo" | "vdo-pool" => "a VDO volume",
        "integrity" => "an integrity volume",
        k if k.starts_with("raid") => "a RAID volume",
        _ => return format!("made of {kind:?} segments"),
    };
    format!("{what} ({kind} segments)")
}

/// A segment mapped onto the disk: `starts` holds each stripe's first byte on the disk.
#[derive(Debug, Clone)]
struct Piece {
    start: u64,
    len: u64,
    /// Stripe (chunk) size; 0 for a single stripe.
    chunk: u64,
    starts: Vec<u64>,
}

impl Piece {
    /// Where LV byte `off` (inside this piece) is on the disk, and how many bytes from
    /// there are contiguous.
    fn map(&self, off: u64) -> (u64, u64) {
        let rel = off - self.start;
        if self.starts.len() == 1 || self.chunk == 0 {
            return (self.starts[0] + rel, self.len - rel);
        }
        let n = u64_from_usize(self.starts.len());
        let chunk = rel / self.chunk;
        let stripe = usize_from_u64(chunk % n, "stripe").unwrap_or(0);
        let within = rel % self.chunk;
        (self.starts[stripe] + (chunk / n) * self.chunk + within, self.chunk - within)
    }
}

/// A logical volume read as a disk of its own: its segments laid end to end.
#[derive(Debug, Clone)]
pub struct LvView {
    disk: Arc<dyn BlockRead>,
    pieces: Vec<Piece>,
    size: u64,
    label: String,
}

impl LvView {
    fn piece(&self, off: u64) -> Result<&Piece> {
        let i = self.pieces.partition_point(|p| p.start + p.len <= off);
        self.pieces.get(i).ok_or_else(|| Error::out_of_bounds(format!("{} has no byte {off}", self.label)))
    }
}

impl BlockRead for LvView {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + u64_from_usize(done);
            let (phys, run) = self.piece(at)?.map(at);
            let n = usize::try_from(run).unwrap_or(usize::MAX).min(buf.len() - done);
            self.disk.read_at(&mut buf[done..done + n], phys)?;
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.size {
            return Err(
                Error::out_of_bounds(format!("extent query past the end of {}", self.label)).with_offset(offset)
            );
        }
        let (phys, run) = self.piece(offset)?.map(offset);
        let e = resolved_extent(self.disk.as_ref(), phys, max_len.min(run).max(1))?;
        Ok(Extent { offset, len: e.len.max(1).min(run), alloc: e.alloc })
    }

    fn info(&self) -> ImageInfo {
        let mut i = self.disk.info();
        i.virtual_size = self.size;
        i.format = format!("{} ({})", i.format, self.label);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_lvm_seed_semantics() {
        // calc_crc(INITIAL_CRC, "") is the seed itself.
        assert_eq!(lvm_crc(INITIAL_CRC, b""), INITIAL_CRC);
        // Chaining equals one pass, as LVM's wrapped texts need.
        let a = lvm_crc(lvm_crc(INITIAL_CRC, b"abc"), b"def");
        assert_eq!(a, lvm_crc(INITIAL_CRC, b"abcdef"));
    }

    #[test]
    fn striped_piece_maps_chunks_round_robin() {
        let p = Piece { start: 0, len: 4 * 64, chunk: 64, starts: vec![1000, 5000] };
        assert_eq!(p.map(0), (1000, 64));
        assert_eq!(p.map(64), (5000, 64));
        assert_eq!(p.map(130), (1066, 62));
        assert_eq!(p.map(200), (5072, 56));
    }
}
