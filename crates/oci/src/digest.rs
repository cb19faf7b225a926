//! Content digests: parsed against the OCI grammar before they name a file or a URL, and
//! checked against the bytes they describe.
//!
//! Grammar (OCI image spec, descriptor.md): `algorithm ":" encoded` with
//! `algorithm = component (separator component)*`, `component = [a-z0-9]+`,
//! `separator = [+._-]`, `encoded = [a-zA-Z0-9=_-]+`. The registered algorithms fix the
//! encoding: `sha256` is 64 and `sha512` 128 lowercase hex digits. Only those two are
//! accepted, so an accepted digest is always a plain file name (no `/`, no `..`).

use diskcast_block::{Error, Result};
use sha2::Digest as _;
use std::fmt;
use std::io::Read;

/// A validated content digest (`sha256:` + 64 hex digits, or `sha512:` + 128).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
}

/// The hash functions a digest can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-256, the one every image uses.
    Sha256,
    /// SHA-512, allowed by the spec.
    Sha512,
}

impl Digest {
    /// Parses and validates `text`. Anything outside the grammar, an algorithm other than
    /// sha256/sha512, or an encoding of the wrong length or case is refused.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("digest {:?} {why}", truncate(text))).with_field("digest");
        let (alg, enc) = text.split_once(':').ok_or_else(|| bad("has no ':'"))?;
        if alg.is_empty()
            || !alg
                .split(['+', '.', '_', '-'])
                .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        {
            return Err(bad("has a malformed algorithm"));
        }
        let want = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => {
                return Err(Error::unsupported(format!("digest algorithm {alg:?} is not supported (sha256, sha512)"))
                    .with_field("digest"));
            }
        };
        if enc.len() != want || !enc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad(&format!("is not {want} lowercase hex digits")));
        }
        Ok(Digest { text: text.to_string() })
    }

    /// The digest of `bytes` with `alg`.
    pub fn of(alg: Algorithm, bytes: &[u8]) -> Self {
        let mut h = Hasher::new(alg);
        h.update(bytes);
        h.finish()
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self::of(Algorithm::Sha256, bytes)
    }

    /// Which hash function.
    pub fn algorithm(&self) -> Algorithm {
        if self.text.starts_with("sha512:") { Algorithm::Sha512 } else { Algorithm::Sha256 }
    }

    /// `sha256` or `sha512`: the directory name under `blobs/`.
    pub fn algorithm_name(&self) -> &str {
        self.text.split_once(':').map_or("", |(a, _)| a)
    }

    /// The hex part: the file name under `blobs/ALG/`.
    pub fn hex(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, h)| h)
    }

    /// The whole digest as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `sha256:4f5c8d2e1a3b` for messages.
    pub fn short(&self) -> String {
        format!("{}:{}", self.algorithm_name(), &self.hex()[..12])
    }

    /// Checks that `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8], what: &str) -> Result<()> {
        let got = Self::of(self.algorithm(), bytes);
        if &got != self {
            return Err(mismatch(what, self, &got));
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The error for content whose digest is not the expected one.
pub fn mismatch(what: &str, want: &Digest, got: &Digest) -> Error {
    Error::corrupt(format!("{what}: digest mismatch: expected {want}, content hashes to {got}")).with_field("digest")
}

/// An incremental hash for either algorithm.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh state.
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Digest {
        let (alg, bytes) = match self {
            Hasher::Sha256(h) => ("sha256", h.finalize().to_vec()),
            Hasher::Sha512(h) => ("sha512", h.finalize().to_vec()),
        };
        Digest { text: format!("{alg}:{}", hex(&bytes)) }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A reader that hashes what passes through and refuses to yield more than the expected
/// size. At the end of the stream it checks both the size and the digest and turns a
/// mismatch into an I/O error carrying a [`Error`] (so a decompressor stacked on top
/// fails instead of yielding content from a blob that is not the one described).
#[derive(Debug)]
pub struct Verify<R> {
    inner: R,
    hasher: Option<Hasher>,
    want: Digest,
    size: u64,
    seen: u64,
    what: String,
    /// A failed check, repeated on every later read (a decompressor above may have
    /// swallowed the first report).
    failure: Option<(diskcast_block::ErrorKind, String)>,
}

impl<R: Read> Verify<R> {
    /// Checks `inner` against `want` and `size` as it is read; `what` names it in errors.
    pub fn new(inner: R, want: &Digest, size: u64, what: impl Into<String>) -> Self {
        Verify {
            inner,
            hasher: Some(Hasher::new(want.algorithm())),
            want: want.clone(),
            size,
            seen: 0,
            what: what.into(),
            failure: None,
        }
    }

    /// Reads to the end (so the check runs) and returns how many bytes there were.
    pub fn finish(mut self) -> Result<u64> {
        std::io::copy(&mut self, &mut std::io::sink()).map_err(|e| from_io(e, &self.what))?;
        Ok(self.seen)
    }

    fn fail(&mut self, e: Error) -> std::io::Error {
        self.hasher = None;
        self.failure = Some((e.kind(), e.message().to_string()));
        std::io::Error::other(e)
    }

    fn check_end(&mut self) -> std::io::Result<()> {
        if let Some((kind, msg)) = &self.failure {
            return Err(std::io::Error::other(Error::new(*kind, msg.clone())));
        }
        let Some(h) = self.hasher.take() else { return Ok(()) };
        if self.seen != self.size {
            let e = Error::corrupt(format!(
                "{}: size mismatch: descriptor says {} bytes, blob has {}",
                self.what, self.size, self.seen
            ))
            .with_field("size");
            return Err(self.fail(e));
        }
        let got = h.finish();
        if got != self.want {
            let e = mismatch(&self.what, &self.want, &got);
            return Err(self.fail(e));
        }
        Ok(())
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some((kind, msg)) = &self.failure {
            return Err(std::io::Error::other(Error::new(*kind, msg.clone())));
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check_end()?;
            return Ok(0);
        }
        self.seen = self.seen.saturating_add(n as u64);
        if self.seen > self.size {
            let e = Error::corrupt(format!(
                "{}: size mismatch: blob is larger than the {} bytes its descriptor says",
                self.what, self.size
            ))
            .with_field("size");
            return Err(self.fail(e));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Turns an I/O error back into our error: the one a [`Verify`] (or anything else of ours)
/// wrapped, or a plain I/O error about `what` (one function for the tar reader and us).
pub use diskcast_tar::from_io;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let ok = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d = Digest::parse(ok).unwrap();
        assert_eq!(d, Digest::sha256(b""));
        assert_eq!(d.hex().len(), 64);
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256",
            ":abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            "sha256:/3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert_eq!(e.field(), Some("digest"), "{bad}: {e}");
            assert!(e.to_string().starts_with("digest "), "{bad}: {e}");
        }
        assert_eq!(
            Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e").unwrap_err().kind(),
            diskcast_block::ErrorKind::Unsupported
        );
    }

    #[test]
    fn verify_reader_checks_size_and_hash() {
        let d = Digest::sha256(b"hello");
        assert_eq!(Verify::new(&b"hello"[..], &d, 5, "x").finish().unwrap(), 5);
        let e = Verify::new(&b"hellO"[..], &d, 5, "x").finish().unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        let e = Verify::new(&b"hello!"[..], &d, 5, "x").finish().unwrap_err();
        assert!(e.to_string().contains("larger"), "{e}");
        let e = Verify::new(&b"hell"[..], &d, 5, "x").finish().unwrap_err();
        assert!(e.to_string().contains("size mismatch"), "{e}");
    }
}
