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
//! Members become nodes by the rule `tar` sources follow ([`diskcast_tar::MemberTree`]
//! under [`MemberPolicy::ARCHIVE`]): paths are confined to the tree (`..` refused, an
//! absolute name taken relative to the root), symbolic links on the way to a member's
//! parent are followed inside the tree only, as umoci and containerd resolve them within
//! the root filesystem. A member that rule refuses is skipped with a warning, as in a tar.

use crate::blobs::{LayerStream, VerifiedRaw, decompress};
use crate::digest::{Digest, Hasher, Verify, mismatch};
use crate::image::{Image, Layer};
use crate::pipe::{Hashing, stage};
use diskcast_block::{Error, ErrorKind, Result};
use diskcast_tar::{Member, MemberKind, MemberPolicy, MemberTree, TarReader, member_components, skipped};
use diskcast_tree::{StreamSource, Tree, check_name, display_name, split_path};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
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

/// Where the contents of regular files go while their layer is read, so that a sink
/// needing them (extraction stages them in its target directory) does not decode the
/// layer a second time. A file the sink does not take is read from its layer later.
pub trait ContentSink: Sync {
    /// A place for the `m.size` bytes of regular-file member `m` of `stream`, or `None`
    /// when the sink will not keep it.
    fn file(&self, stream: &Arc<dyn StreamSource>, m: &Member) -> Option<Box<dyn FileSink + '_>>;
}

/// One file of a [`ContentSink`]: its bytes arrive front to back.
pub trait FileSink {
    /// Takes the next piece; `false` when the sink gave the file up (the rest is skipped).
    fn write(&mut self, piece: &[u8]) -> bool;
    /// Every byte arrived.
    fn finish(self: Box<Self>);
}

/// Reads `layer` once: collects its members and checks the blob's size and digest and
/// the uncompressed diff_id; hands regular files' contents to `sink` as they pass.
/// With `threads` of 2 or more, reading and hashing the blob, decompressing it, and
/// hashing the decompressed bytes and parsing the tar (this thread) are three stages of
/// a pipeline: the decompressing thread, the slowest stage, does nothing else (both
/// SHA-256 passes run beside it), so a layer takes about as long as inflating it alone.
pub fn scan_layer(
    image: &Image,
    layer: &Layer,
    threads: usize,
    sink: Option<&dyn ContentSink>,
) -> Result<ScannedLayer> {
    let d = &layer.descriptor;
    let stream = Arc::new(LayerStream {
        store: image.store.clone(),
        digest: d.digest.clone(),
        size: d.size,
        compression: layer.compression,
        cap: image.limits.layer_cap(d.size),
    });
    let what = format!("layer {}", d.digest);
    let raw = VerifiedRaw::new(stream.store.open_raw(&d.digest)?, &d.digest, d.size, what.clone());
    let io = |e: std::io::Error| Error::io(format!("cannot start a thread reading {what}"), e);
    let decoded: Box<dyn BufRead + Send> = match threads {
        0 | 1 => Box::new(BufReader::with_capacity(
            256 << 10,
            decompress(
                BufReader::with_capacity(256 << 10, raw.clone()),
                layer.compression,
                stream.cap,
                &stream.name(),
            )?,
        )),
        _ => {
            let blob = stage("dc-flatten", raw.clone()).map_err(io)?;
            let inflate = decompress(blob, layer.compression, stream.cap, &stream.name())?;
            Box::new(stage("dc-flatten", inflate).map_err(io)?)
        }
    };
    let (hashing, hashed) = Hashing::new(decoded, layer.diff_id.as_ref().map(|id| Hasher::new(id.algorithm())));
    let mut tar = TarReader::from_buf_read(Box::new(hashing), what.clone());
    let as_dyn: Arc<dyn StreamSource> = stream.clone();
    let mut entries = Vec::new();
    let scanned = (|| -> Result<()> {
        while let Some(m) = tar.next_member()? {
            if entries.len() >= MAX_MEMBERS_PER_LAYER {
                return Err(Error::out_of_bounds(format!("{what} has more than {MAX_MEMBERS_PER_LAYER} members")));
            }
            if let Some(sink) = sink
                && m.kind == MemberKind::File
                && m.sparse.is_none()
                && m.size > 0
                && m.data_len == m.size
                && let Some(mut file) = sink.file(&as_dyn, &m)
            {
                let mut kept = true;
                tar.data_chunks(&mut |piece| {
                    kept = kept && file.write(piece);
                    Ok(())
                })?;
                if kept {
                    file.finish();
                }
            }
            entries.push(m);
        }
        Ok(())
    })();
    let drained = scanned.and_then(|()| {
        // What follows the end-of-archive marker (zero padding) is part of the diff_id,
        // and the blob is read to its end so its size and digest are checked.
        tar.drain()?;
        raw.finish(&what)
    });
    drop(tar);
    if let Err(e) = drained {
        // A digest mismatch or a decompression bomb explains a broken tar better than
        // the tar error that it caused: the blob is checked on its own.
        Verify::new(stream.store.open_raw(&d.digest)?, &d.digest, d.size, what.clone()).finish()?;
        return Err(root_cause(e));
    }
    let (uncompressed, hasher) = hashed.finish();
    if let (Some(want), Some(hasher)) = (&layer.diff_id, hasher) {
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

/// A flattened image: its root filesystem and the members that were skipped.
#[derive(Debug)]
pub struct Flattened {
    /// The root filesystem.
    pub tree: Tree,
    /// Members that could not be taken over (a path with `..`, a hard link to nothing),
    /// one message each naming the layer, as a `tar` source reports them.
    pub warnings: Vec<String>,
}

/// Scans every layer of `image` (in parallel, at most `threads` at once) and applies them
/// in order into a new tree.
pub fn flatten(image: &Image, threads: usize) -> Result<Flattened> {
    flatten_into(image, threads, None)
}

/// [`flatten`], handing the content of every layer's regular files to `sink` as the
/// layers are read (extraction stages them, so it need not decode a layer again).
pub fn flatten_into(image: &Image, threads: usize, sink: Option<&dyn ContentSink>) -> Result<Flattened> {
    let scanned = scan_all_into(image, threads, sink)?;
    let mut flat = Flattener::new(image, &scanned)?;
    for layer in &scanned {
        flat.apply(layer)?;
    }
    Ok(flat.finish())
}

/// The scanned layers of `image`, in its order. A blob listed several times (Docker
/// repeats its empty layer) is read and parsed once, and its one member list shared, so
/// memory stays linear in the bytes read.
pub fn scan_all(image: &Image, threads: usize) -> Result<Vec<Arc<ScannedLayer>>> {
    scan_all_into(image, threads, None)
}

/// [`scan_all`], handing file contents to `sink` (see [`scan_layer`]). The thread
/// budget is shared out: as many layers at once as there are threads, and when fewer
/// layers than threads, each layer's reading, decompressing and parsing in a pipeline
/// of the threads left (a one-layer image on two cores uses both).
pub fn scan_all_into(image: &Image, threads: usize, sink: Option<&dyn ContentSink>) -> Result<Vec<Arc<ScannedLayer>>> {
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
    let budget = threads.max(1);
    let threads = budget.clamp(1, n.max(1));
    let per_layer = budget / threads;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<ScannedLayer>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            diskcast_block::copy::spawn_worker(s, "dc-flatten", || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&layer) = distinct.get(i) else { break };
                    let r = scan_layer(image, &image.layers[layer], per_layer, sink);
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

/// Applies scanned layers, in order, into one tree: each layer's whiteouts, then its
/// members through [`MemberTree`] under [`MemberPolicy::ARCHIVE`], the rule `tar` sources
/// follow, so a layer gives the tree its tar gives.
#[derive(Debug)]
pub struct Flattener {
    members: MemberTree,
    warnings: Vec<String>,
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
        Ok(Flattener { members: MemberTree::new(MemberPolicy::ARCHIVE), warnings: Vec::new() })
    }

    /// The tree as the layers applied so far made it.
    pub fn tree(&self) -> &Tree {
        self.members.tree()
    }

    /// The flattened tree and the members skipped.
    pub fn finish(self) -> Flattened {
        Flattened { tree: self.members.into_tree(), warnings: self.warnings }
    }

    /// Applies one scanned layer.
    pub fn apply(&mut self, layer: &ScannedLayer) -> Result<()> {
        let what = || format!("layer {}", layer.stream.digest);
        apply_whiteouts(&mut self.members, layer, &what)?;
        let stream: Arc<dyn StreamSource> = layer.stream.clone();
        for e in &layer.entries {
            if last_component(&e.path).is_some_and(|n| n.starts_with(WHITEOUT)) {
                continue;
            }
            if let Err(err) = self.members.insert(e, &stream) {
                if err.kind() == ErrorKind::OutOfBounds {
                    return Err(err);
                }
                self.warnings.push(format!("{}: {}", what(), skipped(e, &err)));
            }
        }
        Ok(())
    }
}

/// The last component of a member path (`None` for the root).
fn last_component(path: &[u8]) -> Option<&[u8]> {
    split_path(path).last()
}

/// A whiteout's path as tree components (leading `/` and `.` dropped, `..` refused),
/// each a valid name.
fn components<'a>(path: &'a [u8], what: &dyn Fn() -> String) -> Result<Vec<&'a [u8]>> {
    member_components(path).map_err(|e| Error::new(e.kind(), format!("{}: {}", what(), e.message())))
}

/// A layer's whiteouts and opaque markers, applied before its members: they hide only
/// what lower layers made. Their directories are found as a member's parents are.
fn apply_whiteouts(members: &mut MemberTree, layer: &ScannedLayer, what: &dyn Fn() -> String) -> Result<()> {
    for e in &layer.entries {
        if !last_component(&e.path).is_some_and(|n| n.starts_with(WHITEOUT)) {
            continue;
        }
        let comps = components(&e.path, what)?;
        let Some((last, parents)) = comps.split_last() else { continue };
        // A directory that a symlink on the way makes unreachable hides nothing.
        let dir = members.existing_dir(parents, &e.path).ok().flatten();
        if *last == OPAQUE {
            if let Some(dir) = dir {
                members.tree_mut().clear_dir(dir)?;
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
            if let Some(dir) = dir {
                members.tree_mut().unlink(dir, name);
            }
        }
    }
    Ok(())
}
