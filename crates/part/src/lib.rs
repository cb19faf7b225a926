//! GPT and MBR partition tables: reading them out of any virtual disk, planning and
//! writing new ones, and partitions as [`BlockRead`] views of their byte range.
//!
//! - [`read_table`] finds a GPT (512- or 4096-byte sectors; a broken primary header or
//!   array falls back to the backup, with a warning) or an MBR (primary, extended and
//!   logical partitions). Every field from the disk is checked: entry sizes, counts,
//!   CRC32s, and ranges against the disk's size.
//! - [`DiskPlan`] lays out partitions at 1 MiB boundaries and produces the table's bytes
//!   (protective MBR, primary and backup GPT headers and arrays; or an MBR with the
//!   active flag), to be placed into a planned disk image.
//! - [`compose::DiskComposer`] puts the table and each partition's (planned) content
//!   into one planned disk image, for `mkdisk` and `vm`.
//! - [`lvm::scan`] finds LVM2 physical volumes (on the whole disk or a partition) and
//!   their volume groups; [`lvm::Lvm::open`] reads a linear or striped LV as a disk.
//! - [`PartitionView`] reads one partition as a disk of its own, so filesystems are read
//!   from it exactly as from a whole disk.
//!
//! Specifications: UEFI 2.10 chapter 5 (GPT), the UAPI Discoverable Partitions
//! Specification (type GUIDs), and the classic MBR/EBR layout.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod compose;
mod crc;
pub use crc::crc32;
mod gpt;
pub mod lvm;
mod lvm_text;
mod mbr;
mod plan;
mod types;
mod view;

pub use plan::{ALIGN, BOOT_CODE_LEN, DiskPlan, PartSpec, PlannedPart};
pub use types::PartType;
pub use uuid::Uuid;
pub use view::PartitionView;

use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::u64_from_usize;

/// Which kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID Partition Table (with a protective MBR).
    Gpt,
    /// Classic DOS/MBR table.
    Mbr,
}

impl TableKind {
    /// `gpt` or `mbr`.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
        }
    }
}

/// One partition as read from a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based number (GPT: slot index + 1; MBR: 1-4 primary, 5.. logical).
    pub number: u32,
    /// Byte offset on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// GPT partition type GUID.
    pub type_guid: Option<Uuid>,
    /// MBR system id byte.
    pub mbr_type: Option<u8>,
    /// GPT unique partition GUID.
    pub uuid: Option<Uuid>,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// GPT attribute bits.
    pub attributes: u64,
    /// MBR active (boot) flag.
    pub bootable: bool,
}

impl Partition {
    /// The short name of the partition's type (`esp`, `root-x86-64`, `linux`, `swap`,
    /// `fat`...), if diskcast knows it.
    pub fn known_type(&self) -> Option<PartType> {
        match (self.type_guid, self.mbr_type) {
            (Some(g), _) => PartType::from_guid(&g),
            (None, Some(t)) => PartType::from_mbr(t),
            _ => None,
        }
    }

    /// A type description for listings: the short name, or the GUID / MBR id.
    pub fn type_label(&self) -> String {
        if let Some(t) = self.known_type() {
            return t.name().to_string();
        }
        match (self.type_guid, self.mbr_type) {
            (Some(g), _) => g.to_string().to_uppercase(),
            (None, Some(t)) => format!("0x{t:02x}"),
            _ => "unknown".into(),
        }
    }

    /// True when `selector` names this partition: its number, its GPT name, or its type
    /// (`esp`, `root` for any root type, `linux`, `swap`, or a type GUID).
    pub fn matches(&self, selector: &str) -> bool {
        if selector.parse::<u32>().is_ok_and(|n| n == self.number) {
            return true;
        }
        if !self.name.is_empty() && self.name == selector {
            return true;
        }
        if let Some(t) = self.known_type()
            && t.answers_to(selector)
        {
            return true;
        }
        match (Uuid::parse_str(selector), self.type_guid) {
            (Ok(u), Some(g)) => u == g,
            _ => false,
        }
    }
}

/// A partition table read from a disk.
#[derive(Debug, Clone)]
pub struct Table {
    /// GPT or MBR.
    pub kind: TableKind,
    /// Bytes per logical sector the table was found with (512 or 4096).
    pub sector_size: u64,
    /// GPT disk GUID.
    pub disk_guid: Option<Uuid>,
    /// Used entries, in slot order.
    pub partitions: Vec<Partition>,
    /// Problems that did not stop reading (broken primary GPT, backup differs).
    pub warnings: Vec<String>,
}

impl Table {
    /// The partition `selector` names (see [`Partition::matches`]): a number first, else
    /// the one partition whose name or type matches. None or several is an error that
    /// lists the partitions.
    pub fn select(&self, selector: &str) -> Result<&Partition> {
        if let Ok(n) = selector.parse::<u32>()
            && let Some(p) = self.partitions.iter().find(|p| p.number == n)
        {
            return Ok(p);
        }
        let hits: Vec<&Partition> = self.partitions.iter().filter(|p| p.matches(selector)).collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::argument(format!("no partition {selector:?}; the disk has: {}", self.listing()))),
            _ => Err(Error::argument(format!(
                "{selector:?} names several partitions; pick one by number: {}",
                self.listing()
            ))),
        }
    }

    /// One line per partition: number, type, name, size and start.
    pub fn listing(&self) -> String {
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|p| {
                let name = if p.name.is_empty() { String::new() } else { format!(" {:?}", p.name) };
                format!("{} {}{name} ({} at {})", p.number, p.type_label(), human(p.len), human(p.start))
            })
            .collect();
        if parts.is_empty() { format!("an empty {} table", self.kind.name()) } else { parts.join("; ") }
    }
}

fn human(b: u64) -> String {
    diskcast_block::size::human(b)
}

/// The partition table of `disk`, or `None` when it has none (no `55 AA` signature, no
/// GPT header). A GPT whose primary header or array is damaged is read from its backup
/// and says so in [`Table::warnings`]; a table that is present but unreadable is an
/// error naming the bad field.
pub fn read_table(disk: &dyn BlockRead) -> Result<Option<Table>> {
    if let Some(t) = gpt::read(disk)? {
        return Ok(Some(t));
    }
    mbr::read(disk)
}

/// Reads `len` bytes at `offset` of `disk`, refusing ranges past its end.
fn read_vec(disk: &dyn BlockRead, offset: u64, len: usize) -> Result<Vec<u8>> {
    diskcast_block::range_end(offset, u64_from_usize(len), disk.size())?;
    let mut b = vec![0u8; len];
    disk.read_at(&mut b, offset)?;
    Ok(b)
}
