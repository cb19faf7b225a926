//! `--replay-log` at the command line: a VHDX with a pending log is refused (nothing is
//! written, no output appears) until the user allows the replay; then diskcast's replay
//! gives the same image as qemu's. The log is crafted by the VHDX crate's test helpers.

use crate::support::*;
use crate::vhdx_common::{add_pending_log, patterned};

#[test]
fn pending_vhdx_log_is_refused_until_replay_is_allowed() {
    let d = tmp();
    let src = patterned(d.path(), "dirty.vhdx", "14M", "block_size=1M");
    add_pending_log(&src);
    let theirs = d.path().join("qemu-replayed.vhdx");
    std::fs::copy(&src, &theirs).unwrap();
    let _ = qemu_img_status(&["check", "-r", "all", "-f", "vhdx", &s(&theirs)]);
    qemu_img(&["info", "-f", "vhdx", &s(&theirs)]); // qemu opens it now

    let before = read(&src);
    let out = d.path().join("out.raw");
    let (ss, os, ts) = (s(&src), s(&out), s(&theirs));
    for args in [
        vec!["convert", "-O", "raw", ss.as_str(), os.as_str()],
        vec!["info", ss.as_str()],
        vec!["compare", ss.as_str(), ts.as_str()],
    ] {
        let r = dc(&args);
        assert_ne!(r.code, Some(0), "{}", r.describe());
        assert!(r.stderr.contains("pending log") && r.stderr.contains("--replay-log"), "{}", r.describe());
    }
    assert_no_output(&out);
    assert_eq!(read(&src), before, "refusing must not write to the image");

    // A command that is wrong anywhere is refused before the log is replayed: the whole
    // command line is checked before the input is opened.
    let bad_dir = d.path().join("no-such-dir").join("out.raw");
    for (args, names) in [
        (vec!["-O", "nosuch", ss.as_str(), os.as_str()], "nosuch"),
        (vec!["-O", "qcow2", "-o", "cluster_size=3", ss.as_str(), os.as_str()], "cluster_size"),
        (vec!["-O", "qcow2", "-o", "bogus=1", ss.as_str(), os.as_str()], "bogus"),
        (vec!["-c", "-O", "raw", ss.as_str(), "-"], "compress"),
        (vec!["-O", "qcow2", ss.as_str(), "-"], "standard output"),
        (vec!["-S", "12Q", ss.as_str(), os.as_str()], "12Q"),
        (vec!["-O", "raw", ss.as_str(), bad_dir.to_str().unwrap()], "no-such-dir"),
    ] {
        let mut full = vec!["convert", "--replay-log"];
        full.extend(args);
        dc(&full).expect_code(1).expect_stderr_all(&[names]);
        assert_eq!(read(&src), before, "an invalid command must not replay the log: {full:?}");
    }
    dc(&["compare", "--replay-log", ss.as_str(), "-F", "nosuch", ts.as_str()])
        .expect_code(2)
        .expect_stderr_all(&["nosuch"]);
    assert_eq!(read(&src), before, "compare with a bad -F must not replay the log");
    assert_no_output(&out);

    dc_ok(&["convert", "--replay-log", "-O", "raw", &s(&src), &s(&out)]);
    qemu_compare(&theirs, "vhdx", &out, "raw");
    // The log is replayed into the file: it now opens without the flag, and qemu agrees.
    dc_ok(&["compare", &s(&src), &s(&theirs)]);
    let chk = qemu_img_status(&["check", "-f", "vhdx", &s(&src)]);
    assert_eq!(chk.code, Some(0), "{}", chk.describe());
}
