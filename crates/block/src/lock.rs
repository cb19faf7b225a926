//! Image locks that qemu understands, so diskcast and a running VM (or `qemu-img`,
//! `qemu-io`) see each other.
//!
//! qemu's file-posix driver takes open-file-description (OFD) byte-range read locks: one
//! byte at `100 + bit` for each permission it holds and one at `200 + bit` for each
//! permission it does not let others hold. Before it uses a file it asks (`F_OFD_GETLK`)
//! whether anybody else holds `200 + bit` for a permission it wants, or `100 + bit` for
//! a permission it does not share. The bits are consistent read (0), write (1), write
//! unchanged (2) and resize (3). We take the same bytes, with the same meanings, as
//! `qemu-img convert` does for its source, and as a writer does for a target; so a VM
//! writing to an image makes us refuse it, and a diskcast writing a target makes
//! `qemu-img info` refuse it. OFD locks belong to the open file, not the process: they
//! stay while any descriptor of it is open, and closing another descriptor of the same
//! file does not drop them.

use crate::{Error, Result};
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// qemu's lock byte bases: holding a permission, and refusing to share one.
const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

/// qemu's permission bits, by bit number, with the names its messages use.
const CONSISTENT_READ: u32 = 0;
const WRITE: u32 = 1;
const RESIZE: u32 = 3;
const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];

/// How an image is used, which decides the locks taken and the conflicts checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Reading, as `qemu-img convert` reads its source: nobody may write or resize the
    /// image meanwhile (a running VM that writes it is refused).
    Read,
    /// Reading an image in use (`-U`/`--force-share`, as qemu-img's `-U`): lets anyone do
    /// anything, and is refused only by someone who does not let others read.
    ReadShared,
    /// Writing or replacing the image: nobody else may write or resize it, and no reader
    /// that forbids writing (`qemu-img info` in progress, a VM's backing file) may hold it.
    Write,
}

impl LockMode {
    /// The permission bits held and the bits not shared.
    fn bits(self) -> (&'static [u32], &'static [u32]) {
        match self {
            LockMode::Read => (&[CONSISTENT_READ], &[WRITE, RESIZE]),
            LockMode::ReadShared => (&[CONSISTENT_READ], &[]),
            LockMode::Write => (&[CONSISTENT_READ, WRITE, RESIZE], &[WRITE, RESIZE]),
        }
    }
}

/// Locks held on one image for as long as this value lives.
#[derive(Debug)]
pub struct ImageLock {
    _file: File,
}

impl ImageLock {
    /// Opens `path` and locks it for `mode`, or refuses with an error naming the process
    /// that holds it in a conflicting way (when `/proc` says who).
    pub fn acquire(path: &Path, mode: LockMode) -> Result<ImageLock> {
        let file = File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
        Self::on(file, path, mode)
    }

    /// Locks the open `file` (its open file description: a `try_clone` shares the locks).
    pub fn on(file: File, path: &Path, mode: LockMode) -> Result<ImageLock> {
        apply(&file, path, mode)?;
        Ok(ImageLock { _file: file })
    }
}

/// Locks the open file description of `file` for `mode`, for as long as it stays open
/// (through any of its descriptors). Refuses, naming the holder, when someone else's
/// locks conflict.
pub fn apply(file: &File, path: &Path, mode: LockMode) -> Result<()> {
    let (perms, unshared) = mode.bits();
    // Take ours first, then look for conflicts: of two processes racing, at least one
    // sees the other (qemu does the same).
    for &bit in perms {
        set(file, path, PERM_BASE + i64::from(bit))?;
    }
    for &bit in unshared {
        set(file, path, SHARED_BASE + i64::from(bit))?;
    }
    for &bit in perms {
        if held_by_other(file, path, SHARED_BASE + i64::from(bit))? {
            return Err(conflict(path, mode, bit, "does not share the"));
        }
    }
    for &bit in unshared {
        if held_by_other(file, path, PERM_BASE + i64::from(bit))? {
            return Err(conflict(path, mode, bit, "holds the"));
        }
    }
    Ok(())
}

/// The locks of every image a command opened, held until the command ends.
#[derive(Debug)]
pub struct Locks {
    mode: LockMode,
    held: Mutex<Vec<(PathBuf, ImageLock)>>,
}

impl Locks {
    /// An empty set that locks images for `mode`.
    pub fn new(mode: LockMode) -> Self {
        Locks { mode, held: Mutex::new(Vec::new()) }
    }

    /// The mode images are locked for.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Locks `path` (once per path) and keeps the lock. Only regular files and block
    /// devices are locked, as qemu locks them: opening a pipe to lock it would consume it
    /// (or block until a writer comes).
    pub fn lock(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::FileTypeExt;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.iter().any(|(p, _)| p == path) {
            return Ok(());
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() || m.file_type().is_block_device() => {}
            _ => return Ok(()), // not lockable, or missing: opening it will say why
        }
        let lock = ImageLock::acquire(path, self.mode)?;
        held.push((path.to_path_buf(), lock));
        Ok(())
    }
}

/// A one-byte read lock at `offset`, as qemu takes them.
fn lock_at(kind: libc::c_int, offset: i64) -> libc::flock {
    libc::flock {
        // F_RDLCK/F_WRLCK and SEEK_SET are small constants (0..=2) the C struct keeps in a short.
        l_type: libc::c_short::try_from(kind).unwrap_or_default(),
        l_whence: libc::c_short::try_from(libc::SEEK_SET).unwrap_or_default(),
        l_start: offset,
        l_len: 1,
        l_pid: 0,
    }
}

fn set(file: &File, path: &Path, offset: i64) -> Result<()> {
    let fl = lock_at(libc::F_RDLCK, offset);
    match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(()),
        // Someone holds a write lock there: qemu never does, but it is a conflict.
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
            Err(Error::refused(format!("the image is locked by {}", holder(path))).with_file(path))
        }
        // A filesystem without OFD locks: qemu carries on without locking, so do we.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOLCK | nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(e) => Err(Error::io("cannot lock", std::io::Error::from(e)).with_file(path)),
    }
}

/// True when another open file holds a lock on the byte at `offset`.
fn held_by_other(file: &File, path: &Path, offset: i64) -> Result<bool> {
    let mut fl = lock_at(libc::F_WRLCK, offset);
    match fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => Ok(i32::from(fl.l_type) != libc::F_UNLCK),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOLCK | nix::errno::Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(Error::io("cannot test lock", std::io::Error::from(e)).with_file(path)),
    }
}

fn conflict(path: &Path, mode: LockMode, bit: u32, what: &str) -> Error {
    let perm = PERM_NAMES.get(diskcast_layout::usize_from(bit)).copied().unwrap_or("?");
    let advice = match mode {
        LockMode::Read => "; stop it, or pass -U/--force-share to read the image anyway",
        LockMode::ReadShared | LockMode::Write => "; stop it first",
    };
    Error::refused(format!("the image is in use: {} {what} \"{perm}\" permission{advice}", holder(path)))
        .with_file(path)
}

/// Who has `path` open with locks, from `/proc` ("qemu-io (pid 1234)"), or "another
/// process" when that cannot be seen (another user's process, no `/proc`).
fn holder(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata(path) else { return "another process".into() };
    let own = std::process::id().to_string();
    let mut found = Vec::new();
    for pid in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = pid.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
            continue;
        }
        let proc = Path::new("/proc").join(&pid);
        for fd in std::fs::read_dir(proc.join("fd")).into_iter().flatten().flatten() {
            let same = std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == (me.dev(), me.ino()));
            let locked = same
                && std::fs::read_to_string(proc.join("fdinfo").join(fd.file_name()))
                    .is_ok_and(|info| info.lines().any(|l| l.starts_with("lock:")));
            if locked {
                let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
                found.push(format!("{} (pid {pid})", comm.trim()));
                break;
            }
        }
    }
    if found.is_empty() { "another process".into() } else { found.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn image() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        std::fs::write(&p, [0u8; 4096]).unwrap();
        (dir, p)
    }

    #[test]
    fn readers_share_writers_do_not() {
        let (_d, p) = image();
        let r1 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        let _r2 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        let e = ImageLock::acquire(&p, LockMode::Write).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert!(e.to_string().contains("in use"), "{e}");
        drop((r1, _r2));
        let w = ImageLock::acquire(&p, LockMode::Write).unwrap();
        let e = ImageLock::acquire(&p, LockMode::Read).unwrap_err();
        assert!(e.to_string().contains("-U/--force-share"), "{e}");
        let _shared = ImageLock::acquire(&p, LockMode::ReadShared).unwrap();
        drop(w);
    }

    #[test]
    fn locks_live_as_long_as_the_open_file() {
        let (_d, p) = image();
        let w = ImageLock::acquire(&p, LockMode::Write).unwrap();
        // Another descriptor of the same file closing does not drop an OFD lock.
        drop(File::open(&p).unwrap());
        let e = ImageLock::acquire(&p, LockMode::Read).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Refused, "{e}");
        assert!(e.to_string().contains("the image is in use"), "{e}");
        drop(w);
        ImageLock::acquire(&p, LockMode::Read).unwrap();
    }
}
