//! Locks shared with qemu: an image a VM (here `qemu-io`) holds is refused, `-U` reads it
//! anyway, and a target diskcast is writing is refused by qemu-img.

use crate::support::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn qcow2_with_data(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("busy.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&img), "8M"]);
    qemu_io("qcow2", &img, &["write -P 0x5a 1M 2M"]);
    img
}

#[test]
fn an_image_qemu_holds_is_refused_unless_force_share() {
    let d = tmp();
    let img = qcow2_with_data(d.path());
    let out = d.path().join("out.raw");
    let other = d.path().join("other.raw");
    write_index_pattern(&other, 8 * MIB, 0);
    let before = read(&img);
    let holder = QemuHolder::start("qcow2", &img);

    let (i, o) = (s(&img), s(&out));
    for (args, code) in [
        (vec!["info", i.as_str()], 1),
        (vec!["convert", "-O", "raw", i.as_str(), o.as_str()], 1),
        (vec!["check", i.as_str()], 1),
        (vec!["map", i.as_str()], 1),
        (vec!["measure", "-O", "qcow2", i.as_str()], 1),
        (vec!["compare", i.as_str(), i.as_str()], 2),
    ] {
        dc(&args).expect_code(code).expect_stderr_all(&["busy.qcow2", "in use", "qemu-io (pid", "-U"]);
    }
    assert_no_output(&out);

    // -U reads it anyway, as qemu-img -U does, and gets what qemu reads.
    dc_ok(&["info", "-U", &i]);
    dc_ok(&["convert", "-U", "-O", "raw", &i, &o]);
    let r = qemu_img_status(&["compare", "-U", "-f", "qcow2", "-F", "raw", &i, &o]);
    assert_eq!(r.code, Some(0), "{}", r.describe());

    // Replacing it is refused, -U or not: the VM would go on writing a deleted file.
    for u in [None, Some("-U")] {
        let mut args = vec!["convert"];
        args.extend(u);
        args.extend(["-f", "raw", "-O", "qcow2", other.to_str().unwrap(), i.as_str()]);
        dc(&args).expect_code(1).expect_stderr_all(&["busy.qcow2", "in use", "qemu-io (pid"]);
    }
    dc(&["create", "-f", "qcow2", &i, "1M"]).expect_code(1).expect_stderr_all(&["in use"]);
    assert_eq!(read(&img), before, "a refused command changed the image");
    assert!(stray_temps(d.path()).is_empty());

    drop(holder);
    dc_ok(&["info", &i]);
}

/// While diskcast writes a target, qemu-img refuses it: here the existing target of a
/// convert whose source is a pipe nobody has written yet, so the convert waits.
#[test]
fn qemu_refuses_a_target_diskcast_holds() {
    let d = tmp();
    let target = d.path().join("target.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&target), "1M"]);
    let fifo = d.path().join("feed");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut child = Command::new(diskcast_bin())
        .args(["convert", "-f", "raw", "-O", "qcow2", &s(&fifo), &s(&target)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let complaint = wait_until_qemu_sees_lock("qcow2", &target);
    assert!(complaint.contains("\"write\" lock"), "{complaint}");

    let data = pseudo_random(3 * MIB as usize, 7);
    std::fs::OpenOptions::new().write(true).open(&fifo).unwrap().write_all(&data).unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "convert did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw = d.path().join("fed.raw");
    write_file(&raw, &data);
    qemu_compare(&raw, "raw", &target, "qcow2"); // the pipe was read whole
    qemu_img(&["info", &s(&target)]); // no lock left behind
}
