//! A directory source whose files are swapped between the scan and the read (a local
//! user racing `diskcast extract DIR -o out.tar`, `mkfs`, `iso create`): the output must
//! never hold bytes of a file that was not scanned, and the error names the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use diskcast_block::ErrorKind;
use diskcast_block::progress::NoProgress;
use diskcast_host::{DirOptions, ExtractOptions, extract, read_dir};
use std::path::Path;

const SECRET: &[u8] = b"root:$6$TOP-SECRET-HASH-THAT-MUST-NEVER-LEAK:19000:0:99999:7:::\n";

/// `src/` with a few files, and a secret file beside it that only the racer wants.
fn setup(d: &Path) -> std::path::PathBuf {
    let src = d.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"first\n").unwrap();
    std::fs::write(src.join("sub/data"), vec![b'd'; 3000]).unwrap();
    std::fs::write(src.join("z.txt"), b"last\n").unwrap();
    // As long as the scanned file, so a read that followed the swap would fill it.
    let mut secret = SECRET.repeat(3000 / SECRET.len() + 1);
    secret.truncate(3000);
    std::fs::write(d.join("secret"), secret).unwrap();
    src
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Scans `src`, lets `swap` change `sub/data`, then writes the tree as a tar.
fn tar_after(swap: impl FnOnce(&Path)) -> (diskcast_block::Error, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let src = setup(d.path());
    let tree = read_dir(&src, &DirOptions::default()).unwrap();
    swap(d.path());
    let mut out = Vec::new();
    let e = diskcast_tar::write_tar(&tree, &mut out, &NoProgress).unwrap_err();
    (e, out)
}

fn assert_named_change(e: &diskcast_block::Error) {
    let shown = format!("{e} {:?}", e.file());
    assert!(shown.contains("sub/data") && shown.contains("changed since it was scanned"), "{shown}");
}

#[test]
fn a_file_swapped_for_a_symlink_after_the_scan_is_an_error_and_never_read() {
    let (e, out) = tar_after(|d| {
        std::fs::remove_file(d.join("src/sub/data")).unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("src/sub/data")).unwrap();
    });
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert_named_change(&e);
    assert!(!contains(&out, b"TOP-SECRET"), "the secret is in the tar");
}

#[test]
fn a_directory_on_the_path_swapped_for_a_symlink_is_an_error() {
    let (e, out) = tar_after(|d| {
        std::fs::create_dir(d.join("elsewhere")).unwrap();
        std::fs::copy(d.join("secret"), d.join("elsewhere/data")).unwrap();
        std::fs::rename(d.join("src/sub"), d.join("src/sub.old")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("src/sub")).unwrap();
    });
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert_named_change(&e);
    assert!(!contains(&out, b"TOP-SECRET"), "the secret is in the tar");
}

#[test]
fn a_file_replaced_by_another_regular_file_is_an_error() {
    // Same size, another inode: only the inode tells.
    let (e, out) = tar_after(|d| {
        let mut same_size = SECRET.repeat(3000 / SECRET.len() + 1);
        same_size.truncate(3000);
        std::fs::write(d.join("src/sub/new"), &same_size).unwrap();
        std::fs::rename(d.join("src/sub/new"), d.join("src/sub/data")).unwrap();
    });
    assert_named_change(&e);
    assert!(!contains(&out, b"TOP-SECRET"), "the secret is in the tar");
    // Another size.
    let (e, out) = tar_after(|d| {
        std::fs::write(d.join("src/sub/new"), SECRET).unwrap();
        std::fs::rename(d.join("src/sub/new"), d.join("src/sub/data")).unwrap();
    });
    assert_named_change(&e);
    assert!(!contains(&out, b"TOP-SECRET"), "the secret is in the tar");
}

#[test]
fn extraction_of_a_swapped_file_lists_it_and_never_writes_the_secret() {
    let d = tempfile::tempdir().unwrap();
    let src = setup(d.path());
    let tree = read_dir(&src, &DirOptions::default()).unwrap();
    std::fs::remove_file(src.join("sub/data")).unwrap();
    std::os::unix::fs::symlink(d.path().join("secret"), src.join("sub/data")).unwrap();
    let out = d.path().join("out");
    let report = extract(&tree, &out, &ExtractOptions::new(2), &NoProgress).unwrap();
    assert_eq!(report.not_extracted, 1, "{:?}", report.failed);
    assert!(
        report.failed[0].contains("sub/data") && report.failed[0].contains("changed since it was scanned"),
        "{:?}",
        report.failed
    );
    assert!(!out.join("sub/data").exists(), "a half-written file was left");
    assert_eq!(std::fs::read(out.join("z.txt")).unwrap(), b"last\n");
}
