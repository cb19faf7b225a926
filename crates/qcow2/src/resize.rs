//! `resize` in place, as qemu's `qcow2_co_truncate` does it: growing writes the new size
//! and, when the L1 table's clusters cannot map it, moves the L1 table to new clusters at
//! the end of the file; shrinking (`--shrink`) frees every cluster past the new end and
//! truncates the file after its last used cluster. Tables are written before the header
//! and refcounts are dropped last, so an interrupted resize leaves at worst leaked
//! clusters (`qemu-img check -r leaks`), never a cluster used twice.

use crate::edit::Editor;
use crate::header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, MAX_L1_BYTES, MAX_VIRTUAL_SIZE};
use diskcast_block::io::ImageFile;
use diskcast_block::registry::Preallocation;
use diskcast_block::{Error, Result};

/// Resizes the qcow2 image in `file` to `size` guest bytes.
pub fn resize(file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
    let name = file.path().to_path_buf();
    resize_inner(file, size, prealloc).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn resize_inner(file: &ImageFile, size: u64, prealloc: Preallocation) -> Result<()> {
    let h = Header::read(file)?;
    h.check_supported()?;
    if h.incompatible & (INCOMPAT_CORRUPT | INCOMPAT_DIRTY) != 0 {
        return Err(Error::refused(
            "the image is marked corrupt or was not closed cleanly (dirty); run `qemu-img check -r all` first",
        ));
    }
    if h.bitmaps.is_some() && h.autoclear & 1 != 0 {
        return Err(Error::unsupported(
            "the image has persistent dirty bitmaps, whose tables diskcast does not resize; \
             remove them (qemu-img bitmap --remove) or use qemu-img resize",
        ));
    }
    if !size.is_multiple_of(512) {
        return Err(Error::argument("The new size must be a multiple of 512"));
    }
    if size > MAX_VIRTUAL_SIZE {
        return Err(Error::argument(format!("{size} bytes is more than qcow2's limit of {MAX_VIRTUAL_SIZE}")));
    }
    if prealloc != Preallocation::Off {
        return Err(Error::unsupported(format!(
            "preallocation={} is not implemented for qcow2 resize (off is)",
            prealloc.name()
        )));
    }
    let mut ed = Editor::open(file)?;
    if size >= h.size { grow(&mut ed, size) } else { shrink(&mut ed, size) }
}

/// L1 entries a `size`-byte disk needs, within qemu's limit.
fn l1_entries(h: &Header, size: u64) -> Result<u64> {
    let n = Header::l1_entries_for(size, h.cluster_bits, h.l2_entry_size());
    if n * 8 > MAX_L1_BYTES {
        return Err(Error::argument(format!(
            "{size} bytes needs an L1 table of {} bytes, more than the {MAX_L1_BYTES} qemu accepts; \
             use a larger cluster_size",
            n * 8
        )));
    }
    Ok(n)
}

/// Grows the L1 table when it cannot map `size` (a new one at the end of the file when
/// its clusters are full; the old one freed after the header names the new one), then
/// writes the new size.
fn grow(ed: &mut Editor<&ImageFile>, size: u64) -> Result<()> {
    let need = l1_entries(ed.header(), size)?;
    ed.grow_l1(need)?;
    ed.set_size(size)?;
    ed.flush()
}

/// Frees every cluster past the new end (refused before anything is written when the
/// metadata contradicts itself), writes the tables and the size, and cuts the file after
/// its last used cluster.
fn shrink(ed: &mut Editor<&ImageFile>, size: u64) -> Result<()> {
    if ed.header().nb_snapshots > 0 {
        return Err(Error::unsupported(
            "shrinking an image with internal snapshots is not implemented in diskcast (their tables may \
             share the clusters being freed); qemu-img resize --shrink can",
        ));
    }
    ed.discard_past(size)?;
    ed.set_size(size)?;
    ed.flush()?;
    ed.truncate_after_last_used()?;
    ed.file().sync()
}
