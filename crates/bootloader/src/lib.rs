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

/// A UEFI architecture's loader names: the removable-media path firmware starts on a
/// disk with no boot entry in NVRAM (UEFI 2.10, 3.5.1.1), the systemd-boot binary
/// distributions install, and the PE/COFF machine type of its programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfiArch {
    /// UEFI's short name (`x64`, `aa64`).
    pub name: &'static str,
    /// Relative to the ESP's root: `EFI/BOOT/BOOTX64.EFI`.
    pub removable_path: &'static str,
    /// Where distributions install systemd-boot, in an image or on the host.
    pub systemd_boot: &'static str,
    /// The PE machine type (`IMAGE_FILE_MACHINE_*`).
    pub pe_machine: u16,
}

impl EfiArch {
    /// x86-64.
    pub const X64: EfiArch = EfiArch {
        name: "x64",
        removable_path: "EFI/BOOT/BOOTX64.EFI",
        systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        pe_machine: 0x8664,
    };
    /// 64-bit ARM.
    pub const AA64: EfiArch = EfiArch {
        name: "aa64",
        removable_path: "EFI/BOOT/BOOTAA64.EFI",
        systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
        pe_machine: 0xaa64,
    };
    /// Every architecture diskcast installs loaders for.
    pub const ALL: [EfiArch; 2] = [EfiArch::X64, EfiArch::AA64];
}

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
