//! Joining the pieces of one read into runs, so a read that spans many clusters or blocks
//! stored back to back costs one `pread` (or one fill) per run, not one per piece.

use crate::Result;

/// A run of guest bytes `[offset, offset + len)` that one action serves; `map` is what
/// the driver found at `offset` (a host offset, "zeros", "from the backing file"...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRun<M> {
    /// Guest offset of the run's first byte.
    pub offset: u64,
    /// Guest bytes in the run.
    pub len: u64,
    /// The driver's mapping of the run's first byte.
    pub map: M,
}

/// Collects a read's pieces in guest order and hands back each run once the next piece
/// cannot join it.
#[derive(Debug)]
pub struct ReadRuns<M> {
    run: Option<ReadRun<M>>,
}

impl<M> Default for ReadRuns<M> {
    fn default() -> Self {
        ReadRuns { run: None }
    }
}

impl<M: Copy> ReadRuns<M> {
    /// Adds the piece `[offset, offset + len)` mapped to `map`, which must follow the
    /// previous piece. `joins(run, map)` says whether a piece mapped to `map` continues
    /// `run` (same kind, and for stored data the host offset right after the run's end).
    /// Returns the finished run when the piece starts a new one.
    pub fn push(
        &mut self,
        offset: u64,
        len: u64,
        map: M,
        joins: impl Fn(&ReadRun<M>, M) -> bool,
    ) -> Option<ReadRun<M>> {
        if let Some(run) = &mut self.run
            && joins(run, map)
        {
            run.len += len;
            return None;
        }
        self.run.replace(ReadRun { offset, len, map })
    }

    /// The last run, after every piece was pushed.
    pub fn finish(self) -> Option<ReadRun<M>> {
        self.run
    }

    /// One whole read: `walk` calls the piece function it is given with every piece
    /// `(offset, len, map)` in guest order (it returns whether to go on), pieces that
    /// `joins` are merged, and `serve` is called once per run.
    pub fn serve(
        walk: impl FnOnce(&mut dyn FnMut(u64, u64, M) -> Result<bool>) -> Result<()>,
        joins: impl Fn(&ReadRun<M>, M) -> bool,
        mut serve: impl FnMut(ReadRun<M>) -> Result<()>,
    ) -> Result<()> {
        let mut runs = ReadRuns::default();
        walk(&mut |offset, len, map| {
            if let Some(run) = runs.push(offset, len, map, &joins) {
                serve(run)?;
            }
            Ok(true)
        })?;
        runs.finish().map_or(Ok(()), serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host offset, or `None` for zeros.
    fn joins(run: &ReadRun<Option<u64>>, map: Option<u64>) -> bool {
        match (run.map, map) {
            (Some(h0), Some(h)) => h0 + run.len == h,
            (None, None) => true,
            _ => false,
        }
    }

    #[test]
    fn contiguous_pieces_join_and_gaps_split() {
        let mut runs = ReadRuns::default();
        let mut done = Vec::new();
        for (off, len, map) in [(0, 4, Some(100)), (4, 4, Some(104)), (8, 4, Some(200)), (12, 4, None), (16, 2, None)] {
            done.extend(runs.push(off, len, map, joins));
        }
        done.extend(runs.finish());
        assert_eq!(
            done,
            vec![
                ReadRun { offset: 0, len: 8, map: Some(100) },
                ReadRun { offset: 8, len: 4, map: Some(200) },
                ReadRun { offset: 12, len: 6, map: None },
            ]
        );
    }
}
