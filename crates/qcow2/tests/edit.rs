//! The in-place editor's own API (what `rebase`, `commit` and `amend` build on) on
//! qemu-made images: partial and whole writes into data, compressed, zero, unallocated
//! and snapshot-shared clusters, zeros, and backing data for partial writes. qemu judges:
//! the guest bytes `qemu-img convert` reads equal the same edits applied to the bytes it
//! read before, `qemu-img check` is clean, and the snapshot still reads as it was taken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::BlockRead;
use diskcast_block::io::ImageFile;
use diskcast_qcow2::edit::Editor;
use std::path::Path;

/// One edit, applied to the image through the editor and to `expected` by hand.
enum Edit {
    Write(u64, usize, u8),
    Zeros(u64, u64),
}

fn apply(path: &Path, edits: &[Edit], below: Option<&dyn BlockRead>, expected: &mut [u8]) {
    let mut ed = Editor::open(ImageFile::open_rw(path).unwrap()).unwrap();
    for e in edits {
        match *e {
            Edit::Write(at, len, byte) => {
                ed.write(at, &vec![byte; len], below).unwrap();
                let at = usize::try_from(at).unwrap();
                expected[at..at + len].fill(byte);
            }
            Edit::Zeros(at, len) => {
                ed.write_zeroes(at, len, below).unwrap();
                let (at, len) = (usize::try_from(at).unwrap(), usize::try_from(len).unwrap());
                expected[at..at + len].fill(0);
            }
        }
    }
    ed.flush().unwrap();
}

#[test]
fn editor_writes_every_kind_of_cluster_like_qemu_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    for opts in ["", "compat=0.10", "cluster_size=4096", "cluster_size=512,refcount_bits=64", "refcount_bits=1"] {
        let p = dir.path().join("e.qcow2");
        let _ = std::fs::remove_file(&p);
        create(&p, "4M", opts);
        qemu_io(&p, &["write -P 0x11 0 256K", "write -c -P 0x12 512K 128K", "write -z 1M 128K"]);
        let shared = !opts.contains("refcount_bits=1");
        if shared {
            qemu_img(&["snapshot", "-c", "s", p.to_str().unwrap()]);
        }
        let before = qemu_raw(&p, dir.path());
        let mut expected = before.clone();
        let edits = [
            Edit::Write(100, 1000, 0x21), // part of a data cluster (shared with the snapshot)
            Edit::Write(512 * 1024 + 10, 70_000, 0x22), // across compressed clusters
            Edit::Write(1024 * 1024 + 5, 10, 0x23), // into a zero cluster
            Edit::Write(3 * 1024 * 1024 + 7, 3, 0x24), // into an unallocated cluster
            Edit::Write(2 * 1024 * 1024, 192 * 1024, 0x25), // whole clusters
            Edit::Zeros(64 * 1024 + 1, 100), // zeros inside a cluster
            Edit::Zeros(128 * 1024, 128 * 1024), // whole data clusters become zero clusters
            Edit::Zeros(3 * 1024 * 1024, 1024 * 1024), // a range with one byte of data
        ];
        apply(&p, &edits, None, &mut expected);
        assert_qemu_check_clean(&p);
        assert!(qemu_raw(&p, dir.path()) == expected, "-o {opts:?}: qemu reads other bytes than were written");
        if shared {
            let snap = dir.path().join("s.raw");
            qemu_img(&["convert", "-l", "s", "-O", "raw", p.to_str().unwrap(), snap.to_str().unwrap()]);
            assert!(std::fs::read(&snap).unwrap() == before, "-o {opts:?}: the snapshot changed");
        }
    }
}

#[test]
fn partial_writes_over_a_backing_file_take_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let base_bytes: Vec<u8> = (0..4u32 << 20).map(|i| u8::try_from(i % 251).unwrap()).collect();
    std::fs::write(&base, &base_bytes).unwrap();
    for opts in ["", "compat=0.10"] {
        let p = dir.path().join("o.qcow2");
        let _ = std::fs::remove_file(&p);
        create(
            &p,
            "4M",
            &format!("backing_file=base.raw,backing_fmt=raw{}", if opts.is_empty() { "" } else { ",compat=0.10" }),
        );
        qemu_io(&p, &["write -P 0x31 1M 64K"]);
        // Without the backing data a partial write into an unallocated cluster is refused.
        let mut ed = Editor::open(ImageFile::open_rw(&p).unwrap()).unwrap();
        let e = ed.write(7, &[1, 2, 3], None).unwrap_err();
        assert!(e.message().contains("backing file's data"), "{e}");
        drop(ed);
        let before = qemu_raw(&p, dir.path());
        let mut expected = before.clone();
        let below = VecDisk(base_bytes.clone());
        let edits = [
            Edit::Write(7, 3, 0x41),
            Edit::Write(1024 * 1024 + 9, 5, 0x42),
            Edit::Zeros(2 * 1024 * 1024, 128 * 1024), // v3 zero clusters; v2 zeros written
            Edit::Zeros(3 * 1024 * 1024 + 3, 5),
        ];
        apply(&p, &edits, Some(&below), &mut expected);
        assert_qemu_check_clean(&p);
        assert!(qemu_raw(&p, dir.path()) == expected, "{opts:?}: qemu reads other bytes than were written");
    }
}

#[test]
fn images_with_bitmaps_take_metadata_changes_but_no_guest_writes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.qcow2");
    create(&p, "4M", "");
    qemu_io(&p, &["write -P 0x11 0 128K"]);
    qemu_img(&["bitmap", "--add", p.to_str().unwrap(), "b0"]);
    let e = Editor::open(ImageFile::open_rw(&p).unwrap()).unwrap_err();
    assert!(e.message().contains("persistent dirty bitmaps"), "{e}");
    let mut ed = Editor::open_keeping_bitmaps(ImageFile::open_rw(&p).unwrap()).unwrap();
    let e = ed.write(0, &[1], None).unwrap_err();
    assert!(e.message().contains("bitmaps"), "{e}");
    // The allocator skips the bitmaps' clusters (they are counted): a cluster taken and
    // given back leaves the image as consistent as qemu left it.
    let before = qemu_raw(&p, dir.path());
    let at = ed.allocate(1).unwrap();
    assert!(ed.refcount(at).unwrap() == 1);
    ed.flush().unwrap();
    ed.free(at, 1).unwrap();
    ed.flush().unwrap();
    drop(ed);
    assert_qemu_check_clean(&p);
    assert!(qemu_raw(&p, dir.path()) == before);
    let info = qemu_img(&["info", "--output=json", p.to_str().unwrap()]);
    assert!(info.contains("\"b0\""), "{info}");
}
