//! Disk images: a filesystem directly on the disk, or on one of its partitions
//! (`DISK:PART`, PART a number, a GPT name or a type such as `esp` or `root`).

use crate::read_filesystem;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_formats::FsRegistry;
use diskcast_part::lvm::{self, LogicalVolume, Lvm};
use diskcast_part::{PartType, PartitionView, Table, read_table};
use diskcast_tree::{ReadOptions, Tree};
use std::path::Path;
use std::sync::Arc;

/// `spec` split into the disk's path and the partition selector: `disk.qcow2:esp` is
/// (`disk.qcow2`, `esp`) unless a file named `disk.qcow2:esp` exists.
pub(crate) fn split_spec(spec: &str) -> (&str, Option<&str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    match spec.rsplit_once(':') {
        Some((disk, part)) if !disk.is_empty() && is_selector(part) && Path::new(disk).exists() => (disk, Some(part)),
        _ => (spec, None),
    }
}

/// A partition selector (`2`, `esp`) or an LV (`vg/lv`): not empty, at most one `/`,
/// with a name on both sides of it.
fn is_selector(part: &str) -> bool {
    let mut names = part.split('/');
    names.clone().count() <= 2 && names.all(|n| !n.is_empty())
}

/// What was read off a disk.
pub(crate) struct DiskTree {
    pub tree: Tree,
    /// The filesystem's name and where it was (`fat`, `fat on partition 1 (esp)`).
    pub what: String,
    pub warnings: Vec<String>,
}

/// Where a disk's tree is: a partition, or an LVM logical volume.
enum Chosen {
    Part(diskcast_part::Partition),
    Lv(Lvm, LogicalVolume),
}

/// The tree on `disk`: with `part`, the filesystem of that partition or LVM logical
/// volume (`vg/lv`, or `lv` when no partition answers to it); without, a filesystem on the
/// whole disk, else the partition or LV [`choose_partition`] picks.
pub(crate) fn read_disk(disk: Arc<dyn BlockRead>, part: Option<&str>, opts: &ReadOptions) -> Result<DiskTree> {
    let label = opts.label.clone();
    let registry = diskcast_formats::filesystems();
    if part.is_none()
        && let Some((fs, reader)) = registry.probe(disk.as_ref())?
    {
        let tree = reader.read(disk, opts)?;
        return Ok(DiskTree { tree, what: fs.name.to_string(), warnings: Vec::new() });
    }
    let table = read_table(disk.as_ref()).map_err(|e| e.with_file(&label))?;
    let scan = || lvm::scan(disk.as_ref(), table.as_ref()).map_err(|e| e.with_file(&label));
    let chosen = match (part, &table) {
        (Some(sel), Some(t)) if !sel.contains('/') => match t.select(sel) {
            Ok(p) => Chosen::Part(p.clone()),
            Err(e) => match scan()? {
                Some(l) if l.select(sel).is_ok() => {
                    let lv = l.select(sel)?.clone();
                    Chosen::Lv(l, lv)
                }
                Some(l) => return Err(Error::argument(format!("{e}; LVM holds: {}", l.listing())).with_file(&label)),
                None => return Err(e.with_file(&label)),
            },
        },
        (Some(sel), _) => match scan()? {
            Some(l) => {
                let lv = l.select(sel).map_err(|e| e.with_file(&label))?.clone();
                Chosen::Lv(l, lv)
            }
            None if table.is_some() => {
                return Err(Error::argument(format!("{label} holds no LVM physical volume, so :{sel} names nothing")));
            }
            None => {
                return Err(Error::argument(format!(
                    "{label} has no partition table and no LVM physical volume, so :{sel} names nothing"
                )));
            }
        },
        (None, None) => match scan()? {
            Some(l) => match choose_lv(&disk, &l, &label, &registry)? {
                Some(lv) => Chosen::Lv(l, lv),
                None => {
                    return Err(Error::unsupported(format!(
                        "{label} is an LVM physical volume with no root LV (named root, or holding a Linux \
                         filesystem); name one as {label}:VG/LV. LVM holds: {}",
                        l.listing()
                    )));
                }
            },
            None => {
                return read_filesystem(disk, opts).map(|(tree, fs)| DiskTree {
                    tree,
                    what: fs.into(),
                    warnings: vec![],
                });
            }
        },
        (None, Some(t)) => choose_partition(&disk, t, scan, &label, &registry)?,
    };
    let warnings = table.as_ref().map(|t| t.warnings.clone()).unwrap_or_default();
    let (view, where_, sub_label): (Arc<dyn BlockRead>, String, String) = match chosen {
        Chosen::Part(chosen) => {
            let name = if chosen.name.is_empty() { chosen.type_label() } else { chosen.name.clone() };
            let kind = table.as_ref().map_or("", |t| t.kind.name());
            let where_ = format!("partition {} ({name})", chosen.number);
            let view =
                PartitionView::new(disk, chosen.start, chosen.len, where_.clone()).map_err(|e| e.with_file(&label))?;
            (Arc::new(view), format!("{where_} of {kind} table"), format!("{label}:{}", chosen.number))
        }
        Chosen::Lv(l, lv) => {
            let view = l.open(disk, &lv).map_err(|e| e.with_file(&label))?;
            (Arc::new(view), format!("LV {}", lv.describe()), format!("{label}:{}/{}", lv.vg, lv.name))
        }
    };
    let sub = ReadOptions { label: sub_label.clone(), ..opts.clone() };
    if let Some(fs) = other_linux_fs(view.as_ref())
        && registry.probe(view.as_ref()).ok().flatten().is_none()
    {
        return Err(Error::unsupported(format!(
            "{sub_label} ({where_}) holds {fs}, which diskcast cannot read (it reads {})",
            registry.reader_names().join(", ")
        )));
    }
    let (tree, fs) = read_filesystem(view, &sub)?;
    Ok(DiskTree { tree, what: format!("{fs} on {where_}"), warnings })
}

/// The LV a disk's tree comes from: the one visible LV named `root`, else the one
/// holding a Linux filesystem. Several candidates is an error listing them; none is
/// `None`.
fn choose_lv(disk: &Arc<dyn BlockRead>, l: &Lvm, label: &str, registry: &FsRegistry) -> Result<Option<LogicalVolume>> {
    let several = |what: &str, hits: &[&LogicalVolume]| {
        let list: Vec<String> = hits.iter().map(|v| format!("{}/{}", v.vg, v.name)).collect();
        Err(Error::argument(format!(
            "{label} has several {what} ({}); name one as {label}:VG/LV. LVM holds: {}",
            list.join(", "),
            l.listing()
        )))
    };
    let roots: Vec<&LogicalVolume> = l.lvs().filter(|v| v.name == "root").collect();
    match roots.as_slice() {
        [one] => return Ok(Some((*one).clone())),
        [] => {}
        many => return several("LVs named root", many),
    }
    let mut linux = Vec::new();
    for v in l.lvs() {
        let Ok(view) = l.open(disk.clone(), v) else { continue };
        if registry.probe(&view).ok().flatten().is_some_and(|(fs, _)| fs.is_linux()) || other_linux_fs(&view).is_some()
        {
            linux.push(v);
        }
    }
    match linux.as_slice() {
        [one] => Ok(Some((*one).clone())),
        [] => Ok(None),
        many => several("LVs with Linux filesystems", many),
    }
}

/// The partition (or LVM logical volume) a disk's tree comes from when the user named
/// none: the root filesystem of a whole VM disk, so `convert vm.qcow2 oci:DIR:TAG` takes
/// the system and not its ESP. In order:
/// 1. the one partition whose GPT type is this architecture's root type (UAPI
///    Discoverable Partitions Specification), whatever it holds;
/// 2. else, when a partition is an LVM physical volume, the LV [`choose_lv`] picks (the
///    RHEL family's layout: `/boot` on a partition, the root in LVM);
/// 3. else the one partition holding a Linux filesystem (ext2/3/4, squashfs, XFS, or Btrfs,
///    which then fails to read with a clear error);
/// 4. else the one partition holding any filesystem diskcast reads.
///
/// Several candidates at the first step that has any is an error listing them and
/// asking for `DISK:PART`.
fn choose_partition(
    disk: &Arc<dyn BlockRead>,
    table: &Table,
    lvm: impl FnOnce() -> Result<Option<Lvm>>,
    label: &str,
    registry: &FsRegistry,
) -> Result<Chosen> {
    let several = |what: &str, hits: &[&diskcast_part::Partition]| {
        let list: Vec<String> = hits.iter().map(|p| format!("{} ({})", p.number, p.type_label())).collect();
        Err(Error::argument(format!(
            "{label} has several {what} (partitions {}); name one as {label}:PART (number, name or type). \
             The disk has: {}",
            list.join(", "),
            table.listing()
        )))
    };
    let root_type = PartType::parse("root");
    let roots: Vec<&diskcast_part::Partition> =
        table.partitions.iter().filter(|p| p.type_guid.is_some() && p.known_type() == root_type).collect();
    match roots.as_slice() {
        [one] => return Ok(Chosen::Part((*one).clone())),
        [] => {}
        many => return several("root partitions", many),
    }
    // PVs are looked into only when no partition has the root type, so a damaged PV
    // elsewhere on the disk does not stand in the way of a discoverable root.
    if let Some(l) = lvm()?
        && let Some(lv) = choose_lv(disk, &l, label, registry)?
    {
        return Ok(Chosen::Lv(l, lv));
    }
    let mut linux = Vec::new();
    let mut readable = Vec::new();
    for p in &table.partitions {
        let Ok(view) = PartitionView::new(disk.clone(), p.start, p.len, "") else { continue };
        let found = registry.probe(&view).ok().flatten();
        if found.is_some_and(|(fs, _)| fs.is_linux()) || other_linux_fs(&view).is_some() {
            linux.push(p);
        }
        if found.is_some() {
            readable.push(p);
        }
    }
    match linux.as_slice() {
        [one] => return Ok(Chosen::Part((*one).clone())),
        [] => {}
        many => return several("partitions with Linux filesystems", many),
    }
    match readable.as_slice() {
        [one] => Ok(Chosen::Part((*one).clone())),
        [] => Err(Error::unsupported(format!(
            "no partition of {label} holds a filesystem diskcast reads; partitions: {}",
            table.listing()
        ))),
        many => several("partitions with filesystems", many),
    }
}

/// Btrfs (`_BHRfS_M` at 64 KiB + 64): a Linux root filesystem diskcast does not read,
/// recognised so that it is chosen (and refused by name) rather than passed over for
/// the ESP.
fn other_linux_fs(part: &dyn BlockRead) -> Option<&'static str> {
    let magic_at = |offset: u64, magic: &[u8]| {
        let mut b = vec![0u8; magic.len()];
        offset + magic.len() as u64 <= part.size() && part.read_at(&mut b, offset).is_ok() && b == magic
    };
    magic_at(0x10040, b"_BHRfS_M").then_some("Btrfs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_splits_only_when_the_disk_exists() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.img");
        std::fs::write(&disk, b"x").unwrap();
        let d = disk.to_str().unwrap();
        assert_eq!(split_spec(&format!("{d}:esp")), (d, Some("esp")));
        assert_eq!(split_spec(d), (d, None));
        assert_eq!(split_spec("nothing:2"), ("nothing:2", None));
        assert_eq!(split_spec(&format!("{d}:vg/root")), (d, Some("vg/root")));
        assert_eq!(split_spec(&format!("{d}:a/b/c")), (format!("{d}:a/b/c").as_str(), None));
        assert_eq!(split_spec(&format!("{d}:/x")), (format!("{d}:/x").as_str(), None));
        let odd = dir.path().join("e.img:2");
        std::fs::write(&odd, b"x").unwrap();
        assert_eq!(split_spec(odd.to_str().unwrap()), (odd.to_str().unwrap(), None));
    }
}
