//! measure: must equal `qemu-img measure` exactly (human and JSON); map on simple images.

use crate::support::*;
use std::path::Path;

fn parse_human(text: &str) -> (u64, u64) {
    let get = |key: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key:?} line in:\n{text}"));
        line[key.len()..].trim().parse().unwrap_or_else(|_| panic!("bad number in {line:?}"))
    };
    (get("required size:"), get("fully allocated size:"))
}

/// Runs both tools with the same arguments (after `measure`), human and JSON.
fn assert_measure_equal(args: &[&str]) {
    let mut q_args = vec!["measure"];
    q_args.extend_from_slice(args);
    let mut d_args = q_args.clone();
    let q = qemu_img(&q_args);
    let ours = dc_ok(&d_args);
    assert_eq!(
        parse_human(&ours.stdout_str()),
        parse_human(&q.stdout_str()),
        "human measure differs for {args:?}\nours:\n{}\nqemu:\n{}",
        ours.stdout_str(),
        q.stdout_str()
    );
    q_args.push("--output=json");
    d_args.extend_from_slice(&["--output", "json"]);
    let qj = qemu_img(&q_args).json();
    let dj = dc_ok(&d_args).json();
    assert_eq!(dj["required"], qj["required"], "JSON required differs for {args:?}\nours {dj}\nqemu {qj}");
    assert_eq!(
        dj["fully-allocated"], qj["fully-allocated"],
        "JSON fully-allocated differs for {args:?}\nours {dj}\nqemu {qj}"
    );
}

#[test]
fn measure_size_only() {
    for size in ["100G", "1M", "5242880", "1T"] {
        assert_measure_equal(&["-O", "qcow2", "--size", size]);
    }
    assert_measure_equal(&["-O", "qcow2", "-o", "cluster_size=2M", "--size", "100G"]);
    assert_measure_equal(&["-O", "qcow2", "-o", "cluster_size=512", "--size", "1G"]);
    assert_measure_equal(&["-O", "qcow2", "-o", "compat=0.10", "--size", "100G"]);
    assert_measure_equal(&["-O", "raw", "--size", "100G"]);
}

fn measure_sources(dir: &Path) -> Vec<(String, &'static str)> {
    let raw = dir.join("m.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "20M"]);
    qemu_io("raw", &raw, &["write -P 1 0 1M", "write -P 2 5M 100K", "write -P 3 19M 1M"]);
    let q = dir.join("m.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&q), "20M"]);
    qemu_io("qcow2", &q, &["write -P 1 4K 1M", "write -z 3M 1M", "write -P 2 10M 64K"]);
    let empty = dir.join("empty.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&empty), "1G"]);
    vec![(s(&raw), "raw"), (s(&q), "qcow2"), (s(&empty), "qcow2")]
}

#[test]
fn measure_sources_to_qcow2() {
    let d = tmp();
    for (src, fmt) in measure_sources(d.path()) {
        assert_measure_equal(&["-O", "qcow2", "-f", fmt, &src]);
        assert_measure_equal(&["-O", "qcow2", "-o", "cluster_size=512", "-f", fmt, &src]);
        assert_measure_equal(&["-O", "qcow2", "-o", "cluster_size=2M", "-f", fmt, &src]);
    }
}

#[test]
fn measure_sources_to_raw() {
    let d = tmp();
    for (src, fmt) in measure_sources(d.path()) {
        assert_measure_equal(&["-O", "raw", "-f", fmt, &src]);
    }
}

/// The measured size really is enough: diskcast's own output fits in "required".
#[test]
fn measure_bounds_actual_output() {
    let d = tmp();
    for (src, fmt) in measure_sources(d.path()) {
        let m = dc_ok(&["measure", "-O", "qcow2", "-f", fmt, "--output", "json", &src]).json();
        let out = d.path().join("out.qcow2");
        dc_ok(&["convert", "-f", fmt, "-O", "qcow2", &src, &s(&out)]);
        let required = m["required"].as_u64().expect("required");
        assert!(file_len(&out) <= required, "{src}: output {} bytes > measured {required}", file_len(&out));
        std::fs::remove_file(&out).expect("rm");
    }
}

#[test]
fn measure_bad_arguments() {
    dc(&["measure", "-O", "qcow2", "--size", "12Q"]).expect_code(1).expect_stderr_any(&["12Q"]);
    dc(&["measure", "-O", "qcow2", "-o", "bogus=1", "--size", "1G"]).expect_code(1).expect_stderr_any(&["bogus"]);
    dc(&["measure", "-O", "nosuch", "--size", "1G"]).expect_code(1).expect_stderr_any(&["nosuch"]);
}

#[test]
fn map_of_zero_qcow2_is_one_unallocated_range() {
    let d = tmp();
    let p = d.path().join("z.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "1T"]);
    let r = dc_ok(&["map", "--output", "json", &s(&p)]);
    assert!(r.elapsed.as_secs() < 20, "map of an empty 1 TiB image took {:?}", r.elapsed);
    let e = map_entries(&r.json());
    assert_map_covers(&e, 1 << 40);
    let q = map_entries(&qemu_img(&["map", "--output=json", &s(&p)]).json());
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(map_at(&e, 0), map_at(&q, 0), "ours {e:?}\nqemu {q:?}");
}
