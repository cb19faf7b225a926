//! dd: diskcast dd and qemu-img dd run with the same operands on the same qemu-made
//! image; qemu-img judges the two outputs (same format and size, same content).

use crate::support::*;
use std::path::Path;

/// A 10 MiB qcow2 whose every MiB holds its own index (qemu-io), with a hole at 4-6 MiB.
fn source(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("in.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "10M"]);
    let writes: Vec<String> =
        (0..10u64).filter(|i| !(4..6).contains(i)).map(|i| format!("write -P {} {i}M 1M", i + 1)).collect();
    qemu_io("qcow2", &p, &writes.iter().map(String::as_str).collect::<Vec<_>>());
    p
}

/// Runs both tools with `flags` and `operands` (`if=`/`of=` added) and compares.
fn both(dir: &Path, input: &Path, flags: &[&str], operands: &[&str], out_fmt: &str) -> u64 {
    let ours = dir.join("ours.out");
    let theirs = dir.join("theirs.out");
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&theirs);
    let run = |tool: &str, out: &Path| {
        let mut v: Vec<String> = vec!["dd".into()];
        v.extend(flags.iter().map(|f| (*f).to_string()));
        v.push(format!("if={}", s(input)));
        v.push(format!("of={}", s(out)));
        v.extend(operands.iter().map(|o| (*o).to_string()));
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        if tool == "diskcast" { dc(&refs) } else { qemu_img_status(&refs) }
    };
    let (a, b) = (run("diskcast", &ours), run("qemu-img", &theirs));
    assert_eq!(a.code, Some(0), "{}", a.describe());
    assert_eq!(b.code, Some(0), "{}", b.describe());
    let (ia, ib) = (qemu_info_fmt(&ours, out_fmt), qemu_info_fmt(&theirs, out_fmt));
    assert_eq!(ia["virtual-size"], ib["virtual-size"], "{operands:?}: ours {ia}\nqemu-img's {ib}");
    if out_fmt == "qcow2" {
        qemu_check_clean(&ours);
    }
    qemu_compare(&ours, out_fmt, &theirs, out_fmt);
    ia["virtual-size"].as_u64().unwrap()
}

#[test]
fn dd_matches_qemu_img_dd() {
    let d = tmp();
    let input = source(d.path());
    for (flags, operands, fmt, size) in [
        (&["-f", "qcow2"][..], &[][..], "raw", 10 * MIB),
        (&[], &["bs=1M", "count=3"], "raw", 3 * MIB),
        (&[], &["bs=64k", "count=20", "skip=1"], "raw", 19 * 64 * KIB), // count counts from the start
        (&["-O", "qcow2"], &["bs=3M", "skip=1"], "qcow2", 7 * MIB),
        (&["-O", "qcow2"], &["bs=1M", "skip=3", "count=9"], "qcow2", 6 * MIB),
        (&["-O", "vmdk"], &["bs=512", "skip=100", "count=20000"], "vmdk", (20000 - 100) * 512),
        (&[], &["bs=1000", "count=3"], "raw", 3072), // rounded up to whole sectors, zeros
        (&[], &["bs=1G"], "raw", 10 * MIB),
        (&[], &["bs=1M", "count=20"], "raw", 10 * MIB),
        (&[], &["bs=1M", "count=0"], "raw", 0),
    ] {
        let got = both(d.path(), &input, flags, operands, fmt);
        assert_eq!(got, size, "{flags:?} {operands:?}");
    }
    // A skip past what count leaves: an empty output and a warning, exit 0, like qemu-img.
    let out = d.path().join("empty.raw");
    let r = dc(&["dd", &format!("if={}", s(&input)), &format!("of={}", s(&out)), "bs=1M", "count=3", "skip=8"])
        .expect_ok()
        .expect_stderr_all(&["cannot skip to specified offset"]);
    drop(r);
    assert_eq!(file_len(&out), 0);
}

#[test]
fn dd_refuses_what_qemu_img_dd_refuses() {
    let d = tmp();
    let input = source(d.path());
    let (i, o) = (format!("if={}", s(&input)), format!("of={}", s(&d.path().join("o.raw"))));
    for (operands, message) in [
        (vec![i.as_str(), o.as_str(), "bs=0"], "invalid bs specified. must be between 1 and 2147483647"),
        (vec![i.as_str(), o.as_str(), "bs=3G"], "invalid bs specified"),
        (vec![i.as_str(), o.as_str(), "count=-1"], "invalid count specified. must be between 0 and"),
        (vec![i.as_str(), o.as_str(), "count=1M"], "invalid count specified: '1m'"),
        (vec![i.as_str(), o.as_str(), "skip=1k"], "invalid skip specified: '1k'"),
        (vec![i.as_str(), o.as_str(), "foo=1"], "unrecognized operand foo"),
        (vec![i.as_str()], "must specify both input and output files"),
    ] {
        let mut args = vec!["dd"];
        args.extend(&operands);
        let q: Vec<&str> = args.clone();
        qemu_img_status(&q).expect_code(1);
        dc(&args).expect_code(1).expect_diskcast_error().expect_stderr_all(&[message]);
        assert!(!d.path().join("o.raw").exists(), "{operands:?} left an output");
    }
}

#[test]
fn dd_with_image_opts() {
    let d = tmp();
    let input = source(d.path());
    let out = d.path().join("o.raw");
    let spec = format!("if=driver=qcow2,file.filename={}", s(&input));
    dc_ok(&["dd", "--image-opts", &spec, &format!("of={}", s(&out)), "bs=1M", "count=2"]);
    let theirs = d.path().join("t.raw");
    qemu_img(&["dd", "--image-opts", &spec, &format!("of={}", s(&theirs)), "bs=1M", "count=2"]);
    qemu_compare(&out, "raw", &theirs, "raw");
}
