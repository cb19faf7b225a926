//! The one output path: every command that writes an image or an archive refuses a
//! target a VM (here `qemu-io`) holds, writes devices and pipes in place, leaves no file
//! behind when killed, refuses its own input as output, and writes block devices only
//! when nothing uses them. Reading commands take qemu's shared read lock.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A directory tree to build from, made with plain file writes.
fn small_tree(dir: &Path) -> PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    write_file(&root.join("etc/hostname"), b"outputs\n");
    write_file(&root.join("data.bin"), &pseudo_random(300 * 1024, 5));
    root
}

/// A FAT image made by mkfs.fat holding one file copied in by mcopy.
fn fat_image(dir: &Path) -> PathBuf {
    let img = dir.join("fat.img");
    let hello = dir.join("hello.txt");
    write_file(&hello, b"hello from mtools\n");
    tool_text("mkfs.fat", &["-C", &s(&img), "8192"]);
    let status =
        Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-i", &s(&img), &s(&hello), "::/hello.txt"]).status();
    assert!(status.unwrap().success(), "mcopy failed");
    img
}

/// A data ISO made by genisoimage from `tree`.
fn iso_of(dir: &Path, tree: &Path) -> PathBuf {
    let iso = dir.join("in.iso");
    tool_text("genisoimage", &["-quiet", "-R", "-J", "-o", &s(&iso), &s(tree)]);
    iso
}

/// Every command that writes an image or an archive refuses a target `qemu-io` holds
/// for writing: exit 1, the holder named, the target's bytes unchanged, nothing left.
#[test]
fn every_writer_refuses_a_target_qemu_holds() {
    let d = tmp();
    let tree = small_tree(d.path());
    let iso = iso_of(d.path(), &tree);
    let kernel = d.path().join("vmlinuz");
    write_file(&kernel, &pseudo_random(64 * 1024, 9));
    let busy = d.path().join("busy.img");
    qemu_img(&["create", "-q", "-f", "raw", &s(&busy), "4M"]);
    qemu_io("raw", &busy, &["write -P 0x5a 0 1M"]);
    let before = read(&busy);
    let holder = QemuHolder::start("raw", &busy);
    let (t, b, i) = (s(&tree), s(&busy), s(&iso));
    let part = format!("root:ext4:auto:{t}");
    let oci_archive = format!("oci-archive:{b}:latest");
    let docker_archive = format!("docker-archive:{b}:app:1");
    let cases: [&[&str]; 11] = [
        &["convert", "-f", "raw", "-O", "raw", &i, &b],
        &["create", "-f", "qcow2", &b, "1M"],
        &["mkfs", "fat32", &t, "-o", &b],
        &["mkfs", "ext4", &t, "-o", &b, "-O", "qcow2"],
        &["mkdisk", "-o", &b, "--part", &part],
        &["extract", &t, "-o", &b],
        &["iso", "create", &t, "-o", &b],
        &["iso", "remaster", &i, "-o", &b],
        &["vm", &t, "-o", &b, "--kernel", &s(&kernel)],
        &["convert", &t, &oci_archive],
        &["convert", &t, &docker_archive],
    ];
    for args in cases {
        dc(args).expect_code(1).expect_stderr_all(&["busy.img", "in use", "qemu-io (pid"]);
        assert_eq!(read(&busy), before, "`{}` changed the image qemu-io holds", args.join(" "));
        assert!(stray_temps(d.path()).is_empty(), "{:?} after {args:?}", stray_temps(d.path()));
    }
    drop(holder);
    dc_ok(&["mkfs", "fat32", &t, "-o", &b]);
}

/// `ls`, `cat` and `extract` lock a disk image as qemu-img locks what it reads: one a VM
/// writes is refused, and `-U` reads it anyway.
#[test]
fn tree_readers_take_the_read_lock_and_force_share() {
    let d = tmp();
    let img = fat_image(d.path());
    let holder = QemuHolder::start("raw", &img);
    let i = s(&img);
    let out = d.path().join("out");
    let tar = d.path().join("out.tar");
    for args in [
        vec!["ls", i.as_str()],
        vec!["cat", i.as_str(), "hello.txt"],
        vec!["extract", i.as_str(), &s(&out)],
        vec!["extract", i.as_str(), "-o", &s(&tar)],
        vec!["mkfs", "fat32", i.as_str(), "-o", &s(&d.path().join("copy.img"))],
    ] {
        dc(&args).expect_code(1).expect_stderr_all(&["fat.img", "in use", "qemu-io (pid", "-U"]);
    }
    assert!(!out.exists() && !tar.exists());
    let listed = dc_ok(&["ls", "-U", &i]).stdout_str();
    assert!(listed.lines().any(|l| l.eq_ignore_ascii_case("hello.txt")), "{listed}");
    assert_eq!(dc_ok(&["cat", "--force-share", &i, "hello.txt"]).stdout, b"hello from mtools\n");
    dc_ok(&["extract", "-U", &i, &s(&out)]);
    assert_eq!(read(&out.join("hello.txt")), b"hello from mtools\n");
    drop(holder);
    dc_ok(&["ls", &i]);
    let help = dc_ok(&["ls", "--help"]).stdout_str();
    assert!(help.contains("--force-share"), "{help}");
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// `kill -9` in the middle of a compressing convert leaves nothing beside the source:
/// the output has no name until it is complete.
#[test]
fn kill_9_leaves_no_file() {
    let d = tmp();
    let dir = d.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    let src = dir.join("big.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "2G"]);
    let cmds: Vec<String> = (0..8).map(|i| format!("write -P {} {}M 64M", 0x21 + i, i * 256)).collect();
    qemu_io("raw", &src, &cmds.iter().map(String::as_str).collect::<Vec<_>>());
    let dst = dir.join("out.qcow2");
    let mut child = Command::new(diskcast_bin())
        .args(["convert", "-f", "raw", "-O", "qcow2", "-c", "-j", "1", &s(&src), &s(&dst)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_output_fd(child.id(), &dir);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the convert finished before it could be killed");
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    assert_eq!(names(&dir), ["big.raw"], "kill -9 left files beside the source");
}

/// Writing an OCI layout never puts a temporary file in `blobs/`: `kill -9` during the
/// layer leaves the layout as it was (umoci gc passes), and a finished write adds only
/// blobs.
#[test]
fn oci_layout_blobs_hold_no_temporaries() {
    let d = tmp();
    let tree = d.path().join("rootfs");
    std::fs::create_dir(&tree).unwrap();
    // Incompressible data, so the gzip layer takes a while.
    for i in 0..12 {
        write_file(&tree.join(format!("f{i}.bin")), &pseudo_random(24 << 20, i));
    }
    let layout = d.path().join("layout");
    let small = small_tree(d.path());
    dc_ok(&["convert", &s(&small), &format!("oci:{}:base", s(&layout))]);
    let blobs = layout.join("blobs/sha256");
    let before = names(&blobs);
    let mut child = Command::new(diskcast_bin())
        .args(["convert", &s(&tree), &format!("oci:{}:big", s(&layout))])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_output_fd(child.id(), &blobs);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the layer was written before it could be killed");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(names(&blobs), before, "kill -9 left files in blobs/");
    assert_eq!(names(&layout), ["blobs", "index.json", "oci-layout"]);
    tool_text("umoci", &["gc", "--layout", &s(&layout)]);
    assert_eq!(names(&blobs), before, "umoci gc found unreferenced blobs");
}
