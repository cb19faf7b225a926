//! A small, read-only reader of the SQLite 3 file format (sqlite.org/fileformat2.html),
//! written for package databases found inside images (`rpmdb.sqlite`), so it reads what
//! such a database needs and no more: the header, table b-trees (interior 0x05 and leaf
//! 0x0d pages), records, overflow chains, the schema table, and a write-ahead log left
//! next to the file. Index b-trees, `WITHOUT ROWID` tables and SQL are out of scope.
//!
//! Every input is treated as hostile: page numbers, cell offsets, payload sizes and
//! overflow chains are bounds-checked, every page is visited at most once per walk (so
//! b-tree and overflow cycles are errors, not loops), and allocations are capped by
//! [`Limits`]. Errors name the file and the field.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod record;
mod wal;

pub use record::{Row, Value};

use diskcast_block::{Error, ErrorKind, Result};
use std::collections::HashSet;

/// Random access to the bytes of a database (or WAL) file.
pub trait Source: Send + Sync {
    /// The file's length.
    fn size(&self) -> std::io::Result<u64>;
    /// Fills `buf` from `offset`; a short file is an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for Vec<u8> {
    fn size(&self) -> std::io::Result<u64> {
        Ok(diskcast_layout::u64_from_usize(self.len()))
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl Source for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// Caps on the work one walk may do and the memory it may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single record payload (rpm's own limit for a header is 256 MiB; real
    /// ones are well under 1 MiB).
    pub max_payload: u64,
    /// Most payload bytes one table scan may return in total.
    pub max_total: u64,
    /// Deepest b-tree (SQLite's own trees stay under 20 levels).
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_payload: 64 << 20, max_total: 1 << 30, max_depth: 40 }
    }
}

/// How the database stores text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8 (1).
    Utf8,
    /// UTF-16 little-endian (2).
    Utf16Le,
    /// UTF-16 big-endian (3).
    Utf16Be,
}

/// An open database: its header read and checked, a WAL's committed pages indexed.
pub struct Db {
    name: String,
    main: Box<dyn Source>,
    wal: Option<wal::Wal>,
    page_size: u32,
    usable: u32,
    pages: u32,
    encoding: Encoding,
    free: HashSet<u32>,
    limits: Limits,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("name", &self.name)
            .field("page_size", &self.page_size)
            .field("pages", &self.pages)
            .field("encoding", &self.encoding)
            .field("wal_frames", &self.wal.as_ref().map(|w| w.frames.len()))
            .finish()
    }
}

const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What a WAL next to the database contributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalUse {
    /// No WAL, or an empty one (the normal state after a clean close).
    None,
    /// Committed frames were applied: this many distinct pages came from the WAL.
    Applied(usize),
}

impl Db {
    /// Opens `main` (named `name` in errors) with the WAL file next to it, if any.
    /// A non-empty WAL's committed transactions are applied as SQLite would on open; a
    /// WAL whose header is damaged is refused rather than ignored.
    pub fn open(name: &str, main: Box<dyn Source>, wal: Option<Box<dyn Source>>, limits: Limits) -> Result<Db> {
        let mut hdr = [0u8; 100];
        let len = main.size().map_err(|e| Error::io("cannot read the database size", e).with_file(name))?;
        if len < 100 {
            return Err(Error::invalid(format!("{len} bytes is too short for an SQLite database header"))
                .with_file(name)
                .with_field("header"));
        }
        main.read_exact_at(&mut hdr, 0).map_err(|e| Error::io("cannot read the header", e).with_file(name))?;
        if &hdr[..16] != MAGIC {
            return Err(Error::invalid("not an SQLite 3 database (bad magic)").with_file(name).with_field("magic"));
        }
        let page_size = match diskcast_layout::be16(&hdr, 16, "header").map_err(|e| Error::from(e).with_file(name))? {
            1 => 65536u32,
            n if n >= 512 && n.is_power_of_two() => u32::from(n),
            n => {
                return Err(Error::corrupt(format!("page size {n} is not a power of two from 512 to 65536"))
                    .with_file(name)
                    .with_field("page_size"));
            }
        };
        if hdr[19] > 2 {
            return Err(Error::unsupported(format!(
                "read format version {} is newer than this reader knows (1 rollback journal, 2 WAL)",
                hdr[19]
            ))
            .with_file(name)
            .with_field("read_version"));
        }
        let mut db = Db {
            name: name.to_string(),
            main,
            wal: None,
            page_size,
            usable: page_size,
            pages: 0,
            encoding: Encoding::Utf8,
            free: HashSet::new(),
            limits,
        };
        if let Some(w) = wal {
            let w = wal::Wal::open(&db.name, w, page_size)?;
            if !w.frames.is_empty() {
                db.wal = Some(w);
            }
        }
        // Page 1 may itself have been rewritten in the WAL: read the header through it.
        let mut file_pages = len / u64::from(page_size);
        let hdr = if db.wal.as_ref().is_some_and(|w| w.frames.contains_key(&1)) {
            db.pages = 1;
            file_pages = file_pages.max(1);
            let p1 = db.raw_page(1)?;
            let mut h = [0u8; 100];
            h.copy_from_slice(&p1[..100]);
            h
        } else {
            hdr
        };
        db.setup(&hdr, file_pages)?;
        Ok(db)
    }

    /// Opens a database file and its `-wal` companion (when one exists) from disk.
    pub fn open_path(path: &std::path::Path, limits: Limits) -> Result<Db> {
        let name = path.display().to_string();
        let main = std::fs::File::open(path).map_err(|e| Error::io("cannot open", e).with_file(path))?;
        let mut walp = path.as_os_str().to_owned();
        walp.push("-wal");
        let wal: Option<Box<dyn Source>> = match std::fs::File::open(&walp) {
            Ok(f) => Some(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("cannot open the WAL", e).with_file(std::path::Path::new(&walp))),
        };
        Db::open(&name, Box::new(main), wal, limits)
    }

    fn setup(&mut self, hdr: &[u8; 100], file_pages: u64) -> Result<()> {
        let be32 = |o: usize| diskcast_layout::be32(hdr, o, "header");
        let reserved = u32::from(hdr[20]);
        self.usable = self.page_size - reserved;
        // The spec's minimum usable size; smaller would make the overflow formulas negative.
        if self.usable < 480 {
            return Err(self.err(
                ErrorKind::Corrupt,
                "reserved_space",
                format!("{reserved} reserved bytes leave {} usable bytes per page (at least 480 needed)", self.usable),
            ));
        }
        if (hdr[21], hdr[22], hdr[23]) != (64, 32, 32) {
            return Err(self.err(ErrorKind::Corrupt, "payload_fractions", "payload fractions are not 64/32/32"));
        }
        // The in-header size is valid only when the change counter matches the
        // version-valid-for number; otherwise the file's length decides.
        let in_header = be32(28)?;
        let pages = match self.wal.as_ref().and_then(|w| w.db_pages) {
            Some(n) => u64::from(n),
            None if in_header != 0 && be32(24)? == be32(92)? => u64::from(in_header),
            None => file_pages,
        };
        self.pages = u32::try_from(pages).ok().filter(|p| (1..u32::MAX).contains(p)).ok_or_else(|| {
            self.err(ErrorKind::Corrupt, "page_count", format!("database size of {pages} pages is out of range"))
        })?;
        self.encoding = match be32(56)? {
            0 | 1 => Encoding::Utf8,
            2 => Encoding::Utf16Le,
            3 => Encoding::Utf16Be,
            n => {
                return Err(self.err(
                    ErrorKind::Corrupt,
                    "text_encoding",
                    format!("text encoding {n} is not 1, 2 or 3"),
                ));
            }
        };
        self.read_freelist(be32(32)?, be32(36)?)
    }

    /// Collects the freelist so that a b-tree pointing into it is caught as corruption.
    fn read_freelist(&mut self, mut trunk: u32, count: u32) -> Result<()> {
        let per_trunk = self.usable / 4 - 2;
        let mut trunks = HashSet::new();
        while trunk != 0 {
            self.check_page(trunk, "freelist_trunk")?;
            if !trunks.insert(trunk) || self.free.contains(&trunk) {
                return Err(self.err(
                    ErrorKind::Corrupt,
                    "freelist_trunk",
                    format!("freelist trunk page {trunk} is reached twice (a cycle)"),
                ));
            }
            self.free.insert(trunk);
            let p = self.raw_page(trunk)?;
            let n = self.be32(&p, 4, "freelist_trunk")?;
            if n > per_trunk {
                return Err(self.err(
                    ErrorKind::Corrupt,
                    "freelist_leaf_count",
                    format!("freelist trunk page {trunk} claims {n} leaves, more than the {per_trunk} that fit"),
                ));
            }
            for i in 0..diskcast_layout::usize_from(n) {
                let leaf = self.be32(&p, 8 + 4 * i, "freelist_leaf")?;
                self.check_page(leaf, "freelist_leaf")?;
                self.free.insert(leaf);
            }
            if self.free.len() > diskcast_layout::usize_from(self.pages) {
                return Err(self.err(ErrorKind::Corrupt, "freelist", "the freelist is longer than the database"));
            }
            trunk = self.be32(&p, 0, "freelist_trunk")?;
        }
        if self.free.len() != diskcast_layout::usize_from(count) {
            return Err(self.err(
                ErrorKind::Corrupt,
                "freelist_count",
                format!("the header counts {count} free pages, the freelist holds {}", self.free.len()),
            ));
        }
        Ok(())
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.page_size
    }
    /// The number of pages in the database.
    pub fn page_count(&self) -> u32 {
        self.pages
    }
    /// How text is stored.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
    /// Pages on the freelist.
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }
    /// Whether a WAL was applied.
    pub fn wal_use(&self) -> WalUse {
        match &self.wal {
            Some(w) => WalUse::Applied(w.frames.len()),
            None => WalUse::None,
        }
    }

    fn err(&self, kind: ErrorKind, field: &'static str, msg: impl Into<String>) -> Error {
        Error::new(kind, msg).with_file(&self.name).with_field(field)
    }

    /// A field read past the end of its page or header: corruption naming the field.
    fn short(&self, e: diskcast_layout::LayoutError) -> Error {
        let field = match e {
            diskcast_layout::LayoutError::Short { what, .. } | diskcast_layout::LayoutError::TooLarge { what, .. } => {
                what
            }
        };
        self.err(ErrorKind::Corrupt, field, format!("truncated {e}"))
    }
    fn be32(&self, b: &[u8], at: usize, field: &'static str) -> Result<u32> {
        diskcast_layout::be32(b, at, field).map_err(|e| self.short(e))
    }
    fn be16(&self, b: &[u8], at: usize, field: &'static str) -> Result<u16> {
        diskcast_layout::be16(b, at, field).map_err(|e| self.short(e))
    }
    fn byte(&self, b: &[u8], at: usize, field: &'static str) -> Result<u8> {
        diskcast_layout::byte(b, at, field).map_err(|e| self.short(e))
    }

    /// The page containing file offset 2^30, which SQLite never uses for content.
    fn lock_byte_page(&self) -> u32 {
        // At most 2^21 + 1 (512-byte pages): always a u32.
        u32::try_from((1u64 << 30) / u64::from(self.page_size) + 1).unwrap_or(u32::MAX)
    }

    /// Checks that `n` (read from `field`) names a page that may hold content.
    fn check_page(&self, n: u32, field: &'static str) -> Result<()> {
        if n == 0 || n > self.pages {
            return Err(self.err(
                ErrorKind::OutOfBounds,
                field,
                format!("page number {n} is outside the database's {} pages", self.pages),
            ));
        }
        if n == self.lock_byte_page() {
            return Err(self.err(ErrorKind::Corrupt, field, format!("page {n} is the lock-byte page, never content")));
        }
        Ok(())
    }

    /// Page `n`'s bytes, from the WAL when it has a committed copy.
    fn raw_page(&self, n: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; diskcast_layout::usize_from(self.page_size)];
        if let Some(w) = &self.wal
            && let Some(&off) = w.frames.get(&n)
        {
            w.src.read_exact_at(&mut buf, off).map_err(|e| {
                Error::io(format!("cannot read page {n} from the WAL"), e).with_file(format!("{}-wal", self.name))
            })?;
            return Ok(buf);
        }
        let off = u64::from(n - 1) * u64::from(self.page_size);
        self.main.read_exact_at(&mut buf, off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.err(ErrorKind::OutOfBounds, "page", format!("page {n} lies past the end of the file"))
                    .with_offset(off)
            } else {
                Error::io(format!("cannot read page {n}"), e).with_file(&self.name)
            }
        })?;
        Ok(buf)
    }

    /// A page reached through a pointer in `field`, checked and marked visited.
    fn visit(&self, n: u32, field: &'static str, seen: &mut HashSet<u32>) -> Result<Vec<u8>> {
        self.check_page(n, field)?;
        if self.free.contains(&n) {
            return Err(self.err(ErrorKind::Corrupt, field, format!("page {n} is on the freelist")));
        }
        if !seen.insert(n) {
            return Err(self.err(
                ErrorKind::Corrupt,
                field,
                format!("page {n} is reached twice in one walk (a cycle or a shared page)"),
            ));
        }
        self.raw_page(n)
    }

    /// Every row of the table b-tree rooted at `root`, in rowid order, to `f`.
    pub fn scan(&self, root: u32, f: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
        let mut walk = Walk { seen: HashSet::new(), total: 0 };
        self.walk(root, 0, &mut walk, f)
    }

    /// Every row of the table b-tree rooted at `root`, collected.
    pub fn rows(&self, root: u32) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        self.scan(root, &mut |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    fn walk(&self, page: u32, depth: u32, w: &mut Walk, f: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
        if depth > self.limits.max_depth {
            return Err(self.err(
                ErrorKind::Corrupt,
                "btree_depth",
                format!("b-tree deeper than {} levels at page {page}", self.limits.max_depth),
            ));
        }
        let field = if depth == 0 { "root_page" } else { "child_page" };
        let p = self.visit(page, field, &mut w.seen)?;
        let h = if page == 1 { 100 } else { 0 };
        let usable = diskcast_layout::usize_from(self.usable);
        let kind = self.byte(&p, h, "page_type")?;
        let interior = match kind {
            0x05 => true,
            0x0d => false,
            k => {
                return Err(self.err(
                    ErrorKind::Corrupt,
                    "page_type",
                    format!("page {page} has type {k:#04x}, not a table b-tree page (0x05 or 0x0d)"),
                ));
            }
        };
        let hlen = if interior { 12 } else { 8 };
        let ncells = usize::from(self.be16(&p, h + 3, "cell_count")?);
        let array_end = h + hlen + 2 * ncells;
        if array_end > usable {
            return Err(self.err(
                ErrorKind::Corrupt,
                "cell_count",
                format!("page {page} claims {ncells} cells, more than its pointer array can hold"),
            ));
        }
        for i in 0..ncells {
            let at = h + hlen + 2 * i;
            let off = usize::from(self.be16(&p, at, "cell_pointer")?);
            if off < array_end || off >= usable {
                return Err(self.err(
                    ErrorKind::OutOfBounds,
                    "cell_pointer",
                    format!("page {page} cell {i} points at offset {off}, outside the cell area {array_end}..{usable}"),
                ));
            }
            let cell = &p[off..usable];
            if interior {
                if cell.len() < 5 {
                    return Err(self.err(ErrorKind::Corrupt, "cell", format!("page {page} cell {i} is truncated")));
                }
                self.walk(self.be32(cell, 0, "child_page")?, depth + 1, w, f)?;
            } else {
                let row = self.leaf_cell(page, i, cell, w)?;
                f(row)?;
            }
        }
        if interior {
            self.walk(self.be32(&p, h + 8, "right_child_page")?, depth + 1, w, f)?;
        }
        Ok(())
    }

    /// A table leaf cell: payload size, rowid, local payload, then the overflow chain.
    fn leaf_cell(&self, page: u32, i: usize, cell: &[u8], w: &mut Walk) -> Result<Row> {
        let bad = |what: &str| self.err(ErrorKind::Corrupt, "cell", format!("page {page} cell {i}: {what}"));
        let (size, a) = record::varint(cell, 0).ok_or_else(|| bad("truncated payload size"))?;
        let (rowid, b) = record::varint(cell, a).ok_or_else(|| bad("truncated rowid"))?;
        if size > self.limits.max_payload {
            return Err(self.err(
                ErrorKind::OutOfBounds,
                "payload_size",
                format!(
                    "page {page} cell {i}: payload of {size} bytes exceeds the {}-byte limit",
                    self.limits.max_payload
                ),
            ));
        }
        w.total = w.total.saturating_add(size);
        if w.total > self.limits.max_total {
            return Err(self.err(
                ErrorKind::OutOfBounds,
                "payload_size",
                format!("the table holds more than {} bytes of payload", self.limits.max_total),
            ));
        }
        // `size` fits in usize: it is at most max_payload, which was checked above.
        let size = diskcast_layout::usize_from_u64(size, "payload size")?;
        let u = diskcast_layout::usize_from(self.usable);
        let x = u - 35;
        let local = if size <= x {
            size
        } else {
            let m = (u - 12) * 32 / 255 - 23;
            let k = m + (size - m) % (u - 4);
            if k <= x { k } else { m }
        };
        let rest = &cell[b..];
        let spills = local < size;
        if rest.len() < local + if spills { 4 } else { 0 } {
            return Err(self.err(
                ErrorKind::OutOfBounds,
                "payload_size",
                format!("page {page} cell {i}: {local} payload bytes run past the end of the page"),
            ));
        }
        // Grown as pages are read, never reserved at the claimed size: a 100 KB file may
        // claim a 64 MiB record, and memory must follow the bytes read, not the claim.
        let mut payload = Vec::with_capacity(local);
        payload.extend_from_slice(&rest[..local]);
        if spills {
            let mut next = self.be32(rest, local, "overflow_page")?;
            while payload.len() < size {
                if next == 0 {
                    return Err(self.err(
                        ErrorKind::Corrupt,
                        "overflow_page",
                        format!(
                            "page {page} cell {i}: overflow chain ends after {} of {size} payload bytes",
                            payload.len()
                        ),
                    ));
                }
                let o = self.visit(next, "overflow_page", &mut w.seen)?;
                let take = (size - payload.len()).min(u - 4);
                payload.extend_from_slice(diskcast_layout::bytes(&o, 4, take, "overflow page")?);
                next = self.be32(&o, 0, "overflow_page")?;
            }
        }
        let values = record::decode(&payload).map_err(|m| {
            self.err(ErrorKind::Corrupt, "record", format!("page {page} cell {i} (rowid {}): {m}", rowid.cast_signed()))
        })?;
        // A rowid is a 64-bit two's complement integer stored as a varint.
        Ok(Row { rowid: rowid.cast_signed(), values })
    }

    /// Text as the database stores it, decoded (lossily) to a string.
    pub fn text(&self, bytes: &[u8]) -> String {
        match self.encoding {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Utf16Le | Encoding::Utf16Be => {
                let le = self.encoding == Encoding::Utf16Le;
                let units = bytes
                    .chunks_exact(2)
                    .map(|c| if le { u16::from_le_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], c[1]]) });
                char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
            }
        }
    }

    /// The root page of table `name` (ASCII case-insensitive, as SQL names are), from the
    /// schema table on page 1; `None` when there is no such table.
    pub fn table_root(&self, name: &str) -> Result<Option<u32>> {
        let mut found = None;
        self.scan(1, &mut |row| {
            let is = |i: usize, want: &str| match row.values.get(i) {
                Some(Value::Text(t)) => self.text(t).eq_ignore_ascii_case(want),
                _ => false,
            };
            if found.is_none() && is(0, "table") && is(1, name) {
                let root = match row.values.get(3) {
                    Some(Value::Int(n)) => u32::try_from(*n).ok().filter(|&n| n != 0),
                    _ => None,
                };
                found = Some(root.ok_or_else(|| {
                    self.err(
                        ErrorKind::Corrupt,
                        "rootpage",
                        format!("table {name} has no valid root page in the schema"),
                    )
                })?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The names of the tables in the schema.
    pub fn tables(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.scan(1, &mut |row| {
            if let (Some(Value::Text(t)), Some(Value::Text(n))) = (row.values.first(), row.values.get(1))
                && self.text(t) == "table"
            {
                out.push(self.text(n));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

struct Walk {
    seen: HashSet<u32>,
    total: u64,
}
