//! Hostile and broken images: each must fail with a clear error of the right kind, and
//! never panic. Also `check` on clean and corrupted images, against qemu-img check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;
use diskcast_block::gate::Gate;
use diskcast_block::registry::{Driver, OpenContext};
use diskcast_testkit as tk;
use diskcast_vmdk::VmdkDriver;
use std::path::{Path, PathBuf};

/// Seconds each hostile test may take: a hang fails the test instead of stalling the suite.
const LIMIT_SECS: u64 = 120;

/// A qemu-made image of `subformat` holding the start of the pattern.
fn base(dir: &Path, name: &str, subformat: &str) -> PathBuf {
    let p = dir.join(name);
    qemu_img(&["create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", p.to_str().unwrap(), "4M"]);
    qemu_io(&p, "vmdk", &["write -P 0x42 0 128k", "write -P 0x43 3M 64k"]);
    if subformat == "monolithicSparse" {
        return p;
    }
    let q = dir.join(format!("{name}.{subformat}.vmdk"));
    qemu_img(&[
        "convert",
        "-O",
        "vmdk",
        "-o",
        &format!("subformat={subformat}"),
        p.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    q
}

fn expect(path: &Path, kind: ErrorKind, needle: &str) {
    assert_error(&first_error(open(path)), kind, needle);
}

fn gd_offset(path: &Path) -> u64 {
    le64(&std::fs::read(path).unwrap(), 56) * 512
}

/// Byte offset of the first grain table.
fn gt0(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    u64::from(le32(&b, gd_offset(path) as usize)) * 512
}

#[test]
fn flat_extent_outside_the_directory_is_refused() {
    tk::hostile::within(LIMIT_SECS, "flat_extent_outside_the_directory_is_refused", || {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("d");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(dir.path().join("x"), vec![0x5a; 4096]).unwrap();
        std::os::unix::fs::symlink("/etc/hosts", inner.join("link")).unwrap();
        for (i, name) in ["/etc/hosts", "../x", "link", "sub/../../x"].iter().enumerate() {
            let d = inner.join(format!("h{i}.vmdk"));
            std::fs::write(
                &d,
                format!("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"{name}\" 0\n"),
            )
            .unwrap();
            let e = open(&d).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{name}: {e}");
            assert!(e.to_string().contains("extent"), "{e}");
            // The allowance for backing files does not widen extents.
            let reg = registry();
            let mut gate = Gate::new();
            gate.allow(Path::new("/etc")).unwrap();
            gate.allow(dir.path()).unwrap();
            let e = reg.open(&d, Some("vmdk"), &OpenContext::new(&reg, &gate)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Refused, "{name} with --allow-backing: {e}");
        }
    });
}

#[test]
fn grain_table_offset_past_eof() {
    tk::hostile::within(LIMIT_SECS, "grain_table_offset_past_eof", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "gt.vmdk", "monolithicSparse");
        patch(&p, gd_offset(&p), &0x7fff_0000u32.to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "grain table 0");
        // qemu reads the table past EOF as zeros and calls the image clean; ours reports it.
        let reg = registry();
        let r = VmdkDriver
            .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
            .unwrap();
        assert!(r.corruptions >= 1, "{r:?}");
    });
}

#[test]
fn grain_past_eof_is_caught_by_read_and_check() {
    tk::hostile::within(LIMIT_SECS, "grain_past_eof_is_caught_by_read_and_check", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "g.vmdk", "monolithicSparse");
        let reg = registry();
        let clean = VmdkDriver
            .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
            .unwrap();
        assert_eq!((clean.corruptions, clean.allocated_clusters, clean.total_clusters), (0, Some(3), Some(64)));
        assert_qemu_check_clean(&p);
        patch(&p, gt0(&p) + 4, &0x7000_0000u32.to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "grain 1");
        let out =
            std::process::Command::new("qemu-img").args(["check", "-f", "vmdk", p.to_str().unwrap()]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("points after EOF"), "{out:?}");
        let r = VmdkDriver
            .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
            .unwrap();
        assert_eq!(r.corruptions, 1, "{r:?}");
        assert!(r.messages[0].contains("points after EOF"), "{:?}", r.messages);
    });
}

#[test]
fn stream_marker_sizes() {
    tk::hostile::within(LIMIT_SECS, "stream_marker_sizes", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "m.vmdk", "streamOptimized");
        let reg = registry();
        assert_eq!(
            VmdkDriver
                .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
                .unwrap()
                .corruptions,
            0
        );
        let first = u64::from(le32(&std::fs::read(&p).unwrap(), gt0(&p) as usize)) * 512;
        // Larger than any compressed grain can be.
        let good = std::fs::read(&p).unwrap();
        patch(&p, first + 8, &0x7fff_ffffu32.to_le_bytes());
        expect(&p, ErrorKind::Corrupt, "marker size");
        assert!(
            VmdkDriver
                .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
                .unwrap()
                .corruptions
                >= 1
        );
        // Plausible, but runs past the end of the file (the last grain).
        std::fs::write(&p, &good).unwrap();
        let b = std::fs::read(&p).unwrap();
        let last = (0..64).map(|i| le32(&b, gt0(&p) as usize + i * 4)).max().unwrap();
        patch(&p, u64::from(last) * 512 + 8, &(128 * 1024u32).to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "past the end");
        // Garbage instead of a zlib stream.
        std::fs::write(&p, &good).unwrap();
        patch(&p, first + 12, &[0xff; 16]);
        expect(&p, ErrorKind::Corrupt, "inflate");
        // Zero size.
        std::fs::write(&p, &good).unwrap();
        patch(&p, first + 8, &0u32.to_le_bytes());
        expect(&p, ErrorKind::Corrupt, "marker size");
    });
}

#[test]
fn huge_grain_directory() {
    tk::hostile::within(LIMIT_SECS, "huge_grain_directory", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "gd.vmdk", "monolithicSparse");
        patch(&p, 12, &(1u64 << 39).to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "grain directory");
        // One entry per table and one sector per grain: 2^40 directory entries.
        let p = base(dir.path(), "gd2.vmdk", "monolithicSparse");
        patch(&p, 12, &(1u64 << 40).to_le_bytes());
        patch(&p, 20, &1u64.to_le_bytes());
        patch(&p, 44, &1u32.to_le_bytes());
        expect(&p, ErrorKind::OutOfBounds, "grain directory");
        // Beyond what we accept at all.
        let p = base(dir.path(), "gd3.vmdk", "monolithicSparse");
        patch(&p, 12, &u64::MAX.to_le_bytes());
        expect(&p, ErrorKind::InvalidFormat, "capacity");
    });
}

#[test]
fn broken_headers() {
    tk::hostile::within(LIMIT_SECS, "broken_headers", || {
        let dir = tempfile::tempdir().unwrap();
        for (at, bytes, kind, needle) in [
            (4u64, 7u32.to_le_bytes().to_vec(), ErrorKind::Unsupported, "version"),
            (20, 0u64.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "grain size"),
            (20, (1u64 << 30).to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "grain size"),
            (44, 4096u32.to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "numGTEsPerGT"),
            (36, (1u64 << 40).to_le_bytes().to_vec(), ErrorKind::InvalidFormat, "descriptor"),
            (77, 9u16.to_le_bytes().to_vec(), ErrorKind::Unsupported, "compression"),
        ] {
            let p = base(dir.path(), "h.vmdk", "monolithicSparse");
            patch(&p, at, &bytes);
            expect(&p, kind, needle);
        }
        // Truncated to the header's first bytes.
        let p = base(dir.path(), "t.vmdk", "monolithicSparse");
        std::fs::write(&p, &std::fs::read(&p).unwrap()[..100]).unwrap();
        expect(&p, ErrorKind::InvalidFormat, "too short");
        // GD_AT_END without a footer.
        let p = base(dir.path(), "f.vmdk", "streamOptimized");
        patch(&p, 56, &u64::MAX.to_le_bytes());
        expect(&p, ErrorKind::InvalidFormat, "footer");
    });
}

#[test]
fn descriptors_that_are_not_images() {
    tk::hostile::within(LIMIT_SECS, "descriptors_that_are_not_images", || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("base.vmdk"), b"").unwrap();
        let cases: &[(&str, &[u8], ErrorKind, &str)] = &[
            (
                "delta.vmdk",
                b"# Disk DescriptorFile\nparentCID=12345678\nparentFileNameHint=\"base.vmdk\"\ncreateType=\"monolithicSparse\"\nRW 8 SPARSE \"base.vmdk\"\n",
                ErrorKind::Unsupported,
                "delta",
            ),
            ("none.vmdk", b"# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\n", ErrorKind::InvalidFormat, "no extents"),
            ("bin.vmdk", b"# Disk DescriptorFile\n\xff\xfe\x01", ErrorKind::InvalidFormat, "not text"),
            ("num.vmdk", b"# Disk DescriptorFile\nRW 99999999999999999999 FLAT \"x\" 0\n", ErrorKind::InvalidFormat, "not a number"),
            ("big.vmdk", b"# Disk DescriptorFile\nRW 18446744073709551615 ZERO\n", ErrorKind::InvalidFormat, "too large"),
            ("rdm.vmdk", b"# Disk DescriptorFile\nRW 8 VMFSRDM \"base.vmdk\"\n", ErrorKind::Unsupported, "VMFSRDM"),
            ("notsparse.vmdk", b"# Disk DescriptorFile\nRW 8 SPARSE \"base.vmdk\"\n", ErrorKind::InvalidFormat, "too short"),
            ("missing.vmdk", b"# Disk DescriptorFile\nRW 8 FLAT \"nope.vmdk\" 0\n", ErrorKind::Io, "nope.vmdk"),
        ];
        for (name, text, kind, needle) in cases {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            expect(&p, *kind, needle);
        }
        // A sparse extent smaller than its descriptor line claims.
        let sp = base(d, "small.vmdk", "monolithicSparse");
        let p = d.join("claims.vmdk");
        std::fs::write(
            &p,
            format!(
                "RW 999999 SPARSE \"{}\"\ncreateType=\"twoGbMaxExtentSparse\"\n",
                sp.file_name().unwrap().to_str().unwrap()
            ),
        )
        .unwrap();
        expect(&p, ErrorKind::Corrupt, "capacity");
        // Far too large to be a descriptor, and no magic.
        let p = d.join("huge.vmdk");
        std::fs::write(&p, vec![b'#'; 2 << 20]).unwrap();
        expect(&p, ErrorKind::InvalidFormat, "too large");
    });
}

#[test]
fn check_is_clean_on_qemu_images() {
    tk::hostile::within(LIMIT_SECS, "check_is_clean_on_qemu_images", || {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry();
        for sub in ["monolithicSparse", "streamOptimized", "monolithicFlat"] {
            let p = base(dir.path(), &format!("c-{sub}.vmdk"), sub);
            assert_qemu_check_clean(&p);
            let r = VmdkDriver
                .check(diskcast_block::source::open_file(&p).unwrap(), &OpenContext::new(&reg, &Gate::new()))
                .unwrap();
            assert_eq!(r.corruptions, 0, "{sub}: {:?}", r.messages);
            if sub != "monolithicFlat" {
                assert_eq!(r.allocated_clusters, Some(3), "{sub}");
                assert_eq!(r.compressed_clusters, Some(if sub == "streamOptimized" { 3 } else { 0 }));
            }
        }
    });
}

#[test]
fn many_extents_cannot_multiply_memory() {
    tk::hostile::within(LIMIT_SECS, "many_extents_cannot_multiply_memory", || {
        let dir = tempfile::tempdir().unwrap();
        let p = base(dir.path(), "x.vmdk", "monolithicSparse");
        // A 1 MiB grain directory (256 Ki tables of 512 grains of 64 KiB).
        patch(&p, 12, &(1u64 << 34).to_le_bytes());
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(gd_offset(&p) + (2 << 20)).unwrap();
        let mut d = String::from("# Disk DescriptorFile\ncreateType=\"twoGbMaxExtentSparse\"\n");
        for _ in 0..300 {
            d.push_str("RW 128 SPARSE \"x.vmdk\"\n");
        }
        let desc = dir.path().join("many.vmdk");
        std::fs::write(&desc, d).unwrap();
        expect(&desc, ErrorKind::Unsupported, "grain directories add up");
    });
}
