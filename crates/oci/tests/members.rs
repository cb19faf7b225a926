//! One member rule for tars and layers: each archive below (made by Python's tarfile,
//! GNU tar and bsdtar, ordinary and hostile) is read as a `tar` source and as the one
//! layer of a hand-written OCI layout over the same bytes; the two trees and the members
//! skipped must be the same. Where `umoci unpack` takes the layer, its rootfs is
//! compared too; where it does not, that is asserted, so a change on either side shows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_oci::{OpenOptions, open_tree};
use diskcast_tree::{Kind, Tree};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `umoci unpack` makes of the layer.
enum Umoci<'a> {
    /// The same tree as ours.
    Same,
    /// The same tree, but umoci leaves these directories with the time of the unpack: a
    /// directory written into through a symlink (umoci restores the link's times, not
    /// its target's), and one made for a member's missing parent (dated by the member
    /// here).
    SameButDirTimes(&'a [&'a str]),
    /// Ours, plus these paths umoci creates where we skip a member.
    Plus(&'a [&'a str]),
    /// umoci refuses the layer.
    Refuses,
}

/// A Python tarfile script writing `OUT` through `add(name, data=b'', **attrs)`.
fn python_tar(dir: &Path, name: &str, body: &str) -> PathBuf {
    let out = dir.join(name);
    let script = format!(
        "import io, tarfile\nt = tarfile.open({out:?}, 'w', format=tarfile.PAX_FORMAT)\n\
         def add(n, data=b'', **kw):\n    i = tarfile.TarInfo(n)\n    i.mtime = 1700000000\n    i.mode = 0o755 if kw.get('type') == tarfile.DIRTYPE else 0o644\n\
         \x20   for k, v in kw.items(): setattr(i, k, v)\n    i.size = len(data)\n    t.addfile(i, io.BytesIO(data))\n\
         {body}\nt.close()\n"
    );
    run("/usr/bin/python3", &["-c", &script]);
    out
}

/// Reads `tar` both ways and returns the tree and the warnings (without the layer
/// prefix), after checking they agree, and checks umoci's view.
fn both_ways(tar: &Path, umoci: Umoci) -> (Tree, Vec<String>) {
    let t = diskcast_tar::read_tar(tar).unwrap_or_else(|e| panic!("{}: {e}", tar.display()));
    let layout = tar.with_extension("layout");
    write_plain_layout(&layout, &[std::fs::read(tar).unwrap()]);
    let spec = format!("oci:{}:t", layout.display());
    let flat = open_tree(&spec, &OpenOptions::default(), 2).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let what = tar.file_name().unwrap().to_string_lossy().into_owned();
    let ours = tree_manifest(&t.tree, Devices::AsEmptyFiles);
    assert_same_min(&ours, &tree_manifest(&flat.tree, Devices::AsEmptyFiles), &format!("{what}: tar vs layer"));
    let layer_warnings: Vec<String> = flat
        .warnings
        .iter()
        .map(|w| {
            let (layer, rest) = w.split_once(": ").unwrap();
            assert!(layer.starts_with("layer sha256:"), "{w}");
            rest.to_string()
        })
        .collect();
    assert_eq!(t.warnings, layer_warnings, "{what}: members skipped");

    let bundle = layout.with_extension("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &format!("{}:t", layout.display()), bundle.to_str().unwrap()])
        .output()
        .expect("umoci is required (scripts/setup.sh installs it)");
    let unpacked = out.status.success();
    match umoci {
        Umoci::Refuses => assert!(!unpacked, "{what}: umoci now takes this layer: compare its tree"),
        Umoci::Same | Umoci::SameButDirTimes(_) | Umoci::Plus(_) => {
            assert!(unpacked, "{what}: umoci unpack failed: {}", String::from_utf8_lossy(&out.stderr));
            let mut theirs = dir_manifest(&bundle.join("rootfs"));
            let mut ours = ours.clone();
            match umoci {
                Umoci::Plus(extra) => {
                    for p in extra {
                        assert!(theirs.remove(*p).is_some(), "{what}: umoci did not make {p}: {theirs:?}");
                    }
                }
                Umoci::SameButDirTimes(dirs) => {
                    for p in dirs {
                        for m in [&mut ours, &mut theirs] {
                            let line = m.get_mut(*p).unwrap_or_else(|| panic!("{what}: no {p}"));
                            let (head, time) = line.rsplit_once(" t=").unwrap();
                            assert!(head.starts_with("d ") && time.parse::<i64>().is_ok(), "{line}");
                            *line = head.to_string();
                        }
                    }
                }
                _ => {}
            }
            assert_same_min(&ours, &theirs, &format!("{what}: diskcast vs umoci unpack"));
        }
    }
    (t.tree, t.warnings)
}

fn file_content(tree: &Tree, path: &[u8]) -> Vec<u8> {
    let id = tree.resolve(path, false).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut tree.node(id).as_file().expect("a file").reader().unwrap(), &mut out).unwrap();
    out
}

/// `path` is not in the tree, for the reason `why`.
fn absent(tree: &Tree, path: &[u8], why: diskcast_tree::TreeErrorKind) {
    let e = tree.resolve(path, false).expect_err("the path is in the tree");
    assert_eq!((e.kind(), e.path()), (why, path), "{e}");
}

fn kind(tree: &Tree, path: &[u8]) -> &'static str {
    tree.node(tree.resolve(path, false).unwrap_or_else(|e| panic!("{e}"))).kind.name()
}

#[test]
fn members_under_symlinked_parents_land_where_the_link_points_inside_the_tree() {
    let d = tempfile::tempdir().unwrap();
    let tar = python_tar(
        d.path(),
        "symlinks.tar",
        "add('usr', type=tarfile.DIRTYPE)\nadd('usr/lib', type=tarfile.DIRTYPE)\n\
         add('lib', type=tarfile.SYMTYPE, linkname='usr/lib')\nadd('lib/x.so', b'relative link')\n\
         add('abs', type=tarfile.SYMTYPE, linkname='/usr/lib')\nadd('abs/y.so', b'absolute link')\n\
         add('chain', type=tarfile.SYMTYPE, linkname='lib')\nadd('chain/z.so', b'two links')\n\
         add('lib/sub/w', b'missing parent made under the link')",
    );
    let (tree, warnings) = both_ways(&tar, Umoci::SameButDirTimes(&["usr/lib", "usr/lib/sub"]));
    assert!(warnings.is_empty(), "{warnings:?}");
    for (path, data) in [
        (&b"usr/lib/x.so"[..], &b"relative link"[..]),
        (b"usr/lib/y.so", b"absolute link"),
        (b"usr/lib/z.so", b"two links"),
        (b"usr/lib/sub/w", b"missing parent made under the link"),
    ] {
        assert_eq!(file_content(&tree, path), data);
    }
    assert_eq!(kind(&tree, b"lib"), "symlink");
}

#[test]
fn later_members_replace_earlier_ones_of_any_type_gnu_tar_append() {
    // Two GNU tar runs into one archive (`-r` appends): every name of the first comes
    // back as another type, and `f` twice.
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(a.join("d/deeper")).unwrap();
    std::fs::write(a.join("d/deeper/inner"), b"gone with d").unwrap();
    std::fs::write(a.join("f"), b"one").unwrap();
    std::os::unix::fs::symlink("f", a.join("s")).unwrap();
    std::fs::create_dir(a.join("e")).unwrap();
    std::fs::create_dir_all(b.join("s")).unwrap();
    std::fs::write(b.join("d"), b"now a file").unwrap();
    std::fs::write(b.join("f"), b"two").unwrap();
    std::fs::write(b.join("s/in"), b"dir over symlink").unwrap();
    std::os::unix::fs::symlink("d", b.join("e")).unwrap();
    let tar = d.path().join("append.tar");
    let t = tar.to_str().unwrap();
    run("tar", &["--format=gnu", "--mtime=@1700000000", "-cf", t, "-C", a.to_str().unwrap(), "."]);
    run("tar", &["--format=gnu", "--mtime=@1700000000", "-rf", t, "-C", b.to_str().unwrap(), "."]);
    let (tree, warnings) = both_ways(&tar, Umoci::Same);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(file_content(&tree, b"d"), b"now a file");
    absent(&tree, b"d/deeper/inner", diskcast_tree::TreeErrorKind::NotADirectory);
    assert_eq!(file_content(&tree, b"f"), b"two");
    assert_eq!(file_content(&tree, b"s/in"), b"dir over symlink");
    assert_eq!(kind(&tree, b"e"), "symlink");
}

#[test]
fn ordinary_bsdtar_archive_reads_alike() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("etc/ssl")).unwrap();
    std::fs::create_dir_all(src.join("usr/bin")).unwrap();
    std::fs::write(src.join("usr/bin/tool"), b"#!/bin/sh\n").unwrap();
    std::fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/tool2")).unwrap();
    std::fs::write(src.join("etc/ssl/cert.pem"), vec![b'c'; 5000]).unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", src.join("etc/tool")).unwrap();
    std::os::unix::fs::symlink("/etc/ssl", src.join("usr/ssl")).unwrap();
    run("mkfifo", &[src.join("etc/fifo").to_str().unwrap()]);
    let tar = d.path().join("bsd.tar");
    run("bsdtar", &["-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    let (tree, warnings) = both_ways(&tar, Umoci::Same);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(tree.resolve(b"usr/bin/tool", false).unwrap(), tree.resolve(b"usr/bin/tool2", false).unwrap());
}

#[test]
fn hard_links_name_earlier_members_through_the_same_parents() {
    let d = tempfile::tempdir().unwrap();
    let tar = python_tar(
        d.path(),
        "links.tar",
        "add('early', type=tarfile.LNKTYPE, linkname='target')\nadd('target', b'data')\n\
         add('good', type=tarfile.LNKTYPE, linkname='target')\n\
         add('usr', type=tarfile.DIRTYPE)\nadd('usr/lib', type=tarfile.DIRTYPE)\nadd('usr/lib/x.so', b'lib')\n\
         add('lib', type=tarfile.SYMTYPE, linkname='usr/lib')\n\
         add('via', type=tarfile.LNKTYPE, linkname='lib/x.so')\n\
         add('to-symlink', type=tarfile.LNKTYPE, linkname='lib')\n\
         add('to-dir', type=tarfile.LNKTYPE, linkname='usr')\n\
         add('missing', type=tarfile.LNKTYPE, linkname='no/such')",
    );
    let (tree, warnings) = both_ways(&tar, Umoci::Refuses);
    assert_eq!(
        warnings,
        [
            r#"skipped member "early": hard link to "target", which is not an earlier member of the archive"#,
            r#"skipped member "to-dir": hard link to directory "usr""#,
            r#"skipped member "missing": hard link to "no/such", which is not an earlier member of the archive"#,
        ]
    );
    let id = |p: &[u8]| tree.resolve(p, false).unwrap();
    assert_eq!(id(b"good"), id(b"target"));
    assert_eq!(id(b"via"), id(b"usr/lib/x.so"), "the link target's parent symlink was not followed");
    assert_eq!(id(b"to-symlink"), id(b"lib"), "a hard link to a symlink links the symlink itself");
}

#[test]
fn dot_dot_members_are_skipped_where_umoci_clamps_them_to_the_root() {
    let d = tempfile::tempdir().unwrap();
    let tar = python_tar(
        d.path(),
        "dotdot.tar",
        "add('../x', b'climb')\nadd('a', type=tarfile.DIRTYPE)\nadd('a/../../y', b'climb')\nadd('ok', b'fine')",
    );
    let (tree, warnings) = both_ways(&tar, Umoci::Plus(&["x", "y"]));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.contains("contains '..'")), "{warnings:?}");
    assert_eq!(file_content(&tree, b"ok"), b"fine");
}

#[test]
fn parents_that_are_files_or_lead_nowhere_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let tar = python_tar(
        d.path(),
        "nowhere.tar",
        "add('f', b'a file')\nadd('f/g', b'under a file')\n\
         add('loop', type=tarfile.SYMTYPE, linkname='loop')\nadd('loop/h', b'under a loop')\n\
         add('nowhere', type=tarfile.SYMTYPE, linkname='missing')\nadd('nowhere/z', b'under a dangling link')\n\
         add('ok', b'fine')",
    );
    let (tree, warnings) = both_ways(&tar, Umoci::Refuses);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(warnings[0], r#"skipped member "f/g": "f" on the path "f/g" is a file, not a directory"#);
    for (w, (dir, path)) in warnings[1..].iter().zip([("loop", "loop/h"), ("nowhere", "nowhere/z")]) {
        let want = format!(r#"skipped member "{path}": "{dir}" on the path "{path}" is a symlink that leads nowhere"#);
        assert!(w.starts_with(&want), "{w}");
    }
    assert!(matches!(tree.node(tree.resolve(b"nowhere", false).unwrap()).kind, Kind::Symlink(_)));
    absent(&tree, b"missing", diskcast_tree::TreeErrorKind::NotFound);
    let listing: BTreeMap<String, String> = tree_manifest(&tree, Devices::AsEmptyFiles);
    assert_eq!(listing.keys().collect::<Vec<_>>(), ["f", "loop", "nowhere", "ok"]);
}
