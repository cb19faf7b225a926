//! File content as a reference into its source, read only when a sink needs the bytes.

use crate::{u64_len, within};
use diskcast_block::io::ImageFile;
use diskcast_block::{BlockRead, Error, Result, range_end};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// A regular file of the host, read when a sink needs its bytes. A file of a scanned
/// directory is opened again beneath that directory's descriptor (`openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`), never by a path, and must
/// still be the file scanned (device, inode, size): a file swapped for a symlink or for
/// another file after the scan is an error naming it, never other bytes in the output.
#[derive(Debug, Clone)]
pub struct HostFile {
    origin: Origin,
    name: Arc<Path>,
    dev: u64,
    ino: u64,
    size: u64,
}

#[derive(Debug, Clone)]
enum Origin {
    /// `rel` beneath the scanned directory `root`.
    Beneath { root: Arc<OwnedFd>, rel: Arc<[u8]> },
    /// A file diskcast holds open (a temporary file it wrote, a file the user named).
    Open(Arc<std::fs::File>),
}

impl HostFile {
    /// The file `rel` beneath the directory open as `root`, as a scan found it; `name`
    /// is what messages call it.
    pub fn beneath(root: Arc<OwnedFd>, rel: &[u8], name: &Path, dev: u64, ino: u64, size: u64) -> Self {
        HostFile { origin: Origin::Beneath { root, rel: rel.into() }, name: name.into(), dev, ino, size }
    }

    /// A regular file diskcast holds open (a temporary layer file, an unnamed
    /// `O_TMPFILE` file); `name` is what messages call it.
    pub fn from_file(file: std::fs::File, name: &Path) -> Result<Self> {
        let st = rustix::fs::fstat(&file).map_err(|e| Error::io("cannot stat", e.into()).with_file(name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::argument("not a regular file").with_file(name));
        }
        let size = u64::try_from(st.st_size).map_err(|_| Error::corrupt("negative file size").with_file(name))?;
        Ok(HostFile { origin: Origin::Open(Arc::new(file)), name: name.into(), dev: st.st_dev, ino: st.st_ino, size })
    }

    /// Opens the regular file the user named at `path` now, and keeps it open.
    pub fn open_path(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
        Self::from_file(f, path)
    }

    /// What messages call the file.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Its size when scanned (or opened).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Opens the file for reading and checks it is still the one scanned.
    pub fn open(&self) -> Result<ImageFile> {
        let changed =
            |why: &str| Error::refused(format!("changed since it was scanned ({why})")).with_file(&*self.name);
        let file = match &self.origin {
            Origin::Open(f) => f.try_clone().map_err(|e| Error::io("cannot open", e).with_file(&*self.name))?,
            Origin::Beneath { root, rel } => {
                // O_PATH first: nothing but a regular file is ever opened for reading (an
                // open device can rewind a tape; a fifo would block).
                let how = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
                let path = rustix::fs::openat2(root.as_fd(), &rel[..], how, Mode::empty(), resolve).map_err(|e| {
                    use rustix::io::Errno;
                    match e {
                        Errno::LOOP => changed("a symbolic link is on its path"),
                        Errno::NOENT | Errno::NOTDIR => changed("it is gone"),
                        e => Error::io("cannot open", e.into()).with_file(&*self.name),
                    }
                })?;
                self.check(&path, &changed)?;
                let reopen = format!("/proc/self/fd/{}", path.as_raw_fd());
                let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
                let fd = rustix::fs::open(reopen.as_str(), flags, Mode::empty())
                    .or_else(|_| {
                        // No /proc: open beneath the root again (checked once more below).
                        let how = flags | OFlags::NOFOLLOW;
                        rustix::fs::openat2(root.as_fd(), &rel[..], how, Mode::empty(), resolve)
                    })
                    .map_err(|e| Error::io("cannot open", e.into()).with_file(&*self.name))?;
                std::fs::File::from(fd)
            }
        };
        self.check(&file, &changed)?;
        Ok(ImageFile::from_file(file, &self.name))
    }

    fn check(&self, fd: impl AsFd, changed: &dyn Fn(&str) -> Error) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::io("cannot stat", e.into()).with_file(&*self.name))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(changed("no longer a regular file"));
        }
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) {
            return Err(changed("another file has its name"));
        }
        if u64::try_from(st.st_size).ok() != Some(self.size) {
            return Err(changed(&format!("{} bytes, {} when scanned", st.st_size, self.size)));
        }
        Ok(())
    }
}

/// A stream that can only be read front to back, such as a decompressed container layer:
/// files inside it are [`Content::Stream`] offsets, and sinks that care about speed read
/// each stream once, in offset order.
pub trait StreamSource: Send + Sync + std::fmt::Debug {
    /// What to call it in messages (`layer sha256:4f5c…`).
    fn name(&self) -> String;
    /// A fresh reader positioned at byte 0 of the (decompressed) stream.
    fn open(&self) -> Result<Box<dyn Read + Send>>;
    /// The stream's bytes readable at any offset, where they are stored as they are (an
    /// uncompressed tar file): a reader then makes each file a range of it
    /// ([`Content::Blocks`]), which sinks read in any order and on every thread rather
    /// than front to back on one. `None` (the default): front to back only.
    fn random_access(&self) -> Option<Arc<dyn BlockRead>> {
        None
    }
}

/// File content with its own positional reader (zisofs-compressed ISO files, FAT cluster
/// chains): for anything that is not a plain list of extents.
pub trait ContentRead: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with the file's bytes at `offset` (the caller keeps within the size).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// The `(offset, len)` ranges that may hold non-zero bytes, in order; the rest are
    /// holes. Default: all of it.
    fn data_ranges(&self, size: u64) -> Result<Vec<(u64, u64)>> {
        Ok(if size == 0 { Vec::new() } else { vec![(0, size)] })
    }
}

/// `len` bytes of a file at `file_offset` stored at `source_offset` of a [`BlockRead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Where the run starts in the file.
    pub file_offset: u64,
    /// Where it starts in the source disk.
    pub source_offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// Where a regular file's bytes are. Ranges no reference covers read as zeros (holes).
#[derive(Debug, Clone)]
pub enum Content {
    /// All zeros: an empty or entirely sparse file.
    Zero,
    /// Bytes held in memory: small or generated files (fstab, loader entries).
    Inline(Arc<[u8]>),
    /// A file of a host directory (or one diskcast holds open), opened when read and
    /// checked to be the file scanned.
    Host(HostFile),
    /// Runs of bytes of a virtual disk (a file of an ISO, ext4 or FAT filesystem); gaps
    /// between extents are holes. Extents are sorted and never overlap.
    Blocks {
        /// The disk (or partition) the filesystem lives on.
        source: Arc<dyn BlockRead>,
        /// Where the file's runs are.
        extents: Arc<[FileExtent]>,
    },
    /// The bytes at `offset` of a front-to-back stream (a tar member in a layer).
    Stream {
        /// The stream.
        stream: Arc<dyn StreamSource>,
        /// Where the file's first byte is in the stream.
        offset: u64,
    },
    /// Anything else that can read at an offset.
    Reader(Arc<dyn ContentRead>),
}

/// A regular file: its size and where its bytes are.
#[derive(Debug, Clone)]
pub struct FileData {
    /// Size in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub content: Content,
}

impl FileData {
    /// A file of `bytes`.
    pub fn inline(bytes: Vec<u8>) -> Self {
        FileData { size: u64_len(&bytes), content: Content::Inline(bytes.into()) }
    }

    /// A host file, of the size it had when scanned.
    pub fn host(file: HostFile) -> Self {
        FileData { size: file.size(), content: Content::Host(file) }
    }

    /// A file of `size` bytes made of `extents` of `source`. The extents are checked:
    /// sorted, not overlapping, inside the file and inside the source, so a hostile
    /// filesystem cannot make a read run past its disk.
    pub fn blocks(size: u64, source: Arc<dyn BlockRead>, extents: Vec<FileExtent>) -> Result<Self> {
        let mut end = 0u64;
        for e in &extents {
            if e.file_offset < end {
                return Err(Error::corrupt("file extents overlap or are out of order").with_offset(e.file_offset));
            }
            end = range_end(e.file_offset, e.len, size)
                .map_err(|_| Error::corrupt("file extent runs past the file's size").with_offset(e.file_offset))?;
            range_end(e.source_offset, e.len, source.size()).map_err(|_| {
                Error::out_of_bounds("file extent runs past the end of the disk").with_offset(e.source_offset)
            })?;
        }
        Ok(FileData { size, content: Content::Blocks { source, extents: extents.into() } })
    }

    /// Fills `buf` with the file's bytes at `offset`. Holes read as zeros. A
    /// [`Content::Stream`] is read from its start (slow for random access: sinks that read
    /// a whole tree group files by stream instead).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_len(buf), self.size)?;
        match &self.content {
            Content::Zero => buf.fill(0),
            Content::Inline(bytes) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let n = (bytes.len() - start).min(buf.len());
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                buf[n..].fill(0);
            }
            Content::Host(h) => read_host(h, buf, offset)?,
            Content::Blocks { source, extents } => {
                let end = offset + u64_len(buf);
                let n = buf.len();
                // Only the gaps between extents are zeroed: most reads are one extent.
                let mut done = 0;
                let first = extents.partition_point(|e| e.file_offset + e.len <= offset);
                for e in extents[first..].iter().take_while(|e| e.file_offset < end) {
                    let lo = e.file_offset.max(offset);
                    let hi = (e.file_offset + e.len).min(end);
                    let (a, b) = (within(lo - offset, n), within(hi - offset, n));
                    buf[done.min(a)..a].fill(0);
                    source.read_at(&mut buf[a..b], e.source_offset + (lo - e.file_offset))?;
                    done = done.max(b);
                }
                buf[done..].fill(0);
            }
            Content::Stream { stream, offset: start } => {
                let mut r = stream.open()?;
                skip(&mut r, start + offset, stream.as_ref())?;
                r.read_exact(buf).map_err(|e| stream_error(stream.as_ref(), e))?;
            }
            Content::Reader(r) => r.read_at(buf, offset)?,
        }
        Ok(())
    }

    /// A reader of the whole file, front to back. For a [`Content::Stream`] this opens the
    /// stream and skips to the file, so reading each file of a stream this way costs a
    /// pass over what comes before it.
    pub fn reader(&self) -> Result<Box<dyn Read + Send + '_>> {
        match &self.content {
            Content::Stream { stream, offset } => {
                let mut r = stream.open()?;
                skip(&mut r, *offset, stream.as_ref())?;
                Ok(Box::new(StrictTake { inner: r, left: self.size, stream: stream.clone() }))
            }
            _ => Ok(Box::new(Positional { file: self, pos: 0 })),
        }
    }

    /// The `(offset, len)` ranges that may hold non-zero bytes, in order; everything else
    /// is a hole that sinks can leave sparse.
    pub fn data_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let whole = if self.size == 0 { Vec::new() } else { vec![(0, self.size)] };
        match &self.content {
            Content::Zero => Ok(Vec::new()),
            Content::Inline(b) => Ok(if b.is_empty() { Vec::new() } else { vec![(0, u64_len(b).min(self.size))] }),
            Content::Host(h) => host_data_ranges(&h.open()?, self.size),
            Content::Blocks { extents, .. } => {
                let mut out: Vec<(u64, u64)> = Vec::with_capacity(extents.len());
                for e in extents.iter().filter(|e| e.len > 0) {
                    match out.last_mut() {
                        Some((o, l)) if *o + *l == e.file_offset => *l += e.len,
                        _ => out.push((e.file_offset, e.len)),
                    }
                }
                Ok(out)
            }
            Content::Stream { .. } => Ok(whole),
            Content::Reader(r) => r.data_ranges(self.size),
        }
    }
}

fn read_host(h: &HostFile, buf: &mut [u8], offset: u64) -> Result<()> {
    let f = h.open()?;
    f.read_exact_at(buf, offset).map_err(|e| {
        Error::new(e.kind(), format!("{} (did the file change while it was being read?)", e.message()))
            .with_file(h.name())
            .with_offset(offset)
    })
}

/// The ranges of an open host file that hold data (SEEK_DATA/SEEK_HOLE), within `size`, as
/// `(offset, len)` in order.
pub fn host_data_ranges(f: &ImageFile, size: u64) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = f.next_data(pos)? else { break };
        if start >= size {
            break;
        }
        let end = f.next_hole(start)?.clamp(start + 1, size);
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}

pub(crate) fn stream_error(stream: &dyn StreamSource, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt(format!("{} ends before a file it holds", stream.name()))
    } else {
        Error::io(format!("cannot read {}", stream.name()), e)
    }
}

pub(crate) fn skip(r: &mut dyn Read, n: u64, stream: &dyn StreamSource) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink()).map_err(|e| stream_error(stream, e))?;
    if copied < n {
        return Err(stream_error(stream, std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Reads a file through [`FileData::read_at`] in chunks.
struct Positional<'a> {
    file: &'a FileData,
    pos: u64,
}

impl Read for Positional<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.file.size - self.pos;
        let n = within(left.min(1 << 20), buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..n], self.pos).map_err(std::io::Error::other)?;
        self.pos += u64_len(&buf[..n]);
        Ok(n)
    }
}

/// `take(left)` that fails if the stream ends early, so a truncated layer is an error and
/// never a short file.
struct StrictTake {
    inner: Box<dyn Read + Send>,
    left: u64,
    stream: Arc<dyn StreamSource>,
}

impl Read for StrictTake {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = within(self.left, buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::other(stream_error(
                self.stream.as_ref(),
                std::io::ErrorKind::UnexpectedEof.into(),
            )));
        }
        self.left -= u64_len(&buf[..n]);
        Ok(n)
    }
}

impl std::fmt::Debug for Positional<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Positional").field("pos", &self.pos).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_block::{Alloc, Extent, ImageInfo};

    #[derive(Debug)]
    struct Mem(Vec<u8>);
    impl BlockRead for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            range_end(offset, buf.len() as u64, self.size())?;
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
            Ok(Extent { offset, len: max_len.min(self.size() - offset), alloc: Alloc::Data })
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    #[derive(Debug)]
    struct Bytes(Vec<u8>);
    impl StreamSource for Bytes {
        fn name(&self) -> String {
            "test stream".into()
        }
        fn open(&self) -> Result<Box<dyn Read + Send>> {
            Ok(Box::new(std::io::Cursor::new(self.0.clone())))
        }
    }

    #[test]
    fn block_extents_read_with_holes_between() {
        let disk: Arc<dyn BlockRead> = Arc::new(Mem((0..=255u8).cycle().take(8192).collect()));
        let ext = vec![
            FileExtent { file_offset: 0, source_offset: 100, len: 4 },
            FileExtent { file_offset: 8, source_offset: 4096, len: 4 },
        ];
        let f = FileData::blocks(16, disk.clone(), ext).unwrap();
        let mut buf = [9u8; 16];
        f.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [100, 101, 102, 103, 0, 0, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0]);
        let mut mid = [9u8; 5];
        f.read_at(&mut mid, 2).unwrap();
        assert_eq!(mid, [102, 103, 0, 0, 0]);
        assert_eq!(f.data_ranges().unwrap(), [(0, 4), (8, 4)]);
        let mut all = Vec::new();
        f.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, buf);
        let e = f.read_at(&mut [0u8; 2], 15).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds, "{e}");
        assert!(e.to_string().contains("past the disk's end"), "{e}");
    }

    #[test]
    fn hostile_extents_are_refused() {
        let disk: Arc<dyn BlockRead> = Arc::new(Mem(vec![0; 4096]));
        let past_disk = vec![FileExtent { file_offset: 0, source_offset: 4000, len: 200 }];
        assert_eq!(
            FileData::blocks(200, disk.clone(), past_disk).unwrap_err().kind(),
            diskcast_block::ErrorKind::OutOfBounds
        );
        let overlap = vec![
            FileExtent { file_offset: 0, source_offset: 0, len: 10 },
            FileExtent { file_offset: 5, source_offset: 0, len: 10 },
        ];
        let e = FileData::blocks(20, disk.clone(), overlap).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("overlap or are out of order"), "{e}");
        let past_size = vec![FileExtent { file_offset: 0, source_offset: 0, len: 10 }];
        let e = FileData::blocks(5, disk, past_size).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("runs past the file's size"), "{e}");
        let wrap = vec![FileExtent { file_offset: u64::MAX, source_offset: 0, len: 2 }];
        let e = FileData::blocks(u64::MAX, Arc::new(Mem(vec![0; 8])), wrap).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("runs past the file's size"), "{e}");
    }

    #[test]
    fn stream_content_reads_and_a_short_stream_is_an_error() {
        let s: Arc<dyn StreamSource> = Arc::new(Bytes(b"headerHELLOtail".to_vec()));
        let f = FileData { size: 5, content: Content::Stream { stream: s.clone(), offset: 6 } };
        let mut all = String::new();
        f.reader().unwrap().read_to_string(&mut all).unwrap();
        assert_eq!(all, "HELLO");
        let mut b = [0u8; 2];
        f.read_at(&mut b, 3).unwrap();
        assert_eq!(&b, b"LO");
        let short = FileData { size: 50, content: Content::Stream { stream: s, offset: 6 } };
        let mut v = Vec::new();
        let e = short.reader().unwrap().read_to_end(&mut v).unwrap_err();
        assert!(e.to_string().contains("ends before"), "{e}");
    }

    #[test]
    fn host_files_report_their_holes() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sparse");
        let file = std::fs::File::create(&p).unwrap();
        file.set_len(16 << 20).unwrap();
        file.write_all_at(b"x", 8 << 20).unwrap();
        let f = FileData::host(HostFile::open_path(&p).unwrap());
        assert_eq!(f.size, 16 << 20);
        let r = f.data_ranges().unwrap();
        assert!(!r.is_empty() && r.iter().map(|x| x.1).sum::<u64>() < 16 << 20, "{r:?}");
        let mut b = [0u8; 1];
        f.read_at(&mut b, 8 << 20).unwrap();
        assert_eq!(&b, b"x");
        assert_eq!(FileData::inline(b"abc".to_vec()).data_ranges().unwrap(), [(0, 3)]);
    }
}
