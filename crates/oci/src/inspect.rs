//! What an image is made of: its manifest, config, layers and history, and the packages
//! of its root filesystem ([`diskcast_inspect::inventory`]), each package with the layer
//! that added it. Every layer is read once (measured, its digests checked, its members
//! listed); the package databases' and os-release's bytes are kept as they pass, so the
//! database as each layer left it, and the OS, are read without decoding any layer again.
//!
//! Which layer a package belongs to:
//! - a file (a language package's metadata, a binary): the layer the flattened file
//!   comes from, i.e. the topmost layer holding its `found_in`;
//! - an OS package (dpkg, apk, rpm): the lowest layer from which, up to the top, the
//!   database lists it at the version the final image has. A package upgraded (or
//!   removed and installed again) in a later layer belongs to that later layer.
//!
//! Layers are named by their digest as the manifest lists them (what a registry serves
//! and shows, and what `skopeo inspect` lists); each layer's diff_id is in [`LayerReport`].

use crate::digest::Digest;
use crate::flatten::{ContentSink, FileSink, Flattened, Flattener, ScannedLayer, scan_all_into};
use crate::image::Image;
use crate::spec::{History, Platform, RunConfig};
use diskcast_block::Result;
use diskcast_inspect::inventory::{Inventory, MAX_PACKAGES, inventory_from, os_version, reads, scan_member};
use diskcast_inspect::{DB_FILES, Found, OS_RELEASE, packages_in};
use diskcast_tar::{Member, member_components};
use diskcast_tree::{Content, FileType, Kind, StreamSource, Tree};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most bytes of package databases kept from all layers together while they are read. A
/// Debian status file is a few MiB and an rpmdb.sqlite tens of MiB, rewritten by the
/// few layers that install packages; past this, a database is read from its layer
/// again (one more decoding of that layer), never dropped.
pub const MAX_KEPT_DB_BYTES: u64 = 1 << 30;

/// Everything `inspect` shows of a container image.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The reference it was opened from.
    pub source: String,
    /// One line saying what the source is.
    pub description: String,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// True for legacy `docker save` archives, which carry no manifest.
    pub manifest_synthesized: bool,
    /// The manifest media type.
    pub media_type: Option<String>,
    /// The config digest.
    pub config_digest: Digest,
    /// OS and architecture.
    pub platform: Platform,
    /// When the image was made.
    pub created: Option<String>,
    /// Who made it.
    pub author: Option<String>,
    /// Run-time defaults.
    pub config: RunConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerReport>,
    /// The build history, with the layer each step made.
    pub history: Vec<HistoryReport>,
    /// Totals of the flattened root filesystem.
    pub rootfs: diskcast_tree::TreeStats,
    /// The packages (each with its `layer`), the OS, and the warnings: the image's
    /// (skipped members) and the inventory's (files that could not be read).
    #[serde(flatten)]
    pub inventory: Inventory,
}

/// One layer.
#[derive(Debug, Serialize)]
pub struct LayerReport {
    /// Blob digest.
    pub digest: Digest,
    /// Media type.
    pub media_type: String,
    /// Compressed size.
    pub size: u64,
    /// Uncompressed tar size.
    pub uncompressed_size: u64,
    /// Digest of the uncompressed tar (checked).
    pub diff_id: Option<Digest>,
    /// Members of the tar.
    pub entries: usize,
    /// Whiteouts and opaque markers among them.
    pub whiteouts: usize,
    /// When the history step that made it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command of the history step that made it (`RUN ...` for a Dockerfile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Packages this layer added (see the module documentation).
    pub packages: usize,
}

/// One history step.
#[derive(Debug, Serialize)]
pub struct HistoryReport {
    /// When.
    pub created: Option<String>,
    /// The command.
    pub created_by: Option<String>,
    /// Comment.
    pub comment: Option<String>,
    /// True when the step made no layer.
    pub empty_layer: bool,
    /// Which layer (index) it made.
    pub layer: Option<usize>,
}

/// Reads every layer once, flattens, and gathers the report.
pub fn inspect(image: &Image, threads: usize) -> Result<Report> {
    let keep = KeepDatabases::default();
    let scanned = scan_all_into(image, threads, Some(&keep))?;
    let kept = keep.kept.into_inner().unwrap_or_else(|p| p.into_inner());
    let history = history(&image.config.history, image.layers.len());
    let mut flat = Flattener::new(image, &scanned)?;
    let mut layers = Vec::with_capacity(scanned.len());
    let mut db = DbHistory::default();
    for (i, (layer, s)) in image.layers.iter().zip(&scanned).enumerate() {
        flat.apply(s)?;
        db.after_layer(i, flat.tree(), &kept)?;
        let step = history.iter().find(|h| h.layer == Some(i));
        layers.push(LayerReport {
            digest: layer.descriptor.digest.clone(),
            media_type: layer.descriptor.media_type.clone(),
            size: layer.descriptor.size,
            uncompressed_size: s.uncompressed,
            diff_id: layer.diff_id.clone(),
            entries: s.entries.len(),
            whiteouts: s
                .entries
                .iter()
                .filter(|m| {
                    m.path.rsplit(|&b| b == b'/').find(|c| !c.is_empty()).is_some_and(|n| n.starts_with(b".wh."))
                })
                .count(),
            created: step.and_then(|h| h.created.clone()),
            created_by: step.and_then(|h| h.created_by.clone().or_else(|| h.comment.clone())),
            packages: 0,
        });
    }
    let Flattened { tree, warnings } = flat.finish();
    let found = match db.last.take() {
        Some(f) => f,
        None => read_databases(&tree, &kept)?,
    };
    let read_before =
        |stream: &Arc<dyn StreamSource>, offset: u64| kept.scanned.get(&(stream_key(stream), offset)).cloned();
    let read = |path: &[u8], max: u64| read_kept(&tree, &kept, path, max);
    let mut inventory = inventory_from(&tree, found, &read_before, &read)?;
    for p in &mut inventory.packages {
        let at = if matches!(p.kind.as_str(), "deb" | "apk" | "rpm") {
            db.since.get(&(p.name.clone(), p.architecture.clone().unwrap_or_default())).and_then(|(v, i)| {
                // The package as the final database lists it.
                (v == &p.version).then_some(*i)
            })
        } else {
            file_layer(&tree, &p.found_in, &scanned)
        };
        if let Some(i) = at {
            p.layer = Some(image.layers[i].descriptor.digest.to_string());
            layers[i].packages += 1;
        }
    }
    inventory.warnings.splice(0..0, warnings);
    let description = format!(
        "container image {} ({}, {}, {} layers)",
        image.source,
        image.manifest_digest.short(),
        image.platform(),
        image.layers.len()
    );
    Ok(Report {
        source: image.source.clone(),
        description,
        manifest_digest: image.manifest_digest.clone(),
        manifest_synthesized: image.manifest_synthesized,
        media_type: image.manifest.media_type.clone(),
        config_digest: image.config_digest.clone(),
        platform: image.platform(),
        created: image.config.created.clone(),
        author: image.config.author.clone(),
        config: image.config.config.clone().unwrap_or_default(),
        layers,
        history,
        rootfs: tree.stats(),
        inventory,
    })
}

/// The topmost layer holding the file `found_in` names (the archive it is in, for a
/// member of a jar): the layer its content is read from in the flattened tree.
fn file_layer(tree: &Tree, found_in: &str, scanned: &[Arc<ScannedLayer>]) -> Option<usize> {
    let file = found_in.split("!/").next().unwrap_or(found_in).trim_start_matches('/');
    let id = tree.resolve(file.as_bytes(), false).ok()?;
    let Kind::File(f) = &tree.node(id).kind else { return None };
    let stream = match &f.content {
        Content::Stream { stream, .. } => stream,
        _ => return None,
    };
    scanned.iter().rposition(|l| std::ptr::addr_eq(Arc::as_ptr(&l.stream), Arc::as_ptr(stream)))
}

/// The package database files' (and os-release's) bytes, kept as each layer is read: by layer stream and
/// member offset, the key a flattened file's content has.
#[derive(Default)]
struct KeepDatabases {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    files: Vec<KeptFile>,
    bytes: u64,
    /// The files the inventory reads (language metadata, archives, executables), each
    /// read as its layer passed: by stream address and offset, the member's path and
    /// what it holds.
    scanned: HashMap<(usize, u64), (Vec<u8>, Inventory)>,
    /// Packages in `scanned`, bounded as the inventory bounds its own.
    packages: usize,
}

/// One database file as a layer holds it: its layer's stream, its offset there.
struct KeptFile {
    stream: Arc<dyn StreamSource>,
    offset: u64,
    bytes: Vec<u8>,
}

impl Kept {
    fn get(&self, stream: &Arc<dyn StreamSource>, offset: u64) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|f| f.offset == offset && std::ptr::addr_eq(Arc::as_ptr(&f.stream), Arc::as_ptr(stream)))
            .map(|f| f.bytes.as_slice())
    }
}

/// A stream's address: what [`Kept::scanned`] is keyed by (every layer stream lives as
/// long as the inspection).
fn stream_key(stream: &Arc<dyn StreamSource>) -> usize {
    Arc::as_ptr(stream).cast::<()>().addr()
}

impl ContentSink for KeepDatabases {
    fn file(&self, stream: &Arc<dyn StreamSource>, m: &Member) -> Option<Box<dyn FileSink + '_>> {
        if reads(&m.path, m.meta.mode, m.size) {
            let path = member_components(&m.path).ok()?.join(&b'/');
            if !reads(&path, m.meta.mode, m.size) || self.kept.lock().ok()?.packages > MAX_PACKAGES {
                return None;
            }
            return Some(Box::new(Scanning {
                to: self,
                key: (stream_key(stream), m.data_offset),
                path,
                mode: m.meta.mode,
                bytes: Vec::new(),
                elf: None,
            }));
        }
        // Most members end in no kept file's name: their path is not split.
        let kept_files = || DB_FILES.iter().chain(&OS_RELEASE);
        if !kept_files().any(|p| p.rsplit(|&b| b == b'/').next().is_some_and(|name| m.path.ends_with(name))) {
            return None;
        }
        let comps = member_components(&m.path).ok()?;
        if !kept_files().any(|p| p.split(|&b| b == b'/').eq(comps.iter().copied())) {
            return None;
        }
        let room = {
            let kept = self.kept.lock().ok()?;
            MAX_KEPT_DB_BYTES.saturating_sub(kept.bytes)
        };
        if m.size > room {
            return None;
        }
        let cap = usize::try_from(m.size).ok()?;
        Some(Box::new(Keeping {
            to: self,
            stream: stream.clone(),
            offset: m.data_offset,
            bytes: Vec::with_capacity(cap),
        }))
    }
}

/// A database file on its way into [`Kept`].
struct Keeping<'a> {
    to: &'a KeepDatabases,
    stream: Arc<dyn StreamSource>,
    offset: u64,
    bytes: Vec<u8>,
}

impl FileSink for Keeping<'_> {
    fn write(&mut self, piece: &[u8]) -> bool {
        self.bytes.extend_from_slice(piece);
        true
    }

    fn finish(self: Box<Self>) {
        if let Ok(mut kept) = self.to.kept.lock() {
            let len = diskcast_layout::u64_from_usize(self.bytes.len());
            if len <= MAX_KEPT_DB_BYTES.saturating_sub(kept.bytes) {
                kept.bytes += len;
                kept.files.push(KeptFile { stream: self.stream, offset: self.offset, bytes: self.bytes });
            }
        }
    }
}

/// A file the inventory reads, on its way through [`scan_member`]. An executable is
/// kept only when it starts as an ELF file does (scripts are dropped at once).
struct Scanning<'a> {
    to: &'a KeepDatabases,
    key: (usize, u64),
    path: Vec<u8>,
    mode: u32,
    bytes: Vec<u8>,
    /// For an executable: whether it is an ELF file, once its first bytes are in.
    elf: Option<bool>,
}

impl FileSink for Scanning<'_> {
    fn write(&mut self, piece: &[u8]) -> bool {
        if self.elf == Some(false) {
            return true;
        }
        self.bytes.extend_from_slice(piece);
        if self.mode & 0o111 != 0 && self.elf.is_none() && self.bytes.len() >= 4 {
            let elf = self.bytes.starts_with(b"\x7fELF");
            self.elf = Some(elf);
            if !elf {
                self.bytes = Vec::new();
            }
        }
        true
    }

    fn finish(self: Box<Self>) {
        let found = if self.elf == Some(false) {
            Inventory::default()
        } else {
            scan_member(&self.path, self.mode, &self.bytes)
        };
        if let Ok(mut kept) = self.to.kept.lock() {
            kept.packages += found.packages.len();
            kept.scanned.insert(self.key, (self.path, found));
        }
    }
}

/// The package database as each layer leaves it, read from the kept bytes (or, for a
/// file that was not kept, from its layer).
#[derive(Default)]
struct DbHistory {
    /// Which file content each of the [`DB_FILES`] had after the last layer.
    state: Vec<Option<FileKey>>,
    /// Per package (name, architecture): its version and the layer from which the
    /// database has listed it at that version.
    since: HashMap<(String, String), (String, usize)>,
    /// The database as the last layer that changed it left it.
    last: Option<Found>,
}

impl DbHistory {
    fn after_layer(&mut self, layer: usize, tree: &Tree, kept: &Kept) -> Result<()> {
        let state: Vec<Option<FileKey>> = DB_FILES.iter().map(|p| file_key(tree, p)).collect();
        if state == self.state {
            return Ok(());
        }
        self.state = state;
        let found = read_databases(tree, kept)?;
        let mut since = HashMap::with_capacity(found.packages.len());
        for p in &found.packages {
            let key = (p.name.clone(), p.architecture.clone());
            let version = os_version(p);
            let first = match self.since.get(&key) {
                Some((v, i)) if *v == version => *i,
                _ => layer,
            };
            since.insert(key, (version, first));
        }
        self.since = since;
        self.last = Some(found);
        Ok(())
    }
}

/// Which content a path of the tree has: a layer stream (by address) and the offset
/// into it, or else a node of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKey {
    Stream(usize, u64),
    Node(usize),
}

/// What file content `path` resolves to, so that a layer that leaves the databases alone
/// is seen not to change them.
fn file_key(tree: &Tree, path: &[u8]) -> Option<FileKey> {
    let id = tree.resolve(path, true).ok()?;
    if let Kind::File(f) = &tree.node(id).kind
        && let Content::Stream { stream, offset } = &f.content
    {
        return Some(FileKey::Stream(Arc::as_ptr(stream).cast::<()>().addr(), *offset));
    }
    Some(FileKey::Node(id.index()))
}

/// The file `path` of `tree` (at most `max` bytes): its kept bytes when its layer kept
/// them, else read from the tree (decoding its layer again up to it).
fn read_kept(tree: &Tree, kept: &Kept, path: &[u8], max: u64) -> Result<Option<Vec<u8>>> {
    let Ok(id) = tree.resolve(path, true) else { return Ok(None) };
    if let Kind::File(f) = &tree.node(id).kind
        && f.size <= max
        && let Content::Stream { stream, offset } = &f.content
        && let Some(bytes) = kept.get(stream, *offset)
    {
        return Ok(Some(bytes.to_vec()));
    }
    Ok(tree.read_optional(path, max)?)
}

/// The packages of the database `tree` holds, its files read from the kept bytes.
fn read_databases(tree: &Tree, kept: &Kept) -> Result<Found> {
    let read = |path: &[u8], max: u64| read_kept(tree, kept, path, max);
    let is_file = |path: &[u8]| tree.metadata(path).is_ok_and(|m| m.file_type == FileType::File);
    packages_in(&read, &is_file)
}

fn history(h: &[History], layers: usize) -> Vec<HistoryReport> {
    let mut next = 0;
    h.iter()
        .map(|e| {
            let layer = if e.empty_layer || next >= layers {
                None
            } else {
                next += 1;
                Some(next - 1)
            };
            HistoryReport {
                created: e.created.clone(),
                created_by: e.created_by.clone(),
                comment: e.comment.clone(),
                empty_layer: e.empty_layer,
                layer,
            }
        })
        .collect()
}
