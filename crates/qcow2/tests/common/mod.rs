//! Test helpers: the shared ones come from `diskcast-testkit` (qemu tools fail the test,
//! never skip, when missing); here only what is specific to qcow2.
// Each test binary uses a different subset of these helpers and re-exports.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::registry::{CreateOptions, Registry};
use diskcast_block::{Alloc, BlockRead, Result};
use diskcast_qcow2::Qcow2Driver;
use diskcast_testkit as tk;
use std::path::Path;

pub use tk::{VecDisk, assert_error, be64, first_error, opts, patch, pattern, qemu_img, read_all, run};

/// `qemu-io -f qcow2 path -c cmd ...`
pub fn qemu_io(path: &Path, cmds: &[&str]) {
    tk::qemu_io("qcow2", path, cmds);
}

pub fn create(path: &Path, size: &str, opts: &str) {
    tk::qemu_create("qcow2", path, size, opts);
}

pub fn registry() -> Registry {
    Registry::new(vec![Box::new(Qcow2Driver)])
}

pub fn open(path: &Path) -> Result<Box<dyn BlockRead>> {
    tk::open_with(&registry(), path, Some("qcow2"))
}

/// Guest bytes as qemu-img sees them.
pub fn qemu_raw(path: &Path, dir: &Path) -> Vec<u8> {
    tk::qemu_raw(path, "qcow2", dir)
}

/// Our reader of `path` against qemu: content and `qemu-img map` (see
/// [`tk::assert_matches_qemu`]).
pub fn assert_matches_qemu(path: &Path, dir: &Path) {
    tk::assert_matches_qemu(open(path).unwrap().as_ref(), path, "qcow2", dir);
}

/// Writes `src` into a new qcow2 at `path` with our writer, through the copy engine.
pub fn write_with_ours(src: &dyn BlockRead, path: &Path, opts: &CreateOptions) {
    tk::write_with(&Qcow2Driver, src, path, opts);
}

/// `qemu-img check` must pass with no errors and no leaks.
pub fn assert_qemu_check_clean(path: &Path) {
    tk::assert_qemu_check_clean(path, "qcow2");
}

/// `qemu-img compare` of a raw file against our qcow2 must succeed.
pub fn assert_qemu_compare(raw: &Path, qcow2: &Path) {
    tk::assert_qemu_compare(raw, "raw", qcow2, "qcow2");
}
