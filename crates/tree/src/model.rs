//! The tree: an arena of nodes, directories as sorted name maps, hard links as shared ids.

use crate::MAX_NODES;
use crate::content::FileData;
use crate::fs::{TreeError, TreeErrorKind};
use crate::path::{MAX_SYMLINK_HOPS, check_name, display_name, split_path};
use crate::time::Timestamp;
use diskcast_block::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// Index of a node in its [`Tree`]. Only meaningful for the tree that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NodeId(u32);

impl NodeId {
    /// The root directory of every tree.
    pub const ROOT: NodeId = NodeId(0);

    /// The arena index.
    pub fn index(self) -> usize {
        diskcast_layout::usize_from(self.0)
    }
}

/// Ownership, permissions and times, as every Unix filesystem keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (`0o7777`); the file type is the
    /// node's [`Kind`], never these bits.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Last modification.
    pub mtime: Timestamp,
    /// Last access, when the source records it (sinks use `mtime` otherwise).
    pub atime: Option<Timestamp>,
    /// Last status change, when the source records it (sinks use `mtime` otherwise).
    pub ctime: Option<Timestamp>,
}

impl Meta {
    /// Permissions `mode & 0o7777`, owned by root, at `mtime`.
    pub fn new(mode: u32, mtime: Timestamp) -> Self {
        Meta { mode: mode & 0o7777, uid: 0, gid: 0, mtime, atime: None, ctime: None }
    }
}

/// One extended attribute (`security.capability`, `user.*`, `system.posix_acl_access`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Xattr {
    /// Full name with its namespace prefix, as Linux spells it.
    pub name: Vec<u8>,
    /// The raw value (ACLs in Linux's xattr encoding).
    pub value: Vec<u8>,
}

/// A directory: entry names (sorted, so every sink writes the same order: reproducible
/// output) and the one parent directory it hangs from.
#[derive(Debug, Clone, Default)]
pub struct Dir {
    entries: BTreeMap<Vec<u8>, NodeId>,
    parent: NodeId,
}

impl Dir {
    /// The entries in name order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&[u8], NodeId)> {
        self.entries.iter().map(|(n, &id)| (n.as_slice(), id))
    }
    /// The node named `name`, if any.
    pub fn get(&self, name: &[u8]) -> Option<NodeId> {
        self.entries.get(name).copied()
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// True when the directory has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// The directory this one is an entry of (the root is its own parent).
    pub fn parent(&self) -> NodeId {
        self.parent
    }
}

/// What a node is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A directory.
    Dir(Dir),
    /// A regular file and where its bytes are.
    File(FileData),
    /// A symbolic link and its target, as bytes (never followed out of the tree).
    Symlink(Vec<u8>),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    /// An empty directory (its parent is set when it is inserted).
    pub fn empty_dir() -> Self {
        Kind::Dir(Dir::default())
    }

    /// The `S_IFMT` bits for this kind, as `stat` and ext4 store them.
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir(_) => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// One letter as `ls -l` prints it (`d`, `-`, `l`, `c`, `b`, `p`, `s`).
    pub fn letter(&self) -> char {
        match self {
            Kind::Dir(_) => 'd',
            Kind::File(_) => '-',
            Kind::Symlink(_) => 'l',
            Kind::CharDev { .. } => 'c',
            Kind::BlockDev { .. } => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    /// A lowercase name for JSON and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir(_) => "dir",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev { .. } => "char-device",
            Kind::BlockDev { .. } => "block-device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// A file, directory, link or special file.
#[derive(Debug, Clone)]
pub struct Node {
    /// Owner, permissions, times.
    pub meta: Meta,
    /// What it is, and for files where the bytes are.
    pub kind: Kind,
    /// Extended attributes in the order the source gave them.
    pub xattrs: Vec<Xattr>,
}

impl Node {
    /// A node with no extended attributes.
    pub fn new(meta: Meta, kind: Kind) -> Self {
        Node { meta, kind, xattrs: Vec::new() }
    }

    /// `S_IFMT` type bits and permission bits together, as `st_mode`.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.meta.mode & 0o7777)
    }

    /// The directory, when this node is one.
    pub fn as_dir(&self) -> Option<&Dir> {
        match &self.kind {
            Kind::Dir(d) => Some(d),
            _ => None,
        }
    }

    /// The file data, when this node is a regular file.
    pub fn as_file(&self) -> Option<&FileData> {
        match &self.kind {
            Kind::File(f) => Some(f),
            _ => None,
        }
    }
}

/// Counts over the nodes reachable from the root (hard-linked files count once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TreeStats {
    /// Directories, the root included.
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub specials: u64,
    /// Names that point at a file node already counted (extra hard links).
    pub hardlinks: u64,
    /// Sum of the sizes of the regular files.
    pub file_bytes: u64,
}

/// A tree of nodes. Node 0 is the root directory.
#[derive(Debug, Clone)]
pub struct Tree {
    pub(crate) nodes: Vec<Node>,
}

impl Tree {
    /// A tree holding only a root directory with `meta`.
    pub fn new(meta: Meta) -> Self {
        Tree { nodes: vec![Node::new(meta, Kind::empty_dir())] }
    }

    /// The root directory.
    pub fn root(&self) -> NodeId {
        NodeId::ROOT
    }

    /// Number of nodes in the arena (including any no longer reachable after a removal).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The node `id`, to change its metadata, xattrs or file data. Changing a directory's
    /// entries goes through [`insert`](Self::insert) and friends, which keep the tree
    /// acyclic.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// The directory `id`, or an error naming it when it is not one.
    pub fn dir(&self, id: NodeId) -> Result<&Dir> {
        self.node(id).as_dir().ok_or_else(|| Error::invalid("not a directory"))
    }

    fn dir_mut(&mut self, id: NodeId) -> Result<&mut Dir> {
        match &mut self.nodes[id.index()].kind {
            Kind::Dir(d) => Ok(d),
            _ => Err(Error::invalid("not a directory")),
        }
    }

    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.node(dir).as_dir().and_then(|d| d.get(name))
    }

    fn push(&mut self, node: Node) -> Result<NodeId> {
        if self.nodes.len() >= MAX_NODES {
            return Err(Error::out_of_bounds(format!("tree has more than {MAX_NODES} nodes")));
        }
        // MAX_NODES is below u32::MAX, so the index fits.
        let id = NodeId(u32::try_from(self.nodes.len()).map_err(|_| Error::out_of_bounds("tree too large"))?);
        self.nodes.push(node);
        Ok(id)
    }

    /// Adds `node` as `name` in directory `parent`, replacing any entry of that name (a
    /// later tar member or layer wins). The name is checked with [`check_name`]. Returns
    /// the new node's id.
    pub fn insert(&mut self, parent: NodeId, name: &[u8], mut node: Node) -> Result<NodeId> {
        check_name(name)?;
        self.dir(parent)?;
        if let Kind::Dir(d) = &mut node.kind {
            // A new directory starts empty: entries come through insert, never by hand,
            // so no directory can end up inside itself.
            d.entries.clear();
            d.parent = parent;
        }
        let id = self.push(node)?;
        self.dir_mut(parent)?.entries.insert(name.to_vec(), id);
        Ok(id)
    }

    /// Like [`insert`](Self::insert), but an existing entry of that name is an
    /// `AlreadyExists` error naming it.
    pub fn add(&mut self, parent: NodeId, name: &[u8], node: Node) -> Result<NodeId, TreeError> {
        if self.lookup(parent, name).is_some() {
            return Err(TreeError::new(TreeErrorKind::AlreadyExists, name));
        }
        self.insert(parent, name, node).map_err(|e| TreeError::new(crate::fs::insert_error(&e), name))
    }

    /// Makes `name` in `parent` a second name (hard link) of the existing non-directory
    /// node `target`, replacing any entry of that name.
    pub fn link(&mut self, parent: NodeId, name: &[u8], target: NodeId) -> Result<()> {
        check_name(name)?;
        if target.index() >= self.nodes.len() {
            return Err(Error::invalid("hard link to a node that does not exist"));
        }
        if self.node(target).as_dir().is_some() {
            return Err(Error::invalid(format!("hard link {} to a directory", display_name(name))));
        }
        self.dir_mut(parent)?.entries.insert(name.to_vec(), target);
        Ok(())
    }

    /// Removes the entry `name` from `parent` and returns what it named. The node stays in
    /// the arena but is no longer reachable through that name.
    pub fn unlink(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        match &mut self.nodes[parent.index()].kind {
            Kind::Dir(d) => d.entries.remove(name),
            _ => None,
        }
    }

    /// Removes every entry of directory `dir` (an opaque whiteout).
    pub fn clear_dir(&mut self, dir: NodeId) -> Result<()> {
        self.dir_mut(dir)?.entries.clear();
        Ok(())
    }

    /// The node at `path` (absolute or relative to the root; the root's `..` is the root).
    /// Symbolic links in the middle of the path are followed inside the tree (an absolute
    /// target starts again at the root), and the last one too when `follow_last`. At most
    /// [`MAX_SYMLINK_HOPS`] links are followed, so link loops end in an error.
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<NodeId, TreeError> {
        let mut hops = 0;
        self.resolve_from(NodeId::ROOT, path, follow_last, &mut hops).map_err(|kind| TreeError::new(kind, path))
    }

    fn resolve_from(
        &self,
        start: NodeId,
        path: &[u8],
        follow_last: bool,
        hops: &mut usize,
    ) -> Result<NodeId, TreeErrorKind> {
        let mut cur = if path.starts_with(b"/") { NodeId::ROOT } else { start };
        let comps: Vec<&[u8]> = split_path(path).collect();
        for (i, comp) in comps.iter().enumerate() {
            let dir = self.node(cur).as_dir().ok_or(TreeErrorKind::NotADirectory)?;
            if *comp == b".." {
                cur = dir.parent;
                continue;
            }
            let next = dir.get(comp).ok_or(TreeErrorKind::NotFound)?;
            let last = i + 1 == comps.len();
            cur = match &self.node(next).kind {
                Kind::Symlink(target) if !last || follow_last => {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err(TreeErrorKind::SymlinkLoop);
                    }
                    self.resolve_from(cur, target, true, hops)?
                }
                _ => next,
            };
        }
        Ok(cur)
    }

    /// Every node reachable from `start`, depth first, each directory's entries in name
    /// order, with its path relative to `start` (empty for `start` itself). A hard-linked
    /// file appears once per name.
    pub fn walk(&self, start: NodeId) -> Walk<'_> {
        Walk { tree: self, stack: vec![(Vec::new(), start)] }
    }

    /// What [`Tree::walk`] visits, without building paths (for counting): every node
    /// reachable from `start`, once per name.
    fn reachable(&self, start: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        let mut stack = vec![start];
        std::iter::from_fn(move || {
            let id = stack.pop()?;
            if let Kind::Dir(d) = &self.node(id).kind {
                stack.extend(d.entries.values().copied());
            }
            Some(id)
        })
    }

    /// How many names each node has, indexed by [`NodeId::index`]: what `st_nlink` should
    /// be for files. Directories get 2 plus their subdirectories, as on Linux.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes.len()];
        counts[0] = 2;
        for id in self.reachable(NodeId::ROOT) {
            if let Kind::Dir(d) = &self.node(id).kind {
                for (_, child) in d.entries() {
                    let c = &mut counts[child.index()];
                    *c = c.saturating_add(if self.node(child).as_dir().is_some() { 2 } else { 1 });
                    if self.node(child).as_dir().is_some() {
                        counts[id.index()] = counts[id.index()].saturating_add(1);
                    }
                }
            }
        }
        counts
    }

    /// Counts of what the tree holds, each hard-linked file once.
    pub fn stats(&self) -> TreeStats {
        let mut s = TreeStats::default();
        let mut seen = vec![false; self.nodes.len()];
        for id in self.reachable(NodeId::ROOT) {
            if std::mem::replace(&mut seen[id.index()], true) {
                s.hardlinks += 1;
                continue;
            }
            match &self.node(id).kind {
                Kind::Dir(_) => s.dirs += 1,
                Kind::File(f) => {
                    s.files += 1;
                    s.file_bytes = s.file_bytes.saturating_add(f.size);
                }
                Kind::Symlink(_) => s.symlinks += 1,
                _ => s.specials += 1,
            }
        }
        s
    }
}

/// Iterator of [`Tree::walk`].
#[derive(Debug)]
pub struct Walk<'a> {
    tree: &'a Tree,
    stack: Vec<(Vec<u8>, NodeId)>,
}

impl Iterator for Walk<'_> {
    type Item = (Vec<u8>, NodeId);

    fn next(&mut self) -> Option<Self::Item> {
        let (path, id) = self.stack.pop()?;
        if let Kind::Dir(d) = &self.tree.node(id).kind {
            // Pushed in reverse so they pop in name order.
            for (name, child) in d.entries.iter().rev() {
                // Made at its final size: growing a clone reallocates every path.
                let mut p = Vec::with_capacity(path.len() + 1 + name.len());
                p.extend_from_slice(&path);
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                self.stack.push((p, *child));
            }
        }
        Some((path, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    fn file(bytes: &[u8]) -> Node {
        Node::new(Meta::new(0o644, Timestamp::default()), Kind::File(FileData::inline(bytes.to_vec())))
    }
    fn dir() -> Node {
        Node::new(Meta::new(0o755, Timestamp::default()), Kind::empty_dir())
    }

    #[test]
    fn insert_lookup_walk_in_name_order() {
        let mut t = Tree::new(Meta::new(0o755, Timestamp::default()));
        let etc = t.insert(NodeId::ROOT, b"etc", dir()).unwrap();
        t.insert(etc, b"passwd", file(b"root")).unwrap();
        t.insert(NodeId::ROOT, b"bin", dir()).unwrap();
        let paths: Vec<_> = t.walk(NodeId::ROOT).map(|(p, _)| String::from_utf8(p).unwrap()).collect();
        assert_eq!(paths, ["", "bin", "etc", "etc/passwd"]);
        let id = t.resolve(b"/etc/../etc/passwd", false).unwrap();
        assert!(matches!(t.node(id).as_file().unwrap().content, Content::Inline(_)));
    }

    #[test]
    fn a_directory_inserted_with_entries_starts_empty() {
        let mut t = Tree::new(Meta::default());
        let a = t.insert(NodeId::ROOT, b"a", dir()).unwrap();
        // Copying a's node (with whatever entries) under a must not make a cycle.
        let mut again = t.node(a).clone();
        if let Kind::Dir(d) = &mut again.kind {
            d.entries.insert(b"loop".to_vec(), a);
        }
        let b = t.insert(a, b"b", again).unwrap();
        assert!(t.dir(b).unwrap().is_empty());
        assert_eq!(t.walk(NodeId::ROOT).count(), 3);
    }

    #[test]
    fn hard_links_share_a_node_and_count_once() {
        let mut t = Tree::new(Meta::default());
        let f = t.insert(NodeId::ROOT, b"a", file(b"xyz")).unwrap();
        t.link(NodeId::ROOT, b"b", f).unwrap();
        let d = t.insert(NodeId::ROOT, b"d", dir()).unwrap();
        let e = t.link(NodeId::ROOT, b"dl", d).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("to a directory"), "{e}");
        let s = t.stats();
        assert_eq!((s.files, s.hardlinks, s.dirs, s.file_bytes), (1, 1, 2, 3));
        let n = t.link_counts();
        assert_eq!(n[f.index()], 2);
        assert_eq!(n[NodeId::ROOT.index()], 3);
        assert_eq!(n[d.index()], 2);
    }

    #[test]
    fn symlinks_resolve_inside_the_tree_and_loops_end() {
        let mut t = Tree::new(Meta::default());
        let usr = t.insert(NodeId::ROOT, b"usr", dir()).unwrap();
        let bin = t.insert(usr, b"bin", dir()).unwrap();
        t.insert(bin, b"sh", file(b"#!")).unwrap();
        let l = Node::new(Meta::default(), Kind::Symlink(b"usr/bin".to_vec()));
        t.insert(NodeId::ROOT, b"bin", l).unwrap();
        let abs = Node::new(Meta::default(), Kind::Symlink(b"/../../usr/bin/sh".to_vec()));
        t.insert(NodeId::ROOT, b"abs", abs).unwrap();
        let sh = t.resolve(b"bin/sh", false).unwrap();
        assert_eq!(t.resolve(b"abs", true).unwrap(), sh);
        t.insert(NodeId::ROOT, b"x", Node::new(Meta::default(), Kind::Symlink(b"y".to_vec()))).unwrap();
        t.insert(NodeId::ROOT, b"y", Node::new(Meta::default(), Kind::Symlink(b"x".to_vec()))).unwrap();
        let e = t.resolve(b"x", true).unwrap_err();
        assert_eq!((e.kind(), e.path()), (TreeErrorKind::SymlinkLoop, &b"x"[..]));
        assert!(e.to_string().contains("too many levels"), "{e}");
    }

    #[test]
    fn create_dir_all_and_bad_names() {
        let mut t = Tree::new(Meta::default());
        let c = t.create_dir_all(b"a/b/c", &Meta::new(0o700, Timestamp::default())).unwrap();
        assert_eq!(t.resolve(b"a/b/c", false).unwrap(), c);
        let e = t.create_dir_all(b"a/../x", &Meta::default()).unwrap_err();
        assert_eq!((e.kind(), e.path()), (TreeErrorKind::InvalidName, &b"/a/.."[..]));
        let e = t.insert(NodeId::ROOT, b"a/b", file(b"")).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("contains '/'"), "{e}");
        let e = t.add(NodeId::ROOT, b"a", file(b"")).unwrap_err();
        assert_eq!((e.kind(), e.path()), (TreeErrorKind::AlreadyExists, &b"a"[..]));
        assert_eq!(e.to_string(), "\"a\": already exists");
        let e = t.add(NodeId::ROOT, b"..", file(b"")).unwrap_err();
        assert_eq!((e.kind(), e.path()), (TreeErrorKind::InvalidName, &b".."[..]));
        t.insert(NodeId::ROOT, b"f", file(b"")).unwrap();
        let e = t.create_dir_all(b"f/g", &Meta::default()).unwrap_err();
        assert_eq!((e.kind(), e.path()), (TreeErrorKind::NotADirectory, &b"/f"[..]));
    }
}
