//! Planned images: a filesystem or a partitioned disk built from a tree without writing
//! it anywhere first.
//!
//! A filesystem writer (FAT, ext4, ISO) lays out its image as a plan: metadata it
//! synthesizes (boot sectors, allocation tables, directories, inodes) held as bytes, and
//! file data left as references to the tree's [`FileData`]. [`PlannedImage`] is that plan
//! as a [`BlockRead`], so the copy engine writes it into any block format (`-O qcow2`)
//! in parallel with no raw intermediate, and `mkdisk` nests a planned filesystem inside a
//! planned disk the same way. Ranges no piece covers read as zeros and are reported as
//! [`Alloc::Zero`], so they are never read or written.
//!
//! [`FsBuilder`] is what every filesystem writer implements, so `mkfs` and `mkdisk` take
//! any of them from one list.

use crate::{CursorPool, FileData, Tree, u64_len, within};
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result, range_end};
use std::sync::Arc;

/// Where a piece of a planned image reads its bytes from.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Bytes held in memory (synthesized metadata).
    Bytes(Arc<[u8]>),
    /// A file's bytes starting at `offset` of the file; past the file's end, zeros.
    File {
        /// The file.
        data: FileData,
        /// Offset in the file of the piece's first byte.
        offset: u64,
    },
    /// Another virtual disk starting at `offset` (a planned filesystem inside a planned
    /// partitioned disk); its zero ranges stay zero ranges.
    Disk {
        /// The disk.
        disk: Arc<dyn BlockRead>,
        /// Offset in `disk` of the piece's first byte.
        offset: u64,
    },
}

#[derive(Debug, Clone)]
struct Placed {
    start: u64,
    len: u64,
    piece: Piece,
}

/// A virtual disk assembled from pieces placed at offsets; the rest reads as zeros.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    size: u64,
    format: String,
    pieces: Vec<Placed>,
    sorted: bool,
    streams: Arc<CursorPool>,
}

impl PlannedImage {
    /// An all-zero image of `size` bytes; `format` names it in `info` (`fat32`, `gpt`).
    pub fn new(size: u64, format: impl Into<String>) -> Self {
        PlannedImage {
            size,
            format: format.into(),
            pieces: Vec::new(),
            sorted: true,
            streams: Arc::new(CursorPool::new()),
        }
    }

    /// Places `len` bytes of `piece` at `start`. Pieces must not overlap (checked when
    /// the image is [`sealed`](Self::seal)); empty pieces are ignored.
    pub fn place(&mut self, start: u64, len: u64, piece: Piece) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        range_end(start, len, self.size)?;
        match &piece {
            Piece::Bytes(b) if u64_len(b) < len => {
                return Err(Error::invalid("planned piece is shorter than its range"));
            }
            Piece::Disk { disk, offset } => {
                range_end(*offset, len, disk.size())?;
            }
            _ => {}
        }
        if self.pieces.last().is_some_and(|p| p.start > start) {
            self.sorted = false;
        }
        self.pieces.push(Placed { start, len, piece });
        Ok(())
    }

    /// Places in-memory bytes at `start`.
    pub fn place_bytes(&mut self, start: u64, bytes: impl Into<Arc<[u8]>>) -> Result<()> {
        let b: Arc<[u8]> = bytes.into();
        let len = u64_len(&b);
        self.place(start, len, Piece::Bytes(b))
    }

    /// Sorts the pieces and checks that none overlaps another; the image is then ready to
    /// read.
    pub fn seal(mut self) -> Result<Self> {
        if !self.sorted {
            self.pieces.sort_by_key(|p| p.start);
            self.sorted = true;
        }
        for w in self.pieces.windows(2) {
            if w[0].start + w[0].len > w[1].start {
                return Err(Error::invalid(format!("planned pieces overlap at {:#x}", w[1].start)));
            }
        }
        Ok(self)
    }

    /// Index of the first piece that ends after `offset`.
    fn first_after(&self, offset: u64) -> usize {
        self.pieces.partition_point(|p| p.start + p.len <= offset)
    }

    /// Bytes covered by pieces (an upper bound of the data a copy writes).
    pub fn planned_bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.len).sum()
    }
}

impl BlockRead for PlannedImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = range_end(offset, u64_len(buf), self.size)?;
        buf.fill(0);
        for p in self.pieces[self.first_after(offset)..].iter().take_while(|p| p.start < end) {
            let lo = p.start.max(offset);
            let hi = (p.start + p.len).min(end);
            let n = buf.len();
            let dst = &mut buf[within(lo - offset, n)..within(hi - offset, n)];
            let at = lo - p.start;
            match &p.piece {
                Piece::Bytes(b) => {
                    let from = within(at, b.len());
                    dst.copy_from_slice(&b[from..from + dst.len()]);
                }
                Piece::File { data, offset: foff } => {
                    let from = foff.saturating_add(at);
                    let n = within(data.size.saturating_sub(from), dst.len());
                    if n > 0 {
                        self.streams.read_file(data, &mut dst[..n], from)?;
                    }
                }
                Piece::Disk { disk, offset: doff } => disk.read_at(dst, doff + at)?,
            }
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.size || max_len == 0 {
            return Err(Error::out_of_bounds("extent query past the end of the planned image").with_offset(offset));
        }
        let limit = max_len.min(self.size - offset);
        let i = self.first_after(offset);
        let Some(p) = self.pieces.get(i) else {
            return Ok(Extent { offset, len: limit, alloc: Alloc::Zero });
        };
        if p.start > offset {
            return Ok(Extent { offset, len: limit.min(p.start - offset), alloc: Alloc::Zero });
        }
        let in_piece = (p.start + p.len - offset).min(limit);
        match &p.piece {
            Piece::Disk { disk, offset: doff } => {
                let e = diskcast_block::resolved_extent(disk.as_ref(), doff + (offset - p.start), in_piece)?;
                let alloc = if e.alloc.reads_zero() { Alloc::Zero } else { Alloc::Data };
                Ok(Extent { offset, len: e.len.min(in_piece).max(1), alloc })
            }
            _ => Ok(Extent { offset, len: in_piece, alloc: Alloc::Data }),
        }
    }

    fn info(&self) -> ImageInfo {
        ImageInfo { format: self.format.clone(), virtual_size: self.size, ..ImageInfo::default() }
    }
}

/// How to build a filesystem from a tree.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Size of the filesystem in bytes; `None` sizes it to the content plus headroom.
    pub size: Option<u64>,
    /// Volume label.
    pub label: Option<String>,
    /// The time recorded as "now" (seconds since 1970; `SOURCE_DATE_EPOCH` when set).
    pub now: i64,
    /// An identity for the filesystem (UUID, FAT volume id), derived or random, chosen
    /// by the caller so builds can be reproducible.
    pub id: [u8; 16],
    /// Byte offset of the filesystem on its disk (FAT records it as hidden sectors).
    pub disk_offset: u64,
    /// A filesystem variant the builder offers (`fat16`, `fat32`); `None`: its default.
    pub variant: Option<String>,
}

/// A planned filesystem and what the builder could not store.
#[derive(Debug)]
pub struct BuiltFs {
    /// The filesystem image.
    pub image: PlannedImage,
    /// One line per tree entry the filesystem cannot hold (skipped) or stored
    /// differently (a symlink, a device, a name FAT cannot spell).
    pub warnings: Vec<String>,
    /// What was built (`FAT32, 4096-byte clusters`), for messages.
    pub description: String,
}

/// A filesystem writer: plans an image of a tree that any block writer can store.
pub trait FsBuilder: Send + Sync + std::fmt::Debug {
    /// The name users pick it by (`fat32`, `ext4`).
    fn name(&self) -> &'static str;
    /// Plans the filesystem holding `tree`.
    fn plan(&self, tree: &Tree, opts: &BuildOptions) -> Result<BuiltFs>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Content, StreamSource};
    use std::io::Read;

    #[test]
    fn pieces_read_through_and_gaps_are_zero_extents() {
        let mut img = PlannedImage::new(100, "test");
        img.place_bytes(10, b"abcd".to_vec()).unwrap();
        let f = FileData::inline(b"xyz".to_vec());
        img.place(50, 8, Piece::File { data: f, offset: 1 }).unwrap();
        let img = img.seal().unwrap();
        let mut b = [9u8; 100];
        img.read_at(&mut b, 0).unwrap();
        assert_eq!(&b[10..14], b"abcd");
        assert_eq!(&b[50..58], b"yz\0\0\0\0\0\0");
        assert!(b[..10].iter().all(|&x| x == 0));
        let e = img.extent_at(0, 100).unwrap();
        assert_eq!((e.len, e.alloc), (10, Alloc::Zero));
        let e = img.extent_at(11, 100).unwrap();
        assert_eq!((e.len, e.alloc), (3, Alloc::Data));
        let e = img.extent_at(58, 100).unwrap();
        assert_eq!((e.len, e.alloc), (42, Alloc::Zero));
        let inner: Arc<dyn BlockRead> = Arc::new(img);
        let mut outer = PlannedImage::new(300, "disk");
        outer.place(200, 100, Piece::Disk { disk: inner, offset: 0 }).unwrap();
        let outer = outer.seal().unwrap();
        let mut c = [0u8; 4];
        outer.read_at(&mut c, 210).unwrap();
        assert_eq!(&c, b"abcd");
        let e = outer.extent_at(200, 100).unwrap();
        assert_eq!((e.len, e.alloc), (10, Alloc::Zero));
    }

    #[test]
    fn overlapping_pieces_are_refused() {
        let mut img = PlannedImage::new(100, "test");
        img.place_bytes(10, vec![1u8; 10]).unwrap();
        img.place_bytes(15, vec![1u8; 10]).unwrap();
        let e = img.seal().unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("overlap at 0xf"), "{e}");
        let e = PlannedImage::new(10, "t").place_bytes(5, vec![0u8; 6]).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds, "{e}");
        assert!(e.to_string().contains("past the disk's end"), "{e}");
    }

    #[derive(Debug, Default)]
    struct Counted {
        data: Vec<u8>,
        opens: std::sync::atomic::AtomicUsize,
    }
    impl StreamSource for Counted {
        fn name(&self) -> String {
            "counted".into()
        }
        fn open(&self) -> Result<Box<dyn Read + Send>> {
            self.opens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Box::new(std::io::Cursor::new(self.data.clone())))
        }
    }

    #[test]
    fn files_of_a_stream_in_stream_order_read_it_once() {
        let data: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
        let counted = Arc::new(Counted { data: data.clone(), ..Counted::default() });
        let stream: Arc<dyn StreamSource> = counted.clone();
        let mut img = PlannedImage::new(40_000, "test");
        for (k, (off, len)) in [(0u64, 10_000u64), (10_000, 5_000), (20_000, 10_000)].into_iter().enumerate() {
            let f = FileData { size: len, content: Content::Stream { stream: stream.clone(), offset: off } };
            img.place(k as u64 * 12_000, len, Piece::File { data: f, offset: 0 }).unwrap();
        }
        let img = img.seal().unwrap();
        let mut all = vec![0u8; 40_000];
        for (i, chunk) in all.chunks_mut(3000).enumerate() {
            img.read_at(chunk, i as u64 * 3000).unwrap();
        }
        assert_eq!(&all[..10_000], &data[..10_000]);
        assert_eq!(&all[12_000..17_000], &data[10_000..15_000]);
        assert_eq!(&all[24_000..34_000], &data[20_000..30_000]);
        assert_eq!(counted.opens.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
