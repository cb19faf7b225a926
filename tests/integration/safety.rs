//! Safety: failed or interrupted converts leave nothing behind and never touch an
//! existing target; converting onto the source is refused; bad options are explained.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A source that fails to convert (no driver claims it) must leave an existing target as
/// it was, and no temporary file.
#[test]
fn failed_convert_keeps_existing_target_raw() {
    let d = tmp();
    let src = d.path().join("noise"); // no raw-looking extension
    write_file(&src, &pseudo_random(256 * KIB as usize, 3));
    let dst = d.path().join("precious.img");
    write_file(&dst, b"precious contents");
    dc(&["convert", "-O", "raw", &s(&src), &s(&dst)]).expect_code(1);
    assert_eq!(read(&dst), b"precious contents");
    assert!(stray_temps(d.path()).is_empty(), "{:?}", stray_temps(d.path()));
}

/// Same with a qcow2 whose data cluster points past EOF: the failure happens mid-copy,
/// after the output was created.
#[test]
fn failed_convert_keeps_existing_target_qcow2() {
    let d = tmp();
    let (p, h) = qemu_qcow2_with_data(d.path(), "bad.qcow2", &[]);
    let pos = h.l2_entry_pos(&p, MIB);
    patch_u64(&p, pos, OFLAG_COPIED | (1 << 40));
    for ofmt in ["raw", "qcow2"] {
        let dst = d.path().join(format!("precious.{ofmt}"));
        write_file(&dst, b"precious contents");
        dc(&["convert", "-O", ofmt, &s(&p), &s(&dst)]).expect_code(1).expect_diskcast_error();
        assert_eq!(read(&dst), b"precious contents", "-O {ofmt} touched the existing target");
        assert!(stray_temps(d.path()).is_empty(), "{:?}", stray_temps(d.path()));
    }
}

/// SIGINT during a long convert: non-zero exit, no target, no temporary file.
fn sigint_case(ofmt: &str, extra: &[&str]) {
    let d = tmp();
    let src = d.path().join("big.raw");
    let size = 2 * GIB;
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), &size.to_string()]);
    // Non-zero data everywhere, a different pattern per 128 MiB, written by qemu-io.
    let cmds: Vec<String> = (0..16).map(|i| format!("write -P {} {}M 128M", 0x11 + i, i * 128)).collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("raw", &src, &refs);
    let dst = d.path().join(format!("out.{ofmt}"));
    let mut args =
        vec!["convert".to_string(), "-f".into(), "raw".into(), "-O".into(), ofmt.into(), "-j".into(), "1".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(s(&src));
    args.push(s(&dst));
    let mut child = Command::new(diskcast_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diskcast");
    // Interrupt as soon as the copy is under way (its output, unnamed, is open in the
    // target's directory), rather than after a fixed sleep that a fast machine could outrun.
    wait_for_output_fd(child.id(), d.path());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "convert of 2 GiB finished before it could be interrupted; the test needs a slower job"
    );
    let kill = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().expect("kill");
    assert!(kill.success());
    let start = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(start.elapsed() < Duration::from_secs(10), "diskcast took {:?} to stop after SIGINT", start.elapsed());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.status.success(), "interrupted convert exited 0; stderr: {stderr}");
    assert!(!dst.exists(), "interrupted convert left {}", dst.display());
    assert!(stray_temps(d.path()).is_empty(), "temporaries left: {:?}", stray_temps(d.path()));
}

#[test]
fn sigint_leaves_nothing_raw() {
    sigint_case("raw", &[]);
}

#[test]
fn sigint_leaves_nothing_qcow2() {
    sigint_case("qcow2", &["-c"]);
}

#[test]
fn convert_onto_itself_refused() {
    let d = tmp();
    let src = d.path().join("self.raw");
    write_index_pattern(&src, 2 * MIB, 3);
    let before = read(&src);
    dc(&["convert", "-f", "raw", "-O", "raw", &s(&src), &s(&src)]).expect_code(1).expect_stderr_any(&[
        "source image itself",
        "same file",
        "itself",
    ]);
    assert_eq!(read(&src), before);
    // Through another spelling of the path.
    let other = d.path().join(".").join("self.raw");
    dc(&["convert", "-f", "raw", "-O", "raw", &s(&src), &s(&other)]).expect_code(1);
    assert_eq!(read(&src), before);
    // Through a hard link.
    let link = d.path().join("link.raw");
    std::fs::hard_link(&src, &link).expect("hard link");
    dc(&["convert", "-f", "raw", "-O", "raw", &s(&src), &s(&link)]).expect_code(1).expect_stderr_any(&[
        "source image itself",
        "same file",
        "itself",
    ]);
    assert_eq!(read(&src), before);
    assert_eq!(read(&link), before);
    // Through a symlink.
    let sym = d.path().join("sym.raw");
    std::os::unix::fs::symlink(&src, &sym).expect("symlink");
    dc(&["convert", "-f", "raw", "-O", "raw", &s(&sym), &s(&src)]).expect_code(1);
    assert_eq!(read(&src), before);
    assert!(stray_temps(d.path()).is_empty());
}

#[test]
fn convert_qcow2_onto_itself_refused() {
    let d = tmp();
    let (p, _) = qemu_qcow2_with_data(d.path(), "self.qcow2", &[]);
    let before = read(&p);
    dc(&["convert", "-O", "qcow2", &s(&p), &s(&p)]).expect_code(1).expect_stderr_any(&["itself", "same file"]);
    assert_eq!(read(&p), before);
    qemu_check_clean(&p);
}

#[test]
fn unknown_o_key_lists_known_raw() {
    let d = tmp();
    let src = d.path().join("a.raw");
    write_index_pattern(&src, MIB, 0);
    let out = d.path().join("o.raw");
    dc(&["convert", "-f", "raw", "-O", "raw", "-o", "bogus_key=1", &s(&src), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["bogus_key", "takes"]);
    assert_no_output(&out);
    dc(&["convert", "-f", "raw", "-O", "raw", "-o", "novalue", &s(&src), &s(&out)])
        .expect_code(1)
        .expect_stderr_any(&["key=value"]);
    assert_no_output(&out);
}

#[test]
fn unknown_o_key_lists_known_qcow2() {
    let d = tmp();
    let src = d.path().join("a.raw");
    write_index_pattern(&src, MIB, 0);
    let out = d.path().join("o.qcow2");
    dc(&["convert", "-f", "raw", "-O", "qcow2", "-o", "bogus_key=1", &s(&src), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["bogus_key", "cluster_size", "compat", "compression_type"]);
    assert_no_output(&out);
}

#[test]
fn unknown_format_lists_known() {
    let d = tmp();
    let src = d.path().join("a.raw");
    write_index_pattern(&src, MIB, 0);
    let out = d.path().join("o.img");
    dc(&["convert", "-f", "raw", "-O", "vmdkx", &s(&src), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["vmdkx", "known", "raw", "qcow2"]);
    assert_no_output(&out);
    dc(&["convert", "-f", "nosuch", "-O", "raw", &s(&src), &s(&out)])
        .expect_code(1)
        .expect_stderr_all(&["nosuch", "known", "raw", "qcow2"]);
    assert_no_output(&out);
    dc(&["info", "-f", "nosuch", &s(&src)]).expect_code(1).expect_stderr_all(&["nosuch", "raw"]);
    dc(&["create", "-f", "nosuch", &s(&out), "1M"]).expect_code(1).expect_stderr_all(&["nosuch", "raw"]);
    assert_no_output(&out);
}

#[test]
fn progress_json_lines() {
    let d = tmp();
    let src = d.path().join("p.raw");
    let size = 64 * MIB + 4096;
    write_file(&src, &pseudo_random(size as usize, 11));
    let out = d.path().join("p.out");
    let child = Command::new(diskcast_bin())
        .args(["convert", "--progress", "json", "-f", "raw", "-O", "raw", "-j", "1", &s(&src), &s(&out)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out_put = child.wait_with_output().expect("wait");
    assert_eq!(out_put.status.code(), Some(0), "{}", String::from_utf8_lossy(&out_put.stderr));
    assert!(out_put.stdout.is_empty(), "progress must not go to stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(&out_put.stderr[..]).lines() {
        let line = line.expect("utf8");
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("progress line is not JSON ({e}): {line:?}"));
        let get = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no numeric {k:?} in {line}"));
        lines.push((get("done"), get("total"), get("rate")));
    }
    assert!(!lines.is_empty(), "no progress lines");
    let (done, total, _) = *lines.last().expect("last");
    assert_eq!(total, size, "total should be the image size: {lines:?}");
    assert_eq!(done, total, "last line must have done == total: {lines:?}");
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "done went backwards: {lines:?}");
    assert!(lines.iter().all(|l| l.0 <= l.1), "done > total: {lines:?}");
    assert_same_bytes(&src, &out);
}

#[test]
fn progress_json_lines_qcow2() {
    let d = tmp();
    let src = d.path().join("p.raw");
    write_index_pattern(&src, 16 * MIB, 2);
    let out = d.path().join("p.qcow2");
    let r = dc_ok(&["convert", "--progress", "json", "-f", "raw", "-O", "qcow2", &s(&src), &s(&out)]);
    let last = r.stderr.lines().rfind(|l| !l.trim().is_empty()).expect("progress lines");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["done"], v["total"], "{}", r.stderr);
    assert_eq!(v["total"].as_u64(), Some(16 * MIB));
    qemu_compare(&src, "raw", &out, "qcow2");
}
