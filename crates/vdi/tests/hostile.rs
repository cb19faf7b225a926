//! Hostile and broken images: each must fail with a clear error of the right kind, name
//! the file, and never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_testkit as tk;
use std::path::{Path, PathBuf};

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

/// A 4 MiB dynamic image with data in guest blocks 0 and 2 (data blocks 0 and 1).
fn base(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    create(&p, "4M", false);
    qemu_io("vdi", &p, &["write -P 0x42 0 64k", "write -P 0x43 2M 64k"]);
    p
}

fn expect(path: &Path, kind: ErrorKind, needle: &str) {
    assert_error(&first_error(open(path)), kind, needle);
}

const BLOCKS_IN_IMAGE: u64 = 0x180;
const BLOCKS_ALLOCATED: u64 = 0x184;
const BLOCK_SIZE: u64 = 0x178;
const BMAP: u64 = 0x200;

#[test]
fn truncated_header_and_bad_signature() {
    tk::hostile::within(LIMIT_SECS, "truncated_header_and_bad_signature", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "t.vdi");
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..0x100]).unwrap();
        expect(&p, ErrorKind::InvalidFormat, "too short");
        let p = base(dir.path(), "sig.vdi");
        patch(&p, 0x40, &0xdead_beefu32.to_le_bytes());
        expect(&p, ErrorKind::InvalidFormat, "signature");
    });
}

/// A qemu-made header whose `header_size` claims the LCHS geometry (as VirtualBox writes
/// it), cut before the geometry: an error naming the truncation, not a header without one.
#[test]
fn header_cut_inside_the_lchs_geometry() {
    tk::hostile::within(LIMIT_SECS, "header_cut_inside_the_lchs_geometry", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "lchs.vdi");
        patch(&p, 0x48, &0x190u32.to_le_bytes());
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..0x1d0]).unwrap();
        expect(&p, ErrorKind::InvalidFormat, "truncated VDI header: header_size 0x190 has an LCHS geometry");
    });
}

#[test]
fn block_map_past_eof() {
    tk::hostile::within(LIMIT_SECS, "block_map_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        for n in [0x0010_0000u32, 0xffff_ffff] {
            let p = base(dir.path(), "bm.vdi");
            patch(&p, BLOCKS_IN_IMAGE, &n.to_le_bytes());
            expect(&p, ErrorKind::OutOfBounds, "field blocks_in_image");
            let e = check(&p).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
        }
    });
}

#[test]
fn zero_block_size() {
    tk::hostile::within(LIMIT_SECS, "zero_block_size", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "bs0.vdi");
        patch(&p, BLOCK_SIZE, &0u32.to_le_bytes());
        expect(&p, ErrorKind::InvalidFormat, "block_size 0 is not a power of two");
    });
}

#[test]
fn block_size_not_a_power_of_two_or_too_large() {
    tk::hostile::within(LIMIT_SECS, "block_size_not_a_power_of_two_or_too_large", || {
        let dir = tempfile::tempdir().unwrap();
        for bs in [3u32 << 19, 1000, 256, 1 << 30] {
            let p = base(dir.path(), "bs.vdi");
            patch(&p, BLOCK_SIZE, &bs.to_le_bytes());
            expect(&p, ErrorKind::InvalidFormat, "field block_size");
        }
    });
}

#[test]
fn block_map_entry_past_eof_or_beyond_allocated() {
    tk::hostile::within(LIMIT_SECS, "block_map_entry_past_eof_or_beyond_allocated", || {
        let dir = tempfile::tempdir().unwrap();
        // Entry names block 999 and the header claims 1000 allocated: data past EOF.
        let p = base(dir.path(), "eof.vdi");
        patch(&p, BLOCKS_ALLOCATED, &4u32.to_le_bytes());
        patch(&p, BLOCKS_IN_IMAGE, &4u32.to_le_bytes());
        patch(&p, BMAP + 4, &3u32.to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "past the end of the");
        // Entry names block 5 of 2 allocated.
        let p = base(dir.path(), "beyond.vdi");
        patch(&p, BMAP + 4, &5u32.to_le_bytes());
        expect(&p, ErrorKind::Corrupt, "only 2 allocated blocks");
        let e = first_error(open(&p));
        assert_eq!(e.offset(), Some(BMAP + 4), "{e}");
        // blocks_allocated larger than the image is refused at open.
        let p = base(dir.path(), "alloc.vdi");
        patch(&p, BLOCKS_ALLOCATED, &9u32.to_le_bytes());
        expect(&p, ErrorKind::Corrupt, "field blocks_allocated");
    });
}

#[test]
fn duplicate_block_map_entries_are_reported_by_check() {
    tk::hostile::within(LIMIT_SECS, "duplicate_block_map_entries_are_reported_by_check", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "dup.vdi");
        // Guest block 3 shares data block 0 with guest block 0.
        patch(&p, BMAP + 12, &0u32.to_le_bytes());
        let r = check(&p).unwrap();
        assert_eq!(r.corruptions, 2, "{:?}", r.messages); // the duplicate and the count
        assert!(r.messages.iter().any(|m| m.contains("data block 0 is used by block map entry 3")), "{:?}", r.messages);
        let out = std::process::Command::new("qemu-img")
            .args(["check", "--output=json", "-f", "vdi", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "qemu-img check should find corruption too");
        let v: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(v["corruptions"].as_u64(), Some(r.corruptions));
        // Reading still works: both guest blocks show the shared data, as in qemu.
        assert_matches_qemu(&p, dir.path());
    });
}

#[test]
fn unsupported_image_types() {
    tk::hostile::within(LIMIT_SECS, "unsupported_image_types", || {
        let dir = tempfile::tempdir().unwrap();
        for (t, kind, needle) in [
            (3u32, ErrorKind::Unsupported, "undo"),
            (4, ErrorKind::Unsupported, "differencing"),
            (0, ErrorKind::InvalidFormat, "unknown VDI image type 0"),
            (77, ErrorKind::InvalidFormat, "unknown VDI image type 77"),
        ] {
            let p = base(dir.path(), "type.vdi");
            patch(&p, 0x4c, &t.to_le_bytes());
            expect(&p, kind, needle);
        }
    });
}

#[test]
fn other_unsupported_headers() {
    tk::hostile::within(LIMIT_SECS, "other_unsupported_headers", || {
        let dir = tempfile::tempdir().unwrap();
        for (at, bytes, kind, needle) in [
            (0x44u64, 0x0000_0002u32.to_le_bytes().to_vec(), ErrorKind::Unsupported, "version 0.2"),
            (0x44, 0x0001_0000u32.to_le_bytes().to_vec(), ErrorKind::Unsupported, "version 1.0"),
            (0x17c, 512u32.to_le_bytes().to_vec(), ErrorKind::Unsupported, "field block_extra"),
            (0x168, 4096u32.to_le_bytes().to_vec(), ErrorKind::Unsupported, "sector size 4096"),
            (0x1a8, vec![1u8; 16], ErrorKind::Unsupported, "parent"),
            (0x48, 0x100u32.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "field header_size"),
            (0x48, 0x1000u32.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "overlaps the block map"),
            (0x158, 0x200u32.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "field offset_data"),
            (0x170, (5u64 << 20).to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "field disk_size"),
            (0x170, u64::MAX.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "field disk_size"),
        ] {
            let p = base(dir.path(), "h.vdi");
            patch(&p, at, &bytes);
            expect(&p, kind, needle);
        }
    });
}

/// Flips bytes all over the header and block map of small images, from memory: each
/// mutant must open, map, read and check within its time limit, and every error must be
/// an input error naming the image (see `tk::hostile::exercise`).
#[test]
fn mutated_metadata_never_panics() {
    tk::hostile::within(LIMIT_SECS, "mutated_metadata_never_panics", || {
        let dir = tempfile::tempdir().unwrap();
        let d = base(dir.path(), "d.vdi");
        let s = patterned(dir.path(), "s.vdi", "5M", true);
        for orig_path in [&d, &s] {
            let name = orig_path.file_name().unwrap().to_str().unwrap();
            let orig = std::fs::read(orig_path).unwrap();
            let mut x: u64 = 0x1234_5678;
            let mut opened = 0;
            for i in 0..250 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Header fields from 0x40, or the block map.
                let at = if i % 2 == 0 { 0x40 + (x as usize >> 8) % 0x190 } else { 0x200 + (x as usize >> 8) % 16 };
                let mut m = orig.clone();
                m[at] ^= (x as u8) | 1;
                if i % 7 == 0 {
                    m[at + 1] ^= 0x80;
                }
                let what = format!("{name} with byte {at:#x} xor {:#x}", (x as u8) | 1);
                opened += usize::from(tk::hostile::exercise(registry, "vdi", name, m.into(), 20, &what).opened);
            }
            assert!(opened > 0, "{name}: no mutant opened, so none reached the block map");
        }
    });
}
