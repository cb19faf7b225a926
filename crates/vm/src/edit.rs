//! Small edits of a [`Tree`]: new or replaced files and directories. The source the tree
//! came from is never touched; a replaced file just names new content.

use diskcast_block::{Error, Result};
use diskcast_tree::{FileData, Kind, Meta, Node, NodeId, Timestamp, Tree, split_path};

/// The directory `path`, following symbolic links inside the tree (an image's `/lib` ->
/// `usr/lib`) and creating what is missing (mode 0755, root-owned, at `now`).
pub fn dir(tree: &mut Tree, path: &str, now: i64) -> Result<NodeId> {
    let mut cur = NodeId::ROOT;
    let mut walked = String::new();
    for comp in split_path(path.as_bytes()) {
        walked.push('/');
        walked.push_str(&String::from_utf8_lossy(comp));
        cur = match tree.lookup(cur, comp) {
            None => {
                tree.insert(cur, comp, Node::new(Meta::new(0o755, Timestamp::from_secs(now)), Kind::empty_dir()))?
            }
            Some(id) => {
                let id = match tree.node(id).kind {
                    Kind::Symlink(_) => tree.resolve(walked.as_bytes(), true)?,
                    _ => id,
                };
                if tree.node(id).as_dir().is_none() {
                    return Err(Error::invalid(format!("{walked} in the image is not a directory")));
                }
                id
            }
        };
    }
    Ok(cur)
}

/// Stores `data` at `path` (replacing any file, link or special file of that name) with
/// permissions `mode`, owned by root.
pub fn put(tree: &mut Tree, path: &str, data: FileData, mode: u32, now: i64) -> Result<NodeId> {
    let (parent, name) = path.rsplit_once('/').ok_or_else(|| Error::invalid(format!("{path}: not absolute")))?;
    let d = dir(tree, parent, now)?;
    if tree.lookup(d, name.as_bytes()).is_some_and(|id| tree.node(id).as_dir().is_some()) {
        return Err(Error::invalid(format!("{path} in the image is a directory, not a file")));
    }
    tree.insert(d, name.as_bytes(), Node::new(Meta::new(mode, Timestamp::from_secs(now)), Kind::File(data)))
}

/// Stores the bytes `text` at `path`.
pub fn put_bytes(tree: &mut Tree, path: &str, text: impl Into<Vec<u8>>, mode: u32, now: i64) -> Result<NodeId> {
    put(tree, path, FileData::inline(text.into()), mode, now)
}

/// The bytes of the regular file at `path` (following links), if there is one no larger
/// than `limit` (configuration files: `/etc/shadow`, `/etc/os-release`).
pub fn read_small(tree: &Tree, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let Ok(id) = tree.resolve(path.as_bytes(), true) else { return Ok(None) };
    let Some(f) = tree.node(id).as_file() else { return Ok(None) };
    if f.size > limit {
        return Err(Error::refused(format!("{path} in the image is {} bytes, more than the {limit} expected", f.size)));
    }
    let mut buf = vec![0u8; f.size as usize];
    f.read_at(&mut buf, 0)?;
    Ok(Some(buf))
}

/// True when `path` names anything in the tree (following links).
pub fn exists(tree: &Tree, path: &str) -> bool {
    tree.resolve(path.as_bytes(), true).is_ok()
}
