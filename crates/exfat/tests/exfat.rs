//! The exFAT reader on mutants of a `mkfs.exfat` image: every mutant reads back or is
//! refused with an error about the input, within a time limit, never a panic or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::source::MemSource;
use diskcast_block::{BlockRead, ErrorKind};
use diskcast_exfat::{ExfatReader, Geometry};
use diskcast_raw::RawReader;
use diskcast_testkit::hostile::{Mutator, Rng, within};
use diskcast_testkit::run_utc;
use diskcast_tree::{FsReader, ReadOptions};
use std::sync::Arc;

/// Mutants tried; each reads a 4 MiB image, so this stays a few seconds.
const MUTANTS: u64 = 1000;

/// Rewrites the checksum sector (512-byte sectors) to match sectors 0-10, as the
/// specification sums them (skipping VolumeFlags and PercentInUse).
fn fix_boot_checksum(b: &mut [u8]) {
    if b.len() < 12 * 512 {
        return;
    }
    let mut sum = 0u32;
    for (i, &x) in b[..11 * 512].iter().enumerate() {
        if !matches!(i, 106 | 107 | 112) {
            sum = sum.rotate_right(1).wrapping_add(u32::from(x));
        }
    }
    for q in b[11 * 512..12 * 512].chunks_exact_mut(4) {
        q.copy_from_slice(&sum.to_le_bytes());
    }
}

#[test]
fn mutants_of_a_mkfs_exfat_image_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    std::fs::File::create(&img).unwrap().set_len(4 << 20).unwrap();
    run_utc("mkfs.exfat", &["-L", "SEED", img.to_str().unwrap()]);
    let geo = Geometry::read(&RawReader::open(&img).unwrap()).unwrap();
    let seed = std::fs::read(&img).unwrap();
    let root = usize::try_from(geo.heap_offset + u64::from(geo.root_cluster - 2) * geo.cluster).unwrap();
    let fat = usize::try_from(geo.fat_offset).unwrap();
    // Hot: the boot sector, the checksum sector, the FAT's first entries, the root.
    let m = Mutator::new(seed.clone(), &[(0, 512), (11 * 512, 512), (fat, 64), (root, 256)]);
    // The seed itself reads.
    let disk: Arc<dyn BlockRead> = Arc::new(RawReader::open(&img).unwrap());
    ExfatReader.read(disk, &ReadOptions::default()).unwrap();
    let mut rng = Rng::new(17);
    let mut refused = 0;
    for i in 0..MUTANTS {
        let (mut bytes, what) = m.mutant(&mut rng);
        // Every other mutant gets a matching boot checksum, so the geometry checks
        // behind it are reached too.
        if i % 2 == 0 {
            fix_boot_checksum(&mut bytes);
        }
        let what = format!("mutant {i}: {what}");
        let label = what.clone();
        let res = within(10, &what, move || {
            let src: diskcast_block::source::Source = Arc::new(MemSource::new("mutant.img", Arc::<[u8]>::from(bytes)));
            let disk: Arc<dyn BlockRead> = Arc::new(RawReader::new(src)?);
            ExfatReader.read(disk, &ReadOptions { label: "mutant.img".into(), ..ReadOptions::default() }).map(|_| ())
        });
        if let Err(e) = res {
            assert!(
                !matches!(e.kind(), ErrorKind::Io | ErrorKind::Cancelled),
                "{label}: {e} is not an error about the image"
            );
            refused += 1;
        }
    }
    // Most mutants hit checked bytes (boot checksum, geometry, entry sets).
    assert!(refused > MUTANTS / 4, "only {refused} of {MUTANTS} mutants were refused");
}
