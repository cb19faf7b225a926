//! What every writing command shares through the one output path: `-j N` is the one
//! thread budget and reaches every parallel stage (layer decoding, layer gzip,
//! extraction, the copy engine; `-j 1` runs each on one worker), `-p` and `--progress`
//! report the write, and Ctrl-C stops it leaving nothing beside the target.
//!
//! The workers are named (`dc-flatten`, `dc-gzip`, `dc-extract`, `dc-copy`), so the
//! tests count them in `/proc/PID/task/*/comm` while diskcast runs.

use crate::oci_common::run;
use crate::support::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fixed `SOURCE_DATE_EPOCH`, so two runs with different `-j` write the same bytes.
const EPOCH: &str = "1700000000";

/// Runs diskcast with `args` and returns, per thread name, the most threads of that
/// name seen alive at once (sampled every millisecond until it exits).
fn peak_threads(args: &[&str]) -> BTreeMap<String, usize> {
    let mut child = Command::new(diskcast_bin())
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diskcast");
    let tasks = format!("/proc/{}/task", child.id());
    let mut peak: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        let mut now: BTreeMap<String, usize> = BTreeMap::new();
        for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                *now.entry(name.trim().to_string()).or_default() += 1;
            }
        }
        for (name, n) in now {
            let p = peak.entry(name).or_default();
            *p = (*p).max(n);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "diskcast {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    peak
}

fn peak(p: &BTreeMap<String, usize>, name: &str) -> usize {
    p.get(name).copied().unwrap_or(0)
}

/// An OCI layout made by umoci with three layers of 24 MiB of incompressible data each.
fn three_layer_image(dir: &Path) -> String {
    let layout = dir.join("layout");
    run("umoci", &["init", "--layout", &s(&layout)]);
    let image = format!("{}:t", s(&layout));
    run("umoci", &["new", "--image", &image]);
    for i in 0..3u64 {
        let part = dir.join(format!("part{i}"));
        std::fs::create_dir(&part).unwrap();
        write_file(&part.join("data.bin"), &pseudo_random(24 << 20, 40 + i));
        run("umoci", &["insert", "--rootless", "--image", &image, &s(&part), &format!("/p{i}")]);
        std::fs::remove_dir_all(&part).unwrap();
    }
    format!("oci:{image}")
}

/// Flattening an image's layers and extracting its files: one worker each with `-j 1`,
/// as many as asked with `-j 2`.
#[test]
fn j_reaches_layer_decoding_and_extraction() {
    let d = tmp();
    let image = three_layer_image(d.path());
    let one = peak_threads(&["extract", "-j", "1", &image, &s(&d.path().join("one"))]);
    assert_eq!(peak(&one, "dc-flatten"), 1, "-j 1 decoded layers on several threads: {one:?}");
    // The files were staged while the layers were read: extraction only renames them,
    // too quickly for the sampler to see its one worker every time.
    assert!(peak(&one, "dc-extract") <= 1, "-j 1 extracted on several threads: {one:?}");
    let two = peak_threads(&["extract", "-j", "2", &image, &s(&d.path().join("two"))]);
    assert_eq!(peak(&two, "dc-flatten"), 2, "-j 2 did not decode two layers at once: {two:?}");
    assert_same_bytes(&d.path().join("one/p2/data.bin"), &d.path().join("two/p2/data.bin"));
}

/// Extracting a tar (GNU tar's) of small files and large ones: `-j 1` creates files on
/// one worker and no other; `-j 2` on at most two, plus at most one writer of the large
/// files (`dc-extract-big`, which bypasses the page cache and mostly waits on the
/// device); the trees are the same.
#[test]
fn j_caps_extraction_and_large_files_get_at_most_one_writer_more() {
    let d = tmp();
    let src = d.path().join("src");
    for a in 0..8 {
        let dir = src.join(format!("d{a}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            write_file(&dir.join(format!("f{f}")), format!("{a}/{f}").as_bytes());
        }
        write_file(&dir.join("big.bin"), &pseudo_random(8 << 20, 60 + a));
    }
    let tar = d.path().join("t.tar");
    run("tar", &["-cf", &s(&tar), "-C", &s(&src), "."]);
    let one = peak_threads(&["extract", "-j", "1", &s(&tar), &s(&d.path().join("one"))]);
    assert!(peak(&one, "dc-extract") <= 1, "-j 1 extracted on several threads: {one:?}");
    assert_eq!(peak(&one, "dc-extract-big"), 0, "-j 1 started a writer of large files: {one:?}");
    let two = peak_threads(&["extract", "-j", "2", &s(&tar), &s(&d.path().join("two"))]);
    assert!(peak(&two, "dc-extract") <= 2, "-j 2 extracted on more than two threads: {two:?}");
    assert!(peak(&two, "dc-extract-big") <= 1, "more than one writer of large files: {two:?}");
    run("diff", &["-r", &s(&src), &s(&d.path().join("one"))]);
    run("diff", &["-r", &s(&src), &s(&d.path().join("two"))]);
}

/// Gzipping a layer: `-j 1` compresses on one thread, `-j 3` on up to three, never more;
/// the layer's bytes do not depend on it.
#[test]
fn j_caps_the_layer_gzip() {
    let d = tmp();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    write_file(&root.join("big.bin"), &pseudo_random(48 << 20, 7));
    let out = |n: &str| format!("oci:{}:t", s(&d.path().join(format!("out{n}"))));
    let one = peak_threads(&["convert", "-j", "1", &s(&root), &out("1")]);
    assert_eq!(peak(&one, "dc-gzip"), 1, "-j 1 gzipped on several threads: {one:?}");
    let three = peak_threads(&["convert", "-j", "3", &s(&root), &out("3")]);
    let n = peak(&three, "dc-gzip");
    assert!((2..=3).contains(&n), "-j 3 gzipped on {n} threads at once: {three:?}");
    let blobs = |n: &str| {
        let mut v: Vec<String> = std::fs::read_dir(d.path().join(format!("out{n}/blobs/sha256")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // Same layer whatever -j (the config's date may differ: compare the layer blob).
    let layer =
        |n: &str| blobs(n).into_iter().max_by_key(|b| file_len(&d.path().join(format!("out{n}/blobs/sha256/{b}"))));
    assert_eq!(layer("1"), layer("3"), "the thread count changed the layer");
    run(
        "umoci",
        &["unpack", "--rootless", "--image", &format!("{}:t", s(&d.path().join("out1"))), &s(&d.path().join("bundle"))],
    );
    assert_same_bytes(&root.join("big.bin"), &d.path().join("bundle/rootfs/big.bin"));
}

/// `iso create -j N` writes the disc through the copy engine with N workers.
#[test]
fn j_reaches_the_copy_of_iso_create() {
    let d = tmp();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for i in 0..4u64 {
        write_file(&root.join(format!("f{i}.bin")), &pseudo_random(24 << 20, 90 + i));
    }
    let iso = |n: &str| s(&d.path().join(format!("out{n}.iso")));
    let one = peak_threads(&["iso", "create", "-j", "1", &s(&root), "-o", &iso("1")]);
    assert_eq!(peak(&one, "dc-copy"), 1, "-j 1 copied on several threads: {one:?}");
    let two = peak_threads(&["iso", "create", "-j", "2", "-O", "qcow2", &s(&root), "-o", &iso("2")]);
    assert_eq!(peak(&two, "dc-copy"), 2, "-j 2 did not copy on two threads: {two:?}");
    qemu_compare(Path::new(&iso("1")), "raw", Path::new(&iso("2")), "qcow2");
}

/// `iso create -p` (stderr not a terminal) prints one line per percent up to 100%;
/// `--progress=json` prints JSON lines whose last says all bytes are done.
#[test]
fn iso_create_reports_progress() {
    let d = tmp();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    write_file(&root.join("f.bin"), &pseudo_random(8 << 20, 5));
    let out = dc_ok(&["iso", "create", "-p", &s(&root), "-o", &s(&d.path().join("p.iso"))]);
    let err = out.stderr.clone();
    let lines: Vec<&str> = err.lines().filter(|l| l.trim_start().starts_with('(')).collect();
    assert_eq!(lines.first().map(|l| l.trim()), Some("(0/100%)"), "{err}");
    assert_eq!(lines.last().map(|l| l.trim()), Some("(100/100%)"), "{err}");
    let out =
        dc_ok(&["iso", "remaster", "--progress=json", &s(&d.path().join("p.iso")), "-o", &s(&d.path().join("r.iso"))]);
    let err = out.stderr.clone();
    let last: serde_json::Value = err
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON progress line: {err}"));
    assert!(last["total"].as_u64().unwrap() >= 8 << 20, "{err}");
    assert_eq!(last["done"], last["total"], "{err}");
}

/// Starts diskcast with `args` and, once its output is open (unnamed) in `dir`, stops
/// it, sends SIGINT and lets it go on: the interrupt arrives with the write under way,
/// however fast the machine. Checks that it stopped within seconds, failed saying it
/// was interrupted, and did not panic.
fn interrupt_write(args: &[&str], dir: &Path) {
    interrupt_when(args, |pid| wait_for_output_fd(pid, dir));
}

/// [`interrupt_write`] once `ready(pid)` returns; the stderr of the stopped command.
fn interrupt_when(args: &[&str], ready: impl Fn(u32)) -> String {
    let mut child = Command::new(diskcast_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn diskcast");
    ready(child.id());
    let pid = child.id().to_string();
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success(), "kill {sig}");
    signal("-STOP");
    assert!(child.try_wait().unwrap().is_none(), "{args:?} finished before it could be interrupted");
    signal("-INT");
    signal("-CONT");
    let start = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(start.elapsed() < Duration::from_secs(10), "{args:?} took {:?} to stop", start.elapsed());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{args:?} was not stopped by its Ctrl-C handler: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    stderr.into_owned()
}

/// Waits until `pid` has a file open directly inside `dir` (extraction is writing one).
fn wait_for_file_in(pid: u32, dir: &Path) {
    let start = Instant::now();
    loop {
        if let Ok(canon) = std::fs::canonicalize(dir) {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
            if fds.filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|l| l.parent() == Some(canon.as_path())) {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "diskcast never wrote a file in {}", dir.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Ctrl-C during `extract SRC DIR` stops it (exit 1, "interrupted") and removes what it
/// extracted: a DIR it created is gone, an existing empty DIR is empty again. The
/// interrupt arrives while a large file is being written, with directories made.
#[test]
fn interrupted_extraction_removes_what_it_made() {
    let d = tmp();
    let root = d.path().join("root");
    for sub in ["a/b", "c"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for i in 0..50 {
            write_file(&root.join(sub).join(format!("s{i}.txt")), format!("{sub} {i}\n").as_bytes());
        }
    }
    std::os::unix::fs::symlink("a/b/s1.txt", root.join("link")).unwrap();
    for i in 0..3u64 {
        write_file(&root.join(format!("z{i}.bin")), &pseudo_random(64 << 20, 80 + i));
    }
    let tar = d.path().join("root.tar");
    run("tar", &["-C", &s(&root), "-cf", &s(&tar), "."]);
    std::fs::remove_dir_all(&root).unwrap();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // A new directory (and its new parent) made by the extraction: removed.
    let new = work.join("new/dir");
    let err = interrupt_when(&["extract", "-j", "1", &s(&tar), &s(&new)], |pid| wait_for_file_in(pid, &new));
    assert!(err.contains("the directory it created were removed"), "{err}");
    assert!(!new.exists(), "the interrupted extraction left {}", new.display());

    // An existing empty directory: emptied again, kept.
    let empty = work.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = interrupt_when(&["extract", "-j", "2", &s(&tar), &s(&empty)], |pid| wait_for_file_in(pid, &empty));
    assert!(err.contains("the directory is empty again"), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "the interrupted extraction left files in DIR");
}

/// Ctrl-C during `iso create`, `iso remaster` and `extract -o` leaves nothing beside
/// the target, and an existing target as it was.
#[test]
fn interrupted_iso_and_archive_writes_leave_nothing() {
    let d = tmp();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    for i in 0..4u64 {
        write_file(&root.join(format!("f{i}.bin")), &pseudo_random(64 << 20, 60 + i));
    }
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let names = || {
        let mut v: Vec<String> =
            std::fs::read_dir(&work).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let out = s(&work.join("out.iso"));
    interrupt_write(&["iso", "create", "-j", "1", &s(&root), "-o", &out], &work);
    assert!(names().is_empty(), "iso create left {:?}", names());

    let input = work.join("in.iso");
    run("xorriso", &["-as", "mkisofs", "-quiet", "-R", "-J", "-o", &s(&input), &s(&root)]);
    write_file(&work.join("out.iso"), b"precious");
    interrupt_write(&["iso", "remaster", "-j", "1", &s(&input), "-o", &out], &work);
    assert_eq!(names(), ["in.iso", "out.iso"]);
    assert_eq!(read(&work.join("out.iso")), b"precious", "remaster touched the existing target");

    interrupt_write(&["extract", &s(&root), "-o", &s(&work.join("out.tar"))], &work);
    assert_eq!(names(), ["in.iso", "out.iso"], "extract -o left files");
}

/// Ctrl-C while a kubevirt containerDisk is being wrapped (its layer gzipped) stops the
/// wrap: the layout keeps only what it had, and no staged disk is left beside it.
#[test]
fn interrupted_container_disk_wrap_leaves_the_layout_as_it_was() {
    let d = tmp();
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    write_file(&small.join("hello.txt"), b"hello\n");
    let layout = d.path().join("layout");
    dc_ok(&["convert", &s(&small), &format!("oci:{}:base", s(&layout))]);
    let blobs = layout.join("blobs/sha256");
    let listing = |dir: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let (before, index) = (listing(&blobs), read(&layout.join("index.json")));
    let disk = d.path().join("disk.raw");
    write_file(&disk, &pseudo_random(256 << 20, 11));
    let dst = format!("oci:{}:disk", s(&layout));
    interrupt_write(&["convert", "-j", "1", "--profile", "kubevirt", "-f", "raw", &s(&disk), &dst], &blobs);
    assert_eq!(listing(&blobs), before, "the interrupted wrap left blobs");
    assert_eq!(read(&layout.join("index.json")), index, "the interrupted wrap changed index.json");
    assert_eq!(listing(d.path()), ["disk.raw", "layout", "small"], "files left beside the layout");
}
