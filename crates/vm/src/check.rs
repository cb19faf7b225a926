//! `diskcast check --profile P IMAGE`: why a platform would refuse an image, said before
//! the upload rather than after it.
//!
//! Every rule comes from a platform's published requirements:
//! - Azure: a fixed VHD, its size a whole number of MiB, the file exactly that size plus
//!   the 512-byte footer, between 20 MiB and the VHD format's 2040 GiB (managed-disk
//!   upload limits; Add-AzVhd: "N * MiB + 512 bytes").
//! - ESXi and AWS VM import: a streamOptimized VMDK (the `createType` of the descriptor).
//! - Hyper-V generation 2: VHDX, GPT, UEFI (an ESP holding `EFI/BOOT/BOOTX64.EFI`, or
//!   `BOOTAA64.EFI` on Arm64).
//! - KubeVirt: a containerDisk, an image whose layer holds one qcow2 or raw disk under
//!   `/disk/`, readable by the qemu user (uid/gid 107).
//! - QEMU/KVM (this project's profile): qcow2 version 3 with zstd compression.
//!
//! Every profile that takes a disk also wants a partition table and something to boot
//! (an ESP with the removable-media loader for UEFI, or MBR boot code for BIOS), and a
//! clean `check` of the block format (no corruption, no leaked clusters), and a kernel
//! (the ESP's systemd-boot entry) that drives the platform's disk bus, on an architecture
//! the platform runs (the loader's, or the kernel's).

use crate::{Arch, Profile};
use diskcast_block::registry::{Driver, OpenContext};
use diskcast_block::source::Source;
use diskcast_block::{BlockRead, ErrorKind, Result};
use diskcast_part::{PartType, PartitionView, TableKind, read_table};
use diskcast_tree::{FsReader, Kind, NodeId, ReadOptions, Tree};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

const MIB: u64 = 1 << 20;
/// Azure's smallest uploadable disk (managed-disk upload: 20 MiB plus the footer).
const AZURE_MIN: u64 = 20 * MIB;
/// The VHD format's largest disk, as Hyper-V and Azure take it.
const VHD_MAX: u64 = 2040 << 30;
/// The loader UEFI firmware starts from removable media (and from a disk with no boot
/// entries, as every freshly imported VM disk is), x86-64 (UEFI 2.10, 3.5.1.1): the one
/// `--secure-boot`'s shim chain is judged at (it is an x86-64 chain).
const UEFI_LOADER: [&str; 3] = ["EFI", "BOOT", "BOOTX64.EFI"];
/// Largest GRUB configuration read for `--secure-boot` (diskcast writes under 1 KiB).
const GRUB_CFG_MAX: usize = 1 << 20;
/// The qemu user KubeVirt runs the VM as.
const QEMU_UID: u32 = 107;

/// One reason a platform would refuse an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// A stable name for scripts (`vhd-subformat`, `no-uefi-loader`...).
    pub code: &'static str,
    /// What is wrong and, where there is one, the command that fixes it.
    pub message: String,
}

fn reason(code: &'static str, message: impl Into<String>) -> Reason {
    Reason { code, message: message.into() }
}

/// Checks the disk image at `path` (of block format `format`, probed when `None`)
/// against what `profile` demands. `Ok(empty)` means accepted; `Err` means the image
/// could not be read at all.
pub fn check_disk(profile: Profile, path: &Path, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Vec<Reason>> {
    ctx.lock(path)?;
    let src = diskcast_block::source::open_file(path)?;
    check_source(profile, src, format, ctx)
}

/// [`check_disk`] for an image held in any byte source (a disk spooled out of a layer).
fn check_source(profile: Profile, src: Source, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Vec<Reason>> {
    let registry = ctx.registry;
    let driver = match format {
        Some(f) => registry.get(f)?,
        None => registry.probe_source(src.as_ref())?,
    };
    let disk: Arc<dyn BlockRead> = Arc::from(registry.open_source(src.clone(), Some(driver.name()), ctx)?);
    let mut reasons = format_rules(profile, driver.name(), disk.as_ref(), src.len()?);
    reasons.extend(integrity(driver, src, ctx));
    reasons.extend(boot_rules(profile, disk)?);
    Ok(reasons)
}

/// The block format and its options.
fn format_rules(profile: Profile, format: &str, disk: &dyn BlockRead, file_len: u64) -> Vec<Reason> {
    let info = disk.info();
    let spec = |k: &str| info.specific.get(k).cloned().unwrap_or_default();
    let name = profile.name();
    let mut out = Vec::new();
    match profile {
        Profile::Azure => {
            if format != "vhd" {
                out.push(reason(
                    "format",
                    format!(
                        "azure takes a fixed VHD (vpc), not {format}: diskcast convert -O vhd -o \
                         subformat=fixed,force_size=on,round_size=1M IMAGE OUT.vhd"
                    ),
                ));
                return out;
            }
            let subformat = spec("subformat");
            if subformat != "fixed" {
                out.push(reason(
                    "vhd-subformat",
                    format!(
                        "azure takes only fixed VHDs; this one is {}: diskcast convert -O vhd -o \
                         subformat=fixed,force_size=on,round_size=1M IMAGE OUT.vhd",
                        subformat.as_str().unwrap_or("of unknown type")
                    ),
                ));
            }
            let current = spec("current-size").as_u64().unwrap_or(0);
            if current % MIB != 0 {
                out.push(reason(
                    "size-not-whole-mib",
                    format!(
                        "the virtual size (the footer's current size) is {current} bytes, not a whole number of \
                         MiB; azure wants N MiB (round up: -o round_size=1M,force_size=on)"
                    ),
                ));
            }
            if !(AZURE_MIN..=VHD_MAX).contains(&current) {
                out.push(reason(
                    "size-out-of-range",
                    format!("the virtual size is {current} bytes; azure takes 20 MiB to 2040 GiB"),
                ));
            }
            if subformat == "fixed" && file_len.checked_sub(512) != Some(current) {
                out.push(reason(
                    "footer-size-mismatch",
                    format!(
                        "the file is {file_len} bytes but the footer's current size says {current}: a fixed VHD \
                         must be exactly the current size plus the 512-byte footer"
                    ),
                ));
            }
            if info.virtual_size != current {
                out.push(reason(
                    "geometry-size-mismatch",
                    format!(
                        "the footer's CHS geometry gives {} bytes but its current size says {current}: hypervisors \
                         would disagree about the disk's size (write it with -o force_size=on)",
                        info.virtual_size
                    ),
                ));
            }
        }
        Profile::Esxi | Profile::Aws => {
            // An OVA's disk: its VMDK's facts carry a prefix.
            let create_type = if format == "ova" { spec("vmdk-create-type") } else { spec("create-type") };
            if !matches!(format, "vmdk" | "ova") || create_type != "streamOptimized" {
                let what = if format == "vmdk" {
                    format!("a {} VMDK", create_type.as_str().unwrap_or("VMDK of unknown createType"))
                } else {
                    format.to_string()
                };
                out.push(reason(
                    "vmdk-create-type",
                    format!(
                        "{name} imports streamOptimized VMDKs only, not {what}: diskcast convert -O vmdk -o \
                         subformat=streamOptimized IMAGE OUT.vmdk"
                    ),
                ));
            }
        }
        Profile::Hyperv => {
            if format != "vhdx" {
                out.push(reason(
                    "format",
                    format!("hyperv (generation 2) takes VHDX, not {format}: diskcast convert -O vhdx IMAGE OUT.vhdx"),
                ));
            }
        }
        Profile::Qemu => {
            if format != "qcow2" {
                out.push(reason(
                    "format",
                    format!(
                        "the qemu profile is qcow2, not {format}: diskcast convert -O qcow2 -c -o \
                         compression_type=zstd IMAGE OUT.qcow2"
                    ),
                ));
                return out;
            }
            if spec("compat") != "1.1" {
                out.push(reason(
                    "qcow2-version",
                    "qcow2 version 2 (compat=0.10): the qemu profile wants version 3 (compat=1.1), which zstd needs",
                ));
            }
            let compression = spec("compression-type");
            if compression != "zstd" {
                out.push(reason(
                    "qcow2-compression",
                    format!(
                        "compression type is {}, not zstd: diskcast convert -O qcow2 -c -o compression_type=zstd \
                         IMAGE OUT.qcow2",
                        compression.as_str().unwrap_or("unknown")
                    ),
                ));
            }
        }
        Profile::Gce => {
            if format != "raw" {
                out.push(reason(
                    "format",
                    format!("gce imports a raw disk (disk.raw in a tar.gz), not {format}: diskcast convert --profile gce IMAGE OUT.tar.gz"),
                ));
            }
            if !info.virtual_size.is_multiple_of(crate::profile::GIB) {
                out.push(reason(
                    "size-not-whole-gib",
                    format!("the disk is {} bytes, not a whole number of GiB, which gce requires", info.virtual_size),
                ));
            }
        }
        Profile::Kubevirt => {
            if !matches!(format, "qcow2" | "raw") {
                out.push(reason("disk-format", format!("kubevirt boots a qcow2 or raw disk, not {format}")));
            }
        }
    }
    out
}

/// The block format's own check: corruption and leaks are grounds for refusal.
fn integrity(driver: &dyn Driver, src: Source, ctx: &OpenContext<'_>) -> Vec<Reason> {
    match driver.check(src, ctx) {
        Ok(r) => {
            let mut out = Vec::new();
            if r.corruptions > 0 {
                out.push(reason(
                    "corrupt",
                    format!("{} errors in the {} metadata (see diskcast check)", r.corruptions, driver.name()),
                ));
            }
            if r.leaks > 0 {
                out.push(reason(
                    "leaks",
                    format!("{} leaked clusters (see diskcast check; a convert rewrites them away)", r.leaks),
                ));
            }
            if r.check_errors > 0 {
                out.push(reason("check-incomplete", format!("{} errors while checking the image", r.check_errors)));
            }
            out
        }
        Err(e) if e.kind() == ErrorKind::NotApplicable => Vec::new(),
        Err(e) => vec![reason("check-failed", format!("the {} check could not run: {e}", driver.name()))],
    }
}

/// What the disk can boot with.
#[derive(Debug, Default)]
struct Boot {
    /// An ESP holds the UEFI removable-media loader.
    uefi: bool,
    /// The MBR carries boot code.
    bios: bool,
    /// Why UEFI boot would not work, for the message.
    uefi_problem: Option<String>,
    /// The architecture of the removable-media loader found.
    arch: Option<Arch>,
}

/// The architecture whose removable-media loader (the one UEFI firmware starts from a
/// disk with no boot entries, as every freshly imported VM disk is: UEFI 2.10, 3.5.1.1)
/// the ESP holds: `EFI/BOOT/BOOTX64.EFI` or `EFI/BOOT/BOOTAA64.EFI`.
fn uefi_loader(esp: &Tree) -> Option<Arch> {
    Arch::ALL.into_iter().find(|a| has_file(esp, &a.efi().removable_path.split('/').collect::<Vec<_>>()))
}

/// The loaders [`uefi_loader`] looks for, for messages.
fn loader_names() -> String {
    Arch::ALL.iter().map(|a| a.efi().removable_path).collect::<Vec<_>>().join(" or ")
}

/// A partition table and a way to boot.
fn boot_rules(profile: Profile, disk: Arc<dyn BlockRead>) -> Result<Vec<Reason>> {
    let table = match read_table(disk.as_ref()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Ok(vec![reason(
                "no-partition-table",
                "the disk has no partition table (GPT or MBR), so firmware finds nothing to boot",
            )]);
        }
        Err(e) => return Ok(vec![reason("bad-partition-table", format!("the partition table cannot be read: {e}"))]),
    };
    let mut out = Vec::new();
    if profile.requires_uefi() && table.kind != TableKind::Gpt {
        out.push(reason(
            "not-gpt",
            format!("{} boots UEFI from GPT disks only; this one has an MBR table", profile.name()),
        ));
    }
    let mut boot = Boot { bios: has_mbr_boot_code(disk.as_ref())?, ..Boot::default() };
    let esps: Vec<_> = table.partitions.iter().filter(|p| p.known_type() == Some(PartType::Esp)).collect();
    if esps.is_empty() {
        boot.uefi_problem = Some(format!("no EFI System Partition (partitions: {})", table.listing()));
    }
    let mut kernel_found: Option<Tree> = None;
    for (what, found) in esp_trees(&disk, &esps) {
        match found.map(|tree| (uefi_loader(&tree), tree)) {
            Ok((Some(arch), tree)) => {
                boot.uefi = true;
                if kernel_found.is_none() {
                    kernel_found = Some(tree);
                    boot.arch = Some(arch);
                }
            }
            Ok((None, _)) => boot.uefi_problem = Some(format!("the ESP ({what}) has no {}", loader_names())),
            Err(e) => boot.uefi_problem = Some(format!("the ESP ({what}) holds no readable FAT filesystem: {e}")),
        }
    }
    let uefi_problem = boot.uefi_problem.unwrap_or_default();
    if profile.requires_uefi() && !boot.uefi {
        out.push(reason("no-uefi-loader", format!("{} boots UEFI only: {uefi_problem}", profile.name())));
    } else if !boot.uefi && !boot.bios {
        out.push(reason(
            "not-bootable",
            format!("nothing to boot: for UEFI, {uefi_problem}; for BIOS, the MBR has no boot code"),
        ));
    }
    if let Some(esp) = kernel_found {
        out.extend(kernel_rules(profile, boot.arch, &esp, &disk, &table));
    }
    Ok(out)
}

/// The guest architecture of a disk, read as `check --profile` reads it: the kernel the
/// ESP's systemd-boot entry starts (its PE or boot headers), else the ESP's
/// removable-media loader (`BOOTX64.EFI`, `BOOTAA64.EFI`), else a Discoverable
/// Partitions root type. `None`: nothing on the disk says (no readable partition table,
/// or none of these). `convert --profile kubevirt` names it in the containerDisk's config.
pub fn disk_arch(disk: Arc<dyn BlockRead>) -> Option<Arch> {
    let Ok(Some(table)) = read_table(disk.as_ref()) else { return None };
    let esps: Vec<_> = table.partitions.iter().filter(|p| p.known_type() == Some(PartType::Esp)).collect();
    for (_, tree) in esp_trees(&disk, &esps) {
        let Ok(esp) = tree else { continue };
        let kernel = loader_entry(&esp).and_then(|(linux, _)| esp_file(&esp, &linux));
        if let Some(arch) = kernel.as_ref().and_then(Arch::of_kernel).or_else(|| uefi_loader(&esp)) {
            return Some(arch);
        }
    }
    table.partitions.iter().find_map(|p| Arch::ALL.into_iter().find(|a| p.known_type() == Some(a.root_type())))
}

/// Each ESP's name for messages and its FAT tree (or why it cannot be read).
fn esp_trees(disk: &Arc<dyn BlockRead>, esps: &[&diskcast_part::Partition]) -> Vec<(String, Result<Tree>)> {
    esps.iter()
        .map(|p| {
            let what = format!("partition {} (esp)", p.number);
            let tree = PartitionView::new(disk.clone(), p.start, p.len, what.clone()).and_then(|v| {
                let opts = ReadOptions { label: what.clone(), ..ReadOptions::default() };
                diskcast_fat::FatReader.read(Arc::new(v), &opts)
            });
            (what, tree)
        })
        .collect()
}

/// `check --secure-boot`: whether firmware with Secure Boot enforced would start the
/// disk's boot chain: the ESP's `EFI/BOOT/BOOTX64.EFI` signed; with shim, the GRUB beside
/// it (`grubx64.efi`) signed; and the kernel that GRUB's configuration (under GRUB's
/// built-in prefix) or the systemd-boot entry starts from the ESP signed. Signatures are
/// Authenticode signatures in the PE certificate table
/// ([`diskcast_bootloader::authenticode`]); whether the firmware trusts their issuer is
/// its own call. A kernel not on the ESP is not judged.
pub fn secure_boot_rules(path: &Path, format: Option<&str>, ctx: &OpenContext<'_>) -> Result<Vec<Reason>> {
    use diskcast_bootloader::authenticode;
    use diskcast_bootloader::secure_boot as sb;
    ctx.lock(path)?;
    let src = diskcast_block::source::open_file(path)?;
    let driver = match format {
        Some(f) => ctx.registry.get(f)?,
        None => ctx.registry.probe_source(src.as_ref())?,
    };
    let disk: Arc<dyn BlockRead> = Arc::from(ctx.registry.open_source(src, Some(driver.name()), ctx)?);
    let Ok(Some(table)) = read_table(disk.as_ref()) else {
        return Ok(vec![reason("secure-boot-no-loader", "no partition table: nothing for UEFI firmware to start")]);
    };
    let esps: Vec<_> = table.partitions.iter().filter(|p| p.known_type() == Some(PartType::Esp)).collect();
    let Some((what, esp)) = esp_trees(&disk, &esps)
        .into_iter()
        .find_map(|(w, t)| t.ok().filter(|t| has_file(t, &UEFI_LOADER)).map(|t| (w, t)))
    else {
        return Ok(vec![reason(
            "secure-boot-no-loader",
            format!("no ESP holds {}: nothing for UEFI firmware to start", UEFI_LOADER.join("/")),
        )]);
    };
    let fix = "diskcast vm --secure-boot writes shim (signed by Microsoft), the distribution's signed GRUB and a \
               signed kernel";
    let unsigned = |code, name: &str, file: &diskcast_tree::FileData| -> Option<Reason> {
        let why = match authenticode::signatures(file) {
            Ok(s) if !s.is_empty() => return None,
            Ok(_) => "carries no Authenticode signature".to_string(),
            Err(e) => format!("has no valid Authenticode signature ({})", e.message()),
        };
        Some(reason(code, format!("{name} on the ESP ({what}) {why}: Secure Boot would refuse to start it; {fix}")))
    };
    let mut out = Vec::new();
    let loader = esp_file(&esp, &UEFI_LOADER.join("/")).unwrap_or_else(|| diskcast_tree::FileData::inline(Vec::new()));
    out.extend(unsigned("unsigned-loader", &UEFI_LOADER.join("/"), &loader));
    let grub_path = format!("/{}", sb::GRUB_ESP);
    let kernel = if let Some(grub) = esp_file(&esp, &grub_path) {
        out.extend(unsigned("unsigned-loader", sb::GRUB_ESP, &grub));
        sb::grub_prefix(&grub).ok().and_then(|prefix| esp_file(&esp, &format!("{prefix}/grub.cfg"))).and_then(|f| {
            let mut cfg = vec![0u8; usize::try_from(f.size).ok().filter(|&n| n <= GRUB_CFG_MAX)?];
            f.read_at(&mut cfg, 0).ok()?;
            grub_linux(&String::from_utf8_lossy(&cfg))
        })
    } else {
        loader_entry(&esp).map(|(linux, _)| linux)
    };
    if let Some(k) = kernel
        && let Some(file) = esp_file(&esp, &k)
    {
        out.extend(unsigned("unsigned-kernel", &format!("the kernel {k}"), &file));
    }
    Ok(out)
}

/// The kernel path of the first `linux` (or `linuxefi`) command of a GRUB script, quotes
/// removed.
fn grub_linux(cfg: &str) -> Option<String> {
    cfg.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        matches!(w.next(), Some("linux" | "linuxefi"))
            .then(|| w.next().map(|p| p.trim_matches(['\'', '"']).to_string()))?
    })
}

/// The kernel the ESP's systemd-boot entry starts, and whether it reaches the root disk
/// on the profile's buses: each bus's driver built in (the root filesystem's or the
/// initramfs's `modules.builtin`) or a module the initramfs carries.
fn kernel_rules(
    profile: Profile,
    loader_arch: Option<Arch>,
    esp: &Tree,
    disk: &Arc<dyn BlockRead>,
    table: &diskcast_part::Table,
) -> Vec<Reason> {
    use crate::drivers;
    let arch_rule = |arch: Arch| profile.check_arch(arch).err().map(|e| reason("architecture", e.message()));
    let Some((linux, initrd)) = loader_entry(esp) else { return loader_arch.and_then(arch_rule).into_iter().collect() };
    let Some(kernel) = esp_file(esp, &linux) else { return loader_arch.and_then(arch_rule).into_iter().collect() };
    let Some(arch) = Arch::of_kernel(&kernel).or(loader_arch) else { return Vec::new() };
    if let Some(r) = arch_rule(arch) {
        return vec![r];
    }
    let Some(version) = drivers::kernel_release(&kernel) else { return Vec::new() };
    let mut carried = Default::default();
    let mut builtin = None;
    let mut initrd_note = "no initramfs".to_string();
    if let Some(path) = &initrd {
        initrd_note = format!("initramfs {path}");
        match esp_file(esp, path).map(|f| drivers::initramfs_modules(&f, path)) {
            Some(Ok(m)) => {
                carried = m.modules;
                builtin = m.builtin;
            }
            Some(Err(e)) => {
                return vec![reason("initramfs-unreadable", format!("the initramfs {path}: {}", e.message()))];
            }
            None => return vec![reason("initramfs-missing", format!("the boot entry names {path}, not on the ESP"))],
        }
    }
    if builtin.is_none() {
        builtin = table
            .partitions
            .iter()
            .filter(|p| p.known_type() != Some(PartType::Esp))
            .filter_map(|p| {
                let what = format!("partition {}", p.number);
                let view = PartitionView::new(disk.clone(), p.start, p.len, what.clone()).ok()?;
                let opts = ReadOptions { label: what, ..ReadOptions::default() };
                let tree = diskcast_ext4::Ext4Reader.read(Arc::new(view), &opts).ok()?;
                drivers::tree_builtin(&tree, &version)
            })
            .next();
    }
    if builtin.is_none() {
        // What `vm` writes beside a kernel from the host booted with no initramfs.
        builtin = esp
            .read_optional(crate::ESP_BUILTIN.as_bytes(), drivers::INDEX_LIMIT)
            .ok()
            .flatten()
            .map(|text| drivers::builtin_names(&text));
    }
    let Some(builtin) = builtin else {
        return vec![reason(
            "kernel-drivers-unknown",
            format!(
                "cannot tell which disk drivers kernel {version} ({linux}, {initrd_note}) has: neither the initramfs \
                 nor a root filesystem holds lib/modules/{version}/modules.builtin; diskcast vm --modules DIR \
                 writes a disk that says"
            ),
        )];
    };
    let (groups, _) = drivers::buses(Some(profile), arch);
    let mut out = Vec::new();
    for group in groups {
        let lacking: Vec<String> = group
            .iter()
            .map(|bus| {
                let missing: Vec<&str> =
                    bus.modules().iter().copied().filter(|m| !builtin.contains(*m) && !carried.contains(*m)).collect();
                (bus, missing)
            })
            .filter(|(_, m)| !m.is_empty())
            .map(|(bus, m)| format!("{} needs {}", bus.name(), m.join(", ")))
            .collect();
        if lacking.len() == group.len() {
            out.push(reason(
                "bus-driver-missing",
                format!(
                    "{} attaches disks on {}, but kernel {version} ({linux}, {initrd_note}) has it neither built in \
                     nor in the initramfs ({}): the boot stops at \"Waiting for root device\"; diskcast vm \
                     --profile {} builds an initramfs that loads it",
                    profile.name(),
                    group.iter().map(|b| b.name()).collect::<Vec<_>>().join(" or "),
                    lacking.join("; "),
                    profile.name()
                ),
            ));
        }
    }
    out
}

/// The `linux` and `initrd` of the first systemd-boot entry (`loader/entries/*.conf`).
fn loader_entry(esp: &Tree) -> Option<(String, Option<String>)> {
    let dir = esp.resolve(b"/loader/entries", true).ok()?;
    let mut names: Vec<Vec<u8>> = esp.dir(dir).ok()?.entries().map(|(n, _)| n.to_vec()).collect();
    names.sort();
    names.into_iter().filter(|n| n.to_ascii_lowercase().ends_with(b".conf")).find_map(|n| {
        let path = [b"/loader/entries/".as_slice(), &n].concat();
        let text = esp.read(&path, 64 << 10).ok()?;
        let text = String::from_utf8_lossy(&text);
        let field = |k: &str| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(k)).then(|| w.next().map(str::to_string)).flatten()
            })
        };
        Some((field("linux")?, field("initrd")))
    })
}

/// A non-empty file of the ESP by a loader path (`/diskcast/vmlinuz`; FAT ignores case).
fn esp_file(esp: &Tree, path: &str) -> Option<diskcast_tree::FileData> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    if !has_file(esp, &parts) {
        return None;
    }
    let mut at = NodeId::ROOT;
    for name in &parts {
        at = esp.dir(at).ok()?.entries().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?.1;
    }
    esp.node(at).as_file().cloned()
}

/// True when the first 440 bytes (the boot code area before the disk signature and the
/// partition entries) hold anything and the sector carries the 55 AA signature.
fn has_mbr_boot_code(disk: &dyn BlockRead) -> Result<bool> {
    if disk.size() < 512 {
        return Ok(false);
    }
    let mut mbr = [0u8; 512];
    disk.read_at(&mut mbr, 0)?;
    Ok(mbr[510..] == [0x55, 0xaa] && mbr[..440].iter().any(|&b| b != 0))
}

/// True when `path` names a non-empty regular file of `tree`, its components compared
/// without regard to ASCII case (FAT names are case-insensitive).
fn has_file(tree: &Tree, path: &[&str]) -> bool {
    let mut at = NodeId::ROOT;
    for name in path {
        let Ok(dir) = tree.dir(at) else { return false };
        match dir.entries().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())) {
            Some((_, id)) => at = id,
            None => return false,
        }
    }
    matches!(&tree.node(at).kind, Kind::File(f) if f.size > 0)
}

/// Checks a KubeVirt containerDisk: `spec` names a container image (`oci:DIR:TAG`,
/// `oci-archive:FILE:TAG`, `docker-archive:`, `docker://`) whose root filesystem holds
/// one qcow2 or raw disk under `/disk/`, readable by the qemu user. The disk is copied
/// into an unnamed temporary file in `scratch` (a layer reads only front to back) and
/// checked like any other disk. `threads` layers are decoded at once.
pub fn check_container_disk(
    spec: &str,
    image: &diskcast_oci::OpenOptions,
    ctx: &OpenContext<'_>,
    scratch: &Path,
    threads: usize,
) -> Result<Vec<Reason>> {
    let img = diskcast_oci::open(spec, image)?;
    let tree = diskcast_oci::flatten(&img, threads)?.tree;
    let mut out = Vec::new();
    let Some(dir) = tree.lookup(NodeId::ROOT, b"disk").filter(|&id| tree.dir(id).is_ok()) else {
        out.push(reason(
            "no-disk-dir",
            "the image has no /disk directory; kubevirt boots the disk file under /disk/ (diskcast vm \
             --profile kubevirt SRC -o oci:DIR:TAG makes one)",
        ));
        return Ok(out);
    };
    let files: Vec<(String, NodeId)> = tree
        .dir(dir)?
        .entries()
        .filter(|(_, id)| matches!(tree.node(*id).kind, Kind::File(_)))
        .map(|(n, id)| (String::from_utf8_lossy(n).into_owned(), id))
        .collect();
    let (name, id) = match files.as_slice() {
        [one] => one.clone(),
        [] => {
            out.push(reason("no-disk", "/disk holds no disk file"));
            return Ok(out);
        }
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
            out.push(reason(
                "several-disks",
                format!("/disk holds several files ({}); kubevirt boots one", names.join(", ")),
            ));
            return Ok(out);
        }
    };
    let node = tree.node(id);
    let m = &node.meta;
    let readable =
        m.mode & 0o004 != 0 || (m.uid == QEMU_UID && m.mode & 0o400 != 0) || (m.gid == QEMU_UID && m.mode & 0o040 != 0);
    if !readable {
        out.push(reason(
            "disk-not-readable",
            format!(
                "/disk/{name} is mode {:04o} owned by {}:{}; the qemu user (107) cannot read it (kubevirt \
                 documents uid/gid 107, mode 0440)",
                m.mode, m.uid, m.gid
            ),
        ));
    }
    let Kind::File(data) = &node.kind else { return Ok(out) };
    let label = Path::new(spec).join("disk").join(&name);
    let mut reader = data.reader()?;
    let file: Source = Arc::new(diskcast_block::io::ImageFile::spool(&mut reader, scratch, &label)?);
    // Seen through a slice, the copy is not "a file on disk": a backing file the disk
    // names is refused rather than looked up beside a path that is not a directory.
    let len = file.len()?;
    let spooled: Source = Arc::new(diskcast_block::source::SliceSource::new(&label, file, 0, len)?);
    match ctx.registry.probe_source(spooled.as_ref()) {
        Ok(d) if matches!(d.name(), "qcow2" | "raw") => {
            out.extend(check_source(Profile::Kubevirt, spooled, Some(d.name()), ctx)?);
        }
        Ok(d) => out.push(reason("disk-format", format!("/disk/{name} is {}; kubevirt boots qcow2 or raw", d.name()))),
        Err(e) => out.push(reason("disk-format", format!("/disk/{name} is not a disk image kubevirt boots: {e}"))),
    }
    Ok(out)
}

/// Checks `image` against `profile`: a container image for kubevirt, a disk file for
/// every other profile. `threads` decode a container image's layers.
pub fn check_image(
    profile: Profile,
    image: &str,
    format: Option<&str>,
    oci: &diskcast_oci::OpenOptions,
    ctx: &OpenContext<'_>,
    threads: usize,
) -> Result<Vec<Reason>> {
    let is_image = diskcast_oci::is_image_ref(image);
    match (profile, is_image) {
        (Profile::Kubevirt, true) => check_container_disk(image, oci, ctx, &std::env::temp_dir(), threads),
        (Profile::Kubevirt, false) => Ok(vec![reason(
            "not-container-disk",
            "kubevirt takes a containerDisk, an OCI image (oci:DIR:TAG, oci-archive:FILE:TAG) holding the disk \
             under /disk/; diskcast vm --profile kubevirt SRC -o oci:DIR:TAG makes one",
        )]),
        (_, true) => {
            Ok(vec![reason("format", format!("{} takes a disk image file, not a container image", profile.name()))])
        }
        (_, false) => check_disk(profile, Path::new(image), format, ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_lookup_ignores_case_and_wants_a_file() {
        use diskcast_tree::{FileData, Meta, Node, Timestamp};
        let meta = Meta::new(0o755, Timestamp::default());
        let mut t = Tree::new(meta.clone());
        let d = t.create_dir_all(b"efi/Boot", &meta).unwrap();
        assert_eq!(uefi_loader(&t), None);
        t.insert(d, b"bootaa64.efi", Node::new(meta.clone(), Kind::File(FileData::inline(vec![1])))).unwrap();
        assert_eq!(uefi_loader(&t), Some(Arch::Arm64));
        assert!(!has_file(&t, &["EFI", "BOOT", "BOOTX64.EFI"]));
    }
}
