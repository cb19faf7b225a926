//! `diskcast vulndb update`: osv.dev's database zips fetched into a directory, as osv.dev
//! lays them out (`all.zip` for every ecosystem, `ECOSYSTEM/all.zip` for one), so that
//! `inspect --vuln-db DIR` reads them. Each zip is downloaded into an unnamed file beside
//! its target, opened as a zip, and only then put in place (the output path of
//! [`diskcast_block::output::OutputFiles`]): a failed, cut or refused download leaves the
//! database that was there. The server's `ETag` and `Last-Modified` are kept beside the
//! zip (`all.zip.headers`) and sent back as `If-None-Match` / `If-Modified-Since`, so an
//! unchanged database is answered `304 Not Modified` and not fetched again.
//!
//! The HTTP agent has the registry client's settings (crates/oci/src/registry.rs:
//! timeouts, redirects, user agent), built on ureq as it is.

use diskcast_block::output::OutputFiles;
use diskcast_block::progress::Progress;
use diskcast_block::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// osv.dev's public bucket.
pub const DEFAULT_BASE_URL: &str = "https://osv-vulnerabilities.storage.googleapis.com/";

/// Largest zip fetched: osv.dev's whole-database `all.zip` is about 1 GiB, one
/// ecosystem's at most a few hundred MiB; a server sending more is refused.
pub const MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

/// Longest ecosystem name taken (osv.dev's longest, `Red Hat:enterprise_linux:9::appstream`
/// and the like, are under 64 bytes).
pub const MAX_ECOSYSTEM_BYTES: usize = 128;

/// Largest `all.zip.headers` read back: it holds a URL and two header values.
const MAX_HEADERS_FILE_BYTES: u64 = 64 << 10;

/// The zip file's name in its directory, as osv.dev names it.
const ZIP_NAME: &str = "all.zip";

/// Where the validators of a zip are kept, beside it (not `*.json`, not `*.zip`: the
/// database reader skips it).
const HEADERS_NAME: &str = "all.zip.headers";

/// How to fetch.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// The bucket's URL (`http://` or `https://`), ending in `/` or not.
    pub base_url: String,
    /// Set by Ctrl-C: the download stops at its next read and nothing is put in place.
    pub cancel: Option<Arc<AtomicBool>>,
    /// TLS and timeouts: the project's one HTTP client (system CA store, `--tls-verify`).
    pub http: diskcast_http::HttpOptions,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions { base_url: DEFAULT_BASE_URL.to_string(), cancel: None, http: Default::default() }
    }
}

/// What happened to one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A new zip was fetched and put in place.
    Updated,
    /// The server said the zip we have is current (`304 Not Modified`).
    Unchanged,
}

/// One database fetched or found current.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    /// The ecosystem (`Debian`), or None for osv.dev's whole-database `all.zip`.
    pub ecosystem: Option<String>,
    /// Where it came from.
    pub url: String,
    /// The zip on disk.
    pub path: PathBuf,
    /// Updated or unchanged.
    pub status: Status,
    /// The zip's size.
    pub bytes: u64,
    /// Its members (advisory files and others), counted when it was fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// The server's `ETag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The server's `Last-Modified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// What `all.zip.headers` holds: the validators of the zip beside it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Validators {
    url: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
    /// The zip's size when fetched: a zip changed since is fetched again.
    bytes: u64,
}

/// Checks an `--ecosystem` value: a name osv.dev uses as a directory (`Debian`,
/// `Rocky Linux`, `Ubuntu:22.04:LTS`), which becomes a directory here too.
pub fn check_ecosystem(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::argument(format!("--ecosystem {name:?}: {why}")));
    if name.is_empty() || name.len() > MAX_ECOSYSTEM_BYTES {
        return bad(&format!("empty or longer than {MAX_ECOSYSTEM_BYTES} bytes (MAX_ECOSYSTEM_BYTES)"));
    }
    if name.starts_with('.') || name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return bad(
            "not an ecosystem name: no '/', '\\', control characters or leading '.' (as osv.dev names them: Debian, PyPI, Rocky Linux)",
        );
    }
    Ok(())
}

/// The URL of a database: `BASE/all.zip`, or `BASE/ECOSYSTEM/all.zip` with the name
/// percent-encoded.
pub fn database_url(base: &str, ecosystem: Option<&str>) -> Result<String> {
    if !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(Error::argument(format!("--url {base:?}: not an http:// or https:// URL")));
    }
    let mut url = base.trim_end_matches('/').to_string();
    url.push('/');
    if let Some(e) = ecosystem {
        for b in e.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
        url.push('/');
    }
    url.push_str(ZIP_NAME);
    Ok(url)
}

/// Reads `all.zip.headers`, without following a symlink; None when missing or unreadable
/// (the zip is then fetched whole).
fn read_validators(path: &Path) -> Option<Validators> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut text = Vec::new();
    std::fs::File::from(fd).take(MAX_HEADERS_FILE_BYTES).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The size of the regular file at `path` (not followed), None when there is none.
fn regular_size(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// `dir`, made when missing; refused when it is a symlink or not a directory (never
/// followed: a database directory is ours).
fn ensure_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::refused("exists and is not a directory (a symlink is not followed)").with_file(dir)),
            Err(e) => Err(Error::io("cannot stat", e).with_file(dir)),
        },
        Err(e) => Err(Error::io("cannot create directory", e).with_file(dir)),
    }
}

/// A header's value as text.
fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// One try: the answer's status and, on 200, the zip written into `file`.
enum Answer {
    NotModified,
    Fetched { etag: Option<String>, last_modified: Option<String> },
}

fn fetch_once(
    agent: &ureq::Agent,
    url: &str,
    validators: Option<&Validators>,
    file: &std::fs::File,
    opts: &UpdateOptions,
    progress: &dyn Progress,
) -> Result<Answer> {
    let mut req = ureq::http::Request::builder().method("GET").uri(url);
    if let Some(v) = validators {
        if let Some(e) = &v.etag {
            req = req.header("If-None-Match", e.as_str());
        }
        if let Some(m) = &v.last_modified {
            req = req.header("If-Modified-Since", m.as_str());
        }
    }
    let req = req.body(()).map_err(|e| Error::argument(format!("GET {url}: {e}")))?;
    let resp =
        agent.run(req).map_err(|e| diskcast_http::transport_error(&format!("GET {url}"), e, opts.http.timeouts()))?;
    let status = resp.status().as_u16();
    match status {
        304 if validators.is_some() => return Ok(Answer::NotModified),
        200 => {}
        s if diskcast_http::is_transient(s) => {
            // An I/O error, so the shared retry tries again.
            return Err(Error::io(
                format!("GET {url}: the server answered HTTP {s}"),
                std::io::Error::other("server error"),
            ));
        }
        _ => return Err(Error::refused(format!("GET {url}: the server answered HTTP {status}, not 200"))),
    }
    let etag = header(&resp, "etag");
    let last_modified = header(&resp, "last-modified");
    let length = header(&resp, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
    if let Some(n) = length.filter(|n| *n > MAX_DOWNLOAD_BYTES) {
        return Err(Error::refused(format!(
            "GET {url}: {n} bytes, more than the MAX_DOWNLOAD_BYTES cap ({MAX_DOWNLOAD_BYTES})"
        )));
    }
    progress.start(length.unwrap_or(0));
    let mut body = resp.into_body().into_reader().take(MAX_DOWNLOAD_BYTES + 1);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::cancelled());
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("GET {url}: reading the answer"), e)),
        };
        let chunk = buf.get(..n).unwrap_or(&[]);
        out.write_all(chunk).map_err(|e| Error::io("cannot write the download", e))?;
        let n = diskcast_layout::u64_from_usize(n);
        total = total.saturating_add(n);
        progress.advance(n);
        if total > MAX_DOWNLOAD_BYTES {
            return Err(Error::refused(format!(
                "GET {url}: more than the MAX_DOWNLOAD_BYTES cap ({MAX_DOWNLOAD_BYTES} bytes)"
            )));
        }
    }
    out.flush().map_err(|e| Error::io("cannot write the download", e))?;
    if let Some(n) = length.filter(|n| *n != total) {
        return Err(Error::io(
            format!("GET {url}: the answer ended after {total} of {n} bytes"),
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    progress.finish();
    Ok(Answer::Fetched { etag, last_modified })
}

/// Fetches one database (`ecosystem`, or the whole `all.zip`) into `dir`, unless the
/// server says the copy there is current.
pub fn update(dir: &Path, ecosystem: Option<&str>, opts: &UpdateOptions, progress: &dyn Progress) -> Result<Fetched> {
    if let Some(e) = ecosystem {
        check_ecosystem(e)?;
    }
    let url = database_url(&opts.base_url, ecosystem)?;
    ensure_dir(dir)?;
    let sub = match ecosystem {
        Some(e) => {
            let sub = dir.join(e);
            ensure_dir(&sub)?;
            sub
        }
        None => dir.to_path_buf(),
    };
    let zip_path = sub.join(ZIP_NAME);
    let headers_path = sub.join(HEADERS_NAME);
    // Validators count only for the zip they were recorded with, from the same URL.
    let have = regular_size(&zip_path);
    let validators = read_validators(&headers_path)
        .filter(|v| v.url == url && Some(v.bytes) == have && (v.etag.is_some() || v.last_modified.is_some()));

    let files = OutputFiles::new();
    let zip_file = files.create(&zip_path)?;
    let file = zip_file.file();
    let agent = diskcast_http::agent(&opts.http);
    let answer = diskcast_http::retry(|| {
        file.set_len(0).map_err(|e| Error::io("cannot truncate the download", e).with_file(&zip_path))?;
        let mut f = file;
        f.rewind().map_err(|e| Error::io("cannot rewind the download", e).with_file(&zip_path))?;
        fetch_once(&agent, &url, validators.as_ref(), file, opts, progress)
    })
    .map_err(|e| match e.kind() {
        ErrorKind::Io => Error::io(
            format!("{} (the database in {} is unchanged)", e.message(), sub.display()),
            std::io::Error::other("download failed"),
        ),
        _ => e,
    })?;
    let (etag, last_modified) = match answer {
        Answer::NotModified => {
            let v = validators.unwrap_or_default();
            return Ok(Fetched {
                ecosystem: ecosystem.map(str::to_string),
                url,
                path: zip_path,
                status: Status::Unchanged,
                bytes: v.bytes,
                members: None,
                etag: v.etag,
                last_modified: v.last_modified,
            });
        }
        Answer::Fetched { etag, last_modified } => (etag, last_modified),
    };
    // The download must open as a zip before it replaces anything.
    let bytes = file.metadata().map_err(|e| Error::io("cannot stat the download", e).with_file(&zip_path))?.len();
    let mut f = file;
    f.rewind().map_err(|e| Error::io("cannot rewind the download", e).with_file(&zip_path))?;
    let members = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| {
            Error::corrupt(format!(
                "GET {url}: the answer is not a zip ({e}); the database in {} is unchanged",
                sub.display()
            ))
        })?
        .len();
    if members > crate::osv::MAX_FILES {
        return Err(Error::refused(format!(
            "GET {url}: {members} members, more than the MAX_FILES cap ({})",
            crate::osv::MAX_FILES
        )));
    }
    let record = Validators { url: url.clone(), etag: etag.clone(), last_modified: last_modified.clone(), bytes };
    let headers_file = files.create(&headers_path)?;
    let text = serde_json::to_vec_pretty(&record).map_err(|e| Error::invalid(format!("{e}")))?;
    headers_file.file().write_all(&text).map_err(|e| Error::io("cannot write", e).with_file(&headers_path))?;
    drop(zip_file);
    drop(headers_file);
    // The zip first: a crash between the two leaves old validators beside a new zip,
    // whose size no longer matches them, so the next run fetches it again.
    files.commit()?;
    Ok(Fetched {
        ecosystem: ecosystem.map(str::to_string),
        url,
        path: zip_path,
        status: Status::Updated,
        bytes,
        members: Some(members),
        etag,
        last_modified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        assert_eq!(database_url("http://127.0.0.1:8000", None).unwrap(), "http://127.0.0.1:8000/all.zip");
        assert_eq!(
            database_url(DEFAULT_BASE_URL, Some("Rocky Linux")).unwrap(),
            "https://osv-vulnerabilities.storage.googleapis.com/Rocky%20Linux/all.zip"
        );
        assert_eq!(
            database_url("https://x/y/", Some("Ubuntu:22.04:LTS")).unwrap(),
            "https://x/y/Ubuntu%3A22.04%3ALTS/all.zip"
        );
        let e = database_url("ftp://x/", None).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("not an http:// or https:// URL"), "{e}");
        assert!(check_ecosystem("Debian").is_ok());
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a\nb"] {
            let e = check_ecosystem(bad).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{bad:?}: {e}");
            assert!(e.to_string().contains("--ecosystem"), "{bad:?}: {e}");
        }
    }
}
