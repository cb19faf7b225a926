//! `diskcast iso`: boot catalogs of discs made by xorriso and of Debian's grub-rescue ISO,
//! judged by xorriso's own reports and boot image extraction.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn sh(script: &str) {
    let out = Command::new("bash").args(["-euc", script]).output().expect("bash");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

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
fn manifest(dir: &Path, mtimes: bool, modes: bool) -> Vec<(String, String)> {
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
    dc_ok(&["extract", q.to_str().unwrap(), ours.to_str().unwrap()]);
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
