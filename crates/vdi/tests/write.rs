//! Images written by our writer, verified by qemu-img compare/check/info and our reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_block::{Encoded, ErrorKind};
use diskcast_vdi::VdiDriver;
use std::path::{Path, PathBuf};

/// Checks a VDI we wrote against the raw bytes it must hold: qemu-img check is clean,
/// qemu-img compare says identical, qemu-img info agrees, and our reader and check agree.
fn verify(out: &Path, raw: &Path, want: &[u8], is_static: bool) {
    assert_qemu_check_clean(out);
    assert_qemu_compare(raw, out);
    let q = qemu_info(out);
    assert_eq!(q["format"], "vdi");
    assert_eq!(q["virtual-size"].as_u64().unwrap(), (want.len() as u64).next_multiple_of(512));
    assert_eq!(q["cluster-size"].as_u64().unwrap(), 1 << 20);
    let img = open(out).unwrap();
    let ours = read_all(img.as_ref());
    assert!(ours[..want.len()] == *want && ours[want.len()..].iter().all(|&b| b == 0), "our reader disagrees");
    assert_eq!(img.info().specific["image-type"], if is_static { "static" } else { "dynamic" });
    let r = check(out).unwrap();
    assert_eq!((r.corruptions, r.leaks, r.check_errors), (0, 0, 0), "{:?}", r.messages);
}

fn sparse_data(len: usize, seed: u64) -> Vec<u8> {
    let mut d = pattern(len, seed);
    // Zero runs of various sizes: whole blocks, parts of blocks, odd lengths.
    for (i, chunk) in d.chunks_mut(700_001).enumerate() {
        if i % 2 == 1 {
            let n = 650_000.min(chunk.len());
            chunk[..n].fill(0);
        }
    }
    d[3 << 20..5 << 20].fill(0); // two whole blocks never allocated
    d
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("diskcast-vdi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn dynamic_and_static_from_memory() {
    for (name, is_static) in [("dyn", false), ("static", true)] {
        let dir = tmpdir(name);
        let data = sparse_data(9_000_001, 7);
        let raw = dir.join("src.raw");
        std::fs::write(&raw, &data).unwrap();
        let out = dir.join("out.vdi");
        let o = if is_static { opts(&[("static", "on")]) } else { opts(&[]) };
        write_with_ours(&VecDisk(data.clone()), &out, &o);
        verify(&out, &raw, &data, is_static);
        let img = open(&out).unwrap();
        let blocks_with_data = data.chunks(1 << 20).filter(|c| c.iter().any(|&b| b != 0)).count() as u64;
        let allocated = img.info().specific["blocks-allocated"].as_u64().unwrap();
        if is_static {
            assert_eq!(allocated, 9);
            assert_eq!(std::fs::metadata(&out).unwrap().len(), 0x400 + 9 * (1 << 20));
        } else {
            assert_eq!(allocated, blocks_with_data);
            assert_eq!(img.extent_at(3 << 20, 1 << 30).unwrap().len, 2 << 20);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Sources made by qemu: a raw file with holes (read through the raw driver, which
/// finds them), and a qcow2 with zero clusters (converted to raw by qemu-img, since this
/// crate does not depend on the qcow2 driver), each written static and dynamic.
#[test]
fn from_qemu_made_raw_and_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", raw.to_str().unwrap(), "7340545"]);
    qemu_io("raw", &raw, PATTERN);
    let q = dir.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "5000001"]);
    qemu_io("qcow2", &q, &["write -P 0x5a 0 3M", "write -z 64k 1M", "write -P 0x61 4100k 5k"]);
    let qraw = dir.path().join("q.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", q.to_str().unwrap(), qraw.to_str().unwrap()]);
    for (src, label) in [(&raw, "raw"), (&qraw, "qcow2")] {
        let img = open_as(src, Some("raw")).unwrap();
        let want = std::fs::read(src).unwrap();
        for is_static in [false, true] {
            let out = dir.path().join(format!("{label}-{is_static}.vdi"));
            let o = opts(&[("static", if is_static { "on" } else { "off" })]);
            write_with_ours(img.as_ref(), &out, &o);
            verify(&out, src, &want, is_static);
        }
    }
    // And the qcow2 itself, compared by qemu against our dynamic output.
    let out = dir.path().join("qcow2-false.vdi");
    qemu_img(&["compare", "-q", "-f", "qcow2", "-F", "vdi", q.to_str().unwrap(), out.to_str().unwrap()]);
}

/// Our header matches qemu's field for field (but the text, UUIDs and allocation count),
/// and a static image's block map and file length match exactly.
#[test]
fn header_fields_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for is_static in [false, true] {
        let theirs = dir.path().join(format!("q{is_static}.vdi"));
        create(&theirs, "5000001", is_static);
        let ours = dir.path().join(format!("o{is_static}.vdi"));
        let o = opts(&[("static", if is_static { "on" } else { "off" })]);
        write_with_ours(&VecDisk(vec![0u8; 5_000_001]), &ours, &o);
        let (a, b) = (std::fs::read(&theirs).unwrap(), std::fs::read(&ours).unwrap());
        assert_eq!(a[0x40..0x184], b[0x40..0x184], "static={is_static}");
        assert_eq!(a[0x1a8..0x400], b[0x1a8..0x400], "static={is_static}: link/parent UUIDs or block map");
        assert_eq!(le32(&a, 0x184), le32(&b, 0x184));
        assert_eq!(a.len(), b.len());
        assert!(b.starts_with(b"<<< Oracle VM VirtualBox Disk Image >>>\n\0"));
        let (u1, u2) = (&b[0x188..0x198], &b[0x198..0x1a8]);
        assert!(u1 != [0u8; 16] && u2 != [0u8; 16] && u1 != u2, "fresh UUIDs");
        let u = uuid::Uuid::from_bytes_le(u1.try_into().unwrap());
        assert_eq!(u.get_version_num(), 4);
    }
}

#[test]
fn dynamic_output_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    // One 4 KiB piece of data in each of 16 blocks.
    let mut data = vec![0u8; 16 << 20];
    for b in 0..16 {
        data[b << 20..(b << 20) + 4096].fill(b as u8 + 1);
    }
    let out = dir.path().join("sp.vdi");
    write_with_ours(&VecDisk(data.clone()), &out, &opts(&[]));
    let raw = dir.path().join("sp.raw");
    std::fs::write(&raw, &data).unwrap();
    verify(&out, &raw, &data, false);
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&out).unwrap();
    assert_eq!(m.len(), 0x200 + 512 + (16 << 20));
    assert!(m.blocks() * 512 < 2 << 20, "{} bytes allocated: zeros were written", m.blocks() * 512);
}

#[test]
fn empty_disk_and_vdi_to_vdi() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("empty.vdi");
    write_with_ours(&VecDisk(Vec::new()), &out, &opts(&[]));
    assert_qemu_check_clean(&out);
    assert_eq!(qemu_info(&out)["virtual-size"], 0);
    assert_eq!(open(&out).unwrap().size(), 0);
    // qemu-made VDI -> ours, both subformats.
    for is_static in [false, true] {
        let src = patterned(dir.path(), &format!("src{is_static}.vdi"), "5000001", is_static);
        let img = open(&src).unwrap();
        let out = dir.path().join(format!("copy{is_static}.vdi"));
        write_with_ours(img.as_ref(), &out, &opts(&[]));
        assert_qemu_check_clean(&out);
        qemu_img(&["compare", "-q", "-f", "vdi", "-F", "vdi", src.to_str().unwrap(), out.to_str().unwrap()]);
    }
}

#[test]
fn direct_writes_and_zeroes() {
    let dir = tempfile::tempdir().unwrap();
    for is_static in [false, true] {
        let p = dir.path().join(format!("z{is_static}.vdi"));
        let out = OutputFiles::new();
        let o = opts(&[("static", if is_static { "on" } else { "off" })]);
        let w = VdiDriver.create(&p, 3 << 20, &o, &out).unwrap();
        assert!(w.zero_initialized());
        // Spans a block boundary, then zeroes across it, then zeroes a hole.
        w.write_encoded(Encoded::Plain { offset: (1 << 20) - 8192, data: vec![7u8; 16384] }).unwrap();
        w.write_zeroes((1 << 20) - 4096, 8192).unwrap();
        w.write_zeroes(2 << 20, 1 << 20).unwrap();
        w.finish().unwrap();
        out.commit().unwrap();
        assert_qemu_check_clean(&p);
        let mut want = vec![0u8; 3 << 20];
        want[(1 << 20) - 8192..(1 << 20) - 4096].fill(7);
        want[(1 << 20) + 4096..(1 << 20) + 8192].fill(7);
        assert_eq!(qemu_raw(&p, "vdi", dir.path()), want, "static={is_static}");
        assert_eq!(read_all(open(&p).unwrap().as_ref()), want);
        let blocks = open(&p).unwrap().info().specific["blocks-allocated"].as_u64().unwrap();
        assert_eq!(blocks, if is_static { 3 } else { 2 });
    }
}

#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.vdi");
    let out = OutputFiles::new();
    for (k, v) in [("static", "maybe"), ("cluster_size", "64k"), ("nonsense", "1")] {
        let e = VdiDriver.create(&p, 1 << 20, &opts(&[(k, v)]), &out).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{k}={v}: {e}");
    }
    let e = VdiDriver.create(&p, 1 << 20, &CreateOptions { compress: true, ..opts(&[]) }, &out).unwrap_err();
    assert!(e.to_string().contains("compressed"), "{e}");
    let e = VdiDriver
        .create(&p, 1 << 20, &CreateOptions { backing_file: Some("b".into()), ..opts(&[]) }, &out)
        .unwrap_err();
    assert!(e.to_string().contains("backing"), "{e}");
    let e = VdiDriver.create(&p, 1 << 60, &opts(&[]), &out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(VdiDriver.create(&p, 1 << 20, &opts(&[("static", "on")]), &out).is_ok());
}

/// Writing into an existing qemu-made VDI: cut short before the block map is written, the
/// image reads as before and qemu-img check finds it clean; finished, it reads as written.
#[test]
fn interrupted_edit_leaks_at_worst() {
    let d = tempfile::tempdir().unwrap();
    diskcast_testkit::assert_interrupted_edit_leaks_at_worst(&diskcast_vdi::VdiDriver, d.path(), "vdi", "", true);
}
