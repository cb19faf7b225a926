//! Reading qemu-made images and comparing with qemu-img's own view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::Alloc;

/// Not a multiple of any block size, a multiple of 512.
const ODD_SIZE: &str = "10000896";

#[test]
fn dynamic_and_fixed_with_several_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["dynamic", "fixed"] {
        for bs in ["1M", "32M", "256M"] {
            let name = format!("{sub}-{bs}.vhdx");
            let p = patterned(dir.path(), &name, ODD_SIZE, &format!("subformat={sub},block_size={bs}"));
            assert_matches_qemu(&p, dir.path());
            let img = open(&p).unwrap();
            let info = img.info();
            assert_eq!(info.format, "vhdx");
            assert_eq!(info.virtual_size, 10000896);
            assert_eq!(info.cluster_size, Some(diskcast_block::size::parse_size(bs).unwrap()));
            assert_eq!(info.specific["subformat"], sub, "{name}");
            assert_eq!(info.specific["logical-sector-size"], 512);
            assert_eq!(info.specific["log-size"], 1 << 20);
            assert_eq!(info.specific["has-parent"], false);
            // Probing finds it, and our check agrees with qemu-img check (clean).
            assert_eq!(registry().probe(&p).unwrap().name(), "vhdx");
            assert_qemu_check_clean(&p);
            let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(&p).unwrap()).unwrap();
            assert_eq!((rep.corruptions, rep.leaks, rep.check_errors), (0, 0, 0), "{:?}", rep.messages);
            let bsz = diskcast_block::size::parse_size(bs).unwrap();
            assert_eq!(rep.total_clusters, Some(10000896u64.div_ceil(bsz)));
        }
    }
}

#[test]
fn default_block_size_and_extents() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "d.vhdx", "50M", "block_size=1M");
    let img = open(&p).unwrap();
    // Block 0 holds data; blocks 10.. were never written, and qemu (block_state_zero=on by
    // default) marks them ZERO: one zero run to the end.
    assert_eq!(img.extent_at(0, 1 << 20).unwrap().alloc, Alloc::Data);
    let e = img.extent_at(10 << 20, 40 << 20).unwrap();
    assert_eq!((e.offset, e.len, e.alloc), (10 << 20, 40 << 20, Alloc::Zero));
    let p2 = dir.path().join("nz.vhdx");
    create(&p2, "50M", "block_size=1M,block_state_zero=off");
    qemu_io(&p2, &["write -P 1 3M 4k"]);
    let img2 = open(&p2).unwrap();
    let e = img2.extent_at(0, 50 << 20).unwrap();
    assert_eq!((e.len, e.alloc), (3 << 20, Alloc::Unallocated));
    assert_eq!(img2.extent_at(3 << 20, 50 << 20).unwrap().len, 1 << 20);
    assert_matches_qemu(&p2, dir.path());
    assert_matches_qemu(&p, dir.path());
    // qemu's own default block size for this size.
    let q = dir.path().join("q.vhdx");
    create(&q, "2G", "");
    assert_eq!(open(&q).unwrap().info().cluster_size, Some(16 << 20));
}

#[test]
fn reads_past_the_end_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.vhdx");
    create(&p, "3M", "");
    let img = open(&p).unwrap();
    let mut b = [0u8; 2];
    assert_eq!(img.read_at(&mut b, (3 << 20) - 1).unwrap_err().kind(), diskcast_block::ErrorKind::OutOfBounds);
}

#[test]
fn a_1tib_empty_image_maps_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.vhdx");
    create(&p, "1T", "block_size=1M,block_state_zero=off");
    qemu_io(&p, &["write -P 7 700G 4k"]);
    let img = open(&p).unwrap();
    let e = img.extent_at(0, img.size()).unwrap();
    assert_eq!((e.len, e.alloc), (700 << 30, Alloc::Unallocated));
    let e = img.extent_at(700 << 30, img.size()).unwrap();
    assert_eq!((e.len, e.alloc), (1 << 20, Alloc::Data));
    let e = img.extent_at((700 << 30) + (1 << 20), img.size()).unwrap();
    assert_eq!(e.end(), img.size());
    let mut b = vec![0u8; 8192];
    img.read_at(&mut b, (700 << 30) - 4096).unwrap();
    assert!(b[..4096].iter().all(|&x| x == 0) && b[4096..].iter().all(|&x| x == 7));
}
