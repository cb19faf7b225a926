//! The std::fs-like surface of `Tree`: each method, and each error with its kind and path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::{ErrorKind, Result};
use diskcast_tree::{
    Content, FileData, FileType, Kind, Meta, Node, NodeId, Schedule, StreamCursor, StreamSource, Timestamp, Tree,
    TreeErrorKind,
};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn meta(mode: u32) -> Meta {
    Meta::new(mode, Timestamp::from_secs(1_000))
}

/// /etc/{os-release, hosts -> os-release}, /lib -> usr/lib, /usr/lib/x, /dev/null, /a/b/c.
fn sample() -> Tree {
    let mut t = Tree::new(meta(0o755));
    t.put_file(b"/etc/os-release", FileData::inline(b"NAME=test\n".to_vec()), meta(0o644)).unwrap();
    let etc = t.resolve(b"etc", true).unwrap();
    t.insert(etc, b"hosts", Node::new(meta(0o777), Kind::Symlink(b"os-release".to_vec()))).unwrap();
    t.insert(etc, b"dangling", Node::new(meta(0o777), Kind::Symlink(b"/nowhere".to_vec()))).unwrap();
    t.insert(etc, b"loop", Node::new(meta(0o777), Kind::Symlink(b"loop".to_vec()))).unwrap();
    t.put_file(b"usr/lib/x", FileData::inline(b"xx".to_vec()), meta(0o600)).unwrap();
    t.insert(NodeId::ROOT, b"lib", Node::new(meta(0o777), Kind::Symlink(b"usr/lib".to_vec()))).unwrap();
    let dev = t.create_dir_all(b"dev", &meta(0o755)).unwrap();
    t.insert(dev, b"null", Node::new(meta(0o666), Kind::CharDev { major: 1, minor: 3 })).unwrap();
    t.create_dir_all(b"a/b/c", &meta(0o700)).unwrap();
    t
}

#[test]
fn read_follows_links_and_caps_the_size() {
    let t = sample();
    assert_eq!(t.read(b"/etc/os-release", 100).unwrap(), b"NAME=test\n");
    assert_eq!(t.read(b"etc/hosts", 10).unwrap(), b"NAME=test\n", "exactly the cap is allowed");
    assert_eq!(t.read(b"lib/x", 2).unwrap(), b"xx", "a link in the middle is followed");
    for (path, limit, kind) in [
        (&b"etc/hosts"[..], 9, TreeErrorKind::TooLarge),
        (b"etc/missing", 100, TreeErrorKind::NotFound),
        (b"etc", 100, TreeErrorKind::IsADirectory),
        (b"dev/null", 100, TreeErrorKind::NotAFile),
        (b"etc/os-release/x", 100, TreeErrorKind::NotADirectory),
        (b"etc/dangling", 100, TreeErrorKind::NotFound),
        (b"etc/loop", 100, TreeErrorKind::SymlinkLoop),
    ] {
        let e = t.read(path, limit).unwrap_err();
        assert_eq!((e.kind(), e.path()), (kind, path), "{e}");
    }
    let e = t.read(b"etc/hosts", 9).unwrap_err();
    assert_eq!(e.to_string(), "\"etc/hosts\": 10 bytes, more than the 9-byte cap");
    let block: diskcast_block::Error = e.into();
    assert_eq!(block.kind(), ErrorKind::OutOfBounds);
    // read_optional: absent is None, over the cap still an error.
    assert_eq!(t.read_optional(b"etc/missing", 100).unwrap(), None);
    assert_eq!(t.read_optional(b"dev/null", 100).unwrap(), None);
    assert_eq!(t.read_optional(b"etc/loop", 100).unwrap(), None);
    assert_eq!(t.read_optional(b"etc/hosts", 9).unwrap_err().kind(), TreeErrorKind::TooLarge);
}

#[derive(Debug)]
struct Short;
impl StreamSource for Short {
    fn name(&self) -> String {
        "short stream".into()
    }
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(b"abc".to_vec())))
    }
}

#[test]
fn a_read_error_keeps_its_kind_and_names_the_path() {
    let mut t = Tree::new(meta(0o755));
    let f = FileData { size: 10, content: Content::Stream { stream: Arc::new(Short), offset: 1 } };
    t.put_file(b"f", f, meta(0o644)).unwrap();
    let e = t.read(b"f", 100).unwrap_err();
    assert_eq!((e.kind(), e.path()), (TreeErrorKind::Read, &b"f"[..]));
    assert_eq!(e.to_string(), "\"f\": short stream ends before a file it holds");
    let block = diskcast_block::Error::from(e);
    assert_eq!(
        (block.kind(), block.message()),
        (ErrorKind::Corrupt, "\"f\": short stream ends before a file it holds")
    );
}

#[test]
fn exists_metadata_and_read_link() {
    let mut t = sample();
    assert!(t.exists(b"/etc/hosts") && t.exists(b"lib/x") && t.exists(b"/"));
    assert!(!t.exists(b"etc/dangling") && !t.exists(b"nope"));
    let m = t.metadata(b"etc/hosts").unwrap();
    assert_eq!((m.file_type, m.size, m.mode, m.nlink), (FileType::File, 10, 0o644, 1));
    assert_eq!((m.mtime, m.atime, m.ctime), (Timestamp::from_secs(1_000), Timestamp::from_secs(1_000), m.mtime));
    let l = t.symlink_metadata(b"etc/hosts").unwrap();
    assert_eq!((l.file_type, l.size), (FileType::Symlink, 10));
    let id = t.resolve(b"etc/os-release", false).unwrap();
    t.link(NodeId::ROOT, b"hard", id).unwrap();
    t.node_mut(id).meta.uid = 7;
    let m = t.metadata(b"hard").unwrap();
    assert_eq!((m.id, m.nlink, m.uid), (id, 2, 7));
    let d = t.metadata(b"a").unwrap();
    assert_eq!((d.file_type, d.nlink), (FileType::Dir, 3));
    assert_eq!(t.metadata(b"dev/null").unwrap().file_type, FileType::CharDev);
    let e = t.metadata(b"etc/nope").unwrap_err();
    assert_eq!((e.kind(), e.path()), (TreeErrorKind::NotFound, &b"etc/nope"[..]));

    assert_eq!(t.read_link(b"etc/hosts").unwrap(), b"os-release");
    assert_eq!(t.read_link(b"etc/dangling").unwrap(), b"/nowhere");
    let e = t.read_link(b"etc/os-release").unwrap_err();
    assert_eq!((e.kind(), e.path()), (TreeErrorKind::NotASymlink, &b"etc/os-release"[..]));
    let e = t.read_link(b"etc/gone").unwrap_err();
    assert_eq!((e.kind(), e.path()), (TreeErrorKind::NotFound, &b"etc/gone"[..]));
}

#[test]
fn put_file_makes_parents_through_links_and_replaces_files_only() {
    let mut t = sample();
    let owned = Meta { uid: 5, gid: 6, ..meta(0o640) };
    // Parents through the /lib link, and new ones 0755 with the file's owner and times.
    t.put_file(b"/lib/new/f", FileData::inline(b"1".to_vec()), owned.clone()).unwrap();
    assert_eq!(t.read(b"usr/lib/new/f", 1).unwrap(), b"1");
    let d = t.metadata(b"usr/lib/new").unwrap();
    assert_eq!((d.mode, d.uid, d.gid, d.mtime), (0o755, 5, 6, owned.mtime));
    // A link of that name is replaced by the file, not followed.
    t.put_file(b"etc/hosts", FileData::inline(b"127.0.0.1 x\n".to_vec()), meta(0o644)).unwrap();
    assert_eq!(t.symlink_metadata(b"etc/hosts").unwrap().file_type, FileType::File);
    assert_eq!(t.read(b"etc/os-release", 100).unwrap(), b"NAME=test\n", "the link's target is untouched");
    for (path, kind, at) in [
        (&b"a/b"[..], TreeErrorKind::IsADirectory, &b"a/b"[..]),
        (b"/", TreeErrorKind::IsRoot, b"/"),
        (b"etc/os-release/f", TreeErrorKind::NotADirectory, b"/etc/os-release"),
        (b"etc/dangling/f", TreeErrorKind::NotFound, b"/etc/dangling"),
        (b"../f", TreeErrorKind::InvalidName, b"/.."),
    ] {
        let e = t.put_file(path, FileData::inline(Vec::new()), meta(0o644)).unwrap_err();
        assert_eq!((e.kind(), e.path()), (kind, at), "{e}");
    }
    assert_eq!(t.metadata(b"a/b").unwrap().file_type, FileType::Dir, "a refused put changes nothing");
}

#[test]
fn graft_merges_directories_replaces_the_rest_and_keeps_hard_links() {
    let mut t = sample();
    let mut src = Tree::new(meta(0o700));
    src.put_file(b"etc/os-release", FileData::inline(b"NAME=new\n".to_vec()), meta(0o644)).unwrap();
    src.put_file(b"etc/new.conf", FileData::inline(b"n".to_vec()), meta(0o644)).unwrap();
    let f = src.put_file(b"b/deep/f", FileData::inline(b"f".to_vec()), meta(0o644)).unwrap();
    let z = src.create_dir_all(b"z", &meta(0o755)).unwrap();
    src.link(z, b"f2", f).unwrap();
    src.put_file(b"a", FileData::inline(b"file over dir".to_vec()), meta(0o644)).unwrap();
    let before = t.metadata(b"/").unwrap();
    t.graft(b"/", &src).unwrap();
    assert_eq!(t.read(b"etc/os-release", 100).unwrap(), b"NAME=new\n");
    assert_eq!(t.read(b"etc/hosts", 100).unwrap(), b"NAME=new\n", "merged: old entries stay");
    assert_eq!(t.read(b"etc/new.conf", 100).unwrap(), b"n");
    assert_eq!(t.resolve(b"b/deep/f", false).unwrap(), t.resolve(b"z/f2", false).unwrap(), "hard link kept");
    assert_eq!(t.metadata(b"z/f2").unwrap().nlink, 2);
    assert_eq!(t.metadata(b"a").unwrap().file_type, FileType::File, "a non-directory replaces");
    assert_eq!(t.metadata(b"/").unwrap().mode, before.mode, "the source root's metadata is not copied");
    // Into a directory reached through a link.
    t.graft(b"lib", &src).unwrap();
    assert_eq!(t.read(b"usr/lib/etc/new.conf", 1).unwrap(), b"n");
    for (path, kind) in [(&b"etc/os-release"[..], TreeErrorKind::NotADirectory), (b"nope", TreeErrorKind::NotFound)] {
        let e = t.graft(path, &src).unwrap_err();
        assert_eq!((e.kind(), e.path()), (kind, path), "{e}");
    }
}

#[test]
fn remove_takes_files_links_and_subtrees() {
    let mut t = sample();
    let c = t.resolve(b"a/b/c", false).unwrap();
    assert_eq!(t.remove(b"a/b/").unwrap(), t.node(c).as_dir().unwrap().parent());
    assert!(!t.exists(b"a/b/c") && t.exists(b"a"));
    t.remove(b"etc/hosts").unwrap();
    assert!(t.exists(b"etc/os-release"), "removing a link leaves its target");
    t.remove(b"lib/x").unwrap();
    assert!(!t.exists(b"usr/lib/x"), "links on the way are followed");
    t.remove(b"a/.").unwrap();
    assert!(!t.exists(b"a"), "a/. is a");
    for (path, kind) in [
        (&b"/"[..], TreeErrorKind::IsRoot),
        (b"", TreeErrorKind::IsRoot),
        (b"etc/nope", TreeErrorKind::NotFound),
        (b"etc/os-release/x", TreeErrorKind::NotADirectory),
        (b"etc/..", TreeErrorKind::InvalidName),
    ] {
        let e = t.remove(path).unwrap_err();
        assert_eq!((e.kind(), e.path()), (kind, path), "{e}");
    }
}

#[derive(Debug, Default)]
struct Counted {
    data: Vec<u8>,
    opens: AtomicUsize,
}
impl StreamSource for Counted {
    fn name(&self) -> String {
        "counted".into()
    }
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        self.opens.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(std::io::Cursor::new(self.data.clone())))
    }
}

#[test]
fn the_schedule_groups_by_stream_in_offset_order() {
    let a = Arc::new(Counted { data: (0..100).collect(), ..Counted::default() });
    let b = Arc::new(Counted { data: (100..200).collect(), ..Counted::default() });
    let (sa, sb): (Arc<dyn StreamSource>, Arc<dyn StreamSource>) = (a.clone(), b.clone());
    let at = |s: &Arc<dyn StreamSource>, offset: u64| FileData {
        size: 10,
        content: Content::Stream { stream: s.clone(), offset },
    };
    let mut s = Schedule::new();
    s.push(&at(&sb, 50), "b50");
    s.push(&FileData::inline(b"x".to_vec()), "loose1");
    s.push(&at(&sa, 30), "a30");
    s.push(&at(&sb, 10), "b10");
    s.push(&at(&sa, 0), "a0");
    s.push(&FileData::inline(b"y".to_vec()), "loose0");
    s.push(&at(&sa, 30), "a30-again");
    let files = [at(&sb, 50), at(&sa, 30), at(&sb, 10), at(&sa, 0)];
    assert_eq!(s.into_order(), ["loose1", "loose0", "b10", "b50", "a0", "a30", "a30-again"]);
    // Read in that order through one cursor, each stream is opened once.
    let mut c = StreamCursor::new();
    let mut buf = [0u8; 10];
    for f in [&files[2], &files[0], &files[3], &files[1]] {
        c.read_file(f, &mut buf, 0).unwrap();
    }
    assert_eq!(buf[0], 30);
    assert_eq!((a.opens.load(Ordering::Relaxed), b.opens.load(Ordering::Relaxed)), (1, 1));
    // Going back, or past the file's end, is handled: a reopen, an error.
    c.read_file(&files[2], &mut buf, 0).unwrap();
    assert_eq!((buf[0], b.opens.load(Ordering::Relaxed)), (110, 2));
    let e = c.read_file(&files[2], &mut buf, 5).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfBounds);
    let past = FileData { size: 10, content: Content::Stream { stream: sa, offset: 95 } };
    let e = c.read_file(&past, &mut buf, 0).unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Corrupt, "counted ends before a file it holds"));
}
