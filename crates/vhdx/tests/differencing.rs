//! Differencing VHDX: qemu can neither make nor read them, so the test builds one by
//! patching a qemu-made dynamic VHDX (has-parent flag, parent locator, sector bitmap) and
//! checks our merged read against qemu's reads of both files while they were plain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::{Alloc, ErrorKind, resolved_extent};
use std::path::Path;

const MIB: u64 = 1 << 20;

/// Turns the plain dynamic VHDX `child` (1 MiB blocks) into a differencing image of
/// `relative_path`: unwritten blocks become NOT_PRESENT, block `partial` becomes
/// PARTIALLY_PRESENT with only its first `present_sectors` 512-byte sectors marked present.
fn make_differencing(child: &Path, relative_path: &str, linkage: &str, partial: u64, present_sectors: u64) {
    let (meta, _) = region(child, &META_GUID_LE);
    let (bat, _) = region(child, &BAT_GUID_LE);
    // has_parent in the file parameters (first item, at 64 KiB in qemu's layout).
    let fp_off = le32(&read_bytes(child, meta + 32 + 16, 4), 0) as u64;
    let flags = le32(&read_bytes(child, meta + fp_off + 4, 4), 0);
    patch(child, meta + fp_off + 4, &(flags | 2).to_le_bytes());
    // A sixth metadata entry: the parent locator, 4 KiB after the items.
    let loc = diskcast_vhdx::format::parent_locator_bytes(&[
        ("parent_linkage", linkage),
        ("relative_path", relative_path),
        ("absolute_win32_path", "C:\\images\\base.vhdx"),
    ])
    .unwrap();
    let count = u16::from_le_bytes(read_bytes(child, meta + 10, 2).try_into().unwrap());
    assert_eq!(count, 5);
    let mut e = vec![0u8; 32];
    e[..16].copy_from_slice(&diskcast_vhdx::format::PARENT_LOCATOR.to_bytes_le());
    e[16..20].copy_from_slice(&((64u32 << 10) + 4096).to_le_bytes());
    e[20..24].copy_from_slice(&(loc.len() as u32).to_le_bytes());
    e[24..28].copy_from_slice(&4u32.to_le_bytes());
    patch(child, meta + 32 + 32 * 5, &e);
    patch(child, meta + 10, &6u16.to_le_bytes());
    patch(child, meta + (64 << 10) + 4096, &loc);
    // BAT: the sector bitmap of chunk 0 (entry 4096 with 1 MiB blocks) in a new 1 MiB
    // block at the end; ZERO blocks (qemu's default) become NOT_PRESENT.
    let len = std::fs::metadata(child).unwrap().len();
    let sb = len.div_ceil(MIB) * MIB;
    std::fs::OpenOptions::new().write(true).open(child).unwrap().set_len(sb + MIB).unwrap();
    patch(child, bat + 8 * 4096, &(sb | 6).to_le_bytes());
    let n = 14;
    for b in 0..n {
        let v = le64(&read_bytes(child, bat + 8 * b, 8), 0);
        if v & 7 != 6 {
            patch(child, bat + 8 * b, &0u64.to_le_bytes());
        }
    }
    let v = le64(&read_bytes(child, bat + 8 * partial, 8), 0);
    assert_eq!(v & 7, 6, "block {partial} must be present in the child");
    patch(child, bat + 8 * partial, &((v & !7) | 7).to_le_bytes());
    // Bits for block `partial`: 2048 sectors per block, one bit each, LSB first.
    let mut bits = vec![0u8; 256];
    for s in 0..present_sectors {
        bits[(s / 8) as usize] |= 1 << (s % 8);
    }
    patch(child, sb + partial * 256, &bits);
}

#[test]
fn merged_read_matches_qemu_reads_of_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("base.vhdx");
    create(&parent, "14M", "block_size=1M");
    qemu_io(&parent, &["write -P 0xa1 0 14M"]);
    let child = dir.path().join("child.vhdx");
    create(&child, "14M", "block_size=1M");
    qemu_io(&child, &["write -P 0xc1 1M 1M", "write -P 0xc2 4M 1M", "write -P 0xc3 9M 4k"]);
    let pbytes = qemu_raw(&parent, "vhdx", dir.path());
    let cbytes = qemu_raw(&child, "vhdx", dir.path());
    let linkage = format!("{{{}}}", open(&parent).unwrap().info().specific["data-write-guid"].as_str().unwrap());
    // Block 4: only its first 1000 sectors are the child's.
    make_differencing(&child, ".\\base.vhdx", &linkage, 4, 1000);

    let img = open(&child).unwrap();
    let info = img.info();
    assert_eq!(info.specific["subformat"], "differencing");
    assert_eq!(info.specific["has-parent"], true);
    assert_eq!(info.backing_file.as_deref(), Some("./base.vhdx"));
    let got = read_all(img.as_ref());
    let mut want = pbytes.clone();
    for (b, range) in [(1u64, 0..MIB), (4, 0..1000 * 512), (9, 0..MIB)] {
        let s = (b * MIB + range.start) as usize;
        let e = (b * MIB + range.end) as usize;
        want[s..e].copy_from_slice(&cbytes[s..e]);
    }
    assert_same(&got, &want, "merged read");
    // The map: Backing where the parent shows through, Data where the child holds it.
    assert_eq!(
        img.extent_at(0, 14 * MIB).unwrap(),
        diskcast_block::Extent { offset: 0, len: MIB, alloc: Alloc::Backing }
    );
    assert_eq!(img.extent_at(MIB, 14 * MIB).unwrap().alloc, Alloc::Data);
    let e = img.extent_at(4 * MIB, 14 * MIB).unwrap();
    assert_eq!((e.len, e.alloc), (1000 * 512, Alloc::Data));
    let e = img.extent_at(4 * MIB + 1000 * 512, 14 * MIB).unwrap();
    // The rest of block 4 and the NOT_PRESENT blocks 5..9 form one backing run.
    assert_eq!((e.len, e.alloc), (MIB - 1000 * 512 + 4 * MIB, Alloc::Backing));
    assert_eq!(resolved_extent(img.as_ref(), 0, MIB).unwrap().alloc, Alloc::Data);
    // Check is clean (the sector bitmap does not overlap anything).
    assert_eq!(diskcast_vhdx::check::check(diskcast_block::source::open_file(&child).unwrap()).unwrap().corruptions, 0);

    // Converted by our writer, the result equals the merged view (qemu reads it).
    let out = dir.path().join("flat.vhdx");
    write_with_ours(img.as_ref(), &out, &opts(&[("block_size", "1M")]));
    assert_same(&qemu_raw(&out, "vhdx", dir.path()), &want, "flattened");

    // Without following backing files (info), the image opens and names its parent.
    let img = open_with(&child, false, false).unwrap();
    assert_eq!(img.info().backing_file.as_deref(), Some("./base.vhdx"));
    let mut buf = [0u8; 16];
    assert_eq!(img.read_at(&mut buf, 0).unwrap_err().kind(), ErrorKind::Unsupported);
}

#[test]
fn wrong_parent_linkage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("base.vhdx");
    create(&parent, "14M", "block_size=1M");
    let child = dir.path().join("child.vhdx");
    create(&child, "14M", "block_size=1M");
    qemu_io(&child, &["write -P 0xc2 4M 1M"]);
    make_differencing(&child, "base.vhdx", "{00000000-1111-2222-3333-444444444444}", 4, 8);
    let e = open(&child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("parent_linkage"));
}

#[test]
fn parent_locator_naming_etc_passwd_is_refused_by_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("child.vhdx");
    create(&child, "14M", "block_size=1M");
    qemu_io(&child, &["write -P 0xc2 4M 1M"]);
    make_differencing(&child, "..\\..\\..\\..\\..\\..\\etc\\passwd", "{x}", 4, 8);
    let e = open(&child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("outside the image's directory"), "{e}");
    let child2 = dir.path().join("child2.vhdx");
    create(&child2, "14M", "block_size=1M");
    qemu_io(&child2, &["write -P 0xc2 4M 1M"]);
    make_differencing(&child2, "/etc/passwd", "{x}", 4, 8);
    assert_eq!(open(&child2).unwrap_err().kind(), ErrorKind::Refused);
}
