//! Where the reader once disagreed with the reference tools: archives made by Python's
//! tarfile, GNU tar and pzstd, byte-patched where a writer would not make the case, are
//! listed by us, by GNU tar (`tar -tvf`) and by bsdtar (`bsdtar -tf`), and compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_tar::{FileStream, TarReader};
use diskcast_testkit::run;
use diskcast_tree::StreamSource;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a Python script with `tarfile`, `io` imported, `OUT` the archive path and
/// `patch(path, block, size=None, typeflag=None)`, which rewrites the size field and
/// typeflag of the header at `block` (and its checksum).
fn python(dir: &Path, name: &str, script: &str) -> PathBuf {
    let out = dir.join(name);
    let prelude = "import tarfile, io\n\
        def patch(path, block, size=None, typeflag=None, field=None):\n    \
            b = bytearray(open(path, 'rb').read()); h = b[block * 512:block * 512 + 512]\n    \
            if size is not None: h[124:136] = b'%011o\\0' % size\n    \
            if field is not None: h[124:136] = field\n    \
            if typeflag is not None: h[156] = typeflag\n    \
            h[148:156] = b' ' * 8; h[148:156] = b'%06o\\0 ' % sum(h)\n    \
            b[block * 512:block * 512 + 512] = h; open(path, 'wb').write(b)\n\
        def add(t, name, data=b'', **kw):\n    \
            i = tarfile.TarInfo(name)\n    \
            for k, v in kw.items(): setattr(i, k, v)\n    \
            i.size = len(data); t.addfile(i, io.BytesIO(data))\n";
    run("/usr/bin/python3", &["-c", &format!("{prelude}OUT = {:?}\n{script}\n", out.to_str().unwrap())]);
    out
}

/// Our members: path (trailing `/` dropped) and size.
fn ours(tar: &Path) -> Vec<(String, u64)> {
    let mut r = TarReader::from_file(std::fs::File::open(tar).unwrap(), tar.display().to_string()).unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.next_member().unwrap_or_else(|e| panic!("{}: {e}", tar.display())) {
        out.push((String::from_utf8_lossy(&m.path).trim_end_matches('/').to_string(), m.size));
    }
    out
}

/// GNU tar's listing: path and size, as `tar -tvf` prints them (links show size 0).
fn gnu(tar: &Path) -> Vec<(String, u64)> {
    run("tar", &["--numeric-owner", "-tvf", tar.to_str().unwrap()])
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let name = w[5..].join(" ");
            let name = name.split(" link to ").next().unwrap().split(" -> ").next().unwrap();
            (name.trim_end_matches('/').to_string(), w[2].parse().unwrap())
        })
        .collect()
}

/// bsdtar's listing: paths only.
fn bsd(tar: &Path) -> Vec<String> {
    run("bsdtar", &["-tf", tar.to_str().unwrap()]).lines().map(|l| l.trim_end_matches('/').to_string()).collect()
}

fn names(v: &[(String, u64)]) -> Vec<String> {
    v.iter().map(|(n, _)| n.clone()).collect()
}

#[test]
fn a_zstd_stream_that_starts_with_a_skippable_frame_is_read() {
    // pzstd writes each frame after a skippable frame recording its size; 10 MB in two
    // threads gives several of them.
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let big = diskcast_testkit::pattern(10 << 20, 7);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), b"hello\n").unwrap();
    let tar = d.path().join("a.tar");
    run("tar", &["-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "big", "small"]);
    let zst = d.path().join("a.tar.zst");
    run("pzstd", &["-q", "-p", "2", tar.to_str().unwrap(), "-o", zst.to_str().unwrap()]);
    let head = std::fs::read(&zst).unwrap();
    assert_eq!(&head[..4], &[0x50, 0x2a, 0x4d, 0x18], "pzstd output should start with a skippable frame");
    let frames = head.windows(4).filter(|w| w == &[0x50, 0x2a, 0x4d, 0x18]).count();
    assert!(frames >= 2, "only {frames} frame(s)");

    let t = diskcast_tar::read_tar(&zst).unwrap();
    assert_eq!(t.compression, diskcast_tar::Compression::Zstd);
    // The same members as GNU tar lists from `zstd -dc`, with the same bytes.
    let listing =
        Command::new("sh").arg("-c").arg(format!("zstd -dc '{}' | tar -tf -", zst.display())).output().unwrap();
    let theirs: Vec<String> = String::from_utf8(listing.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(theirs, ["big", "small"]);
    let stream = FileStream::open(&zst).unwrap();
    let mut all = Vec::new();
    stream.open().unwrap().read_to_end(&mut all).unwrap();
    let mut r = TarReader::new(stream.open().unwrap(), "a.tar.zst");
    let mut seen = Vec::new();
    while let Some(m) = r.next_member().unwrap() {
        let at = usize::try_from(m.data_offset).unwrap();
        let len = usize::try_from(m.size).unwrap();
        let want: &[u8] = if m.path == b"big" { &big } else { b"hello\n" };
        assert_eq!(&all[at..at + len], want, "{}", String::from_utf8_lossy(&m.path));
        seen.push(String::from_utf8(m.path).unwrap());
    }
    assert_eq!(seen, theirs);
}

#[test]
fn directory_entries_with_a_size_and_no_data_do_not_swallow_the_next_member() {
    // A directory (type 5, or an old-style '0' or NUL type with a trailing slash) whose
    // size says 100 bytes that are not there, then an empty file (header only) and a
    // file. Skipping 100 bytes ate the empty file's header.
    let d = tempfile::tempdir().unwrap();
    for (name, typeflag) in [("d5.tar", "ord('5')"), ("d0.tar", "ord('0')"), ("dnul.tar", "0")] {
        let tar = python(
            d.path(),
            name,
            &format!(
                "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
                 add(t, 'd/', type=tarfile.DIRTYPE)\n    add(t, 'e')\n    add(t, 'g', b'world\\n')\n\
                 patch(OUT, 0, size=100, typeflag={typeflag})"
            ),
        );
        let ours = ours(&tar);
        assert_eq!(names(&ours), ["d", "e", "g"], "{name}");
        assert_eq!(names(&ours), bsd(&tar), "{name}: bsdtar");
        if name == "d5.tar" {
            // GNU tar ignores a directory's size too (and skips it on old-style ones,
            // swallowing `e` as we did).
            assert_eq!(names(&ours), names(&gnu(&tar)), "{name}: GNU tar");
        }
        assert_eq!(ours[2], ("g".to_string(), 6));
    }
    // The class: symlinks, devices and fifos never carry data either (bsdtar, and Go's
    // archive/tar that container runtimes use, ignore their size).
    for (name, kind) in
        [("sym.tar", "tarfile.SYMTYPE"), ("chr.tar", "tarfile.CHRTYPE"), ("fifo.tar", "tarfile.FIFOTYPE")]
    {
        let tar = python(
            d.path(),
            name,
            &format!(
                "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
                 add(t, 'x', type={kind}, linkname='g')\n    add(t, 'e')\n    add(t, 'g', b'world\\n')\n\
                 patch(OUT, 0, size=6)"
            ),
        );
        assert_eq!(names(&ours(&tar)), ["x", "e", "g"], "{name}");
        assert_eq!(names(&ours(&tar)), bsd(&tar), "{name}: bsdtar");
    }
}

#[test]
fn hard_links_with_a_size_and_no_data_are_read_as_gnu_tar_reads_them() {
    // POSIX 1988: the size of a link is ignored. GNU tar and bsdtar list every member
    // of the ustar and GNU cases; in the PAX case bsdtar trusts the size and swallows
    // `e`, GNU tar (and Go's archive/tar) do not.
    let d = tempfile::tempdir().unwrap();
    for (name, format, block) in
        [("ustar.tar", "USTAR_FORMAT", 2), ("gnu.tar", "GNU_FORMAT", 2), ("pax.tar", "PAX_FORMAT", 6)]
    {
        let tar = python(
            d.path(),
            name,
            &format!(
                "with tarfile.open(OUT, 'w', format=tarfile.{format}) as t:\n    \
                 add(t, 'f', b'hello\\n', pax_headers={{'comment': 'x'}})\n    \
                 add(t, 'l', type=tarfile.LNKTYPE, linkname='f', pax_headers={{'comment': 'y'}})\n    \
                 add(t, 'e')\n    add(t, 'g', b'world\\n')\n\
                 patch(OUT, {block}, size=6)"
            ),
        );
        assert_eq!(ours(&tar), gnu(&tar), "{name}: GNU tar");
        if name != "pax.tar" {
            assert_eq!(names(&ours(&tar)), bsd(&tar), "{name}: bsdtar");
        }
        let t = diskcast_tar::read_tar(&tar).unwrap();
        let (f, l) = (t.tree.resolve(b"f", false).unwrap(), t.tree.resolve(b"l", false).unwrap());
        assert_eq!(f, l, "{name}: l is a second name of f");
    }
    // A link whose size runs past the end of the archive was refused as truncated.
    let tar = python(
        d.path(),
        "last.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
         add(t, 'f', b'hello\\n')\n    add(t, 'l', type=tarfile.LNKTYPE, linkname='f')\n\
         patch(OUT, 2, size=1 << 20)",
    );
    assert_eq!(ours(&tar), gnu(&tar));
    assert_eq!(names(&ours(&tar)), bsd(&tar));
}

#[test]
fn numeric_fields_with_leading_nuls_read_as_gnu_tar_reads_them() {
    // GNU tar skips one leading NUL (old tars left one when the field before
    // overflowed); a second NUL ends the number, so these sizes are 0, not 14.
    let d = tempfile::tempdir().unwrap();
    for (name, field) in [("nuls.tar", r"b'\0' * 9 + b'016'"), ("two.tar", r"b'\0\0' + b'000000016\0'")] {
        let tar = python(
            d.path(),
            name,
            &format!(
                "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
                 add(t, 'a')\n    add(t, 'g', b'world\\n')\n\
                 patch(OUT, 0, field={field})"
            ),
        );
        assert_eq!(ours(&tar), gnu(&tar), "{name}");
        assert_eq!(ours(&tar), [("a".to_string(), 0), ("g".to_string(), 6)], "{name}");
    }
    // One NUL, then the digits: GNU tar reads 14 (and so do we).
    let tar = python(
        d.path(),
        "one.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
         add(t, 'a', b'fourteen bytes')\n    add(t, 'g', b'world\\n')\n\
         patch(OUT, 0, field=b'\\0 0000000016')",
    );
    assert_eq!(ours(&tar), gnu(&tar));
    assert_eq!(ours(&tar)[0], ("a".to_string(), 14));
    // Blanks only: GNU tar refuses the header ("Blanks in header where numeric off_t
    // value expected"), and so do we.
    let tar = python(
        d.path(),
        "blank.tar",
        "with tarfile.open(OUT, 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
         add(t, 'a')\n\
         patch(OUT, 0, field=b' ' * 12)",
    );
    let gnu_out = Command::new("tar").args(["-tvf", tar.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&gnu_out.stderr).contains("Blanks in header"));
    let mut r = TarReader::from_file(std::fs::File::open(&tar).unwrap(), "blank.tar").unwrap();
    let e = r.next_member().unwrap_err();
    assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
    assert_eq!(e.field(), Some("size"), "{e}");
    assert!(e.to_string().contains("blanks where a number is expected"), "{e}");
}
