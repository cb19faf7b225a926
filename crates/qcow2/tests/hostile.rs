//! Hostile and broken images: each must fail with a clear error of the right kind, and
//! never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_block::gate::Gate;
use diskcast_block::registry::{Driver, OpenContext};
use diskcast_qcow2::Qcow2Driver;
use diskcast_testkit as tk;
use std::path::{Path, PathBuf};

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

/// A 64 KiB-cluster image with data in its first cluster.
fn base(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    create(&p, "4M", "");
    qemu_io(&p, &["write -P 0x42 0 128k"]);
    p
}

fn l2_offset(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let l1 = be64(&b, 40) as usize;
    be64(&b, l1) & 0x00ff_ffff_ffff_fe00
}

fn expect(path: &Path, kind: ErrorKind, needle: &str) {
    assert_error(&first_error(open(path)), kind, needle);
}

#[test]
fn truncated_header() {
    tk::hostile::within(LIMIT_SECS, "truncated_header", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "t.qcow2");
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..50]).unwrap();
        expect(&p, ErrorKind::InvalidFormat, "too short");
    });
}

#[test]
fn cluster_bits_out_of_range() {
    tk::hostile::within(LIMIT_SECS, "cluster_bits_out_of_range", || {
        let dir = tempfile::tempdir().unwrap();
        for bits in [8u32, 22, 63, 0xffff_ffff] {
            let p = base(dir.path(), "cb.qcow2");
            patch(&p, 20, &bits.to_be_bytes());
            expect(&p, ErrorKind::InvalidFormat, "cluster_bits");
        }
    });
}

#[test]
fn huge_l1_size() {
    tk::hostile::within(LIMIT_SECS, "huge_l1_size", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "l1.qcow2");
        patch(&p, 36, &0xffff_ffffu32.to_be_bytes());
        expect(&p, ErrorKind::InvalidFormat, "l1_size");
    });
}

#[test]
fn tables_past_eof() {
    tk::hostile::within(LIMIT_SECS, "tables_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "l1eof.qcow2");
        patch(&p, 40, &(1u64 << 40).to_be_bytes());
        expect(&p, ErrorKind::OutOfBounds, "l1_table_offset");
        let p = base(dir.path(), "rteof.qcow2");
        patch(&p, 48, &(1u64 << 40).to_be_bytes());
        expect(&p, ErrorKind::OutOfBounds, "refcount_table_offset");
        // An L1 entry pointing past EOF.
        let p = base(dir.path(), "l1e.qcow2");
        let l1 = be64(&std::fs::read(&p).unwrap(), 40);
        patch(&p, l1, &((1u64 << 63) | (1 << 40)).to_be_bytes());
        expect(&p, ErrorKind::OutOfBounds, "l1_entry");
    });
}

#[test]
fn l2_entry_past_eof_or_into_header() {
    tk::hostile::within(LIMIT_SECS, "l2_entry_past_eof_or_into_header", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "l2eof.qcow2");
        patch(&p, l2_offset(&p), &((1u64 << 63) | (1 << 40)).to_be_bytes());
        expect(&p, ErrorKind::OutOfBounds, "l2_entry");
        let p = base(dir.path(), "l2hdr.qcow2");
        patch(&p, l2_offset(&p), &((1u64 << 63) | 0x200).to_be_bytes());
        expect(&p, ErrorKind::Corrupt, "l2_entry");
        // 512-byte clusters: cluster 0 is the header and 0x200 is a valid-looking cluster,
        // so an L1 entry to the header is unaligned-free: point it at 0x200 of a 4k image.
        let p = base(dir.path(), "l1hdr.qcow2");
        let l1 = be64(&std::fs::read(&p).unwrap(), 40);
        patch(&p, l1, &((1u64 << 63) | 0x200).to_be_bytes());
        expect(&p, ErrorKind::Corrupt, "l1_entry");
    });
}

#[test]
fn compressed_cluster_past_eof() {
    tk::hostile::within(LIMIT_SECS, "compressed_cluster_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        let src = base(dir.path(), "s.qcow2");
        let p = dir.path().join("c.qcow2");
        qemu_img(&["convert", "-c", "-O", "qcow2", src.to_str().unwrap(), p.to_str().unwrap()]);
        let l2 = l2_offset(&p);
        let b = std::fs::read(&p).unwrap();
        let entry = be64(&b, l2 as usize);
        assert!(entry & (1 << 62) != 0, "qemu did not compress");
        // cluster_bits 16: sector count in bits 54..61; make it the largest.
        let patched = entry | (0xff << 54);
        patch(&p, l2, &patched.to_be_bytes());
        expect(&p, ErrorKind::OutOfBounds, "compressed cluster");
        // Truncating the file under the compressed data is caught the same way.
        let p2 = dir.path().join("c2.qcow2");
        qemu_img(&["convert", "-c", "-O", "qcow2", src.to_str().unwrap(), p2.to_str().unwrap()]);
        let host = be64(&std::fs::read(&p2).unwrap(), l2_offset(&p2) as usize) & ((1 << 54) - 1);
        let f = std::fs::OpenOptions::new().write(true).open(&p2).unwrap();
        f.set_len(host + 1).unwrap();
        let e = first_error(open(&p2));
        assert!(matches!(e.kind(), ErrorKind::OutOfBounds | ErrorKind::Corrupt), "{e}");
        // Garbage instead of deflate data is Corrupt.
        let p3 = dir.path().join("c3.qcow2");
        qemu_img(&["convert", "-c", "-O", "qcow2", src.to_str().unwrap(), p3.to_str().unwrap()]);
        let host = be64(&std::fs::read(&p3).unwrap(), l2_offset(&p3) as usize) & ((1 << 54) - 1);
        patch(&p3, host, &[0xff; 64]);
        expect(&p3, ErrorKind::Corrupt, "compressed");
    });
}

#[test]
fn unknown_incompatible_bit_encryption_and_data_file() {
    tk::hostile::within(LIMIT_SECS, "unknown_incompatible_bit_encryption_and_data_file", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "u.qcow2");
        patch(&p, 72, &(1u64 << 7).to_be_bytes());
        expect(&p, ErrorKind::Unsupported, "bit(s) 7");
        let p = base(dir.path(), "e.qcow2");
        patch(&p, 32, &2u32.to_be_bytes());
        expect(&p, ErrorKind::Unsupported, "LUKS");
        let p = base(dir.path(), "d.qcow2");
        patch(&p, 72, &(1u64 << 2).to_be_bytes());
        expect(&p, ErrorKind::Unsupported, "external data file");
    });
}

#[test]
fn corrupt_bit_refuses_open_but_check_works() {
    tk::hostile::within(LIMIT_SECS, "corrupt_bit_refuses_open_but_check_works", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "cor.qcow2");
        patch(&p, 72, &(1u64 << 1).to_be_bytes());
        expect(&p, ErrorKind::Corrupt, "diskcast check");
        let reg = registry();
        let gate = Gate::new();
        let r =
            Qcow2Driver.check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &gate)).unwrap();
        assert_eq!((r.corruptions, r.leaks), (0, 0), "{:?}", r.messages);
    });
}

#[test]
fn backing_outside_dir_is_refused() {
    tk::hostile::within(LIMIT_SECS, "backing_outside_dir_is_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "pw.qcow2");
        qemu_img(&["rebase", "-u", "-b", "/etc/passwd", "-F", "raw", p.to_str().unwrap()]);
        expect(&p, ErrorKind::Refused, "--allow-backing");
        let p = base(dir.path(), "js.qcow2");
        qemu_img(&["rebase", "-u", "-b", "json:{\"file.filename\":\"/etc/passwd\"}", "-F", "raw", p.to_str().unwrap()]);
        expect(&p, ErrorKind::Refused, "json");
    });
}

#[test]
fn backing_loop_is_refused() {
    tk::hostile::within(LIMIT_SECS, "backing_loop_is_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "self.qcow2");
        qemu_img(&["rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", p.to_str().unwrap()]);
        expect(&p, ErrorKind::Refused, "loops");
        // a -> b -> a
        let a = base(dir.path(), "a.qcow2");
        let b = base(dir.path(), "b.qcow2");
        qemu_img(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a.to_str().unwrap()]);
        qemu_img(&["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", b.to_str().unwrap()]);
        expect(&a, ErrorKind::Refused, "loops");
    });
}

/// Flips bytes all over the metadata (header, L1, L2, refcount table) of small images,
/// from memory: each mutant must open, map, read and check within its time limit, and
/// every error must be an input error naming the image (see `tk::hostile::exercise`).
#[test]
fn mutated_metadata_never_panics() {
    tk::hostile::within(LIMIT_SECS, "mutated_metadata_never_panics", || {
        let dir = tempfile::tempdir().unwrap();
        let src = base(dir.path(), "src.qcow2");
        let c = dir.path().join("cz.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4k",
            src.to_str().unwrap(),
            c.to_str().unwrap(),
        ]);
        for orig_path in [&src, &c] {
            let name = orig_path.file_name().unwrap().to_str().unwrap();
            let orig = std::fs::read(orig_path).unwrap();
            let l1 = be64(&orig, 40) as usize;
            let l2 = (be64(&orig, l1) & 0x00ff_ffff_ffff_fe00) as usize;
            let rt = be64(&orig, 48) as usize;
            let mut x: u64 = 0x1234_5678;
            let mut opened = 0;
            for i in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let region = [0usize, l1, l2, rt][i % 4];
                let at = region + (x as usize >> 8) % 256;
                let mut m = orig.clone();
                if at < m.len() {
                    m[at] ^= (x as u8) | 1;
                }
                let what = format!("{name} with byte {at:#x} xor {:#x}", (x as u8) | 1);
                opened += usize::from(tk::hostile::exercise(registry, "qcow2", name, m.into(), 20, &what).opened);
            }
            assert!(opened > 0, "{name}: no mutant opened, so none reached the tables");
        }
    });
}

/// A qcow2 with a persistent bitmap, and the file offset of its bitmaps extension body.
fn with_bitmap(dir: &Path, name: &str) -> (PathBuf, u64) {
    let p = base(dir, name);
    qemu_img(&["bitmap", "--add", p.to_str().unwrap(), "b0"]);
    qemu_io(&p, &["write -P 7 1M 64k"]);
    let b = std::fs::read(&p).unwrap();
    let at = b[..65536].windows(4).position(|w| w == [0x23, 0x85, 0x28, 0x75]).expect("bitmaps extension");
    (p, at as u64 + 8)
}

/// `check` on a qcow2 whose bitmap directory or table points outside the file, or claims
/// absurd sizes: corruptions reported, no panic, no huge allocation, quickly.
#[test]
fn hostile_bitmap_directory_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let check = |p: PathBuf| {
        diskcast_testkit::within(20, "check of a hostile bitmap", move || {
            let reg = registry();
            let gate = Gate::new();
            Qcow2Driver.check(diskcast_block::source::open_file(&p)?, &OpenContext::new(&reg, &gate))
        })
    };
    // Directory past the end of the file.
    let (p, ext) = with_bitmap(dir.path(), "d.qcow2");
    patch(&p, ext + 16, &(1u64 << 50).to_be_bytes());
    let r = check(p).unwrap();
    assert!(r.corruptions > 0 && r.messages.iter().any(|m| m.contains("bitmap directory")), "{:?}", r.messages);
    // A directory claiming more bitmaps and bytes than qemu allows.
    let (p, ext) = with_bitmap(dir.path(), "n.qcow2");
    patch(&p, ext, &u32::MAX.to_be_bytes());
    patch(&p, ext + 8, &u64::MAX.to_be_bytes());
    assert!(check(p).unwrap().corruptions > 0);
    // A table of 2^32-1 entries, far past the end of the file.
    let (p, ext) = with_bitmap(dir.path(), "t.qcow2");
    let dir_off = be64(&std::fs::read(&p).unwrap(), (ext + 16) as usize);
    patch(&p, dir_off + 8, &u32::MAX.to_be_bytes());
    let r = check(p).unwrap();
    assert!(r.corruptions > 0, "{:?}", r.messages);
}
