//! Positional file I/O with errors that name the file and offset, and hole finding.
//!
//! Every driver reads its image with `pread`-style calls on a shared `&File`, so reads from
//! many threads never race on a file cursor.

use crate::{Error, Result};
use diskcast_layout::u64_from_usize;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Writes at least this large start writeback at once. Outputs are synced before they are
/// renamed into place; without this the kernel would hold gigabytes of dirty pages until
/// that final fsync and then write them while we wait. `POSIX_FADV_DONTNEED` on dirty
/// pages starts their writeback without waiting (and drops no dirty page), so the disk
/// works while the copy goes on.
const WRITEBACK_MIN: usize = 1 << 20;

/// Writes at least this large, at offsets and lengths that are multiples of
/// [`DIRECT_ALIGN`], bypass the page cache when the file allows it. On the machines we
/// measured, a buffered write costs several times the device's own time (copying into
/// the page cache and reclaiming it again); a direct write goes from our buffer to the
/// device. Small writes (metadata) stay buffered; the kernel keeps both views coherent.
const DIRECT_MIN: usize = 256 << 10;
/// Alignment of direct writes: the largest logical block size in common use.
const DIRECT_ALIGN: usize = 4096;
/// Direct writes go through an aligned bounce buffer of this size per thread.
const BOUNCE: usize = 2 << 20;

/// A second handle on an output file, opened with `O_DIRECT`.
#[derive(Debug)]
struct Direct {
    file: File,
    /// Set after a direct write failed: everything goes buffered from then on.
    off: std::sync::atomic::AtomicBool,
}

thread_local! {
    static BOUNCE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Direct {
    /// Writes `buf` (aligned offset and length) through the page-cache-bypassing handle,
    /// copying it into an aligned per-thread buffer first (a `Vec<u8>` has no alignment
    /// we could rely on without unsafe code; the copy costs a fraction of what it saves).
    fn write(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        BOUNCE_BUF.with(|cell| {
            let mut bounce = cell.borrow_mut();
            if bounce.len() < BOUNCE + DIRECT_ALIGN {
                bounce.resize(BOUNCE + DIRECT_ALIGN, 0);
            }
            let skew = (DIRECT_ALIGN - bounce.as_ptr().addr() % DIRECT_ALIGN) % DIRECT_ALIGN;
            let mut done = 0usize;
            while done < buf.len() {
                let n = (buf.len() - done).min(BOUNCE);
                let aligned = &mut bounce[skew..skew + n];
                aligned.copy_from_slice(&buf[done..done + n]);
                self.file.write_all_at(aligned, offset + u64_from_usize(done))?;
                done += n;
            }
            Ok(())
        })
    }
}

/// A file opened by a driver, remembered with its path for error messages.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    /// For new outputs: a handle for large aligned writes that bypass the page cache.
    direct: Option<Direct>,
}

impl ImageFile {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
        Ok(ImageFile { file, path: path.to_path_buf(), direct: None })
    }

    /// Opens an existing `path` for reading and writing (only to replay a pending log the
    /// user allowed; new images come from [`crate::output::OutputFiles`]).
    pub fn open_rw(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open for writing", e).with_file(path))?;
        Ok(ImageFile { file, path: path.to_path_buf(), direct: None })
    }

    /// The same, refusing a symlink as the last component (`O_NOFOLLOW`): `write` writes
    /// over the file the user named, never where a link swapped in meanwhile points.
    pub fn open_rw_nofollow(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(i32::from_ne_bytes(rustix::fs::OFlags::NOFOLLOW.bits().to_ne_bytes()))
            .open(path)
            .map_err(|e| Error::io("cannot open for writing", e).with_file(path))?;
        Ok(ImageFile { file, path: path.to_path_buf(), direct: None })
    }

    /// Whether `path` can be opened for direct I/O (`O_DIRECT`), which tmpfs and some
    /// network filesystems refuse; writes to it then go through the page cache.
    pub fn direct_io_supported(path: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = i32::from_ne_bytes(rustix::fs::OFlags::DIRECT.bits().to_ne_bytes());
        std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).is_ok()
    }

    /// Wraps an already open file.
    pub fn from_file(file: File, path: &Path) -> Self {
        ImageFile { file, path: path.to_path_buf(), direct: None }
    }

    /// Lets large aligned writes bypass the page cache through a second handle on
    /// `open_path` (the file itself, by the path it was created under). A filesystem
    /// without `O_DIRECT` simply keeps every write buffered.
    pub fn with_direct_writes(self, open_path: &Path) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let flags = i32::from_ne_bytes(rustix::fs::OFlags::DIRECT.bits().to_ne_bytes());
        match std::fs::OpenOptions::new().write(true).custom_flags(flags).open(open_path) {
            Ok(file) => self.with_direct_handle(file),
            Err(_) => self,
        }
    }

    /// The same with a handle the caller opened with `O_DIRECT` on this very file (for
    /// files opened relative to a directory handle, as extraction does).
    pub fn with_direct_handle(mut self, file: File) -> Self {
        self.direct = Some(Direct { file, off: std::sync::atomic::AtomicBool::new(false) });
        self
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Current length of the file in bytes; for a block device (a disk, an LV, a loop
    /// device), the device's size, which stat reports as 0.
    #[allow(clippy::len_without_is_empty)] // a file, not a collection
    pub fn len(&self) -> Result<u64> {
        use std::os::unix::fs::FileTypeExt;
        let meta = self.file.metadata().map_err(|e| Error::io("cannot stat", e).with_file(&self.path))?;
        if !meta.file_type().is_block_device() {
            return Ok(meta.len());
        }
        // The end of a block device is its size, the value the BLKGETSIZE64 ioctl returns;
        // seeking there needs no unsafe ioctl call. Reads use pread, so moving the shared
        // file cursor disturbs nothing.
        rustix::fs::seek(&self.file, rustix::fs::SeekFrom::End(0))
            .map_err(|e| Error::io("cannot read the block device's size", e.into()).with_file(&self.path))
    }

    /// Makes `[offset, offset+len)` read as zeros, for writing into a file or device that
    /// already holds data (`convert -n`, `write`), cheapest first:
    /// - a hole (`FALLOC_FL_PUNCH_HOLE`). On a block device the kernel turns this into
    ///   write-zeroes without fallback (NVMe deallocate, SCSI WRITE SAME with UNMAP, a
    ///   loop device's hole), used only where the device guarantees zeros after it;
    /// - `FALLOC_FL_ZERO_RANGE`: on a block device what `BLKZEROOUT` does (the kernel
    ///   writes zeros itself where the device has no zeroing command);
    /// - zeros written by us.
    ///
    /// A discard (`BLKDISCARD`) is never taken for zeroing: what a discarded range reads
    /// back is up to the device (Linux 4.12 dropped `discard_zeroes_data` because devices
    /// did not keep the promise).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if self.punch_hole(offset, len).is_ok() {
            return Ok(());
        }
        use rustix::fs::FallocateFlags;
        if rustix::fs::fallocate(&self.file, FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE, offset, len)
            .is_ok()
        {
            return Ok(());
        }
        self.preallocate(offset, len, true)
    }

    /// Preallocates `[offset, offset+len)` as `resize`/`create --preallocation` ask:
    /// `falloc` reserves the blocks (reading as zeros), `full` writes zeros, which also
    /// works where the file system has no fallocate.
    pub fn preallocate(&self, offset: u64, len: u64, full: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if !full {
            return rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), offset, len).map_err(|e| {
                Error::io("cannot preallocate (falloc)", e.into()).with_offset(offset).with_file(&self.path)
            });
        }
        let zeros = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let n = zeros.len().min(usize::try_from(len - done).unwrap_or(usize::MAX));
            self.write_all_at(&zeros[..n], offset + done)?;
            done += u64_from_usize(n);
        }
        Ok(())
    }

    /// Copies everything `reader` yields (a pipe, a character device, standard input) into
    /// a new unnamed temporary file in `dir`, which is deleted when the returned file is
    /// closed and never appears in the directory. All-zero blocks become holes; memory
    /// stays at one 1 MiB buffer whatever the size. `name` is what errors will call it.
    pub fn spool(reader: &mut dyn std::io::Read, dir: &Path, name: &Path) -> Result<Self> {
        const BLOCK: usize = 1 << 20;
        let file = crate::output::scratch(dir, name)?;
        let spool = ImageFile::from_file(file, name);
        let mut buf = vec![0u8; BLOCK];
        let mut pos = 0u64;
        loop {
            let mut filled = 0;
            while filled < BLOCK {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::io("read failed", e)
                            .with_offset(pos + u64_from_usize(filled))
                            .with_file(name));
                    }
                }
            }
            if !is_zero(&buf[..filled]) {
                spool.write_all_at(&buf[..filled], pos)?;
            }
            pos += u64_from_usize(filled);
            if filled < BLOCK {
                break;
            }
        }
        spool.set_len(pos)?;
        Ok(spool)
    }

    /// Bytes the file occupies on disk (its allocated blocks).
    pub fn allocated_bytes(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file
            .metadata()
            .map(|m| m.blocks().saturating_mul(512))
            .map_err(|e| Error::io("cannot stat", e).with_file(&self.path))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a short file is an
    /// [`crate::ErrorKind::OutOfBounds`] error naming the offset.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::out_of_bounds(format!("read of {} bytes runs past the end of the file", buf.len()))
            } else {
                Error::io("read failed", e)
            }
            .with_offset(offset)
            .with_file(&self.path)
        })
    }

    /// Writes all of `buf` at `offset`. Large writes also start writeback of what they
    /// wrote (see [`WRITEBACK_MIN`]).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        use std::sync::atomic::Ordering;
        if let Some(d) = &self.direct
            && buf.len() >= DIRECT_MIN
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && offset.is_multiple_of(u64_from_usize(DIRECT_ALIGN))
            && !d.off.load(Ordering::Relaxed)
        {
            match d.write(buf, offset) {
                Ok(()) => return Ok(()),
                // Not supported here after all (or a real error, which the buffered
                // write below reports with the file's name): stay buffered from now on.
                Err(_) => d.off.store(true, Ordering::Relaxed),
            }
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io("write failed", e).with_offset(offset).with_file(&self.path))?;
        if buf.len() >= WRITEBACK_MIN {
            // Advice only: a filesystem that ignores it loses nothing but the head start.
            let _ = rustix::fs::fadvise(
                &self.file,
                offset,
                std::num::NonZeroU64::new(u64_from_usize(buf.len())),
                rustix::fs::Advice::DontNeed,
            );
        }
        Ok(())
    }

    /// Has the kernel copy `len` bytes of `from` at `from_offset` to `offset` in this file
    /// (copy_file_range: no trip through memory; on filesystems that share extents, no
    /// copy at all). `Ok(false)` when the kernel cannot do it for these two files (other
    /// filesystems, no support): the caller copies through memory, as qemu-img falls back.
    /// Short copies are resumed; a source that ends early is an error.
    pub fn copy_range(&self, from: &ImageFile, from_offset: u64, offset: u64, len: u64) -> Result<bool> {
        use rustix::io::Errno;
        let (mut off_in, mut off_out, end) = (from_offset, offset, offset.saturating_add(len));
        while off_out < end {
            let want = usize::try_from(end - off_out).unwrap_or(COPY_RANGE_MAX).min(COPY_RANGE_MAX);
            match rustix::fs::copy_file_range(&from.file, Some(&mut off_in), &self.file, Some(&mut off_out), want) {
                Ok(0) => {
                    return Err(Error::out_of_bounds(format!(
                        "the source ended {} bytes short of the range being copied",
                        end - off_out
                    ))
                    .with_offset(off_in)
                    .with_file(&from.path));
                }
                Ok(_) => {}
                Err(Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL | Errno::BADF | Errno::TXTBSY) => {
                    return Ok(false);
                }
                Err(e) => {
                    return Err(Error::io(format!("copy_file_range from {} failed", from.path.display()), e.into())
                        .with_offset(off_out)
                        .with_file(&self.path));
                }
            }
        }
        Ok(true)
    }

    /// Sets the file length (extending with a hole, or truncating).
    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| Error::io("cannot set length", e).with_file(&self.path))
    }

    /// Flushes data and metadata to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io("fsync failed", e).with_file(&self.path))
    }

    /// The next offset at or after `offset` that holds data (`None`: only a hole follows).
    /// Falls back to "all data" on filesystems without SEEK_DATA.
    pub fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(pos) => Ok(Some(pos)),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => Ok(Some(offset)),
            Err(e) => Err(Error::io("SEEK_DATA failed", e.into()).with_offset(offset).with_file(&self.path)),
        }
    }

    /// The next hole at or after `offset` (the file's end counts as a hole).
    pub fn next_hole(&self, offset: u64) -> Result<u64> {
        match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Hole(offset)) {
            Ok(pos) => Ok(pos),
            Err(rustix::io::Errno::NXIO | rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => self.len(),
            Err(e) => Err(Error::io("SEEK_HOLE failed", e.into()).with_offset(offset).with_file(&self.path)),
        }
    }

    /// Deallocates `[offset, offset+len)` so it reads as zeros without using space.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        use rustix::fs::FallocateFlags;
        rustix::fs::fallocate(&self.file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len)
            .map_err(|e| Error::io("cannot punch hole", e.into()).with_offset(offset).with_file(&self.path))
    }
}

/// Most bytes one copy_file_range call is asked for: the kernel copies at most about
/// 2 GiB per call anyway, and a bounded request keeps Ctrl-C responsive.
const COPY_RANGE_MAX: usize = 64 << 20;

/// True when every byte of `buf` is zero (fast path over 16-byte words).
pub fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.split_at(buf.len() - buf.len() % 16);
    chunks.chunks_exact(16).all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_a_single_set_byte_anywhere() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for i in [0, 15, 16, 4095, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "byte {i}");
            buf[i] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn short_read_is_out_of_bounds_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [1u8; 10]).unwrap();
        let f = ImageFile::open(&p).unwrap();
        let mut buf = [0u8; 8];
        let e = f.read_exact_at(&mut buf, 5).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::OutOfBounds);
        assert_eq!(e.offset(), Some(5));
        assert_eq!(e.file(), Some(p.as_path()));
    }

    #[test]
    fn spool_keeps_every_byte_and_makes_zeros_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; (3 << 20) + 123];
        data[5] = 1;
        data[(3 << 20) + 100] = 9; // in the short last block
        let f = ImageFile::spool(&mut &data[..], dir.path(), Path::new("standard input")).unwrap();
        assert_eq!(f.len().unwrap(), data.len() as u64);
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        assert!(f.allocated_bytes().unwrap() < 3 << 20, "the zero blocks should be holes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the spool must not appear");
        let empty = ImageFile::spool(&mut &[][..], dir.path(), Path::new("-")).unwrap();
        assert_eq!(empty.len().unwrap(), 0);
    }

    #[test]
    fn holes_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let file = File::create(&p).unwrap();
        file.set_len(8 << 20).unwrap();
        file.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        let f = ImageFile::from_file(file, &p);
        let d = f.next_data(0).unwrap().unwrap();
        assert!(d <= 4 << 20);
        assert!(f.next_hole(4 << 20).unwrap() > 4 << 20);
        assert!(f.next_data((4 << 20) + (1 << 20)).unwrap().is_none());
    }
}
