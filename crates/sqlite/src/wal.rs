//! The write-ahead log next to a WAL-mode database: a 32-byte header, then frames of a
//! 24-byte header and one page. Frames count only when their salts match the header and
//! their running checksum is right, and only up to the last commit frame.

use crate::Source;
use diskcast_block::{Error, Result};
use diskcast_layout::be32;
use std::collections::HashMap;

pub(crate) struct Wal {
    pub src: Box<dyn Source>,
    /// Page number -> file offset of its newest committed copy.
    pub frames: HashMap<u32, u64>,
    /// The database size in pages after the last commit.
    pub db_pages: Option<u32>,
}

/// SQLite's WAL checksum: pairs of 32-bit words in the byte order the magic names.
fn checksum(mut s: (u32, u32), data: &[u8], big: bool) -> (u32, u32) {
    for c in data.chunks_exact(8) {
        let w = |o: usize| {
            // chunks_exact(8) makes both words whole; the fallback is never taken.
            if big {
                diskcast_layout::be32(c, o, "WAL checksum word")
            } else {
                diskcast_layout::le32(c, o, "WAL checksum word")
            }
            .unwrap_or(0)
        };
        s.0 = s.0.wrapping_add(w(0)).wrapping_add(s.1);
        s.1 = s.1.wrapping_add(w(4)).wrapping_add(s.0);
    }
    s
}

impl Wal {
    pub fn open(db: &str, src: Box<dyn Source>, page_size: u32) -> Result<Wal> {
        let name = format!("{db}-wal");
        let bad = |field: &'static str, m: String| Error::corrupt(m).with_file(&name).with_field(field);
        let len = src.size().map_err(|e| Error::io("cannot read the WAL size", e).with_file(&name))?;
        let mut wal = Wal { src, frames: HashMap::new(), db_pages: None };
        if len == 0 {
            return Ok(wal);
        }
        let mut h = [0u8; 32];
        if len < 32 {
            return Err(bad("wal_header", format!("{len} bytes is shorter than a WAL header; refusing to guess")));
        }
        wal.src.read_exact_at(&mut h, 0).map_err(|e| Error::io("cannot read the WAL header", e).with_file(&name))?;
        let magic = be32(&h, 0, "WAL header")?;
        if magic & !1 != 0x377f_0682 {
            return Err(bad("wal_magic", format!("bad WAL magic {magic:#010x}")));
        }
        let big = magic & 1 == 1;
        if be32(&h, 4, "WAL header")? != 3_007_000 {
            return Err(Error::unsupported(format!(
                "WAL format version {} is not 3007000",
                be32(&h, 4, "WAL header")?
            ))
            .with_file(&name)
            .with_field("wal_version"));
        }
        if be32(&h, 8, "WAL header")? != page_size {
            return Err(bad(
                "wal_page_size",
                format!("WAL page size {} differs from the database's {page_size}", be32(&h, 8, "WAL header")?),
            ));
        }
        let mut sum = checksum((0, 0), &h[..24], big);
        if sum != (be32(&h, 24, "WAL header")?, be32(&h, 28, "WAL header")?) {
            return Err(bad("wal_checksum", "the WAL header checksum does not match; refusing a damaged WAL".into()));
        }
        let salts = (be32(&h, 16, "WAL header")?, be32(&h, 20, "WAL header")?);
        let frame = 24 + u64::from(page_size);
        let count = (len - 32) / frame;
        let mut buf = vec![0u8; 24 + diskcast_layout::usize_from(page_size)];
        let mut pending = HashMap::new();
        for i in 0..count {
            let off = 32 + i * frame;
            wal.src
                .read_exact_at(&mut buf, off)
                .map_err(|e| Error::io("cannot read a WAL frame", e).with_file(&name))?;
            let (page, commit) = (be32(&buf, 0, "WAL frame header")?, be32(&buf, 4, "WAL frame header")?);
            if (be32(&buf, 8, "WAL frame header")?, be32(&buf, 12, "WAL frame header")?) != salts || page == 0 {
                break; // a frame from an earlier generation of the log: the valid log ends here
            }
            let s = checksum(checksum(sum, &buf[..8], big), &buf[24..], big);
            if s != (be32(&buf, 16, "WAL frame header")?, be32(&buf, 20, "WAL frame header")?) {
                break;
            }
            sum = s;
            pending.insert(page, off + 24);
            if commit != 0 {
                wal.frames.extend(pending.drain());
                wal.db_pages = Some(commit);
            }
        }
        Ok(wal)
    }
}
