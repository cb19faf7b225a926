//! A sparse tar member as file content: runs of a stream placed at offsets of the file,
//! holes between them.

use crate::reader::SparseRun;
use diskcast_block::{Error, Result};
use diskcast_tree::{ContentRead, StreamCursor, StreamSource};
use std::sync::{Arc, Mutex};

/// The content of a sparse member: its runs' bytes are stored back to back at
/// `data_offset` of the stream. One cursor is kept open, so reading the file front to
/// back is one pass over the stream.
#[derive(Debug)]
pub struct SparseContent {
    /// (file offset, length, stream offset) of each run.
    runs: Vec<(u64, u64, u64)>,
    stream: Arc<dyn StreamSource>,
    cursor: Mutex<StreamCursor>,
}

impl SparseContent {
    /// Content for `runs` whose bytes start at `data_offset` of `stream`.
    pub fn new(stream: Arc<dyn StreamSource>, data_offset: u64, runs: &[SparseRun]) -> Result<Self> {
        let mut at = data_offset;
        let mut out = Vec::with_capacity(runs.len());
        for r in runs.iter().filter(|r| r.len > 0) {
            out.push((r.offset, r.len, at));
            at = at.checked_add(r.len).ok_or_else(|| Error::corrupt("sparse runs overflow"))?;
        }
        Ok(SparseContent { runs: out, stream, cursor: Mutex::new(StreamCursor::new()) })
    }
}

impl ContentRead for SparseContent {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        buf.fill(0);
        let end = offset + diskcast_layout::u64_from_usize(buf.len());
        let first = self.runs.partition_point(|r| r.0 + r.1 <= offset);
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        for &(fo, len, so) in self.runs[first..].iter().take_while(|r| r.0 < end) {
            let lo = fo.max(offset);
            let hi = (fo + len).min(end);
            // Both ends lie within buf (lo and hi are clamped to offset..end).
            let (a, b) = (
                diskcast_layout::usize_from_u64(lo - offset, "sparse run")?,
                diskcast_layout::usize_from_u64(hi - offset, "sparse run")?,
            );
            cursor.read_exact_at(&self.stream, &mut buf[a..b], so + (lo - fo))?;
        }
        Ok(())
    }

    fn data_ranges(&self, _size: u64) -> Result<Vec<(u64, u64)>> {
        Ok(self.runs.iter().map(|r| (r.0, r.1)).collect())
    }
}
