//! Hostile layers, one test each, each with a time limit: a clear error of the right
//! kind, never a path outside the tree, never unbounded work.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::ErrorKind;
use diskcast_oci::{Flattened, OpenOptions, open_tree};
use diskcast_testkit::within;
use diskcast_tree::{Kind, Tree};
use std::path::Path;

fn flatten_dir(dir: &Path) -> diskcast_block::Result<Tree> {
    flatten_warnings(dir).map(|f| f.tree)
}

fn flatten_warnings(dir: &Path) -> diskcast_block::Result<Flattened> {
    let spec = format!("oci:{}:t", dir.display());
    within(60, "opening a hostile layout", move || open_tree(&spec, &OpenOptions::default(), 2))
}

/// A one-layer image of `members`, flattened: the tree and the members skipped.
fn one_layer_warnings(members: &[Vec<u8>]) -> (tempfile::TempDir, Flattened) {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar: Vec<u8> = members.concat();
    tar.extend(tar_end());
    write_plain_layout(tmp.path(), &[tar]);
    let r = flatten_warnings(tmp.path()).unwrap();
    (tmp, r)
}

/// The one warning of a layer with one refused member beside `ok`, which must be there.
fn skipped_beside(member: Vec<u8>) -> String {
    let (_t, f) = one_layer_warnings(&[member, tar_member(b"ok", b'0', b"fine", b"")]);
    assert!(f.tree.resolve(b"ok", false).is_ok(), "the member beside the refused one is missing");
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
    assert!(f.warnings[0].starts_with("layer sha256:"), "{:?}", f.warnings);
    f.warnings[0].clone()
}

fn one_layer(members: &[Vec<u8>]) -> (tempfile::TempDir, diskcast_block::Result<Tree>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar: Vec<u8> = members.concat();
    tar.extend(tar_end());
    write_plain_layout(tmp.path(), &[tar]);
    let r = flatten_dir(tmp.path());
    (tmp, r)
}

fn assert_err(r: diskcast_block::Result<Tree>, kind: ErrorKind, needle: &str) {
    let e = r.expect_err("hostile layer was accepted");
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(needle), "{e} should mention {needle:?}");
}

#[test]
fn dot_dot_member_is_skipped_with_a_warning_as_in_a_tar() {
    for path in [&b"../x"[..], b"a/../../x"] {
        let w = skipped_beside(tar_member(path, b'0', b"escape", b""));
        assert!(w.contains("contains '..'"), "{w}");
    }
}

#[test]
fn absolute_member_lands_inside_the_tree() {
    let (_t, r) = one_layer(&[tar_member(b"/etc/x", b'0', b"inside", b"")]);
    let tree = r.unwrap();
    let id = tree.resolve(b"etc/x", false).unwrap();
    assert_eq!(tree.node(id).as_file().unwrap().size, 6);
}

#[test]
fn file_under_a_symlink_to_etc_stays_in_the_tree_like_umoci() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = [
        tar_member(b"etc/", b'5', b"", b""),
        tar_member(b"etc-link", b'2', b"", b"/etc"),
        tar_member(b"etc-link/x", b'0', b"through the link", b""),
        tar_member(b"up", b'2', b"", b"../../../../etc"),
        tar_member(b"up/y", b'0', b"through a climbing link", b""),
    ]
    .concat();
    tar.extend(tar_end());
    write_plain_layout(tmp.path(), &[tar]);
    let tree = flatten_dir(tmp.path()).unwrap();
    for (path, len) in [(&b"etc/x"[..], 16), (b"etc/y", 23)] {
        let id = tree.resolve(path, false).unwrap();
        assert_eq!(tree.node(id).as_file().unwrap().size, len);
    }
    assert!(matches!(tree.node(tree.resolve(b"etc-link", false).unwrap()).kind, Kind::Symlink(_)));
    // umoci resolves the same way, inside its rootfs.
    let rootfs = umoci_unpack(&format!("{}:t", tmp.path().display()), &tmp.path().join("bundle"));
    let theirs = dir_manifest(&rootfs);
    let ours = tree_manifest(&tree, Devices::AsEmptyFiles);
    assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
    assert_eq!(ours["etc/x"].split(' ').nth(3), theirs["etc/x"].split(' ').nth(3));
}

#[test]
fn hard_link_out_of_the_root_is_skipped_with_a_warning() {
    let w = skipped_beside(tar_member(b"passwd", b'1', b"", b"../../etc/passwd"));
    assert!(
        w.contains(r#"skipped member "passwd": hard link to "../../etc/passwd""#) && w.contains("contains '..'"),
        "{w}"
    );
    let w = skipped_beside(tar_member(b"missing", b'1', b"", b"no/such/file"));
    assert!(w.contains("which is not an earlier member of the archive"), "{w}");
}

#[test]
fn whiteout_of_dot_dot_is_refused() {
    let (_t, r) = one_layer(&[tar_member(b"../.wh.x", b'0', b"", b"")]);
    assert_err(r, ErrorKind::Refused, "contains '..'");
    let (_t, r) = one_layer(&[tar_member(b"a/.wh...", b'0', b"", b"")]);
    assert_err(r, ErrorKind::Corrupt, "whiteout");
}

/// A one-layer layout whose file `f` holds `original`: the layout, the layer's tar and
/// the path of its blob.
fn original_layout() -> (tempfile::TempDir, Vec<u8>, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = tar_member(b"f", b'0', b"original", b"");
    tar.extend(tar_end());
    write_plain_layout(tmp.path(), &[tar.clone()]);
    let blob = std::fs::read_dir(tmp.path().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap() == tar)
        .unwrap();
    (tmp, tar, blob)
}

#[test]
fn digest_mismatch_is_refused() {
    let (tmp, tar, blob) = original_layout();
    // Same size, one byte changed: only the digest can tell.
    let mut bad = tar.clone();
    bad[512] = b'O';
    std::fs::write(&blob, &bad).unwrap();
    assert_err(flatten_dir(tmp.path()), ErrorKind::Corrupt, "digest mismatch");
    // One byte more: the size check.
    bad = tar.clone();
    bad.push(0);
    std::fs::write(&blob, &bad).unwrap();
    assert_err(flatten_dir(tmp.path()), ErrorKind::Corrupt, "size mismatch");
    // A manifest whose digest is wrong is refused before anything is read from it.
    let idx = std::fs::read_to_string(tmp.path().join("index.json")).unwrap();
    let wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let start = idx.find("sha256:").unwrap();
    let patched = format!("{}{}{}", &idx[..start], wrong, &idx[start + 71..]);
    std::fs::write(tmp.path().join("index.json"), patched).unwrap();
    let e = flatten_dir(tmp.path()).err().unwrap();
    assert!(e.to_string().contains("missing"), "{e}");
    // A digest that is not a digest never becomes a path.
    let evil = format!("{}sha256:../../../../etc/passwd{}", &idx[..start], &idx[start + 71..]);
    std::fs::write(tmp.path().join("index.json"), evil).unwrap();
    let e = flatten_dir(tmp.path()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidFormat, "{e}");
}

#[test]
fn decompression_bomb_is_capped() {
    // A member claiming 8 GiB, then 1 GiB of zeros: zstd makes that a few dozen KiB.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    use std::io::Write;
    let size: u64 = 0o77777777000;
    enc.write_all(&tar_header(b"zeros", b'0', size, b"")).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    let blob = enc.finish().unwrap();
    // The layout claims the full uncompressed content in diff_ids; it does not matter,
    // the cap fires first.
    let tmp = tempfile::tempdir().unwrap();
    write_layout(tmp.path(), &[(blob, "application/vnd.oci.image.layer.v1.tar+zstd")], &[Vec::new()]);
    let spec = format!("oci:{}:t", tmp.path().display());
    let r = within(60, "opening a zstd bomb", move || open_tree(&spec, &OpenOptions::default(), 2));
    let e = r.expect_err("bomb accepted");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("decompression bomb"), "{e}");
}

#[test]
fn pax_size_that_disagrees_is_refused() {
    // The PAX record says 100000 bytes, the header and the data say 5: the reader
    // follows PAX (as POSIX says) and the archive then ends inside the member.
    let (_t, r) = one_layer(&[
        tar_pax(&[("size", "100000")]),
        tar_member(b"f", b'0', b"short", b""),
        tar_member(b"g", b'0', b"next", b""),
    ]);
    assert_err(r, ErrorKind::Corrupt, "truncated");
    // A PAX size smaller than the data: the next header is read from file data.
    let (_t, r) = one_layer(&[
        tar_pax(&[("size", "1")]),
        tar_member(b"f", b'0', &[b'x'; 600], b""),
        tar_member(b"g", b'0', b"next", b""),
    ]);
    assert_err(r, ErrorKind::Corrupt, "checksum");
    let (_t, r) = one_layer(&[tar_pax(&[("size", "-5")]), tar_member(b"f", b'0', b"short", b"")]);
    assert_err(r, ErrorKind::Corrupt, "PAX size");
}

#[test]
fn members_of_all_layers_together_are_capped() {
    // One layer of 10000 members (Python's tarfile) listed 1001 times: read once, but
    // 10.01 million members to apply, past MAX_IMAGE_MEMBERS.
    let tmp = tempfile::tempdir().unwrap();
    let tar = tmp.path().join("layer.tar");
    let script = "import sys, tarfile\n\
        with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:\n\
        \x20   for i in range(10000): t.addfile(tarfile.TarInfo(f'f{i:05}'))\n";
    run("/usr/bin/python3", &["-c", script, tar.to_str().unwrap()]);
    let layout = tmp.path().join("img");
    write_plain_layout(&layout, &[std::fs::read(&tar).unwrap()]);
    relist_layers(&layout, "t", &[0; 1001]);
    let e = flatten_dir(&layout).expect_err("10 million members were applied");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("1001 layers (1 distinct blobs) hold more than the 10000000 members"), "{msg}");
    assert!(msg.contains("MAX_IMAGE_MEMBERS") && msg.contains(&layout.display().to_string()), "{msg}");
}

/// A layer blob is opened by name once: a file renamed over the blob's name after the
/// image was read is never read (a sink reading a file's bytes decodes the layer again
/// through the descriptor opened first).
#[test]
fn a_blob_replaced_after_reading_is_never_read() {
    let (tmp, tar, blob) = original_layout();
    let tree = flatten_dir(tmp.path()).unwrap();
    let mut other = tar.clone();
    other[512..520].copy_from_slice(b"replaced");
    let swap = tmp.path().join("swap");
    std::fs::write(&swap, &other).unwrap();
    std::fs::rename(&swap, &blob).unwrap();
    let f = tree.node(tree.resolve(b"f", false).unwrap()).as_file().unwrap();
    let mut got = vec![0u8; 8];
    f.read_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"original");
}
