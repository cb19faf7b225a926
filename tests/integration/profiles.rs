//! Target profiles: `check --profile P` on images made by qemu-img from disks built by
//! sgdisk, sfdisk, mkfs.fat and mtools (never by diskcast); qemu-img check confirms the
//! integrity verdicts.

use crate::support::*;
use diskcast_testkit::run_utc;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A 32 MiB (+ `extra` bytes) GPT disk by sgdisk: partition 1 an ESP (FAT by mkfs.fat)
/// holding `EFI/BOOT/BOOTX64.EFI` (copied with mtools) when `loader`, partition 2 an
/// empty x86-64 root.
fn uefi_disk(dir: &Path, name: &str, extra: u64, loader: bool) -> PathBuf {
    let disk = dir.join(name);
    std::fs::File::create(&disk).unwrap().set_len(32 * MIB + extra).unwrap();
    run_utc(
        "sgdisk",
        &["-n", "1:2048:+20M", "-t", "1:ef00", "-c", "1:esp", "-n", "2:0:0", "-t", "2:8304", "-c", "2:root", &s(&disk)],
    );
    let esp = dir.join(format!("{name}.esp"));
    run_utc("mkfs.fat", &["-C", &s(&esp), &(20 * 1024).to_string()]);
    run_utc("mmd", &["-i", &s(&esp), "::/EFI", "::/EFI/BOOT"]);
    if loader {
        let efi = dir.join("BOOTX64.EFI");
        std::fs::write(&efi, pseudo_random(64 * 1024, 3)).unwrap();
        run_utc("mcopy", &["-i", &s(&esp), &s(&efi), "::/EFI/BOOT/BOOTX64.EFI"]);
    }
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&std::fs::read(&esp).unwrap(), MIB).unwrap();
    disk
}

/// A 32 MiB MBR disk by sfdisk with one Linux partition and GRUB's BIOS boot code
/// (grub-pc-bin's boot.img) in the first 440 bytes.
fn bios_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("bios.raw");
    std::fs::File::create(&disk).unwrap().set_len(32 * MIB).unwrap();
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", &s(&disk)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk is required");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"label: dos\nstart=2048, type=83, bootable\n").unwrap();
    assert!(child.wait().unwrap().success());
    let boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img").expect("grub-pc-bin's boot.img (scripts/setup.sh)");
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&boot[..440], 0).unwrap();
    disk
}

/// `qemu-img convert` of `raw` into `out` with `args` (format and options).
fn qconvert(raw: &Path, out: &Path, args: &[&str]) -> PathBuf {
    let mut a = vec!["convert", "-f", "raw"];
    a.extend_from_slice(args);
    let (r, o) = (s(raw), s(out));
    a.push(&r);
    a.push(&o);
    qemu_img(&a).expect_ok();
    out.to_path_buf()
}

/// The reason codes of `check --profile P IMAGE --output json`, and the exit status
/// (0 accepted, 4 rejected), with the human output saying the same.
fn codes(profile: &str, image: &str) -> Vec<String> {
    let r = dc(&["check", "--profile", profile, "--output", "json", image]);
    let v = r.json();
    let codes: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
            r["code"].as_str().unwrap().to_string()
        })
        .collect();
    let human = dc(&["check", "--profile", profile, image]);
    let want = if codes.is_empty() { 0 } else { 4 };
    assert_eq!(r.code, Some(want), "{profile} {image}: {}", r.describe());
    assert_eq!(human.code, Some(want), "{profile} {image}: {}", human.describe());
    let lines = human.stdout_str();
    if codes.is_empty() {
        assert!(lines.contains("would accept"), "{lines}");
    } else {
        assert_eq!(lines.lines().count(), codes.len(), "one reason per line: {lines}");
        for c in &codes {
            assert!(lines.contains(&format!("{c}: ")), "{lines}");
        }
    }
    codes
}

#[test]
fn azure_takes_fixed_vhds_of_whole_mib_only() {
    let dir = tmp();
    let d = dir.path();
    let raw = uefi_disk(d, "boot.raw", 0, true);
    let ok = qconvert(&raw, &d.join("ok.vhd"), &["-O", "vpc", "-o", "subformat=fixed,force_size=on"]);
    assert_eq!(codes("azure", &s(&ok)), Vec::<String>::new());
    // The same disk, dynamic: only the subformat is wrong.
    let dynamic = qconvert(&raw, &d.join("dyn.vhd"), &["-O", "vpc", "-o", "force_size=on"]);
    assert_eq!(codes("azure", &s(&dynamic)), ["vhd-subformat"]);
    // A disk 64 KiB longer than 32 MiB: a fixed VHD that is not a whole number of MiB.
    let odd_raw = uefi_disk(d, "odd.raw", 64 * KIB, true);
    let odd = qconvert(&odd_raw, &d.join("odd.vhd"), &["-O", "vpc", "-o", "subformat=fixed,force_size=on"]);
    assert_eq!(codes("azure", &s(&odd)), ["size-not-whole-mib"]);
    // qemu-img create with a size that is not whole MiB (and an empty, unbootable disk).
    let made = d.join("made.vhd");
    qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed", &s(&made), "100M"]).expect_ok();
    let c = codes("azure", &s(&made));
    assert!(c.contains(&"size-not-whole-mib".to_string()) && c.contains(&"no-partition-table".to_string()), "{c:?}");
    // Not a VHD at all.
    assert_eq!(codes("azure", &s(&raw)), ["format"]);

    // 1 MiB of zeros slipped in before the footer: the file no longer matches the
    // footer's current size.
    let mut bytes = read(&ok);
    let footer = bytes.split_off(bytes.len() - 512);
    bytes.extend(std::iter::repeat_n(0u8, MIB as usize));
    bytes.extend(&footer);
    let padded = d.join("padded.vhd");
    write_file(&padded, &bytes);
    assert_eq!(codes("azure", &s(&padded)), ["footer-size-mismatch"]);

    // A qemu-made fixed VHD without force_size (CHS geometry, 32 MiB rounded to
    // 33562624 bytes) whose current size is then set to 32 MiB, checksum fixed: the
    // geometry and the file now disagree with the current size.
    let chs = qconvert(&raw, &d.join("chs.vhd"), &["-O", "vpc", "-o", "subformat=fixed"]);
    assert_eq!(codes("azure", &s(&chs)), ["size-not-whole-mib"]);
    let at = file_len(&chs) - 512;
    patch(&chs, at + 48, &(32 * MIB).to_be_bytes());
    patch(&chs, at + 64, &[0; 4]);
    let sum = read(&chs)[at as usize..].iter().fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    patch(&chs, at + 64, &(!sum).to_be_bytes());
    assert_eq!(codes("azure", &s(&chs)), ["footer-size-mismatch", "geometry-size-mismatch"]);
}

#[test]
fn esxi_and_aws_take_stream_optimized_vmdks() {
    let dir = tmp();
    let d = dir.path();
    let raw = uefi_disk(d, "boot.raw", 0, true);
    let stream = qconvert(&raw, &d.join("s.vmdk"), &["-O", "vmdk", "-o", "subformat=streamOptimized"]);
    let sparse = qconvert(&raw, &d.join("m.vmdk"), &["-O", "vmdk"]);
    for p in ["esxi", "aws"] {
        assert_eq!(codes(p, &s(&stream)), Vec::<String>::new(), "{p}");
        assert_eq!(codes(p, &s(&sparse)), ["vmdk-create-type"], "{p}");
    }
    // BIOS boot code is enough where UEFI is not required.
    let bios = qconvert(&bios_disk(d), &d.join("bios.vmdk"), &["-O", "vmdk", "-o", "subformat=streamOptimized"]);
    assert_eq!(codes("esxi", &s(&bios)), Vec::<String>::new());
}

#[test]
fn hyperv_takes_vhdx_with_gpt_and_a_uefi_loader() {
    let dir = tmp();
    let d = dir.path();
    let raw = uefi_disk(d, "boot.raw", 0, true);
    let ok = qconvert(&raw, &d.join("ok.vhdx"), &["-O", "vhdx"]);
    assert_eq!(codes("hyperv", &s(&ok)), Vec::<String>::new());
    let bios = qconvert(&bios_disk(d), &d.join("bios.vhdx"), &["-O", "vhdx"]);
    assert_eq!(codes("hyperv", &s(&bios)), ["not-gpt", "no-uefi-loader"]);
    let empty_esp = qconvert(&uefi_disk(d, "noloader.raw", 0, false), &d.join("noloader.vhdx"), &["-O", "vhdx"]);
    let r = dc(&["check", "--profile", "hyperv", &s(&empty_esp)]).expect_code(4);
    assert!(r.stdout_str().contains("no-uefi-loader: ") && r.stdout_str().contains("EFI/BOOT/BOOTX64.EFI"), "{r:?}");
    assert_eq!(codes("hyperv", &s(&raw)), ["format"]);
}

#[test]
fn qemu_takes_zstd_qcow2_v3_without_leaks() {
    let dir = tmp();
    let d = dir.path();
    let raw = uefi_disk(d, "boot.raw", 0, true);
    let zstd = qconvert(&raw, &d.join("z.qcow2"), &["-c", "-O", "qcow2", "-o", "compression_type=zstd"]);
    assert_eq!(codes("qemu", &s(&zstd)), Vec::<String>::new());
    let zlib = qconvert(&raw, &d.join("zlib.qcow2"), &["-c", "-O", "qcow2"]);
    assert_eq!(codes("qemu", &s(&zlib)), ["qcow2-compression"]);
    let v2 = qconvert(&raw, &d.join("v2.qcow2"), &["-O", "qcow2", "-o", "compat=0.10"]);
    assert_eq!(codes("qemu", &s(&v2)), ["qcow2-version", "qcow2-compression"]);
    // A leaked cluster (qemu-img check says 3): the format's own check rejects it.
    let h = Qcow2Header::read(&zstd);
    let idx = file_len(&zstd).div_ceil(h.cluster_size());
    std::fs::OpenOptions::new().write(true).open(&zstd).unwrap().set_len((idx + 1) * h.cluster_size()).unwrap();
    patch(&zstd, h.refcount_entry_pos(&zstd, idx), &1u16.to_be_bytes());
    assert_eq!(qemu_img_status(&["check", "-f", "qcow2", &s(&zstd)]).code, Some(3));
    assert_eq!(codes("qemu", &s(&zstd)), ["leaks"]);
}

#[test]
fn every_disk_profile_wants_a_table_and_a_way_to_boot() {
    let dir = tmp();
    let d = dir.path();
    let blank = d.join("blank.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", &s(&blank), "32M"]).expect_ok();
    assert_eq!(codes("qemu", &s(&blank)), ["no-partition-table"]);
    let noloader = qconvert(
        &uefi_disk(d, "noloader.raw", 0, false),
        &d.join("n.qcow2"),
        &["-O", "qcow2", "-o", "compression_type=zstd"],
    );
    assert_eq!(codes("qemu", &s(&noloader)), ["not-bootable"]);
    // A container image is not a disk for these profiles, and kubevirt wants one.
    assert_eq!(codes("qemu", "oci:./nowhere:latest"), ["format"]);
    assert_eq!(codes("kubevirt", &s(&noloader)), ["not-container-disk"]);
    // Unknown profiles and unreadable images are errors (exit 1), not verdicts.
    dc(&["check", "--profile", "vbox", &s(&blank)]).expect_code(1).expect_stderr_all(&["azure", "kubevirt"]);
    dc(&["check", "--profile", "qemu", &s(&d.join("missing.qcow2"))]).expect_code(1);
}

/// `umoci new` + `umoci insert FILE TARGET` into the layout `layout` as tag `tag`.
fn umoci_image(layout: &Path, tag: &str, file: &Path, target: &str) -> String {
    if !layout.exists() {
        run_utc("umoci", &["init", "--layout", &s(layout)]);
    }
    let image = format!("{}:{tag}", s(layout));
    run_utc("umoci", &["new", "--image", &image]);
    run_utc("umoci", &["insert", "--image", &image, &s(file), target]);
    format!("oci:{image}")
}

#[test]
fn kubevirt_takes_a_container_disk_with_one_readable_bootable_disk_under_disk() {
    let dir = tmp();
    let d = dir.path();
    let layout = d.join("layout");
    let qcow2 = qconvert(&uefi_disk(d, "boot.raw", 0, true), &d.join("disk.qcow2"), &["-O", "qcow2"]);
    std::fs::set_permissions(&qcow2, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // Made by umoci: a world-readable disk under /disk/.
    let good = umoci_image(&layout, "good", &qcow2, "/disk/disk.qcow2");
    assert_eq!(codes("kubevirt", &good), Vec::<String>::new());
    // The same image through skopeo as an OCI archive.
    let archive = d.join("good.tar");
    run_utc("skopeo", &["copy", "--quiet", &good, &format!("oci-archive:{}:good", s(&archive))]);
    assert_eq!(codes("kubevirt", &format!("oci-archive:{}:good", s(&archive))), Vec::<String>::new());

    let private = d.join("private.qcow2");
    std::fs::copy(&qcow2, &private).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(
        codes("kubevirt", &umoci_image(&layout, "private", &private, "/disk/disk.qcow2")),
        ["disk-not-readable"]
    );
    assert_eq!(codes("kubevirt", &umoci_image(&layout, "elsewhere", &qcow2, "/images/disk.qcow2")), ["no-disk-dir"]);
    let vmdk = qconvert(&uefi_disk(d, "v.raw", 0, true), &d.join("disk.vmdk"), &["-O", "vmdk"]);
    std::fs::set_permissions(&vmdk, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert_eq!(codes("kubevirt", &umoci_image(&layout, "vmdk", &vmdk, "/disk/disk.vmdk")), ["disk-format"]);
    let blank = d.join("blank.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&blank), "32M"]).expect_ok();
    std::fs::set_permissions(&blank, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert_eq!(codes("kubevirt", &umoci_image(&layout, "blank", &blank, "/disk/disk.qcow2")), ["no-partition-table"]);
    // Two disks, or none, under /disk/.
    let two = umoci_image(&layout, "two", &qcow2, "/disk/a.qcow2");
    run_utc("umoci", &["insert", "--image", &format!("{}:two", s(&layout)), &s(&blank), "/disk/b.qcow2"]);
    assert_eq!(codes("kubevirt", &two), ["several-disks"]);
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(codes("kubevirt", &umoci_image(&layout, "empty", &empty, "/disk")), ["no-disk"]);
}

/// A small busybox root directory with an init script (the vm tests' guest, minus the
/// boot: these disks are judged by the checker and by qemu-img, skopeo and umoci).
fn busybox_dir(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["bin", "sbin", "etc", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is required (/bin/busybox)");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("sbin/init"), "#!/bin/sh\necho profiles-ok >/dev/console\n/bin/busybox poweroff -f\n")
        .unwrap();
    std::fs::set_permissions(root.join("sbin/init"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    root
}

#[test]
fn every_profile_of_diskcast_vm_passes_its_own_check() {
    let dir = tmp();
    let d = dir.path();
    let root = busybox_dir(d);
    let kernel = s(&test_kernel());
    for (profile, file, fmt) in [
        ("azure", "vm.vhd", "vpc"),
        ("esxi", "vm.vmdk", "vmdk"),
        ("hyperv", "vm.vhdx", "vhdx"),
        ("qemu", "vm.qcow2", "qcow2"),
    ] {
        let out = d.join(file);
        dc_ok(&["vm", &s(&root), "--kernel", &kernel, "--profile", profile, "-o", &s(&out)]);
        assert_eq!(codes(profile, &s(&out)), Vec::<String>::new(), "{profile}");
        assert_eq!(qemu_info_fmt(&out, fmt)["format"], fmt, "{profile}");
        if fmt != "vpc" {
            let c = qemu_img_status(&["check", "-f", fmt, &s(&out)]);
            assert_eq!(c.code, Some(0), "{profile}: {}", c.describe());
        }
    }
    // aws takes what esxi takes.
    assert_eq!(codes("aws", &s(&d.join("vm.vmdk"))), Vec::<String>::new());
}

#[test]
fn vm_profile_kubevirt_writes_a_container_disk() {
    let dir = tmp();
    let d = dir.path();
    let root = busybox_dir(d);
    let kernel = s(&test_kernel());
    let layout = d.join("layout");
    let target = format!("oci:{}:disk", s(&layout));
    dc_ok(&["vm", &s(&root), "--kernel", &kernel, "--profile", "kubevirt", "-o", &target]);
    assert_eq!(codes("kubevirt", &target), Vec::<String>::new());
    let v: serde_json::Value = serde_json::from_str(&run_utc("skopeo", &["inspect", &target])).unwrap();
    assert_eq!((v["Architecture"].as_str(), v["Os"].as_str()), (Some("amd64"), Some("linux")), "{v}");
    let bundle = d.join("bundle");
    run_utc("umoci", &["unpack", "--rootless", "--image", &format!("{}:disk", s(&layout)), &s(&bundle)]);
    let disk = bundle.join("rootfs/disk/disk.qcow2");
    qemu_check_clean(&disk);
    let ls = dc_ok(&["ls", &format!("{}:root", s(&disk)), "/sbin"]).stdout_str();
    assert!(ls.contains("init"), "{ls}");
    // Only the layout is left beside it: the temporary qcow2 is gone.
    let names: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.contains("containerdisk")), "{names:?}");

    // An OCI archive, reproducible under SOURCE_DATE_EPOCH.
    let (a, b) = (d.join("a.tar"), d.join("b.tar"));
    for f in [&a, &b] {
        let t = format!("oci-archive:{}:disk", s(f));
        dc_epoch(Some("1700000000"), &["vm", &s(&root), "--kernel", &kernel, "--profile", "kubevirt", "-o", &t])
            .expect_ok();
    }
    assert_same_bytes(&a, &b);
    // Wrong pairings write nothing.
    let plain = d.join("vm.qcow2");
    dc(&["vm", &s(&root), "--kernel", &kernel, "--profile", "kubevirt", "-o", &s(&plain)])
        .expect_code(1)
        .expect_stderr_all(&["oci:DIR:TAG"]);
    assert_no_output(&plain);
    let other = format!("oci:{}:x", s(&d.join("other")));
    dc(&["vm", &s(&root), "--kernel", &kernel, "--profile", "qemu", "-o", &other]).expect_code(1);
    dc(&["vm", &s(&root), "--profile", "kubevirt", "-o", &other]).expect_code(1);
    assert!(!d.join("other").exists());
}

/// A root directory with the kinds a system tree has: nested dirs, files of several
/// modes (one empty), relative and absolute symlinks, a hard link.
fn rootdir(dir: &Path) -> PathBuf {
    let root = dir.join("rootdir");
    for d in ["etc/ssh", "usr/bin", "usr/lib/x", "var/empty", "home/user"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let files: [(&str, u32, Vec<u8>); 5] = [
        ("etc/os-release", 0o644, b"ID=test\n".to_vec()),
        ("etc/ssh/key", 0o600, pseudo_random(3000, 1)),
        ("usr/bin/tool", 0o755, pseudo_random(200_000, 2)),
        ("usr/lib/x/empty", 0o644, Vec::new()),
        ("home/user/notes", 0o640, b"hello\n".to_vec()),
    ];
    for (p, mode, data) in files {
        std::fs::write(root.join(p), data).unwrap();
        std::fs::set_permissions(root.join(p), std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(root.join("var/empty"), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/x", root.join("lib")).unwrap();
    std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-again")).unwrap();
    root
}

/// A VM disk assembled by independent tools: sgdisk (ESP, partition 2 of `root_type`
/// and optionally a third `8300` partition with the same ext4), mkfs.fat + mtools for the
/// ESP, `mke2fs -d ROOTDIR` for the root, dd to put them in place, qemu-img to qcow2.
fn tool_made_vm_disk(dir: &Path, root: &Path, root_type: &str, third: bool) -> PathBuf {
    let ext4 = dir.join("root.ext4");
    if !ext4.exists() {
        run_utc("mke2fs", &["-q", "-t", "ext4", "-d", &s(root), &s(&ext4), "16M"]);
    }
    let esp = dir.join("esp.fat");
    if !esp.exists() {
        run_utc("mkfs.fat", &["-C", &s(&esp), "20480"]);
        run_utc("mmd", &["-i", &s(&esp), "::/EFI", "::/EFI/BOOT"]);
        let efi = dir.join("BOOTX64.EFI");
        std::fs::write(&efi, pseudo_random(4096, 9)).unwrap();
        run_utc("mcopy", &["-i", &s(&esp), &s(&efi), "::/EFI/BOOT/BOOTX64.EFI"]);
    }
    let raw = dir.join(format!("vm-{root_type}-{third}.raw"));
    std::fs::File::create(&raw).unwrap().set_len(64 * MIB).unwrap();
    let mut args = vec!["-n", "1:2048:+20M", "-t", "1:ef00", "-n", "2:0:+16M"];
    let t2 = format!("2:{root_type}");
    args.extend(["-t", &t2]);
    if third {
        args.extend(["-n", "3:0:+16M", "-t", "3:8300"]);
    }
    let r = s(&raw);
    args.push(&r);
    run_utc("sgdisk", &args);
    let dd = |img: &Path, mib: u64| {
        run_utc(
            "dd",
            &[
                &format!("if={}", s(img)),
                &format!("of={r}"),
                "bs=1M",
                &format!("seek={mib}"),
                "conv=notrunc",
                "status=none",
            ],
        );
    };
    dd(&esp, 1);
    dd(&ext4, 21);
    if third {
        dd(&ext4, 37);
    }
    let qcow2 = raw.with_extension("qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &r, &s(&qcow2)]).expect_ok();
    qcow2
}

#[test]
fn convert_vm_disk_to_oci_takes_the_root_partition() {
    use crate::oci_common::{assert_same_min, dir_manifest};
    let dir = tmp();
    let d = dir.path();
    let root = rootdir(d);
    let want = dir_manifest(&root);
    // The root found by its Discoverable Partitions type (8304), then by its ext4 alone
    // (generic Linux type 8300) next to the FAT ESP.
    for root_type in ["8304", "8300"] {
        let disk = tool_made_vm_disk(d, &root, root_type, false);
        let layout = d.join(format!("out-{root_type}"));
        dc_ok(&["convert", &s(&disk), &format!("oci:{}:latest", s(&layout))]);
        let bundle = d.join(format!("bundle-{root_type}"));
        run_utc("umoci", &["unpack", "--rootless", "--image", &format!("{}:latest", s(&layout)), &s(&bundle)]);
        let mut got = dir_manifest(&bundle.join("rootfs"));
        // mke2fs makes lost+found; it is part of the filesystem, empty.
        let lf = got.remove("lost+found").unwrap_or_else(|| panic!("no lost+found: {got:?}"));
        assert!(lf.starts_with("d 700 0:0"), "{lf}");
        assert_same_min(&got, &want, &format!("rootfs of a {root_type} root via convert + umoci"));
    }
    // The other image targets take the same root: a docker save archive skopeo reads.
    let disk = d.join("vm-8304-false.qcow2");
    let archive = format!("docker-archive:{}:vm/root:1", s(&d.join("docker.tar")));
    dc_ok(&["convert", &s(&disk), &archive]);
    let v: serde_json::Value = serde_json::from_str(&run_utc("skopeo", &["inspect", &archive])).unwrap();
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{v}");
    let ls = dc_ok(&["ls", &archive, "/usr/bin"]).stdout_str();
    assert!(ls.contains("tool-again"), "{ls}");
    // Two Linux partitions: an error naming them and DISK:PART; naming one works.
    let two = tool_made_vm_disk(d, &root, "8300", true);
    let out = format!("oci:{}:latest", s(&d.join("two")));
    dc(&["convert", &s(&two), &out]).expect_code(1).expect_stderr_all(&["several", "2 (linux)", "3 (linux)", ":PART"]);
    assert!(!d.join("two").exists());
    dc_ok(&["convert", &format!("{}:3", s(&two)), &out]);
    let bundle = d.join("bundle-two");
    run_utc("umoci", &["unpack", "--rootless", "--image", &format!("{}:latest", s(&d.join("two"))), &s(&bundle)]);
    let mut got = dir_manifest(&bundle.join("rootfs"));
    got.remove("lost+found");
    assert_same_min(&got, &want, "rootfs of DISK:3");
    // A Btrfs root (its magic; ext4's wiped) is chosen over the ESP, and refused by name.
    let btrfs = d.join("btrfs.raw");
    std::fs::copy(d.join("vm-8300-false.raw"), &btrfs).unwrap();
    patch(&btrfs, 21 * MIB + 0x10040, b"_BHRfS_M");
    patch(&btrfs, 21 * MIB + 1024 + 56, &[0, 0]);
    let out = format!("oci:{}:latest", s(&d.join("btrfs")));
    dc(&["convert", &s(&btrfs), &out])
        .expect_code(1)
        .expect_stderr_all(&["partition 2", "holds Btrfs, which diskcast cannot read"]);
    assert!(!d.join("btrfs").exists());
    // An XFS magic alone (ext4's wiped) is chosen over the ESP too, and read as XFS: its
    // superblock is named as what is wrong.
    let xfs = d.join("xfs.raw");
    std::fs::copy(d.join("vm-8300-false.raw"), &xfs).unwrap();
    patch(&xfs, 21 * MIB, b"XFSB");
    patch(&xfs, 21 * MIB + 1024 + 56, &[0, 0]);
    let out = format!("oci:{}:latest", s(&d.join("xfs")));
    dc(&["convert", &s(&xfs), &out]).expect_code(1).expect_stderr_all(&["xfs.raw:2", "XFS"]);
    assert!(!d.join("xfs").exists());
}

#[test]
fn convert_profile_writes_what_each_platform_takes() {
    let dir = tmp();
    let d = dir.path();
    // 64 KiB past a whole MiB: the azure output is rounded up.
    let raw = uefi_disk(d, "boot.raw", 64 * KIB, true);
    for (profile, file) in
        [("azure", "c.vhd"), ("esxi", "c.vmdk"), ("aws", "c2.vmdk"), ("hyperv", "c.vhdx"), ("qemu", "c.qcow2")]
    {
        let out = d.join(file);
        dc_ok(&["convert", "--profile", profile, &s(&raw), &s(&out)]);
        assert_eq!(codes(profile, &s(&out)), Vec::<String>::new(), "{profile}");
    }
    let azure = qemu_info_fmt(&d.join("c.vhd"), "vpc");
    assert_eq!(azure["virtual-size"], 33 * MIB, "azure rounds up to a whole MiB: {azure}");
    qemu_img(&["compare", "-f", "raw", "-F", "qcow2", &s(&raw), &s(&d.join("c.qcow2"))]).expect_ok();

    let layout = d.join("kv");
    let target = format!("oci:{}:disk", s(&layout));
    dc_ok(&["convert", "--profile", "kubevirt", &s(&raw), &target]);
    assert_eq!(codes("kubevirt", &target), Vec::<String>::new());
    let bundle = d.join("bundle");
    run_utc("umoci", &["unpack", "--rootless", "--image", &format!("{}:disk", s(&layout)), &s(&bundle)]);
    qemu_img(&["compare", "-f", "raw", "-F", "qcow2", &s(&raw), &s(&bundle.join("rootfs/disk/disk.qcow2"))])
        .expect_ok();
    let names: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.contains("containerdisk")), "{names:?}");

    // Contradictions and wrong targets are refused before anything is written.
    let out = d.join("x.vhd");
    dc(&["convert", "--profile", "azure", "-O", "qcow2", &s(&raw), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["contradicts --profile azure"]);
    dc(&["convert", "--profile", "azure", "-o", "subformat=dynamic", &s(&raw), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["subformat=dynamic", "subformat=fixed"]);
    dc(&["convert", "--profile", "kubevirt", &s(&raw), &s(&out)]).expect_code(1).expect_stderr_all(&["oci:DIR:TAG"]);
    assert_no_output(&out);
}
