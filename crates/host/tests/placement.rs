//! Where extraction's inodes land on an ext4 without a journal (mke2fs `-O ^has_journal`,
//! mounted on a loop device over a file): right after `rm -rf` of the previous copy, the
//! kernel makes every creation in a block group of just-deleted inodes scan them all, so
//! a tree extracted again must not be allocated among them; and the tree written through
//! the staging directory is the one GNU tar writes, with nothing left beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{is_root, make_source, shs};
use diskcast_block::progress::NoProgress;
use diskcast_host::{ExtractOptions, extract};
use diskcast_testkit::manifest::{Compare, assert_same, manifest};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file-backed ext4 without a journal mounted on its own loop device; unmounted and
/// detached when dropped (also when the test fails).
struct Scratch {
    dev: String,
    mnt: PathBuf,
}

impl Scratch {
    /// 16 GiB (sparse), mke2fs's defaults otherwise: 8 192 inodes a group, flex groups
    /// of 16, so a tree of 10 000 entries fills a group and there are 8 flex groups.
    fn new(dir: &Path) -> Scratch {
        assert!(is_root(), "this test mounts a loop device and runs as root (as CI does)");
        let img = dir.join("ext4.img");
        std::fs::File::create(&img).unwrap().set_len(16 << 30).unwrap();
        shs("mkfs.ext4", &["-q", "-O", "^has_journal", img.to_str().unwrap()]);
        let dev = String::from_utf8(shs("losetup", &["-f", "--show", img.to_str().unwrap()])).unwrap();
        let dev = dev.trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let s = Scratch { dev, mnt };
        // noinit_itable: no background zeroing of the inode tables into the image.
        shs("mount", &["-o", "noinit_itable", &s.dev, s.mnt.to_str().unwrap()]);
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A GNU tar of `dirs` directories of `files` one-line files each.
fn many_files_tar(root: &Path, dirs: usize, files: usize) -> PathBuf {
    let src = root.join("src");
    for d in 0..dirs {
        let dir = src.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let tar = root.join("many.tar");
    shs("tar", &["--format=pax", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    tar
}

/// The inode numbers of everything beneath `dir` (not `dir`: DIR is placed by its parent,
/// which is the user's, and takes one inode wherever that puts it).
fn inodes(dir: &Path) -> HashSet<u64> {
    let out = shs("find", &[dir.to_str().unwrap(), "-xdev", "-mindepth", "1", "-printf", "%i\\n"]);
    String::from_utf8(out).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_tree_extracted_again_after_a_delete_avoids_the_inodes_just_deleted() {
    let d = tempfile::tempdir().unwrap();
    let fs = Scratch::new(d.path());
    let tar = many_files_tar(d.path(), 40, 250);
    let out = fs.mnt.join("out");
    // The copy a user deletes before extracting again, made by GNU tar, which places
    // a tree next to its directory.
    std::fs::create_dir(&out).unwrap();
    shs("tar", &["-xf", tar.to_str().unwrap(), "-C", out.to_str().unwrap()]);
    let before = inodes(&out);
    assert_eq!(before.len(), 10_040);
    std::fs::remove_dir_all(&out).unwrap();
    shs("sync", &["-f", fs.mnt.to_str().unwrap()]);

    let t = diskcast_tar::read_tar(&tar).unwrap();
    let again = extract(&t.tree, &out, &ExtractOptions::new(2), &NoProgress).unwrap();
    assert_eq!((again.files, again.not_extracted), (10_000, 0), "{:?}", again.failed);
    let after = inodes(&out);
    let reused = after.intersection(&before).count();
    // Placed next to DIR, as before the staging directory, the new tree took 8 190 of
    // the inodes just freed, each after scanning the others of its group.
    assert_eq!(reused, 0, "{reused} of {} inodes reused right after their delete", after.len());
    let mut want: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    want.sort();
    assert_eq!(names(&out), want, "the staging directory was left, or an entry not moved");
}

#[test]
fn the_staged_tree_is_the_one_gnu_tar_writes() {
    let d = tempfile::tempdir().unwrap();
    let fs = Scratch::new(d.path());
    let src = d.path().join("src");
    make_source(&src);
    let tar = d.path().join("all.tar");
    let create = ["--format=pax", "--xattrs", "--xattrs-include=user.*", "--sparse", "-cf"];
    let mut args: Vec<&str> = create.to_vec();
    args.extend([tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    shs("tar", &args);
    let theirs = fs.mnt.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let x = ["-x", "--xattrs", "--xattrs-include=user.*", "-p", "-f", tar.to_str().unwrap(), "-C"];
    let mut args: Vec<&str> = x.to_vec();
    args.push(theirs.to_str().unwrap());
    shs("tar", &args);
    let ours = fs.mnt.join("ours");
    let t = diskcast_tar::read_tar(&tar).unwrap();
    let opts = ExtractOptions { privileged: true, ..ExtractOptions::new(2) };
    let report = extract(&t.tree, &ours, &opts, &NoProgress).unwrap();
    assert!(report.failed.is_empty() && report.skipped.is_empty(), "{report:?}");
    assert_same(&manifest(&theirs), &manifest(&ours), Compare::default(), "staged extraction");
    assert_eq!(names(&theirs), names(&ours), "the staging directory was left beside the tree");
    // DIR got the top-directory flag only while the staging directory was made.
    let flags = String::from_utf8(shs("lsattr", &["-d", ours.to_str().unwrap()])).unwrap();
    assert!(!flags.split_whitespace().next().unwrap().contains('T'), "DIR kept +T: {flags}");
    let (a, b) = (std::fs::metadata(&theirs).unwrap(), std::fs::metadata(&ours).unwrap());
    assert_eq!((a.mode(), a.mtime(), a.mtime_nsec()), (b.mode(), b.mtime(), b.mtime_nsec()), "DIR's own metadata");
}
