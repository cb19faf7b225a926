//! An existing image's backing file changed in place (`rebase`), and an overlay emptied
//! after its data was committed into its backing file (`commit`), as qemu does both.
//!
//! The backing file's name and format live in the header cluster: the name after the
//! header extensions, the format in extension `0xe2792aca`. [`set_backing`] rewrites that
//! cluster in one write, keeping every other extension as stored (unknown ones included),
//! the new format extension first and the name right after the end marker, as qemu lays
//! them out; when they do not fit, the optional feature name table is left out (qemu
//! does the same), and when they still do not fit the change is refused.
//!
//! [`make_empty`] is qemu's `make_completely_empty` for v3 images without internal
//! snapshots (others get every cluster discarded, as qemu falls back to), refusing
//! images with persistent bitmaps: every cluster unallocated, the file cut to the header, a
//! one-cluster refcount table, one refcount block and the L1 table (clusters 0, 1, 2,
//! 3..). The dirty bit is set while it works, so an interrupted run leaves an image qemu
//! repairs on open (`qemu-img check -r all`), never one whose tables point at garbage.

use crate::edit::Editor;
use crate::header::{
    EXT_BACKING_FORMAT, EXT_FEATURE_TABLE, Header, INCOMPAT_DIRTY, MAX_BACKING_NAME, V2_HEADER_LEN, at, header_cluster,
};
use diskcast_block::io::ImageFile;
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from, usize_from_u64};

/// Records `backing` (name and format) as the backing file of the qcow2 image in `file`,
/// or none; the image's data is not touched. Errors name the file.
pub fn set_backing(file: &ImageFile, backing: Option<(&str, &str)>) -> Result<()> {
    let name = file.path().to_path_buf();
    set_backing_inner(file, backing).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn set_backing_inner(file: &ImageFile, backing: Option<(&str, &str)>) -> Result<()> {
    let h = writable_header(file)?;
    let cs = usize_from_u64(h.cluster_size(), "cluster_size")?;
    let fixed_len = usize_from(if h.version >= 3 { h.header_length } else { V2_HEADER_LEN });
    let mut fixed = vec![0u8; fixed_len];
    file.read_exact_at(&mut fixed, 0)?;
    let kept = h.extensions(file, file.len()?)?;
    if let Some((n, _)) = backing
        && (n.is_empty() || n.len() > usize_from(MAX_BACKING_NAME) || n.contains('\0'))
    {
        return Err(Error::argument(format!(
            "a backing file name is 1 to {MAX_BACKING_NAME} bytes without NUL, not {} bytes",
            n.len()
        )));
    }
    let build = |with_features: bool| -> Result<Vec<u8>> {
        let mut exts: Vec<(u32, &[u8])> = Vec::new();
        if let Some((_, fmt)) = backing {
            exts.push((EXT_BACKING_FORMAT, fmt.as_bytes()));
        }
        exts.extend(
            kept.iter()
                .filter(|e| e.typ != EXT_BACKING_FORMAT && (with_features || e.typ != EXT_FEATURE_TABLE))
                .map(|e| (e.typ, e.data.as_slice())),
        );
        header_cluster(fixed.clone(), &exts, backing.map(|b| b.0))
    };
    let mut cluster = build(true)?;
    if cluster.len() > cs {
        cluster = build(false)?;
    }
    if cluster.len() > cs {
        return Err(Error::argument(format!(
            "Could not change the backing file to '{}': No space left in the file header (it needs {} bytes, \
             the header cluster holds {cs}); use a shorter name",
            backing.map_or("", |b| b.0),
            cluster.len()
        )));
    }
    cluster.resize(cs, 0);
    file.write_all_at(&cluster, 0)?;
    file.sync()
}

/// The header of an image we may change: supported features, not dirty or corrupt.
fn writable_header(file: &ImageFile) -> Result<Header> {
    let h = Header::read(file)?;
    h.check_supported()?;
    h.refuse_unclean()?;
    Ok(h)
}

/// Why [`make_empty`] cannot empty the image in `file`, or `None` when it can: checked
/// before a commit starts, so a commit never stops half done.
pub fn cannot_empty(file: &ImageFile) -> Result<Option<String>> {
    let h = writable_header(file)?;
    Ok(empty_refusal(&h))
}

fn empty_refusal(h: &Header) -> Option<String> {
    h.bitmaps.is_some().then(|| "it has persistent dirty bitmaps, which would have to record the emptying".into())
}

/// Whether the image can be emptied completely (its file cut to the header and tables):
/// v3 (a dirty bit keeps an interruption safe), no internal snapshots sharing its
/// clusters, and an L1 table that fits beside one refcount block. Otherwise every
/// cluster is discarded instead, as qemu does.
fn completely_emptiable(h: &Header) -> bool {
    let cs = h.cluster_size();
    let l1_clusters = (u64::from(h.l1_size) * 8).div_ceil(cs);
    let per_block = cs * 8 / u64::from(h.refcount_bits());
    h.version >= 3 && h.nb_snapshots == 0 && 3 + l1_clusters <= per_block
}

/// Makes every cluster of the qcow2 image in `file` unallocated (reading from its backing
/// file again), as qemu empties an overlay after `qemu-img commit`: the file cut to its
/// metadata where it can be ([`completely_emptiable`]), else every cluster discarded
/// through the editor (v2 images, internal snapshots). Images with persistent bitmaps
/// are refused ([`cannot_empty`]).
pub fn make_empty(file: &ImageFile) -> Result<()> {
    let name = file.path().to_path_buf();
    make_empty_inner(file).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn make_empty_inner(file: &ImageFile) -> Result<()> {
    let h = writable_header(file)?;
    if let Some(why) = empty_refusal(&h) {
        return Err(Error::unsupported(format!("cannot empty the image: {why}")));
    }
    if !completely_emptiable(&h) {
        // qemu's fallback: every cluster of the active image discarded (unallocated, so
        // the backing file shows through); snapshots keep theirs, the file its length.
        let mut ed = Editor::open(file)?;
        ed.discard_past(0)?;
        return ed.flush();
    }
    let cs = h.cluster_size();
    let l1_bytes = u64::from(h.l1_size) * 8;
    let l1_clusters = l1_bytes.div_ceil(cs);
    let set_incompatible =
        |bits: u64| file.write_all_at(&bits.to_be_bytes(), u64_from_usize(at::INCOMPATIBLE_FEATURES));
    // From here until the bit is cleared the refcounts may be stale; the tables never are.
    set_incompatible(h.incompatible | INCOMPAT_DIRTY)?;
    file.sync()?;
    let zeros = |offset: u64, len: u64| -> Result<()> {
        let chunk = vec![0u8; usize_from_u64(len.min(cs), "cluster")?];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(cs);
            file.write_all_at(&chunk[..usize_from_u64(n, "cluster")?], pos)?;
            pos += n;
        }
        Ok(())
    };
    // The active L1 table zeroed where it is: no L2 table is referenced any more.
    zeros(h.l1_table_offset, l1_bytes)?;
    // A zeroed L1 table at cluster 3 (over unreferenced clusters, or over the zeroed old
    // table itself), and the header switched to it before clusters 1 and 2 are reused.
    let new_l1 = 3 * cs;
    zeros(new_l1, l1_clusters * cs)?;
    file.sync()?;
    file.write_all_at(&new_l1.to_be_bytes(), u64_from_usize(at::L1_TABLE_OFFSET))?;
    file.sync()?;
    // One refcount block at cluster 2 counting clusters 0..3+L1 once, the table at cluster 1.
    let mut block = vec![0u8; usize_from_u64(cs, "cluster")?];
    for c in 0..usize_from_u64(3 + l1_clusters, "L1 clusters")? {
        crate::writer::put_refcount(&mut block, h.refcount_order, c, 1);
    }
    file.write_all_at(&block, 2 * cs)?;
    let mut table = vec![0u8; block.len()];
    table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
    file.write_all_at(&table, cs)?;
    let mut fields = Vec::with_capacity(20);
    fields.extend_from_slice(&new_l1.to_be_bytes());
    fields.extend_from_slice(&cs.to_be_bytes());
    fields.extend_from_slice(&1u32.to_be_bytes());
    file.write_all_at(&fields, u64_from_usize(at::L1_TABLE_OFFSET))?;
    file.set_len((3 + l1_clusters) * cs)?;
    file.sync()?;
    set_incompatible(h.incompatible & !INCOMPAT_DIRTY)?;
    file.sync()
}
