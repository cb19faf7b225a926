//! Container images through the tree commands: `ls`, `cat` and `extract` of images built
//! by umoci and copied by skopeo, judged against `umoci unpack --rootless`.

use crate::oci_common::{dir_manifest, make_image, run, umoci_unpack};
use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[test]
fn extract_ls_cat_of_an_oci_image_match_umoci_unpack() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", s(&img));
    let rootfs = umoci_unpack(&format!("{}:t", s(&img)), &t.path().join("bundle"));
    let mut theirs = dir_manifest(&rootfs);

    let out = t.path().join("out");
    // --privileged: umoci keeps setuid bits, as we do only when asked.
    dc_ok(&["extract", "--privileged", &src, &s(&out)]);
    let mut ours = dir_manifest(&out);
    // umoci --rootless makes device nodes empty files; we make the device (as root with
    // --privileged) or report it (as a user): compare it on its own.
    let dev_ours = ours.remove("dev/null").unwrap();
    let dev_theirs = theirs.remove("dev/null").unwrap();
    assert!(dev_theirs.starts_with("- 666 "), "{dev_theirs}");
    if rustix_is_root() {
        assert!(dev_ours.starts_with("c 666 0:0 1:3 "), "{dev_ours}");
    }
    crate::oci_common::assert_same(&ours, &theirs, "diskcast extract vs umoci unpack");

    // ls -R lists the same paths; cat prints the same bytes.
    let listed = dc_ok(&["ls", "-R", &src]).stdout_str();
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    let mut want: Vec<String> = theirs.keys().cloned().chain(["dev/null".to_string()]).collect();
    want.sort();
    assert_eq!(names, want);
    let passwd = dc_ok(&["cat", &src, "/etc/passwd"]).stdout;
    assert_eq!(passwd, std::fs::read(rootfs.join("etc/passwd")).unwrap());
    let busybox = dc_ok(&["cat", &src, "bin/busybox"]).stdout;
    assert_eq!(busybox, std::fs::read("/bin/busybox").unwrap());

    // The same image as a docker save tarball (skopeo writes the legacy layout).
    let archive = t.path().join("d.tar");
    run("skopeo", &["copy", "--quiet", &src, &format!("docker-archive:{}:example/img:t", s(&archive))]);
    let out2 = t.path().join("out2");
    dc_ok(&["extract", "--privileged", &format!("docker-archive:{}", s(&archive)), &s(&out2)]);
    let mut ours2 = dir_manifest(&out2);
    ours2.remove("dev/null");
    crate::oci_common::assert_same(&ours2, &theirs, "docker-archive extract vs umoci unpack");
}

#[test]
fn image_errors_name_what_is_wrong() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    dc(&["ls", &format!("oci:{}:nope", s(&img))]).expect_code(1).expect_stderr_all(&["no image named", "t"]);
    dc(&["ls", "--platform", "linux/arm64", &format!("oci:{}:t", s(&img))])
        .expect_code(1)
        .expect_stderr_all(&["linux/amd64", "linux/arm64"]);
    dc(&["ls", &format!("oci:{}", s(&t.path().join("missing")))])
        .expect_code(1)
        .expect_stderr_all(&["not an OCI image layout"]);
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

#[test]
fn oci_inspect_prints_what_skopeo_sees() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", s(&img));
    let j = dc_ok(&["oci", "inspect", "--output", "json", &src]).json();
    let sk: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", &src])).unwrap();
    assert_eq!(j["manifest_digest"], sk["Digest"]);
    assert_eq!(j["layers"].as_array().unwrap().len(), sk["Layers"].as_array().unwrap().len());
    assert_eq!(j["config"]["Entrypoint"][0], "/bin/sh");
    let human = dc_ok(&["oci", "inspect", &src]).stdout_str();
    for want in ["Manifest:", sk["Digest"].as_str().unwrap(), "Entrypoint:", "History:", "umoci raw add-layer"] {
        assert!(human.contains(want), "{want} missing from:\n{human}");
    }
}

#[test]
fn extract_from_a_local_registry_with_tls_verify_false() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let rootfs = umoci_unpack(&format!("{}:t", s(&img)), &t.path().join("bundle"));
    let mut theirs = dir_manifest(&rootfs);
    theirs.remove("dev/null");
    let reg = crate::oci_common::start_registry(&t.path().join("registry"));
    let src = format!("docker://{}/test/img:t", reg.addr);
    run("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &format!("oci:{}:t", s(&img)), &src]);
    let out = t.path().join("out");
    let status = std::process::Command::new(diskcast_bin())
        .args(["extract", "--privileged", "--tls-verify=false", &src, &s(&out)])
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut ours = dir_manifest(&out);
    ours.remove("dev/null");
    crate::oci_common::assert_same(&ours, &theirs, "extract docker:// vs umoci unpack");
    assert!(t.path().join("cache/diskcast/blobs/sha256").read_dir().unwrap().count() >= 8, "blobs not cached");
    // With TLS verification (the default) a plain-HTTP registry is refused.
    let out2 = t.path().join("out2");
    let status = std::process::Command::new(diskcast_bin())
        .args(["ls", &src, &s(&out2)])
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    drop(reg);
}

fn without_times(m: std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| (k, v.split(' ').filter(|w| !w.starts_with("t=")).collect::<Vec<_>>().join(" ")))
        .collect()
}

/// A small root filesystem: busybox, `sh` linked to it, and /etc/hostname.
fn busybox_root(dir: &Path, hostname: &str) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("etc/hostname"), format!("{hostname}\n")).unwrap();
    root
}

#[test]
fn convert_a_directory_and_a_tar_to_images_skopeo_and_umoci_accept() {
    let t = tmp();
    let root = busybox_root(t.path(), "image");
    let args = |dst: &str| -> Vec<String> {
        [
            "convert",
            "--entrypoint",
            "[\"/bin/sh\",\"-c\"]",
            "--cmd",
            "echo hello",
            "--env",
            "A=1",
            "--arch",
            "arm64",
            &s(&root),
            dst,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let out = format!("oci:{}:v1", s(&t.path().join("layout")));
    let a = args(&out);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    dc_epoch(Some("1700000000"), &a).expect_ok();
    let first = run("skopeo", &["inspect", "--format", "{{.Digest}} {{.Architecture}} {{.Created}}", &out]);
    assert!(first.contains(" arm64 2023-11-14 22:13:20"), "{first}");
    dc_epoch(Some("1700000000"), &a).expect_ok();
    assert_eq!(
        run("skopeo", &["inspect", "--format", "{{.Digest}} {{.Architecture}} {{.Created}}", &out]),
        first,
        "not reproducible"
    );
    let cfg: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", "--config", &out])).unwrap();
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["echo hello"]));
    let rootfs = umoci_unpack(&format!("{}:v1", s(&t.path().join("layout"))), &t.path().join("bundle"));
    crate::oci_common::assert_same_min(
        &without_times(dir_manifest(&rootfs)),
        &without_times(dir_manifest(&root)),
        "dir -> oci:",
    );

    // A tar to a docker save archive that skopeo can load by tag.
    let tar = t.path().join("root.tar");
    run("tar", &["-C", &s(&root), "-cf", &s(&tar), "."]);
    let d = format!("docker-archive:{}:example/root:v1", s(&t.path().join("d.tar")));
    dc_ok(&["convert", &s(&tar), &d]);
    run("skopeo", &["copy", "--quiet", &d, &format!("oci:{}:x", s(&t.path().join("back")))]);
    let rootfs = umoci_unpack(&format!("{}:x", s(&t.path().join("back"))), &t.path().join("bundle2"));
    crate::oci_common::assert_same_min(
        &without_times(dir_manifest(&rootfs)),
        &without_times(dir_manifest(&root)),
        "tar -> docker-archive:",
    );

    // Block options make no sense for an image.
    dc(&["convert", "-O", "qcow2", &s(&root), &out]).expect_code(1).expect_stderr_any(&["-O, -o, -c and -n"]);
}

/// `oci inspect` of an image holding an rpm database written by Debian's rpm: the JSON
/// package list is what `rpm -qa` prints, and the human listing shows EPOCH:VERSION-RELEASE.
#[test]
fn oci_inspect_lists_rpm_packages_as_rpm_qa() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let root = t.path().join("root");
    let dbdir = root.join("var/lib/rpm");
    crate::oci_common::make_rpmdb(&dbdir, 6);
    let image_ref = format!("{}:t", s(&img));
    run("umoci", &["insert", "--image", &image_ref, &s(&root.join("var")), "/var"]);
    let src = format!("oci:{image_ref}");
    let j = dc_ok(&["oci", "inspect", "--output", "json", &src]).json();
    assert_eq!(j["package_manager"], "rpm");
    let opt = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let mut got: Vec<String> = j["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            // `version` shows rpm's epoch as EPOCH: (as `inspect` does); `epoch` has it too.
            let version = p["version"].as_str().unwrap();
            let version = match p["epoch"].as_u64() {
                Some(e) => version.strip_prefix(&format!("{e}:")).unwrap(),
                None => version,
            };
            crate::oci_common::rpm_line(
                p["name"].as_str().unwrap(),
                p["epoch"].as_u64(),
                version,
                // gpg-pubkey entries have none.
                p["architecture"].as_str().unwrap_or(""),
                p["size"].as_u64(),
                opt(&p["summary"]).as_deref(),
                opt(&p["license"]).as_deref(),
                opt(&p["source"]).as_deref(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, crate::oci_common::rpm_qa(&dbdir));
    // The database came in the image's top layer (skopeo's list), so every package did.
    let sk: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", &src])).unwrap();
    let top = sk["Layers"].as_array().unwrap().last().unwrap();
    assert!(j["packages"].as_array().unwrap().iter().all(|p| &p["layer"] == top), "{}", j["packages"]);
    let human = dc_ok(&["oci", "inspect", &src]).stdout_str();
    // tiny-003 has epoch 4 (see mkrpmdb.sh).
    for want in ["Packages:     8 (OS: rpm)", "tiny-003", "4:3.3-4.dc", "gpg-pubkey"] {
        assert!(human.contains(want), "{want} missing from:\n{human}");
    }
}

/// `diskcast` with the blob cache in `t`, and a fixed SOURCE_DATE_EPOCH (so a second
/// build of the same tree is the same image, config date included).
pub(crate) fn dc_cache(t: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(diskcast_bin());
    cmd.args(args).env("XDG_CACHE_HOME", t.join("cache")).env("SOURCE_DATE_EPOCH", "1700000000");
    let start = std::time::Instant::now();
    let out = cmd.output().unwrap();
    Run {
        cmdline: format!("diskcast {}", args.join(" ")),
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A push to Debian's docker-registry on loopback: skopeo sees the layer and config and
/// the digest we computed, umoci unpacks what skopeo copies back to the source's files,
/// a second push uploads nothing, and an `oci:` image is copied with its digest kept.
#[test]
fn convert_pushes_to_a_registry_that_skopeo_and_umoci_read() {
    let t = tmp();
    let root = busybox_root(t.path(), "pushed");
    let reg = crate::oci_common::start_registry(&t.path().join("registry"));
    let dst = format!("docker://{}/test/pushed:v1", reg.addr);
    let r = dc_cache(t.path(), &["convert", "--tls-verify=false", "--entrypoint", "/bin/sh", &s(&root), &dst]);
    let r = r.expect_ok();
    let err = r.stderr.clone();
    assert!(err.contains("uploaded 2 blobs"), "{err}");
    let ours = err.split("manifest ").nth(1).unwrap().split(',').next().unwrap().to_string();
    let sk: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", "--tls-verify=false", &dst])).unwrap();
    assert_eq!(sk["Digest"], ours.as_str(), "manifest digest");
    assert_eq!(sk["Layers"].as_array().unwrap().len(), 1);
    let cfg: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--config", "--tls-verify=false", &dst])).unwrap();
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/bin/sh"]));
    let back = t.path().join("back");
    run("skopeo", &["copy", "--quiet", "--src-tls-verify=false", &dst, &format!("oci:{}:x", s(&back))]);
    let rootfs = umoci_unpack(&format!("{}:x", s(&back)), &t.path().join("bundle"));
    crate::oci_common::assert_same_min(
        &without_times(dir_manifest(&rootfs)),
        &without_times(dir_manifest(&root)),
        "dir -> docker:// -> skopeo -> umoci",
    );

    // Again: every blob is there (HEAD answers 200), so nothing is uploaded.
    let r = dc_cache(t.path(), &["convert", "--tls-verify=false", "--entrypoint", "/bin/sh", &s(&root), &dst]);
    let err = r.expect_ok().stderr;
    assert!(err.contains("uploaded 0 blobs (0 bytes), 2 already there"), "{err}");

    // An oci: image (made by umoci) copied as stored: same manifest digest.
    let img = t.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", s(&img));
    let want = run("skopeo", &["inspect", "--format", "{{.Digest}}", &src]);
    let dst2 = format!("docker://{}/test/copied:t", reg.addr);
    dc_cache(t.path(), &["convert", "--tls-verify=false", &src, &dst2]).expect_ok();
    let got = run("skopeo", &["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &dst2]);
    assert_eq!(got.trim(), want.trim());
    drop(reg);
}

/// A registry with htpasswd Basic auth takes the push with --creds and refuses it,
/// saying why, without.
#[test]
fn push_with_basic_auth_needs_creds() {
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f"), "x\n").unwrap();
    // A bcrypt hash from Python's crypt (apache2-utils' htpasswd is not installed).
    let hash = run(
        "/usr/bin/python3",
        &["-W", "ignore", "-c", "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))"],
    );
    assert!(hash.starts_with("$2"), "{hash}");
    let htpasswd = t.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("tester:{}\n", hash.trim())).unwrap();
    let reg = crate::oci_common::start_registry_with(&t.path().join("registry"), Some(&htpasswd));
    let dst = format!("docker://{}/test/auth:v1", reg.addr);
    dc_cache(t.path(), &["convert", "--tls-verify=false", &s(&root), &dst]).expect_code(1).expect_stderr_all(&[
        "needs credentials",
        "--creds",
        &format!("{}/test/auth", reg.addr),
    ]);
    dc_cache(t.path(), &["convert", "--tls-verify=false", "--creds", "tester:wrong", &s(&root), &dst])
        .expect_code(1)
        .expect_stderr_all(&["refused: 401", "not accepted"]);
    dc_cache(t.path(), &["convert", "--tls-verify=false", "--creds", "tester:s3cret", &s(&root), &dst]).expect_ok();
    let out =
        run("skopeo", &["inspect", "--tls-verify=false", "--creds", "tester:s3cret", "--format", "{{.Digest}}", &dst]);
    assert!(out.starts_with("sha256:"), "{out}");
    drop(reg);
}

#[test]
fn a_layer_listed_1000_times_is_read_once_in_bounded_memory() {
    // An image umoci made from 2000 files, its manifest rewritten to list its one layer
    // 1000 times (digests recomputed). Each listing was scanned and applied into new
    // nodes: gigabytes for a small layout. Now the blob is read once and each listing
    // rebuilds the same nodes.
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..2000 {
        write_file(&root.join(format!("d/file-{i:04}")), format!("{i}\n").as_bytes());
    }
    let once = t.path().join("once");
    run("umoci", &["init", "--layout", &s(&once)]);
    run("umoci", &["new", "--image", &format!("{}:t", s(&once))]);
    run("umoci", &["insert", "--image", &format!("{}:t", s(&once)), &s(&root), "/"]);
    let many = t.path().join("many");
    run("cp", &["-a", &s(&once), &s(&many)]);
    crate::oci_common::relist_layers(&many, "t", &[0; 1000]);
    let sk: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", &format!("oci:{}:t", s(&many))])).unwrap();
    assert_eq!(sk["Layers"].as_array().unwrap().len(), 1000, "skopeo reads the rewritten image");

    let want = dc_ok(&["ls", "-l", "-R", &format!("oci:{}:t", s(&once))]).stdout_str();
    let r = dc_bounded(&["ls", "-l", "-R", &format!("oci:{}:t", s(&many))], 120, 4 * GIB).expect_rss_below(150 * MIB);
    let got = r.run.expect_ok().stdout_str();
    assert_eq!(got.lines().count(), 2001, "{got}");
    assert!(got == want, "the image listed 1000 times lists differently from once");
}

/// A blob of the download cache damaged on disk (same size, other bytes) between two
/// pulls from Debian's docker-registry on loopback: the second pull checks it, says so
/// on stderr, deletes it and downloads it again, and lists the image; the cache then
/// holds the right bytes.
#[test]
fn a_damaged_cached_blob_is_fetched_again() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let reg = crate::oci_common::start_registry(&t.path().join("registry"));
    let src = format!("docker://{}/test/img:t", reg.addr);
    run("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &format!("oci:{}:t", s(&img)), &src]);
    let first = dc_cache(t.path(), &["ls", "-R", "--tls-verify=false", &src]).expect_ok();
    let blobs = t.path().join("cache/diskcast/blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let good = std::fs::read(&biggest).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&biggest, &bad).unwrap();
    let hex = biggest.file_name().unwrap().to_string_lossy().into_owned();

    let second = dc_cache(t.path(), &["ls", "-R", "--tls-verify=false", &src]).expect_ok().expect_stderr_all(&[
        "warning",
        &hex,
        "digest mismatch",
        "downloaded again",
    ]);
    assert_eq!(second.stdout_str(), first.stdout_str());
    assert_eq!(std::fs::read(&biggest).unwrap(), good);
    // A third pull finds the cache whole: no warning.
    let third = dc_cache(t.path(), &["ls", "-R", "--tls-verify=false", &src]).expect_ok();
    assert!(!third.stderr.contains("warning"), "{}", third.stderr);
    drop(reg);
}

/// A root filesystem for the layer tests: files from empty to 3 MiB (one large enough to
/// be written bypassing the page cache, one mostly zeros), a hard link, a setuid-free
/// mix of modes, nested directories.
fn layer_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("gone/sub")).unwrap();
    write_file(&root.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n");
    write_file(&root.join("etc/conf.d/replaced"), b"lower\n");
    write_file(&root.join("etc/conf.d/removed"), b"whited out above\n");
    write_file(&root.join("usr/lib/big.bin"), &pseudo_random(3 << 20, 16));
    let mut sparse = vec![0u8; 2 << 20];
    sparse[1 << 20..(1 << 20) + 4096].copy_from_slice(&pseudo_random(4096, 17));
    write_file(&root.join("usr/lib/mostly-zeros"), &sparse);
    write_file(&root.join("usr/lib/deep/er/small"), &pseudo_random(70_000, 18));
    write_file(&root.join("gone/sub/file"), b"under a whited-out directory\n");
    write_file(&root.join("empty"), b"");
    std::fs::hard_link(root.join("etc/passwd"), root.join("etc/passwd-link")).unwrap();
    std::fs::set_permissions(root.join("usr/lib/deep/er/small"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("etc/conf.d"), std::fs::Permissions::from_mode(0o750)).unwrap();
    root
}

/// `umoci new` + `umoci insert ROOT /` into a new layout: a one-layer image `DIR:one`.
fn one_layer_image(dir: &Path, root: &Path) -> PathBuf {
    let layout = dir.join("layout");
    run("umoci", &["init", "--layout", &s(&layout)]);
    run("umoci", &["new", "--image", &format!("{}:one", s(&layout))]);
    run("umoci", &["insert", "--image", &format!("{}:one", s(&layout)), &s(root), "/"]);
    layout
}

/// Extracts `image` (`DIR:TAG`) with diskcast and with `umoci unpack --rootless` and
/// asserts the same tree; nothing of diskcast's staging is left in DIR.
fn assert_extracts_as_umoci(image: &str, t: &Path, name: &str) {
    let rootfs = umoci_unpack(image, &t.join(format!("bundle-{name}")));
    let out = t.join(format!("out-{name}"));
    dc_ok(&["extract", &format!("oci:{image}"), &s(&out)]);
    let theirs = dir_manifest(&rootfs);
    crate::oci_common::assert_same_min(&dir_manifest(&out), &theirs, name);
    // -j 4: a layer's blob reading and its inflating on threads of their own.
    let out4 = t.join(format!("out4-{name}"));
    dc_ok(&["extract", "-j", "4", &format!("oci:{image}"), &s(&out4)]);
    crate::oci_common::assert_same_min(&dir_manifest(&out4), &theirs, &format!("{name}, -j 4"));
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".diskcast"))
        .collect();
    assert!(left.is_empty(), "{name}: staging left in DIR: {left:?}");
}

/// Layers extracted as the staged files of one decoding pass give the tree `umoci
/// unpack` gives: a one-layer image, and the same image with upper layers (made by
/// umoci) that white out a file and a directory, replace a file, make a directory
/// opaque and add a file under it.
#[test]
fn one_and_several_layer_images_extract_as_umoci_unpacks_them() {
    let t = tmp();
    let root = layer_root(t.path());
    let layout = one_layer_image(t.path(), &root);
    assert_extracts_as_umoci(&format!("{}:one", s(&layout)), t.path(), "one layer");

    let many = format!("{}:many", s(&layout));
    run("umoci", &["new", "--image", &many]);
    run("umoci", &["insert", "--image", &many, &s(&root), "/"]);
    run("umoci", &["insert", "--image", &many, "--whiteout", "/etc/conf.d/removed"]);
    run("umoci", &["insert", "--image", &many, "--whiteout", "/gone"]);
    let upper = t.path().join("upper");
    std::fs::create_dir_all(upper.join("conf.d")).unwrap();
    write_file(&upper.join("conf.d/replaced"), b"upper layer wins\n");
    run("umoci", &["insert", "--image", &many, &s(&upper.join("conf.d")), "/etc/conf.d"]);
    let opaque = t.path().join("opaque");
    std::fs::create_dir_all(&opaque).unwrap();
    write_file(&opaque.join("only-this"), &pseudo_random(2 << 20, 19));
    run("umoci", &["insert", "--image", &many, "--opaque", &s(&opaque), "/usr/lib"]);
    assert_extracts_as_umoci(&many, t.path(), "five layers");
    let out = t.path().join("out-five layers");
    assert!(!out.join("gone").exists() && !out.join("etc/conf.d/removed").exists());
    assert_eq!(std::fs::read(out.join("etc/conf.d/replaced")).unwrap(), b"upper layer wins\n");
    assert!(!out.join("usr/lib/big.bin").exists(), "the opaque directory kept a lower file");
}

/// Bytes diskcast read (`rchar` of /proc/PID/io, sampled until it exits).
fn bytes_read(args: &[&str]) -> u64 {
    let mut child = std::process::Command::new(diskcast_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let io = format!("/proc/{}/io", child.id());
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(text) = std::fs::read_to_string(&io)
            && let Some(n) = text.lines().find_map(|l| l.strip_prefix("rchar: "))
        {
            most = most.max(n.trim().parse().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(child.wait().unwrap().success(), "diskcast {args:?} failed");
    most
}

/// Extraction reads each layer blob once: its files are staged while the layer is
/// decoded and checked (it used to decode the whole layer again to write them).
#[test]
fn extract_reads_a_layer_once() {
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..4 {
        write_file(&root.join(format!("f{i}")), &pseudo_random(16 << 20, 30 + i));
    }
    let layout = one_layer_image(t.path(), &root);
    let blob = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| std::fs::metadata(e.unwrap().path()).unwrap().len())
        .max()
        .unwrap();
    let read = bytes_read(&["extract", &format!("oci:{}:one", s(&layout)), &s(&t.path().join("out"))]);
    assert!(read < blob + blob / 4, "read {read} bytes for a {blob}-byte layer: decoded more than once");
    assert_same_bytes(&root.join("f3"), &t.path().join("out/f3"));
}

/// Rewrites the one-layer image `layout:one` so its layer blob is `bytes`, the manifest
/// naming the new digest (recomputed, so only the content is wrong).
fn replace_layer(layout: &Path, bytes: &[u8]) {
    use serde_json::Value;
    use sha2::Digest as _;
    let blobs = layout.join("blobs/sha256");
    let hex = |b: &[u8]| sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = &mut index["manifests"][0];
    let mpath = blobs.join(desc["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let h = hex(bytes);
    std::fs::write(blobs.join(&h), bytes).unwrap();
    manifest["layers"][0]["digest"] = Value::from(format!("sha256:{h}"));
    manifest["layers"][0]["size"] = Value::from(bytes.len());
    let mb = serde_json::to_vec(&manifest).unwrap();
    let mh = hex(&mb);
    std::fs::write(blobs.join(&mh), &mb).unwrap();
    desc["digest"] = Value::from(format!("sha256:{mh}"));
    desc["size"] = Value::from(mb.len());
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A layer whose gzip stream was damaged (a byte flipped in the middle, its digest
/// fixed up, so only the CRC-32, the diff_id or the deflate data can tell) or whose
/// blob does not match its digest fails the extraction after its files were staged,
/// and leaves nothing: no DIR when diskcast made it, an empty DIR when it was given one.
#[test]
fn a_damaged_layer_leaves_no_partial_output() {
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..3 {
        write_file(&root.join(format!("f{i}")), &pseudo_random(4 << 20, 50 + i));
    }
    let layout = one_layer_image(t.path(), &root);
    let blob = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let good = std::fs::read(&blob).unwrap();
    let src = format!("oci:{}:one", s(&layout));

    // Digest mismatch: the blob changed under its name.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&blob, &bad).unwrap();
    let out = t.path().join("out");
    dc(&["extract", &src, &s(&out)]).expect_code(1).expect_stderr_all(&["digest mismatch", "layer sha256:"]);
    assert!(!out.exists(), "a failed extraction left {}", out.display());
    std::fs::write(&blob, &good).unwrap();

    // The same damage with the digest fixed up: the gzip stream itself is wrong.
    replace_layer(&layout, &bad);
    // The flipped byte is inside a stored block: only the gzip trailer's CRC-32 tells,
    // once every file was staged.
    let crc = ["layer sha256:", "decompression failed", "checksum"];
    for j in ["1", "2", "4"] {
        dc(&["extract", "-j", j, &src, &s(&out)]).expect_code(1).expect_stderr_all(&crc);
        assert!(!out.exists(), "a failed extraction (-j {j}) left {}", out.display());
    }
    std::fs::create_dir(&out).unwrap();
    dc(&["extract", &src, &s(&out)]).expect_code(1);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "a failed extraction left entries in DIR");
}

/// The bytes a tool writes on stdout (failing the test if it is missing or fails).
fn stdout_of(cmd: &mut std::process::Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup.sh installs it)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `gzip -dc` of `blob`: the reference decoding of a layer.
fn gzip_dc(dir: &Path, blob: &[u8]) -> Vec<u8> {
    let f = dir.join("blob.gz");
    std::fs::write(&f, blob).unwrap();
    stdout_of(std::process::Command::new("gzip").args(["-dc", &s(&f)]))
}

/// Go's compress/gzip (what skopeo, umoci, containerd and Docker write layers with) at
/// levels 0-9 and HuffmanOnly (-2): prints nothing, writes `TAR.LEVEL.gz` beside `TAR`.
const GO_GZIP: &str = r#"package main

import (
	"compress/gzip"
	"os"
	"strconv"
)

func main() {
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	for _, a := range os.Args[2:] {
		level, _ := strconv.Atoi(a)
		f, err := os.Create(os.Args[1] + "." + a + ".gz")
		if err != nil {
			panic(err)
		}
		w, err := gzip.NewWriterLevel(f, level)
		if err != nil {
			panic(err)
		}
		w.Write(data)
		w.Close()
		f.Close()
	}
}
"#;

/// Every gzip stream a layer may come as decodes to the bytes `gzip -dc` gives: gzip,
/// pigz, Go's compress/gzip and Python's gzip at every level (Python's 0 and pigz's -0
/// are stored blocks, Go's -2 Huffman-only), a multi-member stream (two gzip runs
/// concatenated, split inside a tar member) and an empty stream. All are layers of one
/// image whose diff_ids are the SHA-256 of `gzip -dc`'s output: `inspect` checks each
/// diff_id and reports each layer's size, and `extract` (one thread and the pipeline)
/// gives the tree `tar -x` gives. A stream with a byte flipped in its deflate data, and
/// one cut short, which `gzip -t` refuses, are refused naming the layer.
#[test]
fn gzip_layers_of_every_writer_decode_as_gzip_dc() {
    let t = tmp();
    // Text (dynamic Huffman blocks with long matches), random bytes (stored blocks) and
    // zeros (the longest runs).
    let root = t.path().join("root");
    std::fs::create_dir_all(root.join("text")).unwrap();
    for e in std::fs::read_dir("/usr/share/common-licenses").unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, root.join("text").join(p.file_name().unwrap())).unwrap();
        }
    }
    write_file(&root.join("random"), &pseudo_random(1 << 20, 7));
    write_file(&root.join("zeros"), &vec![0u8; 1 << 20]);
    let tar = t.path().join("base.tar");
    run("tar", &["-cf", &s(&tar), "-C", &s(&root), "--sort=name", "."]);
    let tar_bytes = std::fs::read(&tar).unwrap();

    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for level in 1..=9 {
        let l = format!("-{level}");
        blobs.push((format!("gzip {l}"), stdout_of(std::process::Command::new("gzip").args([&l, "-c", &s(&tar)]))));
    }
    for level in 0..=9 {
        let l = format!("-{level}");
        blobs.push((format!("pigz {l}"), stdout_of(std::process::Command::new("pigz").args([&l, "-c", &s(&tar)]))));
    }
    for level in 0..=9 {
        let py = "import gzip, sys; sys.stdout.buffer.write(gzip.compress(open(sys.argv[1], 'rb').read(), int(sys.argv[2])))";
        blobs.push((
            format!("python gzip {level}"),
            stdout_of(std::process::Command::new("python3").args(["-c", py, &s(&tar), &level.to_string()])),
        ));
    }
    let go = t.path().join("gogzip");
    std::fs::create_dir_all(&go).unwrap();
    write_file(&go.join("main.go"), GO_GZIP.as_bytes());
    let levels: Vec<String> = std::iter::once(-2).chain(0..=9).map(|l| l.to_string()).collect();
    let mut args = vec!["run".to_string(), s(&go.join("main.go")), s(&tar)];
    args.extend(levels.iter().cloned());
    stdout_of(
        std::process::Command::new("go")
            .args(&args)
            .env("GOPROXY", "off")
            .env("GOCACHE", go.join("cache"))
            .env("GOPATH", go.join("path")),
    );
    for l in &levels {
        blobs.push((format!("go compress/gzip {l}"), std::fs::read(format!("{}.{l}.gz", s(&tar))).unwrap()));
    }
    let (front, back) = tar_bytes.split_at(tar_bytes.len() / 3);
    let (f1, f2) = (t.path().join("front"), t.path().join("back"));
    std::fs::write(&f1, front).unwrap();
    std::fs::write(&f2, back).unwrap();
    let mut two = stdout_of(std::process::Command::new("gzip").args(["-c", &s(&f1)]));
    two.extend(stdout_of(std::process::Command::new("gzip").args(["-9", "-c", &s(&f2)])));
    blobs.push(("two gzip members".into(), two));
    let empty = t.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    blobs.push(("empty".into(), stdout_of(std::process::Command::new("gzip").args(["-c", &s(&empty)]))));

    let decoded: Vec<Vec<u8>> = blobs.iter().map(|(_, b)| gzip_dc(t.path(), b)).collect();
    for ((what, _), d) in blobs.iter().zip(&decoded) {
        let want: &[u8] = if what == "empty" { b"" } else { &tar_bytes };
        assert!(d.as_slice() == want, "{what}: gzip -dc does not give the tar back");
    }
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let layout = t.path().join("layout");
    let layers: Vec<(Vec<u8>, &str)> = blobs.iter().map(|(_, b)| (b.clone(), gz)).collect();
    crate::oci_common::write_layout(&layout, &layers, &decoded);
    let src = format!("oci:{}:t", s(&layout));
    let j = dc_ok(&["inspect", "--output", "json", &src]).json();
    let reported = j["layers"].as_array().unwrap();
    assert_eq!(reported.len(), blobs.len());
    for ((what, _), (l, d)) in blobs.iter().zip(reported.iter().zip(&decoded)) {
        assert_eq!(l["uncompressed_size"].as_u64(), Some(d.len() as u64), "{what}");
    }
    let theirs = t.path().join("tar-x");
    std::fs::create_dir_all(&theirs).unwrap();
    run("tar", &["-xf", &s(&tar), "-C", &s(&theirs)]);
    let theirs = dir_manifest(&theirs);
    for j in ["1", "2", "4"] {
        let out = t.path().join(format!("out{j}"));
        dc_ok(&["extract", "-j", j, &src, &s(&out)]);
        crate::oci_common::assert_same_min(&dir_manifest(&out), &theirs, &format!("extract -j {j}"));
    }

    // Damaged streams: gzip refuses them, and so do we, naming the layer.
    let good = &blobs[5].1;
    let mut flipped = good.clone();
    // Inside the first file's deflate data (the text), past the gzip header.
    flipped[good.len() / 10] ^= 0x55;
    let cut = good[..good.len() / 2].to_vec();
    for (what, bad) in [("a flipped byte", flipped), ("cut short", cut)] {
        let f = t.path().join("bad.gz");
        std::fs::write(&f, &bad).unwrap();
        let ok = std::process::Command::new("gzip").args(["-t", &s(&f)]).output().unwrap().status.success();
        assert!(!ok, "{what}: gzip -t accepts it");
        let lay = t.path().join(format!("bad-{}", what.replace(' ', "-")));
        crate::oci_common::write_layout(&lay, &[(bad, gz)], std::slice::from_ref(&tar_bytes));
        let bad_src = format!("oci:{}:t", s(&lay));
        dc(&["inspect", "--output", "json", &bad_src]).expect_code(1).expect_stderr_all(&["layer sha256:"]);
        dc(&["extract", &bad_src, &s(&t.path().join("never"))]).expect_code(1).expect_stderr_all(&["layer sha256:"]);
        assert!(!t.path().join("never").exists(), "{what}");
    }
}
