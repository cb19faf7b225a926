//! Boot loaders diskcast installs into the disks it writes.
//!
//! Every loader starts the same thing, a [`BootEntry`]: a kernel and an optional
//! initramfs stored on the EFI System Partition, with one command line. Keeping the
//! kernel on the ESP (FAT) means every loader, UEFI or BIOS, reads it the same way.
#![forbid(unsafe_code)]
// EFI binaries and GRUB images come from the images diskcast reads: no truncating casts.
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod authenticode;
pub mod grub_bios;
pub mod grub_efi;
pub mod secure_boot;
pub mod systemd_boot;

/// One bootable entry, as every loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Shown in menus.
    pub title: String,
    /// Absolute path of the kernel on the ESP, e.g. `/diskcast/vmlinuz`.
    pub kernel: String,
    /// Absolute path of the initramfs on the ESP, if any.
    pub initrd: Option<String>,
    /// The whole kernel command line.
    pub cmdline: String,
}
