//! A tree written as a POSIX PAX tar, in tree walk order (directories' entries sorted by
//! name), so the same tree always gives the same bytes.

use crate::header::{self, BLOCK};
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use diskcast_tree::{Content, CursorPool, FileData, Kind, NodeId, Tree, display_name};
use std::collections::HashMap;
use std::io::{Read, Write};

/// What [`write_tar`] wrote and what it could not.
#[derive(Debug, Default, Clone)]
pub struct WriteReport {
    /// Members written (each hard link counts).
    pub members: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Paths tar cannot hold (sockets), one message each.
    pub skipped: Vec<String>,
}

/// Largest value an 12-byte octal field holds (sizes, times).
const MAX_OCTAL_11: u64 = (1 << 33) - 1;
/// Largest value an 8-byte octal field holds (ids, device numbers).
const MAX_OCTAL_7: u64 = (1 << 21) - 1;

/// Writes `tree` to `out` as a PAX tar: ustar headers, with a PAX extended header when a
/// path or link target is too long, a size, id or time does not fit, a time has
/// nanoseconds, or the node has xattrs (`SCHILY.xattr.*`, as GNU tar and bsdtar read
/// them). The second and later names of a file are hard link members. Sparse files are
/// written with their holes as zeros.
pub fn write_tar(tree: &Tree, out: &mut dyn Write, progress: &dyn Progress) -> Result<WriteReport> {
    let mut report = WriteReport::default();
    progress.start(tree.stats().file_bytes);
    let mut first_name: HashMap<NodeId, Vec<u8>> = HashMap::new();
    let cursors = CursorPool::new();
    let w = |out: &mut dyn Write, b: &[u8]| out.write_all(b).map_err(|e| Error::io("cannot write the tar", e));
    for (path, id) in tree.walk(NodeId::ROOT) {
        let node = tree.node(id);
        let mut name = if path.is_empty() { b".".to_vec() } else { path.clone() };
        let (typeflag, size, link): (u8, u64, Option<&[u8]>) = match &node.kind {
            Kind::Dir(_) => {
                name.push(b'/');
                (b'5', 0, None)
            }
            Kind::File(f) => match first_name.get(&id) {
                Some(first) => (b'1', 0, Some(first.as_slice())),
                None => (b'0', f.size, None),
            },
            Kind::Symlink(t) => (b'2', 0, Some(t.as_slice())),
            Kind::CharDev { .. } => (b'3', 0, None),
            Kind::BlockDev { .. } => (b'4', 0, None),
            Kind::Fifo => (b'6', 0, None),
            Kind::Socket => {
                report.skipped.push(format!("{}: sockets cannot be stored in a tar", display_name(&path)));
                continue;
            }
        };
        let (major, minor) = match node.kind {
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let mut h = [0u8; BLOCK];
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if !put_name(&mut h, &name) {
            pax.push((b"path".to_vec(), name.clone()));
            let short = &name[..name.len().min(99)];
            h[..short.len()].copy_from_slice(short);
        }
        if let Some(l) = link {
            if l.len() <= 100 {
                h[header::LINKNAME.0..header::LINKNAME.0 + l.len()].copy_from_slice(l);
            } else {
                pax.push((b"linkpath".to_vec(), l.to_vec()));
            }
        }
        let m = &node.meta;
        header::put_octal(&mut h, header::MODE, u64::from(m.mode & 0o7777));
        for (f, v, key) in [(header::UID, m.uid, "uid"), (header::GID, m.gid, "gid")] {
            if !header::put_octal(&mut h, f, u64::from(v)) || u64::from(v) > MAX_OCTAL_7 {
                header::put_octal(&mut h, f, 0);
                pax.push((key.into(), v.to_string().into_bytes()));
            }
        }
        if size > MAX_OCTAL_11 {
            header::put_octal(&mut h, header::SIZE, 0);
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        } else {
            header::put_octal(&mut h, header::SIZE, size);
        }
        match u64::try_from(m.mtime.sec) {
            Ok(s) if s <= MAX_OCTAL_11 && m.mtime.nsec == 0 => {
                header::put_octal(&mut h, header::MTIME, s);
            }
            _ => {
                header::put_octal(&mut h, header::MTIME, u64::try_from(m.mtime.sec).unwrap_or(0).min(MAX_OCTAL_11));
                pax.push((b"mtime".to_vec(), format_time(m.mtime.sec, m.mtime.nsec).into_bytes()));
            }
        }
        for (f, v, key) in [(header::DEVMAJOR, major, "SCHILY.devmajor"), (header::DEVMINOR, minor, "SCHILY.devminor")]
        {
            if u64::from(v) > MAX_OCTAL_7 {
                pax.push((key.into(), v.to_string().into_bytes()));
                header::put_octal(&mut h, f, 0);
            } else {
                header::put_octal(&mut h, f, u64::from(v));
            }
        }
        if typeflag != b'1' {
            for x in &node.xattrs {
                let mut k = b"SCHILY.xattr.".to_vec();
                k.extend_from_slice(&x.name);
                pax.push((k, x.value.clone()));
            }
        }
        h[header::TYPEFLAG] = typeflag;
        h[header::MAGIC.0..header::MAGIC.1].copy_from_slice(header::MAGIC_USTAR);
        header::set_checksum(&mut h);
        if !pax.is_empty() {
            w(out, &pax_header(&name, &pax))?;
        }
        w(out, &h)?;
        report.members += 1;
        if let Kind::File(f) = &node.kind
            && typeflag == b'0'
        {
            first_name.insert(id, path.clone());
            write_content(f, out, &cursors, progress)
                .map_err(|e| Error::new(e.kind(), format!("{}: {}", display_name(&path), e.message())))?;
            report.bytes += f.size;
            let pad = (BLOCK - usize_from_u64(f.size % u64_from_usize(BLOCK), "tar padding")?) % BLOCK;
            w(out, &[0u8; BLOCK][..pad])?;
        }
    }
    w(out, &[0u8; 2 * BLOCK])?;
    out.flush().map_err(|e| Error::io("cannot write the tar", e))?;
    progress.finish();
    Ok(report)
}

/// Puts `name` in the ustar name field, or split between prefix and name; false when it
/// does not fit either way.
fn put_name(h: &mut [u8; BLOCK], name: &[u8]) -> bool {
    if name.len() <= 100 {
        h[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a '/' so that the prefix has at most 155 bytes and the rest at most 100.
    for (i, &c) in name.iter().enumerate() {
        if c == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 && i + 1 < name.len() {
            h[header::PREFIX.0..header::PREFIX.0 + i].copy_from_slice(&name[..i]);
            h[..name.len() - i - 1].copy_from_slice(&name[i + 1..]);
            return true;
        }
    }
    false
}

fn format_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    let (s, n, sign) = if sec < 0 { (-(sec + 1), 1_000_000_000 - nsec, "-") } else { (sec, nsec, "") };
    let frac = format!("{n:09}");
    format!("{sign}{s}.{}", frac.trim_end_matches('0'))
}

/// An `x` header and its records (`"%d %s=%s\n"`, the length counting itself).
fn pax_header(name: &[u8], records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len = len.to_string().len() + body;
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.push(b' ');
        data.extend_from_slice(k);
        data.push(b'=');
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = [0u8; BLOCK];
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let base = trimmed.rsplit(|&c| c == b'/').next().unwrap_or(b"x");
    let mut hname = b"PaxHeaders/".to_vec();
    hname.extend_from_slice(&base[..base.len().min(100 - hname.len())]);
    h[..hname.len()].copy_from_slice(&hname);
    header::put_octal(&mut h, header::MODE, 0o644);
    header::put_octal(&mut h, header::UID, 0);
    header::put_octal(&mut h, header::GID, 0);
    header::put_octal(&mut h, header::SIZE, u64_from_usize(data.len()));
    header::put_octal(&mut h, header::MTIME, 0);
    h[header::TYPEFLAG] = b'x';
    h[header::MAGIC.0..header::MAGIC.1].copy_from_slice(header::MAGIC_USTAR);
    header::set_checksum(&mut h);
    let mut out = h.to_vec();
    out.extend_from_slice(&data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    out
}

/// Writes a file's `size` bytes. Files of a stream go through the pool's cursors, so a
/// tar rewritten from a tar reads its source about once.
fn write_content(f: &FileData, out: &mut dyn Write, cursors: &CursorPool, progress: &dyn Progress) -> Result<()> {
    let mut buf = vec![0u8; (1usize << 20).min(usize::try_from(f.size).unwrap_or(usize::MAX)).max(1)];
    let mut done = 0u64;
    let mut reader: Option<Box<dyn Read + Send + '_>> = None;
    while done < f.size {
        let n = usize_from_u64((f.size - done).min(u64_from_usize(buf.len())), "tar copy buffer")?;
        match &f.content {
            Content::Stream { .. } => cursors.read_file(f, &mut buf[..n], done)?,
            Content::Zero => buf[..n].fill(0),
            _ => {
                let r = match &mut reader {
                    Some(r) => r,
                    None => reader.insert(f.reader()?),
                };
                r.read_exact(&mut buf[..n]).map_err(|e| match e.into_inner() {
                    Some(inner) => match inner.downcast::<Error>() {
                        Ok(e) => *e,
                        Err(other) => Error::io("cannot read", std::io::Error::other(other)),
                    },
                    None => Error::corrupt("file ends before its size"),
                })?;
            }
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io("cannot write the tar", e))?;
        done += u64_from_usize(n);
        progress.advance(u64_from_usize(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_records() {
        assert_eq!(format_time(5, 0), "5");
        assert_eq!(format_time(5, 500_000_000), "5.5");
        assert_eq!(format_time(-2, 750_000_000), "-1.25");
        let h = pax_header(b"a/b", &[(b"path".to_vec(), vec![b'x'; 95])]);
        let text = &h[BLOCK..];
        assert!(text.starts_with(b"105 path="), "{:?}", String::from_utf8_lossy(&text[..10]));
    }

    #[test]
    fn long_names_split_at_a_slash() {
        let mut h = [0u8; BLOCK];
        let name = [vec![b'a'; 120], b"/".to_vec(), vec![b'b'; 50]].concat();
        assert!(put_name(&mut h, &name));
        assert!(!put_name(&mut [0u8; BLOCK], &vec![b'c'; 300]));
    }
}
