//! A tree written as a POSIX PAX tar, in tree walk order (directories' entries sorted by
//! name), so the same tree always gives the same bytes.

use crate::header::{self, BLOCK};
use crate::reader::SparseRun;
use diskcast_block::progress::Progress;
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use diskcast_tree::{Content, CursorPool, FileData, Kind, Meta, NodeId, Tree, Xattr, display_name};
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
        let xattrs: &[Xattr] = if typeflag == b'1' { &[] } else { &node.xattrs };
        let fields = Fields { typeflag, size, link, major, minor, xattrs };
        w(out, &ustar_header(&name, &node.meta, &fields))?;
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

/// What a member's header says besides its name and metadata.
struct Fields<'a> {
    typeflag: u8,
    size: u64,
    link: Option<&'a [u8]>,
    major: u32,
    minor: u32,
    xattrs: &'a [Xattr],
}

/// The ustar header of a member, preceded by a PAX extended header when a path or link
/// target is too long, a size, id or time does not fit, a time has nanoseconds, or there
/// are xattrs (`SCHILY.xattr.*`, as GNU tar and bsdtar read them).
fn ustar_header(name: &[u8], m: &Meta, f: &Fields<'_>) -> Vec<u8> {
    let mut h = [0u8; BLOCK];
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if !put_name(&mut h, name) {
        pax.push((b"path".to_vec(), name.to_vec()));
        let short = &name[..name.len().min(99)];
        h[..short.len()].copy_from_slice(short);
    }
    if let Some(l) = f.link {
        if l.len() <= 100 {
            h[header::LINKNAME.0..header::LINKNAME.0 + l.len()].copy_from_slice(l);
        } else {
            pax.push((b"linkpath".to_vec(), l.to_vec()));
        }
    }
    header::put_octal(&mut h, header::MODE, u64::from(m.mode & 0o7777));
    for (field, v, key) in [(header::UID, m.uid, "uid"), (header::GID, m.gid, "gid")] {
        if !header::put_octal(&mut h, field, u64::from(v)) || u64::from(v) > MAX_OCTAL_7 {
            header::put_octal(&mut h, field, 0);
            pax.push((key.into(), v.to_string().into_bytes()));
        }
    }
    if f.size > MAX_OCTAL_11 {
        header::put_octal(&mut h, header::SIZE, 0);
        pax.push((b"size".to_vec(), f.size.to_string().into_bytes()));
    } else {
        header::put_octal(&mut h, header::SIZE, f.size);
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
    for (field, v, key) in
        [(header::DEVMAJOR, f.major, "SCHILY.devmajor"), (header::DEVMINOR, f.minor, "SCHILY.devminor")]
    {
        if u64::from(v) > MAX_OCTAL_7 {
            pax.push((key.into(), v.to_string().into_bytes()));
            header::put_octal(&mut h, field, 0);
        } else {
            header::put_octal(&mut h, field, u64::from(v));
        }
    }
    for x in f.xattrs {
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(&x.name);
        pax.push((k, x.value.clone()));
    }
    h[header::TYPEFLAG] = f.typeflag;
    h[header::MAGIC.0..header::MAGIC.1].copy_from_slice(header::MAGIC_USTAR);
    header::set_checksum(&mut h);
    let mut out = if pax.is_empty() { Vec::new() } else { pax_header(name, &pax) };
    out.extend_from_slice(&h);
    out
}

/// A tar written member by member, in the caller's order (an OVA must start with its
/// descriptor, so the name order [`write_tar`] uses does not fit), each file's bytes
/// copied from a reader.
pub struct MemberWriter<'a> {
    out: &'a mut dyn Write,
    progress: &'a dyn Progress,
}

impl std::fmt::Debug for MemberWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberWriter").finish_non_exhaustive()
    }
}

/// Old GNU sparse entries in the header itself.
const GNU_SPARSE_IN_HEADER: usize = 4;
/// Old GNU sparse entries in each extension block (21 * 24 bytes, then `isextended`).
const GNU_SPARSE_PER_BLOCK: usize = 21;

impl<'a> MemberWriter<'a> {
    /// A writer into `out`, advancing `progress` by the file bytes written.
    pub fn new(out: &'a mut dyn Write, progress: &'a dyn Progress) -> Self {
        MemberWriter { out, progress }
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io("cannot write the tar", e))
    }

    /// A regular file `name` of `size` bytes read from `data`, which must hold at least
    /// that many: a POSIX ustar header (PAX records only for what ustar cannot hold, a
    /// size of 8 GiB or more).
    pub fn file(&mut self, name: &[u8], meta: &Meta, size: u64, data: &mut dyn Read) -> Result<()> {
        let fields = Fields { typeflag: b'0', size, link: None, major: 0, minor: 0, xattrs: &[] };
        self.put(&ustar_header(name, meta, &fields))?;
        self.copy(name, size, data)
    }

    /// An old GNU sparse member (type `S`, what `tar --format=oldgnu -S` writes):
    /// `real_size` bytes of which only `runs` (in order, not overlapping) are stored,
    /// their bytes read from `data` one run after another; the rest reads as zeros.
    /// Every run starts and ends on a 512-byte boundary (or ends at `real_size`): GNU
    /// tar extracts each run as whole blocks, bsdtar as a plain byte stream, and only
    /// block-aligned runs (what GNU tar itself writes) read the same in both.
    /// Numbers too large for octal are written in GNU's base-256, as GNU tar does.
    pub fn gnu_sparse(
        &mut self,
        name: &[u8],
        meta: &Meta,
        real_size: u64,
        runs: &[SparseRun],
        data: &mut dyn Read,
    ) -> Result<()> {
        if name.len() > 100 {
            return Err(
                Error::argument("an old GNU tar member name holds at most 100 bytes").with_file(display_name(name))
            );
        }
        let mut map: Vec<SparseRun> = runs.to_vec();
        let mut end = 0u64;
        for r in &map {
            let run_end = r.offset.checked_add(r.len).filter(|&e| r.offset >= end && e <= real_size);
            end = run_end.ok_or_else(|| {
                Error::argument(format!("sparse run at {} overlaps another or ends past {real_size}", r.offset))
            })?;
            let block = u64_from_usize(BLOCK);
            if !r.offset.is_multiple_of(block) || !(end.is_multiple_of(block) || end == real_size) {
                return Err(Error::argument(format!(
                    "sparse run at {} of {} bytes is not block-aligned (GNU tar reads runs as whole blocks)",
                    r.offset, r.len
                )));
            }
        }
        // GNU tar ends the map of a file whose tail is a hole with an empty run there.
        if end < real_size || map.is_empty() {
            map.push(SparseRun { offset: real_size, len: 0 });
        }
        let stored: u64 = runs.iter().map(|r| r.len).sum();
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        header::put_octal(&mut h, header::MODE, u64::from(meta.mode & 0o7777));
        header::put_number(&mut h, header::UID, u64::from(meta.uid));
        header::put_number(&mut h, header::GID, u64::from(meta.gid));
        header::put_number(&mut h, header::SIZE, stored);
        header::put_number(&mut h, header::MTIME, u64::try_from(meta.mtime.sec).unwrap_or(0));
        h[header::TYPEFLAG] = b'S';
        h[header::MAGIC.0..header::MAGIC.1].copy_from_slice(header::MAGIC_GNU);
        let (first, rest) = map.split_at(map.len().min(GNU_SPARSE_IN_HEADER));
        put_sparse_entries(&mut h[header::GNU_SPARSE..header::GNU_ISEXTENDED], first);
        h[header::GNU_ISEXTENDED] = u8::from(!rest.is_empty());
        header::put_number(&mut h, header::GNU_REALSIZE, real_size);
        header::set_checksum(&mut h);
        self.put(&h)?;
        let blocks: Vec<&[SparseRun]> = rest.chunks(GNU_SPARSE_PER_BLOCK).collect();
        for (i, chunk) in blocks.iter().enumerate() {
            let mut b = [0u8; BLOCK];
            put_sparse_entries(&mut b[..GNU_SPARSE_PER_BLOCK * 24], chunk);
            b[GNU_SPARSE_PER_BLOCK * 24] = u8::from(i + 1 < blocks.len());
            self.put(&b)?;
        }
        self.copy(name, stored, data)
    }

    /// Copies `size` bytes of `name` from `data`, then pads to a block.
    fn copy(&mut self, name: &[u8], size: u64, data: &mut dyn Read) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = usize_from_u64(left.min(u64_from_usize(buf.len())), "tar copy buffer")?;
            data.read_exact(&mut buf[..n])
                .map_err(|e| Error::io(format!("cannot read the data of {}", display_name(name)), e))?;
            self.put(&buf[..n])?;
            self.progress.advance(u64_from_usize(n));
            left -= u64_from_usize(n);
        }
        let pad = (BLOCK - usize_from_u64(size % u64_from_usize(BLOCK), "tar padding")?) % BLOCK;
        self.put(&[0u8; BLOCK][..pad])
    }

    /// Ends the archive (two zero blocks) and flushes it.
    pub fn finish(mut self) -> Result<()> {
        self.put(&[0u8; 2 * BLOCK])?;
        self.out.flush().map_err(|e| Error::io("cannot write the tar", e))
    }
}

/// Old GNU sparse entries (offset, numbytes: 12 bytes each) into `area`.
fn put_sparse_entries(area: &mut [u8], runs: &[SparseRun]) {
    for (i, r) in runs.iter().enumerate() {
        header::put_number(area, (i * 24, i * 24 + 12), r.offset);
        header::put_number(area, (i * 24 + 12, i * 24 + 24), r.len);
    }
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

    /// Old GNU sparse members (header map plus extension blocks, base-256 sizes past
    /// 8 GiB) read back by our reader with the same map; unaligned runs are refused.
    #[test]
    fn gnu_sparse_members_read_back() {
        let progress = diskcast_block::progress::NoProgress;
        let runs: Vec<SparseRun> = (0..30).map(|i| SparseRun { offset: i * (1 << 20), len: 1024 }).collect();
        let real = 16u64 << 30;
        let data: Vec<u8> = (0..30 * 1024u32).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut out = Vec::new();
        let mut w = MemberWriter::new(&mut out, &progress);
        let meta = Meta::new(0o644, diskcast_tree::Timestamp::from_secs(0));
        w.gnu_sparse(b"disk.raw", &meta, real, &runs, &mut data.as_slice()).unwrap();
        w.file(b"after", &meta, 3, &mut &b"abc"[..]).unwrap();
        w.finish().unwrap();
        let mut r = crate::TarReader::new(Box::new(std::io::Cursor::new(out)), "t");
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.size, m.data_len), (real, 30 * 1024));
        let mut want = runs.clone();
        want.push(SparseRun { offset: real, len: 0 });
        let got: Vec<SparseRun> = m.sparse.unwrap().into_iter().filter(|r| r.len > 0 || r.offset == real).collect();
        assert_eq!(got, want);
        assert_eq!(r.next_member().unwrap().unwrap().path, b"after");

        let mut sink = Vec::new();
        let mut w = MemberWriter::new(&mut sink, &progress);
        let odd = [SparseRun { offset: 0, len: 100 }, SparseRun { offset: 4096, len: 512 }];
        let e = w.gnu_sparse(b"x", &meta, 8192, &odd, &mut &[0u8; 612][..]).unwrap_err();
        assert!(e.to_string().contains("block-aligned"), "{e}");
    }

    #[test]
    fn long_names_split_at_a_slash() {
        let mut h = [0u8; BLOCK];
        let name = [vec![b'a'; 120], b"/".to_vec(), vec![b'b'; 50]].concat();
        assert!(put_name(&mut h, &name));
        assert!(!put_name(&mut [0u8; BLOCK], &vec![b'c'; 300]));
    }
}
