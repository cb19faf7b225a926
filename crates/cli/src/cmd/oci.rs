//! `diskcast oci ...`: container image commands.

use crate::cmd::inspect::InspectArgs;
use diskcast_block::{Error, Result};

/// `diskcast oci ...`.
#[derive(Debug, clap::Subcommand)]
pub enum OciCommand {
    /// The container part of `diskcast inspect`: manifest, platform, config, layers,
    /// history and the packages installed, each with the layer that added it.
    #[command(after_help = "\
Examples:
  diskcast oci inspect oci:./layout:latest
  diskcast oci inspect docker-archive:busybox.tar
  diskcast oci inspect --platform linux/arm64 docker://registry.example/app:1.2
  diskcast oci inspect --output json oci-archive:img.tar | jq '.packages[] | [.name, .layer]'

The same command as `diskcast inspect` on a container image (same flags, same output).
Every layer is read once: its digest and diff_id are checked, its uncompressed size
measured, and the package databases kept as they pass, so the layer that added each
package is found without decoding any layer again.")]
    Inspect(InspectArgs),
}

/// Runs an `oci` subcommand.
pub fn run(c: OciCommand) -> Result<u8> {
    match c {
        OciCommand::Inspect(a) => {
            if !diskcast_oci::is_image_ref(&a.src) {
                return Err(Error::argument(format!(
                    "{}: not a container image reference (oci:, oci-archive:, docker-archive:, docker://); \
                     `diskcast inspect {}` reads disks, ISOs, directories and tars",
                    a.src, a.src
                )));
            }
            crate::cmd::inspect::run(a)
        }
    }
}
