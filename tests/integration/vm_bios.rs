//! BIOS boot of the disks diskcast writes: GRUB i386-pc (core image in the BIOS boot
//! partition, boot.img in the protective MBR) booting the kernel from the ESP, judged by
//! SeaBIOS under QEMU reaching the guest's marker, and by sgdisk -v.

use crate::support::*;
use diskcast_bootloader::BootEntry;
use diskcast_bootloader::grub_bios::{GrubBios, GrubModules};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const MARKER: &str = "DISKCAST_BIOS_GUEST_OK";

/// A busybox-static root whose init prints [`MARKER`] on the console and powers off.
fn guest_root(root: &Path) {
    for d in ["bin", "sbin", "dev", "proc", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n/bin/busybox echo {MARKER} > /dev/console\n/bin/busybox poweroff -f\n"
    );
    std::fs::write(root.join("sbin/init"), init).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `sfdisk --dump` line of partition `n`: (start sector, size in sectors, uuid).
fn part_of(disk: &Path, n: u32) -> (u64, u64, String) {
    let dump =
        String::from_utf8(std::process::Command::new("sfdisk").arg("-d").arg(disk).output().unwrap().stdout).unwrap();
    let line = dump
        .lines()
        .find(|l| l.starts_with(&format!("{}{n} :", disk.display())))
        .unwrap_or_else(|| panic!("no partition {n}: {dump}"));
    let field = |k: &str| {
        let at = line.find(&format!("{k}=")).unwrap() + k.len() + 1;
        line[at..].split(',').next().unwrap().trim().to_string()
    };
    (field("start").parse().unwrap(), field("size").parse().unwrap(), field("uuid"))
}

/// The loader alone, before `diskcast vm` wires it: a disk composed by `diskcast mkdisk`
/// (BIOS boot, ESP with the kernel, ext4 root), GRUB installed into it by the library,
/// converted to qcow2 and booted by SeaBIOS from NVMe to the guest's marker.
#[test]
fn grub_bios_on_a_mkdisk_disk_boots_under_seabios() {
    let t = tmp();
    let (esp, root, raw, q) =
        (t.path().join("esp"), t.path().join("root"), t.path().join("disk.img"), t.path().join("disk.qcow2"));
    std::fs::create_dir_all(esp.join("diskcast")).unwrap();
    std::fs::copy(test_kernel(), esp.join("diskcast/vmlinuz")).unwrap();
    guest_root(&root);
    dc_ok(&[
        "mkdisk",
        "-o",
        &s(&raw),
        "--part",
        "bios:none:1M",
        "--part",
        &format!("esp:fat32:64M:{}", s(&esp)),
        "--part",
        &format!("root:ext4:auto:{}", s(&root)),
    ]);
    let (bios_start, bios_len, _) = part_of(&raw, 1);
    let (_, _, root_uuid) = part_of(&raw, 3);
    let entry = BootEntry {
        title: "test".into(),
        kernel: "/diskcast/vmlinuz".into(),
        initrd: None,
        cmdline: format!("root=PARTUUID={} rootfstype=ext4 rw console=ttyS0,115200", root_uuid.to_lowercase()),
    };
    let grub = GrubBios::build(&GrubModules::host().unwrap(), 2, &entry).unwrap();
    let inst = grub.install(bios_start, bios_len * 512).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&inst.mbr_code, 0).unwrap();
    f.write_all_at(&inst.core, bios_start * 512).unwrap();
    drop(f);
    let v =
        String::from_utf8(std::process::Command::new("sgdisk").arg("-v").arg(&raw).output().unwrap().stdout).unwrap();
    assert!(v.contains("No problems found"), "{v}");
    assert_eq!(read(&raw)[..440], inst.mbr_code[..]);
    dc_ok(&["convert", "-O", "qcow2", &s(&raw), &s(&q)]);
    let console = boot_to_marker(&q, "qcow2", Firmware::Bios, Bus::Nvme, MARKER, t.path(), Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(console.contains("diskcast: booting test"), "GRUB's early config did not run:\n{console}");
}
