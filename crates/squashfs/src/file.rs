//! File content: a [`ContentRead`] that decompresses the blocks a read touches, and the
//! file's tail out of its fragment block. Sparse blocks (stored size 0) are holes.

use crate::compress::Compressor;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::ContentRead;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// All data and fragment blocks of one filesystem together obey the one decompression
/// rule ([`diskcast_block::decompress`]): at most [`DATA_RATIO`] bytes per byte of the
/// image, beyond [`DATA_SLACK`], and [`MAX_DECOMPRESSED`] in all. Real images expand
/// 2-5:1; files that share blocks (duplicates, or a hostile image pointing a million
/// inodes at one bomb block) would otherwise let a small image stream terabytes.
pub use diskcast_block::decompress::{MAX_DECOMPRESSED, MAX_RATIO as DATA_RATIO, RATIO_SLACK as DATA_SLACK};
/// Bytes of decompressed fragment blocks kept (128 blocks of 128 KiB, 16 of 1 MiB), so
/// the small files that share one are not each decompressing it again: `extract` reads
/// files largest first, not in fragment order.
const FRAGMENT_CACHE_BYTES: usize = 16 << 20;
/// Bit of a data block's size word saying it is stored uncompressed.
pub const UNCOMPRESSED: u32 = 1 << 24;

/// What every file of one filesystem shares: the disk, the compressor, the fragment
/// table and the decompression budget.
#[derive(Debug)]
pub struct Data {
    pub disk: Arc<dyn BlockRead>,
    pub comp: Compressor,
    pub block_size: u32,
    /// `(start, size word)` of each fragment block.
    pub fragments: Vec<(u64, u32)>,
    /// Bytes decompressed so far, and the most allowed ([`DATA_RATIO`]).
    pub spent: AtomicU64,
    pub cap: u64,
    /// What errors call the medium.
    label: String,
    cache: Mutex<VecDeque<(u32, Arc<[u8]>)>>,
}

impl Data {
    pub fn new(
        disk: Arc<dyn BlockRead>,
        comp: Compressor,
        block_size: u32,
        fragments: Vec<(u64, u32)>,
        image: u64,
        label: &str,
    ) -> Self {
        let cap = image.saturating_mul(DATA_RATIO).saturating_add(DATA_SLACK).min(MAX_DECOMPRESSED);
        let (spent, cache, label) = (AtomicU64::new(0), Mutex::new(VecDeque::new()), label.to_string());
        Data { disk, comp, block_size, fragments, spent, cap, label, cache }
    }

    /// The block stored at `pos` with size word `word`, decompressed into `out`; the
    /// number of bytes it gave.
    fn block(&self, pos: u64, word: u32, out: &mut [u8]) -> Result<usize> {
        let stored = word & (UNCOMPRESSED - 1);
        let mut src = vec![0u8; usize::try_from(stored).map_err(|_| Error::corrupt("block size"))?];
        self.disk.read_at(&mut src, pos)?;
        let n = if word & UNCOMPRESSED != 0 {
            if src.len() > out.len() {
                return Err(Error::corrupt(format!(
                    "uncompressed data block of {} bytes is larger than its {} bytes",
                    src.len(),
                    out.len()
                ))
                .with_offset(pos));
            }
            out[..src.len()].copy_from_slice(&src);
            src.len()
        } else {
            self.comp.decompress(&src, out).map_err(|e| e.with_offset(pos).with_field("data block"))?
        };
        let add = u64::try_from(n).unwrap_or(u64::MAX);
        let before = self.spent.fetch_add(add, Ordering::Relaxed);
        if before.saturating_add(add) > self.cap {
            return Err(Error::out_of_bounds(format!(
                "squashfs data decompressed to more than {} bytes ({DATA_RATIO} times the image plus {DATA_SLACK}: \
                 DATA_RATIO); files sharing blocks expand too far",
                self.cap
            ))
            .with_offset(pos));
        }
        Ok(n)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VecDeque<(u32, Arc<[u8]>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fragment block `index`, decompressed (cached).
    fn fragment(&self, index: u32) -> Result<Arc<[u8]>> {
        if let Some((_, b)) = self.cache().iter().find(|(i, _)| *i == index) {
            return Ok(b.clone());
        }
        let &(pos, word) = usize::try_from(index)
            .ok()
            .and_then(|i| self.fragments.get(i))
            .ok_or_else(|| Error::corrupt(format!("fragment {index} is past the fragment table")))?;
        let mut out = vec![0u8; usize::try_from(self.block_size).unwrap_or(usize::MAX)];
        let n = self.block(pos, word, &mut out)?;
        out.truncate(n);
        let b: Arc<[u8]> = out.into();
        let mut c = self.cache();
        let most = FRAGMENT_CACHE_BYTES / usize::try_from(self.block_size).unwrap_or(usize::MAX).max(1);
        while c.len() >= most.max(1) {
            c.pop_front();
        }
        c.push_back((index, b.clone()));
        Ok(b)
    }
}

/// One regular file's blocks and tail.
#[derive(Debug)]
pub struct File {
    pub data: Arc<Data>,
    pub size: u64,
    /// `(where the block is stored, size word)`; size 0 is a hole.
    pub blocks: Box<[(u64, u32)]>,
    /// `(fragment index, offset in the fragment block)` of the tail.
    pub tail: Option<(u32, u32)>,
}

impl File {
    fn bs(&self) -> u64 {
        u64::from(self.data.block_size)
    }
}

impl ContentRead for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read(buf, offset).map_err(|e| crate::label(e, &self.data.label))
    }

    fn data_ranges(&self, size: u64) -> Result<Vec<(u64, u64)>> {
        let bs = self.bs();
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |start: u64, len: u64| match out.last_mut() {
            Some((s, l)) if *s + *l == start => *l += len,
            _ => out.push((start, len)),
        };
        let mut start = 0u64;
        for &(_, word) in self.blocks.iter() {
            let len = (size.saturating_sub(start)).min(bs);
            if word != 0 && len > 0 {
                push(start, len);
            }
            start += bs;
        }
        if self.tail.is_some() && start < size {
            push(start, size - start);
        }
        Ok(out)
    }
}

impl File {
    fn read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let bs = self.bs();
        let mut done = 0usize;
        let mut block = Vec::new();
        while done < buf.len() {
            let pos = offset + u64::try_from(done).unwrap_or(u64::MAX);
            let i = pos / bs;
            let start = i * bs;
            let len = (self.size - start).min(bs);
            let within = usize::try_from(pos - start).unwrap_or(usize::MAX);
            let len_us = usize::try_from(len).unwrap_or(usize::MAX);
            let n = (len_us - within).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match usize::try_from(i).ok().and_then(|i| self.blocks.get(i)) {
                Some(&(_, 0)) => dst.fill(0),
                Some(&(at, word)) => {
                    block.resize(len_us, 0);
                    let got = self.data.block(at, word, &mut block)?;
                    if got != len_us {
                        return Err(Error::corrupt(format!(
                            "data block {i} decompresses to {got} bytes, the file needs {len}"
                        ))
                        .with_offset(at));
                    }
                    dst.copy_from_slice(&block[within..within + n]);
                }
                None => {
                    let (index, off) =
                        self.tail.ok_or_else(|| Error::corrupt("file has more bytes than blocks and no fragment"))?;
                    let frag = self.data.fragment(index)?;
                    let from = usize::try_from(off).unwrap_or(usize::MAX).saturating_add(within);
                    let src = frag.get(from..from.saturating_add(n)).ok_or_else(|| {
                        Error::corrupt(format!(
                            "file tail at offset {off} runs past fragment block {index} ({} bytes)",
                            frag.len()
                        ))
                    })?;
                    dst.copy_from_slice(src);
                }
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use diskcast_block::ErrorKind;
    use diskcast_testkit::VecDisk;

    /// A hostile image whose file lists one stored block 30 000 times: each read is
    /// bounded, but together they pass DATA_RATIO of the 4 KiB image and stop there.
    #[test]
    fn blocks_shared_by_a_file_stop_at_the_total_cap() {
        let disk: Arc<dyn BlockRead> = Arc::new(VecDisk(vec![7u8; 4096]));
        let data = Arc::new(Data::new(disk, Compressor::Gzip, 4096, Vec::new(), 4096, "hostile.sqsh"));
        let blocks: Box<[(u64, u32)]> = vec![(0, UNCOMPRESSED | 4096); 30_000].into();
        let f = File { data: data.clone(), size: 30_000 * 4096, blocks, tail: None };
        let mut buf = vec![0u8; 1 << 20];
        let mut err = None;
        for i in 0..(30_000 * 4096) / (1 << 20) {
            if let Err(e) = f.read_at(&mut buf, i * (1 << 20)) {
                err = Some(e);
                break;
            }
            assert!(buf.iter().all(|&b| b == 7));
        }
        let e = err.unwrap();
        assert_eq!(e.kind(), ErrorKind::OutOfBounds);
        assert!(e.to_string().starts_with("hostile.sqsh: squashfs: ") && e.to_string().contains("DATA_RATIO"), "{e}");
        assert!(data.spent.load(Ordering::Relaxed) <= data.cap + (1 << 20));
    }
}
