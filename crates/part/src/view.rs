//! One partition read as a disk of its own.

use diskcast_block::{BlockRead, Error, Extent, ImageInfo, Result, range_end, resolved_extent};
use diskcast_layout::u64_from_usize;
use std::sync::Arc;

/// The bytes `[start, start + len)` of `disk` as a [`BlockRead`]: filesystems are read
/// from a partition exactly as from a whole disk, and sparse ranges stay sparse.
#[derive(Debug, Clone)]
pub struct PartitionView {
    disk: Arc<dyn BlockRead>,
    start: u64,
    len: u64,
    label: String,
}

impl PartitionView {
    /// A view of `len` bytes at `start`; the range must lie inside the disk. `label`
    /// names it in `info` (`partition 2`).
    pub fn new(disk: Arc<dyn BlockRead>, start: u64, len: u64, label: impl Into<String>) -> Result<Self> {
        range_end(start, len, disk.size()).map_err(|_| {
            Error::out_of_bounds(format!(
                "partition of {len} bytes at {start:#x} runs past the end of the disk ({:#x})",
                disk.size()
            ))
            .with_offset(start)
        })?;
        Ok(PartitionView { disk, start, len, label: label.into() })
    }

    /// Where the partition starts on its disk.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockRead for PartitionView {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.len)?;
        self.disk.read_at(buf, self.start + offset)
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        if offset >= self.len {
            return Err(Error::out_of_bounds("extent query past the end of the partition").with_offset(offset));
        }
        let e = resolved_extent(self.disk.as_ref(), self.start + offset, max_len.min(self.len - offset))?;
        Ok(Extent { offset, len: e.len.max(1).min(self.len - offset), alloc: e.alloc })
    }

    fn info(&self) -> ImageInfo {
        let mut i = self.disk.info();
        i.virtual_size = self.len;
        i.format = format!("{} ({})", i.format, self.label);
        i
    }
}
