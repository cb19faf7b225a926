//! On-disk layouts, declared once for both directions.
//!
//! A structure on disk is a `#[repr(C)]` struct of the field types below, deriving
//! zerocopy's traits: [`read`] borrows it from a buffer and [`put`] writes it back, so the
//! reader and the writer cannot disagree about an offset. Every read is bounded: short input
//! is always a [`LayoutError::Short`] naming what was being read, never a panic and never a
//! silent zero.
//!
//! Parser crates deny `clippy::as_conversions`; the deliberate conversions they need are the
//! named functions at the end of this file, so a reader can tell a widening from a split from a
//! checked narrowing.

#![cfg_attr(not(test), deny(clippy::as_conversions))]

use std::fmt;

pub use zerocopy::byteorder::{BE, LE};
pub use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Little-endian fields (FAT, exFAT, ext4, VHDX, VMDK, VDI, GPT, squashfs).
pub type Le16 = zerocopy::byteorder::U16<LE>;
pub type Le32 = zerocopy::byteorder::U32<LE>;
pub type Le64 = zerocopy::byteorder::U64<LE>;
/// Big-endian fields (qcow2, VHD, sqlite, Berkeley DB in network order).
pub type Be16 = zerocopy::byteorder::U16<BE>;
pub type Be32 = zerocopy::byteorder::U32<BE>;
pub type Be64 = zerocopy::byteorder::U64<BE>;

/// ISO 9660's both-byte-order 16-bit field (ECMA-119 7.2.3): little-endian, then big-endian.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Both16 {
    le: Le16,
    be: Be16,
}

/// ISO 9660's both-byte-order 32-bit field (ECMA-119 7.3.3): little-endian, then big-endian.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Both32 {
    le: Le32,
    be: Be32,
}

impl Both16 {
    pub fn new(v: u16) -> Self {
        Both16 { le: Le16::new(v), be: Be16::new(v) }
    }
    /// The little-endian half: mastering tools that get one half wrong get the big-endian one
    /// wrong (as the Linux kernel and libisofs also read it).
    pub fn get(&self) -> u16 {
        self.le.get()
    }
    /// Both halves, when they agree.
    pub fn checked(&self) -> Option<u16> {
        (self.le.get() == self.be.get()).then(|| self.le.get())
    }
}

impl Both32 {
    pub fn new(v: u32) -> Self {
        Both32 { le: Le32::new(v), be: Be32::new(v) }
    }
    /// The little-endian half (see [`Both16::get`]).
    pub fn get(&self) -> u32 {
        self.le.get()
    }
    /// Both halves, when they agree.
    pub fn checked(&self) -> Option<u32> {
        (self.le.get() == self.be.get()).then(|| self.le.get())
    }
}

impl fmt::Debug for Both16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}
impl fmt::Debug for Both32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// What went wrong reading or writing a layout. Crates wrap it in their own error (it
/// converts to `io::Error` of kind `InvalidData`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The buffer ends before the field or structure does.
    Short { what: &'static str, offset: usize, need: usize, have: usize },
    /// A value does not fit the field that must hold it (a writer would truncate it).
    TooLarge { what: &'static str, value: u128, max: u128 },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Short { what, offset, need, have } => {
                write!(f, "{what}: needs {need} bytes at offset {offset}, only {have} bytes available")
            }
            LayoutError::TooLarge { what, value, max } => {
                write!(f, "{what}: value {value} does not fit (at most {max})")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

impl From<LayoutError> for std::io::Error {
    fn from(e: LayoutError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

pub type Result<T, E = LayoutError> = std::result::Result<T, E>;

/// The bytes `at..at+len` of `b`, or a `Short` error naming `what`.
pub fn bytes<'a>(b: &'a [u8], at: usize, len: usize, what: &'static str) -> Result<&'a [u8]> {
    at.checked_add(len).and_then(|end| b.get(at..end)).ok_or(LayoutError::Short {
        what,
        offset: at,
        need: len,
        have: b.len().saturating_sub(at),
    })
}

/// The mutable bytes `at..at+len` of `b`, or a `Short` error naming `what`.
pub fn bytes_mut<'a>(b: &'a mut [u8], at: usize, len: usize, what: &'static str) -> Result<&'a mut [u8]> {
    let have = b.len().saturating_sub(at);
    at.checked_add(len).and_then(|end| b.get_mut(at..end)).ok_or(LayoutError::Short {
        what,
        offset: at,
        need: len,
        have,
    })
}

/// Borrows a `T` laid out at `at` in `b`. `T` is unaligned, so any offset works.
pub fn read<'a, T>(b: &'a [u8], at: usize, what: &'static str) -> Result<&'a T>
where
    T: FromBytes + KnownLayout + Immutable + Unaligned,
{
    let s = bytes(b, at, size_of::<T>(), what)?;
    // The length matches exactly and T is Unaligned, so this cannot fail; map it anyway.
    T::ref_from_bytes(s).map_err(|_| LayoutError::Short { what, offset: at, need: size_of::<T>(), have: s.len() })
}

/// Copies a `T` out of `b` at `at`.
pub fn read_copy<T>(b: &[u8], at: usize, what: &'static str) -> Result<T>
where
    T: FromBytes + KnownLayout + Immutable + Unaligned + Copy,
{
    read::<T>(b, at, what).copied()
}

/// Writes `v` at `at` in `b` (the inverse of [`read`]).
pub fn put<T>(b: &mut [u8], at: usize, v: &T, what: &'static str) -> Result<()>
where
    T: IntoBytes + Immutable,
{
    let src = v.as_bytes();
    bytes_mut(b, at, src.len(), what)?.copy_from_slice(src);
    Ok(())
}

macro_rules! scalar {
    ($get:ident, $set:ident, $field:ty, $int:ty, $doc:literal) => {
        #[doc = concat!("Reads a ", $doc, " at `at`; short input is an error.")]
        pub fn $get(b: &[u8], at: usize, what: &'static str) -> Result<$int> {
            Ok(read::<$field>(b, at, what)?.get())
        }
        #[doc = concat!("Writes a ", $doc, " at `at`.")]
        pub fn $set(b: &mut [u8], at: usize, v: $int, what: &'static str) -> Result<()> {
            put(b, at, &<$field>::new(v), what)
        }
    };
}

scalar!(le16, put_le16, Le16, u16, "little-endian u16");
scalar!(le32, put_le32, Le32, u32, "little-endian u32");
scalar!(le64, put_le64, Le64, u64, "little-endian u64");
scalar!(be16, put_be16, Be16, u16, "big-endian u16");
scalar!(be32, put_be32, Be32, u32, "big-endian u32");
scalar!(be64, put_be64, Be64, u64, "big-endian u64");

/// Reads one byte at `at`.
pub fn byte(b: &[u8], at: usize, what: &'static str) -> Result<u8> {
    b.get(at).copied().ok_or(LayoutError::Short { what, offset: at, need: 1, have: 0 })
}

/// A cursor over a buffer for records read field after field (squashfs inodes, tar headers).
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Cursor { buf, pos: 0, what }
    }
    pub fn position(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let s = bytes(self.buf, self.pos, len, self.what)?;
        self.pos += len;
        Ok(s)
    }
    pub fn skip(&mut self, len: usize) -> Result<()> {
        self.take(len).map(|_| ())
    }
    pub fn get<T>(&mut self) -> Result<&'a T>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        let v = read::<T>(self.buf, self.pos, self.what)?;
        self.pos += size_of::<T>();
        Ok(v)
    }
    pub fn u8(&mut self) -> Result<u8> {
        let v = byte(self.buf, self.pos, self.what)?;
        self.pos += 1;
        Ok(v)
    }
    pub fn le16(&mut self) -> Result<u16> {
        Ok(self.get::<Le16>()?.get())
    }
    pub fn le32(&mut self) -> Result<u32> {
        Ok(self.get::<Le32>()?.get())
    }
    pub fn le64(&mut self) -> Result<u64> {
        Ok(self.get::<Le64>()?.get())
    }
    pub fn be16(&mut self) -> Result<u16> {
        Ok(self.get::<Be16>()?.get())
    }
    pub fn be32(&mut self) -> Result<u32> {
        Ok(self.get::<Be32>()?.get())
    }
    pub fn be64(&mut self) -> Result<u64> {
        Ok(self.get::<Be64>()?.get())
    }
}

// ---- Named conversions: the only numeric conversions parser crates make. ----

const _: () = assert!(usize::BITS >= 32 && usize::BITS <= 64, "diskcast assumes a 32- or 64-bit usize");

/// A u32 as usize: lossless on every target diskcast builds for (checked at compile time).
pub fn usize_from(v: u32) -> usize {
    // The const assertion above makes this infallible.
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A usize as u64: lossless on every target diskcast builds for.
pub fn u64_from_usize(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// `v` clamped to `len`, as a usize: how much of a `len`-byte buffer `v` bytes (left to
/// read, an offset known to lie inside it) fill.
pub fn within(v: u64, len: usize) -> usize {
    usize::try_from(v).map_or(len, |v| v.min(len))
}

/// A u64 as usize when it fits (always on 64-bit targets), else `TooLarge` naming `what`.
pub fn usize_from_u64(v: u64, what: &'static str) -> Result<usize> {
    usize::try_from(v).map_err(|_| too_large(what, u128::from(v), u128::from(u64_from_usize(usize::MAX))))
}

/// Checked narrowing for writers: `value` must fit the field type `T`, or the error names the
/// field (a silent truncation would write a corrupt image).
pub fn fit<T, V>(value: V, what: &'static str) -> Result<T>
where
    V: Copy + Into<u128> + TryInto<T>,
    T: Bounded,
{
    value.try_into().map_err(|_| too_large(what, value.into(), T::MAX_U128))
}

fn too_large(what: &'static str, value: u128, max: u128) -> LayoutError {
    LayoutError::TooLarge { what, value, max }
}

/// The largest value of an unsigned field type, for [`fit`]'s error.
pub trait Bounded {
    const MAX_U128: u128;
}
impl Bounded for u8 {
    const MAX_U128: u128 = 0xff;
}
impl Bounded for u16 {
    const MAX_U128: u128 = 0xffff;
}
impl Bounded for u32 {
    const MAX_U128: u128 = 0xffff_ffff;
}
impl Bounded for u64 {
    const MAX_U128: u128 = 0xffff_ffff_ffff_ffff;
}
impl Bounded for usize {
    const MAX_U128: u128 = if usize::BITS == 64 { 0xffff_ffff_ffff_ffff } else { 0xffff_ffff };
}

/// The low 32 bits of `v`, for formats that split a 64-bit value into two fields (ext4's
/// `lo`/`hi` pairs, FAT32's cluster halves): the split is the point, nothing is lost.
pub fn low_u32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}
/// The high 32 bits of `v` (see [`low_u32`]).
pub fn high_u32(v: u64) -> u32 {
    u32::try_from(v >> 32).unwrap_or(0)
}
/// The low 16 bits of `v` (ext4's 48-bit block numbers, FAT's cluster halves).
pub fn low_u16(v: u64) -> u16 {
    u16::try_from(v & 0xffff).unwrap_or(0)
}
/// The low 8 bits of `v` (packed date fields, checksums folded byte by byte).
pub fn low_u8(v: u64) -> u8 {
    u8::try_from(v & 0xff).unwrap_or(0)
}
/// Joins `hi:lo` 32-bit halves (the inverse of [`low_u32`]/[`high_u32`]).
pub fn join_u32(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

pub mod der;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Rec {
        kind: u8,
        size: Both32,
        lba: Le32,
        id: Be16,
    }

    #[test]
    fn a_struct_round_trips_and_short_input_is_an_error() {
        let r = Rec { kind: 7, size: Both32::new(0x0102_0304), lba: Le32::new(99), id: Be16::new(0xabcd) };
        let mut buf = vec![0u8; 20];
        put(&mut buf, 3, &r, "record").unwrap();
        assert_eq!(&buf[4..12], &[4, 3, 2, 1, 1, 2, 3, 4]);
        assert_eq!(read_copy::<Rec>(&buf, 3, "record").unwrap(), r);
        assert_eq!(
            read::<Rec>(&buf, 10, "record").unwrap_err(),
            LayoutError::Short { what: "record", offset: 10, need: 15, have: 10 }
        );
        assert_eq!(
            le32(&buf, usize::MAX, "far").unwrap_err(),
            LayoutError::Short { what: "far", offset: usize::MAX, need: 4, have: 0 }
        );
    }

    #[test]
    fn both_endian_halves_are_checked_on_request() {
        let mut b = Both32::new(5).as_bytes().to_vec();
        b[7] = 6;
        let f = read_copy::<Both32>(&b, 0, "x").unwrap();
        assert_eq!((f.get(), f.checked()), (5, None));
    }

    #[test]
    fn narrowing_names_the_field() {
        assert_eq!(
            fit::<u16, u64>(70_000, "dir record length").unwrap_err().to_string(),
            "dir record length: value 70000 does not fit (at most 65535)"
        );
        assert_eq!(fit::<u16, u64>(512, "x").unwrap(), 512);
        assert_eq!((low_u32(0x1_0000_0002), high_u32(0x1_0000_0002)), (2, 1));
        assert_eq!(join_u32(1, 2), 0x1_0000_0002);
        let mut c = Cursor::new(&[1, 0, 2, 0, 0, 0], "inode");
        assert_eq!((c.le16().unwrap(), c.le32().unwrap()), (1, 2));
        assert!(matches!(c.u8().unwrap_err(), LayoutError::Short { what: "inode", offset: 6, .. }));
    }
}
