//! zisofs: files compressed block by block with zlib (mkzftree, `xorriso -zisofs`), marked
//! by a Rock Ridge ZF entry. The stored file is a 16-byte header, a table of block
//! offsets, then one zlib stream per block; an empty block (two equal offsets) is zeros.

use crate::read_bytes;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::le32;
use diskcast_tree::ContentRead;
use flate2::{Decompress, FlushDecompress, Status};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

const MAGIC: [u8; 8] = [0x37, 0xE4, 0x53, 0x96, 0xC9, 0xDB, 0xD6, 0x07];

/// Each file may expand by the one rule every compressed source obeys
/// ([`diskcast_block::decompress`]): [`MAX_RATIO`] bytes per stored byte plus [`RATIO_SLACK`],
/// at most [`MAX_DECOMPRESSED`] in all.
pub(crate) use diskcast_block::decompress::{MAX_DECOMPRESSED, MAX_RATIO, RATIO_SLACK};

/// Most bytes one byte of a zlib stream inflates to (deflate's 258-byte matches in 2
/// bits): every zisofs block is its own stream.
const ZLIB_MAX_RATIO: u64 = 1032;

/// The zisofs files of one tree, for the decompression cap. A block of zeros is stored as
/// nothing (4 bytes of block table: 4 GiB of zeros fit in 512 KiB), which is zisofs' way
/// of keeping a hole, and costs no inflating; every other block inflates at most
/// [`ZLIB_MAX_RATIO`]:1. So a file counts as the smaller of its size and 1032 times its
/// stored bytes, and a disc whose files each have their own stored bytes never reaches
/// [`MAX_RATIO`]. What does is directory records sharing one stored file (each repeat
/// streams all of it again, holes included): a repeat counts its whole size. The stored
/// bytes are counted once however often they are named.
#[derive(Debug, Default)]
pub(crate) struct ExpansionBudget {
    /// (start, end) on the disc of every file's stored bytes.
    stored: Vec<(u64, u64)>,
    /// Starts of the stored files seen so far.
    seen: HashSet<u64>,
    /// What the files may decompress to, as above.
    cost: u64,
}

impl ExpansionBudget {
    pub(crate) fn add(&mut self, start: u64, stored: u64, size: u64) {
        let cost = if self.seen.insert(start) { size.min(stored.saturating_mul(ZLIB_MAX_RATIO)) } else { size };
        self.cost = self.cost.saturating_add(cost);
        self.stored.push((start, start.saturating_add(stored)));
    }

    /// Refuses a tree whose zisofs files may decompress to more than [`MAX_RATIO`] times
    /// the disc bytes they are stored in (overlaps counted once) plus [`RATIO_SLACK`].
    pub(crate) fn check(&mut self) -> Result<()> {
        self.stored.sort_unstable();
        let (mut stored, mut covered_to) = (0u64, 0u64);
        for &(start, end) in &self.stored {
            stored = stored.saturating_add(end.saturating_sub(start.max(covered_to)));
            covered_to = covered_to.max(end);
        }
        let cap = stored.saturating_mul(MAX_RATIO).saturating_add(RATIO_SLACK).min(MAX_DECOMPRESSED);
        if self.cost > cap {
            return Err(Error::out_of_bounds(format!(
                "zisofs files may decompress to {} bytes from {stored} stored bytes (directory records \
                 sharing one stored file count each time), more than {cap} ({MAX_RATIO} per stored byte + \
                 {} MiB, at most {} TiB): refused as a decompression bomb",
                self.cost,
                RATIO_SLACK >> 20,
                MAX_DECOMPRESSED >> 40
            ))
            .with_field("ZF"));
        }
        Ok(())
    }
}

/// A zisofs file: decompressed on read, one block at a time.
#[derive(Debug)]
pub struct Zisofs {
    disk: Arc<dyn BlockRead>,
    /// Where the stored (compressed) file starts on the disc, and its length.
    start: u64,
    stored: u64,
    /// What read errors name (the disc), since they surface long after the tree was read.
    label: Arc<str>,
    /// The uncompressed size.
    size: u64,
    log2: u8,
    /// Block offsets, read on first use.
    table: OnceLock<Arc<[u32]>>,
}

impl Zisofs {
    /// Checks what can be checked without reading: the block size (2^15 to 2^17) and that
    /// the block table fits in the stored file.
    pub fn new(
        disk: Arc<dyn BlockRead>,
        label: Arc<str>,
        start: u64,
        stored: u64,
        size: u64,
        log2: u8,
    ) -> Result<Self> {
        if !(15..=17).contains(&log2) {
            return Err(Error::corrupt(format!("zisofs block size 2^{log2} (must be 2^15 to 2^17)")).with_field("ZF"));
        }
        let z = Zisofs { disk, label, start, stored, size, log2, table: OnceLock::new() };
        let table_end = 16 + 4 * (z.blocks() + 1);
        if table_end > stored {
            return Err(Error::corrupt(format!(
                "zisofs block table of {} blocks does not fit in the {stored}-byte stored file",
                z.blocks()
            ))
            .with_field("ZF"));
        }
        Ok(z)
    }

    fn blocks(&self) -> u64 {
        self.size.div_ceil(1 << self.log2)
    }

    fn table(&self) -> Result<Arc<[u32]>> {
        if let Some(t) = self.table.get() {
            return Ok(t.clone());
        }
        let head = read_bytes(self.disk.as_ref(), self.start, 16, "zisofs header")?;
        let bad = |what: String| Error::corrupt(what).with_field("zisofs").with_offset(self.start);
        if head[..8] != MAGIC {
            return Err(bad("zisofs header has the wrong magic".into()));
        }
        if u64::from(le32(&head, 8, "zisofs header")?) != self.size || head[13] != self.log2 {
            return Err(bad("zisofs header disagrees with the ZF entry (size or block size)".into()));
        }
        let table_at = u64::from(head[12]) * 4;
        let n = self.blocks() + 1;
        if table_at < 16 || table_at + 4 * n > self.stored {
            return Err(bad("zisofs block table runs past the stored file".into()));
        }
        let raw = read_bytes(self.disk.as_ref(), self.start + table_at, 4 * n, "zisofs block table")?;
        let table: Vec<u32> =
            raw.chunks_exact(4).map(|c| le32(c, 0, "zisofs block table")).collect::<Result<_, _>>()?;
        for w in table.windows(2) {
            if w[1] < w[0] || u64::from(w[1]) > self.stored {
                return Err(bad("zisofs block offsets go backwards or past the stored file".into()));
            }
        }
        Ok(self.table.get_or_init(|| table.into()).clone())
    }

    /// Block `i` decompressed into `out` (whose length is the block's size).
    fn block(&self, table: &[u32], i: usize, out: &mut [u8]) -> Result<()> {
        let (a, b) = (table[i], table[i + 1]);
        if a == b {
            out.fill(0);
            return Ok(());
        }
        let bs = 1u64 << self.log2;
        if u64::from(b - a) > 2 * bs + 64 {
            return Err(Error::corrupt("zisofs block is larger than any zlib stream of one block").with_field("zisofs"));
        }
        let comp = read_bytes(self.disk.as_ref(), self.start + u64::from(a), u64::from(b - a), "zisofs block")?;
        let mut d = Decompress::new(true);
        let status = d
            .decompress(&comp, out, FlushDecompress::Finish)
            .map_err(|e| Error::corrupt(format!("zisofs block {i}: {e}")).with_field("zisofs"))?;
        if status != Status::StreamEnd || d.total_out() != diskcast_layout::u64_from_usize(out.len()) {
            return Err(Error::corrupt(format!("zisofs block {i} does not inflate to its size")).with_field("zisofs"));
        }
        Ok(())
    }
}

impl ContentRead for Zisofs {
    /// Every block but the empty ones (zisofs' holes): extracting a file of zeros writes
    /// and inflates nothing.
    fn data_ranges(&self, size: u64) -> Result<Vec<(u64, u64)>> {
        let table = self.table().map_err(|e| diskcast_tree::name_error(e, &self.label))?;
        let bs = 1u64 << self.log2;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, w) in (0u64..).zip(table.windows(2)) {
            let start = i * bs;
            if w[0] == w[1] || start >= size {
                continue;
            }
            let len = (size - start).min(bs);
            match out.last_mut() {
                Some((o, l)) if *o + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        Ok(out)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_blocks(buf, offset).map_err(|e| diskcast_tree::name_error(e, &self.label))
    }
}

impl Zisofs {
    fn read_blocks(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let table = self.table()?;
        let bs = 1u64 << self.log2;
        let mut block = vec![0u8; diskcast_layout::usize_from_u64(bs, "zisofs block")?];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + diskcast_layout::u64_from_usize(done);
            let i = pos / bs;
            let blen = diskcast_layout::usize_from_u64((self.size - i * bs).min(bs), "zisofs block")?;
            self.block(&table, diskcast_layout::usize_from_u64(i, "zisofs block index")?, &mut block[..blen])?;
            let within = diskcast_layout::usize_from_u64(pos - i * bs, "zisofs block")?;
            let n = (blen - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(())
    }
}
