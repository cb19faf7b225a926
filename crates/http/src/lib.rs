//! diskcast's one HTTP client, used by the registry code (diskcast-oci) and by disk images
//! read over HTTP(S) ([`source`]).
//!
//! - [`agent`]: a ureq agent with the project's timeouts, redirects followed, and TLS
//!   roots from the system's CA store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, `/etc/ssl/certs`:
//!   corporate CAs work) besides Mozilla's bundled roots; `--tls-verify=false` turns
//!   certificate checks off.
//! - [`retry`]: idempotent reads tried again after transport errors, timeouts and 5xx
//!   answers, with a doubling backoff.
//! - [`transport_error`], [`body_error`]: ureq failures as [`Error`]s that say which
//!   timeout fired.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

pub mod source;
mod url;

pub use source::{HttpSource, Remote, WholeBody, is_url, open};

use diskcast_block::{Error, ErrorKind, Result};
use std::sync::OnceLock;
use std::time::Duration;

/// How many times a read (manifest, blob, byte range) is tried after a transport error,
/// a timeout or a 5xx answer that made no progress. A read that resumed and got further
/// starts counting again (see [`source`]).
pub const MAX_ATTEMPTS: u32 = 3;

/// The wait before the second attempt of a read; it doubles for each later one.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Default [`HttpOptions::idle_timeout`]: a server that sends nothing for this long has
/// stalled.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default [`HttpOptions::request_timeout`]: one request, body included, never takes
/// longer (a retry resumes where the last attempt stopped).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Redirects followed per request: object stores and CDNs redirect once or twice; a
/// loop stops here.
pub const MAX_REDIRECTS: u32 = 8;

/// How to reach servers.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Verify TLS certificates (`--tls-verify=false` turns it off).
    pub tls_verify: bool,
    /// A read that gets no byte for this long fails ("idle timeout").
    pub idle_timeout: Duration,
    /// A request not done (body included) after this long fails ("total timeout").
    pub request_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions { tls_verify: true, idle_timeout: IDLE_TIMEOUT, request_timeout: REQUEST_TIMEOUT }
    }
}

impl HttpOptions {
    /// The timeouts, for messages that say which one fired.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts { idle: self.idle_timeout, total: self.request_timeout }
    }
}

/// The timeouts an agent was built with, for messages that say which one fired.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// [`HttpOptions::idle_timeout`].
    pub idle: Duration,
    /// [`HttpOptions::request_timeout`].
    pub total: Duration,
}

/// The roots every agent trusts: the system's CA store (as OpenSSL finds it, with
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured), then Mozilla's bundled roots. Loaded
/// once per process; unreadable system files are skipped (the bundled roots remain).
fn root_certs() -> &'static [ureq::tls::Certificate<'static>] {
    static ROOTS: OnceLock<Vec<ureq::tls::Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let system = rustls_native_certs::load_native_certs().certs;
        system
            .iter()
            .map(|c| c.as_ref())
            .chain(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| c.as_ref()))
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect()
    })
}

/// The project's agent: TLS roots as [`root_certs`] (or no verification), HTTP status
/// codes returned rather than turned into errors, the timeouts of `o`, redirects
/// followed, and diskcast's user agent.
pub fn agent(o: &HttpOptions) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(root_certs()))
        .disable_verification(!o.tls_verify)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(o.idle_timeout))
        .timeout_per_call(Some(o.request_timeout))
        .max_redirects(MAX_REDIRECTS)
        .user_agent(concat!("diskcast/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Sends one request.
pub fn run(
    agent: &ureq::Agent,
    req: ureq::http::request::Builder,
    body: ureq::SendBody<'_>,
    what: &str,
    t: Timeouts,
) -> Result<ureq::http::Response<ureq::Body>> {
    let req = req.body(body).map_err(|e| Error::argument(format!("{what}: {e}")))?;
    agent.run(req).map_err(|e| transport_error(what, e, t))
}

/// A transport failure, saying which timeout fired when one did.
pub fn transport_error(what: &str, e: ureq::Error, t: Timeouts) -> Error {
    let msg = match timeout_of(&e) {
        Some(ureq::Timeout::PerRead) => {
            format!("{what}: idle timeout: the server sent nothing for {} s", t.idle.as_secs_f32())
        }
        Some(ureq::Timeout::PerCall | ureq::Timeout::Global) => {
            format!("{what}: total timeout: the request took longer than {} s", t.total.as_secs_f32())
        }
        Some(other) => format!("{what}: {other} timeout"),
        None => format!("{what}: {e}"),
    };
    Error::io(msg, std::io::Error::other(e.to_string()))
}

/// The timeout behind `e`, also when an I/O error carries it.
fn timeout_of(e: &ureq::Error) -> Option<ureq::Timeout> {
    match e {
        ureq::Error::Timeout(t) => Some(*t),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()).and_then(timeout_of),
        _ => None,
    }
}

/// An error reading a response body: a timeout of the agent named as such.
pub fn body_error(what: &str, e: std::io::Error, t: Timeouts) -> Error {
    if !e.get_ref().is_some_and(|i| i.is::<ureq::Error>()) {
        return Error::io(what.to_string(), e);
    }
    match e.into_inner().map(|i| i.downcast::<ureq::Error>()) {
        Some(Ok(u)) => transport_error(what, *u, t),
        _ => Error::io(what.to_string(), std::io::Error::other("read failed")),
    }
}

/// An answer that is worth asking again: a 5xx (the server or a proxy failed) or 429
/// (too many requests), as an I/O error so [`retry`] tries again.
pub fn server_failed(what: &str, status: u16) -> Error {
    Error::io(format!("{what} answered {status}"), std::io::Error::other("http status"))
}

/// True for statuses [`server_failed`] covers.
pub fn is_transient(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// Runs `f` up to [`MAX_ATTEMPTS`] times while it fails with an I/O error (transport
/// errors, timeouts, 5xx answers), waiting [`RETRY_BACKOFF`], then twice that, between.
/// Only for idempotent reads (GET, HEAD).
pub fn retry<T>(f: impl FnMut() -> Result<T>) -> Result<T> {
    retry_with(RETRY_BACKOFF, f)
}

/// [`retry`] with the first wait `backoff`.
pub fn retry_with<T>(backoff: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = backoff;
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::Io && attempt < MAX_ATTEMPTS => {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
            Err(e) if e.kind() == ErrorKind::Io && attempt > 1 => return Err(exhausted(&e, attempt)),
            r => return r,
        }
    }
}

/// The error of the last of `attempts` failed attempts.
fn exhausted(e: &Error, attempts: u32) -> Error {
    Error::io(format!("{} (after {attempts} attempts)", e.message()), std::io::Error::other("retries exhausted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_stops_at_the_cap_and_says_so() {
        let mut calls = 0;
        let r: Result<()> = retry_with(Duration::from_millis(1), || {
            calls += 1;
            Err(Error::io("GET x", std::io::Error::other("reset")))
        });
        assert_eq!(calls, MAX_ATTEMPTS);
        assert!(r.unwrap_err().to_string().contains("after 3 attempts"));
        let mut calls = 0;
        let r: Result<()> = retry_with(Duration::from_millis(1), || {
            calls += 1;
            Err(Error::corrupt("bad"))
        });
        assert_eq!(calls, 1, "only I/O errors are tried again");
        let e = r.unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn the_bundled_roots_are_always_there() {
        assert!(root_certs().len() >= webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    }
}
