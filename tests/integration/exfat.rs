//! exFAT: images from `mkfs exfat` judged by `fsck.exfat -n` (exfatprogs) and by a
//! driver that is not ours: the Linux kernel's exfat driver when the running kernel has
//! it, else exfat-fuse (a separate implementation) on a loop device. The reader is tested
//! on images made by `mkfs.exfat` and filled through such a mount, and on byte-patched
//! ones. Needs root (loop devices, mounts), as CI runs.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn run(prog: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog} is required by this test: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(prog: &str, args: &[&str]) -> String {
    let (ok, text) = run(prog, args);
    assert!(ok, "{prog} {args:?} failed:\n{text}");
    text
}

fn fsck_clean(img: &Path) {
    let (ok, text) = run("fsck.exfat", &["-n", &s(img)]);
    assert!(ok && text.contains("clean"), "fsck.exfat -n {} is not clean:\n{text}", img.display());
}

/// An exFAT image mounted by the kernel (loop) or, without the kernel driver, by
/// exfat-fuse on a loop device; unmounted on drop. (`usb.rs` reads multi-boot sticks' exFAT
/// data partitions through it too.)
pub(crate) struct Mounted {
    dir: PathBuf,
    loop_dev: Option<String>,
}

impl Mounted {
    pub(crate) fn new(img: &Path, dir: &Path, ro: bool) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let opt = if ro { "loop,ro" } else { "loop" };
        let (ok, text) = run("mount", &["-t", "exfat", "-o", opt, &s(img), &s(dir)]);
        if ok {
            eprintln!("exfat: mounted {} with the kernel driver", img.display());
            return Mounted { dir: dir.to_path_buf(), loop_dev: None };
        }
        assert!(text.contains("unknown filesystem type"), "mount of {} failed:\n{text}", img.display());
        let dev = must("losetup", &["-f", "--show", &s(img)]).trim().to_string();
        let mut args = vec![dev.as_str(), dir.to_str().unwrap()];
        if ro {
            args.splice(0..0, ["-o", "ro"]);
        }
        let (ok, text) = run("mount.exfat-fuse", &args);
        if !ok {
            run("losetup", &["-d", &dev]);
            panic!("the kernel has no exfat driver and exfat-fuse failed on {}:\n{text}", img.display());
        }
        eprintln!("exfat: no kernel driver here; mounted {} with exfat-fuse", img.display());
        Mounted { dir: dir.to_path_buf(), loop_dev: Some(dev) }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = run("umount", &[&s(&self.dir)]);
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
    }
}

/// Every path under `root` with its type, size, mtime (whole seconds, exFAT keeps 10 ms
/// but drivers differ in what they show) and sha256 of files, skipping `skip_hash`.
fn listing(root: &Path, skip_hash: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mtime = md.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
            if md.is_dir() {
                out.push(format!("d {rel} {mtime}"));
                todo.push(p);
            } else {
                let hash = if skip_hash.contains(&rel.as_str()) {
                    "-".to_string()
                } else {
                    must("sha256sum", &[&s(&p)]).split_whitespace().next().unwrap().to_string()
                };
                out.push(format!("f {rel} {} {mtime} {hash}", md.len()));
            }
        }
    }
    out.sort();
    out
}

const BIG: u64 = 5 << 30;
const MARKS: [u64; 4] = [0, (4 << 30) + 1, (4 << 30) + (1 << 20), BIG - 7];

/// The test tree: nested directories, an empty file, long Unicode names, many files in
/// one directory, random content, and (with `big`) a sparse 5 GiB file with marks.
fn make_tree(root: &Path, big: bool) {
    let deep = root.join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("deep.bin"), &pseudo_random(100_000, 1));
    write_file(&root.join("empty"), b"");
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    let long = "Ünïcödé ★ 日本語のファイル名 — a name well past fifteen UTF-16 units, with emoji 🦀.txt";
    write_file(&root.join(long), "content\n".as_bytes());
    // 255 UTF-16 units, exFAT's longest name (and within Linux's 255 bytes).
    let name255: String = "n".repeat(250) + ".long";
    write_file(&root.join("a").join(&name255), b"255 units");
    let many = root.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..600 {
        write_file(&many.join(format!("file number {i:04} with a longish name.dat")), format!("{i}\n").as_bytes());
    }
    write_file(&root.join("random.bin"), &pseudo_random(3 << 20, 7));
    if big {
        let p = root.join("sparse5g.img");
        must("truncate", &["-s", &BIG.to_string(), &s(&p)]);
        for m in MARKS {
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"MARK!!!", m).unwrap();
        }
    }
    // Even seconds: exFAT's timestamps count 2 s plus 10 ms steps; drivers agree on whole seconds.
    must("find", &[&s(root), "-exec", "touch", "-h", "-d", "2024-03-05 06:07:08", "{}", "+"]);
}

fn check_big(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), BIG);
    for m in MARKS {
        let mut b = [0u8; 7];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, m).unwrap();
        assert_eq!(&b, b"MARK!!!", "mark at {m}");
        if m > 4096 {
            let mut z = vec![0u8; 4096];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut z, m - 4096).unwrap();
            assert!(z.iter().all(|&x| x == 0), "zeros before mark at {m}");
        }
    }
}

#[test]
fn mkfs_exfat_passes_fsck_and_mounts_with_the_same_tree() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src, true);
    let img = t.path().join("x.img");
    let started = Instant::now();
    dc_ok(&["mkfs", "exfat", &s(&src), "-o", &s(&img), "--label", "Données"]);
    eprintln!("exfat: mkfs of the 5 GiB sparse tree took {:?}", started.elapsed());
    fsck_clean(&img);
    let (_, label) = run("tune.exfat", &["-l", &s(&img)]);
    assert!(label.contains("Données"), "label: {label}");
    let want = listing(&src, &["sparse5g.img"]);
    {
        let m = Mounted::new(&img, &t.path().join("mnt"), true);
        assert_eq!(listing(&m.dir, &["sparse5g.img"]), want);
        check_big(&m.dir.join("sparse5g.img"));
    }
    // Our reader sees the same tree.
    let out = t.path().join("out");
    std::fs::remove_file(src.join("sparse5g.img")).unwrap();
    let small = t.path().join("small.img");
    dc_ok(&["mkfs", "exfat", &s(&src), "-o", &s(&small), "--size", "64M"]);
    fsck_clean(&small);
    dc_ok(&["extract", &s(&small), &s(&out)]);
    assert_eq!(listing(&out, &[]), listing(&src, &[]));
    // Each cluster size (4 KiB, 32 KiB, 128 KiB) and a FAT and bitmap of millions of
    // clusters; the images are sparse.
    for size in ["300M", "40G", "3T"] {
        let img = t.path().join(format!("size-{size}.img"));
        dc_ok(&["mkfs", "exfat", &s(&src), "-o", &s(&img), "--size", size]);
        fsck_clean(&img);
        std::fs::remove_file(&img).unwrap();
    }
    // Too small is refused before writing, naming what is needed.
    let tiny = t.path().join("tiny.img");
    dc(&["mkfs", "exfat", &s(&src), "-o", &s(&tiny), "--size", "1M"])
        .expect_diskcast_error()
        .expect_stderr_all(&["clusters of 4096 bytes", "holds"]);
    assert!(!tiny.exists());
}

#[test]
fn mkdisk_exfat_partition_in_qcow2_passes_fsck() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src, false);
    let disk = t.path().join("d.qcow2");
    dc_ok(&[
        "mkdisk",
        "-o",
        &s(&disk),
        "-O",
        "qcow2",
        "--part",
        "data=fat:exfat:auto:",
        "--part",
        &format!("fat:exfat:200M:{}", s(&src)),
    ]);
    qemu_check_clean(&disk);
    let raw = t.path().join("d.raw");
    qemu_img(&["convert", "-O", "raw", &s(&disk), &s(&raw)]);
    let table = must("sfdisk", &["--json", &s(&raw)]);
    let v: serde_json::Value = serde_json::from_str(&table).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    for (i, p) in parts.iter().enumerate() {
        let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
        let part = t.path().join(format!("p{i}.img"));
        must(
            "dd",
            &[
                &format!("if={}", s(&raw)),
                &format!("of={}", s(&part)),
                "bs=512",
                &format!("skip={start}"),
                &format!("count={size}"),
                "status=none",
            ],
        );
        fsck_clean(&part);
        if i == 1 {
            let m = Mounted::new(&part, &t.path().join("mnt"), true);
            assert_eq!(listing(&m.dir, &[]), listing(&src, &[]));
        }
    }
}

/// A `mkfs.exfat` image filled through a mount with the test tree (no 5 GiB file).
fn filled_reference(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    make_tree(&src, false);
    let img = dir.join("ref.img");
    must("truncate", &["-s", "64M", &s(&img)]);
    must("mkfs.exfat", &["-L", "REF", &s(&img)]);
    {
        let m = Mounted::new(&img, &dir.join("fill"), false);
        must("cp", &["-a", &format!("{}/.", s(&src)), &s(&m.dir)]);
        // Growing a file written before others makes the driver chain it through the
        // FAT (no NoFatChain flag), so the reader's chain path is judged too.
        let mut f = std::fs::OpenOptions::new().append(true).open(m.dir.join("random.bin")).unwrap();
        std::io::Write::write_all(&mut f, &pseudo_random(300_000, 9)).unwrap();
    }
    fsck_clean(&img);
    assert!(chained_in_root(&img), "no FAT-chained file in the root of {}", img.display());
    (img, src)
}

/// True when a root directory stream extension has data and no NoFatChain flag.
fn chained_in_root(img: &Path) -> bool {
    let (_, cluster, _, heap, root) = geometry(img);
    let b = read(img);
    let start = usize::try_from(heap + (root - 2) * cluster).unwrap();
    b[start..start + usize::try_from(cluster).unwrap()]
        .chunks_exact(32)
        .any(|e| e[0] == 0xc0 && e[1] & 2 == 0 && e[24..32].iter().any(|&x| x != 0))
}

#[test]
fn reader_matches_the_mounted_view_of_a_mkfs_exfat_image() {
    let t = tmp();
    let (img, _) = filled_reference(t.path());
    let out = t.path().join("out");
    dc_ok(&["extract", &s(&img), &s(&out)]);
    let m = Mounted::new(&img, &t.path().join("mnt"), true);
    assert_eq!(listing(&out, &[]), listing(&m.dir, &[]));
}

/// Boot region geometry of an image: (sector, cluster, FAT offset, heap offset, root cluster).
fn geometry(img: &Path) -> (u64, u64, u64, u64, u64) {
    let b = read(img);
    let sector = 1u64 << b[108];
    let cluster = sector << b[109];
    let le32 = |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
    (sector, cluster, le32(80) * sector, le32(88) * sector, le32(96))
}

/// Rewrites both checksum sectors after a boot sector patch (the spec's sum).
fn fix_boot_checksum(img: &Path) {
    let b = read(img);
    let sector = 512usize;
    let mut sum = 0u32;
    for (i, &x) in b[..11 * sector].iter().enumerate() {
        if !matches!(i, 106 | 107 | 112) {
            sum = sum.rotate_right(1).wrapping_add(u32::from(x));
        }
    }
    let sector_bytes: Vec<u8> = sum.to_le_bytes().iter().copied().cycle().take(sector).collect();
    patch(img, 11 * 512, &sector_bytes);
}

/// Byte offset in the image of the first root directory entry of type `ty`.
fn root_entry(img: &Path, ty: u8) -> u64 {
    let (_, cluster, _, heap, root) = geometry(img);
    let b = read(img);
    let start = heap + (root - 2) * cluster;
    (0..cluster / 32)
        .map(|i| start + i * 32)
        .find(|&o| b[usize::try_from(o).unwrap()] == ty)
        .unwrap_or_else(|| panic!("no entry {ty:#x} in the root"))
}

fn refused(img: &Path, words: &[&str]) {
    let started = Instant::now();
    dc(&["ls", "-l", &s(img)]).expect_diskcast_error().expect_stderr_all(words);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn hostile_exfat_images_are_refused_with_the_reason() {
    let t = tmp();
    let (img, _) = filled_reference(t.path());
    dc_ok(&["ls", &s(&img)]);

    // The root directory's FAT entry points at itself: a cluster chain loop.
    let loop_img = t.path().join("loop.img");
    std::fs::copy(&img, &loop_img).unwrap();
    let (_, _, fat, _, root) = geometry(&loop_img);
    patch_u32_le(&loop_img, fat + root * 4, u32::try_from(root).unwrap());
    refused(&loop_img, &["root directory", "cluster", "loop"]);

    // The allocation bitmap is 1 byte long for thousands of clusters.
    let bm = t.path().join("bitmap.img");
    std::fs::copy(&img, &bm).unwrap();
    let at = root_entry(&bm, 0x81);
    patch(&bm, at + 24, &1u64.to_le_bytes());
    refused(&bm, &["allocation bitmap holds 1 bytes"]);

    // A file entry set claims 255 secondary entries.
    let count = t.path().join("count.img");
    std::fs::copy(&img, &count).unwrap();
    let at = root_entry(&count, 0x85);
    patch(&count, at + 1, &[0xff]);
    refused(&count, &["claims 255 secondary entries"]);

    // The cluster heap starts past the volume's end (checksum fixed, so only the
    // geometry is wrong).
    let heap = t.path().join("heap.img");
    std::fs::copy(&img, &heap).unwrap();
    patch(&heap, 88, &0x7fff_fff0u32.to_le_bytes());
    fix_boot_checksum(&heap);
    refused(&heap, &["cluster heap offset", "outside the volume"]);

    // One byte of the up-case table changed: its checksum no longer matches.
    let up = t.path().join("upcase.img");
    std::fs::copy(&img, &up).unwrap();
    let at = root_entry(&up, 0x82);
    let (_, cluster, _, heap, _) = geometry(&up);
    let b = read(&up);
    let first = u64::from(u32::from_le_bytes(b[usize::try_from(at + 20).unwrap()..][..4].try_into().unwrap()));
    patch(&up, heap + (first - 2) * cluster + 0x100, &[0x41, 0x42]);
    refused(&up, &["up-case table's checksum"]);

    // The same patch without fixing the checksum is caught by the checksum.
    let sum = t.path().join("sum.img");
    std::fs::copy(&img, &sum).unwrap();
    patch(&sum, 88, &0x7fff_fff0u32.to_le_bytes());
    refused(&sum, &["boot checksum"]);
}

fn patch_u32_le(p: &Path, off: u64, v: u32) {
    patch(p, off, &v.to_le_bytes());
}
