//! `diskcast wim split` end to end: a WIM made by `wimlib-imagex capture` split into
//! `.swm` parts that wimlib verifies and joins back byte for byte; a file that is not a
//! WIM is a clear error and leaves nothing behind.

use crate::support::*;
use diskcast_testkit::{pattern, run};
use std::path::Path;

fn capture(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..24u64 {
        std::fs::write(src.join(format!("f{i}.bin")), pattern(90_000 + 7_000 * usize::try_from(i).unwrap(), i))
            .unwrap();
    }
    let wim = dir.join("install.wim");
    run("wimlib-imagex", &["capture", src.to_str().unwrap(), wim.to_str().unwrap(), "one", "--compress=xpress"]);
    run("wimlib-imagex", &["optimize", wim.to_str().unwrap()]);
    wim
}

#[test]
fn split_parts_verify_and_join_back() {
    let t = tempfile::tempdir().unwrap();
    let wim = capture(t.path());
    let out = t.path().join("stick/sources");
    std::fs::create_dir_all(&out).unwrap();
    let r = dc_ok(&[
        "wim",
        "split",
        wim.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--size",
        "512K",
        "--output",
        "json",
    ]);
    let parts: Vec<String> =
        r.json()["parts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(parts[0].ends_with("stick/sources/install.swm") && parts[1].ends_with("install2.swm"), "{parts:?}");
    for p in &parts {
        assert!(std::fs::metadata(p).unwrap().len() <= 512 << 10, "{p}");
    }
    let verify = run("wimlib-imagex", &["verify", &parts[0], &format!("--ref={}/install*.swm", out.display())]);
    assert!(verify.contains("was successfully verified"), "{verify}");
    let joined = t.path().join("joined.wim");
    let mut args = vec!["join", joined.to_str().unwrap()];
    args.extend(parts.iter().map(String::as_str));
    run("wimlib-imagex", &args);
    assert!(std::fs::read(&joined).unwrap() == std::fs::read(&wim).unwrap(), "join differs from the original");
}

#[test]
fn a_file_that_is_not_a_wim_is_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let not_wim = t.path().join("install.wim");
    std::fs::write(&not_wim, vec![7u8; 4096]).unwrap();
    dc(&["wim", "split", not_wim.to_str().unwrap()])
        .expect_code(1)
        .expect_diskcast_error()
        .expect_stderr_all(&["install.wim", "not a WIM file"]);
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["install.wim"], "no part written");
}
