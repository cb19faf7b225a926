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
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{}' | tar -tf -", zst.display()))
        .output()
        .unwrap();
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
