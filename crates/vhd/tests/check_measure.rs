//! Our own `check` (qemu-img has none for vpc) and `measure` (qemu-img cannot measure vpc).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::gate::Gate;
use diskcast_block::registry::{CreateOptions, Driver, OpenContext};
use diskcast_block::{Alloc, Extent};
use diskcast_vhd::VhdDriver;

fn check(p: &std::path::Path) -> diskcast_block::registry::CheckReport {
    let reg = registry();
    let gate = Gate::new();
    VhdDriver.check(diskcast_block::source::open_file(p).unwrap(), &OpenContext::new(&reg, &gate)).unwrap()
}

#[test]
fn clean_images_check_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (name, o) in [("d.vhd", ""), ("f.vhd", "subformat=fixed")] {
        let p = dir.path().join(name);
        make_vhd(&p, o);
        let r = check(&p);
        assert_eq!((r.corruptions, r.leaks, r.check_errors), (0, 0, 0), "{name}: {:?}", r.messages);
        let ours = dir.path().join(format!("ours-{name}"));
        let opts = if o.is_empty() { CreateOptions::default() } else { opts(&[("subformat", "fixed")]) };
        write_with_ours(open(&p).unwrap().as_ref(), &ours, &opts);
        let r = check(&ours);
        assert_eq!((r.corruptions, r.leaks, r.check_errors), (0, 0, 0), "ours {name}: {:?}", r.messages);
        if o.is_empty() {
            // qemu allocated blocks 0, 2 (write -z writes zeros), 3 and 6 of 7; ours
            // leaves out the all-zero block 2.
            let q = check(&p);
            assert_eq!((q.allocated_clusters, q.total_clusters), (Some(4), Some(7)));
            assert_eq!((r.allocated_clusters, r.total_clusters), (Some(3), Some(7)));
        }
    }
}

#[test]
fn overlapping_blocks_and_footer_mismatch_are_corruptions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.vhd");
    make_vhd(&p, "");
    let b = std::fs::read(&p).unwrap();
    let bat = be64(&b, 512 + 16);
    // Block 2 now shares block 0's storage.
    patch(&p, bat + 8, &b[bat as usize..bat as usize + 4]);
    let r = check(&p);
    assert_eq!(r.corruptions, 1, "{:?}", r.messages);
    assert!(r.messages[0].contains("overlap"), "{:?}", r.messages);
    // The end footer differs from the copy at offset 0.
    let len = b.len() as u64;
    patch(&p, len - 512 + 100, &[1]);
    let r = check(&p);
    assert_eq!(r.corruptions, 2, "{:?}", r.messages);
    assert!(r.messages.iter().any(|m| m.contains("footer at the end")), "{:?}", r.messages);
}

#[test]
fn measure_matches_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB + 512 of dense data, and a 3 MiB hole before the last MiB.
    let mut data = pattern((9 << 20) + 512, 4);
    data[(5 << 20)..(8 << 20)].fill(0);
    let size = data.len() as u64;
    let extents = [
        Extent { offset: 0, len: 5 << 20, alloc: Alloc::Data },
        Extent { offset: 5 << 20, len: 3 << 20, alloc: Alloc::Unallocated },
        Extent { offset: 8 << 20, len: size - (8 << 20), alloc: Alloc::Data },
    ];
    for (sub, pairs) in [("dynamic", vec![]), ("fixed", vec![("subformat", "fixed")])] {
        let o = opts(&pairs);
        let m = VhdDriver.measure(size, &extents, &o).unwrap();
        let out = dir.path().join(format!("{sub}.vhd"));
        write_with_ours(&VecDisk(data.clone()), &out, &o);
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(m.required, len, "{sub}");
        let vsize = open(&out).unwrap().size();
        if sub == "fixed" {
            assert_eq!(m.fully_allocated, vsize + 512);
        } else {
            // Blocks 0-2 and 4 hold data; 5 blocks of 2 MiB + 4 KiB slots.
            assert_eq!(m.fully_allocated - m.required, (vsize.div_ceil(2 << 20) - 4) * ((2 << 20) + 4096));
        }
    }
}
