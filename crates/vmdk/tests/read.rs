//! Images made by qemu-img/qemu-io, read by our reader and compared with qemu's reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_block::{Alloc, BlockRead};
use diskcast_raw::RawDriver;
use std::path::{Path, PathBuf};

/// Converts `src` to vmdk with qemu-img and the given subformat.
fn qemu_convert(src: &Path, dir: &Path, name: &str, subformat: &str) -> PathBuf {
    let p = dir.join(name);
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        &format!("subformat={subformat}"),
        src.to_str().unwrap(),
        p.to_str().unwrap(),
    ]);
    p
}

/// Copies `img` to a raw file with our reader and the copy engine, then has qemu-img
/// compare that raw file with the vmdk (both sides sparse-aware, so big disks are fast).
fn assert_copy_compares(img: &dyn BlockRead, vmdk: &Path, dir: &Path) {
    let raw = dir.join(format!("{}.ours.raw", vmdk.file_name().unwrap().to_str().unwrap()));
    let out = OutputFiles::new();
    let w = RawDriver.create(&raw, img.size(), &CreateOptions::default(), &out).unwrap();
    copy(img, w.as_ref(), &CopyOptions::new(2), &NoProgress).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
    assert_qemu_compare(&raw, vmdk);
}

#[test]
fn every_qemu_subformat_reads_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let src = pattern_raw(dir.path());
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let p = qemu_convert(&src, dir.path(), &format!("{sub}.vmdk"), sub);
        assert_matches_qemu(&p, dir.path());
        let img = open(&p).unwrap();
        assert_eq!(img.size(), SIZE);
        let info = img.info();
        assert_eq!(info.format, "vmdk");
        assert_eq!(info.specific["create-type"], sub, "{sub}");
        assert_eq!(info.specific["compressed"], sub == "streamOptimized");
        let src_bytes = std::fs::read(&src).unwrap();
        assert!(read_all(img.as_ref()) == src_bytes, "{sub}: differs from the source");
    }
}

#[test]
fn qemu_io_written_sparse_with_and_without_zeroed_grains() {
    let dir = tempfile::tempdir().unwrap();
    for zg in ["off", "on"] {
        let p = dir.path().join(format!("zg-{zg}.vmdk"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("zeroed_grain={zg}"),
            p.to_str().unwrap(),
            &SIZE.to_string(),
        ]);
        qemu_io(&p, "vmdk", PATTERN);
        qemu_io(&p, "vmdk", &["write -z 0 1M"]);
        assert_matches_qemu(&p, dir.path());
        let img = open(&p).unwrap();
        let e = img.extent_at(0, 1 << 20).unwrap();
        if zg == "on" {
            assert_eq!((e.alloc, e.len), (Alloc::Zero, 1 << 20), "zeroed grains must map as Zero");
        }
        assert_eq!(img.info().specific["extents"][0]["zeroed-grain"], zg == "on");
    }
}

#[test]
fn split_five_gib_disks_across_extent_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let p = dir.path().join(format!("{sub}.vmdk"));
        qemu_img(&["create", "-q", "-f", "vmdk", "-o", &format!("subformat={sub}"), p.to_str().unwrap(), "5G"]);
        // Data across the first extent boundary (2 GiB), in the last extent, at the end.
        qemu_io(
            &p,
            "vmdk",
            &["write -P 0x71 2147418112 131072", "write -P 0x72 4294967295 1000", "write -P 0x73 5368643584 65536"],
        );
        let img = open(&p).unwrap();
        assert_eq!(img.size(), 5 << 30);
        let extents = img.info().specific["extents"].as_array().unwrap().len();
        assert_eq!(extents, 3, "{sub}");
        let mut b = vec![0u8; 131072 + 10];
        img.read_at(&mut b, 2147418112 - 5).unwrap();
        assert!(
            b[..5].iter().all(|&x| x == 0)
                && b[5..131077].iter().all(|&x| x == 0x71)
                && b[131077..].iter().all(|&x| x == 0)
        );
        assert_copy_compares(img.as_ref(), &p, dir.path());
        // qemu-img check accepts it, and so does ours.
        assert_qemu_check_clean(&p);
        let r = diskcast_vmdk::VmdkDriver
            .check(
                diskcast_block::source::open_file(&p).unwrap(),
                &diskcast_block::registry::OpenContext::new(&registry(), &diskcast_block::gate::Gate::new()),
            )
            .unwrap();
        assert_eq!(r.corruptions, 0, "{:?}", r.messages);
    }
}

/// Writes an ESXi-style descriptor by hand.
fn write_descriptor(path: &Path, create_type: &str, extents: &[String]) {
    let mut s = format!(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n# Extent description\n"
    );
    for e in extents {
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"5\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.thinProvisioned = \"1\"\nddb.virtualHWVersion = \"13\"\n");
    std::fs::write(path, s).unwrap();
}

#[test]
fn esxi_vmfs_descriptors_and_zero_extents() {
    let dir = tempfile::tempdir().unwrap();
    let src = pattern_raw(dir.path());
    let flat = dir.path().join("esx-flat.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "raw", src.to_str().unwrap(), flat.to_str().unwrap()]);
    let sectors = SIZE / 512;
    for ct in ["vmfs", "vmfsThin"] {
        let d = dir.path().join(format!("{ct}.vmdk"));
        write_descriptor(&d, ct, &[format!("RW {sectors} VMFS \"esx-flat.vmdk\"")]);
        if ct == "vmfs" {
            assert_matches_qemu(&d, dir.path());
        }
        // qemu refuses createType vmfsThin; the content is the flat file's.
        let img = open(&d).unwrap();
        assert!(read_all(img.as_ref()) == std::fs::read(&src).unwrap(), "{ct}");
        let info = img.info();
        assert_eq!(info.specific["create-type"], ct);
        assert_eq!(info.specific["adapter-type"], "lsilogic");
        assert_eq!(info.specific["hwversion"], "13");
        assert_eq!(info.specific["geometry"]["heads"], 255);
        assert_eq!(info.specific["extents"][0]["format"], "VMFS");
        assert!(info.specific["extents"][0]["filename"].as_str().unwrap().ends_with("/esx-flat.vmdk"));
    }
    // FLAT pieces at offsets with a ZERO extent between them.
    let d = dir.path().join("zero.vmdk");
    write_descriptor(
        &d,
        "monolithicFlat",
        &[
            "RW 4096 FLAT \"esx-flat.vmdk\" 0".into(),
            "RW 8192 ZERO".into(),
            "RW 6000 FLAT \"esx-flat.vmdk\" 5000".into(),
        ],
    );
    // qemu mis-parses ZERO extent lines (it reuses the previous line's file), so the
    // reference here is the source itself.
    let img = open(&d).unwrap();
    assert_eq!(img.size(), (4096 + 8192 + 6000) * 512);
    let s = std::fs::read(&src).unwrap();
    let mut want = s[..4096 * 512].to_vec();
    want.extend(std::iter::repeat_n(0u8, 8192 * 512));
    want.extend_from_slice(&s[5000 * 512..11000 * 512]);
    assert!(read_all(img.as_ref()) == want);
    let e = img.extent_at(4096 * 512, 1 << 30).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Zero, 8192 * 512));
}

#[test]
fn probe_claims_vmdk_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = pattern_raw(dir.path());
    let reg = registry();
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
        let p = qemu_convert(&src, dir.path(), &format!("p-{sub}.vmdk"), sub);
        assert_eq!(reg.probe(&p).unwrap().name(), "vmdk", "{sub}");
    }
    assert_eq!(reg.probe(&src).unwrap().name(), "raw");
    let q = dir.path().join("x.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "1M"]);
    assert!(reg.probe(&q).map(|d| d.name() != "vmdk").unwrap_or(true));
    // Text that mentions createType but is no descriptor, and a raw disk whose guest
    // wrote descriptor-like text after binary data.
    let t = dir.path().join("notes.txt");
    std::fs::write(&t, "createType=\"monolithicFlat\" is a thing\nno extents here\n").unwrap();
    assert!(reg.probe(&t).map(|d| d.name() != "vmdk").unwrap_or(true));
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk[4096..4096 + 40].copy_from_slice(b"createType=\"x\"\nRW 1 FLAT \"a\" 0\n\0\0\0\0\0\0\0\0\0");
    disk[1000] = 7;
    let r = dir.path().join("disk");
    std::fs::write(&r, &disk).unwrap();
    assert_eq!(reg.probe(&r).unwrap().name(), "raw");
}
