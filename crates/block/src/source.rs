//! Where an image's bytes come from: a file, memory, a range of another source, or a range
//! of a virtual disk.
//!
//! Drivers open images from a [`ByteSource`], not a path, so an image can be read from
//! inside a partition, an ISO or tar member, or a container layer, and every parser can be
//! fuzzed in memory. Only a source that is a file on disk ([`ByteSource::file_path`]) has
//! a directory in which files it names (backing files, VMDK extents) may be looked up, and
//! only it can be written to (replaying a VHDX log); any other source refuses both.

use crate::io::ImageFile;
use crate::{BlockRead, Error, Result, range_end};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A source shared by a reader and whoever opened it.
pub type Source = Arc<dyn ByteSource>;

/// Bytes read by position, from many threads at once (all methods take `&self`).
pub trait ByteSource: Send + Sync + std::fmt::Debug {
    /// What errors name: the file's path, or a description such as
    /// `disk.qcow2 partition 2` or `layer.tar:disk.vmdk`.
    fn name(&self) -> &Path;

    /// Length in bytes.
    fn len(&self) -> Result<u64>;

    /// True when the source holds no bytes.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; running past the end is an
    /// [`crate::ErrorKind::OutOfBounds`] error naming the source and offset.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The first offset at or after `offset` that may hold data (`None`: only a hole
    /// follows). Sources that cannot tell call everything data.
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        Ok((offset < self.len()?).then_some(offset))
    }

    /// The first hole at or after `offset` (the end counts as a hole).
    fn next_hole(&self, _offset: u64) -> Result<u64> {
        self.len()
    }

    /// The file on disk this source is, when it is one: files the image names are looked
    /// up beside it, and a replayed log is written into it. `None` for memory and for
    /// ranges (a partition, a member), which therefore refuse backing and extent files.
    fn file_path(&self) -> Option<&Path> {
        None
    }

    /// For a source that is not a file but has a place of its own where files it names
    /// live (an image on an HTTP server), the file `name` opened there (a backing file
    /// resolved against the image's URL); `None` for every other source.
    fn open_relative(&self, _name: &str) -> Option<Result<Source>> {
        None
    }

    /// The local file whose bytes this source is, offset for offset, for copy offloading
    /// (`convert -C`); `None` for memory, ranges and remote sources.
    fn host_file(&self) -> Option<&ImageFile> {
        None
    }
}

/// A `Refused` error for an image that names another file but is not itself a file on
/// disk, so there is no directory to look that file up in.
pub fn refuse_referenced(src: &dyn ByteSource, what: &str, name: &str, field: &'static str) -> Error {
    Error::refused(format!(
        "the image names {what} {name:?}, but it is not read from a file on disk, so there is no \
         directory to look for it in"
    ))
    .with_field(field)
    .with_file(src.name())
}

/// Opens the file at `path` read-only as a source.
pub fn open_file(path: &Path) -> Result<Source> {
    Ok(Arc::new(ImageFile::open(path)?))
}

impl ByteSource for ImageFile {
    fn name(&self) -> &Path {
        self.path()
    }
    fn len(&self) -> Result<u64> {
        ImageFile::len(self)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        ImageFile::read_exact_at(self, buf, offset)
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        ImageFile::next_data(self, offset)
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        ImageFile::next_hole(self, offset)
    }
    fn file_path(&self) -> Option<&Path> {
        Some(self.path())
    }
    fn host_file(&self) -> Option<&ImageFile> {
        Some(self)
    }
}

/// The error for a read of `len` bytes at `offset` that runs past a `size`-byte source.
fn past_end(name: &Path, len: usize, offset: u64, size: u64) -> Error {
    Error::out_of_bounds(format!("read of {len} bytes runs past the end of the {size}-byte source"))
        .with_offset(offset)
        .with_file(name)
}

/// A read of `len` bytes at `offset` must end inside a source of `size` bytes.
fn check_read(name: &Path, len: usize, offset: u64, size: u64) -> Result<()> {
    match offset.checked_add(u64_from_usize(len)) {
        Some(end) if end <= size => Ok(()),
        _ => Err(past_end(name, len, offset, size)),
    }
}

/// Bytes held in memory (a fuzzer's mutant, a small member read whole).
#[derive(Debug, Clone)]
pub struct MemSource {
    name: PathBuf,
    data: Arc<[u8]>,
}

impl MemSource {
    /// `data`, named `name` in errors.
    pub fn new(name: impl Into<PathBuf>, data: impl Into<Arc<[u8]>>) -> Self {
        MemSource { name: name.into(), data: data.into() }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

impl ByteSource for MemSource {
    fn name(&self) -> &Path {
        &self.name
    }
    fn len(&self) -> Result<u64> {
        Ok(u64_from_usize(self.data.len()))
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = u64_from_usize(self.data.len());
        let end = offset.checked_add(u64_from_usize(buf.len())).filter(|&e| e <= size);
        match end {
            // Both fit in usize: they are at most the length of an in-memory slice.
            Some(end) => {
                buf.copy_from_slice(&self.data[usize_from_u64(offset, "offset")?..usize_from_u64(end, "offset")?]);
                Ok(())
            }
            None => Err(past_end(&self.name, buf.len(), offset, size)),
        }
    }
}

/// The bytes `[start, start + len)` of another source: a partition of a raw disk file, a
/// member of a tar or ISO file stored in one piece.
#[derive(Debug)]
pub struct SliceSource {
    name: PathBuf,
    inner: Source,
    start: u64,
    len: u64,
}

impl SliceSource {
    /// The range `[start, start + len)` of `inner`, named `name` in errors (for example
    /// `disk.raw partition 2`). The range must lie inside `inner`.
    pub fn new(name: impl Into<PathBuf>, inner: Source, start: u64, len: u64) -> Result<Self> {
        let name = name.into();
        let inner_len = inner.len()?;
        if start.checked_add(len).is_none_or(|e| e > inner_len) {
            return Err(Error::out_of_bounds(format!(
                "range of {len} bytes at {start:#x} runs past the end of the {inner_len}-byte {}",
                inner.name().display()
            ))
            .with_offset(start)
            .with_file(&name));
        }
        Ok(SliceSource { name, inner, start, len })
    }
}

impl ByteSource for SliceSource {
    fn name(&self) -> &Path {
        &self.name
    }
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(&self.name, buf.len(), offset, self.len)?;
        // In range of `inner`: `new` checked that `start + len` fits.
        self.inner.read_exact_at(buf, self.start + offset).map_err(|e| e.with_offset(offset).with_file(&self.name))
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        if offset >= self.len {
            return Ok(None);
        }
        Ok(self.inner.next_data(self.start + offset)?.map(|d| d - self.start).filter(|&d| d < self.len))
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        if offset >= self.len {
            return Ok(self.len);
        }
        Ok((self.inner.next_hole(self.start + offset)? - self.start).min(self.len))
    }
}

/// The guest bytes `[start, start + len)` of a virtual disk: an image inside a partition
/// or a file of another image (a qcow2 inside a partition of a VMDK). Ranges the disk
/// maps as reading zero count as holes.
#[derive(Debug)]
pub struct DiskSource {
    name: PathBuf,
    disk: Arc<dyn BlockRead>,
    start: u64,
    len: u64,
}

impl DiskSource {
    /// The guest range `[start, start + len)` of `disk`, named `name` in errors.
    pub fn new(name: impl Into<PathBuf>, disk: Arc<dyn BlockRead>, start: u64, len: u64) -> Result<Self> {
        let name = name.into();
        range_end(start, len, disk.size()).map_err(|e| e.with_file(&name))?;
        Ok(DiskSource { name, disk, start, len })
    }

    /// The whole disk.
    pub fn whole(name: impl Into<PathBuf>, disk: Arc<dyn BlockRead>) -> Self {
        let len = disk.size();
        DiskSource { name: name.into(), disk, start: 0, len }
    }

    /// The first offset at or after `offset` whose zero-ness is `want_zero` (or the end).
    fn next_where(&self, mut offset: u64, want_zero: bool) -> Result<u64> {
        while offset < self.len {
            let e = self.disk.extent_at(self.start + offset, self.len - offset)?;
            if e.alloc.reads_zero() == want_zero {
                return Ok(offset);
            }
            offset = e.end() - self.start;
        }
        Ok(self.len)
    }
}

impl ByteSource for DiskSource {
    fn name(&self) -> &Path {
        &self.name
    }
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_read(&self.name, buf.len(), offset, self.len)?;
        self.disk.read_at(buf, self.start + offset).map_err(|e| e.with_offset(offset).with_file(&self.name))
    }
    fn next_data(&self, offset: u64) -> Result<Option<u64>> {
        let at = self.next_where(offset, false).map_err(|e| e.with_file(&self.name))?;
        Ok((at < self.len).then_some(at))
    }
    fn next_hole(&self, offset: u64) -> Result<u64> {
        self.next_where(offset, true).map_err(|e| e.with_file(&self.name))
    }
}

/// Reads `[start, end)` of a source front to back: a blob or a member read as a stream,
/// through the one descriptor the source holds (many readers share it: reads are by
/// position). A source that shrank meanwhile fails the read instead of ending early.
#[derive(Debug)]
pub struct RangeReader {
    src: Source,
    pos: u64,
    end: u64,
}

impl RangeReader {
    /// The `len` bytes at `start` of `src`.
    pub fn new(src: Source, start: u64, len: u64) -> Self {
        RangeReader { src, pos: start, end: start.saturating_add(len) }
    }
}

impl std::io::Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = diskcast_layout::within(self.end - self.pos, buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(&mut buf[..n], self.pos).map_err(std::io::Error::other)?;
        self.pos += u64_from_usize(n);
        Ok(n)
    }
}

/// A source read as a disk of its length whose every byte is data: the file of a tar or
/// an archive whose members are ranges of it (a member's holes come from its sparse
/// header, never from the file's own), so reading a member asks nothing about holes.
/// The size is fixed when made: a file that shrinks later fails the reads past its end.
#[derive(Debug)]
pub struct DataDisk {
    src: Source,
    size: u64,
    format: &'static str,
}

impl DataDisk {
    /// `src` as a disk, described as `format` (`tar`).
    pub fn new(src: Source, format: &'static str) -> Result<Self> {
        Ok(DataDisk { size: src.len()?, src, format })
    }
}

impl BlockRead for DataDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.size)?;
        self.src.read_exact_at(buf, offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<crate::Extent> {
        range_end(offset, 1, self.size)?;
        Ok(crate::Extent { offset, len: max_len.min(self.size - offset).max(1), alloc: crate::Alloc::Data })
    }

    fn info(&self) -> crate::ImageInfo {
        crate::ImageInfo { format: self.format.into(), virtual_size: self.size, ..crate::ImageInfo::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Alloc, ErrorKind, Extent, ImageInfo};

    #[test]
    fn memory_reads_and_refuses_past_the_end() {
        let m = MemSource::new("mem", vec![1u8, 2, 3, 4, 5]);
        let mut b = [0u8; 2];
        m.read_exact_at(&mut b, 3).unwrap();
        assert_eq!(b, [4, 5]);
        for off in [4, u64::MAX] {
            let e = m.read_exact_at(&mut b, off).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OutOfBounds);
            assert_eq!(e.offset(), Some(off));
            assert_eq!(e.file(), Some(Path::new("mem")));
        }
        assert_eq!(m.next_data(0).unwrap(), Some(0));
        assert_eq!(m.next_data(5).unwrap(), None);
        assert_eq!(m.next_hole(1).unwrap(), 5);
        assert!(m.file_path().is_none());
    }

    #[test]
    fn a_range_reader_reads_its_range_and_fails_on_a_shrunk_source() {
        use std::io::Read;
        let m: Source = Arc::new(MemSource::new("mem", (0u8..100).collect::<Vec<_>>()));
        let mut v = Vec::new();
        RangeReader::new(m.clone(), 90, 10).read_to_end(&mut v).unwrap();
        assert_eq!(v, (90u8..100).collect::<Vec<_>>());
        // A range claiming more than the source holds is an error, not a short read.
        let e = RangeReader::new(m.clone(), 95, 10).read_to_end(&mut Vec::new()).unwrap_err();
        let inner = e.into_inner().unwrap().downcast::<Error>().unwrap();
        assert_eq!(inner.kind(), ErrorKind::OutOfBounds);
        let d = DataDisk::new(m, "tar").unwrap();
        assert_eq!(d.size(), 100);
        let x = d.extent_at(40, 1000).unwrap();
        assert_eq!((x.offset, x.len, x.alloc), (40, 60, Alloc::Data));
        assert_eq!(d.read_at(&mut [0u8; 2], 99).unwrap_err().kind(), ErrorKind::OutOfBounds);
        assert_eq!(d.info().format, "tar");
    }

    #[test]
    fn a_slice_is_its_own_range_and_names_itself() {
        let m: Source = Arc::new(MemSource::new("disk", (0u8..100).collect::<Vec<_>>()));
        let s = SliceSource::new("disk partition 1", m.clone(), 10, 20).unwrap();
        let mut b = [0u8; 3];
        s.read_exact_at(&mut b, 17).unwrap();
        assert_eq!(b, [27, 28, 29]);
        let e = s.read_exact_at(&mut b, 18).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert_eq!(e.file(), Some(Path::new("disk partition 1")));
        assert_eq!(s.next_hole(0).unwrap(), 20);
        assert_eq!(s.next_data(20).unwrap(), None);
        let e = SliceSource::new("bad", m, 90, 11).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    }

    #[test]
    fn a_slice_of_a_sparse_file_keeps_its_holes() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[7u8; 4096], 4 << 20).unwrap();
        let file = open_file(&p).unwrap();
        assert_eq!(file.file_path(), Some(p.as_path()));
        let s = SliceSource::new("part", file, 1 << 20, 6 << 20).unwrap();
        let d = s.next_data(0).unwrap().unwrap();
        assert!(d <= 3 << 20, "{d}");
        assert!(s.next_hole(3 << 20).unwrap() > 3 << 20);
        assert_eq!(s.next_data((3 << 20) + (1 << 20)).unwrap(), None);
        assert!(s.file_path().is_none(), "a range of a file has no directory of its own");
    }

    /// A 4-unit disk of 16-byte units: data, zero, data, unallocated.
    #[derive(Debug)]
    struct Units;
    impl BlockRead for Units {
        fn size(&self) -> u64 {
            64
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            range_end(offset, buf.len() as u64, 64)?;
            for (i, b) in buf.iter_mut().enumerate() {
                let at = offset + i as u64;
                *b = if matches!(at / 16, 0 | 2) { at as u8 } else { 0 };
            }
            Ok(())
        }
        fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
            range_end(offset, 1, 64)?;
            let alloc = [Alloc::Data, Alloc::Zero, Alloc::Data, Alloc::Unallocated][(offset / 16) as usize];
            let len = (16 - offset % 16).min(max_len).min(64 - offset);
            Ok(Extent { offset, len, alloc })
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    #[test]
    fn a_disk_range_reads_guest_bytes_and_maps_zeros_as_holes() {
        let s = DiskSource::new("img partition 1", Arc::new(Units), 8, 48).unwrap();
        let mut b = [0u8; 4];
        s.read_exact_at(&mut b, 22).unwrap();
        assert_eq!(b, [0, 0, 32, 33], "guest bytes 30..34: the end of the zero unit, then data");
        assert_eq!(s.next_data(0).unwrap(), Some(0));
        assert_eq!(s.next_hole(0).unwrap(), 8);
        assert_eq!(s.next_data(8).unwrap(), Some(24));
        assert_eq!(s.next_hole(24).unwrap(), 40);
        assert_eq!(s.next_data(40).unwrap(), None);
        let e = s.read_exact_at(&mut b, 46).unwrap_err();
        assert_eq!(e.file(), Some(Path::new("img partition 1")));
        let e = DiskSource::new("x", Arc::new(Units), 60, 5).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::OutOfBounds, "{e}");
        assert!(e.to_string().contains("past the disk's end"), "{e}");
    }
}
