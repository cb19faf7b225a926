//! Reading qemu-made VHDs: content and size must match what qemu-img reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::Alloc;
use diskcast_block::gate::Gate;
use diskcast_block::registry::OpenContext;

#[test]
fn dynamic_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vhd");
    make_vhd(&p, "");
    assert_matches_qemu(&p, dir.path());
    let img = open(&p).unwrap();
    // 13 MiB rounds up to the next CHS geometry, not to a block multiple.
    assert_ne!(img.size() % (2 << 20), 0);
    assert!(img.size() >= 13 << 20);
    // Block 1 (2-4 MiB) was never written: unallocated; block 0 holds data.
    let map = our_map(img.as_ref());
    let at = |off: u64| map.iter().find(|e| e.offset <= off && off < e.end()).unwrap().alloc;
    assert_eq!(at(0), Alloc::Data);
    assert_eq!(at(3 << 20), Alloc::Unallocated);
    assert_eq!(at(4 << 20), Alloc::Data, "qemu's write -z allocates the block");
    assert_eq!(at(img.size() - 1), Alloc::Data);
    // qemu-img map agrees on what is data (qemu maps whole allocated blocks).
    let qmap: serde_json::Value =
        serde_json::from_str(&qemu_img(&["map", "--output=json", "-f", "vpc", p.to_str().unwrap()])).unwrap();
    for e in qmap.as_array().unwrap() {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let want = if e["data"].as_bool().unwrap() { Alloc::Data } else { Alloc::Unallocated };
        assert_eq!(at(start), want, "{e}");
        assert_eq!(at(start + len - 1), want, "{e}");
    }
    let info = img.info();
    assert_eq!(info.format, "vhd");
    assert_eq!(info.cluster_size, Some(2 << 20));
    assert_eq!(info.specific["subformat"], "dynamic");
    assert_eq!(info.specific["creator-app"], "qemu");
    assert_eq!(info.specific["size-from"], "geometry");
    assert_eq!(info.specific["current-size"].as_u64(), Some(img.size()));
}

#[test]
fn dynamic_force_size_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vhd");
    make_vhd(&p, "force_size=on");
    assert_matches_qemu(&p, dir.path());
    let img = open(&p).unwrap();
    assert_eq!(img.size(), 13 << 20);
    let info = img.info();
    assert_eq!(info.specific["creator-app"], "qem2");
    assert_eq!(info.specific["size-from"], "current_size");
    assert_eq!(info.specific["cylinders"], 65535);
}

#[test]
fn fixed_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    for (name, o) in [("x.vhd", "subformat=fixed"), ("y.vhd", "subformat=fixed,force_size=on")] {
        let p = dir.path().join(name);
        make_vhd(&p, o);
        assert_matches_qemu(&p, dir.path());
        let img = open(&p).unwrap();
        assert_eq!(img.info().specific["subformat"], "fixed");
        assert_eq!(img.info().cluster_size, None);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), img.size() + 512);
        // Untouched ranges of a fixed file are holes: mapped as unallocated.
        let map = our_map(img.as_ref());
        let at = |off: u64| map.iter().find(|e| e.offset <= off && off < e.end()).unwrap().alloc;
        assert_eq!(at(0), Alloc::Data);
        assert_eq!(at(3 << 20), Alloc::Unallocated);
    }
}

#[test]
fn fixed_is_probed_without_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noext");
    make_vhd(&p, "subformat=fixed");
    let reg = registry();
    assert_eq!(reg.probe(&p).unwrap().name(), "vhd");
    // qemu-img itself takes it for raw without -f.
    let v: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", p.to_str().unwrap()])).unwrap();
    assert_eq!(v["format"], "raw");
    let gate = Gate::new();
    let img = reg.open(&p, None, &OpenContext::new(&reg, &gate)).unwrap();
    assert_eq!(img.size(), qemu_size(&p));
    // Dynamic ones too, by the copy at offset 0; a raw file ending in a stray cookie
    // with a wrong checksum is not claimed.
    let d = dir.path().join("dyn");
    make_vhd(&d, "");
    assert_eq!(reg.probe(&d).unwrap().name(), "vhd");
    let mut junk = vec![0x5au8; 8192];
    junk[8192 - 512..8192 - 504].copy_from_slice(b"conectix");
    let j = dir.path().join("junk.img");
    std::fs::write(&j, &junk).unwrap();
    assert_eq!(reg.probe(&j).unwrap().name(), "raw");
}

#[test]
fn old_511_byte_footer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("old.vhd");
    make_vhd(&p, "subformat=fixed");
    let want = qemu_raw(&p, dir.path());
    // Drop the footer's last (reserved, zero) byte, as Virtual PC before 2004 wrote it.
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 1).unwrap();
    assert_eq!(registry().probe(&p).unwrap().name(), "vhd");
    let img = open(&p).unwrap();
    assert_eq!(read_all(img.as_ref()), want);
    assert_eq!(img.info().specific["old-511-byte-footer"], true);
}

#[test]
fn clear_bitmap_bits_read_as_zero_in_a_dynamic_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bm.vhd");
    create(&p, "4M", "");
    qemu_io(&p, &["write -P 0x77 0 2M"]);
    let b = std::fs::read(&p).unwrap();
    let bat = be64(&b, 512 + 16) as usize;
    let bitmap_at = be32(&b, bat) as u64 * 512;
    // Clear sectors 8..16 (bits in byte 1) and sector 0 (top bit of byte 0).
    patch(&p, bitmap_at, &[0x7f, 0x00]);
    let img = open(&p).unwrap();
    let mut buf = vec![0u8; 16 * 512];
    img.read_at(&mut buf, 0).unwrap();
    assert!(buf[..512].iter().all(|&x| x == 0));
    assert!(buf[512..4096].iter().all(|&x| x == 0x77));
    assert!(buf[4096..8192].iter().all(|&x| x == 0));
    let e = img.extent_at(0, 1 << 20).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Unallocated, 512));
    let e = img.extent_at(512, 1 << 20).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Data, 3584));
    let e = img.extent_at(8192, 4 << 20).unwrap();
    assert_eq!((e.alloc, e.len), (Alloc::Data, (2 << 20) - 8192));
}

#[test]
fn fixed_disk_whose_data_starts_with_the_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nested.vhd");
    create(&p, "4M", "subformat=fixed");
    // The guest wrote "conectix" and junk at its first sector (say, a VHD file).
    qemu_io_fmt("raw", &p, &["write -P 0x61 0 512"]);
    patch(&p, 0, b"conectix");
    // qemu gives up here ("Incorrect header checksum"); the data area is the guest.
    let img = open(&p).unwrap();
    assert_eq!(img.info().specific["subformat"], "fixed");
    let file = std::fs::read(&p).unwrap();
    assert_eq!(read_all(img.as_ref()), file[..file.len() - 512]);
    assert_eq!(registry().probe(&p).unwrap().name(), "vhd");
}

#[test]
fn zero_sized_images() {
    let dir = tempfile::tempdir().unwrap();
    for o in ["", "subformat=fixed"] {
        let p = dir.path().join("zero.vhd");
        let _ = std::fs::remove_file(&p);
        create(&p, "0", o);
        let img = open(&p).unwrap();
        assert_eq!(img.size(), 0);
        // qemu 10.0 cannot open its own empty VHDs ("Error reading dynamic VHD
        // header": an empty fixed disk is only a footer, found at offset 0).
        let out = dir.path().join("ours0.vhd");
        let _ = std::fs::remove_file(&out);
        let pairs: Vec<(&str, &str)> = if o.is_empty() { vec![] } else { vec![("subformat", "fixed")] };
        write_with_ours(img.as_ref(), &out, &opts(&pairs));
        assert_eq!(std::fs::read(&out).unwrap().len(), if o.is_empty() { 2048 } else { 512 });
        assert_eq!(open(&out).unwrap().size(), 0);
    }
}

#[test]
fn size_rule_per_creator_matches_qemu() {
    let dir = tempfile::tempdir().unwrap();
    // 13 MiB exactly in current_size; a spec geometry that describes a little less.
    let (c, h, s) = diskcast_vhd::format::geometry_for((13 << 20) / 512);
    let chs = c as u64 * h as u64 * s as u64 * 512;
    assert!(chs < 13 << 20);
    for (creator, want) in [
        (b"win ", 13 << 20),
        (b"qem2", 13 << 20),
        (b"d2v ", 13 << 20),
        (b"CTXS", 13 << 20),
        (b"tap\0", 13 << 20),
        (b"wa\0\0", 13 << 20),
        (b"VBox", 13 << 20),
        (b"vpc ", chs),
        (b"qemu", chs),
    ] {
        let p = dir.path().join("c.vhd");
        let _ = std::fs::remove_file(&p);
        make_vhd(&p, "force_size=on");
        let len = std::fs::metadata(&p).unwrap().len();
        for at in [0, len - 512] {
            patch(&p, at + 28, creator);
            patch(&p, at + 56, &c.to_be_bytes());
            patch(&p, at + 58, &[h, s]);
            fix_footer_checksum(&p, at);
        }
        assert_eq!(qemu_size(&p), want, "{creator:?}");
        assert_matches_qemu(&p, dir.path());
    }
}
