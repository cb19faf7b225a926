//! The OVF manifest (`.mf`, DSP0243 5.1): one line per file of the package,
//! `ALG(name)= hex`, as `sha256sum --tag` prints it (so `sha256sum -c` checks it).

use diskcast_block::{Error, Result};
use sha1::Digest as _;

/// Largest manifest read: a line per file, and a package has at most
/// [`crate::MEMBERS_MAX`] files.
pub const MANIFEST_MAX: u64 = 1 << 20;

/// A digest algorithm a manifest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (OVF 1.0's, VirtualBox before 7, older ovftool).
    Sha1,
    /// SHA-256 (OVF 2.0's and what diskcast writes).
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512].into_iter().find(|a| a.name() == s)
    }

    /// A running digest.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
}

/// A digest being computed.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest as lowercase hex.
    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One line of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The file's member name.
    pub name: String,
    /// Its digest, lowercase hex.
    pub digest: String,
}

/// The text of a manifest with `entries` (`SHA256(name)= hex`, one per line).
pub fn write(entries: &[Entry]) -> String {
    entries.iter().map(|e| format!("{}({})= {}\n", e.algorithm.name(), e.name, e.digest)).collect()
}

/// The entries of manifest `text`; `name` is what errors call it. Blank lines are
/// skipped; anything else that is not `ALG(name)= hex` is an error naming the line.
pub fn parse(text: &str, name: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = || Error::corrupt(format!("manifest {name} line {}: not ALG(file)= digest: {line:?}", i + 1));
        // `SHA256(file)= hex` as DSP0243 spells it; `SHA256 (file) = hex` as
        // `sha256sum --tag` and VirtualBox write it.
        let (alg, rest) = line.split_once('(').ok_or_else(bad)?;
        let (file, digest) = rest.rsplit_once(')').ok_or_else(bad)?;
        let digest = digest.trim_start().strip_prefix('=').ok_or_else(bad)?;
        let algorithm = Algorithm::parse(alg.trim()).ok_or_else(|| {
            Error::unsupported(format!(
                "manifest {name} line {}: digest {alg:?} (SHA1, SHA256, SHA512 are read)",
                i + 1
            ))
        })?;
        let digest = digest.trim().to_ascii_lowercase();
        let want = match algorithm {
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        };
        if digest.len() != want || !digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        out.push(Entry { algorithm, name: file.to_string(), digest });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_digests() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"abc");
        let d = h.hex();
        assert_eq!(d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let e = vec![Entry { algorithm: Algorithm::Sha256, name: "a.ovf".into(), digest: d.clone() }];
        let text = write(&e);
        assert_eq!(text, format!("SHA256(a.ovf)= {d}\n"));
        assert_eq!(parse(&text, "m").unwrap(), e);
        assert_eq!(parse(&format!("SHA256 (a.ovf) = {d}\r\n"), "m").unwrap(), e);
        let mut h = Algorithm::Sha1.hasher();
        h.update(b"abc");
        assert_eq!(h.hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn bad_lines_are_named() {
        for bad in ["SHA256(a.ovf) = 00", "SHA256(a.ovf) x= 00", "garbage", "SHA256(a)= xyz", "MD5(a)= 00"] {
            let e = parse(bad, "x.mf").unwrap_err();
            assert!(e.to_string().contains("x.mf"), "{e}");
        }
    }
}
