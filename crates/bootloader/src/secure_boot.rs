//! The Secure Boot chain on the ESP: shim, signed by Microsoft's UEFI CA (which every
//! firmware with Microsoft's keys in `db` starts), at the removable-media path; the
//! distribution's signed GRUB beside it as `grubx64.efi` (shim starts that name from its
//! own directory and checks it against the distribution's CA built into shim); MokManager
//! (`mmx64.efi`), which shim starts when the next stage fails verification or a key
//! enrolment is pending; and a `grub.cfg` where that GRUB looks for it. GRUB then starts
//! only kernels signed by a key shim trusts.
//!
//! Signed GRUB images are monolithic (modules built in, no `insmod` from disk) and carry
//! their prefix in their `mods` section: Debian's is `/EFI/debian`, and its built-in
//! configuration reads `$prefix/grub.cfg` on the device it was started from, the ESP. So
//! the configuration goes to `<prefix>/grub.cfg`, the prefix read from the image itself
//! (GRUB's `include/grub/kernel.h`: a `grub_module_info64` header, then objects of
//! `{type, size}`; type 3 is the prefix).
//!
//! `fbx64.efi` (shim's fallback) is not installed: shim at the removable path would start
//! it instead of GRUB, and it writes NVRAM boot entries from `EFI/*/BOOTX64.CSV` and resets
//! the machine, which a disk image must not depend on.

use crate::BootEntry;
use crate::authenticode::{Pe, Section};
use diskcast_block::{Error, Result};
use diskcast_layout::{Le32, Le64, usize_from_u64};
use diskcast_tree::FileData;

/// Where distributions install shim signed by Microsoft (Debian, Ubuntu: shim-signed).
pub const SHIM_DIST: &str = "/usr/lib/shim/shimx64.efi.signed";
/// MokManager, signed by the distribution (Debian: shim-helpers-amd64-signed).
pub const MOK_MANAGER_DIST: &str = "/usr/lib/shim/mmx64.efi.signed";
/// The distribution's signed GRUB (Debian: grub-efi-amd64-signed).
pub const GRUB_DIST: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// The Debian packages of [`SHIM_DIST`], [`MOK_MANAGER_DIST`] and [`GRUB_DIST`].
pub const SHIM_PACKAGE: &str = "shim-signed";
/// See [`SHIM_PACKAGE`].
pub const MOK_MANAGER_PACKAGE: &str = "shim-helpers-amd64-signed";
/// See [`SHIM_PACKAGE`].
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
/// Where shim looks for its second stage and MokManager: beside itself.
pub const GRUB_ESP: &str = "EFI/BOOT/grubx64.efi";
/// See [`GRUB_ESP`].
pub const MOK_MANAGER_ESP: &str = "EFI/BOOT/mmx64.efi";

/// `grub_module_info` magic, "mimg".
const MODULE_MAGIC: u32 = 0x676d_696d;
/// `OBJ_TYPE_PREFIX`.
const OBJ_PREFIX: u32 = 3;
/// Most module objects walked (Debian's signed image has about 130).
const OBJECTS_MAX: usize = 4096;
/// Longest prefix accepted.
const PREFIX_MAX: usize = 256;

/// The prefix a GRUB EFI image was built with (`/EFI/debian`), read from its `mods`
/// section. A prefix naming a device (`(hd0,gpt1)/...`) or none at all is an error: GRUB
/// would not read its configuration from the ESP it was started from.
pub fn grub_prefix(file: &FileData) -> Result<String> {
    let pe = Pe::read(file)?;
    let Some(Section { file_offset, size, .. }) = pe.sections.iter().find(|s| s.name == "mods").cloned() else {
        return Err(Error::invalid("no mods section: not a GRUB EFI image"));
    };
    let read_u32 = |at: u64| -> Result<u32> {
        let mut b = [0u8; 4];
        file.read_at(&mut b, at)?;
        Ok(diskcast_layout::read_copy::<Le32>(&b, 0, "GRUB module field")?.get())
    };
    let end = file_offset.checked_add(size).filter(|&e| e <= file.size).ok_or_else(|| {
        Error::invalid(format!("the mods section ({size} bytes at {file_offset}) lies past the end of the file"))
    })?;
    if read_u32(file_offset)? != MODULE_MAGIC {
        return Err(Error::invalid("the mods section does not start with GRUB's module info (mimg)"));
    }
    let mut b = [0u8; 16];
    file.read_at(&mut b, file_offset + 8)?;
    let first = diskcast_layout::read_copy::<Le64>(&b, 0, "module info offset")?.get();
    let total = diskcast_layout::read_copy::<Le64>(&b, 8, "module info size")?.get();
    let end = file_offset.checked_add(total).map_or(end, |e| e.min(end));
    let mut at = file_offset.saturating_add(first);
    for _ in 0..OBJECTS_MAX {
        if at.saturating_add(8) > end {
            break;
        }
        let (kind, len) = (read_u32(at)?, u64::from(read_u32(at + 4)?));
        if len < 8 || at.saturating_add(len) > end {
            return Err(Error::invalid(format!("GRUB module object at {at} claims {len} bytes")));
        }
        if kind == OBJ_PREFIX {
            let n = usize_from_u64((len - 8).min(u64::try_from(PREFIX_MAX).unwrap_or(u64::MAX)), "prefix")?;
            let mut text = vec![0u8; n];
            file.read_at(&mut text, at + 8)?;
            let text = text.split(|&c| c == 0).next().unwrap_or_default();
            let prefix = std::str::from_utf8(text)
                .map_err(|_| Error::invalid("GRUB's prefix is not UTF-8"))?
                .trim_end_matches('/')
                .to_string();
            if !prefix.starts_with('/') || prefix.contains(['(', ')', '\'', '"', '\\']) || prefix.contains("..") {
                return Err(Error::unsupported(format!(
                    "GRUB's prefix {prefix:?} is not a plain path on the device GRUB starts from"
                )));
            }
            return Ok(prefix);
        }
        at += len;
    }
    Err(Error::invalid("GRUB's module info holds no prefix"))
}

/// The configuration file for a signed GRUB with `prefix`, as (path relative to the
/// ESP's root, bytes): the same script the BIOS core image embeds (serial console, the
/// entry's kernel and initramfs from the ESP, `boot`).
pub fn config_file(prefix: &str, entry: &BootEntry) -> Result<(String, Vec<u8>)> {
    let cfg = crate::grub_bios::early_config(entry)?;
    Ok((format!("{}/grub.cfg", prefix.trim_start_matches('/')), cfg.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PE image whose only section, `mods`, holds GRUB's module info with `objects`.
    fn grub_image(objects: &[(u32, &[u8])]) -> Vec<u8> {
        let mut mods = Vec::new();
        mods.extend_from_slice(&MODULE_MAGIC.to_le_bytes());
        mods.extend_from_slice(&0u32.to_le_bytes());
        mods.extend_from_slice(&24u64.to_le_bytes());
        mods.extend_from_slice(&0u64.to_le_bytes());
        for (kind, body) in objects {
            let len = (8 + body.len()).next_multiple_of(4);
            mods.extend_from_slice(&kind.to_le_bytes());
            mods.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
            mods.extend_from_slice(body);
            mods.resize(mods.len().next_multiple_of(4), 0);
        }
        let total = u64::try_from(mods.len()).unwrap();
        mods[16..24].copy_from_slice(&total.to_le_bytes());
        let mut f = vec![0u8; 0x400];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        f[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        f[0x86..0x88].copy_from_slice(&1u16.to_le_bytes());
        f[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
        f[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
        let sec = 0x98 + 240;
        f[sec..sec + 4].copy_from_slice(b"mods");
        f[sec + 16..sec + 20].copy_from_slice(&u32::try_from(mods.len()).unwrap().to_le_bytes());
        f[sec + 20..sec + 24].copy_from_slice(&0x400u32.to_le_bytes());
        f.extend_from_slice(&mods);
        f
    }

    #[test]
    fn prefix_is_read_from_the_module_info() {
        let img = grub_image(&[(2, b"normal (memdisk)/grub.cfg\n\0"), (OBJ_PREFIX, b"/EFI/debian\0")]);
        assert_eq!(grub_prefix(&FileData::inline(img)).unwrap(), "/EFI/debian");
        let img = grub_image(&[(OBJ_PREFIX, b"(hd0,gpt2)/boot/grub\0")]);
        let e = grub_prefix(&FileData::inline(img)).unwrap_err();
        assert!(e.to_string().contains("not a plain path"), "{e}");
        let img = grub_image(&[(2, b"x\0")]);
        assert!(grub_prefix(&FileData::inline(img)).unwrap_err().to_string().contains("no prefix"));
        let mut img = grub_image(&[(OBJ_PREFIX, b"/EFI/x\0")]);
        let n = img.len();
        img[n - 12..n - 8].copy_from_slice(&999u32.to_le_bytes());
        assert!(grub_prefix(&FileData::inline(img.clone())).unwrap_err().to_string().contains("claims 999"));
        for cut in 0..img.len() {
            let _ = grub_prefix(&FileData::inline(img[..cut].to_vec()));
        }
    }

    #[test]
    fn config_goes_under_the_prefix() {
        let e = BootEntry {
            title: "diskcast".into(),
            kernel: "/diskcast/vmlinuz".into(),
            initrd: None,
            cmdline: "root=PARTUUID=x rw".into(),
        };
        let (path, cfg) = config_file("/EFI/debian", &e).unwrap();
        assert_eq!(path, "EFI/debian/grub.cfg");
        let cfg = String::from_utf8(cfg).unwrap();
        assert!(cfg.contains("linux '/diskcast/vmlinuz' 'root=PARTUUID=x' 'rw'\nboot\n"), "{cfg}");
    }
}
