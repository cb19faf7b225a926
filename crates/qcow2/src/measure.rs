//! `qemu-img measure -O qcow2`: the same arithmetic as qemu's qcow2_measure, so the
//! numbers match exactly.

use crate::writer::Params;
use diskcast_block::registry::Measure;
use diskcast_block::registry::units_touched;
use diskcast_block::{Extent, Result};
use diskcast_layout::u64_from_usize;

/// Refcount blocks and refcount table clusters needed to count `clusters` clusters plus
/// themselves: the fixed point qemu's qcow2_refcount_metadata_size finds.
pub fn refcount_metadata_clusters(clusters: u64, cluster_size: u64, refcount_order: u32) -> (u64, u64) {
    let per_table_cluster = cluster_size / 8;
    let per_block = (cluster_size * 8) >> refcount_order;
    let (mut blocks, mut table, mut n) = (0u64, 0u64, 0u64);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(per_block);
        table = blocks.div_ceil(per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            return (blocks, table);
        }
    }
}

/// Size of a fully allocated image of `virtual_size` (already cluster aligned).
fn prealloc_size(virtual_size: u64, p: &Params) -> u64 {
    let cs = 1u64 << p.cluster_bits;
    let l2e = if p.extended_l2 { 16 } else { 8 };
    let mut meta = cs; // header
    let nl2e = (virtual_size / cs).div_ceil(cs / l2e) * (cs / l2e);
    meta += nl2e * l2e;
    let nl1e = (nl2e * l2e / cs).div_ceil(cs / 8) * (cs / 8);
    meta += nl1e * 8;
    let (b, t) = refcount_metadata_clusters((meta + virtual_size) / cs, cs, p.refcount_order);
    meta + (b + t) * cs + virtual_size
}

/// `required` counts every cluster touched by a data extent (whole clusters) plus the
/// metadata of a fully allocated image, as qemu does; with a backing file every cluster
/// is assumed needed.
pub fn measure(p: &Params, data: &[Extent]) -> Result<Measure> {
    let cs = 1u64 << p.cluster_bits;
    let virtual_size = p.size.div_ceil(cs) * cs;
    let required = if p.backing_file.is_some() {
        virtual_size
    } else {
        // As qemu counts: every cluster a data run touches, once.
        units_touched(data, p.size, cs) * cs
    };
    let fully = prealloc_size(virtual_size, p);
    Ok(Measure { required: fully - virtual_size + required, fully_allocated: fully })
}

/// Bytes the persistent `bitmaps` of a source take in a new image: each bitmap fully
/// allocated plus its table, and the directory, each rounded to clusters (qemu's
/// qcow2_get_persistent_dirty_bitmap_size).
pub fn bitmaps(p: &Params, bitmaps: &[diskcast_block::PersistentBitmap]) -> u64 {
    let cs = 1u64 << p.cluster_bits;
    let mut total = 0u64;
    let mut dir = 0u64;
    for b in bitmaps {
        let bits = p.size.div_ceil(b.granularity.max(1));
        let clusters = bits.div_ceil(8).div_ceil(cs);
        total = total.saturating_add(clusters.saturating_mul(cs));
        total = total.saturating_add(clusters.saturating_mul(8).next_multiple_of(cs));
        // A directory entry: 24 fixed bytes and the name, padded to 8.
        dir += (24 + u64_from_usize(b.name.len())).next_multiple_of(8);
    }
    total.saturating_add(dir.next_multiple_of(cs))
}
