//! `diskcast vm`: a container image or root filesystem made into a bootable VM disk.
//!
//! [`plan`] takes the flattened root [`Tree`](diskcast_tree::Tree) and returns the whole
//! disk as one planned image: GPT, an ESP with systemd-boot, the kernel and initramfs,
//! and the (prepared) root filesystem as ext4. The CLI writes it into any block format
//! in one pass.
#![forbid(unsafe_code)]

pub mod arch;
mod build;
pub mod check;
pub mod container_disk;
pub mod cpio;
pub mod drivers;
pub mod gce;
pub mod guest;
pub mod kernel;
pub mod profile;
pub mod secure_boot;

pub use arch::Arch;
pub use build::{
    BootMode, ESP_BUILTIN, ESP_INITRD, ESP_KERNEL, PartSummary, SPARSE_MIN_SIZE, VmDisk, VmOptions, cmdline, host_file,
    plan,
};
pub use profile::{Archive, Profile};
