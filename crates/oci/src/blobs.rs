//! Where blobs come from (a layout directory, members of a tar archive, the download
//! cache), and the checked ways to read them: small JSON blobs whole, layers as
//! decompressed streams.

use crate::digest::{Digest, Verify, from_io};
use crate::spec::{Compression, Descriptor};
use diskcast_block::io::ImageFile;
use diskcast_block::source::{RangeReader, Source};
use diskcast_block::{Error, Result};
use diskcast_tree::StreamSource;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A place blobs are read from, by digest.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// The raw bytes of the blob `digest`, unchecked (callers wrap them in [`Verify`]).
    fn open_raw(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;
    /// The stored size of the blob, when the store knows it without reading.
    fn stored_size(&self, digest: &Digest) -> Option<u64>;
}

/// Reads a small blob (manifest, config) whole and checks its size and digest.
pub fn read_verified(store: &dyn BlobStore, desc: &Descriptor, max: u64, what: &str) -> Result<Vec<u8>> {
    if desc.size > max {
        return Err(Error::out_of_bounds(format!(
            "{what} {} is {} bytes, more than the {max}-byte limit",
            desc.digest, desc.size
        ))
        .with_field("size"));
    }
    check_stored_size(store, desc, what)?;
    let mut out = Vec::with_capacity(desc.size as usize);
    let mut r = Verify::new(store.open_raw(&desc.digest)?, &desc.digest, desc.size, format!("{what} {}", desc.digest));
    r.read_to_end(&mut out).map_err(|e| from_io(e, what))?;
    Ok(out)
}

fn check_stored_size(store: &dyn BlobStore, desc: &Descriptor, what: &str) -> Result<()> {
    match store.stored_size(&desc.digest) {
        Some(n) if n != desc.size => Err(Error::corrupt(format!(
            "{what} {}: size mismatch: descriptor says {} bytes, the stored blob has {n}",
            desc.digest, desc.size
        ))
        .with_field("size")),
        _ => Ok(()),
    }
}

/// Blobs of an OCI layout directory (`blobs/ALG/HEX`) or of the download cache. Each
/// blob is opened by name once, when first read, and every later read (a layer decoded
/// again by a sink) goes through that descriptor: a file put at the blob's name
/// meanwhile is never read.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
    opened: std::sync::Mutex<HashMap<Digest, Source>>,
}

impl DirStore {
    /// Blobs under `root/blobs`.
    pub fn new(root: &Path) -> Self {
        DirStore { root: root.to_path_buf(), opened: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Where the blob `d` lives. The digest was validated, so this stays under `blobs/`.
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm_name()).join(d.hex())
    }

    /// The blob `d`, opened on first use.
    fn blob(&self, digest: &Digest) -> Result<Source> {
        self.opened_blob(digest)?.ok_or_else(|| {
            Error::corrupt(format!("blob {digest} is missing from the layout")).with_file(self.path(digest))
        })
    }

    /// The blob `d`, opened on first use; `None` when there is none.
    pub fn opened_blob(&self, digest: &Digest) -> Result<Option<Source>> {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(src) = opened.get(digest) {
            return Ok(Some(src.clone()));
        }
        let p = self.path(digest);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot open blob {digest}"), e).with_file(&p)),
        };
        let src: Source = Arc::new(ImageFile::from_file(f, &p));
        opened.insert(digest.clone(), src.clone());
        Ok(Some(src))
    }

    /// Closes the blob `d` (a damaged one about to be deleted and fetched again), so the
    /// next read opens the file then at its name.
    pub fn forget(&self, digest: &Digest) {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }
}

impl BlobStore for DirStore {
    fn open_raw(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let src = self.blob(digest)?;
        let len = src.len()?;
        Ok(Box::new(RangeReader::new(src, 0, len)))
    }

    fn stored_size(&self, digest: &Digest) -> Option<u64> {
        self.blob(digest).ok()?.len().ok()
    }
}

/// Blobs stored as members of an uncompressed tar file (oci-archive, docker-archive):
/// read in place, never copied out.
#[derive(Debug)]
pub struct ArchiveStore {
    file: Source,
    members: HashMap<Digest, (u64, u64)>,
}

impl ArchiveStore {
    /// A store over `file` whose blob `d` is at `members[d] = (offset, len)`.
    pub fn new(file: Source, members: HashMap<Digest, (u64, u64)>) -> Self {
        ArchiveStore { file, members }
    }
}

impl BlobStore for ArchiveStore {
    fn open_raw(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let &(offset, len) = self.members.get(digest).ok_or_else(|| {
            Error::corrupt(format!("blob {digest} is missing from the archive")).with_file(self.file.name())
        })?;
        Ok(Box::new(RangeReader::new(self.file.clone(), offset, len)))
    }

    fn stored_size(&self, digest: &Digest) -> Option<u64> {
        self.members.get(digest).map(|m| m.1)
    }
}

/// Bounds on decompression: the one rule every compressed tree source obeys (crates/tar
/// defines it; `.tar.zst` files are bounded the same way).
pub use diskcast_tar::Limits;

/// Detects the compression from the first bytes when the media type does not say (docker
/// save tarballs name layers `layer.tar` whatever they hold), as a tar file's is
/// detected (xz, bzip2 and lz4 are named and refused).
pub fn sniff(head: &[u8]) -> Result<Compression> {
    Ok(match diskcast_tar::Compression::detect(head)? {
        diskcast_tar::Compression::None => Compression::None,
        diskcast_tar::Compression::Gzip => Compression::Gzip,
        diskcast_tar::Compression::Zstd => Compression::Zstd,
    })
}

/// Wraps a checked blob reader in the right decompressor and a size cap.
pub fn decompress<R: BufRead + Send + 'static>(
    raw: R,
    compression: Compression,
    cap: u64,
    what: &str,
) -> Result<Box<dyn Read + Send>> {
    let codec = match compression {
        Compression::None => diskcast_tar::Compression::None,
        Compression::Gzip => diskcast_tar::Compression::Gzip,
        Compression::Zstd => diskcast_tar::Compression::Zstd,
    };
    let inner = codec.decoder(raw).map_err(|e| Error::new(e.kind(), format!("{what}: {}", e.message())))?;
    Ok(diskcast_tar::capped(inner, cap, what))
}

/// A layer as a front-to-back stream of its decompressed tar: file contents of a
/// flattened image point into it.
#[derive(Debug)]
pub struct LayerStream {
    /// Where the blob is.
    pub store: Arc<dyn BlobStore>,
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// How it is compressed.
    pub compression: Compression,
    /// Decompression bound.
    pub cap: u64,
}

/// The checked compressed stream under a decompressor, shared so the flattener can read
/// it to its end (running the digest check) after the tar ends.
#[derive(Clone)]
pub struct VerifiedRaw(Arc<std::sync::Mutex<Verify<Box<dyn Read + Send>>>>);

impl std::fmt::Debug for VerifiedRaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedRaw")
    }
}

impl Read for VerifiedRaw {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.read(buf)
    }
}

impl VerifiedRaw {
    /// `raw` (the blob's bytes) checked against `digest` and `size` as it is read (see
    /// [`Verify`]); `what` names it in errors.
    pub fn new(raw: Box<dyn Read + Send>, digest: &Digest, size: u64, what: String) -> Self {
        VerifiedRaw(Arc::new(std::sync::Mutex::new(Verify::new(raw, digest, size, what))))
    }

    /// Reads what is left of the compressed blob, so the size and digest check runs.
    pub fn finish(&self, what: &str) -> Result<()> {
        let mut me = self.clone();
        std::io::copy(&mut me, &mut std::io::sink()).map_err(|e| from_io(e, what))?;
        Ok(())
    }
}

impl StreamSource for LayerStream {
    fn name(&self) -> String {
        format!("layer {}", self.digest.short())
    }

    fn open(&self) -> Result<Box<dyn Read + Send>> {
        let raw = self.store.open_raw(&self.digest)?;
        let buffered = BufReader::with_capacity(256 * 1024, raw);
        decompress(buffered, self.compression, self.cap, &self.name())
    }
}

/// The first bytes of a blob, for [`sniff`].
pub fn peek(store: &dyn BlobStore, digest: &Digest) -> Result<Vec<u8>> {
    let mut r = BufReader::new(store.open_raw(digest)?);
    let head = r.fill_buf().map_err(|e| from_io(e, "blob"))?;
    Ok(head[..head.len().min(8)].to_vec())
}
