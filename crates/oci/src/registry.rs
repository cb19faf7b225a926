//! Pulling from a registry over the OCI distribution API (filled in by the next step).

use crate::image::{Image, OpenOptions};
use crate::source::RegistryRef;
use crate::spec::Platform;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates and refuse plain HTTP (`--tls-verify=false` turns it off).
    pub tls_verify: bool,
    /// `USER:PASSWORD` from `--creds`; otherwise `~/.docker/config.json` is consulted.
    pub creds: Option<String>,
    /// The blob cache directory; `None`: `$XDG_CACHE_HOME/diskcast` (or `~/.cache/diskcast`).
    pub cache_dir: Option<PathBuf>,
    /// Parallel downloads.
    pub jobs: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { tls_verify: true, creds: None, cache_dir: None, jobs: 4 }
    }
}

/// Opens an image on a registry.
pub fn open(r: &RegistryRef, _platform: &Platform, _strict: bool, _opts: &OpenOptions) -> Result<Image> {
    Err(Error::unsupported(format!("docker://{}/{}: registry pulls are not implemented yet", r.registry, r.repository)))
}
