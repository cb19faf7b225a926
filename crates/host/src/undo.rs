//! Undoing an interrupted extraction: DIR was empty (or new) when extraction began, so
//! everything beneath it is what the extraction made, and Ctrl-C removes it all, as a
//! failed image write leaves no file behind.
//!
//! Removal works beneath DIR's descriptor like extraction itself: every directory is
//! opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and every entry removed
//! with `unlinkat` in it, so a symlink swapped in meanwhile is removed, never followed.

use diskcast_block::{Error, ErrorKind};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Removes everything beneath `root` (DIR, open), then DIR itself when extraction
/// `created` it, and returns the error to report: the cancellation, saying what was done
/// with DIR, or what could not be removed.
pub(crate) fn remove_extraction(root: &OwnedFd, dir: &Path, created: bool) -> Error {
    let left = remove_beneath(root);
    let removed_dir = created && left.is_none() && remove_dir_itself(root, dir);
    let what = match (&left, removed_dir) {
        (Some(e), _) => format!("interrupted; the partial extraction could not be removed ({e}): remove it yourself"),
        (None, true) => "interrupted; the partial extraction and the directory it created were removed".to_string(),
        (None, false) => "interrupted; the partial extraction was removed, the directory is empty again".to_string(),
    };
    Error::new(ErrorKind::Cancelled, what).with_file(dir)
}

/// Removes every entry beneath `root`, depth first; the first failure is returned (and
/// the rest still tried). Each directory is listed once and removed once it is empty,
/// so the work is linear in what extraction made.
fn remove_beneath(root: &OwnedFd) -> Option<String> {
    let mut first_error: Option<String> = None;
    let mut note = |e: String| {
        first_error.get_or_insert(e);
    };
    // (path beneath root, listed yet): a directory is removed on its second visit.
    let mut stack: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false)];
    while let Some((path, listed)) = stack.pop() {
        let shown = String::from_utf8_lossy(&path).into_owned();
        if listed {
            if !path.is_empty()
                && let Err(e) = rustix::fs::unlinkat(root, path.as_slice(), AtFlags::REMOVEDIR)
            {
                note(format!("{shown}: {e}"));
            }
            continue;
        }
        let p: &[u8] = if path.is_empty() { b"." } else { &path };
        let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat2(root, p, how, Mode::empty(), BENEATH) {
            Ok(fd) => fd,
            Err(e) => {
                note(format!("{shown}: {e}"));
                continue;
            }
        };
        stack.push((path.clone(), true));
        let entries = match rustix::fs::Dir::read_from(&fd) {
            Ok(d) => d,
            Err(e) => {
                note(format!("{shown}: {e}"));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    note(format!("{shown}: {e}"));
                    break;
                }
            };
            let name = entry.file_name().to_bytes();
            if matches!(name, b"." | b"..") {
                continue;
            }
            let mut child = path.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name);
            // d_type may be unknown: a directory is whatever refuses a plain unlink.
            match rustix::fs::unlinkat(&fd, name, AtFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => stack.push((child, false)),
                Err(e) => note(format!("{}: {e}", String::from_utf8_lossy(&child))),
            }
        }
    }
    first_error
}

/// Removes DIR, now empty, if its name still names the directory open as `root`.
fn remove_dir_itself(root: &OwnedFd, dir: &Path) -> bool {
    let ours = rustix::fs::fstat(root).map(|st| (st.st_dev, st.st_ino));
    let now = std::fs::symlink_metadata(dir).map(|m| (m.dev(), m.ino()));
    ours.is_ok_and(|o| now.is_ok_and(|n| n == o)) && std::fs::remove_dir(dir).is_ok()
}
