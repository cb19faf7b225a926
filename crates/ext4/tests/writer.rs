//! The ext4 writer, judged by e2fsprogs: e2fsck -fn, debugfs, dumpe2fs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::BlockRead;
use diskcast_testkit::{VecDisk, pattern};
use diskcast_tree::{FileData, FileExtent, Kind, Meta, Node, NodeId, Timestamp, Tree};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[test]
fn a_small_tree_passes_e2fsck() {
    let mut t = Tree::new(meta(0o755));
    let etc = dir(&mut t, NodeId::ROOT, b"etc");
    file(&mut t, etc, b"hostname", b"box\n".to_vec());
    file(&mut t, NodeId::ROOT, b"big", pattern(300_000, 1));
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    write(&t, &opts(), &img, "raw");
    assert_fsck_clean(&img);
    let cat = debugfs(&img, "cat /etc/hostname");
    assert!(cat.contains("box"), "{cat}");
    let features = tool("dumpe2fs", &["-h", img.to_str().unwrap()]).1;
    for f in [
        "has_journal",
        "orphan_file",
        "ext_attr",
        "dir_index",
        "filetype",
        "extent",
        "64bit",
        "flex_bg",
        "metadata_csum_seed",
        "sparse_super",
        "large_file",
        "huge_file",
        "dir_nlink",
        "extra_isize",
        "metadata_csum",
    ] {
        assert!(features.split_whitespace().any(|w| w == f), "feature {f} missing:\n{features}");
    }
}

/// An ACL in Linux's xattr form: user::rw-, user:1000:r--, group::r--, mask::r--, other::---.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with every entry type and the awkward cases the issue names.
fn everything() -> Tree {
    let mut t = Tree::new(meta(0o755));
    let r = NodeId::ROOT;
    let f = file(&mut t, r, b"file", pattern(70_000, 2));
    let sub = dir(&mut t, r, b"sub");
    t.link(sub, b"hardlink", f).unwrap();
    t.link(r, b"hardlink2", f).unwrap();
    file(&mut t, r, b"empty", Vec::new());
    let node = |kind: Kind| Node::new(meta(0o640), kind);
    t.insert(r, b"fast", node(Kind::Symlink(b"sub/hardlink".to_vec()))).unwrap();
    let slow: Vec<u8> = (0..300).map(|i| b"abcdefghij/"[i % 11]).collect();
    t.insert(r, b"slow", node(Kind::Symlink(slow))).unwrap();
    t.insert(r, b"null", node(Kind::CharDev { major: 1, minor: 3 })).unwrap();
    t.insert(r, b"nvme", node(Kind::BlockDev { major: 259, minor: 70_000 })).unwrap();
    t.insert(r, b"fifo", node(Kind::Fifo)).unwrap();
    t.insert(r, b"sock", node(Kind::Socket)).unwrap();
    // Names: non-ASCII, 255 bytes, and a deep path.
    file(&mut t, r, "héllo wörld ☃".as_bytes(), b"snow".to_vec());
    file(&mut t, r, &[b'n'; 255], b"long".to_vec());
    let mut deep = r;
    for i in 0..40 {
        deep = dir(&mut t, deep, format!("level{i}").as_bytes());
    }
    file(&mut t, deep, b"bottom", b"deep".to_vec());
    // Owners, permissions and times beyond 16 bits, 2038 and 1970.
    let odd = file(&mut t, r, b"odd", b"x".to_vec());
    t.node_mut(odd).meta = Meta {
        mode: 0o4755,
        uid: 70_000,
        gid: 80_000,
        mtime: Timestamp { sec: 5_000_000_000, nsec: 1 },
        atime: Some(Timestamp { sec: -1000, nsec: 5 }),
        ctime: Some(Timestamp { sec: 1_000_000_000, nsec: 0 }),
    };
    // Extended attributes: small (in the inode), large (a block, shared by two files),
    // a capability and ACLs.
    let small = file(&mut t, r, b"xsmall", b"s".to_vec());
    t.node_mut(small).xattrs = vec![
        xattr("user.k", b"v"),
        xattr("security.capability", &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for name in [&b"xbig1"[..], b"xbig2"] {
        let n = file(&mut t, r, name, b"b".to_vec());
        t.node_mut(n).xattrs =
            vec![xattr("user.big", &[b'v'; 600]), xattr("trusted.t", b"1"), xattr("user.another", &[7; 100])];
    }
    let acl_dir = dir(&mut t, r, b"acl");
    t.node_mut(acl_dir).xattrs =
        vec![xattr("system.posix_acl_access", &acl()), xattr("system.posix_acl_default", &acl())];
    // A directory of 20 000 entries (many blocks of a linear directory).
    let many = dir(&mut t, r, b"many");
    for i in 0..20_000 {
        file(&mut t, many, format!("entry-number-{i:06}").as_bytes(), Vec::new());
    }
    t
}

/// Parses `debugfs -f` output of `stat` commands into one text per path.
fn stats(img: &Path, paths: &[&str]) -> BTreeMap<String, String> {
    let d = tempdir();
    let cmds = d.path().join("cmds");
    std::fs::write(&cmds, paths.iter().map(|p| format!("stat \"{p}\"\n")).collect::<String>()).unwrap();
    let (code, text) = tool("debugfs", &["-f", cmds.to_str().unwrap(), img.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    let mut out = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("debugfs: stat ") {
            cur = Some(rest.trim_matches('"').to_string());
            out.insert(cur.clone().unwrap(), String::new());
        } else if let Some(c) = &cur {
            let s = out.get_mut(c).unwrap();
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}

#[test]
fn every_entry_type_reads_back_through_debugfs() {
    let t = everything();
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    let built = write(&t, &opts(), &img, "raw");
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
    assert_fsck_clean(&img);

    // Contents, names and link targets: debugfs rdump of the whole tree.
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    debugfs(&img, &format!("rdump / {}", out.display()));
    for (path, id) in t.walk(NodeId::ROOT) {
        let p = out.join(std::str::from_utf8(&path).unwrap());
        match &t.node(id).kind {
            Kind::File(f) => {
                let mut want = vec![0u8; f.size as usize];
                f.read_at(&mut want, 0).unwrap();
                assert_eq!(std::fs::read(&p).unwrap(), want, "{}", p.display());
            }
            Kind::Symlink(target) => {
                assert_eq!(std::fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes(), target.as_slice());
            }
            Kind::Dir(dd) => {
                // rdump skips devices, fifos and sockets; the root gains lost+found.
                let dumpable = dd
                    .entries()
                    .filter(|(_, c)| matches!(t.node(*c).kind, Kind::File(_) | Kind::Dir(_) | Kind::Symlink(_)));
                let want = dumpable.count() + usize::from(id == NodeId::ROOT);
                assert_eq!(std::fs::read_dir(&p).unwrap().count(), want, "{}", p.display());
            }
            _ => {}
        }
    }

    // Types, modes, owners, links, times and device numbers: debugfs stat.
    let s = stats(&img, &["/file", "/null", "/nvme", "/fifo", "/sock", "/odd", "/slow", "/fast", "/many"]);
    let has = |p: &str, needle: &str| assert!(s[p].contains(needle), "{p}: no {needle:?} in\n{}", s[p]);
    has("/file", "Type: regular    Mode:  0644");
    has("/file", "User:  1000   Group:   100");
    has("/file", "Links: 3");
    has("/file", "mtime: 0x5f5e1000:1d6f3454");
    has("/null", "Type: character special    Mode:  0640");
    has("/null", "Device major/minor number: 01:03");
    has("/nvme", "Type: block special");
    has("/nvme", "Device major/minor number: 259:70000");
    has("/fifo", "Type: FIFO");
    has("/sock", "Type: socket");
    has("/odd", "Mode:  04755");
    has("/odd", "User: 70000   Group: 80000");
    has("/odd", "mtime: 0x2a05f200:00000005"); // 5e9 s: epoch bit 1, 1 ns
    has("/odd", "atime: 0xfffffc18:00000014");
    has("/slow", "Type: symlink");
    has("/slow", "EXTENTS:");
    has("/fast", "Fast link dest: \"sub/hardlink\"");
    has("/many", "Links: 2");

    // Extended attributes: debugfs ea_list shows ACLs in Linux's form again.
    let ea = debugfs(&img, "ea_list /xsmall");
    assert!(ea.contains("user.k (1) = \"v\""), "{ea}");
    assert!(ea.contains("security.capability (20)"), "{ea}");
    let ea = debugfs(&img, "ea_list /xbig2");
    assert!(ea.contains("user.big (600)") && ea.contains("trusted.t (1)") && ea.contains("user.another (100)"), "{ea}");
    let a = stats(&img, &["/xbig1", "/xbig2"]);
    let acl_block = |p: &str| a[p].lines().find(|l| l.starts_with("File ACL:")).unwrap().to_string();
    assert_eq!(acl_block("/xbig1"), acl_block("/xbig2"), "identical xattr blocks are shared");
    let ea = debugfs(&img, "ea_get -x /acl system.posix_acl_access");
    // e2fsprogs writes 0 where the kernel writes -1 as the id of entries that have none.
    let mut want = acl();
    for e in want[4..].chunks_mut(8) {
        if !matches!(e[0], 2 | 8) {
            e[4..].fill(0);
        }
    }
    let hex: String = want.iter().map(|b| format!("{b:02x} ")).collect();
    assert!(ea.replace('\n', " ").contains(hex.trim()), "{ea} vs {hex}");
    let ea = debugfs(&img, "ea_list /acl");
    assert!(ea.contains("system.posix_acl_default"), "{ea}");
}

#[test]
fn sparse_and_fragmented_files_keep_their_holes() {
    // 4 GiB with one block at the start and one at the end, and a file of 2000 separate
    // blocks (more extents than one tree block holds: an index level above the leaves).
    let src: Arc<dyn BlockRead> = Arc::new(VecDisk(pattern(2001 * 4096, 3)));
    let four_g = 4u64 << 30;
    let sparse = FileData::blocks(
        four_g,
        src.clone(),
        vec![
            FileExtent { file_offset: 0, source_offset: 0, len: 4096 },
            FileExtent { file_offset: four_g - 4096, source_offset: 4096, len: 4096 },
        ],
    )
    .unwrap();
    let frag_ext: Vec<FileExtent> =
        (0..2000u64).map(|i| FileExtent { file_offset: i * 8192, source_offset: i * 4096, len: 4096 }).collect();
    let frag = FileData::blocks(2000 * 8192, src.clone(), frag_ext).unwrap();
    let mut t = Tree::new(meta(0o755));
    t.insert(NodeId::ROOT, b"sparse", Node::new(meta(0o600), Kind::File(sparse.clone()))).unwrap();
    t.insert(NodeId::ROOT, b"frag", Node::new(meta(0o600), Kind::File(frag.clone()))).unwrap();
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    let start = std::time::Instant::now();
    write(&t, &opts(), &img, "raw");
    assert!(start.elapsed().as_secs() < 60, "a sparse file must not be read whole");
    assert_fsck_clean(&img);
    // The image itself stays small: the holes were never written.
    let allocated = std::fs::metadata(&img).map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512).unwrap();
    assert!(allocated < 64 << 20, "image allocates {allocated} bytes");
    let s = stats(&img, &["/sparse", "/frag"]);
    assert!(s["/sparse"].contains("Size: 4294967296"), "{}", s["/sparse"]);
    assert!(s["/sparse"].contains("Blockcount: 16\n"), "{}", s["/sparse"]);
    assert!(s["/frag"].contains("Level Entries") || s["/frag"].contains("(ETB"), "{}", s["/frag"]);
    // Contents: the fragmented file through debugfs dump.
    let out = d.path().join("frag.out");
    debugfs(&img, &format!("dump /frag {}", out.display()));
    let mut want = vec![0u8; frag.size as usize];
    frag.read_at(&mut want, 0).unwrap();
    assert!(std::fs::read(&out).unwrap() == want, "fragmented file differs");
}

#[test]
fn qcow2_output_converts_back_to_a_clean_filesystem() {
    let mut t = Tree::new(meta(0o755));
    file(&mut t, NodeId::ROOT, b"data", pattern(1 << 20, 4));
    let d = tempdir();
    let q = path_in(&d, "fs.qcow2");
    write(&t, &opts(), &q, "qcow2");
    diskcast_testkit::assert_qemu_check_clean(&q, "qcow2");
    let raw = path_in(&d, "fs.raw");
    diskcast_testkit::qemu_img(&["convert", "-O", "raw", q.to_str().unwrap(), raw.to_str().unwrap()]);
    assert_fsck_clean(&raw);
    let out = d.path().join("data.out");
    debugfs(&raw, &format!("dump /data {}", out.display()));
    assert!(std::fs::read(&out).unwrap() == pattern(1 << 20, 4));
}

#[test]
fn same_tree_and_time_give_the_same_bytes_and_sizes_are_honoured() {
    let t = {
        let mut t = Tree::new(meta(0o755));
        file(&mut t, NodeId::ROOT, b"a", pattern(10_000, 5));
        t
    };
    let d = tempdir();
    let (a, b) = (path_in(&d, "a.img"), path_in(&d, "b.img"));
    let o = diskcast_tree::BuildOptions { id: [0; 16], label: Some("rootfs".into()), ..opts() };
    write(&t, &o, &a, "raw");
    write(&t, &o, &b, "raw");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "two builds differ");
    let h = tool("dumpe2fs", &["-h", a.to_str().unwrap()]).1;
    assert!(h.contains("Filesystem volume name:   rootfs"), "{h}");
    // A given size, with the last partial group.
    let c = path_in(&d, "c.img");
    let sized = diskcast_tree::BuildOptions { size: Some((300 << 20) + 12288), ..opts() };
    write(&t, &sized, &c, "raw");
    assert_eq!(std::fs::metadata(&c).unwrap().len(), (300 << 20) + 12288);
    assert_fsck_clean(&c);
    // Too small is a clear error.
    let tiny = diskcast_tree::BuildOptions { size: Some(1 << 20), ..opts() };
    let e = diskcast_ext4::Ext4Builder.plan_checked(&t, &tiny);
    assert!(e.contains("at least"), "{e}");
}

#[test]
fn a_hundred_thousand_small_files() {
    let mut t = Tree::new(meta(0o755));
    for d in 0..100 {
        let dd = dir(&mut t, NodeId::ROOT, format!("d{d:03}").as_bytes());
        for f in 0..1000 {
            file(&mut t, dd, format!("file-{f:04}").as_bytes(), format!("{d}/{f}\n").into_bytes());
        }
    }
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    let start = std::time::Instant::now();
    let built = write(&t, &opts(), &img, "raw");
    let took = start.elapsed();
    assert_fsck_clean(&img);
    assert!(built.description.contains("100"), "{}", built.description);
    assert_eq!(debugfs(&img, "cat /d042/file-0777").lines().find(|l| l.contains('/')), Some("42/777"));
    assert!(took.as_secs() < 60, "planning and writing 100k files took {took:?}");
}
