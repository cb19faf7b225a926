//! Disk images: a filesystem directly on the disk, or on one of its partitions
//! (`DISK:PART`, PART a number, a GPT name or a type such as `esp` or `root`).

use crate::read_filesystem;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_formats::FsRegistry;
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
        Some((disk, part))
            if !disk.is_empty() && !part.is_empty() && !part.contains('/') && Path::new(disk).exists() =>
        {
            (disk, Some(part))
        }
        _ => (spec, None),
    }
}

/// What was read off a disk.
pub(crate) struct DiskTree {
    pub tree: Tree,
    /// The filesystem's name and where it was (`fat`, `fat on partition 1 (esp)`).
    pub what: String,
    pub warnings: Vec<String>,
}

/// The tree on `disk`: with `part`, the filesystem of that partition; without, a
/// filesystem on the whole disk, else the partition [`choose_partition`] picks.
pub(crate) fn read_disk(disk: Arc<dyn BlockRead>, part: Option<&str>, opts: &ReadOptions) -> Result<DiskTree> {
    let label = opts.label.clone();
    let registry = diskcast_formats::filesystems();
    if part.is_none()
        && let Some((fs, reader)) = registry.probe(disk.as_ref())?
    {
        let tree = reader.read(disk, opts)?;
        return Ok(DiskTree { tree, what: fs.name.to_string(), warnings: Vec::new() });
    }
    let Some(table) = read_table(disk.as_ref()).map_err(|e| e.with_file(&label))? else {
        if let Some(p) = part {
            return Err(Error::argument(format!("{label} has no partition table, so :{p} names nothing")));
        }
        return read_filesystem(disk, opts).map(|(tree, fs)| DiskTree { tree, what: fs.into(), warnings: vec![] });
    };
    let chosen = match part {
        Some(sel) => table.select(sel).map_err(|e| e.with_file(&label))?.clone(),
        None => choose_partition(&disk, &table, &label, &registry)?,
    };
    let name = if chosen.name.is_empty() { chosen.type_label() } else { chosen.name.clone() };
    let where_ = format!("partition {} ({name})", chosen.number);
    let view = PartitionView::new(disk, chosen.start, chosen.len, where_.clone()).map_err(|e| e.with_file(&label))?;
    let sub = ReadOptions { label: format!("{label}:{}", chosen.number), ..opts.clone() };
    if let Some(fs) = other_linux_fs(&view)
        && registry.probe(&view).ok().flatten().is_none()
    {
        return Err(Error::unsupported(format!(
            "{label}:{} ({where_}) holds {fs}, which diskcast cannot read (it reads {})",
            chosen.number,
            registry.reader_names().join(", ")
        )));
    }
    let (tree, fs) = read_filesystem(Arc::new(view), &sub)?;
    Ok(DiskTree { tree, what: format!("{fs} on {where_} of {} table", table.kind.name()), warnings: table.warnings })
}

/// The partition a disk's tree comes from when the user named none: the root
/// filesystem of a whole VM disk, so `convert vm.qcow2 oci:DIR:TAG` takes the system and
/// not its ESP. In order:
/// 1. the one partition whose GPT type is this architecture's root type (UAPI
///    Discoverable Partitions Specification), whatever it holds;
/// 2. else the one partition holding a Linux filesystem (ext2/3/4, squashfs, XFS, or Btrfs,
///    which then fails to read with a clear error);
/// 3. else the one partition holding any filesystem diskcast reads.
///
/// Several candidates at the first step that has any is an error listing them and
/// asking for `DISK:PART`.
fn choose_partition(
    disk: &Arc<dyn BlockRead>,
    table: &Table,
    label: &str,
    registry: &FsRegistry,
) -> Result<diskcast_part::Partition> {
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
        [one] => return Ok((*one).clone()),
        [] => {}
        many => return several("root partitions", many),
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
        [one] => return Ok((*one).clone()),
        [] => {}
        many => return several("partitions with Linux filesystems", many),
    }
    match readable.as_slice() {
        [one] => Ok((*one).clone()),
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
        let odd = dir.path().join("e.img:2");
        std::fs::write(&odd, b"x").unwrap();
        assert_eq!(split_spec(odd.to_str().unwrap()), (odd.to_str().unwrap(), None));
    }
}
