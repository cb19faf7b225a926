//! Planning a new partitioned disk: where each partition goes and the table's bytes.

use crate::{PartType, TableKind, gpt, mbr};
use diskcast_block::{Error, Result};
use diskcast_layout::{low_u32, u64_from_usize, usize_from};
use uuid::Uuid;

/// Partitions start on 1 MiB boundaries, as every current partitioning tool does.
pub const ALIGN: u64 = 1 << 20;
const SECTOR: u64 = 512;
/// Sectors the GPT entry array takes (128 entries x 128 bytes).
const ARRAY_SECTORS: u64 = 128 * 128 / SECTOR;
/// The same, as a buffer length.
const ARRAY_BYTES: usize = 128 * 128;
const _: () = assert!(gpt::ENTRY_COUNT == 128 && gpt::ENTRY_SIZE == 128);

/// One partition to create.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// GPT partition name (ignored for MBR).
    pub name: String,
    /// Type.
    pub kind: PartType,
    /// Size in bytes (rounded up to whole sectors).
    pub size: u64,
    /// GPT unique partition GUID.
    pub uuid: Uuid,
    /// MBR active flag (BIOS boots the active partition); GPT: the legacy BIOS bootable
    /// attribute (bit 2).
    pub bootable: bool,
    /// MBR system id when the filesystem decides it rather than `kind` (exFAT in a basic
    /// data partition is 0x07, not FAT32's 0x0c); `None`: `kind`'s id. GPT uses it only
    /// for the partition a hybrid MBR lists ([`DiskPlan::set_hybrid_mbr`]).
    pub mbr_id: Option<u8>,
}

impl PartSpec {
    /// The MBR system id this partition gets.
    pub fn mbr_id(&self) -> u8 {
        self.mbr_id.unwrap_or(self.kind.mbr_id())
    }
}

/// A partition placed on the disk.
#[derive(Debug, Clone)]
pub struct PlannedPart {
    /// What was asked for.
    pub spec: PartSpec,
    /// 1-based partition number.
    pub number: u32,
    /// Byte offset on the disk (a multiple of 1 MiB).
    pub start: u64,
    /// Length in bytes (a multiple of 512).
    pub len: u64,
}

/// A partition table laid out for a new disk.
#[derive(Debug, Clone)]
pub struct DiskPlan {
    /// GPT or MBR.
    pub kind: TableKind,
    /// Total disk size in bytes.
    pub disk_size: u64,
    /// GPT disk GUID (its first four bytes are the MBR disk signature).
    pub disk_guid: Uuid,
    /// The partitions in order.
    pub parts: Vec<PlannedPart>,
    /// Boot code for the first bytes of sector 0 (the protective MBR of a GPT, or the
    /// MBR): what a BIOS runs when it boots the disk.
    boot_code: Option<Vec<u8>>,
    /// GPT: the partition (1-based) a hybrid MBR lists beside the protective entry,
    /// marked active ([`DiskPlan::set_hybrid_mbr`]).
    hybrid: Option<u32>,
}

/// Bytes of sector 0 that hold boot code: the disk signature follows at 440.
pub const BOOT_CODE_LEN: usize = 440;

fn round_up(x: u64, to: u64) -> Result<u64> {
    x.div_ceil(to).checked_mul(to).ok_or_else(|| Error::argument("size overflows"))
}

impl DiskPlan {
    /// Places `specs` one after another from 1 MiB, each on a 1 MiB boundary. The disk is
    /// `disk_size` bytes when given (an error if they do not fit), else just large enough
    /// (plus the backup GPT), rounded up to 1 MiB.
    pub fn new(kind: TableKind, specs: Vec<PartSpec>, disk_size: Option<u64>, disk_guid: Uuid) -> Result<Self> {
        if specs.is_empty() {
            return Err(Error::argument("a disk needs at least one partition"));
        }
        let max = match kind {
            TableKind::Gpt => usize_from(gpt::ENTRY_COUNT),
            TableKind::Mbr => 4,
        };
        if kind == TableKind::Mbr && specs.iter().any(|s| s.kind == PartType::BiosBoot) {
            return Err(Error::argument("a BIOS boot partition is a GPT partition type; an MBR disk has none"));
        }
        if specs.len() > max {
            return Err(Error::argument(format!("a {} table holds at most {max} partitions here", kind.name())));
        }
        let mut pos = ALIGN;
        let mut parts = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            if spec.size == 0 {
                return Err(Error::argument(format!("partition {} has size 0", i + 1)));
            }
            let start = round_up(pos, ALIGN)?;
            let len = round_up(spec.size, SECTOR)?;
            pos = start.checked_add(len).ok_or_else(|| Error::argument("partitions overflow"))?;
            // At most 128 partitions (checked above).
            parts.push(PlannedPart { spec, number: low_u32(u64_from_usize(i)) + 1, start, len });
        }
        // The backup GPT (array + header) takes the last 33 sectors.
        let tail = if kind == TableKind::Gpt { (ARRAY_SECTORS + 1) * SECTOR } else { 0 };
        let need = pos.checked_add(tail).ok_or_else(|| Error::argument("partitions overflow"))?;
        let disk_size = match disk_size {
            Some(s) if s < need => {
                return Err(Error::argument(format!("the partitions need a disk of at least {need} bytes, not {s}")));
            }
            Some(s) => round_up(s, SECTOR)?,
            None => round_up(need, ALIGN)?,
        };
        if kind == TableKind::Mbr && disk_size / SECTOR > u64::from(u32::MAX) {
            return Err(Error::argument("an MBR table addresses at most 2 TiB; use GPT"));
        }
        Ok(DiskPlan { kind, disk_size, disk_guid, parts, boot_code: None, hybrid: None })
    }

    /// Puts `code` (at most [`BOOT_CODE_LEN`] bytes, e.g. GRUB's boot.img patched for this
    /// disk) at the start of sector 0; the disk signature and partition entries after it
    /// stay the table's.
    pub fn set_boot_code(&mut self, code: &[u8]) -> Result<()> {
        if code.len() > BOOT_CODE_LEN {
            return Err(Error::argument(format!(
                "MBR boot code is {} bytes; sector 0 has room for {BOOT_CODE_LEN} before the disk signature",
                code.len()
            )));
        }
        self.boot_code = Some(code.to_vec());
        Ok(())
    }

    /// Makes the protective MBR of a GPT disk hybrid: entry 1 stays the protective one
    /// (type 0xee), now from LBA 1 to the sector before the first partition (the GPT's
    /// own sectors, which is where UEFI firmware and Linux look for it: they require it
    /// to start at LBA 1), and entry 2 lists partition `number` with its MBR id
    /// ([`PartSpec::mbr_id`]) and the active flag (0x80), for BIOSes that boot a disk
    /// only through an active MBR partition. The other partitions are in the GPT only,
    /// as `sgdisk --hybrid` leaves them.
    pub fn set_hybrid_mbr(&mut self, number: u32) -> Result<()> {
        if self.kind != TableKind::Gpt {
            return Err(Error::argument("a hybrid MBR is a GPT disk's; an MBR disk sets the active flag itself"));
        }
        let part = self
            .parts
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| Error::argument(format!("hybrid MBR: the disk has no partition {number}")))?;
        let end = part.start.checked_add(part.len).ok_or_else(|| Error::argument("partitions overflow"))?;
        if end / SECTOR > u64::from(u32::MAX) {
            return Err(Error::argument(format!(
                "hybrid MBR: partition {number} ends past the 2 TiB an MBR entry addresses"
            )));
        }
        self.hybrid = Some(number);
        Ok(())
    }

    /// The partition of type `kind` (the first one), if planned.
    pub fn find(&self, kind: PartType) -> Option<&PlannedPart> {
        self.parts.iter().find(|p| p.spec.kind == kind)
    }

    /// The table's sectors as `(byte offset, bytes)`: for GPT the protective MBR, the
    /// primary header and array at LBA 1-33 and the backup array and header in the last
    /// 33 sectors; for MBR sector 0.
    pub fn table_bytes(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out = self.bare_table_bytes();
        if let (Some(code), Some((0, sector0))) = (&self.boot_code, out.first_mut()) {
            sector0[..code.len()].copy_from_slice(code);
        }
        out
    }

    fn bare_table_bytes(&self) -> Vec<(u64, Vec<u8>)> {
        let sectors = self.disk_size / SECTOR;
        let signature = u32::from_le_bytes(self.disk_guid.as_bytes()[..4].try_into().unwrap_or_default());
        match self.kind {
            TableKind::Mbr => {
                let entries: Vec<[u8; 16]> = self
                    .parts
                    .iter()
                    .map(|p| {
                        let status = if p.spec.bootable { 0x80 } else { 0 };
                        // `new` keeps an MBR disk below 2^32 sectors: both fit.
                        mbr::entry(status, p.spec.mbr_id(), low_u32(p.start / SECTOR), low_u32(p.len / SECTOR))
                    })
                    .collect();
                vec![(0, mbr::sector(signature, &entries))]
            }
            TableKind::Gpt => {
                let hybrid = self.hybrid.and_then(|n| self.parts.iter().find(|p| p.number == n));
                let mut mbr_entries = Vec::with_capacity(2);
                match hybrid {
                    Some(h) => {
                        // Partitions start at 1 MiB or later, and `set_hybrid_mbr`
                        // checked that `h` ends below 2^32 sectors: both fit.
                        let first = self.parts.first().map_or(ALIGN, |p| p.start) / SECTOR;
                        mbr_entries.push(mbr::entry(0, 0xee, 1, low_u32(first - 1)));
                        mbr_entries.push(mbr::entry(
                            0x80,
                            h.spec.mbr_id(),
                            low_u32(h.start / SECTOR),
                            low_u32(h.len / SECTOR),
                        ));
                    }
                    None => {
                        let mut prot = mbr::entry(0, 0xee, 1, low_u32((sectors - 1).min(u64::from(u32::MAX))));
                        prot[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
                        mbr_entries.push(prot);
                    }
                }
                let mut array = Vec::with_capacity(ARRAY_BYTES);
                for p in &self.parts {
                    let attrs = if p.spec.bootable { 1 << 2 } else { 0 };
                    let first = p.start / SECTOR;
                    let last = first + p.len / SECTOR - 1;
                    array.extend_from_slice(&gpt::entry(
                        p.spec.kind.guid(),
                        p.spec.uuid,
                        first,
                        last,
                        attrs,
                        &p.spec.name,
                    ));
                }
                array.resize(ARRAY_BYTES, 0);
                let crc = crate::crc::crc32(&array);
                let (first_usable, last_usable) = (2 + ARRAY_SECTORS, sectors - 2 - ARRAY_SECTORS);
                let backup_array = sectors - 1 - ARRAY_SECTORS;
                let primary = gpt::header(1, sectors - 1, first_usable, last_usable, self.disk_guid, 2, crc);
                let backup = gpt::header(sectors - 1, 1, first_usable, last_usable, self.disk_guid, backup_array, crc);
                vec![
                    (0, mbr::sector(0, &mbr_entries)),
                    (SECTOR, primary),
                    (2 * SECTOR, array.clone()),
                    (backup_array * SECTOR, array),
                    ((sectors - 1) * SECTOR, backup),
                ]
            }
        }
    }
}
