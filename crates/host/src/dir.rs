//! A host directory read into a tree: every entry lstat'ed, nothing followed.

use diskcast_block::{Error, Result};
use diskcast_tree::{Content, FileData, Kind, Meta, Node, NodeId, Timestamp, Tree, Xattr};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to read a directory.
#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// Do not descend into directories on another filesystem (mount points are kept as
    /// empty directories), like `tar --one-file-system`.
    pub one_file_system: bool,
}

/// Reads the directory `root` into a tree. Entries are `lstat`ed (a symlink is a
/// symlink, never its target), files with one (device, inode) are hard links of one
/// node, and file content stays a reference to the host file. An entry that cannot be
/// read is an error naming it.
pub fn read_dir(root: &Path, opts: &DirOptions) -> Result<Tree> {
    let md = std::fs::symlink_metadata(root).map_err(|e| Error::io("cannot stat", e).with_file(root))?;
    if !md.is_dir() {
        return Err(Error::argument("not a directory").with_file(root));
    }
    let mut root_node = node_for(root, &md)?;
    let mut tree = Tree::new(root_node.meta.clone());
    tree.node_mut(NodeId::ROOT).xattrs = std::mem::take(&mut root_node.xattrs);
    let root_dev = md.dev();
    let mut inodes: HashMap<(u64, u64), NodeId> = HashMap::new();
    let mut stack: Vec<(PathBuf, NodeId)> = vec![(root.to_path_buf(), NodeId::ROOT)];
    while let Some((path, dir)) = stack.pop() {
        let entries = std::fs::read_dir(&path).map_err(|e| Error::io("cannot read directory", e).with_file(&path))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot read directory", e).with_file(&path))?;
            let p = entry.path();
            let md = std::fs::symlink_metadata(&p).map_err(|e| Error::io("cannot stat", e).with_file(&p))?;
            let name = entry.file_name();
            let name = name.as_bytes();
            if md.is_file()
                && md.nlink() > 1
                && let Some(&id) = inodes.get(&(md.dev(), md.ino()))
            {
                tree.link(dir, name, id)?;
                continue;
            }
            let node = node_for(&p, &md)?;
            let is_dir = matches!(node.kind, Kind::Dir(_));
            let id = tree.insert(dir, name, node).map_err(|e| e.with_file(&p))?;
            if md.is_file() && md.nlink() > 1 {
                inodes.insert((md.dev(), md.ino()), id);
            }
            if is_dir && !(opts.one_file_system && md.dev() != root_dev) {
                stack.push((p, id));
            }
        }
    }
    Ok(tree)
}

fn node_for(path: &Path, md: &Metadata) -> Result<Node> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::empty_dir()
    } else if ft.is_file() {
        let content = if md.len() == 0 { Content::Zero } else { Content::Host(Arc::from(path)) };
        Kind::File(FileData { size: md.len(), content })
    } else if ft.is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| Error::io("cannot read symlink", e).with_file(path))?;
        Kind::Symlink(t.as_os_str().as_bytes().to_vec())
    } else if ft.is_char_device() || ft.is_block_device() {
        let dev = md.rdev();
        let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
        if ft.is_char_device() { Kind::CharDev { major, minor } } else { Kind::BlockDev { major, minor } }
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let time = |s: i64, ns: i64| Timestamp { sec: s, nsec: u32::try_from(ns).unwrap_or(0).min(999_999_999) };
    let meta = Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: time(md.mtime(), md.mtime_nsec()),
        atime: Some(time(md.atime(), md.atime_nsec())),
        ctime: Some(time(md.ctime(), md.ctime_nsec())),
    };
    let mut node = Node::new(meta, kind);
    node.xattrs = read_xattrs(path)?;
    Ok(node)
}

/// The extended attributes of `path` itself (`llistxattr`/`lgetxattr`). A filesystem
/// without xattr support has none.
fn read_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    use rustix::io::Errno;
    let err = |e: Errno| Error::io("cannot read extended attributes", std::io::Error::from(e)).with_file(path);
    let mut names = Vec::new();
    for _ in 0..8 {
        let n = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        names.resize(n, 0u8);
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(k) => {
                names.truncate(k);
                break;
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(err(e)),
        }
    }
    let mut out = Vec::new();
    for name in names.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        let mut value = Vec::new();
        for _ in 0..8 {
            let n = match rustix::fs::lgetxattr_query(path, name) {
                Ok(n) => n,
                Err(Errno::NODATA) => break,
                Err(e) => return Err(err(e)),
            };
            value.resize(n, 0u8);
            if n == 0 {
                break;
            }
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(k) => {
                    value.truncate(k);
                    break;
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        out.push(Xattr { name: name.to_vec(), value });
    }
    Ok(out)
}
