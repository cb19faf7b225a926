//! amend: qemu-img amend on a copy of the same image is the reference; qemu-img check,
//! info and compare judge ours.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A qemu-made qcow2 with data and its copy for qemu-img.
fn pair(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let (p, _) = qemu_qcow2_with_data(dir, "ours.qcow2", extra);
    let q = dir.join("qemu.qcow2");
    std::fs::copy(&p, &q).expect("copy");
    (p, q)
}

/// Runs `amend ARGS` with both tools: same exit code. Returns ours.
fn amend_both(args: &[&str], ours: &Path, theirs: &Path) -> Run {
    let mut qa = vec!["amend"];
    qa.extend_from_slice(args);
    let qs = s(theirs);
    qa.push(&qs);
    let q = qemu_img_status(&qa);
    let mut oa = vec!["amend"];
    oa.extend_from_slice(args);
    let os = s(ours);
    oa.push(&os);
    let r = dc(&oa);
    assert_eq!(r.code, q.code, "amend {args:?}\nours: {}\nqemu: {}", r.describe(), q.describe());
    r
}

fn info_key(p: &Path, key: &str) -> serde_json::Value {
    qemu_info(p)["format-specific"]["data"][key].clone()
}

/// refcount_bits rewritten to other widths and back: qemu-img check clean, info shows
/// the width, the data is the same. (qemu-img takes up to a minute to widen from 1, 2 or
/// 4 bits, so those widths are judged without running it on the same step; qemu places
/// the new structures in freed clusters, we at the end, so file lengths may differ.)
#[test]
fn amend_refcount_bits_like_qemu() {
    let d = tmp();
    let (p, q) = pair(d.path(), &[]);
    let width = |p: &Path| info_key(p, "refcount-bits").as_u64().map(|b| b.to_string());
    for bits in ["64", "8", "16"] {
        amend_both(&["-o", &format!("refcount_bits={bits}")], &p, &q).expect_ok();
        qemu_check_clean(&p);
        assert_eq!(width(&p), width(&q), "refcount_bits={bits}");
        assert_eq!(width(&p).as_deref(), Some(bits));
        qemu_compare(&p, "qcow2", &q, "qcow2");
    }
    for bits in ["1", "4", "2", "32", "16"] {
        dc_ok(&["amend", "-o", &format!("refcount_bits={bits}"), &s(&p)]);
        qemu_check_clean(&p);
        assert_eq!(width(&p).as_deref(), Some(bits));
        qemu_compare(&p, "qcow2", &q, "qcow2");
    }
}

/// compat down (refused while refcount_bits is not 16, as qemu refuses it) and up again
/// with lazy refcounts: info agrees with qemu's, check clean, data the same.
#[test]
fn amend_compat_and_lazy_refcounts_like_qemu() {
    let d = tmp();
    let (p, q) = pair(d.path(), &["-o", "refcount_bits=8"]);
    amend_both(&["-o", "compat=0.10"], &p, &q).expect_stderr_all(&["compat=0.10 requires refcount_bits=16"]);
    amend_both(&["-o", "lazy_refcounts=on,compat=0.10,refcount_bits=16"], &p, &q)
        .expect_stderr_all(&["lazy refcounts only supported with compatibility level 1.1"]);
    amend_both(&["-f", "qcow2", "-o", "refcount_bits=16,compat=0.10"], &p, &q).expect_ok();
    assert_eq!(info_key(&p, "compat"), "0.10");
    qemu_check_clean(&p);
    qemu_compare(&p, "qcow2", &q, "qcow2");
    amend_both(&["-o", "compat=1.1,lazy_refcounts=on"], &p, &q).expect_ok();
    for key in ["compat", "lazy-refcounts", "refcount-bits"] {
        assert_eq!(info_key(&p, key), info_key(&q, key), "{key}");
    }
    assert_eq!(info_key(&p, "lazy-refcounts"), true);
    qemu_check_clean(&p);
    amend_both(&["-o", "lazy_refcounts=off,size=8M"], &p, &q).expect_ok();
    assert_eq!(info_key(&p, "lazy-refcounts"), false);
    assert_eq!(qemu_info(&p)["virtual-size"], qemu_info(&q)["virtual-size"]);
    qemu_check_clean(&p);
    qemu_compare(&p, "qcow2", &q, "qcow2");
}

/// Options amend cannot change are refused as qemu-img refuses them, and nothing is written.
#[test]
fn amend_refusals_like_qemu() {
    let d = tmp();
    let (p, q) = pair(d.path(), &[]);
    let before = read(&p);
    amend_both(&["-o", "cluster_size=4k"], &p, &q).expect_stderr_all(&["only supported for image creation"]);
    amend_both(&["-o", "bogus=1"], &p, &q).expect_stderr_all(&["invalid parameter 'bogus'"]);
    amend_both(&[], &p, &q).expect_stderr_all(&["must specify options (-o)"]);
    let r = d.path().join("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&r), "1M"]);
    amend_both(&["-f", "raw", "-o", "size=2M"], &r, &r).expect_stderr_all(&["does not support option amendment"]);
    assert!(read(&p) == before, "a refused amend wrote to the image");
    // External data files: qemu-img's refusals, in its words.
    amend_both(&["-o", "data_file=x.raw"], &p, &q)
        .expect_stderr_all(&["data-file can only be set for images that use an external data file"]);
    amend_both(&["-o", "data_file_raw=on"], &p, &q).expect_stderr_all(&["data-file-raw cannot be set on existing"]);
    assert!(read(&p) == before, "a refused amend wrote to the image");
}

/// backing_file and backing_fmt: qemu-img amend takes them only as the image already
/// records them (nothing changes) and refuses any change, pointing at rebase; both tools
/// agree on every case and the header stays as it was.
#[test]
fn amend_backing_file_like_qemu() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&base), "8M"]);
    let other = d.path().join("other.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&other), "8M"]);
    let (p, q) = (d.path().join("ours.qcow2"), d.path().join("qemu.qcow2"));
    qemu_img_in(Some(d.path()), &["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ours.qcow2"]);
    std::fs::copy(&p, &q).unwrap();
    let plain = d.path().join("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&plain), "8M"]);
    let before = read(&p);
    amend_both(&["-o", "backing_file=base.qcow2,backing_fmt=qcow2"], &p, &q).expect_ok();
    for refused in ["backing_file=other.qcow2", "backing_file=base.qcow2", "backing_fmt=raw", "backing_file="] {
        amend_both(&["-o", refused], &p, &q).expect_stderr_all(&["cannot amend the backing file", "rebase"]);
    }
    assert!(read(&p) == before, "amend changed the header");
    amend_both(&["-o", "backing_file=base.qcow2,backing_fmt=qcow2"], &plain, &plain)
        .expect_stderr_all(&["cannot amend the backing file"]);
    assert_eq!(qemu_info(&p)["backing-filename"], "base.qcow2");
}

/// compat=0.10 on images with zero clusters, with and without a backing file: expanded
/// as qemu-img expands them (a preallocated zero cluster keeps its place and is zeroed,
/// an unallocated one becomes a zeroed cluster over a backing file and stays unallocated
/// without one): `qemu-img map` of ours shows what it shows of qemu-img's result (host
/// offsets aside), compare says identical, check is clean.
#[test]
fn amend_downgrade_expands_zero_clusters_like_qemu() {
    for backed in [false, true] {
        let d = tmp();
        let base = d.path().join("base.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", &s(&base), "16M"]);
        qemu_io("qcow2", &base, &["write -P 0x5b 0 16M"]);
        let mut create = vec!["create", "-q", "-f", "qcow2"];
        if backed {
            create.extend(["-b", "base.qcow2", "-F", "qcow2"]);
        }
        create.extend(["ours.qcow2", "16M"]);
        qemu_img_in(Some(d.path()), &create);
        let (p, q) = (d.path().join("ours.qcow2"), d.path().join("qemu.qcow2"));
        // Data, an unallocated zero range, a preallocated zero cluster, one past a table.
        qemu_io(
            "qcow2",
            &p,
            &["write -P 1 0 1M", "write -z 2M 1M", "write -P 2 4M 64k", "write -z 4M 64k", "write -z 15M 64k"],
        );
        std::fs::copy(&p, &q).unwrap();
        amend_both(&["-o", "compat=0.10"], &p, &q).expect_ok();
        assert_eq!(info_key(&p, "compat"), "0.10");
        qemu_check_clean(&p);
        qemu_compare(&p, "qcow2", &q, "qcow2");
        assert_eq!(qemu_map_view(&p, "qcow2"), qemu_map_view(&q, "qcow2"), "backed: {backed}");
        qemu_io("qcow2", &p, &["read -P 0 2M 1M", "read -P 0 4M 64k"]);
    }
}
