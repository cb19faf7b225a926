//! `--verify-key`: sigstore signatures attached to images in Debian's docker-registry on
//! loopback. Images are made by umoci and pushed by skopeo; signatures are made by
//! openssl in cosign's layout (fixtures/cosign-sign.py) and pushed by skopeo. Debian's
//! skopeo 1.9.3 can neither sign (`--sign-by-sigstore-private-key`) nor check a
//! `sigstoreSigned` policy ("Debian-local change: sigstore disabled"), so the reference
//! verdict is built from independent tools: skopeo fetches the manifest, the signature
//! manifest and the payload (checking their digests), `openssl dgst -verify` (or
//! `pkeyutl -verify` for Ed25519) checks the signature, and the payload must name the
//! digest skopeo saw and the reference by skopeo's default identity rule
//! (`matchRepoDigestOrExact`). Where skopeo can check the policy, its verdict is compared
//! too. diskcast must agree with the reference on every case, and each case is also
//! checked against the verdict it was built to have, so an oracle that accepts or
//! refuses everything fails the test.

use crate::oci::dc_cache;
use crate::oci_common::{fixture, run, start_registry};
use crate::support::*;
use std::path::{Path, PathBuf};

/// An OCI layout at `dir` holding one image (tag `t`) with `/hello.txt` = `text`.
fn image_with(dir: &Path, text: &str) -> String {
    let root = dir.with_extension("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), text).unwrap();
    let layout = s(dir);
    run("umoci", &["init", "--layout", &layout]);
    run("umoci", &["new", "--image", &format!("{layout}:t")]);
    run(
        "umoci",
        &["insert", "--rootless", "--image", &format!("{layout}:t"), &s(&root.join("hello.txt")), "/hello.txt"],
    );
    format!("oci:{layout}:t")
}

/// An openssl key pair (`KIND`: ec, ed25519, rsa): the private PEM and the public one.
fn key_pair(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let (key, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub")));
    let mut args = vec!["genpkey", "-out", key.to_str().unwrap()];
    match kind {
        "ec" => args.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "ed25519" => args.extend(["-algorithm", "ed25519"]),
        _ => args.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
    }
    run("openssl", &args);
    run("openssl", &["pkey", "-in", &s(&key), "-pubout", "-out", &s(&public)]);
    (key, public)
}

/// The manifest digest skopeo sees for `docker://REF` (for an index, the index's own).
fn skopeo_digest(reference: &str) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(skopeo_raw(reference)))
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .expect("skopeo is required (scripts/setup.sh)");
    assert!(raw.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&raw.stderr));
    raw.stdout
}

/// The digest of the manifest a pull of `docker://REF` uses: the manifest itself, or for
/// an index the linux/amd64 entry skopeo lists (the platform of this machine and CI).
fn used_digest(reference: &str) -> String {
    let doc: serde_json::Value = serde_json::from_slice(&skopeo_raw(reference)).unwrap();
    match doc["manifests"].as_array() {
        Some(list) => {
            let amd64 = list.iter().find(|m| m["platform"]["architecture"] == "amd64").unwrap();
            amd64["digest"].as_str().unwrap().to_string()
        }
        None => skopeo_digest(reference),
    }
}

/// Signs `digest` as `identity` with `key` (fixtures/cosign-sign.py), attached in `repo`.
fn sign(key: &Path, repo: &str, digest: &str, identity: &str, extra: &[&str]) {
    let script = fixture("cosign-sign.py");
    let mut args = vec![script.to_str().unwrap(), key.to_str().unwrap(), repo, digest, identity];
    args.extend(extra);
    run("/usr/bin/python3", &args);
}

/// The repository part of a docker reference (`host:port/repo:tag@digest` ->
/// `host:port/repo`).
fn repository_of(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap();
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// The reference verdict for pulling `docker://{repo}{suffix}` (`:TAG` or `@DIGEST`)
/// with `keys`, from skopeo (what the registry holds, digests checked) and openssl (the
/// signatures).
fn reference_verdict(t: &Path, repo: &str, suffix: &str, keys: &[&Path]) -> bool {
    let digest = used_digest(&format!("{repo}{suffix}"));
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let layout = t.join(format!("ref-{}", &digest[7..19]));
    let _ = std::fs::remove_dir_all(&layout);
    let copied = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{repo}:{sig_tag}"))
        .arg(format!("oci:{}:sig", s(&layout)))
        .output()
        .unwrap();
    if !copied.status.success() {
        let err = String::from_utf8_lossy(&copied.stderr);
        assert!(err.contains("manifest unknown"), "skopeo copy of the signature failed otherwise: {err}");
        return false;
    }
    let blob = |d: &str| layout.join("blobs/sha256").join(&d[7..]);
    let json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&read(&p)).unwrap_or_default() };
    let index = json(layout.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let identity_ok = |id: &str| match suffix.strip_prefix(':') {
        Some(tag) => id == format!("{repo}:{tag}"),
        None => repository_of(id) == repo,
    };
    let layers = manifest["layers"].as_array().unwrap();
    layers.iter().filter(|l| l["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json").any(|l| {
        let payload = blob(l["digest"].as_str().unwrap());
        let b64 = t.join("signature.b64");
        std::fs::write(&b64, l["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap()).unwrap();
        let sig = t.join("signature");
        run("openssl", &["base64", "-d", "-A", "-in", &s(&b64), "-out", &s(&sig)]);
        let (payload_s, sig_s) = (s(&payload), s(&sig));
        let signed_by_a_key = keys.iter().any(|k| {
            let k = s(k);
            let ed = run("openssl", &["pkey", "-pubin", "-in", &k, "-noout", "-text"]).starts_with("ED25519");
            let args: Vec<&str> = if ed {
                vec!["pkeyutl", "-verify", "-pubin", "-inkey", &k, "-rawin", "-in", &payload_s, "-sigfile", &sig_s]
            } else {
                vec!["dgst", "-sha256", "-verify", &k, "-signature", &sig_s, &payload_s]
            };
            std::process::Command::new("openssl").args(&args).output().unwrap().status.success()
        });
        let p = json(payload);
        signed_by_a_key
            && p["critical"]["type"] == "cosign container image signature"
            && p["critical"]["image"]["docker-manifest-digest"] == digest.as_str()
            && p["critical"]["identity"]["docker-reference"].as_str().is_some_and(identity_ok)
    })
}

/// skopeo's own verdict with a `sigstoreSigned` policy for `keys[0]`, when this skopeo
/// checks sigstore signatures at all (`None`: Debian's build, which refuses every image).
fn skopeo_verdict(t: &Path, reference: &str, key: &Path) -> Option<bool> {
    let registry = reference.split('/').next().unwrap();
    let policy = t.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {registry: [
            {"type": "sigstoreSigned", "keyPath": s(key), "signedIdentity": {"type": "matchRepoDigestOrExact"}}]}}})
        .to_string(),
    )
    .unwrap();
    let regd = t.join("registries.d");
    std::fs::create_dir_all(&regd).unwrap();
    std::fs::write(regd.join("default.yaml"), "default-docker:\n  use-sigstore-attachments: true\n").unwrap();
    let out = t.join("skopeo-out");
    let _ = std::fs::remove_dir_all(&out);
    let r = std::process::Command::new("skopeo")
        .args(["--policy", &s(&policy), "--registries.d", &s(&regd), "copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:x", s(&out)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    if err.contains("sigstore disabled") {
        return None;
    }
    Some(r.status.success())
}

/// Every case diskcast must decide as the reference does: signed with the right key,
/// with a wrong one, unsigned, a tampered signature, a tampered payload, a signature of
/// another digest attached to an image, the same image under a tag it was not signed
/// for (and by digest, which the identity rule accepts), several keys and several
/// signatures, Ed25519 and RSA keys, and multi-platform indexes (the instance pulled
/// must be signed). Refusals exit 4 before anything is written
/// (`extract`, `vm`); accepted images extract as usual.
#[test]
fn verify_key_accepts_and_refuses_what_the_reference_does() {
    let t = tmp();
    let dir = t.path();
    let reg = start_registry(&dir.join("registry"));
    let repo = format!("{}/app", reg.addr);
    let (k1, p1) = key_pair(dir, "k1", "ec");
    let (k2, p2) = key_pair(dir, "k2", "ec");
    let (ked, ped) = key_pair(dir, "ked", "ed25519");
    let (krsa, prsa) = key_pair(dir, "krsa", "rsa");
    let mut digests = std::collections::BTreeMap::new();
    for (tag, text) in [
        ("signed", "signed\n"),
        ("unsigned", "unsigned\n"),
        ("badsig", "bad signature\n"),
        ("badpayload", "bad payload\n"),
        ("other", "signature of another image\n"),
        ("multi", "two signatures\n"),
        ("ed", "ed25519\n"),
        ("rsa", "rsa\n"),
    ] {
        let src = image_with(&dir.join(format!("img-{tag}")), text);
        run("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &src, &format!("docker://{repo}:{tag}")]);
        digests.insert(tag, skopeo_digest(&format!("{repo}:{tag}")));
    }
    // The same image under a second tag (same digest, so the same signature tag).
    let (from, to) = (format!("docker://{repo}:signed"), format!("docker://{repo}:retagged"));
    run("skopeo", &["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", &from, &to]);
    // Two multi-platform indexes (fixtures/make-index.py): one with only its own digest
    // signed (what `cosign sign` does without --recursive), one with its linux/amd64
    // instance signed too. A pull uses the instance, so that is what must be signed, as
    // skopeo's policy checks it when it copies one image of a list.
    for (name, text) in [("index", "index\n"), ("index2", "index with a signed instance\n")] {
        let layout = dir.join(format!("img-{name}"));
        image_with(&layout, text);
        let layout = s(&layout);
        run("/usr/bin/python3", &[fixture("make-index.py").to_str().unwrap(), &layout, "t", "multi"]);
        let to = format!("docker://{repo}:{name}");
        run("skopeo", &["copy", "--quiet", "--all", "--dest-tls-verify=false", &format!("oci:{layout}:multi"), &to]);
        digests.insert(name, used_digest(&format!("{repo}:{name}")));
        let top = skopeo_digest(&format!("{repo}:{name}"));
        sign(&k1, &repo, &top, &format!("{repo}:{name}"), &[]);
    }
    let d = |tag: &str| digests[tag].clone();
    sign(&k1, &repo, &d("index2"), &format!("{repo}:index2"), &[]);
    sign(&k1, &repo, &d("signed"), &format!("{repo}:signed"), &[]);
    sign(&k1, &repo, &d("badsig"), &format!("{repo}:badsig"), &["--tamper-signature"]);
    sign(&k1, &repo, &d("badpayload"), &format!("{repo}:badpayload"), &["--tamper-payload"]);
    sign(&k1, &repo, &d("signed"), &format!("{repo}:other"), &["--attach-to", &d("other")]);
    sign(&k2, &repo, &d("multi"), &format!("{repo}:multi"), &[]);
    sign(&k1, &repo, &d("multi"), &format!("{repo}:multi"), &["--append"]);
    sign(&ked, &repo, &d("ed"), &format!("{repo}:ed"), &[]);
    sign(&krsa, &repo, &d("rsa"), &format!("{repo}:rsa"), &[]);

    let by_digest = format!("@{}", d("signed"));
    // (name, reference suffix, keys, the image's tag, verdict built for, why refused)
    type Case<'a> = (&'a str, String, Vec<&'a Path>, &'a str, bool, &'a str);
    let none = "made by none of the keys";
    let cases: Vec<Case> = vec![
        ("signed, right key", ":signed".into(), vec![&p1], "signed", true, ""),
        ("signed, wrong key", ":signed".into(), vec![&p2], "signed", false, none),
        ("signed, two keys given", ":signed".into(), vec![&p2, &p1], "signed", true, ""),
        ("unsigned", ":unsigned".into(), vec![&p1], "unsigned", false, "no signature"),
        ("tampered signature", ":badsig".into(), vec![&p1], "badsig", false, none),
        ("tampered payload", ":badpayload".into(), vec![&p1], "badpayload", false, none),
        ("signature of another digest", ":other".into(), vec![&p1], "other", false, "it signs manifest"),
        ("re-tagged", ":retagged".into(), vec![&p1], "signed", false, "a tag must match exactly"),
        ("by digest", by_digest, vec![&p1], "signed", true, ""),
        ("two signatures, second right", ":multi".into(), vec![&p1], "multi", true, ""),
        ("Ed25519", ":ed".into(), vec![&ped], "ed", true, ""),
        ("RSA", ":rsa".into(), vec![&prsa], "rsa", true, ""),
        ("RSA key, Ed25519 signature", ":ed".into(), vec![&prsa], "ed", false, none),
        ("index signed at the top only", ":index".into(), vec![&p1], "index", false, "no signature"),
        ("index and its instance signed", ":index2".into(), vec![&p1], "index2", true, ""),
    ];
    let mut skopeo_checked = 0;
    for (name, suffix, keys, tag, expected, why) in &cases {
        let reference = format!("{repo}{suffix}");
        let src = format!("docker://{reference}");
        let theirs = reference_verdict(dir, &repo, suffix, keys);
        assert_eq!(theirs, *expected, "{name}: the reference verdict is not the one the case was built for");
        if let Some(sk) = skopeo_verdict(dir, &reference, keys[0]) {
            skopeo_checked += 1;
            assert_eq!(sk, theirs, "{name}: skopeo's policy disagrees with the reference");
            // (Debian's skopeo reaches its verdict without the disabled code only when
            // there is no signature to check.)
        }
        let mut args = vec!["inspect", "--output", "json", "--tls-verify=false"];
        let key_args: Vec<String> = keys.iter().map(|k| s(k)).collect();
        for k in &key_args {
            args.extend(["--verify-key", k.as_str()]);
        }
        args.push(&src);
        let r = dc_cache(dir, &args);
        if *expected {
            let r = r.expect_ok();
            let sigs = r.json()["signatures"].clone();
            let ok: Vec<&serde_json::Value> =
                sigs.as_array().unwrap().iter().filter(|s| s["verified"] == true).collect();
            assert_eq!(ok.len(), 1, "{name}: {sigs}");
            assert_eq!(ok[0]["digest"], d(tag).as_str(), "{name}: {sigs}");
            assert!(key_args.contains(&ok[0]["key"].as_str().unwrap().to_string()), "{name}: {sigs}");
        } else {
            r.expect_code(4).expect_stderr_all(&[&src, &d(tag), "not trusted", why, "signature tag"]);
        }
        // Refused: nothing written by extract (a new directory) or vm (a disk file).
        let out = dir.join(format!("x-{}", name.replace([' ', ','], "_")));
        let mut extract = vec!["extract", "--tls-verify=false"];
        for k in &key_args {
            extract.extend(["--verify-key", k.as_str()]);
        }
        let out_s = s(&out);
        extract.extend([src.as_str(), out_s.as_str()]);
        let r = dc_cache(dir, &extract);
        if *expected {
            r.expect_ok();
            assert!(out.join("hello.txt").exists(), "{name}: extract wrote no hello.txt");
        } else {
            r.expect_code(4);
            assert!(!out.exists(), "{name}: a refused extract left {}", out.display());
        }
    }
    // vm: a disk only from the verified image; the refused one leaves no file.
    let kernel = dir.join("vmlinuz");
    write_file(&kernel, &pseudo_random(64 * 1024, 7));
    for (tag, key, code) in [("signed", &p1, 0), ("unsigned", &p1, 4), ("signed", &p2, 4)] {
        let disk = dir.join(format!("vm-{tag}-{code}.qcow2"));
        let (src, k) = (format!("docker://{repo}:{tag}"), s(key));
        let args = ["vm", "--tls-verify=false", "--verify-key", &k, &src, "-o", &s(&disk), "--kernel", &s(&kernel)];
        dc_cache(dir, &args).expect_code(code);
        assert_eq!(disk.exists(), code == 0, "vm {src} with {k}");
        if code == 0 {
            qemu_check_clean(&disk);
        }
    }
    // The table names the signatures checked: two for `multi`, one verified.
    let (src, k) = (format!("docker://{repo}:multi"), s(&p1));
    let table = dc_cache(dir, &["inspect", "--tls-verify=false", "--verify-key", &k, &src]).expect_ok().stdout_str();
    assert!(table.contains("Signatures:   1 of 2 verified"), "{table}");
    assert!(table.contains(&format!("verified    {repo}:multi  {}", d("multi"))), "{table}");
    eprintln!("skopeo's sigstoreSigned policy compared on {skopeo_checked} of {} cases", cases.len());
    drop(reg);
}

/// `--verify-key` with a source that has no registry to hold signatures (an `oci:`
/// layout, a directory, a disk image to `convert`) is refused with exit 4 before
/// anything is written; a file that is no public key is a usage error naming it.
#[test]
fn verify_key_refuses_sources_without_a_registry() {
    let t = tmp();
    let dir = t.path();
    let (_, public) = key_pair(dir, "k", "ec");
    let k = s(&public);
    let layout = image_with(&dir.join("img"), "local\n");
    let out = dir.join("out");
    dc(&["extract", "--verify-key", &k, &layout, &s(&out)]).expect_code(4).expect_stderr_all(&[
        "--verify-key",
        "no registry",
        "cannot be verified",
    ]);
    assert!(!out.exists());
    dc(&["ls", "--verify-key", &k, &s(&dir.join("img.root"))]).expect_code(4).expect_stderr_all(&["not a docker://"]);
    let raw = dir.join("a.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "1M"]);
    let copy = dir.join("b.qcow2");
    dc(&["convert", "--verify-key", &k, "-O", "qcow2", &s(&raw), &s(&copy)]).expect_code(4);
    assert!(!copy.exists());
    dc(&["check", "--verify-key", &k, &s(&raw)]).expect_code(4).expect_stderr_all(&["a.raw", "no registry"]);
    // A private key, or any other file, is not taken for a public key.
    dc(&["ls", "--verify-key", &s(&dir.join("k.pem")), &layout])
        .expect_code(1)
        .expect_stderr_all(&["k.pem", "not a PEM public key"]);
}
