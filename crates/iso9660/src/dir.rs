//! Directory records (ECMA-119 §9.1) and their dates.

use crate::days_from_civil;
use crate::spec::DirRecordHead;
use diskcast_block::{Error, Result};
use diskcast_tree::Timestamp;

/// File flag bits (ECMA-119 §9.1.6).
pub const FLAG_DIR: u8 = 0x02;
pub const FLAG_MULTI_EXTENT: u8 = 0x80;

/// One directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirRecord {
    /// First sector of the extent (after the extended attribute record).
    pub lba: u32,
    /// Extended attribute record length in sectors (the data starts after it).
    pub ext_attr: u8,
    /// Length of the extent in bytes.
    pub len: u32,
    /// Recording date.
    pub time: Timestamp,
    /// File flags.
    pub flags: u8,
    /// File identifier bytes as stored.
    pub ident: Vec<u8>,
    /// The system use area (Rock Ridge entries).
    pub system_use: Vec<u8>,
    /// Where the record is on the disc (for messages).
    pub at: u64,
}

impl DirRecord {
    pub fn is_dir(&self) -> bool {
        self.flags & FLAG_DIR != 0
    }
    /// `.` or `..` (identifier 0x00 or 0x01).
    pub fn is_dot(&self) -> bool {
        self.ident == [0] || self.ident == [1]
    }
    /// Byte offset of the data on the disc.
    pub fn data_offset(&self) -> u64 {
        (u64::from(self.lba) + u64::from(self.ext_attr)) * crate::SECTOR
    }
}

/// Parses the record at the start of `b` (which holds at least the record's length byte
/// and may hold more). `None` for a zero length byte (padding up to the next sector).
pub fn parse_record(b: &[u8], at: u64) -> Result<Option<DirRecord>> {
    let Some(&len) = b.first() else { return Ok(None) };
    if len == 0 {
        return Ok(None);
    }
    let len = usize::from(len);
    let bad = |what: &str| Error::corrupt(format!("directory record {what}")).with_offset(at);
    if len < 34 {
        return Err(bad(&format!("length {len} is shorter than 34 bytes")).with_field("record_length"));
    }
    if len > b.len() {
        return Err(bad("runs past the end of its sector").with_field("record_length"));
    }
    let head: &DirRecordHead = diskcast_layout::read(b, 0, "directory record")?;
    let name_len = usize::from(head.name_len);
    let name_end = size_of::<DirRecordHead>() + name_len;
    if name_end > len {
        return Err(bad("name runs past the record").with_field("file_identifier_length"));
    }
    let su_start = (name_end + (name_end & 1)).min(len);
    let flags = head.flags;
    if head.file_unit_size != 0 || head.interleave_gap != 0 {
        return Err(Error::unsupported("interleaved files (file unit size or interleave gap set) are not supported")
            .with_field("file_unit_size")
            .with_offset(at + 26));
    }
    Ok(Some(DirRecord {
        ext_attr: head.ext_attr_len,
        lba: head.extent.get(),
        len: head.size.get(),
        time: short_time(&head.date),
        flags,
        ident: b[33..name_end].to_vec(),
        system_use: b[su_start..len].to_vec(),
        at,
    }))
}

/// A 7-byte date (ECMA-119 §9.1.5): years since 1900, month, day, hour, minute, second,
/// offset from UTC in 15-minute steps. All zeros means "not recorded" (the epoch).
pub fn short_time(b: &[u8]) -> Timestamp {
    if b.iter().all(|&x| x == 0) {
        return Timestamp::default();
    }
    let (mon, day) = (u32::from(b[1]).clamp(1, 12), u32::from(b[2]).clamp(1, 31));
    let days = days_from_civil(1900 + i64::from(b[0]), mon, day);
    let secs = days * 86400 + i64::from(b[3]) * 3600 + i64::from(b[4]) * 60 + i64::from(b[5]);
    Timestamp::from_secs(secs - i64::from(b[6].cast_signed()) * 900)
}

/// A 17-byte date (ECMA-119 §8.4.26.1): "YYYYMMDDHHMMSScc" in ASCII digits and the UTC
/// offset byte. `None` when unset (all zeros or digits missing).
pub fn long_time(b: &[u8]) -> Option<Timestamp> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(&b[r]).ok()?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let year = num(0..4)?;
    if year == 0 {
        return None;
    }
    let mon = u32::try_from(num(4..6)?).ok()?.clamp(1, 12);
    let day = u32::try_from(num(6..8)?).ok()?.clamp(1, 31);
    let secs = days_from_civil(year, mon, day) * 86400 + num(8..10)? * 3600 + num(10..12)? * 60 + num(12..14)?;
    let cs = u32::try_from(num(14..16)?).ok()?;
    Some(Timestamp { sec: secs - i64::from(b[16].cast_signed()) * 900, nsec: cs * 10_000_000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        // 2024-02-29 12:30:15 at UTC+1 (4 quarter hours).
        assert_eq!(short_time(&[124, 2, 29, 12, 30, 15, 4]).sec, 1_709_209_815 - 3600);
        assert_eq!(long_time(b"2024022912301550\x00").unwrap(), Timestamp { sec: 1_709_209_815, nsec: 500_000_000 });
        assert_eq!(long_time(&[0u8; 17]), None);
        assert_eq!(long_time(b"0000000000000000\x00"), None);
    }
}
