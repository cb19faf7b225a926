//! Container images through the tree commands: `ls`, `cat` and `extract` of images built
//! by umoci and copied by skopeo, judged against `umoci unpack --rootless`.

use crate::oci_common::{dir_manifest, make_image, run, umoci_unpack};
use crate::support::*;

#[test]
fn extract_ls_cat_of_an_oci_image_match_umoci_unpack() {
    let t = tmp();
    let img = t.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", s(&img));
    let rootfs = umoci_unpack(&format!("{}:t", s(&img)), &t.path().join("bundle"));
    let mut theirs = dir_manifest(&rootfs);

    let out = t.path().join("out");
    dc_ok(&["extract", &src, &s(&out)]);
    let mut ours = dir_manifest(&out);
    // umoci --rootless makes device nodes empty files; we make the device (as root) or
    // report it (as a user): compare it on its own.
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
    dc_ok(&["extract", &format!("docker-archive:{}", s(&archive)), &s(&out2)]);
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
