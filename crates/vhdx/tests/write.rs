//! Writing VHDX with our writer from raw and qcow2 sources, judged by qemu-img.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A raw source with data at odd offsets, zero runs and holes; its size is not a multiple
/// of any block size. Each 4 KiB unit of data starts with its own index.
fn raw_source(dir: &Path) -> PathBuf {
    let p = dir.join("src.raw");
    let size = 37 * (1 << 20) + 3 * 4096;
    qemu_img(&["create", "-q", "-f", "raw", p.to_str().unwrap(), &size.to_string()]);
    qemu_io_fmt(
        "raw",
        &p,
        &[
            "write -P 0x11 0 4k",
            "write -P 0x22 100k 200k",
            "write -P 0x33 1536k 3M",
            "write -P 0 2M 64k",
            "write -P 0x44 5121k 3k",
            "write -P 0x55 20M 512",
            "write -P 0x66 36M 1M",
        ],
    );
    // The last partial 4 KiB unit and index stamps.
    for (i, off) in [0u64, 1536 << 10, 36 << 20, (37 << 20) + 8192].iter().enumerate() {
        patch(&p, *off, &(i as u64 + 1).to_le_bytes());
    }
    p
}

/// qemu-img 10 refuses VHDX with 4096-byte logical sectors ("Operation not supported"),
/// so 4K images are judged by our reader against the source and by our check.
fn check_4k(src: &Path, out: &Path, block_size: u64) {
    let o = std::process::Command::new("qemu-img").args(["info", out.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not supported"), "qemu-img now reads 4K VHDX?");
    let img = open(out).unwrap();
    assert_same(&read_all(img.as_ref()), &std::fs::read(src).unwrap(), "4K image vs source");
    assert_eq!(img.info().cluster_size, Some(block_size));
    let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(out).unwrap()).unwrap();
    assert_eq!(rep.corruptions, 0, "{:?}", rep.messages);
}

fn check_ours(src: &Path, srcfmt: &str, out: &Path, size: u64, block_size: u64) {
    assert_qemu_compare(src, srcfmt, out, "vhdx");
    assert_qemu_check_clean(out);
    let info = qemu_info(out);
    assert_eq!(info["format"], "vhdx");
    assert_eq!(info["virtual-size"], size);
    assert_eq!(info["cluster-size"], block_size);
    // Our own reader and check agree too.
    let img = open(out).unwrap();
    assert_eq!(img.info().cluster_size, Some(block_size));
    let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(out).unwrap()).unwrap();
    assert_eq!(rep.corruptions, 0, "{:?}", rep.messages);
}

#[test]
fn dynamic_and_fixed_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    let src = raw_source(dir.path());
    let size = std::fs::metadata(&src).unwrap().len();
    let img = open_raw(&src);
    for (sub, bs, lss, want_bs) in [
        ("dynamic", Some("1M"), "512", 1u64 << 20),
        ("dynamic", None, "512", 8 << 20),
        ("dynamic", Some("1M"), "4096", 1 << 20),
        ("fixed", Some("1M"), "512", 1 << 20),
        ("fixed", None, "4096", 8 << 20),
        ("dynamic", Some("256M"), "4096", 256 << 20),
    ] {
        let out = dir.path().join(format!("{sub}-{bs:?}-{lss}.vhdx"));
        let mut o = vec![("subformat", sub), ("logical_sector_size", lss)];
        if let Some(bs) = bs {
            o.push(("block_size", bs));
        }
        write_with_ours(img.as_ref(), &out, &opts(&o));
        if lss == "512" {
            check_ours(&src, "raw", &out, size, want_bs);
        } else {
            check_4k(&src, &out, want_bs);
        }
        let ours = open(&out).unwrap();
        assert_eq!(ours.info().specific["subformat"], sub);
        assert_eq!(ours.info().specific["logical-sector-size"], lss.parse::<u64>().unwrap());
        let file_len = std::fs::metadata(&out).unwrap().len();
        let used = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&out).unwrap().blocks() * 512
        };
        if sub == "dynamic" && want_bs == 1 << 20 {
            // Blocks 0-5, 20, 36 and 37 hold data: 9 blocks after 4 MiB of metadata.
            assert_eq!(file_len, (4 + 9) << 20, "{out:?}");
        }
        if sub == "fixed" {
            let blocks = size.div_ceil(want_bs);
            assert_eq!(file_len, (4 << 20) + blocks * want_bs, "{out:?}");
            assert!(used < 16 << 20, "fixed image wrote zeros: {used} bytes used");
        }
    }
}

#[test]
fn from_qcow2_through_qemu_reading() {
    // A qcow2 source converted by qemu to raw, then through our writer: compare with the qcow2.
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "20000256"]);
    qemu_io_fmt("qcow2", &q, &["write -P 0x77 3M 5M", "write -z 4M 1M", "write -P 0x78 19M 4k"]);
    let raw = dir.path().join("q.raw");
    qemu_img(&["convert", "-O", "raw", q.to_str().unwrap(), raw.to_str().unwrap()]);
    let out = dir.path().join("q.vhdx");
    write_with_ours(open_raw(&raw).as_ref(), &out, &opts(&[("block_size", "1M")]));
    check_ours(&q, "qcow2", &out, 20000256, 1 << 20);
}

#[test]
fn qemu_reads_our_image_like_we_do() {
    let dir = tempfile::tempdir().unwrap();
    let src = raw_source(dir.path());
    let out = dir.path().join("o.vhdx");
    write_with_ours(open_raw(&src).as_ref(), &out, &opts(&[("block_size", "2M")]));
    let theirs = qemu_raw(&out, "vhdx", dir.path());
    assert_same(&read_all(open(&out).unwrap().as_ref()), &theirs, "ours vs qemu");
    assert_same(&std::fs::read(&src).unwrap(), &theirs, "source vs qemu");
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.vhdx");
    let files = diskcast_block::output::OutputFiles::new();
    use diskcast_block::registry::Driver;
    for o in [
        vec![("block_size", "512K")],
        vec![("block_size", "3M")],
        vec![("block_size", "512M")],
        vec![("subformat", "diff")],
        vec![("logical_sector_size", "1024")],
        vec![("log_size", "1536K")],
        vec![("cluster_size", "1M")],
    ] {
        let e = diskcast_vhdx::VhdxDriver.create(&out, 1 << 20, &opts(&o), &files).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{o:?}: {e}");
    }
}

#[test]
fn measure_counts_touched_blocks() {
    use diskcast_block::registry::Driver;
    use diskcast_block::{Alloc, Extent};
    let data = [
        Extent { offset: 0, len: 4096, alloc: Alloc::Data },
        Extent { offset: (1 << 20) - 1, len: 2, alloc: Alloc::Data },
        Extent { offset: 5 << 20, len: 1 << 20, alloc: Alloc::Data },
    ];
    let m = diskcast_vhdx::VhdxDriver.measure(10 << 20, &data, &opts(&[("block_size", "1M")])).unwrap();
    assert_eq!(m.required, (4 + 3) << 20);
    assert_eq!(m.fully_allocated, (4 + 10) << 20);
}

#[test]
fn vhdx_to_vhdx_through_our_reader_and_block_state_zero() {
    // A qemu-made VHDX (ZERO and NOT_PRESENT blocks, data at odd offsets) read by our reader.
    let dir = tempfile::tempdir().unwrap();
    let src = patterned(dir.path(), "src.vhdx", "10000896", "block_size=2M");
    let img = open(&src).unwrap();
    for (name, o) in [
        ("plain.vhdx", vec![("block_size", "1M")]),
        ("bsz.vhdx", vec![("block_size", "1M"), ("block_state_zero", "on")]),
        ("fixed.vhdx", vec![("subformat", "fixed"), ("block_size", "4M"), ("log_size", "2M")]),
    ] {
        let out = dir.path().join(name);
        write_with_ours(img.as_ref(), &out, &opts(&o));
        assert_qemu_compare(&src, "vhdx", &out, "vhdx");
        assert_qemu_check_clean(&out);
        let ours = open(&out).unwrap();
        assert_eq!(ours.size(), 10000896);
        // Block 8 (8M..9M) holds nothing: NOT_PRESENT, or ZERO with block_state_zero.
        let e = ours.extent_at(8 << 20, 1 << 20).unwrap();
        let want = match name {
            "plain.vhdx" => diskcast_block::Alloc::Unallocated,
            "bsz.vhdx" => diskcast_block::Alloc::Zero,
            _ => diskcast_block::Alloc::Data,
        };
        assert_eq!(e.alloc, want, "{name}");
        if name == "fixed.vhdx" {
            assert_eq!(ours.info().specific["log-size"], 2 << 20);
        }
    }
}

/// Writing into an existing qemu-made dynamic VHDX (1 MiB blocks): cut short before the
/// BAT goes through the log, the image reads as before and qemu-img check finds it clean;
/// finished (log written, applied, cleared), it reads as written.
#[test]
fn interrupted_edit_leaks_at_worst() {
    let d = tempfile::tempdir().unwrap();
    diskcast_testkit::assert_interrupted_edit_leaks_at_worst(
        &diskcast_vhdx::VhdxDriver,
        d.path(),
        "vhdx",
        "block_size=1M",
        true,
    );
}
