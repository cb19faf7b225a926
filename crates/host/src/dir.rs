//! A host directory read into a tree through directory descriptors: every entry opened
//! beneath its parent's descriptor without following anything, content recorded as a
//! [`HostFile`] that is reopened beneath the scanned root and checked when read.

use diskcast_block::{Error, Result};
use diskcast_tree::{Content, FileData, HostFile, Kind, Meta, Node, NodeId, Timestamp, Tree, Xattr};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How to read a directory.
#[derive(Debug, Clone, Default)]
pub struct DirOptions {
    /// Do not descend into directories on another filesystem (mount points are kept as
    /// empty directories), like `tar --one-file-system`.
    pub one_file_system: bool,
}

/// Reads the directory `root` into a tree. Each entry is opened with `O_PATH |
/// O_NOFOLLOW` beneath its parent's descriptor and `fstat`ed (a symlink is a symlink,
/// never its target); subdirectories are opened beneath the root without following any
/// symlink and must be the directory scanned; files with one (device, inode) are hard
/// links of one node; file content is a [`HostFile`], checked again when read. An entry
/// that cannot be read is an error naming it.
pub fn read_dir(root: &Path, opts: &DirOptions) -> Result<Tree> {
    let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let rootfd = rustix::fs::open(root, how, Mode::empty()).map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => Error::argument("not a directory").with_file(root),
        e => Error::io("cannot read directory", e.into()).with_file(root),
    })?;
    let rootfd = Arc::new(rootfd);
    let st = rustix::fs::fstat(&*rootfd).map_err(|e| Error::io("cannot stat", e.into()).with_file(root))?;
    let mut root_node = node_for(rootfd.as_fd(), &st, None, root)?;
    let mut tree = Tree::new(root_node.meta.clone());
    tree.node_mut(NodeId::ROOT).xattrs = std::mem::take(&mut root_node.xattrs);
    let root_dev = st.st_dev;
    let mut inodes: HashMap<(u64, u64), NodeId> = HashMap::new();
    // (path below the root, node, (dev, ino) scanned)
    let mut stack: Vec<(Vec<u8>, NodeId, (u64, u64))> = vec![(Vec::new(), NodeId::ROOT, (st.st_dev, st.st_ino))];
    while let Some((rel, dir, scanned)) = stack.pop() {
        let shown = show(root, &rel);
        let dfd = open_subdir(&rootfd, &rel, scanned, &shown)?;
        let entries = rustix::fs::Dir::read_from(&dfd)
            .map_err(|e| Error::io("cannot read directory", e.into()).with_file(&shown))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot read directory", e.into()).with_file(&shown))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name);
            let p = show(root, &child);
            let efd = rustix::fs::openat(&dfd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::io("cannot stat", e.into()).with_file(&p))?;
            let md = rustix::fs::fstat(&efd).map_err(|e| Error::io("cannot stat", e.into()).with_file(&p))?;
            let ft = FileType::from_raw_mode(md.st_mode);
            let key = (md.st_dev, md.st_ino);
            if ft == FileType::RegularFile
                && md.st_nlink > 1
                && let Some(&id) = inodes.get(&key)
            {
                tree.link(dir, name, id)?;
                continue;
            }
            let node = node_for(efd.as_fd(), &md, Some((&rootfd, &child)), &p)?;
            let id = tree.insert(dir, name, node).map_err(|e| e.with_file(&p))?;
            if ft == FileType::RegularFile && md.st_nlink > 1 {
                inodes.insert(key, id);
            }
            if ft == FileType::Directory && !(opts.one_file_system && md.st_dev != root_dev) {
                stack.push((child, id, key));
            }
        }
    }
    Ok(tree)
}

fn show(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(OsStr::from_bytes(rel)) }
}

/// The directory `rel` beneath the root, no symlink followed on the way, checked to be
/// the directory its parent's scan found.
fn open_subdir(rootfd: &Arc<OwnedFd>, rel: &[u8], scanned: (u64, u64), shown: &Path) -> Result<OwnedFd> {
    let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let p: &[u8] = if rel.is_empty() { b"." } else { rel };
    let fd = rustix::fs::openat2(rootfd.as_fd(), p, how, Mode::empty(), resolve).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => {
            Error::refused("changed since it was scanned (no longer a directory)").with_file(shown)
        }
        e => Error::io("cannot read directory", e.into()).with_file(shown),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("cannot stat", e.into()).with_file(shown))?;
    if (st.st_dev, st.st_ino) != scanned {
        return Err(Error::refused("changed since it was scanned (another directory has its name)").with_file(shown));
    }
    Ok(fd)
}

/// The node for the entry open as `fd` (`O_PATH`, or the root's own descriptor) with
/// status `md`; `beneath` is the scanned root and the entry's path below it.
fn node_for(fd: BorrowedFd<'_>, md: &Stat, beneath: Option<(&Arc<OwnedFd>, &[u8])>, path: &Path) -> Result<Node> {
    let ft = FileType::from_raw_mode(md.st_mode);
    let size = u64::try_from(md.st_size).map_err(|_| Error::corrupt("negative file size").with_file(path))?;
    let kind = match ft {
        FileType::Directory => Kind::empty_dir(),
        FileType::RegularFile => {
            let content = match beneath {
                Some((root, rel)) if size > 0 => {
                    Content::Host(HostFile::beneath(root.clone(), rel, path, md.st_dev, md.st_ino, size))
                }
                _ => Content::Zero,
            };
            Kind::File(FileData { size, content })
        }
        FileType::Symlink => {
            let t = rustix::fs::readlinkat(fd, "", Vec::new())
                .map_err(|e| Error::io("cannot read symlink", e.into()).with_file(path))?;
            Kind::Symlink(t.into_bytes())
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            let (major, minor) = (rustix::fs::major(md.st_rdev), rustix::fs::minor(md.st_rdev));
            if ft == FileType::CharacterDevice {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        }
        FileType::Fifo => Kind::Fifo,
        _ => Kind::Socket,
    };
    let time = |s: i64, ns: u64| Timestamp { sec: s, nsec: u32::try_from(ns).unwrap_or(0).min(999_999_999) };
    #[allow(clippy::useless_conversion)] // the field types differ between architectures
    let meta = Meta {
        mode: md.st_mode & 0o7777,
        uid: md.st_uid,
        gid: md.st_gid,
        mtime: time(i64::from(md.st_mtime), u64::from(md.st_mtime_nsec)),
        atime: Some(time(i64::from(md.st_atime), u64::from(md.st_atime_nsec))),
        ctime: Some(time(i64::from(md.st_ctime), u64::from(md.st_ctime_nsec))),
    };
    let mut node = Node::new(meta, kind);
    node.xattrs = read_xattrs(fd, path)?;
    Ok(node)
}

/// The extended attributes of the entry open as `fd`, read through `/proc/self/fd/N`:
/// the entry itself, whatever its name holds now (`flistxattr` refuses `O_PATH`
/// descriptors). A filesystem without xattr support has none.
fn read_xattrs(fd: BorrowedFd<'_>, path: &Path) -> Result<Vec<Xattr>> {
    let at = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let err = |e: Errno| {
        let why = if e == Errno::NOENT {
            "cannot read extended attributes (is /proc mounted?)"
        } else {
            "cannot read extended attributes"
        };
        Error::io(why, std::io::Error::from(e)).with_file(path)
    };
    let mut names = Vec::new();
    for _ in 0..8 {
        let n = match rustix::fs::listxattr_query(at.as_str()) {
            Ok(n) => n,
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        names.resize(n, 0u8);
        match rustix::fs::listxattr(at.as_str(), &mut names[..]) {
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
            let n = match rustix::fs::getxattr_query(at.as_str(), name) {
                Ok(n) => n,
                Err(Errno::NODATA) => break,
                Err(e) => return Err(err(e)),
            };
            value.resize(n, 0u8);
            if n == 0 {
                break;
            }
            match rustix::fs::getxattr(at.as_str(), name, &mut value[..]) {
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
