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

/// `convert -n -c`: the data written into the existing image as compressed clusters, as
/// qemu-img writes them: check clean, compare identical with qemu-img's result, and
/// `qemu-img map` reports the same ranges compressed.
#[test]
fn convert_n_c_writes_compressed_clusters_like_qemu_img() {
    let d = tmp();
    let src = qcow2(d.path(), "src.qcow2", "", "8M", &["write -P 0x11 0 1M", "write -P 0x22 5M 64k"]);
    let (ours, theirs) = (qcow2(d.path(), "ours.qcow2", "", "8M", &[]), qcow2(d.path(), "q.qcow2", "", "8M", &[]));
    dc_ok(&["convert", "-n", "-c", "-O", "qcow2", &s(&src), &s(&ours)]);
    qemu_img(&["convert", "-n", "-c", "-O", "qcow2", &s(&src), &s(&theirs)]);
    qemu_check_clean(&ours);
    qemu_compare(&ours, "qcow2", &theirs, "qcow2");
    let compressed = |p: &Path| {
        let v = qemu_img(&["map", "--output=json", "-f", "qcow2", &s(p)]).json();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["compressed"] == true)
            .map(|e| e["length"].as_u64())
            .sum::<Option<u64>>()
    };
    assert_eq!(compressed(&ours), compressed(&theirs));
    assert_eq!(compressed(&ours), Some((1 << 20) + (64 << 10)));
    // Over clusters the image already holds, qemu-img fails the compressed write; so do we.
    let full = |n: &str| qcow2(d.path(), n, "", "8M", &["write -P 0x99 0 8M"]);
    let (ours, theirs) = (full("full.qcow2"), full("full-q.qcow2"));
    qemu_img_status(&["convert", "-n", "-c", "-O", "qcow2", &s(&src), &s(&theirs)]).expect_code(1);
    dc(&["convert", "-n", "-c", "-O", "qcow2", &s(&src), &s(&ours)])
        .expect_code(1)
        .expect_stderr_all(&["compressed cluster can only be written where the image has none allocated"]);
    qemu_check_clean(&ours);
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
    // -n keeps the target's format: -o cannot change it.
    let t = qcow2(d.path(), "t.qcow2", "", "8M", &[]);
    let before = read(&t);
    dc(&["convert", "-n", "-O", "qcow2", "-o", "cluster_size=4096", &s(&src), &s(&t)])
        .expect_code(1)
        .expect_stderr_all(&["-n writes into the existing qcow2 image"]);
    assert!(read(&t) == before, "-o changed the target");
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

/// `diskcast snapshot ARGS FILE`.
fn dc_snapshot(args: &[&str], img: &Path) -> Run {
    let mut v = vec!["snapshot"];
    v.extend(args);
    let p = s(img);
    v.push(&p);
    dc(&v)
}

/// Both tools list the same snapshots: qemu-img's table text, and our JSON equal to
/// qemu-img info's `snapshots` key for key (ours from `snapshot -l` and from `info`).
fn same_listing(img: &Path) {
    let ours = dc_snapshot(&["-l"], img).expect_ok();
    let theirs = qemu_img(&["snapshot", "-l", &s(img)]);
    assert_eq!(ours.stdout_str(), theirs.stdout_str(), "snapshot -l differs from qemu-img's");
    let json = dc_snapshot(&["-l", "--output", "json"], img).expect_ok().json();
    let qemu = qemu_info(img)["snapshots"].clone();
    assert_eq!(json, qemu, "snapshot -l --output json differs from qemu-img info's snapshots");
    assert_eq!(dc_ok(&["info", "--output", "json", &s(img)]).json()["snapshots"], qemu);
    let text = dc_ok(&["info", &s(img)]).stdout_str();
    assert!(text.contains(&theirs.stdout_str()), "info does not list the snapshots as qemu-img does:\n{text}");
}

#[test]
fn qemu_made_snapshots_are_listed_applied_and_deleted() {
    let d = tmp();
    let img = qcow2(d.path(), "a.qcow2", "", "16M", &["write -P 0x11 0 4M"]);
    qemu_img(&["snapshot", "-c", "s1", &s(&img)]);
    qemu_io("qcow2", &img, &["write -P 0x22 1M 2M", "write -P 0x24 8M 1M"]);
    qemu_img(&["snapshot", "-c", "s2", &s(&img)]);
    qemu_io("qcow2", &img, &["write -P 0x33 0 6M"]);
    same_listing(&img);
    // Apply s1 with diskcast, a copy with qemu-img: the same guest view, s1's pattern.
    let theirs = d.path().join("theirs.qcow2");
    std::fs::copy(&img, &theirs).unwrap();
    dc_snapshot(&["-a", "s1"], &img).expect_ok();
    qemu_img(&["snapshot", "-a", "s1", &s(&theirs)]);
    qemu_check_clean(&img);
    qemu_compare(&img, "qcow2", &theirs, "qcow2");
    qemu_io("qcow2", &img, &["read -P 0x11 0 4M", "read -P 0 4M 12M"]);
    // By ID too, as qemu-img -a takes it.
    dc_snapshot(&["-a", "2"], &img).expect_ok();
    qemu_img(&["snapshot", "-a", "2", &s(&theirs)]);
    qemu_compare(&img, "qcow2", &theirs, "qcow2");
    qemu_io("qcow2", &img, &["read -P 0x11 0 1M", "read -P 0x22 1M 2M", "read -P 0x24 8M 1M"]);
    // Delete s1 (by name): s2 stays readable, nothing leaks, qemu-img lists what we do.
    dc_snapshot(&["-d", "s1"], &img).expect_ok();
    qemu_img(&["snapshot", "-d", "s1", &s(&theirs)]);
    qemu_check_clean(&img);
    same_listing(&img);
    assert_eq!(qemu_info(&img)["snapshots"].as_array().map(Vec::len), Some(1));
    let (ours_raw, qemu_raw) = (d.path().join("o.raw"), d.path().join("q.raw"));
    for l in ["s2", "2", "snapshot.name=s2", "snapshot.id=2", "snapshot.id=2,snapshot.name=s2"] {
        dc_ok(&["convert", "-l", l, "-O", "raw", &s(&img), &s(&ours_raw)]);
        qemu_img(&["convert", "-l", l, "-O", "raw", &s(&img), &s(&qemu_raw)]);
        assert_same_bytes(&qemu_raw, &ours_raw);
    }
    dc_ok(&["convert", "-s", "s2", "-O", "qcow2", &s(&img), &s(&ours_raw)]);
    qemu_compare(&ours_raw, "qcow2", &qemu_raw, "raw");
    // What is not there: qemu-img's messages, exit 1, nothing changed.
    let before = read(&img);
    dc_snapshot(&["-a", "s1"], &img).expect_code(1).expect_stderr_all(&["Could not apply snapshot 's1'", "not found"]);
    dc_snapshot(&["-d", "2"], &img).expect_code(1).expect_stderr_all(&["Could not delete snapshot '2'", "not found"]);
    dc(&["convert", "-l", "snapshot.id=2,snapshot.name=s1", "-O", "raw", &s(&img), &s(&ours_raw)])
        .expect_code(1)
        .expect_stderr_all(&["Can't find snapshot"]);
    dc_snapshot(&["-c", "x", "-d", "s2"], &img).expect_code(1).expect_stderr_all(&["Cannot mix"]);
    assert!(read(&img) == before);
    // A format without snapshots lists none and refuses the rest, as qemu-img does.
    let raw = d.path().join("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "1M"]);
    assert!(dc_snapshot(&["-l"], &raw).expect_ok().stdout.is_empty());
    dc_snapshot(&["-c", "x"], &raw).expect_code(1).expect_stderr_all(&["does not support internal snapshots"]);
}

#[test]
fn diskcast_made_snapshots_are_read_by_qemu() {
    let d = tmp();
    for opts in ["", "compat=0.10", "cluster_size=512,refcount_bits=64", "refcount_bits=2", "cluster_size=4096"] {
        // Compressed clusters share host clusters, whose refcounts then sit at 2 bits'
        // maximum: with refcount_bits=2 no snapshot could share them (qemu-img refuses too).
        let compress = if opts == "refcount_bits=2" { "write -P 0x12 4M 1M" } else { "write -c -P 0x12 4M 1M" };
        let img = qcow2(d.path(), "b.qcow2", opts, "8M", &["write -P 0x11 0 3M", compress]);
        let theirs = d.path().join("theirs.qcow2");
        std::fs::copy(&img, &theirs).unwrap();
        // Each tool takes the same snapshots of its copy; IDs and names agree.
        dc_snapshot(&["-c", "first"], &img).expect_ok();
        qemu_img(&["snapshot", "-c", "first", &s(&theirs)]);
        qemu_check_clean(&img);
        // Overwrite (partly, over data, compressed and unallocated clusters) with
        // qemu-io, and with diskcast convert -n: both copy what the snapshot shares.
        qemu_io("qcow2", &img, &["write -P 0x21 1M 1M"]);
        qemu_io("qcow2", &theirs, &["write -P 0x21 1M 1M"]);
        let src = qcow2(d.path(), "src.qcow2", "", "6M", &["write -P 0x31 2M 3M"]);
        dc_ok(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&img)]);
        qemu_img(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&theirs)]);
        qemu_check_clean(&img);
        dc_snapshot(&["-c", "second"], &img).expect_ok();
        qemu_img(&["snapshot", "-c", "second", &s(&theirs)]);
        qemu_check_clean(&img);
        let list = |p: &Path| -> Vec<(String, String)> {
            qemu_info(p)["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v["id"].as_str().unwrap().to_string(), v["name"].as_str().unwrap().to_string()))
                .collect()
        };
        assert_eq!(list(&img), list(&theirs), "{opts}");
        // qemu-img reads and applies what diskcast made.
        let (a, b) = (d.path().join("a.raw"), d.path().join("b.raw"));
        qemu_img(&["convert", "-l", "first", "-O", "raw", &s(&img), &s(&a)]);
        qemu_img(&["convert", "-l", "first", "-O", "raw", &s(&theirs), &s(&b)]);
        assert_same_bytes(&b, &a);
        qemu_io("raw", &a, &["read -P 0x11 0 3M", "read -P 0x12 4M 1M", "read -P 0 5M 3M"]);
        let copy = d.path().join("copy.qcow2");
        std::fs::copy(&img, &copy).unwrap();
        qemu_img(&["snapshot", "-a", "first", &s(&copy)]);
        qemu_check_clean(&copy);
        qemu_io("qcow2", &copy, &["read -P 0x11 0 3M", "read -P 0x12 4M 1M"]);
        // diskcast applies it the same way, and deletes, leaving no leak.
        dc_snapshot(&["-a", "first"], &img).expect_ok();
        qemu_img(&["snapshot", "-a", "first", &s(&theirs)]);
        qemu_check_clean(&img);
        qemu_compare(&img, "qcow2", &theirs, "qcow2");
        dc_snapshot(&["-d", "first"], &img).expect_ok();
        qemu_check_clean(&img);
        dc_snapshot(&["-a", "second"], &img).expect_ok();
        qemu_img(&["snapshot", "-a", "second", &s(&theirs)]);
        qemu_compare(&img, "qcow2", &theirs, "qcow2");
        // convert -n wrote all of src, its zeros too.
        qemu_io("qcow2", &img, &["read -P 0 0 2M", "read -P 0x31 2M 3M", "read -P 0 5M 3M"]);
        dc_snapshot(&["-d", "second"], &img).expect_ok();
        qemu_check_clean(&img);
        assert!(qemu_info(&img).get("snapshots").is_none(), "{opts}");
        if opts == "refcount_bits=2" {
            // Refcounts of 2 bits hold 3: a third snapshot (a fourth reference) is
            // refused, as qemu-img refuses it, and the image stays consistent.
            std::fs::copy(&img, &theirs).unwrap();
            for n in ["x", "y"] {
                dc_snapshot(&["-c", n], &img).expect_ok();
                qemu_img(&["snapshot", "-c", n, &s(&theirs)]);
            }
            qemu_img_status(&["snapshot", "-c", "z", &s(&theirs)]).expect_code(1);
            dc_snapshot(&["-c", "z"], &img).expect_code(1).expect_stderr_all(&["refcount_bits=2"]);
            qemu_check_clean(&img);
            assert_eq!(qemu_info(&img)["snapshots"].as_array().map(Vec::len), Some(2));
            qemu_compare(&img, "qcow2", &theirs, "qcow2");
        }
        for p in [&img, &theirs, &copy, &src, &a, &b] {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn hostile_snapshot_tables_are_refused_naming_the_cap() {
    let d = tmp();
    let good = qcow2(d.path(), "good.qcow2", "", "4M", &["write -P 0x11 0 1M"]);
    qemu_img(&["snapshot", "-c", "s1", &s(&good)]);
    let table = read_be_u64(&good, 64);
    // (what is patched: offset and bytes, the words the refusal names)
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let be64 = |v: u64| v.to_be_bytes().to_vec();
    let cases: [(&str, u64, Vec<u8>, &[&str]); 6] = [
        ("too many snapshots", 60, be32(70_000), &["70000 snapshots", "65536"]),
        ("table past EOF", 64, be64(1 << 40), &["snapshot table", "inside the"]),
        ("entries past EOF", 60, be32(60_000), &["runs past the end of the file"]),
        ("extra data", table + 36, be32(4096), &["extra data", "1024"]),
        ("name past EOF", table + 14, 0xffffu16.to_be_bytes().to_vec(), &["runs past the end"]),
        ("misaligned L1", table, be64(0x10200), &["L1 table", "cluster aligned"]),
    ];
    for (what, at, bytes, words) in cases {
        let p = d.path().join("bad.qcow2");
        std::fs::copy(&good, &p).unwrap();
        patch(&p, at, &bytes);
        let before = read(&p);
        dc_snapshot(&["-l"], &p).expect_code(1).expect_diskcast_error().expect_stderr_all(words);
        dc_snapshot(&["-a", "s1"], &p).expect_code(1).expect_diskcast_error().expect_stderr_all(words);
        dc_snapshot(&["-c", "s2"], &p).expect_code(1).expect_diskcast_error().expect_stderr_all(words);
        let out = d.path().join("out.raw");
        dc(&["convert", "-l", "s1", "-O", "raw", &s(&p), &s(&out)]).expect_code(1).expect_diskcast_error();
        assert!(read(&p) == before, "{what}: a refused command changed the image");
    }
}

#[test]
fn snapshot_and_convert_n_refuse_encrypted_images_and_images_in_use() {
    let d = tmp();
    let src = qcow2(d.path(), "src.qcow2", "", "8M", &["write -P 0x11 0 1M"]);
    // LUKS-encrypted: diskcast has no key handling, and says so before writing anything.
    let enc = d.path().join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=sec0,data=password",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        &s(&enc),
        "8M",
    ]);
    let before = read(&enc);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&enc)]).expect_code(1).expect_stderr_all(&["encrypted", "LUKS"]);
    dc_snapshot(&["-c", "s1"], &enc).expect_code(1).expect_stderr_all(&["encrypted", "LUKS"]);
    assert!(read(&enc) == before);
    // An image qemu-io holds open for writing is refused, as qemu-img refuses it.
    let q = qcow2(d.path(), "busy.qcow2", "", "8M", &[]);
    let qio = QemuHolder::start("qcow2", &q);
    dc_snapshot(&["-c", "s1"], &q).expect_code(1).expect_stderr_all(&["in use"]);
    dc(&["convert", "-n", "-O", "qcow2", &s(&src), &s(&q)]).expect_code(1).expect_stderr_all(&["in use"]);
    drop(qio);
    assert!(qemu_info(&q).get("snapshots").is_none());
}
