//! Inspection reads any tree: the same root filesystem as a directory and as a GNU tar
//! (gzip) lists the packages `dpkg-query` lists from it, and the OS release behind a
//! relative symlink, as the images of `oci inspect` do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_tree::Tree;
use std::path::Path;
use std::process::Command;

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} is required: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name version arch` of every installed package, as dpkg-query lists them from `root`.
fn dpkg_query(root: &Path) -> Vec<String> {
    let admin = root.join("var/lib/dpkg");
    let out = run(
        "dpkg-query",
        &[
            "--admindir",
            admin.to_str().unwrap(),
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
        ],
    );
    let mut v: Vec<String> = out.lines().filter_map(|l| l.strip_prefix("installed ")).map(str::to_string).collect();
    v.sort();
    v
}

fn ours(tree: &Tree) -> Vec<String> {
    let found = diskcast_inspect::packages(tree).unwrap();
    assert_eq!(found.manager.as_deref(), Some("dpkg"));
    assert!(found.error.is_none(), "{:?}", found.error);
    let mut v: Vec<String> =
        found.packages.iter().map(|p| format!("{} {} {}", p.name, p.version, p.architecture)).collect();
    v.sort();
    v
}

#[test]
fn a_directory_and_a_tar_of_one_root_inspect_alike_and_as_dpkg_query() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    // This machine's own package database (a Debian system: hundreds of packages, some
    // not installed, multi-line fields) and its os-release, behind the usual symlink.
    std::fs::copy("/var/lib/dpkg/status", root.join("var/lib/dpkg/status")).unwrap();
    std::fs::write(root.join("usr/lib/os-release"), "NAME=\"Test\"\nPRETTY_NAME=\"Test Linux 1 (one)\"\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    let want = dpkg_query(&root);
    assert!(want.len() > 50, "the test machine lists only {} packages", want.len());

    let dir = diskcast_host::read_dir(&root, &diskcast_host::DirOptions::default()).unwrap();
    assert_eq!(ours(&dir), want, "directory");
    assert_eq!(diskcast_inspect::os_release(&dir).as_deref(), Some("Test Linux 1 (one)"));

    let tar = d.path().join("root.tar.gz");
    run("tar", &["-czf", tar.to_str().unwrap(), "-C", root.to_str().unwrap(), "."]);
    let t = diskcast_tar::read_tar(&tar).unwrap();
    assert_eq!(ours(&t.tree), want, "tar");
    assert_eq!(diskcast_inspect::os_release(&t.tree).as_deref(), Some("Test Linux 1 (one)"));

    // A tree without a database says so rather than failing.
    std::fs::remove_file(root.join("var/lib/dpkg/status")).unwrap();
    let empty = diskcast_host::read_dir(&root, &diskcast_host::DirOptions::default()).unwrap();
    let found = diskcast_inspect::packages(&empty).unwrap();
    assert!(found.packages.is_empty() && found.manager.is_none() && found.error.is_none(), "{found:?}");
}
