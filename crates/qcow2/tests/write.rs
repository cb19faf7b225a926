//! Images written by our writer, verified by qemu-img check/compare and by our reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_block::{Encoded, ErrorKind};
use diskcast_qcow2::Qcow2Driver;

/// Writes `data` with `opts`, then has qemu check and compare it, and reads it back.
fn roundtrip(name: &str, data: Vec<u8>, opts: &CreateOptions) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("diskcast-qcow2-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("src.raw");
    std::fs::write(&raw, &data).unwrap();
    let out = dir.join("out.qcow2");
    let src = VecDisk(data);
    write_with_ours(&src, &out, opts);
    assert_qemu_check_clean(&out);
    assert_qemu_compare(&raw, &out);
    let ours = read_all(open(&out).unwrap().as_ref());
    assert_eq!(ours.len() as u64, src.0.len().div_ceil(512) as u64 * 512, "{name}: size not rounded to 512");
    assert!(
        ours[..src.0.len()] == src.0[..] && ours[src.0.len()..].iter().all(|&b| b == 0),
        "{name}: our reader disagrees"
    );
    let report = Qcow2Driver
        .check(
            diskcast_block::source::open_file(&out).unwrap(),
            &diskcast_block::registry::OpenContext::new(&registry(), &diskcast_block::gate::Gate::new()),
        )
        .unwrap();
    assert_eq!((report.corruptions, report.leaks), (0, 0), "{name}: {:?}", report.messages);
    out
}

fn sparse_data(len: usize, seed: u64) -> Vec<u8> {
    let mut d = pattern(len, seed);
    // Holes of various sizes so the writer sees scattered clusters.
    for (i, chunk) in d.chunks_mut(300_000).enumerate() {
        if i % 2 == 1 {
            let n = 200_000.min(chunk.len());
            chunk[..n].fill(0);
        }
    }
    d
}

#[test]
fn uncompressed_cluster_sizes_and_versions() {
    for (name, o) in [
        ("c512", opts(&[("cluster_size", "512")])),
        ("c64k", opts(&[])),
        ("c2m", opts(&[("cluster_size", "2M")])),
        ("v2", opts(&[("compat", "0.10"), ("cluster_size", "4K")])),
        ("rc1", opts(&[("refcount_bits", "1"), ("cluster_size", "1k")])),
        ("rc64", opts(&[("refcount_bits", "64")])),
    ] {
        roundtrip(name, sparse_data(5_000_001, 7), &o);
    }
}

#[test]
fn compressed_zlib_and_zstd() {
    for (name, o) in [
        ("z512", opts(&[("cluster_size", "512")])),
        ("z64k", opts(&[])),
        ("z2m", opts(&[("cluster_size", "2M")])),
        ("zstd4k", opts(&[("compression_type", "zstd"), ("cluster_size", "4k")])),
        ("zstd64k", opts(&[("compression_type", "zstd")])),
        ("zv2", opts(&[("compat", "v2")])),
        ("zrc1", opts(&[("refcount_bits", "1"), ("cluster_size", "4k")])),
        ("zrc2", opts(&[("refcount_bits", "2"), ("cluster_size", "4k")])),
    ] {
        let o = CreateOptions { compress: true, ..o };
        let out = roundtrip(name, sparse_data(3_000_017, 3), &o);
        let map = qemu_img(&["map", "--output=json", out.to_str().unwrap()]);
        assert!(map.contains("\"compressed\": true"), "{name}: nothing compressed");
    }
}

#[test]
fn empty_and_one_tib() {
    roundtrip("empty", Vec::new(), &opts(&[]));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.qcow2");
    let t = std::time::Instant::now();
    let out = OutputFiles::new();
    let w = Qcow2Driver.create(&p, 1 << 40, &opts(&[]), &out).unwrap();
    w.write_encoded(Encoded::Plain { offset: 1 << 39, data: vec![9u8; 65536] }).unwrap();
    w.finish().unwrap();
    out.commit().unwrap();
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    assert_qemu_check_clean(&p);
    let img = open(&p).unwrap();
    let mut b = vec![0u8; 65536];
    img.read_at(&mut b, 1 << 39).unwrap();
    assert!(b.iter().all(|&x| x == 9));
}

#[test]
fn backing_file_recorded_and_zeroes_written() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create(&base, "1M", "cluster_size=4k");
    qemu_io(&base, &["write -P 0x5a 0 1M"]);
    for compat in ["1.1", "0.10"] {
        let p = dir.path().join(format!("top{compat}.qcow2"));
        let mut o = opts(&[("compat", compat), ("cluster_size", "4k")]);
        o.backing_file = Some("base.qcow2".into());
        o.backing_format = Some("qcow2".into());
        let out = OutputFiles::new();
        let w = Qcow2Driver.create(&p, 1 << 20, &o, &out).unwrap();
        assert!(!w.zero_initialized());
        w.write_encoded(Encoded::Plain { offset: 8192, data: vec![1u8; 8192] }).unwrap();
        w.write_zeroes(65536, 65536).unwrap();
        w.write_zeroes(8192, 4096).unwrap();
        w.finish().unwrap();
        out.commit().unwrap();
        assert_qemu_check_clean(&p);
        let info = qemu_img(&["info", "--output=json", p.to_str().unwrap()]);
        assert!(info.contains("\"backing-filename\": \"base.qcow2\""), "{info}");
        assert!(info.contains("\"backing-filename-format\": \"qcow2\""), "{info}");
        let mut want = vec![0x5au8; 1 << 20];
        want[8192..12288].fill(0);
        want[12288..16384].fill(1);
        want[65536..131072].fill(0);
        assert_eq!(qemu_raw(&p, dir.path()), want, "compat {compat}");
        assert_eq!(read_all(open(&p).unwrap().as_ref()), want);
    }
}

#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.qcow2");
    let out = OutputFiles::new();
    for (k, v, kind) in [
        ("cluster_size", "1000", ErrorKind::InvalidArgument),
        ("cluster_size", "4M", ErrorKind::InvalidArgument),
        ("compat", "0.9", ErrorKind::InvalidArgument),
        ("compression_type", "lz4", ErrorKind::InvalidArgument),
        ("refcount_bits", "3", ErrorKind::InvalidArgument),
        ("extended_l2", "on", ErrorKind::Unsupported),
        ("nonsense", "1", ErrorKind::InvalidArgument),
    ] {
        let e = Qcow2Driver.create(&p, 1 << 20, &opts(&[(k, v)]), &out).unwrap_err();
        assert_eq!(e.kind(), kind, "{k}={v}: {e}");
    }
    let e =
        Qcow2Driver.create(&p, 1 << 20, &opts(&[("compat", "0.10"), ("compression_type", "zstd")]), &out).unwrap_err();
    assert!(e.to_string().contains("compat=1.1"), "{e}");
    assert!(Qcow2Driver.create(&p, 1 << 20, &opts(&[("cluster_size", "128K"), ("compat", "v3")]), &out).is_ok());
}
