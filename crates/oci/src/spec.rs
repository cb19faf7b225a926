//! The JSON documents of the OCI image spec (and Docker's equivalents), as far as diskcast
//! reads and writes them. Unknown fields are ignored, so newer images still read.
//!
//! Specs: <https://github.com/opencontainers/image-spec> (descriptor.md, manifest.md,
//! image-index.md, config.md, image-layout.md); Docker's image manifest v2 schema 2.

use crate::digest::Digest;
use diskcast_block::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest manifest or index read (registries refuse manifests over 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config read (real ones are a few KiB; long histories reach hundreds).
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;
/// Most layers one image may have (Docker's limit is 127; leave room).
pub const MAX_LAYERS: usize = 1024;

/// Media types diskcast reads and writes.
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Uncompressed OCI layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// gzip OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// zstd OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker manifest list (the index of Docker's v2 schema 2).
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest v2 schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker's schema 1 manifests (not supported; deprecated since 2017).
    pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed schema 1.
    pub const DOCKER_MANIFEST_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker foreign (Windows base) layer.
    pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// Every manifest and index type, as an HTTP `Accept` list.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer media type names, or an error for types that are not
    /// filesystem layers.
    pub fn of_layer(media_type: &str) -> Result<Self> {
        let base = media_type.replace(".nondistributable", "");
        Ok(match base.as_str() {
            media::OCI_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP | media::DOCKER_LAYER_FOREIGN => Compression::Gzip,
            media::OCI_LAYER_ZSTD => Compression::Zstd,
            _ => {
                return Err(Error::unsupported(format!("layer media type {media_type:?} is not a tar layer"))
                    .with_field("mediaType"));
            }
        })
    }
}

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced blob.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Where else it may be fetched (foreign layers); never followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Free-form annotations (`org.opencontainers.image.ref.name` in a layout's index).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// For entries of an index: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The annotation naming a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An operating system and CPU architecture.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ... (Go's GOARCH names).
    #[serde(default)]
    pub architecture: String,
    /// `linux`, `windows`, ...
    #[serde(default)]
    pub os: String,
    /// CPU variant (`v7` for arm, `v8` for arm64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows images).
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || Error::argument(format!("--platform {text:?}: expected OS/ARCH[/VARIANT], such as linux/amd64"));
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: normalize_arch(parts[1]).to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
            os_version: None,
        })
    }

    /// The machine this runs on, in Go's names.
    pub fn host() -> Self {
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: normalize_arch(std::env::consts::ARCH).to_string(),
            variant: None,
            os_version: None,
        }
    }

    /// True when an index entry for `self` serves a request for `want`: OS and
    /// architecture equal, and the variant equal when the request names one.
    pub fn matches(&self, want: &Platform) -> bool {
        self.os == want.os
            && normalize_arch(&self.architecture) == want.architecture
            && (want.variant.is_none() || self.variant == want.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Go's architecture name for Rust's (and a few common aliases).
pub fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64le" => "ppc64le",
        "riscv64gc" => "riscv64",
        a => a,
    }
}

/// An image index (or Docker manifest list): manifests for several platforms.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index media type (optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest: one config and the layers, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest media type (optional in OCI, absent in umoci's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, applied in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The image configuration (OCI config.md; Docker's is a superset with the same names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// How a container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The uncompressed layers' digests.
    #[serde(default)]
    pub rootfs: RootFs,
    /// How each layer was made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// The run-time defaults of a container (`config` in the image config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `user[:group]`.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `NAME=value` pairs.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The executable and its first arguments.
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Exposed ports (`80/tcp` -> `{}`).
    #[serde(rename = "ExposedPorts", default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Volumes.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// The signal that stops the container.
    #[serde(rename = "StopSignal", default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The sha256 of each uncompressed layer tar, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// One history entry of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when this step made no layer (ENV, CMD...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// One image of a `docker save` tarball's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerArchiveEntry {
    /// Path of the config inside the tarball.
    #[serde(rename = "Config")]
    pub config: String,
    /// `repo:tag` names.
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars inside the tarball, bottom first.
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// Parses a JSON document, naming it in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("{what} is not valid JSON of the expected shape: {e}")))
}

/// The kind of a manifest-like document from its media type, or from its shape when the
/// media type is absent (umoci and many OCI tools leave it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// An index or manifest list.
    Index,
    /// An image manifest.
    Manifest,
}

/// Decides whether `bytes` (served or described as `media_type`) is an index or a
/// manifest. Schema 1 manifests are refused with a clear message.
pub fn doc_kind(media_type: Option<&str>, bytes: &[u8]) -> Result<DocKind> {
    let probe: serde_json::Value = parse_json(bytes, "manifest")?;
    let declared = probe.get("mediaType").and_then(|m| m.as_str());
    let mt = declared.or(media_type).unwrap_or("");
    match mt {
        media::OCI_INDEX | media::DOCKER_LIST => return Ok(DocKind::Index),
        media::OCI_MANIFEST | media::DOCKER_MANIFEST => return Ok(DocKind::Manifest),
        media::DOCKER_MANIFEST_V1 | media::DOCKER_MANIFEST_V1_SIGNED => {
            return Err(Error::unsupported(
                "Docker schema 1 manifests are not supported (deprecated since 2017); re-push the image with a current tool",
            ));
        }
        _ => {}
    }
    if probe.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(Error::unsupported("Docker schema 1 manifests are not supported (deprecated since 2017)"));
    }
    if probe.get("manifests").is_some() {
        Ok(DocKind::Index)
    } else if probe.get("config").is_some() {
        Ok(DocKind::Manifest)
    } else {
        Err(Error::invalid(format!("document of media type {mt:?} is neither an image index nor a manifest")))
    }
}
