//! GRUB for BIOS (i386-pc) on a GPT disk, installed without a loop device: the core image
//! goes into the BIOS boot partition and boot.img's code into the protective MBR, both
//! patched with the sector numbers grub-install would write.
//!
//! How a BIOS boots it (GRUB 2 `include/grub/i386/pc/boot.h`, `boot/i386/pc/boot.S`,
//! `diskboot.S`):
//! 1. The BIOS runs sector 0: boot.img's code. It reads ONE sector, the LBA stored at
//!    [`KERNEL_SECTOR`] (8 bytes), to 0x8000 and jumps there.
//! 2. That sector is the core image's first, diskboot.img. Its blocklist, 12 bytes at the
//!    end of the sector (start LBA: 8 bytes, sector count: 2, load segment: 2), says where
//!    the rest of the core image is; it loads it at segment 0x820 and jumps to it.
//! 3. The core image (lzma_decompress + kernel + modules + our early config) reads the ESP
//!    through `biosdisk`/`part_gpt`/`fat` and starts the [`BootEntry`]'s kernel.
//!
//! The core image is built by the host's `grub-mkimage -O i386-pc` (package grub-common)
//! from GRUB's module directory: the guest's own `/usr/lib/grub/i386-pc` when the image has
//! one, else the host's (package grub-pc-bin). Its prefix is `(,gptN)/` with N the ESP's
//! partition number: GRUB fills in the drive it was booted from, so `root` is the ESP of
//! the disk the BIOS started, whatever its BIOS number.

use crate::BootEntry;
use diskcast_block::{Error, Result};
use diskcast_layout::u64_from_usize;
use diskcast_tree::Tree;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where GRUB's i386-pc modules live, on the host and in Debian-like guests.
pub const MODULE_DIR: &str = "/usr/lib/grub/i386-pc";
/// The Debian package with [`MODULE_DIR`].
pub const MODULE_PACKAGE: &str = "grub-pc-bin";
/// The Debian package with `grub-mkimage`.
pub const MKIMAGE_PACKAGE: &str = "grub-common";
/// Modules built into the core image: disk access through the BIOS, GPT, FAT (the ESP),
/// the Linux loader and `boot`, the serial console, `echo`.
pub const MODULES: [&str; 8] = ["biosdisk", "part_gpt", "fat", "linux", "boot", "serial", "terminal", "echo"];

const SECTOR: usize = 512;
/// boot.img: offset of the 8-byte LBA of the core image's first sector.
pub const KERNEL_SECTOR: usize = 0x5c;
/// boot.img: offset of the boot drive byte (0xff: the drive the BIOS booted from).
pub const BOOT_DRIVE: usize = 0x64;
/// boot.img: offset of the 2-byte jump that skips the "is DL a hard disk?" check. On a
/// hard disk grub-install replaces it with two NOPs, so a BIOS that passes a wrong DL
/// (0x00) still gets the first hard disk.
pub const DRIVE_CHECK: usize = 0x66;
/// End of boot.img's code on a disk: the disk signature and partition table follow.
pub const MBR_CODE_LEN: usize = 440;
/// diskboot.img: the first (and our only) blocklist entry, 12 bytes at the end of the
/// sector: start LBA (u64), sectors (u16), segment (u16).
pub const BLOCKLIST: usize = SECTOR - 12;
/// The segment diskboot loads the rest of the core image at (0x800 + one sector).
pub const CORE_SEGMENT: u16 = 0x0820;
/// Largest core image accepted from grub-mkimage (diskboot reads at most 0xffff sectors
/// in one entry, and real core images are 30-200 KiB).
const MAX_CORE: usize = 8 << 20;
/// Largest module directory copied out of a guest image.
const MAX_MODULE_BYTES: u64 = 64 << 20;
const MAX_MODULE_FILES: usize = 2000;

/// GRUB's i386-pc module directory to build from, and where it came from.
#[derive(Debug)]
pub struct GrubModules {
    dir: PathBuf,
    /// Keeps a directory extracted from a guest image alive.
    _tmp: Option<tempfile::TempDir>,
    /// For messages: "the image's /usr/lib/grub/i386-pc" or the host path.
    pub origin: String,
}

impl GrubModules {
    /// The guest's modules when `tree` has them, else the host's.
    pub fn find(tree: Option<&Tree>) -> Result<Self> {
        if let Some(t) = tree
            && let Some(m) = Self::from_tree(t)?
        {
            return Ok(m);
        }
        Self::host()
    }

    /// The host's [`MODULE_DIR`]; an error naming [`MODULE_PACKAGE`] when missing.
    pub fn host() -> Result<Self> {
        Self::installed_at(Path::new(MODULE_DIR))
    }

    /// [`Self::from_dir`] for a directory a package provides: the error names the package.
    fn installed_at(dir: &Path) -> Result<Self> {
        Self::from_dir(dir).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "no GRUB BIOS loader: {} ({}); install the {MODULE_PACKAGE} package",
                    dir.display(),
                    e.message()
                ),
            )
        })
    }

    /// A module directory on the host (e.g. a `--loader` path).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        check_dir(dir)?;
        Ok(GrubModules { dir: dir.to_path_buf(), _tmp: None, origin: dir.display().to_string() })
    }

    /// Copies the guest's `/usr/lib/grub/i386-pc` (regular files only, capped) into a
    /// temporary directory. `None` when the image has no such directory.
    pub fn from_tree(tree: &Tree) -> Result<Option<Self>> {
        let Ok(id) = tree.resolve(MODULE_DIR.as_bytes(), true) else { return Ok(None) };
        let Some(dir) = tree.node(id).as_dir() else { return Ok(None) };
        let tmp = tempfile::Builder::new()
            .prefix("diskcast-grub-")
            .tempdir()
            .map_err(|e| Error::io("cannot make a temporary directory", e))?;
        let (mut bytes, mut files) = (0u64, 0usize);
        for (name, child) in dir.entries() {
            let Some(f) = tree.node(child).as_file() else { continue };
            // Only plain names: the tree already refuses `/`, NUL, `.` and `..`.
            diskcast_tree::check_name(name)?;
            files += 1;
            bytes = bytes.saturating_add(f.size);
            if files > MAX_MODULE_FILES || bytes > MAX_MODULE_BYTES {
                return Err(Error::refused(format!(
                    "the image's {MODULE_DIR} holds more than {MAX_MODULE_FILES} files or {} MiB",
                    MAX_MODULE_BYTES >> 20
                )));
            }
            let mut data = vec![0u8; usize::try_from(f.size).map_err(|_| Error::refused("module too large"))?];
            f.read_at(&mut data, 0)?;
            let path = tmp.path().join(std::str::from_utf8(name).unwrap_or("invalid-name"));
            std::fs::write(&path, data).map_err(|e| Error::io("cannot write", e).with_file(&path))?;
        }
        let origin = format!("the image's {MODULE_DIR}");
        check_dir(tmp.path()).map_err(|e| Error::new(e.kind(), format!("{origin}: {}", e.message())))?;
        Ok(Some(GrubModules { dir: tmp.path().to_path_buf(), _tmp: Some(tmp), origin }))
    }

    /// The module directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn check_dir(dir: &Path) -> Result<()> {
    for f in ["boot.img", "diskboot.img", "kernel.img", "lzma_decompress.img", "moddep.lst"] {
        if !dir.join(f).is_file() {
            return Err(Error::invalid(format!("{} is missing", dir.join(f).display())));
        }
    }
    Ok(())
}

/// The early configuration built into the core image: serial console, then the entry's
/// kernel (and initramfs) from the ESP, which the prefix made `root`.
pub fn early_config(entry: &BootEntry) -> Result<String> {
    let mut cfg =
        String::from("serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n");
    cfg.push_str(&format!("echo {}\n", quote(&format!("diskcast: booting {}", entry.title))?));
    let mut linux = format!("linux {}", quote(&entry.kernel)?);
    for word in entry.cmdline.split_whitespace() {
        let word = linux_word(word).map_err(|e| {
            Error::argument(format!("{}; the BIOS loader cannot boot it (use --boot uefi)", e.message()))
        })?;
        linux.push(' ');
        linux.push_str(&word);
    }
    cfg.push_str(&linux);
    cfg.push('\n');
    if let Some(initrd) = &entry.initrd {
        cfg.push_str(&format!("initrd {}\n", quote(initrd)?));
    }
    cfg.push_str("boot\necho 'diskcast: GRUB could not start the kernel'\n");
    Ok(cfg)
}

/// A word of a kernel command line as a GRUB `linux` argument (single-quoted), refusing
/// quotes and backslashes: GRUB passes them to the kernel escaped, so the kernel would
/// not see the word as written.
pub fn linux_word(word: &str) -> Result<String> {
    if word.contains(['"', '\\']) {
        return Err(Error::argument(format!(
            "kernel command line word {word:?}: GRUB passes quotes and backslashes to the kernel escaped"
        )));
    }
    quote(word)
}

/// A GRUB script word in single quotes (nothing inside is special), refusing what single
/// quotes cannot hold.
pub fn quote(s: &str) -> Result<String> {
    if s.contains(['\'', '\n', '\r', '\0']) {
        return Err(Error::argument(format!("{s:?} cannot be written into a GRUB script (quote or line break)")));
    }
    Ok(format!("'{s}'"))
}

/// Runs the host's `grub-mkimage -O FORMAT` on the module directory `dir` (`origin`
/// names it in errors) with `prefix` (where GRUB looks for further modules and its
/// `grub.cfg`), `cfg` as its early configuration (GRUB's rescue parser: one command a
/// line, no `if`) and `module_list` built in; returns the image.
pub fn mkimage(
    format: &str,
    dir: &Path,
    origin: &str,
    prefix: &str,
    cfg: &str,
    module_list: &[&str],
) -> Result<Vec<u8>> {
    let tmp = tempfile::Builder::new()
        .prefix("diskcast-grub-")
        .tempdir()
        .map_err(|e| Error::io("cannot make a temporary directory", e))?;
    let (cfg_path, out_path) = (tmp.path().join("early.cfg"), tmp.path().join("grub.img"));
    std::fs::write(&cfg_path, cfg).map_err(|e| Error::io("cannot write", e).with_file(&cfg_path))?;
    let out = Command::new("grub-mkimage")
        .args(["-O", format, "-d"])
        .arg(dir)
        .arg("-o")
        .arg(&out_path)
        .arg("-c")
        .arg(&cfg_path)
        .args(["-p", prefix])
        .args(module_list)
        .output()
        .map_err(|e| {
            Error::new(
                diskcast_block::ErrorKind::Unsupported,
                format!("cannot run grub-mkimage ({e}); install the {MKIMAGE_PACKAGE} package"),
            )
        })?;
    if !out.status.success() {
        return Err(Error::unsupported(format!(
            "grub-mkimage -O {format} failed on {origin}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::read(&out_path).map_err(|e| Error::io("cannot read", e).with_file(&out_path))
}

/// GRUB's two boot images for one disk, before installation.
#[derive(Debug, Clone)]
pub struct GrubBios {
    /// boot.img (512 bytes).
    pub boot: Vec<u8>,
    /// core.img: diskboot.img's sector, then the compressed kernel, modules and config.
    pub core: Vec<u8>,
}

/// What goes on the disk: sector 0's code and the BIOS boot partition's content.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The first [`MBR_CODE_LEN`] bytes of sector 0.
    pub mbr_code: Vec<u8>,
    /// The core image, to write at the start of the BIOS boot partition.
    pub core: Vec<u8>,
}

impl GrubBios {
    /// Builds the core image with the host's `grub-mkimage` from `modules`, booting
    /// `entry` from GPT partition `esp_partition` (1-based) of the boot disk.
    pub fn build(modules: &GrubModules, esp_partition: u32, entry: &BootEntry) -> Result<Self> {
        if esp_partition == 0 {
            return Err(Error::argument("GPT partition numbers start at 1"));
        }
        let cfg = early_config(entry)?;
        Self::build_core(modules, &format!("(,gpt{esp_partition})/"), &cfg, &MODULES)
    }

    /// Builds a core image with `grub-mkimage -O i386-pc` holding `module_list`, with
    /// `prefix` (where GRUB looks for further modules and its `grub.cfg`) and `cfg` as
    /// its early configuration (GRUB's rescue parser: one command a line, no `if`).
    pub fn build_core(modules: &GrubModules, prefix: &str, cfg: &str, module_list: &[&str]) -> Result<Self> {
        let core = mkimage("i386-pc", modules.dir(), &modules.origin, prefix, cfg, module_list)?;
        let boot_path = modules.dir().join("boot.img");
        let boot = std::fs::read(&boot_path).map_err(|e| Error::io("cannot read", e).with_file(&boot_path))?;
        Self::from_images(boot, core)
    }

    /// Checks boot.img and core.img as grub-install would before writing them.
    pub fn from_images(boot: Vec<u8>, core: Vec<u8>) -> Result<Self> {
        if boot.len() != SECTOR {
            return Err(
                Error::invalid(format!("GRUB boot.img is {} bytes, not 512", boot.len())).with_field("boot.img")
            );
        }
        if boot[510..512] != [0x55, 0xaa] {
            return Err(Error::invalid("GRUB boot.img lacks the 55 AA signature").with_field("boot.img"));
        }
        if core.len() <= SECTOR || core.len() > MAX_CORE {
            return Err(Error::invalid(format!(
                "GRUB core image is {} bytes; expected more than one sector and at most {} MiB",
                core.len(),
                MAX_CORE >> 20
            ))
            .with_field("core.img"));
        }
        let seg = u16::from_le_bytes([core[BLOCKLIST + 10], core[BLOCKLIST + 11]]);
        if seg != CORE_SEGMENT {
            return Err(Error::invalid(format!(
                "the core image's first sector is not GRUB's diskboot (blocklist segment {seg:#06x}, expected {CORE_SEGMENT:#06x})"
            ))
            .with_field("diskboot blocklist"));
        }
        Ok(GrubBios { boot, core })
    }

    /// The core image's size in 512-byte sectors.
    pub fn core_sectors(&self) -> u64 {
        u64_from_usize(self.core.len().div_ceil(SECTOR))
    }

    /// Patches both images for a core image at LBA `core_lba` in a BIOS boot partition of
    /// `room` bytes: boot.img gets the core's first sector, the hard-disk drive check
    /// NOPed and "the boot drive" (0xff); diskboot gets the rest's start, count and segment.
    pub fn install(&self, core_lba: u64, room: u64) -> Result<Installed> {
        let sectors = self.core_sectors();
        let need = sectors * u64_from_usize(SECTOR);
        if need > room {
            return Err(Error::argument(format!(
                "the GRUB core image needs {need} bytes ({sectors} sectors); the BIOS boot partition holds {room}"
            )));
        }
        if core_lba == 0 {
            return Err(Error::argument("the core image cannot start at sector 0 (the MBR)"));
        }
        let rest = u16::try_from(sectors - 1).map_err(|_| Error::argument("core image too large for one blocklist"))?;
        let next = core_lba.checked_add(1).ok_or_else(|| Error::argument("core image LBA overflows"))?;
        let mut boot = self.boot.clone();
        boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
        boot[BOOT_DRIVE] = 0xff;
        boot[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
        let mut core = self.core.clone();
        core.resize(self.core.len().next_multiple_of(SECTOR), 0);
        let b = &mut core[BLOCKLIST..SECTOR];
        b[..8].copy_from_slice(&next.to_le_bytes());
        b[8..10].copy_from_slice(&rest.to_le_bytes());
        b[10..12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
        // The entry before ours ends the list (a zero count), as grub-mkimage leaves it.
        core[BLOCKLIST - 4..BLOCKLIST].fill(0);
        Ok(Installed { mbr_code: boot[..MBR_CODE_LEN].to_vec(), core })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> GrubBios {
        let mut boot = vec![0u8; 512];
        boot[DRIVE_CHECK..DRIVE_CHECK + 2].copy_from_slice(&[0xeb, 0x05]);
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let mut core = vec![0xccu8; 3 * 512 + 100];
        core[BLOCKLIST..SECTOR].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0x20, 0x08]);
        GrubBios::from_images(boot, core).unwrap()
    }

    #[test]
    fn install_patches_kernel_sector_drive_check_and_blocklist() {
        let g = fake();
        assert_eq!(g.core_sectors(), 4);
        let i = g.install(2048, 1 << 20).unwrap();
        assert_eq!(i.mbr_code.len(), 440);
        assert_eq!(&i.mbr_code[KERNEL_SECTOR..KERNEL_SECTOR + 8], &2048u64.to_le_bytes());
        assert_eq!(i.mbr_code[BOOT_DRIVE], 0xff);
        assert_eq!(&i.mbr_code[DRIVE_CHECK..DRIVE_CHECK + 2], &[0x90, 0x90]);
        assert_eq!(i.core.len(), 4 * 512);
        assert_eq!(&i.core[500..508], &2049u64.to_le_bytes());
        assert_eq!(u16::from_le_bytes([i.core[508], i.core[509]]), 3);
        assert_eq!(u16::from_le_bytes([i.core[510], i.core[511]]), 0x820);
        assert_eq!(&i.core[496..500], &[0, 0, 0, 0]);
        // Content past the first sector is untouched, the tail zero-padded.
        assert!(i.core[512..3 * 512 + 100].iter().all(|&b| b == 0xcc));
        assert!(i.core[3 * 512 + 100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn core_must_fit_the_partition() {
        let e = fake().install(2048, 3 * 512).unwrap_err();
        assert!(e.to_string().contains("BIOS boot partition holds 1536"), "{e}");
        assert!(fake().install(2048, 4 * 512).is_ok());
        let e = fake().install(0, 1 << 20).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("cannot start at sector 0"), "{e}");
    }

    #[test]
    fn bad_images_are_refused() {
        let g = fake();
        let e = GrubBios::from_images(g.boot[..511].to_vec(), g.core.clone()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("boot.img is 511 bytes"), "{e}");
        let mut nosig = g.boot.clone();
        nosig[511] = 0;
        let e = GrubBios::from_images(nosig, g.core.clone()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("lacks the 55 AA signature"), "{e}");
        let e = GrubBios::from_images(g.boot.clone(), g.core[..512].to_vec()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("core image is 512 bytes"), "{e}");
        let mut notdiskboot = g.core.clone();
        notdiskboot[510] = 0;
        let e = GrubBios::from_images(g.boot.clone(), notdiskboot).unwrap_err();
        assert!(e.to_string().contains("diskboot"), "{e}");
    }

    #[test]
    fn missing_loader_names_the_package() {
        let e = GrubModules::installed_at(Path::new("/nonexistent/grub/i386-pc")).unwrap_err();
        assert!(e.to_string().contains("install the grub-pc-bin package"), "{e}");
    }

    #[test]
    fn modules_come_from_the_guest_tree_when_it_has_them() {
        use diskcast_tree::{FileData, Kind, Meta, Node, Timestamp};
        let meta = Meta::new(0o755, Timestamp::from_secs(0));
        let mut tree = Tree::new(meta.clone());
        assert!(GrubModules::from_tree(&tree).unwrap().is_none());
        let dir = tree.create_dir_all(MODULE_DIR.as_bytes(), &meta).unwrap();
        let file =
            |b: &[u8]| Node::new(Meta::new(0o644, Timestamp::from_secs(0)), Kind::File(FileData::inline(b.to_vec())));
        tree.add(dir, b"boot.img", file(b"b")).unwrap();
        // Incomplete: the error says what is missing and where it looked.
        let e = GrubModules::from_tree(&tree).unwrap_err();
        assert!(
            e.to_string().contains("the image's /usr/lib/grub/i386-pc") && e.to_string().contains("diskboot.img"),
            "{e}"
        );
        for f in ["diskboot.img", "kernel.img", "lzma_decompress.img", "moddep.lst"] {
            tree.add(dir, f.as_bytes(), file(f.as_bytes())).unwrap();
        }
        let m = GrubModules::from_tree(&tree).unwrap().unwrap();
        assert_eq!(std::fs::read(m.dir().join("kernel.img")).unwrap(), b"kernel.img");
        assert!(m.origin.contains("image"));
    }

    #[test]
    fn early_config_quotes_and_refuses_what_grub_would_mangle() {
        let e = BootEntry {
            title: "t".into(),
            kernel: "/diskcast/vmlinuz".into(),
            initrd: Some("/diskcast/initrd.img".into()),
            cmdline: "root=PARTUUID=abc rw console=ttyS0,115200 init=/sbin/x;y $v".into(),
        };
        let c = early_config(&e).unwrap();
        assert!(
            c.contains(
                "linux '/diskcast/vmlinuz' 'root=PARTUUID=abc' 'rw' 'console=ttyS0,115200' 'init=/sbin/x;y' '$v'\n"
            ),
            "{c}"
        );
        assert!(c.contains("initrd '/diskcast/initrd.img'\nboot\n"), "{c}");
        assert!(c.starts_with("serial --unit=0 --speed=115200\n"));
        for bad in ["a=\"b c\"", "x\\y", "it's"] {
            let e = BootEntry { cmdline: bad.into(), ..e.clone() };
            let e = early_config(&e).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains("GRUB"), "{e}");
        }
    }
}
