//! Reading what a split needs from a WIM: its header, blob table and XML data, checked
//! against the file, and its resources grouped into the units a part holds whole.

use crate::spec::{
    ENTRY_SIZE, Entry, HDR_METADATA_ONLY, HDR_RESOURCE_ONLY, HDR_SPANNED, HDR_WRITE_IN_PROGRESS, HEADER_SIZE, Header,
    MAGIC, MAX_BLOB_TABLE_BYTES, MAX_XML_BYTES, PIPABLE_MAGIC, RES_COMPRESSED, RES_FREE, RES_KNOWN, RES_METADATA,
    RES_SOLID, RES_SPANNED, ResHdr, SOLID_RESOURCE_MAGIC,
};
use diskcast_block::{Error, Result};
use diskcast_layout::{Le64, u64_from_usize, usize_from, usize_from_u64};
use diskcast_tree::FileData;
use std::ops::Range;
use std::sync::Arc;

/// A WIM as a split sees it.
#[derive(Debug)]
pub(crate) struct Wim {
    /// The header as read.
    pub header: Header,
    /// The XML data, copied into every part as it is.
    pub xml: Arc<[u8]>,
    /// The images' metadata resources, in image order (the first part holds them all).
    pub metadata: Vec<Unit>,
    /// Every other resource, in file order.
    pub data: Vec<Unit>,
}

/// What one part must hold whole: one resource and its blob table entries. A
/// stand-alone resource has one entry; a solid resource has its own entry and one per
/// blob inside it, whose offsets count from the start of this resource's uncompressed
/// data (a reader takes a run of consecutive solid entries as one stream of
/// resources, so the part's layout adds the sizes of the run's earlier resources).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// The resource's entry.
    pub entry: Entry,
    /// For a solid resource, the entries of the blobs inside it (no allocation for
    /// the others: a table of millions of entries stays a few times its size).
    pub blobs: Vec<Entry>,
    /// Where the resource is in the file.
    pub offset: u64,
    /// Its stored size.
    pub stored: u64,
    /// For a solid resource, its uncompressed size (from its own header).
    pub solid: Option<u64>,
    /// Its entry's index in the original table, for messages.
    pub index: usize,
}

impl Unit {
    /// How many blob table entries it has.
    pub fn entry_count(&self) -> usize {
        1 + self.blobs.len()
    }
}

/// Reads `len` bytes at `offset` of `file`; `what` names them if `len` is too large.
fn read_vec(file: &FileData, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; usize_from_u64(len, what)?];
    file.read_at(&mut buf, offset)?;
    Ok(buf)
}

/// Checks that the resource `r` (called `what`) lies in the file after the header and
/// returns its `(offset, size)`.
fn resource_range(r: &ResHdr, file_size: u64, what: impl Fn() -> String) -> Result<(u64, u64)> {
    let (offset, size) = (r.offset.get(), r.size());
    let end = offset.checked_add(size).filter(|&e| e <= file_size);
    if size > 0 && (offset < u64_from_usize(HEADER_SIZE) || end.is_none()) {
        return Err(Error::corrupt(format!(
            "{}: {size} bytes at offset {offset} is outside the file ({file_size} bytes, header {HEADER_SIZE})",
            what()
        ))
        .with_offset(offset));
    }
    Ok((offset, size))
}

/// Reads and checks the WIM in `file`. Errors name `name`.
pub(crate) fn read(file: &FileData, name: &str) -> Result<Wim> {
    read_inner(file).map_err(|e| e.with_file(name))
}

fn read_inner(file: &FileData) -> Result<Wim> {
    let file_size = file.size;
    if file_size < u64_from_usize(HEADER_SIZE) {
        return Err(Error::invalid(format!(
            "truncated WIM header: the file is {file_size} bytes, the header needs {HEADER_SIZE}"
        )));
    }
    let head = read_vec(file, 0, u64_from_usize(HEADER_SIZE), "WIM header")?;
    let header: Header = diskcast_layout::read_copy(&head, 0, "WIM header")?;
    if header.magic == PIPABLE_MAGIC {
        return Err(Error::unsupported(
            "a pipable WIM (wimlib's WLPWM layout) cannot be split: export it as a normal WIM first",
        ));
    }
    if header.magic != MAGIC {
        return Err(Error::invalid("not a WIM file (no MSWIM magic)"));
    }
    if usize_from(header.header_size.get()) != HEADER_SIZE {
        return Err(Error::invalid(format!("WIM header size is {}, not {HEADER_SIZE}", header.header_size.get()))
            .with_field("header_size"));
    }
    let flags = header.flags.get();
    if flags & HDR_SPANNED != 0 || header.total_parts.get() != 1 || header.part_number.get() != 1 {
        return Err(Error::unsupported(format!(
            "already part {} of a split WIM of {} parts: join the parts first",
            header.part_number.get(),
            header.total_parts.get()
        )));
    }
    if flags & (HDR_RESOURCE_ONLY | HDR_METADATA_ONLY) != 0 {
        return Err(Error::unsupported(format!("a resource-only or metadata-only WIM (flags {flags:#x})")));
    }
    if flags & HDR_WRITE_IN_PROGRESS != 0 {
        return Err(Error::refused(
            "the WIM is marked as being written (WRITE_IN_PROGRESS): a program may be changing it, or one \
             crashed while writing it",
        ));
    }
    let image_count = header.image_count.get();
    if image_count == 0 {
        return Err(Error::invalid("the WIM holds no image, so there is nothing to split"));
    }

    let (table_off, table_len) = (header.blob_table.offset.get(), header.blob_table.size());
    if table_len > MAX_BLOB_TABLE_BYTES {
        return Err(Error::unsupported(format!(
            "the blob table is {table_len} bytes, more than the {MAX_BLOB_TABLE_BYTES}-byte cap (MAX_BLOB_TABLE_BYTES)"
        )));
    }
    resource_range(&header.blob_table, file_size, || "blob table".into())?;
    if header.blob_table.flags & RES_COMPRESSED != 0 {
        return Err(Error::unsupported("a compressed blob table"));
    }
    if table_len % u64_from_usize(ENTRY_SIZE) != 0 {
        return Err(Error::corrupt(format!(
            "the blob table is {table_len} bytes, not a whole number of {ENTRY_SIZE}-byte entries"
        )));
    }
    let (xml_off, xml_len) = (header.xml.offset.get(), header.xml.size());
    if xml_len > MAX_XML_BYTES {
        return Err(Error::unsupported(format!(
            "the XML data is {xml_len} bytes, more than the {MAX_XML_BYTES}-byte cap (MAX_XML_BYTES)"
        )));
    }
    resource_range(&header.xml, file_size, || "XML data".into())?;
    if header.xml.flags & RES_COMPRESSED != 0 {
        return Err(Error::unsupported("compressed XML data"));
    }

    let table = read_vec(file, table_off, table_len, "blob table")?;
    let mut entries: Vec<Entry> = Vec::with_capacity(table.len() / ENTRY_SIZE);
    for (i, b) in table.chunks_exact(ENTRY_SIZE).enumerate() {
        let e: Entry = diskcast_layout::read_copy(b, 0, "blob table entry")?;
        check_entry(i, &e)?;
        entries.push(e);
    }
    let xml: Arc<[u8]> = read_vec(file, xml_off, xml_len, "XML data")?.into();

    let (metadata, data) = units(file, &entries)?;
    if metadata.len() != usize_from(image_count) {
        return Err(Error::corrupt(format!(
            "the header counts {image_count} images but the blob table has {} metadata resources",
            metadata.len()
        )));
    }
    check_overlaps(&metadata, &data, (table_off, table_len), (xml_off, xml_len))?;
    Ok(Wim { header, xml, metadata, data })
}

/// Refuses entries a split cannot carry over as they are.
fn check_entry(i: usize, e: &Entry) -> Result<()> {
    let flags = e.res.flags;
    let at = || format!("blob table entry {i}");
    if flags & !RES_KNOWN != 0 {
        return Err(Error::unsupported(format!("{}: unknown resource flags {flags:#x}", at())));
    }
    if flags & (RES_FREE | RES_SPANNED) != 0 {
        return Err(Error::unsupported(format!("{}: a free or spanned resource (flags {flags:#x})", at())));
    }
    if flags & RES_METADATA != 0 && flags & RES_SOLID != 0 {
        return Err(Error::unsupported(format!("{}: a metadata resource inside a solid resource", at())));
    }
    if e.part_number.get() != 1 {
        return Err(Error::corrupt(format!("{}: in part {} of a WIM that is not split", at(), e.part_number.get())));
    }
    Ok(())
}

/// The uncompressed size a solid resource records in its own header (before its chunk
/// table: `le64` size, `le32` chunk size, `le32` compression format).
fn solid_size(file: &FileData, index: usize, offset: u64, stored: u64) -> Result<u64> {
    if stored < 16 {
        return Err(Error::corrupt(format!(
            "the solid resource of blob table entry {index} is {stored} bytes, shorter than its 16-byte header"
        )));
    }
    let head = read_vec(file, offset, 16, "solid resource header")?;
    Ok(diskcast_layout::le64(&head, 0, "solid resource header")?)
}

/// Groups the table into metadata units (table order, which is image order) and data
/// units (file order).
fn units(file: &FileData, entries: &[Entry]) -> Result<(Vec<Unit>, Vec<Unit>)> {
    let file_size = file.size;
    let (mut metadata, mut data) = (Vec::new(), Vec::new());
    let mut i = 0;
    while let Some(e) = entries.get(i) {
        if e.res.flags & RES_SOLID == 0 {
            let (offset, stored) = resource_range(&e.res, file_size, || format!("resource of blob table entry {i}"))?;
            let unit = Unit { entry: *e, blobs: Vec::new(), offset, stored, solid: None, index: i };
            if e.res.flags & RES_METADATA != 0 {
                metadata.push(unit)
            } else {
                data.push(unit)
            }
            i += 1;
            continue;
        }
        let end = entries[i..].iter().position(|e| e.res.flags & RES_SOLID == 0).map_or(entries.len(), |n| i + n);
        data.extend(solid_run(file, entries, i..end)?);
        i = end;
    }
    data.sort_by_key(|u| u.offset);
    Ok((metadata, data))
}

/// One unit per solid resource of the run `run` of consecutive solid entries, each
/// with the blobs inside it. As in wimlib's reader, the run's resources form one stream
/// in entry order, and a blob belongs to the resource its offset falls in.
fn solid_run(file: &FileData, entries: &[Entry], run: Range<usize>) -> Result<Vec<Unit>> {
    let mut units: Vec<Unit> = Vec::new();
    // Where each resource starts in the run's stream.
    let mut starts: Vec<u64> = Vec::new();
    let mut total = 0u64;
    for (j, e) in entries.iter().enumerate().take(run.end).skip(run.start) {
        if e.res.uncompressed_size.get() == SOLID_RESOURCE_MAGIC {
            let what = || format!("solid resource of blob table entry {j}");
            let (offset, stored) = resource_range(&e.res, file.size, what)?;
            let size = solid_size(file, j, offset, stored)?;
            starts.push(total);
            total = total.checked_add(size).ok_or_else(|| Error::corrupt(format!("{}: size overflows", what())))?;
            units.push(Unit { entry: *e, blobs: Vec::new(), offset, stored, solid: Some(size), index: j });
        }
    }
    if units.is_empty() {
        return Err(Error::corrupt(format!(
            "blob table entries {}..{} are blobs of no solid resource",
            run.start, run.end
        )));
    }
    for (j, e) in entries.iter().enumerate().take(run.end).skip(run.start) {
        if e.res.uncompressed_size.get() == SOLID_RESOURCE_MAGIC {
            continue;
        }
        let (at, len) = (e.res.offset.get(), e.res.size());
        let k = starts.partition_point(|&s| s <= at).saturating_sub(1);
        let unit = units.get_mut(k).filter(|u| {
            let start = starts.get(k).copied().unwrap_or(0);
            at.checked_add(len).is_some_and(|end| end <= start.saturating_add(u.solid.unwrap_or(0)))
        });
        let Some(unit) = unit else {
            return Err(Error::corrupt(format!(
                "blob table entry {j}: {len} bytes at {at} of its solid resources lie in none of them"
            )));
        };
        let mut e = *e;
        e.res.offset = Le64::new(at - starts.get(k).copied().unwrap_or(0));
        unit.blobs.push(e);
    }
    Ok(units)
}

/// What a range of the file holds, for [`check_overlaps`]'s message.
#[derive(Debug, Clone, Copy)]
enum Holder {
    Entry(usize),
    Table,
    Xml,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Entry(i) => write!(f, "the resource of blob table entry {i}"),
            Holder::Table => f.write_str("the blob table"),
            Holder::Xml => f.write_str("the XML data"),
        }
    }
}

/// Refuses resources that share bytes with each other or with the blob table or XML:
/// a part would then hold the same bytes twice, under two meanings.
fn check_overlaps(metadata: &[Unit], data: &[Unit], table: (u64, u64), xml: (u64, u64)) -> Result<()> {
    let mut ranges: Vec<(u64, u64, Holder)> =
        metadata.iter().chain(data).map(|u| (u.offset, u.stored, Holder::Entry(u.index))).collect();
    ranges.push((table.0, table.1, Holder::Table));
    ranges.push((xml.0, xml.1, Holder::Xml));
    ranges.retain(|r| r.1 > 0);
    ranges.sort_by_key(|r| r.0);
    for w in ranges.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        // Every range was checked to end inside the file: no overflow.
        if a.0 + a.1 > b.0 {
            return Err(Error::corrupt(format!(
                "{} ({} bytes at offset {}) overlaps {} ({} bytes at offset {})",
                a.2, a.1, a.0, b.2, b.1, b.0
            ))
            .with_offset(b.0));
        }
    }
    Ok(())
}
