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

    dc_ok(&["convert", "--replay-log", "-O", "raw", &s(&src), &s(&out)]);
    qemu_compare(&theirs, "vhdx", &out, "raw");
    // The log is replayed into the file: it now opens without the flag, and qemu agrees.
    dc_ok(&["compare", &s(&src), &s(&theirs)]);
    let chk = qemu_img_status(&["check", "-f", "vhdx", &s(&src)]);
    assert_eq!(chk.code, Some(0), "{}", chk.describe());
}
