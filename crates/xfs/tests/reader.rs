//! The XFS reader on images made by mkfs.xfs from a protofile (v5, v5 with nrext64, and v4
//! without CRCs), read through a file-backed disk: every file's bytes equal the source's; and byte-mutated metadata ends in an error about the image (never a panic
//! or a hang) within a time limit. The integration tests (tests/integration/xfs.rs)
//! judge kernel-made trees against the kernel's own view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::{Alloc, BlockRead, ErrorKind, Extent, ImageInfo, Result};
use diskcast_testkit::hostile::{Rng, within};
use diskcast_tree::{FsReader, ReadOptions, Tree};
use diskcast_xfs::XfsReader;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// An image file with some bytes changed in memory (mkfs.xfs makes 300 MiB at least, so
/// mutants are patches over the file, not copies of it).
#[derive(Debug)]
struct Patched {
    file: std::fs::File,
    size: u64,
    patches: BTreeMap<u64, u8>,
}

impl BlockRead for Patched {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset + buf.len() as u64;
        assert!(end <= self.size, "a read past the disk's end: {offset}+{}", buf.len());
        self.file.read_exact_at(buf, offset).unwrap();
        for (&at, &v) in self.patches.range(offset..end) {
            buf[(at - offset) as usize] = v;
        }
        Ok(())
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent { offset, len: max_len.min(self.size - offset), alloc: Alloc::Data })
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}

fn disk(img: &Path, patches: BTreeMap<u64, u8>) -> Arc<Patched> {
    let file = std::fs::File::open(img).unwrap();
    let size = file.metadata().unwrap().len();
    Arc::new(Patched { file, size, patches })
}

fn read(d: Arc<Patched>) -> Result<Tree> {
    XfsReader.read(d, &ReadOptions { label: "fs.img".into(), ..ReadOptions::default() })
}

fn source(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("small"), b"hello\n").unwrap();
    std::fs::write(root.join("d/big"), diskcast_testkit::pattern(700_000, 3)).unwrap();
    for i in 0..300 {
        std::fs::write(root.join(format!("d/e/f{i:03}")), format!("{i}")).unwrap();
    }
    std::os::unix::fs::symlink("../small", root.join("d/link")).unwrap();
}

/// A protofile for `src` (mkfs.xfs's `-p`), with `small` also hard-linked as `d/small2`.
fn mkfs(dir: &Path, src: &Path, name: &str, args: &[&str]) -> PathBuf {
    let f = |p: &str| src.join(p).display().to_string();
    let mut proto = format!(
        "/dev/null\n0 0\nd--755 0 0\n small ---644 0 0 {}\n d d--755 1 2\n  big ---600 3 4 {}\n  link l--777 0 0 ../small\n  \
         e d--700 0 0\n",
        f("small"),
        f("d/big")
    );
    for i in 0..300 {
        proto.push_str(&format!("   f{i:03} ---644 0 0 {}\n", f(&format!("d/e/f{i:03}"))));
    }
    proto.push_str("  $\n $\n$\n");
    let pf = dir.join(format!("{name}.proto"));
    std::fs::write(&pf, proto).unwrap();
    let img = dir.join(name);
    std::fs::File::create(&img).unwrap().set_len(300 << 20).unwrap();
    let o = Command::new("mkfs.xfs")
        .args(["-q", "-f", "-p"])
        .arg(&pf)
        .args(args)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("mkfs.xfs is required (xfsprogs): {e}"));
    assert!(o.status.success(), "mkfs.xfs: {}", String::from_utf8_lossy(&o.stderr));
    img
}

fn content(tree: &Tree, path: &str) -> Vec<u8> {
    let f = tree.node(tree.resolve(path.as_bytes(), false).unwrap()).as_file().unwrap().clone();
    let mut buf = vec![0u8; usize::try_from(f.size).unwrap()];
    f.read_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn protofile_images_read_as_their_source() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    for (name, args) in
        [("v5.img", &[][..]), ("v4.img", &["-m", "crc=0"][..]), ("nrext64.img", &["-i", "nrext64=1"][..])]
    {
        let img = mkfs(d.path(), &src, name, args);
        if name == "nrext64.img" {
            // xfs_db: the root inode carries the 64-bit extent counters.
            let o = Command::new("xfs_db").args(["-r", "-c", "inode 128", "-c", "print v3.nrext64"]).arg(&img).output();
            assert_eq!(String::from_utf8_lossy(&o.unwrap().stdout).trim(), "v3.nrext64 = 1");
        }
        assert!(XfsReader.probe(disk(&img, BTreeMap::new()).as_ref()).unwrap());
        let t = read(disk(&img, BTreeMap::new())).unwrap();
        for p in ["small", "d/big", "d/e/f000", "d/e/f299"] {
            assert_eq!(content(&t, p), std::fs::read(src.join(p)).unwrap(), "{name}: {p}");
        }
        let big = t.node(t.resolve(b"d/big", false).unwrap());
        assert_eq!((big.meta.mode, big.meta.uid, big.meta.gid), (0o600, 3, 4), "{name}");
        let dir = t.node(t.resolve(b"d", false).unwrap());
        assert_eq!((dir.meta.uid, dir.meta.gid), (1, 2), "{name}");
        assert_eq!(t.dir(t.resolve(b"d/e", false).unwrap()).unwrap().len(), 300, "{name}");
        let link = t.node(t.resolve(b"d/link", false).unwrap());
        assert!(matches!(&link.kind, diskcast_tree::Kind::Symlink(target) if target == b"../small"), "{name}");
    }
}

#[test]
fn mutated_metadata_ends_in_an_error_about_the_image() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    let mutants: u64 = std::env::var("FUZZ_MUTANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    for (name, args) in [("v5.img", &[][..]), ("v4.img", &["-m", "crc=0"][..])] {
        let img = mkfs(d.path(), &src, name, args);
        // The superblock and AG 0's headers, and the root's inode chunk (with the
        // protofile's inodes and their short-form directories and extent lists).
        let root_at = 128 * 512;
        let hot = [(0u64, 2048u64), (root_at, 64 * 512)];
        let mut rng = Rng::new(11);
        let (mut ok, mut errors) = (0, 0);
        for i in 0..mutants {
            let mut patches = BTreeMap::new();
            for _ in 0..=rng.below(3) {
                let (start, len) = hot[rng.index(hot.len())];
                patches.insert(start + rng.below(len), (rng.next_u64() & 0xff) as u8);
            }
            let case = format!("{name} mutant {i} ({patches:?})");
            let dd = disk(&img, patches);
            let result = within(20, &case, move || -> Result<()> {
                let t = read(dd)?;
                for (_, id) in t.walk(diskcast_tree::NodeId::ROOT) {
                    if let Some(f) = t.node(id).as_file() {
                        let mut buf = vec![0u8; usize::try_from(f.size.min(4 << 20)).unwrap()];
                        f.read_at(&mut buf, 0)?;
                    }
                }
                Ok(())
            });
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    errors += 1;
                    assert!(
                        !matches!(e.kind(), ErrorKind::Io | ErrorKind::InvalidArgument | ErrorKind::Cancelled),
                        "{case}: {e} is a {} error, not one about the image",
                        e.kind().as_str()
                    );
                    assert!(e.file().is_some_and(|f| f.display().to_string() == "fs.img"), "{case}: {e}");
                }
            }
        }
        assert!(errors > 0 && ok + errors == mutants, "{name}: {ok} read, {errors} refused");
    }
}
