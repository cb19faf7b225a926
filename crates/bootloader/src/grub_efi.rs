//! GRUB for x86_64 UEFI as a removable-media loader (`EFI/BOOT/BOOTX64.EFI`), built by the
//! host's `grub-mkimage -O x86_64-efi` from the host's modules (package
//! grub-efi-amd64-bin), with an early configuration and a prefix as for
//! [`crate::grub_bios`]. Unsigned: firmware with Secure Boot on refuses it.

use crate::grub_bios::{MKIMAGE_PACKAGE, mkimage};
use diskcast_block::{Error, Result};
use std::path::Path;

/// Where the host keeps GRUB's x86_64-efi modules.
pub const MODULE_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// The Debian package with [`MODULE_DIR`].
pub const MODULE_PACKAGE: &str = "grub-efi-amd64-bin";
/// Largest EFI image accepted from grub-mkimage (real ones with a few dozen modules are
/// 1-3 MiB).
const MAX_IMAGE: usize = 32 << 20;

/// Builds `BOOTX64.EFI` holding `module_list`, with `prefix` and `cfg` as its early
/// configuration. An error names the package to install when the modules are missing.
pub fn build(prefix: &str, cfg: &str, module_list: &[&str]) -> Result<Vec<u8>> {
    let dir = Path::new(MODULE_DIR);
    for f in ["kernel.img", "moddep.lst"] {
        if !dir.join(f).is_file() {
            return Err(Error::unsupported(format!(
                "no GRUB UEFI loader: {} is missing; install the {MODULE_PACKAGE} package",
                dir.join(f).display()
            )));
        }
    }
    let image = mkimage("x86_64-efi", dir, MODULE_DIR, prefix, cfg, module_list)?;
    // A PE image starts with the DOS header's "MZ".
    if image.len() > MAX_IMAGE || !image.starts_with(b"MZ") {
        return Err(Error::invalid(format!(
            "grub-mkimage -O x86_64-efi ({MKIMAGE_PACKAGE}) made {} bytes that are not an EFI image of at most {} MiB",
            image.len(),
            MAX_IMAGE >> 20
        )));
    }
    Ok(image)
}
