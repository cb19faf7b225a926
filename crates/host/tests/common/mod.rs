//! Fixtures for the host crate's tests: a source directory with every kind of entry,
//! tools run as oracles, a time limit.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// Runs a tool; panics (fails the test) if it is missing or fails.
pub fn sh(tool: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required by this test (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `sh` with string arguments.
pub fn shs(tool: &str, args: &[&str]) -> Vec<u8> {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| std::ffi::OsStr::new(*s)).collect();
    sh(tool, &a)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A long directory name (over ustar's 100-byte name field).
pub const LONG_DIR: &str =
    "a-directory-name-that-is-long-enough-to-need-a-pax-or-gnu-long-name-record-in-any-tar-0123456789";

/// Fills `src` with every kind of entry tar can hold: files with xattrs, hard links,
/// relative/absolute/dangling symlinks, a fifo, a sparse file, an empty file, a setuid
/// file, long and non-UTF-8 names, odd modes, nanosecond mtimes (and a device node as
/// root).
pub fn make_source(src: &Path) {
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello\n").unwrap();
    shs("setfattr", &["-n", "user.comment", "-v", "a note", src.join("a.txt").to_str().unwrap()]);
    std::fs::hard_link(src.join("a.txt"), src.join("dir/hard")).unwrap();
    std::os::unix::fs::symlink("../a.txt", src.join("dir/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere", src.join("dangling")).unwrap();
    shs("mkfifo", &[src.join("fifo").to_str().unwrap()]);
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(16 << 20).unwrap();
    // Ten islands of data: more runs than an old GNU sparse header holds (4), so the
    // map continues in extension blocks.
    for i in 0..10u64 {
        std::os::unix::fs::FileExt::write_all_at(&sparse, format!("island {i}").as_bytes(), i * (3 << 19) + 4096)
            .unwrap();
    }
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"in the middle", 8 << 20).unwrap();
    drop(sparse);
    std::fs::write(src.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("dir/sub/big.bin"), &big).unwrap();
    std::fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    let long = src.join(LONG_DIR).join(LONG_DIR);
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join("file-with-a-long-path.txt"), b"deep\n").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
    std::fs::write(src.join(odd), b"not utf-8 name\n").unwrap();
    std::fs::create_dir(src.join("private")).unwrap();
    std::fs::write(src.join("private/secret"), b"s").unwrap();
    if is_root() {
        shs("mknod", &[src.join("null").to_str().unwrap(), "c", "1", "3"]);
    }
    chmod(&src.join("setuid"), 0o4755);
    chmod(&src.join("private/secret"), 0o600);
    chmod(&src.join("private"), 0o700);
    // Nanosecond times, deepest entries first so directories keep theirs.
    let mut all = Vec::new();
    walk(src, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for (i, p) in all.iter().enumerate() {
        let t = format!("@{}.{:09}", 1_600_000_000 + i as i64 * 1000, 123_456_789 + i);
        let mut args: Vec<&std::ffi::OsStr> = vec!["-h".as_ref(), "-d".as_ref(), t.as_ref()];
        args.push(p.as_os_str());
        sh("touch", &args);
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}
