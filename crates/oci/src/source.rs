//! Image references in skopeo's transport syntax, parsed and validated.

use crate::digest::Digest;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `oci:DIR[:REF]`: an OCI image layout directory.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, or a manifest digest.
        reference: Option<String>,
    },
    /// `oci-archive:FILE[:REF]`: an OCI layout in a tar file.
    OciArchive {
        /// The tar file.
        file: PathBuf,
        /// As for [`ImageRef::Layout`].
        reference: Option<String>,
    },
    /// `docker-archive:FILE[:REF]`: `docker save` output.
    DockerArchive {
        /// The tar file.
        file: PathBuf,
        /// A `repo:tag` of the archive's `RepoTags`, or `@N` for the N-th image.
        reference: Option<String>,
    },
    /// `docker://[REGISTRY/]REPO[:TAG|@DIGEST]`.
    Registry(RegistryRef),
}

/// A repository on a registry and a tag or digest in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`, as the URL takes it (`registry-1.docker.io` for Docker Hub).
    pub registry: String,
    /// The name users write for the registry (`docker.io`), used to find credentials.
    pub registry_name: String,
    /// `library/busybox`.
    pub repository: String,
    /// A tag or a digest.
    pub reference: Reference,
}

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// A tag (`latest`).
    Tag(String),
    /// A manifest digest.
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// The transports this crate reads, as prefixes.
pub const TRANSPORTS: [&str; 4] = ["oci:", "oci-archive:", "docker-archive:", "docker://"];

/// True when `spec` names a container image (starts with one of [`TRANSPORTS`]).
pub fn is_image_ref(spec: &str) -> bool {
    TRANSPORTS.iter().any(|t| spec.starts_with(t))
}

fn split_path(rest: &str, transport: &str) -> Result<(PathBuf, Option<String>)> {
    // skopeo splits at the first ':' (so the path cannot contain one).
    let (path, reference) = match rest.split_once(':') {
        Some((p, r)) => (p, Some(r.to_string()).filter(|r| !r.is_empty())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::argument(format!("{transport}: needs a path")));
    }
    Ok((PathBuf::from(path), reference))
}

impl ImageRef {
    /// Parses `oci:`, `oci-archive:`, `docker-archive:` and `docker://` references.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(rest) = spec.strip_prefix("docker://") {
            return Ok(ImageRef::Registry(RegistryRef::parse(rest)?));
        }
        if let Some(rest) = spec.strip_prefix("oci-archive:") {
            let (file, reference) = split_path(rest, "oci-archive")?;
            return Ok(ImageRef::OciArchive { file, reference });
        }
        if let Some(rest) = spec.strip_prefix("docker-archive:") {
            let (file, reference) = split_path(rest, "docker-archive")?;
            return Ok(ImageRef::DockerArchive { file, reference });
        }
        if let Some(rest) = spec.strip_prefix("oci:") {
            let (dir, reference) = split_path(rest, "oci")?;
            return Ok(ImageRef::Layout { dir, reference });
        }
        Err(Error::argument(format!(
            "{spec:?} is not a container image reference (oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker://REGISTRY/REPO[:TAG|@DIGEST])"
        )))
    }
}

impl RegistryRef {
    /// Parses `[REGISTRY/]REPO[:TAG][@DIGEST]` as Docker does: a first component with a
    /// `.` or `:` or equal to `localhost` is a registry, anything else is on Docker Hub
    /// (`library/` is added to one-component names there).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::argument(format!("docker://{text}: {why}"));
        let (name, digest) = match text.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d)?)),
            None => (text, None),
        };
        let (registry_part, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t)),
            _ => (path, None),
        };
        if path.is_empty() {
            return Err(bad("no repository name"));
        }
        for comp in path.split('/') {
            if !valid_path_component(comp) {
                return Err(bad(&format!(
                    "repository component {comp:?} is not valid (lowercase letters, digits, '.', '_', '-')"
                )));
            }
        }
        if path.len() > 255 {
            return Err(bad("repository name longer than 255 characters"));
        }
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad(&format!("tag {t:?} is not valid")));
            }
        }
        let (registry, registry_name, repository) = match registry_part {
            Some(r) => {
                if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
                    return Err(bad(&format!("registry {r:?} is not a host name")));
                }
                let host = if r == "docker.io" || r == "index.docker.io" { "registry-1.docker.io" } else { r };
                let repo = if host == "registry-1.docker.io" && !path.contains('/') {
                    format!("library/{path}")
                } else {
                    path.to_string()
                };
                (host.to_string(), r.to_string(), repo)
            }
            None => {
                let repo = if path.contains('/') { path.to_string() } else { format!("library/{path}") };
                ("registry-1.docker.io".to_string(), "docker.io".to_string(), repo)
            }
        };
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => Reference::Tag(t.to_string()),
            (None, None) => Reference::Tag("latest".to_string()),
        };
        Ok(RegistryRef { registry, registry_name, repository, reference })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` from the distribution spec's name grammar.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/l:v1").unwrap(),
            ImageRef::Layout { dir: "/tmp/l".into(), reference: Some("v1".into()) }
        );
        assert_eq!(ImageRef::parse("oci:dir").unwrap(), ImageRef::Layout { dir: "dir".into(), reference: None });
        assert_eq!(
            ImageRef::parse("docker-archive:b.tar:oracle/busybox:v1").unwrap(),
            ImageRef::DockerArchive { file: "b.tar".into(), reference: Some("oracle/busybox:v1".into()) }
        );
        let e = ImageRef::parse("oci:").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("oci: needs a path"), "{e}");
        let e = ImageRef::parse("/some/file").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("is not a container image reference"), "{e}");
    }

    #[test]
    fn registry_names() {
        let r = RegistryRef::parse("busybox").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("registry-1.docker.io", "library/busybox"));
        assert_eq!(r.reference, Reference::Tag("latest".into()));
        let r = RegistryRef::parse("127.0.0.1:5000/oracle/busybox:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "oracle/busybox"));
        assert_eq!(r.reference, Reference::Tag("v1".into()));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = RegistryRef::parse(&format!("localhost/a/b@{d}")).unwrap();
        assert_eq!(r.reference, Reference::Digest(Digest::parse(d).unwrap()));
        for bad in ["UPPER/x", "a//b", "a/../b", "x:tag with space", "reg.io/a/b@sha256:zz", "reg.io/-a"] {
            let e = RegistryRef::parse(bad).unwrap_err();
            let (kind, msg) = (e.kind(), e.to_string());
            assert!(
                matches!(kind, diskcast_block::ErrorKind::InvalidArgument | diskcast_block::ErrorKind::InvalidFormat),
                "{bad}: {e}"
            );
            assert!(msg.contains("is not valid") || msg.contains("64 lowercase hex digits"), "{bad}: {e}");
        }
    }
}
