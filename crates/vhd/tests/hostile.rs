//! Hostile and broken images: each must fail with a clear error of the right kind that
//! names the file and the field, and never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_testkit as tk;
use std::path::{Path, PathBuf};

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

/// A qemu-made 8 MiB dynamic VHD with data in blocks 0 and 2.
fn base(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    create(&p, "8M", "");
    qemu_io(&p, &["write -P 0x42 0 128k", "write -P 0x43 4M 4k"]);
    p
}

fn expect(path: &Path, kind: ErrorKind, field: &str, needle: &str) {
    let e = first_error(open(path));
    assert_error(&e, kind, needle);
    assert_eq!(e.field(), Some(field), "{e}");
}

/// Patches a dynamic header field and fixes the header checksum, so the value itself is
/// what the reader meets.
fn patch_header(path: &Path, field_at: u64, bytes: &[u8]) {
    patch(path, 512 + field_at, bytes);
    fix_header_checksum(path, 512);
}

#[test]
fn bad_footer_checksum() {
    tk::hostile::within(LIMIT_SECS, "bad_footer_checksum", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "f.vhd");
        patch(&p, 48 + 7, &[0x99]); // current_size low byte, checksum not updated
        expect(&p, ErrorKind::Corrupt, "footer.checksum", "footer checksum");
        // Same for a fixed disk's footer at the end.
        let q = dir.path().join("fixed.vhd");
        create(&q, "4M", "subformat=fixed");
        let len = std::fs::metadata(&q).unwrap().len();
        patch(&q, len - 512 + 40, &[0x01]);
        expect(&q, ErrorKind::Corrupt, "footer.checksum", "footer checksum");
    });
}

#[test]
fn bad_dynamic_header_checksum() {
    tk::hostile::within(LIMIT_SECS, "bad_dynamic_header_checksum", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "h.vhd");
        patch(&p, 512 + 28, &[0, 0, 0x10, 0]);
        expect(&p, ErrorKind::Corrupt, "dyn_header.checksum", "dynamic disk header checksum");
    });
}

#[test]
fn huge_max_table_entries() {
    tk::hostile::within(LIMIT_SECS, "huge_max_table_entries", || {
        let dir = tempfile::tempdir().unwrap();
        for n in [u32::MAX, 1 << 27, 10_000_000] {
            let p = base(dir.path(), "m.vhd");
            patch_header(&p, 28, &n.to_be_bytes());
            expect(&p, ErrorKind::OutOfBounds, "max_table_entries", "runs past the end");
        }
        // Too few entries for the disk is corrupt too.
        let p = base(dir.path(), "few.vhd");
        patch_header(&p, 28, &1u32.to_be_bytes());
        expect(&p, ErrorKind::Corrupt, "max_table_entries", "too few");
    });
}

#[test]
fn bat_entry_past_eof() {
    tk::hostile::within(LIMIT_SECS, "bat_entry_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "b.vhd");
        let b = std::fs::read(&p).unwrap();
        let bat = be64(&b, 512 + 16);
        patch(&p, bat + 4, &0x0010_0000u32.to_be_bytes()); // block 1 at 512 MiB
        expect(&p, ErrorKind::OutOfBounds, "bat_entry", "past the end");
        // The last allocated block cut short by truncation.
        let q = base(dir.path(), "t.vhd");
        let len = std::fs::metadata(&q).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&q).unwrap().set_len(len - 4096).unwrap();
        let e = first_error(open(&q));
        assert!(matches!(e.kind(), ErrorKind::OutOfBounds | ErrorKind::Corrupt), "{e}");
    });
}

#[test]
fn block_size_not_a_power_of_two_or_zero() {
    tk::hostile::within(LIMIT_SECS, "block_size_not_a_power_of_two_or_zero", || {
        let dir = tempfile::tempdir().unwrap();
        for bs in [0u32, 3 << 20, 256, 1 << 31] {
            let p = base(dir.path(), "bs.vhd");
            patch_header(&p, 32, &bs.to_be_bytes());
            expect(&p, ErrorKind::Corrupt, "block_size", "block size");
        }
    });
}

#[test]
fn header_offset_past_eof_and_unknown_type() {
    tk::hostile::within(LIMIT_SECS, "header_offset_past_eof_and_unknown_type", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "o.vhd");
        patch(&p, 16, &(1u64 << 40).to_be_bytes());
        fix_footer_checksum(&p, 0);
        expect(&p, ErrorKind::OutOfBounds, "data_offset", "past the end");
        let q = base(dir.path(), "ty.vhd");
        patch(&q, 60, &7u32.to_be_bytes());
        fix_footer_checksum(&q, 0);
        let len = std::fs::metadata(&q).unwrap().len();
        patch(&q, len - 512 + 60, &7u32.to_be_bytes());
        fix_footer_checksum(&q, len - 512);
        // Type 7 at offset 0 is not a dynamic disk, and the footer at the end is not fixed.
        expect(&q, ErrorKind::Corrupt, "disk_type", "disk");
    });
}

#[test]
fn size_past_2040_gib_is_refused() {
    tk::hostile::within(LIMIT_SECS, "size_past_2040_gib_is_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.vhd");
        create(&p, "4M", "force_size=on");
        patch(&p, 48, &(4u64 << 40).to_be_bytes());
        fix_footer_checksum(&p, 0);
        expect(&p, ErrorKind::Unsupported, "current_size", "2040 GiB");
    });
}

#[test]
fn fixed_disk_larger_than_its_file() {
    tk::hostile::within(LIMIT_SECS, "fixed_disk_larger_than_its_file", || {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.vhd");
        create(&p, "4M", "subformat=fixed,force_size=on");
        let len = std::fs::metadata(&p).unwrap().len();
        patch(&p, len - 512 + 48, &(1u64 << 30).to_be_bytes());
        fix_footer_checksum(&p, len - 512);
        expect(&p, ErrorKind::Corrupt, "current_size", "fixed disk");
    });
}

#[test]
fn garbage_and_tiny_files() {
    tk::hostile::within(LIMIT_SECS, "garbage_and_tiny_files", || {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.vhd");
        for bytes in [vec![], vec![0u8; 100], vec![0x5a; 4096], b"conectix".to_vec()] {
            std::fs::write(&p, &bytes).unwrap();
            let e = first_error(open(&p));
            assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{e}");
        }
    });
}
