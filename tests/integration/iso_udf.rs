//! `diskcast iso create --udf` and `iso remaster` of UDF bridge discs, judged by udfinfo
//! (udftools), 7-Zip's UDF reader and pycdlib; our own reader only as an extra.

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn sh(script: &str) {
    let out = Command::new("bash").args(["-euc", script]).output().expect("bash");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Lists a disc's UDF tree through pycdlib: `D path`, `L path`, or `F path links sha256`,
/// sorted; names decoded from their CS0 encoding.
const PYCDLIB_LIST: &str = r#"
import hashlib, io, sys, pycdlib
iso = pycdlib.PyCdlib(); iso.open(sys.argv[1])
out = []
def walk(path):
    rec = iso.get_record(udf_path=path or '/')
    for fi in rec.fi_descs:
        if fi.isparent:
            continue
        p = path + '/' + fi.fi.decode(fi.encoding)
        fe = fi.file_entry
        if fe.is_dir():
            out.append('D ' + p[1:]); walk(p)
        elif fe.is_symlink():
            out.append('L ' + p[1:])
        else:
            b = io.BytesIO(); iso.get_file_from_iso_fp(b, udf_path=p)
            out.append('F %s %d %s' % (p[1:], fe.file_link_count, hashlib.sha256(b.getvalue()).hexdigest()))
walk('')
print('\n'.join(sorted(out)))
"#;

fn pycdlib_list(iso: &Path) -> String {
    tool_out("/usr/bin/python3", &["-c", PYCDLIB_LIST, iso.to_str().unwrap()])
}

/// The same listing made from a host directory (links: how many names in `dir`).
fn host_list(dir: &Path) -> String {
    let script = format!(
        r#"import hashlib, os, collections
root = {dir:?}
out = []; links = collections.Counter()
for d, ds, fs in os.walk(root):
    for f in fs:
        p = os.path.join(d, f)
        if not os.path.islink(p): links[os.lstat(p).st_ino] += 1
for d, ds, fs in os.walk(root):
    for n in ds + fs:
        p = os.path.join(d, n); r = os.path.relpath(p, root)
        if os.path.islink(p): out.append('L ' + r)
        elif os.path.isdir(p): out.append('D ' + r)
        else: out.append('F %s %d %s' % (r, links[os.lstat(p).st_ino], hashlib.sha256(open(p, 'rb').read()).hexdigest()))
print('\n'.join(sorted(out)))
"#,
        dir = dir.to_str().unwrap()
    );
    tool_out("/usr/bin/python3", &["-c", &script])
}

/// Names and content hashes of a directory (what 7-Zip extracts).
fn hashes(dir: &Path) -> String {
    let script = format!(
        r#"import hashlib, os
root = {dir:?}; out = []
for d, ds, fs in os.walk(root):
    for n in ds: out.append('D ' + os.path.relpath(os.path.join(d, n), root))
    for n in fs:
        p = os.path.join(d, n)
        if not os.path.islink(p): out.append('F %s %s' % (os.path.relpath(p, root), hashlib.sha256(open(p, 'rb').read()).hexdigest()))
print('\n'.join(sorted(out)))
"#,
        dir = dir.to_str().unwrap()
    );
    tool_out("/usr/bin/python3", &["-c", &script])
}

fn make_tree(s: &Path, symlink: bool) {
    sh(&format!(
        "mkdir -p '{s}/d1/d2/d3/d4' '{s}/sub dir' '{s}/empty-dir'; cd '{s}'
         echo hello > hello.txt; chmod 4755 hello.txt; head -c 300000 /dev/urandom > random.bin
         echo deep > d1/d2/d3/d4/deep.txt; printf long > {long}.txt; ln hello.txt hard-link; : > empty
         printf 'é' > 'sub dir/héllo wörld.txt'; printf 'ja' > 'sub dir/日本語の名前.txt'
         chmod 700 'sub dir'; chmod 640 random.bin; touch -d '2001-02-03 04:05:06.25' random.bin
         {link}",
        s = s.display(),
        long = "l".repeat(200),
        link = if symlink { "ln -s ../hello.txt 'sub dir/up'" } else { "" }
    ));
}

fn create_udf(src: &Path, iso: &Path, label: &str) {
    let st = Command::new(diskcast_bin())
        .args(["iso", "create", "--udf", "-V", label, src.to_str().unwrap(), "-o", iso.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

#[test]
fn iso_create_udf_reads_back_through_udfinfo_7zip_and_pycdlib() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("out.iso"));
    make_tree(&src, true);
    create_udf(&src, &iso, "My Disc é");
    let info = tool_out("udfinfo", &[iso.to_str().unwrap()]);
    for want in ["label=My Disc é", "udfrev=1.02", "integrity=closed", "accesstype=readonly", "blocksize=2048"] {
        assert!(info.lines().any(|l| l == want), "udfinfo lacks {want}:\n{info}");
    }
    // pycdlib: names (8- and 16-bit CS0), kinds, hard link counts and content.
    assert_eq!(pycdlib_list(&iso), host_list(&src));
    // Our reader: modes, times, owners, symlink target, hard links, as in the source.
    let ours = t.path().join("ours");
    dc_ok(&["extract", "--privileged", "--tree", "udf", iso.to_str().unwrap(), ours.to_str().unwrap()]);
    assert_eq!(crate::iso::manifest(&ours, true, true), crate::iso::manifest(&src, true, true));
    assert_eq!(std::fs::read_link(ours.join("sub dir/up")).unwrap(), Path::new("../hello.txt"));
    // The ISO 9660 side is still what it was.
    let rr = tool_out("isoinfo", &["-l", "-R", "-i", iso.to_str().unwrap()]);
    assert!(rr.contains("up -> ../hello.txt"), "{rr}");
    // Reproducible.
    let again = t.path().join("again.iso");
    create_udf(&src, &again, "My Disc é");
    assert!(std::fs::read(&iso).unwrap() == std::fs::read(&again).unwrap(), "two builds differ");

    // 7-Zip refuses a UDF volume holding any file type but files and directories (as it
    // does pycdlib's own symlinks), so it reads the same tree without the symlink.
    let (src2, iso2) = (t.path().join("src2"), t.path().join("nolink.iso"));
    make_tree(&src2, false);
    sh(&format!("cp -a '{}/random.bin' '{}/'", src.display(), src2.display()));
    create_udf(&src2, &iso2, "NOLINK");
    let listing = tool_out("7zz", &["l", "-tUdf", iso2.to_str().unwrap()]);
    assert!(listing.contains(&"l".repeat(200)) && listing.contains("日本語の名前.txt"), "{listing}");
    let sz = t.path().join("7z");
    tool_out("7zz", &["x", "-y", "-tUdf", &format!("-o{}", sz.display()), iso2.to_str().unwrap()]);
    assert_eq!(hashes(&sz), hashes(&src2));
}

#[test]
fn iso_create_udf_refuses_names_over_255_bytes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a".repeat(255)), b"x").unwrap();
    let iso = t.path().join("x.iso");
    dc(&["iso", "create", "--udf", src.to_str().unwrap(), "-o", iso.to_str().unwrap()])
        .expect_code(1)
        .expect_stderr_any(&["UDF allows 255"]);
    // Without --udf the same tree is fine.
    dc_ok(&["iso", "create", src.to_str().unwrap(), "-o", iso.to_str().unwrap()]);
}

#[test]
fn iso_create_udf_file_over_4_gib_stays_sparse() {
    let t = tempfile::tempdir().unwrap();
    let (src, iso) = (t.path().join("src"), t.path().join("big.iso"));
    let four = 4u64 << 30;
    sh(&format!(
        "mkdir -p '{s}'; cd '{s}'; truncate -s {size} big.bin
         printf BEFORE | dd of=big.bin bs=1 seek={b} conv=notrunc status=none
         printf AFTER! | dd of=big.bin bs=1 seek={four} conv=notrunc status=none
         printf TAIL | dd of=big.bin bs=1 seek={e} conv=notrunc status=none; echo x > small",
        s = src.display(),
        size = four + 123_456,
        b = four - 6,
        e = four + 123_452
    ));
    create_udf(&src, &iso, "BIG");
    // The output is sparse too: far less allocated than its size.
    let md = std::fs::metadata(&iso).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&md) * 512 < 64 << 20, "output is not sparse");
    let listing = tool_out("7zz", &["l", "-tUdf", iso.to_str().unwrap()]);
    assert!(listing.lines().any(|l| l.contains(&(four + 123_456).to_string()) && l.ends_with("big.bin")), "{listing}");
    // pycdlib parses the entry (64-bit length, allocation descriptors); its file reader
    // takes a bridge disc's length from the ISO 9660 side's first extent, so the marks
    // are read through the descriptors it parsed.
    let script = format!(
        r#"import pycdlib
iso = pycdlib.PyCdlib(); iso.open({iso:?})
rec = iso.get_record(udf_path='/big.bin')
start = iso.udf_main_descs.partitions[0].part_start_location
def read(off, n):
    for ad in rec.alloc_descs:
        if off < ad.extent_length:
            with open({iso:?}, 'rb') as f:
                f.seek((start + ad.log_block_num) * 2048 + off); return f.read(n)
        off -= ad.extent_length
print(read({b}, 6).decode() + read({four}, 6).decode(), read({e}, 4).decode(), rec.get_data_length(), len(rec.alloc_descs))
"#,
        iso = iso.to_str().unwrap(),
        b = four - 6,
        e = four + 123_452
    );
    assert_eq!(
        tool_out("/usr/bin/python3", &["-c", &script]).trim(),
        format!("BEFOREAFTER! TAIL {} 5", four + 123_456)
    );
    // Our reader, through the UDF tree.
    let cat = Command::new("bash")
        .args([
            "-euc",
            &format!("'{}' cat --tree udf '{}' big.bin | tail -c 123462 | head -c 12", diskcast_bin(), iso.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(cat.stdout, b"BEFOREAFTER!");
    let udfinfo = tool_out("udfinfo", &[iso.to_str().unwrap()]);
    assert!(udfinfo.contains("udfrev=1.02"), "{udfinfo}");
}

#[test]
fn iso_remaster_keeps_the_udf_side_of_bridge_discs() {
    let t = tempfile::tempdir().unwrap();
    let (src, add, iso, out) =
        (t.path().join("src"), t.path().join("add"), t.path().join("in.iso"), t.path().join("out.iso"));
    sh(&format!(
        "mkdir -p '{s}/keep' '{a}/new'; echo one > '{s}/keep/one.txt'; echo gone > '{s}/gone.txt'
         echo added > '{a}/new/added.txt'; genisoimage -quiet -udf -R -J -V BRIDGE -o '{i}' '{s}'",
        s = src.display(),
        a = add.display(),
        i = iso.display()
    ));
    let add_s = add.to_str().unwrap();
    dc_ok(&[
        "iso",
        "remaster",
        iso.to_str().unwrap(),
        "--add",
        add_s,
        "--remove",
        "gone.txt",
        "-o",
        out.to_str().unwrap(),
    ]);
    let listing = tool_out("7zz", &["l", "-tUdf", out.to_str().unwrap()]);
    assert!(listing.contains("new/added.txt") && listing.contains("keep/one.txt"), "{listing}");
    assert!(!listing.contains("gone.txt"), "{listing}");
    let info = tool_out("udfinfo", &[out.to_str().unwrap()]);
    assert!(info.lines().any(|l| l == "label=BRIDGE"), "{info}");

    // A Windows-like UDF 2.60 disc by pycdlib: the ISO 9660 side holds only a README,
    // the payload lives on the UDF side and stays there.
    let (win, win_out) = (t.path().join("win.iso"), t.path().join("win-out.iso"));
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates/iso9660/tests/fixtures/udf-windows-like.py");
    tool_out("/usr/bin/python3", &[fixture, win.to_str().unwrap(), "300000"]);
    dc_ok(&["iso", "remaster", win.to_str().unwrap(), "--add", add_s, "-o", win_out.to_str().unwrap()]);
    let listing = tool_out("7zz", &["l", "-tUdf", win_out.to_str().unwrap()]);
    assert!(
        listing.contains("sources/install.wim") && listing.contains("new/added.txt") && listing.contains("300000"),
        "{listing}"
    );
    let before = tool_out("/usr/bin/python3", &["-c", PYCDLIB_LIST, win.to_str().unwrap()]);
    let after = pycdlib_list(&win_out);
    for line in before.lines() {
        assert!(after.lines().any(|l| l == line), "{line} lost:\n{after}");
    }
    tool_out("udfinfo", &[win_out.to_str().unwrap()]);
}
