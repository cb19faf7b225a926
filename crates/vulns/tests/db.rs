//! The OSV database reader on hostile input: files that are not JSON or not advisories,
//! over the size cap (loose and as a zip member that inflates past it), a symlink, a
//! directory of zips with one that is no zip, a path that is no database. Each bad file is one warning naming it; the good ones are
//! still read. Zips are made by Python's zipfile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_vulns::osv::{MAX_ADVISORY_BYTES, read_db};
use std::path::Path;
use std::process::Command;

const GOOD: &str = r#"{"id": "GHSA-good", "affected": [{"package": {"ecosystem": "npm", "name": "x"},
  "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}]}]}"#;

fn read(path: &Path) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut warnings = Vec::new();
    read_db(path, |_, a| ids.push(a.id), |w| warnings.push(w)).unwrap();
    ids.sort();
    warnings.sort();
    (ids, warnings)
}

fn hostile_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("npm")).unwrap();
    std::fs::write(dir.join("npm/good.json"), GOOD).unwrap();
    std::fs::write(dir.join("npm/text.json"), "not json").unwrap();
    std::fs::write(dir.join("npm/array.json"), "[1, 2, 3]").unwrap();
    std::fs::write(dir.join("npm/noid.json"), r#"{"id": " ", "affected": []}"#).unwrap();
    std::fs::write(dir.join("npm/README.md"), "not an advisory, not read").unwrap();
    // Past the cap by one byte: spaces, which a zip deflates to almost nothing.
    let mut huge = GOOD.as_bytes().to_vec();
    huge.resize(usize::try_from(MAX_ADVISORY_BYTES).unwrap() + 1, b' ');
    std::fs::write(dir.join("npm/huge.json"), huge).unwrap();
}

#[test]
fn bad_files_are_warnings_naming_them_and_the_rest_is_read() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    hostile_dir(&dir);
    std::os::unix::fs::symlink("/etc/passwd", dir.join("npm/link.json")).unwrap();
    let (ids, warnings) = read(&dir);
    assert_eq!(ids, ["GHSA-good"]);
    let want = [
        ("npm/array.json", "not an OSV advisory"),
        ("npm/huge.json", "MAX_ADVISORY_BYTES"),
        ("npm/link.json", "a symlink, which is not followed"),
        ("npm/noid.json", "an advisory without an id"),
        ("npm/text.json", "not an OSV advisory"),
    ];
    assert_eq!(warnings.len(), want.len(), "{warnings:#?}");
    for (w, (file, why)) in warnings.iter().zip(want) {
        assert!(w.contains(file) && w.contains(why), "{w} should name {file} and {why}");
    }

    // The same as a zip (without the symlink): the huge member is stopped at the cap.
    std::fs::remove_file(dir.join("npm/link.json")).unwrap();
    let zip = t.path().join("db.zip");
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import sys, shutil; shutil.make_archive(sys.argv[1][:-4], 'zip', sys.argv[2])"])
        .arg(&zip)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(out.success());
    assert!(std::fs::metadata(&zip).unwrap().len() < 1 << 20, "the zip should be small: the cap is on inflated bytes");
    let (ids, warnings) = read(&zip);
    assert_eq!(ids, ["GHSA-good"]);
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    assert!(
        warnings.iter().any(|w| w.contains("db.zip!/npm/huge.json") && w.contains("MAX_ADVISORY_BYTES")),
        "{warnings:#?}"
    );

    // A directory of zips, as `vulndb update` lays it out: each zip read, one that is no
    // zip (or a symlink to one) a warning naming it, the rest still read.
    let zips = t.path().join("zips");
    std::fs::create_dir_all(zips.join("npm")).unwrap();
    std::fs::rename(&zip, zips.join("npm/all.zip")).unwrap();
    std::fs::write(zips.join("all.zip"), b"PK\x03\x04 cut short").unwrap();
    std::os::unix::fs::symlink(zips.join("npm/all.zip"), zips.join("link.zip")).unwrap();
    let (ids, warnings) = read(&zips);
    assert_eq!(ids, ["GHSA-good"]);
    assert_eq!(warnings.len(), 6, "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("zips/all.zip: not a zip")), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("zips/link.zip") && w.contains("symlink")), "{warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("zips/npm/all.zip!/npm/huge.json")), "{warnings:#?}");

    // Not a database at all: an error naming it.
    let junk = t.path().join("junk.bin");
    std::fs::write(&junk, b"PK\x03\x04 not a zip").unwrap();
    let e = read_db(&junk, |_, _| {}, |_| {}).unwrap_err();
    assert!(e.contains("junk.bin") && e.contains("not a zip"), "{e}");
    let e = read_db(&t.path().join("missing"), |_, _| {}, |_| {}).unwrap_err();
    assert!(e.contains("missing"), "{e}");
}
