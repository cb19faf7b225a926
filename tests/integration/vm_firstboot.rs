//! `diskcast vm`'s first-boot pieces without a boot: the root grows to an enlarged disk
//! (a repart.d file and `x-systemd.growfs`, judged by this machine's systemd-repart
//! growing the partition of the resized disk, sgdisk -v, resize2fs and e2fsck), and the
//! cloud-init NoCloud seed (judged by debugfs and `cloud-init schema`). The guests carry
//! this machine's own systemd and cloud-init files, so what diskcast detects is what
//! Debian installs. The boot that shows the growth is the Debian test in vm.rs.

use crate::support::{assert_no_output, dc, dc_ok, qemu_img, s, test_kernel, tmp, tool_text};
use crate::vm::{busybox_root, check_disk, cut, debugfs, partitions, stat, write};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// This machine's systemd (Debian 12: 252) files that tell an image has systemd,
/// systemd-repart (enabled in sysinit.target.wants, as the package links it) and
/// systemd-growfs, copied into `root` at the same paths; plus its private library,
/// whose name gives the release (see [`systemd_library`]).
const SYSTEMD_FILES: [&str; 5] = [
    "/lib/systemd/systemd",
    "/lib/systemd/systemd-growfs",
    "/bin/systemd-repart",
    "/lib/systemd/system/systemd-repart.service",
    "/lib/systemd/system/sysinit.target.wants/systemd-repart.service",
];

/// This machine's `libsystemd-shared-RELEASE.so` and the release.
fn systemd_library() -> (String, String) {
    let dir = "/usr/lib/x86_64-linux-gnu/systemd";
    let name = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (package systemd)"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libsystemd-shared-"))
        .unwrap_or_else(|| panic!("no libsystemd-shared-*.so in {dir}"));
    let release = name.trim_start_matches("libsystemd-shared-").trim_end_matches(".so").to_string();
    (format!("{dir}/{name}"), release)
}
/// This machine's cloud-init (Debian's package) entry point and units.
const CLOUD_INIT_FILES: [&str; 3] =
    ["/usr/bin/cloud-init", "/lib/systemd/system/cloud-init-local.service", "/lib/systemd/system/cloud-init.service"];

/// Copies host files into `root` (a link stays a link).
fn copy_host(root: &Path, files: &[&str]) {
    for f in files {
        let to = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let md = std::fs::symlink_metadata(f).unwrap_or_else(|e| panic!("{f}: {e} (scripts/setup.sh installs it)"));
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(f).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(f, &to).unwrap();
        }
    }
}

/// A busybox root with `files` of this machine, as a tar.
fn guest(work: &Path, name: &str, files: &[&str]) -> PathBuf {
    let root = work.join(name);
    busybox_root(&root);
    copy_host(&root, files);
    let tar = work.join(format!("{name}.tar"));
    tool_text("tar", &["--owner=0", "--group=0", "-cf", &s(&tar), "-C", &s(&root), "."]);
    tar
}

const USER_DATA: &str =
    "#cloud-config\nhostname: seeded\npackages: [htop]\nruncmd:\n  - [sh, -c, 'echo seeded > /run/seeded']\n";
const NETWORK_CONFIG: &str = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n";

/// A systemd guest with cloud-init as a qcow2 (8 GiB), enlarged by `qemu-img resize
/// +2G`: this machine's systemd-repart, given the repart.d file read back from the disk
/// by debugfs, grows the root partition to the new end, and resize2fs grows its ext4.
/// The seed is where NoCloud reads it, the user data as given (`cloud-init schema`
/// passes it), the meta-data generated.
#[test]
fn systemd_guest_grows_its_root_and_gets_a_nocloud_seed() {
    let t = tmp();
    let (library, release) = systemd_library();
    let mut files = SYSTEMD_FILES.to_vec();
    files.extend(CLOUD_INIT_FILES);
    files.push(&library);
    let tar = guest(t.path(), "root", &files);
    let (ud, nc) = (t.path().join("user-data.yaml"), t.path().join("net.yaml"));
    std::fs::write(&ud, USER_DATA).unwrap();
    std::fs::write(&nc, NETWORK_CONFIG).unwrap();
    let disk = t.path().join("vm.qcow2");
    let summary = dc_ok(&[
        "vm",
        &s(&tar),
        "-o",
        &s(&disk),
        "--kernel",
        &s(&test_kernel()),
        "--hostname",
        "seedvm",
        "--cloud-init",
        &s(&ud),
        "--network-config",
        &s(&nc),
        "--output",
        "json",
    ])
    .json();
    assert_eq!(summary["first-boot-growth"], "systemd-repart", "{summary}");
    let changes = summary["guest-changes"].to_string();
    assert!(
        changes.contains(&format!("x-systemd.growfs on / (systemd {release})")) && !changes.contains(", enabled"),
        "{changes}"
    );
    let (root, _) = check_disk(&disk, "qcow2", &summary, t.path());

    // The repart.d file and fstab, read back by debugfs.
    let conf = debugfs(&root, "cat /etc/repart.d/50-diskcast-root.conf");
    let fstab = debugfs(&root, "cat /etc/fstab");
    let root_uuid = summary["partitions"][1]["partuuid"].as_str().unwrap();
    assert!(
        fstab
            .lines()
            .any(|l| l.starts_with(&format!("PARTUUID={root_uuid}\t/\text4\t")) && l.contains("x-systemd.growfs")),
        "{fstab}"
    );
    // The seed: the files as given, user-data readable by root only.
    let seed = "/var/lib/cloud/seed/nocloud";
    assert_eq!(debugfs(&root, &format!("cat {seed}/user-data")), USER_DATA);
    assert_eq!(debugfs(&root, &format!("cat {seed}/network-config")), NETWORK_CONFIG);
    assert!(stat(&root, &format!("{seed}/user-data")).contains("Mode:  0600"));
    let meta = debugfs(&root, &format!("cat {seed}/meta-data"));
    assert_eq!(meta, format!("instance-id: iid-diskcast-{root_uuid}\nlocal-hostname: seedvm\n"));
    let dumped = t.path().join("user-data.dumped");
    std::fs::write(&dumped, debugfs(&root, &format!("cat {seed}/user-data"))).unwrap();
    let schema = tool_text("cloud-init", &["schema", "--config-file", &s(&dumped)]);
    assert!(schema.contains("Valid cloud-config"), "{schema}");
    std::fs::remove_file(&root).unwrap();

    // Enlarge the disk as a platform would, then let systemd-repart do what it does on
    // boot, on a raw copy (a file, not a block device: --dry-run=no changes the file).
    qemu_img(&["resize", &s(&disk), "+2G"]);
    let raw = t.path().join("grown.raw");
    qemu_img(&["convert", "-f", "qcow2", "-O", "raw", &s(&disk), &s(&raw)]);
    let defs = t.path().join("repart.d");
    write(&defs, "50-diskcast-root.conf", &conf);
    let out = tool_text(
        "systemd-repart",
        &["--dry-run=no", "--no-pager", "--json=short", &format!("--definitions={}", s(&defs)), &s(&raw)],
    );
    let plan: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('[')).unwrap_or(&out))
        .unwrap_or_else(|e| panic!("systemd-repart --json: {e}\n{out}"));
    let grown = plan.as_array().unwrap().iter().find(|p| p["uuid"] == root_uuid).unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(grown["activity"], "resize", "{plan}");
    let (_, start, old) = partitions(&summary).into_iter().find(|p| p.0 == "root").unwrap();
    let new = grown["raw_size"].as_u64().unwrap();
    assert_eq!(grown["old_size"].as_u64(), Some(old), "{plan}");
    // Up to the backup GPT at the new end (and repart's 4 KiB alignment).
    assert!(new > old + (2 << 30) - (1 << 20) && start + new <= (10 << 30) - 33 * 512, "{plan}");
    let v = tool_text("sgdisk", &["-v", &s(&raw)]);
    assert!(v.contains("No problems found"), "sgdisk -v after systemd-repart:\n{v}");
    // What systemd-growfs does online, done offline by resize2fs on the grown partition.
    let part = t.path().join("root.img");
    cut(&raw, start, new, &part);
    std::fs::remove_file(&raw).unwrap();
    tool_text("resize2fs", &[&s(&part)]);
    tool_text("e2fsck", &["-fn", &s(&part)]);
    let sb = tool_text("dumpe2fs", &["-h", &s(&part)]);
    let blocks: u64 = sb
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sb}"));
    assert_eq!(blocks * 4096, new / 4096 * 4096, "{sb}");
}

/// A guest without systemd gets no growth, said in the summary; `--cloud-init` needs
/// cloud-init in the image and user data cloud-init would act on (as `cloud-init schema`
/// judges the same file); the refusals write nothing.
#[test]
fn growth_and_seed_are_refused_or_reported_where_the_image_cannot_use_them() {
    let t = tmp();
    let kernel = s(&test_kernel());
    let plain = guest(t.path(), "plain", &[]);
    let disk = t.path().join("plain.raw");
    let r = dc_ok(&["vm", &s(&plain), "-o", &s(&disk), "--kernel", &kernel]);
    r.expect_stderr_all(&["first-boot growth: none (the image has no systemd", "growpart, resize2fs"]);
    let summary = dc_ok(&["vm", &s(&plain), "-o", &s(&disk), "--kernel", &kernel, "--output", "json"]).json();
    assert!(summary["first-boot-growth"].as_str().unwrap().starts_with("none (the image has no systemd"), "{summary}");
    let (root, _) = check_disk(&disk, "raw", &summary, t.path());
    assert!(!debugfs(&root, "cat /etc/fstab").contains("x-systemd.growfs"));
    assert!(debugfs(&root, "ls -l /etc").lines().all(|l| !l.contains("repart.d")));

    let ud = t.path().join("user-data");
    std::fs::write(&ud, USER_DATA).unwrap();
    let out = t.path().join("out.qcow2");
    dc(&["vm", &s(&plain), "-o", &s(&out), "--kernel", &kernel, "--cloud-init", &s(&ud)])
        .expect_diskcast_error()
        .expect_stderr_all(&["--cloud-init: the image has no cloud-init", "install cloud-init in the image"]);
    assert_no_output(&out);
    // YAML without the header: cloud-init's own schema check refuses it too.
    let bare = t.path().join("bare.yaml");
    std::fs::write(&bare, USER_DATA.trim_start_matches("#cloud-config\n")).unwrap();
    let schema = Command::new("cloud-init").args(["schema", "--config-file", &s(&bare)]).output().unwrap();
    assert!(!schema.status.success(), "cloud-init schema accepted a header-less file");
    assert!(String::from_utf8_lossy(&schema.stderr).contains("needs to begin with \"#cloud-config\""));
    let with_ci = guest(t.path(), "ci", &CLOUD_INIT_FILES);
    dc(&["vm", &s(&with_ci), "-o", &s(&out), "--kernel", &kernel, "--cloud-init", &s(&bare)])
        .expect_diskcast_error()
        .expect_stderr_all(&["does not start as cloud-init expects", "#cloud-config"]);
    assert_no_output(&out);
    dc(&["vm", &s(&with_ci), "-o", &s(&out), "--kernel", &kernel, "--meta-data", &s(&ud)])
        .expect_code(1)
        .expect_stderr_all(&["required arguments were not provided", "--cloud-init <USER_DATA>"]);
    // A script and a given meta-data are taken as they are.
    let script = t.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho from-user-data\n").unwrap();
    let meta = t.path().join("meta");
    std::fs::write(&meta, "instance-id: mine\n").unwrap();
    let summary = dc_ok(&[
        "vm",
        &s(&with_ci),
        "-o",
        &s(&out),
        "--kernel",
        &kernel,
        "--cloud-init",
        &s(&script),
        "--meta-data",
        &s(&meta),
        "--output",
        "json",
    ])
    .json();
    let (root, _) = check_disk(&out, "qcow2", &summary, t.path());
    assert_eq!(debugfs(&root, "cat /var/lib/cloud/seed/nocloud/meta-data"), "instance-id: mine\n");
    assert_eq!(debugfs(&root, "cat /var/lib/cloud/seed/nocloud/user-data"), "#!/bin/sh\necho from-user-data\n");
}

/// The whole way: a Debian image with cloud-init (mmdebstrap) made a disk with
/// `--cloud-init`, booted under OVMF; cloud-init finds the NoCloud seed, sets the host
/// name the user data names and runs its `runcmd`, which prints the marker with what
/// cloud-init reports. Minutes under TCG (python starts four times), hence ignored; run
/// with `cargo test -p diskcast --test integration -- --ignored vm_firstboot::cloud_init`.
#[test]
#[ignore = "minutes: mmdebstrap with cloud-init, then four cloud-init stages under TCG"]
fn debian_image_with_cloud_init_runs_the_seeded_user_data() {
    let t = tmp();
    let tar = t.path().join("debian.tar");
    let start = std::time::Instant::now();
    crate::vm::debian_rootfs(&tar, ",cloud-init");
    let ud = t.path().join("user-data");
    std::fs::write(
        &ud,
        "#cloud-config\nhostname: from-cloud-init\nruncmd:\n  - [sh, -c, 'echo \"DISKCAST_CLOUD_INIT_OK host=$(hostname) \
         iid=$(cloud-init query instance_id)\" > /dev/console']\n",
    )
    .unwrap();
    let disk = t.path().join("ci.qcow2");
    let summary = dc_ok(&["vm", &s(&tar), "-o", &s(&disk), "--cloud-init", &s(&ud), "--output", "json"]).json();
    std::fs::remove_file(&tar).unwrap();
    assert_eq!(summary["first-boot-growth"], "systemd-repart", "{summary}");
    let root_uuid = summary["partitions"][1]["partuuid"].as_str().unwrap().to_string();
    let boot = std::time::Instant::now();
    let console = crate::support::boot_to_marker(
        &disk,
        "qcow2",
        crate::support::Firmware::Uefi,
        crate::support::Bus::Nvme,
        "DISKCAST_CLOUD_INIT_OK",
        t.path(),
        std::time::Duration::from_secs(900),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("boot to cloud-init's runcmd: {:.0} s", boot.elapsed().as_secs_f64());
    let line = console.lines().find(|l| l.starts_with("DISKCAST_CLOUD_INIT_OK")).unwrap_or_else(|| panic!("{console}"));
    assert!(line.contains("host=from-cloud-init") && line.contains(&format!("iid=iid-diskcast-{root_uuid}")), "{line}");
    eprintln!("whole test: {:.0} s", start.elapsed().as_secs_f64());
}
