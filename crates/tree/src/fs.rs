//! What [`Tree`] offers its users in the manner of `std::fs` (and of ext4-view's `Ext4`):
//! read a file under a cap, test a path, stat it, read a link; and the edits jobs make
//! (`vm` writes configuration files, `iso remaster` grafts directories and removes paths).
//! Every path is a byte string inside the tree (absolute or relative to the root);
//! symbolic links are followed inside the tree, never out of it. Errors are
//! [`TreeError`]s: a stable kind and the path.

use crate::content::FileData;
use crate::model::{Kind, Meta, Node, NodeId, Tree};
use crate::path::{display_name, split_path};
use crate::time::Timestamp;
use diskcast_block::{Error, ErrorKind};
use std::collections::HashMap;
use std::io::Read;

/// What went wrong with a path in a tree. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeErrorKind {
    /// Nothing has that name.
    NotFound,
    /// A component of the path (or the target of a directory operation) is not a
    /// directory.
    NotADirectory,
    /// A directory where a file was asked for (or would be replaced by one).
    IsADirectory,
    /// A symlink, device, fifo or socket where a regular file was asked for.
    NotAFile,
    /// [`Tree::read_link`] of something that is not a symbolic link.
    NotASymlink,
    /// The name is taken ([`Tree::add`]).
    AlreadyExists,
    /// More than [`MAX_SYMLINK_HOPS`](crate::MAX_SYMLINK_HOPS) links on the way.
    SymlinkLoop,
    /// A name [`check_name`](crate::check_name) refuses (empty, `.`, `..`, `/` or NUL inside, too long).
    InvalidName,
    /// The root cannot be removed or replaced.
    IsRoot,
    /// A file larger than the cap the caller gave [`Tree::read`].
    TooLarge,
    /// The tree holds [`MAX_NODES`](crate::MAX_NODES) nodes already.
    TooManyNodes,
    /// The file's content could not be read (the source error is the cause).
    Read,
}

impl TreeErrorKind {
    fn what(self) -> &'static str {
        match self {
            TreeErrorKind::NotFound => "no such file or directory",
            TreeErrorKind::NotADirectory => "not a directory",
            TreeErrorKind::IsADirectory => "is a directory",
            TreeErrorKind::NotAFile => "not a regular file",
            TreeErrorKind::NotASymlink => "not a symbolic link",
            TreeErrorKind::AlreadyExists => "already exists",
            TreeErrorKind::SymlinkLoop => "too many levels of symbolic links",
            TreeErrorKind::InvalidName => "invalid name",
            TreeErrorKind::IsRoot => "is the root directory",
            TreeErrorKind::TooLarge => "too large",
            TreeErrorKind::TooManyNodes => "too many nodes",
            TreeErrorKind::Read => "cannot read",
        }
    }
}

/// An error about one path of a tree: its kind, the path, and what was wrong.
#[derive(Debug)]
pub struct TreeError {
    kind: TreeErrorKind,
    path: Vec<u8>,
    detail: Option<String>,
    source: Option<Box<Error>>,
}

impl TreeError {
    /// An error of `kind` about `path`.
    pub fn new(kind: TreeErrorKind, path: &[u8]) -> Self {
        TreeError { kind, path: path.to_vec(), detail: None, source: None }
    }

    fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    fn read(path: &[u8], e: Error) -> Self {
        TreeError { kind: TreeErrorKind::Read, path: path.to_vec(), detail: None, source: Some(Box::new(e)) }
    }

    /// The stable kind.
    pub fn kind(&self) -> TreeErrorKind {
        self.kind
    }

    /// The path the error is about, as the caller gave it.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// What was wrong, without the path (`no such file or directory`).
    pub fn what(&self) -> String {
        match (&self.detail, &self.source) {
            (Some(d), _) => d.clone(),
            // The source's file and offset travel beside the message (see `From`).
            (None, Some(e)) => e.message().to_string(),
            (None, None) => self.kind.what().to_string(),
        }
    }

    /// The message with the path: `"etc/x": no such file or directory`.
    pub fn message(&self) -> String {
        format!("{}: {}", display_name(&self.path), self.what())
    }
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for TreeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| {
            let e: &(dyn std::error::Error + 'static) = e;
            e
        })
    }
}

impl From<TreeError> for Error {
    /// The block layer's error: a read error keeps its kind, file and offset; a cap is
    /// `OutOfBounds`; the rest are `InvalidFormat`, as a bad path in a source is.
    fn from(e: TreeError) -> Error {
        let kind = match e.kind {
            TreeErrorKind::Read => e.source.as_deref().map_or(ErrorKind::Io, Error::kind),
            TreeErrorKind::TooLarge | TreeErrorKind::TooManyNodes => ErrorKind::OutOfBounds,
            _ => ErrorKind::InvalidFormat,
        };
        let mut out = Error::new(kind, e.message());
        if let Some(src) = &e.source {
            if let Some(f) = src.file() {
                out = out.with_file(f);
            }
            if let Some(o) = src.offset() {
                out = out.with_offset(o);
            }
        }
        out
    }
}

/// The kind of an error [`Tree::insert`] returned: a name [`check_name`](crate::check_name) refused (its
/// errors name the field `name`), the node cap (`OutOfBounds`), or a parent that is not
/// a directory.
pub(crate) fn insert_error(e: &Error) -> TreeErrorKind {
    if e.field() == Some("name") {
        TreeErrorKind::InvalidName
    } else if e.kind() == ErrorKind::OutOfBounds {
        TreeErrorKind::TooManyNodes
    } else {
        TreeErrorKind::NotADirectory
    }
}

/// The type of a node, without its data (see [`Kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

/// What `stat` tells about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The node (for [`Tree::node`]).
    pub id: NodeId,
    /// Its type.
    pub file_type: FileType,
    /// Size in bytes: a file's length, a link target's length, 0 for the rest.
    pub size: u64,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last modification.
    pub mtime: Timestamp,
    /// Last access (`mtime` when the source records none).
    pub atime: Timestamp,
    /// Last status change (`mtime` when the source records none).
    pub ctime: Timestamp,
    /// Names the node has in the tree (directories: 2 plus subdirectories).
    pub nlink: u32,
}

impl Kind {
    /// The node type without its data.
    pub fn file_type(&self) -> FileType {
        match self {
            Kind::Dir(_) => FileType::Dir,
            Kind::File(_) => FileType::File,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::CharDev { .. } => FileType::CharDev,
            Kind::BlockDev { .. } => FileType::BlockDev,
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
        }
    }
}

/// `path` split into its parent's path and its last name; `None` for the root.
fn split_last(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let last = split_path(path).last()?;
    // `last` is a subslice of `path`: its start is where it sits in `path`.
    let start = last.as_ptr().addr() - path.as_ptr().addr();
    Some((&path[..start], last))
}

impl Tree {
    /// True when `path` names something (following symbolic links, as
    /// `std::path::Path::exists`: a dangling link does not exist).
    pub fn exists(&self, path: &[u8]) -> bool {
        self.resolve(path, true).is_ok()
    }

    /// What `stat` says about `path`, following symbolic links.
    pub fn metadata(&self, path: &[u8]) -> Result<Metadata, TreeError> {
        Ok(self.stat(self.resolve(path, true)?))
    }

    /// What `lstat` says about `path`: a symbolic link itself, not its target.
    pub fn symlink_metadata(&self, path: &[u8]) -> Result<Metadata, TreeError> {
        Ok(self.stat(self.resolve(path, false)?))
    }

    /// The metadata of node `id`. A file's link count takes a walk of the tree (use
    /// [`link_counts`](Self::link_counts) for many nodes).
    pub fn stat(&self, id: NodeId) -> Metadata {
        let node = self.node(id);
        let (size, nlink) = match &node.kind {
            Kind::Dir(d) => {
                let subdirs = d.entries().filter(|(_, c)| self.node(*c).as_dir().is_some()).count();
                (0, u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2))
            }
            kind => {
                let size = match kind {
                    Kind::File(f) => f.size,
                    Kind::Symlink(t) => crate::u64_len(t),
                    _ => 0,
                };
                (size, self.link_counts().get(id.index()).copied().unwrap_or(0))
            }
        };
        let m = &node.meta;
        Metadata {
            id,
            file_type: node.kind.file_type(),
            size,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            atime: m.atime.unwrap_or(m.mtime),
            ctime: m.ctime.unwrap_or(m.mtime),
            nlink,
        }
    }

    /// The whole content of the regular file at `path` (symbolic links followed), when it
    /// is at most `limit` bytes: callers read configuration files and package databases
    /// whose size a hostile image chooses, so a larger one is a `TooLarge` error naming
    /// the path, its size and the cap, and nothing is read.
    pub fn read(&self, path: &[u8], limit: u64) -> Result<Vec<u8>, TreeError> {
        let id = self.resolve(path, true)?;
        let f = self.file_at(id, path)?;
        if f.size > limit {
            return Err(TreeError::new(TreeErrorKind::TooLarge, path)
                .detail(format!("{} bytes, more than the {limit}-byte cap", f.size)));
        }
        // Grown as it is read, not reserved at the size the source claims.
        let mut out = Vec::new();
        let r = f.reader().map_err(|e| TreeError::read(path, e))?;
        r.take(limit).read_to_end(&mut out).map_err(|e| {
            // The source's own error (a damaged stream, a decompression cap) when the
            // reader wrapped one; else the I/O error.
            let e = if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
                match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                    Some(Ok(inner)) => *inner,
                    _ => Error::corrupt("unreadable content"),
                }
            } else {
                Error::io("cannot read", e)
            };
            TreeError::read(path, e)
        })?;
        Ok(out)
    }

    /// Like [`read`](Self::read), but `None` when no regular file is at `path` (nothing
    /// there, a directory, a special file, a dangling or looping link): how jobs read a
    /// configuration file or package database an image may or may not have.
    pub fn read_optional(&self, path: &[u8], limit: u64) -> Result<Option<Vec<u8>>, TreeError> {
        match self.read(path, limit) {
            Ok(b) => Ok(Some(b)),
            Err(e) if matches!(e.kind, TreeErrorKind::TooLarge | TreeErrorKind::Read) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The regular file node `id` (found at `path`).
    fn file_at(&self, id: NodeId, path: &[u8]) -> Result<&FileData, TreeError> {
        match &self.node(id).kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(TreeError::new(TreeErrorKind::IsADirectory, path)),
            _ => Err(TreeError::new(TreeErrorKind::NotAFile, path)),
        }
    }

    /// The target of the symbolic link at `path` (the link itself is not followed).
    pub fn read_link(&self, path: &[u8]) -> Result<Vec<u8>, TreeError> {
        match &self.node(self.resolve(path, false)?).kind {
            Kind::Symlink(t) => Ok(t.clone()),
            _ => Err(TreeError::new(TreeErrorKind::NotASymlink, path)),
        }
    }

    /// The directory at `path`, made with `meta` where missing (as `mkdir -p`). Symbolic
    /// links on the way are followed inside the tree (an image's `/lib` -> `usr/lib`);
    /// anything else that is not a directory is a `NotADirectory` error, and `..` an
    /// `InvalidName` one (a path given to make never climbs).
    pub fn create_dir_all(&mut self, path: &[u8], meta: &Meta) -> Result<NodeId, TreeError> {
        let mut cur = NodeId::ROOT;
        let mut walked: Vec<u8> = Vec::new();
        for comp in split_path(path) {
            walked.push(b'/');
            walked.extend_from_slice(comp);
            cur = match self.node(cur).as_dir().and_then(|d| d.get(comp)) {
                Some(id) => {
                    let id = match self.node(id).kind {
                        Kind::Symlink(_) => self.resolve(&walked, true)?,
                        _ => id,
                    };
                    if self.node(id).as_dir().is_none() {
                        return Err(TreeError::new(TreeErrorKind::NotADirectory, &walked));
                    }
                    id
                }
                None => self.new_entry(cur, comp, Node::new(meta.clone(), Kind::empty_dir()), &walked)?,
            };
        }
        Ok(cur)
    }

    /// [`insert`](Self::insert) with a typed error naming `path`.
    fn new_entry(&mut self, parent: NodeId, name: &[u8], node: Node, path: &[u8]) -> Result<NodeId, TreeError> {
        self.insert(parent, name, node).map_err(|e| TreeError::new(insert_error(&e), path))
    }

    /// Stores a regular file of `data` with `meta` at `path`, replacing a file, link or
    /// special file of that name (a directory there is an `IsADirectory` error). Missing
    /// parent directories are made as [`create_dir_all`](Self::create_dir_all) makes
    /// them, with `meta`'s owner and times and mode 0755.
    pub fn put_file(&mut self, path: &[u8], data: FileData, meta: Meta) -> Result<NodeId, TreeError> {
        let (parent, name) = split_last(path).ok_or_else(|| TreeError::new(TreeErrorKind::IsRoot, path))?;
        let dir = self.create_dir_all(parent, &Meta { mode: 0o755, ..meta.clone() })?;
        if self.node(dir).as_dir().and_then(|d| d.get(name)).is_some_and(|id| self.node(id).as_dir().is_some()) {
            return Err(TreeError::new(TreeErrorKind::IsADirectory, path));
        }
        self.new_entry(dir, name, Node::new(meta, Kind::File(data)), path)
    }

    /// Copies every entry of `src` into the existing directory `path` of this tree
    /// (symbolic links followed): directories merge with a directory of the same name,
    /// anything else replaces what has its name, hard links within `src` stay hard
    /// links. Content stays a reference into `src`'s sources; `src`'s root metadata is
    /// not copied.
    pub fn graft(&mut self, path: &[u8], src: &Tree) -> Result<(), TreeError> {
        let at = self.resolve(path, true)?;
        if self.node(at).as_dir().is_none() {
            return Err(TreeError::new(TreeErrorKind::NotADirectory, path));
        }
        let mut done: HashMap<NodeId, NodeId> = HashMap::new();
        let mut stack = vec![(src.root(), at)];
        let mut subdirs = Vec::new();
        while let Some((from, to)) = stack.pop() {
            let Some(dir) = src.node(from).as_dir() else { continue };
            for (name, id) in dir.entries() {
                if let Some(&copy) = done.get(&id) {
                    self.link(to, name, copy).map_err(|_| TreeError::new(TreeErrorKind::InvalidName, name))?;
                    continue;
                }
                let node = src.node(id);
                let existing = self.lookup(to, name).filter(|&e| self.node(e).as_dir().is_some());
                let new = match (&node.kind, existing) {
                    (Kind::Dir(_), Some(e)) => e,
                    _ => self.new_entry(to, name, node.clone(), name)?,
                };
                done.insert(id, new);
                if node.as_dir().is_some() {
                    subdirs.push((id, new));
                }
            }
            // Reversed so they pop in name order: the walk order `src.walk` has.
            stack.extend(subdirs.drain(..).rev());
        }
        Ok(())
    }

    /// Removes the entry at `path` (a file, link or special file, or a directory with
    /// everything in it); a symbolic link is removed, not its target. Returns the node
    /// it named. Other names of a hard-linked file keep it.
    pub fn remove(&mut self, path: &[u8]) -> Result<NodeId, TreeError> {
        let (parent, name) = split_last(path).ok_or_else(|| TreeError::new(TreeErrorKind::IsRoot, path))?;
        if name == b".." {
            return Err(TreeError::new(TreeErrorKind::InvalidName, path));
        }
        let dir = self.resolve(parent, true)?;
        if self.node(dir).as_dir().is_none() {
            return Err(TreeError::new(TreeErrorKind::NotADirectory, path));
        }
        self.unlink(dir, name).ok_or_else(|| TreeError::new(TreeErrorKind::NotFound, path))
    }
}
