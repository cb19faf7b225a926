//! Hostile images, built by patching qemu-made ones. Every command must fail cleanly:
//! exit 1, a message naming the problem, no panic, and no output file.

use crate::support::*;
use std::path::{Path, PathBuf};

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

/// Converts `bad` to raw and to qcow2: exit 1, stderr names the problem (one of `words`),
/// nothing created. Then every other command must not panic (dc() asserts that).
/// With `qemu_refuses`, qemu-img convert must refuse the image too (qemu's verdict).
fn assert_refused(bad: &Path, words: &[&str], qemu_refuses: bool) {
    assert_refused_opts(bad, words, qemu_refuses, true);
}

/// `qemu_check`: also run `qemu-img check` for a verdict (not on backing loops, where
/// qemu-img check itself never returns).
fn assert_refused_opts(bad: &Path, words: &[&str], qemu_refuses: bool, qemu_check: bool) {
    let dir = bad.parent().expect("parent");
    for ofmt in ["raw", "qcow2"] {
        let out = dir.join(format!("hostile-out.{ofmt}"));
        dc(&["convert", "-O", ofmt, &s(bad), &s(&out)]).expect_code(1).expect_diskcast_error().expect_stderr_any(words);
        assert_no_output(&out);
    }
    dc(&["convert", "-O", "raw", &s(bad), "-"]).expect_code(1).expect_stderr_any(words);
    // The other commands: no panic, no success claiming a clean bill of health.
    let info = dc(&["info", "--output", "json", &s(bad)]);
    assert!(matches!(info.code, Some(0 | 1)), "info exit {:?}: {}", info.code, info.stderr);
    let map = dc(&["map", "--output", "json", &s(bad)]);
    assert!(matches!(map.code, Some(0 | 1)), "map exit {:?}: {}", map.code, map.stderr);
    // check: when qemu-img check finds a problem, diskcast check must not call it clean.
    let chk = dc(&["check", &s(bad)]);
    let qchk = if qemu_check { qemu_img_status(&["check", &s(bad)]) } else { dc(&["--version"]) };
    if qemu_check && qchk.code != Some(0) {
        assert_ne!(
            chk.code,
            Some(0),
            "diskcast check says clean, qemu-img check exits {:?} ({}{}); diskcast said: {}",
            qchk.code,
            qchk.stdout_str(),
            qchk.stderr,
            chk.stdout_str()
        );
    }
    let cmp = dc(&["compare", &s(bad), &s(bad)]);
    assert!(matches!(cmp.code, Some(0 | 2)), "compare exit {:?}: {}", cmp.code, cmp.stderr);
    if qemu_refuses {
        let qout = dir.join("qemu-out.raw");
        let q = qemu_img_status(&["convert", "-O", "raw", &s(bad), &s(&qout)]);
        assert_ne!(q.code, Some(0), "test premise: qemu-img accepts this image too");
        let _ = std::fs::remove_file(&qout);
    }
}

fn base(dir: &Path) -> (PathBuf, Qcow2Header) {
    qemu_qcow2_with_data(dir, "bad.qcow2", &[])
}

#[test]
fn truncated_header() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "truncated_header", || {
        let d = tmp();
        let (p, _) = base(d.path());
        std::fs::OpenOptions::new().write(true).open(&p).expect("open").set_len(50).expect("truncate");
        assert_refused(&p, &["truncat", "short", "header", "too small", "end of file"], true);
        let info = dc(&["info", &s(&p)]);
        assert_eq!(info.code, Some(1), "info on a 50-byte qcow2: {}", info.stdout_str());
    });
}

#[test]
fn cluster_bits_40() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "cluster_bits_40", || {
        let d = tmp();
        let (p, _) = base(d.path());
        patch_u32(&p, 20, 40);
        assert_refused(&p, &["cluster_bits", "cluster size"], true);
        assert_eq!(dc(&["info", &s(&p)]).code, Some(1));
    });
}

#[test]
fn l1_size_huge() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "l1_size_huge", || {
        let d = tmp();
        let (p, _) = base(d.path());
        patch_u32(&p, 36, 0xffff_ffff);
        assert_refused(&p, &["l1_size", "l1 table", "l1"], true);
    });
}

#[test]
fn l1_table_past_eof() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "l1_table_past_eof", || {
        let d = tmp();
        let (p, _) = base(d.path());
        patch_u64(&p, 40, 1 << 40);
        // qemu reads zeros past EOF and converts this; diskcast must refuse it.
        assert_refused(&p, &["l1_table_offset", "l1"], false);
    });
}

#[test]
fn refcount_table_past_eof() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "refcount_table_past_eof", || {
        let d = tmp();
        let (p, _) = base(d.path());
        patch_u64(&p, 48, 1 << 40);
        assert_refused(&p, &["refcount"], false);
    });
}

#[test]
fn l2_entry_past_eof() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "l2_entry_past_eof", || {
        let d = tmp();
        let (p, h) = base(d.path());
        let pos = h.l2_entry_pos(&p, 64 * KIB);
        assert_ne!(read_be_u64(&p, pos) & L2_OFFSET_MASK, 0, "guest cluster 1 should be allocated");
        patch_u64(&p, pos, OFLAG_COPIED | (1 << 40));
        // qemu reads zeros past EOF and converts this; diskcast must refuse it.
        assert_refused(&p, &["l2", "end of file", "past", "beyond", "outside"], false);
    });
}

#[test]
fn l2_entry_into_header_cluster() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "l2_entry_into_header_cluster", || {
        let d = tmp();
        let (p, h) = base(d.path());
        let pos = h.l2_entry_pos(&p, 0);
        assert_ne!(read_be_u64(&p, pos) & L2_OFFSET_MASK, 0, "guest cluster 0 should be allocated");
        // Host offset 512: inside the header cluster (and unaligned). qemu calls it corrupt.
        // (Offset 0 itself means "unallocated" to qemu, so it cannot express the header.)
        patch_u64(&p, pos, OFLAG_COPIED | 512);
        assert_refused(&p, &["l2", "header", "overlap", "metadata", "invalid"], true);
    });
}

#[test]
fn compressed_descriptor_past_eof() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "compressed_descriptor_past_eof", || {
        let d = tmp();
        let (plain, _) = base(d.path());
        let p = d.path().join("comp.qcow2");
        qemu_img(&["convert", "-c", "-O", "qcow2", &s(&plain), &s(&p)]);
        let h = Qcow2Header::read(&p);
        let pos = h.l2_entry_pos(&p, 0);
        let entry = read_be_u64(&p, pos);
        assert_ne!(entry & OFLAG_COMPRESSED, 0, "guest cluster 0 should be compressed: {entry:#x}");
        let x = 62 - (h.cluster_bits - 8);
        let len = file_len(&p);
        let desc = OFLAG_COMPRESSED | (20u64 << x) | (len - 100);
        patch_u64(&p, pos, desc);
        assert_refused(&p, &["compress", "end of file", "past", "beyond", "outside"], true);
    });
}

#[test]
fn unknown_incompatible_feature_bit_20() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "unknown_incompatible_feature_bit_20", || {
        let d = tmp();
        let (p, h) = base(d.path());
        patch_u64(&p, 72, h.incompatible | (1 << 20));
        assert_refused(&p, &["feature", "incompatible"], true);
        assert_eq!(dc(&["info", &s(&p)]).code, Some(1));
    });
}

#[test]
fn corrupt_bit_set() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "corrupt_bit_set", || {
        let d = tmp();
        let (p, h) = base(d.path());
        patch_u64(&p, 72, h.incompatible | 2);
        assert_refused(&p, &["corrupt"], false);
    });
}

#[test]
fn backing_etc_passwd_refused_unless_allowed() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "backing_etc_passwd_refused_unless_allowed", || {
        let d = tmp();
        let p = d.path().join("evil.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", &s(&p), "1M"]);
        assert_refused(&p, &["outside", "allow-backing"], false);
        let out = d.path().join("ok.raw");
        dc_ok(&["convert", "--allow-backing", "/etc/passwd", "-O", "raw", &s(&p), &s(&out)]);
        let reference = d.path().join("ref.raw");
        qemu_img(&["convert", "-O", "raw", &s(&p), &s(&reference)]);
        assert_same_bytes(&reference, &out);
        let v = dc_ok(&["info", "--allow-backing", "/etc/passwd", "--output", "json", &s(&p)]).json();
        assert_eq!(v["backing-filename"], "/etc/passwd");
        // Plain info opens no backing file, so the hostile image can be inspected as it is;
        // asking for the chain goes through the gate again.
        let v = dc_ok(&["info", "--output", "json", &s(&p)]).json();
        assert_eq!(v["backing-filename"], "/etc/passwd", "{v}");
        assert!(v.get("backing-chain").is_none(), "{v}");
        assert!(dc_ok(&["info", &s(&p)]).stdout_str().contains("backing file: /etc/passwd"));
        dc(&["info", "--backing-chain", &s(&p)]).expect_code(1).expect_stderr_any(&["allow-backing"]);
    });
}

#[test]
fn backing_json_name_refused() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "backing_json_name_refused", || {
        let d = tmp();
        let p = d.path().join("evil.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            r#"json:{"driver":"raw","file":{"driver":"file","filename":"/etc/passwd"}}"#,
            "-F",
            "raw",
            &s(&p),
            "1M",
        ]);
        assert_refused(&p, &["json"], false);
        // Even --allow-backing / does not make a protocol name a file.
        let out = d.path().join("o.raw");
        dc(&["convert", "--allow-backing", "/", "-O", "raw", &s(&p), &s(&out)])
            .expect_code(1)
            .expect_stderr_any(&["json"]);
        assert_no_output(&out);
    });
}

#[test]
fn backing_loop_refused() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "backing_loop_refused", || {
        let d = tmp();
        // qemu-img refuses to create a self-backed image, so create it under another name
        // that it names, then rename it to that name.
        qemu_img_in(
            Some(d.path()),
            &["create", "-q", "-f", "qcow2", "-u", "-b", "self.qcow2", "-F", "qcow2", "tmp.qcow2", "1M"],
        )
        .expect_ok();
        std::fs::rename(d.path().join("tmp.qcow2"), d.path().join("self.qcow2")).expect("rename");
        assert_refused_opts(&d.path().join("self.qcow2"), &["loop"], false, false);
        qemu_img_in(
            Some(d.path()),
            &["create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2", "1M"],
        )
        .expect_ok();
        qemu_img_in(
            Some(d.path()),
            &["create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2", "1M"],
        )
        .expect_ok();
        assert_refused_opts(&d.path().join("a.qcow2"), &["loop"], false, false);
    });
}

#[test]
fn chain_deeper_than_16_refused_16_accepted() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "chain_deeper_than_16_refused_16_accepted", || {
        let d = tmp();
        qemu_img_in(Some(d.path()), &["create", "-q", "-f", "qcow2", "c0.qcow2", "1M"]).expect_ok();
        qemu_io("qcow2", &d.path().join("c0.qcow2"), &["write -P 0xc0 0 4K"]);
        for i in 1..20 {
            let (me, below) = (format!("c{i}.qcow2"), format!("c{}.qcow2", i - 1));
            qemu_img_in(Some(d.path()), &["create", "-q", "-f", "qcow2", "-u", "-b", &below, "-F", "qcow2", &me, "1M"])
                .expect_ok();
        }
        qemu_io("qcow2", &d.path().join("c10.qcow2"), &["write -P 0xca 64K 4K"]);
        // 16 images (c15 on top of c0): a real snapshot chain, must work and match qemu.
        let ok = d.path().join("c15.qcow2");
        let out = d.path().join("flat16.raw");
        dc_ok(&["convert", "-O", "raw", &s(&ok), &s(&out)]);
        qemu_compare(&ok, "qcow2", &out, "raw");
        // 20 images: refused.
        assert_refused(&d.path().join("c19.qcow2"), &["deeper", "depth", "16"], false);
    });
}

/// Random bytes are no image: refused without -f raw.
#[test]
fn random_bytes_not_probed() {
    diskcast_testkit::hostile::within(LIMIT_SECS, "random_bytes_not_probed", || {
        let d = tmp();
        let p = d.path().join("noise"); // no raw-looking extension (.img, .raw, ...)
        write_file(&p, &pseudo_random(MIB as usize, 99));
        let out = d.path().join("noise.out");
        dc(&["convert", "-O", "raw", &s(&p), &s(&out)])
            .expect_code(1)
            .expect_stderr_any(&["cannot tell", "format"])
            .expect_stderr_all(&["-f raw"]);
        assert_no_output(&out);
        dc_ok(&["convert", "-f", "raw", "-O", "raw", &s(&p), &s(&out)]);
        assert_same_bytes(&p, &out);
    });
}
