//! BIOS boot of the disks diskcast writes: GRUB i386-pc (core image in the BIOS boot
//! partition, boot.img in the protective MBR) booting the kernel from the ESP, judged by
//! SeaBIOS under QEMU reaching the guest's marker, and by sgdisk -v.

use crate::support::*;
use serde_json::Value;
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

/// Writes `diskcast vm --boot BOOT` of a busybox guest with the test kernel as qcow2 and
/// checks the layout: BIOS boot partition (GRUB's core image at its start, boot.img's
/// code in sector 0 pointing at it), ESP, root; `sgdisk -v` and `fsck.fat -n` clean.
/// Returns the qcow2 and the ESP's root directory listing (mtools).
fn vm_disk(dir: &Path, boot: &str) -> (std::path::PathBuf, String) {
    let (root, q, raw, esp) = (dir.join("root"), dir.join("disk.qcow2"), dir.join("disk.raw"), dir.join("esp.img"));
    guest_root(&root);
    let kernel = test_kernel();
    let summary = dc_ok(&[
        "vm",
        &s(&root),
        "-o",
        &s(&q),
        "-O",
        "qcow2",
        "--boot",
        boot,
        "--kernel",
        &s(&kernel),
        "--output",
        "json",
    ])
    .json();
    let parts: Vec<&Value> = summary["partitions"].as_array().unwrap().iter().collect();
    let got: Vec<(u64, &str, String)> = parts
        .iter()
        .map(|p| {
            (p["number"].as_u64().unwrap(), p["name"].as_str().unwrap(), p["type"].as_str().unwrap().to_uppercase())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "bios", "21686148-6449-6E6F-744E-656564454649".to_string()),
            (2, "esp", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".to_string()),
            (3, "root", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709".to_string()),
        ],
        "{summary}"
    );
    assert_eq!(summary["boot"], boot);
    assert!(summary["loader"].as_str().unwrap().contains("/usr/lib/grub/i386-pc (GRUB i386-pc)"), "{summary}");
    qemu_check_clean(&q);
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", &s(&q), &s(&raw)]);
    assert!(tool_text("sgdisk", &["-v", &s(&raw)]).contains("No problems found"));
    let disk = read(&raw);
    let (bios_start, esp_start, esp_size) = (
        parts[0]["start"].as_u64().unwrap() as usize,
        parts[1]["start"].as_u64().unwrap() as usize,
        parts[1]["size"].as_u64().unwrap() as usize,
    );
    // boot.img's code (the same bytes as the host's file but for the fields grub-install
    // patches: the core image's LBA at 0x5c, the drive-check jump at 0x66 NOPed) and the
    // diskboot blocklist pointing at the sector after it.
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    for (i, (a, b)) in disk[..440].iter().zip(&boot_img[..440]).enumerate() {
        if !(0x5c..0x64).contains(&i) && !(0x66..0x68).contains(&i) {
            assert_eq!(a, b, "sector 0 byte {i:#x} differs from boot.img");
        }
    }
    assert_eq!(u64::from_le_bytes(disk[0x5c..0x64].try_into().unwrap()), (bios_start / 512) as u64);
    assert_eq!(disk[0x66..0x68], [0x90, 0x90]);
    let diskboot = std::fs::read("/usr/lib/grub/i386-pc/diskboot.img").unwrap();
    assert_eq!(disk[bios_start..bios_start + 0x1f4], diskboot[..0x1f4], "core image starts with diskboot");
    let bl = &disk[bios_start + 0x1f4..bios_start + 512];
    assert_eq!(u64::from_le_bytes(bl[..8].try_into().unwrap()), (bios_start / 512 + 1) as u64);
    assert_eq!(u16::from_le_bytes([bl[10], bl[11]]), 0x820);
    let rest = u64::from(u16::from_le_bytes([bl[8], bl[9]]));
    assert!((100..2047).contains(&rest), "core image of {rest}+1 sectors");
    std::fs::write(&esp, &disk[esp_start..esp_start + esp_size]).unwrap();
    tool_text("fsck.fat", &["-n", &s(&esp)]);
    let listing = tool_text("mdir", &["-i", &s(&esp), "-/", "-b", "::/"]);
    assert!(listing.contains("::/diskcast/vmlinuz"), "{listing}");
    std::fs::remove_file(&raw).unwrap();
    (q, listing)
}

/// `diskcast vm --boot bios`: GRUB only, no UEFI loader on the ESP; SeaBIOS boots the
/// qcow2 from NVMe (the cloud kernel's built-in disk driver) to the guest's marker.
#[test]
fn vm_boot_bios_qcow2_boots_under_seabios() {
    let t = tmp();
    let (q, esp) = vm_disk(t.path(), "bios");
    assert!(!esp.to_uppercase().contains("BOOTX64.EFI"), "a BIOS-only ESP has no UEFI loader:\n{esp}");
    let console = boot_to_marker(&q, "qcow2", Firmware::Bios, Bus::Nvme, MARKER, t.path(), Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(console.contains("diskcast: booting"), "GRUB's early config did not run:\n{console}");
    // A systemd-boot binary means nothing to a BIOS-only disk.
    dc(&["vm", &s(&t.path().join("root")), "-o", &s(&t.path().join("x.raw")), "--boot", "bios", "--loader", "/bin/sh"])
        .expect_code(1)
        .expect_stderr_all(&["--loader", "--boot bios installs grub"]);
    assert_no_output(&t.path().join("x.raw"));
}

/// `diskcast vm --boot hybrid`: the same disk boots under SeaBIOS (GRUB) and OVMF
/// (systemd-boot from the ESP's removable-media path).
#[test]
fn vm_boot_hybrid_boots_under_seabios_and_ovmf() {
    let t = tmp();
    let (q, esp) = vm_disk(t.path(), "hybrid");
    assert!(esp.to_uppercase().contains("::/EFI/BOOT/BOOTX64.EFI"), "{esp}");
    for fw in [Firmware::Bios, Firmware::Uefi] {
        boot_to_marker(&q, "qcow2", fw, Bus::Nvme, MARKER, t.path(), Duration::from_secs(240))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// GRUB comes from the image when it has `/usr/lib/grub/i386-pc` (here the host's copied
/// in, its boot.img marked in the BPB bytes the code jumps over, so sector 0 shows which
/// boot.img was used); builds are reproducible; a broken copy is refused with an error
/// naming it, and no output.
#[test]
fn vm_boot_bios_takes_grub_from_the_image_and_refuses_a_broken_one() {
    let t = tmp();
    let (root, out) = (t.path().join("root"), t.path().join("disk.raw"));
    guest_root(&root);
    let grub = root.join("usr/lib/grub/i386-pc");
    std::fs::create_dir_all(&grub).unwrap();
    for e in std::fs::read_dir("/usr/lib/grub/i386-pc").unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), grub.join(e.file_name())).unwrap();
        }
    }
    let mut boot_img = std::fs::read(grub.join("boot.img")).unwrap();
    boot_img[0x10..0x18].copy_from_slice(b"GUESTBPB");
    std::fs::write(grub.join("boot.img"), &boot_img).unwrap();
    let kernel = s(&test_kernel());
    let args = ["vm", &s(&root), "-o", &s(&out), "--boot", "bios", "--kernel", &kernel, "--output", "json"];
    let summary = dc_ok(&args).json();
    assert!(
        summary["loader"].as_str().unwrap().contains("the image's /usr/lib/grub/i386-pc (GRUB i386-pc)"),
        "{summary}"
    );
    assert_eq!(&read(&out)[0x10..0x18], b"GUESTBPB");
    std::fs::remove_file(&out).unwrap();
    // Under SOURCE_DATE_EPOCH two builds (GRUB's core image included) are identical.
    let again = t.path().join("again.raw");
    let (a2, o2) = (s(&out), s(&again));
    for o in [&a2, &o2] {
        let args = ["vm", &s(&root), "-o", o, "--boot", "hybrid", "--kernel", &kernel];
        dc_epoch(Some("1700000000"), &args).expect_ok();
    }
    assert!(read(&out) == read(&again), "two --boot hybrid builds under SOURCE_DATE_EPOCH differ");
    std::fs::remove_file(&out).unwrap();
    std::fs::write(grub.join("kernel.img"), b"not a GRUB kernel").unwrap();
    dc(&args).expect_code(1).expect_stderr_all(&["grub-mkimage", "the image's /usr/lib/grub/i386-pc"]);
    assert_no_output(&out);
}
