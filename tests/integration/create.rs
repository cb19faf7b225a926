//! create: images qemu accepts, with the sizes and options asked for.

use crate::support::*;

#[test]
fn create_qcow2_1g_passes_qemu_check() {
    let d = tmp();
    let p = d.path().join("x.qcow2");
    dc_ok(&["create", "-f", "qcow2", &s(&p), "1G"]);
    qemu_check_clean(&p);
    let info = qemu_info(&p);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"].as_u64(), Some(GIB), "{info}");
    assert_eq!(info["cluster-size"].as_u64(), Some(65536), "{info}");
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
    assert!(file_len(&p) < MIB, "empty 1G qcow2 is {} bytes", file_len(&p));
    // qemu can use it: write, read back, still clean.
    qemu_io("qcow2", &p, &["write -P 0x42 100M 64K", "read -P 0x42 100M 64K", "read -P 0 0 1M"]);
    qemu_check_clean(&p);
    // diskcast reads what qemu wrote.
    let raw = d.path().join("x.raw");
    dc_ok(&["convert", "-O", "raw", &s(&p), &s(&raw)]);
    qemu_compare(&p, "qcow2", &raw, "raw");
}

#[test]
fn create_qcow2_options() {
    let d = tmp();
    for (opts, compat, cluster) in [
        ("compat=0.10", "0.10", 65536u64),
        ("cluster_size=2M", "1.1", 2 * MIB),
        ("cluster_size=512", "1.1", 512),
        ("compat=0.10,cluster_size=4096", "0.10", 4096),
        ("compression_type=zstd", "1.1", 65536),
    ] {
        let p = d.path().join(format!("{}.qcow2", opts.replace([',', '=', '.'], "_")));
        dc_ok(&["create", "-f", "qcow2", "-o", opts, &s(&p), "3G"]);
        qemu_check_clean(&p);
        let info = qemu_info(&p);
        assert_eq!(info["virtual-size"].as_u64(), Some(3 * GIB), "{opts}: {info}");
        assert_eq!(info["cluster-size"].as_u64(), Some(cluster), "{opts}: {info}");
        assert_eq!(info["format-specific"]["data"]["compat"], compat, "{opts}: {info}");
        if opts.contains("zstd") {
            assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd", "{info}");
        }
        qemu_io("qcow2", &p, &["write -P 7 1G 128K", "read -P 7 1G 128K"]);
        qemu_check_clean(&p);
    }
}

#[test]
fn create_size_suffixes() {
    let d = tmp();
    for (fmt, size, bytes) in [
        ("qcow2", "512", 512u64),
        ("qcow2", "64K", 64 * KIB),
        ("qcow2", "10M", 10 * MIB),
        ("qcow2", "2G", 2 * GIB),
        ("qcow2", "1T", 1 << 40),
        ("qcow2", "1.5G", 3 * GIB / 2),
        ("raw", "1000", 1000),
        ("raw", "64K", 64 * KIB),
        ("raw", "10M", 10 * MIB),
        ("raw", "2G", 2 * GIB),
        ("raw", "1T", 1 << 40),
    ] {
        let p = d.path().join(format!("s-{size}.{fmt}"));
        dc_ok(&["create", "-f", fmt, &s(&p), size]);
        let info = qemu_info_fmt(&p, fmt);
        // qemu reports raw sizes in whole 512-byte sectors; the file length is exact.
        assert_eq!(info["virtual-size"].as_u64(), Some(bytes.next_multiple_of(512)), "{fmt} {size}: {info}");
        if fmt == "qcow2" {
            qemu_check_clean(&p);
        } else {
            assert_eq!(file_len(&p), bytes);
            assert!(allocated(&p) < MIB, "raw create allocated {} bytes", allocated(&p));
        }
        std::fs::remove_file(&p).expect("rm");
    }
}

#[test]
fn create_raw_default_format() {
    let d = tmp();
    let p = d.path().join("plain.img");
    dc_ok(&["create", &s(&p), "4M"]);
    assert_eq!(file_len(&p), 4 * MIB);
    assert_eq!(qemu_info(&p)["format"], "raw");
}

#[test]
fn create_bad_size_is_exit_1() {
    let d = tmp();
    for (fmt, bad) in [("raw", "12Q"), ("raw", "abc"), ("qcow2", "1.3b"), ("qcow2", "99999999999999999999")] {
        let p = d.path().join(format!("bad.{fmt}"));
        dc(&["create", "-f", fmt, &s(&p), bad])
            .expect_code(1)
            .expect_diskcast_error()
            .expect_stderr_all(&[bad, "size"]);
        assert_no_output(&p);
    }
    // No size and no backing file.
    let p = d.path().join("nosize.qcow2");
    dc(&["create", "-f", "qcow2", &s(&p)]).expect_code(1).expect_stderr_any(&["size"]);
    assert_no_output(&p);
}

#[test]
fn create_qcow2_bad_options() {
    let d = tmp();
    let p = d.path().join("bad.qcow2");
    for (opt, word) in [
        ("cluster_size=3000", "cluster"),
        ("cluster_size=256", "cluster"),
        ("cluster_size=4M", "cluster"),
        ("compat=9.9", "compat"),
        ("compression_type=lzma", "compression"),
        ("nonsense=1", "nonsense"),
    ] {
        dc(&["create", "-f", "qcow2", "-o", opt, &s(&p), "1G"]).expect_code(1).expect_stderr_any(&[word]);
        assert_no_output(&p);
    }
    // qemu itself refuses these too.
    assert_ne!(
        qemu_img_status(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=3000", &s(&p), "1G"]).code,
        Some(0)
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn create_over_existing_file_replaces_it() {
    // Creating over an existing file replaces it atomically (like qemu-img create), and the
    // result passes qemu's check.
    let d = tmp();
    let p = d.path().join("again.qcow2");
    write_file(&p, b"old contents");
    dc_ok(&["create", "-f", "qcow2", &s(&p), "16M"]);
    qemu_check_clean(&p);
    assert_eq!(qemu_info(&p)["virtual-size"].as_u64(), Some(16 * MIB));
    assert!(stray_temps(d.path()).is_empty());
}

/// The "Formatting 'FILE', fmt=..." line is qemu-img create's, byte for byte (options in
/// qemu's order per format, defaults it prints, sizes as byte counts, -b/-F); `-q` prints
/// nothing, as qemu-img.
#[test]
fn create_prints_qemu_img_formatting_line() {
    let d = tmp();
    let (ours, theirs) = (d.path().join("ours"), d.path().join("theirs"));
    for dir in [&ours, &theirs] {
        std::fs::create_dir(dir).unwrap();
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]).expect_ok();
    }
    let cases: &[&[&str]] = &[
        &["-f", "raw", "x.raw", "1536"],
        &["-f", "raw", "-o", "preallocation=falloc", "x.raw", "1M"],
        &["-f", "qcow2", "x.qcow2", "1G"],
        &["-f", "qcow2", "-o", "compat=1.1,refcount_bits=8,compression_type=zstd,cluster_size=128k", "x.qcow2", "1M"],
        &["-f", "qcow2", "-o", "compat=0.10,preallocation=metadata", "x.qcow2", "10M"],
        &["-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "x.qcow2"],
        &["-f", "vmdk", "-o", "subformat=monolithicFlat,adapter_type=lsilogic", "x.vmdk", "1M"],
        &["-f", "vpc", "-o", "subformat=dynamic,force_size=on", "x.vpc", "1M"],
        &["-f", "vhdx", "-o", "subformat=fixed,block_size=8M,log_size=2M", "x.vhdx", "8M"],
        &["-f", "vdi", "-o", "static=on", "x.vdi", "1M"],
    ];
    for case in cases {
        for quiet in [false, true] {
            let mut args = vec!["create"];
            if quiet {
                args.push("-q");
            }
            args.extend(*case);
            let q = qemu_img_in(Some(&theirs), &args).expect_ok();
            let r = dc_in(Some(&ours), &args).expect_ok();
            assert_eq!(r.stdout_str(), q.stdout_str(), "{args:?}");
            assert_eq!(r.stdout_str().is_empty(), quiet, "{args:?}");
            for dir in [&ours, &theirs] {
                for ext in ["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi"] {
                    let _ = std::fs::remove_file(dir.join(format!("x.{ext}")));
                }
            }
        }
    }
}
