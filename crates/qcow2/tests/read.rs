//! Reading qemu-made images and comparing with qemu-img's own view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::Alloc;

fn patterned(dir: &std::path::Path, name: &str, size: &str, opts: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    create(&p, size, opts);
    qemu_io(
        &p,
        &[
            "write -P 0x11 0 4k",
            "write -P 0x22 100k 200k",
            "write -z 1M 256k",
            "write -P 0x33 2M 1M",
            "write -z -u 2304k 128k",
            "discard 2560k 64k",
        ],
    );
    p
}

#[test]
fn cluster_sizes_v2_v3_and_odd_virtual_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, opts) in [
        "cluster_size=512",
        "cluster_size=64k",
        "cluster_size=2M",
        "cluster_size=4k,compat=0.10",
        "cluster_size=64k,refcount_bits=1",
    ]
    .iter()
    .enumerate()
    {
        let p = patterned(dir.path(), &format!("a{i}.qcow2"), "5000001", opts);
        assert_matches_qemu(&p, dir.path());
    }
}

#[test]
fn zero_clusters_v3() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.qcow2");
    create(&p, "8M", "cluster_size=64k");
    qemu_io(&p, &["write -P 0x55 0 8M", "write -z 1M 1M", "write -z -u 4M 1M"]);
    assert_matches_qemu(&p, dir.path());
    let img = open(&p).unwrap();
    assert_eq!(img.extent_at(1 << 20, 8 << 20).unwrap().alloc, Alloc::Zero);
}

#[test]
fn compressed_zlib_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    for (i, ct) in ["zlib", "zstd"].iter().enumerate() {
        for cs in ["512", "64k", "2M"] {
            let src = patterned(dir.path(), &format!("s{i}{cs}.qcow2"), "5000001", &format!("cluster_size={cs}"));
            let c = dir.path().join(format!("c{i}{cs}.qcow2"));
            qemu_img(&[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("compression_type={ct},cluster_size={cs}"),
                src.to_str().unwrap(),
                c.to_str().unwrap(),
            ]);
            assert_matches_qemu(&c, dir.path());
            assert_eq!(open(&c).unwrap().info().compression.as_deref(), Some(*ct));
        }
    }
}

#[test]
fn extended_l2_subclusters() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create(&base, "4M", "cluster_size=64k");
    qemu_io(&base, &["write -P 0x77 0 4M"]);
    let p = dir.path().join("ext.qcow2");
    create(&p, "4M", "cluster_size=64k,extended_l2=on,backing_file=base.qcow2,backing_fmt=qcow2");
    qemu_io(&p, &["write -P 0x11 2k 2k", "write -P 0x22 70k 10k", "write -z 200k 6k", "write -P 0x33 1M 100k"]);
    assert_matches_qemu(&p, dir.path());
    let img = open(&p).unwrap();
    assert_eq!(img.info().specific["extended-l2"], true);
    let flat = dir.path().join("ext2.qcow2");
    create(&flat, "3000000", "cluster_size=128k,extended_l2=on");
    qemu_io(&flat, &["write -P 0x11 4k 4k", "write -z 8k 64k", "write -P 0x44 1M 1M"]);
    assert_matches_qemu(&flat, dir.path());
}

#[test]
fn backing_chain_of_three() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    let c = dir.path().join("c.qcow2");
    create(&a, "2M", "cluster_size=4k");
    qemu_io(&a, &["write -P 0xaa 0 2M"]);
    create(&b, "3M", "cluster_size=64k,backing_file=a.qcow2,backing_fmt=qcow2");
    qemu_io(&b, &["write -P 0xbb 512k 512k", "write -P 0xb1 2560k 64k"]);
    create(&c, "5M", "backing_file=b.qcow2,backing_fmt=qcow2");
    qemu_io(&c, &["write -P 0xcc 768k 64k", "write -z 0 64k"]);
    assert_matches_qemu(&c, dir.path());
    let img = open(&c).unwrap();
    assert_eq!(img.info().backing_file.as_deref(), Some("b.qcow2"));
    assert_eq!(img.info().backing_format.as_deref(), Some("qcow2"));
    assert!(img.backing().unwrap().backing().is_some());
    // Past the backing's end reads zeros and resolves to Unallocated.
    let e = diskcast_block::resolved_extent(img.as_ref(), 4 << 20, 1 << 20).unwrap();
    assert_eq!(e.alloc, Alloc::Unallocated);
}

#[test]
fn empty_and_one_tib_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir.path().join("empty.qcow2");
    create(&e, "0", "");
    let img = open(&e).unwrap();
    assert_eq!(img.size(), 0);
    let big = dir.path().join("big.qcow2");
    create(&big, "1T", "");
    qemu_io(&big, &["write -P 1 512G 64k"]);
    let t = std::time::Instant::now();
    let img = open(&big).unwrap();
    let exts: Vec<_> = diskcast_block::copy::extents(img.as_ref(), true).collect::<Result<_, _>>().unwrap();
    assert_eq!(exts.len(), 3, "{exts:?}");
    assert_eq!(exts[1].alloc, Alloc::Data);
    assert_eq!(exts[1].offset, 512 << 30);
    assert!(t.elapsed().as_secs() < 2, "mapping 1 TiB took {:?}", t.elapsed());
}

#[test]
fn info_reports_format_details() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("i.qcow2");
    create(&p, "1G", "cluster_size=128k,compression_type=zstd,lazy_refcounts=on,refcount_bits=8");
    let i = open(&p).unwrap().info();
    assert_eq!(i.format, "qcow2");
    assert_eq!(i.cluster_size, Some(128 << 10));
    assert_eq!(i.compression.as_deref(), Some("zstd"));
    assert_eq!(i.specific["compat"], "1.1");
    assert_eq!(i.specific["refcount-bits"], 8);
    assert_eq!(i.specific["lazy-refcounts"], true);
    let p2 = dir.path().join("v2.qcow2");
    create(&p2, "1G", "compat=0.10");
    assert_eq!(open(&p2).unwrap().info().specific["compat"], "0.10");
}

#[test]
fn parallel_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "p.qcow2", "8M", "cluster_size=4k");
    let img = open(&p).unwrap();
    let whole = read_all(img.as_ref());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (img, whole) = (&img, &whole);
            s.spawn(move || {
                for k in 0..200u64 {
                    let off = ((k * 7919 + t * 104729) * 4093) % (8 << 20);
                    let len = (4096 * 3 + 511).min((8 << 20) - off) as usize;
                    let mut b = vec![0u8; len];
                    img.read_at(&mut b, off).unwrap();
                    assert_eq!(&b[..], &whole[off as usize..off as usize + len]);
                }
            });
        }
    });
}
