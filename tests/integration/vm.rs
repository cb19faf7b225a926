//! `diskcast vm`: container images and root filesystems made into bootable disks, judged
//! by booting them under QEMU with OVMF (the marker an init script prints on the serial
//! console) and by qemu-img check, sgdisk -v, e2fsck -fn, fsck.fat -n, debugfs and mtools.

use crate::support::{
    Bus, Firmware, assert_no_output, boot_to_marker, dc, dc_ok, qemu_check_clean, qemu_img, s, test_kernel, tmp,
    tool_text,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

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
pub(crate) fn busybox_root(dir: &Path) {
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
    tool_text("umoci", &["init", "--layout", &s(&layout)]);
    tool_text("umoci", &["new", "--image", &image]);
    let l1 = work.join("l1");
    busybox_root(&l1);
    tool_text("umoci", &["insert", "--rootless", "--image", &image, &s(&l1), "/"]);
    let init = work.join("init");
    std::fs::write(&init, init_script(marker)).unwrap();
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    tool_text("umoci", &["insert", "--rootless", "--image", &image, &s(&init), "/sbin/init"]);
    tool_text("umoci", &["insert", "--rootless", "--image", &image, "--whiteout", "/etc/removed-later"]);
    tool_text(
        "umoci",
        &["config", "--image", &image, "--config.entrypoint", "/bin/sh", "--os", "linux", "--architecture", "amd64"],
    );
    reference
}

/// The partitions of a written disk, from `diskcast vm --output json`.
pub(crate) fn partitions(summary: &Value) -> Vec<(String, u64, u64)> {
    summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap()))
        .collect()
}

/// Copies `len` bytes at `start` of `raw` into a file of its own.
pub(crate) fn cut(raw: &Path, start: u64, len: u64, to: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(raw).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    // Sparse: a sparse format's disk is 8 GiB, nearly all of it zeros.
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut src = f.take(len);
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            std::io::Write::write_all(&mut out, &buf[..n]).unwrap();
        }
        done += n as u64;
    }
    out.set_len(done).unwrap();
    assert_eq!(done, len, "{} is shorter than its partition table says", raw.display());
}

/// What independent tools say of a written disk: sgdisk -v on a raw copy, e2fsck -fn on
/// the root, fsck.fat -n on the ESP, and the loader entry and files on the ESP (mtools).
/// The summary's `arch` says which root type (sgdisk's 8304 x86-64, 8305 ARM64) and
/// removable-media loader (BOOTX64.EFI, BOOTAA64.EFI) to expect.
/// Returns the paths of the extracted (root, esp) images.
pub(crate) fn check_disk(disk: &Path, fmt: &str, summary: &Value, work: &Path) -> (PathBuf, PathBuf) {
    let (root_code, loader) = match summary["arch"].as_str() {
        Some("arm64") => ("8305", "::/EFI/BOOT/BOOTAA64.EFI"),
        _ => ("8304", "::/EFI/BOOT/BOOTX64.EFI"),
    };
    let raw = work.join("check.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", &s(disk), &s(&raw)]);
    let v = tool_text("sgdisk", &["-v", &s(&raw)]);
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let p = tool_text("sgdisk", &["-p", &s(&raw)]);
    assert!(p.contains("EF00") && p.contains(root_code), "ESP and {root_code} root types expected:\n{p}");
    let parts = partitions(summary);
    let (_, es, el) = parts.iter().find(|p| p.0 == "esp").cloned().unwrap();
    let (_, rs, rl) = parts.iter().find(|p| p.0 == "root").cloned().unwrap();
    let (esp, root) = (work.join("esp.img"), work.join("root.img"));
    cut(&raw, es, el, &esp);
    cut(&raw, rs, rl, &root);
    std::fs::remove_file(&raw).unwrap();
    tool_text("e2fsck", &["-fn", &s(&root)]);
    tool_text("fsck.fat", &["-n", &s(&esp)]);
    let mtools = |args: &[&str]| {
        let out =
            Command::new(args[0]).args(&args[1..]).env("MTOOLS_SKIP_CHECK", "1").output().expect("mtools is required");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = mtools(&["mdir", "-/", "-b", "-i", &s(&esp), "::/"]);
    for f in [loader, "::/loader/loader.conf", "::/loader/entries/diskcast.conf", "::/diskcast/vmlinuz"] {
        assert!(listing.lines().any(|l| l.eq_ignore_ascii_case(f)), "{f} missing on the ESP:\n{listing}");
    }
    let entry = mtools(&["mtype", "-i", &s(&esp), "::/loader/entries/diskcast.conf"]);
    let cmdline = summary["cmdline"].as_str().unwrap();
    assert!(entry.contains(&format!("options {cmdline}")), "{entry}");
    let root_uuid = summary["partitions"][1]["partuuid"].as_str().unwrap();
    assert!(cmdline.starts_with(&format!("root=PARTUUID={root_uuid} ")), "{cmdline}");
    (root, esp)
}

/// What `debugfs -R CMD IMAGE` prints on stdout (its banner goes to stderr).
pub(crate) fn debugfs(img: &Path, cmd: &str) -> String {
    let out = Command::new("timeout")
        .args(["-k", "5", "60", "debugfs", "-R", cmd, &s(img)])
        .output()
        .expect("debugfs is required");
    assert!(out.status.success(), "debugfs -R {cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    tool_text("tar", &["-cf", &s(&tar), "-C", &s(&root), "."]);
    let out = t.path().join("vm.qcow2");
    dc(&["vm", &s(&tar), "-o", &s(&out), "-O", "qcow2"])
        .expect_diskcast_error()
        .expect_stderr_all(&["no kernel in the image; pass --kernel"]);
    assert_no_output(&out);
    dc(&["vm", &s(&tar), "-o", &s(&out.with_extension("vhdx")), "--profile", "hyperv", "--boot", "bios"])
        .expect_diskcast_error()
        .expect_stderr_all(&["hyperv", "UEFI"]);
    // A hybrid disk boots UEFI as well: Hyper-V takes it.
    let hybrid = t.path().join("hybrid.vhdx");
    let k = s(&test_kernel());
    dc_ok(&["vm", &s(&tar), "-o", &s(&hybrid), "--profile", "hyperv", "--boot", "hybrid", "--kernel", &k]);
    qemu_img(&["check", "-f", "vhdx", &s(&hybrid)]);
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "azure", "-O", "qcow2"])
        .expect_diskcast_error()
        .expect_stderr_all(&["contradicts --profile azure"]);
    for (size, why) in [("66M", "too small"), ("70M", "the root partition gets")] {
        dc(&["vm", &s(&tar), "-o", &s(&out), "--kernel", &s(&test_kernel()), "--size", size])
            .expect_diskcast_error()
            .expect_stderr_all(&["--size", why]);
    }
    assert_no_output(&out);
}

/// Makes an OCI image of directory `root` (one layer) with umoci, with `entrypoint` and
/// `cmd` in its config. Returns `oci:DIR:TAG`.
fn oci_of_dir(work: &Path, root: &Path, name: &str, config: &[&str]) -> String {
    let layout = work.join(name);
    let image = format!("{}:t", s(&layout));
    tool_text("umoci", &["init", "--layout", &s(&layout)]);
    tool_text("umoci", &["new", "--image", &image]);
    tool_text("umoci", &["insert", "--rootless", "--image", &image, &s(root), "/"]);
    let mut args = vec!["config", "--image", &image, "--os", "linux", "--architecture", "amd64"];
    args.extend(config);
    tool_text("umoci", &args);
    format!("oci:{image}")
}

pub(crate) fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// debugfs `stat` of `path`: (mode bits as printed, size).
pub(crate) fn stat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("stat {path}"))
}

#[test]
fn guest_is_prepared_for_a_vm_on_the_tree_not_the_source() {
    let t = tmp();
    let root = t.path().join("root");
    busybox_root(&root);
    write(&root, "/usr/lib/systemd/systemd", "not really systemd\n");
    write(&root, "/usr/lib/systemd/systemd-networkd", "not really networkd\n");
    write(&root, "/usr/lib/systemd/system/systemd-networkd.service", "[Unit]\n");
    write(&root, "/usr/lib/systemd/system/systemd-networkd.socket", "[Unit]\n");
    write(&root, "/usr/sbin/sshd", "not really sshd\n");
    write(&root, "/etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n");
    write(
        &root,
        "/etc/fstab",
        "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/dev/sdb1 /data ext4 defaults 0 2\n/dev/sda1 / ext4 ro 0 1\n",
    );
    write(&root, "/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(&root, "/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n");
    write(&root, "/etc/hostname", "container\n");
    let image = oci_of_dir(
        t.path(),
        &root,
        "sd",
        &[
            "--config.entrypoint",
            "/usr/bin/app",
            "--config.entrypoint",
            "--flag",
            "--config.cmd",
            "arg with space",
            "--config.cmd",
            "$HOME",
            "--config.env",
            "MODE=vm",
            "--config.workingdir",
            "/srv",
        ],
    );
    let key = t.path().join("id.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiskcastTestKeyOnly test@diskcast\n").unwrap();
    let hash = "$6$saltsalt$QvIyQ1mXkX0fDiskcastTestHashNotARealOne";
    let disk = t.path().join("vm.raw");
    let kernel = s(&test_kernel());
    let r = dc_ok(&[
        "vm",
        &image,
        "-o",
        &s(&disk),
        "--kernel",
        &kernel,
        "--hostname",
        "vm-test",
        "--root-password-hash",
        hash,
        "--ssh-key",
        &s(&key),
        "--run-entrypoint",
        "--output",
        "json",
    ]);
    assert!(
        !r.stderr.contains(hash) && !r.stdout_str().contains(hash),
        "the hash must never be printed\n{}",
        r.describe()
    );
    let summary = r.json();
    let (root_img, _esp) = check_disk(&disk, "raw", &summary, t.path());
    let (root_uuid, esp_uuid) = (
        summary["partitions"][1]["partuuid"].as_str().unwrap(),
        summary["partitions"][0]["partuuid"].as_str().unwrap(),
    );

    let fstab = debugfs(&root_img, "cat /etc/fstab");
    assert!(fstab.contains(&format!("PARTUUID={root_uuid}\t/\text4")), "{fstab}");
    assert!(fstab.contains(&format!("PARTUUID={esp_uuid}\t/boot/efi\tvfat")), "{fstab}");
    assert!(fstab.contains("/dev/sdb1 /data ext4") && !fstab.contains("/dev/sda1"), "{fstab}");
    assert!(stat(&root_img, "/boot/efi").contains("Type: directory"));
    assert!(
        stat(&root_img, "/etc/machine-id").contains("Size: 0\n")
            || stat(&root_img, "/etc/machine-id").contains("Size: 0 ")
    );
    assert!(!debugfs(&root_img, "ls /var/lib/dbus").contains("machine-id"));
    assert_eq!(debugfs(&root_img, "cat /etc/hostname").lines().last(), Some("vm-test"));
    assert!(debugfs(&root_img, "cat /etc/hosts").contains("127.0.1.1\tvm-test"));
    let shadow = debugfs(&root_img, "cat /etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with(&format!("root:{hash}:"))), "{shadow}");
    assert!(shadow.contains("nobody:*:19000"), "{shadow}");
    assert!(stat(&root_img, "/root/.ssh").contains("Mode:  0700"), "{}", stat(&root_img, "/root/.ssh"));
    let st = stat(&root_img, "/root/.ssh/authorized_keys");
    assert!(st.contains("Mode:  0600") && st.contains("User:     0"), "{st}");
    assert!(
        debugfs(&root_img, "cat /root/.ssh/authorized_keys")
            .contains("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiskcastTestKeyOnly")
    );
    let net = debugfs(&root_img, "cat /etc/systemd/network/80-diskcast-dhcp.network");
    assert!(net.contains("[Match]") && net.contains("DHCP=yes"), "{net}");
    let link = stat(&root_img, "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service");
    assert!(
        link.contains("Type: symlink") && link.contains("/usr/lib/systemd/system/systemd-networkd.service"),
        "{link}"
    );
    let unit = debugfs(&root_img, "cat /etc/systemd/system/diskcast-entrypoint.service");
    assert!(unit.contains(r#"ExecStart="/usr/bin/app" "--flag" "arg with space" "$$HOME""#), "{unit}");
    assert!(unit.contains("Environment=\"MODE=vm\"") && unit.contains("WorkingDirectory=/srv"), "{unit}");
    assert!(
        stat(&root_img, "/etc/systemd/system/multi-user.target.wants/diskcast-entrypoint.service")
            .contains("Type: symlink")
    );
    // The source image is untouched: flattening it again gives the old files.
    let old = dc_ok(&["cat", &image, "/etc/hostname"]).stdout_str();
    assert_eq!(old, "container\n");
}

#[test]
fn ifupdown_guests_get_a_stanza_and_entrypoints_need_systemd_and_an_image() {
    let t = tmp();
    let root = t.path().join("root");
    busybox_root(&root);
    write(&root, "/sbin/ifup", "not really ifup\n");
    write(&root, "/etc/network/interfaces", "source /etc/network/interfaces.d/*\n");
    let tar = t.path().join("root.tar");
    tool_text("tar", &["-cf", &s(&tar), "-C", &s(&root), "."]);
    let disk = t.path().join("vm.raw");
    let kernel = s(&test_kernel());
    let summary = dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--kernel", &kernel, "--output", "json"]).json();
    assert!(summary["cmdline"].as_str().unwrap().contains(" net.ifnames=0"), "{summary}");
    let (root_img, _) = check_disk(&disk, "raw", &summary, t.path());
    let ifaces = debugfs(&root_img, "cat /etc/network/interfaces");
    assert!(
        ifaces.contains("source /etc/network/interfaces.d/*") && ifaces.contains("iface eth0 inet dhcp"),
        "{ifaces}"
    );

    let out = t.path().join("no.raw");
    dc(&["vm", &s(&tar), "-o", &s(&out), "--kernel", &kernel, "--run-entrypoint"])
        .expect_diskcast_error()
        .expect_stderr_all(&["not a container image"]);
    let image = oci_of_dir(t.path(), &root, "nosd", &["--config.cmd", "/bin/sh"]);
    dc(&["vm", &image, "-o", &s(&out), "--kernel", &kernel, "--run-entrypoint"])
        .expect_diskcast_error()
        .expect_stderr_all(&["no systemd"]);
    dc(&["vm", &image, "-o", &s(&out), "--kernel", &kernel, "--hostname", "bad_name"])
        .expect_diskcast_error()
        .expect_stderr_all(&["--hostname"]);
    assert_no_output(&out);
}

/// A busybox guest as a tar (one boot per format needs no image layers).
fn guest_tar(work: &Path, marker: &str) -> PathBuf {
    let root = work.join("root");
    busybox_root(&root);
    std::fs::remove_file(root.join("etc/removed-later")).unwrap();
    write(&root, "/sbin/init", &init_script(marker));
    std::fs::set_permissions(root.join("sbin/init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tar = work.join("root.tar");
    tool_text("tar", &["--owner=0", "--group=0", "-cf", &s(&tar), "-C", &s(&root), "."]);
    tar
}

/// Writes the busybox guest with `args` (format or profile) into `work` and judges it with
/// qemu-img check (`check`: qemu checks this format), qemu-img info, sgdisk, e2fsck and
/// fsck.fat; returns `qemu-img info`, the summary and the disk. These disks are not booted
/// here: each profile's output boots on its platform's bus in vm_bus.rs (esxi on pvscsi,
/// VDI on AHCI), and Hyper-V's VMBus cannot be emulated (azure, hyperv).
fn format_written(fmt: &str, qemu_fmt: &str, args: &[&str], check: bool, work: &Path) -> (Value, Value, PathBuf) {
    let tar = guest_tar(work, "unused");
    let disk = work.join(format!("vm.{fmt}"));
    let kernel = s(&test_kernel());
    let mut all =
        vec!["vm", tar.to_str().unwrap(), "-o", disk.to_str().unwrap(), "--kernel", &kernel, "--output", "json"];
    all.extend(args);
    let summary = dc_ok(&all).json();
    assert_eq!(summary["format"], fmt, "{summary}");
    if check {
        let r = qemu_img(&["check", "-f", qemu_fmt, &s(&disk)]);
        assert!(r.stdout_str().contains("No errors were found"), "{}", r.describe());
    }
    let info = qemu_img(&["info", "-f", qemu_fmt, "--output=json", &s(&disk)]).json();
    assert_eq!(info["virtual-size"].as_u64(), summary["virtual-size"].as_u64(), "{info}");
    check_disk(&disk, qemu_fmt, &summary, work);
    (info, summary, disk)
}

/// Hyper-V and Azure attach disks through VMBus (hv_storvsc), which QEMU cannot emulate:
/// the disk is booted nowhere, and its initramfs (listed by GNU cpio) must load the
/// Hyper-V storage stack, which Debian's cloud kernel has as modules.
fn assert_hv_storvsc_in_initramfs(disk: &Path, fmt: &str, summary: &Value, work: &Path) {
    let listing = crate::vm_bus::initramfs_listing(disk, fmt, summary, work);
    for m in ["/hv/hv_vmbus.ko", "/scsi/hv_storvsc.ko", "/scsi/sd_mod.ko"] {
        assert!(listing.lines().any(|l| l.ends_with(m)), "{m} not in the initramfs:\n{listing}");
    }
    dc_ok(&["check", "--profile", summary["profile"].as_str().unwrap(), &s(disk)]);
}

#[test]
fn esxi_profile_writes_a_stream_optimized_vmdk() {
    let t = tmp();
    let (info, summary, _) = format_written("vmdk", "vmdk", &["--profile", "esxi"], true, t.path());
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
    assert_eq!(summary["profile"], "esxi");
}

#[test]
fn azure_profile_writes_a_fixed_vhd_of_whole_mib_with_hv_storvsc() {
    let t = tmp();
    // 100 000 000 bytes is not a whole MiB: the profile rounds it up.
    let (info, summary, disk) =
        format_written("vhd", "vpc", &["--profile", "azure", "--size", "100000000"], false, t.path());
    let size = info["virtual-size"].as_u64().unwrap();
    assert_eq!(size, 96 << 20, "{info}");
    // A fixed VHD is the disk's bytes plus a 512-byte footer (sparse on the host).
    let file = info["children"][0]["info"]["virtual-size"].as_u64().unwrap();
    assert_eq!(file, size + 512, "{info}");
    assert_hv_storvsc_in_initramfs(&disk, "vpc", &summary, t.path());
}

#[test]
fn hyperv_profile_writes_a_vhdx_with_hv_storvsc() {
    let t = tmp();
    let (_, summary, disk) = format_written("vhdx", "vhdx", &["--profile", "hyperv"], true, t.path());
    assert_hv_storvsc_in_initramfs(&disk, "vhdx", &summary, t.path());
}

#[test]
fn qemu_profile_writes_zstd_compressed_qcow2() {
    let t = tmp();
    let tar = guest_tar(t.path(), "unused");
    let disk = t.path().join("vm.qcow2");
    let summary = dc_ok(&[
        "vm",
        &s(&tar),
        "-o",
        &s(&disk),
        "--kernel",
        &s(&test_kernel()),
        "--profile",
        "qemu",
        "--output",
        "json",
    ])
    .json();
    assert_eq!((summary["format"].as_str(), summary["profile"].as_str()), (Some("qcow2"), Some("qemu")));
    let check = qemu_check_clean(&disk);
    assert!(check["compressed-clusters"].as_u64().unwrap_or(0) > 0, "{check}");
    let info = qemu_img(&["info", "--output=json", &s(&disk)]).json();
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd", "{info}");
    check_disk(&disk, "qcow2", &summary, t.path());
}

/// The Debian image's ENTRYPOINT, run at boot by the service `--run-entrypoint` writes:
/// waits for the ESP to be mounted by the fstab diskcast wrote, then reports what the
/// guest sees.
const DEBIAN_MARKER_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/console 2>&1
for i in $(seq 90); do findmnt /boot/efi >/dev/null && break; sleep 1; done
echo "guest: os=$(. /etc/os-release; echo $ID-$VERSION_ID) root=$(findmnt -no SOURCE /) efi=$(findmnt -no FSTYPE /boot/efi) machine-id=$(cat /etc/machine-id) hostname=$(cat /etc/hostname) networkd=$(systemctl is-active systemd-networkd) env=$MARKER_ENV args=$1,$2"
echo "guest: rootfs-bytes=$(findmnt -bno SIZE /) repart=$(systemctl is-active systemd-repart)"
echo "DISKCAST_VM_DEBIAN_OK"
"#;

/// A minimal Debian bookworm root filesystem with the generic kernel, initramfs-tools,
/// systemd and `more` packages (",pkg,..."), as a tar made by mmdebstrap.
pub(crate) fn debian_rootfs(tar: &Path, more: &str) {
    let start = Instant::now();
    // Not tool_text's 300 s: on a loaded machine (8 jobs on 2 cores) mmdebstrap alone took
    // 7.5 minutes.
    crate::support::tool_out(
        "timeout",
        &[
            "1800",
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            &format!("--include=linux-image-amd64,initramfs-tools,systemd-sysv{more}"),
            "bookworm",
            &s(tar),
        ],
    );
    eprintln!("mmdebstrap: {:.0} s", start.elapsed().as_secs_f64());
}

/// The longest test of the suite (about 3.5 minutes here: mmdebstrap 150-200 s, the
/// systemd boot 30 s): a real distribution image, as an OCI image made by umoci, boots
/// with its own kernel and initramfs, and its ENTRYPOINT runs as a systemd service. The
/// 8 GiB disk is enlarged by `qemu-img resize +2G` before the boot: systemd-repart and
/// systemd-growfs grow the root to it (the guest reports the size of `/`).
#[test]
fn debian_image_with_its_own_kernel_and_initramfs_boots_systemd() {
    let t = tmp();
    let tar = t.path().join("debian.tar");
    let start = Instant::now();
    debian_rootfs(&tar, "");
    let extra = t.path().join("extra");
    write(&extra, "/usr/local/sbin/diskcast-marker", DEBIAN_MARKER_SCRIPT);
    std::fs::set_permissions(
        extra.join("usr/local/sbin/diskcast-marker"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    tool_text(
        "tar",
        &["--owner=0", "--group=0", "-rf", &s(&tar), "-C", &s(&extra), "./usr/local/sbin/diskcast-marker"],
    );
    let layout = t.path().join("oci");
    let image = format!("{}:bookworm", s(&layout));
    tool_text("umoci", &["init", "--layout", &s(&layout)]);
    tool_text("umoci", &["new", "--image", &image]);
    tool_text("umoci", &["raw", "add-layer", "--image", &image, &s(&tar)]);
    std::fs::remove_file(&tar).unwrap();
    tool_text(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.entrypoint",
            "/usr/local/sbin/diskcast-marker",
            "--config.cmd",
            "one",
            "--config.cmd",
            "two words",
            "--config.env",
            "MARKER_ENV=from-the-image-config",
        ],
    );
    let key = t.path().join("id.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiskcastTestKeyOnly test@diskcast\n").unwrap();
    let disk = t.path().join("debian.qcow2");
    let t0 = Instant::now();
    let summary = dc_ok(&[
        "vm",
        &format!("oci:{image}"),
        "-o",
        &s(&disk),
        "-O",
        "qcow2",
        "--hostname",
        "debvm",
        "--run-entrypoint",
        "--ssh-key",
        &s(&key),
        "--root-password-hash",
        "$6$saltsalt$notarealhash",
        "--output",
        "json",
    ])
    .json();
    eprintln!("diskcast vm: {:.1} s", t0.elapsed().as_secs_f64());
    let kernel = summary["kernel"].as_str().unwrap();
    assert!(kernel.contains("/boot/vmlinuz-") && kernel.contains("initramfs /boot/initrd.img-"), "{summary}");
    let version = summary["kernel-version"].as_str().unwrap();
    assert_eq!(summary["kernel-path"].as_str().unwrap(), format!("/boot/vmlinuz-{version}"));
    assert_eq!(summary["initrd"].as_str().unwrap(), format!("/boot/initrd.img-{version}"));
    assert!(summary["loader"].as_str().unwrap().contains("systemd-bootx64.efi"), "{summary}");
    qemu_check_clean(&disk);
    check_disk(&disk, "qcow2", &summary, t.path());
    assert_eq!(summary["first-boot-growth"], "systemd-repart", "{summary}");
    assert_eq!(summary["virtual-size"].as_u64(), Some(8 << 30), "{summary}");
    qemu_img(&["resize", &s(&disk), "+2G"]);
    let console = boot(&disk, "qcow2", "DISKCAST_VM_DEBIAN_OK", t.path());
    let line = console.lines().find(|l| l.starts_with("guest: os=")).unwrap_or_else(|| panic!("{console}"));
    assert!(line.contains("os=debian-12") && line.contains("root=/dev/nvme0n1p2"), "{line}");
    assert!(line.contains("efi=vfat"), "the ESP from diskcast's fstab is mounted: {line}");
    assert!(line.contains("hostname=debvm") && line.contains("networkd=active"), "{line}");
    assert!(line.contains("env=from-the-image-config args=one,two words"), "the entrypoint service: {line}");
    let id = line.split("machine-id=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "systemd made a new machine id on first boot: {line}"
    );
    let grown = console.lines().find(|l| l.starts_with("guest: rootfs-bytes=")).unwrap_or_else(|| panic!("{console}"));
    assert!(grown.contains("repart=active"), "{grown}");
    assert!(console.contains("Grow File System on /"), "systemd-growfs@-.service did not run:\n{console}");
    let bytes: u64 = grown
        .split("rootfs-bytes=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{grown}"));
    // An 8 GiB disk cannot hold more than 8 GiB of root; the grown one holds ~9.7 GiB
    // (10 GiB less the ESP and ext4's metadata).
    assert!(bytes > 9 << 30, "the root did not grow to the enlarged disk: {grown}");
    eprintln!("{grown}");
    eprintln!("whole test: {:.0} s", start.elapsed().as_secs_f64());
}

/// Copies a file out of a FAT image with mtools.
pub(crate) fn mcopy_out(esp: &Path, path: &str, to: &Path) {
    let out = Command::new("mcopy")
        .args(["-n", "-i", &s(esp), &format!("::{path}"), &s(to)])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("mtools is required");
    assert!(out.status.success(), "mcopy {path}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn kernel_initramfs_and_loader_found_inside_image_layers() {
    let t = tmp();
    let root = t.path().join("root");
    busybox_root(&root);
    // Layer 2 carries two kernels (the newer wins), its initramfs and systemd-boot, and
    // Debian's /vmlinuz link to the older one.
    let l2 = t.path().join("l2");
    let kernel = test_kernel();
    let (old, new) = ("6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64");
    write(&l2, &format!("/boot/vmlinuz-{old}"), "an older kernel\n");
    std::fs::copy(&kernel, l2.join(format!("boot/vmlinuz-{new}"))).unwrap();
    write(&l2, &format!("/boot/initrd.img-{new}"), "an initramfs of the newer kernel\n");
    std::os::unix::fs::symlink(format!("boot/vmlinuz-{old}"), l2.join("vmlinuz")).unwrap();
    let loader = l2.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    std::fs::create_dir_all(loader.parent().unwrap()).unwrap();
    let mut efi = std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").expect("systemd-boot-efi is required");
    efi.extend_from_slice(b"diskcast test: the image's own copy");
    std::fs::write(&loader, &efi).unwrap();
    let image = oci_of_dir(t.path(), &root, "k", &[]);
    let layout = image.trim_start_matches("oci:").to_string();
    tool_text("umoci", &["insert", "--rootless", "--image", &layout, &s(&l2), "/"]);
    let disk = t.path().join("vm.vmdk");
    let summary = dc_ok(&["vm", &image, "-o", &s(&disk), "-O", "vmdk", "--output", "json"]).json();
    assert_eq!(summary["kernel-path"], format!("/boot/vmlinuz-{new}"), "{summary}");
    assert_eq!(summary["initrd"], format!("/boot/initrd.img-{new}"), "{summary}");
    assert!(summary["loader"].as_str().unwrap().starts_with("the image's"), "{summary}");
    let (_, esp) = check_disk(&disk, "vmdk", &summary, t.path());
    for (inside, want) in [
        ("/diskcast/vmlinuz", std::fs::read(&kernel).unwrap()),
        ("/diskcast/initrd.img", b"an initramfs of the newer kernel\n".to_vec()),
        ("/EFI/BOOT/BOOTX64.EFI", efi.clone()),
    ] {
        let out = t.path().join("out.bin");
        let _ = std::fs::remove_file(&out);
        mcopy_out(&esp, inside, &out);
        assert!(std::fs::read(&out).unwrap() == want, "{inside} on the ESP differs from the image's file");
    }
    let entry = {
        let out = t.path().join("entry.conf");
        mcopy_out(&esp, "/loader/entries/diskcast.conf", &out);
        std::fs::read_to_string(out).unwrap()
    };
    assert!(entry.contains("initrd /diskcast/initrd.img\n"), "{entry}");
}

#[test]
fn uefi_disks_are_byte_identical_under_source_date_epoch() {
    let t = tmp();
    let marker = "unused";
    let tar = guest_tar(t.path(), marker);
    let kernel = s(&test_kernel());
    let (a, b) = (t.path().join("a.vhdx"), t.path().join("b.vhdx"));
    for out in [&a, &b] {
        crate::support::dc_epoch(
            Some("1700000000"),
            &["vm", &s(&tar), "-o", &s(out), "--profile", "hyperv", "--kernel", &kernel, "--hostname", "same"],
        )
        .expect_ok();
    }
    assert!(crate::support::read(&a) == crate::support::read(&b), "two runs with SOURCE_DATE_EPOCH differ");
    qemu_img(&["check", "-f", "vhdx", &s(&a)]);
    let c = t.path().join("c.vhdx");
    crate::support::dc_epoch(None, &["vm", &s(&tar), "-o", &s(&c), "--profile", "hyperv", "--kernel", &kernel])
        .expect_ok();
    assert!(crate::support::read(&a) != crate::support::read(&c), "without SOURCE_DATE_EPOCH the ids are random");
}
