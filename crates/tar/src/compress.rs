//! Which compression wraps a tar, by magic; the one decompression cap every compressed
//! tree source obeys (a `.tar.gz`/`.tar.zst` file, an OCI layer); and a stream source
//! over a file opened once that decompresses it (or a byte range of it) again each time
//! a sink reads it.

use diskcast_block::io::ImageFile;
use diskcast_block::source::{DataDisk, RangeReader, Source};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::StreamSource;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
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
/// inside an outer archive). The file is opened once, by [`FileStream::open`] or
/// [`FileStream::range`], and every later read goes through that descriptor (by
/// position, so readers share it): a file put at the same name meanwhile is never read.
/// Each [`open`](StreamSource::open) decompresses again, so the tree holds no
/// decompressed copy. A compressed one decompresses to at most [`Limits::layer_cap`] of
/// its compressed size (default [`Limits`]; [`FileStream::with_limits`] sets others).
#[derive(Debug, Clone)]
pub struct FileStream {
    file: Arc<ImageFile>,
    /// The file read at any offset (see [`StreamSource::random_access`]) when it is a
    /// whole uncompressed file.
    plain: Option<Arc<dyn BlockRead>>,
    start: u64,
    /// Compressed bytes (the range, or the file from `start` as it was when opened).
    compressed: u64,
    compression: Compression,
    /// Most bytes one [`open`](StreamSource::open) may decompress to.
    cap: u64,
}

impl FileStream {
    /// The whole file at `path`, compression recognised from its magic.
    pub fn open(path: &Path) -> Result<FileStream> {
        Self::range(path, 0, None)
    }

    /// `len` bytes (to the end when `None`) at `start` of the file at `path`,
    /// compression recognised from their magic.
    pub fn range(path: &Path, start: u64, len: Option<u64>) -> Result<FileStream> {
        let file = Arc::new(ImageFile::open(path)?);
        let size = file.len()?;
        let compressed = match len {
            Some(l) => l,
            None => size.saturating_sub(start),
        };
        let mut s = FileStream { file, plain: None, start, compressed, compression: Compression::None, cap: 0 };
        s = s.with_limits(&Limits::default());
        let mut head = [0u8; 8];
        let n = read_full(&mut s.raw(), &mut head).map_err(|e| from_io(e, "the file").with_file(path))?;
        s.compression = Compression::detect(&head[..n]).map_err(|e| e.with_file(path))?;
        if s.compression == Compression::None && start == 0 && len.is_none() {
            let src: Source = s.file.clone();
            s.plain = Some(Arc::new(DataDisk::new(src, "tar")?));
        }
        Ok(s)
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
        self.file.path()
    }

    /// Another descriptor of the file opened (not of its name): for a reader that
    /// seeks, such as [`crate::TarReader::from_file`].
    pub fn file(&self) -> Result<File> {
        self.file
            .file()
            .try_clone()
            .map_err(|e| Error::io("cannot duplicate the descriptor of", e).with_file(self.path()))
    }

    /// The raw (still compressed) bytes.
    fn raw(&self) -> RangeReader {
        RangeReader::new(self.file.clone(), self.start, self.compressed)
    }
}

/// The read buffer of a tar file's stream, as an OCI layer's (crates/oci `LayerStream`).
const STREAM_BUFFER: usize = 256 * 1024;

impl StreamSource for FileStream {
    fn name(&self) -> String {
        match self.start {
            0 => self.path().display().to_string(),
            s => format!("{} at offset {s}", self.path().display()),
        }
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        // Buffered whether compressed or not: readers of the stream take each member's
        // bytes, its padding and the next header as separate small reads (three syscalls
        // a member, 127 000 for /usr/share's tar, unbuffered); reads as large as the
        // buffer still go straight to the file.
        let raw = BufReader::with_capacity(STREAM_BUFFER, self.raw());
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
