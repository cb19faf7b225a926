//! `diskcast usb`: sticks made from ISOs that xorriso, genisoimage and our own `iso create`
//! built, judged by sgdisk, fsck.fat, fsck.exfat, e2fsck, mtools and boots under QEMU
//! (SeaBIOS and OVMF, the disk on USB).

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The marker the test kernel prints in its "Command line:" banner when BIOS started it.
const BIOS_MARKER: &str = "DISKCAST_USB_BIOS_OK";
/// What the ISO's UEFI loader (GRUB built standalone) prints.
const UEFI_MARKER: &str = "DISKCAST_USB_UEFI_OK";

/// A stage directory for an installer-like ISO: isolinux with a Debian-like configuration
/// (PROMPT 0, an INCLUDE, a COM32 entry) starting the test kernel with the marker on its
/// command line; an EFI image (FAT, made by mkfs.fat and mtools) holding a standalone
/// GRUB that prints the UEFI marker; payload with odd names, a link to a file and a link
/// to the disc's root (as Debian's `debian -> .`).
fn stage(t: &Path, efi_in_tree: bool) -> PathBuf {
    let s = t.join(if efi_in_tree { "stage-efi" } else { "stage" });
    marker_efi_image(t, &s.join("boot/efiboot.img"), UEFI_MARKER);
    sh(&format!(
        "mkdir -p '{s}/boot' '{s}/isolinux' '{s}/data/sub dir' '{s}/data/a/b/c'; cd '{t}'
         if {efi}; then mkdir -p '{s}/EFI/BOOT'; cp BOOTX64.EFI '{s}/EFI/BOOT/'; fi
         cp '{kernel}' '{s}/boot/vmlinuz'
         cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 \
            /usr/lib/syslinux/modules/bios/menu.c32 /usr/lib/syslinux/modules/bios/libutil.c32 '{s}/isolinux/'
         printf 'SERIAL 0 115200\\nUI menu.c32\\nPROMPT 0\\nTIMEOUT 10\\nINCLUDE entries.cfg\\n' > '{s}/isolinux/isolinux.cfg'
         printf 'DEFAULT usb\\nLABEL usb\\n  MENU LABEL ^Boot the test kernel\\n  KERNEL /boot/vmlinuz\\n  APPEND console=ttyS0,115200 panic=-1 {BIOS_MARKER}\\nLABEL hd\\n  COM32 chain.c32\\n' \
            > '{s}/isolinux/entries.cfg'
         echo hello > '{s}/data/hello.txt'; ln -s hello.txt '{s}/data/link'; ln -s . '{s}/debian'
         echo x > '{s}/data/sub dir/Mixed Case Name.txt'; echo deep > '{s}/data/a/b/c/deep.txt'
         head -c 3000000 /dev/urandom > '{s}/data/random.bin'",
        s = s.display(),
        t = t.display(),
        efi = efi_in_tree,
        kernel = test_kernel().display(),
    ));
    s
}

/// A hybrid ISO as xorriso makes Debian's: isohybrid MBR code, GPT with the EFI image.
fn hybrid_iso(t: &Path) -> PathBuf {
    let s = stage(t, true);
    let iso = t.join("hybrid.iso");
    sh(&format!(
        "xorriso -as mkisofs -quiet -o '{i}' -V 'USB Test 1.0' -R -J -b isolinux/isolinux.bin -c isolinux/boot.cat \
           -no-emul-boot -boot-load-size 4 -boot-info-table -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
           -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat '{s}'",
        i = iso.display(),
        s = s.display()
    ));
    iso
}

/// A CD-only ISO from our own `iso create`: UEFI's loader only inside the El Torito image.
fn plain_iso(t: &Path) -> PathBuf {
    let s = stage(t, false);
    let with_boot = t.join("boot.iso");
    dc_ok(&[
        "iso",
        "create",
        &s.display().to_string(),
        "-o",
        &with_boot.display().to_string(),
        "-V",
        "PLAINBOOT",
        "--boot-bios",
        "isolinux/isolinux.bin",
        "--boot-uefi",
        "boot/efiboot.img",
    ]);
    with_boot
}

fn usb(args: &[&str]) -> (Value, Run) {
    let mut all = vec!["usb"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let r = dc_ok(&all);
    (r.json(), r)
}

/// Partition `n` (1-based, as the JSON summary lists it) copied out to a file.
fn partition(stick: &Path, summary: &Value, n: usize, out: &Path) -> PathBuf {
    let p = &summary["partitions"][n - 1];
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    let bytes = read(stick);
    let path = out.join(format!("part{n}.img"));
    write_file(&path, &bytes[usize::try_from(start).unwrap()..usize::try_from(start + size).unwrap()]);
    path
}

/// Every file of `iso` (extracted by xorriso; links followed, links to directories
/// left out), as (path, bytes).
fn iso_files(iso: &Path, dir: &Path) -> Vec<(String, Vec<u8>)> {
    sh(&format!("osirrox -indev '{}' -extract / '{}' 2>/dev/null", iso.display(), dir.display()));
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let link = std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink();
            let md = std::fs::metadata(&p).unwrap();
            if md.is_dir() && !link {
                todo.push(p);
            } else if md.is_file() {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// mtools' copy of `path` from the FAT image.
fn mtools_cat(fat: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-n", "-i"])
        .arg(fat)
        .arg(format!("::/{path}"))
        .arg("-")
        .output()
        .expect("mcopy");
    assert!(out.status.success(), "mcopy {path}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn assert_sgdisk_clean(img: &Path) {
    let v = tool_text("sgdisk", &["-v", &s(img)]);
    assert!(v.contains("No problems found"), "{v}");
}

fn boots(disk: &Path, fw: Firmware, marker: &str, scratch: &Path) {
    boots_within(disk, fw, marker, scratch, Duration::from_secs(180));
}

fn boots_within(disk: &Path, fw: Firmware, marker: &str, scratch: &Path, timeout: Duration) {
    if let Err(e) = boot_to_marker(disk, "raw", fw, Bus::Usb, marker, scratch, timeout) {
        panic!("{} did not boot to {marker} on {fw:?} as a USB stick:\n{e}", disk.display());
    }
}

#[test]
fn auto_copies_a_hybrid_iso_as_it_is_and_dd_refuses_a_plain_one() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("dd.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick)]);
    assert_eq!(j["mode"], "dd", "{}", r.describe());
    assert!(r.stderr.contains("mode dd: the ISO is hybrid (GPT with 2 partitions"), "{}", r.stderr);
    assert_eq!(read(&stick), read(&iso), "dd mode copies the ISO byte for byte");
    // xorriso's isohybrid MBR overlaps its GPT by design: sgdisk judges the stick as it
    // judges the ISO itself, nothing added.
    let verdict = |p: &Path| {
        String::from_utf8_lossy(&Command::new("sgdisk").arg("-v").arg(p).output().unwrap().stdout).into_owned()
    };
    assert_eq!(verdict(&stick), verdict(&iso));
    assert_eq!(j["bios"]["bootable"], true);
    assert_eq!(j["uefi"]["bootable"], true);
    // --size: the ISO, then zeros.
    let big = t.path().join("big.qcow2");
    dc_ok(&["usb", &s(&iso), "-o", &s(&big), "--mode", "dd", "--size", "80M", "-O", "qcow2"]);
    qemu_check_clean(&big);
    let raw = t.path().join("big.raw");
    qemu_img(&["convert", "-O", "raw", &s(&big), &s(&raw)]);
    let bytes = read(&raw);
    assert_eq!(bytes.len(), 80 << 20);
    assert_eq!(bytes[..read(&iso).len()], read(&iso)[..]);
    assert!(bytes[read(&iso).len()..].iter().all(|&b| b == 0));

    // A CD-only ISO has nothing a firmware boots from a disk: refused, nothing written.
    let plain = plain_iso(t.path());
    let out = t.path().join("no.img");
    dc(&["usb", &s(&plain), "-o", &s(&out), "--mode", "dd"]).expect_code(1).expect_stderr_all(&[
        "cannot be copied as it is (--mode dd)",
        "it is not a hybrid ISO",
        "use --mode fat32",
    ]);
    assert_no_output(&out);
    dc(&["usb", &s(&iso), "-o", &s(&out), "--mode", "dd", "--persistence", "8M"])
        .expect_code(1)
        .expect_stderr_all(&["--persistence needs a partition of its own; use --mode fat32"]);
    dc(&["usb", &s(&iso), "-o", &s(&out), "--mode", "dd", "--size", "1M"])
        .expect_code(1)
        .expect_stderr_all(&["--size 1 MiB is too small", "dd mode copies all of it"]);
    assert_no_output(&out);
}

#[test]
fn fat32_stick_holds_every_file_of_the_iso_and_passes_every_checker() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("stick.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick), "--mode", "fat32", "--persistence", "16M"]);
    assert_eq!(j["mode"], "fat32");
    assert!(r.stderr.contains("/data/link: link to \"hello.txt\" stored as a copy"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/debian: link to \".\", a directory holding the link itself, not copied"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("entries hd of /isolinux/isolinux.cfg run syslinux modules"), "{}", r.stderr);
    assert_eq!(j["uefi"]["how"], "EFI/BOOT/BOOTX64.EFI from the ISO's files");
    assert!(j["bios"]["how"].as_str().unwrap().contains("isolinux configuration /isolinux/isolinux.cfg"), "{j}");
    assert_hybrid_mbr(&stick, &j);
    let types = tool_text("sgdisk", &["-p", &s(&stick)]);
    let kinds: Vec<&str> = types.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).collect();
    assert_eq!(kinds.len(), 3, "{types}");
    assert!(kinds[0].contains("EF00") && kinds[1].contains("8300") && kinds[2].contains("EF02"), "{types}");

    let fat = partition(&stick, &j, 1, t.path());
    let fsck = tool_text("fsck.fat", &["-n", &s(&fat)]);
    assert!(!fsck.contains("differ") && !fsck.contains("Free cluster summary wrong"), "{fsck}");
    let label = tool_text("fatlabel", &[&s(&fat)]);
    assert_eq!(label.trim(), "USB_TEST_1", "the label comes from the ISO's volume id");
    let files = iso_files(&iso, &t.path().join("x"));
    assert!(files.len() >= 10, "{files:?}");
    for (path, bytes) in &files {
        assert!(mtools_cat(&fat, path) == *bytes, "{path} differs on the stick");
    }
    let menu = String::from_utf8(mtools_cat(&fat, "diskcast/bios-grub.cfg")).unwrap();
    assert!(menu.contains("menuentry 'Boot the test kernel' --id 'usb'"), "{menu}");

    let pers = partition(&stick, &j, 2, t.path());
    tool_text("e2fsck", &["-fn", &s(&pers)]);
    assert_eq!(tool_out("e2label", &[&s(&pers)]).trim(), "persistence");
    assert_eq!(tool_out("debugfs", &["-R", "cat /persistence.conf", &s(&pers)]), "/ union\n");

    // The same stick as qcow2: qemu-img sees the same disk.
    let q = t.path().join("stick.qcow2");
    let seeded = |out: &Path, fmt: &str| {
        dc_epoch(
            Some("1700000000"),
            &["usb", &s(&iso), "-o", &s(out), "--mode", "fat32", "--persistence", "16M", "-O", fmt],
        )
        .expect_ok();
    };
    let r1 = t.path().join("r1.img");
    seeded(&r1, "raw");
    seeded(&q, "qcow2");
    qemu_check_clean(&q);
    qemu_compare(&r1, "raw", &q, "qcow2");
}

#[test]
fn fat32_stick_size_is_checked_before_writing() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let out = t.path().join("small.img");
    dc(&["usb", &s(&iso), "-o", &s(&out), "--mode", "fat32", "--size", "20M"])
        .expect_code(1)
        .expect_stderr_all(&["--size 20 MiB is too small for the ISO's files on FAT32"]);
    assert_no_output(&out);
    let (j, _) = usb(&[&s(&iso), "-o", &s(&out), "--mode", "fat32", "--size", "200M"]);
    assert_eq!(file_len(&out), 200 << 20);
    assert_eq!(j["virtual-size"], 200u64 << 20);
    assert_sgdisk_clean(&out);
    let fat = partition(&out, &j, 1, t.path());
    tool_text("fsck.fat", &["-n", &s(&fat)]);
    assert!(j["partitions"][0]["size"].as_u64().unwrap() > 190 << 20, "the data partition takes the rest: {j}");

    // A block device in another format than raw: refused with the reason.
    let dev = t.path().join("sdz");
    sh(&format!("mknod '{}' b 7 250", dev.display()));
    dc(&["usb", &s(&iso), "-o", &s(&dev), "-O", "qcow2"])
        .expect_code(1)
        .expect_stderr_all(&["is a block device: it holds the stick itself (raw)"]);
}

#[test]
fn windows_like_iso_gets_a_fat32_boot_partition_and_an_exfat_one_with_everything() {
    let t = tmp();
    let s_ = t.path().join("win");
    sh(&format!(
        "mkdir -p '{s}/sources' '{s}/efi/boot' '{s}/boot'
         head -c 2000000 /dev/urandom > '{s}/sources/boot.wim'
         head -c 3000000 /dev/urandom > '{s}/sources/install.wim'
         echo setup > '{s}/setup.exe'; echo mgr > '{s}/bootmgr'; head -c 4096 /dev/urandom > '{s}/boot/etfsboot.com'
         head -c 100000 /dev/urandom > '{s}/efi/boot/bootx64.efi'
         genisoimage -quiet -udf -allow-limited-size -iso-level 3 -V CCSA_X64FRE_EN-US_DV9 \
           -b boot/etfsboot.com -no-emul-boot -boot-load-size 8 -o '{t}/win.iso' '{s}'",
        s = s_.display(),
        t = t.path().display()
    ));
    let iso = t.path().join("win.iso");
    let stick = t.path().join("win.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick), "--windows-layout", "exfat"]);
    assert_eq!(j["mode"], "fat32");
    assert!(r.stderr.contains("mode fat32: the ISO cannot be copied as it is"), "{}", r.stderr);
    assert_eq!(j["uefi"]["how"], "EFI/BOOT/BOOTX64.EFI from the ISO's files");
    assert_eq!(j["bios"]["bootable"], false);
    assert!(
        r.stderr.contains("BIOS boot is not possible: the ISO boots Windows on BIOS (etfsboot.com"),
        "{}",
        r.stderr
    );
    assert_sgdisk_clean(&stick);
    // No BIOS boot: the MBR stays protective, nothing active.
    assert!(tool_text("gdisk", &["-l", &s(&stick)]).contains("MBR: protective"));
    let boot = partition(&stick, &j, 1, t.path());
    tool_text("fsck.fat", &["-n", &s(&boot)]);
    assert_eq!(tool_text("fatlabel", &[&s(&boot)]).trim(), "CCSA_X64FRE");
    let listing = tool_out("mdir", &["-/", "-b", "-i", &s(&boot), "::/"]);
    assert!(listing.contains("::/sources/boot.wim") && !listing.to_lowercase().contains("install.wim"), "{listing}");
    assert_eq!(mtools_cat(&boot, "sources/boot.wim"), read(&s_.join("sources/boot.wim")));
    let data = partition(&stick, &j, 2, t.path());
    tool_text("fsck.exfat", &["-n", &s(&data)]);
    let types = tool_text("sgdisk", &["-p", &s(&stick)]);
    assert!(types.contains("EF00") && types.contains("0700"), "{types}");
    // The exFAT partition's files, read back through the image as a disk.
    for f in ["sources/install.wim", "sources/boot.wim", "setup.exe", "efi/boot/bootx64.efi"] {
        let got = dc_ok(&["cat", &format!("{}:2", s(&stick)), f]).stdout;
        assert!(got == read(&s_.join(f)), "{f} differs on the exFAT partition");
    }
}

#[test]
fn boots_a_hybrid_iso_copied_dd_on_seabios_as_a_usb_stick() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("dd.img");
    dc_ok(&["usb", &s(&iso), "-o", &s(&stick), "--size", "100M"]);
    boots(&stick, Firmware::Bios, BIOS_MARKER, t.path());
}

#[test]
fn boots_a_fat32_stick_on_seabios_through_grub_and_the_isos_isolinux_menu() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("f.img");
    dc_ok(&["usb", &s(&iso), "-o", &s(&stick), "--mode", "fat32"]);
    boots(&stick, Firmware::Bios, BIOS_MARKER, t.path());
}

#[test]
fn boots_a_fat32_stick_of_our_own_cd_only_iso_on_ovmf_with_the_el_torito_efi_loader() {
    let t = tmp();
    let iso = plain_iso(t.path());
    let stick = t.path().join("p.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick)]);
    assert_eq!(j["mode"], "fat32");
    assert!(r.stderr.contains("mode fat32: the ISO cannot be copied as it is: it is not a hybrid ISO"), "{}", r.stderr);
    assert_eq!(j["uefi"]["how"], "EFI/BOOT/BOOTX64.EFI from the UEFI El Torito image /boot/efiboot.img");
    assert!(r.stderr.contains("added 1 files of EFI/ from the UEFI El Torito image /boot/efiboot.img"), "{}", r.stderr);
    assert_sgdisk_clean(&stick);
    boots(&stick, Firmware::Uefi, UEFI_MARKER, t.path());
}

#[test]
#[ignore = "a boot under TCG (about 10 s) beyond the three of the default suite, which boots dd on SeaBIOS already"]
fn boots_a_hybrid_iso_copied_dd_on_ovmf() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("dd.img");
    dc_ok(&["usb", &s(&iso), "-o", &s(&stick)]);
    boots(&stick, Firmware::Uefi, UEFI_MARKER, t.path());
}

#[test]
#[ignore = "a boot under TCG (about 10 s) beyond the three of the default suite, which boots fat32 on OVMF already"]
fn boots_a_fat32_stick_of_a_hybrid_iso_on_ovmf() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let stick = t.path().join("f.img");
    dc_ok(&["usb", &s(&iso), "-o", &s(&stick), "--mode", "fat32"]);
    boots(&stick, Firmware::Uefi, UEFI_MARKER, t.path());
}

#[test]
#[ignore = "a boot under TCG (about 10 s) beyond the three of the default suite, which boots fat32 on SeaBIOS already"]
fn boots_a_fat32_stick_of_our_own_cd_only_iso_on_seabios() {
    let t = tmp();
    let iso = plain_iso(t.path());
    let stick = t.path().join("p.img");
    dc_ok(&["usb", &s(&iso), "-o", &s(&stick)]);
    boots(&stick, Firmware::Bios, BIOS_MARKER, t.path());
}

/// Debian's grub-rescue ISO shows its GRUB menu read from the FAT partition (about 1 s:
/// GRUB draws its menu and the test stops there).
#[test]
fn debians_grub_rescue_iso_on_fat32_shows_its_own_menu_on_seabios() {
    let t = tmp();
    let iso = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso";
    let stick = t.path().join("rescue.img");
    let (j, _) = usb(&[iso, "-o", &s(&stick), "--mode", "fat32"]);
    assert_eq!(j["bios"]["how"], "GRUB (i386-pc) in a BIOS boot partition, reading the ISO's /boot/grub/grub.cfg");
    assert_sgdisk_clean(&stick);
    // The menu's first entry, drawn on the serial console GRUB's early configuration adds.
    boots(&stick, Firmware::Bios, "GNU/Linux", t.path());
}

#[test]
fn files_over_4_gib_are_refused_before_writing_unless_the_exfat_layout_takes_them() {
    let t = tmp();
    let src = t.path().join("big");
    // Sparse files: our own UDF writer keeps their holes, so the ISO stays small.
    sh(&format!(
        "mkdir -p '{s}/sources' '{s}/efi/boot'; truncate -s 4294967296 '{s}/sources/install.wim'
         echo efi > '{s}/efi/boot/bootx64.efi'; echo boot > '{s}/sources/boot.wim'",
        s = src.display()
    ));
    let iso = t.path().join("big.iso");
    dc_ok(&["iso", "create", &s(&src), "-o", &s(&iso), "--udf", "-V", "BIG"]);
    let out = t.path().join("stick.img");
    dc(&["usb", &s(&iso), "-o", &s(&out)]).expect_code(1).expect_stderr_all(&[
        "/sources/install.wim: cannot be split into .swm parts: not a WIM file",
        "--windows-layout exfat stores it whole",
    ]);
    assert_no_output(&out);
    // The exFAT layout holds it (a qcow2 keeps the 4 GiB of holes small).
    let q = t.path().join("stick.qcow2");
    let (j, _) = usb(&[&s(&iso), "-o", &s(&q), "-O", "qcow2", "--windows-layout", "exfat"]);
    assert_eq!(j["partitions"][1]["kind"], "fat", "{j}");
    qemu_check_clean(&q);
    let ls = dc_ok(&["ls", "-l", &format!("{}:2", s(&q)), "sources"]).stdout_str();
    assert!(ls.contains("4294967296") && ls.contains("install.wim"), "{ls}");
    std::fs::remove_file(&q).unwrap();
    sh(&format!("mv '{s}/sources/install.wim' '{s}/disk.img'", s = src.display()));
    let iso2 = t.path().join("big2.iso");
    dc_ok(&["iso", "create", &s(&src), "-o", &s(&iso2), "--udf", "-V", "BIG"]);
    dc(&["usb", &s(&iso2), "-o", &s(&out), "--windows-layout", "exfat"]).expect_code(1).expect_stderr_all(&[
        "/disk.img: 4294967296 bytes is larger than a FAT file can be",
        "the FAT32 boot partition (every file outside sources/) cannot hold it",
    ]);
    assert_no_output(&out);
}

#[test]
fn names_fat_cannot_tell_apart_are_refused_before_writing() {
    let t = tmp();
    let src = t.path().join("case");
    sh(&format!("mkdir -p '{s}'; echo a > '{s}/README'; echo b > '{s}/readme'", s = src.display()));
    let iso = t.path().join("case.iso");
    sh(&format!("xorriso -as mkisofs -quiet -o '{}' -R -J '{}'", iso.display(), src.display()));
    let out = t.path().join("stick.img");
    dc(&["usb", &s(&iso), "-o", &s(&out)]).expect_code(1).expect_stderr_all(&[
        "1 of the ISO's entries cannot be stored on the stick",
        "FAT names ignore case and another entry has this name",
    ]);
    assert_no_output(&out);
}

#[test]
fn a_windows_wim_is_split_into_swm_parts_that_wimlib_joins_back() {
    let t = tmp();
    let (w, win) = (t.path().join("wimsrc"), t.path().join("win"));
    // A real WIM (wimlib), 40 incompressible files of 100 kB, split at 1 MiB.
    sh(&format!(
        "mkdir -p '{w}' '{win}/sources' '{win}/efi/boot'
         for i in $(seq 1 40); do head -c 100000 /dev/urandom > '{w}/f'$i; done
         wimlib-imagex capture '{w}' '{win}/sources/install.wim' --compress=none >/dev/null
         echo boot > '{win}/sources/boot.wim'; head -c 50000 /dev/urandom > '{win}/efi/boot/bootx64.efi'
         genisoimage -quiet -udf -allow-limited-size -iso-level 3 -V WIN -o '{t}/win.iso' '{win}'",
        w = w.display(),
        win = win.display(),
        t = t.path().display()
    ));
    let stick = t.path().join("win.img");
    let (j, r) = usb(&[&s(&t.path().join("win.iso")), "-o", &s(&stick), "--wim-part-size", "1M"]);
    let note = j["notes"].as_array().unwrap().iter().find_map(|n| n.as_str().filter(|n| n.contains("split into")));
    let note = note.unwrap_or_else(|| panic!("no split note: {}", r.stderr)).to_string();
    assert!(note.starts_with("/sources/install.wim: ") && note.contains("sources/install2.swm"), "{note}");
    assert_sgdisk_clean(&stick);
    let fat = partition(&stick, &j, 1, t.path());
    tool_text("fsck.fat", &["-n", &s(&fat)]);
    let listing = tool_out("mdir", &["-/", "-b", "-i", &s(&fat), "::/sources"]);
    assert!(!listing.contains("install.wim"), "the WIM is replaced by its parts: {listing}");
    let parts: Vec<String> = listing.lines().filter(|l| l.ends_with(".swm")).map(str::to_string).collect();
    assert!(parts.len() >= 3, "{listing}");
    let out = t.path().join("parts");
    std::fs::create_dir(&out).unwrap();
    let mut names = Vec::new();
    for p in &parts {
        let name = p.rsplit('/').next().unwrap();
        let bytes = mtools_cat(&fat, &format!("sources/{name}"));
        assert!(bytes.len() <= 1 << 20, "{name} is {} bytes", bytes.len());
        write_file(&out.join(name), &bytes);
        names.push(out.join(name));
    }
    let joined = t.path().join("joined.wim");
    let mut args = vec!["join".to_string(), s(&joined)];
    args.extend(names.iter().map(|n| s(n)));
    tool_text("wimlib-imagex", &args.iter().map(String::as_str).collect::<Vec<_>>());
    tool_text("wimlib-imagex", &["verify", &s(&joined)]);
    let back = t.path().join("back");
    tool_text("wimlib-imagex", &["apply", &s(&joined), "1", &s(&back)]);
    for i in 1..=40 {
        assert!(read(&back.join(format!("f{i}"))) == read(&w.join(format!("f{i}"))), "f{i} differs after the join");
    }
    dc(&["usb", &s(&t.path().join("win.iso")), "-o", &s(&stick), "--wim-part-size", "4G"])
        .expect_code(1)
        .expect_stderr_all(&["--wim-part-size 4 GiB: a part must be 1 MiB to 4 GiB - 1"]);
}

/// A stick written straight onto a device (a loop device over random bytes) goes through
/// `diskcast write`'s checks and read-back: refused without a terminal unless --yes, and
/// refused in any format but raw, both leaving the device alone; with --yes the device
/// holds exactly the stick that the same command writes to a file.
#[test]
fn a_stick_written_onto_a_device_equals_the_stick_image() {
    let t = tmp();
    let iso = hybrid_iso(t.path());
    let backing = t.path().join("device.img");
    random_file(&backing, 80 * MIB);
    let before = read(&backing);
    let Some(lo) = Loop::try_attach(&backing, false) else { return };
    let args = |out: &str, extra: &[&str]| {
        let mut v = vec!["usb".to_string(), s(&iso), "-o".into(), out.to_string(), "--mode".into(), "fat32".into()];
        v.extend(["--size".into(), "64M".into()]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |v: &[String]| dc_epoch(Some("1700000000"), &v.iter().map(String::as_str).collect::<Vec<_>>());

    let r = run(&args(&lo.dev, &[])).expect_code(1);
    assert!(r.stderr.contains("standard input is not a terminal to ask on; pass --yes"), "{}", r.stderr);
    let r = run(&args(&lo.dev, &["--yes", "-O", "qcow2"])).expect_code(1);
    assert!(r.stderr.contains("is a block device: it holds the stick itself (raw)"), "{}", r.stderr);
    assert!(read(&backing) == before, "a refused write changed the device");

    let r = run(&args(&lo.dev, &["--yes"])).expect_ok();
    assert!(r.stderr.contains("written and verified"), "{}", r.stderr);
    let stick = t.path().join("stick.img");
    run(&args(&s(&stick), &[])).expect_ok();
    drop(lo);
    let (made, written) = (read(&stick), read(&backing));
    assert_eq!(u64::try_from(made.len()).unwrap(), 64 * MIB);
    assert!(written[..made.len()] == made[..], "the device differs from the stick image");
    assert!(written[made.len()..] == before[made.len()..], "bytes past the stick were changed");
}

/// What the initramfs of a multi-boot test ISO prints, by ISO.
fn multi_marker(name: &str) -> String {
    format!("DISKCAST_MULTI_{}_OK", name.to_ascii_uppercase())
}

/// An ISO made by `grub-mkrescue` (a GRUB disc) holding the test kernel, a busybox
/// initramfs whose init prints [`multi_marker`] and powers off, and a
/// `boot/grub/loopback.cfg` booting them (the marker is in the initramfs only, not on
/// the command line, so the kernel's banner cannot show it).
fn grub_rescue_iso(t: &Path, name: &str) -> PathBuf {
    let iso = t.join(format!("{name}.iso"));
    sh(&format!(
        "cd '{t}'; mkdir -p '{name}/boot/grub' '{name}-initrd/bin'
         cp /bin/busybox '{name}-initrd/bin/'
         printf '#!/bin/busybox sh\\n/bin/busybox echo {marker}\\n/bin/busybox poweroff -f\\n' > '{name}-initrd/init'
         chmod +x '{name}-initrd/init'
         (cd '{name}-initrd' && find . | cpio -o -H newc 2>/dev/null | gzip) > '{name}/boot/initrd.img'
         cp '{kernel}' '{name}/boot/vmlinuz'
         printf 'set timeout=0\\nmenuentry \"{name}\" {{\\n  linux /boot/vmlinuz console=ttyS0,115200 panic=-1 quiet\\n  initrd /boot/initrd.img\\n}}\\n' \
           > '{name}/boot/grub/loopback.cfg'
         grub-mkrescue -o '{iso}' '{name}' 2>/dev/null",
        t = t.display(),
        marker = multi_marker(name),
        kernel = test_kernel().display(),
        iso = iso.display(),
    ));
    iso
}

/// An ISO (xorriso, Rock Ridge and Joliet, volume id `label`) of the tree `script`
/// makes in a new directory `name`.
fn script_iso(t: &Path, name: &str, label: &str, script: &str) -> PathBuf {
    let dir = t.join(name);
    sh(&format!("mkdir -p '{d}'; cd '{d}'; {script}", d = dir.display()));
    let iso = t.join(format!("{name}.iso"));
    sh(&format!("xorriso -as mkisofs -quiet -R -J -V '{label}' -o '{}' '{}'", iso.display(), dir.display()));
    iso
}

/// The menu a multi-boot stick's GRUB reads, taken from its boot partition by mtools
/// and judged by `grub-script-check`.
fn checked_menu(stick: &Path, j: &Value, t: &Path) -> String {
    let boot = partition(stick, j, 1, t);
    let fsck = tool_text("fsck.fat", &["-n", &s(&boot)]);
    assert!(!fsck.contains("differ") && !fsck.contains("Free cluster summary wrong"), "{fsck}");
    let efi = mtools_cat(&boot, "EFI/BOOT/BOOTX64.EFI");
    assert_eq!(&efi[..2], b"MZ", "BOOTX64.EFI is a PE image");
    let cfg = t.join("grub.cfg");
    write_file(&cfg, &mtools_cat(&boot, "boot/grub/grub.cfg"));
    tool_text("grub-script-check", &[&s(&cfg)]);
    String::from_utf8(read(&cfg)).unwrap()
}

/// The `linux` line of menu entry `n` (1-based).
fn linux_line(menu: &str, n: usize) -> String {
    let entry = menu.split("menuentry ").nth(n).unwrap_or_else(|| panic!("no entry {n}:\n{menu}"));
    entry.lines().find(|l| l.trim_start().starts_with("linux ")).unwrap_or_else(|| panic!("{entry}")).trim().to_string()
}

/// Two GRUB discs (grub-mkrescue) on one stick, the second the default: every checker
/// is clean, the ISOs read back from the FAT32 data partition by mtools equal the ISO
/// files (cmp), the menu passes grub-script-check and finds the data partition by the
/// UUID blkid reads, and OVMF boots the second ISO's initramfs from a USB stick.
#[test]
fn multi_iso_stick_holds_the_isos_unchanged_and_boots_the_default_on_ovmf() {
    let t = tmp();
    let (one, two) = (grub_rescue_iso(t.path(), "one"), grub_rescue_iso(t.path(), "two"));
    let stick = t.path().join("multi.img");
    let (j, r) = usb(&[&s(&one), &s(&two), "-o", &s(&stick), "--default", "2", "--timeout", "1"]);
    assert_eq!(j["mode"], "multi", "{}", r.describe());
    assert_eq!(j["menu"][1]["family"], "grub-loopback", "{j}");
    assert_eq!(j["menu"][1]["title"], "2. two.iso (GRUB loopback.cfg)", "{j}");
    assert!(j["uefi"]["bootable"] == true && j["bios"]["bootable"] == true, "{j}");
    assert_hybrid_mbr(&stick, &j);
    let types = tool_text("sgdisk", &["-p", &s(&stick)]);
    let kinds: Vec<&str> = types.lines().filter(|l| l.trim_start().starts_with(char::is_numeric)).collect();
    assert!(
        kinds.len() == 3 && kinds[0].contains("EF00") && kinds[1].contains("0700") && kinds[2].contains("EF02"),
        "{types}"
    );

    let menu = checked_menu(&stick, &j, t.path());
    assert!(menu.contains("set default=1\n") && menu.contains("set timeout=1\n"), "{menu}");
    assert!(
        menu.contains(
            "  loopback loop \"($data)\"'/isos/two.iso'\n  set root=(loop)\n  configfile '/boot/grub/loopback.cfg'\n"
        ),
        "{menu}"
    );
    let data = partition(&stick, &j, 2, t.path());
    let fsck = tool_text("fsck.fat", &["-n", &s(&data)]);
    assert!(!fsck.contains("differ"), "{fsck}");
    let uuid = tool_out("blkid", &["-o", "value", "-s", "UUID", &s(&data)]);
    assert!(menu.contains(&format!("search --no-floppy --fs-uuid --set=data '{}'\n", uuid.trim())), "{uuid}\n{menu}");
    for iso in [&one, &two] {
        let name = iso.file_name().unwrap().to_str().unwrap();
        let back = t.path().join(format!("back-{name}"));
        tool_text("mcopy", &["-n", "-i", &s(&data), &format!("::/isos/{name}"), &s(&back)]);
        tool_text("cmp", &[&s(iso), &s(&back)]);
    }
    boots(&stick, Firmware::Uefi, &multi_marker("two"), t.path());
}

/// The same two GRUB discs with `--default 1`: SeaBIOS boots the first entry (the
/// default-suite boot above boots the second on OVMF, so each entry and each firmware
/// is booted once).
#[test]
fn multi_iso_stick_boots_its_first_entry_on_seabios() {
    let t = tmp();
    let (one, two) = (grub_rescue_iso(t.path(), "one"), grub_rescue_iso(t.path(), "two"));
    let stick = t.path().join("multi1.img");
    let (j, _) = usb(&[&s(&one), &s(&two), "-o", &s(&stick), "--default", "1", "--timeout", "1"]);
    assert_eq!(j["menu"][0]["title"], "1. one.iso (GRUB loopback.cfg)", "{j}");
    assert!(checked_menu(&stick, &j, t.path()).contains("set default=0\n"));
    boots(&stick, Firmware::Bios, &multi_marker("one"), t.path());
}

/// ISO trees laid out as Debian live 12, Ubuntu 24.04, Fedora 40 Workstation Live and
/// the Arch install medium lay theirs out (kernel, initramfs, root image, their GRUB or
/// isolinux configuration; contents are stand-ins), made into ISOs by xorriso, on an
/// exFAT data partition: fsck.exfat is clean, the ISOs read back through the kernel's
/// exfat driver (or exfat-fuse) equal the files, the menu passes grub-script-check and
/// each entry boots the ISO's own kernel with the argument its family finds the ISO by.
#[test]
fn multi_iso_menu_entries_carry_each_familys_kernel_arguments() {
    let t = tmp();
    let mk = |name: &str, label: &str, script: &str| script_iso(t.path(), name, label, script);
    let debian = mk(
        "debian-live",
        "d-live 12.5.0 xf amd64",
        "mkdir -p live isolinux boot/grub; echo s > live/filesystem.squashfs
         echo k > live/vmlinuz-6.1.0-18-amd64; echo i > live/initrd.img-6.1.0-18-amd64
         printf 'menuentry \"Live system (amd64)\" --hotkey=l {\\n\\tlinux\\t/live/vmlinuz-6.1.0-18-amd64 boot=live components quiet splash findiso=${iso_path}\\n\\tinitrd\\t/live/initrd.img-6.1.0-18-amd64\\n}\\n' > boot/grub/grub.cfg
         echo 'source /boot/grub/grub.cfg' > boot/grub/loopback.cfg
         printf 'include live.cfg\\n' > isolinux/isolinux.cfg",
    );
    let ubuntu = mk(
        "ubuntu",
        "Ubuntu 24.04 LTS amd64",
        "mkdir -p casper boot/grub; echo k > casper/vmlinuz; echo i > casper/initrd; echo s > casper/minimal.squashfs
         printf 'set timeout=30\\nmenuentry \"Try or Install Ubuntu\" {\\n\\tset gfxpayload=keep\\n\\tlinux\\t/casper/vmlinuz  --- quiet splash\\n\\tinitrd\\t/casper/initrd\\n}\\n' > boot/grub/grub.cfg",
    );
    let fedora = mk(
        "fedora",
        "Fedora-WS-Live-40-1-14",
        "mkdir -p images/pxeboot LiveOS EFI/BOOT; echo k > images/pxeboot/vmlinuz; echo i > images/pxeboot/initrd.img
         echo s > LiveOS/squashfs.img
         printf \"menuentry 'Start Fedora-Workstation-Live 40' --class fedora {\\n\\tlinux /images/pxeboot/vmlinuz root=live:CDLABEL=Fedora-WS-Live-40-1-14  rd.live.image quiet rhgb\\n\\tinitrd /images/pxeboot/initrd.img\\n}\\n\" > EFI/BOOT/grub.cfg",
    );
    let arch = mk(
        "archlinux",
        "ARCH_202406",
        "mkdir -p arch/boot/x86_64 arch/x86_64 boot/syslinux; echo k > arch/boot/x86_64/vmlinuz-linux
         echo i > arch/boot/x86_64/initramfs-linux.img; echo u > arch/boot/intel-ucode.img; echo s > arch/x86_64/airootfs.sfs
         printf 'LABEL arch64\\nMENU LABEL Arch Linux install medium (x86_64, BIOS)\\nLINUX /arch/boot/x86_64/vmlinuz-linux\\nINITRD /arch/boot/intel-ucode.img,/arch/boot/x86_64/initramfs-linux.img\\nAPPEND archisobasedir=arch archisolabel=ARCH_202406\\n' > boot/syslinux/syslinux.cfg",
    );
    let stick = t.path().join("families.img");
    let isos = [&debian, &ubuntu, &fedora, &arch];
    let mut args: Vec<String> = isos.iter().map(|i| s(i)).collect();
    args.extend(["-o", &s(&stick), "--data-fs", "exfat", "--label", "STICK"].map(String::from));
    let (j, r) = usb(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let families: Vec<&str> = (0..4).map(|i| j["menu"][i]["family"].as_str().unwrap()).collect();
    assert_eq!(families, ["debian-live", "ubuntu", "fedora", "arch"], "{}", r.describe());
    assert_eq!(j["menu"][3]["from"], "/boot/syslinux/syslinux.cfg", "{j}");
    assert_sgdisk_clean(&stick);
    let menu = checked_menu(&stick, &j, t.path());
    assert!(menu.contains("set default=0\n") && menu.contains("set timeout=10\n"), "{menu}");

    let data = partition(&stick, &j, 2, t.path());
    let fsck = tool_text("fsck.exfat", &["-n", &s(&data)]);
    assert!(fsck.contains("clean"), "{fsck}");
    let uuid = tool_out("blkid", &["-o", "value", "-s", "UUID", &s(&data)]).trim().to_string();
    assert_eq!(tool_out("blkid", &["-o", "value", "-s", "LABEL", &s(&data)]).trim(), "STICK");
    {
        let mnt = t.path().join("mnt");
        let _m = crate::exfat::Mounted::new(&data, &mnt, true);
        for iso in isos {
            tool_text("cmp", &[&s(iso), &s(&mnt.join("isos").join(iso.file_name().unwrap()))]);
        }
    }
    assert_eq!(
        linux_line(&menu, 1),
        "linux (loop)'/live/vmlinuz-6.1.0-18-amd64' 'boot=live' 'components' 'quiet' 'splash' 'findiso=/isos/debian-live.iso'"
    );
    assert!(menu.contains("initrd (loop)'/live/initrd.img-6.1.0-18-amd64'\n"), "{menu}");
    assert_eq!(
        linux_line(&menu, 2),
        "linux (loop)'/casper/vmlinuz' 'iso-scan/filename=/isos/ubuntu.iso' '---' 'quiet' 'splash'"
    );
    assert_eq!(
        linux_line(&menu, 3),
        "linux (loop)'/images/pxeboot/vmlinuz' 'root=live:CDLABEL=Fedora-WS-Live-40-1-14' 'rd.live.image' 'quiet' 'rhgb' 'iso-scan/filename=/isos/fedora.iso'"
    );
    assert_eq!(
        linux_line(&menu, 4),
        format!(
            "linux (loop)'/arch/boot/x86_64/vmlinuz-linux' 'archisobasedir=arch' 'img_dev=/dev/disk/by-uuid/{uuid}' 'img_loop=/isos/archlinux.iso'"
        )
    );
    assert!(
        menu.contains("initrd (loop)'/arch/boot/intel-ucode.img' (loop)'/arch/boot/x86_64/initramfs-linux.img'\n"),
        "{menu}"
    );
}

/// What a multi-boot stick cannot hold is refused before anything is written: a Debian
/// installer ISO (its initramfs finds no CD), an ISO of no known family, two ISOs of one
/// name, a --default past the menu, a --size the ISOs do not fit, options for one ISO.
#[test]
fn multi_iso_refusals_come_before_writing() {
    let t = tmp();
    let (one, two) = (grub_rescue_iso(t.path(), "one"), grub_rescue_iso(t.path(), "two"));
    let mk = |name: &str, script: &str| script_iso(t.path(), name, "CDROM", script);
    let installer = mk(
        "netinst",
        "mkdir -p install.amd .disk; echo k > install.amd/vmlinuz; echo i > install.amd/initrd.gz; echo d > .disk/info",
    );
    let plain = mk("plain", "echo x > readme.txt");
    let out = t.path().join("no.img");
    let out_arg = s(&out);
    let refused = |args: &[&str], expect: &[&str]| {
        let mut all = vec!["usb"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", &out_arg]);
        dc(&all).expect_code(1).expect_stderr_all(expect);
        assert_no_output(&out);
    };
    refused(
        &[&s(&one), &s(&installer)],
        &["netinst.iso: cannot be booted from the multi-boot stick", "Debian installer ISO", "hd-media"],
    );
    refused(
        &[&s(&plain), &s(&one)],
        &["plain.iso: cannot be booted from the multi-boot stick", "its family is not one diskcast boots"],
    );
    // Debian's grub-rescue ISO: GRUB with a grub.cfg for its own disc, no loopback.cfg.
    let rescue = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso";
    refused(&[&s(&one), rescue], &["grub-rescue-cdrom.iso: cannot be booted from the multi-boot stick"]);
    refused(&[&s(&one), &s(&one)], &["would both be /isos/one.iso on the stick"]);
    refused(&[&s(&one), &s(&one), "--default", "3"], &["--default 3: the menu has entries 1 to 2"]);
    refused(&[&s(&one), &s(&one), "--mode", "fat32"], &["--mode is for a stick made from one ISO"]);
    refused(&[&s(&one), "--data-fs", "exfat"], &["--data-fs is for a multi-boot stick"]);
    refused(&[&s(&one), &s(&two), "--timeout", "100000"], &["--timeout 100000: the menu waits at most 86400 seconds"]);
    refused(&[&s(&one), &s(&two), "--size", "20M"], &["--size 20 MiB is too small: the GPT and the boot partitions"]);
    refused(&[&s(&one), &s(&two), "--size", "60M"], &["--size 60 MiB is too small for the ISOs on FAT32"]);
}

/// A multi-boot stick written onto a device goes through `diskcast write`'s checks (no
/// terminal: refused, the device untouched) and read-back, and the device then holds
/// exactly the stick the same command writes to a file.
#[test]
fn a_multi_iso_stick_written_onto_a_device_equals_the_stick_image() {
    let t = tmp();
    let (one, two) = (grub_rescue_iso(t.path(), "one"), grub_rescue_iso(t.path(), "two"));
    let backing = t.path().join("device.img");
    random_file(&backing, 128 * MIB);
    let before = read(&backing);
    let Some(lo) = Loop::try_attach(&backing, false) else { return };
    let run = |out: &str, extra: &[&str]| {
        let mut v = vec!["usb", one.to_str().unwrap(), two.to_str().unwrap(), "-o", out];
        v.extend_from_slice(extra);
        dc_epoch(Some("1700000000"), &v)
    };
    let r = run(&lo.dev, &[]).expect_code(1);
    assert!(r.stderr.contains("standard input is not a terminal to ask on; pass --yes"), "{}", r.stderr);
    assert!(read(&backing) == before, "a refused write changed the device");
    let r = run(&lo.dev, &["--yes"]).expect_ok();
    assert!(r.stderr.contains("written and verified"), "{}", r.stderr);
    let stick = t.path().join("stick.img");
    run(&s(&stick), &[]).expect_ok();
    drop(lo);
    let (made, written) = (read(&stick), read(&backing));
    assert!(written[..made.len()] == made[..], "the device differs from the stick image");
    assert!(written[made.len()..] == before[made.len()..], "bytes past the stick were changed");
}

/// The MBR of a fat32 or multi-boot stick with BIOS boot is hybrid: entry 1 protective
/// (0xee) over the GPT's own sectors from LBA 1, entry 2 the first partition (FAT32 LBA,
/// 0x0c), active; judged by sfdisk's reading of the nested DOS table, gdisk's scan
/// (`MBR: hybrid`) and sgdisk -v.
fn assert_hybrid_mbr(stick: &Path, j: &Value) {
    let (start, size) = (j["partitions"][0]["start"].as_u64().unwrap(), j["partitions"][0]["size"].as_u64().unwrap());
    let dump = tool_text("sfdisk", &["--label-nested", "dos", "-d", &s(stick)]);
    let rows: Vec<String> = dump
        .lines()
        .filter(|l| l.contains(": start="))
        .map(|l| l.split_once(" : ").unwrap().1.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "start= 1, size= 2047, type=ee".to_string(),
            format!("start= {}, size= {}, type=c, bootable", start / 512, size / 512)
        ],
        "{dump}"
    );
    let scan = tool_text("gdisk", &["-l", &s(stick)]);
    assert!(scan.contains("MBR: hybrid") && scan.contains("GPT: present"), "{scan}");
    assert_sgdisk_clean(stick);
}

/// Where `scripts/setup.sh` unpacks `debian-installer-12-netboot-amd64`'s text installer.
fn debian_installer_dir() -> PathBuf {
    // $DISKCAST_TEST_ASSETS/kernel/cloud-amd64 -> $DISKCAST_TEST_ASSETS/debian-installer
    let assets = test_kernel_dir().parent().and_then(Path::parent).unwrap().to_path_buf();
    let dir = assets.join("debian-installer/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64");
    assert!(dir.join("initrd.gz").is_file(), "{} is missing: run scripts/setup.sh", dir.display());
    dir
}

/// What the installer shows first on its serial console. The boot tests' VM has 512 MiB,
/// below what Debian 12's installer needs for its normal mode, so its first dialog is
/// lowmem's (before the language one), whose text newt draws as one run.
const DI_MARKER: &str = "Entering low memory mode";
/// The installer's 40 MB initrd under TCG: about 200 s to its first dialog on a loaded
/// 2-core machine (measured), far less on an idle one.
const DI_BOOT_TIMEOUT: Duration = Duration::from_secs(480);

/// An ISO laid out as Debian 12's netinst lays its own (debian-cd's layout), from the
/// netboot package's real installer: `install.amd/vmlinuz` and `initrd.gz`; `isolinux/`
/// with isolinux and Debian's boot screens (menu.cfg, txt.cfg, adtxt.cfg, ... with the
/// kernel paths rewritten to `/install.amd/` as debian-cd rewrites them, and
/// `isolinux.cfg` from the netboot `syslinux.cfg`); `boot/grub/` with Debian's grub.cfg
/// (paths rewritten), its font and x86_64-efi modules and `efi.img`; `EFI/boot/` with
/// shim (`bootx64.efi`) and Debian's signed CD GRUB (`grubx64.efi`, gcdx64, which finds
/// the medium by `/.disk/info`); `.disk/info`. Made by xorriso as debian-cd makes it:
/// hybrid (isohdpfx.bin), the El Torito EFI image listed in the GPT.
///
/// Two changes for a machine watched over a serial line, as its user would make them:
/// the Install entry of both configurations gets `console=ttyS0,115200`, and the menus
/// get a timeout (Debian's wait for a key).
fn debian_netinst_like_iso(t: &Path) -> PathBuf {
    let di = debian_installer_dir();
    let shim = crate::vm_secureboot::asset("usr/lib/shim/shimx64.efi.signed");
    let cd_grub = crate::vm_secureboot::asset("usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed");
    let st = t.join("netinst");
    let iso = t.join("debian-12-amd64-netinst-like.iso");
    sh(&format!(
        "di='{di}'; st='{st}'
         mkdir -p \"$st/install.amd\" \"$st/isolinux\" \"$st/boot/grub\" \"$st/EFI/boot\" \"$st/.disk\"
         cp \"$di/linux\" \"$st/install.amd/vmlinuz\"; cp \"$di/initrd.gz\" \"$st/install.amd/initrd.gz\"
         cp \"$di\"/boot-screens/* \"$st/isolinux/\"
         cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 /usr/lib/syslinux/modules/bios/vesamenu.c32 \
            /usr/lib/syslinux/modules/bios/libcom32.c32 /usr/lib/syslinux/modules/bios/libutil.c32 \"$st/isolinux/\"
         mv \"$st/isolinux/syslinux.cfg\" \"$st/isolinux/isolinux.cfg\"
         cp -r \"$di/grub/font.pf2\" \"$di/grub/grub.cfg\" \"$di/grub/x86_64-efi\" \"$st/boot/grub/\"
         for f in \"$st\"/isolinux/*.cfg \"$st\"/isolinux/*.txt \"$st/boot/grub/grub.cfg\"; do
           sed -i -e 's#debian-installer/amd64/boot-screens/##g' -e 's#/*debian-installer/amd64/linux#/install.amd/vmlinuz#g' \
                  -e 's#/*debian-installer/amd64/initrd.gz#/install.amd/initrd.gz#g' \"$f\"
         done
         grep -q '^label install' \"$st/isolinux/txt.cfg\"; grep -q \"^menuentry 'Install'\" \"$st/boot/grub/grub.cfg\"
         sed -i -e 's#--- quiet *$#--- quiet console=ttyS0,115200#' \"$st/isolinux/txt.cfg\"
         sed -i -e 's#^timeout 0#timeout 10#' \"$st/isolinux/isolinux.cfg\"
         sed -i -e '0,/vga=788 --- quiet$/s##vga=788 --- quiet console=ttyS0,115200#' -e '1i set timeout=1' \"$st/boot/grub/grub.cfg\"
         grep -q 'console=ttyS0' \"$st/isolinux/txt.cfg\"; grep -q 'console=ttyS0' \"$st/boot/grub/grub.cfg\"
         cp '{shim}' \"$st/EFI/boot/bootx64.efi\"; cp '{cd_grub}' \"$st/EFI/boot/grubx64.efi\"
         echo 'Debian GNU/Linux 12 \"Bookworm\" - Official amd64 NETINST (layout of diskcast tests)' > \"$st/.disk/info\"
         mkfs.fat -C \"$st/boot/grub/efi.img\" 8192 >/dev/null
         MTOOLS_SKIP_CHECK=1 mmd -i \"$st/boot/grub/efi.img\" ::/EFI ::/EFI/boot
         MTOOLS_SKIP_CHECK=1 mcopy -i \"$st/boot/grub/efi.img\" \"$st/EFI/boot/bootx64.efi\" \"$st/EFI/boot/grubx64.efi\" ::/EFI/boot/
         xorriso -as mkisofs -quiet -r -V 'Debian 12.5.0 amd64 n' -o '{iso}' -J -joliet-long -cache-inodes \
           -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin -b isolinux/isolinux.bin -c isolinux/boot.cat \
           -boot-load-size 4 -boot-info-table -no-emul-boot -eltorito-alt-boot -e boot/grub/efi.img -no-emul-boot \
           -isohybrid-gpt-basdat \"$st\"
         rm -rf \"$st\"",
        di = di.display(),
        shim = shim.display(),
        cd_grub = cd_grub.display(),
        st = st.display(),
        iso = iso.display(),
    ));
    iso
}

/// The fat32 stick of the netinst-like ISO: BIOS boots GRUB with the entries of
/// Debian's own isolinux menu (its Help entry, which loads prompt.cfg, left out), UEFI
/// boots shim from the ISO's files.
fn debian_installer_fat32_stick(t: &Path) -> PathBuf {
    let iso = debian_netinst_like_iso(t);
    let stick = t.join("di-fat32.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick), "--mode", "fat32"]);
    assert_eq!(j["uefi"]["how"], "EFI/BOOT/BOOTX64.EFI from the ISO's files", "{}", r.describe());
    assert!(j["bios"]["how"].as_str().unwrap().contains("isolinux configuration /isolinux/isolinux.cfg"), "{j}");
    assert!(r.stderr.contains("help"), "the Help entry (CONFIG prompt.cfg) is named as left out: {}", r.stderr);
    assert_hybrid_mbr(&stick, &j);
    let fat = partition(&stick, &j, 1, t);
    tool_text("fsck.fat", &["-n", &s(&fat)]);
    let menu = String::from_utf8(mtools_cat(&fat, "diskcast/bios-grub.cfg")).unwrap();
    assert!(menu.contains("menuentry 'Install' --id 'install' {\n  linux '/install.amd/vmlinuz' 'vga=788'"), "{menu}");
    std::fs::remove_file(fat).unwrap();
    std::fs::remove_file(iso).unwrap();
    stick
}

/// The fat32 stick of the netinst-like ISO boots on `fw` to the installer's first dialog.
fn debian_installer_fat32_stick_boots(fw: Firmware) {
    let t = tmp();
    let stick = debian_installer_fat32_stick(t.path());
    boots_within(&stick, fw, DI_MARKER, t.path(), DI_BOOT_TIMEOUT);
}

/// A real Debian installer (the netboot package's kernel and initrd on a netinst-like
/// ISO) from a fat32 stick on SeaBIOS: GRUB, the entries of Debian's isolinux menu, the
/// installer's first dialog on the serial console.
#[test]
fn debian_installer_fat32_stick_boots_to_its_first_dialog_on_seabios() {
    debian_installer_fat32_stick_boots(Firmware::Bios);
}

/// On OVMF: Debian's shim and CD GRUB from the stick's files, reading Debian's grub.cfg.
#[test]
#[ignore = "a boot of the Debian installer under TCG beyond the default suite's one (SeaBIOS)"]
fn debian_installer_fat32_stick_boots_to_its_first_dialog_on_ovmf() {
    debian_installer_fat32_stick_boots(Firmware::Uefi);
}

#[test]
#[ignore = "boots of the Debian installer under TCG beyond the default suite's one (SeaBIOS, fat32)"]
fn debian_installer_dd_stick_boots_to_its_first_dialog_on_seabios_and_ovmf() {
    let t = tmp();
    let iso = debian_netinst_like_iso(t.path());
    let stick = t.path().join("di-dd.img");
    let (j, _) = usb(&[&s(&iso), "-o", &s(&stick)]);
    assert_eq!(j["mode"], "dd", "{j}");
    boots_within(&stick, Firmware::Bios, DI_MARKER, t.path(), DI_BOOT_TIMEOUT);
    boots_within(&stick, Firmware::Uefi, DI_MARKER, t.path(), DI_BOOT_TIMEOUT);
}

/// The over-4-GiB WIM of [`a_windows_wim_over_4_gib_becomes_swm_parts_wimlib_joins_back`]:
/// four images ("editions", as a Windows install.wim holds) of one file of random bytes
/// each, stored uncompressed: 4 x 1126 MiB, about 4.4 GiB.
const BIG_WIM_EDITIONS: u64 = 4;
const BIG_WIM_EDITION_BYTES: u64 = 1126 << 20;

/// SHA-256 of a file (sha256sum).
fn sha256(p: &Path) -> String {
    tool_text("sha256sum", &[&s(p)]).split_whitespace().next().unwrap().to_string()
}

/// Bytes a directory's files take on disk (du).
fn disk_use(dir: &Path) -> u64 {
    tool_out("du", &["-s", "-B1", &s(dir)]).split_whitespace().next().unwrap().parse().unwrap()
}

/// Issue 17's Windows case at full size: a WIM over 4 GiB (wimlib-imagex capture,
/// append and optimize, uncompressed random data) on a UDF ISO (genisoimage -udf -allow-limited-size)
/// becomes a fat32 stick with the default part size (3800 MB); the parts, copied out of
/// the stick's FAT partition by mtools, are joined by `wimlib-imagex join` into the WIM
/// byte for byte (SHA-256 recorded before), and every other file read back by mtools has
/// its SHA-256. Each intermediate is deleted once used, so at most two copies of the
/// data exist at a time (about 9 GiB); free space is checked first. Run by CI (see the
/// README's test command); about the time and disk use: docs/usb.md.
#[test]
#[ignore = "makes a 4.4 GiB WIM and holds two copies of it (about 9 GiB of scratch, minutes); CI runs it"]
fn a_windows_wim_over_4_gib_becomes_swm_parts_wimlib_joins_back() {
    let started = std::time::Instant::now();
    let t = tmp();
    let dir = t.path();
    let wim_bytes = BIG_WIM_EDITIONS * BIG_WIM_EDITION_BYTES;
    let need = 2 * wim_bytes + (1 << 30);
    let avail: u64 =
        tool_out("df", &["--output=avail", "-B1", &s(dir)]).lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(
        avail >= need,
        "{}: {avail} bytes free, this test needs {need} (two copies of a {wim_bytes}-byte WIM and 1 GiB); \
         free space or point TMPDIR at a larger filesystem",
        dir.display()
    );
    let mut peak = 0u64;
    let mut stage = |what: &str| {
        let used = disk_use(dir);
        peak = peak.max(used);
        eprintln!("{:>6.1} s  {what}: {used} bytes in scratch", started.elapsed().as_secs_f64());
    };
    let (src, win) = (dir.join("src"), dir.join("win"));
    let wim = win.join("sources/install.wim");
    std::fs::create_dir_all(wim.parent().unwrap()).unwrap();
    std::fs::create_dir_all(win.join("efi/boot")).unwrap();
    for i in 1..=BIG_WIM_EDITIONS {
        sh(&format!(
            "mkdir -p '{src}'; head -c {BIG_WIM_EDITION_BYTES} /dev/urandom > '{src}/edition.bin'
             wimlib-imagex {cmd} '{src}' '{wim}' 'Edition {i}' --compress=none >/dev/null",
            src = src.display(),
            wim = wim.display(),
            cmd = if i == 1 { "capture" } else { "append" },
        ));
        stage(&format!("edition {i} captured"));
        std::fs::remove_dir_all(&src).unwrap();
    }
    // Appending leaves the old lookup table and XML behind; a join writes wimlib's
    // canonical layout, which `optimize` gives the original too (a shipped install.wim
    // is exported that way).
    tool_text("wimlib-imagex", &["optimize", &s(&wim)]);
    stage("WIM optimized");
    assert!(file_len(&wim) > 4 << 30, "the WIM is {} bytes", file_len(&wim));
    let wim_sum = sha256(&wim);
    sh(&format!(
        "cd '{win}'; head -c 2000000 /dev/urandom > sources/boot.wim; echo setup > setup.exe; echo mgr > bootmgr
         head -c 100000 /dev/urandom > efi/boot/bootx64.efi",
        win = win.display()
    ));
    let others = ["sources/boot.wim", "setup.exe", "bootmgr", "efi/boot/bootx64.efi"];
    let sums: Vec<String> = others.iter().map(|f| sha256(&win.join(f))).collect();
    let iso = dir.join("win.iso");
    sh(&format!(
        "genisoimage -quiet -udf -allow-limited-size -iso-level 3 -V CCSA_X64FRE_EN-US_DV9 -o '{}' '{}'",
        iso.display(),
        win.display()
    ));
    stage("ISO made");
    std::fs::remove_dir_all(&win).unwrap();

    let stick = dir.join("stick.img");
    let (j, r) = usb(&[&s(&iso), "-o", &s(&stick)]);
    stage("stick written");
    std::fs::remove_file(&iso).unwrap();
    assert_eq!(j["mode"], "fat32", "{}", r.describe());
    assert!(r.stderr.contains("/sources/install.wim: ") && r.stderr.contains("split into"), "{}", r.stderr);
    assert_sgdisk_clean(&stick);
    let fat = format!("{}@@{}", s(&stick), j["partitions"][0]["start"].as_u64().unwrap());
    let listing = tool_out("mdir", &["-/", "-b", "-i", &fat, "::/sources"]);
    let mut parts: Vec<&str> = listing.lines().filter(|l| l.ends_with(".swm")).collect();
    // install.swm, install2.swm, ...: in part order.
    parts.sort_by_key(|p| (p.len(), p.to_string()));
    assert!(parts.len() == 2 && !listing.contains("install.wim"), "{listing}");
    let out = dir.join("parts");
    std::fs::create_dir(&out).unwrap();
    let mut names = Vec::new();
    for p in &parts {
        let name = out.join(p.rsplit('/').next().unwrap());
        tool_text("mcopy", &["-n", "-i", &fat, p, &s(&name)]);
        assert!(file_len(&name) <= 3_800_000_000, "{} is {} bytes", name.display(), file_len(&name));
        names.push(s(&name));
    }
    for (f, sum) in others.iter().zip(&sums) {
        let back = dir.join("other");
        tool_text("mcopy", &["-n", "-i", &fat, &format!("::/{f}"), &s(&back)]);
        assert_eq!(&sha256(&back), sum, "{f} differs on the stick");
    }
    stage("parts copied out");
    std::fs::remove_file(&stick).unwrap();
    let joined = dir.join("joined.wim");
    let mut args = vec!["join".to_string(), s(&joined)];
    args.extend(names.iter().cloned());
    tool_text("wimlib-imagex", &args.iter().map(String::as_str).collect::<Vec<_>>());
    stage("parts joined");
    std::fs::remove_dir_all(&out).unwrap();
    assert_eq!(sha256(&joined), wim_sum, "the joined WIM differs from the original");
    eprintln!("total {:.0} s, peak scratch {peak} bytes", started.elapsed().as_secs_f64());
}
