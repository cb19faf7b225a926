//! A multi-boot stick: several ISOs stored unchanged on a data partition, and a GRUB
//! menu (UEFI and BIOS) booting each by `loopback` with the kernel arguments its family
//! needs ([`crate::family`]).
//!
//! The disk (GPT, protective MBR, as the fat32 mode makes it):
//! 1. `boot`: FAT32, ESP type: `EFI/BOOT/BOOTX64.EFI` (the host's GRUB x86_64-efi, built
//!    by `grub-mkimage`) and `boot/grub/grub.cfg`, the menu;
//! 2. `data`: FAT32 when every ISO fits in a FAT file (Linux initramfs images carry the
//!    vfat driver more often than exFAT's), else exFAT (or as `--data-fs` says), holding
//!    `isos/NAME.iso`, each the ISO's bytes by reference;
//! 3. `bios`: GRUB i386-pc's core image (boot.img's code in the MBR), reading the same
//!    `grub.cfg`, as the fat32 mode installs it ([`crate::bios`]).
//!
//! Every ISO's family is settled before anything is planned: an ISO of no family
//! diskcast boots from a file is an error naming it, never a menu entry that fails.

use crate::family::{self, Family, Place};
use crate::{BootReport, FAT_MAX_FILE, Mode, PartReport, StickDisk, UsbStick, stick_id};
use diskcast_block::size::human;
use diskcast_block::{BlockRead, Error, ErrorKind, Result};
use diskcast_bootloader::grub_bios::{GrubBios, GrubModules, quote};
use diskcast_part::{ALIGN, PartType};
use diskcast_tree::{BuildOptions, Content, FileData, FileExtent, Meta, Timestamp, Tree};
use serde::Serialize;
use std::sync::Arc;

/// Most ISOs on one stick: a menu longer than this no longer fits a screen, and each
/// ISO is read and inspected before writing.
pub const MAX_ISOS: usize = 64;
/// Longest file name kept for an ISO on the stick (FAT and exFAT take 255 characters;
/// GRUB's menu shows far fewer).
const MAX_NAME: usize = 128;
/// Where the ISOs are on the data partition: one level down, where Debian's `iso-scan`
/// looks too.
pub const ISO_DIR: &str = "isos";
/// The menu's path on the boot partition (GRUB's prefix is its `boot/grub`).
pub const MENU_PATH: &str = "/boot/grub/grub.cfg";
/// GRUB's prefix: partition 1 (the boot partition) of the disk the firmware started.
pub const PREFIX: &str = "(,gpt1)/boot/grub";
/// Longest `--timeout`: GRUB reads `timeout` into a C `int`; a day is far beyond any use.
pub const MAX_TIMEOUT: u64 = 86_400;
/// The boot partition's label.
const BOOT_LABEL: &str = "DISKCAST";
/// The data partition's label when `--label` gives none.
pub const DATA_LABEL: &str = "MULTIBOOT";
/// Modules in both GRUB images: the partition tables and filesystems of the stick and
/// the ISOs, `loopback`, the menu and its commands, Linux.
const MODULES: [&str; 26] = [
    "part_gpt",
    "part_msdos",
    "fat",
    "exfat",
    "iso9660",
    "udf",
    "loopback",
    "normal",
    "configfile",
    "linux",
    "boot",
    "chain",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "test",
    "echo",
    "serial",
    "terminal",
    "regexp",
    "ls",
    "cat",
    "halt",
    "reboot",
    "sleep",
];
/// Modules of the BIOS image only.
const BIOS_MODULES: [&str; 2] = ["biosdisk", "linux16"];
/// Modules of the UEFI image only: the firmware's graphics (GOP, UGA) and the video modes GRUB
/// hands to the kernel (without them it boots Linux "in blind mode", no framebuffer).
const EFI_MODULES: [&str; 1] = ["all_video"];

/// The data partition's filesystem (`--data-fs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFs {
    /// FAT32 when every ISO fits in a FAT file, else exFAT.
    Auto,
    Fat32,
    Exfat,
}

impl DataFs {
    /// `auto`, `fat32` or `exfat`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DataFs::Auto),
            "fat32" => Ok(DataFs::Fat32),
            "exfat" => Ok(DataFs::Exfat),
            other => Err(Error::argument(format!("--data-fs {other:?}: expected auto, fat32 or exfat"))),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct MultiOptions {
    /// `--label`: the data partition's label ([`DATA_LABEL`] by default).
    pub label: Option<String>,
    /// `--size`: the stick's size; the data partition takes what the others leave.
    pub size: Option<u64>,
    /// `--default`: the entry booted without input, 1-based.
    pub default: usize,
    /// `--timeout`: seconds before it boots.
    pub timeout: u64,
    /// `--data-fs`.
    pub data_fs: DataFs,
    /// Installs GRUB i386-pc for BIOS boot.
    pub bios_grub: bool,
}

/// One ISO given.
#[derive(Debug)]
pub struct IsoInput {
    /// The ISO (any block format).
    pub disc: Arc<dyn BlockRead>,
    /// Its path, for messages.
    pub name: String,
    /// Its file name (the name it gets on the stick, made safe).
    pub file_name: String,
}

/// One entry of the menu, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct MenuReport {
    /// 1-based, as `--default` counts.
    pub number: usize,
    /// The ISO given.
    pub iso: String,
    /// Its path on the data partition.
    pub path: String,
    pub family: Family,
    /// The menu entry's title.
    pub title: String,
    /// Where the kernel and its arguments come from.
    pub from: String,
}

/// `name` as a file name that FAT, exFAT, GRUB scripts and kernel command lines take
/// as it is: ASCII letters, digits, `.`, `-`, `_`, `+`; anything else becomes `_`.
/// Ends in `.iso`.
pub fn stick_name(name: &str) -> Result<String> {
    let mut n: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-+".contains(c) { c } else { '_' }).collect();
    if !n.to_ascii_lowercase().ends_with(".iso") {
        n.push_str(".iso");
    }
    let n = n.trim_start_matches('.').to_string();
    if n.len() > MAX_NAME || n.len() <= ".iso".len() {
        return Err(Error::argument(format!(
            "{name:?}: an ISO's file name must be 1 to {} characters before .iso; rename the file",
            MAX_NAME - 4
        )));
    }
    Ok(n)
}

/// The UUID Linux (`/dev/disk/by-uuid/`, blkid) and GRUB (`search --fs-uuid`) show for a
/// FAT or exFAT filesystem planned with identity `id`: both writers take the volume
/// serial from the identity's first four bytes (little-endian), shown as `XXXX-XXXX`.
fn fs_uuid(id: &[u8; 16]) -> String {
    let serial = u32::from_le_bytes([id[0], id[1], id[2], id[3]]);
    format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)
}

/// The early configuration of both GRUB images: the serial console, then the menu.
fn early_config() -> String {
    crate::bios::early_config(&format!("configfile {MENU_PATH}"))
}

/// Plans the multi-boot stick. Nothing is written; an ISO diskcast cannot boot, a name
/// used twice or a size too small is an error here.
pub fn plan(
    isos: Vec<IsoInput>,
    opts: &MultiOptions,
    prov: &diskcast_block::provenance::Provenance,
    seed: &str,
) -> Result<UsbStick> {
    if isos.len() < 2 || isos.len() > MAX_ISOS {
        return Err(Error::argument(format!("a multi-boot stick holds 2 to {MAX_ISOS} ISOs; {} given", isos.len())));
    }
    if opts.default == 0 || opts.default > isos.len() {
        return Err(Error::argument(format!(
            "--default {}: the menu has entries 1 to {} (in the order the ISOs are given)",
            opts.default,
            isos.len()
        )));
    }
    if opts.timeout > MAX_TIMEOUT {
        return Err(Error::argument(format!(
            "--timeout {}: the menu waits at most {MAX_TIMEOUT} seconds (a day)",
            opts.timeout
        )));
    }
    let now = i64::try_from(prov.now()).unwrap_or(i64::MAX);
    let meta = |mode| Meta::new(mode, Timestamp::from_secs(now));
    let data_id = *stick_id(prov, seed, "data filesystem").as_bytes();
    let data_uuid = fs_uuid(&data_id);

    // Every ISO: a safe unique name, its family and menu entry.
    let mut data = Tree::new(meta(0o755));
    let mut menu = Vec::new();
    let mut bodies = Vec::new();
    let mut notes = Vec::new();
    let mut largest = 0u64;
    for (i, iso) in isos.iter().enumerate() {
        let file = stick_name(&iso.file_name)?;
        if file != iso.file_name {
            notes.push(format!(
                "{}: stored as {ISO_DIR}/{file} (characters GRUB or kernel arguments cannot take replaced)",
                iso.name
            ));
        }
        if let Some(other) =
            menu.iter().find(|m: &&MenuReport| m.path.eq_ignore_ascii_case(&format!("/{ISO_DIR}/{file}")))
        {
            return Err(Error::argument(format!(
                "{} and {} would both be /{ISO_DIR}/{file} on the stick (FAT and exFAT names ignore case); rename one",
                other.iso, iso.name
            )));
        }
        let facts = crate::iso::inspect(&iso.disc, &iso.name)?;
        let boot = family::boot(&facts.tree).map_err(|why| {
            Error::unsupported(format!("{}: cannot be booted from the multi-boot stick: {why}", iso.name))
        })?;
        let path = format!("/{ISO_DIR}/{file}");
        let place = Place { path: &path, data_uuid: &data_uuid, volume_id: &facts.volume_id };
        bodies.push(
            family::entry_body(&boot, &place)
                .map_err(|e| Error::new(e.kind(), format!("{}: {}", iso.name, e.message())))?,
        );
        let size = iso.disc.size();
        largest = largest.max(size);
        let extents: Arc<[FileExtent]> = Arc::new([FileExtent { file_offset: 0, source_offset: 0, len: size }]);
        let content = Content::Blocks { source: iso.disc.clone(), extents };
        data.put_file(&path.as_bytes()[1..], FileData { size, content }, meta(0o644))
            .map_err(|e| Error::invalid(e.message()))?;
        let from = boot.linux.as_ref().map_or_else(|| family::LOOPBACK_CFG.to_string(), |l| l.from.clone());
        let title = format!("{}. {file} ({})", i + 1, boot.family.name());
        menu.push(MenuReport { number: i + 1, iso: iso.name.clone(), path, family: boot.family, title, from });
    }

    // The menu.
    let mut cfg = format!("# diskcast usb: {} ISOs under /{ISO_DIR} of the data partition\n", menu.len());
    cfg.push_str(&format!("set timeout={}\nset default={}\n", opts.timeout, opts.default - 1));
    cfg.push_str(&format!("search --no-floppy --fs-uuid --set=data {}\n", quote(&data_uuid)?));
    for (m, body) in menu.iter().zip(&bodies) {
        cfg.push_str(&format!(
            "menuentry {} --id {} {{\n{body}}}\n",
            quote(&m.title)?,
            quote(&format!("iso{}", m.number))?
        ));
    }

    // The loaders.
    let uefi_image =
        diskcast_bootloader::grub_efi::build(PREFIX, &early_config(), &[&MODULES[..], &EFI_MODULES[..]].concat());
    let bios_image = if opts.bios_grub {
        GrubModules::host().and_then(|m| {
            GrubBios::build_core(&m, PREFIX, &early_config(), &[&MODULES[..], &BIOS_MODULES[..]].concat())
        })
    } else {
        Err(Error::argument("BIOS boot was not asked for"))
    };
    let (uefi, bios) = match (&uefi_image, &bios_image) {
        (Err(u), Err(b)) => {
            return Err(Error::unsupported(format!(
                "no firmware could boot the stick: GRUB for UEFI: {}; GRUB for BIOS: {}",
                u.message(),
                b.message()
            )));
        }
        _ => (
            boot_report(&uefi_image, "GRUB (x86_64-efi) as EFI/BOOT/BOOTX64.EFI"),
            boot_report(&bios_image, "GRUB (i386-pc) in a BIOS boot partition"),
        ),
    };
    let mut esp = Tree::new(meta(0o755));
    if let Ok(img) = uefi_image {
        esp.put_file(b"EFI/BOOT/BOOTX64.EFI", FileData::inline(img), meta(0o644))
            .map_err(|e| Error::invalid(e.message()))?;
    }
    esp.put_file(&MENU_PATH.as_bytes()[1..], FileData::inline(cfg.into_bytes()), meta(0o644))
        .map_err(|e| Error::invalid(e.message()))?;

    // The disk.
    let registry = diskcast_formats::filesystems();
    let data_fs = match opts.data_fs {
        DataFs::Auto if largest <= FAT_MAX_FILE => DataFs::Fat32,
        DataFs::Auto => DataFs::Exfat,
        DataFs::Fat32 if largest > FAT_MAX_FILE => {
            return Err(Error::argument(format!(
                "--data-fs fat32: an ISO of {} is larger than a FAT file can be (4 GiB - 1); use --data-fs exfat",
                human(largest)
            )));
        }
        other => other,
    };
    let mut disk = StickDisk::new(prov, seed);
    let o = BuildOptions {
        size: None,
        label: Some(BOOT_LABEL.into()),
        now,
        id: *stick_id(prov, seed, "boot filesystem").as_bytes(),
        disk_offset: disk.next_start(),
        variant: Some("fat32".into()),
    };
    let (boot_fs, boot_builder) = registry.builder("fat32")?;
    let built = boot_builder.plan(&esp, &o)?;
    let boot_len = built.image.size().next_multiple_of(ALIGN);
    disk.push_fs("boot", PartType::Esp, built, Some(boot_fs.mbr_id(PartType::Fat)))?;

    let bios_room = if bios_image.is_ok() { crate::BIOS_BOOT_SIZE } else { 0 };
    let size = match opts.size {
        None => None,
        Some(s) => {
            let fixed = [ALIGN, boot_len, bios_room, crate::GPT_TAIL].iter().try_fold(0u64, |a, b| a.checked_add(*b));
            let fixed = fixed.ok_or_else(|| Error::argument("the boot partitions' sizes overflow"))?;
            let left = s.checked_sub(fixed).filter(|&l| l >= ALIGN).ok_or_else(|| {
                Error::argument(format!(
                    "--size {} is too small: the GPT and the boot partitions alone take {}",
                    human(s),
                    human(fixed)
                ))
            })?;
            Some(left / ALIGN * ALIGN)
        }
    };
    let (builder_name, fs_name) = match data_fs {
        DataFs::Exfat => ("exfat", "exFAT"),
        _ => ("fat32", "FAT32"),
    };
    let (fs, builder) = registry.builder(builder_name)?;
    let label = opts.label.clone().unwrap_or_else(|| DATA_LABEL.into());
    let o = BuildOptions {
        size,
        label: Some(label),
        now,
        id: data_id,
        disk_offset: disk.next_start(),
        variant: (data_fs != DataFs::Exfat).then(|| "fat32".into()),
    };
    let built = builder.plan(&data, &o).map_err(|e| match opts.size {
        Some(s) if e.kind() == ErrorKind::InvalidArgument => {
            Error::argument(format!("--size {} is too small for the ISOs on {fs_name}: {}", human(s), e.message()))
        }
        _ => e,
    })?;
    crate::files::refuse_skipped(&built.warnings)?;
    disk.push_fs("data", PartType::Fat, built, Some(fs.mbr_id(PartType::Fat)))?;
    if let Ok(grub) = &bios_image {
        disk.push_bios(grub)?;
    }
    let (image, partitions): (_, Vec<PartReport>) = disk.finish(opts.size)?;
    notes.push(format!("data partition: {fs_name}, UUID {data_uuid}; the menu finds it by that UUID"));
    Ok(UsbStick {
        image,
        mode: Mode::Multi,
        why: format!("{} ISOs given: a GRUB menu booting each from its file", isos.len()),
        partitions,
        uefi,
        bios,
        notes,
        files: diskcast_layout::u64_from_usize(isos.len()),
        menu,
    })
}

fn boot_report<T>(built: &Result<T>, how: &str) -> BootReport {
    match built {
        Ok(_) => BootReport { bootable: true, how: format!("{how}, showing the menu {MENU_PATH} of partition 1") },
        Err(e) => BootReport { bootable: false, how: e.message().to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_and_end_in_iso() {
        assert_eq!(stick_name("debian-live-12.5.0-amd64-xfce.iso").unwrap(), "debian-live-12.5.0-amd64-xfce.iso");
        assert_eq!(stick_name("My Distro (beta).ISO").unwrap(), "My_Distro__beta_.ISO");
        assert_eq!(stick_name("disc.qcow2").unwrap(), "disc.qcow2.iso");
        let e = stick_name(".iso").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("must be 1 to 124 characters"), "{e}");
        let e = stick_name(&"a".repeat(200)).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("must be 1 to 124 characters"), "{e}");
    }

    #[test]
    fn fs_uuids_read_as_blkid_shows_them() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        assert_eq!(fs_uuid(&id), "1234-ABCD");
    }
}
