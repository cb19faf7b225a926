//! `--output json` of `info`, `check`, `map` and `measure` follows qemu-img's schema, so a
//! script written for `qemu-img ... --output=json` works unchanged on diskcast's output.
//! For qemu-made images of every format both tools read, every key qemu prints must be in
//! ours, with the same JSON type and the same value; extra keys of ours are allowed.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where `ours` lacks a key of `theirs`, or has another type or value there. Arrays must
/// have the same length and are compared element by element. `values` false compares
/// keys and types only.
fn mismatches(theirs: &Value, ours: &Value, at: &str, values: bool, out: &mut Vec<String>) {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, tv) in t {
                match o.get(k) {
                    Some(ov) => mismatches(tv, ov, &format!("{at}.{k}"), values, out),
                    None => out.push(format!("{at}.{k}: missing (qemu: {tv})")),
                }
            }
        }
        (Value::Array(t), Value::Array(o)) => {
            if t.len() != o.len() {
                out.push(format!("{at}: {} elements, qemu has {}", o.len(), t.len()));
            }
            for (i, (tv, ov)) in t.iter().zip(o).enumerate() {
                mismatches(tv, ov, &format!("{at}[{i}]"), values, out);
            }
        }
        (t, o) => {
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(n) if n.is_f64() => "float",
                Value::Number(_) => "integer",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if kind(t) != kind(o) {
                out.push(format!("{at}: {} {o}, qemu has {} {t}", kind(o), kind(t)));
            } else if values && t != o {
                out.push(format!("{at}: {o}, qemu has {t}"));
            }
        }
    }
}

fn assert_superset(what: &str, theirs: &Value, ours: &Value, values: bool) {
    let mut out = Vec::new();
    mismatches(theirs, ours, "", values, &mut out);
    assert!(
        out.is_empty(),
        "{what}: diskcast's JSON differs from qemu-img's:\n  {}\nqemu: {theirs}\nours: {ours}",
        out.join("\n  ")
    );
}

/// One qemu-made image: file, `-f` name, and whether qemu's `map` means what ours means
/// there (see `map_matches_qemu`).
struct Image {
    path: PathBuf,
    fmt: &'static str,
    map_values: bool,
}

/// qemu-made images of every format both tools read, with data, zeros and holes.
fn images(dir: &Path) -> Vec<Image> {
    let raw = dir.join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "20M"]);
    qemu_io("raw", &raw, &["write -P 0x11 1M 1M", "write -P 0x22 5M 64k", "write -P 0 8M 64k", "write -P 0x33 19M 1M"]);
    let mut v = vec![Image { path: raw.clone(), fmt: "raw", map_values: true }];
    let conv = |name: &str, fmt: &'static str, opts: &[&str], map_values: bool| {
        let p = dir.join(name);
        let mut args = vec!["convert", "-q", "-O", fmt];
        args.extend_from_slice(opts);
        let (r, o) = (s(&raw), s(&p));
        args.extend_from_slice(&[&r, &o]);
        qemu_img(&args);
        Image { path: p, fmt, map_values }
    };
    v.push(conv("v3.qcow2", "qcow2", &[], true));
    v.push(conv("v2.qcow2", "qcow2", &["-o", "compat=0.10"], true));
    v.push(conv("z.qcow2", "qcow2", &["-c", "-o", "compression_type=zstd"], true));
    v.push(conv("sparse.vmdk", "vmdk", &[], true));
    v.push(conv("stream.vmdk", "vmdk", &["-o", "subformat=streamOptimized"], true));
    v.push(conv("flat.vmdk", "vmdk", &["-o", "subformat=monolithicFlat"], false));
    v.push(conv("split.vmdk", "vmdk", &["-o", "subformat=twoGbMaxExtentSparse"], true));
    v.push(conv("dyn.vhd", "vpc", &[], false));
    v.push(conv("fixed.vhd", "vpc", &["-o", "subformat=fixed"], false));
    v.push(conv("dyn.vhdx", "vhdx", &[], false));
    v.push(conv("fixed.vhdx", "vhdx", &["-o", "subformat=fixed"], false));
    v.push(conv("dyn.vdi", "vdi", &[], false));
    v.push(conv("static.vdi", "vdi", &["-o", "static=on"], false));
    // A qcow2 over a qcow2 with persistent bitmaps, partly overwritten.
    let base = conv("base.qcow2", "qcow2", &[], true);
    qemu_img(&["bitmap", "--add", &s(&base.path), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "512", &s(&base.path), "b1"]);
    qemu_io("qcow2", &base.path, &["write -P 0x44 2M 64k"]);
    let top = dir.join("top.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", &s(&top)]);
    qemu_io("qcow2", &top, &["write -P 0x55 1536K 1M", "write -z 19M 64k"]);
    v.push(base);
    v.push(Image { path: top, fmt: "qcow2", map_values: true });
    v
}

#[test]
fn info_matches_qemu() {
    let d = tmp();
    for img in images(d.path()) {
        let p = s(&img.path);
        let what = format!("info {p}");
        let theirs = qemu_img(&["info", "-f", img.fmt, "--output=json", &p]).json();
        let ours = dc_ok(&["info", "-f", img.fmt, "--output", "json", &p]).json();
        assert_superset(&what, &theirs, &ours, true);
    }
    // --backing-chain: a top-level array, one object per image.
    let top = s(&d.path().join("top.qcow2"));
    let theirs = qemu_img(&["info", "--backing-chain", "--output=json", &top]).json();
    let ours = dc_ok(&["info", "--backing-chain", "--output", "json", &top]).json();
    assert_superset("info --backing-chain", &theirs, &ours, true);
}

#[test]
fn check_matches_qemu() {
    let d = tmp();
    for img in images(d.path()) {
        let p = s(&img.path);
        let q = qemu_img_status(&["check", "-f", img.fmt, "--output=json", &p]);
        let ours = dc(&["check", "-f", img.fmt, "--output", "json", &p]);
        // Formats qemu has no check for (raw, vpc) exit 63 there; diskcast checks VHD.
        if q.code == Some(63) {
            assert!(img.fmt == "raw" && ours.code == Some(63) || img.fmt == "vpc", "{}", ours.describe());
            continue;
        }
        assert_eq!(ours.code, q.code, "check {p}: exit status\n{}\n{}", ours.describe(), q.describe());
        assert_superset(&format!("check {p}"), &q.json(), &ours.json(), true);
    }
}

#[test]
fn map_matches_qemu() {
    let d = tmp();
    for img in images(d.path()) {
        let p = s(&img.path);
        let theirs = qemu_img(&["map", "-f", img.fmt, "--output=json", &p]).json();
        let ours = dc_ok(&["map", "-f", img.fmt, "--output", "json", &p]).json();
        // Every entry has qemu's keys and types. Values agree where qemu's block status
        // means what ours does (raw, qcow2, sparse VMDK). qemu's VHDX driver has no block
        // status (all data), its VDI and VHD ones call unallocated blocks zero at depth 0,
        // and for fixed VHD and flat VMDK it calls holes data: there ours tells more.
        if img.map_values {
            assert_superset(&format!("map {p}"), &theirs, &ours, true);
        } else {
            let first = |v: &Value| v.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
            for entry in ours.as_array().unwrap() {
                let mut t = first(&theirs);
                // `offset` appears only where the data has a place in a file.
                if entry.get("offset").is_none() {
                    t.as_object_mut().unwrap().remove("offset");
                } else if t.get("offset").is_none() {
                    t.as_object_mut().unwrap().insert("offset".into(), 0.into());
                }
                assert_superset(&format!("map {p} entry"), &t, entry, false);
            }
        }
    }
}

#[test]
fn measure_matches_qemu() {
    let d = tmp();
    for img in images(d.path()) {
        let p = s(&img.path);
        for (fmt, opts) in [("qcow2", ""), ("qcow2", "compat=0.10"), ("raw", "")] {
            let mut args = vec!["measure", "-f", img.fmt, "-O", fmt];
            if !opts.is_empty() {
                args.extend_from_slice(&["-o", opts]);
            }
            args.extend_from_slice(&["--output=json", &p]);
            let theirs = qemu_img(&args).json();
            *args.iter_mut().find(|a| **a == "--output=json").unwrap() = "--output";
            let pos = args.iter().position(|a| *a == "--output").unwrap();
            args.insert(pos + 1, "json");
            let ours = dc_ok(&args).json();
            // qemu's VHDX driver reports no allocation, so qemu measures every VHDX as if
            // fully allocated; ours counts the blocks that hold data. Same keys and types.
            let values = img.fmt != "vhdx";
            assert_superset(&format!("measure -O {fmt} {opts} {p}"), &theirs, &ours, values);
        }
    }
    let theirs = qemu_img(&["measure", "-O", "qcow2", "--size", "3G", "--output=json"]).json();
    let ours = dc_ok(&["measure", "-O", "qcow2", "--size", "3G", "--output", "json"]).json();
    assert_superset("measure --size", &theirs, &ours, true);
}
