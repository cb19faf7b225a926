//! Writing into existing VDI, VHD, VHDX and VMDK images (`commit` into such a base, `convert -n`
//! into such a target): each run by diskcast on one copy of qemu-made images and by
//! qemu-img on another copy, with the same arguments; qemu-img judges the pair (compare,
//! check where qemu has one, info's virtual size) and a hostile table entry is refused.

use crate::rebase_commit::twin;
use crate::support::*;
use serde_json::Value;
use std::path::Path;

/// The formats under test: qemu's name, `qemu-img create` options, file extension,
/// whether `qemu-img check` can check it (qemu has no check for VHD).
const FORMATS: &[(&str, &[&str], &str, bool)] = &[
    ("vdi", &[], "vdi", true),
    ("vdi", &["-o", "static=on"], "vdi", true),
    ("vpc", &[], "vhd", false),
    ("vpc", &["-o", "subformat=fixed"], "vhd", false),
    ("vmdk", &[], "vmdk", true),
    ("vmdk", &["-o", "subformat=monolithicFlat"], "vmdk", true),
    ("vmdk", &["-o", "subformat=twoGbMaxExtentSparse"], "vmdk", true),
    ("vmdk", &["-o", "subformat=twoGbMaxExtentFlat"], "vmdk", true),
    ("vhdx", &[], "vhdx", true),
    ("vhdx", &["-o", "block_size=1M"], "vhdx", true),
    ("vhdx", &["-o", "subformat=fixed"], "vhdx", true),
];

/// Guest writes that exercise allocation: part of a block, whole blocks, zeros over data
/// and over nothing, and the disk's last bytes.
const OVERLAY_WRITES: &[&str] = &[
    "write -P 0xcc 512K 64K",
    "write -P 0xdd 3M 4K",
    "write -z 5M 64K",
    "write -z 6M 1M",
    "write -P 0xee 7M 1M",
    "write -P 0x5a 2100K 3K",
];

/// `qemu-img create -f FMT OPTS NAME 8M` in `dir`, with data written by qemu-io when `data`.
fn make_base(dir: &Path, fmt: &str, opts: &[&str], name: &str, data: bool) {
    make_sized(dir, fmt, opts, name, "8M", data);
}

fn make_sized(dir: &Path, fmt: &str, opts: &[&str], name: &str, size: &str, data: bool) {
    let mut args = vec!["create", "-q", "-f", fmt];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[name, size]);
    qemu_img_in(Some(dir), &args).expect_ok();
    if data {
        qemu_io(fmt, &dir.join(name), &["write -P 0xaa 0 1536K", "write -P 0xab 5M 64K", "write -P 0xac 6M 512K"]);
    }
}

/// `qemu-img check` of `img` clean (formats qemu can check), and the same virtual size
/// as `reference`.
fn judge(img: &Path, reference: &Path, fmt: &str, checkable: bool) {
    qemu_compare(img, fmt, reference, fmt);
    if checkable {
        let r = qemu_img_status(&["check", "-f", fmt, "--output=json", &s(img)]);
        assert_eq!(r.code, Some(0), "qemu-img check found problems\n{}", r.describe());
        let v = r.json();
        for k in ["corruptions", "leaks", "check-errors"] {
            assert_eq!(v.get(k).and_then(Value::as_u64).unwrap_or(0), 0, "{k}: {v}");
        }
    }
    let size = |p: &Path| qemu_info_fmt(p, fmt)["virtual-size"].as_u64();
    assert_eq!(size(img), size(reference));
}

/// `commit` of a qcow2 overlay into a base of each format, empty and holding data:
/// the base as qemu-img commit leaves it, the overlay emptied as qemu-img empties it.
#[test]
fn commit_into_each_format_matches_qemu_img() {
    for &(fmt, opts, ext, checkable) in FORMATS {
        for data in [false, true] {
            let base = format!("base.{ext}");
            let (_d, ours, theirs) = twin(|dir| {
                make_base(dir, fmt, opts, &base, data);
                qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-b", &base, "-F", fmt, "top.qcow2"])
                    .expect_ok();
                qemu_io("qcow2", &dir.join("top.qcow2"), OVERLAY_WRITES);
            });
            let what = format!("{fmt} {opts:?} data={data}");
            let r = dc_in(Some(&ours), &["commit", "top.qcow2"]);
            assert_eq!(r.code, Some(0), "{what}\n{}", r.describe());
            assert!(r.stdout_str().contains("Image committed."), "{what}");
            qemu_img_in(Some(&theirs), &["commit", "top.qcow2"]).expect_ok();
            judge(&ours.join(&base), &theirs.join(&base), fmt, checkable);
            qemu_compare(&ours.join("top.qcow2"), "qcow2", &theirs.join("top.qcow2"), "qcow2");
            qemu_check_clean(&ours.join("top.qcow2"));
        }
    }
}

/// `convert -n -O FMT SRC existing` into an empty image and one holding data, against
/// `qemu-img convert -n` on a copy.
#[test]
fn convert_n_into_each_format_matches_qemu_img() {
    for &(fmt, opts, ext, checkable) in FORMATS {
        for data in [false, true] {
            let dst = format!("dst.{ext}");
            let (_d, ours, theirs) = twin(|dir| {
                make_base(dir, fmt, opts, &dst, data);
                qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "src.qcow2", "8M"]).expect_ok();
                qemu_io("qcow2", &dir.join("src.qcow2"), OVERLAY_WRITES);
            });
            let args = ["convert", "-n", "-f", "qcow2", "-O", fmt, "src.qcow2", &dst];
            let r = dc_in(Some(&ours), &args);
            assert_eq!(r.code, Some(0), "{fmt} {opts:?} data={data}\n{}", r.describe());
            qemu_img_in(Some(&theirs), &args).expect_ok();
            judge(&ours.join(&dst), &theirs.join(&dst), fmt, checkable);
            qemu_compare(&ours.join(&dst), fmt, &ours.join("src.qcow2"), "qcow2");
        }
    }
}

/// A table entry naming a place past the end of the file is refused before anything is
/// written: `patch` makes an entry of the base (after its overlay was made) point there;
/// `commit` into it and `convert -n` onto it exit 1 naming the entry, nothing changed.
fn refused_untouched(fmt: &str, ext: &str, patch: impl Fn(&Path), words: &[&str]) {
    let d = tmp();
    let base = format!("base.{ext}");
    make_base(d.path(), fmt, &[], &base, true);
    qemu_img_in(Some(d.path()), &["create", "-q", "-f", "qcow2", "-b", &base, "-F", fmt, "top.qcow2"]).expect_ok();
    qemu_io("qcow2", &d.path().join("top.qcow2"), OVERLAY_WRITES);
    patch(&d.path().join(&base));
    let (before, top_before) = (read(&d.path().join(&base)), read(&d.path().join("top.qcow2")));
    dc_in(Some(d.path()), &["commit", "top.qcow2"]).expect_code(1).expect_stderr_all(words);
    assert_eq!(read(&d.path().join(&base)), before, "{fmt}: a refused commit changed the base");
    assert_eq!(read(&d.path().join("top.qcow2")), top_before, "{fmt}: a refused commit changed the overlay");
    let src = d.path().join("src.raw");
    write_file(&src, &vec![0x42u8; 8 << 20]);
    dc_in(Some(d.path()), &["convert", "-n", "-O", fmt, "src.raw", &base]).expect_code(1).expect_stderr_all(words);
    assert_eq!(read(&d.path().join(&base)), before, "{fmt}: a refused convert -n changed the target");
}

#[test]
fn vdi_block_map_entry_past_the_end_is_refused() {
    // The block map is at 0x200 (qemu's layout); entry 0 names data block 1000.
    refused_untouched("vdi", "vdi", |p| patch(p, 0x200, &1000u32.to_le_bytes()), &["block map entry 0", "allocated"]);
}

#[test]
fn vhd_bat_entry_past_the_end_is_refused() {
    // qemu's layout: footer copy, dynamic header at 512, BAT at 1536; entry 0 names a
    // sector far past the end.
    refused_untouched(
        "vpc",
        "vhd",
        |p| patch(p, 1536, &0x00ff_0000u32.to_be_bytes()),
        &["BAT entry 0", "past the end"],
    );
}

#[test]
fn vmdk_grain_table_entry_past_the_end_is_refused() {
    refused_untouched("vmdk", "vmdk", |p| set_grain_0(p, 0x00ff_0000), &["grain 0", "past the end"]);
}

/// Points grain 0 of the monolithicSparse VMDK at `p` to sector `sector`: the grain
/// directory's sector is at byte 56 of the header; its first entry names grain table 0,
/// whose first entry is grain 0.
fn set_grain_0(p: &Path, sector: u32) {
    let bytes = read(p);
    let gd = usize::try_from(u64::from_le_bytes(bytes[56..64].try_into().unwrap()) * 512).unwrap();
    let gt = u64::from(u32::from_le_bytes(bytes[gd..gd + 4].try_into().unwrap())) * 512;
    patch(p, gt, &sector.to_le_bytes());
}

#[test]
fn vhdx_bat_entry_past_the_end_is_refused() {
    refused_untouched(
        "vhdx",
        "vhdx",
        |p| {
            // BAT entry 0: block 0 fully present (state 6) 1 TiB into the file.
            let (bat, _) = crate::vhdx_common::region(p, &crate::vhdx_common::BAT_GUID_LE);
            patch(p, bat, &((1u64 << 40) | 6).to_le_bytes());
        },
        &["block 0", "past the end"],
    );
}

/// streamOptimized grains are compressed: refused, as qemu-img refuses writes over them,
/// and split VMDKs (several extents: over 2 GiB) by name; the images untouched.
#[test]
fn stream_optimized_and_split_vmdk_are_refused_untouched() {
    for (sub, size, words) in [
        ("streamOptimized", "8M", &["streamOptimized", "Could not write to allocated cluster"][..]),
        ("twoGbMaxExtentSparse", "3G", &["2 extents", "one extent"][..]),
    ] {
        let d = tmp();
        make_sized(d.path(), "vmdk", &["-o", &format!("subformat={sub}")], "base.vmdk", size, size == "8M");
        qemu_img_in(Some(d.path()), &["create", "-q", "-f", "qcow2", "-b", "base.vmdk", "-F", "vmdk", "top.qcow2"])
            .expect_ok();
        qemu_io("qcow2", &d.path().join("top.qcow2"), OVERLAY_WRITES);
        let before = read(&d.path().join("base.vmdk"));
        dc_in(Some(d.path()), &["commit", "top.qcow2"]).expect_code(1).expect_stderr_all(words);
        write_file(&d.path().join("src.raw"), &vec![0x42u8; 8 << 20]);
        dc_in(Some(d.path()), &["convert", "-n", "-f", "raw", "-O", "vmdk", "src.raw", "base.vmdk"])
            .expect_code(1)
            .expect_stderr_all(words);
        assert_eq!(read(&d.path().join("base.vmdk")), before, "{sub}");
        // qemu-img refuses the streamOptimized commit too (exit 1).
        if sub == "streamOptimized" {
            qemu_img_in(Some(d.path()), &["commit", "top.qcow2"]).expect_code(1);
        }
    }
}

/// Places that overlap are refused before anything is written: a write into one would
/// change the other (two VDI map entries naming one block, two VHD BAT entries naming
/// one block, a VMDK grain over the header and tables, a VHDX block over the log, BAT and
/// metadata regions).
#[test]
fn overlapping_places_are_refused() {
    // Entry 1 names data block 0 too.
    refused_untouched("vdi", "vdi", |p| patch(p, 0x204, &0u32.to_le_bytes()), &["data blocks", "overlap"]);
    // BAT entry 2 (data at 5 MiB) names block 0's place.
    refused_untouched(
        "vpc",
        "vhd",
        |p| patch(p, 1544, &read_be_u32(p, 1536).to_be_bytes()),
        &["blocks and metadata", "overlap"],
    );
    refused_untouched("vmdk", "vmdk", |p| set_grain_0(p, 1), &["grain 0", "metadata"]);
    refused_untouched(
        "vhdx",
        "vhdx",
        |p| {
            let (bat, _) = crate::vhdx_common::region(p, &crate::vhdx_common::BAT_GUID_LE);
            patch(p, bat, &((1u64 << 20) | 6).to_le_bytes());
        },
        &["blocks and metadata regions", "overlap"],
    );
}
