//! The gate every backing (and, later, extent) file passes through before it is opened.
//!
//! An image is untrusted input, and so is every file name written inside it. Converting a
//! hostile qcow2 whose backing file is `/etc/shadow` must not copy that file into the
//! output. So a name found in an image is opened only when:
//! - it is a plain file name, not a `json:` or protocol name (`nbd:`, `http:`, ...);
//! - after resolving it against the image's directory and following every symlink, it lies
//!   inside that directory, or it is (or lies under) a path the user passed with
//!   `--allow-backing`;
//! - the chain is at most [`MAX_CHAIN_DEPTH`] deep and does not loop.

use crate::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// Deepest backing chain we follow. qemu has no fixed limit; 16 covers real snapshot chains
/// and stops a crafted file from nesting without end.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// Decides which referenced files may be opened.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Canonical paths the user allowed explicitly (files or directories).
    allowed: Vec<PathBuf>,
}

impl Gate {
    /// A gate that allows only files inside the referencing image's directory.
    pub fn new() -> Self {
        Gate::default()
    }

    /// Also allows `path` (a file, or a directory and everything below it).
    pub fn allow(&mut self, path: &Path) -> Result<()> {
        let canon =
            path.canonicalize().map_err(|e| Error::io("cannot resolve --allow-backing path", e).with_file(path))?;
        self.allowed.push(canon);
        Ok(())
    }

    /// Resolves `name`, found in the field `field` of the image `referrer`, to a path that
    /// may be opened, or refuses it with an error that says why.
    /// `chain` holds the canonical paths of the images already open above this one.
    pub fn resolve(&self, referrer: &Path, name: &str, field: &'static str, chain: &[PathBuf]) -> Result<PathBuf> {
        let refuse = |why: String| Error::refused(why).with_field(field).with_file(referrer);
        if chain.len() >= MAX_CHAIN_DEPTH {
            return Err(refuse(format!(
                "backing chain is deeper than {MAX_CHAIN_DEPTH} images; refusing to open {name:?}"
            )));
        }
        if name.is_empty() {
            return Err(refuse("empty file name".into()));
        }
        if name.contains('\0') {
            return Err(refuse(format!("file name {name:?} contains a NUL byte")));
        }
        if let Some(proto) = protocol_prefix(name) {
            return Err(refuse(format!("{name:?} is a {proto}: name, not a file; diskcast opens only plain files")));
        }
        let dir = referrer.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let joined = dir.join(name);
        let canon = joined.canonicalize().map_err(|e| {
            Error::io(format!("cannot open backing file {name:?} (looked for {})", joined.display()), e)
                .with_field(field)
                .with_file(referrer)
        })?;
        if chain.contains(&canon) {
            return Err(refuse(format!("backing chain loops back to {}", canon.display())));
        }
        let canon_dir =
            dir.canonicalize().map_err(|e| Error::io("cannot resolve the image's directory", e).with_file(referrer))?;
        let inside = canon.starts_with(&canon_dir) || self.allowed.iter().any(|a| canon.starts_with(a));
        if !inside {
            return Err(refuse(format!(
                "backing file {name:?} resolves to {}, outside the image's directory {}; \
                 pass --allow-backing {} if you trust it",
                canon.display(),
                canon_dir.display(),
                canon.display()
            )));
        }
        Ok(canon)
    }
}

impl Gate {
    /// Resolves the data file `name` that the descriptor `referrer` lists in `field` (a
    /// VMDK extent). Stricter than [`resolve`](Self::resolve): an extent is part of the
    /// image itself, so it must be a relative name that stays beneath the descriptor's
    /// directory after following symlinks; `--allow-backing` does not widen this.
    pub fn resolve_extent(&self, referrer: &Path, name: &str, field: &'static str) -> Result<PathBuf> {
        let refuse = |why: String| Error::refused(why).with_field(field).with_file(referrer);
        let rel = plain_extent_name(referrer, name, field)?;
        let dir = referrer.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let joined = dir.join(rel);
        let canon = joined.canonicalize().map_err(|e| {
            Error::io(format!("cannot open extent file {name:?} (looked for {})", joined.display()), e)
                .with_field(field)
                .with_file(referrer)
        })?;
        let canon_dir =
            dir.canonicalize().map_err(|e| Error::io("cannot resolve the image's directory", e).with_file(referrer))?;
        if !canon.starts_with(&canon_dir) {
            return Err(refuse(format!(
                "extent file {name:?} resolves to {}, outside the descriptor's directory {}",
                canon.display(),
                canon_dir.display()
            )));
        }
        Ok(canon)
    }
}

/// `name`, found in the field `field` of the descriptor `referrer`, as a relative path
/// that stays beneath the descriptor's directory by its words alone (no `..`, not
/// absolute, no NUL): the rule for extent files, wherever the descriptor lies (a
/// directory, or a server: then they are looked up beside it there).
pub fn plain_extent_name<'n>(referrer: &Path, name: &'n str, field: &'static str) -> Result<&'n Path> {
    let refuse = |why: String| Error::refused(why).with_field(field).with_file(referrer);
    if name.is_empty() || name.contains('\0') {
        return Err(refuse(format!("extent file name {name:?} is empty or contains a NUL byte")));
    }
    let rel = Path::new(name);
    if !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refuse(format!(
            "extent file {name:?} is not a plain name beneath the descriptor's directory; \
             extents are opened only there"
        )));
    }
    Ok(rel)
}

/// The protocol of `name` if it looks like `proto:...` (qemu's protocol syntax).
fn protocol_prefix(name: &str) -> Option<&str> {
    let (proto, _) = name.split_once(':')?;
    let first = Path::new(name).components().next();
    // "dir/a:b" is a plain relative path; "a:b" and "json:{...}" are protocol names.
    let is_first_component = !proto.contains('/') && matches!(first, Some(Component::Normal(_)));
    let looks_like_proto =
        !proto.is_empty() && proto.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'));
    (is_first_component && looks_like_proto).then_some(proto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("top.qcow2");
        std::fs::write(&img, b"x").unwrap();
        std::fs::write(dir.path().join("base.raw"), b"y").unwrap();
        (dir, img)
    }

    #[test]
    fn sibling_is_allowed() {
        let (dir, img) = setup();
        let p = Gate::new().resolve(&img, "base.raw", "backing_file", &[]).unwrap();
        assert_eq!(p, dir.path().join("base.raw").canonicalize().unwrap());
    }

    #[test]
    fn outside_paths_are_refused_unless_allowed() {
        let (_dir, img) = setup();
        for name in ["/etc/passwd", "../../../../etc/passwd"] {
            let e = Gate::new().resolve(&img, name, "backing_file", &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{name}: {e}");
            assert!(e.to_string().contains("--allow-backing"), "{e}");
        }
        let mut g = Gate::new();
        g.allow(Path::new("/etc/passwd")).unwrap();
        assert!(g.resolve(&img, "/etc/passwd", "backing_file", &[]).is_ok());
    }

    #[test]
    fn symlink_out_of_the_directory_is_refused() {
        let (dir, img) = setup();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let e = Gate::new().resolve(&img, "link", "backing_file", &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Refused);
    }

    #[test]
    fn protocols_and_json_are_refused() {
        let (_dir, img) = setup();
        for name in ["json:{\"file.filename\":\"/etc/shadow\"}", "nbd://localhost/x", "file:base.raw", "http://x/y"] {
            let e = Gate::new().resolve(&img, name, "backing_file", &[]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{name}");
        }
    }

    #[test]
    fn extents_stay_beneath_the_descriptor_even_when_allowed() {
        let (dir, img) = setup();
        let mut g = Gate::new();
        g.allow(Path::new("/etc")).unwrap();
        for name in ["/etc/hosts", "../x", "a/../../x", ""] {
            let e = g.resolve_extent(&img, name, "extent").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{name}: {e}");
        }
        std::os::unix::fs::symlink("/etc/hosts", dir.path().join("link")).unwrap();
        assert_eq!(g.resolve_extent(&img, "link", "extent").unwrap_err().kind(), ErrorKind::Refused);
        let p = g.resolve_extent(&img, "./base.raw", "extent").unwrap();
        assert_eq!(p, dir.path().join("base.raw").canonicalize().unwrap());
    }

    #[test]
    fn loops_and_deep_chains_are_refused() {
        let (dir, img) = setup();
        let base = dir.path().join("base.raw").canonicalize().unwrap();
        let e = Gate::new().resolve(&img, "base.raw", "backing_file", &[base]).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        let chain = vec![PathBuf::from("/x"); MAX_CHAIN_DEPTH];
        let e = Gate::new().resolve(&img, "base.raw", "backing_file", &chain).unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
    }
}
