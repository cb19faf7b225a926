//! `bitmap --add|--remove|--clear|--enable|--disable|--merge`: persistent dirty bitmaps changed in
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
        BitmapOp::Merge { name, source, image } => merge(ed, h, entries, name, source, image.as_deref())?,
    }
    Ok(())
}

/// `--merge SOURCE [-b IMAGE]`: every guest byte `source` marks dirty is marked in `name`
/// too, as qemu merges: bitmaps of the same granularity bit for bit, others by the guest
/// ranges their bits cover (a target bit is set when any byte of its range is dirty in
/// the source). The source is a bitmap of this image or of `image` (another qcow2, read
/// only), of a disk of the same size. The target's data clusters are ORed in place, new
/// ones allocated where its table has none; data is written and refcounts flushed
/// before the target's table.
fn merge(
    ed: &mut Editor<&ImageFile>,
    h: &Header,
    entries: &[Entry],
    name: &str,
    source: &str,
    image: Option<&std::path::Path>,
) -> Result<()> {
    let di = find(entries, name)?;
    // The source's file: the other image, or this one through a second descriptor (the
    // same open file, not its name looked up again), read while the editor writes.
    let other = match image {
        Some(p) => {
            // Read as qemu-img reads it: nobody may write it meanwhile (a VM using it is refused).
            let f = ImageFile::open(p)?;
            diskcast_block::lock::apply(f.file(), p, diskcast_block::lock::LockMode::Read)?;
            f
        }
        None => {
            let dup = ed.file().file().try_clone().map_err(|e| Error::io("cannot duplicate the descriptor", e))?;
            ImageFile::from_file(dup, ed.file().path())
        }
    };
    let (src_header, src_entries) = match image {
        Some(_) => {
            let sh = Header::read(&other)?;
            sh.check_supported()?;
            let ext = sh.bitmaps.filter(|_| sh.autoclear & AUTOCLEAR_BITMAPS != 0);
            let list = match ext {
                Some(x) => read_entries(&other, x.nb_bitmaps, x.directory_offset, x.directory_size)?,
                None => Vec::new(),
            };
            (sh, Some(list))
        }
        None => (h.clone(), None),
    };
    let src_list = src_entries.as_deref().unwrap_or(entries);
    let s = &src_list[find(src_list, source)?];
    if src_header.size != h.size {
        return Err(Error::argument(format!(
            "Bitmaps are of different sizes (destination size is {}, source size is {}) and can't be merged",
            h.size, src_header.size
        )));
    }
    if image.is_none() && s.name == entries[di].name {
        return Ok(());
    }
    let cs = ed.cluster_size();
    let mut src = Bits::open(&other, s, src_header.cluster_size())?;
    let d = &entries[di];
    let dst_gran = granularity(d)?;
    let n = u64::from(d.raw.table_size.get());
    let mut table = read_u64_table(ed.file(), d.raw.table_offset.get(), n, "bitmap_table_offset")?;
    let bits_per_cluster = cs * 8;
    let total_bits = h.size.div_ceil(dst_gran);
    let mut buf = vec![0u8; usize_from_u64(cs, "cluster size")?];
    let file_len = ed.file().len()?;
    for (j, de) in (0u64..).zip(table.iter_mut()) {
        let doff = *de & TABLE_OFFSET_MASK;
        if doff == 0 && *de & 1 != 0 {
            continue; // already all ones
        }
        buf.fill(0);
        let first = j * bits_per_cluster;
        let mut any = false;
        for bit in first..(first + bits_per_cluster).min(total_bits) {
            let start = bit * dst_gran;
            if src.any(start, (start + dst_gran).min(h.size))? {
                let k = usize_from_u64(bit - first, "bitmap bit")?;
                buf[k / 8] |= 1 << (k % 8);
                any = true;
            }
        }
        if !any {
            continue;
        }
        if doff == 0 {
            let at = ed.allocate(1)?;
            ed.file().write_all_at(&buf, at)?;
            *de = at;
            continue;
        }
        if !doff.is_multiple_of(cs) || doff.checked_add(cs).is_none_or(|e| e > file_len) {
            return Err(Error::corrupt(format!("bitmap data cluster {doff:#x} lies outside the file")));
        }
        let mut old = vec![0u8; buf.len()];
        ed.file().read_exact_at(&mut old, doff)?;
        for (x, y) in old.iter_mut().zip(&buf) {
            *x |= *y;
        }
        ed.file().write_all_at(&old, doff)?;
    }
    ed.flush()?;
    ed.file().write_all_at(&crate::check::table_bytes(&table), d.raw.table_offset.get())?;
    ed.file().sync()
}

/// Guest bytes per bit of bitmap `e`, as its directory entry says (checked against
/// qemu's range, since another image's entry is read here too).
fn granularity(e: &Entry) -> Result<u64> {
    let bits = u32::from(e.raw.granularity_bits);
    let g = 1u64.checked_shl(bits).unwrap_or(0);
    if !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&g) {
        return Err(Error::corrupt(format!("bitmap {:?} has granularity 2^{bits}, outside qemu's range", e.name)));
    }
    Ok(g)
}

/// A stored bitmap's bits, read a data cluster at a time (the last one kept): bit `i`
/// covers guest bytes `[i * granularity, (i + 1) * granularity)`, least significant
/// bit first in each byte, as qcow2.txt lays them out.
struct Bits<'a> {
    file: &'a ImageFile,
    table: Vec<u64>,
    cs: u64,
    granularity: u64,
    file_len: u64,
    /// The table index and bytes of the data cluster read last.
    cached: Option<(u64, Vec<u8>)>,
}

impl<'a> Bits<'a> {
    fn open(file: &'a ImageFile, e: &Entry, cs: u64) -> Result<Self> {
        let file_len = file.len()?;
        check_table(e, file_len)?;
        let table =
            read_u64_table(file, e.raw.table_offset.get(), u64::from(e.raw.table_size.get()), "bitmap_table_offset")?;
        Ok(Bits { file, table, cs, granularity: granularity(e)?, file_len, cached: None })
    }

    /// Whether any bit covering guest bytes `[start, end)` is set. Whole table entries
    /// that are all zeros or all ones are answered without reading, so the work is at
    /// most one step per stored bit.
    fn any(&mut self, start: u64, end: u64) -> Result<bool> {
        let per_cluster = self.cs * 8;
        let mut bit = start / self.granularity;
        let last = end.saturating_sub(1) / self.granularity;
        while bit <= last {
            let idx = bit / per_cluster;
            let Some(&entry) = self.table.get(usize_from_u64(idx, "bitmap table index")?) else {
                return Ok(false);
            };
            let off = entry & TABLE_OFFSET_MASK;
            if off == 0 {
                if entry & 1 != 0 {
                    return Ok(true);
                }
                bit = (idx + 1) * per_cluster;
                continue;
            }
            if self.cached.as_ref().is_none_or(|(i, _)| *i != idx) {
                if !off.is_multiple_of(self.cs) || off.checked_add(self.cs).is_none_or(|e| e > self.file_len) {
                    return Err(Error::corrupt(format!("bitmap data cluster {off:#x} lies outside the file"))
                        .with_file(self.file.path()));
                }
                let mut data = vec![0u8; usize_from_u64(self.cs, "cluster size")?];
                self.file.read_exact_at(&mut data, off)?;
                self.cached = Some((idx, data));
            }
            let data = self.cached.as_ref().map(|(_, d)| d.as_slice()).unwrap_or_default();
            let k = usize_from_u64(bit - idx * per_cluster, "bitmap bit")?;
            if data.get(k / 8).is_some_and(|b| b & (1 << (k % 8)) != 0) {
                return Ok(true);
            }
            bit += 1;
        }
        Ok(false)
    }
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
