//! bitmap: qemu-img bitmap on a copy of the same image is the reference; qemu-img info
//! lists what each made, qemu-img check judges the clusters, and qemu-img bitmap --merge
//! reads ours back.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn pair(dir: &Path) -> (PathBuf, PathBuf) {
    let p = dir.join("ours.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "64M"]);
    qemu_io("qcow2", &p, &["write -P 1 0 3M"]);
    let q = dir.join("qemu.qcow2");
    std::fs::copy(&p, &q).expect("copy");
    (p, q)
}

fn bitmaps(p: &Path) -> Value {
    qemu_info(p)["format-specific"]["data"]["bitmaps"].clone()
}

/// Runs `bitmap ARGS FILE NAME` with both tools: same exit code. Returns ours.
fn bitmap_both(args: &[&str], ours: &Path, theirs: &Path, name: &str) -> Run {
    let (os, qs) = (s(ours), s(theirs));
    let mut qa = vec!["bitmap"];
    qa.extend_from_slice(args);
    qa.extend([qs.as_str(), name]);
    let q = qemu_img_status(&qa);
    let mut oa = vec!["bitmap"];
    oa.extend_from_slice(args);
    oa.extend([os.as_str(), name]);
    let r = dc(&oa);
    assert_eq!(r.code, q.code, "bitmap {args:?} {name}\nours: {}\nqemu: {}", r.describe(), q.describe());
    r
}

/// Bitmaps we add are listed by qemu-img info as qemu's own (name, granularity, flags),
/// record guest writes when qemu-io writes, merge with qemu-img, and check clean.
#[test]
fn bitmaps_we_add_are_what_qemu_img_adds() {
    let d = tmp();
    let (p, q) = pair(d.path());
    bitmap_both(&["--add"], &p, &q, "b0").expect_ok();
    bitmap_both(&["--add", "-g", "512", "--disable"], &p, &q, "b1").expect_ok();
    assert_eq!(bitmaps(&p), bitmaps(&q));
    qemu_check_clean(&p);
    qemu_io("qcow2", &p, &["write -P 2 8M 1M"]);
    qemu_check_clean(&p);
    qemu_img(&["bitmap", "--merge", "b0", &s(&p), "b1"]);
    qemu_check_clean(&p);
    dc(&["check", &s(&p)]).expect_ok();
    bitmap_both(&["--add"], &p, &q, "b0").expect_stderr_all(&["bitmap already exists: b0"]);
    bitmap_both(&["--enable"], &p, &q, "nope").expect_stderr_all(&["dirty bitmap 'nope' not found"]);
    let v2 = d.path().join("v2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10", &s(&v2), "1M"]);
    bitmap_both(&["--add"], &v2, &v2, "b").expect_stderr_all(&["cannot store dirty bitmaps in qcow2 v2 files"]);
}

/// Bitmaps qemu made and filled, changed by ours step by step as qemu-img changes a copy:
/// info agrees after every step, check stays clean, and removing the last one leaves no
/// bitmaps (the extension and autoclear bit gone) and no leaked cluster.
#[test]
fn qemu_made_bitmaps_changed_like_qemu_img() {
    let d = tmp();
    let (p, q) = pair(d.path());
    for img in [&p, &q] {
        qemu_img(&["bitmap", "--add", &s(img), "b0"]);
        qemu_img(&["bitmap", "--add", "-g", "4096", &s(img), "b1"]);
        qemu_io("qcow2", img, &["write -P 3 1M 2M", "write -P 4 40M 64K"]);
    }
    for (args, name) in [
        (&["--disable"][..], "b0"),
        (&["--clear"], "b1"),
        (&["--enable"], "b0"),
        (&["--remove"], "b1"),
        (&["--add", "-g", "1M"], "b2"),
        (&["--remove"], "b0"),
        (&["--remove"], "b2"),
    ] {
        bitmap_both(args, &p, &q, name).expect_ok();
        assert_eq!(bitmaps(&p), bitmaps(&q), "after {args:?} {name}");
        qemu_check_clean(&p);
    }
    assert_eq!(bitmaps(&p), Value::Null);
    assert_eq!(Qcow2Header::read(&p).incompatible, Qcow2Header::read(&q).incompatible);
    assert_eq!(read_be_u64(&p, 88) & 1, 0, "autoclear bit 0 left set with no bitmaps");
    qemu_compare(&p, "qcow2", &q, "qcow2");
}

/// A bitmap whose table size is patched past the file (a hostile or damaged directory):
/// every operation on the image refuses with a clear error, nothing is written.
#[test]
fn bitmap_with_a_table_past_the_file_is_refused() {
    let d = tmp();
    let (p, _) = pair(d.path());
    qemu_img(&["bitmap", "--add", &s(&p), "b0"]);
    // Find the bitmaps extension (0x23852875) after the fixed header, then the first
    // directory entry's table_size (bytes 8..12 of the entry).
    let mut pos = u64::from(read_be_u32(&p, 100));
    let dir = loop {
        let (typ, len) = (read_be_u32(&p, pos), u64::from(read_be_u32(&p, pos + 4)));
        assert_ne!(typ, 0, "no bitmaps extension");
        if typ == 0x2385_2875 {
            break read_be_u64(&p, pos + 8 + 16);
        }
        pos += 8 + len.div_ceil(8) * 8;
    };
    patch_u32(&p, dir + 8, 0x0100_0000);
    let before = read(&p);
    for args in [&["--remove"][..], &["--clear"], &["--add"]] {
        let name = if args == ["--add"] { "b1" } else { "b0" };
        let mut a = vec!["bitmap"];
        a.extend_from_slice(args);
        let ps = s(&p);
        a.extend([ps.as_str(), name]);
        dc(&a).expect_code(1).expect_stderr_any(&["past the end of the file", "runs past"]);
    }
    assert!(read(&p) == before, "a refused bitmap operation wrote to the image");
}

/// The bits of bitmap `name`, read straight from the file by the layout qcow2.txt gives
/// (extension, directory entry, table, data clusters): all-zero and all-one table
/// entries expanded, so two images with the same bits compare equal wherever their
/// clusters lie.
fn bitmap_bits(p: &Path, name: &str) -> Vec<u8> {
    let h = Qcow2Header::read(p);
    let cs = h.cluster_size();
    let mut pos = u64::from(read_be_u32(p, 100));
    let (nb, dir) = loop {
        let (typ, len) = (read_be_u32(p, pos), u64::from(read_be_u32(p, pos + 4)));
        assert_ne!(typ, 0, "no bitmaps extension");
        if typ == 0x2385_2875 {
            break (read_be_u32(p, pos + 8), read_be_u64(p, pos + 8 + 16));
        }
        pos += 8 + len.div_ceil(8) * 8;
    };
    let bytes = read(p);
    let mut at = dir;
    for _ in 0..nb {
        let table = read_be_u64(p, at);
        let size = u64::from(read_be_u32(p, at + 8));
        let name_len = u64::from(read_be_u32(p, at + 16) & 0xffff);
        let extra = u64::from(read_be_u32(p, at + 20));
        let start = usize::try_from(at + 24 + extra).expect("offset");
        let this = &bytes[start..start + usize::try_from(name_len).expect("len")];
        if this == name.as_bytes() {
            let mut out = Vec::new();
            for i in 0..size {
                let e = read_be_u64(p, table + 8 * i);
                let off = usize::try_from(e & 0x00ff_ffff_ffff_fe00).expect("offset");
                let c = usize::try_from(cs).expect("cs");
                match (off, e & 1) {
                    (0, 0) => out.extend(std::iter::repeat_n(0u8, c)),
                    (0, _) => out.extend(std::iter::repeat_n(0xffu8, c)),
                    // The file may end inside the last cluster: the rest reads as zeros.
                    _ => {
                        let have = &bytes[off..(off + c).min(bytes.len())];
                        out.extend_from_slice(have);
                        out.extend(std::iter::repeat_n(0u8, c - have.len()));
                    }
                }
            }
            return out;
        }
        at = (at + 24 + extra + name_len).div_ceil(8) * 8;
    }
    panic!("no bitmap {name} in {}", p.display());
}

/// `--merge`: bitmaps qemu filled (one disabled part way, one cleared part way), merged
/// by ours and by qemu-img on a copy: the target holds the very same bits, the source is
/// untouched, check clean. Another image as the source (-b) is refused.
#[test]
fn merge_sets_the_bits_qemu_img_sets() {
    let d = tmp();
    let (p, _) = pair(d.path());
    qemu_img(&["bitmap", "--add", &s(&p), "b0"]);
    qemu_img(&["bitmap", "--add", &s(&p), "b1"]);
    qemu_io("qcow2", &p, &["write -P 1 0 3M"]);
    qemu_img(&["bitmap", "--disable", &s(&p), "b1"]);
    qemu_io("qcow2", &p, &["write -P 2 30M 1M"]);
    qemu_img(&["bitmap", "--clear", &s(&p), "b0"]);
    qemu_io("qcow2", &p, &["write -P 2 50M 1M"]);
    let q = d.path().join("merge-qemu.qcow2");
    std::fs::copy(&p, &q).expect("copy");
    let source = bitmap_bits(&p, "b1");
    bitmap_both(&["--merge", "b1"], &p, &q, "b0").expect_ok();
    qemu_check_clean(&p);
    assert!(bitmap_bits(&p, "b0") == bitmap_bits(&q, "b0"), "merged bits differ from qemu-img's");
    assert!(bitmap_bits(&p, "b1") == source, "the source bitmap changed");
    assert!(bitmap_bits(&p, "b0") != bitmap_bits(&p, "b1"), "the test should merge different bitmaps");
}

/// `--merge` across granularities (4k into 64k and back, 128k from another image with
/// `-b -F`) and from another image: ours and qemu-img's on copies of the same images
/// hold the very same bits, check clean; qemu-img merges from an image ours changed, and
/// ours from one qemu-img changed, alike. Disks of other sizes and sources that cannot
/// hold bitmaps are refused as qemu-img refuses them.
#[test]
fn merge_across_images_and_granularities_like_qemu_img() {
    let d = tmp();
    let img = |name: &str, size: &str| {
        let p = d.path().join(name);
        qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), size]);
        p
    };
    let (p, other, big) = (img("ours.qcow2", "16M"), img("other.qcow2", "16M"), img("big.qcow2", "32M"));
    qemu_img(&["bitmap", "--add", "-g", "64k", &s(&p), "d"]);
    qemu_img(&["bitmap", "--add", "-g", "4k", &s(&p), "e"]);
    qemu_io("qcow2", &p, &["write 5M 4k", "write 130k 4k", "write 12M 200k"]);
    qemu_img(&["bitmap", "--disable", &s(&p), "d"]);
    qemu_io("qcow2", &p, &["write 7M 4k", "write 8448k 8k"]);
    qemu_img(&["bitmap", "--add", "-g", "128k", &s(&other), "s"]);
    qemu_io("qcow2", &other, &["write 100k 4k", "write 1M 300k", "write 15M 4k"]);
    qemu_img(&["bitmap", "--add", &s(&big), "s"]);
    let q = d.path().join("qemu.qcow2");
    std::fs::copy(&p, &q).expect("copy");
    let o = s(&other);
    for args in [&["--merge", "s", "-b", &o, "-F", "qcow2"][..], &["--merge", "e"], &["--merge", "s", "-b", &o]] {
        bitmap_both(args, &p, &q, "d").expect_ok();
        qemu_check_clean(&p);
        assert!(bitmap_bits(&p, "d") == bitmap_bits(&q, "d"), "{args:?}: bits differ from qemu-img's");
    }
    bitmap_both(&["--merge", "d"], &p, &q, "e").expect_ok();
    assert!(bitmap_bits(&p, "e") == bitmap_bits(&q, "e"), "64k into 4k: bits differ from qemu-img's");
    assert!(bitmap_bits(&p, "d").iter().any(|&b| b != 0), "the test should set bits");
    // Each tool reads the other's bitmaps: a fresh target merged from ours by qemu-img,
    // and from qemu-img's by ours.
    let (t1, t2) = (img("t1.qcow2", "16M"), img("t2.qcow2", "16M"));
    for t in [&t1, &t2] {
        qemu_img(&["bitmap", "--add", "-g", "32k", &s(t), "t"]);
    }
    qemu_img(&["bitmap", "--merge", "d", "-b", &s(&p), "-F", "qcow2", &s(&t1), "t"]);
    dc_ok(&["bitmap", "--merge", "d", "-b", &s(&q), "-F", "qcow2", &s(&t2), "t"]);
    qemu_check_clean(&t2);
    assert!(bitmap_bits(&t1, "t") == bitmap_bits(&t2, "t"), "merged from the other tool's image: bits differ");
    let before = read(&p);
    bitmap_both(&["--merge", "s", "-b", &s(&big), "-F", "qcow2"], &p, &q, "d")
        .expect_stderr_all(&["bitmaps are of different sizes"]);
    let raw = d.path().join("plain.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "16M"]);
    bitmap_both(&["--merge", "s", "-b", &s(&raw), "-F", "raw"], &p, &q, "d")
        .expect_stderr_all(&["dirty bitmap 's' not found"]);
    bitmap_both(&["--merge", "s", "-F", "qcow2"], &p, &q, "d").expect_stderr_all(&["-F only supported with -b"]);
    assert!(read(&p) == before, "a refused merge wrote to the image");
}
