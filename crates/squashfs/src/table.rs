//! Metadata: 8 KiB blocks with a 2-byte header, read into contiguous tables (the inode,
//! directory and xattr tables, walked block by block) or through lookup tables of block
//! pointers (ids, fragments, xattr ids). Every block is decompressed into 8 KiB at most,
//! and all of them together within [`METADATA_RATIO`] of what was read.

use crate::compress::Compressor;
use diskcast_block::{BlockRead, Error, Result, range_end};
pub use diskcast_layout::Cursor;

/// Size of a metadata block's contents (`SQUASHFS_METADATA_SIZE`).
pub const METADATA_SIZE: usize = 8192;
/// Most bytes of decompressed metadata per byte read from the image, beyond
/// [`METADATA_SLACK`]. Real inode and directory tables compress 3-10:1; a hostile table of
/// tiny blocks that each claim 8 KiB would otherwise turn a small image into gigabytes of
/// memory.
pub const METADATA_RATIO: u64 = 64;
/// Decompressed metadata always allowed (a 1 TiB sparse file's block list is 32 MiB of
/// zeros that compress to almost nothing).
pub const METADATA_SLACK: u64 = 128 << 20;

/// Reads metadata blocks and keeps count of what they expanded to.
#[derive(Debug)]
pub struct MetaReader<'a> {
    pub disk: &'a dyn BlockRead,
    pub comp: Compressor,
    /// End of the filesystem (`bytes_used`).
    pub end: u64,
    read: u64,
    expanded: u64,
}

/// A run of metadata blocks decompressed into one buffer, with where each block began.
#[derive(Debug, Default)]
pub struct Table {
    /// What the table is (`inode table`), for messages.
    pub what: &'static str,
    /// The decompressed bytes of all blocks, in order.
    pub data: Vec<u8>,
    /// `(offset of the block from the table's start on disk, offset in data)`, sorted.
    blocks: Vec<(u64, usize)>,
}

impl<'a> MetaReader<'a> {
    pub fn new(disk: &'a dyn BlockRead, comp: Compressor, end: u64) -> Self {
        MetaReader { disk, comp, end, read: 0, expanded: 0 }
    }

    /// Reads `len` raw bytes at `offset`, which must lie below `limit`.
    pub fn raw(&self, offset: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>> {
        range_end(offset, len, limit.min(self.end)).map_err(|_| {
            Error::out_of_bounds(format!("{what} ({len} bytes at {offset:#x}) runs past its table or the filesystem"))
                .with_offset(offset)
        })?;
        let mut b = vec![0u8; usize::try_from(len).map_err(|_| Error::out_of_bounds(format!("{what} is too large")))?];
        self.disk.read_at(&mut b, offset)?;
        Ok(b)
    }

    /// The metadata block at `offset` (its header must start below `limit` and its data
    /// end at or before it): its contents and where the next block starts.
    pub fn block(&mut self, offset: u64, limit: u64, what: &str) -> Result<(Vec<u8>, u64)> {
        let head = self.raw(offset, 2, limit, what)?;
        let h = diskcast_layout::le16(&head, 0, "metadata block header")?;
        let stored = h & 0x7fff;
        let len = usize::from(stored);
        if len == 0 || len > METADATA_SIZE {
            return Err(
                Error::corrupt(format!("{what}: metadata block of {len} bytes (1 to 8192)")).with_offset(offset)
            );
        }
        let at = offset.checked_add(2).ok_or_else(|| Error::out_of_bounds("metadata offset overflows"))?;
        let src = self.raw(at, u64::from(stored), limit, what)?;
        let next = at + u64::from(stored);
        self.read = self.read.saturating_add(u64::from(stored) + 2);
        let out = if h & 0x8000 != 0 {
            src
        } else {
            let mut out = vec![0u8; METADATA_SIZE];
            let n = self.comp.decompress(&src, &mut out).map_err(|e| e.with_offset(offset).with_field("metadata"))?;
            out.truncate(n);
            out
        };
        self.expanded = self.expanded.saturating_add(u64::try_from(out.len()).unwrap_or(u64::MAX));
        let cap = METADATA_SLACK.saturating_add(self.read.saturating_mul(METADATA_RATIO));
        if self.expanded > cap {
            return Err(Error::out_of_bounds(format!(
                "squashfs metadata expands to more than {cap} bytes ({METADATA_RATIO} per byte read plus \
                 {METADATA_SLACK}: METADATA_RATIO)"
            ))
            .with_offset(offset));
        }
        Ok((out, next))
    }

    /// Every metadata block from `start` up to `end`, as one table.
    pub fn table(&mut self, what: &'static str, start: u64, end: u64) -> Result<Table> {
        let mut t = Table { what, ..Table::default() };
        let mut at = start;
        while at < end {
            let (data, next) = self.block(at, end, what)?;
            t.blocks.push((at - start, t.data.len()));
            t.data.extend_from_slice(&data);
            at = next;
        }
        Ok(t)
    }

    /// `count` entries of `size` bytes kept in metadata blocks whose pointers are the
    /// `u64` array at `start` (blocks lie before `start`).
    pub fn lookup(&mut self, what: &'static str, start: u64, count: u64, size: u64) -> Result<(Vec<u8>, Vec<u64>)> {
        let bytes = count.checked_mul(size).ok_or_else(|| Error::corrupt(format!("{what}: too many entries")))?;
        let nblocks = bytes.div_ceil(8192);
        let ptrs = self.raw(start, nblocks.saturating_mul(8), self.end, what)?;
        let ptrs: Vec<u64> =
            ptrs.chunks_exact(8).map(|p| diskcast_layout::le64(p, 0, what)).collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (i, &p) in ptrs.iter().enumerate() {
            let (data, _) = self.block(p, start, what)?;
            let want = (bytes - 8192 * u64::try_from(i).unwrap_or(u64::MAX)).min(8192);
            if u64::try_from(data.len()).ok() != Some(want) {
                return Err(Error::corrupt(format!("{what}: block {i} holds {} bytes, {want} expected", data.len()))
                    .with_offset(p));
            }
            out.extend_from_slice(&data);
        }
        Ok((out, ptrs))
    }
}

impl Table {
    /// Where the metadata reference `r` (block offset << 16 | offset in block) points in
    /// [`data`](Self::data).
    pub fn at(&self, r: u64, what: &str) -> Result<usize> {
        let block = r >> 16;
        let off = usize::from(u16::try_from(r & 0xffff).unwrap_or(u16::MAX));
        let bad = || {
            Error::corrupt(format!(
                "{what} reference {r:#x} points outside the {} (block {block:#x}, offset {off})",
                self.what
            ))
            .with_field("metadata reference")
        };
        let i = self.blocks.binary_search_by_key(&block, |&(b, _)| b).map_err(|_| bad())?;
        let pos = self.blocks[i].1;
        let block_end = self.blocks.get(i + 1).map_or(self.data.len(), |&(_, p)| p);
        if pos + off >= block_end {
            return Err(bad());
        }
        Ok(pos + off)
    }

    /// A reader at byte `pos` of the table; running off its end is an error naming it.
    pub fn cursor(&self, pos: usize) -> Result<Cursor<'_>> {
        let mut c = Cursor::new(&self.data, self.what);
        c.skip(pos)?;
        Ok(c)
    }
}
