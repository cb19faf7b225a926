//! ext3/ext4 filesystems left with `needs_recovery` and committed jbd2 transactions,
//! read with the journal replayed in memory. The transactions are real jbd2 ones written
//! by e2fsprogs (`debugfs -w`: `jo [-c]`, `jw -b BLOCKS FILE`, `jw -r REVOKE`, `jw -c` for
//! an uncommitted one, `jc`), holding the blocks `debugfs write` changed on a copy of the
//! filesystem; the kernel's own replay (mounting a copy from a read-write loop device)
//! and e2fsck -fy's (on another copy, read back with `debugfs rdump`) are the oracles.
//! The image itself is never written.

use crate::support::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const BS: usize = 4096;

fn debugfs(img: &Path, args: &[&str]) -> String {
    let out = Command::new("debugfs").args(args).arg(img).output().expect("debugfs is required (e2fsprogs)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "debugfs {args:?}: {text}");
    text
}

/// The physical block of logical block `n` of `what` (a path or `<8>`), from debugfs.
fn bmap(img: &Path, what: &str, n: u64) -> u64 {
    let t = debugfs(img, &["-R", &format!("bmap {what} {n}")]);
    t.lines().filter_map(|l| l.trim().parse().ok()).next().unwrap_or_else(|| panic!("bmap {what} {n}: {t}"))
}

/// Every file under `root`: path -> (kind and mode, contents or link target).
fn snapshot(root: &Path) -> View {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "lost+found" {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let kind = format!("{:o}", md.mode());
            let body = if md.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
            } else if md.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else {
                read(&p)
            };
            out.insert(rel, (kind, body));
        }
    }
    out
}

struct Journaled {
    dir: tempfile::TempDir,
    img: std::path::PathBuf,
    /// The files a correct replay shows.
    want: View,
}

/// A filesystem of `mkfs` (`mkfs.ext4`, `mkfs.ext3`) whose journal holds, as real jbd2
/// transactions: T1 a new 300 kB file and the removal of another (the blocks `debugfs
/// write`/`rm` changed on a copy), T2 junk over `victim`'s first block, T3 revoking that
/// block, and an uncommitted T4 with junk over `victim`'s second block. Replayed
/// correctly, `victim` is intact and `extra` present.
fn journaled(mkfs: &str, checksums: bool) -> Journaled {
    let dir = tmp();
    let d = dir.path();
    let src = d.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    write_file(&src.join("etc/hostname"), b"journal-box\n");
    write_file(&src.join("etc/gone"), b"removed by the journal\n");
    write_file(&src.join("etc/victim"), &pseudo_random(200_000, 7));
    std::os::unix::fs::symlink("etc/hostname", src.join("link")).unwrap();
    let img = d.join("fs.img");
    tool_text(mkfs, &["-q", "-F", "-b", "4096", "-d", &s(&src), &s(&img), "32M"]);
    // The change, made on a copy without the journal.
    let changed = d.join("changed.img");
    std::fs::copy(&img, &changed).unwrap();
    let extra = d.join("extra.bin");
    write_file(&extra, &pseudo_random(300_000, 8));
    debugfs(&changed, &["-w", "-R", &format!("write {} /etc/extra", s(&extra))]);
    debugfs(&changed, &["-w", "-R", "rm /etc/gone"]);
    let (a, b) = (read(&img), read(&changed));
    let blocks: Vec<usize> =
        (0..a.len() / BS).filter(|&i| a[i * BS..(i + 1) * BS] != b[i * BS..(i + 1) * BS]).collect();
    assert!(blocks.len() > 10, "debugfs changed only {blocks:?}");
    let t1 = d.join("t1.bin");
    write_file(&t1, &blocks.iter().flat_map(|&i| b[i * BS..(i + 1) * BS].to_vec()).collect::<Vec<u8>>());
    let list: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
    let (v0, v1) = (bmap(&img, "/etc/victim", 0), bmap(&img, "/etc/victim", 1));
    let junk = d.join("junk.bin");
    write_file(&junk, &vec![0xA5; BS]);
    let script = d.join("cmds");
    let cmds = format!(
        "jo{}\njw -b {} {}\njw -b {v0} {}\njw -r {v0} /dev/null\njw -c -b {v1} {}\njc\n",
        if checksums { " -c" } else { "" },
        list.join(","),
        s(&t1),
        s(&junk),
        s(&junk)
    );
    write_file(&script, cmds.as_bytes());
    debugfs(&img, &["-w", "-f", &s(&script)]);
    let h = tool_text("dumpe2fs", &["-h", &s(&img)]);
    assert!(h.contains("needs_recovery"), "{h}");
    assert_eq!(h.contains("journal_checksum_v3"), checksums, "{h}");
    for p in [&changed, &t1, &junk, &script, &extra] {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(src.join("etc/gone")).unwrap();
    let mut want = snapshot(&src);
    want.insert("etc/extra".into(), ("100644".into(), pseudo_random(300_000, 8)));
    Journaled { dir, img, want }
}

/// The tree the kernel sees after its own replay, on a copy.
fn kernel_view(j: &Journaled) -> View {
    let copy = j.dir.path().join("kernel.img");
    std::fs::copy(&j.img, &copy).unwrap();
    let lo = Loop::attach(&copy, false);
    let m = Mount::new(&lo.dev, &j.dir.path().join("mnt"));
    let v = snapshot(&m.dir);
    drop(m);
    drop(lo);
    std::fs::remove_file(&copy).unwrap();
    v
}

/// The tree after e2fsck -fy replays the journal on a copy, read by debugfs rdump.
fn e2fsck_view(j: &Journaled) -> View {
    let copy = j.dir.path().join("fsck.img");
    std::fs::copy(&j.img, &copy).unwrap();
    let out = Command::new("e2fsck").args(["-fy", &s(&copy)]).output().unwrap();
    // 0: clean, 1: errors corrected (the replay itself counts as a change).
    assert!(out.status.code().is_some_and(|c| c <= 1), "e2fsck: {}", String::from_utf8_lossy(&out.stdout));
    let dump = j.dir.path().join("rdump");
    std::fs::create_dir_all(&dump).unwrap();
    debugfs(&copy, &["-R", &format!("rdump / {}", s(&dump))]);
    std::fs::remove_file(&copy).unwrap();
    snapshot(&dump)
}

fn ours(j: &Journaled, spec: &str) -> View {
    let out = j.dir.path().join(format!("ours-{}", j.dir.path().read_dir().unwrap().count()));
    dc_ok(&["extract", spec, &s(&out)]);
    snapshot(&out)
}

type View = BTreeMap<String, (String, Vec<u8>)>;

/// `got` holds the same names as `want` with the same contents (and with `modes`, the
/// same modes), each difference named without dumping the bytes.
fn same(got: &View, want: &View, modes: bool, who: &str) {
    let names = |m: &View| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "names differ from {who}");
    for (k, v) in want {
        assert!(got[k].1 == v.1, "{k}: contents differ from {who}");
        assert!(!modes || got[k].0 == v.0, "{k}: mode {} where {who} has {}", got[k].0, v.0);
    }
}

fn check(mkfs: &str, checksums: bool) {
    check_journal(journaled(mkfs, checksums));
}

fn check_journal(j: Journaled) {
    let before = read(&j.img);
    let q = j.dir.path().join("fs.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&j.img), &s(&q)]);
    let got = ours(&j, &s(&q));
    same(&got, &j.want, false, "the files the transactions hold");
    same(&got, &kernel_view(&j), true, "the kernel's replay");
    same(&got, &e2fsck_view(&j), false, "e2fsck -fy's replay");
    assert!(read(&j.img) == before, "the image was written");
    assert!(tool_text("dumpe2fs", &["-h", &s(&j.img)]).contains("needs_recovery"));
}

#[test]
fn ext4_with_checksummed_journal_reads_as_the_kernel_and_e2fsck_replay_it() {
    check("mkfs.ext4", true);
}

#[test]
fn ext3_journal_reads_as_the_kernel_and_e2fsck_replay_it() {
    check("mkfs.ext3", false);
}

/// The log moved so that it starts 40 blocks before the journal's end and wraps to
/// `s_first`: the blocks are the same (their checksums do not depend on where they sit),
/// the superblock's `s_start` points at the new start. No checksums here, so the jbd2
/// superblock needs no new one.
#[test]
fn a_log_that_wraps_past_the_journal_end_replays_as_the_kernel_does() {
    let j = journaled("mkfs.ext4", false);
    let sb = bmap(&j.img, "<8>", 0);
    let b = read(&j.img);
    let be = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as u64;
    let at = sb as usize * BS;
    let (maxlen, first, start) = (be(at + 0x10), be(at + 0x14), be(at + 0x1C));
    assert_eq!((first, start), (1, 1));
    // Every journal block's place on the disk, from one debugfs run.
    let script = j.dir.path().join("bmaps");
    let lines: String = (0..maxlen).map(|n| format!("bmap <8> {n}\n")).collect();
    write_file(&script, lines.as_bytes());
    let out = debugfs(&j.img, &["-f", &s(&script)]);
    let phys: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(phys.len() as u64, maxlen, "{out}");
    let new_start = maxlen - 40;
    let blocks: Vec<Vec<u8>> =
        (1..200usize).map(|n| b[phys[n] as usize * BS..(phys[n] as usize + 1) * BS].to_vec()).collect();
    for (i, block) in blocks.iter().enumerate() {
        let mut pos = new_start + i as u64;
        if pos >= maxlen {
            pos = pos - maxlen + first;
        }
        patch(&j.img, phys[pos as usize] * BS as u64, block);
    }
    patch(&j.img, sb * BS as u64 + 0x1C, &(new_start as u32).to_be_bytes());
    check_journal(j);
}

#[test]
fn hostile_journals_are_refused_naming_the_field() {
    let j = journaled("mkfs.ext4", true);
    let d = j.dir.path();
    // Journal block 1 is T1's descriptor, 2.. its data, then its commit block.
    let first_data = bmap(&j.img, "<8>", 2);
    let case = |name: &str, at: u64, bytes: &[u8], words: &[&str]| {
        let img = d.join(format!("{name}.img"));
        std::fs::copy(&j.img, &img).unwrap();
        patch(&img, at, bytes);
        dc_bounded(&["ls", &s(&img), "/etc"], 20, 512 << 20).run.expect_diskcast_error().expect_stderr_all(words);
    };
    case("data", first_data * BS as u64 + 100, b"\xff\xfe", &["t_checksum"]);
    // The commit block of T1 follows its data blocks: find it by its header.
    let b = read(&j.img);
    let commit = (3..200u64)
        .find(|&n| {
            let at = (bmap(&j.img, "<8>", n) as usize) * BS;
            b[at..at + 4] == [0xC0, 0x3B, 0x39, 0x98] && b[at + 4..at + 8] == [0, 0, 0, 2]
        })
        .unwrap();
    case("commit", bmap(&j.img, "<8>", commit) * BS as u64 + 40, b"\x01", &["h_chksum"]);
    let sb = bmap(&j.img, "<8>", 0) * BS as u64;
    case("sb", sb + 0x18, b"\x00\x00\x00\x09", &["s_checksum"]);

    // Without checksums: a log claiming more blocks than the journal's (s_maxlen cut to
    // 8 under a 20-block transaction) ends with an error, not a loop.
    let plain = journaled("mkfs.ext4", false);
    let img = d.join("short.img");
    std::fs::copy(&plain.img, &img).unwrap();
    patch(&img, bmap(&plain.img, "<8>", 0) * BS as u64 + 0x10, &8u32.to_be_bytes());
    dc_bounded(&["ls", &s(&img), "/etc"], 20, 512 << 20)
        .run
        .expect_diskcast_error()
        .expect_stderr_all(&["looping log"]);
}

#[test]
fn an_external_journal_is_refused_by_name() {
    let d = tmp();
    let (jdev, fs) = (d.path().join("journal.img"), d.path().join("fs.img"));
    tool_text("mke2fs", &["-q", "-F", "-O", "journal_dev", "-b", "4096", &s(&jdev), "8M"]);
    // mke2fs takes a journal device only as a block device.
    let lo = Loop::attach(&jdev, false);
    tool_text("mkfs.ext4", &["-q", "-F", "-b", "4096", "-J", &format!("device={}", lo.dev), &s(&fs), "32M"]);
    drop(lo);
    // Mark it as needing recovery as a crash would leave it (debugfs's ssv sets the flag).
    debugfs(&fs, &["-w", "-R", "feature needs_recovery"]);
    dc(&["ls", &s(&fs)]).expect_diskcast_error().expect_stderr_all(&["external device", "s_journal_inum"]);
}
