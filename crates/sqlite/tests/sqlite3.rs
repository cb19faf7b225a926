//! The reader against the `sqlite3` shell: databases written by SQLite itself (several
//! page sizes, reserved bytes, UTF-16, freelists, multi-level b-trees, overflow chains,
//! an uncheckpointed WAL) must read back exactly as `sqlite3` prints them; damaged copies
//! must fail with an error naming the file and the field, quickly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::ErrorKind;
use diskcast_sqlite::{Db, Limits, Row, Value, WalUse};
use diskcast_testkit::hostile::{assert_input_error, within};
use diskcast_testkit::{be32, patch, read_bytes, run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Feeds `script` to `sqlite3 DB` on stdin (dot-commands need their own lines).
fn sqlite3(db: &Path, script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("sqlite3 is required for this test: {e} (scripts/setup.sh installs it)"));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// 3000 rows of mixed types; every 97th carries a blob of 3 KiB or more (overflow pages at
/// any page size up to 4 KiB; at 64 KiB the rows still make a multi-level tree).
const FILL: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, n INTEGER, r REAL, b BLOB);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<3000)
INSERT INTO t SELECT i, 'name-' || i || substr('abcdefghijklmnopqrstuvwxyz0123456789', 1, i % 37),
  (i - 1500) * i * i * 1000 + i % 3, i / 4.0,
  CASE WHEN i % 97 = 0 THEN randomblob(3000 + i * 7) WHEN i % 5 = 0 THEN NULL ELSE randomblob(i % 40) END
FROM c;
";

/// What `sqlite3` prints for table t, one line per row.
fn oracle(db: &Path) -> Vec<String> {
    let out = run(
        "sqlite3",
        &[
            "-readonly",
            db.to_str().unwrap(),
            "SELECT id, quote(name), quote(n), CASE WHEN r IS NULL THEN 'NULL' ELSE printf('%.2f', r) END, quote(b) FROM t ORDER BY id",
        ],
    );
    out.lines().map(str::to_string).collect()
}

fn quote(db: &Db, v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "NULL".into(),
        Some(Value::Int(n)) => n.to_string(),
        Some(Value::Real(r)) => format!("{r:.2}"),
        Some(Value::Text(t)) => format!("'{}'", db.text(t).replace('\'', "''")),
        Some(Value::Blob(b)) => format!("X'{}'", b.iter().map(|x| format!("{x:02X}")).collect::<String>()),
    }
}

/// Ours, formatted like [`oracle`].
fn ours(db: &Db) -> Vec<String> {
    let root = db.table_root("t").unwrap().expect("table t");
    db.rows(root).unwrap().iter().map(|r: &Row| fmt(db, r)).collect()
}

fn fmt(db: &Db, r: &Row) -> String {
    let v = |i| r.values.get(i);
    let real = match v(3) {
        Some(Value::Real(x)) => format!("{x:.2}"),
        Some(Value::Int(n)) => format!("{n}.00"), // SQLite stores integral reals as integers
        other => quote(db, other),
    };
    format!("{}|{}|{}|{}|{}", r.rowid, quote(db, v(1)), quote(db, v(2)), real, quote(db, v(4)))
}

fn make(dir: &Path, name: &str, pragmas: &str) -> PathBuf {
    let db = dir.join(name);
    sqlite3(&db, &format!("{pragmas}\n{FILL}"));
    db
}

fn open(p: &Path) -> Db {
    Db::open_path(p, Limits::default()).unwrap()
}

/// The b-tree under t's root has at least two interior levels (so the walk recursed).
fn assert_multi_level(p: &Path, db: &Db) {
    let root = db.table_root("t").unwrap().unwrap();
    let ps = u64::from(db.page_size());
    let page = read_bytes(p, u64::from(root - 1) * ps, 12);
    assert_eq!(page[0], 0x05, "root of t is an interior page");
    let child = be32(&page, 8);
    let c = read_bytes(p, u64::from(child - 1) * ps, 1);
    assert_eq!(c[0], 0x05, "the right-most child is interior too");
}

#[test]
fn page_sizes_overflow_and_deep_btrees_match_sqlite3() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, pragmas, deep) in [
        ("p512.db", "PRAGMA page_size=512;", true),
        ("p4k.db", "PRAGMA page_size=4096;", false),
        ("p64k.db", "PRAGMA page_size=65536;", false),
        ("reserved.db", "PRAGMA page_size=1024;\n.filectrl reserve_bytes 12", true),
    ] {
        let p = make(tmp.path(), name, pragmas);
        let db = open(&p);
        let want = oracle(&p);
        assert_eq!(want.len(), 3000);
        let got = ours(&db);
        assert_eq!(got, want, "{name}");
        if deep {
            assert_multi_level(&p, &db);
        }
        let pc: u32 = run("sqlite3", &[p.to_str().unwrap(), "PRAGMA page_count"]).trim().parse().unwrap();
        assert_eq!(db.page_count(), pc, "{name}");
        assert_eq!(db.wal_use(), WalUse::None);
    }
}

#[test]
fn utf16_databases_decode_text() {
    let tmp = tempfile::tempdir().unwrap();
    for enc in ["UTF-16le", "UTF-16be"] {
        let p = make(tmp.path(), &format!("{enc}.db"), &format!("PRAGMA encoding='{enc}';"));
        sqlite3(&p, "INSERT INTO t(id, name) VALUES (5000, 'café ünïcödé ☃');");
        let db = open(&p);
        assert_ne!(db.encoding(), diskcast_sqlite::Encoding::Utf8);
        let (got, want) = (ours(&db), oracle(&p));
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{enc}");
        }
        assert_eq!(got.len(), want.len(), "{enc}");
    }
}

#[test]
fn freelist_pages_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let p = make(tmp.path(), "free.db", "PRAGMA page_size=1024;");
    sqlite3(&p, "DELETE FROM t WHERE id % 3 = 0 OR id BETWEEN 100 AND 900;");
    let free: usize = run("sqlite3", &[p.to_str().unwrap(), "PRAGMA freelist_count"]).trim().parse().unwrap();
    assert!(free > 50, "{free} free pages");
    let db = open(&p);
    assert_eq!(db.free_pages(), free);
    assert_eq!(ours(&db), oracle(&p));
}

/// A WAL-mode database copied while its writer still had it open: the committed
/// transactions live only in the -wal file. They are applied (as SQLite does on open),
/// and without the WAL the rows are missing, so the WAL really was read.
#[test]
fn an_uncheckpointed_wal_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live.db");
    let snap = tmp.path().join("snap.db");
    let script = format!(
        "PRAGMA page_size=1024;\nPRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\n{FILL}\
         UPDATE t SET name = 'updated' WHERE id % 10 = 1;\nDELETE FROM t WHERE id > 2900;\n\
         .shell cp '{l}' '{s}' && cp '{l}-wal' '{s}-wal'\n",
        l = live.display(),
        s = snap.display()
    );
    sqlite3(&live, &script);
    assert!(std::fs::metadata(tmp.path().join("snap.db-wal")).unwrap().len() > 100_000);
    let db = open(&snap);
    assert!(matches!(db.wal_use(), WalUse::Applied(n) if n > 100), "{:?}", db.wal_use());
    let got = ours(&db);
    let want = oracle(&snap);
    assert_eq!(want.len(), 2900);
    assert_eq!(got, want);
    // The main file alone does not even hold table t yet.
    let bare = Db::open("snap.db", Box::new(std::fs::read(&snap).unwrap()), None, Limits::default()).unwrap();
    assert_eq!(bare.table_root("t").unwrap(), None);
}

// ---- hostile inputs: one damage each, on a copy of a real database ----

/// A 512-byte-page database with one row whose 3000-byte blob spills over overflow
/// pages 3.., and table u deep enough to have interior pages.
fn small(dir: &Path) -> PathBuf {
    let p = dir.join("small.db");
    let _ = std::fs::remove_file(&p);
    sqlite3(
        &p,
        "PRAGMA page_size=512;\nCREATE TABLE o(b BLOB);\nINSERT INTO o VALUES (zeroblob(3000));\n\
         CREATE TABLE u(x);\nWITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<400)\n\
         INSERT INTO u SELECT 'row number ' || i FROM c;\n",
    );
    p
}

fn damaged(dir: &Path, name: &str, f: impl FnOnce(&Path, &Db)) -> PathBuf {
    let src = small(dir);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    let db = open(&src);
    f(&dst, &db);
    dst
}

/// Scans table `t` of `p` under a time limit and returns the error.
fn scan_err(p: PathBuf, table: &'static str, name: &str) -> diskcast_block::Error {
    let what = name.to_string();
    let e = within(10, name, move || {
        let db = Db::open_path(&p, Limits::default())?;
        let root = db.table_root(table)?.expect("table");
        db.rows(root).map(|_| ())
    })
    .expect_err(&what);
    assert_input_error(&e, name, &what);
    e
}

fn root(db: &Db, t: &str) -> u32 {
    db.table_root(t).unwrap().unwrap()
}

#[test]
fn hostile_page_number_zero_and_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    // u's root is interior: point its right-most child at page 0, then past the end.
    for (name, child) in [("zero.db", 0u32), ("past.db", 100_000)] {
        let p = damaged(tmp.path(), name, |p, db| {
            let r = root(db, "u");
            patch(p, u64::from(r - 1) * 512 + 8, &child.to_be_bytes());
        });
        let e = scan_err(p, "u", name);
        assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
        assert_eq!(e.field(), Some("child_page"), "{e}");
        assert!(e.to_string().contains(&format!("page number {child}")), "{e}");
    }
    // A page inside the claimed size but beyond the file's end.
    let p = damaged(tmp.path(), "short.db", |p, _| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(512 * 3).unwrap();
    });
    let e = scan_err(p, "u", "short.db");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
}

#[test]
fn hostile_cell_pointer_past_the_page() {
    let tmp = tempfile::tempdir().unwrap();
    let p = damaged(tmp.path(), "cellptr.db", |p, db| {
        let r = root(db, "u");
        // First cell pointer of the interior root (header is 12 bytes).
        patch(p, u64::from(r - 1) * 512 + 12, &0x1ff0u16.to_be_bytes());
    });
    let e = scan_err(p, "u", "cellptr.db");
    assert_eq!(e.field(), Some("cell_pointer"), "{e}");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
}

#[test]
fn hostile_overflow_chain_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let p = damaged(tmp.path(), "ovcycle.db", |p, db| {
        let r = root(db, "o");
        // The leaf's one cell ends with the first overflow page number.
        let page = read_bytes(p, u64::from(r - 1) * 512, 512);
        let cell = usize::from(u16::from_be_bytes([page[8], page[9]]));
        // The payload size is a 2-byte varint, the rowid 1 byte; then the local part of
        // the payload (the spec's spill rule for U = 512) and the first overflow page.
        let size = (usize::from(page[cell] & 0x7f) << 7) | usize::from(page[cell + 1]);
        let (u, x) = (512, 512 - 35);
        let m = (u - 12) * 32 / 255 - 23;
        let k = m + (size - m) % (u - 4);
        let local = if k <= x { k } else { m };
        let first = be32(&page, cell + 3 + local);
        assert!(first > r && first < 20, "first overflow page {first}");
        // Its successor points back at it.
        let second = be32(&read_bytes(p, u64::from(first - 1) * 512, 4), 0);
        patch(p, u64::from(second - 1) * 512, &first.to_be_bytes());
    });
    let e = scan_err(p, "o", "ovcycle.db");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("overflow_page"), "{e}");
    assert!(e.to_string().contains("reached twice"), "{e}");
}

#[test]
fn hostile_btree_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let p = damaged(tmp.path(), "btcycle.db", |p, db| {
        let r = root(db, "u");
        patch(p, u64::from(r - 1) * 512 + 8, &r.to_be_bytes());
    });
    let e = scan_err(p, "u", "btcycle.db");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("reached twice"), "{e}");
}

#[test]
fn hostile_payload_size() {
    let tmp = tempfile::tempdir().unwrap();
    let p = damaged(tmp.path(), "payload.db", |p, db| {
        let r = root(db, "o");
        let page = read_bytes(p, u64::from(r - 1) * 512, 512);
        let cell = u64::from(u16::from_be_bytes([page[8], page[9]]));
        // A 9-byte varint of 2^63 + ...: far past any limit and past usize on 32-bit.
        patch(p, u64::from(r - 1) * 512 + cell, &[0xff; 9]);
    });
    let e = scan_err(p, "o", "payload.db");
    assert_eq!(e.field(), Some("payload_size"), "{e}");
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    // A size that passes the cap but claims more than its overflow chain holds.
    let p = damaged(tmp.path(), "payload2.db", |p, db| {
        let r = root(db, "o");
        let page = read_bytes(p, u64::from(r - 1) * 512, 512);
        let cell = u64::from(u16::from_be_bytes([page[8], page[9]]));
        patch(p, u64::from(r - 1) * 512 + cell, &[0xfd, 0x00]); // 16000 bytes, same varint length
    });
    let e = scan_err(p, "o", "payload2.db");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("overflow chain ends"), "{e}");
}

#[test]
fn hostile_freelist_page_in_a_btree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = small(tmp.path());
    sqlite3(&src, "DELETE FROM u WHERE rowid > 200;");
    let db = open(&src);
    assert!(db.free_pages() > 0);
    let trunk = be32(&read_bytes(&src, 32, 4), 0);
    let p = tmp.path().join("freeref.db");
    std::fs::copy(&src, &p).unwrap();
    let r = root(&db, "u");
    patch(&p, u64::from(r - 1) * 512 + 8, &trunk.to_be_bytes());
    let e = scan_err(p, "u", "freeref.db");
    assert!(e.to_string().contains("freelist"), "{e}");
    // A freelist trunk that points at itself.
    let p = tmp.path().join("freecycle.db");
    std::fs::copy(&src, &p).unwrap();
    patch(&p, u64::from(trunk - 1) * 512, &trunk.to_be_bytes());
    let e = within(10, "freecycle", move || Db::open_path(&p, Limits::default()).map(|_| ())).unwrap_err();
    assert_input_error(&e, "freecycle.db", "freecycle");
    assert_eq!(e.field(), Some("freelist_trunk"), "{e}");
}

/// A database past 1 GiB (sparse) whose b-tree points at the lock-byte page.
#[test]
fn hostile_lock_byte_page() {
    let tmp = tempfile::tempdir().unwrap();
    let p = make(tmp.path(), "big.db", "PRAGMA page_size=65536;");
    let lock_page = (1u32 << 30) / 65536 + 1;
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(u64::from(lock_page + 4) * 65536).unwrap();
    drop(f);
    let counter = read_bytes(&p, 24, 4);
    patch(&p, 28, &(lock_page + 4).to_be_bytes());
    patch(&p, 92, &counter);
    let db = open(&p);
    assert_eq!(db.page_count(), lock_page + 4);
    let r = root(&db, "t");
    patch(&p, u64::from(r - 1) * 65536 + 8, &lock_page.to_be_bytes());
    let e = scan_err(p, "t", "big.db");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("lock-byte"), "{e}");
}

#[test]
fn hostile_wal_header_is_refused_and_torn_frames_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live.db");
    let snap = tmp.path().join("snap.db");
    sqlite3(
        &live,
        &format!(
            "PRAGMA page_size=1024;\nPRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\n{FILL}\
             INSERT INTO t(id, name) VALUES (9999, 'last');\n.shell cp '{l}' '{s}' && cp '{l}-wal' '{s}-wal'\n",
            l = live.display(),
            s = snap.display()
        ),
    );
    let wal = tmp.path().join("snap.db-wal");
    // The last transaction touched a few pages: tear its final frame (the commit).
    let len = std::fs::metadata(&wal).unwrap().len();
    let torn = tmp.path().join("torn.db");
    std::fs::copy(&snap, &torn).unwrap();
    std::fs::copy(&wal, tmp.path().join("torn.db-wal")).unwrap();
    patch(&tmp.path().join("torn.db-wal"), len - 100, &[0x55; 8]);
    let db = open(&torn);
    let got = ours(&db);
    assert_eq!(got.len(), 3000, "the torn last transaction is not applied");
    assert_eq!(got, oracle(&snap)[..3000]);
    // A damaged header is refused, not silently ignored.
    let bad = tmp.path().join("badwal.db");
    std::fs::copy(&snap, &bad).unwrap();
    std::fs::copy(&wal, tmp.path().join("badwal.db-wal")).unwrap();
    patch(&tmp.path().join("badwal.db-wal"), 16, &[1, 2, 3, 4]);
    let e = within(10, "badwal", move || Db::open_path(&bad, Limits::default()).map(|_| ())).unwrap_err();
    assert_input_error(&e, "badwal.db-wal", "badwal");
    assert_eq!(e.field(), Some("wal_checksum"), "{e}");
}

#[test]
fn hostile_headers() {
    for (what, off, bytes, field) in [
        ("page size 1000", 16usize, vec![0x03, 0xe8], "page_size"),
        ("reserved 200 of 512", 20, vec![200], "reserved_space"),
        ("encoding 7", 56, vec![0, 0, 0, 7], "text_encoding"),
        ("read version 3", 19, vec![3], "read_version"),
        ("magic", 0, b"SQLite format 4".to_vec(), "magic"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let p = small(tmp.path());
        let mut b = std::fs::read(&p).unwrap();
        b[off..off + bytes.len()].copy_from_slice(&bytes);
        let e =
            within(10, what, move || Db::open("hdr.db", Box::new(b), None, Limits::default()).map(|_| ())).unwrap_err();
        assert_input_error(&e, "hdr.db", what);
        assert_eq!(e.field(), Some(field), "{what}: {e}");
    }
}

/// The depth cap: a 512-byte-page table three levels deep, read with a cap of one level.
#[test]
fn hostile_depth_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let p = make(tmp.path(), "deep.db", "PRAGMA page_size=512;");
    let e = within(10, "depth cap", move || {
        let db = Db::open_path(&p, Limits { max_depth: 1, ..Limits::default() })?;
        db.rows(db.table_root("t")?.expect("t")).map(|_| ())
    })
    .unwrap_err();
    assert_input_error(&e, "deep.db", "depth cap");
    assert_eq!(e.field(), Some("btree_depth"), "{e}");
}
