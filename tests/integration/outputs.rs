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

/// Block devices are written only when nothing uses them: a mounted device, one with a
/// mounted partition, the source itself (or its partition), a read-only one and one
/// smaller than the image are each refused with the reason, and left unchanged.
#[test]
fn block_device_targets_are_checked() {
    let d = tmp();
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "8M"]);
    qemu_io("raw", &src, &["write -P 0x6b 0 8M"]);
    let (disk, lo) = gpt_ext4_disk(d.path());
    let p1 = lo.part(1);
    let head = |p: &Path| read(p)[..1 << 20].to_vec();
    let gpt_before = head(&disk);

    // Not mounted yet: the disk and its partition are each the other's input.
    dc(&["convert", "-n", "-f", "raw", "-O", "raw", &lo.dev, &lo.dev]).expect_code(1).expect_stderr_all(&["itself"]);
    dc(&["convert", "-n", "-f", "raw", "-O", "raw", &p1, &lo.dev]).expect_code(1).expect_stderr_all(&[
        &lo.dev,
        "partition",
        "input",
    ]);

    let mnt = Mount::new(&p1, &d.path().join("mnt"));
    write_file(&mnt.dir.join("keep.txt"), b"still here\n");
    let mounted_at = s(&mnt.dir);
    dc(&["convert", "-n", "-O", "raw", &s(&src), &lo.dev]).expect_code(1).expect_stderr_all(&[
        &lo.dev,
        "partition",
        "mounted at",
        &mounted_at,
    ]);
    dc(&["convert", "-n", "-O", "raw", &s(&src), &p1]).expect_code(1).expect_stderr_all(&[&p1, "mounted at"]);
    // Other commands given a block device check it the same way.
    let tree = small_tree(d.path());
    dc(&["mkfs", "fat32", &s(&tree), "-o", &lo.dev]).expect_code(1).expect_stderr_all(&["mounted at"]);
    dc(&["iso", "create", &s(&tree), "-o", &p1]).expect_code(1).expect_stderr_all(&["mounted at"]);
    assert_eq!(read(&mnt.dir.join("keep.txt")), b"still here\n");
    drop(mnt);
    assert_eq!(head(&disk), gpt_before, "the GPT changed");
    tool_text("sgdisk", &["-v", &s(&disk)]);
    tool_text("e2fsck", &["-fn", &p1]);
    drop(lo);

    // Read-only.
    let ro = Loop::attach(&disk, true);
    dc(&["convert", "-n", "-O", "raw", &s(&src), &ro.dev]).expect_code(1).expect_stderr_all(&[&ro.dev, "read-only"]);
    drop(ro);

    // Too small: a 4 MiB device for an 8 MiB image.
    let small = d.path().join("small.img");
    qemu_img(&["create", "-q", "-f", "raw", &s(&small), "4M"]);
    let lo = Loop::attach(&small, false);
    dc(&["convert", "-n", "-O", "raw", &s(&src), &lo.dev]).expect_code(1).expect_stderr_all(&[
        &lo.dev,
        "4194304 bytes",
        "less than the 8388608-byte image",
    ]);
    assert!(read(&small).iter().all(|&b| b == 0), "the small device was written");
}

/// A free block device is written in place: `convert -n` and `mkfs` give exactly the
/// bytes a file output gets.
#[test]
fn a_free_block_device_is_written() {
    let d = tmp();
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "8M"]);
    qemu_io("raw", &src, &["write -P 0x3c 0 1M", "write -P 0x7e 5M 2M"]);
    let backing = d.path().join("dev.img");
    // Data where the image has holes: written in place, zeros must be written too.
    write_file(&backing, &pseudo_random(8 << 20, 3));
    let lo = Loop::attach(&backing, false);
    let is_block = |p: &str| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_block_device())
    };
    dc_ok(&["convert", "-n", "-f", "raw", "-O", "raw", &s(&src), &lo.dev]);
    tool_text("cmp", &[&s(&src), &lo.dev]);
    assert!(is_block(&lo.dev));

    let tree = small_tree(d.path());
    let file = d.path().join("fat.img");
    let epoch = Some("1700000000");
    let size = "8M";
    dc_epoch(epoch, &["mkfs", "fat32", &s(&tree), "-o", &s(&file), "--size", size]).expect_ok();
    let r = dc_epoch(epoch, &["mkfs", "fat32", &s(&tree), "-o", &lo.dev, "--size", size]).expect_ok();
    if !is_block(&lo.dev) {
        // Put the node back before failing: the machine's other loop users need it.
        let _ = std::fs::remove_file(&lo.dev);
        let minor = lo.dev.trim_start_matches("/dev/loop");
        let _ = Command::new("mknod").args(["-m", "600", &lo.dev, "b", "7", minor]).status();
        panic!("mkfs replaced the device node {} with a file\n{}", lo.dev, r.describe());
    }
    tool_text("cmp", &[&s(&file), &lo.dev]);
    tool_text("fsck.fat", &["-n", &lo.dev]);
}

/// True when `p` is still a character device (`/dev/null` must never become a file).
fn is_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// Runs diskcast with `FIFO` in `args` replaced by a fifo that `cat` reads; returns what
/// `cat` received.
fn through_fifo(dir: &Path, args: &[&str]) -> Vec<u8> {
    let fifo = dir.join("out.fifo");
    let _ = std::fs::remove_file(&fifo);
    tool_text("mkfifo", &[&s(&fifo)]);
    let got = dir.join("fifo.bytes");
    let reader = Command::new("cat").arg(&fifo).stdout(std::fs::File::create(&got).unwrap()).spawn().unwrap();
    let f = s(&fifo);
    let args: Vec<&str> = args.iter().map(|a| if *a == "FIFO" { f.as_str() } else { a }).collect();
    let r = dc_epoch(Some("1700000000"), &args);
    let status = reader.wait_with_output().unwrap().status;
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(status.success());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the fifo was replaced");
    read(&got)
}

/// Character devices and pipes are written in place, front to back: /dev/null stays a
/// device, and a fifo's reader gets exactly the bytes a file output gets.
#[test]
fn devices_and_pipes_are_written_in_place() {
    let d = tmp();
    let tree = small_tree(d.path());
    let t = s(&tree);
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "6M"]);
    qemu_io("raw", &src, &["write -P 0x42 1M 2M"]);
    // A null device of our own (major 1, minor 3, as /dev/null): a regression replaces
    // this node, not the machine's /dev/null, which other programs are using.
    let devdir = d.path().join("dev");
    std::fs::create_dir(&devdir).unwrap();
    let null = devdir.join("null");
    tool_text("mknod", &["-m", "666", &s(&null), "c", "1", "3"]);
    let n = s(&null);
    for args in [
        vec!["extract", t.as_str(), "-o", &n],
        vec!["convert", "-O", "raw", &s(&src), &n],
        vec!["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(&src), &n],
        vec!["iso", "create", t.as_str(), "-o", &n],
        vec!["mkfs", "fat32", t.as_str(), "-o", &n],
    ] {
        dc_ok(&args);
        assert!(is_char_device(&null), "`{}` replaced the null device", args.join(" "));
        assert_eq!(names(&devdir), ["null"], "files beside the null device");
    }
    // A format that seeks back cannot go there: refused, saying which can.
    for args in [vec!["convert", "-O", "qcow2", &s(&src), &n], vec!["mkfs", "ext4", &t, "-o", &n, "-O", "vhdx"]] {
        dc(&args).expect_code(1).expect_stderr_all(&["seeks back", "formats that can", "raw"]);
    }
    assert!(is_char_device(&null));
    assert_eq!(names(&devdir), ["null"]);

    // A fifo gets the same bytes as a file.
    let epoch = Some("1700000000");
    let cases: [(&str, Vec<&str>); 3] = [
        ("tar", vec!["extract", t.as_str(), "-o", "OUT"]),
        ("raw", vec!["convert", "-f", "raw", "-O", "raw", "SRC", "OUT"]),
        ("iso", vec!["iso", "create", t.as_str(), "-o", "OUT"]),
    ];
    let src_s = s(&src);
    for (ext, args) in cases {
        let file = d.path().join(format!("file.{ext}"));
        let fs = s(&file);
        let sub = |out: &str| -> Vec<String> {
            args.iter()
                .map(|a| match *a {
                    "OUT" => out.to_string(),
                    "SRC" => src_s.clone(),
                    a => a.to_string(),
                })
                .collect()
        };
        let to_file = sub(&fs);
        dc_epoch(epoch, &to_file.iter().map(String::as_str).collect::<Vec<_>>()).expect_ok();
        let to_fifo = sub("FIFO");
        let got = through_fifo(d.path(), &to_fifo.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(got == read(&file), "{ext}: the fifo got {} bytes, the file {}", got.len(), file_len(&file));
        // And /dev/stdout, here a pipe to the test.
        let to_stdout = sub("/dev/stdout");
        let r = dc_epoch(epoch, &to_stdout.iter().map(String::as_str).collect::<Vec<_>>()).expect_ok();
        assert!(r.stdout == read(&file), "{ext}: /dev/stdout got {} bytes", r.stdout.len());
    }
}

/// Tree writers refuse their own input as output (by device and inode, through any
/// name), as `convert` does, and leave it unchanged.
#[test]
fn tree_writers_refuse_their_own_input() {
    let d = tmp();
    let tree = small_tree(d.path());
    let ext4 = d.path().join("a.img");
    tool_text("mkfs.ext4", &["-q", "-d", &s(&tree), &s(&ext4), "8M"]);
    let tar = d.path().join("a.tar");
    tool_text("tar", &["-cf", &s(&tar), "-C", &s(&tree), "."]);
    let iso = iso_of(d.path(), &tree);
    let kernel = d.path().join("vmlinuz");
    write_file(&kernel, &pseudo_random(64 * 1024, 9));
    let link = d.path().join("link.img");
    std::fs::hard_link(&ext4, &link).unwrap();
    let (e, t, i, l) = (s(&ext4), s(&tar), s(&iso), s(&link));
    let part = format!("root:ext4:auto:{e}");
    let oci_archive = format!("oci-archive:{t}:latest");
    let cases: [(&Path, &[&str]); 9] = [
        (&ext4, &["mkfs", "ext4", &e, "-o", &e]),
        (&ext4, &["mkfs", "fat32", &e, "-o", &l]),
        (&tar, &["extract", &t, "-o", &t]),
        (&iso, &["iso", "create", &i, "-o", &i]),
        (&iso, &["iso", "remaster", &i, "-o", &i]),
        (&ext4, &["mkdisk", "-o", &e, "--part", &part]),
        (&tar, &["vm", &t, "-o", &t, "--kernel", &s(&kernel)]),
        (&kernel, &["vm", &t, "-o", &s(&kernel), "--kernel", &s(&kernel)]),
        (&tar, &["convert", &t, &oci_archive]),
    ];
    for (input, args) in cases {
        let before = read(input);
        dc(args).expect_code(1).expect_stderr_all(&["input", "itself"]);
        assert!(read(input) == before, "`{}` changed its input", args.join(" "));
    }
    assert!(stray_temps(d.path()).is_empty());
    tool_text("e2fsck", &["-fn", &e]);
}

/// Container images go through the one output path too: an `oci-archive:` or
/// `docker-archive:` target (also a kubevirt containerDisk's) that a VM holds is refused
/// before the source is even opened, as every other output is, and nothing is left.
#[test]
fn container_archive_targets_are_checked_before_the_source_is_read() {
    let d = tmp();
    let busy = d.path().join("busy.tar");
    qemu_img(&["create", "-q", "-f", "raw", &s(&busy), "1M"]);
    let before = read(&busy);
    let holder = QemuHolder::start("raw", &busy);
    let kernel = d.path().join("vmlinuz");
    write_file(&kernel, &pseudo_random(64 * 1024, 9));
    // A source that does not exist: an error about it means the target was checked late.
    let missing = s(&d.path().join("no-such-source"));
    let b = s(&busy);
    let (oci_archive, docker_archive) = (format!("oci-archive:{b}:latest"), format!("docker-archive:{b}:app:1"));
    let cases: [&[&str]; 4] = [
        &["convert", &missing, &oci_archive],
        &["convert", &missing, &docker_archive],
        &["convert", "-f", "raw", "--profile", "kubevirt", &missing, &oci_archive],
        &["vm", &missing, "-o", &oci_archive, "--profile", "kubevirt", "--kernel", &s(&kernel)],
    ];
    for args in cases {
        dc(args).expect_code(1).expect_stderr_all(&["busy.tar", "in use", "qemu-io (pid"]);
        assert_eq!(read(&busy), before, "`{}` changed the archive qemu-io holds", args.join(" "));
        assert!(stray_temps(d.path()).is_empty(), "{:?} after {args:?}", stray_temps(d.path()));
    }
    drop(holder);
}
