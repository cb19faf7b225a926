//! Registries that misbehave, played by tiny HTTP servers on loopback written here: one
//! that stalls mid-body (the idle timeout fires, the read is retried and resumed), one
//! that trickles forever (the total timeout fires), and token realms on another host
//! (Basic credentials are not sent there over plain HTTP).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::read_http_head;
use diskcast_block::ErrorKind;
use diskcast_oci::{Digest, OpenOptions, open};
use diskcast_testkit::within;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server saw it: request line and headers (names lower-cased).
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Serves HTTP/1.1 on `ip`:free port, one request per connection (TLS hellos are
/// dropped, so clients fall back to plain HTTP); `reply` answers each request, and may
/// stall. Returns `ip:port` and the log of requests.
fn serve(ip: &str, reply: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static) -> (String, Log) {
    let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log: Log = Arc::default();
    let (reply, seen) = (Arc::new(reply), log.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(200) {
            let Ok(mut c) = conn else { continue };
            let (reply, seen) = (reply.clone(), seen.clone());
            std::thread::spawn(move || {
                let Some((line, headers)) = read_http_head(&mut c) else { return };
                let req = Seen { line, headers };
                seen.lock().unwrap().push(req.clone());
                if req.path() == "/v2/" {
                    let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                    return;
                }
                reply(&req, &mut c);
            });
        }
    });
    (addr, log)
}

fn answer(c: &mut TcpStream, status: &str, extra: &str, body: &[u8]) {
    let _ = write!(c, "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = c.write_all(body);
}

fn options(cache: &std::path::Path, idle: u64, total: u64) -> OpenOptions {
    let mut o = OpenOptions::default();
    o.registry.tls_verify = false;
    o.registry.cache_dir = Some(cache.to_path_buf());
    o.registry.idle_timeout = Duration::from_secs(idle);
    o.registry.request_timeout = Duration::from_secs(total);
    o
}

fn count(log: &Log, path: &str) -> Vec<Seen> {
    log.lock().unwrap().iter().filter(|s| s.path() == path).cloned().collect()
}

#[test]
fn a_registry_that_stalls_or_trickles_times_out_and_reads_are_retried() {
    let cache = tempfile::tempdir().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let digest = Digest::sha256(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let blob_path = format!("/v2/blob/blobs/{digest}");
    let (addr, log) = serve("127.0.0.1", move |req, c| {
        let mt = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n";
        match req.path() {
            // Headers, a few bytes of body, then nothing.
            "/v2/idle/manifests/t" => {
                let _ = write!(c, "HTTP/1.1 200 OK\r\n{mt}Content-Length: 1000\r\n\r\n{{\"schema");
                std::thread::sleep(Duration::from_secs(30));
            }
            // One byte every 100 ms, for ever: never idle.
            "/v2/trickle/manifests/t" => {
                let _ = write!(c, "HTTP/1.1 200 OK\r\n{mt}Content-Length: 100000\r\n\r\n");
                for _ in 0..600 {
                    if c.write_all(b" ").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            "/v2/blob/manifests/t" => answer(c, "200 OK", mt, manifest.as_bytes()),
            // The config blob: 20 bytes (from where the client asks), then nothing.
            p if p == blob_path => {
                let from: usize = req
                    .header("range")
                    .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                    .unwrap_or(0);
                let status = if from > 0 { "206 Partial Content" } else { "200 OK" };
                let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", config.len() - from);
                let _ = c.write_all(&config[from..from + 20]);
                std::thread::sleep(Duration::from_secs(30));
            }
            _ => answer(c, "404 Not Found", "", b""),
        }
    });

    // A manifest body that stalls: the idle timeout fires, three times.
    let (spec, o) = (format!("docker://{addr}/idle:t"), options(cache.path(), 1, 60));
    let started = Instant::now();
    let e = within(40, "a stalled manifest", move || open(&spec, &o).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert!(e.to_string().contains("GET manifest t"), "{e}");
    assert!(e.to_string().contains("after 3 attempts"), "{e}");
    assert_eq!(count(&log, "/v2/idle/manifests/t").len(), 3);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // A body that never stalls but never ends: the total timeout fires.
    let (spec, o) = (format!("docker://{addr}/trickle:t"), options(cache.path(), 1, 2));
    let e = within(40, "a trickling manifest", move || open(&spec, &o).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("total timeout"), "{e}");
    assert!(!e.to_string().contains("idle timeout"), "{e}");
    assert_eq!(count(&log, "/v2/trickle/manifests/t").len(), 3);

    // A blob that stalls: retried, each attempt resuming where the last one stopped.
    let (spec, o) = (format!("docker://{addr}/blob:t"), options(cache.path(), 1, 60));
    let e = within(40, "a stalled blob", move || open(&spec, &o).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert!(e.to_string().contains(&format!("blob {digest}")), "{e}");
    let gets = count(&log, &format!("/v2/blob/blobs/{digest}"));
    let ranges: Vec<Option<&str>> = gets.iter().map(|s| s.header("range")).collect();
    assert_eq!(ranges, [None, Some("bytes=20-"), Some("bytes=40-")]);
}

/// A registry on 127.0.0.1 that demands a Bearer token from `realm` for every manifest.
fn bearer_registry(realm: String) -> String {
    serve("127.0.0.1", move |req, c| {
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"s\",scope=\"repository:x:pull\"\r\n");
        if req.header("authorization") == Some("Bearer tok") {
            answer(c, "404 Not Found", "", b"");
        } else {
            answer(c, "401 Unauthorized", &challenge, b"");
        }
    })
    .0
}

/// A token service on `ip` that logs each request's Authorization and gives `tok` for
/// alice:secret.
fn token_service(ip: &str) -> (String, Log) {
    serve(ip, |req, c| {
        if req.header("authorization") == Some("Basic YWxpY2U6c2VjcmV0") {
            answer(c, "200 OK", "Content-Type: application/json\r\n", br#"{"token":"tok"}"#);
        } else {
            answer(c, "401 Unauthorized", "", b"");
        }
    })
}

#[test]
fn basic_credentials_never_go_to_a_plain_http_realm_on_another_host() {
    let cache = tempfile::tempdir().unwrap();
    let mut o = options(cache.path(), 10, 60);
    o.registry.creds = Some("alice:secret".into());

    // The realm is on 127.0.0.2, another host than the registry's 127.0.0.1: the token
    // request goes without credentials, and the error says why.
    let (elsewhere, log) = token_service("127.0.0.2");
    let reg = bearer_registry(format!("http://{elsewhere}/token"));
    let (spec, oo) = (format!("docker://{reg}/x:t"), o.clone());
    let e = within(30, "a realm on another host", move || open(&spec, &oo).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("credentials were not sent"), "{e}");
    assert!(e.to_string().contains("another host"), "{e}");
    let seen = log.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the token service was not asked");
    assert!(seen.iter().all(|s| s.header("authorization").is_none()), "credentials leaked: {seen:?}");

    // The same registry host on another port, with --tls-verify=false: they are sent,
    // the token is used, and the pull gets as far as the (missing) manifest.
    let (same, log) = token_service("127.0.0.1");
    let reg = bearer_registry(format!("http://{same}/token"));
    let spec = format!("docker://{reg}/x:t");
    let e = within(30, "a realm on the registry's host", move || open(&spec, &o).unwrap_err());
    assert!(e.to_string().contains("no manifest t"), "{e}");
    assert!(log.lock().unwrap().iter().any(|s| s.header("authorization") == Some("Basic YWxpY2U6c2VjcmV0")));
}
