//! Extraction uses every thread it is given: directories are made by several threads,
//! and the files of one stream (a tar, read once front to back) are written by several.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::shs;
use diskcast_block::progress::NoProgress;
use diskcast_host::{ExtractOptions, RaceHook, RaceStep, extract};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// A tar made by GNU tar of `dirs` x `dirs` directories holding `files` small files each.
fn wide_tar(root: &Path, dirs: usize, files: usize) -> PathBuf {
    let src = root.join("src");
    for a in 0..dirs {
        for b in 0..dirs {
            let d = src.join(format!("d{a}/e{b}"));
            std::fs::create_dir_all(&d).unwrap();
            for f in 0..files {
                std::fs::write(d.join(format!("f{f}")), format!("{a}/{b}/{f}\n")).unwrap();
            }
        }
    }
    let tar = root.join("wide.tar");
    shs("tar", &["--format=pax", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    tar
}

/// Extracts `tar` into `out` with two threads, recording which thread created each
/// entry (the race hook runs on the creating thread).
fn created_by(tar: &Path, out: &Path) -> Vec<(String, ThreadId)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let hook = RaceHook(Arc::new(move |step| {
        if let RaceStep::Created(p) = step {
            s2.lock().unwrap().push((String::from_utf8(p.to_vec()).unwrap(), std::thread::current().id()));
        }
    }));
    let t = diskcast_tar::read_tar(tar).unwrap();
    let opts = ExtractOptions { race_hook: Some(hook), ..ExtractOptions::new(2) };
    let report = extract(&t.tree, out, &opts, &NoProgress).unwrap();
    assert_eq!(report.not_extracted, 0, "{:?}", report.failed);
    seen.lock().unwrap().clone()
}

#[test]
fn the_small_files_of_one_tar_are_written_by_every_thread() {
    let d = tempfile::tempdir().unwrap();
    let tar = wide_tar(d.path(), 8, 40);
    let out = d.path().join("out");
    let made = created_by(&tar, &out);
    let threads: HashSet<ThreadId> = made.iter().filter(|(p, _)| p.contains("/f")).map(|(_, t)| *t).collect();
    assert_eq!(made.iter().filter(|(p, _)| p.contains("/f")).count(), 8 * 8 * 40);
    assert_eq!(threads.len(), 2, "the files of one tar were written by {} thread(s)", threads.len());
    // And every file holds its own bytes (GNU tar's extraction is the oracle).
    let want = d.path().join("gnu");
    std::fs::create_dir(&want).unwrap();
    shs("tar", &["-xf", tar.to_str().unwrap(), "-C", want.to_str().unwrap()]);
    shs("diff", &["-r", want.to_str().unwrap(), out.to_str().unwrap()]);
}

#[test]
fn directories_are_made_by_every_thread() {
    let d = tempfile::tempdir().unwrap();
    let tar = wide_tar(d.path(), 32, 1);
    let out = d.path().join("out");
    let made = created_by(&tar, &out);
    let dirs: Vec<&(String, ThreadId)> = made.iter().filter(|(p, _)| !p.contains("/f")).collect();
    assert_eq!(dirs.len(), 32 + 32 * 32);
    let threads: HashSet<ThreadId> = dirs.iter().map(|(_, t)| *t).collect();
    assert_eq!(threads.len(), 2, "the directories were made by {} thread(s)", threads.len());
    assert!(!threads.contains(&std::thread::current().id()), "directories made on the calling thread");
}

/// Large files (written bypassing the page cache, by a thread of their own first) among
/// small ones: every byte, every hole and every hard link is what GNU tar extracts.
#[test]
fn large_files_among_small_ones_are_written_whole_with_their_holes_and_links() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for a in 0..4 {
        let dir = src.join(format!("d{a}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}")), format!("{a}/{f}\n")).unwrap();
        }
        // 3 MiB and 2 bytes: data, a 1 MiB hole, data, and an unaligned tail.
        let big = dir.join("big");
        let mut bytes: Vec<u8> = (0..(3u32 << 20) + 2).map(|i| (i % 251) as u8 ^ a).collect();
        bytes[1 << 20..2 << 20].fill(0);
        std::fs::write(&big, &bytes).unwrap();
        std::fs::hard_link(&big, dir.join("big-link")).unwrap();
    }
    let tar = d.path().join("big.tar");
    shs("tar", &["--format=pax", "-S", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
    let out = d.path().join("out");
    let made = created_by(&tar, &out);
    assert_eq!(made.iter().filter(|(p, _)| p.ends_with("/big")).count(), 4);
    let want = d.path().join("gnu");
    std::fs::create_dir(&want).unwrap();
    shs("tar", &["-xf", tar.to_str().unwrap(), "-C", want.to_str().unwrap()]);
    shs("diff", &["-r", want.to_str().unwrap(), out.to_str().unwrap()]);
    for a in 0..4 {
        let big = std::fs::metadata(out.join(format!("d{a}/big"))).unwrap();
        let link = std::fs::metadata(out.join(format!("d{a}/big-link"))).unwrap();
        assert_eq!(big.ino(), link.ino(), "d{a}/big-link is not a hard link");
        assert!(big.blocks() * 512 < big.len(), "d{a}/big lost its hole: {} blocks", big.blocks());
    }
}
