//! Broken and hostile images: each gives a clear error of the right kind, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_testkit as tk;
use std::path::PathBuf;

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

fn good(dir: &std::path::Path, name: &str) -> PathBuf {
    patterned(dir, name, "14M", "block_size=1M")
}

fn expect_err(p: &std::path::Path, kind: ErrorKind, words: &[&str]) -> diskcast_block::Error {
    let e = open(p).unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "{msg:?} lacks {w:?}");
    }
    assert_eq!(e.file(), Some(p), "{e}");
    e
}

#[test]
fn overlapping_regions() {
    tk::hostile::within(LIMIT_SECS, "overlapping_regions", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "o.vhdx");
        let (bat, _) = region(&p, &BAT_GUID_LE);
        // Point the metadata region of table 1 at the BAT.
        let rt = read_bytes(&p, 192 << 10, 64 << 10);
        let i = (0..2).find(|i| rt[16 + 32 * i..20 + 32 * i] == META_GUID_LE).unwrap();
        patch(&p, (192 << 10) + 16 + 32 * i as u64 + 16, &bat.to_le_bytes());
        fix_crc(&p, 192 << 10, 64 << 10);
        let e = expect_err(&p, ErrorKind::Corrupt, &["overlaps the BAT region"]);
        assert_eq!(e.field(), Some("region_entry"));
    });
}

#[test]
fn block_size_out_of_range() {
    tk::hostile::within(LIMIT_SECS, "block_size_out_of_range", || {
        let dir = tempfile::tempdir().unwrap();
        for bad in [512u32 << 10, 512 << 20, 3 << 20] {
            let p = good(dir.path(), &format!("b{bad}.vhdx"));
            let (meta, _) = region(&p, &META_GUID_LE);
            patch(&p, meta + (64 << 10), &bad.to_le_bytes());
            let e = expect_err(&p, ErrorKind::Corrupt, &["block size", &bad.to_string()]);
            assert_eq!(e.field(), Some("block_size"));
        }
    });
}

#[test]
fn bad_header_crc_falls_back_and_both_bad_is_corrupt() {
    tk::hostile::within(LIMIT_SECS, "bad_header_crc_falls_back_and_both_bad_is_corrupt", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "h.vhdx");
        let active = active_header(&p);
        let seq_before = open(&p).unwrap().info().specific["header-sequence"].as_u64().unwrap();
        patch(&p, active + 200, &[0x5a]);
        // The other header is still valid: it is used, with its lower sequence number.
        let img = open(&p).unwrap();
        assert_eq!(img.info().specific["header-sequence"].as_u64().unwrap(), seq_before - 1);
        assert_matches_qemu(&p, dir.path());
        let other = if active == 64 << 10 { 128 << 10 } else { 64 << 10 };
        patch(&p, other + 200, &[0x5a]);
        let e = expect_err(&p, ErrorKind::Corrupt, &["both VHDX headers", "CRC-32C"]);
        assert_eq!(e.field(), Some("header"));
    });
}

#[test]
fn bad_region_table_crc() {
    tk::hostile::within(LIMIT_SECS, "bad_region_table_crc", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "r.vhdx");
        let want = qemu_raw(&p, "vhdx", dir.path());
        patch(&p, (192 << 10) + 40, &[0xff]);
        // Table 2 still holds and we use it (qemu reads only table 1 and refuses the file).
        assert_same(&read_all(open(&p).unwrap().as_ref()), &want, "via region table 2");
        patch(&p, (256 << 10) + 40, &[0xff]);
        let e = expect_err(&p, ErrorKind::Corrupt, &["both region tables", "CRC-32C"]);
        assert_eq!(e.field(), Some("region_table"));
    });
}

#[test]
fn region_entry_count_is_capped() {
    tk::hostile::within(LIMIT_SECS, "region_entry_count_is_capped", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "n.vhdx");
        for t in [192u64 << 10, 256 << 10] {
            patch(&p, t + 8, &100_000u32.to_le_bytes());
            fix_crc(&p, t, 64 << 10);
        }
        expect_err(&p, ErrorKind::Corrupt, &["100000 entries"]);
    });
}

#[test]
fn dirty_log_without_replay() {
    tk::hostile::within(LIMIT_SECS, "dirty_log_without_replay", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "l.vhdx");
        add_pending_log(&p);
        let e = expect_err(&p, ErrorKind::Refused, &["pending log", "--replay-log"]);
        assert_eq!(e.field(), Some("log_guid"));
    });
}

#[test]
fn bat_entry_past_eof() {
    tk::hostile::within(LIMIT_SECS, "bat_entry_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "e.vhdx");
        let (bat, _) = region(&p, &BAT_GUID_LE);
        patch(&p, bat + 8 * 3, &((100u64 << 30) | 6).to_le_bytes());
        let e = expect_err(&p, ErrorKind::Corrupt, &["block 3", "past the end"]);
        assert_eq!(e.field(), Some("bat_entry"));
        assert_eq!(e.offset(), Some(bat + 24));
        // check reports it instead of failing.
        let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(&p).unwrap()).unwrap();
        assert_eq!(rep.corruptions, 1, "{:?}", rep.messages);
        // An undefined state is refused too.
        patch(&p, bat + 8 * 3, &5u64.to_le_bytes());
        expect_err(&p, ErrorKind::Corrupt, &["undefined state 5"]);
    });
}

#[test]
fn overlapping_blocks_are_found_by_check() {
    tk::hostile::within(LIMIT_SECS, "overlapping_blocks_are_found_by_check", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "ov.vhdx");
        let (bat, _) = region(&p, &BAT_GUID_LE);
        let b0 = read_bytes(&p, bat, 8);
        patch(&p, bat + 8 * 7, &b0);
        let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(&p).unwrap()).unwrap();
        assert_eq!(rep.corruptions, 1, "{:?}", rep.messages);
        assert!(rep.messages[0].contains("block 7") || rep.messages[0].contains("block 0"), "{:?}", rep.messages);
        // A block inside the metadata region.
        let (meta, _) = region(&p, &META_GUID_LE);
        patch(&p, bat + 8 * 7, &(meta | 6).to_le_bytes());
        let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(&p).unwrap()).unwrap();
        assert!(rep.messages.iter().any(|m| m.contains("metadata region")), "{:?}", rep.messages);
    });
}

#[test]
fn truncated_and_garbage_files() {
    tk::hostile::within(LIMIT_SECS, "truncated_and_garbage_files", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "t.vhdx");
        let full = std::fs::read(&p).unwrap();
        // Each cut names what it cuts: the header area, the log, the BAT, the metadata.
        let header_area = "shorter than the 1 MiB header area";
        for (len, kind, needle) in [
            (8usize, ErrorKind::Corrupt, header_area),
            (4096, ErrorKind::Corrupt, header_area),
            (100 << 10, ErrorKind::Corrupt, header_area),
            (200 << 10, ErrorKind::Corrupt, header_area),
            (1 << 20, ErrorKind::OutOfBounds, "log at 0x100000 (1048576 bytes) runs past the end"),
            (2 << 20, ErrorKind::OutOfBounds, "region 2dc27766-f623-4200-9d64-115e9bfd4a08 at 0x200000"),
            ((3 << 20) + 4096, ErrorKind::OutOfBounds, "region 8b7ca206-4790-4b9a-b8fe-575f050f886e at 0x300000"),
        ] {
            let t = dir.path().join(format!("t{len}.vhdx"));
            std::fs::write(&t, &full[..len]).unwrap();
            tk::assert_error(&open(&t).unwrap_err(), kind, needle);
        }
        let g = dir.path().join("g.vhdx");
        std::fs::write(&g, b"not a vhdx at all").unwrap();
        assert_eq!(open(&g).unwrap_err().kind(), ErrorKind::InvalidFormat);
    });
}

#[test]
fn metadata_item_outside_the_region() {
    tk::hostile::within(LIMIT_SECS, "metadata_item_outside_the_region", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "m.vhdx");
        let (meta, _) = region(&p, &META_GUID_LE);
        // First entry (file parameters): offset far past the 1 MiB region.
        patch(&p, meta + 32 + 16, &(4u32 << 20).to_le_bytes());
        let e = expect_err(&p, ErrorKind::Corrupt, &["outside the metadata region"]);
        assert_eq!(e.field(), Some("metadata_entry"));
    });
}

#[test]
fn metadata_entry_count_is_capped_and_unknown_required_items_refused() {
    tk::hostile::within(LIMIT_SECS, "metadata_entry_count_is_capped_and_unknown_required_items_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "mc.vhdx");
        let (meta, _) = region(&p, &META_GUID_LE);
        patch(&p, meta + 10, &5000u16.to_le_bytes());
        let e = expect_err(&p, ErrorKind::Corrupt, &["5000 entries"]);
        assert_eq!(e.field(), Some("metadata_entry_count"));
        // An unknown item marked required.
        patch(&p, meta + 10, &6u16.to_le_bytes());
        let mut entry = vec![0u8; 32];
        entry[..16].copy_from_slice(&[0x42; 16]);
        entry[24..28].copy_from_slice(&4u32.to_le_bytes());
        patch(&p, meta + 32 + 32 * 5, &entry);
        expect_err(&p, ErrorKind::Unsupported, &["unknown required metadata item"]);
        // The same item, not required, is ignored.
        patch(&p, meta + 32 + 32 * 5 + 24, &0u32.to_le_bytes());
        assert_matches_qemu(&p, dir.path());
    });
}

#[test]
fn unknown_required_region_is_refused() {
    tk::hostile::within(LIMIT_SECS, "unknown_required_region_is_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let p = good(dir.path(), "ur.vhdx");
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len + (1 << 20)).unwrap();
        for t in [192u64 << 10, 256 << 10] {
            let mut e = vec![0u8; 32];
            e[..16].copy_from_slice(&[0x17; 16]);
            e[16..24].copy_from_slice(&len.to_le_bytes());
            e[24..28].copy_from_slice(&(1u32 << 20).to_le_bytes());
            e[28..32].copy_from_slice(&1u32.to_le_bytes());
            patch(&p, t + 16 + 32 * 2, &e);
            patch(&p, t + 8, &3u32.to_le_bytes());
            fix_crc(&p, t, 64 << 10);
        }
        let e = expect_err(&p, ErrorKind::Unsupported, &["unknown required region"]);
        assert_eq!(e.field(), Some("region_entry"));
    });
}

#[test]
fn mutated_metadata_never_panics() {
    tk::hostile::within(LIMIT_SECS, "mutated_metadata_never_panics", || {
        // Flip bytes in every structure (fixing CRCs so parsing goes deep), then open, read,
        // map and check: any result is fine, a panic is not.
        let dir = tempfile::tempdir().unwrap();
        let p = patterned(dir.path(), "f.vhdx", "10M", "block_size=1M");
        let (meta, _) = region(&p, &META_GUID_LE);
        let (bat, _) = region(&p, &BAT_GUID_LE);
        let hdr = active_header(&p);
        // (start, span, structure whose CRC to fix: (offset, length))
        type Target = (u64, u64, Option<(u64, usize)>);
        let targets: Vec<Target> = vec![
            (hdr + 8, 72, Some((hdr, 4096))),
            (192 << 10, 80, Some((192 << 10, 64 << 10))),
            (meta, 200, None),
            (meta + (64 << 10), 40, None),
            (bat, 96, None),
        ];
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut outcomes = [0usize; 2];
        for i in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (start, span, crc) = targets[i % targets.len()];
            let at = start + x % span;
            let old = read_bytes(&p, at, 1)[0];
            let new = [old ^ (1 << (x >> 32 & 7)), 0xff, 0, old.wrapping_add(0x80)][(x >> 40) as usize % 4];
            patch(&p, at, &[new]);
            if let Some((s, l)) = crc {
                fix_crc(&p, s, l);
            }
            match open(&p) {
                Ok(img) => {
                    outcomes[0] += 1;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut off = 0;
                    while off < img.size() {
                        let n = (img.size() - off).min(1 << 20) as usize;
                        let _ = img.read_at(&mut buf[..n], off);
                        match img.extent_at(off, img.size() - off) {
                            Ok(e) => assert!(e.len > 0 && e.offset == off),
                            Err(_) => break,
                        }
                        off += n as u64;
                    }
                }
                Err(_) => outcomes[1] += 1,
            }
            let _ = diskcast_vhdx::check::check(diskcast_block::source::open_file(&p).unwrap());
            patch(&p, at, &[old]);
            if let Some((s, l)) = crc {
                fix_crc(&p, s, l);
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
        assert_matches_qemu(&p, dir.path());
    });
}
