//! Safe extraction: a tree written into a host directory that it can never leave.
//!
//! Every path is opened relative to the target directory's file descriptor with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, and every
//! entry is created by `mkdirat`/`symlinkat`/`mknodat`/`linkat` in a parent opened that
//! way: no path is built by joining strings and no symlink is ever followed, so a tree
//! with a symlink to `/etc` and a file under it writes nothing outside the directory.
//! Symlinks are created as the data they are (absolute targets included).

use diskcast_block::io::ImageFile;
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_tree::{Content, FileData, Kind, Meta, Node, NodeId, StreamCursor, Tree, display_name, host_data_ranges};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How to extract.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Threads writing files.
    pub threads: usize,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) }
    }
}

/// What was extracted and what was not.
#[derive(Debug, Default, Clone)]
pub struct ExtractReport {
    /// Directories created (the target itself not counted).
    pub dirs: u64,
    /// Regular files written.
    pub files: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Extra names of files (hard links).
    pub hardlinks: u64,
    /// Device nodes and fifos created.
    pub specials: u64,
    /// File bytes written (holes not counted).
    pub bytes: u64,
    /// What was left out or changed, one message each (devices and setuid bits without
    /// root, xattrs the filesystem refused, sockets).
    pub skipped: Vec<String>,
}

/// Most skip messages kept; the rest are counted in one last message.
const MAX_MESSAGES: usize = 1000;

/// Bytes read and written at a time per file.
/// Files at least this large are written bypassing the page cache.
const DIRECT_FILE_MIN: u64 = 1 << 20;
const CHUNK: usize = 1 << 20;

/// Writes `tree` into `dir`, which must be an empty directory or not exist yet (it is
/// created). Files are written by `opts.threads` threads; the files of one stream (a
/// tar) are written in stream order by one thread, so each stream is read once. Holes
/// stay holes. Owners are set, and device nodes and setuid/setgid bits created, only
/// when running as root; everything left out is listed in the report. Times are set
/// after content, directories' last.
pub fn extract(tree: &Tree, dir: &Path, opts: &ExtractOptions, progress: &dyn Progress) -> Result<ExtractReport> {
    prepare_dir(dir)?;
    let root = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| sys(e, "cannot open", dir.as_os_str().as_encoded_bytes()).with_file(dir))?;
    let x = Extractor {
        root,
        is_root: rustix::process::geteuid().is_root(),
        report: Mutex::new(ExtractReport::default()),
        dropped: AtomicUsize::new(0),
    };
    let entries: Vec<(Vec<u8>, NodeId)> = tree.walk(NodeId::ROOT).collect();
    progress.start(tree.stats().file_bytes);

    // 1. Directories, symlinks, specials; files and hard links collected.
    let mut first: HashMap<NodeId, usize> = HashMap::new();
    let mut files: Vec<usize> = Vec::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut parents = ParentCache::default();
    for (i, (path, id)) in entries.iter().enumerate().skip(1) {
        let node = tree.node(*id);
        let (parent, name) = split(path);
        let at = |e: Error| e.with_file(dir);
        match &node.kind {
            Kind::File(_) => {
                if let Some(&f) = first.get(id) {
                    links.push((f, i));
                } else {
                    first.insert(*id, i);
                    files.push(i);
                }
            }
            Kind::Dir(_) => {
                let pfd = parents.get(&x, parent).map_err(at)?;
                rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| sys(e, "cannot create directory", path))
                    .map_err(at)?;
                x.count(|r| r.dirs += 1);
            }
            Kind::Symlink(target) => {
                let pfd = parents.get(&x, parent).map_err(at)?;
                rustix::fs::symlinkat(target.as_slice(), pfd, name)
                    .map_err(|e| sys(e, "cannot create symlink", path))
                    .map_err(at)?;
                x.count(|r| r.symlinks += 1);
                if x.is_root {
                    x.chown_at(pfd, name, &node.meta, path, AtFlags::SYMLINK_NOFOLLOW);
                }
                x.times_at(pfd, name, &node.meta, path, AtFlags::SYMLINK_NOFOLLOW);
                if !node.xattrs.is_empty() {
                    // There is no lsetxattr relative to a directory descriptor, and a
                    // path joined from strings is what this sink never uses.
                    x.skip(format!("{}: xattrs of a symlink not set", display_name(path)));
                }
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                if !x.is_root {
                    x.skip(format!("{}: device node not created (needs root)", display_name(path)));
                    continue;
                }
                let ft = if matches!(node.kind, Kind::CharDev { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let pfd = parents.get(&x, parent).map_err(at)?;
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), rustix::fs::makedev(*major, *minor))
                    .map_err(|e| sys(e, "cannot create device node", path))
                    .map_err(at)?;
                x.special_meta(pfd, name, node, path);
            }
            Kind::Fifo => {
                let pfd = parents.get(&x, parent).map_err(at)?;
                rustix::fs::mknodat(pfd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| sys(e, "cannot create fifo", path))
                    .map_err(at)?;
                x.special_meta(pfd, name, node, path);
            }
            Kind::Socket => x.skip(format!("{}: socket not created", display_name(path))),
        }
    }
    drop(parents);

    // 2. File content, in parallel: one job per stream (files in offset order), one per
    //    other file, largest first.
    let mut streams: HashMap<*const (), Vec<(u64, usize)>> = HashMap::new();
    let mut jobs: Vec<(u64, Vec<usize>)> = Vec::new();
    for &i in &files {
        let f = tree.node(entries[i].1).as_file().ok_or_else(|| Error::invalid("not a file"))?;
        match &f.content {
            Content::Stream { stream, offset } => {
                streams.entry(std::sync::Arc::as_ptr(stream) as *const ()).or_default().push((*offset, i));
            }
            _ => jobs.push((f.size, vec![i])),
        }
    }
    for (_, mut v) in streams {
        v.sort_unstable();
        let total = v.iter().map(|&(_, i)| tree.node(entries[i].1).as_file().map_or(0, |f| f.size)).sum();
        jobs.push((total, v.into_iter().map(|(_, i)| i).collect()));
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<Error>> = Mutex::new(None);
    let threads = opts.threads.clamp(1, 64).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut cursor: Option<StreamCursor> = None;
                    for &i in &jobs[j].1 {
                        let (path, id) = &entries[i];
                        if let Err(e) = x.write_file(tree.node(*id), path, &mut cursor, &mut buf, progress) {
                            failed.store(true, Ordering::Relaxed);
                            error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e.with_file(dir));
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }

    // 3. Hard links, to files written in this run only.
    for (f, i) in links {
        let (old_parent, old_name) = split(&entries[f].0);
        let (new_parent, new_name) = split(&entries[i].0);
        let ofd = x.open_dir(old_parent, OFlags::PATH)?;
        let nfd = x.open_dir(new_parent, OFlags::PATH)?;
        rustix::fs::linkat(&ofd, old_name, &nfd, new_name, AtFlags::empty())
            .map_err(|e| sys(e, "cannot create hard link", &entries[i].0).with_file(dir))?;
        x.count(|r| r.hardlinks += 1);
    }

    // 4. Directories' metadata, deepest first, so setting a directory's time is the
    //    last change inside it.
    for (path, id) in entries.iter().rev() {
        let node = tree.node(*id);
        if !matches!(node.kind, Kind::Dir(_)) {
            continue;
        }
        let fd = x.open_dir(path, OFlags::RDONLY).map_err(|e| e.with_file(dir))?;
        x.fd_meta(&fd, node, path);
    }
    progress.finish();
    let mut report = x.report.into_inner().unwrap_or_else(|p| p.into_inner());
    let dropped = x.dropped.into_inner();
    if dropped > 0 {
        report.skipped.push(format!("... and {dropped} more"));
    }
    Ok(report)
}

/// DIR must be an empty directory, or is created.
fn prepare_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.is_dir() => {
            let mut it = std::fs::read_dir(dir).map_err(|e| Error::io("cannot read", e).with_file(dir))?;
            if it.next().is_some() {
                return Err(Error::refused("extraction directory is not empty").with_file(dir));
            }
            Ok(())
        }
        Ok(_) => Err(Error::refused("extraction target exists and is not a directory").with_file(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", e).with_file(dir))
        }
        Err(e) => Err(Error::io("cannot stat", e).with_file(dir)),
    }
}

/// `a/b/c` is (`a/b`, `c`); `c` is (``, `c`).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(p) => (&path[..p], &path[p + 1..]),
        None => (&[], path),
    }
}

fn sys(e: rustix::io::Errno, what: &str, path: &[u8]) -> Error {
    Error::io(format!("{what} {}", display_name(path)), std::io::Error::from(e))
}

fn ts(t: diskcast_tree::Timestamp) -> Timespec {
    Timespec { tv_sec: t.sec, tv_nsec: t.nsec.into() }
}

fn times(m: &Meta) -> Timestamps {
    Timestamps { last_access: ts(m.atime.unwrap_or(m.mtime)), last_modification: ts(m.mtime) }
}

/// The last parent directory opened, since a directory's entries come one after another.
#[derive(Default)]
struct ParentCache {
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl ParentCache {
    fn get<'a>(&'a mut self, x: &'a Extractor, parent: &[u8]) -> Result<BorrowedFd<'a>> {
        if parent.is_empty() {
            return Ok(x.root.as_fd());
        }
        if self.last.as_ref().is_none_or(|(p, _)| p != parent) {
            let fd = x.open_dir(parent, OFlags::PATH)?;
            self.last = Some((parent.to_vec(), fd));
        }
        Ok(self.last.as_ref().map(|(_, fd)| fd.as_fd()).unwrap_or(x.root.as_fd()))
    }
}

struct Extractor {
    root: OwnedFd,
    is_root: bool,
    report: Mutex<ExtractReport>,
    dropped: AtomicUsize,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

impl Extractor {
    fn count(&self, f: impl FnOnce(&mut ExtractReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn skip(&self, msg: String) {
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        if r.skipped.len() < MAX_MESSAGES {
            r.skipped.push(msg);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The directory `path` under the root, no symlink followed anywhere on the way.
    fn open_dir(&self, path: &[u8], how: OFlags) -> Result<OwnedFd> {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        rustix::fs::openat2(
            &self.root,
            p,
            how | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(|e| sys(e, "cannot open directory", path))
    }

    /// Writes one regular file (create, size, data ranges, then metadata).
    fn write_file(
        &self,
        node: &Node,
        path: &[u8],
        cursor: &mut Option<StreamCursor>,
        buf: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<()> {
        let Kind::File(f) = &node.kind else { return Ok(()) };
        let fd = rustix::fs::openat2(
            &self.root,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            BENEATH,
        )
        .map_err(|e| sys(e, "cannot create", path))?;
        let file = std::fs::File::from(fd);
        file.set_len(f.size).map_err(|e| Error::io(format!("cannot size {}", display_name(path)), e))?;
        let mut out = ImageFile::from_file(file, Path::new(std::ffi::OsStr::from_bytes(path)));
        if f.size >= DIRECT_FILE_MIN {
            // Large files skip the page cache (see ImageFile::write_all_at); where the
            // filesystem refuses O_DIRECT the file is written buffered as before.
            let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::DIRECT;
            if let Ok(d) = rustix::fs::openat2(&self.root, path, flags, Mode::empty(), BENEATH) {
                out = out.with_direct_handle(std::fs::File::from(d));
            }
        }
        let (written, covered) = write_data(f, &out, cursor, buf, progress)
            .map_err(|e| Error::new(e.kind(), format!("{}: {}", display_name(path), e.message())))?;
        progress.advance(f.size.saturating_sub(covered));
        self.count(|r| {
            r.files += 1;
            r.bytes += written;
        });
        self.fd_meta(out.file(), node, path);
        Ok(())
    }

    /// Owner, xattrs, mode and times of an open file or directory.
    fn fd_meta(&self, fd: impl AsFd, node: &Node, path: &[u8]) {
        let m = &node.meta;
        let fd = fd.as_fd();
        if self.is_root
            && m.uid != u32::MAX
            && m.gid != u32::MAX
            && let Err(e) =
                rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(m.uid)), Some(rustix::fs::Gid::from_raw(m.gid)))
        {
            self.skip(format!("{}: owner {}:{} not set: {e}", display_name(path), m.uid, m.gid));
        }
        for xa in &node.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, xa.name.as_slice(), &xa.value, XattrFlags::empty()) {
                self.skip(format!("{}: xattr {} not set: {e}", display_name(path), display_name(&xa.name)));
            }
        }
        let mode = self.allowed_mode(m.mode, path);
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)) {
            self.skip(format!("{}: mode {mode:o} not set: {e}", display_name(path)));
        }
        if let Err(e) = rustix::fs::futimens(fd, &times(m)) {
            self.skip(format!("{}: times not set: {e}", display_name(path)));
        }
    }

    /// setuid/setgid only as root, as tar does for ordinary users.
    fn allowed_mode(&self, mode: u32, path: &[u8]) -> u32 {
        if !self.is_root && mode & 0o6000 != 0 {
            self.skip(format!("{}: setuid/setgid bits dropped (needs root)", display_name(path)));
            return mode & 0o1777;
        }
        mode & 0o7777
    }

    fn special_meta(&self, pfd: BorrowedFd<'_>, name: &[u8], node: &Node, path: &[u8]) {
        self.count(|r| r.specials += 1);
        if self.is_root {
            self.chown_at(pfd, name, &node.meta, path, AtFlags::SYMLINK_NOFOLLOW);
        }
        let mode = self.allowed_mode(node.meta.mode, path);
        // A node just created in a parent opened without following links: not a symlink.
        if let Err(e) = rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(mode), AtFlags::empty()) {
            self.skip(format!("{}: mode not set: {e}", display_name(path)));
        }
        self.times_at(pfd, name, &node.meta, path, AtFlags::SYMLINK_NOFOLLOW);
    }

    fn chown_at(&self, pfd: BorrowedFd<'_>, name: &[u8], m: &Meta, path: &[u8], flags: AtFlags) {
        if m.uid == u32::MAX || m.gid == u32::MAX {
            return;
        }
        let (u, g) = (rustix::fs::Uid::from_raw(m.uid), rustix::fs::Gid::from_raw(m.gid));
        if let Err(e) = rustix::fs::chownat(pfd, name, Some(u), Some(g), flags) {
            self.skip(format!("{}: owner not set: {e}", display_name(path)));
        }
    }

    fn times_at(&self, pfd: BorrowedFd<'_>, name: &[u8], m: &Meta, path: &[u8], flags: AtFlags) {
        if let Err(e) = rustix::fs::utimensat(pfd, name, &times(m), flags) {
            self.skip(format!("{}: times not set: {e}", display_name(path)));
        }
    }
}

/// Writes a file's data ranges into `file` (already sized: holes stay holes, and
/// all-zero chunks are not written either). Returns the bytes written and the bytes the
/// data ranges covered.
fn write_data(
    f: &FileData,
    file: &ImageFile,
    cursor: &mut Option<StreamCursor>,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    // A host file is opened once, for its holes and its bytes.
    let host = match &f.content {
        Content::Host(p) => Some(ImageFile::open(p)?),
        _ => None,
    };
    let ranges = match (&f.content, &host) {
        (Content::Stream { .. }, _) => {
            if f.size == 0 {
                Vec::new()
            } else {
                vec![(0, f.size)]
            }
        }
        (_, Some(h)) => host_data_ranges(h, f.size)?,
        _ => f.data_ranges()?,
    };
    let mut written = 0u64;
    let mut covered = 0u64;
    for (start, len) in ranges {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= f.size)
            .ok_or_else(|| Error::corrupt("data range past the file's end"))?;
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            match (&f.content, &host) {
                (Content::Stream { stream, offset }, _) => {
                    let c = match cursor {
                        Some(c) if std::sync::Arc::ptr_eq(c.stream(), stream) => c,
                        _ => cursor.insert(StreamCursor::new(stream.clone())),
                    };
                    c.read_exact_at(chunk, offset + pos)?;
                }
                (_, Some(h)) => h.read_exact_at(chunk, pos).map_err(|e| {
                    Error::new(e.kind(), format!("{} (did the file change while it was being read?)", e.message()))
                })?,
                _ => f.read_at(chunk, pos)?,
            }
            if !chunk.iter().all(|&b| b == 0) {
                file.write_all_at(chunk, pos)?;
                written += n as u64;
            }
            progress.advance(n as u64);
            covered += n as u64;
            pos += n as u64;
        }
    }
    Ok((written, covered))
}
