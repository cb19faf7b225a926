//! rpm's sqlite package database against Debian's rpm and sqlite3: a database of 200
//! packages written by `rpm -i --justdb` (headers spill onto overflow pages, the
//! Packages b-tree has interior pages) lists exactly as `rpm -qa` does, alone and inside
//! an umoci-built image through `inspect`; a WAL left next to it is applied as rpm (that
//! is, SQLite) would; damaged headers and databases give errors that name the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use diskcast_inspect::inventory::Component;
use diskcast_inspect::{Package, bdb, rpmdb};
use diskcast_oci::inspect::inspect;
use diskcast_oci::{OpenOptions, open};
use diskcast_sqlite::{Db, Limits, Value};
use diskcast_testkit::hostile::{assert_input_error, within};
use std::path::Path;

fn line(p: &Package) -> String {
    rpm_line(
        &p.name,
        p.epoch.map(u64::from),
        &p.version,
        &p.architecture,
        p.size,
        p.summary.as_deref(),
        p.license.as_deref(),
        p.source.as_deref(),
    )
}

fn lines(ps: &[Package]) -> Vec<String> {
    let mut v: Vec<String> = ps.iter().map(line).collect();
    v.sort();
    v
}

/// [`line`] of the packages `inspect` lists (whose `version` carries rpm's `EPOCH:`).
fn listed(ps: &[Component]) -> Vec<String> {
    let mut v: Vec<String> = ps
        .iter()
        .map(|p| {
            let version = match p.epoch {
                Some(e) => p.version.strip_prefix(&format!("{e}:")).unwrap(),
                None => &p.version,
            };
            rpm_line(
                &p.name,
                p.epoch.map(u64::from),
                version,
                p.architecture.as_deref().unwrap_or(""),
                p.size,
                p.summary.as_deref(),
                p.license.as_deref(),
                p.source.as_deref(),
            )
        })
        .collect();
    v.sort();
    v
}

fn read(dbdir: &Path) -> Vec<Package> {
    let main = std::fs::read(dbdir.join("rpmdb.sqlite")).unwrap();
    let wal = std::fs::read(dbdir.join("rpmdb.sqlite-wal")).ok();
    rpmdb::read_sqlite("rpmdb.sqlite", main, wal).unwrap()
}

#[test]
fn two_hundred_packages_list_as_rpm_qa_and_sqlite3_see_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 200);
    let file = dbdir.join("rpmdb.sqlite");
    let f = file.to_str().unwrap();

    // The shape this test is about, as sqlite3 reports it: headers larger than a page
    // (overflow chains) and a Packages tree whose root is an interior page.
    let page: u64 = run("sqlite3", &[f, "PRAGMA page_size"]).trim().parse().unwrap();
    let biggest: u64 = run("sqlite3", &[f, "SELECT max(length(blob)) FROM Packages"]).trim().parse().unwrap();
    assert!(biggest > page, "largest header {biggest} fits a {page}-byte page: no overflow exercised");
    let root: u64 =
        run("sqlite3", &[f, "SELECT rootpage FROM sqlite_schema WHERE name = 'Packages'"]).trim().parse().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes[((root - 1) * page) as usize], 0x05, "Packages root is an interior page");

    // Row by row, the blobs are the ones sqlite3 holds.
    let db = Db::open_path(&file, Limits::default()).unwrap();
    let rows = db.rows(db.table_root("Packages").unwrap().unwrap()).unwrap();
    let ours: Vec<String> = rows
        .iter()
        .map(|r| match &r.values[1] {
            Value::Blob(b) => {
                format!("{}|{}|{}", r.rowid, b.len(), b.iter().map(|x| format!("{x:02X}")).collect::<String>())
            }
            v => panic!("hnum {}: {v:?}", r.rowid),
        })
        .collect();
    let theirs: Vec<String> = run("sqlite3", &[f, "SELECT hnum, length(blob), hex(blob) FROM Packages ORDER BY hnum"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ours.len(), 202);
    assert_eq!(ours, theirs);

    // Package by package, what rpm -qa says (the gpg-pubkey included).
    let packages = read(&dbdir);
    assert_eq!(lines(&packages), rpm_qa(&dbdir));
    assert!(packages.iter().any(|p| p.name == "gpg-pubkey" && p.architecture.is_empty()));
    assert!(packages.iter().any(|p| p.epoch.is_some()));
}

#[test]
fn inspect_lists_the_rpm_packages_of_an_umoci_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let root = tmp.path().join("root");
    let dbdir = root.join("var/lib/rpm");
    make_rpmdb(&dbdir, 40);
    let image_ref = format!("{}:t", img.display());
    run("umoci", &["insert", "--image", &image_ref, root.join("var").to_str().unwrap(), "/var"]);
    let r = inspect(&open(&format!("oci:{image_ref}"), &OpenOptions::default()).unwrap(), 2).unwrap();
    assert_eq!(r.inventory.package_manager.as_deref(), Some("rpm"));
    assert_eq!(r.inventory.warnings, Vec::<String>::new());
    assert_eq!(listed(&r.inventory.packages), rpm_qa(&dbdir));
    assert_eq!(r.inventory.packages.len(), 42);
}

/// A copy taken while a writer held the database open: the last transaction (one
/// package removed, one header rewritten) lives only in the -wal file. rpm -qa on the
/// copy applies it; so do we.
#[test]
fn a_wal_left_next_to_the_database_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 12);
    let snap = tmp.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    let live = dbdir.join("rpmdb.sqlite");
    let script = format!(
        "PRAGMA wal_autocheckpoint=0;\nDELETE FROM Packages WHERE hnum = 3;\n\
         UPDATE Packages SET blob = (SELECT blob FROM Packages WHERE hnum = 1) WHERE hnum = 2;\n\
         .shell cp '{l}' '{s}/rpmdb.sqlite' && cp '{l}-wal' '{s}/rpmdb.sqlite-wal'\n",
        l = live.display(),
        s = snap.display()
    );
    let mut child = std::process::Command::new("sqlite3")
        .arg(&live)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(snap.join("rpmdb.sqlite-wal")).unwrap().len() > 0);
    let packages = read(&snap);
    let want = rpm_qa(&snap);
    assert_eq!(want.len(), 13, "rpm sees the WAL's transaction: {want:?}");
    assert_eq!(lines(&packages), want);
    // Without the WAL the old state shows: the WAL was really read.
    let bare = rpmdb::read_sqlite("x", std::fs::read(snap.join("rpmdb.sqlite")).unwrap(), None).unwrap();
    assert_eq!(bare.len(), 14);
}

#[test]
fn hostile_rpm_headers_and_databases() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 3);
    let file = dbdir.join("rpmdb.sqlite");
    for (what, set, field) in [
        ("index count 2^20", "CAST(X'00100000' || substr(blob, 5) AS BLOB)", "index_count"),
        (
            "data length past the blob",
            "CAST(substr(blob, 1, 4) || X'0FFFFFF0' || substr(blob, 9) AS BLOB)",
            "data_length",
        ),
        (
            "entry offset past the data",
            "CAST(substr(blob, 1, 16) || X'7FFFFFFF' || substr(blob, 21) AS BLOB)",
            "index_offset",
        ),
        ("too short", "X'000000'", "header_intro"),
        ("not a blob", "42", "blob"),
    ] {
        let d = tmp.path().join(field);
        std::fs::create_dir_all(&d).unwrap();
        let copy = d.join("rpmdb.sqlite");
        std::fs::copy(&file, &copy).unwrap();
        run(
            "sqlite3",
            &[
                copy.to_str().unwrap(),
                &format!("PRAGMA journal_mode=DELETE; UPDATE Packages SET blob = {set} WHERE hnum = 2"),
            ],
        );
        let bytes = std::fs::read(&copy).unwrap();
        let e = within(10, what, move || rpmdb::read_sqlite("hostile/rpmdb.sqlite", bytes, None)).unwrap_err();
        assert_input_error(&e, "hostile/rpmdb.sqlite", what);
        assert_eq!(e.field(), Some(field), "{what}: {e}");
        if field != "blob" {
            assert!(e.to_string().contains("hnum 2"), "{what}: {e}");
        }
    }
    // Not an rpm database at all.
    let plain = tmp.path().join("plain.db");
    run("sqlite3", &[plain.to_str().unwrap(), "CREATE TABLE t(x)"]);
    let e = rpmdb::read_sqlite("plain.db", std::fs::read(&plain).unwrap(), None).unwrap_err();
    assert_input_error(&e, "plain.db", "plain");
    assert_eq!(e.field(), Some("Packages"), "{e}");
}

/// A damaged rpmdb inside an image: inspect still reports the image and says why the
/// packages are missing.
#[test]
fn hostile_rpmdb_in_an_image_is_reported_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let root = tmp.path().join("root");
    let dbdir = root.join("var/lib/rpm");
    make_rpmdb(&dbdir, 3);
    // Truncate to two pages: the Packages tree now points past the end of the file.
    let f = std::fs::OpenOptions::new().write(true).open(dbdir.join("rpmdb.sqlite")).unwrap();
    f.set_len(2 * 4096).unwrap();
    drop(f);
    let image_ref = format!("{}:t", img.display());
    run("umoci", &["insert", "--image", &image_ref, root.join("var").to_str().unwrap(), "/var"]);
    let r = within(60, "damaged rpmdb in an image", move || {
        inspect(&open(&format!("oci:{image_ref}"), &OpenOptions::default()).unwrap(), 2).unwrap()
    });
    assert_eq!(r.inventory.package_manager.as_deref(), Some("rpm"));
    assert!(r.inventory.packages.is_empty());
    let err = r.inventory.warnings.iter().find(|w| w.contains("rpmdb.sqlite")).unwrap();
    assert!(err.contains("/var/lib/rpm/rpmdb.sqlite") && err.contains("page"), "{err}");
    assert!(!r.layers.is_empty());
}

/// 3000 reproducible mutants of a small database holding only rpm's Packages table
/// (1 KiB pages, so every page is a b-tree or overflow page that matters): none may
/// panic or hang, and every error must be about the input and name it.
#[test]
fn mutated_rpm_databases_never_panic() {
    use diskcast_testkit::hostile::{Mutator, Rng};
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 5);
    let small = tmp.path().join("small.db");
    run(
        "sqlite3",
        &[
            small.to_str().unwrap(),
            &format!(
                "PRAGMA page_size=1024; ATTACH '{}' AS r; \
                 CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL); \
                 INSERT INTO Packages SELECT * FROM r.Packages;",
                dbdir.join("rpmdb.sqlite").display()
            ),
        ],
    );
    let seed = std::fs::read(&small).unwrap();
    assert_eq!(rpmdb::read_sqlite("m.db", seed.clone(), None).unwrap().len(), 7);
    let len = seed.len();
    let mutator = Mutator::new(seed, &[(0, 1024), (1024, len)]);
    let mut rng = Rng::new(0x5eed_4b9d);
    let (mut ok, mut failed) = (0, 0);
    let mutants: Vec<(Vec<u8>, String)> = (0..3000).map(|_| mutator.mutant(&mut rng)).collect();
    let results = within(120, "3000 rpmdb mutants", move || {
        mutants
            .into_iter()
            .map(|(m, what)| (rpmdb::read_sqlite("m.db", m, None).map(|p| p.len()), what))
            .collect::<Vec<_>>()
    });
    for (r, what) in results {
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                assert_input_error(&e, "m.db", &what);
            }
        }
    }
    assert!(failed > 500 && ok > 100, "{ok} read, {failed} refused");
}

// ---- rpm's Berkeley DB Packages (rpm before 4.16) ----

/// db5.3_dump's key/data pairs (hex), sorted.
fn db_dump(path: &Path) -> Vec<(String, String)> {
    let out = run("db5.3_dump", &[path.to_str().unwrap()]);
    let items: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "HEADER=END")
        .skip(1)
        .take_while(|l| *l != "DATA=END")
        .map(|l| l.trim_start())
        .collect();
    let mut pairs: Vec<(String, String)> = items.chunks(2).map(|c| (c[0].to_string(), c[1].to_string())).collect();
    pairs.sort();
    pairs
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn berkeley_db_packages_list_as_rpm_qa_and_db_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 60);
    let want = rpm_qa(&dbdir);
    assert_eq!(want.len(), 62);
    for (ps, lorder) in [(4096, 1234), (512, 4321), (16384, 1234)] {
        let out = tmp.path().join(format!("Packages-{ps}-{lorder}"));
        make_rpm_bdb(&dbdir.join("rpmdb.sqlite"), &out, ps, lorder);
        let bytes = std::fs::read(&out).unwrap();
        let db = bdb::hash_pairs("Packages", &bytes).unwrap();
        assert_eq!(db.big_endian, lorder == 4321);
        let mut ours: Vec<(String, String)> = db.pairs.iter().map(|(k, d)| (hex(k), hex(d))).collect();
        ours.sort();
        assert_eq!(ours, db_dump(&out), "page size {ps}, byte order {lorder}");
        assert_eq!(lines(&rpmdb::read_bdb("Packages", &bytes).unwrap()), want, "page size {ps}, byte order {lorder}");
    }
}

#[test]
fn inspect_lists_the_packages_of_a_berkeley_db_rpmdb_in_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    make_image(&img);
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 10);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
    make_rpm_bdb(&dbdir.join("rpmdb.sqlite"), &root.join("var/lib/rpm/Packages"), 4096, 1234);
    let image_ref = format!("{}:t", img.display());
    run("umoci", &["insert", "--image", &image_ref, root.join("var").to_str().unwrap(), "/var"]);
    let r = inspect(&open(&format!("oci:{image_ref}"), &OpenOptions::default()).unwrap(), 2).unwrap();
    assert_eq!(r.inventory.package_manager.as_deref(), Some("rpm"));
    assert_eq!(r.inventory.warnings, Vec::<String>::new());
    assert_eq!(listed(&r.inventory.packages), rpm_qa(&dbdir));
}

/// Big-endian 512-byte pages: (a hash page, the offset of an off-page data item on it,
/// an overflow page with a successor), found by walking the pages' type bytes.
fn bdb_landmarks(b: &[u8]) -> (usize, usize, usize) {
    let pages = b.len() / 512;
    let be16 = |at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    let (hash, item) = (1..pages)
        .filter(|&n| b[n * 512 + 25] == 13)
        .find_map(|n| {
            let entries = be16(n * 512 + 20);
            (1..entries).step_by(2).map(|i| be16(n * 512 + 26 + 2 * i)).find(|&o| b[n * 512 + o] == 3).map(|o| (n, o))
        })
        .unwrap();
    let ov = (1..pages).find(|&n| b[n * 512 + 25] == 7 && b[n * 512 + 16..n * 512 + 20] != [0; 4]).unwrap();
    (hash, item, ov)
}

#[test]
fn hostile_berkeley_db_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let dbdir = tmp.path().join("db");
    make_rpmdb(&dbdir, 4);
    let file = tmp.path().join("Packages");
    make_rpm_bdb(&dbdir.join("rpmdb.sqlite"), &file, 512, 4321);
    let seed = std::fs::read(&file).unwrap();
    let (hash, inp1, ov) = bdb_landmarks(&seed);
    let set = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "last page past the end",
            {
                let mut b = seed.clone();
                set(&mut b, 32, &100_000u32.to_be_bytes());
                b
            },
            "last_pgno",
        ),
        (
            "item offset past the page",
            {
                let mut b = seed.clone();
                set(&mut b, hash * 512 + 26, &0x7000u16.to_be_bytes());
                b
            },
            "item_offset",
        ),
        (
            "off-page length 4 GiB",
            {
                let mut b = seed.clone();
                set(&mut b, hash * 512 + inp1 + 8, &u32::MAX.to_be_bytes());
                b
            },
            "tlen",
        ),
        (
            "overflow chain cycle",
            {
                let mut b = seed.clone();
                set(&mut b, ov * 512 + 16, &(ov as u32).to_be_bytes());
                b
            },
            "overflow_pgno",
        ),
        (
            "overflow page 0",
            {
                let mut b = seed.clone();
                set(&mut b, hash * 512 + inp1 + 4, &0u32.to_be_bytes());
                b
            },
            "overflow_pgno",
        ),
        (
            "odd item count",
            {
                let mut b = seed.clone();
                b[hash * 512 + 21] |= 1;
                b
            },
            "entries",
        ),
    ];
    for (what, bytes, field) in cases {
        let e = within(10, what, move || rpmdb::read_bdb("bad/Packages", &bytes)).unwrap_err();
        assert_input_error(&e, "bad/Packages", what);
        assert_eq!(e.field(), Some(field), "{what}: {e}");
    }
    // 3000 mutants: no panic, no hang, errors about the input.
    use diskcast_testkit::hostile::{Mutator, Rng};
    let mutator = Mutator::new(seed.clone(), &[(0, 512), (512, seed.len())]);
    let mut rng = Rng::new(0xbdb);
    let mutants: Vec<(Vec<u8>, String)> = (0..3000).map(|_| mutator.mutant(&mut rng)).collect();
    let results = within(120, "3000 bdb mutants", move || {
        mutants
            .into_iter()
            .map(|(m, what)| (rpmdb::read_bdb("m/Packages", &m).map(|p| p.len()), what))
            .collect::<Vec<_>>()
    });
    for (r, what) in results {
        if let Err(e) = r {
            assert_input_error(&e, "m/Packages", &what);
        }
    }
}
