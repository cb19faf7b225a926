//! The CPU architecture a VM disk is made for (`diskcast vm --arch`): which loader path
//! the firmware starts, which root partition type, which serial console, and which
//! kernels and static programs fit.
//!
//! Sources of the facts: UEFI 2.10 (3.5.1.1, removable media boot paths `BOOTX64.EFI`
//! and `BOOTAA64.EFI`; PE machine types 0x8664 and 0xAA64 in the PE/COFF
//! specification), the UAPI Discoverable Partitions Specification (root types), Linux's
//! `Documentation/arch/arm64/booting.rst` (the Image header's magic `ARM\x64` at 0x38)
//! and `Documentation/arch/x86/boot.rst` (the setup header's `HdrS` at 0x202), the ELF
//! specification's `e_machine` (62 x86-64, 183 AArch64).

use diskcast_block::{Error, Result};
use diskcast_layout::{le16, le32};
use diskcast_part::PartType;
use diskcast_tree::FileData;

/// A CPU architecture `diskcast vm` writes disks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64 (`amd64` in OCI and Debian).
    Amd64,
    /// 64-bit ARM (`arm64` in OCI and Debian, AArch64).
    Arm64,
}

/// Bytes of a kernel read to tell its architecture: the PE header is found through the
/// DOS header's `e_lfanew`, which real kernels keep within the first KiBs.
const HEAD_LEN: u64 = 4096;

impl Arch {
    /// Every architecture, in the order `--help` lists them.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The architecture `--arch` names (OCI/Debian names and the kernel's).
    pub fn parse(name: &str) -> Result<Self> {
        Self::from_oci(name).ok_or_else(|| {
            Error::argument(format!("--arch {name:?}: amd64 (x86_64) or arm64 (aarch64)")).with_field("arch")
        })
    }

    /// The architecture an OCI config or index entry names (`amd64`, `arm64`, or the
    /// kernel's `x86_64`, `aarch64`); `None` for any other.
    pub fn from_oci(name: &str) -> Option<Self> {
        match diskcast_oci::spec::normalize_arch(name) {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The OCI (and Debian) name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The machine this runs on, when it is one of ours.
    pub fn host() -> Option<Self> {
        Self::from_oci(std::env::consts::ARCH)
    }

    /// The Discoverable Partitions root type.
    pub fn root_type(self) -> PartType {
        match self {
            Arch::Amd64 => PartType::RootX86_64,
            Arch::Arm64 => PartType::RootArm64,
        }
    }

    /// The UEFI loader binaries for this architecture.
    pub fn efi(self) -> &'static diskcast_bootloader::EfiArch {
        match self {
            Arch::Amd64 => &diskcast_bootloader::EfiArch::X64,
            Arch::Arm64 => &diskcast_bootloader::EfiArch::AA64,
        }
    }

    /// The serial console every platform's console log shows: the 16550 UART on x86
    /// (`ttyS0`), the PL011 UART of QEMU's `virt` machine and of Arm servers (AWS
    /// Graviton, Azure Cobalt/Ampere, Compute Engine's Arm machines) on arm64 (`ttyAMA0`).
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::Amd64 => "ttyS0,115200",
            Arch::Arm64 => "ttyAMA0,115200",
        }
    }

    /// The ELF `e_machine` of this architecture's programs.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The architecture of a kernel file, from its headers: the EFI stub's PE machine
    /// when it has one (x86 bzImages and arm64 Images both do), else an x86 setup header
    /// (`HdrS`) or the arm64 Image magic. `None`: none of these (a compressed or unknown
    /// file).
    pub fn of_kernel(kernel: &FileData) -> Option<Self> {
        let len = usize::try_from(kernel.size.min(HEAD_LEN)).ok()?;
        let mut head = vec![0u8; len];
        kernel.read_at(&mut head, 0).ok()?;
        Self::of_kernel_head(&head)
    }

    fn of_kernel_head(head: &[u8]) -> Option<Self> {
        if let Some(m) = pe_machine(head) {
            return match m {
                0x8664 => Some(Arch::Amd64),
                0xaa64 => Some(Arch::Arm64),
                _ => None,
            };
        }
        if head.get(0x202..0x206) == Some(b"HdrS") {
            return Some(Arch::Amd64);
        }
        if head.get(0x38..0x3c) == Some(b"ARM\x64") {
            return Some(Arch::Arm64);
        }
        None
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The PE/COFF machine of an image whose first bytes are `head`: the DOS header's
/// `e_lfanew` (0x3c) points at `PE\0\0`, followed by the machine. `None` when `head` is
/// not a PE image (or the header lies beyond it).
pub fn pe_machine(head: &[u8]) -> Option<u16> {
    if !head.starts_with(b"MZ") {
        return None;
    }
    let at = usize::try_from(le32(head, 0x3c, "e_lfanew").ok()?).ok()?;
    if head.get(at..at.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    le16(head, at.checked_add(4)?, "Machine").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..2].copy_from_slice(b"MZ");
        h[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        h[0x80..0x84].copy_from_slice(b"PE\0\0");
        h[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn kernels_tell_their_architecture() {
        assert_eq!(Arch::of_kernel_head(&pe(0xaa64)), Some(Arch::Arm64));
        assert_eq!(Arch::of_kernel_head(&pe(0x8664)), Some(Arch::Amd64));
        assert_eq!(Arch::of_kernel_head(&pe(0x14c)), None);
        let mut image = vec![0u8; 64];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(Arch::of_kernel_head(&image), Some(Arch::Arm64));
        let mut bz = vec![0u8; 0x210];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(Arch::of_kernel_head(&bz), Some(Arch::Amd64));
        assert_eq!(Arch::of_kernel_head(b"\x1f\x8b\x08"), None);
    }

    #[test]
    fn hostile_pe_offsets_are_not_followed() {
        let mut h = pe(0xaa64);
        h[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pe_machine(&h), None);
        assert_eq!(pe_machine(&h[..0x3e]), None);
        h[0x3c..0x40].copy_from_slice(&510u32.to_le_bytes());
        assert_eq!(pe_machine(&h), None);
    }

    #[test]
    fn names() {
        assert_eq!(Arch::parse("aarch64").unwrap(), Arch::Arm64);
        assert_eq!(Arch::parse("x86_64").unwrap(), Arch::Amd64);
        let e = Arch::parse("riscv64").unwrap_err();
        assert!(e.to_string().contains("amd64 (x86_64) or arm64"), "{e}");
        assert_eq!(Arch::Arm64.root_type().guid().to_string(), "b921b045-1df0-41c3-af44-4c6f280d3fae");
    }
}
