//! The qcow2 header (cluster 0): parse, validate and serialize, with the limits that keep
//! a hostile file from making us allocate or loop without bound.

use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result};

/// `QFI\xfb`, the first four bytes of every qcow2 file.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// Header length of version 2 (fixed; v2 has no `header_length` field).
pub const V2_HEADER_LEN: u32 = 72;
/// Header length we write for version 3: up to and including the compression type byte
/// and its padding to 8 bytes, as qemu writes it.
pub const V3_HEADER_LEN: u32 = 112;
/// Smallest cluster: 512 bytes (qemu's MIN_CLUSTER_BITS).
pub const MIN_CLUSTER_BITS: u32 = 9;
/// Largest cluster: 2 MiB (qemu's MAX_CLUSTER_BITS).
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table qemu accepts (QCOW_MAX_L1_SIZE): caps the one allocation we make
/// from the header's `l1_size`.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table qemu accepts (QCOW_MAX_REFTABLE_SIZE).
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name qemu accepts (1023 bytes plus its NUL).
pub const MAX_BACKING_NAME: u32 = 1023;
/// Largest virtual size qemu accepts (QCOW_MAX_VIRTUAL_SIZE-ish bound: 2^61 keeps every
/// guest offset and cluster index computation far from overflow).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;
/// Header extensions we are willing to walk before calling the file broken.
const MAX_EXTENSIONS: usize = 1024;
/// Longest backing format name we keep (qemu's format names are short).
const MAX_FORMAT_NAME: usize = 64;

/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bit 0: refcounts may be stale (lazy refcounts).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible feature bit 1: qemu found an inconsistency and stopped writing.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external data file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type byte at offset 104 is valid.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: 16-byte L2 entries with 32 subclusters.
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// Every incompatible bit we understand.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Compatible feature bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// L1/L2 entry bit 63: refcount is exactly 1.
pub const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entry bit 62: compressed cluster.
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (v3, no extended L2): the cluster reads as zeros.
pub const OFLAG_ZERO: u64 = 1;
/// Bits 9..=55 of an L1 entry or standard L2 entry: the host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits of an L1 entry that must be zero.
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
/// Subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (window bits -12 when written).
    Zlib,
    /// One zstd frame per cluster.
    Zstd,
}

impl Compression {
    /// The name qemu uses.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

/// The parsed header and the extensions we care about.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Where the backing file name is stored (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest-visible size.
    pub size: u64,
    /// 0: none, 1: AES, 2: LUKS.
    pub crypt_method: u32,
    /// Entries in the active L1 table.
    pub l1_size: u32,
    /// Host offset of the active L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters occupied by the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (v3).
    pub incompatible: u64,
    /// Compatible feature bits (v3).
    pub compatible: u64,
    /// Autoclear feature bits (v3).
    pub autoclear: u64,
    /// log2 of the refcount width in bits (4 in v2).
    pub refcount_order: u32,
    /// Bytes of the fixed header (extensions follow).
    pub header_length: u32,
    /// Compression type for compressed clusters.
    pub compression: Compression,
    /// Backing file name, if any.
    pub backing_file: Option<String>,
    /// Backing format from the header extension, if any.
    pub backing_format: Option<String>,
    /// The persistent bitmaps extension, if any (honoured only with autoclear bit 0).
    pub bitmaps: Option<crate::bitmap::BitmapsExt>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Refcount width in bits.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }
    /// True with 16-byte L2 entries and subclusters.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }
    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }
    /// Guest bytes one L2 table maps.
    pub fn l2_span(&self) -> u64 {
        self.l2_entries() << self.cluster_bits
    }
    /// Bit position where a compressed descriptor's sector count starts.
    pub fn csize_shift(&self) -> u32 {
        62 - (self.cluster_bits - 8)
    }
    /// L1 entries needed to map `size` guest bytes.
    pub fn l1_entries_for(size: u64, cluster_bits: u32, l2_entry_size: u64) -> u64 {
        let span = ((1u64 << cluster_bits) / l2_entry_size) << cluster_bits;
        size.div_ceil(span)
    }

    /// Reads and validates the header of `file`. Corrupt-bit handling is left to callers
    /// (reading refuses, checking proceeds).
    pub fn read(file: &dyn ByteSource) -> Result<Header> {
        let file_len = file.len()?;
        let mut fixed = [0u8; V3_HEADER_LEN as usize];
        let want = file_len.min(fixed.len() as u64) as usize;
        file.read_exact_at(&mut fixed[..want], 0)?;
        if want < 4 || fixed[..4] != MAGIC {
            return Err(Error::invalid("not a qcow2 image: bad magic").with_field("magic").with_offset(0));
        }
        let version = be32(&fixed, 4);
        let min_len = match version {
            2 => V2_HEADER_LEN,
            3 => 104,
            _ => {
                return Err(Error::unsupported(format!("qcow2 version {version} (only 2 and 3 exist)"))
                    .with_field("version")
                    .with_offset(4));
            }
        };
        if (want as u64) < u64::from(min_len) {
            return Err(Error::invalid(format!(
                "file is {file_len} bytes, too short for a qcow2 v{version} header of {min_len} bytes"
            ))
            .with_field("header")
            .with_offset(0));
        }
        let cluster_bits = be32(&fixed, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::invalid(format!(
                "cluster_bits {cluster_bits} is outside {MIN_CLUSTER_BITS}..={MAX_CLUSTER_BITS}"
            ))
            .with_field("cluster_bits")
            .with_offset(20));
        }
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(&fixed, 8),
            backing_file_size: be32(&fixed, 16),
            cluster_bits,
            size: be64(&fixed, 24),
            crypt_method: be32(&fixed, 32),
            l1_size: be32(&fixed, 36),
            l1_table_offset: be64(&fixed, 40),
            refcount_table_offset: be64(&fixed, 48),
            refcount_table_clusters: be32(&fixed, 56),
            nb_snapshots: be32(&fixed, 60),
            snapshots_offset: be64(&fixed, 64),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression: Compression::Zlib,
            backing_file: None,
            backing_format: None,
            bitmaps: None,
        };
        if version == 3 {
            h.incompatible = be64(&fixed, 72);
            h.compatible = be64(&fixed, 80);
            h.autoclear = be64(&fixed, 88);
            h.refcount_order = be32(&fixed, 96);
            h.header_length = be32(&fixed, 100);
            if h.header_length < 104 || u64::from(h.header_length) > cs || !h.header_length.is_multiple_of(8) {
                return Err(Error::invalid(format!(
                    "header_length {} must be a multiple of 8 between 104 and the cluster size",
                    h.header_length
                ))
                .with_field("header_length")
                .with_offset(100));
            }
            if h.refcount_order > 6 {
                return Err(Error::invalid(format!("refcount_order {} is above 6 (64-bit)", h.refcount_order))
                    .with_field("refcount_order")
                    .with_offset(96));
            }
            if h.incompatible & INCOMPAT_COMPRESSION != 0 {
                if h.header_length < 105 || (want as u64) < 105 {
                    return Err(Error::invalid("compression type bit set but header has no compression type field")
                        .with_field("compression_type")
                        .with_offset(104));
                }
                h.compression = match fixed[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => {
                        return Err(Error::unsupported(format!("compression type {t} (known: 0 zlib, 1 zstd)"))
                            .with_field("compression_type")
                            .with_offset(104));
                    }
                };
            } else if h.header_length >= 105 && want >= 105 && fixed[104] != 0 {
                return Err(Error::invalid("compression type is not zlib but incompatible bit 3 is clear")
                    .with_field("compression_type")
                    .with_offset(104));
            }
        }
        if h.size > MAX_VIRTUAL_SIZE {
            return Err(Error::invalid(format!("virtual size {} is larger than 2^61", h.size))
                .with_field("size")
                .with_offset(24));
        }
        let l2_es = h.l2_entry_size();
        if h.extended_l2() && cluster_bits < 14 {
            return Err(Error::invalid("extended L2 entries need clusters of at least 16 KiB")
                .with_field("incompatible_features")
                .with_offset(72));
        }
        if u64::from(h.l1_size) * 8 > MAX_L1_BYTES {
            return Err(Error::invalid(format!(
                "L1 table of {} entries is larger than the {} MiB limit",
                h.l1_size,
                MAX_L1_BYTES >> 20
            ))
            .with_field("l1_size")
            .with_offset(36));
        }
        if u64::from(h.l1_size) < Header::l1_entries_for(h.size, cluster_bits, l2_es) {
            return Err(Error::corrupt(format!(
                "L1 table of {} entries is too small for a virtual size of {} bytes",
                h.l1_size, h.size
            ))
            .with_field("l1_size")
            .with_offset(36));
        }
        if u64::from(h.refcount_table_clusters) << cluster_bits > MAX_REFTABLE_BYTES {
            return Err(Error::invalid(format!(
                "refcount table of {} clusters is larger than the {} MiB limit",
                h.refcount_table_clusters,
                MAX_REFTABLE_BYTES >> 20
            ))
            .with_field("refcount_table_clusters")
            .with_offset(56));
        }
        check_table(h.l1_table_offset, u64::from(h.l1_size) * 8, cs, file_len, "l1_table_offset", 40)?;
        check_table(
            h.refcount_table_offset,
            u64::from(h.refcount_table_clusters) << cluster_bits,
            cs,
            file_len,
            "refcount_table_offset",
            48,
        )?;
        h.read_extensions(file, file_len)?;
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME || h.backing_file_size == 0 {
                return Err(Error::invalid(format!(
                    "backing file name length {} is outside 1..={MAX_BACKING_NAME}",
                    h.backing_file_size
                ))
                .with_field("backing_file_size")
                .with_offset(16));
            }
            let end = h.backing_file_offset.checked_add(u64::from(h.backing_file_size));
            if end.is_none_or(|e| e > cs) {
                return Err(Error::invalid("backing file name lies outside the header cluster")
                    .with_field("backing_file_offset")
                    .with_offset(h.backing_file_offset));
            }
            let mut name = vec![0u8; h.backing_file_size as usize];
            file.read_exact_at(&mut name, h.backing_file_offset).map_err(|e| e.with_field("backing_file_offset"))?;
            let name = String::from_utf8(name).map_err(|_| {
                Error::invalid("backing file name is not UTF-8")
                    .with_field("backing_file_offset")
                    .with_offset(h.backing_file_offset)
            })?;
            h.backing_file = Some(name);
        }
        Ok(h)
    }

    /// Walks the header extensions (between the fixed header and the end of cluster 0).
    fn read_extensions(&mut self, file: &dyn ByteSource, file_len: u64) -> Result<()> {
        let cs = self.cluster_size();
        let start = u64::from(self.header_length);
        // Extensions end at the backing file name when there is one, else at cluster end.
        let mut end = cs.min(file_len);
        if self.backing_file_offset > start && self.backing_file_offset < end {
            end = self.backing_file_offset;
        }
        if end <= start {
            return Ok(());
        }
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let mut pos = 0usize;
        for _ in 0..MAX_EXTENSIONS {
            if pos + 8 > buf.len() {
                return Ok(());
            }
            let typ = be32(&buf, pos);
            let len = be32(&buf, pos + 4) as usize;
            if typ == 0 {
                return Ok(());
            }
            let data_at = pos + 8;
            let Some(data) = buf.get(data_at..data_at.saturating_add(len)) else {
                return Err(Error::invalid(format!("header extension {typ:#x} of {len} bytes runs past its cluster"))
                    .with_field("header_extension")
                    .with_offset(start + pos as u64));
            };
            if typ == EXT_BACKING_FORMAT {
                if len > MAX_FORMAT_NAME {
                    return Err(Error::invalid("backing format name is too long")
                        .with_field("backing_format")
                        .with_offset(start + pos as u64));
                }
                let name = String::from_utf8(data.to_vec()).map_err(|_| {
                    Error::invalid("backing format name is not UTF-8")
                        .with_field("backing_format")
                        .with_offset(start + pos as u64)
                })?;
                self.backing_format = Some(name.trim_end_matches('\0').to_string());
            }
            if typ == crate::bitmap::EXT_BITMAPS {
                self.bitmaps =
                    Some(crate::bitmap::BitmapsExt::parse(data).map_err(|e| e.with_offset(start + pos as u64))?);
            }
            pos = data_at + len.div_ceil(8) * 8;
        }
        Err(Error::invalid(format!("more than {MAX_EXTENSIONS} header extensions"))
            .with_field("header_extension")
            .with_offset(start))
    }

    /// Errors for features a reader or checker cannot handle (encryption, data file,
    /// unknown incompatible bits).
    pub fn check_supported(&self) -> Result<()> {
        if self.crypt_method != 0 {
            let what = match self.crypt_method {
                1 => "AES",
                2 => "LUKS",
                _ => "unknown",
            };
            return Err(Error::unsupported(format!(
                "encrypted images ({what}, crypt_method {}) are not supported",
                self.crypt_method
            ))
            .with_field("crypt_method")
            .with_offset(32));
        }
        if self.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::unsupported("external data files (incompatible feature bit 2) are not supported")
                .with_field("incompatible_features")
                .with_offset(72));
        }
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let bits: Vec<String> = (0..64).filter(|b| unknown & (1u64 << b) != 0).map(|b| b.to_string()).collect();
            return Err(Error::unsupported(format!("unknown incompatible feature bit(s) {} are set", bits.join(", ")))
                .with_field("incompatible_features")
                .with_offset(72));
        }
        if self.version == 2 && self.refcount_order != 4 {
            return Err(Error::invalid("version 2 images have 16-bit refcounts").with_field("refcount_order"));
        }
        Ok(())
    }

    /// Serializes the header cluster (fixed header, extensions, backing name) for a new
    /// image. Fails if it does not fit in one cluster.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let cs = self.cluster_size() as usize;
        let mut b = Vec::with_capacity(cs);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset, patched below
        b.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size, patched below
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b.extend_from_slice(&self.incompatible.to_be_bytes());
            b.extend_from_slice(&self.compatible.to_be_bytes());
            b.extend_from_slice(&self.autoclear.to_be_bytes());
            b.extend_from_slice(&self.refcount_order.to_be_bytes());
            b.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
            b.push(match self.compression {
                Compression::Zlib => 0,
                Compression::Zstd => 1,
            });
            b.resize(V3_HEADER_LEN as usize, 0);
        }
        if let Some(fmt) = &self.backing_format {
            push_extension(&mut b, EXT_BACKING_FORMAT, fmt.as_bytes());
        }
        b.extend_from_slice(&[0u8; 8]); // end of extensions
        if let Some(name) = &self.backing_file {
            if name.is_empty() || name.len() > MAX_BACKING_NAME as usize {
                return Err(Error::argument(format!("backing file name must be 1..={MAX_BACKING_NAME} bytes long")));
            }
            let at = b.len() as u64;
            b[8..16].copy_from_slice(&at.to_be_bytes());
            b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() > cs {
            return Err(Error::argument(format!(
                "the header with its backing file name needs {} bytes, more than the {cs}-byte cluster; \
                 use a larger cluster_size or a shorter name",
                b.len()
            )));
        }
        b.resize(cs, 0);
        Ok(b)
    }
}

fn push_extension(b: &mut Vec<u8>, typ: u32, data: &[u8]) {
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().div_ceil(8) * 8, 0);
}

/// A table at `offset` of `len` bytes must be cluster aligned, not in the header cluster,
/// and inside the file.
fn check_table(offset: u64, len: u64, cs: u64, file_len: u64, field: &'static str, at: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if !offset.is_multiple_of(cs) || offset == 0 {
        return Err(Error::corrupt(format!("{field} {offset:#x} is not a cluster-aligned offset after the header"))
            .with_field(field)
            .with_offset(at));
    }
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::out_of_bounds(format!(
            "table at {offset:#x} of {len} bytes runs past the end of the {file_len}-byte file"
        ))
        .with_field(field)
        .with_offset(offset));
    }
    Ok(())
}

/// Reads a table of big-endian u64 entries.
pub fn read_u64_table(file: &dyn ByteSource, offset: u64, entries: u64, field: &'static str) -> Result<Vec<u64>> {
    let bytes = entries
        .checked_mul(8)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| Error::invalid("table too large").with_field(field).with_offset(offset))?;
    let mut buf = vec![0u8; bytes];
    file.read_exact_at(&mut buf, offset).map_err(|e| e.with_field(field))?;
    Ok(buf.chunks_exact(8).map(|c| be64(c, 0)).collect())
}
