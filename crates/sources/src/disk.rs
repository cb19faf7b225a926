//! Disk images: a filesystem directly on the disk, or on one of its partitions
//! (`DISK:PART`, PART a number, a GPT name or a type such as `esp` or `root`).

use crate::{fs_readers, read_filesystem};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_part::{PartitionView, Table, read_table};
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
/// filesystem on the whole disk, else the only partition holding one.
pub(crate) fn read_disk(disk: Arc<dyn BlockRead>, part: Option<&str>, opts: &ReadOptions) -> Result<DiskTree> {
    let label = opts.label.clone();
    if part.is_none() {
        for r in fs_readers() {
            if r.probe(disk.as_ref())? {
                let tree = r.read(disk, opts)?;
                return Ok(DiskTree { tree, what: r.name().to_string(), warnings: Vec::new() });
            }
        }
    }
    let Some(table) = read_table(disk.as_ref()).map_err(|e| e.with_file(&label))? else {
        if let Some(p) = part {
            return Err(Error::argument(format!("{label} has no partition table, so :{p} names nothing")));
        }
        return read_filesystem(disk, opts).map(|(tree, fs)| DiskTree { tree, what: fs.into(), warnings: vec![] });
    };
    let chosen = match part {
        Some(sel) => table.select(sel).map_err(|e| e.with_file(&label))?.clone(),
        None => only_readable(&disk, &table, &label)?,
    };
    let name = if chosen.name.is_empty() { chosen.type_label() } else { chosen.name.clone() };
    let where_ = format!("partition {} ({name})", chosen.number);
    let view = PartitionView::new(disk, chosen.start, chosen.len, where_.clone()).map_err(|e| e.with_file(&label))?;
    let sub = ReadOptions { label: format!("{label}:{}", chosen.number), ..opts.clone() };
    let (tree, fs) = read_filesystem(Arc::new(view), &sub)?;
    Ok(DiskTree { tree, what: format!("{fs} on {where_} of {} table", table.kind.name()), warnings: table.warnings })
}

/// The one partition a filesystem reader recognises, or an error listing them all.
fn only_readable(disk: &Arc<dyn BlockRead>, table: &Table, label: &str) -> Result<diskcast_part::Partition> {
    let readers = fs_readers();
    let mut hits = Vec::new();
    for p in &table.partitions {
        let Ok(view) = PartitionView::new(disk.clone(), p.start, p.len, "") else { continue };
        for r in &readers {
            if r.probe(&view).unwrap_or(false) {
                hits.push(p.clone());
                break;
            }
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::unsupported(format!(
            "no partition of {label} holds a filesystem diskcast reads; partitions: {}",
            table.listing()
        ))),
        _ => Err(Error::argument(format!(
            "{label} has several partitions with filesystems; name one as {label}:PART (number, name or type): {}",
            table.listing()
        ))),
    }
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
