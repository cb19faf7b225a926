//! Writing a tree as a single-layer container image: an OCI layout (`oci:DIR:TAG`, added
//! to an existing layout or a new one), an OCI archive (`oci-archive:FILE:TAG`) or a
//! `docker load`-able tarball (`docker-archive:FILE:REPO:TAG`), or pushed to a registry
//! (`docker://REGISTRY/REPO:TAG`): the OCI image is built in one place
//! ([`OciImage`]) and stored by each of them.
//!
//! The layer is the tree as a PAX tar (crates/tar's writer), gzip-compressed on every
//! core for OCI ([`crate::pargz`]) and plain for Docker archives, written once while both its digests are computed. With
//! `SOURCE_DATE_EPOCH` set, the config's dates are that time and file times newer than
//! it are clamped to it, so the same tree gives the same image digest.

use crate::digest::{Algorithm, Digest, Hasher};
use crate::source::ImageRef;
use crate::spec::{Descriptor, History, ImageConfig, Index, Manifest, REF_NAME, RootFs, RunConfig, media};
use diskcast_block::output::{Interruptible, Output, OutputFiles, parent_dir, scratch};
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_tree::{Content, FileData, Meta, NodeId, Timestamp, Tree};
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What goes into the image config, and the threads compressing the layer. No `Default`:
/// the thread count is the caller's (the CLI's `-j`), so [`WriteConfig::new`] takes it.
#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// `--arch` (Go's names; default: this machine's).
    pub architecture: Option<String>,
    /// `--entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `--cmd`.
    pub cmd: Option<Vec<String>>,
    /// `--env NAME=VALUE`.
    pub env: Vec<String>,
    /// `--workdir`.
    pub working_dir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--label KEY=VALUE`.
    pub labels: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`, or the current time.
    pub epoch: u64,
    /// True when `epoch` came from `SOURCE_DATE_EPOCH` (clamp file times to it).
    pub reproducible: bool,
    /// How to reach the registry of a `docker://` target.
    pub registry: crate::registry::RegistryOptions,
    /// Threads gzipping the layer (at least 1).
    pub threads: usize,
    /// Set by Ctrl-C: the layer stops at its next write, nothing is put in place.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl WriteConfig {
    /// An empty config (this machine's architecture, epoch 0), gzipped by `threads`.
    pub fn new(threads: usize) -> Self {
        WriteConfig {
            architecture: None,
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            labels: BTreeMap::new(),
            epoch: 0,
            reproducible: false,
            registry: crate::registry::RegistryOptions::default(),
            threads,
            cancel: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct WriteReport {
    /// The manifest digest (the image's identity for OCI outputs).
    pub manifest_digest: Digest,
    /// The layer blob's digest and size.
    pub layer: Descriptor,
    /// The uncompressed layer's digest.
    pub diff_id: Digest,
    /// What the tar writer could not store, one message each.
    pub skipped: Vec<String>,
    /// For a `docker://` target: what was uploaded.
    pub push: Option<crate::registry::PushReport>,
}

/// A writer that hashes what passes through it.
struct HashWrite<W> {
    inner: W,
    hasher: Hasher,
    n: u64,
}

impl<W: Write> Write for HashWrite<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A copy of `tree` with every time after `epoch` set to `epoch`.
fn clamp_times(tree: &Tree, epoch: u64) -> Tree {
    let mut t = tree.clone();
    let max = Timestamp::from_secs(i64::try_from(epoch).unwrap_or(i64::MAX));
    let ids: Vec<NodeId> = tree.walk(NodeId::ROOT).map(|(_, id)| id).collect();
    for id in ids {
        let m = &mut t.node_mut(id).meta;
        for ts in [Some(&mut m.mtime), m.atime.as_mut(), m.ctime.as_mut()].into_iter().flatten() {
            if *ts > max {
                *ts = max;
            }
        }
    }
    t
}

/// Writes the layer tar of `tree` to `out`, gzip-compressed when `gzip` (on
/// `cfg.threads`, stopped by `cfg.cancel`); returns the blob's digest and size, the
/// diff_id, and what the tar could not hold.
fn write_layer(
    tree: &Tree,
    out: &mut dyn Write,
    gzip: bool,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<(Digest, u64, Digest, Vec<String>)> {
    let mut guarded = Interruptible::new(out, cfg.cancel.clone());
    layer_bytes(tree, &mut guarded, gzip, cfg.threads, progress).map_err(|e| guarded.stopped(e))
}

fn layer_bytes(
    tree: &Tree,
    out: &mut dyn Write,
    gzip: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<(Digest, u64, Digest, Vec<String>)> {
    let mut blob = HashWrite { inner: out, hasher: Hasher::new(Algorithm::Sha256), n: 0 };
    let (diff, skipped) = if gzip {
        let enc = crate::pargz::ParGzWriter::new(&mut blob, 6, threads);
        let mut plain = HashWrite { inner: enc, hasher: Hasher::new(Algorithm::Sha256), n: 0 };
        let report = diskcast_tar::write_tar(tree, &mut plain, progress)?;
        let HashWrite { inner: enc, hasher, .. } = plain;
        enc.finish().map_err(|e| Error::io("cannot compress the layer", e))?;
        (hasher.finish(), report.skipped)
    } else {
        let report = diskcast_tar::write_tar(tree, &mut blob, progress)?;
        (blob.hasher.clone().finish(), report.skipped)
    };
    blob.flush().map_err(|e| Error::io("cannot write the layer", e))?;
    let n = blob.n;
    Ok((blob.hasher.finish(), n, diff, skipped))
}

fn json(v: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::invalid(format!("cannot encode JSON: {e}")))
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: Digest::sha256(bytes),
        size: bytes.len() as u64,
        urls: vec![],
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// The config of a one-layer image.
/// The media types of a one-layer image we write.
struct OneLayer {
    manifest: &'static str,
    config: &'static str,
    layer: &'static str,
}

/// An OCI image with a gzip layer (layouts and OCI archives).
const OCI_GZIP: OneLayer =
    OneLayer { manifest: media::OCI_MANIFEST, config: media::OCI_CONFIG, layer: media::OCI_LAYER_GZIP };

/// A Docker v2 schema 2 image with a plain tar layer (`docker save` archives).
const DOCKER_TAR: OneLayer = OneLayer {
    manifest: media::DOCKER_MANIFEST,
    config: media::DOCKER_CONFIG,
    layer: "application/vnd.docker.image.rootfs.diff.tar",
};

/// The descriptor of the one layer (`digest`, `size`) and the schema-2 manifest over it
/// and `config`.
fn one_layer_manifest(types: &OneLayer, config: &[u8], digest: Digest, size: u64) -> (Descriptor, Manifest) {
    let layer = Descriptor { media_type: types.layer.into(), digest, size, ..descriptor("", b"") };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(types.manifest.into()),
        config: descriptor(types.config, config),
        layers: vec![layer.clone()],
        annotations: BTreeMap::new(),
    };
    (layer, manifest)
}

fn config_json(cfg: &WriteConfig, diff_id: &Digest, docker: bool) -> Result<Vec<u8>> {
    let created = rfc3339(cfg.epoch);
    let run = RunConfig {
        user: cfg.user.clone(),
        env: (!cfg.env.is_empty()).then(|| cfg.env.clone()),
        entrypoint: cfg.entrypoint.clone(),
        cmd: cfg.cmd.clone(),
        working_dir: cfg.working_dir.clone(),
        labels: (!cfg.labels.is_empty()).then(|| cfg.labels.clone()),
        ..RunConfig::default()
    };
    let arch = cfg.architecture.clone().unwrap_or_else(|| crate::spec::Platform::host().architecture);
    let c = ImageConfig {
        created: Some(created.clone()),
        author: None,
        architecture: crate::spec::normalize_arch(&arch).to_string(),
        os: "linux".into(),
        variant: None,
        config: Some(run),
        rootfs: RootFs { kind: "layers".into(), diff_ids: vec![diff_id.clone()] },
        history: vec![History {
            created: Some(created),
            created_by: Some(format!("diskcast convert ({})", if docker { "docker-archive" } else { "oci" })),
            ..History::default()
        }],
    };
    json(&c)
}

/// The OCI single-layer image of a tree, with its layer in a temporary file: what
/// `oci-archive:` and `docker://` store (`oci:` writes the layer straight into the
/// layout, then calls [`OciImage::from_layer`] too).
struct OciImage {
    config: Vec<u8>,
    manifest: Vec<u8>,
    manifest_digest: Digest,
    layer: Descriptor,
    diff_id: Digest,
    skipped: Vec<String>,
}

impl OciImage {
    /// The config and manifest over a written layer.
    fn from_layer(cfg: &WriteConfig, digest: Digest, size: u64, diff_id: Digest, skipped: Vec<String>) -> Result<Self> {
        let config = config_json(cfg, &diff_id, false)?;
        let (layer, manifest) = one_layer_manifest(&OCI_GZIP, &config, digest, size);
        let manifest = json(&manifest)?;
        Ok(OciImage { manifest_digest: Digest::sha256(&manifest), config, manifest, layer, diff_id, skipped })
    }

    /// Writes the layer to an unnamed file in `dir` and builds the image over it.
    fn build(tree: &Tree, dir: &Path, cfg: &WriteConfig, progress: &dyn Progress) -> Result<(ScratchLayer, Self)> {
        let (tmp, ldigest, lsize, diff, skipped) = layer_file(tree, dir, true, cfg, progress)?;
        Ok((tmp, Self::from_layer(cfg, ldigest, lsize, diff, skipped)?))
    }

    fn config_digest(&self) -> Digest {
        Digest::sha256(&self.config)
    }

    fn report(self, push: Option<crate::registry::PushReport>) -> WriteReport {
        WriteReport {
            manifest_digest: self.manifest_digest,
            layer: self.layer,
            diff_id: self.diff_id,
            skipped: self.skipped,
            push,
        }
    }
}

/// Where an image is written, opened before any input is read: an archive target
/// (`oci-archive:`, `docker-archive:`) holds its [`Output`], the one output path of every
/// writing command (refused when it is one of the inputs or in use, locked, put in place
/// only when complete). A layout's blobs and a push need no target file.
#[derive(Debug)]
pub struct ImageTarget {
    dst: ImageRef,
    archive: Option<Output>,
}

impl ImageTarget {
    /// Checks and (an archive) locks `dst` as the output of a command reading `inputs`.
    pub fn open<P: AsRef<Path>>(dst: ImageRef, inputs: &[P]) -> Result<Self> {
        let archive = match &dst {
            ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. } => {
                Some(Output::open(file, inputs)?)
            }
            ImageRef::Layout { .. } | ImageRef::Registry(_) => None,
        };
        Ok(ImageTarget { dst, archive })
    }

    /// The image reference.
    pub fn image_ref(&self) -> &ImageRef {
        &self.dst
    }
}

/// Writes `tree` as the image `target` names.
pub fn write_image(
    tree: &Tree,
    target: ImageTarget,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let clamped;
    let tree = if cfg.reproducible {
        clamped = clamp_times(tree, cfg.epoch);
        &clamped
    } else {
        tree
    };
    match (&target.dst, target.archive) {
        (ImageRef::Layout { dir, reference }, _) => {
            write_layout(tree, dir, reference.as_deref().unwrap_or("latest"), cfg, progress)
        }
        (ImageRef::OciArchive { file, reference }, Some(out)) => {
            write_oci_archive(tree, file, out, reference.as_deref().unwrap_or("latest"), cfg, progress)
        }
        (ImageRef::DockerArchive { file, reference }, Some(out)) => {
            write_docker_archive(tree, file, out, reference.as_deref(), cfg, progress)
        }
        (ImageRef::Registry(r), _) => push_tree(tree, r, cfg, progress),
        (ImageRef::OciArchive { file, .. } | ImageRef::DockerArchive { file, .. }, None) => {
            Err(Error::argument("an archive target is written through its Output (ImageTarget::open)").with_file(file))
        }
    }
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > 128 || tag.contains(['/', '\0', '\n']) {
        return Err(Error::argument(format!("image reference {tag:?} is not a valid tag")));
    }
    Ok(())
}

/// One blob file of a layout `dir`, written unnamed and linked in under its digest (an
/// existing blob of that name holds the same bytes and stays): a crash leaves nothing
/// in `blobs/` that `umoci gc` or a reader would trip on.
fn put_blob(dir: &Path, blobs: &Path, bytes: &[u8]) -> Result<Digest> {
    let d = Digest::sha256(bytes);
    let path = blobs.join(d.hex());
    if !path.exists() {
        let outputs = OutputFiles::new();
        let f = outputs.create_unnamed(blobs, dir, &path)?;
        f.write_all_at(bytes, 0)?;
        outputs.name(&f, &path, true)?;
        outputs.commit()?;
    }
    Ok(d)
}

fn write_layout(tree: &Tree, dir: &Path, tag: &str, cfg: &WriteConfig, progress: &dyn Progress) -> Result<WriteReport> {
    check_tag(tag)?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io("cannot create the layout", e).with_file(dir))?;
    let marker = dir.join("oci-layout");
    if !marker.exists() {
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(|e| Error::io("cannot write", e).with_file(&marker))?;
    }
    // The layer is written unnamed and linked in under its digest when done.
    let outputs = OutputFiles::new();
    let f = outputs.create_unnamed(&blobs, dir, &blobs.join("layer"))?;
    let (ldigest, lsize, diff, skipped) = {
        let mut w = BufWriter::with_capacity(1 << 20, f.file());
        let r = write_layer(tree, &mut w, true, cfg, progress)?;
        w.flush().map_err(|e| Error::io("cannot write the layer", e).with_file(dir))?;
        r
    };
    outputs.name(&f, &blobs.join(ldigest.hex()), true)?;
    outputs.commit()?;
    let image = OciImage::from_layer(cfg, ldigest, lsize, diff, skipped)?;
    put_blob(dir, &blobs, &image.config)?;
    let mbytes = image.manifest.clone();
    put_blob(dir, &blobs, &mbytes)?;
    // index.json: this tag replaces an older image of the same name, others stay.
    let index_path = dir.join("index.json");
    let mut index: Index = match std::fs::read(&index_path) {
        Ok(b) => crate::spec::parse_json(&b, "index.json")?,
        Err(_) => Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            manifests: vec![],
            annotations: BTreeMap::new(),
        },
    };
    index.manifests.retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    let mut d = descriptor(media::OCI_MANIFEST, &mbytes);
    d.annotations.insert(REF_NAME.into(), tag.into());
    index.manifests.push(d);
    let outputs = OutputFiles::new();
    let f = outputs.create(&index_path)?;
    f.write_all_at(&json(&index)?, 0)?;
    outputs.commit()?;
    Ok(image.report(None))
}

/// A tree of files for an archive: every entry owned by root, dated `epoch`.
struct ArchiveTree {
    tree: Tree,
    meta: Meta,
}

impl ArchiveTree {
    fn new(epoch: u64) -> Self {
        let mtime = Timestamp::from_secs(i64::try_from(epoch).unwrap_or(0));
        ArchiveTree { tree: Tree::new(Meta::new(0o755, mtime)), meta: Meta::new(0o644, mtime) }
    }

    fn add(&mut self, path: &str, data: FileData) -> Result<()> {
        self.tree.put_file(path.as_bytes(), data, self.meta.clone())?;
        Ok(())
    }

    /// Writes the archive through the one output path: a file appears complete or not
    /// at all; a pipe or character device is written in place; Ctrl-C stops it.
    fn write(self, out: Output, cancel: Option<Arc<AtomicBool>>) -> Result<()> {
        out.write_stream(cancel, |w| {
            diskcast_tar::write_tar(&self.tree, w, &diskcast_block::progress::NoProgress).map(|_| ())
        })
    }
}

/// Writes the layer to an unnamed file in `dir` (it never appears there, and vanishes
/// with its last handle, even on `kill -9`); returns it with the digests.
fn layer_file(
    tree: &Tree,
    dir: &Path,
    gzip: bool,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<(ScratchLayer, Digest, u64, Digest, Vec<String>)> {
    let f = scratch(dir, &dir.join("layer"))?;
    let mut w = BufWriter::with_capacity(1 << 20, &f);
    let (d, n, diff, skipped) = write_layer(tree, &mut w, gzip, cfg, progress)?;
    w.flush().map_err(|e| Error::io("cannot write the layer", e).with_file(dir))?;
    drop(w);
    Ok((ScratchLayer(Arc::new(f)), d, n, diff, skipped))
}

/// A layer in an unnamed file, read back by offset: as the content of the archive member
/// that stores it, or front to back for an upload.
#[derive(Debug, Clone)]
struct ScratchLayer(Arc<std::fs::File>);

impl ScratchLayer {
    fn content(&self) -> Content {
        Content::Reader(Arc::new(self.clone()))
    }

    fn reader(&self) -> Box<dyn std::io::Read + Send> {
        Box::new(ScratchReader { file: self.0.clone(), pos: 0 })
    }
}

impl diskcast_tree::ContentRead for ScratchLayer {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, offset).map_err(|e| Error::io("cannot read the layer back", e).with_offset(offset))
    }
}

/// Front-to-back reads of a [`ScratchLayer`] with a cursor of their own.
struct ScratchReader {
    file: Arc<std::fs::File>,
    pos: u64,
}

impl std::io::Read for ScratchReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += diskcast_layout::u64_from_usize(n);
        Ok(n)
    }
}

fn write_oci_archive(
    tree: &Tree,
    file: &Path,
    out: Output,
    tag: &str,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    check_tag(tag)?;
    let (tmp, image) = OciImage::build(tree, parent_dir(file), cfg, progress)?;
    let mut d = descriptor(media::OCI_MANIFEST, &image.manifest);
    d.annotations.insert(REF_NAME.into(), tag.into());
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: vec![d.clone()],
        annotations: BTreeMap::new(),
    };
    let mut a = ArchiveTree::new(cfg.epoch);
    a.add("oci-layout", FileData::inline(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()))?;
    a.add("index.json", FileData::inline(json(&index)?))?;
    a.add(&format!("blobs/sha256/{}", image.config_digest().hex()), FileData::inline(image.config.clone()))?;
    a.add(&format!("blobs/sha256/{}", d.digest.hex()), FileData::inline(image.manifest.clone()))?;
    a.add(
        &format!("blobs/sha256/{}", image.layer.digest.hex()),
        FileData { size: image.layer.size, content: tmp.content() },
    )?;
    a.write(out, cfg.cancel.clone())?;
    Ok(image.report(None))
}

/// Builds the OCI image (its layer in a temporary file in `$TMPDIR`) and pushes it.
fn push_tree(
    tree: &Tree,
    r: &crate::source::RegistryRef,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    if let crate::source::Reference::Tag(t) = &r.reference {
        check_tag(t)?;
    }
    let (tmp, image) = OciImage::build(tree, &std::env::temp_dir(), cfg, progress)?;
    let open_layer = || -> Result<Box<dyn std::io::Read + Send>> { Ok(tmp.reader()) };
    let config = image.config.clone();
    let open_config =
        || -> Result<Box<dyn std::io::Read + Send>> { Ok(Box::new(std::io::Cursor::new(config.clone()))) };
    let blobs = [
        crate::registry::PushBlob { descriptor: image.layer.clone(), open: &open_layer },
        crate::registry::PushBlob { descriptor: descriptor(media::OCI_CONFIG, &image.config), open: &open_config },
    ];
    let pushed = crate::registry::push(r, &cfg.registry, &blobs, &image.manifest, media::OCI_MANIFEST, progress)?;
    drop(tmp);
    Ok(image.report(Some(pushed)))
}

fn write_docker_archive(
    tree: &Tree,
    file: &Path,
    out: Output,
    reference: Option<&str>,
    cfg: &WriteConfig,
    progress: &dyn Progress,
) -> Result<WriteReport> {
    let (tmp, ldigest, lsize, diff, skipped) = layer_file(tree, parent_dir(file), false, cfg, progress)?;
    let config = config_json(cfg, &diff, true)?;
    let cdigest = Digest::sha256(&config);
    let repo_tags: Vec<String> = match reference {
        Some(r) => {
            let tagged = if r.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                r.to_string()
            } else {
                format!("{r}:latest")
            };
            vec![tagged]
        }
        None => vec![],
    };
    let entry = serde_json::json!([{
        "Config": format!("{}.json", cdigest.hex()),
        "RepoTags": repo_tags,
        "Layers": [format!("{}.tar", diff.hex())],
    }]);
    let mut a = ArchiveTree::new(cfg.epoch);
    a.add(&format!("{}.json", cdigest.hex()), FileData::inline(config.clone()))?;
    a.add(&format!("{}.tar", diff.hex()), FileData { size: lsize, content: tmp.content() })?;
    a.add("manifest.json", FileData::inline(json(&entry)?))?;
    a.write(out, cfg.cancel.clone())?;
    // The manifest a registry would get for this image (Docker v2 schema 2).
    let (layer, manifest) = one_layer_manifest(&DOCKER_TAR, &config, ldigest, lsize);
    Ok(WriteReport { manifest_digest: Digest::sha256(&json(&manifest)?), layer, diff_id: diff, skipped, push: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
