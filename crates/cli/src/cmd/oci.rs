//! Container images: the options every command that reads one takes, and
//! `diskcast oci ...`.

use clap::{ArgAction, Args};
use diskcast_block::Result;
use diskcast_oci::{OpenOptions, Platform};

/// How to read a container image source (`oci:`, `oci-archive:`, `docker-archive:`,
/// `docker://`).
#[derive(Debug, Default, Clone, Args)]
pub struct ContainerArgs {
    /// Which image of a multi-platform index: OS/ARCH[/VARIANT] (default: this machine's).
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Registry credentials USER:PASSWORD (default: ~/.docker/config.json, else anonymous).
    #[arg(long = "creds", value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// Verify registry TLS certificates; false also allows plain HTTP (local registries).
    #[arg(long = "tls-verify", value_name = "BOOL", action = ArgAction::Set, default_value_t = true)]
    pub tls_verify: bool,
}

impl ContainerArgs {
    /// The library's options for these arguments.
    pub fn open_options(&self) -> Result<OpenOptions> {
        let mut o = OpenOptions {
            platform: self.platform.as_deref().map(Platform::parse).transpose()?,
            ..OpenOptions::default()
        };
        o.registry.creds = self.creds.clone();
        o.registry.tls_verify = self.tls_verify;
        Ok(o)
    }
}
