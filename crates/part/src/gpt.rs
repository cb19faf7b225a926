//! GUID Partition Table (UEFI 2.10, 5.3): headers at LBA 1 and the last LBA, each with a
//! CRC32 of itself and of its partition entry array.

use crate::crc::crc32;
use crate::{Partition, Table, TableKind, read_vec};
use diskcast_block::{BlockRead, Error, Result};
use diskcast_layout::{
    FromBytes, Immutable, IntoBytes, KnownLayout, Le16, Le32, Le64, Unaligned, fit, read as read_at, u64_from_usize,
    usize_from, usize_from_u64,
};
use uuid::Uuid;

/// A GPT header as stored (UEFI 2.10, table 5-5), read by [`header_at`] and written by
/// [`header`]; a sector's remaining bytes are reserved.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawHeader {
    signature: [u8; 8],
    revision: Le32,
    header_size: Le32,
    header_crc32: Le32,
    reserved: Le32,
    my_lba: Le64,
    alternate_lba: Le64,
    first_usable_lba: Le64,
    last_usable_lba: Le64,
    disk_guid: [u8; 16],
    partition_entry_lba: Le64,
    number_of_partition_entries: Le32,
    size_of_partition_entry: Le32,
    partition_entry_array_crc32: Le32,
}
const _: () = assert!(size_of::<RawHeader>() == 92);

/// A GPT partition entry as stored (table 5-6), read by [`entries`] and written by [`entry`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct RawEntry {
    type_guid: [u8; 16],
    unique_guid: [u8; 16],
    starting_lba: Le64,
    ending_lba: Le64,
    attributes: Le64,
    name: [Le16; 36],
}
const _: () = assert!(size_of::<RawEntry>() == 128);

/// "EFI PART".
pub(crate) const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header size written (the UEFI 2.x header is 92 bytes).
pub(crate) const HEADER_SIZE: u32 = 92;
/// Entry size written.
pub(crate) const ENTRY_SIZE: u32 = 128;
/// Entries written: the 16 KiB array every tool expects.
pub(crate) const ENTRY_COUNT: u32 = 128;
/// Largest partition entry array read (real ones are 16 KiB): caps what a hostile
/// header can make us allocate.
const MAX_ARRAY: u64 = 4 << 20;

/// A parsed and checked GPT header.
#[derive(Debug, Clone)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    array_crc: u32,
}

fn bad(what: &str, field: &'static str, offset: u64) -> Error {
    Error::corrupt(format!("GPT {what}")).with_field(field).with_offset(offset)
}

/// Parses the header in the sector at `lba`, checking its signature, size, CRC and the
/// ranges it names. `Ok(None)`: no GPT signature there.
fn header_at(disk: &dyn BlockRead, ss: u64, lba: u64) -> Result<Option<Header>> {
    let at = lba.checked_mul(ss).ok_or_else(|| Error::out_of_bounds("GPT header LBA overflows"))?;
    if at.checked_add(ss).is_none_or(|e| e > disk.size()) {
        return Ok(None);
    }
    let b = read_vec(disk, at, usize_from_u64(ss, "GPT sector size")?)?;
    let r = read_at::<RawHeader>(&b, 0, "GPT header")?;
    if &r.signature != SIGNATURE {
        return Ok(None);
    }
    let hsize = r.header_size.get();
    if !(92..=ss).contains(&u64::from(hsize)) {
        return Err(bad(&format!("header size {hsize} is not in 92..={ss}"), "header_size", at + 12));
    }
    let mut h = diskcast_layout::bytes(&b, 0, usize_from(hsize), "GPT header")?.to_vec();
    let stored = r.header_crc32.get();
    diskcast_layout::put_le32(&mut h, 16, 0, "GPT header")?;
    let computed = crc32(&h);
    if stored != computed {
        return Err(bad(
            &format!("header CRC32 is {stored:#010x}, the header's bytes give {computed:#010x}"),
            "header_crc32",
            at + 16,
        ));
    }
    let hdr = Header {
        my_lba: r.my_lba.get(),
        alternate_lba: r.alternate_lba.get(),
        first_usable: r.first_usable_lba.get(),
        last_usable: r.last_usable_lba.get(),
        disk_guid: Uuid::from_bytes_le(r.disk_guid),
        entries_lba: r.partition_entry_lba.get(),
        entry_count: r.number_of_partition_entries.get(),
        entry_size: r.size_of_partition_entry.get(),
        array_crc: r.partition_entry_array_crc32.get(),
    };
    let sectors = disk.size() / ss;
    if hdr.my_lba != lba {
        return Err(bad(&format!("header at LBA {lba} says it is at LBA {}", hdr.my_lba), "my_lba", at + 24));
    }
    if hdr.first_usable > hdr.last_usable || hdr.last_usable >= sectors {
        return Err(Error::out_of_bounds(format!(
            "GPT usable range LBA {}..={} does not fit a disk of {sectors} sectors",
            hdr.first_usable, hdr.last_usable
        ))
        .with_field("last_usable_lba")
        .with_offset(at + 48));
    }
    if hdr.entry_size < 128 || !hdr.entry_size.is_multiple_of(8) {
        return Err(bad(
            &format!("entry size {} is below 128 or not a multiple of 8", hdr.entry_size),
            "size_of_partition_entry",
            at + 84,
        ));
    }
    let array = u64::from(hdr.entry_count) * u64::from(hdr.entry_size);
    if array > MAX_ARRAY {
        return Err(Error::out_of_bounds(format!(
            "GPT entry array of {} entries x {} bytes exceeds {MAX_ARRAY} bytes",
            hdr.entry_count, hdr.entry_size
        ))
        .with_field("number_of_partition_entries")
        .with_offset(at + 80));
    }
    let array_end = hdr.entries_lba.checked_mul(ss).and_then(|s| s.checked_add(array)).filter(|&e| e <= disk.size());
    if array_end.is_none() {
        return Err(Error::out_of_bounds(format!(
            "GPT entry array at LBA {} runs past the disk's end",
            hdr.entries_lba
        ))
        .with_field("partition_entry_lba")
        .with_offset(at + 72));
    }
    Ok(Some(hdr))
}

/// Reads and checks the entry array `hdr` names.
fn entries(disk: &dyn BlockRead, ss: u64, hdr: &Header) -> Result<Vec<Partition>> {
    let at = hdr.entries_lba * ss;
    // At most MAX_ARRAY bytes (checked with the header).
    let len = usize_from(hdr.entry_count) * usize_from(hdr.entry_size);
    let b = read_vec(disk, at, len)?;
    let computed = crc32(&b);
    if computed != hdr.array_crc {
        return Err(bad(
            &format!("entry array CRC32 is {:#010x} in the header, the array gives {computed:#010x}", hdr.array_crc),
            "partition_entry_array_crc32",
            at,
        ));
    }
    let mut out = Vec::new();
    for (i, e) in b.chunks_exact(usize_from(hdr.entry_size)).enumerate() {
        let e = read_at::<RawEntry>(e, 0, "GPT partition entry")?;
        let type_guid = Uuid::from_bytes_le(e.type_guid);
        if type_guid.is_nil() {
            continue;
        }
        let (first, last) = (e.starting_lba.get(), e.ending_lba.get());
        let eoff = at + u64_from_usize(i * usize_from(hdr.entry_size));
        if first > last || last > hdr.last_usable || first < hdr.first_usable {
            return Err(Error::out_of_bounds(format!(
                "GPT partition {} spans LBA {first}..={last}, outside the usable LBA {}..={}",
                i + 1,
                hdr.first_usable,
                hdr.last_usable
            ))
            .with_field("ending_lba")
            .with_offset(eoff + 32));
        }
        let name_units: Vec<u16> = e.name.iter().map(|u| u.get()).take_while(|&u| u != 0).collect();
        out.push(Partition {
            number: fit::<u32, u64>(u64_from_usize(i), "GPT partition number")? + 1,
            start: first * ss,
            len: (last - first + 1) * ss,
            type_guid: Some(type_guid),
            mbr_type: None,
            uuid: Some(Uuid::from_bytes_le(e.unique_guid)),
            name: String::from_utf16_lossy(&name_units),
            attributes: e.attributes.get(),
            bootable: false,
        });
    }
    Ok(out)
}

/// A header and its checked array, or the reason they cannot be used.
fn copy_at(disk: &dyn BlockRead, ss: u64, lba: u64) -> Result<Option<(Header, Vec<Partition>)>> {
    let Some(h) = header_at(disk, ss, lba)? else { return Ok(None) };
    let parts = entries(disk, ss, &h)?;
    Ok(Some((h, parts)))
}

/// The GPT of `disk`, trying 512- then 4096-byte sectors. The primary copy is used when
/// it is sound; otherwise the backup, with a warning naming what was wrong.
pub(crate) fn read(disk: &dyn BlockRead) -> Result<Option<Table>> {
    for ss in [512u64, 4096] {
        let sectors = disk.size() / ss;
        if sectors < 3 {
            continue;
        }
        let primary = copy_at(disk, ss, 1);
        // The backup is where the primary says, or else at the last LBA.
        let alt = match &primary {
            Ok(Some((h, _))) if h.alternate_lba < sectors => h.alternate_lba,
            _ => sectors - 1,
        };
        let backup = copy_at(disk, ss, alt);
        let (hdr, parts, mut warnings) = match (primary, backup) {
            (Ok(None), Ok(None)) => continue,
            (Ok(Some((h, p))), b) => {
                let mut w = Vec::new();
                match b {
                    Ok(Some((bh, bp))) if bp != p || bh.disk_guid != h.disk_guid => {
                        w.push("the backup GPT differs from the primary".to_string());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => w.push(format!("no backup GPT header at LBA {alt}")),
                    Err(e) => w.push(format!("the backup GPT is damaged: {e}")),
                }
                (h, p, w)
            }
            (Err(pe), Ok(Some((h, p)))) => {
                (h, p, vec![format!("the primary GPT is damaged ({pe}); using the backup at LBA {alt}")])
            }
            (Ok(None), Ok(Some((h, p)))) => {
                (h, p, vec![format!("no primary GPT header at LBA 1; using the backup at LBA {alt}")])
            }
            (Err(pe), Ok(None)) => return Err(pe),
            (Err(pe), Err(be)) => {
                return Err(Error::new(pe.kind(), format!("{pe}; the backup GPT is damaged too: {be}")));
            }
            (Ok(None), Err(be)) => return Err(be),
        };
        if hdr.alternate_lba >= sectors {
            warnings.push(format!("the GPT header names LBA {} beyond the disk's end", hdr.alternate_lba));
        }
        return Ok(Some(Table {
            kind: TableKind::Gpt,
            sector_size: ss,
            disk_guid: Some(hdr.disk_guid),
            partitions: parts,
            warnings,
        }));
    }
    Ok(None)
}

/// One GPT entry of 128 bytes.
pub(crate) fn entry(type_guid: Uuid, uuid: Uuid, first: u64, last: u64, attributes: u64, name: &str) -> [u8; 128] {
    let mut r = RawEntry {
        type_guid: type_guid.to_bytes_le(),
        unique_guid: uuid.to_bytes_le(),
        starting_lba: first.into(),
        ending_lba: last.into(),
        attributes: attributes.into(),
        name: [Le16::ZERO; 36],
    };
    for (dst, u) in r.name.iter_mut().zip(name.encode_utf16()) {
        *dst = u.into();
    }
    let mut e = [0u8; 128];
    e.copy_from_slice(r.as_bytes());
    e
}

/// A 512-byte sector holding a GPT header.
#[allow(clippy::too_many_arguments)]
pub(crate) fn header(
    my_lba: u64,
    alternate: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Uuid,
    entries_lba: u64,
    array_crc: u32,
) -> Vec<u8> {
    let mut r = RawHeader {
        signature: *SIGNATURE,
        revision: 0x0001_0000.into(),
        header_size: HEADER_SIZE.into(),
        header_crc32: 0.into(),
        reserved: 0.into(),
        my_lba: my_lba.into(),
        alternate_lba: alternate.into(),
        first_usable_lba: first_usable.into(),
        last_usable_lba: last_usable.into(),
        disk_guid: disk_guid.to_bytes_le(),
        partition_entry_lba: entries_lba.into(),
        number_of_partition_entries: ENTRY_COUNT.into(),
        size_of_partition_entry: ENTRY_SIZE.into(),
        partition_entry_array_crc32: array_crc.into(),
    };
    r.header_crc32 = crc32(r.as_bytes()).into();
    let mut h = vec![0u8; 512];
    h[..size_of::<RawHeader>()].copy_from_slice(r.as_bytes());
    h
}
