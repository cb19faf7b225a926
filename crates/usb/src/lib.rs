//! USB installer sticks from an ISO image (`diskcast usb`), planned as one image that the
//! copy engine writes into any block format.
//!
//! - [`Mode::Dd`]: a hybrid ISO (an MBR or GPT in its system area) copied as it is, the
//!   rest of the stick zero.
//! - [`Mode::Fat32`] (Rufus's "ISO mode"): a GPT disk whose first partition (ESP type, so
//!   UEFI firmware finds it) is a FAT32 filesystem holding every file of the ISO's richest
//!   tree (UDF, Rock Ridge, Joliet). UEFI boots `EFI/BOOT/BOOTX64.EFI`, from the tree or
//!   from the ISO's El Torito EFI image; BIOS boots GRUB (from the host's GRUB i386-pc)
//!   in a BIOS boot partition, which reads the ISO's own `grub.cfg` or its isolinux
//!   configuration ([`bios`]).
//! - [`Layout::Exfat`]: a FAT32 boot partition plus an exFAT partition holding
//!   everything, for files over FAT's 4 GiB - 1 ([`files`] says which file goes where).
//!
//! Nothing of the ISO is dropped: symbolic links become copies of their targets, and
//! whatever cannot be stored is an error before anything is written.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod bios;
pub mod family;
pub mod files;
pub mod iso;
pub mod isolinux;
pub mod multi;

use diskcast_block::provenance::Provenance;
use diskcast_block::size::human;
use diskcast_block::{BlockRead, Error, ErrorKind, Result};
use diskcast_bootloader::grub_bios::GrubBios;
use diskcast_part::compose::{ComposedDisk, DiskComposer};
use diskcast_part::{ALIGN, PartSpec, PartType, TableKind, Uuid};
use diskcast_tree::{BuildOptions, BuiltFs, FileData, Meta, Piece, PlannedImage, Timestamp, Tree};
use serde::Serialize;
use std::sync::Arc;

/// Splits the WIM at a path of the tree into parts of at most `part_limit` bytes
/// (`install.swm`, `install2.swm`, ...), returning the parts' paths:
/// `diskcast_wim::split_in_tree`'s signature.
pub type WimSplitter = fn(&mut Tree, &str, u64) -> Result<Vec<String>>;

/// Largest file FAT stores: its directory entry's size field is 32 bits.
pub const FAT_MAX_FILE: u64 = 0xFFFF_FFFF;
/// Largest WIM part written: Microsoft's own instructions split at 3800 MB, which keeps
/// each `.swm` well under [`FAT_MAX_FILE`].
pub const WIM_PART_LIMIT: u64 = 3800 * 1000 * 1000;
/// Size of the BIOS boot partition holding GRUB's core image (200-300 KiB).
const BIOS_BOOT_SIZE: u64 = 1 << 20;
/// Room kept after the last partition for the backup GPT (33 sectors, rounded up).
const GPT_TAIL: u64 = ALIGN;
/// The content of `persistence.conf`: Debian and Ubuntu live systems overlay the whole
/// root with the partition.
pub const PERSISTENCE_CONF: &[u8] = b"/ union\n";

/// How the stick is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `dd` for a hybrid ISO, `fat32` otherwise.
    Auto,
    /// The ISO copied as it is.
    Dd,
    /// A GPT disk with a FAT32 partition holding the ISO's files.
    Fat32,
    /// Several ISOs on a data partition and a GRUB menu booting each ([`multi`]).
    Multi,
}

impl Mode {
    /// `auto`, `dd` or `fat32`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Mode::Auto),
            "dd" => Ok(Mode::Dd),
            "fat32" | "iso" => Ok(Mode::Fat32),
            other => Err(Error::argument(format!("--mode {other:?}: expected auto, dd or fat32"))),
        }
    }

    /// The name `--mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Dd => "dd",
            Mode::Fat32 => "fat32",
            Mode::Multi => "multi",
        }
    }
}

/// Where the files go in fat32 mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Everything on the FAT32 partition (a WIM over 4 GiB split into `.swm` parts).
    Fat32,
    /// A FAT32 boot partition and an exFAT partition holding everything.
    Exfat,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct UsbOptions {
    /// `--mode`.
    pub mode: Mode,
    /// `--windows-layout`.
    pub layout: Layout,
    /// `--label`: the FAT (and exFAT) label; default the ISO's volume id.
    pub label: Option<String>,
    /// `--size`: the stick's size; default content plus slack.
    pub size: Option<u64>,
    /// `--persistence`: the size of an ext4 partition labelled `persistence`.
    pub persistence: Option<u64>,
    /// Splits a WIM over 4 GiB; `None` when this build has no splitter.
    pub split_wim: Option<WimSplitter>,
    /// `--wim-part-size`: a WIM under `sources/` larger than this is split into parts of
    /// at most this size ([`WIM_PART_LIMIT`] by default; at most [`FAT_MAX_FILE`]).
    pub wim_part_size: u64,
    /// Installs GRUB (the host's i386-pc build) for BIOS boot when the ISO's boot
    /// configuration allows; false leaves BIOS boot out (and the summary says so).
    pub bios_grub: bool,
}

/// One partition of the stick, for the summary.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    /// 1-based number.
    pub number: u32,
    /// GPT name.
    pub name: String,
    /// `esp`, `fat`, `linux`, `bios`.
    pub kind: &'static str,
    /// Byte offset and length.
    pub start: u64,
    pub size: u64,
    /// What it holds (`FAT32, 4096-byte clusters`).
    pub content: String,
}

/// Whether a firmware boots the stick, and how or why not.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    /// True when the stick has what this firmware loads.
    pub bootable: bool,
    /// How it boots, or why it cannot.
    pub how: String,
}

/// A planned stick and what it holds.
#[derive(Debug)]
pub struct UsbStick {
    /// The whole stick.
    pub image: PlannedImage,
    /// `Dd` or `Fat32`: the mode used.
    pub mode: Mode,
    /// Why that mode (auto's choice, or "asked").
    pub why: String,
    /// The partitions written (none in dd mode: the ISO's own table stays).
    pub partitions: Vec<PartReport>,
    /// UEFI boot.
    pub uefi: BootReport,
    /// BIOS boot.
    pub bios: BootReport,
    /// What was done to fit the ISO on FAT (links copied, WIMs split), one line each.
    pub notes: Vec<String>,
    /// Files stored (fat32 mode: on the largest partition; multi: the ISOs).
    pub files: u64,
    /// The menu of a multi-boot stick (empty otherwise).
    pub menu: Vec<multi::MenuReport>,
}

/// Plans the stick for the ISO `disc` (any block format; `name` names it in messages).
/// `seed` makes the disk's and filesystems' identities reproducible with
/// `SOURCE_DATE_EPOCH`. Nothing is written; everything that would make the stick
/// incomplete is an error here.
pub fn plan(
    disc: Arc<dyn BlockRead>,
    name: &str,
    opts: &UsbOptions,
    prov: &Provenance,
    seed: &str,
) -> Result<UsbStick> {
    let facts = iso::inspect(&disc, name)?;
    let (mode, why) = choose_mode(opts, &facts, name)?;
    match mode {
        Mode::Dd => plan_dd(disc, &facts, opts, why),
        _ => plan_fat32(disc, facts, opts, prov, seed, why),
    }
}

/// Resolves `--mode auto` and checks that the mode fits the ISO and the other options.
fn choose_mode(opts: &UsbOptions, facts: &iso::IsoFacts, name: &str) -> Result<(Mode, String)> {
    let needs_partitions = if opts.persistence.is_some() {
        Some("--persistence needs a partition of its own")
    } else if opts.layout == Layout::Exfat {
        Some("--windows-layout exfat needs partitions of its own")
    } else if opts.label.is_some() {
        Some("--label names the FAT partition")
    } else {
        None
    };
    match opts.mode {
        Mode::Dd => {
            if let Some(why) = needs_partitions {
                return Err(Error::argument(format!(
                    "--mode dd copies the ISO as it is, its own partition table included: {why}; use --mode fat32"
                )));
            }
            facts.hybrid_reason().map_err(|why| {
                Error::refused(format!("{name} cannot be copied as it is (--mode dd): {why}; use --mode fat32"))
            })?;
            Ok((Mode::Dd, "asked for".into()))
        }
        Mode::Fat32 | Mode::Multi => Ok((Mode::Fat32, "asked for".into())),
        Mode::Auto => match (facts.hybrid_reason(), needs_partitions) {
            (Ok(how), None) => Ok((Mode::Dd, format!("the ISO is hybrid ({how}), so it boots copied as it is"))),
            (Ok(_), Some(why)) => Ok((Mode::Fat32, format!("the ISO is hybrid, but {why}"))),
            (Err(why), _) => Ok((Mode::Fat32, format!("the ISO cannot be copied as it is: {why}"))),
        },
    }
}

/// The ISO, then zeros up to `--size`.
fn plan_dd(disc: Arc<dyn BlockRead>, facts: &iso::IsoFacts, opts: &UsbOptions, why: String) -> Result<UsbStick> {
    let len = disc.size();
    let size = opts.size.unwrap_or(len);
    if size < len {
        return Err(Error::argument(format!(
            "--size {} is too small: the ISO is {} ({len} bytes) and dd mode copies all of it",
            human(size),
            human(len)
        )));
    }
    let mut image = PlannedImage::new(size, "USB stick (ISO copied as it is)");
    image.place(0, len, Piece::Disk { disk: disc, offset: 0 })?;
    let (uefi, bios) = facts.dd_boot();
    Ok(UsbStick {
        image: image.seal()?,
        mode: Mode::Dd,
        why,
        partitions: Vec::new(),
        uefi,
        bios,
        notes: Vec::new(),
        files: 0,
        menu: Vec::new(),
    })
}

/// The GPT + FAT32 stick.
fn plan_fat32(
    disc: Arc<dyn BlockRead>,
    facts: iso::IsoFacts,
    opts: &UsbOptions,
    prov: &Provenance,
    seed: &str,
    why: String,
) -> Result<UsbStick> {
    let now = i64::try_from(prov.now()).unwrap_or(i64::MAX);
    let id = |what: &str| stick_id(prov, seed, what);
    let mut tree = facts.tree.clone();
    let mut notes = Vec::new();
    let uefi = iso::add_efi_loader(&disc, &facts, &mut tree, &mut notes)?;
    files::make_fat_ready(&mut tree, &mut notes)?;
    let (mut boot_tree, data_tree) = match opts.layout {
        Layout::Fat32 => {
            files::split_large_files(&mut tree, opts.split_wim, opts.wim_part_size, &mut notes)?;
            (tree, None)
        }
        Layout::Exfat => {
            let boot = files::boot_subset(&tree)?;
            (boot, Some(tree))
        }
    };
    files::check_fat_sizes(&boot_tree, opts.layout)?;
    let bios = bios::plan(&facts, &mut boot_tree, opts.bios_grub, &mut notes);

    let registry = diskcast_formats::filesystems();
    let label = match &opts.label {
        Some(l) => l.clone(),
        None => iso::fat_label(&facts.volume_id),
    };
    // Sizes of the partitions after the first two, known up front, so a fixed --size
    // leaves the rest to the partition that holds everything.
    let persistence = opts.persistence.map(|p| p.next_multiple_of(ALIGN));
    let bios_room = if bios.grub.is_some() { BIOS_BOOT_SIZE } else { 0 };
    let fixed = [ALIGN, persistence.unwrap_or(0), bios_room, GPT_TAIL].iter().try_fold(0u64, |a, b| a.checked_add(*b));
    let fixed = fixed.ok_or_else(|| Error::argument("--persistence is too large"))?;

    let mut disk = StickDisk::new(prov, seed);
    let too_small = |e: Error, what: &str| match opts.size {
        Some(s) if e.kind() == ErrorKind::InvalidArgument => {
            Error::argument(format!("--size {} is too small for the {what}: {}", human(s), e.message()))
        }
        _ => e,
    };

    // Partition 1: FAT32, ESP type (UEFI looks for its loader there).
    let (fat_fs, fat) = registry.builder("fat32")?;
    let rest = |used: u64| -> Result<u64> {
        let s = opts.size.unwrap_or(0);
        let left = s.checked_sub(fixed).and_then(|l| l.checked_sub(used)).filter(|&l| l >= ALIGN);
        let left = left.ok_or_else(|| {
            Error::argument(format!(
                "--size {} is too small: the partitions besides the data need {}",
                human(s),
                human(fixed.saturating_add(used))
            ))
        })?;
        Ok(left / ALIGN * ALIGN)
    };
    let fat_size = match (opts.size, &data_tree) {
        (Some(_), None) => Some(rest(0)?),
        _ => None,
    };
    let fat_opts = BuildOptions {
        size: fat_size,
        label: Some(label.clone()),
        now,
        id: *id("fat filesystem").as_bytes(),
        disk_offset: disk.next_start(),
        variant: Some("fat32".into()),
    };
    let built = fat.plan(&boot_tree, &fat_opts).map_err(|e| too_small(e, "ISO's files on FAT32"))?;
    files::refuse_skipped(&built.warnings)?;
    notes.extend(built.warnings.iter().map(|w| format!("FAT: {w}")));
    let fat_len = built.image.size();
    let name = if data_tree.is_some() { "boot" } else { "data" };
    // Its MBR id (FAT32 LBA, 0x0c, as Rufus lists it) is what the hybrid MBR shows when
    // BIOS boot is installed ([`StickDisk::push_bios`]).
    disk.push_fs(name, PartType::Esp, built, Some(fat_fs.mbr_id(PartType::Fat)))?;
    let mut file_count = boot_tree.stats().files;

    // Partition 2 (exfat layout): everything.
    if let Some(all) = &data_tree {
        let size = match opts.size {
            Some(_) => Some(rest(fat_len.next_multiple_of(ALIGN))?),
            None => None,
        };
        let (fs, exfat) = registry.builder("exfat")?;
        let o = BuildOptions {
            size,
            label: Some(label.clone()),
            now,
            id: *id("exfat filesystem").as_bytes(),
            disk_offset: disk.next_start(),
            variant: None,
        };
        let built = exfat.plan(all, &o).map_err(|e| too_small(e, "ISO's files on exFAT"))?;
        files::refuse_skipped(&built.warnings)?;
        disk.push_fs("data", PartType::Fat, built, Some(fs.mbr_id(PartType::Fat)))?;
        file_count = all.stats().files;
    }

    if let Some(size) = persistence {
        let mut t = Tree::new(Meta::new(0o755, Timestamp::from_secs(now)));
        t.put_file(
            b"persistence.conf",
            FileData::inline(PERSISTENCE_CONF.to_vec()),
            Meta::new(0o644, Timestamp::from_secs(now)),
        )
        .map_err(|e| Error::invalid(e.message()))?;
        let o = BuildOptions {
            size: Some(size),
            label: Some("persistence".into()),
            now,
            id: *id("persistence filesystem").as_bytes(),
            disk_offset: disk.next_start(),
            variant: None,
        };
        let built = registry
            .builder("ext4")?
            .1
            .plan(&t, &o)
            .map_err(|e| Error::argument(format!("--persistence {}: {}", human(size), e.message())))?;
        disk.push_fs("persistence", PartType::Linux, built, None)?;
    }

    if let Some(grub) = &bios.grub {
        disk.push_bios(grub)?;
    }
    let (image, partitions) = disk.finish(opts.size).map_err(|e| too_small(e, "partitions"))?;
    Ok(UsbStick {
        image,
        mode: Mode::Fat32,
        why,
        partitions,
        uefi,
        bios: bios.report,
        notes,
        files: file_count,
        menu: Vec::new(),
    })
}

/// The identity of one part of a stick (`what`: "disk", "fat filesystem"...):
/// reproducible from `seed` under `SOURCE_DATE_EPOCH`.
fn stick_id(prov: &Provenance, seed: &str, what: &str) -> Uuid {
    prov.uuid("usb", format!("{seed} {what}").as_bytes(), None)
}

/// A stick's GPT disk being composed, with the summary of its partitions.
struct StickDisk<'a> {
    disk: DiskComposer,
    partitions: Vec<PartReport>,
    prov: &'a Provenance,
    seed: &'a str,
}

impl<'a> StickDisk<'a> {
    fn new(prov: &'a Provenance, seed: &'a str) -> Self {
        StickDisk { disk: DiskComposer::new(TableKind::Gpt), partitions: Vec::new(), prov, seed }
    }

    /// Where the next partition starts (a filesystem planned for it needs the offset).
    fn next_start(&self) -> u64 {
        self.disk.next_start()
    }

    /// Appends a partition holding the planned filesystem `built`.
    fn push_fs(&mut self, name: &str, kind: PartType, built: BuiltFs, mbr_id: Option<u8>) -> Result<()> {
        let content = built.description.clone();
        let len = built.image.size();
        let image: Arc<dyn BlockRead> = Arc::new(built.image);
        self.push(name, kind, len, image, content, mbr_id)
    }

    fn push(
        &mut self,
        name: &str,
        kind: PartType,
        size: u64,
        image: Arc<dyn BlockRead>,
        content: String,
        mbr_id: Option<u8>,
    ) -> Result<()> {
        let start = self.disk.next_start();
        let spec = PartSpec {
            name: name.into(),
            kind,
            size,
            uuid: stick_id(self.prov, self.seed, &format!("{name} partition")),
            bootable: false,
            mbr_id,
        };
        let number = self.disk.push(spec, Some(image))?;
        self.partitions.push(PartReport { number, name: name.into(), kind: kind.name(), start, size, content });
        Ok(())
    }

    /// Appends the BIOS boot partition holding GRUB's core image, and boot.img's code
    /// pointing at it in sector 0, whose MBR becomes hybrid: partition 1 (the FAT
    /// partition) listed beside the protective entry and marked active, since some
    /// BIOSes boot a USB stick only when its MBR has an active partition (SeaBIOS and
    /// most PC firmware run sector 0's code whatever the table says).
    fn push_bios(&mut self, grub: &GrubBios) -> Result<()> {
        let installed = grub.install(self.disk.next_start() / 512, BIOS_BOOT_SIZE)?;
        self.disk.set_boot_code(&installed.mbr_code);
        self.disk.set_hybrid_mbr(1);
        let core_len = diskcast_layout::u64_from_usize(installed.core.len());
        let mut core = PlannedImage::new(core_len, "GRUB core image");
        core.place_bytes(0, installed.core)?;
        let content = format!("GRUB i386-pc core image, {} KiB", core_len.div_ceil(1024));
        self.push("bios", PartType::BiosBoot, BIOS_BOOT_SIZE, Arc::new(core.seal()?), content, None)
    }

    /// The whole disk (`size`, or just what the partitions need) and its partitions.
    fn finish(self, size: Option<u64>) -> Result<(PlannedImage, Vec<PartReport>)> {
        let guid = Uuid::from_bytes(*stick_id(self.prov, self.seed, "disk").as_bytes());
        let ComposedDisk { image, .. } = self.disk.finish(size, guid)?;
        Ok((image, self.partitions))
    }
}
