//! The initramfs's archive format: "newc" cpio (`070701`), as the kernel unpacks it.
//!
//! [`list`] reads an initramfs as the kernel does: cpio archives one after another,
//! zero padding between them, and a compressed one (gzip, zstd, xz) last, so an early
//! microcode cpio in front of the main archive is read too. [`Writer`] writes one
//! uncompressed archive.

use diskcast_block::{Error, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::io::{BufRead, BufReader, Read, Write};

/// The newc magic; `070702` is the same with checksums the kernel ignores.
const MAGIC: &[u8; 6] = b"070701";
const MAGIC_CRC: &[u8; 6] = b"070702";
/// A newc header: the magic and 13 eight-digit hexadecimal fields.
const HEADER: usize = 110;
/// The longest entry name read: the kernel's PATH_MAX.
const NAME_MAX: u64 = 4096;
/// At most this many entries in an initramfs: real ones hold a few thousand; the cap
/// keeps a hostile archive of empty entries from growing the list without end.
pub const ENTRIES_MAX: usize = 1 << 20;
/// At most this many bytes are read from an initramfs once decompressed: Debian's
/// largest are ~100 MiB; the cap bounds the time a compression bomb takes.
pub const UNPACKED_MAX: u64 = 4 << 30;
const TRAILER: &str = "TRAILER!!!";

/// One entry of an initramfs: its path (without a leading `/` or `./`) and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path as stored, leading `./` and `/` removed.
    pub path: String,
    /// `st_mode` (type and permissions).
    pub mode: u32,
    /// Content length.
    pub size: u64,
    /// The content, for the entries the caller asked to keep.
    pub data: Option<Vec<u8>>,
}

/// The largest entry content [`list`] keeps (index files such as `modules.builtin`).
pub const KEEP_LIMIT: u64 = 16 << 20;

/// Every entry of the initramfs `r` reads, `what` naming it in errors; the content of
/// regular files whose path `keep` accepts is kept (up to [`KEEP_LIMIT`] bytes each).
pub fn list(r: impl Read, what: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
    let mut r = BufReader::new(r);
    let mut out = Vec::new();
    loop {
        skip_zeros(&mut r, what)?;
        let head = r.fill_buf().map_err(|e| Error::io(format!("cannot read the initramfs {what}"), e))?;
        if head.is_empty() {
            return Ok(out);
        }
        if head.starts_with(MAGIC) || head.starts_with(MAGIC_CRC) {
            read_archive(&mut r, what, keep, &mut out)?;
            continue;
        }
        let mut inner: Box<dyn Read + '_> = match head {
            [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(&mut r)),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut r)
                    .map_err(|e| Error::io(format!("the initramfs {what}: zstd"), e))?,
            ),
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Box::new(liblzma::read::XzDecoder::new_multi_decoder(&mut r)),
            _ => {
                let name = match head {
                    [0x02, 0x21, 0x4c, 0x18, ..] => "lz4 (legacy frames)",
                    [b'B', b'Z', b'h', ..] => "bzip2",
                    [0x5d, 0, 0, ..] => "lzma",
                    [0x89, b'L', b'Z', b'O', ..] => "lzo",
                    _ => "not a cpio archive nor a known compression",
                };
                return Err(Error::unsupported(format!(
                    "the initramfs {what}: {name}; diskcast reads newc cpio archives plain or compressed with gzip, \
                     zstd or xz"
                )));
            }
        };
        let mut limited = BufReader::new((&mut inner).take(UNPACKED_MAX));
        loop {
            skip_zeros(&mut limited, what)?;
            let head =
                limited.fill_buf().map_err(|e| Error::io(format!("cannot decompress the initramfs {what}"), e))?;
            if head.is_empty() {
                break;
            }
            if !(head.starts_with(MAGIC) || head.starts_with(MAGIC_CRC)) {
                return Err(Error::invalid(format!("the initramfs {what}: the decompressed data is not a newc cpio")));
            }
            read_archive(&mut limited, what, keep, &mut out)?;
        }
        if limited.into_inner().limit() == 0 {
            return Err(Error::refused(format!(
                "the initramfs {what} unpacks to more than {} GiB (UNPACKED_MAX)",
                UNPACKED_MAX >> 30
            )));
        }
        return Ok(out);
    }
}

/// Skips the zero bytes the kernel allows between archives.
fn skip_zeros(r: &mut impl BufRead, what: &str) -> Result<()> {
    loop {
        let buf = r.fill_buf().map_err(|e| Error::io(format!("cannot read the initramfs {what}"), e))?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.iter().take_while(|&&b| b == 0).count();
        let done = n < buf.len();
        r.consume(n);
        if done {
            return Ok(());
        }
    }
}

/// Reads one archive up to and including its trailer.
fn read_archive(r: &mut impl Read, what: &str, keep: &dyn Fn(&str) -> bool, out: &mut Vec<Entry>) -> Result<()> {
    let bad = |m: String| Error::invalid(format!("the initramfs {what}: {m}"));
    let io = |e| Error::io(format!("cannot read the initramfs {what}"), e);
    loop {
        let mut h = [0u8; HEADER];
        r.read_exact(&mut h).map_err(io)?;
        if !(h.starts_with(MAGIC) || h.starts_with(MAGIC_CRC)) {
            return Err(bad("an entry does not start with the newc magic 070701".into()));
        }
        let field = |i: usize| -> Result<u64> {
            let at = 6 + 8 * i;
            let text = std::str::from_utf8(&h[at..at + 8]).ok();
            text.and_then(|t| u64::from_str_radix(t, 16).ok())
                .ok_or_else(|| bad(format!("header field {i} is not hexadecimal")))
        };
        let mode = u32::try_from(field(1)?).map_err(|_| bad("mode out of range".into()))?;
        let size = field(6)?;
        let namesize = field(11)?;
        if namesize == 0 || namesize > NAME_MAX {
            return Err(bad(format!("a name of {namesize} bytes (at most {NAME_MAX}, NAME_MAX)")));
        }
        let mut name = vec![0u8; usize_from_u64(namesize, "cpio name size")?];
        r.read_exact(&mut name).map_err(io)?;
        name.pop();
        let name = String::from_utf8_lossy(&name).into_owned();
        skip(r, pad4(u64_from_usize(HEADER) + namesize), what)?;
        if name == TRAILER {
            return Ok(());
        }
        if out.len() >= ENTRIES_MAX {
            return Err(Error::refused(format!(
                "the initramfs {what} has more than {ENTRIES_MAX} entries (ENTRIES_MAX)"
            )));
        }
        let path = name.trim_start_matches("./").trim_start_matches('/').to_string();
        let data = if mode & 0o170000 == S_IFREG && size <= KEEP_LIMIT && keep(&path) {
            let mut d = vec![0u8; usize_from_u64(size, "cpio file size")?];
            r.read_exact(&mut d).map_err(io)?;
            skip(r, pad4(size), what)?;
            Some(d)
        } else {
            skip(r, size + pad4(size), what)?;
            None
        };
        out.push(Entry { path, mode, size, data });
    }
}

fn pad4(n: u64) -> u64 {
    n.next_multiple_of(4) - n
}

fn skip(r: &mut impl Read, n: u64, what: &str) -> Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())
        .map_err(|e| Error::io(format!("cannot read the initramfs {what}"), e))?;
    if got != n {
        return Err(Error::invalid(format!("the initramfs {what} ends inside an entry")));
    }
    Ok(())
}

/// Writes a newc archive: entries in the order given, then the trailer.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    mtime: u32,
    written: u64,
}

/// `st_mode` type bits.
pub const S_IFDIR: u32 = 0o040000;
/// A regular file.
pub const S_IFREG: u32 = 0o100000;
/// A symbolic link.
pub const S_IFLNK: u32 = 0o120000;

impl<W: Write> Writer<W> {
    /// An archive whose entries all carry modification time `mtime`.
    pub fn new(out: W, mtime: u32) -> Self {
        Writer { out, ino: 0, mtime, written: 0 }
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.entry(path, S_IFDIR | perm, 2, &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(path, S_IFREG | perm, 1, data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, data: &[u8]) -> Result<()> {
        self.ino += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| Error::unsupported(format!("initramfs entry {path}: newc stores at most 4 GiB")))?;
        let namesize = u32::try_from(path.len() + 1)
            .ok()
            .filter(|&n| u64::from(n) <= NAME_MAX)
            .ok_or_else(|| Error::argument(format!("initramfs entry name longer than {NAME_MAX} bytes")))?;
        let fields = [self.ino, mode, 0, 0, nlink, self.mtime, size, 0, 0, 0, 0, namesize, 0];
        let mut h = String::with_capacity(HEADER);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.put(h.as_bytes())?;
        self.put(path.as_bytes())?;
        self.put(&[0])?;
        self.align()?;
        self.put(data)?;
        self.align()
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io("cannot write the initramfs", e))?;
        self.written += u64_from_usize(b.len());
        Ok(())
    }

    fn align(&mut self) -> Result<()> {
        let pad = [0u8; 4];
        let n = usize_from_u64(pad4(self.written), "cpio padding")?;
        self.put(&pad[..n])
    }

    /// Writes the trailer (padded to 512 bytes, as GNU cpio does) and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.ino = 0;
        self.entry(TRAILER, 0, 1, &[])?;
        let pad = vec![0u8; usize_from_u64(self.written.next_multiple_of(512) - self.written, "cpio padding")?];
        self.put(&pad)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn gnu_cpio_reads_what_we_write_and_we_read_its_listing_back() {
        let mut w = Writer::new(Vec::new(), 1_700_000_000);
        w.dir("lib", 0o755).unwrap();
        w.file("lib/a.ko", 0o644, b"module bytes").unwrap();
        w.symlink("bin", "usr/bin").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 512, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.path().join("lib/a.ko")).unwrap(), b"module bytes");
        assert_eq!(std::fs::read_link(dir.path().join("bin")).unwrap().to_str(), Some("usr/bin"));
        let listed = list(&bytes[..], "test", &|p| p.ends_with(".ko")).unwrap();
        let paths: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["lib", "lib/a.ko", "bin"]);
        assert_eq!(listed[1].data.as_deref(), Some(&b"module bytes"[..]));
    }

    #[test]
    fn an_early_plain_archive_then_a_compressed_one_are_both_listed_and_lz4_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel/x86/microcode")).unwrap();
        std::fs::write(dir.path().join("kernel/x86/microcode/GenuineIntel.bin"), b"ucode").unwrap();
        let cpio = |names: &str| {
            let out = Command::new("sh")
                .args(["-c", &format!("printf '{names}' | cpio -o -H newc --quiet")])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
            out.stdout
        };
        let early = cpio("kernel\\nkernel/x86\\nkernel/x86/microcode\\nkernel/x86/microcode/GenuineIntel.bin\\n");
        std::fs::create_dir_all(dir.path().join("usr/lib/modules/6.1.0-1-amd64/kernel")).unwrap();
        std::fs::write(dir.path().join("usr/lib/modules/6.1.0-1-amd64/kernel/virtio_blk.ko"), b"m").unwrap();
        let main = cpio("usr/lib/modules/6.1.0-1-amd64/kernel/virtio_blk.ko\\n");
        let z = zstd::encode_all(&main[..], 3).unwrap();
        let mut all = early.clone();
        all.extend_from_slice(&z);
        let paths: Vec<String> = list(&all[..], "test", &|_| false).unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(paths.last().unwrap(), "usr/lib/modules/6.1.0-1-amd64/kernel/virtio_blk.ko");
        assert!(paths.contains(&"kernel/x86/microcode/GenuineIntel.bin".to_string()));
        let mut lz4 = early;
        lz4.extend_from_slice(&[0x02, 0x21, 0x4c, 0x18, 0, 0, 0, 0]);
        let e = list(&lz4[..], "test", &|_| false).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Unsupported);
        assert!(e.message().contains("lz4 (legacy frames)"), "{e}");
        let mut cut = main.clone();
        cut.truncate(200);
        let e = list(&cut[..], "test", &|_| false).unwrap_err();
        assert!(e.message().contains("cannot read the initramfs test"), "{e}");
    }
}
