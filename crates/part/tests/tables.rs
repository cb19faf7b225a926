//! Partition tables made by sgdisk and sfdisk read back; tables we plan judged by
//! `sgdisk -v` and `sfdisk --dump`; hostile tables refused with clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::{BlockRead, ErrorKind, Result, ResultExt};
use diskcast_part::{DiskPlan, PartSpec, PartType, Table, TableKind, Uuid, crc32, read_table};
use diskcast_raw::RawReader;
use diskcast_testkit::{le32, patch, read_bytes, run, within};
use std::path::{Path, PathBuf};
use std::process::Command;

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn table_of(path: &Path) -> Result<Option<Table>> {
    let disk = RawReader::open(path)?;
    read_table(&disk).file(path)
}

fn sfdisk(path: &Path, script: &str) {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk is required (install fdisk)");
    c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "sfdisk failed");
}

fn sgdisk_disk(dir: &Path) -> PathBuf {
    let p = blank(dir, "gpt.img", 64 << 20);
    let s = p.to_str().unwrap();
    run(
        "sgdisk",
        &["-n", "1:2048:+16M", "-t", "1:ef00", "-c", "1:EFI system", "-n", "2:0:0", "-t", "2:8304", "-c", "2:root", s],
    );
    p
}

#[test]
fn sgdisk_gpt_reads_with_types_names_and_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(dir.path());
    let t = table_of(&p).unwrap().unwrap();
    assert_eq!(t.kind, TableKind::Gpt);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions.len(), 2);
    let (esp, root) = (&t.partitions[0], &t.partitions[1]);
    assert_eq!((esp.start, esp.len, esp.name.as_str()), (1 << 20, 16 << 20, "EFI system"));
    assert_eq!(esp.known_type(), Some(PartType::Esp));
    assert_eq!(root.known_type(), Some(PartType::RootX86_64));
    assert!(root.matches("root") && root.matches("2") && esp.matches("esp") && esp.matches("EFI system"));
    // sgdisk -i names the unique GUID we read.
    let info = run("sgdisk", &["-i", "2", p.to_str().unwrap()]);
    let uuid = root.uuid.unwrap().to_string().to_uppercase();
    assert!(info.contains(&uuid), "{info} lacks {uuid}");
    assert!(info.contains(&format!("First sector: {} ", root.start / 512)), "{info}");
}

#[test]
fn sfdisk_mbr_with_logical_partitions_and_active_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "mbr.img", 64 << 20);
    sfdisk(&p, "label: dos\n,8M,c,*\n,8M,83\n,,5\n,10M,83\n,10M,82\n");
    let t = table_of(&p).unwrap().unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    let got: Vec<_> = t.partitions.iter().map(|p| (p.number, p.mbr_type.unwrap(), p.bootable, p.len >> 20)).collect();
    assert_eq!(got, [(1, 0x0c, true, 8), (2, 0x83, false, 8), (5, 0x83, false, 10), (6, 0x82, false, 10)]);
    let dump = run("sfdisk", &["--dump", p.to_str().unwrap()]);
    for part in &t.partitions {
        assert!(dump.contains(&format!("start={:>12}, size={:>12}", part.start / 512, part.len / 512)), "{dump}");
    }
}

fn spec(name: &str, kind: PartType, size: u64, bootable: bool) -> PartSpec {
    PartSpec { name: name.into(), kind, size, uuid: Uuid::new_v4(), bootable, mbr_id: None }
}

fn write_plan(plan: &DiskPlan, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(plan.disk_size).unwrap();
    use std::os::unix::fs::FileExt;
    for (off, bytes) in plan.table_bytes() {
        f.write_all_at(&bytes, off).unwrap();
    }
}

#[test]
fn planned_gpt_passes_sgdisk_verify_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let parts = vec![
        spec("ESP", PartType::Esp, 33 << 20, false),
        spec("root", PartType::RootX86_64, 20 << 20, false),
        spec("swap", PartType::Swap, 3 << 20, false),
    ];
    let plan = DiskPlan::new(TableKind::Gpt, parts, None, Uuid::new_v4()).unwrap();
    let p = dir.path().join("ours.img");
    write_plan(&plan, &p);
    let verify = run("sgdisk", &["-v", p.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    let dump = run("sfdisk", &["--dump", p.to_str().unwrap()]);
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(dump.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "{dump}");
    assert!(dump.contains("type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"), "{dump}");
    assert!(dump.contains("name=\"ESP\""), "{dump}");
    assert!(dump.contains(&format!("label-id: {}", plan.disk_guid.to_string().to_uppercase())), "{dump}");
    for pp in &plan.parts {
        assert_eq!(pp.start % (1 << 20), 0);
        let line = format!("start={:>12}, size={:>12}, type=", pp.start / 512, pp.len / 512);
        assert!(dump.contains(&line), "{dump} lacks {line}");
        assert!(dump.contains(&format!("uuid={}", pp.spec.uuid.to_string().to_uppercase())), "{dump}");
    }
    let t = table_of(&p).unwrap().unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions.len(), 3);
    assert_eq!(t.partitions[2].known_type(), Some(PartType::Swap));
}

#[test]
fn planned_gpt_with_bios_boot_partition_and_boot_code_passes_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let parts = vec![
        spec("bios", PartType::BiosBoot, 1 << 20, false),
        spec("esp", PartType::Esp, 8 << 20, false),
        spec("root", PartType::RootX86_64, 8 << 20, false),
    ];
    let mut plan = DiskPlan::new(TableKind::Gpt, parts, None, Uuid::new_v4()).unwrap();
    let code: Vec<u8> = (0..440u32).map(|i| (i % 251) as u8 | 1).collect();
    plan.set_boot_code(&code).unwrap();
    let e = plan.set_boot_code(&[0u8; 441]).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("room for 440"), "{e}");
    let p = dir.path().join("bios.img");
    write_plan(&plan, &p);
    let verify = run("sgdisk", &["-v", p.to_str().unwrap()]);
    assert!(verify.contains("No problems found"), "{verify}");
    // sgdisk's own short code for the BIOS boot partition.
    let info = run("sgdisk", &["-p", p.to_str().unwrap()]);
    assert!(info.lines().any(|l| l.contains("EF02") && l.trim_start().starts_with('1')), "{info}");
    let sector0 = read_bytes(&p, 0, 512);
    assert_eq!(&sector0[..440], &code[..]);
    assert_eq!(sector0[446 + 4], 0xee, "the protective entry stays");
    assert_eq!(&sector0[510..], &[0x55, 0xaa]);
    let t = table_of(&p).unwrap().unwrap();
    assert_eq!(t.partitions[0].known_type(), Some(PartType::BiosBoot));
    assert!(t.partitions[0].matches("bios"));
    // An MBR disk has no BIOS boot partition type.
    let e = DiskPlan::new(TableKind::Mbr, vec![spec("", PartType::BiosBoot, 1 << 20, false)], None, Uuid::new_v4())
        .unwrap_err();
    assert!(e.to_string().contains("GPT"), "{e}");
}

#[test]
fn planned_mbr_carries_boot_code_before_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan =
        DiskPlan::new(TableKind::Mbr, vec![spec("", PartType::Linux, 8 << 20, true)], Some(16 << 20), Uuid::new_v4())
            .unwrap();
    plan.set_boot_code(&[0xfa; 300]).unwrap();
    let p = dir.path().join("mbr.img");
    write_plan(&plan, &p);
    let dump = run("sfdisk", &["--dump", p.to_str().unwrap()]);
    assert!(dump.contains("start=        2048, size=       16384, type=83, bootable"), "{dump}");
    let s0 = read_bytes(&p, 0, 512);
    assert!(s0[..300].iter().all(|&b| b == 0xfa) && s0[300..440].iter().all(|&b| b == 0));
    assert_eq!(le32(&s0, 440), u32::from_le_bytes(plan.disk_guid.as_bytes()[..4].try_into().unwrap()));
}

#[test]
fn planned_mbr_has_the_active_flag_for_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let parts = vec![spec("", PartType::Fat, 8 << 20, true), spec("", PartType::Linux, 8 << 20, false)];
    let plan = DiskPlan::new(TableKind::Mbr, parts, Some(32 << 20), Uuid::new_v4()).unwrap();
    let p = dir.path().join("mbr.img");
    write_plan(&plan, &p);
    let dump = run("sfdisk", &["--dump", p.to_str().unwrap()]);
    assert!(dump.contains("label: dos"), "{dump}");
    assert!(dump.contains("start=        2048, size=       16384, type=c, bootable"), "{dump}");
    assert!(dump.contains("start=       18432, size=       16384, type=83\n"), "{dump}");
    let t = table_of(&p).unwrap().unwrap();
    assert!(t.partitions[0].bootable && !t.partitions[1].bootable);
}

#[test]
fn broken_primary_gpt_falls_back_to_the_backup_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(dir.path());
    patch(&p, 512 + 40, &[0x55]); // first_usable_lba, header CRC now wrong
    let t = within(20, "broken primary", move || table_of(&p)).unwrap().unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert!(
        t.warnings.iter().any(|w| w.contains("primary GPT is damaged") && w.contains("backup")),
        "{:?}",
        t.warnings
    );
    // A damaged array (CRC mismatch) also falls back.
    let p = sgdisk_disk(dir.path());
    patch(&p, 1024 + 60, b"X");
    let t = table_of(&p).unwrap().unwrap();
    assert_eq!(t.partitions[0].name, "EFI system");
    assert!(t.warnings[0].contains("entry array CRC32"), "{:?}", t.warnings);
}

/// A GPT disk with its backup header wiped and the primary patched by `f` (header CRC
/// recomputed): only the hostile primary is left to read.
fn hostile(dir: &Path, f: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let p = sgdisk_disk(dir);
    let size = std::fs::metadata(&p).unwrap().len();
    patch(&p, size - 512, &[0u8; 512]);
    let mut h = read_bytes(&p, 512, 92);
    f(&mut h);
    h[16..20].fill(0);
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    patch(&p, 512, &h);
    p
}

fn hostile_error(p: PathBuf, what: &str) -> diskcast_block::Error {
    let shown = p.clone();
    let e = within(20, what, move || table_of(&p)).expect_err("hostile table read without error");
    assert_eq!(e.file(), Some(shown.as_path()), "{e}");
    e
}

#[test]
fn hostile_entry_size_below_128() {
    let dir = tempfile::tempdir().unwrap();
    let p = hostile(dir.path(), |h| h[84..88].copy_from_slice(&64u32.to_le_bytes()));
    let e = hostile_error(p, "entry size");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.field(), Some("size_of_partition_entry"), "{e}");
}

#[test]
fn hostile_entry_count_times_size_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let p = hostile(dir.path(), |h| {
        h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
        h[84..88].copy_from_slice(&0xffff_fff8u32.to_le_bytes());
    });
    let e = hostile_error(p, "entry count");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert_eq!(e.field(), Some("number_of_partition_entries"), "{e}");
}

#[test]
fn hostile_bad_crcs_in_both_copies() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(dir.path());
    let size = std::fs::metadata(&p).unwrap().len();
    patch(&p, 512 + 16, &[1, 2, 3, 4]);
    patch(&p, size - 512 + 16, &[1, 2, 3, 4]);
    let e = hostile_error(p, "bad CRCs");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("header CRC32") && e.to_string().contains("backup GPT is damaged too"), "{e}");
}

#[test]
fn hostile_entry_beyond_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = hostile(dir.path(), |_| {});
    // Partition 2 ends far past the disk; fix the array CRC in the header.
    patch(&p, 1024 + 128 + 40, &(1u64 << 40).to_le_bytes());
    let array = read_bytes(&p, 1024, 128 * 128);
    let mut h = read_bytes(&p, 512, 92);
    h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
    h[16..20].fill(0);
    let c = crc32(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    patch(&p, 512, &h);
    let e = hostile_error(p, "entry beyond disk");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("GPT partition 2"), "{e}");
}

#[test]
fn hostile_mbr_partition_past_the_end_and_ebr_loop() {
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "m.img", 16 << 20);
    sfdisk(&p, "label: dos\n,4M,83\n,,5\n,4M,83\n");
    // Primary 1 claims 2^31 sectors.
    let mut q = dir.path().join("past.img");
    std::fs::copy(&p, &q).unwrap();
    patch(&q, 446 + 12, &0x8000_0000u32.to_le_bytes());
    let e = hostile_error(q.clone(), "mbr past end");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    // The first EBR's link points back at itself.
    q = dir.path().join("loop.img");
    std::fs::copy(&p, &q).unwrap();
    let ext_lba = u64::from(le32(&read_bytes(&q, 446 + 16 + 8, 4), 0));
    let link = [0u8, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]; // back to itself (relative LBA 0)
    patch(&q, ext_lba * 512 + 446 + 16, &link);
    let e = hostile_error(q, "ebr loop");
    assert!(e.to_string().contains("loops"), "{e}");
}

#[test]
fn partition_view_reads_its_range() {
    use diskcast_part::PartitionView;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(dir.path());
    patch(&p, (1 << 20) + 5, b"hello");
    let disk: Arc<dyn BlockRead> = Arc::new(RawReader::open(&p).unwrap());
    let v = PartitionView::new(disk.clone(), 1 << 20, 16 << 20, "partition 1").unwrap();
    let mut b = [0u8; 5];
    v.read_at(&mut b, 5).unwrap();
    assert_eq!(&b, b"hello");
    let e = v.read_at(&mut b, (16 << 20) - 2).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("past the disk's end"), "{e}");
    let e = PartitionView::new(disk, 60 << 20, 8 << 20, "x").unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("runs past the end of the disk"), "{e}");
}

/// A GPT header for 4096-byte sectors, built by hand (sgdisk and sfdisk cannot make one
/// in a file).
fn header_4k(my: u64, alt: u64, first: u64, last: u64, entries: u64, array_crc: u32, guid: Uuid) -> Vec<u8> {
    let mut h = vec![0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    for (at, v) in [(24, my), (32, alt), (40, first), (48, last), (72, entries)] {
        h[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    h[56..72].copy_from_slice(&guid.to_bytes_le());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn gpt_with_4096_byte_sectors_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = blank(dir.path(), "4k.img", 16 << 20);
    let n = (16u64 << 20) / 4096;
    let mut array = vec![0u8; 128 * 128];
    array[..16].copy_from_slice(&PartType::Esp.guid().to_bytes_le());
    array[16..32].copy_from_slice(&Uuid::new_v4().to_bytes_le());
    array[32..40].copy_from_slice(&256u64.to_le_bytes());
    array[40..48].copy_from_slice(&2303u64.to_le_bytes());
    for (i, u) in "esp4k".encode_utf16().enumerate() {
        array[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    let crc = crc32(&array);
    let guid = Uuid::new_v4();
    patch(&p, 510, &[0x55, 0xaa]);
    patch(&p, 446, &[0, 0, 2, 0, 0xee, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0xff, 0x0f, 0, 0]);
    patch(&p, 4096, &header_4k(1, n - 1, 6, n - 6, 2, crc, guid));
    patch(&p, 8192, &array);
    patch(&p, (n - 5) * 4096, &array);
    patch(&p, (n - 1) * 4096, &header_4k(n - 1, 1, 6, n - 6, n - 5, crc, guid));
    let t = table_of(&p).unwrap().unwrap();
    assert_eq!(t.sector_size, 4096);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let esp = t.select("esp4k").unwrap();
    assert_eq!((esp.start, esp.len), (1 << 20, 8 << 20));
    assert_eq!(t.select("esp").unwrap().number, 1);
    let e = t.select("root").unwrap_err();
    assert!(e.to_string().contains("no partition") && e.to_string().contains("esp4k"), "{e}");
}

/// An sgdisk-made disk cut after its primary GPT header: the header's ranges no longer fit,
/// and the error says which and by how much.
#[test]
fn truncated_sgdisk_disk_names_the_range_that_no_longer_fits() {
    let dir = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(dir.path());
    std::fs::write(&p, &std::fs::read(&p).unwrap()[..1536]).unwrap();
    let e = table_of(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("GPT usable range LBA 34..=131038 does not fit a disk of 3 sectors"), "{e}");
    assert_eq!(e.field(), Some("last_usable_lba"));
}
