//! Helpers for the ext4 tests: trees generated in the test, images written through the
//! copy engine, and e2fsprogs (e2fsck, debugfs, dumpe2fs, mke2fs) as the judges.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::BlockRead;
use diskcast_ext4::Ext4Builder;
use diskcast_tree::{BuildOptions, FileData, FsBuilder, Kind, Meta, Node, NodeId, Timestamp, Tree, Xattr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Output of a tool that must exist; returns (exit code, stdout + stderr).
pub fn tool(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required for this test and could not run: {e} (install e2fsprogs)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// `e2fsck -fn` must find nothing to fix.
pub fn assert_fsck_clean(path: &Path) {
    let (code, text) = tool("e2fsck", &["-fn", path.to_str().unwrap()]);
    assert_eq!(code, 0, "e2fsck -fn {} found problems:\n{text}", path.display());
}

/// `debugfs -R CMD image` output.
pub fn debugfs(path: &Path, cmd: &str) -> String {
    let (code, text) = tool("debugfs", &["-R", cmd, path.to_str().unwrap()]);
    assert_eq!(code, 0, "debugfs -R {cmd:?} failed: {text}");
    text
}

/// Plans `tree` and writes it into a new image of `format` at `path` with the copy engine.
pub fn write(tree: &Tree, opts: &BuildOptions, path: &Path, format: &str) -> diskcast_tree::BuiltFs {
    let built = Ext4Builder.plan(tree, opts).unwrap();
    let reg = diskcast_formats::registry();
    let driver = reg.get(format).unwrap();
    diskcast_testkit::write_with(driver, &built.image, path, &Default::default());
    assert_eq!(std::fs::metadata(path).map(|_| ()).ok(), Some(()));
    built
}

pub fn opts() -> BuildOptions {
    BuildOptions { now: 1_700_000_000, id: *b"diskcast-ext4-ts", ..BuildOptions::default() }
}

pub fn meta(mode: u32) -> Meta {
    Meta { uid: 1000, gid: 100, ..Meta::new(mode, Timestamp { sec: 1_600_000_000, nsec: 123_456_789 }) }
}

pub fn file(tree: &mut Tree, dir: NodeId, name: &[u8], bytes: Vec<u8>) -> NodeId {
    tree.insert(dir, name, Node::new(meta(0o644), Kind::File(FileData::inline(bytes)))).unwrap()
}

pub fn dir(tree: &mut Tree, parent: NodeId, name: &[u8]) -> NodeId {
    tree.insert(parent, name, Node::new(meta(0o755), Kind::empty_dir())).unwrap()
}

pub fn xattr(name: &str, value: &[u8]) -> Xattr {
    Xattr { name: name.as_bytes().to_vec(), value: value.to_vec() }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

pub fn size_of(img: &dyn BlockRead) -> u64 {
    img.size()
}

/// What `plan` says when it fails (tests of refusals).
pub trait PlanErr {
    fn plan_checked(&self, tree: &Tree, opts: &BuildOptions) -> String;
}

impl PlanErr for Ext4Builder {
    fn plan_checked(&self, tree: &Tree, opts: &BuildOptions) -> String {
        match self.plan(tree, opts) {
            Ok(_) => panic!("planning should have failed"),
            Err(e) => e.to_string(),
        }
    }
}
