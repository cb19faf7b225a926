//! El Torito catalogs and hybrid system areas against xorriso's own reports and boot
//! image extraction, on a disc xorriso made and on Debian's grub-rescue-pc ISO.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::ErrorKind;
use diskcast_iso9660::eltorito::read_catalog;
use diskcast_iso9660::hybrid::read_hybrid;
use diskcast_testkit::assert_error;
use std::path::Path;

const GRUB_RESCUE: &str = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso";

/// `xorriso -report_el_torito plain` boot image lines: (platform, bootable, emulation,
/// load size, lba) and the image paths.
type Entry = (String, bool, String, u16, u32);

fn xorriso_entries(iso: &Path) -> (Vec<Entry>, Vec<String>) {
    let out = run("xorriso", &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"]);
    let mut entries = Vec::new();
    let mut paths = Vec::new();
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("El Torito boot img :") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // N Pltf B Emul Ld_seg Hdpt Ldsiz LBA
            entries.push((
                f[1].to_lowercase(),
                f[2] == "y",
                f[3].to_string(),
                f[6].parse().unwrap(),
                f[7].parse().unwrap(),
            ));
        } else if let Some(rest) = l.strip_prefix("El Torito img path :") {
            paths.push(rest.split_whitespace().nth(1).unwrap().to_string());
        }
    }
    (entries, paths)
}

/// Our catalog equals xorriso's report, and every image we cut out equals the one
/// `xorriso -extract_boot_images` writes.
fn assert_catalog_matches(iso: &Path, scratch: &Path) -> usize {
    let disk = open(iso);
    let cat = read_catalog(&disk).unwrap().expect("no catalog");
    let (theirs, paths) = xorriso_entries(iso);
    let ours: Vec<_> = cat
        .entries
        .iter()
        .map(|e| (e.platform_name(), e.bootable, e.emulation.to_string(), e.sector_count, e.lba))
        .collect();
    assert_eq!(ours, theirs);
    let our_paths: Vec<_> = cat.entries.iter().map(|e| e.path.clone().unwrap()).collect();
    assert_eq!(our_paths, paths);
    let out = scratch.join("xorriso-boot");
    run(
        "xorriso",
        &["-osirrox", "on", "-indev", iso.to_str().unwrap(), "-extract_boot_images", &format!("{}/", out.display())],
    );
    for (i, e) in cat.entries.iter().enumerate() {
        let theirs = std::fs::read(out.join(format!("eltorito_img{}_{}.img", i + 1, e.platform_name()))).unwrap();
        let (off, len) = e.range();
        let mut ours = vec![0u8; len as usize];
        disk.read_at(&mut ours, off).unwrap();
        // xorriso pads an image to whole 2048-byte sectors; we cut the file's own size.
        assert_eq!(theirs.len() as u64, len.next_multiple_of(2048));
        assert!(ours[..] == theirs[..len as usize], "boot image {} differs from xorriso's", i + 1);
    }
    cat.entries.len()
}

/// `xorriso -report_system_area plain` MBR lines: (number, status, type, start, blocks).
fn xorriso_mbr(iso: &Path) -> Vec<(u32, bool, String, u64, u64)> {
    let out = run("xorriso", &["-indev", iso.to_str().unwrap(), "-report_system_area", "plain"]);
    out.lines()
        .filter_map(|l| l.strip_prefix("MBR partition      :"))
        .map(|rest| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f[0].parse().unwrap(), f[1] == "0x80", f[2].to_string(), f[3].parse().unwrap(), f[4].parse().unwrap())
        })
        .collect()
}

fn assert_mbr_matches(iso: &Path) {
    let h = read_hybrid(open(iso).as_ref()).unwrap();
    assert!(h.mbr);
    let ours: Vec<_> = h
        .partitions
        .iter()
        .filter(|p| p.table == "mbr")
        .map(|p| (p.number, p.bootable, p.kind.clone(), p.start / 512, p.size / 512))
        .collect();
    assert_eq!(ours, xorriso_mbr(iso));
}

#[test]
fn bios_and_uefi_entries_and_isohybrid_match_xorriso() {
    let t = tempfile::tempdir().unwrap();
    let iso = make_boot_iso(t.path());
    assert_eq!(assert_catalog_matches(&iso, t.path()), 2);
    assert_mbr_matches(&iso);
    let h = read_hybrid(open(&iso).as_ref()).unwrap();
    assert!(h.gpt, "isohybrid GPT not seen");
    // The GPT names the EFI image's range as xorriso reports it ("GPT start and size", 512-byte blocks).
    let report = run("xorriso", &["-indev", iso.to_str().unwrap(), "-report_system_area", "plain"]);
    for l in report.lines().filter_map(|l| l.strip_prefix("GPT start and size :")) {
        let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let p = h.partitions.iter().find(|p| p.table == "gpt" && u64::from(p.number) == f[0]).unwrap();
        assert_eq!((p.start / 512, p.size / 512), (f[1], f[2]));
    }
}

#[test]
fn debian_grub_rescue_iso_reads_like_xorriso_and_bsdtar() {
    let t = tempfile::tempdir().unwrap();
    let iso = Path::new(GRUB_RESCUE);
    assert_eq!(assert_catalog_matches(iso, t.path()), 1);
    assert_mbr_matches(iso);
    let tree = read(iso, None);
    let bsd = t.path().join("bsdtar");
    std::fs::create_dir(&bsd).unwrap();
    run("bsdtar", &["-xf", GRUB_RESCUE, "-C", bsd.to_str().unwrap()]);
    assert_same(&tree, &bsd, Check { modes: true, mtimes: true, symlinks: true, hardlinks: true }, &|_| false);
}

#[test]
fn boot_entry_past_the_end_of_the_disc() {
    let t = tempfile::tempdir().unwrap();
    let iso = make_boot_iso(t.path());
    let mut img = std::fs::read(&iso).unwrap();
    let cat = u32::from_le_bytes(img[17 * 2048 + 71..17 * 2048 + 75].try_into().unwrap()) as usize * 2048;
    // The UEFI entry (after validation, default and section header) moves far out.
    img[cat + 96 + 8..cat + 96 + 12].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
    let bad = t.path().join("bad.iso");
    std::fs::write(&bad, &img).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b = bad.clone();
    std::thread::spawn(move || tx.send(read_catalog(&open(&b)).map(|_| ())));
    let e = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("hung").unwrap_err();
    let e = e.with_file(&bad);
    assert_error(&e, ErrorKind::OutOfBounds, "runs past the end of the disc");
    assert_eq!(e.field(), Some("load_rba"));
}
