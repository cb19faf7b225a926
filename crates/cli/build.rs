//! Sets `DISKCAST_VERSION` for `--version`: `0.1.0 (abc1234 2026-12-07)` when built from a
//! git clone of diskcast (the commit checked out and its commit date, UTC), the package
//! version alone when there is no git metadata (a source tarball, `cargo install` from a
//! registry) or git is missing; and `DISKCAST_COMMIT_DATE` (the date alone, or empty),
//! which the man pages carry. Cargo reruns this when HEAD or the branch it names moves.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let (full, date) = match commit(&manifest) {
        Some((hash, date)) => (format!("{version} ({hash} {date})"), date),
        None => (version, String::new()),
    };
    println!("cargo:rustc-env=DISKCAST_VERSION={full}");
    println!("cargo:rustc-env=DISKCAST_COMMIT_DATE={date}");
}

/// The short hash and UTC date of the commit checked out, when `manifest` lies in a git
/// work tree whose top level is this workspace (a tarball unpacked inside some other
/// repository must not take that repository's commit).
fn commit(manifest: &Path) -> Option<(String, String)> {
    let workspace = manifest.parent()?.parent()?.canonicalize().ok()?;
    let top = git(manifest, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != workspace {
        return None;
    }
    // HEAD, the branch file it points at, and packed-refs (where a branch may live):
    // only files that exist, since a missing one makes Cargo rerun this on every build.
    let mut watched = vec![git(manifest, &["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(manifest, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(manifest, &["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(manifest, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        let path = manifest.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let hash = git(manifest, &["rev-parse", "--short=7", "HEAD"])?;
    let date = git(manifest, &["show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%d", "HEAD"])?;
    Some((hash, date))
}

/// `git ARGS` run in `dir`, its trimmed output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).env("TZ", "UTC").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
