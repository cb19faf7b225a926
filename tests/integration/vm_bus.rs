//! `diskcast vm` on the bus each platform uses: Debian's cloud kernel has virtio_blk,
//! virtio_scsi and vmw_pvscsi as modules (NVMe built in), so a disk for QEMU or ESXi
//! boots only with an initramfs that loads them. Judged by booting under QEMU on that
//! bus, by GNU cpio listing the initramfs diskcast built, and by `check --profile`.

use crate::support::{
    Bus, Firmware, assert_no_output, boot_to_marker, dc, dc_ok, generic_kernel_dir, kernel_in, qemu_check_clean,
    qemu_img, s, test_kernel, test_kernel_dir, tmp, tool_text,
};
use crate::vm::check_disk;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A stuck boot ("Waiting for root device") shows within this under TCG; good ones take
/// 10-20 s.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// A busybox root whose `/sbin/init` prints `marker`, the kernel release and the block
/// devices it sees, then powers off; `extra` files are added (path, content).
pub(crate) fn guest(work: &Path, marker: &str, extra: &[(&str, &[u8])]) -> PathBuf {
    let root = work.join("root");
    for d in ["bin", "sbin", "etc", "dev", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static (/bin/busybox)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         [ -c /dev/null ] || /bin/busybox mount -t devtmpfs devtmpfs /dev\nexec >/dev/console 2>&1\n\
         echo \"{marker} kernel=$(/bin/busybox uname -r) root=$(/bin/busybox awk '$2==\"/\"{{print $1}}' /proc/mounts | /bin/busybox tail -1)\"\n\
         /bin/busybox sync\n/bin/busybox poweroff -f\n"
    );
    std::fs::write(root.join("sbin/init"), init).unwrap();
    std::fs::set_permissions(root.join("sbin/init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (path, bytes) in extra {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let tar = work.join("root.tar");
    tool_text("tar", &["--owner=0", "--group=0", "-cf", &s(&tar), "-C", &s(&root), "."]);
    tar
}

fn version() -> String {
    let k = test_kernel();
    k.file_name().unwrap().to_str().unwrap().strip_prefix("vmlinuz-").unwrap().to_string()
}

/// A copy (by mtools) of the file `path` on the disk's ESP, which the summary places.
fn esp_copy(disk: &Path, fmt: &str, summary: &Value, work: &Path, path: &str) -> PathBuf {
    let raw = work.join("disk.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", &s(disk), &s(&raw)]).expect_ok();
    let esp = &summary["partitions"][0];
    let (start, size) = (esp["start"].as_u64().unwrap(), esp["size"].as_u64().unwrap());
    let part = work.join("esp.img");
    tool_text(
        "dd",
        &[
            &format!("if={}", s(&raw)),
            &format!("of={}", s(&part)),
            "bs=1M",
            &format!("skip={}", start >> 20),
            &format!("count={}", size >> 20),
        ],
    );
    let to = work.join(path.rsplit('/').next().unwrap());
    let out = Command::new("mcopy")
        .args(["-n", "-i", &s(&part), &format!("::{path}"), &s(&to)])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "mcopy: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&raw).unwrap();
    to
}

/// The initramfs on the disk's ESP, listed by GNU cpio (gunzip'd by zcat).
pub(crate) fn initramfs_listing(disk: &Path, fmt: &str, summary: &Value, work: &Path) -> String {
    let initrd = esp_copy(disk, fmt, summary, work, "/diskcast/initrd.img");
    tool_text("sh", &["-c", &format!("zcat {} | cpio -t --quiet", s(&initrd))])
}

/// `vm TAR -o OUT --profile PROFILE --kernel` (the cloud kernel): its JSON summary.
fn vm_json(tar: &Path, out: &Path, profile: &str) -> Value {
    let (t, o, k) = (s(tar), s(out), s(&test_kernel()));
    dc_ok(&["vm", &t, "-o", &o, "--profile", profile, "--kernel", &k, "--output", "json"]).json()
}

fn boot(disk: &Path, fmt: &str, bus: Bus, marker: &str, work: &Path) -> String {
    let fw = if bus == Bus::Pvscsi { Firmware::Bios } else { Firmware::Uefi };
    let t = Instant::now();
    let console = boot_to_marker(disk, fmt, fw, bus, marker, work, BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{fmt} on {bus:?}: booted to the marker in {:.1} s", t.elapsed().as_secs_f64());
    console
}

/// The case: Debian's cloud kernel by `--kernel` (its modules beside it, as the
/// package unpacks), `--profile qemu`, booted on virtio-blk. Before, the disk had no
/// initramfs and hung at "Waiting for root device".
#[test]
fn cloud_kernel_boots_on_virtio_blk_with_a_built_initramfs() {
    let t = tmp();
    let marker = "DISKCAST_BUS_VIRTIO_OK";
    let tar = guest(t.path(), marker, &[]);
    let disk = t.path().join("vm.qcow2");
    let k = s(&test_kernel());
    let summary =
        dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--profile", "qemu", "--kernel", &k, "--output", "json"]).json();
    let drivers = summary["drivers"].to_string();
    assert!(drivers.contains("initramfs built") && drivers.contains("virtio_blk"), "{summary}");
    let listing = initramfs_listing(&disk, "qcow2", &summary, t.path());
    let v = version();
    for f in [
        "init".to_string(),
        "bin/busybox".into(),
        format!("lib/modules/{v}/kernel/drivers/block/virtio_blk.ko"),
        format!("lib/modules/{v}/kernel/drivers/virtio/virtio_pci.ko"),
        format!("lib/modules/{v}/kernel/drivers/virtio/virtio_ring.ko"),
        format!("lib/modules/{v}/kernel/drivers/scsi/virtio_scsi.ko"),
        format!("lib/modules/{v}/modules.builtin"),
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} not in the initramfs:\n{listing}");
    }
    // NVMe is built into this kernel: no module for it.
    assert!(!listing.contains("nvme"), "{listing}");
    dc_ok(&["check", "--profile", "qemu", &s(&disk)]);
    let console = boot(&disk, "qcow2", Bus::Virtio, marker, t.path());
    assert!(console.contains(&format!("{marker} kernel={v} root=/dev/vda2")), "{console}");
}

/// ESXi attaches disks on VMware's paravirtual SCSI: vmw_pvscsi and sd_mod are modules
/// of the cloud kernel, loaded by the built initramfs. Debian's OVMF has no PVSCSI
/// driver (its shell finds no disk), SeaBIOS has one: the disk is hybrid and boots BIOS.
/// Written as an OVA (`-o vm.ova`): GNU tar extracts the VMDK, `sha256sum -c` checks
/// the manifest, and the extracted disk is what boots.
#[test]
fn esxi_disk_boots_on_pvscsi() {
    let t = tmp();
    let marker = "DISKCAST_BUS_PVSCSI_OK";
    let tar = guest(t.path(), marker, &[]);
    let ova = t.path().join("vm.ova");
    let k = s(&test_kernel());
    let summary = dc_ok(&[
        "vm",
        &s(&tar),
        "-o",
        &s(&ova),
        "--profile",
        "esxi",
        "--boot",
        "hybrid",
        "--kernel",
        &k,
        "--output",
        "json",
    ])
    .json();
    assert!(summary["drivers"].to_string().contains("vmw_pvscsi"), "{summary}");
    dc_ok(&["check", "--profile", "esxi", &s(&ova)]);
    tool_text("tar", &["-xf", &s(&ova), "-C", &s(t.path())]);
    tool_text("sh", &["-c", &format!("cd {} && sha256sum -c --strict vm.mf", s(t.path()))]);
    let ovf = std::fs::read_to_string(t.path().join("vm.ovf")).unwrap();
    assert!(ovf.contains("<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>"), "{ovf}");
    let disk = t.path().join("vm-disk1.vmdk");
    let console = boot(&disk, "vmdk", Bus::Pvscsi, marker, t.path());
    // Partition 1 is the BIOS boot partition, 2 the ESP.
    assert!(console.contains(&format!("{marker} kernel={} root=/dev/sda3", version())), "{console}");
}

/// A plain disk's third bus, SATA on AHCI, which is also VirtualBox's default controller:
/// the VDI output boots there. Debian's generic kernel (linux-image-amd64 by `--kernel`,
/// its modules beside it as the package unpacks) has ahci, libahci, libata, sd_mod and
/// even ext4 as modules, so the initramfs diskcast builds loads the whole stack, crc32c
/// first (ext4 asks the crypto API for it, through a modprobe the initramfs does not
/// have). qemu-img checks the VDI; booted under OVMF on `-device ahci` + `ide-hd`.
#[test]
fn vdi_disk_boots_on_ahci_with_the_generic_kernel() {
    let t = tmp();
    let marker = "DISKCAST_BUS_AHCI_OK";
    let tar = guest(t.path(), marker, &[]);
    let disk = t.path().join("vm.vdi");
    let kernel = kernel_in(&generic_kernel_dir());
    let v = kernel.file_name().unwrap().to_str().unwrap().strip_prefix("vmlinuz-").unwrap().to_string();
    let summary = dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--kernel", &s(&kernel), "--output", "json"]).json();
    assert_eq!(summary["format"], "vdi", "{summary}");
    let drivers = summary["drivers"].to_string();
    assert!(drivers.contains("initramfs built") && drivers.contains("ahci"), "{summary}");
    assert_eq!(summary["warnings"].as_array().map(Vec::len), Some(0), "every plain bus is driven: {summary}");
    let r = qemu_img(&["check", "-f", "vdi", &s(&disk)]);
    assert!(r.stdout_str().contains("No errors were found"), "{}", r.describe());
    check_disk(&disk, "vdi", &summary, t.path());
    let listing = initramfs_listing(&disk, "vdi", &summary, t.path());
    let modules: Vec<&str> = listing.lines().filter(|l| l.ends_with(".ko")).collect();
    for m in [
        "ata/ahci.ko",
        "ata/libahci.ko",
        "ata/libata.ko",
        "scsi/sd_mod.ko",
        "fs/ext4/ext4.ko",
        "crypto/crc32c_generic.ko",
    ] {
        assert!(modules.iter().any(|l| l.ends_with(m)), "{m} not in the initramfs:\n{listing}");
    }
    let order = |m: &str| modules.iter().position(|l| l.ends_with(m)).unwrap();
    assert!(order("/libata.ko") < order("/ahci.ko") && order("crc32c_generic.ko") < order("/ext4.ko"), "{listing}");
    let console = boot(&disk, "vdi", Bus::Ahci, marker, t.path());
    assert!(console.contains(&format!("{marker} kernel={v} root=/dev/sda2")), "{console}");
}

/// KubeVirt runs the containerDisk's qcow2 on virtio-blk (its default) or virtio-scsi
/// (`bus: scsi`); the qemu profile's virtio-blk boot is above, so this one takes the
/// disk out of the image as a node would (`umoci unpack`) and boots it on virtio-scsi:
/// the built initramfs's virtio_scsi and sd_mod reach it.
#[test]
fn kubevirt_container_disk_boots_on_virtio_scsi() {
    let t = tmp();
    let marker = "DISKCAST_BUS_VIRTIO_SCSI_OK";
    let tar = guest(t.path(), marker, &[]);
    let layout = t.path().join("cd");
    let target = format!("oci:{}:disk", s(&layout));
    dc_ok(&["vm", &s(&tar), "-o", &target, "--profile", "kubevirt", "--kernel", &s(&test_kernel())]);
    let inspected: Value = serde_json::from_str(&tool_text("skopeo", &["inspect", &target])).unwrap();
    assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
    let bundle = t.path().join("bundle");
    tool_text("umoci", &["unpack", "--rootless", "--image", &format!("{}:disk", s(&layout)), &s(&bundle)]);
    let disk = bundle.join("rootfs/disk/disk.qcow2");
    qemu_check_clean(&disk);
    let console = boot(&disk, "qcow2", Bus::VirtioScsi, marker, t.path());
    assert!(console.contains(&format!("{marker} kernel={} root=/dev/sda2", version())), "{console}");
}

/// AWS (Nitro) attaches EBS volumes as NVMe: the aws profile's streamOptimized VMDK
/// boots there (NVMe and ext4 are built into the cloud kernel, so there is no
/// initramfs: the kernel mounts the root itself). With no initramfs and the kernel from
/// this machine, nothing on the disk said which drivers are built in, and `check
/// --profile aws` refused the disk `vm --profile aws` wrote (kernel-drivers-unknown):
/// the kernel's modules.builtin now goes beside it on the ESP (mtools reads it back,
/// equal to the package's).
#[test]
fn aws_disk_boots_on_nvme() {
    let t = tmp();
    let marker = "DISKCAST_BUS_NVME_OK";
    let tar = guest(t.path(), marker, &[]);
    let disk = t.path().join("vm.vmdk");
    let summary = vm_json(&tar, &disk, "aws");
    let info = qemu_img(&["info", "--output=json", &s(&disk)]).json();
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
    let builtin = esp_copy(&disk, "vmdk", &summary, t.path(), "/diskcast/modules.builtin");
    let package = test_kernel_dir().join(format!("lib/modules/{}/modules.builtin", version()));
    assert!(std::fs::read(&builtin).unwrap() == std::fs::read(&package).unwrap(), "modules.builtin differs");
    dc_ok(&["check", "--profile", "aws", &s(&disk)]);
    let console = boot(&disk, "vmdk", Bus::Nvme, marker, t.path());
    assert!(console.contains(&format!("{marker} kernel={} root=/dev/root", version())), "{console}");
}

/// Compute Engine's x86 machines attach the boot disk on virtio-scsi (the default disk
/// interface; NVMe only on newer machine types): the gce profile's `disk.raw`, taken out
/// of the tar.gz by GNU tar, boots there with the initramfs that loads virtio_scsi.
#[test]
fn gce_disk_raw_boots_on_virtio_scsi() {
    let t = tmp();
    let marker = "DISKCAST_BUS_GCE_OK";
    let tar = guest(t.path(), marker, &[]);
    let gce = t.path().join("image.tar.gz");
    let summary = vm_json(&tar, &gce, "gce");
    assert!(summary["drivers"].to_string().contains("virtio_scsi"), "{summary}");
    let x = t.path().join("gce");
    std::fs::create_dir(&x).unwrap();
    tool_text("tar", &["-xzSf", &s(&gce), "-C", &s(&x)]);
    let raw = x.join("disk.raw");
    dc_ok(&["check", "--profile", "gce", &s(&raw)]);
    let console = boot(&raw, "raw", Bus::VirtioScsi, marker, t.path());
    assert!(console.contains(&format!("{marker} kernel={} root=/dev/sda2", version())), "{console}");
}

/// A copy of the kernel's modules directory without the lines of `drop` in its index
/// (the kernel then has no such module).
fn trimmed_modules(work: &Path, drop: &str) -> PathBuf {
    let v = version();
    let from = test_kernel_dir().join("lib/modules").join(&v);
    let to = work.join("modules").join(&v);
    std::fs::create_dir_all(&to).unwrap();
    std::fs::copy(from.join("modules.builtin"), to.join("modules.builtin")).unwrap();
    let order = std::fs::read_to_string(from.join("modules.order")).unwrap();
    let kept: String = order.lines().filter(|l| !l.contains(drop)).map(|l| format!("{l}\n")).collect();
    assert_ne!(kept.len(), order.len(), "{drop} not in modules.order");
    std::fs::write(to.join("modules.order"), kept).unwrap();
    work.join("modules")
}

/// Where the kernel cannot drive the profile's bus, or a given initramfs lacks the
/// driver, vm refuses before writing anything, naming the driver and the fix.
#[test]
fn a_kernel_without_the_bus_driver_or_an_initramfs_without_it_is_refused_and_writes_nothing() {
    let t = tmp();
    let tar = guest(t.path(), "unused", &[]);
    let out = t.path().join("vm.vhdx");
    let k = s(&test_kernel());
    let modules = trimmed_modules(t.path(), "/hv/");
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "hyperv", "--kernel", &k, "--modules", &s(&modules)])
        .expect_diskcast_error()
        .expect_stderr_all(&[
            &format!("kernel {} ", version()),
            "cannot boot --profile hyperv on hv_storvsc (driver hv_vmbus)",
            "neither built in nor a module",
            "--kernel PATH --modules DIR",
        ]);
    assert_no_output(&out);
    // An initramfs made by GNU cpio with no modules in it.
    let dir = t.path().join("empty-initrd");
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/motd"), "no modules here\n").unwrap();
    let initrd = t.path().join("initrd.img");
    tool_text("sh", &["-c", &format!("cd {} && find . | cpio -o -H newc --quiet | gzip > {}", s(&dir), s(&initrd))]);
    let out = t.path().join("vm.qcow2");
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "qemu", "--kernel", &k, "--initrd", &s(&initrd)])
        .expect_diskcast_error()
        .expect_stderr_all(&[
            "lacks sd_mod, virtio_blk, virtio_pci, virtio_scsi",
            "drop --initrd and diskcast builds one",
        ]);
    assert_no_output(&out);
    // A plain disk needs one of virtio-blk, AHCI and NVMe: the cloud kernel has no AHCI,
    // which is a warning, not a refusal.
    let raw = t.path().join("vm.raw");
    dc_ok(&["vm", &s(&tar), "-o", &s(&raw), "--kernel", &k])
        .expect_stderr_all(&["warning: kernel", "has no driver for ahci (driver ahci)"]);
}

/// `check --profile qemu` on a disk whose kernel has virtio_blk only as a module and no
/// initramfs (the kernel alone on the ESP, its modules.builtin in the root filesystem):
/// refused with the bus and the modules. Before, check accepted it.
#[test]
fn check_profile_refuses_a_kernel_that_cannot_reach_a_virtio_disk() {
    let t = tmp();
    let v = version();
    let builtin = std::fs::read(test_kernel_dir().join(format!("lib/modules/{v}/modules.builtin"))).unwrap();
    let tar = guest(t.path(), "unused", &[(&format!("/lib/modules/{v}/modules.builtin"), &builtin)]);
    // The kernel alone in a directory: no modules beside it, so vm cannot build an
    // initramfs and only warns.
    let lone = t.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    let k = lone.join(format!("vmlinuz-{v}"));
    std::fs::copy(test_kernel(), &k).unwrap();
    let disk = t.path().join("old.qcow2");
    dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--profile", "qemu", "--kernel", &s(&k)])
        .expect_stderr_all(&["cannot tell which bus drivers it has"]);
    stdout_all(
        dc(&["check", "--profile", "qemu", &s(&disk)]).expect_code(4),
        &[
            "bus-driver-missing: qemu attaches disks on virtio-blk",
            &format!("kernel {v} (/diskcast/vmlinuz, no initramfs)"),
            "virtio-blk needs virtio_pci, virtio_blk",
            "Waiting for root device",
        ],
    );
    // Without modules.builtin anywhere, check cannot tell, and says so.
    let tar = guest(&t.path().join("bare"), "unused", &[]);
    let bare = t.path().join("bare.qcow2");
    dc_ok(&["vm", &s(&tar), "-o", &s(&bare), "--profile", "qemu", "--kernel", &s(&k)]);
    let r = dc(&["check", "--profile", "qemu", &s(&bare)]).expect_code(4);
    stdout_all(r, &["kernel-drivers-unknown", &format!("lib/modules/{v}/modules.builtin")]);
}

fn stdout_all(r: crate::support::Run, words: &[&str]) {
    let out = r.stdout_str();
    for w in words {
        assert!(out.contains(w), "stdout should contain {w:?}\n{}", r.describe());
    }
}

/// The output format follows OUT's name when -O is not given (vm, mkfs, mkdisk), a
/// contradiction is refused, and a sparse format's disk is 8 GiB while its file stays
/// small. Before, `-o disk.qcow2` without -O wrote a raw file.
#[test]
fn output_format_follows_the_name_and_sparse_disks_are_8_gib() {
    let t = tmp();
    let tar = guest(t.path(), "unused", &[]);
    let k = s(&test_kernel());
    let disk = t.path().join("disk.qcow2");
    dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--kernel", &k]);
    let info = qemu_img(&["info", "--output=json", &s(&disk)]).json();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert!(info["virtual-size"].as_u64().unwrap() >= 8 << 30, "{info}");
    let len = std::fs::metadata(&disk).unwrap().len();
    assert!(len < 64 << 20, "the 8 GiB qcow2 file takes {len} bytes");
    qemu_img(&["check", &s(&disk)]).expect_ok();
    // A raw disk (and a fixed VHD) stays as large as its content.
    let raw = t.path().join("disk.img");
    dc_ok(&["vm", &s(&tar), "-o", &s(&raw), "--kernel", &k]);
    let info = qemu_img(&["info", "--output=json", &s(&raw)]).json();
    assert_eq!(info["format"], "raw", "{info}");
    assert!(info["virtual-size"].as_u64().unwrap() < 1 << 30, "{info}");
    let out = t.path().join("x.qcow2");
    dc(&["vm", &s(&tar), "-o", &s(&out), "-O", "raw", "--kernel", &k])
        .expect_diskcast_error()
        .expect_stderr_all(&["-O raw contradicts the output's name", "which says qcow2"]);
    dc(&["vm", &s(&tar), "-o", &s(&out), "--profile", "esxi", "--kernel", &k])
        .expect_diskcast_error()
        .expect_stderr_all(&["says qcow2, but --profile esxi writes vmdk"]);
    assert_no_output(&out);
    let dir = t.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a"), "a file\n").unwrap();
    let fs = t.path().join("fs.vdi");
    dc_ok(&["mkfs", "ext4", &s(&dir), "-o", &s(&fs)]);
    assert_eq!(qemu_img(&["info", "--output=json", &s(&fs)]).json()["format"], "vdi");
    let bad = t.path().join("fs.vhdx");
    dc(&["mkfs", "ext4", &s(&dir), "-o", &s(&bad), "-O", "qcow2"])
        .expect_diskcast_error()
        .expect_stderr_all(&["-O qcow2 contradicts the output's name"]);
    assert_no_output(&bad);
    // `.img` names qcow2 files too (Ubuntu's cloud images): -O decides, nothing is refused.
    let img = t.path().join("fs.img");
    dc_ok(&["mkfs", "ext4", &s(&dir), "-o", &s(&img), "-O", "qcow2"]);
    assert_eq!(qemu_img(&["info", "--output=json", &s(&img)]).json()["format"], "qcow2");
    let gpt = t.path().join("disk.vmdk");
    dc_ok(&["mkdisk", "-o", &s(&gpt), "--part", &format!("linux:ext4:auto:{}", s(&dir))]);
    assert_eq!(qemu_img(&["info", "--output=json", &s(&gpt)]).json()["format"], "vmdk");
}
