//! `ls`, `cat` and `extract` on a host directory and on tars made by GNU tar, judged by
//! GNU tar's own listing and extraction.

use crate::support::{dc, dc_ok, s, tmp};
use diskcast_testkit::manifest::{Compare, assert_same, manifest};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

fn tool(name: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| panic!("{name} is required: {e}"));
    assert!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A small tree: a file, a symlink to it, a hard link, a subdirectory, an odd name.
fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
    std::fs::write(dir.join("etc/hostname"), b"box\n").unwrap();
    std::fs::write(dir.join("etc/conf.d/net"), vec![b'n'; 70_000]).unwrap();
    std::os::unix::fs::symlink("etc/hostname", dir.join("name")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("abs-etc")).unwrap();
    std::fs::hard_link(dir.join("etc/hostname"), dir.join("etc/hostname.bak")).unwrap();
    std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"?").unwrap();
}

fn tar_of(dir: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["--format=pax", "-c"];
    args.extend(extra);
    args.extend(["-f", out.to_str().unwrap(), "-C", dir.to_str().unwrap(), "."]);
    tool("tar", &args);
}

#[test]
fn ls_lists_a_directory_and_a_tar_alike() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let tar = t.path().join("src.tar.gz");
    tar_of(&src, &tar, &["-z"]);
    for source in [s(&src), s(&tar)] {
        let plain = dc_ok(&["ls", &source]).stdout_str();
        assert!(plain.lines().any(|l| l == "etc") && plain.lines().any(|l| l == "name"), "{plain}");
        let long = dc_ok(&["ls", "-l", &source, "/"]).stdout_str();
        assert!(long.lines().any(|l| l.starts_with('l') && l.ends_with("name -> etc/hostname")), "{long}");
        assert!(long.lines().any(|l| l.starts_with("drwx") && l.ends_with(" etc")), "{long}");
        let rec = dc_ok(&["ls", "-R", &source, "etc"]).stdout_str();
        assert!(rec.lines().any(|l| l == "conf.d/net"), "{rec}");
        // Following a symlink inside the tree to list a directory.
        let via = dc_ok(&["ls", &source, "abs-etc"]).stdout_str();
        assert!(via.lines().any(|l| l == "hostname"), "abs-etc must resolve inside the tree: {via}");
        let json = dc_ok(&["ls", "--output", "json", &source]).json();
        let entries = json.as_array().unwrap();
        let odd = entries.iter().find(|e| e.get("path_hex").is_some()).expect("non-UTF-8 name gets path_hex");
        assert_eq!(odd["path_hex"], "626164ff6e616d65");
        let host = entries.iter().find(|e| e["path"] == "etc").unwrap();
        assert_eq!(host["type"], "dir");
        let name = entries.iter().find(|e| e["path"] == "name").unwrap();
        assert_eq!(name["target"], "etc/hostname");
    }
    // The listing agrees with GNU tar's on the set of paths.
    let theirs = String::from_utf8(tool("tar", &["-tzf", tar.to_str().unwrap()])).unwrap_or_default();
    let ours = dc_ok(&["ls", "-R", &s(&tar)]).stdout_str();
    let mut a: Vec<&str> = theirs
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .filter(|l| !l.is_empty() && *l != ".")
        .collect();
    let mut b: Vec<&str> = ours.lines().collect();
    // The non-UTF-8 name: tar prints it escaped, we print its bytes (checked above).
    a.retain(|l| !l.starts_with("bad"));
    b.retain(|l| !l.starts_with("bad"));
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

#[test]
fn cat_follows_symlinks_in_the_tree_and_refuses_directories() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let tar = t.path().join("src.tar");
    tar_of(&src, &tar, &[]);
    for source in [s(&src), s(&tar)] {
        assert_eq!(dc_ok(&["cat", &source, "name"]).stdout, b"box\n");
        assert_eq!(dc_ok(&["cat", &source, "/etc/conf.d/net"]).stdout, vec![b'n'; 70_000]);
        dc(&["cat", &source, "etc"]).expect_code(1).expect_stderr_any(&["dir"]);
        dc(&["cat", &source, "missing"]).expect_code(1).expect_stderr_any(&["no such file"]);
    }
}

#[test]
fn extract_matches_gnu_tar_and_writes_tars_gnu_tar_reads() {
    let t = tmp();
    let src = t.path().join("src");
    make_tree(&src);
    let tar = t.path().join("src.tar");
    tar_of(&src, &tar, &[]);
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    tool("tar", &["-x", "-p", "-f", tar.to_str().unwrap(), "-C", theirs.to_str().unwrap()]);
    let ours = t.path().join("ours");
    let r = dc_ok(&["extract", &s(&tar), &s(&ours)]);
    assert!(r.stderr.contains("extracted"), "{}", r.stderr);
    assert_same(&manifest(&theirs), &manifest(&ours), Compare::default(), "extract tar");
    // A directory source extracts to the same tree.
    let from_dir = t.path().join("from-dir");
    dc_ok(&["extract", &s(&src), &s(&from_dir)]);
    assert_same(&manifest(&src), &manifest(&from_dir), Compare::default(), "extract dir");
    // -o writes a tar GNU tar lists and extracts into the same tree; -o - the same bytes.
    let out = t.path().join("out.tar");
    dc_ok(&["extract", &s(&src), "-o", &s(&out)]);
    let listing = String::from_utf8_lossy(&tool("tar", &["-tvf", out.to_str().unwrap()])).into_owned();
    assert!(listing.contains("name -> etc/hostname"), "{listing}");
    let back = t.path().join("back");
    std::fs::create_dir(&back).unwrap();
    tool("tar", &["-x", "-p", "-f", out.to_str().unwrap(), "-C", back.to_str().unwrap()]);
    assert_same(&manifest(&src), &manifest(&back), Compare::default(), "extract -o");
    let stdout = dc_ok(&["extract", &s(&src), "-o", "-"]).stdout;
    assert!(stdout == std::fs::read(&out).unwrap(), "-o - must write the same tar as -o FILE");
    // An existing non-empty directory is refused.
    dc(&["extract", &s(&tar), &s(&ours)]).expect_code(1).expect_stderr_any(&["not empty"]);
}

#[test]
fn extract_of_a_hostile_tar_never_writes_outside_dir() {
    let t = tmp();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let tar = t.path().join("evil.tar");
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w')\ndef add(n, data=b'', **kw):\n    i = tarfile.TarInfo(n)\n    for k, v in kw.items(): setattr(i, k, v)\n    i.size = len(data)\n    t.addfile(i, io.BytesIO(data))\nadd('../outside/a', b'x')\nadd('link', type=tarfile.SYMTYPE, linkname={:?})\nadd('link/b', b'x')\nadd('hl', type=tarfile.LNKTYPE, linkname='../../etc/passwd')\nadd({:?}, b'x')\nadd('good', b'fine')\nt.close()\n",
        tar.to_str().unwrap(),
        outside.to_str().unwrap(),
        format!("{}/c", outside.display())
    );
    tool("/usr/bin/python3", &["-c", &script]);
    let dir = t.path().join("dir");
    let r = dc_ok(&["extract", &s(&tar), &s(&dir)]);
    assert_eq!(r.stderr.matches("warning").count(), 3, "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "wrote outside DIR");
    assert_eq!(std::fs::read(dir.join("good")).unwrap(), b"fine");
    assert!(dir.join(outside.strip_prefix("/").unwrap()).join("c").is_file());
    // ls shows the skipped members as warnings too.
    dc_ok(&["ls", &s(&tar)]).expect_stderr_any(&["'..'"]);
}

#[test]
fn sources_without_a_readable_tree_get_clear_errors() {
    let t = tmp();
    let disk = t.path().join("blank.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    dc(&["ls", &s(&disk)]).expect_code(1).expect_stderr_any(&["no filesystem diskcast can read found in"]);
    dc(&["ls", "docker-daemon:alpine"]).expect_code(1).expect_stderr_any(&["not supported"]);
    dc(&["ls", &s(&t.path().join("missing"))]).expect_code(1).expect_stderr_any(&["cannot open"]);
    let xz = t.path().join("a.tar.xz");
    std::fs::write(&xz, b"\xfd7zXZ\0rest").unwrap();
    dc(&["ls", &s(&xz)]).expect_code(1).expect_stderr_any(&["xz"]);
}

#[test]
fn extract_as_an_ordinary_user_skips_devices_and_setuid_and_says_so() {
    // Run the binary as nobody (CI runs as root; setpriv drops to an ordinary user).
    let t = tmp();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let tar = work.join("special.tar");
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w', format=tarfile.PAX_FORMAT)\ni = tarfile.TarInfo('null'); i.type = tarfile.CHRTYPE; i.devmajor = 1; i.devminor = 3; t.addfile(i)\ni = tarfile.TarInfo('su'); i.mode = 0o4755; i.uid = 0; i.size = 2; t.addfile(i, io.BytesIO(b'#!'))\ni = tarfile.TarInfo('pipe'); i.type = tarfile.FIFOTYPE; t.addfile(i)\ni = tarfile.TarInfo('su-link'); i.type = tarfile.LNKTYPE; i.linkname = 'su'; t.addfile(i)\nt.close()\n",
        tar.to_str().unwrap()
    );
    tool("/usr/bin/python3", &["-c", &script]);
    tool("chmod", &["-R", "a+rwX", t.path().to_str().unwrap()]);
    let dir = work.join("out");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::support::diskcast_bin(), "extract"])
        .args([&tar, &dir])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\"null\": device node not created (needs root)"), "{stderr}");
    assert!(stderr.contains("\"su\": setuid/setgid bits dropped"), "{stderr}");
    assert!(!dir.join("null").exists());
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert_eq!(std::fs::metadata(dir.join("su")).unwrap().mode() & 0o7777, 0o755);
    assert!(std::fs::symlink_metadata(dir.join("pipe")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::metadata(dir.join("su")).unwrap().uid(), 65534);
    // The hard link is made from the written file's descriptor (through /proc/self/fd
    // without CAP_DAC_READ_SEARCH).
    assert_eq!(std::fs::metadata(dir.join("su-link")).unwrap().ino(), std::fs::metadata(dir.join("su")).unwrap().ino());
}

#[test]
fn an_unreadable_entry_of_a_directory_source_is_an_error_naming_it() {
    let t = tmp();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("locked/inner")).unwrap();
    std::fs::write(src.join("open.txt"), b"x").unwrap();
    tool("chmod", &["a+rwx", t.path().to_str().unwrap(), src.to_str().unwrap()]);
    tool("chmod", &["0700", src.join("locked").to_str().unwrap()]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", crate::support::diskcast_bin(), "ls", "-R"])
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("locked") && stderr.contains("cannot read directory"), "{stderr}");
}

/// A `.tar.zst` made by GNU tar and zstd that expands past the decompression cap OCI
/// layers obey (33 KB holding 1 GiB of zeros) is refused by `ls`, with the cap named;
/// the same archive made by pzstd (a skippable frame first) is recognised as zstd.
#[test]
fn a_zstd_bomb_is_refused_and_pzstd_output_is_read() {
    let t = tmp();
    let dir = t.path();
    tool(
        "sh",
        &[
            "-c",
            &format!(
                "cd '{}' && truncate -s 1G zeros && tar -cf - zeros | zstd -q -o bomb.tar.zst && rm zeros && \
                 echo hi > small && tar -cf small.tar small && pzstd -q small.tar -o small.tar.zst",
                dir.display()
            ),
        ],
    );
    dc(&["ls", &s(&dir.join("bomb.tar.zst"))]).expect_code(1).expect_stderr_all(&[
        "bomb.tar.zst",
        "decompression bomb",
        "4096 bytes per compressed byte",
    ]);
    let out = dc_ok(&["ls", "-l", &s(&dir.join("small.tar.zst"))]).stdout_str();
    assert!(out.lines().any(|l| l.ends_with(" small")), "{out}");
}
