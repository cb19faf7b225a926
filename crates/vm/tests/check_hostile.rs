//! `check --profile` on hostile disks: damaged ESPs, partition tables and containerDisk
//! payloads give reasons or input errors naming the image, never a panic or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::gate::Gate;
use diskcast_block::registry::OpenContext;
use diskcast_testkit::hostile::within;
use diskcast_testkit::{pattern, run_utc};
use diskcast_vm::Profile;
use diskcast_vm::check::{Reason, check_image};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

fn check(profile: Profile, image: String) -> diskcast_block::Result<Vec<Reason>> {
    within(30, &format!("check --profile {} {image}", profile.name()), move || {
        let registry = diskcast_formats::registry();
        let gate = Gate::new();
        let ctx = OpenContext::new(&registry, &gate);
        check_image(profile, &image, None, &diskcast_oci::OpenOptions::default(), &ctx, 2)
    })
}

fn codes(r: &[Reason]) -> Vec<&str> {
    r.iter().map(|r| r.code).collect()
}

/// A 32 MiB GPT disk by sgdisk: partition 1 an ESP filled with `esp` bytes.
fn disk(dir: &Path, esp: &[u8]) -> PathBuf {
    let p = dir.join("d.raw");
    std::fs::File::create(&p).unwrap().set_len(32 * MIB).unwrap();
    run_utc("sgdisk", &["-n", "1:2048:+20M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:8304", p.to_str().unwrap()]);
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(esp, MIB).unwrap();
    p
}

#[test]
fn an_esp_of_garbage_is_a_reason_not_a_failure() {
    let t = tempfile::tempdir().unwrap();
    // Random bytes with a FAT-looking boot sector signature, and random bytes alone.
    let mut fake = pattern(4 * MIB as usize, 11);
    fake[510] = 0x55;
    fake[511] = 0xaa;
    fake[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    for esp in [fake, pattern(MIB as usize, 12)] {
        let p = disk(t.path(), &esp);
        let r = check(Profile::Hyperv, p.to_str().unwrap().to_string()).unwrap();
        assert_eq!(codes(&r), ["format", "no-uefi-loader"], "{r:?}");
        assert!(r[1].message.contains("no readable FAT"), "{r:?}");
    }
}

#[test]
fn a_gpt_broken_in_both_copies_is_a_reason() {
    let t = tempfile::tempdir().unwrap();
    let p = disk(t.path(), &[]);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    // Both headers' CRC fields (offset 16 of LBA 1 and of the last LBA).
    f.write_all_at(&[0xff; 4], 512 + 16).unwrap();
    f.write_all_at(&[0xff; 4], 32 * MIB - 512 + 16).unwrap();
    let r = check(Profile::Kubevirt, p.to_str().unwrap().to_string()).unwrap();
    assert_eq!(codes(&r), ["not-container-disk"]);
    // Neither header checks out, so there is no table to trust.
    let r = check(Profile::Hyperv, p.to_str().unwrap().to_string()).unwrap();
    assert_eq!(codes(&r), ["format", "bad-partition-table"], "{r:?}");
    assert!(r[1].message.contains("header_crc32"), "{r:?}");
}

#[test]
fn a_container_disk_holding_a_hostile_qcow2_is_an_input_error() {
    let t = tempfile::tempdir().unwrap();
    let q = t.path().join("disk.qcow2");
    diskcast_testkit::qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "64M"]);
    // The L1 table offset (header byte 40) far past the end of the file.
    std::fs::OpenOptions::new().write(true).open(&q).unwrap().write_all_at(&(1u64 << 50).to_be_bytes(), 40).unwrap();
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let layout = t.path().join("layout");
    let image = format!("{}:t", layout.to_str().unwrap());
    run_utc("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    run_utc("umoci", &["new", "--image", &image]);
    run_utc("umoci", &["insert", "--image", &image, q.to_str().unwrap(), "/disk/disk.qcow2"]);
    let e = check(Profile::Kubevirt, format!("oci:{image}")).unwrap_err();
    diskcast_testkit::hostile::assert_input_error(&e, "disk/disk.qcow2", "hostile qcow2 in a containerDisk");
    assert!(e.to_string().contains("l1_table_offset"), "{e}");
}

#[test]
fn a_container_disk_naming_a_backing_file_opens_nothing_beside_it() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base.qcow2");
    let q = t.path().join("disk.qcow2");
    diskcast_testkit::qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "64M"]);
    diskcast_testkit::qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        q.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&q, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let layout = t.path().join("layout");
    let image = format!("{}:t", layout.to_str().unwrap());
    run_utc("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    run_utc("umoci", &["new", "--image", &image]);
    run_utc("umoci", &["insert", "--image", &image, q.to_str().unwrap(), "/disk/disk.qcow2"]);
    // The disk was copied out of its layer: no file beside it can be its backing file.
    let e = within(30, "backing file in a containerDisk", move || {
        let registry = diskcast_formats::registry();
        let gate = Gate::new();
        let ctx = OpenContext::new(&registry, &gate);
        check_image(Profile::Kubevirt, &format!("oci:{image}"), None, &diskcast_oci::OpenOptions::default(), &ctx, 2)
    })
    .unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("base.qcow2"), "{e}");
}
