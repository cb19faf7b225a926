//! The ext4 writer, judged by e2fsprogs: e2fsck -fn, debugfs, dumpe2fs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_tree::{NodeId, Tree};

#[test]
fn a_small_tree_passes_e2fsck() {
    let mut t = Tree::new(meta(0o755));
    let etc = dir(&mut t, NodeId::ROOT, b"etc");
    file(&mut t, etc, b"hostname", b"box\n".to_vec());
    file(&mut t, NodeId::ROOT, b"big", diskcast_testkit::pattern(300_000, 1));
    let d = tempdir();
    let img = path_in(&d, "fs.img");
    write(&t, &opts(), &img, "raw");
    assert_fsck_clean(&img);
    if let Ok(keep) = std::env::var("EXT4_KEEP") {
        std::fs::copy(&img, keep).unwrap();
    }
    let cat = debugfs(&img, "cat /etc/hostname");
    assert!(cat.contains("box"), "{cat}");
}
