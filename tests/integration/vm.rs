//! `diskcast vm`: container images and root filesystems made into bootable disks, judged
//! by booting them under QEMU with OVMF (the marker an init script prints on the serial
//! console) and by qemu-img check, sgdisk -v, e2fsck -fn, fsck.fat -n, debugfs and mtools.

use crate::support::{
    Bus, Firmware, assert_no_output, boot_to_marker, dc, dc_ok, qemu_check_clean, qemu_img, s, test_kernel, tmp,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs a tool under `timeout`; asserts it ran and exited 0 (a missing tool fails).
fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["-k", "5", "300", name])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?} failed ({:?}):\n{text}", out.status.code());
    text
}

/// The `/sbin/init` of the test guests: reports whether the whited-out file is there,
/// prints `marker` on the console and powers off.
fn init_script(marker: &str) -> String {
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         [ -c /dev/null ] || /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
         exec >/dev/console 2>&1\n\
         echo \"guest: removed-later=$([ -e /etc/removed-later ] && echo PRESENT || echo absent) hostname=$(/bin/busybox cat /etc/hostname 2>/dev/null)\"\n\
         echo \"{marker} kernel=$(/bin/busybox uname -r)\"\n\
         /bin/busybox sync\n\
         /bin/busybox poweroff -f\n"
    )
}

/// A busybox-static root directory (the first layer): busybox with a few applet links,
/// /etc/passwd, and /etc/removed-later (which a later layer whites out).
fn busybox_root(dir: &Path) {
    for d in ["bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is required (/bin/busybox)");
    for a in ["sh", "ls", "cat", "echo", "mount", "poweroff", "sync", "uname"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/removed-later"), "whited out by the last layer\n").unwrap();
}

/// An OCI image made by umoci: layer 1 the busybox root, layer 2 `/sbin/init`, layer 3 a
/// whiteout of /etc/removed-later. Returns `oci:DIR:TAG`.
fn busybox_oci(work: &Path, marker: &str) -> String {
    let layout = work.join("oci");
    let image = format!("{}:t", s(&layout));
    let reference = format!("oci:{image}");
    tool("umoci", &["init", "--layout", &s(&layout)]);
    tool("umoci", &["new", "--image", &image]);
    let l1 = work.join("l1");
    busybox_root(&l1);
    tool("umoci", &["insert", "--rootless", "--image", &image, &s(&l1), "/"]);
    let init = work.join("init");
    std::fs::write(&init, init_script(marker)).unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    tool("umoci", &["insert", "--rootless", "--image", &image, &s(&init), "/sbin/init"]);
    tool("umoci", &["insert", "--rootless", "--image", &image, "--whiteout", "/etc/removed-later"]);
    tool(
        "umoci",
        &["config", "--image", &image, "--config.entrypoint", "/bin/sh", "--os", "linux", "--architecture", "amd64"],
    );
    reference
}

/// The partitions of a written disk, from `diskcast vm --output json`.
fn partitions(summary: &Value) -> Vec<(String, u64, u64)> {
    summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()))
        .collect()
}

/// Copies `len` bytes at `start` of `raw` into a file of its own.
fn cut(raw: &Path, start: u64, len: u64, to: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    let n = std::io::copy(&mut f.take(len), &mut out).unwrap();
    assert_eq!(n, len, "{} is shorter than its partition table says", raw.display());
}

/// What independent tools say of a written disk: sgdisk -v on a raw copy, e2fsck -fn on
/// the root, fsck.fat -n on the ESP, and the loader entry and files on the ESP (mtools).
/// Returns the paths of the extracted (root, esp) images.
fn check_disk(disk: &Path, fmt: &str, summary: &Value, work: &Path) -> (PathBuf, PathBuf) {
    let raw = work.join("check.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", &s(disk), &s(&raw)]);
    let v = tool("sgdisk", &["-v", &s(&raw)]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let p = tool("sgdisk", &["-p", &s(&raw)]);
    assert!(p.contains("EF00") && p.contains("8304"), "ESP and x86-64 root types expected:\n{p}");
    let parts = partitions(summary);
    let (_, es, el) = parts.iter().find(|p| p.0 == "esp").cloned().unwrap();
    let (_, rs, rl) = parts.iter().find(|p| p.0 == "root").cloned().unwrap();
    let (esp, root) = (work.join("esp.img"), work.join("root.img"));
    cut(&raw, es, el, &esp);
    cut(&raw, rs, rl, &root);
    std::fs::remove_file(&raw).unwrap();
    tool("e2fsck", &["-fn", &s(&root)]);
    tool("fsck.fat", &["-n", &s(&esp)]);
    let mtools = |args: &[&str]| {
        let out =
            Command::new(args[0]).args(&args[1..]).env("MTOOLS_SKIP_CHECK", "1").output().expect("mtools is required");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = mtools(&["mdir", "-/", "-b", "-i", &s(&esp), "::/"]);
    for f in
        ["::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", "::/loader/entries/diskcast.conf", "::/diskcast/vmlinuz"]
    {
        assert!(listing.lines().any(|l| l.eq_ignore_ascii_case(f)), "{f} missing on the ESP:\n{listing}");
    }
    let entry = mtools(&["mtype", "-i", &s(&esp), "::/loader/entries/diskcast.conf"]);
    let cmdline = summary["cmdline"].as_str().unwrap();
    assert!(entry.contains(&format!("options {cmdline}")), "{entry}");
    let root_uuid = summary["partitions"][1]["partuuid"].as_str().unwrap();
    assert!(cmdline.starts_with(&format!("root=PARTUUID={root_uuid} ")), "{cmdline}");
    (root, esp)
}

/// `debugfs -R CMD IMAGE`.
fn debugfs(img: &Path, cmd: &str) -> String {
    tool("debugfs", &["-R", cmd, &s(img)])
}

fn boot(disk: &Path, fmt: &str, marker: &str, work: &Path) -> String {
    let t = Instant::now();
    let console = boot_to_marker(disk, fmt, Firmware::Uefi, Bus::Nvme, marker, work, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{fmt}: booted to the marker in {:.1} s", t.elapsed().as_secs_f64());
    console
}

#[test]
fn oci_image_to_qcow2_boots_under_uefi() {
    let t = tmp();
    let marker = "DISKCAST_VM_QCOW2_OK";
    let image = busybox_oci(t.path(), marker);
    let disk = t.path().join("vm.qcow2");
    let kernel = s(&test_kernel());
    let r = dc_ok(&["vm", &image, "-o", &s(&disk), "-O", "qcow2", "--kernel", &kernel, "--output", "json"]);
    let summary = r.json();
    assert_eq!(summary["format"], "qcow2");
    assert!(summary["kernel"].as_str().unwrap().contains("vmlinuz-"), "{summary}");
    qemu_check_clean(&disk);
    let (root, _esp) = check_disk(&disk, "qcow2", &summary, t.path());
    let etc = debugfs(&root, "ls -l /etc");
    assert!(etc.contains("passwd") && !etc.contains("removed-later"), "whiteout not applied:\n{etc}");
    let console = boot(&disk, "qcow2", marker, t.path());
    assert!(console.contains("guest: removed-later=absent"), "{console}");
}

#[test]
fn a_distroless_image_without_kernel_is_refused_and_writes_nothing() {
    let t = tmp();
    let root = t.path().join("root");
    busybox_root(&root);
    let tar = t.path().join("root.tar");
    tool("tar", &["-cf", &s(&tar), "-C", &s(&root), "."]);
    let out = t.path().join("vm.qcow2");
    dc(&["vm", &s(&tar), "-o", &s(&out), "-O", "qcow2"])
        .expect_diskcast_error()
        .expect_stderr_all(&["no kernel in the image; pass --kernel"]);
    assert_no_output(&out);
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "hyperv", "--boot", "bios"])
        .expect_diskcast_error()
        .expect_stderr_all(&["hyperv", "UEFI"]);
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "azure", "-O", "qcow2"])
        .expect_diskcast_error()
        .expect_stderr_all(&["contradicts --profile azure"]);
    assert_no_output(&out);
}
