//! Images over HTTP(S): `convert`, `info`, `compare`, `check`, `map` and `measure` of an
//! `http://` or `https://` URL, from servers on loopback that are each an independent
//! implementation: nginx (honours ranges, ETag, If-Range; also over TLS with a CA made by
//! openssl), Python's plain `http.server` (ignores ranges), and http_flaky.py (honours
//! ranges; drops a connection mid-answer once, or replaces the file mid-read). qemu-img
//! judges every conversion against the local file, and every report must equal diskcast's
//! own on the local file.

use crate::support::*;
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process this test started, stopped with SIGTERM (nginx's master then stops
/// its workers) and reaped when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Server {
    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `name` from PATH or /usr/sbin (nginx lives there); a missing one fails the test.
fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is required by this test: apt-get install {package} (scripts/setup.sh)"))
}

/// Starts `cmd` and waits until every port in `ports` accepts connections.
fn start(mut cmd: Command, ports: &[u16], log: PathBuf) -> Server {
    let out = std::fs::File::create(&log).unwrap();
    let mut child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{cmd:?} exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "{cmd:?} did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Server { child, port: ports[0], log }
}

/// nginx serving `root` on loopback (HTTP), and over HTTPS with `cert`/`key` when given:
/// the server and its HTTPS port.
fn nginx(work: &Path, root: &Path, tls: Option<(&Path, &Path)>) -> (Server, u16) {
    let (port, tls_port) = (free_port(), free_port());
    let ssl = match tls {
        Some((cert, key)) => format!(
            "server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {}; ssl_certificate_key {}; root {}; }}",
            s(cert),
            s(key),
            s(root)
        ),
        None => String::new(),
    };
    let tmp = work.join("nginx-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let conf = work.join("nginx.conf");
    let text = format!(
        "daemon off; user root; worker_processes 2; pid {pid}; error_log {log};\n\
         events {{}}\n\
         http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};\n\
           uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
           server {{ listen 127.0.0.1:{port}; root {root};\n\
             location = /moved.qcow2 {{ return 302 /top.qcow2?X-Amz-Signature=secret; }} }}\n\
           {ssl}\n\
         }}\n",
        pid = s(&work.join("nginx.pid")),
        log = s(&work.join("nginx-error.log")),
        tmp = s(&tmp),
        root = s(root),
    );
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new(program("nginx", "nginx-light"));
    cmd.args(["-c", &s(&conf), "-e", &s(&work.join("nginx-error.log"))]);
    let ports: Vec<u16> = if tls.is_some() { vec![port, tls_port] } else { vec![port] };
    (start(cmd, &ports, work.join("nginx.out")), tls_port)
}

/// Python's own `http.server`: answers every GET with 200 and the whole file.
fn plain_python(work: &Path, root: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory", &s(root)]);
    start(cmd, &[port], work.join("python.log"))
}

/// http_flaky.py serving `root` with `flags`; its answers logged to the server's `log`.
fn flaky(work: &Path, root: &Path, flags: &[&str]) -> Server {
    let script = work.join("http_flaky.py");
    std::fs::write(&script, include_str!("http_flaky.py")).unwrap();
    let (port, log) = (free_port(), work.join("flaky.log"));
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(["--port", &port.to_string(), "--root", &s(root), "--log", &s(&log)]).args(flags);
    let mut server = start(cmd, &[port], work.join("flaky.out"));
    server.log = log;
    server
}

/// A 64 MiB qcow2 whose top holds 6 MiB over a base with 13 MiB, as qemu-io wrote them:
/// `root/base.qcow2` and `root/top.qcow2` (backing `base.qcow2`, relative).
fn qcow2_chain(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root).unwrap();
    let (base, top) = (root.join("base.qcow2"), root.join("top.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&base), "64M"]);
    qemu_io("qcow2", &base, &["write -P 0x11 0 8M", "write -P 0x22 40M 5M"]);
    qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", &s(&top)]);
    qemu_io("qcow2", &top, &["write -P 0x33 4M 2M", "write -P 0x44 60M 4M"]);
    top
}

/// A report without the keys that name where the image was read from (its file name,
/// the space it takes on the local disk, the protocol: `file` or `http`).
fn without_location(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in ["filename", "full-backing-filename", "actual-size"] {
                    m.remove(k);
                }
                // The protocol layer below the image: qemu's name for it.
                if m.get("format").is_some_and(|f| f == "http" || f == "https") {
                    m.insert("format".into(), "file".into());
                    m["format-specific"]["type"] = "file".into();
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// The same report of the URL as of the local file.
fn same_report(args: &[&str], url: &str, local: &Path) {
    let mut remote_args = args.to_vec();
    remote_args.push(url);
    let mut local_args = args.to_vec();
    let local = s(local);
    local_args.push(&local);
    let (r, l) = (dc_ok(&remote_args).json(), dc_ok(&local_args).json());
    assert_eq!(without_location(r), without_location(l), "diskcast {args:?} of {url} and of {local}");
}

#[test]
fn a_remote_qcow2_and_its_backing_file_read_as_the_local_ones() {
    let t = tmp();
    let root = t.path().join("www");
    let top = qcow2_chain(&root);
    let (server, _) = nginx(t.path(), &root, None);
    let url = server.url("top.qcow2");

    let out = t.path().join("out.raw");
    dc_ok(&["convert", "-O", "raw", &url, &s(&out)]);
    qemu_compare(&out, "raw", &top, "qcow2");
    let out = t.path().join("out.qcow2");
    dc_ok(&["convert", "-O", "qcow2", "-c", &url, &s(&out)]);
    qemu_compare(&out, "qcow2", &top, "qcow2");
    qemu_check_clean(&out);

    same_report(&["info", "--output", "json"], &url, &top);
    let chain = dc_ok(&["info", "--output", "json", "--backing-chain", &url]).json();
    assert_eq!(chain[1]["filename"], server.url("base.qcow2"), "the backing file resolves against the URL");
    same_report(&["info", "--output", "json", "--backing-chain"], &url, &top);
    same_report(&["check", "--output", "json"], &url, &top);
    same_report(&["map", "--output", "json"], &url, &top);
    same_report(&["measure", "--output", "json", "-O", "qcow2"], &url, &top);
    dc(&["compare", &url, &s(&top)]).expect_code(0);
    // A redirect (as object stores answer) is followed, its query string kept; a query
    // (a presigned URL's signature) is never shown in a message.
    let out = t.path().join("moved.raw");
    dc_ok(&["convert", "-O", "raw", &server.url("moved.qcow2"), &s(&out)]);
    qemu_compare(&out, "raw", &top, "qcow2");
    let presigned = format!("{}?X-Amz-Signature=secret", server.url("top.qcow2"));
    same_report(&["info", "--output", "json"], &presigned, &top);
    let r = dc(&["info", &format!("{}?X-Amz-Signature=secret", server.url("gone.qcow2"))]).expect_code(1);
    assert!(r.stderr.contains("gone.qcow2?...") && !r.stderr.contains("secret"), "{}", r.describe());
    qemu_io("qcow2", &top, &["write -P 0x55 1M 4K"]);
    dc(&["compare", &url, &s(&root.join("base.qcow2"))]).expect_code(1);
}

#[test]
fn every_block_format_reads_over_http() {
    let t = tmp();
    let root = t.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let raw = root.join("disk.raw");
    write_index_pattern(&raw, 8 * MIB, 3);
    let images = [
        ("sparse.vmdk", "vmdk", "subformat=monolithicSparse"),
        ("stream.vmdk", "vmdk", "subformat=streamOptimized"),
        ("flat.vmdk", "vmdk", "subformat=monolithicFlat"),
        ("split.vmdk", "vmdk", "subformat=twoGbMaxExtentSparse"),
        ("dynamic.vhd", "vpc", "subformat=dynamic"),
        ("fixed.vhd", "vpc", "subformat=fixed"),
        ("disk.vhdx", "vhdx", "subformat=dynamic"),
        ("disk.vdi", "vdi", "static=off"),
        ("disk.qcow2", "qcow2", "compression_type=zlib"),
    ];
    for (name, fmt, opts) in images {
        qemu_img(&["convert", "-f", "raw", "-O", fmt, "-o", opts, &s(&raw), &s(&root.join(name))]);
    }
    let (server, _) = nginx(t.path(), &root, None);
    for name in std::iter::once("disk.raw").chain(images.iter().map(|i| i.0)) {
        let out = t.path().join(format!("{name}.out"));
        dc_ok(&["convert", "-O", "raw", &server.url(name), &s(&out)]);
        qemu_compare(&out, "raw", &raw, "raw");
        same_report(&["info", "--output", "json"], &server.url(name), &root.join(name));
    }
}

#[test]
fn a_server_that_ignores_ranges_serves_only_raw_and_stream_optimized_front_to_back() {
    let t = tmp();
    let root = t.path().join("www");
    let top = qcow2_chain(&root);
    let raw = root.join("disk.raw");
    qemu_img(&["convert", "-O", "raw", &s(&top), &s(&raw)]);
    let stream = root.join("stream.vmdk");
    qemu_img(&["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(&top), &s(&stream)]);
    let sparse = root.join("sparse.vmdk");
    qemu_img(&["convert", "-O", "vmdk", &s(&top), &s(&sparse)]);
    let server = plain_python(t.path(), &root);

    let refused = t.path().join("refused.raw");
    for name in ["top.qcow2", "sparse.vmdk"] {
        dc(&["convert", "-O", "raw", &server.url(name), &s(&refused)])
            .expect_code(1)
            .expect_stderr_all(&["ignores range requests", "raw disk or a streamoptimized vmdk"]);
        assert_no_output(&refused);
    }
    for cmd in ["info", "check", "map"] {
        dc(&[cmd, &server.url("disk.raw")]).expect_stderr_all(&["ignores range requests"]);
    }
    for (name, local, fmt) in [("disk.raw", &raw, "raw"), ("stream.vmdk", &stream, "vmdk")] {
        let out = t.path().join(format!("{name}.qcow2"));
        dc_ok(&["convert", "-O", "qcow2", &server.url(name), &s(&out)]);
        qemu_compare(&out, "qcow2", local, fmt);
        qemu_check_clean(&out);
    }
}

/// `DIR/www/disk.qcow2`, 32 MiB, holding what the qemu-io `writes` put there: the served
/// directory and the image.
fn www_qcow2(dir: &Path, writes: &[&str]) -> (PathBuf, PathBuf) {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let img = root.join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&img), "32M"]);
    qemu_io("qcow2", &img, writes);
    (root, img)
}

#[test]
fn a_connection_dropped_mid_answer_is_resumed_where_it_broke_off() {
    let t = tmp();
    let (root, img) = www_qcow2(t.path(), &["write -P 0x5a 0 12M", "write -P 0xa5 20M 3M"]);
    let server = flaky(t.path(), &root, &["--drop-once"]);
    let out = t.path().join("out.raw");
    dc_ok(&["convert", "-O", "raw", &server.url("disk.qcow2"), &s(&out)]);
    qemu_compare(&out, "raw", &img, "qcow2");
    let log = std::fs::read_to_string(&server.log).unwrap();
    let at = log.lines().find_map(|l| l.strip_prefix("dropped ")).unwrap_or_else(|| panic!("no drop:\n{log}"));
    assert!(
        log.lines().any(|l| l == format!("{at} 206")),
        "no request resumed at byte {at}, where the answer broke off:\n{log}"
    );
}

#[test]
fn a_file_replaced_on_the_server_mid_read_is_an_error_not_a_mix() {
    let t = tmp();
    let (root, _) = www_qcow2(t.path(), &["write -P 0x5a 0 16M"]);
    // The first answers (the first block, the header's metadata) are of one version.
    let server = flaky(t.path(), &root, &["--change-after", "3"]);
    let out = t.path().join("out.raw");
    dc(&["convert", "-O", "raw", &server.url("disk.qcow2"), &s(&out)]).expect_code(1).expect_stderr_all(&[
        "changed on the server",
        "etag \"v1\"",
        "etag \"v2\"",
    ]);
    assert_no_output(&out);
}

/// Runs diskcast with the environment changed: `set` added, `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` removed unless set.
fn dc_tls(set: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut env: Vec<(&str, Option<&Path>)> = vec![("SSL_CERT_FILE", None), ("SSL_CERT_DIR", None)];
    for (k, v) in set {
        env.retain(|(e, _)| e != k);
        env.push((k, Some(v)));
    }
    dc_env(&env, args)
}

#[test]
fn https_trusts_a_ca_the_system_store_holds_and_tls_verify_false_trusts_any() {
    let t = tmp();
    let root = t.path().join("www");
    let top = qcow2_chain(&root);
    let d = t.path();
    let ossl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca_subj = ["-subj", "/CN=diskcast test CA", "-addext", "basicConstraints=critical,CA:TRUE"];
    ossl(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"], &ca_subj].concat());
    ossl(&[&["req"][..], &ec, &["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // The CA as a system store holds it: a bundle file, and a hashed directory.
    let bundle = d.join("bundle.pem");
    std::fs::write(&bundle, std::fs::read(d.join("ca.pem")).unwrap()).unwrap();
    let dir = d.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(d.join("ca.pem"), dir.join("diskcast-test-ca.pem")).unwrap();
    ossl(&["rehash", &s(&dir)]);

    let (_server, tls_port) = nginx(d, &root, Some((&d.join("srv.pem"), &d.join("srv.key"))));
    let url = format!("https://127.0.0.1:{tls_port}/top.qcow2");
    for (var, path) in [("SSL_CERT_FILE", &bundle), ("SSL_CERT_DIR", &dir)] {
        let out = d.join(format!("{var}.raw"));
        dc_tls(&[(var, path)], &["convert", "-O", "raw", &url, &s(&out)]).expect_ok();
        qemu_compare(&out, "raw", &top, "qcow2");
    }
    let out = d.join("untrusted.raw");
    dc_tls(&[], &["convert", "-O", "raw", &url, &s(&out)]).expect_code(1).expect_stderr_any(&["certificate"]);
    assert_no_output(&out);
    dc_tls(&[], &["info", &url]).expect_code(1).expect_stderr_any(&["certificate"]);
    dc_tls(&[], &["convert", "--tls-verify=false", "-O", "raw", &url, &s(&out)]).expect_ok();
    qemu_compare(&out, "raw", &top, "qcow2");
    let info = dc_tls(&[], &["info", "--tls-verify=false", "--output", "json", &url]).expect_ok().json();
    assert_eq!(info["backing-filename"], "base.qcow2");
}
