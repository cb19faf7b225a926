//! `diskcast vm --secure-boot`: a boot chain that firmware with Secure Boot enforced and
//! Microsoft's keys enrolled starts (Azure Trusted Launch, Hyper-V generation 2 with the
//! "Microsoft UEFI Certificate Authority" template, OVMF with Microsoft's variables):
//! shim signed by Microsoft's UEFI CA, the distribution's signed GRUB and MokManager,
//! and a kernel signed by the distribution, each checked for an Authenticode signature
//! before anything is written ([`diskcast_bootloader::authenticode`]).
//!
//! Each file comes from, in order: the flag naming it (`--shim`, `--grub-efi`), the
//! image's own (`/usr/lib/shim/shimx64.efi.signed`,
//! `/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed`), this machine's (Debian's
//! shim-signed, grub-efi-amd64-signed). MokManager comes from beside shim.
//!
//! `--loader` with `--secure-boot` names a systemd-boot (or any EFI loader) the firmware
//! starts itself: it must be signed by a key in the firmware's `db`, which Microsoft does
//! not do for systemd-boot, so an unsigned one is refused; a signed one is installed in
//! shim's place with its loader entry, and the kernel must then be signed by a key in
//! `db` too.

use crate::build::{VmOptions, host_file};
use diskcast_block::{Error, Result};
use diskcast_bootloader::EfiArch;
use diskcast_bootloader::authenticode::{self, MACHINE_X86_64, Pe};
use diskcast_bootloader::secure_boot as sb;
use diskcast_tree::{FileData, Tree};
use std::path::Path;

/// One signed file of the chain.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Its content.
    pub data: FileData,
    /// Where it came from, for messages (`this machine's /usr/lib/shim/shimx64.efi.signed`).
    pub from: String,
    /// Who signed it (`/CN=Debian Secure Boot CA`).
    pub issuers: String,
}

/// shim, the GRUB it starts (with the prefix where GRUB reads its configuration) and
/// MokManager when one was found.
#[derive(Debug, Clone)]
pub struct ShimChain {
    /// `EFI/BOOT/BOOTX64.EFI`.
    pub shim: Signed,
    /// `EFI/BOOT/grubx64.efi`.
    pub grub: Signed,
    /// `EFI/BOOT/mmx64.efi`.
    pub mok_manager: Option<Signed>,
    /// GRUB's built-in prefix (`/EFI/debian`): `grub.cfg` goes there.
    pub prefix: String,
}

impl ShimChain {
    /// One line per file: where from, where to, signed by whom.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![
            format!("shim {} -> {}, signed by {}", self.shim.from, EfiArch::X64.removable_path, self.shim.issuers),
            format!("GRUB {} -> {}, signed by {}", self.grub.from, sb::GRUB_ESP, self.grub.issuers),
        ];
        if let Some(m) = &self.mok_manager {
            out.push(format!("MokManager {} -> {}, signed by {}", m.from, sb::MOK_MANAGER_ESP, m.issuers));
        }
        out.push(format!("GRUB's prefix {} -> its configuration {}/grub.cfg", self.prefix, self.prefix));
        out
    }
}

/// The first of: the file `flag` names, the image's `dist`, this machine's `dist`.
fn pick(
    tree: &Tree,
    explicit: Option<&Path>,
    flag: &str,
    dist: &str,
    what: &str,
) -> Result<Option<(FileData, String)>> {
    if let Some(p) = explicit {
        return Ok(Some((host_file(p, &format!("{what} ({flag})"))?, p.display().to_string())));
    }
    if let Ok(id) = tree.resolve(dist.as_bytes(), true)
        && let Some(f) = tree.node(id).as_file().filter(|f| f.size > 0)
    {
        return Ok(Some((f.clone(), format!("the image's {dist}"))));
    }
    let host = Path::new(dist);
    if host.is_file() {
        return Ok(Some((host_file(host, &format!("host's {what}"))?, format!("this machine's {dist}"))));
    }
    Ok(None)
}

/// `data` as a signed x86-64 EFI binary, or an error naming it, what is wrong and `fix`.
pub fn signed(data: FileData, from: String, what: &str, fix: &str) -> Result<Signed> {
    let pe = Pe::read(&data).map_err(|e| Error::new(e.kind(), format!("{what} {from}: {}", e.message())))?;
    if pe.machine != MACHINE_X86_64 {
        return Err(Error::refused(format!(
            "{what} {from} is not an x86-64 EFI binary (PE machine {:#06x}, x86-64 is {MACHINE_X86_64:#06x})",
            pe.machine
        )));
    }
    let sigs = authenticode::require_signed(&data, what, &from, fix)?;
    Ok(Signed { data, from, issuers: authenticode::issuers(&sigs) })
}

/// What to do about an unsigned kernel.
pub const KERNEL_FIX: &str = "use the distribution's signed kernel (Debian's linux-image-amd64 or \
    linux-image-cloud-amd64; `sbverify --list FILE` shows its signature), or sign yours (sbsign --key K --cert C) \
    and enroll the certificate (mokutil --import C)";

/// Checks that the kernel is signed; the line for the report.
pub fn check_kernel(kernel: &FileData, path: &str) -> Result<String> {
    let k = signed(kernel.clone(), path.to_string(), "the kernel", KERNEL_FIX)?;
    Ok(format!("kernel {path} -> {}, signed by {}", crate::ESP_KERNEL, k.issuers))
}

/// shim, GRUB and MokManager for `--secure-boot`, each checked; `warnings` gets a line
/// when no MokManager was found.
pub fn shim_chain(tree: &Tree, opts: &VmOptions, warnings: &mut Vec<String>) -> Result<ShimChain> {
    let shim_fix = format!(
        "install Debian's {} package (apt install {}) or pass --shim PATH to a shimx64.efi signed by Microsoft",
        sb::SHIM_PACKAGE,
        sb::SHIM_PACKAGE
    );
    let grub_fix = format!(
        "install Debian's {} package (apt install {}) or pass --grub-efi PATH to a signed grubx64.efi",
        sb::GRUB_PACKAGE,
        sb::GRUB_PACKAGE
    );
    let (data, from) = pick(tree, opts.shim.as_deref(), "--shim", sb::SHIM_DIST, "shim")?.ok_or_else(|| {
        Error::unsupported(format!(
            "--secure-boot: no shim: neither the image nor this machine has {} (systemd-boot, which diskcast \
             installs otherwise, is not signed by Microsoft: Secure Boot firmware would refuse it); {shim_fix}",
            sb::SHIM_DIST
        ))
    })?;
    let shim = signed(data, from, "shim", &shim_fix)?;
    if !shim.issuers.contains("Microsoft") {
        warnings.push(format!(
            "shim {} is signed by {}, not by Microsoft: firmware with only Microsoft's keys in db (Azure, Hyper-V, \
             most PCs) will refuse it; it boots only where that key is enrolled",
            shim.from, shim.issuers
        ));
    }
    let (data, from) =
        pick(tree, opts.grub_efi.as_deref(), "--grub-efi", sb::GRUB_DIST, "signed GRUB")?.ok_or_else(|| {
            Error::unsupported(format!(
                "--secure-boot: no signed GRUB: neither the image nor this machine has {}; {grub_fix}",
                sb::GRUB_DIST
            ))
        })?;
    let grub = signed(data, from, "GRUB", &grub_fix)?;
    let prefix = sb::grub_prefix(&grub.data)
        .map_err(|e| Error::new(e.kind(), format!("GRUB {}: {}", grub.from, e.message())))?;
    // MokManager sits beside shim: the image's or this machine's, or beside --shim.
    let beside = opts
        .shim
        .as_deref()
        .and_then(Path::parent)
        .map(|d| ["mmx64.efi.signed", "mmx64.efi"].iter().map(|n| d.join(n)).find(|p| p.is_file()));
    let mok = match beside {
        Some(Some(p)) => Some((host_file(&p, "MokManager")?, p.display().to_string())),
        Some(None) => None,
        None => pick(tree, None, "", sb::MOK_MANAGER_DIST, "MokManager")?,
    };
    let mok_manager = match mok {
        Some((data, from)) => Some(signed(
            data,
            from,
            "MokManager",
            &format!("use the mmx64.efi.signed of Debian's {} package", sb::MOK_MANAGER_PACKAGE),
        )?),
        None => {
            warnings.push(format!(
                "no MokManager (mmx64.efi; Debian's {} package, or mmx64.efi.signed beside --shim): a boot whose \
                 next stage fails verification stops instead of offering to enroll a key",
                sb::MOK_MANAGER_PACKAGE
            ));
            None
        }
    };
    Ok(ShimChain { shim, grub, mok_manager, prefix })
}

/// A `--loader` for `--secure-boot`: the firmware starts it itself, so it must be signed.
pub fn signed_loader(data: FileData, path: &Path) -> Result<Signed> {
    signed(
        data,
        path.display().to_string(),
        "the loader (--loader)",
        "firmware with Secure Boot starts only loaders signed by a key in its db, and Microsoft signs shim, not \
         systemd-boot; sign it (sbsign) with a key you enrolled in db, or drop --loader to boot through shim and \
         the distribution's signed GRUB",
    )
}
