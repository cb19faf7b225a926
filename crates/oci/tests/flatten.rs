//! Flattening against umoci: images built by umoci (and layers by GNU tar and Python's
//! tarfile), copied between transports and compressions by skopeo, flattened by us and
//! unpacked by `umoci unpack --rootless`; every path, type, mode, owner, link target,
//! hard link, user xattr and content hash must agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_oci::{OpenOptions, open, open_tree};

fn flatten_manifest(spec: &str) -> std::collections::BTreeMap<String, String> {
    let tree = open_tree(spec, &OpenOptions::default(), 2).unwrap_or_else(|e| panic!("{spec}: {e}")).tree;
    tree_manifest(&tree, Devices::AsEmptyFiles)
}

#[test]
fn oci_layout_flattens_like_umoci_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let rootfs = umoci_unpack(&format!("{}:t", img.display()), &tmp.path().join("bundle"));
    let theirs = dir_manifest(&rootfs);
    let ours = flatten_manifest(&format!("oci:{}:t", img.display()));
    assert_same(&ours, &theirs, "oci: layout");
    // The spec's cases, spelled out so a regression names itself.
    assert!(!ours.contains_key("etc/removed-later"), "whiteout not applied");
    assert!(!ours.contains_key("opq/a") && ours.contains_key("opq/c"), "opaque directory not applied");
    assert!(!ours.contains_key("gone") && !ours.contains_key("to-delete"));
    assert!(ours["hl/link-to-lower"].ends_with("link=hl/link-to-lower") || ours["hl/orig"].contains("link="));
    assert!(ours["bin/busybox"].starts_with("- 4755 "));
    assert!(ours["with-xattr"].contains("user.foo=626172"));

    let image = open(&format!("oci:{}:t", img.display()), &OpenOptions::default()).unwrap();
    assert_eq!(image.layers.len(), 7);
    assert_eq!(image.config.config.as_ref().unwrap().entrypoint.as_deref(), Some(&["/bin/sh".to_string()][..]));
}

#[test]
fn skopeo_copies_flatten_the_same_in_every_transport_and_compression() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", img.display());
    let theirs = flatten_manifest(&src);
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let copies = [
        (format!("oci-archive:{}:t", p("a.tar")), vec![]),
        (format!("docker-archive:{}:example/img:t", p("d.tar")), vec![]),
        (format!("oci:{}:z", p("zstd")), vec!["--dest-compress", "--dest-compress-format", "zstd"]),
    ];
    for (dst, extra) in &copies {
        let mut args = vec!["copy", "--quiet"];
        args.extend(extra.iter().copied());
        args.push(&src);
        args.push(dst);
        run("skopeo", &args);
        assert_same(&flatten_manifest(dst), &theirs, dst);
    }
    // The zstd copy really has zstd layers, the plain one uncompressed ones.
    let z = open(&copies[2].0, &OpenOptions::default()).unwrap();
    assert!(z.layers.iter().all(|l| l.descriptor.media_type.ends_with("+zstd")), "{:?}", z.layers);
    // Uncompressed layers (skopeo 1.9 cannot write them to a layout: a script rewrites
    // the layout, and umoci unpacks that one too).
    let plain = p("plain");
    run("/usr/bin/python3", &[fixture("decompress-layout.py").to_str().unwrap(), img.to_str().unwrap(), "t", &plain]);
    let u = open(&format!("oci:{plain}:t"), &OpenOptions::default()).unwrap();
    assert!(u.layers.iter().all(|l| l.descriptor.media_type.ends_with(".tar")), "{:?}", u.layers);
    assert_same(&flatten_manifest(&format!("oci:{plain}:t")), &theirs, "uncompressed layers");
    let rootfs = umoci_unpack(&format!("{plain}:t"), &tmp.path().join("bundle"));
    assert_same(&dir_manifest(&rootfs), &theirs, "umoci on uncompressed layers");
    // docker-archive without a reference: the only image; with a wrong one: the list.
    let d = p("d.tar");
    assert_same(&flatten_manifest(&format!("docker-archive:{d}")), &theirs, "docker-archive without ref");
    let e = open(&format!("docker-archive:{d}:nope:1"), &OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("example/img:t"), "{e}");
    let legacy = open(&format!("docker-archive:{d}"), &OpenOptions::default()).unwrap();
    assert!(legacy.manifest_synthesized);

    // Docker 25+'s OCI-style docker save: the real manifest is found and used.
    let d25 = p("d25.tar");
    run(
        "/usr/bin/python3",
        &[fixture("docker25-archive.py").to_str().unwrap(), img.to_str().unwrap(), "t", "example/img:t", &d25],
    );
    let spec = format!("docker-archive:{d25}:example/img:t");
    let oci = open(&src, &OpenOptions::default()).unwrap();
    let modern = open(&spec, &OpenOptions::default()).unwrap();
    assert!(!modern.manifest_synthesized);
    assert_eq!(modern.manifest_digest, oci.manifest_digest);
    assert_same(&flatten_manifest(&spec), &theirs, "docker 25 archive");
}

#[test]
fn gnu_old_sparse_members_read_like_gnu_tar_extracts_them() {
    // umoci cannot unpack GNU's old sparse members ('S'), so GNU tar is the oracle here.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = src.join("sparse");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(9 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"first", 0).unwrap();
    file.write_all_at(b"second", 4 << 20).unwrap();
    file.write_all_at(&[7u8; 10000], (9 << 20) - 10000).unwrap();
    drop(file);
    let tar = tmp.path().join("l.tar");
    run("tar", &["--sparse", "--format=gnu", "-C", src.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "sparse"]);
    let bytes = std::fs::read(&tar).unwrap();
    assert!(bytes.len() < 1 << 20, "GNU tar did not store the file sparse");
    let layout = tmp.path().join("img");
    write_plain_layout(&layout, &[bytes]);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    run("tar", &["-C", out.to_str().unwrap(), "-xf", tar.to_str().unwrap()]);
    let tree = open_tree(&format!("oci:{}:t", layout.display()), &OpenOptions::default(), 2).unwrap().tree;
    let ours = tree_manifest(&tree, Devices::Real);
    let theirs = dir_manifest(&out);
    assert_eq!(ours["sparse"].split(' ').nth(3), theirs["sparse"].split(' ').nth(3), "content differs");
    let data = tree.node(tree.resolve(b"sparse", false).unwrap()).as_file().unwrap().data_ranges().unwrap();
    assert!(data.iter().map(|r| r.1).sum::<u64>() < 1 << 20, "holes lost: {data:?}");
}

#[test]
fn layers_listed_again_flatten_like_umoci_unpack() {
    // The test image's seven layers listed twice over (whiteouts, opaque directories, hard
    // links and replacements all applied a second time): umoci applies each listing, so
    // must we, whatever we share between listings of one blob.
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let order: Vec<usize> = (0..7).chain(0..7).chain([6, 6]).collect();
    relist_layers(&img, "t", &order);
    let image = open(&format!("oci:{}:t", img.display()), &OpenOptions::default()).unwrap();
    assert_eq!(image.layers.len(), 16);
    let rootfs = umoci_unpack(&format!("{}:t", img.display()), &tmp.path().join("bundle"));
    let ours = flatten_manifest(&format!("oci:{}:t", img.display()));
    assert_same(&ours, &dir_manifest(&rootfs), "layers listed twice");
}
