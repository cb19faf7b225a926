//! ext4 end to end: `ls`/`cat`/`extract` read filesystems made by mke2fs out of any disk
//! format, and `mkfs ext4` writes filesystems e2fsck accepts, into any format.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn e2(tool: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required (install e2fsprogs): {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn source_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/deep/er")).unwrap();
    write_file(&root.join("etc/hostname"), b"ext4-box\n");
    write_file(&root.join("etc/deep/er/data"), &pseudo_random(300_000, 3));
    std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
}

#[test]
fn ls_cat_extract_read_an_mke2fs_image_inside_qcow2() {
    let d = tmp();
    let src = d.path().join("src");
    source_tree(&src);
    let raw = d.path().join("fs.raw");
    let (code, text) = e2("mke2fs", &["-q", "-F", "-t", "ext4", "-d", &s(&src), &s(&raw), "64M"]);
    assert_eq!(code, 0, "{text}");
    let q = d.path().join("fs.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&q)]);

    let ls = dc_ok(&["ls", &s(&q), "/etc"]).stdout_str();
    assert!(ls.contains("hostname") && ls.contains("deep"), "{ls}");
    let cat = dc_ok(&["cat", &s(&q), "/link"]);
    assert_eq!(cat.stdout, b"ext4-box\n");
    let out = d.path().join("out");
    dc_ok(&["extract", &s(&q), &s(&out)]);
    assert_eq!(read(&out.join("etc/deep/er/data")), pseudo_random(300_000, 3));
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("etc/hostname"));
}

#[test]
fn mkfs_ext4_writes_qcow2_that_e2fsck_accepts_reproducibly() {
    let d = tmp();
    let src = d.path().join("src");
    source_tree(&src);
    let q = d.path().join("root.qcow2");
    let epoch = Some("1700000000");
    dc_epoch(epoch, &["mkfs", "ext4", &s(&src), "-O", "qcow2", "-o", &s(&q), "--label", "rootfs"]).expect_ok();
    qemu_check_clean(&q);
    let raw = d.path().join("root.raw");
    qemu_img(&["convert", "-O", "raw", &s(&q), &s(&raw)]);
    let (code, text) = e2("e2fsck", &["-fn", &s(&raw)]);
    assert_eq!(code, 0, "{text}");
    let (_, h) = e2("dumpe2fs", &["-h", &s(&raw)]);
    assert!(h.contains("Filesystem volume name:   rootfs"), "{h}");
    assert!(h.contains("metadata_csum") && h.contains("has_journal"), "{h}");
    let dumped = d.path().join("data");
    let (code, text) = e2("debugfs", &["-R", &format!("dump /etc/deep/er/data {}", s(&dumped)), &s(&raw)]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(read(&dumped), pseudo_random(300_000, 3));
    // Our own reader agrees, through the qcow2.
    assert_eq!(dc_ok(&["cat", &s(&q), "/etc/hostname"]).stdout, b"ext4-box\n");

    // The same tree and epoch give the same bytes; --uuid sets the UUID.
    let (a, b) = (d.path().join("a.raw"), d.path().join("b.raw"));
    for p in [&a, &b] {
        dc_epoch(epoch, &["mkfs", "ext4", &s(&src), "-o", &s(p)]).expect_ok();
    }
    assert_same_bytes(&a, &b);
    let u = d.path().join("u.raw");
    let id = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    dc_ok(&["mkfs", "ext4", &s(&src), "-o", &s(&u), "--size", "64M", "--uuid", id]);
    assert_eq!(file_len(&u), 64 * MIB);
    let (_, h) = e2("dumpe2fs", &["-h", &s(&u)]);
    assert!(h.contains(&format!("Filesystem UUID:          {id}")), "{h}");
    dc(&["mkfs", "ext4", &s(&src), "-o", &s(&d.path().join("bad.raw")), "--uuid", "nope"])
        .expect_code(1)
        .expect_stderr_any(&["uuid"]);
    dc(&["mkfs", "ext4", &s(&src), "-o", &s(&d.path().join("small.raw")), "--size", "1M"])
        .expect_code(1)
        .expect_stderr_any(&["at least"]);
}

// ---- hostile filesystems: work and memory bounded by the input ----

/// Seconds a hostile `ls` may take (a debug build reading a few blocks needs far less).
const HOSTILE_SECS: u64 = 60;
/// Resident memory a hostile `ls` may reach: the binary alone takes about 10 MiB.
const HOSTILE_RSS: u64 = 200 * MIB;
/// Address space a hostile `ls` may map: a runaway allocation fails in the child instead
/// of swamping the machine (today's readers asked for tens of GB).
const HOSTILE_VM: u64 = 2 * GIB;

fn mke2fs(args: &[&str]) {
    let (code, text) = e2("mke2fs", args);
    assert_eq!(code, 0, "mke2fs {args:?}: {text}");
}

/// Byte offset of `path`'s inode record (from `debugfs imap`) with `bs`-byte blocks.
fn inode_offset(img: &Path, path: &str, bs: u64) -> u64 {
    let (code, out) = e2("debugfs", &["-R", &format!("imap {path}"), &s(img)]);
    assert_eq!(code, 0, "{out}");
    let blk: u64 = out.split("located at block ").nth(1).unwrap().split(',').next().unwrap().trim().parse().unwrap();
    let off = out.split("offset 0x").nth(1).unwrap().split_whitespace().next().unwrap();
    blk * bs + u64::from_str_radix(off, 16).unwrap()
}

/// `n` free blocks from debugfs (`ffb`), at or after `start`.
fn free_blocks(img: &Path, n: usize, start: u64) -> Vec<u32> {
    let (code, out) = e2("debugfs", &["-R", &format!("ffb {n} {start}"), &s(img)]);
    assert_eq!(code, 0, "{out}");
    let list = out.split("Free blocks found: ").nth(1).unwrap_or_else(|| panic!("debugfs ffb: {out}"));
    let v: Vec<u32> = list.split_whitespace().map_while(|w| w.parse().ok()).collect();
    assert_eq!(v.len(), n, "{out}");
    v
}

fn le32s(v: u32, n: usize) -> Vec<u8> {
    v.to_le_bytes().repeat(n)
}

#[test]
fn hostile_indirect_blocks_sharing_one_child_are_refused_in_bounded_memory() {
    // An ext2 file whose triple-indirect block points 1024 times at one double-indirect
    // block, which points 1024 times at one indirect block, which points 1024 times at
    // one data block: 2^30 block pointers from three blocks. Untracked, the reader
    // collected them all (tens of GB).
    let d = tmp();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    write_file(&src.join("f"), &pseudo_random(20_000, 1));
    let img = d.path().join("fs.img");
    mke2fs(&["-q", "-F", "-t", "ext2", "-b", "4096", "-d", &s(&src), &s(&img), "16M"]);
    let at = inode_offset(&img, "/f", 4096);
    let [t, dbl, ind] = free_blocks(&img, 3, 3000)[..] else { unreachable!() };
    patch(&img, at + 4, &0u32.to_le_bytes()); // i_size: 4 TiB
    patch(&img, at + 0x6c, &0x400u32.to_le_bytes());
    patch(&img, at + 0x28 + 14 * 4, &t.to_le_bytes()); // i_block[14]: triple indirect
    patch(&img, u64::from(t) * 4096, &le32s(dbl, 1024));
    patch(&img, u64::from(dbl) * 4096, &le32s(ind, 1024));
    patch(&img, u64::from(ind) * 4096, &le32s(t, 1024));
    let r = dc_bounded(&["ls", &s(&img)], HOSTILE_SECS, HOSTILE_VM).expect_rss_below(HOSTILE_RSS);
    r.run.expect_code(1).expect_diskcast_error().expect_stderr_all(&["fs.img", "indirect block", "twice"]);
}

/// A 1 KiB-block ext4 without 64bit (32-byte group descriptors), grown to 4 TiB as a
/// sparse file so that a patched block count stays inside the disk.
fn sparse_4t_image(d: &Path) -> std::path::PathBuf {
    let src = d.join("src");
    source_tree(&src);
    let img = d.join("fs.img");
    mke2fs(&["-q", "-F", "-t", "ext4", "-O", "^64bit", "-b", "1024", "-d", &s(&src), &s(&img), "8M"]);
    std::fs::OpenOptions::new().write(true).open(&img).unwrap().set_len(4 << 40).unwrap();
    img
}

#[test]
fn hostile_group_counts_never_allocate_the_claimed_descriptor_table() {
    // 2^32 blocks in groups of 1 block: a 128 GiB descriptor table was allocated up front
    // (the process aborted). The inode count cannot match that many groups.
    let d = tmp();
    let img = sparse_4t_image(d.path());
    patch(&img, 1024 + 0x04, &u32::MAX.to_le_bytes()); // s_blocks_count_lo
    patch(&img, 1024 + 0x20, &1u32.to_le_bytes()); // s_blocks_per_group
    let r = dc_bounded(&["ls", &s(&img)], HOSTILE_SECS, HOSTILE_VM).expect_rss_below(HOSTILE_RSS);
    r.run.expect_code(1).expect_diskcast_error().expect_stderr_all(&["fs.img", "s_inodes_count"]);

    // Counts that agree with each other (2^29 groups of 8 blocks and 4 inodes: a 16 GiB
    // table): descriptors are read as inodes need them, and a bad one is named.
    let d = tmp();
    let img = sparse_4t_image(d.path());
    let blocks: u32 = 0xFFF0_0000;
    let groups = (blocks - 1).div_ceil(8);
    patch(&img, 1024, &(groups * 4).to_le_bytes()); // s_inodes_count
    patch(&img, 1024 + 0x04, &blocks.to_le_bytes());
    patch(&img, 1024 + 0x20, &8u32.to_le_bytes());
    patch(&img, 1024 + 0x28, &4u32.to_le_bytes()); // s_inodes_per_group
    let r = dc_bounded(&["ls", &s(&img)], HOSTILE_SECS, HOSTILE_VM).expect_rss_below(HOSTILE_RSS);
    r.run.expect_code(1).expect_diskcast_error().expect_stderr_all(&["fs.img", "inode table"]);
}

#[test]
fn bigalloc_is_named_as_an_unsupported_feature() {
    let d = tmp();
    let src = d.path().join("src");
    source_tree(&src);
    let img = d.path().join("fs.img");
    mke2fs(&["-q", "-F", "-t", "ext4", "-O", "bigalloc", "-d", &s(&src), &s(&img), "64M"]);
    dc(&["ls", &s(&img)]).expect_code(1).expect_diskcast_error().expect_stderr_all(&[
        "fs.img",
        "ext4 feature bigalloc",
        "not supported",
    ]);
}
