//! `check` (our own; qemu-img has none for vpc): the footer copies agree, every BAT entry
//! (up to max_table_entries) points inside the file, and no block overlaps another block
//! or the metadata (footer copy, dynamic header, BAT). Parse errors that stop opening the
//! image (checksums, impossible header values) are returned as errors.

use crate::format::{BAT_UNUSED, DYN_HEADER_SIZE, FOOTER_SIZE, SECTOR};
use crate::reader::VhdReader;
use diskcast_block::registry::CheckReport;
use diskcast_block::source::Source;
use diskcast_block::{Result, ResultExt};
use diskcast_layout::{u64_from_usize, usize_from_u64};

/// Messages kept in the report; counts keep going past it.
const MAX_MESSAGES: usize = 1000;

fn corrupt(r: &mut CheckReport, msg: String) {
    r.corruptions += 1;
    if r.messages.len() < MAX_MESSAGES {
        r.messages.push(msg);
    }
}

/// Checks the image in `file` (its parent, if any, is not opened).
pub fn check(file: Source) -> Result<CheckReport> {
    let img = VhdReader::open_file(file)?;
    check_inner(&img).file(img.file.name())
}

fn check_inner(img: &VhdReader) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let file_len = img.file.len()?;
    let Some(s) = &img.sparse else {
        // Fixed: the data area must hold current_size bytes exactly.
        let data = img.footer_at;
        if img.footer.current_size != data {
            r.messages.push(format!(
                "note: current_size is {} bytes, the data area before the footer {data} bytes",
                img.footer.current_size
            ));
        }
        r.image_end_offset = Some(file_len);
        return Ok(r);
    };
    // The footer copy at the end must exist and match the one at offset 0.
    let mut head = [0u8; 512];
    img.file.read_exact_at(&mut head, 0)?;
    let mut tail = [0u8; 512];
    if file_len >= 2 * FOOTER_SIZE {
        img.file.read_exact_at(&mut tail, file_len - FOOTER_SIZE)?;
    }
    if tail != head {
        corrupt(&mut r, "the footer at the end of the file is missing or differs from the copy at offset 0".into());
    }
    // Every BAT entry, not only those the virtual size needs.
    let entries = u64::from(s.header.max_table_entries);
    let mut raw = vec![0u8; usize_from_u64(entries * 4, "BAT entries")?];
    img.file.read_exact_at(&mut raw, s.header.table_offset)?;
    let block_len = s.bitmap_size + s.block_size;
    let mut starts: Vec<u32> = Vec::new();
    let mut end = 0u64;
    for (i, c) in crate::format::bat_entries(&raw).enumerate() {
        let e = c;
        if e == BAT_UNUSED {
            continue;
        }
        let start = u64::from(e) * SECTOR;
        if start + block_len > file_len {
            corrupt(&mut r, format!("BAT entry {i}: block at {start:#x} runs past the end of the file"));
            continue;
        }
        end = end.max(start + block_len);
        starts.push(e);
    }
    let meta = [
        (0, FOOTER_SIZE, "footer copy"),
        (img.footer.data_offset, DYN_HEADER_SIZE, "dynamic header"),
        (s.header.table_offset, (entries * 4).next_multiple_of(SECTOR), "BAT"),
    ];
    for &e in &starts {
        let start = u64::from(e) * SECTOR;
        for (m, len, what) in meta {
            if start < m + len && m < start + block_len {
                corrupt(&mut r, format!("block at {start:#x} overlaps the {what}"));
            }
        }
    }
    starts.sort_unstable();
    for w in starts.windows(2) {
        let (a, b) = (u64::from(w[0]) * SECTOR, u64::from(w[1]) * SECTOR);
        if b < a + block_len {
            corrupt(&mut r, format!("blocks at {a:#x} and {b:#x} overlap"));
        }
    }
    let total = img.size.div_ceil(s.block_size);
    r.allocated_clusters = Some(u64_from_usize(s.bat.iter().filter(|&&e| e != BAT_UNUSED).count()));
    r.total_clusters = Some(total);
    r.image_end_offset = Some(end.max(file_len.saturating_sub(FOOTER_SIZE)) + FOOTER_SIZE);
    Ok(r)
}
