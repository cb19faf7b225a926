//! diskcast's block layer: what every disk format reads into and writes out of.
//!
//! - [`BlockRead`]: a virtual disk that many threads read at once (`&self`), and that
//!   answers which ranges hold data, read as zero, are unallocated, or come from a
//!   backing file ([`Extent`]).
//! - [`BlockWrite`]: a new virtual disk being written; it says whether it needs its data
//!   in order ([`WriteOrder`]) and may do CPU-heavy work such as compression in parallel
//!   through [`BlockWrite::encode`].
//! - [`registry`]: format drivers that probe, open and create images.
//! - [`source`]: where an image's bytes come from (a file, memory, a range of another
//!   source or of a virtual disk); drivers open images from a [`source::ByteSource`].
//! - [`gate`]: the only way a driver may open another file (backing files, extents).
//! - [`copy`]: the parallel, sparse-aware copy engine behind `convert`.
//! - [`delta`]: what to write so an image reads as another (`commit`, `rebase`, `convert -B`).
//! - [`unit_edit`]: guest writes into an existing VDI, VHD, VHDX or VMDK image (its blocks or
//!   grains allocated on first write, tables written last), for `commit` and `convert -n`.
//! - [`output`]: the one output path: targets checked and locked, files put in place only
//!   when everything succeeded, devices and pipes written in place.
//! - [`device`]: block devices written only when nothing uses them.
//! - [`provenance`]: the one clock and identifier source writers use (`SOURCE_DATE_EPOCH`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod compress;
pub mod copy;
pub mod decompress;
pub mod delta;
pub mod device;
pub mod error;
pub mod filter;
pub mod gate;
pub mod io;
pub mod lock;
pub mod output;
pub mod progress;
pub mod provenance;
pub mod registry;
pub mod runs;
pub mod size;
pub mod source;
pub mod unit_edit;
pub mod verify;

pub use error::{Error, ErrorKind, Result, ResultExt};

use diskcast_layout::u64_from_usize;
use serde::Serialize;

/// What a range of a virtual disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Alloc {
    /// Allocated in this image; must be read.
    Data,
    /// Allocated or marked as zero in this image: reads as zeros, nothing to read.
    Zero,
    /// Not allocated in this image and no backing file: reads as zeros.
    Unallocated,
    /// Not allocated in this image: the data comes from the backing file.
    Backing,
}

impl Alloc {
    /// True when the range reads as zeros without looking anywhere else.
    pub fn reads_zero(self) -> bool {
        matches!(self, Alloc::Zero | Alloc::Unallocated)
    }
}

/// A guest range `[offset, offset + len)` with one allocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Guest byte offset.
    pub offset: u64,
    /// Length in bytes, never 0.
    pub len: u64,
    /// What the range holds.
    pub alloc: Alloc,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// Facts about an opened image, shown by `diskcast info`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageInfo {
    /// Driver name (`raw`, `qcow2`, ...).
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Allocation unit of the format, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Compression used by compressed clusters (`zlib`, `zstd`), if the format has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The backing file name as written in the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// The backing file format as written in the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_format: Option<String>,
    /// Format-specific facts (qcow2 version, refcount bits, features...), as key/values.
    /// Keys qemu-img info also prints under `format-specific.data` carry qemu's names and
    /// types (kebab-case; a VMDK CID is a number); others are diskcast's own.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub specific: serde_json::Map<String, serde_json::Value>,
    /// The image says it was not closed cleanly (qcow2's dirty bit): qemu-img's `dirty-flag`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dirty: bool,
    /// Files that hold the image besides the one opened (VMDK extent files), as paths
    /// the caller can stat: `info` counts their disk usage and lists them as children.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extent_files: Vec<std::path::PathBuf>,
    /// Persistent dirty bitmaps: `None` when the format cannot store them, else the list
    /// (qcow2 v3). `measure` sizes them for a target that can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_bitmaps: Option<Vec<PersistentBitmap>>,
    /// Internal snapshots (qcow2), as `qemu-img info` and `snapshot -l` list them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotInfo>,
}

/// An internal snapshot of an image (qcow2), with the fields qemu-img shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Its unique ID (qemu's are decimal numbers).
    pub id: String,
    /// Its name (tag).
    pub name: String,
    /// Bytes of saved VM state (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// When it was taken: seconds since the epoch.
    pub date_sec: u32,
    /// ... and nanoseconds.
    pub date_nsec: u32,
    /// The guest's clock when it was taken, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// The instruction count (record/replay), if recorded.
    pub icount: Option<u64>,
}

/// A persistent dirty bitmap of an image, as `measure` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersistentBitmap {
    /// Its name.
    pub name: String,
    /// Guest bytes per bit.
    pub granularity: u64,
}

/// A virtual disk being read. All methods take `&self` so many threads can read at once.
pub trait BlockRead: Send + Sync + std::fmt::Debug {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with guest bytes starting at `offset`. Reading past [`size`](Self::size)
    /// is an [`ErrorKind::OutOfBounds`] error. Backing data is read through.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// The allocation status of the range starting at `offset`: an extent that starts at
    /// `offset` with a length in `1..=max_len` (clamped to the disk's end). Drivers return
    /// runs as long as they cheaply can, so a 1 TiB empty image maps in a few calls.
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent>;

    /// The image below this one, already opened through the [`gate`].
    fn backing(&self) -> Option<&dyn BlockRead> {
        None
    }

    /// Facts for `diskcast info`.
    fn info(&self) -> ImageInfo;

    /// The identifier a child image records to name this image as its parent, read from
    /// the image's own header: a VHD footer's unique id (its 16 bytes as stored), a VHDX
    /// header's data write GUID (RFC 4122 byte order). Parent checks compare it with the
    /// child's field; they never read it back out of [`info`](Self::info)'s display map.
    fn unique_id(&self) -> Option<[u8; 16]> {
        None
    }

    /// [`extent_at`](Self::extent_at) plus where the range is stored, for `map` (qemu-img
    /// map's `offset` and `compressed`). The returned range is stored in one piece: its
    /// host bytes are contiguous. Formats that do not say keep the default: no offset.
    fn map_extent(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        Ok(MapExtent { extent: self.extent_at(offset, max_len)?, host: None, compressed: false })
    }

    /// Where the guest range `[offset, offset+len)` is stored unchanged and in one piece in
    /// a local file (the file and the range's offset in it), for copy offloading
    /// (`convert -C`): a raw image's own bytes. `None` (the default) makes the copy read
    /// the range instead.
    fn host_range(&self, _offset: u64, _len: u64) -> Option<(&io::ImageFile, u64)> {
        None
    }
}

/// The reading side of a format driver, written once for every format that reads its
/// own file: it implements the `_inner` methods and gets [`BlockRead`], each error
/// naming the image's file ([`file_name`](Self::file_name)) so no reader forgets to.
pub trait FormatRead: Send + Sync + std::fmt::Debug {
    /// The image's file (or source), named in every error.
    fn file_name(&self) -> &std::path::Path;
    /// [`BlockRead::size`].
    fn virtual_size(&self) -> u64;
    /// [`BlockRead::read_at`].
    fn read_inner(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// [`BlockRead::extent_at`].
    fn extent_inner(&self, offset: u64, max_len: u64) -> Result<Extent>;
    /// [`BlockRead::map_extent`] (default: no host offset).
    fn map_inner(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        Ok(MapExtent { extent: self.extent_inner(offset, max_len)?, host: None, compressed: false })
    }
    /// [`BlockRead::info`].
    fn info_inner(&self) -> ImageInfo;
    /// [`BlockRead::backing`].
    fn backing_image(&self) -> Option<&dyn BlockRead> {
        None
    }
    /// [`BlockRead::unique_id`].
    fn image_id(&self) -> Option<[u8; 16]> {
        None
    }
}

impl<T: FormatRead> BlockRead for T {
    fn size(&self) -> u64 {
        self.virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_inner(buf, offset).file(self.file_name())
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.extent_inner(offset, max_len).file(self.file_name())
    }
    fn map_extent(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        self.map_inner(offset, max_len).file(self.file_name())
    }
    fn backing(&self) -> Option<&dyn BlockRead> {
        self.backing_image()
    }
    fn info(&self) -> ImageInfo {
        self.info_inner()
    }
    fn unique_id(&self) -> Option<[u8; 16]> {
        self.image_id()
    }
}

/// A guest range and where it is stored, as `map` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapExtent {
    /// The range and what it holds.
    pub extent: Extent,
    /// Byte offset of the range's first byte in the file that holds it (the image file,
    /// or the VMDK extent file), when it is stored there uncompressed.
    pub host: Option<u64>,
    /// The range is stored compressed (then it has no single host offset).
    pub compressed: bool,
}

/// Whether a writer takes data in any order or only front to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOrder {
    /// `write_encoded`/`write_zeroes` may come from many threads in any order.
    Any,
    /// `write_encoded`/`write_zeroes` must come in increasing offset order, one at a time
    /// (compressed qcow2 laid out in guest order, streamOptimized VMDK, pipes).
    Sequential,
}

/// Guest data after [`BlockWrite::encode`], ready for [`BlockWrite::write_encoded`].
#[derive(Debug)]
pub enum Encoded {
    /// Data to store as is.
    Plain {
        /// Guest offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Data cut into the format's units (clusters, grains), each stored in its final form.
    Units(Vec<EncodedUnit>),
}

impl Encoded {
    /// Calls `write` for each stretch of guest bytes, for writers that store data as it is
    /// (a compressed unit, or one whose stored bytes are not its guest bytes, is an error
    /// naming `format`): their `write_encoded` in one place.
    pub fn for_each_plain(self, format: &str, mut write: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        match self {
            Encoded::Plain { offset, data } => write(offset, &data),
            Encoded::Units(units) => units.iter().try_for_each(|u| {
                if u.compressed || u64_from_usize(u.stored.len()) != u.len {
                    return Err(Error::argument(format!("{format} cannot store compressed data")).with_offset(u.offset));
                }
                write(u.offset, &u.stored)
            }),
        }
    }
}

/// One cluster or grain as the writer will store it.
#[derive(Debug)]
pub struct EncodedUnit {
    /// Guest offset of the unit.
    pub offset: u64,
    /// Guest bytes the unit covers.
    pub len: u64,
    /// The bytes to store: compressed if `compressed`, otherwise exactly `len` guest bytes.
    pub stored: Vec<u8>,
    /// Whether `stored` is compressed.
    pub compressed: bool,
}

/// A virtual disk being written. Created by a [`registry::Driver`] into temporary files
/// that [`output::OutputFiles`] renames into place after [`finish`](Self::finish).
pub trait BlockWrite: Send + Sync + std::fmt::Debug {
    /// Guest-visible size in bytes.
    fn size(&self) -> u64;

    /// Order the writer needs (see [`WriteOrder`]).
    fn order(&self) -> WriteOrder {
        WriteOrder::Any
    }

    /// The allocation unit: the copy engine aligns its chunks to it and drops all-zero
    /// units, so a writer is never asked to allocate a unit that would hold only zeros.
    fn granularity(&self) -> u64 {
        4096
    }

    /// True when a range never written reads as zeros (every new image without a backing
    /// file). The copy engine then skips zero ranges entirely.
    fn zero_initialized(&self) -> bool {
        true
    }

    /// CPU-heavy, order-free preparation of `data` at guest `offset` (compression).
    /// Called from many threads at once, even for sequential writers. `offset` and
    /// `data.len()` are multiples of [`granularity`](Self::granularity) except at the
    /// disk's end.
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<Encoded> {
        Ok(Encoded::Plain { offset, data })
    }

    /// Stores what [`encode`](Self::encode) produced.
    fn write_encoded(&self, encoded: Encoded) -> Result<()>;

    /// Makes `[offset, offset+len)` read as zeros.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()>;

    /// Copy offloading (`convert -C`): stores the `len` guest bytes at `offset` by having
    /// the kernel copy them from `from` at `from_offset` (copy_file_range), without
    /// reading them into memory. `Ok(false)`: this writer, or this pair of files, cannot
    /// offload, and the caller copies through memory instead, as qemu-img falls back.
    fn copy_range(&self, _from: &io::ImageFile, _from_offset: u64, _offset: u64, _len: u64) -> Result<bool> {
        Ok(false)
    }

    /// Writes the remaining metadata. Syncing is not the writer's job: [`output::OutputFiles::commit`]
    /// syncs every output file once, before renaming it into place.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// The end of the guest range `[offset, offset + len)`, or an [`ErrorKind::OutOfBounds`]
/// error when the range does not fit in a disk of `size` bytes. Every reader and writer
/// checks the ranges it is handed through this one function.
pub fn range_end(offset: u64, len: u64, size: u64) -> Result<u64> {
    offset.checked_add(len).filter(|&end| end <= size).ok_or_else(|| {
        Error::out_of_bounds(format!("range of {len} bytes at {offset:#x} is past the disk's end ({size:#x})"))
            .with_offset(offset)
    })
}

/// Fills `buf` with the guest bytes at `offset` of the image below (a backing file or
/// parent): bytes past the end of a shorter backing image, or all of them when there is
/// none, read as zeros, as in qemu.
pub fn read_backing(backing: Option<&dyn BlockRead>, buf: &mut [u8], offset: u64) -> Result<()> {
    let avail = backing.map_or(0, |b| b.size().saturating_sub(offset).min(u64_from_usize(buf.len())));
    let avail = usize::try_from(avail).unwrap_or(buf.len());
    let (inside, past) = buf.split_at_mut(avail);
    if let Some(b) = backing
        && !inside.is_empty()
    {
        b.read_at(inside, offset)?;
    }
    past.fill(0);
    Ok(())
}

/// `ext` with a `Backing` range cut at the end of the image below: past a shorter backing
/// image nothing is inherited, so that part reads as `Unallocated` (as `qemu-img map`
/// reports it).
pub fn clip_to_backing(mut ext: Extent, backing: Option<&dyn BlockRead>) -> Extent {
    if let (Alloc::Backing, Some(b)) = (ext.alloc, backing) {
        let bsize = b.size();
        if ext.offset >= bsize {
            ext.alloc = Alloc::Unallocated;
        } else {
            ext.len = ext.len.min(bsize - ext.offset);
        }
    }
    ext
}

/// The extent a reader grows from `offset`, piece after piece of its map, while the
/// pieces hold the same kind.
#[derive(Debug)]
pub struct GrowExtent {
    offset: u64,
    ext: Option<Extent>,
}

impl GrowExtent {
    /// Nothing yet at `offset`.
    pub fn new(offset: u64) -> Self {
        GrowExtent { offset, ext: None }
    }

    /// Adds the next piece, `len` bytes holding `alloc`; false when it holds another kind
    /// (the extent ends before it, and the walk can stop).
    pub fn push(&mut self, len: u64, alloc: Alloc) -> bool {
        match &mut self.ext {
            None => self.ext = Some(Extent { offset: self.offset, len, alloc }),
            Some(e) if e.alloc == alloc => e.len += len,
            Some(_) => return false,
        }
        true
    }

    /// The extent, cut where the image below ends ([`clip_to_backing`]); no piece at
    /// all is corruption.
    pub fn finish(self, backing: Option<&dyn BlockRead>) -> Result<Extent> {
        let ext = self.ext.ok_or_else(|| Error::corrupt("empty extent").with_offset(self.offset))?;
        Ok(clip_to_backing(ext, backing))
    }
}

/// The extent at `offset` with backing files resolved: `Backing` becomes whatever the
/// backing chain holds there (or `Unallocated` past the end of a shorter backing file).
pub fn resolved_extent(image: &dyn BlockRead, offset: u64, max_len: u64) -> Result<Extent> {
    let ext = image.extent_at(offset, max_len)?;
    if ext.alloc != Alloc::Backing {
        return Ok(ext);
    }
    let Some(backing) = image.backing() else {
        return Err(Error::corrupt("driver reported a backing range but has no backing file").with_offset(offset));
    };
    if offset >= backing.size() {
        return Ok(Extent { alloc: Alloc::Unallocated, ..ext });
    }
    let below = resolved_extent(backing, offset, ext.len)?;
    Ok(Extent { offset, len: below.len.min(ext.len), alloc: below.alloc })
}
