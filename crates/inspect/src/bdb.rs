//! Berkeley DB hash databases, read-only, as rpm before 4.16 kept its `Packages` file
//! (RHEL/CentOS 7 and 8). Only what such a file needs: the hash metadata page (byte
//! order, page size, last page), hash pages (their key/data item pairs, inline or on
//! overflow chains). The pages are scanned in order rather than through the buckets, so
//! every hash page, including bucket overflow pages, is read exactly once.
//!
//! Layout facts (Berkeley DB's db_page.h): every page starts with a 26-byte header (LSN,
//! page number, previous and next page, entry count, free-area offset or, on overflow
//! pages, the bytes used, level, type); hash pages follow it with an array of 2-byte item
//! offsets, items packed from the page's end. All integers are in the byte order of the
//! machine that made the file, which the metadata magic tells.

use diskcast_block::{Error, ErrorKind, Result};
use diskcast_layout::{self as layout, LayoutError};
use std::collections::HashSet;

const HASH_MAGIC: u32 = 0x0006_1561;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;
const PAGE_HEADER: usize = 26;

/// Largest single item (an rpm header is capped at 256 MiB by rpm; real ones are KiB).
const MAX_ITEM: u32 = 64 << 20;

/// The key/data pairs of a hash database.
#[derive(Debug)]
pub struct HashDb {
    /// True when the file's integers are big-endian (made on a big-endian machine).
    pub big_endian: bool,
    /// Every key/data pair, in page order.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads every key/data pair of the hash database `bytes` (named `name` in errors).
pub fn hash_pairs(name: &str, bytes: &[u8]) -> Result<HashDb> {
    let err = |kind, field, msg: String| Error::new(kind, msg).with_file(name).with_field(field);
    // Reads past a page's end are refused with the field named (the checks below keep
    // every offset inside its page, so this is the backstop, never a panic).
    let short = |e: LayoutError| err(ErrorKind::OutOfBounds, "page", e.to_string());
    if bytes.len() < 512 {
        return Err(err(
            ErrorKind::InvalidFormat,
            "meta",
            format!("{} bytes is too short for a Berkeley DB", bytes.len()),
        ));
    }
    let big = match layout::le32(bytes, 12, "hash magic").map_err(short)? {
        HASH_MAGIC => false,
        m if m.swap_bytes() == HASH_MAGIC => true,
        m => return Err(err(ErrorKind::InvalidFormat, "magic", format!("magic {m:#010x} is not a Berkeley DB hash"))),
    };
    let u32_at = |b: &[u8], o: usize, what: &'static str| {
        if big { layout::be32(b, o, what) } else { layout::le32(b, o, what) }.map_err(short)
    };
    let u16_at = |b: &[u8], o: usize, what: &'static str| {
        if big { layout::be16(b, o, what) } else { layout::le16(b, o, what) }.map(usize::from).map_err(short)
    };
    let byte_at = |b: &[u8], o: usize, what: &'static str| layout::byte(b, o, what).map_err(short);
    let version = u32_at(bytes, 16, "hash version")?;
    if !(8..=10).contains(&version) {
        return Err(err(ErrorKind::Unsupported, "version", format!("hash version {version} (8 to 10 are read)")));
    }
    let ps = u32_at(bytes, 20, "page size")?;
    if !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
        return Err(err(
            ErrorKind::Corrupt,
            "pagesize",
            format!("page size {ps} is not a power of two from 512 to 65536"),
        ));
    }
    if byte_at(bytes, 24, "encrypt_alg")? != 0 {
        return Err(err(ErrorKind::Unsupported, "encrypt_alg", "the database is encrypted".into()));
    }
    let meta_type = byte_at(bytes, 25, "page type")?;
    if meta_type != P_HASHMETA {
        return Err(err(ErrorKind::InvalidFormat, "type", format!("page 0 has type {meta_type}, not hash metadata")));
    }
    let ps = layout::usize_from(ps);
    let last = u32_at(bytes, 32, "last_pgno")?;
    let pages = bytes.len() / ps;
    if layout::usize_from(last) >= pages {
        return Err(err(
            ErrorKind::OutOfBounds,
            "last_pgno",
            format!("last page {last} lies past the end of the {pages}-page file"),
        ));
    }
    // Every page number used is at most `last`, inside the file (checked above).
    let page = |n: u32| {
        layout::usize_from(n)
            .checked_mul(ps)
            .ok_or_else(|| err(ErrorKind::OutOfBounds, "pgno", format!("page {n}")))
            .and_then(|at| layout::bytes(bytes, at, ps, "page").map_err(short))
    };
    let mut overflow_seen = HashSet::new();
    let mut out = Vec::new();
    for n in 1..=last {
        let p = page(n)?;
        if !matches!(byte_at(p, 25, "page type")?, P_HASH | P_HASH_UNSORTED) {
            continue;
        }
        let entries = u16_at(p, 20, "entries")?;
        let array_end = PAGE_HEADER + 2 * entries;
        if array_end > ps || entries % 2 != 0 {
            return Err(err(
                ErrorKind::Corrupt,
                "entries",
                format!("hash page {n} claims {entries} items (pairs that fit the page are expected)"),
            ));
        }
        let mut item = |i: usize| -> Result<Vec<u8>> {
            let off = u16_at(p, PAGE_HEADER + 2 * i, "item offset")?;
            let end = if i == 0 { ps } else { u16_at(p, PAGE_HEADER + 2 * (i - 1), "item offset")? };
            if off < array_end || off >= end || end > ps {
                return Err(err(
                    ErrorKind::OutOfBounds,
                    "item_offset",
                    format!("hash page {n} item {i} spans {off}..{end}, outside {array_end}..{ps}"),
                ));
            }
            match byte_at(p, off, "item type")? {
                H_KEYDATA => Ok(layout::bytes(p, off + 1, end - off - 1, "item").map_err(short)?.to_vec()),
                H_OFFPAGE if end - off >= 12 => {
                    let (first, len) = (u32_at(p, off + 4, "pgno")?, u32_at(p, off + 8, "tlen")?);
                    if len > MAX_ITEM {
                        return Err(err(
                            ErrorKind::OutOfBounds,
                            "tlen",
                            format!("hash page {n} item {i} claims {len} bytes (at most {MAX_ITEM})"),
                        ));
                    }
                    let len = layout::usize_from(len);
                    // Grown as overflow pages are read, never reserved at the claimed
                    // length: memory follows the pages read, not what an item claims.
                    let mut v = Vec::with_capacity(ps.min(len));
                    let mut next = first;
                    while v.len() < len {
                        if next == 0 || next > last {
                            return Err(err(
                                ErrorKind::OutOfBounds,
                                "overflow_pgno",
                                format!("hash page {n} item {i}: overflow page {next} is not in 1..={last}"),
                            ));
                        }
                        if !overflow_seen.insert(next) {
                            return Err(err(
                                ErrorKind::Corrupt,
                                "overflow_pgno",
                                format!("overflow page {next} is reached twice (a cycle or a shared page)"),
                            ));
                        }
                        let o = page(next)?;
                        let kind = byte_at(o, 25, "page type")?;
                        if kind != P_OVERFLOW {
                            return Err(err(
                                ErrorKind::Corrupt,
                                "overflow_pgno",
                                format!("page {next} has type {kind}, not an overflow page"),
                            ));
                        }
                        let used = u16_at(o, 22, "overflow length")?;
                        if PAGE_HEADER + used > ps {
                            return Err(err(
                                ErrorKind::Corrupt,
                                "overflow_len",
                                format!("overflow page {next} claims {used} bytes"),
                            ));
                        }
                        let take = used.min(len - v.len());
                        v.extend_from_slice(layout::bytes(o, PAGE_HEADER, take, "overflow data").map_err(short)?);
                        next = u32_at(o, 16, "next_pgno")?;
                        if take == 0 && next == 0 {
                            break;
                        }
                    }
                    if v.len() != len {
                        return Err(err(
                            ErrorKind::Corrupt,
                            "overflow_pgno",
                            format!("hash page {n} item {i}: the overflow chain holds {} of {len} bytes", v.len()),
                        ));
                    }
                    Ok(v)
                }
                t => Err(err(
                    ErrorKind::Unsupported,
                    "item_type",
                    format!("hash page {n} item {i} has type {t} (only plain and off-page items are read)"),
                )),
            }
        };
        for i in (0..entries).step_by(2) {
            let k = item(i)?;
            let d = item(i + 1)?;
            out.push((k, d));
        }
    }
    Ok(HashDb { big_endian: big, pairs: out })
}
