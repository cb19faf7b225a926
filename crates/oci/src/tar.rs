//! A streaming tar reader: walks a (decompressed) layer front to back once and reports
//! each member with the offset of its data in the stream, so file content can stay a
//! reference (`Content::Stream`) instead of a copy.
//!
//! Reads ustar, GNU (long names `L`/`K`, old sparse `S`, base-256 numbers) and PAX
//! (`path`, `linkpath`, `size`, ids, fractional times, `SCHILY.xattr.*`,
//! `LIBARCHIVE.xattr.*`, global headers, GNU sparse 0.0, 0.1 and 1.0), as POSIX
//! pax(1) and GNU tar document them. Every size and count from the stream is bounded.

use diskcast_block::{Error, Result};
use diskcast_tree::{Timestamp, Xattr};
use std::collections::BTreeMap;
use std::io::Read;

const BLOCK: u64 = 512;
/// Largest PAX extended header or GNU long name/link accepted: paths are at most a few
/// KiB, xattrs at most 64 KiB each; anything larger is an attack on memory.
pub const MAX_META_BYTES: u64 = 8 << 20;
/// Most data segments one sparse file may have.
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (also contiguous files, type `7`).
    File,
    /// A hard link to the member named by `link`.
    HardLink,
    /// A symbolic link to `link`.
    Symlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A directory.
    Dir,
    /// A named pipe.
    Fifo,
}

/// One tar member, with everything the extended headers said about it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path, as stored (may be relative, absolute or hostile: callers check it).
    pub path: Vec<u8>,
    /// Link target for hard and symbolic links.
    pub link: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time (PAX, GNU).
    pub atime: Option<Timestamp>,
    /// Change time (PAX, GNU).
    pub ctime: Option<Timestamp>,
    /// The file's size (for a sparse file, its full size with the holes).
    pub size: u64,
    /// Where the member's stored bytes start in the stream.
    pub data_offset: u64,
    /// How many bytes are stored (for a sparse file, only its data segments).
    pub data_len: u64,
    /// Device numbers.
    pub dev_major: u32,
    /// Device numbers.
    pub dev_minor: u32,
    /// Extended attributes.
    pub xattrs: Vec<Xattr>,
    /// For a sparse file, its data segments `(file offset, len)`: stored one after the
    /// other from `data_offset`; the rest of the file is holes.
    pub sparse: Option<Vec<(u64, u64)>>,
}

/// A byte stream a tar is read from; files skip member data by seeking instead of
/// reading it.
pub trait TarInput: Read {
    /// Moves `n` bytes forward; returns how many were skipped (fewer at the end).
    fn skip_ahead(&mut self, n: u64) -> std::io::Result<u64> {
        std::io::copy(&mut self.take(n), &mut std::io::sink())
    }
}

impl TarInput for Box<dyn Read + Send> {}
impl<T: AsRef<[u8]>> TarInput for std::io::Cursor<T> {}
impl TarInput for &[u8] {}

impl TarInput for crate::blobs::FileRange {
    fn skip_ahead(&mut self, n: u64) -> std::io::Result<u64> {
        let k = n.min(self.end.saturating_sub(self.pos));
        self.pos += k;
        Ok(k)
    }
}

/// Reads members out of a tar stream.
#[derive(Debug)]
pub struct TarReader<R> {
    inner: R,
    pos: u64,
    /// Data bytes of the current member not yet consumed.
    pending: u64,
    /// Zero padding after them.
    pending_pad: u64,
    global: BTreeMap<String, Vec<u8>>,
    done: bool,
    name: String,
}

impl<R: TarInput> TarReader<R> {
    /// A reader of `inner`; `name` identifies the stream in errors.
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        TarReader { inner, pos: 0, pending: 0, pending_pad: 0, global: BTreeMap::new(), done: false, name: name.into() }
    }

    /// The underlying reader (after the end of the archive, to drain what follows).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::corrupt(format!("{}: {msg}", self.name)).with_offset(self.pos)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => return Err(self.err("ends in the middle of a member")),
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(crate::digest::from_io(e, &self.name)),
            }
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes of the current member's stored data. Returns 0 at
    /// its end.
    pub fn read_data(&mut self, buf: &mut [u8], left_in_member: &mut u64) -> Result<usize> {
        let n = (buf.len() as u64).min(*left_in_member) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact(&mut buf[..n])?;
        *left_in_member -= n as u64;
        self.pending -= n as u64;
        Ok(n)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let got = self.inner.skip_ahead(n).map_err(|e| crate::digest::from_io(e, &self.name))?;
        self.pos += got;
        if got < n {
            return Err(self.err("ends in the middle of a member"));
        }
        Ok(())
    }

    fn read_meta(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_META_BYTES {
            return Err(self.err(format!("{what} of {size} bytes is larger than the {MAX_META_BYTES}-byte limit")));
        }
        let mut v = vec![0u8; size as usize];
        self.read_exact(&mut v)?;
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next member, or `None` at the end of the archive. Unread data of the previous
    /// member is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        self.skip(pending)?;
        // umoci 0.4 ends a layer right after the last member's data, without padding
        // or end-of-archive blocks; Go's reader (so every runtime) accepts that.
        let pad = std::mem::take(&mut self.pending_pad);
        let got = self.inner.skip_ahead(pad).map_err(|e| crate::digest::from_io(e, &self.name))?;
        self.pos += got;
        if got < pad {
            self.done = true;
            return Ok(None);
        }
        let mut pax: BTreeMap<String, Vec<u8>> = self.global.clone();
        let mut sparse00: Vec<(u64, u64)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut extended = 0u32;
        loop {
            let header_pos = self.pos;
            let mut h = [0u8; 512];
            // A stream that ends cleanly where a header would start has no end marker;
            // GNU tar and Go accept that, so do we.
            let mut got = 0;
            while got < 512 {
                match self.inner.read(&mut h[got..]) {
                    Ok(0) if got == 0 && extended == 0 => {
                        self.done = true;
                        return Ok(None);
                    }
                    Ok(0) => return Err(self.err("ends in the middle of a header")),
                    Ok(n) => {
                        got += n;
                        self.pos += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(crate::digest::from_io(e, &self.name)),
                }
            }
            if h.iter().all(|&b| b == 0) {
                if extended > 0 {
                    return Err(self.err("extended header not followed by a member"));
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&h).map_err(|e| Error::corrupt(format!("{}: {e}", self.name)).with_offset(header_pos))?;
            extended += 1;
            if extended > 64 {
                return Err(self.err("more than 64 extended headers before one member"));
            }
            let typ = h[156];
            let size = self.number(&h[124..136], "size")?;
            match typ {
                b'x' | b'g' => {
                    let data = self.read_meta(size, "PAX header")?;
                    let recs = parse_pax(&data, &mut sparse00).map_err(|e| self.err(e))?;
                    if typ == b'g' {
                        self.global.extend(recs.clone());
                    }
                    pax.extend(recs);
                    if typ == b'g' {
                        extended -= 1;
                    }
                    continue;
                }
                b'L' => {
                    long_name = Some(trim_nul(&self.read_meta(size, "GNU long name")?).to_vec());
                    continue;
                }
                b'K' => {
                    long_link = Some(trim_nul(&self.read_meta(size, "GNU long link name")?).to_vec());
                    continue;
                }
                _ => {}
            }
            return self.finish_entry(&h, typ, size, pax, sparse00, long_name, long_link).map(Some);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_entry(
        &mut self,
        h: &[u8; 512],
        typ: u8,
        header_size: u64,
        pax: BTreeMap<String, Vec<u8>>,
        sparse00: Vec<(u64, u64)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry> {
        let gnu = &h[257..265] == b"ustar  \0";
        let mut path = cstr(&h[0..100]).to_vec();
        if !gnu && &h[257..262] == b"ustar" && h[345] != 0 {
            let mut p = cstr(&h[345..500]).to_vec();
            p.push(b'/');
            p.extend_from_slice(&path);
            path = p;
        }
        if let Some(n) = long_name {
            path = n;
        }
        let mut link = cstr(&h[157..257]).to_vec();
        if let Some(l) = long_link {
            link = l;
        }
        let kind = match typ {
            b'0' | 0 | b'7' | b'S' => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDev,
            b'4' => EntryKind::BlockDev,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            // Old tars mark directories with a trailing slash on a regular-file type.
            other => {
                return Err(Error::unsupported(format!(
                    "{}: member {} has tar type {:?}, which is not a file, link, directory, device or fifo",
                    self.name,
                    diskcast_tree::display_name(&path),
                    other as char
                ))
                .with_offset(self.pos));
            }
        };
        let kind = if kind == EntryKind::File && typ != b'S' && path.ends_with(b"/") { EntryKind::Dir } else { kind };
        let mode = u32::try_from(self.number(&h[100..108], "mode")? & 0o7777).unwrap_or(0);
        let mut uid = self.id(&h[108..116], "uid")?;
        let mut gid = self.id(&h[116..124], "gid")?;
        let mut mtime = Timestamp::from_secs(self.signed(&h[136..148], "mtime")?);
        let mut atime = None;
        let mut ctime = None;
        if gnu {
            let a = self.signed(&h[345..357], "atime")?;
            let c = self.signed(&h[357..369], "ctime")?;
            atime = (a != 0).then(|| Timestamp::from_secs(a));
            ctime = (c != 0).then(|| Timestamp::from_secs(c));
        }
        let mut dev_major = self.id(&h[329..337], "devmajor")?;
        let mut dev_minor = self.id(&h[337..345], "devminor")?;
        let mut size = header_size;
        let mut xattrs = Vec::new();
        let mut sparse: Option<Vec<(u64, u64)>> = None;
        let mut real_size: Option<u64> = None;
        let mut sparse_v1 = false;
        for (k, v) in &pax {
            let text = || std::str::from_utf8(v).map_err(|_| self.err(format!("PAX record {k} is not UTF-8")));
            match k.as_str() {
                "path" => path = v.clone(),
                "linkpath" => link = v.clone(),
                "size" => {
                    size = pax_u64(text()?)
                        .ok_or_else(|| self.err(format!("PAX size {:?} is not a number", text().unwrap_or("?"))))?
                }
                "uid" => uid = pax_id(text()?).ok_or_else(|| self.err("PAX uid is not a 32-bit number"))?,
                "gid" => gid = pax_id(text()?).ok_or_else(|| self.err("PAX gid is not a 32-bit number"))?,
                "mtime" => mtime = pax_time(text()?).ok_or_else(|| self.err("PAX mtime is not a time"))?,
                "atime" => atime = Some(pax_time(text()?).ok_or_else(|| self.err("PAX atime is not a time"))?),
                "ctime" => ctime = Some(pax_time(text()?).ok_or_else(|| self.err("PAX ctime is not a time"))?),
                "SCHILY.devmajor" => dev_major = pax_id(text()?).ok_or_else(|| self.err("PAX devmajor"))?,
                "SCHILY.devminor" => dev_minor = pax_id(text()?).ok_or_else(|| self.err("PAX devminor"))?,
                "GNU.sparse.name" => path = v.clone(),
                "GNU.sparse.size" | "GNU.sparse.realsize" => {
                    real_size = Some(pax_u64(text()?).ok_or_else(|| self.err("PAX GNU.sparse size"))?)
                }
                "GNU.sparse.major" => sparse_v1 = text()? == "1",
                "GNU.sparse.map" => sparse = Some(parse_sparse_map(text()?).map_err(|e| self.err(e))?),
                _ => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push(Xattr { name: name.as_bytes().to_vec(), value: v.clone() });
                    } else if let Some(name) = k.strip_prefix("LIBARCHIVE.xattr.") {
                        // libarchive: URL-encoded name, base64 value. SCHILY wins when both exist.
                        let name = url_decode(name);
                        if !xattrs.iter().any(|x| x.name == name) {
                            use base64::Engine;
                            let value = base64::engine::general_purpose::STANDARD_NO_PAD
                                .decode(v.iter().copied().filter(|&b| b != b'=').collect::<Vec<u8>>())
                                .map_err(|_| self.err("LIBARCHIVE.xattr value is not base64"))?;
                            xattrs.push(Xattr { name, value });
                        }
                    }
                }
            }
        }
        if !sparse00.is_empty() {
            sparse = Some(sparse00);
        }
        let data_offset = self.pos;
        let stores_data = matches!(kind, EntryKind::File);
        let mut data_len = if stores_data { size } else { 0 };
        // Links, directories, devices and fifos store no data whatever size the header
        // claims (as Go's archive/tar, and so umoci, read them).
        let stored = if stores_data { size } else { 0 };
        self.pending = stored;
        self.pending_pad = padding(stored);
        let mut data_offset = data_offset;
        let mut file_size = size;
        if typ == b'S' {
            let (map, real) = self.gnu_old_sparse(h)?;
            sparse = Some(map);
            real_size = Some(real);
            // The extension headers were read: data starts here.
            data_offset = self.pos;
        } else if sparse_v1 && kind == EntryKind::File {
            // GNU sparse 1.0: the map is text at the start of the data, padded to a block.
            let mut left = size;
            let (map, used) = self.sparse_v1_map(&mut left)?;
            sparse = Some(map);
            data_offset = self.pos;
            data_len = size.checked_sub(used).ok_or_else(|| self.err("sparse map larger than the member"))?;
        }
        if let Some(map) = &sparse {
            let real = real_size.ok_or_else(|| self.err("sparse member without its real size"))?;
            let mut end = 0u64;
            let mut stored_sum = 0u64;
            for &(o, l) in map {
                if o < end {
                    return Err(self.err("sparse map segments overlap or are out of order"));
                }
                end = o
                    .checked_add(l)
                    .filter(|&e| e <= real)
                    .ok_or_else(|| self.err("sparse map runs past the file's size"))?;
                stored_sum = stored_sum.checked_add(l).ok_or_else(|| self.err("sparse map overflows"))?;
            }
            if stored_sum > data_len {
                return Err(
                    self.err(format!("sparse map holds {stored_sum} bytes but the member stores only {data_len}"))
                );
            }
            file_size = real;
        }
        Ok(Entry {
            path,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime,
            ctime,
            size: if matches!(kind, EntryKind::File) { file_size } else { 0 },
            data_offset,
            data_len,
            dev_major,
            dev_minor,
            xattrs,
            sparse,
        })
    }

    /// GNU's old sparse format: four segments in the header, more in extension blocks.
    fn gnu_old_sparse(&mut self, h: &[u8; 512]) -> Result<(Vec<(u64, u64)>, u64)> {
        let mut map = Vec::new();
        let push = |this: &Self, map: &mut Vec<(u64, u64)>, block: &[u8], n: usize| -> Result<()> {
            for i in 0..n {
                let e = &block[i * 24..i * 24 + 24];
                if e[0] == 0 {
                    break;
                }
                let off = this.number(&e[0..12], "sparse offset")?;
                let len = this.number(&e[12..24], "sparse length")?;
                map.push((off, len));
            }
            Ok(())
        };
        push(self, &mut map, &h[386..482], 4)?;
        let real = self.number(&h[483..495], "sparse real size")?;
        let mut more = h[482] != 0;
        while more {
            if map.len() > MAX_SPARSE_SEGMENTS {
                return Err(self.err("sparse map has too many segments"));
            }
            let mut b = [0u8; 512];
            self.read_exact(&mut b)?;
            push(self, &mut map, &b[0..504], 21)?;
            more = b[504] != 0;
        }
        Ok((map, real))
    }

    /// GNU sparse 1.0: decimal numbers one per line at the start of the data.
    fn sparse_v1_map(&mut self, left: &mut u64) -> Result<(Vec<(u64, u64)>, u64)> {
        let mut text = Vec::new();
        let mut used = 0u64;
        let mut numbers: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        loop {
            if *left < BLOCK {
                return Err(self.err("sparse map runs past the member"));
            }
            let mut b = [0u8; 512];
            self.read_exact(&mut b)?;
            *left -= BLOCK;
            self.pending -= BLOCK;
            used += BLOCK;
            text.extend_from_slice(&b);
            while let Some(nl) = text.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = text.drain(..=nl).collect();
                let n = std::str::from_utf8(&line[..line.len() - 1])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| self.err("sparse map has a bad number"))?;
                match want {
                    None => {
                        if n > MAX_SPARSE_SEGMENTS as u64 {
                            return Err(self.err("sparse map has too many segments"));
                        }
                        want = Some(n * 2);
                    }
                    Some(_) => numbers.push(n),
                }
                if want == Some(numbers.len() as u64) {
                    let map = numbers.chunks(2).map(|c| (c[0], c[1])).collect();
                    return Ok((map, used));
                }
            }
            if text.len() > 64 {
                return Err(self.err("sparse map line too long"));
            }
        }
    }

    fn number(&self, field: &[u8], what: &str) -> Result<u64> {
        parse_number(field).ok_or_else(|| self.err(format!("header field {what} is not a number")))
    }

    fn signed(&self, field: &[u8], what: &str) -> Result<i64> {
        if field[0] & 0x80 != 0 {
            // Base-256, two's complement when the sign bit (0x40) is set.
            let neg = field[0] & 0x40 != 0;
            let mut v: i128 = if neg { -1 } else { 0 };
            for (i, &b) in field.iter().enumerate() {
                let b = if i == 0 { b & 0x7f | if neg { 0x80 } else { 0 } } else { b };
                v = (v << 8) | i128::from(b);
                if v > i128::from(i64::MAX) || v < i128::from(i64::MIN) {
                    return Err(self.err(format!("header field {what} is out of range")));
                }
            }
            return Ok(v as i64);
        }
        let n = self.number(field, what)?;
        i64::try_from(n).map_err(|_| self.err(format!("header field {what} is out of range")))
    }

    fn id(&self, field: &[u8], what: &str) -> Result<u32> {
        u32::try_from(self.number(field, what)?)
            .map_err(|_| self.err(format!("header field {what} is larger than 32 bits")))
    }
}

/// Zero bytes after `size` bytes of data up to the next 512-byte block.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn cstr(field: &[u8]) -> &[u8] {
    trim_nul(field)
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Octal (NUL/space padded) or GNU base-256 (positive only).
fn parse_number(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = field.iter().copied().skip_while(|&c| c == b' ' || c == 0);
    let mut v: u64 = 0;
    for c in s {
        match c {
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
            }
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

fn verify_checksum(h: &[u8; 512]) -> std::result::Result<(), String> {
    let stored = parse_number(&h[148..156]).ok_or("header checksum is not a number")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).ok() == Some(signed) {
        Ok(())
    } else {
        Err(format!("header checksum {stored} does not match the header ({unsigned}): not a tar member here"))
    }
}

/// PAX records `LEN KEY=VALUE\n`. GNU sparse 0.0 repeats `GNU.sparse.offset` and
/// `GNU.sparse.numbytes`, so those pairs are collected in order into `sparse00`.
fn parse_pax(data: &[u8], sparse00: &mut Vec<(u64, u64)>) -> std::result::Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut rest = data;
    let mut pending_offset: Option<u64> = None;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest.iter().position(|&b| b == b' ').ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("PAX record length does not match its content".into());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or("PAX record without '='")?;
        let key = String::from_utf8(rec[..eq].to_vec()).map_err(|_| "PAX key is not UTF-8")?;
        let value = rec[eq + 1..].to_vec();
        match key.as_str() {
            "GNU.sparse.offset" => {
                pending_offset =
                    Some(std::str::from_utf8(&value).ok().and_then(|s| s.parse().ok()).ok_or("bad GNU.sparse.offset")?)
            }
            "GNU.sparse.numbytes" => {
                let n =
                    std::str::from_utf8(&value).ok().and_then(|s| s.parse().ok()).ok_or("bad GNU.sparse.numbytes")?;
                let o = pending_offset.take().ok_or("GNU.sparse.numbytes without an offset")?;
                if sparse00.len() >= MAX_SPARSE_SEGMENTS {
                    return Err("sparse map has too many segments".into());
                }
                sparse00.push((o, n));
            }
            _ => {
                // An empty value deletes the key (POSIX): keep it empty so it overrides.
                out.insert(key, value);
            }
        }
        rest = &rest[len..];
    }
    Ok(out)
}

fn parse_sparse_map(text: &str) -> std::result::Result<Vec<(u64, u64)>, String> {
    let nums: Vec<u64> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().map_err(|_| "bad number in GNU.sparse.map".to_string()))
        .collect::<std::result::Result<_, _>>()?;
    if !nums.len().is_multiple_of(2) || nums.len() / 2 > MAX_SPARSE_SEGMENTS {
        return Err("GNU.sparse.map has an odd count or too many segments".into());
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn pax_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn pax_id(s: &str) -> Option<u32> {
    pax_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// `SECONDS[.FRACTION]`, possibly negative.
fn pax_time(s: &str) -> Option<Timestamp> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec = i64::try_from(pax_u64(whole)?).ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if !neg {
        return Some(Timestamp { sec, nsec });
    }
    if nsec == 0 {
        Some(Timestamp { sec: -sec, nsec: 0 })
    } else {
        Some(Timestamp { sec: -sec - 1, nsec: 1_000_000_000 - nsec })
    }
}

fn url_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"   12 \0"), Some(0o12));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]), Some(1 << 32));
        assert_eq!(parse_number(b"9"), None);
        assert_eq!(pax_time("1.5"), Some(Timestamp { sec: 1, nsec: 500_000_000 }));
        assert_eq!(pax_time("-1.25"), Some(Timestamp { sec: -2, nsec: 750_000_000 }));
        assert_eq!(url_decode("user.a%3Db"), b"user.a=b");
    }

    #[test]
    fn pax_records() {
        let mut sp = Vec::new();
        let r = parse_pax(b"16 path=abcdefg\n", &mut sp).unwrap();
        assert_eq!(r["path"], b"abcdefg");
        assert!(parse_pax(b"99 path=x\n", &mut sp).is_err());
        assert!(parse_pax(b"5 a=b\n", &mut sp).is_err());
    }
}
