//! Writing streamOptimized images front to back, without seeking, so the output can be a
//! pipe (VMware Virtual Disk Format 5.0, "Stream-Optimized Compressed Sparse Extents").
//!
//! Layout: header (`gdOffset` = GD_AT_END) and descriptor, padding to 64 KiB, then each
//! grain as a marker `{lba: u64, size: u32}` + zlib stream, padded to a sector. A grain
//! table is emitted (GT marker + table) once the stream moves past it; all-empty tables
//! are not written (directory entry 0). Then the grain directory (GD marker), the footer
//! (footer marker + a header copy with the real `gdOffset`) and the end-of-stream marker.
//! Compression runs in [`BlockWrite::encode`] on the copy engine's threads; only the
//! appending is sequential.

use crate::header::{
    COMPRESSION_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NL_DETECT, FLAG_ZERO_GRAIN, GD_AT_END, GRAIN_MARKER_LEN,
    GTE_ZEROED, MARKER_FOOTER, MARKER_GD, MARKER_GT, MAX_GTES_PER_GT, RawMarker, SECTOR, SparseHeader, metadata_marker,
};
use crate::writer::{DESC_SECTORS, GRAIN_SECTORS, GT_LEN, GTES_PER_GT, Params, gt_index};
use diskcast_block::io::ImageFile;
use diskcast_block::range_end;
use diskcast_block::{BlockWrite, Encoded, EncodedUnit, Error, Result, WriteOrder};
use diskcast_layout::{IntoBytes, fit, u64_from_usize, usize_from_u64};
use std::io::{BufWriter, Write};
use std::sync::Mutex;

/// zlib level for grains. qemu uses 6 (zlib's default) on one thread. On a 1 GiB disk
/// half filled with /usr files (tests/perf.rs), zlib-rs at level 4 costs half the CPU of
/// level 6 per grain and the whole output is 4.4 % larger than qemu-img's (level 5:
/// 3.3 %, level 6: 3.1 %, level 3: 5.6 %).
pub const LEVEL: u32 = 4;
/// Where grains start, in sectors (qemu's overhead: 64 KiB).
const OVERHEAD_SECTORS: u64 = 128;
/// Output buffer: grains are small writes, a pipe or file gets megabyte writes.
const BUF_BYTES: usize = 1 << 20;

struct State {
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    /// Bytes emitted so far (always a multiple of 512 between records).
    pos: u64,
    /// Index of the grain table being filled, and its entries.
    cur_gt: u64,
    gt: Vec<u32>,
    /// Grain directory: sector of each emitted table (0: empty table, not written).
    gd: Vec<u32>,
    /// Grains below this were emitted or passed over.
    next_grain: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("pos", &self.pos).field("cur_gt", &self.cur_gt).finish_non_exhaustive()
    }
}

/// A streamOptimized image being written to any `Write`.
#[derive(Debug)]
pub struct StreamWriter {
    p: Params,
    grain: u64,
    level: flate2::Compression,
    state: Mutex<State>,
}

/// An append-only `Write` over an output file (positional writes, no seeking).
#[derive(Debug)]
pub(crate) struct FileSink {
    pub(crate) file: ImageFile,
    pub(crate) pos: u64,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all_at(buf, self.pos).map_err(std::io::Error::other)?;
        self.pos += u64_from_usize(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::io("cannot write the streamOptimized output", e)
}

impl StreamWriter {
    /// Starts a stream: writes the header, descriptor and padding to `out`. `name` is the
    /// file name recorded in the descriptor's extent line.
    pub fn new(out: Box<dyn Write + Send>, p: Params, name: &str) -> Result<Self> {
        let capacity = p.size / SECTOR;
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let gt_count = grains.div_ceil(GTES_PER_GT);
        let text = p.descriptor(vec![format!("RW {capacity} SPARSE \"{name}\"")], None);
        if u64_from_usize(text.len()) > DESC_SECTORS * SECTOR {
            return Err(Error::argument("the VMDK descriptor does not fit in 20 sectors (file name too long?)"));
        }
        let mut head = vec![0u8; usize_from_u64(OVERHEAD_SECTORS * SECTOR, "header size")?];
        head[..512].copy_from_slice(&header(&p, GD_AT_END).serialize());
        head[512..512 + text.len()].copy_from_slice(text.as_bytes());
        let mut out = BufWriter::with_capacity(BUF_BYTES, out);
        out.write_all(&head).map_err(io_err)?;
        let gd = vec![0u32; usize::try_from(gt_count).map_err(|_| Error::argument("disk too large"))?];
        Ok(StreamWriter {
            grain: GRAIN_SECTORS * SECTOR,
            level: flate2::Compression::new(LEVEL),
            state: Mutex::new(State {
                out: Some(out),
                pos: u64_from_usize(head.len()),
                cur_gt: 0,
                gt: vec![0u32; GT_LEN],
                gd,
                next_grain: 0,
            }),
            p,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A zlib stream of one grain (zero-padded to a whole grain at the disk's end).
    fn deflate(&self, data: &[u8]) -> Result<Vec<u8>> {
        let padded;
        let input = if u64_from_usize(data.len()) < self.grain {
            let mut v = data.to_vec();
            v.resize(usize_from_u64(self.grain, "grain size")?, 0);
            padded = v;
            &padded[..]
        } else {
            data
        };
        let level = if diskcast_block::compress::looks_incompressible(input) {
            flate2::Compression::none()
        } else {
            self.level
        };
        let mut c = flate2::Compress::new(level, true);
        let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 64);
        loop {
            let consumed = usize_from_u64(c.total_in(), "total_in")?;
            let status = c
                .compress_vec(&input[consumed..], &mut out, flate2::FlushCompress::Finish)
                .map_err(|e| Error::io("deflate failed", std::io::Error::other(e)))?;
            if status == flate2::Status::StreamEnd {
                return Ok(out);
            }
            out.reserve(out.capacity().max(4096));
        }
    }

    fn emit(st: &mut State, bytes: &[u8]) -> Result<()> {
        let out = st.out.as_mut().ok_or_else(|| Error::argument("stream already finished"))?;
        out.write_all(bytes).map_err(io_err)?;
        st.pos += u64_from_usize(bytes.len());
        Ok(())
    }

    /// Writes the table being filled if it has entries, and moves to table `t`.
    fn flush_gt(st: &mut State, t: u64) -> Result<()> {
        if t == st.cur_gt {
            return Ok(());
        }
        if st.gt.iter().any(|&e| e != 0) {
            Self::emit(st, &metadata_marker(GTES_PER_GT * 4 / SECTOR, MARKER_GT))?;
            let sector =
                u32::try_from(st.pos / SECTOR).map_err(|_| Error::argument("the VMDK file would exceed 2 TiB"))?;
            let mut b = Vec::with_capacity(st.gt.len() * 4);
            for e in &st.gt {
                b.extend_from_slice(&e.to_le_bytes());
            }
            Self::emit(st, &b)?;
            if let Some(slot) = st.gd.get_mut(usize_from_u64(st.cur_gt, "grain table index")?) {
                *slot = sector;
            }
            st.gt.fill(0);
        }
        st.cur_gt = t;
        Ok(())
    }

    /// Appends one compressed grain.
    fn write_grain(&self, st: &mut State, offset: u64, stored: &[u8]) -> Result<()> {
        if !offset.is_multiple_of(self.grain) || offset >= self.p.size {
            return Err(
                Error::argument("streamOptimized grains must start on a grain inside the disk").with_offset(offset)
            );
        }
        let g = offset / self.grain;
        if g < st.next_grain {
            return Err(
                Error::argument("streamOptimized takes grains in increasing order, once each").with_offset(offset)
            );
        }
        if stored.is_empty() || u64_from_usize(stored.len()) > self.grain * 2 {
            return Err(Error::argument("compressed grain has an impossible size").with_offset(offset));
        }
        Self::flush_gt(st, g / GTES_PER_GT)?;
        let sector = u32::try_from(st.pos / SECTOR).map_err(|_| Error::argument("the VMDK file would exceed 2 TiB"))?;
        let total =
            usize_from_u64(u64_from_usize(GRAIN_MARKER_LEN + stored.len()).next_multiple_of(SECTOR), "grain record")?;
        let mut rec = Vec::with_capacity(total);
        let marker = RawMarker {
            val: (offset / SECTOR).into(),
            size: fit::<u32, u64>(u64_from_usize(stored.len()), "grain marker size")?.into(),
            kind: 0.into(),
        };
        rec.extend_from_slice(&marker.as_bytes()[..GRAIN_MARKER_LEN]);
        rec.extend_from_slice(stored);
        rec.resize(total, 0);
        Self::emit(st, &rec)?;
        st.gt[gt_index(g)] = sector;
        st.next_grain = g + 1;
        Ok(())
    }
}

/// The header (or footer copy) of a stream with the grain directory at `gd_offset`.
fn header(p: &Params, gd_offset: u64) -> SparseHeader {
    SparseHeader {
        version: 3,
        flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS | if p.zeroed_grain { FLAG_ZERO_GRAIN } else { 0 },
        capacity: p.size / SECTOR,
        grain_size: GRAIN_SECTORS,
        desc_offset: 1,
        desc_size: DESC_SECTORS,
        gtes_per_gt: MAX_GTES_PER_GT,
        rgd_offset: 0,
        gd_offset,
        overhead: OVERHEAD_SECTORS,
        unclean_shutdown: 0,
        compress_algorithm: COMPRESSION_DEFLATE,
    }
}

impl BlockWrite for StreamWriter {
    fn size(&self) -> u64 {
        self.p.size
    }

    fn order(&self) -> WriteOrder {
        WriteOrder::Sequential
    }

    fn granularity(&self) -> u64 {
        self.grain
    }

    fn encode(&self, offset: u64, data: Vec<u8>) -> Result<Encoded> {
        let mut units = Vec::with_capacity(data.len().div_ceil(usize_from_u64(self.grain, "grain size")?));
        for (i, chunk) in data.chunks(usize_from_u64(self.grain, "grain size")?).enumerate() {
            units.push(EncodedUnit {
                offset: offset + u64_from_usize(i) * self.grain,
                len: u64_from_usize(chunk.len()),
                stored: self.deflate(chunk)?,
                compressed: true,
            });
        }
        Ok(Encoded::Units(units))
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        let units = match encoded {
            Encoded::Units(u) => u,
            Encoded::Plain { offset, data } => match self.encode(offset, data)? {
                Encoded::Units(u) => u,
                Encoded::Plain { offset, .. } => {
                    return Err(Error::argument("streamOptimized data must be encoded").with_offset(offset));
                }
            },
        };
        let mut st = self.lock();
        for u in units {
            if !u.compressed {
                return Err(Error::argument("streamOptimized grains must be compressed").with_offset(u.offset));
            }
            self.write_grain(&mut st, u.offset, &u.stored)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let end = range_end(offset, len, self.p.size)?;
        if !self.p.zeroed_grain {
            // Grains not written read as zeros; written ones cannot be rewritten.
            let st = self.lock();
            if offset / self.grain < st.next_grain && len > 0 {
                return Err(Error::argument("streamOptimized cannot zero a grain already written").with_offset(offset));
            }
            return Ok(());
        }
        let mut st = self.lock();
        let mut g = offset.div_ceil(self.grain);
        while g * self.grain < end {
            let gend = ((g + 1) * self.grain).min(self.p.size);
            if gend > end {
                break;
            }
            if g < st.next_grain {
                return Err(
                    Error::argument("streamOptimized takes zero grains in order too").with_offset(g * self.grain)
                );
            }
            Self::flush_gt(&mut st, g / GTES_PER_GT)?;
            st.gt[gt_index(g)] = GTE_ZEROED;
            st.next_grain = g + 1;
            g += 1;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let p = self.p.clone();
        let mut st = self.state.into_inner().unwrap_or_else(|p| p.into_inner());
        let past = st.cur_gt + 1;
        Self::flush_gt(&mut st, past)?;
        let gd_bytes = (u64_from_usize(st.gd.len()) * 4).next_multiple_of(SECTOR);
        Self::emit(&mut st, &metadata_marker(gd_bytes / SECTOR, MARKER_GD))?;
        let gd_sector = st.pos / SECTOR;
        let mut b = Vec::with_capacity(usize_from_u64(gd_bytes, "grain directory size")?);
        for e in &st.gd {
            b.extend_from_slice(&e.to_le_bytes());
        }
        b.resize(usize_from_u64(gd_bytes, "grain directory size")?, 0);
        Self::emit(&mut st, &b)?;
        Self::emit(&mut st, &metadata_marker(1, MARKER_FOOTER))?;
        Self::emit(&mut st, &header(&p, gd_sector).serialize())?;
        Self::emit(&mut st, &[0u8; 512])?;
        let mut out = st.out.take().ok_or_else(|| Error::argument("stream already finished"))?;
        out.flush().map_err(io_err)?;
        Ok(())
    }
}
