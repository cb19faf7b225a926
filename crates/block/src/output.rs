//! The one output path of every command that writes an image or an archive.
//!
//! [`Output::open`] looks at what the target path is, once, and that decides how it is
//! written ([`Target`]): a new or existing regular file is written as an unnamed file and
//! put in place only when everything succeeded; a character device or pipe
//! (`/dev/null`, `/dev/stdout`, a fifo) is written in place, front to back, never
//! replaced; a block device is written in place after [`crate::device`] checked it is
//! free. The same call refuses a target that is one of the command's inputs and locks an
//! existing target as qemu locks an image it writes, so an image a VM, `qemu-io` or
//! another diskcast holds is refused and never replaced.
//!
//! Drivers never create their files directly: they ask [`OutputFiles::create`]. Each file
//! is opened with `O_TMPFILE` in its target's directory, so it has no name until
//! [`OutputFiles::commit`] links it in: a crash or `kill -9` leaves nothing behind. Commit
//! links a file straight to its target name when there is none (`linkat` refuses to
//! replace, so this is atomic); to replace an existing target it links the file to a
//! fresh name beside it and renames that over the target, the only atomic replace POSIX
//! has (the fresh name exists for the microseconds between the two calls). A filesystem
//! without `O_TMPFILE` gets today's named temporary (`.NAME.diskcast-PID-N.tmp`) instead,
//! removed when the [`OutputFiles`] is dropped (an error, Ctrl-C).

use crate::copy::{CopyOptions, copy};
use crate::io::ImageFile;
use crate::lock::{ImageLock, LockMode};
use crate::progress::Progress;
use crate::registry::{CreateOptions, Driver};
use crate::{BlockRead, BlockWrite, Error, Result, ResultExt};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Pipe buffer: large writes keep the reader on the other end busy.
const STREAM_BUFFER: usize = 4 << 20;

/// Files being written, waiting to be put in place by [`commit`](Self::commit), and the
/// locks on the existing targets they will replace.
#[derive(Debug, Default)]
pub struct OutputFiles {
    pending: Mutex<Vec<Pending>>,
    claims: Mutex<Vec<(PathBuf, ImageLock)>>,
    /// Behave as on a filesystem without `O_TMPFILE` (tests of the fallback: no
    /// filesystem the test machines mount lacks it).
    named_only: bool,
}

#[derive(Debug)]
struct Pending {
    file: File,
    /// Where it goes; `None` until [`OutputFiles::name`] says (a blob named by its digest).
    target: Option<PathBuf>,
    /// The name it has meanwhile: `None` for an unnamed (`O_TMPFILE`) file.
    temp: Option<PathBuf>,
    /// An existing target stays (content-addressed blobs: same name, same bytes).
    keep_existing: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory a path's file lives in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

impl OutputFiles {
    /// An empty set.
    pub fn new() -> Self {
        OutputFiles::default()
    }

    /// Locks an existing `target` as qemu locks an image it writes, until commit or drop:
    /// refused, naming the process, while a VM or another tool has it open. Nothing to do
    /// when there is no such file (or it is a pipe or character device, which qemu does
    /// not lock either).
    pub fn claim(&self, target: &Path) -> Result<()> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if claims.iter().any(|(p, _)| p == target) {
            return Ok(());
        }
        match std::fs::metadata(target) {
            Ok(m) if m.is_file() || m.file_type().is_block_device() => {
                claims.push((target.to_path_buf(), ImageLock::acquire(target, LockMode::Write)?));
            }
            _ => {}
        }
        Ok(())
    }

    /// Creates the file that [`commit`](Self::commit) will put at `target` (claiming an
    /// existing target first, see [`claim`](Self::claim)).
    pub fn create(&self, target: &Path) -> Result<ImageFile> {
        target.file_name().ok_or_else(|| Error::argument("output path has no file name").with_file(target))?;
        // Putting a new file in place of a device or pipe would replace the node itself
        // (`/dev/null` made a regular file): those are written in place by [`Output`].
        if let Ok(m) = std::fs::symlink_metadata(target)
            && !m.is_file()
            && !m.file_type().is_symlink()
        {
            return Err(Error::argument("the target is not a regular file; it is written in place or not at all")
                .with_file(target));
        }
        self.claim(target)?;
        self.make(parent_dir(target), target, Some(target))
    }

    /// Creates a file in `dir` whose name is given later by [`name`](Self::name) (a blob
    /// named by its digest). Where `dir` refuses unnamed files, the named temporary goes
    /// into `fallback_dir` (same filesystem) instead: nothing temporary in `dir` ever.
    /// `label` is what errors call it.
    pub fn create_unnamed(&self, dir: &Path, fallback_dir: &Path, label: &Path) -> Result<ImageFile> {
        match self.open_unnamed(dir, label)? {
            Some(file) => self.track(file, label, None, None),
            None => self.make(fallback_dir, label, None),
        }
    }

    /// Gives `file` (from [`create_unnamed`](Self::create_unnamed)) its target; with
    /// `keep_existing`, an existing target is left as it is (it holds the same bytes).
    pub fn name(&self, file: &ImageFile, target: &Path, keep_existing: bool) -> Result<()> {
        let ino = file.file().metadata().map_err(|e| Error::io("cannot stat", e).with_file(target))?.ino();
        let mut pending = self.lock();
        let p = pending
            .iter_mut()
            .find(|p| p.file.metadata().is_ok_and(|m| m.ino() == ino))
            .ok_or_else(|| Error::argument("not a file of this output").with_file(target))?;
        p.target = Some(target.to_path_buf());
        p.keep_existing = keep_existing;
        Ok(())
    }

    /// An unnamed file in `dir`, else a named temporary there.
    fn make(&self, dir: &Path, label: &Path, target: Option<&Path>) -> Result<ImageFile> {
        if let Some(file) = self.open_unnamed(dir, label)? {
            return self.track(file, label, target, None);
        }
        let base = label.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{base}.diskcast-{}-{n}.tmp", std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&temp).map_err(|e| {
            Error::io(format!("cannot create the temporary file {}", temp.display()), e).with_file(label)
        })?;
        self.track(file, label, target, Some(temp))
    }

    fn open_unnamed(&self, dir: &Path, label: &Path) -> Result<Option<File>> {
        if self.named_only { Ok(None) } else { open_unnamed(dir, label) }
    }

    fn track(&self, file: File, label: &Path, target: Option<&Path>, temp: Option<PathBuf>) -> Result<ImageFile> {
        // Locked as qemu locks an image being written: `qemu-img info` on it refuses.
        crate::lock::apply(&file, label, LockMode::Write)?;
        let clone = file.try_clone().map_err(|e| Error::io("cannot duplicate file handle", e).with_file(label))?;
        // The O_DIRECT handle is opened through the name, or /proc for an unnamed file.
        let open_path = temp.clone().unwrap_or_else(|| PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())));
        self.lock().push(Pending { file: clone, target: target.map(Path::to_path_buf), temp, keep_existing: false });
        Ok(ImageFile::from_file(file, label).with_direct_writes(&open_path))
    }

    /// Temporary names not yet committed (only on filesystems without `O_TMPFILE`).
    pub fn temp_paths(&self) -> Vec<PathBuf> {
        self.lock().iter().filter_map(|p| p.temp.clone()).collect()
    }

    /// Syncs every file, puts it at its target (see the module docs), and syncs the
    /// target directories.
    pub fn commit(self) -> Result<()> {
        self.commit_with(true)
    }

    /// [`commit`](Self::commit), syncing nothing when `sync` is false (`-t unsafe`).
    pub fn commit_with(self, sync: bool) -> Result<()> {
        let pending = std::mem::take(&mut *self.lock());
        for p in pending.iter().filter(|_| sync) {
            let target = p.target.as_deref().unwrap_or(Path::new("output"));
            p.file.sync_all().map_err(|e| Error::io("fsync failed", e).with_file(target))?;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in &pending {
            let Some(target) = &p.target else {
                return Err(Error::argument("an output file was never given its name"));
            };
            match &p.temp {
                None => link_into_place(&p.file, target, p.keep_existing)?,
                Some(temp) if p.keep_existing && target.exists() => {
                    let _ = std::fs::remove_file(temp);
                }
                Some(temp) => std::fs::rename(temp, target).map_err(|e| {
                    Error::io(format!("cannot rename {} into place", temp.display()), e).with_file(target)
                })?,
            }
            let dir = parent_dir(target).to_path_buf();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs.into_iter().filter(|_| sync) {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("cannot sync directory", e).with_file(&dir))?;
        }
        Ok(())
    }

    /// Removes every named temporary now (also done on drop; unnamed files vanish with
    /// their last descriptor).
    pub fn discard(&self) {
        for p in std::mem::take(&mut *self.lock()) {
            if let Some(temp) = p.temp {
                let _ = std::fs::remove_file(temp);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Drop for OutputFiles {
    fn drop(&mut self) {
        self.discard();
    }
}

/// An `O_TMPFILE` file in `dir`, or `None` where the kernel or filesystem has none.
fn open_unnamed(dir: &Path, label: &Path) -> Result<Option<File>> {
    let flags = i32::from_ne_bytes(rustix::fs::OFlags::TMPFILE.bits().to_ne_bytes());
    match OpenOptions::new().read(true).write(true).mode(0o666).custom_flags(flags).open(dir) {
        Ok(file) => Ok(Some(file)),
        // EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP: a filesystem without it.
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::ISDIR.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io(format!("cannot create a file in {}", dir.display()), e).with_file(label)),
    }
}

/// Gives the unnamed `file` the name `target`: `linkat` when the name is free (atomic,
/// never replaces), else a link under a fresh name in the same directory renamed over
/// the target (unless `keep_existing`).
fn link_into_place(file: &File, target: &Path, keep_existing: bool) -> Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    let handle = format!("/proc/self/fd/{}", file.as_raw_fd());
    // Through /proc, which any user may do; without /proc, AT_EMPTY_PATH (root's way).
    let link = |to: &Path| match linkat(CWD, handle.as_str(), CWD, to, AtFlags::SYMLINK_FOLLOW) {
        Err(rustix::io::Errno::NOENT) => linkat(file, "", CWD, to, AtFlags::EMPTY_PATH),
        r => r,
    };
    let failed = |e: rustix::io::Errno| Error::io("cannot put the new file in place", e.into()).with_file(target);
    match link(target) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::EXIST) if keep_existing => return Ok(()),
        Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(failed(e)),
    }
    let dir = parent_dir(target);
    let base = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for _ in 0..16 {
        let fresh = dir.join(format!(".{base}.diskcast-{}.tmp", uuid::Uuid::new_v4().simple()));
        match link(&fresh) {
            Ok(()) => {
                return std::fs::rename(&fresh, target).map_err(|e| {
                    let _ = std::fs::remove_file(&fresh);
                    Error::io("cannot rename the new file into place", e).with_file(target)
                });
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(Error::io("no free temporary name", std::io::Error::from(std::io::ErrorKind::AlreadyExists)).with_file(target))
}

/// A scratch file in `dir` that never gets a name (`O_TMPFILE`, or a name removed at
/// once where there is none) and vanishes with its last handle, even on `kill -9`: a
/// spooled input, a layer held until its archive is written. `label` is what errors call
/// it.
pub fn scratch(dir: &Path, label: &Path) -> Result<File> {
    tempfile::tempfile_in(dir)
        .map_err(|e| Error::io(format!("cannot create a temporary file in {}", dir.display()), e).with_file(label))
}

/// A writer that fails once `cancel` is set (Ctrl-C), so an archive or a container
/// image layer written front to back stops at its next write. [`stopped`](Self::stopped)
/// turns whatever error the writer made of that refusal into
/// [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
pub struct Interruptible<W> {
    inner: W,
    cancel: Option<Arc<AtomicBool>>,
}

impl<W: std::io::Write> Interruptible<W> {
    /// `inner`, stopped by `cancel` (`None`: never).
    pub fn new(inner: W, cancel: Option<Arc<AtomicBool>>) -> Self {
        Interruptible { inner, cancel }
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// `e`, or the cancellation when the flag stopped the write.
    pub fn stopped(&self, e: Error) -> Error {
        if self.cancelled() { Error::cancelled() } else { e }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.cancelled() {
            return Err(std::io::Error::other(Error::cancelled()));
        }
        Ok(())
    }
}

impl<W> std::fmt::Debug for Interruptible<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interruptible").field("cancel", &self.cancel).finish_non_exhaustive()
    }
}

impl<W: std::io::Write> std::io::Write for Interruptible<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.check()?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.check()?;
        self.inner.flush()
    }
}

/// What a target path names, which decides how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `-`: standard output, written front to back.
    Stdout,
    /// A regular file, or a name not taken yet: written unnamed, put in place at commit.
    File(PathBuf),
    /// A character device or a pipe (`/dev/null`, `/dev/stdout`, a fifo): written in
    /// place, front to back, never replaced.
    Stream(PathBuf),
    /// A block device: written in place, after the checks of [`crate::device`].
    Device(PathBuf),
}

impl Target {
    /// What `path` is. A directory, or a file name in a directory that does not exist,
    /// is an error.
    pub fn of(path: &Path) -> Result<Target> {
        if path.as_os_str() == "-" {
            return Ok(Target::Stdout);
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                Err(Error::argument("the target is a directory; name the file to write").with_file(path))
            }
            Ok(m) if m.file_type().is_block_device() => Ok(Target::Device(path.to_path_buf())),
            Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() || m.file_type().is_socket() => {
                Ok(Target::Stream(path.to_path_buf()))
            }
            Ok(_) => Ok(Target::File(path.to_path_buf())),
            Err(_) => {
                let dir = parent_dir(path);
                if !dir.is_dir() {
                    return Err(Error::argument(format!("the target's directory {} does not exist", dir.display()))
                        .with_file(path));
                }
                Ok(Target::File(path.to_path_buf()))
            }
        }
    }

    /// The path (`-` for standard output).
    pub fn path(&self) -> &Path {
        match self {
            Target::Stdout => Path::new("-"),
            Target::File(p) | Target::Stream(p) | Target::Device(p) => p,
        }
    }

    /// True when the target is written front to back (standard output, a device or pipe).
    pub fn is_stream(&self) -> bool {
        matches!(self, Target::Stdout | Target::Stream(_))
    }
}

/// Refuses `target` when it is one of `inputs`: the same file (device and inode, through
/// any name, hard link or symlink) or the same block device. Writing it would destroy
/// the input while it is read.
pub fn refuse_inputs<P: AsRef<Path>>(target: &Path, inputs: &[P]) -> Result<()> {
    let Ok(t) = std::fs::metadata(target) else { return Ok(()) };
    if t.file_type().is_char_device() || t.file_type().is_fifo() {
        return Ok(()); // /dev/null in and out is no danger
    }
    for input in inputs.iter().map(AsRef::as_ref) {
        if input.as_os_str() == "-" {
            continue;
        }
        let Ok(i) = std::fs::metadata(input) else { continue }; // opening it will say why
        let same_file = (i.dev(), i.ino()) == (t.dev(), t.ino());
        let same_device = t.file_type().is_block_device() && i.file_type().is_block_device() && i.rdev() == t.rdev();
        if same_file || same_device {
            return Err(Error::argument(format!(
                "the target {} is the input {} itself; write to another file",
                target.display(),
                input.display()
            ))
            .with_file(target));
        }
    }
    Ok(())
}

/// A command's output: its target, checked and (when it exists) locked, and the files
/// written for it. See the module docs.
#[derive(Debug)]
pub struct Output {
    target: Target,
    files: OutputFiles,
    /// Write into the existing file instead of replacing it (`convert -n`).
    in_place: bool,
    /// Make the existing file or device hold the image (`write`): a file is cut or grown
    /// to the image's length and never opened through a symlink.
    overwrite: bool,
    inputs: Vec<PathBuf>,
    /// Sync the files before they are put in place (all but `-t unsafe`).
    sync: bool,
}

/// How [`Output::write_image`] writes: the format and its options, the copy engine's
/// settings (threads, Ctrl-C flag) and where progress goes.
#[derive(Clone, Copy)]
pub struct ImageJob<'a> {
    /// The output format.
    pub driver: &'a dyn Driver,
    /// Its options.
    pub create: &'a CreateOptions,
    /// Threads, sparseness, the cancel flag.
    pub copy: &'a CopyOptions,
    /// Progress of the copy.
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for ImageJob<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageJob").field("driver", &self.driver.name()).finish_non_exhaustive()
    }
}

impl Output {
    /// Checks `path` as the target of a command reading `inputs`: what it is, that it is
    /// none of them, and (an existing file or device) that nobody uses it; the lock is
    /// held until the output is committed or dropped. Nothing is written yet.
    pub fn open<P: AsRef<Path>>(path: &Path, inputs: &[P]) -> Result<Output> {
        let target = Target::of(path)?;
        refuse_inputs(path, inputs)?;
        let files = OutputFiles::new();
        if let Target::File(p) | Target::Device(p) = &target {
            files.claim(p)?;
        }
        let inputs = inputs.iter().map(|p| p.as_ref().to_path_buf()).collect();
        Ok(Output { target, files, in_place: false, overwrite: false, inputs, sync: true })
    }

    /// The same for writing into an existing regular file or block device in place
    /// (`convert -n`): nothing is created, zeros are written too.
    pub fn open_in_place<P: AsRef<Path>>(path: &Path, inputs: &[P]) -> Result<Output> {
        let out = Output::open(path, inputs)?;
        match &out.target {
            Target::File(p) if p.is_file() => {}
            Target::Device(_) => {}
            Target::File(p) => {
                return Err(Error::argument("writing in place needs an existing file or block device").with_file(p));
            }
            Target::Stdout | Target::Stream(_) => {
                return Err(Error::argument(
                    "writing in place needs a regular file or a block device, not standard output, a pipe or a character device",
                )
                .with_file(path));
            }
        }
        Ok(Output { in_place: true, ..out })
    }

    /// The same for `write`: the existing file (not a symlink) or block device is to
    /// hold the image and nothing else: a file gets the image's length; large aligned
    /// writes bypass the page cache.
    pub fn open_overwrite<P: AsRef<Path>>(path: &Path, inputs: &[P]) -> Result<Output> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(
                Error::argument("the target is a symlink; name the file or device it points to").with_file(path)
            );
        }
        Ok(Output { overwrite: true, ..Output::open_in_place(path, inputs)? })
    }

    /// Puts the output in place without syncing it first (`-t unsafe`, qemu-img's
    /// default): faster, but a crash soon after may leave a damaged file at the target.
    pub fn unsynced(self) -> Self {
        Output { sync: false, ..self }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether `driver` with `create` can write this target, checked before any input is
    /// read: a stream target needs a format written front to back, a block device (or
    /// `-n`) one that writes the guest bytes themselves (raw).
    pub fn check_format(&self, driver: &dyn Driver, create: &CreateOptions) -> Result<()> {
        if self.target.is_stream() {
            return driver.check_stream(create).map_err(|e| {
                Error::argument(format!("{} is written front to back: {e}", self.target.path().display()))
            });
        }
        let editable = self.in_place && matches!(self.target, Target::File(_)) && driver.edits_in_place();
        if (self.in_place || matches!(self.target, Target::Device(_))) && !driver.writes_in_place() && !editable {
            return Err(Error::argument(format!(
                "{} is written in place, which only a raw image (or, for -n into a file, an existing image of a \
                 format diskcast edits) can be, not {}; write a file instead",
                self.target.path().display(),
                driver.name()
            )));
        }
        Ok(())
    }

    /// Writes `image` as `job.driver` into the target through the copy engine and puts
    /// it in place.
    pub fn write_image(self, image: &dyn BlockRead, job: ImageJob<'_>) -> Result<()> {
        self.check_format(job.driver, job.create)?;
        let size = image.size();
        let path = self.target.path().to_path_buf();
        let dst: Box<dyn BlockWrite> = match &self.target {
            Target::Stdout | Target::Stream(_) => job.driver.create_stream(self.stream()?, size, job.create)?,
            Target::Device(p) => {
                let file = crate::device::open_target(p, size, &self.inputs)?;
                job.driver.write_into(file, size, job.create)?
            }
            Target::File(p) if self.overwrite => {
                let file = ImageFile::open_rw_nofollow(p)?.with_direct_writes(p);
                file.set_len(size)?;
                job.driver.write_into(file, size, job.create)?
            }
            Target::File(p) if self.in_place => {
                let file = ImageFile::open_rw(p)?;
                // An image being edited (qcow2) has its own virtual size, which its driver checks.
                if job.driver.writes_in_place() && file.len()? < size {
                    return Err(Error::argument(format!(
                        "the file holds {} bytes, less than the {size}-byte image",
                        file.len()?
                    ))
                    .with_file(p));
                }
                job.driver.write_into(file, size, job.create)?
            }
            Target::File(p) => job.driver.create(p, size, job.create, &self.files).file(p)?,
        };
        copy(image, dst.as_ref(), job.copy, job.progress).file(&path)?;
        dst.finish().file(&path)?;
        self.commit()
    }

    /// Writes a new empty image of `size` guest bytes (`create`): only into a file.
    pub fn write_empty(self, driver: &dyn Driver, size: u64, create: &CreateOptions) -> Result<()> {
        let Target::File(p) = &self.target else {
            return Err(Error::argument(
                "a new empty image is written to a file, not to standard output, a pipe or a device",
            )
            .with_file(self.target.path()));
        };
        driver.create(p, size, create, &self.files).file(p)?.finish().file(p)?;
        self.commit()
    }

    /// A front-to-back writer into the target (a tar): a new unnamed file for a file
    /// target, the device or pipe itself, or standard output. [`commit`](Self::commit)
    /// after flushing and dropping it.
    pub fn stream(&self) -> Result<Box<dyn std::io::Write + Send>> {
        let file = match &self.target {
            Target::Stdout => {
                return Ok(Box::new(std::io::BufWriter::with_capacity(STREAM_BUFFER, std::io::stdout())));
            }
            Target::Stream(p) => OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| Error::io("cannot open for writing", e).with_file(p))?,
            Target::File(p) if !self.in_place => {
                let f = self.files.create(p)?;
                f.file().try_clone().map_err(|e| Error::io("cannot duplicate file handle", e).with_file(p))?
            }
            Target::File(p) | Target::Device(p) => {
                return Err(Error::argument(
                    "this output is written front to back: write it to a file, a pipe or standard output, not in \
                     place or onto a block device",
                )
                .with_file(p));
            }
        };
        Ok(Box::new(std::io::BufWriter::with_capacity(STREAM_BUFFER, file)))
    }

    /// Writes the target front to back with `body` (an archive: a tar, an OCI or Docker
    /// archive), stopped by `cancel` (Ctrl-C) at its next write, and puts it in place.
    /// Errors name the target; a stopped write is [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled).
    pub fn write_stream<T>(
        self,
        cancel: Option<Arc<AtomicBool>>,
        body: impl FnOnce(&mut dyn std::io::Write) -> Result<T>,
    ) -> Result<T> {
        use std::io::Write;
        let name = self.target.path().to_path_buf();
        let mut w = Interruptible::new(self.stream()?, cancel);
        let r = body(&mut w).map_err(|e| w.stopped(e).with_file(&name))?;
        w.flush().map_err(|e| w.stopped(Error::io("cannot write", e)).with_file(&name))?;
        drop(w);
        self.commit()?;
        Ok(r)
    }

    /// Puts what was written in place (nothing to do for streams and devices, which were
    /// written where they are).
    pub fn commit(self) -> Result<()> {
        self.files.commit_with(self.sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Where the filesystem has no unnamed files: a named temporary, renamed into place,
    /// removed on drop, and never inside the directory of a blob.
    #[test]
    fn named_temporaries_where_unnamed_files_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        std::fs::write(&target, b"old").unwrap();
        let named = || OutputFiles { pending: Mutex::default(), claims: Mutex::default(), named_only: true };
        {
            let out = named();
            out.create(&target).unwrap().write_all_at(b"new", 0).unwrap();
            assert_eq!(out.temp_paths().len(), 1);
            assert_eq!(names(dir.path()).len(), 2);
        }
        assert_eq!(names(dir.path()), ["out.img"], "the temporary outlived an error");
        let out = named();
        out.create(&target).unwrap().write_all_at(b"new", 0).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out.img"]);

        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        for bytes in [&b"blob"[..], b"other"] {
            let out = named();
            let f = out.create_unnamed(&blobs, dir.path(), Path::new("blob")).unwrap();
            f.write_all_at(bytes, 0).unwrap();
            assert!(names(&blobs).iter().all(|n| n == "d1"), "a temporary in blobs/");
            out.name(&f, &blobs.join("d1"), true).unwrap();
            out.commit().unwrap();
        }
        assert_eq!(std::fs::read(blobs.join("d1")).unwrap(), b"blob");
        assert_eq!(names(dir.path()), ["blobs", "out.img"]);
    }

    #[test]
    fn nothing_appears_until_commit_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        std::fs::write(&target, b"old").unwrap();
        {
            let out = OutputFiles::new();
            let f = out.create(&target).unwrap();
            f.write_all_at(b"new", 0).unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), b"old");
            assert_eq!(names(dir.path()), ["out.img"], "the file being written must have no name");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["out.img"], "temporary file left behind");

        let out = OutputFiles::new();
        let f = out.create(&target).unwrap();
        f.write_all_at(b"new", 0).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["out.img"]);

        // A new name is linked straight in.
        let fresh = dir.path().join("fresh.img");
        let out = OutputFiles::new();
        out.create(&fresh).unwrap().write_all_at(b"fresh", 0).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"fresh");
        assert_eq!(names(dir.path()), ["fresh.img", "out.img"]);
    }

    /// A blob is written before its name is known, never appears under a temporary name
    /// in its directory, and an existing blob of that name is kept.
    #[test]
    fn unnamed_files_get_their_name_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let out = OutputFiles::new();
        let f = out.create_unnamed(&blobs, dir.path(), Path::new("layer")).unwrap();
        f.write_all_at(b"layer bytes", 0).unwrap();
        assert!(names(&blobs).is_empty());
        out.name(&f, &blobs.join("abc"), true).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(blobs.join("abc")).unwrap(), b"layer bytes");

        let out = OutputFiles::new();
        let f = out.create_unnamed(&blobs, dir.path(), Path::new("layer")).unwrap();
        f.write_all_at(b"other", 0).unwrap();
        out.name(&f, &blobs.join("abc"), true).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(blobs.join("abc")).unwrap(), b"layer bytes", "an existing blob is kept");
        assert_eq!(names(&blobs), ["abc"]);
    }

    /// An existing target another process holds for writing is refused, and is not
    /// replaced.
    #[test]
    fn a_target_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("busy.img");
        std::fs::write(&target, b"in use").unwrap();
        let _holder = ImageLock::acquire(&target, LockMode::Write).unwrap();
        let e = Output::open::<&Path>(&target, &[]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        assert!(e.to_string().contains("in use"), "{e}");
        let e = OutputFiles::new().create(&target).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused);
        assert_eq!(std::fs::read(&target).unwrap(), b"in use");
    }

    #[test]
    fn targets_are_classified_and_inputs_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.img");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(Target::of(Path::new("-")).unwrap(), Target::Stdout);
        assert_eq!(Target::of(Path::new("/dev/null")).unwrap(), Target::Stream(PathBuf::from("/dev/null")));
        assert_eq!(Target::of(&file).unwrap(), Target::File(file.clone()));
        let e = Target::of(dir.path()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        let e = Target::of(&dir.path().join("no/such/dir.img")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");

        let link = dir.path().join("link.img");
        std::fs::hard_link(&file, &link).unwrap();
        let e = refuse_inputs(&link, &[Path::new("other"), &file]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("itself"), "{e}");
        refuse_inputs(&dir.path().join("new.img"), &[&file]).unwrap();
        refuse_inputs(Path::new("/dev/null"), &["/dev/null"]).unwrap();
    }

    /// Large aligned writes take the page-cache-bypassing handle, small ones the buffered
    /// one; reads through either see every write in order, whichever handle wrote it.
    #[test]
    fn direct_and_buffered_writes_stay_coherent() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.img");
        let out = OutputFiles::new();
        let f = out.create(&target).unwrap();
        let big: Vec<u8> = (0..(1usize << 20) + 4096).map(|i| (i * 7 % 251) as u8).collect();
        let mut expect = vec![0u8; 3 << 20];
        // Direct (aligned, large), then buffered bytes inside it, then direct over part
        // of those again, then an unaligned large write (buffered).
        f.write_all_at(&big[..1 << 20], 0).unwrap();
        expect[..1 << 20].copy_from_slice(&big[..1 << 20]);
        f.write_all_at(b"buffered", 100).unwrap();
        expect[100..108].copy_from_slice(b"buffered");
        f.write_all_at(&big[4096..4096 + (512 << 10)], 1 << 20).unwrap();
        expect[1 << 20..(1 << 20) + (512 << 10)].copy_from_slice(&big[4096..4096 + (512 << 10)]);
        let mut back = vec![0u8; 108];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, expect[..108]);
        f.write_all_at(&big[..(256 << 10) + 1], (2 << 20) + 1).unwrap();
        expect[(2 << 20) + 1..(2 << 20) + 1 + (256 << 10) + 1].copy_from_slice(&big[..(256 << 10) + 1]);
        f.set_len(3 << 20).unwrap();
        out.commit().unwrap();
        assert!(std::fs::read(&target).unwrap() == expect, "content differs");
    }
}
