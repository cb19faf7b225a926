//! Images written by our writers, verified by qemu-img compare/check/info and our reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_block::{Encoded, ErrorKind};
use diskcast_vmdk::VmdkDriver;
use std::path::Path;

/// Writes the pattern with `opts`, then has qemu compare, check and describe it.
fn roundtrip(dir: &Path, name: &str, opts: &CreateOptions, create_type: &str) -> std::path::PathBuf {
    let raw = dir.join("src.raw");
    if !raw.exists() {
        pattern_raw(dir);
    }
    let src = open_raw(&raw);
    let out = dir.join(name);
    write_with_ours(src.as_ref(), &out, opts);
    assert_qemu_compare(&raw, &out);
    assert_qemu_check_clean(&out);
    let info = qemu_info(&out);
    assert_eq!(info["virtual-size"], SIZE, "{name}");
    assert_eq!(info["format-specific"]["data"]["create-type"], create_type, "{name}");
    // Our reader agrees, and our check is clean.
    let ours = read_all(open(&out).unwrap().as_ref());
    assert!(ours == std::fs::read(&raw).unwrap(), "{name}: our reader disagrees");
    let reg = registry();
    let gate = diskcast_block::gate::Gate::new();
    let r = VmdkDriver
        .check(
            diskcast_block::source::open_file(&out).unwrap(),
            &diskcast_block::registry::OpenContext::new(&reg, &gate),
        )
        .unwrap();
    assert_eq!(r.corruptions, 0, "{name}: {:?}", r.messages);
    out
}

fn descriptor_text(path: &Path) -> String {
    let b = std::fs::read(path).unwrap();
    let b = if b.starts_with(b"KDMV") { b[512..512 * 21].to_vec() } else { b };
    String::from_utf8_lossy(&b).trim_end_matches('\0').to_string()
}

#[test]
fn monolithic_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let p = roundtrip(dir.path(), "s.vmdk", &opts(&[]), "monolithicSparse");
    let d = descriptor_text(&p);
    assert!(d.contains("createType=\"monolithicSparse\"") && d.contains("RW 81927 SPARSE \"s.vmdk\""), "{d}");
    assert!(d.contains("ddb.geometry.cylinders = \"81\"") && d.contains("ddb.adapterType = \"ide\""), "{d}");
    // Sparse: far smaller than the disk.
    assert!(std::fs::metadata(&p).unwrap().len() < SIZE / 2);
    // Same map as the source: holes stay holes.
    let img = open(&p).unwrap();
    let e = img.extent_at(30 << 20, 1 << 20).unwrap();
    assert!(e.alloc.reads_zero(), "{e:?}");
    let p = roundtrip(
        dir.path(),
        "s2.vmdk",
        &opts(&[("adapter_type", "lsilogic"), ("hwversion", "6"), ("zeroed_grain", "on")]),
        "monolithicSparse",
    );
    let d = descriptor_text(&p);
    assert!(d.contains("ddb.virtualHWVersion = \"6\"") && d.contains("ddb.geometry.heads = \"255\""), "{d}");
    assert!(d.contains("ddb.geometry.cylinders = \"5\"") && d.contains("ddb.adapterType = \"lsilogic\""), "{d}");
}

#[test]
fn stream_optimized() {
    let dir = tempfile::tempdir().unwrap();
    let p = roundtrip(dir.path(), "so.vmdk", &opts(&[("subformat", "streamOptimized")]), "streamOptimized");
    let b = std::fs::read(&p).unwrap();
    assert_eq!(le64(&b, 56), u64::MAX, "header must say GD_AT_END");
    assert_eq!(b.len() % 512, 0);
    // Footer marker, footer, end-of-stream marker.
    let f = b.len() - 1536;
    assert_eq!((le32(&b, f + 12), &b[f + 512..f + 516]), (3, &b"KDMV"[..]));
    assert!(b[b.len() - 512..].iter().all(|&x| x == 0));
    let map = qemu_img(&["map", "--output=json", p.to_str().unwrap()]);
    assert!(map.contains("\"compressed\": true"), "{map}");
    let info = qemu_info(&p);
    assert_eq!(info["format-specific"]["data"]["extents"][0]["compressed"], true);
    // -c is fine with streamOptimized, and zeroed grains are accepted.
    let o = CreateOptions { compress: true, ..opts(&[("subformat", "streamOptimized"), ("zeroed_grain", "on")]) };
    roundtrip(dir.path(), "so2.vmdk", &o, "streamOptimized");
}

#[test]
fn monolithic_flat() {
    let dir = tempfile::tempdir().unwrap();
    let p = roundtrip(dir.path(), "f.vmdk", &opts(&[("subformat", "monolithicFlat")]), "monolithicFlat");
    let flat = dir.path().join("f-flat.vmdk");
    assert_eq!(std::fs::metadata(&flat).unwrap().len(), SIZE);
    // Holes are not written.
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&flat).unwrap().blocks() * 512 < SIZE / 2);
    let d = descriptor_text(&p);
    assert!(d.contains("RW 81927 FLAT \"f-flat.vmdk\" 0"), "{d}");
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| !n.to_string_lossy().contains(".tmp")), "{names:?}");
}

/// A `Write` that appends into a shared buffer.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn stream_to_vec_and_to_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern_raw(dir.path());
    let src = open_raw(&raw);
    let copy_opts = CopyOptions { chunk_size: 192 << 10, ..CopyOptions::new(3) };
    // Into memory.
    let buf = Shared::default();
    let w = diskcast_vmdk::stream_optimized_to(Box::new(buf.clone()), src.size(), &opts(&[])).unwrap();
    copy(src.as_ref(), w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap();
    let p = dir.path().join("vec.vmdk");
    std::fs::write(&p, &*buf.0.lock().unwrap()).unwrap();
    assert_qemu_compare(&raw, &p);
    assert_qemu_check_clean(&p);
    // Through an OS pipe, read on another thread.
    let (mut r, pw) = std::io::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut v).unwrap();
        v
    });
    let w =
        diskcast_vmdk::stream_optimized_to(Box::new(pw), src.size(), &opts(&[("adapter_type", "buslogic")])).unwrap();
    copy(src.as_ref(), w.as_ref(), &copy_opts, &NoProgress).unwrap();
    w.finish().unwrap(); // drops the pipe's write end
    let bytes = reader.join().unwrap();
    let p2 = dir.path().join("pipe.vmdk");
    std::fs::write(&p2, &bytes).unwrap();
    assert_qemu_compare(&raw, &p2);
    assert_qemu_check_clean(&p2);
    assert_eq!(qemu_info(&p2)["format-specific"]["data"]["create-type"], "streamOptimized");
    assert!(read_all(open(&p2).unwrap().as_ref()) == std::fs::read(&raw).unwrap());
    // Only streamOptimized goes to a pipe.
    let e = diskcast_vmdk::stream_optimized_to(
        Box::new(Shared::default()),
        1 << 20,
        &opts(&[("subformat", "monolithicFlat")]),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn empty_and_large_sparse() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
        let p = dir.path().join(format!("empty-{sub}.vmdk"));
        let out = OutputFiles::new();
        let w = VmdkDriver.create(&p, 0, &opts(&[("subformat", sub)]), &out).unwrap();
        w.finish().unwrap();
        out.commit().unwrap();
        // qemu cannot open empty VMDKs, not even those it makes itself: ours only.
        assert_eq!(open(&p).unwrap().size(), 0);
    }
    // 1 TiB monolithicSparse with one grain: fast, small, clean.
    let p = dir.path().join("big.vmdk");
    let t = std::time::Instant::now();
    let out = OutputFiles::new();
    let w = VmdkDriver.create(&p, 1 << 40, &opts(&[]), &out).unwrap();
    w.write_encoded(Encoded::Plain { offset: 1 << 39, data: vec![9u8; 65536] }).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    assert_qemu_check_clean(&p);
    let img = open(&p).unwrap();
    let mut b = vec![0u8; 65536];
    img.read_at(&mut b, 1 << 39).unwrap();
    assert!(b.iter().all(|&x| x == 9));
    // The whole map takes few calls.
    let mut calls = 0;
    let mut off = 0;
    while off < img.size() {
        off = img.extent_at(off, img.size() - off).unwrap().end();
        calls += 1;
    }
    assert!(calls <= 40, "{calls} calls");
}

#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.vmdk");
    let out = OutputFiles::new();
    for (k, v, kind) in [
        ("subformat", "twoGbMaxExtentSparse", ErrorKind::Unsupported),
        ("subformat", "twoGbMaxExtentFlat", ErrorKind::Unsupported),
        ("subformat", "vmfs", ErrorKind::InvalidArgument),
        ("adapter_type", "scsi", ErrorKind::InvalidArgument),
        ("hwversion", "x", ErrorKind::InvalidArgument),
        ("zeroed_grain", "maybe", ErrorKind::InvalidArgument),
        ("cluster_size", "64k", ErrorKind::InvalidArgument),
    ] {
        let e = VmdkDriver.create(&p, 1 << 20, &opts(&[(k, v)]), &out).unwrap_err();
        assert_eq!(e.kind(), kind, "{k}={v}: {e}");
    }
    let c = CreateOptions { compress: true, ..opts(&[]) };
    let e = VmdkDriver.create(&p, 1 << 20, &c, &out).unwrap_err();
    assert!(e.to_string().contains("streamOptimized"), "{e}");
    let e = VmdkDriver.create(&p, 4 << 40, &opts(&[]), &out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(VmdkDriver.create(&p, 4 << 40, &opts(&[("subformat", "monolithicFlat")]), &out).is_ok());
}

#[test]
fn measure_matches_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let raw = pattern_raw(dir.path());
    let src = open_raw(&raw);
    let extents: Vec<_> = diskcast_block::copy::extents(src.as_ref(), true).map(|e| e.unwrap()).collect();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let o = opts(&[("subformat", sub)]);
        let m = VmdkDriver.measure(SIZE, &extents, &o).unwrap();
        let p = dir.path().join(format!("m-{sub}.vmdk"));
        write_with_ours(src.as_ref(), &p, &o);
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len <= m.required, "{sub}: wrote {len}, measured {}", m.required);
        assert!(m.required <= m.fully_allocated);
        if sub == "monolithicSparse" {
            // Exact for the uncompressed layout (the copy engine drops zero grains the
            // raw source holds as data, so ours may be smaller).
            assert!(len * 10 >= m.required * 8, "{sub}: {len} vs {}", m.required);
        }
    }
}

#[test]
fn zero_writes_with_and_without_zeroed_grains() {
    let dir = tempfile::tempdir().unwrap();
    let g = 65536usize;
    for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
        for zg in ["on", "off"] {
            let p = dir.path().join(format!("z-{sub}-{zg}.vmdk"));
            let out = OutputFiles::new();
            let size = 10 * g as u64 + 1536;
            let w = VmdkDriver.create(&p, size, &opts(&[("subformat", sub), ("zeroed_grain", zg)]), &out).unwrap();
            let mut want = vec![0u8; size as usize];
            w.write_encoded(Encoded::Plain { offset: 0, data: vec![1u8; 2 * g] }).unwrap();
            want[..2 * g].fill(1);
            w.write_zeroes(2 * g as u64, 3 * g as u64).unwrap();
            if sub != "streamOptimized" {
                // Zero part of a written grain, and all of another.
                w.write_zeroes(100, 1000).unwrap();
                want[100..1100].fill(0);
                w.write_zeroes(g as u64, g as u64).unwrap();
                want[g..2 * g].fill(0);
            }
            w.write_encoded(Encoded::Plain { offset: 6 * g as u64, data: vec![2u8; 4 * g + 1536] }).unwrap();
            want[6 * g..].fill(2);
            w.finish().unwrap();
            out.commit().unwrap();
            assert_qemu_check_clean(&p);
            assert!(qemu_raw(&p, dir.path()) == want, "{sub} zeroed_grain={zg}: qemu reads other bytes");
            let img = open(&p).unwrap();
            assert!(read_all(img.as_ref()) == want, "{sub} zeroed_grain={zg}: we read other bytes");
            if zg == "on" && sub != "monolithicFlat" {
                let e = img.extent_at(2 * g as u64, 3 * g as u64).unwrap();
                assert_eq!((e.alloc, e.len), (diskcast_block::Alloc::Zero, 3 * g as u64), "{sub}");
            }
        }
    }
}

/// Writing into an existing qemu-made monolithicSparse VMDK: cut short before the grain
/// tables are written, the disk reads as before and qemu-img check finds it clean;
/// finished, it reads as written.
#[test]
fn interrupted_edit_leaks_at_worst() {
    let d = tempfile::tempdir().unwrap();
    diskcast_testkit::assert_interrupted_edit_leaks_at_worst(&diskcast_vmdk::VmdkDriver, d.path(), "vmdk", "", true);
}
