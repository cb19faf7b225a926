//! A directory tree as a comparable manifest (walked with lstat, never following links),
//! to judge an extraction against what GNU tar, bsdtar or the source directory hold.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One entry: what `ls -l`, `readlink`, `getfattr` and the content say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `-`, `l`, `c`, `b`, `p`, `s`.
    pub kind: char,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of regular files.
    pub size: u64,
    /// Link target of symlinks; device number of devices (major:minor).
    pub target: Vec<u8>,
    /// Content of regular files.
    pub content: Vec<u8>,
    /// Modification time (seconds, nanoseconds); directories and symlinks included.
    pub mtime: (i64, i64),
    /// `user.*` extended attributes.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Hard link group: the first path (in sorted order) with the same inode.
    pub link_group: Vec<u8>,
}

/// Which fields to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub owners: bool,
    pub mtime_ns: bool,
    pub dir_mtimes: bool,
    pub xattrs: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare { owners: true, mtime_ns: true, dir_mtimes: true, xattrs: true }
    }
}

/// Every entry under `root` (not `root` itself), keyed by relative path bytes.
pub fn manifest(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    for p in paths {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            '-'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let target = match kind {
            'l' => std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            'c' | 'b' => format!("{}", md.rdev()).into_bytes(),
            _ => Vec::new(),
        };
        let content = if kind == '-' { std::fs::read(&p).unwrap() } else { Vec::new() };
        let link_group = if kind == '-' {
            inodes.entry((md.dev(), md.ino())).or_insert_with(|| rel.clone()).clone()
        } else {
            Vec::new()
        };
        let xattrs = if kind == 'l' { Vec::new() } else { user_xattrs(&p) };
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == '-' { md.len() } else { 0 },
                target,
                content,
                mtime: (md.mtime(), md.mtime_nsec()),
                xattrs,
                link_group,
            },
        );
    }
    out
}

/// `user.*` xattrs through getfattr (an independent tool), sorted.
fn user_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let out = std::process::Command::new("getfattr")
        .args(["--absolute-names", "-h", "-d", "-e", "hex", "-m", "^user\\."])
        .arg(p)
        .output()
        .unwrap_or_else(|e| panic!("getfattr is required (apt-get install attr): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, val)| {
            let hex = val.trim_start_matches("0x");
            let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
            (k.as_bytes().to_vec(), bytes)
        })
        .collect();
    v.sort();
    v
}

/// Panics with every difference between two manifests (fields chosen by `cmp`).
pub fn assert_same(a: &BTreeMap<Vec<u8>, Entry>, b: &BTreeMap<Vec<u8>, Entry>, cmp: Compare, what: &str) {
    let mut diffs = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, ea) in a {
        let Some(eb) = b.get(p) else {
            diffs.push(format!("{} missing on the right", show(p)));
            continue;
        };
        let mut fa = ea.clone();
        let mut fb = eb.clone();
        for e in [&mut fa, &mut fb] {
            if !cmp.owners {
                (e.uid, e.gid) = (0, 0);
            }
            if !cmp.mtime_ns {
                e.mtime.1 = 0;
            }
            if !cmp.dir_mtimes && e.kind == 'd' {
                e.mtime = (0, 0);
            }
            if !cmp.xattrs {
                e.xattrs.clear();
            }
            if e.kind == 'l' {
                // Symlink modes are always 0777 on Linux, and their times are not
                // always restorable: only the target counts.
                e.mode = 0;
            }
        }
        if fa != fb {
            fa.content.truncate(64);
            fb.content.truncate(64);
            diffs.push(format!("{}:\n  left  {fa:?}\n  right {fb:?}", show(p)));
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("{} missing on the left", show(p)));
    }
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
}
