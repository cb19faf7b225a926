//! Archive members into a tree: the one rule for `tar` sources and OCI layers (which
//! handle their whiteouts first, then call [`MemberTree::insert`]), so the same bytes give
//! the same tree whichever way they arrive.

use crate::compress::{Compression, FileStream, Limits};
use crate::reader::{Member, MemberKind, TarReader};
use crate::sparse::SparseContent;
use diskcast_block::{Error, ErrorKind, Result};
use diskcast_tree::{
    Content, FileData, FileExtent, Kind, MAX_SYMLINK_HOPS, Meta, Node, NodeId, StreamSource, Timestamp, Tree,
    check_name, display_name, split_path,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// A tar read into a tree, with what could not be taken over.
#[derive(Debug)]
pub struct TarTree {
    /// The tree.
    pub tree: Tree,
    /// Members skipped, one message each (a path with `..`, a hard link to nothing, a
    /// path through a file...).
    pub warnings: Vec<String>,
    /// How the archive was compressed.
    pub compression: Compression,
}

/// A symbolic link met on the way to a member's parent directory (or to a hard link's
/// target, or to a whiteout's directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentSymlink {
    /// Followed inside the tree: an absolute target restarts at the tree's root, `..`
    /// stops there, at most [`MAX_SYMLINK_HOPS`] links per member. What umoci,
    /// containerd and Docker do when they apply a layer (a package adding
    /// `lib/x.so` over a merged-/usr base's `lib -> usr/lib` relies on it), and GNU tar
    /// for relative links.
    FollowInTree,
    /// The member is refused: bsdtar's default (`SECURE_SYMLINKS`).
    Refuse,
}

/// A member whose name a directory with entries already holds, when the member is not a
/// directory itself (a directory over a directory always keeps the entries and takes
/// the new metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverDirectory {
    /// The later member wins and the directory's subtree goes: what umoci and
    /// containerd do (`RemoveAll`).
    Replace,
    /// The member is refused and the directory stays: GNU tar's and bsdtar's default.
    Refuse,
}

/// How members become tree nodes: the choices where peers differ. Fixed for every
/// policy: a leading `/` and `.` components are dropped and a `..` component is
/// refused; missing parents are made (mode 0755, owned by root, the member's mtime); a
/// later member of a name replaces the earlier one (duplicates: the last wins, as every
/// tar and runtime extracts them); a hard link must name an earlier non-directory member
/// (its target's parents resolved as a member's are, its last component not followed,
/// as umoci and containerd resolve it), so a link to a later or missing member is
/// refused, as GNU tar, bsdtar and the runtimes refuse it. A refused member leaves the
/// tree unchanged; callers skip it with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPolicy {
    /// A symlink on the way to a member's parent.
    pub parent_symlink: ParentSymlink,
    /// A non-directory member over a directory with entries.
    pub over_directory: OverDirectory,
}

impl MemberPolicy {
    /// The one policy of `tar` sources and OCI layers: what container runtimes do, so a
    /// root filesystem gives the same tree as a tar and as a layer.
    pub const ARCHIVE: MemberPolicy =
        MemberPolicy { parent_symlink: ParentSymlink::FollowInTree, over_directory: OverDirectory::Replace };
}

/// A tree being built from archive members under one [`MemberPolicy`].
///
/// A member that replaces a non-directory with no other name takes over its node, so an
/// archive (or a layer listed many times) that repeats names rebuilds the same nodes
/// rather than growing the arena each time.
#[derive(Debug)]
pub struct MemberTree {
    tree: Tree,
    policy: MemberPolicy,
    /// Nodes that got a second name (hard links): never taken over.
    linked: HashSet<NodeId>,
}

/// The components of a member path. A leading `/` and `.` components are dropped
/// (`/etc/x` and `./etc/x` are `etc/x`, as GNU tar extracts them); a `..` component is
/// refused, since it could climb out of wherever the tree is extracted.
pub fn normalize_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    let comps: Vec<&[u8]> = split_path(path).collect();
    if comps.contains(&&b".."[..]) {
        return Err(Error::refused(format!("member path {} contains '..'", display_name(path))).with_field("path"));
    }
    Ok(comps)
}

/// [`normalize_path`], each component a valid tree name.
pub fn member_components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let comps = normalize_path(path)?;
    for c in &comps {
        check_name(c).map_err(|e| {
            Error::corrupt(format!("member path {}: {}", display_name(path), e.message())).with_field("path")
        })?;
    }
    Ok(comps)
}

impl MemberTree {
    /// An empty tree (a root directory, mode 0755) filled under `policy`.
    pub fn new(policy: MemberPolicy) -> Self {
        MemberTree { tree: Tree::new(Meta::new(0o755, Timestamp::default())), policy, linked: HashSet::new() }
    }

    /// The tree so far.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// The tree so far, for edits that are not members (an OCI whiteout unlinks).
    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    /// The finished tree.
    pub fn into_tree(self) -> Tree {
        self.tree
    }

    /// Adds member `m`, whose file content is read from `stream` (the stream its
    /// [`Member::data_offset`] points into). An error (a refused member, see
    /// [`MemberPolicy`]) leaves the tree unchanged, except for parent directories the
    /// member's path made; only [`ErrorKind::OutOfBounds`] (a cap) should stop the caller.
    pub fn insert(&mut self, m: &Member, stream: &Arc<dyn StreamSource>) -> Result<()> {
        let comps = member_components(&m.path)?;
        let Some((name, parents)) = comps.split_last() else {
            // `./`: the root directory's own metadata.
            if m.kind != MemberKind::Dir {
                return Err(Error::refused("member names the root directory but is not a directory"));
            }
            let root = self.tree.node_mut(NodeId::ROOT);
            root.meta = m.meta.clone();
            root.xattrs = m.xattrs.clone();
            return Ok(());
        };
        if let MemberKind::HardLink(target) = &m.kind {
            let id = self.link_target(target)?;
            let parent = self.make_dirs(parents, &m.path, m.meta.mtime)?;
            let existing = self.tree.lookup(parent, name);
            if existing == Some(id) {
                return Ok(());
            }
            self.check_over_directory(existing, &m.path)?;
            self.tree.link(parent, name, id)?;
            self.linked.insert(id);
            return Ok(());
        }
        let parent = self.make_dirs(parents, &m.path, m.meta.mtime)?;
        let existing = self.tree.lookup(parent, name);
        let kind = match &m.kind {
            MemberKind::Dir => {
                if let Some(id) = existing.filter(|&id| self.tree.node(id).as_dir().is_some()) {
                    let n = self.tree.node_mut(id);
                    n.meta = m.meta.clone();
                    n.xattrs = m.xattrs.clone();
                    return Ok(());
                }
                Kind::empty_dir()
            }
            MemberKind::File => Kind::File(file_data(m, stream)?),
            MemberKind::Symlink(t) => Kind::Symlink(t.clone()),
            MemberKind::CharDev { major, minor } => Kind::CharDev { major: *major, minor: *minor },
            MemberKind::BlockDev { major, minor } => Kind::BlockDev { major: *major, minor: *minor },
            MemberKind::Fifo => Kind::Fifo,
            MemberKind::HardLink(_) => return Err(Error::invalid("hard link handled above")),
        };
        let is_dir = matches!(kind, Kind::Dir(_));
        if !is_dir {
            self.check_over_directory(existing, &m.path)?;
        }
        let mut node = Node::new(m.meta.clone(), kind);
        node.xattrs = m.xattrs.clone();
        match existing {
            // A non-directory over a non-directory with no other name: the old node is
            // reused, as inserting would leave it unreachable in the arena.
            Some(old) if !is_dir && self.tree.node(old).as_dir().is_none() && !self.linked.contains(&old) => {
                *self.tree.node_mut(old) = node;
            }
            _ => {
                self.tree.insert(parent, name, node)?;
            }
        }
        Ok(())
    }

    /// The existing directory at `comps` (parents resolved by the policy), or `None`
    /// when some component is missing: where an OCI whiteout or opaque marker applies.
    pub fn existing_dir(&self, comps: &[&[u8]], path: &[u8]) -> Result<Option<NodeId>> {
        let mut cur = NodeId::ROOT;
        let mut hops = 0;
        for i in 0..comps.len() {
            match self.step(cur, comps, i, &mut hops, path)? {
                Some(id) => cur = id,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    fn check_over_directory(&self, existing: Option<NodeId>, path: &[u8]) -> Result<()> {
        let Some(old) = existing else { return Ok(()) };
        match self.tree.node(old).as_dir() {
            Some(d) if !d.is_empty() && self.policy.over_directory == OverDirectory::Refuse => {
                Err(Error::refused(format!("member {} would replace a directory that has entries", display_name(path))))
            }
            _ => Ok(()),
        }
    }

    /// The directory `comps` under the root, made where missing (mode 0755, `mtime`).
    fn make_dirs(&mut self, comps: &[&[u8]], path: &[u8], mtime: Timestamp) -> Result<NodeId> {
        let mut cur = NodeId::ROOT;
        let mut hops = 0;
        for i in 0..comps.len() {
            cur = match self.step(cur, comps, i, &mut hops, path)? {
                Some(id) => id,
                None => self.tree.insert(cur, comps[i], Node::new(Meta::new(0o755, mtime), Kind::empty_dir()))?,
            };
        }
        Ok(cur)
    }

    /// The entry `comps[i]` of directory `cur` as a directory (a symlink resolved by
    /// the policy), `None` when there is no such entry. `hops` counts the links followed
    /// for one path, capped at [`MAX_SYMLINK_HOPS`] as Linux caps a lookup.
    fn step(&self, cur: NodeId, comps: &[&[u8]], i: usize, hops: &mut usize, path: &[u8]) -> Result<Option<NodeId>> {
        let Some(id) = self.tree.lookup(cur, comps[i]) else { return Ok(None) };
        let node = self.tree.node(id);
        let not_dir = |what: String| {
            Error::refused(format!("{} on the path {} {what}", display_name(comps[i]), display_name(path)))
        };
        match &node.kind {
            Kind::Dir(_) => Ok(Some(id)),
            Kind::Symlink(_) if self.policy.parent_symlink == ParentSymlink::FollowInTree => {
                *hops += 1;
                if *hops > MAX_SYMLINK_HOPS {
                    return Err(not_dir(format!(
                        "is one symlink too many (at most {MAX_SYMLINK_HOPS} are followed per path)"
                    )));
                }
                let t = self
                    .tree
                    .resolve(&comps[..=i].join(&b'/'), true)
                    .map_err(|e| not_dir(format!("is a symlink that leads nowhere in the tree ({})", e.message())))?;
                match &self.tree.node(t).kind {
                    Kind::Dir(_) => Ok(Some(t)),
                    k => Err(not_dir(format!("is a symlink to a {}, not a directory", k.name()))),
                }
            }
            Kind::Symlink(_) => Err(not_dir("is a symlink (not followed)".to_string())),
            k => Err(not_dir(format!("is a {}, not a directory", k.name()))),
        }
    }

    /// The earlier member a hard link names: its parents resolved by the policy, its
    /// last component not followed (a hard link to a symlink links the symlink).
    fn link_target(&self, target: &[u8]) -> Result<NodeId> {
        let missing = || {
            Error::refused(format!(
                "hard link to {}, which is not an earlier member of the archive",
                display_name(target)
            ))
            .with_field("linkname")
        };
        let comps = normalize_path(target).map_err(|e| {
            Error::refused(format!("hard link to {}: {}", display_name(target), e.message())).with_field("linkname")
        })?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(Error::refused("hard link to the root directory").with_field("linkname"));
        };
        let dir = self.existing_dir(parents, target)?.ok_or_else(missing)?;
        let id = self.tree.lookup(dir, last).ok_or_else(missing)?;
        if self.tree.node(id).as_dir().is_some() {
            return Err(
                Error::refused(format!("hard link to directory {}", display_name(target))).with_field("linkname")
            );
        }
        Ok(id)
    }
}

fn file_data(m: &Member, stream: &Arc<dyn StreamSource>) -> Result<FileData> {
    let content = match &m.sparse {
        _ if m.size == 0 => Content::Zero,
        Some(runs) => Content::Reader(Arc::new(SparseContent::new(stream.clone(), m.data_offset, runs)?)),
        // A plain tar file: the member is a range of it. One that runs past the file's
        // end stays a stream offset, so the reader reports the truncation, as it does
        // for a compressed archive.
        None => {
            match stream.random_access().filter(|f| m.data_offset.checked_add(m.size).is_some_and(|e| e <= f.size())) {
                Some(file) => {
                    let whole = FileExtent { file_offset: 0, source_offset: m.data_offset, len: m.size };
                    return FileData::blocks(m.size, file, vec![whole]);
                }
                None => Content::Stream { stream: stream.clone(), offset: m.data_offset },
            }
        }
    };
    Ok(FileData { size: m.size, content })
}

/// Reads every member from `reader` into a new tree under [`MemberPolicy::ARCHIVE`];
/// content points into `stream`. Members that cannot be taken over are skipped and
/// reported; a damaged archive or one over [`diskcast_tree::MAX_NODES`] is an error.
/// With `threads` above 1 the headers are read and parsed on a second thread while
/// this one builds the tree (each is about half the work).
pub fn read_tar_stream(
    reader: TarReader,
    stream: Arc<dyn StreamSource>,
    compression: Compression,
    threads: usize,
) -> Result<TarTree> {
    let mut members = MemberTree::new(MemberPolicy::ARCHIVE);
    let mut warnings = Vec::new();
    each_member(reader, threads, |m| {
        if let Err(e) = members.insert(m, &stream) {
            if e.kind() == ErrorKind::OutOfBounds {
                return Err(e);
            }
            warnings.push(skipped(m, &e));
        }
        Ok(())
    })?;
    Ok(TarTree { tree: members.into_tree(), warnings, compression })
}

/// Members handed from the reading thread to the building one at a time.
const MEMBER_BATCH: usize = 256;

/// Batches in flight between the two: bounds the members held to `4 * MEMBER_BATCH`.
const BATCHES_QUEUED: usize = 4;

/// Calls `each` with every member of `reader` in archive order, until the archive ends
/// or either fails (the reader's error comes after the members before it). With
/// `threads` above 1 the reader runs on its own thread, and spent batches go back to it
/// to be freed and refilled: memory is freed by the thread that allocated it, since
/// glibc frees another thread's allocation under that thread's arena lock, and the two
/// threads waited on each other for it on every member (about a sixth of the reader's
/// time in futex calls).
fn each_member(mut reader: TarReader, threads: usize, mut each: impl FnMut(&Member) -> Result<()>) -> Result<()> {
    if threads < 2 {
        while let Some(m) = reader.next_member()? {
            each(&m)?;
        }
        return Ok(());
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Member>>>(BATCHES_QUEUED);
    let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<Vec<Member>>(BATCHES_QUEUED);
    std::thread::scope(|s| {
        diskcast_block::copy::spawn_worker(s, "dc-tar-read", move || {
            let empty = || match spent_rx.try_recv() {
                Ok(mut spent) => {
                    spent.clear();
                    spent
                }
                Err(_) => Vec::with_capacity(MEMBER_BATCH),
            };
            let mut batch = empty();
            loop {
                let (next, last) = match reader.next_member() {
                    Ok(Some(m)) => {
                        batch.push(m);
                        if batch.len() < MEMBER_BATCH {
                            continue;
                        }
                        (None, false)
                    }
                    Ok(None) => (None, true),
                    Err(e) => (Some(e), true),
                };
                // A send fails once the builder stopped: then so does the reader.
                if tx.send(Ok(std::mem::replace(&mut batch, empty()))).is_err() {
                    return;
                }
                if let Some(e) = next {
                    let _ = tx.send(Err(e));
                }
                if last {
                    return;
                }
            }
        });
        // `rx` is dropped on return, which stops the reader at its next batch.
        for batch in rx {
            let batch = batch?;
            for m in &batch {
                each(m)?;
            }
            // Full (the reader is behind on taking them back) or closed: freed here.
            let _ = spent_tx.try_send(batch);
        }
        Ok(())
    })
}

/// The warning for a member [`MemberTree::insert`] refused.
pub fn skipped(m: &Member, e: &Error) -> String {
    format!("skipped member {}: {}", display_name(&m.path), e.message())
}

/// Reads the tar file at `path` (plain, gzip or zstd) into a tree. File content stays
/// in the archive, opened once: sinks read it through that descriptor (and decompress
/// again) when they need the bytes. A
/// compressed one is bounded by the default [`Limits`]. Read on two threads (see
/// [`read_tar_stream`]).
pub fn read_tar(path: &Path) -> Result<TarTree> {
    read_tar_with(path, &Limits::default(), 2)
}

/// [`read_tar`] with other decompression bounds, read by `threads` threads (1 or 2:
/// see [`read_tar_stream`]).
pub fn read_tar_with(path: &Path, limits: &Limits, threads: usize) -> Result<TarTree> {
    read_tar_file(FileStream::open(path)?.with_limits(limits), threads)
}

/// [`read_tar_with`] of a file already opened (a caller that looked at its first block
/// to see that it is a tar reads the same file, not its name again).
pub fn read_tar_file(fs: FileStream, threads: usize) -> Result<TarTree> {
    let compression = fs.compression();
    let name = fs.path().display().to_string();
    // The headers are read through the descriptor the members' bytes are read through.
    let reader = if compression == Compression::None {
        TarReader::from_file(fs.file()?, name)?
    } else {
        TarReader::new(fs.open()?, name)
    };
    read_tar_stream(reader, Arc::new(fs), compression, threads)
}

/// True when `block` (the first 512 bytes of a decompressed stream) is a tar header
/// with a valid checksum written as octal digits, as every tar writer writes it (GNU tar
/// refuses a header without them too). A checksum field of NULs parses as 0, which the
/// signed sum of a disk's first sector can equal by chance: an XFS superblock with few
/// free blocks was taken for a tar that way.
pub fn is_tar_header(block: &[u8]) -> bool {
    let (a, b) = crate::header::CHKSUM;
    block.len() >= crate::header::BLOCK
        && !block[..crate::header::BLOCK].iter().all(|&c| c == 0)
        && block[a..b].iter().any(u8::is_ascii_digit)
        && crate::header::check_checksum(&block[..crate::header::BLOCK]).is_ok()
}

#[cfg(test)]
mod sniff_tests {
    use super::is_tar_header;

    #[test]
    fn a_checksum_field_without_digits_is_not_a_tar() {
        // Two bytes of 0x80 make the signed sum (the NUL checksum field counted as eight
        // spaces, 256) exactly 0, which a NUL field parses as.
        let mut b = [0u8; 512];
        b[0] = 0x80;
        b[1] = 0x80;
        assert!(!is_tar_header(&b));
        // The same block with its unsigned sum written in octal is one.
        let sum: u32 = b.iter().map(|&c| u32::from(c)).sum::<u32>() + 8 * u32::from(b' ');
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b[155] = b' ';
        assert!(is_tar_header(&b));
    }
}
