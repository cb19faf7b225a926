//! What must be written into an image that already reads one way so that it reads another:
//! the one engine behind `commit` (an overlay's data into the image below), `rebase`
//! (an overlay moved onto another backing file without changing what its guest sees) and
//! `convert -B` (a new overlay holding only what differs from its backing file).
//!
//! A [`Delta`] is a [`BlockRead`] for the copy engine run with
//! [`CopyOptions::skip_backing`](crate::copy::CopyOptions::skip_backing): it reads as the
//! wanted image, and reports as [`Alloc::Backing`] every range the target already holds,
//! which the engine then leaves alone. Which ranges those are comes from a [`Scope`] (the
//! allocation of a backing chain, walked once before anything is written) and, with a
//! [`Delta::comparing`] image, from comparing the two unit by unit.

use crate::{Alloc, BlockRead, Extent, ImageInfo, Result, read_backing, resolved_extent};
use diskcast_layout::{u64_from_usize, usize_from_u64};

/// Bytes one [`Delta::extent_at`] compares at most (more when the unit is larger): the
/// memory of a comparison, and how far one extent reaches.
const COMPARE_SPAN: u64 = 1 << 20;

/// The ranges of a chain's top image a [`Delta`] looks at; the target holds the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Ranges one of the chain's first `n` images allocates (1: the top image itself):
    /// `commit` into the `n`th image below, `convert -B` onto it.
    AllocatedAbove(usize),
    /// Ranges the top image itself does not allocate (`rebase`: the overlay keeps its own).
    NotAllocated,
    /// Ranges the top image does not allocate where its chain may read otherwise than the
    /// chain's image `n` levels down (`rebase` onto that image: elsewhere the old chain
    /// reads that very image, and so does the new one).
    NotAllocatedAbove(usize),
    /// The whole disk.
    All,
}

/// Whether one of the first `depth` images of the chain under `top` allocates the range at
/// `offset`, and for how many bytes that holds (at most `max_len`, at least 1).
pub fn allocated_above(top: &dyn BlockRead, depth: usize, offset: u64, max_len: u64) -> Result<(bool, u64)> {
    let e = top.extent_at(offset, max_len)?;
    match (e.alloc, top.backing()) {
        (Alloc::Data | Alloc::Zero, _) => Ok((true, e.len)),
        (Alloc::Backing, Some(below)) if depth > 1 && offset < below.size() => {
            let (allocated, len) = allocated_above(below, depth - 1, offset, e.len)?;
            Ok((allocated, len.clamp(1, e.len)))
        }
        _ => Ok((false, e.len)),
    }
}

/// Whether the chain under `image` may read otherwise at `offset` than its image `depth`
/// levels down (`depth` 0: `image` itself), and for how many bytes that holds: an image
/// above that one allocates the range, or the range lies past the end of one of them
/// (which then reads zeros where the image below may hold data).
fn may_differ(image: &dyn BlockRead, depth: usize, offset: u64, max_len: u64) -> Result<(bool, u64)> {
    if depth == 0 {
        return Ok((false, max_len));
    }
    let e = image.extent_at(offset, max_len)?;
    match (e.alloc, image.backing()) {
        (Alloc::Data | Alloc::Zero, _) => Ok((true, e.len)),
        (Alloc::Backing, Some(below)) => {
            let (differs, len) = may_differ(below, depth - 1, offset, e.len)?;
            Ok((differs, len.clamp(1, e.len)))
        }
        // Past the end of the image below (or no image below): zeros here, not what the
        // image `depth` levels down holds, unless that is the image right below.
        _ => Ok((depth > 1, e.len)),
    }
}

/// The ranges of `top` that `scope` covers, as sorted, disjoint `(start, end)` pairs:
/// walked once, before any write changes the chain.
pub fn scope_ranges(top: &dyn BlockRead, scope: Scope) -> Result<Vec<(u64, u64)>> {
    let size = top.size();
    if scope == Scope::All {
        return Ok(if size == 0 { Vec::new() } else { vec![(0, size)] });
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let (allocated, len) = match scope {
            Scope::AllocatedAbove(n) => allocated_above(top, n, pos, size - pos)?,
            Scope::NotAllocatedAbove(n) => match top.extent_at(pos, size - pos)? {
                e if matches!(e.alloc, Alloc::Data | Alloc::Zero) => (false, e.len),
                e => {
                    let (differs, len) = match top.backing() {
                        Some(below) if e.alloc == Alloc::Backing => may_differ(below, n - 1, pos, e.len)?,
                        _ => (n > 1, e.len),
                    };
                    (differs, len.clamp(1, e.len))
                }
            },
            _ => allocated_above(top, 1, pos, size - pos).map(|(a, l)| (!a, l))?,
        };
        let end = pos.saturating_add(len.max(1)).min(size);
        if allocated {
            match ranges.last_mut() {
                Some(last) if last.1 == pos => last.1 = end,
                _ => ranges.push((pos, end)),
            }
        }
        pos = end;
    }
    Ok(ranges)
}

/// An image of `size` bytes that reads as `wanted` (zeros where `wanted` is shorter or
/// absent) and reports as [`Alloc::Backing`] what the target already holds: everything
/// outside its ranges, and, when [`comparing`](Self::comparing), every unit that reads
/// the same in `wanted` and in the image the target reads from.
#[derive(Debug)]
pub struct Delta<'a> {
    size: u64,
    wanted: Option<&'a dyn BlockRead>,
    ranges: Vec<(u64, u64)>,
    /// `Some(below)`: write only units where `wanted` differs from `below` (`None` below:
    /// zeros). `None`: every range in scope is written.
    below: Option<Option<&'a dyn BlockRead>>,
    unit: u64,
}

impl<'a> Delta<'a> {
    /// `wanted` over `size` bytes, written in the `ranges` of [`scope_ranges`].
    pub fn new(size: u64, wanted: Option<&'a dyn BlockRead>, ranges: Vec<(u64, u64)>) -> Self {
        Delta { size, wanted, ranges, below: None, unit: 4096 }
    }

    /// Writes only the `unit`-sized pieces (the target's allocation unit, aligned to it)
    /// where `wanted` differs from `below`, what the target reads where nothing is written.
    pub fn comparing(self, below: Option<&'a dyn BlockRead>, unit: u64) -> Self {
        Delta { below: Some(below), unit: unit.max(512), ..self }
    }

    /// The range of `ranges` holding `offset`, or where the next one starts.
    fn locate(&self, offset: u64) -> Result<(u64, u64), u64> {
        let i = self.ranges.partition_point(|r| r.1 <= offset);
        match self.ranges.get(i) {
            Some(&(s, e)) if s <= offset => Ok((s, e)),
            Some(&(s, _)) => Err(s),
            None => Err(self.size),
        }
    }

    /// `[offset, end)` compared piece by piece (pieces end at unit boundaries): the first
    /// piece's status and how far it reaches.
    fn compare(&self, below: Option<&dyn BlockRead>, offset: u64, end: u64) -> Result<Extent> {
        let span = COMPARE_SPAN.max(self.unit);
        let end = end.min(offset.saturating_add(span));
        let len = to_index(end - offset)?;
        let (mut want, mut have) = (vec![0u8; len], vec![0u8; len]);
        read_backing(self.wanted, &mut want, offset)?;
        read_backing(below, &mut have, offset)?;
        let mut status: Option<Alloc> = None;
        let mut pos = offset;
        while pos < end {
            let piece_end = ((pos / self.unit + 1) * self.unit).min(end);
            let (a, b) = (to_index(pos - offset)?, to_index(piece_end - offset)?);
            let piece = if want[a..b] == have[a..b] {
                Alloc::Backing
            } else if crate::io::is_zero(&want[a..b]) {
                Alloc::Zero
            } else {
                Alloc::Data
            };
            match status {
                None => status = Some(piece),
                Some(s) if s != piece => break,
                Some(_) => {}
            }
            pos = piece_end;
        }
        Ok(Extent { offset, len: pos - offset, alloc: status.unwrap_or(Alloc::Backing) })
    }
}

fn to_index(n: u64) -> Result<usize> {
    Ok(usize_from_u64(n, "comparison offset")?)
}

impl BlockRead for Delta<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        crate::range_end(offset, u64_from_usize(buf.len()), self.size)?;
        read_backing(self.wanted, buf, offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let end = crate::range_end(offset, 1, self.size)?.max(offset.saturating_add(max_len).min(self.size));
        let (start, stop) = match self.locate(offset) {
            Ok(r) => r,
            Err(next) => return Ok(Extent { offset, len: next.min(end) - offset, alloc: Alloc::Backing }),
        };
        debug_assert!(start <= offset);
        let stop = stop.min(end);
        match self.below {
            Some(below) => self.compare(below, offset, stop),
            None => match self.wanted {
                Some(w) if offset < w.size() => {
                    let e = resolved_extent(w, offset, stop.min(w.size()) - offset)?;
                    let alloc = if e.alloc.reads_zero() { Alloc::Zero } else { Alloc::Data };
                    Ok(Extent { offset, len: e.len, alloc })
                }
                _ => Ok(Extent { offset, len: stop - offset, alloc: Alloc::Zero }),
            },
        }
    }

    fn info(&self) -> ImageInfo {
        ImageInfo { format: "delta".into(), virtual_size: self.size, ..ImageInfo::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk of `size` bytes filled with `byte`, with its own allocation in `own` and
    /// the rest from `below`.
    #[derive(Debug)]
    struct Layer<'a> {
        size: u64,
        byte: u8,
        own: Vec<(u64, u64)>,
        below: Option<&'a dyn BlockRead>,
    }

    impl BlockRead for Layer<'_> {
        fn size(&self) -> u64 {
            self.size
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                let at = offset + i as u64;
                *b = if self.own.iter().any(|&(s, e)| s <= at && at < e) {
                    self.byte
                } else {
                    let mut one = [0u8];
                    read_backing(self.below, &mut one, at)?;
                    one[0]
                };
            }
            Ok(())
        }
        fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
            let end = (offset + max_len).min(self.size);
            for &(s, e) in &self.own {
                if s <= offset && offset < e {
                    return Ok(Extent { offset, len: e.min(end) - offset, alloc: Alloc::Data });
                }
            }
            let next = self.own.iter().map(|r| r.0).filter(|&s| s > offset).min().unwrap_or(end).min(end);
            let alloc = if self.below.is_some() { Alloc::Backing } else { Alloc::Unallocated };
            Ok(crate::clip_to_backing(Extent { offset, len: next - offset, alloc }, self.below))
        }
        fn backing(&self) -> Option<&dyn BlockRead> {
            self.below
        }
        fn info(&self) -> ImageInfo {
            ImageInfo::default()
        }
    }

    #[test]
    fn scopes_follow_the_chain() {
        let base = Layer { size: 64, byte: 1, own: vec![(0, 64)], below: None };
        let mid = Layer { size: 64, byte: 2, own: vec![(8, 16)], below: Some(&base) };
        let top = Layer { size: 80, byte: 3, own: vec![(32, 40)], below: Some(&mid) };
        assert_eq!(scope_ranges(&top, Scope::AllocatedAbove(1)).unwrap(), [(32, 40)]);
        assert_eq!(scope_ranges(&top, Scope::AllocatedAbove(2)).unwrap(), [(8, 16), (32, 40)]);
        assert_eq!(scope_ranges(&top, Scope::NotAllocated).unwrap(), [(0, 32), (40, 80)]);
        // Onto mid (1 down) nothing can differ; onto base (2 down) what mid holds, and
        // what lies past mid's end (zeros in the old chain).
        assert_eq!(scope_ranges(&top, Scope::NotAllocatedAbove(1)).unwrap(), []);
        assert_eq!(scope_ranges(&top, Scope::NotAllocatedAbove(2)).unwrap(), [(8, 16), (64, 80)]);
        assert_eq!(scope_ranges(&top, Scope::All).unwrap(), [(0, 80)]);
    }

    #[test]
    fn comparing_reports_only_differing_units() {
        let old = Layer { size: 64, byte: 7, own: vec![(0, 32)], below: None };
        let new = Layer { size: 64, byte: 7, own: vec![(0, 16)], below: None };
        let d = Delta::new(64, Some(&old), vec![(0, 64)]).comparing(Some(&new), 512);
        // Bytes 16..32 differ, but the first 512-byte unit holds them all: it differs.
        let e = d.extent_at(0, 64).unwrap();
        assert_eq!((e.len, e.alloc), (64, Alloc::Data));
        let same = Delta::new(64, Some(&new), vec![(0, 64)]).comparing(Some(&new), 512);
        assert_eq!(same.extent_at(0, 64).unwrap().alloc, Alloc::Backing);
        let zero = Delta::new(64, None, vec![(0, 64)]).comparing(Some(&new), 512);
        assert_eq!(zero.extent_at(0, 64).unwrap().alloc, Alloc::Zero);
        let outside = Delta::new(64, Some(&old), vec![(16, 32)]);
        assert_eq!(outside.extent_at(0, 64).unwrap(), Extent { offset: 0, len: 16, alloc: Alloc::Backing });
        assert_eq!(outside.extent_at(16, 64).unwrap(), Extent { offset: 16, len: 16, alloc: Alloc::Data });
    }
}
