//! Existing qcow2 images edited in place: `convert -n SRC existing.qcow2`. Every target
//! is made by qemu-img/qemu-io (data, compressed clusters, internal snapshots, backing
//! files, refcount widths, v2), a copy gets the same command from qemu-img, and qemu
//! judges: `qemu-img check` clean, `qemu-img compare` with qemu-img's result and with
//! the source, the snapshot still reading its old pattern through qemu-io.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A qemu-made qcow2 of `size` with `-o opts`, then `writes` by qemu-io.
fn qcow2(dir: &Path, name: &str, opts: &str, size: &str, writes: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let ps = s(&p);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([ps.as_str(), size]);
    qemu_img_in(Some(dir), &args).expect_ok();
    if !writes.is_empty() {
        qemu_io("qcow2", &p, writes);
    }
    p
}

/// Snapshot `name` of `img`, as qemu-img reads it, holds `pattern` in `[0, len)`.
fn snapshot_reads(dir: &Path, img: &Path, name: &str, pattern: u8, len: u64) {
    let raw = dir.join(format!("{name}.raw"));
    qemu_img(&["convert", "-l", name, "-O", "raw", &s(img), &s(&raw)]);
    qemu_io("raw", &raw, &[&format!("read -P {pattern:#x} 0 {len}")]);
    std::fs::remove_file(&raw).unwrap();
}

#[test]
fn convert_n_writes_into_existing_qcow2_like_qemu_img() {
    let d = tmp();
    let base = d.path().join("base.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&base), "16M"]);
    qemu_io("raw", &base, &["write -P 0x55 0 16M"]);
    // Data, a zeroed range and a hole: every kind of extent reaches the writer.
    let src = qcow2(
        d.path(),
        "src.qcow2",
        "",
        "16M",
        &["write -P 0x11 0 1M", "write -P 0x22 5M 2M", "write -z 8M 1M", "write -P 0x44 12M 3M"],
    );
    let targets = [
        "",
        "compat=0.10",
        "refcount_bits=1",
        "cluster_size=512,refcount_bits=64", // refcount blocks and a larger refcount table at the end
        "cluster_size=4096,refcount_bits=2",
        "backing_file=base.raw,backing_fmt=raw",
        "compat=0.10,backing_file=base.raw,backing_fmt=raw", // v2: zeros written over the backing file
    ];
    for opts in targets {
        for state in ["empty", "data", "compressed", "snapshot"] {
            let what = format!("-o {opts:?}, {state} target");
            let writes: &[&str] = match state {
                "data" | "snapshot" => &["write -P 0x33 0 10M"],
                "compressed" => &["write -c -P 0x33 0 4M"],
                _ => &[],
            };
            let ours = qcow2(d.path(), "ours.qcow2", opts, "20M", writes);
            let snapshot = state == "snapshot" && !opts.contains("refcount_bits=1");
            if snapshot {
                qemu_img(&["snapshot", "-c", "s1", &s(&ours)]);
            }
            let theirs = d.path().join("theirs.qcow2");
            std::fs::copy(&ours, &theirs).unwrap();
            dc_ok(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&ours)]);
            qemu_img(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&theirs)]);
            let check = qemu_img_status(&["check", "--output=json", &s(&ours)]);
            assert_eq!(check.code, Some(0), "{what}: {}", check.describe());
            qemu_compare(&ours, "qcow2", &theirs, "qcow2");
            // The target is larger than the source: its tail is left as it was.
            let head = d.path().join("head.raw");
            qemu_img(&[
                "dd",
                "-f",
                "qcow2",
                "-O",
                "raw",
                "bs=1M",
                "count=16",
                &format!("if={}", s(&ours)),
                &format!("of={}", s(&head)),
            ]);
            qemu_compare(&src, "qcow2", &head, "raw");
            std::fs::remove_file(&head).unwrap();
            if snapshot {
                snapshot_reads(d.path(), &ours, "s1", 0x33, 10 * MIB);
            }
            std::fs::remove_file(&theirs).unwrap();
            std::fs::remove_file(&ours).unwrap();
        }
    }
}

#[test]
fn convert_n_into_qcow2_refuses_what_it_cannot_keep_consistent() {
    let d = tmp();
    let src = qcow2(d.path(), "src.qcow2", "", "8M", &["write -P 0x11 0 1M"]);
    // Smaller than the source: qemu-img refuses too.
    let small = qcow2(d.path(), "small.qcow2", "", "4M", &[]);
    qemu_img_status(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&small)]).expect_code(1);
    let before = read(&small);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&small)])
        .expect_code(1)
        .expect_stderr_all(&["smaller than input file", "small.qcow2"]);
    assert!(read(&small) == before);
    // -n keeps the target's format: -c and -o cannot change it.
    let t = qcow2(d.path(), "t.qcow2", "", "8M", &[]);
    let before = read(&t);
    for flags in [&["-c"][..], &["-o", "cluster_size=4096"]] {
        let mut args = vec!["convert", "-n", "-O", "qcow2"];
        args.extend(flags);
        let (a, b) = (s(&src), s(&t));
        args.extend([a.as_str(), b.as_str()]);
        dc(&args).expect_code(1).expect_stderr_all(&["-n writes into the existing qcow2 image"]);
        assert!(read(&t) == before, "{flags:?} changed the target");
    }
    // Persistent bitmaps record what the guest changes; diskcast does not update them.
    let bm = qcow2(d.path(), "bm.qcow2", "", "8M", &[]);
    qemu_img(&["bitmap", "--add", &s(&bm), "b0"]);
    let before = read(&bm);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&bm)])
        .expect_code(1)
        .expect_stderr_all(&["persistent dirty bitmaps", "bitmap --remove"]);
    assert!(read(&bm) == before);
    // An external data file holds the guest data elsewhere.
    let ext = qcow2(d.path(), "ext.qcow2", "data_file=ext.data", "8M", &[]);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&ext)]).expect_code(1).expect_stderr_all(&["external data file"]);
    // Dirty (lazy refcounts not written back) and corrupt images: refcounts untrusted.
    for (bit, word) in [(1u64, "dirty"), (2, "corrupt")] {
        let p = qcow2(d.path(), &format!("{word}.qcow2"), "", "8M", &["write -P 0x22 0 64K"]);
        patch_u64(&p, 72, bit);
        let before = read(&p);
        dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&p)])
            .expect_code(1)
            .expect_stderr_all(&[word, "qemu-img check"]);
        assert!(read(&p) == before, "{word}: the image changed");
    }
    // A raw file is not a qcow2 image to edit.
    let raw = d.path().join("t.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "8M"]);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&raw)]).expect_code(1).expect_stderr_all(&["magic"]);
}
