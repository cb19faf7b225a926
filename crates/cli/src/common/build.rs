//! The identities of new filesystems and disks, which `mkfs` and `mkdisk` share.

use diskcast_block::provenance::Provenance;

/// "Now" and a 16-byte identity for a new filesystem or disk, from the one provenance
/// source: with `SOURCE_DATE_EPOCH` set, that time and an identity derived from it and
/// `what` (the same command gives the same bytes); else the clock and random bytes.
pub fn identity(prov: &Provenance, what: &str) -> (i64, [u8; 16]) {
    let now = i64::try_from(prov.now()).unwrap_or(i64::MAX);
    (now, *prov.uuid("filesystem.id", what.as_bytes(), None).as_bytes())
}
