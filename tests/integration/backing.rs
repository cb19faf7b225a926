//! Backing chains made by qemu: info shows the chain, map shows depth, create -b.

use crate::support::*;
use serde_json::Value;
use std::path::Path;

/// base.raw <- mid.qcow2 <- top.qcow2 (relative names, as qemu stores them), 4 MiB,
/// with different writes at each level.
pub fn make_chain(dir: &Path) {
    qemu_img_in(Some(dir), &["create", "-q", "-f", "raw", "base.raw", "4M"]).expect_ok();
    qemu_io("raw", &dir.join("base.raw"), &["write -P 0xb0 0 1M", "write -P 0xb1 3M 64K"]);
    qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2"]).expect_ok();
    qemu_io("qcow2", &dir.join("mid.qcow2"), &["write -P 0x4d 512K 256K", "write -z 2M 64K"]);
    qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2"]).expect_ok();
    qemu_io("qcow2", &dir.join("top.qcow2"), &["write -P 0x70 640K 64K", "write -z 0 64K"]);
}

#[test]
fn info_json_shows_chain() {
    let d = tmp();
    make_chain(d.path());
    let top = d.path().join("top.qcow2");
    // As qemu-img: with --backing-chain, an array of images, top first.
    let all = dc_ok(&["info", "--backing-chain", "--output", "json", &s(&top)]).json();
    let all = all.as_array().unwrap_or_else(|| panic!("--backing-chain should print an array: {all}"));
    let (v, chain) = (&all[0], &all[1..]);
    let q = qemu_info(&top);
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual-size"], q["virtual-size"]);
    assert_eq!(v["backing-filename"], "mid.qcow2", "{v}");
    assert_eq!(v["backing-filename-format"], "qcow2", "{v}");
    assert_eq!(v["backing-filename"], q["backing-filename"]);
    assert_eq!(chain.len(), 2, "chain below top should be mid, base: {v}");
    let names: Vec<String> = chain.iter().map(|e| e["filename"].as_str().unwrap_or_default().to_string()).collect();
    assert!(names[0].ends_with("mid.qcow2") && names[1].ends_with("base.raw"), "{names:?}");
    assert_eq!(chain[0]["format"], "qcow2");
    assert_eq!(chain[0]["backing-filename"], "base.raw");
    assert_eq!(chain[0]["backing-filename-format"], "raw");
    assert_eq!(chain[1]["format"], "raw");
    assert!(chain[1].get("backing-filename").is_none());
    // qemu's own view of the chain agrees.
    let qc = qemu_img(&["info", "--backing-chain", "--output=json", &s(&top)]).json();
    let qc = qc.as_array().expect("qemu chain array");
    assert_eq!(qc.len(), 3);
    for (ours, theirs) in chain.iter().zip(&qc[1..]) {
        assert_eq!(ours["format"], theirs["format"]);
        assert_eq!(ours["virtual-size"], theirs["virtual-size"]);
    }
    // Human output mentions the chain, and --backing-chain prints all three.
    let h = dc_ok(&["info", &s(&top)]).stdout_str();
    assert!(h.contains("backing file: mid.qcow2"), "{h}");
    let h = dc_ok(&["info", "--backing-chain", &s(&top)]).stdout_str();
    assert_eq!(h.matches("image: ").count(), 3, "{h}");
}

/// At probe offsets, diskcast's map depth/flags match qemu-img map's.
#[test]
fn map_shows_depth_like_qemu() {
    let d = tmp();
    make_chain(d.path());
    let top = d.path().join("top.qcow2");
    let ours = map_entries(&dc_ok(&["map", "--output", "json", &s(&top)]).json());
    assert_map_covers(&ours, 4 * MIB);
    let theirs = map_entries(&qemu_img(&["map", "--output=json", &s(&top)]).json());
    // Expected depths by construction.
    let expect = [
        (0u64, 0u64, "top zero write"),
        (100 * KIB, 2, "base data under nothing"),
        (600 * KIB, 1, "mid data"),
        (660 * KIB, 0, "top data"),
        (2 * MIB + 4 * KIB, 1, "mid zero write"),
        (3 * MIB + 100, 2, "base data"),
    ];
    for (off, depth, what) in expect {
        let (dd, dp, dz, ddata) = map_at(&ours, off);
        assert_eq!(dd, depth, "depth at {off} ({what}); our map: {ours:?}");
        let (qd, qp, qz, qdata) = map_at(&theirs, off);
        assert_eq!(
            (dd, dp, dz, ddata),
            (qd, qp, qz, qdata),
            "map at {off} ({what}) differs from qemu's\nours: {ours:?}\nqemu: {theirs:?}"
        );
    }
    // Human map has a header and the depth column.
    let h = dc_ok(&["map", &s(&top)]).stdout_str();
    assert!(h.lines().next().is_some_and(|l| l.contains("Depth")), "{h}");
}

#[test]
fn map_of_plain_qcow2_matches_qemu() {
    let d = tmp();
    let p = d.path().join("m.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "8M"]);
    qemu_io("qcow2", &p, &["write -P 1 64K 128K", "write -z 1M 64K", "write -P 2 7M 64K"]);
    let ours = map_entries(&dc_ok(&["map", "--output", "json", &s(&p)]).json());
    assert_map_covers(&ours, 8 * MIB);
    let theirs = map_entries(&qemu_img(&["map", "--output=json", &s(&p)]).json());
    for off in [0, 64 * KIB, 150 * KIB, 200 * KIB, MIB, MIB + 70 * KIB, 5 * MIB, 7 * MIB + 1] {
        let a = map_at(&ours, off);
        let b = map_at(&theirs, off);
        assert_eq!(a, b, "map at {off} differs\nours: {ours:?}\nqemu: {theirs:?}");
    }
}

#[test]
fn map_of_raw_covers_image() {
    let d = tmp();
    let p = d.path().join("m.raw");
    write_index_pattern(&p, 2 * MIB + 4096 * 3, 0);
    let v: Value = dc_ok(&["map", "-f", "raw", "--output", "json", &s(&p)]).json();
    let e = map_entries(&v);
    assert_map_covers(&e, 2 * MIB + 4096 * 3);
    assert!(e.iter().all(|x| x.2 == 0 && x.3), "raw map: {e:?}");
    assert!(map_at(&e, 5000).3, "data block not reported as data: {e:?}");
}

/// diskcast create -b with and without a size, judged by qemu.
#[test]
fn create_with_backing() {
    let d = tmp();
    make_chain(d.path());
    // Without size: takes the backing file's size.
    dc_in(Some(d.path()), &["create", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "over.qcow2"]).expect_ok();
    let over = d.path().join("over.qcow2");
    qemu_check_clean(&over);
    let info = qemu_info(&over);
    assert_eq!(info["virtual-size"].as_u64(), Some(4 * MIB), "{info}");
    assert_eq!(info["backing-filename"], "top.qcow2", "{info}");
    assert_eq!(info["backing-filename-format"], "qcow2", "{info}");
    qemu_compare(&over, "qcow2", &d.path().join("top.qcow2"), "qcow2");
    // With a size larger than the backing file.
    dc_in(Some(d.path()), &["create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "big.qcow2", "8M"]).expect_ok();
    let big = d.path().join("big.qcow2");
    qemu_check_clean(&big);
    let info = qemu_info(&big);
    assert_eq!(info["virtual-size"].as_u64(), Some(8 * MIB), "{info}");
    assert_eq!(info["backing-filename"], "base.raw");
    assert_eq!(info["backing-filename-format"], "raw");
    // qemu can write through it and read the backing data.
    qemu_io("qcow2", &big, &["read -P 0xb0 0 1M", "write -P 0xee 6M 64K", "read -P 0xee 6M 64K"]);
    qemu_check_clean(&big);
    // -F left out: probed and recorded.
    dc_in(Some(d.path()), &["create", "-f", "qcow2", "-b", "mid.qcow2", "probed.qcow2"]).expect_ok();
    let info = qemu_info(&d.path().join("probed.qcow2"));
    assert_eq!(info["backing-filename-format"], "qcow2", "{info}");
    // A missing backing file is an error and creates nothing.
    let missing = d.path().join("missing.qcow2");
    dc_in(Some(d.path()), &["create", "-f", "qcow2", "-b", "nope.raw", "-F", "raw", "missing.qcow2"])
        .expect_code(1)
        .expect_stderr_any(&["nope.raw"]);
    assert_no_output(&missing);
}
