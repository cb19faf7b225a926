//! A partitioned disk as one planned image: the partition table's sectors and each
//! partition's (planned) filesystem placed at its offset. `mkdisk` and `vm` both compose
//! their disks here, so the copy engine writes the whole disk in one pass into any format.
//!
//! It sits with the table planner rather than in a job crate because only the planner
//! knows where partition i starts ([`ALIGN`]) and both commands need it; the tree's
//! [`PlannedImage`] is what it composes into.

use crate::{ALIGN, DiskPlan, PartSpec, TableKind, Uuid};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::{Piece, PlannedImage};
use std::sync::Arc;

/// Collects partitions in disk order and composes them into a [`PlannedImage`].
///
/// Partition i starts at the 1 MiB boundary after partition i-1, so its start is known
/// as soon as the partitions before it are: a filesystem that records where it sits
/// (FAT's hidden sectors) is planned with [`next_start`](Self::next_start).
#[derive(Debug)]
pub struct DiskComposer {
    kind: TableKind,
    pos: u64,
    specs: Vec<PartSpec>,
    starts: Vec<u64>,
    contents: Vec<Option<Arc<dyn BlockRead>>>,
    boot_code: Option<Vec<u8>>,
    hybrid: Option<u32>,
}

/// A composed disk: its layout and the image to write.
#[derive(Debug)]
pub struct ComposedDisk {
    /// Where every partition went.
    pub plan: DiskPlan,
    /// The whole disk.
    pub image: PlannedImage,
}

impl DiskComposer {
    /// An empty disk with a `kind` partition table.
    pub fn new(kind: TableKind) -> Self {
        DiskComposer {
            kind,
            pos: ALIGN,
            specs: Vec::new(),
            starts: Vec::new(),
            contents: Vec::new(),
            boot_code: None,
            hybrid: None,
        }
    }

    /// Byte offset on the disk where the next partition will start.
    pub fn next_start(&self) -> u64 {
        self.pos.next_multiple_of(ALIGN)
    }

    /// Adds the next partition; `content` (a planned filesystem, a boot loader's core
    /// image) fills its start and must not be larger than `spec.size`. Returns the
    /// partition's 1-based number.
    pub fn push(&mut self, spec: PartSpec, content: Option<Arc<dyn BlockRead>>) -> Result<u32> {
        if let Some(c) = &content
            && c.size() > spec.size
        {
            return Err(Error::invalid(format!(
                "partition {:?} holds {} bytes but is only {} bytes long",
                spec.name,
                c.size(),
                spec.size
            )));
        }
        let start = self.next_start();
        self.pos =
            start.checked_add(spec.size.next_multiple_of(512)).ok_or_else(|| Error::argument("partitions overflow"))?;
        self.starts.push(start);
        self.specs.push(spec);
        self.contents.push(content);
        u32::try_from(self.specs.len()).map_err(|_| Error::argument("too many partitions"))
    }

    /// MBR boot code (a BIOS loader's first stage) for sector 0's first
    /// [`crate::BOOT_CODE_LEN`] bytes; the table is [`DiskPlan::set_boot_code`]'s to check.
    pub fn set_boot_code(&mut self, code: &[u8]) {
        self.boot_code = Some(code.to_vec());
    }

    /// Lists partition `number` (active) in a hybrid MBR beside the protective entry;
    /// [`DiskPlan::set_hybrid_mbr`] checks it and says how.
    pub fn set_hybrid_mbr(&mut self, number: u32) {
        self.hybrid = Some(number);
    }

    /// Lays out the table (`disk_size`, when given, must hold the partitions) and places
    /// the table's sectors and every partition's content.
    pub fn finish(self, disk_size: Option<u64>, disk_guid: Uuid) -> Result<ComposedDisk> {
        let mut plan = DiskPlan::new(self.kind, self.specs, disk_size, disk_guid)?;
        if let Some(code) = &self.boot_code {
            plan.set_boot_code(code)?;
        }
        if let Some(n) = self.hybrid {
            plan.set_hybrid_mbr(n)?;
        }
        let mut image = PlannedImage::new(plan.disk_size, format!("{} disk", self.kind.name()));
        for (off, bytes) in plan.table_bytes() {
            image.place_bytes(off, bytes)?;
        }
        for ((part, start), content) in plan.parts.iter().zip(self.starts).zip(self.contents) {
            if part.start != start {
                return Err(Error::invalid(format!(
                    "partition {} was planned at {start} but the table puts it at {}",
                    part.number, part.start
                )));
            }
            if let Some(c) = content {
                let len = c.size();
                image.place(part.start, len, Piece::Disk { disk: c, offset: 0 })?;
            }
        }
        Ok(ComposedDisk { image: image.seal()?, plan })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BOOT_CODE_LEN, PartType};

    fn spec(name: &str, size: u64) -> PartSpec {
        PartSpec { name: name.into(), kind: PartType::Linux, size, uuid: Uuid::nil(), bootable: false, mbr_id: None }
    }

    #[test]
    fn partitions_sit_where_next_start_said_and_boot_code_lands_in_sector_0() {
        let mut c = DiskComposer::new(TableKind::Gpt);
        assert_eq!(c.next_start(), ALIGN);
        let fs: Arc<dyn BlockRead> = Arc::new(PlannedImage::new(4096, "x"));
        c.push(spec("a", 3 * ALIGN + 512), Some(fs)).unwrap();
        assert_eq!(c.next_start(), 5 * ALIGN);
        c.push(spec("b", ALIGN), None).unwrap();
        c.set_boot_code(&[0xeb; BOOT_CODE_LEN]);
        let d = c.finish(None, Uuid::nil()).unwrap();
        assert_eq!(d.plan.parts[1].start, 5 * ALIGN);
        let mut s0 = [0u8; 512];
        d.image.read_at(&mut s0, 0).unwrap();
        assert_eq!(s0[439], 0xeb);
        assert_eq!(&s0[510..], &[0x55, 0xaa]);
        assert_eq!(s0[450], 0xee, "protective MBR entry kept");
        let mut c = DiskComposer::new(TableKind::Gpt);
        let big: Arc<dyn BlockRead> = Arc::new(PlannedImage::new(8192, "x"));
        let e = c.push(spec("small", 4096), Some(big)).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("holds 8192 bytes but is only 4096"), "{e}");
        let mut c = DiskComposer::new(TableKind::Gpt);
        c.push(spec("a", ALIGN), None).unwrap();
        c.set_boot_code(&[0; BOOT_CODE_LEN + 1]);
        let e = c.finish(None, Uuid::nil()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("room for 440"), "{e}");
    }

    /// Entry 1 protective from LBA 1 to the first partition, entry 2 the chosen partition
    /// (its MBR id, active); `sgdisk --hybrid 1:EE` writes the same two entries, except
    /// the active flag (and it lists them in the other order).
    #[test]
    fn a_hybrid_mbr_lists_one_partition_active_beside_the_protective_entry() {
        let mut c = DiskComposer::new(TableKind::Gpt);
        c.push(PartSpec { mbr_id: Some(0x0c), ..spec("fat", 40 * ALIGN) }, None).unwrap();
        c.push(spec("b", ALIGN), None).unwrap();
        c.set_hybrid_mbr(1);
        let d = c.finish(None, Uuid::nil()).unwrap();
        let mut s0 = [0u8; 512];
        d.image.read_at(&mut s0, 0).unwrap();
        let e = |i: usize| &s0[446 + 16 * i..462 + 16 * i];
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!((e(0)[0], e(0)[4], u32_at(e(0), 8), u32_at(e(0), 12)), (0, 0xee, 1, 2047));
        assert_eq!((e(1)[0], e(1)[4], u32_at(e(1), 8), u32_at(e(1), 12)), (0x80, 0x0c, 2048, 40 * 2048));
        assert!(e(2).iter().chain(e(3)).all(|&b| b == 0));
        let mut c = DiskComposer::new(TableKind::Gpt);
        c.push(spec("a", ALIGN), None).unwrap();
        c.set_hybrid_mbr(2);
        let e = c.finish(None, Uuid::nil()).unwrap_err();
        assert!(e.to_string().contains("hybrid MBR: the disk has no partition 2"), "{e}");
        let mut c = DiskComposer::new(TableKind::Mbr);
        c.push(spec("a", ALIGN), None).unwrap();
        c.set_hybrid_mbr(1);
        assert!(c.finish(None, Uuid::nil()).unwrap_err().to_string().contains("a hybrid MBR is a GPT disk's"));
    }
}
