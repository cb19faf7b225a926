//! Hybrid discs: an MBR and/or a GPT in the ISO's 32 KiB system area (as xorriso's
//! isohybrid writes them), so the same image boots from a USB stick.

use crate::{le32, le64, read_bytes};
use diskcast_block::{BlockRead, Result};
use serde::Serialize;

/// One partition of the system area's MBR or GPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HybridPartition {
    /// `mbr` or `gpt`.
    pub table: &'static str,
    /// 1-based slot.
    pub number: u32,
    /// MBR type byte (`0xef`) or GPT type GUID.
    pub kind: String,
    /// First byte and length in bytes.
    pub start: u64,
    pub size: u64,
    /// MBR active flag.
    pub bootable: bool,
    /// GPT partition name.
    pub name: String,
}

/// What the system area holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hybrid {
    /// An MBR boot signature at byte 510.
    pub mbr: bool,
    /// A GPT header ("EFI PART") at byte 512.
    pub gpt: bool,
    /// The partitions both tables list.
    pub partitions: Vec<HybridPartition>,
}

/// Reads the partition tables in the system area (the first 32 KiB). Never an error for
/// a broken table: it is shown as far as it reads.
pub fn read_hybrid(disk: &dyn BlockRead) -> Result<Hybrid> {
    let mut h = Hybrid::default();
    if disk.size() < 32 * 1024 {
        return Ok(h);
    }
    let sa = read_bytes(disk, 0, 32 * 1024, "system area")?;
    h.mbr = sa[510] == 0x55 && sa[511] == 0xAA;
    if h.mbr {
        for i in 0..4 {
            let p = &sa[446 + 16 * i..462 + 16 * i];
            if p.iter().all(|&b| b == 0) {
                continue;
            }
            h.partitions.push(HybridPartition {
                table: "mbr",
                number: i as u32 + 1,
                kind: format!("0x{:02x}", p[4]),
                start: u64::from(le32(p, 8)) * 512,
                size: u64::from(le32(p, 12)) * 512,
                bootable: p[0] == 0x80,
                name: String::new(),
            });
        }
    }
    h.gpt = &sa[512..520] == b"EFI PART";
    if h.gpt {
        let entries_lba = le64(&sa, 512 + 72);
        let count = le32(&sa, 512 + 80).min(256);
        let esize = u64::from(le32(&sa, 512 + 84));
        if (128..=4096).contains(&esize) {
            for i in 0..u64::from(count) {
                let Some(at) = entries_lba.checked_mul(512).and_then(|b| b.checked_add(i * esize)) else { break };
                let Ok(e) = read_bytes(disk, at, esize, "GPT entry") else { break };
                if e[..16].iter().all(|&b| b == 0) {
                    continue;
                }
                let (first, last) = (le64(&e, 32), le64(&e, 40));
                let name: Vec<u16> = e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                let name = String::from_utf16_lossy(&name).trim_end_matches('\0').to_string();
                h.partitions.push(HybridPartition {
                    table: "gpt",
                    number: i as u32 + 1,
                    kind: guid(&e[..16]),
                    start: first.saturating_mul(512),
                    size: last.saturating_sub(first).saturating_add(1).saturating_mul(512),
                    bootable: false,
                    name,
                });
            }
        }
    }
    Ok(h)
}

/// A GPT GUID in its usual text form (mixed-endian fields).
pub(crate) fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16].iter().map(|x| format!("{x:02X}")).collect::<String>()
    )
}
