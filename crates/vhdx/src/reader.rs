//! Reading VHDX images: dynamic, fixed and differencing.

use crate::format::MIB;
use crate::layout::{BlockMap, Layout, read_headers};
use crate::log;
use diskcast_block::io::ImageFile;
use diskcast_block::range_end;
use diskcast_block::read_backing;
use diskcast_block::registry::OpenContext;
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, Result, ResultExt};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Most payload blocks one `extent_at` call looks at: long runs still come back in a few
/// calls, and no single call walks a whole 32-million-entry BAT.
const MAX_EXTENT_BLOCKS: u32 = 1 << 20;

/// An open VHDX image.
#[derive(Debug)]
pub struct VhdxReader {
    path: PathBuf,
    file: Source,
    layout: Layout,
    parent: Option<Box<dyn BlockRead>>,
    parent_name: Option<String>,
    log_replayed: bool,
}

/// The message for an image with a pending log, shared with `check`.
pub fn pending_log_message(path: &Path) -> String {
    format!(
        "the image has a pending log (it was not closed cleanly): reading it without replaying the log \
         would return stale data. Pass --replay-log to replay it (this writes to {}), or run \
         `qemu-img check -r all` on it",
        path.display()
    )
}

/// The image's file opened for writing, to replay its log into: only a source that is a
/// file on disk can be written; a partition or member is refused.
fn open_for_replay(src: &dyn ByteSource) -> Result<ImageFile> {
    match src.file_path() {
        Some(path) => ImageFile::open_rw(path),
        None => Err(Error::refused(
            "cannot replay the pending log: the image is not read from a file on disk, so it cannot be written; \
             extract it to a file first",
        )
        .with_field("log_guid")
        .with_file(src.name())),
    }
}

impl VhdxReader {
    /// Opens the image in `file`, replaying a pending log only if `ctx` allows it (and
    /// `file` is a file on disk that can be written).
    pub fn open(file: Source, ctx: &OpenContext<'_>) -> Result<VhdxReader> {
        let path = file.name();
        let mut active = read_headers(file.as_ref()).file(path)?;
        let mut log_replayed = false;
        if let Some(entries) = log::active_sequence(file.as_ref(), &active).file(path)? {
            if !ctx.replay_log() {
                return Err(Error::refused(pending_log_message(path)).with_field("log_guid").with_file(path));
            }
            let rw = open_for_replay(file.as_ref())?;
            log::replay(&rw, &active, &entries).file(path)?;
            drop(rw);
            active = read_headers(file.as_ref()).file(path)?;
            log_replayed = true;
        } else if !active.header.log_guid.is_nil() && ctx.replay_log() {
            // A log GUID with no valid entry: nothing to replay; mark the log empty.
            let rw = open_for_replay(file.as_ref())?;
            log::clear_log_guid(&rw, &active).file(path)?;
            drop(rw);
            active = read_headers(file.as_ref()).file(path)?;
        }
        let layout = Layout::load(file.as_ref(), active).file(path)?;
        let path = path.to_path_buf();
        if let Some((at, msg)) = layout.bat_problems(1).0.into_iter().next() {
            return Err(Error::corrupt(msg).with_field("bat_entry").with_offset(at).with_file(path));
        }
        let mut reader = VhdxReader { path, file, layout, parent: None, parent_name: None, log_replayed };
        if reader.layout.meta.has_parent {
            reader.open_parent(ctx)?;
        }
        Ok(reader)
    }

    fn open_parent(&mut self, ctx: &OpenContext<'_>) -> Result<()> {
        let l = &self.layout;
        let Some(rel) = l.locator("relative_path") else {
            let other = l.locator("absolute_win32_path").or(l.locator("volume_path")).unwrap_or("none");
            return Err(Error::unsupported(format!(
                "parent locator has no relative_path (absolute path {other:?} is a Windows path we do not follow)"
            ))
            .with_field("parent_locator")
            .with_file(&self.path));
        };
        let name = rel.replace('\\', "/");
        self.parent_name = Some(name.clone());
        let Some(parent) = ctx.open_backing(self.file.as_ref(), &name, Some("vhdx"))? else {
            return Ok(());
        };
        if let Some(linkage) = l.locator("parent_linkage") {
            // The locator holds GUIDs as text ("{...}"); the parent's header holds one in
            // binary. Compare them as GUIDs; text that is not a GUID matches nothing.
            let guid = |s: &str| uuid::Uuid::parse_str(s.trim().trim_matches(|c| c == '{' || c == '}')).ok();
            let want = [Some(linkage), l.locator("parent_linkage2")].into_iter().flatten().filter_map(guid);
            let theirs = parent.unique_id().map(uuid::Uuid::from_bytes);
            if let Some(theirs) = theirs
                && !want.clone().any(|w| w == theirs)
            {
                return Err(Error::corrupt(format!(
                    "parent {name:?} has data write GUID {theirs}, but this image expects {linkage}: \
                     the parent changed since this differencing image was made"
                ))
                .with_field("parent_linkage")
                .with_file(&self.path));
            }
        }
        self.parent = Some(parent);
        Ok(())
    }

    /// The layout (for `check` and tests).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Reads the bitmap bits of block `block` (one bit per logical sector).
    fn bitmap(&self, block: u64, sb_off: u64) -> Result<Vec<u8>> {
        let g = &self.layout.geo;
        let spb = g.block_size / g.logical_sector;
        let start = (block % g.chunk_ratio) * spb / 8;
        let mut bits = vec![0u8; usize_from_u64(spb / 8, "sector bitmap size")?];
        if start + spb / 8 > MIB {
            return Err(Error::corrupt("sector bitmap range runs past its 1 MiB block").with_offset(sb_off));
        }
        self.file.read_exact_at(&mut bits, sb_off + start)?;
        Ok(bits)
    }

    /// Runs inside a partially present block: (start in block, len, present in this file).
    fn partial_runs(&self, block: u64, sb_off: u64, from: u64, to: u64) -> Result<Vec<(u64, u64, bool)>> {
        let bits = self.bitmap(block, sb_off)?;
        let ss = self.layout.geo.logical_sector;
        let bit =
            |s: u64| usize::try_from(s / 8).ok().and_then(|i| bits.get(i)).is_some_and(|b| b & (1 << (s % 8)) != 0);
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        let mut pos = from;
        while pos < to {
            let s = pos / ss;
            let end = ((s + 1) * ss).min(to);
            let present = bit(s);
            match runs.last_mut() {
                Some(last) if last.2 == present => last.1 = end - last.0,
                _ => runs.push((pos, end - pos, present)),
            }
            pos = end;
        }
        Ok(runs)
    }

    fn read_parent(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let Some(parent) = &self.parent else {
            return Err(Error::unsupported("differencing image opened without its parent: cannot read it")
                .with_file(&self.path));
        };
        read_backing(Some(parent.as_ref()), buf, offset)
    }
}

impl BlockRead for VhdxReader {
    fn size(&self) -> u64 {
        self.layout.geo.virtual_size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let size = self.size();
        let len = u64_from_usize(buf.len());
        range_end(offset, len, size).map_err(|e| e.with_file(&self.path))?;
        let bs = self.layout.geo.block_size;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + u64_from_usize(done);
            let block = pos / bs;
            let in_block = pos % bs;
            let n = usize::try_from(bs - in_block).unwrap_or(usize::MAX).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match self.layout.block_map(block) {
                BlockMap::Data(off) => self.file.read_exact_at(chunk, off + in_block)?,
                BlockMap::Zero | BlockMap::Unallocated => chunk.fill(0),
                BlockMap::Backing => self.read_parent(chunk, pos)?,
                BlockMap::Partial(off, sb) => {
                    for (start, rlen, present) in
                        self.partial_runs(block, sb, in_block, in_block + u64_from_usize(n))?
                    {
                        let a = usize_from_u64(start - in_block, "offset in block")?;
                        let piece = &mut chunk[a..a + usize_from_u64(rlen, "run length")?];
                        if present {
                            self.file.read_exact_at(piece, off + start)?;
                        } else {
                            self.read_parent(piece, block * bs + start)?;
                        }
                    }
                }
            }
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        let size = self.size();
        if offset >= size {
            return Err(Error::out_of_bounds(format!("extent at {offset} past the {size}-byte disk")));
        }
        let end = offset.saturating_add(max_len.max(1)).min(size);
        let bs = self.layout.geo.block_size;
        let mut pos = offset;
        let mut kind: Option<Alloc> = None;
        let mut blocks = 0u32;
        while pos < end && blocks < MAX_EXTENT_BLOCKS {
            blocks += 1;
            let block = pos / bs;
            let in_block = pos % bs;
            let block_end = (block * bs + bs).min(end);
            let alloc = match self.layout.block_map(block) {
                BlockMap::Data(_) => Alloc::Data,
                BlockMap::Zero => Alloc::Zero,
                BlockMap::Unallocated => Alloc::Unallocated,
                BlockMap::Backing => Alloc::Backing,
                BlockMap::Partial(_, sb) => {
                    let runs = self.partial_runs(block, sb, in_block, block_end - block * bs)?;
                    let mut stop = None;
                    for (start, rlen, present) in runs {
                        let a = if present { Alloc::Data } else { Alloc::Backing };
                        match kind {
                            None => kind = Some(a),
                            Some(k) if k != a => {
                                stop = Some(block * bs + start);
                                break;
                            }
                            _ => {}
                        }
                        pos = block * bs + start + rlen;
                    }
                    if let Some(s) = stop {
                        return Ok(Extent { offset, len: s - offset, alloc: kind.unwrap_or(Alloc::Data) });
                    }
                    continue;
                }
            };
            match kind {
                None => kind = Some(alloc),
                Some(k) if k != alloc => break,
                _ => {}
            }
            pos = block_end;
        }
        Ok(Extent { offset, len: pos - offset, alloc: kind.unwrap_or(Alloc::Unallocated) })
    }

    fn backing(&self) -> Option<&dyn BlockRead> {
        self.parent.as_deref()
    }

    fn unique_id(&self) -> Option<[u8; 16]> {
        Some(*self.layout.active.header.data_write_guid.as_bytes())
    }

    fn info(&self) -> ImageInfo {
        let l = &self.layout;
        let h = &l.active.header;
        let mut s = serde_json::Map::new();
        s.insert("subformat".into(), json!(l.subformat()));
        s.insert("block-size".into(), json!(l.geo.block_size));
        s.insert("logical-sector-size".into(), json!(l.meta.logical_sector));
        s.insert("physical-sector-size".into(), json!(l.meta.physical_sector));
        s.insert("log-size".into(), json!(h.log_length));
        s.insert("has-parent".into(), json!(l.meta.has_parent));
        if let Some(p) = &self.parent_name {
            s.insert("parent".into(), json!(p));
        }
        if let Some(p) = l.locator("parent_linkage") {
            s.insert("parent-linkage".into(), json!(p));
        }
        s.insert("data-write-guid".into(), json!(h.data_write_guid.to_string()));
        s.insert("file-write-guid".into(), json!(h.file_write_guid.to_string()));
        if let Some(p) = l.meta.page83 {
            s.insert("page83-data".into(), json!(p.to_string()));
        }
        s.insert("header-sequence".into(), json!(h.sequence_number));
        s.insert("active-header".into(), json!(l.active.slot + 1));
        if self.log_replayed {
            s.insert("log-replayed".into(), json!(true));
        }
        ImageInfo {
            format: "vhdx".into(),
            virtual_size: l.geo.virtual_size,
            cluster_size: Some(l.geo.block_size),
            backing_file: self.parent_name.clone(),
            backing_format: self.parent_name.as_ref().map(|_| "vhdx".to_string()),
            specific: s,
            ..ImageInfo::default()
        }
    }
}
