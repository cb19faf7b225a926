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
use diskcast_tree::{
    Content, FileData, Kind, Meta, Node, NodeId, Schedule, StreamCursor, Tree, display_name, host_data_ranges,
};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How to extract. No `Default`: the thread count is the caller's (the CLI's `-j`).
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Threads writing files.
    pub threads: usize,
    /// Recreate what only root can and an untrusted image should not get: device nodes,
    /// setuid/setgid bits of files, and `security.capability` and `trusted.*` xattrs
    /// (bsdtar likewise needs `-p` for setuid bits). Off: each is left out and listed.
    pub privileged: bool,
    /// Tests only: called at the moments a local user racing the extraction could swap
    /// an entry, so race tests are deterministic.
    #[doc(hidden)]
    pub race_hook: Option<RaceHook>,
}

impl ExtractOptions {
    /// `threads` writers, nothing privileged.
    pub fn new(threads: usize) -> Self {
        ExtractOptions { threads, privileged: false, race_hook: None }
    }
}

/// Where extraction is when [`ExtractOptions::race_hook`] is called.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum RaceStep<'a> {
    /// DIR is open (or created and open); nothing is written yet.
    TargetOpened,
    /// The entry at this path (relative to DIR) was just created; its metadata is not
    /// set yet.
    Created(&'a [u8]),
}

/// A test callback (see [`ExtractOptions::race_hook`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct RaceHook(pub std::sync::Arc<dyn Fn(RaceStep<'_>) + Send + Sync>);

impl std::fmt::Debug for RaceHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaceHook")
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
    /// root, xattrs the filesystem refused, sockets, entries replaced by someone else
    /// during extraction).
    pub skipped: Vec<String>,
    /// Entries that could not be created, one message each (at most 1000, then a count):
    /// the rest was extracted, and a caller should fail at the end.
    pub failed: Vec<String>,
    /// How many entries were not extracted (every one, even past the messages kept).
    pub not_extracted: u64,
    /// How many device nodes, setuid/setgid bits and privileged xattrs were left out
    /// because [`ExtractOptions::privileged`] was off (each is also in `skipped`).
    pub privileged_dropped: u64,
}

/// `security.capability` (file capabilities: a binary that gains privileges when run)
/// and `trusted.*` (read by root-only subsystems such as overlayfs).
fn is_privileged_xattr(name: &[u8]) -> bool {
    name == b"security.capability" || name.starts_with(b"trusted.")
}

/// The longest symlink target Linux stores (PATH_MAX less the NUL).
const MAX_SYMLINK_TARGET: usize = 4095;

/// Most skip (and failure) messages kept; the rest are counted in one last message, so
/// a tree of millions of unwritable entries cannot fill memory with messages.
const MAX_MESSAGES: usize = 1000;

/// Bytes read and written at a time per file.
/// Files at least this large are written bypassing the page cache.
const DIRECT_FILE_MIN: u64 = 1 << 20;
const CHUNK: usize = 1 << 20;

/// Writes `tree` into `dir`, which must be an empty directory or not exist yet (it is
/// created); a symlink is refused. DIR is opened once and everything is made beneath
/// that descriptor. Files are written by `opts.threads` threads; the files of one
/// stream (a tar) are written in stream order by one thread, so each stream is read
/// once. Holes stay holes. Owners are set only when running as root; device nodes,
/// setuid/setgid bits of files, `security.capability` and `trusted.*` xattrs only as
/// root with `opts.privileged`; everything left out is listed in the report. Times are
/// set after content, directories' last. Metadata is only ever set on the entry
/// diskcast created (through a descriptor, checked to be that entry), never on a name
/// again: an entry replaced meanwhile is reported and left alone. An entry that cannot
/// be created (a symlink target the kernel refuses, a name too long, data that cannot
/// be read) is left out whole (a partly written file is removed), listed in `failed`
/// and counted in `not_extracted`; the rest is extracted, and the caller should fail
/// at the end.
pub fn extract(tree: &Tree, dir: &Path, opts: &ExtractOptions, progress: &dyn Progress) -> Result<ExtractReport> {
    let root = open_target(dir)?;
    if let Some(h) = &opts.race_hook {
        (h.0)(RaceStep::TargetOpened)
    }
    let x = Extractor {
        root,
        is_root: rustix::process::geteuid().is_root(),
        privileged: opts.privileged,
        report: Mutex::new(ExtractReport::default()),
        dropped: AtomicUsize::new(0),
        hook: opts.race_hook.clone(),
    };
    let entries: Vec<(Vec<u8>, NodeId)> = tree.walk(NodeId::ROOT).collect();
    progress.start(tree.stats().file_bytes);

    // 1. Directories, symlinks, specials; files and hard links collected.
    let mut first: HashMap<NodeId, usize> = HashMap::new();
    let mut files: Vec<usize> = Vec::new();
    let mut links: HashMap<usize, Vec<usize>> = HashMap::new();
    // (dev, ino) of each directory made, to check it is still the one when its metadata
    // is set at the end.
    let mut made_dirs: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut parents = ParentCache::default();
    for (i, (path, id)) in entries.iter().enumerate().skip(1) {
        let node = tree.node(*id);
        let (parent, name) = split(path);
        if let Kind::File(_) = &node.kind {
            if let Some(&f) = first.get(id) {
                links.entry(f).or_default().push(i);
            } else {
                first.insert(*id, i);
                files.push(i);
            }
            continue;
        }
        if let Kind::Socket = &node.kind {
            x.skip(format!("{}: socket not created", display_name(path)));
            continue;
        }
        if matches!(node.kind, Kind::CharDev { .. } | Kind::BlockDev { .. }) {
            if !x.is_root {
                x.skip(format!("{}: device node not created (needs root)", display_name(path)));
                continue;
            }
            if !x.privileged {
                x.dropped_privileged(format!("{}: device node not created", display_name(path)));
                continue;
            }
        }
        let pfd = match parents.get(&x, parent) {
            Ok(fd) => fd,
            Err(e) => {
                x.fail(path, e);
                continue;
            }
        };
        if let Err(e) = x.create_entry(pfd, name, node, path, &mut made_dirs, i) {
            x.fail(path, e);
        }
    }
    drop(parents);

    // 2. File content, in parallel: one job per stream (files in offset order), one per
    //    other file, largest first. A file's hard links are made from its descriptor
    //    right after it is written.
    let size = |i: usize| tree.node(entries[i].1).as_file().map_or(0, |f| f.size);
    let mut schedule = Schedule::new();
    for &i in &files {
        let f = tree.node(entries[i].1).as_file().ok_or_else(|| Error::invalid("not a file"))?;
        schedule.push(f, i);
    }
    let (loose, runs) = schedule.into_runs();
    let mut jobs: Vec<(u64, Vec<usize>)> = loose.into_iter().map(|i| (size(i), vec![i])).collect();
    for run in runs {
        jobs.push((run.files.iter().map(|&i| size(i)).sum(), run.files));
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
    let next = AtomicUsize::new(0);
    let threads = opts.threads.clamp(1, 64).min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            diskcast_block::copy::spawn_worker(s, "dc-extract", || {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs.len() {
                        break;
                    }
                    let mut cursor = StreamCursor::new();
                    for &i in &jobs[j].1 {
                        let (path, id) = &entries[i];
                        let node = tree.node(*id);
                        let names = links.get(&i).map(Vec::as_slice).unwrap_or(&[]);
                        match x.write_file(node, path, &mut cursor, &mut buf, progress, !names.is_empty()) {
                            Ok(fd) => {
                                // `fd` is kept exactly when there are names to link.
                                for (&l, fd) in names.iter().zip(fd.iter().cycle()) {
                                    if let Err(e) = x.hard_link(fd, &entries[l].0) {
                                        x.fail(&entries[l].0, e);
                                    }
                                }
                            }
                            Err(e) => {
                                x.fail(path, e);
                                for &l in names {
                                    x.fail(&entries[l].0, Error::invalid("the file it links to was not extracted"));
                                }
                            }
                        }
                    }
                }
            });
        }
    });

    // 3. Directories' metadata, deepest first, so setting a directory's time is the
    //    last change inside it.
    for (i, (path, id)) in entries.iter().enumerate().rev() {
        let node = tree.node(*id);
        if !matches!(node.kind, Kind::Dir(_)) {
            continue;
        }
        let made = if i == 0 { None } else { made_dirs.get(&i).copied() };
        if i != 0 && made.is_none() {
            continue; // not created: already reported
        }
        let fd = match x.open_dir(path, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(_) if made.is_some() => {
                x.skip(replaced(path));
                continue;
            }
            Err(e) => {
                x.fail(path, e);
                continue;
            }
        };
        if let Some(want) = made
            && rustix::fs::fstat(&fd).map(|st| (st.st_dev, st.st_ino)).ok() != Some(want)
        {
            x.skip(replaced(path));
            continue;
        }
        x.fd_meta(&fd, node, path);
    }
    progress.finish();
    let mut report = x.report.into_inner().unwrap_or_else(|p| p.into_inner());
    let dropped = x.dropped.into_inner();
    if dropped > 0 {
        report.skipped.push(format!("... and {dropped} more"));
    }
    let unlisted = report.not_extracted.saturating_sub(report.failed.len() as u64);
    if unlisted > 0 {
        report.failed.push(format!("... and {unlisted} more"));
    }
    Ok(report)
}

/// Opens DIR once, without following a symlink, creating it if it does not exist; it
/// must be empty. Everything after works beneath this descriptor, so swapping DIR for a
/// symlink later changes nothing.
fn open_target(dir: &Path) -> Result<OwnedFd> {
    use rustix::io::Errno;
    let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // O_DIRECTORY|O_NOFOLLOW gives ENOTDIR for a symlink; lstat only picks the message.
    let is_link = || std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    let refuse = |e: Errno| match e {
        Errno::LOOP | Errno::NOTDIR if is_link() => Error::refused(
            "extraction target is a symbolic link, which extraction does not follow (give the directory it points to)",
        )
        .with_file(dir),
        Errno::NOTDIR => Error::refused("extraction target exists and is not a directory").with_file(dir),
        e => Error::io("cannot open", e.into()).with_file(dir),
    };
    let fd = match rustix::fs::open(dir, how, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", e).with_file(parent))?;
            }
            match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io("cannot create", e.into()).with_file(dir)),
            }
            rustix::fs::open(dir, how, Mode::empty()).map_err(refuse)?
        }
        Err(e) => return Err(refuse(e)),
    };
    let entries = rustix::fs::Dir::read_from(&fd).map_err(|e| Error::io("cannot read", e.into()).with_file(dir))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot read", e.into()).with_file(dir))?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            return Err(Error::refused("extraction directory is not empty").with_file(dir));
        }
    }
    Ok(fd)
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

fn replaced(path: &[u8]) -> String {
    format!(
        "{}: replaced by another entry during extraction; owner, mode, times and xattrs not set",
        display_name(path)
    )
}

/// The path that reopens what `fd` refers to: how a descriptor opened with `O_PATH`
/// gets its mode and xattrs set (those calls refuse `O_PATH` descriptors, and
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` needs fchmodat2, which rustix does not call).
fn proc_fd(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
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
            self.last = None;
            let fd = x.open_dir(parent, OFlags::PATH)?;
            self.last = Some((parent.to_vec(), fd));
        }
        Ok(self.last.as_ref().map(|(_, fd)| fd.as_fd()).unwrap_or(x.root.as_fd()))
    }
}

struct Extractor {
    root: OwnedFd,
    is_root: bool,
    privileged: bool,
    report: Mutex<ExtractReport>,
    dropped: AtomicUsize,
    hook: Option<RaceHook>,
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// What diskcast made at a name, to recognise it when it opens the name again.
enum Made<'a> {
    Symlink(&'a [u8]),
    Special(FileType, u64),
}

impl Extractor {
    fn race(&self, step: RaceStep<'_>) {
        if let Some(h) = &self.hook {
            (h.0)(step)
        }
    }

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

    /// An entry that could not be created: listed, and extraction goes on.
    fn fail(&self, path: &[u8], e: Error) {
        let mut msg = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            msg = format!("{msg}: {src}");
        }
        let name = display_name(path);
        let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
        r.not_extracted += 1;
        if r.failed.len() < MAX_MESSAGES {
            r.failed.push(if msg.contains(&name) { msg } else { format!("{name}: {msg}") });
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

    /// Creates a directory, symlink, device node or fifo in `pfd`; everything but a
    /// directory gets its metadata at once.
    fn create_entry(
        &self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        node: &Node,
        path: &[u8],
        made_dirs: &mut HashMap<usize, (u64, u64)>,
        i: usize,
    ) -> Result<()> {
        match &node.kind {
            Kind::Dir(_) => {
                rustix::fs::mkdirat(pfd, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| sys(e, "cannot create directory", path))?;
                let fd = rustix::fs::openat(
                    pfd,
                    name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| sys(e, "cannot open directory", path))?;
                let st = rustix::fs::fstat(&fd).map_err(|e| sys(e, "cannot stat", path))?;
                made_dirs.insert(i, (st.st_dev, st.st_ino));
                self.count(|r| r.dirs += 1);
                self.race(RaceStep::Created(path));
            }
            Kind::Symlink(target) => {
                if target.contains(&0) {
                    return Err(Error::unsupported(format!(
                        "cannot create symlink {}: its target holds a NUL byte",
                        display_name(path)
                    )));
                }
                if target.len() > MAX_SYMLINK_TARGET {
                    return Err(Error::unsupported(format!(
                        "cannot create symlink {}: its target of {} bytes is longer than Linux allows ({MAX_SYMLINK_TARGET})",
                        display_name(path),
                        target.len()
                    )));
                }
                rustix::fs::symlinkat(target.as_slice(), pfd, name)
                    .map_err(|e| sys(e, "cannot create symlink", path))?;
                self.count(|r| r.symlinks += 1);
                self.race(RaceStep::Created(path));
                self.entry_meta(pfd, name, Made::Symlink(target), node, path);
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                let ft = if matches!(node.kind, Kind::CharDev { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(*major, *minor);
                rustix::fs::mknodat(pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| sys(e, "cannot create device node", path))?;
                self.count(|r| r.specials += 1);
                self.race(RaceStep::Created(path));
                self.entry_meta(pfd, name, Made::Special(ft, dev), node, path);
            }
            Kind::Fifo => {
                rustix::fs::mknodat(pfd, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| sys(e, "cannot create fifo", path))?;
                self.count(|r| r.specials += 1);
                self.race(RaceStep::Created(path));
                self.entry_meta(pfd, name, Made::Special(FileType::Fifo, 0), node, path);
            }
            Kind::File(_) | Kind::Socket => {}
        }
        Ok(())
    }

    /// Writes one regular file (create, size, data ranges, then metadata); returns its
    /// descriptor when `keep` (it has hard links to make).
    fn write_file(
        &self,
        node: &Node,
        path: &[u8],
        cursor: &mut StreamCursor,
        buf: &mut [u8],
        progress: &dyn Progress,
        keep: bool,
    ) -> Result<Option<OwnedFd>> {
        let Kind::File(f) = &node.kind else { return Err(Error::invalid("not a file")) };
        let fd = rustix::fs::openat2(
            &self.root,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            BENEATH,
        )
        .map_err(|e| sys(e, "cannot create", path))?;
        self.race(RaceStep::Created(path));
        let mut out = ImageFile::from_file(std::fs::File::from(fd), Path::new(std::ffi::OsStr::from_bytes(path)));
        if f.size >= DIRECT_FILE_MIN {
            // Large files skip the page cache (see ImageFile::write_all_at), through a
            // second handle on this very file (reopened through its descriptor, not by
            // name); where the filesystem refuses O_DIRECT it is written buffered.
            let flags = OFlags::WRONLY | OFlags::CLOEXEC | OFlags::DIRECT;
            if let Ok(d) = rustix::fs::open(proc_fd(out.file().as_fd()), flags, Mode::empty()) {
                out = out.with_direct_handle(std::fs::File::from(d));
            }
        }
        if let Err(e) = self.fill_file(&out, f, path, cursor, buf, progress) {
            self.remove_partial(out.file(), path);
            return Err(e);
        }
        self.fd_meta(out.file(), node, path);
        if !keep {
            return Ok(None);
        }
        let dup = out.file().try_clone().map_err(|e| Error::io(format!("cannot link {}", display_name(path)), e))?;
        Ok(Some(OwnedFd::from(dup)))
    }

    /// Sizes the new file `out` and writes its data.
    fn fill_file(
        &self,
        out: &ImageFile,
        f: &FileData,
        path: &[u8],
        cursor: &mut StreamCursor,
        buf: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<()> {
        out.file().set_len(f.size).map_err(|e| Error::io(format!("cannot size {}", display_name(path)), e))?;
        let (written, covered) = write_data(f, out, cursor, buf, progress)
            .map_err(|e| Error::new(e.kind(), format!("{}: {e}", display_name(path))))?;
        progress.advance(f.size.saturating_sub(covered));
        self.count(|r| {
            r.files += 1;
            r.bytes += written;
        });
        Ok(())
    }

    /// Removes the half-written file open as `file` from its name, if the name still
    /// holds it: a failed file leaves nothing behind.
    fn remove_partial(&self, file: &std::fs::File, path: &[u8]) {
        let (parent, name) = split(path);
        let ours = rustix::fs::fstat(file).map(|st| (st.st_dev, st.st_ino));
        let Ok(pfd) = self.open_dir(parent, OFlags::PATH) else { return };
        let now = rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW).map(|st| (st.st_dev, st.st_ino));
        if ours.is_ok() && ours == now {
            let _ = rustix::fs::unlinkat(&pfd, name, AtFlags::empty());
        }
    }

    /// Another name for the file open as `fd`: linked from the descriptor, so it is the
    /// file written, whatever its first name holds by now.
    fn hard_link(&self, fd: &OwnedFd, path: &[u8]) -> Result<()> {
        let (parent, name) = split(path);
        let pfd = self.open_dir(parent, OFlags::PATH)?;
        // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc/self/fd does not.
        rustix::fs::linkat(fd, "", &pfd, name, AtFlags::EMPTY_PATH)
            .or_else(|_| rustix::fs::linkat(CWD, proc_fd(fd.as_fd()), &pfd, name, AtFlags::SYMLINK_FOLLOW))
            .map_err(|e| sys(e, "cannot create hard link", path))?;
        self.count(|r| r.hardlinks += 1);
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
        self.set_xattrs(node, path, |n, v| rustix::fs::fsetxattr(fd, n, v, XattrFlags::empty()));
        let mode = self.allowed_mode(m.mode, path, matches!(node.kind, Kind::Dir(_)));
        if let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)) {
            self.skip(format!("{}: mode {mode:o} not set: {e}", display_name(path)));
        }
        if let Err(e) = rustix::fs::futimens(fd, &times(m)) {
            self.skip(format!("{}: times not set: {e}", display_name(path)));
        }
    }

    /// setuid/setgid only as root, as tar does for ordinary users, and on anything but
    /// a directory (where setgid only picks the group of new entries) only when
    /// privileged content was asked for.
    fn allowed_mode(&self, mode: u32, path: &[u8], is_dir: bool) -> u32 {
        if mode & 0o6000 == 0 {
            return mode & 0o7777;
        }
        if !self.is_root {
            self.skip(format!("{}: setuid/setgid bits dropped (needs root)", display_name(path)));
            return mode & 0o1777;
        }
        if !self.privileged && !is_dir {
            self.dropped_privileged(format!("{}: setuid/setgid bits dropped", display_name(path)));
            return mode & 0o1777;
        }
        mode & 0o7777
    }

    /// Sets the node's xattrs with `set`; file capabilities and trusted.* only when
    /// privileged content was asked for.
    fn set_xattrs(&self, node: &Node, path: &[u8], set: impl Fn(&[u8], &[u8]) -> rustix::io::Result<()>) {
        for xa in &node.xattrs {
            let shown = || format!("{}: xattr {}", display_name(path), display_name(&xa.name));
            if !self.privileged && is_privileged_xattr(&xa.name) {
                self.dropped_privileged(format!("{} not set", shown()));
            } else if let Err(e) = set(&xa.name, &xa.value) {
                self.skip(format!("{} not set: {e}", shown()));
            }
        }
    }

    /// Privileged content left out because [`ExtractOptions::privileged`] is off.
    fn dropped_privileged(&self, what: String) {
        self.count(|r| r.privileged_dropped += 1);
        self.skip(format!("{what} (needs --privileged)"));
    }

    /// Owner, xattrs, mode (not for symlinks) and times of a symlink, device node or
    /// fifo just made at `name`: opened again with `O_PATH | O_NOFOLLOW` (never opened
    /// for I/O: opening a device can have effects) and set only when it is still the
    /// entry made (type, device number or link target, a single link).
    fn entry_meta(&self, pfd: BorrowedFd<'_>, name: &[u8], made: Made<'_>, node: &Node, path: &[u8]) {
        let how = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(pfd, name, how, Mode::empty()) else {
            self.skip(replaced(path));
            return;
        };
        let same = rustix::fs::fstat(&fd).is_ok_and(|st| {
            let ft = FileType::from_raw_mode(st.st_mode);
            st.st_nlink == 1
                && match made {
                    Made::Symlink(target) => {
                        ft == FileType::Symlink
                            && rustix::fs::readlinkat(&fd, "", Vec::new()).is_ok_and(|t| t.as_bytes() == target)
                    }
                    Made::Special(want, dev) => ft == want && (want == FileType::Fifo || st.st_rdev == dev),
                }
        });
        if !same {
            self.skip(replaced(path));
            return;
        }
        let m = &node.meta;
        if self.is_root && m.uid != u32::MAX && m.gid != u32::MAX {
            let (u, g) = (rustix::fs::Uid::from_raw(m.uid), rustix::fs::Gid::from_raw(m.gid));
            if let Err(e) = rustix::fs::chownat(&fd, "", Some(u), Some(g), AtFlags::EMPTY_PATH) {
                self.skip(format!("{}: owner {}:{} not set: {e}", display_name(path), m.uid, m.gid));
            }
        }
        let reopen = proc_fd(fd.as_fd());
        self.set_xattrs(node, path, |n, v| rustix::fs::setxattr(&reopen, n, v, XattrFlags::empty()));
        if let Made::Special(..) = made {
            let mode = self.allowed_mode(m.mode, path, false);
            // `reopen` is a magic link to the inode `fd` holds (opened O_NOFOLLOW and just
            // checked to be the fifo or device made), not a name resolved again: as glibc
            // implements fchmodat(AT_SYMLINK_NOFOLLOW).
            if let Err(e) = rustix::fs::chmodat(CWD, &reopen, Mode::from_raw_mode(mode), AtFlags::empty()) {
                self.skip(format!("{}: mode {mode:o} not set: {e}", display_name(path)));
            }
        }
        if let Err(e) = rustix::fs::utimensat(&fd, "", &times(m), AtFlags::EMPTY_PATH) {
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
    cursor: &mut StreamCursor,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    // A host file is opened once, for its holes and its bytes.
    let host = match &f.content {
        Content::Host(h) => Some(h.open()?),
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
                (Content::Stream { .. }, _) => cursor.read_file(f, chunk, pos)?,
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
