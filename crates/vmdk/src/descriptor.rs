//! The text descriptor: header fields, extent lines and the disk database (`ddb.*`).
//!
//! Grammar (VMware Virtual Disk Format 5.0, "The Descriptor File"): `#` comments, blank
//! lines, `key = value` pairs (values optionally quoted), and extent lines
//! `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.

use diskcast_block::{Error, Result};

/// Most extent lines one descriptor may list: every extent opens a file, and a split
/// 2 TiB disk has 1024 extents; 4096 leaves room while bounding file handles.
pub const MAX_EXTENTS: usize = 4096;

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in sectors.
    pub sectors: u64,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS`, ...
    pub kind: String,
    /// File name, relative to the descriptor (none for `ZERO`).
    pub file: Option<String>,
    /// Offset in sectors into a flat file.
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub struct Descriptor {
    /// `key = value` pairs in file order (quotes removed), `ddb.*` included.
    pub fields: Vec<(String, String)>,
    /// Extent lines in file order.
    pub extents: Vec<ExtentLine>,
}

impl Descriptor {
    /// The value of `key` (case-insensitive, as VMware treats keys).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// Parses descriptor text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut d = Descriptor::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first = line.split_whitespace().next().unwrap_or("");
            if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::unsupported(format!("descriptor lists more than {MAX_EXTENTS} extents"))
                        .with_field("extent"));
                }
                d.extents.push(parse_extent(line).map_err(|e| {
                    Error::invalid(format!("descriptor line {}: {}", n + 1, e.message())).with_field("extent")
                })?);
            } else if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
                d.fields.push((k.trim().to_string(), v.to_string()));
            }
            // Anything else is ignored, as qemu and VMware ignore unknown lines.
        }
        Ok(d)
    }
}

fn parse_extent(line: &str) -> Result<ExtentLine> {
    let mut rest = line;
    let mut token = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (tok, r) = t.split_at(end);
        rest = r;
        tok.to_string()
    };
    let access = token();
    let sectors_s = token();
    let kind = token();
    let sectors: u64 =
        sectors_s.parse().map_err(|_| Error::invalid(format!("extent size {sectors_s:?} is not a number")))?;
    if kind.is_empty() {
        return Err(Error::invalid("extent line has no type"));
    }
    let rest = rest.trim();
    let (file, after) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"').ok_or_else(|| Error::invalid("extent file name has no closing quote"))?;
        (Some(q[..end].to_string()), q[end + 1..].trim())
    } else {
        (None, rest)
    };
    let offset = match after.split_whitespace().next() {
        None => 0,
        Some(o) => o.parse().map_err(|_| Error::invalid(format!("extent offset {o:?} is not a number")))?,
    };
    Ok(ExtentLine { access, sectors, kind, file, offset })
}

/// The parameters of a descriptor we write.
#[derive(Debug, Clone)]
pub struct NewDescriptor<'a> {
    /// Content ID.
    pub cid: u32,
    /// `createType`.
    pub create_type: &'a str,
    /// Extent lines, each already formatted.
    pub extents: Vec<String>,
    /// `ddb.virtualHWVersion`.
    pub hwversion: &'a str,
    /// `ddb.adapterType`.
    pub adapter: &'a str,
    /// Virtual size in sectors (for the geometry).
    pub sectors: u64,
}

/// Heads of the geometry qemu writes: 16 for IDE, 255 for SCSI adapters.
pub fn geometry_heads(adapter: &str) -> u64 {
    if adapter == "ide" { 16 } else { 255 }
}

impl NewDescriptor<'_> {
    /// The descriptor text, laid out as qemu-img writes it.
    pub fn render(&self) -> String {
        let heads = geometry_heads(self.adapter);
        let cylinders = self.sectors / (heads * 63);
        let mut s = String::new();
        s.push_str("# Disk DescriptorFile\nversion=1\n");
        s.push_str(&format!("CID={:08x}\nparentCID=ffffffff\n", self.cid));
        s.push_str(&format!("createType=\"{}\"\n\n# Extent description\n", self.create_type));
        for e in &self.extents {
            s.push_str(e);
            s.push('\n');
        }
        s.push_str("\n# The Disk Data Base\n#DDB\n\n");
        s.push_str(&format!("ddb.virtualHWVersion = \"{}\"\n", self.hwversion));
        s.push_str(&format!("ddb.geometry.cylinders = \"{cylinders}\"\n"));
        s.push_str(&format!("ddb.geometry.heads = \"{heads}\"\n"));
        s.push_str("ddb.geometry.sectors = \"63\"\n");
        s.push_str(&format!("ddb.adapterType = \"{}\"\n", self.adapter));
        s.push_str("ddb.toolsVersion = \"2147483647\"\n");
        s
    }
}

/// A content ID from an identifier of the [`Provenance`](diskcast_block::provenance::Provenance)
/// (random, or derived when the output must be reproducible).
pub fn cid_from(b: &[u8; 16]) -> u32 {
    // 0xffffffff means "no parent" in parentCID; never use it as a CID.
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]).min(0xffff_fffe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_descriptor() {
        let text = "# Disk DescriptorFile\nversion=1\nCID=d258e348\nparentCID=ffffffff\n\
                    createType=\"twoGbMaxExtentSparse\"\n\n# Extent description\n\
                    RW 4194304 SPARSE \"t s001.vmdk\"\nRW 2048 FLAT \"f.vmdk\" 7\nRW 100 ZERO\n\n\
                    ddb.adapterType = \"ide\"\n";
        let d = Descriptor::parse(text).unwrap();
        assert_eq!(d.get("createType"), Some("twoGbMaxExtentSparse"));
        assert_eq!(d.get("ddb.adaptertype"), Some("ide"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("t s001.vmdk"));
        assert_eq!((d.extents[1].sectors, d.extents[1].offset), (2048, 7));
        assert_eq!(d.extents[2].file, None);
        let e = Descriptor::parse("RW x SPARSE \"a\"").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("is not a number"), "{e}");
        let e = Descriptor::parse("RW 5 SPARSE \"a").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("no closing quote"), "{e}");
    }

    #[test]
    fn renders_like_qemu() {
        let d = NewDescriptor {
            cid: 0xe6121782,
            create_type: "monolithicFlat",
            extents: vec!["RW 2048 FLAT \"g-flat.vmdk\" 0".into()],
            hwversion: "4",
            adapter: "ide",
            sectors: 2048,
        };
        let s = d.render();
        assert!(s.contains("CID=e6121782\n"));
        assert!(s.contains("ddb.geometry.cylinders = \"2\"\n"));
        let back = Descriptor::parse(&s).unwrap();
        assert_eq!(back.extents[0].file.as_deref(), Some("g-flat.vmdk"));
    }
}
