//! A local user who can write into the extraction directory races the extraction: the
//! test hook swaps entries right after diskcast creates them (and the target right after
//! it is opened), which is the worst moment a real attacker could hit. Nothing outside
//! DIR may change, and what was swapped is reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{is_root, shs};
use diskcast_block::progress::NoProgress;
use diskcast_host::{ExtractOptions, RaceHook, RaceStep, extract};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file outside DIR that a racing user would like diskcast to chmod, chown or touch.
struct Victim {
    path: PathBuf,
    before: (u32, u32, u32, i64, i64),
}

impl Victim {
    fn new(path: PathBuf) -> Self {
        std::fs::write(&path, b"victim").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)).unwrap();
        let before = Self::state(&path);
        Victim { path, before }
    }
    fn state(p: &Path) -> (u32, u32, u32, i64, i64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec())
    }
    fn assert_unchanged(&self, what: &str) {
        assert_eq!(Self::state(&self.path), self.before, "{what}: the victim outside DIR was changed");
        assert_eq!(std::fs::read(&self.path).unwrap(), b"victim", "{what}: the victim's content changed");
    }
}

/// A tar made by GNU tar of a directory with a 0777 directory, a 0666 fifo, a setuid
/// file with a hard link, a symlink, and (as root) a 0666 character device.
fn racy_tar(root: &Path) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(src.join("d")).unwrap();
    std::fs::write(src.join("d/inner"), b"inner").unwrap();
    std::fs::set_permissions(src.join("d"), std::fs::Permissions::from_mode(0o777)).unwrap();
    shs("mkfifo", &["-m", "666", src.join("fifo").to_str().unwrap()]);
    std::fs::write(src.join("file"), b"the file's bytes").unwrap();
    std::fs::set_permissions(src.join("file"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    std::fs::hard_link(src.join("file"), src.join("hl")).unwrap();
    std::os::unix::fs::symlink("file", src.join("sl")).unwrap();
    if is_root() {
        shs("mknod", &["-m", "666", src.join("dev").to_str().unwrap(), "c", "1", "3"]);
    }
    let tar = root.join("racy.tar");
    shs("tar", &["--format=pax", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    tar
}

#[test]
fn metadata_never_lands_on_an_entry_swapped_for_a_symlink() {
    let d = tempfile::tempdir().unwrap();
    let tar = racy_tar(d.path());
    let out = d.path().join("out");
    let names = ["d", "fifo", "dev", "sl", "file"];
    let victims: Vec<(&str, Victim)> =
        names.iter().map(|n| (*n, Victim::new(d.path().join(format!("victim-{n}"))))).collect();
    let (out2, base) = (out.clone(), d.path().to_path_buf());
    let hook = RaceHook(Arc::new(move |step| {
        // The path is where the entry is now: beneath a staging directory in DIR on
        // ext4, which is where a racing user would find it.
        let RaceStep::Created(p) = step else { return };
        let at = out2.join(std::str::from_utf8(p).unwrap());
        let name = at.file_name().unwrap().to_str().unwrap();
        if !names.contains(&name) {
            return;
        }
        if name == "file" {
            // Kept under another name, so its hard link can still be made.
            std::fs::rename(&at, at.with_file_name("moved-away")).unwrap();
        } else if std::fs::symlink_metadata(&at).unwrap().is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        } else {
            std::fs::remove_file(&at).unwrap();
        }
        std::os::unix::fs::symlink(base.join(format!("victim-{name}")), &at).unwrap();
    }));
    let t = diskcast_tar::read_tar(&tar).unwrap();
    let opts = ExtractOptions { privileged: true, race_hook: Some(hook), ..ExtractOptions::new(2) };
    let report = extract(&t.tree, &out, &opts, &NoProgress).unwrap();
    // d/inner could not be made in the directory that became a symlink; nothing else failed.
    assert_eq!(report.not_extracted, 1, "{:?}", report.failed);
    assert!(
        report.failed[0].contains("\"d/inner\"") && report.failed[0].contains("symbolic links"),
        "{:?}",
        report.failed
    );
    for (n, v) in &victims {
        v.assert_unchanged(n);
    }
    // The entries whose metadata diskcast could not set on what it created are named.
    for n in ["d", "fifo", "sl"].into_iter().chain(is_root().then_some("dev")) {
        assert!(
            report.skipped.iter().any(|s| s.starts_with(&format!("\"{n}\": ")) && s.contains("replaced")),
            "{n} not reported as replaced: {:?}",
            report.skipped
        );
    }
    // The hard link names the file diskcast wrote, not whatever `file` became.
    let hl = std::fs::symlink_metadata(out.join("hl")).unwrap();
    assert!(hl.is_file(), "hl is not the written file: {hl:?}");
    assert_eq!(hl.ino(), std::fs::metadata(out.join("moved-away")).unwrap().ino());
    assert_eq!(std::fs::read(out.join("hl")).unwrap(), b"the file's bytes");
    let want = if is_root() { 0o4777 } else { 0o777 };
    assert_eq!(hl.mode() & 0o7777, want);
}
#[test]
fn the_target_is_opened_once_and_a_swap_after_that_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let tar = racy_tar(d.path());
    let out = d.path().join("out");
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (out2, moved, elsewhere2) = (out.clone(), d.path().join("out.moved"), elsewhere.clone());
    let hook = RaceHook(Arc::new(move |step| {
        if let RaceStep::TargetOpened = step {
            std::fs::rename(&out2, &moved).unwrap();
            std::os::unix::fs::symlink(&elsewhere2, &out2).unwrap();
        }
    }));
    let t = diskcast_tar::read_tar(&tar).unwrap();
    let opts = ExtractOptions { race_hook: Some(hook), ..ExtractOptions::new(2) };
    extract(&t.tree, &out, &opts, &NoProgress).unwrap();
    let left: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files landed where the swapped-in symlink points: {left:?}");
    assert_eq!(std::fs::read(d.path().join("out.moved/d/inner")).unwrap(), b"inner");
}

#[test]
fn a_target_that_is_a_symlink_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let tar = racy_tar(d.path());
    let real = d.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let t = diskcast_tar::read_tar(&tar).unwrap();
    let e = extract(&t.tree, &link, &ExtractOptions::new(2), &NoProgress).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused, "{e}");
    assert!(e.message().contains("symbolic link"), "{e}");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
}
