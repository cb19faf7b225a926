//! compare: exit 0 same, 1 different (with the exact first offset), 2 error. qemu-img
//! compare gives the reference verdict on every pair.

use crate::support::*;
use std::path::Path;

fn mismatch_offset(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.contains("Content mismatch at offset "))
        .unwrap_or_else(|| panic!("no 'Content mismatch at offset N' line in: {stdout}"));
    let rest = &line[line.find("offset ").expect("offset") + 7..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no offset number in {line:?}"))
}

fn flip_byte(p: &Path, off: u64) {
    let b = read(p)[off as usize];
    patch(p, off, &[b ^ 0x5a]);
}

#[test]
fn identical_raw_images() {
    let d = tmp();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    write_index_pattern(&a, 4 * MIB + 100, 3);
    std::fs::copy(&a, &b).expect("copy");
    qemu_compare(&a, "raw", &b, "raw");
    let r = dc(&["compare", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).expect_ok();
    assert!(r.stdout_str().contains("identical"), "{}", r.stdout_str());
    let r = dc(&["compare", "-q", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).expect_ok();
    assert!(r.stdout.is_empty(), "-q printed: {}", r.stdout_str());
}

#[test]
fn one_flipped_byte_raw() {
    let d = tmp();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    write_index_pattern(&a, 4 * MIB, 0);
    for off in [0u64, 1, 4095, 3 * MIB + 12345, 4 * MIB - 1] {
        std::fs::copy(&a, &b).expect("copy");
        flip_byte(&b, off);
        let q = qemu_img_status(&["compare", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]);
        assert_eq!(q.code, Some(1), "qemu-img compare should see a difference at {off}");
        for j in ["1", "2"] {
            let r = dc(&["compare", "-j", j, "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).expect_code(1);
            assert_eq!(mismatch_offset(&r.stdout_str()), off, "wrong offset reported (-j {j})");
        }
        dc(&["compare", "-q", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).expect_code(1);
    }
}

/// A byte flipped in a hole (zeros on one side).
#[test]
fn flipped_byte_in_hole() {
    let d = tmp();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&a), "16M"]);
    qemu_img(&["create", "-q", "-f", "raw", &s(&b), "16M"]);
    let off = 9 * MIB + 777;
    patch(&b, off, &[1]);
    assert_raw_mismatch_both_ways(&a, &b, off);
}

#[test]
fn different_sizes_zero_tail_is_same_nonzero_tail_differs() {
    let d = tmp();
    let a = d.path().join("a.raw");
    let b = d.path().join("b.raw");
    write_index_pattern(&a, 2 * MIB, 0);
    std::fs::copy(&a, &b).expect("copy");
    std::fs::OpenOptions::new().write(true).open(&b).expect("open").set_len(3 * MIB).expect("grow");
    assert_eq!(qemu_img_status(&["compare", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).code, Some(0));
    dc(&["compare", "-f", "raw", "-F", "raw", &s(&a), &s(&b)]).expect_ok();
    dc(&["compare", "-f", "raw", "-F", "raw", &s(&b), &s(&a)]).expect_ok();
    let off = 2 * MIB + 4321;
    patch(&b, off, &[0xff]);
    assert_raw_mismatch_both_ways(&a, &b, off);
}

#[test]
fn unreadable_is_exit_2() {
    let d = tmp();
    let a = d.path().join("a.raw");
    write_index_pattern(&a, MIB, 0);
    let missing = d.path().join("missing.raw");
    dc(&["compare", &s(&a), &s(&missing)]).expect_code(2).expect_diskcast_error().expect_stderr_any(&["missing.raw"]);
    dc(&["compare", "-f", "raw", "-F", "raw", &s(&missing), &s(&a)]).expect_code(2).expect_stderr_any(&["missing.raw"]);
    // A directory is not an image.
    dc(&["compare", "-f", "raw", "-F", "raw", &s(&a), &s(d.path())]).expect_code(2).expect_diskcast_error();
    // Unknown format name.
    dc(&["compare", "-f", "nosuchfmt", &s(&a), &s(&a)]).expect_code(2).expect_stderr_any(&["nosuchfmt"]);
}

/// raw vs qcow2 holding the same bytes; then one byte flipped in the qcow2 by qemu-io.
#[test]
fn raw_vs_qcow2() {
    let d = tmp();
    let raw = d.path().join("a.raw");
    write_index_pattern(&raw, 4 * MIB, 4);
    let q = d.path().join("a.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &s(&raw), &s(&q)]);
    dc(&["compare", &s(&q), "-F", "raw", &s(&raw)]).expect_ok();
    dc(&["compare", "-F", "qcow2", "-f", "raw", &s(&raw), &s(&q)]).expect_ok();
    // In a data block, and in a hole (block 4 is a hole).
    for off in [MIB + 4096 + 17, 4 * 4096 + 100] {
        let q2 = d.path().join("b.qcow2");
        std::fs::copy(&q, &q2).expect("copy");
        qemu_io("qcow2", &q2, &[&format!("write -P 0xfe {off} 1")]);
        assert_eq!(qemu_img_status(&["compare", "-f", "raw", "-F", "qcow2", &s(&raw), &s(&q2)]).code, Some(1));
        let r = dc(&["compare", "-f", "raw", &s(&raw), &s(&q2)]).expect_code(1);
        assert_eq!(mismatch_offset(&r.stdout_str()), off);
    }
}

/// qemu-img and diskcast both see raw `a` and `b` differ; diskcast names byte `off`, in
/// either argument order.
fn assert_raw_mismatch_both_ways(a: &std::path::Path, b: &std::path::Path, off: u64) {
    assert_eq!(qemu_img_status(&["compare", "-f", "raw", "-F", "raw", &s(a), &s(b)]).code, Some(1));
    for (x, y) in [(a, b), (b, a)] {
        let r = dc(&["compare", "-f", "raw", "-F", "raw", &s(x), &s(y)]).expect_code(1);
        assert_eq!(mismatch_offset(&r.stdout_str()), off);
    }
}
