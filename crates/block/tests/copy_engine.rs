//! The copy engine against in-memory disks that check how they are used: zero ranges are
//! never read, sequential writers see strictly increasing offsets, errors and Ctrl-C stop
//! every worker.

#![allow(clippy::unwrap_used, clippy::collapsible_if)] // test doubles panic on misuse by design

use diskcast_block::copy::{CopyOptions, copy, extents, first_difference};
use diskcast_block::progress::{NoProgress, Progress};
use diskcast_block::{
    Alloc, BlockRead, BlockWrite, Encoded, EncodedUnit, Error, ErrorKind, Extent, ImageInfo, Result, WriteOrder,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A disk described by extents; reading a range that is not Data is a test failure.
#[derive(Debug)]
struct MapDisk {
    size: u64,
    extents: Vec<Extent>,
    reads: AtomicU64,
    fail_at: Option<u64>,
}

impl MapDisk {
    /// `data` ranges hold bytes derived from their offset; `zero` ranges are Zero; the
    /// rest is Unallocated.
    fn new(size: u64, data: &[(u64, u64)], zero: &[(u64, u64)]) -> Self {
        let mut marks: Vec<(u64, u64, Alloc)> = data.iter().map(|&(o, l)| (o, l, Alloc::Data)).collect();
        marks.extend(zero.iter().map(|&(o, l)| (o, l, Alloc::Zero)));
        marks.sort_by_key(|m| m.0);
        let mut extents = Vec::new();
        let mut pos = 0;
        for (o, l, a) in marks {
            if o > pos {
                extents.push(Extent { offset: pos, len: o - pos, alloc: Alloc::Unallocated });
            }
            extents.push(Extent { offset: o, len: l, alloc: a });
            pos = o + l;
        }
        if pos < size {
            extents.push(Extent { offset: pos, len: size - pos, alloc: Alloc::Unallocated });
        }
        MapDisk { size, extents, reads: AtomicU64::new(0), fail_at: None }
    }

    fn byte(off: u64) -> u8 {
        // Never zero, so every data byte is visibly data.
        (off.wrapping_mul(2654435761) >> 13) as u8 | 1
    }

    fn expected(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        for e in self.extents.iter().filter(|e| e.alloc == Alloc::Data) {
            for o in e.offset..e.end() {
                v[o as usize] = Self::byte(o);
            }
        }
        v
    }
}

impl BlockRead for MapDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if let Some(f) = self.fail_at {
            if (offset..offset + buf.len() as u64).contains(&f) {
                return Err(Error::corrupt("injected failure").with_offset(f));
            }
        }
        self.reads.fetch_add(buf.len() as u64, Ordering::Relaxed);
        for (i, b) in buf.iter_mut().enumerate() {
            let o = offset + i as u64;
            let e = self.extents.iter().find(|e| e.offset <= o && o < e.end()).unwrap();
            *b = if e.alloc == Alloc::Data { Self::byte(o) } else { 0 };
        }
        Ok(())
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let e = self.extents.iter().find(|e| e.offset <= offset && offset < e.end()).unwrap();
        Ok(Extent { offset, len: (e.end() - offset).min(max_len), alloc: e.alloc })
    }
    fn info(&self) -> ImageInfo {
        ImageInfo::default()
    }
}

/// A writer into memory that records the order of its writes.
#[derive(Debug)]
struct MemWriter {
    data: Mutex<Vec<u8>>,
    written: Mutex<Vec<(u64, u64)>>,
    order: WriteOrder,
    granule: u64,
    compress: bool,
}

impl MemWriter {
    fn new(size: u64, order: WriteOrder, granule: u64) -> Self {
        MemWriter {
            data: Mutex::new(vec![0; size as usize]),
            written: Mutex::new(vec![]),
            order,
            granule,
            compress: false,
        }
    }
}

impl BlockWrite for MemWriter {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn order(&self) -> WriteOrder {
        self.order
    }
    fn granularity(&self) -> u64 {
        self.granule
    }
    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<Encoded> {
        assert_eq!(offset % self.granule, 0, "encode at unaligned offset {offset}");
        if !self.compress {
            return Ok(Encoded::Plain { offset, data });
        }
        // "Compress" each granule by reversing it, as a stand-in for real work per unit.
        let units = data
            .chunks(self.granule as usize)
            .enumerate()
            .map(|(i, c)| EncodedUnit {
                offset: offset + (i as u64) * self.granule,
                len: c.len() as u64,
                stored: c.iter().rev().copied().collect(),
                compressed: true,
            })
            .collect();
        Ok(Encoded::Units(units))
    }
    fn write_encoded(&self, e: Encoded) -> Result<()> {
        let mut d = self.data.lock().unwrap();
        let mut w = self.written.lock().unwrap();
        match e {
            Encoded::Plain { offset, data } => {
                d[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                w.push((offset, data.len() as u64));
            }
            Encoded::Units(units) => {
                for u in units {
                    let plain: Vec<u8> = u.stored.iter().rev().copied().collect();
                    d[u.offset as usize..(u.offset + u.len) as usize].copy_from_slice(&plain);
                    w.push((u.offset, u.len));
                }
            }
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.written.lock().unwrap().push((offset, len));
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

fn opts(threads: usize, chunk: u64) -> CopyOptions {
    CopyOptions { chunk_size: chunk, ..CopyOptions::new(threads) }
}

fn sample() -> MapDisk {
    // Data at odd places, a zero range, holes, and a size that is not a granule multiple.
    MapDisk::new(
        (10 << 20) + 1000,
        &[(0, 4096), (100_000, 70_000), (3 << 20, 2 << 20), ((10 << 20) + 10, 990)],
        &[(6 << 20, 1 << 20)],
    )
}

#[test]
fn copies_exactly_and_never_reads_zero_ranges() {
    for threads in [1, 2, 7] {
        for granule in [512, 4096, 65536] {
            let src = sample();
            let dst = MemWriter::new(src.size, WriteOrder::Any, granule);
            let stats = copy(&src, &dst, &opts(threads, 256 << 10), &NoProgress).unwrap();
            assert_eq!(*dst.data.lock().unwrap(), src.expected(), "threads {threads} granule {granule}");
            let data_bytes: u64 = 4096 + 70_000 + (2 << 20) + 990;
            // Reads are whole granules around the data, never the zero/unallocated megabytes.
            assert!(stats.read >= data_bytes && stats.read <= data_bytes + 8 * granule, "read {}", stats.read);
            assert_eq!(src.reads.load(Ordering::Relaxed), stats.read);
            assert_eq!(stats.zeroed, 0);
        }
    }
}

#[test]
fn sequential_writers_see_increasing_offsets_while_encoding_in_parallel() {
    let src = sample();
    let mut dst = MemWriter::new(src.size, WriteOrder::Sequential, 65536);
    dst.compress = true;
    copy(&src, &dst, &opts(4, 128 << 10), &NoProgress).unwrap();
    assert_eq!(*dst.data.lock().unwrap(), src.expected());
    let w = dst.written.lock().unwrap();
    assert!(w.windows(2).all(|p| p[0].0 + p[0].1 <= p[1].0), "out of order: {w:?}");
}

#[test]
fn min_sparse_zero_writes_everything() {
    let src = sample();
    let dst = MemWriter::new(src.size, WriteOrder::Any, 4096);
    let o = CopyOptions { min_sparse: None, ..opts(2, 1 << 20) };
    copy(&src, &dst, &o, &NoProgress).unwrap();
    let mut w = dst.written.lock().unwrap().clone();
    w.sort();
    let covered: u64 = w.iter().map(|x| x.1).sum();
    assert_eq!(covered, src.size, "every byte must be written with -S 0");
}

#[test]
fn zero_blocks_inside_data_are_not_written() {
    // One data extent whose middle reads as zeros (as raw files with allocated zeros do).
    let mut src = MapDisk::new(1 << 20, &[(0, 1 << 20)], &[]);
    src.extents = vec![Extent { offset: 0, len: 1 << 20, alloc: Alloc::Data }];
    #[derive(Debug)]
    struct Holey(MapDisk);
    impl BlockRead for Holey {
        fn size(&self) -> u64 {
            self.0.size
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.0.read_at(buf, offset)?;
            for (i, b) in buf.iter_mut().enumerate() {
                let o = offset + i as u64;
                if (65536..65536 * 3).contains(&o) {
                    *b = 0;
                }
            }
            Ok(())
        }
        fn extent_at(&self, o: u64, m: u64) -> Result<Extent> {
            self.0.extent_at(o, m)
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }
    let src = Holey(src);
    let dst = MemWriter::new(1 << 20, WriteOrder::Any, 4096);
    let stats = copy(&src, &dst, &opts(2, 1 << 20), &NoProgress).unwrap();
    assert_eq!(stats.written, (1 << 20) - 2 * 65536);
    assert!(dst.written.lock().unwrap().iter().all(|&(o, l)| o + l <= 65536 || o >= 3 * 65536));
}

#[test]
fn a_read_error_stops_the_copy_with_that_error() {
    let mut src = sample();
    src.fail_at = Some((3 << 20) + 12345);
    for order in [WriteOrder::Any, WriteOrder::Sequential] {
        let dst = MemWriter::new(src.size, order, 4096);
        let e = copy(&src, &dst, &opts(3, 64 << 10), &NoProgress).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.offset(), Some((3 << 20) + 12345));
    }
}

#[test]
fn cancel_flag_stops_the_copy() {
    let src = sample();
    let dst = MemWriter::new(src.size, WriteOrder::Any, 4096);
    let flag = Arc::new(AtomicBool::new(true));
    let o = CopyOptions { cancel: Some(flag), ..opts(2, 64 << 10) };
    assert_eq!(copy(&src, &dst, &o, &NoProgress).unwrap_err().kind(), ErrorKind::Cancelled);
}

#[test]
fn progress_adds_up_to_the_disk_size() {
    #[derive(Default)]
    struct Count(AtomicU64, AtomicU64);
    impl Progress for Count {
        fn start(&self, total: u64) {
            self.0.store(total, Ordering::Relaxed);
        }
        fn advance(&self, bytes: u64) {
            self.1.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    let src = sample();
    let dst = MemWriter::new(src.size, WriteOrder::Any, 65536);
    let p = Count::default();
    copy(&src, &dst, &opts(3, 256 << 10), &p).unwrap();
    assert_eq!(p.0.load(Ordering::Relaxed), src.size);
    assert_eq!(p.1.load(Ordering::Relaxed), src.size);
}

#[test]
fn extents_are_merged_and_cover_the_disk() {
    let src = sample();
    let all: Vec<Extent> = extents(&src, true).collect::<Result<_>>().unwrap();
    assert_eq!(all.first().unwrap().offset, 0);
    assert_eq!(all.last().unwrap().end(), src.size);
    assert!(all.windows(2).all(|p| p[0].end() == p[1].offset && p[0].alloc != p[1].alloc));
}

#[test]
fn first_difference_finds_the_lowest_differing_byte() {
    let a = sample();
    let b = sample();
    assert_eq!(first_difference(&a, &b, 3, &NoProgress, None).unwrap(), None);
    // Same map, one extra data range where `a` has a hole.
    let c = MapDisk::new(
        a.size,
        &[(0, 4096), (100_000, 70_000), (3 << 20, 2 << 20), ((10 << 20) + 10, 990), (9 << 20, 7)],
        &[(6 << 20, 1 << 20)],
    );
    assert_eq!(first_difference(&a, &c, 3, &NoProgress, None).unwrap(), Some(9 << 20));
    // A larger disk whose tail is zero compares equal; a data byte in the tail does not.
    let big = MapDisk::new(
        a.size + 5000,
        &[(0, 4096), (100_000, 70_000), (3 << 20, 2 << 20), ((10 << 20) + 10, 990)],
        &[(6 << 20, 1 << 20)],
    );
    assert_eq!(first_difference(&a, &big, 2, &NoProgress, None).unwrap(), None);
    let big_tail = MapDisk::new(
        a.size + 5000,
        &[(0, 4096), (100_000, 70_000), (3 << 20, 2 << 20), ((10 << 20) + 10, 990), (a.size + 4000, 1)],
        &[(6 << 20, 1 << 20)],
    );
    assert_eq!(first_difference(&a, &big_tail, 2, &NoProgress, None).unwrap(), Some(a.size + 4000));
}
