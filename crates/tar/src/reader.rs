//! Reading a tar stream one member at a time: extension headers (PAX `x`/`g`, GNU
//! `L`/`K`) folded into the member they describe, data left in the stream.

use crate::compress::{from_io, read_full};
use crate::header::{self, BLOCK};
use crate::{MAX_LONG_NAME, MAX_PAX_HEADER, MAX_SPARSE_RUNS, MAX_XATTR_TOTAL};
use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use diskcast_tree::{Meta, Timestamp, Xattr};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::Bound;

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (also contiguous files and unknown types, as POSIX says).
    File,
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(Vec<u8>),
    /// A second name for the earlier member with this path.
    HardLink(Vec<u8>),
    /// A character device.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// A run of data in a sparse file: `len` bytes at `offset` of the file. The runs'
/// bytes are stored one after another from [`Member::data_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseRun {
    /// Where the run starts in the file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// One member of a tar: its path and metadata after every extension header was applied,
/// and where its data is in the (decompressed) stream.
#[derive(Debug, Clone)]
pub struct Member {
    /// The path as the archive spells it (not yet checked: may be absolute or hold `..`;
    /// see [`crate::normalize_path`]).
    pub path: Vec<u8>,
    /// What it is.
    pub kind: MemberKind,
    /// Permissions, owner, times.
    pub meta: Meta,
    /// Extended attributes (`SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`).
    pub xattrs: Vec<Xattr>,
    /// The file's size (for sparse files, the size with holes).
    pub size: u64,
    /// Offset of the member's header in the stream.
    pub header_offset: u64,
    /// Offset of the member's data in the stream.
    pub data_offset: u64,
    /// Bytes of data stored in the archive (a sparse file stores less than its size).
    pub data_len: u64,
    /// For sparse files: where the stored bytes go.
    pub sparse: Option<Vec<SparseRun>>,
}

enum Input {
    /// A plain file: data is skipped by seeking, so listing a large tar is fast.
    File { file: BufReader<File>, len: u64 },
    /// Anything else (decompressors): data is skipped by reading, and handed out from
    /// the input's own buffer (see [`TarReader::data_chunks`]).
    Stream(Box<dyn BufRead + Send>),
}

/// Reads members from a tar stream. Each call to [`next_member`](Self::next_member)
/// skips what is left of the previous member's data.
pub struct TarReader {
    input: Input,
    name: String,
    /// Stream position of the input.
    pos: u64,
    /// Where the next header starts.
    next: u64,
    /// Where the previous member's data ends (before its padding).
    data_end: u64,
    done: bool,
    global: Pax,
    /// Bytes of xattrs handed out so far (names and values), against [`MAX_XATTR_TOTAL`].
    xattr_total: u64,
}

impl std::fmt::Debug for TarReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarReader").field("name", &self.name).field("pos", &self.pos).finish()
    }
}

/// PAX keys seen so far for the next member (or, for `g`, for all later ones).
#[derive(Debug, Default, Clone)]
struct Pax {
    /// An empty value is kept: it deletes the key (a local one hides a global one).
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    /// PAX sparse 0.0 repeats `GNU.sparse.offset`/`numbytes`, so order matters.
    sparse_pairs: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: u64,
}

impl TarReader {
    /// Reads from a decompressed stream; `name` is used in error messages.
    pub fn new(input: Box<dyn Read + Send>, name: impl Into<String>) -> Self {
        Self::from_buf_read(Box::new(BufReader::with_capacity(1 << 16, input)), name)
    }

    /// Reads from a decompressed stream that has its own buffer (a pipeline's chunks),
    /// so member data is handed out from it without another copy.
    pub fn from_buf_read(input: Box<dyn BufRead + Send>, name: impl Into<String>) -> Self {
        Self::with_input(Input::Stream(input), name.into())
    }

    /// Reads a plain (uncompressed) tar file, seeking over member data.
    pub fn from_file(file: File, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = file.metadata().map_err(|e| Error::io("cannot stat", e).with_file(&name))?.len();
        Ok(Self::with_input(Input::File { file: BufReader::with_capacity(1 << 16, file), len }, name))
    }

    fn with_input(input: Input, name: String) -> Self {
        TarReader { input, name, pos: 0, next: 0, data_end: 0, done: false, global: Pax::default(), xattr_total: 0 }
    }

    fn err(&self, e: Error, offset: u64) -> Error {
        e.with_offset(offset).with_file(&self.name)
    }

    fn truncated(&self, what: &str, offset: u64) -> Error {
        self.err(Error::corrupt(format!("archive is truncated: it ends inside {what}")), offset)
    }

    /// Moves the input forward to `to`; false if the input ended first.
    fn skip_to(&mut self, to: u64) -> Result<bool> {
        let n = to - self.pos;
        if n == 0 {
            return Ok(true);
        }
        let ok = match &mut self.input {
            Input::File { file, len } => {
                if to > *len {
                    false
                } else {
                    let delta = i64::try_from(n).map_err(|_| Error::out_of_bounds("seek too far"))?;
                    file.seek_relative(delta).map_err(|e| Error::io("cannot seek", e))?;
                    true
                }
            }
            Input::Stream(r) => {
                let mut left = n;
                while left > 0 {
                    let have = r.fill_buf().map_err(|e| from_io(e, "the archive").with_file(&self.name))?;
                    if have.is_empty() {
                        break;
                    }
                    let k = left.min(u64_from_usize(have.len()));
                    r.consume(usize_from_u64(k, "tar skip")?);
                    left -= k;
                }
                self.pos += n - left;
                left == 0
            }
        };
        if ok {
            self.pos = to;
        }
        Ok(ok)
    }

    /// Hands the data of the member [`Self::next_member`] just returned to `f`, front
    /// to back, in the pieces the input holds (a plain file's through a 64 KiB buffer),
    /// so a sink writes them without another copy. A stream that ends inside the data
    /// is an error; data already skipped is not handed out again.
    pub fn data_chunks(&mut self, f: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let at = self.pos;
        while self.pos < self.data_end {
            let left = self.data_end - self.pos;
            let r: &mut dyn BufRead = match &mut self.input {
                Input::File { file, .. } => file,
                Input::Stream(r) => r,
            };
            let have = r.fill_buf().map_err(|e| from_io(e, "the archive").with_file(&self.name))?;
            if have.is_empty() {
                return Err(self.truncated("a member's data", at));
            }
            let n = usize_from_u64(left.min(u64_from_usize(have.len())), "tar data")?;
            f(&have[..n])?;
            r.consume(n);
            self.pos += u64_from_usize(n);
        }
        Ok(())
    }

    /// Reads the input to its end (what follows the end-of-archive marker, which an
    /// OCI layer's diff_id covers); returns how many bytes that was.
    pub fn drain(&mut self) -> Result<u64> {
        let start = self.pos;
        let r: &mut dyn BufRead = match &mut self.input {
            Input::File { file, .. } => file,
            Input::Stream(r) => r,
        };
        loop {
            let n = r.fill_buf().map_err(|e| from_io(e, "the archive").with_file(&self.name))?.len();
            if n == 0 {
                break;
            }
            r.consume(n);
            self.pos += u64_from_usize(n);
        }
        Ok(self.pos - start)
    }

    /// Reads up to `buf.len()` bytes; returns how many (fewer only at the end).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let r: &mut dyn Read = match &mut self.input {
            Input::File { file, .. } => file,
            Input::Stream(r) => r,
        };
        // A decompression cap or a digest check below passes its own error up.
        let n = read_full(r, buf).map_err(|e| from_io(e, "the archive").with_file(&self.name))?;
        self.pos += u64_from_usize(n);
        Ok(n)
    }

    /// Reads the `size` bytes of an extension header's data (and its padding).
    fn read_ext(&mut self, size: u64, max: u64, what: &str, at: u64) -> Result<Vec<u8>> {
        if size > max {
            return Err(self.err(
                Error::out_of_bounds(format!("{what} claims {size} bytes (limit {max})")).with_field("size"),
                at,
            ));
        }
        let mut data = vec![0u8; usize_from_u64(size, "tar extension header")?];
        if self.read(&mut data)? < data.len() {
            return Err(self.truncated(what, at));
        }
        self.next = padded(self.pos).ok_or_else(|| Error::out_of_bounds("offset overflow"))?;
        Ok(data)
    }

    /// The next member, or `None` at the end of the archive (two zero blocks, or the end
    /// of the stream at a header boundary).
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let mut local = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            if self.done {
                return Ok(None);
            }
            let at = self.next;
            if !self.skip_to(at)? {
                // umoci 0.4 ends a layer right after the last member's data, with no
                // padding and no end-of-archive blocks; Go's reader (so every container
                // runtime) accepts that, and so do we.
                let have = match &self.input {
                    Input::File { len, .. } => *len,
                    Input::Stream(_) => self.pos,
                };
                if have >= self.data_end && long_name.is_none() && long_link.is_none() && local.records.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                return Err(self.truncated("a member's data", at));
            }
            let mut h = [0u8; BLOCK];
            let n = self.read(&mut h)?;
            if n == 0 {
                // No end-of-archive blocks: accepted, as GNU tar and bsdtar do.
                self.done = true;
                if long_name.is_some() || long_link.is_some() || !local.records.is_empty() {
                    return Err(self.truncated("an extension header's member", at));
                }
                return Ok(None);
            }
            if n < BLOCK {
                return Err(self.truncated("a header", at));
            }
            if h.iter().all(|&c| c == 0) {
                self.done = true;
                return Ok(None);
            }
            header::check_checksum(&h).map_err(|e| self.err(e, at))?;
            let size = header::unsigned(&h, header::SIZE, "size").map_err(|e| self.err(e, at))?;
            let data_offset = self.pos;
            let typeflag = h[header::TYPEFLAG];
            match typeflag {
                b'x' | b'g' => {
                    let data = self.read_ext(size, MAX_PAX_HEADER, "PAX extended header", at)?;
                    let target = if typeflag == b'x' { &mut local } else { &mut self.global };
                    parse_pax(&data, target).map_err(|e| self.err(e, at))?;
                    if self.global.bytes > MAX_PAX_HEADER {
                        return Err(self.err(Error::out_of_bounds("global PAX headers are too large"), at));
                    }
                    continue;
                }
                b'L' | b'K' => {
                    let mut data = self.read_ext(size, MAX_LONG_NAME, "GNU long name", at)?;
                    let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
                    data.truncate(end);
                    if typeflag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                    continue;
                }
                b'V' => {
                    // A volume label names the archive, not a file.
                    self.next =
                        data_end(data_offset, size).ok_or_else(|| self.err(Error::out_of_bounds("size"), at))?;
                    continue;
                }
                b'M' => {
                    return Err(
                        self.err(Error::unsupported("multi-volume tar continuation members are not supported"), at)
                    );
                }
                _ => {}
            }
            let m = self.member(&h, at, data_offset, size, &local, long_name, long_link)?;
            return Ok(Some(m));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn member(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        data_offset: u64,
        header_size: u64,
        local: &Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Member> {
        // The global records are read in place (never copied per member: a large `g`
        // header followed by many members would cost their product), and put back
        // whatever happens.
        let global = std::mem::take(&mut self.global);
        let m = self.member_with(h, at, data_offset, header_size, local, &global, long_name, long_link);
        self.global = global;
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn member_with(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        data_offset: u64,
        header_size: u64,
        local: &Pax,
        global: &Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Member> {
        let get = |k: &str| pax_get(local, global, k.as_bytes());
        let fname = self.name.clone();
        let e = |e: Error| e.with_offset(at).with_file(&fname);
        let magic = &h[header::MAGIC.0..header::MAGIC.1];
        let gnu = magic == header::MAGIC_GNU;
        let ustar = magic.starts_with(b"ustar\0");

        let mut path = header::text(h, header::NAME).to_vec();
        if ustar {
            let prefix = header::text(h, header::PREFIX);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        if let Some(l) = long_name {
            path = l;
        }
        if let Some(p) = get("path") {
            path = p.clone();
        }
        let mut link = header::text(h, header::LINKNAME).to_vec();
        if let Some(l) = long_link {
            link = l;
        }
        if let Some(l) = get("linkpath") {
            link = l.clone();
        }

        // Size: PAX `size` overrides the header (it exists for sizes the header cannot
        // hold); the data skipped is always this size, so the stream stays in step.
        let mut size = match get("size") {
            Some(v) => pax_u64(v, "size").map_err(e)?,
            None => header_size,
        };
        let mode = header::unsigned(h, header::MODE, "mode").map_err(e)? & 0o7777;
        let mode = u32::try_from(mode).unwrap_or(0o644);
        let uid = match get("uid") {
            Some(v) => u32::try_from(pax_u64(v, "uid").map_err(e)?)
                .map_err(|_| e(Error::corrupt("PAX uid does not fit 32 bits").with_field("uid")))?,
            None => header::u32_field(h, header::UID, "uid").map_err(e)?,
        };
        let gid = match get("gid") {
            Some(v) => u32::try_from(pax_u64(v, "gid").map_err(e)?)
                .map_err(|_| e(Error::corrupt("PAX gid does not fit 32 bits").with_field("gid")))?,
            None => header::u32_field(h, header::GID, "gid").map_err(e)?,
        };
        let mtime = match get("mtime") {
            Some(v) => pax_time(v, "mtime").map_err(e)?,
            None => Timestamp::from_secs(header::number(h, header::MTIME, "mtime").map_err(e)?),
        };
        let gnu_time = |f: (usize, usize), name| -> Result<Option<Timestamp>> {
            // GNU tar reads these only for incremental archives: blank means absent.
            if !gnu || h[f.0..f.1].iter().all(|&c| c == 0 || c == b' ') {
                return Ok(None);
            }
            let v = header::number(h, f, name)?;
            Ok((v != 0).then(|| Timestamp::from_secs(v)))
        };
        let atime = match get("atime") {
            Some(v) => Some(pax_time(v, "atime").map_err(e)?),
            None => gnu_time(header::GNU_ATIME, "atime").map_err(e)?,
        };
        let ctime = match get("ctime") {
            Some(v) => Some(pax_time(v, "ctime").map_err(e)?),
            None => gnu_time(header::GNU_CTIME, "ctime").map_err(e)?,
        };
        let dev = |key: &str, f, name| -> Result<u32> {
            match get(key) {
                Some(v) => u32::try_from(pax_u64(v, name)?)
                    .map_err(|_| Error::corrupt(format!("{name} does not fit 32 bits")).with_field(name)),
                None if ustar || gnu => header::u32_field(h, f, name),
                None => Ok(0),
            }
        };
        let typeflag = h[header::TYPEFLAG];
        let kind = match typeflag {
            b'1' => MemberKind::HardLink(link),
            b'2' => MemberKind::Symlink(link),
            b'3' | b'4' => {
                let major = dev("SCHILY.devmajor", header::DEVMAJOR, "devmajor").map_err(e)?;
                let minor = dev("SCHILY.devminor", header::DEVMINOR, "devminor").map_err(e)?;
                if typeflag == b'3' {
                    MemberKind::CharDev { major, minor }
                } else {
                    MemberKind::BlockDev { major, minor }
                }
            }
            b'5' | b'D' => MemberKind::Dir,
            b'6' => MemberKind::Fifo,
            // Old tars mark directories only by a trailing slash.
            b'0' | 0 if path.ends_with(b"/") => MemberKind::Dir,
            _ => MemberKind::File,
        };
        // Entries that never carry data have none, whatever their size field says (POSIX
        // 1988 says so of links): bsdtar and Go's archive/tar (so every container
        // runtime) read them so, and GNU tar does for directories and hard links. Skipping
        // a size with no data behind it would swallow the next member. A GNU dumpdir
        // (`D`) does hold data: its listing.
        if typeflag != b'D' && !matches!(kind, MemberKind::File) {
            size = 0;
        }

        let xattrs = pax_xattrs(local, global).map_err(e)?;
        let bytes = xattrs
            .iter()
            .map(|x| x.name.len().saturating_add(x.value.len()))
            .fold(0u64, |a, n| a.saturating_add(u64::try_from(n).unwrap_or(u64::MAX)));
        self.xattr_total = self.xattr_total.saturating_add(bytes);
        if self.xattr_total > MAX_XATTR_TOTAL {
            return Err(e(Error::out_of_bounds(format!(
                "the archive's extended attributes add up to more than {MAX_XATTR_TOTAL} bytes (MAX_XATTR_TOTAL)"
            ))
            .with_field("pax")));
        }

        // Where the data is, and for sparse files where it goes.
        let data_start = data_offset;
        let data_len_stored = size;
        let mut data_offset = data_offset;
        let mut data_len = size;
        let mut sparse = None;
        if typeflag == b'S' {
            // Old GNU sparse: map in the header and in extension blocks after it.
            let mut runs = Vec::new();
            push_gnu_runs(&h[header::GNU_SPARSE..header::GNU_SPARSE + 4 * 24], &mut runs).map_err(e)?;
            let mut extended = h[header::GNU_ISEXTENDED] != 0;
            while extended {
                let mut ext = [0u8; BLOCK];
                if self.read(&mut ext)? < BLOCK {
                    return Err(self.truncated("a GNU sparse map", at));
                }
                push_gnu_runs(&ext[..21 * 24], &mut runs).map_err(e)?;
                extended = ext[504] != 0;
            }
            data_offset = self.pos;
            let real = header::unsigned(h, header::GNU_REALSIZE, "realsize").map_err(e)?;
            sparse = Some(runs);
            size = real;
        } else if let Some(major) = get("GNU.sparse.major") {
            if major.as_slice() != b"1" {
                return Err(e(Error::unsupported("PAX sparse format other than 0.x/1.0")));
            }
            // PAX sparse 1.0: the map is text at the start of the data.
            let (runs, map_len) = self.read_sparse_text_map(data_offset, size, at)?;
            data_offset = data_offset.checked_add(map_len).ok_or_else(|| e(Error::out_of_bounds("sparse map")))?;
            data_len = size.checked_sub(map_len).ok_or_else(|| {
                e(Error::corrupt(format!("PAX sparse map ({map_len} bytes) is larger than the member ({size} bytes)"))
                    .with_field("size"))
            })?;
            sparse = Some(runs);
            size = match get("GNU.sparse.realsize").or_else(|| get("GNU.sparse.size")) {
                Some(v) => pax_u64(v, "GNU.sparse.realsize").map_err(e)?,
                None => return Err(e(Error::corrupt("PAX sparse 1.0 member without GNU.sparse.realsize"))),
            };
        } else if let Some(map) = get("GNU.sparse.map") {
            // PAX sparse 0.1: "offset,len,offset,len".
            let nums: Vec<&[u8]> = map.split(|&c| c == b',').collect();
            if !nums.len().is_multiple_of(2) || nums.len() / 2 > MAX_SPARSE_RUNS {
                return Err(e(Error::corrupt("GNU.sparse.map has an odd or huge number of values")));
            }
            let mut runs = Vec::new();
            for p in nums.chunks(2) {
                runs.push(SparseRun {
                    offset: pax_u64(p[0], "GNU.sparse.map")?,
                    len: pax_u64(p[1], "GNU.sparse.map")?,
                });
            }
            sparse = Some(runs);
        } else if !global.sparse_pairs.is_empty() || !local.sparse_pairs.is_empty() {
            // PAX sparse 0.0: repeated offset/numbytes records.
            let mut runs = Vec::new();
            let mut off = None;
            for (k, v) in global.sparse_pairs.iter().chain(&local.sparse_pairs) {
                match (k.as_slice(), off) {
                    (b"GNU.sparse.offset", _) => off = Some(pax_u64(v, "GNU.sparse.offset").map_err(e)?),
                    (b"GNU.sparse.numbytes", Some(o)) => {
                        runs.push(SparseRun { offset: o, len: pax_u64(v, "GNU.sparse.numbytes").map_err(e)? });
                        off = None;
                    }
                    _ => return Err(e(Error::corrupt("GNU.sparse.numbytes without an offset"))),
                }
            }
            sparse = Some(runs);
        }
        if sparse.is_some() && typeflag != b'S' {
            if let Some(n) = get("GNU.sparse.name") {
                path = n.clone();
            }
            if let Some(v) = get("GNU.sparse.size").or_else(|| get("GNU.sparse.realsize")) {
                size = pax_u64(v, "GNU.sparse.size").map_err(e)?;
            }
        }
        if let Some(runs) = &sparse {
            check_runs(runs, size, data_len).map_err(e)?;
        }
        // Old GNU sparse extension blocks sit between the header and the data and are not
        // counted in the size; every other stored size starts right after the header.
        let stored_end =
            if typeflag == b'S' { data_end(data_offset, data_len) } else { data_end(data_start, data_len_stored) }
                .ok_or_else(|| e(Error::out_of_bounds("member size").with_field("size")))?;
        self.next = stored_end;
        self.data_end = data_offset.saturating_add(data_len);
        Ok(Member {
            path,
            kind,
            meta: Meta { mode, uid, gid, mtime, atime, ctime },
            xattrs,
            size,
            header_offset: at,
            data_offset,
            data_len,
            sparse,
        })
    }

    /// PAX sparse 1.0's map: decimal lines (count, then offset and length pairs) at the
    /// start of the data, padded to a block. Returns the runs and the map's padded size.
    fn read_sparse_text_map(&mut self, start: u64, stored: u64, at: u64) -> Result<(Vec<SparseRun>, u64)> {
        let mut buf = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        let mut line = Vec::new();
        let mut used = 0u64;
        loop {
            if want.is_some_and(|w| u64_from_usize(numbers.len()) == 1 + 2 * w) {
                break;
            }
            if used == u64_from_usize(buf.len()) {
                if u64_from_usize(buf.len()) >= stored {
                    return Err(self.err(Error::corrupt("PAX sparse map runs past the member's data"), at));
                }
                let mut block = [0u8; BLOCK];
                if self.read(&mut block)? < BLOCK {
                    return Err(self.truncated("a PAX sparse map", at));
                }
                buf.extend_from_slice(&block);
            }
            let c = buf[usize_from_u64(used, "PAX sparse map")?];
            used += 1;
            if c == b'\n' {
                let v = pax_u64(&line, "GNU sparse map").map_err(|e| self.err(e, at))?;
                line.clear();
                numbers.push(v);
                if numbers.len() == 1 {
                    if v > u64_from_usize(MAX_SPARSE_RUNS) {
                        return Err(self.err(Error::out_of_bounds(format!("PAX sparse map claims {v} runs")), at));
                    }
                    want = Some(v);
                }
            } else if line.len() > 20 {
                return Err(self.err(Error::corrupt("PAX sparse map has an overlong number"), at));
            } else {
                line.push(c);
            }
        }
        let runs = numbers[1..].chunks(2).map(|p| SparseRun { offset: p[0], len: p[1] }).collect();
        let map_len = u64_from_usize(buf.len());
        debug_assert_eq!(self.pos, start + map_len);
        Ok((runs, map_len))
    }
}

/// Offset of the first header after `size` bytes of data at `start`.
fn data_end(start: u64, size: u64) -> Option<u64> {
    padded(start.checked_add(size)?)
}

fn padded(v: u64) -> Option<u64> {
    v.checked_add(511).map(|v| v & !511)
}

fn push_gnu_runs(map: &[u8], runs: &mut Vec<SparseRun>) -> Result<()> {
    for e in map.chunks(24) {
        let offset = header::unsigned(e, (0, 12), "sparse offset")?;
        let len = header::unsigned(e, (12, 24), "sparse numbytes")?;
        if offset == 0 && len == 0 && e.iter().all(|&c| c == 0) {
            break;
        }
        if runs.len() >= MAX_SPARSE_RUNS {
            return Err(Error::out_of_bounds("too many sparse runs"));
        }
        runs.push(SparseRun { offset, len });
    }
    Ok(())
}

/// Sparse runs must be in order, not overlap, stay within the file, and add up to no more
/// than the bytes stored.
fn check_runs(runs: &[SparseRun], size: u64, stored: u64) -> Result<()> {
    let mut end = 0u64;
    let mut total = 0u64;
    for r in runs {
        let e = r.offset.checked_add(r.len).ok_or_else(|| Error::corrupt("sparse run overflows"))?;
        if r.offset < end || e > size {
            return Err(Error::corrupt(format!(
                "sparse run {}+{} overlaps the previous one or runs past the file size {size}",
                r.offset, r.len
            ))
            .with_field("sparse"));
        }
        end = e;
        total = total.checked_add(r.len).ok_or_else(|| Error::corrupt("sparse runs overflow"))?;
    }
    if total > stored {
        return Err(Error::corrupt(format!("sparse runs hold {total} bytes but the member stores {stored}"))
            .with_field("sparse"));
    }
    Ok(())
}

/// Parses PAX records `"%d %s=%s\n"` (the length counts the whole record).
fn parse_pax(data: &[u8], pax: &mut Pax) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest.iter().position(|&c| c == b' ').filter(|&p| p <= 20);
        let Some(sp) = sp else { return Err(Error::corrupt("PAX record without a length").with_field("pax")) };
        let len = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| Error::corrupt("PAX record length is invalid").with_field("pax"))?;
        let record = &rest[sp + 1..len];
        let Some(record) = record.strip_suffix(b"\n") else {
            return Err(Error::corrupt("PAX record does not end in a newline").with_field("pax"));
        };
        let eq = record
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| Error::corrupt("PAX record without '='").with_field("pax"))?;
        let (k, v) = (&record[..eq], &record[eq + 1..]);
        pax.bytes = pax.bytes.saturating_add(u64_from_usize(record.len()));
        if k == b"GNU.sparse.offset" || k == b"GNU.sparse.numbytes" {
            if pax.sparse_pairs.len() >= 2 * MAX_SPARSE_RUNS {
                return Err(Error::out_of_bounds("too many PAX sparse records"));
            }
            pax.sparse_pairs.push((k.to_vec(), v.to_vec()));
        } else {
            // An empty value deletes the key (POSIX): kept, so that it hides a global one.
            pax.records.insert(k.to_vec(), v.to_vec());
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// The value of `key` for a member: its own (`x`) record, else the global (`g`) one; an
/// empty value deletes the key.
fn pax_get<'a>(local: &'a Pax, global: &'a Pax, key: &[u8]) -> Option<&'a Vec<u8>> {
    local.records.get(key).or_else(|| global.records.get(key)).filter(|v| !v.is_empty())
}

/// The records of `pax` whose key starts with `prefix` (a range of the sorted map, so
/// finding them does not visit the other records).
fn with_prefix<'a>(pax: &'a Pax, prefix: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> {
    pax.records
        .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// A member's extended attributes (`LIBARCHIVE.xattr.*`, then `SCHILY.xattr.*`, each in
/// key order, its own records over global ones). bsdtar writes both spellings of each
/// attribute: the first is kept. Linear in the number of xattr records.
fn pax_xattrs(local: &Pax, global: &Pax) -> Result<Vec<Xattr>> {
    const SCHILY: &[u8] = b"SCHILY.xattr.";
    const LIBARCHIVE: &[u8] = b"LIBARCHIVE.xattr.";
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut xattrs = Vec::new();
    for prefix in [LIBARCHIVE, SCHILY] {
        let own = with_prefix(local, prefix);
        let inherited = with_prefix(global, prefix).filter(|(k, _)| !local.records.contains_key(k.as_slice()));
        let mut records: Vec<(&Vec<u8>, &Vec<u8>)> = own.chain(inherited).filter(|(_, v)| !v.is_empty()).collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in records {
            let n = &k[prefix.len()..];
            let (name, value) = if prefix == SCHILY {
                (n.to_vec(), v.clone())
            } else {
                let Some(value) = base64_decode(v) else {
                    return Err(Error::corrupt("LIBARCHIVE.xattr value is not base64").with_field("pax"));
                };
                (percent_decode(n), value)
            };
            if name.is_empty() || seen.contains(&name) {
                continue;
            }
            seen.insert(name.clone());
            xattrs.push(Xattr { name, value });
        }
    }
    Ok(xattrs)
}

fn pax_u64(v: &[u8], field: &'static str) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::corrupt(format!("PAX {field} is not a number")).with_field(field))
}

/// A PAX time: decimal seconds with an optional fraction, possibly negative.
fn pax_time(v: &[u8], field: &'static str) -> Result<Timestamp> {
    let bad = || Error::corrupt(format!("PAX {field} is not a time")).with_field(field);
    let s = std::str::from_utf8(v).map_err(|_| bad())?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let sec: i64 = int.parse().map_err(|_| bad())?;
    let mut nsec: u32 = 0;
    for (c, scale) in frac.bytes().zip((0..9).rev()) {
        nsec += u32::from(c - b'0') * 10u32.pow(scale);
    }
    Ok(if !neg {
        Timestamp { sec, nsec }
    } else if nsec == 0 {
        Timestamp { sec: -sec, nsec: 0 }
    } else {
        Timestamp { sec: -sec - 1, nsec: 1_000_000_000 - nsec }
    })
}

/// `%xx` escapes of libarchive's xattr names.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(a), Some(b)) = (hex(s[i + 1]), hex(s[i + 2]))
        {
            out.push(a * 16 + b);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Standard base64, padding optional.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(diskcast_layout::low_u8(u64::from(acc >> bits)));
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_and_records() {
        assert_eq!(pax_time(b"1.5", "t").unwrap(), Timestamp { sec: 1, nsec: 500_000_000 });
        assert_eq!(pax_time(b"-1.25", "t").unwrap(), Timestamp { sec: -2, nsec: 750_000_000 });
        assert_eq!(pax_time(b"12", "t").unwrap(), Timestamp::from_secs(12));
        let e = pax_time(b"x", "t").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("is not a time"), "{e}");
        let mut p = Pax::default();
        parse_pax(b"11 path=ab\n16 SCHILY.xattr.a=\n", &mut p).unwrap_err();
        let mut p = Pax::default();
        parse_pax(b"11 path=ab\n8 path=\n", &mut p).unwrap();
        assert!(pax_get(&p, &Pax::default(), b"path").is_none());
        let mut p = Pax::default();
        parse_pax(b"11 path=ab\n21 SCHILY.xattr.a=xy\n", &mut p).unwrap();
        assert_eq!(p.records[&b"path"[..]], b"ab");
        let e = parse_pax(b"99 path=ab\n", &mut Pax::default()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("record length is invalid"), "{e}");
        let e = parse_pax(b"3 x\n", &mut Pax::default()).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("does not end in a newline"), "{e}");
    }

    #[test]
    fn base64_and_percent() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode(b"a*").is_none());
        assert_eq!(percent_decode(b"user.a%3Db"), b"user.a=b");
        assert_eq!(percent_decode(b"x%"), b"x%");
    }

    fn header(name: &[u8], size: usize) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        header::set_checksum(&mut h);
        h
    }

    #[test]
    fn an_archive_ending_right_after_the_last_data_is_accepted_as_umoci_writes_it() {
        let mut tar = header(b"a", 3);
        tar.extend_from_slice(b"abc");
        let mut r = TarReader::new(Box::new(std::io::Cursor::new(tar.clone())), "t");
        assert_eq!(r.next_member().unwrap().unwrap().size, 3);
        assert!(r.next_member().unwrap().is_none());
        // Data cut short is still an error.
        tar.pop();
        let mut r = TarReader::new(Box::new(std::io::Cursor::new(tar)), "t");
        r.next_member().unwrap().unwrap();
        assert!(r.next_member().unwrap_err().to_string().contains("truncated"));
    }
}
