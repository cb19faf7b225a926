//! info: diskcast's JSON agrees with `qemu-img info --output=json`.

use crate::support::*;
use std::path::Path;

fn assert_info_matches_qemu(p: &Path, compat: &str, cluster: u64, compression: &str) {
    let ours = dc_ok(&["info", "--output", "json", &s(p)]).json();
    let q = qemu_info(p);
    assert_eq!(ours["format"], "qcow2", "{ours}");
    assert_eq!(ours["virtual-size"], q["virtual-size"], "ours {ours}\nqemu {q}");
    assert_eq!(ours["cluster-size"], q["cluster-size"], "ours {ours}\nqemu {q}");
    assert_eq!(ours["cluster-size"].as_u64(), Some(cluster));
    assert_eq!(q["format-specific"]["data"]["compat"], compat, "qemu: {q}");
    assert_eq!(ours["compression-type"], compression, "ours {ours}");
    assert!(ours["actual-size"].as_u64().is_some_and(|n| n > 0), "{ours}");
    assert!(
        ours["filename"].as_str().is_some_and(|f| f.ends_with(p.file_name().and_then(|n| n.to_str()).unwrap_or("?")))
    );
    let spec = ours["format-specific"].to_string();
    assert!(spec.contains(compat), "format-specific should show compat {compat}: {ours}");
    // Human output carries the same facts.
    let h = dc_ok(&["info", &s(p)]).stdout_str();
    assert!(h.contains("file format: qcow2"), "{h}");
    let vs = q["virtual-size"].as_u64().unwrap_or(0);
    assert!(h.contains(&format!("({vs} bytes)")), "{h}");
    assert!(h.contains(&format!("cluster_size: {cluster}")), "{h}");
}

#[test]
fn info_qcow2_variants_match_qemu() {
    let d = tmp();
    for (name, opts, compat, cluster, ctype) in [
        ("v3", "cluster_size=65536", "1.1", 65536u64, "zlib"),
        ("v2", "compat=0.10", "0.10", 65536, "zlib"),
        ("c512", "cluster_size=512", "1.1", 512, "zlib"),
        ("c2m", "cluster_size=2M", "1.1", 2 * MIB, "zlib"),
        ("zstd", "compression_type=zstd", "1.1", 65536, "zstd"),
    ] {
        let p = d.path().join(format!("{name}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &s(&p), "1234567168"]);
        assert_info_matches_qemu(&p, compat, cluster, ctype);
    }
}

#[test]
fn info_raw_matches_qemu() {
    let d = tmp();
    let p = d.path().join("disk.img");
    write_index_pattern(&p, 3 * MIB + 512, 0);
    let ours = dc_ok(&["info", "-f", "raw", "--output", "json", &s(&p)]).json();
    let q = qemu_info_fmt(&p, "raw");
    assert_eq!(ours["format"], "raw");
    assert_eq!(ours["virtual-size"], q["virtual-size"], "ours {ours}\nqemu {q}");
    assert_eq!(ours["actual-size"], q["actual-size"], "ours {ours}\nqemu {q}");
    assert!(ours.get("backing-filename").is_none());
    assert!(ours.get("backing-chain").is_none(), "chain shown without --backing-chain: {ours}");
    // An odd-sized raw file: qemu rounds up to whole sectors; diskcast reports the exact
    // length (and qemu's rounded size is the next multiple of 512).
    let odd = d.path().join("odd.img");
    write_index_pattern(&odd, 3 * MIB + 5, 0);
    let v = dc_ok(&["info", "-f", "raw", "--output", "json", &s(&odd)]).json();
    assert_eq!(v["virtual-size"].as_u64(), Some(3 * MIB + 5), "{v}");
    assert_eq!(qemu_info_fmt(&odd, "raw")["virtual-size"].as_u64(), Some(3 * MIB + 512));
    // A blank (all-zero) file probes as raw without -f.
    let blank = d.path().join("blank.img");
    qemu_img(&["create", "-q", "-f", "raw", &s(&blank), "10M"]);
    let v = dc_ok(&["info", "--output", "json", &s(&blank)]).json();
    assert_eq!(v["format"], "raw");
    assert_eq!(v["virtual-size"].as_u64(), Some(10 * MIB));
}

#[test]
fn info_missing_file_is_error() {
    let d = tmp();
    let p = d.path().join("nope.qcow2");
    dc(&["info", &s(&p)]).expect_code(1).expect_diskcast_error().expect_stderr_any(&["nope.qcow2"]);
}

#[test]
fn info_of_diskcast_made_qcow2_matches_qemu() {
    let d = tmp();
    let p = d.path().join("made.qcow2");
    dc_ok(&["create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", &s(&p), "100M"]);
    assert_info_matches_qemu(&p, "0.10", 4096, "zlib");
}
