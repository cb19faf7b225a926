//! What `iso remaster` keeps of a disc (`hybrid::Kept`), on xorriso's isolinux + UEFI +
//! isohybrid GPT disc patched to be hostile: every bad system area is refused with an
//! `Unsupported` error saying what, never a panic or a huge allocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_block::{BlockRead, ErrorKind, Result};
use diskcast_iso9660::eltorito::read_catalog;
use diskcast_iso9660::hybrid::Kept;
use diskcast_iso9660::write::{IsoBuilder, IsoOptions};
use diskcast_tree::{BuildOptions, FsBuilder, FsReader, ReadOptions};
use std::path::Path;
use std::sync::Arc;

/// Kept::read on `iso` after `patch` changed its bytes, then a plan of the remaster.
fn keep(iso: &Path, dir: &Path, patch: &dyn Fn(&mut Vec<u8>)) -> Result<()> {
    let mut bytes = std::fs::read(iso).unwrap();
    patch(&mut bytes);
    let p = dir.join("patched.iso");
    std::fs::write(&p, &bytes).unwrap();
    let disk: Arc<dyn BlockRead> = open(&p);
    let catalog = read_catalog(&disk)?;
    let kept = Kept::read(&disk, catalog.as_ref())?;
    let tree = diskcast_iso9660::Iso9660Reader.read(disk, &ReadOptions::default())?;
    let disc = IsoOptions { keep: Some(kept), ..IsoOptions::default() };
    IsoBuilder::new(disc).plan(&tree, &BuildOptions::default()).map(|_| ())
}

/// A byte patch of the disc.
type Patch = Box<dyn Fn(&mut Vec<u8>)>;

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// The GPT header's CRC is not checked by remaster (it rewrites it); fields are.
#[test]
fn hostile_system_areas_are_refused_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let iso = make_boot_iso(t.path());
    // The untouched disc plans.
    keep(&iso, t.path(), &|_| {}).unwrap();
    let cases: Vec<(&str, Patch)> = vec![
        ("entries of 100 bytes", Box::new(|b| put(b, 512 + 84, &100u32.to_le_bytes()))),
        ("1000000 entries", Box::new(|b| put(b, 512 + 80, &1_000_000u32.to_le_bytes()))),
        ("outside the 32 KiB system area", Box::new(|b| put(b, 512 + 72, &1000u64.to_le_bytes()))),
        ("outside the 32 KiB system area", Box::new(|b| put(b, 512 + 72, &u64::MAX.to_le_bytes()))),
        (
            "runs past the end of the disc",
            Box::new(|b| {
                // GPT entry 1's last LBA far past the end.
                put(b, 1024 + 40, &(u64::MAX - 3).to_le_bytes())
            }),
        ),
        ("extended partition", Box::new(|b| b[446 + 4] = 0x05)),
        ("past the end of the disc", Box::new(|b| put(b, 446 + 12, &u32::MAX.to_le_bytes()))),
        ("backup header lies past the end", Box::new(|b| put(b, 512 + 32, &(u64::MAX / 256).to_le_bytes()))),
        (
            "neither an MBR nor a GPT",
            Box::new(|b| {
                b[..32 * 1024].fill(0xA5);
            }),
        ),
        (
            "inside the ISO 9660 data but at no file",
            Box::new(|b| {
                // MBR partition 3 at sector 100 (the directory area).
                put(b, 446 + 32 + 4, &[0x83]);
                put(b, 446 + 32 + 8, &100u32.to_le_bytes());
                put(b, 446 + 32 + 12, &4u32.to_le_bytes());
            }),
        ),
    ];
    for (want, patch) in &cases {
        let e = keep(&iso, t.path(), patch.as_ref()).expect_err(want);
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{want}: {e}");
        assert!(e.to_string().contains(want), "{e} should say {want:?}");
    }
    // The backup GPT's own header names entries far before it (in the file data): refused,
    // never allocated.
    let bytes = std::fs::read(&iso).unwrap();
    let alt = usize::try_from(u64::from_le_bytes(bytes[512 + 32..512 + 40].try_into().unwrap())).unwrap();
    let e = keep(&iso, t.path(), &|b| {
        let far = u64::try_from(alt / 2).unwrap();
        put(b, alt * 512 + 72, &far.to_le_bytes());
    })
    .expect_err("gap");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("bytes between them") || e.to_string().contains("inside the ISO 9660 data"), "{e}");
}
