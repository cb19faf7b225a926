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
