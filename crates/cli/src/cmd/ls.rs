//! `diskcast ls`: list a tree like `ls -l`, or as JSON.

use crate::common::args::{OutputFormat, SourceArgs};
use crate::common::{threads, tree_source};
use clap::Args;
use diskcast_block::{Error, Result};
use diskcast_tree::{Kind, Node, NodeId, Tree, display_name};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Long listing: type and mode, owner uid/gid, size, mtime, name, `-> target`.
    #[arg(short = 'l')]
    pub long: bool,
    /// List everything below PATH, with paths relative to it.
    #[arg(short = 'R')]
    pub recursive: bool,
    /// Output as human text or JSON (an array of entries; names that are not UTF-8 also
    /// get a `path_hex` field with their exact bytes).
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The source: directory, tar, or disk image (DISK, DISK:PART by partition number, name
    /// or type, DISK:VG/LV for an LVM logical volume).
    pub src: String,
    /// What to list inside the tree (default: its root). Symlinks are followed inside
    /// the tree, never out of it.
    pub path: Option<OsString>,
}

pub fn run(a: LsArgs) -> Result<u8> {
    let opened = tree_source::open(&a.src, &a.source, threads(None)?)?;
    let tree = &opened.tree;
    let path = a.path.as_ref().map(|p| p.as_bytes().to_vec()).unwrap_or_else(|| b"/".to_vec());
    // `ls -l link` shows the link itself; `ls link` lists what it points to.
    let id = tree.resolve(&path, !a.long || path.ends_with(b"/")).map_err(|e| Error::from(e).with_file(&a.src))?;
    let mut rows: Vec<(Vec<u8>, NodeId)> = Vec::new();
    match tree.node(id).as_dir() {
        Some(_) if a.recursive => rows.extend(tree.walk(id).skip(1)),
        Some(d) => rows.extend(d.entries().map(|(n, c)| (n.to_vec(), c))),
        None => rows.push((path.rsplit(|&c| c == b'/').next().unwrap_or(&path).to_vec(), id)),
    }
    let links = tree.link_counts();
    let mut out = std::io::stdout().lock();
    let w = |e: std::io::Error| Error::io("cannot write to standard output", e);
    match a.output {
        OutputFormat::Json => {
            let v: Vec<Value> = rows.iter().map(|(p, id)| entry_json(tree, p, *id, links[id.index()])).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&Value::Array(v)).unwrap_or_default()).map_err(w)?;
        }
        OutputFormat::Human => {
            for (p, id) in &rows {
                let mut line = Vec::new();
                if a.long {
                    line.extend_from_slice(long_prefix(tree.node(*id), links[id.index()]).as_bytes());
                }
                escape_into(&mut line, p);
                if let (true, Kind::Symlink(t)) = (a.long, &tree.node(*id).kind) {
                    line.extend_from_slice(b" -> ");
                    escape_into(&mut line, t);
                }
                line.push(b'\n');
                out.write_all(&line).map_err(w)?;
            }
        }
    }
    Ok(0)
}

/// Appends a name with control characters (a newline in a hostile name) and backslashes
/// as `\ooo`, so each entry stays one line; other bytes are written as they are.
fn escape_into(out: &mut Vec<u8>, name: &[u8]) {
    for &c in name {
        if c < 0x20 || c == 0x7f || c == b'\\' {
            out.extend_from_slice(format!("\\{c:03o}").as_bytes());
        } else {
            out.push(c);
        }
    }
}

/// `drwxr-xr-x  2 0/0        4096 2024-01-02 03:04 `
fn long_prefix(n: &Node, nlink: u32) -> String {
    let size = match &n.kind {
        Kind::File(f) => f.size.to_string(),
        Kind::Symlink(t) => t.len().to_string(),
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => format!("{major}, {minor}"),
        _ => "0".into(),
    };
    let owner = format!("{}/{}", n.meta.uid, n.meta.gid);
    format!("{} {nlink:>3} {owner:<11} {size:>12} {} ", mode_string(n), format_time(n.meta.mtime.sec))
}

/// `-rwsr-xr-x` as ls prints it.
pub fn mode_string(n: &Node) -> String {
    let m = n.meta.mode;
    let mut s = String::with_capacity(10);
    s.push(n.kind.letter());
    for (shift, special, lower, upper) in [(6, 0o4000, 's', 'S'), (3, 0o2000, 's', 'S'), (0, 0o1000, 't', 'T')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn format_time(sec: i64) -> String {
    let c = diskcast_tree::Timestamp::from_secs(sec).civil();
    format!("{:04}-{:02}-{:02} {:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute)
}

fn entry_json(tree: &Tree, path: &[u8], id: NodeId, nlink: u32) -> Value {
    let n = tree.node(id);
    let mut v = json!({
        "path": String::from_utf8_lossy(path),
        "type": n.kind.name(),
        "mode": format!("{:04o}", n.meta.mode),
        "uid": n.meta.uid,
        "gid": n.meta.gid,
        "mtime": n.meta.mtime.sec,
        "mtime_nsec": n.meta.mtime.nsec,
        "nlink": nlink,
    });
    let o = v.as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut o = o;
    if std::str::from_utf8(path).is_err() {
        o.insert("path_hex".into(), hex(path).into());
    }
    match &n.kind {
        Kind::File(f) => {
            o.insert("size".into(), f.size.into());
        }
        Kind::Symlink(t) => {
            o.insert("target".into(), String::from_utf8_lossy(t).into());
            if std::str::from_utf8(t).is_err() {
                o.insert("target_hex".into(), hex(t).into());
            }
        }
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
            o.insert("major".into(), (*major).into());
            o.insert("minor".into(), (*minor).into());
        }
        _ => {}
    }
    if !n.xattrs.is_empty() {
        let names: Vec<Value> =
            n.xattrs.iter().map(|x| display_name(&x.name).trim_matches('"').to_string().into()).collect();
        o.insert("xattrs".into(), names.into());
    }
    Value::Object(o)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let mut v = Vec::new();
        escape_into(&mut v, b"a\nb\\c\xff");
        assert_eq!(v, b"a\\012b\\134c\xff");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_time(-1), "1969-12-31 23:59");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
    }
}
