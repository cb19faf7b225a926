//! Every format diskcast knows, in two registries side by side: block formats
//! ([`registry`]: raw, qcow2, VMDK...) and filesystems ([`filesystems`]: readers,
//! builders and their partition ids).
//!
//! The binary and the end-to-end jobs get their drivers here, so adding a format is one
//! line in [`registry`] or one entry in [`filesystems`] plus its crate.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod fs;

pub use diskcast_block::registry::Registry;
pub use fs::{Filesystem, FsRegistry, PartitionIds, filesystems};

/// A registry with every driver. Order does not matter for probing: a file claimed by
/// two drivers is reported as ambiguous, never guessed.
pub fn registry() -> Registry {
    Registry::new(vec![
        Box::new(diskcast_raw::RawDriver),
        Box::new(diskcast_qcow2::Qcow2Driver),
        Box::new(diskcast_vmdk::VmdkDriver),
        Box::new(diskcast_vhd::VhdDriver),
        Box::new(diskcast_vhdx::VhdxDriver),
        Box::new(diskcast_vdi::VdiDriver),
        Box::new(diskcast_ova::OvaDriver),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique() {
        let r = super::registry();
        let mut names: Vec<_> = r.drivers().map(|d| d.name()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
