//! `check`: what `qemu-img check -f vhdx` looks at (a pending log, BAT entries past the end
//! of the file) plus our own: payload and sector bitmap blocks must not overlap each other,
//! the header area, the log, the BAT or the metadata region.

use crate::format::{MIB, PAYLOAD_FULLY_PRESENT, PAYLOAD_PARTIALLY_PRESENT, SB_PRESENT, STATE_MASK, bat_offset};
use crate::layout::{Layout, read_headers};
use crate::log;
use crate::reader::pending_log_message;
use diskcast_block::registry::CheckReport;
use diskcast_block::source::Source;
use diskcast_block::{Result, ResultExt};

/// Most problems listed one by one; the counts keep going.
const MAX_MESSAGES: usize = 100;

/// Checks the image in `file` without writing to it.
pub fn check(file: Source) -> Result<CheckReport> {
    let path = file.name();
    let active = read_headers(file.as_ref()).file(path)?;
    let mut report = CheckReport::default();
    if log::active_sequence(file.as_ref(), &active).file(path)?.is_some() {
        report.corruptions += 1;
        report.messages.push(pending_log_message(path));
    }
    let layout = Layout::load(file.as_ref(), active).file(path)?;
    let (problems, total) = layout.bat_problems(MAX_MESSAGES);
    report.corruptions += total;
    for (at, msg) in problems {
        report.messages.push(format!("BAT entry at {at:#x}: {msg}"));
    }
    let (spans, allocated) = used_spans(&layout);
    let mut sorted = spans;
    sorted.sort_by_key(|s| s.0);
    let mut end_max = 0u64;
    let mut prev: Option<&(u64, u64, String)> = None;
    for s in &sorted {
        if let Some(p) = prev
            && s.0 < p.1
        {
            report.corruptions += 1;
            if report.messages.len() < MAX_MESSAGES {
                report.messages.push(format!("{} at {:#x} overlaps {} at {:#x}", s.2, s.0, p.2, p.0));
            }
        }
        if prev.is_none_or(|p| s.1 > p.1) {
            prev = Some(s);
        }
        end_max = end_max.max(s.1);
    }
    report.allocated_clusters = Some(allocated);
    report.total_clusters = Some(layout.geo.data_blocks);
    report.image_end_offset = Some(end_max.min(layout.file_len).max(MIB));
    Ok(report)
}

/// Every used span of the file (start, end, name) and the number of stored payload blocks.
fn used_spans(l: &Layout) -> (Vec<(u64, u64, String)>, u64) {
    let mut spans = vec![(0, MIB, "the header area".to_string())];
    if let Some((off, len)) = l.log {
        spans.push((off, off + len, "the log".into()));
    }
    spans.push((l.bat_region.offset, l.bat_region.offset + u64::from(l.bat_region.length), "the BAT".into()));
    let m = &l.metadata_region;
    spans.push((m.offset, m.offset + u64::from(m.length), "the metadata region".into()));
    let g = &l.geo;
    let mut allocated = 0;
    for block in 0..g.data_blocks {
        let e = l.bat_entry(g.payload_index(block));
        let state = e & STATE_MASK;
        if state == PAYLOAD_FULLY_PRESENT || state == PAYLOAD_PARTIALLY_PRESENT {
            allocated += 1;
            let off = bat_offset(e);
            if off >= MIB {
                spans.push((off, off.saturating_add(l.block_len(block)), format!("block {block}")));
            }
        }
    }
    if l.meta.has_parent {
        let chunks = g.data_blocks.div_ceil(g.chunk_ratio);
        for c in 0..chunks {
            let e = l.bat_entry(g.bitmap_index(c * g.chunk_ratio));
            let off = bat_offset(e);
            if e & STATE_MASK == SB_PRESENT && off >= MIB {
                spans.push((off, off.saturating_add(MIB), format!("sector bitmap {c}")));
            }
        }
    }
    (spans, allocated)
}
