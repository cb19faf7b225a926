//! Raw disk images: the guest's bytes, as they are, in a plain file.
//!
//! Reading finds holes with `SEEK_DATA`/`SEEK_HOLE` so unallocated ranges are never read;
//! writing leaves ranges that are never written as holes, so the output stays sparse.
//! [`RawStream`] writes raw bytes to a pipe (`convert ... -`), front to back, filling holes
//! with zeros because a pipe cannot seek.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

use diskcast_block::io::ImageFile;
use diskcast_block::output::OutputFiles;
use diskcast_block::range_end;
use diskcast_block::registry::{CreateOptions, Driver, Measure, OpenContext, Preallocation, ProbeData};
use diskcast_block::source::{Source, open_file};
use diskcast_block::{Alloc, BlockRead, BlockWrite, Encoded, Error, Extent, ImageInfo, MapExtent, Result, WriteOrder};
use diskcast_layout::u64_from_usize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// The raw format driver.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawDriver;

impl Driver for RawDriver {
    fn name(&self) -> &'static str {
        "raw"
    }

    /// Raw has no magic; the registry decides when a file is plainly raw.
    fn probe(&self, _data: &ProbeData<'_>) -> bool {
        false
    }

    fn open(&self, src: Source, _ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        Ok(Box::new(RawReader::new(src)?))
    }

    fn validate(&self, opts: &CreateOptions) -> Result<()> {
        opts.check_keys(self)?;
        if opts.compress {
            return Err(Error::argument("raw images cannot be compressed (-c)"));
        }
        if opts.backing_file.is_some() {
            return Err(Error::argument("raw images cannot have a backing file (-b)"));
        }
        Ok(())
    }

    fn create(&self, path: &Path, size: u64, opts: &CreateOptions, out: &OutputFiles) -> Result<Box<dyn BlockWrite>> {
        self.validate(opts)?;
        let file = out.create(path)?;
        file.set_len(size)?;
        if matches!(opts.preallocation, Preallocation::Falloc | Preallocation::Full) {
            file.preallocate(0, size, opts.preallocation == Preallocation::Full)?;
        }
        Ok(Box::new(RawWriter { file, size, in_place: false, target_is_zero: false }))
    }

    fn stream_options(&self) -> Option<&'static str> {
        Some("")
    }

    fn writes_in_place(&self) -> bool {
        true
    }

    fn write_into(&self, file: ImageFile, size: u64, opts: &CreateOptions) -> Result<Box<dyn BlockWrite>> {
        self.validate(opts)?;
        let have = file.len()?;
        if have < size {
            return Err(Error::argument(format!(
                "the target holds {have} bytes, less than the {size} bytes of the source"
            ))
            .with_file(file.path()));
        }
        Ok(Box::new(RawWriter { file, size, in_place: true, target_is_zero: opts.target_is_zero }))
    }

    /// The file's length is the disk's size: set it, and preallocate what grew.
    fn resize(&self, file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
        if !file.file().metadata().map_err(|e| Error::io("cannot stat", e).with_file(file.path()))?.is_file() {
            return Err(Error::argument("only regular files can be resized, not devices").with_file(file.path()));
        }
        let old = file.len()?;
        match prealloc {
            Preallocation::Metadata => {
                return Err(Error::argument("Unsupported preallocation mode: metadata (raw images have no metadata)")
                    .with_file(file.path()));
            }
            Preallocation::Falloc | Preallocation::Full if size > old => {
                file.preallocate(old, size - old, prealloc == Preallocation::Full)?;
            }
            _ => {}
        }
        file.set_len(size)
    }

    /// Raw bytes go down a pipe as they are, holes as zeros.
    fn check_stream(&self, opts: &CreateOptions) -> Result<()> {
        self.validate(opts)
    }

    fn create_stream(
        &self,
        out: Box<dyn Write + Send>,
        size: u64,
        opts: &CreateOptions,
    ) -> Result<Box<dyn BlockWrite>> {
        self.validate(opts)?;
        Ok(Box::new(RawStream::new(out, size)))
    }

    /// A raw file is always as long as the disk (holes or not), as qemu-img measure says.
    fn measure(&self, size: u64, _data: &[Extent], opts: &CreateOptions) -> Result<Measure> {
        self.validate(opts)?;
        Ok(Measure { required: size, fully_allocated: size })
    }
}

/// A raw image open for reading.
#[derive(Debug)]
pub struct RawReader {
    file: Source,
    size: u64,
}

impl RawReader {
    /// Opens the file at `path`; its length is the virtual size.
    pub fn open(path: &Path) -> Result<Self> {
        Self::new(open_file(path)?)
    }

    /// Reads the bytes of `src` as a disk of its length.
    pub fn new(src: Source) -> Result<Self> {
        let size = src.len()?;
        Ok(RawReader { file: src, size })
    }
}

impl BlockRead for RawReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.size)?;
        self.file.read_exact_at(buf, offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        range_end(offset, 1, self.size)?;
        let end = offset.saturating_add(max_len).min(self.size);
        let (alloc, stop) = match self.file.next_data(offset)? {
            Some(data) if data <= offset => (Alloc::Data, self.file.next_hole(offset)?),
            // A hole in a raw file is part of the image and reads as zeros: "zero" (present
            // in this image), as qemu-img map reports it, not "unallocated".
            Some(data) => (Alloc::Zero, data),
            None => (Alloc::Zero, end),
        };
        let stop = stop.clamp(offset + 1, end.max(offset + 1));
        Ok(Extent { offset, len: stop - offset, alloc })
    }

    /// Every byte of a raw image is stored at its own offset, holes included.
    fn map_extent(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let extent = self.extent_at(offset, max_len)?;
        Ok(MapExtent { extent, host: Some(offset), compressed: false })
    }

    fn info(&self) -> ImageInfo {
        ImageInfo { format: "raw".into(), virtual_size: self.size, ..ImageInfo::default() }
    }

    /// Every guest byte sits at its own offset in the file.
    fn host_range(&self, offset: u64, len: u64) -> Option<(&ImageFile, u64)> {
        range_end(offset, len, self.size).ok()?;
        Some((self.file.host_file()?, offset))
    }
}

/// A raw image being written to a file: sparse, any order.
#[derive(Debug)]
pub struct RawWriter {
    file: ImageFile,
    size: u64,
    /// Writing over an existing file or device (`-n`): it is not zero to begin with.
    in_place: bool,
    /// `--target-is-zero`: the existing target reads as zeros after all.
    target_is_zero: bool,
}

impl BlockWrite for RawWriter {
    fn size(&self) -> u64 {
        self.size
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        for_each_plain(encoded, self.size, |offset, data| self.file.write_all_at(data, offset))
    }

    fn zero_initialized(&self) -> bool {
        !self.in_place || self.target_is_zero
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        range_end(offset, len, self.size)?;
        if self.in_place { self.file.write_zeroes(offset, len) } else { self.file.punch_hole(offset, len) }
    }

    fn copy_range(&self, from: &ImageFile, from_offset: u64, offset: u64, len: u64) -> Result<bool> {
        range_end(offset, len, self.size)?;
        self.file.copy_range(from, from_offset, offset, len)
    }

    /// Nothing left to write: the data is in place and holes are holes. Written in
    /// place, nothing else will sync it, so this does.
    fn finish(self: Box<Self>) -> Result<()> {
        if self.in_place { self.file.sync() } else { Ok(()) }
    }
}

/// Calls `f` for each stretch of guest bytes in `encoded`, each inside the disk.
fn for_each_plain(encoded: Encoded, size: u64, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    encoded.for_each_plain("raw", |offset, data| {
        range_end(offset, u64_from_usize(data.len()), size)?;
        f(offset, data)
    })
}

/// Raw bytes to a stream (a pipe, standard output), strictly front to back.
pub struct RawStream {
    inner: Mutex<StreamState>,
    size: u64,
}

struct StreamState {
    out: Box<dyn Write + Send>,
    pos: u64,
}

impl std::fmt::Debug for RawStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawStream").field("size", &self.size).finish_non_exhaustive()
    }
}

/// Zeros written per call when filling a hole in a stream.
const ZERO_FILL: usize = 1 << 20;

impl RawStream {
    /// A stream of a `size`-byte disk into `out`.
    pub fn new(out: Box<dyn Write + Send>, size: u64) -> Self {
        RawStream { inner: Mutex::new(StreamState { out, pos: 0 }), size }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StreamState {
    /// Writes zeros up to `offset`; going backwards is a bug in the caller.
    fn fill_to(&mut self, offset: u64) -> Result<()> {
        if offset < self.pos {
            return Err(Error::argument(format!(
                "stream output needs sequential writes: {offset:#x} after {:#x}",
                self.pos
            )));
        }
        let zeros = vec![0u8; ZERO_FILL.min(usize::try_from(offset - self.pos).unwrap_or(ZERO_FILL))];
        while self.pos < offset {
            let n = zeros.len().min(usize::try_from(offset - self.pos).unwrap_or(usize::MAX));
            self.write(&zeros[..n])?;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data).map_err(|e| Error::io("cannot write to the output stream", e))?;
        self.pos += u64_from_usize(data.len());
        Ok(())
    }
}

impl BlockWrite for RawStream {
    fn size(&self) -> u64 {
        self.size
    }

    fn order(&self) -> WriteOrder {
        WriteOrder::Sequential
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        let mut s = self.lock();
        for_each_plain(encoded, self.size, |offset, data| {
            s.fill_to(offset)?;
            s.write(data)
        })
    }

    /// Holes are filled when the next data (or the end) comes.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        range_end(offset, len, self.size).map(|_| ())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let mut s = self.lock();
        s.fill_to(self.size)?;
        s.out.flush().map_err(|e| Error::io("cannot flush the output stream", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_block::copy::{CopyOptions, copy};
    use diskcast_block::progress::NoProgress;
    use std::os::unix::fs::FileExt;

    fn sparse_source(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("src.raw");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len((16 << 20) + 123).unwrap();
        f.write_all_at(&[0xab; 5000], 1 << 20).unwrap();
        f.write_all_at(&[0xcd; 100], 16 << 20).unwrap();
        p
    }

    #[test]
    fn extents_follow_holes() {
        let dir = tempfile::tempdir().unwrap();
        let r = RawReader::open(&sparse_source(dir.path())).unwrap();
        let first = r.extent_at(0, u64::MAX).unwrap();
        assert_eq!(first.alloc, Alloc::Zero);
        assert_eq!(r.map_extent(0, u64::MAX).unwrap().host, Some(0), "a hole has its place too, as qemu maps it");
        assert!(first.len <= 1 << 20);
        let data = r.extent_at(1 << 20, u64::MAX).unwrap();
        assert_eq!(data.alloc, Alloc::Data);
        let e = r.read_at(&mut [0u8; 2], r.size() - 1).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds);
    }

    #[test]
    fn copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = sparse_source(dir.path());
        let src = RawReader::open(&src_path).unwrap();
        let out = OutputFiles::new();
        let dst_path = dir.path().join("dst.raw");
        let dst = RawDriver.create(&dst_path, src.size(), &CreateOptions::default(), &out).unwrap();
        let stats = copy(&src, dst.as_ref(), &CopyOptions::new(3), &NoProgress).unwrap();
        dst.finish().unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&src_path).unwrap(), std::fs::read(&dst_path).unwrap());
        assert!(stats.read < 1 << 20, "read {} bytes of a mostly empty disk", stats.read);
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dst_path).unwrap());
        assert!(blocks * 512 < 1 << 20, "output is not sparse: {} bytes", blocks * 512);
    }

    #[test]
    fn stream_fills_holes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = sparse_source(dir.path());
        let src = RawReader::open(&src_path).unwrap();
        let sink = std::fs::File::create(dir.path().join("stream.raw")).unwrap();
        let dst = RawStream::new(Box::new(sink), src.size());
        copy(&src, &dst, &CopyOptions { chunk_size: 64 << 10, ..CopyOptions::new(4) }, &NoProgress).unwrap();
        Box::new(dst).finish().unwrap();
        assert_eq!(std::fs::read(&src_path).unwrap(), std::fs::read(dir.path().join("stream.raw")).unwrap());
    }
}
