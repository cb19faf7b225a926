//! Hostile tars, built with Python's tarfile or by hand: every one is read and
//! extracted within a time limit, without a panic, and nothing is ever written outside
//! the extraction directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::shs;
use diskcast_block::ErrorKind;
use diskcast_block::progress::NoProgress;
use diskcast_host::{ExtractOptions, extract};
use diskcast_testkit::within;
use std::path::{Path, PathBuf};

/// A work area: `root/out` is the extraction directory, `root/outside` must stay empty.
struct Area {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Area {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join("outside")).unwrap();
        Area { _dir: dir, root }
    }
    fn outside(&self) -> PathBuf {
        self.root.join("outside")
    }
    fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    /// Runs a Python script with tarfile imported, `OUT` the archive path, `OUTSIDE` the
    /// directory that must stay empty.
    fn python(&self, name: &str, script: &str) -> PathBuf {
        let archive = self.root.join(name);
        let full = format!(
            "import tarfile, io, sys\nOUT = {:?}\nOUTSIDE = {:?}\ndef add(t, name, data=b'', **kw):\n    i = tarfile.TarInfo(name)\n    for k, v in kw.items(): setattr(i, k, v)\n    if i.type in (tarfile.REGTYPE, tarfile.AREGTYPE): i.size = len(data)\n    t.addfile(i, io.BytesIO(data) if data else None)\n{script}\n",
            archive.to_str().unwrap(),
            self.outside().to_str().unwrap()
        );
        shs("/usr/bin/python3", &["-c", &full]);
        archive
    }
    /// Reads and extracts `archive` within 30 s; returns the warnings and the report, or
    /// the error of reading.
    fn run(&self, archive: &Path) -> Result<(Vec<String>, diskcast_host::ExtractReport), diskcast_block::Error> {
        let (a, out) = (archive.to_path_buf(), self.out());
        let r = within(30, "reading and extracting a hostile tar", move || {
            let t = diskcast_tar::read_tar(&a)?;
            let rep = extract(&t.tree, &out, &ExtractOptions::new(2), &NoProgress)?;
            Ok((t.warnings, rep))
        });
        let left: Vec<_> = std::fs::read_dir(self.outside()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "something was written outside the extraction directory: {left:?}");
        let top: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let known = |n: &String| n == "out" || n == "outside" || n.ends_with(".tar") || n.ends_with(".gz");
        assert!(top.iter().all(known), "unexpected entries beside the extraction directory: {top:?}");
        r
    }
}

#[test]
fn dot_dot_members_are_skipped_with_a_warning() {
    let a = Area::new();
    let tar = a.python(
        "dotdot.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT) as t:\n    add(t, '../outside/x', b'evil')\n    add(t, 'ok/../../outside/y', b'evil')\n    add(t, 'fine', b'good')",
    );
    let (warnings, rep) = a.run(&tar).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.contains("'..'")), "{warnings:?}");
    assert_eq!(rep.files, 1);
    assert_eq!(std::fs::read(a.out().join("fine")).unwrap(), b"good");
}

#[test]
fn absolute_member_paths_land_inside_the_directory() {
    let a = Area::new();
    let tar = a.python(
        "abs.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.GNU_FORMAT) as t:\n    add(t, OUTSIDE + '/x', b'abs')",
    );
    let (warnings, _) = a.run(&tar).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let inside = a.out().join(a.outside().strip_prefix("/").unwrap()).join("x");
    assert_eq!(std::fs::read(&inside).unwrap(), b"abs");
}

#[test]
fn a_member_under_a_symlink_to_outside_is_never_followed() {
    let a = Area::new();
    let tar = a.python(
        "symlink.tar",
        "with tarfile.open(OUT, 'w') as t:\n    add(t, 'evil', type=tarfile.SYMTYPE, linkname=OUTSIDE)\n    add(t, 'evil/pwned', b'owned')\n    add(t, 'rel', type=tarfile.SYMTYPE, linkname='../outside')\n    add(t, 'rel/pwned2', b'owned')\n    add(t, 'rel', type=tarfile.DIRTYPE)\n    add(t, 'rel/now-a-dir', b'inside')",
    );
    let (warnings, rep) = a.run(&tar).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("symlink"), "{warnings:?}");
    // Absolute symlink targets are data: created as they are.
    assert_eq!(std::fs::read_link(a.out().join("evil")).unwrap(), a.outside());
    // A later directory member replaces the symlink inside the tree.
    assert_eq!(std::fs::read(a.out().join("rel/now-a-dir")).unwrap(), b"inside");
    assert_eq!(rep.symlinks, 1);
}

#[test]
fn hard_links_out_of_the_archive_are_refused() {
    let a = Area::new();
    let tar = a.python(
        "hardlink.tar",
        "with tarfile.open(OUT, 'w') as t:\n    add(t, 'passwd', type=tarfile.LNKTYPE, linkname='../../etc/passwd')\n    add(t, 'abs', type=tarfile.LNKTYPE, linkname='/etc/passwd')\n    add(t, 'dir', type=tarfile.DIRTYPE)\n    add(t, 'todir', type=tarfile.LNKTYPE, linkname='dir')\n    add(t, 'f', b'x')\n    add(t, 'g', type=tarfile.LNKTYPE, linkname='f')",
    );
    let (warnings, rep) = a.run(&tar).unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(!a.out().join("passwd").exists() && !a.out().join("abs").exists() && !a.out().join("todir").exists());
    assert_eq!(rep.hardlinks, 1);
}

/// A 512-byte ustar header with a valid checksum.
fn header(name: &str, typeflag: u8, size: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..124 + size.len()].copy_from_slice(size);
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = typeflag;
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&c| u32::from(c)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn pad(mut v: Vec<u8>) -> Vec<u8> {
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

#[test]
fn a_pax_size_that_disagrees_with_the_header_wins_and_stays_in_step() {
    // PAX says 1000 bytes, the header says 5: POSIX says the PAX record wins, so the
    // reader takes 1000 bytes (and finds the next header after them).
    let a = Area::new();
    let record = b"13 size=1000\n";
    let mut tar = header("PaxHeaders/f", b'x', b"00000000015");
    tar.extend(pad(record.to_vec()));
    tar.extend(header("f", b'0', b"00000000005"));
    tar.extend(pad(vec![b'A'; 1000]));
    tar.extend(header("g", b'0', b"00000000002"));
    tar.extend(pad(b"ok".to_vec()));
    tar.extend(vec![0u8; 1024]);
    let p = a.root.join("paxsize.tar");
    std::fs::write(&p, &tar).unwrap();
    let (_, rep) = a.run(&p).unwrap();
    assert_eq!(rep.files, 2);
    assert_eq!(std::fs::read(a.out().join("f")).unwrap(), vec![b'A'; 1000]);
    assert_eq!(std::fs::read(a.out().join("g")).unwrap(), b"ok");
    // A PAX size past the end of the archive is a truncation, not a short file.
    let a = Area::new();
    let mut tar = header("PaxHeaders/f", b'x', b"00000000024");
    tar.extend(pad(b"20 size=99999999999\n".to_vec()));
    tar.extend(header("f", b'0', b"00000000005"));
    tar.extend(pad(b"short".to_vec()));
    let p = a.root.join("paxhuge.tar");
    std::fs::write(&p, &tar).unwrap();
    let e = a.run(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn truncated_archives_are_errors_plain_and_compressed() {
    let a = Area::new();
    let tar = a.python(
        "full.tar",
        "with tarfile.open(OUT, 'w') as t:\n    add(t, 'a', b'x' * 5000)\n    add(t, 'b', b'y' * 5000)",
    );
    let bytes = std::fs::read(&tar).unwrap();
    for cut in [100, 512 + 2000, 512 * 12 + 300] {
        let p = a.root.join(format!("cut-{cut}.tar"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = a.run(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let _ = std::fs::remove_dir_all(a.out());
    }
    // gzip: cut the compressed stream.
    let gz = a.root.join("full.tar.gz");
    shs("sh", &["-c", &format!("gzip -c {} > {}", tar.display(), gz.display())]);
    let gzb = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &gzb[..gzb.len() / 2]).unwrap();
    std::fs::remove_file(&tar).unwrap();
    let e = a.run(&gz).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Io), "{e}");
}

#[test]
fn a_header_checksum_error_names_the_field_and_offset() {
    let a = Area::new();
    let mut tar = header("a", b'0', b"00000000001");
    tar.extend(pad(b"x".to_vec()));
    let mut bad = header("b", b'0', b"00000000001");
    bad[0] = b'c';
    tar.extend(bad);
    tar.extend(pad(b"y".to_vec()));
    tar.extend(vec![0u8; 1024]);
    let p = a.root.join("chksum.tar");
    std::fs::write(&p, &tar).unwrap();
    let e = a.run(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.field(), Some("chksum"));
    assert_eq!(e.offset(), Some(1024));
}

#[test]
fn huge_claims_are_bounded() {
    let a = Area::new();
    // Base-256 size of 2^62 bytes.
    let mut size = vec![0x80u8, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0];
    size[4] = 0x40;
    let mut tar = header("huge", b'0', &[]);
    tar[124..136].copy_from_slice(&size);
    tar[148..156].fill(b' ');
    let sum: u32 = tar.iter().map(|&c| u32::from(c)).sum();
    tar[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    tar.extend(vec![0u8; 4096]);
    let p = a.root.join("huge.tar");
    std::fs::write(&p, &tar).unwrap();
    let e = a.run(&p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    // A GNU long name claiming 1 GiB.
    let p = a.root.join("longname.tar");
    let mut tar = header("././@LongLink", b'L', b"10000000000");
    tar.extend(vec![0u8; 4096]);
    std::fs::write(&p, &tar).unwrap();
    let e = a.run(&p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    // A sparse map with a run past the file's size.
    let tar = a.python(
        "sparse.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT) as t:\n    i = tarfile.TarInfo('GNUSparseFile.0/s')\n    i.size = 4\n    i.pax_headers = {'GNU.sparse.map': '100,4', 'GNU.sparse.size': '10', 'GNU.sparse.name': 's'}\n    t.addfile(i, io.BytesIO(b'abcd'))",
    );
    let e = a.run(&tar).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A PAX 1.0 sparse map that claims more bytes than its member holds.
    let tar = a.python(
        "sparse1.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.PAX_FORMAT) as t:\n    i = tarfile.TarInfo('GNUSparseFile.0/s')\n    i.size = 11\n    i.pax_headers = {'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.realsize': '10', 'GNU.sparse.name': 's'}\n    t.addfile(i, io.BytesIO(b'1\\n0\\n5\\nhello'))",
    );
    let e = a.run(&tar).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("sparse map"), "{e}");
}

#[test]
fn extraction_refuses_a_non_empty_directory() {
    let a = Area::new();
    std::fs::create_dir(a.out()).unwrap();
    std::fs::write(a.out().join("keep"), b"mine").unwrap();
    let tar = a.python("one.tar", "with tarfile.open(OUT, 'w') as t:\n    add(t, 'keep', b'theirs')");
    let e = a.run(&tar).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused);
    assert_eq!(std::fs::read(a.out().join("keep")).unwrap(), b"mine");
}
