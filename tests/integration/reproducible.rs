//! Reproducible output: with `SOURCE_DATE_EPOCH` set, converting the same input twice
//! gives byte-identical files in every writable format and subformat, even a second
//! apart and with a different number of worker threads; without it, the formats that
//! record identifiers get fresh ones. qemu-img judges every output.

use crate::support::*;
use std::path::Path;
use std::time::Duration;

const EPOCH: &str = "1700000000";
/// Seconds from 1970 to 2000-01-01, where VHD timestamps count from.
const VHD_EPOCH: u64 = 946_684_800;

/// Every writable format and subformat: (name, -O, options, qemu's name for the format).
const TARGETS: &[(&str, &str, &[&str], &str)] = &[
    ("raw", "raw", &[], "raw"),
    ("qcow2", "qcow2", &[], "qcow2"),
    ("qcow2-v2", "qcow2", &["-o", "compat=0.10"], "qcow2"),
    ("qcow2-zlib", "qcow2", &["-c"], "qcow2"),
    ("qcow2-zstd", "qcow2", &["-c", "-o", "compression_type=zstd"], "qcow2"),
    ("vmdk-sparse", "vmdk", &[], "vmdk"),
    ("vmdk-stream", "vmdk", &["-o", "subformat=streamOptimized"], "vmdk"),
    ("vmdk-flat", "vmdk", &["-o", "subformat=monolithicFlat"], "vmdk"),
    ("vhd-dynamic", "vpc", &[], "vpc"),
    ("vhd-fixed", "vpc", &["-o", "subformat=fixed"], "vpc"),
    ("vhdx-dynamic", "vhdx", &[], "vhdx"),
    ("vhdx-fixed", "vhdx", &["-o", "subformat=fixed"], "vhdx"),
    ("vdi-dynamic", "vdi", &[], "vdi"),
    ("vdi-static", "vdi", &["-o", "static=on"], "vdi"),
];

/// Formats whose files record an identifier or a time, so two unreproducible runs differ.
const CARRY_IDS: &[&str] = &[
    "vmdk-sparse",
    "vmdk-stream",
    "vmdk-flat",
    "vhd-dynamic",
    "vhd-fixed",
    "vhdx-dynamic",
    "vhdx-fixed",
    "vdi-dynamic",
    "vdi-static",
];

/// A qemu-made source with data in many 2 MiB work items, so the copy engine's workers
/// race to deliver them and a writer that placed data in arrival order would differ.
fn source(dir: &Path, seed: u8) -> std::path::PathBuf {
    let p = dir.join(format!("src{seed}.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "40M"]);
    let cmds: Vec<String> = (0..18u64)
        .map(|i| {
            format!(
                "write -P {} {} {}",
                (i as u8).wrapping_mul(7).wrapping_add(seed),
                i * 2 * MIB + i * 4096,
                300 * KIB
            )
        })
        .collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("qcow2", &p, &refs);
    p
}

/// Converts `src` into `dir/<name>/out.img` for every target (one directory per target,
/// one file name for all, so names recorded inside, such as a flat VMDK's extent, agree).
fn convert_all(src: &Path, dir: &Path, epoch: Option<&str>, threads: &str) {
    for (name, fmt, opts, _) in TARGETS {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("out.img");
        let mut args = vec!["convert", "-j", threads, "-O", fmt];
        args.extend_from_slice(opts);
        let (src_s, out_s) = (s(src), s(&out));
        args.extend_from_slice(&[&src_s, &out_s]);
        dc_epoch(epoch, &args).expect_ok();
    }
}

/// Every file of every target in `a` equals its twin in `b`.
fn differing(a: &Path, b: &Path) -> Vec<String> {
    let mut diff = Vec::new();
    for (name, ..) in TARGETS {
        for entry in std::fs::read_dir(a.join(name)).unwrap() {
            let f = entry.unwrap().file_name();
            if read(&a.join(name).join(&f)) != read(&b.join(name).join(&f)) {
                diff.push(format!("{name}/{}", f.to_string_lossy()));
            }
        }
    }
    diff
}

#[test]
fn same_input_same_bytes_with_source_date_epoch() {
    let dir = tmp();
    let src = source(dir.path(), 1);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    convert_all(&src, &a, Some(EPOCH), "4");
    // A clock read inline would now tick over; a random id would differ anyway.
    std::thread::sleep(Duration::from_millis(1100));
    convert_all(&src, &b, Some(EPOCH), "2");
    let diff = differing(&a, &b);
    assert!(diff.is_empty(), "with SOURCE_DATE_EPOCH these outputs differ between two runs: {diff:?}");

    for (name, _, _, qfmt) in TARGETS {
        let out = a.join(name).join("out.img");
        qemu_compare(&src, "qcow2", &out, qfmt);
        if *qfmt == "qcow2" {
            qemu_check_clean(&out);
        }
    }
    // The fixed clock is the one recorded: a VHD footer's timestamp counts from 2000.
    let vhd = read(&a.join("vhd-fixed").join("out.img"));
    let footer = &vhd[vhd.len() - 512..];
    let stamp = u32::from_be_bytes(footer[24..28].try_into().unwrap());
    assert_eq!(u64::from(stamp), EPOCH.parse::<u64>().unwrap() - VHD_EPOCH);

    // Ids derive from the content too: another disk converted with the same epoch gets
    // another VHD unique id (footer bytes 68..84).
    let other = source(dir.path(), 2);
    let o = dir.path().join("other.vhd");
    dc_epoch(Some(EPOCH), &["convert", "-O", "vpc", "-o", "subformat=fixed", &s(&other), &s(&o)]).expect_ok();
    let ov = read(&o);
    assert_ne!(&ov[ov.len() - 512 + 68..ov.len() - 512 + 84], &footer[68..84], "two disks, one unique id");
}

#[test]
fn without_source_date_epoch_ids_are_fresh() {
    let dir = tmp();
    let src = source(dir.path(), 3);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    convert_all(&src, &a, None, "2");
    convert_all(&src, &b, None, "2");
    let diff = differing(&a, &b);
    for name in CARRY_IDS {
        assert!(diff.iter().any(|d| d.starts_with(&format!("{name}/"))), "{name}: two runs recorded the same ids");
    }
}

#[test]
fn create_is_reproducible_and_a_bad_epoch_is_refused() {
    let dir = tmp();
    for (i, epoch) in [EPOCH, EPOCH].iter().enumerate() {
        let d = dir.path().join(i.to_string());
        std::fs::create_dir(&d).unwrap();
        dc_epoch(Some(epoch), &["create", "-f", "vhdx", &s(&d.join("new.vhdx")), "64M"]).expect_ok();
    }
    assert_eq!(read(&dir.path().join("0/new.vhdx")), read(&dir.path().join("1/new.vhdx")));
    dc_epoch(Some("yesterday"), &["create", "-f", "vdi", &s(&dir.path().join("bad.vdi")), "1M"])
        .expect_code(1)
        .expect_stderr_all(&["source_date_epoch"]);
    assert!(!dir.path().join("bad.vdi").exists());
}
