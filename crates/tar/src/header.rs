//! The 512-byte ustar/GNU header: field positions, numbers, the checksum.
//!
//! Layout (POSIX.1-1988 ustar, with GNU's variant of the last 155 bytes): name 0..100,
//! mode 100..108, uid 108..116, gid 116..124, size 124..136, mtime 136..148, chksum
//! 148..156, typeflag 156, linkname 157..257, magic 257..263, version 263..265, uname,
//! gname, devmajor 329..337, devminor 337..345, then either the ustar prefix 345..500 or
//! GNU's atime 345..357, ctime 357..369 and sparse map 386..483.

use diskcast_block::{Error, Result};

/// Size of a header and of the blocks data is padded to.
pub const BLOCK: usize = 512;

pub const NAME: (usize, usize) = (0, 100);
pub const MODE: (usize, usize) = (100, 108);
pub const UID: (usize, usize) = (108, 116);
pub const GID: (usize, usize) = (116, 124);
pub const SIZE: (usize, usize) = (124, 136);
pub const MTIME: (usize, usize) = (136, 148);
pub const CHKSUM: (usize, usize) = (148, 156);
pub const TYPEFLAG: usize = 156;
pub const LINKNAME: (usize, usize) = (157, 257);
pub const MAGIC: (usize, usize) = (257, 265);
pub const DEVMAJOR: (usize, usize) = (329, 337);
pub const DEVMINOR: (usize, usize) = (337, 345);
pub const PREFIX: (usize, usize) = (345, 500);
pub const GNU_ATIME: (usize, usize) = (345, 357);
pub const GNU_CTIME: (usize, usize) = (357, 369);
/// Old GNU sparse: four (offset, numbytes) pairs of 12 bytes each.
pub const GNU_SPARSE: usize = 386;
pub const GNU_ISEXTENDED: usize = 482;
pub const GNU_REALSIZE: (usize, usize) = (483, 495);

/// `ustar\0` + `00`: POSIX; the 155-byte prefix holds the start of long names.
pub const MAGIC_USTAR: &[u8] = b"ustar\x0000";
/// `ustar  \0`: GNU; the same bytes hold atime, ctime and the sparse map instead.
pub const MAGIC_GNU: &[u8] = b"ustar  \0";

/// The bytes of a text field up to its first NUL.
pub fn text(h: &[u8], (a, b): (usize, usize)) -> &[u8] {
    let f = &h[a..b];
    let end = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    &f[..end]
}

/// A numeric field: octal text, or GNU/star base-256 when the first byte has its high
/// bit set (0x80 positive, 0xff negative). Octal is read as GNU tar's `from_header`
/// reads it: one leading NUL skipped (buggy old tars left one when the previous field
/// overflowed), then blanks, then digits up to a NUL or a blank. A NUL where the digits
/// should start ends the number: `\0\0000016` is 0, not 14. A field of blanks only is
/// an error, as in GNU tar.
pub fn number(h: &[u8], (a, b): (usize, usize), field: &'static str) -> Result<i64> {
    let f = &h[a..b];
    if f.first().is_some_and(|&c| c & 0x80 != 0) {
        let negative = f[0] == 0xff;
        let mut v: i128 = if negative { -1 } else { i128::from(f[0] & 0x7f) };
        for &c in &f[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(i128::from(c))).ok_or_else(|| too_big(field))?;
            if v.abs() > i128::from(i64::MAX) {
                return Err(too_big(field));
            }
        }
        return i64::try_from(v).map_err(|_| too_big(field));
    }
    let rest = f.strip_prefix(&[0]).unwrap_or(f);
    let start = rest.iter().position(|&c| !is_blank(c));
    let Some(start) = start else {
        return Err(Error::corrupt(format!("tar header field {field} holds blanks where a number is expected"))
            .with_field(field));
    };
    let mut v: i64 = 0;
    for &c in &rest[start..] {
        match c {
            b'0'..=b'7' => {
                v = v.checked_mul(8).and_then(|v| v.checked_add(i64::from(c - b'0'))).ok_or_else(|| too_big(field))?;
            }
            0 => break,
            c if is_blank(c) => break,
            _ => {
                return Err(
                    Error::corrupt(format!("tar header field {field} is not an octal number")).with_field(field)
                );
            }
        }
    }
    Ok(v)
}

/// C's `isspace`: what GNU tar skips before and stops at after a number.
fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A numeric field that must be `0..=u64::MAX`.
pub fn unsigned(h: &[u8], f: (usize, usize), field: &'static str) -> Result<u64> {
    let v = number(h, f, field)?;
    u64::try_from(v).map_err(|_| Error::corrupt(format!("tar header field {field} is negative")).with_field(field))
}

/// A numeric field that must fit 32 bits (ids, device numbers).
pub fn u32_field(h: &[u8], f: (usize, usize), field: &'static str) -> Result<u32> {
    let v = number(h, f, field)?;
    u32::try_from(v)
        .map_err(|_| Error::corrupt(format!("tar header field {field} ({v}) does not fit 32 bits")).with_field(field))
}

fn too_big(field: &'static str) -> Error {
    Error::corrupt(format!("tar header field {field} is too large")).with_field(field)
}

/// Checks the header checksum: the sum of all bytes with the checksum field read as
/// spaces. Old tars summed signed bytes, so either sum is accepted, as GNU tar does.
pub fn check_checksum(h: &[u8]) -> Result<()> {
    let stored = number(h, CHKSUM, "chksum")?;
    let block = h.get(..BLOCK).ok_or_else(|| Error::corrupt("tar header shorter than a block"))?;
    // The bytes around the field, summed in plain loops the compiler vectorizes (this
    // runs once per member); the field counts as eight spaces. A signed sum differs
    // from the unsigned one by 256 for every byte from 0x80 up.
    let (before, after) = (&block[..CHKSUM.0], &block[CHKSUM.1..]);
    let sum = |part: &[u8]| part.iter().map(|&c| u32::from(c)).sum::<u32>();
    let high = |part: &[u8]| part.iter().map(|&c| u32::from(c >> 7)).sum::<u32>();
    let field = 8 * i64::from(b' ');
    let unsigned = i64::from(sum(before)) + i64::from(sum(after)) + field;
    let signed = unsigned - 256 * (i64::from(high(before)) + i64::from(high(after)));
    if stored != unsigned && stored != signed {
        return Err(Error::corrupt(format!(
            "tar header checksum mismatch (stored {stored:o}, computed {unsigned:o}): not a tar, or a damaged one"
        ))
        .with_field("chksum"));
    }
    Ok(())
}

/// Writes `v` as zero-padded octal filling `f` but its last byte (a NUL), or returns
/// false when it does not fit.
pub fn put_octal(h: &mut [u8], (a, b): (usize, usize), v: u64) -> bool {
    let width = b - a - 1;
    let s = format!("{v:0width$o}");
    if s.len() > width {
        return false;
    }
    h[a..a + width].copy_from_slice(s.as_bytes());
    h[b - 1] = 0;
    true
}

/// Writes `v` as octal when it fits (see [`put_octal`]), else in GNU's base-256 (first
/// byte 0x80, the value big-endian in the rest), as GNU tar does for old GNU headers.
pub fn put_number(h: &mut [u8], (a, b): (usize, usize), v: u64) {
    if !put_octal(h, (a, b), v) {
        let f = &mut h[a..b];
        f.fill(0);
        let mut rest = v;
        for byte in f.iter_mut().skip(1).rev() {
            *byte = rest.to_be_bytes()[7];
            rest >>= 8;
        }
        f[0] = 0x80;
    }
}

/// Fills in the checksum of a header built in memory.
pub fn set_checksum(h: &mut [u8]) {
    h[CHKSUM.0..CHKSUM.1].fill(b' ');
    let sum: u64 = h.iter().map(|&c| u64::from(c)).sum();
    let s = format!("{sum:06o}\0 ");
    h[CHKSUM.0..CHKSUM.1].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        let mut h = [0u8; BLOCK];
        h[124..136].copy_from_slice(b"00000001750\0");
        assert_eq!(number(&h, SIZE, "size").unwrap(), 0o1750);
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert_eq!(number(&h, SIZE, "size").unwrap(), 256);
        h[124..136].copy_from_slice(&[0xff; 12]);
        assert_eq!(number(&h, SIZE, "size").unwrap(), -1);
        let e = unsigned(&h, SIZE, "size").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("is negative"), "{e}");
        h[124..136].copy_from_slice(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let e = number(&h, SIZE, "size").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("is too large"), "{e}");
        h[124..136].copy_from_slice(b"12x\0\0\0\0\0\0\0\0\0");
        assert_eq!(number(&h, SIZE, "size").unwrap_err().field(), Some("size"));
        h[124..136].copy_from_slice(b"  17 \0\0\0\0\0\0\0");
        assert_eq!(number(&h, SIZE, "size").unwrap(), 0o17);
        // GNU tar's reading: one leading NUL skipped, a second one ends the number.
        h[124..136].copy_from_slice(b"\0 0000000017");
        assert_eq!(number(&h, SIZE, "size").unwrap(), 0o17);
        h[124..136].copy_from_slice(&[&b"\0\0"[..], b"0000000017"].concat());
        assert_eq!(number(&h, SIZE, "size").unwrap(), 0);
        h[124..136].copy_from_slice(&[0; 12]);
        assert_eq!(number(&h, SIZE, "size").unwrap(), 0);
        h[124..136].copy_from_slice(b"            ");
        assert!(number(&h, SIZE, "size").unwrap_err().to_string().contains("blanks"));
    }

    #[test]
    fn checksum_round_trip() {
        let mut h = [0u8; BLOCK];
        h[..5].copy_from_slice(b"hello");
        set_checksum(&mut h);
        check_checksum(&h).unwrap();
        h[0] = b'j';
        let e = check_checksum(&h).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }
}
