//! Reading back what was written over a device or file and comparing it with the image
//! (`diskcast write`, verification on by default, as Etcher and bmaptool do).
//!
//! [`written`] opens the target read-only after the writer's fsync and drops its cached
//! pages over the range, so the read-back comes from the medium rather than from the
//! kernel's copy of what was just written. [`verify`] compares with the copy engine's own
//! comparison ([`first_difference`]): every worker of `-j`, ranges both sides map as zero
//! never read.

use crate::copy::first_difference;
use crate::io::ImageFile;
use crate::progress::Progress;
use crate::source::{SliceSource, Source};
use crate::{BlockRead, Error, Result};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The first `len` bytes of `target` (a device may be larger than the image), opened
/// read-only with the page cache over them dropped, to be opened as a raw disk.
pub fn written(target: &Path, len: u64) -> Result<Source> {
    let file = ImageFile::open(target)?;
    // After the writer's fsync every page is clean, and clean pages are dropped: the reads
    // that follow go to the device. Advice only; where it is ignored the read-back still
    // sees what the kernel says the file holds.
    let _ = rustix::fs::fadvise(file.file(), 0, std::num::NonZeroU64::new(len), rustix::fs::Advice::DontNeed);
    Ok(Arc::new(SliceSource::new(target, Arc::new(file), 0, len)?))
}

/// Compares `image` with `written` (the target read back, as long as the image) on
/// `threads` workers. A difference is a [`crate::ErrorKind::Corrupt`] error naming
/// `target` and the first differing byte; once `cancel` is set (Ctrl-C) the comparison
/// stops with [`crate::ErrorKind::Cancelled`].
pub fn verify(
    image: &dyn BlockRead,
    written: &dyn BlockRead,
    target: &Path,
    threads: usize,
    progress: &dyn Progress,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    if written.size() != image.size() {
        return Err(Error::argument(format!(
            "cannot verify: {} bytes were read back for a {}-byte image",
            written.size(),
            image.size()
        ))
        .with_file(target));
    }
    match first_difference(image, written, threads, progress, cancel).map_err(|e| e.with_file(target))? {
        None => Ok(()),
        Some(at) => Err(Error::corrupt(format!(
            "verification failed: what was read back differs from the image at byte {at}; the target did not \
             keep what was written (a failing or fake-capacity device?)"
        ))
        .with_offset(at)
        .with_file(target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::{Alloc, ErrorKind, Extent, ImageInfo};

    /// Bytes in memory; `zero` ranges map as zero (and must read as zero).
    #[derive(Debug)]
    struct Disk {
        bytes: Vec<u8>,
        zero_from: u64,
    }

    impl BlockRead for Disk {
        fn size(&self) -> u64 {
            u64::try_from(self.bytes.len()).unwrap()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            let at = usize::try_from(offset).unwrap();
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
        fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
            let end = (offset + max_len).min(self.size());
            Ok(if offset < self.zero_from {
                Extent { offset, len: end.min(self.zero_from) - offset, alloc: Alloc::Data }
            } else {
                Extent { offset, len: end - offset, alloc: Alloc::Zero }
            })
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    fn disk(len: usize, zero_from: u64) -> Disk {
        let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        bytes[usize::try_from(zero_from).unwrap()..].fill(0);
        Disk { bytes, zero_from }
    }

    /// Equal content passes; one changed byte anywhere (in data, or where the image maps
    /// zeros but the target does not read zero) fails naming the target and the byte; a
    /// set cancel flag stops the comparison.
    #[test]
    fn differences_are_found_and_named() {
        let target = Path::new("/dev/sdz");
        let image = disk(9 << 20, 6 << 20);
        let same = disk(9 << 20, 6 << 20);
        verify(&image, &same, target, 3, &NoProgress, None).unwrap();
        for at in [0usize, 4 << 20, (5 << 20) + 4095, (7 << 20) + 1, (9 << 20) - 1] {
            let mut back = disk(9 << 20, 9 << 20);
            back.bytes[..6 << 20].copy_from_slice(&image.bytes[..6 << 20]);
            back.bytes[6 << 20..].fill(0);
            verify(&image, &back, target, 3, &NoProgress, None).unwrap();
            back.bytes[at] ^= 0x40;
            let e = verify(&image, &back, target, 3, &NoProgress, None).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert_eq!(e.offset(), Some(at as u64));
            assert_eq!(e.file(), Some(target));
            assert!(e.to_string().contains(&format!("differs from the image at byte {at}")), "{e}");
        }
        let short = disk(8 << 20, 6 << 20);
        let e = verify(&image, &short, target, 1, &NoProgress, None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("8388608 bytes were read back for a 9437184-byte image"), "{e}");
        let stop = AtomicBool::new(true);
        let e = verify(&image, &same, target, 2, &NoProgress, Some(&stop)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    }

    /// Only the image's length of a larger target is read back.
    #[test]
    fn a_larger_target_is_read_to_the_image_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.img");
        std::fs::write(&p, [7u8; 10_000]).unwrap();
        let src = written(&p, 4096).unwrap();
        assert_eq!(src.len().unwrap(), 4096);
        let e = written(&p, 20_000).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    }
}
