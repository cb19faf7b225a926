//! Whether the internal log is clean: its last record must be an unmount record, as the
//! kernel decides at mount. A log that needs recovery is replayed in memory (its
//! committed transactions, from the tail the last record names up to the head, applied
//! by [`crate::replay`] over the disk); what replay does not support is refused by name,
//! never read stale.
//!
//! The log is a ring of 512-byte basic blocks, each starting with the cycle number of
//! the pass that wrote it. The head (where the next record goes) is the first block whose
//! cycle is lower than block 0's (or the ring's end when every block has block 0's
//! cycle); the record just before the head is the last one written.

use crate::fs::Fs;
use crate::layout::{LOG_MAGIC, LOG_UNMOUNT_TRANS, hdr};
use crate::replay::{self, Item, MAX_ITEM_REGIONS, Overlay};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{be32, be64};
use std::collections::HashMap;

/// Basic blocks behind the head searched for holes and for the last record header: the
/// kernel keeps at most 8 log buffers of at most 256 KiB in flight, so the last record
/// starts within that window.
const WINDOW: u64 = 8 * 256 * 1024 / 512;
/// Largest log read: mkfs.xfs makes at most 2 GiB logs (and a tail).
const MAX_LOG_BYTES: u64 = 4 << 30;
/// Largest log record (`XLOG_MAX_RECORD_BSIZE`): the kernel's log buffers are at most
/// 256 KiB.
pub const MAX_RECORD_BYTES: u64 = 256 * 1024;
/// Bytes of a record header the CRC covers: the header structure as 64-bit kernels lay it
/// out (328, padded) and as 32-bit x86 does (324); the kernel accepts either.
const REC_CRC_SIZES: [usize; 2] = [328, 324];
/// Cycle data words a record header holds (one per 512-byte block of the first 32 KiB);
/// each extended header holds as many more, after its own cycle word.
const CYCLE_WORDS: u64 = 64;
/// Bytes of an extended record header the CRC covers (cycle word and 64 cycle data words).
const EXT_HDR_CRC: usize = 260;
/// Log operation flags and clients.
mod op {
    pub const START: u8 = 0x01;
    pub const COMMIT: u8 = 0x02;
    pub const WAS_CONT: u8 = 0x08;
    pub const TRANSACTION: u8 = 0x69;
    pub const LOG: u8 = 0xaa;
}
/// A transaction header's magic `TRAN` (host byte order: little-endian).
const TRANS_MAGIC: u32 = 0x5452_414e;

/// The error every dirty log gets.
pub fn needs_recovery(why: &str) -> Error {
    Error::refused(format!(
        "XFS log needs recovery ({why}): the filesystem was not cleanly unmounted. Mount it once (the kernel \
         replays the log) or run xfs_repair, then read it again; diskcast does not replay this log"
    ))
    .with_field("log")
}

/// A damaged log, naming what is wrong.
pub fn bad(what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!("XFS log: {what}")).with_field("log")
}

/// The log of `len` bytes at byte `at` of the filesystem's disk: `None` when it was
/// cleanly unmounted, else its committed transactions replayed over the disk.
pub fn recover(fs: &Fs, at: u64, len: u64) -> Result<Option<Overlay>> {
    let disk = fs.disk.as_ref();
    if !(64 * 512..=MAX_LOG_BYTES).contains(&len) {
        return Err(Error::corrupt(format!("XFS log of {len} bytes")).with_field("sb_logblocks"));
    }
    let nbb = len / 512;
    let mut word = [0u8; 8];
    // A block's cycle: its first word, or the second of a record header (whose first is
    // the magic); and whether it is a record header.
    let mut cycle = |blk: u64| -> Result<(u32, bool)> {
        disk.read_at(&mut word, at + blk * 512)?;
        let [a, b, c, d, e, f, g, h] = word;
        let first = u32::from_be_bytes([a, b, c, d]);
        Ok(if first == LOG_MAGIC { (u32::from_be_bytes([e, f, g, h]), true) } else { (first, false) })
    };
    let c0 = cycle(0)?.0;
    let last = cycle(nbb - 1)?.0;
    // Head: the first block of a lower cycle, found by halving (blocks before it carry
    // c0, blocks from it on c0 - 1), then any hole in the window before it.
    let mut head = nbb;
    if last != c0 {
        let (mut lo, mut hi) = (0u64, nbb - 1);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if cycle(mid)?.0 == c0 { lo = mid } else { hi = mid }
        }
        head = hi;
    }
    let start = head.saturating_sub(WINDOW);
    for b in start..head {
        if cycle(b)?.0 != c0 {
            head = b;
            break;
        }
    }
    // The last record header before the head (wrapping around the ring).
    let mut found = None;
    for back in 1..=WINDOW.min(nbb) {
        let b = (head + nbb - back) % nbb;
        if cycle(b)?.1 {
            found = Some(b);
            break;
        }
    }
    let Some(rec) = found else {
        return Err(needs_recovery("no log record found before the head"));
    };
    let mut h = vec![0u8; 512];
    disk.read_at(&mut h, at + rec * 512)?;
    let version = be32(&h, 8, "XFS log record")?;
    let data_len = u64::from(be32(&h, 12, "XFS log record")?);
    let ops = be32(&h, 40, "XFS log record")?;
    let size = u64::from(be32(&h, 320, "XFS log record")?);
    let hblks = if version & 2 != 0 && size > 32768 { size.div_ceil(32768) } else { 1 };
    let after = (rec + hblks + data_len.div_ceil(512)) % nbb;
    if after == head % nbb && ops == 1 {
        let mut op = [0u8; hdr::LOG_OP];
        disk.read_at(&mut op, at + ((rec + hblks) % nbb) * 512)?;
        if op[9] & LOG_UNMOUNT_TRANS != 0 {
            return Ok(None);
        }
    }
    // Dirty: replay from the tail the last record names.
    let tail = be64(&h, 24, "XFS log record")? & 0xffff_ffff;
    if tail >= nbb {
        return Err(bad(format!("the last record names a tail at block {tail} of a {nbb}-block log")));
    }
    let log = Ring { disk, at, nbb };
    let transactions = log.transactions(tail, head % nbb, fs.v5)?;
    replay::apply(fs, &transactions).map(Some)
}

/// The log's blocks, read around the ring's end.
struct Ring<'a> {
    disk: &'a dyn BlockRead,
    at: u64,
    nbb: u64,
}

/// A transaction being gathered: its header's bytes, then its items.
#[derive(Default)]
struct Trans {
    header: Vec<u8>,
    items: Vec<Item>,
}

impl Ring<'_> {
    /// `count` blocks from block `blk` (at most the whole ring).
    fn read(&self, blk: u64, count: u64) -> Result<Vec<u8>> {
        let bytes = usize::try_from(count * 512).map_err(|_| bad("record size"))?;
        let mut out = vec![0u8; bytes];
        let first = count.min(self.nbb - blk);
        let split = usize::try_from(first * 512).map_err(|_| bad("record size"))?;
        self.disk.read_at(&mut out[..split], self.at + blk * 512)?;
        self.disk.read_at(&mut out[split..], self.at)?;
        Ok(out)
    }

    /// The committed transactions of the records from `tail` to `head`, in commit order.
    /// Each record must end at or before the head, so the walk ends within one pass of
    /// the ring.
    fn transactions(&self, tail: u64, head: u64, v5: bool) -> Result<Vec<Vec<Item>>> {
        let mut open: HashMap<u32, Trans> = HashMap::new();
        let mut done = Vec::new();
        let mut blk = tail;
        while blk != head {
            let h = self.read(blk, 1)?;
            let what = format!("the record at block {blk}");
            if be32(&h, 0, "XFS log record")? != LOG_MAGIC {
                return Err(bad(format!(
                    "no record header at block {blk} (between the tail at {tail} and the head at {head})"
                )));
            }
            let version = be32(&h, 8, "XFS log record")?;
            let data_len = u64::from(be32(&h, 12, "XFS log record")?);
            let size = u64::from(be32(&h, 320, "XFS log record")?);
            let hblks = if version & 2 != 0 && size > 32768 { size.div_ceil(32768) } else { 1 };
            if !(1..=2).contains(&version) || size > MAX_RECORD_BYTES || data_len > MAX_RECORD_BYTES {
                return Err(bad(format!(
                    "{what}: version {version}, {data_len} bytes in a {size}-byte buffer (at most MAX_RECORD_BYTES, {MAX_RECORD_BYTES})"
                )));
            }
            let dblks = data_len.div_ceil(512);
            let room = (head + self.nbb - blk) % self.nbb;
            if hblks + dblks > room {
                return Err(bad(format!("{what}: its {} blocks run past the head at block {head}", hblks + dblks)));
            }
            if dblks > hblks * CYCLE_WORDS {
                return Err(bad(format!("{what}: {dblks} data blocks with {hblks} header blocks")));
            }
            let ext = self.read((blk + 1) % self.nbb, hblks - 1)?;
            let mut data = self.read((blk + hblks) % self.nbb, dblks)?;
            let dl = usize::try_from(data_len).map_err(|_| bad("record size"))?;
            data.truncate(dl);
            let stored = u32::from_le_bytes([h[32], h[33], h[34], h[35]]);
            if v5 || stored != 0 {
                // The header with its CRC field as zero, the extended headers, the data.
                let computed = REC_CRC_SIZES.map(|n| {
                    let mut c = crc32c::crc32c(&h[..32]);
                    c = crc32c::crc32c_append(c, &[0; 4]);
                    c = crc32c::crc32c_append(c, &h[36..n]);
                    for e in ext.chunks_exact(512) {
                        c = crc32c::crc32c_append(c, &e[..EXT_HDR_CRC]);
                    }
                    crc32c::crc32c_append(c, &data)
                });
                if !computed.contains(&stored) {
                    return Err(bad(format!(
                        "{what}: CRC mismatch (stored {stored:#010x}, computed {:#010x}); the log is damaged",
                        computed[0]
                    )));
                }
            }
            // Each block's first word was replaced by the cycle number when written; the
            // words it held are kept in the headers.
            for i in 0..dblks {
                let (src, o) = if i < CYCLE_WORDS {
                    (&h, 44 + i * 4)
                } else {
                    (&ext, (i / CYCLE_WORDS - 1) * 512 + 4 + (i % CYCLE_WORDS) * 4)
                };
                let o = usize::try_from(o).map_err(|_| bad("cycle data"))?;
                let d = usize::try_from(i * 512).map_err(|_| bad("cycle data"))?;
                let n = 4.min(data.len() - d);
                data[d..d + n].copy_from_slice(&src[o..o + n]);
            }
            let nops = be32(&h, 40, "XFS log record")?;
            self.ops(&data, nops, &what, &mut open, &mut done)?;
            blk = (blk + hblks + dblks) % self.nbb;
        }
        // Transactions not committed before the head are dropped, as the kernel drops them.
        Ok(done)
    }

    /// The `nops` operations of one record's data.
    fn ops(
        &self,
        data: &[u8],
        nops: u32,
        what: &str,
        open: &mut HashMap<u32, Trans>,
        done: &mut Vec<Vec<Item>>,
    ) -> Result<()> {
        let mut p = 0usize;
        for n in 0..nops {
            if p + hdr::LOG_OP > data.len() {
                return Err(bad(format!(
                    "{what}: operation {n} of {nops} starts past the record's {} bytes",
                    data.len()
                )));
            }
            let tid = be32(data, p, "XFS log operation")?;
            let len = usize::try_from(be32(data, p + 4, "XFS log operation")?).unwrap_or(usize::MAX);
            let (client, flags) = (data[p + 8], data[p + 9]);
            p += hdr::LOG_OP;
            if len > data.len() - p {
                return Err(bad(format!(
                    "{what}: operation {n} of {len} bytes runs past the record's {} bytes",
                    data.len()
                )));
            }
            let body = &data[p..p + len];
            p += len;
            match client {
                op::LOG => continue, // an unmount record
                op::TRANSACTION => {}
                c => return Err(bad(format!("{what}: operation {n} of client {c:#04x}"))),
            }
            if flags & op::START != 0 {
                if open.insert(tid, Trans::default()).is_some() {
                    return Err(bad(format!("{what}: transaction {tid:#x} starts twice")));
                }
                continue;
            }
            // A transaction that began before the tail is complete on disk already.
            let Some(t) = open.get_mut(&tid) else { continue };
            let in_header = t.items.is_empty() && t.header.len() < 16;
            if flags & op::WAS_CONT != 0 && !body.is_empty() {
                if in_header {
                    t.header.extend_from_slice(body);
                } else if let Some(r) = t.items.last_mut().and_then(|i| i.regions.last_mut()) {
                    r.extend_from_slice(body);
                } else {
                    return Err(bad(format!("{what}: operation {n} continues nothing")));
                }
            } else if in_header {
                t.header.extend_from_slice(body);
            } else if !body.is_empty() {
                let full = t.items.last().is_none_or(|i| i.want() != 0 && i.regions.len() >= i.want());
                if full {
                    t.items.push(Item::default());
                }
                let item = t.items.last_mut().ok_or_else(|| bad("no item"))?;
                item.regions.push(body.to_vec());
                let want = item.want();
                if want > MAX_ITEM_REGIONS || (item.regions[0].len() >= 4 && want == 0) {
                    return Err(bad(format!(
                        "{what}: transaction {tid:#x} has an item of {want} regions (at most MAX_ITEM_REGIONS, {MAX_ITEM_REGIONS})"
                    )));
                }
            }
            if flags & op::COMMIT != 0 {
                let t = open.remove(&tid).unwrap_or_default();
                let magic = t.header.get(..4).map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
                if magic != Some(TRANS_MAGIC) {
                    return Err(bad(format!("{what}: transaction {tid:#x} has no transaction header")));
                }
                if let Some(i) = t.items.iter().find(|i| i.want() == 0 || i.regions.len() != i.want()) {
                    return Err(bad(format!(
                        "{what}: transaction {tid:#x} commits an item with {} of its {} regions",
                        i.regions.len(),
                        i.want()
                    )));
                }
                done.push(t.items);
            }
        }
        Ok(())
    }
}
