//! `check` and `measure` against qemu-img's answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::gate::Gate;
use diskcast_block::io::ImageFile;
use diskcast_block::registry::{CheckReport, Driver, OpenContext};
use diskcast_block::{Alloc, Extent};
use diskcast_qcow2::Qcow2Driver;
use std::path::Path;

fn ours(p: &Path) -> CheckReport {
    let reg = registry();
    let gate = Gate::new();
    Qcow2Driver.check(diskcast_block::source::open_file(p).unwrap(), &OpenContext::new(&reg, &gate)).unwrap()
}

fn theirs(p: &Path) -> serde_json::Value {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "--output=json", p.to_str().unwrap()])
        .output()
        .expect("qemu-img is required");
    serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn assert_same(p: &Path) {
    let (o, t) = (ours(p), theirs(p));
    let n = |k: &str| t.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    assert_eq!(o.corruptions, n("corruptions"), "corruptions: {:?} vs {t}", o.messages);
    assert_eq!(o.leaks, n("leaks"), "leaks: {:?} vs {t}", o.messages);
    assert_eq!(o.allocated_clusters, Some(n("allocated-clusters")), "{t}");
    assert_eq!(o.total_clusters, Some(n("total-clusters")), "{t}");
    assert_eq!(o.compressed_clusters, Some(n("compressed-clusters")), "{t}");
    assert_eq!(o.fragmented_clusters, Some(n("fragmented-clusters")), "{t}");
    if o.corruptions == 0 {
        assert_eq!(o.image_end_offset, Some(n("image-end-offset")), "{t}");
    }
}

#[test]
fn clean_images_agree_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.qcow2");
    create(&p, "10M", "cluster_size=4k");
    qemu_io(&p, &["write -P 1 0 1M", "write -z 2M 1M", "write -P 2 5M 100k"]);
    assert_same(&p);
    let c = dir.path().join("c.qcow2");
    qemu_img(&["convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k", p.to_str().unwrap(), c.to_str().unwrap()]);
    assert_same(&c);
    // Internal snapshots: shared clusters have refcount 2.
    qemu_img(&["snapshot", "-c", "snap1", p.to_str().unwrap()]);
    qemu_io(&p, &["write -P 3 0 64k"]);
    assert_same(&p);
    let r = dir.path().join("r1.qcow2");
    create(&r, "10M", "refcount_bits=1");
    qemu_io(&r, &["write -P 1 0 1M"]);
    assert_same(&r);
}

/// Persistent bitmaps (made by qemu-img bitmap, filled by qemu-io's writes): their
/// directory, tables and data clusters are references, so a healthy image has no leaks.
#[test]
fn persistent_bitmaps_are_not_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bm.qcow2");
    create(&p, "64M", "");
    qemu_io(&p, &["write -P 1 0 3M"]);
    qemu_img(&["bitmap", "--add", p.to_str().unwrap(), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "512", p.to_str().unwrap(), "b1"]);
    qemu_io(&p, &["write -P 2 8M 1M", "write -P 3 40M 64k"]);
    let r = ours(&p);
    assert_eq!((r.leaks, r.corruptions, r.check_errors), (0, 0, 0), "{:?}", r.messages);
    assert_same(&p);
    // A stale extension (autoclear bit 0 clear, as an older writer leaves it) is ignored
    // by qemu, which then counts the bitmaps' clusters as leaks; so do we.
    let autoclear = be64(&std::fs::read(&p).unwrap(), 88) & !1;
    patch(&p, 88, &autoclear.to_be_bytes());
    assert!(ours(&p).leaks > 0);
    assert_same(&p);
}

#[test]
fn leaks_and_corruptions_agree_with_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.qcow2");
    create(&p, "4M", "");
    qemu_io(&p, &["write -P 1 0 256k"]);
    // Drop the L2 reference to the second data cluster: one leak.
    let b = std::fs::read(&p).unwrap();
    let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
    patch(&p, l2 + 8, &0u64.to_be_bytes());
    assert_same(&p);
    assert_eq!(ours(&p).leaks, 1);
    // Zero the refcount of a used data cluster: corruption.
    let q = dir.path().join("c.qcow2");
    create(&q, "4M", "");
    qemu_io(&q, &["write -P 1 0 256k"]);
    let b = std::fs::read(&q).unwrap();
    let l2 = be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00;
    let data = be64(&b, l2 as usize) & 0x00ff_ffff_ffff_fe00;
    let rb = be64(&b, be64(&b, 48) as usize);
    patch(&q, rb + 2 * (data >> 16), &0u16.to_be_bytes());
    let r = ours(&q);
    // qemu counts two: the refcount, and OFLAG_COPIED set on a cluster whose refcount is not 1.
    assert_eq!(r.corruptions, 2, "{:?}", r.messages);
    assert!(r.messages.iter().any(|m| m.contains("refcount=0 reference=1")), "{:?}", r.messages);
    assert_eq!(theirs(&q)["corruptions"], 2);
    // An L2 entry past EOF is a corruption, not a failure.
    patch(&q, l2, &((1u64 << 63) | (1 << 40)).to_be_bytes());
    assert!(ours(&q).corruptions >= 1);
}

fn measure_qemu(args: &[&str]) -> (u64, u64) {
    let mut a = vec!["measure", "--output=json", "-O", "qcow2"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&qemu_img(&a)).unwrap();
    (v["required"].as_u64().unwrap(), v["fully-allocated"].as_u64().unwrap())
}

#[test]
fn measure_matches_qemu_for_sizes() {
    for (size, o) in [
        ("1G", vec![]),
        ("0", vec![]),
        ("1T", vec![]),
        ("5000001", vec![("cluster_size", "512")]),
        ("100G", vec![("cluster_size", "2M")]),
        ("7G", vec![("refcount_bits", "1")]),
        ("7G", vec![("refcount_bits", "64"), ("cluster_size", "4k")]),
        ("3G", vec![("compat", "0.10")]),
        ("3G", vec![("extended_l2", "on"), ("cluster_size", "128k")]),
    ] {
        let ostr: Vec<String> = o.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["--size", size];
        let joined = ostr.join(",");
        if !o.is_empty() {
            args.extend_from_slice(&["-o", &joined]);
        }
        let want = measure_qemu(&args);
        let bytes = diskcast_block::size::parse_size(size).unwrap();
        let m = Qcow2Driver.measure(bytes, &[], &opts(&o)).unwrap();
        assert_eq!((m.required, m.fully_allocated), want, "{size} {joined}");
    }
}

#[test]
fn measure_matches_qemu_for_images() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse raw file: extents from SEEK_DATA/SEEK_HOLE, as qemu sees it.
    let raw = dir.path().join("s.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(100 << 20).unwrap();
        for off in [0u64, 5 << 20, (5 << 20) + 70000, 50 << 20, (100 << 20) - 4096] {
            f.write_all_at(&[7u8; 4096], off).unwrap();
        }
    }
    let f = ImageFile::open(&raw).unwrap();
    let len = f.len().unwrap();
    let mut exts = Vec::new();
    let mut pos = 0;
    while let Some(d) = f.next_data(pos).unwrap() {
        if d >= len {
            break;
        }
        let h = f.next_hole(d).unwrap();
        exts.push(Extent { offset: d, len: h - d, alloc: Alloc::Data });
        pos = h;
    }
    for o in [vec![], vec![("cluster_size", "4k")], vec![("cluster_size", "2M")]] {
        let ostr: Vec<String> = o.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let joined = ostr.join(",");
        let mut args = vec!["-f", "raw"];
        if !o.is_empty() {
            args.extend_from_slice(&["-o", &joined]);
        }
        args.push(raw.to_str().unwrap());
        let want = measure_qemu(&args);
        let m = Qcow2Driver.measure(len, &exts, &opts(&o)).unwrap();
        assert_eq!((m.required, m.fully_allocated), want, "raw {joined}");
    }
    // A qcow2 source, mapped by our reader (zero clusters are not data).
    let q = dir.path().join("q.qcow2");
    create(&q, "64M", "cluster_size=4k");
    qemu_io(&q, &["write -P 1 0 1M", "write -z 2M 1M", "write -P 2 10000k 100k"]);
    let img = open(&q).unwrap();
    let exts: Vec<Extent> = diskcast_block::copy::extents(img.as_ref(), true).collect::<Result<_, _>>().unwrap();
    let want = measure_qemu(&["-f", "qcow2", q.to_str().unwrap()]);
    let m = Qcow2Driver.measure(img.size(), &exts, &opts(&[])).unwrap();
    assert_eq!((m.required, m.fully_allocated), want);
}
