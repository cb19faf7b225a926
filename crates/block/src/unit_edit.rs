//! Guest writes into an existing image of a format that maps the disk in fixed-size
//! units (VDI, VHD and VHDX blocks, VMDK grains): the one [`BlockWrite`] behind `commit`,
//! `convert -n` and `bench -w` for those formats. The format supplies a [`UnitMap`]
//! (where each unit is stored, how a new one is placed, how its table reaches the file);
//! [`UnitEditor`] cuts writes into units and keeps the order that makes an interrupted
//! edit cost at worst leaked space:
//!
//! 1. a unit not yet stored gets a new place that nothing names yet (past the data the
//!    tables name), reading as zeros;
//! 2. the guest data is written there;
//! 3. only [`UnitMap::flush`], at the end, writes the tables that name the new places
//!    (and the counters that must cover them first, in the format's order).
//!
//! A crash before step 3 leaves data in places no table names: the image reads as it
//! did before the edit, plus space at the end of the file that nothing uses. A unit
//! the image already stores is overwritten in place, as qemu does.
//!
//! Zero writes never allocate: a unit not stored already reads as zeros (the formats
//! edited here are base images, with no parent to read through), and a stored one gets
//! its bytes zeroed (a hole punched where the file system can).

use crate::io::ImageFile;
use crate::registry::CreateOptions;
use crate::{BlockWrite, Encoded, Error, Result, range_end};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

/// What every [`UnitMap`] has: the file holding the guest data, the virtual size and the
/// guest bytes per unit.
#[derive(Debug)]
pub struct Units {
    /// The file that holds the guest data.
    pub file: ImageFile,
    /// The image's virtual size.
    pub size: u64,
    /// Guest bytes per unit.
    pub unit: u64,
}

impl Units {
    /// The index of guest unit `unit` in a table of `entries` entries, refused past it.
    pub fn index(&self, unit: u64, entries: usize) -> Result<usize> {
        usize::try_from(unit).ok().filter(|&i| i < entries).ok_or_else(|| {
            Error::out_of_bounds(format!("guest unit {unit} is outside the {entries}-entry table"))
                .with_offset(unit.saturating_mul(self.unit))
        })
    }
}

/// A format's map from guest units to the places that hold them, as an in-place edit
/// changes it.
pub trait UnitMap: Send + std::fmt::Debug {
    /// The file, size and unit.
    fn units(&self) -> &Units;

    /// The file that holds the guest data.
    fn file(&self) -> &ImageFile {
        &self.units().file
    }

    /// Where the first guest byte of unit `unit` is stored, or `None` when the unit is
    /// not stored (it reads as zeros).
    fn host(&mut self, unit: u64) -> Result<Option<u64>>;

    /// A new place for unit `unit`, reading as zeros, inside the file (grown as needed)
    /// and named by nothing on disk yet: the unit's table entry changes in memory and
    /// reaches the file in [`flush`](Self::flush), after the data.
    fn allocate(&mut self, unit: u64) -> Result<u64>;

    /// Whether any unit is stored (false: the whole disk reads as zeros).
    fn has_data(&self) -> bool;

    /// Writes the changed metadata, in the order the format needs so that a crash
    /// between two writes leaves at worst leaked space.
    fn flush(&mut self) -> Result<()>;
}

/// The copy engine's unit: data runs 4 KiB aligned, as the new-image writers take them.
const GRANULARITY: u64 = 4096;

/// [`BlockWrite`] over a [`UnitMap`]: `convert -n`, `commit` and `bench -w` into an
/// existing image, from the copy engine's threads one at a time.
#[derive(Debug)]
pub struct UnitEditor<M> {
    map: Mutex<M>,
    size: u64,
    unit: u64,
    zero_initialized: bool,
    format: &'static str,
}

impl<M: UnitMap> UnitEditor<M> {
    /// An editor writing `size` guest bytes into the image behind `map` (whose virtual
    /// size must be at least `size`, as qemu-img requires). `target_is_zero`: the caller
    /// says the image reads as zeros (`--target-is-zero`).
    pub fn new(map: M, size: u64, target_is_zero: bool, format: &'static str) -> Result<Self> {
        let have = map.units().size;
        if have < size {
            return Err(Error::argument(format!(
                "output file is smaller than input file: the {format} image's virtual size is {have} bytes, the \
                 source's {size}; {format} images cannot be resized, so convert into a new image instead"
            )));
        }
        let zero_initialized = target_is_zero || !map.has_data();
        Ok(UnitEditor { unit: map.units().unit, map: Mutex::new(map), size, zero_initialized, format })
    }

    fn lock(&self) -> MutexGuard<'_, M> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `each(map, host, pos, n)` for every piece of `[offset, offset + len)` inside
    /// one unit, `host` being where the unit is stored (`None`: not stored).
    fn pieces(
        &self,
        offset: u64,
        len: u64,
        mut each: impl FnMut(&mut M, Option<u64>, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let end = range_end(offset, len, self.size)?;
        let mut map = self.lock();
        let mut pos = offset;
        while pos < end {
            let within = pos % self.unit;
            let n = (self.unit - within).min(end - pos);
            let host = map.host(pos / self.unit)?;
            each(&mut map, host.map(|h| h + within), pos, n)?;
            pos += n;
        }
        Ok(())
    }

    fn write_plain(&self, offset: u64, data: &[u8]) -> Result<()> {
        let unit = self.unit;
        self.pieces(offset, u64_from_usize(data.len()), |map, host, pos, n| {
            let host = match host {
                Some(h) => h,
                None => map.allocate(pos / unit)? + pos % unit,
            };
            let at = usize_from_u64(pos - offset, "write offset")?;
            let piece = data.get(at..at + usize_from_u64(n, "write length")?).unwrap_or_default();
            map.file().write_all_at(piece, host).map_err(|e| e.with_offset(pos))
        })
    }
}

impl<M: UnitMap> BlockWrite for UnitEditor<M> {
    fn size(&self) -> u64 {
        self.size
    }

    /// Pieces smaller than a unit: the copy engine drops all-zero 4 KiB pieces, which in
    /// a newly placed unit stay holes (it reads as zeros) and in a stored one are written
    /// as zeros unless the image read as zeros from the start.
    fn granularity(&self) -> u64 {
        GRANULARITY.min(self.unit)
    }

    fn zero_initialized(&self) -> bool {
        self.zero_initialized
    }

    fn write_encoded(&self, encoded: Encoded) -> Result<()> {
        encoded.for_each_plain(self.format, |offset, data| self.write_plain(offset, data))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.pieces(offset, len, |map, host, _, n| match host {
            Some(h) => map.file().write_zeroes(h, n),
            None => Ok(()),
        })
    }

    /// Writes the tables in the format's safe order and syncs (nothing else syncs an
    /// image written in place).
    fn finish(self: Box<Self>) -> Result<()> {
        let mut map = self.map.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.flush()?;
        map.file().sync()
    }
}

/// A disk stored in one piece (fixed VHD, monolithicFlat VMDK): guest byte `x` at
/// `start + x` of the file, nothing to allocate and no metadata to change.
#[derive(Debug)]
pub struct DirectMap {
    units: Units,
    start: u64,
}

/// The unit a [`DirectMap`] hands out writes in: large, as nothing is allocated.
const DIRECT_UNIT: u64 = 1 << 20;

impl DirectMap {
    /// Guest bytes `0..size` at `start..start + size` of `file`, which must hold them.
    pub fn new(file: ImageFile, start: u64, size: u64) -> Result<Self> {
        let len = file.len()?;
        if start.checked_add(size).is_none_or(|end| end > len) {
            return Err(Error::out_of_bounds(format!(
                "the {size}-byte disk stored at {start:#x} runs past the end of the {len}-byte file"
            ))
            .with_file(file.path()));
        }
        Ok(DirectMap { units: Units { file, size, unit: DIRECT_UNIT }, start })
    }
}

impl UnitMap for DirectMap {
    fn units(&self) -> &Units {
        &self.units
    }
    fn host(&mut self, unit: u64) -> Result<Option<u64>> {
        Ok(Some(self.start + unit * DIRECT_UNIT))
    }
    fn allocate(&mut self, unit: u64) -> Result<u64> {
        Err(Error::corrupt(format!("unit {unit} of a disk stored in one piece has no place")))
    }
    /// Everything is stored: a range never written reads as the file holds it.
    fn has_data(&self) -> bool {
        true
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A format driver's [`Driver::write_into`](crate::registry::Driver::write_into) for an
/// editor that `open(file, size, target_is_zero)` makes: `-c`, `-o` options and a backing
/// file belong to a new image and are refused (`convert -n` cannot change the existing
/// image's format), and every error names the file.
pub fn write_into(
    format: &str,
    file: ImageFile,
    size: u64,
    opts: &CreateOptions,
    open: impl FnOnce(ImageFile, u64, bool) -> Result<Box<dyn BlockWrite>>,
) -> Result<Box<dyn BlockWrite>> {
    let name = file.path().to_path_buf();
    if opts.compress || !opts.options.is_empty() || opts.backing_file.is_some() {
        return Err(Error::argument(format!(
            "-n writes into the existing {format} image as it is: -c, -o and -B cannot change its format; \
             convert without -n to make a new image"
        ))
        .with_file(&name));
    }
    open(file, size, opts.target_is_zero).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

/// Writes the 4-byte table entries at the `dirty` indices of a table, entry `i` at file
/// offset `at(i)` with bytes `bytes(i)`, one write per run of adjacent entries.
pub fn write_entries(
    file: &ImageFile,
    dirty: &BTreeSet<usize>,
    at: impl Fn(usize) -> Result<u64>,
    bytes: impl Fn(usize) -> [u8; 4],
) -> Result<()> {
    let mut run: Vec<u8> = Vec::new();
    let mut run_at = 0u64;
    for &i in dirty {
        let pos = at(i)?;
        if !run.is_empty() && run_at + u64_from_usize(run.len()) != pos {
            file.write_all_at(&run, run_at)?;
            run.clear();
        }
        if run.is_empty() {
            run_at = pos;
        }
        run.extend_from_slice(&bytes(i));
    }
    if !run.is_empty() {
        file.write_all_at(&run, run_at)?;
    }
    Ok(())
}

/// Refuses an image whose stored places (file byte ranges `[start, end)`: blocks, grains,
/// tables, regions) overlap, which a write into one would change through the other;
/// `what` names them in the error (`"blocks and tables"`). Sorts `places`: linear in
/// memory, `n log n` in time, for tables the reader already bounds.
pub fn refuse_overlaps(places: &mut [(u64, u64)], what: &str, field: &'static str) -> Result<()> {
    places.sort_unstable();
    for w in places.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.0 < a.1 {
            return Err(Error::corrupt(format!(
                "two of the image's {what} overlap ({:#x}..{:#x} and {:#x}..{:#x}): a write into one would \
                 change the other; run qemu-img check",
                a.0, a.1, b.0, b.1
            ))
            .with_field(field));
        }
    }
    Ok(())
}

/// A second handle on `file`, for a format's reader to parse and check the image
/// through (the name is not opened again).
pub fn reader_handle(file: &ImageFile) -> Result<crate::source::Source> {
    let clone =
        file.file().try_clone().map_err(|e| Error::io("cannot open a second handle", e).with_file(file.path()))?;
    Ok(std::sync::Arc::new(ImageFile::from_file(clone, file.path())))
}
