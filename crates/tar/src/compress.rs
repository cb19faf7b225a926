//! Which compression wraps a tar, by magic; the one decompression cap every compressed
//! tree source obeys (a `.tar.gz`/`.tar.zst` file, an OCI layer); and a stream source
//! that reopens and decompresses a file (or a byte range of one) each time a sink reads
//! it.

use diskcast_block::io::ImageFile;
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result, range_end};
use diskcast_tree::StreamSource;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diskcast_block::decompress::{Limits, MAX_DECOMPRESSED, MAX_RATIO, RATIO_SLACK};

/// `inner` (a decompressor) failing once more than `cap` bytes came out of it, with an
/// [`Error`] of kind `OutOfBounds` naming `what` and the cap. Other errors of the
/// decompressor become `Corrupt` errors naming `what`.
pub fn capped(inner: Box<dyn Read + Send>, cap: u64, what: &str) -> Box<dyn Read + Send> {
    Box::new(Capped { inner, left: cap, cap, what: what.to_string() })
}

/// Fails once more than `cap` bytes came out.
struct Capped {
    inner: Box<dyn Read + Send>,
    left: u64,
    cap: u64,
    what: String,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            if e.get_ref().is_some_and(|i| i.is::<Error>()) {
                e
            } else {
                std::io::Error::other(Error::corrupt(format!("{}: decompression failed: {e}", self.what)))
            }
        })?;
        let n64 = u64::try_from(n).map_err(std::io::Error::other)?;
        if n64 > self.left {
            return Err(std::io::Error::other(Error::out_of_bounds(format!(
                "{} decompresses to more than {} bytes: refused as a decompression bomb (the cap is {MAX_RATIO} \
                 bytes per compressed byte plus {} MiB, at most {MAX_DECOMPRESSED} bytes)",
                self.what,
                self.cap,
                RATIO_SLACK >> 20
            ))));
        }
        self.left -= n64;
        Ok(n)
    }
}

/// Turns an I/O error back into our error: the one a reader of ours (a [`capped`]
/// decompressor, a digest check) wrapped, or a plain I/O error about `what`.
pub fn from_io(e: std::io::Error, what: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let kind = e.kind();
        return match e.into_inner().map(|b| b.downcast::<Error>()) {
            Some(Ok(err)) => *err,
            _ => Error::io(format!("cannot read {what}"), std::io::Error::from(kind)),
        };
    }
    Error::io(format!("cannot read {what}"), e)
}

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members back to back.
    Gzip,
    /// Zstandard, possibly several frames, possibly after skippable frames (pzstd).
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a file. xz, bzip2 and lz4 are
    /// known but unsupported: a clear error instead of "not a tar".
    pub fn detect(head: &[u8]) -> Result<Compression> {
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || is_skippable_frame(head) {
            Compression::Zstd
        } else if head.starts_with(b"\xfd7zXZ\0") {
            return Err(Error::unsupported("xz-compressed tar is not supported (decompress it first: xz -d)"));
        } else if head.starts_with(b"BZh") {
            return Err(Error::unsupported("bzip2-compressed tar is not supported (decompress it first: bunzip2)"));
        } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            return Err(Error::unsupported("lz4-compressed tar is not supported (decompress it first: lz4 -d)"));
        } else {
            Compression::None
        })
    }

    /// Short name for messages (`gzip`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// `input` decompressed (not capped: see [`capped`]).
    pub fn decoder<R: BufRead + Send + 'static>(self, input: R) -> Result<Box<dyn Read + Send>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| Error::io("cannot start a zstd decoder", e))?,
            ),
        })
    }
}

/// The decompressed bytes of a file, or of `len` bytes at `start` of it (a layer blob
/// inside an outer archive). Each [`open`](StreamSource::open) reopens the file, so the
/// tree holds no file handle and no decompressed copy.
/// A compressed one decompresses to at most [`Limits::layer_cap`] of its compressed size
/// (default [`Limits`]; [`FileStream::with_limits`] sets others).
#[derive(Debug, Clone)]
pub struct FileStream {
    path: PathBuf,
    /// The file read at any offset (see [`StreamSource::random_access`]), through a
    /// descriptor the caller opened once: [`FileStream::read_through`].
    plain: Option<Arc<dyn BlockRead>>,
    start: u64,
    len: Option<u64>,
    compression: Compression,
    /// Most bytes one [`open`](StreamSource::open) may decompress to.
    cap: u64,
    /// Compressed bytes (the range, or the file from `start`).
    compressed: u64,
}

impl FileStream {
    /// The whole file at `path`, compression recognised from its magic.
    pub fn open(path: &Path) -> Result<FileStream> {
        Self::range(path, 0, None)
    }

    /// `len` bytes (to the end when `None`) at `start` of the file at `path`,
    /// compression recognised from their magic.
    pub fn range(path: &Path, start: u64, len: Option<u64>) -> Result<FileStream> {
        let compressed = match len {
            Some(l) => l,
            None => std::fs::metadata(path)
                .map_err(|e| Error::io("cannot stat", e).with_file(path))?
                .len()
                .saturating_sub(start),
        };
        let mut s = FileStream {
            path: path.to_path_buf(),
            plain: None,
            start,
            len,
            compression: Compression::None,
            cap: 0,
            compressed,
        };
        s = s.with_limits(&Limits::default());
        let mut head = [0u8; 8];
        let mut r = s.raw()?;
        let n = read_full(&mut r, &mut head).map_err(|e| Error::io("cannot read", e).with_file(path))?;
        s.compression = Compression::detect(&head[..n]).map_err(|e| e.with_file(path))?;
        Ok(s)
    }

    /// The same stream, read at any offset through `file` when it is stored uncompressed
    /// as a whole file (else unchanged). `file` is the caller's descriptor of this
    /// stream's file, the one it reads the headers through, so the bytes read later are
    /// those of the file indexed even if its name is given to another file meanwhile.
    pub fn read_through(mut self, file: &File) -> Result<FileStream> {
        if self.compression == Compression::None && self.start == 0 && self.len.is_none() {
            let dup = file.try_clone().map_err(|e| Error::io("cannot open", e).with_file(&self.path))?;
            let file = ImageFile::from_file(dup, &self.path);
            self.plain = Some(Arc::new(PlainTar { size: file.len()?, file }));
        }
        Ok(self)
    }

    /// The same stream with other decompression bounds.
    pub fn with_limits(mut self, limits: &Limits) -> FileStream {
        self.cap = limits.layer_cap(self.compressed);
        self
    }

    /// The compression found.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw (still compressed) bytes.
    fn raw(&self) -> Result<Box<dyn Read + Send>> {
        let mut f = File::open(&self.path).map_err(|e| Error::io("cannot open", e).with_file(&self.path))?;
        if self.start > 0 {
            f.seek(SeekFrom::Start(self.start)).map_err(|e| Error::io("cannot seek", e).with_file(&self.path))?;
        }
        Ok(match self.len {
            Some(len) => Box::new(f.take(len)),
            None => Box::new(f),
        })
    }
}

/// An uncompressed tar file read at any offset, for its members' bytes: every byte is
/// data (a member is one range of the file; holes come from sparse headers, not the
/// file's own), so no hole search. The tar crate's own, as format crates do not share
/// drivers.
#[derive(Debug)]
struct PlainTar {
    file: ImageFile,
    /// Fixed when opened: a file that shrinks later fails the reads past its new end.
    size: u64,
}

impl BlockRead for PlainTar {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, diskcast_layout::u64_from_usize(buf.len()), self.size)?;
        self.file.read_exact_at(buf, offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        range_end(offset, 1, self.size)?;
        Ok(Extent { offset, len: max_len.min(self.size - offset).max(1), alloc: Alloc::Data })
    }

    fn info(&self) -> ImageInfo {
        ImageInfo { format: "tar".into(), virtual_size: self.size, ..ImageInfo::default() }
    }
}

/// The read buffer of a tar file's stream, as an OCI layer's (crates/oci `LayerStream`).
const STREAM_BUFFER: usize = 256 * 1024;

impl StreamSource for FileStream {
    fn name(&self) -> String {
        match (self.start, self.len) {
            (0, None) => self.path.display().to_string(),
            (s, _) => format!("{} at offset {s}", self.path.display()),
        }
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        // Buffered whether compressed or not: readers of the stream take each member's
        // bytes, its padding and the next header as separate small reads (three syscalls
        // a member, 127 000 for /usr/share's tar, unbuffered); reads as large as the
        // buffer still go straight to the file.
        let raw = BufReader::with_capacity(STREAM_BUFFER, self.raw()?);
        if self.compression == Compression::None {
            return Ok(Box::new(raw));
        }
        let inner = self.compression.decoder(raw)?;
        // The cap's and the decompressor's errors name the file.
        Ok(capped(inner, self.cap, &self.name()))
    }

    fn random_access(&self) -> Option<Arc<dyn BlockRead>> {
        self.plain.clone()
    }
}

/// A zstd skippable frame (RFC 8878 3.1.2: magic 0x184D2A50..=0x184D2A5F, little
/// endian), which pzstd writes before each frame to record its size; the decoder skips
/// it.
fn is_skippable_frame(head: &[u8]) -> bool {
    matches!(head, [m, 0x2a, 0x4d, 0x18, ..] if m & 0xf0 == 0x50)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
