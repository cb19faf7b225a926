//! Tar archives made by GNU tar and bsdtar, read by diskcast and extracted by our sink,
//! must give the same directory as the tools' own extraction; tars we write must list
//! and extract with GNU tar and bsdtar into the original tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{is_root, make_source, shs};
use diskcast_block::progress::NoProgress;
use diskcast_host::{DirOptions, ExtractOptions, extract, read_dir};
use diskcast_testkit::manifest::{Compare, assert_same, manifest};
use diskcast_testkit::within;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn ours(archive: &Path, out: &Path) -> diskcast_host::ExtractReport {
    let t = diskcast_tar::read_tar(archive).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    extract(&t.tree, out, &ExtractOptions { privileged: true, ..ExtractOptions::new(2) }, &NoProgress).unwrap()
}

/// Builds the archive with `create`, extracts it with `oracle_x` and with diskcast, and
/// compares the two directories.
fn check(name: &str, create: &[&str], oracle: &str, oracle_x: &[&str], cmp: Compare) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_source(&src);
    let archive = d.path().join(name);
    let mut args: Vec<&str> = create.to_vec();
    args.extend(["-f", archive.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    shs(if create[0] == "bsd" { "bsdtar" } else { "tar" }, &args[usize::from(create[0] == "bsd")..]);
    let a = d.path().join("theirs");
    std::fs::create_dir(&a).unwrap();
    let mut xargs: Vec<&str> = oracle_x.to_vec();
    xargs.extend(["-f", archive.to_str().unwrap(), "-C", a.to_str().unwrap()]);
    shs(oracle, &xargs);
    let b = d.path().join("ours");
    let arch = archive.clone();
    let b2 = b.clone();
    let report = within(60, "reading and extracting with diskcast", move || ours(&arch, &b2));
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert!(
        ma.len() >= 18 && ma.contains_key(&b"caf\xe9-latin1"[..]),
        "{name}: the oracle extracted too little: {:?}",
        ma.keys()
    );
    assert_same(&ma, &mb, cmp, name);
    if is_root() {
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    }
    let sparse = std::fs::metadata(b.join("sparse")).unwrap();
    assert!(sparse.blocks() * 512 < 1 << 20, "{name}: sparse file was written densely ({} blocks)", sparse.blocks());
}

#[test]
fn gnu_tar_pax_with_xattrs_and_sparse() {
    let x = ["-x", "--xattrs", "--xattrs-include=user.*", "-p"];
    check(
        "pax.tar",
        &["--format=pax", "--xattrs", "--xattrs-include=user.*", "--sparse", "-c"],
        "tar",
        &x,
        Compare::default(),
    );
}

#[test]
fn gnu_tar_pax_sparse_versions_0_0_and_0_1() {
    for v in ["0.0", "0.1"] {
        let arg = format!("--sparse-version={v}");
        check(
            &format!("pax-{v}.tar"),
            &["--format=pax", "--sparse", &arg, "-c"],
            "tar",
            &["-x", "-p"],
            Compare { xattrs: false, ..Compare::default() },
        );
    }
}

#[test]
fn gnu_tar_gnu_format_long_names_and_old_sparse() {
    // GNU format stores whole seconds and no xattrs: compare what it holds.
    let cmp = Compare { mtime_ns: false, xattrs: false, ..Compare::default() };
    check("gnu.tar", &["--format=gnu", "--sparse", "-c"], "tar", &["-x", "-p"], cmp);
}

#[test]
fn gnu_tar_gzip_and_zstd() {
    check(
        "pax.tar.gz",
        &["--format=pax", "--sparse", "-z", "-c"],
        "tar",
        &["-x", "-p"],
        Compare { xattrs: false, ..Compare::default() },
    );
    check(
        "pax.tar.zst",
        &["--format=pax", "--sparse", "--zstd", "-c"],
        "tar",
        &["-x", "-p"],
        Compare { xattrs: false, ..Compare::default() },
    );
}

#[test]
fn bsdtar_pax_with_xattrs() {
    check(
        "bsd.tar",
        &["bsd", "--format=pax", "--read-sparse", "-c"],
        "bsdtar",
        &["-x", "-p", "--xattrs"],
        Compare::default(),
    );
}

#[test]
fn a_directory_extracts_into_the_same_tree() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_source(&src);
    let tree = read_dir(&src, &DirOptions::default()).unwrap();
    let out = d.path().join("out");
    let report =
        extract(&tree, &out, &ExtractOptions { privileged: true, ..ExtractOptions::new(2) }, &NoProgress).unwrap();
    assert_same(&manifest(&src), &manifest(&out), Compare::default(), "dir -> extract");
    let m = std::fs::metadata(out.join("sparse")).unwrap();
    assert!(m.blocks() * 512 < 1 << 20);
    assert_eq!(report.hardlinks, 1);
}

#[test]
fn tars_we_write_list_and_extract_with_gnu_tar_and_bsdtar() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    make_source(&src);
    let tree = read_dir(&src, &DirOptions::default()).unwrap();
    let mut bytes = Vec::new();
    let r = diskcast_tar::write_tar(&tree, &mut bytes, &NoProgress).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let mut again = Vec::new();
    diskcast_tar::write_tar(&tree, &mut again, &NoProgress).unwrap();
    assert!(bytes == again, "the same tree must give the same tar");
    let archive = d.path().join("ours.tar");
    std::fs::write(&archive, &bytes).unwrap();
    let a = archive.to_str().unwrap();
    let listing = String::from_utf8(shs("tar", &["-tvf", a])).unwrap();
    assert!(listing.contains("dir/hard link to a.txt"), "{listing}");
    assert!(listing.contains(&format!("{0}/{0}/file-with-a-long-path.txt", common::LONG_DIR)), "{listing}");
    let bsd = String::from_utf8_lossy(&shs("bsdtar", &["-tvf", a])).into_owned();
    assert_eq!(bsd.lines().count(), listing.lines().count(), "{bsd}\n{listing}");
    for (tool, x) in
        [("tar", &["-x", "-p", "--xattrs", "--xattrs-include=user.*"][..]), ("bsdtar", &["-x", "-p", "--xattrs"][..])]
    {
        let out = d.path().join(format!("x-{tool}"));
        std::fs::create_dir(&out).unwrap();
        let mut args = x.to_vec();
        args.extend(["-f", a, "-C", out.to_str().unwrap()]);
        shs(tool, &args);
        assert_same(&manifest(&src), &manifest(&out), Compare::default(), &format!("ours -> {tool} -x"));
    }
    // And a tar read back by us: the same tree again.
    let back = diskcast_tar::read_tar(&archive).unwrap();
    assert!(back.warnings.is_empty());
    let out = d.path().join("roundtrip");
    extract(&back.tree, &out, &ExtractOptions { privileged: true, ..ExtractOptions::new(2) }, &NoProgress).unwrap();
    assert_same(&manifest(&src), &manifest(&out), Compare::default(), "ours -> ours");
}
