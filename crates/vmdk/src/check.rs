//! `check`: what `qemu-img check -f vmdk` verifies (every grain table and grain of every
//! sparse extent lies inside its file), plus the markers of compressed grains. qemu stops
//! at the first problem; we count them all (messages are capped).

use crate::reader::{Backing, VmdkReader};
use crate::sparse::{GrainMap, SparseExtent};
use diskcast_block::Result;
use diskcast_block::registry::{CheckReport, OpenContext};
use diskcast_block::source::Source;
use diskcast_layout::u64_from_usize;

/// Messages kept in a report; the counts go on.
const MAX_MESSAGES: usize = 100;

/// Checks the image in `file`.
pub fn check(file: Source, ctx: &OpenContext<'_>) -> Result<CheckReport> {
    let img = VmdkReader::open(file, ctx)?;
    let mut r = CheckReport::default();
    let (mut allocated, mut total, mut compressed) = (0u64, 0u64, 0u64);
    for e in &img.extents {
        if let Backing::Sparse(sp) = &e.backing {
            let name = e.line.file.clone().unwrap_or_default();
            check_sparse(sp, &name, &mut r, &mut allocated, &mut compressed)?;
            total += e.len.div_ceil(sp.grain);
        }
    }
    if total > 0 {
        r.allocated_clusters = Some(allocated);
        r.total_clusters = Some(total);
        r.compressed_clusters = Some(compressed);
    }
    Ok(r)
}

fn note(r: &mut CheckReport, msg: String) {
    r.corruptions += 1;
    if r.messages.len() < MAX_MESSAGES {
        r.messages.push(msg);
    }
}

fn check_sparse(
    sp: &SparseExtent,
    name: &str,
    r: &mut CheckReport,
    allocated: &mut u64,
    compressed: &mut u64,
) -> Result<()> {
    let grains = sp.capacity.div_ceil(sp.grain);
    for t in 0..u64_from_usize(sp.gd.len()) {
        let tab = match sp.gt(t) {
            Ok(Some(tab)) => tab,
            Ok(None) => continue,
            Err(e) => {
                note(r, format!("ERROR: {name}: grain table {t}: {}", e.message()));
                continue;
            }
        };
        for (i, &gte) in tab.iter().enumerate() {
            let g = t * sp.per_gt + u64_from_usize(i);
            if g >= grains {
                break;
            }
            match sp.classify(gte, g) {
                Ok(GrainMap::Unallocated | GrainMap::Zero) => {}
                Ok(GrainMap::Data(_)) => *allocated += 1,
                Ok(GrainMap::Compressed(at)) => {
                    *allocated += 1;
                    *compressed += 1;
                    if let Err(e) = sp.compressed_location(at, g) {
                        note(r, format!("ERROR: {name}: {}", e.message()));
                    }
                }
                Err(e) => note(
                    r,
                    format!(
                        "ERROR: {name}: cluster offset for sector {} points after EOF ({})",
                        g * sp.grain / 512,
                        e.message()
                    ),
                ),
            }
        }
    }
    Ok(())
}
