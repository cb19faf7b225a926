//! Internal snapshots (qcow2.txt "Snapshots"): the snapshot table read with bounds on
//! every count, offset and length, and `snapshot -c/-a/-d` done through the [`Editor`]
//! in an order that leaves an interrupted change with at worst leaked clusters.
//!
//! - create: the active L1 table is copied to new clusters, every L2 table and cluster
//!   it reaches gets one more reference (OFLAG_COPIED cleared where that makes two), then
//!   a new snapshot table with the entry is written and the header switched to it.
//! - apply: the snapshot's tree gets one more reference, its L1 entries replace the
//!   active table's (and its disk size the virtual size), then the old active tree loses
//!   one and OFLAG_COPIED is recomputed.
//! - delete: a new table without the entry is written and the header switched first,
//!   then the snapshot's tree and L1 table lose their references.
//!
//! Entries are written as qemu 10 writes them: 24 bytes of extra data
//! (vm_state_size_large, disk_size, icount), IDs one above the largest numeric ID.

use crate::edit::Editor;
use crate::header::{Header, L1_RESERVED, MAX_L1_BYTES, OFLAG_COPIED};
use diskcast_block::io::ImageFile;
use diskcast_block::registry::SnapshotRef;
use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result, SnapshotInfo};
use diskcast_layout::{Be16, Be32, Be64, FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned, u64_from_usize};
use std::borrow::Borrow;

/// qemu's QCOW_MAX_SNAPSHOTS.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA: extra data per entry it accepts.
pub const MAX_EXTRA_DATA: u32 = 1024;
/// qemu's QCOW_MAX_SNAPSHOTS_SIZE: the whole table at most 64 MiB, which bounds the one
/// buffer we read it into.
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Fixed part of a table entry.
pub const ENTRY_FIXED: u64 = 40;
/// Extra data qemu writes: vm_state_size_large, disk_size, icount.
const EXTRA_WRITTEN: usize = 24;

/// The fixed part of a snapshot table entry; extra data, the ID and the name follow,
/// padded to 8 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawSnapshot {
    pub l1_table_offset: Be64,
    pub l1_size: Be32,
    pub id_str_size: Be16,
    pub name_size: Be16,
    pub date_sec: Be32,
    pub date_nsec: Be32,
    pub vm_clock_nsec: Be64,
    pub vm_state_size: Be32,
    pub extra_data_size: Be32,
}
const _: () = assert!(size_of::<RawSnapshot>() == 40);

/// One snapshot table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The fixed fields as stored.
    pub raw: RawSnapshot,
    /// Extra data as stored (kept byte for byte when the table is rewritten).
    pub extra: Vec<u8>,
    /// The unique ID (qemu's are decimal numbers).
    pub id: Vec<u8>,
    /// The name (tag).
    pub name: Vec<u8>,
}

impl PartialEq for RawSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for RawSnapshot {}

impl Snapshot {
    /// Host offset of its L1 table.
    pub fn l1_offset(&self) -> u64 {
        self.raw.l1_table_offset.get()
    }
    /// Entries in its L1 table.
    pub fn l1_size(&self) -> u32 {
        self.raw.l1_size.get()
    }
    fn extra_u64(&self, at: usize) -> Option<u64> {
        self.extra.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()))
    }
    /// The VM state size: the 64-bit field from the extra data when present.
    pub fn vm_state_size(&self) -> u64 {
        self.extra_u64(0).unwrap_or_else(|| u64::from(self.raw.vm_state_size.get()))
    }
    /// The virtual disk size when the snapshot was taken, if recorded.
    pub fn disk_size(&self) -> Option<u64> {
        self.extra_u64(8)
    }
    /// The instruction count (record/replay), if recorded (`u64::MAX`: none).
    pub fn icount(&self) -> Option<u64> {
        self.extra_u64(16).filter(|&v| v != u64::MAX)
    }
    /// The ID as text.
    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
    /// The name as text.
    pub fn name_str(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
    /// As `info` and `snapshot -l` show it.
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id_str(),
            name: self.name_str(),
            vm_state_size: self.vm_state_size(),
            date_sec: self.raw.date_sec.get(),
            date_nsec: self.raw.date_nsec.get(),
            vm_clock_nsec: self.raw.vm_clock_nsec.get(),
            icount: self.icount(),
        }
    }

    /// Bytes of this entry in the table, padding included.
    fn stored_len(&self) -> u64 {
        (ENTRY_FIXED + u64_from_usize(self.extra.len() + self.id.len() + self.name.len())).next_multiple_of(8)
    }

    fn serialize_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(self.raw.as_bytes());
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.name);
        out.resize(start + (out.len() - start).next_multiple_of(8), 0);
    }
}

/// The image's snapshot table, every entry bounded: at most [`MAX_SNAPSHOTS`] entries in
/// at most [`MAX_TABLE_BYTES`] inside the file, extra data at most [`MAX_EXTRA_DATA`]
/// bytes, each L1 table cluster aligned, at most qemu's L1 size and inside the file.
pub fn read_table(file: &dyn ByteSource, h: &Header) -> Result<Vec<Snapshot>> {
    let n = h.nb_snapshots;
    if n == 0 {
        return Ok(Vec::new());
    }
    let bad = |msg: String| Error::corrupt(msg).with_field("snapshots_offset").with_offset(h.snapshots_offset);
    if n > MAX_SNAPSHOTS {
        return Err(bad(format!("{n} snapshots: more than qemu's limit of {MAX_SNAPSHOTS}")).with_field("nb_snapshots"));
    }
    let cs = h.cluster_size();
    let file_len = file.len()?;
    let start = h.snapshots_offset;
    if start == 0 || !start.is_multiple_of(cs) || start >= file_len {
        return Err(bad(format!(
            "the snapshot table at {start:#x} is not a cluster-aligned offset inside the {file_len}-byte file"
        )));
    }
    // The table cannot run past the file, nor past qemu's limit.
    let limit = start.saturating_add(MAX_TABLE_BYTES).min(file_len);
    let mut pos = start;
    let mut out = Vec::with_capacity(diskcast_layout::usize_from_u64(u64::from(n).min(1024), "snapshots")?);
    for i in 0..n {
        let past = |what: &str| {
            bad(format!("snapshot {i}'s {what} runs past the end of the file or qemu's 64 MiB table limit"))
        };
        if pos.checked_add(ENTRY_FIXED).is_none_or(|e| e > limit) {
            return Err(past("entry"));
        }
        let mut raw = RawSnapshot::default();
        file.read_exact_at(raw.as_mut_bytes(), pos)?;
        let extra_len = raw.extra_data_size.get();
        if extra_len > MAX_EXTRA_DATA {
            return Err(bad(format!(
                "snapshot {i} has {extra_len} bytes of extra data, more than qemu's limit of {MAX_EXTRA_DATA}"
            )));
        }
        let (e, d, m) = (
            diskcast_layout::usize_from(extra_len),
            usize::from(raw.id_str_size.get()),
            usize::from(raw.name_size.get()),
        );
        let var_at = pos + ENTRY_FIXED;
        let var_end = var_at + u64_from_usize(e + d + m);
        if var_end > limit {
            return Err(past("extra data, ID or name"));
        }
        let mut var = vec![0u8; e + d + m];
        file.read_exact_at(&mut var, var_at)?;
        let name = var.split_off(e + d);
        let id = var.split_off(e);
        let extra = var;
        let l1_off = raw.l1_table_offset.get();
        let l1_bytes = u64::from(raw.l1_size.get()) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad(format!(
                "snapshot {i}'s L1 table has {} entries, more than qemu's limit of {}",
                raw.l1_size.get(),
                MAX_L1_BYTES / 8
            )));
        }
        if l1_bytes > 0
            && (l1_off < cs || !l1_off.is_multiple_of(cs) || l1_off.checked_add(l1_bytes).is_none_or(|e| e > file_len))
        {
            return Err(bad(format!(
                "snapshot {i}'s L1 table at {l1_off:#x} ({l1_bytes} bytes) is not cluster aligned inside the file"
            )));
        }
        pos = var_end.next_multiple_of(8);
        out.push(Snapshot { raw, extra, id, name });
    }
    Ok(out)
}

/// The snapshot `which` names (an ID tried on every snapshot before a name, as qemu
/// looks them up for `snapshot -a` and `convert -l`).
pub fn find<'a>(snaps: &'a [Snapshot], which: &SnapshotRef) -> Option<&'a Snapshot> {
    let pick = |by_name: bool| snaps.iter().find(|s| which.matches(&s.id_str(), &s.name_str(), by_name));
    pick(false).or_else(|| pick(true))
}

/// A snapshot's L1 table, checked entry by entry (reserved bits clear).
pub fn read_l1(file: &dyn ByteSource, s: &Snapshot) -> Result<Vec<u64>> {
    let l1 = crate::header::read_u64_table(file, s.l1_offset(), u64::from(s.l1_size()), "snapshot_l1_table")?;
    if let Some((i, e)) = l1.iter().enumerate().find(|(_, e)| *e & L1_RESERVED != 0) {
        return Err(Error::corrupt(format!("snapshot {:?}: L1 entry {i} has reserved bits set: {e:#x}", s.name_str()))
            .with_field("snapshot_l1_table"));
    }
    Ok(l1)
}

/// Writes `snaps` as the image's snapshot table: to new clusters, counted before the
/// header names them; the old table is freed after.
fn write_table<F: Borrow<ImageFile>>(ed: &mut Editor<F>, snaps: &[Snapshot]) -> Result<()> {
    let old = (ed.header().snapshots_offset, ed.header().nb_snapshots);
    let old_len =
        if old.1 > 0 { read_table(ed.file(), ed.header())?.iter().map(Snapshot::stored_len).sum() } else { 0 };
    let mut bytes = Vec::new();
    for s in snaps {
        s.serialize_into(&mut bytes);
    }
    if u64_from_usize(bytes.len()) > MAX_TABLE_BYTES {
        return Err(Error::unsupported(format!(
            "the snapshot table would exceed qemu's limit of {MAX_TABLE_BYTES} bytes"
        )));
    }
    let count = u32::try_from(snaps.len()).map_err(|_| Error::unsupported("too many snapshots"))?;
    let at = if bytes.is_empty() {
        0
    } else {
        let cs = ed.cluster_size();
        let clusters = u64_from_usize(bytes.len()).div_ceil(cs);
        let at = ed.allocate(clusters)?;
        bytes.resize(diskcast_layout::usize_from_u64(clusters * cs, "snapshot table")?, 0);
        ed.file().write_all_at(&bytes, at)?;
        at
    };
    ed.flush()?;
    ed.write_snapshot_fields(count, at)?;
    if old.0 != 0 && old_len > 0 {
        ed.free(old.0, old_len)?;
    }
    ed.flush()
}

/// Seconds and nanoseconds since the epoch, now (the snapshot's date, as qemu records it).
fn now() -> (u32, u32) {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (u32::try_from(d.as_secs()).unwrap_or(u32::MAX), d.subsec_nanos())
}

/// `snapshot -c NAME`: a new snapshot of the active image.
pub fn create<F: Borrow<ImageFile>>(ed: &mut Editor<F>, name: &str) -> Result<SnapshotInfo> {
    let name_size = u16::try_from(name.len())
        .map_err(|_| Error::argument(format!("a snapshot name is at most {} bytes long", u16::MAX)))?;
    let mut snaps = read_table(ed.file(), ed.header())?;
    if snaps.len() >= usize::try_from(MAX_SNAPSHOTS).unwrap_or(usize::MAX) {
        return Err(Error::unsupported(format!("the image already has qemu's maximum of {MAX_SNAPSHOTS} snapshots")));
    }
    // IDs as qemu assigns them: one above the largest numeric ID.
    let next = snaps.iter().filter_map(|s| std::str::from_utf8(&s.id).ok()?.parse::<u64>().ok()).max().unwrap_or(0) + 1;
    let id = next.to_string();
    ed.flush()?;
    let l1: Vec<u64> = ed.l1().iter().map(|e| e & !OFLAG_COPIED).collect();
    let cs = ed.cluster_size();
    let l1_bytes = u64_from_usize(l1.len()) * 8;
    let l1_at = if l1.is_empty() {
        0
    } else {
        let clusters = l1_bytes.div_ceil(cs);
        let at = ed.allocate(clusters)?;
        let mut b: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
        b.resize(diskcast_layout::usize_from_u64(clusters * cs, "L1 table")?, 0);
        ed.file().write_all_at(&b, at)?;
        at
    };
    ed.adjust_tree(&l1, true)?;
    ed.recompute_copied()?;
    ed.flush()?;
    let (sec, nsec) = now();
    let mut extra = Vec::with_capacity(EXTRA_WRITTEN);
    extra.extend_from_slice(&0u64.to_be_bytes()); // vm_state_size_large: no VM state
    extra.extend_from_slice(&ed.header().size.to_be_bytes()); // disk_size
    extra.extend_from_slice(&0u64.to_be_bytes()); // icount, as qemu-img records it
    let raw = RawSnapshot {
        l1_table_offset: l1_at.into(),
        l1_size: u32::try_from(l1.len()).map_err(|_| Error::corrupt("L1 table too large"))?.into(),
        id_str_size: u16::try_from(id.len()).unwrap_or(0).into(),
        name_size: name_size.into(),
        date_sec: sec.into(),
        date_nsec: nsec.into(),
        vm_clock_nsec: 0.into(),
        vm_state_size: 0.into(),
        extra_data_size: u32::try_from(EXTRA_WRITTEN).unwrap_or(0).into(),
    };
    let snap = Snapshot { raw, extra, id: id.into_bytes(), name: name.as_bytes().to_vec() };
    let info = snap.info();
    snaps.push(snap);
    write_table(ed, &snaps)?;
    Ok(info)
}

/// `snapshot -a KEY` (ID or name): the active image becomes the snapshot's.
pub fn apply<F: Borrow<ImageFile>>(ed: &mut Editor<F>, key: &str) -> Result<()> {
    let snaps = read_table(ed.file(), ed.header())?;
    let snap = find(&snaps, &SnapshotRef::IdOrName(key.to_string())).ok_or_else(|| not_found(key))?.clone();
    let l1 = read_l1(ed.file(), &snap)?;
    let size = snap.disk_size().unwrap_or(ed.header().size);
    let need = Header::l1_entries_for(size, ed.header().cluster_bits, 8);
    if u64_from_usize(l1.len()) < need {
        return Err(Error::corrupt(format!(
            "snapshot {:?}'s L1 table of {} entries cannot map its disk size of {size} bytes",
            snap.name_str(),
            l1.len()
        )));
    }
    ed.flush()?;
    ed.adjust_tree(&l1, true)?;
    ed.flush()?;
    let old: Vec<u64> = ed.l1().to_vec();
    ed.replace_l1(l1.iter().map(|e| e & !OFLAG_COPIED).collect())?;
    ed.set_size(size)?;
    ed.flush()?;
    ed.adjust_tree(&old, false)?;
    ed.flush()?;
    ed.recompute_copied()?;
    ed.flush()
}

/// `snapshot -d NAME`: the snapshot named `name` (by name, as qemu-img deletes) dropped.
pub fn delete<F: Borrow<ImageFile>>(ed: &mut Editor<F>, name: &str) -> Result<()> {
    let mut snaps = read_table(ed.file(), ed.header())?;
    let i = snaps.iter().position(|s| s.name == name.as_bytes()).ok_or_else(|| not_found(name))?;
    let snap = snaps.remove(i);
    let l1 = read_l1(ed.file(), &snap)?;
    ed.flush()?;
    write_table(ed, &snaps)?;
    ed.adjust_tree(&l1, false)?;
    if snap.l1_size() > 0 {
        ed.free(snap.l1_offset(), u64::from(snap.l1_size()) * 8)?;
    }
    ed.flush()?;
    ed.recompute_copied()?;
    ed.flush()
}

fn not_found(key: &str) -> Error {
    Error::argument(format!("snapshot {key:?} not found (`diskcast snapshot -l` lists them)")).with_field("snapshot")
}
