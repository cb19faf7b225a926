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
