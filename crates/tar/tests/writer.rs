//! What only a PAX header can carry: big ids, times before 1970 and with nanoseconds,
//! long link targets and names, binary xattr values, big device numbers. GNU tar must
//! list it, and our reader must read it back unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::progress::NoProgress;
use diskcast_tree::{FileData, Kind, Meta, Node, NodeId, Timestamp, Tree, Xattr};
use std::process::Command;

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} is required: {e}"));
    assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pax_only_values_survive_gnu_tar_and_our_reader() {
    let mut t = Tree::new(Meta::new(0o755, Timestamp::from_secs(1_000)));
    let mut meta = Meta::new(0o640, Timestamp { sec: -1001, nsec: 500_000_000 });
    meta.uid = 3_000_000;
    meta.gid = 4_000_000;
    let mut f = Node::new(meta.clone(), Kind::File(FileData::inline(b"payload".to_vec())));
    f.xattrs.push(Xattr { name: b"user.bin".to_vec(), value: vec![0, 1, 2, 255, b'\n', b'='] });
    let long_name = vec![b'n'; 200];
    t.insert(NodeId::ROOT, &long_name, f).unwrap();
    let target = "t/".repeat(100);
    t.insert(
        NodeId::ROOT,
        b"link",
        Node::new(Meta::new(0o777, Timestamp::from_secs(5)), Kind::Symlink(target.clone().into_bytes())),
    )
    .unwrap();
    t.insert(
        NodeId::ROOT,
        b"dev",
        Node::new(Meta::new(0o600, Timestamp::from_secs(5)), Kind::CharDev { major: 5_000_000, minor: 7 }),
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("out.tar");
    let mut bytes = Vec::new();
    diskcast_tar::write_tar(&t, &mut bytes, &NoProgress).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let listing = run("tar", &["-tvf", path.to_str().unwrap(), "--numeric-owner"]);
    assert!(listing.contains("3000000/4000000"), "{listing}");
    assert!(listing.contains(&format!("link -> {target}")), "{listing}");
    assert!(listing.contains(&String::from_utf8(long_name.clone()).unwrap()), "{listing}");
    assert!(listing.contains("1969-12-31"), "{listing}");
    run("bsdtar", &["-tvf", path.to_str().unwrap()]);

    let back = diskcast_tar::read_tar(&path).unwrap().tree;
    let id = back.resolve(&long_name, false).unwrap();
    let n = back.node(id);
    assert_eq!(n.meta.uid, 3_000_000);
    assert_eq!(n.meta.gid, 4_000_000);
    assert_eq!(n.meta.mtime, Timestamp { sec: -1001, nsec: 500_000_000 });
    assert_eq!(n.xattrs, vec![Xattr { name: b"user.bin".to_vec(), value: vec![0, 1, 2, 255, b'\n', b'='] }]);
    let dev = back.node(back.resolve(b"dev", false).unwrap());
    assert!(matches!(dev.kind, Kind::CharDev { major: 5_000_000, minor: 7 }), "{:?}", dev.kind);
    let link = back.node(back.resolve(b"link", false).unwrap());
    assert!(matches!(&link.kind, Kind::Symlink(t) if t == target.as_bytes()));
}
