//! Authenticode signatures of EFI binaries and kernels (PE/COFF files), read without
//! trusting file names: Secure Boot firmware starts only a PE image whose certificate
//! table holds a signature from a key in its `db` (shim: Microsoft's UEFI CA), and shim
//! and GRUB start only images signed by a key shim trusts (the distribution's CA).
//!
//! What is read (Microsoft's PE/COFF specification, "The Attribute Certificate Table";
//! Authenticode, RFC 5652 for PKCS #7 SignedData):
//! - the DOS header's `e_lfanew` (0x3C) pointing at `PE\0\0` and the COFF header
//!   (machine, section count, optional header size);
//! - the optional header (PE32 or PE32+) and its data directory 4, the certificate table:
//!   a file offset and size inside the file;
//! - each `WIN_CERTIFICATE` of the table (length, revision 2.0, type
//!   `WIN_CERT_TYPE_PKCS_SIGNED_DATA`, 8-byte aligned), whose content is a DER
//!   `ContentInfo` of type signedData carrying `SpcIndirectDataContent` (Authenticode);
//!   each signer's issuer name is reported.
//!
//! Each signature's SHA-256 image digest must equal the file's Authenticode hash
//! ([`Pe::image_digest`]): a binary changed after signing is refused. The RSA signature and
//! the certificate chain are not checked here: the firmware, shim and GRUB do that at boot
//! against the keys they hold, which diskcast cannot know. A binary without a well-formed
//! Authenticode signature over its own bytes is one they will refuse.

use diskcast_block::{Error, Result};
use diskcast_layout::der::{self, CONTEXT_0, OID, SEQUENCE, SET};
use diskcast_layout::{FromBytes, Immutable, KnownLayout, Le16, Le32, Unaligned, u64_from_usize, usize_from};
use diskcast_tree::FileData;

/// Bytes read from the start of a PE file for its headers: `e_lfanew`, the COFF and
/// optional headers and the section table must lie inside them (EFI binaries and bzImage
/// kernels keep the PE header below 0x200 and at most a few dozen sections).
const HEADER_READ: usize = 8192;
/// Largest certificate table read: real ones hold one or two signatures of 1.5-10 KiB.
pub const CERT_TABLE_MAX: u32 = 1 << 20;
/// Most `WIN_CERTIFICATE` entries looked at in one table.
const CERTS_MAX: usize = 16;
/// Most signers of one signature, and attributes of one name, looked at.
const ITEMS_MAX: usize = 64;
/// The PE/COFF specification's limit on sections.
const SECTIONS_MAX: usize = 96;

/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_X86_64: u16 = 0x8664;
const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// Data directory 4: the certificate table (a file offset, not an RVA).
const CERT_DIRECTORY: u32 = 4;
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// 1.2.840.113549.1.7.2 signedData.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// 1.3.6.1.4.1.311.2.1.4 SPC_INDIRECT_DATA_OBJID (Authenticode's content type).
const OID_SPC_INDIRECT_DATA: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x04];
/// 2.16.840.1.101.3.4.2.1 SHA-256.
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// X.520 attribute types as OpenSSL's one-line names show them (`/C=US/O=.../CN=...`),
/// which `sbverify --list` prints.
const NAME_ATTRIBUTES: [(&[u8], &str); 7] = [
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01], "emailAddress"),
];

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct CoffHeader {
    signature: [u8; 4],
    machine: Le16,
    sections: Le16,
    time: Le32,
    symbols_at: Le32,
    symbols: Le32,
    optional_size: Le16,
    characteristics: Le16,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SectionHeader {
    name: [u8; 8],
    virtual_size: Le32,
    virtual_address: Le32,
    raw_size: Le32,
    raw_at: Le32,
    relocations_at: Le32,
    line_numbers_at: Le32,
    relocations: Le16,
    line_numbers: Le16,
    characteristics: Le32,
}

#[derive(FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WinCertificate {
    length: Le32,
    revision: Le16,
    kind: Le16,
}

/// One section of a PE file: its name and where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, NULs dropped (`.text`, `mods`).
    pub name: String,
    /// File offset of the section's bytes.
    pub file_offset: u64,
    /// Their length in the file.
    pub size: u64,
}

/// The headers of a PE file that matter here.
#[derive(Debug, Clone)]
pub struct Pe {
    /// COFF machine (0x8664 x86-64, 0xaa64 arm64).
    pub machine: u16,
    /// The certificate table's file offset and size (0, 0: none).
    pub cert_table: (u32, u32),
    /// The section table.
    pub sections: Vec<Section>,
    /// `SizeOfHeaders`: the headers' bytes, hashed first.
    size_of_headers: u64,
    /// File offsets of the optional header's `CheckSum` and of the certificate table's
    /// data directory entry: both are left out of the image digest.
    checksum_at: u64,
    cert_entry_at: Option<u64>,
}

fn bad(what: &str) -> Error {
    Error::invalid(format!("not a PE/COFF (EFI) image: {what}"))
}

impl Pe {
    /// Reads the headers of `file`; an error says which one is missing or out of bounds.
    pub fn read(file: &FileData) -> Result<Pe> {
        let len = usize::try_from(file.size.min(u64::try_from(HEADER_READ).unwrap_or(u64::MAX)))
            .map_err(|_| bad("too large"))?;
        let mut head = vec![0u8; len];
        file.read_at(&mut head, 0)?;
        if !head.starts_with(b"MZ") {
            return Err(bad("no MZ header"));
        }
        let lfanew = usize_from(diskcast_layout::read_copy::<Le32>(&head, 0x3c, "e_lfanew")?.get());
        let coff: &CoffHeader =
            diskcast_layout::read(&head, lfanew, "COFF header").map_err(|_| bad("e_lfanew points past the headers"))?;
        if &coff.signature != b"PE\0\0" {
            return Err(bad("no PE signature at e_lfanew"));
        }
        let opt = lfanew + size_of::<CoffHeader>();
        let opt_size = usize::from(coff.optional_size.get());
        let magic = diskcast_layout::read_copy::<Le16>(&head, opt, "optional header magic")?.get();
        let (count_at, dirs_at) = match magic {
            PE32 => (92, 96),
            PE32_PLUS => (108, 112),
            m => return Err(bad(&format!("optional header magic {m:#x}"))),
        };
        let count = diskcast_layout::read_copy::<Le32>(&head, opt + count_at, "NumberOfRvaAndSizes")?.get();
        let size_of_headers = diskcast_layout::read_copy::<Le32>(&head, opt + 60, "SizeOfHeaders")?.get();
        let (cert_table, cert_entry_at) = if count > CERT_DIRECTORY {
            let at = opt + dirs_at + 8 * usize_from(CERT_DIRECTORY);
            if at + 8 > opt + opt_size {
                return Err(bad("data directories past the optional header"));
            }
            let addr = diskcast_layout::read_copy::<Le32>(&head, at, "certificate table offset")?.get();
            let size = diskcast_layout::read_copy::<Le32>(&head, at + 4, "certificate table size")?.get();
            ((addr, size), Some(u64_from_usize(at)))
        } else {
            ((0, 0), None)
        };
        let n = usize::from(coff.sections.get());
        if n > SECTIONS_MAX {
            return Err(bad(&format!("{n} sections (the format allows {SECTIONS_MAX})")));
        }
        let mut sections = Vec::with_capacity(n);
        for i in 0..n {
            let s: &SectionHeader = diskcast_layout::read(&head, opt + opt_size + i * 40, "section header")
                .map_err(|_| bad("the section table lies past the first 8 KiB"))?;
            let name = String::from_utf8_lossy(&s.name).trim_end_matches('\0').to_string();
            sections.push(Section { name, file_offset: u64::from(s.raw_at.get()), size: u64::from(s.raw_size.get()) });
        }
        Ok(Pe {
            machine: coff.machine.get(),
            cert_table,
            sections,
            size_of_headers: u64::from(size_of_headers),
            checksum_at: u64_from_usize(opt + 64),
            cert_entry_at,
        })
    }

    /// The Authenticode image digest (SHA-256) of `file`, as the PE/COFF specification's
    /// "Calculating the PE Image Hash" says: the headers but the checksum and the
    /// certificate table's directory entry, each section's raw data in file order, then
    /// whatever lies between the hashed length and the certificate table. Hashes each
    /// byte at most once per section, and refuses sections that claim more than the file.
    pub fn image_digest(&self, file: &FileData) -> Result<[u8; 32]> {
        use sha2::Digest;
        let (table_at, table_len) = (u64::from(self.cert_table.0), u64::from(self.cert_table.1));
        let data_end = if table_len == 0 { file.size } else { table_at };
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut hash = |from: u64, to: u64| -> Result<()> {
            if to > file.size || from > to {
                return Err(Error::invalid(format!(
                    "PE image: bytes {from}..{to} lie outside the {}-byte file",
                    file.size
                )));
            }
            let mut at = from;
            while at < to {
                let n = diskcast_layout::within(to - at, buf.len());
                file.read_at(&mut buf[..n], at)?;
                h.update(&buf[..n]);
                at += u64_from_usize(n);
            }
            Ok(())
        };
        let entry = self.cert_entry_at.ok_or_else(|| bad("no certificate table entry"))?;
        if !(self.checksum_at + 4 <= entry && entry + 8 <= self.size_of_headers) {
            return Err(bad("SizeOfHeaders does not cover the optional header"));
        }
        hash(0, self.checksum_at)?;
        hash(self.checksum_at + 4, entry)?;
        hash(entry + 8, self.size_of_headers)?;
        let mut sections: Vec<&Section> = self.sections.iter().filter(|s| s.size > 0).collect();
        sections.sort_by_key(|s| s.file_offset);
        let mut hashed = self.size_of_headers;
        for s in sections {
            hashed = hashed.saturating_add(s.size);
            if hashed > file.size {
                return Err(bad(&format!("section {} and those before it claim more bytes than the file", s.name)));
            }
            hash(s.file_offset, s.file_offset + s.size)?;
        }
        if hashed < data_end {
            hash(hashed, data_end)?;
        }
        Ok(h.finalize().into())
    }
}

/// One Authenticode signature of a PE file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's issuer, as OpenSSL prints names (`/CN=Debian Secure Boot CA`).
    pub issuer: String,
}

/// The Authenticode signatures of `file` (a PE image); empty when it has no certificate
/// table. A malformed table or signature is an error naming what is wrong.
pub fn signatures(file: &FileData) -> Result<Vec<Signature>> {
    let pe = Pe::read(file)?;
    let (addr, size) = pe.cert_table;
    if size == 0 {
        return Ok(Vec::new());
    }
    let end = u64::from(addr) + u64::from(size);
    if addr == 0 || size > CERT_TABLE_MAX || end > file.size {
        return Err(Error::invalid(format!(
            "the certificate table ({size} bytes at {addr}) lies outside the {}-byte file or exceeds {} KiB",
            file.size,
            CERT_TABLE_MAX >> 10
        )));
    }
    let mut table = vec![0u8; usize_from(size)];
    file.read_at(&mut table, u64::from(addr))?;
    let mut out = Vec::new();
    let mut image: Option<[u8; 32]> = None;
    let mut at = 0usize;
    while at + size_of::<WinCertificate>() <= table.len() {
        if out.len() >= CERTS_MAX {
            return Err(Error::invalid(format!("more than {CERTS_MAX} signatures in the certificate table")));
        }
        let w: &WinCertificate = diskcast_layout::read(&table, at, "WIN_CERTIFICATE")?;
        let len = usize_from(w.length.get());
        let body = at
            .checked_add(len)
            .filter(|&e| len >= size_of::<WinCertificate>() && e <= table.len())
            .map(|e| &table[at + size_of::<WinCertificate>()..e])
            .ok_or_else(|| Error::invalid(format!("WIN_CERTIFICATE at {at} claims {len} bytes")))?;
        if w.revision.get() != WIN_CERT_REVISION_2_0 || w.kind.get() != WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            return Err(Error::invalid(format!(
                "WIN_CERTIFICATE at {at}: revision {:#06x} type {:#06x}, not Authenticode's 0x0200 PKCS_SIGNED_DATA",
                w.revision.get(),
                w.kind.get()
            )));
        }
        let (issuers, digest) = signed_data_issuers(body)
            .map_err(|e| Error::invalid(format!("the signature at {at} of the certificate table: {e}")))?;
        let image = match image {
            Some(d) => d,
            None => *image.insert(pe.image_digest(file)?),
        };
        if digest != image.as_slice() {
            return Err(Error::invalid(format!(
                "the signature at {at} of the certificate table is for another image: its SHA-256 digest {} is not \
                 the file's {} (the file was changed after it was signed)",
                hex(digest),
                hex(&image)
            )));
        }
        out.extend(issuers.into_iter().map(|issuer| Signature { issuer }));
        at = at.saturating_add(len.next_multiple_of(8));
    }
    if out.is_empty() {
        return Err(Error::invalid("the certificate table holds no signature"));
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signers' issuers of a PKCS #7 `ContentInfo` holding Authenticode `SignedData`, and
/// the SHA-256 image digest its `SpcIndirectDataContent` signs.
fn signed_data_issuers(body: &[u8]) -> std::result::Result<(Vec<String>, &[u8]), &'static str> {
    let (info, _) = der::expect(body, SEQUENCE, "not a ContentInfo")?;
    let (oid, rest) = der::expect(info, OID, "no content type")?;
    if oid != OID_SIGNED_DATA {
        return Err("the content is not PKCS #7 signedData");
    }
    let (explicit, _) = der::expect(rest, CONTEXT_0, "no signedData content")?;
    let (signed, _) = der::expect(explicit, SEQUENCE, "signedData is not a SEQUENCE")?;
    let (_version, rest) = der::expect(signed, der::INTEGER, "no signedData version")?;
    let (_digests, rest) = der::expect(rest, SET, "no digest algorithms")?;
    let (encap, after_content) = der::expect(rest, SEQUENCE, "no encapsulated content")?;
    let (content_type, content) = der::expect(encap, OID, "no encapsulated content type")?;
    if content_type != OID_SPC_INDIRECT_DATA {
        return Err("the signed content is not Authenticode's SpcIndirectDataContent");
    }
    // [0] EXPLICIT SpcIndirectDataContent { data, messageDigest DigestInfo { algorithm, digest } }
    let (explicit, _) = der::expect(content, CONTEXT_0, "no SpcIndirectDataContent")?;
    let (indirect, _) = der::expect(explicit, SEQUENCE, "SpcIndirectDataContent is not a SEQUENCE")?;
    let (_data, after_data) = der::expect(indirect, SEQUENCE, "no SpcAttributeTypeAndOptionalValue")?;
    let (digest_info, _) = der::expect(after_data, SEQUENCE, "no DigestInfo")?;
    let (algorithm, after_algorithm) = der::expect(digest_info, SEQUENCE, "no digest algorithm")?;
    let (algorithm, _) = der::expect(algorithm, OID, "no digest algorithm OID")?;
    if algorithm != OID_SHA256 {
        return Err("the image digest is not SHA-256 (the only one checked)");
    }
    let (digest, _) = der::expect(after_algorithm, der::OCTET_STRING, "no image digest")?;
    if digest.len() != 32 {
        return Err("the SHA-256 image digest is not 32 bytes");
    }
    // certificates [0] and crls [1] may come before signerInfos, the SET that ends it.
    let mut rest = after_content;
    let signers = loop {
        let (tag, body, next) = der::element(rest)?;
        if tag == SET {
            break body;
        }
        rest = next;
    };
    let mut issuers = Vec::new();
    let mut left = signers;
    while !left.is_empty() {
        if issuers.len() >= ITEMS_MAX {
            return Err("too many signers");
        }
        let (signer, next) = der::expect(left, SEQUENCE, "a signerInfo is not a SEQUENCE")?;
        left = next;
        let (_version, rest) = der::expect(signer, der::INTEGER, "no signerInfo version")?;
        let (sid, _) = der::expect(rest, SEQUENCE, "the signer is not named by issuer and serial number")?;
        let (name, _) = der::expect(sid, SEQUENCE, "no issuer name")?;
        issuers.push(one_line_name(name)?);
    }
    if issuers.is_empty() {
        return Err("no signer");
    }
    Ok((issuers, digest))
}

/// An X.501 Name (SEQUENCE OF SET OF AttributeTypeAndValue) as `/C=US/CN=...`;
/// attribute types other than [`NAME_ATTRIBUTES`] are left out.
fn one_line_name(mut rdns: &[u8]) -> std::result::Result<String, &'static str> {
    let mut out = String::new();
    let mut n = 0;
    while !rdns.is_empty() {
        let (set, next) = der::expect(rdns, SET, "a name part is not a SET")?;
        rdns = next;
        let mut atvs = set;
        while !atvs.is_empty() {
            n += 1;
            if n > ITEMS_MAX {
                return Err("too many name attributes");
            }
            let (atv, next) = der::expect(atvs, SEQUENCE, "a name attribute is not a SEQUENCE")?;
            atvs = next;
            let (oid, value) = der::expect(atv, OID, "a name attribute without a type")?;
            let (tag, text, _) = der::element(value)?;
            if let Some((_, key)) = NAME_ATTRIBUTES.iter().find(|(o, _)| *o == oid) {
                out.push('/');
                out.push_str(key);
                out.push('=');
                out.push_str(&string_value(tag, text));
            }
        }
    }
    Ok(out)
}

/// A directory string's text: BMPString is UTF-16BE, the others ASCII or UTF-8.
fn string_value(tag: u8, text: &[u8]) -> String {
    const BMP_STRING: u8 = 0x1e;
    if tag == BMP_STRING {
        let units: Vec<u16> = text.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    String::from_utf8_lossy(text).into_owned()
}

/// The issuers of `file`'s signatures, or an error saying that `what` (at `path`) is not
/// signed and how to get one that is (`fix`): Secure Boot would refuse to start it.
pub fn require_signed(file: &FileData, what: &str, path: &str, fix: &str) -> Result<Vec<Signature>> {
    match signatures(file) {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => Err(Error::refused(format!(
            "{what} {path} carries no Authenticode signature (its PE certificate table is empty): Secure Boot \
             would refuse to start it; {fix}"
        ))),
        Err(e) => Err(Error::refused(format!(
            "{what} {path} has no valid Authenticode signature ({}): Secure Boot would refuse to start it; {fix}",
            e.message()
        ))),
    }
}

/// The issuers of `sigs`, joined for messages.
pub fn issuers(sigs: &[Signature]) -> String {
    sigs.iter().map(|s| s.issuer.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ file with `table` as its certificate table at the end.
    pub(crate) fn pe(table: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        f[0x84..0x86].copy_from_slice(&MACHINE_X86_64.to_le_bytes());
        f[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
        let opt = 0x98;
        f[opt..opt + 2].copy_from_slice(&PE32_PLUS.to_le_bytes());
        f[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        f[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        if !table.is_empty() {
            let at = opt + 112 + 32;
            f[at..at + 4].copy_from_slice(&0x200u32.to_le_bytes());
            f[at + 4..at + 8].copy_from_slice(&u32::try_from(table.len()).unwrap().to_le_bytes());
            f.extend_from_slice(table);
        }
        f
    }

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if body.len() < 0x80 {
            v.push(u8::try_from(body.len()).unwrap());
        } else {
            v.push(0x82);
            v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    /// The image digest of every file [`pe`] makes (the table and its entry are not hashed).
    fn digest() -> Vec<u8> {
        let f = file(pe(&[]));
        Pe::read(&f).unwrap().image_digest(&f).unwrap().to_vec()
    }

    fn signed_data(content_type: &[u8], cn: &str) -> Vec<u8> {
        signed_digest(content_type, cn, &digest())
    }

    fn signed_digest(content_type: &[u8], cn: &str, digest: &[u8]) -> Vec<u8> {
        let name =
            tlv(SEQUENCE, &tlv(SET, &tlv(SEQUENCE, &[tlv(OID, &[0x55, 4, 3]), tlv(0x0c, cn.as_bytes())].concat())));
        let signer = tlv(SEQUENCE, &[tlv(2, &[1]), tlv(SEQUENCE, &[name, tlv(2, &[9])].concat())].concat());
        let sd = tlv(
            SEQUENCE,
            &[
                tlv(2, &[1]),
                tlv(SET, &[]),
                tlv(
                    SEQUENCE,
                    &[
                        tlv(OID, content_type),
                        tlv(
                            CONTEXT_0,
                            &tlv(
                                SEQUENCE,
                                &[
                                    tlv(SEQUENCE, &tlv(OID, &[0x2b, 6, 1])),
                                    tlv(
                                        SEQUENCE,
                                        &[tlv(SEQUENCE, &tlv(OID, OID_SHA256)), tlv(der::OCTET_STRING, digest)]
                                            .concat(),
                                    ),
                                ]
                                .concat(),
                            ),
                        ),
                    ]
                    .concat(),
                ),
                tlv(CONTEXT_0, b"certificates"),
                tlv(SET, &signer),
            ]
            .concat(),
        );
        tlv(SEQUENCE, &[tlv(OID, OID_SIGNED_DATA), tlv(CONTEXT_0, &sd)].concat())
    }

    fn win_cert(body: &[u8], revision: u16, kind: u16) -> Vec<u8> {
        let mut v = u32::try_from(body.len() + 8).unwrap().to_le_bytes().to_vec();
        v.extend_from_slice(&revision.to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(body);
        v.resize(v.len().next_multiple_of(8), 0);
        v
    }

    fn file(b: Vec<u8>) -> FileData {
        FileData::inline(b)
    }

    #[test]
    fn signed_unsigned_and_malformed() {
        let body = signed_data(OID_SPC_INDIRECT_DATA, "Debian Secure Boot CA");
        let ok = file(pe(&win_cert(&body, 0x200, 2)));
        let sigs = signatures(&ok).unwrap();
        assert_eq!(sigs, vec![Signature { issuer: "/CN=Debian Secure Boot CA".into() }]);
        assert_eq!(Pe::read(&ok).unwrap().machine, MACHINE_X86_64);

        let unsigned = file(pe(&[]));
        assert!(signatures(&unsigned).unwrap().is_empty());
        let e = require_signed(&unsigned, "the kernel", "/k", "use a signed one").unwrap_err();
        assert!(e.to_string().contains("the kernel /k carries no Authenticode signature"), "{e}");
        assert!(e.to_string().contains("use a signed one"), "{e}");

        // Not Authenticode content, wrong WIN_CERTIFICATE type, a length past the table.
        let other = signed_data(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01], "x");
        let e = signatures(&file(pe(&win_cert(&other, 0x200, 2)))).unwrap_err();
        assert!(e.to_string().contains("SpcIndirectDataContent"), "{e}");
        let e = signatures(&file(pe(&win_cert(&body, 0x200, 1)))).unwrap_err();
        assert!(e.to_string().contains("PKCS_SIGNED_DATA"), "{e}");
        let mut long = win_cert(&body, 0x200, 2);
        long[..4].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(signatures(&file(pe(&long))).unwrap_err().to_string().contains("claims 100000 bytes"));
        let mut short = win_cert(&body, 0x200, 2);
        short[..4].copy_from_slice(&3u32.to_le_bytes());
        let e = signatures(&file(pe(&short))).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("claims 3 bytes"), "{e}");
        // A byte of the image changed after signing; a signature over another digest.
        let mut changed = pe(&win_cert(&body, 0x200, 2));
        changed[0x10] ^= 1;
        let e = signatures(&file(changed)).unwrap_err();
        assert!(e.to_string().contains("changed after it was signed"), "{e}");
        let other = signed_digest(OID_SPC_INDIRECT_DATA, "x", &[7u8; 32]);
        let e = signatures(&file(pe(&win_cert(&other, 0x200, 2)))).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("is for another image"), "{e}");
        // The checksum field is not hashed: a file whose checksum changes still verifies.
        let mut resummed = pe(&win_cert(&body, 0x200, 2));
        resummed[0x98 + 64] ^= 0xff;
        assert_eq!(signatures(&file(resummed)).unwrap().len(), 1);
    }

    #[test]
    fn table_bounds_and_headers_are_checked() {
        let body = signed_data(OID_SPC_INDIRECT_DATA, "x");
        let mut f = pe(&win_cert(&body, 0x200, 2));
        let at = 0x98 + 112 + 32;
        f[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(signatures(&file(f.clone())).unwrap_err().to_string().contains("outside"));
        f[0x3c..0x40].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(signatures(&file(f.clone())).unwrap_err().to_string().contains("e_lfanew"));
        assert!(signatures(&file(b"\x7fELF....".repeat(20))).unwrap_err().to_string().contains("no MZ"));
        // Every truncation of a signed file is an error or "unsigned", never a panic.
        let good = pe(&win_cert(&body, 0x200, 2));
        for n in 0..good.len() {
            let _ = signatures(&file(good[..n].to_vec()));
        }
    }
}
