//! Building a [`Tree`] from one of a disc's directory hierarchies: Rock Ridge names and
//! attributes on the primary tree, Joliet's UCS-2 names, or plain ISO 9660 names.

use crate::dir::{DirRecord, FLAG_MULTI_EXTENT, parse_record};
use crate::susp::{RockRidge, entries_of, rock_ridge, sp_skip};
use crate::volume::{Volumes, has_iso_magic, read_volumes};
use crate::zisofs::{ExpansionBudget, Zisofs};
use crate::{Regions, SECTOR, read_bytes, udf};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{
    Content, FileData, FileExtent, Kind, Meta, Node, NodeId, ReadOptions, Timestamp, Tree, check_name, display_name,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Largest directory read (a directory of 100 000 long-named entries is ~25 MiB).
const MAX_DIR_BYTES: u32 = 256 << 20;
/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 1024;

/// The hierarchies one disc may carry, in the order they are preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TreeKind {
    /// UDF (ECMA-167), as on DVDs and Windows installation discs.
    Udf,
    /// The primary tree with Rock Ridge names, modes, owners, links and times.
    RockRidge,
    /// The Joliet tree: UCS-2 names up to 64 characters.
    Joliet,
    /// The primary tree with its plain ISO 9660 names.
    Iso9660,
}

impl TreeKind {
    /// The name `--tree` takes.
    pub fn name(self) -> &'static str {
        match self {
            TreeKind::Udf => "udf",
            TreeKind::RockRidge => "rockridge",
            TreeKind::Joliet => "joliet",
            TreeKind::Iso9660 => "iso9660",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "udf" => TreeKind::Udf,
            "rockridge" | "rr" | "rock-ridge" => TreeKind::RockRidge,
            "joliet" => TreeKind::Joliet,
            "iso9660" | "iso" => TreeKind::Iso9660,
            other => {
                return Err(Error::argument(format!("--tree {other:?}: expected udf, rockridge, joliet or iso9660")));
            }
        })
    }
}

/// The trees `disk` carries, best first.
pub fn available_trees(disk: &dyn BlockRead) -> Result<Vec<TreeKind>> {
    let mut out = Vec::new();
    if udf::probe(disk)? {
        out.push(TreeKind::Udf);
    }
    if has_iso_magic(disk)? {
        let v = read_volumes(disk)?;
        if let Some(root) = &v.root
            && rock_ridge_skip(disk, root)?.is_some()
        {
            out.push(TreeKind::RockRidge);
        }
        if v.joliet.is_some() {
            out.push(TreeKind::Joliet);
        }
        out.push(TreeKind::Iso9660);
    }
    Ok(out)
}

/// Reads the tree `opts.tree` names, or the best one.
pub fn read_tree(disk: Arc<dyn BlockRead>, opts: &ReadOptions) -> Result<Tree> {
    let have = available_trees(disk.as_ref())?;
    let kind = match &opts.tree {
        None => *have.first().ok_or_else(|| Error::invalid("no ISO 9660 or UDF volume"))?,
        Some(s) => {
            let k = TreeKind::parse(s)?;
            if !have.contains(&k) {
                let names: Vec<_> = have.iter().map(|k| k.name()).collect();
                return Err(Error::argument(format!(
                    "the disc has no {} tree (it has: {})",
                    k.name(),
                    names.join(", ")
                )));
            }
            k
        }
    };
    if kind == TreeKind::Udf {
        return udf::read_tree(disk);
    }
    let vols = read_volumes(disk.as_ref())?;
    let root = match kind {
        TreeKind::Joliet => vols.joliet.as_ref().map(|(r, _)| r.clone()),
        _ => vols.root.clone(),
    }
    .ok_or_else(|| Error::invalid("no root directory"))?;
    let skip = if kind == TreeKind::RockRidge { rock_ridge_skip(disk.as_ref(), &root)? } else { None };
    Walker::new(disk, kind, skip, &opts.label).walk(root, &vols)
}

/// The best ISO 9660 tree (Rock Ridge, Joliet, plain) of a disc, UDF left aside.
pub(crate) fn read_iso_tree(disk: &Arc<dyn BlockRead>) -> Result<Tree> {
    let vols = read_volumes(disk.as_ref())?;
    let root = vols.root.clone().ok_or_else(|| Error::invalid("no root directory"))?;
    let skip = rock_ridge_skip(disk.as_ref(), &root)?;
    let (kind, root) = match (&skip, &vols.joliet) {
        (None, Some((j, _))) => (TreeKind::Joliet, j.clone()),
        (None, None) => (TreeKind::Iso9660, root),
        (Some(_), _) => (TreeKind::RockRidge, root),
    };
    Walker::new(disk.clone(), kind, skip, "").walk(root, &vols)
}

/// SP's skip count when the primary tree uses Rock Ridge (its root `.` starts with SP).
fn rock_ridge_skip(disk: &dyn BlockRead, root: &DirRecord) -> Result<Option<usize>> {
    let first = read_bytes(disk, root.data_offset(), SECTOR.min(u64::from(root.len.max(34))), "root directory")?;
    let Some(dot) = parse_record(&first, root.data_offset())? else { return Ok(None) };
    Ok(sp_skip(&dot.system_use))
}

struct Walker {
    disk: Arc<dyn BlockRead>,
    /// What errors of file content read later (zisofs blocks) name.
    label: Arc<str>,
    kind: TreeKind,
    /// Rock Ridge in use, with SP's skip count.
    rr: Option<usize>,
    tree: Tree,
    visited: HashSet<u32>,
    /// Rock Ridge files with more than one link, by (first sector, size).
    links: HashMap<(u64, u64), NodeId>,
    /// Directories that held relocated (RE) entries: `rr_moved` and the like.
    /// (parent, directory, its name in the parent).
    relocation_dirs: Vec<(NodeId, NodeId, Vec<u8>)>,
    /// zisofs files so far: the disc ranges they are stored in, and their sizes added up.
    zisofs: ExpansionBudget,
    /// Directory extents and continuation areas read so far.
    regions: Regions,
}

impl Walker {
    fn new(disk: Arc<dyn BlockRead>, kind: TreeKind, rr: Option<usize>, label: &str) -> Self {
        Walker {
            disk,
            label: label.into(),
            kind,
            rr,
            tree: Tree::new(Meta::new(0o555, Timestamp::default())),
            visited: HashSet::new(),
            links: HashMap::new(),
            relocation_dirs: Vec::new(),
            zisofs: ExpansionBudget::default(),
            regions: Regions::default(),
        }
    }

    fn walk(mut self, root: DirRecord, _vols: &Volumes) -> Result<Tree> {
        let mut stack = vec![(root, NodeId::ROOT, 0usize, Vec::new())];
        let mut first = true;
        while let Some((rec, id, depth, name)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(Error::corrupt("directories nest too deep").with_offset(rec.at));
            }
            if !self.visited.insert(rec.lba) {
                return Err(Error::corrupt(format!(
                    "directory cycle: the directory at sector {} is reached twice",
                    rec.lba
                ))
                .with_offset(rec.at));
            }
            let records = self.read_dir(&rec)?;
            if std::mem::take(&mut first) {
                // The root's own attributes are on its `.` record.
                let rr = self.rock_ridge(&records[0])?;
                self.tree.node_mut(NodeId::ROOT).meta = self.meta(&records[0], &rr, true);
            }
            let mut relocated_here = false;
            let mut group: Vec<DirRecord> = Vec::new();
            for r in records.into_iter().skip(1) {
                if r.is_dot() {
                    continue;
                }
                let more = r.flags & FLAG_MULTI_EXTENT != 0 && !r.is_dir();
                group.push(r);
                if more {
                    continue;
                }
                let parts = std::mem::take(&mut group);
                if let Some(child) = self.entry(id, parts, &mut relocated_here)? {
                    stack.push((child.0, child.1, depth + 1, child.2));
                }
            }
            if let Some(r) = group.first() {
                return Err(Error::corrupt("multi-extent file ends without its last extent").with_offset(r.at));
            }
            if relocated_here && id != NodeId::ROOT {
                let parent = self.tree.dir(id)?.parent();
                self.relocation_dirs.push((parent, id, name));
            }
        }
        self.zisofs.check()?;
        self.hide_relocation_dirs();
        Ok(self.tree)
    }

    /// A relocation directory (`rr_moved`) left empty once its RE entries are hidden is
    /// an artefact of the ISO 9660 depth limit, not part of the tree: drop it, as Linux
    /// and libarchive do.
    fn hide_relocation_dirs(&mut self) {
        for (parent, id, name) in std::mem::take(&mut self.relocation_dirs) {
            let empty = self.tree.dir(id).map(|d| d.is_empty()).unwrap_or(false);
            if empty && self.tree.lookup(parent, &name) == Some(id) {
                self.tree.unlink(parent, &name);
            }
        }
    }

    /// Every record of a directory, `.` first.
    fn read_dir(&mut self, rec: &DirRecord) -> Result<Vec<DirRecord>> {
        if rec.len > MAX_DIR_BYTES {
            return Err(
                Error::out_of_bounds(format!("directory of {} bytes is too large", rec.len)).with_offset(rec.at)
            );
        }
        self.regions
            .claim(rec.data_offset(), u64::from(rec.len), "directory", rec.at)
            .map_err(|e| e.with_field("directory_record"))?;
        let data = read_bytes(self.disk.as_ref(), rec.data_offset(), u64::from(rec.len), "directory")?;
        let base = rec.data_offset();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let sector = diskcast_layout::usize_from_u64(SECTOR, "sector size")?;
            let sector_end = ((pos / sector) + 1) * sector;
            let end = sector_end.min(data.len());
            match parse_record(&data[pos..end], base + diskcast_layout::u64_from_usize(pos))? {
                None => pos = sector_end,
                Some(r) => {
                    pos += usize::from(data[pos]);
                    out.push(r);
                }
            }
        }
        if out.first().is_none_or(|r| r.ident != [0]) {
            return Err(Error::corrupt("directory does not start with its '.' record")
                .with_field("directory_record")
                .with_offset(base));
        }
        Ok(out)
    }

    fn rock_ridge(&mut self, r: &DirRecord) -> Result<RockRidge> {
        match self.rr {
            None => Ok(RockRidge::default()),
            Some(skip) => {
                let entries = entries_of(self.disk.as_ref(), &r.system_use, skip, r.at, &mut self.regions)?;
                rock_ridge(&entries, r.at)
            }
        }
    }

    fn meta(&self, r: &DirRecord, rr: &RockRidge, dir: bool) -> Meta {
        let mut m = Meta::new(if dir { 0o555 } else { 0o444 }, rr.mtime.unwrap_or(r.time));
        if let Some(px) = rr.px {
            m.mode = px.mode & 0o7777;
            m.uid = px.uid;
            m.gid = px.gid;
        }
        m.atime = rr.atime;
        m.ctime = rr.ctime;
        m
    }

    fn name(&self, r: &DirRecord, rr: &RockRidge) -> Vec<u8> {
        if let Some(n) = &rr.name {
            return n.clone();
        }
        match self.kind {
            TreeKind::Joliet => strip_version(&ucs2_name(&r.ident)).to_vec(),
            _ => {
                let n = strip_version(&r.ident);
                if self.rr.is_none() && !r.is_dir() { n.strip_suffix(b".").unwrap_or(n).to_vec() } else { n.to_vec() }
            }
        }
    }

    /// Adds one entry (a group of records for a multi-extent file) to directory `parent`;
    /// returns the directory to descend into, if it is one.
    fn entry(
        &mut self,
        parent: NodeId,
        parts: Vec<DirRecord>,
        relocated_here: &mut bool,
    ) -> Result<Option<(DirRecord, NodeId, Vec<u8>)>> {
        let r = &parts[0];
        let rr = self.rock_ridge(r)?;
        if rr.relocated {
            *relocated_here = true;
            return Ok(None);
        }
        let name = self.name(r, &rr);
        check_name(&name).map_err(|e| e.with_offset(r.at))?;
        if let Some(lba) = rr.child_link {
            // A directory moved away for depth: read its `.` record where it lives now.
            let at = u64::from(lba) * SECTOR;
            let first = read_bytes(self.disk.as_ref(), at, SECTOR, "relocated directory (CL)")?;
            let dot = parse_record(&first, at)?
                .filter(|d| d.ident == [0] && d.is_dir())
                .ok_or_else(|| Error::corrupt("CL entry points at no directory").with_field("CL").with_offset(r.at))?;
            let dot_rr = self.rock_ridge(&dot)?;
            let meta = self.meta(&dot, if dot_rr.px.is_some() { &dot_rr } else { &rr }, true);
            let id = self.tree.insert(parent, &name, Node::new(meta, Kind::empty_dir()))?;
            return Ok(Some((dot, id, name)));
        }
        let type_bits = rr.px.map(|p| p.mode & 0o170000).unwrap_or(0);
        let meta = self.meta(r, &rr, r.is_dir());
        let kind = if r.is_dir() {
            let id = self.tree.insert(parent, &name, Node::new(meta, Kind::empty_dir()))?;
            return Ok(Some((r.clone(), id, name)));
        } else if type_bits == 0o120000 || (type_bits == 0 && rr.symlink.is_some()) {
            Kind::Symlink(rr.symlink.clone().unwrap_or_default())
        } else if matches!(type_bits, 0o020000 | 0o060000) {
            let (hi, lo) = rr.pn.unwrap_or((0, 0));
            let dev = (u64::from(hi) << 32) | u64::from(lo);
            let major = diskcast_layout::low_u32(((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff));
            let minor = diskcast_layout::low_u32((dev & 0xff) | ((dev >> 12) & !0xff));
            if type_bits == 0o020000 { Kind::CharDev { major, minor } } else { Kind::BlockDev { major, minor } }
        } else if type_bits == 0o010000 {
            Kind::Fifo
        } else if type_bits == 0o140000 {
            Kind::Socket
        } else {
            let key = (parts[0].data_offset(), parts.iter().map(|p| u64::from(p.len)).sum::<u64>());
            let linked = rr.px.is_some_and(|p| p.nlink > 1) && key.1 > 0;
            if linked && let Some(&id) = self.links.get(&key) {
                self.tree.link(parent, &name, id)?;
                return Ok(None);
            }
            let kind = Kind::File(self.file_data(&parts, &rr)?);
            let id = self.tree.insert(parent, &name, Node::new(meta, kind))?;
            if linked {
                self.links.insert(key, id);
            }
            return Ok(None);
        };
        self.tree.insert(parent, &name, Node::new(meta, kind))?;
        Ok(None)
    }

    fn file_data(&mut self, parts: &[DirRecord], rr: &RockRidge) -> Result<FileData> {
        let mut extents = Vec::with_capacity(parts.len());
        let mut size = 0u64;
        for p in parts {
            if p.len > 0 {
                extents.push(FileExtent { file_offset: size, source_offset: p.data_offset(), len: u64::from(p.len) });
            }
            size += u64::from(p.len);
        }
        if let Some((log2, real)) = rr.zf {
            let [only] = extents.as_slice() else {
                return Err(Error::unsupported("zisofs file with several extents").with_offset(parts[0].at));
            };
            let z =
                Zisofs::new(self.disk.clone(), self.label.clone(), only.source_offset, only.len, u64::from(real), log2)
                    .map_err(|e| e.with_offset(parts[0].at))?;
            self.zisofs.add(only.source_offset, only.len, u64::from(real));
            return Ok(FileData { size: u64::from(real), content: Content::Reader(Arc::new(z)) });
        }
        if extents.is_empty() {
            return Ok(FileData { size: 0, content: Content::Zero });
        }
        FileData::blocks(size, self.disk.clone(), extents).map_err(|e| e.with_offset(parts[0].at))
    }
}

/// `dir/name` inside `tree` for messages, found by walking up from `dir` (only on the
/// error path: it scans each parent's entries).
pub(crate) fn path_in(tree: &Tree, dir: NodeId, name: &[u8]) -> String {
    let mut parts = vec![name.to_vec()];
    let mut id = dir;
    while id != NodeId::ROOT && parts.len() <= MAX_DEPTH + 1 {
        let Ok(parent) = tree.dir(id).map(|d| d.parent()) else { break };
        let Some(n) = tree.dir(parent).ok().and_then(|d| d.entries().find(|(_, c)| *c == id).map(|(n, _)| n.to_vec()))
        else {
            break;
        };
        parts.push(n);
        id = parent;
    }
    parts.reverse();
    display_name(&parts.join(&b'/'))
}

/// `NAME;1` without its version suffix.
pub(crate) fn strip_version(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b';') {
        Some(i) if name[i + 1..].iter().all(u8::is_ascii_digit) => &name[..i],
        _ => name,
    }
}

/// A Joliet name: big-endian UCS-2 (UTF-16 in practice) to UTF-8; unpaired surrogates
/// become U+FFFD.
pub(crate) fn ucs2_name(b: &[u8]) -> Vec<u8> {
    let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect::<String>().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(strip_version(b"README.TXT;1"), b"README.TXT");
        assert_eq!(strip_version(b"A;B"), b"A;B");
        assert_eq!(ucs2_name(&[0, b'a', 0x00, 0xe9, 0xd8, 0x3d, 0xde, 0x00]), "aé😀".as_bytes());
    }
}
