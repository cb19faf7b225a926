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
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex};

/// How to extract. No `Default`: the thread count is the caller's (the CLI's `-j`).
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Threads writing files (one more writes the large files, written bypassing the
    /// page cache, when there are other files too: it mostly waits on the device).
    pub threads: usize,
    /// Recreate what only root can and an untrusted image should not get: device nodes,
    /// setuid/setgid bits of files, and `security.capability` and `trusted.*` xattrs
    /// (bsdtar likewise needs `-p` for setuid bits). Off: each is left out and listed.
    pub privileged: bool,
    /// Tests only: called at the moments a local user racing the extraction could swap
    /// an entry, so race tests are deterministic.
    #[doc(hidden)]
    pub race_hook: Option<RaceHook>,
    /// Set by Ctrl-C: extraction stops (each thread at its next entry or 1 MiB chunk),
    /// removes what it made and returns [`ErrorKind::Cancelled`](diskcast_block::ErrorKind::Cancelled).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl ExtractOptions {
    /// `threads` writers, nothing privileged, never cancelled.
    pub fn new(threads: usize) -> Self {
        ExtractOptions { threads, privileged: false, race_hook: None, cancel: None }
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

/// Files at least this large are written bypassing the page cache, by the large files'
/// writer when there is one. 256 KiB, not 1 MiB: /usr/share from a tar (330 files of
/// 256 KiB to 1 MiB, 159 MB) extracted in 0.94-1.14 s against 1.07-1.18 s, faster in 4 of
/// 5 paired rounds, that writer still done before the others.
const DIRECT_FILE_MIN: u64 = 256 << 10;

/// Bytes read and written at a time per file.
const CHUNK: usize = 1 << 20;

/// Most files of one directory a thread takes at once: threads work in different
/// directories (ext4 makes one entry at a time in a directory, under its lock), and a
/// large directory is still shared out.
const BATCH_FILES: usize = 256;

/// Stream files up to this size are read whole by the thread reading the stream and
/// written by whichever thread is free, so a tar's files are created on every core
/// while it is read once, front to back.
const QUEUED_FILE_MAX: u64 = 256 << 10;

/// Most such files waiting to be written: bounds the memory they hold to
/// `QUEUED_FILES * QUEUED_FILE_MAX` (16 MiB); when the queue is full the reading thread
/// writes the file itself.
const QUEUED_FILES: usize = 64;

/// Writes `tree` into `dir`, which must be an empty directory or not exist yet (it is
/// created); a symlink is refused. DIR is opened once and everything is made beneath
/// that descriptor (on ext2/3/4 in a staging directory in DIR, placed away from inodes
/// just deleted, whose entries are moved into DIR at the end: see `Stage`). Files are
/// written by `opts.threads` threads (and large files by one more); the files of one
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
/// at the end. Stopped by `opts.cancel`, it removes everything beneath DIR (which was
/// empty) and DIR itself when it created it, so the directory is as it was before.
pub fn extract(tree: &Tree, dir: &Path, opts: &ExtractOptions, progress: &dyn Progress) -> Result<ExtractReport> {
    Target::open(dir)?.extract(tree, opts, progress)
}

/// [`extract`] into an opened target, taking files staged in it.
fn extract_into(
    root: OwnedFd,
    staged: Option<(&Staging, &HashMap<StagedKey, Staged>)>,
    tree: &Tree,
    opts: &ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractReport> {
    if let Some(h) = &opts.race_hook {
        (h.0)(RaceStep::TargetOpened)
    }
    if let Some((st, _)) = staged
        && tree.lookup(NodeId::ROOT, &st.name).is_some()
    {
        return Err(Error::refused(format!(
            "the image has an entry {} at its root, the name of diskcast's staging directory: extract it again",
            display_name(&st.name)
        )));
    }
    // A default ACL on DIR replaces the umask for everything made beneath it: then the
    // mode a new file gets is not known and is always set.
    let has_default_acl = rustix::fs::fgetxattr(&root, "system.posix_acl_default", &mut [0u8; 0][..]).is_ok();
    let mut x = Extractor {
        root,
        staged_in: None,
        is_root: rustix::process::geteuid().is_root(),
        privileged: opts.privileged,
        umask: if has_default_acl { None } else { process_umask() },
        report: Mutex::new(ExtractReport::default()),
        dropped: AtomicUsize::new(0),
        hook: opts.race_hook.clone(),
        staged,
        cancel: opts.cancel.clone(),
    };
    // Sized up front: growing it copied the whole list at every doubling.
    let mut entries: Vec<(Vec<u8>, NodeId)> = Vec::with_capacity(tree.node_count());
    entries.extend(tree.walk(NodeId::ROOT));
    progress.start(tree.stats().file_bytes);
    let threads = opts.threads.clamp(1, 64);

    // 1. Directories, symlinks, specials, one task per directory on every thread (a
    //    directory's task makes its entries, then queues its subdirectories); files
    //    and hard links collected. Lists indexed by node and by entry, not maps: this
    //    runs on one thread before any other work starts.
    let mut first: Vec<Option<usize>> = vec![None; tree.node_count()];
    let mut files: Vec<usize> = Vec::new();
    let mut links: HashMap<usize, Vec<usize>> = HashMap::new();
    // The directory each entry is in (an index into `entries`; the root's is itself).
    let mut parents: Vec<usize> = vec![0; entries.len()];
    // The directories from the root down to the last entry's: the walk is depth first,
    // so an entry's directory is on it, and entries of a directory come after it.
    let mut open_dirs: Vec<usize> = vec![0];
    let mut kids: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (path, id)) in entries.iter().enumerate().skip(1) {
        let dir = split(path).0;
        while open_dirs.last().is_some_and(|&d| entries[d].0 != dir) {
            open_dirs.pop();
        }
        let parent = *open_dirs.last().ok_or_else(|| Error::invalid("entry before its directory"))?;
        parents[i] = parent;
        let node = tree.node(*id);
        if let Kind::File(_) = &node.kind {
            match &mut first[id.index()] {
                Some(f) => links.entry(*f).or_default().push(i),
                none => {
                    *none = Some(i);
                    files.push(i);
                }
            }
            continue;
        }
        if let Kind::Dir(_) = &node.kind {
            open_dirs.push(i);
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
        kids.entry(parent).or_default().push(i);
    }
    // Stages 1 and 2 write into the staging directory where there is one (see
    // `Stage`); its entries move into DIR before stage 3.
    let stage = Stage::make(&x.root).map(|(st, fd)| {
        if let Some(msg) = &st.restore_failed {
            x.skip(msg.clone());
        }
        x.staged_in = Some(st.name.clone());
        (st, std::mem::replace(&mut x.root, fd))
    });
    // (dev, ino, uid, gid) of each directory made, to check it is still the one when its
    // metadata is set at the end, and to know who owns the entries made in it.
    let made_dirs: Mutex<HashMap<usize, MadeDir>> = Mutex::new(HashMap::new());
    let queue = WorkQueue::new(threads, 0);
    let planned = std::thread::scope(|s| {
        for t in 0..threads {
            let (queue, kids, entries, made_dirs, x) = (&queue, &kids, &entries, &made_dirs, &x);
            diskcast_block::copy::spawn_worker(s, "dc-extract", move || {
                while let Some(d) = queue.pop(t) {
                    if let Some(k) = kids.get(&d).filter(|_| !x.cancelled()) {
                        x.make_dir_entries(&entries[d].0, k, entries, tree, made_dirs, &|k| queue.push(t, k));
                    }
                    queue.done();
                }
            });
        }
        // Meanwhile this thread plans stage 2.
        plan_files(&x, tree, &entries, &files)
    });
    let made_dirs = made_dirs.into_inner().unwrap_or_else(|p| p.into_inner());

    // 2. File content, in parallel (see `plan_files`). A file's hard links are made
    //    from its descriptor right after it is written.
    let (jobs, batches) = planned?;
    let files_stage =
        FileStage { x: &x, entries: &entries, tree, links: &links, parents: &parents, made_dirs: &made_dirs, progress };
    files_stage.run(&jobs, &batches, threads);
    if let Some((st, dir_fd)) = stage {
        let stage_fd = std::mem::replace(&mut x.root, dir_fd);
        x.staged_in = None;
        st.unstage(&x, &stage_fd);
    }
    if let Some((st, _)) = staged {
        // Gone before directories get their times: removing it changes DIR's.
        st.remove(&x.root);
    }

    // 3. Directories' metadata (every entry is made by now, so setting a directory's
    //    time is the last change inside it), on every thread.
    let dirs: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(i, (_, id))| matches!(tree.node(*id).kind, Kind::Dir(_)) && (*i == 0 || made_dirs.contains_key(i)))
        .map(|(i, _)| i)
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(dirs.len().max(1)) {
            diskcast_block::copy::spawn_worker(s, "dc-extract", || {
                while let Some(&i) = dirs.get(next.fetch_add(1, Ordering::Relaxed)).filter(|_| !x.cancelled()) {
                    let (path, id) = &entries[i];
                    x.dir_meta(path, tree.node(*id), if i == 0 { None } else { made_dirs.get(&i) });
                }
            });
        }
    });
    if x.cancelled() {
        return Err(Error::cancelled());
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

/// An extraction directory opened (and checked empty) before its tree is known, so that
/// file contents can be staged in it while a source is still being read (a container
/// image's layers are then decoded once, not once to build the tree and again to
/// extract it). Staged files live in a private directory beneath DIR, unnamed to the
/// tree, and are renamed into place by [`Target::extract`]; dropping the target without
/// extracting removes them, and DIR itself when it was created here.
#[derive(Debug)]
pub struct Target {
    root: OwnedFd,
    dir: std::path::PathBuf,
    created: bool,
    staging: Option<Staging>,
    extracted: bool,
}

impl Target {
    /// Opens DIR as [`extract`] does: a new or empty directory, never a symlink.
    pub fn open(dir: &Path) -> Result<Target> {
        let (root, created) = open_target(dir)?;
        Ok(Target { root, dir: dir.to_path_buf(), created, staging: None, extracted: false })
    }

    /// The place file contents are staged in, made on first use.
    pub fn staging(&mut self) -> Result<&Staging> {
        if self.staging.is_none() {
            self.staging = Some(Staging::new(&self.root, &self.dir)?);
        }
        self.staging.as_ref().ok_or_else(|| Error::invalid("no staging directory"))
    }

    /// Writes `tree` into DIR as [`extract`] does, renaming in the files staged for it
    /// (a staged file the tree does not hold, overwritten or whited out later, is
    /// removed); the staging directory is gone afterwards.
    pub fn extract(mut self, tree: &Tree, opts: &ExtractOptions, progress: &dyn Progress) -> Result<ExtractReport> {
        let root =
            self.root.try_clone().map_err(|e| Error::io("cannot duplicate descriptor", e).with_file(&self.dir))?;
        let staged = self.staging.as_ref().map(|st| (st, st.take_files()));
        let r = extract_into(root, staged.as_ref().map(|(st, f)| (*st, f)), tree, opts, progress);
        if let Err(e) = &r
            && e.kind() == diskcast_block::ErrorKind::Cancelled
        {
            // Stopped: everything beneath DIR (staging included) goes, DIR too if new.
            self.extracted = true;
            return Err(crate::undo::remove_extraction(&self.root, &self.dir, self.created));
        }
        self.extracted = r.is_ok();
        r
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(st) = self.staging.take() {
            st.remove(&self.root);
        }
        if self.created && !self.extracted {
            // DIR is empty again: nothing of a failed read is left behind.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A staged file: where it is and what of its metadata it has already.
#[derive(Debug)]
struct Staged {
    /// Its name in the staging directory.
    id: u64,
    size: u64,
    /// Bytes written (all-zero pieces are holes).
    written: u64,
    /// The permission bits it has (never setuid/setgid/sticky).
    mode: u32,
    /// Its modification and access times.
    times: (diskcast_tree::Timestamp, diskcast_tree::Timestamp),
}

/// Key of a staged file: its stream (see [`diskcast_tree::stream_id`]) and offset there.
type StagedKey = (usize, u64);

/// Files written beneath DIR before the tree is known (see [`Target`]): a directory
/// only diskcast can enter (0700), its entries named by number, so nothing there is
/// an input's name and nothing is resolved through a link.
#[derive(Debug)]
pub struct Staging {
    fd: OwnedFd,
    name: Vec<u8>,
    /// (dev, ino) of the staging directory, to remove only that one at the end.
    id: (u64, u64),
    /// Owner of the files made in it.
    owner: (u32, u32),
    umask: Option<u32>,
    next: std::sync::atomic::AtomicU64,
    files: Mutex<HashMap<StagedKey, Staged>>,
}

/// How many names are tried for the staging directory before giving up.
const STAGING_TRIES: u32 = 16;

impl Staging {
    fn new(root: &OwnedFd, dir: &Path) -> Result<Staging> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut tries = 0;
        // Placed away from DIR, as the tree is (see `Stage`): its name varies per run.
        let mark = TopDir::mark(root.as_fd());
        let name = loop {
            let name = format!(".diskcast-staging-{}-{nanos:x}-{tries}", std::process::id()).into_bytes();
            match rustix::fs::mkdirat(root, name.as_slice(), Mode::from_raw_mode(0o700)) {
                Ok(()) => break name,
                Err(rustix::io::Errno::EXIST) if tries < STAGING_TRIES => tries += 1,
                Err(e) => return Err(Error::io("cannot create a staging directory in", e.into()).with_file(dir)),
            }
        };
        drop(mark);
        let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(root, name.as_slice(), how, Mode::empty())
            .map_err(|e| Error::io("cannot open the staging directory in", e.into()).with_file(dir))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("cannot stat", e.into()).with_file(dir))?;
        let has_default_acl = rustix::fs::fgetxattr(root, "system.posix_acl_default", &mut [0u8; 0][..]).is_ok();
        Ok(Staging {
            fd,
            name,
            id: (st.st_dev, st.st_ino),
            owner: (st.st_uid, st.st_gid),
            umask: if has_default_acl { None } else { process_umask() },
            next: std::sync::atomic::AtomicU64::new(0),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// Starts staging the `size` bytes at `offset` of `stream` (a regular file's whole
    /// content), with `meta`'s permission bits and times; [`StagedFile::finish`] keeps it.
    pub fn file(
        &self,
        stream: &std::sync::Arc<dyn diskcast_tree::StreamSource>,
        offset: u64,
        size: u64,
        meta: &Meta,
    ) -> Result<StagedFile<'_>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let name = id.to_string();
        let big = size >= DIRECT_FILE_MIN;
        let mode = meta.mode & 0o777;
        let out = create_file(self.fd.as_fd(), name.as_bytes(), mode, big, name.as_bytes())?;
        Ok(StagedFile {
            st: self,
            key: (diskcast_tree::stream_id(stream), offset),
            staged: Staged { id, size, written: 0, mode, times: (meta.mtime, meta.atime.unwrap_or(meta.mtime)) },
            out: Some(out),
            w: Written::default(),
        })
    }

    fn take_files(&self) -> HashMap<StagedKey, Staged> {
        std::mem::take(&mut *self.files.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Removes what is left in the staging directory and the directory itself (if DIR
    /// still holds it by its name).
    fn remove(&self, root: impl AsFd) {
        let root = root.as_fd();
        if let Ok(entries) = rustix::fs::Dir::read_from(&self.fd) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !matches!(name.to_bytes(), b"." | b"..") {
                    let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
                }
            }
        }
        let now =
            rustix::fs::statat(root, self.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW).map(|st| (st.st_dev, st.st_ino));
        if now == Ok(self.id) {
            let _ = rustix::fs::unlinkat(root, self.name.as_slice(), AtFlags::REMOVEDIR);
        }
    }
}

/// A file being staged: its bytes are handed over piece by piece, front to back.
/// Dropped without [`Self::finish`], it is removed.
#[derive(Debug)]
pub struct StagedFile<'a> {
    st: &'a Staging,
    key: StagedKey,
    staged: Staged,
    out: Option<ImageFile>,
    w: Written,
}

impl StagedFile<'_> {
    /// Appends `piece` (all-zero pieces are left as holes).
    pub fn write(&mut self, piece: &[u8]) -> Result<()> {
        let out = self.out.as_ref().ok_or_else(|| Error::invalid("staged file already finished"))?;
        let pos = self.w.covered;
        if pos.saturating_add(diskcast_layout::u64_from_usize(piece.len())) > self.staged.size {
            return Err(Error::invalid("more bytes than the staged file's size"));
        }
        self.w.chunk(out, piece, pos, &diskcast_block::progress::NoProgress)
    }

    /// Gives the file its size, mode and times and records it for [`Target::extract`].
    pub fn finish(mut self) -> Result<()> {
        let Some(out) = self.out.take() else { return Err(Error::invalid("staged file already finished")) };
        let name = self.staged.id.to_string();
        let done = (|| {
            let w = std::mem::take(&mut self.w);
            if w.covered != self.staged.size {
                return Err(Error::invalid(format!("staged {} of {} bytes", w.covered, self.staged.size)));
            }
            if w.end < self.staged.size {
                out.set_len(self.staged.size)?;
            }
            self.staged.written = w.written;
            let fd = out.file().as_fd();
            let mode = self.staged.mode;
            if self.st.umask.is_none_or(|u| mode & u != 0) {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| Error::io("cannot chmod", e.into()))?;
            }
            let (m, a) = self.staged.times;
            let t = Timestamps { last_access: ts(a), last_modification: ts(m) };
            rustix::fs::futimens(fd, &t).map_err(|e| Error::io("cannot set times", e.into()))?;
            Ok(())
        })();
        if let Err(e) = done {
            let _ = rustix::fs::unlinkat(&self.st.fd, name.as_str(), AtFlags::empty());
            return Err(e);
        }
        let staged = std::mem::replace(
            &mut self.staged,
            Staged { id: 0, size: 0, written: 0, mode: 0, times: Default::default() },
        );
        let old = self.st.files.lock().unwrap_or_else(|p| p.into_inner()).insert(self.key, staged);
        if let Some(old) = old {
            // The same content staged twice (cannot happen for one stream): keep one.
            let _ = rustix::fs::unlinkat(&self.st.fd, old.id.to_string().as_str(), AtFlags::empty());
        }
        Ok(())
    }
}

impl Drop for StagedFile<'_> {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = rustix::fs::unlinkat(&self.st.fd, self.staged.id.to_string().as_str(), AtFlags::empty());
        }
    }
}

/// Creates the new file `name` in `pfd` (`O_EXCL`, never through a link) with
/// permission bits `mode`; a `big` one also gets a handle that bypasses the page cache
/// (see `ImageFile::write_all_at`), reopened through its descriptor, not by name; where
/// the filesystem refuses `O_DIRECT` it is written buffered. `path` names it in errors.
fn create_file(pfd: BorrowedFd<'_>, name: &[u8], mode: u32, big: bool, path: &[u8]) -> Result<ImageFile> {
    let fd = rustix::fs::openat2(
        pfd,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
        BENEATH,
    )
    .map_err(|e| sys(e, "cannot create", path))?;
    let mut out = ImageFile::from_file(std::fs::File::from(fd), Path::new(std::ffi::OsStr::from_bytes(path)));
    if big {
        let flags = OFlags::WRONLY | OFlags::CLOEXEC | OFlags::DIRECT;
        if let Ok(d) = rustix::fs::open(proc_fd(out.file().as_fd()), flags, Mode::empty()) {
            out = out.with_direct_handle(std::fs::File::from(d));
        }
    }
    Ok(out)
}

/// Opens DIR once, without following a symlink, creating it if it does not exist; it
/// must be empty. Everything after works beneath this descriptor, so swapping DIR for a
/// symlink later changes nothing.
fn open_target(dir: &Path) -> Result<(OwnedFd, bool)> {
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
    let mut created = false;
    let fd = match rustix::fs::open(dir, how, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", e).with_file(parent))?;
            }
            match rustix::fs::mkdir(dir, Mode::from_raw_mode(0o777)) {
                Ok(()) => created = true,
                Err(Errno::EXIST) => {}
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
    Ok((fd, created))
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
    fn get<'a>(&'a mut self, x: &'a Extractor<'_>, parent: &[u8]) -> Result<BorrowedFd<'a>> {
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

struct Extractor<'a> {
    /// Where paths start: DIR, or the staging directory in it during stages 1 and 2.
    root: OwnedFd,
    /// The staging directory's name while `root` is it (race hooks see real paths).
    staged_in: Option<Vec<u8>>,
    /// Files written while the tree was read, renamed into place.
    staged: Option<(&'a Staging, &'a HashMap<StagedKey, Staged>)>,
    is_root: bool,
    privileged: bool,
    /// The process umask, which gives the mode of what is created; `None` when unknown
    /// (or replaced by a default ACL on DIR), and then every mode is set.
    umask: Option<u32>,
    report: Mutex<ExtractReport>,
    dropped: AtomicUsize,
    hook: Option<RaceHook>,
    cancel: Option<Arc<AtomicBool>>,
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

impl Extractor<'_> {
    /// Ctrl-C was pressed: make nothing more.
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Where the content of `f` was staged, if it was.
    fn staged_file(&self, f: &FileData) -> Option<(&Staging, &Staged)> {
        let (st, files) = self.staged?;
        let Content::Stream { stream, offset } = &f.content else { return None };
        files.get(&(diskcast_tree::stream_id(stream), *offset)).filter(|s| s.size == f.size).map(|s| (st, s))
    }

    /// Moves the staged file `sf` to `path` (never over an entry) and sets what of the
    /// node's metadata it does not have yet, through its descriptor; returns the
    /// descriptor when `keep` (it has hard links to make).
    #[allow(clippy::too_many_arguments)]
    fn place_staged(
        &self,
        st: &Staging,
        sf: &Staged,
        node: &Node,
        path: &[u8],
        parents: &mut ParentCache,
        progress: &dyn Progress,
        keep: bool,
    ) -> Result<Option<OwnedFd>> {
        let (parent, name) = split(path);
        let pfd = parents.get(self, parent)?;
        let m = &node.meta;
        let has_meta = m.mode & 0o7777 == sf.mode
            && node.xattrs.is_empty()
            && (m.mtime, m.atime.unwrap_or(m.mtime)) == sf.times
            && (!self.is_root || m.uid == u32::MAX || m.gid == u32::MAX || (m.uid, m.gid) == st.owner);
        let id = sf.id.to_string();
        let fd = if has_meta && !keep {
            None
        } else {
            let how = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            Some(
                rustix::fs::openat(&st.fd, id.as_str(), how, Mode::empty())
                    .map_err(|e| sys(e, "cannot open the staged", path))?,
            )
        };
        rustix::fs::renameat_with(&st.fd, id.as_str(), pfd, name, rustix::fs::RenameFlags::NOREPLACE)
            .map_err(|e| sys(e, "cannot create", path))?;
        self.race(RaceStep::Created(path));
        if let Some(fd) = &fd
            && !has_meta
        {
            let mode = self.allowed_mode(m.mode, path, false);
            self.fd_meta(fd, node, path, mode, Have { owner: Some(st.owner), mode: Some(sf.mode) });
        }
        progress.advance(sf.size);
        self.count(|r| {
            r.files += 1;
            r.bytes += sf.written;
        });
        Ok(if keep { fd } else { None })
    }

    /// Whether writing `node` reads a stream (it is a file in one, not staged).
    fn reads_stream(&self, node: &Node) -> bool {
        node.as_file().is_some_and(|f| matches!(f.content, Content::Stream { .. }) && self.staged_file(f).is_none())
    }

    fn race(&self, step: RaceStep<'_>) {
        let Some(h) = &self.hook else { return };
        match (step, &self.staged_in) {
            (RaceStep::Created(p), Some(stage)) => (h.0)(RaceStep::Created(&[stage, &b"/"[..], p].concat())),
            _ => (h.0)(step),
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
        self.open_dir_raw(path, how).map_err(|e| sys(e, "cannot open directory", path))
    }

    fn open_dir_raw(&self, path: &[u8], how: OFlags) -> rustix::io::Result<OwnedFd> {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a symlink anywhere, the last
        // component too, and says so (ELOOP) where O_NOFOLLOW would say ENOTDIR.
        rustix::fs::openat2(&self.root, p, how | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), BENEATH)
    }

    /// Makes the entries of directory `dir` that are not files (`kids`, indexes into
    /// `entries`), records each directory made and queues it for its own entries. When
    /// `dir` cannot be opened, each entry is reported, and each subdirectory's in turn.
    #[allow(clippy::too_many_arguments)]
    fn make_dir_entries(
        &self,
        dir: &[u8],
        kids: &[usize],
        entries: &[(Vec<u8>, NodeId)],
        tree: &Tree,
        made: &Mutex<HashMap<usize, MadeDir>>,
        queue: &dyn Fn(usize),
    ) {
        let opened;
        let pfd = if dir.is_empty() {
            self.root.as_fd()
        } else {
            match self.open_dir_raw(dir, OFlags::PATH) {
                Ok(fd) => {
                    opened = fd;
                    opened.as_fd()
                }
                Err(e) => {
                    for &k in kids {
                        self.fail(&entries[k].0, sys(e, "cannot open directory", dir));
                        if tree.node(entries[k].1).as_dir().is_some() {
                            queue(k);
                        }
                    }
                    return;
                }
            }
        };
        for &k in kids {
            let (path, id) = &entries[k];
            let node = tree.node(*id);
            match self.create_entry(pfd, split(path).1, node, path) {
                Ok(Some(m)) => {
                    made.lock().unwrap_or_else(|p| p.into_inner()).insert(k, m);
                    queue(k);
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(path, e);
                    if node.as_dir().is_some() {
                        queue(k);
                    }
                }
            }
        }
    }

    /// Owner, xattrs, mode and times of a directory, once everything in it is made;
    /// `made` is what diskcast created there (`None` for DIR itself).
    fn dir_meta(&self, path: &[u8], node: &Node, made: Option<&MadeDir>) {
        let fd = match self.open_dir(path, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(_) if made.is_some() => {
                self.skip(replaced(path));
                return;
            }
            Err(e) => {
                self.fail(path, e);
                return;
            }
        };
        let st = rustix::fs::fstat(&fd).ok();
        if let Some(m) = made
            && st.as_ref().map(|st| (st.st_dev, st.st_ino)) != Some((m.dev, m.ino))
        {
            self.skip(replaced(path));
            return;
        }
        let mode = self.allowed_mode(node.meta.mode, path, true);
        let have = st.map_or(Have::default(), |st| Have {
            owner: Some((st.st_uid, st.st_gid)),
            mode: Some(st.st_mode & 0o7777),
        });
        self.fd_meta(&fd, node, path, mode, have);
    }

    /// Creates a directory, symlink, device node or fifo in `pfd`; everything but a
    /// directory gets its metadata at once.
    fn create_entry(&self, pfd: BorrowedFd<'_>, name: &[u8], node: &Node, path: &[u8]) -> Result<Option<MadeDir>> {
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
                self.count(|r| r.dirs += 1);
                self.race(RaceStep::Created(path));
                return Ok(Some(MadeDir { dev: st.st_dev, ino: st.st_ino, uid: st.st_uid, gid: st.st_gid }));
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
        Ok(None)
    }

    /// Writes one regular file (create, data, size, then metadata) in the directory
    /// `parents` opens; returns its descriptor when `keep` (it has hard links to make).
    /// `owner` is who a new entry there belongs to, when known (the directory is one
    /// diskcast made): then chown is skipped when it is right already.
    #[allow(clippy::too_many_arguments)]
    fn write_file(
        &self,
        node: &Node,
        path: &[u8],
        parents: &mut ParentCache,
        owner: Option<(u32, u32)>,
        data: Data<'_>,
        progress: &dyn Progress,
        keep: bool,
    ) -> Result<Option<OwnedFd>> {
        let Kind::File(f) = &node.kind else { return Err(Error::invalid("not a file")) };
        let (parent, name) = split(path);
        let pfd = parents.get(self, parent)?;
        let big = f.size >= DIRECT_FILE_MIN;
        // Created with its final permission bits (so no chmod follows), setuid/setgid
        // and sticky bits aside; a large file owner-only, as it is opened again.
        let create = if big { 0o600 } else { node.meta.mode & 0o777 };
        let out = create_file(pfd, name, create, big, path)?;
        self.race(RaceStep::Created(path));
        if let Err(e) = self.fill_file(&out, f, path, data, big, progress) {
            self.remove_partial(out.file(), path);
            return Err(e);
        }
        let mode = self.allowed_mode(node.meta.mode, path, false);
        let have = Have { owner, mode: self.umask.map(|u| create & !u) };
        self.fd_meta(out.file(), node, path, mode, have);
        if !keep {
            return Ok(None);
        }
        let dup = out.file().try_clone().map_err(|e| Error::io(format!("cannot link {}", display_name(path)), e))?;
        Ok(Some(OwnedFd::from(dup)))
    }

    /// Writes the data of the new file `out` and gives it its size: first for a large
    /// file (`presize`), else only when the data written does not reach the end.
    fn fill_file(
        &self,
        out: &ImageFile,
        f: &FileData,
        path: &[u8],
        data: Data<'_>,
        presize: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let size = |out: &ImageFile| {
            out.file().set_len(f.size).map_err(|e| Error::io(format!("cannot size {}", display_name(path)), e))
        };
        if presize {
            size(out)?;
        }
        let written = match data {
            Data::Source(cursor, buf) => write_data(f, out, cursor, buf, self.cancel.clone(), progress),
            Data::Bytes(bytes) => write_bytes(bytes, out, self.cancel.clone(), progress),
        };
        let (written, covered, end) =
            written.map_err(|e| Error::new(e.kind(), format!("{}: {e}", display_name(path))))?;
        if !presize && end < f.size {
            size(out)?;
        }
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

    /// Owner, xattrs, mode (`mode`, from [`Self::allowed_mode`]) and times of an open
    /// file or directory; what it `have`s already is not set again.
    fn fd_meta(&self, fd: impl AsFd, node: &Node, path: &[u8], mode: u32, have: Have) {
        let m = &node.meta;
        let fd = fd.as_fd();
        if self.is_root
            && m.uid != u32::MAX
            && m.gid != u32::MAX
            && have.owner != Some((m.uid, m.gid))
            && let Err(e) =
                rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(m.uid)), Some(rustix::fs::Gid::from_raw(m.gid)))
        {
            self.skip(format!("{}: owner {}:{} not set: {e}", display_name(path), m.uid, m.gid));
        }
        self.set_xattrs(node, path, |n, v| rustix::fs::fsetxattr(fd, n, v, XattrFlags::empty()));
        if have.mode != Some(mode)
            && let Err(e) = rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
        {
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
        let st = rustix::fs::fstat(&fd).ok();
        let same = st.as_ref().is_some_and(|st| {
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
        let owner = st.as_ref().map(|st| (st.st_uid, st.st_gid));
        if self.is_root && m.uid != u32::MAX && m.gid != u32::MAX && owner != Some((m.uid, m.gid)) {
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

/// What a file's data writes did: bytes written, bytes covered by data ranges, and where
/// the last write ended (the file's size must still be set when that is short of it).
#[derive(Debug, Default)]
pub(crate) struct Written {
    written: u64,
    covered: u64,
    end: u64,
    /// Ctrl-C: a large file stops at its next chunk.
    cancel: Option<Arc<AtomicBool>>,
}

impl Written {
    /// Writes `chunk` at `pos` unless it is all zero (left as a hole), and counts it.
    fn chunk(&mut self, file: &ImageFile, chunk: &[u8], pos: u64, progress: &dyn Progress) -> Result<()> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::cancelled());
        }
        let n = diskcast_layout::u64_from_usize(chunk.len());
        if !diskcast_block::io::is_zero(chunk) {
            file.write_all_at(chunk, pos)?;
            self.written += n;
            self.end = pos + n;
        }
        progress.advance(n);
        self.covered += n;
        Ok(())
    }

    fn totals(self) -> (u64, u64, u64) {
        (self.written, self.covered, self.end)
    }
}

/// Writes a file's bytes held in memory into `file`, all-zero chunks left as holes.
/// Returns what [`write_data`] does.
fn write_bytes(
    bytes: &[u8],
    file: &ImageFile,
    cancel: Option<Arc<AtomicBool>>,
    progress: &dyn Progress,
) -> Result<(u64, u64, u64)> {
    let mut w = Written { cancel, ..Written::default() };
    for chunk in bytes.chunks(CHUNK) {
        w.chunk(file, chunk, w.covered, progress)?;
    }
    Ok(w.totals())
}

/// Writes a file's data ranges into `file` (holes stay holes, and all-zero chunks are
/// not written either). Returns the bytes written, the bytes the data ranges covered,
/// and where the last write ended (see [`Written`]).
fn write_data(
    f: &FileData,
    file: &ImageFile,
    cursor: &mut StreamCursor,
    buf: &mut [u8],
    cancel: Option<Arc<AtomicBool>>,
    progress: &dyn Progress,
) -> Result<(u64, u64, u64)> {
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
    let mut w = Written { cancel, ..Written::default() };
    for (start, len) in ranges {
        let end = start
            .checked_add(len)
            .filter(|&e| e <= f.size)
            .ok_or_else(|| Error::corrupt("data range past the file's end"))?;
        let mut pos = start;
        while pos < end {
            let n = diskcast_layout::usize_from_u64(
                (end - pos).min(diskcast_layout::u64_from_usize(buf.len())),
                "copy buffer",
            )?;
            let chunk = &mut buf[..n];
            match (&f.content, &host) {
                (Content::Stream { stream, offset }, _) => cursor.read_exact_at(stream, chunk, offset + pos)?,
                (_, Some(h)) => h.read_exact_at(chunk, pos).map_err(|e| {
                    Error::new(e.kind(), format!("{} (did the file change while it was being read?)", e.message()))
                })?,
                _ => f.read_at(chunk, pos)?,
            }
            w.chunk(file, chunk, pos, progress)?;
            pos += diskcast_layout::u64_from_usize(n);
        }
    }
    Ok(w.totals())
}

/// What diskcast made for a directory: its identity, checked again before its
/// metadata is set, and the owner every entry made in it gets.
#[derive(Debug, Clone, Copy)]
struct MadeDir {
    dev: u64,
    ino: u64,
    uid: u32,
    gid: u32,
}

/// What a new entry has already, so setting it again is skipped (a syscall each, and
/// on ext4 a change to the inode).
#[derive(Debug, Default, Clone, Copy)]
struct Have {
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
}

/// Where a file's bytes come from when it is written.
enum Data<'a> {
    /// Its content, read here (a stream through the thread's cursor).
    Source(&'a mut StreamCursor, &'a mut [u8]),
    /// Its bytes, read already by the thread that reads its stream.
    Bytes(&'a [u8]),
}

/// The umask of this process, read from /proc (setting it to read it would race with
/// other threads); `None` when /proc does not say.
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// `statfs` type of ext2/3/4, the filesystems whose inode allocator [`Stage`] steers.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;

/// Placements of the staging directory tried before the last one is kept, bounding the
/// directories made (and removed again) to find a group without recently deleted inodes.
const STAGE_TRIES: usize = 4;

/// A `mkdir` slower than this landed in a block group whose free inodes are all recently
/// deleted (ext4 then checks every one, about 0.2 us apiece, before taking the last):
/// this is about 2 500 of them, where a plain `mkdir` takes 10-100 us. A group with a few
/// older free inodes first is not caught by this; the random placement avoids it instead.
const SLOW_MKDIR: std::time::Duration = std::time::Duration::from_micros(500);

/// A hidden directory in DIR that stages 1 and 2 write into on ext2/3/4, placed away from
/// the inodes deleted in the last minutes; its entries are moved into DIR at the end.
///
/// Why: on an ext4 without a journal every inode allocation scans its block group's free
/// inodes and skips, one buffer-cache lookup each, those deleted in the last 60 s (6 min
/// while their inode table block is dirty), taking the last one when that is all the
/// group holds. A tree is placed near its parent, so a tree extracted
/// again right after `rm -rf` of the previous copy lands in the groups just freed and
/// every creation scans up to a whole group (8 192 inodes): 30-40 s of system CPU for
/// 51 000 entries, whatever the extractor. A child of a directory marked `FS_TOPDIR_FL`
/// is instead put in the flex group with the fewest directories, searched from a hash
/// of its name: DIR is marked for the one `mkdir` of a randomly named staging directory,
/// a placement found slow is tried again under another name, and everything below the
/// staging directory is allocated in its group.
struct Stage {
    /// The staging directory's name in DIR.
    name: Vec<u8>,
    /// Empty directories of placements found slow, removed at the end.
    spare: Vec<Vec<u8>>,
    /// DIR's flags could not be put back (reported as skipped).
    restore_failed: Option<String>,
}

impl Stage {
    /// The staging directory and a descriptor of it, or `None` where there is none to
    /// make: not ext2/3/4, or DIR's flags cannot be read or set (not DIR's owner).
    fn make(root: &OwnedFd) -> Option<(Stage, OwnedFd)> {
        let mark = TopDir::mark(root.as_fd())?;
        let mut spare = Vec::new();
        let mut chosen = None;
        for attempt in 0..STAGE_TRIES {
            let name = format!(".diskcast-stage-{:016x}", random_u64()).into_bytes();
            let t0 = std::time::Instant::now();
            if rustix::fs::mkdirat(root, name.as_slice(), Mode::from_raw_mode(0o700)).is_err() {
                break;
            }
            if t0.elapsed() < SLOW_MKDIR || attempt + 1 == STAGE_TRIES {
                chosen = Some(name);
                break;
            }
            spare.push(name);
        }
        let restore_failed = (!mark.restore())
            .then(|| "the extraction directory keeps the top-directory flag (chattr +T) set to place the staging directory: clearing it failed".to_string());
        let mut stage = Stage { name: Vec::new(), spare, restore_failed };
        let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match chosen.map(|name| (rustix::fs::openat(root, name.as_slice(), how, Mode::empty()), name)) {
            Some((Ok(fd), name)) => {
                stage.name = name;
                Some((stage, fd))
            }
            Some((Err(_), name)) => {
                stage.spare.push(name);
                // Nothing is extracted yet; what cannot be removed stays empty.
                drop(stage.remove_spares(root));
                None
            }
            None => {
                drop(stage.remove_spares(root));
                None
            }
        }
    }

    /// Moves everything in the staging directory into DIR (`x.root` again) and removes it.
    fn unstage(mut self, x: &Extractor<'_>, stage_fd: &OwnedFd) {
        let shown = String::from_utf8_lossy(&self.name).into_owned();
        let names: Vec<Vec<u8>> = match rustix::fs::Dir::read_from(stage_fd) {
            Ok(dir) => dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_bytes().to_vec())
                .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
                .collect(),
            Err(e) => {
                x.fail(
                    b"",
                    Error::io(format!("cannot read the staging directory {shown}, where everything is left"), e.into()),
                );
                return;
            }
        };
        let mut all_moved = true;
        for name in &names {
            if let Err(e) = rustix::fs::renameat_with(
                stage_fd,
                name.as_slice(),
                &x.root,
                name.as_slice(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                all_moved = false;
                let what = format!(
                    "cannot move {} out of the staging directory {shown}, where it is left",
                    display_name(name)
                );
                x.fail(name, Error::io(what, e.into()));
            }
        }
        if all_moved {
            self.spare.push(std::mem::take(&mut self.name));
        }
        for name in self.remove_spares(&x.root) {
            x.skip(format!("{}: an empty staging directory diskcast made could not be removed", display_name(&name)));
        }
    }

    /// Removes the spare directories; returns those that could not be.
    fn remove_spares(&self, root: &OwnedFd) -> Vec<Vec<u8>> {
        let gone = |name: &&Vec<u8>| rustix::fs::unlinkat(root, name.as_slice(), AtFlags::REMOVEDIR).is_ok();
        self.spare.iter().filter(|n| !gone(n)).cloned().collect()
    }
}

/// DIR marked top directory (`FS_TOPDIR_FL`, `chattr +T`) on ext2/3/4 while this lives,
/// so ext4 places a directory made in it away from DIR (see [`Stage`]); the flags DIR
/// had are put back by [`Self::restore`] or when dropped.
struct TopDir<'a> {
    root: BorrowedFd<'a>,
    /// DIR's flags before, when this set the mark.
    before: Option<rustix::fs::IFlags>,
}

impl<'a> TopDir<'a> {
    /// `None` where DIR is not on ext2/3/4 or its flags cannot be read or set (not its owner).
    fn mark(root: BorrowedFd<'a>) -> Option<TopDir<'a>> {
        use rustix::fs::IFlags;
        let st = rustix::fs::fstatfs(root).ok()?;
        if u64::try_from(st.f_type).ok() != Some(EXT4_SUPER_MAGIC) {
            return None;
        }
        let flags = rustix::fs::ioctl_getflags(root).ok()?;
        if flags.contains(IFlags::TOPDIR) {
            return Some(TopDir { root, before: None });
        }
        rustix::fs::ioctl_setflags(root, flags | IFlags::TOPDIR).ok()?;
        Some(TopDir { root, before: Some(flags) })
    }

    /// Puts DIR's flags back; false if that failed.
    fn restore(mut self) -> bool {
        self.before.take().is_none_or(|f| rustix::fs::ioctl_setflags(self.root, f).is_ok())
    }
}

impl Drop for TopDir<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.before.take() {
            let _ = rustix::fs::ioctl_setflags(self.root, f);
        }
    }
}

/// A random number for a name, from the standard library's per-process random keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Directories whose entries are still to be made, shared by the threads of stage 1:
/// each thread takes the directories it made itself, depth first, and when it has none
/// left takes the oldest (highest in the tree) of the thread with the most, so threads
/// work in different subtrees. The stage ends when no thread holds or makes a directory.
struct WorkQueue {
    state: Mutex<(Vec<VecDeque<usize>>, usize)>,
    wake: Condvar,
}

impl WorkQueue {
    fn new(threads: usize, first: usize) -> Self {
        let mut stacks = vec![VecDeque::new(); threads.max(1)];
        stacks[0].push_back(first);
        WorkQueue { state: Mutex::new((stacks, 0)), wake: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<VecDeque<usize>>, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next task of thread `t` (busy until [`Self::done`]), `None` when all is done.
    fn pop(&self, t: usize) -> Option<usize> {
        let mut g = self.lock();
        loop {
            let own = g.0.get_mut(t).and_then(VecDeque::pop_back);
            let task = own.or_else(|| g.0.iter_mut().max_by_key(|q| q.len()).and_then(VecDeque::pop_front));
            if let Some(task) = task {
                g.1 += 1;
                return Some(task);
            }
            if g.1 == 0 {
                return None;
            }
            g = self.wake.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn push(&self, t: usize, task: usize) {
        if let Some(q) = self.lock().0.get_mut(t) {
            q.push_back(task);
        }
        self.wake.notify_one();
    }

    fn done(&self) {
        let mut g = self.lock();
        g.1 -= 1;
        if g.1 == 0 && g.0.iter().all(VecDeque::is_empty) {
            self.wake.notify_all();
        }
    }
}

/// The batches of stage 2 cut into one run per thread, in walk order: a thread writes
/// its own part of the tree front to back (its own subtrees and directories),
/// then helps with the back of the largest part left.
struct Parts(Mutex<Vec<Range<usize>>>);

impl Parts {
    fn new(n: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        Parts(Mutex::new((0..threads).map(|t| n * t / threads..n * (t + 1) / threads).collect()))
    }

    /// The next of thread `t`'s share, else the last of the largest share left when
    /// `steal`.
    fn take(&self, t: usize, steal: bool) -> Option<usize> {
        let mut parts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = parts.get_mut(t)
            && let Some(i) = r.next()
        {
            return Some(i);
        }
        if !steal {
            return None;
        }
        parts.iter_mut().max_by_key(|r| r.len()).and_then(|r| r.next_back())
    }
}

/// File jobs (bytes, entries) and the batches they are cut into.
type Jobs = (Vec<(u64, Vec<usize>)>, Vec<Range<usize>>);

/// Stage 2's work: one job per stream (its files in offset order), one per other file
/// (a staged one is only renamed into place: loose, like files not in a stream), cut
/// into batches by [`batch_jobs`].
fn plan_files(x: &Extractor<'_>, tree: &Tree, entries: &[(Vec<u8>, NodeId)], files: &[usize]) -> Result<Jobs> {
    let size = |i: usize| tree.node(entries[i].1).as_file().map_or(0, |f| f.size);
    let mut schedule = Schedule::new();
    let mut staged_files = Vec::new();
    for &i in files {
        let f = tree.node(entries[i].1).as_file().ok_or_else(|| Error::invalid("not a file"))?;
        if x.staged_file(f).is_some() {
            staged_files.push(i);
        } else {
            schedule.push(f, i);
        }
    }
    let (loose, runs) = schedule.into_runs();
    let mut jobs: Vec<(u64, Vec<usize>)> = staged_files.into_iter().chain(loose).map(|i| (size(i), vec![i])).collect();
    for run in runs {
        jobs.push((run.files.iter().map(|&i| size(i)).sum(), run.files));
    }
    let batches = batch_jobs(&mut jobs, entries, &|i| x.reads_stream(tree.node(entries[i].1)));
    Ok((jobs, batches))
}

/// Orders the file jobs and cuts them into batches a thread takes at once: each stream
/// alone and first (its reader hands small files to the other threads), then every
/// other file in walk order, a directory's files together (at most [`BATCH_FILES`]),
/// a large file alone.
fn batch_jobs(
    jobs: &mut [(u64, Vec<usize>)],
    entries: &[(Vec<u8>, NodeId)],
    reads_stream: &dyn Fn(usize) -> bool,
) -> Vec<Range<usize>> {
    let is_stream = |job: &(u64, Vec<usize>)| job.1.first().is_some_and(|&i| reads_stream(i));
    let alone = |job: &(u64, Vec<usize>)| is_stream(job) || job.0 >= DIRECT_FILE_MIN;
    let dir_of = |job: &(u64, Vec<usize>)| job.1.first().map(|&i| split(&entries[i].0).0);
    jobs.sort_by_key(|j| (!is_stream(j), j.1.first().copied()));
    let mut batches = Vec::new();
    let mut start = 0;
    for j in 1..jobs.len() {
        if alone(&jobs[j])
            || alone(&jobs[j - 1])
            || j - start >= BATCH_FILES
            || dir_of(&jobs[j]) != dir_of(&jobs[j - 1])
        {
            batches.push(start..j);
            start = j;
        }
    }
    if start < jobs.len() {
        batches.push(start..jobs.len());
    }
    batches
}

/// Stage 2 of [`extract`]: every file written and its hard links made.
struct FileStage<'a> {
    x: &'a Extractor<'a>,
    entries: &'a [(Vec<u8>, NodeId)],
    tree: &'a Tree,
    links: &'a HashMap<usize, Vec<usize>>,
    /// The directory each entry is in (see `extract_into`).
    parents: &'a [usize],
    made_dirs: &'a HashMap<usize, MadeDir>,
    progress: &'a dyn Progress,
}

/// What one thread of [`FileStage`] keeps between files.
struct Worker {
    parents: ParentCache,
    cursor: StreamCursor,
    buf: Vec<u8>,
}

impl FileStage<'_> {
    /// Runs `batches` of `jobs` on `threads` threads. Small files of a stream are read
    /// by the thread that reads the stream and queued for any thread to write.
    fn run(&self, jobs: &[(u64, Vec<usize>)], batches: &[Range<usize>], threads: usize) {
        // As many threads as files at most: one batch of a stream is shared out too.
        let threads = threads.min(jobs.iter().map(|j| j.1.len()).sum::<usize>().max(1));
        // A large file is written bypassing the page cache, so its writer waits on the
        // device for every chunk. With two threads or more, and other files to make,
        // one thread more writes the large files: its waits overlap the others' file
        // creation (CPU work) instead of leaving a core idle. It takes only large
        // files (a third thread creating files would contend with the two); the others
        // take from any share once their own is done, so none waits while work is left.
        let direct: Vec<bool> = batches.iter().map(|b| self.writes_direct(&jobs[b.clone()])).collect();
        let order: Vec<usize> =
            (0..batches.len()).filter(|&b| !direct[b]).chain((0..batches.len()).filter(|&b| direct[b])).collect();
        let others = direct.iter().filter(|&&d| !d).count();
        let io_thread = threads > 1 && others > 0 && others < order.len();
        let parts = if io_thread {
            let mut shares: Vec<Range<usize>> =
                (0..threads).map(|t| others * t / threads..others * (t + 1) / threads).collect();
            shares.push(others..order.len());
            Parts(Mutex::new(shares))
        } else {
            Parts::new(order.len(), threads)
        };
        // The large files' thread is the last (named `dc-extract-big`, beside the
        // `threads` of the budget).
        let io = threads;
        let threads = threads + usize::from(io_thread);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(QUEUED_FILES);
        let rx = Mutex::new(rx);
        let share = threads > 1;
        std::thread::scope(|s| {
            for t in 0..threads {
                let tx = tx.clone();
                let (parts, rx, order) = (&parts, &rx, &order);
                let large = io_thread && t == io;
                let name = if large { "dc-extract-big" } else { "dc-extract" };
                diskcast_block::copy::spawn_worker(s, name, move || {
                    let mut w =
                        Worker { parents: ParentCache::default(), cursor: StreamCursor::new(), buf: vec![0u8; CHUNK] };
                    loop {
                        while let Some(item) = take(rx, false) {
                            self.write_one(&mut w, item.0, Some(&item.1));
                        }
                        let Some(b) = parts.take(t, !large).and_then(|p| order.get(p)).and_then(|&b| batches.get(b))
                        else {
                            break;
                        };
                        for job in &jobs[b.clone()] {
                            for &i in &job.1 {
                                self.file(&mut w, i, share.then_some(&tx));
                            }
                        }
                    }
                    // No more batches: write what the stream readers still queue.
                    drop(tx);
                    while let Some(item) = take(rx, true) {
                        self.write_one(&mut w, item.0, Some(&item.1));
                    }
                });
            }
            drop(tx);
        });
    }

    /// Whether `batch` is one file written bypassing the page cache: a large one, not
    /// read from a stream (its stream's reader writes it) nor staged (only renamed).
    fn writes_direct(&self, batch: &[(u64, Vec<usize>)]) -> bool {
        let [(_, files)] = batch else { return false };
        let [i] = files.as_slice() else { return false };
        let node = self.tree.node(self.entries[*i].1);
        node.as_file()
            .is_some_and(|f| f.size >= DIRECT_FILE_MIN && !self.x.reads_stream(node) && self.x.staged_file(f).is_none())
    }

    /// Entry `i`, a file: a small one of a stream is read and queued (written here when
    /// the queue is full), any other written here.
    fn file(&self, w: &mut Worker, i: usize, queue: Option<&SyncSender<(usize, Vec<u8>)>>) {
        let f = self.tree.node(self.entries[i].1).as_file();
        if let (Some(queue), Some(f)) = (queue, f)
            && let Content::Stream { stream, offset } = &f.content
            && f.size <= QUEUED_FILE_MAX
            && self.x.staged_file(f).is_none()
            && let Ok(n) = usize::try_from(f.size)
        {
            let mut bytes = vec![0u8; n];
            if let Err(e) = w.cursor.read_exact_at(stream, &mut bytes, *offset) {
                let path = &self.entries[i].0;
                self.failed(i, Error::new(e.kind(), format!("{}: {e}", display_name(path))));
                return;
            }
            match queue.try_send((i, bytes)) {
                Ok(()) => {}
                Err(TrySendError::Full((i, bytes)) | TrySendError::Disconnected((i, bytes))) => {
                    self.write_one(w, i, Some(&bytes))
                }
            }
            return;
        }
        self.write_one(w, i, None);
    }

    /// Writes file `i` (from `bytes`, or from its content) and makes its hard links.
    fn write_one(&self, w: &mut Worker, i: usize, bytes: Option<&[u8]>) {
        if self.x.cancelled() {
            return;
        }
        let (path, id) = &self.entries[i];
        let node = self.tree.node(*id);
        let names = self.links.get(&i).map(Vec::as_slice).unwrap_or(&[]);
        let owner = self.made_dirs.get(&self.parents[i]).map(|m| (m.uid, m.gid));
        if let Some((st, sf)) = node.as_file().and_then(|f| self.x.staged_file(f)) {
            let placed = self.x.place_staged(st, sf, node, path, &mut w.parents, self.progress, !names.is_empty());
            return self.linked(i, names, placed);
        }
        let data = match bytes {
            Some(b) => Data::Bytes(b),
            None => Data::Source(&mut w.cursor, &mut w.buf),
        };
        let written = self.x.write_file(node, path, &mut w.parents, owner, data, self.progress, !names.is_empty());
        self.linked(i, names, written)
    }

    /// Makes the hard links `names` of file `i` from its descriptor, once it is written.
    fn linked(&self, i: usize, names: &[usize], written: Result<Option<OwnedFd>>) {
        match written {
            Ok(fd) => {
                // `fd` is kept exactly when there are names to link.
                for (&l, fd) in names.iter().zip(fd.iter().cycle()) {
                    if let Err(e) = self.x.hard_link(fd, &self.entries[l].0) {
                        self.x.fail(&self.entries[l].0, e);
                    }
                }
            }
            Err(e) => self.failed(i, e),
        }
    }

    /// File `i` was not extracted, nor its hard links.
    fn failed(&self, i: usize, e: Error) {
        self.x.fail(&self.entries[i].0, e);
        for &l in self.links.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            self.x.fail(&self.entries[l].0, Error::invalid("the file it links to was not extracted"));
        }
    }
}

/// A queued file: waiting for one when `block` (`None` once every reader is done),
/// else one if any is ready and no other thread holds the queue.
fn take<T>(rx: &Mutex<Receiver<T>>, block: bool) -> Option<T> {
    if block {
        return rx.lock().unwrap_or_else(|p| p.into_inner()).recv().ok();
    }
    let g = match rx.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    g.try_recv().ok()
}
