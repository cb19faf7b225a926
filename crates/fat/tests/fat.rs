//! FAT read from images made by mkfs.fat + mcopy; FAT written by us judged by
//! `fsck.fat -n`, `mdir` and `mcopy -s`; hostile FATs refused under a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::{BlockRead, ErrorKind};
use diskcast_fat::{FatBuilder, FatReader, Geometry};
use diskcast_raw::RawReader;
use diskcast_testkit::{patch, pattern, read_all, run_utc, within};
use diskcast_tree::{
    BuildOptions, FileData, FsBuilder, FsReader, Kind, Meta, Node, NodeId, ReadOptions, Timestamp, Tree,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MTIME: i64 = 1_600_000_000; // 2020-09-13 12:26:40 UTC

/// Names every test tree holds: long, non-ASCII, 8.3, dotted, deep.
fn sample_files() -> Vec<(String, Vec<u8>)> {
    let deep = (0..12).map(|i| format!("level{i}")).collect::<Vec<_>>().join("/");
    vec![
        ("README.TXT".into(), b"short name only\n".to_vec()),
        ("readme-lower.txt".into(), b"lower".to_vec()),
        ("A very long file name with spaces and more than thirty characters.data".into(), pattern(70_000, 1)),
        ("Ünïcödé ファイル.txt".into(), "non-ascii ✓".as_bytes().to_vec()),
        ("empty".into(), Vec::new()),
        (".hidden.conf".into(), b"x=1".to_vec()),
        ("dir/sub/nested.bin".into(), pattern(5000, 2)),
        (format!("{deep}/bottom.txt"), b"deep".to_vec()),
    ]
}

fn host_tree(dir: &Path) -> PathBuf {
    let root = dir.join("src");
    for (p, data) in sample_files() {
        let path = root.join(&p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
    }
    // Many entries: a directory spanning several clusters.
    for i in 0..150 {
        std::fs::write(root.join("dir").join(format!("many file number {i:03}.txt")), format!("{i}")).unwrap();
    }
    run_utc("touch", &["-d", "@1600000000", root.to_str().unwrap()]);
    for e in walk(&root) {
        run_utc("touch", &["-h", "-d", "@1600000000", e.to_str().unwrap()]);
    }
    root
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Every file in a tree: path -> bytes; directories -> None.
fn contents(t: &Tree) -> BTreeMap<String, Option<Vec<u8>>> {
    t.walk(NodeId::ROOT)
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, id)| {
            let v = t.node(id).as_file().map(|f| {
                let mut b = vec![0u8; f.size as usize];
                f.read_at(&mut b, 0).unwrap();
                b
            });
            (String::from_utf8(p).unwrap(), v)
        })
        .collect()
}

/// Every file under a host directory: relative path -> bytes; directories -> None.
fn host_contents(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    walk(root)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            (rel, if p.is_dir() { None } else { Some(std::fs::read(&p).unwrap()) })
        })
        .collect()
}

fn read_fat(img: &Path) -> Tree {
    let disk: Arc<dyn BlockRead> = Arc::new(RawReader::open(img).unwrap());
    assert!(FatReader.probe(disk.as_ref()).unwrap());
    FatReader.read(disk, &ReadOptions::default()).unwrap()
}

fn mkfs_and_copy(dir: &Path, name: &str, mkfs: &[&str], kib: &str, src: &Path) -> PathBuf {
    let img = dir.join(name);
    let mut args: Vec<&str> = mkfs.to_vec();
    args.extend(["-C", img.to_str().unwrap(), kib]);
    run_utc("mkfs.fat", &args);
    let mut cp = vec!["-s", "-m", "-i", img.to_str().unwrap()];
    let entries: Vec<String> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().path().to_str().unwrap().to_string()).collect();
    cp.extend(entries.iter().map(String::as_str));
    cp.push("::/");
    run_utc("mcopy", &cp);
    img
}

#[test]
fn reads_fat12_fat16_fat32_made_by_mkfs_fat_and_mcopy() {
    let dir = tempfile::tempdir().unwrap();
    let src = host_tree(dir.path());
    let want = host_contents(&src);
    for (name, mkfs, kib, ty) in [
        ("f12.img", vec!["-F", "12"], "4096", "FAT12"),
        ("f16.img", vec!["-F", "16"], "32768", "FAT16"),
        ("f32.img", vec!["-F", "32"], "65536", "FAT32"),
    ] {
        let img = mkfs_and_copy(dir.path(), name, &mkfs, kib, &src);
        let geo = Geometry::read(&RawReader::open(&img).unwrap()).unwrap();
        assert_eq!(geo.fat_type.name(), ty);
        let t = read_fat(&img);
        assert_eq!(contents(&t), want, "{ty}");
        let id = t.resolve(b"dir/sub/nested.bin", false).unwrap();
        assert_eq!(t.node(id).meta.mtime.sec, MTIME, "{ty}");
        let big = t.resolve(b"A very long file name with spaces and more than thirty characters.data", false);
        let f = t.node(big.unwrap()).as_file().unwrap().clone();
        // A file copied in one go is one contiguous run: merged into few extents.
        if let diskcast_tree::Content::Blocks { extents, .. } = &f.content {
            assert!(extents.len() <= 3, "{ty}: {} extents", extents.len());
        } else {
            panic!("FAT file content should be disk extents");
        }
    }
}

fn meta(mode: u32) -> Meta {
    Meta::new(mode, Timestamp::from_secs(MTIME))
}

/// A generated tree with every entry type, long and non-ASCII names, deep paths.
fn generated() -> Tree {
    let mut t = Tree::new(meta(0o755));
    for (p, data) in sample_files() {
        let (parent, name) = match p.rfind('/') {
            Some(i) => (t.create_dir_all(&p.as_bytes()[..i], &meta(0o755)).unwrap(), &p[i + 1..]),
            None => (NodeId::ROOT, p.as_str()),
        };
        t.insert(parent, name.as_bytes(), Node::new(meta(0o644), Kind::File(FileData::inline(data)))).unwrap();
    }
    let d = t.resolve(b"dir", false).unwrap();
    for i in 0..150 {
        let f = FileData::inline(format!("{i}").into_bytes());
        t.insert(d, format!("many file number {i:03}.txt").as_bytes(), Node::new(meta(0o644), Kind::File(f))).unwrap();
    }
    let ro = FileData::inline(b"read only".to_vec());
    t.insert(NodeId::ROOT, b"ro.txt", Node::new(meta(0o444), Kind::File(ro))).unwrap();
    t.insert(NodeId::ROOT, b"link", Node::new(meta(0o777), Kind::Symlink(b"README.TXT".to_vec()))).unwrap();
    t.insert(NodeId::ROOT, b"null", Node::new(meta(0o666), Kind::CharDev { major: 1, minor: 3 })).unwrap();
    t.insert(NodeId::ROOT, b"fifo", Node::new(meta(0o644), Kind::Fifo)).unwrap();
    t.insert(NodeId::ROOT, b"Readme.txt", Node::new(meta(0o644), Kind::File(FileData::inline(b"c".to_vec())))).unwrap();
    t.insert(NodeId::ROOT, b"bad:name", Node::new(meta(0o644), Kind::File(FileData::inline(b"c".to_vec())))).unwrap();
    t.create_dir_all(b"empty dir", &meta(0o755)).unwrap();
    t
}

fn build(tree: &Tree, b: FatBuilder, size: Option<u64>, label: Option<&str>, path: &Path) -> Vec<String> {
    let opts = BuildOptions {
        size,
        label: label.map(str::to_string),
        now: MTIME,
        id: [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ..BuildOptions::default()
    };
    let built = b.plan(tree, &opts).unwrap();
    std::fs::write(path, read_all(&built.image)).unwrap();
    eprintln!("{}", built.description);
    built.warnings
}

/// What FAT can hold of `generated()`: no symlink/device/fifo, no case twin, no bad name.
fn expected_of_generated() -> BTreeMap<String, Option<Vec<u8>>> {
    let mut want = contents(&generated());
    for skipped in ["link", "null", "fifo", "readme-lower.txt", "bad:name"] {
        want.remove(skipped);
    }
    // Readme.txt vs README.TXT: name order puts README.TXT first; Readme.txt is skipped
    // as a case twin. readme-lower.txt has no twin: restore it.
    want.remove("Readme.txt");
    want.insert("readme-lower.txt".into(), Some(b"lower".to_vec()));
    want
}

fn judge(img: &Path, label: Option<&str>) {
    let fsck = run_utc("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    assert!(!fsck.contains("differ") && !fsck.contains("Free cluster summary"), "{fsck}");
    let listing = run_utc("mdir", &["-/", "-a", "-i", img.to_str().unwrap(), "::"]);
    assert!(listing.contains("A very long file name with spaces and more than thirty characters.data"), "{listing}");
    assert!(listing.contains("Ünïcödé ファイル.txt"), "{listing}");
    if let Some(l) = label {
        assert!(listing.contains(&format!("Volume in drive : is {}", l.to_uppercase())), "{listing}");
    }
    let out = img.with_extension("out");
    std::fs::create_dir(&out).unwrap();
    run_utc("mcopy", &["-s", "-n", "-m", "-i", img.to_str().unwrap(), "::/*", out.to_str().unwrap()]);
    let got = host_contents(&out);
    assert_eq!(got, expected_of_generated());
    let nested = std::fs::metadata(out.join("dir/sub/nested.bin")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(nested.mtime(), MTIME);
    // Read-only attribute.
    let attrs = run_utc("mattrib", &["-i", img.to_str().unwrap(), "::/ro.txt"]);
    assert!(attrs.contains('R'), "{attrs}");
}

#[test]
fn fat32_written_passes_fsck_and_mtools_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("w32.img");
    let tree = generated();
    let warnings = build(&tree, FatBuilder::FAT32, Some(64 << 20), Some("DISKCAST"), &img);
    for w in ["link: skipped, FAT cannot hold a symlink", "null: skipped", "fifo: skipped", "Readme.txt: skipped"] {
        assert!(warnings.iter().any(|x| x.contains(w)), "{w} not in {warnings:?}");
    }
    assert_eq!(Geometry::read(&RawReader::open(&img).unwrap()).unwrap().fat_type.name(), "FAT32");
    judge(&img, Some("diskcast"));
    // Our reader agrees, and so does the FSInfo free count with fsck's count.
    assert_eq!(contents(&read_fat(&img)), expected_of_generated());
    let v = run_utc("fsck.fat", &["-n", "-v", img.to_str().unwrap()]);
    assert!(v.contains("32 bit entries") && v.contains("Checking free cluster summary"), "{v}");
}

#[test]
fn fat16_written_and_fat32_too_small_falls_back_to_fat16() {
    let dir = tempfile::tempdir().unwrap();
    let tree = generated();
    let img = dir.path().join("w16.img");
    build(&tree, FatBuilder::FAT16, Some(16 << 20), None, &img);
    assert_eq!(Geometry::read(&RawReader::open(&img).unwrap()).unwrap().fat_type.name(), "FAT16");
    judge(&img, None);
    let img = dir.path().join("small.img");
    let w = build(&tree, FatBuilder::FAT32, Some(32 << 20), None, &img);
    assert!(w.iter().any(|x| x.contains("too small for FAT32")), "{w:?}");
    assert_eq!(Geometry::read(&RawReader::open(&img).unwrap()).unwrap().fat_type.name(), "FAT16");
    judge(&img, None);
    // 33 MiB is FAT32 already; automatic size fits the content.
    let img = dir.path().join("auto.img");
    build(&tree, FatBuilder::FAT32, None, None, &img);
    assert_eq!(Geometry::read(&RawReader::open(&img).unwrap()).unwrap().fat_type.name(), "FAT32");
    judge(&img, None);
    let opts = BuildOptions { size: Some(1 << 20), ..BuildOptions::default() };
    let e = FatBuilder::FAT32.plan(&tree, &opts).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

/// A small FAT16 made by mkfs.fat with one 3-cluster file, and its geometry.
fn small_fat(dir: &Path) -> (PathBuf, Geometry) {
    let src = dir.join("one");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("FILE.BIN"), pattern(5000, 3)).unwrap();
    let img = mkfs_and_copy(dir, "h.img", &["-F", "16", "-s", "4"], "16384", &src);
    let geo = Geometry::read(&RawReader::open(&img).unwrap()).unwrap();
    (img, geo)
}

fn read_err(img: PathBuf, what: &str) -> diskcast_block::Error {
    within(20, what, move || {
        let disk: Arc<dyn BlockRead> = Arc::new(RawReader::open(&img).unwrap());
        let opts = ReadOptions { label: img.display().to_string(), ..ReadOptions::default() };
        FatReader.read(disk, &opts).map(|_| ()).unwrap_err()
    })
}

#[test]
fn hostile_zero_sectors_per_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = small_fat(dir.path());
    patch(&img, 13, &[0]);
    let e = read_err(img, "zero sectors per cluster");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("sectors_per_cluster"), "{e}");
    assert!(e.file().is_some(), "{e}");
}

#[test]
fn hostile_cyclic_cluster_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (img, geo) = small_fat(dir.path());
    // The file's chain is clusters 3 -> 4 -> 5 -> EOC (cluster 2 is... whatever mcopy
    // chose): find it and make its second cluster point back at the first.
    let fat = diskcast_testkit::read_bytes(&img, geo.fat_offset, 64);
    let entry = |c: usize| u16::from_le_bytes([fat[2 * c], fat[2 * c + 1]]);
    let first = (2..30).find(|&c| entry(c) != 0 && entry(c) < 0xfff8).unwrap();
    let second = entry(first) as usize;
    patch(&img, geo.fat_offset + 2 * second as u64, &(first as u16).to_le_bytes());
    let e = read_err(img.clone(), "cyclic chain");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("loop") || e.to_string().contains("ends after"), "{e}");
    // A directory whose chain loops onto itself.
    let dir2 = dir.path().join("d");
    std::fs::create_dir_all(dir2.join("sub")).unwrap();
    std::fs::write(dir2.join("sub").join("X"), b"x").unwrap();
    let img = mkfs_and_copy(dir.path(), "d.img", &["-F", "16", "-s", "1"], "16384", &dir2);
    let geo = Geometry::read(&RawReader::open(&img).unwrap()).unwrap();
    let fat = diskcast_testkit::read_bytes(&img, geo.fat_offset, 16);
    // sub is the first allocated cluster (2), a single-cluster chain: point it at itself.
    assert_eq!(u16::from_le_bytes([fat[4], fat[5]]), 0xffff);
    patch(&img, geo.fat_offset + 4, &2u16.to_le_bytes());
    let e = read_err(img, "directory loop");
    assert!(e.to_string().contains("loop"), "{e}");
}

#[test]
fn hostile_cross_linked_files() {
    // Two files made by mcopy, the second's entry pointed at the first's chain: every
    // file sharing a chain mapped it again (thousands of them held GBs).
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("two");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("A.BIN"), pattern(5000, 4)).unwrap();
    std::fs::write(src.join("B.BIN"), pattern(5000, 5)).unwrap();
    let img = mkfs_and_copy(dir.path(), "x.img", &["-F", "16", "-s", "4"], "16384", &src);
    let geo = Geometry::read(&RawReader::open(&img).unwrap()).unwrap();
    let root = diskcast_testkit::read_bytes(&img, geo.root_region.0, 512);
    let entry = |name: &[u8; 11]| root.chunks_exact(32).position(|e| &e[..11] == name).unwrap() * 32;
    let (a, b) = (entry(b"A       BIN"), entry(b"B       BIN"));
    let at = geo.root_region.0 + u64::try_from(b).unwrap() + 26;
    patch(&img, at, &root[a + 26..a + 28]);
    let e = read_err(img, "cross-linked files");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("is also in another file's or directory's chain (cross-linked)"), "{e}");
    assert!(e.to_string().contains("x.img"), "{e}");
}

#[test]
fn files_up_to_4_gib_minus_1_are_planned_and_larger_ones_refused() {
    // A zero-filled file of the largest size FAT holds plans (nothing is read or written).
    let zeros = |size: u64| Kind::File(FileData { size, content: diskcast_tree::Content::Zero });
    let mut tree = Tree::new(meta(0o755));
    tree.insert(NodeId::ROOT, b"max.bin", Node::new(meta(0o644), zeros(u64::from(u32::MAX)))).unwrap();
    FatBuilder::FAT32.plan(&tree, &BuildOptions::default()).unwrap();
    let d = tree.insert(NodeId::ROOT, b"d", Node::new(meta(0o755), Kind::empty_dir())).unwrap();
    tree.insert(d, b"over.bin", Node::new(meta(0o644), zeros(1 << 32))).unwrap();
    for b in [FatBuilder::FAT32, FatBuilder::FAT16] {
        let e = b.plan(&tree, &BuildOptions::default()).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("/d/over.bin: 4294967296 bytes is larger than a FAT file can be (4294967295 bytes"),
            "{msg}"
        );
    }
}

#[test]
fn a_directory_over_65536_entries_is_refused_at_planning() {
    // Each lowercase 8.3 name takes a long-name slot and a short entry: 32767 files and
    // "." ".." fill a directory exactly, one more overflows it.
    let mut tree = Tree::new(meta(0o755));
    let d = tree.insert(NodeId::ROOT, b"big", Node::new(meta(0o755), Kind::empty_dir())).unwrap();
    for i in 0..32_767 {
        let f = FileData::inline(Vec::new());
        tree.insert(d, format!("f{i:05}.txt").as_bytes(), Node::new(meta(0o644), Kind::File(f))).unwrap();
    }
    FatBuilder::FAT32.plan(&tree, &BuildOptions::default()).unwrap();
    tree.insert(d, b"f32767.txt", Node::new(meta(0o644), Kind::File(FileData::inline(Vec::new())))).unwrap();
    let e = FatBuilder::FAT32.plan(&tree, &BuildOptions::default()).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(
        e.to_string().contains("directory /big/ needs 65538 directory entries (long names take several each), more than FAT's 65536 per directory (MAX_DIR_ENTRIES)"),
        "{e}"
    );
}
