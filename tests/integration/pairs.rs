//! Every ordered pair of block formats: raw, qcow2, VMDK (monolithicSparse,
//! streamOptimized, monolithicFlat), VHD (fixed, dynamic), VHDX (dynamic, fixed) and VDI
//! (dynamic, static). Sources are made by qemu-img/qemu-io; each diskcast output is judged
//! by `qemu-img compare`, `qemu-img check` (where qemu has a check for the format) and
//! `qemu-img info`, and measured against what `qemu-img convert` makes from the same
//! source with the same options.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Not a multiple of any format's block (64 KiB grains, 1/2/8 MiB blocks).
const SIZE: u64 = 37 * MIB + 1536;

/// Data at odd offsets and across block boundaries, zero ranges over data and over holes,
/// written zeros, and data in the last bytes of the disk.
fn fill(fmt: &str, p: &Path) {
    let tail = SIZE - 777;
    let cmds = [
        "write -P 0x11 1000 3000".to_string(),
        "write -P 0x22 65535 70001".to_string(),
        "write -P 0x33 1M 3M".to_string(),
        "write -z 1536K 128K".to_string(),
        "write -P 0 5M 64K".to_string(),
        "write -z 9M 64K".to_string(),
        "write -P 0x44 16777215 3".to_string(), // straddles 16 MiB
        "write -P 0x66 20M 2M".to_string(),
        format!("write -P 0x55 {tail} 777"),
    ];
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(fmt, p, &refs);
}

/// A format variant: how qemu-img makes it, how diskcast is asked for it.
struct Kind {
    name: &'static str,
    /// qemu's driver name (`vpc` for VHD).
    qemu_fmt: &'static str,
    /// `-o` for qemu-img create/convert.
    qemu_opts: &'static str,
    /// diskcast `-O` and `-o`.
    dc_fmt: &'static str,
    dc_opts: &'static str,
    /// qemu-img can write it with qemu-io after create (streamOptimized it cannot).
    qemu_io_writable: bool,
    /// qemu-img check supports the format.
    checkable: bool,
    /// What `qemu-img info` says under format-specific data `create-type` (VMDK).
    create_type: Option<&'static str>,
}

const KINDS: &[Kind] = &[
    Kind {
        name: "raw",
        qemu_fmt: "raw",
        qemu_opts: "",
        dc_fmt: "raw",
        dc_opts: "",
        qemu_io_writable: true,
        checkable: false,
        create_type: None,
    },
    Kind {
        name: "qcow2",
        qemu_fmt: "qcow2",
        qemu_opts: "",
        dc_fmt: "qcow2",
        dc_opts: "",
        qemu_io_writable: true,
        checkable: true,
        create_type: None,
    },
    Kind {
        name: "vmdk-sparse",
        qemu_fmt: "vmdk",
        qemu_opts: "",
        dc_fmt: "vmdk",
        dc_opts: "",
        qemu_io_writable: true,
        checkable: true,
        create_type: Some("monolithicSparse"),
    },
    Kind {
        name: "vmdk-stream",
        qemu_fmt: "vmdk",
        qemu_opts: "subformat=streamOptimized",
        dc_fmt: "vmdk",
        dc_opts: "subformat=streamOptimized",
        qemu_io_writable: false,
        checkable: true,
        create_type: Some("streamOptimized"),
    },
    Kind {
        name: "vmdk-flat",
        qemu_fmt: "vmdk",
        qemu_opts: "subformat=monolithicFlat",
        dc_fmt: "vmdk",
        dc_opts: "subformat=monolithicFlat",
        qemu_io_writable: true,
        checkable: true,
        create_type: Some("monolithicFlat"),
    },
    Kind {
        name: "vhd-fixed",
        qemu_fmt: "vpc",
        qemu_opts: "subformat=fixed,force_size=on",
        dc_fmt: "vhd",
        dc_opts: "subformat=fixed,force_size=on",
        qemu_io_writable: true,
        checkable: false,
        create_type: None,
    },
    Kind {
        name: "vhd-dynamic",
        qemu_fmt: "vpc",
        qemu_opts: "force_size=on",
        dc_fmt: "vhd",
        dc_opts: "force_size=on",
        qemu_io_writable: true,
        checkable: false,
        create_type: None,
    },
    Kind {
        name: "vhdx",
        qemu_fmt: "vhdx",
        qemu_opts: "",
        dc_fmt: "vhdx",
        dc_opts: "",
        qemu_io_writable: true,
        checkable: true,
        create_type: None,
    },
    Kind {
        name: "vhdx-fixed",
        qemu_fmt: "vhdx",
        qemu_opts: "subformat=fixed",
        dc_fmt: "vhdx",
        dc_opts: "subformat=fixed",
        qemu_io_writable: true,
        checkable: true,
        create_type: None,
    },
    Kind {
        name: "vdi",
        qemu_fmt: "vdi",
        qemu_opts: "",
        dc_fmt: "vdi",
        dc_opts: "",
        qemu_io_writable: true,
        checkable: true,
        create_type: None,
    },
    Kind {
        name: "vdi-static",
        qemu_fmt: "vdi",
        qemu_opts: "static=on",
        dc_fmt: "vdi",
        dc_opts: "static=on",
        qemu_io_writable: true,
        checkable: true,
        create_type: None,
    },
];

fn kind(name: &str) -> &'static Kind {
    KINDS.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("no kind {name}"))
}

fn with_opts<'a>(mut args: Vec<&'a str>, opts: &'a str) -> Vec<&'a str> {
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args
}

/// A qemu-made source of kind `k` holding the pattern.
fn make_source(dir: &Path, k: &Kind) -> PathBuf {
    let p = dir.join(format!("src-{}.img", k.name));
    let size = SIZE.to_string();
    if k.qemu_io_writable {
        let args = with_opts(vec!["create", "-q", "-f", k.qemu_fmt], k.qemu_opts);
        let (ps, ss) = (s(&p), size.clone());
        let mut args = args;
        args.extend([ps.as_str(), ss.as_str()]);
        qemu_img(&args);
        fill(k.qemu_fmt, &p);
    } else {
        let raw = make_source(dir, kind("raw"));
        let mut args = with_opts(vec!["convert", "-f", "raw", "-O", k.qemu_fmt], k.qemu_opts);
        let (rs, ps) = (s(&raw), s(&p));
        args.extend([rs.as_str(), ps.as_str()]);
        qemu_img(&args);
    }
    let info = qemu_info_fmt(&p, k.qemu_fmt);
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE), "qemu-made source {}: {info}", k.name);
    p
}

/// Bytes on disk of an image, counting a VMDK flat extent beside its descriptor.
fn disk_bytes(p: &Path) -> u64 {
    let mut n = allocated(p);
    let flat = p.with_file_name(format!("{}-flat.vmdk", p.file_stem().unwrap().to_string_lossy()));
    if flat.exists() {
        n += allocated(&flat);
    }
    n
}

fn remove_image(p: &Path) {
    let _ = std::fs::remove_file(p);
    let flat = p.with_file_name(format!("{}-flat.vmdk", p.file_stem().unwrap().to_string_lossy()));
    let _ = std::fs::remove_file(flat);
}

/// What qemu-img convert makes of the raw source for target `t`: (virtual size, bytes on disk).
fn qemu_reference(dir: &Path, raw: &Path, t: &Kind) -> (u64, u64) {
    let out = dir.join(format!("ref-{}.vmdk", t.name));
    let mut args = with_opts(vec!["convert", "-f", "raw", "-O", t.qemu_fmt], t.qemu_opts);
    let (rs, os) = (s(raw), s(&out));
    args.extend([rs.as_str(), os.as_str()]);
    qemu_img(&args);
    let size = qemu_info_fmt(&out, t.qemu_fmt)["virtual-size"].as_u64().unwrap();
    let bytes = disk_bytes(&out);
    remove_image(&out);
    (size, bytes)
}

fn judge(dir: &Path, src: &Path, s_kind: &Kind, t: &Kind, reference: (u64, u64)) {
    // The `.vmdk` name keeps monolithicFlat's extent name `<stem>-flat.vmdk` predictable.
    let out = dir.join(format!("out-{}-to-{}.vmdk", s_kind.name, t.name));
    let mut args = vec!["convert", "-f", s_kind.dc_fmt, "-O", t.dc_fmt];
    if !t.dc_opts.is_empty() {
        args.extend(["-o", t.dc_opts]);
    }
    let (ss, os) = (s(src), s(&out));
    args.extend([ss.as_str(), os.as_str()]);
    dc_ok(&args);

    qemu_compare(src, s_kind.qemu_fmt, &out, t.qemu_fmt);
    let info = qemu_info_fmt(&out, t.qemu_fmt);
    assert_eq!(info["virtual-size"].as_u64(), Some(reference.0), "virtual size differs from qemu-img's: {info}");
    if let Some(ct) = t.create_type {
        assert_eq!(info["format-specific"]["data"]["create-type"], ct, "{info}");
    }
    if t.checkable {
        let r = qemu_img_status(&["check", "-f", t.qemu_fmt, "--output=json", &s(&out)]);
        assert_eq!(r.code, Some(0), "qemu-img check found problems\n{}", r.describe());
        let v = r.json();
        for key in ["corruptions", "leaks", "check-errors"] {
            assert_eq!(v.get(key).and_then(Value::as_u64).unwrap_or(0), 0, "{key}: {v}");
        }
    }
    // Holes and zeros are not stored: no more on disk than qemu-img's output, plus 5% and
    // a little metadata slack.
    let (ours, theirs) = (disk_bytes(&out), reference.1);
    assert!(
        ours <= theirs + theirs / 20 + 512 * KIB,
        "{} bytes on disk, qemu-img convert makes {theirs}: zeros or holes stored as data?",
        ours
    );
    // Our reader agrees with our writer, too.
    dc(&["compare", "-f", s_kind.dc_fmt, "-F", t.dc_fmt, &s(src), &s(&out)]).expect_ok();
    let ours_info = dc_ok(&["info", "-f", t.dc_fmt, "--output", "json", &s(&out)]).json();
    assert_eq!(ours_info["virtual-size"].as_u64(), Some(reference.0), "{ours_info}");
    remove_image(&out);
}

/// Converts the qemu-made source of kind `source` to every kind and judges each output.
fn from(source: &str) {
    let d = tmp();
    let s_kind = kind(source);
    let src = make_source(d.path(), s_kind);
    let raw = make_source(d.path(), kind("raw"));
    let mut failures = Vec::new();
    for t in KINDS {
        let reference = qemu_reference(d.path(), &raw, t);
        let r = std::panic::catch_unwind(|| judge(d.path(), &src, s_kind, t, reference));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{source} -> {}] {msg}", t.name));
        }
    }
    assert!(failures.is_empty(), "{} conversions failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn from_raw() {
    from("raw");
}
#[test]
fn from_qcow2() {
    from("qcow2");
}
#[test]
fn from_vmdk_sparse() {
    from("vmdk-sparse");
}
#[test]
fn from_vmdk_stream() {
    from("vmdk-stream");
}
#[test]
fn from_vmdk_flat() {
    from("vmdk-flat");
}
#[test]
fn from_vhd_fixed() {
    from("vhd-fixed");
}
#[test]
fn from_vhd_dynamic() {
    from("vhd-dynamic");
}
#[test]
fn from_vhdx() {
    from("vhdx");
}
#[test]
fn from_vhdx_fixed() {
    from("vhdx-fixed");
}
#[test]
fn from_vdi() {
    from("vdi");
}
#[test]
fn from_vdi_static() {
    from("vdi-static");
}

/// VHD's default size follows the disk geometry as qemu-img computes it; the pair matrix
/// uses force_size, so check the default against qemu-img separately.
#[test]
fn vhd_default_size_matches_qemu() {
    let d = tmp();
    let raw = make_source(d.path(), kind("raw"));
    for sub in ["dynamic", "fixed"] {
        let opts = format!("subformat={sub}");
        let theirs = d.path().join(format!("q-{sub}.vhd"));
        qemu_img(&["convert", "-f", "raw", "-O", "vpc", "-o", &opts, &s(&raw), &s(&theirs)]);
        let ours = d.path().join(format!("d-{sub}.vhd"));
        dc_ok(&["convert", "-f", "raw", "-O", "vhd", "-o", &opts, &s(&raw), &s(&ours)]);
        let (a, b) = (qemu_info_fmt(&theirs, "vpc"), qemu_info_fmt(&ours, "vpc"));
        assert_eq!(a["virtual-size"], b["virtual-size"], "{sub}: qemu {a} ours {b}");
        qemu_compare(&raw, "raw", &ours, "vpc");
    }
}

/// qemu-img probes a fixed VHD as raw and so copies its footer into the disk; diskcast
/// recognizes the footer without -f.
#[test]
fn fixed_vhd_is_probed_by_its_footer() {
    let d = tmp();
    let src = make_source(d.path(), kind("vhd-fixed"));
    let out = d.path().join("out.raw");
    dc_ok(&["convert", "-O", "raw", &s(&src), &s(&out)]);
    assert_eq!(file_len(&out), SIZE, "the footer must not be copied into the disk");
    qemu_compare(&src, "vpc", &out, "raw");
    let info = dc_ok(&["info", "--output", "json", &s(&src)]).json();
    assert_eq!(info["format"], "vpc", "qemu-img's name for VHD: {info}");
}

/// `-` writes a streamOptimized VMDK to standard output, for uploads without a temp file.
#[test]
fn stream_optimized_vmdk_to_stdout() {
    let d = tmp();
    let src = make_source(d.path(), kind("qcow2"));
    let out = d.path().join("piped.vmdk");
    let r = dc(&["convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(&src), "-"]).expect_ok();
    write_file(&out, &r.stdout);
    qemu_compare(&src, "qcow2", &out, "vmdk");
    let info = qemu_info_fmt(&out, "vmdk");
    assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
    let chk = qemu_img_status(&["check", "-f", "vmdk", &s(&out)]);
    assert_eq!(chk.code, Some(0), "{}", chk.describe());
    // Any other VMDK subformat needs seeking: refused, and nothing written.
    let r = dc(&["convert", "-f", "qcow2", "-O", "vmdk", &s(&src), "-"]).expect_diskcast_error();
    assert!(r.stdout.is_empty());
    let r = dc(&["convert", "-f", "qcow2", "-O", "vhdx", &s(&src), "-"]).expect_diskcast_error();
    assert!(r.stdout.is_empty());
}
