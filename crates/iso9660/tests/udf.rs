//! UDF discs made by genisoimage (UDF 1.02 bridge), pycdlib (UDF 2.60, Windows-installer
//! shaped) and mkudffs (2.01 to 2.60, metadata partitions, 512-byte blocks), read by us
//! and by 7-Zip and udfinfo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_iso9660::{TreeKind, available_trees};
use diskcast_tree::{Content, NodeId};
use std::path::Path;

const NONE: Check = Check { modes: false, mtimes: false, symlinks: false, hardlinks: false };

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn seven_zip_udf(iso: &Path, out: &Path) {
    run("7zz", &["x", "-y", "-tUdf", &format!("-o{}", out.display()), iso.to_str().unwrap()]);
}

#[test]
fn genisoimage_udf_bridge_is_preferred_and_matches_7zip() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("u.iso"));
    sh(&format!(
        "mkdir -p '{s}/sub dir/deeper' '{s}/empty'; cd '{s}'; echo hello > hello.txt
         head -c 300000 /dev/urandom > random.bin; printf 'é' > 'sub dir/héllo wörld.txt'
         seq 1 5000 > 'sub dir/deeper/numbers.txt'; : > zero-length",
        s = src.display()
    ));
    run(
        "genisoimage",
        &["-quiet", "-R", "-J", "-udf", "-V", "BRIDGE", "-o", iso.to_str().unwrap(), src.to_str().unwrap()],
    );
    let disk = open(&iso);
    let trees = available_trees(disk.as_ref()).unwrap();
    assert_eq!(trees, [TreeKind::Udf, TreeKind::RockRidge, TreeKind::Joliet, TreeKind::Iso9660]);
    let udf = read(&iso, None);
    let out = t.path().join("7z");
    seven_zip_udf(&iso, &out);
    assert_same(&udf, &out, NONE, &|_| false);
    // The same files as the Rock Ridge tree, byte for byte.
    let rr = read(&iso, Some("rockridge"));
    let a: Vec<_> = udf.walk(NodeId::ROOT).map(|(p, _)| p).collect();
    let b: Vec<_> = rr.walk(NodeId::ROOT).map(|(p, _)| p).collect();
    assert_eq!(a, b);
    let id = udf.resolve(b"random.bin", false).unwrap();
    assert!(matches!(udf.node(id).as_file().unwrap().content, Content::Blocks { .. }));
}

#[test]
fn pycdlib_udf_2_60_windows_like_disc() {
    let t = tempfile::tempdir().unwrap();
    let iso = t.path().join("win.iso");
    run("/usr/bin/python3", &[&fixture("udf-windows-like.py"), iso.to_str().unwrap(), "3000000"]);
    let udf = read(&iso, None);
    let out = t.path().join("7z");
    seven_zip_udf(&iso, &out);
    assert_same(&udf, &out, NONE, &|_| false);
    // The ISO 9660 side holds only the README.
    let iso_side = read(&iso, Some("iso9660"));
    let names: Vec<_> = iso_side.walk(NodeId::ROOT).skip(1).map(|(p, _)| String::from_utf8(p).unwrap()).collect();
    assert_eq!(names, ["README.TXT"]);
}

#[test]
fn mkudffs_revisions_and_block_sizes() {
    let t = tempfile::tempdir().unwrap();
    for (rev, media, bs) in
        [("1.02", "dvd", "2048"), ("2.01", "hd", "512"), ("2.01", "hd", "4096"), ("2.01", "dvdram", "2048")]
    {
        let img = t.path().join(format!("udf-{rev}-{bs}.img"));
        run("truncate", &["-s", "16M", img.to_str().unwrap()]);
        run(
            "mkudffs",
            &[
                &format!("--media-type={media}"),
                &format!("--udfrev={rev}"),
                &format!("--blocksize={bs}"),
                "--label=DCUDF",
                "--uid=1000",
                "--gid=100",
                "--mode=0750",
                img.to_str().unwrap(),
            ],
        );
        let info = run("udfinfo", &[img.to_str().unwrap()]);
        assert!(info.contains("label=DCUDF"), "{info}");
        let tree = read(&img, None);
        let root = tree.node(NodeId::ROOT);
        assert_eq!((root.meta.mode, root.meta.uid, root.meta.gid), (0o750, 1000, 100), "UDF {rev} {bs}");
        assert_eq!(
            tree.dir(NodeId::ROOT).unwrap().len(),
            0,
            "UDF {rev} {bs}: {:?}",
            tree.walk(NodeId::ROOT).map(|p| p.0).collect::<Vec<_>>()
        );
    }
}

#[test]
fn write_once_media_with_a_virtual_allocation_table_are_refused_clearly() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("bdr.img");
    run("truncate", &["-s", "16M", img.to_str().unwrap()]);
    run("mkudffs", &["--media-type=bdr", "--udfrev=2.50", img.to_str().unwrap()]);
    let disk = open(&img);
    let opts = diskcast_tree::ReadOptions { tree: None, label: img.display().to_string() };
    use diskcast_tree::FsReader;
    let e = diskcast_iso9660::Iso9660Reader.read(disk, &opts).unwrap_err();
    diskcast_testkit::assert_error(&e, diskcast_block::ErrorKind::Unsupported, "Virtual Partition");
}

#[test]
fn udf_partition_reference_out_of_range() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("u.iso"));
    sh(&format!("mkdir -p '{s}/d'; echo x > '{s}/d/f'", s = src.display()));
    run("genisoimage", &["-quiet", "-udf", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    // The file set descriptor (tag 256): its root ICB names partition reference 9.
    let fsd = (0..img.len() / 2048)
        .map(|s| s * 2048)
        .find(|&at| u16::from_le_bytes([img[at], img[at + 1]]) == 256 && img[at + 4] != 0)
        .expect("no file set descriptor");
    img[fsd + 408..fsd + 410].copy_from_slice(&9u16.to_le_bytes());
    let bad = t.path().join("bad.iso");
    std::fs::write(&bad, &img).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b = bad.clone();
    std::thread::spawn(move || {
        use diskcast_tree::FsReader;
        let opts = diskcast_tree::ReadOptions { tree: Some("udf".into()), label: b.display().to_string() };
        tx.send(diskcast_iso9660::Iso9660Reader.read(open(&b), &opts).map(|_| ()))
    });
    let e = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("hung").unwrap_err();
    diskcast_testkit::assert_error(&e, diskcast_block::ErrorKind::Corrupt, "partition reference 9 is out of range");
    assert_eq!(e.field(), Some("partition_reference"));
}

/// A file over 4 GiB in UDF, as genisoimage writes it with `-allow-limited-size`: one file
/// entry with a 64-bit length in UDF, the ISO 9660 side shrunk to the length modulo 4 GiB.
/// The UDF tree's file is compared byte for byte with the source, its size with 7-Zip's
/// listing; the Rock Ridge tree shows the shrunk size, as genisoimage documents.
#[test]
fn udf_file_over_4_gib_from_genisoimage() {
    use std::io::{Read, Seek, SeekFrom, Write};
    const SIZE: u64 = (4 << 30) + 123_456;
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("big.iso"));
    std::fs::create_dir_all(src.join("sources")).unwrap();
    let wim = src.join("sources/install.wim");
    {
        let mut f = std::fs::File::create(&wim).unwrap();
        f.set_len(SIZE).unwrap();
        f.write_all(b"MSWIM\0\0\0").unwrap();
        // Marks on both sides of the 4 GiB boundary and at the end.
        for (off, mark) in [((4u64 << 30) - 3, &b"EDGE"[..]), (SIZE - 4, b"TAIL")] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(mark).unwrap();
        }
    }
    std::fs::write(src.join("README.TXT"), b"UDF holds the big file\n").unwrap();
    run(
        "genisoimage",
        &["-quiet", "-udf", "-allow-limited-size", "-R", "-J", "-o", iso.to_str().unwrap(), src.to_str().unwrap()],
    );

    let listing = run("7zz", &["l", "-tUdf", iso.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l.contains(&SIZE.to_string()) && l.ends_with("install.wim")), "{listing}");
    let udf = read(&iso, None);
    let id = udf.resolve(b"sources/install.wim", false).unwrap();
    let file = udf.node(id).as_file().unwrap();
    assert_eq!(file.size, SIZE);
    let mut expect = std::fs::File::open(&wim).unwrap();
    let (mut a, mut b) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut pos = 0u64;
    while pos < SIZE {
        let n = (SIZE - pos).min(a.len() as u64) as usize;
        file.read_at(&mut a[..n], pos).unwrap();
        expect.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "install.wim differs in the 8 MiB at {pos}");
        pos += n as u64;
    }
    let rr = read(&iso, Some("rockridge"));
    let id = rr.resolve(b"sources/install.wim", false).unwrap();
    assert_eq!(rr.node(id).as_file().unwrap().size, SIZE % (4 << 30));
}

/// CRC-16/CCITT (polynomial 0x1021, initial 0) of a UDF descriptor body, as the tag's
/// descriptor CRC (ECMA-167 3/7.2.6) records it: Linux checks it.
fn udf_crc(b: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &x in b {
        crc ^= u16::from(x) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Ten UDF symlinks made by pycdlib whose file entries then claim 256 MiB of path
/// components each (descriptor CRC and tag checksum fixed up): they were read whole, 922 MB resident.
/// Linux refuses a symlink longer than one block; so do we, naming the link, before
/// reading anything past the entry.
#[test]
fn udf_symlink_entries_claiming_256_mib() {
    let t = tempfile::tempdir().unwrap();
    let iso = t.path().join("links.iso");
    run(
        "/usr/bin/python3",
        &[
            "-c",
            "import io, sys, pycdlib
iso = pycdlib.PyCdlib()
iso.new(udf='2.60')
iso.add_fp(io.BytesIO(b'hi'), 2, '/FILE.;1', udf_path='/file')
iso.add_directory('/DIR', udf_path='/dir')
for i in range(10):
    iso.add_symlink(udf_symlink_path='/dir/l%d' % i, udf_target='../file')
iso.write(sys.argv[1])",
            iso.to_str().unwrap(),
        ],
    );
    let before = read(&iso, Some("udf"));
    let l0 = before.resolve(b"dir/l0", false).unwrap();
    assert!(matches!(&before.node(l0).kind, diskcast_tree::Kind::Symlink(t) if t == b"../file"));
    let mut img = std::fs::read(&iso).unwrap();
    let mut patched = 0;
    for at in (0..img.len()).step_by(2048) {
        let tag = u16::from_le_bytes([img[at], img[at + 1]]);
        if (tag == 261 || tag == 266) && img[at + 27] == 12 {
            img[at + 56..at + 64].copy_from_slice(&(256u64 << 20).to_le_bytes());
            let crc_len = usize::from(u16::from_le_bytes([img[at + 10], img[at + 11]]));
            let crc = udf_crc(&img[at + 16..at + 16 + crc_len]);
            img[at + 8..at + 10].copy_from_slice(&crc.to_le_bytes());
            // The tag checksum covers the CRC.
            img[at + 4] = (0..16).filter(|&i| i != 4).fold(0u8, |s, i| s.wrapping_add(img[at + i]));
            patched += 1;
        }
    }
    assert_eq!(patched, 10);
    std::fs::write(&iso, &img).unwrap();
    let opts = diskcast_tree::ReadOptions { tree: Some("udf".into()), label: iso.display().to_string() };
    use diskcast_tree::FsReader;
    let e = diskcast_iso9660::Iso9660Reader.read(open(&iso), &opts).unwrap_err();
    diskcast_testkit::assert_error(
        &e,
        diskcast_block::ErrorKind::OutOfBounds,
        "UDF symlink \"dir/l0\": 268435456 bytes of path components, more than one 2048-byte block",
    );
}

/// Two directories of a genisoimage UDF bridge whose file entries then share one extent
/// of identifiers (the second's allocation descriptor and length copied from the first,
/// descriptor CRC and tag checksum fixed up): the first's files were listed again in the
/// second, and directories nested so list O(N²) entries. A directory's content belongs
/// to that directory alone.
#[test]
fn udf_directories_sharing_their_identifiers() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("u.iso"));
    sh(&format!(
        "mkdir -p '{s}/a' '{s}/b'; for i in 1 2 3; do echo $i > '{s}/a/f'$i; echo $i > '{s}/b/g'$i; done",
        s = src.display()
    ));
    run("genisoimage", &["-quiet", "-udf", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let before = read(&iso, Some("udf"));
    assert!(before.resolve(b"b/g1", false).is_ok());
    let mut img = std::fs::read(&iso).unwrap();
    let fsd = (0..img.len() / 2048)
        .map(|s| s * 2048)
        .find(|&at| u16::from_le_bytes([img[at], img[at + 1]]) == 256 && img[at + 4] != 0)
        .expect("no file set descriptor");
    let root_lb = u32::from_le_bytes(img[fsd + 404..fsd + 408].try_into().unwrap());
    // Directory file entries (type 4) other than the root's: a, then b.
    let dirs: Vec<usize> = (0..img.len() / 2048)
        .map(|s| s * 2048)
        .filter(|&at| u16::from_le_bytes([img[at], img[at + 1]]) == 261 && img[at + 27] == 4)
        .filter(|&at| u32::from_le_bytes(img[at + 12..at + 16].try_into().unwrap()) != root_lb)
        .collect();
    assert_eq!(dirs.len(), 2, "directory entries: {dirs:?}");
    let (a, b) = (dirs[0], dirs[1]);
    let ad =
        |img: &[u8], at: usize| at + 176 + u32::from_le_bytes(img[at + 168..at + 172].try_into().unwrap()) as usize;
    assert_eq!(img[a + 34] & 7, 0, "short allocation descriptors expected");
    let (a_ad, b_ad) = (ad(&img, a), ad(&img, b));
    let (a_len, a_ad) = (img[a + 56..a + 64].to_vec(), img[a_ad..a_ad + 8].to_vec());
    img[b + 56..b + 64].copy_from_slice(&a_len);
    img[b_ad..b_ad + 8].copy_from_slice(&a_ad);
    let crc_len = usize::from(u16::from_le_bytes([img[b + 10], img[b + 11]]));
    let crc = udf_crc(&img[b + 16..b + 16 + crc_len]);
    img[b + 8..b + 10].copy_from_slice(&crc.to_le_bytes());
    img[b + 4] = (0..16).filter(|&i| i != 4).fold(0u8, |s, i| s.wrapping_add(img[b + i]));
    std::fs::write(&iso, &img).unwrap();
    let opts = diskcast_tree::ReadOptions { tree: Some("udf".into()), label: iso.display().to_string() };
    use diskcast_tree::FsReader;
    let e = diskcast_iso9660::Iso9660Reader.read(open(&iso), &opts).unwrap_err();
    diskcast_testkit::assert_error(&e, diskcast_block::ErrorKind::Corrupt, "overlaps the UDF directory at byte");
}

/// The root directory of a genisoimage UDF disc claiming 200 MiB (found by the tree
/// fuzzer): it was allocated whole before the first missing identifier ended it. A
/// directory longer than its recorded extents is refused before anything is allocated.
#[test]
fn udf_directory_longer_than_its_recorded_extents() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("u.iso"));
    sh(&format!("mkdir -p '{s}/d'; echo x > '{s}/d/f'", s = src.display()));
    run("genisoimage", &["-quiet", "-udf", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let fsd = (0..img.len() / 2048)
        .map(|s| s * 2048)
        .find(|&at| u16::from_le_bytes([img[at], img[at + 1]]) == 256 && img[at + 4] != 0)
        .expect("no file set descriptor");
    let root_lb = u32::from_le_bytes(img[fsd + 404..fsd + 408].try_into().unwrap());
    let root = (0..img.len() / 2048)
        .map(|s| s * 2048)
        .find(|&at| {
            u16::from_le_bytes([img[at], img[at + 1]]) == 261
                && u32::from_le_bytes(img[at + 12..at + 16].try_into().unwrap()) == root_lb
        })
        .expect("no root file entry");
    img[root + 56..root + 64].copy_from_slice(&(200u64 << 20).to_le_bytes());
    let crc_len = usize::from(u16::from_le_bytes([img[root + 10], img[root + 11]]));
    let crc = udf_crc(&img[root + 16..root + 16 + crc_len]);
    img[root + 8..root + 10].copy_from_slice(&crc.to_le_bytes());
    img[root + 4] = (0..16).filter(|&i| i != 4).fold(0u8, |s, i| s.wrapping_add(img[root + i]));
    std::fs::write(&iso, &img).unwrap();
    let opts = diskcast_tree::ReadOptions { tree: Some("udf".into()), label: iso.display().to_string() };
    use diskcast_tree::FsReader;
    let e = diskcast_iso9660::Iso9660Reader.read(open(&iso), &opts).unwrap_err();
    diskcast_testkit::assert_error(&e, diskcast_block::ErrorKind::Corrupt, "UDF directory of 209715200 bytes has only");
    assert_eq!(e.field(), Some("information_length"));
}

/// A disc whose file data ends at sector 2^32 - 1 has no sector left for UDF's closing
/// anchor: the plan refuses it (it used to wrap the sector count, in release builds
/// writing a volume size of 0). One sector less plans, with the largest volume size.
#[test]
fn a_udf_disc_past_sector_2_to_the_32_is_refused_at_planning() {
    use diskcast_block::{BlockRead, ErrorKind};
    use diskcast_iso9660::write::{IsoBuilder, IsoOptions};
    use diskcast_tree::{BuildOptions, BuiltFs, FileData, FsBuilder, Kind, Meta, Node, Timestamp, Tree};
    // Files of one extent each (4 GiB - 2 KiB), zero-filled: nothing is read or written.
    const PART: u64 = 0xFFFF_F800;
    let plan = |last: u64| {
        let meta = Meta::new(0o644, Timestamp::from_secs(1_700_000_000));
        let mut tree = Tree::new(Meta::new(0o755, Timestamp::from_secs(1_700_000_000)));
        let zeros = |size| Node::new(meta.clone(), Kind::File(FileData { size, content: Content::Zero }));
        for i in 0..2047 {
            tree.insert(NodeId::ROOT, format!("f{i:04}").as_bytes(), zeros(PART)).unwrap();
        }
        tree.insert(NodeId::ROOT, b"last", zeros(last)).unwrap();
        IsoBuilder::new(IsoOptions { udf: true, ..IsoOptions::default() }).plan(&tree, &BuildOptions::default())
    };
    let volume_size = |built: &BuiltFs| {
        let mut b = [0u8; 4];
        built.image.read_at(&mut b, 16 * 2048 + 80).unwrap();
        u32::from_le_bytes(b)
    };
    // The layout before the data does not depend on the last file's size: one probe
    // finds where the data ends (the volume is the data and UDF's closing anchor).
    let probe = plan(2048).unwrap();
    let end = volume_size(&probe) - 1;
    let room = u64::from(u32::MAX - end);
    let fits = plan(2048 + (room - 1) * 2048).unwrap();
    assert_eq!(volume_size(&fits), u32::MAX);
    let e = plan(2048 + room * 2048).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(
        e.to_string(),
        "the disc would be larger than 8 TiB (ISO 9660 numbers its 2048-byte sectors with 32 bits)"
    );
}
