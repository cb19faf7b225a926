//! Which distribution family an ISO belongs to, and the GRUB menu entry that boots it
//! from a file on the stick's data partition (`loopback`), with the kernel arguments
//! that family's initramfs needs to find the ISO again once Linux runs.
//!
//! The kernel, initramfs and default arguments come from the ISO's own boot
//! configuration (its GRUB `grub.cfg`, else its isolinux/syslinux configuration): the
//! first Linux entry whose kernel lies where the family keeps it. Only when the ISO has
//! no such entry are the family's usual file names and arguments used. Then the family's
//! way to find the ISO is added:
//!
//! - Debian live (live-boot), found by `/live/filesystem.squashfs`: `findiso=PATH` (and
//!   `boot=live` if missing);
//! - Ubuntu (casper), `/casper/vmlinuz*`: `iso-scan/filename=PATH`;
//! - Fedora, RHEL (dracut's dmsquash-live, anaconda), `/images/pxeboot/vmlinuz` with
//!   `/LiveOS/squashfs.img` or `/images/install.img`: `iso-scan/filename=PATH` (and
//!   `root=live:CDLABEL=LABEL rd.live.image` when the entry has neither that nor
//!   `inst.stage2=`);
//! - Arch (archiso), `/arch/boot/x86_64/vmlinuz-*`: `img_dev=/dev/disk/by-uuid/UUID
//!   img_loop=PATH` (its `archisolabel=`/`archisosearchuuid=` dropped);
//! - GRUB discs with `/boot/grub/loopback.cfg`: `iso_path` exported, `root` the loop
//!   device, `configfile /boot/grub/loopback.cfg`.
//!
//! Debian's installer ISOs (`/install.amd/`) are refused: their initramfs looks for the
//! installation medium on CD drives only (`cdrom-detect`); Debian documents booting an
//! ISO file through the separate `hd-media` kernel and initramfs, whose `iso-scan` finds
//! `*.iso` files in a partition's top two directory levels, and those are not on the ISO.
//! An ISO of no known family is refused too: a menu entry that cannot boot is worse than
//! none.

use crate::iso::resolve_nocase;
use crate::isolinux;
use diskcast_block::{Error, Result};
use diskcast_bootloader::grub_bios::{linux_word, quote};
use diskcast_tree::Tree;
use serde::Serialize;

/// Largest boot configuration read (real ones are a few KiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most lines of one GRUB configuration looked at (real ones have a few hundred).
const MAX_CONFIG_LINES: usize = 100_000;
/// Most initramfs images of one entry (Arch's has three: two microcode images and its own).
const MAX_INITRDS: usize = 16;
/// Most kernel arguments taken from an ISO's entry (real ones have under 20; the kernel
/// itself takes a command line of at most a few KiB).
const MAX_ARGS: usize = 256;

/// GRUB configurations an ISO may boot with, in the order they are read.
const GRUB_CONFIGS: [&str; 4] =
    ["/boot/grub/grub.cfg", "/EFI/BOOT/grub.cfg", "/boot/grub2/grub.cfg", "/EFI/fedora/grub.cfg"];
/// isolinux/syslinux configurations, in the order they are read.
const ISOLINUX_CONFIGS: [&str; 5] = [
    "/isolinux/isolinux.cfg",
    "/boot/isolinux/isolinux.cfg",
    "/syslinux/syslinux.cfg",
    "/boot/syslinux/syslinux.cfg",
    "/syslinux.cfg",
];
/// The GRUB configuration a disc offers for being booted from a file (the loopback.cfg
/// convention: `iso_path` names the file, `root` is the loop device).
pub const LOOPBACK_CFG: &str = "/boot/grub/loopback.cfg";

/// A distribution family, by how its initramfs finds the ISO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    DebianLive,
    Ubuntu,
    Fedora,
    Arch,
    GrubLoopback,
}

impl Family {
    /// The name shown in the menu and the summary.
    pub fn name(self) -> &'static str {
        match self {
            Family::DebianLive => "Debian live",
            Family::Ubuntu => "Ubuntu (casper)",
            Family::Fedora => "Fedora/RHEL",
            Family::Arch => "Arch",
            Family::GrubLoopback => "GRUB loopback.cfg",
        }
    }

    /// Where the family keeps its kernel, the default file names and arguments.
    fn layout(self) -> Option<(&'static str, &'static str, &'static str, &'static [&'static str])> {
        match self {
            Family::DebianLive => Some(("/live", "vmlinuz", "initrd", &["boot=live", "components"])),
            Family::Ubuntu => Some(("/casper", "vmlinuz", "initrd", &[])),
            Family::Fedora => Some(("/images/pxeboot", "vmlinuz", "initrd", &["rd.live.image"])),
            Family::Arch => Some(("/arch/boot/x86_64", "vmlinuz-", "initramfs-", &["archisobasedir=arch"])),
            Family::GrubLoopback => None,
        }
    }
}

/// A Linux boot entry: kernel and initramfs paths inside the ISO, and its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linux {
    pub kernel: String,
    pub initrd: Vec<String>,
    pub args: Vec<String>,
    /// Where it was read (`/boot/grub/grub.cfg`), or how it was made.
    pub from: String,
}

/// How an ISO boots from the stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoBoot {
    pub family: Family,
    /// `None` for [`Family::GrubLoopback`].
    pub linux: Option<Linux>,
}

fn is_file(tree: &Tree, p: &str) -> bool {
    resolve_nocase(tree, p).is_some_and(|id| tree.node(id).as_file().is_some())
}

/// The names of the files in directory `dir` of the tree, in order.
fn files_in(tree: &Tree, dir: &str) -> Vec<String> {
    let Some(d) = resolve_nocase(tree, dir).and_then(|id| tree.node(id).as_dir()) else { return Vec::new() };
    d.entries()
        .filter(|(_, id)| tree.node(*id).as_file().is_some())
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The family of the ISO whose tree is `tree`, or why it has none diskcast can boot.
pub fn detect(tree: &Tree) -> std::result::Result<Family, String> {
    let starts = |dir: &str, prefix: &str| files_in(tree, dir).iter().any(|f| f.starts_with(prefix));
    if is_file(tree, "/live/filesystem.squashfs") {
        return Ok(Family::DebianLive);
    }
    if starts("/casper", "vmlinuz") {
        return Ok(Family::Ubuntu);
    }
    if is_file(tree, "/images/pxeboot/vmlinuz")
        && (is_file(tree, "/LiveOS/squashfs.img") || is_file(tree, "/images/install.img"))
    {
        return Ok(Family::Fedora);
    }
    if starts("/arch/boot/x86_64", "vmlinuz-") {
        return Ok(Family::Arch);
    }
    if starts("/install.amd", "vmlinuz") || starts("/install.386", "vmlinuz") {
        return Err("it is a Debian installer ISO: its initramfs looks for the installation medium on CD drives \
                    only, so booted from a file it stops at \"No common CD-ROM drive was detected\"; Debian \
                    documents booting an ISO file with its hd-media kernel and initramfs instead \
                    (dists/SUITE/main/installer-amd64/current/images/hd-media/), which are not on the ISO. \
                    Write this ISO to a stick of its own (diskcast usb ISO -o OUT), or use a Debian live ISO"
            .into());
    }
    if is_file(tree, LOOPBACK_CFG) {
        return Ok(Family::GrubLoopback);
    }
    Err(format!(
        "its family is not one diskcast boots from a file: no /live/filesystem.squashfs (Debian live), \
         /casper/vmlinuz (Ubuntu), /images/pxeboot/vmlinuz (Fedora/RHEL), /arch/boot/x86_64/vmlinuz-* (Arch) \
         or {LOOPBACK_CFG} (GRUB discs); write it to a stick of its own (diskcast usb ISO -o OUT)"
    ))
}

/// Splits a GRUB command line into words, dropping the quotes around quoted parts.
fn grub_words(line: &str) -> Vec<String> {
    line.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string()).collect()
}

/// The Linux entries of a GRUB configuration: `linux`/`linuxefi`/`linux16` lines and the
/// `initrd` lines after them in the same entry.
fn grub_entries(text: &str, from: &str) -> Vec<Linux> {
    let mut out: Vec<Linux> = Vec::new();
    let mut open = false;
    for line in text.lines().take(MAX_CONFIG_LINES) {
        let words = grub_words(line);
        let Some(cmd) = words.first() else { continue };
        match cmd.as_str() {
            "menuentry" | "}" => open = false,
            "linux" | "linuxefi" | "linux16" if words.len() > 1 => {
                out.push(Linux {
                    kernel: words[1].clone(),
                    initrd: Vec::new(),
                    args: words[2..].iter().take(MAX_ARGS).cloned().collect(),
                    from: from.to_string(),
                });
                open = true;
            }
            "initrd" | "initrdefi" | "initrd16" if open => {
                if let Some(e) = out.last_mut() {
                    e.initrd = words[1..].iter().take(MAX_INITRDS).cloned().collect();
                }
            }
            _ => {}
        }
    }
    out
}

/// The ISO's own entry booting a kernel under `dir`: from its GRUB configuration, else
/// its isolinux one (the default entry first).
fn own_entry(tree: &Tree, dir: &str) -> Option<Linux> {
    let under = |k: &str| k.to_ascii_lowercase().starts_with(&format!("{}/", dir.to_ascii_lowercase()));
    for cfg in GRUB_CONFIGS {
        if !is_file(tree, cfg) {
            continue;
        }
        let Ok(text) = tree.read(cfg.as_bytes(), MAX_CONFIG_BYTES) else { continue };
        let text = String::from_utf8_lossy(&text);
        if let Some(e) = grub_entries(&text, cfg).into_iter().find(|e| under(&e.kernel)) {
            return Some(e);
        }
    }
    for cfg in ISOLINUX_CONFIGS {
        if !is_file(tree, cfg) {
            continue;
        }
        let Ok(c) = isolinux::read(tree, cfg) else { continue };
        let default = c.entries.iter().find(|e| Some(&e.label) == c.default.as_ref() && under(&e.kernel));
        if let Some(e) = default.or_else(|| c.entries.iter().find(|e| under(&e.kernel))) {
            let args = e.append.split_whitespace().filter(|w| !w.starts_with("initrd=")).take(MAX_ARGS);
            return Some(Linux {
                kernel: e.kernel.clone(),
                initrd: e.initrd.iter().take(MAX_INITRDS).cloned().collect(),
                args: args.map(str::to_string).collect(),
                from: cfg.to_string(),
            });
        }
    }
    None
}

/// The family's usual kernel and initramfs, for an ISO whose configuration names none.
fn usual_entry(tree: &Tree, family: Family) -> Option<Linux> {
    let (dir, kernel, initrd, args) = family.layout()?;
    let files = files_in(tree, dir);
    let kernel = files.iter().find(|f| f.starts_with(kernel))?;
    let initrd: Vec<String> =
        files.iter().filter(|f| f.starts_with(initrd)).take(1).map(|f| format!("{dir}/{f}")).collect();
    Some(Linux {
        kernel: format!("{dir}/{kernel}"),
        initrd,
        args: args.iter().map(|a| a.to_string()).collect(),
        from: format!("the usual {} files (the ISO's configuration names none)", family.name()),
    })
}

/// How the ISO whose tree is `tree` boots from the stick.
pub fn boot(tree: &Tree) -> std::result::Result<IsoBoot, String> {
    let family = detect(tree)?;
    let Some((dir, ..)) = family.layout() else { return Ok(IsoBoot { family, linux: None }) };
    let linux = own_entry(tree, dir).or_else(|| usual_entry(tree, family)).ok_or_else(|| {
        format!("it looks like {} but has no kernel under {dir} that its configuration boots", family.name())
    })?;
    for p in std::iter::once(&linux.kernel).chain(&linux.initrd) {
        if !is_file(tree, p) {
            return Err(format!("its entry in {} names {p}, which the ISO does not hold", linux.from));
        }
    }
    Ok(IsoBoot { family, linux: Some(linux) })
}

/// Where the stick's data filesystem is and what the ISO's file is called on it.
#[derive(Debug, Clone)]
pub struct Place<'a> {
    /// The ISO's path on the data partition (`/isos/NAME.iso`).
    pub path: &'a str,
    /// The data filesystem's UUID as Linux shows it (`/dev/disk/by-uuid/XXXX-XXXX`).
    pub data_uuid: &'a str,
    /// The ISO's volume id (Fedora's `CDLABEL=`).
    pub volume_id: &'a str,
}

/// The kernel arguments for `linux` booted from the ISO file at `place`.
pub fn arguments(family: Family, linux: &Linux, place: &Place) -> Vec<String> {
    let drop: &[&str] = match family {
        Family::DebianLive => &["findiso="],
        Family::Ubuntu | Family::Fedora => &["iso-scan/filename="],
        Family::Arch => &[
            "archisolabel=",
            "archisosearchuuid=",
            "archisosearchfilename=",
            "archisodevice=",
            "img_dev=",
            "img_loop=",
        ],
        Family::GrubLoopback => &[],
    };
    // Words with GRUB variables only mean something in the ISO's own GRUB.
    let mut args: Vec<String> =
        linux.args.iter().filter(|w| !w.contains('$') && !drop.iter().any(|d| w.starts_with(d))).cloned().collect();
    let has = |args: &[String], p: &str| args.iter().any(|w| w.starts_with(p));
    let mut add: Vec<String> = Vec::new();
    match family {
        Family::DebianLive => {
            if !has(&args, "boot=live") {
                add.push("boot=live".into());
            }
            add.push(format!("findiso={}", place.path));
        }
        Family::Ubuntu => add.push(format!("iso-scan/filename={}", place.path)),
        Family::Fedora => {
            if !has(&args, "root=live:") && !has(&args, "inst.stage2=") {
                add.push(format!("root=live:CDLABEL={}", place.volume_id.replace(' ', "\\x20")));
                if !has(&args, "rd.live.image") {
                    add.push("rd.live.image".into());
                }
            }
            add.push(format!("iso-scan/filename={}", place.path));
        }
        Family::Arch => {
            add.push(format!("img_dev=/dev/disk/by-uuid/{}", place.data_uuid));
            add.push(format!("img_loop={}", place.path));
        }
        Family::GrubLoopback => {}
    }
    // Before `---` (Debian's separator of installer and installed-system arguments).
    let at = args.iter().position(|w| w == "---").unwrap_or(args.len());
    args.splice(at..at, add);
    args
}

/// The body of the GRUB menu entry booting the ISO at `place` (the data partition is
/// `$data`, set by the menu's `search`).
pub fn entry_body(boot: &IsoBoot, place: &Place) -> Result<String> {
    let path = quote(place.path)?;
    let mut out = format!("  set iso_path={path}\n  export iso_path\n  loopback loop \"($data)\"{path}\n");
    match &boot.linux {
        None => out.push_str(&format!("  set root=(loop)\n  configfile {}\n", quote(LOOPBACK_CFG)?)),
        Some(linux) => {
            let mut line = format!("  linux (loop){}", quote(&linux.kernel)?);
            for w in arguments(boot.family, linux, place) {
                let w = linux_word(&w).map_err(|e| Error::argument(format!("{}: {}", linux.from, e.message())))?;
                line.push(' ');
                line.push_str(&w);
            }
            out.push_str(&line);
            out.push('\n');
            if !linux.initrd.is_empty() {
                let list: Vec<String> =
                    linux.initrd.iter().map(|i| quote(i).map(|q| format!("(loop){q}"))).collect::<Result<_>>()?;
                out.push_str(&format!("  initrd {}\n", list.join(" ")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolinux::tests::tree;

    const PLACE: Place = Place { path: "/isos/a.iso", data_uuid: "1234-ABCD", volume_id: "Fedora-WS-Live-40" };

    #[test]
    fn arch_entries_find_the_iso_by_the_data_uuid() {
        let t = tree(&[
            ("arch/boot/x86_64/vmlinuz-linux", "k"),
            ("arch/boot/x86_64/initramfs-linux.img", "i"),
            ("arch/boot/intel-ucode.img", "u"),
            (
                "boot/grub/grub.cfg",
                "menuentry \"Arch\" {\n  set gfxpayload=keep\n  linux /arch/boot/x86_64/vmlinuz-linux archisobasedir=arch archisosearchuuid=2024-01-01 cow_spacesize=1G\n  initrd /arch/boot/intel-ucode.img /arch/boot/x86_64/initramfs-linux.img\n}\n",
            ),
        ]);
        let b = boot(&t).unwrap();
        assert_eq!(b.family, Family::Arch);
        let body = entry_body(&b, &PLACE).unwrap();
        assert!(body.contains("linux (loop)'/arch/boot/x86_64/vmlinuz-linux' 'archisobasedir=arch' 'cow_spacesize=1G' 'img_dev=/dev/disk/by-uuid/1234-ABCD' 'img_loop=/isos/a.iso'\n"), "{body}");
        assert!(
            body.contains("initrd (loop)'/arch/boot/intel-ucode.img' (loop)'/arch/boot/x86_64/initramfs-linux.img'\n"),
            "{body}"
        );
    }

    #[test]
    fn debian_live_from_isolinux_and_ubuntu_before_the_separator() {
        let t = tree(&[
            ("live/filesystem.squashfs", "s"),
            ("live/vmlinuz-6.1.0-18-amd64", "k"),
            ("live/initrd.img-6.1.0-18-amd64", "i"),
            (
                "isolinux/isolinux.cfg",
                "label live\n  kernel /live/vmlinuz-6.1.0-18-amd64\n  append initrd=/live/initrd.img-6.1.0-18-amd64 boot=live components quiet splash findiso=${iso_path}\n",
            ),
        ]);
        let b = boot(&t).unwrap();
        assert_eq!(b.linux.as_ref().unwrap().from, "/isolinux/isolinux.cfg");
        assert_eq!(
            arguments(b.family, b.linux.as_ref().unwrap(), &PLACE),
            ["boot=live", "components", "quiet", "splash", "findiso=/isos/a.iso"]
        );
        let t = tree(&[("casper/vmlinuz", "k"), ("casper/initrd", "i")]);
        let b = boot(&t).unwrap();
        assert_eq!(
            b.linux.as_ref().unwrap().kernel,
            "/casper/vmlinuz",
            "the usual files when no configuration names one"
        );
        let l = Linux { args: vec!["quiet".into(), "---".into(), "splash".into()], ..b.linux.clone().unwrap() };
        assert_eq!(arguments(Family::Ubuntu, &l, &PLACE), ["quiet", "iso-scan/filename=/isos/a.iso", "---", "splash"]);
    }

    #[test]
    fn fedora_gets_a_cdlabel_only_when_its_entry_has_no_root() {
        let t =
            tree(&[("images/pxeboot/vmlinuz", "k"), ("images/pxeboot/initrd.img", "i"), ("LiveOS/squashfs.img", "s")]);
        let b = boot(&t).unwrap();
        let l = b.linux.unwrap();
        assert_eq!(
            arguments(Family::Fedora, &l, &PLACE),
            ["rd.live.image", "root=live:CDLABEL=Fedora-WS-Live-40", "iso-scan/filename=/isos/a.iso"]
        );
        let own = Linux { args: vec!["root=live:CDLABEL=X".into(), "rd.live.image".into(), "quiet".into()], ..l };
        assert_eq!(
            arguments(Family::Fedora, &own, &PLACE),
            ["root=live:CDLABEL=X", "rd.live.image", "quiet", "iso-scan/filename=/isos/a.iso"]
        );
    }

    #[test]
    fn debian_installers_and_unknown_discs_are_refused_with_the_reason() {
        let e = detect(&tree(&[("install.amd/vmlinuz", "k"), ("install.amd/initrd.gz", "i")])).unwrap_err();
        assert!(e.contains("Debian installer ISO") && e.contains("hd-media"), "{e}");
        let e = detect(&tree(&[("readme.txt", "x")])).unwrap_err();
        assert!(e.contains("not one diskcast boots from a file"), "{e}");
        let e = boot(&tree(&[
            ("live/filesystem.squashfs", "s"),
            ("boot/grub/grub.cfg", "menuentry x {\nlinux /live/vmlinuz boot=live\n}\n"),
        ]))
        .unwrap_err();
        assert!(e.contains("names /live/vmlinuz, which the ISO does not hold"), "{e}");
        let b = boot(&tree(&[("boot/grub/loopback.cfg", "x")])).unwrap();
        let body = entry_body(&b, &PLACE).unwrap();
        assert!(body.ends_with("  set root=(loop)\n  configfile '/boot/grub/loopback.cfg'\n"), "{body}");
    }
}
