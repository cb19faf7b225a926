//! End-to-end tests of the `diskcast` binary, judged by qemu's own tools (qemu-img,
//! qemu-io), never by diskcast alone. One binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The OCI crate's image builders and tree/directory manifests, shared rather than copied.
#[path = "../../crates/oci/tests/common/mod.rs"]
mod oci_common;
mod support;
/// The VHDX crate's log-crafting helpers, shared rather than copied.
#[path = "../../crates/vhdx/tests/common/mod.rs"]
mod vhdx_common;

mod amend;
mod backing;
mod bench;
mod bitmap;
mod check;
mod cli;
mod compare;
mod convert;
mod create;
mod dd;
mod disks;
mod exfat;
mod ext4;
mod ext4_journal;
mod extract_races;
mod grammar;
mod hostile;
mod http;
mod info;
mod inplace_write;
mod inputs;
mod inspect;
mod inspect_vulns;
mod iso;
mod iso_remaster;
mod iso_udf;
mod locking;
mod lvm;
mod map_measure;
mod mutants;
mod oci;
mod outputs;
mod ova;
mod packaging;
mod pairs;
mod profiles;
mod qcow2_edit;
mod qemu_flags;
mod qemu_json;
mod qemu_script;
mod rebase_commit;
mod registry;
mod replay_log;
mod reproducible;
mod resize;
mod safety;
mod signatures;
mod squashfs;
mod trees;
mod usb;
mod vm;
mod vm_arm64;
mod vm_bios;
mod vm_bus;
mod vm_firstboot;
mod vm_secureboot;
mod vulndb;
mod wim;
mod write;
mod writers;
mod xfs;
