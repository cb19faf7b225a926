//! `inspect` against skopeo and dpkg-query: manifest and layer digests, the run config
//! and history as `skopeo inspect` reads them, uncompressed sizes as gzip measures them,
//! and the installed packages as dpkg-query lists them from the same status file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_oci::{OpenOptions, inspect::inspect, open};
use serde_json::Value;

#[test]
fn inspect_agrees_with_skopeo_and_dpkg_query() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    // A layer with this machine's real dpkg database.
    let root = tmp.path().join("dpkg");
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::copy("/var/lib/dpkg/status", root.join("var/lib/dpkg/status")).unwrap();
    let image_ref = format!("{}:t", img.display());
    run("umoci", &["insert", "--image", &image_ref, root.join("var").to_str().unwrap(), "/var"]);

    let spec = format!("oci:{image_ref}");
    let image = open(&spec, &OpenOptions::default()).unwrap();
    let r = inspect(&image, 2).unwrap();

    let sk: Value = serde_json::from_str(&run("skopeo", &["inspect", &spec])).unwrap();
    assert_eq!(sk["Digest"].as_str().unwrap(), r.manifest_digest.as_str());
    let layers: Vec<&str> = sk["Layers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(layers, r.layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>());
    assert_eq!(sk["Architecture"], "amd64");
    assert_eq!(r.platform.to_string(), "linux/amd64");

    let cfg: Value = serde_json::from_str(&run("skopeo", &["inspect", "--config", &spec])).unwrap();
    let c = &cfg["config"];
    assert_eq!(serde_json::to_value(&r.config.entrypoint).unwrap(), c["Entrypoint"]);
    assert_eq!(serde_json::to_value(&r.config.cmd).unwrap(), c["Cmd"]);
    assert_eq!(serde_json::to_value(&r.config.env).unwrap(), c["Env"]);
    assert_eq!(r.config.working_dir.as_deref(), c["WorkingDir"].as_str());
    assert_eq!(r.config.user.as_deref(), c["User"].as_str());
    assert_eq!(serde_json::to_value(&r.config.labels).unwrap(), c["Labels"]);
    assert_eq!(r.author.as_deref(), cfg["author"].as_str());
    let hist = cfg["history"].as_array().unwrap();
    assert_eq!(hist.len(), r.history.len());
    for (h, ours) in hist.iter().zip(&r.history) {
        assert_eq!(h["created_by"].as_str(), ours.created_by.as_deref());
        assert_eq!(h["empty_layer"].as_bool().unwrap_or(false), ours.empty_layer);
    }
    assert_eq!(r.history.iter().filter(|h| h.layer.is_some()).count(), r.layers.len());

    // Uncompressed sizes, as gzip counts them.
    for l in &r.layers {
        let blob = img.join("blobs/sha256").join(l.digest.hex());
        let n: u64 = run("bash", &["-c", &format!("gzip -dc < '{}' | wc -c", blob.display())]).trim().parse().unwrap();
        assert_eq!(n, l.uncompressed_size, "{}", l.digest);
    }

    // Packages, as dpkg-query reads the same database.
    let listed = run(
        "dpkg-query",
        &[
            "--admindir",
            root.join("var/lib/dpkg").to_str().unwrap(),
            "-W",
            "-f",
            "${db:Status-Status} ${Package} ${Version} ${Architecture}\n",
        ],
    );
    let mut want: Vec<String> =
        listed.lines().filter_map(|l| l.strip_prefix("installed ")).map(str::to_string).collect();
    want.sort();
    let mut got: Vec<String> = r
        .inventory
        .packages
        .iter()
        .map(|p| format!("{} {} {}", p.name, p.version, p.architecture.as_deref().unwrap_or("")))
        .collect();
    got.sort();
    assert_eq!(r.inventory.package_manager.as_deref(), Some("dpkg"));
    assert!(got.len() > 20, "{got:?}");
    assert_eq!(got, want);
}
