//! `bitmap --add|--remove|--clear|--enable|--disable`: persistent dirty bitmaps changed in
//! place as qemu keeps them: each bitmap's table in clusters of its own, the directory
//! rewritten to new clusters, the header extension and autoclear bit 0 switched to it in
//! one write of the header cluster, and only then the old directory (and a removed or
//! cleared bitmap's clusters) freed. Clusters come from the editor's one allocator.

use crate::bitmap::{
    AUTOCLEAR_BITMAPS, EXT_BITMAPS, FLAG_AUTO, FLAG_IN_USE, MAX_BITMAPS, RawBitmapEntry, RawBitmapsExt,
    TABLE_OFFSET_MASK,
};
use crate::edit::Editor;
use crate::header::{Header, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, at, header_cluster, read_u64_table};
use diskcast_block::io::ImageFile;
use diskcast_block::registry::BitmapOp;
use diskcast_block::{Error, Result, range_end};
use diskcast_layout::{IntoBytes, read, u64_from_usize, usize_from, usize_from_u64};

/// qemu's BME_MAX_NAME_SIZE.
const MAX_NAME: usize = 1023;
/// Granularities qemu accepts for a persistent bitmap: 512 B to 2 GiB.
const MIN_GRANULARITY: u64 = 512;
const MAX_GRANULARITY: u64 = 1 << 31;
/// qemu's BME_MAX_TABLE_SIZE: the most entries a bitmap table may have (a 1 GiB
/// table), which also bounds what one table read or zero-fill here costs.
const MAX_TABLE_ENTRIES: u64 = 0x0800_0000;
/// Bitmap type 1: dirty tracking (the only one qcow2.txt defines).
const TYPE_DIRTY_TRACKING: u8 = 1;

/// One directory entry as stored: untouched entries are written back as they were read.
struct Entry {
    raw: RawBitmapEntry,
    extra: Vec<u8>,
    name: String,
}

/// Applies `ops` in order to the qcow2 image in `file` (open for writing, locked).
pub fn edit(file: &ImageFile, ops: &[BitmapOp]) -> Result<()> {
    let name = file.path().to_path_buf();
    edit_inner(file, ops).map_err(|e| if e.file().is_none() { e.with_file(&name) } else { e })
}

fn edit_inner(file: &ImageFile, ops: &[BitmapOp]) -> Result<()> {
    let h = Header::read(file)?;
    h.check_supported()?;
    if h.version < 3 {
        return Err(Error::unsupported("Cannot store dirty bitmaps in qcow2 v2 files"));
    }
    if h.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0 {
        return Err(Error::refused(
            "the image is marked corrupt or was not closed cleanly (dirty); run `diskcast check -r all` first",
        ));
    }
    let cs = h.cluster_size();
    let old = h.bitmaps.filter(|_| h.autoclear & AUTOCLEAR_BITMAPS != 0);
    let mut entries = match old {
        Some(ext) => read_entries(file, ext.nb_bitmaps, ext.directory_offset, ext.directory_size)?,
        None => Vec::new(),
    };
    let mut ed = Editor::open_unchecked(file)?;
    for op in ops {
        apply(&mut ed, &h, &mut entries, op).map_err(|e| {
            Error::new(e.kind(), format!("Operation {} on bitmap {} failed: {}", op.verb(), op.name(), e.message()))
        })?;
    }
    ed.flush()?;
    let dir = serialize(&entries)?;
    let ext = if entries.is_empty() {
        None
    } else {
        let clusters = u64_from_usize(dir.len()).div_ceil(cs);
        let at = ed.allocate(clusters)?;
        let mut padded = dir.clone();
        padded.resize(usize_from_u64(clusters * cs, "bitmap directory")?, 0);
        file.write_all_at(&padded, at)?;
        ed.flush()?;
        Some(RawBitmapsExt {
            nb_bitmaps: u32::try_from(entries.len()).map_err(|_| Error::argument("too many bitmaps"))?.into(),
            reserved: 0.into(),
            directory_size: u64_from_usize(dir.len()).into(),
            directory_offset: at.into(),
        })
    };
    write_extension(file, &h, ext.as_ref())?;
    if let Some(o) = old.filter(|o| o.directory_offset != 0 && o.directory_size != 0) {
        ed.free(o.directory_offset, o.directory_size)?;
    }
    ed.flush()
}

fn find(entries: &[Entry], name: &str) -> Result<usize> {
    let i = entries
        .iter()
        .position(|e| e.name == name)
        .ok_or_else(|| Error::argument(format!("Dirty bitmap '{name}' not found")))?;
    if entries[i].raw.flags.get() & FLAG_IN_USE != 0 {
        return Err(Error::refused(format!(
            "Bitmap '{name}' is inconsistent (in use: it was not saved cleanly) and cannot be changed; \
             remove it"
        )));
    }
    Ok(i)
}

fn apply(ed: &mut Editor<&ImageFile>, h: &Header, entries: &mut Vec<Entry>, op: &BitmapOp) -> Result<()> {
    let cs = h.cluster_size();
    match op {
        BitmapOp::Add { name, granularity, disabled } => {
            if entries.iter().any(|e| &e.name == name) {
                return Err(Error::argument(format!("Bitmap already exists: {name}")));
            }
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(Error::argument(format!("bitmap names are 1 to {MAX_NAME} bytes long")));
            }
            if u64_from_usize(entries.len()) >= u64::from(MAX_BITMAPS) {
                return Err(Error::argument(format!("the image already has {MAX_BITMAPS} bitmaps, qemu's limit")));
            }
            // qemu's default: the cluster size, at least 4 KiB.
            let g = granularity.unwrap_or(cs.max(4096));
            if !g.is_power_of_two() || !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&g) {
                return Err(Error::argument(format!(
                    "Granularity must be power of 2 between {MIN_GRANULARITY} and {MAX_GRANULARITY}"
                )));
            }
            let table_size = h.size.div_ceil(g).div_ceil(cs * 8);
            if table_size > MAX_TABLE_ENTRIES {
                return Err(Error::argument(format!(
                    "a bitmap of granularity {g} on this image needs a table of {table_size} entries, more than \
                     qemu's {MAX_TABLE_ENTRIES}; use a larger granularity"
                )));
            }
            let clusters = (table_size * 8).div_ceil(cs).max(1);
            let at = ed.allocate(clusters)?;
            // A reused free cluster may hold old bytes: the table must read as zeros. (Zeroing
            // may punch a hole, which does not extend the file: extend it first.)
            let end = at + clusters * cs;
            if ed.file().len()? < end {
                ed.file().set_len(end)?;
            }
            ed.file().write_zeroes(at, clusters * cs)?;
            entries.push(Entry {
                raw: RawBitmapEntry {
                    table_offset: at.into(),
                    table_size: u32::try_from(table_size)
                        .map_err(|_| Error::argument("bitmap table too large"))?
                        .into(),
                    flags: if *disabled { 0 } else { FLAG_AUTO }.into(),
                    typ: TYPE_DIRTY_TRACKING,
                    granularity_bits: u8::try_from(g.trailing_zeros()).unwrap_or(0),
                    name_size: u16::try_from(name.len()).unwrap_or(0).into(),
                    extra_data_size: 0.into(),
                },
                extra: Vec::new(),
                name: name.clone(),
            });
        }
        BitmapOp::Remove(name) => {
            let i = find(entries, name)?;
            free_data(ed, &entries[i], false)?;
            let e = entries.remove(i);
            ed.free(e.raw.table_offset.get(), u64::from(e.raw.table_size.get()) * 8)?;
        }
        BitmapOp::Clear(name) => {
            let i = find(entries, name)?;
            free_data(ed, &entries[i], true)?;
        }
        BitmapOp::Enable(name) | BitmapOp::Disable(name) => {
            let i = find(entries, name)?;
            let f = entries[i].raw.flags.get() & !FLAG_AUTO;
            entries[i].raw.flags = if matches!(op, BitmapOp::Enable(_)) { f | FLAG_AUTO } else { f }.into();
        }
        BitmapOp::Merge { name, source } => merge(ed, entries, name, source)?,
    }
    Ok(())
}

/// `--merge SOURCE`: every bit set in `source` is set in `name` too (same image, same
/// granularity). A table entry of SOURCE that is all ones makes the target's all ones; a
/// data cluster is ORed into the target's (copied to a new cluster where the target has
/// none). Data is written and its refcounts flushed before the target's table.
fn merge(ed: &mut Editor<&ImageFile>, entries: &[Entry], name: &str, source: &str) -> Result<()> {
    let (di, si) = (find(entries, name)?, find(entries, source)?);
    let (d, s) = (&entries[di], &entries[si]);
    if d.raw.granularity_bits != s.raw.granularity_bits || d.raw.table_size.get() != s.raw.table_size.get() {
        return Err(Error::unsupported(
            "merging bitmaps of different granularities is not implemented in diskcast; use qemu-img bitmap --merge",
        ));
    }
    if di == si {
        return Ok(());
    }
    let cs = ed.cluster_size();
    let n = u64::from(d.raw.table_size.get());
    let src = read_u64_table(ed.file(), s.raw.table_offset.get(), n, "bitmap_table_offset")?;
    let mut dst = read_u64_table(ed.file(), d.raw.table_offset.get(), n, "bitmap_table_offset")?;
    let (mut sbuf, mut dbuf) =
        (vec![0u8; usize_from_u64(cs, "cluster size")?], vec![0u8; usize_from_u64(cs, "cluster size")?]);
    let file_len = ed.file().len()?;
    let inside = |off: u64| off.is_multiple_of(cs) && off.checked_add(cs).is_some_and(|e| e <= file_len);
    for (se, de) in src.into_iter().zip(dst.iter_mut()) {
        let (soff, doff) = (se & TABLE_OFFSET_MASK, *de & TABLE_OFFSET_MASK);
        let (s_ones, d_ones) = (soff == 0 && se & 1 != 0, doff == 0 && *de & 1 != 0);
        if (soff == 0 && !s_ones) || d_ones {
            continue;
        }
        if s_ones {
            if doff != 0 {
                ed.free(doff, cs)?;
            }
            *de = 1;
            continue;
        }
        if !inside(soff) || (doff != 0 && !inside(doff)) {
            return Err(Error::corrupt(format!("bitmap data cluster {soff:#x} or {doff:#x} lies outside the file")));
        }
        ed.file().read_exact_at(&mut sbuf, soff)?;
        if doff == 0 {
            let at = ed.allocate(1)?;
            ed.file().write_all_at(&sbuf, at)?;
            *de = at;
        } else {
            ed.file().read_exact_at(&mut dbuf, doff)?;
            for (x, y) in dbuf.iter_mut().zip(&sbuf) {
                *x |= *y;
            }
            ed.file().write_all_at(&dbuf, doff)?;
        }
    }
    ed.flush()?;
    ed.file().write_all_at(&crate::check::table_bytes(&dst), d.raw.table_offset.get())?;
    ed.file().sync()
}

/// Frees the data clusters bitmap `e`'s table names; with `zero_table` the table is first
/// rewritten as all zeros (the bitmap then reads as clean).
fn free_data(ed: &mut Editor<&ImageFile>, e: &Entry, zero_table: bool) -> Result<()> {
    let cs = ed.cluster_size();
    let (off, n) = (e.raw.table_offset.get(), u64::from(e.raw.table_size.get()));
    check_table(e, ed.file().len()?)?;
    let table = read_u64_table(ed.file(), off, n, "bitmap_table_offset")?;
    if zero_table {
        ed.file().write_zeroes(off, n * 8)?;
        ed.file().sync()?;
    }
    for data in table.into_iter().map(|t| t & TABLE_OFFSET_MASK).filter(|&o| o != 0) {
        ed.free(data, cs)?;
    }
    Ok(())
}

/// Every entry's table must be at most qemu's size and lie inside the file: an image
/// whose directory says otherwise is refused before anything is written.
fn check_table(e: &Entry, file_len: u64) -> Result<()> {
    let (off, n) = (e.raw.table_offset.get(), u64::from(e.raw.table_size.get()));
    if n > MAX_TABLE_ENTRIES {
        return Err(Error::corrupt(format!(
            "bitmap {:?} has a table of {n} entries, more than qemu's {MAX_TABLE_ENTRIES}",
            e.name
        )));
    }
    range_end(off, n * 8, file_len)
        .map_err(|_| Error::corrupt(format!("bitmap {:?}: table at {off:#x} runs past the end of the file", e.name)))?;
    Ok(())
}

/// Reads the directory whole, after `bitmap::directory` has checked its bounds and every
/// entry's; each entry is read again here with the bytes qemu stores (extra data kept).
fn read_entries(file: &ImageFile, nb: u32, offset: u64, size: u64) -> Result<Vec<Entry>> {
    let checked = crate::bitmap::directory(file, &Header::read(file)?, file.len()?)?;
    let mut dir = vec![0u8; usize_from_u64(size, "bitmap directory")?];
    file.read_exact_at(&mut dir, offset)?;
    let mut out = Vec::with_capacity(checked.len());
    let mut pos = 0usize;
    for _ in 0..nb {
        let raw = *read::<RawBitmapEntry>(&dir, pos, "bitmap directory entry")?;
        let extra_at = pos + size_of::<RawBitmapEntry>();
        let extra_len = usize_from(raw.extra_data_size.get());
        let name_len = usize::from(raw.name_size.get());
        let extra = diskcast_layout::bytes(&dir, extra_at, extra_len, "bitmap extra data")?.to_vec();
        let name = diskcast_layout::bytes(&dir, extra_at + extra_len, name_len, "bitmap name")?;
        let e = Entry { raw, extra, name: String::from_utf8_lossy(name).into_owned() };
        check_table(&e, file.len()?)?;
        out.push(e);
        pos = (extra_at + extra_len + name_len).next_multiple_of(8);
    }
    Ok(out)
}

fn serialize(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut dir = Vec::new();
    for e in entries {
        dir.extend_from_slice(e.raw.as_bytes());
        dir.extend_from_slice(&e.extra);
        dir.extend_from_slice(e.name.as_bytes());
        dir.resize(dir.len().next_multiple_of(8), 0);
    }
    Ok(dir)
}

/// Rewrites the header cluster with the bitmaps extension `ext` (or none) and autoclear
/// bit 0 to match, every other extension and the backing file name kept.
fn write_extension(file: &ImageFile, h: &Header, ext: Option<&RawBitmapsExt>) -> Result<()> {
    let cs = usize_from_u64(h.cluster_size(), "cluster size")?;
    let mut fixed = vec![0u8; usize_from(h.header_length)];
    file.read_exact_at(&mut fixed, 0)?;
    let kept = h.extensions(file, file.len()?)?;
    let mut exts: Vec<(u32, &[u8])> =
        kept.iter().filter(|e| e.typ != EXT_BITMAPS).map(|e| (e.typ, e.data.as_slice())).collect();
    if let Some(e) = ext {
        exts.push((EXT_BITMAPS, e.as_bytes()));
    }
    let mut out = header_cluster(fixed, &exts, h.backing_file.as_deref())?;
    let autoclear = if ext.is_some() { h.autoclear | AUTOCLEAR_BITMAPS } else { h.autoclear & !AUTOCLEAR_BITMAPS };
    out[at::AUTOCLEAR_FEATURES..at::AUTOCLEAR_FEATURES + 8].copy_from_slice(&autoclear.to_be_bytes());
    if out.len() > cs {
        return Err(Error::argument("the header extensions no longer fit in the header cluster"));
    }
    out.resize(cs, 0);
    file.sync()?;
    file.write_all_at(&out, 0)?;
    file.sync()
}

const _: () = assert!(size_of::<RawBitmapEntry>() == 24);
