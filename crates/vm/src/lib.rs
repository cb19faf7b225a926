//! `diskcast vm`: a container image or root filesystem made into a bootable VM disk.
#![forbid(unsafe_code)]

pub mod check;
pub mod container_disk;
pub mod profile;

pub use profile::Profile;
