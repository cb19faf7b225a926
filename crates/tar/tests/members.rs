//! The member iterator as other crates use it: offsets that point at each member's
//! bytes, plain and compressed, and global PAX headers applied as GNU tar applies them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_tar::{FileStream, MemberKind, TarReader};
use diskcast_tree::StreamSource;
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} is required: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn data_offsets_point_at_member_bytes_plain_and_gzip() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..5).map(|i| (format!("f{i}"), (0..(i * 1000 + 7)).map(|b| (b * 31 + i) as u8).collect())).collect();
    for (n, data) in &files {
        std::fs::write(src.join(n), data).unwrap();
    }
    for (name, flag) in [("a.tar", "-c"), ("a.tar.gz", "-cz")] {
        let tar = d.path().join(name);
        run("tar", &["--format=pax", flag, "-f", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."]);
        let stream = FileStream::open(&tar).unwrap();
        let mut all = Vec::new();
        stream.open().unwrap().read_to_end(&mut all).unwrap();
        let mut r = TarReader::new(stream.open().unwrap(), name);
        let mut seen = 0;
        while let Some(m) = r.next_member().unwrap() {
            if m.kind != MemberKind::File {
                continue;
            }
            let want = &files.iter().find(|(n, _)| m.path.ends_with(n.as_bytes())).unwrap().1;
            let at = usize::try_from(m.data_offset).unwrap();
            assert_eq!(&all[at..at + want.len()], &want[..], "{name} {:?}", String::from_utf8_lossy(&m.path));
            assert_eq!(m.size, want.len() as u64);
            seen += 1;
        }
        assert_eq!(seen, files.len());
    }
}

#[test]
fn global_pax_headers_apply_to_later_members_as_gnu_tar_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let tar = d.path().join("g.tar");
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w', format=tarfile.PAX_FORMAT, pax_headers={{'uid': '4242', 'comment': 'made by python'}})\nfor n in ['a', 'b']:\n    i = tarfile.TarInfo(n); i.size = 1; t.addfile(i, io.BytesIO(b'x'))\nt.close()\n",
        tar.to_str().unwrap()
    );
    run("/usr/bin/python3", &["-c", &script]);
    let listing = run("tar", &["-tvf", tar.to_str().unwrap(), "--numeric-owner"]);
    assert_eq!(listing.matches("4242/0").count(), 2, "{listing}");
    let t = diskcast_tar::read_tar(&tar).unwrap();
    for n in [&b"a"[..], b"b"] {
        let id = t.tree.resolve(n, false).unwrap();
        assert_eq!(t.tree.node(id).meta.uid, 4242);
    }
}

#[test]
fn a_gzip_stream_that_is_not_a_tar_is_refused_and_xz_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.gz");
    run("sh", &["-c", &format!("echo hello | gzip > {}", p.display())]);
    let e = diskcast_tar::read_tar(&p).unwrap_err();
    assert!(e.to_string().contains("truncated") || e.to_string().contains("checksum"), "{e}");
    let x = d.path().join("y.xz");
    run("sh", &["-c", &format!("echo hello | xz > {}", x.display())]);
    let e = diskcast_tar::read_tar(&x).unwrap_err();
    assert!(e.to_string().contains("xz -d"), "{e}");
}

#[test]
fn member_policy_choices_are_each_applied() {
    use diskcast_tar::{MemberPolicy, MemberTree, OverDirectory, ParentSymlink};
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let tar = d.path().join("p.tar");
    let script = format!(
        "import tarfile, io\nt = tarfile.open({:?}, 'w')\ndef add(n, data=b'', **kw):\n    i = tarfile.TarInfo(n)\n    for k, v in kw.items(): setattr(i, k, v)\n    i.size = len(data)\n    t.addfile(i, io.BytesIO(data))\n\
         add('usr/lib', type=tarfile.DIRTYPE)\nadd('lib', type=tarfile.SYMTYPE, linkname='usr/lib')\nadd('lib/x', b'x')\n\
         add('d/in', b'in')\nadd('d', b'file over a directory')\nt.close()\n",
        tar.to_str().unwrap()
    );
    run("/usr/bin/python3", &["-c", &script]);
    let read = |policy: MemberPolicy| {
        let stream: Arc<dyn StreamSource> = Arc::new(FileStream::open(&tar).unwrap());
        let mut r = TarReader::new(stream.open().unwrap(), "p.tar");
        let mut members = MemberTree::new(policy);
        let mut refused = Vec::new();
        while let Some(m) = r.next_member().unwrap() {
            if let Err(e) = members.insert(&m, &stream) {
                assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused, "{e}");
                refused.push(e.message().to_string());
            }
        }
        (members.into_tree(), refused)
    };
    let (tree, refused) = read(MemberPolicy::ARCHIVE);
    assert!(refused.is_empty(), "{refused:?}");
    assert!(tree.resolve(b"usr/lib/x", false).is_ok());
    assert!(tree.node(tree.resolve(b"d", false).unwrap()).as_file().is_some());
    let strict = MemberPolicy { parent_symlink: ParentSymlink::Refuse, over_directory: OverDirectory::Refuse };
    let (tree, refused) = read(strict);
    assert_eq!(
        refused,
        [
            r#""lib" on the path "lib/x" is a symlink (not followed)"#,
            r#"member "d" would replace a directory that has entries"#
        ]
    );
    let e = tree.resolve(b"usr/lib/x", false).expect_err("x was put through the symlink");
    assert!(e.to_string().contains("no such file or directory"), "{e}");
    assert!(tree.resolve(b"d/in", false).is_ok());
}

/// A plain tar file's members are ranges of the file (read at any offset, so sinks
/// spread them over threads); a compressed one's are offsets in its stream. Both give
/// the bytes GNU tar extracts; a sparse member stays a stream reader either way.
#[test]
fn a_plain_tar_gives_ranges_of_the_file_a_compressed_one_stream_offsets() {
    use diskcast_tree::Content;
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("f{i}"), (0..(i * 70_000 + 13)).map(|b| (b * 7 + i) as u8).collect())).collect();
    for (n, data) in &files {
        std::fs::write(src.join(n), data).unwrap();
    }
    run("truncate", &["-s", "1M", src.join("sparse").to_str().unwrap()]);
    run("sh", &["-c", &format!("printf tail >> {}", src.join("sparse").display())]);
    let out = d.path().join("gnu");
    std::fs::create_dir(&out).unwrap();
    for (name, compress) in [("a.tar", None), ("a.tar.zst", Some("--zstd"))] {
        let tar = d.path().join(name);
        let mut args = vec!["--format=pax", "-S", "-cf", tar.to_str().unwrap(), "-C", src.to_str().unwrap(), "."];
        args.extend(compress);
        run("tar", &args);
        run("tar", &["-xf", tar.to_str().unwrap(), "-C", out.to_str().unwrap()]);
        let t = diskcast_tar::read_tar(&tar).unwrap().tree;
        for n in files.iter().map(|f| f.0.as_str()).chain(["sparse"]) {
            let f = t.node(t.resolve(n.as_bytes(), false).unwrap()).as_file().unwrap().clone();
            let plain = name == "a.tar";
            match (&f.content, n) {
                (Content::Reader(_), "sparse") => {}
                (c, "sparse") => panic!("{name}: the sparse member is {c:?}"),
                (Content::Blocks { extents, .. }, _) if plain => assert_eq!(extents.len(), 1, "{name} {n}"),
                (Content::Stream { .. }, _) if !plain => {}
                (c, _) => panic!("{name} {n}: {c:?}"),
            }
            let mut got = vec![0u8; usize::try_from(f.size).unwrap()];
            f.read_at(&mut got, 0).unwrap();
            assert_eq!(got, std::fs::read(out.join(n)).unwrap(), "{name} {n}");
        }
    }
}

/// A tar's members are read through the descriptor its headers were read from, plain or
/// compressed: another file renamed over its name afterwards changes nothing.
#[test]
fn a_tar_is_read_through_the_descriptor_it_was_indexed_from() {
    for (name, flag) in [("a.tar", "-cf"), ("a.tar.gz", "-czf"), ("a.tar.zst", "--zstd")] {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"original bytes").unwrap();
        let tar = d.path().join(name);
        let make = |out: &Path| {
            let mut args = vec![flag];
            if flag == "--zstd" {
                args.push("-cf");
            }
            args.extend([out.to_str().unwrap(), "-C", src.to_str().unwrap(), "f"]);
            run("tar", &args);
        };
        make(&tar);
        let t = diskcast_tar::read_tar(&tar).unwrap().tree;
        std::fs::write(src.join("f"), b"replaced bytes").unwrap();
        let other = d.path().join("b");
        make(&other);
        std::fs::rename(&other, &tar).unwrap();
        let f = t.node(t.resolve(b"f", false).unwrap()).as_file().unwrap();
        let mut got = vec![0u8; 14];
        f.read_at(&mut got, 0).unwrap();
        assert_eq!(&got, b"original bytes", "{name}");
    }
}
