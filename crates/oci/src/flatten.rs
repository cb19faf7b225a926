//! Flattening: the image's layers applied in order into one [`Tree`], in memory, as the
//! OCI image spec's layer.md defines it. Nothing is written to disk and no privilege is
//! needed: file content stays a reference into its layer blob.
//!
//! Each layer blob is read once, front to back (decompressed, its compressed digest and
//! its uncompressed diff_id checked at the end), however often the manifest lists it;
//! blobs are read in parallel and the listings applied in order, at most
//! [`MAX_IMAGE_MEMBERS`] members in all. Per layer, whiteouts (`.wh.NAME`) and opaque
//! markers (`.wh..wh..opq`) apply first, to what the lower layers made (the spec: a
//! whiteout never hides an entry of its own layer), then the layer's entries in archive
//! order.
//!
//! Paths are confined to the tree: `..` components in a member's name or hard link target
//! are refused; an absolute name is taken relative to the root (as every runtime does);
//! symbolic links met on the way to a member's parent are followed inside the tree only,
//! as umoci and containerd resolve them within the root filesystem.

use crate::blobs::{LayerStream, VerifiedRaw};
use crate::digest::{Digest, Hasher, from_io, mismatch};
use crate::image::{Image, Layer};
use diskcast_block::{Error, Result};
use diskcast_tar::{Member, MemberKind, SparseContent, TarReader, normalize_path};
use diskcast_tree::{
    Content, FileData, Kind, Meta, Node, NodeId, StreamSource, Timestamp, Tree, check_name, display_name,
};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Most members one layer may hold before it is refused (a tree holds at most
/// `diskcast_tree::MAX_NODES` anyway).
const MAX_MEMBERS_PER_LAYER: usize = 10_000_000;
/// Most members all the layers of an image may apply together, a blob listed several
/// times counted each time. A blob is read once however often it is listed, but each
/// listing is applied again: this bounds that work (and the tree's growth) at what one
/// layer at [`MAX_MEMBERS_PER_LAYER`] could cost. The largest real images hold about a
/// million files over all their layers.
pub const MAX_IMAGE_MEMBERS: usize = 10_000_000;

/// One layer read through: its members, in archive order.
#[derive(Debug)]
pub struct ScannedLayer {
    /// The stream file contents refer to.
    pub stream: Arc<LayerStream>,
    /// The members.
    pub entries: Vec<Member>,
    /// The uncompressed size.
    pub uncompressed: u64,
}

/// Reads `layer` once: collects its members and checks the blob's size and digest and
/// the uncompressed diff_id.
pub fn scan_layer(image: &Image, layer: &Layer) -> Result<ScannedLayer> {
    let d = &layer.descriptor;
    let stream = Arc::new(LayerStream {
        store: image.store.clone(),
        digest: d.digest.clone(),
        size: d.size,
        compression: layer.compression,
        cap: image.limits.layer_cap(d.size),
    });
    let what = format!("layer {}", d.digest);
    let (reader, raw) = stream.open_checked()?;
    let hash = Arc::new(Mutex::new(DiffHash {
        inner: reader,
        hasher: layer.diff_id.as_ref().map(|id| Hasher::new(id.algorithm())),
        n: 0,
    }));
    let mut tar = TarReader::new(Box::new(SharedRead(hash.clone())), what.clone());
    let mut entries = Vec::new();
    let scanned = (|| -> Result<()> {
        while let Some(m) = tar.next_member()? {
            if entries.len() >= MAX_MEMBERS_PER_LAYER {
                return Err(Error::out_of_bounds(format!("{what} has more than {MAX_MEMBERS_PER_LAYER} members")));
            }
            entries.push(m);
        }
        Ok(())
    })();
    drop(tar);
    if let Err(e) = scanned {
        // A digest mismatch or a decompression bomb explains a broken tar better than
        // the tar error that it caused.
        finish_raw(&raw, &what)?;
        return Err(root_cause(e));
    }
    // What follows the end-of-archive marker (zero padding) is part of the diff_id.
    let mut rest = SharedRead(hash.clone());
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| from_io(e, &what))?;
    finish_raw(&raw, &what)?;
    let mut h = hash.lock().map_err(|_| Error::invalid("layer hash poisoned"))?;
    let uncompressed = h.n;
    if let (Some(want), Some(hasher)) = (&layer.diff_id, h.hasher.take()) {
        let got = hasher.finish();
        if &got != want {
            return Err(mismatch(&format!("{what} (uncompressed, diff_id)"), want, &got));
        }
    }
    Ok(ScannedLayer { stream, entries, uncompressed })
}

/// The error a reader below the tar reader reported (digest, size, decompression bomb),
/// when the tar reader passed it on as a plain I/O error.
fn root_cause(e: Error) -> Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<Error>())
        {
            return Error::new(inner.kind(), inner.message().to_string());
        }
        cur = err.source();
    }
    e
}

fn finish_raw(raw: &VerifiedRaw, what: &str) -> Result<()> {
    raw.finish(what)
}

struct DiffHash {
    inner: Box<dyn Read + Send>,
    hasher: Option<Hasher>,
    n: u64,
}

impl Read for DiffHash {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.n += n as u64;
        Ok(n)
    }
}

/// The decompressed layer, shared between the tar reader and the scan that drains what
/// follows the archive's end.
struct SharedRead(Arc<Mutex<DiffHash>>);

impl Read for SharedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("layer reader poisoned"))?.read(buf)
    }
}

/// Scans every layer of `image` (in parallel, at most `threads` at once) and applies them
/// in order into a new tree.
pub fn flatten(image: &Image, threads: usize) -> Result<Tree> {
    let scanned = scan_all(image, threads)?;
    let mut flat = Flattener::new(image, &scanned)?;
    for layer in &scanned {
        flat.apply(layer)?;
    }
    Ok(flat.into_tree())
}

/// The scanned layers of `image`, in its order. A blob listed several times (Docker
/// repeats its empty layer) is read and parsed once, and its one member list shared, so
/// memory stays linear in the bytes read.
pub fn scan_all(image: &Image, threads: usize) -> Result<Vec<Arc<ScannedLayer>>> {
    // The first layer with each blob (and the same media type and diff_id) is scanned.
    let mut distinct: Vec<usize> = Vec::new();
    let mut of_layer: Vec<usize> = Vec::with_capacity(image.layers.len());
    let mut seen: HashMap<(&Digest, &str, Option<&Digest>), usize> = HashMap::new();
    for (i, l) in image.layers.iter().enumerate() {
        let key = (&l.descriptor.digest, l.descriptor.media_type.as_str(), l.diff_id.as_ref());
        let k = *seen.entry(key).or_insert_with(|| {
            distinct.push(i);
            distinct.len() - 1
        });
        of_layer.push(k);
    }
    let n = distinct.len();
    let threads = threads.clamp(1, n.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<ScannedLayer>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&layer) = distinct.get(i) else { break };
                    let r = scan_layer(image, &image.layers[layer]);
                    let failed = r.is_err();
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                    if failed {
                        // Later layers are not needed once one failed.
                        next.store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut scanned = Vec::with_capacity(n);
    for (i, slot) in results.into_iter().enumerate() {
        match slot.into_inner().ok().flatten() {
            Some(Ok(l)) => scanned.push(Arc::new(l)),
            Some(Err(e)) => return Err(e),
            None => return Err(Error::invalid(format!("layer {} was not read", distinct[i]))),
        }
    }
    Ok(of_layer.into_iter().map(|k| scanned[k].clone()).collect())
}

/// Applies scanned layers, in order, into one tree.
///
/// A member that replaces a file of a lower layer (or of an earlier listing of the same
/// blob) takes over its node when that node has no other name, so a layer listed many
/// times rebuilds the same nodes rather than adding a tree's worth each time.
#[derive(Debug)]
pub struct Flattener {
    tree: Tree,
    /// Nodes that got a second name (hard links): never taken over.
    linked: HashSet<NodeId>,
}

impl Flattener {
    /// A flattener for `layers` (all of `image`'s, in order): refused when they hold more
    /// than [`MAX_IMAGE_MEMBERS`] members together.
    pub fn new(image: &Image, layers: &[Arc<ScannedLayer>]) -> Result<Self> {
        let total = layers.iter().try_fold(0usize, |sum, l| sum.checked_add(l.entries.len()));
        if total.is_none_or(|t| t > MAX_IMAGE_MEMBERS) {
            let distinct: HashSet<&Digest> = layers.iter().map(|l| &l.stream.digest).collect();
            return Err(Error::out_of_bounds(format!(
                "image {}: its {} layers ({} distinct blobs) hold more than the {MAX_IMAGE_MEMBERS} members \
                 diskcast applies for one image (MAX_IMAGE_MEMBERS; a blob listed several times counts each time)",
                image.source,
                layers.len(),
                distinct.len()
            )));
        }
        Ok(Flattener { tree: Tree::new(Meta::new(0o755, Timestamp::default())), linked: HashSet::new() })
    }

    /// The flattened tree.
    pub fn into_tree(self) -> Tree {
        self.tree
    }

    /// Applies one scanned layer.
    pub fn apply(&mut self, layer: &ScannedLayer) -> Result<()> {
        apply_layer(&mut self.tree, &mut self.linked, layer)
    }
}

/// A member's path as tree components (leading `/` and `.` dropped, `..` refused),
/// each a valid name.
fn components<'a>(path: &'a [u8], what: &dyn Fn() -> String) -> Result<Vec<&'a [u8]>> {
    let comps = normalize_path(path).map_err(|e| Error::new(e.kind(), format!("{}: {}", what(), e.message())))?;
    for c in &comps {
        check_name(c).map_err(|e| Error::corrupt(format!("{}: {}", what(), e.message())).with_field("name"))?;
    }
    Ok(comps)
}

/// Applies one scanned layer to `tree`; `linked` holds the nodes with hard links.
fn apply_layer(tree: &mut Tree, linked: &mut HashSet<NodeId>, layer: &ScannedLayer) -> Result<()> {
    let what = || format!("layer {}", layer.stream.digest);
    // Whiteouts first: they hide only what lower layers made.
    for e in &layer.entries {
        let comps = components(&e.path, &what)?;
        let Some((last, parents)) = comps.split_last() else { continue };
        if *last == OPAQUE {
            if let Some(dir) = lookup_dir(tree, parents) {
                tree.clear_dir(dir)?;
            }
        } else if let Some(name) = last.strip_prefix(WHITEOUT) {
            check_name(name).map_err(|err| {
                Error::corrupt(format!(
                    "{}: whiteout {} names no valid entry: {}",
                    what(),
                    display_name(&e.path),
                    err.message()
                ))
            })?;
            if name.starts_with(WHITEOUT) {
                return Err(Error::unsupported(format!(
                    "{}: {} is an AUFS metadata file, not part of an OCI layer",
                    what(),
                    display_name(&e.path)
                )));
            }
            if let Some(dir) = lookup_dir(tree, parents) {
                tree.unlink(dir, name);
            }
        }
    }
    for e in &layer.entries {
        let comps = components(&e.path, &what)?;
        let Some((last, parents)) = comps.split_last() else {
            // `./` itself: the root directory's metadata.
            if e.kind == MemberKind::Dir {
                let root = tree.node_mut(NodeId::ROOT);
                root.meta = e.meta.clone();
                root.xattrs = e.xattrs.clone();
            }
            continue;
        };
        if last.starts_with(WHITEOUT) {
            continue;
        }
        let parent = make_parents(tree, parents, &what, e)?;
        if let MemberKind::HardLink(link) = &e.kind {
            let tcomps = components(link, &|| format!("{}: hard link {}", what(), display_name(&e.path)))?;
            let target = resolve_components(tree, &tcomps, false).ok_or_else(|| {
                Error::corrupt(format!(
                    "{}: hard link {} points to {}, which does not exist",
                    what(),
                    display_name(&e.path),
                    display_name(link)
                ))
            })?;
            if tree.node(target).as_dir().is_some() {
                return Err(Error::corrupt(format!(
                    "{}: hard link {} points to a directory",
                    what(),
                    display_name(&e.path)
                )));
            }
            if tree.lookup(parent, last) == Some(target) {
                continue;
            }
            tree.link(parent, last, target)?;
            linked.insert(target);
            continue;
        }
        let kind = match &e.kind {
            MemberKind::Dir => {
                if let Some(existing) = tree.lookup(parent, last)
                    && tree.node(existing).as_dir().is_some()
                {
                    // A directory over a directory keeps its entries and takes the new metadata.
                    let n = tree.node_mut(existing);
                    n.meta = e.meta.clone();
                    n.xattrs = e.xattrs.clone();
                    continue;
                }
                Kind::empty_dir()
            }
            MemberKind::File => Kind::File(file_data(layer, e)?),
            MemberKind::Symlink(target) => Kind::Symlink(target.clone()),
            MemberKind::CharDev { major, minor } => Kind::CharDev { major: *major, minor: *minor },
            MemberKind::BlockDev { major, minor } => Kind::BlockDev { major: *major, minor: *minor },
            MemberKind::Fifo => Kind::Fifo,
            MemberKind::HardLink(_) => unreachable_kind()?,
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        let mut node = Node::new(e.meta.clone(), kind);
        node.xattrs = e.xattrs.clone();
        match tree.lookup(parent, last) {
            // A file over a file with no other name: the old node is replaced in place,
            // as inserting would leave it unreachable in the tree.
            Some(old) if !is_dir && tree.node(old).as_dir().is_none() && !linked.contains(&old) => {
                *tree.node_mut(old) = node;
            }
            _ => {
                tree.insert(parent, last, node)?;
            }
        }
    }
    Ok(())
}

fn unreachable_kind() -> Result<Kind> {
    Err(Error::invalid("hard link handled above"))
}

fn file_data(layer: &ScannedLayer, e: &Member) -> Result<FileData> {
    let stream: Arc<dyn StreamSource> = layer.stream.clone();
    let content = match &e.sparse {
        _ if e.size == 0 => Content::Zero,
        Some(runs) => Content::Reader(Arc::new(SparseContent::new(stream, e.data_offset, runs)?)),
        None => Content::Stream { stream, offset: e.data_offset },
    };
    Ok(FileData { size: e.size, content })
}

/// Walks `comps` from the root without creating anything; `None` when some component
/// is missing. Symbolic links on the way are followed inside the tree, and the last one
/// too when `follow_last`.
fn resolve_components(tree: &Tree, comps: &[&[u8]], follow_last: bool) -> Option<NodeId> {
    if comps.is_empty() {
        return Some(NodeId::ROOT);
    }
    let path = comps.join(&b'/');
    tree.resolve(&path, follow_last).ok()
}

/// The directory at `comps`, for a whiteout: `None` when it does not exist (nothing to
/// hide).
fn lookup_dir(tree: &Tree, comps: &[&[u8]]) -> Option<NodeId> {
    let id = resolve_components(tree, comps, true)?;
    tree.node(id).as_dir().map(|_| id)
}

/// The parent directory of a member, made when missing (mode 0755, as a runtime's
/// `mkdir -p` would).
fn make_parents(tree: &mut Tree, parents: &[&[u8]], what: &dyn Fn() -> String, e: &Member) -> Result<NodeId> {
    let mut cur = NodeId::ROOT;
    for (i, comp) in parents.iter().enumerate() {
        cur = match tree.lookup(cur, comp) {
            Some(id) => match &tree.node(id).kind {
                Kind::Dir(_) => id,
                Kind::Symlink(_) => {
                    let path = parents[..=i].join(&b'/');
                    let t = tree.resolve(&path, true).map_err(|err| {
                        Error::corrupt(format!(
                            "{}: parent of {} is a symbolic link that leads nowhere: {}",
                            what(),
                            display_name(&e.path),
                            err.message()
                        ))
                    })?;
                    if tree.node(t).as_dir().is_none() {
                        return Err(Error::corrupt(format!(
                            "{}: parent of {} is a symbolic link to a non-directory",
                            what(),
                            display_name(&e.path)
                        )));
                    }
                    t
                }
                _ => {
                    return Err(Error::corrupt(format!(
                        "{}: parent of {} is not a directory",
                        what(),
                        display_name(&e.path)
                    )));
                }
            },
            None => tree.insert(cur, comp, Node::new(Meta::new(0o755, e.meta.mtime), Kind::empty_dir()))?,
        };
    }
    Ok(cur)
}
