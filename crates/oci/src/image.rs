//! Opening an image: from a reference to a checked manifest, config and layer list,
//! whatever the transport. Indexes are resolved to one platform here.

use crate::blobs::{ArchiveStore, BlobStore, DirStore, Limits, read_verified, sniff};
use crate::digest::{Digest, Hasher, from_io};
use crate::source::ImageRef;
use crate::spec::{
    Compression, Descriptor, DocKind, DockerArchiveEntry, ImageConfig, Index, MAX_CONFIG_BYTES, MAX_LAYERS,
    MAX_MANIFEST_BYTES, Manifest, Platform, REF_NAME, doc_kind, media, parse_json,
};
use diskcast_block::io::ImageFile;
use diskcast_block::progress::{NoProgress, Progress};
use diskcast_block::size::count;
use diskcast_block::source::{RangeReader, Source};
use diskcast_block::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How deep indexes may nest (an index of indexes of manifests is already unusual).
const MAX_INDEX_DEPTH: usize = 4;
/// Most members an archive may have (a docker save of many images has thousands).
const MAX_ARCHIVE_MEMBERS: usize = 1_000_000;

/// How to open an image.
#[derive(Clone)]
pub struct OpenOptions {
    /// Which platform to pick from an index; `None`: the host's.
    pub platform: Option<Platform>,
    /// With no `platform` asked for: an index whose only usable image is for another
    /// platform gives that image rather than an error (`diskcast vm`, which makes the
    /// disk for the image's architecture, takes "the only platform the image has").
    pub lone_platform: bool,
    /// Decompression bounds.
    pub limits: Limits,
    /// Registry access (credentials, TLS, cache).
    pub registry: crate::registry::RegistryOptions,
    /// Download progress.
    pub progress: Arc<dyn Progress>,
    /// `--verify-key`: when not empty, a `docker://` image is used only when a sigstore
    /// signature attached in its registry verifies with one of these keys and names it
    /// ([`crate::sigstore`]); images from other transports are refused.
    pub verify_keys: Vec<crate::sigstore::PublicKey>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            platform: None,
            lone_platform: false,
            limits: Limits::default(),
            registry: crate::registry::RegistryOptions::default(),
            progress: Arc::new(NoProgress),
            verify_keys: Vec::new(),
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions").field("platform", &self.platform).field("limits", &self.limits).finish()
    }
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob as the manifest describes it.
    pub descriptor: Descriptor,
    /// How it is compressed.
    pub compression: Compression,
    /// The digest of the uncompressed tar, from the config (checked when flattening).
    pub diff_id: Option<Digest>,
}

/// An opened image: manifest, config and layers, all checked against their digests.
#[derive(Debug)]
pub struct Image {
    /// The reference it was opened from, for messages.
    pub source: String,
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// True when the source had no manifest (a legacy `docker save` archive) and this one
    /// was made from its config and layers.
    pub manifest_synthesized: bool,
    /// The manifest.
    pub manifest: Manifest,
    /// The config's digest.
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// Where the blobs are.
    pub store: Arc<dyn BlobStore>,
    /// Decompression bounds used when flattening.
    pub limits: Limits,
    /// What the user should know about how the image was read (a damaged cached blob
    /// fetched again), one message each.
    pub warnings: Vec<String>,
    /// The signatures checked when [`OpenOptions::verify_keys`] asked for them (at least
    /// one verified, or the image would not have opened); empty otherwise.
    pub signatures: Vec<crate::sigstore::SignatureCheck>,
}

impl Image {
    /// The platform the image's config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.config.os.clone(),
            architecture: self.config.architecture.clone(),
            variant: self.config.variant.clone(),
            os_version: None,
        }
    }
}

/// Opens the image `r`.
pub fn open(r: &ImageRef, opts: &OpenOptions) -> Result<Image> {
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let strict = opts.platform.is_some();
    if !opts.verify_keys.is_empty() && !matches!(r, ImageRef::Registry(_)) {
        return Err(Error::untrusted(format!(
            "--verify-key checks sigstore signatures attached to an image in its registry; {} has no registry \
             to hold them, so it cannot be verified (pull it from docker://REGISTRY/REPO:TAG, or drop --verify-key)",
            describe(r)
        )));
    }
    match r {
        ImageRef::Layout { dir, reference } => {
            let index_path = dir.join("index.json");
            check_layout_marker(dir)?;
            let bytes = read_file_capped(&index_path, MAX_MANIFEST_BYTES)?;
            let store: Arc<dyn BlobStore> = Arc::new(DirStore::new(dir));
            let label = format!("oci:{}", dir.display());
            from_layout_index(store, &bytes, reference.as_deref(), &platform, strict, label, opts)
                .map_err(|e| e.with_file(dir))
        }
        ImageRef::OciArchive { file, reference } => {
            let archive = Archive::index(file)?;
            let bytes = archive
                .read_member("index.json", MAX_MANIFEST_BYTES)?
                .ok_or_else(|| Error::invalid("not an OCI archive: no index.json inside").with_file(file))?;
            let store = Arc::new(archive.blob_store());
            let label = format!("oci-archive:{}", file.display());
            from_layout_index(store, &bytes, reference.as_deref(), &platform, strict, label, opts)
                .map_err(|e| e.with_file(file))
        }
        ImageRef::DockerArchive { file, reference } => {
            open_docker_archive(file, reference.as_deref(), &platform, strict, opts).map_err(|e| e.with_file(file))
        }
        ImageRef::Registry(rr) => crate::registry::open(rr, &platform, strict, opts),
    }
}

/// `r` as the user wrote it, near enough for a message.
fn describe(r: &ImageRef) -> String {
    match r {
        ImageRef::Layout { dir, .. } => format!("oci:{}", dir.display()),
        ImageRef::OciArchive { file, .. } => format!("oci-archive:{}", file.display()),
        ImageRef::DockerArchive { file, .. } => format!("docker-archive:{}", file.display()),
        ImageRef::Registry(rr) => format!("docker://{}/{}", rr.registry_name, rr.repository),
    }
}

fn check_layout_marker(dir: &Path) -> Result<()> {
    let p = dir.join("oci-layout");
    let bytes = read_file_capped(&p, 64 << 10).map_err(|e| {
        Error::invalid(format!("not an OCI image layout (no readable oci-layout file: {})", e.message())).with_file(dir)
    })?;
    let v: serde_json::Value = parse_json(&bytes, "oci-layout")?;
    match v.get("imageLayoutVersion").and_then(|x| x.as_str()) {
        Some(ver) if ver.starts_with("1.") => Ok(()),
        other => Err(Error::unsupported(format!("OCI layout version {other:?} (only 1.x is read)")).with_file(&p)),
    }
}

fn read_file_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out).map_err(|e| Error::io("cannot read", e).with_file(path))?;
    if out.len() as u64 > max {
        return Err(Error::out_of_bounds(format!("larger than the {max}-byte limit")).with_file(path));
    }
    Ok(out)
}

/// Picks the manifest an OCI layout's `index.json` names by `reference`, then the
/// platform's manifest when that is an index.
pub(crate) fn from_layout_index(
    store: Arc<dyn BlobStore>,
    index_bytes: &[u8],
    reference: Option<&str>,
    platform: &Platform,
    strict: bool,
    label: String,
    opts: &OpenOptions,
) -> Result<Image> {
    let index: Index = parse_json(index_bytes, "index.json")?;
    let names = || {
        let v: Vec<String> = index.manifests.iter().filter_map(|m| m.annotations.get(REF_NAME).cloned()).collect();
        if v.is_empty() { "none".to_string() } else { v.join(", ") }
    };
    let chosen: Descriptor = match reference {
        Some(r) if r.starts_with("sha256:") || r.starts_with("sha512:") || r.starts_with('@') => {
            let d = Digest::parse(r.trim_start_matches('@'))?;
            match index.manifests.iter().find(|m| m.digest == d) {
                Some(m) => m.clone(),
                None => {
                    let size = store
                        .stored_size(&d)
                        .ok_or_else(|| Error::invalid(format!("no manifest {d} in the layout")))?;
                    Descriptor {
                        media_type: String::new(),
                        digest: d,
                        size,
                        urls: vec![],
                        annotations: BTreeMap::new(),
                        platform: None,
                    }
                }
            }
        }
        Some(r) => {
            let found: Vec<&Descriptor> =
                index.manifests.iter().filter(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(r)).collect();
            match found.as_slice() {
                [] => {
                    return Err(Error::invalid(format!("no image named {r:?} in the layout (it has: {})", names()))
                        .with_field("reference"));
                }
                [one] => (*one).clone(),
                several => select_platform(several, platform, lone(strict, opts), "the layout")?.clone(),
            }
        }
        None => match index.manifests.as_slice() {
            [] => return Err(Error::invalid("the layout's index.json lists no image")),
            [one] => one.clone(),
            several if several.iter().all(|m| m.platform.is_some()) => {
                let refs: Vec<&Descriptor> = several.iter().collect();
                select_platform(&refs, platform, lone(strict, opts), "the layout")?.clone()
            }
            _ => {
                return Err(Error::argument(format!(
                    "the layout holds {} images: name one with :REF (it has: {})",
                    index.manifests.len(),
                    names()
                )));
            }
        },
    };
    from_descriptor(store, chosen, platform, strict, label, opts)
}

/// Follows `desc` through indexes to one manifest, then reads its config.
pub(crate) fn from_descriptor(
    store: Arc<dyn BlobStore>,
    mut desc: Descriptor,
    platform: &Platform,
    strict: bool,
    label: String,
    opts: &OpenOptions,
) -> Result<Image> {
    for _ in 0..=MAX_INDEX_DEPTH {
        let bytes = read_verified(store.as_ref(), &desc, MAX_MANIFEST_BYTES, "manifest")?;
        let mt = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
        match doc_kind(mt, &bytes)? {
            DocKind::Index => {
                let index: Index = parse_json(&bytes, "image index")?;
                let all: Vec<&Descriptor> = index.manifests.iter().collect();
                let what = format!("index {}", desc.digest.short());
                desc = select_platform(&all, platform, lone(strict, opts), &what)?.clone();
            }
            DocKind::Manifest => {
                let manifest: Manifest = parse_json(&bytes, "manifest")?;
                return from_manifest(store, desc.digest, false, manifest, platform, strict, label, opts);
            }
        }
    }
    Err(Error::invalid(format!("image indexes nest deeper than {MAX_INDEX_DEPTH}")))
}

/// Whether an index's lone image is taken whatever its platform: asked for by
/// [`OpenOptions::lone_platform`], and no platform was named.
pub(crate) fn lone(strict: bool, opts: &OpenOptions) -> bool {
    !strict && opts.lone_platform
}

/// The entry of an index for `want` (with `lone`, else its only usable entry), or an
/// error listing what the index offers.
pub(crate) fn select_platform<'a>(
    entries: &[&'a Descriptor],
    want: &Platform,
    lone: bool,
    what: &str,
) -> Result<&'a Descriptor> {
    let usable: Vec<&&Descriptor> = entries
        .iter()
        .filter(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown" && p.architecture != "unknown"))
        .collect();
    if let [only] = usable.as_slice()
        && only.platform.is_none()
    {
        return Ok(only);
    }
    if let Some(d) = usable.iter().find(|d| d.platform.as_ref().is_some_and(|p| p.matches(want))) {
        return Ok(d);
    }
    if let [only] = usable.as_slice()
        && lone
    {
        return Ok(only);
    }
    let offered: Vec<String> = usable
        .iter()
        .map(|d| d.platform.as_ref().map_or_else(|| "(no platform)".to_string(), |p| p.to_string()))
        .collect();
    Err(Error::invalid(format!(
        "{what} has no image for {want}; choose one with --platform: {}",
        if offered.is_empty() { "it lists none".to_string() } else { offered.join(", ") }
    ))
    .with_field("platform"))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn from_manifest(
    store: Arc<dyn BlobStore>,
    manifest_digest: Digest,
    manifest_synthesized: bool,
    manifest: Manifest,
    platform: &Platform,
    strict: bool,
    source: String,
    opts: &OpenOptions,
) -> Result<Image> {
    if manifest.schema_version != 2 {
        return Err(Error::unsupported(format!("manifest schema version {}", manifest.schema_version)));
    }
    match manifest.config.media_type.as_str() {
        media::OCI_CONFIG | media::DOCKER_CONFIG => {}
        other => {
            return Err(Error::unsupported(format!(
                "manifest config of media type {other:?} is not a container image (an artifact?)"
            )));
        }
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(Error::out_of_bounds(format!(
            "manifest has {} layers (limit {MAX_LAYERS})",
            manifest.layers.len()
        )));
    }
    let config_bytes = read_verified(store.as_ref(), &manifest.config, MAX_CONFIG_BYTES, "image config")?;
    let config: ImageConfig = parse_json(&config_bytes, "image config")?;
    let diff_ids = &config.rootfs.diff_ids;
    if !diff_ids.is_empty() && diff_ids.len() != manifest.layers.len() {
        return Err(Error::corrupt(format!(
            "image config lists {} but the manifest has {}",
            count(diff_ids.len(), "layer diff_id", "layer diff_ids"),
            count(manifest.layers.len(), "layer", "layers")
        ))
        .with_field("diff_ids"));
    }
    if strict
        && (config.os != platform.os || crate::spec::normalize_arch(&config.architecture) != platform.architecture)
    {
        return Err(Error::invalid(format!(
            "the image is for {}/{}, not the requested {platform}",
            config.os, config.architecture
        ))
        .with_field("platform"));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, d) in manifest.layers.iter().enumerate() {
        let compression = Compression::of_layer(&d.media_type)?;
        layers.push(Layer { descriptor: d.clone(), compression, diff_id: diff_ids.get(i).cloned() });
    }
    Ok(Image {
        source,
        manifest_digest,
        manifest_synthesized,
        config_digest: manifest.config.digest.clone(),
        manifest,
        config,
        layers,
        store,
        limits: opts.limits,
        warnings: Vec::new(),
        signatures: Vec::new(),
    })
}

/// The regular files (and symbolic links) of an uncompressed tar, indexed by name.
#[derive(Debug)]
pub(crate) struct Archive {
    file: Source,
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

/// `./a//b` -> `a/b`.
fn clean(name: &[u8]) -> String {
    String::from_utf8_lossy(name).split('/').filter(|c| !c.is_empty() && *c != ".").collect::<Vec<_>>().join("/")
}

impl Archive {
    pub(crate) fn index(path: &Path) -> Result<Self> {
        let image = ImageFile::open(path)?;
        let handle = image.file().try_clone().map_err(|e| Error::io("cannot open", e).with_file(path))?;
        let file: Source = Arc::new(image);
        let mut tar = diskcast_tar::TarReader::from_file(handle, path.display().to_string())?;
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        while let Some(e) = tar.next_member()? {
            if members.len() + links.len() >= MAX_ARCHIVE_MEMBERS {
                return Err(Error::out_of_bounds(format!("archive has more than {MAX_ARCHIVE_MEMBERS} members")));
            }
            let name = clean(&e.path);
            match &e.kind {
                diskcast_tar::MemberKind::File if e.sparse.is_none() => {
                    members.insert(name, (e.data_offset, e.data_len));
                }
                diskcast_tar::MemberKind::Symlink(link) => {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let target = String::from_utf8_lossy(link);
                    let joined = if target.starts_with('/') { target.to_string() } else { format!("{dir}/{target}") };
                    links.insert(name, normalize(&joined));
                }
                diskcast_tar::MemberKind::HardLink(link) => {
                    links.insert(name, clean(link));
                }
                _ => {}
            }
        }
        Ok(Archive { file, path: path.to_path_buf(), members, links })
    }

    /// Where member `name` is, following links inside the archive (a few hops).
    fn locate(&self, name: &str) -> Option<(u64, u64)> {
        let mut n = clean(name.as_bytes());
        for _ in 0..8 {
            if let Some(m) = self.members.get(&n) {
                return Some(*m);
            }
            n = self.links.get(&n)?.clone();
        }
        None
    }

    fn read_member(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some((off, len)) = self.locate(name) else { return Ok(None) };
        if len > max {
            return Err(Error::out_of_bounds(format!("archive member {name} is {len} bytes (limit {max})")));
        }
        let mut v = Vec::new();
        RangeReader::new(self.file.clone(), off, len)
            .read_to_end(&mut v)
            .map_err(|e| Error::io(format!("cannot read {name}"), e).with_file(&self.path))?;
        Ok(Some(v))
    }

    /// Every `blobs/ALG/HEX` member as a blob store.
    fn blob_store(&self) -> ArchiveStore {
        let mut map = HashMap::new();
        for name in self.members.keys().chain(self.links.keys()) {
            if let Some(d) = blob_digest(name)
                && let Some(loc) = self.locate(name)
            {
                map.insert(d, loc);
            }
        }
        ArchiveStore::new(self.file.clone(), map)
    }
}

/// Resolves `.` and `..` in a path inside an archive (never above its root).
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// `blobs/sha256/HEX` -> its digest.
fn blob_digest(name: &str) -> Option<Digest> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// `docker save` output: the legacy layout (`manifest.json`, `HEX.json` config,
/// `ID/layer.tar`) and the OCI-style one of Docker 25+ (`manifest.json` naming
/// `blobs/sha256/...` beside an `index.json`).
fn open_docker_archive(
    path: &Path,
    reference: Option<&str>,
    platform: &Platform,
    strict: bool,
    opts: &OpenOptions,
) -> Result<Image> {
    let archive = Archive::index(path)?;
    let bytes = archive
        .read_member("manifest.json", MAX_MANIFEST_BYTES)?
        .ok_or_else(|| Error::invalid("not a docker save archive: no manifest.json inside"))?;
    let entries: Vec<DockerArchiveEntry> = parse_json(&bytes, "manifest.json")?;
    let tags = |e: &DockerArchiveEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(r) if r.starts_with('@') => {
            let i: usize =
                r[1..].parse().map_err(|_| Error::argument(format!("docker-archive reference {r:?}: expected @N")))?;
            entries.get(i).ok_or_else(|| {
                Error::argument(format!("the archive has {}, no @{i}", count(entries.len(), "image", "images")))
            })?
        }
        Some(r) => {
            let want = strip_hub(r);
            entries.iter().find(|e| tags(e).iter().any(|t| strip_hub(t) == want)).ok_or_else(|| {
                let all: Vec<String> = entries.iter().flat_map(tags).collect();
                Error::invalid(format!("no image tagged {r:?} in the archive (it has: {})", all.join(", ")))
                    .with_field("reference")
            })?
        }
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(Error::invalid("manifest.json lists no image")),
            many => {
                let all: Vec<String> = many.iter().flat_map(tags).collect();
                return Err(Error::argument(format!(
                    "the archive holds {} images: name one with :REPO:TAG or :@N (it has: {})",
                    many.len(),
                    all.join(", ")
                )));
            }
        },
    };
    let label = format!("docker-archive:{}", path.display());
    let store = archive.blob_store_with_paths(entry)?;
    // Docker 25+ also writes the real manifests: use the one with this config.
    if let Some(idx) = archive.read_member("index.json", MAX_MANIFEST_BYTES)?
        && let Ok(found) = find_manifest_for_config(&store, &idx, &store.config_digest, platform)
    {
        let (d, m) = found;
        return from_manifest(Arc::new(store.inner), d, false, m, platform, strict, label, opts);
    }
    let DockerStore { inner, config_digest, config_size, layers } = store;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::DOCKER_MANIFEST.to_string()),
        config: Descriptor {
            media_type: media::DOCKER_CONFIG.to_string(),
            digest: config_digest,
            size: config_size,
            urls: vec![],
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers,
        annotations: BTreeMap::new(),
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| Error::invalid(format!("cannot encode manifest: {e}")))?;
    from_manifest(Arc::new(inner), Digest::sha256(&json), true, manifest, platform, strict, label, opts)
}

fn strip_hub(r: &str) -> &str {
    r.strip_prefix("docker.io/library/").or_else(|| r.strip_prefix("docker.io/")).unwrap_or(r)
}

struct DockerStore {
    inner: ArchiveStore,
    config_digest: Digest,
    config_size: u64,
    layers: Vec<Descriptor>,
}

impl Archive {
    /// The blobs of one `manifest.json` entry, keyed by digest: the config's from its
    /// name (`HEX.json`, `blobs/sha256/HEX`) or its content, each layer's from its name
    /// or, for legacy `ID/layer.tar` members, from the config's diff_ids (an uncompressed
    /// layer's digest is its diff_id) or its content.
    fn blob_store_with_paths(&self, entry: &DockerArchiveEntry) -> Result<DockerStore> {
        let mut map = HashMap::new();
        for name in self.members.keys().chain(self.links.keys()) {
            if let Some(d) = blob_digest(name)
                && let Some(loc) = self.locate(name)
            {
                map.insert(d, loc);
            }
        }
        let (coff, clen) = self
            .locate(&entry.config)
            .ok_or_else(|| Error::corrupt(format!("config {} named by manifest.json is missing", entry.config)))?;
        let cbytes = self
            .read_member(&entry.config, MAX_CONFIG_BYTES)?
            .ok_or_else(|| Error::corrupt(format!("config {} is missing", entry.config)))?;
        let named = name_digest(&entry.config);
        let config_digest = match named {
            Some(d) => {
                d.verify(&cbytes, &format!("config {}", entry.config))?;
                d
            }
            None => Digest::sha256(&cbytes),
        };
        map.insert(config_digest.clone(), (coff, clen));
        let config: ImageConfig = parse_json(&cbytes, "image config")?;
        if entry.layers.len() > MAX_LAYERS {
            return Err(Error::out_of_bounds(format!("{} layers (limit {MAX_LAYERS})", entry.layers.len())));
        }
        let mut layers = Vec::new();
        for (i, lname) in entry.layers.iter().enumerate() {
            let (off, len) = self
                .locate(lname)
                .ok_or_else(|| Error::corrupt(format!("layer {lname} named by manifest.json is missing")))?;
            let mut head = [0u8; 8];
            let n = RangeReader::new(self.file.clone(), off, len).read(&mut head).map_err(|e| from_io(e, lname))?;
            let compression = sniff(&head[..n]).map_err(|e| e.with_file(lname))?;
            let digest = match (name_digest(lname), compression, config.rootfs.diff_ids.get(i)) {
                (Some(d), _, _) => d,
                (None, Compression::None, Some(diff)) => diff.clone(),
                _ => {
                    // A compressed layer under a legacy name: its digest is its content's.
                    let mut h = Hasher::new(crate::digest::Algorithm::Sha256);
                    let mut r = RangeReader::new(self.file.clone(), off, len);
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = r.read(&mut buf).map_err(|e| from_io(e, lname))?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                    h.finish()
                }
            };
            map.insert(digest.clone(), (off, len));
            let media_type = match compression {
                Compression::None => media::OCI_LAYER,
                Compression::Gzip => media::DOCKER_LAYER_GZIP,
                Compression::Zstd => media::OCI_LAYER_ZSTD,
            };
            let media_type = if compression == Compression::None {
                "application/vnd.docker.image.rootfs.diff.tar"
            } else {
                media_type
            };
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest,
                size: len,
                urls: vec![],
                annotations: BTreeMap::new(),
                platform: None,
            });
        }
        Ok(DockerStore { inner: ArchiveStore::new(self.file.clone(), map), config_digest, config_size: clen, layers })
    }
}

/// The digest a member's name spells: `blobs/sha256/HEX`, `HEX.json`, `HEX.tar`,
/// `sha256:HEX`.
fn name_digest(name: &str) -> Option<Digest> {
    if let Some(d) = blob_digest(&clean(name.as_bytes())) {
        return Some(d);
    }
    let base = name.rsplit('/').next()?;
    let stem = base.strip_suffix(".json").or_else(|| base.strip_suffix(".tar")).unwrap_or(base);
    let stem = stem.strip_prefix("sha256:").unwrap_or(stem);
    Digest::parse(&format!("sha256:{stem}")).ok()
}

fn find_manifest_for_config(
    store: &DockerStore,
    index_bytes: &[u8],
    config: &Digest,
    platform: &Platform,
) -> Result<(Digest, Manifest)> {
    let index: Index = parse_json(index_bytes, "index.json")?;
    let mut todo: Vec<Descriptor> = index.manifests;
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        seen += 1;
        if seen > 256 {
            break;
        }
        let Ok(bytes) = read_verified(&store.inner, &d, MAX_MANIFEST_BYTES, "manifest") else { continue };
        match doc_kind(None, &bytes)? {
            DocKind::Index => {
                let i: Index = parse_json(&bytes, "image index")?;
                todo.extend(i.manifests);
            }
            DocKind::Manifest => {
                let m: Manifest = parse_json(&bytes, "manifest")?;
                if &m.config.digest == config {
                    return Ok((d.digest, m));
                }
            }
        }
    }
    let _ = platform;
    Err(Error::invalid("no manifest for this config"))
}
