//! Planning the parts of a split set: which resources go where, and each part as a
//! [`PlannedImage`] of new bytes (header, blob table, XML) and ranges of the original.
//!
//! The layout is wimlib's (`split.c`, `write.c`), so `wimlib-imagex join` gives back the
//! WIM wimlib would have written: resources in the order they had in the file; the first
//! part holds every image's metadata resource after its data resources and lists them
//! first in its table; each part lists only the resources it holds; the XML data is the
//! original's in every part; every part has the original's GUID (so joining gives back
//! the original, GUID included), its number and the count, and the spanned flag when
//! there is more than one part; no part is bootable (wimlib: "split WIMs can't be
//! bootable") and none keeps the integrity table.

use crate::read::{Unit, Wim};
use crate::spec::{ENTRY_SIZE, Entry, HDR_SPANNED, HEADER_SIZE, Header, MAX_PARTS, ResHdr};
use diskcast_block::{Error, Result};
use diskcast_layout::{IntoBytes, Le16, Le32, Le64, fit, u64_from_usize};
use diskcast_tree::{FileData, FileExtent, Piece, PlannedImage};
use std::sync::Arc;

/// One part: its file name and its content.
#[derive(Debug, Clone)]
pub struct Part {
    /// `install.swm`, `install2.swm`, ...
    pub name: String,
    /// Its bytes: new header, table and XML, and references into the original.
    pub data: FileData,
}

/// The units of one part, before its bytes are laid out.
#[derive(Debug, Default)]
struct Draft<'a> {
    /// Metadata resources (first part only).
    meta: Vec<&'a Unit>,
    /// Data resources.
    units: Vec<&'a Unit>,
    stored: u64,
    entries: usize,
}

impl<'a> Draft<'a> {
    /// The part's size with `extra` added.
    fn size_with(&self, extra: Option<&Unit>, xml_len: u64) -> u64 {
        let entries = self.entries + extra.map_or(0, Unit::entry_count);
        let stored = self.stored.saturating_add(extra.map_or(0, |u| u.stored));
        u64_from_usize(HEADER_SIZE)
            .saturating_add(stored)
            .saturating_add(u64_from_usize(entries).saturating_mul(u64_from_usize(ENTRY_SIZE)))
            .saturating_add(xml_len)
    }

    fn add(&mut self, u: &'a Unit) {
        self.count(u);
        self.units.push(u);
    }

    fn add_meta(&mut self, u: &'a Unit) {
        self.count(u);
        self.meta.push(u);
    }

    fn count(&mut self, u: &Unit) {
        self.stored = self.stored.saturating_add(u.stored);
        self.entries += u.entry_count();
    }
}

/// The parts of `wim` (read from `file`), each at most `part_limit` bytes, named after
/// `stem`.
pub(crate) fn plan(wim: &Wim, file: &FileData, stem: &str, part_limit: u64) -> Result<Vec<Part>> {
    let xml_len = u64_from_usize(wim.xml.len());
    let mut first = Draft::default();
    for u in &wim.metadata {
        first.add_meta(u);
    }
    if first.size_with(None, xml_len) > part_limit {
        return Err(Error::unsupported(format!(
            "the first part must hold every image's metadata: {} bytes with its header, blob table and XML, \
             more than the part limit of {part_limit} bytes",
            first.size_with(None, xml_len)
        )));
    }
    let mut drafts = vec![first];
    for u in &wim.data {
        let cur = drafts.last_mut().ok_or_else(|| Error::invalid("no part to fill"))?;
        if cur.size_with(Some(u), xml_len) <= part_limit {
            cur.add(u);
            continue;
        }
        let mut next = Draft::default();
        if next.size_with(Some(u), xml_len) > part_limit {
            return Err(too_big(u, next.size_with(Some(u), xml_len), part_limit));
        }
        next.add(u);
        drafts.push(next);
        if drafts.len() > MAX_PARTS {
            return Err(Error::unsupported(format!(
                "more than {MAX_PARTS} parts (MAX_PARTS, the header's 16-bit part count) of at most {part_limit} bytes"
            )));
        }
    }
    let total = fit::<u16, _>(u64_from_usize(drafts.len()), "total_parts")?;
    drafts
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let number = fit::<u16, _>(u64_from_usize(i + 1), "part_number")?;
            let name = if number == 1 { format!("{stem}.swm") } else { format!("{stem}{number}.swm") };
            let size = d.size_with(None, xml_len);
            let image = lay_out(wim, file, d, number, total, size)?;
            let data = FileData::blocks(
                size,
                Arc::new(image),
                vec![FileExtent { file_offset: 0, source_offset: 0, len: size }],
            )?;
            Ok(Part { name, data })
        })
        .collect()
}

fn too_big(u: &Unit, need: u64, limit: u64) -> Error {
    let (solid, cut) =
        if u.solid.is_some() { ("solid ", "; a solid resource cannot be cut across parts") } else { ("", "") };
    Error::unsupported(format!(
        "the {solid}resource of blob table entry {} ({} bytes at offset {}{cut}) does not fit in a part of at \
         most {limit} bytes with the part's header, blob table and XML ({} bytes)",
        u.index,
        u.stored,
        u.offset,
        need.saturating_sub(u.stored)
    ))
}

/// The bytes of part `number` of `total`: header, data resources (then, in part 1, the
/// metadata resources), blob table, XML.
fn lay_out(wim: &Wim, file: &FileData, d: &Draft<'_>, number: u16, total: u16, size: u64) -> Result<PlannedImage> {
    let mut image = PlannedImage::new(size, "swm");
    let mut at = u64_from_usize(HEADER_SIZE);
    // Where the current run of solid resources in this part's table is in its stream
    // of uncompressed data: blobs count their offsets from the run's start.
    let mut run_end: Option<u64> = None;
    let mut place = |image: &mut PlannedImage, u: &Unit, table: &mut Vec<Entry>| -> Result<()> {
        image.place(at, u.stored, Piece::File { data: file.clone(), offset: u.offset })?;
        let base = match u.solid {
            Some(size) => {
                let base = run_end.unwrap_or(0);
                run_end = Some(base.checked_add(size).ok_or_else(|| Error::corrupt("solid resources overflow"))?);
                base
            }
            None => {
                run_end = None;
                0
            }
        };
        let mut e = u.entry;
        e.res.offset = Le64::new(at);
        e.part_number = Le16::new(number);
        table.push(e);
        for b in &u.blobs {
            let mut e = *b;
            let offset =
                base.checked_add(e.res.offset.get()).ok_or_else(|| Error::corrupt("solid blob offset overflows"))?;
            e.res.offset = Le64::new(offset);
            e.part_number = Le16::new(number);
            table.push(e);
        }
        at += u.stored;
        Ok(())
    };
    // The table lists the metadata first and the data resources after (wimlib's
    // order); the bytes hold the data resources first.
    let mut data_entries = Vec::with_capacity(d.entries);
    for u in &d.units {
        place(&mut image, u, &mut data_entries)?;
    }
    let mut table = Vec::with_capacity(d.entries);
    for u in &d.meta {
        place(&mut image, u, &mut table)?;
    }
    table.append(&mut data_entries);
    let table_bytes: Vec<u8> = table.iter().flat_map(|e| e.as_bytes().iter().copied()).collect();
    let table_at = at;
    let table_len = u64_from_usize(table_bytes.len());
    image.place_bytes(table_at, table_bytes)?;
    let xml_at = table_at + table_len;
    let xml_len = u64_from_usize(wim.xml.len());
    image.place_bytes(xml_at, wim.xml.clone())?;
    if xml_at + xml_len != size {
        return Err(Error::invalid(format!("part {number} laid out as {} bytes, planned as {size}", xml_at + xml_len)));
    }

    let src = &wim.header;
    let mut h: Header = *src;
    // As wimlib: a set of one part is a plain WIM, not marked spanned.
    let spanned = if total > 1 { HDR_SPANNED } else { 0 };
    h.flags = Le32::new(src.flags.get() | spanned);
    h.part_number = Le16::new(number);
    h.total_parts = Le16::new(total);
    h.blob_table = resource(src.blob_table.flags, table_at, table_len, table_len)?;
    h.xml = resource(src.xml.flags, xml_at, xml_len, src.xml.uncompressed_size.get())?;
    h.boot_metadata = ResHdr::default();
    h.boot_index = Le32::new(0);
    h.integrity = ResHdr::default();
    image.place_bytes(0, h.as_bytes().to_vec())?;
    image.seal()
}

fn resource(flags: u8, offset: u64, size: u64, uncompressed: u64) -> Result<ResHdr> {
    let mut r =
        ResHdr { flags, offset: Le64::new(offset), uncompressed_size: Le64::new(uncompressed), ..ResHdr::default() };
    r.set_size(size).ok_or_else(|| Error::unsupported(format!("a resource of {size} bytes does not fit 56 bits")))?;
    Ok(r)
}
