//! `check` against qemu-img check's counts, and `measure` against the files we write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::registry::Driver;
use diskcast_block::{Alloc, Extent};
use diskcast_vdi::VdiDriver;
use std::path::Path;

fn theirs(p: &Path) -> (Option<i32>, serde_json::Value) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", "-f", "vdi", p.to_str().unwrap()])
        .output()
        .expect("qemu-img is required");
    (out.status.code(), serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap())
}

fn assert_same(p: &Path) -> u64 {
    let ours = check(p).unwrap();
    let (code, t) = theirs(p);
    let n = |k: &str| t.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    assert_eq!(ours.corruptions, n("corruptions"), "{:?} vs {t}", ours.messages);
    assert_eq!(ours.leaks, n("leaks"));
    assert_eq!(ours.check_errors, n("check-errors"));
    // qemu reports no allocation figures for vdi, and neither do we.
    assert!(ours.allocated_clusters.is_none() && t.get("allocated-clusters").is_none());
    assert_eq!(code, Some(if ours.corruptions > 0 { 2 } else { 0 }));
    ours.corruptions
}

#[test]
fn clean_images_agree_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for (name, is_static) in [("d.vdi", false), ("s.vdi", true)] {
        let p = patterned(dir.path(), name, "5000001", is_static);
        assert_eq!(assert_same(&p), 0);
    }
    let e = dir.path().join("e.vdi");
    create(&e, "0", false);
    assert_eq!(assert_same(&e), 0);
}

#[test]
fn patched_images_agree_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let p = patterned(dir.path(), name, "5000001", false);
        let b = std::fs::read(&p).unwrap();
        assert_eq!(le32(&b, 0x184), 4, "pattern allocates blocks 0, 1, 2 and 4");
        p
    };
    // Entry beyond blocks_in_image (and so the count is one short).
    let p = fresh("big.vdi");
    patch(&p, 0x200, &1000u32.to_le_bytes());
    assert_eq!(assert_same(&p), 2);
    // Two guest blocks share a data block (the count is then one too many).
    let p = fresh("dup.vdi");
    patch(&p, 0x200 + 12, &1u32.to_le_bytes());
    assert_eq!(assert_same(&p), 2);
    // Header count wrong.
    let p = fresh("cnt.vdi");
    patch(&p, 0x184, &3u32.to_le_bytes());
    assert_eq!(assert_same(&p), 1);
    // An allocated block turned into a zero block: the count no longer matches.
    let p = fresh("zero.vdi");
    patch(&p, 0x200, &0xffff_fffeu32.to_le_bytes());
    assert_eq!(assert_same(&p), 1);
    let r = check(&p).unwrap();
    assert!(r.messages[0].contains("allocated blocks mismatch"), "{:?}", r.messages);
}

#[test]
fn data_past_eof_is_a_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "t.vdi", "5000001", false);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - (1 << 20)).unwrap();
    let r = check(&p).unwrap();
    assert_eq!(r.corruptions, 1, "{:?}", r.messages);
    assert!(r.messages[0].contains("past the end of the file"), "{:?}", r.messages);
}

#[test]
fn measure_matches_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 5_000_001];
    data[..4096].fill(1);
    data[(1 << 20) - 1..(1 << 20) + 1].fill(2); // touches blocks 0 and 1
    data[4 << 20..(4 << 20) + 10].fill(3);
    let extents = [
        Extent { offset: 0, len: 4096, alloc: Alloc::Data },
        Extent { offset: 4096, len: (1 << 20) - 4097, alloc: Alloc::Unallocated },
        Extent { offset: (1 << 20) - 1, len: 2, alloc: Alloc::Data },
        Extent { offset: (1 << 20) + 1, len: (3 << 20) - 1, alloc: Alloc::Zero },
        Extent { offset: 4 << 20, len: 5_000_001 - (4 << 20), alloc: Alloc::Data },
    ];
    for is_static in [false, true] {
        let o = opts(&[("static", if is_static { "on" } else { "off" })]);
        let m = VdiDriver.measure(data.len() as u64, &extents, &o).unwrap();
        let out = dir.path().join(format!("m{is_static}.vdi"));
        write_with_ours(&VecDisk(data.clone()), &out, &o);
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(m.required, len, "static={is_static}");
        assert_eq!(m.fully_allocated, 0x400 + 5 * (1 << 20));
    }
    let m = VdiDriver.measure(0, &[], &opts(&[])).unwrap();
    assert_eq!((m.required, m.fully_allocated), (0x200, 0x200));
}
