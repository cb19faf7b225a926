//! Which storage drivers a kernel can use at boot, and an initramfs that loads them.
//!
//! A kernel drives a bus when the driver is built in (`modules.builtin`) or when it is a
//! module the initramfs carries. The modules and their dependencies come from
//! `lib/modules/VERSION` (`modules.dep`; for an unpacked kernel package, which has no
//! `modules.dep` until depmod runs, `modules.order` and each module's own `depends=`
//! field, which modpost wrote). When the boot initramfs lacks a driver the target's bus
//! needs, [`build_initramfs`] writes a small one: the modules, a static busybox and an
//! init that loads them, waits for the root filesystem and switches to it.

use crate::cpio;
use diskcast_block::{Error, Result};
use diskcast_layout::{le16, le32, le64, usize_from_u64};
use diskcast_tree::{FileData, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest `modules.dep`, `modules.order` or `modules.builtin` read: Debian's
/// modules.dep is ~400 KiB for 4000 modules.
pub(crate) const INDEX_LIMIT: u64 = 16 << 20;
/// The largest kernel module read (decompressed): the biggest in-tree ones are ~20 MiB.
const MODULE_LIMIT: u64 = 64 << 20;
/// The largest busybox copied into an initramfs.
const BUSYBOX_LIMIT: u64 = 8 << 20;
/// At most this many modules in a dependency closure (a storage stack needs ~10); the
/// cap bounds the walk over a hostile modules.dep.
const CLOSURE_MAX: usize = 256;

/// A bus a disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bus {
    /// virtio-blk (QEMU/KVM, OpenStack, KubeVirt).
    VirtioBlk,
    /// virtio-scsi.
    VirtioScsi,
    /// NVMe (AWS Nitro, QEMU's nvme device).
    Nvme,
    /// SATA through AHCI.
    Ahci,
    /// VMware's paravirtual SCSI.
    Pvscsi,
    /// LSI Logic SAS (ESXi's fallback).
    LsiSas,
    /// Hyper-V's synthetic storage (VMBus).
    HyperV,
    /// USB mass storage.
    Usb,
}

impl Bus {
    /// The bus's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Bus::VirtioBlk => "virtio-blk",
            Bus::VirtioScsi => "virtio-scsi",
            Bus::Nvme => "nvme",
            Bus::Ahci => "ahci",
            Bus::Pvscsi => "pvscsi",
            Bus::LsiSas => "lsi-sas",
            Bus::HyperV => "hv_storvsc",
            Bus::Usb => "usb",
        }
    }

    /// The modules the bus's disks need (their dependencies come from the kernel's index).
    pub fn modules(self) -> &'static [&'static str] {
        match self {
            Bus::VirtioBlk => &["virtio_pci", "virtio_blk"],
            Bus::VirtioScsi => &["virtio_pci", "virtio_scsi", "sd_mod"],
            Bus::Nvme => &["nvme"],
            Bus::Ahci => &["ahci", "sd_mod"],
            Bus::Pvscsi => &["vmw_pvscsi", "sd_mod"],
            Bus::LsiSas => &["mptsas", "sd_mod"],
            Bus::HyperV => &["hv_vmbus", "hv_storvsc", "sd_mod"],
            Bus::Usb => &["xhci_pci", "usb_storage", "sd_mod"],
        }
    }
}

/// The root filesystem's module.
pub const ROOT_FS_MODULES: &[&str] = &["ext4"];

/// Modules a root filesystem module asks for at run time rather than by symbol
/// (`softdep=`), which the kernel loads through `modprobe`, absent from the initramfs
/// diskcast builds: ext4 and jbd2 take `crc32c` from the crypto API
/// (`softdep=pre: crypto-crc32c`), and a kernel with ext4 as a module (Debian's
/// linux-image-amd64) has the generic crc32c as a module too; without it mounting a
/// metadata_csum ext4 fails.
const ROOT_FS_SOFTDEPS: &[(&str, &str)] = &[("ext4", "crc32c_generic")];

/// The modules the built initramfs loads for the root filesystem, soft dependencies
/// first; built-in ones are left out (a built-in ext4 comes with a built-in crc32c).
pub fn root_fs_modules(k: &KernelModules<'_>) -> Vec<&'static str> {
    let mut out = Vec::new();
    for &m in ROOT_FS_MODULES {
        if k.driver(m) != Driver::Module {
            continue;
        }
        out.extend(
            ROOT_FS_SOFTDEPS.iter().filter(|(of, dep)| *of == m && k.driver(dep) == Driver::Module).map(|(_, d)| *d),
        );
        out.push(m);
    }
    out
}

/// The buses a disk for `profile` must boot on, on `arch`: every group needs one bus the
/// kernel drives. Plain outputs (`None`) try QEMU's default, SATA and NVMe, and need one.
/// Profiles a platform does not offer on `arch` are refused before this
/// ([`crate::Profile::check_arch`]).
pub fn buses(profile: Option<crate::Profile>, arch: crate::Arch) -> (Vec<&'static [Bus]>, bool) {
    use crate::Profile::*;
    match profile {
        Some(Qemu | Kubevirt) => (vec![&[Bus::VirtioBlk], &[Bus::VirtioScsi]], true),
        Some(Esxi) => (vec![&[Bus::Pvscsi, Bus::LsiSas]], true),
        Some(Aws) => (vec![&[Bus::Nvme]], true),
        // Compute Engine attaches boot disks by virtio-scsi on x86 (NVMe only on some
        // machine types); its Arm machine series (Tau T2A, Axion C4A) attach them by NVMe.
        Some(Gce) if arch == crate::Arch::Arm64 => (vec![&[Bus::Nvme]], true),
        Some(Gce) => (vec![&[Bus::VirtioScsi]], true),
        Some(Hyperv | Azure) => (vec![&[Bus::HyperV]], true),
        None => (vec![&[Bus::VirtioBlk], &[Bus::Ahci], &[Bus::Nvme]], false),
    }
}

/// Where a kernel's `lib/modules/VERSION` directory is read from.
#[derive(Debug)]
pub enum ModulesDir<'a> {
    /// A directory of the image's tree.
    Tree(&'a Tree, String),
    /// A directory on this machine.
    Host(PathBuf),
}

impl ModulesDir<'_> {
    fn read(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        match self {
            ModulesDir::Tree(t, base) => {
                t.read_optional(format!("{base}/{rel}").as_bytes(), limit).map_err(|e| Error::invalid(e.message()))
            }
            ModulesDir::Host(dir) => {
                let path = dir.join(rel);
                let f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io("cannot open", e).with_file(&path)),
                };
                let mut out = Vec::new();
                f.take(limit.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io("cannot read", e).with_file(&path))?;
                if diskcast_layout::u64_from_usize(out.len()) > limit {
                    return Err(Error::refused(format!("larger than {limit} bytes")).with_file(&path));
                }
                Ok(Some(out))
            }
        }
    }

    /// How the directory is named in messages.
    pub fn show(&self) -> String {
        match self {
            ModulesDir::Tree(_, base) => format!("the image's {base}"),
            ModulesDir::Host(p) => p.display().to_string(),
        }
    }
}

/// What a kernel has: built-in drivers and its modules with their dependencies.
#[derive(Debug)]
pub struct KernelModules<'a> {
    /// The kernel release.
    pub version: String,
    dir: ModulesDir<'a>,
    builtin: BTreeSet<String>,
    /// Module name -> path relative to the modules directory.
    paths: BTreeMap<String, String>,
    /// Module path -> dependency paths, from modules.dep (empty: read each module's own).
    deps: BTreeMap<String, Vec<String>>,
}

/// A driver's state in a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// Compiled into the kernel.
    Builtin,
    /// A loadable module.
    Module,
    /// Neither.
    Absent,
}

/// `kernel/drivers/block/virtio_blk.ko.xz` -> `virtio_blk`.
pub fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next().filter(|_| file.contains(".ko"))?;
    Some(stem.replace('-', "_"))
}

impl<'a> KernelModules<'a> {
    /// Reads the index of `dir`, kernel release `version`.
    pub fn load(version: &str, dir: ModulesDir<'a>) -> Result<Self> {
        let text = |rel: &str| -> Result<Option<String>> {
            Ok(dir.read(rel, INDEX_LIMIT)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        let builtin_text = text("modules.builtin")?.ok_or_else(|| {
            Error::not_applicable(format!(
                "{} has no modules.builtin: cannot tell which drivers are built in",
                dir.show()
            ))
        })?;
        let builtin = builtin_names(builtin_text.as_bytes());
        let mut paths = BTreeMap::new();
        let mut deps = BTreeMap::new();
        if let Some(dep) = text("modules.dep")? {
            for line in dep.lines() {
                let Some((m, rest)) = line.split_once(':') else { continue };
                let m = m.trim().to_string();
                if let Some(n) = module_name(&m) {
                    paths.insert(n, m.clone());
                }
                deps.insert(m, rest.split_whitespace().map(str::to_string).collect());
            }
        } else if let Some(order) = text("modules.order")? {
            for p in order.lines().map(str::trim) {
                if let Some(n) = module_name(p) {
                    paths.insert(n, p.to_string());
                }
            }
        } else {
            return Err(Error::not_applicable(format!(
                "{} has neither modules.dep nor modules.order: cannot tell which modules the kernel has",
                dir.show()
            )));
        }
        Ok(KernelModules { version: version.to_string(), dir, builtin, paths, deps })
    }

    /// Where the modules come from, for messages.
    pub fn origin(&self) -> String {
        self.dir.show()
    }

    /// Whether `name` is built in, a module or missing.
    pub fn driver(&self, name: &str) -> Driver {
        if self.builtin.contains(name) {
            Driver::Builtin
        } else if self.paths.contains_key(name) {
            Driver::Module
        } else {
            Driver::Absent
        }
    }

    /// Whether the index is a directory of this machine (not of the image).
    pub fn is_host(&self) -> bool {
        matches!(self.dir, ModulesDir::Host(_))
    }

    /// The bytes of its `modules.builtin` (at most [`INDEX_LIMIT`]).
    pub fn builtin_file(&self) -> Result<Option<Vec<u8>>> {
        self.dir.read("modules.builtin", INDEX_LIMIT)
    }

    /// The names in `modules.builtin`.
    pub fn builtin_names(&self) -> impl Iterator<Item = &str> {
        self.builtin.iter().map(String::as_str)
    }

    /// The module files `names` need (modules among them and their dependencies),
    /// dependencies first, each once; built-in names are skipped.
    pub fn closure(&self, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
        let mut done: Vec<(String, Vec<u8>)> = Vec::new();
        for name in names {
            if self.driver(name) != Driver::Module {
                continue;
            }
            let path = self.paths[*name].clone();
            self.visit(&path, &mut done, &mut Vec::new())?;
        }
        Ok(done)
    }

    fn visit(&self, path: &str, done: &mut Vec<(String, Vec<u8>)>, stack: &mut Vec<String>) -> Result<()> {
        if done.iter().any(|(p, _)| p == path) || stack.iter().any(|p| p == path) {
            return Ok(());
        }
        if done.len() + stack.len() >= CLOSURE_MAX {
            return Err(Error::refused(format!(
                "{}: more than {CLOSURE_MAX} modules in one dependency closure (CLOSURE_MAX)",
                self.origin()
            )));
        }
        let bytes = self.module_bytes(path)?;
        let deps: Vec<String> = match self.deps.get(path) {
            Some(d) if !self.deps.is_empty() => d.clone(),
            _ => modinfo_depends(&bytes)
                .map_err(|e| Error::new(e.kind(), format!("{}/{path}: {}", self.origin(), e.message())))?
                .into_iter()
                .filter_map(|n| self.paths.get(&n.replace('-', "_")).cloned())
                .collect(),
        };
        stack.push(path.to_string());
        for d in deps {
            self.visit(&d, done, stack)?;
        }
        stack.pop();
        done.push((strip_compression(path).to_string(), bytes));
        Ok(())
    }

    /// A module's bytes, decompressed (`.ko.xz`, `.ko.zst`, `.ko.gz`): busybox's insmod
    /// hands them to the kernel as they are, and the kernel decompresses only with
    /// CONFIG_MODULE_DECOMPRESS.
    fn module_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let plain = strip_compression(path);
        for cand in
            [path.to_string(), plain.to_string(), format!("{plain}.xz"), format!("{plain}.zst"), format!("{plain}.gz")]
        {
            let Some(raw) = self.dir.read(&cand, MODULE_LIMIT)? else { continue };
            return decompress(&raw, &cand, MODULE_LIMIT).map_err(|e| e.with_file(format!("{}/{cand}", self.origin())));
        }
        Err(Error::not_applicable(format!("{} lists {path} but has no such file", self.origin())))
    }
}

fn strip_compression(path: &str) -> &str {
    [".xz", ".zst", ".gz"].iter().find_map(|s| path.strip_suffix(s)).unwrap_or(path)
}

/// `data` decompressed when its name says so, at most `limit` bytes.
fn decompress(data: &[u8], name: &str, limit: u64) -> Result<Vec<u8>> {
    let mut r: Box<dyn Read + '_> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(data))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(data).map_err(|e| Error::io("zstd", e))?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(data))
    } else {
        return Ok(data.to_vec());
    };
    let mut out = Vec::new();
    r.by_ref().take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| Error::io("cannot decompress", e))?;
    if diskcast_layout::u64_from_usize(out.len()) > limit {
        return Err(Error::refused(format!("decompresses to more than {limit} bytes (MODULE_LIMIT)")));
    }
    Ok(out)
}

/// The section named `want` of the ELF64 little-endian file `elf`.
fn elf_section<'e>(elf: &'e [u8], want: &[u8]) -> Result<Option<&'e [u8]>> {
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return Err(Error::invalid("not a 64-bit little-endian ELF file"));
    }
    let shoff = usize_from_u64(le64(elf, 0x28, "e_shoff")?, "e_shoff")?;
    let shentsize = usize::from(le16(elf, 0x3a, "e_shentsize")?);
    let shnum = usize::from(le16(elf, 0x3c, "e_shnum")?);
    let shstrndx = usize::from(le16(elf, 0x3e, "e_shstrndx")?);
    if shentsize < 0x40 {
        return Err(Error::invalid("ELF section headers smaller than 64 bytes"));
    }
    let header = |i: usize| -> Result<(usize, &'e [u8])> {
        let at =
            i.checked_mul(shentsize).and_then(|o| o.checked_add(shoff)).ok_or_else(|| Error::invalid("e_shoff"))?;
        let name = diskcast_layout::usize_from(le32(elf, at, "sh_name")?);
        let off = usize_from_u64(le64(elf, at + 0x18, "sh_offset")?, "sh_offset")?;
        let size = usize_from_u64(le64(elf, at + 0x20, "sh_size")?, "sh_size")?;
        Ok((name, diskcast_layout::bytes(elf, off, size, "ELF section")?))
    };
    let (_, names) = header(shstrndx)?;
    for i in 0..shnum {
        let (name, data) = header(i)?;
        let n = names.get(name..).unwrap_or_default();
        let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(n.len())];
        if n == want {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The `depends=` field of a module's `.modinfo` section.
fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>> {
    let Some(info) = elf_section(ko, b".modinfo")? else { return Ok(Vec::new()) };
    Ok(info
        .split(|&b| b == 0)
        .filter_map(|f| f.strip_prefix(b"depends="))
        .flat_map(|v| v.split(|&b| b == b','))
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect())
}

/// Whether `elf` is a statically linked 64-bit program (no PT_INTERP) for `arch`.
pub fn is_static_for(elf: &[u8], arch: crate::Arch) -> bool {
    let check = || -> Result<bool> {
        if !elf.starts_with(b"\x7fELF\x02\x01") || le16(elf, 0x12, "e_machine")? != arch.elf_machine() {
            return Ok(false);
        }
        let phoff = usize_from_u64(le64(elf, 0x20, "e_phoff")?, "e_phoff")?;
        let size = usize::from(le16(elf, 0x36, "e_phentsize")?);
        for i in 0..usize::from(le16(elf, 0x38, "e_phnum")?) {
            let at = i.checked_mul(size).and_then(|o| o.checked_add(phoff)).ok_or_else(|| Error::invalid("e_phoff"))?;
            if le32(elf, at, "p_type")? == 3 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    check().unwrap_or(false)
}

/// The kernel release a bzImage names in its setup header (`kernel_version`), e.g.
/// `6.1.0-27-amd64`.
pub fn bzimage_version(kernel: &FileData) -> Option<String> {
    let mut head = [0u8; 0x210];
    kernel.read_at(&mut head, 0).ok()?;
    if &head[0x202..0x206] != b"HdrS" {
        return None;
    }
    let ptr = u64::from(le16(&head, 0x20e, "kernel_version").ok()?);
    let mut s = [0u8; 128];
    let at = ptr.checked_add(0x200)?;
    if at + 128 > kernel.size {
        return None;
    }
    kernel.read_at(&mut s, at).ok()?;
    let end = s.iter().position(|&b| b == 0 || b == b' ').unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).ok().filter(|v| !v.is_empty()).map(str::to_string)
}

/// The most of a kernel file searched for its `Linux version` banner: an uncompressed
/// arm64 Image is 30-60 MiB.
const BANNER_SCAN_MAX: u64 = 128 << 20;

/// The kernel release of `kernel`: a bzImage's setup header, else the `Linux version
/// RELEASE ` banner an uncompressed kernel (an arm64 Image) carries in its data (the
/// first such string within [`BANNER_SCAN_MAX`] bytes).
pub fn kernel_release(kernel: &FileData) -> Option<String> {
    if let Some(v) = bzimage_version(kernel) {
        return Some(v);
    }
    const NEEDLE: &[u8] = b"Linux version ";
    const CHUNK: u64 = 1 << 20;
    /// Longest release taken (`utsname.release` is 64 bytes).
    const TAIL: usize = 65;
    let end = kernel.size.min(BANNER_SCAN_MAX);
    let mut at = 0u64;
    let mut window: Vec<u8> = Vec::new();
    while at < end {
        let len = CHUNK.min(end - at);
        let old = window.len();
        window.resize(old + usize::try_from(len).ok()?, 0);
        kernel.read_at(&mut window[old..], at).ok()?;
        at += len;
        let mut from = 0;
        while let Some(i) = window[from..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
            let start = from + i + NEEDLE.len();
            let rest = &window[start..];
            match rest.iter().take(TAIL).position(|&b| b == b' ' || b == 0) {
                // A printk format ("Linux version %s") is not the banner.
                Some(stop) if stop > 0 => {
                    if let Ok(v) = std::str::from_utf8(&rest[..stop])
                        && !v.contains('%')
                    {
                        return Some(v.to_string());
                    }
                }
                // Cut off by the chunk's end: the next round sees it whole.
                None if rest.len() < TAIL => break,
                _ => {}
            }
            from = start;
        }
        let keep = window.len().saturating_sub(NEEDLE.len() + TAIL);
        window.drain(..keep);
    }
    None
}

/// The modules an initramfs carries, and the kernel's built-in list when it holds one.
#[derive(Debug, Default)]
pub struct InitramfsModules {
    /// Every `*.ko*` under `lib/modules/` (or `usr/lib/modules/`), by module name.
    pub modules: BTreeSet<String>,
    /// The names of a `lib/modules/*/modules.builtin` it holds.
    pub builtin: Option<BTreeSet<String>>,
}

fn in_modules_dir(path: &str) -> bool {
    path.starts_with("lib/modules/") || path.starts_with("usr/lib/modules/")
}

/// Lists the modules in initramfs `data` (`what` names it).
pub fn initramfs_modules(data: &FileData, what: &str) -> Result<InitramfsModules> {
    let keep = |p: &str| in_modules_dir(p) && p.ends_with("/modules.builtin");
    let entries = cpio::list(data.reader()?, what, &keep)?;
    let modules = entries.iter().filter(|e| in_modules_dir(&e.path)).filter_map(|e| module_name(&e.path)).collect();
    let builtin = entries.iter().find_map(|e| e.data.as_deref()).map(builtin_names);
    Ok(InitramfsModules { modules, builtin })
}

/// The module names a `modules.builtin` lists.
pub fn builtin_names(text: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(text).lines().filter_map(module_name).collect()
}

/// Reads `lib/modules/VERSION/modules.builtin` of a tree.
pub fn tree_builtin(tree: &Tree, version: &str) -> Option<BTreeSet<String>> {
    ["/lib/modules", "/usr/lib/modules"]
        .iter()
        .find_map(|b| {
            tree.read_optional(format!("{b}/{version}/modules.builtin").as_bytes(), INDEX_LIMIT).ok().flatten()
        })
        .map(|t| builtin_names(&t))
}

/// What a kernel lacks to boot on a bus: `None` when it drives it with the modules in
/// `carried`; else the modules missing from the initramfs, or an error naming a driver
/// the kernel does not have at all.
pub fn bus_needs(
    k: &KernelModules<'_>,
    bus: Bus,
    carried: &BTreeSet<String>,
) -> std::result::Result<Vec<String>, String> {
    let mut need = Vec::new();
    for m in bus.modules() {
        match k.driver(m) {
            Driver::Builtin => {}
            Driver::Module if carried.contains(*m) => {}
            Driver::Module => need.push(m.to_string()),
            Driver::Absent => return Err(m.to_string()),
        }
    }
    Ok(need)
}

/// The parts of the built initramfs's init that vary.
#[derive(Debug)]
pub struct InitSpec {
    /// The root filesystem's UUID as `findfs` takes it.
    pub root_uuid: String,
    /// Mount options of the root.
    pub root_options: String,
}

/// A gzip'd newc initramfs: `busybox` as `/bin/busybox`, the `modules` (dependencies
/// first) under `lib/modules/VERSION/`, the kernel's modules.builtin, and `/init`.
pub fn build_initramfs(
    k: &KernelModules<'_>,
    modules: &[(String, Vec<u8>)],
    busybox: &[u8],
    spec: &InitSpec,
    mtime: u32,
) -> Result<Vec<u8>> {
    let v = &k.version;
    let mut w = cpio::Writer::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()), mtime);
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", &format!("lib/modules/{v}")] {
        w.dir(d, 0o755)?;
    }
    w.file("bin/busybox", 0o755, busybox)?;
    w.symlink("bin/sh", "busybox")?;
    let mut order = String::new();
    let mut made: BTreeSet<String> = BTreeSet::new();
    for (path, bytes) in modules {
        let mut at = format!("lib/modules/{v}");
        for part in path.split('/').collect::<Vec<_>>().split_last().map(|(_, d)| d.to_vec()).unwrap_or_default() {
            at = format!("{at}/{part}");
            if made.insert(at.clone()) {
                w.dir(&at, 0o755)?;
            }
        }
        w.file(&format!("lib/modules/{v}/{path}"), 0o644, bytes)?;
        order.push_str(path);
        order.push('\n');
    }
    let builtin: String = k.builtin_names().map(|n| format!("kernel/{n}.ko\n")).collect();
    w.file(&format!("lib/modules/{v}/modules.builtin"), 0o644, builtin.as_bytes())?;
    w.file(&format!("lib/modules/{v}/modules.order"), 0o644, order.as_bytes())?;
    let init = format!(
        "#!/bin/busybox sh\n\
         # Written by diskcast vm: load the storage drivers, mount the root, start its init.\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
         while read -r m; do\n\
         \x20 /bin/busybox insmod /lib/modules/{v}/$m || echo \"diskcast initramfs: insmod $m failed\"\n\
         done < /lib/modules/{v}/modules.order\n\
         n=0\n\
         until dev=$(/bin/busybox findfs UUID={uuid} 2>/dev/null); do\n\
         \x20 n=$((n+1)); [ $n -eq 1 ] && echo \"diskcast initramfs: waiting for the root filesystem UUID={uuid}\"\n\
         \x20 [ $n -ge 600 ] && {{ echo \"diskcast initramfs: no root filesystem UUID={uuid} after 60 s\"; exec /bin/busybox sh; }}\n\
         \x20 /bin/busybox usleep 100000\n\
         done\n\
         /bin/busybox mount -t ext4 -o {opts} \"$dev\" /newroot || exec /bin/busybox sh\n\
         /bin/busybox mount --move /dev /newroot/dev 2>/dev/null || /bin/busybox umount /dev\n\
         /bin/busybox umount /proc /sys\n\
         exec /bin/busybox switch_root /newroot /sbin/init\n",
        uuid = spec.root_uuid,
        opts = spec.root_options,
    );
    w.file("init", 0o755, init.as_bytes())?;
    let gz = w.finish()?;
    gz.finish().map_err(|e| Error::io("cannot compress the initramfs", e))
}

/// A statically linked busybox for `arch`: the image's, else this machine's (only when
/// this machine runs `arch`: Debian's busybox-static is built for its own architecture).
pub fn find_busybox(tree: &Tree, arch: crate::Arch) -> Result<(Vec<u8>, String)> {
    for p in ["/bin/busybox", "/usr/bin/busybox", "/sbin/busybox"] {
        if let Ok(Some(b)) = tree.read_optional(p.as_bytes(), BUSYBOX_LIMIT)
            && is_static_for(&b, arch)
        {
            return Ok((b, format!("the image's {p}")));
        }
    }
    for p in ["/usr/bin/busybox", "/bin/busybox"] {
        let Ok(f) = std::fs::File::open(p) else { continue };
        let mut b = Vec::new();
        if f.take(BUSYBOX_LIMIT).read_to_end(&mut b).is_ok() && is_static_for(&b, arch) {
            return Ok((b, format!("this machine's {p}")));
        }
    }
    if Some(arch) == crate::Arch::host() {
        return Err(Error::unsupported(
            "no statically linked busybox for the initramfs's init: neither the image nor this machine has one \
             (apt install busybox-static)",
        ));
    }
    Err(Error::unsupported(format!(
        "no statically linked {arch} busybox for the initramfs's init: the image has none at /bin/busybox, and this \
         machine's is not {arch}; add Debian's busybox-static for {arch} to the image (or boot with an initramfs \
         that has the bus driver: --initrd)"
    )))
}

/// The modules directory of release `version` beside a kernel file on this machine:
/// `DIR/../lib/modules/VERSION` or `DIR/../usr/lib/modules/VERSION` for a kernel at
/// `DIR/vmlinuz-VERSION` (an unpacked kernel package), or `DIR/lib/modules/VERSION`.
pub fn beside(kernel: &Path, version: &str) -> Option<PathBuf> {
    let dir = kernel.parent()?;
    let up = dir.parent().unwrap_or(dir);
    [
        up.join("lib/modules").join(version),
        up.join("usr/lib/modules").join(version),
        dir.join("lib/modules").join(version),
    ]
    .into_iter()
    .find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_suffixes_and_dashes() {
        assert_eq!(module_name("kernel/drivers/nvme/host/nvme-core.ko").as_deref(), Some("nvme_core"));
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.zst").as_deref(), Some("ext4"));
        assert_eq!(module_name("modules.dep"), None);
    }

    fn cloud_kernel() -> (PathBuf, String) {
        cloud_kernel_named("cloud-amd64")
    }

    /// `lib/modules/VERSION` of a kernel `scripts/setup.sh` unpacked, and VERSION.
    fn cloud_kernel_named(name: &str) -> (PathBuf, String) {
        let base = std::env::var_os("DISKCAST_TEST_ASSETS").map(PathBuf::from);
        let dir = base.unwrap_or_else(|| PathBuf::from("/var/cache/diskcast-tests")).join("kernel").join(name);
        let modules = dir.join("lib/modules");
        let v =
            std::fs::read_dir(&modules).expect("scripts/setup.sh fetches the test kernel").flatten().next().unwrap();
        (modules.join(v.file_name()), v.file_name().into_string().unwrap())
    }

    /// Debian's cloud kernel as its package unpacks (no modules.dep): dependencies from
    /// each module's own `depends=` equal what busybox's depmod writes in modules.dep.
    #[test]
    fn modinfo_dependencies_match_depmod_for_the_cloud_kernel() {
        let (real, v) = cloud_kernel();
        let k = KernelModules::load(&v, ModulesDir::Host(real.clone())).unwrap();
        assert_eq!(k.driver("nvme"), Driver::Builtin);
        assert_eq!(k.driver("ext4"), Driver::Builtin);
        assert_eq!(k.driver("virtio_blk"), Driver::Module);
        assert_eq!(k.driver("ahci"), Driver::Absent);
        let names = |c: Vec<(String, Vec<u8>)>| c.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        let want = ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ext4", "vmw_pvscsi"];
        let by_modinfo = names(k.closure(&want).unwrap());
        assert!(by_modinfo.contains(&"kernel/drivers/virtio/virtio_ring.ko".to_string()), "{by_modinfo:?}");
        let pos = |p: &str| by_modinfo.iter().position(|x| x.ends_with(p)).unwrap();
        assert!(pos("/virtio.ko") < pos("/virtio_blk.ko") && pos("/scsi_mod.ko") < pos("/sd_mod.ko"));
        // The same tree with modules.dep written by busybox depmod.
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("lib/modules").join(&v);
        std::fs::create_dir_all(&dir).unwrap();
        // A tree of links to the real modules (busybox's depmod does not follow a linked
        // directory, but reads linked files).
        let cp = std::process::Command::new("cp").arg("-rs").arg(real.join("kernel")).arg(dir.join("kernel")).status();
        assert!(cp.unwrap().success());
        for f in ["modules.builtin", "modules.order"] {
            std::fs::copy(real.join(f), dir.join(f)).unwrap();
        }
        let st = std::process::Command::new("busybox").args(["depmod", "-b"]).arg(t.path()).arg(&v).status().unwrap();
        assert!(st.success());
        let k = KernelModules::load(&v, ModulesDir::Host(dir.clone())).unwrap();
        assert!(!k.deps.is_empty());
        let mut by_dep = names(k.closure(&want).unwrap());
        let mut by_modinfo = by_modinfo;
        by_dep.sort();
        by_modinfo.sort();
        assert_eq!(by_dep, by_modinfo);
    }

    /// The banner is found across the 1 MiB read boundary, past a printk format and an
    /// empty release; a file without one has no release.
    #[test]
    fn kernel_release_from_the_banner() {
        let mut image = vec![0u8; (1 << 20) - 20];
        image.extend_from_slice(b"Linux version %s\0Linux version \0Linux version 6.1.0-57-cloud-arm64 (debian)\0");
        image.resize(3 << 20, 0);
        assert_eq!(kernel_release(&FileData::inline(image.clone())).as_deref(), Some("6.1.0-57-cloud-arm64"));
        image.iter_mut().for_each(|b| *b = b'L');
        assert_eq!(kernel_release(&FileData::inline(image)), None);
    }

    /// Debian's arm64 cloud kernel (an uncompressed Image, no setup header) names its
    /// release in its banner, as its package's file name does.
    #[test]
    fn arm64_image_names_its_release() {
        let (modules, v) = cloud_kernel_named("cloud-arm64");
        let kernel = modules.parent().unwrap().parent().unwrap().parent().unwrap().join(format!("boot/vmlinuz-{v}"));
        let data = FileData::host(diskcast_tree::HostFile::open_path(&kernel).unwrap());
        assert_eq!(bzimage_version(&data), None);
        assert_eq!(kernel_release(&data).as_deref(), Some(v.as_str()));
        assert_eq!(crate::Arch::of_kernel(&data), Some(crate::Arch::Arm64));
    }

    #[test]
    fn hostile_elf_headers_are_errors_not_panics() {
        let mut elf = b"\x7fELF\x02\x01".to_vec();
        elf.resize(0x40, 0);
        elf[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        elf[0x3a] = 0x40;
        elf[0x3c] = 0xff;
        let e = modinfo_depends(&elf).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("truncated sh_name"), "{e}");
        assert!(!is_static_for(&elf, crate::Arch::Amd64));
    }
}
