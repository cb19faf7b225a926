//! The whole `diskcast vm` plan: a root tree in, a bootable GPT disk out, as one
//! [`PlannedImage`] the copy engine writes into any format.
//!
//! Layout (partitions 1 MiB aligned): the ESP (FAT32: the loader at the removable-media
//! path, its configuration, the kernel and initramfs under `/diskcast/`), then the root
//! filesystem (ext4, the Discoverable Partitions root type of the disk's architecture,
//! named by PARTUUID on the kernel command line). A BIOS boot partition and MBR boot code
//! go in front for `--boot bios|hybrid` (x86-64 only).

use crate::kernel::{FoundKernel, describe, find_kernel};
use crate::{Arch, Profile};
use diskcast_block::provenance::Provenance;
use diskcast_block::size::human;
use diskcast_block::{BlockRead, Error, Result};
use diskcast_bootloader::grub_bios::{GrubBios, GrubModules};
use diskcast_bootloader::{BootEntry, secure_boot, systemd_boot};
use diskcast_ext4::Ext4Builder;
use diskcast_fat::FatBuilder;
use diskcast_part::compose::DiskComposer;
use diskcast_part::{ALIGN, DiskPlan, PartSpec, PartType, TableKind, Uuid};
use diskcast_tree::{BuildOptions, FileData, FsBuilder, HostFile, Meta, PlannedImage, Timestamp, Tree};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the kernel and initramfs go on the ESP, for every loader.
pub const ESP_KERNEL: &str = "/diskcast/vmlinuz";
/// See [`ESP_KERNEL`].
pub const ESP_INITRD: &str = "/diskcast/initrd.img";
/// The kernel's `modules.builtin` on the ESP, for a kernel from this machine (`--kernel`,
/// `--modules`) booted with no initramfs: neither the root filesystem nor an initramfs
/// says which drivers it has built in, and `check --profile` reads it here.
pub const ESP_BUILTIN: &str = "/diskcast/modules.builtin";

/// Smallest ESP written: FAT32 needs 65525 clusters, and some firmware refuses smaller
/// ESPs; 64 MiB leaves room for a kernel update.
const ESP_MIN: u64 = 64 << 20;
/// The BIOS boot partition for `--boot bios|hybrid`: 1 MiB, as grub-install wants it
/// (GRUB's core image with our modules is about 150 KiB).
const BIOS_BOOT_SIZE: u64 = 1 << 20;
/// The default virtual size of a disk in a sparse format (qcow2, vmdk, vhdx, vdi, dynamic
/// VHD): room to install software on a first boot, while the file holds only what is
/// written.
pub const SPARSE_MIN_SIZE: u64 = 8 << 30;
/// Bytes the backup GPT takes at the end of the disk.
const GPT_TAIL: u64 = 33 * 512;
/// The largest gzip-compressed kernel decompressed onto the ESP (UEFI starts only PE
/// images, and Ubuntu's arm64 `vmlinuz` is a gzip'd Image that GRUB unpacks itself):
/// uncompressed arm64 Images are 30-60 MiB.
const KERNEL_UNPACKED_MAX: u64 = 256 << 20;

/// How the disk boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootMode {
    /// UEFI: systemd-boot on the ESP.
    #[default]
    Uefi,
    /// Legacy BIOS: GRUB's i386-pc core image in a BIOS boot partition, boot code in the MBR.
    Bios,
    /// Both on one disk.
    Hybrid,
}

impl BootMode {
    /// The mode `--boot` names.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "uefi" | "efi" => Ok(BootMode::Uefi),
            "bios" | "legacy" => Ok(BootMode::Bios),
            "hybrid" => Ok(BootMode::Hybrid),
            _ => Err(Error::argument(format!("--boot {name:?}: uefi, bios or hybrid"))),
        }
    }

    /// The name `--boot` takes.
    pub fn name(self) -> &'static str {
        match self {
            BootMode::Uefi => "uefi",
            BootMode::Bios => "bios",
            BootMode::Hybrid => "hybrid",
        }
    }
}

/// What `diskcast vm` was asked for.
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Firmware the disk boots with.
    pub boot: BootMode,
    /// The guest's architecture (`--arch`, or the container image's); `None`: the
    /// kernel's, else this machine's.
    pub arch: Option<Arch>,
    /// A host kernel to boot instead of the image's.
    pub kernel: Option<PathBuf>,
    /// A host initramfs (with `kernel`, or instead of the image's).
    pub initrd: Option<PathBuf>,
    /// The kernel's `lib/modules/VERSION` directory on this machine (`--modules`).
    pub modules: Option<PathBuf>,
    /// Appended to the command line diskcast builds.
    pub cmdline: Option<String>,
    /// A systemd-boot binary to install instead of the image's or the host's.
    pub loader: Option<PathBuf>,
    /// Boot under Secure Boot: shim, signed GRUB and a signed kernel (see [`SecureChain`]).
    pub secure_boot: bool,
    /// With `secure_boot`: shim to install instead of the image's or the host's.
    pub shim: Option<PathBuf>,
    /// With `secure_boot`: the signed GRUB to install instead of the image's or the host's.
    pub grub_efi: Option<PathBuf>,
    /// The disk's size; `None`: the content plus headroom.
    pub disk_size: Option<u64>,
    /// Without `disk_size`: the smallest disk to write (a sparse format's default, so
    /// the guest has room; see [`SPARSE_MIN_SIZE`]).
    pub min_disk_size: Option<u64>,
    /// The platform the disk is for (size rounding, UEFI requirement).
    pub profile: Option<Profile>,
    /// How the guest is prepared to run as a VM.
    pub guest: crate::guest::GuestOptions,
}

impl VmOptions {
    /// Checks what can be checked before the source is read: the boot mode against the
    /// profile, the files named on the command line.
    pub fn validate(&self) -> Result<()> {
        // A hybrid disk boots UEFI too, so only a BIOS-only disk is refused.
        if let Some(p) = self.profile
            && p.requires_uefi()
            && self.boot == BootMode::Bios
        {
            return Err(Error::argument(format!(
                "--profile {} boots only UEFI guests; --boot bios cannot be used with it (uefi or hybrid can)",
                p.name()
            )));
        }
        if self.boot == BootMode::Bios && self.loader.is_some() {
            return Err(Error::argument(
                "--loader names a systemd-boot binary for UEFI; --boot bios installs GRUB (from the image's or this \
                 machine's /usr/lib/grub/i386-pc)",
            ));
        }
        if self.secure_boot && self.boot == BootMode::Bios {
            return Err(Error::argument(
                "--secure-boot is a UEFI feature; --boot bios disks boot without it (use --boot uefi or hybrid)",
            ));
        }
        if !self.secure_boot && (self.shim.is_some() || self.grub_efi.is_some()) {
            return Err(Error::argument("--shim and --grub-efi name the Secure Boot chain; add --secure-boot"));
        }
        if self.secure_boot && self.loader.is_some() && (self.shim.is_some() || self.grub_efi.is_some()) {
            return Err(Error::argument(
                "--loader (a signed systemd-boot the firmware starts itself) and --shim/--grub-efi (shim and GRUB) \
                 are two different Secure Boot chains; pass one",
            ));
        }
        if let Some(arch) = self.arch {
            self.check_arch(arch)?;
        }
        crate::guest::validate(&self.guest)?;
        for (p, what) in [
            (&self.kernel, "kernel (--kernel)"),
            (&self.initrd, "initramfs (--initrd)"),
            (&self.loader, "loader (--loader)"),
            (&self.shim, "shim (--shim)"),
            (&self.grub_efi, "GRUB (--grub-efi)"),
        ] {
            if let Some(p) = p {
                host_file(p, what)?;
            }
        }
        Ok(())
    }
}

impl VmOptions {
    /// What `arch` rules out: a profile whose platform does not run it, BIOS boot on
    /// anything but x86-64 (GRUB's i386-pc images are x86 code).
    fn check_arch(&self, arch: Arch) -> Result<()> {
        if let Some(p) = self.profile {
            p.check_arch(arch)?;
        }
        if arch != Arch::Amd64 && self.boot != BootMode::Uefi {
            return Err(Error::argument(format!(
                "--boot {} installs GRUB for PC BIOS, which only x86 machines have; {arch} disks boot UEFI \
                 (--boot uefi, the default)",
                self.boot.name()
            ))
            .with_field("arch"));
        }
        if arch != Arch::Amd64 && self.secure_boot && self.loader.is_none() {
            return Err(Error::argument(format!(
                "--secure-boot installs shim and GRUB for x86-64 (BOOTX64.EFI); for {arch} pass a signed \
                 systemd-boot with --loader, or drop --secure-boot"
            ))
            .with_field("arch"));
        }
        Ok(())
    }
}

/// One partition of the planned disk, for messages and `--output json`.
#[derive(Debug, Clone)]
pub struct PartSummary {
    /// 1-based number.
    pub number: u32,
    /// GPT name.
    pub name: String,
    /// GPT type GUID.
    pub type_guid: Uuid,
    /// Unique partition GUID.
    pub uuid: Uuid,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the filesystem is (`FAT32, 4096-byte clusters`).
    pub filesystem: String,
}

/// A planned bootable disk.
#[derive(Debug)]
pub struct VmDisk {
    /// The disk, ready for the copy engine.
    pub image: PlannedImage,
    /// The partition table's layout.
    pub plan: DiskPlan,
    /// Every partition.
    pub partitions: Vec<PartSummary>,
    /// What the loaders boot.
    pub entry: BootEntry,
    /// Which kernel and initramfs, from where.
    pub kernel: String,
    /// The kernel's path (in the image, or on the host with `--kernel`).
    pub kernel_path: String,
    /// Its release, when the file name says it.
    pub kernel_version: Option<String>,
    /// The initramfs's path, if any.
    pub initrd_path: Option<String>,
    /// Where the UEFI loader came from.
    pub loader: String,
    /// With `--secure-boot`: each signed file of the boot chain, where it came from, where
    /// it went and who signed it, one line each.
    pub secure_boot: Vec<String>,
    /// The guest's architecture.
    pub arch: Arch,
    /// What was changed in the guest, one line each.
    pub guest_changes: Vec<String>,
    /// How the root grows to the disk on first boot (`systemd-repart`, `none (why)`).
    pub first_boot_growth: String,
    /// The bus drivers the kernel has and where from, one line each.
    pub drivers: Vec<String>,
    /// Entries a filesystem could not store, one line each.
    pub warnings: Vec<String>,
}

/// The kernel command line: the root partition by PARTUUID, the architecture's serial
/// console last (so `/dev/console`, where init and systemd write, is the serial port
/// every platform's console log shows), then the user's `extra`.
pub fn cmdline(root: Uuid, arch: Arch, extra: Option<&str>) -> String {
    let mut s =
        format!("root=PARTUUID={root} rootfstype=ext4 rootwait rw console=tty0 console={}", arch.serial_console());
    if let Some(e) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        s.push(' ');
        s.push_str(e);
    }
    s
}

/// A regular file of the host as tree content (read when the disk is written).
pub fn host_file(path: &Path, what: &str) -> Result<FileData> {
    let md = std::fs::metadata(path).map_err(|e| Error::io(format!("cannot open the {what}"), e).with_file(path))?;
    if !md.is_file() || md.len() == 0 {
        return Err(Error::argument(format!("the {what} must be a non-empty regular file")).with_file(path));
    }
    Ok(FileData::host(HostFile::open_path(path)?))
}

/// The kernel and initramfs to boot: given on the command line, or found in the tree.
fn choose_kernel(tree: &Tree, opts: &VmOptions) -> Result<FoundKernel> {
    let initrd =
        opts.initrd.as_deref().map(|p| host_file(p, "initramfs (--initrd)").map(|f| (show(p), f))).transpose()?;
    if let Some(k) = &opts.kernel {
        // A kernel package's file name says its release (`vmlinuz-6.1.0-57-cloud-arm64`).
        let named = k.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-"));
        return Ok(FoundKernel {
            version: named.filter(|v| !v.is_empty()).map(str::to_string),
            kernel_path: show(k),
            kernel: host_file(k, "kernel (--kernel)")?,
            initrd,
            builtin: None,
        });
    }
    let mut found = find_kernel(tree).ok_or_else(|| {
        Error::argument(
            "no kernel in the image; pass --kernel (looked for /boot/vmlinuz-*, /usr/lib/modules/*/vmlinuz and /vmlinuz)",
        )
    })?;
    if initrd.is_some() {
        found.initrd = initrd;
    }
    Ok(found)
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The systemd-boot binary for `arch`: `--loader`, else the image's, else the host's.
fn choose_loader(tree: &Tree, explicit: Option<&Path>, arch: Arch) -> Result<(FileData, String)> {
    if let Some(p) = explicit {
        let f = host_file(p, "loader (--loader)")?;
        check_pe(&f, &show(p), arch)?;
        return Ok((f, show(p)));
    }
    let path = arch.efi().systemd_boot;
    if let Ok(id) = tree.resolve(path.as_bytes(), true)
        && let Some(f) = tree.node(id).as_file().filter(|f| f.size > 0)
    {
        let what = format!("the image's {path}");
        check_pe(f, &what, arch)?;
        return Ok((f.clone(), what));
    }
    let host = Path::new(path);
    if host.is_file() {
        let f = host_file(host, "host's systemd-boot")?;
        let what = format!("this machine's {path}");
        check_pe(&f, &what, arch)?;
        return Ok((f, what));
    }
    let package = systemd_boot::PACKAGE;
    let fix = if Some(arch) == Arch::host() {
        format!("install Debian's {package} package (apt install {package})")
    } else {
        format!(
            "install {package} in the image (Debian's {package} for {arch}), or pass --loader PATH (a \
             systemd-boot{}.efi, e.g. from that package unpacked with dpkg-deb -x)",
            arch.efi().name
        )
    };
    Err(Error::unsupported(format!(
        "no {arch} systemd-boot to install: neither the image nor this machine has {path}; {fix} or pass --loader PATH"
    )))
}

/// A UEFI application for `arch`: a PE image (`MZ`, then `PE\0\0`) of the
/// architecture's machine type, so a loader of the wrong architecture (which the
/// firmware would skip, booting nothing) is refused here. `what` names it.
fn check_pe(f: &FileData, what: &str, arch: Arch) -> Result<()> {
    if f.size < 64 {
        return Err(Error::invalid(format!("the loader {what} is too small to be a UEFI application")));
    }
    let mut head = vec![0u8; usize::try_from(f.size.min(4096)).unwrap_or(4096)];
    f.read_at(&mut head, 0)?;
    let want = arch.efi().pe_machine;
    match crate::arch::pe_machine(&head) {
        Some(m) if m == want => Ok(()),
        Some(m) => {
            let name = diskcast_bootloader::EfiArch::ALL.iter().find(|e| e.pe_machine == m).map(|e| e.name);
            Err(Error::invalid(format!(
                "the loader {what} is a UEFI application for {} (PE machine {m:#06x}), not {} ({want:#06x}) as \
                 an {arch} disk needs",
                name.unwrap_or("another architecture"),
                arch.efi().name
            )))
        }
        None => Err(Error::invalid(format!("the loader {what} is not a UEFI application (no MZ/PE header)"))),
    }
}

/// The kernel for `arch`: its headers must not say another architecture; a gzip'd one
/// (Ubuntu's arm64 `vmlinuz`) is decompressed, since firmware and systemd-boot start
/// only PE images. Returns the architecture the kernel says, if any.
fn check_kernel(kernel: &mut FoundKernel, arch: Option<Arch>, warnings: &mut Vec<String>) -> Result<Option<Arch>> {
    let mut magic = [0u8; 2];
    if kernel.kernel.size >= 2 {
        kernel.kernel.read_at(&mut magic, 0)?;
    }
    if magic == [0x1f, 0x8b] {
        let mut out = Vec::new();
        let read = std::io::Read::read_to_end(
            &mut std::io::Read::take(
                flate2::read::GzDecoder::new(kernel.kernel.reader()?),
                KERNEL_UNPACKED_MAX.saturating_add(1),
            ),
            &mut out,
        );
        read.map_err(|e| Error::io(format!("cannot decompress the gzip'd kernel {}", kernel.kernel_path), e))?;
        if diskcast_layout::u64_from_usize(out.len()) > KERNEL_UNPACKED_MAX {
            return Err(Error::refused(format!(
                "the gzip'd kernel {} decompresses to more than {} (KERNEL_UNPACKED_MAX)",
                kernel.kernel_path,
                human(KERNEL_UNPACKED_MAX)
            )));
        }
        kernel.kernel = FileData::inline(out);
        kernel.kernel_path = format!("{} (gunzipped)", kernel.kernel_path);
    }
    let found = Arch::of_kernel(&kernel.kernel);
    match (arch, found) {
        (Some(want), Some(is)) if want != is => Err(Error::refused(format!(
            "the kernel {} is an {is} kernel, but the disk is for {want}: pass --arch {is}, or a kernel for \
             {want} (--kernel)",
            kernel.kernel_path
        ))
        .with_field("arch")),
        (_, None) => {
            warnings.push(format!(
                "{}: neither an EFI-stub (PE) kernel nor an x86 bzImage or arm64 Image: its architecture is not \
                 checked, and UEFI may not start it",
                kernel.kernel_path
            ));
            Ok(None)
        }
        (_, found) => Ok(found),
    }
}

/// The UEFI side of the disk.
#[derive(Debug)]
enum UefiLoader {
    /// systemd-boot (or a `--loader`) at the removable-media path, with its entry.
    SystemdBoot(FileData),
    /// `--secure-boot`: shim, signed GRUB, MokManager and GRUB's configuration.
    Shim(Box<crate::secure_boot::ShimChain>),
}

/// The ESP's tree: the UEFI loader and its configuration (none for BIOS-only disks),
/// kernel and initramfs.
fn esp_tree(loader: Option<UefiLoader>, arch: Arch, entry: &BootEntry, kernel: &FoundKernel, now: i64) -> Result<Tree> {
    let mut t = Tree::new(Meta::new(0o755, Timestamp::from_secs(now)));
    let exe = || Meta::new(0o755, Timestamp::from_secs(now));
    let removable = format!("/{}", arch.efi().removable_path);
    let mut config = Vec::new();
    match loader {
        Some(UefiLoader::SystemdBoot(f)) => {
            t.put_file(removable.as_bytes(), f, exe())?;
            config = systemd_boot::config_files(entry)?;
        }
        Some(UefiLoader::Shim(c)) => {
            let c = *c;
            t.put_file(removable.as_bytes(), c.shim.data, exe())?;
            t.put_file(format!("/{}", secure_boot::GRUB_ESP).as_bytes(), c.grub.data, exe())?;
            if let Some(m) = c.mok_manager {
                t.put_file(format!("/{}", secure_boot::MOK_MANAGER_ESP).as_bytes(), m.data, exe())?;
            }
            config.push(secure_boot::config_file(&c.prefix, entry)?);
        }
        None => {}
    }
    for (path, bytes) in config {
        t.put_file(
            format!("/{path}").as_bytes(),
            FileData::inline(bytes),
            Meta::new(0o644, Timestamp::from_secs(now)),
        )?;
    }
    t.put_file(ESP_KERNEL.as_bytes(), kernel.kernel.clone(), Meta::new(0o644, Timestamp::from_secs(now)))?;
    if let Some((_, f)) = &kernel.initrd {
        t.put_file(ESP_INITRD.as_bytes(), f.clone(), Meta::new(0o644, Timestamp::from_secs(now)))?;
    }
    if let Some(f) = &kernel.builtin {
        t.put_file(ESP_BUILTIN.as_bytes(), f.clone(), Meta::new(0o644, Timestamp::from_secs(now)))?;
    }
    Ok(t)
}

/// The ESP's size for `content` bytes of files: room for a kernel update, whole MiB.
fn esp_size(content: u64) -> u64 {
    let want = content.saturating_add(content / 4).saturating_add(16 << 20);
    want.max(ESP_MIN).next_multiple_of(ALIGN)
}

/// Plans the bootable disk holding `tree`. Nothing is read from the files' sources but
/// small configuration files; nothing is written.
pub fn plan(mut tree: Tree, opts: &VmOptions, prov: &Provenance, seed: &str) -> Result<VmDisk> {
    opts.validate()?;
    let now = i64::try_from(prov.now()).unwrap_or(i64::MAX);
    let id = |what: &str| prov.uuid("vm", format!("{seed} {what}").as_bytes(), None);
    let (disk_guid, esp_uuid, root_uuid) = (id("disk"), id("esp partition"), id("root partition"));

    let mut kernel = choose_kernel(&tree, opts)?;
    let mut warnings = Vec::new();
    let arch = match check_kernel(&mut kernel, opts.arch, &mut warnings)?.or(opts.arch) {
        Some(a) => a,
        None => Arch::host().unwrap_or(Arch::Amd64),
    };
    opts.check_arch(arch)?;
    let uefi = opts.boot != BootMode::Bios;
    let mut secure = Vec::new();
    let (loader, mut loader_from) = match (uefi, opts.secure_boot, opts.loader.as_deref()) {
        (false, _, _) => (None, String::new()),
        (true, false, _) => choose_loader(&tree, opts.loader.as_deref(), arch)
            .map(|(f, from)| (Some(UefiLoader::SystemdBoot(f)), from))?,
        (true, true, Some(path)) => {
            let (f, _) = choose_loader(&tree, Some(path), arch)?;
            let l = crate::secure_boot::signed_loader(f, path)?;
            secure.push(format!("loader {} -> {}, signed by {}", l.from, arch.efi().removable_path, l.issuers));
            (Some(UefiLoader::SystemdBoot(l.data)), format!("{} (signed)", l.from))
        }
        (true, true, None) => {
            let chain = crate::secure_boot::shim_chain(&tree, opts, &mut warnings)?;
            secure.extend(chain.describe());
            let from = format!("{} (shim) and {} (signed GRUB)", chain.shim.from, chain.grub.from);
            (Some(UefiLoader::Shim(Box::new(chain))), from)
        }
    };
    if opts.secure_boot {
        secure.push(crate::secure_boot::check_kernel(&kernel.kernel, &kernel.kernel_path)?);
    }
    let ids = crate::guest::Ids { root: root_uuid, esp: esp_uuid, root_type: arch.root_type() };
    let root_fs_id = *id("root filesystem").as_bytes();
    let drivers = ensure_drivers(&tree, opts, arch, &mut kernel, &root_fs_id, now, &mut warnings)?;
    let prepared = crate::guest::prepare(&mut tree, &opts.guest, &ids, now)?;
    let mut extra = prepared.cmdline.join(" ");
    if let Some(user) = opts.cmdline.as_deref() {
        extra = format!("{extra} {user}");
    }
    let entry = BootEntry {
        title: "diskcast".into(),
        kernel: ESP_KERNEL.into(),
        initrd: kernel.initrd.as_ref().map(|_| ESP_INITRD.to_string()),
        cmdline: cmdline(root_uuid, arch, Some(&extra)),
    };
    // --boot bios|hybrid: GRUB's core image (built from the image's GRUB modules when it
    // has them, else the host's) for a BIOS boot partition in front of the ESP, which is
    // then partition 2.
    let grub = match opts.boot {
        BootMode::Uefi => None,
        BootMode::Bios | BootMode::Hybrid => {
            let modules = GrubModules::find(Some(&tree))?;
            let grub = GrubBios::build(&modules, 2, &entry)?;
            let from = format!("{} (GRUB i386-pc)", modules.origin);
            loader_from = if loader_from.is_empty() { from } else { format!("{loader_from} and {from}") };
            Some(grub)
        }
    };

    let mut disk = DiskComposer::new(TableKind::Gpt);
    let mut descs = Vec::new();
    if let Some(grub) = &grub {
        let start = disk.next_start();
        let installed = grub.install(start / 512, BIOS_BOOT_SIZE)?;
        disk.set_boot_code(&installed.mbr_code);
        let len = installed.core.len() as u64;
        let mut core = PlannedImage::new(len, "GRUB core image");
        core.place_bytes(0, installed.core)?;
        let core: Arc<dyn BlockRead> = Arc::new(core.seal()?);
        let uuid = id("bios boot partition");
        disk.push(
            PartSpec {
                name: "bios".into(),
                kind: PartType::BiosBoot,
                size: BIOS_BOOT_SIZE,
                uuid,
                bootable: false,
                mbr_id: None,
            },
            Some(core),
        )?;
        descs.push(format!("GRUB i386-pc core image, {} KiB", len.div_ceil(1024)));
    }

    let esp = esp_tree(loader, arch, &entry, &kernel, now)?;
    let esp_bytes = esp.stats().file_bytes;
    let esp_start = disk.next_start();
    let esp_opts = BuildOptions {
        size: Some(esp_size(esp_bytes)),
        label: Some("ESP".into()),
        now,
        id: *id("esp filesystem").as_bytes(),
        disk_offset: esp_start,
        variant: Some("fat32".into()),
    };
    let esp_fs = FatBuilder::FAT32.plan(&esp, &esp_opts)?;
    warnings.extend(esp_fs.warnings.iter().map(|w| format!("ESP: {w}")));
    let esp_len = esp_fs.image.size();
    let esp_desc = esp_fs.description.clone();
    let esp_img: Arc<dyn BlockRead> = Arc::new(esp_fs.image);
    disk.push(
        PartSpec {
            name: "esp".into(),
            kind: PartType::Esp,
            size: esp_len,
            uuid: esp_uuid,
            bootable: false,
            mbr_id: None,
        },
        Some(esp_img),
    )?;

    let root_start = disk.next_start();
    let disk_size = opts.disk_size.map(|s| opts.profile.map_or(s, |p| p.disk_size(s)));
    let root_size = match disk_size {
        Some(s) => {
            let room = s.checked_sub(root_start + GPT_TAIL).filter(|r| *r >= ALIGN).ok_or_else(|| {
                Error::argument(format!(
                    "--size {}: too small; the partitions before the root one take {} of the disk",
                    human(s),
                    human(root_start + GPT_TAIL)
                ))
            })?;
            Some(room / 4096 * 4096)
        }
        None => None,
    };
    let root_opts = BuildOptions {
        size: root_size,
        label: Some("root".into()),
        now,
        id: root_fs_id,
        disk_offset: root_start,
        variant: None,
    };
    let mut root_fs = Ext4Builder.plan(&tree, &root_opts).map_err(|e| match (root_size, disk_size) {
        (Some(r), Some(s)) => {
            Error::new(e.kind(), format!("--size {}: the root partition gets {}: {}", human(s), human(r), e.message()))
        }
        _ => e,
    })?;
    let mut disk_size = disk_size;
    // A sparse format's disk is at least `min_disk_size`: the root filesystem takes the
    // room (only its metadata is written, so the file stays small).
    if disk_size.is_none()
        && let Some(min) = opts.min_disk_size
        && let Some(room) = min.checked_sub(root_start + GPT_TAIL).map(|r| r / 4096 * 4096)
        && room > root_fs.image.size()
    {
        root_fs = Ext4Builder.plan(&tree, &BuildOptions { size: Some(room), ..root_opts.clone() })?;
        disk_size = Some(min);
    }
    // gce takes only whole GiB: without --size the root grows to the next GiB boundary, so
    // the backup GPT stays at the disk's end.
    if disk_size.is_none()
        && opts.profile == Some(crate::Profile::Gce)
        && let Some(need) = root_start.checked_add(root_fs.image.size()).and_then(|n| n.checked_add(GPT_TAIL))
    {
        let want = crate::Profile::Gce.disk_size(need);
        let room = (want - root_start - GPT_TAIL) / 4096 * 4096;
        root_fs = Ext4Builder.plan(&tree, &BuildOptions { size: Some(room), ..root_opts })?;
        disk_size = Some(want);
    }
    warnings.extend(root_fs.warnings.iter().map(|w| format!("root: {w}")));
    let root_len = root_fs.image.size();
    let root_desc = root_fs.description.clone();
    let root_img: Arc<dyn BlockRead> = Arc::new(root_fs.image);
    disk.push(
        PartSpec {
            name: "root".into(),
            kind: arch.root_type(),
            size: root_len,
            uuid: root_uuid,
            bootable: false,
            mbr_id: None,
        },
        Some(root_img),
    )?;

    let composed = disk.finish(disk_size, disk_guid)?;
    descs.extend([esp_desc, root_desc]);
    let partitions = composed
        .plan
        .parts
        .iter()
        .zip(descs)
        .map(|(p, fs)| PartSummary {
            number: p.number,
            name: p.spec.name.clone(),
            type_guid: p.spec.kind.guid(),
            uuid: p.spec.uuid,
            start: p.start,
            size: p.len,
            filesystem: fs,
        })
        .collect();
    Ok(VmDisk {
        image: composed.image,
        plan: composed.plan,
        partitions,
        entry,
        kernel: describe(&kernel),
        kernel_path: kernel.kernel_path.clone(),
        kernel_version: kernel.version.clone(),
        initrd_path: kernel.initrd.as_ref().map(|(p, _)| p.clone()),
        loader: loader_from,
        secure_boot: secure,
        arch,
        guest_changes: prepared.changes,
        first_boot_growth: prepared.first_boot_growth,
        drivers,
        warnings,
    })
}

/// Makes sure the kernel can reach the root disk on the buses the target uses: reads
/// which drivers it has built in and which modules the initramfs carries, and when one
/// is missing builds an initramfs that loads them (replacing the image's), or refuses
/// naming the driver. Returns one line per finding; what cannot be told is a warning.
fn ensure_drivers(
    tree: &Tree,
    opts: &VmOptions,
    arch: Arch,
    kernel: &mut FoundKernel,
    root_fs_id: &[u8; 16],
    now: i64,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    use crate::drivers::{self, KernelModules, ModulesDir};
    let mut out = Vec::new();
    let Some(version) = kernel.version.clone().or_else(|| drivers::kernel_release(&kernel.kernel)) else {
        warnings
            .push(format!("{}: no kernel release in its name or header: bus drivers not checked", kernel.kernel_path));
        return Ok(out);
    };
    let dir = if let Some(d) = &opts.modules {
        let d = if d.join("modules.builtin").is_file() { d.clone() } else { d.join(&version) };
        if !d.is_dir() {
            return Err(Error::argument(format!(
                "--modules {}: neither it nor {} holds modules.builtin of kernel {version}",
                opts.modules.as_deref().map(show).unwrap_or_default(),
                show(&d)
            )));
        }
        Some(ModulesDir::Host(d))
    } else if let Some(k) = &opts.kernel {
        drivers::beside(k, &version).map(ModulesDir::Host)
    } else {
        ["/lib/modules", "/usr/lib/modules"]
            .iter()
            .map(|b| format!("{b}/{version}"))
            .find(|p| tree.resolve(p.as_bytes(), true).is_ok_and(|id| tree.node(id).as_dir().is_some()))
            .map(|p| ModulesDir::Tree(tree, p))
    };
    let Some(dir) = dir else {
        warnings.push(format!(
            "kernel {version}: no lib/modules/{version} found (in the image, beside --kernel or by --modules DIR): \
             cannot tell which bus drivers it has; the disk may boot only on a bus whose driver is built in"
        ));
        return Ok(out);
    };
    let k = match KernelModules::load(&version, dir) {
        Ok(k) => k,
        Err(e) if e.kind() == diskcast_block::ErrorKind::NotApplicable => {
            warnings.push(format!("kernel {version}: {}", e.message()));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    let carried = match &kernel.initrd {
        Some((path, data)) => match drivers::initramfs_modules(data, path) {
            Ok(m) => m.modules,
            Err(e) => {
                warnings.push(format!("{}; its drivers were not checked, it is kept as it is", e.message()));
                return Ok(out);
            }
        },
        None => Default::default(),
    };
    let (groups, strict) = drivers::buses(opts.profile, arch);
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for group in groups {
        let mut absent = Vec::new();
        let mut found = None;
        for &bus in group {
            match drivers::bus_needs(&k, bus, &carried) {
                Ok(need) => {
                    found = Some((bus, need));
                    break;
                }
                Err(driver) => absent.push(format!("{} (driver {driver})", bus.name())),
            }
        }
        match found {
            Some(f) => chosen.push(f),
            None => missing.push(absent.join(" or ")),
        }
    }
    let target = opts.profile.map_or("a plain disk".to_string(), |p| format!("--profile {}", p.name()));
    if !missing.is_empty() && (strict || chosen.is_empty()) {
        return Err(Error::refused(format!(
            "kernel {version} ({}) cannot boot {target} on {}: the driver is neither built in nor a module; \
             use a kernel that has it (--kernel PATH --modules DIR, e.g. Debian's linux-image-{arch})",
            k.origin(),
            missing.join(", ")
        )));
    }
    for m in &missing {
        warnings.push(format!("kernel {version} has no driver for {m}: the disk will not boot on that bus"));
    }
    let mut need: Vec<String> = chosen.iter().flat_map(|(_, n)| n.clone()).collect();
    let root_missing: Vec<&str> = drivers::ROOT_FS_MODULES
        .iter()
        .copied()
        .filter(|m| k.driver(m) == drivers::Driver::Module && !carried.contains(*m))
        .collect();
    need.extend(root_missing.iter().map(|m| m.to_string()));
    let names: Vec<&str> = chosen.iter().map(|(b, _)| b.name()).collect();
    if need.is_empty() {
        // Booted with no initramfs and the kernel's index from this machine: the disk
        // itself would not say what is built in, so its modules.builtin goes on the ESP.
        if kernel.initrd.is_none() && k.is_host() {
            kernel.builtin = k.builtin_file()?.map(FileData::inline);
        }
        out.push(format!("kernel {version} drives {} (built in or in the initramfs)", names.join(", ")));
        return Ok(out);
    }
    need.sort();
    need.dedup();
    if let Some(p) = &opts.initrd {
        return Err(Error::refused(format!(
            "the initramfs {} lacks {} that kernel {version} needs for {}; drop --initrd and diskcast builds one",
            show(p),
            need.join(", "),
            names.join(", ")
        )));
    }
    let mut wanted: Vec<&str> = chosen.iter().flat_map(|(b, _)| b.modules().iter().copied()).collect();
    wanted.extend(drivers::root_fs_modules(&k));
    let modules = k.closure(&wanted)?;
    let (busybox, busybox_from) = drivers::find_busybox(tree, arch)?;
    let uuid: String = root_fs_id.iter().map(|b| format!("{b:02x}")).collect();
    let spec = drivers::InitSpec {
        root_uuid: format!("{}-{}-{}-{}-{}", &uuid[..8], &uuid[8..12], &uuid[12..16], &uuid[16..20], &uuid[20..]),
        root_options: "rw,relatime".into(),
    };
    let mtime = u32::try_from(now.max(0)).unwrap_or(u32::MAX);
    let bytes = drivers::build_initramfs(&k, &modules, &busybox, &spec, mtime)?;
    let replaced = kernel.initrd.as_ref().map(|(p, _)| format!(", instead of {p}")).unwrap_or_default();
    let list: Vec<String> = modules.iter().filter_map(|(p, _)| drivers::module_name(p)).collect();
    out.push(format!(
        "initramfs built{replaced}: {} lacked {}; it loads {} from {} with {busybox_from} as init ({} bytes)",
        if kernel.initrd.is_some() { "the initramfs" } else { "there was no initramfs and the kernel" },
        need.join(", "),
        list.join(", "),
        k.origin(),
        bytes.len()
    ));
    kernel.initrd = Some(("built by diskcast".into(), FileData::inline(bytes)));
    Ok(out)
}
