//! check: qemu-img check decides what is clean, leaking or corrupt; diskcast must agree.

use crate::support::*;
use std::path::Path;

fn dc_check(p: &Path) -> Run {
    dc(&["check", &s(p)])
}

#[test]
fn qemu_made_qcow2_is_clean() {
    let d = tmp();
    for opts in ["cluster_size=65536", "compat=0.10", "cluster_size=512", "cluster_size=2M"] {
        let p = d.path().join(format!("{}.qcow2", opts.replace(['=', '.'], "_")));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &s(&p), "8M"]);
        qemu_io("qcow2", &p, &["write -P 1 0 100K", "write -z 1M 64K", "write -P 2 5M 3M"]);
        qemu_check_clean(&p);
        let r = dc_check(&p).expect_ok();
        assert!(r.stdout_str().contains("No errors were found"), "{}", r.stdout_str());
        let v = dc(&["check", "--output", "json", &s(&p)]).expect_ok().json();
        let q = qemu_check_clean(&p);
        for key in ["allocated-clusters", "total-clusters", "image-end-offset"] {
            if v.get(key).is_some() {
                assert_eq!(v[key], q[key], "{key}: ours {v}\nqemu {q}");
            }
        }
    }
}

#[test]
fn compressed_qcow2_is_clean() {
    let d = tmp();
    let raw = d.path().join("p.raw");
    write_index_pattern(&raw, 3 * MIB, 5);
    for ctype in ["zlib", "zstd"] {
        let p = d.path().join(format!("{ctype}.qcow2"));
        qemu_img(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &format!("compression_type={ctype}"),
            &s(&raw),
            &s(&p),
        ]);
        qemu_check_clean(&p);
        dc_check(&p).expect_ok();
    }
}

#[test]
fn diskcast_made_qcow2_is_clean() {
    let d = tmp();
    let raw = d.path().join("p.raw");
    write_index_pattern(&raw, 5 * MIB + 512, 3);
    for (name, args) in [
        ("plain", &["-O", "qcow2"][..]),
        ("v2", &["-O", "qcow2", "-o", "compat=0.10"][..]),
        ("zstd", &["-O", "qcow2", "-c", "-o", "compression_type=zstd"][..]),
    ] {
        let out = d.path().join(format!("{name}.qcow2"));
        let mut a = vec!["convert", "-f", "raw"];
        a.extend_from_slice(args);
        let (rs, os) = (s(&raw), s(&out));
        a.push(&rs);
        a.push(&os);
        dc_ok(&a);
        qemu_check_clean(&out);
        dc_check(&out).expect_ok();
    }
}

/// Raising the refcount of an unused cluster is a leak for qemu (exit 3), and for diskcast.
#[test]
fn leaked_cluster_is_exit_3() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "leak.qcow2", &[]);
    let clusters = file_len(&p).div_ceil(h.cluster_size());
    // Grow the file by one cluster nobody references, and give it refcount 1.
    let idx = clusters;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open")
        .set_len((idx + 1) * h.cluster_size())
        .expect("grow");
    assert!(idx < h.cluster_size() / 2, "refcount block does not cover cluster {idx}");
    let pos = h.refcount_entry_pos(&p, idx);
    assert_eq!(read_be_u32(&p, pos) >> 16, 0, "cluster {idx} already has a refcount");
    patch(&p, pos, &1u16.to_be_bytes());
    let q = qemu_img_status(&["check", "-f", "qcow2", &s(&p)]);
    assert_eq!(q.code, Some(3), "qemu-img check should report a leak: {}{}", q.stdout_str(), q.stderr);
    let r = dc_check(&p).expect_code(3);
    assert!(r.stdout_str().contains("leaked"), "{}", r.stdout_str());
    let v = dc(&["check", "--output", "json", &s(&p)]).expect_code(3).json();
    assert_eq!(v["leaks"].as_u64(), Some(1), "{v}");
    assert_eq!(v["corruptions"].as_u64().unwrap_or(0), 0, "{v}");
}

/// Dropping the refcount of the L1 table's cluster to 0 is a corruption (exit 2).
#[test]
fn zero_refcount_on_used_cluster_is_exit_2() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "corrupt.qcow2", &[]);
    let pos = h.refcount_entry_pos(&p, h.l1_table_offset / h.cluster_size());
    patch(&p, pos, &0u16.to_be_bytes());
    let q = qemu_img_status(&["check", "-f", "qcow2", &s(&p)]);
    assert_eq!(q.code, Some(2), "qemu-img check should report corruption: {}{}", q.stdout_str(), q.stderr);
    let v = dc(&["check", "--output", "json", &s(&p)]).expect_code(2).json();
    assert!(v["corruptions"].as_u64().unwrap_or(0) > 0, "{v}");
}

#[test]
fn check_on_raw_is_63() {
    let d = tmp();
    let p = d.path().join("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&p), "1M"]);
    assert_eq!(qemu_img_status(&["check", "-f", "raw", &s(&p)]).code, Some(63));
    dc(&["check", &s(&p)]).expect_code(63);
    dc(&["check", "-f", "raw", &s(&p)]).expect_code(63);
}

/// A healthy qcow2 with persistent bitmaps (qemu-img bitmap --add, then writes that
/// fill them): exit 0 and no leaks, like qemu-img check.
#[test]
fn check_with_persistent_bitmaps_is_clean() {
    let d = tmp();
    let p = d.path().join("bm.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "64M"]);
    qemu_io("qcow2", &p, &["write -P 1 0 3M"]);
    qemu_img(&["bitmap", "--add", &s(&p), "b0"]);
    qemu_img(&["bitmap", "--add", "-g", "512", &s(&p), "b1"]);
    qemu_io("qcow2", &p, &["write -P 2 8M 1M"]);
    qemu_check_clean(&p);
    let v = dc(&["check", "--output", "json", &s(&p)]).expect_ok().json();
    assert_eq!(v["leaks"].as_u64(), Some(0), "{v}");
    assert_eq!(v["corruptions"].as_u64(), Some(0), "{v}");
}

/// An encrypted qcow2 cannot be read without its key: qemu-img check exits 1 (it cannot
/// open the image), and so do we. 63 would claim qcow2 had no checker.
#[test]
fn check_on_encrypted_qcow2_is_1_not_63() {
    let d = tmp();
    let p = d.path().join("enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=abc123",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        &s(&p),
        "16M",
    ]);
    assert_eq!(qemu_img_status(&["check", &s(&p)]).code, Some(1));
    dc(&["check", &s(&p)]).expect_code(1).expect_stderr_all(&["encrypted"]);
}

#[test]
fn check_on_missing_file_is_1() {
    let d = tmp();
    dc(&["check", &s(&d.path().join("missing.qcow2"))]).expect_code(1).expect_stderr_any(&["missing.qcow2"]);
}

/// Runs `check -r MODE` on `ours` with diskcast and on `theirs` (a copy) with qemu-img:
/// same exit code, and qemu's standard output is the end of ours (ours also prints the
/// finding lines qemu-img writes to standard error).
fn repair_both(mode: &str, ours: &Path, theirs: &Path) -> (Run, Run) {
    let q = qemu_img_status(&["check", "-f", "qcow2", "-r", mode, &s(theirs)]);
    let r = dc(&["check", "-r", mode, &s(ours)]);
    assert_eq!(r.code, q.code, "exit codes differ\nours: {}\nqemu: {}", r.describe(), q.describe());
    assert!(r.stdout_str().ends_with(&q.stdout_str()), "ours: {}\nqemu: {}", r.describe(), q.describe());
    (r, q)
}

fn copy_of(p: &Path, name: &str) -> std::path::PathBuf {
    let c = p.with_file_name(name);
    std::fs::copy(p, &c).expect("copy");
    c
}

/// A cluster leaked the way a crash leaks one (its L2 entry cleared, its refcount left):
/// `check -r leaks` frees it as qemu-img does, and qemu-img check then finds nothing.
#[test]
fn repair_leaks_frees_a_leaked_cluster_like_qemu() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "leak.qcow2", &[]);
    patch_u64(&p, h.l2_entry_pos(&p, h.cluster_size()), 0);
    let q = copy_of(&p, "leak-qemu.qcow2");
    let j = copy_of(&p, "leak-json.qcow2");
    dc_check(&p).expect_code(3);
    let (r, _) = repair_both("leaks", &p, &q);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout_str().contains("Repairing cluster"), "{}", r.describe());
    qemu_check_clean(&p);
    qemu_compare(&p, "qcow2", &q, "qcow2");
    let v = dc(&["check", "--output", "json", "-r", "leaks", &s(&j)]).expect_ok().json();
    assert_eq!(v["leaks-fixed"].as_u64(), Some(1), "{v}");
    assert_eq!(v["leaks"].as_u64(), Some(0), "{v}");
    // Nothing left to repair: a second run changes nothing and says so.
    let before = read(&p);
    let again = dc(&["check", "-r", "all", &s(&p)]).expect_ok();
    assert!(again.stdout_str().starts_with("No errors were found"), "{}", again.describe());
    assert!(read(&p) == before, "a clean image was written to");
}

/// A used cluster with refcount 0 (and another with one too many): `-r leaks` cannot
/// repair it (exit 1, as qemu-img), `-r all` rebuilds the refcount structures as qemu
/// does: same report, same image end, qemu-img check clean, same guest data.
#[test]
fn repair_all_rebuilds_refcounts_like_qemu() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "rc.qcow2", &[]);
    let cs = h.cluster_size();
    let first = read_be_u64(&p, h.l2_entry_pos(&p, 0)) & L1_OFFSET_MASK;
    let second = read_be_u64(&p, h.l2_entry_pos(&p, cs)) & L1_OFFSET_MASK;
    patch(&p, h.refcount_entry_pos(&p, first / cs), &0u16.to_be_bytes());
    patch(&p, h.refcount_entry_pos(&p, second / cs), &2u16.to_be_bytes());
    let q = copy_of(&p, "rc-qemu.qcow2");
    let untouched = read(&p);
    let (r, _) = repair_both("leaks", &p, &q);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(r.stdout_str().contains("need to rebuild refcount structures"), "{}", r.describe());
    assert!(read(&p) == untouched, "-r leaks wrote to an image it could not repair");
    let (r, _) = repair_both("all", &p, &q);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout_str().contains("Rebuilding refcount structure"), "{}", r.describe());
    let ours = qemu_check_clean(&p);
    let theirs = qemu_check_clean(&q);
    assert_eq!(ours["image-end-offset"], theirs["image-end-offset"], "ours {ours}\nqemu {theirs}");
    qemu_compare(&p, "qcow2", &q, "qcow2");
    qemu_io("qcow2", &p, &["read -P 0x5a 0 128K", "read -P 0x6b 1M 64K"]);
}

/// OFLAG_COPIED cleared on an L1 and an L2 entry, and the dirty bit set: `-r leaks` sets
/// the flags again and clears the bit (qemu fixes the flags with `leaks` once the
/// refcounts are right), giving the very file qemu-img check -r leaks gives.
#[test]
fn repair_leaks_fixes_copied_flags_and_dirty_bit_like_qemu() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "flags.qcow2", &[]);
    let l1 = h.l1_entry_pos(0);
    patch_u64(&p, l1, read_be_u64(&p, l1) & !OFLAG_COPIED);
    let l2 = h.l2_entry_pos(&p, h.cluster_size());
    patch_u64(&p, l2, read_be_u64(&p, l2) & !OFLAG_COPIED);
    patch_u64(&p, 72, h.incompatible | 1);
    let q = copy_of(&p, "flags-qemu.qcow2");
    let checked = dc_check(&p).expect_code(2);
    assert!(checked.stdout_str().contains("ERROR OFLAG_COPIED data cluster"), "{}", checked.describe());
    let (r, _) = repair_both("leaks", &p, &q);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout_str().contains("Repairing OFLAG_COPIED L2 cluster"), "{}", r.describe());
    qemu_check_clean(&p);
    assert_eq!(Qcow2Header::read(&p).incompatible & 1, 0, "dirty bit still set");
    assert_same_bytes(&q, &p);
}

/// A shared cluster (an internal snapshot holds it too) whose refcount says 1: a
/// corruption `-r leaks` leaves alone, flags included, and `-r all` raises to 2, giving
/// the very file qemu-img gives.
#[test]
fn repair_all_raises_a_shared_clusters_refcount_like_qemu() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "snap.qcow2", &[]);
    qemu_img(&["snapshot", "-c", "s1", &s(&p)]);
    let host = read_be_u64(&p, h.l2_entry_pos(&p, h.cluster_size())) & L1_OFFSET_MASK;
    patch(&p, h.refcount_entry_pos(&p, host / h.cluster_size()), &1u16.to_be_bytes());
    let q = copy_of(&p, "snap-qemu.qcow2");
    let checked = dc_check(&p).expect_code(2);
    assert!(!checked.stdout_str().contains("Leaked"), "snapshot references missed: {}", checked.describe());
    let (r, _) = repair_both("leaks", &p, &q);
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert_same_bytes(&q, &p);
    let (r, _) = repair_both("all", &p, &q);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    qemu_check_clean(&p);
    assert_same_bytes(&q, &p);
}
