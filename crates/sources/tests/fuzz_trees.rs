//! Mutation fuzzing of every tree parser, from memory, driven the way the CLI drives it:
//! ISO 9660 with Rock Ridge and Joliet, zisofs, El Torito and hybrid tables, UDF, FAT,
//! ext2/ext4, GPT and MBR (through the same disk dispatch as `ls`/`extract`), tar
//! (plain, gzip, zstd), OCI layouts (index, manifest, config and layer), the package
//! databases `oci inspect` reads (dpkg, apk, rpm sqlite and Berkeley DB) and the sqlite
//! reader. Seeds are made at test time by the reference tools (genisoimage, xorriso,
//! mkzftree, mkfs.fat + mcopy, mkfs.ext4/ext2 -d, sgdisk, sfdisk, GNU tar, bsdtar, umoci,
//! rpm --justdb, db5.3_load, sqlite3) and the host's dpkg database.
//!
//! Each mutant is opened, its whole tree walked, every file's content read (64 MiB
//! budget per mutant), every symlink resolved, on its own thread, with a time bound
//! ([`LIMIT_SECS`]) and a memory bound (`memory_bound`: max(64 MiB, 64 x input size),
//! the peak counted by the allocator below). Any error is fine if it is about the input
//! and names it; a panic, a hang or memory past the bound is a finding, reported with
//! the target, the campaign seed, the mutant's number and its mutation.
//!
//! The default run tries [`BRIEF`] mutants per target. The long campaign:
//! `FUZZ_TREE_MUTANTS=N FUZZ_TREE_SEED=S cargo test -p diskcast-sources --test fuzz_trees
//! -- --ignored fuzz_tree` (one target: `fuzz_tree_ext4`); it reports every finding
//! instead of stopping at the first target that has one. Findings are kept below as
//! named regression tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::gate::Gate;
use diskcast_block::registry::OpenContext;
use diskcast_block::source::MemSource;
use diskcast_block::{BlockRead, Error, ErrorKind};
use diskcast_testkit as tk;
use diskcast_tree::{
    Content, FsReader, Kind, Meta, Node, NodeId, ReadOptions, Schedule, StreamCursor, StreamSource, Timestamp, Tree,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tk::hostile::{Bad, Mutator, Rng, bounded, input_error_problem, memory_bound};

#[global_allocator]
static ALLOC: tk::alloc::Counting = tk::alloc::Counting;

/// Seconds one mutant may take: open, walk, read up to [`READ_BUDGET`].
const LIMIT_SECS: u64 = 20;
/// File bytes read per mutant (a mutant may claim terabytes of content).
const READ_BUDGET: u64 = 64 << 20;
/// Mutants per target in the default suite.
const BRIEF: u64 = 300;
/// Mutants of the OCI layout in the default suite: each writes a layout to disk, so
/// they cost ten times a disk's.
const BRIEF_OCI: u64 = 150;
/// Mutants per target in the long campaign unless `FUZZ_TREE_MUTANTS` says.
const CAMPAIGN: u64 = 3000;

fn campaign_mutants() -> u64 {
    std::env::var("FUZZ_TREE_MUTANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(CAMPAIGN)
}

fn campaign_seed() -> u64 {
    std::env::var("FUZZ_TREE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x7ee5)
}

// ---------------------------------------------------------------------------------------
// Driving a parser

/// What one run of a parser saw.
#[derive(Debug, Default)]
struct Report {
    errors: Vec<Error>,
    nodes: usize,
    bytes_read: u64,
}

impl Report {
    fn err(&mut self, e: Error) {
        self.errors.push(e);
    }
}

/// Walks `tree` as `ls -lR` and `extract` do: every node, its xattrs, every symlink
/// resolved (as `cat` follows them), every file's content read (in the one schedule the
/// sinks use: files of a stream in offset order through one cursor), within the read
/// budget.
fn walk_tree(tree: &Tree, r: &mut Report) {
    let _ = tree.stats();
    let _ = tree.link_counts();
    let mut buf = vec![0u8; 1 << 20];
    let mut schedule = Schedule::new();
    let mut seen = HashSet::new();
    for (path, id) in tree.walk(NodeId::ROOT) {
        r.nodes += 1;
        let node = tree.node(id);
        let _ = node.xattrs.iter().map(|x| x.value.len()).sum::<usize>();
        match &node.kind {
            Kind::File(f) if seen.insert(id) => schedule.push(f, id),
            Kind::Symlink(_) => {
                // A dangling or looping link is the link's business, not an error here.
                let _ = tree.resolve(&path, true);
            }
            _ => {}
        }
    }
    let (loose, runs) = schedule.into_runs();
    let mut cursor = StreamCursor::new();
    // Each loose file is a group of its own; a stream's files are one group, given up at
    // its first error (the rest of a damaged stream would fail again, each a new pass).
    let groups = loose.into_iter().map(|id| vec![id]).chain(runs.into_iter().map(|run| run.files));
    'group: for files in groups {
        for id in files {
            let Some(f) = tree.node(id).as_file() else { continue };
            let ranges = match f.data_ranges() {
                Ok(v) => v,
                Err(e) => {
                    r.err(e);
                    continue 'group;
                }
            };
            for (off, len) in ranges {
                let end = off.saturating_add(len).min(f.size);
                let mut at = off;
                while at < end && r.bytes_read < READ_BUDGET {
                    let n = (end - at).min(buf.len() as u64).min(READ_BUDGET - r.bytes_read);
                    if let Err(e) = cursor.read_file(f, &mut buf[..n as usize], at) {
                        r.err(e);
                        continue 'group;
                    }
                    r.bytes_read += n;
                    at += n;
                }
            }
        }
    }
}

/// The CLI's naming of an error that names no file (`iso boot` and the disk dispatch
/// add the path the user gave).
fn named(e: Error, name: &str) -> Error {
    if e.file().is_none() { e.with_file(name) } else { e }
}

/// A disk image in memory as `ls`/`cat`/`extract` read it: opened as raw through the
/// format registry, then [`diskcast_sources::read_disk_tree`] (a filesystem on the whole
/// disk, else the partition chosen as root), once per tree the disc offers (`--tree`),
/// and once per partition (`DISK:N`); a disc's El Torito catalog and hybrid tables as
/// `iso boot --extract` reads them.
fn drive_disk(bytes: Arc<[u8]>, name: &str) -> Report {
    let mut r = Report::default();
    let reg = diskcast_formats::registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    let disk: Arc<dyn BlockRead> = match reg.open_source(Arc::new(MemSource::new(name, bytes)), Some("raw"), &ctx) {
        Ok(d) => Arc::from(d),
        Err(e) => {
            r.err(e);
            return r;
        }
    };
    let opts = |tree: Option<String>| ReadOptions { tree, label: name.to_string() };
    match diskcast_sources::read_disk_tree(disk.clone(), None, &opts(None)) {
        Ok(o) => walk_tree(&o.tree, &mut r),
        Err(e) => r.err(e),
    }
    if diskcast_iso9660::Iso9660Reader.probe(disk.as_ref()).unwrap_or(false) {
        match diskcast_iso9660::available_trees(disk.as_ref()) {
            Ok(kinds) => {
                for k in kinds.iter().skip(1) {
                    match diskcast_sources::read_disk_tree(disk.clone(), None, &opts(Some(k.name().into()))) {
                        Ok(o) => walk_tree(&o.tree, &mut r),
                        Err(e) => r.err(e),
                    }
                }
            }
            Err(e) => r.err(named(e, name)),
        }
        match diskcast_iso9660::eltorito::read_catalog(&disk) {
            Ok(Some(c)) => {
                let mut buf = vec![0u8; 1 << 20];
                for e in &c.entries {
                    let (mut off, len) = e.range();
                    let end = off.saturating_add(len);
                    while off < end && r.bytes_read < READ_BUDGET {
                        let n = (end - off).min(buf.len() as u64);
                        if let Err(e) = disk.read_at(&mut buf[..n as usize], off) {
                            r.err(named(e, name));
                            break;
                        }
                        r.bytes_read += n;
                        off += n;
                    }
                }
            }
            Ok(None) => {}
            Err(e) => r.err(named(e, name)),
        }
        if let Err(e) = diskcast_iso9660::hybrid::read_hybrid(disk.as_ref()) {
            r.err(named(e, name));
        }
    }
    match diskcast_part::read_table(disk.as_ref()) {
        Ok(Some(t)) => {
            let _ = t.listing();
            for p in t.partitions.iter().take(16) {
                match diskcast_sources::read_disk_tree(disk.clone(), Some(&p.number.to_string()), &opts(None)) {
                    Ok(o) => walk_tree(&o.tree, &mut r),
                    Err(e) => r.err(named(e, name)),
                }
            }
        }
        Ok(None) => {}
        Err(e) => r.err(named(e, name)),
    }
    r
}

/// Decompressed bytes held in memory, as a tar's stream.
#[derive(Debug)]
struct MemStream {
    name: String,
    bytes: Arc<[u8]>,
    compression: diskcast_tar::Compression,
}

impl StreamSource for MemStream {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn open(&self) -> diskcast_block::Result<Box<dyn Read + Send>> {
        self.compression.decoder(Box::new(std::io::Cursor::new(self.bytes.clone())))
    }
}

/// A tar file as `read_tar` reads one (compression by magic, members into a tree), then
/// walked and read as `extract` does.
fn drive_tar(bytes: Arc<[u8]>, name: &str) -> Report {
    let mut r = Report::default();
    let compression = match diskcast_tar::Compression::detect(&bytes) {
        Ok(c) => c,
        Err(e) => {
            r.err(e.with_file(name));
            return r;
        }
    };
    let stream: Arc<dyn StreamSource> = Arc::new(MemStream { name: name.into(), bytes, compression });
    let input = match stream.open() {
        Ok(i) => i,
        Err(e) => {
            r.err(e.with_file(name));
            return r;
        }
    };
    match diskcast_tar::read_tar_stream(diskcast_tar::TarReader::new(input, name), stream, compression, 2) {
        Ok(t) => walk_tree(&t.tree, &mut r),
        Err(e) => r.err(e),
    }
    r
}

/// A tree holding `files` (path, bytes) as inline files, for the package readers.
fn tree_of(files: &[(&[u8], &[u8])]) -> Tree {
    let meta = Meta::new(0o755, Timestamp::default());
    let mut t = Tree::new(meta.clone());
    for (path, bytes) in files {
        let (dir, file) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], *path),
        };
        let parent = t.create_dir_all(dir, &meta).unwrap();
        let f = diskcast_tree::FileData::inline(bytes.to_vec());
        t.insert(parent, file, Node::new(Meta::new(0o644, Timestamp::default()), Kind::File(f))).unwrap();
    }
    t
}

/// `oci inspect`'s package reading of a tree holding `path` with `bytes`; `Found::error`
/// carries a damaged rpm database's error as text, which must name the file too.
fn drive_packages(path: &'static [u8], bytes: &[u8], r: &mut Report) {
    match diskcast_inspect::packages(&tree_of(&[(path, bytes)])) {
        Ok(found) => {
            r.nodes += found.packages.len();
            if let Some(m) = found.error {
                let shown = String::from_utf8_lossy(path).into_owned();
                if !m.contains(&shown) {
                    r.err(Error::invalid(format!("package_error names no database: {m}")).with_file("package_error"));
                }
            }
        }
        Err(e) => r.err(e),
    }
}

/// The sqlite reader as `oci inspect` uses it, and as a general reader: open (with the
/// WAL when the input is a main file and a WAL joined by [`join_wal`]), list the tables,
/// scan every table's rows.
fn drive_sqlite(bytes: Arc<[u8]>, name: &str) -> Report {
    let mut r = Report::default();
    let (main, wal) = split_wal(&bytes);
    let db = diskcast_sqlite::Db::open(
        name,
        Box::new(main.to_vec()),
        wal.map(|w| Box::new(w.to_vec()) as Box<dyn diskcast_sqlite::Source>),
        diskcast_sqlite::Limits::default(),
    );
    let db = match db {
        Ok(db) => db,
        Err(e) => {
            r.err(e);
            return r;
        }
    };
    match db.tables() {
        Ok(tables) => {
            for t in tables {
                match db.table_root(&t) {
                    Ok(Some(root)) => {
                        let scanned = db.scan(root, &mut |row| {
                            r.nodes += 1;
                            r.bytes_read += row.values.len() as u64;
                            Ok(())
                        });
                        if let Err(e) = scanned {
                            r.err(e);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => r.err(e),
                }
            }
        }
        Err(e) => r.err(e),
    }
    r
}

/// rpm's sqlite database (with its WAL), through `rpmdb::read_sqlite` and through
/// `inspect::packages` on a tree holding it.
fn drive_rpm_sqlite(bytes: Arc<[u8]>, name: &str) -> Report {
    let mut r = Report::default();
    let (main, wal) = split_wal(&bytes);
    match diskcast_inspect::rpmdb::read_sqlite(name, main.to_vec(), wal.map(<[u8]>::to_vec)) {
        Ok(p) => r.nodes += p.len(),
        Err(e) => r.err(e),
    }
    drive_packages(b"var/lib/rpm/rpmdb.sqlite", main, &mut r);
    r
}

fn drive_rpm_bdb(bytes: Arc<[u8]>, name: &str) -> Report {
    let mut r = Report::default();
    match diskcast_inspect::rpmdb::read_bdb(name, &bytes) {
        Ok(p) => r.nodes += p.len(),
        Err(e) => r.err(e),
    }
    drive_packages(b"var/lib/rpm/Packages", &bytes, &mut r);
    r
}

fn drive_dpkg(bytes: Arc<[u8]>, _name: &str) -> Report {
    let mut r = Report::default();
    drive_packages(b"var/lib/dpkg/status", &bytes, &mut r);
    r
}

fn drive_apk(bytes: Arc<[u8]>, _name: &str) -> Report {
    let mut r = Report::default();
    drive_packages(b"lib/apk/db/installed", &bytes, &mut r);
    r
}

/// Main file and WAL in one input: `main ++ wal ++ len(main) as u64 LE ++ "WALJOIN!"`,
/// so one mutator mutates both.
fn join_wal(main: &[u8], wal: &[u8]) -> Vec<u8> {
    let mut v = main.to_vec();
    v.extend_from_slice(wal);
    v.extend_from_slice(&(main.len() as u64).to_le_bytes());
    v.extend_from_slice(b"WALJOIN!");
    v
}

fn split_wal(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    if b.len() >= 16 && b.ends_with(b"WALJOIN!") {
        let n = u64::from_le_bytes(b[b.len() - 16..b.len() - 8].try_into().unwrap());
        if let Ok(n) = usize::try_from(n)
            && n <= b.len() - 16
        {
            return (&b[..n], Some(&b[n..b.len() - 16]));
        }
    }
    (b, None)
}

// ---------------------------------------------------------------------------------------
// The campaign loop

type Drive = fn(Arc<[u8]>, &str) -> Report;
type Fix = Arc<dyn Fn(&mut [u8]) + Send + Sync>;

/// One parser and one seed.
struct Target {
    /// `iso-rr-joliet`: the parser and the seed's maker.
    name: String,
    seed: Vec<u8>,
    /// Where the metadata is (most mutations land there).
    hot: Vec<(usize, usize)>,
    /// Repairs checksums of a mutant (applied to every other one), so the parsers
    /// behind the checks are reached.
    fix: Option<Fix>,
    /// Compresses every third mutant (gzip) and fifth (zstd): tar targets.
    compress: bool,
    drive: Drive,
}

/// What a campaign over one target found.
#[derive(Debug, Default)]
struct Summary {
    mutants: u64,
    errored: u64,
    max_peak: usize,
    /// The mutant that reached `max_peak`.
    max_peak_what: String,
    secs: f64,
    findings: Vec<String>,
    /// Findings matching [`KNOWN`], by its regression test's name.
    known: BTreeMap<&'static str, u64>,
}

/// Findings already reported and kept as ignored regression tests, by a substring of
/// the failure: the campaign counts them instead of failing on them again.
const KNOWN: &[(&[&str], &str)] = &[];

/// The disk dispatch's answer to a disk with several candidate partitions ("name one as
/// DISK:PART"): an argument error by design, since the user must choose.
fn asks_to_choose(e: &Error) -> bool {
    e.kind() == ErrorKind::InvalidArgument && e.message().contains("; name one as ")
}

/// Records a finding (once per mutant), or counts it when it is a [`KNOWN`] one.
fn note(s: &mut Summary, finding: String) {
    if let Some((_, test)) = KNOWN.iter().find(|(needles, _)| needles.iter().all(|n| finding.contains(n))) {
        *s.known.entry(test).or_default() += 1;
    } else if !s.findings.contains(&finding) {
        s.findings.push(finding);
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, b).unwrap();
    e.finish().unwrap()
}

fn run_target(t: &Target, mutants: u64, seed: u64) -> Summary {
    let started = std::time::Instant::now();
    let name = t.name.clone();
    let mut s = Summary::default();
    let check = |s: &mut Summary, what: &str, input_len: usize, out: Result<(Report, usize), Bad>| -> bool {
        match out {
            Ok((report, peak)) => {
                if peak > s.max_peak {
                    s.max_peak = peak;
                    s.max_peak_what = what.to_string();
                }
                s.errored += u64::from(!report.errors.is_empty());
                for e in &report.errors {
                    if let Some(p) = input_error_problem(e, &name).filter(|_| !asks_to_choose(e)) {
                        note(s, format!("{what}: unclear error: {p}"));
                    }
                }
                true
            }
            Err(b) => {
                note(s, format!("{what} ({input_len} bytes): {b}"));
                !matches!(b, Bad::Timeout(_))
            }
        }
    };
    // The seed itself reads cleanly.
    let bytes: Arc<[u8]> = t.seed.clone().into();
    let (drive, n) = (t.drive, name.clone());
    let clean = bounded(LIMIT_SECS, memory_bound(bytes.len()), &format!("{name} seed"), move || drive(bytes, &n));
    match &clean {
        Ok((r, _)) => assert!(r.errors.is_empty() && r.nodes > 0, "{name}: the seed does not read cleanly: {r:?}"),
        Err(b) => panic!("{name}: the seed: {b}"),
    }
    let m = Mutator::new(t.seed.clone(), &t.hot).splicing();
    let mut rng = Rng::new(seed ^ name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    for i in 0..mutants {
        let (mut bytes, mut what) = m.mutant(&mut rng);
        if let Some(fix) = &t.fix
            && i % 2 == 0
        {
            fix(&mut bytes);
            what.push_str(" (checksums fixed)");
        }
        if t.compress && i % 3 == 0 {
            bytes = gzip(&bytes);
            what.push_str(", gzip");
        } else if t.compress && i % 5 == 0 {
            bytes = zstd::encode_all(&bytes[..], 1).unwrap();
            what.push_str(", zstd");
        }
        let what = format!("{name} seed {seed:#x} mutant {i}: {what}");
        let len = bytes.len();
        let bytes: Arc<[u8]> = bytes.into();
        let (drive, n) = (t.drive, name.clone());
        let out = bounded(LIMIT_SECS, memory_bound(len), &what, move || drive(bytes, &n));
        s.mutants += 1;
        if !check(&mut s, &what, len, out) {
            s.findings.push(format!("{name}: stopped after a hang (its thread still runs)"));
            break;
        }
    }
    s.secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {} mutants in {:.1} s, {} with errors, peak {} KiB ({}), {} findings, known {:?}",
        s.mutants,
        s.secs,
        s.errored,
        s.max_peak >> 10,
        s.max_peak_what,
        s.findings.len(),
        s.known
    );
    s
}

fn run_all(targets: Vec<Target>, mutants: u64, seed: u64) {
    let mut findings = Vec::new();
    for t in &targets {
        findings.extend(run_target(t, mutants, seed).findings);
    }
    assert!(findings.is_empty(), "{} findings:\n{}", findings.len(), findings.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Seeds, made by the reference tools

fn tool(cmd: &str, args: &[&str]) -> String {
    tk::run(cmd, args)
}

fn sh(script: &str) {
    let out = Command::new("bash").args(["-euo", "pipefail", "-c", script]).output().expect("bash");
    assert!(
        out.status.success(),
        "{script}\nfailed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small tree with what parsers must get right: nested and many-entry directories,
/// files of 0 bytes to 70 KB, a long and a non-ASCII name, symlinks, a hard link.
fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    sh(&format!(
        "cd '{}'; mkdir -p sub/deeper many; echo hello > a.txt; : > empty
         seq 1 1000 > sub/deeper/numbers
         for i in $(seq 1 40); do echo $i > \"many/file-with-a-longer-name-$i.txt\"; done
         echo long > this-is-a-file-name-well-past-the-iso-9660-level-one-limit-of-eight-and-three.text
         echo accents > 'été.txt'; ln -s a.txt link; ln -s sub/deeper deeplink; ln a.txt hard",
        src.display()
    ));
    std::fs::write(src.join("big.bin"), tk::pattern(70_000, 9)).unwrap();
    src
}

/// Hot ranges of a disk image: its non-zero 512-byte blocks that hold no file data (the
/// metadata), as its own tree (from the seed) tells.
fn disk_hot(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut data = vec![false; bytes.len().div_ceil(512)];
    let reg = diskcast_formats::registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate);
    let disk: Arc<dyn BlockRead> =
        Arc::from(reg.open_source(Arc::new(MemSource::new("seed", bytes.to_vec())), Some("raw"), &ctx).unwrap());
    let mut trees = Vec::new();
    if let Ok(o) = diskcast_sources::read_disk_tree(disk.clone(), None, &ReadOptions::default()) {
        trees.push(o.tree);
    }
    if let Ok(Some(t)) = diskcast_part::read_table(disk.as_ref()) {
        for p in &t.partitions {
            if let Ok(o) =
                diskcast_sources::read_disk_tree(disk.clone(), Some(&p.number.to_string()), &Default::default())
            {
                trees.push(o.tree);
            }
        }
    }
    for tree in &trees {
        for (_, id) in tree.walk(NodeId::ROOT) {
            if let Some(f) = tree.node(id).as_file()
                && let Content::Blocks { source, extents } = &f.content
            {
                // A partition's extents count from its start.
                let base = if source.size() == disk.size() { 0 } else { part_start(&disk, source.size()).unwrap_or(0) };
                for e in extents.iter() {
                    let (a, b) = (base + e.source_offset, base + e.source_offset + e.len);
                    for blk in a / 512..b.div_ceil(512) {
                        if let Some(d) = data.get_mut(blk as usize) {
                            *d = true;
                        }
                    }
                }
            }
        }
    }
    let mut hot: Vec<(usize, usize)> = Vec::new();
    for (i, chunk) in bytes.chunks(512).enumerate() {
        if data[i] || chunk.iter().all(|&b| b == 0) {
            continue;
        }
        match hot.last_mut() {
            Some((a, n)) if *a + *n == i * 512 => *n += chunk.len(),
            _ => hot.push((i * 512, chunk.len())),
        }
    }
    hot
}

/// The start of the partition of `len` bytes (to place a partition's file extents).
fn part_start(disk: &Arc<dyn BlockRead>, len: u64) -> Option<u64> {
    let t = diskcast_part::read_table(disk.as_ref()).ok()??;
    t.partitions.iter().find(|p| p.len == len).map(|p| p.start)
}

fn disk_target(name: &str, bytes: Vec<u8>, fix: Option<Fix>) -> Target {
    let hot = disk_hot(&bytes);
    assert!(!hot.is_empty(), "{name}: no metadata found");
    Target { name: name.into(), seed: bytes, hot, fix, compress: false, drive: drive_disk }
}

fn iso_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    let rr = dir.join("rr.iso");
    tool("genisoimage", &["-quiet", "-J", "-R", "-o", s(&rr), s(&src)]);
    // El Torito with a BIOS and a UEFI entry, and a hybrid GPT + MBR (xorriso).
    let boot = dir.join("bootsrc");
    std::fs::create_dir_all(boot.join("boot")).unwrap();
    std::fs::write(boot.join("boot/bios.img"), tk::pattern(4096, 3)).unwrap();
    std::fs::write(boot.join("boot/efi.img"), tk::pattern(64 << 10, 5)).unwrap();
    std::fs::write(boot.join("readme"), b"boot disc\n").unwrap();
    let et = dir.join("et.iso");
    tool(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-b",
            "boot/bios.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
            "-o",
            s(&et),
            s(&boot),
        ],
    );
    let z = dir.join("zsrc");
    tool("mkzftree", &[s(&src), s(&z)]);
    let zi = dir.join("z.iso");
    tool("genisoimage", &["-quiet", "-R", "-z", "-o", s(&zi), s(&z)]);
    vec![
        disk_target("rr.iso", std::fs::read(&rr).unwrap(), None),
        disk_target("et.iso", std::fs::read(&et).unwrap(), Some(Arc::new(gpt_fix))),
        disk_target("z.iso", std::fs::read(&zi).unwrap(), None),
    ]
}

/// ECMA-167 tags at 2048-byte sectors: checksums recomputed where the seed had a valid
/// tag (the descriptor CRCs are not checked by the reader).
fn udf_tags(seed: &[u8]) -> Vec<usize> {
    (0..seed.len() / 2048)
        .map(|i| i * 2048)
        .filter(|&o| {
            let d = &seed[o..o + 16];
            let id = u16::from_le_bytes([d[0], d[1]]);
            ((1..=9).contains(&id) || (256..=266).contains(&id)) && tag_sum(d) == d[4]
        })
        .collect()
}

/// The checksum of a 16-byte tag: its bytes but the checksum's own, summed mod 256.
fn tag_sum(d: &[u8]) -> u8 {
    d[..16].iter().enumerate().filter(|(i, _)| *i != 4).fold(0u8, |s, (_, b)| s.wrapping_add(*b))
}

/// Rewrites the checksums of the tags at `tags`.
fn udf_fix(tags: Vec<usize>) -> Fix {
    Arc::new(move |b: &mut [u8]| {
        for &o in &tags {
            if o + 16 <= b.len() {
                b[o + 4] = tag_sum(&b[o..o + 16]);
            }
        }
    })
}

fn udf_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    let p = dir.join("udf.iso");
    tool("genisoimage", &["-quiet", "-udf", "-J", "-R", "-o", s(&p), s(&src)]);
    let bytes = std::fs::read(&p).unwrap();
    let tags = udf_tags(&bytes);
    assert!(tags.len() > 5, "the UDF seed has {} tags", tags.len());
    let fix = udf_fix(tags);
    // The UDF tree is the disc's best: the disk dispatch reads it first.
    let mut t = disk_target("udf.iso", bytes, Some(fix));
    // Mostly the UDF structures (sector 256 on), which `disk_hot` finds among the rest.
    t.hot.retain(|&(a, _)| a >= 256 * 2048);
    // A UDF 2.60 bridge disc shaped like a Windows installer, by pycdlib (the fixture
    // crates/iso9660/tests/udf.rs uses).
    let w = dir.join("udf260.iso");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../iso9660/tests/fixtures/udf-windows-like.py");
    tool("/usr/bin/python3", &[s(&script), s(&w), "100000"]);
    let bytes = std::fs::read(&w).unwrap();
    let fix = udf_fix(udf_tags(&bytes));
    let mut w = disk_target("udf260.iso", bytes, Some(fix));
    w.hot.retain(|&(a, _)| a >= 256 * 2048);
    vec![t, w]
}

fn fat_image(dir: &Path, name: &str, size_kib: u32, mkfs: &[&str], src: &Path) -> Vec<u8> {
    let p = dir.join(name);
    let mut args = mkfs.to_vec();
    let size = size_kib.to_string();
    args.extend(["-C", s(&p), &size]);
    tool("mkfs.fat", &args);
    sh(&format!(
        "cd '{src}'; export MTOOLS_SKIP_CHECK=1; for f in a.txt empty big.bin été.txt; do mcopy -i '{img}' \"$f\" ::/; done
         mcopy -i '{img}' -s sub many ::/",
        src = src.display(),
        img = p.display()
    ));
    std::fs::read(&p).unwrap()
}

fn fat_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    vec![
        disk_target("fat12.img", fat_image(dir, "fat12.img", 512, &["-F", "12"], &src), None),
        disk_target("fat16.img", fat_image(dir, "fat16.img", 4200, &["-F", "16", "-s", "2"], &src), None),
    ]
}

fn ext_image(dir: &Path, name: &str, mkfs: &str, extra: &[&str], src: &Path, size: &str) -> Vec<u8> {
    let p = dir.join(name);
    let mut args = vec!["-q", "-F", "-b", "1024", "-N", "96", "-d", s(src)];
    args.extend(extra);
    args.extend([s(&p), size]);
    tool(mkfs, &args);
    std::fs::read(&p).unwrap()
}

fn ext4_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    vec![
        disk_target("ext4.img", ext_image(dir, "ext4.img", "mkfs.ext4", &["-O", "^has_journal"], &src, "768K"), None),
        disk_target("ext2.img", ext_image(dir, "ext2.img", "mkfs.ext2", &[], &src, "512K"), None),
    ]
}

/// Rewrites the CRC-32s of both GPT headers and entry arrays.
fn gpt_fix(b: &mut [u8]) {
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let crc = |d: &[u8]| diskcast_part_crc(d);
    let fix_at = |h: usize, b: &mut [u8]| {
        if h + 92 > b.len() || &b[h..h + 8] != b"EFI PART" {
            return;
        }
        let array = usize::try_from(le64(b, h + 72)).unwrap_or(usize::MAX).saturating_mul(512);
        let bytes = (le32(b, h + 80) as usize).saturating_mul(le32(b, h + 84) as usize);
        if let Some(a) = b.get(array..array.saturating_add(bytes)) {
            let c = crc(a);
            b[h + 88..h + 92].copy_from_slice(&c.to_le_bytes());
        }
        let hs = (le32(b, h + 12) as usize).clamp(92, 512);
        if h + hs <= b.len() {
            b[h + 16..h + 20].fill(0);
            let c = crc(&b[h..h + hs]);
            b[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
        }
    };
    fix_at(512, b);
    if b.len() >= 1024 {
        let last = b.len() - 512;
        fix_at(last, b);
    }
}

/// CRC-32 (IEEE), as GPT uses.
fn diskcast_part_crc(d: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in d {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn part_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    let fat = fat_image(dir, "p-fat.img", 512, &["-F", "12"], &src);
    let ext = ext_image(dir, "p-ext.img", "mkfs.ext4", &["-O", "^has_journal"], &src, "768K");
    // GPT (sgdisk): an ESP with FAT and a root partition (the Discoverable Partitions
    // x86-64 root type) with ext4.
    let gpt = dir.join("gpt.img");
    std::fs::write(&gpt, vec![0u8; 4 << 20]).unwrap();
    tool(
        "sgdisk",
        &["-n", "1:2048:+512K", "-t", "1:ef00", "-c", "1:esp", "-n", "2:4096:+768K", "-t", "2:8304", s(&gpt)],
    );
    assert!(tool("sgdisk", &["-p", s(&gpt)]).contains("8304"), "sgdisk made no root partition");
    let mut g = std::fs::read(&gpt).unwrap();
    g[2048 * 512..2048 * 512 + fat.len()].copy_from_slice(&fat);
    g[4096 * 512..4096 * 512 + ext.len()].copy_from_slice(&ext);
    // MBR (sfdisk): a primary FAT partition and an extended one with two logical ones.
    let mbr = dir.join("mbr.img");
    std::fs::write(&mbr, vec![0u8; 3 << 20]).unwrap();
    let script = "label: dos\nstart=2048, size=1024, type=1\nstart=3072, size=3000, type=5\nstart=3200, size=1024, type=1\nstart=4400, size=1536, type=83\n";
    let mut child = Command::new("sfdisk")
        .args(["-q", s(&mbr)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    let mut m = std::fs::read(&mbr).unwrap();
    m[2048 * 512..2048 * 512 + fat.len()].copy_from_slice(&fat);
    m[3200 * 512..3200 * 512 + fat.len()].copy_from_slice(&fat);
    m[4400 * 512..4400 * 512 + ext.len()].copy_from_slice(&ext);
    let mut g = disk_target("gpt.img", g, Some(Arc::new(gpt_fix)));
    // The tables themselves (protective MBR, headers, arrays) first of all.
    g.hot.insert(0, (0, 34 * 512));
    let len = g.seed.len();
    g.hot.insert(0, (len - 33 * 512, 33 * 512));
    let mut m = disk_target("mbr.img", m, None);
    m.hot.insert(0, (0, 512));
    m.hot.insert(0, (3072 * 512, 512));
    m.hot.insert(0, (4352 * 512, 512));
    vec![g, m]
}

/// Hot ranges of a tar: every member's headers (extension headers included).
fn tar_hot(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut r = diskcast_tar::TarReader::new(Box::new(std::io::Cursor::new(bytes.to_vec())), "seed");
    let mut hot = Vec::new();
    while let Ok(Some(m)) = r.next_member() {
        hot.push((m.header_offset as usize, (m.data_offset - m.header_offset) as usize));
    }
    hot
}

fn tar_targets(dir: &Path) -> Vec<Target> {
    let src = source_tree(dir);
    // A sparse file for GNU's sparse formats.
    sh(&format!(
        "cd '{}'; truncate -s 1M sparse; echo tail >> sparse; printf start | dd of=sparse conv=notrunc status=none",
        src.display()
    ));
    let mut out = Vec::new();
    for (name, cmd) in [
        ("gnu-pax.tar", "tar --format=posix --sparse --xattrs -cf"),
        ("gnu.tar", "tar --format=gnu --sparse -cf"),
        ("gnu-oldgnu.tar", "tar --format=oldgnu --sparse -cf"),
        ("bsd-pax.tar", "bsdtar --format=pax -cf"),
        ("bsd-ustar.tar", "bsdtar --format=ustar -cf"),
    ] {
        let p = dir.join(name);
        sh(&format!("cd '{}'; {cmd} '{}' .", src.display(), p.display()));
        let bytes = std::fs::read(&p).unwrap();
        let hot = tar_hot(&bytes);
        out.push(Target {
            name: name.into(),
            seed: bytes,
            hot,
            fix: Some(Arc::new(tar_fix)),
            compress: true,
            drive: drive_tar,
        });
    }
    out
}

/// Rewrites the checksum of every 512-byte block that looks like a ustar header.
fn tar_fix(b: &mut [u8]) {
    for o in (0..b.len().saturating_sub(511)).step_by(512) {
        let h = &mut b[o..o + 512];
        if &h[257..262] == b"ustar" {
            h[148..156].fill(b' ');
            let sum: u32 = h.iter().map(|&x| u32::from(x)).sum();
            let text = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(text.as_bytes());
        }
    }
}

/// The host's dpkg database, cut after about `max` bytes at a paragraph end.
fn dpkg_sample(max: usize) -> Vec<u8> {
    let all = std::fs::read("/var/lib/dpkg/status").expect("this test reads the host's /var/lib/dpkg/status");
    let cut = all[..all.len().min(max)].windows(2).rposition(|w| w == b"\n\n").map_or(all.len().min(max), |i| i + 2);
    all[..cut].to_vec()
}

fn package_targets() -> Vec<Target> {
    let dpkg = dpkg_sample(96 << 10);
    // apk-tools is not packaged for Debian: the same packages in apk's `installed`
    // format (P:, V:, A:, T: per record), converted from dpkg's database.
    let mut apk = String::new();
    for para in String::from_utf8_lossy(&dpkg).split("\n\n") {
        for line in para.lines() {
            for (k, a) in [("Package: ", "P:"), ("Version: ", "V:"), ("Architecture: ", "A:"), ("Description: ", "T:")]
            {
                if let Some(v) = line.strip_prefix(k) {
                    apk.push_str(a);
                    apk.push_str(v);
                    apk.push('\n');
                }
            }
        }
        apk.push('\n');
    }
    let whole = |b: &[u8]| vec![(0, b.len())];
    vec![
        Target {
            name: "dpkg-status".into(),
            hot: whole(&dpkg),
            seed: dpkg,
            fix: None,
            compress: false,
            drive: drive_dpkg,
        },
        Target {
            name: "apk-installed".into(),
            hot: whole(apk.as_bytes()),
            seed: apk.into_bytes(),
            fix: None,
            compress: false,
            drive: drive_apk,
        },
    ]
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../oci/tests/fixtures").join(name)
}

/// A copy of a database taken while a writer had it open, so a WAL with committed
/// frames lies beside it (the trick crates/oci/tests/rpmdb.rs uses).
fn with_wal(db: &Path, sql: &str, snap: &Path) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(snap).unwrap();
    let script = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA wal_autocheckpoint=0;\n{sql}\n.shell cp '{l}' '{s}/db' && cp '{l}-wal' '{s}/db-wal'\n",
        l = db.display(),
        s = snap.display()
    );
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    (std::fs::read(snap.join("db")).unwrap(), std::fs::read(snap.join("db-wal")).unwrap())
}

/// The WAL's frame checksums rewritten (SQLite's own algorithm, in the byte order the
/// magic says), so mutated frames are applied rather than ignored.
fn wal_fix(b: &mut [u8]) {
    let n = b.len();
    if n < 16 || !b.ends_with(b"WALJOIN!") {
        return;
    }
    let main = u64::from_le_bytes(b[n - 16..n - 8].try_into().unwrap()) as usize;
    if main > n - 16 {
        return;
    }
    let wal = &mut b[main..n - 16];
    if wal.len() < 32 {
        return;
    }
    let big = wal[3] & 1 == 1;
    let word = |x: &[u8]| {
        let a = [x[0], x[1], x[2], x[3]];
        if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
    };
    let sum = |d: &[u8], (mut s0, mut s1): (u32, u32)| {
        for c in d.chunks_exact(8) {
            s0 = s0.wrapping_add(word(&c[..4])).wrapping_add(s1);
            s1 = s1.wrapping_add(word(&c[4..])).wrapping_add(s0);
        }
        (s0, s1)
    };
    let ps = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let ps = if ps == 1 { 65536 } else { ps };
    let mut c = sum(&wal[..24], (0, 0));
    wal[24..28].copy_from_slice(&c.0.to_be_bytes());
    wal[28..32].copy_from_slice(&c.1.to_be_bytes());
    if !(512..=65536).contains(&ps) {
        return;
    }
    let mut at = 32;
    while at + 24 + ps <= wal.len() {
        c = sum(&wal[at..at + 8], c);
        c = sum(&wal[at + 24..at + 24 + ps], c);
        wal[at + 16..at + 20].copy_from_slice(&c.0.to_be_bytes());
        wal[at + 20..at + 24].copy_from_slice(&c.1.to_be_bytes());
        at += 24 + ps;
    }
}

fn rpm_targets(dir: &Path) -> Vec<Target> {
    let db = dir.join("rpmdb");
    sh(&format!("'{}' '{}' 4", fixture("mkrpmdb.sh").display(), db.display()));
    let main = std::fs::read(db.join("rpmdb.sqlite")).unwrap();
    let bdb = dir.join("Packages");
    sh(&format!(
        "'{}' '{}' '{}' 4096 1234",
        fixture("mkrpmbdb.sh").display(),
        db.join("rpmdb.sqlite").display(),
        bdb.display()
    ));
    let bdb = std::fs::read(&bdb).unwrap();
    let (wmain, wal) =
        with_wal(&db.join("rpmdb.sqlite"), "DELETE FROM Packages WHERE hnum = 2;", &dir.join("rpm-snap"));
    let joined = join_wal(&wmain, &wal);
    let whole = |b: &[u8]| vec![(0, b.len())];
    vec![
        Target {
            name: "rpmdb.sqlite".into(),
            hot: whole(&main),
            seed: main,
            fix: None,
            compress: false,
            drive: drive_rpm_sqlite,
        },
        Target {
            name: "rpmdb.sqlite+wal".into(),
            hot: vec![(wmain.len(), wal.len())],
            seed: joined,
            fix: Some(Arc::new(wal_fix)),
            compress: false,
            drive: drive_rpm_sqlite,
        },
        Target {
            name: "Packages.bdb".into(),
            hot: whole(&bdb),
            seed: bdb,
            fix: None,
            compress: false,
            drive: drive_rpm_bdb,
        },
    ]
}

fn sqlite_targets(dir: &Path) -> Vec<Target> {
    let db = dir.join("t.sqlite");
    let sql = "PRAGMA page_size=1024;
        CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, b BLOB);
        CREATE INDEX t_s ON t(s);
        CREATE TABLE u(k TEXT, v BLOB);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300)
          INSERT INTO t(n, r, s, b) SELECT x * 7919, x / 3.0, 'row ' || x, randomblob(x % 50) FROM c;
        INSERT INTO u VALUES ('big', randomblob(5000)), ('small', x'00ff'), (NULL, NULL);
        DELETE FROM t WHERE id % 5 = 0;";
    let mut child = Command::new("sqlite3").arg(&db).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), sql.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let main = std::fs::read(&db).unwrap();
    let (wmain, wal) = with_wal(
        &db,
        "UPDATE t SET s = 'changed' WHERE id < 40; INSERT INTO u VALUES ('late', randomblob(3000));",
        &dir.join("snap"),
    );
    let joined = join_wal(&wmain, &wal);
    vec![
        Target {
            name: "t.sqlite".into(),
            hot: vec![(0, main.len())],
            seed: main,
            fix: None,
            compress: false,
            drive: drive_sqlite,
        },
        Target {
            name: "t.sqlite+wal".into(),
            hot: vec![(wmain.len(), wal.len())],
            seed: joined,
            fix: Some(Arc::new(wal_fix)),
            compress: false,
            drive: drive_sqlite,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// OCI layouts: the JSON documents and the layer, digests fixed up the chain

/// An umoci-made layout, held as its parts.
#[derive(Clone)]
struct Layout {
    oci_layout: Vec<u8>,
    index: Value,
    manifest: Value,
    config: Value,
    /// Layer blobs as stored (gzip), and their tars.
    layers: Vec<Vec<u8>>,
}

fn digest(b: &[u8]) -> String {
    diskcast_oci::Digest::sha256(b).as_str().to_string()
}

fn layout_seed(dir: &Path) -> Layout {
    let src = source_tree(dir);
    let img = dir.join("layout");
    tool("umoci", &["init", "--layout", s(&img)]);
    tool("umoci", &["new", "--image", &format!("{}:t", img.display())]);
    tool("umoci", &["insert", "--image", &format!("{}:t", img.display()), s(&src), "/"]);
    let more = dir.join("more");
    sh(&format!("mkdir -p '{m}/etc'; echo 'PRETTY_NAME=\"fuzz\"' > '{m}/etc/os-release'", m = more.display()));
    tool("umoci", &["insert", "--image", &format!("{}:t", img.display()), s(&more), "/"]);
    tool("umoci", &["insert", "--image", &format!("{}:t", img.display()), "--whiteout", "/a.txt"]);
    tool(
        "umoci",
        &[
            "config",
            "--image",
            &format!("{}:t", img.display()),
            "--config.entrypoint",
            "/bin/sh",
            "--os",
            "linux",
            "--architecture",
            "amd64",
        ],
    );
    tool("umoci", &["gc", "--layout", s(&img)]);
    let blob = |d: &str| std::fs::read(img.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let index: Value = serde_json::from_slice(&std::fs::read(img.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let config: Value = serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap().iter().map(|l| blob(l["digest"].as_str().unwrap())).collect();
    Layout { oci_layout: std::fs::read(img.join("oci-layout")).unwrap(), index, manifest, config, layers }
}

/// Values that break JSON consumers.
fn json_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => Value::Null,
        1 => Value::Bool(true),
        2 => Value::from(-1),
        3 => Value::from(u64::MAX),
        4 => Value::from(1e300),
        5 => Value::from(0),
        6 => Value::from(""),
        7 => Value::from("../../../../etc/passwd"),
        8 => Value::from("x".repeat(1 << (rng.below(18) + 2))),
        9 => Value::from("sha256:0000000000000000000000000000000000000000000000000000000000000000"),
        10 => Value::from("application/vnd.oci.image.layer.v1.tar+zstd"),
        11 => Value::Array(vec![]),
        12 => Value::Object(Default::default()),
        _ => Value::from("\u{0}\u{ffff}é/"),
    }
}

/// Every JSON pointer of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        Value::Object(o) => {
            o.iter().for_each(|(k, x)| pointers(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        _ => {}
    }
}

/// One structural mutation of a JSON document.
fn mutate_json(doc: &mut Value, rng: &mut Rng) -> String {
    let mut ps = Vec::new();
    pointers(doc, String::new(), &mut ps);
    let p = ps[rng.below(ps.len() as u64) as usize].clone();
    let node = doc.pointer_mut(&p).unwrap();
    match (rng.below(4), &mut *node) {
        (0, Value::Array(a)) if !a.is_empty() => {
            let n = [2usize, 100, 1500][rng.below(3) as usize];
            let x = a[rng.below(a.len() as u64) as usize].clone();
            a.extend(std::iter::repeat_n(x, n));
            format!("repeat an element of {p} {n} more times")
        }
        (1, Value::Object(o)) if !o.is_empty() => {
            let k = o.keys().nth(rng.below(o.len() as u64) as usize).unwrap().clone();
            o.remove(&k);
            format!("remove {p}/{k}")
        }
        (2, Value::Array(a)) if !a.is_empty() => {
            a.remove(rng.below(a.len() as u64) as usize);
            format!("remove an element of {p}")
        }
        _ => {
            let v = json_value(rng);
            let shown: String = v.to_string().chars().take(40).collect();
            *node = v;
            format!("{p} = {shown}")
        }
    }
}

/// Writes `l` as a layout in `dir`; with `fix`, every digest and size is made to match
/// the bytes that are written (the chain index -> manifest -> config and layers),
/// otherwise the blobs keep their seed names and fail verification.
fn write_layout(l: &Layout, dir: &Path, fix: bool) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), &l.oci_layout).unwrap();
    let put = |name: &str, b: &[u8]| std::fs::write(blobs.join(name.trim_start_matches("sha256:")), b).unwrap();
    let name_of = |v: &Value, fallback: &[u8]| {
        v.as_str().filter(|d| d.len() == 71).map_or_else(|| digest(fallback), str::to_string)
    };
    let mut manifest = l.manifest.clone();
    let seed_names: Vec<String> = (0..l.layers.len())
        .map(|i| name_of(&manifest.pointer(&format!("/layers/{i}/digest")).cloned().unwrap_or_default(), &l.layers[i]))
        .collect();
    for (i, layer) in l.layers.iter().enumerate() {
        let d = if fix { digest(layer) } else { seed_names[i].clone() };
        put(&d, layer);
        if fix && let Some(desc) = manifest.pointer_mut(&format!("/layers/{i}")).and_then(Value::as_object_mut) {
            desc.insert("digest".into(), d.into());
            desc.insert("size".into(), layer.len().into());
        }
    }
    let config = serde_json::to_vec(&l.config).unwrap();
    let cname = name_of(&manifest.pointer("/config/digest").cloned().unwrap_or_default(), &config);
    let cname = if fix { digest(&config) } else { cname };
    put(&cname, &config);
    if fix && let Some(desc) = manifest.pointer_mut("/config").and_then(Value::as_object_mut) {
        desc.insert("digest".into(), cname.into());
        desc.insert("size".into(), config.len().into());
    }
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let mut index = l.index.clone();
    let mname = name_of(&index.pointer("/manifests/0/digest").cloned().unwrap_or_default(), &mbytes);
    let mname = if fix { digest(&mbytes) } else { mname };
    put(&mname, &mbytes);
    if fix && let Some(desc) = index.pointer_mut("/manifests/0").and_then(Value::as_object_mut) {
        desc.insert("digest".into(), mname.into());
        desc.insert("size".into(), mbytes.len().into());
    }
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// One mutant layout: a JSON document changed structurally or byte-wise, or a layer's
/// tar mutated (with its diff_id fixed when digests are).
fn mutate_layout(seed: &Layout, tars: &[Mutator], rng: &mut Rng) -> (Layout, String, Option<Vec<u8>>) {
    let mut l = seed.clone();
    let part = rng.below(7);
    let what = match part {
        0 | 1 => format!("index.json: {}", mutate_json(&mut l.index, rng)),
        2 | 3 => format!("manifest: {}", mutate_json(&mut l.manifest, rng)),
        4 => format!("config: {}", mutate_json(&mut l.config, rng)),
        5 => {
            let i = rng.below(tars.len() as u64) as usize;
            let (tar, what) = tars[i].mutant(rng);
            if let Some(ids) = l.config.pointer_mut("/rootfs/diff_ids").and_then(Value::as_array_mut)
                && i < ids.len()
            {
                ids[i] = digest(&tar).into();
            }
            l.layers[i] = gzip(&tar);
            format!("layer {i}: {what}")
        }
        _ => {
            // Bytes of one document: most give parse errors, some odd but valid JSON.
            let which = rng.below(3);
            let doc = match which {
                0 => &l.index,
                1 => &l.manifest,
                _ => &l.config,
            };
            let bytes = serde_json::to_vec_pretty(doc).unwrap();
            let len = bytes.len();
            let (b, what) = Mutator::new(bytes, &[(0, len)]).mutant(rng);
            return (l, format!("document {which} bytes: {what}"), Some([vec![which as u8], b].concat()));
        }
    };
    (l, what, None)
}

fn drive_layout(dir: &Path, label: &str) -> Report {
    let mut r = Report::default();
    let spec = format!("oci:{}:t", dir.display());
    let opts = diskcast_oci::OpenOptions {
        platform: Some(diskcast_oci::Platform::parse("linux/amd64").unwrap()),
        ..Default::default()
    };
    match diskcast_oci::open(&spec, &opts) {
        Ok(img) => {
            match diskcast_oci::flatten(&img, 1) {
                Ok(t) => walk_tree(&t.tree, &mut r),
                Err(e) => r.err(e),
            }
            match diskcast_oci::inspect::inspect(&img, 1) {
                Ok(rep) => r.nodes += rep.layers.len(),
                Err(e) => r.err(e),
            }
        }
        Err(e) => r.err(e),
    }
    let _ = label;
    r
}

fn run_oci(mutants: u64, seed: u64) -> Summary {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let l = layout_seed(dir.path());
    let tars: Vec<Mutator> = l
        .layers
        .iter()
        .map(|g| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&g[..]).read_to_end(&mut tar).unwrap();
            let hot = tar_hot(&tar);
            Mutator::new(tar, &hot).splicing()
        })
        .collect();
    let name = "oci-layout";
    let mut s = Summary::default();
    let mut rng = Rng::new(seed ^ 0x0c1);
    for i in 0..=mutants {
        let m = dir.path().join(format!("m{i}"));
        let (what, fix) = if i == 0 {
            write_layout(&l, &m, true);
            ("the seed".to_string(), true)
        } else {
            let (ml, what, raw) = mutate_layout(&l, &tars, &mut rng);
            let fix = i % 2 == 0;
            write_layout(&ml, &m, fix);
            if let Some(raw) = raw {
                // A byte-mutated document replaces the one written (digests left stale).
                let (which, b) = (raw[0], &raw[1..]);
                let target = match which {
                    0 => m.join("index.json"),
                    1 => {
                        let idx: Value = serde_json::from_slice(&std::fs::read(m.join("index.json")).unwrap()).unwrap();
                        m.join("blobs/sha256")
                            .join(idx["manifests"][0]["digest"].as_str().unwrap_or("x").trim_start_matches("sha256:"))
                    }
                    _ => m
                        .join("blobs/sha256")
                        .join(l.manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:")),
                };
                std::fs::write(target, b).unwrap();
            }
            (format!("{what}{}", if fix { " (digests fixed)" } else { "" }), fix)
        };
        let _ = fix;
        let what = format!("{name} seed {seed:#x} mutant {i}: {what}");
        let input: usize = walkdir_size(&m);
        let label = m.display().to_string();
        let md = m.clone();
        let out = bounded(LIMIT_SECS, memory_bound(input), &what, move || drive_layout(&md, &label));
        s.mutants += 1;
        match out {
            Ok((r, peak)) => {
                if i == 0 {
                    assert!(r.errors.is_empty() && r.nodes > 1, "{name}: the seed does not read cleanly: {r:?}");
                }
                if peak > s.max_peak {
                    s.max_peak = peak;
                    s.max_peak_what = what.clone();
                }
                s.errored += u64::from(!r.errors.is_empty());
                for e in &r.errors {
                    // Errors in a layer name the layer's blob, which is enough to find it.
                    let blob = e.to_string().starts_with("layer sha256:");
                    if let Some(p) = input_error_problem(e, &m.display().to_string()).filter(|_| !blob) {
                        note(&mut s, format!("{what}: unclear error: {p}"));
                    }
                }
            }
            Err(b) => {
                note(&mut s, format!("{what} ({input} bytes): {b}"));
                if matches!(b, Bad::Timeout(_)) {
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&m);
    }
    s.secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {} mutants in {:.1} s, {} with errors, peak {} KiB ({}), {} findings, known {:?}",
        s.mutants,
        s.secs,
        s.errored,
        s.max_peak >> 10,
        s.max_peak_what,
        s.findings.len(),
        s.known
    );
    s
}

fn walkdir_size(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = e.metadata().unwrap();
        n += if md.is_dir() { walkdir_size(&e.path()) } else { md.len() as usize };
    }
    n
}

// ---------------------------------------------------------------------------------------
// The default suite: a brief run per parser

mod brief {
    use super::*;

    fn go(make: fn(&Path) -> Vec<Target>) {
        let dir = tempfile::tempdir().unwrap();
        run_all(make(dir.path()), BRIEF, 0x5eed);
    }

    #[test]
    fn iso9660_rock_ridge_joliet_zisofs_el_torito() {
        go(iso_targets);
    }
    #[test]
    fn udf() {
        go(udf_targets);
    }
    #[test]
    fn fat() {
        go(fat_targets);
    }
    #[test]
    fn ext2_ext4() {
        go(ext4_targets);
    }
    #[test]
    fn gpt_mbr() {
        go(part_targets);
    }
    #[test]
    fn tar() {
        go(tar_targets);
    }
    #[test]
    fn oci_layout_json_and_layers() {
        let s = run_oci(BRIEF_OCI, 0x5eed);
        assert!(s.findings.is_empty(), "{} findings:\n{}", s.findings.len(), s.findings.join("\n"));
    }
    #[test]
    fn package_databases() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = package_targets();
        t.extend(rpm_targets(dir.path()));
        run_all(t, BRIEF, 0x5eed);
    }
    #[test]
    fn sqlite() {
        go(sqlite_targets);
    }
}

// ---------------------------------------------------------------------------------------
// The long campaign (`-- --ignored fuzz_tree`)

fn campaign(make: fn(&Path) -> Vec<Target>) {
    let dir = tempfile::tempdir().unwrap();
    run_all(make(dir.path()), campaign_mutants(), campaign_seed());
}

#[test]
#[ignore = "long campaign: cargo test -p diskcast-sources --test fuzz_trees -- --ignored fuzz_tree"]
fn fuzz_tree_iso9660() {
    campaign(iso_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_udf() {
    campaign(udf_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_fat() {
    campaign(fat_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_ext4() {
    campaign(ext4_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_gpt_mbr() {
    campaign(part_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_tar() {
    campaign(tar_targets);
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_oci() {
    let s = run_oci(campaign_mutants(), campaign_seed());
    assert!(s.findings.is_empty(), "{} findings:\n{}", s.findings.len(), s.findings.join("\n"));
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_packages() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = package_targets();
    t.extend(rpm_targets(dir.path()));
    run_all(t, campaign_mutants(), campaign_seed());
}
#[test]
#[ignore = "long campaign"]
fn fuzz_tree_sqlite() {
    campaign(sqlite_targets);
}

// ---------------------------------------------------------------------------------------
// Findings, as named regression tests

/// Checked in a child process of its own: the counts are process-wide, and the other
/// tests of this binary allocate and free on their threads meanwhile.
#[test]
fn the_allocator_counts() {
    if std::env::var_os("FUZZ_TREE_COUNT_CHILD").is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "the_allocator_counts", "--nocapture", "--test-threads=1"])
            .env("FUZZ_TREE_COUNT_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    assert!(tk::alloc::installed());
    let (v, peak) = bounded(5, 64 << 20, "a 10 MiB vector", || vec![1u8; 10 << 20].len()).unwrap();
    assert_eq!(v, 10 << 20);
    assert!(peak >= 10 << 20, "{peak}");
    let e = bounded(5, 1 << 20, "a 4 MiB vector under a 1 MiB bound", || vec![1u8; 4 << 20].len()).unwrap_err();
    assert!(matches!(e, Bad::Memory { bound, .. } if bound == 1 << 20), "{e}");
}

/// An allocation past the hard ceiling fails before the machine runs out of memory, and
/// the process says which run it was in (checked in a child, since it aborts).
#[test]
fn an_allocation_past_the_ceiling_aborts_naming_the_run() {
    if std::env::var_os("FUZZ_TREE_CEILING_CHILD").is_some() {
        let _ = bounded(5, 1 << 20, "the ceiling child", || std::hint::black_box(vec![0u8; 3 << 30]).len());
        unreachable!("3 GiB were allocated past the ceiling");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "an_allocation_past_the_ceiling_aborts_naming_the_run", "--nocapture"])
        .env("FUZZ_TREE_CEILING_CHILD", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("fuzz: an allocation of 3221225472 bytes passes the"), "{err}");
    assert!(err.contains("while running: the ceiling child"), "{err}");
}

/// Found by this fuzzer (z.iso, e.g. seed 0x5eed mutant 26: `le32 0x7fffffff` in a
/// compressed block): reading a zisofs file whose deflate data is damaged fails with
/// "zisofs block 0: deflate decompression error: incorrect data check (field zisofs)",
/// naming no disc, so `cat`/`extract` of a disc among others cannot say which one is
/// damaged. Every zisofs block of a genisoimage -z disc is damaged here; every read
/// error must name the disc. Fixed: zisofs content errors name the disc.
#[test]
fn zisofs_read_errors_name_the_disc() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let z = dir.path().join("zsrc");
    tool("mkzftree", &[s(&src), s(&z)]);
    let iso = dir.path().join("z.iso");
    tool("genisoimage", &["-quiet", "-R", "-z", "-o", s(&iso), s(&z)]);
    let mut b = std::fs::read(&iso).unwrap();
    // Each zisofs file starts with this magic, a 16-byte header, then the block pointers.
    const MAGIC: [u8; 8] = [0x37, 0xe4, 0x53, 0x96, 0xc9, 0xdb, 0xd6, 0x07];
    let starts: Vec<usize> = b.windows(8).enumerate().filter(|(_, w)| *w == MAGIC).map(|(i, _)| i).collect();
    assert!(!starts.is_empty(), "mkzftree compressed no file");
    for at in starts {
        let first = u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap()) as usize;
        b[at + first + 6] ^= 0x55;
    }
    let r = drive_disk(b.into(), "z.iso");
    assert!(!r.errors.is_empty(), "no file read failed");
    for e in &r.errors {
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("zisofs"), "{e}");
        assert_eq!(input_error_problem(e, "z.iso"), None);
    }
}

/// SQLite's varint: big-endian 7-bit groups, the high bit saying more follow.
fn sqlite_varint(mut v: u64) -> Vec<u8> {
    let mut out = vec![(v & 0x7f) as u8];
    v >>= 7;
    while v > 0 {
        out.insert(0, 0x80 | (v & 0x7f) as u8);
        v >>= 7;
    }
    out
}

/// Found by the campaign (t.sqlite+wal, seed 20261207: a record whose size field was
/// mutated peaked at 58 MiB for a ~100 KB input): a table leaf cell claiming a 60 MiB
/// record (under the 64 MiB per-record limit) made the reader reserve the whole 60 MiB
/// before reading a byte of its overflow chain. Memory now follows the pages read: the
/// chain of this 3 KB record ends long before, and the error says so.
#[test]
fn sqlite_record_size_is_not_reserved_before_its_pages_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("one.sqlite");
    let f = s(&db);
    tool("sqlite3", &[f, "PRAGMA page_size=1024; CREATE TABLE t(b BLOB); INSERT INTO t VALUES (randomblob(3000));"]);
    let root: usize =
        tool("sqlite3", &[f, "SELECT rootpage FROM sqlite_schema WHERE name = 't'"]).trim().parse().unwrap();
    let mut b = std::fs::read(&db).unwrap();
    let page = (root - 1) * 1024;
    assert_eq!(b[page], 0x0d, "t's root is a leaf");
    let cell = page + usize::from(u16::from_be_bytes([b[page + 8], b[page + 9]]));
    // The cell as sqlite3 wrote it: payload size, rowid, local bytes, first overflow page.
    let (u, old_size) = (1024usize, 3003usize);
    let local = |size: usize| {
        let (x, m) = (u - 35, (u - 12) * 32 / 255 - 23);
        let k = m + (size - m) % (u - 4);
        if size <= x {
            size
        } else if k <= x {
            k
        } else {
            m
        }
    };
    let (size_len, rowid_len) = (2, 1);
    assert_eq!(&b[cell..cell + 2], &sqlite_varint(old_size as u64)[..], "the record is 3003 bytes");
    let body = cell + size_len + rowid_len;
    let overflow = b[body + local(old_size)..body + local(old_size) + 4].to_vec();
    let claimed = 60usize << 20;
    let mut new = sqlite_varint(claimed as u64);
    new.push(1); // rowid
    new.extend_from_slice(&b[body..body + local(claimed).min(local(old_size))]);
    new.resize(new.len() + local(claimed).saturating_sub(local(old_size)), 0);
    new.extend_from_slice(&overflow);
    let at = u - new.len();
    b[page + at..page + u].copy_from_slice(&new);
    b[page + 8..page + 10].copy_from_slice(&u16::try_from(at).unwrap().to_be_bytes());
    let bytes: Arc<[u8]> = b.into();
    let (r, peak) = bounded(LIMIT_SECS, 8 << 20, "a 60 MiB record claim", move || drive_sqlite(bytes, "one.sqlite"))
        .unwrap_or_else(|b| panic!("{b}"));
    assert!(peak < 8 << 20, "{peak}");
    let e = r.errors.first().expect("the claim is refused");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("overflow chain ends after"), "{e}");
    assert_eq!(input_error_problem(e, "one.sqlite"), None);
}

/// Found by the campaign (Packages.bdb, seed 20261207: peak 4.4 MiB for a 20 KB file):
/// an off-page item's total length (`tlen`) was reserved before its overflow chain was
/// read, so a Berkeley DB `Packages` of a few KB claiming a 60 MiB item (under the
/// 64 MiB item limit) reserved 60 MiB. Memory now follows the overflow pages read.
#[test]
fn bdb_item_length_is_not_reserved_before_its_pages_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rpmdb");
    sh(&format!("'{}' '{}' 2", fixture("mkrpmdb.sh").display(), db.display()));
    let out = dir.path().join("Packages");
    sh(&format!(
        "'{}' '{}' '{}' 512 1234",
        fixture("mkrpmbdb.sh").display(),
        db.join("rpmdb.sqlite").display(),
        out.display()
    ));
    let mut b = std::fs::read(&out).unwrap();
    // The first off-page item (type 3) of a hash page (type 13) of 512 bytes, little-endian.
    let le16 = |b: &[u8], o: usize| usize::from(u16::from_le_bytes([b[o], b[o + 1]]));
    let item = (1..b.len() / 512)
        .map(|n| n * 512)
        .filter(|&p| b[p + 25] == 13)
        .flat_map(|p| (0..le16(&b, p + 20)).map(move |i| (p, i)))
        .map(|(p, i)| p + le16(&b, p + 26 + 2 * i))
        .find(|&o| b[o] == 3)
        .expect("db5.3_load put no item off-page");
    b[item + 8..item + 12].copy_from_slice(&(60u32 << 20).to_le_bytes());
    let bytes: Arc<[u8]> = b.into();
    let (r, peak) = bounded(LIMIT_SECS, 8 << 20, "a 60 MiB item claim", move || drive_rpm_bdb(bytes, "Packages"))
        .unwrap_or_else(|b| panic!("{b}"));
    assert!(peak < 8 << 20, "{peak}");
    let e = r.errors.first().expect("the claim is refused");
    // The chain ends (next page 0) long before 60 MiB.
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("overflow page 0 is not in"), "{e}");
    assert_eq!(input_error_problem(e, "Packages"), None);
}

/// Found by the campaign (gnu-pax.tar, seed 0x1352957 mutant 3084: `flip 0x8 at 0xc00`,
/// the first byte of a PAX 1.0 sparse map; bsd-pax.tar too, whose sparse file GNU tar's
/// map describes the same way): "PAX GNU sparse map is not a number (field GNU sparse
/// map)" names neither the archive nor the offset, unlike every other tar error.
/// Fixed: `read_sparse_text_map` names the archive and offset like the rest.
#[test]
fn tar_sparse_map_errors_name_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sh(&format!("cd '{}'; truncate -s 1M sparse; echo tail >> sparse", src.display()));
    let p = dir.path().join("s.tar");
    sh(&format!("cd '{}'; tar --format=posix --sparse -cf '{}' sparse", src.display(), p.display()));
    let mut b = std::fs::read(&p).unwrap();
    let h = (0..b.len() / 512)
        .map(|i| i * 512)
        .find(|&h| b[h..h + 100].windows(14).any(|w| w == b"GNUSparseFile.") && b[h + 156] == b'0')
        .expect("GNU tar wrote no PAX 1.0 sparse member");
    assert!(b[h + 512].is_ascii_digit(), "the sparse map starts with its run count");
    b[h + 512] = b'x';
    let r = drive_tar(b.into(), "s.tar");
    let e = r.errors.first().expect("the bad map is refused");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("sparse map"), "{e}");
    assert_eq!(input_error_problem(e, "s.tar"), None);
}

/// Found by the campaign (ext2.img, seed 0x1092 mutant 11218: `flip 0x2 at 0x1907`, a
/// bit of the root directory's `i_size`, peaked at 32 MiB for a 512 KiB image): the
/// ext4 reader allocates a directory's claimed size (up to its 1 GiB `MAX_DIR_BYTES`)
/// before reading its blocks, so a 512 KiB image claiming a 512 MiB root directory
/// takes 512 MiB. The s15-bounds branch refuses a size larger than the filesystem
/// before allocating.
#[test]
fn ext4_directory_size_is_bounded_by_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let mut b = ext_image(dir.path(), "ext2.img", "mkfs.ext2", &[], &src, "512K");
    // 1 KiB blocks: the superblock at 1024, the group descriptors at 2048.
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let inode_size = usize::from(u16::from_le_bytes([b[1024 + 88], b[1024 + 89]]));
    let root = le32(&b, 2048 + 8) * 1024 + inode_size; // inode 2
    assert_eq!(u16::from_le_bytes([b[root], b[root + 1]]) & 0o170000, 0o040000, "inode 2 is a directory");
    b[root + 4..root + 8].copy_from_slice(&(512u32 << 20).to_le_bytes());
    let bytes: Arc<[u8]> = b.into();
    let (r, peak) = bounded(LIMIT_SECS, 8 << 20, "a 512 MiB root directory", move || drive_disk(bytes, "ext2.img"))
        .unwrap_or_else(|b| panic!("{b}"));
    assert!(peak < 8 << 20, "{peak}");
    let e = r.errors.first().expect("the claim is refused");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(input_error_problem(e, "ext2.img"), None);
}

/// Found by the campaign (udf.iso, seed 20261207: a mutant peaked at 64 MiB for a 1 MB
/// disc): `udf.rs` `content()` allocates a directory's (or symlink's) claimed
/// information length, up to its 256 MiB `MAX_DIR_BYTES`, before reading the extents
/// that hold it, the class issue 15 names for UDF symlinks (922 MB from ten entries).
/// Here the root directory of a genisoimage -udf disc claims 200 MiB.
#[test]
fn udf_directory_size_is_not_allocated_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let p = dir.path().join("udf.iso");
    tool("genisoimage", &["-quiet", "-udf", "-J", "-R", "-o", s(&p), s(&src)]);
    let mut b = std::fs::read(&p).unwrap();
    // The first File Entry (tag 261) of a directory (ICB file type 4): the root.
    let fe = udf_tags(&b)
        .into_iter()
        .find(|&o| u16::from_le_bytes([b[o], b[o + 1]]) == 261 && b[o + 27] == 4)
        .expect("no directory File Entry");
    b[fe + 56..fe + 64].copy_from_slice(&(200u64 << 20).to_le_bytes());
    b[fe + 4] = tag_sum(&b[fe..fe + 16]);
    let bytes: Arc<[u8]> = b.into();
    let (r, peak) = bounded(LIMIT_SECS, 8 << 20, "a 200 MiB UDF directory", move || drive_disk(bytes, "udf.iso"))
        .unwrap_or_else(|b| panic!("{b}"));
    assert!(peak < 8 << 20, "{peak}");
    for e in &r.errors {
        assert_eq!(input_error_problem(e, "udf.iso"), None);
    }
}
