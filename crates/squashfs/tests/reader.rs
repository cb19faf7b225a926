//! The squashfs reader on images made by mksquashfs, read from memory: every file's
//! bytes equal the source's, holes are reported as holes, and mutated images end in an
//! error about the image (never a panic or a hang) within a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::{BlockRead, ErrorKind};
use diskcast_squashfs::SquashfsReader;
use diskcast_testkit::VecDisk;
use diskcast_testkit::hostile::{Mutator, Rng, within};
use diskcast_tree::{FsReader, Kind, ReadOptions, Tree};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn mksquashfs(src: &Path, out: &Path, extra: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(src).arg(out).args(["-quiet", "-noappend"]).args(extra);
    let o = cmd.output().unwrap_or_else(|e| panic!("mksquashfs is required (squashfs-tools): {e}"));
    assert!(o.status.success(), "mksquashfs: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

fn source(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    std::fs::write(root.join("small"), b"hello\n").unwrap();
    std::fs::write(root.join("d/big"), diskcast_testkit::pattern(700_000, 3)).unwrap();
    std::fs::write(root.join("d/e/tail"), diskcast_testkit::pattern(140_000, 4)).unwrap();
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &diskcast_testkit::pattern(5000, 5), 300_000).unwrap();
    std::fs::hard_link(root.join("small"), root.join("d/small2")).unwrap();
    std::os::unix::fs::symlink("../small", root.join("d/link")).unwrap();
}

fn read(bytes: Vec<u8>) -> diskcast_block::Result<Tree> {
    let disk: Arc<dyn BlockRead> = Arc::new(VecDisk(bytes));
    SquashfsReader.read(disk, &ReadOptions { label: "mutant.sqsh".into(), ..ReadOptions::default() })
}

fn content(tree: &Tree, path: &str) -> Vec<u8> {
    let f = tree.node(tree.resolve(path.as_bytes(), false).unwrap()).as_file().unwrap().clone();
    let mut buf = vec![0u8; usize::try_from(f.size).unwrap()];
    f.read_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn files_read_from_memory_equal_the_source() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    for comp in ["gzip", "xz", "zstd", "lz4", "lzo"] {
        let img = mksquashfs(&src, &d.path().join(format!("{comp}.sqsh")), &["-comp", comp]);
        assert!(SquashfsReader.probe(&VecDisk(img.clone())).unwrap());
        let t = read(img).unwrap();
        for p in ["small", "d/big", "d/e/tail", "sparse", "d/small2"] {
            assert_eq!(content(&t, p), std::fs::read(src.join(p)).unwrap(), "{comp}: {p}");
        }
        let a = t.resolve(b"small", false).unwrap();
        assert_eq!(a, t.resolve(b"d/small2", false).unwrap(), "{comp}: a hard link is one node");
        assert!(matches!(&t.node(t.resolve(b"d/link", false).unwrap()).kind, Kind::Symlink(x) if x == b"../small"));
        // Only the 128 KiB block holding data is data; the rest of the sparse file is holes.
        let f = t.node(t.resolve(b"sparse", false).unwrap()).as_file().unwrap().clone();
        assert_eq!(f.data_ranges().unwrap(), vec![(262_144, 131_072)], "{comp}: holes of the sparse file");
    }
}

#[test]
fn mutated_images_fail_cleanly_and_quickly() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    let mutants: u64 = std::env::var("FUZZ_MUTANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    for (name, extra) in [("gzip", &["-comp", "gzip"][..]), ("plain", &["-noI", "-noD", "-noF", "-noX"][..])] {
        let seed = mksquashfs(&src, &d.path().join(format!("{name}.sqsh")), extra);
        let tables = usize::try_from(u64::from_le_bytes(seed[64..72].try_into().unwrap())).unwrap();
        let m = Mutator::new(seed.clone(), &[(0, 96), (tables, seed.len() - tables)]);
        let mut rng = Rng::new(7);
        let (mut ok, mut errors) = (0, 0);
        for i in 0..mutants {
            let (bytes, what) = m.mutant(&mut rng);
            let case = format!("{name} mutant {i} ({what})");
            let result = within(20, &case, move || -> diskcast_block::Result<()> {
                let t = read(bytes)?;
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
                }
            }
        }
        assert!(errors > 0 && ok + errors == mutants, "{name}: {ok} read, {errors} refused");
    }
}

#[test]
fn legacy_lzma_and_big_endian_images_are_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    source(&src);
    let img = mksquashfs(&src, &d.path().join("x.sqsh"), &["-comp", "gzip"]);
    let mut lzma = img.clone();
    lzma[20..22].copy_from_slice(&2u16.to_le_bytes());
    let e = read(lzma).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().starts_with("mutant.sqsh: squashfs: squashfs compressed with lzma (the legacy"), "{e}");
    let mut big_endian = img;
    big_endian[..4].copy_from_slice(b"sqsh");
    let e = read(big_endian).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("big-endian squashfs (version 3 or older"), "{e}");
}
