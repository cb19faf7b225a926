//! BIOS boot of a fat32 stick: GRUB for i386-pc (built from the host's modules by
//! `grub-mkimage`), its core image in a BIOS boot partition and boot.img's code in the
//! protective MBR (as `vm --boot bios` installs it), reading the ISO's own boot
//! configuration from the FAT partition:
//!
//! - an isolinux/syslinux ISO (its BIOS El Torito image is `isolinux.bin`): its
//!   configuration's Linux entries become a GRUB menu ([`crate::isolinux`]) stored on the
//!   stick as [`MENU_PATH`], so no syslinux of another version than the ISO's own `.c32`
//!   modules is needed;
//! - a GRUB ISO: `configfile /boot/grub/grub.cfg`, the same file its El Torito image reads.
//!
//! GRUB's prefix is `(,gpt1)/boot/grub` (the FAT partition of the disk the BIOS booted),
//! so `$prefix/font.pf2` and the like resolve as on the ISO. SeaBIOS and PC firmware
//! run sector 0's code whatever the partition table says, so the MBR stays protective.

use crate::BootReport;
use crate::iso::{IsoFacts, resolve_nocase};
use crate::isolinux;
use diskcast_bootloader::grub_bios::{GrubBios, GrubModules};
use diskcast_tree::{FileData, Meta, Tree};

/// Modules built into the core image: the disk, GPT and FAT to reach the configuration;
/// normal mode with `configfile`; the Linux loaders (32-bit, and the 16-bit protocol
/// some ISO configurations use); the commands ISO configurations
/// use most (`search`, `test`, `echo`, `chainloader`...). Others are loaded from the
/// prefix when the ISO carries GRUB's modules there.
pub const MODULES: [&str; 23] = [
    "biosdisk",
    "part_gpt",
    "part_msdos",
    "fat",
    "normal",
    "configfile",
    "linux",
    "linux16",
    "boot",
    "chain",
    "search",
    "search_fs_file",
    "search_fs_uuid",
    "search_label",
    "test",
    "echo",
    "serial",
    "terminal",
    "ls",
    "cat",
    "halt",
    "reboot",
    "sleep",
];

/// GRUB's prefix on the stick: partition 1 (FAT) of the boot disk.
pub const PREFIX: &str = "(,gpt1)/boot/grub";
/// Where the GRUB menu made from an isolinux configuration is stored on the stick: the
/// one file a fat32 stick has that the ISO has not.
pub const MENU_PATH: &str = "/diskcast/bios-grub.cfg";

/// The BIOS side of a stick: GRUB to install, or why there is none.
#[derive(Debug)]
pub struct BiosPlan {
    /// The loader, when BIOS boot is possible.
    pub grub: Option<GrubBios>,
    /// How BIOS boots the stick or why it cannot.
    pub report: BootReport,
}

/// What the ISO boots on BIOS and how GRUB reads it: the early configuration's last
/// command and a description, or why BIOS boot is not possible. An isolinux menu is
/// added to `tree` at [`MENU_PATH`].
pub fn choose_config(
    facts: &IsoFacts,
    tree: &mut Tree,
    notes: &mut Vec<String>,
) -> std::result::Result<(String, String), String> {
    let Some(image) = facts.bios_image() else {
        return Err("the ISO has no BIOS El Torito boot image (it does not boot on BIOS from a CD either)".into());
    };
    let lower = image.to_ascii_lowercase();
    let grub_cfg = "/boot/grub/grub.cfg";
    let has = |tree: &Tree, p: &str| resolve_nocase(tree, p).is_some_and(|id| tree.node(id).as_file().is_some());
    if lower.contains("isolinux") || lower.contains("syslinux") {
        let dir = image.rsplit_once('/').map_or("", |(d, _)| d);
        let candidates = [
            format!("{dir}/isolinux.cfg"),
            format!("{dir}/syslinux.cfg"),
            "/boot/isolinux/isolinux.cfg".into(),
            "/isolinux/isolinux.cfg".into(),
            "/syslinux.cfg".into(),
        ];
        let Some(cfg) = candidates.iter().find(|c| has(tree, c)) else {
            return Err(format!(
                "the ISO's BIOS loader is {image}, but no isolinux.cfg or syslinux.cfg was found beside it"
            ));
        };
        let parsed =
            isolinux::read(tree, cfg).map_err(|e| format!("its isolinux configuration {cfg}: {}", e.message()))?;
        if parsed.entries.is_empty() {
            return Err(format!("the ISO's isolinux configuration {cfg} has no Linux entry GRUB could boot"));
        }
        let menu = isolinux::grub_menu(&parsed).map_err(|e| format!("{cfg}: {}", e.message()))?;
        let meta = tree.node(tree.root()).meta.clone();
        let data = FileData::inline(menu.into_bytes());
        tree.put_file(MENU_PATH.as_bytes(), data, Meta { mode: 0o644, ..meta }).map_err(|e| e.message())?;
        if !parsed.skipped.is_empty() {
            notes.push(format!(
                "BIOS menu: entries {} of {cfg} run syslinux modules or other loaders, which GRUB cannot; left out",
                parsed.skipped.join(", ")
            ));
        }
        notes.push(format!(
            "BIOS menu: {} entries of {cfg} written as a GRUB menu to {MENU_PATH}",
            parsed.entries.len()
        ));
        return Ok((
            format!("configfile {MENU_PATH}"),
            format!(
                "GRUB (i386-pc) in a BIOS boot partition, with the entries of the ISO's isolinux configuration {cfg}"
            ),
        ));
    }
    if has(tree, grub_cfg) {
        return Ok((
            format!("configfile {grub_cfg}"),
            format!("GRUB (i386-pc) in a BIOS boot partition, reading the ISO's {grub_cfg}"),
        ));
    }
    if lower.ends_with("etfsboot.com") {
        return Err("the ISO boots Windows on BIOS (etfsboot.com, bootmgr), which needs the NT boot sector \
                    bootsect.exe writes; diskcast does not write it (UEFI boots the stick)"
            .into());
    }
    Err(format!(
        "the ISO's BIOS loader {image} is neither isolinux nor GRUB with {grub_cfg}, so there is no configuration \
         another loader could read"
    ))
}

/// The early configuration GRUB runs: the serial console beside the screen, then the
/// ISO's configuration.
pub fn early_config(last: &str) -> String {
    format!("serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n{last}\n")
}

/// Plans BIOS boot for the stick holding `tree` on its FAT partition. Never an error:
/// when GRUB cannot be built (no grub-pc-bin on the host), the report says why.
pub fn plan(facts: &IsoFacts, tree: &mut Tree, enabled: bool, notes: &mut Vec<String>) -> BiosPlan {
    let no = |how: String| BiosPlan { grub: None, report: BootReport { bootable: false, how } };
    if !enabled {
        return no("BIOS boot was not asked for".into());
    }
    let modules = match GrubModules::host() {
        Ok(m) => m,
        Err(e) => return no(format!("GRUB for BIOS cannot be built on this machine: {}", e.message())),
    };
    let (last, how) = match choose_config(facts, tree, notes) {
        Ok(c) => c,
        Err(why) => return no(why),
    };
    match GrubBios::build_core(&modules, PREFIX, &early_config(&last), &MODULES) {
        Ok(grub) => BiosPlan { grub: Some(grub), report: BootReport { bootable: true, how } },
        Err(e) => no(format!("GRUB for BIOS cannot be built on this machine: {}", e.message())),
    }
}
