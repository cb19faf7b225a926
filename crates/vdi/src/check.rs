//! `check`: what `qemu-img check -f vdi` checks, counted the same way, plus data blocks
//! that lie past the end of the file.
//!
//! - every allocated block map entry names a data block below `blocks_in_image`
//!   (one corruption per entry that does not);
//! - no data block is named by two guest blocks (one corruption per extra user);
//! - the number of allocated entries equals `blocks_allocated` (one corruption);
//! - (ours) the data of every allocated entry lies inside the file (one corruption each).
//!
//! The header itself must be readable (qemu cannot open the image otherwise either).

use crate::header::{BLOCK_ZERO, Header, read_block_map};
use diskcast_block::registry::CheckReport;
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Result, ResultExt};
use diskcast_layout::{u64_from_usize, usize_from};

/// Messages kept in the report; counts keep going past it.
const MAX_MESSAGES: usize = 1000;

fn note(r: &mut CheckReport, msg: String) {
    r.corruptions = r.corruptions.saturating_add(1);
    if r.messages.len() < MAX_MESSAGES {
        r.messages.push(msg);
    }
}

/// Checks the VDI image in `file`.
pub fn check(file: Source) -> Result<CheckReport> {
    check_inner(file.as_ref()).file(file.name())
}

fn check_inner(file: &dyn ByteSource) -> Result<CheckReport> {
    let file_len = file.len()?;
    let h = Header::read(file)?;
    h.validate(file_len)?;
    let bmap = read_block_map(file, &h)?;
    let mut r = CheckReport::default();
    let blocks = h.blocks_in_image;
    // One bit per possible data block: at most MAX_BLOCKS / 8 bytes.
    let mut used = vec![0u64; usize_from(blocks).div_ceil(64)];
    let mut allocated = 0u32;
    let size = h.size();
    for (i, &e) in bmap.iter().enumerate() {
        if e >= BLOCK_ZERO {
            continue;
        }
        if e >= blocks {
            note(&mut r, format!("ERROR: block map entry {i} names data block {e}, beyond the {blocks} blocks"));
            continue;
        }
        allocated += 1;
        let (word, bit) = (usize_from(e / 64), e % 64);
        if let Some(w) = used.get_mut(word) {
            if *w & (1 << bit) != 0 {
                note(&mut r, format!("ERROR: data block {e} is used by block map entry {i} and by an earlier one"));
            }
            *w |= 1 << bit;
        }
        let guest = u64_from_usize(i) * h.block_size;
        if guest < size {
            // The guest-visible part of the block must be in the file.
            let host = h.offset_data + u64::from(e) * h.block_size;
            if host + h.block_size.min(size - guest) > file_len {
                note(&mut r, format!("ERROR: block map entry {i} puts data at {host:#x}, past the end of the file"));
            }
        }
    }
    if allocated != h.blocks_allocated {
        note(
            &mut r,
            format!(
                "ERROR: allocated blocks mismatch: the block map allocates {allocated}, the header says {}",
                h.blocks_allocated
            ),
        );
    }
    Ok(r)
}
