//! `diskcast iso remaster` keeps how a disc boots: the system area (MBR boot code, MBR and
//! GPT entries), the El Torito entries as they were (emulation, load size, boot info
//! tables only where the input had them) and partitions appended after the ISO 9660 data.
//! Inputs are Debian's own discs (grub-rescue-pc, ipxe, memtest86+) and discs xorriso
//! builds the way Ubuntu does; xorriso, fdisk and sgdisk judge the results, QEMU boots them.
//! Also `iso create --no-boot-info-table` and `--boot-load-size`.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const GRUB_RESCUE: &str = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso";
const IPXE: &str = "/usr/lib/ipxe/ipxe.iso";
const MEMTEST: &str = "/usr/lib/memtest86+/memtest86+x64.iso";

fn sh(script: &str) {
    let out = Command::new("bash").args(["-euc", script]).output().expect("bash");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// xorriso's reports of the system area and the El Torito catalog, one line each.
fn report(iso: &Path) -> Vec<String> {
    let text = tool_text(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-report_system_area", "plain", "-report_el_torito", "plain"],
    );
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

fn lines<'a>(r: &'a [String], prefix: &str) -> Vec<&'a str> {
    r.iter().filter(|l| l.starts_with(prefix)).map(|l| l.as_str()).collect()
}

/// The sector (2048 bytes) of El Torito image `n` (1-based) as xorriso reports it.
fn image_lba(r: &[String], n: usize) -> u64 {
    let row = lines(r, "El Torito boot img :").into_iter().nth(n - 1).unwrap_or_else(|| panic!("{r:#?}"));
    row.split_whitespace().last().unwrap().parse().unwrap()
}

fn le64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A directory with one new file, to remaster with.
fn addition(t: &Path) -> PathBuf {
    let add = t.join("add");
    std::fs::create_dir_all(add.join("extra")).unwrap();
    std::fs::write(add.join("extra/new.txt"), vec![b'x'; 300_000]).unwrap();
    add
}

fn remaster(input: &str, add: &Path, out: &Path) {
    dc_ok(&["iso", "remaster", input, "--add", add.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let listing = tool_out("bsdtar", &["-tf", out.to_str().unwrap()]);
    assert!(listing.contains("extra/new.txt"), "{listing}");
}

fn boots(disk: &Path, fw: Firmware, bus: Bus, marker: &str, scratch: &Path) {
    if let Err(e) = boot_to_marker(disk, "raw", fw, bus, marker, scratch, Duration::from_secs(120)) {
        panic!("{e}");
    }
}

/// Debian's grub-rescue-pc disc: GRUB's hybrid MBR (boot_hybrid.img, pointing at
/// eltorito.img + 4 sectors), an active 0xCD partition over the disc, and an eltorito.img
/// with a boot info table and GRUB 2's boot info. All of it stays, re-pointed, and the
/// result boots from a USB disk and a CD. (Before: the MBR was dropped, the USB boot
/// stopped at SeaBIOS's "Booting from Hard Disk...".)
#[test]
fn remaster_keeps_grub_rescues_hybrid_mbr_and_boots_from_usb_and_cd() {
    let t = tmp();
    let out = t.path().join("out.iso");
    remaster(GRUB_RESCUE, &addition(t.path()), &out);
    let (a, b) = (report(Path::new(GRUB_RESCUE)), report(&out));
    for want in [
        "System area summary: MBR protective-msdos-label grub2-mbr cyl-align-off",
        "El Torito cat path : /boot.catalog",
        "El Torito img path :   1  /boot/grub/i386-pc/eltorito.img",
        "El Torito img opts :   1  boot-info-table grub2-boot-info",
    ] {
        assert!(a.iter().any(|l| l == want), "input: {want}\n{a:#?}");
        assert!(b.iter().any(|l| l == want), "output: {want}\n{b:#?}");
    }
    let sectors = file_len(&out) / 512;
    let part = format!("MBR partition      :   1   0x80  0xcd            1 {:>12}", sectors - 1);
    assert!(b.contains(&part), "{part}\n{b:#?}");
    assert_eq!(lines(&a, "El Torito boot img :")[0][..60], lines(&b, "El Torito boot img :")[0][..60]);
    // Boot code as on the input; byte 432 points at the image's new place + 4; the image
    // carries GRUB 2's boot info for it at byte 2548.
    let (old, new) = (read(Path::new(GRUB_RESCUE)), read(&out));
    assert_eq!(old[..432], new[..432], "MBR boot code");
    let lba = image_lba(&b, 1);
    assert_ne!(lba, image_lba(&a, 1), "the boot image did not move: the test proves nothing");
    assert_eq!(le64_at(&new, 432), lba * 4 + 4);
    assert_eq!(le64_at(&new, usize::try_from(lba * 2048 + 2548).unwrap()), lba * 4 + 5);
    // GRUB's kernel prints this once core.img is in (on the screen, which SeaBIOS copies
    // to the serial port).
    boots(&out, Firmware::BiosScreen, Bus::Usb, "Welcome to GRUB!", t.path());
    boots(&out, Firmware::BiosScreen, Bus::Cdrom, "Welcome to GRUB!", t.path());
}

/// Debian's ipxe.iso: isohybrid's MBR with one active 0x17 partition over the disc padded
/// to whole cylinders, and no GPT. The entry stays as it was (fdisk shows the same row) and
/// no GPT appears. (Before: a protective 0xEE entry and a GPT replaced it.)
#[test]
fn remaster_keeps_ipxes_mbr_partition_entry() {
    let t = tmp();
    let out = t.path().join("out.iso");
    remaster(IPXE, &addition(t.path()), &out);
    let (a, b) = (report(Path::new(IPXE)), report(&out));
    assert_eq!(lines(&a, "System area summary:"), lines(&b, "System area summary:"));
    assert_eq!(lines(&a, "MBR partition "), lines(&b, "MBR partition "), "output:\n{b:#?}");
    assert!(lines(&b, "GPT").is_empty(), "{b:#?}");
    // The catalog is the file xorriso's -c named, as on the input (no stale copy).
    assert_eq!(lines(&a, "El Torito cat path"), lines(&b, "El Torito cat path"));
    assert_eq!(file_len(&out) % (1 << 20), 0, "padded to whole cylinders as the input");
    let (old, new) = (read(Path::new(IPXE)), read(&out));
    assert_eq!(old[..432], new[..432], "isohybrid MBR code");
    assert_eq!(old[440..512], new[440..512], "disk signature and partition table");
    assert_eq!(le64_at(&new, 432), image_lba(&b, 1) * 4, "isohybrid's pointer at isolinux.bin");
    let row = |f: &str| {
        let text = tool_out("fdisk", &["-l", f]);
        text.lines().find(|l| l.starts_with(f)).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
    };
    assert_eq!(row(IPXE), row(out.to_str().unwrap()));
    assert!(lines(&b, "El Torito img opts :   1  boot-info-table").len() == 1, "{b:#?}");
}

/// memtest86+'s disc: a 1.44 MB floppy-emulation BIOS entry and a UEFI entry that is no
/// file but the EFI System Partition appended after the ISO (MBR partition 2, type 0xEF).
/// The partition is copied after the new ISO data, its entry and the UEFI entry re-pointed;
/// the floppy image is kept as is (no boot info table). (Before: refused.)
#[test]
fn remaster_carries_memtests_appended_esp() {
    let t = tmp();
    let out = t.path().join("out.iso");
    let add = addition(t.path());
    remaster(MEMTEST, &add, &out);
    let (a, b) = (report(Path::new(MEMTEST)), report(&out));
    assert_eq!(lines(&a, "System area summary:"), lines(&b, "System area summary:"));
    let rows: Vec<Vec<String>> = lines(&b, "MBR partition      :")
        .iter()
        .map(|l| l.split_whitespace().skip(3).map(str::to_string).collect())
        .collect();
    // N Status Type Start Blocks
    assert_eq!(rows.len(), 2, "{b:#?}");
    assert_eq!(rows[1][1..3], ["0x00".to_string(), "0xef".to_string()], "{b:#?}");
    let esp_start: u64 = rows[1][3].parse().unwrap();
    let esp_len: u64 = rows[1][4].parse().unwrap();
    assert_eq!(esp_len, 8192);
    assert_eq!(rows[0][3..5], ["0".to_string(), esp_start.to_string()], "partition 1 ends where the ESP starts");
    let uefi = lines(&b, "El Torito boot img :   2  UEFI  y   none  0x0000  0x00   8192");
    assert_eq!(uefi.len(), 1, "{b:#?}");
    assert_eq!(image_lba(&b, 2) * 4, esp_start, "the UEFI entry points at the moved ESP");
    assert!(lines(&b, "El Torito boot img :   1  BIOS  y  fd1.4  0x0000  0x00      1").len() == 1, "{b:#?}");
    assert!(lines(&b, "El Torito img opts").is_empty(), "no boot info table appeared: {b:#?}");
    let (old, new) = (read(Path::new(MEMTEST)), read(&out));
    let old_esp = usize::try_from(image_lba(&a, 2) * 2048).unwrap();
    let new_esp = usize::try_from(esp_start * 512).unwrap();
    let len = usize::try_from(esp_len * 512).unwrap();
    assert_ne!(old_esp, new_esp, "the ESP did not move: the test proves nothing");
    assert!(old[old_esp..old_esp + len] == new[new_esp..new_esp + len], "ESP bytes differ");
    // The floppy image is the input's file, byte for byte.
    let (x, y) = (t.path().join("x"), t.path().join("y"));
    for (iso, dir) in [(MEMTEST, &x), (out.to_str().unwrap(), &y)] {
        std::fs::create_dir(dir).unwrap();
        tool_out("bsdtar", &["-xf", iso, "-C", dir.to_str().unwrap(), "boot/floppy.img"]);
    }
    assert_same_bytes(&x.join("boot/floppy.img"), &y.join("boot/floppy.img"));
    let floppy = usize::try_from(image_lba(&b, 1) * 2048).unwrap();
    assert!(new[floppy..floppy + 1_474_560] == read(&x.join("boot/floppy.img"))[..], "the catalog's floppy image");
}

/// Builds in `dir` a disc the way Ubuntu does: GRUB's hybrid MBR, eltorito.img with boot
/// info table and GRUB 2 boot info, and the EFI System Partition appended as GPT
/// partition 2 (`-append_partition 2 ... -appended_part_as_gpt`), the UEFI El Torito
/// entry pointing into it. Both loaders print `DISKCAST_BIOS_OK`/`DISKCAST_UEFI_OK` on
/// the serial port. `extra` goes straight into xorriso's arguments.
fn ubuntu_like(dir: &Path, extra: &str) -> PathBuf {
    let iso = dir.join("ubuntu-like.iso");
    sh(&format!(
        "cd '{d}'; mkdir -p s/boot/grub/i386-pc
         printf 'serial --unit=0 --speed=115200\\nterminal_output serial console\\necho DISKCAST_UEFI_OK\\nhalt\\n' > efi.cfg
         grub-mkstandalone -O x86_64-efi --modules='serial echo halt' --locales= --fonts= --themes= \
           -o BOOTX64.EFI boot/grub/grub.cfg=efi.cfg
         mkfs.fat -C efi.img 4096 >/dev/null
         MTOOLS_SKIP_CHECK=1 mmd -i efi.img ::/EFI ::/EFI/BOOT
         MTOOLS_SKIP_CHECK=1 mcopy -i efi.img BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI
         printf 'serial --unit=0 --speed=115200\\nterminal_output serial console\\necho DISKCAST_BIOS_OK\\nhalt\\n' > bios.cfg
         grub-mkimage -O i386-pc-eltorito -p /boot/grub -c bios.cfg -o s/boot/grub/i386-pc/eltorito.img \
           biosdisk iso9660 serial echo halt terminal
         echo hello > s/readme.txt
         xorriso -as mkisofs -quiet -R -J -V UBUNTU_LIKE -o '{i}' --grub2-mbr /usr/lib/grub/i386-pc/boot_hybrid.img \
           --protective-msdos-label -partition_cyl_align off {extra} --mbr-force-bootable \
           -append_partition 2 28732ac11ff8d211ba4b00a0c93ec93b efi.img -appended_part_as_gpt \
           -c /boot.catalog -b /boot/grub/i386-pc/eltorito.img -no-emul-boot -boot-load-size 4 \
           -boot-info-table --grub2-boot-info -eltorito-alt-boot -e '--interval:appended_partition_2:::' \
           -no-emul-boot s",
        d = dir.display(),
        i = iso.display()
    ));
    iso
}

/// GPT partition rows of xorriso's report that do not depend on where things are.
fn gpt_shape(r: &[String]) -> Vec<String> {
    r.iter()
        .filter(|l| {
            ["GPT partname local", "GPT type GUID", "GPT partition flags", "GPT partition GUID", "GPT disk GUID"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .cloned()
        .collect()
}

/// A disc built as Ubuntu builds its ISOs (without -partition_offset, see below): the GPT
/// keeps its partitions, names, GUIDs and flags, the appended ESP moves after the new ISO
/// data with its bytes, sgdisk finds no problem, and the result boots on UEFI and on BIOS
/// from a USB disk. (Before: refused, the UEFI image being no file.)
#[test]
fn remaster_carries_an_appended_gpt_esp_and_boots_from_usb() {
    let t = tmp();
    let input = ubuntu_like(t.path(), "");
    let out = t.path().join("out.iso");
    remaster(input.to_str().unwrap(), &addition(t.path()), &out);
    let (a, b) = (report(&input), report(&out));
    assert_eq!(lines(&a, "System area summary:"), lines(&b, "System area summary:"));
    assert_eq!(gpt_shape(&a), gpt_shape(&b));
    assert!(lines(&b, "El Torito img opts :   1  boot-info-table grub2-boot-info").len() == 1, "{b:#?}");
    let verdict = tool_text("sgdisk", &["-v", out.to_str().unwrap()]);
    assert!(verdict.contains("No problems found"), "{verdict}");
    // The ESP: GPT partition 2, where the UEFI entry points, with the input's bytes.
    let start = |r: &[String]| -> u64 {
        let row = lines(r, "GPT start and size :   2")[0];
        row.split_whitespace().nth(6).unwrap().parse().unwrap()
    };
    assert_eq!(image_lba(&b, 2) * 4, start(&b));
    assert_ne!(start(&a), start(&b), "the ESP did not move: the test proves nothing");
    let (old, new) = (read(&input), read(&out));
    let (o, n, len) = (usize::try_from(start(&a) * 512).unwrap(), usize::try_from(start(&b) * 512).unwrap(), 4 << 20);
    assert!(old[o..o + len] == new[n..n + len], "ESP bytes differ");
    boots(&out, Firmware::Uefi, Bus::Usb, "DISKCAST_UEFI_OK", t.path());
    boots(&out, Firmware::Bios, Bus::Usb, "DISKCAST_BIOS_OK", t.path());
}

/// The same disc booted as a CD on both firmwares. Ignored by default (two more boots
/// under TCG, 20-60 s each): the CD path reads only the catalog, which the USB test and
/// `remaster_carries_memtests_appended_esp` already check entry by entry.
#[test]
#[ignore = "slow: two more QEMU boots; run with --ignored"]
fn remaster_of_an_appended_esp_disc_boots_as_a_cd() {
    let t = tmp();
    let input = ubuntu_like(t.path(), "");
    let out = t.path().join("out.iso");
    remaster(input.to_str().unwrap(), &addition(t.path()), &out);
    boots(&out, Firmware::Uefi, Bus::Cdrom, "DISKCAST_UEFI_OK", t.path());
    boots(&out, Firmware::Bios, Bus::Cdrom, "DISKCAST_BIOS_OK", t.path());
}

/// What remaster cannot re-point is refused before anything is written, with the reason:
/// Ubuntu's own `-partition_offset 16` (a second superblock and tree for partition 1), and
/// an MBR partition inside the ISO data at no file. (Before: written, silently broken.)
#[test]
fn remaster_refuses_what_it_cannot_repoint() {
    let t = tmp();
    let input = ubuntu_like(t.path(), "-partition_offset 16");
    let out = t.path().join("out.iso");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    dc(&["iso", "remaster", i, "-o", o]).expect_code(1).expect_stderr_all(&[
        "second ISO 9660 superblock",
        "-partition_offset",
        i,
    ]);
    assert_no_output(&out);
    // grub-rescue with a second MBR entry at sector 200 (inside the directory data).
    let patched = t.path().join("patched.iso");
    std::fs::copy(GRUB_RESCUE, &patched).unwrap();
    let mut entry = [0u8; 16];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&200u32.to_le_bytes());
    entry[12..16].copy_from_slice(&8u32.to_le_bytes());
    patch(&patched, 462, &entry);
    dc(&["iso", "remaster", patched.to_str().unwrap(), "-o", o])
        .expect_code(1)
        .expect_stderr_all(&["MBR partition 2 starts at byte 102400", "at no file"]);
    assert_no_output(&out);
}

/// `iso create --no-boot-info-table --boot-load-size 8`: the BIOS image lands on the disc
/// byte for byte and the catalog loads 8 sectors; the default still patches the table and
/// loads 4. Remaster keeps either: no table where the input had none, the input's load
/// size. (Before: no such options, and remaster patched a table into every BIOS image
/// and loaded 4 sectors.)
#[test]
fn boot_info_table_and_load_size_are_options_and_remaster_keeps_them() {
    let t = tmp();
    let s = t.path().join("stage");
    std::fs::create_dir_all(s.join("boot")).unwrap();
    // A loader whose bytes 8-63 are code, not room for a table.
    let image = pseudo_random(6144, 7);
    std::fs::write(s.join("boot/loader.bin"), &image).unwrap();
    let (src, plain, patched) = (s.to_str().unwrap(), t.path().join("plain.iso"), t.path().join("patched.iso"));
    let args = ["iso", "create", src, "--boot-bios", "boot/loader.bin", "-o"];
    dc_ok(&[&args[..], &[plain.to_str().unwrap(), "--no-boot-info-table", "--boot-load-size", "8"]].concat());
    dc_ok(&[&args[..], &[patched.to_str().unwrap()]].concat());
    let (p, q) = (report(&plain), report(&patched));
    assert_eq!(lines(&p, "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      8").len(), 1, "{p:#?}");
    assert!(lines(&p, "El Torito img opts").is_empty(), "{p:#?}");
    assert_eq!(lines(&q, "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4").len(), 1, "{q:#?}");
    assert_eq!(lines(&q, "El Torito img opts :   1  boot-info-table").len(), 1, "{q:#?}");
    let on_disc = |iso: &Path, r: &[String]| {
        let at = usize::try_from(image_lba(r, 1) * 2048).unwrap();
        read(iso)[at..at + image.len()].to_vec()
    };
    assert!(on_disc(&plain, &p) == image, "--no-boot-info-table changed the image");
    assert!(on_disc(&patched, &q)[8..64] != image[8..64], "the default patches a table");
    let isoinfo = tool_out("isoinfo", &["-d", "-i", plain.to_str().unwrap()]);
    assert!(isoinfo.contains("Nsect 8"), "{isoinfo}");
    // The options need a BIOS image; 0 sectors is refused.
    dc(&["iso", "create", src, "-o", plain.to_str().unwrap(), "--no-boot-info-table"])
        .expect_code(1)
        .expect_stderr_all(&["need --boot-bios"]);
    dc(&[&args[..], &[plain.to_str().unwrap(), "--boot-load-size", "0"]].concat()).expect_code(1);
    // Remaster a xorriso disc made without -boot-info-table and with -boot-load-size 8.
    let xin = t.path().join("x.iso");
    sh(&format!(
        "xorriso -as mkisofs -quiet -R -J -o '{}' -b boot/loader.bin -no-emul-boot -boot-load-size 8 '{src}'",
        xin.display()
    ));
    let out = t.path().join("out.iso");
    remaster(xin.to_str().unwrap(), &addition(t.path()), &out);
    let r = report(&out);
    assert_eq!(lines(&r, "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      8").len(), 1, "{r:#?}");
    assert!(lines(&r, "El Torito img opts").is_empty(), "{r:#?}");
    assert!(on_disc(&out, &r) == image, "remaster changed a BIOS image that had no boot info table");
}
