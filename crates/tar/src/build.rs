//! Tar members into a tree: path checks, missing parents, hard links.

use crate::compress::{Compression, FileStream, Limits};
use crate::reader::{Member, MemberKind, TarReader};
use crate::sparse::SparseContent;
use diskcast_block::{Error, ErrorKind, Result};
use diskcast_tree::{
    Content, FileData, Kind, Meta, Node, NodeId, StreamSource, Timestamp, Tree, display_name, split_path,
};
use std::path::Path;
use std::sync::Arc;

/// A tar read into a tree, with what could not be taken over.
#[derive(Debug)]
pub struct TarTree {
    /// The tree.
    pub tree: Tree,
    /// Members skipped, one message each (a path with `..`, a hard link to nothing, a
    /// path under a symlink...).
    pub warnings: Vec<String>,
    /// How the archive was compressed.
    pub compression: Compression,
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

/// Adds one member to `tree`, whose file content is read from `stream` (the stream the
/// member's [`Member::data_offset`] points into). Missing parent directories are
/// created (mode 0755, the member's mtime). A later member replaces an earlier one of the
/// same path, except that a directory over a directory only updates its metadata.
///
/// Refused (an error, the tree unchanged): a path with `..`; a parent that is not a
/// directory in the tree (a symlink is never followed); a hard link whose target is not
/// an earlier non-directory member.
pub fn insert_member(tree: &mut Tree, m: &Member, stream: &Arc<dyn StreamSource>) -> Result<()> {
    let comps = normalize_path(&m.path)?;
    let Some((name, parents)) = comps.split_last() else {
        // `./`: the root directory's own metadata.
        if m.kind != MemberKind::Dir {
            return Err(Error::invalid("member names the root directory but is not a directory"));
        }
        let root = tree.node_mut(NodeId::ROOT);
        root.meta = m.meta.clone();
        root.xattrs = m.xattrs.clone();
        return Ok(());
    };
    let parent = parent_dir(tree, parents, &m.path, &m.meta.mtime)?;
    let kind = match &m.kind {
        MemberKind::Dir => {
            if let Some(id) = tree.lookup(parent, name).filter(|&id| tree.node(id).as_dir().is_some()) {
                let n = tree.node_mut(id);
                n.meta = m.meta.clone();
                n.xattrs = m.xattrs.clone();
                return Ok(());
            }
            Kind::empty_dir()
        }
        MemberKind::File => Kind::File(file_data(m, stream)?),
        MemberKind::Symlink(t) => Kind::Symlink(t.clone()),
        MemberKind::HardLink(target) => {
            let id = lookup_no_follow(tree, target)?;
            if tree.lookup(parent, name) == Some(id) {
                return Ok(());
            }
            return tree.link(parent, name, id);
        }
        MemberKind::CharDev { major, minor } => Kind::CharDev { major: *major, minor: *minor },
        MemberKind::BlockDev { major, minor } => Kind::BlockDev { major: *major, minor: *minor },
        MemberKind::Fifo => Kind::Fifo,
    };
    let mut node = Node::new(m.meta.clone(), kind);
    node.xattrs = m.xattrs.clone();
    tree.insert(parent, name, node)?;
    Ok(())
}

fn file_data(m: &Member, stream: &Arc<dyn StreamSource>) -> Result<FileData> {
    let content = match &m.sparse {
        Some(runs) => Content::Reader(Arc::new(SparseContent::new(stream.clone(), m.data_offset, runs)?)),
        None if m.size == 0 => Content::Zero,
        None => Content::Stream { stream: stream.clone(), offset: m.data_offset },
    };
    Ok(FileData { size: m.size, content })
}

/// The directory `parents` under the root, created where missing.
fn parent_dir(tree: &mut Tree, parents: &[&[u8]], path: &[u8], mtime: &Timestamp) -> Result<NodeId> {
    let mut cur = NodeId::ROOT;
    for comp in parents {
        cur = match tree.lookup(cur, comp) {
            Some(id) if tree.node(id).as_dir().is_some() => id,
            Some(id) => {
                return Err(Error::refused(format!(
                    "member {}: {} on its path is a {}, not a directory (never followed)",
                    display_name(path),
                    display_name(comp),
                    tree.node(id).kind.name()
                )));
            }
            None => tree.insert(cur, comp, Node::new(Meta::new(0o755, *mtime), Kind::empty_dir()))?,
        };
    }
    Ok(cur)
}

/// The earlier member at `target`, symlinks not followed.
fn lookup_no_follow(tree: &Tree, target: &[u8]) -> Result<NodeId> {
    let missing = || {
        Error::refused(format!("hard link to {}, which is not an earlier member of the archive", display_name(target)))
            .with_field("linkname")
    };
    let comps = normalize_path(target).map_err(|_| missing())?;
    let mut cur = NodeId::ROOT;
    for c in &comps {
        cur = tree.lookup(cur, c).ok_or_else(missing)?;
    }
    if comps.is_empty() || tree.node(cur).as_dir().is_some() {
        return Err(Error::refused(format!("hard link to directory {}", display_name(target))).with_field("linkname"));
    }
    Ok(cur)
}

/// Reads every member from `reader` into a new tree; content points into `stream`.
/// Members that cannot be taken over are skipped and reported; a damaged archive or one
/// over [`diskcast_tree::MAX_NODES`] is an error.
pub fn read_tar_stream(
    mut reader: TarReader,
    stream: Arc<dyn StreamSource>,
    compression: Compression,
) -> Result<TarTree> {
    let mut tree = Tree::new(Meta::new(0o755, Timestamp::default()));
    let mut warnings = Vec::new();
    while let Some(m) = reader.next_member()? {
        if let Err(e) = insert_member(&mut tree, &m, &stream) {
            if e.kind() == ErrorKind::OutOfBounds {
                return Err(e);
            }
            warnings.push(format!("skipped member {}: {}", display_name(&m.path), e.message()));
        }
    }
    Ok(TarTree { tree, warnings, compression })
}

/// Reads the tar file at `path` (plain, gzip or zstd) into a tree. File content stays
/// in the archive: sinks reopen it (and decompress) when they need the bytes. A
/// compressed one is bounded by the default [`Limits`].
pub fn read_tar(path: &Path) -> Result<TarTree> {
    read_tar_with(path, &Limits::default())
}

/// [`read_tar`] with other decompression bounds.
pub fn read_tar_with(path: &Path, limits: &Limits) -> Result<TarTree> {
    let fs = FileStream::open(path)?.with_limits(limits);
    let compression = fs.compression();
    let stream: Arc<dyn StreamSource> = Arc::new(fs);
    let name = path.display().to_string();
    let reader = if compression == Compression::None {
        let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
        TarReader::from_file(f, name)?
    } else {
        TarReader::new(stream.open()?, name)
    };
    read_tar_stream(reader, stream, compression)
}

/// True when `block` (the first 512 bytes of a decompressed stream) is a tar header
/// with a valid checksum.
pub fn is_tar_header(block: &[u8]) -> bool {
    block.len() >= crate::header::BLOCK
        && !block[..crate::header::BLOCK].iter().all(|&c| c == 0)
        && crate::header::check_checksum(&block[..crate::header::BLOCK]).is_ok()
}
