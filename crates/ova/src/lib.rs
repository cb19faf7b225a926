//! OVA packages (DMTF DSP0243, OVF 1.0): one tar holding the OVF descriptor, the
//! manifest and the disks, as VMware and VirtualBox import and export VMs.
//!
//! - [`write_ova`] writes a package of one streamOptimized VMDK: the descriptor first,
//!   then the manifest, then the disk (the order DSP0243 1.0 5.3 requires), as ustar
//!   members.
//! - [`OvaDriver`] reads one: the tar's members are listed (no extraction), the manifest
//!   is checked against every file, and the disk is opened through the VMDK driver on
//!   its member's byte range of the package.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod descriptor;
pub mod manifest;

use descriptor::{DESCRIPTOR_MAX, DiskFile, Hardware, OvfDisk};
use diskcast_block::progress::Progress;
use diskcast_block::registry::{CheckReport, CreateOptions, Driver, Measure, OpenContext, ProbeData};
use diskcast_block::source::{RangeReader, SliceSource, Source};
use diskcast_block::{BlockRead, Error, Extent, ImageInfo, MapExtent, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use diskcast_tar::{MemberKind, MemberWriter, TarReader};
use diskcast_tree::{Meta, Timestamp};
use manifest::{Algorithm, Entry, MANIFEST_MAX};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Most members a package may hold: a descriptor, a manifest, a certificate and the
/// disks (at most [`descriptor::DISKS_MAX`]), NVRAM and ISO files; far fewer in practice.
pub const MEMBERS_MAX: usize = 256;

/// A file of the package: a tar member's name and where its bytes lie in the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// The member name (one path component).
    pub name: String,
    /// Where its data starts in the package.
    pub offset: u64,
    /// Its size.
    pub size: u64,
}

/// A package as read: its files, its disks and what the manifest vouched for.
#[derive(Debug, Clone)]
pub struct Package {
    /// Every member, in archive order (the descriptor first).
    pub files: Vec<PackageFile>,
    /// The disks the descriptor lists, in its order.
    pub disks: Vec<OvfDisk>,
    /// The manifest's name and algorithm, when the package has one (it is optional).
    pub manifest: Option<(String, Algorithm)>,
}

impl Package {
    /// The member called `name`.
    pub fn file(&self, name: &str) -> Option<&PackageFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// The one path component a member may be called: no directories, no `..`, no NUL,
/// UTF-8 (a leading `./`, as some tars write, is dropped). Anything else is a path
/// trick: an importer extracting the package would write outside its directory.
fn member_name(raw: &[u8], package: &Path) -> Result<String> {
    let raw = raw.strip_prefix(b"./").unwrap_or(raw);
    let name = std::str::from_utf8(raw).ok().filter(|n| {
        !n.is_empty() && *n != "." && *n != ".." && !n.contains('/') && !n.contains('\\') && !n.contains('\0')
    });
    name.map(str::to_string).ok_or_else(|| {
        Error::corrupt(format!(
            "member {:?} is not a plain file name in the package's top directory (an OVA holds no paths)",
            String::from_utf8_lossy(raw)
        ))
        .with_file(package)
    })
}

/// Reads the bytes of `f` whole (a descriptor or manifest, at most `cap` bytes, named
/// by the constant `cap_name`).
fn read_small(src: &Source, f: &PackageFile, cap: u64, cap_name: &str) -> Result<String> {
    if f.size > cap {
        return Err(Error::out_of_bounds(format!("{} holds {} bytes, more than {cap_name} ({cap})", f.name, f.size))
            .with_file(src.name()));
    }
    let mut buf = vec![0u8; usize_from_u64(f.size, "package member")?];
    src.read_exact_at(&mut buf, f.offset)?;
    let text = String::from_utf8(buf)
        .map_err(|_| Error::corrupt(format!("{} is not UTF-8 text", f.name)).with_file(src.name()))?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// The digest of a member's bytes.
fn digest(src: &Source, f: &PackageFile, algorithm: Algorithm) -> Result<String> {
    let mut h = algorithm.hasher();
    let mut r = RangeReader::new(src.clone(), f.offset, f.size);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io(format!("cannot read {}", f.name), e).with_file(src.name()))?;
        if n == 0 {
            return Ok(h.hex());
        }
        h.update(&buf[..n]);
    }
}

/// Lists the package in `src`, reads its descriptor and checks its manifest: every
/// file the manifest lists must be in the package with that digest, and every file but
/// the manifest and certificate must be listed. Nothing is extracted; every file is
/// read once to be hashed.
pub fn open_package(src: &Source) -> Result<Package> {
    let name = src.name().to_path_buf();
    let len = src.len()?;
    let reader = RangeReader::new(src.clone(), 0, len);
    let mut tar = TarReader::new(Box::new(reader), name.display().to_string());
    let mut files: Vec<PackageFile> = Vec::new();
    while let Some(m) = tar.next_member()? {
        if files.len() == MEMBERS_MAX {
            return Err(Error::out_of_bounds(format!("the package holds more than {MEMBERS_MAX} files (MEMBERS_MAX)"))
                .with_file(&name));
        }
        let member = member_name(&m.path, &name)?;
        if m.kind != MemberKind::File || m.sparse.is_some() {
            return Err(Error::corrupt(format!("member {member} is not a plain regular file")).with_file(&name));
        }
        if files.iter().any(|f| f.name == member) {
            return Err(Error::corrupt(format!("member {member} appears twice")).with_file(&name));
        }
        files.push(PackageFile { name: member, offset: m.data_offset, size: m.data_len });
    }
    let ovf = files
        .first()
        .filter(|f| f.name.to_ascii_lowercase().ends_with(".ovf"))
        .ok_or_else(|| Error::corrupt("an OVA starts with its .ovf descriptor; this one does not").with_file(&name))?
        .clone();
    let xml = read_small(src, &ovf, DESCRIPTOR_MAX, "DESCRIPTOR_MAX")?;
    let disks = descriptor::disks(&xml, &ovf.name).map_err(|e| e.with_file(&name))?;
    let mfs: Vec<&PackageFile> = files.iter().filter(|f| f.name.to_ascii_lowercase().ends_with(".mf")).collect();
    if mfs.len() > 1 {
        return Err(Error::corrupt("the package holds more than one .mf manifest").with_file(&name));
    }
    let mut manifest = None;
    if let Some(mf) = mfs.first() {
        let entries = manifest::parse(&read_small(src, mf, MANIFEST_MAX, "MANIFEST_MAX")?, &mf.name)
            .map_err(|e| e.with_file(&name))?;
        check_manifest(src, &files, &entries, &mf.name)?;
        manifest = Some((mf.name.clone(), entries.first().map_or(Algorithm::Sha256, |e| e.algorithm)));
    }
    for d in &disks {
        if !files.iter().any(|f| f.name == d.href) {
            return Err(
                Error::corrupt(format!("disk {} is file {}, which the package lacks", d.id, d.href)).with_file(&name)
            );
        }
    }
    Ok(Package { files, disks, manifest })
}

/// Checks every entry of manifest `mf` against the files, and that it covers them all.
fn check_manifest(src: &Source, files: &[PackageFile], entries: &[Entry], mf: &str) -> Result<()> {
    let name = src.name();
    for e in entries {
        let f = files.iter().find(|f| f.name == e.name).ok_or_else(|| {
            Error::corrupt(format!("the manifest {mf} lists {}, which the package lacks", e.name)).with_file(name)
        })?;
        let got = digest(src, f, e.algorithm)?;
        if got != e.digest {
            return Err(Error::corrupt(format!(
                "{}: its {} is {got}, but the manifest {mf} says {}; the package is damaged or was altered",
                e.name,
                e.algorithm.name(),
                e.digest
            ))
            .with_file(name));
        }
    }
    for f in files {
        let lower = f.name.to_ascii_lowercase();
        if !lower.ends_with(".mf") && !lower.ends_with(".cert") && !entries.iter().any(|e| e.name == f.name) {
            return Err(Error::corrupt(format!("the manifest {mf} has no digest for {}", f.name)).with_file(name));
        }
    }
    Ok(())
}

/// The member names of a package for VM `name`: `NAME.ovf`, `NAME.mf`,
/// `NAME-disk1.vmdk`, with NAME cut to letters, digits, `.`, `_` and `-` (64 at most).
pub fn member_names(name: &str) -> (String, String, String) {
    let mut base: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')).take(64).collect();
    if base.trim_matches('.').is_empty() {
        base = "vm".into();
    }
    (format!("{base}.ovf"), format!("{base}.mf"), format!("{base}-disk1.vmdk"))
}

/// The disk that goes into a package: its VMDK bytes (read front to back), their size
/// and SHA-256, and the guest sizes the descriptor states.
pub struct PackageDisk<'a> {
    /// The streamOptimized VMDK.
    pub data: &'a mut dyn Read,
    /// Its length.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Guest size.
    pub capacity: u64,
    /// Guest bytes holding data.
    pub populated: u64,
}

impl std::fmt::Debug for PackageDisk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageDisk").field("size", &self.size).finish_non_exhaustive()
    }
}

/// Writes the OVA of VM `hw` with `disk` to `out`: descriptor, manifest (SHA-256 of
/// both other files), disk; members mode 0644, owned by root, dated `mtime` (seconds).
/// `progress` advances by the disk bytes copied. Returns the descriptor.
pub fn write_ova(
    out: &mut dyn Write,
    hw: &Hardware,
    disk: PackageDisk<'_>,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<String> {
    let (ovf_name, mf_name, disk_name) = member_names(&hw.name);
    let file =
        DiskFile { href: disk_name.clone(), size: disk.size, capacity: disk.capacity, populated: disk.populated };
    let ovf = descriptor::write(hw, &file);
    let mut h = Algorithm::Sha256.hasher();
    h.update(ovf.as_bytes());
    let mf = manifest::write(&[
        Entry { algorithm: Algorithm::Sha256, name: ovf_name.clone(), digest: h.hex() },
        Entry { algorithm: Algorithm::Sha256, name: disk_name.clone(), digest: disk.sha256.clone() },
    ]);
    let meta = Meta::new(0o644, Timestamp::from_secs(i64::try_from(mtime).unwrap_or(i64::MAX)));
    let mut w = MemberWriter::new(out, progress);
    w.file(ovf_name.as_bytes(), &meta, u64_from_usize(ovf.len()), &mut ovf.as_bytes())?;
    w.file(mf_name.as_bytes(), &meta, u64_from_usize(mf.len()), &mut mf.as_bytes())?;
    w.file(disk_name.as_bytes(), &meta, disk.size, disk.data)?;
    w.finish()?;
    Ok(ovf)
}

/// Whether `head` (a file's first bytes) starts an OVA: a tar whose first member is a
/// `.ovf` file. Tree sources take such a tar as the disk it carries, not as a tar.
pub fn is_package_head(head: &[u8]) -> bool {
    if !diskcast_tar::is_tar_header(head) {
        return false;
    }
    let end = head[..100].iter().position(|&c| c == 0).unwrap_or(100);
    let name = head[..end].to_ascii_lowercase();
    name.ends_with(b".ovf") && !name.contains(&b'/')
}

/// The OVA format: read only (a package is written by `convert -O ova` and `vm`, which
/// wrap a VMDK; see [`write_ova`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct OvaDriver;

/// The disk a package is read as: its first, or disk `choice` (1-based, in the
/// descriptor's `DiskSection` order: `--disk N`).
fn chosen_disk<'p>(p: &'p Package, src: &Source, choice: Option<usize>) -> Result<(&'p OvfDisk, &'p PackageFile)> {
    let n = choice.unwrap_or(1);
    let d = match n.checked_sub(1).and_then(|i| p.disks.get(i)) {
        Some(d) => d,
        None if p.disks.is_empty() => {
            return Err(Error::unsupported("the OVF descriptor lists no disk").with_file(src.name()));
        }
        None => {
            let listed: Vec<String> =
                p.disks.iter().enumerate().map(|(i, d)| format!("{} {} ({})", i + 1, d.id, d.href)).collect();
            return Err(Error::argument(format!(
                "--disk {n}: the package has {} disk{} ({}); give --disk 1 to {}",
                p.disks.len(),
                if p.disks.len() == 1 { "" } else { "s" },
                listed.join(", "),
                p.disks.len()
            ))
            .with_file(src.name()));
        }
    };
    if let Some(c) = &d.compression {
        return Err(Error::unsupported(format!(
            "disk {} is stored {c}-compressed (ovf:compression); diskcast reads uncompressed members only",
            d.id
        ))
        .with_file(src.name()));
    }
    if !d.format.to_ascii_lowercase().contains("vmdk") {
        return Err(Error::unsupported(format!(
            "disk {} has format {:?}; diskcast reads VMDK disks of an OVA",
            d.id, d.format
        ))
        .with_file(src.name()));
    }
    let f = p.file(&d.href).ok_or_else(|| Error::corrupt(format!("no member {}", d.href)).with_file(src.name()))?;
    Ok((d, f))
}

/// The disk member as a source of its own, named `PACKAGE:MEMBER` in errors.
fn disk_source(src: &Source, f: &PackageFile) -> Result<Source> {
    let name = format!("{}:{}", src.name().display(), f.name);
    Ok(Arc::new(SliceSource::new(name, src.clone(), f.offset, f.size)?))
}

impl Driver for OvaDriver {
    fn name(&self) -> &'static str {
        "ova"
    }

    fn probe(&self, data: &ProbeData<'_>) -> bool {
        is_package_head(data.head)
    }

    fn open(&self, src: Source, ctx: &OpenContext<'_>) -> Result<Box<dyn BlockRead>> {
        let p = open_package(&src)?;
        let (d, f) = chosen_disk(&p, &src, ctx.package_disk())?;
        let disk = ctx.registry.open_source(disk_source(&src, f)?, Some("vmdk"), ctx)?;
        let disk_name = d.href.clone();
        Ok(Box::new(OvaImage { disk, disk_name, disks: p.disks, manifest: p.manifest }))
    }

    fn check(&self, src: Source, ctx: &OpenContext<'_>) -> Result<CheckReport> {
        let p = open_package(&src)?;
        let (_, f) = chosen_disk(&p, &src, ctx.package_disk())?;
        ctx.registry.get("vmdk")?.check(disk_source(&src, f)?, ctx)
    }

    fn create(
        &self,
        path: &Path,
        _size: u64,
        _opts: &CreateOptions,
        _out: &diskcast_block::output::OutputFiles,
    ) -> Result<Box<dyn diskcast_block::BlockWrite>> {
        Err(Error::unsupported(
            "an OVA wraps a disk: write one with `diskcast convert -O ova SRC OUT.ova` or `diskcast vm`",
        )
        .with_file(path))
    }

    fn measure(&self, _size: u64, _data: &[Extent], _opts: &CreateOptions) -> Result<Measure> {
        Err(Error::unsupported("measure an OVA's disk as -O vmdk -o subformat=streamOptimized"))
    }
}

/// An OVA's disk: the VMDK reader on its member, described as the package.
#[derive(Debug)]
struct OvaImage {
    disk: Box<dyn BlockRead>,
    disk_name: String,
    /// Every disk the descriptor lists, for `info`.
    disks: Vec<OvfDisk>,
    manifest: Option<(String, Algorithm)>,
}

impl BlockRead for OvaImage {
    fn size(&self) -> u64 {
        self.disk.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.disk.read_at(buf, offset)
    }
    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent> {
        self.disk.extent_at(offset, max_len)
    }
    fn map_extent(&self, offset: u64, max_len: u64) -> Result<MapExtent> {
        self.disk.map_extent(offset, max_len)
    }
    fn info(&self) -> ImageInfo {
        let inner = self.disk.info();
        let mut specific = serde_json::Map::new();
        specific.insert("disk".into(), self.disk_name.clone().into());
        specific.insert("disk-format".into(), inner.format.clone().into());
        let disks: Vec<serde_json::Value> = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut m = serde_json::Map::new();
                m.insert("index".into(), (i + 1).into());
                m.insert("id".into(), d.id.clone().into());
                m.insert("file".into(), d.href.clone().into());
                if let Some(c) = d.capacity {
                    m.insert("capacity".into(), c.into());
                }
                m.insert("ovf-format".into(), d.format.clone().into());
                if let Some(c) = &d.compression {
                    m.insert("compression".into(), c.clone().into());
                }
                m.into()
            })
            .collect();
        specific.insert("disks".into(), disks.into());
        let verified = self.manifest.as_ref().map(|(n, a)| format!("{n} ({}), every file checked", a.name()));
        specific.insert("manifest".into(), verified.unwrap_or_else(|| "none".into()).into());
        for (k, v) in inner.specific {
            specific.insert(format!("vmdk-{k}"), v);
        }
        ImageInfo { format: "ova".into(), specific, extent_files: Vec::new(), ..inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        assert_eq!(member_names("app").0, "app.ovf");
        assert_eq!(member_names("../x y/z").2, "..xyz-disk1.vmdk");
        assert_eq!(member_names("...").0, "vm.ovf");
        for bad in [&b"../a.ovf"[..], b"/a.ovf", b"a/b.vmdk", b"", b".."] {
            let e = member_name(bad, Path::new("p.ova")).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}: {}", String::from_utf8_lossy(bad));
            assert!(e.to_string().contains("is not a plain file name"), "{e}");
        }
        assert_eq!(member_name(b"./a.ovf", Path::new("p")).unwrap(), "a.ovf");
    }
}
