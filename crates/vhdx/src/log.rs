//! The VHDX metadata log: finding the active sequence of entries and replaying it.
//!
//! The log is a circular buffer of 4 KiB sectors. An entry starts with a 64-byte header
//! ("loge", CRC-32C over the whole entry, its length, the tail offset, a sequence number,
//! the descriptor count, the log GUID, the flushed and last file offsets), then 32-byte
//! descriptors ("desc" for a data sector, "zero" for a zeroed range) filling whole sectors,
//! then one "data" sector per data descriptor. The active sequence is the chain of
//! consecutive entries (sequence numbers +1) whose head has the highest sequence number
//! and whose head's tail field names an entry of the chain; replay applies the entries
//! from that tail to the head.

use crate::format::{HEADER_OFFSETS, Header, MIB, crc_with_hole};
use crate::layout::{ActiveHeader, log_region};
use diskcast_block::io::ImageFile;
use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result};
use diskcast_layout::{fit, high_u32, le32, le64, low_u32, u64_from_usize, usize_from_u64};
use uuid::Uuid;

/// Log sectors are 4 KiB.
pub const SECTOR: u64 = 4096;
/// Largest log we read into memory; qemu and Hyper-V make 1 MiB logs.
pub const MAX_LOG_BYTES: u64 = 64 * MIB;

/// One validated entry of the active sequence.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Byte offset of the entry inside the log.
    pub pos: u64,
    /// Entry length in bytes.
    pub len: u64,
    /// Sequence number.
    pub seq: u64,
    /// Tail offset the entry records.
    pub tail: u64,
    /// File size the writer had flushed.
    pub flushed_file_offset: u64,
    /// File size the writer needed.
    pub last_file_offset: u64,
    /// What to write.
    pub ops: Vec<Op>,
}

/// One write of a log entry.
#[derive(Debug, Clone)]
pub enum Op {
    /// 4 KiB of data at a file offset.
    Data { file_offset: u64, data: Vec<u8> },
    /// Zeros over a range.
    Zero { file_offset: u64, len: u64 },
}

/// The log read into memory.
struct Log {
    buf: Vec<u8>,
    guid: Uuid,
}

impl Log {
    fn len(&self) -> u64 {
        u64_from_usize(self.buf.len())
    }

    /// `len` bytes from log offset `pos`, wrapping around the end.
    fn bytes(&self, pos: u64, len: u64) -> Vec<u8> {
        let n = self.len().max(1);
        // Positions are below the buffer's length, so they fit in usize; the capacity is a hint.
        let at = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let mut p = pos % n;
        let mut left = len;
        while left > 0 {
            let take = left.min(n - p);
            out.extend_from_slice(self.buf.get(at(p)..at(p + take)).unwrap_or(&[]));
            left -= take;
            p = (p + take) % n;
        }
        out
    }

    /// The valid entry at `pos`, if any.
    fn entry(&self, pos: u64) -> Option<Entry> {
        let head = self.bytes(pos, 64);
        if head.get(0..4) != Some(b"loge") {
            return None;
        }
        // A short read is no valid entry, like any other mismatch.
        let len = u64::from(le32(&head, 8, "log entry length").ok()?);
        let seq = le64(&head, 16, "log entry sequence number").ok()?;
        let count = u64::from(le32(&head, 24, "log entry descriptor count").ok()?);
        let log_guid = Uuid::from_bytes_le(head.get(32..48)?.try_into().ok()?);
        if len == 0 || len % SECTOR != 0 || len > self.len() || seq == 0 || log_guid != self.guid {
            return None;
        }
        // The header and descriptors fill whole sectors: 126 in the first, 128 after.
        let desc_sectors = (count + 2).div_ceil(128);
        if desc_sectors * SECTOR > len {
            return None;
        }
        // Structure first (cheap, and every sector it accepts belongs to this entry alone:
        // descriptor and data sectors cannot also start an entry), the CRC last. This keeps
        // a log full of fake headers from costing a CRC of the whole log per sector.
        let descs = self.bytes(pos, desc_sectors * SECTOR);
        let mut crc = crc_with_hole(&descs, 4);
        let mut data_sector = desc_sectors;
        let mut ops = Vec::new();
        for i in 0..usize_from_u64(count, "log descriptor count").ok()? {
            let d = descs.get(64 + 32 * i..96 + 32 * i)?;
            let file_offset = le64(d, 16, "log descriptor file offset").ok()?;
            if le64(d, 24, "log descriptor sequence number").ok()? != seq || !file_offset.is_multiple_of(SECTOR) {
                return None;
            }
            match d.get(0..4)? {
                b"zero" => {
                    let zlen = le64(d, 8, "log zero descriptor length").ok()?;
                    if !zlen.is_multiple_of(SECTOR) {
                        return None;
                    }
                    ops.push(Op::Zero { file_offset, len: zlen });
                }
                b"desc" => {
                    if (data_sector + 1) * SECTOR > len {
                        return None;
                    }
                    let s = self.bytes(pos + data_sector * SECTOR, SECTOR);
                    let sseq = diskcast_layout::join_u32(
                        le32(&s, 4, "log data sector sequence high").ok()?,
                        le32(&s, 4092, "log data sector sequence low").ok()?,
                    );
                    if s.get(0..4) != Some(b"data") || sseq != seq {
                        return None;
                    }
                    crc = crc32c::crc32c_append(crc, &s);
                    let mut data = Vec::with_capacity(4096);
                    data.extend_from_slice(d.get(8..16)?);
                    data.extend_from_slice(s.get(8..4092)?);
                    data.extend_from_slice(d.get(4..8)?);
                    ops.push(Op::Data { file_offset, data });
                    data_sector += 1;
                }
                _ => return None,
            }
        }
        // Every sector after the descriptors is one data descriptor's sector.
        if data_sector * SECTOR != len || crc != le32(&head, 4, "log entry checksum").ok()? {
            return None;
        }
        Some(Entry {
            pos,
            len,
            seq,
            tail: u64::from(le32(&head, 12, "log entry tail").ok()?),
            flushed_file_offset: le64(&head, 48, "log entry flushed file offset").ok()?,
            last_file_offset: le64(&head, 56, "log entry last file offset").ok()?,
            ops,
        })
    }
}

/// The entries to replay (tail to head) when the log holds an active sequence.
pub fn active_sequence(file: &dyn ByteSource, active: &ActiveHeader) -> Result<Option<Vec<Entry>>> {
    let hdr = &active.header;
    if hdr.log_guid.is_nil() {
        return Ok(None);
    }
    let Some((off, len)) = log_region(active, file.len()?)? else {
        return Ok(None);
    };
    if len > MAX_LOG_BYTES {
        return Err(Error::unsupported(format!("log of {len} bytes is larger than the {MAX_LOG_BYTES} we read"))
            .with_field("log_length"));
    }
    let mut buf = vec![0u8; usize_from_u64(len, "length")?];
    file.read_exact_at(&mut buf, off)?;
    let log = Log { buf, guid: hdr.log_guid };
    let sectors = len / SECTOR;
    let mut visited = vec![false; usize_from_u64(sectors, "log sectors")?];
    let mut best: Option<Vec<Entry>> = None;
    for start in 0..sectors {
        if visited.get(usize_from_u64(start, "log sector")?).copied().unwrap_or(true) {
            continue;
        }
        let mut chain: Vec<Entry> = Vec::new();
        let mut pos = start * SECTOR;
        let mut total = 0u64;
        // Bounded: every entry is at least one sector and the chain stops at one lap.
        while let Some(e) = log.entry(pos) {
            if chain.last().is_some_and(|p| p.seq.checked_add(1) != Some(e.seq)) || total + e.len > len {
                break;
            }
            if let Some(v) = visited.get_mut(usize_from_u64(pos / SECTOR, "log position")?) {
                *v = true;
            }
            total += e.len;
            pos = (pos + e.len) % len;
            chain.push(e);
        }
        let Some(head) = chain.last() else { continue };
        let Some(tail_idx) = chain.iter().position(|e| e.pos == head.tail) else { continue };
        let better = best.as_ref().and_then(|b| b.last()).is_none_or(|b| head.seq > b.seq);
        if better {
            chain.drain(..tail_idx);
            best = Some(chain);
        }
    }
    Ok(best)
}

/// Writes the entries into the file, extends it if the log says so, and writes new
/// headers with a zero log GUID. The file must be open for writing.
pub fn replay(file: &ImageFile, active: &ActiveHeader, entries: &[Entry]) -> Result<()> {
    let file_len = file.len()?;
    let log = log_region(active, file_len)?;
    let head_last = entries.last().map(|e| e.last_file_offset).unwrap_or(0);
    let limit = file_len.max(head_last.div_ceil(MIB).saturating_mul(MIB));
    // Validate every write before writing any.
    for e in entries {
        if e.flushed_file_offset > file_len {
            return Err(Error::corrupt(format!(
                "log entry {} says the file was {} bytes, but it is {file_len}: the file was truncated",
                e.seq, e.flushed_file_offset
            ))
            .with_field("flushed_file_offset"));
        }
        for op in &e.ops {
            let (off, len) = match op {
                Op::Data { file_offset, .. } => (*file_offset, SECTOR),
                Op::Zero { file_offset, len } => (*file_offset, *len),
            };
            let end = off.checked_add(len).filter(|&end| end <= limit).ok_or_else(|| {
                Error::corrupt(format!(
                    "log entry {} writes {len} bytes at {off:#x}, past the file's end {limit:#x}",
                    e.seq
                ))
                .with_field("log_descriptor")
            })?;
            let hits_log = log.is_some_and(|(lo, ll)| off < lo + ll && lo < end);
            if off < MIB || hits_log {
                return Err(Error::corrupt(format!(
                    "log entry {} writes at {off:#x} into the header area or the log itself",
                    e.seq
                ))
                .with_field("log_descriptor"));
            }
        }
    }
    for e in entries {
        for op in &e.ops {
            match op {
                Op::Data { file_offset, data } => file.write_all_at(data, *file_offset)?,
                Op::Zero { file_offset, len } => {
                    let zeros = vec![0u8; usize_from_u64(MIB, "zero buffer")?];
                    let mut done = 0;
                    while done < *len {
                        let n = (*len - done).min(MIB);
                        file.write_all_at(&zeros[..usize_from_u64(n, "length")?], file_offset + done)?;
                        done += n;
                    }
                }
            }
        }
    }
    if file.len()? < head_last {
        file.set_len(head_last.div_ceil(MIB) * MIB)?;
    }
    file.sync()?;
    clear_log_guid(file, active)
}

/// Writes both headers with a zero log GUID and higher sequence numbers, the inactive
/// slot first, syncing after each, so a crash leaves one valid header.
pub fn clear_log_guid(file: &ImageFile, active: &ActiveHeader) -> Result<()> {
    let mut h: Header = active.header;
    h.log_guid = Uuid::nil();
    h.file_write_guid = Uuid::new_v4();
    for slot in [1 - active.slot, active.slot] {
        h.sequence_number = h.sequence_number.checked_add(1).ok_or_else(|| {
            Error::corrupt("header sequence number cannot be incremented").with_field("sequence_number")
        })?;
        file.write_all_at(&h.to_bytes()?, HEADER_OFFSETS[slot])?;
        file.sync()?;
    }
    Ok(())
}

/// One log entry of `ops` (whole 4 KiB sectors of data, or zeroed ranges) in its on-disk
/// form, as [`Log::entry`] reads it back: the 64-byte header (CRC-32C over the whole
/// entry), 32-byte descriptors filling whole sectors, then one data sector per data
/// descriptor whose first 8 and last 4 bytes live in the descriptor (the sector holds the
/// "data" signature and the sequence number there). `tail` is the log offset of the
/// sequence's oldest entry; `flushed` and `last` the file sizes the entry records.
pub fn encode_entry(guid: Uuid, seq: u64, tail: u64, flushed: u64, last: u64, ops: &[Op]) -> Result<Vec<u8>> {
    let count = u64_from_usize(ops.len());
    let desc_sectors = (count + 2).div_ceil(128);
    let data_sectors = u64_from_usize(ops.iter().filter(|o| matches!(o, Op::Data { .. })).count());
    let len = (desc_sectors + data_sectors) * SECTOR;
    let mut b = vec![0u8; usize_from_u64(len, "log entry length")?];
    let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(&mut b, 0, b"loge");
    put(&mut b, 8, &fit::<u32, u64>(len, "log entry length")?.to_le_bytes());
    put(&mut b, 12, &fit::<u32, u64>(tail, "log tail")?.to_le_bytes());
    put(&mut b, 16, &seq.to_le_bytes());
    put(&mut b, 24, &fit::<u32, u64>(count, "log descriptor count")?.to_le_bytes());
    put(&mut b, 32, &guid.to_bytes_le());
    put(&mut b, 48, &flushed.to_le_bytes());
    put(&mut b, 56, &last.to_le_bytes());
    let mut data_at = usize_from_u64(desc_sectors * SECTOR, "log entry length")?;
    for (i, op) in ops.iter().enumerate() {
        let d = 64 + 32 * i;
        match op {
            Op::Zero { file_offset, len } => {
                put(&mut b, d, b"zero");
                put(&mut b, d + 8, &len.to_le_bytes());
                put(&mut b, d + 16, &file_offset.to_le_bytes());
            }
            Op::Data { file_offset, data } => {
                if data.len() != 4096 {
                    return Err(Error::corrupt(format!("a log data sector of {} bytes (4096 wanted)", data.len())));
                }
                put(&mut b, d, b"desc");
                put(&mut b, d + 4, &data[4092..]);
                put(&mut b, d + 8, &data[..8]);
                put(&mut b, d + 16, &file_offset.to_le_bytes());
                put(&mut b, data_at, b"data");
                put(&mut b, data_at + 4, &high_u32(seq).to_le_bytes());
                put(&mut b, data_at + 8, &data[8..4092]);
                put(&mut b, data_at + 4092, &low_u32(seq).to_le_bytes());
                data_at += 4096;
            }
        }
        put(&mut b, d + 24, &seq.to_le_bytes());
    }
    let crc = crc_with_hole(&b, 4);
    put(&mut b, 4, &crc.to_le_bytes());
    Ok(b)
}
