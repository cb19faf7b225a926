//! The one clock and the one source of identifiers every writer uses.
//!
//! Image formats record when and as what an image was made: VHD footers carry a
//! timestamp and a unique id, VHDX headers GUIDs, VDI headers UUIDs, VMDK descriptors a
//! content ID; ISO volume descriptors, ext4 and FAT superblocks and OCI configs to come
//! have theirs. No writer reads the system clock or a random generator itself: each gets a
//! [`Provenance`] through `CreateOptions` and asks it for [`Provenance::now`] and
//! [`Provenance::uuid`].
//!
//! With `SOURCE_DATE_EPOCH` set (<https://reproducible-builds.org/specs/source-date-epoch/>)
//! the clock stands still at that second and every identifier is derived, not drawn:
//! SHA-256 over the epoch, what the identifier is for (`"vhdx.page83"`), the parameters
//! that shape the image (format, size, options; never the target's file name) and, for
//! identifiers written once the data is in, a digest of that data ([`ContentDigest`]).
//! Converting the same input with the same options and the same epoch then gives the same
//! bytes, and two different disks converted with one epoch still get different ids.
//! Without it the clock is the system's and identifiers are random (UUID version 4), as
//! qemu-img makes them.

use crate::{Error, Result};
use diskcast_layout::u64_from_usize;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use uuid::Uuid;

/// The environment variable that fixes the clock and the identifiers.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Where a writer gets the time and the identifiers it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Provenance {
    /// `Some(seconds)`: a fixed clock and derived identifiers. `None`: the system clock
    /// and random identifiers.
    epoch: Option<u64>,
}

impl Provenance {
    /// The system clock and random identifiers.
    pub fn live() -> Self {
        Provenance { epoch: None }
    }

    /// A clock standing at `epoch` (seconds since 1970) and derived identifiers.
    pub fn fixed(epoch: u64) -> Self {
        Provenance { epoch: Some(epoch) }
    }

    /// Reads `SOURCE_DATE_EPOCH` (once per command; pass the result on). Unset or empty:
    /// [`live`](Self::live). Anything but a decimal count of seconds is an error, as the
    /// specification asks, rather than silently unreproducible output.
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(SOURCE_DATE_EPOCH) {
            None => Ok(Self::live()),
            Some(v) => Self::parse(
                v.to_str()
                    .ok_or_else(|| Error::argument(format!("{SOURCE_DATE_EPOCH} is not a number of seconds: {v:?}")))?,
            ),
        }
    }

    /// [`from_env`](Self::from_env) on a given value.
    pub fn parse(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(Self::live());
        }
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::argument(format!("{SOURCE_DATE_EPOCH} is not a number of seconds: {value:?}")));
        }
        v.parse::<u64>()
            .map(Self::fixed)
            .map_err(|_| Error::argument(format!("{SOURCE_DATE_EPOCH} is out of range: {value:?}")))
    }

    /// True when the output must be byte-identical for the same input: the clock is fixed,
    /// identifiers are derived, and a writer whose file layout depends on the order data
    /// arrives in must ask for it in order ([`crate::WriteOrder::Sequential`]).
    pub fn is_reproducible(&self) -> bool {
        self.epoch.is_some()
    }

    /// Seconds since 1970-01-01 UTC that a writer records as "now".
    pub fn now(&self) -> u64 {
        self.epoch.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
        })
    }

    /// An identifier for `purpose` (a short constant such as `"vhdx.file_write_guid"`) of
    /// the image described by `params` (format, size, options; not the file name) and,
    /// when the identifier is written after the data, `content`. Random (version 4) unless
    /// reproducible; then SHA-256 of all of it, marked as an RFC 9562 version 8 UUID.
    pub fn uuid(&self, purpose: &str, params: &[u8], content: Option<&ContentDigest>) -> Uuid {
        let Some(epoch) = self.epoch else { return Uuid::new_v4() };
        let mut h = Sha256::new();
        h.update(b"diskcast provenance 1\0");
        h.update(epoch.to_le_bytes());
        for part in [purpose.as_bytes(), params] {
            h.update((u64_from_usize(part.len())).to_le_bytes());
            h.update(part);
        }
        if let Some(c) = content {
            h.update(c.finish());
        }
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.finalize()[..16]);
        uuid::Builder::from_custom_bytes(b).into_uuid()
    }

    /// A digest of what a writer stores, empty (and free) unless reproducible.
    pub fn content_digest(&self) -> ContentDigest {
        ContentDigest { active: self.is_reproducible(), pieces: Mutex::new(Vec::new()) }
    }
}

/// A digest of the guest data a writer was handed, independent of the order the pieces
/// arrived in (the copy engine's workers race): each piece's offset, length and CRC-32C,
/// sorted by offset when finished. Only kept when the output must be reproducible.
#[derive(Debug, Default)]
pub struct ContentDigest {
    active: bool,
    pieces: Mutex<Vec<(u64, u64, u32)>>,
}

impl ContentDigest {
    /// Records `data` stored at guest `offset`. Cheap (CRC-32C runs at memory speed) and
    /// called from many threads at once.
    pub fn add(&self, offset: u64, data: &[u8]) {
        if !self.active {
            return;
        }
        let crc = crc32c::crc32c(data);
        self.pieces.lock().unwrap_or_else(|p| p.into_inner()).push((offset, u64_from_usize(data.len()), crc));
    }

    /// SHA-256 over the sorted pieces.
    pub fn finish(&self) -> [u8; 32] {
        let mut pieces = self.pieces.lock().unwrap_or_else(|p| p.into_inner()).clone();
        pieces.sort_unstable();
        let mut h = Sha256::new();
        for (offset, len, crc) in pieces {
            h.update(offset.to_le_bytes());
            h.update(len.to_le_bytes());
            h.update(crc.to_le_bytes());
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_variable_like_the_specification() {
        assert_eq!(Provenance::parse("").unwrap(), Provenance::live());
        assert_eq!(Provenance::parse("1700000000").unwrap(), Provenance::fixed(1_700_000_000));
        for bad in ["-1", "1.5", "soon", "99999999999999999999999"] {
            assert_eq!(Provenance::parse(bad).unwrap_err().kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn fixed_clock_and_derived_ids() {
        let p = Provenance::fixed(1_700_000_000);
        assert_eq!(p.now(), 1_700_000_000);
        assert_eq!(p.uuid("a", b"x", None), p.uuid("a", b"x", None));
        assert_ne!(p.uuid("a", b"x", None), p.uuid("b", b"x", None), "purpose counts");
        assert_ne!(p.uuid("a", b"x", None), p.uuid("a", b"y", None), "parameters count");
        assert_ne!(p.uuid("a", b"x", None), Provenance::fixed(1).uuid("a", b"x", None), "epoch counts");
        assert_eq!(p.uuid("a", b"x", None).get_version_num(), 8);
    }

    #[test]
    fn content_digest_ignores_arrival_order_but_not_content() {
        let p = Provenance::fixed(0);
        let (a, b, c) = (p.content_digest(), p.content_digest(), p.content_digest());
        a.add(0, b"one");
        a.add(4096, b"two");
        b.add(4096, b"two");
        b.add(0, b"one");
        c.add(0, b"one");
        c.add(4096, b"tw0");
        assert_eq!(a.finish(), b.finish());
        assert_ne!(a.finish(), c.finish());
        assert_ne!(p.uuid("a", b"", Some(&a)), p.uuid("a", b"", Some(&c)));
    }

    #[test]
    fn live_ids_are_random() {
        let p = Provenance::live();
        assert!(!p.is_reproducible());
        assert_ne!(p.uuid("a", b"", None), p.uuid("a", b"", None));
        assert_eq!(p.uuid("a", b"", None).get_version_num(), 4);
    }
}
