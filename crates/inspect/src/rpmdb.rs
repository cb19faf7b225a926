//! RPM's package database as rpm 4.16+ writes it (`rpmdb.sqlite`: Fedora 33+, RHEL 9,
//! Rocky/Alma 9, openSUSE Tumbleweed): the `Packages` table maps `hnum` to `blob`, one
//! package's header each. A stored header is the on-disk header structure without its
//! 8-byte magic: index count and data length (big-endian u32s), that many 16-byte index
//! entries (tag, type, offset into the data, count), then the data.
//!
//! rpm before 4.16 (RHEL/CentOS 7 and 8) kept the same header blobs in a Berkeley DB
//! hash file, `Packages`, keyed by the 4-byte instance number in the machine's byte
//! order; key 0 holds rpm's next-instance counter, not a package ([`read_bdb`]).
//!
//! `gpg-pubkey` pseudo-packages (imported signing keys) are listed, as `rpm -qa` lists
//! them; they have no architecture.

use crate::Package;
use diskcast_block::{Error, Result};
use diskcast_layout::{self as layout, usize_from};
use diskcast_sqlite::{Db, Limits, Source, Value};

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_SUMMARY: u32 = 1004;
const TAG_SIZE: u32 = 1009;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TAG_LONGSIZE: u32 = 5009;

const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits for a header: 64 Ki index entries, 256 MiB of data.
const MAX_INDEX: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;

/// One parsed header: the index entries and the data they point into.
#[derive(Debug)]
pub struct Header<'a> {
    index: Vec<[u32; 4]>,
    data: &'a [u8],
}

/// Why a header is bad, for the caller to wrap with the file and the `hnum`.
type Bad = (&'static str, String);

impl<'a> Header<'a> {
    /// Parses a stored header, checking the counts and every entry's offset.
    pub fn parse(blob: &'a [u8]) -> std::result::Result<Header<'a>, Bad> {
        let be = |o: usize| layout::be32(blob, o, "header").ok();
        let (il, dl) = match (be(0), be(4)) {
            (Some(il), Some(dl)) => (il, dl),
            _ => return Err(("header_intro", format!("{} bytes is too short for a header", blob.len()))),
        };
        if il == 0 || il > MAX_INDEX {
            return Err(("index_count", format!("{il} index entries (1 to {MAX_INDEX} allowed)")));
        }
        if dl > MAX_DATA {
            return Err(("data_length", format!("{dl} bytes of data (at most {MAX_DATA} allowed)")));
        }
        // Both are capped above, so this cannot overflow.
        let data_start = 8 + 16 * usize_from(il);
        let end = data_start + usize_from(dl);
        if end > blob.len() {
            return Err((
                "data_length",
                format!("{il} entries and {dl} data bytes need {end} bytes, the header has {}", blob.len()),
            ));
        }
        let data = &blob[data_start..end];
        let mut index = Vec::with_capacity(usize_from(il));
        for i in 0..usize_from(il) {
            let e = |k: usize| be(8 + 16 * i + 4 * k).unwrap_or(0);
            let entry = [e(0), e(1), e(2), e(3)];
            if entry[2] > dl {
                return Err((
                    "index_offset",
                    format!(
                        "entry {i} (tag {}) points at data offset {}, past the {dl} data bytes",
                        entry[0], entry[2]
                    ),
                ));
            }
            index.push(entry);
        }
        Ok(Header { index, data })
    }

    fn entry(&self, tag: u32) -> Option<&[u32; 4]> {
        self.index.iter().find(|e| e[0] == tag)
    }

    /// The first string of a string, string-array or i18n-string entry (for i18n
    /// strings, the untranslated `C` one).
    pub fn string(&self, tag: u32) -> std::result::Result<Option<String>, Bad> {
        let Some(&[_, ty, off, count]) = self.entry(tag) else { return Ok(None) };
        if !matches!(ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || count == 0 {
            return Err(("index_type", format!("tag {tag} has type {ty} and count {count}, not a string")));
        }
        // Every entry's offset is at most the data length (checked by `parse`).
        let s = self.data.get(usize_from(off)..).unwrap_or_default();
        let n = s
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| ("string", format!("tag {tag}'s string runs past the end of the data")))?;
        Ok(Some(String::from_utf8_lossy(&s[..n]).into_owned()))
    }

    /// The first value of an INT32 or INT64 entry.
    pub fn int(&self, tag: u32) -> std::result::Result<Option<u64>, Bad> {
        let Some(&[_, ty, off, count]) = self.entry(tag) else { return Ok(None) };
        let width = match ty {
            TYPE_INT32 => 4,
            TYPE_INT64 => 8,
            _ => return Err(("index_type", format!("tag {tag} has type {ty}, not an integer"))),
        };
        let v = self
            .data
            .get(usize_from(off)..usize_from(off) + width)
            .filter(|_| count > 0)
            .ok_or_else(|| ("index_offset", format!("tag {tag}'s value runs past the end of the data")))?;
        Ok(Some(v.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))))
    }

    /// The package this header describes.
    pub fn package(&self) -> std::result::Result<Package, Bad> {
        let name = self.string(TAG_NAME)?.ok_or_else(|| ("name", "the header has no NAME".to_string()))?;
        let version = self.string(TAG_VERSION)?.unwrap_or_default();
        let release = self.string(TAG_RELEASE)?.unwrap_or_default();
        let epoch = match self.int(TAG_EPOCH)? {
            Some(e) => Some(u32::try_from(e).map_err(|_| ("epoch", format!("epoch {e} does not fit 32 bits")))?),
            None => None,
        };
        let size = match self.int(TAG_LONGSIZE)? {
            Some(s) => Some(s),
            None => self.int(TAG_SIZE)?,
        };
        Ok(Package {
            name,
            version: if release.is_empty() { version } else { format!("{version}-{release}") },
            architecture: self.string(TAG_ARCH)?.unwrap_or_default(),
            epoch,
            size,
            summary: self.string(TAG_SUMMARY)?,
            license: self.string(TAG_LICENSE)?,
            source: self.string(TAG_SOURCERPM)?,
        })
    }
}

/// Largest rpmdb.sqlite read (a full Fedora workstation's is about 100 MiB).
pub const MAX_DB_BYTES: u64 = 512 << 20;

/// The packages in an `rpmdb.sqlite` (named `name` in errors), with its `-wal` if the
/// image carries a non-empty one (its committed transactions are applied).
pub fn read_sqlite(name: &str, main: Vec<u8>, wal: Option<Vec<u8>>) -> Result<Vec<Package>> {
    let wal = wal.map(|w| -> Box<dyn Source> { Box::new(w) });
    let db = Db::open(name, Box::new(main), wal, Limits::default())?;
    let root = db.table_root("Packages")?.ok_or_else(|| {
        Error::invalid("no Packages table: not an rpm database").with_file(name).with_field("Packages")
    })?;
    let mut out = Vec::new();
    db.scan(root, &mut |row| {
        let blob = match row.values.get(1) {
            Some(Value::Blob(b)) => b,
            _ => {
                return Err(Error::corrupt(format!("Packages row hnum {} has no blob", row.rowid))
                    .with_file(name)
                    .with_field("blob"));
            }
        };
        let bad = |(field, m): Bad| {
            Error::corrupt(format!("package header hnum {}: {m}", row.rowid)).with_file(name).with_field(field)
        };
        out.push(Header::parse(blob).and_then(|h| h.package()).map_err(bad)?);
        Ok(())
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.version.cmp(&b.version)));
    Ok(out)
}

/// Largest BerkeleyDB `Packages` read (they run to a few hundred MiB on big hosts,
/// rarely over 100 MiB in images).
pub const MAX_BDB_BYTES: u64 = 512 << 20;

/// The packages in a Berkeley DB `Packages` hash file (named `name` in errors).
pub fn read_bdb(name: &str, bytes: &[u8]) -> Result<Vec<Package>> {
    let db = crate::bdb::hash_pairs(name, bytes)?;
    let mut out = Vec::new();
    for (key, blob) in &db.pairs {
        let Ok(k) = <[u8; 4]>::try_from(key.as_slice()) else {
            return Err(Error::corrupt(format!("a Packages key of {} bytes (4 expected)", key.len()))
                .with_file(name)
                .with_field("key"));
        };
        let hnum = if db.big_endian { u32::from_be_bytes(k) } else { u32::from_le_bytes(k) };
        if hnum == 0 {
            continue; // rpm's next-instance counter
        }
        let bad = |(field, m): Bad| {
            Error::corrupt(format!("package header hnum {hnum}: {m}")).with_file(name).with_field(field)
        };
        out.push(Header::parse(blob).and_then(|h| h.package()).map_err(bad)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.version.cmp(&b.version)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with the given (tag, type, value bytes) entries.
    fn header(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for &(tag, ty, v) in entries {
            for x in [tag, ty, data.len() as u32, 1] {
                index.extend_from_slice(&x.to_be_bytes());
            }
            data.extend_from_slice(v);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    #[test]
    fn parses_a_header() {
        let h = header(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.2\0"),
            (TAG_RELEASE, TYPE_STRING, b"1.fc40\0"),
            (TAG_EPOCH, TYPE_INT32, &[0, 0, 0, 3]),
            (TAG_LONGSIZE, TYPE_INT64, &[0, 0, 0, 1, 0, 0, 0, 0]),
            (TAG_SUMMARY, TYPE_I18NSTRING, b"The shell\0Die Shell\0"),
        ]);
        let p = Header::parse(&h).unwrap().package().unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.epoch, p.size),
            ("bash", "5.2-1.fc40", Some(3), Some(1 << 32))
        );
        assert_eq!(p.summary.as_deref(), Some("The shell"));
    }

    #[test]
    fn hostile_headers_are_errors() {
        let good = header(&[(TAG_NAME, TYPE_STRING, b"x\0")]);
        // Index count too large, data length past the blob, offset past the data,
        // an unterminated string, a string read as an integer.
        let mut a = good.clone();
        a[0..4].copy_from_slice(&0x0010_0000u32.to_be_bytes());
        let mut b = good.clone();
        b[4..8].copy_from_slice(&1000u32.to_be_bytes());
        let mut c = good.clone();
        c[16..20].copy_from_slice(&100u32.to_be_bytes());
        let d = header(&[(TAG_NAME, TYPE_STRING, b"xyz")]);
        let e = header(&[(TAG_NAME, TYPE_STRING, b"x\0"), (TAG_EPOCH, TYPE_STRING, b"1\0")]);
        let cases = [
            (a, "index_count", "index entries (1 to 65535 allowed)"),
            (b, "data_length", "1000 data bytes need"),
            (c, "index_offset", "points at data offset 100"),
            (d, "string", "runs past the end of the data"),
            (e, "index_type", "not an integer"),
            (vec![0, 0, 0], "header_intro", "too short for a header"),
        ];
        for (blob, field, msg) in cases {
            let (got, m) = Header::parse(&blob).and_then(|h| h.package()).expect_err(field);
            assert_eq!(got, field, "{m}");
            assert!(m.contains(msg), "{field}: {m}");
        }
    }
}
