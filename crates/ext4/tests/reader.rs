//! The ext4 reader on filesystems made by mke2fs (from a directory and from a tarball),
//! wrapped into qcow2 and VMDK by qemu-img, and on damaged ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::{BlockRead, ErrorKind};
use diskcast_ext4::Ext4Reader;
use diskcast_testkit::pattern;
use diskcast_tree::{FsReader, Kind, NodeId, ReadOptions, Tree};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn open(path: &Path, fmt: &str) -> Arc<dyn BlockRead> {
    Arc::from(diskcast_testkit::open_with(&diskcast_formats::registry(), path, Some(fmt)).unwrap())
}

fn read_tree(path: &Path, fmt: &str) -> Tree {
    let disk = open(path, fmt);
    assert!(Ext4Reader.probe(disk.as_ref()).unwrap());
    Ext4Reader.read(disk, &ReadOptions::default()).unwrap()
}

/// A source directory with files, holes, links, a fifo, xattrs and odd names.
fn source_dir(root: &Path) {
    let w = |p: &str, b: &[u8]| std::fs::write(root.join(p), b).unwrap();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    w("a/b/c/deep", b"deep");
    w("small", b"hello\n");
    w("big", &pattern(1_500_000, 7));
    w("héllo ☃", b"snow");
    w(&"n".repeat(255), b"long");
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (64 << 20) - 3).unwrap();
    std::os::unix::fs::symlink("small", root.join("fast")).unwrap();
    std::os::unix::fs::symlink("x/".repeat(100), root.join("slow")).unwrap();
    std::fs::hard_link(root.join("small"), root.join("a/hard")).unwrap();
    std::fs::set_permissions(root.join("small"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    assert_eq!(tool("mkfifo", &[root.join("fifo").to_str().unwrap()]).0, 0);
    assert_eq!(tool("setfattr", &["-n", "user.comment", "-v", "hi there", root.join("big").to_str().unwrap()]).0, 0);
    std::fs::create_dir(root.join("many")).unwrap();
    for i in 0..3000 {
        w(&format!("many/f{i:05}"), b"");
    }
}

/// The tree matches the host directory: names, types, permissions, owners, mtimes,
/// contents, link targets, hard links and user xattrs.
fn assert_matches_dir(tree: &Tree, root: &Path) {
    let mut by_host_ino: HashMap<u64, NodeId> = HashMap::new();
    let mut count = 0;
    for entry in walk(root) {
        let rel = entry.strip_prefix(root).unwrap();
        let md = std::fs::symlink_metadata(&entry).unwrap();
        let id = tree.resolve(rel.as_os_str().as_encoded_bytes(), false).unwrap_or_else(|e| panic!("{e}"));
        let node = tree.node(id);
        count += 1;
        let what = rel.display();
        assert_eq!(node.meta.mode, md.mode() & 0o7777, "{what} mode");
        assert_eq!((node.meta.uid, node.meta.gid), (md.uid(), md.gid()), "{what} owner");
        if !md.is_dir() {
            assert_eq!(node.meta.mtime.sec, md.mtime(), "{what} mtime");
        }
        match &node.kind {
            Kind::File(f) => {
                let want = std::fs::read(&entry).unwrap();
                let mut got = vec![0u8; f.size as usize];
                f.read_at(&mut got, 0).unwrap();
                assert!(got == want, "{what} content");
                if md.nlink() > 1 {
                    let prev = *by_host_ino.entry(md.ino()).or_insert(id);
                    assert_eq!(prev, id, "{what} is a hard link");
                }
                let xs = tool("getfattr", &["-d", "--absolute-names", entry.to_str().unwrap()]).1;
                for x in &node.xattrs {
                    let name = String::from_utf8_lossy(&x.name);
                    assert!(xs.contains(&format!("{name}=\"{}\"", String::from_utf8_lossy(&x.value))), "{what} {name}");
                }
                assert_eq!(xs.matches("user.").count(), node.xattrs.len(), "{what} xattrs: {xs}");
            }
            Kind::Symlink(t) => {
                assert_eq!(std::fs::read_link(&entry).unwrap().as_os_str().as_encoded_bytes(), t.as_slice(), "{what}");
            }
            Kind::Dir(_) => assert!(md.is_dir(), "{what}"),
            Kind::Fifo => assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()), "{what}"),
            other => panic!("{what}: unexpected {}", other.name()),
        }
    }
    // Everything but lost+found came from the directory.
    assert_eq!(tree.walk(NodeId::ROOT).count(), count + 2, "node count");
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn mkfs_d(src: &Path, img: &Path, extra: &[&str]) {
    let mut args = vec!["-q", "-F", "-t", "ext4", "-d", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[img.to_str().unwrap(), "128M"]);
    let (code, text) = tool("mke2fs", &args);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn mkfs_d_images_read_back_through_raw_qcow2_and_vmdk() {
    let d = tempdir();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    source_dir(&src);
    let img = d.path().join("fs.raw");
    mkfs_d(&src, &img, &[]);
    assert_matches_dir(&read_tree(&img, "raw"), &src);
    for fmt in ["qcow2", "vmdk"] {
        let wrapped = d.path().join(format!("fs.{fmt}"));
        diskcast_testkit::qemu_img(&["convert", "-O", fmt, img.to_str().unwrap(), wrapped.to_str().unwrap()]);
        assert_matches_dir(&read_tree(&wrapped, fmt), &src);
    }
    // The sparse file stays a reference with its hole: only a little of it is mapped.
    let t = read_tree(&img, "raw");
    let f = t.node(t.resolve(b"sparse", false).unwrap()).as_file().unwrap().clone();
    assert!(f.data_ranges().unwrap().iter().map(|r| r.1).sum::<u64>() <= 8192);
}

#[test]
fn ext2_and_ext3_block_maps_read_too() {
    let d = tempdir();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    source_dir(&src);
    for t in ["ext2", "ext3"] {
        let img = d.path().join(format!("{t}.img"));
        let (code, text) =
            tool("mke2fs", &["-q", "-F", "-t", t, "-d", src.to_str().unwrap(), img.to_str().unwrap(), "128M"]);
        assert_eq!(code, 0, "{text}");
        assert_matches_dir(&read_tree(&img, "raw"), &src);
    }
}

#[test]
fn a_tarball_with_devices_reads_back() {
    // A tar with devices and owners, made without root by Python's tarfile.
    let d = tempdir();
    let tar = d.path().join("t.tar");
    let script = format!(
        r#"
import tarfile, io
with tarfile.open({tar:?}, "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, type, **kw):
        i = tarfile.TarInfo(name); i.type = type; i.mode = kw.pop("mode", 0o644); i.uid = 1234; i.gid = 5678; i.mtime = 1500000000
        for k, v in kw.items(): setattr(i, k, v)
        data = kw.get("data")
        t.addfile(i)
    add("dev", tarfile.DIRTYPE, mode=0o755)
    add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    add("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660)
    add("dev/big", tarfile.BLKTYPE, devmajor=259, devminor=300, mode=0o600)
    add("fifo", tarfile.FIFOTYPE)
    i = tarfile.TarInfo("f"); i.size = 5; i.uid = 1234; i.gid = 5678; i.mtime = 1500000000
    t.addfile(i, io.BytesIO(b"hello"))
"#
    );
    let (code, text) = tool("/usr/bin/python3", &["-c", &script]);
    assert_eq!(code, 0, "{text}");
    let img = d.path().join("fs.img");
    mkfs_d(&tar, &img, &[]);
    let t = read_tree(&img, "raw");
    let kind = |p: &[u8]| t.node(t.resolve(p, false).unwrap()).kind.clone();
    assert!(matches!(kind(b"dev/null"), Kind::CharDev { major: 1, minor: 3 }));
    assert!(matches!(kind(b"dev/sda"), Kind::BlockDev { major: 8, minor: 0 }));
    assert!(matches!(kind(b"dev/big"), Kind::BlockDev { major: 259, minor: 300 }));
    assert!(matches!(kind(b"fifo"), Kind::Fifo));
    let f = t.node(t.resolve(b"f", false).unwrap());
    assert_eq!((f.meta.uid, f.meta.gid, f.meta.mtime.sec), (1234, 5678, 1_500_000_000));
}

#[test]
fn our_writer_round_trips_through_our_reader() {
    // Devices, ACLs, capabilities, big owners and times: everything the writer stores
    // comes back (the writer's own tests judge it with e2fsprogs first).
    let mut t = Tree::new(meta(0o755));
    let f = file(&mut t, NodeId::ROOT, b"f", pattern(50_000, 9));
    t.node_mut(f).xattrs = vec![
        xattr("security.capability", &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        xattr("user.big", &[3; 400]),
    ];
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 7u16, u32::MAX), (2, 5, 1001), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 1, u32::MAX)]
    {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let dd = dir(&mut t, NodeId::ROOT, b"d");
    t.node_mut(dd).xattrs = vec![xattr("system.posix_acl_access", &acl)];
    t.insert(dd, b"tty", diskcast_tree::Node::new(meta(0o620), Kind::CharDev { major: 4, minor: 1 })).unwrap();
    t.insert(dd, b"sock", diskcast_tree::Node::new(meta(0o755), Kind::Socket)).unwrap();
    t.link(dd, b"f2", f).unwrap();
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    write(&t, &opts(), &img, "raw");
    let back = read_tree(&img, "raw");
    for (path, id) in t.walk(NodeId::ROOT) {
        let b = back.node(back.resolve(&path, false).unwrap());
        let a = t.node(id);
        assert_eq!(a.meta.mode, b.meta.mode);
        assert_eq!(a.meta.mtime, b.meta.mtime);
        let sorted = |x: &[diskcast_tree::Xattr]| {
            let mut v = x.to_vec();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        assert_eq!(sorted(&a.xattrs), sorted(&b.xattrs), "{}", String::from_utf8_lossy(&path));
        assert_eq!(a.kind.name(), b.kind.name());
    }
    assert_eq!(back.resolve(b"f", false).unwrap(), back.resolve(b"d/f2", false).unwrap());
}

// ---- hostile inputs: each a small mkfs.ext4 image patched in one place ----

/// A small filesystem with `/f` (one extent) and `/a/b/x`.
fn small_image(d: &tempfile::TempDir) -> std::path::PathBuf {
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("f"), pattern(20_000, 1)).unwrap();
    std::fs::write(src.join("a/b/x"), b"x").unwrap();
    let img = d.path().join("fs.img");
    let (code, text) = tool(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", "-b", "4096", "-d", src.to_str().unwrap(), img.to_str().unwrap(), "16M"],
    );
    assert_eq!(code, 0, "{text}");
    img
}

/// Byte offset of an inode's record (from `debugfs imap`).
fn inode_offset(img: &Path, path: &str) -> u64 {
    let out = debugfs(img, &format!("imap {path}"));
    let blk: u64 = out.split("located at block ").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
    // debugfs prints "offset 0x0300".
    let off =
        u64::from_str_radix(out.split("offset 0x").nth(1).unwrap().split_whitespace().next().unwrap(), 16).unwrap();
    blk * 4096 + off
}

fn inode_number(img: &Path, path: &str) -> u32 {
    let out = debugfs(img, &format!("stat {path}"));
    out.split("Inode: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn read_err(img: std::path::PathBuf) -> diskcast_block::Error {
    diskcast_testkit::within(20, "reading a damaged ext4", move || {
        let disk = open(&img, "raw");
        Ext4Reader.read(disk, &ReadOptions { label: "fs.img".into(), ..ReadOptions::default() }).unwrap_err()
    })
}

fn assert_err(e: &diskcast_block::Error, kind: ErrorKind, needle: &str) {
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(needle), "{e} should mention {needle:?}");
    assert!(e.to_string().contains("fs.img"), "{e} should name the image");
}

#[test]
fn hostile_extent_tree_too_deep() {
    let d = tempdir();
    let img = small_image(&d);
    let at = inode_offset(&img, "/f");
    diskcast_testkit::patch(&img, at + 0x28 + 6, &100u16.to_le_bytes());
    assert_err(&read_err(img), ErrorKind::Corrupt, "depth 100");
}

#[test]
fn hostile_extent_tree_loop() {
    // The root points at a block whose index entry points at itself.
    let d = tempdir();
    let img = small_image(&d);
    let at = inode_offset(&img, "/f");
    let loop_blk: u32 = 4095; // the last block of a 16 MiB filesystem: free
    let mut node = vec![0u8; 24];
    node[0..2].copy_from_slice(&0xF30Au16.to_le_bytes());
    node[2..4].copy_from_slice(&1u16.to_le_bytes());
    node[4..6].copy_from_slice(&340u16.to_le_bytes());
    node[6..8].copy_from_slice(&1u16.to_le_bytes());
    node[16..20].copy_from_slice(&loop_blk.to_le_bytes());
    diskcast_testkit::patch(&img, u64::from(loop_blk) * 4096, &node);
    let mut root = node.clone();
    root[4..6].copy_from_slice(&4u16.to_le_bytes());
    root[6..8].copy_from_slice(&2u16.to_le_bytes());
    diskcast_testkit::patch(&img, at + 0x28, &root);
    assert_err(&read_err(img), ErrorKind::Corrupt, "extent tree");
}

#[test]
fn hostile_extent_past_the_filesystem() {
    let d = tempdir();
    let img = small_image(&d);
    let at = inode_offset(&img, "/f");
    diskcast_testkit::patch(&img, at + 0x28 + 12 + 8, &0xFFFF_FF00u32.to_le_bytes());
    assert_err(&read_err(img), ErrorKind::Corrupt, "outside the filesystem");
}

#[test]
fn hostile_directory_loop() {
    // /a/b/x's entry is turned into a second name of /a.
    let d = tempdir();
    let img = small_image(&d);
    let a = inode_number(&img, "/a");
    let x = inode_number(&img, "/a/b/x");
    let blocks = debugfs(&img, "blocks /a/b");
    let blk: u64 = blocks.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    let data = diskcast_testkit::read_bytes(&img, blk * 4096, 4096);
    let pos = (0..4090).find(|&i| data[i..i + 4] == x.to_le_bytes() && data[i + 8] == b'x').unwrap();
    diskcast_testkit::patch(&img, blk * 4096 + pos as u64, &a.to_le_bytes());
    diskcast_testkit::patch(&img, blk * 4096 + pos as u64 + 7, &[2]);
    assert_err(&read_err(img), ErrorKind::Corrupt, "directory loop");
}

#[test]
fn hostile_inode_counts_beyond_the_groups() {
    let d = tempdir();
    let img = small_image(&d);
    let ipg = diskcast_testkit::le32(&diskcast_testkit::read_bytes(&img, 1024 + 0x28, 4), 0);
    diskcast_testkit::patch(&img, 1024, &(ipg + 1000).to_le_bytes());
    assert_err(&read_err(img), ErrorKind::Corrupt, "s_inodes_count");
    // An entry naming an inode past the count.
    let d2 = tempdir();
    let img = small_image(&d2);
    let x = inode_number(&img, "/a/b/x");
    let blocks = debugfs(&img, "blocks /a/b");
    let blk: u64 = blocks.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    let data = diskcast_testkit::read_bytes(&img, blk * 4096, 4096);
    let pos = (0..4090).find(|&i| data[i..i + 4] == x.to_le_bytes() && data[i + 8] == b'x').unwrap();
    diskcast_testkit::patch(&img, blk * 4096 + pos as u64, &0x7fff_0000u32.to_le_bytes());
    assert_err(&read_err(img), ErrorKind::Corrupt, "inode 2147418112");
}

#[test]
fn hostile_superblock_fields() {
    for (at, value, kind, needle) in [
        (0x18usize, 30u32, ErrorKind::Corrupt, "s_log_block_size"),
        (0x28, 0, ErrorKind::Corrupt, "s_inodes_per_group"),
        (0x20, 1 << 30, ErrorKind::Corrupt, "s_blocks_per_group"),
        // A cluster size that no bigalloc explains (e2fsprogs: a corrupt superblock).
        (0x1C, 3, ErrorKind::Corrupt, "s_log_cluster_size"),
        (0x04, u32::MAX, ErrorKind::OutOfBounds, "s_blocks_count"),
        (0x60, 0x8000 | 0x2c2, ErrorKind::Unsupported, "inline_data"),
    ] {
        let d = tempdir();
        let img = small_image(&d);
        diskcast_testkit::patch(&img, 1024 + at as u64, &value.to_le_bytes());
        let e = read_err(img);
        assert_err(&e, kind, needle);
        assert!(format!("{e:?}").contains(needle) || e.to_string().contains(needle));
    }
}

/// An extent tree node: header (magic, entries, max, depth), then the 12-byte records.
fn extent_node(depth: u16, max: u16, records: &[[u8; 12]]) -> Vec<u8> {
    let mut n = Vec::new();
    for v in [0xF30Au16, u16::try_from(records.len()).unwrap(), max, depth] {
        n.extend_from_slice(&v.to_le_bytes());
    }
    n.extend_from_slice(&[0; 4]);
    for r in records {
        n.extend_from_slice(r);
    }
    n
}

/// An index record: first logical block, child block.
fn index_record(logical: u32, child: u32) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[0..4].copy_from_slice(&logical.to_le_bytes());
    r[4..8].copy_from_slice(&child.to_le_bytes());
    r
}

/// A leaf record: first logical block, length, first physical block.
fn leaf_record(logical: u32, len: u16, phys: u32) -> [u8; 12] {
    let mut r = [0u8; 12];
    r[0..4].copy_from_slice(&logical.to_le_bytes());
    r[4..6].copy_from_slice(&len.to_le_bytes());
    r[8..12].copy_from_slice(&phys.to_le_bytes());
    r
}

/// `n` free blocks from debugfs, at or after `start`.
fn free_blocks(img: &Path, n: usize, start: u64) -> Vec<u32> {
    let out = debugfs(img, &format!("ffb {n} {start}"));
    let v: Vec<u32> =
        out.split("Free blocks found: ").nth(1).unwrap().split_whitespace().map_while(|w| w.parse().ok()).collect();
    assert_eq!(v.len(), n, "{out}");
    v
}

#[test]
fn hostile_extent_index_blocks_sharing_one_child() {
    // A depth-5 tree whose index entries at each level all point at the same block of the
    // level below: 4 * 340^4 leaf visits when blocks are not tracked (it never finished).
    let d = tempdir();
    let img = small_image(&d);
    let at = inode_offset(&img, "/f");
    let blk = free_blocks(&img, 5, 3000);
    for (level, pair) in blk.windows(2).enumerate() {
        let depth = u16::try_from(4 - level).unwrap();
        let records: Vec<[u8; 12]> = (0..340).map(|i| index_record(i, pair[1])).collect();
        diskcast_testkit::patch(&img, u64::from(pair[0]) * 4096, &extent_node(depth, 340, &records));
    }
    // The leaf maps blocks past the file's end, so no extent is ever kept.
    let leaf: Vec<[u8; 12]> = (0..340).map(|i| leaf_record(1_000_000 + i, 1, blk[4])).collect();
    diskcast_testkit::patch(&img, u64::from(blk[4]) * 4096, &extent_node(0, 340, &leaf));
    let root: Vec<[u8; 12]> = (0..4).map(|i| index_record(i, blk[0])).collect();
    diskcast_testkit::patch(&img, at + 0x28, &extent_node(5, 4, &root));
    let e = read_err(img);
    // Depth first: the leaf is the first block reached a second time.
    assert_err(&e, ErrorKind::Corrupt, &format!("extent tree block {} is reached twice", blk[4]));
}

#[test]
fn hostile_extents_more_than_the_file_has_blocks() {
    // One leaf of 340 one-block extents, all at logical block 0 of a 5-block file.
    let d = tempdir();
    let img = small_image(&d);
    let at = inode_offset(&img, "/f");
    let blk = free_blocks(&img, 1, 3000)[0];
    let leaf: Vec<[u8; 12]> = (0..340).map(|_| leaf_record(0, 1, blk)).collect();
    diskcast_testkit::patch(&img, u64::from(blk) * 4096, &extent_node(0, 340, &leaf));
    diskcast_testkit::patch(&img, at + 0x28, &extent_node(1, 4, &[index_record(0, blk)]));
    assert_err(&read_err(img), ErrorKind::Corrupt, "more extents than its 5 blocks");
}

#[test]
fn bigalloc_is_an_unsupported_feature() {
    let d = tempdir();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let img = d.path().join("fs.img");
    let (code, text) = tool(
        "mke2fs",
        &["-q", "-F", "-t", "ext4", "-O", "bigalloc", "-d", src.to_str().unwrap(), img.to_str().unwrap(), "64M"],
    );
    assert_eq!(code, 0, "{text}");
    assert_err(&read_err(img), ErrorKind::Unsupported, "ext4 feature bigalloc (ro_compat 0x200) is not supported");
}
