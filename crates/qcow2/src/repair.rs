//! `check -r leaks|all`: repairs what [`crate::check`] finds, in place, the way
//! `qemu-img check -r` does, with its messages and counts:
//!
//! 1. Every refcount is compared with the references counted from the tables (messages
//!    "ERROR cluster N ..." / "Leaked cluster N ...", as `check` prints them).
//! 2. A used cluster whose refcount is 0 (its refcount block may be missing) or an
//!    unusable refcount table entry means the refcount structures must be rebuilt:
//!    `-r all` writes new refcount blocks and a new table at the end of the file from the
//!    counted references, switches the header to them, and then frees the old ones as
//!    leaks; `-r leaks` refuses ("need to rebuild refcount structures").
//! 3. Otherwise the refcounts are compared again, repairing in place ("Repairing cluster
//!    N ..."): `leaks` lowers refcounts above their references, `all` also raises those
//!    below.
//! 4. OFLAG_COPIED is checked on the active L1 and L2 entries and, once no refcount is
//!    left wrong, corrected (with `leaks` too, as qemu does).
//! 5. With nothing left corrupt, the dirty and corrupt bits are cleared.
//!
//! New structures are written and synced before the header points at them, so an
//! interrupted repair leaves at worst leaked clusters.

use crate::check::{Checker, Fix};
use crate::edit::Editor;
use crate::header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY, at};
use crate::writer::write_refcount_structures;
use diskcast_block::io::ImageFile;
use diskcast_block::registry::{CheckReport, Repair};
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};

/// Repairs the qcow2 image in `file` (open for writing, locked by the caller).
pub fn repair(file: &ImageFile, fix: Repair) -> Result<CheckReport> {
    let name = file.path().to_path_buf();
    repair_inner(file, fix).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn repair_inner(file: &ImageFile, repair: Repair) -> Result<CheckReport> {
    let fix = match repair {
        Repair::Leaks => Fix::Leaks,
        Repair::All => Fix::All,
    };
    let mut c = Checker::analyze(file)?;
    if c.hidden {
        return Err(Error::refused(format!(
            "the check could not read all of the image's tables ({}), so clusters they use may look \
             leaked; diskcast repairs nothing then (qemu-img check -r may)",
            c.report().messages.join("; ")
        )));
    }
    if c.references().contains(&u16::MAX) {
        return Err(Error::unsupported(format!(
            "a cluster has {} or more references, more than diskcast counts when repairing; \
             use qemu-img check -r",
            u16::MAX
        )));
    }
    let walked = (c.report().corruptions, c.report().leaks);
    let rebuild = c.compare(Fix::Nothing, None)?;
    if rebuild && fix == Fix::All {
        let found = (c.report().corruptions, c.report().leaks);
        let mut messages = std::mem::take(&mut c.report().messages);
        messages.push("Rebuilding refcount structure".into());
        rebuild_refcounts(file, &c)?;
        drop(c);
        // The references are counted again against the new structures; the old ones are
        // now leaks, freed here (qemu does not count them as repairs: it made them).
        c = Checker::analyze(file)?;
        let walk_corruptions = c.report().corruptions;
        let mut edit = Editor::open_unchecked(file)?;
        let still = c.compare(Fix::Leaks, Some(&mut edit))?;
        edit.flush()?;
        let r = c.report();
        messages.append(&mut r.messages);
        if still {
            messages.push("ERROR rebuilt refcount structure is still broken".into());
        }
        r.messages = messages;
        let fresh_leaks = r.leaks;
        r.leaks_fixed = found.1;
        r.corruptions_fixed = found.0.saturating_sub(walk_corruptions);
        r.corruptions = walk_corruptions;
        r.leaks = fresh_leaks;
    } else if rebuild {
        let r = c.report();
        r.messages.push("ERROR need to rebuild refcount structures".into());
        r.check_errors += 1;
        return Ok(c.into_report());
    } else if c.report().corruptions > walked.0 || c.report().leaks > walked.1 {
        // Once more, repairing: the counts start again from the walk's.
        (c.report().corruptions, c.report().leaks) = walked;
        let mut edit = Editor::open_unchecked(file)?;
        c.compare(fix, Some(&mut edit))?;
        edit.flush()?;
    }
    // The flags follow the refcounts, so they are corrected only once no refcount is
    // wrong, but then with -r leaks too: as qemu-img does.
    let flags_fixable = c.report().corruptions == 0;
    c.oflag_copied(flags_fixable.then_some(file))?;
    let h = c.header().clone();
    let r = c.into_report();
    if r.corruptions == 0 && r.check_errors == 0 && h.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0 {
        file.sync()?;
        let bits = h.incompatible & !(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
        file.write_all_at(&bits.to_be_bytes(), u64_from_usize(at::INCOMPATIBLE_FEATURES))?;
    }
    file.sync()?;
    Ok(r)
}

/// Writes new refcount structures holding the references `c` counted, at the end of the
/// file, then points the header at them. The old table and blocks keep their refcounts
/// in the new structures: the next comparison frees them as leaks.
fn rebuild_refcounts(file: &ImageFile, c: &Checker<'_>) -> Result<()> {
    let h = c.header();
    let cs = h.cluster_size();
    let refs = c.references();
    let used = u64_from_usize(refs.iter().rposition(|&r| r > 0).map_or(0, |i| i + 1));
    let start = used.max(file.len()?.div_ceil(cs));
    let (offset, clusters, _) = write_refcount_structures(file, cs, h.refcount_order, start, |i| {
        Ok(refs.get(usize_from_u64(i, "cluster index")?).copied().map_or(0, u64::from))
    })?;
    file.sync()?;
    let mut fields = [0u8; 12];
    fields[..8].copy_from_slice(&offset.to_be_bytes());
    fields[8..].copy_from_slice(&clusters.to_be_bytes());
    file.write_all_at(&fields, u64_from_usize(at::REFCOUNT_TABLE_OFFSET))?;
    file.sync()
}
