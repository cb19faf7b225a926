//! zisofs: files compressed block by block with zlib (mkzftree, `xorriso -zisofs`), marked
//! by a Rock Ridge ZF entry. The stored file is a 16-byte header, a table of block
//! offsets, then one zlib stream per block; an empty block (two equal offsets) is zeros.

use crate::{le32, read_bytes};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::ContentRead;
use flate2::{Decompress, FlushDecompress, Status};
use std::sync::{Arc, OnceLock};

const MAGIC: [u8; 8] = [0x37, 0xE4, 0x53, 0x96, 0xC9, 0xDB, 0xD6, 0x07];

/// A zisofs file: decompressed on read, one block at a time.
#[derive(Debug)]
pub struct Zisofs {
    disk: Arc<dyn BlockRead>,
    /// Where the stored (compressed) file starts on the disc, and its length.
    start: u64,
    stored: u64,
    /// The uncompressed size.
    size: u64,
    log2: u8,
    /// Block offsets, read on first use.
    table: OnceLock<Arc<[u32]>>,
}

impl Zisofs {
    /// Checks what can be checked without reading: the block size (2^15 to 2^17) and that
    /// the block table fits in the stored file.
    pub fn new(disk: Arc<dyn BlockRead>, start: u64, stored: u64, size: u64, log2: u8) -> Result<Self> {
        if !(15..=17).contains(&log2) {
            return Err(Error::corrupt(format!("zisofs block size 2^{log2} (must be 2^15 to 2^17)")).with_field("ZF"));
        }
        let z = Zisofs { disk, start, stored, size, log2, table: OnceLock::new() };
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
        if u64::from(le32(&head, 8)) != self.size || head[13] != self.log2 {
            return Err(bad("zisofs header disagrees with the ZF entry (size or block size)".into()));
        }
        let table_at = u64::from(head[12]) * 4;
        let n = self.blocks() + 1;
        if table_at < 16 || table_at + 4 * n > self.stored {
            return Err(bad("zisofs block table runs past the stored file".into()));
        }
        let raw = read_bytes(self.disk.as_ref(), self.start + table_at, 4 * n, "zisofs block table")?;
        let table: Vec<u32> = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
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
        if status != Status::StreamEnd || d.total_out() != out.len() as u64 {
            return Err(Error::corrupt(format!("zisofs block {i} does not inflate to its size")).with_field("zisofs"));
        }
        Ok(())
    }
}

impl ContentRead for Zisofs {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let table = self.table()?;
        let bs = 1u64 << self.log2;
        let mut block = vec![0u8; bs as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = pos / bs;
            let blen = (self.size - i * bs).min(bs) as usize;
            self.block(&table, i as usize, &mut block[..blen])?;
            let within = (pos - i * bs) as usize;
            let n = (blen - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[within..within + n]);
            done += n;
        }
        Ok(())
    }
}
