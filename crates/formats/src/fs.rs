//! Every filesystem diskcast knows, in one registry: how each is recognised and read,
//! which builders write it, and which partition ids a partition holding it gets.
//!
//! `ls`/`cat`/`extract` (through `diskcast-sources`) probe its readers, `mkfs` and `mkdisk`
//! pick its builders by name, and `diskcast formats` lists it, so adding a filesystem is
//! one entry in [`filesystems`] plus its crate.

use diskcast_block::{BlockRead, Error, Result};
use diskcast_part::PartType;
use diskcast_tree::{FsBuilder, FsReader};

/// The partition a filesystem natively sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionIds {
    /// Its GPT type (Linux data, basic data).
    pub gpt: PartType,
    /// Its MBR system id: what a partition of type `gpt` holding it gets on an MBR disk
    /// (exFAT 0x07 where FAT32 is 0x0c).
    pub mbr: u8,
}

/// One filesystem format.
#[derive(Debug)]
pub struct Filesystem {
    /// The name `ls` reports and `diskcast formats` lists (`fat`, `ext4`, `iso9660`).
    pub name: &'static str,
    /// Recognises (by magic) and reads it; `None` when diskcast only writes it.
    pub reader: Option<Box<dyn FsReader>>,
    /// Writers, each by the name `mkfs` and `mkdisk --part` take (`fat32`, `fat16`);
    /// empty when diskcast only reads it.
    pub builders: Vec<Box<dyn FsBuilder>>,
    /// Its native partition; `None` for filesystems that fill a whole medium (ISO 9660).
    pub partition: Option<PartitionIds>,
}

impl Filesystem {
    /// True for a Linux filesystem (its native partition is Linux data): what a VM
    /// disk's root partition holds.
    pub fn is_linux(&self) -> bool {
        self.partition.is_some_and(|p| p.gpt == PartType::Linux)
    }

    /// The MBR system id of a partition of type `kind` holding this filesystem: its own id
    /// when `kind` is its native type (an exFAT basic data partition is 0x07), else
    /// `kind`'s (an ESP is 0xef whatever FAT it holds).
    pub fn mbr_id(&self, kind: PartType) -> u8 {
        match self.partition {
            Some(p) if p.gpt == kind => p.mbr,
            _ => kind.mbr_id(),
        }
    }
}

/// The filesystems, in probe order.
#[derive(Debug)]
pub struct FsRegistry {
    filesystems: Vec<Filesystem>,
}

/// A registry with every filesystem. Probes go in this order: ISO 9660 first, since a
/// hybrid disc's sector 0 is an MBR whose partitions other readers would take.
pub fn filesystems() -> FsRegistry {
    let linux = Some(PartitionIds { gpt: PartType::Linux, mbr: 0x83 });
    FsRegistry {
        filesystems: vec![
            Filesystem {
                name: "iso9660",
                reader: Some(Box::new(diskcast_iso9660::Iso9660Reader)),
                builders: vec![Box::new(diskcast_iso9660::write::IsoBuilder::default())],
                partition: None,
            },
            Filesystem {
                name: "ext4",
                reader: Some(Box::new(diskcast_ext4::Ext4Reader)),
                builders: vec![Box::new(diskcast_ext4::Ext4Builder)],
                partition: linux,
            },
            Filesystem {
                name: "fat",
                reader: Some(Box::new(diskcast_fat::FatReader)),
                builders: vec![Box::new(diskcast_fat::FatBuilder::FAT32), Box::new(diskcast_fat::FatBuilder::FAT16)],
                // FAT32 with LBA addressing, which every disk over 8 GiB needs; FAT16 kept
                // it too (as before the registry), and readers go by the boot sector.
                partition: Some(PartitionIds { gpt: PartType::Fat, mbr: 0x0c }),
            },
            Filesystem {
                name: "exfat",
                reader: Some(Box::new(diskcast_exfat::ExfatReader)),
                builders: vec![Box::new(diskcast_exfat::ExfatBuilder)],
                // 0x07 (IFS: NTFS, exFAT), as Windows and mkfs.exfat users' fdisk set it.
                partition: Some(PartitionIds { gpt: PartType::Fat, mbr: 0x07 }),
            },
            Filesystem {
                name: "squashfs",
                reader: Some(Box::new(diskcast_squashfs::SquashfsReader)),
                builders: Vec::new(),
                partition: linux,
            },
            Filesystem {
                name: "xfs",
                reader: Some(Box::new(diskcast_xfs::XfsReader)),
                builders: Vec::new(),
                partition: linux,
            },
        ],
    }
}

impl FsRegistry {
    /// Every filesystem, in probe order.
    pub fn iter(&self) -> impl Iterator<Item = &Filesystem> {
        self.filesystems.iter()
    }

    /// The filesystem on `disk`: the first whose reader recognises it.
    pub fn probe(&self, disk: &dyn BlockRead) -> Result<Option<(&Filesystem, &dyn FsReader)>> {
        for fs in &self.filesystems {
            if let Some(r) = &fs.reader
                && r.probe(disk)?
            {
                return Ok(Some((fs, r.as_ref())));
            }
        }
        Ok(None)
    }

    /// The names of the filesystems diskcast reads, in probe order.
    pub fn reader_names(&self) -> Vec<&'static str> {
        self.iter().filter(|f| f.reader.is_some()).map(|f| f.name).collect()
    }

    /// Every builder with the filesystem it writes.
    pub fn builders(&self) -> impl Iterator<Item = (&Filesystem, &dyn FsBuilder)> {
        self.iter().flat_map(|f| f.builders.iter().map(move |b| (f, b.as_ref())))
    }

    /// The builder `mkfs`/`mkdisk` name `name`, or an error listing them.
    pub fn builder(&self, name: &str) -> Result<(&Filesystem, &dyn FsBuilder)> {
        if let Some(found) = self.builders().find(|(_, b)| b.name() == name) {
            return Ok(found);
        }
        let names: Vec<&str> = self.builders().map(|(_, b)| b.name()).collect();
        let also = match self.iter().find(|f| f.name == name) {
            Some(f) if f.builders.is_empty() => format!(" ({name} is read only)"),
            _ => String::new(),
        };
        Err(Error::argument(format!("unknown filesystem {name:?}{also}; diskcast writes: {}", names.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskcast_block::ErrorKind;

    #[test]
    fn builder_and_reader_names_are_unique() {
        let r = filesystems();
        let mut names: Vec<&str> = r.builders().map(|(_, b)| b.name()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "two builders share a name");
        let readers = r.reader_names();
        assert_eq!(readers, ["iso9660", "ext4", "fat", "exfat", "squashfs", "xfs"]);
        for f in r.iter() {
            if let Some(reader) = &f.reader {
                assert_eq!(reader.name(), f.name, "reader of {} reports another name", f.name);
            }
        }
    }

    #[test]
    fn unknown_and_read_only_builders_are_named_in_the_error() {
        let r = filesystems();
        let e = r.builder("btrfs").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("unknown filesystem \"btrfs\"; diskcast writes: iso9660, ext4, fat32"), "{e}");
        let e = r.builder("squashfs").unwrap_err();
        assert!(e.message().contains("(squashfs is read only)"), "{e}");
        let (fs, b) = r.builder("fat16").unwrap();
        assert_eq!((fs.name, b.name()), ("fat", "fat16"));
    }

    #[test]
    fn mbr_ids_follow_the_filesystem_only_in_its_native_type() {
        let r = filesystems();
        let fs = |name: &str| r.iter().find(|f| f.name == name).unwrap();
        assert_eq!(fs("exfat").mbr_id(PartType::Fat), 0x07);
        assert_eq!(fs("fat").mbr_id(PartType::Fat), 0x0c);
        assert_eq!(fs("fat").mbr_id(PartType::Esp), 0xef);
        assert_eq!(fs("exfat").mbr_id(PartType::Linux), 0x83);
        assert_eq!(fs("ext4").mbr_id(PartType::Linux), 0x83);
        assert_eq!(fs("iso9660").mbr_id(PartType::Fat), 0x0c);
        assert!(fs("ext4").is_linux() && fs("squashfs").is_linux() && fs("xfs").is_linux() && !fs("fat").is_linux());
    }
}
