//! Output files that appear under their names only when the whole job succeeded.
//!
//! Drivers never create their output files directly: they ask [`OutputFiles::create`],
//! which makes a temporary file beside the target. [`OutputFiles::commit`] syncs each file,
//! renames it over its target and syncs the directory. If anything fails, or the process is
//! interrupted, dropping the [`OutputFiles`] removes the temporaries: no half-written image
//! is ever left under the target's name, and an existing target stays untouched.

use crate::io::ImageFile;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary outputs waiting to be renamed into place.
#[derive(Debug, Default)]
pub struct OutputFiles {
    pending: Mutex<Vec<Pending>>,
}

#[derive(Debug)]
struct Pending {
    temp: PathBuf,
    target: PathBuf,
    file: File,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl OutputFiles {
    /// An empty set.
    pub fn new() -> Self {
        OutputFiles::default()
    }

    /// Creates a temporary file that [`commit`](Self::commit) will rename to `target`.
    pub fn create(&self, target: &Path) -> Result<ImageFile> {
        let name =
            target.file_name().ok_or_else(|| Error::argument("output path has no file name").with_file(target))?;
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{}.diskcast-{}-{n}.tmp", name.to_string_lossy(), std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&temp).map_err(|e| {
            Error::io(format!("cannot create the temporary file {}", temp.display()), e).with_file(target)
        })?;
        // Locked as qemu locks an image being written: `qemu-img info` on it refuses.
        crate::lock::apply(&file, target, crate::lock::LockMode::Write)?;
        let clone = file.try_clone().map_err(|e| Error::io("cannot duplicate file handle", e).with_file(target))?;
        self.lock().push(Pending { temp: temp.clone(), target: target.to_path_buf(), file: clone });
        Ok(ImageFile::from_file(file, target).with_direct_writes(&temp))
    }

    /// Temporary paths not yet committed (for tests and for cleanup on a signal).
    pub fn temp_paths(&self) -> Vec<PathBuf> {
        self.lock().iter().map(|p| p.temp.clone()).collect()
    }

    /// Syncs every file, renames it over its target, and syncs the target directories.
    pub fn commit(self) -> Result<()> {
        let pending = std::mem::take(&mut *self.lock());
        for p in &pending {
            p.file.sync_all().map_err(|e| Error::io("fsync failed", e).with_file(&p.target))?;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in &pending {
            std::fs::rename(&p.temp, &p.target).map_err(|e| {
                Error::io(format!("cannot rename {} into place", p.temp.display()), e).with_file(&p.target)
            })?;
            let dir = p.target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        for dir in dirs {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("cannot sync directory", e).with_file(&dir))?;
        }
        Ok(())
    }

    /// Removes every temporary file now (also done on drop).
    pub fn discard(&self) {
        for p in std::mem::take(&mut *self.lock()) {
            let _ = std::fs::remove_file(&p.temp);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");

        let out = OutputFiles::new();
        let f = out.create(&target).unwrap();
        f.write_all_at(b"new", 0).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
