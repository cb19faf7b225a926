//! Whether the internal log is clean: its last record must be an unmount record, as the
//! kernel decides at mount. A log that needs recovery is refused: its metadata changes
//! are not yet in place, and reading without them would show a stale tree.
//!
//! The log is a ring of 512-byte basic blocks, each starting with the cycle number of
//! the pass that wrote it. The head (where the next record goes) is the first block whose
//! cycle is lower than block 0's (or the ring's end when every block has block 0's
//! cycle); the record just before the head is the last one written.

use crate::layout::{LOG_MAGIC, LOG_UNMOUNT_TRANS, hdr};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::be32;

/// Basic blocks behind the head searched for holes and for the last record header: the
/// kernel keeps at most 8 log buffers of at most 256 KiB in flight, so the last record
/// starts within that window.
const WINDOW: u64 = 8 * 256 * 1024 / 512;
/// Largest log read: mkfs.xfs makes at most 2 GiB logs (and a tail).
const MAX_LOG_BYTES: u64 = 4 << 30;

/// The error every dirty log gets.
pub fn needs_recovery(why: &str) -> Error {
    Error::refused(format!(
        "XFS log needs recovery ({why}): the filesystem was not cleanly unmounted. Mount it once (the kernel \
         replays the log) or run xfs_repair, then read it again; diskcast does not replay XFS logs"
    ))
    .with_field("log")
}

/// Checks that the log of `len` bytes at byte `at` of `disk` was cleanly unmounted.
pub fn check_clean(disk: &dyn BlockRead, at: u64, len: u64) -> Result<()> {
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
    if after != head % nbb || ops != 1 {
        return Err(needs_recovery("its last record is not an unmount record"));
    }
    let mut op = [0u8; hdr::LOG_OP];
    disk.read_at(&mut op, at + ((rec + hblks) % nbb) * 512)?;
    if op[9] & LOG_UNMOUNT_TRANS == 0 {
        return Err(needs_recovery("its last record is a transaction, not an unmount record"));
    }
    Ok(())
}
