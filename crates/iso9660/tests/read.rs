//! Discs made by xorriso and genisoimage, read by us and by bsdtar, 7-Zip, xorriso's own
//! extractor and isoinfo: the trees must agree in paths, types, modes, times, link
//! targets, hard links and content.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_iso9660::{Iso9660Reader, TreeKind, available_trees};
use diskcast_tree::{Content, FsReader, Kind, NodeId, ReadOptions};

const ALL: Check = Check { modes: true, mtimes: true, symlinks: true, hardlinks: true };

#[test]
fn xorriso_rock_ridge_and_joliet_match_bsdtar_xorriso_and_7zip() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("x.iso"));
    std::fs::create_dir(&src).unwrap();
    make_source(&src);
    let iso_s = iso.to_str().unwrap();
    run(
        "xorriso",
        &["-as", "mkisofs", "-quiet", "-R", "-J", "-joliet-long", "-V", "XTEST", "-o", iso_s, src.to_str().unwrap()],
    );
    let disk = open(&iso);
    assert_eq!(available_trees(disk.as_ref()).unwrap(), [TreeKind::RockRidge, TreeKind::Joliet, TreeKind::Iso9660]);

    let rr = read(&iso, None);
    let hello = rr.resolve(b"hello.txt", false).unwrap();
    assert_eq!(rr.node(hello).meta.mode, 0o4755);
    assert!(matches!(rr.node(hello).as_file().unwrap().content, Content::Blocks { .. }));
    assert_eq!(rr.resolve(b"hard-link", false).unwrap(), hello, "hard link shares the node");
    let deep = rr.resolve(b"d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/deep.txt", false).unwrap();
    assert_eq!(file_bytes(&rr, deep), b"deep\n");

    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    run("bsdtar", &["-xf", iso_s, "-C", bsd.to_str().unwrap()]);
    assert_same(&rr, &bsd, ALL, &|_| false);

    let osirrox = t.path().join("osirrox");
    run("xorriso", &["-osirrox", "on", "-indev", iso_s, "-extract", "/", osirrox.to_str().unwrap()]);
    assert_same(&rr, &osirrox, ALL, &|_| false);

    // 7-Zip reads the Joliet tree: names, directories and content, no Unix attributes
    // (symlinks and the fifo are empty files there).
    let joliet = read(&iso, Some("joliet"));
    let sz = t.path().join("7z");
    run("7zz", &["x", "-y", &format!("-o{}", sz.display()), iso_s]);
    let none = Check { modes: false, mtimes: false, symlinks: false, hardlinks: false };
    assert_same(&joliet, &sz, none, &|_| false);
    assert!(joliet.resolve("sub dir/héllo wörld.txt".as_bytes(), false).is_ok());

    // Plain ISO 9660 names, as isoinfo lists them (without the ;1 version).
    let plain = read(&iso, Some("iso9660"));
    let mut ours: Vec<String> =
        plain.walk(NodeId::ROOT).skip(1).map(|(p, _)| format!("/{}", String::from_utf8(p).unwrap())).collect();
    let mut theirs: Vec<String> = run("isoinfo", &["-f", "-i", iso_s])
        .lines()
        .map(|l| {
            let l = l.split(';').next().unwrap();
            l.strip_suffix('.').unwrap_or(l).to_string()
        })
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}

#[test]
fn genisoimage_relocated_deep_directories_match_bsdtar() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("g.iso"));
    std::fs::create_dir(&src).unwrap();
    make_source(&src);
    let iso_s = iso.to_str().unwrap();
    // genisoimage moves directories deeper than 8 levels to rr_moved (CL/PL/RE).
    run("genisoimage", &["-quiet", "-R", "-J", "-o", iso_s, src.to_str().unwrap()]);
    let dump = run("isoinfo", &["-l", "-i", iso_s]);
    assert!(dump.contains("RR_MOVED"), "genisoimage relocated nothing");
    let rr = read(&iso, None);
    assert!(rr.lookup(NodeId::ROOT, b"rr_moved").is_none(), "relocation directory is hidden");
    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    run("bsdtar", &["-xf", iso_s, "-C", bsd.to_str().unwrap()]);
    assert_same(&rr, &bsd, ALL, &|_| false);
    let deep = rr.resolve(b"d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/deep.txt", false).unwrap();
    assert_eq!(file_bytes(&rr, deep), b"deep\n");
}

#[test]
fn zisofs_files_decompress_like_bsdtar() {
    let t = tempfile::tempdir().unwrap();
    let (src, z, iso) = (t.path().join("src"), t.path().join("z"), t.path().join("z.iso"));
    std::fs::create_dir(&src).unwrap();
    sh(&format!(
        "cd '{}'; seq 1 200000 > numbers.txt; head -c 100000 /dev/urandom > random.bin; \
         head -c 70000 /dev/zero > zeros.bin; echo small > small.txt
         (head -c 40000 /dev/urandom; head -c 100000 /dev/zero; head -c 40000 /dev/urandom) > mixed.bin",
        src.display()
    ));
    run("mkzftree", &[src.to_str().unwrap(), z.to_str().unwrap()]);
    run("genisoimage", &["-quiet", "-R", "-z", "-o", iso.to_str().unwrap(), z.to_str().unwrap()]);
    let tree = read(&iso, None);
    let id = tree.resolve(b"numbers.txt", false).unwrap();
    assert!(matches!(tree.node(id).as_file().unwrap().content, Content::Reader(_)), "zisofs file not decompressed");
    for name in ["numbers.txt", "random.bin", "zeros.bin", "small.txt", "mixed.bin"] {
        let id = tree.resolve(name.as_bytes(), false).unwrap();
        let bytes = file_bytes(&tree, id);
        assert_eq!(bytes, std::fs::read(src.join(name)).unwrap(), "{name}");
        // Empty zisofs blocks are holes: all that lies outside the data ranges is zeros.
        let ranges = tree.node(id).as_file().unwrap().data_ranges().unwrap();
        let mut pos = 0;
        for &(off, len) in ranges.iter().chain([(bytes.len() as u64, 0)].iter()) {
            assert!(bytes[pos..off as usize].iter().all(|&b| b == 0), "{name}: data outside {ranges:?}");
            pos = (off + len) as usize;
        }
        if name == "mixed.bin" {
            assert!(ranges.iter().map(|r| r.1).sum::<u64>() < 180_000, "{name}: no hole in {ranges:?}");
        }
        // Reads that start inside a block and cross into the next.
        let f = tree.node(id).as_file().unwrap();
        if f.size > 40000 {
            let mut part = vec![0u8; 10000];
            f.read_at(&mut part, 30000).unwrap();
            assert_eq!(part, std::fs::read(src.join(name)).unwrap()[30000..40000]);
        }
    }
    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    run("bsdtar", &["-xf", iso.to_str().unwrap(), "-C", bsd.to_str().unwrap()]);
    assert_same(&tree, &bsd, Check { modes: true, mtimes: true, symlinks: true, hardlinks: false }, &|_| false);
}

#[test]
fn iso_inside_a_qcow2_reads_the_same() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso, q) = (t.path().join("src"), t.path().join("x.iso"), t.path().join("x.qcow2"));
    std::fs::create_dir(&src).unwrap();
    make_source(&src);
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-J", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    run("qemu-img", &["convert", "-O", "qcow2", iso.to_str().unwrap(), q.to_str().unwrap()]);
    let disk = diskcast_testkit::open_with(&diskcast_formats::registry(), &q, None).unwrap();
    let tree = Iso9660Reader.read(disk.into(), &ReadOptions::default()).unwrap();
    let plain = read(&iso, None);
    let a: Vec<_> = tree.walk(NodeId::ROOT).map(|(p, _)| p).collect();
    let b: Vec<_> = plain.walk(NodeId::ROOT).map(|(p, _)| p).collect();
    assert_eq!(a, b);
    let id = tree.resolve(b"random.bin", false).unwrap();
    assert_eq!(file_bytes(&tree, id), std::fs::read(src.join("random.bin")).unwrap());
    assert!(matches!(tree.node(tree.resolve(b"rel-link", false).unwrap()).kind, Kind::Symlink(_)));
}

#[test]
fn multi_extent_file_over_4_gib() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("big.iso"));
    std::fs::create_dir(&src).unwrap();
    // A sparse 4.3 GiB file with data at both ends; the ISO is piped through a sparse
    // copy so the test writes almost nothing.
    sh(&format!(
        "cd '{s}'; echo head > big.bin; truncate -s 4200M big.bin; echo tail >> big.bin; echo x > small
         xorriso -as mkisofs -quiet -iso-level 3 -R -J -o - '{s}' | cp --sparse=always /dev/stdin '{i}'",
        s = src.display(),
        i = iso.display()
    ));
    let listing = run("bsdtar", &["-tvf", iso.to_str().unwrap()]);
    let size = std::fs::metadata(src.join("big.bin")).unwrap().len();
    assert!(listing.lines().any(|l| l.contains(&size.to_string()) && l.ends_with("big.bin")), "{listing}");
    for tree_name in ["rockridge", "joliet"] {
        let tree = read(&iso, Some(tree_name));
        let id = tree.resolve(b"big.bin", false).unwrap();
        let f = tree.node(id).as_file().unwrap();
        assert_eq!(f.size, size);
        let Content::Blocks { extents, .. } = &f.content else { panic!("not extents") };
        assert!(extents.len() >= 2, "one extent cannot hold 4.3 GiB");
        let mut head = [0u8; 5];
        f.read_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"head\n");
        // The last MiB, against xorriso's own extraction of the same range.
        let cut = t.path().join("cut");
        let off = size - (1 << 20);
        run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                iso.to_str().unwrap(),
                "-extract_cut",
                "/big.bin",
                &off.to_string(),
                "1048576",
                cut.to_str().unwrap(),
            ],
        );
        let mut ours = vec![0u8; 1 << 20];
        f.read_at(&mut ours, off).unwrap();
        assert_eq!(ours, std::fs::read(&cut).unwrap());
        assert!(ours.ends_with(b"tail\n"));
        std::fs::remove_file(&cut).unwrap();
    }
}

/// Symlink targets with empty components (`.///file`, `a//b`): mkisofs records each empty
/// component as a ROOT component in the middle of the SL entry. Linux, bsdtar, xorriso
/// and isoinfo write a `/` there; only a leading ROOT makes the target absolute. Long
/// targets span several SL entries and a continuation area.
#[test]
fn symlinks_with_root_components_in_the_middle_match_bsdtar_xorriso_and_isoinfo() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // genisoimage loops on a 250-byte component followed by 600 more bytes, and cuts this
    // one inside a component (the tools then disagree on the broken tail): it is compared
    // on xorriso's disc only.
    let long = format!("{}/{}/end", "c".repeat(200), "part/".repeat(60));
    sh(&format!(
        "cd '{}'; echo hi > file
         ln -s './//file' dot-slashes; ln -s 'a//b' middle; ln -s '/x//y/' abs-middle
         ln -s '..//file' parent-slashes; ln -s '//lead' two-leading; ln -s '{long}' long",
        src.display()
    ));
    for (tool, args) in [("genisoimage", &["-quiet", "-R"][..]), ("xorriso", &["-as", "mkisofs", "-quiet", "-R"])] {
        let iso = t.path().join(format!("{tool}.iso"));
        let iso_s = iso.to_str().unwrap();
        run(tool, &[args, &["-o", iso_s, src.to_str().unwrap()]].concat());
        let tree = read(&iso, None);
        let target = |name: &str| match &tree.node(tree.resolve(name.as_bytes(), false).unwrap()).kind {
            Kind::Symlink(t) => String::from_utf8(t.clone()).unwrap(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(target("dot-slashes"), ".///file", "{tool}");
        assert_eq!(target("middle"), "a//b", "{tool}");
        let skip = |p: &str| tool == "genisoimage" && p == "long";
        if !skip("long") {
            assert_eq!(target("long"), long);
        }

        let bsd = t.path().join(format!("{tool}-bsdtar"));
        std::fs::create_dir(&bsd).unwrap();
        run("bsdtar", &["-xf", iso_s, "-C", bsd.to_str().unwrap()]);
        // libarchive starts each SL entry without a separator: `part/part` split over two
        // entries comes out as `partpart`, so bsdtar is not the judge of the long link.
        assert_same(&tree, &bsd, ALL, &|p| p == "long");
        let osirrox = t.path().join(format!("{tool}-osirrox"));
        run("xorriso", &["-osirrox", "on", "-indev", iso_s, "-extract", "/", osirrox.to_str().unwrap()]);
        assert_same(&tree, &osirrox, ALL, &skip);
        // isoinfo prints `NAME -> TARGET` for each link.
        let listing = run("isoinfo", &["-R", "-l", "-i", iso_s]);
        for (path, id) in tree.walk(NodeId::ROOT) {
            let path = String::from_utf8(path).unwrap();
            if let Kind::Symlink(t) = &tree.node(id).kind
                && !skip(&path)
            {
                let line = format!(" {path} -> {}", String::from_utf8_lossy(t));
                assert!(listing.lines().any(|l| l.ends_with(&line)), "{tool}: isoinfo has no {line:?}:\n{listing}");
            }
        }
    }
}

/// NetBSD makefs writes 68 into the length byte of the primary volume descriptor's root
/// record (ECMA-119 says 34; the bytes after are the volume set identifier). isoinfo,
/// xorriso and 7-Zip read such a disc (bsdtar lists nothing); so do we.
#[test]
fn makefs_68_byte_root_record_in_the_volume_descriptor_reads_like_isoinfo_and_xorriso() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("makefs.iso"));
    std::fs::create_dir(&src).unwrap();
    make_source(&src);
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-o", iso.to_str().unwrap(), src.to_str().unwrap()]);
    let mut img = std::fs::read(&iso).unwrap();
    let root_len = 16 * 2048 + 156;
    assert_eq!(img[root_len], 34);
    img[root_len] = 68;
    std::fs::write(&iso, &img).unwrap();
    let iso_s = iso.to_str().unwrap();
    let info = run("isoinfo", &["-d", "-i", iso_s]);
    assert!(info.contains("Rock Ridge signatures version 1 found"), "{info}");

    let tree = read(&iso, None);
    let osirrox = t.path().join("osirrox");
    run("xorriso", &["-osirrox", "on", "-indev", iso_s, "-extract", "/", osirrox.to_str().unwrap()]);
    assert_same(&tree, &osirrox, ALL, &|_| false);
    let plain = read(&iso, Some("iso9660"));
    let mut ours: Vec<String> =
        plain.walk(NodeId::ROOT).skip(1).map(|(p, _)| format!("/{}", String::from_utf8(p).unwrap())).collect();
    let mut theirs: Vec<String> = run("isoinfo", &["-f", "-i", iso_s])
        .lines()
        .map(|l| {
            let l = l.split(';').next().unwrap();
            l.strip_suffix('.').unwrap_or(l).to_string()
        })
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
}
