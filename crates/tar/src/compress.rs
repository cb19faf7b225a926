//! Which compression wraps a tar, by magic, and a stream source that reopens and
//! decompresses a file (or a byte range of one) each time a sink reads it.

use diskcast_block::{Error, Result};
use diskcast_tree::StreamSource;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How a tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (RFC 1952), possibly several members back to back.
    Gzip,
    /// Zstandard, possibly several frames.
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a file. xz, bzip2 and lz4 are
    /// known but unsupported: a clear error instead of "not a tar".
    pub fn detect(head: &[u8]) -> Result<Compression> {
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
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

    /// `input` decompressed.
    pub fn decoder(self, input: Box<dyn Read + Send>) -> Result<Box<dyn Read + Send>> {
        Ok(match self {
            Compression::None => input,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, input))),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input).map_err(|e| Error::io("cannot start a zstd decoder", e))?,
            ),
        })
    }
}

/// The decompressed bytes of a file, or of `len` bytes at `start` of it (a layer blob
/// inside an outer archive). Each [`open`](StreamSource::open) reopens the file, so the
/// tree holds no file handle and no decompressed copy.
#[derive(Debug, Clone)]
pub struct FileStream {
    path: PathBuf,
    start: u64,
    len: Option<u64>,
    compression: Compression,
}

impl FileStream {
    /// The whole file at `path`, compression recognised from its magic.
    pub fn open(path: &Path) -> Result<FileStream> {
        Self::range(path, 0, None)
    }

    /// `len` bytes (to the end when `None`) at `start` of the file at `path`,
    /// compression recognised from their magic.
    pub fn range(path: &Path, start: u64, len: Option<u64>) -> Result<FileStream> {
        let mut s = FileStream { path: path.to_path_buf(), start, len, compression: Compression::None };
        let mut head = [0u8; 8];
        let mut r = s.raw()?;
        let n = read_full(&mut r, &mut head).map_err(|e| Error::io("cannot read", e).with_file(path))?;
        s.compression = Compression::detect(&head[..n]).map_err(|e| e.with_file(path))?;
        Ok(s)
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

impl StreamSource for FileStream {
    fn name(&self) -> String {
        match (self.start, self.len) {
            (0, None) => self.path.display().to_string(),
            (s, _) => format!("{} at offset {s}", self.path.display()),
        }
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        let path = self.path.clone();
        let inner = self.compression.decoder(self.raw()?)?;
        Ok(Box::new(Named { inner, path }))
    }
}

/// Decompression errors name the file.
struct Named {
    inner: Box<dyn Read + Send>,
    path: PathBuf,
}

impl Read for Named {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                e
            } else {
                std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
            }
        })
    }
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
