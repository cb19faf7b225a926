//! Pulls from a real registry (Debian's docker-registry, the CNCF distribution server)
//! started on 127.0.0.1 by the test, after pushing with skopeo: the flattened pull must
//! match umoci's unpack of the pushed image; a second pull downloads nothing; a partial
//! download resumes; a multi-platform index is resolved by --platform.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::progress::Progress;
use diskcast_oci::{OpenOptions, Platform, flatten, open};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Count(AtomicU64);
impl Progress for Count {
    fn start(&self, _total: u64) {}
    fn advance(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

fn options(cache: &Path, count: &Arc<Count>) -> OpenOptions {
    let mut o = OpenOptions { progress: count.clone(), ..OpenOptions::default() };
    o.registry.tls_verify = false;
    o.registry.cache_dir = Some(cache.to_path_buf());
    o
}

fn cached_blob(cache: &Path, digest: &str) -> PathBuf {
    cache.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

#[test]
fn pull_from_a_local_registry_matches_umoci_and_caches() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    run("/usr/bin/python3", &[fixture("make-index.py").to_str().unwrap(), img.to_str().unwrap(), "t", "multi"]);
    let rootfs = umoci_unpack(&format!("{}:t", img.display()), &tmp.path().join("bundle"));
    let theirs = dir_manifest(&rootfs);

    let reg = start_registry(&tmp.path().join("registry"));
    let src = format!("docker://{}/test/img:t", reg.addr);
    run("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &format!("oci:{}:t", img.display()), &src]);
    let cache = tmp.path().join("cache");

    // First pull downloads every blob; the result is umoci's rootfs.
    let count = Arc::new(Count::default());
    let image = open(&src, &options(&cache, &count)).unwrap();
    let total: u64 = image.layers.iter().map(|l| l.descriptor.size).sum::<u64>() + image.manifest.config.size;
    assert_eq!(count.0.load(Ordering::Relaxed), total);
    let tree = flatten(&image, 2).unwrap().tree;
    assert_same(&tree_manifest(&tree, Devices::AsEmptyFiles), &theirs, "registry pull");
    let digest = run("skopeo", &["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &src]);
    assert_eq!(image.manifest_digest.as_str(), digest.trim());

    // Second pull: nothing downloaded.
    let count = Arc::new(Count::default());
    let again = open(&src, &options(&cache, &count)).unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), 0);
    assert_eq!(again.manifest_digest, image.manifest_digest);

    // An interrupted download resumes: half of the largest layer is left as a partial.
    let big = image.layers.iter().max_by_key(|l| l.descriptor.size).unwrap().descriptor.clone();
    let path = cached_blob(&cache, big.digest.as_str());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let half = bytes.len() / 2;
    std::fs::write(path.with_extension("partial"), &bytes[..half]).unwrap();
    let count = Arc::new(Count::default());
    let resumed = open(&src, &options(&cache, &count)).unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), (bytes.len() - half) as u64, "did not resume");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_same(&tree_manifest(&flatten(&resumed, 2).unwrap().tree, Devices::AsEmptyFiles), &theirs, "resumed pull");

    // A partial file of wrong bytes is thrown away and the blob fetched again.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(path.with_extension("partial"), vec![0x55u8; half]).unwrap();
    open(&src, &options(&cache, &Arc::new(Count::default()))).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // A cached blob damaged in place (same size, one byte changed) is deleted and fetched
    // again, and what is read afterwards is the new download, not the damaged file that
    // the cache check opened.
    let mut damaged = bytes.clone();
    damaged[half] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let count = Arc::new(Count::default());
    let fixed = open(&src, &options(&cache, &count)).unwrap();
    assert_eq!(count.0.load(Ordering::Relaxed), bytes.len() as u64);
    assert!(fixed.warnings.iter().any(|w| w.contains("downloaded again")), "{:?}", fixed.warnings);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_same(&tree_manifest(&flatten(&fixed, 2).unwrap().tree, Devices::AsEmptyFiles), &theirs, "re-fetched pull");

    // By digest.
    let by_digest = format!("docker://{}/test/img@{}", reg.addr, image.manifest_digest);
    assert_eq!(
        open(&by_digest, &options(&cache, &Arc::new(Count::default()))).unwrap().manifest_digest,
        image.manifest_digest
    );

    // A multi-platform index: each platform gets its own config; an absent one lists them.
    let multi = format!("docker://{}/test/img:multi", reg.addr);
    run(
        "skopeo",
        &["copy", "--quiet", "--all", "--dest-tls-verify=false", &format!("oci:{}:multi", img.display()), &multi],
    );
    let mut o = options(&cache, &Arc::new(Count::default()));
    o.platform = Some(Platform::parse("linux/arm64").unwrap());
    let arm = open(&multi, &o).unwrap();
    assert_eq!((arm.config.architecture.as_str(), arm.config.variant.as_deref()), ("arm64", Some("v8")));
    o.platform = Some(Platform::parse("linux/amd64").unwrap());
    assert_eq!(open(&multi, &o).unwrap().config.architecture, "amd64");
    o.platform = Some(Platform::parse("linux/s390x").unwrap());
    let e = open(&multi, &o).unwrap_err();
    assert!(e.to_string().contains("linux/amd64, linux/arm64/v8"), "{e}");

    // Missing tag and missing repository: clear errors.
    let e = open(&format!("docker://{}/test/img:nope", reg.addr), &options(&cache, &Arc::new(Count::default())))
        .unwrap_err();
    assert!(e.to_string().contains("no manifest nope"), "{e}");
    drop(reg);
}

/// A front for the registry that demands a Bearer token, as Docker Hub and most hosted
/// registries do: `/v2/...` without the token answers 401 with a challenge naming
/// `/token`, which hands out the token only for Basic credentials alice:secret (a
/// different token when the scope asks for push; only that one may POST, PUT or PATCH).
/// Everything else is forwarded to the real registry, bodies included.
fn start_token_front(backend: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let me = addr.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(500) {
            let Ok(conn) = conn else { continue };
            let (backend, me) = (backend.clone(), me.clone());
            std::thread::spawn(move || serve_front(conn, &backend, &me));
        }
    });
    addr
}

fn serve_front(mut c: TcpStream, backend: &str, me: &str) {
    let Some((request, headers)) = read_http_head(&mut c) else { return };
    let path = request.split(' ').nth(1).unwrap_or("").to_string();
    let auth = headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).unwrap_or("");
    let reply = |c: &mut TcpStream, status: &str, extra: &str, body: &str| {
        let _ =
            write!(c, "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    };
    if path.starts_with("/token") {
        // base64("alice:secret")
        if auth == "Basic YWxpY2U6c2VjcmV0" {
            let token = if path.contains("push") { "tok-push" } else { "tok-123" };
            reply(&mut c, "200 OK", "Content-Type: application/json\r\n", &format!(r#"{{"token":"{token}"}}"#));
        } else {
            reply(&mut c, "401 Unauthorized", "", "");
        }
        return;
    }
    let method = request.split(' ').next().unwrap_or("GET").to_string();
    let reading = method == "GET" || method == "HEAD";
    if !(auth == "Bearer tok-push" || (reading && auth == "Bearer tok-123")) {
        let scope = if reading { "pull" } else { "pull,push" };
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"front\",scope=\"repository:test/img:{scope}\"\r\n"
        );
        reply(&mut c, "401 Unauthorized", &challenge, "");
        return;
    }
    let Ok(mut up) = TcpStream::connect(backend) else { return };
    // Host: the front, so upload Locations point back here.
    let mut fwd = format!("{method} {path} HTTP/1.0\r\nHost: {me}\r\n");
    for (k, v) in &headers {
        if ["accept", "range", "content-type", "content-length", "content-range"].contains(&k.as_str()) {
            fwd.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    fwd.push_str("\r\n");
    let _ = up.write_all(fwd.as_bytes());
    let len: u64 = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    if len > 0 {
        let _ = std::io::copy(&mut (&mut c).take(len), &mut up);
    }
    let _ = std::io::copy(&mut up, &mut c);
}

#[test]
fn pull_through_bearer_token_auth_with_creds_or_an_auth_file() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let reg = start_registry(&tmp.path().join("registry"));
    run(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", img.display()),
            &format!("docker://{}/test/img:t", reg.addr),
        ],
    );
    let front = start_token_front(reg.addr.clone());
    let src = format!("docker://{front}/test/img:t");
    let want = tree_manifest(
        &flatten(&open(&format!("oci:{}:t", img.display()), &OpenOptions::default()).unwrap(), 2).unwrap().tree,
        Devices::AsEmptyFiles,
    );

    // Anonymous: refused, and the message says how to log in.
    let mut o = options(&tmp.path().join("cache1"), &Arc::new(Count::default()));
    o.registry.auth_file = Some(tmp.path().join("none.json"));
    std::fs::write(tmp.path().join("none.json"), "{}").unwrap();
    let e = open(&src, &o).unwrap_err();
    assert!(e.to_string().contains("--creds"), "{e}");

    // --creds.
    let mut o = options(&tmp.path().join("cache2"), &Arc::new(Count::default()));
    o.registry.creds = Some("alice:secret".into());
    assert_same(
        &tree_manifest(&flatten(&open(&src, &o).unwrap(), 2).unwrap().tree, Devices::AsEmptyFiles),
        &want,
        "bearer --creds",
    );

    // Docker's config.json format.
    let auth = tmp.path().join("config.json");
    std::fs::write(&auth, format!(r#"{{"auths":{{"{front}":{{"auth":"YWxpY2U6c2VjcmV0"}}}}}}"#)).unwrap();
    let mut o = options(&tmp.path().join("cache3"), &Arc::new(Count::default()));
    o.registry.auth_file = Some(auth);
    assert_same(
        &tree_manifest(&flatten(&open(&src, &o).unwrap(), 2).unwrap().tree, Devices::AsEmptyFiles),
        &want,
        "bearer authfile",
    );

    // Wrong password: the token service says no.
    let mut o = options(&tmp.path().join("cache4"), &Arc::new(Count::default()));
    o.registry.creds = Some("alice:wrong".into());
    let e = open(&src, &o).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused, "{e}");

    // A push through the front: the token asked for has push scope (the pull token may
    // not POST); anonymous is refused at the token service.
    let image = open(&format!("oci:{}:t", img.display()), &OpenOptions::default()).unwrap();
    let dst = format!("docker://{front}/test/other:pushed");
    let diskcast_oci::ImageRef::Registry(r) = diskcast_oci::ImageRef::parse(&dst).unwrap() else { panic!() };
    let mut o = o.registry.clone();
    o.creds = None;
    o.auth_file = Some(tmp.path().join("none.json"));
    let e = diskcast_oci::registry::push_image(&image, &r, &o, &Count::default()).unwrap_err();
    assert!(e.to_string().contains("--creds"), "{e}");
    o.creds = Some("alice:secret".into());
    let report = diskcast_oci::registry::push_image(&image, &r, &o, &Count::default()).unwrap();
    assert_eq!((report.uploaded, report.present), (image.layers.len() + 1, 0));
    let got = run(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/test/other:pushed", reg.addr),
        ],
    );
    assert_eq!(got.trim(), image.manifest_digest.to_string());
    drop(reg);
}

/// An umoci-built image copied to a registry as stored, in 64 KiB `PATCH` chunks: skopeo
/// reports the same manifest digest as the layout's, and a pull flattens to umoci's
/// unpack of the source.
#[test]
fn push_in_chunks_keeps_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let src = format!("oci:{}:t", img.display());
    let rootfs = umoci_unpack(&format!("{}:t", img.display()), &tmp.path().join("bundle"));
    let reg = start_registry(&tmp.path().join("registry"));
    let dst = format!("docker://{}/test/chunked:c", reg.addr);
    let image = open(&src, &OpenOptions::default()).unwrap();
    let big = image.layers.iter().map(|l| l.descriptor.size).max().unwrap();
    assert!(big > 4 * 65536, "the test wants a layer of several chunks, not {big} bytes");
    let mut o =
        diskcast_oci::registry::RegistryOptions { tls_verify: false, upload_chunk: 65536, ..Default::default() };
    o.cache_dir = Some(tmp.path().join("cache"));
    let diskcast_oci::ImageRef::Registry(r) = diskcast_oci::ImageRef::parse(&dst).unwrap() else { panic!() };
    let count = Count::default();
    let report = diskcast_oci::registry::push_image(&image, &r, &o, &count).unwrap();
    assert_eq!(report.uploaded, image.layers.len() + 1);
    assert_eq!(count.0.load(Ordering::Relaxed), report.bytes);
    let want = run("skopeo", &["inspect", "--format", "{{.Digest}}", &src]);
    let got = run("skopeo", &["inspect", "--tls-verify=false", "--format", "{{.Digest}}", &dst]);
    assert_eq!(got.trim(), want.trim());
    assert_eq!(report.manifest_digest.unwrap().to_string(), want.trim());
    let count = Arc::new(Count::default());
    let pulled = open(&dst, &options(&tmp.path().join("cache"), &count)).unwrap();
    let tree = flatten(&pulled, 2).unwrap().tree;
    assert_same(&tree_manifest(&tree, Devices::AsEmptyFiles), &dir_manifest(&rootfs), "chunked push, pulled back");
    // Pushing to a digest is refused with a message.
    let bad = diskcast_oci::registry::RegistryOptions { tls_verify: false, ..Default::default() };
    let at = diskcast_oci::ImageRef::parse(&format!("docker://{}/test/chunked@{}", reg.addr, want.trim())).unwrap();
    let diskcast_oci::ImageRef::Registry(at) = at else { panic!() };
    let e = diskcast_oci::registry::push_image(&image, &at, &bad, count.as_ref()).unwrap_err();
    assert!(e.to_string().contains("push to a tag"), "{e}");
}
