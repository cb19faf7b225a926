//! Reading qemu-made (and VirtualBox-shaped) images and comparing with qemu's own view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::Alloc;
use diskcast_vdi::header::{BLOCK_FREE, BLOCK_ZERO};

#[test]
fn static_and_dynamic_match_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for (name, size, is_static) in
        [("d.vdi", "5000001", false), ("s.vdi", "5000001", true), ("d8.vdi", "8M", false), ("s8.vdi", "8M", true)]
    {
        let p = patterned(dir.path(), name, size, is_static);
        assert_matches_qemu(&p, dir.path());
        let img = open(&p).unwrap();
        let info = img.info();
        let q = qemu_info(&p);
        assert_eq!(img.size(), q["virtual-size"].as_u64().unwrap(), "{name}");
        assert_eq!(info.cluster_size, q["cluster-size"].as_u64(), "{name}");
        assert_eq!(info.format, "vdi");
        assert_eq!(info.specific["image-type"], if is_static { "static" } else { "dynamic" }, "{name}");
        // Holes: the block at 3 MiB is never written: unallocated in the dynamic images,
        // a hole in the file (zeros) inside the static ones' preallocated block.
        let hole = img.extent_at(3 << 20, 1 << 20).unwrap();
        let want = if is_static { Alloc::Zero } else { Alloc::Unallocated };
        assert_eq!((hole.alloc, hole.len), (want, 1 << 20), "{name}");
    }
}

#[test]
fn zero_block_entries_read_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "z.vdi", "5000001", false);
    let b = std::fs::read(&p).unwrap();
    let bmap = le32(&b, 0x154) as u64;
    // Guest block 0 holds data; mark it zero (its data block stays in the file).
    assert!(le32(&b, bmap as usize) < BLOCK_ZERO);
    patch(&p, bmap, &BLOCK_ZERO.to_le_bytes());
    assert_matches_qemu(&p, dir.path());
    let img = open(&p).unwrap();
    let e = img.extent_at(0, 1 << 30).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Zero, 1 << 20));
    let mut buf = vec![1u8; 8192];
    img.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
}

/// Builds an image laid out the way VirtualBox lays it out (0x190-byte header with LCHS
/// geometry, block map and data aligned to 1 MiB, an odd disk size, blocks stored out of
/// guest order) and checks we read what qemu reads.
#[test]
fn virtualbox_layout_out_of_order_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vbox.vdi");
    let mib = 1usize << 20;
    let disk_size: u64 = 3 * (1 << 20) + 1000;
    let order = [2u32, BLOCK_FREE, 0, 1]; // guest block -> data block
    let mut f = vec![0u8; 2 * mib + 3 * mib];
    f[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
    let put32 = |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut f, 0x40, 0xbeda_107f);
    put32(&mut f, 0x44, 0x0001_0001);
    put32(&mut f, 0x48, 0x190);
    put32(&mut f, 0x4c, 1);
    f[0x54..0x54 + 9].copy_from_slice(b"a comment");
    put32(&mut f, 0x154, 1 << 20);
    put32(&mut f, 0x158, 2 << 20);
    put32(&mut f, 0x168, 512);
    f[0x170..0x178].copy_from_slice(&disk_size.to_le_bytes());
    put32(&mut f, 0x178, 1 << 20);
    put32(&mut f, 0x180, 4);
    put32(&mut f, 0x184, 3);
    f[0x188..0x198].copy_from_slice(&[0x11; 16]);
    f[0x198..0x1a8].copy_from_slice(&[0x22; 16]);
    for (i, v) in [1024u32, 16, 63, 512].iter().enumerate() {
        put32(&mut f, 0x1c8 + 4 * i, *v);
    }
    for (g, &d) in order.iter().enumerate() {
        put32(&mut f, mib + 4 * g, d);
        if d != BLOCK_FREE {
            let start = 2 * mib + d as usize * mib;
            f[start..start + mib].copy_from_slice(&pattern(mib, g as u64 + 1));
        }
    }
    std::fs::write(&p, &f).unwrap();
    assert_matches_qemu(&p, dir.path());
    let img = open_as(&p, None).unwrap(); // probed
    assert_eq!(img.size(), disk_size.next_multiple_of(512));
    let info = img.info();
    assert_eq!(info.specific["lchs-geometry"]["cylinders"], 1024);
    assert_eq!(info.specific["header-size"], 0x190);
    assert_eq!(info.specific["description"], "a comment");
    assert_eq!(info.specific["creator-text"], "<<< Oracle VM VirtualBox Disk Image >>>");
    assert_eq!(info.specific["uuid"], "11111111-1111-1111-1111-111111111111");
    let e = img.extent_at(1 << 20, 1 << 30).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Unallocated, 1 << 20));
    let e = img.extent_at(2 << 20, 1 << 30).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Data, img.size() - (2 << 20)));
}

#[test]
fn uuids_and_info_match_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.vdi");
    create(&p, "64M", false);
    let b = std::fs::read(&p).unwrap();
    let want = uuid::Uuid::from_bytes_le(b[0x188..0x198].try_into().unwrap()).to_string();
    let i = open(&p).unwrap().info();
    assert_eq!(i.specific["uuid"], want);
    assert_ne!(i.specific["modification-uuid"], i.specific["uuid"]);
    assert_eq!(i.specific["blocks-in-image"], 64);
    assert_eq!(i.specific["blocks-allocated"], 0);
    assert_eq!(i.specific["block-size"], 1 << 20);
    assert_eq!(i.specific["version"], "1.1");
    assert_eq!(i.specific["legacy-geometry"]["sector-size"], 512);
    assert_eq!(i.virtual_size, 64 << 20);
}

#[test]
fn empty_and_one_tib_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir.path().join("empty.vdi");
    create(&e, "0", false);
    assert_eq!(open(&e).unwrap().size(), 0);
    let big = dir.path().join("big.vdi");
    create(&big, "1T", false);
    qemu_io("vdi", &big, &["write -P 1 512G 64k"]);
    let t = std::time::Instant::now();
    let img = open(&big).unwrap();
    let exts: Vec<_> = diskcast_block::copy::extents(img.as_ref(), true).collect::<Result<_, _>>().unwrap();
    assert_eq!(exts.len(), 3, "{exts:?}");
    assert_eq!((exts[1].alloc, exts[1].offset, exts[1].len), (Alloc::Data, 512 << 30, 1 << 20));
    assert!(t.elapsed().as_secs() < 2, "mapping 1 TiB took {:?}", t.elapsed());
    let mut b = vec![0u8; 65536];
    img.read_at(&mut b, 512 << 30).unwrap();
    assert!(b.iter().all(|&x| x == 1));
}

#[test]
fn probe_claims_vdi_and_reads_past_end_fail() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "p.vdi", "5000001", false);
    let reg = registry();
    assert_eq!(reg.probe(&p).unwrap().name(), "vdi");
    let img = open(&p).unwrap();
    let mut b = vec![0u8; 1024];
    let e = img.read_at(&mut b, img.size() - 512).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds);
    let e = img.extent_at(img.size(), 1).unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("extent query past"), "{e}");
}

#[test]
fn parallel_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "par.vdi", "8M", false);
    let img = open(&p).unwrap();
    let whole = read_all(img.as_ref());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (img, whole) = (&img, &whole);
            s.spawn(move || {
                for k in 0..200u64 {
                    let off = ((k * 7919 + t * 104729) * 4093) % (8 << 20);
                    let len = (1 << 20 | 511).min((8 << 20) - off) as usize;
                    let mut b = vec![0u8; len];
                    img.read_at(&mut b, off).unwrap();
                    assert_eq!(&b[..], &whole[off as usize..off as usize + len]);
                }
            });
        }
    });
}
