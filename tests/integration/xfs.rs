//! XFS end to end: filesystems made by mkfs.xfs (xfsprogs) and filled by the kernel's own
//! driver through a loop mount, or by mkfs.xfs from a protofile (v4, which this kernel
//! no longer mounts, and v5), read by `ls`, `cat` and `extract` and judged by what the
//! kernel shows (`mount -o ro,norecovery`: content, modes, owners, nanosecond times up to
//! 2100, every xattr and ACL through getfattr, symlinks, devices, hard links), by
//! `xfs_db -r` (which forks are B+trees, directories node form) and by `xfs_repair -n`
//! (every test image is sound). A dirty log (xfs_io's shutdown) is replayed in memory and
//! read as the kernel reads a copy after its own replay; hostile images and logs made with `xfs_db -x` fail with a clear
//! error within bounds. Runs as root (loop devices, mounts, owners, devices).

use crate::support::*;
use diskcast_testkit::manifest::{Compare, assert_same, manifest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Seconds a hostile `ls` may take, its peak memory and address space.
const HOSTILE_SECS: u64 = 60;
const HOSTILE_RSS: u64 = 200 * MIB;
const HOSTILE_VM: u64 = 2 * GIB;

/// A new empty XFS image file of 300 MiB (mkfs.xfs's smallest), sparse.
fn mkfs(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img).unwrap().set_len(300 * MIB).unwrap();
    let mut all = vec!["-q", "-f"];
    all.extend_from_slice(args);
    let i = s(&img);
    all.push(&i);
    tool_text("mkfs.xfs", &all);
    img
}

/// `xfs_repair -n`: exit 0 when the filesystem is sound.
fn repair_clean(img: &Path) {
    tool_text("xfs_repair", &["-n", &s(img)]);
}

/// `xfs_db -r -c CMD...` output.
fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut args = vec!["-r".to_string()];
    for c in cmds {
        args.extend(["-c".to_string(), c.to_string()]);
    }
    args.push(s(img));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    tool_text("xfs_db", &a)
}

/// `xfs_db -x`: changes one field (the CRC recomputed, as xfs_db does) of inode `ino`.
fn xfs_db_write(img: &Path, ino: u64, field: &str, value: &str) {
    tool_text("xfs_db", &["-x", "-c", &format!("inode {ino}"), "-c", &format!("write {field} {value}"), &s(img)]);
}

/// The inode number of `path` (xfs_db's own lookup).
fn ino_of(img: &Path, path: &str) -> u64 {
    let out = xfs_db(img, &[&format!("path {path}"), "stack"]);
    let n = out.split("inode ").nth(1).unwrap_or_else(|| panic!("xfs_db path {path}: {out}"));
    n.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// A field of inode `ino` as xfs_db prints it (`core.format = 3 (btree)` -> `3 (btree)`).
fn inode_field(img: &Path, ino: u64, field: &str) -> String {
    let out = xfs_db(img, &[&format!("inode {ino}"), &format!("print {field}")]);
    out.split(" = ").nth(1).unwrap_or_else(|| panic!("{field}: {out}")).trim().to_string()
}

/// Loop-mounts `img` at `dir` with `opts`, unmounted when dropped.
fn xfs_mount(img: &Path, dir: &Path, opts: &str) -> Mount {
    Mount::with_options(&s(img), dir, &["-t", "xfs", "-o", &format!("loop,{opts}")])
}

/// Fills a mounted XFS through the kernel with every kind of entry and every fork form.
fn populate(root: &Path) {
    let p = |rel: &str| root.join(rel);
    std::fs::create_dir_all(p("etc/conf.d")).unwrap();
    std::fs::create_dir_all(p("big")).unwrap();
    std::fs::create_dir_all(p("empty")).unwrap();
    write_file(&p("etc/hostname"), b"xfs-box\n");
    write_file(&p("etc/conf.d/random"), &pseudo_random(300_000, 5));
    // Sparse: holes at the start, in the middle and at the end.
    let sparse = std::fs::File::create(p("sparse")).unwrap();
    sparse.set_len(5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &pseudo_random(200_000, 7), 1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail", (5 << 20) - 4).unwrap();
    drop(sparse);
    // Fragmented: one 4 KiB block every 8 KiB, 600 extents: a B+tree data fork.
    let frag = std::fs::File::create(p("fragmented")).unwrap();
    for i in 0..600u64 {
        std::os::unix::fs::FileExt::write_all_at(&frag, &pseudo_random(4096, i), i * 8192).unwrap();
    }
    frag.sync_all().unwrap();
    drop(frag);
    // Preallocated (unwritten extents read as zeros) with data written in the middle.
    sh(&format!(
        "fallocate -l 3M '{f}' && printf 'middle' | dd of='{f}' bs=1 seek=1500000 conv=notrunc status=none",
        f = p("prealloc").display()
    ));
    // A reflinked copy: shared extents.
    sh(&format!(
        "cp --reflink=always '{a}' '{b}'",
        a = p("etc/conf.d/random").display(),
        b = p("etc/conf.d/random.reflink").display()
    ));
    std::fs::hard_link(p("etc/hostname"), p("etc/hostname.bak")).unwrap();
    std::os::unix::fs::symlink("etc/hostname", p("name")).unwrap();
    std::os::unix::fs::symlink("/etc/conf.d", p("abs")).unwrap();
    std::os::unix::fs::symlink("x".repeat(1000), p("long-target")).unwrap();
    tool_text("mkfifo", &[&s(&p("fifo"))]);
    tool_text("mknod", &[&s(&p("null")), "c", "1", "3"]);
    tool_text("mknod", &[&s(&p("sda1")), "b", "8", "1"]);
    tool_text("mknod", &[&s(&p("big-minor")), "c", "240", "70000"]);
    sh(&format!("python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{}\")'", p("sock").display()));
    write_file(&p(&format!("etc/{}", "L".repeat(255))), b"long name\n");
    // Thousands of entries: a node-form directory (data, leaf and free-index blocks).
    for i in 0..5000 {
        write_file(&p(&format!("big/entry-{i:05}-{}", "n".repeat(40))), format!("{i}").as_bytes());
    }
    // Owners, special bits, times (bigtime: 2100), xattrs in every form, ACLs, caps.
    tool_text("chown", &["1234:5678", &s(&p("etc/hostname"))]);
    tool_text("chown", &["-h", "42:43", &s(&p("name"))]);
    std::fs::set_permissions(p("sparse"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(p("etc/conf.d"), std::os::unix::fs::PermissionsExt::from_mode(0o2750)).unwrap();
    tool_text("setfattr", &["-n", "user.small", "-v", "1", &s(&p("sparse"))]);
    tool_text("setfattr", &["-n", "user.dir", "-v", "d", &s(&p("etc"))]);
    tool_text("setfattr", &["-n", "trusted.t", "-v", "t", &s(&p("etc/hostname"))]);
    tool_text("setfattr", &["-n", "user.remote", "-v", &"r".repeat(20_000), &s(&p("etc/hostname"))]);
    for i in 0..200 {
        tool_text("setfattr", &["-n", &format!("user.many-{i:03}"), "-v", &"m".repeat(i + 1), &s(&p("fragmented"))]);
    }
    tool_text("setcap", &["cap_net_raw+ep", &s(&p("etc/conf.d/random"))]);
    tool_text("setfacl", &["-m", "u:1000:rw,g:2000:r", &s(&p("etc/hostname"))]);
    tool_text("setfacl", &["-d", "-m", "u:1000:rwx", &s(&p("etc/conf.d"))]);
    for (f, t) in [
        ("etc/hostname", "2100-01-02 03:04:05.123456789"),
        ("name", "@1500000000"),
        ("big", "@1400000000.5"),
        ("empty", "1960-05-06 07:08:09"),
    ] {
        tool_text("touch", &["-h", "-d", t, &s(&p(f))]);
    }
}

/// Every xattr of every entry but the root, as `getfattr -R -d -m - -e hex` prints it
/// (paths relative to `root`).
fn all_xattrs(root: &Path) -> String {
    let out = Command::new("getfattr")
        .current_dir(root)
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "."])
        .output()
        .expect("getfattr (apt-get install attr)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Blocks of "# file: PATH" then its attributes, sorted by path; the root's left out
    // (an extraction target's own xattrs are not the filesystem's).
    let mut blocks: Vec<String> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|b| !b.is_empty() && !b.starts_with("# file: .\n"))
        .map(String::from)
        .collect();
    blocks.sort();
    blocks.join("\n\n")
}

/// Extracts `img` with diskcast onto a fresh XFS (ext4 holds at most a block of xattrs
/// per file) and compares it with what the kernel shows of `img`. Sockets are never
/// extracted (diskcast skips them, naming each): `ls` must list them instead.
fn judge_against_kernel(d: &Path, img: &Path, what: &str) {
    judge_against(d, img, img, what)
}

/// Extracts `img` with diskcast and compares it with what the kernel shows of `kernel`.
fn judge_against(d: &Path, img: &Path, kernel: &Path, what: &str) {
    let dst = mkfs(d, &format!("dst-{what}.img"), &[]);
    let target = xfs_mount(&dst, &d.join(format!("dst-{what}")), "rw");
    let ours = target.dir.join("out");
    dc_ok(&["extract", "--privileged", &s(img), &s(&ours)]);
    let m = xfs_mount(kernel, &d.join(format!("kernel-{what}")), "ro,norecovery");
    let mut want = manifest(&m.dir);
    let sockets: Vec<Vec<u8>> = want.iter().filter(|(_, e)| e.kind == 's').map(|(p, _)| p.clone()).collect();
    for p in &sockets {
        want.remove(p);
        let name = String::from_utf8_lossy(p);
        let ls = dc_ok(&["ls", "-l", &s(img), &name]).stdout_str();
        assert!(ls.starts_with('s'), "{name} is a socket: {ls}");
    }
    assert_same(&want, &manifest(&ours), Compare::default(), what);
    assert_eq!(all_xattrs(&m.dir), all_xattrs(&ours), "{what}: xattrs, ACLs, capabilities");
    drop(m);
    drop(target);
    std::fs::remove_file(&dst).unwrap();
}

#[test]
fn kernel_made_v5_tree_reads_as_the_kernel_shows_it() {
    let d = tmp();
    let img = mkfs(d.path(), "fs.img", &[]);
    {
        let m = xfs_mount(&img, &d.path().join("rw"), "rw");
        populate(&m.dir);
    }
    repair_clean(&img);
    // The forms this test is about, as xfs_db sees them.
    let sb = xfs_db(&img, &["sb 0", "print versionnum features_incompat"]);
    assert!(sb.contains("features_incompat = 0xb"), "v5 with ftype, sparse inodes and bigtime: {sb}");
    assert_eq!(inode_field(&img, ino_of(&img, "/fragmented"), "core.format"), "3 (btree)");
    assert_eq!(inode_field(&img, ino_of(&img, "/fragmented"), "core.aformat"), "2 (extents)");
    let big = ino_of(&img, "/big");
    // Its blocks interleave with its files' data: with this kernel a B+tree fork.
    let form = inode_field(&img, big, "core.format");
    assert!(["2 (extents)", "3 (btree)"].contains(&form.as_str()), "{form}");
    let bmap = xfs_db(&img, &[&format!("inode {big}"), "bmap"]);
    assert!(bmap.contains("data offset 16777216"), "big/ has a free-index block (node form): {bmap}");
    assert_eq!(inode_field(&img, ino_of(&img, "/etc/hostname"), "core.aformat"), "2 (extents)");
    judge_against_kernel(d.path(), &img, "v5");
    // `ls` and `cat` read the same filesystem.
    let ls = dc_ok(&["ls", "-l", &s(&img), "etc"]).stdout_str();
    assert!(ls.contains("1234/5678") && ls.contains("2100-01-02"), "{ls}");
    let cat = dc_ok(&["cat", &s(&img), "etc/conf.d/random.reflink"]).stdout;
    assert_eq!(cat, pseudo_random(300_000, 5));
}

/// A protofile (mkfs.xfs -p) describing `src`, as mkfs.xfs's manual documents them.
fn protofile(src: &Path, out: &Path) {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, depth: usize, out: &mut String) {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let pad = " ".repeat(depth);
            let perm = format!("{:03o}", md.mode() & 0o777);
            let (u, g) = (md.uid(), md.gid());
            if md.is_dir() {
                out.push_str(&format!("{pad}{name} d--{perm} {u} {g}\n"));
                walk(&p, depth + 1, out);
                out.push_str(&format!("{pad}$\n"));
            } else if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push_str(&format!("{pad}{name} l--{perm} {u} {g} {}\n", t.display()));
            } else {
                out.push_str(&format!("{pad}{name} ---{perm} {u} {g} {}\n", p.display()));
            }
        }
    }
    let mut text = String::from("/dev/null\n0 0\nd--755 0 0\n");
    walk(src, 1, &mut text);
    text.push_str("$\n");
    std::fs::write(out, text).unwrap();
}

#[test]
fn protofile_trees_read_on_v4_and_v5() {
    // v4 (no CRCs; this kernel no longer mounts it) and v5 with 1 KiB blocks and 8 KiB
    // directory blocks, both filled by mkfs.xfs itself: judged against the source tree.
    let d = tmp();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    write_file(&src.join("a"), &pseudo_random(100_000, 1));
    write_file(&src.join("dir/sub/b"), b"bee\n");
    for i in 0..800 {
        write_file(&src.join(format!("dir/f{i:04}")), format!("{i}\n").as_bytes());
    }
    std::os::unix::fs::symlink("dir/sub/b", src.join("link")).unwrap();
    // In-inode symlinks only: mkfs.xfs 6.1 writes remote symlink blocks from a protofile
    // that its own xfs_repair rejects (bad CRC); the kernel-made test has remote ones.
    std::os::unix::fs::symlink("z".repeat(150), src.join("long")).unwrap();
    tool_text("chown", &["-R", "77:88", &s(&src.join("dir"))]);
    let proto = d.path().join("proto");
    protofile(&src, &proto);
    for (name, args) in
        [("v4.img", vec!["-m", "crc=0", "-n", "ftype=0"]), ("v5-1k.img", vec!["-b", "size=1024", "-n", "size=8192"])]
    {
        let mut a = args.clone();
        let pf = s(&proto);
        a.extend(["-p", &pf]);
        let img = mkfs(d.path(), name, &a);
        repair_clean(&img);
        let out = d.path().join(format!("out-{name}"));
        dc_ok(&["extract", &s(&img), &s(&out)]);
        let cmp = Compare { owners: true, mtime_ns: false, dir_mtimes: false, xattrs: false };
        let mut got = manifest(&out);
        let mut want = manifest(&src);
        // mkfs.xfs stamps every inode with the time it ran.
        for e in got.values_mut().chain(want.values_mut()) {
            e.mtime = (0, 0);
        }
        assert_same(&want, &got, cmp, name);
    }
}

#[test]
fn xfs_root_of_a_gpt_disk_in_qcow2_is_listed() {
    let d = tmp();
    let disk = d.path().join("disk.raw");
    std::fs::File::create(&disk).unwrap().set_len(340 * MIB).unwrap();
    tool_text("sgdisk", &["-n", "1:2048:+16M", "-t", "1:ef00", "-n", "2:0:0", "-t", "2:8300", &s(&disk)]);
    let want_pkgs: Vec<String>;
    {
        let lo = Loop::attach(&disk, false);
        let p2 = lo.part(2);
        tool_text("mkfs.fat", &[&lo.part(1)]);
        tool_text("mkfs.xfs", &["-q", &p2]);
        let m = Mount::new(&p2, &d.path().join("m"));
        std::fs::create_dir_all(m.dir.join("etc")).unwrap();
        write_file(&m.dir.join("etc/os-release"), b"ID=rocky\nVERSION_ID=9\n");
        std::fs::create_dir_all(m.dir.join("var/lib/dpkg")).unwrap();
        write_file(
            &m.dir.join("var/lib/dpkg/status"),
            b"Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-1\n\n\
              Package: old\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n\n\
              Package: zlib1g\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:1.2.13-1\n",
        );
        // What dpkg itself says is installed, for `inspect` below.
        let admindir = format!("--admindir={}", s(&m.dir.join("var/lib/dpkg")));
        let listed = tool_text("dpkg-query", &[&admindir, "-W", "-f", "${db:Status-Status} ${Package} ${Version}\n"]);
        want_pkgs = listed.lines().filter_map(|l| l.strip_prefix("installed ")).map(String::from).collect();
        drop(m);
    }
    let qcow = d.path().join("disk.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&disk), &s(&qcow)]);
    std::fs::remove_file(&disk).unwrap();
    let ls = dc_ok(&["ls", &format!("{}:2", s(&qcow)), "etc"]).stdout_str();
    assert!(ls.contains("os-release"), "{ls}");
    // Without :2 the XFS root is the partition chosen, not the ESP.
    let cat = dc_ok(&["cat", &s(&qcow), "etc/os-release"]).stdout;
    assert_eq!(cat, b"ID=rocky\nVERSION_ID=9\n");
    // `inspect` reads the XFS root's packages as dpkg-query does.
    let j: serde_json::Value =
        serde_json::from_str(&dc_ok(&["inspect", "--output", "json", &s(&qcow)]).stdout_str()).unwrap();
    let mut got: Vec<String> = j["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "deb")
        .map(|p| format!("{} {}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect();
    got.sort();
    let mut want = want_pkgs.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(got.len(), 2, "{got:?}");
}

/// A v5 image whose log is dirty: the kernel's driver wrote files, rewrote one, deleted
/// one, made a directory (more entries than fit in the inode), xattrs (in the inode and a
/// remote value) and a symlink after a sync, flushed one file's data, then `xfs_io`'s
/// `shutdown -f` stopped the filesystem with that metadata only in the log.
fn dirty_image(d: &Path) -> PathBuf {
    let img = mkfs(d, "fs.img", &[]);
    {
        let m = xfs_mount(&img, &d.join("rw"), "rw");
        let p = |rel: &str| m.dir.join(rel);
        write_file(&p("before"), b"synced\n");
        write_file(&p("rewritten"), b"old content\n");
        write_file(&p("deleted"), b"gone\n");
        sh("sync");
        std::fs::create_dir(p("later")).unwrap();
        write_file(&p("later/file"), &pseudo_random(50_000, 3));
        for i in 0..40 {
            write_file(&p(&format!("later/f{i:02}")), format!("{i}\n").as_bytes());
        }
        write_file(&p("rewritten"), b"new content, longer than before\n");
        std::fs::remove_file(p("deleted")).unwrap();
        std::os::unix::fs::symlink("later/file", p("link")).unwrap();
        let big = "v".repeat(3000);
        sh(&format!(
            "setfattr -n user.small -v hello '{0}/before' && setfattr -n user.big -v {big} '{0}/later/file' \
             && setfattr -n trusted.t -v 0x0102 '{0}/later'",
            m.dir.display()
        ));
        // Metadata in the log, not yet in place; the data flushed.
        sh(&format!("sync -f '{}'", p("later/file").display()));
        sh(&format!("sync -f '{}'", p("rewritten").display()));
        tool_text("xfs_io", &["-x", "-c", "shutdown -f", &s(&m.dir)]);
    }
    img
}

/// The log's first sector on the disk, its tail and head blocks, as xfs_logprint reads them.
fn log_geometry(img: &Path) -> (u64, u64, u64) {
    let log = tool_text("xfs_logprint", &["-t", &s(img)]);
    let num = |key: &str| -> u64 {
        let at = log.find(key).unwrap_or_else(|| panic!("{key} in {log}")) + key.len();
        log[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    (num("daddr:"), num("log tail:"), num("head:"))
}

#[test]
fn a_dirty_log_is_replayed_in_memory_as_the_kernel_replays_it() {
    let d = tmp();
    let img = dirty_image(d.path());
    let before = tool_text("sha256sum", &[&s(&img)]);
    // xfs_logprint agrees that the log is dirty.
    let log = tool_text("xfs_logprint", &["-t", &s(&img)]);
    assert!(log.contains("state: <DIRTY>"), "{log}");
    // Without replay the directory and files written after the sync would not be there.
    let ls = dc_ok(&["ls", &s(&img), "later"]).stdout_str();
    assert!(ls.contains("file") && ls.contains("f39"), "{ls}");
    // The kernel replays the log of a copy at mount; our view of the dirty image equals it.
    let copy = d.path().join("copy.img");
    tool_text("cp", &["--sparse=always", &s(&img), &s(&copy)]);
    drop(xfs_mount(&copy, &d.path().join("replay"), "rw"));
    repair_clean(&copy);
    assert!(tool_text("xfs_logprint", &["-t", &s(&copy)]).contains("state: <CLEAN>"));
    judge_against(d.path(), &img, &copy, "replayed");
    assert_eq!(dc_ok(&["cat", &s(&img), "rewritten"]).stdout, b"new content, longer than before\n");
    dc(&["cat", &s(&img), "deleted"]).expect_code(1);
    assert_eq!(tool_text("sha256sum", &[&s(&img)]), before, "the image was written");
}

#[test]
fn a_dirty_log_wrapping_round_its_end_is_replayed() {
    // The smallest log mkfs.xfs makes (its test-suite override allows one under 64 MiB):
    // rounds of 2500 new files and 1250 deletions, each synced, until the log's tail lies
    // after its head (the active part wraps round the ring's end).
    let d = tmp();
    let img = d.path().join("fs.img");
    std::fs::File::create(&img).unwrap().set_len(300 * MIB).unwrap();
    sh(&format!("TEST_DIR=/tmp TEST_DEV=x QA_CHECK_FS=1 mkfs.xfs -q -f -l size=1368b '{}'", img.display()));
    let mut wrapped = false;
    {
        let m = xfs_mount(&img, &d.path().join("rw"), "rw");
        for round in 0..30 {
            for i in 0..2500 {
                write_file(&m.dir.join(format!("r{round}-{i}")), b"x");
            }
            for i in (0..2500).step_by(2) {
                std::fs::remove_file(m.dir.join(format!("r{round}-{i}"))).unwrap();
            }
            sh("sync");
            let (_, tail, head) = log_geometry(&img);
            if tail > head {
                wrapped = true;
                break;
            }
        }
        tool_text("xfs_io", &["-x", "-c", "shutdown -f", &s(&m.dir)]);
    }
    let (_, tail, head) = log_geometry(&img);
    assert!(wrapped && tail > head, "the log wraps: tail {tail}, head {head}");
    let before = tool_text("sha256sum", &[&s(&img)]);
    let copy = d.path().join("copy.img");
    tool_text("cp", &["--sparse=always", &s(&img), &s(&copy)]);
    drop(xfs_mount(&copy, &d.path().join("replay"), "rw"));
    judge_against(d.path(), &img, &copy, "wrapped");
    assert_eq!(tool_text("sha256sum", &[&s(&img)]), before, "the image was written");
}

/// Rewrites the CRC of the log record at sector `rec` (its header's CRC field as zero,
/// then its data: one header block, records under 32 KiB as mkfs.xfs's default log makes).
fn fix_record_crc(img: &Path, rec: u64) {
    let mut f = std::fs::File::open(img).unwrap();
    let mut h = vec![0u8; 512];
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(rec * 512)).unwrap();
    f.read_exact(&mut h).unwrap();
    let len = usize::try_from(u32::from_be_bytes(h[12..16].try_into().unwrap())).unwrap();
    let mut data = vec![0u8; len];
    f.read_exact(&mut data).unwrap();
    h[32..36].fill(0);
    let c = crc32c::crc32c_append(crc32c::crc32c(&h[..328]), &data);
    patch(img, rec * 512 + 32, &c.to_le_bytes());
}

#[test]
fn hostile_logs_fail_with_a_clear_error() {
    // A byte of a log record changed: its CRC no longer matches.
    let d = tmp();
    let img = dirty_image(d.path());
    let (start, tail, head) = log_geometry(&img);
    let rec = start + tail;
    patch(&img, rec * 512 + 512 + 100, &[0x5a]);
    hostile_ls(&img, &["fs.img", "XFS log", &format!("record at block {tail}"), "CRC mismatch"]);

    // An operation whose length runs past its record (CRC kept right).
    let d = tmp();
    let img = dirty_image(d.path());
    patch_u32(&img, rec * 512 + 512 + 4, 0x7fff_ffff);
    fix_record_crc(&img, rec);
    hostile_ls(&img, &["fs.img", "XFS log", "runs past the record"]);

    // A record whose length runs past the head, so a walk would go round the ring.
    let d = tmp();
    let img = dirty_image(d.path());
    let (_, _, head2) = log_geometry(&img);
    assert_eq!(head2, head, "the same writes make the same log");
    patch_u32(&img, rec * 512 + 12, u32::try_from((head - tail + 10) * 512).unwrap());
    fix_record_crc(&img, rec);
    hostile_ls(&img, &["fs.img", "XFS log", "past the head"]);

    // Mutants: 1 to 4 bytes of one record changed (a header field or its data), the CRC
    // kept right so the walk and the replay see them: each is read or a clear error, in
    // bounded time, never a panic.
    let d = tmp();
    let img = dirty_image(d.path());
    let (start, tail, head) = log_geometry(&img);
    let rec = start + tail;
    let read = |at: u64, len: usize| {
        let mut b = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&img).unwrap(), &mut b, at).unwrap();
        b
    };
    let (lo, hi) = (rec * 512, (start + head + 1) * 512);
    let orig = read(lo, usize::try_from(hi - lo).unwrap());
    let mut recs = Vec::new();
    let mut b = tail;
    while b < head {
        let h = read((start + b) * 512, 512);
        let len = u64::from(u32::from_be_bytes(h[12..16].try_into().unwrap()));
        recs.push((b, len));
        b += 1 + len.div_ceil(512);
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut read_ok, mut refused) = (0, 0);
    for k in 0..60 {
        patch(&img, lo, &orig);
        let (rb, len) = recs[usize::try_from(next(u64::try_from(recs.len()).unwrap())).unwrap()];
        let r = (start + rb) * 512;
        for _ in 0..=next(4) {
            let at = if next(10) == 0 { [12, 24, 40, 320][usize::try_from(next(4)).unwrap()] } else { next(512 + len) };
            patch(&img, r + at, &[u8::try_from(next(256)).unwrap()]);
        }
        if u32::from_be_bytes(read(r + 12, 4).try_into().unwrap()) <= 256 * 1024 {
            fix_record_crc(&img, r / 512);
        }
        let run = dc(&["ls", "-R", &s(&img)]);
        assert!(!run.stderr.contains("panicked") && run.elapsed.as_secs() < HOSTILE_SECS, "mutant {k}: {}", run.stderr);
        match run.code {
            Some(0) => read_ok += 1,
            Some(1) => {
                run.expect_diskcast_error();
                refused += 1;
            }
            c => panic!("mutant {k}: exit {c:?}"),
        }
    }
    assert!(refused > 0, "{read_ok} mutants read, none refused");
}

/// A small v5 image with a few files, made by the kernel, for hostile patches.
fn small_image(d: &Path) -> PathBuf {
    let img = mkfs(d, "fs.img", &[]);
    {
        let m = xfs_mount(&img, &d.join("rw"), "rw");
        std::fs::create_dir_all(m.dir.join("a/b")).unwrap();
        write_file(&m.dir.join("a/b/f"), &pseudo_random(20_000, 9));
    }
    img
}

fn hostile_ls(img: &Path, want: &[&str]) {
    let r = dc_bounded(&["ls", "-R", &s(img)], HOSTILE_SECS, HOSTILE_VM).expect_rss_below(HOSTILE_RSS);
    r.run.expect_code(1).expect_diskcast_error().expect_stderr_all(want);
}

#[test]
fn hostile_images_fail_with_a_clear_error() {
    // A byte of an inode changed behind the CRC's back.
    let d = tmp();
    let img = small_image(d.path());
    let f = ino_of(&img, "/a/b/f");
    // xfs_db prints "0x10800 (67584)".
    let conv = xfs_db(&img, &[&format!("convert inode {f} byte")]);
    let at: u64 = conv.split(['(', ')']).nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{conv}"));
    patch(&img, at + 8, &[0x12]);
    hostile_ls(&img, &["fs.img", &format!("inode {f}"), "CRC mismatch"]);

    // A directory whose entry names its own grandparent (CRC kept right by xfs_db).
    let d = tmp();
    let img = small_image(d.path());
    let b = ino_of(&img, "/a/b");
    let a = ino_of(&img, "/a");
    xfs_db_write(&img, b, "u3.sfdir3.list[0].inumber.i4", &a.to_string());
    hostile_ls(&img, &["fs.img", "directory loop", &format!("inode {a}")]);

    // An extent past the end of its AG.
    let d = tmp();
    let img = small_image(d.path());
    xfs_db_write(&img, f, "u3.bmx[0].startblock", "99999999");
    hostile_ls(&img, &["fs.img", &format!("inode {f}"), "outside the filesystem"]);

    // A huge extent count.
    let d = tmp();
    let img = small_image(d.path());
    xfs_db_write(&img, f, "core.nextents", "4000000000");
    hostile_ls(&img, &["fs.img", &format!("inode {f}"), "do not fit in the inode"]);

    // A superblock CRC broken.
    let d = tmp();
    let img = small_image(d.path());
    patch(&img, 0x80, &[0xff]);
    hostile_ls(&img, &["fs.img", "XFS superblock", "CRC mismatch"]);
}
