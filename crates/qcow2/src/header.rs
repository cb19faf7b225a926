//! The qcow2 header (cluster 0): parse, validate and serialize, with the limits that keep
//! a hostile file from making us allocate or loop without bound.

use diskcast_block::source::ByteSource;
use diskcast_block::{Error, Result};
use diskcast_layout::{
    Be32, Be64, FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned, fit, read, u64_from_usize, usize_from,
    usize_from_u64,
};

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
pub(crate) const MAX_EXTENSIONS: usize = 1024;
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

/// The fixed header as stored (qcow2.txt "Header"), for both reading and [`Header::serialize`].
/// Version 2 stops after `snapshots_offset` (72 bytes); version 3 adds the feature fields,
/// and we write it up to the compression type and its padding (112 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RawHeader {
    pub magic: [u8; 4],
    pub version: Be32,
    pub backing_file_offset: Be64,
    pub backing_file_size: Be32,
    pub cluster_bits: Be32,
    pub size: Be64,
    pub crypt_method: Be32,
    pub l1_size: Be32,
    pub l1_table_offset: Be64,
    pub refcount_table_offset: Be64,
    pub refcount_table_clusters: Be32,
    pub nb_snapshots: Be32,
    pub snapshots_offset: Be64,
    pub incompatible_features: Be64,
    pub compatible_features: Be64,
    pub autoclear_features: Be64,
    pub refcount_order: Be32,
    pub header_length: Be32,
    pub compression_type: u8,
    pub padding: [u8; 7],
}

/// File offsets of the fixed header's fields that are changed in place (one field, or
/// fields that follow one another, in one write), taken from [`RawHeader`]'s layout so no
/// editor names a field by a number of its own.
pub(crate) mod at {
    use super::RawHeader;
    use std::mem::offset_of;

    /// `backing_file_offset` (u64), then `backing_file_size` (u32).
    pub(crate) const BACKING_FILE_OFFSET: usize = offset_of!(RawHeader, backing_file_offset);
    /// `backing_file_size` (u32).
    pub(crate) const BACKING_FILE_SIZE: usize = offset_of!(RawHeader, backing_file_size);
    /// `size` (u64): the virtual size.
    pub(crate) const SIZE: usize = offset_of!(RawHeader, size);
    /// `l1_table_offset` (u64), then `refcount_table_offset` and `refcount_table_clusters`.
    pub(crate) const L1_TABLE_OFFSET: usize = offset_of!(RawHeader, l1_table_offset);
    /// `refcount_table_offset` (u64), then `refcount_table_clusters` (u32).
    pub(crate) const REFCOUNT_TABLE_OFFSET: usize = offset_of!(RawHeader, refcount_table_offset);
    /// `nb_snapshots` (u32), then `snapshots_offset` (u64).
    pub(crate) const NB_SNAPSHOTS: usize = offset_of!(RawHeader, nb_snapshots);
    /// `incompatible_features` (u64, v3).
    pub(crate) const INCOMPATIBLE_FEATURES: usize = offset_of!(RawHeader, incompatible_features);
    /// `autoclear_features` (u64, v3).
    pub(crate) const AUTOCLEAR_FEATURES: usize = offset_of!(RawHeader, autoclear_features);
}

/// One header extension as stored: its type, where it starts, and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension's type (`EXT_BACKING_FORMAT`, ...).
    pub typ: u32,
    /// File offset of its 8-byte type and length.
    pub at: u64,
    /// Its data, without the padding.
    pub data: Vec<u8>,
}

/// A header extension's type and length; its data follows, padded to 8 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct ExtensionHeader {
    pub typ: Be32,
    pub len: Be32,
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
        // Zero-padded past the end of a short file: the length checks below say what is missing.
        let mut fixed = [0u8; size_of::<RawHeader>()];
        let want = usize_from_u64(file_len.min(u64_from_usize(fixed.len())), "qcow2 header")?;
        file.read_exact_at(&mut fixed[..want], 0)?;
        let raw = read::<RawHeader>(&fixed, 0, "qcow2 header")?;
        if want < 4 || raw.magic != MAGIC {
            return Err(Error::invalid("not a qcow2 image: bad magic").with_field("magic").with_offset(0));
        }
        let version = raw.version.get();
        let min_len = match version {
            2 => V2_HEADER_LEN,
            3 => 104,
            _ => {
                return Err(Error::unsupported(format!("qcow2 version {version} (only 2 and 3 exist)"))
                    .with_field("version")
                    .with_offset(4));
            }
        };
        if u64_from_usize(want) < u64::from(min_len) {
            return Err(Error::invalid(format!(
                "file is {file_len} bytes, too short for a qcow2 v{version} header of {min_len} bytes"
            ))
            .with_field("header")
            .with_offset(0));
        }
        let cluster_bits = raw.cluster_bits.get();
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
            backing_file_offset: raw.backing_file_offset.get(),
            backing_file_size: raw.backing_file_size.get(),
            cluster_bits,
            size: raw.size.get(),
            crypt_method: raw.crypt_method.get(),
            l1_size: raw.l1_size.get(),
            l1_table_offset: raw.l1_table_offset.get(),
            refcount_table_offset: raw.refcount_table_offset.get(),
            refcount_table_clusters: raw.refcount_table_clusters.get(),
            nb_snapshots: raw.nb_snapshots.get(),
            snapshots_offset: raw.snapshots_offset.get(),
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
            h.incompatible = raw.incompatible_features.get();
            h.compatible = raw.compatible_features.get();
            h.autoclear = raw.autoclear_features.get();
            h.refcount_order = raw.refcount_order.get();
            h.header_length = raw.header_length.get();
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
                if h.header_length < 105 || want < 105 {
                    return Err(Error::invalid("compression type bit set but header has no compression type field")
                        .with_field("compression_type")
                        .with_offset(104));
                }
                h.compression = match raw.compression_type {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => {
                        return Err(Error::unsupported(format!("compression type {t} (known: 0 zlib, 1 zstd)"))
                            .with_field("compression_type")
                            .with_offset(104));
                    }
                };
            } else if h.header_length >= 105 && want >= 105 && raw.compression_type != 0 {
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
            let mut name = vec![0u8; usize_from(h.backing_file_size)];
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
        for ext in self.extensions(file, file_len)? {
            if ext.typ == EXT_BACKING_FORMAT {
                if ext.data.len() > MAX_FORMAT_NAME {
                    return Err(Error::invalid("backing format name is too long")
                        .with_field("backing_format")
                        .with_offset(ext.at));
                }
                let name = String::from_utf8(ext.data).map_err(|_| {
                    Error::invalid("backing format name is not UTF-8").with_field("backing_format").with_offset(ext.at)
                })?;
                self.backing_format = Some(name.trim_end_matches('\0').to_string());
            } else if ext.typ == crate::bitmap::EXT_BITMAPS {
                self.bitmaps = Some(crate::bitmap::BitmapsExt::parse(&ext.data).map_err(|e| e.with_offset(ext.at))?);
            }
        }
        Ok(())
    }

    /// The header extensions as stored, in file order (the end marker not included):
    /// between the fixed header and the backing file name, or the end of cluster 0.
    pub fn extensions(&self, file: &dyn ByteSource, file_len: u64) -> Result<Vec<Extension>> {
        let cs = self.cluster_size();
        let start = u64::from(self.header_length);
        // Extensions end at the backing file name when there is one, else at cluster end.
        let mut end = cs.min(file_len);
        if self.backing_file_offset > start && self.backing_file_offset < end {
            end = self.backing_file_offset;
        }
        if end <= start {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; usize_from_u64(end - start, "qcow2 header extensions")?];
        file.read_exact_at(&mut buf, start)?;
        let mut found = Vec::new();
        let mut pos = 0usize;
        for _ in 0..MAX_EXTENSIONS {
            // Fewer than 8 bytes left before the cluster's end: no further extension fits.
            let Ok(ext) = read::<ExtensionHeader>(&buf, pos, "qcow2 header extension") else { return Ok(found) };
            let typ = ext.typ.get();
            let len = usize_from(ext.len.get());
            if typ == 0 {
                return Ok(found);
            }
            let at = start + u64_from_usize(pos);
            let data_at = pos + size_of::<ExtensionHeader>();
            let Some(data) = buf.get(data_at..data_at.saturating_add(len)) else {
                return Err(Error::invalid(format!("header extension {typ:#x} of {len} bytes runs past its cluster"))
                    .with_field("header_extension")
                    .with_offset(at));
            };
            found.push(Extension { typ, at, data: data.to_vec() });
            pos = data_at + len.div_ceil(8) * 8;
        }
        Err(Error::invalid(format!("more than {MAX_EXTENSIONS} header extensions"))
            .with_field("header_extension")
            .with_offset(start))
    }

    /// Refuses an image qemu would not write without repairing it first: marked corrupt, or
    /// not closed cleanly (dirty, stale refcounts).
    pub fn refuse_unclean(&self) -> Result<()> {
        if self.incompatible & (INCOMPAT_CORRUPT | INCOMPAT_DIRTY) != 0 {
            return Err(Error::refused(
                "the image is marked corrupt or was not closed cleanly (dirty); run `qemu-img check -r all` first",
            ));
        }
        Ok(())
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
        let cs = usize_from_u64(self.cluster_size(), "cluster_size")?;
        let mut raw = RawHeader {
            magic: MAGIC,
            version: self.version.into(),
            cluster_bits: self.cluster_bits.into(),
            size: self.size.into(),
            crypt_method: self.crypt_method.into(),
            l1_size: self.l1_size.into(),
            l1_table_offset: self.l1_table_offset.into(),
            refcount_table_offset: self.refcount_table_offset.into(),
            refcount_table_clusters: self.refcount_table_clusters.into(),
            nb_snapshots: self.nb_snapshots.into(),
            snapshots_offset: self.snapshots_offset.into(),
            incompatible_features: self.incompatible.into(),
            compatible_features: self.compatible.into(),
            autoclear_features: self.autoclear.into(),
            refcount_order: self.refcount_order.into(),
            header_length: V3_HEADER_LEN.into(),
            compression_type: match self.compression {
                Compression::Zlib => 0,
                Compression::Zstd => 1,
            },
            ..RawHeader::default()
        };
        let fixed_len = usize_from(if self.version >= 3 { V3_HEADER_LEN } else { V2_HEADER_LEN });
        let mut tail = Vec::new();
        if let Some(fmt) = &self.backing_format {
            push_extension(&mut tail, EXT_BACKING_FORMAT, fmt.as_bytes())?;
        }
        tail.extend_from_slice(&[0u8; 8]); // end of extensions
        if let Some(name) = &self.backing_file {
            if name.is_empty() || name.len() > usize_from(MAX_BACKING_NAME) {
                return Err(Error::argument(format!("backing file name must be 1..={MAX_BACKING_NAME} bytes long")));
            }
            raw.backing_file_offset = u64_from_usize(fixed_len + tail.len()).into();
            raw.backing_file_size = fit::<u32, u64>(u64_from_usize(name.len()), "backing_file_size")?.into();
            tail.extend_from_slice(name.as_bytes());
        }
        let mut b = Vec::with_capacity(cs);
        b.extend_from_slice(raw.as_bytes().get(..fixed_len).unwrap_or_default());
        b.extend_from_slice(&tail);
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

pub(crate) fn push_extension(b: &mut Vec<u8>, typ: u32, data: &[u8]) -> Result<()> {
    let len = fit::<u32, u64>(u64_from_usize(data.len()), "qcow2 header extension length")?;
    b.extend_from_slice(ExtensionHeader { typ: typ.into(), len: len.into() }.as_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().div_ceil(8) * 8, 0);
    Ok(())
}

/// The header cluster's bytes as qemu lays them out: `fixed` (the header's fixed part, as
/// read), the extensions `(type, data)` in order, the end marker, then the backing file
/// name, with the backing name's offset and size in the fixed part set to match (both 0
/// without one). `backing` and `bitmap_edit` rewrite the cluster through this; the caller
/// checks the result fits in a cluster.
pub(crate) fn header_cluster(
    mut fixed: Vec<u8>,
    extensions: &[(u32, &[u8])],
    backing_name: Option<&str>,
) -> Result<Vec<u8>> {
    let mut tail = Vec::new();
    for &(typ, data) in extensions {
        push_extension(&mut tail, typ, data)?;
    }
    tail.extend_from_slice(&[0u8; 8]); // end of extensions
    let (offset, size) = match backing_name {
        Some(n) => (
            u64_from_usize(fixed.len() + tail.len()),
            fit::<u32, u64>(u64_from_usize(n.len()), "qcow2 backing file name length")?,
        ),
        None => (0, 0),
    };
    let field = |b: &mut Vec<u8>, at: usize, bytes: &[u8]| -> Result<()> {
        b.get_mut(at..at + bytes.len())
            .ok_or_else(|| Error::invalid("the qcow2 header's fixed part is too short"))?
            .copy_from_slice(bytes);
        Ok(())
    };
    field(&mut fixed, at::BACKING_FILE_OFFSET, &offset.to_be_bytes())?;
    field(&mut fixed, at::BACKING_FILE_SIZE, &size.to_be_bytes())?;
    fixed.extend_from_slice(&tail);
    if let Some(n) = backing_name {
        fixed.extend_from_slice(n.as_bytes());
    }
    Ok(fixed)
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
    Ok(<[Be64]>::ref_from_bytes(&buf)
        .map_err(|_| Error::invalid("table too large").with_field(field))?
        .iter()
        .map(|e| e.get())
        .collect())
}
