//! `diskcast iso`: boot catalogs of discs made by xorriso and of Debian's grub-rescue ISO,
//! judged by xorriso's own reports and boot image extraction.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn xorriso_boot_images(iso: &Path, dir: &Path) {
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract_boot_images")
        .arg(format!("{}/", dir.display()))
        .output()
        .expect("xorriso");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn iso_boot_lists_and_extracts_bios_and_uefi_images_even_inside_qcow2() {
    let t = tempfile::tempdir().unwrap();
    let (s, iso, q) = (t.path().join("stage"), t.path().join("boot.iso"), t.path().join("boot.qcow2"));
    sh(&format!(
        "mkdir -p '{s}/isolinux' '{s}/boot'; cp /usr/lib/ISOLINUX/isolinux.bin '{s}/isolinux/'
         mkfs.fat -C -n EFIBOOT '{s}/boot/efiboot.img' 1440 >/dev/null
         xorriso -as mkisofs -quiet -o '{i}' -R -J -b isolinux/isolinux.bin -c isolinux/boot.cat \
           -no-emul-boot -boot-load-size 4 -boot-info-table -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
           -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat '{s}'",
        s = s.display(),
        i = iso.display()
    ));
    qemu_img(&["convert", "-O", "qcow2", iso.to_str().unwrap(), q.to_str().unwrap()]);
    let ours = t.path().join("ours");
    let j =
        dc_ok(&["iso", "boot", "--output", "json", "--extract", ours.to_str().unwrap(), q.to_str().unwrap()]).json();
    let entries = j["entries"].as_array().unwrap();
    let platforms: Vec<_> = entries.iter().map(|e| e["platform_name"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["bios", "uefi"]);
    assert_eq!(entries[0]["path"], "/isolinux/isolinux.bin");
    assert_eq!(entries[1]["path"], "/boot/efiboot.img");
    assert!(j["hybrid"]["mbr"].as_bool().unwrap() && j["hybrid"]["gpt"].as_bool().unwrap());
    let theirs = t.path().join("theirs");
    xorriso_boot_images(&iso, &theirs);
    for n in ["eltorito_img1_bios.img", "eltorito_img2_uefi.img"] {
        assert_eq!(std::fs::read(ours.join(n)).unwrap(), std::fs::read(theirs.join(n)).unwrap(), "{n}");
    }
    let human = dc_ok(&["iso", "boot", iso.to_str().unwrap()]).stdout_str();
    assert!(human.contains("uefi") && human.contains("MBR + GPT"), "{human}");

    // --extract goes through the one extraction path: a DIR that is a symlink, or one a
    // neighbour pre-filled with a symlink under an image's name, is refused and nothing
    // is written through the link (it wrote through both before).
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"keep").unwrap();
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("eltorito_img1_bios.img")).unwrap();
    dc(&["iso", "boot", "--extract", shared.to_str().unwrap(), iso.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr_all(&["not empty"]);
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    dc(&["iso", "boot", "--extract", link.to_str().unwrap(), iso.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr_all(&["symbolic link"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    assert_eq!(
        std::fs::read(theirs.join("eltorito_img1_bios.img")).unwrap(),
        std::fs::read(ours.join("eltorito_img1_bios.img")).unwrap()
    );
}

#[test]
fn iso_boot_reads_debians_grub_rescue_iso() {
    let iso = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso";
    let j = dc_ok(&["iso", "boot", "--output", "json", iso]).json();
    assert_eq!(j["entries"][0]["path"], "/boot/grub/i386-pc/eltorito.img");
    assert_eq!(j["entries"][0]["platform_name"], "bios");
    assert_eq!(j["entries"][0]["emulation"], "none");
}

#[test]
fn iso_boot_without_a_catalog_and_on_a_non_iso() {
    let t = tempfile::tempdir().unwrap();
    let iso = t.path().join("plain.iso");
    sh(&format!("xorriso -as mkisofs -quiet -o '{}' /usr/lib/ISOLINUX", iso.display()));
    let out = dc_ok(&["iso", "boot", iso.to_str().unwrap()]).stdout_str();
    assert!(out.contains("No El Torito boot catalog"), "{out}");
    let raw = t.path().join("blank.img");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    dc(&["iso", "boot", raw.to_str().unwrap()]).expect_code(1).expect_stderr_any(&["no primary volume descriptor"]);
}

/// (path, type, mode, link target or content, mtime) of everything under `dir`.
pub(crate) fn manifest(dir: &Path, mtimes: bool, modes: bool) -> Vec<(String, String)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = if modes { format!("{:o}", md.permissions().mode() & 0o7777) } else { String::new() };
            let what = if md.file_type().is_symlink() {
                format!("L {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                format!("D {mode}")
            } else if md.is_file() {
                let t = if mtimes { md.mtime() } else { 0 };
                format!("F {mode} {t} {:?}", std::fs::read(&p).unwrap())
            } else {
                format!("O {mode}")
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

#[test]
fn ls_cat_extract_an_iso_like_bsdtar_and_7zip() {
    let t = tempfile::tempdir().unwrap();
    let (s, iso, q) = (t.path().join("src"), t.path().join("x.iso"), t.path().join("x.qcow2"));
    sh(&format!(
        "mkdir -p '{s}/a/b/c/d/e/f/g/h/i' '{s}/sub dir'; cd '{s}'; echo hello > hello.txt; chmod 4755 hello.txt
         echo deep > a/b/c/d/e/f/g/h/i/deep.txt; head -c 200000 /dev/urandom > random.bin
         ln -s hello.txt link; ln -s /etc/passwd abs; printf 'x' > 'sub dir/Mixed Case.TXT'; mkfifo fifo
         touch -d '2001-02-03 04:05:06' random.bin
         genisoimage -quiet -R -J -o '{i}' '{s}'",
        s = s.display(),
        i = iso.display()
    ));
    qemu_img(&["convert", "-O", "qcow2", iso.to_str().unwrap(), q.to_str().unwrap()]);
    let ls = dc_ok(&["ls", "-l", q.to_str().unwrap()]).stdout_str();
    assert!(ls.contains("link -> hello.txt") && ls.contains("-rwsr-xr-x"), "{ls}");
    let cat = dc_ok(&["cat", q.to_str().unwrap(), "a/b/c/d/e/f/g/h/i/deep.txt"]);
    assert_eq!(cat.stdout, b"deep\n");

    let ours = t.path().join("ours");
    dc_ok(&["extract", "--privileged", q.to_str().unwrap(), ours.to_str().unwrap()]);
    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    let st = Command::new("bsdtar").arg("-xf").arg(&iso).arg("-C").arg(&bsd).status().unwrap();
    assert!(st.success());
    assert_eq!(manifest(&ours, true, true), manifest(&bsd, true, true));

    // The Joliet tree, as 7-Zip extracts it (names and content only).
    let joliet = t.path().join("joliet");
    dc_ok(&["extract", "--tree", "joliet", iso.to_str().unwrap(), joliet.to_str().unwrap()]);
    let sz = t.path().join("7z");
    let st = Command::new("7zz").args(["x", "-y"]).arg(format!("-o{}", sz.display())).arg(&iso).output().unwrap();
    assert!(st.status.success());
    assert_eq!(manifest(&joliet, false, false), manifest(&sz, false, false));
    dc(&["ls", "--tree", "udf", iso.to_str().unwrap()]).expect_code(1).expect_stderr_any(&["has no udf tree"]);
}

/// A source tree with every kind of entry the writer stores.
fn make_tree(s: &Path) {
    sh(&format!(
        "mkdir -p '{s}/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10' '{s}/sub dir' '{s}/empty-dir'; cd '{s}'
         echo hello > hello.txt; chmod 4755 hello.txt; head -c 300000 /dev/urandom > random.bin
         echo deep > d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/deep.txt; printf long > {long}.txt
         ln -s hello.txt rel-link; ln -s /etc/passwd abs-link; ln -s ../hello.txt 'sub dir/up'
         ln hello.txt hard-link; mkfifo fifo; : > empty; printf 'é' > 'sub dir/héllo wörld.txt'
         printf a > 'sub dir/Same'; printf b > 'sub dir/same'; chmod 700 'sub dir'; chmod 640 random.bin
         touch -d '2001-02-03 04:05:06' random.bin",
        s = s.display(),
        long = "l".repeat(180)
    ));
}

#[test]
fn iso_create_reads_back_through_xorriso_isoinfo_bsdtar_and_7zip() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("out.iso"));
    make_tree(&src);
    dc_ok(&["iso", "create", src.to_str().unwrap(), "-o", iso.to_str().unwrap(), "-V", "MY_DISC"]);
    let iso_s = iso.to_str().unwrap();
    // bsdtar and xorriso extract the Rock Ridge tree: everything as in the source.
    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    tool_out("bsdtar", &["-xf", iso_s, "-C", bsd.to_str().unwrap()]);
    assert_eq!(manifest(&bsd, true, true), manifest(&src, true, true));
    let x = t.path().join("osirrox");
    tool_out("xorriso", &["-osirrox", "on", "-indev", iso_s, "-extract", "/", x.to_str().unwrap()]);
    assert_eq!(manifest(&x, true, true), manifest(&src, true, true));
    let bsd_md = std::fs::metadata(bsd.join("hard-link")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&bsd_md), 2, "hard link kept");
    // xorriso -find lists every path.
    let mut found: Vec<String> = tool_out("xorriso", &["-indev", iso_s, "-find", "/"])
        .lines()
        .map(|l| l.trim_matches('\'').trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    found.sort();
    let mut want: Vec<String> = manifest(&src, false, false).into_iter().map(|(p, _)| p).collect();
    want.sort();
    assert_eq!(found, want);
    // isoinfo reads the Rock Ridge and the Joliet trees and the volume label.
    let rr = tool_out("isoinfo", &["-l", "-R", "-i", iso_s]);
    assert!(rr.contains("drwx------") && rr.contains("rel-link -> hello.txt") && rr.contains(&"l".repeat(180)), "{rr}");
    // (isoinfo prints Joliet names in a single-byte charset.)
    let jl = Command::new("isoinfo").args(["-l", "-J", "-j", "iso8859-1", "-i", iso_s]).output().unwrap().stdout;
    let has = |needle: &[u8]| jl.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"h\xe9llo w\xf6rld.txt") && has(b" Same") && has(b" same"), "{}", String::from_utf8_lossy(&jl));
    assert!(tool_out("isoinfo", &["-d", "-i", iso_s]).contains("Volume id: MY_DISC"));
    // 7-Zip reads the Joliet tree: names (up to 64 characters) and content.
    let sz = t.path().join("7z");
    tool_out("7zz", &["x", "-y", &format!("-o{}", sz.display()), iso_s]);
    let ours_j: Vec<_> = manifest(&sz, false, false).into_iter().filter(|(p, _)| !p.starts_with("lll")).collect();
    let want_j: Vec<_> = manifest(&src, false, false)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("lll"))
        .map(|(p, w)| if w.starts_with('L') || w.starts_with('O') { (p, "F  0 []".into()) } else { (p, w) })
        .collect();
    assert_eq!(ours_j, want_j);
    let listing = tool_out("7zz", &["l", iso_s]);
    assert!(listing.contains(&"l".repeat(64)), "{listing}");
    // And our own reader.
    let ours = t.path().join("ours");
    dc_ok(&["extract", "--privileged", iso_s, ours.to_str().unwrap()]);
    assert_eq!(manifest(&ours, true, true), manifest(&src, true, true));
}

#[test]
fn iso_create_is_reproducible_with_source_date_epoch_and_writes_qcow2() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src);
    let run = |name: &str, extra: &[&str]| {
        let out = t.path().join(name);
        let mut args = vec!["iso", "create", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let st = Command::new(diskcast_bin()).args(&args).env("SOURCE_DATE_EPOCH", "1700000000").output().unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        out
    };
    let a = run("a.iso", &[]);
    let b = run("b.iso", &[]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "two builds differ");
    let pvd = tool_out("xorriso", &["-indev", a.to_str().unwrap(), "-pvd_info"]);
    assert!(pvd.contains("Creation Time: 2023111422132000"), "{pvd}");
    let q = run("c.qcow2", &["-O", "qcow2"]);
    qemu_img(&["compare", "-f", "raw", "-F", "qcow2", a.to_str().unwrap(), q.to_str().unwrap()]);
}

/// Boots `disk` in QEMU (TCG) and returns true when `marker` shows on the serial console
/// within two minutes. `how`: "uefi-cd", "uefi-usb", "bios-cd" or "bios-usb".
fn boots_to_marker(disk: &Path, how: &str, marker: &str, scratch: &Path) -> bool {
    let fw = if how.starts_with("uefi") { Firmware::Uefi } else { Firmware::Bios };
    let bus = if how.ends_with("cd") { Bus::Cdrom } else { Bus::Usb };
    match boot_to_marker(disk, "raw", fw, bus, marker, scratch, std::time::Duration::from_secs(120)) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("{e}");
            false
        }
    }
}

#[test]
fn iso_create_bootable_hybrid_boots_on_uefi_as_cd_and_usb_and_on_bios() {
    let t = tempfile::tempdir().unwrap();
    let (s, iso) = (t.path().join("stage"), t.path().join("boot.iso"));
    // UEFI: GRUB built standalone with a config that prints the marker on the serial port;
    // BIOS: isolinux (which finds itself through the boot info table), then ldlinux.c32
    // and isolinux.cfg read from the disc; the config's default label is the marker, which
    // isolinux prints as it tries to load it ("Loading DISKCAST_BIOS_OK...").
    marker_efi_image(t.path(), &s.join("boot/efiboot.img"), "DISKCAST_UEFI_OK");
    sh(&format!(
        "mkdir -p '{s}/boot' '{s}/isolinux'; cd '{t}'
         cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 '{s}/isolinux/'
         printf 'SERIAL 0 115200\\nDEFAULT DISKCAST_BIOS_OK\\nPROMPT 0\\nTIMEOUT 0\\n' > '{s}/isolinux/isolinux.cfg'
         echo payload > '{s}/readme.txt'",
        s = s.display(),
        t = t.path().display()
    ));
    dc_ok(&[
        "iso",
        "create",
        s.to_str().unwrap(),
        "-o",
        iso.to_str().unwrap(),
        "-V",
        "BOOTTEST",
        "--boot-bios",
        "isolinux/isolinux.bin",
        "--boot-uefi",
        "boot/efiboot.img",
        "--hybrid",
    ]);
    let report = tool_out("xorriso", &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"]);
    assert!(report.contains("El Torito boot img :   1  BIOS  y   none"), "{report}");
    assert!(report.contains("El Torito boot img :   2  UEFI  y   none"), "{report}");
    assert!(report.contains("El Torito img opts :   1  boot-info-table"), "{report}");
    assert!(tool_out("sgdisk", &["-v", iso.to_str().unwrap()]).contains("No problems found"));
    let gpt = tool_out("sfdisk", &["-d", iso.to_str().unwrap()]);
    assert!(gpt.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{gpt}");
    // isolinux's isohybrid MBR code in the protective MBR, pointing at isolinux.bin.
    assert_isohybrid_mbr(&iso, "/isolinux/isolinux.bin");
    assert!(boots_to_marker(&iso, "uefi-cd", "DISKCAST_UEFI_OK", t.path()), "no UEFI boot from CD");
    assert!(boots_to_marker(&iso, "uefi-usb", "DISKCAST_UEFI_OK", t.path()), "no UEFI boot from USB");
    assert!(boots_to_marker(&iso, "bios-cd", "Loading DISKCAST_BIOS_OK", t.path()), "no BIOS boot from CD");
    assert!(boots_to_marker(&iso, "bios-usb", "Loading DISKCAST_BIOS_OK", t.path()), "no BIOS boot from USB");
}

/// Sector 0 of `iso` holds isolinux's isohdpfx.bin code and, at byte 432, the 512-byte LBA
/// of `bios_image` as xorriso locates the file; xorriso calls the system area isohybrid.
fn assert_isohybrid_mbr(iso: &Path, bios_image: &str) {
    let s0 = read(iso)[..512].to_vec();
    assert_eq!(s0[..432], std::fs::read("/usr/lib/ISOLINUX/isohdpfx.bin").unwrap()[..], "MBR code");
    let lba = tool_out("xorriso", &["-indev", iso.to_str().unwrap(), "-find", bios_image, "-exec", "report_lba"]);
    let lba: u64 = lba
        .lines()
        .find(|l| l.starts_with("File data lba:"))
        .and_then(|l| l.split(',').nth(1))
        .unwrap_or_else(|| panic!("{lba}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(u64::from_le_bytes(s0[432..440].try_into().unwrap()), lba * 4, "boot image LBA at 432");
    assert_ne!(s0[440..444], [0, 0, 0, 0], "MBR disk signature");
    let area = tool_out("xorriso", &["-indev", iso.to_str().unwrap(), "-report_system_area", "plain"]);
    assert!(area.contains("System area summary: MBR isohybrid"), "{area}");
}

#[test]
fn iso_create_hybrid_bios_only_writes_isohybrids_mbr_and_refuses_bad_code() {
    let t = tempfile::tempdir().unwrap();
    let (s, iso) = (t.path().join("stage"), t.path().join("bios.iso"));
    std::fs::create_dir_all(s.join("isolinux")).unwrap();
    std::fs::copy("/usr/lib/ISOLINUX/isolinux.bin", s.join("isolinux/isolinux.bin")).unwrap();
    let (src, out) = (s.to_str().unwrap(), iso.to_str().unwrap());
    dc_ok(&["iso", "create", src, "-o", out, "--boot-bios", "isolinux/isolinux.bin", "--hybrid"]);
    assert_isohybrid_mbr(&iso, "/isolinux/isolinux.bin");
    // One active partition of type 0x17 over the whole disc, as isohybrid writes it; the
    // two tools agree on it.
    let sectors = std::fs::metadata(&iso).unwrap().len() / 512;
    let area = tool_out("xorriso", &["-indev", out, "-report_system_area", "plain"]);
    let want = format!("MBR partition      :   1   0x80  0x17            0 {sectors:>12}");
    assert!(area.contains(&want), "{want}\n{area}");
    let fdisk = tool_out("fdisk", &["-l", out]);
    let row = fdisk.lines().find(|l| l.starts_with(&format!("{out}1"))).unwrap_or_else(|| panic!("{fdisk}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..5], ["*", "0", &(sectors - 1).to_string(), &sectors.to_string()], "{fdisk}");
    assert_eq!(cols[6], "17", "{fdisk}");
    // --hybrid-mbr: a file that is no MBR code, or one that is missing, is refused by name.
    let big = t.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 600]).unwrap();
    let bad = [src, "-o", out, "--boot-bios", "isolinux/isolinux.bin", "--hybrid", "--hybrid-mbr"];
    let run = |extra: &str| dc(&[&["iso", "create"][..], &bad[..], &[extra]].concat());
    run(big.to_str().unwrap()).expect_code(1).expect_stderr_all(&["big.bin", "600 bytes"]);
    run("/nonexistent/isohdpfx.bin").expect_code(1).expect_stderr_all(&["/nonexistent/isohdpfx.bin"]);
    dc(&["iso", "create", src, "-o", out, "--hybrid-mbr", big.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr_all(&["--hybrid-mbr needs --hybrid and --boot-bios"]);
}

#[test]
fn iso_remaster_keeps_the_boot_setup_of_a_xorriso_disc() {
    let t = tempfile::tempdir().unwrap();
    let (s, iso, out, add) =
        (t.path().join("stage"), t.path().join("in.iso"), t.path().join("out.iso"), t.path().join("add"));
    sh(&format!(
        "mkdir -p '{s}/boot' '{s}/isolinux' '{a}/extra'; cd '{t}'
         printf 'serial --unit=0 --speed=115200\\nterminal_output serial console\\necho DISKCAST_REMASTER_OK\\nhalt\\n' > grub.cfg
         grub-mkstandalone -O x86_64-efi --modules='serial echo halt' --locales= --fonts= --themes= \
           -o BOOTX64.EFI boot/grub/grub.cfg=grub.cfg
         mkfs.fat -C '{s}/boot/efiboot.img' 4096 >/dev/null
         MTOOLS_SKIP_CHECK=1 mmd -i '{s}/boot/efiboot.img' ::/EFI ::/EFI/BOOT
         MTOOLS_SKIP_CHECK=1 mcopy -i '{s}/boot/efiboot.img' BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI
         cp /usr/lib/ISOLINUX/isolinux.bin '{s}/isolinux/'; echo old > '{s}/README.txt'; echo keep > '{s}/keep.txt'
         echo new > '{a}/extra/new.txt'; echo replaced > '{a}/keep.txt'
         xorriso -as mkisofs -quiet -o '{i}' -V REMASTER -R -J -b isolinux/isolinux.bin -c isolinux/boot.cat \
           -no-emul-boot -boot-load-size 4 -boot-info-table -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
           -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat '{s}'",
        s = s.display(),
        a = add.display(),
        t = t.path().display(),
        i = iso.display()
    ));
    dc_ok(&[
        "iso",
        "remaster",
        iso.to_str().unwrap(),
        "--add",
        add.to_str().unwrap(),
        "--remove",
        "/README.txt",
        "-o",
        out.to_str().unwrap(),
    ]);
    let report = tool_out("xorriso", &["-indev", out.to_str().unwrap(), "-report_el_torito", "plain"]);
    for want in [
        "El Torito boot img :   1  BIOS  y   none",
        "El Torito boot img :   2  UEFI  y   none",
        "El Torito img path :   1  /isolinux/isolinux.bin",
        "El Torito img path :   2  /boot/efiboot.img",
        "El Torito img opts :   1  boot-info-table",
    ] {
        assert!(report.contains(want), "{want}\n{report}");
    }
    assert!(tool_out("isoinfo", &["-d", "-i", out.to_str().unwrap()]).contains("Volume id: REMASTER"));
    // The system area is the input's (xorriso's MBR and GPT entries overlap on purpose:
    // sgdisk says so for both), re-pointed; not a fresh GPT.
    let verdict = |iso: &Path| {
        let o = Command::new("sgdisk").arg("-v").arg(iso).output().expect("sgdisk");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(verdict(&iso), verdict(&out));
    let area = |iso: &Path| {
        let r = tool_out("xorriso", &["-indev", iso.to_str().unwrap(), "-report_system_area", "plain"]);
        r.lines()
            .filter(|l| l.starts_with("System area summary") || l.starts_with("GPT partname"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(area(&iso), area(&out));
    // xorriso's isohybrid MBR code is kept, pointing at where isolinux.bin is now.
    assert_isohybrid_mbr(&out, "/isolinux/isolinux.bin");
    let listing = tool_out("bsdtar", &["-tf", out.to_str().unwrap()]);
    assert!(listing.contains("extra/new.txt") && !listing.contains("README.txt"), "{listing}");
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    tool_out("bsdtar", &["-xf", out.to_str().unwrap(), "-C", x.to_str().unwrap()]);
    assert_eq!(std::fs::read(x.join("keep.txt")).unwrap(), b"replaced\n");
    assert_eq!(std::fs::read(x.join("boot/efiboot.img")).unwrap(), std::fs::read(s.join("boot/efiboot.img")).unwrap());
    assert!(boots_to_marker(&out, "uefi-usb", "DISKCAST_REMASTER_OK", t.path()), "the remastered disc does not boot");
}

#[test]
fn iso_create_writes_a_file_over_4_gib_as_multi_extent() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("big.iso"));
    sh(&format!(
        "mkdir -p '{s}'; cd '{s}'; echo head > big.bin; truncate -s 4200M big.bin; echo tail >> big.bin; echo x > small",
        s = src.display()
    ));
    let size = std::fs::metadata(src.join("big.bin")).unwrap().len();
    dc_ok(&["iso", "create", src.to_str().unwrap(), "-o", iso.to_str().unwrap()]);
    let listing = tool_out("bsdtar", &["-tvf", iso.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l.contains(&size.to_string()) && l.ends_with("big.bin")), "{listing}");
    let isoinfo = tool_out("isoinfo", &["-l", "-i", iso.to_str().unwrap()]);
    assert!(isoinfo.matches("BIG.BIN;1").count() >= 2, "not split into extents:\n{isoinfo}");
    let cut = t.path().join("cut");
    tool_out(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso.to_str().unwrap(),
            "-extract_cut",
            "/big.bin",
            &(size - 5).to_string(),
            "5",
            cut.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read(&cut).unwrap(), b"tail\n");
    let head = dc_ok(&["cat", iso.to_str().unwrap(), "small"]);
    assert_eq!(head.stdout, b"x\n");
}
