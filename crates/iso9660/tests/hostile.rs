//! Broken and hostile discs (made by xorriso/genisoimage, then patched): each gets a
//! clear error naming the disc and the field, within a time limit, never a panic or a
//! hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::{Error, ErrorKind};
use diskcast_iso9660::Iso9660Reader;
use diskcast_testkit::assert_error;
use diskcast_tree::{FsReader, ReadOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const SECTOR: usize = 2048;

/// An ISO made by xorriso (Rock Ridge) from a small tree, as bytes, plus a scratch dir.
fn base_iso(zisofs: bool) -> (tempfile::TempDir, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sh(&format!(
        "cd '{}'; mkdir sub; echo hello > hello.txt; echo two > xy; seq 1 30000 > numbers.txt
         for i in $(seq 1 40); do echo $i > \"some-longer-file-name-number-$i.txt\"; done",
        src.display()
    ));
    let iso = t.path().join("base.iso");
    if zisofs {
        let z = t.path().join("z");
        run("mkzftree", &[src.to_str().unwrap(), z.to_str().unwrap()]);
        run("genisoimage", &["-quiet", "-R", "-z", "-o", iso.to_str().unwrap(), z.to_str().unwrap()]);
    } else {
        run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    }
    let bytes = std::fs::read(&iso).unwrap();
    (t, bytes)
}

fn le32(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

fn root_dir(img: &[u8]) -> usize {
    le32(img, 16 * SECTOR + 156 + 2) * SECTOR
}

/// Byte offset of the directory record of `ident` in the root directory.
fn record_of(img: &[u8], ident: &[u8]) -> usize {
    let root = root_dir(img);
    let mut pos = root;
    loop {
        let len = img[pos] as usize;
        if len == 0 {
            pos = (pos / SECTOR + 1) * SECTOR;
            assert!(pos < root + 4 * SECTOR, "no record {ident:?}");
            continue;
        }
        let n = img[pos + 32] as usize;
        if &img[pos + 33..pos + 33 + n] == ident {
            return pos;
        }
        pos += len;
    }
}

/// Offset of the SUSP entry `sig` inside the record at `rec`.
fn entry_in(img: &[u8], rec: usize, sig: &[u8; 2]) -> usize {
    let len = img[rec] as usize;
    (rec + 34..rec + len - 1).find(|&i| &img[i..i + 2] == sig).unwrap_or_else(|| panic!("no {sig:?} entry"))
}

fn put_both32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
    img[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Reads the patched disc in a thread and returns its error; fails after 10 seconds.
fn read_error(dir: &Path, img: &[u8]) -> Error {
    let path: PathBuf = dir.join("hostile.iso");
    std::fs::write(&path, img).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let disk = open(&path);
        let opts = ReadOptions { tree: None, label: path.display().to_string() };
        let r = Iso9660Reader.read(disk, &opts).map(|t| {
            // Reading succeeded: read every file too, the error may be there.
            let mut first = None;
            for (_, id) in t.walk(t.root()) {
                if let Some(f) = t.node(id).as_file() {
                    let mut buf = vec![0u8; f.size.min(1 << 20) as usize];
                    if let Err(e) = f.read_at(&mut buf, 0) {
                        first.get_or_insert(e);
                    }
                }
            }
            first
        });
        let _ = tx.send(r);
    });
    match rx.recv_timeout(Duration::from_secs(10)).expect("reading the hostile disc hung") {
        Err(e) => e,
        Ok(Some(e)) => e,
        Ok(None) => panic!("the hostile disc read without error"),
    }
}

#[test]
fn directory_record_of_length_zero() {
    let (t, mut img) = base_iso(false);
    let root = root_dir(&img);
    img[root] = 0;
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "does not start with its '.' record");
}

#[test]
fn directory_record_running_past_its_block() {
    let (t, mut img) = base_iso(false);
    // The padding after the first sector's last record becomes a 255-byte record.
    let root = root_dir(&img);
    let mut pos = root;
    while img[pos] != 0 {
        pos += img[pos] as usize;
    }
    assert!(pos < root + SECTOR && pos + 255 > root + SECTOR, "the first sector has no tail gap");
    img[pos] = 255;
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "runs past the end of its sector");
    assert_eq!(e.field(), Some("record_length"));
}

#[test]
fn directory_cycle() {
    let (t, mut img) = base_iso(false);
    let root_lba = (root_dir(&img) / SECTOR) as u32;
    let sub = record_of(&img, b"SUB");
    put_both32(&mut img, sub + 2, root_lba);
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "directory cycle");
}

#[test]
fn rock_ridge_continuation_loop() {
    let (t, mut img) = base_iso(false);
    let rec = record_of(&img, b"HELLO.TXT;1");
    // PX (36 or 44 bytes) becomes a CE pointing at itself plus padding.
    let px = entry_in(&img, rec, b"PX");
    let px_len = img[px + 2] as usize;
    assert!(px_len >= 32);
    let mut ce = vec![b'C', b'E', 28, 1];
    ce.extend_from_slice(&[0; 24]);
    put_both32(&mut ce, 4, (px / SECTOR) as u32);
    put_both32(&mut ce, 12, (px % SECTOR) as u32);
    put_both32(&mut ce, 20, 28);
    img[px..px + 28].copy_from_slice(&ce);
    img[px + 28..px + px_len].fill(0);
    img[px + 28..px + 32].copy_from_slice(&[b'P', b'D', (px_len - 28) as u8, 1]);
    let e = read_error(t.path(), &img);
    // The area is the record itself, inside the directory's extent: refused as overlapping
    // it before it could loop.
    assert_error(&e, ErrorKind::Corrupt, "continuation area at byte");
    assert_error(&e, ErrorKind::Corrupt, "overlaps the directory");
    assert_eq!(e.field(), Some("CE"));
}

#[test]
fn names_with_slash_or_dot_dot() {
    for (ident, name) in [(&b"HELLO.TXT;1"[..], &b"hel/o.txt"[..]), (b"XY.;1", b"..")] {
        let (t, mut img) = base_iso(false);
        let rec = record_of(&img, ident);
        let nm = entry_in(&img, rec, b"NM");
        assert_eq!(img[nm + 2] as usize, 5 + name.len());
        img[nm + 5..nm + 5 + name.len()].copy_from_slice(name);
        let e = read_error(t.path(), &img);
        assert_error(&e, ErrorKind::InvalidFormat, "name");
        assert_eq!(e.field(), Some("name"));
    }
}

#[test]
fn zisofs_block_count_overflow() {
    let (t, mut img) = base_iso(true);
    let rec = record_of(&img, b"NUMBERS.TXT;1");
    let zf = entry_in(&img, rec, b"ZF");
    put_both32(&mut img, zf + 8, u32::MAX);
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "zisofs block table");
}

/// Where the continuation area of the record at `rec` is: (block, offset, length).
fn ce_of(img: &[u8], rec: usize) -> (usize, usize, usize) {
    let ce = entry_in(img, rec, b"CE");
    (le32(img, ce + 4), le32(img, ce + 12), le32(img, ce + 20))
}

/// Five symlinks of 1019 bytes each (libisofs' longest), each in its own continuation
/// area; each area gets a CE to the next link's, so the first link's SL entries add up to
/// over 5000 bytes. Linux fails `readlink` past a page; we refuse past 4095 bytes, naming
/// the link.
#[test]
fn rock_ridge_symlink_longer_than_path_max() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("links.iso"));
    std::fs::create_dir(&src).unwrap();
    let target = vec!["aaaaaaaaa"; 102].join("/");
    for i in 1..=5 {
        std::os::unix::fs::symlink(&target, src.join(format!("l{i}"))).unwrap();
    }
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let areas: Vec<_> = (1..=5).map(|i| ce_of(&img, record_of(&img, format!("L{i}.;1").as_bytes()))).collect();
    for (i, w) in areas.windows(2).enumerate() {
        let ((blk, off, len), (nblk, noff, nlen)) = (w[0], w[1]);
        let end = blk * SECTOR + off + len;
        assert!(end + 28 <= (blk + 1) * SECTOR && img[end..end + 28].iter().all(|&b| b == 0), "no room after area {i}");
        let mut ce = vec![b'C', b'E', 28, 1];
        ce.extend_from_slice(&[0; 24]);
        put_both32(&mut ce, 4, nblk as u32);
        put_both32(&mut ce, 12, noff as u32);
        // The next area grows by its own CE too (except the last).
        put_both32(&mut ce, 20, (nlen + if i + 2 < areas.len() { 28 } else { 0 }) as u32);
        img[end..end + 28].copy_from_slice(&ce);
    }
    let l1 = record_of(&img, b"L1.;1");
    let ce = entry_in(&img, l1, b"CE");
    put_both32(&mut img, ce + 20, (areas[0].2 + 28) as u32);
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::OutOfBounds, "symlink \"l1\": target longer than 4095 bytes");
    assert_eq!(e.field(), Some("SL"));
}

#[test]
fn root_record_in_the_volume_descriptor_too_short() {
    let (t, mut img) = base_iso(false);
    img[16 * SECTOR + 156] = 20;
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "root directory record of the volume descriptor has length 20");
    assert_eq!(e.field(), Some("root_directory_record"));
}

/// Eight 16 MiB files of zeros compressed by mkzftree: a zisofs block of zeros is stored
/// as nothing (2068 stored bytes each, 8100:1, zisofs' holes), and the disc reads. Then
/// every record points at the first file's stored bytes: 128 MiB streamed from 2 KiB,
/// over the 4096:1 + 64 MiB cap that OCI layers obey; refused before any file is read.
/// (Issue 15's case: four records sharing a 4 GiB file of zeros, 16 GB out of a 786 KB
/// disc.)
#[test]
fn zisofs_extent_shared_by_many_records() {
    let t = tempfile::tempdir().unwrap();
    let (src, z, iso) = (t.path().join("src"), t.path().join("z"), t.path().join("z.iso"));
    std::fs::create_dir(&src).unwrap();
    for i in 1..=8 {
        std::fs::File::create(src.join(format!("z{i}.bin"))).unwrap().set_len(16 << 20).unwrap();
    }
    run("mkzftree", &[src.to_str().unwrap(), z.to_str().unwrap()]);
    run("genisoimage", &["-quiet", "-R", "-z", "-o", iso.to_str().unwrap(), z.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let tree = read(&iso, None);
    let z8 = tree.resolve(b"z8.bin", false).unwrap();
    let f = tree.node(z8).as_file().unwrap();
    assert_eq!(f.size, 16 << 20);
    let mut tail = vec![1u8; 4096];
    f.read_at(&mut tail, (16 << 20) - 4096).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
    assert_eq!(f.data_ranges().unwrap(), [], "empty zisofs blocks are holes");

    let first = record_of(&img, b"Z1.BIN;1");
    let (lba, len) = (le32(&img, first + 2) as u32, le32(&img, first + 10) as u32);
    assert_eq!(len, 2068, "mkzftree's 16 MiB of zeros: header and 513 block offsets");
    for i in 2..=8 {
        let rec = record_of(&img, format!("Z{i}.BIN;1").as_bytes());
        put_both32(&mut img, rec + 2, lba);
        put_both32(&mut img, rec + 10, len);
    }
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::OutOfBounds, "from 2068 stored bytes");
    assert_error(&e, ErrorKind::OutOfBounds, "refused as a decompression bomb");
    assert_eq!(e.field(), Some("ZF"));
}

/// A directory whose extent starts inside another's (its first sector made to start with
/// a `.` record): each of the 60 files is listed twice, and a disc of N sectors nested so
/// lists O(N^2) entries. Directory extents may not overlap.
#[test]
fn directory_extent_inside_another() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("d.iso"));
    std::fs::create_dir_all(src.join("a")).unwrap();
    for i in 0..60 {
        std::fs::write(src.join(format!("file-with-a-long-name-number-{i:03}.txt")), b"x").unwrap();
    }
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let (root, root_len) = (root_dir(&img), le32(&img, 16 * SECTOR + 156 + 10));
    assert!(root_len >= 2 * SECTOR, "the root fits one sector");
    let a = record_of(&img, b"A");
    assert!(a < root + SECTOR, "the A record is not in the root's first sector");
    // The second sector's first record becomes a `.` record; A's extent starts there.
    let second = root + SECTOR;
    img[second + 32] = 1;
    img[second + 33] = 0;
    put_both32(&mut img, a + 2, (second / SECTOR) as u32);
    put_both32(&mut img, a + 10, (root_len - SECTOR) as u32);
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, &format!("directory at byte {second}"));
    assert_error(&e, ErrorKind::Corrupt, &format!("overlaps the directory at byte {root}"));
}

/// Two symlinks whose records name the same continuation area: one area per record, or a
/// few KiB of records could make every record re-read the same 256 KiB.
#[test]
fn rock_ridge_continuation_area_shared_by_two_records() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("links.iso"));
    std::fs::create_dir(&src).unwrap();
    let target = vec!["aaaaaaaaa"; 102].join("/");
    for i in 1..=2 {
        std::os::unix::fs::symlink(&target, src.join(format!("l{i}"))).unwrap();
    }
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let (l1, l2) = (record_of(&img, b"L1.;1"), record_of(&img, b"L2.;1"));
    let (ce1, ce2) = (entry_in(&img, l1, b"CE"), entry_in(&img, l2, b"CE"));
    let shared = img[ce1 + 4..ce1 + 28].to_vec();
    img[ce2 + 4..ce2 + 28].copy_from_slice(&shared);
    let e = read_error(t.path(), &img);
    assert_error(&e, ErrorKind::Corrupt, "Rock Ridge continuation area at byte");
    assert_error(&e, ErrorKind::Corrupt, "overlaps the Rock Ridge continuation area");
    assert_eq!(e.field(), Some("CE"));
}
