//! Shared by the ISO tests: a source tree with every kind of entry, opening discs, and
//! comparing a tree we read with what an independent tool extracted.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::BlockRead;
use diskcast_iso9660::Iso9660Reader;
use diskcast_raw::RawReader;
use diskcast_tree::{FsReader, Kind, NodeId, ReadOptions, Tree};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Runs a tool, failing the test (with its stderr) when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) -> String {
    run("bash", &["-euc", script])
}

/// A source directory with plain files, odd modes, deep directories, long and non-ASCII
/// names, relative and absolute symlinks, a hard link, a fifo and an empty file.
pub fn make_source(root: &Path) {
    let deep = "d1/d2/d3/d4/d5/d6/d7/d8/d9/d10";
    let long = "l".repeat(180);
    sh(&format!(
        "cd '{}'
        mkdir -p {deep} 'sub dir/Mixed Case' empty-dir
        echo hello > hello.txt; chmod 4755 hello.txt
        head -c 300000 /dev/urandom > random.bin
        echo deep > {deep}/deep.txt
        printf 'long' > {long}.txt
        printf 'sp' > 'sub dir/Mixed Case/File With Spaces.TXT'
        printf 'é' > 'sub dir/héllo wörld.txt'
        ln -s hello.txt rel-link
        ln -s /etc/passwd abs-link
        ln -s ../../hello.txt 'sub dir/Mixed Case/up-link'
        ln hello.txt hard-link
        mkfifo fifo
        : > empty
        chmod 700 'sub dir'; chmod 640 random.bin
        touch -d '2001-02-03 04:05:06' random.bin",
        root.display()
    ));
}

pub fn open(path: &Path) -> Arc<dyn BlockRead> {
    Arc::new(RawReader::open(path).unwrap())
}

pub fn read(path: &Path, tree: Option<&str>) -> Tree {
    let disk = open(path);
    assert!(Iso9660Reader.probe(disk.as_ref()).unwrap());
    let opts = ReadOptions { tree: tree.map(str::to_string), label: path.display().to_string() };
    Iso9660Reader.read(disk, &opts).unwrap()
}

pub fn file_bytes(tree: &Tree, id: NodeId) -> Vec<u8> {
    let f = tree.node(id).as_file().unwrap();
    let mut buf = vec![0u8; f.size as usize];
    f.read_at(&mut buf, 0).unwrap();
    buf
}

/// What to compare besides paths, types and content.
#[derive(Clone, Copy)]
pub struct Check {
    pub modes: bool,
    pub mtimes: bool,
    pub symlinks: bool,
    pub hardlinks: bool,
}

/// Asserts `tree` and the extracted directory `dir` hold the same paths with the same
/// types, content, and (as asked) modes, mtimes, link targets and hard links. Paths for
/// which `skip` is true are left out on both sides.
pub fn assert_same(tree: &Tree, dir: &Path, check: Check, skip: &dyn Fn(&str) -> bool) {
    let mut ours = BTreeMap::new();
    for (p, id) in tree.walk(NodeId::ROOT) {
        let p = String::from_utf8(p).unwrap();
        if !p.is_empty() && !skip(&p) {
            ours.insert(p, id);
        }
    }
    let mut theirs = BTreeMap::new();
    collect(dir, dir, &mut theirs);
    theirs.retain(|p, _| !skip(p));
    let a: Vec<_> = ours.keys().collect();
    let b: Vec<_> = theirs.keys().collect();
    assert_eq!(a, b, "paths differ from {}", dir.display());
    let mut inode_to_node: HashMap<u64, NodeId> = HashMap::new();
    for (p, id) in &ours {
        let node = tree.node(*id);
        let md = std::fs::symlink_metadata(dir.join(p)).unwrap();
        let ft = md.file_type();
        match &node.kind {
            Kind::Dir(_) => assert!(ft.is_dir(), "{p}: dir"),
            Kind::File(_) => {
                assert!(ft.is_file(), "{p}: file");
                assert_eq!(file_bytes(tree, *id), std::fs::read(dir.join(p)).unwrap(), "{p}: content");
                if check.hardlinks && md.nlink() > 1 {
                    let prev = inode_to_node.entry(md.ino()).or_insert(*id);
                    assert_eq!(*prev, *id, "{p}: hard link");
                }
            }
            Kind::Symlink(t) => {
                assert!(ft.is_symlink(), "{p}: symlink");
                if check.symlinks {
                    assert_eq!(t.as_slice(), std::fs::read_link(dir.join(p)).unwrap().as_os_str().as_encoded_bytes());
                }
            }
            Kind::Fifo => {
                use std::os::unix::fs::FileTypeExt;
                assert!(ft.is_fifo(), "{p}: fifo");
            }
            other => panic!("{p}: unexpected {other:?}"),
        }
        if check.modes && !ft.is_symlink() {
            assert_eq!(node.meta.mode, md.permissions().mode() & 0o7777, "{p}: mode");
        }
        if check.mtimes && !ft.is_symlink() && !ft.is_dir() {
            assert_eq!(node.meta.mtime.sec, md.mtime(), "{p}: mtime");
        }
    }
}

fn collect(base: &Path, dir: &Path, out: &mut BTreeMap<String, ()>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.insert(p.strip_prefix(base).unwrap().to_str().unwrap().to_string(), ());
        if e.file_type().unwrap().is_dir() {
            collect(base, &p, out);
        }
    }
}

/// A bootable hybrid disc as installers are made: isolinux for BIOS with a boot info
/// table, a FAT image as the UEFI El Torito entry, isohybrid MBR and GPT.
pub fn make_boot_iso(dir: &Path) -> std::path::PathBuf {
    let stage = dir.join("stage");
    let iso = dir.join("boot.iso");
    sh(&format!(
        "mkdir -p '{s}/isolinux' '{s}/boot'; cp /usr/lib/ISOLINUX/isolinux.bin '{s}/isolinux/'
         mkfs.fat -C -n EFIBOOT '{s}/boot/efiboot.img' 2048 >/dev/null; echo hi > '{s}/hello'
         xorriso -as mkisofs -quiet -o '{i}' -V BOOTISO -R -J \
           -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
           -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
           -eltorito-alt-boot -e boot/efiboot.img -no-emul-boot -isohybrid-gpt-basdat '{s}'",
        s = stage.display(),
        i = iso.display()
    ));
    iso
}
