//! Helpers shared by every area: running diskcast and qemu's tools, temp dirs, patterns,
//! and a small qcow2 header reader used to patch qemu-made images into hostile ones.
//!
//! Verdicts come from qemu-img/qemu-io. A test that needs them FAILS (never skips) when
//! they are missing: CI installs them.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// A command's result, with stderr as text for messages.
#[derive(Debug)]
pub struct Run {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!("`{}` printed invalid JSON ({e}):\n{}\nstderr: {}", self.cmdline, self.stdout_str(), self.stderr)
        })
    }
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            truncate(&self.stdout_str(), 4000),
            truncate(&self.stderr, 4000)
        )
    }
    /// Asserts the exit status.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code}\n{}", self.describe());
        self
    }
    pub fn expect_ok(self) -> Self {
        self.expect_code(0)
    }
    /// Asserts stderr (lowercased) contains at least one of `words` (lowercase).
    pub fn expect_stderr_any(self, words: &[&str]) -> Self {
        let low = self.stderr.to_lowercase();
        assert!(
            words.iter().any(|w| low.contains(&w.to_lowercase())),
            "stderr should name the problem (one of {words:?})\n{}",
            self.describe()
        );
        self
    }
    pub fn expect_stderr_all(self, words: &[&str]) -> Self {
        let low = self.stderr.to_lowercase();
        for w in words {
            assert!(low.contains(&w.to_lowercase()), "stderr should contain {w:?}\n{}", self.describe());
        }
        self
    }
    /// diskcast's error line format: `diskcast: ...`.
    pub fn expect_diskcast_error(self) -> Self {
        assert!(
            self.stderr.lines().any(|l| l.starts_with("diskcast: ")),
            "expected a `diskcast: <file>: <message>` line on stderr\n{}",
            self.describe()
        );
        self
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... [{} more bytes]", &s[..end], s.len() - end)
    }
}

fn cmdline(prog: &str, args: &[&str]) -> String {
    let mut s = prog.to_string();
    for a in args {
        s.push(' ');
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(a);
        }
    }
    s
}

fn run_cmd(mut cmd: Command, line: String) -> Run {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out: Output = cmd.output().unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    Run {
        cmdline: line,
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

pub fn diskcast_bin() -> &'static str {
    env!("CARGO_BIN_EXE_diskcast")
}

/// The commands `diskcast WORDS.. --help` lists (of `diskcast`, or of `diskcast iso`...),
/// without `help`.
pub fn commands_in_help(words: &[&str]) -> std::collections::BTreeSet<String> {
    let mut args = words.to_vec();
    args.push("--help");
    let help = dc_ok(&args).stdout_str();
    let Some(section) = help.split("Commands:\n").nth(1) else { return Default::default() };
    section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Runs diskcast (any exit status). Asserts it never panics and is never killed by a signal.
pub fn dc(args: &[&str]) -> Run {
    dc_in(None, args)
}

/// Runs diskcast in `dir`.
pub fn dc_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = Command::new(diskcast_bin());
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let r = run_cmd(cmd, cmdline("diskcast", args));
    assert!(!r.stderr.contains("panicked"), "diskcast panicked\n{}", r.describe());
    assert!(r.code.is_some(), "diskcast was killed by a signal\n{}", r.describe());
    r
}

/// Runs diskcast with `env` changed: `(name, Some(value))` set, `(name, None)` removed.
pub fn dc_env(env: &[(&str, Option<&Path>)], args: &[&str]) -> Run {
    let mut cmd = Command::new(diskcast_bin());
    cmd.args(args);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let r = run_cmd(cmd, cmdline("diskcast", args));
    assert!(!r.stderr.contains("panicked"), "diskcast panicked\n{}", r.describe());
    r
}

/// A run of diskcast on hostile input with its time and memory bounded and measured.
#[derive(Debug)]
pub struct Bounded {
    pub run: Run,
    /// Peak resident memory of the process, in bytes (GNU time's `%M`).
    pub peak_rss: u64,
}

impl Bounded {
    /// Asserts the process peaked below `max` bytes of resident memory.
    pub fn expect_rss_below(self, max: u64) -> Self {
        assert!(
            self.peak_rss < max,
            "diskcast peaked at {} MiB resident, more than {} MiB\n{}",
            self.peak_rss / MIB,
            max / MIB,
            self.run.describe()
        );
        self
    }
}

/// Runs diskcast on hostile input: killed after `secs` seconds (`timeout -s KILL`), its
/// address space capped at `max_vm` bytes (`prlimit --as`) so a runaway allocation fails
/// in the child instead of swamping the machine, and its peak RSS measured by GNU time.
/// A run cut short shows as a code of `None` or 137 (killed), never as success.
pub fn dc_bounded(args: &[&str], secs: u64, max_vm: u64) -> Bounded {
    let report = tempfile::NamedTempFile::new().expect("a temp file for GNU time's report");
    let mut cmd = Command::new("/usr/bin/time");
    let (secs, vm) = (secs.to_string(), format!("--as={max_vm}"));
    cmd.args(["-f", "%M", "-o", &s(report.path()), "timeout", "-s", "KILL", &secs, "prlimit", &vm, "--"]);
    cmd.arg(diskcast_bin()).args(args);
    let r = run_cmd(cmd, cmdline("diskcast", args));
    assert!(!r.stderr.contains("panicked"), "diskcast panicked\n{}", r.describe());
    let text = std::fs::read_to_string(report.path()).expect("GNU time's report (install the time package)");
    // GNU time prints "Command terminated by signal N" before the figure when the child died.
    let kib: u64 = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("GNU time printed no peak RSS: {text:?}\n{}", r.describe()));
    eprintln!(
        "{}: exit {:?}, peak RSS {} MiB, {:.1} s: {}",
        r.cmdline,
        r.code,
        kib / 1024,
        r.elapsed.as_secs_f64(),
        r.stderr.trim()
    );
    Bounded { run: r, peak_rss: kib * KIB }
}

/// Runs diskcast with `SOURCE_DATE_EPOCH` set to `epoch`, or removed from its environment
/// when `None` (so a CI machine that exports it cannot change what a test sees).
pub fn dc_epoch(epoch: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(diskcast_bin());
    cmd.args(args);
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    let line = format!("SOURCE_DATE_EPOCH={} {}", epoch.unwrap_or("(unset)"), cmdline("diskcast", args));
    let r = run_cmd(cmd, line);
    assert!(!r.stderr.contains("panicked"), "diskcast panicked\n{}", r.describe());
    assert!(r.code.is_some(), "diskcast was killed by a signal\n{}", r.describe());
    r
}

/// Runs diskcast and asserts exit 0.
pub fn dc_ok(args: &[&str]) -> Run {
    dc(args).expect_ok()
}

fn tool(name: &str) -> &'static str {
    // Fail loudly (never skip) when qemu's tools are missing.
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false);
    assert!(
        found,
        "{name} is required by this test but was not found in PATH. Install qemu-utils \
         (Debian/Ubuntu: apt-get install qemu-utils); CI installs it."
    );
    match name {
        "qemu-img" => "qemu-img",
        "qemu-io" => "qemu-io",
        _ => unreachable!(),
    }
}

/// Runs qemu-img (any exit status).
pub fn qemu_img_status(args: &[&str]) -> Run {
    qemu_img_in(None, args)
}

/// qemu's tools run under `timeout`, so a qemu hang fails the test instead of the suite.
fn qemu_command(name: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", tool(name)]);
    cmd
}

pub fn qemu_img_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = qemu_command("qemu-img");
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    run_cmd(cmd, cmdline("qemu-img", args))
}

/// Runs qemu-img and asserts success.
pub fn qemu_img(args: &[&str]) -> Run {
    qemu_img_status(args).expect_ok()
}

/// Runs `qemu-io -f FMT -c CMD... FILE` and asserts success (qemu-io exits 0 even when a
/// command fails, so its output is checked too).
pub fn qemu_io(fmt: &str, file: &Path, cmds: &[&str]) {
    let mut args: Vec<String> = vec!["-f".into(), fmt.into()];
    for c in cmds {
        args.push("-c".into());
        args.push((*c).to_string());
    }
    args.push(file.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = qemu_command("qemu-io");
    cmd.args(&refs);
    let r = run_cmd(cmd, cmdline("qemu-io", &refs));
    let text = format!("{}{}", r.stdout_str(), r.stderr);
    assert!(
        r.code == Some(0) && !text.contains("failed") && !text.contains("error"),
        "qemu-io failed\n{}",
        r.describe()
    );
}

/// `qemu-img compare -f FA -F FB A B` must exit 0.
pub fn qemu_compare(a: &Path, fa: &str, b: &Path, fb: &str) {
    let r = qemu_img_status(&["compare", "-f", fa, "-F", fb, &s(a), &s(b)]);
    assert_eq!(r.code, Some(0), "qemu-img compare says the images differ\n{}", r.describe());
}

/// `qemu-img check` must exit 0 with no corruptions and no leaks. Returns its JSON.
pub fn qemu_check_clean(img: &Path) -> Value {
    let r = qemu_img_status(&["check", "-f", "qcow2", "--output=json", &s(img)]);
    assert_eq!(r.code, Some(0), "qemu-img check found problems in {}\n{}", img.display(), r.describe());
    let v = r.json();
    assert_eq!(v.get("corruptions").and_then(Value::as_u64).unwrap_or(0), 0, "{v}");
    assert_eq!(v.get("leaks").and_then(Value::as_u64).unwrap_or(0), 0, "{v}");
    assert_eq!(v.get("check-errors").and_then(Value::as_u64).unwrap_or(0), 0, "{v}");
    v
}

/// `qemu-img info --output=json`.
pub fn qemu_info(img: &Path) -> Value {
    qemu_img(&["info", "--output=json", &s(img)]).json()
}

pub fn qemu_info_fmt(img: &Path, fmt: &str) -> Value {
    qemu_img(&["info", "-f", fmt, "--output=json", &s(img)]).json()
}

/// Path as &str-able String.
pub fn s(p: &Path) -> String {
    p.to_str().expect("test paths are UTF-8").to_string()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("diskcast-it-").tempdir().expect("cannot create a temp dir")
}

/// Bytes the file occupies on disk.
pub fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display())).blocks() * 512
}

pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display())).len()
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Files in `dir` whose name starts with '.' and ends with ".tmp" (diskcast's temporaries)
/// or contains "diskcast-".
pub fn stray_temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| (n.starts_with('.') && n.ends_with(".tmp")) || n.contains(".diskcast-"))
        .collect()
}

/// Waits (up to 30 s) until `pid` writes an output in `dir`: an open file there with no
/// name (`O_TMPFILE`, shown as `#INODE (deleted)`) or a hidden temporary one.
pub fn wait_for_output_fd(pid: u32, dir: &Path) {
    let start = Instant::now();
    let canon = std::fs::canonicalize(dir).expect("canonicalize");
    loop {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten();
        let writing = fds.filter_map(|fd| std::fs::read_link(fd.path()).ok()).any(|l| {
            let name = l.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            l.parent() == Some(canon.as_path()) && (name.starts_with('#') || name.starts_with('.'))
        });
        if writing {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "diskcast never opened its output in {}", dir.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `dst` does not exist and that no temporary file was left beside it.
pub fn assert_no_output(dst: &Path) {
    assert!(!dst.exists(), "{} must not exist after a failed convert", dst.display());
    let dir = dst.parent().expect("dst has a parent");
    let stray = stray_temps(dir);
    assert!(stray.is_empty(), "temporary files left in {}: {stray:?}", dir.display());
}

/// A raw file of `size` bytes where every 4 KiB block starts with its own index (u64 LE)
/// and its byte offset (u64 LE), then a fill byte derived from the index, so a misplaced
/// block tells where it came from. Blocks whose index is a multiple of `hole_every` are
/// left as holes (zeros) when `hole_every > 0`.
pub fn write_index_pattern(path: &Path, size: u64, hole_every: u64) {
    let f = std::fs::File::create(path).expect("create pattern file");
    f.set_len(size).expect("set_len");
    let mut block = vec![0u8; 4096];
    let mut idx = 0u64;
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(4096) as usize;
        if hole_every == 0 || idx.rem_euclid(hole_every) != 0 {
            block.fill((idx % 251) as u8 + 1);
            block[..8].copy_from_slice(&idx.to_le_bytes());
            block[8..16].copy_from_slice(&off.to_le_bytes());
            f.write_all_at(&block[..n], off).expect("write pattern");
        }
        idx += 1;
        off += 4096;
    }
}

/// If two byte buffers differ, the first differing offset (or the shorter length).
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n).find(|&i| a[i] != b[i]).or(if a.len() == b.len() { None } else { Some(n) })
}

/// Asserts two files are byte-identical, explaining where they differ (for index patterns,
/// which block landed there).
pub fn assert_same_bytes(expected: &Path, got: &Path) {
    let a = read(expected);
    let b = read(got);
    if let Some(off) = first_diff(&a, &b) {
        let blk = off & !4095;
        let got_idx = b.get(blk..blk + 8).map(|x| u64::from_le_bytes(x.try_into().expect("8")));
        panic!(
            "{} (len {}) and {} (len {}) differ first at offset {off} (block {}): got block header {:?}",
            expected.display(),
            a.len(),
            got.display(),
            b.len(),
            blk / 4096,
            got_idx
        );
    }
}

/// Simple deterministic pseudo-random bytes (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn write_file(p: &Path, data: &[u8]) {
    let mut f = std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(data).expect("write");
}

// ---------- qcow2 byte patching ----------

pub fn read_be_u32(p: &Path, off: u64) -> u32 {
    let f = std::fs::File::open(p).expect("open");
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, off).expect("read u32");
    u32::from_be_bytes(b)
}

pub fn read_be_u64(p: &Path, off: u64) -> u64 {
    let f = std::fs::File::open(p).expect("open");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).expect("read u64");
    u64::from_be_bytes(b)
}

pub fn patch(p: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).expect("open for patch");
    f.write_all_at(bytes, off).expect("patch");
}

pub fn patch_u32(p: &Path, off: u64, v: u32) {
    patch(p, off, &v.to_be_bytes());
}

pub fn patch_u64(p: &Path, off: u64, v: u64) {
    patch(p, off, &v.to_be_bytes());
}

pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;

/// The header fields tests patch, read from the file (never hard-coded).
#[derive(Debug, Clone)]
pub struct Qcow2Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub incompatible: u64,
    pub refcount_order: u32,
}

impl Qcow2Header {
    pub fn read(p: &Path) -> Self {
        let magic = read_be_u32(p, 0);
        assert_eq!(magic, 0x5146_49fb, "{} is not a qcow2 file", p.display());
        let version = read_be_u32(p, 4);
        Qcow2Header {
            version,
            cluster_bits: read_be_u32(p, 20),
            size: read_be_u64(p, 24),
            l1_size: read_be_u32(p, 36),
            l1_table_offset: read_be_u64(p, 40),
            refcount_table_offset: read_be_u64(p, 48),
            refcount_table_clusters: read_be_u32(p, 56),
            incompatible: if version >= 3 { read_be_u64(p, 72) } else { 0 },
            refcount_order: if version >= 3 { read_be_u32(p, 96) } else { 4 },
        }
    }
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// File offset of L1 entry `i`.
    pub fn l1_entry_pos(&self, i: u64) -> u64 {
        self.l1_table_offset + 8 * i
    }
    /// File offset of the L2 entry that maps guest offset `guest` (panics if its L2 table
    /// is not allocated).
    pub fn l2_entry_pos(&self, p: &Path, guest: u64) -> u64 {
        let cs = self.cluster_size();
        let l2_entries = cs / 8;
        let cluster = guest / cs;
        let l1_idx = cluster / l2_entries;
        let l1 = read_be_u64(p, self.l1_entry_pos(l1_idx)) & L1_OFFSET_MASK;
        assert_ne!(l1, 0, "no L2 table for guest offset {guest}");
        l1 + 8 * (cluster % l2_entries)
    }
    /// File offset of the refcount entry (16-bit refcounts only) for host cluster `idx`.
    pub fn refcount_entry_pos(&self, p: &Path, idx: u64) -> u64 {
        assert_eq!(self.refcount_order, 4, "only 16-bit refcounts are patched");
        let cs = self.cluster_size();
        let per_block = cs / 2;
        let block = read_be_u64(p, self.refcount_table_offset + 8 * (idx / per_block)) & !(cs - 1);
        assert_ne!(block, 0, "no refcount block for cluster {idx}");
        block + 2 * (idx % per_block)
    }
}

/// A small qcow2 made by qemu with data in the first clusters: (path, header).
pub fn qemu_qcow2_with_data(dir: &Path, name: &str, extra_create: &[&str]) -> (PathBuf, Qcow2Header) {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra_create);
    let ps = s(&p);
    args.push(&ps);
    args.push("4M");
    qemu_img(&args);
    qemu_io("qcow2", &p, &["write -P 0x5a 0 128K", "write -P 0x6b 1M 64K"]);
    let h = Qcow2Header::read(&p);
    (p, h)
}

/// Parses diskcast's or qemu's map JSON into (start, length, depth, present, zero, data).
pub fn map_entries(v: &Value) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    v.as_array()
        .unwrap_or_else(|| panic!("map JSON is not an array: {v}"))
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().expect("start"),
                e["length"].as_u64().expect("length"),
                e["depth"].as_u64().expect("depth"),
                e["present"].as_bool().expect("present"),
                e["zero"].as_bool().expect("zero"),
                e["data"].as_bool().expect("data"),
            )
        })
        .collect()
}

/// The guest's view of `qemu-img map --output=json` of `p`: (start, length, depth,
/// present, zero, data), ranges of the same kind merged, host offsets left out, so two
/// images that place their clusters differently compare equal.
pub fn qemu_map_view(p: &Path, fmt: &str) -> Vec<(u64, u64, u64, bool, bool, bool)> {
    let mut out: Vec<(u64, u64, u64, bool, bool, bool)> = Vec::new();
    for e in map_entries(&qemu_img(&["map", "--output=json", "-f", fmt, &s(p)]).json()) {
        match out.last_mut() {
            Some(l) if (l.2, l.3, l.4, l.5) == (e.2, e.3, e.4, e.5) => l.1 += e.1,
            _ => out.push(e),
        }
    }
    out
}

/// The map entry covering guest offset `off`.
pub fn map_at(entries: &[(u64, u64, u64, bool, bool, bool)], off: u64) -> (u64, bool, bool, bool) {
    let e = entries
        .iter()
        .find(|e| e.0 <= off && off < e.0 + e.1)
        .unwrap_or_else(|| panic!("no map entry covers offset {off}: {entries:?}"));
    (e.2, e.3, e.4, e.5)
}

/// Asserts map entries are contiguous from 0 to `size`.
pub fn assert_map_covers(entries: &[(u64, u64, u64, bool, bool, bool)], size: u64) {
    let mut pos = 0;
    for e in entries {
        assert_eq!(e.0, pos, "map has a gap or overlap at {pos}: {entries:?}");
        assert!(e.1 > 0, "empty map entry: {entries:?}");
        pos += e.1;
    }
    assert_eq!(pos, size, "map does not cover the image: {entries:?}");
}

/// A `qemu-io` that holds an image open read-write (as a running VM would) until dropped:
/// it reads commands from a pipe we keep open, and quits at its end.
pub struct QemuHolder {
    child: std::process::Child,
}

impl QemuHolder {
    /// Starts `qemu-io -f FMT FILE` and waits until qemu's own `qemu-img info` sees the
    /// image locked.
    pub fn start(fmt: &str, file: &Path) -> Self {
        let log = file.with_extension("qemu-io.log");
        let err = std::fs::File::create(&log).expect("create qemu-io log");
        let mut cmd = qemu_command("qemu-io");
        cmd.args(["-f", fmt, &s(file)]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(err);
        let child = cmd.spawn().expect("spawn qemu-io");
        let mut holder = QemuHolder { child };
        // Watched in /proc/locks, not by polling with qemu-img: its own brief locks would
        // make qemu-io's start fail.
        let start = Instant::now();
        while !lock_byte_held(file, 101) {
            if let Ok(Some(status)) = holder.child.try_wait() {
                panic!("qemu-io exited early ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "qemu-io never locked {}", file.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        holder
    }
}

/// True when some process holds a lock on byte `byte` of `file` (from /proc/locks).
pub fn lock_byte_held(file: &Path, byte: u64) -> bool {
    let ino = format!(":{} ", std::fs::metadata(file).map(|m| m.ino()).unwrap_or(0));
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().filter(|l| l.contains(&ino)).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(a), Some(b)) = (f.get(f.len().wrapping_sub(2)), f.last()) else { return false };
        matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if a <= byte && byte <= b)
    })
}

impl Drop for QemuHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // end of commands: qemu-io quits
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 30 s) until someone holds the "write" lock byte of `file`, then returns
/// what `qemu-img info` says about it.
pub fn wait_until_qemu_sees_lock(fmt: &str, file: &Path) -> String {
    let start = Instant::now();
    while !lock_byte_held(file, 101) {
        assert!(start.elapsed() < Duration::from_secs(30), "{} never got locked", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = qemu_img_status(&["info", "-f", fmt, &s(file)]);
    assert_ne!(r.code, Some(0), "qemu-img info should refuse a locked image\n{}", r.describe());
    r.stderr
}

/// Where `scripts/setup.sh` unpacks the test kernel: Debian's `linux-image-cloud-amd64`
/// (ext4, NVMe and virtio built in, so a guest boots without an initramfs).
pub fn test_kernel_dir() -> PathBuf {
    let base = std::env::var_os("DISKCAST_TEST_ASSETS").map(PathBuf::from);
    base.unwrap_or_else(|| PathBuf::from("/var/cache/diskcast-tests")).join("kernel/cloud-amd64")
}

/// The test kernel's `vmlinuz`; fails (never skips) when setup has not fetched it.
pub fn test_kernel() -> PathBuf {
    kernel_in(&test_kernel_dir())
}

/// Where `scripts/setup.sh` unpacks Debian's generic `linux-image-amd64`: AHCI, libata
/// and ext4 are modules (the cloud kernel has no AHCI driver at all).
pub fn generic_kernel_dir() -> PathBuf {
    test_kernel_dir().with_file_name("generic-amd64")
}

/// The `vmlinuz-*` under `DIR/boot`; fails (never skips) when setup has not fetched it.
pub fn kernel_in(dir: &Path) -> PathBuf {
    let boot = dir.join("boot");
    let found = std::fs::read_dir(&boot).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    });
    found.unwrap_or_else(|| panic!("no vmlinuz-* in {}: run scripts/setup.sh", boot.display()))
}

/// How a boot test attaches the disk and which firmware starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF (UEFI).
    Uefi,
    /// OVMF with Secure Boot enforced and Microsoft's KEK and db enrolled
    /// (`OVMF_CODE_4M.secboot.fd` with `OVMF_VARS_4M.ms.fd`; SMM on, flash writes from
    /// SMM only, as that firmware requires).
    SecureBoot,
    /// SeaBIOS, QEMU's default.
    Bios,
    /// SeaBIOS with its serial console: text the BIOS and loaders write to the screen
    /// (GRUB's "Welcome to GRUB!") is copied to the serial port. Not for loaders that
    /// print to the serial port themselves too: both copies would interleave.
    BiosScreen,
    /// AAVMF (Debian's qemu-efi-aarch64: UEFI for 64-bit ARM) on `qemu-system-aarch64 -M
    /// virt -cpu max`, whose serial port is a PL011 (`ttyAMA0`).
    Aavmf,
}

/// The bus a boot test puts the disk on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Nvme,
    Virtio,
    VirtioScsi,
    Pvscsi,
    Usb,
    Cdrom,
    /// A SATA disk on an AHCI controller of its own (`-device ahci`), not q35's built-in one.
    Ahci,
}

/// Where `scripts/setup.sh` unpacks Debian's `linux-image-cloud-arm64` (ext4 and NVMe
/// built in, virtio as modules).
pub fn arm64_kernel_dir() -> PathBuf {
    test_kernel_dir().with_file_name("cloud-arm64")
}

/// Where `scripts/setup.sh` unpacks Debian's arm64 `busybox-static` and `systemd-boot-efi`
/// (`bin/busybox`, `usr/lib/systemd/boot/efi/systemd-bootaa64.efi`).
pub fn arm64_userland_dir() -> PathBuf {
    test_kernel_dir().parent().unwrap().with_file_name("arm64-userland")
}

/// Boots `disk` (any format QEMU reads; `fmt` names it) under `qemu-system-x86_64`, or
/// `qemu-system-aarch64` for [`Firmware::Aavmf`] (TCG: KVM does not work on these
/// machines) and waits up to `timeout` for `marker` on the serial console. `Ok(console)` when it shows, `Err(last lines)` otherwise. The image is
/// never written (snapshot=on, or read-only for a CD).
pub fn boot_to_marker(
    disk: &Path,
    fmt: &str,
    fw: Firmware,
    bus: Bus,
    marker: &str,
    scratch: &Path,
    timeout: Duration,
) -> Result<String, String> {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let program = if fw == Firmware::Aavmf { "qemu-system-aarch64" } else { "qemu-system-x86_64" };
    let mut cmd = Command::new(program);
    match fw {
        Firmware::Aavmf => cmd.args(["-machine", "virt", "-cpu", "max"]),
        Firmware::SecureBoot => {
            cmd.args(["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"])
        }
        _ => cmd.args(["-machine", "q35"]),
    };
    cmd.args(["-accel", "tcg", "-m", "512", "-nodefaults", "-display", "none", "-no-reboot"]);
    cmd.args(["-serial", "stdio", "-monitor", "none"]);
    // UEFI firmware: its code and a fresh copy of its variable store, as pflash units 0 and 1.
    let pflash = match fw {
        Firmware::Uefi => Some(("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")),
        Firmware::SecureBoot => Some(("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd")),
        Firmware::Aavmf => Some(("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd")),
        Firmware::Bios | Firmware::BiosScreen => None,
    };
    if let Some((code, vars_template)) = pflash {
        let vars = scratch.join(format!("fw-vars-{}.fd", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::copy(vars_template, &vars)
            .unwrap_or_else(|e| panic!("{vars_template} (package ovmf or qemu-efi-aarch64): {e}"));
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"));
        cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
    }
    if fw == Firmware::BiosScreen {
        let port = scratch.join("sercon-port.bin");
        std::fs::write(&port, 0x3f8u16.to_le_bytes()).expect("sercon port file");
        cmd.arg("-fw_cfg").arg(format!("name=etc/sercon-port,file={}", port.display()));
    }
    let media = if bus == Bus::Cdrom { ",media=cdrom,readonly=on" } else { ",snapshot=on" };
    cmd.arg("-drive").arg(format!("file={},format={fmt},if=none,id=d0{media}", disk.display()));
    match bus {
        Bus::Nvme => cmd.args(["-device", "nvme,drive=d0,serial=diskcast0"]),
        Bus::Virtio => cmd.args(["-device", "virtio-blk-pci,drive=d0"]),
        Bus::VirtioScsi => cmd.args(["-device", "virtio-scsi-pci,id=s0", "-device", "scsi-hd,drive=d0,bus=s0.0"]),
        Bus::Pvscsi => cmd.args(["-device", "pvscsi,id=s0", "-device", "scsi-hd,drive=d0,bus=s0.0"]),
        Bus::Usb => cmd.args(["-device", "qemu-xhci", "-device", "usb-storage,drive=d0,removable=on"]),
        Bus::Cdrom => cmd.args(["-device", "ide-cd,drive=d0,bus=ide.0"]),
        Bus::Ahci => cmd.args(["-device", "ahci,id=a0", "-device", "ide-hd,drive=d0,bus=a0.0"]),
    };
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect(program);
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let m = marker.as_bytes().to_vec();
    // The marker counts once its line is complete (what follows it on the line, such as
    // `kernel=... root=...`, arrives in a later read as often as not), or once the guest
    // stops (EOF), or, for a marker no newline follows (a full-screen dialog),
    // `LINE_GRACE` after it was seen.
    const LINE_GRACE: Duration = Duration::from_secs(3);
    let marker_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_flag = marker_seen.clone();
    // SeaBIOS's serial console moves the cursor with escape sequences in mid-word; the
    // marker is looked for in the text without them.
    let screen = fw == Firmware::BiosScreen;
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut text = Vec::new();
        let mut in_escape = false;
        let mut buf = [0u8; 4096];
        let mut sent = false;
        let mut marker_end: Option<usize> = None;
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            for &b in &buf[..n] {
                match (in_escape, b) {
                    (_, 0x1b) if screen => in_escape = true,
                    (true, b'A'..=b'Z' | b'a'..=b'z') => in_escape = false,
                    (true, _) => {}
                    (false, _) => text.push(b),
                }
            }
            if marker_end.is_none() {
                marker_end = text.windows(m.len()).position(|w| w == m).map(|at| at + m.len());
                if marker_end.is_some() {
                    seen_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            if let Some(end) = marker_end
                && !sent
                && text[end..].contains(&b'\n')
            {
                let _ = tx.send(true);
                sent = true;
            }
        }
        if !sent {
            let _ = tx.send(marker_end.is_some());
        }
        seen
    });
    let deadline = Instant::now() + timeout;
    let mut grace_from: Option<Instant> = None;
    let found = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(found) => break found,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let seen = marker_seen.load(std::sync::atomic::Ordering::SeqCst);
                if seen && grace_from.get_or_insert_with(Instant::now).elapsed() >= LINE_GRACE {
                    break true;
                }
                if Instant::now() >= deadline {
                    break seen;
                }
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let seen = String::from_utf8_lossy(&reader.join().unwrap_or_default()).replace('\r', "");
    if found {
        Ok(seen)
    } else {
        let tail: Vec<&str> = seen.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{marker:?} not on the serial console of {} ({fw:?}/{bus:?}/{fmt}); last lines:\n{}",
            disk.display(),
            tail.join("\n")
        ))
    }
}

/// Runs an oracle tool and returns its stdout; fails the test when it cannot run or
/// exits non-zero, showing what it printed.
pub fn tool_out(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an oracle tool under `timeout` (300 s) and returns stdout and stderr together
/// (checkers such as sgdisk and fsck report on either); fails the test when it cannot run
/// or exits non-zero.
pub fn tool_text(name: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["-k", "5", "300", name])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} is required: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} {args:?} failed ({:?}):\n{text}", out.status.code());
    text
}

/// A loop device over a file, detached when dropped (also when a test fails).
pub struct Loop {
    pub dev: String,
}

impl Loop {
    /// `losetup -f --show -P [-r] FILE`: partitions scanned, read-only with `ro`.
    pub fn attach(file: &Path, ro: bool) -> Loop {
        assert!(nix_is_root(), "block device tests need root (loop devices)");
        let mut args = vec!["-f", "--show", "-P"];
        if ro {
            args.push("-r");
        }
        let f = s(file);
        args.push(&f);
        let dev = tool_out("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Loop { dev }
    }

    /// The same, or `None` with the reason printed where loop devices cannot be made
    /// (not root, no loop driver): for tests that only make sense on a block device.
    pub fn try_attach(file: &Path, ro: bool) -> Option<Loop> {
        loop_devices_available().then(|| Loop::attach(file, ro))
    }

    /// Partition `n`'s node. A kernel built without the GPT parser makes none on its
    /// own: then `partx -a` reads the table and adds the partitions.
    pub fn part(&self, n: u32) -> String {
        let p = format!("{}p{n}", self.dev);
        let start = Instant::now();
        let mut asked = false;
        while !Path::new(&p).exists() {
            if !asked && start.elapsed() > Duration::from_secs(1) {
                tool_text("partx", &["-a", &self.dev]);
                asked = true;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{p} never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A mount, unmounted when dropped.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(dev: &str, dir: &Path) -> Mount {
        Mount::with_options(dev, dir, &[])
    }

    /// `mount [ARGS] SRC DIR` (`-o loop,ro,norecovery` and the like).
    pub fn with_options(src: &str, dir: &Path, args: &[&str]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let d = s(dir);
        let mut all = args.to_vec();
        all.extend([src, d.as_str()]);
        tool_text("mount", &all);
        Mount { dir: dir.to_path_buf() }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// Whether this test can make loop devices; if not, prints why (the test then skips
/// what needs them).
pub fn loop_devices_available() -> bool {
    let missing = if !nix_is_root() {
        "loop devices need root"
    } else if !Path::new("/dev/loop-control").exists() {
        "no loop device support here (/dev/loop-control is missing)"
    } else {
        return true;
    };
    // CI runs as root with loop devices: there a skip would hide a failure.
    assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "CI must run the loop device tests: {missing}");
    eprintln!("skipped: {missing}");
    false
}

pub fn nix_is_root() -> bool {
    tool_out("id", &["-u"]).trim() == "0"
}

/// A 64 MiB disk file with a GPT (sgdisk) whose one partition holds ext4 (mkfs.ext4,
/// everything initialised at once so nothing writes to it later behind our back).
pub fn gpt_ext4_disk(dir: &Path) -> (PathBuf, Loop) {
    let disk = dir.join("disk.img");
    qemu_img(&["create", "-q", "-f", "raw", &s(&disk), "64M"]);
    tool_text("sgdisk", &["-n", "1:2048:0", "-t", "1:8300", &s(&disk)]);
    let lo = Loop::attach(&disk, false);
    let p1 = lo.part(1);
    tool_text("mkfs.ext4", &["-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", &p1]);
    (disk, lo)
}

/// A file of `len` bytes that are not zeros anywhere (a 1 MiB pseudo-random block
/// repeated with its index in front), as a stick that held something else would be.
pub fn random_file(path: &Path, len: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    let mut block = pseudo_random(MIB as usize, 17);
    let mut off = 0;
    while off < len {
        block[..8].copy_from_slice(&off.to_le_bytes());
        let n = (len - off).min(MIB) as usize;
        f.write_all_at(&block[..n], off).unwrap();
        off += MIB;
    }
}

/// Runs `script` with `bash -euc`, failing the test (with the script and its stderr) when
/// it fails.
pub fn sh(script: &str) {
    let out = Command::new("bash").args(["-euc", script]).output().expect("bash");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A UEFI loader that prints `marker` on the serial port and halts (GRUB built standalone
/// by grub-mkstandalone), as `work/BOOTX64.EFI`, and a FAT image `efi_img` holding it as
/// `EFI/BOOT/BOOTX64.EFI` (mkfs.fat and mtools): a disc's El Torito EFI boot image.
pub fn marker_efi_image(work: &Path, efi_img: &Path, marker: &str) {
    std::fs::create_dir_all(efi_img.parent().unwrap()).unwrap();
    sh(&format!(
        "cd '{t}'
         printf 'serial --unit=0 --speed=115200\\nterminal_output serial console\\necho {marker}\\nhalt\\n' > grub.cfg
         grub-mkstandalone -O x86_64-efi --modules='serial echo halt' --locales= --fonts= --themes= \\
           -o BOOTX64.EFI boot/grub/grub.cfg=grub.cfg
         mkfs.fat -C '{img}' 4096 >/dev/null
         MTOOLS_SKIP_CHECK=1 mmd -i '{img}' ::/EFI ::/EFI/BOOT
         MTOOLS_SKIP_CHECK=1 mcopy -i '{img}' BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI",
        t = work.display(),
        img = efi_img.display(),
    ));
}
