//! The containerDisk writer, judged by skopeo (config), GNU tar (the layer's owner and
//! mode), umoci (unpacking) and qemu-img (the unpacked disk equals the original).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::progress::NoProgress;
use diskcast_block::provenance::Provenance;
use diskcast_oci::write::WriteConfig;
use diskcast_testkit::{qemu_img, qemu_io, run};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A qcow2 made by qemu-img with data written by qemu-io at two places.
fn qcow2(dir: &Path) -> PathBuf {
    let p = dir.join("vm.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "64M"]);
    qemu_io("qcow2", &p, &["write -P 0x5a 0 1M", "write -P 0x33 40M 300K"]);
    p
}

#[test]
fn qcow2_wrapped_as_oci_layout_unpacks_to_the_same_disk() {
    let t = tempfile::tempdir().unwrap();
    let disk = qcow2(t.path());
    let layout = t.path().join("layout");
    let dst = format!("oci:{}:disk", s(&layout));
    let clock = Provenance::fixed(1_700_000_000);
    diskcast_vm::container_disk::write(&disk, "qcow2", &dst, &clock, WriteConfig::new(2), &NoProgress).unwrap();

    let v: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", &dst])).unwrap();
    assert_eq!(v["Architecture"], "amd64", "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["Created"], "2023-11-14T22:13:20Z", "{v}");

    // The layer as GNU tar lists it: the disk owned by 107:107, mode 0440, under disk/.
    let layer = v["Layers"][0].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let listing = run("tar", &["--numeric-owner", "-tvzf", &s(&layout.join("blobs/sha256").join(&layer))]);
    let line = listing.lines().find(|l| l.ends_with("disk/disk.qcow2")).unwrap_or_else(|| panic!("{listing}"));
    assert!(line.starts_with("-r--r----- 107/107 "), "{line}");
    assert_eq!(listing.lines().filter(|l| l.starts_with('-')).count(), 1, "{listing}");

    let bundle = t.path().join("bundle");
    run("umoci", &["unpack", "--rootless", "--image", &format!("{}:disk", s(&layout)), &s(&bundle)]);
    let unpacked = bundle.join("rootfs/disk/disk.qcow2");
    qemu_img(&["compare", "-f", "qcow2", "-F", "qcow2", &s(&disk), &s(&unpacked)]);
    assert_eq!(std::fs::read(&disk).unwrap(), std::fs::read(&unpacked).unwrap());

    // Same disk, same epoch: same digest, in a second layout.
    let again = format!("oci:{}:disk", s(&t.path().join("layout2")));
    diskcast_vm::container_disk::write(&disk, "qcow2", &again, &clock, WriteConfig::new(2), &NoProgress).unwrap();
    let w: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", &again])).unwrap();
    assert_eq!(v["Digest"], w["Digest"]);
}

#[test]
fn oci_archive_is_reproducible_and_skopeo_copies_it() {
    let t = tempfile::tempdir().unwrap();
    let disk = qcow2(t.path());
    let clock = Provenance::fixed(86_400);
    let (a, b) = (t.path().join("a.tar"), t.path().join("b.tar"));
    for f in [&a, &b] {
        let dst = format!("oci-archive:{}:disk", s(f));
        diskcast_vm::container_disk::write(&disk, "qcow2", &dst, &clock, WriteConfig::new(2), &NoProgress).unwrap();
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "same epoch, same bytes");
    let back = t.path().join("back");
    run("skopeo", &["copy", "--quiet", &format!("oci-archive:{}:disk", s(&a)), &format!("oci:{}:x", s(&back))]);
    let bundle = t.path().join("bundle");
    run("umoci", &["unpack", "--rootless", "--image", &format!("{}:x", s(&back)), &s(&bundle)]);
    qemu_img(&["compare", &s(&disk), &s(&bundle.join("rootfs/disk/disk.qcow2"))]);
}

#[test]
fn wrong_formats_and_targets_are_refused_without_output() {
    let t = tempfile::tempdir().unwrap();
    let disk = qcow2(t.path());
    let clock = Provenance::fixed(0);
    let e = diskcast_vm::container_disk::write(
        &disk,
        "vmdk",
        &format!("oci:{}:x", s(&t.path().join("l"))),
        &clock,
        WriteConfig::new(2),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("qcow2 or raw"), "{e}");
    assert!(!t.path().join("l").exists());
    let e = diskcast_vm::container_disk::write(
        &disk,
        "qcow2",
        "docker://localhost:1/x:y",
        &clock,
        WriteConfig::new(2),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("oci:DIR:TAG"), "{e}");
    let e = diskcast_vm::container_disk::write(
        &t.path().join("none.qcow2"),
        "qcow2",
        &format!("oci:{}:x", s(&t.path().join("m"))),
        &clock,
        WriteConfig::new(2),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("none.qcow2"), "{e}");
    assert!(!t.path().join("m").exists());
}
