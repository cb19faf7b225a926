//! Partition types diskcast knows by name: GPT type GUIDs from the UAPI Discoverable
//! Partitions Specification and the matching MBR system ids.

use uuid::Uuid;

/// A partition type with a short name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    /// EFI System Partition.
    Esp,
    /// Linux root filesystem for x86-64.
    RootX86_64,
    /// Linux root filesystem for 64-bit ARM.
    RootArm64,
    /// Generic Linux filesystem data.
    Linux,
    /// Linux swap.
    Swap,
    /// A FAT or exFAT filesystem (MBR ids 0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e, and 0x07
    /// for exFAT (shared with NTFS); GPT "basic data", which holds all of them).
    Fat,
    /// BIOS boot partition: raw space where GRUB's core image sits on a GPT disk booted by
    /// a BIOS (GPT only; its MBR id 0xda, "non-FS data", is never written).
    BiosBoot,
    /// An LVM2 physical volume (sgdisk's 8e00; MBR id 0x8e).
    Lvm,
}

const TYPES: [(PartType, &str, &str, u8); 8] = [
    (PartType::Esp, "esp", "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", 0xef),
    (PartType::RootX86_64, "root-x86-64", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", 0x83),
    (PartType::RootArm64, "root-arm64", "b921b045-1df0-41c3-af44-4c6f280d3fae", 0x83),
    (PartType::Linux, "linux", "0fc63daf-8483-4772-8e79-3d69d8477de4", 0x83),
    (PartType::Swap, "swap", "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", 0x82),
    (PartType::Fat, "fat", "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", 0x0c),
    (PartType::BiosBoot, "bios", "21686148-6449-6e6f-744e-656564454649", 0xda),
    (PartType::Lvm, "lvm", "e6d6d379-f507-44c2-a23c-238f2a3df928", 0x8e),
];

impl PartType {
    fn row(self) -> &'static (PartType, &'static str, &'static str, u8) {
        TYPES.iter().find(|r| r.0 == self).unwrap_or(&TYPES[0])
    }

    /// The short name (`esp`, `root-x86-64`, ...).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The GPT type GUID.
    pub fn guid(self) -> Uuid {
        Uuid::parse_str(self.row().2).unwrap_or_default()
    }

    /// The MBR system id.
    pub fn mbr_id(self) -> u8 {
        self.row().3
    }

    /// The type a GPT type GUID stands for.
    pub fn from_guid(g: &Uuid) -> Option<Self> {
        TYPES.iter().find(|r| Uuid::parse_str(r.2).is_ok_and(|u| u == *g)).map(|r| r.0)
    }

    /// The type an MBR system id stands for (0x83 reads as `linux`).
    pub fn from_mbr(id: u8) -> Option<Self> {
        match id {
            0xef => Some(PartType::Esp),
            0x83 => Some(PartType::Linux),
            0x82 => Some(PartType::Swap),
            0x8e => Some(PartType::Lvm),
            0x01 | 0x04 | 0x06 | 0x07 | 0x0b | 0x0c | 0x0e => Some(PartType::Fat),
            _ => None,
        }
    }

    /// The type a user names: a short name, `root` (this machine's architecture), or
    /// `root-aarch64`/`root-amd64` spellings.
    pub fn parse(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase();
        match n.as_str() {
            "root" => Some(if cfg!(target_arch = "aarch64") { PartType::RootArm64 } else { PartType::RootX86_64 }),
            "root-aarch64" => Some(PartType::RootArm64),
            "root-amd64" | "root-x86_64" => Some(PartType::RootX86_64),
            "data" | "basic" => Some(PartType::Fat),
            "bios-boot" | "bios_grub" => Some(PartType::BiosBoot),
            _ => TYPES.iter().find(|r| r.1 == n).map(|r| r.0),
        }
    }

    /// True when a user's `selector` picks partitions of this type: its name, an alias,
    /// or `root` for either root type.
    pub fn answers_to(self, selector: &str) -> bool {
        let s = selector.to_ascii_lowercase();
        if s == "root" {
            return matches!(self, PartType::RootX86_64 | PartType::RootArm64);
        }
        PartType::parse(&s) == Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_guids_round_trip() {
        for r in TYPES {
            assert_eq!(PartType::parse(r.1), Some(r.0));
            assert_eq!(PartType::from_guid(&r.0.guid()), Some(r.0));
        }
        assert_eq!(PartType::Esp.guid().to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert!(PartType::RootArm64.answers_to("root"));
        assert!(!PartType::Linux.answers_to("root"));
        assert_eq!(PartType::BiosBoot.guid().to_string(), "21686148-6449-6e6f-744e-656564454649");
        assert_eq!(PartType::parse("bios_grub"), Some(PartType::BiosBoot));
    }
}
