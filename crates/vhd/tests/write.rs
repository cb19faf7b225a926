//! Writing VHDs with our writer: qemu-img must read them as identical to the source,
//! with the size qemu-img itself would choose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_block::output::OutputFiles;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_vhd::VhdDriver;
use std::path::Path;

/// A raw source made by qemu-io with the common pattern (13 MiB exactly).
fn raw_source(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", p.to_str().unwrap(), "13M"]);
    qemu_io_fmt("raw", &p, PATTERN);
    p
}

/// Size qemu-img picks for a new vpc image of `size` with `o`.
fn qemu_created_size(dir: &Path, size: &str, o: &str) -> u64 {
    let p = dir.join("probe-size.vhd");
    let _ = std::fs::remove_file(&p);
    create(&p, size, o);
    qemu_size(&p)
}

/// Our own invariants on a dynamic image we wrote: BAT entries inside the file and in
/// increasing order, data 4 KiB-aligned, bitmaps with bits only where data is nonzero
/// or was written, file length no more than `measure` predicts (measure counts blocks
/// the source maps as data; zero 4 KiB units inside them are never written).
fn check_dynamic_layout(p: &Path, measured: u64) {
    let b = std::fs::read(p).unwrap();
    assert_eq!(&b[..8], b"conectix");
    assert_eq!(&b[b.len() - 512..b.len() - 504], b"conectix");
    assert_eq!(b[..512], b[b.len() - 512..], "footer copies differ");
    assert_eq!(&b[512..520], b"cxsparse");
    let bat = be64(&b, 512 + 16) as usize;
    let n = be32(&b, 512 + 28) as usize;
    let mut starts = Vec::new();
    for i in 0..n {
        let e = be32(&b, bat + i * 4);
        if e == u32::MAX {
            continue;
        }
        let bitmap = e as u64 * 512;
        starts.push(bitmap);
        assert_eq!((bitmap + 512) % 4096, 0, "block {i} data not 4 KiB aligned");
        assert!(bitmap + 512 + (2 << 20) + 512 <= b.len() as u64);
        let bm = &b[bitmap as usize..bitmap as usize + 512];
        let data = &b[bitmap as usize + 512..bitmap as usize + 512 + (2 << 20)];
        for s in 0..4096 {
            let set = bm[s / 8] & (0x80 >> (s % 8)) != 0;
            if !set {
                assert!(data[s * 512..s * 512 + 512].iter().all(|&x| x == 0), "block {i} sector {s}: clear bit, data");
            }
        }
    }
    // Blocks (allocated in any order by parallel writers) never overlap metadata or
    // each other.
    starts.sort();
    assert!(starts.first().is_none_or(|&s| s >= bat as u64 + n as u64 * 4));
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 512 + (2 << 20), "blocks overlap");
    }
    assert!(b.len() as u64 <= measured, "file is {} bytes, measure() said {measured}", b.len());
}

#[test]
fn dynamic_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    let src = raw_source(dir.path());
    let img = registry().open(&src, Some("raw"), &ctx_placeholder()).unwrap();
    let out = dir.path().join("out.vhd");
    write_with_ours(img.as_ref(), &out, &CreateOptions::default());
    assert_qemu_compare(&src, &out);
    assert_eq!(qemu_size(&out), qemu_created_size(dir.path(), "13M", ""));
    assert_eq!(qemu_info(&out)["cluster-size"].as_u64(), Some(2 << 20));
    // Back to raw with qemu: identical bytes, then zeros in the CHS tail.
    let back = qemu_raw(&out, dir.path());
    let orig = std::fs::read(&src).unwrap();
    assert_eq!(&back[..orig.len()], &orig[..]);
    assert!(back[orig.len()..].iter().all(|&x| x == 0));
    // Our reader agrees with qemu.
    assert_matches_qemu(&out, dir.path());
    let extents: Vec<_> = our_map(img.as_ref());
    let m = VhdDriver.measure(img.size(), &extents, &CreateOptions::default()).unwrap();
    check_dynamic_layout(&out, m.required);
    // Never-written block 1 (2-4 MiB) stays unallocated; the zeroed MiB at 4 MiB too.
    let b = std::fs::read(&out).unwrap();
    let bat = be64(&b, 512 + 16) as usize;
    assert_eq!(be32(&b, bat + 4), u32::MAX);
    assert_eq!(be32(&b, bat + 8), u32::MAX);
}

fn ctx_placeholder() -> diskcast_block::registry::OpenContext<'static> {
    let reg: &'static _ = Box::leak(Box::new(registry()));
    let gate: &'static _ = Box::leak(Box::new(diskcast_block::gate::Gate::new()));
    diskcast_block::registry::OpenContext::new(reg, gate)
}

#[test]
fn fixed_and_force_size_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    let src = raw_source(dir.path());
    let img = registry().open(&src, Some("raw"), &ctx_placeholder()).unwrap();
    for (name, pairs, qemu_opts) in [
        ("fixed.vhd", vec![("subformat", "fixed")], "subformat=fixed"),
        ("fixed-force.vhd", vec![("subformat", "fixed"), ("force_size", "on")], "subformat=fixed,force_size=on"),
        ("dyn-force.vhd", vec![("force_size", "on")], "force_size=on"),
    ] {
        let out = dir.path().join(name);
        write_with_ours(img.as_ref(), &out, &opts(&pairs));
        assert_qemu_compare(&src, &out);
        assert_eq!(qemu_size(&out), qemu_created_size(dir.path(), "13M", qemu_opts), "{name}");
        assert_matches_qemu(&out, dir.path());
        let ours = open(&out).unwrap();
        if name.starts_with("fixed") {
            assert_eq!(std::fs::metadata(&out).unwrap().len(), ours.size() + 512);
            // Sparse: the 13 MiB file holds about 1 MiB of data.
            use std::os::unix::fs::MetadataExt;
            assert!(std::fs::metadata(&out).unwrap().blocks() * 512 < 4 << 20, "{name} is not sparse");
        }
        if name.contains("force") {
            assert_eq!(ours.size(), 13 << 20);
            assert_eq!(ours.info().specific["creator-app"], "qem2");
        }
    }
}

#[test]
fn azure_recipe_fixed_force_size_round_1m() {
    let dir = tempfile::tempdir().unwrap();
    // 5 MiB + 1000 bytes: not a whole MiB, not a CHS size.
    let data = pattern((5 << 20) + 1000, 3);
    let src = dir.path().join("odd.raw");
    std::fs::write(&src, &data).unwrap();
    let out = dir.path().join("azure.vhd");
    let o = opts(&[("subformat", "fixed"), ("force_size", "on"), ("round_size", "1M")]);
    write_with_ours(&VecDisk(data.clone()), &out, &o);
    assert_eq!(qemu_size(&out), 6 << 20);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), (6 << 20) + 512);
    let back = qemu_raw(&out, dir.path());
    assert_eq!(&back[..data.len()], &data[..]);
    assert!(back[data.len()..].iter().all(|&x| x == 0));
    // round_size without force_size: a CHS-exact size that is also a whole MiB.
    let out2 = dir.path().join("chs-mib.vhd");
    write_with_ours(&VecDisk(data.clone()), &out2, &opts(&[("round_size", "1M")]));
    let s = qemu_size(&out2);
    assert_eq!(s % (1 << 20), 0, "{s}");
    assert!(s >= 6 << 20);
    assert_eq!(open(&out2).unwrap().size(), s);
}

#[test]
fn vhd_to_vhd_keeps_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("q.vhd");
    make_vhd(&src, "");
    let img = open(&src).unwrap();
    let out = dir.path().join("copy.vhd");
    write_with_ours(img.as_ref(), &out, &CreateOptions::default());
    qemu_img(&["compare", "-q", "-f", "vpc", "-F", "vpc", src.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(qemu_size(&out), qemu_size(&src));
    // Our output allocates fewer bytes than qemu's (zero 4 KiB units are not stored).
    assert!(std::fs::metadata(&out).unwrap().len() <= std::fs::metadata(&src).unwrap().len() + (3 * 4096));
}

#[test]
fn many_threads_random_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = pattern(40 << 20, 9);
    // Zero some whole blocks and some 4 KiB units.
    data[(6 << 20)..(10 << 20)].fill(0);
    for i in (0..data.len()).step_by(3 * 65536) {
        let n = data.len();
        data[i..(i + 4096).min(n)].fill(0);
    }
    let src = dir.path().join("big.raw");
    std::fs::write(&src, &data).unwrap();
    let out = dir.path().join("big.vhd");
    write_with_ours(&VecDisk(data), &out, &CreateOptions::default());
    assert_qemu_compare(&src, &out);
    let extents = vec![diskcast_block::Extent { offset: 0, len: 40 << 20, alloc: diskcast_block::Alloc::Data }];
    let m = VhdDriver.measure(40 << 20, &extents, &CreateOptions::default()).unwrap();
    // The two zero blocks are not allocated: the file is two blocks smaller than measured.
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(len + 2 * ((2 << 20) + 4096), m.required);
    // The CHS size is a little over 40 MiB: one more BAT entry when fully allocated.
    assert_eq!(m.fully_allocated - m.required, (2 << 20) + 4096);
}

#[test]
fn bad_options_and_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.vhd");
    let out = OutputFiles::new();
    let cases: Vec<(u64, CreateOptions, &str)> = vec![
        (2041u64 << 30, CreateOptions::default(), "2040 GiB"),
        (2041u64 << 30, opts(&[("force_size", "on")]), "2040 GiB"),
        (1 << 20, opts(&[("subformat", "sparse")]), "subformat"),
        (1 << 20, opts(&[("force_size", "maybe")]), "force_size"),
        (1 << 20, opts(&[("round_size", "1000")]), "round_size"),
        (1 << 20, opts(&[("cluster_size", "64K")]), "cluster_size"),
    ];
    for (size, o, needle) in cases {
        let e = VhdDriver.create(&p, size, &o, &out).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let o = CreateOptions { backing_file: Some("base.vhd".into()), ..CreateOptions::default() };
    assert_eq!(VhdDriver.create(&p, 1 << 20, &o, &out).unwrap_err().kind(), ErrorKind::Unsupported);
    // The largest size is accepted (nothing is written until data comes).
    let w = VhdDriver.create(&p, 2040u64 << 30, &opts(&[("force_size", "on")]), &out).unwrap();
    assert_eq!(w.size(), 2040u64 << 30);
    // Without force_size a 200 GiB disk keeps its exact size (maximum geometry).
    let w = VhdDriver.create(&dir.path().join("y.vhd"), 200 << 30, &CreateOptions::default(), &out).unwrap();
    assert_eq!(w.size(), 200 << 30);
}

#[test]
fn big_sizes_match_qemu() {
    let dir = tempfile::tempdir().unwrap();
    // Sizes across the geometry thresholds (17, 31, 63, 255 sectors per track).
    for size in ["1M", "31M", "127M", "505M", "4G", "33G", "127G", "130G"] {
        let q = qemu_created_size(dir.path(), size, "");
        let p = dir.path().join(format!("{size}.vhd"));
        let out = OutputFiles::new();
        let bytes = diskcast_block::size::parse_size(size).unwrap();
        let w = VhdDriver.create(&p, bytes, &CreateOptions::default(), &out).unwrap();
        assert_eq!(w.size(), q, "{size}");
        w.finish().unwrap();
        out.commit().unwrap();
        assert_eq!(qemu_size(&p), q, "{size}");
        let theirs = dir.path().join("probe-size.vhd");
        let ours = open(&p).unwrap();
        let qi = open(&theirs).unwrap();
        for k in ["cylinders", "heads", "sectors-per-track"] {
            assert_eq!(ours.info().specific[k], qi.info().specific[k], "{size} {k}");
        }
    }
}

#[test]
fn write_zeroes_clears_data_in_both_subformats() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["dynamic", "fixed"] {
        let p = dir.path().join(format!("z-{sub}.vhd"));
        let out = OutputFiles::new();
        let w = VhdDriver.create(&p, 6 << 20, &opts(&[("subformat", sub)]), &out).unwrap();
        let data = pattern(3 << 20, 1);
        w.write_encoded(diskcast_block::Encoded::Plain { offset: 1 << 20, data: data.clone() }).unwrap();
        // Zero a range across the block boundary at 2 MiB, with partial sectors, and a
        // range in a block never written.
        w.write_zeroes((2 << 20) - 1000, 5000).unwrap();
        w.write_zeroes(5 << 20, 4096).unwrap();
        w.finish().unwrap();
        out.commit().unwrap();
        let mut want = vec![0u8; open(&p).unwrap().size() as usize];
        want[1 << 20..4 << 20].copy_from_slice(&data);
        want[(2 << 20) - 1000..(2 << 20) + 4000].fill(0);
        let raw = dir.path().join(format!("z-{sub}.raw"));
        std::fs::write(&raw, &want).unwrap();
        assert_qemu_compare(&raw, &p);
        assert_eq!(read_all(open(&p).unwrap().as_ref()), want, "{sub}");
        if sub == "dynamic" {
            let b = std::fs::read(&p).unwrap();
            let bat = be64(&b, 512 + 16) as usize;
            assert_eq!(be32(&b, bat + 8), u32::MAX, "zeroing an unwritten block allocated it");
        }
    }
}

/// Writing into an existing qemu-made dynamic VHD: cut short before the BAT is written,
/// the disk reads as before (the footer moved past the new block already); finished, it
/// reads as written. qemu-img has no check for vpc.
#[test]
fn interrupted_edit_leaks_at_worst() {
    let d = tempfile::tempdir().unwrap();
    diskcast_testkit::assert_interrupted_edit_leaks_at_worst(&diskcast_vhd::VhdDriver, d.path(), "vpc", "", false);
}
