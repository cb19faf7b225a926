//! Differencing VHDs. qemu cannot create them, so the child is a qemu-made dynamic disk
//! patched into one (footer type 4, parent unique id, parent locators); data is written
//! into child and parent with qemu-io while both are still plain dynamic disks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::gate::Gate;
use diskcast_block::registry::{CreateOptions, OpenContext};
use diskcast_block::{Alloc, ErrorKind};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

struct Pair {
    parent: PathBuf,
    child: PathBuf,
    /// What the merged disk must read as.
    expected: Vec<u8>,
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Builds parent and child; `locators` are (platform code, data) entries for the child.
fn make_pair(dir: &Path, locators: &[(&[u8; 4], Vec<u8>)]) -> Pair {
    let parent = dir.join("parent.vhd");
    let child = dir.join("child.vhd");
    for p in [&parent, &child] {
        let _ = std::fs::remove_file(p);
    }
    create(&parent, "8M", "");
    qemu_io(&parent, &["write -P 0xa1 0 3M", "write -P 0xa2 5M 1M"]);
    create(&child, "8M", "");
    qemu_io(&child, &["write -P 0xb1 1M 64k", "write -P 0xb2 4194816 1000"]);
    let parent_raw = qemu_raw(&parent, dir);
    let child_raw = qemu_raw(&child, dir);

    // Block 0 of the child keeps only the sectors qemu-io wrote (1 MiB .. +64 KiB);
    // block 2 keeps its full bitmap, so it hides the parent's data at 5 MiB.
    let b = std::fs::read(&child).unwrap();
    let bat = be64(&b, 512 + 16);
    let bat_entries: Vec<u32> = (0..4).map(|i| be32(&b, bat as usize + i * 4)).collect();
    let bm0 = bat_entries[0] as u64 * 512;
    let mut bitmap = vec![0u8; 512];
    for s in 2048..2176 {
        bitmap[s / 8] |= 0x80 >> (s % 8);
    }
    patch(&child, bm0, &bitmap);
    let mut expected = parent_raw.clone();
    for s in 0..expected.len() / 512 {
        let block = s / 4096;
        let in_child = match block {
            0 => (2048..2176).contains(&s),
            _ => bat_entries.get(block).is_some_and(|&e| e != u32::MAX),
        };
        if in_child {
            expected[s * 512..s * 512 + 512].copy_from_slice(&child_raw[s * 512..s * 512 + 512]);
        }
    }

    // Footer type 4, both copies; the end copy moves behind the locator data.
    let len = std::fs::metadata(&child).unwrap().len();
    let mut footer = b[..512].to_vec();
    footer[60..64].copy_from_slice(&4u32.to_be_bytes());
    let sum = vhd_checksum(&footer, 64);
    footer[64..68].copy_from_slice(&sum.to_be_bytes());
    let mut at = len - 512;
    let mut entries = Vec::new();
    for (code, data) in locators {
        let sectors = (data.len() as u64).div_ceil(512).max(1);
        let mut padded = data.clone();
        padded.resize((sectors * 512) as usize, 0);
        patch(&child, at, &padded);
        entries.push((code, sectors as u32, data.len() as u32, at));
        at += sectors * 512;
    }
    patch(&child, 0, &footer);
    patch(&child, at, &footer);
    // Header: parent unique id, parent name (UTF-16BE), locator entries.
    let pb = std::fs::read(&parent).unwrap();
    patch(&child, 512 + 40, &pb[68..84]);
    let name: Vec<u8> = "parent.vhd".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    patch(&child, 512 + 64, &name);
    for (i, (code, space, dlen, off)) in entries.iter().enumerate() {
        let mut e = Vec::new();
        e.extend_from_slice(&code[..]);
        e.extend_from_slice(&space.to_be_bytes());
        e.extend_from_slice(&dlen.to_be_bytes());
        e.extend_from_slice(&[0; 4]);
        e.extend_from_slice(&off.to_be_bytes());
        patch(&child, 512 + 576 + i as u64 * 24, &e);
    }
    fix_header_checksum(&child, 512);
    Pair { parent, child, expected }
}

#[test]
fn merged_read_follows_the_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    // A Mac URL (absolute) and an absolute Windows path that leads nowhere are ignored
    // in favour of the relative Windows path.
    let abs = dir.path().join("parent.vhd");
    let mac = format!("file://localhost{}", abs.display()).into_bytes();
    let pair = make_pair(
        dir.path(),
        &[(b"MacX", mac), (b"W2ku", utf16le("C:\\nowhere\\parent.vhd")), (b"W2ru", utf16le(".\\parent.vhd"))],
    );
    let img = open(&pair.child).unwrap();
    assert_eq!(img.size(), qemu_size(&pair.parent));
    let got = read_all(img.as_ref());
    if let Some(i) = got.iter().zip(&pair.expected).position(|(a, b)| a != b) {
        panic!("first differing byte at {i:#x}: {:#x} vs {:#x}", got[i], pair.expected[i]);
    }
    // The parent's 0xa2 at 5 MiB is hidden by the child's fully set block 2.
    assert!(got[5 * MIB as usize..6 * MIB as usize].iter().all(|&x| x == 0));
    assert!(got[MIB as usize..MIB as usize + 65536].iter().all(|&x| x == 0xb1));
    assert!(got[..MIB as usize].iter().all(|&x| x == 0xa1));
    let e = img.extent_at(0, 8 * MIB).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Backing, MIB));
    let e = img.extent_at(MIB, 8 * MIB).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Data, 65536));
    assert_eq!(img.extent_at(3 * MIB, 8 * MIB).unwrap().alloc, Alloc::Backing);
    assert_eq!(img.extent_at(4 * MIB, 8 * MIB).unwrap().alloc, Alloc::Data);
    let info = img.info();
    assert_eq!(info.specific["subformat"], "differencing");
    assert_eq!(info.backing_file.as_deref(), Some("./parent.vhd"));
    assert_eq!(info.backing_format.as_deref(), Some("vhd"));
    assert_eq!(info.specific["parent-name"], "parent.vhd");
    let parent = open(&pair.parent).unwrap();
    assert_eq!(info.specific["parent-uuid"], parent.info().specific["uuid"]);

    // Flattened by the copy engine into a new dynamic VHD: qemu reads the merged bytes.
    let out = dir.path().join("flat.vhd");
    write_with_ours(img.as_ref(), &out, &CreateOptions::default());
    let raw = dir.path().join("expected.raw");
    std::fs::write(&raw, &pair.expected).unwrap();
    assert_qemu_compare(&raw, &out);
}

#[test]
fn mac_url_and_parent_name_fallbacks() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("parent.vhd");
    let pair = make_pair(dir.path(), &[(b"MacX", format!("file://{}", abs.display()).into_bytes())]);
    assert_eq!(read_all(open(&pair.child).unwrap().as_ref()), pair.expected);
    // A stale relative locator falls through to the absolute one.
    let pair = make_pair(
        dir.path(),
        &[(b"W2ru", utf16le(".\\moved\\parent.vhd")), (b"W2ku", utf16le(&abs.display().to_string()))],
    );
    let img = open(&pair.child).unwrap();
    assert_eq!(img.info().backing_file, Some(abs.display().to_string()));
    assert_eq!(read_all(img.as_ref()), pair.expected);
    // No locator at all: the header's parent name is used.
    let pair = make_pair(dir.path(), &[]);
    let img = open(&pair.child).unwrap();
    assert_eq!(img.info().backing_file.as_deref(), Some("parent.vhd"));
    assert_eq!(read_all(img.as_ref()), pair.expected);
}

#[test]
fn info_without_backing_opens_no_parent() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), &[(b"W2ku", utf16le("/etc/passwd"))]);
    let reg = registry();
    let gate = Gate::new();
    let img = reg.open(&pair.child, Some("vhd"), &OpenContext::without_backing(&reg, &gate)).unwrap();
    assert!(img.backing().is_none());
    assert_eq!(img.info().backing_file.as_deref(), Some("/etc/passwd"));
}

#[test]
fn locator_naming_etc_passwd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), &[(b"W2ku", utf16le("/etc/passwd"))]);
    let e = open(&pair.child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("--allow-backing"), "{e}");
    let pair = make_pair(dir.path(), &[(b"W2ru", utf16le("..\\..\\..\\..\\..\\etc\\passwd"))]);
    assert_eq!(open(&pair.child).unwrap_err().kind(), ErrorKind::Refused);
}

#[test]
fn parent_uuid_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), &[(b"W2ru", utf16le(".\\parent.vhd"))]);
    patch(&pair.child, 512 + 40, &[0x12; 16]);
    fix_header_checksum(&pair.child, 512);
    let e = open(&pair.child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("parent_unique_id"));
    assert!(e.to_string().contains("12121212-1212"), "{e}");
}

#[test]
fn hostile_locators() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), &[(b"W2ru", utf16le(".\\parent.vhd"))]);
    // Data offset far past the end of the file.
    patch(&pair.child, 512 + 576 + 16, &(1u64 << 50).to_be_bytes());
    fix_header_checksum(&pair.child, 512);
    let e = open(&pair.child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert_eq!(e.field(), Some("parent_locator.data_offset"));
    // Absurd length.
    patch(&pair.child, 512 + 576 + 8, &u32::MAX.to_be_bytes());
    fix_header_checksum(&pair.child, 512);
    let e = open(&pair.child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("parent_locator.data_length"));
    // A parent that is not a VHD.
    let pair = make_pair(dir.path(), &[(b"W2ru", utf16le("notvhd.bin"))]);
    std::fs::write(dir.path().join("notvhd.bin"), vec![0u8; 4096]).unwrap();
    let e = open(&pair.child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}
