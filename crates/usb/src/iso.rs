//! What the ISO offers a stick: its richest tree, volume id, El Torito entries and
//! hybrid system area, and its UEFI loader.

use crate::BootReport;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_iso9660::eltorito::{Catalog, read_catalog};
use diskcast_iso9660::hybrid::{Hybrid, read_hybrid};
use diskcast_part::{PartType, PartitionView};
use diskcast_tree::{FsReader, Kind, Node, NodeId, ReadOptions, Tree};
use std::sync::Arc;

/// El Torito platform id of UEFI entries.
const PLATFORM_UEFI: u8 = 0xef;
/// El Torito platform id of BIOS entries.
const PLATFORM_BIOS: u8 = 0;
/// The removable-media loaders UEFI firmware looks for, by architecture.
pub const EFI_LOADERS: [&str; 3] = ["BOOTX64.EFI", "BOOTIA32.EFI", "BOOTAA64.EFI"];
/// Most files taken from an El Torito EFI image (real ones hold a handful; the cap keeps a
/// hostile image from adding millions of nodes).
const MAX_EFI_IMAGE_FILES: u64 = 10_000;

/// The ISO, read once.
#[derive(Debug, Clone)]
pub struct IsoFacts {
    /// The richest tree (UDF, Rock Ridge, Joliet, plain ISO 9660).
    pub tree: Tree,
    /// The primary volume descriptor's volume id ("" for a UDF-only disc).
    pub volume_id: String,
    /// The system area's MBR and GPT.
    pub hybrid: Hybrid,
    /// The El Torito boot catalog.
    pub catalog: Option<Catalog>,
}

/// Reads what a stick needs from `disc`.
pub fn inspect(disc: &Arc<dyn BlockRead>, name: &str) -> Result<IsoFacts> {
    let reader = diskcast_iso9660::Iso9660Reader;
    if !reader.probe(disc.as_ref())? {
        return Err(Error::invalid("not an ISO 9660 or UDF disc").with_file(name));
    }
    let tree = reader.read(disc.clone(), &ReadOptions { tree: None, label: name.to_string() })?;
    // A UDF-only disc has no ISO 9660 volume, so no label and no El Torito catalog.
    let volumes = diskcast_iso9660::read_volumes(disc.as_ref()).ok();
    let volume_id = volumes.as_ref().map(|v| v.volume_id.trim().to_string()).unwrap_or_default();
    let catalog = match volumes {
        Some(_) => read_catalog(disc).map_err(|e| e.with_file(name))?,
        None => None,
    };
    let hybrid = read_hybrid(disc.as_ref()).map_err(|e| e.with_file(name))?;
    Ok(IsoFacts { tree, volume_id, hybrid, catalog })
}

impl IsoFacts {
    /// How the system area makes the disc boot from a disk (`MBR with 1 partition`), or
    /// why it does not.
    pub fn hybrid_reason(&self) -> std::result::Result<String, String> {
        let h = &self.hybrid;
        let mbr = h.partitions.iter().filter(|p| p.table == "mbr").count();
        let gpt = h.partitions.iter().filter(|p| p.table == "gpt").count();
        if gpt > 0 {
            return Ok(format!("GPT with {gpt} partitions in its system area"));
        }
        if h.mbr && mbr > 0 {
            return Ok(format!("MBR with {mbr} partitions in its system area"));
        }
        Err("it is not a hybrid ISO: its system area holds no MBR or GPT partition, so no firmware finds \
             anything to boot on a stick holding it"
            .into())
    }

    /// The El Torito entries for `platform`.
    fn entries(&self, platform: u8) -> impl Iterator<Item = &diskcast_iso9660::eltorito::BootEntry> {
        self.catalog.iter().flat_map(|c| c.entries.iter()).filter(move |e| e.platform == platform)
    }

    /// The BIOS El Torito entry's image path, when it is a file.
    pub fn bios_image(&self) -> Option<&str> {
        self.entries(PLATFORM_BIOS).find_map(|e| e.path.as_deref())
    }

    /// What a dd copy boots: UEFI finds an ESP in the system area's table; BIOS runs the
    /// MBR's boot code.
    pub fn dd_boot(&self) -> (BootReport, BootReport) {
        let esp = self
            .hybrid
            .partitions
            .iter()
            .any(|p| p.kind == "0xef" || p.kind.eq_ignore_ascii_case(&PartType::Esp.guid().to_string()));
        let uefi = if esp {
            BootReport { bootable: true, how: "the ISO's EFI System Partition (listed in its system area)".into() }
        } else if self.entries(PLATFORM_UEFI).next().is_some() {
            BootReport {
                bootable: false,
                how: "the system area lists no EFI System Partition; the ISO's UEFI El Torito image is for CDs only"
                    .into(),
            }
        } else {
            BootReport { bootable: false, how: "the ISO has no UEFI boot image".into() }
        };
        let code = self.hybrid.mbr && self.hybrid.partitions.iter().any(|p| p.table == "mbr");
        let bios = match (code, self.bios_image()) {
            (true, Some(img)) => BootReport { bootable: true, how: format!("the ISO's MBR boot code, then {img}") },
            (true, None) => BootReport { bootable: true, how: "the ISO's MBR boot code".into() },
            (false, _) => BootReport { bootable: false, how: "the ISO's system area has no MBR".into() },
        };
        (uefi, bios)
    }
}

/// Looks up `name` in directory `dir` ignoring ASCII case, as FAT and UEFI do.
pub fn lookup_nocase(tree: &Tree, dir: NodeId, name: &str) -> Option<(Vec<u8>, NodeId)> {
    let d = tree.node(dir).as_dir()?;
    d.entries().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(n, id)| (n.to_vec(), id))
}

/// The node at `path` (components separated by `/`), ignoring ASCII case.
pub fn resolve_nocase(tree: &Tree, path: &str) -> Option<NodeId> {
    path.split('/').filter(|c| !c.is_empty()).try_fold(tree.root(), |dir, c| lookup_nocase(tree, dir, c).map(|x| x.1))
}

/// The removable-media loader `EFI/BOOT/BOOT*.EFI` the tree holds, if any.
fn efi_loader(tree: &Tree) -> Option<String> {
    EFI_LOADERS
        .iter()
        .find(|l| resolve_nocase(tree, &format!("EFI/BOOT/{l}")).is_some())
        .map(|l| format!("EFI/BOOT/{l}"))
}

/// Makes sure the tree holds `EFI/BOOT/BOOTX64.EFI` (or another architecture's): taken
/// from the ISO's tree, else from the FAT image of its UEFI El Torito entry (or of an EFI
/// System Partition its system area lists), whose `EFI/` files are added where the tree
/// has none of that name. Says how UEFI boots the stick, or why it cannot.
pub fn add_efi_loader(
    disc: &Arc<dyn BlockRead>,
    facts: &IsoFacts,
    tree: &mut Tree,
    notes: &mut Vec<String>,
) -> Result<BootReport> {
    if let Some(l) = efi_loader(tree) {
        return Ok(BootReport { bootable: true, how: format!("{l} from the ISO's files") });
    }
    let mut images: Vec<(String, u64, u64)> = facts
        .entries(PLATFORM_UEFI)
        .map(|e| {
            let (off, len) = e.range();
            let what = e.path.clone().map_or_else(
                || format!("UEFI El Torito image at sector {}", e.lba),
                |p| format!("UEFI El Torito image {p}"),
            );
            (what, off, len)
        })
        .collect();
    images.extend(
        facts
            .hybrid
            .partitions
            .iter()
            .filter(|p| p.kind == "0xef" || p.kind.eq_ignore_ascii_case(&PartType::Esp.guid().to_string()))
            .map(|p| {
                (format!("EFI System Partition {} of the ISO's {}", p.number, p.table.to_uppercase()), p.start, p.size)
            }),
    );
    let mut tried = Vec::new();
    for (what, off, len) in images {
        let efi = match read_fat_image(disc, off, len) {
            Ok(t) => t,
            Err(e) => {
                tried.push(format!("{what}: {}", e.message()));
                continue;
            }
        };
        let Some(l) = efi_loader(&efi) else {
            tried.push(format!("{what}: no EFI/BOOT/BOOT*.EFI in it"));
            continue;
        };
        let added = merge_missing(tree, &efi, "EFI")?;
        notes.push(format!("added {added} files of EFI/ from the {what} (the ISO's files have no UEFI loader)"));
        return Ok(BootReport { bootable: true, how: format!("{l} from the {what}") });
    }
    let why = if tried.is_empty() {
        "the ISO has no EFI/BOOT/BOOT*.EFI and no UEFI El Torito image".to_string()
    } else {
        format!("the ISO has no EFI/BOOT/BOOT*.EFI, and {}", tried.join("; "))
    };
    Ok(BootReport { bootable: false, how: why })
}

/// The tree of the FAT filesystem in `len` bytes at `off` of the disc.
fn read_fat_image(disc: &Arc<dyn BlockRead>, off: u64, len: u64) -> Result<Tree> {
    let view: Arc<dyn BlockRead> = Arc::new(PartitionView::new(disc.clone(), off, len, "EFI image")?);
    let registry = diskcast_formats::filesystems();
    match registry.probe(view.as_ref())? {
        Some((fs, reader)) if fs.name == "fat" => {
            let t = reader.read(view, &ReadOptions { tree: None, label: "EFI image".into() })?;
            let n = t.stats().files;
            if n > MAX_EFI_IMAGE_FILES {
                return Err(Error::refused(format!(
                    "holds {n} files, more than the {MAX_EFI_IMAGE_FILES} an EFI image may"
                )));
            }
            Ok(t)
        }
        Some((fs, _)) => Err(Error::unsupported(format!("holds {}, not FAT", fs.name))),
        None => Err(Error::unsupported("is not a FAT image")),
    }
}

/// Copies the files under `top` of `src` into `tree` where `tree` has no entry of the
/// same name (ignoring case); returns how many files were added.
fn merge_missing(tree: &mut Tree, src: &Tree, top: &str) -> Result<u64> {
    let Some(from) = resolve_nocase(src, top) else { return Ok(0) };
    let to = match lookup_nocase(tree, tree.root(), top) {
        Some((_, id)) if tree.node(id).as_dir().is_some() => id,
        Some(_) => return Err(Error::refused(format!("/{top} of the ISO is not a directory"))),
        None => tree.insert(tree.root(), top.as_bytes(), src.node(from).clone())?,
    };
    let mut added = 0u64;
    let mut stack = vec![(from, to)];
    while let Some((from, to)) = stack.pop() {
        let entries: Vec<(Vec<u8>, NodeId)> =
            src.node(from).as_dir().map(|d| d.entries().map(|(n, id)| (n.to_vec(), id)).collect()).unwrap_or_default();
        for (name, id) in entries {
            let node = src.node(id);
            let text = String::from_utf8_lossy(&name).into_owned();
            match (&node.kind, lookup_nocase(tree, to, &text)) {
                (Kind::Dir(_), Some((_, there))) if tree.node(there).as_dir().is_some() => stack.push((id, there)),
                (Kind::Dir(_), None) => {
                    let new = tree.insert(to, &name, Node::new(node.meta.clone(), Kind::empty_dir()))?;
                    stack.push((id, new));
                }
                (Kind::File(_), None) => {
                    tree.insert(to, &name, node.clone())?;
                    added += 1;
                }
                _ => {}
            }
        }
    }
    Ok(added)
}

/// A FAT label from the ISO's volume id: upper case, characters FAT labels take, at
/// most 11 (Rufus does the same, so boot configurations that search by label may
/// still find the stick when the id is short).
pub fn fat_label(volume_id: &str) -> String {
    let l: String = volume_id
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(11)
        .collect();
    let l = l.trim_end_matches('_').to_string();
    if l.is_empty() { "USB".into() } else { l }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_what_fat_takes() {
        assert_eq!(fat_label("Debian 12.5.0 amd64 n"), "DEBIAN_12_5");
        assert_eq!(fat_label("  "), "USB");
        assert_eq!(fat_label("ccsa_x64frer_en-us_dv9"), "CCSA_X64FRE");
    }
}
