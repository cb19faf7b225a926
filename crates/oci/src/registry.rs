//! Pulling from and pushing to a registry over the OCI distribution API
//! (<https://github.com/opencontainers/distribution-spec>, spec.md): manifests by tag or
//! digest, blobs by digest, anonymous or with credentials (Basic, or a Bearer token from
//! the realm a `WWW-Authenticate` challenge names).
//!
//! A push checks each blob with `HEAD` (present: skipped), uploads the others (`POST`
//! to open an upload, then one `PUT ?digest=`, or `PATCH` chunks first for big blobs),
//! then `PUT`s the manifest under its tag.
//!
//! Blobs go to a content-addressed cache (`$XDG_CACHE_HOME/diskcast/blobs/sha256/HEX`):
//! a blob already there is not downloaded again; a download goes to `HEX.partial` and an
//! interrupted one resumes with a `Range` request. A blob enters the cache only after its
//! size and digest were checked; layers download in parallel.

use crate::blobs::{BlobStore, DirStore, read_verified};
use crate::digest::{Digest, Hasher, Verify};
use crate::image::{Image, OpenOptions, from_manifest, lone, select_platform};
use crate::source::{Reference, RegistryRef};
use crate::spec::{DocKind, Index, MAX_MANIFEST_BYTES, Manifest, Platform, doc_kind, media, parse_json};
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_http::{MAX_ATTEMPTS, RETRY_BACKOFF, Timeouts, body_error, retry, run, transport_error};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default [`RegistryOptions::idle_timeout`] (diskcast-http's).
pub use diskcast_http::IDLE_TIMEOUT;

/// Default [`RegistryOptions::request_timeout`] (diskcast-http's).
pub use diskcast_http::REQUEST_TIMEOUT;

/// Blobs larger than this are uploaded in `PATCH` chunks of this size (one huge `PUT`
/// is what proxies and some registries cap).
pub const UPLOAD_CHUNK: u64 = 64 << 20;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates and refuse plain HTTP (`--tls-verify=false` turns both off).
    pub tls_verify: bool,
    /// `USER:PASSWORD` from `--creds`; otherwise the Docker and containers auth files.
    pub creds: Option<String>,
    /// `--authfile`: the one auth file to read (instead of `$REGISTRY_AUTH_FILE`,
    /// `$XDG_RUNTIME_DIR/containers/auth.json` and `~/.docker/config.json`).
    pub auth_file: Option<PathBuf>,
    /// The blob cache directory; `None`: `$XDG_CACHE_HOME/diskcast` (or `~/.cache/diskcast`).
    pub cache_dir: Option<PathBuf>,
    /// Parallel downloads.
    pub jobs: usize,
    /// Uploads of blobs larger than this go in `PATCH` chunks of this size.
    pub upload_chunk: u64,
    /// A read that gets no byte for this long fails ("idle timeout").
    pub idle_timeout: Duration,
    /// A request not done (body included) after this long fails ("total timeout").
    pub request_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            creds: None,
            auth_file: None,
            cache_dir: None,
            jobs: 4,
            upload_chunk: UPLOAD_CHUNK,
            idle_timeout: IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The cache directory these options use.
pub fn cache_dir(o: &RegistryOptions) -> Result<PathBuf> {
    if let Some(d) = &o.cache_dir {
        return Ok(d.clone());
    }
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or_else(|| Error::argument("neither XDG_CACHE_HOME nor HOME is set"))?,
        )
        .join(".cache"),
    };
    Ok(base.join("diskcast"))
}

/// Opens an image on a registry: the manifest (through an index for `platform`), then
/// every blob into the cache, then the image from the cache.
pub fn open(r: &RegistryRef, platform: &Platform, strict: bool, opts: &OpenOptions) -> Result<Image> {
    let label = format!("docker://{}/{}:{}", r.registry, r.repository, r.reference);
    let client = Client::connect(r, &opts.registry, "pull")?;
    let mut reference = r.reference.clone();
    let mut depth = 0;
    let (digest, manifest) = loop {
        let (bytes, served_type) = client.manifest(&reference)?;
        let digest = match &reference {
            Reference::Digest(d) => {
                d.verify(&bytes, &format!("manifest {d}"))?;
                d.clone()
            }
            Reference::Tag(_) => Digest::sha256(&bytes),
        };
        match doc_kind(served_type.as_deref(), &bytes)? {
            DocKind::Index => {
                depth += 1;
                if depth > 4 {
                    return Err(Error::invalid("image indexes nest too deep"));
                }
                let index: Index = parse_json(&bytes, "image index")?;
                let all: Vec<_> = index.manifests.iter().collect();
                let what = format!("{label} (index {})", digest.short());
                let chosen = select_platform(&all, platform, lone(strict, opts), &what)?;
                reference = Reference::Digest(chosen.digest.clone());
            }
            DocKind::Manifest => break (digest, parse_json::<Manifest>(&bytes, "manifest")?),
        }
    };
    // The manifest used is the one that must be signed: for an index, the platform's
    // instance, as skopeo's policy checks it when it copies one image of a list. Checked
    // before any blob is fetched.
    let signatures = match opts.verify_keys.as_slice() {
        [] => Vec::new(),
        keys => crate::sigstore::verify(&client, r, &digest, keys)?,
    };
    let cache = cache_dir(&opts.registry)?;
    let store = DirStore::new(&cache);
    let mut blobs = vec![manifest.config.clone()];
    blobs.extend(manifest.layers.iter().cloned());
    for b in &blobs {
        if !b.urls.is_empty() || b.media_type == media::DOCKER_LAYER_FOREIGN {
            return Err(Error::unsupported(format!("layer {} is a foreign layer fetched from elsewhere", b.digest)));
        }
    }
    let warnings = client.fetch_all(&store, &blobs, opts.progress.as_ref(), opts.registry.jobs.max(1))?;
    // The config is small: read it now so a bad one fails before anything else.
    read_verified(&store, &manifest.config, crate::spec::MAX_CONFIG_BYTES, "image config")?;
    let mut image = from_manifest(Arc::new(store), digest, false, manifest, platform, strict, label, opts)?;
    image.warnings = warnings;
    image.signatures = signatures;
    Ok(image)
}

/// Signatures come from the image's own repository, through the same client (auth,
/// retries, timeouts); they are small and read into memory, never cached.
impl crate::sigstore::Fetch for Client {
    fn tagged_manifest(&self, tag: &str) -> Result<Option<Vec<u8>>> {
        let reference = Reference::Tag(tag.to_string());
        Ok(retry(|| self.find_manifest(&reference))?.map(|(bytes, _)| bytes))
    }

    fn small_blob(&self, d: &crate::spec::Descriptor, cap: u64) -> Result<Vec<u8>> {
        let what = format!("{}: blob {}", self.label, d.digest);
        if d.size > cap {
            return Err(Error::out_of_bounds(format!("{what} is {} bytes, over the {cap}-byte limit", d.size)));
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, d.digest);
        let bytes = retry(|| {
            let resp = self.get(&url, None, 0)?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Err(Error::invalid(format!("{what} not found"))),
                s => return Err(Error::io(format!("GET {what} answered {s}"), std::io::Error::other("http status"))),
            }
            // One byte past the size says the registry sent more than described.
            let mut bytes = Vec::new();
            resp.into_body()
                .into_reader()
                .take(d.size.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|e| body_error(&format!("GET {what}"), e, self.timeouts))?;
            Ok(bytes)
        })?;
        if u64::try_from(bytes.len()).ok() != Some(d.size) {
            return Err(Error::corrupt(format!("{what}: {} bytes, not the {} described", bytes.len(), d.size)));
        }
        d.digest.verify(&bytes, &what)?;
        Ok(bytes)
    }
}

/// Checks the cached copy of `d` (size and digest) by reading it whole: `Ok(true)` when
/// it is good, `Ok(false)` when there is none, an error saying what is wrong otherwise.
/// The blob stays open in `store`: the bytes checked are the ones read later.
fn check_cached(store: &DirStore, d: &crate::spec::Descriptor) -> Result<bool> {
    if store.opened_blob(&d.digest)?.is_none() {
        return Ok(false);
    }
    let what = format!("cached blob {}", d.digest);
    let raw = store.open_raw(&d.digest)?;
    Verify::new(std::io::BufReader::with_capacity(1 << 20, raw), &d.digest, d.size, what).finish()?;
    Ok(true)
}

/// Where credentials are looked up: `--creds`, then Docker's and skopeo's auth files.
fn credentials(r: &RegistryRef, o: &RegistryOptions) -> Result<Option<(String, String)>> {
    if let Some(c) = &o.creds {
        let (u, p) = c.split_once(':').unwrap_or((c.as_str(), ""));
        return Ok(Some((u.to_string(), p.to_string())));
    }
    let mut files = Vec::new();
    if let Some(f) = &o.auth_file {
        files.push(f.clone());
    } else if let Some(d) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if o.auth_file.is_none() {
        match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => files.push(PathBuf::from(d).join("config.json")),
            None => {
                if let Some(h) = std::env::var_os("HOME") {
                    files.push(PathBuf::from(h).join(".docker/config.json"));
                }
            }
        }
    }
    let keys: Vec<String> = if r.registry_name == "docker.io" {
        vec![
            "docker.io".into(),
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![r.registry_name.clone(), format!("https://{}", r.registry_name), format!("http://{}", r.registry_name)]
    };
    for f in files {
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) if o.auth_file.is_some() => return Err(Error::io("cannot read the auth file", e).with_file(&f)),
            Err(_) => continue,
        };
        let v: serde_json::Value = parse_json(&bytes, &f.display().to_string())?;
        for k in &keys {
            if let Some(auth) =
                v.get("auths").and_then(|a| a.get(k)).and_then(|e| e.get("auth")).and_then(|a| a.as_str())
            {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|_| Error::invalid(format!("{}: auth for {k} is not base64", f.display())))?;
                let text = String::from_utf8_lossy(&raw).into_owned();
                let (u, p) = text.split_once(':').unwrap_or((&text, ""));
                return Ok(Some((u.to_string(), p.to_string())));
            }
        }
    }
    Ok(None)
}

/// A connection to one repository of one registry.
struct Client {
    agent: ureq::Agent,
    base: String,
    repo: String,
    creds: Option<(String, String)>,
    /// The `Authorization` header value once a challenge was answered.
    auth: Mutex<Option<String>>,
    label: String,
    /// The actions a token is asked for: `pull`, or `pull,push`.
    actions: &'static str,
    timeouts: Timeouts,
    /// `host[:port]` of the registry, for deciding where credentials may go.
    registry: String,
    tls_verify: bool,
}

/// What a request sends.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Opened again if the request must be repeated after an auth challenge.
    Reopen(&'a dyn Fn() -> Result<Box<dyn Read + Send + 'a>>),
    /// Sent once: a 401 answer is an error.
    Once(&'a mut dyn Read),
}

impl Client {
    fn connect(r: &RegistryRef, o: &RegistryOptions, actions: &'static str) -> Result<Client> {
        let http = diskcast_http::HttpOptions {
            tls_verify: o.tls_verify,
            idle_timeout: o.idle_timeout,
            request_timeout: o.request_timeout,
        };
        let agent = diskcast_http::agent(&http);
        let label = format!("{}/{}", r.registry, r.repository);
        let mut c = Client {
            agent,
            base: format!("https://{}", r.registry),
            repo: r.repository.clone(),
            creds: credentials(r, o)?,
            auth: Mutex::new(None),
            label,
            actions,
            timeouts: http.timeouts(),
            registry: r.registry.clone(),
            tls_verify: o.tls_verify,
        };
        // A ping tells whether the registry speaks TLS; without verification, plain
        // HTTP is tried when TLS fails (as skopeo does with --tls-verify=false).
        let ping = format!("{}/v2/", c.base);
        if let Err(e) = c.agent.get(&ping).call() {
            if o.tls_verify {
                return Err(transport_error(&format!("cannot reach registry {}", r.registry), e, c.timeouts));
            }
            c.base = format!("http://{}", r.registry);
            c.agent.get(&format!("{}/v2/", c.base)).call().map_err(|e| {
                transport_error(&format!("cannot reach registry {} (https or http)", r.registry), e, c.timeouts)
            })?;
        }
        Ok(c)
    }

    /// A GET with the current authorization; answers one 401 challenge and retries.
    fn get(&self, url: &str, accept: Option<&str>, range_from: u64) -> Result<ureq::http::Response<ureq::Body>> {
        let mut headers = Vec::new();
        if let Some(a) = accept {
            headers.push(("Accept", a.to_string()));
        }
        if range_from > 0 {
            headers.push(("Range", format!("bytes={range_from}-")));
        }
        self.send("GET", url, &headers, Body::Empty)
    }

    /// A request with the current authorization; answers one 401 challenge and retries.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        mut body: Body<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        for attempt in 0..2 {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(h) = self.auth.lock().map_err(|_| Error::invalid("poisoned"))?.clone() {
                req = req.header("Authorization", &h);
            }
            let what = format!("{method} {url}");
            let resp = match &mut body {
                Body::Empty => run(&self.agent, req, ureq::SendBody::none(), &what, self.timeouts)?,
                Body::Bytes(b) => {
                    run(&self.agent, req, ureq::SendBody::from_reader(&mut &b[..]), &what, self.timeouts)?
                }
                Body::Reopen(open) => {
                    let mut r = open()?;
                    run(&self.agent, req, ureq::SendBody::from_reader(&mut r), &what, self.timeouts)?
                }
                Body::Once(r) => run(&self.agent, req, ureq::SendBody::from_reader(&mut **r), &what, self.timeouts)?,
            };
            if resp.status() == 401 && attempt == 0 && !matches!(body, Body::Once(_)) {
                let challenge =
                    resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let header = self.answer(&challenge)?;
                *self.auth.lock().map_err(|_| Error::invalid("poisoned"))? = Some(header);
                continue;
            }
            if resp.status() == 401 || resp.status() == 403 {
                let creds = if self.creds.is_some() {
                    "the credentials given were not accepted"
                } else {
                    "no credentials given: --creds USER:PASSWORD or docker login"
                };
                return Err(Error::refused(format!(
                    "{}: {method} refused: {} ({creds})",
                    self.label,
                    resp.status().as_u16()
                )));
            }
            return Ok(resp);
        }
        Err(Error::refused(format!("{}: authentication failed", self.label)))
    }

    /// The `Authorization` header that answers a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str) -> Result<String> {
        use base64::Engine;
        let basic = self
            .creds
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                Error::refused(format!("{} needs credentials (--creds USER:PASSWORD or docker login)", self.label))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::unsupported(format!("{}: authentication scheme {scheme:?}", self.label)));
        }
        let p = parse_challenge(params);
        let realm = p
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::invalid(format!("{}: Bearer challenge without a realm", self.label)))?;
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(Error::invalid(format!("{}: token realm {realm:?} is not an http(s) URL", self.label)));
        }
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            if key == "scope" && self.actions != "pull" {
                continue;
            }
            if let Some((_, v)) = p.iter().find(|(k, _)| k == key) {
                url.push(sep);
                url.push_str(&format!("{key}={}", urlencode(v)));
                sep = '&';
            }
        }
        // A push asks for push and pull on the repository whatever the first challenge
        // (often a HEAD's, for pull only) named.
        let own_scope = format!("repository:{}:{}", self.repo, self.actions);
        if self.actions != "pull" || !p.iter().any(|(k, _)| k == "scope") {
            url.push(sep);
            url.push_str(&format!("scope={}", urlencode(&own_scope)));
        }
        let mut req = self.agent.get(&url);
        let withheld = match (&basic, realm_may_get_credentials(&realm, &self.registry, self.tls_verify)) {
            (Some(b), Ok(())) => {
                req = req.header("Authorization", b);
                None
            }
            (Some(_), Err(why)) => Some(why),
            (None, _) => None,
        };
        let mut resp =
            req.call().map_err(|e| transport_error(&format!("token request to {realm}"), e, self.timeouts))?;
        if resp.status() != 200 {
            let why = match (&basic, &withheld) {
                (None, _) => " (no credentials given: --creds USER:PASSWORD or docker login)".to_string(),
                (Some(_), Some(why)) => format!(" (credentials were not sent: {why})"),
                (Some(_), None) => String::new(),
            };
            return Err(Error::refused(format!(
                "{}: the token service {realm} answered {}{why}",
                self.label,
                resp.status()
            )));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| transport_error("token response", e, self.timeouts))?;
        let v: serde_json::Value = parse_json(&body, "token response")?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::invalid(format!("{}: token response has no token", self.label)))?;
        Ok(format!("Bearer {token}"))
    }

    /// The manifest (or index) `reference` names and its served media type; retried.
    fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, Option<String>)> {
        retry(|| self.manifest_once(reference))
    }

    fn manifest_once(&self, reference: &Reference) -> Result<(Vec<u8>, Option<String>)> {
        self.find_manifest(reference)?
            .ok_or_else(|| Error::invalid(format!("{}: no manifest {reference}", self.label)).with_field("reference"))
    }

    /// The manifest `reference` names, `None` when the registry answers 404.
    fn find_manifest(&self, reference: &Reference) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repo);
        let mut resp = self.get(&url, Some(media::ACCEPT_MANIFESTS), 0)?;
        if resp.status() == 404 {
            return Ok(None);
        }
        if resp.status() != 200 {
            return Err(Error::io(
                format!("{}: GET manifest {reference} answered {}", self.label, resp.status()),
                std::io::Error::other("http status"),
            ));
        }
        let mt = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST_BYTES)
            .read_to_vec()
            .map_err(|e| transport_error(&format!("{}: GET manifest {reference}", self.label), e, self.timeouts))?;
        Ok(Some((body, mt)))
    }

    /// Downloads every blob not yet in the cache, `jobs` at a time. Blobs already there
    /// are checked first (size and digest, `jobs` at a time): one damaged on disk is
    /// deleted and downloaded again, and a warning saying so is returned.
    fn fetch_all(
        &self,
        store: &DirStore,
        blobs: &[crate::spec::Descriptor],
        progress: &dyn Progress,
        jobs: usize,
    ) -> Result<Vec<String>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let states: Vec<Mutex<Option<Result<bool>>>> = blobs.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..jobs.min(blobs.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(d) = blobs.get(i) else { break };
                        if let Ok(mut st) = states[i].lock() {
                            *st = Some(check_cached(store, d));
                        }
                    }
                });
            }
        });
        let mut todo: Vec<&crate::spec::Descriptor> = Vec::new();
        let mut warnings = Vec::new();
        for (d, st) in blobs.iter().zip(states) {
            match st.into_inner().ok().flatten() {
                Some(Ok(true)) => {}
                Some(Ok(false)) | None => todo.push(d),
                Some(Err(e)) if e.kind() == diskcast_block::ErrorKind::Corrupt => {
                    store.forget(&d.digest);
                    let path = store.path(&d.digest);
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io("cannot delete a damaged cached blob", e).with_file(&path))?;
                    warnings.push(format!("{}; deleted from the cache and downloaded again", e.message()));
                    todo.push(d);
                }
                Some(Err(e)) => return Err(e),
            }
        }
        if todo.is_empty() {
            return Ok(warnings);
        }
        let dir = store.path(&todo[0].digest).parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create the blob cache", e).with_file(&dir))?;
        progress.start(todo.iter().map(|d| d.size).sum());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..jobs.min(todo.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= todo.len() || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                            break;
                        }
                        if let Err(e) = self.fetch(store, todo[i], progress)
                            && let Ok(mut f) = failed.lock()
                        {
                            f.get_or_insert(e);
                        }
                    }
                });
            }
        });
        progress.finish();
        match failed.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(warnings),
        }
    }

    /// Downloads one blob into the cache, resuming a partial download, checking size and
    /// digest before the rename that makes it visible.
    fn fetch(&self, store: &DirStore, d: &crate::spec::Descriptor, progress: &dyn Progress) -> Result<()> {
        let dest = store.path(&d.digest);
        let partial = dest.with_extension("partial");
        let mut last = None;
        let mut wait = RETRY_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
            match self.fetch_once(d, &partial, progress) {
                Ok(()) => {
                    std::fs::rename(&partial, &dest)
                        .map_err(|e| Error::io("cannot move a downloaded blob into the cache", e).with_file(&dest))?;
                    return Ok(());
                }
                Err(e) if e.kind() == diskcast_block::ErrorKind::Corrupt => {
                    // A partial file that does not lead to the right digest: start over.
                    let _ = std::fs::remove_file(&partial);
                    last = Some(e);
                }
                // Transport errors and timeouts: the next attempt resumes the partial file.
                Err(e) if e.kind() == diskcast_block::ErrorKind::Io => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(match last {
            Some(e) => Error::new(e.kind(), format!("{} (after {MAX_ATTEMPTS} attempts)", e.message())),
            None => Error::invalid("download failed"),
        })
    }

    fn fetch_once(&self, d: &crate::spec::Descriptor, partial: &Path, progress: &dyn Progress) -> Result<()> {
        let what = format!("blob {}", d.digest);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(partial)
            .map_err(|e| Error::io("cannot open the cache", e).with_file(partial))?;
        let have = file.metadata().map_err(|e| Error::io("cannot stat", e).with_file(partial))?.len();
        let mut hasher = Hasher::new(d.digest.algorithm());
        if have > d.size {
            return Err(Error::corrupt(format!("{what}: partial download is larger than the blob")));
        }
        if have > 0 {
            let mut r = std::fs::File::open(partial).map_err(|e| Error::io("cannot read", e).with_file(partial))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf).map_err(|e| Error::io("cannot read", e).with_file(partial))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, d.digest);
        let mut done = have;
        if have < d.size {
            let resp = self.get(&url, None, have)?;
            match resp.status().as_u16() {
                206 if have > 0 => {}
                200 => {
                    if have > 0 {
                        // The server ignored the range: start from the beginning.
                        file.set_len(0).map_err(|e| Error::io("cannot truncate", e).with_file(partial))?;
                        hasher = Hasher::new(d.digest.algorithm());
                        done = 0;
                    }
                }
                404 => return Err(Error::invalid(format!("{}: {what} not found", self.label))),
                s => {
                    return Err(Error::io(
                        format!("{}: GET {what} answered {s}", self.label),
                        std::io::Error::other("http status"),
                    ));
                }
            }
            progress.advance(done - have);
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = body.read(&mut buf).map_err(|e| {
                    body_error(&format!("{}: download of {what} broke off", self.label), e, self.timeouts)
                })?;
                if n == 0 {
                    break;
                }
                done += n as u64;
                if done > d.size {
                    return Err(Error::corrupt(format!(
                        "{what}: the registry sent more than the {} bytes described",
                        d.size
                    )));
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(|e| Error::io("cannot write to the cache", e).with_file(partial))?;
                progress.advance(n as u64);
            }
        }
        if done != d.size {
            return Err(Error::io(
                format!("{what}: download ended after {done} of {} bytes", d.size),
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        let got = hasher.finish();
        if got != d.digest {
            return Err(crate::digest::mismatch(&what, &d.digest, &got));
        }
        file.sync_all().map_err(|e| Error::io("cannot sync the cache", e).with_file(partial))?;
        Ok(())
    }
}

/// One blob to push: its descriptor and how to read it (again, should auth need a retry).
pub struct PushBlob<'a> {
    /// Digest, size and media type.
    pub descriptor: crate::spec::Descriptor,
    /// Opens the blob's bytes from the start.
    pub open: &'a dyn Fn() -> Result<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for PushBlob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushBlob").field("descriptor", &self.descriptor).finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had (a `HEAD` answered 200): not sent.
    pub present: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The manifest digest the registry answered with (`Docker-Content-Digest`), checked
    /// against ours.
    pub manifest_digest: Option<Digest>,
}

/// Pushes `blobs` (those the registry lacks) and then `manifest` (of `media_type`) under
/// the tag `r` names.
pub fn push(
    r: &RegistryRef,
    o: &RegistryOptions,
    blobs: &[PushBlob<'_>],
    manifest: &[u8],
    media_type: &str,
    progress: &dyn Progress,
) -> Result<PushReport> {
    let Reference::Tag(tag) = &r.reference else {
        return Err(Error::argument(format!(
            "docker://{}/{}: push to a tag (REPO:TAG), not a digest",
            r.registry, r.repository
        )));
    };
    let client = Client::connect(r, o, "pull,push")?;
    let mut report = PushReport::default();
    progress.start(blobs.iter().map(|b| b.descriptor.size).sum());
    let chunk = o.upload_chunk.max(1);
    let result = (|| {
        for b in blobs {
            if client.upload(b, chunk, progress)? {
                report.uploaded += 1;
                report.bytes += b.descriptor.size;
            } else {
                report.present += 1;
            }
        }
        Ok::<(), Error>(())
    })();
    progress.finish();
    result?;
    report.manifest_digest = Some(client.put_manifest(tag, manifest, media_type)?);
    Ok(report)
}

/// Copies an image as stored (an `oci:` layout or archive) to a registry: every blob as
/// it is, and the manifest's own bytes, so its digest stays the same.
pub fn push_image(img: &Image, r: &RegistryRef, o: &RegistryOptions, progress: &dyn Progress) -> Result<PushReport> {
    if img.manifest_synthesized {
        return Err(Error::unsupported(format!(
            "{} has no manifest of its own to copy; give --entrypoint or another config option to build a new image",
            img.source
        )));
    }
    let mdesc = crate::spec::Descriptor {
        media_type: String::new(),
        digest: img.manifest_digest.clone(),
        size: img.store.stored_size(&img.manifest_digest).unwrap_or(0),
        urls: vec![],
        annotations: Default::default(),
        platform: None,
    };
    let manifest = read_verified(img.store.as_ref(), &mdesc, MAX_MANIFEST_BYTES, "manifest")?;
    let media_type = img.manifest.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    let mut descs = vec![img.manifest.config.clone()];
    descs.extend(img.manifest.layers.iter().cloned());
    let openers: Vec<_> = descs
        .iter()
        .map(|d| {
            let store = img.store.clone();
            let digest = d.digest.clone();
            move || store.open_raw(&digest)
        })
        .collect();
    let blobs: Vec<PushBlob<'_>> =
        descs.iter().zip(&openers).map(|(d, open)| PushBlob { descriptor: d.clone(), open }).collect();
    push(r, o, &blobs, &manifest, &media_type, progress)
}

/// Counts what passes through for the progress bar.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

impl Client {
    /// Names a failed step: `REGISTRY/REPO: STEP refused: STATUS (registry's message)`.
    fn refused(&self, step: &str, mut resp: ureq::http::Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(64 << 10).read_to_vec().unwrap_or_default();
        // The distribution spec's error body: {"errors":[{"code":..,"message":..}]}.
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.get("errors")?.get(0)?.clone();
                Some(format!(
                    " ({}: {})",
                    e.get("code").and_then(|c| c.as_str()).unwrap_or("?"),
                    e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                ))
            })
            .unwrap_or_default();
        let msg = format!("{}: {step} refused: {status}{detail}", self.label);
        if status < 500 { Error::refused(msg) } else { Error::io(msg, std::io::Error::other("http status")) }
    }

    /// Where an upload continues: the `Location` header, made absolute.
    fn location(&self, resp: &ureq::http::Response<ureq::Body>, step: &str) -> Result<String> {
        let loc =
            resp.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                Error::invalid(format!("{}: {step}: the registry gave no upload Location", self.label))
            })?;
        Ok(if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            format!("{}/{loc}", self.base)
        })
    }

    /// Uploads one blob unless the repository has it; true when it was sent.
    fn upload(&self, b: &PushBlob<'_>, chunk: u64, progress: &dyn Progress) -> Result<bool> {
        let d = &b.descriptor;
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, d.digest);
        let resp = retry(|| self.send("HEAD", &url, &[], Body::Empty))?;
        match resp.status().as_u16() {
            200 => {
                progress.advance(d.size);
                return Ok(false);
            }
            404 => {}
            _ => return Err(self.refused(&format!("blob check (HEAD {})", d.digest), resp)),
        }
        let start = format!("{}/v2/{}/blobs/uploads/", self.base, self.repo);
        let resp = self.send("POST", &start, &[("Content-Length", "0".into())], Body::Empty)?;
        if resp.status() != 202 {
            return Err(self.refused(&format!("blob upload start ({})", d.digest), resp));
        }
        let mut loc = self.location(&resp, "blob upload start")?;
        let octet = ("Content-Type", "application/octet-stream".to_string());
        let resp = if d.size > chunk {
            // Chunks with PATCH from one reader, then a PUT with no body that closes it.
            let mut reader = Counted { inner: (b.open)()?, progress };
            let mut sent = 0u64;
            while sent < d.size {
                let n = chunk.min(d.size - sent);
                let mut part = (&mut reader).take(n);
                let headers = [
                    octet.clone(),
                    ("Content-Length", n.to_string()),
                    ("Content-Range", format!("{sent}-{}", sent + n - 1)),
                ];
                let resp = self.send("PATCH", &loc, &headers, Body::Once(&mut part))?;
                if resp.status() != 202 {
                    return Err(self.refused(&format!("blob upload ({} chunk at {sent})", d.digest), resp));
                }
                loc = self.location(&resp, "blob upload chunk")?;
                sent += n;
            }
            let sep = if loc.contains('?') { '&' } else { '?' };
            let url = format!("{loc}{sep}digest={}", urlencode(&d.digest.to_string()));
            self.send("PUT", &url, &[("Content-Length", "0".into())], Body::Empty)?
        } else {
            let sep = if loc.contains('?') { '&' } else { '?' };
            let url = format!("{loc}{sep}digest={}", urlencode(&d.digest.to_string()));
            let open =
                || -> Result<Box<dyn Read + Send + '_>> { Ok(Box::new(Counted { inner: (b.open)()?, progress })) };
            self.send("PUT", &url, &[octet, ("Content-Length", d.size.to_string())], Body::Reopen(&open))?
        };
        if resp.status() != 201 {
            return Err(self.refused(&format!("blob upload ({})", d.digest), resp));
        }
        Ok(true)
    }

    /// Puts the manifest under `tag`; returns the digest the registry computed.
    fn put_manifest(&self, tag: &str, bytes: &[u8], media_type: &str) -> Result<Digest> {
        let url = format!("{}/v2/{}/manifests/{tag}", self.base, self.repo);
        let ours = Digest::sha256(bytes);
        let headers = [("Content-Type", media_type.to_string()), ("Content-Length", bytes.len().to_string())];
        let resp = self.send("PUT", &url, &headers, Body::Bytes(bytes))?;
        if resp.status() != 201 {
            return Err(self.refused(&format!("manifest upload ({tag})"), resp));
        }
        if let Some(theirs) = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok())
            && theirs != ours.to_string()
        {
            return Err(Error::corrupt(format!(
                "{}: the registry stored the manifest as {theirs}, not {ours}",
                self.label
            )));
        }
        Ok(ours)
    }
}

/// Whether Basic credentials may go to the token `realm` of the registry at `registry`
/// (`host[:port]`): over https always; over plain http only when the user turned TLS
/// verification off and the realm is on the registry's own host (any port). Otherwise
/// the reason, for the message.
fn realm_may_get_credentials(realm: &str, registry: &str, tls_verify: bool) -> std::result::Result<(), String> {
    if realm.starts_with("https://") {
        return Ok(());
    }
    if tls_verify {
        return Err(format!(
            "the token realm {realm} is plain http (credentials go over https only; with --tls-verify=false also to \
             plain http on the registry's own host)"
        ));
    }
    let rest = realm.strip_prefix("http://").unwrap_or(realm);
    if !host_of(rest).eq_ignore_ascii_case(host_of(registry)) {
        return Err(format!("the token realm {realm} is plain http on another host than the registry {registry}"));
    }
    Ok(())
}

/// The host of `authority[/path]` (`user@host:port/x` -> `host`, `[::1]:80` -> `[::1]`).
fn host_of(s: &str) -> &str {
    let authority = s.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.starts_with('[') {
        return hostport.find(']').map_or(hostport, |i| &hostport[..=i]);
    }
    hostport.split(':').next().unwrap_or("")
}

/// `realm="https://x",service="y",scope="a:b:pull"` as key/value pairs.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        out.push((key, value));
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.docker.io/token".into()));
        assert_eq!(p[2].1, "repository:library/busybox:pull");
        assert_eq!(urlencode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn credentials_go_to_https_realms_or_to_the_registrys_own_host_without_tls_verification() {
        assert!(realm_may_get_credentials("https://auth.example/token", "reg.example", true).is_ok());
        assert!(realm_may_get_credentials("https://auth.example/token", "reg.example", false).is_ok());
        let e = realm_may_get_credentials("http://reg.example/token", "reg.example", true).unwrap_err();
        assert!(e.contains("https only"), "{e}");
        assert!(realm_may_get_credentials("http://reg.example:5001/token", "reg.example:5000", false).is_ok());
        let e = realm_may_get_credentials("http://127.0.0.2:80/token", "127.0.0.1:5000", false).unwrap_err();
        assert!(e.contains("another host"), "{e}");
        let e = realm_may_get_credentials("http://reg.example@evil.example/t", "reg.example", false).unwrap_err();
        assert!(e.contains("another host"), "{e}");
        assert_eq!(host_of("[::1]:5000/v2"), "[::1]");
        assert_eq!(host_of("u:p@h:1?x"), "h");
    }
}
