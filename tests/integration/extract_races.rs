//! `extract` against untrusted images: privileged content (device nodes, setuid/setgid
//! bits, file capabilities, trusted.* xattrs) only with `--privileged`, and entries that
//! cannot be created skipped with the rest extracted and a failing exit at the end.
//! Inputs come from GNU tar and Python's tarfile (byte-patched where a field must be
//! hostile); results are judged with stat, getfattr and getcap.

use crate::support::{dc, s, tmp};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| panic!("{name} is required: {e}"));
    assert!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `getfattr -n NAME` of `p`: the value, or None when the file has no such xattr.
fn xattr(p: &Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr").args(["--absolute-names", "-e", "hex", "-n", name]).arg(p).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A GNU tar of a character device (1,3 mode 0666), a setuid root file, a file with the
/// cap_net_raw capability and a trusted.* xattr, an ordinary user.* xattr, and a fifo.
fn privileged_tar(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    tool("mknod", &["-m", "666", &s(&src.join("null")), "c", "1", "3"]);
    std::fs::write(src.join("su"), b"#!/bin/sh\n").unwrap();
    tool("chmod", &["4755", &s(&src.join("su"))]);
    std::fs::write(src.join("ping"), b"binary\n").unwrap();
    tool("setcap", &["cap_net_raw+ep", &s(&src.join("ping"))]);
    tool("setfattr", &["-n", "trusted.overlay.opaque", "-v", "y", &s(&src.join("ping"))]);
    tool("setfattr", &["-n", "user.note", "-v", "kept", &s(&src.join("ping"))]);
    tool("mkfifo", &[&s(&src.join("pipe"))]);
    let tar = dir.join("priv.tar");
    tool("tar", &["--format=pax", "--xattrs", "--xattrs-include=*", "-cf", &s(&tar), "-C", &s(&src), "."]);
    tar
}

#[test]
fn privileged_content_is_recreated_only_with_the_flag() {
    let uid = tool("id", &["-u"]);
    assert_eq!(uid.trim(), "0", "this test runs as root (as CI does)");
    let t = tmp();
    let tar = privileged_tar(t.path());

    let plain = t.path().join("plain");
    let r = dc(&["extract", &s(&tar), &s(&plain)]).expect_ok();
    let err = r.stderr.clone();
    assert!(!plain.join("null").exists(), "device node made without --privileged");
    assert_eq!(std::fs::metadata(plain.join("su")).unwrap().mode() & 0o7777, 0o755, "{err}");
    assert_eq!(xattr(&plain.join("ping"), "security.capability"), None, "{err}");
    assert_eq!(tool("getcap", &[&s(&plain.join("ping"))]).trim(), "");
    assert_eq!(xattr(&plain.join("ping"), "trusted.overlay.opaque"), None, "{err}");
    assert!(xattr(&plain.join("ping"), "user.note").is_some(), "ordinary xattrs stay: {err}");
    assert!(std::fs::symlink_metadata(plain.join("pipe")).unwrap().file_type().is_fifo(), "fifos stay");
    for want in [
        "\"null\": device node not created (needs --privileged)",
        "\"su\": setuid/setgid bits dropped (needs --privileged)",
        "\"ping\": xattr \"security.capability\" not set (needs --privileged)",
        "\"ping\": xattr \"trusted.overlay.opaque\" not set (needs --privileged)",
        "4 privileged items not recreated",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }

    let full = t.path().join("full");
    let r = dc(&["extract", "--privileged", &s(&tar), &s(&full)]).expect_ok();
    let null = std::fs::symlink_metadata(full.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(tool("stat", &["-c", "%t,%T %a", &s(&full.join("null"))]).trim(), "1,3 666");
    assert_eq!(std::fs::metadata(full.join("su")).unwrap().mode() & 0o7777, 0o4755);
    assert!(tool("getcap", &[&s(&full.join("ping"))]).contains("cap_net_raw=ep"));
    assert!(xattr(&full.join("ping"), "trusted.overlay.opaque").is_some());
    assert!(!r.stderr.contains("privileged"), "{}", r.stderr);
}

/// Runs Python with tarfile on `script` (OUT is the archive path).
fn python_tar(out: &Path, script: &str) {
    let full = format!("import tarfile, io\nOUT = {:?}\n{script}\n", s(out));
    tool("/usr/bin/python3", &["-c", &full]);
}

/// A tar: `a.txt`, the entries of `middle`, then `z.txt`.
const FILES: &str =
    "def add(t, name, data):\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\n";

#[test]
fn an_entry_that_cannot_be_created_is_skipped_and_the_exit_fails_at_the_end() {
    let t = tmp();
    let tar = t.path().join("bad.tar");
    // A 5000-byte symlink target (the kernel allows 4095), a name longer than NAME_MAX,
    // a symlink target holding a NUL byte (patched in below), a good file after each.
    python_tar(
        &tar,
        &format!(
            "{FILES}t = tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT)\nadd(t, 'a.txt', b'first')\n\
             i = tarfile.TarInfo('long-target'); i.type = tarfile.SYMTYPE; i.linkname = 'x' * 5000; t.addfile(i)\n\
             add(t, 'n' * 300, b'long name')\n\
             i = tarfile.TarInfo('nul-target'); i.type = tarfile.SYMTYPE; i.linkname = 'NULHERE' + 'y' * 200; t.addfile(i)\n\
             add(t, 'z.txt', b'last')\nt.close()\n"
        ),
    );
    let mut bytes = std::fs::read(&tar).unwrap();
    let at = bytes.windows(7).position(|w| w == b"NULHERE").unwrap();
    bytes[at + 3] = 0; // inside the PAX linkpath record, which has no checksum
    std::fs::write(&tar, &bytes).unwrap();

    let out = t.path().join("out");
    let r = dc(&["extract", &s(&tar), &s(&out)]);
    let err = r.stderr.clone();
    assert_eq!(r.code, Some(1), "{err}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"first");
    assert_eq!(std::fs::read(out.join("z.txt")).unwrap(), b"last", "the rest is extracted: {err}");
    assert!(!out.join("long-target").exists() && !out.join("nul-target").exists());
    assert!(err.contains("symlink \"long-target\": its target of 5000 bytes is longer than Linux allows"), "{err}");
    assert!(err.contains("symlink \"nul-target\": its target holds a NUL byte"), "{err}");
    assert!(err.contains(&format!("\"{}\": File name too long", "n".repeat(300))), "{err}");
    assert!(err.contains("3 entries were not extracted"), "{err}");
}

#[test]
fn a_tar_cut_inside_a_member_is_refused_before_anything_is_written() {
    // GNU tar of a small and a 300 KiB file, cut inside the big file's data as a
    // damaged download would be: the reader finds it from the headers, so no file is
    // half-written (the directory is not even created).
    let t = tmp();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a-small"), b"small").unwrap();
    std::fs::write(src.join("b-big"), vec![7u8; 300 << 10]).unwrap();
    let tar = t.path().join("cut.tar");
    tool("tar", &["--format=pax", "-cf", &s(&tar), "-C", &s(&src), "a-small", "b-big"]);
    let len = std::fs::metadata(&tar).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&tar).unwrap().set_len(len / 2).unwrap();
    let out = t.path().join("out");
    let r = dc(&["extract", &s(&tar), &s(&out)]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("cut.tar") && r.stderr.contains("truncated"), "{}", r.stderr);
    assert!(!out.exists(), "{}", r.stderr);
}

#[test]
fn a_partly_extracted_file_of_a_directory_source_is_removed() {
    // A file whose data cannot be read (unreadable to the ordinary user extracting a
    // directory source): it was created, then removed when its read failed; the rest
    // is extracted, and the exit fails.
    let t = tmp();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("open.txt"), b"x").unwrap();
    std::fs::write(src.join("secret.txt"), b"root only").unwrap();
    tool("chmod", &["a+rwx", &s(t.path()), &s(&src)]);
    tool("chmod", &["0600", &s(&src.join("secret.txt"))]);
    let out = t.path().join("out");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::support::diskcast_bin(), "extract"])
        .args([&src, &out])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(std::fs::read(out.join("open.txt")).unwrap(), b"x");
    assert!(!out.join("secret.txt").exists(), "{err}");
    assert!(err.contains("secret.txt") && err.contains("1 entry was not extracted"), "{err}");
}
