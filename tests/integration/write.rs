//! `diskcast write IMAGE DEVICE`: images made by qemu-img/qemu-io written onto loop
//! devices this test makes (over its own files) and over existing files, judged by
//! `qemu-img compare` and `cmp`; every refusal (a mounted partition, the device holding
//! the image, too small, read-only, no terminal to ask on, a symlink to a file) leaves the
//! target as it was. Loop devices need root: without it those tests say so and return.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A 64 MiB qcow2 with data written by qemu-io (patterns at odd places, one range written
/// as zeros) and the rest never written.
fn qcow2_with_data(dir: &Path) -> PathBuf {
    let img = dir.join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&img), "64M"]);
    qemu_io(
        "qcow2",
        &img,
        &["write -P 0x5a 1M 3M", "write -P 0xc3 17M 64k", "write -z 20M 1M", "write -P 0x11 63M 1M"],
    );
    img
}

/// The JSON progress lines of a run: (done, total) each.
fn progress_lines(stderr: &str) -> Vec<(u64, u64)> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["done"].as_u64().unwrap(), v["total"].as_u64().unwrap())
        })
        .collect()
}

/// A qcow2 onto a loop device that held random bytes, named through a symlink (as
/// /dev/disk/by-id/... are): qemu-img compare finds the device equal to the image, so
/// the ranges the image never wrote were zeroed; the real device is named, and the JSON
/// progress covers the write and the read-back once, from 0 to twice the image.
#[test]
fn qcow2_onto_a_loop_device() {
    let d = tmp();
    let img = qcow2_with_data(d.path());
    let backing = d.path().join("stick.img");
    random_file(&backing, 64 * MIB);
    let Some(lo) = Loop::try_attach(&backing, false) else { return };
    let link = d.path().join("usb-Fake_Stick-0:0");
    std::os::unix::fs::symlink(&lo.dev, &link).unwrap();
    let r = dc(&["write", "--yes", "--progress=json", &s(&img), &s(&link)]).expect_ok();
    let r = r.expect_stderr_all(&[&format!("{} (via {})", lo.dev, s(&link)), "64.0 MiB", "written and verified"]);
    let lines = progress_lines(&r.stderr);
    assert_eq!(lines.first(), Some(&(0, 128 * MIB)), "{}", r.stderr);
    assert_eq!(lines.last(), Some(&(128 * MIB, 128 * MIB)), "{}", r.stderr);
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards: {lines:?}");
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", &s(&img), &lo.dev]).expect_ok();
    drop(lo);
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", &s(&img), &s(&backing)]).expect_ok();
}

/// A streamOptimized VMDK (compressed grains, read and inflated on the fly) over an
/// existing larger file of random bytes: the file ends as long as the image and equal
/// to it, with the never-written ranges as holes.
#[test]
fn stream_optimized_vmdk_over_a_file() {
    let d = tmp();
    let src = qcow2_with_data(d.path());
    let vmdk = d.path().join("disk.vmdk");
    qemu_img(&["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(&src), &s(&vmdk)]).expect_ok();
    let target = d.path().join("target.img");
    random_file(&target, 80 * MIB);
    dc(&["write", "-y", &s(&vmdk), &s(&target)]).expect_ok().expect_stderr_all(&["vmdk", "verified"]);
    assert_eq!(file_len(&target), 64 * MIB);
    qemu_img(&["compare", "-f", "vmdk", "-F", "raw", &s(&vmdk), &s(&target)]).expect_ok();
    assert!(allocated(&target) < 16 * MIB, "the empty ranges were written as data: {} bytes", allocated(&target));
}

/// A 1 GiB image with 10 MiB of data over a 1 GiB file of random bytes: afterwards the
/// file is byte for byte the image (`cmp`), having written about the data only.
#[test]
fn holes_read_back_as_zeros() {
    let d = tmp();
    let img = d.path().join("big.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&img), "1G"]);
    qemu_io("raw", &img, &["write -P 0x42 0 4M", "write -P 0x43 500M 3M", "write -P 0x44 1021M 3M"]);
    let target = d.path().join("target.img");
    random_file(&target, GIB);
    dc(&["write", "--yes", "-j", "2", &s(&img), &s(&target)]).expect_ok();
    tool_text("cmp", &[&s(&img), &s(&target)]);
    assert!(allocated(&target) < 64 * MIB, "{} bytes allocated for 10 MiB of data", allocated(&target));
}

/// Every refusal comes before anything is written, says why, and leaves the target as
/// it was: no terminal without --yes, a symlink to a file, a device with a mounted
/// partition, a device holding the image (its filesystem; a loop device over it), a
/// device smaller than the image, a read-only one.
#[test]
fn refusals_leave_the_target_alone() {
    let d = tmp();
    let img = qcow2_with_data(d.path());

    let file = d.path().join("file.img");
    random_file(&file, 64 * MIB);
    let before = read(&file);
    dc(&["write", &s(&img), &s(&file)]).expect_code(1).expect_stderr_all(&["not a terminal", "pass --yes", &s(&file)]);
    let link = d.path().join("link.img");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    dc(&["write", "--yes", &s(&img), &s(&link)]).expect_code(1).expect_stderr_all(&[
        "symlink",
        "not a block device",
        "name the file itself",
    ]);
    assert!(read(&file) == before, "a refused write changed the file");

    if !loop_devices_available() {
        return;
    }
    // A mounted partition; then the image inside that filesystem.
    let (disk, lo) = gpt_ext4_disk(d.path());
    let p1 = lo.part(1);
    let mnt = Mount::new(&p1, &d.path().join("mnt"));
    let gpt_before = read(&disk)[..MIB as usize].to_vec();
    dc(&["write", "--yes", &s(&img), &lo.dev]).expect_code(1).expect_stderr_all(&[
        &lo.dev,
        "partition",
        "mounted at",
        &s(&mnt.dir),
    ]);
    let inside = mnt.dir.join("src.qcow2");
    std::fs::copy(&img, &inside).unwrap();
    dc(&["write", "--yes", &s(&inside), &lo.dev]).expect_code(1).expect_stderr_all(&["holds the input", "src.qcow2"]);
    drop(mnt);
    assert!(read(&disk)[..MIB as usize] == gpt_before, "a refused write changed the GPT");
    tool_text("e2fsck", &["-fn", &p1]);
    drop(lo);

    // A loop device over the image itself.
    let raw = d.path().join("src.raw");
    qemu_img(&["convert", "-O", "raw", &s(&img), &s(&raw)]).expect_ok();
    let over = Loop::attach(&raw, false);
    dc(&["write", "--yes", &s(&raw), &over.dev]).expect_code(1).expect_stderr_all(&["loop device over the input"]);
    drop(over);

    // Smaller than the image, and read-only.
    let small = d.path().join("small.img");
    random_file(&small, 32 * MIB);
    let small_before = read(&small);
    let lo = Loop::attach(&small, false);
    dc(&["write", "--yes", &s(&img), &lo.dev])
        .expect_code(1)
        .expect_stderr_all(&["33554432 bytes", "less than the 67108864-byte image"]);
    drop(lo);
    let ro = Loop::attach(&file, true);
    dc(&["write", "--yes", &s(&img), &ro.dev]).expect_code(1).expect_stderr_all(&[&ro.dev, "read-only"]);
    drop(ro);
    // Without --yes and without a terminal, a free device is refused too.
    let lo = Loop::attach(&file, false);
    dc(&["write", &s(&img), &lo.dev]).expect_code(1).expect_stderr_all(&["not a terminal", "--yes"]);
    drop(lo);
    assert!(read(&small) == small_before && read(&file) == before, "a refused write changed a device");
}

/// On a terminal (a pty from `script`) the target is shown and only `yes` writes: `no`
/// leaves the file as it was, `yes` writes it and draws the bar.
#[test]
fn the_prompt_on_a_terminal() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let d = tmp();
    let img = d.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&img), "8M"]);
    qemu_io("qcow2", &img, &["write -P 0x21 0 1M"]);
    let target = d.path().join("t.img");
    random_file(&target, 8 * MIB);
    let before = read(&target);
    let on_tty = |answer: &str| {
        let line = format!("{} write {} {}", diskcast_bin(), s(&img), s(&target));
        // A user's terminal: under TERM=dumb (as CI sets it) no progress bar is drawn.
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs the command on a pty");
        child.stdin.take().unwrap().write_all(format!("{answer}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = on_tty("no");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Type yes to write") && text.contains("not confirmed"), "{text}");
    assert!(text.contains("t.img: a regular file of 8.0 MiB"), "{text}");
    assert!(read(&target) == before, "a refused write changed the file");
    let (code, text) = on_tty("yes");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("written and verified") && text.contains("16.00 MiB"), "{text}");
    qemu_img(&["compare", "-f", "qcow2", "-F", "raw", &s(&img), &s(&target)]).expect_ok();
}
