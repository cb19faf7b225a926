//! Disk images read over HTTP(S): a [`ByteSource`] whose reads are `Range` requests.
//!
//! - Opening sends `GET` with `Range: bytes=0-` [`BLOCK`]`-1` (not `HEAD`: a presigned
//!   object-storage URL is signed for one method): a `206` gives the size from
//!   `Content-Range` and the first block; a `200` means the server ignores ranges and
//!   carries the whole file ([`Remote::Whole`]), which only a front-to-back reader can use.
//! - Reads go through a cache of [`CACHE_BLOCKS`] blocks of [`BLOCK`] bytes, each fetched
//!   by one range request. A reader that reads the block after one it read gets the next
//!   [`READAHEAD_BLOCKS`] fetched for it by [`WORKERS`] threads, so several requests are in
//!   flight for a sequential reader (convert) besides the copy engine's own threads.
//! - The `ETag` (or `Last-Modified`) of the first answer is pinned: every request carries
//!   it in `If-Range` and every answer must carry the same one, so a file replaced on the
//!   server mid-read is an error, never a mix of two files.
//! - A request that fails (connection drop, timeout, 5xx, 429) is sent again after a
//!   doubling backoff, asking only for the bytes still missing; a block that made no
//!   progress in [`crate::MAX_ATTEMPTS`] tries, or took [`MAX_REQUESTS_PER_BLOCK`]
//!   requests, fails.
//! - Redirects are followed on every request and the URL (query string included: a
//!   presigned URL's signature) is sent as given; messages show it without the query.

use crate::url::{self, redact};
use crate::{HttpOptions, MAX_ATTEMPTS, RETRY_BACKOFF, Timeouts, agent, body_error, is_transient, retry, run};
use diskcast_block::source::{ByteSource, Source};
use diskcast_block::{Error, ErrorKind, Result};
use diskcast_layout::{u64_from_usize, usize_from_u64};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

/// Bytes per range request and per cache block: large enough that a request's round
/// trip is small beside its transfer on a LAN, small enough that a random read (a qcow2
/// L2 table) costs little.
pub const BLOCK: u64 = 1 << 20;

/// Blocks the cache holds (32 MiB): room for the read-ahead window of every worker and
/// the blocks the copy engine's threads are reading, no more.
pub const CACHE_BLOCKS: usize = 32;

/// Blocks fetched ahead of a sequential reader.
pub const READAHEAD_BLOCKS: u64 = 8;

/// Threads fetching read-ahead blocks: requests in flight besides the readers' own.
pub const WORKERS: usize = 4;

/// Requests one block may take when each makes progress (a server that drops the
/// connection every few bytes): the bound on retries that keep resuming.
pub const MAX_REQUESTS_PER_BLOCK: u32 = 16;

/// True when `s` names an `http://` or `https://` URL rather than a file.
pub fn is_url(s: &str) -> bool {
    url::is_url(s)
}

/// What opening a URL found.
#[derive(Debug)]
pub enum Remote {
    /// The server honours ranges: read at any offset.
    Ranged(HttpSource),
    /// The server ignores ranges and sent the whole file: read it front to back.
    Whole(WholeBody),
}

impl Remote {
    /// The source, or for a server that ignores ranges an error saying what works instead.
    pub fn ranged(self) -> Result<Source> {
        match self {
            Remote::Ranged(s) => Ok(Arc::new(s)),
            Remote::Whole(w) => Err(w.refusal()),
        }
    }
}

/// The body of a `200` answer to a range request: the whole file, front to back.
pub struct WholeBody {
    /// The URL without its query, for messages.
    pub name: PathBuf,
    /// `Content-Length`, when the server sent one.
    pub len: Option<u64>,
    /// The body.
    pub reader: Box<dyn Read + Send>,
}

impl std::fmt::Debug for WholeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WholeBody").field("name", &self.name).field("len", &self.len).finish_non_exhaustive()
    }
}

impl WholeBody {
    /// Why an image that needs reads at any offset cannot come from this server.
    pub fn refusal(&self) -> Error {
        Error::unsupported(
            "the server ignores Range requests (it answered 200 with the whole file), so the image cannot be read \
             at any offset; only a raw disk or a streamOptimized VMDK can be read front to back from such a \
             server (diskcast convert URL OUT), other formats must be downloaded first",
        )
        .with_file(&self.name)
    }
}

/// Opens `url`: one range request for the first block tells whether the server honours
/// ranges, the file's size and its validator.
pub fn open(url: &str, o: &HttpOptions) -> Result<Remote> {
    url::parse(url)?;
    let name = PathBuf::from(redact(url));
    let agent = agent(o);
    let t = o.timeouts();
    let what = "GET".to_string();
    let resp = retry(|| {
        let req = ureq::http::Request::get(url).header("Range", format!("bytes=0-{}", BLOCK - 1));
        let resp = run(&agent, req, ureq::SendBody::none(), &what, t)?;
        match resp.status().as_u16() {
            200 | 206 | 416 => Ok(resp),
            s => Err(status_error(&what, s)),
        }
    })
    .map_err(|e| e.with_file(&name))?;
    let pinned = Validators::of(&resp);
    let (len, first) = match resp.status().as_u16() {
        200 => {
            let len = header(&resp, "content-length").and_then(|v| v.parse().ok());
            let reader = Box::new(resp.into_body().into_reader());
            return Ok(Remote::Whole(WholeBody { name, len, reader }));
        }
        // The range starts past the end: an empty file (`bytes */0`).
        416 => match content_range(&resp) {
            Some(ContentRange { total: Some(0), .. }) => (0, None),
            _ => {
                return Err(Error::invalid(format!("{what} answered 416 for the first byte of a non-empty file"))
                    .with_file(&name));
            }
        },
        _ => {
            let r = content_range(&resp).filter(|r| r.first == 0).ok_or_else(|| {
                Error::invalid(format!("{what}: the 206 answer has no usable Content-Range")).with_file(&name)
            })?;
            let total = r.total.ok_or_else(|| {
                Error::unsupported(format!("{what}: the server does not say the file's size (Content-Range */...)"))
                    .with_file(&name)
            })?;
            let want = r.last.saturating_add(1);
            if want != total.min(BLOCK) {
                return Err(Error::invalid(format!("{what}: asked for the first block, got bytes 0-{}", r.last))
                    .with_file(&name));
            }
            let mut data = Vec::new();
            // A first block cut short is completed below, from the byte where it broke off.
            let _ = resp.into_body().into_reader().take(want).read_to_end(&mut data);
            (total, Some(data))
        }
    };
    let inner = Arc::new(Inner {
        name,
        url: url.to_string(),
        agent,
        timeouts: t,
        len,
        pinned,
        cache: Mutex::new(Cache::default()),
        ready: Condvar::new(),
        options: *o,
    });
    if let Some(data) = first {
        let data = inner.complete(0, data)?;
        inner.finish(0, Some(Arc::from(data)));
    }
    Ok(Remote::Ranged(HttpSource { inner, prefetch: OnceLock::new() }))
}

/// An image file on an HTTP(S) server that honours ranges.
#[derive(Debug)]
pub struct HttpSource {
    inner: Arc<Inner>,
    /// Sends block numbers to the read-ahead workers, started on the first read-ahead;
    /// they end when this is dropped.
    prefetch: OnceLock<Option<Mutex<Sender<u64>>>>,
}

struct Inner {
    /// The URL without its query.
    name: PathBuf,
    /// The URL as given, query included.
    url: String,
    agent: ureq::Agent,
    timeouts: Timeouts,
    len: u64,
    /// The validators of the first answer; every later answer must match.
    pinned: Validators,
    cache: Mutex<Cache>,
    /// Signalled when a pending block is ready or failed.
    ready: Condvar,
    /// For opening backing files the same way.
    options: HttpOptions,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource").field("name", &self.name).field("len", &self.len).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    slots: HashMap<u64, Slot>,
    /// Bumped on each use: the least recently used ready block goes first.
    tick: u64,
}

enum Slot {
    /// Being fetched by a reader or a worker; wait on [`Inner::ready`].
    Pending,
    Ready {
        data: Arc<[u8]>,
        used: u64,
    },
}

/// `ETag` and `Last-Modified` of an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn of(resp: &ureq::http::Response<ureq::Body>) -> Self {
        Validators { etag: header(resp, "etag"), last_modified: header(resp, "last-modified") }
    }

    /// What `If-Range` may carry: a strong ETag, else the date (RFC 9110 13.1.5).
    fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| !e.starts_with("W/")).or(self.last_modified.as_deref())
    }

    /// An error when `got` names another version of the file than `self`.
    fn check(&self, got: &Validators, name: &Path) -> Result<()> {
        let differ = |a: &Option<String>, b: &Option<String>| a.is_some() && a != b;
        if differ(&self.etag, &got.etag) || differ(&self.last_modified, &got.last_modified) {
            return Err(changed(name, self, got));
        }
        Ok(())
    }
}

fn changed(name: &Path, pinned: &Validators, got: &Validators) -> Error {
    let show = |v: &Validators| {
        format!(
            "ETag {}, Last-Modified {}",
            v.etag.as_deref().unwrap_or("none"),
            v.last_modified.as_deref().unwrap_or("none")
        )
    };
    Error::corrupt(format!(
        "the file changed on the server while it was read (opened as {}, now {}); read it again",
        show(pinned),
        show(got)
    ))
    .with_file(name)
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `Content-Range: bytes FIRST-LAST/TOTAL` (`TOTAL` may be `*`), or `bytes */TOTAL`.
#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    first: u64,
    last: u64,
    total: Option<u64>,
}

fn content_range(resp: &ureq::http::Response<ureq::Body>) -> Option<ContentRange> {
    parse_content_range(&header(resp, "content-range")?)
}

fn parse_content_range(v: &str) -> Option<ContentRange> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    if range == "*" {
        return Some(ContentRange { first: 0, last: 0, total });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last && total.is_none_or(|t| last < t)).then_some(ContentRange { first, last, total })
}

/// The error for an answer with status `s`: 5xx and 429 are I/O errors (tried again),
/// the others say what to check.
fn status_error(what: &str, s: u16) -> Error {
    match s {
        s if is_transient(s) => crate::server_failed(what, s),
        401 | 403 => Error::refused(format!(
            "{what} answered {s}: access denied (a presigned URL may have expired; diskcast sends no credentials)"
        )),
        404 | 410 => Error::argument(format!("{what} answered {s}: no such file on the server")),
        s => Error::unsupported(format!("{what} answered {s}")),
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blocks(&self) -> u64 {
        self.len.div_ceil(BLOCK)
    }

    /// Block `i`, from the cache, from a fetch under way, or fetched now by this thread.
    fn block(&self, i: u64) -> Result<Arc<[u8]>> {
        let mut c = self.lock();
        loop {
            c.tick += 1;
            let tick = c.tick;
            match c.slots.get_mut(&i) {
                Some(Slot::Ready { data, used }) => {
                    *used = tick;
                    return Ok(data.clone());
                }
                Some(Slot::Pending) => c = self.ready.wait(c).unwrap_or_else(|p| p.into_inner()),
                None => {
                    c.slots.insert(i, Slot::Pending);
                    break;
                }
            }
        }
        drop(c);
        let r = self.fetch(i).map(Arc::<[u8]>::from);
        self.finish(i, r.as_ref().ok().cloned());
        r
    }

    /// Ends the fetch of block `i`: its data cached, or on failure the slot freed (a
    /// reader waiting for it fetches it itself and sees the error).
    fn finish(&self, i: u64, data: Option<Arc<[u8]>>) {
        let mut c = self.lock();
        match data {
            Some(data) => {
                c.tick += 1;
                let used = c.tick;
                c.slots.insert(i, Slot::Ready { data, used });
                evict(&mut c);
            }
            None => {
                c.slots.remove(&i);
            }
        }
        drop(c);
        self.ready.notify_all();
    }

    /// The bytes of block `i`, resumed where an answer broke off.
    fn fetch(&self, i: u64) -> Result<Vec<u8>> {
        let len = self.block_len(i)?;
        self.complete(i, Vec::with_capacity(usize_from_u64(len, "block length")?))
    }

    /// The length of block `i` (the last one may be short).
    fn block_len(&self, i: u64) -> Result<u64> {
        let start = i.checked_mul(BLOCK).filter(|&s| s < self.len).ok_or_else(|| {
            Error::out_of_bounds(format!("block {i} lies past the {}-byte file", self.len)).with_file(&self.name)
        })?;
        Ok((self.len - start).min(BLOCK))
    }

    /// Block `i` given its first `buf.len()` bytes: the rest asked for, and asked again
    /// from where each answer broke off.
    fn complete(&self, i: u64, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let len = self.block_len(i)?;
        let start = i * BLOCK;
        let (mut wait, mut failures, mut requests) = (RETRY_BACKOFF, 0u32, 0u32);
        while u64_from_usize(buf.len()) < len {
            let before = buf.len();
            requests += 1;
            match self.request(start, len, &mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Io => {
                    if buf.len() > before {
                        (failures, wait) = (0, RETRY_BACKOFF);
                    }
                    failures += 1;
                    if failures >= MAX_ATTEMPTS || requests >= MAX_REQUESTS_PER_BLOCK {
                        return Err(Error::io(
                            format!("{} (after {requests} requests)", e.message()),
                            std::io::Error::other("retries exhausted"),
                        )
                        .with_file(&self.name));
                    }
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
                Err(e) => return Err(e.with_file(&self.name)),
            }
        }
        Ok(buf)
    }

    /// One request for the bytes of `[start, start + len)` not yet in `buf`, appended to it.
    fn request(&self, start: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        let from = start + u64_from_usize(buf.len());
        let to = start + len - 1;
        let what = format!("GET bytes {from}-{to}");
        let mut req = ureq::http::Request::get(&self.url).header("Range", format!("bytes={from}-{to}"));
        if let Some(v) = self.pinned.if_range() {
            req = req.header("If-Range", v);
        }
        let resp = run(&self.agent, req, ureq::SendBody::none(), &what, self.timeouts)?;
        let got = Validators::of(&resp);
        match resp.status().as_u16() {
            206 => {}
            // If-Range did not match (or the server stopped honouring ranges): the whole
            // file, of another version.
            200 if got != self.pinned || self.pinned.if_range().is_some() => {
                return Err(changed(&self.name, &self.pinned, &got));
            }
            200 => {
                return Err(Error::unsupported(format!(
                    "{what}: the server answered 200 with the whole file, no longer honouring Range requests"
                )));
            }
            s => return Err(status_error(&what, s)),
        }
        self.pinned.check(&got, &self.name)?;
        let r = content_range(&resp).ok_or_else(|| Error::invalid(format!("{what}: 206 without a Content-Range")))?;
        if r.first != from || r.last > to || r.total != Some(self.len) {
            return Err(Error::invalid(format!(
                "{what}: the server sent bytes {}-{} of a {}-byte file, not the range asked of the {}-byte file",
                r.first,
                r.last,
                r.total.map_or("?".to_string(), |t| t.to_string()),
                self.len
            )));
        }
        let want = r.last - r.first + 1;
        let mut body = resp.into_body().into_reader().take(want);
        let got = body.read_to_end(buf).map_err(|e| body_error(&what, e, self.timeouts))?;
        if u64_from_usize(got) != want {
            return Err(Error::io(
                format!("{what}: the answer broke off after {got} of {want} bytes"),
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        Ok(())
    }
}

/// Drops least recently used ready blocks beyond [`CACHE_BLOCKS`] (pending ones stay).
fn evict(c: &mut Cache) {
    while c.slots.values().filter(|s| matches!(s, Slot::Ready { .. })).count() > CACHE_BLOCKS {
        let oldest = c
            .slots
            .iter()
            .filter_map(|(i, s)| match s {
                Slot::Ready { used, .. } => Some((*used, *i)),
                Slot::Pending => None,
            })
            .min();
        match oldest {
            Some((_, i)) => c.slots.remove(&i),
            None => break,
        };
    }
}

impl HttpSource {
    /// Queues the blocks after `last` for the workers when the read looks sequential
    /// (the block before `first` was read or is being read).
    fn read_ahead(&self, first: u64, last: u64) {
        let end = last.saturating_add(READAHEAD_BLOCKS).min(self.inner.blocks().saturating_sub(1));
        if last >= end {
            return;
        }
        let mut c = self.inner.lock();
        if first == 0 || !c.slots.contains_key(&(first - 1)) {
            return;
        }
        let pending = c.slots.values().filter(|s| matches!(s, Slot::Pending)).count();
        let room = usize_from_u64(READAHEAD_BLOCKS, "read-ahead").unwrap_or(0).saturating_add(WORKERS);
        let wanted: Vec<u64> =
            (last + 1..=end).filter(|i| !c.slots.contains_key(i)).take(room.saturating_sub(pending)).collect();
        for &i in &wanted {
            c.slots.insert(i, Slot::Pending);
        }
        drop(c);
        let Some(tx) = self.workers() else {
            for i in wanted {
                self.inner.finish(i, None);
            }
            return;
        };
        let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
        for i in wanted {
            if tx.send(i).is_err() {
                self.inner.finish(i, None);
            }
        }
    }

    /// The queue of the read-ahead workers, started on first use (`None` when no thread
    /// could be started: reads then fetch their own blocks).
    fn workers(&self) -> Option<&Mutex<Sender<u64>>> {
        self.prefetch
            .get_or_init(|| {
                let (tx, rx) = channel::<u64>();
                let rx = Arc::new(Mutex::new(rx));
                for n in 0..WORKERS {
                    let (inner, rx) = (self.inner.clone(), rx.clone());
                    let spawned = std::thread::Builder::new()
                        .name(format!("http-readahead-{n}"))
                        .spawn(move || worker(&inner, &rx));
                    if spawned.is_err() && n == 0 {
                        return None;
                    }
                }
                Some(Mutex::new(tx))
            })
            .as_ref()
    }

    /// The file `name` that the image names (a backing file), opened on the same server
    /// relative to this image's URL, as qemu resolves it.
    pub fn open_relative(&self, name: &str) -> Result<Source> {
        let url = url::join(&self.inner.url, name)?;
        open(&url, &self.inner.options)?.ranged()
    }
}

/// A read-ahead worker: fetches queued blocks (marked pending by the queuer) until the
/// source is dropped.
fn worker(inner: &Inner, rx: &Mutex<Receiver<u64>>) {
    loop {
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(i) = next else { return };
        let data = inner.fetch(i).ok().map(Arc::<[u8]>::from);
        inner.finish(i, data);
    }
}

impl ByteSource for HttpSource {
    fn name(&self) -> &Path {
        &self.inner.name
    }

    fn len(&self) -> Result<u64> {
        Ok(self.inner.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = self.inner.len;
        let end = offset.checked_add(u64_from_usize(buf.len())).filter(|&e| e <= len).ok_or_else(|| {
            Error::out_of_bounds(format!("read of {} bytes runs past the end of the {len}-byte source", buf.len()))
                .with_offset(offset)
                .with_file(&self.inner.name)
        })?;
        if buf.is_empty() {
            return Ok(());
        }
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        self.read_ahead(first, last);
        let mut at = offset;
        let mut out = &mut buf[..];
        while !out.is_empty() {
            let data = self.inner.block(at / BLOCK)?;
            let skip = usize_from_u64(at % BLOCK, "offset in block")?;
            let n = out.len().min(data.len().saturating_sub(skip));
            if n == 0 {
                return Err(Error::corrupt("a cached block is shorter than the file says").with_file(&self.inner.name));
            }
            out[..n].copy_from_slice(&data[skip..skip + n]);
            out = &mut out[n..];
            at += u64_from_usize(n);
        }
        Ok(())
    }

    fn open_relative(&self, name: &str) -> Option<Result<Source>> {
        Some(HttpSource::open_relative(self, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_bad_ones_do_not() {
        let r = |first, last, total| Some(ContentRange { first, last, total });
        assert_eq!(parse_content_range("bytes 0-1048575/1073741824"), r(0, 1048575, Some(1073741824)));
        assert_eq!(parse_content_range("bytes 5-9/*"), r(5, 9, None));
        assert_eq!(parse_content_range("bytes */0"), r(0, 0, Some(0)));
        for bad in ["bytes 9-5/10", "bytes 0-10/10", "items 0-1/2", "bytes 0-/5", "bytes 0-99999999999999999999/1"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn validators_prefer_a_strong_etag_and_catch_a_change() {
        let v = |e: Option<&str>, l: Option<&str>| Validators {
            etag: e.map(str::to_string),
            last_modified: l.map(str::to_string),
        };
        let date = Some("Mon, 07 Dec 2026 12:00:00 GMT");
        assert_eq!(v(Some("\"a\""), date).if_range(), Some("\"a\""));
        assert_eq!(v(Some("W/\"a\""), date).if_range(), date);
        let p = Path::new("u");
        assert!(v(Some("\"a\""), None).check(&v(Some("\"a\""), date), p).is_ok());
        let e = v(Some("\"a\""), None).check(&v(Some("\"b\""), None), p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("changed on the server"), "{e}");
    }
}
