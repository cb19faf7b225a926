//! Work and memory bounded by the archive: hostile tars made by Python's tarfile (and
//! compressors), each read under a time limit; a cap that is hit is an `OutOfBounds`
//! error naming the cap and the archive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::ErrorKind;
use diskcast_testkit::{run, within};
use std::path::{Path, PathBuf};

/// Runs a Python script with `tarfile`, `io` imported and `OUT` the archive path.
fn python(dir: &Path, name: &str, script: &str) -> PathBuf {
    let out = dir.join(name);
    run("/usr/bin/python3", &["-c", &format!("import tarfile, io\nOUT = {:?}\n{script}\n", out.to_str().unwrap())]);
    out
}

#[test]
fn many_pax_xattr_records_are_read_in_linear_time() {
    // 400 000 SCHILY.xattr records in one member (12 MB of PAX header, 1 MB gzipped,
    // under the 16 MiB cap): checking each name against every earlier one took minutes.
    let d = tempfile::tempdir().unwrap();
    // The header is built in Python (tarfile's own PAX writer is quadratic in the
    // record count) and written by tarfile as an `x` member before the file.
    let tar = python(
        d.path(),
        "x.tar.gz",
        "def rec(k, v):\n    body = b' %s=%s\\n' % (k, v)\n    n = len(body) + 1\n    \
         while len(str(n)) + len(body) != n: n += 1\n    return str(n).encode() + body\n\
         recs = b''.join(rec(b'SCHILY.xattr.user.%d' % n, b'v%d' % (n % 10)) for n in range(400000))\n\
         t = tarfile.open(OUT, 'w:gz', format=tarfile.USTAR_FORMAT)\n\
         x = tarfile.TarInfo('PaxHeaders/many'); x.type = tarfile.XHDTYPE; x.size = len(recs)\n\
         t.addfile(x, io.BytesIO(recs))\n\
         i = tarfile.TarInfo('many'); i.size = 1\n\
         t.addfile(i, io.BytesIO(b'x'))\n\
         j = tarfile.TarInfo('after'); j.size = 2\n\
         t.addfile(j, io.BytesIO(b'ok'))\n\
         t.close()",
    );
    let t = within(60, "reading 400 000 xattr records", move || diskcast_tar::read_tar(&tar).unwrap());
    let node = t.tree.node(t.tree.resolve(b"many", false).unwrap());
    assert_eq!(node.xattrs.len(), 400_000);
    let x = node.xattrs.iter().find(|x| x.name == b"user.123457").unwrap();
    assert_eq!(x.value, b"v7");
    assert_eq!(t.tree.node(t.tree.resolve(b"after", false).unwrap()).as_file().unwrap().size, 2);
}

#[test]
fn xattrs_of_all_members_together_are_capped() {
    // 20 members of 14 MiB of xattrs each (every PAX header under its 16 MiB cap): 280
    // MiB held in memory before, refused now once the archive passes MAX_XATTR_TOTAL.
    let d = tempfile::tempdir().unwrap();
    let tar = python(
        d.path(),
        "big.tar.gz",
        "t = tarfile.open(OUT, 'w:gz', format=tarfile.PAX_FORMAT, compresslevel=1)\n\
         v = 'a' * (14 << 20)\n\
         for n in range(20):\n    \
             i = tarfile.TarInfo('f%d' % n); i.size = 0\n    \
             i.pax_headers = {'SCHILY.xattr.user.big': v}\n    \
             t.addfile(i)\n\
         t.close()",
    );
    let name = tar.display().to_string();
    let e = within(60, "reading 280 MiB of xattrs", move || diskcast_tar::read_tar(&tar).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains("MAX_XATTR_TOTAL"), "{e}");
    assert!(e.to_string().contains(&format!("{}", diskcast_tar::MAX_XATTR_TOTAL)), "{e}");
    assert_eq!(e.file().map(|f| f.display().to_string()), Some(name), "{e}");
}

/// `sh -c script` in `dir`.
fn sh(dir: &Path, script: &str) {
    run("sh", &["-c", &format!("cd '{}' && {script}", dir.display())]);
}

#[test]
fn a_zstd_tar_is_capped_by_the_rule_oci_layers_obey() {
    // GNU tar of a 1 GiB file of zeros through zstd: 33 KB that expand 32 000 times.
    let d = tempfile::tempdir().unwrap();
    sh(d.path(), "truncate -s 1G zeros && tar -cf - zeros | zstd -q -o bomb.tar.zst && rm zeros");
    let tar = d.path().join("bomb.tar.zst");
    let compressed = std::fs::metadata(&tar).unwrap().len();
    let cap = diskcast_tar::Limits::default().layer_cap(compressed);
    assert!(cap < 1 << 30, "the test needs a ratio above the cap ({compressed} bytes compressed)");
    let name = tar.display().to_string();
    let e = within(120, "reading a zstd bomb", move || diskcast_tar::read_tar(&tar).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::OutOfBounds, "{e}");
    assert!(e.to_string().contains(&format!("decompresses to more than {cap} bytes")), "{e}");
    assert!(e.to_string().contains("decompression bomb"), "{e}");
    assert!(e.to_string().contains(&name), "{e}");

    // The same ratio on a small archive stays under the slack and reads.
    sh(d.path(), "truncate -s 16M zeros && tar -cf - zeros | zstd -q -o small.tar.zst");
    let t = diskcast_tar::read_tar(&d.path().join("small.tar.zst")).unwrap();
    assert_eq!(t.tree.node(t.tree.resolve(b"zeros", false).unwrap()).as_file().unwrap().size, 16 << 20);
}
