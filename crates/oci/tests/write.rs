//! Writing images: a tree written as oci:, oci-archive: and docker-archive: must be
//! accepted by skopeo and unpack with umoci to the same files; the same tree and
//! SOURCE_DATE_EPOCH give the same digests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::progress::NoProgress;
use diskcast_oci::write::{ImageTarget, WriteConfig, write_image};
use diskcast_oci::{ImageRef, OpenOptions, open_tree};
use serde_json::Value;

/// `dst` opened as an output, as the CLI opens it before reading any input.
fn target(dst: &str) -> ImageTarget {
    ImageTarget::open::<&std::path::Path>(ImageRef::parse(dst).unwrap(), &[]).unwrap()
}

fn cfg() -> WriteConfig {
    WriteConfig {
        architecture: Some("arm64".into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hi".into()]),
        env: vec!["PATH=/bin".into()],
        working_dir: Some("/tmp".into()),
        epoch: 1_700_000_000,
        reproducible: true,
        ..WriteConfig::new(2)
    }
}

#[test]
fn written_images_are_read_by_skopeo_and_umoci_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let tree = open_tree(&format!("oci:{}:t", img.display()), &OpenOptions::default(), 2).unwrap().tree;
    // With SOURCE_DATE_EPOCH, times after it are clamped to it.
    let want: std::collections::BTreeMap<String, String> = tree_manifest(&tree, Devices::AsEmptyFiles)
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .split(' ')
                .map(|w| match w.strip_prefix("t=").and_then(|t| t.parse::<i64>().ok()) {
                    Some(t) => format!("t={}", t.min(1_700_000_000)),
                    None => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ");
            (k, v)
        })
        .collect();
    let p = |n: &str| tmp.path().join(n).display().to_string();

    // oci: layout, read back by umoci.
    let out = p("out");
    let r1 = write_image(&tree, target(&format!("oci:{out}:v1")), &cfg(), &NoProgress).unwrap();
    let sk: Value = serde_json::from_str(&run("skopeo", &["inspect", &format!("oci:{out}:v1")])).unwrap();
    assert_eq!(sk["Digest"].as_str().unwrap(), r1.manifest_digest.as_str());
    assert_eq!(sk["Architecture"], "arm64");
    let c: Value = serde_json::from_str(&run("skopeo", &["inspect", "--config", &format!("oci:{out}:v1")])).unwrap();
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(c["created"], "2023-11-14T22:13:20Z");
    let rootfs = umoci_unpack(&format!("{out}:v1"), &tmp.path().join("b1"));
    assert_same(&dir_manifest(&rootfs), &want, "umoci unpack of our oci: image");

    // The same again into the same layout under another tag: same digest (reproducible),
    // and both tags are there.
    let r2 = write_image(&tree, target(&format!("oci:{out}:v2")), &cfg(), &NoProgress).unwrap();
    assert_eq!(r1.manifest_digest, r2.manifest_digest);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("out/index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);

    // oci-archive: skopeo reads it; copied to a layout, umoci unpacks the same files.
    let arch = p("a.tar");
    let ra = write_image(&tree, target(&format!("oci-archive:{arch}:v1")), &cfg(), &NoProgress).unwrap();
    assert_eq!(ra.manifest_digest, r1.manifest_digest);
    run("skopeo", &["copy", "--quiet", &format!("oci-archive:{arch}:v1"), &format!("oci:{}:x", p("from-archive"))]);
    let rootfs = umoci_unpack(&format!("{}:x", p("from-archive")), &tmp.path().join("b2"));
    assert_same(&dir_manifest(&rootfs), &want, "umoci unpack of our oci-archive: image");
    let bytes = std::fs::read(&arch).unwrap();
    write_image(&tree, target(&format!("oci-archive:{arch}:v1")), &cfg(), &NoProgress).unwrap();
    assert!(std::fs::read(&arch).unwrap() == bytes, "oci-archive is not reproducible");

    // docker-archive: skopeo finds it by its tag; copied to a layout, umoci agrees.
    let d = p("d.tar");
    write_image(&tree, target(&format!("docker-archive:{d}:example/img:v1")), &cfg(), &NoProgress).unwrap();
    run(
        "skopeo",
        &["copy", "--quiet", &format!("docker-archive:{d}:example/img:v1"), &format!("oci:{}:x", p("from-docker"))],
    );
    let rootfs = umoci_unpack(&format!("{}:x", p("from-docker")), &tmp.path().join("b3"));
    assert_same(&dir_manifest(&rootfs), &want, "umoci unpack of our docker-archive: image");
    // And we read our own archives back to the same tree.
    for spec in [format!("oci-archive:{arch}:v1"), format!("docker-archive:{d}")] {
        let back = open_tree(&spec, &OpenOptions::default(), 2).unwrap().tree;
        assert_same(&tree_manifest(&back, Devices::AsEmptyFiles), &want, &spec);
    }
}
