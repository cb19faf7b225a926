//! Sources and targets that are not regular files: pipes and standard input (read whole,
//! as raw), block devices (their real size, `-n` to write into them), existing files
//! written in place with `-n`. qemu-img judges every result.

use crate::support::*;
use std::path::Path;
use std::process::Command;

/// Runs `sh -c SCRIPT` with `$DC` set to the diskcast binary.
fn sh(script: &str) -> Run {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]).env("DC", diskcast_bin());
    let out = cmd.output().expect("run sh");
    Run {
        cmdline: script.to_string(),
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: std::time::Duration::ZERO,
    }
}

fn disk(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("disk.raw");
    write_index_pattern(&p, 5 * MIB + 512, 7); // odd size, with holes
    p
}

/// The case from the issue: a raw disk piped in through /dev/stdin (or `-`) makes a
/// correct image, never an empty one.
#[test]
fn a_pipe_is_read_whole_as_a_raw_disk() {
    let d = tmp();
    let src = disk(d.path());
    let out = d.path().join("out.qcow2");
    sh(&format!("cat '{}' | \"$DC\" convert -f raw -O qcow2 /dev/stdin '{}'", s(&src), s(&out))).expect_ok();
    qemu_compare(&src, "raw", &out, "qcow2");
    qemu_check_clean(&out);
    assert_eq!(qemu_info(&out)["virtual-size"], 5 * MIB + 512);

    let out2 = d.path().join("out2.vhdx");
    sh(&format!("cat '{}' | \"$DC\" convert -O vhdx - '{}'", s(&src), s(&out2))).expect_ok();
    qemu_compare(&src, "raw", &out2, "vhdx");

    // Commands that read at any offset refuse a pipe instead of showing an empty disk.
    for cmd in ["info", "map", "check"] {
        sh(&format!("cat '{}' | \"$DC\" {cmd} /dev/stdin", s(&src))).expect_code(1).expect_stderr_all(&["pipe"]);
    }
    sh(&format!("cat '{}' | \"$DC\" compare /dev/stdin '{}'", s(&src), s(&src)))
        .expect_code(2)
        .expect_stderr_all(&["pipe"]);

    // Pipe to pipe.
    let r = sh(&format!("cat '{}' | \"$DC\" convert -O raw - -", s(&src))).expect_ok();
    assert_eq!(r.stdout, read(&src));
    assert!(stray_temps(d.path()).is_empty());
}

/// An image of another format down a pipe is refused, not copied as raw bytes; so is a
/// `-f` other than raw. Nothing is written.
#[test]
fn a_piped_image_of_another_format_is_refused() {
    let d = tmp();
    let q = d.path().join("img.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&q), "4M"]);
    let out = d.path().join("out.raw");
    sh(&format!("cat '{}' | \"$DC\" convert -O raw - '{}'", s(&q), s(&out))).expect_code(1).expect_stderr_all(&[
        "standard input",
        "qcow2",
        "raw",
    ]);
    assert_no_output(&out);
    sh(&format!("cat '{}' | \"$DC\" convert -f qcow2 -O raw - '{}'", s(&q), s(&out)))
        .expect_code(1)
        .expect_stderr_all(&["pipe", "-f qcow2"]);
    assert_no_output(&out);
    // -f raw says it is a raw disk: then its bytes are copied as they are.
    sh(&format!("cat '{}' | \"$DC\" convert -f raw -O raw - '{}'", s(&q), s(&out))).expect_ok();
    assert_eq!(read(&out), read(&q));
}

/// `-n` writes into an existing file as it is: every byte of the target within the
/// source's size is replaced, zeros included (it does not start out zeroed).
#[test]
fn no_create_writes_into_an_existing_file() {
    let d = tmp();
    let q = d.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&q), "6M"]);
    qemu_io("qcow2", &q, &["write -P 0x11 1M 1M", "write -z 3M 1M"]);
    let target = d.path().join("existing.raw");
    write_file(&target, &pseudo_random(6 * MIB as usize, 3));
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&target).unwrap());
    dc_ok(&["convert", "-n", "-O", "raw", &s(&q), &s(&target)]);
    qemu_compare(&q, "qcow2", &target, "raw");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&target).unwrap()), ino, "written in place");

    // Refusals: not the format -O names (qemu-img: "Image is not in qcow2 format"), too
    // small, missing, stdout.
    let before = read(&target);
    dc(&["convert", "-n", "-O", "qcow2", &s(&q), &s(&target)])
        .expect_code(1)
        .expect_stderr_all(&["existing.raw", "not a qcow2 image"]);
    assert!(read(&target) == before, "a refused -n leaves the target as it was");
    let small = d.path().join("small.raw");
    write_file(&small, &[1u8; 4096]);
    dc(&["convert", "-n", "-O", "raw", &s(&q), &s(&small)]).expect_code(1).expect_stderr_all(&["small.raw", "less"]);
    assert_eq!(read(&small), vec![1u8; 4096]);
    dc(&["convert", "-n", "-O", "raw", &s(&q), &s(&d.path().join("none.raw"))])
        .expect_code(1)
        .expect_stderr_all(&["none.raw"]);
    dc(&["convert", "-n", "-O", "raw", &s(&q), "-"]).expect_code(1);
}

/// A loop device stands in for a disk or an LV: read at its real size (stat says 0),
/// written into with `-n`, and refused as a plain target (renaming over a device node
/// would not write the disk). Needs root and a free loop device.
#[test]
fn block_devices_as_source_and_target() {
    let d = tmp();
    let backing = d.path().join("lo.img");
    write_file(&backing, &pseudo_random(6 * MIB as usize, 9));
    let out = Command::new("losetup").args(["-f", "--show", &s(&backing)]).output().expect("run losetup");
    assert!(
        out.status.success(),
        "this test needs a loop device (root, util-linux losetup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());

    let q = d.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&q), "6M"]);
    qemu_io("qcow2", &q, &["write -P 0x22 512k 1M", "write -P 0x33 5M 64k"]);
    dc(&["convert", "-O", "raw", &s(&q), &dev]).expect_code(1).expect_stderr_all(&["device", "-n"]);
    dc_ok(&["convert", "-n", "-O", "raw", &s(&q), &dev]);
    qemu_compare(&q, "qcow2", Path::new(&dev), "raw");

    let info = dc_ok(&["info", "--output", "json", &dev]).json();
    assert_eq!(info["virtual-size"], 6 * MIB, "{info}");
    let back = d.path().join("back.qcow2");
    dc_ok(&["convert", "-f", "raw", "-O", "qcow2", &dev, &s(&back)]);
    qemu_compare(Path::new(&dev), "raw", &back, "qcow2");
}
