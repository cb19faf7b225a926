//! Opening a VMDK: a sparse file with its embedded descriptor, or a text descriptor whose
//! extents (sparse, flat, VMFS, zero) are opened through the gate.

use crate::descriptor::{Descriptor, ExtentLine};
use crate::header::{MAGIC, MAX_DESCRIPTOR_BYTES, SECTOR};
use crate::sparse::{GrainMap, SparseExtent};
use diskcast_block::io::ImageFile;
use diskcast_block::range_end;
use diskcast_block::registry::OpenContext;
use diskcast_block::source::{ByteSource, Source, refuse_referenced};
use diskcast_block::{Alloc, BlockRead, Error, Extent, ImageInfo, MapExtent, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use serde_json::{Value, json};
use std::path::Path;

/// Grain directories one image may load in all: a descriptor may list thousands of
/// sparse extents (even the same file again and again), each with a directory of up to
/// [`crate::header::MAX_GD_BYTES`].
const MAX_TOTAL_GD_BYTES: u64 = 256 << 20;

/// What one extent of the disk is backed by.
#[derive(Debug)]
pub(crate) enum Backing {
    /// Reads as zeros (`ZERO` extents).
    Zero,
    /// A flat file, from byte `base`.
    Flat { file: Source, base: u64, file_len: u64 },
    /// A hosted sparse extent.
    Sparse(Box<SparseExtent>),
}

/// One extent of the disk.
#[derive(Debug)]
pub(crate) struct DiskExtent {
    /// Guest byte offset.
    pub(crate) start: u64,
    /// Length in bytes.
    pub(crate) len: u64,
    pub(crate) backing: Backing,
    /// The descriptor line (or a synthetic one for a bare sparse file).
    pub(crate) line: ExtentLine,
}

/// An open VMDK image.
#[derive(Debug)]
pub struct VmdkReader {
    size: u64,
    pub(crate) extents: Vec<DiskExtent>,
    desc: Descriptor,
    create_type: String,
    /// The path the image was opened as: extent file names are shown relative to it.
    path: std::path::PathBuf,
    /// A bare sparse file (its descriptor embedded), not a descriptor naming extents.
    pub(crate) embedded: bool,
}

impl VmdkReader {
    /// Opens the image in `file`; extent files go through `ctx`'s gate, and only a
    /// descriptor read from a file on disk may name any.
    pub fn open(file: Source, ctx: &OpenContext<'_>) -> Result<Self> {
        let path_buf = file.name().to_path_buf();
        let path = path_buf.as_path();
        let file_len = file.len()?;
        let mut head = [0u8; 4];
        let n = usize_from_u64(file_len.min(4), "length")?;
        file.read_exact_at(&mut head[..n], 0)?;
        if head == MAGIC {
            return Self::open_sparse_file(path, file);
        }
        if &head == b"COWD" {
            return Err(Error::unsupported("ESX COWD (vmfsSparse) extents are not supported").with_file(path));
        }
        if file_len > MAX_DESCRIPTOR_BYTES {
            return Err(Error::invalid(format!(
                "not a VMDK: no KDMV magic, and at {file_len} bytes too large for a text descriptor"
            ))
            .with_file(path));
        }
        let mut raw = vec![0u8; usize_from_u64(file_len, "file_len")?];
        file.read_exact_at(&mut raw, 0)?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|_| Error::invalid("not a VMDK descriptor: the file is not text").with_file(path))?;
        let desc = Descriptor::parse(text).map_err(|e| e.with_file(path))?;
        refuse_delta(&desc, path)?;
        if desc.extents.is_empty() {
            return Err(Error::invalid("the VMDK descriptor lists no extents").with_field("extent").with_file(path));
        }
        let mut extents = Vec::with_capacity(desc.extents.len());
        let mut start = 0u64;
        let mut gd_bytes = 0u64;
        for line in &desc.extents {
            let len = line
                .sectors
                .checked_mul(SECTOR)
                .filter(|&l| start.checked_add(l).is_some_and(|e| e <= crate::header::MAX_CAPACITY_SECTORS * SECTOR))
                .ok_or_else(|| {
                    Error::invalid(format!("extent of {} sectors makes the disk too large", line.sectors))
                        .with_field("extent")
                        .with_file(path)
                })?;
            let backing = open_extent(file.as_ref(), line, len, ctx)?;
            if let Backing::Sparse(sp) = &backing {
                gd_bytes += u64_from_usize(sp.gd.len()) * 4;
                if gd_bytes > MAX_TOTAL_GD_BYTES {
                    return Err(Error::unsupported(format!(
                        "the sparse extents' grain directories add up to more than {} MiB",
                        MAX_TOTAL_GD_BYTES >> 20
                    ))
                    .with_field("extent")
                    .with_file(path));
                }
            }
            if len > 0 {
                extents.push(DiskExtent { start, len, backing, line: line.clone() });
            }
            start += len;
        }
        let sparse = u64_from_usize(extents.iter().filter(|e| matches!(e.backing, Backing::Sparse(_))).count());
        for e in &mut extents {
            if let Backing::Sparse(sp) = &mut e.backing {
                sp.share_cache(sparse);
            }
        }
        let create_type = desc.get("createType").unwrap_or("unknown").to_string();
        Ok(VmdkReader { size: start, extents, desc, create_type, path: path.to_path_buf(), embedded: false })
    }

    fn open_sparse_file(path: &Path, file: Source) -> Result<Self> {
        let (sparse, text) = SparseExtent::open(file)?;
        let desc = match &text {
            Some(t) => Descriptor::parse(t).unwrap_or_default(),
            None => Descriptor::default(),
        };
        refuse_delta(&desc, path)?;
        let compressed = sparse.header.compressed();
        let create_type = desc
            .get("createType")
            .map(str::to_string)
            .unwrap_or_else(|| if compressed { "streamOptimized" } else { "monolithicSparse" }.to_string());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let line = ExtentLine {
            access: "RW".into(),
            sectors: sparse.header.capacity,
            kind: "SPARSE".into(),
            file: name,
            offset: 0,
        };
        let size = sparse.capacity;
        let extents = if size > 0 {
            vec![DiskExtent { start: 0, len: size, backing: Backing::Sparse(Box::new(sparse)), line }]
        } else {
            Vec::new()
        };
        Ok(VmdkReader { size, extents, desc, create_type, path: path.to_path_buf(), embedded: true })
    }

    /// The index of the extent holding guest byte `off`.
    fn find(&self, off: u64) -> Option<usize> {
        let i = self.extents.partition_point(|e| e.start + e.len <= off);
        (i < self.extents.len()).then_some(i)
    }

    /// Facts for `info`.
    fn info_inner(&self) -> ImageInfo {
        let mut s = serde_json::Map::new();
        s.insert("create-type".into(), json!(self.create_type));
        // qemu-img info prints the CIDs as numbers; one that is not hex is left out.
        for (key, field) in [("cid", "CID"), ("parent-cid", "parentCID")] {
            if let Some(v) = self.desc.get(field).and_then(|v| u32::from_str_radix(v.trim(), 16).ok()) {
                s.insert(key.into(), json!(v));
            }
        }
        if let Some(v) = self.desc.get("ddb.adapterType") {
            s.insert("adapter-type".into(), json!(v));
        }
        if let Some(v) = self.desc.get("ddb.virtualHWVersion") {
            s.insert("hwversion".into(), json!(v));
        }
        let geo: Vec<(&str, Option<u64>)> = ["cylinders", "heads", "sectors"]
            .iter()
            .map(|k| (*k, self.desc.get(&format!("ddb.geometry.{k}")).and_then(|v| v.parse().ok())))
            .collect();
        if geo.iter().all(|(_, v)| v.is_some()) {
            let m: serde_json::Map<String, Value> = geo.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            s.insert("geometry".into(), Value::Object(m));
        }
        let mut cluster = None;
        let mut compressed = false;
        let mut list = Vec::new();
        let mut files = Vec::new();
        for e in &self.extents {
            // qemu-img info's keys: `filename` (the path as opened, beside the descriptor),
            // `format` (the extent type; empty for a bare sparse file, as qemu shows it),
            // `cluster-size` for sparse extents, `compressed`; the rest are ours.
            let mut o = serde_json::Map::new();
            o.insert("format".into(), json!(if self.embedded { "" } else { e.line.kind.as_str() }));
            o.insert("access".into(), json!(e.line.access));
            let file = match (&e.line.file, self.embedded) {
                (Some(f), false) => Some(self.path.parent().map_or_else(|| f.into(), |d| d.join(f))),
                (Some(_), true) => Some(self.path.clone()),
                (None, _) => None, // ZERO extents have no file
            };
            if let Some(f) = file {
                o.insert("filename".into(), json!(f.display().to_string()));
                if !self.embedded {
                    files.push(f);
                }
            }
            o.insert("virtual-size".into(), json!(e.len));
            if let Backing::Sparse(sp) = &e.backing {
                cluster.get_or_insert(sp.grain);
                compressed |= sp.header.compressed();
                o.insert("version".into(), json!(sp.header.version));
                o.insert("cluster-size".into(), json!(sp.grain));
                o.insert("compressed".into(), json!(sp.header.compressed()));
                o.insert("zeroed-grain".into(), json!(sp.header.zero_grain()));
                if sp.footer_used {
                    o.insert("footer".into(), json!(true));
                }
            }
            if let Backing::Flat { base, .. } = &e.backing {
                o.insert("offset".into(), json!(base));
            }
            list.push(Value::Object(o));
        }
        if let Some(g) = cluster {
            s.insert("grain-size".into(), json!(g));
        }
        s.insert("compressed".into(), json!(compressed));
        s.insert("extents".into(), Value::Array(list));
        ImageInfo {
            format: "vmdk".into(),
            virtual_size: self.size,
            cluster_size: cluster,
            compression: compressed.then(|| "zlib".to_string()),
            specific: s,
            extent_files: files,
            ..ImageInfo::default()
        }
    }
}

/// Delta disks name a parent; we do not open parents of VMDKs.
fn refuse_delta(desc: &Descriptor, path: &Path) -> Result<()> {
    let parent_cid = desc.get("parentCID").unwrap_or("ffffffff");
    if let Some(hint) = desc.get("parentFileNameHint") {
        return Err(Error::unsupported(format!(
            "this is a VMDK delta disk (parentFileNameHint={hint:?}); reading parent chains is not supported"
        ))
        .with_field("parentFileNameHint")
        .with_file(path));
    }
    if !parent_cid.eq_ignore_ascii_case("ffffffff") {
        return Err(Error::unsupported(format!(
            "this is a VMDK delta disk (parentCID={parent_cid}); reading parent chains is not supported"
        ))
        .with_field("parentCID")
        .with_file(path));
    }
    Ok(())
}

fn open_extent(desc: &dyn ByteSource, line: &ExtentLine, len: u64, ctx: &OpenContext<'_>) -> Result<Backing> {
    let desc_path = desc.name();
    let kind = line.kind.to_ascii_uppercase();
    if line.access == "NOACCESS" {
        return Err(Error::unsupported("NOACCESS extents are not supported").with_field("extent").with_file(desc_path));
    }
    let open = || -> Result<Source> {
        let name = line.file.as_deref().ok_or_else(|| {
            Error::invalid(format!("{kind} extent has no file name")).with_field("extent").with_file(desc_path)
        })?;
        let Some(desc_file) = desc.file_path() else {
            // A remote descriptor: the extent beside it on its server, by the same rule.
            diskcast_block::gate::plain_extent_name(desc_path, name, "extent")?;
            return desc
                .open_relative(name)
                .unwrap_or_else(|| Err(refuse_referenced(desc, "the extent file", name, "extent")));
        };
        let p = ctx.gate.resolve_extent(desc_file, name, "extent")?;
        Ok(std::sync::Arc::new(ImageFile::open(&p)?))
    };
    match kind.as_str() {
        "ZERO" => Ok(Backing::Zero),
        "FLAT" | "VMFS" => {
            let file = open()?;
            let file_len = file.len()?;
            let base = line.offset.checked_mul(SECTOR).filter(|b| b.checked_add(len).is_some()).ok_or_else(|| {
                Error::invalid(format!("flat extent offset {} is too large", line.offset))
                    .with_field("extent")
                    .with_file(desc_path)
            })?;
            Ok(Backing::Flat { file, base, file_len })
        }
        "SPARSE" => {
            let file = open()?;
            let (sp, _) = SparseExtent::open(file)?;
            if sp.capacity < len {
                return Err(Error::corrupt(format!(
                    "sparse extent {:?} holds {} sectors but the descriptor gives it {}",
                    line.file.as_deref().unwrap_or(""),
                    sp.header.capacity,
                    line.sectors
                ))
                .with_field("capacity")
                .with_file(desc_path));
            }
            Ok(Backing::Sparse(Box::new(sp)))
        }
        other => Err(Error::unsupported(format!("{other} extents are not supported"))
            .with_field("extent")
            .with_file(desc_path)),
    }
}

impl BlockRead for VmdkReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        range_end(offset, u64_from_usize(buf.len()), self.size)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + u64_from_usize(done);
            let Some(i) = self.find(pos) else {
                return Err(Error::out_of_bounds("read past the last extent").with_offset(pos));
            };
            let e = &self.extents[i];
            let rel = pos - e.start;
            let n = usize_from_u64((e.len - rel).min(u64_from_usize(buf.len() - done)), "read length")?;
            let out = &mut buf[done..done + n];
            match &e.backing {
                Backing::Zero => out.fill(0),
                Backing::Flat { file, base, file_len } => {
                    let at = base + rel;
                    let avail = usize_from_u64(file_len.saturating_sub(at).min(u64_from_usize(n)), "read length")?;
                    file.read_exact_at(&mut out[..avail], at)?;
                    out[avail..].fill(0);
                }
                Backing::Sparse(sp) => sp.read(out, rel)?,
            }
            done += n;
        }
        Ok(())
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        range_end(offset, 1, self.size)?;
        let Some(i) = self.find(offset) else {
            return Err(Error::out_of_bounds("offset past the last extent").with_offset(offset));
        };
        let e = &self.extents[i];
        let rel = offset - e.start;
        let max = max_len.max(1).min(e.len - rel);
        let (len, alloc) = match &e.backing {
            Backing::Zero => (max, Alloc::Zero),
            Backing::Flat { file, base, file_len } => {
                let at = base + rel;
                if at >= *file_len {
                    (max, Alloc::Unallocated)
                } else {
                    let (alloc, stop) = match file.next_data(at)? {
                        Some(d) if d <= at => (Alloc::Data, file.next_hole(at)?),
                        Some(d) => (Alloc::Unallocated, d),
                        None => (Alloc::Unallocated, u64::MAX),
                    };
                    let stop = if alloc == Alloc::Unallocated { stop.min(*file_len).max(at + 1) } else { stop };
                    (stop.saturating_sub(at).clamp(1, max), alloc)
                }
            }
            Backing::Sparse(sp) => sp.extent(rel, max)?,
        };
        Ok(Extent { offset, len, alloc })
    }

    fn info(&self) -> ImageInfo {
        self.info_inner()
    }

    /// Flat data sits at the extent's base plus the offset; a sparse run is cut where
    /// its grains stop following each other in the file (or stop being compressed).
    fn map_extent(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        let extent = self.extent_at(offset, max_len)?;
        let none = MapExtent { extent, host: None, compressed: false };
        if extent.alloc != Alloc::Data {
            return Ok(none);
        }
        let Some(i) = self.find(offset) else { return Ok(none) };
        let e = &self.extents[i];
        let rel = offset - e.start;
        match &e.backing {
            Backing::Flat { base, .. } => Ok(MapExtent { host: Some(base + rel), ..none }),
            Backing::Zero => Ok(none),
            Backing::Sparse(sp) => {
                let grain = sp.grain;
                let first = sp.lookup(rel / grain)?;
                let mut run = (grain - rel % grain).min(extent.len);
                let mut g = rel / grain + 1;
                while run < extent.len {
                    let next = sp.lookup(g)?;
                    let follows = match (first, next) {
                        (GrainMap::Data(a), GrainMap::Data(b)) => b == a + (g - rel / grain) * grain,
                        (GrainMap::Compressed(_), GrainMap::Compressed(_)) => true,
                        _ => false,
                    };
                    if !follows {
                        break;
                    }
                    run = (run + grain).min(extent.len);
                    g += 1;
                }
                let extent = Extent { len: run, ..extent };
                Ok(match first {
                    GrainMap::Data(h) => MapExtent { extent, host: Some(h + rel % grain), compressed: false },
                    GrainMap::Compressed(_) => MapExtent { extent, host: None, compressed: true },
                    _ => MapExtent { extent, ..none },
                })
            }
        }
    }
}
