//! Fitting the ISO's tree on FAT without losing a file: symbolic links become copies
//! of their targets, a WIM over 4 GiB is split, and the exFAT layout's boot partition
//! gets the files Windows' loaders read before Setup runs.
//!
//! What goes where with `--windows-layout exfat` (Microsoft's recipe for Windows
//! images over 4 GiB, with exFAT where Microsoft uses NTFS): the FAT32 boot partition
//! holds every file except the `sources/` directory, plus `sources/boot.wim` (the Windows
//! PE image the loader starts); the exFAT partition holds every file. Setup, started from
//! boot.wim, finds `sources/install.wim` (or `.esd`) on the exFAT partition.

use crate::iso::{lookup_nocase, resolve_nocase};
use crate::{FAT_MAX_FILE, Layout, WimSplitter};
use diskcast_block::{Error, Result};
use diskcast_tree::{Kind, Node, NodeId, Tree};

/// Most nodes the copies of linked directories may add: far above any ISO's links (a
/// Debian DVD's `dists/stable -> bookworm` is a few thousand), low enough that links to
/// directories holding links cannot multiply the tree without end.
const MAX_COPIED_NODES: u64 = 2_000_000;

/// A tree path for messages, control characters escaped.
fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path).escape_debug())
}

/// Replaces every symbolic link by a copy of what it names inside the tree (files share
/// their content; directories are copied node by node). A link to a directory that
/// contains the link (Debian's `debian -> .`) cannot be copied: its files are on the
/// stick under the target's name, and a note says so. A dangling link, a link out of
/// the tree, a device, fifo or socket is an error naming it.
pub fn make_fat_ready(tree: &mut Tree, notes: &mut Vec<String>) -> Result<()> {
    let mut copied = 0u64;
    // Copying a directory may bring in more links; each round resolves those found.
    loop {
        let links: Vec<(Vec<u8>, NodeId)> = tree
            .walk(tree.root())
            .filter(|(_, id)| !matches!(tree.node(*id).kind, Kind::Dir(_) | Kind::File(_)))
            .collect();
        if links.is_empty() {
            return Ok(());
        }
        for (path, id) in links {
            let node = tree.node(id);
            let Kind::Symlink(target) = &node.kind else {
                return Err(Error::unsupported(format!(
                    "{}: a {} cannot be stored on FAT and an installer stick has no use for it",
                    show(&path),
                    node.kind.name()
                )));
            };
            let target = target.clone();
            let (parent_path, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (path[..i].to_vec(), path[i + 1..].to_vec()),
                None => (Vec::new(), path.clone()),
            };
            let parent = tree.resolve(&parent_path, true).map_err(|e| Error::invalid(e.message()))?;
            let to = tree.resolve(&path, true).map_err(|e| {
                Error::unsupported(format!(
                    "{}: symbolic link to {:?} names nothing inside the ISO ({}); FAT holds no links and \
                     the stick would lack the file",
                    show(&path),
                    String::from_utf8_lossy(&target),
                    e.message()
                ))
            })?;
            if tree.node(to).as_dir().is_none() {
                let copy = tree.node(to).clone();
                tree.insert(parent, &name, copy)?;
                notes.push(format!("{}: link to {:?} stored as a copy", show(&path), String::from_utf8_lossy(&target)));
                continue;
            }
            if is_ancestor(tree, to, parent) {
                tree.unlink(parent, &name);
                notes.push(format!(
                    "{}: link to {:?}, a directory holding the link itself, not copied (FAT holds no links; \
                     its files are on the stick under their own names)",
                    show(&path),
                    String::from_utf8_lossy(&target)
                ));
                continue;
            }
            let new = tree.insert(parent, &name, Node::new(tree.node(to).meta.clone(), Kind::empty_dir()))?;
            copied = copy_dir(tree, to, new, copied)?;
            notes.push(format!("{}: link to {:?} stored as a copy", show(&path), String::from_utf8_lossy(&target)));
        }
    }
}

/// True when `dir` is `node` or one of its ancestors.
fn is_ancestor(tree: &Tree, dir: NodeId, mut node: NodeId) -> bool {
    loop {
        if node == dir {
            return true;
        }
        let Some(d) = tree.node(node).as_dir() else { return false };
        if node == tree.root() {
            return false;
        }
        node = d.parent();
    }
}

/// Copies the entries of directory `from` into the empty directory `to`; returns the
/// running count of copied nodes, refusing past [`MAX_COPIED_NODES`].
fn copy_dir(tree: &mut Tree, from: NodeId, to: NodeId, mut copied: u64) -> Result<u64> {
    let mut stack = vec![(from, to)];
    while let Some((from, to)) = stack.pop() {
        let entries: Vec<(Vec<u8>, NodeId)> =
            tree.node(from).as_dir().map(|d| d.entries().map(|(n, id)| (n.to_vec(), id)).collect()).unwrap_or_default();
        for (name, id) in entries {
            copied += 1;
            if copied > MAX_COPIED_NODES {
                return Err(Error::refused(format!(
                    "copying the ISO's linked directories would add more than {MAX_COPIED_NODES} entries"
                )));
            }
            let node = tree.node(id).clone();
            let is_dir = node.as_dir().is_some();
            let new = tree.insert(to, &name, node)?;
            if is_dir {
                stack.push((id, new));
            }
        }
    }
    Ok(copied)
}

/// True for a WIM in `sources/`, which Windows Setup takes split as `.swm` parts.
fn is_setup_wim(path: &[u8]) -> bool {
    let p = String::from_utf8_lossy(path).to_ascii_lowercase();
    p.strip_prefix("sources/").is_some_and(|name| !name.contains('/') && name.ends_with(".wim"))
}

/// A WIM under `sources/` larger than `part_limit` is split by `split` (its parts
/// replace it); any other file over [`FAT_MAX_FILE`] is an error naming the file.
pub fn split_large_files(
    tree: &mut Tree,
    split: Option<WimSplitter>,
    part_limit: u64,
    notes: &mut Vec<String>,
) -> Result<()> {
    let big: Vec<(Vec<u8>, u64)> = tree
        .walk(tree.root())
        .filter_map(|(p, id)| {
            let limit = if is_setup_wim(&p) { part_limit.min(FAT_MAX_FILE) } else { FAT_MAX_FILE };
            tree.node(id).as_file().filter(|f| f.size > limit).map(|f| (p, f.size))
        })
        .collect();
    for (path, size) in big {
        if !is_setup_wim(&path) {
            return Err(too_large(&path, size, "FAT32 cannot hold it"));
        }
        let Some(split) = split else {
            return Err(too_large(&path, size, "splitting WIM files into .swm parts is not in this build"));
        };
        let text = String::from_utf8_lossy(&path).into_owned();
        let parts = split(tree, &text, part_limit).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "{}: cannot be split into .swm parts: {}; --windows-layout exfat stores it whole",
                    show(&path),
                    e.message()
                ),
            )
        })?;
        notes.push(format!("{}: {size} bytes split into {}", show(&path), parts.join(", ")));
    }
    Ok(())
}

fn too_large(path: &[u8], size: u64, why: &str) -> Error {
    Error::unsupported(format!(
        "{}: {size} bytes is larger than a FAT file can be ({FAT_MAX_FILE} bytes, 4 GiB - 1) and {why}; \
         use --windows-layout exfat (a FAT32 boot partition and an exFAT partition holding every file)",
        show(path)
    ))
}

/// Refuses a file the FAT partition cannot hold, before anything is planned.
pub fn check_fat_sizes(tree: &Tree, layout: Layout) -> Result<()> {
    if let Some((path, size)) = tree
        .walk(tree.root())
        .find_map(|(p, id)| tree.node(id).as_file().filter(|f| f.size > FAT_MAX_FILE).map(|f| (p, f.size)))
    {
        let why = match layout {
            Layout::Fat32 => "FAT32 cannot hold it".to_string(),
            Layout::Exfat => "the FAT32 boot partition (every file outside sources/) cannot hold it".to_string(),
        };
        return Err(too_large(&path, size, &why));
    }
    Ok(())
}

/// The boot partition's tree in the exFAT layout: everything but `sources/`, plus
/// `sources/boot.wim`.
pub fn boot_subset(tree: &Tree) -> Result<Tree> {
    let mut boot = tree.clone();
    if let Some((name, id)) = lookup_nocase(&boot, boot.root(), "sources") {
        let meta = boot.node(id).meta.clone();
        boot.unlink(boot.root(), &name);
        if let Some(wim) = resolve_nocase(tree, "sources/boot.wim") {
            let dir = boot.insert(boot.root(), &name, Node::new(meta, Kind::empty_dir()))?;
            let (wim_name, _) = lookup_nocase(tree, id, "boot.wim").unwrap_or((b"boot.wim".to_vec(), wim));
            boot.insert(dir, &wim_name, tree.node(wim).clone())?;
        }
    }
    Ok(boot)
}

/// Refuses a filesystem plan that skipped a tree entry: FAT and exFAT builders skip
/// what they cannot name or hold (with a warning), and a stick missing a file is broken.
pub fn refuse_skipped(warnings: &[String]) -> Result<()> {
    let skipped: Vec<&String> = warnings.iter().filter(|w| w.contains(": skipped")).collect();
    if skipped.is_empty() {
        return Ok(());
    }
    let list: Vec<&str> = skipped.iter().take(10).map(|s| s.as_str()).collect();
    Err(Error::unsupported(format!(
        "{} of the ISO's entries cannot be stored on the stick: {}",
        skipped.len(),
        list.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WIM_PART_LIMIT;
    use diskcast_tree::{FileData, Meta, Timestamp};

    fn tree() -> Tree {
        let m = Meta::new(0o755, Timestamp::from_secs(0));
        let mut t = Tree::new(m.clone());
        t.put_file(b"dists/bookworm/Release", FileData::inline(b"r".to_vec()), m.clone()).unwrap();
        t.put_file(b"readme.txt", FileData::inline(b"hello".to_vec()), m.clone()).unwrap();
        let dists = t.resolve(b"dists", true).unwrap();
        t.insert(dists, b"stable", Node::new(m.clone(), Kind::Symlink(b"bookworm".to_vec()))).unwrap();
        t.insert(t.root(), b"debian", Node::new(m.clone(), Kind::Symlink(b".".to_vec()))).unwrap();
        t.insert(t.root(), b"README", Node::new(m, Kind::Symlink(b"readme.txt".to_vec()))).unwrap();
        t
    }

    #[test]
    fn links_become_copies_and_self_links_are_noted() {
        let mut t = tree();
        let mut notes = Vec::new();
        make_fat_ready(&mut t, &mut notes).unwrap();
        assert_eq!(t.read(b"README", 100).unwrap(), b"hello");
        assert_eq!(t.read(b"dists/stable/Release", 100).unwrap(), b"r");
        let e = t.resolve(b"debian", false).unwrap_err();
        assert_eq!(e.kind(), diskcast_tree::TreeErrorKind::NotFound, "the loop link is gone: {e}");
        assert!(e.to_string().contains("no such file"), "the loop link is gone: {e}");
        assert!(
            notes.iter().any(|n| n.contains("/debian: link to \".\", a directory holding the link itself")),
            "{notes:?}"
        );
        assert_eq!(t.stats().symlinks, 0);
    }

    #[test]
    fn dangling_links_and_devices_are_errors() {
        let m = Meta::new(0o644, Timestamp::from_secs(0));
        let mut t = Tree::new(m.clone());
        t.insert(t.root(), b"gone", Node::new(m.clone(), Kind::Symlink(b"nowhere".to_vec()))).unwrap();
        let e = make_fat_ready(&mut t, &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Unsupported);
        assert!(e.to_string().contains("/gone: symbolic link to \"nowhere\" names nothing inside the ISO"), "{e}");
        let mut t = Tree::new(m.clone());
        t.insert(t.root(), b"null", Node::new(m, Kind::CharDev { major: 1, minor: 3 })).unwrap();
        let e = make_fat_ready(&mut t, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("/null: a char-device cannot be stored on FAT"), "{e}");
    }

    #[test]
    fn large_files_are_split_only_when_they_are_setup_wims() {
        let m = Meta::new(0o644, Timestamp::from_secs(0));
        let big = |t: &mut Tree, p: &[u8]| {
            let f = FileData { size: FAT_MAX_FILE + 1, content: diskcast_tree::Content::Zero };
            t.put_file(p, f, m.clone()).unwrap();
        };
        let mut t = Tree::new(m.clone());
        big(&mut t, b"sources/install.wim");
        let e = split_large_files(&mut t.clone(), None, WIM_PART_LIMIT, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("/sources/install.wim: 4294967296 bytes is larger than a FAT file"), "{e}");
        assert!(e.to_string().contains("not in this build; use --windows-layout exfat"), "{e}");
        fn fake(t: &mut Tree, p: &str, limit: u64) -> Result<Vec<String>> {
            assert_eq!(limit, WIM_PART_LIMIT);
            t.remove(p.as_bytes()).map_err(|e| Error::invalid(e.message()))?;
            Ok(vec!["sources/install.swm".into(), "sources/install2.swm".into()])
        }
        let mut notes = Vec::new();
        split_large_files(&mut t, Some(fake), WIM_PART_LIMIT, &mut notes).unwrap();
        assert!(notes[0].contains("split into sources/install.swm, sources/install2.swm"), "{notes:?}");
        let mut t = Tree::new(m.clone());
        big(&mut t, b"data/disk.img");
        let e = split_large_files(&mut t, Some(fake), WIM_PART_LIMIT, &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("/data/disk.img: 4294967296 bytes")
                && e.to_string().contains("--windows-layout exfat"),
            "{e}"
        );
    }

    #[test]
    fn the_boot_subset_keeps_boot_wim_only_of_sources() {
        let m = Meta::new(0o644, Timestamp::from_secs(0));
        let mut t = Tree::new(m.clone());
        for p in ["SOURCES/BOOT.WIM", "SOURCES/install.wim", "efi/boot/bootx64.efi", "bootmgr"] {
            t.put_file(p.as_bytes(), FileData::inline(p.as_bytes().to_vec()), m.clone()).unwrap();
        }
        let b = boot_subset(&t).unwrap();
        assert!(b.resolve(b"SOURCES/BOOT.WIM", true).is_ok());
        let e = b.resolve(b"SOURCES/install.wim", true).unwrap_err();
        assert_eq!(e.kind(), diskcast_tree::TreeErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("no such file"), "{e}");
        assert!(b.resolve(b"efi/boot/bootx64.efi", true).is_ok() && b.resolve(b"bootmgr", true).is_ok());
        assert!(t.resolve(b"SOURCES/install.wim", true).is_ok(), "the full tree is untouched");
    }
}
