//! exFAT: a reader producing a tree and a writer planning an image from a tree.
//!
//! Specification: Microsoft's "exFAT File System Specification" (2019, the public
//! version of revision 1.00). Reading ([`ExfatReader`]) checks the boot region's
//! checksum and geometry against the disk, loads the FAT and the allocation bitmap, and
//! turns every file into extents of the disk (contiguous NoFatChain runs or FAT chains),
//! so content is read only when a sink asks; loops, cross-linked or free clusters and
//! malformed entry sets are errors, never hangs. Writing ([`ExfatBuilder`]): see
//! [`writer`].
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod reader;
mod spec;
mod writer;

pub use reader::Geometry;

use diskcast_block::{BlockRead, Result};
use diskcast_tree::{BuildOptions, BuiltFs, FsBuilder, FsReader, ReadOptions, Tree};
use std::sync::Arc;

/// Reads exFAT filesystems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExfatReader;

impl FsReader for ExfatReader {
    fn name(&self) -> &'static str {
        "exfat"
    }

    fn probe(&self, disk: &dyn BlockRead) -> Result<bool> {
        Ok(diskcast_tree::read_head(disk, 512)?.is_some_and(|b| reader::probe(&b)))
    }

    fn read(&self, disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
        reader::read_tree(disk).map(|(t, _)| t).map_err(|e| opts.name_error(e))
    }
}

/// Writes exFAT: one FAT, contiguous NoFatChain files (any size, over 4 GiB too), long
/// Unicode names, timestamps in UTC with 10 ms precision. Symlinks, devices, fifos,
/// sockets, names exFAT cannot spell and names that collide ignoring case are skipped,
/// each with a warning; hard links become copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExfatBuilder;

impl FsBuilder for ExfatBuilder {
    fn name(&self) -> &'static str {
        "exfat"
    }

    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs> {
        writer::plan(tree, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_tree::{FileData, Kind, Meta, Node, Timestamp};

    /// The reader reads back what the writer plans: names (long, Unicode), sizes,
    /// content, mtimes to 10 ms, a file over 4 GiB held as one NoFatChain run.
    #[test]
    fn planned_image_reads_back() {
        let t0 = Timestamp { sec: 1_700_000_000, nsec: 120_000_000 };
        let mut tree = Tree::new(Meta::new(0o755, t0));
        let d = tree.add(tree.root(), b"dir", Node::new(Meta::new(0o755, t0), Kind::empty_dir())).unwrap();
        let long = "Ünïcödé ★ name longer than fifteen units.txt";
        let body = b"hello exfat".to_vec();
        tree.add(d, long.as_bytes(), Node::new(Meta::new(0o644, t0), Kind::File(FileData::inline(body.clone()))))
            .unwrap();
        let big = FileData { size: (4 << 30) + 5, content: diskcast_tree::Content::Zero };
        tree.add(tree.root(), b"big", Node::new(Meta::new(0o444, t0), Kind::File(big))).unwrap();
        let built =
            ExfatBuilder.plan(&tree, &BuildOptions { label: Some("Test".into()), ..Default::default() }).unwrap();
        let disk: Arc<dyn BlockRead> = Arc::new(built.image);
        assert!(ExfatReader.probe(disk.as_ref()).unwrap());
        let back = ExfatReader.read(disk, &ReadOptions::default()).unwrap();
        let dir = back.lookup(back.root(), b"dir").unwrap();
        let f = back.node(back.lookup(dir, long.as_bytes()).unwrap());
        assert_eq!(f.meta.mtime, t0);
        let data = f.as_file().unwrap();
        let mut got = vec![0u8; body.len()];
        data.read_at(&mut got, 0).unwrap();
        assert_eq!(got, body);
        let b = back.node(back.lookup(back.root(), b"big").unwrap());
        assert_eq!(b.as_file().unwrap().size, (4 << 30) + 5);
        assert_eq!(b.meta.mode & 0o222, 0, "read-only attribute");
    }

    /// Names equal ignoring case (by the up-case table) and names exFAT cannot spell are
    /// skipped with a warning each, never silently.
    #[test]
    fn case_collisions_and_bad_names_are_warned_and_skipped() {
        let t0 = Timestamp::from_secs(1_700_000_000);
        let mut tree = Tree::new(Meta::new(0o755, t0));
        for name in ["Readme", "README", "a:b", "ok"] {
            tree.add(
                tree.root(),
                name.as_bytes(),
                Node::new(Meta::new(0o644, t0), Kind::File(FileData::inline(vec![1]))),
            )
            .unwrap();
        }
        let built = ExfatBuilder.plan(&tree, &BuildOptions::default()).unwrap();
        assert_eq!(built.warnings.len(), 2, "{:?}", built.warnings);
        assert!(built.warnings.iter().any(|w| w.contains("ignore case")), "{:?}", built.warnings);
        assert!(built.warnings.iter().any(|w| w.contains("/a:b") && w.contains("forbids")), "{:?}", built.warnings);
        let back = ExfatReader.read(Arc::new(built.image), &ReadOptions::default()).unwrap();
        assert_eq!(back.dir(back.root()).unwrap().len(), 2);
    }
}
